/*
 * test_store.c — tests for common/store.c, store_schema.c and store_writer.c.
 *
 * Each test gets a fresh temporary directory holding its database. Tests that need a second
 * party (another daemon, gwctl) open their own raw sqlite3 connection to the same file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mem.h"
#include "metrics.h"
#include "store.h"

#define BUSY_TIMEOUT_MS 5000

struct fixture {
    char dir[64];
    char *path; /* <dir>/triplane.db */
};

static int
setup(void **state)
{
    struct fixture *f = tp_calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_store.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    f->path = tp_sprintf("%s/triplane.db", f->dir);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    const char *suffixes[] = { "", "-wal", "-shm", "-journal" };
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char *p = tp_sprintf("%s%s", f->path, suffixes[i]);
        unlink(p);
        free(p);
    }
    rmdir(f->dir);
    free(f->path);
    free(f);
    return 0;
}

static const tp_store_options_t open_opts = { .busy_timeout_ms = BUSY_TIMEOUT_MS, .create = true };

static tp_store_t *
open_store(const char *path)
{
    tp_store_t *store = NULL;
    char *err = NULL;
    int rv = tp_store_open(path, &open_opts, &store, &err);
    if (rv != 0)
        fail_msg("tp_store_open: %d %s", rv, err);
    return store;
}

/* A second party's connection to the same file. */
static sqlite3 *
raw_open(const char *path, int busy_timeout_ms)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, busy_timeout_ms);
    return db;
}

static void
raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static int64_t
raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return v;
}

/* Runs a one-integer query on a fresh connection: what another process would see. */
static int64_t
query_int(const char *path, const char *sql)
{
    sqlite3 *db = raw_open(path, BUSY_TIMEOUT_MS);
    int64_t v = raw_int(db, sql);
    sqlite3_close(db);
    return v;
}

static const char *const committed[] = { "committed" };
static const char *const dropped[] = { "dropped" };
static const char *const failed[] = { "failed" };
static const char *const result_label[] = { "result", NULL };

/* The writer's counter family in `reg` (registering the same family returns the existing one). */
static tp_metric_t *
records_metric(tp_metrics_t *reg)
{
    return tp_metrics_counter(reg, "triplane_store_records_total", "Records given to the store writer, by outcome.",
                              result_label);
}

/* The number of batches the writer committed: the batch histogram's _count. */
static long
batch_count(tp_metrics_t *reg)
{
    char *text = tp_metrics_render(reg, NULL);
    const char *p = strstr(text, "triplane_store_batch_seconds_count ");
    long n = p != NULL ? strtol(p + strlen("triplane_store_batch_seconds_count "), NULL, 10) : -1;
    free(text);
    return n;
}

