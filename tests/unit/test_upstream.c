/*
 * test_upstream.c — tests for common/upstream.c.
 *
 * The client runs on a uv loop with an h2o context in the test thread, which drives the loop
 * until a flag flips (a 5 ms ticker keeps the loop turning, and every wait is bounded). The
 * upstream is a small HTTP/1.1 server on 127.0.0.1 with blocking sockets, a thread per
 * connection, and canned responses chosen by path; for https it wraps connections in OpenSSL with
 * a certificate made at run time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "upstream.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define MAX_CONNS     64
#define BIG_SIZE      (20u * 1024 * 1024)
#define SERVER_SNDBUF (256 * 1024) /* the server's send buffer, fixed so that it does not autotune */
#define WAIT_MS       10000        /* bound on every wait for a flag */

/* ---- the test server ---- */

typedef struct test_server test_server_t;

typedef struct conn {
    test_server_t *srv;
    int fd;
    SSL *ssl;
    char buf[65536];
    size_t len;
} conn_t;

struct test_server {
    int lfd;
    int port;
    int wake[2]; /* written to stop the acceptor */
    pthread_t acceptor;
    bool close_on_accept; /* close every connection at once */
    SSL_CTX *tls;         /* serve https with this; NULL: http */
    pthread_mutex_t mu;
    pthread_t threads[MAX_CONNS];
    conn_t *conns[MAX_CONNS];
    int nconns;
    atomic_int accepts;
    atomic_int closed;       /* connection threads that ended */
    atomic_size_t big_sent;  /* body bytes /big has written */
    atomic_bool big_blocked; /* /big is waiting for its socket to take more */
};

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static ssize_t
conn_recv(conn_t *c, void *p, size_t n)
{
    if (c->ssl != NULL) {
        int r = SSL_read(c->ssl, p, (int)n);
        return r > 0 ? r : 0;
    }
    ssize_t r;
    do
        r = recv(c->fd, p, n, 0);
    while (r < 0 && errno == EINTR);
    return r;
}

static bool
conn_send(conn_t *c, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w;
        if (c->ssl != NULL)
            w = SSL_write(c->ssl, s, (int)n);
        else
            w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (c->ssl == NULL && w < 0 && errno == EINTR)
                continue;
            return false;
        }
        s += w;
        n -= (size_t)w;
    }
    return true;
}

static bool
conn_sendf(conn_t *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return conn_send(c, buf, (size_t)n);
}

/* Waits until the client closes the connection. */
static bool
wait_for_close(conn_t *c)
{
    char b[4096];
    while (conn_recv(c, b, sizeof(b)) > 0)
        ;
    return false;
}

typedef struct request {
    char method[16];
    char target[256];
    char *raw; /* the whole request, head and body */
    size_t raw_len;
} request_t;

/* Reads one request into req (req->raw is malloc'd). Returns false on EOF or garbage. */
static bool
read_request(conn_t *c, request_t *req)
{
    char *end;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
        if (c->len == sizeof(c->buf))
            return false;
        ssize_t n = conn_recv(c, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n <= 0)
            return false;
        c->len += (size_t)n;
    }
    size_t head_len = (size_t)(end + 4 - c->buf);
    if (sscanf(c->buf, "%15s %255s", req->method, req->target) != 2)
        return false;
    size_t body_len = 0;
    const char *cl = strcasestr(c->buf, "\r\ncontent-length:");
    if (cl != NULL && cl < end)
        body_len = strtoul(cl + 17, NULL, 10);
    while (c->len < head_len + body_len) {
        ssize_t n = conn_recv(c, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n <= 0)
            return false;
        c->len += (size_t)n;
    }
    req->raw_len = head_len + body_len;
    req->raw = malloc(req->raw_len);
    memcpy(req->raw, c->buf, req->raw_len);
    memmove(c->buf, c->buf + req->raw_len, c->len - req->raw_len);
    c->len -= req->raw_len;
    return true;
}

static unsigned char
big_byte(size_t i)
{
    return (unsigned char)(i % 251);
}

