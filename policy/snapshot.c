#include "snapshot.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

static char *
column_text(sqlite3_stmt *stmt, int col)
{
    const unsigned char *s = sqlite3_column_text(stmt, col);
    return tp_strdup(s != NULL ? (const char *)s : "");
}

static int
load_kills(sqlite3 *db, pol_snapshot_t *snap, char **err)
{
    static const char sql[] =
        "SELECT target_kind, target, reason, created_by, created_at_ms, expires_at_ms "
        "FROM kills WHERE released_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > ?) "
        "ORDER BY id";
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        *err = tp_sprintf("read kills: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(stmt, 1, snap->loaded_at_ms);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (snap->num_kills == cap) {
            cap = cap != 0 ? cap * 2 : 8;
            snap->kills = tp_realloc(snap->kills, cap * sizeof(*snap->kills));
        }
        pol_kill_t *k = &snap->kills[snap->num_kills++];
        k->target_kind = column_text(stmt, 0);
        k->target = column_text(stmt, 1);
        k->reason = column_text(stmt, 2);
        k->created_by = column_text(stmt, 3);
        k->created_at_ms = sqlite3_column_int64(stmt, 4);
        k->expires_at_ms = sqlite3_column_int64(stmt, 5); /* NULL reads as 0 */
    }
    if (rc != SQLITE_DONE)
        *err = tp_sprintf("read kills: %s", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Runs `sql` and calls row(snap, stmt) for each row. Returns 0, or -1 with *err naming `what`. */
typedef struct load_ctx {
    pol_snapshot_t *snap;
    pol_rule_t **rules; /* parsed rules, compiled into the ruleset at the end */
    size_t num_rules;
} load_ctx_t;

static int
each_row(sqlite3 *db, load_ctx_t *ctx, const char *sql, const char *what,
         int (*row)(load_ctx_t *ctx, sqlite3_stmt *stmt, char **err), char **err)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        *err = tp_sprintf("read %s: %s", what, sqlite3_errmsg(db));
        return -1;
    }
    int rc;
    int rv = 0;
    while (rv == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW)
        rv = row(ctx, stmt, err);
    if (rv == 0 && rc != SQLITE_DONE) {
        *err = tp_sprintf("read %s: %s", what, sqlite3_errmsg(db));
        rv = -1;
    }
    sqlite3_finalize(stmt);
    return rv;
}

static void *
grow(void *array, size_t count, size_t size)
{
    /* Doubling at powers of two keeps appends amortised O(1) without storing a capacity. */
    if (count == 0 || (count & (count - 1)) == 0)
        array = tp_realloc(array, (count == 0 ? 1 : count * 2) * size);
    return array;
}

/* Parses JSON text that must be an array of strings into *out; -1 otherwise. */
static int
parse_roles(const char *text, pol_principal_t *p)
{
    json_t *a = json_loads(text, 0, NULL);
    int rv = json_is_array(a) ? 0 : -1;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v)) {
            rv = -1;
            break;
        }
        p->roles = grow(p->roles, p->num_roles, sizeof(char *));
        p->roles[p->num_roles++] = tp_strdup(json_string_value(v));
    }
    json_decref(a);
    return rv;
}

static int
compare_labels(const void *a, const void *b)
{
    return strcmp(((const pol_label_t *)a)->key, ((const pol_label_t *)b)->key);
}

static int
parse_labels(const char *text, pol_principal_t *p)
{
    json_t *o = json_loads(text, 0, NULL);
    int rv = json_is_object(o) ? 0 : -1;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (!json_is_string(v)) {
            rv = -1;
            break;
        }
        p->labels = grow(p->labels, p->num_labels, sizeof(pol_label_t));
        p->labels[p->num_labels++] = (pol_label_t){ tp_strdup(k), tp_strdup(json_string_value(v)) };
    }
    json_decref(o);
    if (p->num_labels > 1)
        qsort(p->labels, p->num_labels, sizeof(pol_label_t), compare_labels);
    return rv;
}

