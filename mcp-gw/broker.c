/*
 * broker.c — what each MCP message does.
 *
 * Answered here: initialize, ping, logging/setLevel, and the aggregated lists (tools, prompts,
 * resources, resource templates), filtered by the caller's policy and the virtual server, with
 * names namespaced per server and paginated. Routed to one server: tools/call (after the pin
 * check, the policy check and argument validation), prompts/get, resources/read, subscribe,
 * unsubscribe and completion/complete. Relayed: progress, logging, list changes, cancellation,
 * and server-to-client requests (sampling, elicitation, roots) with their answers, each with
 * ids remapped so that concurrent clients never see each other's traffic.
 *
 * A request is answered with application/json when the answer is ready at once, and otherwise
 * on an SSE stream opened for it (catalogs to fetch, a call upstream).
 *
 * Policy and requests that wait. A request that waits for catalogs (deferred) outlives the POST
 * that carried it: the client may drop that connection and resume the stream with a GET, which
 * closes the POST. So a deferred request never keeps the POST's verdict; it asks the stream for
 * the request writing it at that moment:
 *  - filtering (lists, the names in an unknown-tool error) uses the verdict of whichever request
 *    writes the answer: the POST, or the GET that resumed it (the same principal: a session
 *    answers only to the principal that opened it, and both were authenticated);
 *  - authorizing a routed request (rules with the body's size, and rate limits, which
 *    pol_gate_authorize takes from the request) needs the POST itself, so it happens only while
 *    the POST still writes the stream; once a resumption took over, the client is asked to send
 *    the request again rather than be checked against a request that is not the one it sent.
 * When nobody listens any more, or the session ended, the request is dropped unanswered.
 */
#include "gateway.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "jsonschema.h"
#include "log.h"
#include "mem.h"
#include "pattern.h"

#define MAX_SCHEMA_ERRORS   8
#define SCHEMA_EXCERPT_MAX  1500 /* bytes of schema quoted back in a validation error */
#define MAX_LISTED_NAMES    30   /* tools named in an unknown-tool error */
#define QUOTED_NAME_MAX     200  /* bytes of a client's name quoted back in an error or audited */
#define MAX_SERVER_REQUESTS 32   /* server-to-client requests awaiting a session's answer; more evict the oldest */

/* A client request being handled; lives until it is answered. */
typedef struct query {
    mcp_gateway_t *gw;
    mcp_session_t *s;
    json_t *msg;
    const json_t *id;
    const char *method;
    pol_verdict_t *v; /* the POST's, in its pool: used only until defer (see the top) */
    tp_request_t *r;  /* the POST until defer; NULL after */
    mcp_stream_t *st; /* the SSE stream answering it, once opened */
} query_t;

/* ---- JSON-RPC ---- */

json_t *
mcp_jsonrpc_result(const json_t *id, json_t *result)
{
    if (result == NULL)
        return NULL;
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id != NULL ? id : json_null(), "result", result);
}

json_t *
mcp_jsonrpc_error(const json_t *id, int code, const char *message, json_t *data)
{
    json_t *text = json_string(message);
    if (text == NULL) /* not UTF-8: the error must still go out */
        text = json_string("Internal error (the error message was not valid UTF-8)");
    json_t *err = json_pack("{s:i, s:o}", "code", code, "message", text);
    if (data != NULL)
        json_object_set_new(err, "data", data);
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id != NULL ? id : json_null(), "error", err);
}

