/*
 * daemon.h — the life of a Triplane daemon, shared by model-gw, mcp-gw and agent-gw.
 *
 * tp_daemon_main parses the command line (--config, --check-config, --help, --version), loads
 * the configuration, opens and migrates the store, starts the store writer, loads the state
 * snapshot, starts the HTTP server (with /healthz, /readyz, /metrics) and the control socket
 * (status, reload, refresh, kill, release), and runs until SIGTERM or SIGINT, then shuts down
 * gracefully: stop accepting, let in-flight requests finish up to common.shutdown_timeout_ms,
 * drain the store writer, exit 0. SIGHUP (or the control command `reload`) re-reads what can
 * change at run time.
 *
 * A plane plugs in through tp_daemon_spec_t; everything it registers happens in `setup`.
 */
#ifndef TP_DAEMON_H
#define TP_DAEMON_H

#include <jansson.h>
#include <sqlite3.h>
#include <uv.h>

#include "config.h"
#include "control.h"
#include "metrics.h"
#include "server.h"
#include "store.h"

typedef struct tp_daemon tp_daemon_t;

/* How the daemon builds the immutable state snapshot it serves from (keys, policies, kills). It
 * is loaded at start (the daemon is not ready until that succeeded) and again whenever the
 * store's state_version changes or on reload. The policy library provides these. */
typedef struct tp_state_ops {
    /* Builds a new snapshot from the store (main thread). Returns NULL and *err on failure. */
    void *(*load)(sqlite3 *db, char **err);
    /* Releases a snapshot. */
    void (*release)(void *state);
    /* Describes a snapshot for the status command (new reference). Its "kills" array
     * ([{"target_kind", "target", ...}], the kills in force) is what the control commands kill
     * and release check before they confirm. */
    json_t *(*describe)(const void *state);
    /* The Unix time (ms) at which something in the snapshot stops applying (a kill or key that
     * expires), so the daemon reloads then; 0 when nothing expires. Optional. */
    int64_t (*expires_at_ms)(const void *state);
} tp_state_ops_t;

typedef struct tp_daemon_spec {
    const char *name;                /* "model-gw": also the control socket name and config section */
    const char *summary;             /* one line for --help */
    const tp_state_ops_t *state_ops; /* required */
    tp_error_fn error_fn;            /* the plane's error envelope; NULL for the default */
    /* Registers the plane's routes, readiness checks and control commands. Runs on the main
     * thread after the server is created and before it starts. Returns 0, or non-zero with *err. */
    int (*setup)(tp_daemon_t *d, char **err);
    /* Called on the main thread after a new state snapshot was installed, before the workers
     * switch to it. Work it queues on the workers (tp_server_each_worker) runs before the switch,
     * and so before the control commands refresh, kill and release are answered (they answer
     * once every worker has switched). A request a worker takes between that work and its switch
     * still sees the old snapshot: to end what a kill covers without that gap, use
     * on_worker_state. Optional. */
    void (*on_state)(tp_daemon_t *d, const void *state);
    /* Called on each worker's own thread right after it switched to a new snapshot (not for the
     * one the workers start with), before refresh, kill and release are answered. After it runs,
     * no request on that worker can pass the old snapshot's checks: this is the race-free place
     * to end the in-flight work a new kill covers (requests that started under the old snapshot).
     * `state` stays valid while the worker's requests use it. Must not block. Optional. */
    void (*on_worker_state)(tp_daemon_t *d, tp_worker_t *w, const void *state);
    /* Called on the main thread when a graceful shutdown begins, after the listeners were asked to
     * close: the plane ends work that would otherwise hold the drain until its deadline (server
     * push streams that never end by themselves). Optional. */
    void (*on_drain)(tp_daemon_t *d);
    /* Called on the main thread once the workers have stopped (their loops no longer run), before
     * the store closes: the plane releases what lives outside the process, such as child
     * processes, synchronously. Optional. */
    void (*on_stopped)(tp_daemon_t *d);
} tp_daemon_spec_t;

/* Runs the daemon; returns the process exit status (0 after a clean shutdown, 1 on a start-up
 * failure, 2 on a usage or configuration error). */
int tp_daemon_main(const tp_daemon_spec_t *spec, int argc, char **argv);

/* Accessors for setup and callbacks (all owned by the daemon). */
const tp_config_t *tp_daemon_config(const tp_daemon_t *d);
tp_server_t *tp_daemon_server(tp_daemon_t *d);
tp_metrics_t *tp_daemon_metrics(tp_daemon_t *d);
tp_store_t *tp_daemon_store(tp_daemon_t *d);
tp_store_writer_t *tp_daemon_writer(tp_daemon_t *d);
tp_control_server_t *tp_daemon_control(tp_daemon_t *d);
uv_loop_t *tp_daemon_loop(tp_daemon_t *d);
int64_t tp_daemon_started_at_ms(const tp_daemon_t *d); /* Unix time of the start, in ms */
/* The current state snapshot (main thread only; valid until the next state change). */
const void *tp_daemon_state(const tp_daemon_t *d);

/* The snapshot a request uses: its worker's own copy of the pointer, read without locks, and
 * valid until the request's handler returns control to the worker's loop. */
const void *tp_daemon_request_state(const tp_daemon_t *d, const tp_request_t *r);

/* The same snapshot, kept alive until the request is disposed (one atomic increment now, one
 * decrement then), for requests that use it from later callbacks (streaming, upstream answers).
 * Call it more than once per request only if needed: each call holds one more reference. */
const void *tp_daemon_request_state_hold(const tp_daemon_t *d, tp_request_t *r);

#endif
