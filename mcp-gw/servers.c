/*
 * servers.c — the upstream MCP servers: links, handshakes, calls in flight, catalogs.
 *
 * A Streamable HTTP server gets one upstream session per client session (a link each), so its
 * per-session state (log level, subscriptions, server-to-client requests) stays with the client
 * it belongs to. A stdio server is one child process shared by every session, with one link:
 * answers and progress still reach the right client (below), but what the child sends
 * unprompted names no session, and the broker can only attribute it by which sessions have calls
 * in flight (gateway.h). Per-session attribution needs an HTTP upstream. The child holds one
 * subscription per uri for every session: the server counts the sessions subscribed to each uri,
 * and unsubscribes upstream only when the last one leaves.
 *
 * Every request the gateway sends upstream gets an id of its own (a counter), so answers from a
 * shared server can never reach the wrong client; the client's id is restored on the way back.
 * An answer from an HTTP server is taken only from the link its call went on.
 *
 * Catalogs (tools, prompts, resources, resource templates) are fetched once per server, every
 * page, and kept until the server says its list changed or the server restarts. Tools pass the
 * pin check (pins.h) before they are published: a tool whose definition drifted is quarantined.
 * A fetch that was cancelled (the session whose link carried it ended) or that raced a change is
 * started again through a waiting session, a few times at most, so waiters are never stranded.
 */
#include "gateway.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"
#include "clock.h"
#include "http_link.h"
#include "jsonschema.h"
#include "log.h"
#include "mem.h"
#include "pins.h"

#define CATALOG_MAX_PAGES   100 /* pages fetched from one upstream list before giving up */
#define CATALOG_MAX_RETRIES 3   /* fetches restarted in a row for waiters before they get nothing */

enum { CAT_TOOLS, CAT_PROMPTS, CAT_RESOURCES, CAT_TEMPLATES, CAT_COUNT };

static const struct {
    const char *kind;   /* as in mcp_catalog_ensure */
    const char *method; /* the upstream method */
    const char *field;  /* the result's array */
    const char *capability;
} catalogs[CAT_COUNT] = {
    { "tools", "tools/list", "tools", "tools" },
    { "prompts", "prompts/list", "prompts", "prompts" },
    { "resources", "resources/list", "resources", "resources" },
    { "resourceTemplates", "resources/templates/list", "resourceTemplates", "resources" },
};

/* Calls waiting for a link's handshake, oldest first. */
typedef struct mcp_call_queue {
    mcp_call_t *head, *tail;
} call_queue_t;

struct mcp_link {
    mcp_server_t *server;
    mcp_session_t *session; /* the session it belongs to; NULL for a stdio server's shared link */
    mcp_http_link_t *http;
    mcp_link_state_t state;
    json_t *init_result;
    uint64_t generation; /* stdio: the child generation it was initialised with */
    call_queue_t queue;  /* calls waiting for READY */
};

typedef struct catalog_waiter {
    void (*ready)(void *data);
    void *data;
    mcp_session_t *session; /* whose request waits (the ensure holds a reference) */
    struct catalog_waiter *next;
} catalog_waiter_t;

typedef struct catalog {
    json_t *items; /* every page's items, as the upstream sent them; NULL when not loaded */
    bool loading;
    json_t *partial; /* pages so far */
    int pages;
    int retries; /* fetches restarted in a row for the waiters (CATALOG_MAX_RETRIES) */
    catalog_waiter_t *waiters;
    uint64_t epoch; /* bumped when invalidated, so a fetch that raced a change is discarded */
} catalog_t;

struct mcp_server {
    mcp_gateway_t *gw;
    const tp_mcp_server_config_t *cfg;
    size_t index;
    char *prefix;
    bool stdio;
    mcp_http_server_t *http;
    mcp_stdio_t *child;
    mcp_link_t *shared; /* stdio */
    bool up;            /* stdio: running; http: last call reached it */
    catalog_t cat[CAT_COUNT];
    mcp_tool_t *tools; /* published (not quarantined) */
    size_t num_tools;
    mcp_tool_t *prompts;
    size_t num_prompts;
    size_t quarantined;
    mcp_call_t *calls;   /* in flight (sent), doubly linked */
    json_t *subscribers; /* stdio: uri -> number of sessions subscribed through the shared child */
};

/* ---- small helpers ---- */

static const char *
srv_down_reason(const mcp_server_t *srv)
{
    return srv->stdio ? "it is not running (restarting)" : "no session";
}

const char *
mcp_server_name(const mcp_server_t *srv)
{
    return srv->cfg->name;
}

size_t
mcp_server_index(const mcp_server_t *srv)
{
    return srv->index;
}

mcp_gateway_t *
mcp_server_gateway(const mcp_server_t *srv)
{
    return srv->gw;
}

mcp_session_t *
mcp_server_sole_caller(const mcp_server_t *srv)
{
    mcp_session_t *found = NULL;
    for (const mcp_call_t *c = srv->calls; c != NULL; c = c->next_in_server) {
        if (c->session == NULL || c->done != NULL)
            continue;
        if (found != NULL && found != c->session)
            return NULL;
        found = c->session;
    }
    return found;
}

mcp_call_t *
mcp_server_call_by_token(const mcp_server_t *srv, const char *token)
{
    for (mcp_call_t *c = srv->calls; c != NULL; c = c->next_in_server) {
        if (c->progress_token != NULL && strcmp(c->progress_token, token) == 0)
            return c;
    }
    return NULL;
}

static void
ignore_answer(mcp_call_t *c, json_t *response)
{
}

void
mcp_server_request_quiet(mcp_server_t *srv, mcp_session_t *session, const char *method, const json_t *params)
{
    json_t *req = json_pack("{s:s, s:i, s:s, s:O}", "jsonrpc", "2.0", "id", 0, "method", method, "params", params);
    mcp_call_t *c = mcp_call_new(srv, srv->stdio ? NULL : session, req, method);
    json_decref(req);
    c->done = ignore_answer;
    mcp_call_start(c);
}

bool
mcp_server_available(const mcp_server_t *srv)
{
    return !srv->stdio || srv->up;
}

static json_t *
upstream_error(const json_t *id, const mcp_server_t *srv, const char *why)
{
    char *msg = tp_sprintf("MCP server \"%s\" is unavailable: %.*s", srv->cfg->name, mcp_utf8_cut(why, 300), why);
    json_t *err = mcp_jsonrpc_error(id, MCP_ERR_UPSTREAM, msg, json_pack("{s:s}", "server", srv->cfg->name));
    free(msg);
    return err;
}

/* ---- where a call is: its link's queue, its server's calls in flight, its session's calls ---- */

static void
queue_push(call_queue_t *q, mcp_call_t *c)
{
    assert(c->state == MCP_CALL_NEW);
    c->state = MCP_CALL_QUEUED;
    c->queue = q;
    c->next_in_queue = NULL;
    c->prev_in_queue = q->tail;
    if (q->tail != NULL)
        q->tail->next_in_queue = c;
    else
        q->head = c;
    q->tail = c;
}