int
mcp_utf8_cut(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    /* s[n] is the NUL or the first byte left out: a continuation byte there means the last
     * character kept would be split, so back up to where it starts. */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* ---- text for people ---- */

/* A growing string, for messages built from parts of any length. */
typedef struct text {
    char *s;
    size_t len, cap;
} text_t;

static void text_printf(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
text_printf(text_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->len + (size_t)n + 1) * 2;
        t->s = tp_realloc(t->s, t->cap);
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

/* ---- answering ---- */

static query_t *
query_new(mcp_gateway_t *gw, tp_request_t *r, mcp_session_t *s, json_t *msg, pol_verdict_t *v)
{
    query_t *q = tp_calloc(1, sizeof(*q));
    q->gw = gw;
    q->s = s;
    mcp_session_ref(s);
    q->msg = json_incref(msg);
    q->id = json_object_get(msg, "id");
    q->method = json_string_value(json_object_get(msg, "method"));
    q->v = v;
    q->r = r;
    return q;
}

static void
query_free(query_t *q)
{
    mcp_session_unref(q->s);
    json_decref(q->msg);
    free(q);
}

/* The request while it can still be answered (on its own response or its stream). */
static tp_request_t *
query_request(query_t *q)
{
    if (q->s->ended) /* its streams are freed with it: q->st dangles */
        return NULL;
    if (q->st != NULL)
        return mcp_stream_request(q->st);
    return q->r;
}

/* The verdict to filter with: that of the request writing the answer now (see the top). Only
 * while query_request(q) is not NULL. */
static const pol_verdict_t *
query_verdict(query_t *q)
{
    return q->st != NULL ? mcp_stream_verdict(q->st) : q->v;
}

/* Frees the query and returns true when nobody can take its answer any more (the session ended,
 * or the client went away); the caller must not touch q then. */
static bool
query_gone(query_t *q)
{
    if (query_request(q) != NULL)
        return false;
    query_free(q);
    return true;
}

/* Answers the query with msg (stolen) and frees it. A msg that could not be built (NULL) is
 * answered with a fixed internal error: every request gets an answer. */
static void
answer(query_t *q, json_t *msg)
{
    if (msg == NULL)
        msg = mcp_jsonrpc_error(q->id, JSONRPC_INTERNAL_ERROR, "Internal error: the answer could not be built", NULL);
    if (q->st != NULL) {
        if (!q->s->ended)
            mcp_stream_send(q->st, msg, true);
        json_decref(msg);
    } else {
        tp_http_add_header(q->r, "mcp-session-id", q->s->id);
        tp_http_send_json(q->r, 200, msg);
    }
    query_free(q);
}

static void
answer_result(query_t *q, json_t *result)
{
    answer(q, mcp_jsonrpc_result(q->id, result));
}

static void
answer_error(query_t *q, int code, const char *message, json_t *data)
{
    answer(q, mcp_jsonrpc_error(q->id, code, message, data));
}

/* Switches the query to an SSE answer, before work that answers later. */
static void
defer(query_t *q)
{
    if (q->st != NULL)
        return;
    q->st = mcp_stream_new(q->s, false);
    mcp_stream_attach(q->st, q->r, q->v, 0, strcmp(q->s->protocol, "2025-11-25") >= 0);
    q->r = NULL;
    q->v = NULL; /* the stream knows the verdict of whoever writes it from now on */
}

static void
accepted(tp_request_t *r)
{
    r->req->res.status = 202;
    r->req->res.reason = "Accepted";
    r->req->res.content_length = 0; /* without it h2o closes the connection after the answer */
    h2o_send_inline(r->req, NULL, 0);
}

/* ---- policy ---- */

static bool
visible(query_t *q, const char *public_name)
{
    const char *vn = q->s->virtual_name;
    if (vn == NULL)
        return true;
    const tp_mcp_gw_config_t *cfg = q->gw->cfg;
    for (size_t i = 0; i < cfg->virtual_count; i++) {
        if (strcmp(cfg->virtual_servers[i].name, vn) != 0)
            continue;
        for (size_t j = 0; j < cfg->virtual_servers[i].tool_count; j++) {
            if (tp_pattern_match(cfg->virtual_servers[i].tools[j], public_name, strlen(public_name)))
                return true;
        }
    }
    return false;
}

typedef enum authz {
    AUTHZ_ALLOWED, /* go on with q */
    AUTHZ_REFUSED, /* the policy said no: answered */
    AUTHZ_NONE,    /* no decision (the client went away, or the POST is gone): answered or dropped */
} authz_t;

/* The whole check for one routed request: rules and rate limits, with the POST that carried it
 * (see the top). Unless allowed, q is answered or dropped, and freed. */
static authz_t
authorize(query_t *q, const char *resource, const char *action)
{
    if (query_gone(q))
        return AUTHZ_NONE;
    tp_request_t *r = q->st != NULL ? mcp_stream_opener(q->st) : q->r;
    if (r == NULL) {
        answer_error(q, JSONRPC_INTERNAL_ERROR,
                     "The request's POST ended before the request could be authorized; send the request again", NULL);
        return AUTHZ_NONE;
    }
    pol_verdict_t *v = q->st != NULL ? mcp_stream_verdict(q->st) : q->v;
    if (pol_gate_authorize(q->gw->gate, r, resource, action, v))
        return AUTHZ_ALLOWED;
    json_t *data = json_pack("{s:s, s:s, s:s}", "resource", resource, "action", action, "reason", v->code);
    if (v->outcome == POL_OUTCOME_RATE_LIMITED || v->outcome == POL_OUTCOME_OVER_BUDGET) {
        json_object_set_new(data, "retry_after_s", json_real(v->retry_after_s));
        answer_error(q, MCP_ERR_RATE_LIMITED, v->message, data);
    } else {
        answer_error(q, MCP_ERR_FORBIDDEN, v->message, data);
    }
    return AUTHZ_REFUSED;
}

static bool
permits(query_t *q, const pol_verdict_t *v, const char *resource, const char *action)
{
    return pol_gate_permits(q->gw->gate, v, resource, action);
}

/* ---- initialize ---- */

void
mcp_broker_initialize(mcp_gateway_t *gw, tp_request_t *r, json_t *msg, const pol_verdict_t *v, const char *virtual_name)
{
    const json_t *id = json_object_get(msg, "id");
    const json_t *params = json_object_get(msg, "params");
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    if (!json_is_object(params) || asked == NULL) {
        tp_http_send_json(
            r, 200,
            mcp_jsonrpc_error(id, JSONRPC_INVALID_PARAMS, "initialize needs params.protocolVersion (a string)", NULL));
        return;
    }
    mcp_session_t *s = mcp_session_new(gw, v->identity.principal->id, v->identity.principal->team);
    if (s == NULL) {
        tp_http_send_json(r, 503, mcp_jsonrpc_error(id, JSONRPC_INTERNAL_ERROR, "too many open sessions", NULL));
        return;
    }
    s->protocol = tp_strdup(mcp_protocol_supported(asked, strlen(asked)) ? asked : MCP_PROTOCOL_LATEST);
    s->client_capabilities = json_deep_copy(json_object_get(params, "capabilities"));
    s->client_info = json_deep_copy(json_object_get(params, "clientInfo"));
    s->virtual_name = virtual_name != NULL ? tp_strdup(virtual_name) : NULL;
    tp_log_fields(TP_LOG_INFO, r->id, "session opened",
                  json_pack("{s:s, s:s, s:s, s:O?}", "session", s->id, "principal", s->principal, "protocol",
                            s->protocol, "client", json_object_get(s->client_info, "name")));
    json_t *result =
        json_pack("{s:s, s:{s:{s:b}, s:{s:b}, s:{s:b, s:b}, s:{}, s:{}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion",
                  s->protocol, "capabilities", "tools", "listChanged", 1, "prompts", "listChanged", 1, "resources",
                  "subscribe", 1, "listChanged", 1, "logging", "completions", "serverInfo", "name", "triplane-mcp-gw",
                  "title", "Triplane MCP gateway", "version", TP_VERSION, "instructions",
                  "Tools of several MCP servers, named SERVER__TOOL. Calls are checked against "
                  "policy and the tool's input schema before they reach the server.");
    tp_http_add_header(r, "mcp-session-id", s->id);
    tp_http_send_json(r, 200, mcp_jsonrpc_result(id, result));
}

/* ---- lists ---- */

typedef struct list_kind {
    const char *method;
    const char *catalog; /* for mcp_catalog_ensure */
    const char *field;
    const char *action; /* the policy action an item must allow to be listed */
} list_kind_t;

static const list_kind_t list_kinds[] = {
    { "tools/list", "tools", "tools", "tools/list" },
    { "prompts/list", "prompts", "prompts", "prompts/get" },
    { "resources/list", "resources", "resources", "resources/read" },
    { "resources/templates/list", "resourceTemplates", "resourceTemplates", "resources/read" },
};

static const list_kind_t *
list_kind_of(const char *method)
{
    for (size_t i = 0; i < sizeof(list_kinds) / sizeof(list_kinds[0]); i++) {
        if (strcmp(list_kinds[i].method, method) == 0)
            return &list_kinds[i];
    }
    return NULL;
}

static json_t *
collect(query_t *q, const pol_verdict_t *v, const list_kind_t *k)
{
    json_t *items = json_array();
    for (size_t i = 0; i < q->gw->num_servers; i++) {
        mcp_server_t *srv = q->gw->servers[i];
        bool tools = strcmp(k->catalog, "tools") == 0, prompts = strcmp(k->catalog, "prompts") == 0;
        if (tools || prompts) {
            size_t n;
            const mcp_tool_t *t = tools ? mcp_server_tools(srv, &n) : mcp_server_prompts(srv, &n);
            for (size_t j = 0; j < n; j++) {
                if ((!tools || visible(q, t[j].public_name)) && permits(q, v, t[j].resource, k->action))
                    json_array_append(items, t[j].def);
            }
            continue;
        }
        if (q->s->virtual_name != NULL)
            continue; /* a virtual server exposes tools only */
        const json_t *list = mcp_server_catalog(srv, k->catalog);
        const char *key = strcmp(k->catalog, "resources") == 0 ? "uri" : "uriTemplate";
        for (size_t j = 0; j < json_array_size(list); j++) {
            json_t *item = json_array_get(list, j);
            const char *uri = json_string_value(json_object_get(item, key));
            char *resource = tp_sprintf("%s/%s", mcp_server_name(srv), uri != NULL ? uri : "");
            if (permits(q, v, resource, k->action))
                json_array_append(items, item);
            free(resource);
        }
    }
    return items;
}

static void
list_answer(mcp_session_t *s, void *data)
{
    query_t *q = data;
    const list_kind_t *k = list_kind_of(q->method);
    if (query_gone(q)) /* nothing to filter for */
        return;
    const char *cursor = json_string_value(json_object_get(json_object_get(q->msg, "params"), "cursor"));
    size_t offset = 0;
    if (cursor != NULL) {
        char *end;
        unsigned long long o = strncmp(cursor, "o:", 2) == 0 ? strtoull(cursor + 2, &end, 10) : 0;
        if (strncmp(cursor, "o:", 2) != 0 || *end != '\0') {
            answer_error(q, JSONRPC_INVALID_PARAMS, "Invalid cursor: pass back nextCursor exactly as received", NULL);
            return;
        }
        offset = (size_t)o;
    }
    json_t *all = collect(q, query_verdict(q), k);
    json_t *page = json_array();
    size_t n = json_array_size(all);
    for (size_t i = offset; i < n && i < offset + MCP_LIST_PAGE_SIZE; i++)
        json_array_append(page, json_array_get(all, i));
    json_t *result = json_pack("{s:o}", k->field, page);
    if (offset + MCP_LIST_PAGE_SIZE < n) {
        char next[32];
        snprintf(next, sizeof(next), "o:%zu", offset + MCP_LIST_PAGE_SIZE);
        json_object_set_new(result, "nextCursor", json_string(next));
    }
    json_decref(all);
    answer_result(q, result);
}

/* Runs then(q) once the catalog of `kind` is loaded, answering on a stream when it was not. */
static void
with_catalog(query_t *q, const char *kind, void (*then)(mcp_session_t *s, void *q))
{
    if (query_gone(q))
        return;
    if (mcp_catalog_loaded(q->gw, q->s, kind)) {
        then(q->s, q);
        return;
    }
    defer(q);
    mcp_catalog_ensure(q->gw, q->s, kind, then, q);
}

/* ---- tools/call ---- */

static json_t *
tool_names(query_t *q, const char ***names, size_t *n)
{
    const pol_verdict_t *v = query_verdict(q);
    json_t *list = json_array();
    size_t cap = 16, count = 0;
    const char **out = tp_malloc(cap * sizeof(char *));
    for (size_t i = 0; i < q->gw->num_servers; i++) {
        size_t m;
        const mcp_tool_t *t = mcp_server_tools(q->gw->servers[i], &m);
        for (size_t j = 0; j < m; j++) {
            if (!visible(q, t[j].public_name) || !permits(q, v, t[j].resource, "tools/list"))
                continue;
            if (count == cap)
                out = tp_realloc(out, (cap *= 2) * sizeof(char *));
            out[count++] = t[j].public_name;
            if (json_array_size(list) < MAX_LISTED_NAMES)
                json_array_append_new(list, json_string(t[j].public_name));
        }
    }
    *names = out;
    *n = count;
    return list;
}

static void
unknown_tool(query_t *q, const char *name)
{
    const char **names;
    size_t n;
    json_t *available = tool_names(q, &names, &n);
    const char *near = mcp_suggest(name, names, n);
    /* The name is the client's: quoted back (and audited) cut to a bound, on a character. */
    char *quoted = tp_sprintf("%.*s", mcp_utf8_cut(name, QUOTED_NAME_MAX), name);
    bool cut = strlen(quoted) < strlen(name);
    text_t msg = { 0 };
    text_printf(&msg, "Unknown tool \"%s%s\".", quoted, cut ? "…" : "");
    if (near != NULL)
        text_printf(&msg, " Did you mean \"%s\"?", near);
    char *list = json_dumps(available, JSON_COMPACT);
    text_printf(&msg, " Available tools: %s", list != NULL ? list : "[]");
    free(list);
    json_t *data = json_pack("{s:s, s:s?, s:o}", "unknown_tool", quoted, "suggestion", near, "available", available);
    free(names);
    tp_metric_add(q->gw->metrics.rejections, (const char *[]){ "unknown_tool" }, 1);
    mcp_audit_call(q->gw, q->s->principal, "tools/call", quoted, "unknown_tool", 0,
                   json_pack("{s:s, s:s?}", "session", q->s->id, "suggestion", near));
    answer_error(q, JSONRPC_INVALID_PARAMS, msg.s, data);
    free(msg.s);
    free(quoted);
}

/* The teaching answer to arguments that fail the schema: an isError result a model can act on. */
static void
invalid_arguments(query_t *q, const mcp_tool_t *t, const mcp_schema_error_t *errs, size_t n)
{
    text_t text = { 0 };
    text_printf(&text, "Invalid arguments for tool \"%s\"; nothing was run:\n", t->public_name);
    json_t *details = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *path = errs[i].path[0] != '\0' ? errs[i].path : "(arguments)";
        text_printf(&text, "- %s: %s\n", path, errs[i].message);
        json_t *d =
            json_pack("{s:s, s:s, s:s}", "path", errs[i].path, "keyword", errs[i].keyword, "message", errs[i].message);
        if (errs[i].suggestion != NULL)
            json_object_set_new(d, "suggestion", json_string(errs[i].suggestion));
        if (errs[i].schema != NULL)
            json_object_set(d, "schema", errs[i].schema);
        json_array_append_new(details, d);
        tp_metric_add(q->gw->metrics.rejections, (const char *[]){ errs[i].keyword }, 1);
    }
    char *schema = json_dumps(json_object_get(t->def, "inputSchema"), JSON_COMPACT);
    const char *excerpt = schema != NULL ? schema : "";
    int keep = mcp_utf8_cut(excerpt, SCHEMA_EXCERPT_MAX); /* a cut inside a character is not UTF-8 */
    text_printf(&text, "Fix the arguments and call the tool again. Its input schema: %.*s%s", keep, excerpt,
                excerpt[keep] != '\0' ? " …(truncated)" : "");
    free(schema);
    json_t *result =
        json_pack("{s:[{s:s, s:s%}], s:b}", "content", "type", "text", "text", text.s, text.len, "isError", 1);
    free(text.s);
    json_t *shape = mcp_audit_arguments(json_object_get(json_object_get(q->msg, "params"), "arguments"),
                                        q->gw->cfg->audit_arguments);
    mcp_audit_call(q->gw, q->s->principal, "tools/call", t->resource, "invalid_arguments", 0,
                   json_pack("{s:s, s:o, s:o}", "session", q->s->id, "arguments", shape, "errors", details));
    answer_result(q, result);
}

/* Sends the query's request to srv with `name` (the upstream's own name) in place of the public
 * one (NULL: unchanged), answering on the query's stream. */
static void
forward(query_t *q, mcp_server_t *srv, const char *field, const char *upstream_value, const char *target, json_t *audit)
{
    json_t *req = json_deep_copy(q->msg);
    if (field != NULL)
        json_object_set_new(json_object_get(req, "params"), field, json_string(upstream_value));
    mcp_call_t *c = mcp_call_new(srv, q->s, req, q->method);
    json_decref(req);
    defer(q);
    c->client_id = json_incref((json_t *)q->id);
    c->stream = q->st;
    c->target = tp_strdup(target);
    c->audit = audit;
    query_free(q);
    mcp_call_start(c);
}

static void
call_tool(mcp_session_t *s, void *data)
{
    query_t *q = data;
    if (query_gone(q))
        return;
    const json_t *params = json_object_get(q->msg, "params");
    const char *name = json_string_value(json_object_get(params, "name"));
    if (name == NULL) {
        answer_error(q, JSONRPC_INVALID_PARAMS, "tools/call needs params.name (a string)", NULL);
        return;
    }
    bool quarantined;
    const mcp_tool_t *t = mcp_find_tool(q->gw, name, &quarantined);
    if (t == NULL && quarantined && visible(q, name)) {
        char *msg = tp_sprintf("Tool \"%s\" is unavailable: its definition changed upstream and awaits an "
                               "operator's review",
                               name);
        mcp_audit_call(q->gw, q->s->principal, "tools/call", name, "quarantined", 0,
                       json_pack("{s:s}", "session", s->id));
        answer_error(q, MCP_ERR_QUARANTINED, msg, json_pack("{s:s}", "tool", name));
        free(msg);
        return;
    }
    if (t == NULL || !visible(q, t->public_name)) {
        unknown_tool(q, name);
        return;
    }
    mcp_gateway_t *gw = q->gw;
    switch (authorize(q, t->resource, "tools/call")) { /* q is gone unless allowed */
    case AUTHZ_ALLOWED:
        break;
    case AUTHZ_REFUSED:
        mcp_audit_call(gw, s->principal, "tools/call", t->resource, "denied", 0, json_pack("{s:s}", "session", s->id));
        return;
    case AUTHZ_NONE: /* no decision was made: nothing to audit as denied */
        return;
    }
    const json_t *args = json_object_get(params, "arguments");
    if (args != NULL && !json_is_object(args)) {
        mcp_schema_error_t e = { .keyword = "type", .schema = json_object_get(t->def, "inputSchema") };
        snprintf(e.message, sizeof(e.message), "arguments must be an object");
        invalid_arguments(q, t, &e, 1);
        return;
    }
    if (t->schema != NULL) {
        mcp_schema_error_t errs[MAX_SCHEMA_ERRORS];
        size_t n = 0;
        json_t *empty = args == NULL ? json_object() : NULL;
        bool ok = mcp_schema_validate(t->schema, args != NULL ? args : empty, errs, MAX_SCHEMA_ERRORS, &n);
        json_decref(empty);
        if (!ok) {
            invalid_arguments(q, t, errs, n);
            return;
        }
    }
    json_t *audit =
        json_pack("{s:s, s:o}", "session", s->id, "arguments", mcp_audit_arguments(args, q->gw->cfg->audit_arguments));
    forward(q, t->server, "name", t->name, t->resource, audit);
}

/* ---- prompts, resources, completion ---- */

static void
get_prompt(mcp_session_t *s, void *data)
{
    query_t *q = data;
    if (query_gone(q))
        return;
    const char *name = json_string_value(json_object_get(json_object_get(q->msg, "params"), "name"));
    const mcp_tool_t *p = name != NULL && s->virtual_name == NULL ? mcp_find_prompt(q->gw, name) : NULL;
    if (p == NULL) {
        const char *n = name != NULL ? name : "";
        char *msg = tp_sprintf("Unknown prompt \"%.*s\"", mcp_utf8_cut(n, QUOTED_NAME_MAX), n);
        answer_error(q, JSONRPC_INVALID_PARAMS, msg, NULL);
        free(msg);
        return;
    }
    if (authorize(q, p->resource, "prompts/get") != AUTHZ_ALLOWED)
        return;
    forward(q, p->server, "name", p->name, p->resource, json_pack("{s:s}", "session", s->id));
}

static void
route_resource(mcp_session_t *s, void *data)
{
    query_t *q = data;
    if (query_gone(q))
        return;
    const char *uri = json_string_value(json_object_get(json_object_get(q->msg, "params"), "uri"));
    if (uri == NULL) {
        answer_error(q, JSONRPC_INVALID_PARAMS, "params.uri (a string) is required", NULL);
        return;
    }
    mcp_server_t *srv = s->virtual_name == NULL ? mcp_find_resource_server(q->gw, uri) : NULL;
    if (srv == NULL) {
        char *msg = tp_sprintf("Resource not found: %.*s", mcp_utf8_cut(uri, 300), uri);
        answer_error(q, MCP_ERR_RESOURCE_NOT_FOUND, msg, json_pack("{s:s}", "uri", uri));
        free(msg);
        return;
    }
    char *resource = tp_sprintf("%s/%s", mcp_server_name(srv), uri);
    if (authorize(q, resource, "resources/read") != AUTHZ_ALLOWED) {
        free(resource);
        return;
    }
    if (strcmp(q->method, "resources/subscribe") == 0) {
        mcp_server_subscribe(srv, s, uri);
    } else if (strcmp(q->method, "resources/unsubscribe") == 0 && !mcp_server_unsubscribe(srv, s, uri)) {
        answer_result(q, json_object()); /* other sessions keep the shared child subscribed */
        free(resource);
        return;
    }
    json_t *audit = strcmp(q->method, "resources/read") == 0 ? json_pack("{s:s}", "session", s->id) : NULL;
    forward(q, srv, NULL, NULL, resource, audit);
    free(resource);
}

static void
with_resources(mcp_session_t *s, void *data)
{
    query_t *q = data;
    with_catalog(q, "resourceTemplates", route_resource);
}

/* completion/complete, for a prompt or a resource the session can see: a virtual server exposes
 * tools only, so it completes nothing. */
static void
complete(mcp_session_t *s, void *data)
{
    query_t *q = data;
    if (query_gone(q))
        return;
    const json_t *ref = json_object_get(json_object_get(q->msg, "params"), "ref");
    const char *type = json_string_value(json_object_get(ref, "type"));
    bool whole = s->virtual_name == NULL;
    if (type != NULL && strcmp(type, "ref/prompt") == 0) {
        const char *name = json_string_value(json_object_get(ref, "name"));
        const mcp_tool_t *p = name != NULL && whole ? mcp_find_prompt(q->gw, name) : NULL;
        if (p == NULL) {
            answer_error(q, JSONRPC_INVALID_PARAMS, "completion/complete: unknown prompt", NULL);
            return;
        }
        if (authorize(q, p->resource, "prompts/get") != AUTHZ_ALLOWED)
            return;
        json_t *req = json_deep_copy(q->msg);
        json_object_set_new(json_object_get(json_object_get(req, "params"), "ref"), "name", json_string(p->name));
        json_decref(q->msg);
        q->msg = req; /* q->id and q->method point into the message: follow it */
        q->id = json_object_get(req, "id");
        q->method = json_string_value(json_object_get(req, "method"));
        forward(q, p->server, NULL, NULL, p->resource, NULL);
        return;
    }
    if (type != NULL && strcmp(type, "ref/resource") == 0) {
        const char *uri = json_string_value(json_object_get(ref, "uri"));
        mcp_server_t *srv = uri != NULL && whole ? mcp_find_resource_server(q->gw, uri) : NULL;
        if (srv == NULL) {
            answer_error(q, MCP_ERR_RESOURCE_NOT_FOUND, "completion/complete: unknown resource", NULL);
            return;
        }
        char *resource = tp_sprintf("%s/%s", mcp_server_name(srv), uri);
        if (authorize(q, resource, "resources/read") == AUTHZ_ALLOWED)
            forward(q, srv, NULL, NULL, resource, NULL);
        free(resource);
        return;
    }
    answer_error(q, JSONRPC_INVALID_PARAMS, "completion/complete needs params.ref of type ref/prompt or ref/resource",
                 NULL);
}

static void
with_resources_then_complete(mcp_session_t *s, void *data)
{
    query_t *q = data;
    with_catalog(q, "resourceTemplates", complete);
}

static void
with_prompts_then_complete(mcp_session_t *s, void *data)
{
    query_t *q = data;
    if (query_gone(q))
        return;
    const char *type =
        json_string_value(json_object_get(json_object_get(json_object_get(q->msg, "params"), "ref"), "type"));
    if (type != NULL && strcmp(type, "ref/resource") == 0)
        with_catalog(q, "resources", with_resources_then_complete);
    else
        complete(s, q);
}

/* ---- logging ---- */

static const char *const log_levels[] = { "debug",    "info",  "notice",    "warning", "error",
                                          "critical", "alert", "emergency", NULL };

static int
level_rank(const char *level)
{
    for (int i = 0; log_levels[i] != NULL; i++) {
        if (level != NULL && strcmp(log_levels[i], level) == 0)
            return i;
    }
    return -1;
}

static void
set_level(query_t *q)
{
    const char *level = json_string_value(json_object_get(json_object_get(q->msg, "params"), "level"));
    if (level_rank(level) < 0) {
        answer_error(q, JSONRPC_INVALID_PARAMS,
                     "logging/setLevel: level must be one of debug, info, notice, warning, error, critical, alert, "
                     "emergency",
                     NULL);
        return;
    }
    snprintf(q->s->log_level, sizeof(q->s->log_level), "%s", level);
    /* Each HTTP upstream session of this client gets the level too; a shared stdio child serves
     * every client, so its level stays, and the gateway filters what it relays instead. */
    for (size_t i = 0; i < q->gw->num_servers; i++) {
        if (q->s->links[i] != NULL)
            mcp_server_request_quiet(q->gw->servers[i], q->s, "logging/setLevel", json_object_get(q->msg, "params"));
    }
    answer_result(q, json_object());
}

/* ---- messages from clients ---- */

static void
client_response(mcp_gateway_t *gw, mcp_session_t *s, json_t *msg)
{
    const json_t *id = json_object_get(msg, "id");
    const char *key = json_string_value(id);
    json_t *route = key != NULL ? json_object_get(s->server_requests, key) : NULL;
    if (route == NULL)
        return; /* an answer to nothing we asked: dropped */
    size_t idx = (size_t)json_integer_value(json_object_get(route, "server"));
    json_t *out = json_deep_copy(msg);
    json_object_set(out, "id", json_object_get(route, "id"));
    if (idx < gw->num_servers)
        mcp_server_notify(gw->servers[idx], s, out);
    json_decref(out);
    json_object_del(s->server_requests, key);
}

static void
client_notification(mcp_gateway_t *gw, mcp_session_t *s, json_t *msg)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    if (strcmp(method, "notifications/initialized") == 0) {
        s->initialized = true;
    } else if (strcmp(method, "notifications/cancelled") == 0) {
        const json_t *rid = json_object_get(json_object_get(msg, "params"), "requestId");
        for (mcp_call_t *c = s->calls; c != NULL; c = c->next_in_session) {
            if (c->client_id != NULL && json_equal(c->client_id, rid)) {
                const char *reason = json_string_value(json_object_get(json_object_get(msg, "params"), "reason"));
                mcp_call_cancel(c, reason != NULL ? reason : "cancelled by the client");
                break;
            }
        }
    } else if (strcmp(method, "notifications/roots/list_changed") == 0) {
        for (size_t i = 0; i < gw->num_servers; i++)
            mcp_server_notify(gw->servers[i], s, msg);
    }
}