static double
elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 + (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

/* ---- opening and migrating ---- */

static void
test_open_creates_wal_database(void **state)
{
    struct fixture *f = *state;
    tp_store_t *store = open_store(f->path);

    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_string_equal(tp_store_path(store), f->path);
    assert_int_equal(tp_store_schema_version(store), tp_store_schema_latest());
    assert_true(tp_store_schema_latest() >= 1);
    assert_int_equal(tp_store_state_version(store), 0);
    assert_int_equal(tp_store_ping(store), 0);
    assert_true(tp_store_healthy(store));

    sqlite3 *db = tp_store_db(store);
    sqlite3_stmt *stmt;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
    sqlite3_finalize(stmt);
    assert_int_equal(raw_int(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(raw_int(db, "PRAGMA synchronous"), 1); /* NORMAL */
    tp_store_close(store);

    /* WAL is a property of the file: a new connection sees it too. */
    sqlite3 *other = raw_open(f->path, 0);
    assert_int_equal(sqlite3_prepare_v2(other, "PRAGMA journal_mode", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
    sqlite3_finalize(stmt);
    sqlite3_close(other);
}

static void
test_open_missing_file_without_create(void **state)
{
    struct fixture *f = *state;
    tp_store_options_t opts = { .busy_timeout_ms = 100, .create = false };
    tp_store_t *store = NULL;
    char *err = NULL;
    int rv = tp_store_open(f->path, &opts, &store, &err);
    assert_true(rv < 0);
    assert_null(store);
    assert_non_null(err);
    char *want = tp_sprintf("open %s: unable to open database file", f->path);
    assert_string_equal(err, want);
    free(want);
    free(err);
    assert_int_equal(access(f->path, F_OK), -1);
}

static void
test_open_not_a_database(void **state)
{
    struct fixture *f = *state;
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs("this is not an SQLite database, but it is long enough to have a header of sorts..........", fp);
    fclose(fp);
    tp_store_t *store = NULL;
    char *err = NULL;
    assert_true(tp_store_open(f->path, &open_opts, &store, &err) < 0);
    assert_non_null(strstr(err, f->path));
    assert_non_null(strstr(err, "not a database"));
    free(err);
}

static void
test_reopen_is_a_no_op(void **state)
{
    struct fixture *f = *state;
    tp_store_t *store = open_store(f->path);
    char *err = NULL;
    assert_int_equal(tp_store_exec(store,
                                   "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) "
                                   "VALUES ('agent', 'a1', 'test', 'op', 1)",
                                   &err),
                     0);
    int64_t objects = raw_int(tp_store_db(store), "SELECT count(*) FROM sqlite_schema");
    tp_store_close(store);

    store = open_store(f->path);
    assert_int_equal(tp_store_schema_version(store), tp_store_schema_latest());
    assert_int_equal(raw_int(tp_store_db(store), "SELECT count(*) FROM sqlite_schema"), objects);
    assert_int_equal(raw_int(tp_store_db(store), "SELECT count(*) FROM kills"), 1);
    assert_int_equal(raw_int(tp_store_db(store), "SELECT count(*) FROM meta"), 1);
    assert_int_equal(tp_store_state_version(store), 1);
    tp_store_close(store);
}

static void
test_newer_database_refused(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db = raw_open(f->path, 0);
    char *sql = tp_sprintf("PRAGMA user_version = %d", tp_store_schema_latest() + 1);
    raw_exec(db, sql);
    free(sql);
    sqlite3_close(db);

    tp_store_t *store = NULL;
    char *err = NULL;
    assert_int_equal(tp_store_open(f->path, &open_opts, &store, &err), -EPROTO);
    assert_null(store);
    assert_non_null(strstr(err, "newer"));
    assert_non_null(strstr(err, f->path));
    free(err);
    /* Nothing was changed. */
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), tp_store_schema_latest() + 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_schema"), 0);
}

/* Three processes open one new file at the same moment, as three daemons starting together. */
static void
test_concurrent_migration(void **state)
{
    struct fixture *f = *state;
    enum { PROCS = 3, ROUNDS = 8 };
    for (int round = 0; round < ROUNDS; round++) {
        char *path = tp_sprintf("%s/race%d.db", f->dir, round);
        int gate[2];
        assert_int_equal(pipe(gate), 0);
        pid_t pids[PROCS];
        for (int i = 0; i < PROCS; i++) {
            pids[i] = fork();
            assert_true(pids[i] >= 0);
            if (pids[i] == 0) {
                close(gate[1]);
                char c;
                ssize_t r = read(gate[0], &c, 1); /* returns 0 for all when the parent closes the pipe */
                (void)r;
                tp_store_t *store = NULL;
                char *err = NULL;
                int rv = tp_store_open(path, &open_opts, &store, &err);
                if (rv != 0) {
                    fprintf(stderr, "child %d: %s\n", i, err);
                    _exit(1);
                }
                tp_store_close(store);
                _exit(0);
            }
        }
        close(gate[0]);
        close(gate[1]);
        for (int i = 0; i < PROCS; i++) {
            int status;
            assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
            assert_true(WIFEXITED(status));
            assert_int_equal(WEXITSTATUS(status), 0);
        }
        assert_int_equal(query_int(path, "PRAGMA user_version"), tp_store_schema_latest());
        assert_int_equal(query_int(path, "SELECT count(*) FROM meta WHERE key = 'state_version'"), 1);
        assert_int_equal(query_int(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'kills'"), 1);
        const char *suffixes[] = { "", "-wal", "-shm" };
        for (size_t i = 0; i < 3; i++) {
            char *p = tp_sprintf("%s%s", path, suffixes[i]);
            unlink(p);
            free(p);
        }
        free(path);
    }
}

static void
test_kills_bump_state_version(void **state)
{
    struct fixture *f = *state;
    tp_store_t *store = open_store(f->path);
    char *err = NULL;

    int rv = tp_store_exec(store,
                           "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) "
                           "VALUES ('planet', 'x', 'r', 'op', 1)",
                           &err);
    assert_int_equal(rv, -EINVAL);
    assert_non_null(strstr(err, "CHECK constraint failed"));
    free(err);
    assert_int_equal(tp_store_state_version(store), 0);

    assert_int_equal(tp_store_exec(store,
                                   "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) "
                                   "VALUES ('principal', 'p1', 'r', 'op', 1)",
                                   &err),
                     0);
    assert_int_equal(tp_store_state_version(store), 1);
    assert_int_equal(tp_store_exec(store, "UPDATE kills SET released_at_ms = 2, released_by = 'op'", &err), 0);
    assert_int_equal(tp_store_state_version(store), 2);
    assert_int_equal(tp_store_exec(store, "DELETE FROM kills", &err), 0);
    assert_int_equal(tp_store_state_version(store), 3);
    assert_int_equal(
        tp_store_exec(store, "INSERT INTO audit_log (ts_ms, actor, action) VALUES (1, 'op', 'kill')", &err), 0);
    assert_int_equal(tp_store_state_version(store), 3);
    tp_store_close(store);
}

/* ---- the writer ---- */

static tp_store_writer_t *
start_writer(const char *path, size_t queue_size, size_t batch_size, unsigned flush_ms, unsigned block_ms,
             int busy_timeout_ms, tp_metrics_t *metrics)
{
    tp_store_writer_options_t opts = {
        .queue_size = queue_size,
        .batch_size = batch_size,
        .flush_ms = flush_ms,
        .block_ms = block_ms,
        .busy_timeout_ms = busy_timeout_ms,
    };
    tp_store_writer_t *w = NULL;
    char *err = NULL;
    int rv = tp_store_writer_start(path, &opts, metrics, &w, &err);
    if (rv != 0)
        fail_msg("tp_store_writer_start: %d %s", rv, err);
    return w;
}

static const char insert_t[] = "INSERT INTO t (n, v) VALUES (?, ?)";

static int
submit_t(tp_store_writer_t *w, int64_t n, const char *v)
{
    tp_store_value_t values[] = { { .type = TP_STORE_INT, .u.i = n }, { .type = TP_STORE_TEXT, .u.s = v } };
    return tp_store_submit(w, insert_t, values, 2);
}

/* A store with a test table t(n, v UNIQUE NOT NULL). */
static void
create_t(const char *path)
{
    tp_store_t *store = open_store(path);
    char *err = NULL;
    assert_int_equal(tp_store_exec(store, "CREATE TABLE t (n INTEGER NOT NULL, v TEXT NOT NULL UNIQUE)", &err), 0);
    tp_store_close(store);
}

static void
test_writer_commits_audit_records(void **state)
{
    struct fixture *f = *state;
    tp_store_t *store = open_store(f->path);
    tp_store_writer_t *w = start_writer(f->path, 64, 16, 50, 10, BUSY_TIMEOUT_MS, NULL);

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t before_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    char actor[32];
    for (int i = 0; i < 10; i++) {
        snprintf(actor, sizeof(actor), "user%d", i);
        /* The buffer is reused at once: the writer must have copied the text. */
        assert_int_equal(tp_store_submit_audit(w, actor, "kill", i % 2 ? "agent/a" : NULL, "{\"why\":\"test\"}"), 0);
    }
    assert_int_equal(tp_store_submit_audit(w, NULL, "kill", NULL, NULL), -EINVAL);
    tp_store_writer_flush(w);
    assert_int_equal(tp_store_writer_depth(w), 0);

    sqlite3 *db = tp_store_db(store);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_log"), 10);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_log WHERE target IS NULL"), 5);
    assert_int_equal(raw_int(db, "SELECT count(DISTINCT actor) FROM audit_log"), 10);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM audit_log WHERE actor = 'user7' AND action = 'kill' "
                                 "AND target = 'agent/a' AND detail = '{\"why\":\"test\"}'"),
                     1);
    assert_true(raw_int(db, "SELECT min(ts_ms) FROM audit_log") >= before_ms);
    assert_true(raw_int(db, "SELECT max(ts_ms) FROM audit_log") < before_ms + 60000);

    tp_store_writer_stop(w);
    tp_store_close(store);
}

static void
test_writer_batches(void **state)
{
    struct fixture *f = *state;
    create_t(f->path);
    tp_metrics_t *reg = tp_metrics_new(1);
    tp_store_writer_t *w = start_writer(f->path, 2000, 100, 1000, 1000, BUSY_TIMEOUT_MS, reg);
    char v[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(v, sizeof(v), "v%d", i);
        assert_int_equal(submit_t(w, i, v), 0);
    }
    tp_store_writer_flush(w);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), 1000);
    assert_int_equal(query_int(f->path, "SELECT sum(n) FROM t"), 999 * 1000 / 2);
    tp_metric_t *records = records_metric(reg);
    assert_int_equal((int)tp_metric_value(records, committed), 1000);
    assert_int_equal((int)tp_metric_value(records, failed), 0);
    long batches = batch_count(reg);
    assert_true(batches >= 10);  /* batch_size 100 */
    assert_true(batches <= 100); /* far fewer transactions than records */
    tp_store_writer_stop(w);
    tp_metrics_free(reg);
}

