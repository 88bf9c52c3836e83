/*
 * store_writer.c — the batching writer: a thread with its own connection that commits queued
 * records (audit, usage) in batches, so that request threads never wait on SQLite.
 *
 * The queue is a ring of records guarded by one mutex. Producers append at the tail; the writer
 * thread commits up to batch_size records from the head *in place* — it reads those slots
 * without the lock, which is safe because producers only write slots past head + count — and
 * frees the slots after the commit. So the queue never holds more than queue_size records,
 * including the batch being committed, and that is the writer's whole memory bound.
 *
 * Sequence numbers: every accepted record gets the next seq; done_seq is the highest seq that is
 * committed (or failed). tp_store_writer_flush waits for done_seq to reach the last seq given
 * when it was called, and asks the writer not to wait for flush_ms meanwhile.
 */
#include "clock.h"
#include "store.h"
#include "store-internal.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "mem.h"

/* Prepared statements kept per writer, looked up by the sql pointer. Callers use a handful of
 * distinct statements (audit, usage), so a small table searched linearly is enough; when it is
 * full the oldest entry is replaced. */
#define STMT_CACHE_SIZE 32

/* Backoff between attempts while another connection holds the write lock (each attempt already
 * waited busy_timeout_ms inside SQLite). */
#define BUSY_BACKOFF_MIN_MS 10
#define BUSY_BACKOFF_MAX_MS 1000

/* While stopping, after this many attempts that found the database locked the writer gives
 * up waiting: the batch is counted as failed and the remaining ones get one attempt each
 * without busy wait, so that shutdown cannot hang on a lock that is never released. */
#define STOP_BUSY_ATTEMPTS 5

/* batch_attempt: a record's failure rolled the transaction back; run the batch again without
 * the records marked failed. Not an SQLite code. */
#define ATTEMPT_AGAIN (-1)

#define NSEC_PER_MSEC 1000000ull
#define NSEC_PER_SEC  1000000000ull

struct record {
    const char *sql; /* borrowed: outlives the writer (see tp_store_submit) */
    char *text;      /* one allocation holding the copies of every text value, or NULL */
    uint64_t seq;
    uint64_t enqueued_ns; /* CLOCK_MONOTONIC: starts the flush_ms clock of its batch */
    bool failed;          /* set by the writer while committing */
    size_t n;
    tp_store_value_t values[TP_STORE_MAX_PARAMS]; /* text values point into `text` */
};

struct stmt_cache_entry {
    const char *sql;
    sqlite3_stmt *stmt;
};

struct tp_store_writer {
    char *path;
    tp_store_writer_options_t opts;
    pthread_t thread;

    pthread_mutex_t mutex;
    pthread_cond_t not_empty; /* the writer waits: records, a flush or stop arrived */
    pthread_cond_t not_full;  /* producers wait: room in the ring */
    pthread_cond_t progress;  /* flushers and stop wait: done_seq moved, blocked producers left */
    /* Everything below up to the writer-thread section is guarded by mutex. */
    struct record *ring; /* opts.queue_size slots */
    size_t head;
    size_t count;
    uint64_t next_seq;  /* the last seq given to a record */
    uint64_t done_seq;  /* every record up to this seq is committed or failed */
    uint64_t flush_seq; /* a flusher waits for this seq: commit without waiting flush_ms */
    bool stopping;
    unsigned blocked;          /* producers waiting for room; stop waits until they left */
    uint64_t drops_unreported; /* drops since the last warning */
    uint64_t last_drop_warn_ns;
    bool drop_warned;

    /* The writer thread's own. */
    sqlite3 *db;
    struct stmt_cache_entry cache[STMT_CACHE_SIZE];
    size_t cache_next;           /* the entry replaced next when the table is full */
    bool busy_logged;            /* a "locked" warning was logged since the last commit */
    unsigned stop_busy_attempts; /* locked attempts since stop began (STOP_BUSY_ATTEMPTS) */
    char why[256];               /* the reason the last record failed */

    tp_metric_t *records_total; /* {result}; NULL without a registry */
    tp_metric_t *queue_depth;
    tp_metric_t *batch_seconds;
};