void
mcp_broker_handle(mcp_gateway_t *gw, tp_request_t *r, mcp_session_t *s, json_t *msg, pol_verdict_t *v)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    const json_t *id = json_object_get(msg, "id");
    tp_metric_add(gw->metrics.messages, (const char *[]){ "from_client", method != NULL ? "request" : "response" }, 1);
    if (method == NULL) {
        client_response(gw, s, msg);
        accepted(r);
        return;
    }
    if (id == NULL) {
        client_notification(gw, s, msg);
        accepted(r);
        return;
    }
    query_t *q = query_new(gw, r, s, msg, v);
    const list_kind_t *k = list_kind_of(method);
    if (k != NULL)
        with_catalog(q, k->catalog, list_answer);
    else if (strcmp(method, "tools/call") == 0)
        with_catalog(q, "tools", call_tool);
    else if (strcmp(method, "prompts/get") == 0)
        with_catalog(q, "prompts", get_prompt);
    else if (strcmp(method, "resources/read") == 0 || strcmp(method, "resources/subscribe") == 0 ||
             strcmp(method, "resources/unsubscribe") == 0)
        with_catalog(q, "resources", with_resources);
    else if (strcmp(method, "completion/complete") == 0)
        with_catalog(q, "prompts", with_prompts_then_complete);
    else if (strcmp(method, "ping") == 0)
        answer_result(q, json_object());
    else if (strcmp(method, "logging/setLevel") == 0)
        set_level(q);
    else {
        char *m = tp_sprintf("Method not found: %.*s", mcp_utf8_cut(method, 100), method);
        answer_error(q, JSONRPC_METHOD_NOT_FOUND, m, NULL);
        free(m);
    }
}