static void
queue_remove(mcp_call_t *c)
{
    call_queue_t *q = c->queue;
    if (c->prev_in_queue != NULL)
        c->prev_in_queue->next_in_queue = c->next_in_queue;
    else
        q->head = c->next_in_queue;
    if (c->next_in_queue != NULL)
        c->next_in_queue->prev_in_queue = c->prev_in_queue;
    else
        q->tail = c->prev_in_queue;
    c->next_in_queue = c->prev_in_queue = NULL;
    c->queue = NULL;
    c->state = MCP_CALL_NEW;
}

static void
server_list_add(mcp_call_t *c)
{
    mcp_server_t *srv = c->server;
    assert(c->state == MCP_CALL_NEW);
    c->state = MCP_CALL_SENT;
    c->next_in_server = srv->calls;
    c->prev_in_server = NULL;
    if (srv->calls != NULL)
        srv->calls->prev_in_server = c;
    srv->calls = c;
}

static void
server_list_remove(mcp_call_t *c)
{
    mcp_server_t *srv = c->server;
    if (c->prev_in_server != NULL)
        c->prev_in_server->next_in_server = c->next_in_server;
    else
        srv->calls = c->next_in_server;
    if (c->next_in_server != NULL)
        c->next_in_server->prev_in_server = c->prev_in_server;
    c->next_in_server = c->prev_in_server = NULL;
    c->state = MCP_CALL_NEW;
}

/* Takes the call off its queue or its server's list, whichever holds it. */
static void
call_unlink(mcp_call_t *c)
{
    if (c->state == MCP_CALL_QUEUED)
        queue_remove(c);
    else if (c->state == MCP_CALL_SENT)
        server_list_remove(c);
}

static void
session_list_remove(mcp_call_t *c)
{
    mcp_session_t *s = c->session;
    if (s == NULL)
        return;
    if (c->prev_in_session != NULL)
        c->prev_in_session->next_in_session = c->next_in_session;
    else if (s->calls == c)
        s->calls = c->next_in_session;
    if (c->next_in_session != NULL)
        c->next_in_session->prev_in_session = c->prev_in_session;
    c->next_in_session = c->prev_in_session = NULL;
}

static void
on_timer_closed(uv_handle_t *h)
{
    free(h);
}

static void
call_free(mcp_call_t *c)
{
    call_unlink(c);
    if (c->session != NULL && c->client_id != NULL)
        mcp_broker_call_ended(c);
    session_list_remove(c);
    if (c->timer != NULL) {
        uv_timer_stop(c->timer);
        uv_close((uv_handle_t *)c->timer, on_timer_closed);
    }
    if (c->session != NULL)
        mcp_session_unref(c->session);
    json_decref(c->request);
    json_decref(c->client_id);
    json_decref(c->client_token);
    json_decref(c->audit);
    free(c->progress_token);
    free(c->target);
    free(c);
}

static mcp_call_t *
find_call(mcp_server_t *srv, const json_t *id)
{
    if (!json_is_integer(id))
        return NULL;
    uint64_t want = (uint64_t)json_integer_value(id);
    for (mcp_call_t *c = srv->calls; c != NULL; c = c->next_in_server) {
        if (c->up_id == want)
            return c;
    }
    return NULL;
}

/* The call in flight with this id on link l: an HTTP server's answer on one client's link never
 * finishes a call sent on another's, whatever id it carries. */
static mcp_call_t *
link_call(mcp_link_t *l, const json_t *id)
{
    mcp_call_t *c = find_call(l->server, id);
    return c != NULL && c->link == l ? c : NULL;
}

/* ---- finishing calls ---- */

void
mcp_call_finish(mcp_call_t *c, json_t *response)
{
    double ms = (double)(tp_mono_ns() - c->start_ns) / 1e6;
    tp_metric_observe(c->gw->metrics.call_seconds, (const char *[]){ c->server->cfg->name, c->method }, ms / 1000.0);
    if (c->done != NULL) {
        call_unlink(c);
        c->done(c, response);
        call_free(c);
        return;
    }
    /* A forwarded request: the client's id goes back, and the answer ends its stream (an answer
     * that could not be built still ends it, as an error: see mcp_stream_send). */
    json_t *out = response != NULL ? json_copy(response) : NULL;
    json_object_set(out, "id", c->client_id);
    if (c->audit != NULL) {
        const json_t *result = json_object_get(response, "result");
        const char *outcome = response == NULL || json_object_get(response, "error") != NULL ? "error"
                              : json_is_true(json_object_get(result, "isError"))             ? "tool_error"
                                                                                             : "ok";
        mcp_audit_call(c->gw, c->session != NULL ? c->session->principal : "", c->method, c->target, outcome, ms,
                       json_incref(c->audit));
    }
    if (c->stream != NULL)
        mcp_stream_send(c->stream, out, true);
    json_decref(out);
    call_free(c);
}

static void
call_fail(mcp_call_t *c, const char *why)
{
    json_t *id = json_integer((json_int_t)c->up_id);
    json_t *err = upstream_error(id, c->server, why);
    json_decref(id);
    mcp_call_finish(c, err);
    json_decref(err);
}

/* ---- sending ---- */

static void link_send(mcp_link_t *l, json_t *msg);

static void
on_call_timeout(uv_timer_t *t)
{
    mcp_call_t *c = t->data;
    char why[64];
    snprintf(why, sizeof(why), "no answer within %d ms", c->server->cfg->timeout_ms);
    json_t *cancel = json_pack("{s:s, s:s, s:{s:I, s:s}}", "jsonrpc", "2.0", "method", "notifications/cancelled",
                               "params", "requestId", (json_int_t)c->up_id, "reason", "timed out");
    if (c->link != NULL && c->link->state == MCP_LINK_READY)
        link_send(c->link, cancel);
    json_decref(cancel);
    if (c->link != NULL && c->link->http != NULL) {
        json_t *id = json_integer((json_int_t)c->up_id);
        mcp_http_link_abandon(c->link->http, id);
        json_decref(id);
    }
    call_fail(c, why);
}

static void
link_send(mcp_link_t *l, json_t *msg)
{
    mcp_server_t *srv = l->server;
    if (l->http != NULL) {
        mcp_http_link_send(l->http, msg);
        return;
    }
    char *text = json_dumps(msg, JSON_COMPACT);
    int rv = text != NULL ? mcp_stdio_send(srv->child, text, strlen(text)) : -ENOMEM;
    free(text);
    if (rv != 0 && json_object_get(msg, "method") != NULL && json_object_get(msg, "id") != NULL) {
        mcp_call_t *c = find_call(srv, json_object_get(msg, "id"));
        if (c != NULL)
            call_fail(c, rv == -ENOBUFS ? "its input is backed up" : "it is not running");
    }
}