/* Writes BIG_SIZE bytes without blocking in send, so that it can say when the socket is full. */
static bool
send_big(conn_t *c)
{
    test_server_t *s = c->srv;
    if (!conn_sendf(c, "HTTP/1.1 200 OK\r\nContent-Length: %u\r\n\r\n", BIG_SIZE))
        return false;
    unsigned char chunk[65536];
    size_t off = 0;
    while (off < BIG_SIZE) {
        size_t n = BIG_SIZE - off < sizeof(chunk) ? BIG_SIZE - off : sizeof(chunk);
        for (size_t i = 0; i < n; i++)
            chunk[i] = big_byte(off + i);
        size_t done = 0;
        while (done < n) {
            ssize_t w = send(c->fd, chunk + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                done += (size_t)w;
                atomic_fetch_add(&s->big_sent, (size_t)w);
                continue;
            }
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                atomic_store(&s->big_blocked, true);
                struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
                int pr = poll(&pfd, 1, -1);
                atomic_store(&s->big_blocked, false);
                if (pr < 0 || (pfd.revents & (POLLERR | POLLHUP)) != 0)
                    return false;
                continue;
            }
            if (w < 0 && errno == EINTR)
                continue;
            return false;
        }
        off += n;
    }
    return true;
}

/* Answers one request. Returns whether to keep the connection for another. */
static bool
respond(conn_t *c, const request_t *req)
{
    const char *t = req->target;
    if (strcmp(t, "/fixed") == 0)
        return conn_sendf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n%s",
                          strcmp(req->method, "HEAD") == 0 ? "" : "hello world");
    if (strcmp(t, "/nocontent") == 0)
        return conn_sendf(c, "HTTP/1.1 204 No Content\r\n\r\n");
    if (strncmp(t, "/base/echo", 10) == 0) {
        return conn_sendf(c, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", req->raw_len) &&
               conn_send(c, req->raw, req->raw_len);
    }
    if (strcmp(t, "/chunked") == 0) {
        static const char *const pieces[] = { "alpha", "beta", "gamma" };
        if (!conn_sendf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
            return false;
        for (size_t i = 0; i < 3; i++) {
            usleep(30 * 1000); /* the server's pace, so the pieces arrive apart */
            if (!conn_sendf(c, "%zx\r\n%s\r\n", strlen(pieces[i]), pieces[i]))
                return false;
        }
        return conn_sendf(c, "0\r\n\r\n");
    }
    if (strcmp(t, "/silent") == 0)
        return wait_for_close(c);
    if (strcmp(t, "/stall") == 0) {
        conn_sendf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
        return wait_for_close(c);
    }
    if (strcmp(t, "/truncated") == 0) {
        conn_sendf(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        return false;
    }
    if (strcmp(t, "/until-close") == 0) {
        conn_sendf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
        return false;
    }
    if (strcmp(t, "/big") == 0)
        return send_big(c);
    return conn_sendf(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
}

static void *
conn_main(void *arg)
{
    conn_t *c = arg;
    if (c->srv->tls != NULL) {
        c->ssl = SSL_new(c->srv->tls);
        SSL_set_fd(c->ssl, c->fd);
        if (SSL_accept(c->ssl) != 1)
            goto out;
    }
    for (;;) {
        request_t req;
        if (!read_request(c, &req))
            break;
        bool keep = respond(c, &req);
        free(req.raw);
        if (!keep)
            break;
    }
out:
    if (c->ssl != NULL) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    shutdown(c->fd, SHUT_RDWR);
    atomic_fetch_add(&c->srv->closed, 1);
    return NULL;
}

static void *
acceptor_main(void *arg)
{
    test_server_t *s = arg;
    for (;;) {
        struct pollfd pfd[2] = { { .fd = s->lfd, .events = POLLIN }, { .fd = s->wake[0], .events = POLLIN } };
        if (poll(pfd, 2, -1) < 0 && errno != EINTR)
            return NULL;
        if (pfd[1].revents != 0)
            return NULL;
        if ((pfd[0].revents & POLLIN) == 0)
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&s->accepts, 1);
        if (s->close_on_accept) {
            close(fd);
            continue;
        }
        int sndbuf = SERVER_SNDBUF;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        conn_t *c = calloc(1, sizeof(*c));
        c->srv = s;
        c->fd = fd;
        pthread_mutex_lock(&s->mu);
        assert_true(s->nconns < MAX_CONNS);
        s->conns[s->nconns] = c;
        pthread_create(&s->threads[s->nconns], NULL, conn_main, c);
        s->nconns++;
        pthread_mutex_unlock(&s->mu);
    }
}

static void
server_start(test_server_t *s, bool close_on_accept, SSL_CTX *tls)
{
    memset(s, 0, sizeof(*s));
    s->close_on_accept = close_on_accept;
    s->tls = tls;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sin, &len), 0);
    s->port = ntohs(sin.sin_port);
    assert_int_equal(pipe(s->wake), 0);
    assert_int_equal(pthread_create(&s->acceptor, NULL, acceptor_main, s), 0);
}