/* ---- messages from servers ---- */

/* The session a message from a shared (stdio) server belongs to: the caller of the request it
 * came with, else the only session with a call in flight to that server. */
static mcp_session_t *
attribute(mcp_server_t *srv, mcp_session_t *session, mcp_call_t *call)
{
    if (session != NULL)
        return session;
    if (call != NULL)
        return call->session;
    return mcp_server_sole_caller(srv);
}

static mcp_stream_t *
stream_for(mcp_session_t *s, mcp_call_t *call)
{
    if (call != NULL && call->session == s && call->stream != NULL)
        return call->stream;
    if (s->standing == NULL)
        mcp_stream_new(s, true);
    return s->standing;
}

/* Sends reply (stolen; its id is set here) to the server's request `id`. */
static void
reply_to_server(mcp_server_t *srv, mcp_session_t *s, const json_t *id, json_t *reply)
{
    json_object_set(reply, "id", (json_t *)id);
    mcp_server_notify(srv, s, reply);
    json_decref(reply);
}

static const char *
required_capability(const char *method)
{
    if (strcmp(method, "sampling/createMessage") == 0)
        return "sampling";
    if (strcmp(method, "elicitation/create") == 0)
        return "elicitation";
    if (strcmp(method, "roots/list") == 0)
        return "roots";
    return NULL;
}