static const char *const result_committed[] = { "committed" };
static const char *const result_dropped[] = { "dropped" };
static const char *const result_failed[] = { "failed" };

static struct timespec
ns_to_timespec(uint64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / NSEC_PER_SEC), .tv_nsec = (long)(ns % NSEC_PER_SEC) };
    return ts;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * (long)NSEC_PER_MSEC };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static bool
is_busy(int rc)
{
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

static struct record *
slot(tp_store_writer_t *w, size_t i)
{
    return &w->ring[(w->head + i) % w->opts.queue_size];
}

static void
metric_add(tp_store_writer_t *w, const char *const *result, size_t n)
{
    if (w->records_total != NULL && n > 0)
        tp_metric_add(w->records_total, result, (double)n);
}

static void
metric_depth(tp_store_writer_t *w, size_t depth)
{
    if (w->queue_depth != NULL)
        tp_metric_set(w->queue_depth, NULL, (double)depth);
}

/* ---- the writer thread: statements ---- */

static void
set_why(tp_store_writer_t *w, const char *why)
{
    snprintf(w->why, sizeof(w->why), "%s", why);
}

static bool
only_space(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != ';')
            return false;
    return true;
}

static int
stmt_get(tp_store_writer_t *w, const char *sql, sqlite3_stmt **out)
{
    for (size_t i = 0; i < STMT_CACHE_SIZE; i++) {
        if (w->cache[i].sql == sql) {
            *out = w->cache[i].stmt;
            return SQLITE_OK;
        }
    }
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(w->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
    if (rc != SQLITE_OK) {
        set_why(w, sqlite3_errmsg(w->db));
        return rc;
    }
    if (stmt == NULL || (tail != NULL && !only_space(tail))) {
        set_why(w, stmt == NULL ? "empty statement" : "more than one statement");
        sqlite3_finalize(stmt);
        return SQLITE_ERROR;
    }
    struct stmt_cache_entry *e = &w->cache[w->cache_next];
    w->cache_next = (w->cache_next + 1) % STMT_CACHE_SIZE;
    sqlite3_finalize(e->stmt); /* NULL when the entry was free */
    e->sql = sql;
    e->stmt = stmt;
    *out = stmt;
    return SQLITE_OK;
}

static int
bind_value(sqlite3_stmt *stmt, int i, const tp_store_value_t *v)
{
    switch (v->type) {
    case TP_STORE_INT:
        return sqlite3_bind_int64(stmt, i, v->u.i);
    case TP_STORE_REAL:
        return sqlite3_bind_double(stmt, i, v->u.r);
    case TP_STORE_TEXT:
        /* The copy lives in the record until the batch is done: no second copy. */
        return sqlite3_bind_text(stmt, i, v->u.s, -1, SQLITE_STATIC);
    case TP_STORE_NULL:
    default:
        return sqlite3_bind_null(stmt, i);
    }
}

/* Runs one record. Returns SQLITE_OK or an error code with the reason in w->why. */
static int
record_exec(tp_store_writer_t *w, const struct record *rec)
{
    sqlite3_stmt *stmt;
    int rc = stmt_get(w, rec->sql, &stmt);
    if (rc != SQLITE_OK)
        return rc;
    if (sqlite3_bind_parameter_count(stmt) != (int)rec->n) {
        snprintf(w->why, sizeof(w->why), "the statement has %d parameters, the record %zu values",
                 sqlite3_bind_parameter_count(stmt), rec->n);
        return SQLITE_RANGE;
    }
    for (size_t i = 0; i < rec->n && rc == SQLITE_OK; i++)
        rc = bind_value(stmt, (int)i + 1, &rec->values[i]);
    if (rc == SQLITE_OK) {
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) /* INSERT … RETURNING: rows ignored */
            ;
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK)
        set_why(w, sqlite3_errmsg(w->db)); /* before reset, which may replace the message */
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static void
record_fail(tp_store_writer_t *w, struct record *rec, int rc)
{
    rec->failed = true;
    json_t *fields = json_pack("{s:s, s:s, s:s}", "sql", rec->sql, "error", w->why, "code", sqlite3_errstr(rc));
    tp_log_fields(TP_LOG_WARN, NULL, "store writer: record failed, skipped", fields);
}

/* ---- the writer thread: batches ---- */

/* One transaction over the records of the batch not yet marked failed. A record that fails on
 * its own (a constraint, a bad statement) is undone by SQLite's statement rollback, marked
 * failed and skipped: its neighbours still commit. Returns SQLITE_OK, ATTEMPT_AGAIN, or the
 * error that prevented the transaction (SQLITE_BUSY when another connection holds the lock). */
static int
batch_attempt(tp_store_writer_t *w, size_t k)
{
    int rc = sqlite3_exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_why(w, sqlite3_errmsg(w->db));
        return rc;
    }
    for (size_t i = 0; i < k; i++) {
        struct record *rec = slot(w, i);
        if (rec->failed)
            continue;
        rc = record_exec(w, rec);
        if (rc == SQLITE_OK)
            continue;
        bool rolled_back = sqlite3_get_autocommit(w->db);
        if (rolled_back && is_busy(rc))
            return rc;
        record_fail(w, rec, rc);
        if (rolled_back)
            return ATTEMPT_AGAIN; /* e.g. SQLITE_FULL undoes the whole transaction */
    }
    rc = sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_why(w, sqlite3_errmsg(w->db));
        if (!sqlite3_get_autocommit(w->db))
            sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

static bool
writer_stopping(tp_store_writer_t *w)
{
    pthread_mutex_lock(&w->mutex);
    bool stopping = w->stopping;
    pthread_mutex_unlock(&w->mutex);
    return stopping;
}

/* Commits the first k records of the ring, retrying while the database is locked. Returns the
 * number of records that failed. */
static size_t
batch_commit(tp_store_writer_t *w, size_t k)
{
    unsigned backoff_ms = BUSY_BACKOFF_MIN_MS;
    int rc;
    for (;;) {
        rc = batch_attempt(w, k);
        if (rc == SQLITE_OK || (rc != ATTEMPT_AGAIN && !is_busy(rc)))
            break;
        if (rc == ATTEMPT_AGAIN)
            continue;
        if (!w->busy_logged) {
            tp_warn("store writer %s: %s; retrying", w->path, w->why);
            w->busy_logged = true;
        }
        if (writer_stopping(w) && ++w->stop_busy_attempts >= STOP_BUSY_ATTEMPTS) {
            if (w->stop_busy_attempts == STOP_BUSY_ATTEMPTS)
                sqlite3_busy_timeout(w->db, 0);
            break;
        }
        sleep_ms(backoff_ms);
        backoff_ms = backoff_ms * 2 < BUSY_BACKOFF_MAX_MS ? backoff_ms * 2 : BUSY_BACKOFF_MAX_MS;
    }
    size_t failed = 0;
    for (size_t i = 0; i < k; i++)
        failed += slot(w, i)->failed ? 1 : 0;
    if (rc == SQLITE_OK) {
        w->busy_logged = false;
        return failed;
    }
    tp_error("store writer %s: lost a batch of %zu records: %s", w->path, k - failed, w->why);
    return k;
}

/* Waits (mutex held, count > 0) until a batch is due: batch_size records, flush_ms since the
 * oldest arrived, a flush or stop. */
static void
wait_for_batch(tp_store_writer_t *w)
{
    uint64_t deadline = slot(w, 0)->enqueued_ns + (uint64_t)w->opts.flush_ms * NSEC_PER_MSEC;
    while (w->count < w->opts.batch_size && !w->stopping && w->flush_seq <= w->done_seq) {
        if (tp_mono_ns() >= deadline)
            break;
        struct timespec ts = ns_to_timespec(deadline);
        pthread_cond_timedwait(&w->not_empty, &w->mutex, &ts);
    }
}

static void
batch_release(tp_store_writer_t *w, size_t k)
{
    for (size_t i = 0; i < k; i++) {
        struct record *rec = slot(w, i);
        free(rec->text);
        rec->text = NULL;
    }
}

static void *
writer_main(void *arg)
{
    tp_store_writer_t *w = arg;
    pthread_mutex_lock(&w->mutex);
    for (;;) {
        while (w->count == 0 && !w->stopping)
            pthread_cond_wait(&w->not_empty, &w->mutex);
        if (w->count == 0)
            break; /* stopping, and everything is committed */
        wait_for_batch(w);
        size_t k = w->count < w->opts.batch_size ? w->count : w->opts.batch_size;
        uint64_t last_seq = slot(w, k - 1)->seq;
        size_t depth = w->count;
        pthread_mutex_unlock(&w->mutex);

        metric_depth(w, depth);
        uint64_t start = tp_mono_ns();
        size_t failed = batch_commit(w, k);
        if (w->batch_seconds != NULL)
            tp_metric_observe(w->batch_seconds, NULL, (double)(tp_mono_ns() - start) / (double)NSEC_PER_SEC);
        metric_add(w, result_committed, k - failed);
        metric_add(w, result_failed, failed);
        batch_release(w, k);

        pthread_mutex_lock(&w->mutex);
        w->head = (w->head + k) % w->opts.queue_size;
        w->count -= k;
        w->done_seq = last_seq;
        metric_depth(w, w->count);
        pthread_cond_broadcast(&w->not_full);
        pthread_cond_broadcast(&w->progress);
    }
    pthread_mutex_unlock(&w->mutex);
    return NULL;
}

/* ---- start and stop ---- */

static int
sync_init(tp_store_writer_t *w)
{
    pthread_condattr_t attr;
    int rv = pthread_condattr_init(&attr);
    if (rv != 0)
        return rv;
    rv = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rv != 0)
        goto err_attr;
    rv = pthread_mutex_init(&w->mutex, NULL);
    if (rv != 0)
        goto err_attr;
    rv = pthread_cond_init(&w->not_empty, &attr);
    if (rv != 0)
        goto err_mutex;
    rv = pthread_cond_init(&w->not_full, &attr);
    if (rv != 0)
        goto err_not_empty;
    rv = pthread_cond_init(&w->progress, &attr);
    if (rv != 0)
        goto err_not_full;
    pthread_condattr_destroy(&attr);
    return 0;

err_not_full:
    pthread_cond_destroy(&w->not_full);
err_not_empty:
    pthread_cond_destroy(&w->not_empty);
err_mutex:
    pthread_mutex_destroy(&w->mutex);
err_attr:
    pthread_condattr_destroy(&attr);
    return rv;
}

