/*
 * upstream.c — see upstream.h.
 *
 * Each call owns one uv timer, used both for its deadlines (re-armed to the nearest one at every
 * state change) and to run deferred work on the next loop turn: starting the call (so that no
 * callback runs inside tp_upstream_call, and a connection just released reaches the pool before
 * the next call asks for one) and delivering bytes held while paused. The call is freed in the
 * timer's close callback.
 *
 * h2o's http1client frees its client itself after the callback that ends it, or on
 * h2o_http1client_cancel. While one of our h2o callbacks runs (call->in_cb), ending the call
 * therefore only marks it, and the callback hands the abort back to h2o through its return value.
 */
#include "upstream.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "mem.h"

/* h2o's I/O timer (one per worker share) is only a backstop: ours are shorter, so they fire first
 * and name the phase. This is the margin between the two. */
#define IO_TIMEOUT_MARGIN_MS 1000

typedef struct tp_upstream_local tp_upstream_local_t;
typedef struct tp_upstream_slot tp_upstream_slot_t;

/* One worker's share of an upstream. Used only on that worker's thread. */
struct tp_upstream_local {
    h2o_http1client_ctx_t client_ctx;
    h2o_timeout_t io_timeout; /* client_ctx.io_timeout */
    h2o_socketpool_t pool;
    uv_timer_t reaper;    /* never started; closing it tells when the loop has closed the rest */
    h2o_linklist_t queue; /* calls waiting for a connection, oldest first */
    unsigned active;      /* calls holding one of max_connections */
    unsigned calls;       /* calls not yet ended */
};

/* The list of worker shares, keyed by h2o context. Slots are only ever added (by the worker that
 * owns the context, with a release CAS) and freed by tp_upstream_free, so workers read the list
 * without a lock. slot->local is touched only by the owning worker. */
struct tp_upstream_slot {
    tp_upstream_slot_t *next;
    const h2o_context_t *ctx;
    tp_upstream_local_t *local; /* NULL after tp_upstream_close_worker */
};

struct tp_upstream {
    char *url;
    char *host; /* for connecting, SNI and the certificate check (IPv6 without brackets) */
    uint16_t port;
    bool https;
    char *authority; /* the Host header: host[:port] as written in the URL */
    char *prefix;    /* the URL's path without a trailing '/'; "" for none */
    char *headers;   /* the options' headers, rendered "Name: value\r\n…" */
    size_t headers_len;
    tp_upstream_options_t opts; /* with defaults filled in; headers and ca_file cleared */
    uint64_t io_timeout_ms;
    SSL_CTX *ssl_ctx; /* NULL for http */
    _Atomic int64_t in_flight;
    _Atomic(tp_upstream_slot_t *) slots;
};

typedef enum call_state {
    CALL_NEW,        /* the timer will start it */
    CALL_QUEUED,     /* waiting for a free connection */
    CALL_CONNECTING, /* connecting (or TLS) through h2o */
    CALL_AWAIT_HEAD, /* request handed to the socket, no head yet */
    CALL_BODY,       /* reading the body */
    CALL_ENDED_HELD, /* the response ended while paused; its last bytes wait in `held` */
    CALL_DONE,       /* ended; the timer is closing and will free the call */
} call_state_t;

struct tp_upstream_call {
    tp_upstream_t *up;
    tp_upstream_local_t *local;
    h2o_http1client_t *client; /* NULL before connecting and once h2o has (or will have) freed it */
    tp_upstream_handlers_t h;
    void *data;
    call_state_t state;
    uv_timer_t timer;
    h2o_linklist_t queued; /* in local->queue while CALL_QUEUED */
    uint64_t started_at;   /* uv_now at tp_upstream_call */
    uint64_t head_wait_from;
    uint64_t last_read_at;
    bool has_slot;     /* holds one of local->active */
    bool in_cb;        /* inside a callback of ours that h2o or deliver_pending called */
    bool kick;         /* the timer should run deferred work now */
    bool cancelled;    /* no more callbacks */
    bool paused;       /* the caller asked for no on_body */
    bool read_stopped; /* we stopped the socket's reading; saved_read restarts it */
    bool is_head;
    h2o_socket_cb saved_read;
    const char *invalid; /* why the request cannot be sent, or NULL */
    h2o_iovec_t reqbuf;  /* head and body, sent in one write */
    char *held;
    size_t held_len;
    char errbuf[256];
};

