/*
 * store_schema.c — the store's schema as forward-only migrations.
 *
 * migrations[N - 1] brings PRAGMA user_version from N - 1 to N. A migration is never edited
 * once released: a change to the schema is a new entry at the end of the array.
 *
 * Several processes may open a new database at the same moment (three daemons started
 * together). Each runs the migrations inside BEGIN IMMEDIATE and re-reads user_version after
 * taking the write lock, so exactly one of them migrates and the others find the work done.
 * BEGIN IMMEDIATE waits for the write lock through the connection's busy handler
 * (sqlite3_busy_timeout), which SQLite invokes while acquiring the lock, in WAL mode too; it
 * is retried on SQLITE_BUSY as well, for the cases where SQLite skips the handler (a file
 * still being switched to WAL by another opener).
 */
#include "store.h"
#include "store-internal.h"

#include <errno.h>
#include <stdlib.h>

#include "mem.h"

/* The three triggers that make a change to `table` bump state_version. */
#define BUMP_TRIGGER(table, event, what)                                                                               \
    "CREATE TRIGGER " table "_bump_" what " AFTER " event " ON " table " BEGIN"                                        \
    "  UPDATE meta SET value = value + 1 WHERE key = 'state_version';"                                                 \
    "END;"
#define BUMP_TRIGGERS(table)                                                                                           \
    BUMP_TRIGGER(table, "INSERT", "insert")                                                                            \
    BUMP_TRIGGER(table, "UPDATE", "update") BUMP_TRIGGER(table, "DELETE", "delete")

