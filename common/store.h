/*
 * store.h — the SQLite state store shared by the three daemons and gwctl.
 *
 * One database file in WAL mode. The schema is versioned with PRAGMA user_version and changed
 * only by forward-only migrations (store_schema.c) that run inside BEGIN IMMEDIATE, so three
 * daemons starting at the same moment migrate exactly once.
 *
 * Three parts:
 *  - tp_store_t: a connection for the thread that opened it (the daemon's main thread, or
 *    gwctl). Never used on a request path.
 *  - tp_store_writer_t: a writer thread with its own connection that takes records (audit,
 *    usage) from a bounded in-memory queue and commits them in batches.
 *  - the watcher: polls PRAGMA data_version on a libuv timer and calls back when another
 *    connection committed a change to the state that daemons snapshot (keys, policies, kills…).
 */
#ifndef TP_STORE_H
#define TP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>
#include <uv.h>

#include "metrics.h"

typedef struct tp_store tp_store_t;
typedef struct tp_store_writer tp_store_writer_t;

typedef struct tp_store_options {
    int busy_timeout_ms; /* sqlite3_busy_timeout */
    bool create;         /* create the file when missing (gwctl init, daemons); false: must exist */
} tp_store_options_t;

/* The schema version this build migrates to. */
int tp_store_schema_latest(void);

/* Opens (creating if allowed) the database at `path`, sets WAL, busy_timeout and foreign keys,
 * and migrates to tp_store_schema_latest(). Returns 0 and *out, or a negative errno-style code
 * and a malloc'd message in *err ("open var/x.db: unable to open database file"). A database
 * newer than this build (user_version > latest) is refused with -EPROTO. */
int tp_store_open(const char *path, const tp_store_options_t *opts, tp_store_t **out, char **err);

/* Closes the connection. Stops the watcher first if it runs. The watcher's timer is embedded in
 * the store and libuv closes it asynchronously: when a watcher was started, the store's memory
 * is released by the timer's close callback, so the loop must run (uv_run) once more after
 * this, as it must anyway before uv_loop_close. No callback fires after this returns. */
void tp_store_close(tp_store_t *store);

/* The underlying connection, for modules that read or change state (policy, gwctl). Owned by
 * the store; use only on the thread that opened it. */
sqlite3 *tp_store_db(tp_store_t *store);

const char *tp_store_path(const tp_store_t *store);

/* PRAGMA user_version as read now, or a negative code. */
int tp_store_schema_version(tp_store_t *store);

/* Runs a cheap query to check the store is reachable. Returns 0 or a negative code. */
int tp_store_ping(tp_store_t *store);

/* The current value of the state_version counter that triggers bump whenever a snapshotted
 * table (kills now; keys, principals, policies later) changes. */
int64_t tp_store_state_version(tp_store_t *store);

/* ---- change watching ---- */

/* Called on the loop thread when state_version changed since the last call (or since
 * tp_store_watch_start); never when it did not. */
typedef void (*tp_store_change_cb)(tp_store_t *store, int64_t state_version, void *data);

/* Starts polling PRAGMA data_version every interval_ms on `loop` (a cheap read of the WAL
 * index, no disk I/O when nothing changed). When it changes (another connection committed), or
 * this connection itself changed rows, re-reads state_version and calls cb when that changed.
 * The watcher also records whether the store is reachable (tp_store_healthy); a failed poll
 * logs one warning per change of state. `loop` must run on the thread that opened the store.
 * Returns 0, -EINVAL (no cb, interval 0), -EBUSY (a watcher runs, or a stopped one has not
 * finished closing), or a libuv error. One watcher per store. */
int tp_store_watch_start(tp_store_t *store, uv_loop_t *loop, unsigned interval_ms, tp_store_change_cb cb, void *data);

/* Stops the watcher: cb is not called any more. Its timer is closed asynchronously on the loop;
 * a new watcher can start once the loop ran the close. Does nothing when none runs. */
void tp_store_watch_stop(tp_store_t *store);

/* True when the last poll (or open) succeeded. Thread-safe (an atomic), so readiness checks
 * on worker threads may read it without touching SQLite. */
bool tp_store_healthy(const tp_store_t *store);

/* ---- the batching writer ---- */

typedef enum tp_store_value_type {
    TP_STORE_NULL = 0,
    TP_STORE_INT,
    TP_STORE_REAL,
    TP_STORE_TEXT,
} tp_store_value_type_t;