static void arm(tp_upstream_call_t *call);
static void start_call(tp_upstream_call_t *call);

/* ---- parsing and validation ---- */

static bool
is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool
is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return false;
    }
    return true;
}

static bool
is_header_value(h2o_iovec_t v)
{
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] == '\r' || v.base[i] == '\n' || v.base[i] == '\0')
            return false;
    }
    return true;
}

/* Bytes allowed in a request target: no controls, space or DEL (non-ASCII passes through). */
static bool
is_target(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* Headers this module writes itself, or that belong to one connection only. */
static bool
is_managed_header(h2o_iovec_t name)
{
    static const char *const names[] = { "host",       "content-length",   "connection",
                                         "keep-alive", "proxy-connection", "transfer-encoding",
                                         "te",         "trailer",          "upgrade" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (h2o_lcstris(name.base, name.len, names[i], strlen(names[i])))
            return true;
    }
    return false;
}

static bool
is_hostname(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.' ||
              c == '_'))
            return false;
    }
    return true;
}

static bool
is_ipv6_literal(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
            return false;
    }
    return true;
}

/* Fills up->https, host, port, authority and prefix from url. Returns NULL or the problem. */
static const char *
parse_url(tp_upstream_t *up, const char *url)
{
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
        up->port = 80;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
        up->port = 443;
        up->https = true;
    } else {
        return "scheme must be http or https";
    }
    const char *auth_end = p + strcspn(p, "/?#");
    if (strpbrk(p, "?#") != NULL)
        return "a base URL has no query or fragment";
    if (memchr(p, '@', (size_t)(auth_end - p)) != NULL)
        return "user info is not supported (give credentials as headers)";
    const char *host = p, *host_end, *after;
    bool bracketed = *p == '[';
    if (bracketed) {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (host_end == NULL || !is_ipv6_literal(host, (size_t)(host_end - host)))
            return "invalid IPv6 address";
        after = host_end + 1;
    } else {
        host_end = memchr(p, ':', (size_t)(auth_end - p));
        if (host_end == NULL)
            host_end = auth_end;
        if (!is_hostname(host, (size_t)(host_end - host)))
            return host_end == host ? "missing host" : "invalid host";
        after = host_end;
    }
    if (after != auth_end) {
        if (*after != ':' || after + 1 == auth_end || auth_end - after > 6)
            return "invalid port";
        unsigned long port = 0;
        for (const char *q = after + 1; q < auth_end; q++) {
            if (*q < '0' || *q > '9')
                return "invalid port";
            port = port * 10 + (unsigned long)(*q - '0');
        }
        if (port == 0 || port > 65535)
            return "invalid port";
        up->port = (uint16_t)port;
    }
    size_t path_len = strlen(auth_end);
    while (path_len > 0 && auth_end[path_len - 1] == '/')
        path_len--;
    if (!is_target(auth_end, path_len))
        return "invalid path";
    up->host = tp_strndup(host, (size_t)(host_end - host));
    up->authority = tp_strndup(p, (size_t)(auth_end - p));
    up->prefix = tp_strndup(auth_end, path_len);
    if (up->https) {
        struct in_addr a4;
        if (bracketed || inet_pton(AF_INET, up->host, &a4) == 1)
            return "https needs a host name, not an IP address (h2o 2.2 matches certificate names only)";
    }
    return NULL;
}

static char *
openssl_error(const char *what)
{
    char buf[256] = "unknown error";
    unsigned long e = ERR_peek_last_error();
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return tp_sprintf("%s: %s", what, buf);
}

/* A client context that verifies the peer's chain against the system store (and ca_file) and
 * that its certificate names `host`. OpenSSL checks the name during verification; h2o checks it
 * again after the handshake. */