/* Puts a call in flight on its link. */
static void
call_send(mcp_call_t *c)
{
    mcp_server_t *srv = c->server;
    server_list_add(c);
    if (c->link->http == NULL && c->timer == NULL) {
        c->timer = tp_malloc(sizeof(*c->timer));
        uv_timer_init(c->gw->loop, c->timer);
        c->timer->data = c;
        uv_timer_start(c->timer, on_call_timeout, (uint64_t)srv->cfg->timeout_ms, 0);
    }
    link_send(c->link, c->request);
}

static void link_flush_queue(mcp_link_t *l, const char *failure);
static void link_cancel_queue(mcp_link_t *l, const char *reason);
static void prefetch(mcp_server_t *srv);

static void
on_initialized(mcp_call_t *c, json_t *response)
{
    mcp_link_t *l = c->done_data;
    if (response == NULL) { /* cancelled: the session the link belongs to ended */
        l->state = MCP_LINK_FAILED;
        link_cancel_queue(l, "the client session ended");
        return;
    }
    json_t *result = json_object_get(response, "result");
    if (!json_is_object(result)) {
        l->state = MCP_LINK_FAILED;
        const char *e = json_string_value(json_object_get(json_object_get(response, "error"), "message"));
        if (e == NULL)
            e = "no answer";
        char *why = tp_sprintf("initialize failed: %.*s", mcp_utf8_cut(e, 250), e);
        tp_log_fields(TP_LOG_WARN, NULL, "upstream initialize failed",
                      json_pack("{s:s, s:s}", "server", l->server->cfg->name, "error", why));
        link_flush_queue(l, why);
        free(why);
        return;
    }
    json_decref(l->init_result);
    l->init_result = json_incref(result);
    l->state = MCP_LINK_READY;
    l->server->up = true;
    tp_metric_set(l->server->gw->metrics.server_up, (const char *[]){ l->server->cfg->name }, 1);
    json_t *note = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", "notifications/initialized");
    link_send(l, note);
    json_decref(note);
    if (l->http != NULL)
        mcp_http_link_listen(l->http);
    link_flush_queue(l, NULL);
    if (l->session == NULL)
        prefetch(l->server);
}

/* The capabilities the gateway declares upstream: what the client declared (HTTP links belong
 * to one client), or everything it can relay (a shared stdio child serves every client). */
static json_t *
client_capabilities(const mcp_link_t *l)
{
    if (l->session != NULL && l->session->client_capabilities != NULL)
        return json_deep_copy(l->session->client_capabilities);
    return json_pack("{s:{}, s:{}, s:{s:b}}", "sampling", "elicitation", "roots", "listChanged", 1);
}

static void
link_initialize(mcp_link_t *l)
{
    mcp_server_t *srv = l->server;
    l->state = MCP_LINK_INITIALIZING;
    if (l->http == NULL)
        l->generation = mcp_stdio_generation(srv->child);
    json_t *req = json_pack("{s:s, s:i, s:s, s:{s:s, s:o, s:{s:s, s:s}}}", "jsonrpc", "2.0", "id", 0, "method",
                            "initialize", "params", "protocolVersion", MCP_PROTOCOL_LATEST, "capabilities",
                            client_capabilities(l), "clientInfo", "name", "triplane-mcp-gw", "version", TP_VERSION);
    mcp_call_t *c = mcp_call_new(srv, l->session, req, "initialize");
    json_decref(req);
    c->done = on_initialized;
    c->done_data = l;
    c->link = l;
    call_send(c);
}

/* Moves the link's queue into `into`: what finishing those calls enqueues again (a new handshake,
 * say) waits in the link's queue for its own turn, and a call cancelled meanwhile leaves `into`. */
static void
queue_take(mcp_link_t *l, call_queue_t *into)
{
    *into = l->queue;
    l->queue.head = l->queue.tail = NULL;
    for (mcp_call_t *c = into->head; c != NULL; c = c->next_in_queue)
        c->queue = into;
}

/* Sends the calls that waited for the handshake, or fails them all with `failure`. */
static void
link_flush_queue(mcp_link_t *l, const char *failure)
{
    call_queue_t q;
    queue_take(l, &q);
    mcp_call_t *c;
    while ((c = q.head) != NULL) {
        queue_remove(c);
        if (failure != NULL)
            call_fail(c, failure);
        else
            call_send(c);
    }
}

static void
link_cancel_queue(mcp_link_t *l, const char *reason)
{
    call_queue_t q;
    queue_take(l, &q);
    while (q.head != NULL)
        mcp_call_cancel(q.head, reason);
}

/* ---- HTTP links ---- */

static void
on_http_message(mcp_http_link_t *h, void *data, json_t *msg, const json_t *via)
{
    mcp_link_t *l = data;
    mcp_server_t *srv = l->server;
    tp_metric_add(srv->gw->metrics.messages, (const char *[]){ "from_server", "http" }, 1);
    if (json_object_get(msg, "method") == NULL) {
        mcp_call_t *c = link_call(l, json_object_get(msg, "id"));
        if (c != NULL)
            mcp_call_finish(c, msg);
        return;
    }
    mcp_broker_from_server(srv, l->session, via != NULL ? link_call(l, via) : NULL, msg);
}

static void on_http_session_lost(mcp_http_link_t *h, void *data, const json_t *id);

static void
on_http_failure(mcp_http_link_t *h, void *data, const json_t *id, int status, const char *why)
{
    mcp_link_t *l = data;
    mcp_call_t *c = id != NULL ? link_call(l, id) : NULL;
    /* Some servers answer a session they no longer know with 400 rather than the 404 the
     * specification asks for (server-everything, after a restart): one handshake and replay. */
    if (status == 400 && c != NULL && !c->replayed && c->done == NULL && l->state == MCP_LINK_READY &&
        mcp_http_link_session_id(h) != NULL) {
        on_http_session_lost(h, data, id);
        return;
    }
    tp_log_fields(TP_LOG_WARN, NULL, "upstream request failed",
                  json_pack("{s:s, s:i, s:s}", "server", l->server->cfg->name, "status", status, "error", why));
    if (c != NULL)
        call_fail(c, why);
}

static void
on_http_session_lost(mcp_http_link_t *h, void *data, const json_t *id)
{
    mcp_link_t *l = data;
    mcp_call_t *c = id != NULL ? link_call(l, id) : NULL;
    tp_log_fields(TP_LOG_INFO, NULL, "upstream session lost; initialising again",
                  json_pack("{s:s}", "server", l->server->cfg->name));
    if (c != NULL && !c->replayed && c->done == NULL) {
        c->replayed = true;
        server_list_remove(c);
        queue_push(&l->queue, c);
    } else if (c != NULL) {
        call_fail(c, "its session ended");
    }
    if (l->state != MCP_LINK_INITIALIZING)
        link_initialize(l);
}

static const mcp_http_link_callbacks_t http_callbacks = {
    .on_message = on_http_message,
    .on_failure = on_http_failure,
    .on_session_lost = on_http_session_lost,
};