static void
server_stop(test_server_t *s)
{
    assert_int_equal(write(s->wake[1], "x", 1), 1);
    pthread_join(s->acceptor, NULL);
    for (int i = 0; i < s->nconns; i++) {
        shutdown(s->conns[i]->fd, SHUT_RDWR); /* wakes a thread waiting for the client */
        pthread_join(s->threads[i], NULL);
        close(s->conns[i]->fd);
        free(s->conns[i]);
    }
    close(s->lfd);
    close(s->wake[0]);
    close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
}

/* ---- the client side ---- */

/* What one call saw, and how its handlers behave. */
typedef struct result {
    tp_upstream_call_t *call;
    int status;
    char content_type[64];
    int heads, bodies, dones;
    char *body;
    size_t body_len;
    bool check_big; /* compare with big_byte instead of keeping the body */
    bool big_ok;
    bool done;
    bool failed;
    char error[256];
    /* behaviours */
    bool pause_in_head;
    bool pause_on_first_body;
    bool cancel_on_first_body;
    bool reject_head;
    bool paused;
    bool cancelled;
    int after_cancel; /* callbacks after the cancel: must stay 0 */
} result_t;

#define MAX_RESULTS 8

typedef struct fixture {
    uv_loop_t loop;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    uv_timer_t ticker; /* keeps uv_run(UV_RUN_ONCE) returning while nothing else happens */
    test_server_t srv;
    bool server_running;
    tp_upstream_t *up;
    SSL_CTX *tls;
    char ca_file[64];
    result_t results[MAX_RESULTS]; /* here, not on a test's stack, so that teardown can end them */
    int nresults;
} fixture_t;

static void
on_tick(uv_timer_t *t)
{
}

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    h2o_config_init(&f->config);
    h2o_config_register_host(&f->config, h2o_iovec_init(H2O_STRLIT("default")), 65535); /* h2o needs one */
    h2o_context_init(&f->ctx, &f->loop, &f->config);
    uv_timer_init(&f->loop, &f->ticker);
    uv_timer_start(&f->ticker, on_tick, 5, 5);
    *state = f;
    return 0;
}

static void
run_turns(fixture_t *f, int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
}

/* Drives the loop until *flag is true or WAIT_MS passed. Returns *flag. */
static bool
run_until(fixture_t *f, const bool *flag)
{
    uint64_t end = mono_ms() + WAIT_MS;
    while (!*flag && mono_ms() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    return *flag;
}

static result_t *
new_result(fixture_t *f)
{
    assert_true(f->nresults < MAX_RESULTS);
    return &f->results[f->nresults++];
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < f->nresults; i++) {
        result_t *r = &f->results[i];
        if (r->call != NULL && !r->done && !r->cancelled) /* a test failed half-way */
            tp_upstream_cancel(r->call);
        free(r->body);
    }
    if (f->up != NULL) {
        tp_upstream_close_worker(f->up, &f->ctx);
        tp_upstream_free(f->up);
    }
    if (f->server_running)
        server_stop(&f->srv);
    SSL_CTX_free(f->tls);
    if (f->ca_file[0] != '\0')
        unlink(f->ca_file);
    uv_close((uv_handle_t *)&f->ticker, NULL);
    h2o_context_dispose(&f->ctx);
    h2o_config_dispose(&f->config);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* until every handle has closed, ours included */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void
start_server(fixture_t *f, bool close_on_accept)
{
    server_start(&f->srv, close_on_accept, f->tls);
    f->server_running = true;
}

static tp_upstream_t *
new_upstream(fixture_t *f, const char *path, const tp_upstream_options_t *opts)
{
    char url[128], *err = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", f->srv.port, path);
    f->up = tp_upstream_new(url, opts, &err);
    if (f->up == NULL)
        fail_msg("tp_upstream_new: %s", err);
    return f->up;
}

static int
on_head(tp_upstream_call_t *call, int status, const h2o_header_t *headers, size_t num_headers)
{
    result_t *r = tp_upstream_call_data(call);
    if (r->cancelled)
        r->after_cancel++;
    r->heads++;
    r->status = status;
    for (size_t i = 0; i < num_headers; i++) {
        if (headers[i].name == &H2O_TOKEN_CONTENT_TYPE->buf)
            snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)headers[i].value.len,
                     headers[i].value.base);
    }
    if (r->pause_in_head) {
        tp_upstream_pause(call);
        r->paused = true;
    }
    if (r->reject_head) {
        r->cancelled = true;
        return -1;
    }
    return 0;
}