static SSL_CTX *
new_ssl_ctx(const char *host, const char *ca_file, char **err)
{
    SSL_CTX *ssl = SSL_CTX_new(TLS_client_method());
    if (ssl == NULL) {
        *err = openssl_error("SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    if (SSL_CTX_set_default_verify_paths(ssl) != 1) {
        *err = openssl_error("system CA store");
        goto fail;
    }
    if (ca_file != NULL && SSL_CTX_load_verify_locations(ssl, ca_file, NULL) != 1) {
        char *what = tp_sprintf("ca_file %s", ca_file);
        *err = openssl_error(what);
        free(what);
        goto fail;
    }
    SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_host(param, host, 0) != 1) {
        *err = openssl_error("X509_VERIFY_PARAM_set1_host");
        goto fail;
    }
    return ssl;
fail:
    SSL_CTX_free(ssl);
    return NULL;
}

/* ---- the upstream ---- */

static uint64_t
or_default(uint64_t v, uint64_t def)
{
    return v != 0 ? v : def;
}

static uint64_t
max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static const char *
render_option_headers(tp_upstream_t *up, const tp_upstream_options_t *opts)
{
    size_t len = 0;
    for (size_t i = 0; i < opts->num_headers; i++) {
        const tp_upstream_header_t *hd = &opts->headers[i];
        if (!is_token(hd->name.base, hd->name.len))
            return "invalid header name";
        if (!is_header_value(hd->value))
            return "header value with CR, LF or NUL";
        if (is_managed_header(hd->name))
            return "header that this module writes itself (Host, Content-Length, hop-by-hop)";
        len += hd->name.len + 2 + hd->value.len + 2;
    }
    up->headers = tp_malloc(len + 1);
    char *w = up->headers;
    for (size_t i = 0; i < opts->num_headers; i++) {
        const tp_upstream_header_t *hd = &opts->headers[i];
        memcpy(w, hd->name.base, hd->name.len);
        w += hd->name.len;
        memcpy(w, ": ", 2);
        w += 2;
        memcpy(w, hd->value.base, hd->value.len);
        w += hd->value.len;
        memcpy(w, "\r\n", 2);
        w += 2;
    }
    *w = '\0';
    up->headers_len = len;
    return NULL;
}

tp_upstream_t *
tp_upstream_new(const char *base_url, const tp_upstream_options_t *opts, char **err)
{
    static const tp_upstream_options_t defaults = { 0 };
    if (opts == NULL)
        opts = &defaults;
    tp_upstream_t *up = tp_calloc(1, sizeof(*up));
    up->url = tp_strdup(base_url);
    const char *problem = parse_url(up, base_url);
    if (problem == NULL)
        problem = render_option_headers(up, opts);
    if (problem != NULL) {
        *err = tp_sprintf("upstream URL \"%s\": %s", base_url, problem);
        goto fail;
    }
    up->opts = *opts;
    up->opts.headers = NULL;
    up->opts.num_headers = 0;
    up->opts.ca_file = NULL;
    if (up->opts.max_connections == 0)
        up->opts.max_connections = TP_UPSTREAM_DEFAULT_MAX_CONNECTIONS;
    up->opts.keepalive_ms = or_default(opts->keepalive_ms, TP_UPSTREAM_DEFAULT_KEEPALIVE_MS);
    up->opts.connect_timeout_ms = or_default(opts->connect_timeout_ms, TP_UPSTREAM_DEFAULT_CONNECT_TIMEOUT_MS);
    up->opts.first_byte_timeout_ms = or_default(opts->first_byte_timeout_ms, TP_UPSTREAM_DEFAULT_FIRST_BYTE_TIMEOUT_MS);
    up->opts.idle_timeout_ms = or_default(opts->idle_timeout_ms, TP_UPSTREAM_DEFAULT_IDLE_TIMEOUT_MS);
    /* h2o's I/O timer runs on while a call is paused, so it must outlast the longest pause. */
    uint64_t longest =
        max_u64(max_u64(up->opts.connect_timeout_ms, up->opts.first_byte_timeout_ms),
                max_u64(up->opts.idle_timeout_ms, or_default(opts->total_timeout_ms, TP_UPSTREAM_MAX_PAUSE_MS)));
    up->io_timeout_ms = longest + IO_TIMEOUT_MARGIN_MS;
    if (up->https) {
        char *why = NULL;
        if ((up->ssl_ctx = new_ssl_ctx(up->host, opts->ca_file, &why)) == NULL) {
            *err = tp_sprintf("upstream URL \"%s\": %s", base_url, why);
            free(why);
            goto fail;
        }
    }
    atomic_init(&up->in_flight, 0);
    atomic_init(&up->slots, NULL);
    return up;
fail:
    free(up->url);
    free(up->host);
    free(up->authority);
    free(up->prefix);
    free(up->headers);
    free(up);
    return NULL;
}