/* The link a call to srv for session s goes on, created (not yet initialised) when needed. */
static mcp_link_t *
link_for(mcp_server_t *srv, mcp_session_t *s)
{
    if (srv->stdio) {
        if (srv->shared == NULL) {
            srv->shared = tp_calloc(1, sizeof(mcp_link_t));
            srv->shared->server = srv;
        }
        return srv->shared;
    }
    if (s == NULL)
        return NULL;
    if (s->links[srv->index] == NULL) {
        mcp_link_t *l = tp_calloc(1, sizeof(*l));
        l->server = srv;
        l->session = s;
        l->http = mcp_http_link_new(srv->http, srv->gw->ctx, &http_callbacks, l);
        s->links[srv->index] = l;
    }
    return s->links[srv->index];
}

/* ---- calls ---- */

/* A method name as a static string (metric labels and audit actions outlive the request). */
static const char *
static_method(const char *method)
{
    static const char *const known[] = { "tools/call",
                                         "prompts/get",
                                         "resources/read",
                                         "resources/subscribe",
                                         "resources/unsubscribe",
                                         "completion/complete",
                                         "initialize",
                                         "tools/list",
                                         "prompts/list",
                                         "resources/list",
                                         "resources/templates/list",
                                         "logging/setLevel",
                                         "ping",
                                         NULL };
    for (const char *const *k = known; *k != NULL; k++) {
        if (strcmp(*k, method) == 0)
            return *k;
    }
    return "other";
}

mcp_call_t *
mcp_call_new(mcp_server_t *srv, mcp_session_t *session, const json_t *request, const char *method)
{
    mcp_gateway_t *gw = srv->gw;
    mcp_call_t *c = tp_calloc(1, sizeof(*c));
    c->gw = gw;
    c->server = srv;
    c->up_id = ++gw->next_call_id;
    c->method = static_method(method);
    c->start_ns = tp_mono_ns();
    c->request = json_deep_copy(request);
    json_object_set_new(c->request, "id", json_integer((json_int_t)c->up_id));
    json_t *meta = json_object_get(json_object_get(c->request, "params"), "_meta");
    json_t *token = json_object_get(meta, "progressToken");
    if (token != NULL) {
        c->client_token = json_incref(token);
        c->progress_token = tp_sprintf("gw-%" PRIu64, c->up_id);
        json_object_set_new(meta, "progressToken", json_string(c->progress_token));
    }
    if (session != NULL) {
        c->session = session;
        mcp_session_ref(session);
        c->next_in_session = session->calls;
        if (session->calls != NULL)
            session->calls->prev_in_session = c;
        session->calls = c;
    }
    return c;
}

static void
on_call_deferred(uv_timer_t *t)
{
    mcp_call_t *c = t->data;
    uv_close((uv_handle_t *)t, on_timer_closed);
    c->timer = NULL;
    call_fail(c, srv_down_reason(c->server));
}

void
mcp_call_start(mcp_call_t *c)
{
    mcp_server_t *srv = c->server;
    c->link = link_for(srv, c->session);
    if (c->link == NULL || (srv->stdio && !srv->up && !mcp_stdio_running(srv->child))) {
        if (srv->stdio && !mcp_stdio_running(srv->child))
            mcp_stdio_start(srv->child);
        if (c->link == NULL || !mcp_stdio_running(srv->child)) {
            /* Failures never come back before this returns: answer on the next loop turn. */
            c->timer = tp_malloc(sizeof(*c->timer));
            uv_timer_init(c->gw->loop, c->timer);
            c->timer->data = c;
            uv_timer_start(c->timer, on_call_deferred, 0, 0);
            return;
        }
    }
    mcp_link_t *l = c->link;
    if (l->state == MCP_LINK_READY && l->http == NULL && l->generation != mcp_stdio_generation(srv->child))
        l->state = MCP_LINK_NONE; /* the child restarted since: a new handshake */
    if (l->state == MCP_LINK_READY) {
        call_send(c);
        return;
    }
    queue_push(&l->queue, c);
    if (l->state != MCP_LINK_INITIALIZING)
        link_initialize(l);
}

/* Tells the server that a call it has is cancelled, and stops the HTTP exchange waiting for it. */
static void
send_cancelled(mcp_call_t *c, const char *reason)
{
    mcp_link_t *l = c->link;
    if (l == NULL || l->state != MCP_LINK_READY)
        return;
    json_t *cancel = json_pack("{s:s, s:s, s:{s:I, s:s}}", "jsonrpc", "2.0", "method", "notifications/cancelled",
                               "params", "requestId", (json_int_t)c->up_id, "reason", reason);
    link_send(l, cancel);
    json_decref(cancel);
    if (l->http != NULL) {
        json_t *id = json_integer((json_int_t)c->up_id);
        mcp_http_link_abandon(l->http, id);
        json_decref(id);
    }
}

void
mcp_call_cancel(mcp_call_t *c, const char *reason)
{
    if (c->state == MCP_CALL_SENT)
        send_cancelled(c, reason); /* a queued call never reached the server: nothing to tell */
    call_unlink(c);
    if (c->audit != NULL)
        mcp_audit_call(c->gw, c->session != NULL ? c->session->principal : "", c->method, c->target, "cancelled",
                       (double)(tp_mono_ns() - c->start_ns) / 1e6, json_incref(c->audit));
    mcp_stream_t *st = c->stream;
    c->stream = NULL;
    if (c->done != NULL) /* the gateway's own request: whoever waits on it must learn it ended */
        c->done(c, NULL);
    call_free(c);
    if (st != NULL) /* the client's POST ends: no answer follows a cancellation */
        mcp_stream_finish(st);
}

void
mcp_server_notify(mcp_server_t *srv, mcp_session_t *session, json_t *msg)
{
    mcp_link_t *l = srv->stdio ? srv->shared : (session != NULL ? session->links[srv->index] : NULL);
    if (l != NULL && l->state == MCP_LINK_READY)
        link_send(l, msg);
}

static void
link_close(mcp_link_t *l)
{
    link_cancel_queue(l, "the session ended");
    if (l->http != NULL)
        mcp_http_link_close(l->http);
    json_decref(l->init_result);
    free(l);
}

/* Takes one session's subscription to uri off a shared child's count. Returns how many remain. */
static json_int_t
subscriber_left(mcp_server_t *srv, const char *uri)
{
    json_int_t n = json_integer_value(json_object_get(srv->subscribers, uri)) - 1;
    if (n > 0)
        json_object_set_new(srv->subscribers, uri, json_integer(n));
    else
        json_object_del(srv->subscribers, uri);
    return n > 0 ? n : 0;
}

void
mcp_server_subscribe(mcp_server_t *srv, mcp_session_t *s, const char *uri)
{
    bool had = json_object_get(s->subscriptions, uri) != NULL;
    json_object_set_new(s->subscriptions, uri, json_integer((json_int_t)srv->index));
    if (!srv->stdio || had)
        return;
    if (srv->subscribers == NULL)
        srv->subscribers = json_object();
    json_int_t n = json_integer_value(json_object_get(srv->subscribers, uri));
    json_object_set_new(srv->subscribers, uri, json_integer(n + 1));
}