/* Forgets a relayed request the client has not answered; the server, which may still wait for
 * the answer, gets an error instead. */
static void
abandon_server_request(mcp_session_t *s, const char *key)
{
    json_t *route = json_object_get(s->server_requests, key);
    size_t idx = (size_t)json_integer_value(json_object_get(route, "server"));
    if (idx < s->gw->num_servers)
        reply_to_server(s->gw->servers[idx], s, json_object_get(route, "id"),
                        mcp_jsonrpc_error(NULL, JSONRPC_INTERNAL_ERROR,
                                          "the gateway stopped waiting for the client's answer", NULL));
    json_object_del(s->server_requests, key);
}

/* Remembers where the client's answer to a relayed request goes, under a key of ours. The oldest
 * unanswered request makes room once a session has MAX_SERVER_REQUESTS of them. */
static void
remember_server_request(mcp_server_t *srv, mcp_session_t *s, mcp_call_t *call, const json_t *id, const char *key)
{
    if (json_object_size(s->server_requests) >= MAX_SERVER_REQUESTS)
        abandon_server_request(s, json_object_iter_key(json_object_iter(s->server_requests)));
    json_t *route = json_pack("{s:I, s:O}", "server", (json_int_t)mcp_server_index(srv), "id", id);
    if (call != NULL && call->session == s)
        json_object_set_new(route, "call", json_integer((json_int_t)call->up_id));
    json_object_set_new(s->server_requests, key, route);
}

