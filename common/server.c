#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "mem.h"

#define LISTEN_BACKLOG 1024 /* the kernel caps it at net.core.somaxconn */
#define MAX_ROUTES     64
#define MAX_CHECKS     16
/* h2o reads a whole request body before any handler runs, and answers a body over its own cap
 * itself, in plain text and before a request id exists. So h2o gets this many times
 * common.max_request_size as its cap, and the configured limit is enforced in on_req, where the
 * plane's error envelope is known. What remains: a body over the larger cap (or one declared
 * over it in Content-Length) still gets h2o's plain-text 413, logged and counted as route "h2o".
 * The cost: a request that will be refused may hold up to this many times the limit in memory
 * while it is read. */
#define ENTITY_CAP_FACTOR 2

typedef struct tp_route {
    const char *method; /* NULL: any */
    const char *path;
    size_t path_len;
    bool prefix;
    tp_route_fn fn;
    void *data;
} tp_route_t;

typedef struct tp_ready_check {
    const char *name;
    tp_ready_fn fn;
    void *data;
} tp_ready_check_t;

/* A run of tp_server_each_worker: counts the workers still to run, then wakes the main loop. */
typedef struct tp_fanout {
    void (*fn)(tp_worker_t *w, void *arg);
    void *arg;
    void (*done)(void *done_data);
    void *done_data;
    _Atomic unsigned remaining;
    uv_loop_t *loop;  /* the caller's loop, or NULL when nobody waits for completion */
    uv_async_t async; /* on loop; the fanout is freed in its close callback */
} tp_fanout_t;

typedef struct tp_task {
    tp_fanout_t *fanout;
    struct tp_task *next;
} tp_task_t;

typedef struct tp_listen_sock {
    uv_tcp_t tcp; /* first: the handle's address is the struct's */
    tp_worker_t *worker;
    h2o_accept_ctx_t accept;
    bool open;
} tp_listen_sock_t;

struct tp_worker {
    tp_server_t *server;
    unsigned id;
    pthread_t thread;
    bool thread_started;
    uv_loop_t loop;
    h2o_context_t ctx;
    tp_listen_sock_t *socks; /* one per listener */
    uv_async_t wake;         /* runs queued tasks, and stops the loop when asked */
    pthread_mutex_t lock;    /* guards tasks and stop */
    tp_task_t *tasks_head, *tasks_tail;
    bool stop;
    bool initialised; /* its loop and handles exist (start-up may fail part-way) */
    _Atomic int64_t inflight;
    _Atomic int64_t connections; /* accepted and not yet closed */
    uint64_t rng[2];             /* request-id generator state; only this worker's thread touches it */
};

typedef struct tp_listener {
    const tp_listener_config_t *cfg;
    SSL_CTX *ssl_ctx; /* NULL for plain HTTP */
    int port;         /* the port actually bound */
    int *fds;         /* one SO_REUSEPORT socket per worker, until the worker opens it */
} tp_listener_t;

typedef struct tp_root_handler {
    h2o_handler_t super;
    tp_server_t *server;
} tp_root_handler_t;

typedef struct tp_logger {
    h2o_logger_t super;
    tp_server_t *server;
} tp_logger_t;

struct tp_server {
    char *name;
    const tp_config_t *cfg;
    const tp_plane_config_t *plane;
    tp_metrics_t *metrics;
    h2o_globalconf_t h2o_config;
    h2o_hostconf_t *hostconf;
    tp_listener_t *listeners;
    size_t num_listeners;
    tp_worker_t *workers;
    unsigned num_workers;
    tp_route_t routes[MAX_ROUTES];
    size_t num_routes;
    tp_ready_check_t checks[MAX_CHECKS];
    size_t num_checks;
    tp_error_fn error_fn;
    _Atomic bool draining;
    _Atomic int64_t last_activity_ms; /* CLOCK_MONOTONIC ms at which a request last started or ended */
    bool started, stopped;
    tp_metric_t *m_requests;
    tp_metric_t *m_duration;
    tp_metric_t *m_inflight;
};

/* A server whose workers ran is never freed: a stopped h2o 2.2 context may still own idle
 * connections that cannot be closed from outside, and the process exits right after stopping.
 * Such servers stay reachable from here so that leak checkers do not report them. */
static tp_server_t *retired_servers[4];

static int64_t
now_ms_mono(void)
{
    return (int64_t)(tp_mono_ns() / 1000000u);
}

/* ---- request ids ---- */