const char *
tp_upstream_url(const tp_upstream_t *up)
{
    return up->url;
}

int64_t
tp_upstream_in_flight(const tp_upstream_t *up)
{
    return atomic_load(&up->in_flight);
}

/* ---- worker shares ---- */

static tp_upstream_local_t *
local_new(tp_upstream_t *up, h2o_context_t *ctx)
{
    tp_upstream_local_t *local = tp_calloc(1, sizeof(*local));
    h2o_timeout_init(ctx->loop, &local->io_timeout, up->io_timeout_ms);
    local->client_ctx = (h2o_http1client_ctx_t){
        .loop = ctx->loop,
        .getaddr_receiver = &ctx->receivers.hostinfo_getaddr,
        .io_timeout = &local->io_timeout,
        .websocket_timeout = NULL,
        .ssl_ctx = up->ssl_ctx,
    };
    /* The capacity is not enforced by h2o 2.2's pool: local->active is. */
    h2o_socketpool_init_by_hostport(&local->pool, h2o_iovec_init(up->host, strlen(up->host)), up->port, up->https,
                                    up->opts.max_connections);
    h2o_socketpool_set_timeout(&local->pool, ctx->loop, up->opts.keepalive_ms);
    uv_timer_init(ctx->loop, &local->reaper);
    local->reaper.data = local;
    h2o_linklist_init_anchor(&local->queue);
    return local;
}

static tp_upstream_local_t *
local_for(tp_upstream_t *up, h2o_context_t *ctx)
{
    tp_upstream_slot_t *s = atomic_load_explicit(&up->slots, memory_order_acquire);
    while (s != NULL && s->ctx != ctx)
        s = s->next;
    if (s == NULL) {
        s = tp_calloc(1, sizeof(*s));
        s->ctx = ctx;
        s->next = atomic_load_explicit(&up->slots, memory_order_relaxed);
        while (
            !atomic_compare_exchange_weak_explicit(&up->slots, &s->next, s, memory_order_release, memory_order_relaxed))
            ;
    }
    if (s->local == NULL)
        s->local = local_new(up, ctx);
    return s->local;
}

static void
free_handle(uv_handle_t *h)
{
    free(h);
}

static void
on_reap(uv_timer_t *t)
{
    free(t->data);
    uv_close((uv_handle_t *)t, free_handle);
}

/* h2o closes its timers (the pool's and io_timeout) without a callback. They were closed together
 * with the reaper, so they finish in the same pass over the loop's closing handles; a timer
 * started from the reaper's close callback runs after that pass, when the memory is free to go. */
static void
on_reaper_closed(uv_handle_t *h)
{
    uv_timer_t *t = tp_malloc(sizeof(*t));
    uv_timer_init(h->loop, t);
    t->data = h->data;
    uv_timer_start(t, on_reap, 0, 0);
}

void
tp_upstream_close_worker(tp_upstream_t *up, h2o_context_t *ctx)
{
    tp_upstream_slot_t *s = atomic_load_explicit(&up->slots, memory_order_acquire);
    while (s != NULL && s->ctx != ctx)
        s = s->next;
    if (s == NULL || s->local == NULL)
        return;
    tp_upstream_local_t *local = s->local;
    s->local = NULL;
    assert(local->calls == 0);
    h2o_socketpool_dispose(&local->pool);
    h2o_timeout_dispose(ctx->loop, &local->io_timeout);
    uv_close((uv_handle_t *)&local->reaper, on_reaper_closed);
}