static int
principal_row(load_ctx_t *ctx, sqlite3_stmt *stmt, char **err)
{
    pol_snapshot_t *snap = ctx->snap;
    snap->principals = grow(snap->principals, snap->num_principals, sizeof(pol_principal_t));
    pol_principal_t *p = &snap->principals[snap->num_principals++];
    memset(p, 0, sizeof(*p));
    p->id = column_text(stmt, 0);
    const char *team = (const char *)sqlite3_column_text(stmt, 2);
    p->team = team != NULL ? tp_strdup(team) : NULL;
    p->enabled = sqlite3_column_int(stmt, 5) != 0;
    p->created_at_ms = sqlite3_column_int64(stmt, 6);
    p->updated_at_ms = sqlite3_column_int64(stmt, 7);
    if (pol_kind_parse((const char *)sqlite3_column_text(stmt, 1), &p->kind) != 0 ||
        parse_roles((const char *)sqlite3_column_text(stmt, 3), p) != 0 ||
        parse_labels((const char *)sqlite3_column_text(stmt, 4), p) != 0) {
        *err = tp_sprintf("principal %s: stored kind, roles or labels are malformed", p->id);
        return -1;
    }
    return 0;
}

static int
key_row(load_ctx_t *ctx, sqlite3_stmt *stmt, char **err)
{
    pol_snapshot_t *snap = ctx->snap;
    const char *id = (const char *)sqlite3_column_text(stmt, 0);
    const pol_principal_t *owner = pol_snapshot_principal(snap, (const char *)sqlite3_column_text(stmt, 1));
    if (owner == NULL || id == NULL || strlen(id) != POL_APIKEY_ID_LEN ||
        sqlite3_column_bytes(stmt, 2) != POL_APIKEY_HASH_LEN) {
        /* A foreign key forbids an orphan; a malformed row can only make the key unusable. */
        tp_warn("API key %s is malformed or has no principal; it will not authenticate", id != NULL ? id : "?");
        return 0;
    }
    snap->keys = grow(snap->keys, snap->num_keys, sizeof(pol_key_t));
    pol_key_t *k = &snap->keys[snap->num_keys++];
    memcpy(k->id, id, POL_APIKEY_ID_LEN + 1);
    memcpy(k->hash, sqlite3_column_blob(stmt, 2), POL_APIKEY_HASH_LEN);
    k->principal = owner;
    k->expires_at_ms = sqlite3_column_int64(stmt, 3);
    k->revoked_at_ms = sqlite3_column_int64(stmt, 4);
    (void)err;
    return 0;
}

static int
rule_row(load_ctx_t *ctx, sqlite3_stmt *stmt, char **err)
{
    const char *id = (const char *)sqlite3_column_text(stmt, 0);
    json_t *def = json_loads((const char *)sqlite3_column_text(stmt, 1), 0, NULL);
    pol_rule_t *rule = NULL;
    char *why = NULL;
    int rv = def != NULL ? pol_rule_parse(def, &rule, &why) : -1;
    json_decref(def);
    if (rv != 0) {
        *err = tp_sprintf("stored rule %s does not parse (%s); refusing a snapshot without it", id,
                          why != NULL ? why : "not JSON");
        free(why);
        return -1;
    }
    ctx->rules = grow(ctx->rules, ctx->num_rules, sizeof(pol_rule_t *));
    ctx->rules[ctx->num_rules++] = rule;
    return 0;
}

static int
setting_row(load_ctx_t *ctx, sqlite3_stmt *stmt, char **err)
{
    pol_snapshot_t *snap = ctx->snap;
    const char *key = (const char *)sqlite3_column_text(stmt, 0);
    const char *value = (const char *)sqlite3_column_text(stmt, 1);
    if (strcmp(key, "default_effect") == 0)
        snap->default_allow = value != NULL && strcmp(value, "allow") == 0;
    (void)err;
    return 0;
}