static uint64_t
rng_next(uint64_t s[2])
{
    /* xorshift128+: fast, and request ids need uniqueness, not secrecy. */
    uint64_t x = s[0], y = s[1];
    s[0] = y;
    x ^= x << 23;
    s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return s[1] + y;
}

static bool
request_id_is_sane(h2o_iovec_t v)
{
    if (v.len == 0 || v.len > TP_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.base[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                  c == '.' || c == ':';
        if (!ok)
            return false;
    }
    return true;
}

static void
assign_request_id(tp_request_t *r)
{
    h2o_iovec_t given = tp_http_header(r, "x-request-id");
    if (request_id_is_sane(given)) {
        memcpy(r->id, given.base, given.len);
        r->id[given.len] = '\0';
    } else {
        uint64_t a = rng_next(r->worker->rng), b = rng_next(r->worker->rng);
        snprintf(r->id, sizeof(r->id), "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
    }
    h2o_add_header_by_str(&r->req->pool, &r->req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, r->id,
                          strlen(r->id));
}

/* ---- per-request accounting ---- */

static const char *
method_label(h2o_iovec_t m)
{
    static const char *const known[] = { "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS" };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (h2o_memis(m.base, m.len, known[i], strlen(known[i])))
            return known[i];
    }
    return "other"; /* clients choose methods: keep the label set bounded */
}

static void
on_request_dispose(void *p)
{
    tp_request_t *r = p;
    tp_server_t *srv = r->server;
    h2o_req_t *req = r->req;
    /* 0 means the client went away before any response head was sent (nginx logs 499). */
    int status = req->res.status != 0 ? req->res.status : 499;
    double seconds = (double)(tp_mono_ns() - r->start_ns) / 1e9;
    char status_str[8];
    snprintf(status_str, sizeof(status_str), "%d", status);
    const char *method = method_label(req->method);

    tp_metric_add(srv->m_requests, (const char *[]){ r->route, method, status_str }, 1);
    tp_metric_observe(srv->m_duration, (const char *[]){ r->route }, seconds);
    tp_metric_add(srv->m_inflight, NULL, -1);
    atomic_fetch_sub(&r->worker->inflight, 1);
    atomic_store(&srv->last_activity_ms, now_ms_mono());

    if (!tp_log_enabled(TP_LOG_INFO))
        return; /* no access log at this level: do not build the line */
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len; /* queries may hold secrets */
    json_t *f = json_object();
    json_object_set_new(f, "type", json_string("access"));
    json_object_set_new(f, "method", tp_log_string(req->method.base, req->method.len));
    json_object_set_new(f, "path", tp_log_string(req->path.base, path_len));
    json_object_set_new(f, "status", json_integer(status));
    json_object_set_new(f, "bytes", json_integer((json_int_t)req->bytes_sent));
    json_object_set_new(f, "duration_ms", json_real(seconds * 1000.0));
    json_object_set_new(f, "route", json_string(r->route));
    json_object_set_new(f, "principal", r->principal != NULL ? json_string(r->principal) : json_null());
    tp_log_fields(TP_LOG_INFO, r->id, "request", f);
}

/* ---- routing ---- */

static bool
route_matches_path(const tp_route_t *route, h2o_iovec_t path)
{
    if (path.len == route->path_len)
        return memcmp(path.base, route->path, path.len) == 0;
    return route->prefix && path.len > route->path_len && memcmp(path.base, route->path, route->path_len) == 0 &&
           path.base[route->path_len] == '/';
}

/* True when the route takes this method; HEAD is served by GET routes (h2o drops the body). */
static bool
route_takes_method(const tp_route_t *route, h2o_iovec_t method)
{
    if (route->method == NULL || h2o_memis(method.base, method.len, route->method, strlen(route->method)))
        return true;
    return strcmp(route->method, "GET") == 0 && h2o_memis(method.base, method.len, H2O_STRLIT("HEAD"));
}

/* Answers 405 with the Allow header listing what the path takes. */
static void
method_not_allowed(tp_request_t *r, h2o_iovec_t path)
{
    tp_server_t *srv = r->server;
    char allow[128] = "";
    for (size_t i = 0; i < srv->num_routes; i++) {
        const tp_route_t *route = &srv->routes[i];
        if (route->method == NULL || !route_matches_path(route, path) || strstr(allow, route->method) != NULL)
            continue;
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof(allow) - used, "%s%s%s", used != 0 ? ", " : "", route->method,
                 strcmp(route->method, "GET") == 0 ? ", HEAD" : "");
    }
    tp_http_add_header(r, "allow", allow);
    tp_http_error(r, 405, "method_not_allowed", "this method is not allowed on this path");
}