void
tp_upstream_free(tp_upstream_t *up)
{
    if (up == NULL)
        return;
    assert(atomic_load(&up->in_flight) == 0);
    tp_upstream_slot_t *s = atomic_load(&up->slots);
    while (s != NULL) {
        tp_upstream_slot_t *next = s->next;
        if (s->local != NULL) {
            /* A worker that stopped for good without tp_upstream_close_worker: close its pooled
             * connections. Its memory stays, as the loop still lists the timers in it. */
            h2o_socketpool_dispose(&s->local->pool);
            h2o_timeout_dispose(s->local->client_ctx.loop, &s->local->io_timeout);
            uv_close((uv_handle_t *)&s->local->reaper, NULL);
        }
        free(s);
        s = next;
    }
    SSL_CTX_free(up->ssl_ctx);
    free(up->url);
    free(up->host);
    free(up->authority);
    free(up->prefix);
    free(up->headers);
    free(up);
}

/* ---- the request ---- */

typedef struct writer {
    char *p;
} writer_t;

static void
put(writer_t *w, const void *s, size_t n)
{
    memcpy(w->p, s, n);
    w->p += n;
}

static void
put_str(writer_t *w, const char *s)
{
    put(w, s, strlen(s));
}

/* Renders the request into call->reqbuf, or returns what is wrong with it. */
static const char *
build_request(tp_upstream_call_t *call, const tp_upstream_request_t *req)
{
    const tp_upstream_t *up = call->up;
    if (req->method == NULL || !is_token(req->method, strlen(req->method)))
        return "invalid request: method";
    if (req->path.len == 0 || req->path.base[0] != '/' || !is_target(req->path.base, req->path.len))
        return "invalid request: path";
    size_t len = strlen(req->method) + 1 + strlen(up->prefix) + req->path.len + sizeof(" HTTP/1.1\r\nHost: \r\n") +
                 strlen(up->authority) + sizeof("Content-Length: 18446744073709551615\r\n") + up->headers_len + 2 +
                 req->body.len;
    for (size_t i = 0; i < req->num_headers; i++) {
        const tp_upstream_header_t *hd = &req->headers[i];
        if (!is_token(hd->name.base, hd->name.len))
            return "invalid request: header name";
        if (!is_header_value(hd->value))
            return "invalid request: header value with CR, LF or NUL";
        len += hd->name.len + 2 + hd->value.len + 2;
    }
    writer_t w = { tp_malloc(len) };
    call->reqbuf.base = w.p;
    put_str(&w, req->method);
    put(&w, " ", 1);
    put_str(&w, up->prefix);
    put(&w, req->path.base, req->path.len);
    put_str(&w, " HTTP/1.1\r\nHost: ");
    put_str(&w, up->authority);
    put(&w, "\r\n", 2);
    if (req->body.base != NULL) {
        char cl[64];
        put(&w, cl, (size_t)snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", req->body.len));
    }
    put(&w, up->headers, up->headers_len);
    for (size_t i = 0; i < req->num_headers; i++) {
        const tp_upstream_header_t *hd = &req->headers[i];
        if (is_managed_header(hd->name))
            continue;
        put(&w, hd->name.base, hd->name.len);
        put(&w, ": ", 2);
        put(&w, hd->value.base, hd->value.len);
        put(&w, "\r\n", 2);
    }
    put(&w, "\r\n", 2);
    if (req->body.base != NULL)
        put(&w, req->body.base, req->body.len);
    call->reqbuf.len = (size_t)(w.p - call->reqbuf.base);
    assert(call->reqbuf.len <= len);
    return NULL;
}

/* ---- the call ---- */

static uint64_t
now_ms(const tp_upstream_call_t *call)
{
    return uv_now(call->local->client_ctx.loop);
}

/* The next deadline and what it means, or UINT64_MAX. */
static uint64_t
next_deadline(const tp_upstream_call_t *call, const char **what)
{
    const tp_upstream_options_t *o = &call->up->opts;
    uint64_t at = UINT64_MAX;
    *what = NULL;
    switch (call->state) {
    case CALL_QUEUED:
        at = call->started_at + o->connect_timeout_ms;
        *what = "timeout: no free connection";
        break;
    case CALL_CONNECTING:
        at = call->started_at + o->connect_timeout_ms;
        *what = "timeout: connect";
        break;
    case CALL_AWAIT_HEAD:
        at = call->head_wait_from + o->first_byte_timeout_ms;
        *what = "timeout: no first byte";
        break;
    case CALL_BODY:
        if (!call->paused) {
            at = call->last_read_at + o->idle_timeout_ms;
            *what = "timeout: idle";
        }
        break;
    default:
        break;
    }
    if (o->total_timeout_ms != 0 && call->started_at + o->total_timeout_ms < at) {
        at = call->started_at + o->total_timeout_ms;
        *what = "timeout: total";
    }
    return at;
}

static void
on_call_closed(uv_handle_t *h)
{
    tp_upstream_call_t *call = h->data;
    free(call->reqbuf.base);
    free(call->held);
    free(call);
}

/* Gives the call's connection slot back, to the oldest waiting call if there is one. That call
 * starts on the next loop turn, once a connection that ended now is back in the pool. */
static void
release_slot(tp_upstream_call_t *call)
{
    if (!call->has_slot)
        return;
    call->has_slot = false;
    tp_upstream_local_t *local = call->local;
    if (h2o_linklist_is_empty(&local->queue)) {
        local->active--;
        return;
    }
    tp_upstream_call_t *next = H2O_STRUCT_FROM_MEMBER(tp_upstream_call_t, queued, local->queue.next);
    h2o_linklist_unlink(&next->queued);
    next->has_slot = true;
    next->state = CALL_NEW;
    next->kick = true;
    arm(next);
}

/* Ends the call: on_done (unless cancelled), then the call is freed on the loop's next turn. */
static void
finish(tp_upstream_call_t *call, const char *error)
{
    if (call->state == CALL_DONE)
        return;
    call->state = CALL_DONE;
    if (h2o_linklist_is_linked(&call->queued))
        h2o_linklist_unlink(&call->queued);
    release_slot(call);
    uv_timer_stop(&call->timer);
    if (call->client != NULL && !call->in_cb) {
        h2o_http1client_cancel(call->client); /* closes the socket: it is in an unknown state */
        call->client = NULL;
    }
    atomic_fetch_sub(&call->up->in_flight, 1);
    call->local->calls--;
    if (!call->cancelled && call->h.on_done != NULL)
        call->h.on_done(call, error);
    uv_close((uv_handle_t *)&call->timer, on_call_closed);
}

/* h2o 2.2's http1client cannot pause reading (h2o 2.3 added that, PR #1358). Its body reader is
 * the socket's read callback, kept in the private field h2o_socket_t::_cb.read: save it, stop
 * reading, and restart reading with it later. The only place this module touches a private field
 * of h2o. */
static void
stop_reading(tp_upstream_call_t *call)
{
    h2o_socket_t *sock = call->client->sock;
    call->saved_read = sock->_cb.read;
    assert(call->saved_read != NULL);
    h2o_socket_read_stop(sock);
    call->read_stopped = true;
}

static void
restart_reading(tp_upstream_call_t *call)
{
    call->read_stopped = false;
    h2o_socket_read_start(call->client->sock, call->saved_read);
}

/* Hands everything in the socket's input to on_body. Call with in_cb set. */
static void
deliver_input(tp_upstream_call_t *call)
{
    h2o_socket_t *sock = call->client->sock;
    size_t n = sock->input->size;
    if (n == 0)
        return;
    if (call->h.on_body != NULL)
        call->h.on_body(call, sock->input->bytes, n);
    if (call->state != CALL_DONE)
        h2o_buffer_consume(&sock->input, n);
}

/* The response ended (h2o returns the connection to the pool after this). */
static void
end_response(tp_upstream_call_t *call)
{
    h2o_buffer_t *in = call->client->sock->input;
    if (in->size == 0) {
        finish(call, NULL);
        return;
    }
    /* paused with bytes not yet delivered: keep them for tp_upstream_resume */
    call->held = tp_malloc(in->size);
    memcpy(call->held, in->bytes, in->size);
    call->held_len = in->size;
    call->state = CALL_ENDED_HELD;
    release_slot(call);
}

/* Deferred delivery after tp_upstream_resume: bytes left in the socket when the call was paused
 * before its body, or held at the end. Runs from the timer, outside h2o's callbacks. */
static void
deliver_pending(tp_upstream_call_t *call)
{
    if (call->paused)
        return;
    call->in_cb = true;
    if (call->state == CALL_ENDED_HELD) {
        if (call->h.on_body != NULL)
            call->h.on_body(call, call->held, call->held_len);
        finish(call, NULL); /* a no-op if on_body cancelled */
    } else if (call->state == CALL_BODY && call->client != NULL) {
        deliver_input(call);
    }
    call->in_cb = false;
    if (call->state == CALL_DONE && call->client != NULL) {
        h2o_http1client_cancel(call->client);
        call->client = NULL;
    }
}

static const char *
body_error(tp_upstream_call_t *call, const char *errstr)
{
    if (strcmp(errstr, "I/O timeout") == 0)
        return "timeout: I/O";
    if (strncmp(errstr, "I/O error", 9) == 0)
        return "connection closed before the response ended";
    snprintf(call->errbuf, sizeof(call->errbuf), "bad response: %s", errstr);
    return call->errbuf;
}

static int
on_h2o_body(h2o_http1client_t *client, const char *errstr)
{
    tp_upstream_call_t *call = client->data;
    bool eos = errstr == h2o_http1client_error_is_eos;
    assert(call->state == CALL_BODY);
    call->in_cb = true;
    if (errstr != NULL && !eos) {
        finish(call, body_error(call, errstr));
    } else {
        call->last_read_at = now_ms(call);
        if (!call->paused)
            deliver_input(call);
        if (call->state != CALL_DONE && eos)
            end_response(call);
        else if (call->state != CALL_DONE && call->paused && !call->read_stopped)
            stop_reading(call);
    }
    call->in_cb = false;
    if (call->state == CALL_DONE || call->state == CALL_ENDED_HELD)
        call->client = NULL; /* h2o frees it when we return */
    if (call->state == CALL_DONE)
        return -1;
    arm(call);
    return 0;
}

static const char *
head_error(tp_upstream_call_t *call, const char *errstr)
{
    if (strcmp(errstr, "I/O timeout") == 0)
        return "timeout: I/O";
    if (strcmp(errstr, "I/O error (send request)") == 0)
        return "connection closed while sending the request";
    if (strncmp(errstr, "I/O error", 9) == 0)
        return "connection closed before the response head";
    snprintf(call->errbuf, sizeof(call->errbuf), "bad response: %s", errstr);
    return call->errbuf;
}

static h2o_http1client_body_cb
on_h2o_head(h2o_http1client_t *client, const char *errstr, int minor_version, int status, h2o_iovec_t msg,
            h2o_header_t *headers, size_t num_headers, int rlen)
{
    tp_upstream_call_t *call = client->data;
    bool eos = errstr == h2o_http1client_error_is_eos;
    call->in_cb = true;
    if (errstr != NULL && !eos) {
        finish(call, head_error(call, errstr));
    } else {
        if (call->h.on_head != NULL && call->h.on_head(call, status, headers, num_headers) != 0) {
            call->cancelled = true;
            finish(call, NULL);
        }
        if (call->state != CALL_DONE && eos) {
            finish(call, NULL); /* no body: HEAD, 204, 304 */
        } else if (call->state != CALL_DONE) {
            /* a pause asked for in on_head is applied by on_h2o_body, which h2o calls next */
            call->state = CALL_BODY;
            call->last_read_at = now_ms(call);
        }
    }
    call->in_cb = false;
    if (call->state == CALL_DONE) {
        call->client = NULL; /* h2o frees it when we return */
        return NULL;
    }
    arm(call);
    return on_h2o_body;
}

static h2o_http1client_head_cb
on_h2o_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs, size_t *reqbufcnt,
               int *method_is_head)
{
    tp_upstream_call_t *call = client->data;
    call->in_cb = true;
    if (errstr != NULL) {
        if (strcmp(errstr, "connection timeout") == 0) {
            finish(call, "timeout: connect");
        } else {
            snprintf(call->errbuf, sizeof(call->errbuf), "connect: %s", errstr);
            finish(call, call->errbuf);
        }
    } else {
        /* h2o 2.2's pool is told of a socket's close only to count open sockets, a count it never
         * reads. A TLS socket closes asynchronously (close_notify) and could then reach a pool
         * that tp_upstream_close_worker has freed, so the callback goes once the socket is ours.
         * on_close.data stays: h2o_socketpool_return checks it, and a reused socket gets the
         * callback again. */
        client->sock->on_close.cb = NULL;
        *reqbufs = &call->reqbuf;
        *reqbufcnt = 1;
        *method_is_head = call->is_head;
        call->state = CALL_AWAIT_HEAD;
        call->head_wait_from = now_ms(call);
    }
    call->in_cb = false;
    if (call->state == CALL_DONE) {
        call->client = NULL; /* h2o frees it when we return */
        return NULL;
    }
    arm(call);
    return on_h2o_head;
}