static void
test_writer_flush_does_not_wait_for_flush_ms(void **state)
{
    struct fixture *f = *state;
    create_t(f->path);
    tp_store_writer_t *w = start_writer(f->path, 64, 64, 60000, 10, BUSY_TIMEOUT_MS, NULL);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    assert_int_equal(submit_t(w, 1, "a"), 0);
    tp_store_writer_flush(w);
    assert_true(elapsed_ms(&start) < 10000);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), 1);
    tp_store_writer_flush(w); /* nothing queued: returns at once */
    tp_store_writer_stop(w);
}

static void
test_writer_commits_after_flush_ms(void **state)
{
    struct fixture *f = *state;
    create_t(f->path);
    tp_store_writer_t *w = start_writer(f->path, 64, 64, 20, 10, BUSY_TIMEOUT_MS, NULL);
    assert_int_equal(submit_t(w, 1, "a"), 0);
    /* No flush: the batch is due flush_ms after the record arrived. */
    int64_t n = 0;
    for (int i = 0; i < 500 && n == 0; i++) {
        usleep(10 * 1000);
        n = query_int(f->path, "SELECT count(*) FROM t");
    }
    assert_int_equal(n, 1);
    tp_store_writer_stop(w);
}

static void
test_writer_failing_record_keeps_batch(void **state)
{
    struct fixture *f = *state;
    create_t(f->path);
    tp_metrics_t *reg = tp_metrics_new(1);
    tp_store_writer_t *w = start_writer(f->path, 64, 64, 60000, 10, BUSY_TIMEOUT_MS, reg);

    static const char bad_table[] = "INSERT INTO no_such_table (x) VALUES (?)";
    static const char bad_kind[] = "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) "
                                   "VALUES (?, 'x', 'r', 'op', 1)";
    tp_store_value_t one = { .type = TP_STORE_INT, .u.i = 1 };
    tp_store_value_t planet = { .type = TP_STORE_TEXT, .u.s = "planet" };
    tp_store_value_t too_few[] = { { .type = TP_STORE_INT, .u.i = 9 } };

    assert_int_equal(submit_t(w, 1, "a"), 0);
    assert_int_equal(submit_t(w, 2, "a"), 0); /* UNIQUE */
    assert_int_equal(submit_t(w, 3, "b"), 0);
    assert_int_equal(submit_t(w, 4, NULL), 0); /* NOT NULL */
    assert_int_equal(tp_store_submit(w, bad_table, &one, 1), 0);
    assert_int_equal(tp_store_submit(w, bad_kind, &planet, 1), 0); /* CHECK */
    assert_int_equal(tp_store_submit(w, insert_t, too_few, 1), 0); /* parameter count */
    assert_int_equal(submit_t(w, 5, "c"), 0);
    assert_int_equal(tp_store_submit(w, insert_t, too_few, TP_STORE_MAX_PARAMS + 1), -EINVAL);
    tp_store_writer_flush(w);

    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), 3);
    assert_int_equal(query_int(f->path, "SELECT group_concat(n, '') FROM (SELECT n FROM t ORDER BY n)"), 135);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM kills"), 0);
    tp_metric_t *records = records_metric(reg);
    assert_int_equal((int)tp_metric_value(records, committed), 3);
    assert_int_equal((int)tp_metric_value(records, failed), 5);
    assert_int_equal(batch_count(reg), 1); /* one transaction for all of them */
    tp_store_writer_stop(w);
    tp_metrics_free(reg);
}