static void
sync_destroy(tp_store_writer_t *w)
{
    pthread_cond_destroy(&w->progress);
    pthread_cond_destroy(&w->not_full);
    pthread_cond_destroy(&w->not_empty);
    pthread_mutex_destroy(&w->mutex);
}

/* Starts the thread with every signal blocked, so that signals go to the daemon's threads. */
static int
thread_start(tp_store_writer_t *w)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rv = pthread_create(&w->thread, NULL, writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rv;
}

static void
metrics_register(tp_store_writer_t *w, tp_metrics_t *metrics)
{
    static const char *const result_label[] = { "result", NULL };
    w->records_total = tp_metrics_counter(metrics, "triplane_store_records_total",
                                          "Records given to the store writer, by outcome.", result_label);
    w->queue_depth =
        tp_metrics_gauge(metrics, "triplane_store_queue_depth", "Records in the store writer's queue.", NULL);
    w->batch_seconds = tp_metrics_histogram(metrics, "triplane_store_batch_seconds",
                                            "Time to commit one batch of records, retries included.", NULL,
                                            tp_metrics_latency_buckets, tp_metrics_latency_buckets_count);
}

static void
cache_clear(tp_store_writer_t *w)
{
    for (size_t i = 0; i < STMT_CACHE_SIZE; i++)
        sqlite3_finalize(w->cache[i].stmt);
}