bool
mcp_server_unsubscribe(mcp_server_t *srv, mcp_session_t *s, const char *uri)
{
    bool had = json_object_get(s->subscriptions, uri) != NULL;
    json_object_del(s->subscriptions, uri);
    if (!srv->stdio)
        return true;
    if (had)
        return subscriber_left(srv, uri) == 0;
    return json_object_get(srv->subscribers, uri) == NULL; /* others' subscription must stay */
}

/* An ended session's subscriptions at shared children: the last subscriber of a uri unsubscribes
 * the child from it. */
static void
drop_subscriptions(mcp_gateway_t *gw, mcp_session_t *s)
{
    const char *uri;
    json_t *idx;
    json_object_foreach(s->subscriptions, uri, idx)
    {
        size_t i = (size_t)json_integer_value(idx);
        mcp_server_t *srv = i < gw->num_servers ? gw->servers[i] : NULL;
        if (srv == NULL || !srv->stdio || subscriber_left(srv, uri) > 0 || !srv->up)
            continue; /* a child that is down lost its subscriptions with it */
        json_t *params = json_pack("{s:s}", "uri", uri);
        mcp_server_request_quiet(srv, NULL, "resources/unsubscribe", params);
        json_decref(params);
    }
    json_object_clear(s->subscriptions);
}

/* An HTTP upstream learns of the end from the DELETE that closes the link (a cancellation sent
 * just before may be cut short with it); a shared child gets each call's notifications/cancelled. */
void
mcp_servers_session_ended(mcp_gateway_t *gw, mcp_session_t *s, const char *why)
{
    /* The client's requests in flight get an answer before their streams end: a client whose
     * session the gateway ended (a kill, say) must not wait for answers that cannot come. */
    bool killed = strcmp(why, "killed") == 0;
    for (mcp_call_t *c = s->calls; c != NULL; c = c->next_in_session) {
        if (c->stream == NULL || c->client_id == NULL || c->done != NULL || strcmp(why, "deleted") == 0)
            continue;
        char msg[200];
        snprintf(msg, sizeof(msg),
                 killed ? "suspended: an operator's kill switch ended this session"
                        : "the session ended (%s); initialize a new one",
                 why);
        json_t *err = mcp_jsonrpc_error(c->client_id, killed ? MCP_ERR_FORBIDDEN : JSONRPC_INTERNAL_ERROR, msg,
                                        json_pack("{s:s}", "reason", killed ? "suspended" : why));
        mcp_stream_send(c->stream, err, true); /* may free the stream: c->stream is cleared then */
        json_decref(err);
    }
    while (s->calls != NULL)
        mcp_call_cancel(s->calls, "the client session ended");
    drop_subscriptions(gw, s);
    for (size_t i = 0; i < gw->num_servers; i++) {
        if (s->links[i] != NULL) {
            link_close(s->links[i]);
            s->links[i] = NULL;
        }
    }
}

/* ---- stdio children ---- */

static void
on_child_message(mcp_stdio_t *p, void *data, const char *line, size_t len)
{
    mcp_server_t *srv = data;
    json_error_t jerr;
    json_t *msg = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    tp_metric_add(srv->gw->metrics.messages, (const char *[]){ "from_server", "stdio" }, 1);
    if (!json_is_object(msg)) {
        tp_log_fields(TP_LOG_WARN, NULL, "upstream sent a line that is not a JSON-RPC message",
                      json_pack("{s:s, s:s}", "server", srv->cfg->name, "error", jerr.text));
        json_decref(msg);
        return;
    }
    if (json_object_get(msg, "method") == NULL) {
        mcp_call_t *c = find_call(srv, json_object_get(msg, "id")); /* ids are unique: the child's answer */
        if (c != NULL)
            mcp_call_finish(c, msg);
    } else {
        mcp_broker_from_server(srv, NULL, NULL, msg);
    }
    json_decref(msg);
}

static void invalidate_catalogs(mcp_server_t *srv);

static void
on_child_state(mcp_stdio_t *p, void *data, mcp_stdio_state_t state, const char *why)
{
    mcp_server_t *srv = data;
    if (state == MCP_STDIO_RUNNING) {
        /* Every new child gets its handshake at once, and its catalogs are fetched after it, so
         * the first client does not wait for them. */
        srv->up = true;
        mcp_link_t *l = link_for(srv, NULL);
        if (l->state != MCP_LINK_INITIALIZING)
            link_initialize(l);
        return;
    }
    bool was_up = srv->up;
    srv->up = false;
    tp_metric_set(srv->gw->metrics.server_up, (const char *[]){ srv->cfg->name }, 0);
    if (state == MCP_STDIO_EXITED && was_up)
        tp_metric_add(srv->gw->metrics.restarts, (const char *[]){ srv->cfg->name }, 1);
    if (srv->shared != NULL) {
        srv->shared->state = MCP_LINK_NONE;
        link_flush_queue(srv->shared, why);
    }
    /* Calls in flight to the dead child get no answer: fail them now. */
    for (mcp_call_t *c = srv->calls, *next; c != NULL; c = next) {
        next = c->next_in_server;
        call_fail(c, why != NULL ? why : "it stopped");
    }
    invalidate_catalogs(srv);
    mcp_broker_list_changed(srv->gw, srv, "tools");
}

static void
on_child_error(mcp_stdio_t *p, void *data, const char *what)
{
    mcp_server_t *srv = data;
    tp_log_fields(TP_LOG_WARN, NULL, "upstream stdio error",
                  json_pack("{s:s, s:s}", "server", srv->cfg->name, "error", what));
}

static const mcp_stdio_callbacks_t child_callbacks = {
    .on_message = on_child_message,
    .on_state = on_child_state,
    .on_error = on_child_error,
};

/* ---- catalogs ---- */

static void
tool_clear(mcp_tool_t *t)
{
    free(t->public_name);
    json_decref(t->def);
    if (t->schema != NULL)
        mcp_schema_free(t->schema);
    free(t->resource);
}

static void
publish_clear(mcp_server_t *srv)
{
    for (size_t i = 0; i < srv->num_tools; i++)
        tool_clear(&srv->tools[i]);
    for (size_t i = 0; i < srv->num_prompts; i++)
        tool_clear(&srv->prompts[i]);
    free(srv->tools);
    free(srv->prompts);
    srv->tools = srv->prompts = NULL;
    srv->num_tools = srv->num_prompts = 0;
}

static void
invalidate_catalogs(mcp_server_t *srv)
{
    for (int k = 0; k < CAT_COUNT; k++) {
        json_decref(srv->cat[k].items);
        srv->cat[k].items = NULL;
        srv->cat[k].epoch++;
    }
    publish_clear(srv);
}

