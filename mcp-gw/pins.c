#include "pins.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "clock.h"
#include "log.h"
#include "mem.h"
#include "store.h"

/* ---- hashing ---- */

/* The members of a tool definition that are pinned. Whatever else a server sends (_meta, icons,
 * members of later protocol versions) may change without making the tool drift. */
static const char *const PINNED_MEMBERS[] = {
    "name", "title", "description", "inputSchema", "outputSchema", "annotations",
};

char *
mcp_pin_canonical(const json_t *tool)
{
    if (!json_is_object(tool))
        return NULL;
    json_t *pinned = json_object();
    for (size_t i = 0; i < sizeof(PINNED_MEMBERS) / sizeof(PINNED_MEMBERS[0]); i++) {
        json_t *v = json_object_get(tool, PINNED_MEMBERS[i]); /* borrowed */
        if (v != NULL)
            json_object_set_new(pinned, PINNED_MEMBERS[i], json_deep_copy(v));
    }
    /* JSON_SORT_KEYS sorts the members of every object, at every depth. */
    char *text = json_dumps(pinned, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(pinned);
    if (text == NULL)
        tp_fatal("out of memory");
    return text;
}

char *
mcp_pin_hash(const json_t *tool)
{
    char *text = mcp_pin_canonical(tool);
    if (text == NULL)
        return NULL;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)text, strlen(text), digest);
    free(text);
    static const char hex[] = "0123456789abcdef";
    char *out = tp_malloc(MCP_PIN_HASH_LEN + 1);
    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0x0f];
    }
    out[MCP_PIN_HASH_LEN] = '\0';
    return out;
}

/* ---- the snapshot ---- */

typedef struct mcp_pin {
    const char *server; /* server, tool and hash share one allocation, owned through server */
    const char *tool;
    const char *hash; /* the approved definition's */
    bool quarantined;
} mcp_pin_t;

struct mcp_pins {
    mcp_pin_t *pins; /* sorted by server, then tool */
    size_t count;
};

static int
compare_pins(const void *a, const void *b)
{
    const mcp_pin_t *x = a, *y = b;
    int c = strcmp(x->server, y->server);
    return c != 0 ? c : strcmp(x->tool, y->tool);
}

/* Fills pin from the current row (server, tool, hash, quarantined) of stmt. */
static void
pin_from_row(mcp_pin_t *pin, sqlite3_stmt *stmt)
{
    const char *server = (const char *)sqlite3_column_text(stmt, 0);
    const char *tool = (const char *)sqlite3_column_text(stmt, 1);
    const char *hash = (const char *)sqlite3_column_text(stmt, 2);
    size_t ns = strlen(server) + 1, nt = strlen(tool) + 1, nh = strlen(hash) + 1;
    char *buf = tp_malloc(ns + nt + nh);
    memcpy(buf, server, ns);
    memcpy(buf + ns, tool, nt);
    memcpy(buf + ns + nt, hash, nh);
    *pin = (mcp_pin_t){
        .server = buf,
        .tool = buf + ns,
        .hash = buf + ns + nt,
        .quarantined = sqlite3_column_int(stmt, 3) != 0,
    };
}

mcp_pins_t *
mcp_pins_load(sqlite3 *db, char **err)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, "SELECT server, tool, hash, status = 'quarantined' FROM mcp_tool_pins", -1, &stmt,
                           NULL) != SQLITE_OK) {
        *err = tp_sprintf("read mcp_tool_pins: %s", sqlite3_errmsg(db));
        return NULL;
    }
    mcp_pins_t *p = tp_calloc(1, sizeof(*p));
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (p->count == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            p->pins = tp_realloc(p->pins, cap * sizeof(*p->pins));
        }
        pin_from_row(&p->pins[p->count++], stmt);
    }
    if (rc != SQLITE_DONE) {
        *err = tp_sprintf("read mcp_tool_pins: %s", sqlite3_errmsg(db));
        sqlite3_finalize(stmt);
        mcp_pins_free(p);
        return NULL;
    }
    sqlite3_finalize(stmt);
    if (p->count > 0) /* qsort and bsearch may not be given a NULL array */
        qsort(p->pins, p->count, sizeof(*p->pins), compare_pins);
    return p;
}