int
tp_store_writer_start(const char *path, const tp_store_writer_options_t *opts, tp_metrics_t *metrics,
                      tp_store_writer_t **out, char **err)
{
    assert(path != NULL && opts != NULL && out != NULL && err != NULL);
    *err = NULL;
    if (opts->queue_size == 0 || opts->batch_size == 0) {
        *err = tp_sprintf("store writer %s: queue_size and batch_size must be at least 1", path);
        return -EINVAL;
    }
    sqlite3 *db;
    int ret = tp__store_connect(path, false, opts->busy_timeout_ms, &db, err);
    if (ret != 0)
        return ret;
    int version;
    int rc = tp__store_user_version(db, &version);
    if (rc != SQLITE_OK) {
        *err = tp__store_errorf(db, rc, "PRAGMA user_version", path);
        ret = tp__store_errno(db, rc);
        goto err_close;
    }
    if (version != tp_store_schema_latest()) {
        *err = tp_sprintf("store writer %s: schema version %d, expected %d (open the store first to migrate it)", path,
                          version, tp_store_schema_latest());
        ret = -EPROTO;
        goto err_close;
    }

    tp_store_writer_t *w = tp_calloc(1, sizeof(*w));
    w->path = tp_strdup(path);
    w->opts = *opts;
    if (w->opts.batch_size > w->opts.queue_size)
        w->opts.batch_size = w->opts.queue_size; /* a batch is taken from the queue in place */
    w->db = db;
    w->ring = tp_calloc(w->opts.queue_size, sizeof(*w->ring));
    if (metrics != NULL)
        metrics_register(w, metrics);
    int rv = sync_init(w);
    if (rv != 0) {
        *err = tp_sprintf("store writer %s: pthread init: %s", path, strerror(rv));
        ret = -rv;
        goto err_free;
    }
    rv = thread_start(w);
    if (rv != 0) {
        *err = tp_sprintf("store writer %s: pthread_create: %s", path, strerror(rv));
        ret = -rv;
        goto err_sync;
    }
    *out = w;
    return 0;

err_sync:
    sync_destroy(w);
err_free:
    free(w->ring);
    free(w->path);
    free(w);
err_close:
    sqlite3_close(db);
    return ret;
}