void
mcp_broker_call_ended(mcp_call_t *c)
{
    mcp_session_t *s = c->session;
    if (s->ended || json_object_size(s->server_requests) == 0)
        return;
    const char *key;
    json_t *route, *tmp;
    json_object_foreach_safe(s->server_requests, tmp, key, route)
    {
        json_t *call = json_object_get(route, "call");
        if (call != NULL && (uint64_t)json_integer_value(call) == c->up_id)
            json_object_del(s->server_requests, key); /* the call it served is over: so is it */
    }
}

static void
server_request(mcp_server_t *srv, mcp_session_t *s, mcp_call_t *call, json_t *msg)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    const json_t *id = json_object_get(msg, "id");
    if (strcmp(method, "ping") == 0) {
        reply_to_server(srv, s, id, json_pack("{s:s, s:{}}", "jsonrpc", "2.0", "result"));
        return;
    }
    const char *cap = required_capability(method);
    if (s == NULL || cap == NULL || json_object_get(s->client_capabilities, cap) == NULL) {
        /* s is NULL for a shared stdio child with no single session to relay to (gateway.h) */
        char *m = tp_sprintf("%.*s cannot be relayed: %s", mcp_utf8_cut(method, 100), method,
                             s == NULL     ? "no single client session it belongs to"
                             : cap == NULL ? "the gateway does not relay this method"
                                           : "the client did not declare that capability");
        reply_to_server(srv, s, id, mcp_jsonrpc_error(NULL, JSONRPC_METHOD_NOT_FOUND, m, NULL));
        free(m);
        return;
    }
    char key[40];
    snprintf(key, sizeof(key), "gw-s%" PRIu64, ++s->gw->next_client_id);
    remember_server_request(srv, s, call, id, key);
    json_t *out = json_deep_copy(msg);
    json_object_set_new(out, "id", json_string(key));
    mcp_stream_send(stream_for(s, call), out, false);
    json_decref(out);
}