static void
on_body(tp_upstream_call_t *call, const char *buf, size_t len)
{
    result_t *r = tp_upstream_call_data(call);
    if (r->cancelled)
        r->after_cancel++;
    if (r->paused)
        r->after_cancel++; /* no on_body while paused either */
    r->bodies++;
    if (r->check_big) {
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)buf[i] != big_byte(r->body_len + i))
                r->big_ok = false;
        }
    } else {
        r->body = realloc(r->body, r->body_len + len + 1);
        memcpy(r->body + r->body_len, buf, len);
        r->body[r->body_len + len] = '\0';
    }
    r->body_len += len;
    if (r->cancel_on_first_body) {
        r->cancel_on_first_body = false;
        r->cancelled = true;
        tp_upstream_cancel(call);
        r->call = NULL;
        return;
    }
    if (r->pause_on_first_body) {
        r->pause_on_first_body = false;
        tp_upstream_pause(call);
        r->paused = true;
    }
}

static void
on_done(tp_upstream_call_t *call, const char *error)
{
    result_t *r = tp_upstream_call_data(call);
    if (r->cancelled)
        r->after_cancel++;
    r->dones++;
    r->done = true;
    r->failed = error != NULL;
    snprintf(r->error, sizeof(r->error), "%s", error != NULL ? error : "");
    r->call = NULL;
}

static const tp_upstream_handlers_t handlers = { on_head, on_body, on_done };

static tp_upstream_call_t *
get(fixture_t *f, const char *method, const char *path, result_t *r)
{
    tp_upstream_request_t req = { .method = method, .path = h2o_iovec_init(path, strlen(path)) };
    r->call = tp_upstream_call(f->up, &f->ctx, &req, &handlers, r);
    assert_non_null(r->call);
    return r->call;
}

/* ---- tests ---- */

static void
test_new_rejects_bad_urls(void **state)
{
    static const char *const bad[] = {
        "ftp://example.com",          "http://",
        "http://user:pw@example.com", "http://example.com/?q=1",
        "http://example.com:0",       "http://example.com:70000",
        "http://exa mple.com",        "http://[::1",
        "https://127.0.0.1",          "https://[::1]:8443",
        "http://example.com:8x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        tp_upstream_t *up = tp_upstream_new(bad[i], NULL, &err);
        if (up != NULL)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(err);
        assert_non_null(strstr(err, bad[i]));
        free(err);
    }
    tp_upstream_header_t hd = { h2o_iovec_init(H2O_STRLIT("X-Bad")), h2o_iovec_init(H2O_STRLIT("a\r\nb: c")) };
    tp_upstream_options_t opts = { .headers = &hd, .num_headers = 1 };
    char *err = NULL;
    assert_null(tp_upstream_new("http://example.com", &opts, &err));
    assert_non_null(strstr(err, "CR, LF"));
    free(err);

    static const char *const good[] = { "http://example.com", "HTTPS://example.com:8443/v1/", "http://[::1]:8080/x",
                                        "http://10.0.0.1" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        tp_upstream_t *up = tp_upstream_new(good[i], NULL, &err);
        if (up == NULL)
            fail_msg("refused %s: %s", good[i], err);
        assert_string_equal(tp_upstream_url(up), good[i]);
        tp_upstream_free(up);
    }
}

static void
test_fixed_body(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    get(f, "GET", "/fixed", r);
    assert_false(r->done); /* no callback before tp_upstream_call returns */
    assert_int_equal(tp_upstream_in_flight(f->up), 1);
    assert_true(run_until(f, &r->done));
    assert_false(r->failed);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->content_type, "text/plain");
    assert_string_equal(r->body, "hello world");
    assert_int_equal(r->heads, 1);
    assert_int_equal(r->dones, 1);
    assert_int_equal(tp_upstream_in_flight(f->up), 0);
}

