/*
 * server.h — the HTTP server every daemon runs: h2o (HTTP/1.1, and HTTP/2 over TLS) on libuv.
 *
 * N worker threads, each with its own uv loop, h2o context and, per configured listener, its own
 * SO_REUSEPORT socket, so the kernel spreads connections and workers share nothing on the
 * request path. The main thread owns the tp_server_t, starts and stops the workers, and talks
 * to them only through tp_server_each_worker.
 *
 * Every request gets a tp_request_t in its pool: a request id (the client's X-Request-Id when it
 * is sane, otherwise a generated one; returned on every response), a start time, the route label
 * used in metrics, and the principal that planes fill in once authenticated. When the request
 * is disposed, one access-log line is written and the request metrics are recorded.
 *
 * A request body over common.max_request_size is answered 413 in the plane's error envelope
 * before its route runs. h2o itself still refuses, in plain text, a body over twice that limit.
 */
#ifndef TP_SERVER_H
#define TP_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <h2o.h>
#include <jansson.h>

#include "config.h"
#include "metrics.h"

typedef struct tp_server tp_server_t;
typedef struct tp_worker tp_worker_t;
typedef struct tp_request tp_request_t;

#define TP_REQUEST_ID_MAX 64

struct tp_request {
    h2o_req_t *req;
    tp_server_t *server;
    tp_worker_t *worker;
    const char *route;     /* the matched route pattern (a static string), or "unmatched" */
    const char *principal; /* set by the plane after authentication (pool or static memory) */
    uint64_t start_ns;     /* CLOCK_MONOTONIC at the start of the handler */
    char id[TP_REQUEST_ID_MAX + 1];
};

/* A route handler. It must produce a response (now, or later from the same worker thread) and
 * return 0, as an h2o on_req handler does. `data` is what was given to tp_server_route. */
typedef int (*tp_route_fn)(tp_request_t *r, void *data);

/* Writes an error response in the plane's protocol envelope. `code` is a short machine-readable
 * word ("not_found"), `message` a sentence for a person. Called on the worker thread. */
typedef void (*tp_error_fn)(tp_request_t *r, int status, const char *code, const char *message);

/* A readiness check. Runs on worker threads at every GET /readyz, so it must be cheap and
 * thread-safe (read atomics, never SQLite). Returns true when ready; otherwise sets *detail to a
 * static string saying what is wrong. */
typedef bool (*tp_ready_fn)(void *data, const char **detail);

/* Creates a server for the daemon `name` with the common settings of cfg and the listeners and
 * worker count of `plane`. Registers the common HTTP metrics in `metrics` (which must have at
 * least tp_server_shards(plane) shards). Nothing is bound yet. Returns NULL and *err on failure
 * (e.g. a TLS certificate that cannot be loaded). cfg, plane and metrics must outlive the server. */
tp_server_t *tp_server_new(const char *name, const tp_config_t *cfg, const tp_plane_config_t *plane,
                           tp_metrics_t *metrics, char **err);

/* The number of metric shards a server with this plane config needs (workers + 1 for main). */
unsigned tp_server_shards(const tp_plane_config_t *plane);

/* Routes `method` (NULL: any) on `path` to fn. With prefix, the route also matches every path
 * below `path` + "/". Routes are matched in registration order; register before start.
 * `path` must be a static string: it is also the route's metric label. */
void tp_server_route(tp_server_t *srv, const char *method, const char *path, bool prefix, tp_route_fn fn, void *data);

/* Sets the error envelope writer (default: {"error":{"code":…,"message":…}}). */
void tp_server_set_error_fn(tp_server_t *srv, tp_error_fn fn);

/* Adds a readiness check under `name` (static string) for GET /readyz. */
void tp_server_add_ready_check(tp_server_t *srv, const char *name, tp_ready_fn fn, void *data);

/* Binds every listener (port 0 picks a free port, the same for all workers) and starts the
 * worker threads. Logs one "listening" line per listener. Returns 0, or a negative code and
 * *err ("bind 127.0.0.1:9080: Address already in use"). */
int tp_server_start(tp_server_t *srv, char **err);

/* The addresses actually bound, as JSON array of "host:port" strings (new reference). */
json_t *tp_server_listen_addresses(const tp_server_t *srv);

/* Requests currently being handled, over all workers. Thread-safe. */
int64_t tp_server_inflight(const tp_server_t *srv);

/* Runs fn(worker, arg) on every worker's own thread. When all have run, done(done_data) runs on
 * `loop` (call this from the thread that runs `loop`; loop may be NULL when done is NULL). fn
 * must not block. Before start or after stop, fn runs at once on the caller's thread. */
void tp_server_each_worker(tp_server_t *srv, void (*fn)(tp_worker_t *w, void *arg), void *arg, uv_loop_t *loop,
                           void (*done)(void *done_data), void *done_data);

/* Begins a graceful shutdown: every worker closes its listening sockets and asks its
 * connections to close once their requests finish (HTTP/2 GOAWAY, no more keep-alive, also for
 * requests already in flight); /readyz answers 503 "draining" from now on. Returns at once;
 * closed(data) runs on `loop` once every worker has closed its listeners. */
void tp_server_begin_shutdown(tp_server_t *srv, uv_loop_t *loop, void (*closed)(void *data), void *data);

/* True when no request is in flight and either no connection is open or none has started or
 * finished a request for idle_ms (idle HTTP/1 keep-alive connections would otherwise hold a
 * shutdown until their timeout). Thread-safe. */
bool tp_server_drained(const tp_server_t *srv, int64_t idle_ms);

/* True once tp_server_begin_shutdown was called. Thread-safe. */
bool tp_server_draining(const tp_server_t *srv);

/* Stops every worker loop and joins the threads. Requests still in flight are abandoned (their
 * connections are dropped with the process). Call after the shutdown grace period or when
 * tp_server_inflight reaches 0. */
void tp_server_stop(tp_server_t *srv);

/* Frees the server after tp_server_stop (or when it was never started). */
void tp_server_free(tp_server_t *srv);

/* The error envelope writer in force (for http.c). */
tp_error_fn tp__server_error_fn(const tp_server_t *srv);

/* Accessors. */
const char *tp_server_name(const tp_server_t *srv);
unsigned tp_server_worker_count(const tp_server_t *srv);
unsigned tp_worker_id(const tp_worker_t *w); /* 0 .. worker_count-1 */
uv_loop_t *tp_worker_loop(tp_worker_t *w);
h2o_context_t *tp_worker_h2o(tp_worker_t *w);
tp_server_t *tp_worker_server(tp_worker_t *w);

#endif