/* A message from a shared child that no single session can be said to have caused. */
static void
drop_unattributable(mcp_server_t *srv, const char *method)
{
    tp_log_fields(
        TP_LOG_DEBUG, NULL, "upstream message dropped: no single session it belongs to",
        json_pack("{s:s, s:s%}", "server", mcp_server_name(srv), "method", method, (size_t)mcp_utf8_cut(method, 100)));
    tp_metric_add(mcp_server_gateway(srv)->metrics.dropped, (const char *[]){ "unattributable" }, 1);
}

typedef struct update {
    mcp_server_t *srv;
    const char *uri;
    json_t *msg;
} update_t;

static void
send_update(mcp_session_t *s, void *arg)
{
    const update_t *u = arg;
    json_t *idx = json_object_get(s->subscriptions, u->uri);
    if (idx != NULL && (size_t)json_integer_value(idx) == mcp_server_index(u->srv))
        mcp_stream_send(stream_for(s, NULL), u->msg, false);
}

/* resources/updated goes to the sessions subscribed to the uri at that server: the link's own
 * session (HTTP), or every one of them (a shared child holds one subscription for all). */
static void
resource_updated(mcp_server_t *srv, mcp_session_t *session, json_t *msg)
{
    update_t u = { srv, json_string_value(json_object_get(json_object_get(msg, "params"), "uri")), msg };
    if (u.uri == NULL)
        return;
    if (session != NULL) {
        if (!session->ended)
            send_update(session, &u);
        return;
    }
    mcp_session_each(mcp_server_gateway(srv), send_update, &u);
}