static void
test_request_is_rendered(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    tp_upstream_header_t auth = { h2o_iovec_init(H2O_STRLIT("Authorization")),
                                  h2o_iovec_init(H2O_STRLIT("Bearer upstream-key")) };
    tp_upstream_options_t opts = { .headers = &auth, .num_headers = 1 };
    new_upstream(f, "/base/", &opts);
    tp_upstream_header_t hds[] = {
        { h2o_iovec_init(H2O_STRLIT("X-Test")), h2o_iovec_init(H2O_STRLIT("1")) },
        { h2o_iovec_init(H2O_STRLIT("Host")), h2o_iovec_init(H2O_STRLIT("evil.example")) },
        { h2o_iovec_init(H2O_STRLIT("Connection")), h2o_iovec_init(H2O_STRLIT("upgrade")) },
        { h2o_iovec_init(H2O_STRLIT("Content-Length")), h2o_iovec_init(H2O_STRLIT("999")) },
    };
    tp_upstream_request_t req = { .method = "POST",
                                  .path = h2o_iovec_init(H2O_STRLIT("/echo?q=1")),
                                  .headers = hds,
                                  .num_headers = 4,
                                  .body = h2o_iovec_init(H2O_STRLIT("hello")) };
    result_t *r = new_result(f);
    r->call = tp_upstream_call(f->up, &f->ctx, &req, &handlers, r);
    assert_true(run_until(f, &r->done));
    assert_false(r->failed);
    char host[64];
    snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", f->srv.port);
    assert_memory_equal(r->body, "POST /base/echo?q=1 HTTP/1.1\r\n", 30);
    assert_non_null(strstr(r->body, host));
    assert_non_null(strstr(r->body, "\r\nAuthorization: Bearer upstream-key\r\n"));
    assert_non_null(strstr(r->body, "\r\nX-Test: 1\r\n"));
    assert_non_null(strstr(r->body, "\r\nContent-Length: 5\r\n"));
    assert_null(strstr(r->body, "evil"));
    assert_null(strstr(r->body, "999"));
    assert_null(strstr(r->body, "upgrade"));
    assert_string_equal(r->body + r->body_len - 9, "\r\n\r\nhello");
}

static void
test_invalid_request_fails_after_return(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    tp_upstream_header_t hd = { h2o_iovec_init(H2O_STRLIT("X-Test")), h2o_iovec_init(H2O_STRLIT("a\r\nInjected: 1")) };
    tp_upstream_request_t req = {
        .method = "GET", .path = h2o_iovec_init(H2O_STRLIT("/fixed")), .headers = &hd, .num_headers = 1
    };
    result_t *r = new_result(f);
    r->call = tp_upstream_call(f->up, &f->ctx, &req, &handlers, r);
    assert_false(r->done);
    assert_true(run_until(f, &r->done));
    assert_true(r->failed);
    assert_string_equal(r->error, "invalid request: header value with CR, LF or NUL");
    assert_int_equal(r->heads, 0);
    assert_int_equal(atomic_load(&f->srv.accepts), 0);

    result_t *r2 = new_result(f);
    get(f, "GET", "no-slash", r2);
    assert_true(run_until(f, &r2->done));
    assert_string_equal(r2->error, "invalid request: path");
}

static void
test_chunked_body_in_pieces(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    get(f, "GET", "/chunked", r);
    assert_true(run_until(f, &r->done));
    assert_false(r->failed);
    assert_string_equal(r->body, "alphabetagamma");
    assert_true(r->bodies >= 2); /* streamed: the pieces arrive 30 ms apart */
}

static void
test_no_body_responses(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    get(f, "HEAD", "/fixed", r);
    assert_true(run_until(f, &r->done));
    assert_false(r->failed);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->bodies, 0);
    result_t *r2 = new_result(f);
    get(f, "GET", "/nocontent", r2);
    assert_true(run_until(f, &r2->done));
    assert_false(r2->failed);
    assert_int_equal(r2->status, 204);
    assert_int_equal(r2->bodies, 0);
    assert_int_equal(atomic_load(&f->srv.accepts), 1); /* both bodiless responses kept the connection */
}

static void
test_read_until_close(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    get(f, "GET", "/until-close", r);
    assert_true(run_until(f, &r->done));
    assert_false(r->failed);
    assert_string_equal(r->body, "abc");
    /* that connection cannot be reused: the next call opens another */
    result_t *r2 = new_result(f);
    get(f, "GET", "/fixed", r2);
    assert_true(run_until(f, &r2->done));
    assert_false(r2->failed);
    assert_int_equal(atomic_load(&f->srv.accepts), 2);
}