static int
limit_row(load_ctx_t *ctx, sqlite3_stmt *stmt, char **err)
{
    pol_snapshot_t *snap = ctx->snap;
    pol_budget_scope_t kind;
    if (pol_budget_scope_parse((const char *)sqlite3_column_text(stmt, 0), &kind) != 0) {
        *err = tp_strdup("read rate_limits: unknown scope kind");
        return -1;
    }
    snap->limits = grow(snap->limits, snap->num_limits, sizeof(pol_rate_limit_t));
    snap->limits[snap->num_limits++] = (pol_rate_limit_t){
        .scope_kind = kind,
        .scope = column_text(stmt, 1),
        .resource = column_text(stmt, 2),
        .requests_per_minute = sqlite3_column_int64(stmt, 3),
        .tokens_per_minute = sqlite3_column_int64(stmt, 4),
    };
    return 0;
}

static int
budget_row(load_ctx_t *ctx, sqlite3_stmt *stmt, char **err)
{
    pol_snapshot_t *snap = ctx->snap;
    pol_budget_scope_t kind;
    pol_budget_period_t period;
    if (pol_budget_scope_parse((const char *)sqlite3_column_text(stmt, 0), &kind) != 0 ||
        pol_budget_period_parse((const char *)sqlite3_column_text(stmt, 2), &period) != 0) {
        *err = tp_strdup("read budgets: unknown scope kind or period");
        return -1;
    }
    snap->budgets = grow(snap->budgets, snap->num_budgets, sizeof(pol_budget_limit_t));
    snap->budgets[snap->num_budgets++] = (pol_budget_limit_t){
        .scope_kind = kind,
        .scope = column_text(stmt, 1),
        .period = period,
        .max_tokens = sqlite3_column_int64(stmt, 3),
        .max_cost_micros = sqlite3_column_int64(stmt, 4),
    };
    return 0;
}

pol_snapshot_t *
pol_snapshot_load(sqlite3 *db, char **err)
{
    pol_snapshot_t *snap = tp_calloc(1, sizeof(*snap));
    snap->loaded_at_ms = tp_unix_ms();
    load_ctx_t ctx = { .snap = snap };
    /* One read transaction: every part of the snapshot comes from the same state. */
    int rv = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    if (rv != 0)
        *err = tp_sprintf("begin: %s", sqlite3_errmsg(db));
    if (rv == 0)
        rv = load_kills(db, snap, err);
    if (rv == 0)
        rv = each_row(db, &ctx,
                      "SELECT id, kind, team, roles, labels, enabled, created_at_ms, updated_at_ms FROM principals "
                      "ORDER BY id",
                      "principals", principal_row, err);
    if (rv == 0)
        rv = each_row(db, &ctx,
                      "SELECT id, principal_id, secret_hash, expires_at_ms, revoked_at_ms FROM api_keys ORDER BY id",
                      "api_keys", key_row, err);
    if (rv == 0)
        rv = each_row(db, &ctx, "SELECT id, definition FROM policies ORDER BY id", "policies", rule_row, err);
    if (rv == 0)
        rv = each_row(db, &ctx, "SELECT key, value FROM settings", "settings", setting_row, err);
    if (rv == 0)
        rv = each_row(db, &ctx,
                      "SELECT scope_kind, scope, resource, requests_per_minute, tokens_per_minute FROM rate_limits "
                      "ORDER BY id",
                      "rate_limits", limit_row, err);
    if (rv == 0)
        rv =
            each_row(db, &ctx, "SELECT scope_kind, scope, period, max_tokens, max_cost_micros FROM budgets ORDER BY id",
                     "budgets", budget_row, err);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rv == 0 && (snap->rules = pol_ruleset_new(ctx.rules, ctx.num_rules, err)) == NULL)
        rv = -1;
    else if (rv != 0)
        for (size_t i = 0; i < ctx.num_rules; i++)
            pol_rule_free(ctx.rules[i]);
    free(ctx.rules);
    if (rv != 0) {
        pol_snapshot_free(snap);
        return NULL;
    }
    return snap;
}