static void
test_writer_drains_on_stop(void **state)
{
    struct fixture *f = *state;
    create_t(f->path);
    /* flush_ms is long and the batch large: only stop makes the writer commit. */
    tp_store_writer_t *w = start_writer(f->path, 1000, 1000, 60000, 10, BUSY_TIMEOUT_MS, NULL);
    char v[32];
    for (int i = 0; i < 500; i++) {
        snprintf(v, sizeof(v), "v%d", i);
        assert_int_equal(submit_t(w, i, v), 0);
    }
    tp_store_writer_stop(w);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), 500);
}

static void
test_writer_refuses_unmigrated_database(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db = raw_open(f->path, 0);
    raw_exec(db, "CREATE TABLE x (y)");
    sqlite3_close(db);
    tp_store_writer_options_t opts = { .queue_size = 4, .batch_size = 4, .flush_ms = 10, .block_ms = 10 };
    tp_store_writer_t *w = NULL;
    char *err = NULL;
    assert_int_equal(tp_store_writer_start(f->path, &opts, NULL, &w, &err), -EPROTO);
    assert_non_null(strstr(err, "schema version 0"));
    free(err);
}

/* The queue fills while another connection holds the write lock. */
static void
test_writer_queue_full_drops(void **state)
{
    struct fixture *f = *state;
    create_t(f->path);
    tp_metrics_t *reg = tp_metrics_new(1);
    sqlite3 *blocker = raw_open(f->path, 0);
    raw_exec(blocker, "BEGIN EXCLUSIVE"); /* in WAL: holds the write lock, readers go on */

    const unsigned block_ms = 100;
    tp_store_writer_t *w = start_writer(f->path, 4, 4, 1, block_ms, 20, reg);
    for (int i = 0; i < 4; i++) {
        char v[8];
        snprintf(v, sizeof(v), "v%d", i);
        assert_int_equal(submit_t(w, i, v), 0);
    }
    assert_int_equal(tp_store_writer_depth(w), 4);

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    assert_int_equal(submit_t(w, 4, "v4"), -EAGAIN);
    double waited = elapsed_ms(&start);
    assert_true(waited >= block_ms * 0.9);
    assert_true(waited < block_ms * 20);
    assert_int_equal(submit_t(w, 5, "v5"), -EAGAIN);
    tp_metric_t *records = records_metric(reg);
    assert_int_equal((int)tp_metric_value(records, dropped), 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), 0);

    raw_exec(blocker, "ROLLBACK");
    tp_store_writer_flush(w);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), 4);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t WHERE v IN ('v4', 'v5')"), 0);
    assert_int_equal((int)tp_metric_value(records, committed), 4);
    assert_int_equal((int)tp_metric_value(records, failed), 0);
    /* There is room again. */
    assert_int_equal(submit_t(w, 6, "v6"), 0);
    tp_store_writer_stop(w);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), 5);
    sqlite3_close(blocker);
    tp_metrics_free(reg);
}