static void
test_keepalive_reuses_connection(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    for (int i = 0; i < 3; i++) {
        result_t *r = new_result(f);
        get(f, "GET", i == 1 ? "/chunked" : "/fixed", r);
        assert_true(run_until(f, &r->done));
        assert_false(r->failed);
    }
    assert_int_equal(atomic_load(&f->srv.accepts), 1);

    /* after tp_upstream_close_worker the pooled connection is closed and a new call opens another */
    tp_upstream_close_worker(f->up, &f->ctx);
    result_t *r = new_result(f);
    get(f, "GET", "/fixed", r);
    assert_true(run_until(f, &r->done));
    assert_false(r->failed);
    assert_int_equal(atomic_load(&f->srv.accepts), 2);
}

static void
test_connection_limit_queues_calls(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    tp_upstream_options_t opts = { .max_connections = 1 };
    new_upstream(f, "", &opts);
    result_t *a = new_result(f), *b = new_result(f);
    get(f, "GET", "/chunked", a);
    get(f, "GET", "/chunked", b);
    assert_int_equal(tp_upstream_in_flight(f->up), 2);
    assert_true(run_until(f, &a->done));
    assert_false(b->done); /* it waited for a's connection */
    assert_true(run_until(f, &b->done));
    assert_false(a->failed);
    assert_false(b->failed);
    assert_string_equal(b->body, "alphabetagamma");
    assert_int_equal(atomic_load(&f->srv.accepts), 1);
}

static void
test_no_free_connection_times_out(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    tp_upstream_options_t opts = { .max_connections = 1, .connect_timeout_ms = 100 };
    new_upstream(f, "", &opts);
    result_t *a = new_result(f), *b = new_result(f);
    get(f, "GET", "/silent", a);
    get(f, "GET", "/fixed", b);
    assert_true(run_until(f, &b->done));
    assert_string_equal(b->error, "timeout: no free connection");
    assert_false(a->done);
    a->cancelled = true;
    tp_upstream_cancel(a->call);
    run_turns(f, 3);
    assert_int_equal(a->after_cancel, 0);
    assert_int_equal(tp_upstream_in_flight(f->up), 0);
}

static void
test_first_byte_timeout(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    tp_upstream_options_t opts = { .first_byte_timeout_ms = 100 };
    new_upstream(f, "", &opts);
    result_t *r = new_result(f);
    uint64_t t0 = mono_ms();
    get(f, "GET", "/silent", r);
    assert_true(run_until(f, &r->done));
    uint64_t took = mono_ms() - t0;
    assert_string_equal(r->error, "timeout: no first byte");
    assert_true(took >= 100 && took < 2000);
    assert_int_equal(r->heads, 0);
}

static void
test_total_timeout(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    tp_upstream_options_t opts = { .total_timeout_ms = 60 };
    new_upstream(f, "", &opts);
    result_t *r = new_result(f);
    get(f, "GET", "/chunked", r); /* takes 90 ms or more */
    assert_true(run_until(f, &r->done));
    assert_string_equal(r->error, "timeout: total");
}

static void
test_closed_at_once(void **state)
{
    fixture_t *f = *state;
    start_server(f, true);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    get(f, "GET", "/fixed", r);
    assert_true(run_until(f, &r->done));
    assert_true(r->failed);
    if (strncmp(r->error, "connection closed", 17) != 0)
        fail_msg("error: %s", r->error);
}

static void
test_idle_timeout_after_head(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    tp_upstream_options_t opts = { .idle_timeout_ms = 100 };
    new_upstream(f, "", &opts);
    result_t *r = new_result(f);
    get(f, "GET", "/stall", r);
    assert_true(run_until(f, &r->done));
    assert_string_equal(r->error, "timeout: idle");
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "0123456789");
}

static void
test_truncated_body(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    get(f, "GET", "/truncated", r);
    assert_true(run_until(f, &r->done));
    assert_string_equal(r->error, "connection closed before the response ended");
    assert_string_equal(r->body, "0123456789");
}

