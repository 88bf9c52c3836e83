/*
 * store.c — opening the store, small queries, and the data_version watcher.
 */
#include "store.h"
#include "store-internal.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "mem.h"

/* tp__store_exec_retry backs off from 1 ms up to this between attempts. */
#define RETRY_PAUSE_MAX_MS 50

/* Room for journal_mode's answer ("delete", "wal", "memory", …). */
#define JOURNAL_MODE_LEN 16

struct tp_store {
    sqlite3 *db;
    char *path;
    atomic_bool healthy; /* read by any thread; written by the opening thread */
    sqlite3_stmt *state_version_stmt;
    sqlite3_stmt *data_version_stmt;
    /* The watcher. The timer is embedded here, so the struct lives until its close callback
     * ran (see tp_store_close). */
    uv_timer_t timer;
    bool watching;      /* the timer is initialised and not yet being closed */
    bool timer_closing; /* uv_close was called and its callback has not run yet */
    bool free_on_close; /* tp_store_close ran while the timer was closing: free in the callback */
    tp_store_change_cb cb;
    void *cb_data;
    int64_t last_data_version;  /* -1: unknown */
    int64_t last_state_version; /* -1: unknown */
    int64_t last_total_changes; /* this connection's own writes, which data_version ignores */
};

/* ---- shared helpers ---- */

int
tp__store_errno(sqlite3 *db, int rc)
{
    int sys = db != NULL ? sqlite3_system_errno(db) : 0;
    switch (rc & 0xff) {
    case SQLITE_OK:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_CANTOPEN:
        return sys > 0 ? -sys : -ENOENT;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_ERROR:
        return -EINVAL;
    case SQLITE_IOERR:
        return sys > 0 ? -sys : -EIO;
    default:
        return -EIO;
    }
}

char *
tp__store_errorf(sqlite3 *db, int rc, const char *call, const char *path)
{
    const char *reason = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    return tp_sprintf("%s %s: %s", call, path, reason);
}

int
tp__store_user_version(sqlite3 *db, int *out)
{
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int(stmt, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(stmt);
    return rc;
}

int
tp__store_exec_retry(sqlite3 *db, const char *sql, int timeout_ms, int (*cb)(void *, int, char **, char **), void *data)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    unsigned pause_ms = 1;
    for (;;) {
        int rc = sqlite3_exec(db, sql, cb, data, NULL);
        if ((rc & 0xff) != SQLITE_BUSY)
            return rc;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t elapsed_ms = (int64_t)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed_ms >= timeout_ms)
            return rc;
        struct timespec pause = { .tv_sec = 0, .tv_nsec = (long)pause_ms * 1000000 };
        nanosleep(&pause, NULL);
        pause_ms = pause_ms * 2 < RETRY_PAUSE_MAX_MS ? pause_ms * 2 : RETRY_PAUSE_MAX_MS;
    }
}

static int
copy_first_column(void *data, int ncols, char **values, char **names)
{
    char *out = data;
    snprintf(out, JOURNAL_MODE_LEN, "%s", ncols > 0 && values[0] != NULL ? values[0] : "");
    return 0;
}

/* journal_mode answers the mode in effect, which is not the one asked for when WAL is
 * impossible (e.g. in memory), so the answer is checked. Switching a new file to WAL needs an
 * exclusive lock, and two connections that both read the header first would deadlock on it:
 * SQLite answers SQLITE_BUSY to one of them at once instead of calling the busy handler, so
 * this retries until busy_timeout_ms. */
static int
set_journal_wal(sqlite3 *db, const char *path, int busy_timeout_ms, char **err)
{
    char mode[JOURNAL_MODE_LEN] = "";
    int rc = tp__store_exec_retry(db, "PRAGMA journal_mode = WAL", busy_timeout_ms, copy_first_column, mode);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "PRAGMA journal_mode=WAL", path);
        return tp__store_errno(db, rc);
    }
    if (strcasecmp(mode, "wal") != 0) {
        *err = tp_sprintf("PRAGMA journal_mode=WAL %s: journal mode is %s, not wal", path, mode);
        return -ENOTSUP;
    }
    return 0;
}

int
tp__store_connect(const char *path, bool create, int busy_timeout_ms, sqlite3 **out, char **err)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "open", path);
        int ret = tp__store_errno(db, rc);
        sqlite3_close(db); /* open_v2 may return a handle even when it fails */
        return ret;
    }
    sqlite3_extended_result_codes(db, 1);
    rc = sqlite3_busy_timeout(db, busy_timeout_ms > 0 ? busy_timeout_ms : 0);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "sqlite3_busy_timeout", path);
        goto err_close;
    }
    int ret = set_journal_wal(db, path, busy_timeout_ms, err);
    if (ret != 0) {
        sqlite3_close(db);
        return ret;
    }
    rc = sqlite3_exec(db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "PRAGMA synchronous=NORMAL", path);
        goto err_close;
    }
    rc = sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "PRAGMA foreign_keys=ON", path);
        goto err_close;
    }
    *out = db;
    return 0;