static void
server_notification(mcp_server_t *srv, mcp_session_t *s, mcp_call_t *call, json_t *msg)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    const json_t *params = json_object_get(msg, "params");
    if (strcmp(method, "notifications/progress") == 0) {
        const char *token = json_string_value(json_object_get(params, "progressToken"));
        mcp_call_t *c = token != NULL ? mcp_server_call_by_token(srv, token) : NULL;
        if (c == NULL || c->stream == NULL)
            return;
        json_t *out = json_deep_copy(msg);
        json_object_set(json_object_get(out, "params"), "progressToken", c->client_token);
        mcp_stream_send(c->stream, out, false);
        json_decref(out);
        return;
    }
    if (strncmp(method, "notifications/", 14) == 0 && strstr(method, "/list_changed") != NULL) {
        const char *kind = strstr(method, "tools/") ? "tools" : strstr(method, "prompts/") ? "prompts" : "resources";
        mcp_server_invalidate(srv, kind);
        mcp_broker_list_changed(mcp_server_gateway(srv), srv, kind);
        return;
    }
    if (strcmp(method, "notifications/cancelled") == 0)
        return; /* the server withdrew a request of its own; its answer will simply be dropped */
    if (s == NULL) {
        drop_unattributable(srv, method);
        return;
    }
    if (strcmp(method, "notifications/message") == 0) {
        const char *level = json_string_value(json_object_get(params, "level"));
        if (s->log_level[0] != '\0' && level_rank(level) < level_rank(s->log_level))
            return;
    }
    mcp_stream_send(stream_for(s, call), msg, false);
}

void
mcp_broker_from_server(mcp_server_t *srv, mcp_session_t *session, mcp_call_t *call, json_t *msg)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    if (method == NULL)
        return; /* not a request nor a notification */
    if (json_object_get(msg, "id") == NULL && strcmp(method, "notifications/resources/updated") == 0) {
        resource_updated(srv, session, msg);
        return;
    }
    mcp_session_t *s = attribute(srv, session, call);
    if (s != NULL && s->ended)
        s = NULL;
    if (json_object_get(msg, "id") != NULL)
        server_request(srv, s, call, msg);
    else
        server_notification(srv, s, call, msg);
}

/* ---- list changes ---- */

static void
notify_changed(mcp_session_t *s, void *arg)
{
    const char *method = arg;
    if (!s->initialized || s->standing == NULL)
        return;
    json_t *note = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", method);
    mcp_stream_send(s->standing, note, false);
    json_decref(note);
}

static void
on_debounce(uv_timer_t *t)
{
    mcp_gateway_t *gw = t->data;
    static const char *const methods[] = { "notifications/tools/list_changed", "notifications/prompts/list_changed",
                                           "notifications/resources/list_changed" };
    for (int i = 0; i < 3; i++) {
        if (gw->changed & (1u << i))
            mcp_session_each(gw, notify_changed, (void *)methods[i]);
    }
    gw->changed = 0;
}

void
mcp_broker_list_changed(mcp_gateway_t *gw, mcp_server_t *srv, const char *kind)
{
    unsigned bit = strcmp(kind, "tools") == 0 ? 1u : strcmp(kind, "prompts") == 0 ? 2u : 4u;
    if (gw->loop == NULL)
        return;
    if (gw->changed_timer == NULL) {
        gw->changed_timer = tp_calloc(1, sizeof(uv_timer_t));
        uv_timer_init(gw->loop, gw->changed_timer);
        gw->changed_timer->data = gw;
        uv_unref((uv_handle_t *)gw->changed_timer);
    }
    if (gw->changed == 0)
        uv_timer_start(gw->changed_timer, on_debounce, (uint64_t)gw->cfg->list_changed_debounce_ms, 0);
    gw->changed |= bit;
}