static void
test_connect_refused(void **state)
{
    fixture_t *f = *state;
    /* a port nobody listens on: bind one, then close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    close(fd);
    f->srv.port = ntohs(sin.sin_port);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    get(f, "GET", "/fixed", r);
    assert_true(run_until(f, &r->done));
    if (strncmp(r->error, "connect: ", 9) != 0)
        fail_msg("error: %s", r->error);
}

static void
test_cancel_before_start(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    get(f, "GET", "/fixed", r);
    r->cancelled = true;
    tp_upstream_cancel(r->call);
    run_turns(f, 5);
    assert_int_equal(r->after_cancel, 0);
    assert_int_equal(r->heads + r->bodies + r->dones, 0);
    assert_int_equal(tp_upstream_in_flight(f->up), 0);
    assert_int_equal(atomic_load(&f->srv.accepts), 0);
}

static void
test_cancel_in_the_middle(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    r->check_big = true;
    r->big_ok = true;
    r->cancel_on_first_body = true;
    get(f, "GET", "/big", r);
    assert_true(run_until(f, &r->cancelled));
    /* the server notices the closed connection: its send fails */
    bool closed = false;
    uint64_t end = mono_ms() + WAIT_MS;
    while (!(closed = atomic_load(&f->srv.closed) == 1) && mono_ms() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(closed);
    assert_int_equal(r->after_cancel, 0);
    assert_int_equal(r->dones, 0);
    assert_int_equal(r->bodies, 1);
    assert_true(r->big_ok);
    assert_int_equal(tp_upstream_in_flight(f->up), 0);
    /* the cancelled connection is not reused */
    result_t *r2 = new_result(f);
    get(f, "GET", "/fixed", r2);
    assert_true(run_until(f, &r2->done));
    assert_false(r2->failed);
    assert_int_equal(atomic_load(&f->srv.accepts), 2);
}

static void
test_reject_in_on_head(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    r->reject_head = true;
    get(f, "GET", "/chunked", r);
    assert_true(run_until(f, &r->cancelled));
    run_turns(f, 5);
    assert_int_equal(r->heads, 1);
    assert_int_equal(r->after_cancel, 0);
    assert_int_equal(tp_upstream_in_flight(f->up), 0);
}

/* Drives the loop until /big has been blocked on a full socket, with nothing more sent, for
 * `stable_ms`. Returns false if that did not happen within WAIT_MS. */
static bool
run_until_server_blocked(fixture_t *f, uint64_t stable_ms)
{
    uint64_t end = mono_ms() + WAIT_MS, since = 0;
    size_t last = SIZE_MAX;
    while (mono_ms() < end) {
        uv_run(&f->loop, UV_RUN_ONCE);
        size_t sent = atomic_load(&f->srv.big_sent);
        if (!atomic_load(&f->srv.big_blocked) || sent != last) {
            last = sent;
            since = mono_ms();
        } else if (mono_ms() - since >= stable_ms) {
            return true;
        }
    }
    return false;
}

static void
test_pause_stops_reading(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    tp_upstream_options_t opts = { .idle_timeout_ms = 200 };
    new_upstream(f, "", &opts);
    result_t *r = new_result(f);
    r->check_big = true;
    r->big_ok = true;
    r->pause_on_first_body = true;
    get(f, "GET", "/big", r);
    assert_true(run_until(f, &r->paused));
    size_t at_pause = r->body_len;

    /* paused for longer than the idle timeout: the server fills the socket buffers and blocks */
    assert_true(run_until_server_blocked(f, 300));
    size_t sent = atomic_load(&f->srv.big_sent);
    size_t buffered = sent - at_pause; /* in kernel buffers on either side, or unread */
    print_message("# paused after %zu bytes; the server sent %zu more, then blocked\n", at_pause, buffered);
    assert_false(r->done);
    assert_int_equal(r->after_cancel, 0); /* no on_body while paused */
    assert_int_equal(r->body_len, at_pause);
    assert_true(sent < BIG_SIZE);
    assert_true(buffered <= 8u * 1024 * 1024); /* socket buffers, not the body */

    r->paused = false;
    tp_upstream_resume(r->call);
    assert_true(run_until(f, &r->done));
    assert_false(r->failed);
    assert_int_equal(r->body_len, BIG_SIZE);
    assert_true(r->big_ok);
}

static void
test_pause_in_head_holds_the_end(void **state)
{
    fixture_t *f = *state;
    start_server(f, false);
    new_upstream(f, "", NULL);
    result_t *r = new_result(f);
    r->pause_in_head = true;
    get(f, "GET", "/fixed", r);
    assert_true(run_until(f, &r->paused));
    run_turns(f, 10);
    assert_int_equal(r->bodies, 0);
    assert_false(r->done);
    /* the whole response arrived with its head, so its connection is already back in the pool */
    result_t *r2 = new_result(f);
    get(f, "GET", "/fixed", r2);
    assert_true(run_until(f, &r2->done));
    assert_int_equal(atomic_load(&f->srv.accepts), 1);
    assert_int_equal(r->bodies, 0);

    r->paused = false;
    tp_upstream_resume(r->call);
    assert_int_equal(r->bodies, 0); /* delivery waits for the loop */
    assert_true(run_until(f, &r->done));
    assert_false(r->failed);
    assert_string_equal(r->body, "hello world");
    assert_int_equal(r->after_cancel, 0);
}

/* ---- https ---- */

/* A self-signed certificate for `dns_name`, its key, and the PEM of the certificate in a file. */
static SSL_CTX *
make_tls_server(const char *dns_name, char *ca_file, size_t ca_file_size)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"triplane test", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    char san[128];
    snprintf(san, sizeof(san), "DNS:%s", dns_name);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    assert_non_null(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);

    snprintf(ca_file, ca_file_size, "/tmp/test_upstream_ca.XXXXXX");
    int fd = mkstemp(ca_file);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    PEM_write_X509(fp, x);
    fclose(fp);

    SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate(ssl, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ssl, key), 1);
    X509_free(x);
    EVP_PKEY_free(key);
    return ssl;
}

