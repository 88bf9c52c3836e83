/*
 * upstream.h — the HTTP/1.1 client the gateways use to call upstream servers: keep-alive pooling,
 * timeouts, cancellation, and streaming with backpressure, built on h2o 2.2's http1client.
 *
 * A tp_upstream_t is one base URL (http:// or https://host[:port][/prefix]) with its options.
 * Create it once, on any thread, and share it among the workers: a call runs on the loop of the
 * h2o context it is made on, from that worker thread only.
 *
 * Every worker has its own pool of keep-alive connections to the upstream, created at its first
 * call. (h2o 2.2's socket pool ties its expiry timer and clock to one loop, so a pool shared by
 * all workers would make the others read that loop's clock from their threads.) The connection
 * limit is therefore per worker.
 *
 * A call's life: tp_upstream_call → connect (or reuse a pooled connection), send the request →
 * on_head → on_body… → on_done. No callback runs before tp_upstream_call returns. on_done runs
 * exactly once unless the call is cancelled; after on_done returns, or once tp_upstream_cancel
 * is called, the call is gone and no callback of it runs again.
 *
 * HTTP/1.1 only (h2o 2.2 has no HTTP/2 client), and the request body is sent whole. The process
 * must ignore SIGPIPE (the daemons do at start-up): libuv writes to upstream sockets with write(2).
 */
#ifndef TP_UPSTREAM_H
#define TP_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

typedef struct tp_upstream tp_upstream_t;
typedef struct tp_upstream_call tp_upstream_call_t;

/* Defaults for options left at 0. */
#define TP_UPSTREAM_DEFAULT_MAX_CONNECTIONS 64 /* per worker */
#define TP_UPSTREAM_DEFAULT_KEEPALIVE_MS                                                                               \
    2000 /* under the 5 s of common servers (Node, uvicorn),                                                           \
            so we drop an idle connection before they do */
#define TP_UPSTREAM_DEFAULT_CONNECT_TIMEOUT_MS    10000
#define TP_UPSTREAM_DEFAULT_FIRST_BYTE_TIMEOUT_MS 60000
#define TP_UPSTREAM_DEFAULT_IDLE_TIMEOUT_MS       60000
/* Without total_timeout_ms, the longest a call can stay paused: h2o 2.2's own I/O timer, which
 * cannot be stopped from outside, runs on while a call is paused and ends it then. */
#define TP_UPSTREAM_MAX_PAUSE_MS (24 * 3600 * 1000)

/* A header to send. Neither part may contain CR, LF or NUL. */
typedef struct tp_upstream_header {
    h2o_iovec_t name;
    h2o_iovec_t value;
} tp_upstream_header_t;

typedef struct tp_upstream_options {
    unsigned max_connections;            /* connections per worker; more calls wait for one (0: default) */
    uint64_t keepalive_ms;               /* how long an idle connection stays pooled (0: default) */
    uint64_t connect_timeout_ms;         /* from the call to a connection ready to send on, including name
                                            resolution, TLS and any wait for a free connection (0: default) */
    uint64_t first_byte_timeout_ms;      /* from sending the request to the whole response head (0: default) */
    uint64_t idle_timeout_ms;            /* longest gap between body reads, not counted while paused (0: default) */
    uint64_t total_timeout_ms;           /* longest a whole call may take, paused or not (0: no limit) */
    const tp_upstream_header_t *headers; /* sent with every request, before the request's own, e.g. the
                                            upstream's Authorization; copied. Host, Content-Length and
                                            hop-by-hop headers are refused */
    size_t num_headers;
    const char *ca_file; /* PEM file of extra CAs to trust for https, besides the system store; NULL: none */
} tp_upstream_options_t;

/* Parses base_url ("http://host[:port][/prefix]" or "https://…"; no user info, query or fragment)
 * and creates an upstream. opts may be NULL for all defaults; nothing in it is kept (it is copied).
 * https verifies the peer against the system CA store (and ca_file) and checks that the
 * certificate names the host; the host must then be a name, not an IP address (h2o 2.2 matches
 * certificate names only). Returns NULL and *err (free() it) on failure, e.g.
 * "upstream URL \"ftp://x\": scheme must be http or https". */
tp_upstream_t *tp_upstream_new(const char *base_url, const tp_upstream_options_t *opts, char **err);

/* Frees the upstream. Call it once no call is in flight, after every worker that called through it
 * has either run tp_upstream_close_worker or stopped its loop for good (tp_server_stop). For the
 * latter, it closes their pooled connections itself. Any thread. NULL is a no-op. */
void tp_upstream_free(tp_upstream_t *up);