void
tp_store_writer_stop(tp_store_writer_t *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mutex);
    w->stopping = true;
    pthread_cond_broadcast(&w->not_empty);
    pthread_cond_broadcast(&w->not_full);
    while (w->blocked > 0) /* producers that were waiting for room return -ESHUTDOWN */
        pthread_cond_wait(&w->progress, &w->mutex);
    pthread_mutex_unlock(&w->mutex);

    int rv = pthread_join(w->thread, NULL);
    if (rv != 0)
        tp_error("store writer %s: pthread_join: %s", w->path, strerror(rv));
    assert(w->count == 0);
    cache_clear(w);
    rv = sqlite3_close(w->db);
    if (rv != SQLITE_OK)
        tp_warn("store writer: close %s: %s", w->path, sqlite3_errstr(rv));
    sync_destroy(w);
    free(w->ring);
    free(w->path);
    free(w);
}

/* ---- producers ---- */

/* Fills rec from the caller's values, copying every text into one allocation. */
static void
record_fill(struct record *rec, const char *sql, const tp_store_value_t *values, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        if (values[i].type == TP_STORE_TEXT && values[i].u.s != NULL)
            len += strlen(values[i].u.s) + 1;
    memset(rec, 0, sizeof(*rec));
    rec->sql = sql;
    rec->n = n;
    rec->text = len > 0 ? tp_malloc(len) : NULL;
    char *p = rec->text;
    for (size_t i = 0; i < n; i++) {
        rec->values[i] = values[i];
        if (values[i].type != TP_STORE_TEXT)
            continue;
        if (values[i].u.s == NULL) {
            rec->values[i].type = TP_STORE_NULL;
            continue;
        }
        size_t l = strlen(values[i].u.s) + 1;
        memcpy(p, values[i].u.s, l);
        rec->values[i].u.s = p;
        p += l;
    }
}

/* Counts a drop (mutex held). Returns how many drops to report now, 0 for none: at most one
 * warning per second, with the number dropped since the previous one. */
static uint64_t
drop_count(tp_store_writer_t *w)
{
    w->drops_unreported++;
    uint64_t now = tp_mono_ns();
    if (w->drop_warned && now - w->last_drop_warn_ns < NSEC_PER_SEC)
        return 0;
    uint64_t n = w->drops_unreported;
    w->drops_unreported = 0;
    w->last_drop_warn_ns = now;
    w->drop_warned = true;
    return n;
}

