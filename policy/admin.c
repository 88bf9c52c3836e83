#include "admin.h"

#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "apikey.h"
#include "log.h"
#include "mem.h"
#include "store.h"
#include "principal.h"
#include "rules.h"

#define ID_MAX 128 /* principal, team and rule ids */

/* ---- small helpers ---- */

__attribute__((format(printf, 3, 4))) static int
fail(char **err, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        tp_fatal("out of memory");
    va_end(ap);
    *err = msg;
    return rv;
}

static int
db_fail(sqlite3 *db, char **err, const char *what)
{
    return fail(err, -EIO, "%s: %s", what, sqlite3_errmsg(db));
}

bool
pol_admin_valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || c == ':' || c == '@'))
            return false;
    }
    return true;
}

static sqlite3_stmt *
prepare(sqlite3 *db, const char *sql, char **err)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        db_fail(db, err, "prepare");
        return NULL;
    }
    return stmt;
}

static void
bind_text_or_null(sqlite3_stmt *stmt, int i, const char *s)
{
    if (s != NULL)
        sqlite3_bind_text(stmt, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt, i);
}

static void
bind_int_or_null(sqlite3_stmt *stmt, int i, int64_t v)
{
    if (v != 0)
        sqlite3_bind_int64(stmt, i, v);
    else
        sqlite3_bind_null(stmt, i);
}

/* Runs a prepared statement that returns no rows, and finalizes it. */
static int
run(sqlite3 *db, sqlite3_stmt *stmt, char **err, const char *what)
{
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : db_fail(db, err, what);
}

/* Admin changes go through tp_store_change_begin / _end (see store.h), under savepoint pol_admin. */
static int
begin(sqlite3 *db, char **err)
{
    return tp_store_change_begin(db, "pol_admin", err);
}

static int
finish(sqlite3 *db, int txn, int rv, char **err)
{
    return tp_store_change_end(db, txn, "pol_admin", rv, err);
}

/* Writes an audit row with `detail` (borrowed) inside the caller's transaction. */
static int
audit_detail(sqlite3 *db, const char *actor, const char *action, const char *target, json_t *detail, char **err)
{
    char *text = json_dumps(detail, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL)
        return fail(err, -EINVAL, "the audit record of %s cannot be encoded", action);
    sqlite3_stmt *stmt =
        prepare(db, "INSERT INTO audit_log (ts_ms, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)", err);
    if (stmt == NULL) {
        free(text);
        return -EIO;
    }
    sqlite3_bind_int64(stmt, 1, tp_unix_ms());
    sqlite3_bind_text(stmt, 2, actor, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, action, -1, SQLITE_TRANSIENT);
    bind_text_or_null(stmt, 4, target);
    sqlite3_bind_text(stmt, 5, text, -1, SQLITE_TRANSIENT);
    free(text);
    return run(db, stmt, err, "write the audit record");
}

int
pol_admin_record(sqlite3 *db, const char *actor, const char *action, const char *target, json_t *detail, char **err)
{
    json_t *none = detail == NULL ? json_object() : NULL;
    int rv = audit_detail(db, actor, action, target, detail != NULL ? detail : none, err);
    json_decref(none);
    return rv;
}

/* Writes the audit row for a change, inside the caller's transaction. Steals before and after. */
static int
audit(sqlite3 *db, const char *actor, const char *action, const char *target, json_t *before, json_t *after, char **err)
{
    json_t *detail = json_object();
    json_object_set_new(detail, "before", before != NULL ? before : json_null());
    json_object_set_new(detail, "after", after != NULL ? after : json_null());
    int rv = audit_detail(db, actor, action, target, detail, err);
    json_decref(detail);
    return rv;
}

/* A column as JSON: integers, reals, text (parsed when `parse` and it is JSON), or null. */
static json_t *
column_json(sqlite3_stmt *stmt, int i, bool parse)
{
    switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
        return json_integer(sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(stmt, i));
    case SQLITE_TEXT: {
        const char *text = (const char *)sqlite3_column_text(stmt, i);
        json_t *v = parse ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
        return v != NULL ? v : json_string(text);
    }
    default:
        return json_null();
    }
}

/* Runs a query and returns its rows as an array of objects keyed by column name. Columns whose
 * name ends in "_json" are parsed and renamed without the suffix. Finalizes the statement. */
static json_t *
rows_json(sqlite3 *db, sqlite3_stmt *stmt, char **err)
{
    json_t *rows = json_array();
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int i = 0; i < sqlite3_column_count(stmt); i++) {
            const char *name = sqlite3_column_name(stmt, i);
            size_t n = strlen(name);
            bool parse = n > 5 && strcmp(name + n - 5, "_json") == 0;
            char *key = tp_strndup(name, parse ? n - 5 : n);
            json_object_set_new(row, key, column_json(stmt, i, parse));
            free(key);
        }
        json_array_append_new(rows, row);
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        json_decref(rows);
        db_fail(db, err, "read");
        return NULL;
    }
    return rows;
}

/* The first row of a query, or NULL (with *rv = -ENOENT when there was none). */
static json_t *
row_json(sqlite3 *db, sqlite3_stmt *stmt, const char *what, const char *id, char **err)
{
    json_t *rows = rows_json(db, stmt, err);
    if (rows == NULL)
        return NULL;
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    if (row == NULL)
        fail(err, -ENOENT, "%s '%s' does not exist", what, id);
    return row;
}

/* Reads the row `id` of `table` as `get` shows it, as the "before" of a change. Returns 0 with
 * *out (NULL when there is no such row), or a negative code with *err when the store fails, so
 * that a read error is never taken for "absent" (and a create never overwrites). */
static int
read_before(sqlite3 *db, const char *table, const char *id, json_t *(*get)(sqlite3 *, const char *, char **),
            json_t **out, char **err)
{
    *out = NULL;
    char *sql = tp_sprintf("SELECT 1 FROM %s WHERE id = ?", table);
    sqlite3_stmt *stmt = prepare(db, sql, err);
    free(sql);
    if (stmt == NULL)
        return -EIO;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return db_fail(db, err, "read");
    char *why = NULL;
    *out = get(db, id, &why);
    if (*out == NULL) {
        *err = why != NULL ? why : tp_strdup("read failed");
        return -EIO;
    }
    return 0;
}

/* The row as it is after a change, for the audit record (NULL if it cannot be read). */
static json_t *
read_after(sqlite3 *db, const char *id, json_t *(*get)(sqlite3 *, const char *, char **))
{
    char *why = NULL;
    json_t *row = get(db, id, &why);
    free(why);
    return row;
}