/* Takes a connection slot (or waits for one) and connects. Runs from the timer. */
static void
start_call(tp_upstream_call_t *call)
{
    if (call->invalid != NULL) {
        finish(call, call->invalid);
        return;
    }
    tp_upstream_local_t *local = call->local;
    if (!call->has_slot) {
        if (local->active >= call->up->opts.max_connections) {
            call->state = CALL_QUEUED;
            h2o_linklist_insert(&local->queue, &call->queued);
            arm(call);
            return;
        }
        local->active++;
        call->has_slot = true;
    }
    call->state = CALL_CONNECTING;
    arm(call);
    /* With a pooled connection, or on an immediate failure, h2o calls on_h2o_connect before this
     * returns. */
    h2o_http1client_connect_with_pool(&call->client, call, &local->client_ctx, &local->pool, on_h2o_connect);
}

static void
on_timer(uv_timer_t *timer)
{
    tp_upstream_call_t *call = timer->data;
    if (call->kick) {
        call->kick = false;
        if (call->state == CALL_NEW) {
            start_call(call);
            return;
        }
        deliver_pending(call);
        if (call->state == CALL_DONE)
            return;
    }
    const char *what;
    if (next_deadline(call, &what) <= now_ms(call)) {
        finish(call, what);
        return;
    }
    arm(call);
}