struct blocked_submit {
    tp_store_writer_t *w;
    int rv;
};

static void *
blocked_submit_main(void *arg)
{
    struct blocked_submit *b = arg;
    b->rv = submit_t(b->w, 99, "late");
    return NULL;
}

static void *
stop_main(void *arg)
{
    tp_store_writer_stop(arg);
    return NULL;
}

/* A producer waiting for room when stop begins gets -ESHUTDOWN; what was queued still commits. */
static void
test_writer_stop_wakes_blocked_producer(void **state)
{
    struct fixture *f = *state;
    create_t(f->path);
    sqlite3 *blocker = raw_open(f->path, 0);
    raw_exec(blocker, "BEGIN EXCLUSIVE");
    tp_store_writer_t *w = start_writer(f->path, 2, 2, 1, 60000, 100, NULL);
    assert_int_equal(submit_t(w, 1, "a"), 0);
    assert_int_equal(submit_t(w, 2, "b"), 0);

    struct blocked_submit b = { .w = w, .rv = 1 };
    pthread_t producer, stopper;
    assert_int_equal(pthread_create(&producer, NULL, blocked_submit_main, &b), 0);
    usleep(50 * 1000); /* let it block (the test passes either way: -ESHUTDOWN, never 0) */
    assert_int_equal(pthread_create(&stopper, NULL, stop_main, w), 0);
    assert_int_equal(pthread_join(producer, NULL), 0);
    assert_int_equal(b.rv, -ESHUTDOWN);
    raw_exec(blocker, "ROLLBACK");
    assert_int_equal(pthread_join(stopper, NULL), 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), 2);
    sqlite3_close(blocker);
}

