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
    "CREATE TRIGGER kills_bump_insert AFTER INSERT ON kills BEGIN"
    "  UPDATE meta SET value = value + 1 WHERE key = 'state_version';"
    "END;"
    "CREATE TRIGGER kills_bump_update AFTER UPDATE ON kills BEGIN"
    "  UPDATE meta SET value = value + 1 WHERE key = 'state_version';"
    "END;"
    "CREATE TRIGGER kills_bump_delete AFTER DELETE ON kills BEGIN"
    "  UPDATE meta SET value = value + 1 WHERE key = 'state_version';"
    "END;",
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