err_close:
    ret = tp__store_errno(db, rc);
    sqlite3_close(db);
    return ret;
}

/* ---- the connection ---- */

static int
prepare(tp_store_t *store, const char *sql, sqlite3_stmt **out, char **err)
{
    int rc = sqlite3_prepare_v3(store->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(store->db, rc, "prepare", store->path);
        return tp__store_errno(store->db, rc);
    }
    return 0;
}

/* Creates the directories above `path` (mode 0750) when missing, as `mkdir -p` would. */
static int
make_parent_dirs(const char *path, char **err)
{
    char *dir = tp_strdup(path);
    int ret = 0;
    for (char *p = dir + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
            ret = -errno;
            *err = tp_sprintf("create directory %s for the store: %s", dir, strerror(errno));
            break;
        }
        *p = '/';
    }
    free(dir);
    return ret;
}

int
tp_store_open(const char *path, const tp_store_options_t *opts, tp_store_t **out, char **err)
{
    assert(path != NULL && opts != NULL && out != NULL && err != NULL);
    *err = NULL;
    sqlite3 *db;
    int ret = opts->create ? make_parent_dirs(path, err) : 0;
    if (ret != 0)
        return ret;
    ret = tp__store_connect(path, opts->create, opts->busy_timeout_ms, &db, err);
    if (ret != 0)
        return ret;
    ret = tp__store_migrate(db, path, opts->busy_timeout_ms, err);
    if (ret != 0)
        goto err_close_db;

    tp_store_t *store = tp_calloc(1, sizeof(*store));
    store->db = db;
    store->path = tp_strdup(path);
    store->last_data_version = -1;
    store->last_state_version = -1;
    ret = prepare(store, "SELECT value FROM meta WHERE key = 'state_version'", &store->state_version_stmt, err);
    if (ret != 0)
        goto err_free_store;
    ret = prepare(store, "PRAGMA data_version", &store->data_version_stmt, err);
    if (ret != 0)
        goto err_finalize;
    atomic_store(&store->healthy, true);
    *out = store;
    return 0;

err_finalize:
    sqlite3_finalize(store->state_version_stmt);
err_free_store:
    free(store->path);
    free(store);
err_close_db:
    sqlite3_close(db);
    return ret;
}

static void
store_free(tp_store_t *store)
{
    free(store->path);
    free(store);
}

static void
on_timer_close(uv_handle_t *handle)
{
    tp_store_t *store = handle->data;
    store->timer_closing = false;
    if (store->free_on_close)
        store_free(store);
}

void
tp_store_close(tp_store_t *store)
{
    if (store == NULL)
        return;
    tp_store_watch_stop(store);
    sqlite3_finalize(store->state_version_stmt);
    sqlite3_finalize(store->data_version_stmt);
    int rc = sqlite3_close(store->db);
    if (rc != SQLITE_OK)
        tp_warn("close %s: %s", store->path, sqlite3_errstr(rc));
    store->db = NULL;
    if (store->timer_closing)
        store->free_on_close = true; /* on_timer_close frees it */
    else
        store_free(store);
}

sqlite3 *
tp_store_db(tp_store_t *store)
{
    return store->db;
}

const char *
tp_store_path(const tp_store_t *store)
{
    return store->path;
}

int
tp_store_schema_version(tp_store_t *store)
{
    int version;
    int rc = tp__store_user_version(store->db, &version);
    return rc == SQLITE_OK ? version : tp__store_errno(store->db, rc);
}

/* Steps a prepared one-row, one-integer statement. Returns SQLITE_OK and *out, or an error. */
static int
read_int64(sqlite3_stmt *stmt, int64_t *out)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(stmt, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_NOTFOUND; /* the row is missing: a damaged schema */
    }
    sqlite3_reset(stmt);
    return rc;
}

int64_t
tp_store_state_version(tp_store_t *store)
{
    int64_t v = 0;
    int rc = read_int64(store->state_version_stmt, &v);
    return rc == SQLITE_OK ? v : tp__store_errno(store->db, rc);
}

/* Records the outcome of a check and logs each change of state once. */
static void
set_healthy(tp_store_t *store, bool healthy, int rc)
{
    bool was = atomic_exchange(&store->healthy, healthy);
    if (was && !healthy)
        tp_warn("store %s is unreachable: %s", store->path, sqlite3_errstr(rc));
    else if (!was && healthy)
        tp_info("store %s is reachable again", store->path);
}