void
mcp_pins_free(mcp_pins_t *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->count; i++)
        free((char *)p->pins[i].server);
    free(p->pins);
    free(p);
}

size_t
mcp_pins_count(const mcp_pins_t *p)
{
    return p != NULL ? p->count : 0;
}

mcp_pin_verdict_t
mcp_pins_check(const mcp_pins_t *p, const char *server, const char *tool, const char *hash)
{
    assert(p != NULL);
    if (p->count == 0)
        return MCP_PIN_NEW;
    mcp_pin_t key = { .server = server, .tool = tool };
    const mcp_pin_t *pin = bsearch(&key, p->pins, p->count, sizeof(*p->pins), compare_pins);
    if (pin == NULL)
        return MCP_PIN_NEW;
    if (pin->quarantined || strcmp(pin->hash, hash) != 0)
        return MCP_PIN_DRIFT;
    return MCP_PIN_OK;
}

/* ---- the daemon's writes ---- */

/* The statements are static arrays: the writer caches its prepared statements by address. */

static const char INSERT_PIN_SQL[] =
    "INSERT INTO mcp_tool_pins (server, tool, hash, definition, status, first_seen_ms, changed_ms) "
    "VALUES (?1, ?2, ?3, ?4, 'pinned', ?5, ?5) ON CONFLICT (server, tool) DO NOTHING";

/* What makes a drift a change: the pin exists, seen_hash is not the approved hash, and the pin
 * is not already quarantined on seen_hash. The audit record and the update share it; the audit
 * runs first, so that it sees the pin as it was. */
#define DRIFT_CHANGES "server = ?1 AND tool = ?2 AND hash != ?3 AND (status != 'quarantined' OR seen_hash IS NOT ?3)"

static const char AUDIT_DRIFT_SQL[] = "INSERT INTO audit_log (ts_ms, actor, action, target, detail) "
                                      "SELECT ?4, 'mcp-gw', 'mcp.tool.quarantined', server || '/' || tool, json_object("
                                      "'before', json_object('status', status, 'hash', hash, 'seen_hash', seen_hash), "
                                      "'after', json_object('status', 'quarantined', 'hash', hash, 'seen_hash', ?3)) "
                                      "FROM mcp_tool_pins WHERE " DRIFT_CHANGES;

static const char UPDATE_DRIFT_SQL[] = "UPDATE mcp_tool_pins SET status = 'quarantined', seen_hash = ?3, "
                                       "seen_definition = ?4, changed_ms = ?5 WHERE " DRIFT_CHANGES;

static tp_store_value_t
text_value(const char *s)
{
    return (tp_store_value_t){ .type = TP_STORE_TEXT, .u.s = s };
}

static tp_store_value_t
int_value(int64_t i)
{
    return (tp_store_value_t){ .type = TP_STORE_INT, .u.i = i };
}

int
mcp_pins_record_new(tp_store_writer_t *w, const char *server, const char *tool, const char *hash,
                    const char *definition_json)
{
    if (server == NULL || tool == NULL || hash == NULL || definition_json == NULL)
        return -EINVAL;
    tp_store_value_t values[] = {
        text_value(server), text_value(tool), text_value(hash), text_value(definition_json), int_value(tp_unix_ms()),
    };
    return tp_store_submit(w, INSERT_PIN_SQL, values, sizeof(values) / sizeof(values[0]));
}