void
mcp_server_invalidate(mcp_server_t *srv, const char *kind)
{
    for (int k = 0; k < CAT_COUNT; k++) {
        if (strcmp(catalogs[k].kind, kind) == 0 || (strcmp(kind, "resources") == 0 && k == CAT_TEMPLATES)) {
            json_decref(srv->cat[k].items);
            srv->cat[k].items = NULL;
            srv->cat[k].epoch++;
        }
    }
    if (strcmp(kind, "tools") == 0 || strcmp(kind, "prompts") == 0) {
        /* Republished at the next fetch. */
        if (strcmp(kind, "tools") == 0) {
            for (size_t i = 0; i < srv->num_tools; i++)
                tool_clear(&srv->tools[i]);
            free(srv->tools);
            srv->tools = NULL;
            srv->num_tools = 0;
        } else {
            for (size_t i = 0; i < srv->num_prompts; i++)
                tool_clear(&srv->prompts[i]);
            free(srv->prompts);
            srv->prompts = NULL;
            srv->num_prompts = 0;
        }
    }
}

static char *
public_name(const mcp_server_t *srv, const char *name)
{
    return tp_sprintf("%s%s", srv->prefix, name);
}

/* The pin check, with what this process recorded since its snapshot of the pins was loaded
 * (gw->pin_overlay: "server\ttool" -> {"hash", "drift"}), so a tool is pinned once and a drift
 * is recorded once. Returns true when the tool may be published. */
static bool
pin_allows(mcp_server_t *srv, const char *name, const char *hash, const json_t *def)
{
    mcp_gateway_t *gw = srv->gw;
    char *key = tp_sprintf("%s\t%s", srv->cfg->name, name);
    json_t *seen = json_object_get(gw->pin_overlay, key);
    mcp_pin_verdict_t v = mcp_pins_check(gw->pins, srv->cfg->name, name, hash);
    if (v == MCP_PIN_NEW && seen != NULL)
        v = strcmp(json_string_value(json_object_get(seen, "hash")), hash) == 0 ? MCP_PIN_OK : MCP_PIN_DRIFT;
    bool allowed = v != MCP_PIN_DRIFT;
    char *text = NULL;
    if (v == MCP_PIN_NEW) {
        text = mcp_pin_canonical(def);
        mcp_pins_record_new(gw->writer, srv->cfg->name, name, hash, text);
        json_object_set_new(gw->pin_overlay, key, json_pack("{s:s}", "hash", hash));
    } else if (v == MCP_PIN_DRIFT) {
        if (seen == NULL) {
            seen = json_object();
            json_object_set_new(gw->pin_overlay, key, seen);
        }
        const char *reported = json_string_value(json_object_get(seen, "drift"));
        if (reported == NULL || strcmp(reported, hash) != 0) {
            text = mcp_pin_canonical(def);
            mcp_pins_record_drift(gw->writer, srv->cfg->name, name, hash, text);
            json_object_set_new(seen, "drift", json_string(hash));
            tp_log_fields(TP_LOG_WARN, NULL, "tool quarantined: its definition changed",
                          json_pack("{s:s, s:s, s:s}", "server", srv->cfg->name, "tool", name, "hash", hash));
        }
    }
    free(text);
    free(key);
    return allowed;
}

/* Pins, then publishes the server's tools. */
static void
publish_tools(mcp_server_t *srv)
{
    mcp_gateway_t *gw = srv->gw;
    const json_t *items = srv->cat[CAT_TOOLS].items;
    size_t n = json_array_size(items);
    srv->tools = tp_calloc(n > 0 ? n : 1, sizeof(mcp_tool_t));
    srv->num_tools = 0;
    srv->quarantined = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *def = json_array_get(items, i);
        const char *name = json_string_value(json_object_get(def, "name"));
        if (name == NULL)
            continue;
        char *hash = mcp_pin_hash(def);
        if (!pin_allows(srv, name, hash, def)) {
            srv->quarantined++;
            free(hash);
            continue;
        }
        free(hash);
        mcp_tool_t *t = &srv->tools[srv->num_tools++];
        t->server = srv;
        t->public_name = public_name(srv, name);
        t->def = json_deep_copy(def);
        json_object_set_new(t->def, "name", json_string(t->public_name));
        t->name = name;
        t->resource = tp_sprintf("%s/%s", srv->cfg->name, name);
        json_t *schema = json_object_get(def, "inputSchema");
        if (schema != NULL) {
            char *err = NULL;
            t->schema = mcp_schema_compile(schema, &err);
            if (t->schema == NULL) {
                tp_log_fields(TP_LOG_WARN, NULL, "tool input schema unusable; arguments go unchecked",
                              json_pack("{s:s, s:s, s:s}", "server", srv->cfg->name, "tool", name, "error",
                                        err != NULL ? err : "?"));
                free(err);
            }
        }
    }
    tp_metric_set(gw->metrics.quarantined, (const char *[]){ srv->cfg->name }, (double)srv->quarantined);
}

static void
publish_prompts(mcp_server_t *srv)
{
    const json_t *items = srv->cat[CAT_PROMPTS].items;
    size_t n = json_array_size(items);
    srv->prompts = tp_calloc(n > 0 ? n : 1, sizeof(mcp_tool_t));
    srv->num_prompts = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *def = json_array_get(items, i);
        const char *name = json_string_value(json_object_get(def, "name"));
        if (name == NULL)
            continue;
        mcp_tool_t *t = &srv->prompts[srv->num_prompts++];
        t->server = srv;
        t->public_name = public_name(srv, name);
        t->def = json_deep_copy(def);
        json_object_set_new(t->def, "name", json_string(t->public_name));
        t->name = name;
        t->resource = tp_sprintf("%s/%s", srv->cfg->name, name);
    }
}

typedef struct fetch {
    mcp_server_t *srv;
    int kind;
    uint64_t epoch;
    mcp_session_t *session;
} fetch_t;

static void fetch_page(fetch_t *f, const char *cursor);
static void start_fetch(mcp_server_t *srv, int kind, mcp_session_t *s);

/* A live session whose request waits for the catalog: an HTTP server's list is fetched through
 * a session's link, and an ended session has none. */
static mcp_session_t *
waiting_session(const catalog_t *cat)
{
    for (const catalog_waiter_t *w = cat->waiters; w != NULL; w = w->next) {
        if (!w->session->ended)
            return w->session;
    }
    return NULL;
}

/* Ends a fetch with the whole list (stolen), or NULL when it brought none. `again`: it brought
 * none for a reason that says nothing about the server (it was cancelled, or it raced a change),
 * so it starts over for the requests still waiting, a few times at most. Otherwise the waiters
 * go on, without this server's list when there is none. */
static void
fetch_finish(mcp_server_t *srv, int kind, json_t *items, bool again)
{
    catalog_t *cat = &srv->cat[kind];
    cat->loading = false;
    json_decref(cat->partial);
    cat->partial = NULL;
    mcp_session_t *via = items == NULL && again && cat->retries < CATALOG_MAX_RETRIES ? waiting_session(cat) : NULL;
    if (via != NULL) {
        cat->retries++;
        start_fetch(srv, kind, via);
        return;
    }
    cat->retries = 0;
    if (items != NULL) {
        json_decref(cat->items);
        cat->items = items;
        if (kind == CAT_TOOLS)
            publish_tools(srv);
        else if (kind == CAT_PROMPTS)
            publish_prompts(srv);
    }
    catalog_waiter_t *w = cat->waiters;
    cat->waiters = NULL;
    while (w != NULL) {
        catalog_waiter_t *next = w->next;
        w->ready(w->data);
        free(w);
        w = next;
    }
}