/* Releases the calling worker's share of `up`: closes its pooled connections and timers. Call it
 * on the thread that runs ctx->loop, with no call of that worker in flight. The loop finishes
 * releasing the memory on its next turns; a later call on ctx starts a new share. */
void tp_upstream_close_worker(tp_upstream_t *up, h2o_context_t *ctx);

/* The base URL as given to tp_upstream_new (for logs). */
const char *tp_upstream_url(const tp_upstream_t *up);

/* Calls in flight on all workers, from tp_upstream_call until on_done or tp_upstream_cancel.
 * Thread-safe (an atomic), for metrics. */
int64_t tp_upstream_in_flight(const tp_upstream_t *up);

typedef struct tp_upstream_request {
    const char *method;                  /* "GET", "POST", … */
    h2o_iovec_t path;                    /* appended to the base URL's prefix; starts with '/', may have a query */
    const tp_upstream_header_t *headers; /* Host, Content-Length and hop-by-hop headers (Connection,
                                            Transfer-Encoding, …) are dropped: this module writes those */
    size_t num_headers;
    h2o_iovec_t body; /* sent whole with a Content-Length; base NULL for no body */
} tp_upstream_request_t;

typedef struct tp_upstream_handlers {
    /* The response head (a final status: h2o skips 1xx). headers[i].name is lower-case and, for
     * known names, points at h2o's token (compare with H2O_TOKEN_CONTENT_TYPE->buf and so on).
     * Everything here is valid only during the callback: copy what is needed later. Return 0 to
     * go on, non-zero to cancel the call (as tp_upstream_cancel: on_done does not run). NULL:
     * accept any head. */
    int (*on_head)(tp_upstream_call_t *call, int status, const h2o_header_t *headers, size_t num_headers);
    /* Body bytes as they arrive (chunked encoding already decoded). The handler consumes all of
     * them: buf is valid only during the callback. It may pause, resume or cancel the call. */
    void (*on_body)(tp_upstream_call_t *call, const char *buf, size_t len);
    /* The end, exactly once unless cancelled: error is NULL when the whole response arrived, else
     * a short reason valid during the callback:
     *   "invalid request: …"                         (bad method, path or header)
     *   "connect: …"                                 (refused, name resolution, TLS verification)
     *   "timeout: connect", "timeout: no free connection", "timeout: no first byte",
     *   "timeout: idle", "timeout: total", "timeout: I/O" (h2o's own timer; see TP_UPSTREAM_MAX_PAUSE_MS)
     *   "connection closed while sending the request", "connection closed before the response head",
     *   "connection closed before the response ended"
     *   "bad response: …"                            (unparsable head, chunked encoding, …)
     * Note: h2o 2.2 reports a chunked body that the peer cut exactly at a chunk boundary as
     * complete (error NULL); protocols with an end marker (SSE's [DONE]) must check for it.
     * The call is freed when it returns: clear pointers to it. */
    void (*on_done)(tp_upstream_call_t *call, const char *error);
} tp_upstream_handlers_t;

/* Starts a request to `up` on the worker that owns ctx (call it on that worker's thread). req and
 * everything it points at are copied; h is copied; data is the caller's (see
 * tp_upstream_call_data). Never fails: problems, including an invalid request, come through
 * on_done, which (like every callback) runs only after this returns. The returned call is valid
 * until on_done returns or tp_upstream_cancel is called. */
tp_upstream_call_t *tp_upstream_call(tp_upstream_t *up, h2o_context_t *ctx, const tp_upstream_request_t *req,
                                     const tp_upstream_handlers_t *h, void *data);

/* The data given to tp_upstream_call. */
void *tp_upstream_call_data(const tp_upstream_call_t *call);

/* Abandons the call: no callback of it runs from now on, and it is freed. A connection in the
 * middle of a response is closed (it cannot be reused); one that is not yet used is returned.
 * May be called from the call's own callbacks (not after its on_done has returned). */
void tp_upstream_cancel(tp_upstream_call_t *call);

/* Backpressure. tp_upstream_pause stops reading the upstream's socket, so that the upstream
 * blocks once the socket buffers are full, and no on_body runs until tp_upstream_resume. The idle
 * timeout does not run while paused (total_timeout_ms does). on_done can still run while paused:
 * on a failure, or when the response ended with all of its bytes already delivered; bytes that
 * arrived with the end are held and delivered after resume, then on_done. Pausing before the head
 * takes effect at the body. Both may be called from the call's callbacks, and repeating one is a
 * no-op. */
void tp_upstream_pause(tp_upstream_call_t *call);
void tp_upstream_resume(tp_upstream_call_t *call);

#endif