struct producer {
    tp_store_writer_t *w;
    int base;
    int count;
};

static void *
producer_main(void *arg)
{
    struct producer *p = arg;
    char v[32];
    for (int i = 0; i < p->count; i++) {
        snprintf(v, sizeof(v), "p%d", p->base + i);
        if (submit_t(p->w, p->base + i, v) != 0)
            return (void *)1;
    }
    return NULL;
}

static void
test_writer_concurrent_producers(void **state)
{
    struct fixture *f = *state;
    create_t(f->path);
    enum { THREADS = 4, EACH = 2000 };
    /* block_ms is long: nothing may be dropped while the writer keeps up. */
    tp_store_writer_t *w = start_writer(f->path, 256, 64, 5, 30000, BUSY_TIMEOUT_MS, NULL);
    pthread_t threads[THREADS];
    struct producer p[THREADS];
    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct producer){ .w = w, .base = i * EACH, .count = EACH };
        assert_int_equal(pthread_create(&threads[i], NULL, producer_main, &p[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        assert_int_equal(pthread_join(threads[i], &ret), 0);
        assert_null(ret);
    }
    tp_store_writer_flush(w);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), THREADS * EACH);
    tp_store_writer_stop(w);
}

/* ---- the watcher ---- */

struct watch_state {
    int calls;
    int64_t version;
};