static void
on_page(mcp_call_t *c, json_t *response)
{
    fetch_t *f = c->done_data;
    mcp_server_t *srv = f->srv;
    catalog_t *cat = &srv->cat[f->kind];
    const json_t *result = json_object_get(response, "result"); /* response NULL: cancelled */
    const json_t *items = json_object_get(result, catalogs[f->kind].field);
    bool raced = f->epoch != cat->epoch;
    if (raced || !json_is_array(items)) {
        if (!raced && response != NULL) {
            const json_t *e = json_object_get(json_object_get(response, "error"), "message");
            tp_log_fields(TP_LOG_WARN, NULL, "upstream list failed",
                          json_pack("{s:s, s:s, s:s}", "server", srv->cfg->name, "method", catalogs[f->kind].method,
                                    "error", json_is_string(e) ? json_string_value(e) : "no answer"));
        }
        fetch_finish(srv, f->kind, NULL, raced || response == NULL);
        if (f->session != NULL)
            mcp_session_unref(f->session);
        free(f);
        return;
    }
    json_array_extend(cat->partial, (json_t *)items);
    const char *next = json_string_value(json_object_get(result, "nextCursor"));
    if (next != NULL && next[0] != '\0' && ++cat->pages < CATALOG_MAX_PAGES) {
        fetch_page(f, next);
        return;
    }
    fetch_finish(srv, f->kind, json_incref(cat->partial), false);
    if (f->session != NULL)
        mcp_session_unref(f->session);
    free(f);
}

static void
fetch_page(fetch_t *f, const char *cursor)
{
    json_t *req =
        json_pack("{s:s, s:i, s:s, s:{}}", "jsonrpc", "2.0", "id", 0, "method", catalogs[f->kind].method, "params");
    if (cursor != NULL)
        json_object_set_new(json_object_get(req, "params"), "cursor", json_string(cursor));
    mcp_call_t *c = mcp_call_new(f->srv, f->srv->stdio ? NULL : f->session, req, catalogs[f->kind].method);
    json_decref(req);
    c->done = on_page;
    c->done_data = f;
    mcp_call_start(c);
}

/* Loads a shared server's catalogs that its handshake announced. */
static void
prefetch(mcp_server_t *srv)
{
    const json_t *caps = json_object_get(srv->shared->init_result, "capabilities");
    for (int k = 0; k < CAT_COUNT; k++) {
        if (srv->cat[k].items == NULL && !srv->cat[k].loading && json_object_get(caps, catalogs[k].capability) != NULL)
            start_fetch(srv, k, NULL);
    }
}

/* Whether the server's handshake said it has lists of this kind (true when unknown yet). */
static bool
server_offers(mcp_server_t *srv, mcp_session_t *s, int kind)
{
    const mcp_link_t *l = srv->stdio ? srv->shared : (s != NULL ? s->links[srv->index] : NULL);
    if (l == NULL || l->state != MCP_LINK_READY)
        return true;
    const json_t *caps = json_object_get(l->init_result, "capabilities");
    return json_object_get(caps, catalogs[kind].capability) != NULL;
}

static void
start_fetch(mcp_server_t *srv, int kind, mcp_session_t *s)
{
    catalog_t *cat = &srv->cat[kind];
    cat->loading = true;
    cat->pages = 0;
    json_decref(cat->partial);
    cat->partial = json_array();
    fetch_t *f = tp_calloc(1, sizeof(*f));
    f->srv = srv;
    f->kind = kind;
    f->epoch = cat->epoch;
    f->session = srv->stdio ? NULL : s;
    if (f->session != NULL)
        mcp_session_ref(f->session);
    fetch_page(f, NULL);
}

typedef struct ensure {
    mcp_session_t *session;
    int waiting;
    void (*ready)(mcp_session_t *s, void *data);
    void *data;
} ensure_t;

static void
on_ensure_part(void *data)
{
    ensure_t *e = data;
    if (--e->waiting > 0)
        return;
    mcp_session_t *s = e->session;
    e->ready(s, e->data); /* also for an ended session: ready owns what data holds */
    mcp_session_unref(s);
    free(e);
}

static int
kind_index(const char *kind)
{
    for (int k = 0; k < CAT_COUNT; k++) {
        if (strcmp(catalogs[k].kind, kind) == 0)
            return k;
    }
    return -1;
}

void
mcp_catalog_ensure(mcp_gateway_t *gw, mcp_session_t *s, const char *kind_name,
                   void (*ready)(mcp_session_t *s, void *data), void *data)
{
    int kind = kind_index(kind_name);
    assert(kind >= 0);
    ensure_t *e = tp_calloc(1, sizeof(*e));
    e->session = s;
    mcp_session_ref(s);
    e->ready = ready;
    e->data = data;
    e->waiting = 1; /* released below, so ready runs once even when nothing needs fetching */
    for (size_t i = 0; i < gw->num_servers; i++) {
        mcp_server_t *srv = gw->servers[i];
        catalog_t *cat = &srv->cat[kind];
        if (cat->items != NULL || !server_offers(srv, s, kind))
            continue;
        catalog_waiter_t *w = tp_calloc(1, sizeof(*w));
        w->ready = on_ensure_part;
        w->data = e;
        w->session = s;
        w->next = cat->waiters;
        cat->waiters = w;
        e->waiting++;
        if (!cat->loading)
            start_fetch(srv, kind, s);
    }
    on_ensure_part(e);
}

bool
mcp_catalog_loaded(mcp_gateway_t *gw, mcp_session_t *s, const char *kind_name)
{
    int kind = kind_index(kind_name);
    for (size_t i = 0; i < gw->num_servers; i++) {
        mcp_server_t *srv = gw->servers[i];
        if (srv->cat[kind].items == NULL && server_offers(srv, s, kind))
            return false;
    }
    return true;
}

const json_t *
mcp_server_catalog(const mcp_server_t *srv, const char *kind)
{
    int k = kind_index(kind);
    return k >= 0 ? srv->cat[k].items : NULL;
}

const mcp_tool_t *
mcp_server_tools(const mcp_server_t *srv, size_t *n)
{
    *n = srv->num_tools;
    return srv->tools;
}

const mcp_tool_t *
mcp_server_prompts(const mcp_server_t *srv, size_t *n)
{
    *n = srv->num_prompts;
    return srv->prompts;
}