static const char *const migrations[] = {
    /* 1: meta counters, the audit log and the kill switch. */
    "CREATE TABLE meta ("
    "  key TEXT PRIMARY KEY,"
    "  value INTEGER NOT NULL"
    ");"
    /* state_version counts changes to the tables that daemons snapshot; the watcher compares
     * it to decide whether to rebuild a snapshot. */
    "INSERT INTO meta (key, value) VALUES ('state_version', 0);"

    "CREATE TABLE audit_log ("
    "  id INTEGER PRIMARY KEY,"
    "  ts_ms INTEGER NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  target TEXT,"
    "  detail TEXT"
    ");"
    "CREATE INDEX audit_log_ts_ms ON audit_log (ts_ms);"
    "CREATE INDEX audit_log_actor ON audit_log (actor);"
    "CREATE INDEX audit_log_action ON audit_log (action);"
    "CREATE INDEX audit_log_target ON audit_log (target);"

    "CREATE TABLE kills ("
    "  id INTEGER PRIMARY KEY,"
    "  target_kind TEXT NOT NULL CHECK (target_kind IN ('agent', 'principal', 'team', 'all')),"
    "  target TEXT NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  created_by TEXT NOT NULL,"
    "  created_at_ms INTEGER NOT NULL,"
    "  expires_at_ms INTEGER,"
    "  released_at_ms INTEGER,"
    "  released_by TEXT"
    ");"
    /* Daemons load the active kills on every snapshot: a partial index keeps that cheap. */
    "CREATE INDEX kills_active ON kills (target_kind, target) WHERE released_at_ms IS NULL;"
    "CREATE INDEX kills_target ON kills (target_kind, target);"

    /* Every snapshotted table bumps state_version on any change. Later migrations that add
     * such tables (keys, principals, policies, …) add the same three triggers for them;
     * audit_log and usage tables are not snapshotted and have none. */
    BUMP_TRIGGERS("kills"),

    /* 2: identity, policy and quotas (libtriplane-policy), and usage records. */
    "CREATE TABLE teams ("
    "  id TEXT PRIMARY KEY,"
    "  description TEXT NOT NULL DEFAULT '',"
    "  created_at_ms INTEGER NOT NULL,"
    "  updated_at_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE principals ("
    "  id TEXT PRIMARY KEY,"
    "  kind TEXT NOT NULL CHECK (kind IN ('user', 'service', 'agent')),"
    "  team TEXT,"                         /* free text: JWT teams need no row in teams */
    "  roles TEXT NOT NULL DEFAULT '[]',"  /* JSON array of strings */
    "  labels TEXT NOT NULL DEFAULT '{}'," /* JSON object of strings */
    "  enabled INTEGER NOT NULL DEFAULT 1,"
    "  description TEXT NOT NULL DEFAULT '',"
    "  created_at_ms INTEGER NOT NULL,"
    "  updated_at_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX principals_team ON principals (team);"
    "CREATE TABLE api_keys ("
    "  id TEXT PRIMARY KEY," /* the <key-id> of tp_<key-id>_<secret> */
    "  principal_id TEXT NOT NULL REFERENCES principals (id) ON DELETE CASCADE,"
    "  secret_hash BLOB NOT NULL," /* SHA-256 of the secret; the secret is never stored */
    "  name TEXT NOT NULL DEFAULT '',"
    "  created_at_ms INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL,"
    "  expires_at_ms INTEGER," /* NULL: never; rotation sets it on the old key */
    "  revoked_at_ms INTEGER,"
    "  revoked_by TEXT,"
    "  replaced_by TEXT" /* the key that rotated this one out */
    ");"
    "CREATE INDEX api_keys_principal ON api_keys (principal_id);"
    "CREATE TABLE policies ("
    "  id TEXT PRIMARY KEY,"
    "  effect TEXT NOT NULL CHECK (effect IN ('allow', 'deny')),"
    "  plane TEXT NOT NULL CHECK (plane IN ('model', 'mcp', 'agent', '*')),"
    "  definition TEXT NOT NULL," /* the whole rule as JSON (policy/rules.c parses it) */
    "  created_at_ms INTEGER NOT NULL,"
    "  updated_at_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE rate_limits ("
    "  id INTEGER PRIMARY KEY,"
    "  scope_kind TEXT NOT NULL CHECK (scope_kind IN ('principal', 'team')),"
    "  scope TEXT NOT NULL,"
    "  resource TEXT NOT NULL DEFAULT '*'," /* glob; '*' limits the scope as a whole */
    "  requests_per_minute INTEGER,"
    "  tokens_per_minute INTEGER,"
    "  UNIQUE (scope_kind, scope, resource)"
    ");"
    "CREATE TABLE budgets ("
    "  id INTEGER PRIMARY KEY,"
    "  scope_kind TEXT NOT NULL CHECK (scope_kind IN ('principal', 'team')),"
    "  scope TEXT NOT NULL,"
    "  period TEXT NOT NULL CHECK (period IN ('day', 'month'))," /* UTC calendar day or month */
    "  max_tokens INTEGER,"
    "  max_cost_micros INTEGER," /* money in millionths of the currency unit */
    "  UNIQUE (scope_kind, scope, period)"
    ");"
    "CREATE TABLE settings ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL"
    ");"
    "INSERT INTO settings (key, value) VALUES ('default_effect', 'deny');"
    "CREATE TABLE usage ("
    "  id INTEGER PRIMARY KEY,"
    "  ts_ms INTEGER NOT NULL,"
    "  request_id TEXT,"
    "  plane TEXT NOT NULL,"
    "  principal_id TEXT NOT NULL,"
    "  team TEXT,"
    "  resource TEXT,"
    "  input_tokens INTEGER NOT NULL DEFAULT 0,"
    "  output_tokens INTEGER NOT NULL DEFAULT 0,"
    "  cost_micros INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX usage_ts ON usage (ts_ms);"
    "CREATE INDEX usage_principal_ts ON usage (principal_id, ts_ms);"
    "CREATE INDEX usage_team_ts ON usage (team, ts_ms);"
    "CREATE INDEX usage_resource_ts ON usage (resource, ts_ms);" BUMP_TRIGGERS("teams") BUMP_TRIGGERS("principals")
        BUMP_TRIGGERS("api_keys") BUMP_TRIGGERS("policies") BUMP_TRIGGERS("rate_limits") BUMP_TRIGGERS("budgets")
            BUMP_TRIGGERS("settings"),

    /* 3: what a request was like, beside what it used: for per-request accounting and audits. */
    "ALTER TABLE usage ADD COLUMN status INTEGER;"  /* the HTTP status the client got */
    "ALTER TABLE usage ADD COLUMN latency_ms REAL;" /* the whole request, as the client saw it */
    "ALTER TABLE usage ADD COLUMN ttft_ms REAL;"    /* to the first streamed event or the answer */
    "ALTER TABLE usage ADD COLUMN upstream TEXT;",  /* the deployment that answered (its URL) */

    /* 4: MCP tool pins (mcp-gw/pins.c). The definition of each upstream tool as first seen or
     * as last approved, and a drifted one awaiting an operator's approval. Snapshotted: an
     * approval must reach every mcp-gw at once. */
    "CREATE TABLE mcp_tool_pins ("
    "  server TEXT NOT NULL,"     /* the configured MCP server's name */
    "  tool TEXT NOT NULL,"       /* the upstream's own tool name, before any prefix */
    "  hash TEXT NOT NULL,"       /* SHA-256 (hex) of the approved definition's canonical JSON */
    "  definition TEXT NOT NULL," /* that definition, as JSON */
    "  status TEXT NOT NULL DEFAULT 'pinned' CHECK (status IN ('pinned', 'quarantined')),"
    "  seen_hash TEXT,"       /* quarantined: the hash of the drifted definition; else NULL */
    "  seen_definition TEXT," /* quarantined: the drifted definition, as JSON; else NULL */
    "  first_seen_ms INTEGER NOT NULL,"
    "  changed_ms INTEGER NOT NULL," /* the last change of hash or status */
    "  approved_by TEXT,"            /* who approved the current definition; NULL: pinned on first sight */
    "  approved_ms INTEGER,"
    "  PRIMARY KEY (server, tool)"
    ");"
    /* gwctl mcp tools --drift, and whatever counts quarantined tools. */
    "CREATE INDEX mcp_tool_pins_quarantined ON mcp_tool_pins (server, tool) WHERE status = "
    "'quarantined';" BUMP_TRIGGERS("mcp_tool_pins"),

    /* 5: agent-gw's registry of agents added with gwctl (agent-gw/registry.c), and its task ledger
     * (agent-gw/ledger.c). Agents are snapshotted: an operator's add or remove must reach every
     * agent-gw at once. Tasks and their transitions are a record written through the batching
     * writer; nothing snapshots them, so they have no triggers. */
    "CREATE TABLE agents ("
    "  name TEXT PRIMARY KEY," /* [A-Za-z0-9_-]+: the policy resource and the path /agents/<name> */
    "  url TEXT NOT NULL,"     /* the agent's JSON-RPC endpoint */
    "  card_url TEXT,"         /* its agent card; NULL: <origin of url>/.well-known/agent-card.json */
    "  version TEXT NOT NULL DEFAULT '0.3' CHECK (version IN ('0.3', '1.0')),"
    "  labels TEXT NOT NULL DEFAULT '{}'," /* JSON object of strings */
    "  created_at_ms INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL"
    ");"
    /* States are stored in the A2A v0.3 spellings, whichever version the agent speaks. */
    "CREATE TABLE tasks ("
    "  agent TEXT NOT NULL," /* the target agent's name */
    "  id TEXT NOT NULL,"    /* the task id the agent gave */
    "  context_id TEXT,"
    "  caller TEXT NOT NULL,"             /* the principal id that sent the message */
    "  chain TEXT NOT NULL DEFAULT '[]'," /* JSON array: the delegation chain the call carried */
    "  state TEXT NOT NULL CHECK (state IN ('submitted', 'working', 'input-required', 'auth-required', "
    "'completed', 'canceled', 'failed', 'rejected', 'unknown')),"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL," /* the last change of state */
    "  ended_ms INTEGER,"            /* when it reached a final state; NULL before */
    "  PRIMARY KEY (agent, id)"
    ");"
    /* gwctl tasks list: newest first, alone or filtered by agent, caller or state; show by id. */
    "CREATE INDEX tasks_created ON tasks (created_ms);"
    "CREATE INDEX tasks_agent_created ON tasks (agent, created_ms);"
    "CREATE INDEX tasks_caller_created ON tasks (caller, created_ms);"
    "CREATE INDEX tasks_state_created ON tasks (state, created_ms);"
    "CREATE INDEX tasks_id ON tasks (id);"
    "CREATE TABLE task_transitions ("
    "  id INTEGER PRIMARY KEY," /* the order of arrival, for transitions in the same millisecond */
    "  agent TEXT NOT NULL,"
    "  task_id TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  reason TEXT," /* why, when the gateway knows (a kill, a refusal); NULL for the agent's own */
    "  at_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX task_transitions_task ON task_transitions (agent, task_id, at_ms);" BUMP_TRIGGERS("agents"),

    /* 6: model-gw's stored Responses (/v1/responses with store, model-gw/response_store.c),
     * written through the batching writer and read off the request path. A response names the
     * one it continues; that one may have been deleted or purged since (no foreign key). */
    "CREATE TABLE responses ("
    "  id TEXT PRIMARY KEY,"     /* resp_… */
    "  principal TEXT NOT NULL," /* the owner: only they may read, continue or delete it */
    "  model TEXT NOT NULL,"     /* the public model asked for */
    "  previous_id TEXT,"        /* previous_response_id, or NULL */
    "  status TEXT NOT NULL,"    /* completed | incomplete | failed */
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER,"        /* purged after this (model_gw.response_retention_days); NULL: kept */
    "  input_items TEXT NOT NULL," /* JSON array: this response's own input, as items */
    "  response TEXT NOT NULL"     /* JSON object: the Response as the client got it */
    ");"
    "CREATE INDEX responses_principal_created ON responses (principal, created_ms);"
    "CREATE INDEX responses_created ON responses (created_ms);"
    "CREATE INDEX responses_expires ON responses (expires_ms) WHERE expires_ms IS NOT NULL;",
};