/* Answers 413 in the plane's envelope for a body over common.max_request_size (see
 * ENTITY_CAP_FACTOR for the bodies h2o still refuses itself). */
static void
request_too_large(tp_request_t *r)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "the request body is larger than the limit of %lld bytes",
             (long long)r->server->cfg->common.max_request_size);
    tp_http_error(r, 413, "request_too_large", msg);
}

static int
on_req(h2o_handler_t *self, h2o_req_t *req)
{
    tp_server_t *srv = ((tp_root_handler_t *)self)->server;
    tp_worker_t *w = H2O_STRUCT_FROM_MEMBER(tp_worker_t, ctx, req->conn->ctx);
    /* Lives until the pool is cleared. Never h2o_mem_addref_shared it: its dispose must run while
     * the request is still alive. */
    tp_request_t *r = h2o_mem_alloc_shared(&req->pool, sizeof(*r), on_request_dispose);
    memset(r, 0, sizeof(*r));
    r->req = req;
    r->server = srv;
    r->worker = w;
    r->route = "unmatched";
    r->start_ns = tp_mono_ns();
    atomic_fetch_add(&w->inflight, 1);
    atomic_store(&srv->last_activity_ms, (int64_t)(r->start_ns / 1000000u));
    tp_metric_add(srv->m_inflight, NULL, 1);
    assign_request_id(r);
    if (atomic_load(&srv->draining))
        req->http1_is_persistent = 0; /* let HTTP/1 clients go once this response is done */

    h2o_iovec_t path = req->path_normalized;
    bool path_known = false;
    for (size_t i = 0; i < srv->num_routes; i++) {
        const tp_route_t *route = &srv->routes[i];
        if (!route_matches_path(route, path))
            continue;
        path_known = true;
        if (!route_takes_method(route, req->method))
            continue;
        r->route = route->path;
        if (req->entity.base != NULL && req->entity.len > (size_t)srv->cfg->common.max_request_size) {
            request_too_large(r);
            return 0;
        }
        return route->fn(r, route->data);
    }
    if (path_known)
        method_not_allowed(r, path);
    else
        tp_http_error(r, 404, "not_found", "no such endpoint");
    return 0;
}

/* Requests that h2o answers itself (a malformed request, a body over its cap) never
 * reach on_req; this logger gives them an access-log line and a count, as route "h2o". Requests
 * that did reach on_req carry our x-request-id and are accounted for by on_request_dispose. */
static void
log_h2o_answered(h2o_logger_t *self, h2o_req_t *req)
{
    tp_server_t *srv = ((tp_logger_t *)self)->server;
    if (h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1) >= 0)
        return;
    int status = req->res.status != 0 ? req->res.status : 499;
    char status_str[8];
    snprintf(status_str, sizeof(status_str), "%d", status);
    tp_metric_add(srv->m_requests, (const char *[]){ "h2o", method_label(req->method), status_str }, 1);
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    json_t *f = json_object();
    json_object_set_new(f, "type", json_string("access"));
    json_object_set_new(f, "method", tp_log_string(req->method.base, req->method.len));
    json_object_set_new(f, "path", tp_log_string(req->path.base, path_len));
    json_object_set_new(f, "status", json_integer(status));
    json_object_set_new(f, "bytes", json_integer((json_int_t)req->bytes_sent));
    json_object_set_new(f, "route", json_string("h2o"));
    tp_log_fields(TP_LOG_INFO, NULL, "request", f);
}

void
tp_server_route(tp_server_t *srv, const char *method, const char *path, bool prefix, tp_route_fn fn, void *data)
{
    if (srv->num_routes == MAX_ROUTES)
        tp_fatal("too many routes");
    srv->routes[srv->num_routes++] = (tp_route_t){
        .method = method, .path = path, .path_len = strlen(path), .prefix = prefix, .fn = fn, .data = data
    };
}

void
tp_server_set_error_fn(tp_server_t *srv, tp_error_fn fn)
{
    srv->error_fn = fn != NULL ? fn : tp_http_default_error;
}

void
tp_server_add_ready_check(tp_server_t *srv, const char *name, tp_ready_fn fn, void *data)
{
    if (srv->num_checks == MAX_CHECKS)
        tp_fatal("too many readiness checks");
    srv->checks[srv->num_checks++] = (tp_ready_check_t){ .name = name, .fn = fn, .data = data };
}

/* ---- the common routes ---- */