static void
on_change(tp_store_t *store, int64_t state_version, void *data)
{
    struct watch_state *ws = data;
    ws->calls++;
    ws->version = state_version;
}

/* Runs the loop until ws->calls reaches `calls` or about 5 s of polls passed. */
static void
run_until_calls(uv_loop_t *loop, struct watch_state *ws, int calls)
{
    for (int i = 0; i < 500 && ws->calls < calls; i++)
        uv_run(loop, UV_RUN_ONCE);
}

static void
close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT); /* runs the close callbacks */
    assert_int_equal(uv_loop_close(loop), 0);
}

static void
test_watcher_sees_other_connections(void **state)
{
    struct fixture *f = *state;
    tp_store_t *store = open_store(f->path);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct watch_state ws = { 0 };
    assert_int_equal(tp_store_watch_start(store, &loop, 10, on_change, &ws), 0);
    assert_int_equal(tp_store_watch_start(store, &loop, 10, on_change, &ws), -EBUSY);

    sqlite3 *other = raw_open(f->path, BUSY_TIMEOUT_MS);
    raw_exec(other, "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) "
                    "VALUES ('all', '*', 'incident', 'op', 1)");
    run_until_calls(&loop, &ws, 1);
    assert_int_equal(ws.calls, 1);
    assert_int_equal(ws.version, 1);

    /* A write to a table that is not snapshotted changes data_version but not state_version. */
    raw_exec(other, "INSERT INTO audit_log (ts_ms, actor, action) VALUES (1, 'op', 'noop')");
    for (int i = 0; i < 10; i++) /* each turn waits for one poll (10 ms) */
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ws.calls, 1);

    /* The watcher is still alive: the next real change is seen. */
    raw_exec(other, "UPDATE kills SET released_at_ms = 2, released_by = 'op'");
    run_until_calls(&loop, &ws, 2);
    assert_int_equal(ws.calls, 2);
    assert_int_equal(ws.version, 2);
    assert_true(tp_store_healthy(store));

    sqlite3_close(other);
    tp_store_watch_stop(store);
    tp_store_watch_stop(store); /* idempotent */
    tp_store_close(store);
    close_loop(&loop);
}

static void
test_watcher_sees_own_connection(void **state)
{
    struct fixture *f = *state;
    tp_store_t *store = open_store(f->path);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct watch_state ws = { 0 };
    assert_int_equal(tp_store_watch_start(store, &loop, 10, on_change, &ws), 0);
    char *err = NULL;
    /* data_version ignores this connection's own commits (gwctl in-process, the daemon itself). */
    assert_int_equal(tp_store_exec(store,
                                   "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) "
                                   "VALUES ('team', 't1', 'r', 'op', 1)",
                                   &err),
                     0);
    run_until_calls(&loop, &ws, 1);
    assert_int_equal(ws.calls, 1);
    assert_int_equal(ws.version, 1);
    tp_store_watch_stop(store);
    tp_store_close(store);
    close_loop(&loop);
}

/* Closing the store while its watcher runs is safe; the loop frees it when the timer closes. */
static void
test_close_with_watcher_running(void **state)
{
    struct fixture *f = *state;
    tp_store_t *store = open_store(f->path);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct watch_state ws = { 0 };
    assert_int_equal(tp_store_watch_start(store, &loop, 10, on_change, &ws), 0);
    uv_run(&loop, UV_RUN_ONCE);
    tp_store_close(store);
    close_loop(&loop); /* ASan reports a leak or a use after free if this is wrong */
    assert_int_equal(ws.calls, 0);

    /* Stop, then close before the loop ran the close callback. */
    store = open_store(f->path);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(tp_store_watch_start(store, &loop, 10, on_change, &ws), 0);
    tp_store_watch_stop(store);
    assert_int_equal(tp_store_watch_start(store, &loop, 10, on_change, &ws), -EBUSY); /* still closing */
    tp_store_close(store);
    close_loop(&loop);
}