char *
pol_admin_actor(void)
{
    struct passwd *pw = getpwuid(getuid());
    const char *user = pw != NULL ? pw->pw_name : NULL;
    const char *sudo = getenv("SUDO_USER");
    if (user == NULL)
        return tp_sprintf("os:uid-%d", (int)getuid());
    if (sudo != NULL && sudo[0] != '\0' && strcmp(sudo, user) != 0)
        return tp_sprintf("os:%s(sudo:%s)", user, sudo);
    return tp_sprintf("os:%s", user);
}

/* ---- principals ---- */

static const char PRINCIPAL_COLUMNS[] =
    "id, kind, team, roles AS roles_json, labels AS labels_json, enabled = 1 AS enabled_bool, description, "
    "created_at_ms, updated_at_ms";

/* Normalises enabled_bool (0/1) into a JSON boolean named enabled. */
static json_t *
principal_fix(json_t *p)
{
    if (p == NULL)
        return NULL;
    json_t *b = json_object_get(p, "enabled_bool");
    json_object_set_new(p, "enabled", json_boolean(json_integer_value(b) != 0));
    json_object_del(p, "enabled_bool");
    return p;
}

json_t *
pol_admin_principal_get(sqlite3 *db, const char *id, char **err)
{
    char *sql = tp_sprintf("SELECT %s FROM principals WHERE id = ?", PRINCIPAL_COLUMNS);
    sqlite3_stmt *stmt = prepare(db, sql, err);
    free(sql);
    if (stmt == NULL)
        return NULL;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    return principal_fix(row_json(db, stmt, "principal", id, err));
}

json_t *
pol_admin_principal_list(sqlite3 *db, char **err)
{
    char *sql = tp_sprintf("SELECT %s FROM principals ORDER BY id", PRINCIPAL_COLUMNS);
    sqlite3_stmt *stmt = prepare(db, sql, err);
    free(sql);
    if (stmt == NULL)
        return NULL;
    json_t *rows = rows_json(db, stmt, err);
    size_t i;
    json_t *p;
    json_array_foreach(rows, i, p) principal_fix(p);
    return rows;
}

static bool
is_string_array(json_t *a)
{
    if (!json_is_array(a))
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) == 0)
            return false;
    }
    return true;
}

static bool
is_string_object(json_t *o)
{
    if (!json_is_object(o))
        return false;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (!json_is_string(v) || k[0] == '\0')
            return false;
    }
    return true;
}

/* Checks a principal definition; returns 0 or -EINVAL with *err. */
static int
check_principal(json_t *p, char **err)
{
    static const char *const keys[] = { "id", "kind", "team", "roles", "labels", "enabled", "description", NULL };
    if (!json_is_object(p))
        return fail(err, -EINVAL, "a principal must be an object");
    const char *id = json_string_value(json_object_get(p, "id"));
    if (id == NULL || !pol_admin_valid_id(id))
        return fail(err, -EINVAL, "principal id must be 1-%d characters of A-Z a-z 0-9 - _ . : @", ID_MAX);
    const char *key;
    json_t *v;
    json_object_foreach(p, key, v)
    {
        bool known = false;
        for (const char *const *k = keys; *k != NULL; k++)
            known = known || strcmp(key, *k) == 0;
        if (!known)
            return fail(err, -EINVAL, "principal %s: unknown field '%s'", id, key);
    }
    pol_kind_t kind;
    const char *kind_name = json_string_value(json_object_get(p, "kind"));
    if (kind_name == NULL || pol_kind_parse(kind_name, &kind) != 0)
        return fail(err, -EINVAL, "principal %s: kind must be user, service or agent", id);
    json_t *team = json_object_get(p, "team");
    if (team != NULL && !json_is_null(team) && (!json_is_string(team) || !pol_admin_valid_id(json_string_value(team))))
        return fail(err, -EINVAL, "principal %s: team must be a team id", id);
    json_t *roles = json_object_get(p, "roles");
    if (roles != NULL && !is_string_array(roles))
        return fail(err, -EINVAL, "principal %s: roles must be an array of non-empty strings", id);
    json_t *labels = json_object_get(p, "labels");
    if (labels != NULL && !is_string_object(labels))
        return fail(err, -EINVAL, "principal %s: labels must be an object of strings", id);
    json_t *enabled = json_object_get(p, "enabled");
    if (enabled != NULL && !json_is_boolean(enabled))
        return fail(err, -EINVAL, "principal %s: enabled must be true or false", id);
    json_t *desc = json_object_get(p, "description");
    if (desc != NULL && !json_is_string(desc))
        return fail(err, -EINVAL, "principal %s: description must be a string", id);
    return 0;
}

/* JSON text of member `key` of o, or `def` when absent. */
static char *
member_text(json_t *o, const char *key, const char *def)
{
    json_t *v = json_object_get(o, key);
    return v != NULL ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : tp_strdup(def);
}

int
pol_admin_principal_put(sqlite3 *db, const char *actor, json_t *p, bool create, char **err)
{
    int rv = check_principal(p, err);
    if (rv != 0)
        return rv;
    const char *id = json_string_value(json_object_get(p, "id"));
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    json_t *before = NULL;
    if ((rv = read_before(db, "principals", id, pol_admin_principal_get, &before, err)) != 0)
        return finish(db, txn, rv, err);
    if (before != NULL && create) {
        json_decref(before);
        return finish(db, txn, fail(err, -EEXIST, "principal '%s' already exists", id), err);
    }
    sqlite3_stmt *stmt = prepare(db,
                                 "INSERT INTO principals (id, kind, team, roles, labels, enabled, description, "
                                 "created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) "
                                 "ON CONFLICT (id) DO UPDATE SET kind = ?2, team = ?3, roles = ?4, labels = ?5, "
                                 "enabled = ?6, description = ?7, updated_at_ms = ?8",
                                 err);
    if (stmt == NULL) {
        json_decref(before);
        return finish(db, txn, -EIO, err);
    }
    char *roles = member_text(p, "roles", "[]"), *labels = member_text(p, "labels", "{}");
    json_t *team = json_object_get(p, "team"), *enabled = json_object_get(p, "enabled");
    const char *desc = json_string_value(json_object_get(p, "description"));
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, json_string_value(json_object_get(p, "kind")), -1, SQLITE_TRANSIENT);
    bind_text_or_null(stmt, 3, json_string_value(team));
    sqlite3_bind_text(stmt, 4, roles, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 5, labels, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(stmt, 6, enabled == NULL || json_is_true(enabled));
    sqlite3_bind_text(stmt, 7, desc != NULL ? desc : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 8, tp_unix_ms());
    free(roles);
    free(labels);
    rv = run(db, stmt, err, "write the principal");
    if (rv == 0) {
        json_t *after = read_after(db, id, pol_admin_principal_get);
        rv = audit(db, actor, before != NULL ? "principal.update" : "principal.create", id, before, after, err);
    } else {
        json_decref(before);
    }
    return finish(db, txn, rv, err);
}