static int
handle_healthz(tp_request_t *r, void *data)
{
    json_t *body = json_pack("{s:s}", "status", "ok");
    tp_http_send_json(r, 200, body);
    return 0;
}

static int
handle_readyz(tp_request_t *r, void *data)
{
    tp_server_t *srv = r->server;
    json_t *checks = json_object();
    bool ready = true;
    for (size_t i = 0; i < srv->num_checks; i++) {
        const char *detail = NULL;
        bool ok = srv->checks[i].fn(srv->checks[i].data, &detail);
        ready = ready && ok;
        json_object_set_new(checks, srv->checks[i].name, json_string(ok ? "ok" : (detail ? detail : "failed")));
    }
    if (atomic_load(&srv->draining)) {
        ready = false;
        json_object_set_new(checks, "shutdown", json_string("draining"));
    }
    json_t *body = json_pack("{s:s, s:o}", "status", ready ? "ready" : "not ready", "checks", checks);
    tp_http_send_json(r, ready ? 200 : 503, body);
    return 0;
}

static int
handle_metrics(tp_request_t *r, void *data)
{
    size_t len;
    char *text = tp_metrics_render(r->server->metrics, &len);
    tp_http_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return 0;
}

/* GET /debug/sleep?ms=N (only with common.debug_endpoints): answers after N ms without blocking
 * the worker, so that drills and tests can hold a request in flight (graceful shutdown, load
 * balancer draining). */

#define DEBUG_SLEEP_MAX_MS 60000

typedef struct debug_sleep {
    uv_timer_t timer;
    tp_request_t *r; /* NULL once the request was disposed (client gone, or the process stopping) */
    uint64_t ms;
} debug_sleep_t;

static void
on_debug_sleep_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
on_debug_sleep_dispose(void *p)
{
    debug_sleep_t *s = *(debug_sleep_t **)p;
    s->r = NULL;
    uv_close((uv_handle_t *)&s->timer, on_debug_sleep_closed);
}

static void
on_debug_sleep_done(uv_timer_t *t)
{
    debug_sleep_t *s = t->data;
    if (s->r != NULL)
        tp_http_send_json(s->r, 200, json_pack("{s:I}", "slept_ms", (json_int_t)s->ms));
}

static int
handle_debug_sleep(tp_request_t *r, void *data)
{
    h2o_req_t *req = r->req;
    uint64_t ms = 0;
    if (req->query_at != SIZE_MAX) {
        const char *q = req->path.base + req->query_at + 1;
        size_t len = req->path.len - req->query_at - 1;
        if (len > 3 && memcmp(q, "ms=", 3) == 0) {
            for (size_t i = 3; i < len && q[i] >= '0' && q[i] <= '9' && ms <= DEBUG_SLEEP_MAX_MS; i++)
                ms = ms * 10 + (uint64_t)(q[i] - '0');
        }
    }
    if (ms > DEBUG_SLEEP_MAX_MS) {
        tp_http_error(r, 400, "invalid_parameter", "ms must be at most 60000");
        return 0;
    }
    debug_sleep_t *s = tp_calloc(1, sizeof(*s));
    s->r = r;
    s->ms = ms;
    uv_timer_init(tp_worker_loop(r->worker), &s->timer);
    s->timer.data = s;
    debug_sleep_t **link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), on_debug_sleep_dispose);
    *link = s;
    uv_timer_start(&s->timer, on_debug_sleep_done, ms, 0);
    tp_log_fields(TP_LOG_INFO, r->id, "sleeping", json_pack("{s:I}", "ms", (json_int_t)ms));
    return 0;
}

/* ---- construction ---- */