#define MIGRATIONS_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

int
tp_store_schema_latest(void)
{
    return MIGRATIONS_COUNT;
}

static int
refuse_newer(const char *path, int version, char **err)
{
    *err = tp_sprintf("migrate %s: schema version %d is newer than this build supports (%d); "
                      "upgrade triplane or use a database made by this version",
                      path, version, MIGRATIONS_COUNT);
    return -EPROTO;
}

/* Applies migrations from..latest-1 in the open transaction. */
static int
apply_migrations(sqlite3 *db, const char *path, int from, char **err)
{
    for (int v = from; v < MIGRATIONS_COUNT; v++) {
        int rc = sqlite3_exec(db, migrations[v], NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            *err = tp_sprintf("migrate %s to version %d: %s", path, v + 1, sqlite3_errmsg(db));
            return tp__store_errno(db, rc);
        }
    }
    char *sql = tp_sprintf("PRAGMA user_version = %d", MIGRATIONS_COUNT);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    free(sql);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "PRAGMA user_version", path);
        return tp__store_errno(db, rc);
    }
    return 0;
}

int
tp__store_migrate(sqlite3 *db, const char *path, int busy_timeout_ms, char **err)
{
    int version;
    int rc = tp__store_user_version(db, &version);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "PRAGMA user_version", path);
        return tp__store_errno(db, rc);
    }
    if (version > MIGRATIONS_COUNT)
        return refuse_newer(path, version, err);
    if (version == MIGRATIONS_COUNT)
        return 0; /* the common case: no write lock taken */

    rc = tp__store_exec_retry(db, "BEGIN IMMEDIATE", busy_timeout_ms, NULL, NULL);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "BEGIN IMMEDIATE", path);
        return tp__store_errno(db, rc);
    }
    /* Another process may have migrated between the first read and the write lock. */
    int ret = 0;
    rc = tp__store_user_version(db, &version);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "PRAGMA user_version", path);
        ret = tp__store_errno(db, rc);
        goto rollback;
    }
    if (version > MIGRATIONS_COUNT) {
        ret = refuse_newer(path, version, err);
        goto rollback;
    }
    if (version < MIGRATIONS_COUNT) {
        ret = apply_migrations(db, path, version, err);
        if (ret != 0)
            goto rollback;
    }
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "COMMIT migration", path);
        ret = tp__store_errno(db, rc);
        goto rollback;
    }
    return 0;

rollback:
    /* A failed statement may already have rolled the transaction back. */
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return ret;
}