/* Points the timer at the deferred work or the next deadline. */
static void
arm(tp_upstream_call_t *call)
{
    if (call->state == CALL_DONE)
        return;
    const char *what;
    uint64_t at = call->kick ? 0 : next_deadline(call, &what);
    if (at == UINT64_MAX) {
        uv_timer_stop(&call->timer);
        return;
    }
    uint64_t now = now_ms(call);
    uv_timer_start(&call->timer, on_timer, at > now ? at - now : 0, 0);
}

tp_upstream_call_t *
tp_upstream_call(tp_upstream_t *up, h2o_context_t *ctx, const tp_upstream_request_t *req,
                 const tp_upstream_handlers_t *h, void *data)
{
    tp_upstream_call_t *call = tp_calloc(1, sizeof(*call));
    call->up = up;
    call->local = local_for(up, ctx);
    call->h = *h;
    call->data = data;
    call->state = CALL_NEW;
    call->started_at = uv_now(ctx->loop);
    call->is_head = req->method != NULL && strcasecmp(req->method, "HEAD") == 0;
    call->invalid = build_request(call, req);
    uv_timer_init(ctx->loop, &call->timer);
    call->timer.data = call;
    atomic_fetch_add(&up->in_flight, 1);
    call->local->calls++;
    call->kick = true;
    arm(call);
    return call;
}

void *
tp_upstream_call_data(const tp_upstream_call_t *call)
{
    return call->data;
}

void
tp_upstream_cancel(tp_upstream_call_t *call)
{
    if (call->state == CALL_DONE)
        return;
    call->cancelled = true;
    finish(call, NULL);
}

void
tp_upstream_pause(tp_upstream_call_t *call)
{
    if (call->paused || call->state == CALL_DONE)
        return;
    call->paused = true;
    /* In CALL_BODY, reading is on unless we stopped it; before, on_h2o_body applies the pause. */
    if (call->state == CALL_BODY && !call->read_stopped && call->client != NULL)
        stop_reading(call);
    arm(call);
}

void
tp_upstream_resume(tp_upstream_call_t *call)
{
    if (!call->paused || call->state == CALL_DONE)
        return;
    call->paused = false;
    if (call->read_stopped && call->client != NULL)
        restart_reading(call);
    call->last_read_at = now_ms(call);
    if (call->state == CALL_ENDED_HELD ||
        (call->state == CALL_BODY && call->client != NULL && call->client->sock->input->size > 0))
        call->kick = true;
    arm(call);
}