int
mcp_pins_record_drift(tp_store_writer_t *w, const char *server, const char *tool, const char *seen_hash,
                      const char *seen_definition_json)
{
    if (server == NULL || tool == NULL || seen_hash == NULL || seen_definition_json == NULL)
        return -EINVAL;
    int64_t now = tp_unix_ms();
    tp_store_value_t audit[] = {
        text_value(server),
        text_value(tool),
        text_value(seen_hash),
        int_value(now),
    };
    int rv = tp_store_submit(w, AUDIT_DRIFT_SQL, audit, sizeof(audit) / sizeof(audit[0]));
    if (rv != 0)
        return rv; /* the pin is left as it is: the next call audits and quarantines it */
    tp_store_value_t update[] = {
        text_value(server), text_value(tool), text_value(seen_hash), text_value(seen_definition_json), int_value(now),
    };
    return tp_store_submit(w, UPDATE_DRIFT_SQL, update, sizeof(update) / sizeof(update[0]));
}

/* ---- the admin side ---- */

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

/* Runs a prepared statement that returns no rows, and finalizes it. */
static int
run(sqlite3 *db, sqlite3_stmt *stmt, char **err, const char *what)
{
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : db_fail(db, err, what);
}

/* Admin changes go through tp_store_change_begin / _end (see store.h), under savepoint mcp_pins. */
static int
begin(sqlite3 *db, char **err)
{
    return tp_store_change_begin(db, "mcp_pins", err);
}

static int
finish(sqlite3 *db, int txn, int rv, char **err)
{
    return tp_store_change_end(db, txn, "mcp_pins", rv, err);
}

/* Writes the audit row of a change inside the caller's transaction. Steals before and after. */
static int
audit(sqlite3 *db, const char *actor, const char *action, const char *target, json_t *before, json_t *after, char **err)
{
    json_t *detail = json_pack("{s:o, s:o}", "before", before != NULL ? before : json_null(), "after",
                               after != NULL ? after : json_null());
    char *text = json_dumps(detail, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(detail);
    if (text == NULL)
        tp_fatal("out of memory");
    sqlite3_stmt *stmt =
        prepare(db, "INSERT INTO audit_log (ts_ms, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)", err);
    if (stmt == NULL) {
        free(text);
        return -EIO;
    }
    sqlite3_bind_int64(stmt, 1, tp_unix_ms());
    sqlite3_bind_text(stmt, 2, actor, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, action, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 4, target, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 5, text, -1, SQLITE_TRANSIENT);
    free(text);
    return run(db, stmt, err, "write the audit record");
}

/* A column as JSON: integers, text (parsed as JSON when `parse`, kept as a string when it is not
 * JSON), or null. */
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

/* The columns of a pin as mcp_pins_list shows it; the definitions are parsed. */
static const char PIN_COLUMNS[] = "server, tool, status, hash, definition, seen_hash, seen_definition, first_seen_ms, "
                                  "changed_ms, approved_by, approved_ms";

/* Steps stmt (PIN_COLUMNS) to the end, collecting its rows, and finalizes it. */
static json_t *
pin_rows(sqlite3 *db, sqlite3_stmt *stmt, char **err)
{
    json_t *rows = json_array();
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int i = 0; i < sqlite3_column_count(stmt); i++) {
            const char *name = sqlite3_column_name(stmt, i);
            bool parse = strcmp(name, "definition") == 0 || strcmp(name, "seen_definition") == 0;
            json_object_set_new(row, name, column_json(stmt, i, parse));
        }
        json_array_append_new(rows, row);
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        json_decref(rows);
        db_fail(db, err, "read mcp_tool_pins");
        return NULL;
    }
    return rows;
}

/* Reads the pin (server, tool). Returns 0 and *out (a new reference), -ENOENT with *err ("no
 * pin for server/tool"), or another negative code with *err. */
static int
pin_get(sqlite3 *db, const char *server, const char *tool, json_t **out, char **err)
{
    *out = NULL;
    char *sql = tp_sprintf("SELECT %s FROM mcp_tool_pins WHERE server = ? AND tool = ?", PIN_COLUMNS);
    sqlite3_stmt *stmt = prepare(db, sql, err);
    free(sql);
    if (stmt == NULL)
        return -EIO;
    sqlite3_bind_text(stmt, 1, server, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, tool, -1, SQLITE_TRANSIENT);
    json_t *rows = pin_rows(db, stmt, err);
    if (rows == NULL)
        return -EIO;
    *out = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return *out != NULL ? 0 : fail(err, -ENOENT, "no pin for %s/%s", server, tool);
}