static void
test_healthy_follows_reachability(void **state)
{
    struct fixture *f = *state;
    tp_store_t *store = open_store(f->path);
    assert_true(tp_store_healthy(store));
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct watch_state ws = { 0 };
    assert_int_equal(tp_store_watch_start(store, &loop, 10, on_change, &ws), 0);

    /* Another party damages the schema: the watcher can no longer read state_version. */
    sqlite3 *other = raw_open(f->path, BUSY_TIMEOUT_MS);
    raw_exec(other, "ALTER TABLE meta RENAME TO meta_away");
    for (int i = 0; i < 500 && tp_store_healthy(store); i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_false(tp_store_healthy(store));
    assert_true(tp_store_ping(store) < 0);
    assert_true(tp_store_state_version(store) < 0);

    /* Repaired: healthy again, and since state_version did not change, no callback. */
    raw_exec(other, "ALTER TABLE meta_away RENAME TO meta");
    for (int i = 0; i < 500 && !tp_store_healthy(store); i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(tp_store_healthy(store));
    assert_int_equal(tp_store_ping(store), 0);
    assert_int_equal(ws.calls, 0);

    raw_exec(other, "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) "
                    "VALUES ('agent', 'a', 'r', 'op', 1)");
    run_until_calls(&loop, &ws, 1);
    assert_int_equal(ws.calls, 1);
    assert_int_equal(ws.version, 1);

    sqlite3_close(other);
    tp_store_watch_stop(store);
    tp_store_close(store);
    close_loop(&loop);
}

/* A write lock that is never released cannot make shutdown hang: the rest is counted failed. */
static void
test_writer_stop_gives_up_on_a_held_lock(void **state)
{
    struct fixture *f = *state;
    create_t(f->path);
    tp_metrics_t *reg = tp_metrics_new(1);
    sqlite3 *blocker = raw_open(f->path, 0);
    raw_exec(blocker, "BEGIN EXCLUSIVE");
    tp_store_writer_t *w = start_writer(f->path, 100, 10, 60000, 10, 20, reg);
    char v[32];
    for (int i = 0; i < 50; i++) {
        snprintf(v, sizeof(v), "v%d", i);
        assert_int_equal(submit_t(w, i, v), 0);
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    tp_store_writer_stop(w);
    assert_true(elapsed_ms(&start) < 10000);
    tp_metric_t *records = records_metric(reg);
    assert_int_equal((int)tp_metric_value(records, failed), 50);
    assert_int_equal((int)tp_metric_value(records, committed), 0);
    raw_exec(blocker, "ROLLBACK");
    sqlite3_close(blocker);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM t"), 0);
    tp_metrics_free(reg);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_creates_wal_database),
        T(test_open_missing_file_without_create),
        T(test_open_not_a_database),
        T(test_reopen_is_a_no_op),
        T(test_newer_database_refused),
        T(test_concurrent_migration),
        T(test_kills_bump_state_version),
        T(test_writer_commits_audit_records),
        T(test_writer_flush_does_not_wait_for_flush_ms),
        T(test_writer_commits_after_flush_ms),
        T(test_writer_drains_on_stop),
        T(test_writer_refuses_unmigrated_database),
        T(test_writer_concurrent_producers),
        T(test_watcher_sees_other_connections),
        T(test_watcher_sees_own_connection),
        T(test_close_with_watcher_running),
        T(test_healthy_follows_reachability),
        T(test_writer_stop_wakes_blocked_producer),
        /* These read the writer's metrics (common/metrics.c). */
        T(test_writer_batches),
        T(test_writer_failing_record_keeps_batch),
        T(test_writer_queue_full_drops),
        T(test_writer_stop_gives_up_on_a_held_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