int
pol_admin_principal_set_enabled(sqlite3 *db, const char *actor, const char *id, bool enabled, char **err)
{
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    int rv = 0;
    json_t *before = pol_admin_principal_get(db, id, err);
    if (before == NULL)
        return finish(db, txn, -ENOENT, err);
    sqlite3_stmt *stmt = prepare(db, "UPDATE principals SET enabled = ?, updated_at_ms = ? WHERE id = ?", err);
    if (stmt == NULL) {
        json_decref(before);
        return finish(db, txn, -EIO, err);
    }
    sqlite3_bind_int(stmt, 1, enabled);
    sqlite3_bind_int64(stmt, 2, tp_unix_ms());
    sqlite3_bind_text(stmt, 3, id, -1, SQLITE_TRANSIENT);
    rv = run(db, stmt, err, "update the principal");
    if (rv == 0)
        rv = audit(db, actor, enabled ? "principal.enable" : "principal.disable", id, before,
                   read_after(db, id, pol_admin_principal_get), err);
    else
        json_decref(before);
    return finish(db, txn, rv, err);
}

/* Deletes the row `id` of `table` after reading it with `get`, auditing `action`. */
static int
delete_audited(sqlite3 *db, const char *actor, const char *table, const char *what, const char *action, const char *id,
               json_t *(*get)(sqlite3 *, const char *, char **), char **err)
{
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    int rv = 0;
    json_t *before = get(db, id, err);
    if (before == NULL)
        return finish(db, txn, -ENOENT, err);
    char *sql = tp_sprintf("DELETE FROM %s WHERE id = ?", table);
    sqlite3_stmt *stmt = prepare(db, sql, err);
    free(sql);
    if (stmt == NULL) {
        json_decref(before);
        return finish(db, txn, -EIO, err);
    }
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    char *what_msg = tp_sprintf("delete the %s", what);
    rv = run(db, stmt, err, what_msg);
    free(what_msg);
    if (rv == 0)
        rv = audit(db, actor, action, id, before, NULL, err);
    else
        json_decref(before);
    return finish(db, txn, rv, err);
}

/* A principal with its API keys (ids and states, never secrets): what a delete removes, since
 * the keys go with it (ON DELETE CASCADE) and the audit record must say so. */
static json_t *
principal_with_keys(sqlite3 *db, const char *id, char **err)
{
    json_t *p = pol_admin_principal_get(db, id, err);
    if (p == NULL)
        return NULL;
    json_t *keys = pol_admin_key_list(db, id, err);
    if (keys == NULL) {
        json_decref(p);
        return NULL;
    }
    json_object_set_new(p, "api_keys", keys);
    return p;
}

int
pol_admin_principal_delete(sqlite3 *db, const char *actor, const char *id, char **err)
{
    return delete_audited(db, actor, "principals", "principal", "principal.delete", id, principal_with_keys, err);
}

/* ---- teams ---- */

static json_t *
team_get(sqlite3 *db, const char *id, char **err)
{
    sqlite3_stmt *stmt =
        prepare(db, "SELECT id, description, created_at_ms, updated_at_ms FROM teams WHERE id = ?", err);
    if (stmt == NULL)
        return NULL;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    return row_json(db, stmt, "team", id, err);
}

json_t *
pol_admin_team_list(sqlite3 *db, char **err)
{
    sqlite3_stmt *stmt = prepare(db,
                                 "SELECT t.id, t.description, (SELECT count(*) FROM principals p WHERE p.team = t.id) "
                                 "AS members, t.created_at_ms, t.updated_at_ms FROM teams t ORDER BY t.id",
                                 err);
    return stmt != NULL ? rows_json(db, stmt, err) : NULL;
}

int
pol_admin_team_put(sqlite3 *db, const char *actor, json_t *t, bool create, char **err)
{
    const char *id = json_string_value(json_object_get(t, "id"));
    json_t *desc = json_object_get(t, "description");
    if (id == NULL || !pol_admin_valid_id(id))
        return fail(err, -EINVAL, "team id must be 1-%d characters of A-Z a-z 0-9 - _ . : @", ID_MAX);
    if (desc != NULL && !json_is_string(desc))
        return fail(err, -EINVAL, "team %s: description must be a string", id);
    if (json_object_size(t) > (desc != NULL ? 2u : 1u))
        return fail(err, -EINVAL, "team %s: only id and description may be set", id);
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    int rv = 0;
    json_t *before = NULL;
    if ((rv = read_before(db, "teams", id, team_get, &before, err)) != 0)
        return finish(db, txn, rv, err);
    if (before != NULL && create) {
        json_decref(before);
        return finish(db, txn, fail(err, -EEXIST, "team '%s' already exists", id), err);
    }
    sqlite3_stmt *stmt = prepare(db,
                                 "INSERT INTO teams (id, description, created_at_ms, updated_at_ms) VALUES (?1, ?2, "
                                 "?3, ?3) ON CONFLICT (id) DO UPDATE SET description = ?2, updated_at_ms = ?3",
                                 err);
    if (stmt == NULL) {
        json_decref(before);
        return finish(db, txn, -EIO, err);
    }
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, desc != NULL ? json_string_value(desc) : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 3, tp_unix_ms());
    rv = run(db, stmt, err, "write the team");
    if (rv == 0)
        rv = audit(db, actor, before != NULL ? "team.update" : "team.create", id, before, read_after(db, id, team_get),
                   err);
    else
        json_decref(before);
    return finish(db, txn, rv, err);
}

int
pol_admin_team_delete(sqlite3 *db, const char *actor, const char *id, char **err)
{
    return delete_audited(db, actor, "teams", "team", "team.delete", id, team_get, err);
}

/* ---- API keys ---- */

static const char KEY_COLUMNS[] =
    "id, principal_id AS principal, name, created_at_ms, created_by, expires_at_ms, revoked_at_ms, revoked_by, "
    "replaced_by, CASE WHEN revoked_at_ms IS NOT NULL THEN 'revoked' WHEN expires_at_ms IS NOT NULL AND "
    "expires_at_ms <= ?1 THEN 'expired' ELSE 'active' END AS status";