static SSL_CTX *
create_ssl_ctx(const tp_listener_config_t *l, char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        *err = tp_strdup("SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    char buf[256];
    if (SSL_CTX_use_certificate_chain_file(ctx, l->tls_cert) != 1) {
        ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
        *err = tp_sprintf("tls_cert %s: %s", l->tls_cert, buf);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, l->tls_key, SSL_FILETYPE_PEM) != 1) {
        ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
        *err = tp_sprintf("tls_key %s: %s", l->tls_key, buf);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        *err = tp_sprintf("tls_key %s does not match tls_cert %s", l->tls_key, l->tls_cert);
        goto fail;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

unsigned
tp_server_shards(const tp_plane_config_t *plane)
{
    /* uv_available_parallelism honours CPU affinity (taskset, container cpusets). */
    unsigned workers = plane->workers > 0 ? (unsigned)plane->workers : uv_available_parallelism();
    return (workers > 0 ? workers : 1) + 1;
}

static void
register_metrics(tp_server_t *srv)
{
    srv->m_requests = tp_metrics_counter(srv->metrics, "triplane_http_requests_total",
                                         "HTTP requests handled, by route, method and status.",
                                         (const char *[]){ "route", "method", "status", NULL });
    srv->m_duration = tp_metrics_histogram(srv->metrics, "triplane_http_request_duration_seconds",
                                           "Time from the start of handling to the end of the response, by route.",
                                           (const char *[]){ "route", NULL }, tp_metrics_latency_buckets,
                                           tp_metrics_latency_buckets_count);
    srv->m_inflight =
        tp_metrics_gauge(srv->metrics, "triplane_http_requests_in_flight", "HTTP requests being handled now.", NULL);
}

tp_server_t *
tp_server_new(const char *name, const tp_config_t *cfg, const tp_plane_config_t *plane, tp_metrics_t *metrics,
              char **err)
{
    tp_server_t *srv = tp_calloc(1, sizeof(*srv));
    srv->name = tp_strdup(name);
    srv->cfg = cfg;
    srv->plane = plane;
    srv->metrics = metrics;
    srv->error_fn = tp_http_default_error;
    srv->num_workers = tp_server_shards(plane) - 1;

    srv->num_listeners = plane->listen_count;
    srv->listeners = tp_calloc(srv->num_listeners, sizeof(*srv->listeners));
    for (size_t i = 0; i < srv->num_listeners; i++) {
        tp_listener_t *l = &srv->listeners[i];
        l->cfg = &plane->listen[i];
        if (l->cfg->tls_cert != NULL && (l->ssl_ctx = create_ssl_ctx(l->cfg, err)) == NULL) {
            tp_server_free(srv);
            return NULL;
        }
    }

    h2o_config_init(&srv->h2o_config);
    srv->h2o_config.server_name = h2o_iovec_init(H2O_STRLIT("triplane"));
    size_t limit = (size_t)cfg->common.max_request_size;
    srv->h2o_config.max_request_entity_size =
        limit <= SIZE_MAX / ENTITY_CAP_FACTOR ? limit * ENTITY_CAP_FACTOR : SIZE_MAX;
    srv->h2o_config.http1.req_timeout = (uint64_t)cfg->common.request_timeout_ms;
    srv->h2o_config.http2.idle_timeout = (uint64_t)cfg->common.idle_timeout_ms;
    srv->h2o_config.http2.graceful_shutdown_timeout = (uint64_t)cfg->common.shutdown_timeout_ms;
    srv->hostconf = h2o_config_register_host(&srv->h2o_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(srv->hostconf, "/", 0);
    tp_root_handler_t *root = (tp_root_handler_t *)h2o_create_handler(pathconf, sizeof(*root));
    root->super.on_req = on_req;
    root->server = srv;
    tp_logger_t *logger = (tp_logger_t *)h2o_create_logger(pathconf, sizeof(*logger));
    logger->super.log_access = log_h2o_answered;
    logger->server = srv;
    logger = (tp_logger_t *)h2o_create_logger(&srv->hostconf->fallback_path, sizeof(*logger));
    logger->super.log_access = log_h2o_answered;
    logger->server = srv;

    register_metrics(srv);
    tp_server_route(srv, "GET", "/healthz", false, handle_healthz, NULL);
    tp_server_route(srv, "GET", "/readyz", false, handle_readyz, NULL);
    tp_server_route(srv, "GET", "/metrics", false, handle_metrics, NULL);
    if (cfg->common.debug_endpoints)
        tp_server_route(srv, "GET", "/debug/sleep", false, handle_debug_sleep, NULL);
    return srv;
}

/* ---- binding ---- */

static int
make_socket(const struct addrinfo *ai, bool reuseport, int *out, char **err, const char *where)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        *err = tp_sprintf("socket %s: %s", where, strerror(errno));
        return -errno;
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) {
        int rv = -errno;
        *err = tp_sprintf("setsockopt SO_REUSEPORT %s: %s", where, strerror(errno));
        close(fd);
        return rv;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        int rv = -errno;
        *err = tp_sprintf("bind %s: %s", where, strerror(errno));
        close(fd);
        return rv;
    }
    *out = fd;
    return 0;
}

static void
set_port(struct sockaddr *sa, int port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

/* Binds one SO_REUSEPORT socket per worker for listener l. A probe socket without
 * SO_REUSEPORT goes first: it fails when anyone (even another process of ours) holds the port,
 * so two daemons never silently share a port, and with port 0 it picks the free port. */
static int
bind_listener(tp_server_t *srv, tp_listener_t *l, char **err)
{
    char where[300], portstr[8];
    snprintf(where, sizeof(where), "%s:%d", l->cfg->host, l->cfg->port);
    snprintf(portstr, sizeof(portstr), "%d", l->cfg->port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    int rv = getaddrinfo(l->cfg->host, portstr, &hints, &ai);
    if (rv != 0) {
        *err = tp_sprintf("resolve %s: %s", where, gai_strerror(rv));
        return -EINVAL;
    }
    int probe;
    if ((rv = make_socket(ai, false, &probe, err, where)) != 0)
        goto out;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    getsockname(probe, (struct sockaddr *)&ss, &sslen);
    l->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                            : ((struct sockaddr_in6 *)&ss)->sin6_port);
    close(probe);
    set_port(ai->ai_addr, l->port);
    snprintf(where, sizeof(where), "%s:%d", l->cfg->host, l->port);

    l->fds = tp_malloc(srv->num_workers * sizeof(int));
    for (unsigned i = 0; i < srv->num_workers; i++)
        l->fds[i] = -1;
    for (unsigned i = 0; i < srv->num_workers; i++) {
        if ((rv = make_socket(ai, true, &l->fds[i], err, where)) != 0)
            goto out;
        if (listen(l->fds[i], LISTEN_BACKLOG) != 0) {
            rv = -errno;
            *err = tp_sprintf("listen %s: %s", where, strerror(errno));
            goto out;
        }
    }
    tp_log_fields(TP_LOG_INFO, NULL, "listening",
                  json_pack("{s:s, s:i, s:b, s:i}", "host", l->cfg->host, "port", l->port, "tls", l->ssl_ctx != NULL,
                            "workers", srv->num_workers));
out:
    freeaddrinfo(ai);
    return rv;
}

/* ---- workers ---- */

/* An accepted connection's handle. h2o owns handle->data, so the worker rides alongside. */
typedef struct tp_conn {
    uv_tcp_t tcp; /* first: h2o's close callback gets the handle's address */
    tp_worker_t *worker;
} tp_conn_t;

static void
on_connection_closed(uv_handle_t *h)
{
    tp_conn_t *conn = (tp_conn_t *)h;
    atomic_fetch_sub(&conn->worker->connections, 1);
    free(conn);
}

static void
on_connection(uv_stream_t *listener, int status)
{
    tp_listen_sock_t *ls = (tp_listen_sock_t *)listener;
    if (status != 0)
        return;
    tp_conn_t *conn = tp_malloc(sizeof(*conn));
    conn->worker = ls->worker;
    uv_tcp_init(listener->loop, &conn->tcp);
    if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0) {
        uv_close((uv_handle_t *)&conn->tcp, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    atomic_fetch_add(&ls->worker->connections, 1);
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&conn->tcp, on_connection_closed);
    h2o_accept(&ls->accept, sock);
}

static void
run_tasks(tp_worker_t *w)
{
    pthread_mutex_lock(&w->lock);
    tp_task_t *t = w->tasks_head;
    w->tasks_head = w->tasks_tail = NULL;
    bool stop = w->stop;
    pthread_mutex_unlock(&w->lock);
    while (t != NULL) {
        tp_task_t *next = t->next;
        tp_fanout_t *f = t->fanout;
        f->fn(w, f->arg);
        if (atomic_fetch_sub(&f->remaining, 1) == 1) {
            if (f->loop != NULL)
                uv_async_send(&f->async);
            else
                free(f); /* nobody waits for this one */
        }
        free(t);
        t = next;
    }
    if (stop && !w->server->stopped)
        uv_stop(&w->loop);
}

static void
on_wake(uv_async_t *async)
{
    run_tasks(async->data);
}

static void *
worker_main(void *arg)
{
    tp_worker_t *w = arg;
    tp_metrics_bind_shard(w->id + 1);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int
init_worker(tp_server_t *srv, tp_worker_t *w, unsigned id, char **err)
{
    w->server = srv;
    w->id = id;
    uint64_t seed[2];
    if (getrandom(seed, sizeof(seed), 0) != sizeof(seed))
        seed[0] = tp_mono_ns(), seed[1] = (uint64_t)getpid() << 20 | id;
    w->rng[0] = seed[0] | 1;
    w->rng[1] = seed[1];
    pthread_mutex_init(&w->lock, NULL);
    int rv = uv_loop_init(&w->loop);
    if (rv != 0) {
        *err = tp_sprintf("uv_loop_init: %s", uv_strerror(rv));
        return rv;
    }
    h2o_context_init(&w->ctx, &w->loop, &srv->h2o_config);
    uv_async_init(&w->loop, &w->wake, on_wake);
    w->wake.data = w;
    w->initialised = true;
    w->socks = tp_calloc(srv->num_listeners, sizeof(*w->socks));
    for (size_t i = 0; i < srv->num_listeners; i++) {
        tp_listen_sock_t *ls = &w->socks[i];
        tp_listener_t *l = &srv->listeners[i];
        ls->worker = w;
        ls->accept = (h2o_accept_ctx_t){ .ctx = &w->ctx, .hosts = srv->h2o_config.hosts, .ssl_ctx = l->ssl_ctx };
        uv_tcp_init(&w->loop, &ls->tcp);
        rv = uv_tcp_open(&ls->tcp, l->fds[id]);
        if (rv == 0)
            rv = uv_listen((uv_stream_t *)&ls->tcp, LISTEN_BACKLOG, on_connection);
        if (rv != 0) {
            *err = tp_sprintf("listen %s:%d: %s", l->cfg->host, l->port, uv_strerror(rv));
            return rv;
        }
        l->fds[id] = -1; /* the handle owns it now */
        ls->open = true;
    }
    return 0;
}

int
tp_server_start(tp_server_t *srv, char **err)
{
    int rv;
    for (size_t i = 0; i < srv->num_listeners; i++) {
        if ((rv = bind_listener(srv, &srv->listeners[i], err)) != 0)
            return rv;
    }
    srv->workers = tp_calloc(srv->num_workers, sizeof(*srv->workers));
    srv->started = true; /* from here on, a failure leaves the server to be retired, not freed */
    for (unsigned i = 0; i < srv->num_workers; i++) {
        if ((rv = init_worker(srv, &srv->workers[i], i, err)) != 0)
            return rv;
    }
    for (unsigned i = 0; i < srv->num_workers; i++) {
        tp_worker_t *w = &srv->workers[i];
        if ((rv = pthread_create(&w->thread, NULL, worker_main, w)) != 0) {
            *err = tp_sprintf("pthread_create: %s", strerror(rv));
            return -rv;
        }
        w->thread_started = true;
    }
    return 0;
}

json_t *
tp_server_listen_addresses(const tp_server_t *srv)
{
    json_t *a = json_array();
    for (size_t i = 0; i < srv->num_listeners; i++) {
        const tp_listener_t *l = &srv->listeners[i];
        char buf[300];
        snprintf(buf, sizeof(buf), "%s://%s:%d", l->ssl_ctx != NULL ? "https" : "http", l->cfg->host,
                 l->port != 0 ? l->port : l->cfg->port);
        json_array_append_new(a, json_string(buf));
    }
    return a;
}

int64_t
tp_server_inflight(const tp_server_t *srv)
{
    int64_t n = 0;
    if (srv->workers == NULL)
        return 0;
    for (unsigned i = 0; i < srv->num_workers; i++)
        n += atomic_load(&srv->workers[i].inflight);
    return n;
}

/* ---- running code on workers ---- */

static void
on_fanout_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
on_fanout_done(uv_async_t *async)
{
    tp_fanout_t *f = async->data;
    if (f->done != NULL)
        f->done(f->done_data);
    uv_close((uv_handle_t *)&f->async, on_fanout_closed);
}

void
tp_server_each_worker(tp_server_t *srv, void (*fn)(tp_worker_t *w, void *arg), void *arg, uv_loop_t *loop,
                      void (*done)(void *done_data), void *done_data)
{
    if (!srv->started || srv->stopped) {
        for (unsigned i = 0; srv->workers != NULL && i < srv->num_workers; i++) {
            if (srv->workers[i].initialised)
                fn(&srv->workers[i], arg);
        }
        if (done != NULL)
            done(done_data);
        return;
    }
    tp_fanout_t *f = tp_calloc(1, sizeof(*f));
    f->fn = fn;
    f->arg = arg;
    f->done = done;
    f->done_data = done_data;
    atomic_store(&f->remaining, srv->num_workers);
    f->loop = loop;
    if (loop != NULL) {
        uv_async_init(loop, &f->async, on_fanout_done);
        f->async.data = f;
    }
    for (unsigned i = 0; i < srv->num_workers; i++) {
        tp_worker_t *w = &srv->workers[i];
        tp_task_t *t = tp_calloc(1, sizeof(*t));
        t->fanout = f;
        pthread_mutex_lock(&w->lock);
        if (w->tasks_tail != NULL)
            w->tasks_tail->next = t;
        else
            w->tasks_head = t;
        w->tasks_tail = t;
        pthread_mutex_unlock(&w->lock);
        uv_async_send(&w->wake);
    }
}

/* ---- shutdown ---- */

static int
end_keepalive(h2o_req_t *req, void *data)
{
    req->http1_is_persistent = 0;
    return 0;
}

static void
close_listeners(tp_worker_t *w, void *arg)
{
    h2o_protocol_callbacks_t *http1 = &w->server->h2o_config.http1.callbacks;
    if (http1->foreach_request != NULL)
        http1->foreach_request(&w->ctx, end_keepalive, NULL);
    for (size_t i = 0; i < w->server->num_listeners; i++) {
        tp_listen_sock_t *ls = &w->socks[i];
        if (ls->open) {
            ls->open = false;
            uv_close((uv_handle_t *)&ls->tcp, NULL);
        }
    }
    h2o_context_request_shutdown(&w->ctx);
}

void
tp_server_begin_shutdown(tp_server_t *srv, uv_loop_t *loop, void (*closed)(void *data), void *data)
{
    if (atomic_exchange(&srv->draining, true))
        return;
    tp_server_each_worker(srv, close_listeners, NULL, loop, closed, data);
}

bool
tp_server_drained(const tp_server_t *srv, int64_t idle_ms)
{
    if (srv->workers == NULL)
        return true;
    int64_t inflight = 0, connections = 0;
    for (unsigned i = 0; i < srv->num_workers; i++) {
        inflight += atomic_load(&srv->workers[i].inflight);
        connections += atomic_load(&srv->workers[i].connections);
    }
    if (inflight != 0)
        return false;
    return connections == 0 || now_ms_mono() - atomic_load(&srv->last_activity_ms) >= idle_ms;
}

bool
tp_server_draining(const tp_server_t *srv)
{
    return atomic_load(&srv->draining);
}

void
tp_server_stop(tp_server_t *srv)
{
    if (!srv->started || srv->stopped)
        return;
    for (unsigned i = 0; i < srv->num_workers; i++) {
        tp_worker_t *w = &srv->workers[i];
        if (!w->thread_started)
            continue;
        pthread_mutex_lock(&w->lock);
        w->stop = true;
        pthread_mutex_unlock(&w->lock);
        uv_async_send(&w->wake);
    }
    for (unsigned i = 0; i < srv->num_workers; i++) {
        if (srv->workers[i].thread_started)
            pthread_join(srv->workers[i].thread, NULL);
    }
    srv->stopped = true;
    /* Work queued after a worker stopped still runs (here, on the caller's thread), so that every
     * tp_server_each_worker completes and its caller's loop can finish. */
    for (unsigned i = 0; i < srv->num_workers; i++) {
        if (srv->workers[i].initialised)
            run_tasks(&srv->workers[i]);
    }
}

void
tp_server_free(tp_server_t *srv)
{
    if (srv == NULL)
        return;
    if (srv->started) {
        for (size_t i = 0; i < sizeof(retired_servers) / sizeof(retired_servers[0]); i++) {
            if (retired_servers[i] == NULL) {
                retired_servers[i] = srv;
                break;
            }
        }
        return;
    }
    for (size_t i = 0; i < srv->num_listeners; i++) {
        tp_listener_t *l = &srv->listeners[i];
        for (unsigned j = 0; l->fds != NULL && j < srv->num_workers; j++) {
            if (l->fds[j] >= 0)
                close(l->fds[j]);
        }
        free(l->fds);
        SSL_CTX_free(l->ssl_ctx);
    }
    free(srv->listeners);
    if (srv->hostconf != NULL)
        h2o_config_dispose(&srv->h2o_config);
    free(srv->name);
    free(srv);
}

tp_error_fn
tp__server_error_fn(const tp_server_t *srv)
{
    return srv->error_fn;
}

const char *
tp_server_name(const tp_server_t *srv)
{
    return srv->name;
}

unsigned
tp_server_worker_count(const tp_server_t *srv)
{
    return srv->num_workers;
}

unsigned
tp_worker_id(const tp_worker_t *w)
{
    return w->id;
}

uv_loop_t *
tp_worker_loop(tp_worker_t *w)
{
    return &w->loop;
}

h2o_context_t *
tp_worker_h2o(tp_worker_t *w)
{
    return &w->ctx;
}

tp_server_t *
tp_worker_server(tp_worker_t *w)
{
    return w->server;
}