typedef struct tp_store_value {
    tp_store_value_type_t type;
    union {
        int64_t i;
        double r;
        const char *s; /* copied by tp_store_submit */
    } u;
} tp_store_value_t;

#define TP_STORE_MAX_PARAMS 16

typedef struct tp_store_writer_options {
    size_t queue_size; /* records held at most */
    size_t batch_size; /* records per transaction at most (no more than queue_size) */
    unsigned flush_ms; /* a record waits at most this long before its batch commits */
    unsigned block_ms; /* a producer waits this long for room when the queue is full */
    int busy_timeout_ms;
} tp_store_writer_options_t;

/* Starts the writer thread with its own connection to `path` (which must exist and be
 * migrated). Registers metrics in `metrics` when not NULL:
 * triplane_store_records_total{result="committed|dropped|failed"}, triplane_store_queue_depth,
 * triplane_store_batch_seconds. Returns 0 and *out, or a negative code and *err. */
int tp_store_writer_start(const char *path, const tp_store_writer_options_t *opts, tp_metrics_t *metrics,
                          tp_store_writer_t **out, char **err);

/* Queues one record: `sql` is an INSERT (or any single statement) with n (<= TP_STORE_MAX_PARAMS)
 * '?' parameters; sql must be a string literal or otherwise outlive the writer (prepared
 * statements are cached by pointer). Text values are copied (a NULL text is SQL NULL).
 * Thread-safe. Returns 0 when queued, -EINVAL for n too large; when the queue is full it waits
 * up to block_ms, then returns -EAGAIN, counts a drop and logs a warning (at most one a second,
 * with the number dropped since the last). After tp_store_writer_stop began: -ESHUTDOWN.
 * A record that fails when it runs (a constraint, a bad statement) is logged, counted as failed
 * and skipped; the other records of its batch still commit. */
int tp_store_submit(tp_store_writer_t *w, const char *sql, const tp_store_value_t *values, size_t n);

/* Records an audit entry (actor, action, target, detail JSON text or NULL) through the writer,
 * stamped with the wall clock now. Returns as tp_store_submit; -EINVAL when actor or action is NULL. */
int tp_store_submit_audit(tp_store_writer_t *w, const char *actor, const char *action, const char *target,
                          const char *detail_json);

/* Blocks until every record queued before the call is committed (or failed). For tests and
 * for commands that need read-your-writes. */
void tp_store_writer_flush(tp_store_writer_t *w);

/* Stops accepting records, commits everything queued, joins the thread and frees the writer.
 * Nothing accepted by tp_store_submit is lost unless SQLite itself fails, which is logged and
 * counted as failed; a write lock that another connection never releases is waited for a few
 * busy timeouts, then the rest is counted as failed. Producers blocked in tp_store_submit
 * return -ESHUTDOWN; the caller makes sure no thread calls into the writer after this returns. */
void tp_store_writer_stop(tp_store_writer_t *w);

/* Records in the queue now, including the batch being committed (for the status command and
 * tests). The triplane_store_queue_depth gauge is the same number, sampled at each batch. */
size_t tp_store_writer_depth(tp_store_writer_t *w);

/* ---- helpers for short admin transactions (gwctl) ---- */

/* Runs SQL with no result rows. Returns 0 or a negative code with *err set (malloc'd). */
int tp_store_exec(tp_store_t *store, const char *sql, char **err);

/* An audited admin change on `db` (policy/admin, tool pins, the agent registry): BEGIN
 * IMMEDIATE when no transaction is open (the write lock up front, so a busy store makes the
 * change wait rather than fail half-way), else SAVEPOINT `savepoint` (a static SQL identifier)
 * inside the caller's transaction, so that many changes (gwctl apply) commit or roll back as
 * one. Returns TP_STORE_TXN_OUTER or TP_STORE_TXN_NESTED for tp_store_change_end, or -EIO with
 * *err ("begin: …", malloc'd). */
enum { TP_STORE_TXN_NESTED = 0, TP_STORE_TXN_OUTER = 1 };
int tp_store_change_begin(sqlite3 *db, const char *savepoint, char **err);

/* Ends what tp_store_change_begin started: commits (or releases the savepoint) when rv == 0,
 * rolls back otherwise. Returns rv, or -EIO with *err when the commit or release failed. */
int tp_store_change_end(sqlite3 *db, int txn, const char *savepoint, int rv, char **err);

#endif