/* Waits (mutex held) up to block_ms for room. Returns 0, -EAGAIN or -ESHUTDOWN. */
static int
wait_for_room(tp_store_writer_t *w)
{
    uint64_t deadline = tp_mono_ns() + (uint64_t)w->opts.block_ms * NSEC_PER_MSEC;
    struct timespec ts = ns_to_timespec(deadline);
    w->blocked++;
    while (w->count == w->opts.queue_size && !w->stopping) {
        if (pthread_cond_timedwait(&w->not_full, &w->mutex, &ts) == ETIMEDOUT)
            break;
    }
    w->blocked--;
    if (w->stopping) {
        if (w->blocked == 0)
            pthread_cond_broadcast(&w->progress);
        return -ESHUTDOWN;
    }
    return w->count == w->opts.queue_size ? -EAGAIN : 0;
}

int
tp_store_submit(tp_store_writer_t *w, const char *sql, const tp_store_value_t *values, size_t n)
{
    if (sql == NULL || n > TP_STORE_MAX_PARAMS || (n > 0 && values == NULL))
        return -EINVAL;
    struct record rec;
    record_fill(&rec, sql, values, n); /* copies outside the lock */

    uint64_t report = 0;
    size_t depth = 0;
    int ret = 0;
    pthread_mutex_lock(&w->mutex);
    if (w->stopping) {
        ret = -ESHUTDOWN;
    } else if (w->count == w->opts.queue_size) {
        ret = wait_for_room(w);
        if (ret == -EAGAIN) {
            report = drop_count(w);
            depth = w->count;
        }
    }
    if (ret == 0) {
        rec.seq = ++w->next_seq;
        rec.enqueued_ns = tp_mono_ns();
        *slot(w, w->count) = rec;
        w->count++;
        /* The writer waits for a first record without a deadline, then for batch_size. */
        if (w->count == 1 || w->count == w->opts.batch_size)
            pthread_cond_signal(&w->not_empty);
    }
    pthread_mutex_unlock(&w->mutex);

    if (ret == 0)
        return 0;
    free(rec.text);
    if (ret == -EAGAIN) {
        metric_add(w, result_dropped, 1);
        if (report > 0)
            tp_warn("store writer %s: queue full (%zu records), dropped %" PRIu64 " record(s) since the last warning",
                    w->path, depth, report);
    }
    return ret;
}

int
tp_store_submit_audit(tp_store_writer_t *w, const char *actor, const char *action, const char *target,
                      const char *detail_json)
{
    /* One address for every call: the writer caches its prepared statement by pointer. */
    static const char sql[] = "INSERT INTO audit_log (ts_ms, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)";
    if (actor == NULL || action == NULL)
        return -EINVAL;
    int64_t ts_ms = tp_unix_ms();
    tp_store_value_t values[] = {
        { .type = TP_STORE_INT, .u.i = ts_ms },
        { .type = TP_STORE_TEXT, .u.s = actor },
        { .type = TP_STORE_TEXT, .u.s = action },
        { .type = TP_STORE_TEXT, .u.s = target }, /* NULL becomes SQL NULL */
        { .type = TP_STORE_TEXT, .u.s = detail_json },
    };
    return tp_store_submit(w, sql, values, sizeof(values) / sizeof(values[0]));
}

void
tp_store_writer_flush(tp_store_writer_t *w)
{
    pthread_mutex_lock(&w->mutex);
    uint64_t target = w->next_seq;
    if (target > w->flush_seq) {
        w->flush_seq = target;
        pthread_cond_signal(&w->not_empty);
    }
    while (w->done_seq < target)
        pthread_cond_wait(&w->progress, &w->mutex);
    pthread_mutex_unlock(&w->mutex);
}

size_t
tp_store_writer_depth(tp_store_writer_t *w)
{
    pthread_mutex_lock(&w->mutex);
    size_t depth = w->count;
    pthread_mutex_unlock(&w->mutex);
    return depth;
}