json_t *
mcp_pins_list(sqlite3 *db, const char *server, bool drift_only, char **err)
{
    char *sql = tp_sprintf("SELECT %s FROM mcp_tool_pins WHERE (?1 IS NULL OR server = ?1) AND "
                           "(?2 = 0 OR status = 'quarantined') ORDER BY server, tool",
                           PIN_COLUMNS);
    sqlite3_stmt *stmt = prepare(db, sql, err);
    free(sql);
    if (stmt == NULL)
        return NULL;
    if (server != NULL)
        sqlite3_bind_text(stmt, 1, server, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt, 1);
    sqlite3_bind_int(stmt, 2, drift_only);
    return pin_rows(db, stmt, err);
}

/* Approves inside the open transaction; returns 0 or a negative code with *err. */
static int
approve(sqlite3 *db, const char *actor, const char *server, const char *tool, const char *target, char **err)
{
    json_t *before;
    int rv = pin_get(db, server, tool, &before, err);
    if (rv != 0)
        return rv;
    if (strcmp(json_string_value(json_object_get(before, "status")), "quarantined") != 0 ||
        !json_is_string(json_object_get(before, "seen_hash")) ||
        json_is_null(json_object_get(before, "seen_definition"))) {
        json_decref(before);
        return fail(err, -EINVAL, "%s is not quarantined", target);
    }
    sqlite3_stmt *stmt = prepare(db,
                                 "UPDATE mcp_tool_pins SET hash = seen_hash, definition = seen_definition, "
                                 "status = 'pinned', seen_hash = NULL, seen_definition = NULL, changed_ms = ?1, "
                                 "approved_by = ?2, approved_ms = ?1 WHERE server = ?3 AND tool = ?4",
                                 err);
    if (stmt == NULL) {
        json_decref(before);
        return -EIO;
    }
    sqlite3_bind_int64(stmt, 1, tp_unix_ms());
    sqlite3_bind_text(stmt, 2, actor, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, server, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 4, tool, -1, SQLITE_TRANSIENT);
    if ((rv = run(db, stmt, err, "approve the pin")) != 0) {
        json_decref(before);
        return rv;
    }
    json_t *after;
    if ((rv = pin_get(db, server, tool, &after, err)) != 0) {
        json_decref(before);
        return rv;
    }
    return audit(db, actor, "mcp.tool.approve", target, before, after, err);
}

int
mcp_pins_approve(sqlite3 *db, const char *actor, const char *server, const char *tool, char **err)
{
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    char *target = tp_sprintf("%s/%s", server, tool);
    int rv = approve(db, actor, server, tool, target, err);
    free(target);
    return finish(db, txn, rv, err);
}

/* Forgets inside the open transaction; returns 0 or a negative code with *err. */
static int
forget(sqlite3 *db, const char *actor, const char *server, const char *tool, const char *target, char **err)
{
    json_t *before;
    int rv = pin_get(db, server, tool, &before, err);
    if (rv != 0)
        return rv;
    sqlite3_stmt *stmt = prepare(db, "DELETE FROM mcp_tool_pins WHERE server = ? AND tool = ?", err);
    if (stmt == NULL) {
        json_decref(before);
        return -EIO;
    }
    sqlite3_bind_text(stmt, 1, server, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, tool, -1, SQLITE_TRANSIENT);
    if ((rv = run(db, stmt, err, "delete the pin")) != 0) {
        json_decref(before);
        return rv;
    }
    return audit(db, actor, "mcp.tool.forget", target, before, NULL, err);
}

int
mcp_pins_forget(sqlite3 *db, const char *actor, const char *server, const char *tool, char **err)
{
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    char *target = tp_sprintf("%s/%s", server, tool);
    int rv = forget(db, actor, server, tool, target, err);
    free(target);
    return finish(db, txn, rv, err);
}