/* The https tests reach the server as "localhost"; they need that to be 127.0.0.1 only. */
static bool
localhost_is_ipv4_loopback(void)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG }, *res;
    if (getaddrinfo("localhost", "80", &hints, &res) != 0)
        return false;
    bool ok = true;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET || ((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr != htonl(INADDR_LOOPBACK))
            ok = false;
    }
    freeaddrinfo(res);
    return ok;
}

static void
https_call(fixture_t *f, const char *cert_name, bool trust, result_t *r)
{
    if (!localhost_is_ipv4_loopback())
        skip();
    f->tls = make_tls_server(cert_name, f->ca_file, sizeof(f->ca_file));
    start_server(f, false);
    char url[128], *err = NULL;
    snprintf(url, sizeof(url), "https://localhost:%d", f->srv.port);
    tp_upstream_options_t opts = { .ca_file = trust ? f->ca_file : NULL };
    f->up = tp_upstream_new(url, &opts, &err);
    if (f->up == NULL)
        fail_msg("tp_upstream_new: %s", err);
    get(f, "GET", "/fixed", r);
    assert_true(run_until(f, &r->done));
}

static void
test_https_verified(void **state)
{
    fixture_t *f = *state;
    result_t *r = new_result(f);
    https_call(f, "localhost", true, r);
    if (r->failed)
        fail_msg("error: %s", r->error);
    assert_string_equal(r->body, "hello world");
    result_t *r2 = new_result(f);
    get(f, "GET", "/fixed", r2); /* over the pooled TLS connection */
    assert_true(run_until(f, &r2->done));
    assert_false(r2->failed);
    assert_int_equal(atomic_load(&f->srv.accepts), 1);
}

static void
test_https_untrusted_certificate(void **state)
{
    fixture_t *f = *state;
    result_t *r = new_result(f);
    https_call(f, "localhost", false, r);
    assert_true(r->failed);
    print_message("# %s\n", r->error);
    if (strncmp(r->error, "connect: ", 9) != 0)
        fail_msg("error: %s", r->error);
    assert_int_equal(r->heads, 0);
}

static void
test_https_wrong_name(void **state)
{
    fixture_t *f = *state;
    result_t *r = new_result(f);
    https_call(f, "other.example", true, r);
    assert_true(r->failed);
    print_message("# %s\n", r->error);
    if (strncmp(r->error, "connect: ", 9) != 0)
        fail_msg("error: %s", r->error);
    assert_int_equal(r->heads, 0);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    tp_log_init("test_upstream", TP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_bad_urls),
        cmocka_unit_test_setup_teardown(test_fixed_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_is_rendered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_request_fails_after_return, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_in_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_body_responses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_until_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_reuses_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_limit_queues_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_free_connection_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_byte_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_total_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_timeout_after_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_before_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_in_the_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_in_on_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_stops_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_in_head_holds_the_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_verified, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_untrusted_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_wrong_name, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
