/*
 * test_http_link.c — tests for mcp-gw/http_link.c (and the event IDs of common/sse.c it relies on).
 *
 * The link runs on a uv loop with an h2o context in the test thread, driven until the expected
 * callbacks have come (a 5 ms ticker keeps the loop turning; every wait is bounded). The MCP server
 * is a fake on 127.0.0.1: a thread per connection with blocking sockets, answering by the HTTP
 * method and the JSON-RPC method (tools/call: by the tool's name), and recording what it saw.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "http_link.h"
#include "log.h"
#include "sse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS      5000 /* bound on every wait */
#define MAX_CONNS    32
#define MAX_SEEN     32
#define MAX_GOT      16
#define MAX_MESSAGE  4096
#define TIMEOUT_MS   2000
#define SESSION      "sess-1"
#define PROTOCOL     "2025-06-18"
#define NOTIFICATION "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}"
#define PROGRESS                                                                                                       \
    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"p1\",\"progress\":1}}"

/* ---- the fake MCP server ---- */

/* One request as the server saw it. */
typedef struct seen {
    char method[8];
    char session[64]; /* Mcp-Session-Id; "" when absent */
    char version[32]; /* MCP-Protocol-Version */
    char accept[64];
    char ctype[64];
    char last_event_id[32];
    char rpc[64];  /* the body's JSON-RPC method; "" for none */
    char tool[32]; /* params.name of a tools/call */
} seen_t;

typedef struct fake {
    int lfd, port;
    int wake[2];
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_t threads[MAX_CONNS];
    int fds[MAX_CONNS];
    int nconns;
    seen_t seen[MAX_SEEN];
    int nseen;
    bool get_405;      /* GET answers 405 */
    bool session_gone; /* a request with a session id gets 404 */
    char drop_id[64];  /* the JSON id of the "drop" request, for the GET that resumes it */
} fake_t;

typedef struct conn {
    fake_t *srv;
    int fd;
    char buf[16384];
    size_t len;
} conn_t;

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool
put(conn_t *c, const char *fmt, ...)
{
    char buf[16384];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(buf));
    for (size_t off = 0; off < (size_t)n;) {
        ssize_t w = send(c->fd, buf + off, (size_t)n - off, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        off += (size_t)w;
    }
    return true;
}

/* One chunk of a chunked body. */
static bool
chunk(conn_t *c, const char *text)
{
    return put(c, "%zx\r\n%s\r\n", strlen(text), text);
}

static bool
json_reply(conn_t *c, int status, const char *extra, const char *body)
{
    return put(c, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n%s", status, extra,
               strlen(body), body);
}

static bool
sse_head(conn_t *c)
{
    return put(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
}

static bool
wait_for_close(conn_t *c)
{
    char b[1024];
    while (recv(c->fd, b, sizeof(b), 0) > 0)
        ;
    return false;
}

/* Copies the value of header `name` in head (up to its CRLF) into out; "" when absent. */
static void
header(const char *head, const char *name, char *out, size_t size)
{
    char key[64];
    snprintf(key, sizeof(key), "\r\n%s:", name);
    const char *p = strcasestr(head, key);
    out[0] = '\0';
    if (p == NULL)
        return;
    p += strlen(key);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\r");
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), p);
}

/* Reads one request; fills s and returns its body (malloc'd) in *body. False on EOF. */
static bool
read_request(conn_t *c, seen_t *s, char **body)
{
    char *end;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
        ssize_t n = c->len < sizeof(c->buf) - 1 ? recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0) : 0;
        if (n <= 0)
            return false;
        c->len += (size_t)n;
    }
    size_t head_len = (size_t)(end + 4 - c->buf);
    char *head = strndup(c->buf, head_len);
    char cl[32];
    header(head, "content-length", cl, sizeof(cl));
    size_t body_len = strtoul(cl, NULL, 10);
    while (c->len < head_len + body_len) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
        if (n <= 0) {
            free(head);
            return false;
        }
        c->len += (size_t)n;
    }
    memset(s, 0, sizeof(*s));
    sscanf(head, "%7s", s->method);
    header(head, "mcp-session-id", s->session, sizeof(s->session));
    header(head, "mcp-protocol-version", s->version, sizeof(s->version));
    header(head, "accept", s->accept, sizeof(s->accept));
    header(head, "content-type", s->ctype, sizeof(s->ctype));
    header(head, "last-event-id", s->last_event_id, sizeof(s->last_event_id));
    free(head);
    *body = strndup(c->buf + head_len, body_len);
    memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len);
    c->len -= head_len + body_len;
    return true;
}