const mcp_tool_t *
mcp_find_tool(mcp_gateway_t *gw, const char *public, bool *quarantined)
{
    *quarantined = false;
    for (size_t i = 0; i < gw->num_servers; i++) {
        mcp_server_t *srv = gw->servers[i];
        for (size_t j = 0; j < srv->num_tools; j++) {
            if (strcmp(srv->tools[j].public_name, public) == 0)
                return &srv->tools[j];
        }
        size_t plen = strlen(srv->prefix);
        if (srv->quarantined > 0 && strncmp(public, srv->prefix, plen) == 0) {
            const json_t *items = srv->cat[CAT_TOOLS].items;
            for (size_t j = 0; j < json_array_size(items); j++) {
                const char *name = json_string_value(json_object_get(json_array_get(items, j), "name"));
                if (name != NULL && strcmp(name, public + plen) == 0)
                    *quarantined = true;
            }
        }
    }
    return NULL;
}

const mcp_tool_t *
mcp_find_prompt(mcp_gateway_t *gw, const char *public)
{
    for (size_t i = 0; i < gw->num_servers; i++) {
        mcp_server_t *srv = gw->servers[i];
        for (size_t j = 0; j < srv->num_prompts; j++) {
            if (strcmp(srv->prompts[j].public_name, public) == 0)
                return &srv->prompts[j];
        }
    }
    return NULL;
}

/* RFC 6570 templates, as far as resource templates use them: literal text must match, and
 * each {expression} matches a run of characters ({+x} and {#x} may include '/'). */
static bool
template_match(const char *t, const char *uri)
{
    while (*t != '\0') {
        if (*t != '{') {
            if (*t != *uri)
                return false;
            t++, uri++;
            continue;
        }
        const char *close = strchr(t, '}');
        if (close == NULL)
            return false;
        bool reserved = t[1] == '+' || t[1] == '#';
        t = close + 1;
        const char *end = uri;
        while (*end != '\0' && (reserved || *end != '/') && *end != *t)
            end++;
        if (end == uri && *t != '\0')
            return false;
        uri = end;
    }
    return *uri == '\0';
}

mcp_server_t *
mcp_find_resource_server(mcp_gateway_t *gw, const char *uri)
{
    for (size_t i = 0; i < gw->num_servers; i++) {
        const json_t *items = gw->servers[i]->cat[CAT_RESOURCES].items;
        for (size_t j = 0; j < json_array_size(items); j++) {
            const char *u = json_string_value(json_object_get(json_array_get(items, j), "uri"));
            if (u != NULL && strcmp(u, uri) == 0)
                return gw->servers[i];
        }
    }
    for (size_t i = 0; i < gw->num_servers; i++) {
        const json_t *items = gw->servers[i]->cat[CAT_TEMPLATES].items;
        for (size_t j = 0; j < json_array_size(items); j++) {
            const char *t = json_string_value(json_object_get(json_array_get(items, j), "uriTemplate"));
            if (t != NULL && template_match(t, uri))
                return gw->servers[i];
        }
    }
    return NULL;
}

/* ---- life ---- */

static mcp_stdio_t *
make_child(mcp_server_t *srv)
{
    const tp_mcp_server_config_t *c = srv->cfg;
    mcp_stdio_options_t o = {
        .name = c->name,
        .command = c->command,
        .args = (const char *const *)c->args,
        .num_args = c->arg_count,
        .env = (const char *const *)c->env,
        .num_env = c->env_count,
        .cwd = c->cwd,
        .restart_min_ms = (uint64_t)c->restart_min_ms,
        .restart_max_ms = (uint64_t)c->restart_max_ms,
        .max_message_bytes = (size_t)c->max_response_bytes,
        .max_queue_bytes = 64u * 1024 * 1024,
        .stop_grace_ms = 2000,
    };
    char *err = NULL;
    mcp_stdio_t *child = mcp_stdio_new(srv->gw->loop, &o, &child_callbacks, srv, &err);
    if (child == NULL) /* the configuration was validated at load: this is a defect */
        tp_fatal(err != NULL ? err : "stdio server options refused");
    return child;
}

int
mcp_servers_create(mcp_gateway_t *gw, char **err)
{
    gw->num_servers = gw->cfg->server_count;
    gw->servers = tp_calloc(gw->num_servers > 0 ? gw->num_servers : 1, sizeof(mcp_server_t *));
    for (size_t i = 0; i < gw->num_servers; i++) {
        const tp_mcp_server_config_t *c = &gw->cfg->servers[i];
        mcp_server_t *srv = tp_calloc(1, sizeof(*srv));
        gw->servers[i] = srv;
        srv->gw = gw;
        srv->cfg = c;
        srv->index = i;
        srv->prefix = c->prefix != NULL ? tp_strdup(c->prefix) : tp_sprintf("%s__", c->name);
        srv->stdio = strcmp(c->transport, "stdio") == 0;
        tp_metric_set(gw->metrics.server_up, (const char *[]){ c->name }, 0);
        if (srv->stdio)
            continue; /* the child is made on the worker's loop */
        tp_upstream_header_t *headers = tp_calloc(c->header_count + 1, sizeof(*headers));
        for (size_t h = 0; h < c->header_count; h++) {
            headers[h].name = h2o_iovec_init(c->headers[h].name, strlen(c->headers[h].name));
            headers[h].value = h2o_iovec_init(c->headers[h].value, strlen(c->headers[h].value));
        }
        mcp_http_server_options_t o = {
            .name = c->name,
            .url = c->url,
            .headers = headers,
            .num_headers = c->header_count,
            .max_message_bytes = (size_t)c->max_response_bytes,
            .timeout_ms = (uint64_t)c->timeout_ms,
        };
        srv->http = mcp_http_server_new(&o, err);
        free(headers);
        if (srv->http == NULL)
            return -1;
    }
    return 0;
}

void
mcp_servers_republish(mcp_gateway_t *gw)
{
    for (size_t i = 0; i < gw->num_servers; i++) {
        mcp_server_t *srv = gw->servers[i];
        if (srv->cat[CAT_TOOLS].items == NULL)
            continue;
        for (size_t j = 0; j < srv->num_tools; j++)
            tool_clear(&srv->tools[j]);
        free(srv->tools);
        srv->tools = NULL;
        srv->num_tools = 0;
        publish_tools(srv);
        mcp_broker_list_changed(gw, srv, "tools");
    }
}

void
mcp_servers_boot(mcp_gateway_t *gw)
{
    for (size_t i = 0; i < gw->num_servers; i++) {
        mcp_server_t *srv = gw->servers[i];
        if (!srv->stdio)
            continue;
        srv->child = make_child(srv);
        if (strcmp(srv->cfg->start, "boot") == 0)
            mcp_stdio_start(srv->child);
    }
}

void
mcp_servers_stop(mcp_gateway_t *gw)
{
    for (size_t i = 0; i < gw->num_servers; i++) {
        if (gw->servers[i]->child != NULL)
            mcp_stdio_stop(gw->servers[i]->child);
    }
}

int
mcp_servers_child_pid(mcp_gateway_t *gw, size_t i)
{
    return gw->servers[i]->child != NULL ? mcp_stdio_pid(gw->servers[i]->child) : 0;
}