static json_t *
key_get(sqlite3 *db, const char *id, char **err)
{
    char *sql = tp_sprintf("SELECT %s FROM api_keys WHERE id = ?2", KEY_COLUMNS);
    sqlite3_stmt *stmt = prepare(db, sql, err);
    free(sql);
    if (stmt == NULL)
        return NULL;
    sqlite3_bind_int64(stmt, 1, tp_unix_ms());
    sqlite3_bind_text(stmt, 2, id, -1, SQLITE_TRANSIENT);
    return row_json(db, stmt, "API key", id, err);
}

json_t *
pol_admin_key_list(sqlite3 *db, const char *principal, char **err)
{
    char *sql = tp_sprintf("SELECT %s FROM api_keys WHERE ?2 IS NULL OR principal_id = ?2 ORDER BY principal_id, "
                           "created_at_ms",
                           KEY_COLUMNS);
    sqlite3_stmt *stmt = prepare(db, sql, err);
    free(sql);
    if (stmt == NULL)
        return NULL;
    sqlite3_bind_int64(stmt, 1, tp_unix_ms());
    bind_text_or_null(stmt, 2, principal);
    return rows_json(db, stmt, err);
}

/* Inserts a new key row inside the caller's transaction. */
static int
insert_key(sqlite3 *db, const char *actor, const char *principal, const char *name, int64_t expires_at_ms,
           pol_apikey_t *key, char **err)
{
    if (pol_apikey_generate(key) != 0)
        return fail(err, -EIO, "cannot generate a key: no randomness from the OS");
    sqlite3_stmt *stmt = prepare(db,
                                 "INSERT INTO api_keys (id, principal_id, secret_hash, name, created_at_ms, "
                                 "created_by, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 err);
    if (stmt == NULL)
        return -EIO;
    sqlite3_bind_text(stmt, 1, key->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, principal, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(stmt, 3, key->hash, sizeof(key->hash), SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 4, name != NULL ? name : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 5, tp_unix_ms());
    sqlite3_bind_text(stmt, 6, actor, -1, SQLITE_TRANSIENT);
    bind_int_or_null(stmt, 7, expires_at_ms);
    return run(db, stmt, err, "write the key");
}

static void
hand_out_key(pol_apikey_t *key, char **key_out, char **id_out)
{
    *key_out = tp_strdup(key->key);
    *id_out = tp_strdup(key->id);
    explicit_bzero(key, sizeof(*key));
}

int
pol_admin_key_create(sqlite3 *db, const char *actor, const char *principal, const char *name, int64_t expires_at_ms,
                     char **key_out, char **id_out, char **err)
{
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    int rv = 0;
    json_t *owner = pol_admin_principal_get(db, principal, err);
    if (owner == NULL)
        return finish(db, txn, -ENOENT, err);
    json_decref(owner);
    pol_apikey_t key;
    rv = insert_key(db, actor, principal, name, expires_at_ms, &key, err);
    if (rv == 0)
        rv = audit(db, actor, "key.create", key.id, NULL, read_after(db, key.id, key_get), err);
    rv = finish(db, txn, rv, err);
    if (rv == 0)
        hand_out_key(&key, key_out, id_out);
    explicit_bzero(&key, sizeof(key));
    return rv;
}

int
pol_admin_key_revoke(sqlite3 *db, const char *actor, const char *id, char **err)
{
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    int rv = 0;
    json_t *before = key_get(db, id, err);
    if (before == NULL)
        return finish(db, txn, -ENOENT, err);
    if (!json_is_null(json_object_get(before, "revoked_at_ms"))) {
        json_decref(before);
        return finish(db, txn, 0, err);
    }
    sqlite3_stmt *stmt = prepare(db, "UPDATE api_keys SET revoked_at_ms = ?, revoked_by = ? WHERE id = ?", err);
    if (stmt == NULL) {
        json_decref(before);
        return finish(db, txn, -EIO, err);
    }
    sqlite3_bind_int64(stmt, 1, tp_unix_ms());
    sqlite3_bind_text(stmt, 2, actor, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, id, -1, SQLITE_TRANSIENT);
    rv = run(db, stmt, err, "revoke the key");
    if (rv == 0)
        rv = audit(db, actor, "key.revoke", id, before, read_after(db, id, key_get), err);
    else
        json_decref(before);
    return finish(db, txn, rv, err);
}

int
pol_admin_key_rotate(sqlite3 *db, const char *actor, const char *id, int64_t overlap_ms, char **key_out, char **id_out,
                     char **err)
{
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    int rv = 0;
    json_t *before = key_get(db, id, err);
    if (before == NULL)
        return finish(db, txn, -ENOENT, err);
    if (strcmp(json_string_value(json_object_get(before, "status")), "active") != 0) {
        rv = fail(err, -EINVAL, "API key '%s' is %s: only an active key can be rotated", id,
                  json_string_value(json_object_get(before, "status")));
        json_decref(before);
        return finish(db, txn, rv, err);
    }
    const char *replaced_by = json_string_value(json_object_get(before, "replaced_by"));
    if (replaced_by != NULL) {
        rv = fail(err, -EINVAL, "API key '%s' was already rotated (replaced by '%s'); rotate that one instead", id,
                  replaced_by);
        json_decref(before);
        return finish(db, txn, rv, err);
    }
    const char *principal = json_string_value(json_object_get(before, "principal"));
    const char *name = json_string_value(json_object_get(before, "name"));
    json_t *old_expiry = json_object_get(before, "expires_at_ms");
    pol_apikey_t key;
    rv = insert_key(db, actor, principal, name, json_is_integer(old_expiry) ? json_integer_value(old_expiry) : 0, &key,
                    err);
    int64_t until = tp_unix_ms() + (overlap_ms > 0 ? overlap_ms : 0);
    sqlite3_stmt *stmt = rv == 0 ? prepare(db,
                                           "UPDATE api_keys SET expires_at_ms = min(coalesce(expires_at_ms, ?1), ?1), "
                                           "replaced_by = ?2 WHERE id = ?3",
                                           err)
                                 : NULL;
    if (stmt != NULL) {
        sqlite3_bind_int64(stmt, 1, until);
        sqlite3_bind_text(stmt, 2, key.id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(stmt, 3, id, -1, SQLITE_TRANSIENT);
        rv = run(db, stmt, err, "expire the old key");
    } else if (rv == 0) {
        rv = -EIO;
    }
    if (rv == 0)
        rv = audit(db, actor, "key.rotate", id, before, read_after(db, id, key_get), err);
    else
        json_decref(before);
    if (rv == 0)
        rv = audit(db, actor, "key.create", key.id, NULL, read_after(db, key.id, key_get), err);
    rv = finish(db, txn, rv, err);
    if (rv == 0)
        hand_out_key(&key, key_out, id_out);
    explicit_bzero(&key, sizeof(key));
    return rv;
}

/* ---- policy rules ---- */

json_t *
pol_admin_rule_get(sqlite3 *db, const char *id, char **err)
{
    sqlite3_stmt *stmt = prepare(db, "SELECT definition AS rule_json FROM policies WHERE id = ?", err);
    if (stmt == NULL)
        return NULL;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    json_t *row = row_json(db, stmt, "rule", id, err);
    json_t *rule = json_incref(json_object_get(row, "rule"));
    json_decref(row);
    return rule;
}

json_t *
pol_admin_rule_list(sqlite3 *db, char **err)
{
    sqlite3_stmt *stmt = prepare(db, "SELECT definition AS rule_json FROM policies ORDER BY id", err);
    json_t *rows = stmt != NULL ? rows_json(db, stmt, err) : NULL;
    if (rows == NULL)
        return NULL;
    json_t *rules = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) json_array_append(rules, json_object_get(row, "rule"));
    json_decref(rows);
    return rules;
}

int
pol_admin_rule_put(sqlite3 *db, const char *actor, json_t *rule, bool create, char **err)
{
    pol_rule_t *parsed = NULL;
    int rv = pol_rule_parse(rule, &parsed, err);
    if (rv != 0)
        return -EINVAL;
    json_t *canonical = pol_rule_to_json(parsed);
    char *text = json_dumps(canonical, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *id = tp_strdup(pol_rule_id(parsed));
    const char *effect = pol_effect_name(pol_rule_effect(parsed));
    const char *plane = pol_plane_name(pol_rule_plane(parsed));
    int txn = begin(db, err);
    if (txn < 0) {
        rv = txn;
        goto out;
    }
    json_t *before = NULL;
    if ((rv = read_before(db, "policies", id, pol_admin_rule_get, &before, err)) != 0) {
        rv = finish(db, txn, rv, err);
        goto out;
    }
    if (before != NULL && create) {
        json_decref(before);
        rv = finish(db, txn, fail(err, -EEXIST, "rule '%s' already exists", id), err);
        goto out;
    }
    sqlite3_stmt *stmt = prepare(db,
                                 "INSERT INTO policies (id, effect, plane, definition, created_at_ms, updated_at_ms) "
                                 "VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (id) DO UPDATE SET effect = ?2, "
                                 "plane = ?3, definition = ?4, updated_at_ms = ?5",
                                 err);
    if (stmt == NULL) {
        json_decref(before);
        rv = finish(db, txn, -EIO, err);
        goto out;
    }
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, effect, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, plane, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 4, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 5, tp_unix_ms());
    rv = run(db, stmt, err, "write the rule");
    if (rv == 0)
        rv = audit(db, actor, before != NULL ? "rule.update" : "rule.create", id, before, json_incref(canonical), err);
    else
        json_decref(before);
    rv = finish(db, txn, rv, err);
out:
    free(id);
    free(text);
    json_decref(canonical);
    pol_rule_free(parsed);
    return rv;
}

int
pol_admin_rule_delete(sqlite3 *db, const char *actor, const char *id, char **err)
{
    return delete_audited(db, actor, "policies", "rule", "rule.delete", id, pol_admin_rule_get, err);
}

char *
pol_admin_default_effect(sqlite3 *db, char **err)
{
    sqlite3_stmt *stmt = prepare(db, "SELECT value FROM settings WHERE key = 'default_effect'", err);
    if (stmt == NULL)
        return NULL;
    char *effect = NULL;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        effect = tp_strdup((const char *)sqlite3_column_text(stmt, 0));
    else if (rc == SQLITE_DONE)
        effect = tp_strdup("deny");
    else
        db_fail(db, err, "read settings");
    sqlite3_finalize(stmt);
    return effect;
}

int
pol_admin_set_default_effect(sqlite3 *db, const char *actor, const char *effect, char **err)
{
    if (strcmp(effect, "allow") != 0 && strcmp(effect, "deny") != 0)
        return fail(err, -EINVAL, "the default effect must be allow or deny, not '%s'", effect);
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    int rv = 0;
    char *before = pol_admin_default_effect(db, err);
    if (before == NULL)
        return finish(db, txn, -EIO, err);
    bool same = strcmp(before, effect) == 0;
    sqlite3_stmt *stmt = same ? NULL
                              : prepare(db,
                                        "INSERT INTO settings (key, value) VALUES ('default_effect', ?) "
                                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                        err);
    if (!same && stmt == NULL)
        rv = -EIO;
    if (stmt != NULL) {
        sqlite3_bind_text(stmt, 1, effect, -1, SQLITE_TRANSIENT);
        rv = run(db, stmt, err, "write the setting");
        if (rv == 0)
            rv = audit(db, actor, "settings.default_effect", "default_effect", json_string(before), json_string(effect),
                       err);
    }
    free(before);
    return finish(db, txn, rv, err);
}

/* ---- quotas ---- */

static bool
valid_scope_kind(const char *kind)
{
    return strcmp(kind, "principal") == 0 || strcmp(kind, "team") == 0;
}

/* A quota row: a limit or a budget, keyed by (scope_kind, scope, third) where third is the
 * resource glob of a limit or the period of a budget, with two optional amounts. */
typedef struct quota_table {
    const char *what;       /* "limit", "budget": for messages */
    const char *action;     /* the audit action */
    const char *select_sql; /* ?1 kind, ?2 scope, ?3 third */
    const char *delete_sql; /* the same keys */
    const char *upsert_sql; /* the same keys, ?4 and ?5 the amounts */
} quota_table_t;

static const quota_table_t limits_table = {
    "limit",
    "limit.set",
    "SELECT scope_kind, scope, resource, requests_per_minute, tokens_per_minute FROM rate_limits WHERE scope_kind = ?1 "
    "AND scope = ?2 AND resource = ?3",
    "DELETE FROM rate_limits WHERE scope_kind = ?1 AND scope = ?2 AND resource = ?3",
    "INSERT INTO rate_limits (scope_kind, scope, resource, requests_per_minute, tokens_per_minute) VALUES (?1, ?2, ?3, "
    "?4, ?5) ON CONFLICT (scope_kind, scope, resource) DO UPDATE SET requests_per_minute = ?4, tokens_per_minute = ?5",
};

static const quota_table_t budgets_table = {
    "budget",
    "budget.set",
    "SELECT scope_kind, scope, period, max_tokens, max_cost_micros FROM budgets WHERE scope_kind = ?1 AND scope = ?2 "
    "AND period = ?3",
    "DELETE FROM budgets WHERE scope_kind = ?1 AND scope = ?2 AND period = ?3",
    "INSERT INTO budgets (scope_kind, scope, period, max_tokens, max_cost_micros) VALUES (?1, ?2, ?3, ?4, ?5) ON "
    "CONFLICT (scope_kind, scope, period) DO UPDATE SET max_tokens = ?4, max_cost_micros = ?5",
};

static sqlite3_stmt *
quota_statement(sqlite3 *db, const char *sql, const char *kind, const char *scope, const char *third, char **err)
{
    sqlite3_stmt *stmt = prepare(db, sql, err);
    if (stmt != NULL) {
        sqlite3_bind_text(stmt, 1, kind, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(stmt, 2, scope, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(stmt, 3, third, -1, SQLITE_TRANSIENT);
    }
    return stmt;
}

/* The row as JSON, or NULL when there is none (or it cannot be read: the audit then says null). */
static json_t *
quota_get(sqlite3 *db, const quota_table_t *t, const char *kind, const char *scope, const char *third)
{
    char *err = NULL;
    sqlite3_stmt *stmt = quota_statement(db, t->select_sql, kind, scope, third, &err);
    json_t *rows = stmt != NULL ? rows_json(db, stmt, &err) : NULL;
    free(err);
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return row;
}

/* Sets (or, with both amounts 0, removes) a quota row, audited. Inputs are checked by callers. */
static int
quota_set(sqlite3 *db, const char *actor, const quota_table_t *t, const char *kind, const char *scope,
          const char *third, int64_t a, int64_t b, char **err)
{
    if (!valid_scope_kind(kind))
        return fail(err, -EINVAL, "a %s applies to a principal or a team, not '%s'", t->what, kind);
    if (!pol_admin_valid_id(scope))
        return fail(err, -EINVAL, "'%s' is not a valid %s id", scope, kind);
    if (a < 0 || b < 0)
        return fail(err, -EINVAL, "%ss must not be negative", t->what);
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    json_t *before = quota_get(db, t, kind, scope, third);
    bool remove = a == 0 && b == 0;
    sqlite3_stmt *stmt = quota_statement(db, remove ? t->delete_sql : t->upsert_sql, kind, scope, third, err);
    if (stmt == NULL) {
        json_decref(before);
        return finish(db, txn, -EIO, err);
    }
    if (!remove) {
        bind_int_or_null(stmt, 4, a);
        bind_int_or_null(stmt, 5, b);
    }
    char *what = tp_sprintf("write the %s", t->what);
    int rv = run(db, stmt, err, what);
    free(what);
    char *target = tp_sprintf("%s:%s:%s", kind, scope, third);
    if (rv == 0)
        rv = audit(db, actor, t->action, target, before, quota_get(db, t, kind, scope, third), err);
    else
        json_decref(before);
    free(target);
    return finish(db, txn, rv, err);
}

int
pol_admin_limit_set(sqlite3 *db, const char *actor, const char *scope_kind, const char *scope, const char *resource,
                    int64_t rpm, int64_t tpm, char **err)
{
    return quota_set(db, actor, &limits_table, scope_kind, scope,
                     resource != NULL && resource[0] != '\0' ? resource : "*", rpm, tpm, err);
}

json_t *
pol_admin_limit_list(sqlite3 *db, char **err)
{
    sqlite3_stmt *stmt = prepare(db,
                                 "SELECT scope_kind, scope, resource, requests_per_minute, tokens_per_minute FROM "
                                 "rate_limits ORDER BY scope_kind, scope, resource",
                                 err);
    return stmt != NULL ? rows_json(db, stmt, err) : NULL;
}

int
pol_admin_budget_set(sqlite3 *db, const char *actor, const char *scope_kind, const char *scope, const char *period,
                     int64_t max_tokens, int64_t max_cost_micros, char **err)
{
    if (strcmp(period, "day") != 0 && strcmp(period, "month") != 0)
        return fail(err, -EINVAL, "a budget's period is day or month, not '%s'", period);
    return quota_set(db, actor, &budgets_table, scope_kind, scope, period, max_tokens, max_cost_micros, err);
}

/* Start of the current UTC day or month, in Unix ms. */
static int64_t
period_start_ms(const char *period, int64_t now)
{
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    if (strcmp(period, "month") == 0)
        tm.tm_mday = 1;
    return (int64_t)timegm(&tm) * 1000;
}

json_t *
pol_admin_budget_list(sqlite3 *db, const char *scope_kind, const char *scope, int64_t now, char **err)
{
    sqlite3_stmt *stmt = prepare(db,
                                 "SELECT scope_kind, scope, period, max_tokens, max_cost_micros FROM budgets WHERE "
                                 "(?1 IS NULL OR scope_kind = ?1) AND (?2 IS NULL OR scope = ?2) ORDER BY scope_kind, "
                                 "scope, period",
                                 err);
    if (stmt == NULL)
        return NULL;
    bind_text_or_null(stmt, 1, scope_kind);
    bind_text_or_null(stmt, 2, scope);
    json_t *rows = rows_json(db, stmt, err);
    size_t i;
    json_t *b;
    json_array_foreach(rows, i, b)
    {
        const char *kind = json_string_value(json_object_get(b, "scope_kind"));
        const char *period = json_string_value(json_object_get(b, "period"));
        int64_t since = period_start_ms(period, now);
        const char *sql = strcmp(kind, "team") == 0
                              ? "SELECT coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(cost_micros), 0) "
                                "FROM usage WHERE team = ? AND ts_ms >= ?"
                              : "SELECT coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(cost_micros), 0) "
                                "FROM usage WHERE principal_id = ? AND ts_ms >= ?";
        sqlite3_stmt *sum = prepare(db, sql, err);
        if (sum == NULL) {
            json_decref(rows);
            return NULL;
        }
        sqlite3_bind_text(sum, 1, json_string_value(json_object_get(b, "scope")), -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(sum, 2, since);
        if (sqlite3_step(sum) == SQLITE_ROW) {
            json_object_set_new(b, "used_tokens", json_integer(sqlite3_column_int64(sum, 0)));
            json_object_set_new(b, "used_cost_micros", json_integer(sqlite3_column_int64(sum, 1)));
        }
        sqlite3_finalize(sum);
        json_object_set_new(b, "period_start_ms", json_integer(since));
    }
    return rows;
}

/* ---- kill switches ---- */

/* Every kill column, and its status at ?1 (now). */
#define KILL_COLUMNS                                                                                                   \
    "id, target_kind, target, reason, created_by, created_at_ms, expires_at_ms, released_at_ms, released_by, CASE "    \
    "WHEN released_at_ms IS NOT NULL THEN 'released' WHEN expires_at_ms IS NOT NULL AND expires_at_ms <= ?1 THEN "     \
    "'expired' ELSE 'active' END AS status"
/* The kills of (?2 kind, ?3 target) in force at ?1. */
#define KILL_ACTIVE_WHERE                                                                                              \
    "target_kind = ?2 AND target = ?3 AND released_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > ?1)"

/* Checks kind and target; *target becomes "*" for "all". Returns 0 or -EINVAL with *err. */
static int
check_kill_target(const char *kind, const char **target, char **err)
{
    if (kind == NULL || (strcmp(kind, "agent") != 0 && strcmp(kind, "principal") != 0 && strcmp(kind, "team") != 0 &&
                         strcmp(kind, "all") != 0))
        return fail(err, -EINVAL, "a kill targets an agent, a principal, a team or all, not '%s'",
                    kind != NULL ? kind : "");
    if (strcmp(kind, "all") == 0) {
        if (*target != NULL && (*target)[0] != '\0' && strcmp(*target, "*") != 0)
            return fail(err, -EINVAL, "a kill of all takes no name (or \"*\"), not '%s'", *target);
        *target = "*";
        return 0;
    }
    if (*target == NULL || !pol_admin_valid_id(*target))
        return fail(err, -EINVAL, "a %s's name must be 1-%d characters of A-Z a-z 0-9 - _ . : @, not '%s'", kind,
                    ID_MAX, *target != NULL ? *target : "");
    return 0;
}

/* "agent 'planner'", or "all" (for messages). */
static char *
kill_subject(const char *kind, const char *target)
{
    return strcmp(kind, "all") == 0 ? tp_strdup("all") : tp_sprintf("%s '%s'", kind, target);
}

static json_t *
kill_get(sqlite3 *db, int64_t id)
{
    char *err = NULL;
    sqlite3_stmt *stmt = prepare(db, "SELECT " KILL_COLUMNS " FROM kills WHERE id = ?2", &err);
    json_t *rows = NULL;
    if (stmt != NULL) {
        sqlite3_bind_int64(stmt, 1, tp_unix_ms());
        sqlite3_bind_int64(stmt, 2, id);
        rows = rows_json(db, stmt, &err);
    }
    free(err);
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return row;
}

/* The ids of the kills of kind/target in force at `now`, oldest first, into *ids (malloc'd).
 * Returns their number, or a negative code with *err. */
static int
active_kill_ids(sqlite3 *db, const char *kind, const char *target, int64_t now, int64_t **ids, char **err)
{
    *ids = NULL;
    sqlite3_stmt *stmt = prepare(db, "SELECT id FROM kills WHERE " KILL_ACTIVE_WHERE " ORDER BY id", err);
    if (stmt == NULL)
        return -EIO;
    sqlite3_bind_int64(stmt, 1, now);
    sqlite3_bind_text(stmt, 2, kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, target, -1, SQLITE_TRANSIENT);
    int n = 0, rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        *ids = tp_realloc(*ids, (size_t)(n + 1) * sizeof(**ids));
        (*ids)[n++] = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        free(*ids);
        *ids = NULL;
        return db_fail(db, err, "read the kills");
    }
    return n;
}

/* Refuses a kill whose target already has one in force, naming it. */
static int
refuse_duplicate(sqlite3 *db, const char *kind, const char *target, int64_t id, char **err)
{
    json_t *k = kill_get(db, id);
    char since[32] = "?";
    time_t t = (time_t)(json_integer_value(json_object_get(k, "created_at_ms")) / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) != NULL)
        strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *by = json_string_value(json_object_get(k, "created_by"));
    char *subject = kill_subject(kind, target);
    fail(err, -EEXIST,
         "%s is already killed: kill #%lld since %s by %s; release it first to change its reason or expiry", subject,
         (long long)id, since, by != NULL ? by : "?");
    free(subject);
    json_decref(k);
    return -EEXIST;
}

int64_t
pol_admin_kill(sqlite3 *db, const char *actor, const char *target_kind, const char *target, const char *reason,
               int64_t ttl_ms, char **err)
{
    int rv = check_kill_target(target_kind, &target, err);
    if (rv != 0)
        return rv;
    if (reason == NULL || reason[0] == '\0')
        return fail(err, -EINVAL, "a kill needs a reason: what the incident is, for whoever reads the audit");
    if (strlen(reason) > POL_KILL_REASON_MAX)
        return fail(err, -EINVAL, "a kill's reason is at most %d bytes", POL_KILL_REASON_MAX);
    if (ttl_ms < 0 || ttl_ms > INT64_MAX / 2)
        return fail(err, -EINVAL, "a kill's time to live must be positive, or 0 for none");
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    int64_t now = tp_unix_ms(), *ids = NULL;
    int n = active_kill_ids(db, target_kind, target, now, &ids, err);
    if (n != 0) {
        rv = n < 0 ? n : refuse_duplicate(db, target_kind, target, ids[n - 1], err);
        free(ids);
        return finish(db, txn, rv, err);
    }
    sqlite3_stmt *stmt = prepare(db,
                                 "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms, "
                                 "expires_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                                 err);
    if (stmt == NULL)
        return finish(db, txn, -EIO, err);
    sqlite3_bind_text(stmt, 1, target_kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, target, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, reason, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 4, actor, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 5, now);
    bind_int_or_null(stmt, 6, ttl_ms > 0 ? now + ttl_ms : 0);
    rv = run(db, stmt, err, "write the kill");
    int64_t id = rv == 0 ? sqlite3_last_insert_rowid(db) : 0;
    char *audit_target = tp_sprintf("%s:%s", target_kind, target);
    if (rv == 0)
        rv = audit(db, actor, "kill.create", audit_target, NULL, kill_get(db, id), err);
    free(audit_target);
    rv = finish(db, txn, rv, err);
    return rv == 0 ? id : rv;
}

int64_t
pol_admin_release(sqlite3 *db, const char *actor, const char *target_kind, const char *target, char **err)
{
    int rv = check_kill_target(target_kind, &target, err);
    if (rv != 0)
        return rv;
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    int64_t now = tp_unix_ms(), *ids = NULL;
    int n = active_kill_ids(db, target_kind, target, now, &ids, err);
    if (n <= 0) {
        if (n == 0) {
            char *subject = kill_subject(target_kind, target);
            n = fail(err, -ENOENT, "no kill of %s is in force", subject);
            free(subject);
        }
        return finish(db, txn, n, err);
    }
    char *audit_target = tp_sprintf("%s:%s", target_kind, target);
    for (int i = 0; i < n && rv == 0; i++) {
        json_t *before = kill_get(db, ids[i]);
        sqlite3_stmt *stmt = prepare(db, "UPDATE kills SET released_at_ms = ?, released_by = ? WHERE id = ?", err);
        if (stmt == NULL) {
            json_decref(before);
            rv = -EIO;
            break;
        }
        sqlite3_bind_int64(stmt, 1, now);
        sqlite3_bind_text(stmt, 2, actor, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(stmt, 3, ids[i]);
        rv = run(db, stmt, err, "release the kill");
        if (rv == 0)
            rv = audit(db, actor, "kill.release", audit_target, before, kill_get(db, ids[i]), err);
        else
            json_decref(before);
    }
    free(audit_target);
    int64_t newest = ids[n - 1];
    free(ids);
    rv = finish(db, txn, rv, err);
    return rv == 0 ? newest : rv;
}

json_t *
pol_admin_kills(sqlite3 *db, bool include_released, char **err)
{
    sqlite3_stmt *stmt = prepare(db,
                                 "SELECT " KILL_COLUMNS " FROM kills WHERE ?2 OR (released_at_ms IS NULL AND "
                                 "(expires_at_ms IS NULL OR expires_at_ms > ?1)) ORDER BY id DESC",
                                 err);
    if (stmt == NULL)
        return NULL;
    sqlite3_bind_int64(stmt, 1, tp_unix_ms());
    sqlite3_bind_int(stmt, 2, include_released);
    return rows_json(db, stmt, err);
}

/* True when `sql` (one text parameter) returns a row; also when it cannot run, so that a store
 * without a table yet never makes gwctl cry wolf. */
static bool
exists(sqlite3 *db, const char *sql, const char *value)
{
    char *err = NULL;
    sqlite3_stmt *stmt = prepare(db, sql, &err);
    free(err);
    if (stmt == NULL)
        return true;
    sqlite3_bind_text(stmt, 1, value, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    return rc != SQLITE_DONE;
}

bool
pol_admin_kill_target_known(sqlite3 *db, const char *target_kind, const char *target)
{
    if (strcmp(target_kind, "all") == 0)
        return true;
    if (strcmp(target_kind, "team") == 0)
        return exists(db, "SELECT 1 FROM teams WHERE id = ?1 UNION ALL SELECT 1 FROM principals WHERE team = ?1",
                      target);
    if (exists(db, "SELECT 1 FROM principals WHERE id = ?", target))
        return true;
    return strcmp(target_kind, "agent") == 0 && exists(db, "SELECT 1 FROM agents WHERE name = ?", target);
}

int
pol_admin_audit_kill_outcome(sqlite3 *db, const char *actor, const char *target_kind, const char *target,
                             json_t *outcome, char **err)
{
    int rv = check_kill_target(target_kind, &target, err);
    if (rv != 0)
        return rv;
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    char *audit_target = tp_sprintf("%s:%s", target_kind, target);
    rv = audit_detail(db, actor, "kill.broadcast", audit_target, outcome, err);
    free(audit_target);
    return finish(db, txn, rv, err);
}

/* ---- usage and audit ---- */

json_t *
pol_admin_usage(sqlite3 *db, const char *by, const char *principal, const char *team, const char *model,
                int64_t since_ms, int64_t until_ms, char **err)
{
    static const struct {
        const char *by;
        const char *column;
    } groups[] = { { "principal", "principal_id" }, { "team", "team" }, { "model", "resource" }, { "plane", "plane" } };
    const char *column = NULL;
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        if (strcmp(by, groups[i].by) == 0)
            column = groups[i].column;
    }
    if (column == NULL) {
        fail(err, -EINVAL, "usage is grouped by principal, team, model or plane, not '%s'", by);
        return NULL;
    }
    char *sql = tp_sprintf("SELECT coalesce(%s, '-') AS key, count(*) AS requests, sum(input_tokens) AS input_tokens, "
                           "sum(output_tokens) AS output_tokens, sum(cost_micros) AS cost_micros FROM usage WHERE "
                           "ts_ms >= ?1 AND ts_ms < ?2 AND (?3 IS NULL OR principal_id = ?3) AND (?4 IS NULL OR "
                           "team = ?4) AND (?5 IS NULL OR resource = ?5) GROUP BY 1 ORDER BY 1",
                           column);
    sqlite3_stmt *stmt = prepare(db, sql, err);
    free(sql);
    if (stmt == NULL)
        return NULL;
    sqlite3_bind_int64(stmt, 1, since_ms);
    sqlite3_bind_int64(stmt, 2, until_ms > 0 ? until_ms : INT64_MAX);
    bind_text_or_null(stmt, 3, principal);
    bind_text_or_null(stmt, 4, team);
    bind_text_or_null(stmt, 5, model);
    return rows_json(db, stmt, err);
}

json_t *
pol_admin_audit(sqlite3 *db, const char *actor, const char *action, const char *target, int64_t since_ms,
                int64_t until_ms, int64_t after_id, int limit, char **err)
{
    sqlite3_stmt *stmt = prepare(db,
                                 "SELECT id, ts_ms, actor, action, target, detail AS detail_json FROM audit_log WHERE "
                                 "(?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR "
                                 "target = ?3) AND ts_ms >= ?4 AND ts_ms < ?5 AND id > ?6 ORDER BY id DESC LIMIT ?7",
                                 err);
    if (stmt == NULL)
        return NULL;
    bind_text_or_null(stmt, 1, actor);
    bind_text_or_null(stmt, 2, action);
    bind_text_or_null(stmt, 3, target);
    sqlite3_bind_int64(stmt, 4, since_ms);
    sqlite3_bind_int64(stmt, 5, until_ms > 0 ? until_ms : INT64_MAX);
    sqlite3_bind_int64(stmt, 6, after_id);
    sqlite3_bind_int(stmt, 7, limit > 0 ? limit : 100);
    return rows_json(db, stmt, err);
}