static bool
respond_get(conn_t *c, const seen_t *s)
{
    fake_t *f = c->srv;
    pthread_mutex_lock(&f->mu);
    bool get_405 = f->get_405;
    pthread_mutex_unlock(&f->mu);
    if (get_405)
        return put(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
    if (strcmp(s->last_event_id, "d-2") == 0) { /* resuming the "drop" request's stream */
        char event[256];
        pthread_mutex_lock(&f->mu);
        snprintf(event, sizeof(event), "id: d-3\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{}}\n\n", f->drop_id);
        pthread_mutex_unlock(&f->mu);
        return sse_head(c) && chunk(c, event) && put(c, "0\r\n\r\n");
    }
    if (s->last_event_id[0] == '\0') /* the first GET: one notification, then the stream ends */
        return sse_head(c) && chunk(c, ": hello\nretry: 50\n\n") && chunk(c, "id: g-1\ndata: " NOTIFICATION "\n\n") &&
               put(c, "0\r\n\r\n");
    if (sse_head(c) && chunk(c, "id: g-2\ndata: " NOTIFICATION "\n\n"))
        wait_for_close(c); /* it stays open */
    return false;
}

static bool
respond_tool(conn_t *c, const char *tool, const char *id)
{
    char body[8192];
    if (strcmp(tool, "json") == 0) {
        snprintf(body, sizeof(body), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[]}}", id);
        return json_reply(c, 200, "", body);
    }
    if (strcmp(tool, "rpc-error") == 0) {
        snprintf(body, sizeof(body), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":{\"code\":-32602,\"message\":\"no\"}}",
                 id);
        return json_reply(c, 200, "", body);
    }
    if (strcmp(tool, "sse") == 0) {
        snprintf(body, sizeof(body), "data: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[]}}\n\n", id);
        size_t half = strlen(body) / 2;
        char first[4096];
        snprintf(first, sizeof(first), "%.*s", (int)half, body);
        return sse_head(c) && chunk(c, "id: s-0\ndata:\n\n") && chunk(c, "event: message\ndata: " PROGRESS "\n\n") &&
               chunk(c, "data: {\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"method\":\"sampling/createMessage\","
                        "\"params\":{\"messages\":[],\"maxTokens\":8}}\n\n") &&
               chunk(c, first) && chunk(c, body + half) && put(c, "0\r\n\r\n");
    }
    if (strcmp(tool, "boom") == 0)
        return json_reply(c, 500, "",
                          "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"kaboom\"}}");
    if (strcmp(tool, "big") == 0) {
        char text[MAX_MESSAGE * 2];
        memset(text, 'x', sizeof(text) - 1);
        text[sizeof(text) - 1] = '\0';
        return json_reply(c, 200, "", text); /* not even JSON: the size is what stops it */
    }
    if (strcmp(tool, "html") == 0)
        return put(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 4\r\n\r\n<p/>");
    if (strcmp(tool, "drop") == 0) {
        pthread_mutex_lock(&c->srv->mu);
        snprintf(c->srv->drop_id, sizeof(c->srv->drop_id), "%s", id);
        pthread_mutex_unlock(&c->srv->mu);
        if (sse_head(c) && chunk(c, "id: d-1\ndata:\n\n"))
            chunk(c, "id: d-2\ndata: " PROGRESS "\n\n");
        return false; /* the connection closes without ending the stream */
    }
    if (strcmp(tool, "drop-no-ids") == 0) {
        if (sse_head(c))
            chunk(c, "data: " PROGRESS "\n\n");
        return false;
    }
    if (strcmp(tool, "slow") == 0)
        return wait_for_close(c);
    return json_reply(c, 400, "", "{}");
}

/* Fills in the JSON-RPC method and tool name of a POST's body. */
static void
describe(seen_t *s, const char *body)
{
    json_t *msg = json_loads(body, 0, NULL);
    const char *rpc = json_string_value(json_object_get(msg, "method"));
    const char *tool = json_string_value(json_object_get(json_object_get(msg, "params"), "name"));
    snprintf(s->rpc, sizeof(s->rpc), "%s", rpc != NULL ? rpc : "");
    snprintf(s->tool, sizeof(s->tool), "%s", tool != NULL ? tool : "");
    json_decref(msg);
}

static bool
respond_post(conn_t *c, const seen_t *s, const char *body)
{
    json_t *msg = json_loads(body, 0, NULL);
    assert_non_null(msg);
    json_t *jid = json_object_get(msg, "id");
    char *id = jid != NULL ? json_dumps(jid, JSON_ENCODE_ANY) : NULL;
    pthread_mutex_lock(&c->srv->mu);
    bool gone = c->srv->session_gone;
    pthread_mutex_unlock(&c->srv->mu);
    bool keep;
    if (gone && s->session[0] != '\0') {
        keep = put(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    } else if (strcmp(s->rpc, "initialize") == 0) {
        char reply[512];
        snprintf(reply, sizeof(reply),
                 "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"protocolVersion\":\"" PROTOCOL "\","
                 "\"capabilities\":{},\"serverInfo\":{\"name\":\"fake\",\"version\":\"1\"}}}",
                 id);
        keep = json_reply(c, 200, "Mcp-Session-Id: " SESSION "\r\n", reply);
    } else if (id == NULL || s->rpc[0] == '\0') { /* a notification or a response */
        keep = put(c, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    } else {
        keep = respond_tool(c, s->tool, id);
    }
    free(id);
    json_decref(msg);
    return keep;
}

static void *
conn_main(void *arg)
{
    conn_t *c = arg;
    for (;;) {
        seen_t s;
        char *body = NULL;
        if (!read_request(c, &s, &body))
            break;
        if (strcmp(s.method, "POST") == 0)
            describe(&s, body);
        pthread_mutex_lock(&c->srv->mu);
        if (c->srv->nseen < MAX_SEEN)
            c->srv->seen[c->srv->nseen++] = s;
        pthread_mutex_unlock(&c->srv->mu);
        bool keep;
        if (strcmp(s.method, "GET") == 0) {
            keep = respond_get(c, &s);
        } else if (strcmp(s.method, "DELETE") == 0) {
            keep = put(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        } else {
            keep = respond_post(c, &s, body);
        }
        free(body);
        if (!keep)
            break;
    }
    shutdown(c->fd, SHUT_RDWR);
    free(c);
    return NULL;
}

static void *
acceptor_main(void *arg)
{
    fake_t *f = arg;
    for (;;) {
        struct pollfd pfd[2] = { { .fd = f->lfd, .events = POLLIN }, { .fd = f->wake[0], .events = POLLIN } };
        if (poll(pfd, 2, -1) < 0 && errno != EINTR)
            return NULL;
        if (pfd[1].revents != 0)
            return NULL;
        if ((pfd[0].revents & POLLIN) == 0)
            continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        conn_t *c = calloc(1, sizeof(*c));
        c->srv = f;
        c->fd = fd;
        pthread_mutex_lock(&f->mu);
        assert_true(f->nconns < MAX_CONNS);
        f->fds[f->nconns] = fd;
        pthread_create(&f->threads[f->nconns], NULL, conn_main, c);
        f->nconns++;
        pthread_mutex_unlock(&f->mu);
    }
}

static void
fake_start(fake_t *f)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(f->lfd, 64), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sin, &len), 0);
    f->port = ntohs(sin.sin_port);
    assert_int_equal(pipe(f->wake), 0);
    assert_int_equal(pthread_create(&f->acceptor, NULL, acceptor_main, f), 0);
}

static void
fake_stop(fake_t *f)
{
    assert_int_equal(write(f->wake[1], "x", 1), 1);
    pthread_join(f->acceptor, NULL);
    for (int i = 0; i < f->nconns; i++) {
        shutdown(f->fds[i], SHUT_RDWR); /* wakes a thread waiting for the client */
        pthread_join(f->threads[i], NULL);
        close(f->fds[i]);
    }
    close(f->lfd);
    close(f->wake[0]);
    close(f->wake[1]);
    pthread_mutex_destroy(&f->mu);
}

static void
fake_set(fake_t *f, bool *flag, bool value)
{
    pthread_mutex_lock(&f->mu);
    *flag = value;
    pthread_mutex_unlock(&f->mu);
}

/* A copy of what the server saw as its i-th request. */
static seen_t
seen(fake_t *f, int i)
{
    pthread_mutex_lock(&f->mu);
    assert_true(i < f->nseen);
    seen_t s = f->seen[i];
    pthread_mutex_unlock(&f->mu);
    return s;
}

static int
nseen(fake_t *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->nseen;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ---- the client side ---- */

typedef enum got_kind { GOT_MESSAGE, GOT_FAILURE, GOT_LOST } got_kind_t;

/* One callback, as the test saw it. */
typedef struct got {
    got_kind_t kind;
    json_t *msg; /* copies */
    json_t *via;
    json_t *id;
    int status;
    char why[256];
} got_t;

typedef struct fixture {
    uv_loop_t loop;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    uv_timer_t ticker;
    fake_t srv;
    mcp_http_server_t *server;
    mcp_http_link_t *link;
    got_t got[MAX_GOT];
    int ngot;
    bool close_on_message; /* close the link from inside the first on_message */
} fixture_t;

static void
on_tick(uv_timer_t *t)
{
}

static got_t *
record(fixture_t *f, got_kind_t kind, const json_t *id)
{
    assert_true(f->ngot < MAX_GOT);
    got_t *g = &f->got[f->ngot++];
    g->kind = kind;
    g->id = id != NULL ? json_deep_copy(id) : NULL;
    return g;
}

static void
on_message(mcp_http_link_t *l, void *data, json_t *msg, const json_t *via)
{
    fixture_t *f = data;
    got_t *g = record(f, GOT_MESSAGE, NULL);
    g->msg = json_deep_copy(msg);
    g->via = via != NULL ? json_deep_copy(via) : NULL;
    if (f->close_on_message) {
        f->close_on_message = false;
        mcp_http_link_close(l);
        f->link = NULL;
    }
}

static void
on_failure(mcp_http_link_t *l, void *data, const json_t *id, int status, const char *why)
{
    got_t *g = record(data, GOT_FAILURE, id);
    g->status = status;
    snprintf(g->why, sizeof(g->why), "%s", why);
    print_message("# failure: %d %s\n", status, why);
}

static void
on_session_lost(mcp_http_link_t *l, void *data, const json_t *id)
{
    record(data, GOT_LOST, id);
}

static const mcp_http_link_callbacks_t callbacks = { on_message, on_failure, on_session_lost };

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    h2o_config_init(&f->config);
    h2o_config_register_host(&f->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_context_init(&f->ctx, &f->loop, &f->config);
    uv_timer_init(&f->loop, &f->ticker);
    uv_timer_start(&f->ticker, on_tick, 5, 5);
    fake_start(&f->srv);
    *state = f;
    return 0;
}

/* Turns the loop until cond(f) holds or WAIT_MS passed. Returns cond(f). */
static bool
run_until(fixture_t *f, bool (*cond)(fixture_t *f, int n), int n)
{
    uint64_t end = mono_ms() + WAIT_MS;
    while (!cond(f, n) && mono_ms() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    return cond(f, n);
}

static void
run_for(fixture_t *f, uint64_t ms)
{
    uint64_t end = mono_ms() + ms;
    while (mono_ms() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static bool
got_at_least(fixture_t *f, int n)
{
    return f->ngot >= n;
}

static bool
seen_at_least(fixture_t *f, int n)
{
    return nseen(&f->srv) >= n;
}

static bool
links_at_most(fixture_t *f, int n)
{
    return mcp_http_server_links(f->server) <= (unsigned)n;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    if (f->link != NULL)
        mcp_http_link_close(f->link);
    if (f->server != NULL) {
        run_until(f, links_at_most, 0); /* the DELETE */
        assert_int_equal(mcp_http_server_links(f->server), 0);
        mcp_http_server_close_worker(f->server, &f->ctx);
        mcp_http_server_free(f->server);
    }
    fake_stop(&f->srv);
    for (int i = 0; i < f->ngot; i++) {
        json_decref(f->got[i].msg);
        json_decref(f->got[i].via);
        json_decref(f->got[i].id);
    }
    uv_close((uv_handle_t *)&f->ticker, NULL);
    h2o_context_dispose(&f->ctx);
    h2o_config_dispose(&f->config);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* until every handle has closed */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void
connect_link(fixture_t *f, int port, size_t max_message, uint64_t timeout_ms)
{
    char url[128], *err = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/mcp", port);
    tp_upstream_header_t auth = { h2o_iovec_init(H2O_STRLIT("Authorization")), h2o_iovec_init(H2O_STRLIT("Bearer x")) };
    mcp_http_server_options_t o = { .name = "fake",
                                    .url = url,
                                    .headers = &auth,
                                    .num_headers = 1,
                                    .max_message_bytes = max_message,
                                    .timeout_ms = timeout_ms,
                                    .idle_timeout_ms = 1000 };
    f->server = mcp_http_server_new(&o, &err);
    if (f->server == NULL)
        fail_msg("mcp_http_server_new: %s", err);
    f->link = mcp_http_link_new(f->server, &f->ctx, &callbacks, f);
}

static void
send_text(fixture_t *f, const char *text)
{
    json_t *msg = json_loads(text, 0, NULL);
    assert_non_null(msg);
    mcp_http_link_send(f->link, msg);
    json_decref(msg);
}

static void
call_tool(fixture_t *f, int id, const char *tool)
{
    json_t *msg = json_pack("{s:s, s:i, s:s, s:{s:s}}", "jsonrpc", "2.0", "id", id, "method", "tools/call", "params",
                            "name", tool);
    mcp_http_link_send(f->link, msg);
    json_decref(msg);
}

/* Checks that callback i is a message with the given method (or, for NULL, a response) and via. */
static void
assert_message(fixture_t *f, int i, const char *method, int via)
{
    assert_true(i < f->ngot);
    got_t *g = &f->got[i];
    assert_int_equal(g->kind, GOT_MESSAGE);
    const char *m = json_string_value(json_object_get(g->msg, "method"));
    if (method != NULL) {
        assert_non_null(m);
        assert_string_equal(m, method);
    } else {
        assert_null(m);
    }
    if (via < 0) {
        assert_null(g->via);
    } else {
        assert_non_null(g->via);
        assert_int_equal(json_integer_value(g->via), via);
    }
}

/* Connects, initializes and sends notifications/initialized. Leaves the callbacks empty. */
static void
initialize(fixture_t *f)
{
    connect_link(f, f->srv.port, MAX_MESSAGE, TIMEOUT_MS);
    assert_null(mcp_http_link_session_id(f->link));
    send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":"
                 "\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}");
    assert_int_equal(f->ngot, 0); /* no callback inside send */
    assert_true(run_until(f, got_at_least, 1));
    assert_message(f, 0, NULL, 1);
    assert_int_equal(json_integer_value(json_object_get(f->got[0].msg, "id")), 1);
    assert_string_equal(mcp_http_link_session_id(f->link), SESSION);
    assert_string_equal(mcp_http_link_protocol_version(f->link), PROTOCOL);
    send_text(f, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
    assert_true(run_until(f, seen_at_least, 2));
    run_for(f, 20);
    assert_int_equal(f->ngot, 1); /* 202: nothing to say */
    json_decref(f->got[0].msg);
    json_decref(f->got[0].via);
    memset(&f->got[0], 0, sizeof(f->got[0]));
    f->ngot = 0;
}

/* ---- tests ---- */

static void
test_server_options(void **state)
{
    static const char *const bad[] = { "ftp://example.com/mcp", "http://example.com/mcp#x", "http://exa mple.com/",
                                       "http://example.com/a b" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        mcp_http_server_options_t o = { .name = "x", .url = bad[i] };
        if (mcp_http_server_new(&o, &err) != NULL)
            fail_msg("accepted %s", bad[i]);
        print_message("# %s\n", err);
        assert_non_null(strstr(err, "mcp server \"x\""));
        free(err);
    }
    tp_upstream_header_t hd = { h2o_iovec_init(H2O_STRLIT("mcp-session-id")), h2o_iovec_init(H2O_STRLIT("a")) };
    mcp_http_server_options_t o = { .name = "x", .url = "http://example.com/mcp", .headers = &hd, .num_headers = 1 };
    char *err = NULL;
    assert_null(mcp_http_server_new(&o, &err));
    assert_non_null(strstr(err, "mcp-session-id"));
    free(err);
    o = (mcp_http_server_options_t){ .url = "http://example.com:8080?key=1" };
    mcp_http_server_t *s = mcp_http_server_new(&o, &err);
    assert_non_null(s);
    assert_int_equal(mcp_http_server_links(s), 0);
    mcp_http_server_free(s);
}

static void
test_initialize_then_session_headers(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    seen_t init = seen(&f->srv, 0), note = seen(&f->srv, 1);
    assert_string_equal(init.method, "POST");
    assert_string_equal(init.rpc, "initialize");
    assert_string_equal(init.session, "");
    assert_string_equal(init.version, "");
    assert_string_equal(init.accept, "application/json, text/event-stream");
    assert_string_equal(init.ctype, "application/json");
    assert_string_equal(note.rpc, "notifications/initialized");
    assert_string_equal(note.session, SESSION);
    assert_string_equal(note.version, PROTOCOL);
}

static void
test_json_answers(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    call_tool(f, 7, "json");
    call_tool(f, 8, "rpc-error");
    assert_true(run_until(f, got_at_least, 2));
    for (int i = 0; i < 2; i++) {
        got_t *g = &f->got[i];
        assert_int_equal(g->kind, GOT_MESSAGE);
        assert_int_equal(json_integer_value(json_object_get(g->msg, "id")), json_integer_value(g->via));
        if (json_integer_value(g->via) == 8) /* a JSON-RPC error is a message like any */
            assert_string_equal(json_string_value(json_object_get(json_object_get(g->msg, "error"), "message")), "no");
        else
            assert_non_null(json_object_get(g->msg, "result"));
    }
    seen_t s = seen(&f->srv, 2);
    assert_string_equal(s.session, SESSION);
    assert_string_equal(s.version, PROTOCOL);
}

static void
test_sse_answer_with_messages_before(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    call_tool(f, 3, "sse");
    assert_true(run_until(f, got_at_least, 3));
    run_for(f, 20);
    assert_int_equal(f->ngot, 3);
    assert_message(f, 0, "notifications/progress", 3);
    assert_message(f, 1, "sampling/createMessage", 3);
    assert_message(f, 2, NULL, 3);
    assert_int_equal(json_integer_value(json_object_get(f->got[2].msg, "id")), 3);
    /* the answer to the server's request goes back as a POST, accepted with 202 */
    send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"result\":{\"role\":\"assistant\"}}");
    assert_true(run_until(f, seen_at_least, 4));
    run_for(f, 20);
    assert_int_equal(f->ngot, 3);
    seen_t s = seen(&f->srv, 3);
    assert_string_equal(s.rpc, "");
    assert_string_equal(s.session, SESSION);
}

static void
test_session_lost_on_404(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    fake_set(&f->srv, &f->srv.session_gone, true);
    call_tool(f, 4, "json");
    assert_true(run_until(f, got_at_least, 1));
    assert_int_equal(f->got[0].kind, GOT_LOST);
    assert_int_equal(json_integer_value(f->got[0].id), 4);
    assert_null(mcp_http_link_session_id(f->link));
    /* the broker re-initializes through the same link: without the old session id */
    send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"initialize\",\"params\":{}}");
    assert_true(run_until(f, got_at_least, 2));
    assert_message(f, 1, NULL, 5);
    seen_t s = seen(&f->srv, 3);
    assert_string_equal(s.rpc, "initialize");
    assert_string_equal(s.session, "");
    assert_string_equal(mcp_http_link_session_id(f->link), SESSION);
}

static void
test_http_error_is_a_failure(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    call_tool(f, 6, "boom");
    assert_true(run_until(f, got_at_least, 1));
    assert_int_equal(f->got[0].kind, GOT_FAILURE);
    assert_int_equal(json_integer_value(f->got[0].id), 6);
    assert_int_equal(f->got[0].status, 500);
    assert_string_equal(f->got[0].why, "HTTP 500: kaboom");
}

static void
test_connection_refused(void **state)
{
    fixture_t *f = *state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    close(fd); /* nothing listens there now */
    connect_link(f, ntohs(sin.sin_port), MAX_MESSAGE, TIMEOUT_MS);
    send_text(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}");
    assert_true(run_until(f, got_at_least, 1));
    assert_int_equal(f->got[0].kind, GOT_FAILURE);
    assert_int_equal(json_integer_value(f->got[0].id), 1);
    assert_int_equal(f->got[0].status, 0);
    assert_int_equal(strncmp(f->got[0].why, "connect: ", 9), 0);
}

static void
test_bad_responses_fail(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    call_tool(f, 10, "big");
    assert_true(run_until(f, got_at_least, 1));
    assert_int_equal(f->got[0].kind, GOT_FAILURE);
    assert_int_equal(json_integer_value(f->got[0].id), 10);
    assert_string_equal(f->got[0].why, "a message over 4096 bytes");
    call_tool(f, 11, "html");
    assert_true(run_until(f, got_at_least, 2));
    assert_int_equal(f->got[1].kind, GOT_FAILURE);
    assert_int_equal(f->got[1].status, 200);
    assert_non_null(strstr(f->got[1].why, "text/html"));
    call_tool(f, 12, "drop-no-ids");
    assert_true(run_until(f, got_at_least, 4));
    assert_message(f, 2, "notifications/progress", 12);
    assert_int_equal(f->got[3].kind, GOT_FAILURE);
    assert_int_equal(json_integer_value(f->got[3].id), 12);
    assert_int_equal(f->got[3].status, 0);
}

static void
test_dropped_stream_resumes_with_last_event_id(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    call_tool(f, 9, "drop");
    assert_true(run_until(f, got_at_least, 2));
    assert_message(f, 0, "notifications/progress", 9);
    assert_message(f, 1, NULL, 9); /* the response, from the GET that resumed the stream */
    assert_int_equal(json_integer_value(json_object_get(f->got[1].msg, "id")), 9);
    seen_t s = seen(&f->srv, 3);
    assert_string_equal(s.method, "GET");
    assert_string_equal(s.last_event_id, "d-2");
    assert_string_equal(s.accept, "text/event-stream");
    assert_string_equal(s.session, SESSION);
}

static void
test_timeout_and_abandon(void **state)
{
    fixture_t *f = *state;
    connect_link(f, f->srv.port, MAX_MESSAGE, 300);
    call_tool(f, 1, "slow");
    call_tool(f, 2, "slow");
    assert_true(run_until(f, seen_at_least, 2));
    json_t *two = json_integer(2);
    mcp_http_link_abandon(f->link, two);
    json_decref(two);
    uint64_t start = mono_ms();
    assert_true(run_until(f, got_at_least, 1));
    uint64_t took = mono_ms() - start;
    run_for(f, 400);
    assert_int_equal(f->ngot, 1); /* nothing for the abandoned request */
    assert_int_equal(f->got[0].kind, GOT_FAILURE);
    assert_int_equal(json_integer_value(f->got[0].id), 1);
    assert_string_equal(f->got[0].why, "timeout: no response in 300 ms");
    assert_true(took < 1500);
}

static void
test_get_stream(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    mcp_http_link_listen(f->link);
    mcp_http_link_listen(f->link);              /* a no-op */
    assert_true(run_until(f, got_at_least, 2)); /* the second after a reconnection */
    assert_message(f, 0, "notifications/tools/list_changed", -1);
    assert_message(f, 1, "notifications/tools/list_changed", -1);
    seen_t first = seen(&f->srv, 2), second = seen(&f->srv, 3);
    assert_string_equal(first.method, "GET");
    assert_string_equal(first.accept, "text/event-stream");
    assert_string_equal(first.session, SESSION);
    assert_string_equal(first.version, PROTOCOL);
    assert_string_equal(first.last_event_id, "");
    assert_string_equal(second.method, "GET");
    assert_string_equal(second.last_event_id, "g-1");
    /* and requests go on beside it */
    call_tool(f, 2, "json");
    assert_true(run_until(f, got_at_least, 3));
    assert_message(f, 2, NULL, 2);
}

static void
test_get_405_stops(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    fake_set(&f->srv, &f->srv.get_405, true);
    mcp_http_link_listen(f->link);
    assert_true(run_until(f, seen_at_least, 3));
    run_for(f, 1200); /* past a reconnection's delay */
    assert_int_equal(nseen(&f->srv), 3);
    assert_int_equal(f->ngot, 0);
    mcp_http_link_listen(f->link); /* still a no-op until the next initialize */
    run_for(f, 100);
    assert_int_equal(nseen(&f->srv), 3);
}

static void
test_close_sends_delete(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    call_tool(f, 2, "slow"); /* cancelled by the close */
    assert_true(run_until(f, seen_at_least, 2));
    mcp_http_link_close(f->link);
    f->link = NULL;
    assert_int_equal(mcp_http_server_links(f->server), 1); /* until the DELETE ends */
    assert_true(run_until(f, links_at_most, 0));
    assert_int_equal(f->ngot, 0);
    bool deleted = false;
    for (int i = 0; i < nseen(&f->srv); i++) {
        seen_t s = seen(&f->srv, i);
        if (strcmp(s.method, "DELETE") == 0) {
            assert_string_equal(s.session, SESSION);
            assert_string_equal(s.version, PROTOCOL);
            deleted = true;
        }
    }
    assert_true(deleted);
}

static void
test_close_from_a_callback(void **state)
{
    fixture_t *f = *state;
    initialize(f);
    f->close_on_message = true;
    call_tool(f, 3, "sse");
    assert_true(run_until(f, got_at_least, 1));
    assert_true(run_until(f, links_at_most, 0));
    run_for(f, 50);
    assert_int_equal(f->ngot, 1); /* the progress notification, then nothing */
}

static int
collect_id(void *data, const char *event, size_t len)
{
    tp_sse_t *s = ((void **)data)[0];
    char *out = ((void **)data)[1];
    const char *id = tp_sse_last_id(s);
    snprintf(out + strlen(out), 64, "[%.*s@%s]", (int)len, event, id != NULL ? id : "-");
    return 0;
}

static void
test_sse_event_ids(void **state)
{
    static const char stream[] = "id: 1\ndata:\n\n"     /* a priming event: ID, no message */
                                 "data: a\n\n"          /* no id: keeps the last */
                                 "id: 2\nretry: 75\n\n" /* no data: no event, but the ID counts */
                                 "id: 3\ndata: b\nretry: x\n\n"
                                 "id: 4\n"; /* not ended: not yet the last ID */
    char out[256] = "";
    tp_sse_t s;
    tp_sse_init(&s, 64);
    void *ctx[2] = { &s, out };
    assert_null(tp_sse_last_id(&s));
    assert_int_equal(tp_sse_retry_ms(&s), -1);
    assert_int_equal(tp_sse_feed(&s, stream, sizeof(stream) - 1, collect_id, ctx), 0);
    assert_string_equal(out, "[@1][a@1][b@3]");
    assert_string_equal(tp_sse_last_id(&s), "3");
    assert_int_equal(tp_sse_retry_ms(&s), 75);
    assert_int_equal(tp_sse_feed(&s, "\nid\n\n", 5, collect_id, ctx), 0);
    assert_null(tp_sse_last_id(&s)); /* "4" then an empty id, which resets it */
    tp_sse_dispose(&s);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    tp_log_init("test_http_link", TP_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_options),
        cmocka_unit_test(test_sse_event_ids),
        cmocka_unit_test_setup_teardown(test_initialize_then_session_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sse_answer_with_messages_before, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_lost_on_404, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_error_is_a_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_responses_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropped_stream_resumes_with_last_event_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_and_abandon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_405_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_sends_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_a_callback, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