static int
compare_principal_id(const void *key, const void *elem)
{
    return strcmp(key, ((const pol_principal_t *)elem)->id);
}

const pol_principal_t *
pol_snapshot_principal(const pol_snapshot_t *snap, const char *id)
{
    if (snap->num_principals == 0)
        return NULL; /* bsearch may not be given a NULL array */
    return bsearch(id, snap->principals, snap->num_principals, sizeof(pol_principal_t), compare_principal_id);
}

static int
compare_key_id(const void *key, const void *elem)
{
    return strcmp(key, ((const pol_key_t *)elem)->id);
}

const pol_key_t *
pol_snapshot_key(const pol_snapshot_t *snap, const char *id)
{
    if (snap->num_keys == 0)
        return NULL;
    return bsearch(id, snap->keys, snap->num_keys, sizeof(pol_key_t), compare_key_id);
}

void
pol_snapshot_free(pol_snapshot_t *snap)
{
    if (snap == NULL)
        return;
    for (size_t i = 0; i < snap->num_kills; i++) {
        pol_kill_t *k = &snap->kills[i];
        free(k->target_kind);
        free(k->target);
        free(k->reason);
        free(k->created_by);
    }
    free(snap->kills);
    for (size_t i = 0; i < snap->num_principals; i++)
        pol_principal_clear(&snap->principals[i]);
    free(snap->principals);
    free(snap->keys);
    pol_ruleset_free(snap->rules);
    for (size_t i = 0; i < snap->num_limits; i++) {
        free(snap->limits[i].scope);
        free(snap->limits[i].resource);
    }
    free(snap->limits);
    for (size_t i = 0; i < snap->num_budgets; i++)
        free((char *)snap->budgets[i].scope);
    free(snap->budgets);
    free(snap);
}

json_t *
pol_snapshot_describe(const pol_snapshot_t *snap)
{
    json_t *kills = json_array();
    for (size_t i = 0; i < snap->num_kills; i++) {
        const pol_kill_t *k = &snap->kills[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "target_kind", k->target_kind, "target", k->target, "reason",
                              k->reason, "created_by", k->created_by, "created_at_ms", (json_int_t)k->created_at_ms);
        if (k->expires_at_ms != 0)
            json_object_set_new(o, "expires_at_ms", json_integer(k->expires_at_ms));
        json_array_append_new(kills, o);
    }
    return json_pack("{s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:o}", "principals", (json_int_t)snap->num_principals, "keys",
                     (json_int_t)snap->num_keys, "rules",
                     (json_int_t)(snap->rules != NULL ? pol_ruleset_count(snap->rules) : 0), "default_effect",
                     snap->default_allow ? "allow" : "deny", "limits", (json_int_t)snap->num_limits, "budgets",
                     (json_int_t)snap->num_budgets, "kills_active", (json_int_t)snap->num_kills, "kills", kills);
}

static void *
state_load(sqlite3 *db, char **err)
{
    return pol_snapshot_load(db, err);
}

static void
state_release(void *state)
{
    pol_snapshot_free(state);
}

static json_t *
state_describe(const void *state)
{
    return pol_snapshot_describe(state);
}

static int64_t
state_expires_at_ms(const void *state)
{
    const pol_snapshot_t *snap = state;
    int64_t at = 0;
    for (size_t i = 0; i < snap->num_kills; i++) {
        int64_t e = snap->kills[i].expires_at_ms;
        if (e > 0 && (at == 0 || e < at))
            at = e;
    }
    return at;
}

const tp_state_ops_t pol_snapshot_state_ops = {
    .load = state_load,
    .release = state_release,
    .describe = state_describe,
    .expires_at_ms = state_expires_at_ms,
};