int
tp_store_ping(tp_store_t *store)
{
    int64_t v = 0;
    int rc = read_int64(store->state_version_stmt, &v);
    set_healthy(store, rc == SQLITE_OK, rc);
    return rc == SQLITE_OK ? 0 : tp__store_errno(store->db, rc);
}

int
tp_store_exec(tp_store_t *store, const char *sql, char **err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        return 0;
    if (err != NULL)
        *err = tp_sprintf("exec %s: %s", store->path, msg != NULL ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return tp__store_errno(store->db, rc);
}

/* ---- the watcher ---- */

/* One poll: data_version changes when another connection commits; total_changes when this
 * one does. Only then is state_version read, and cb runs only when that moved. */
static void
watch_poll(tp_store_t *store)
{
    int64_t data_version = 0;
    int rc = read_int64(store->data_version_stmt, &data_version);
    if (rc != SQLITE_OK) {
        set_healthy(store, false, rc);
        return;
    }
    int64_t total_changes = sqlite3_total_changes64(store->db);
    if (data_version == store->last_data_version && total_changes == store->last_total_changes &&
        atomic_load(&store->healthy))
        return;

    int64_t state_version = 0;
    rc = read_int64(store->state_version_stmt, &state_version);
    if (rc != SQLITE_OK) {
        set_healthy(store, false, rc);
        return;
    }
    set_healthy(store, true, SQLITE_OK);
    store->last_data_version = data_version;
    store->last_total_changes = total_changes;
    if (state_version == store->last_state_version)
        return;
    store->last_state_version = state_version;
    store->cb(store, state_version, store->cb_data);
}

static void
on_watch_timer(uv_timer_t *timer)
{
    tp_store_t *store = timer->data;
    if (!store->watching)
        return;
    watch_poll(store);
}

int
tp_store_watch_start(tp_store_t *store, uv_loop_t *loop, unsigned interval_ms, tp_store_change_cb cb, void *data)
{
    if (cb == NULL || interval_ms == 0)
        return -EINVAL;
    if (store->watching || store->timer_closing)
        return -EBUSY;
    int rv = uv_timer_init(loop, &store->timer);
    if (rv != 0)
        return rv;
    store->timer.data = store;
    store->cb = cb;
    store->cb_data = data;
    /* The baseline: changes from now on are reported. When it cannot be read, the first
     * successful poll reports the version it finds. */
    store->last_total_changes = sqlite3_total_changes64(store->db);
    int rc = read_int64(store->data_version_stmt, &store->last_data_version);
    if (rc == SQLITE_OK)
        rc = read_int64(store->state_version_stmt, &store->last_state_version);
    if (rc != SQLITE_OK) {
        store->last_data_version = -1;
        store->last_state_version = -1;
    }
    set_healthy(store, rc == SQLITE_OK, rc);
    rv = uv_timer_start(&store->timer, on_watch_timer, interval_ms, interval_ms);
    if (rv != 0) {
        store->timer_closing = true;
        uv_close((uv_handle_t *)&store->timer, on_timer_close);
        return rv;
    }
    store->watching = true;
    return 0;
}

void
tp_store_watch_stop(tp_store_t *store)
{
    if (!store->watching)
        return;
    store->watching = false;
    store->timer_closing = true;
    uv_timer_stop(&store->timer);
    uv_close((uv_handle_t *)&store->timer, on_timer_close);
}

bool
tp_store_healthy(const tp_store_t *store)
{
    return atomic_load(&store->healthy);
}

/* ---- admin changes ---- */

static int
change_fail(sqlite3 *db, const char *what, char **err)
{
    *err = tp_sprintf("%s: %s", what, sqlite3_errmsg(db));
    return -EIO;
}

int
tp_store_change_begin(sqlite3 *db, const char *savepoint, char **err)
{
    bool outer = sqlite3_get_autocommit(db) != 0;
    char sql[96];
    snprintf(sql, sizeof(sql), "SAVEPOINT %s", savepoint);
    if (sqlite3_exec(db, outer ? "BEGIN IMMEDIATE" : sql, NULL, NULL, NULL) != SQLITE_OK)
        return change_fail(db, "begin", err);
    return outer ? TP_STORE_TXN_OUTER : TP_STORE_TXN_NESTED;
}

int
tp_store_change_end(sqlite3 *db, int txn, const char *savepoint, int rv, char **err)
{
    char sql[96];
    if (txn == TP_STORE_TXN_NESTED) {
        if (rv != 0) {
            snprintf(sql, sizeof(sql), "ROLLBACK TO %s", savepoint);
            sqlite3_exec(db, sql, NULL, NULL, NULL);
        }
        snprintf(sql, sizeof(sql), "RELEASE %s", savepoint);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK && rv == 0)
            rv = change_fail(db, "release", err);
        return rv;
    }
    if (rv != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rv;
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rv = change_fail(db, "commit", err);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rv;
}
