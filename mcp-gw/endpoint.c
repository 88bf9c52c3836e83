/*
 * endpoint.c — the MCP endpoint over Streamable HTTP (MCP 2025-11-25, also 2025-06-18 and
 * 2025-03-26): POST carries one JSON-RPC message, GET opens the session's standing SSE stream
 * (or resumes one with Last-Event-ID), DELETE ends the session.
 *
 * Checks, in order: the Host and Origin allow-lists (DNS rebinding: 403), the caller's
 * credential (401 with WWW-Authenticate), Accept (406) and Content-Type (415), the message
 * (400 with a JSON-RPC parse or invalid-request error), the session (400 when missing, 404 when
 * unknown, ended or another principal's) and MCP-Protocol-Version (400 when unsupported or not
 * the negotiated one). What passes goes to the broker.
 *
 * While the daemon drains, initialize and GETs that would open (or resume) a standing stream get
 * 503: those would keep connections open past the drain. A GET resuming a request's stream still
 * gets its answer.
 */
#include "gateway.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "pattern.h"
#include "log.h"
#include "mem.h"

static const char *const supported_versions[] = { "2025-11-25", "2025-06-18", "2025-03-26", NULL };

bool
mcp_protocol_supported(const char *v, size_t len)
{
    for (const char *const *p = supported_versions; *p != NULL; p++) {
        if (strlen(*p) == len && memcmp(*p, v, len) == 0)
            return true;
    }
    return false;
}

static bool
matches_any(char *const *patterns, size_t n, h2o_iovec_t value)
{
    for (size_t i = 0; i < n; i++) {
        if (tp_pattern_match(patterns[i], value.base, value.len))
            return true;
    }
    return false;
}

/* The error envelope of this plane: a JSON-RPC error with id null. */
void
mcp_error_envelope(tp_request_t *r, int status, const char *code, const char *message)
{
    int rpc = status == 400 ? JSONRPC_INVALID_REQUEST : status >= 500 ? JSONRPC_INTERNAL_ERROR : -32000;
    tp_http_send_json(r, status,
                      json_pack("{s:s, s:n, s:{s:i, s:s, s:{s:s}}}", "jsonrpc", "2.0", "id", "error", "code", rpc,
                                "message", message, "data", "reason", code));
}

static void
refuse(tp_request_t *r, int status, int rpc_code, const char *message)
{
    tp_http_send_json(
        r, status,
        json_pack("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error", "code", rpc_code, "message", message));
}

/* Whether an Accept header admits `type` ("application/json"), counting * / * and type/ *. */
static bool
accepts(h2o_iovec_t accept, const char *type)
{
    if (accept.base == NULL)
        return false;
    const char *slash = strchr(type, '/');
    size_t major = (size_t)(slash - type);
    const char *p = accept.base, *end = accept.base + accept.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ','))
            p++;
        const char *item = p;
        while (p < end && *p != ',' && *p != ';')
            p++;
        size_t n = (size_t)(p - item);
        while (n > 0 && item[n - 1] == ' ')
            n--;
        if ((n == strlen(type) && strncasecmp(item, type, n) == 0) || (n == 3 && memcmp(item, "*/*", 3) == 0) ||
            (n == major + 2 && strncasecmp(item, type, major + 1) == 0 && item[major + 1] == '*'))
            return true;
        while (p < end && *p != ',')
            p++;
    }
    return false;
}

/* Whether a Host value is a plain host[:port] (letters, digits, '.', '-', ':', and the brackets
 * of an IPv6 literal): only such a value may be written into a quoted header parameter. */
static bool
plain_host(h2o_iovec_t host)
{
    if (host.len == 0 || host.len > 255)
        return false;
    for (size_t i = 0; i < host.len; i++) {
        char c = host.base[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == ':' || c == '[' || c == ']'))
            return false;
    }
    return true;
}

/* The RFC 9728 metadata URL of this endpoint: from the configured resource_url (its origin, then
 * the well-known path, then its path), else from the request's Host when that is a plain host;
 * NULL when there is neither. malloc'd. */
static char *
metadata_url(mcp_gateway_t *gw, tp_request_t *r)
{
    const char *res = gw->cfg->resource_url;
    if (res != NULL) {
        const char *scheme = strstr(res, "://");
        const char *path = scheme != NULL ? strchr(scheme + 3, '/') : NULL;
        int origin = path != NULL ? (int)(path - res) : (int)strlen(res);
        return tp_sprintf("%.*s/.well-known/oauth-protected-resource%s", origin, res, path != NULL ? path : "");
    }
    h2o_iovec_t host = r->req->authority;
    if (!plain_host(host))
        return NULL;
    return tp_sprintf("http://%.*s/.well-known/oauth-protected-resource%s", (int)host.len, host.base, gw->cfg->path);
}

static void
www_authenticate(mcp_gateway_t *gw, tp_request_t *r, const pol_verdict_t *v)
{
    if (gw->cfg->authorization_server_count == 0) {
        pol_gate_refuse(r, v);
        return;
    }
    char *url = metadata_url(gw, r);
    char *value = url != NULL ? tp_sprintf("Bearer realm=\"triplane\", resource_metadata=\"%s\"", url)
                              : tp_strdup("Bearer realm=\"triplane\"");
    tp_http_add_header(r, "www-authenticate", value);
    free(value);
    free(url);
    tp_http_error(r, v->status, v->code, v->message);
}

/* GET /.well-known/oauth-protected-resource[/mcp]: RFC 9728 metadata. */
static int
on_resource_metadata(tp_request_t *r, void *data)
{
    mcp_gateway_t *gw = data;
    if (gw->cfg->authorization_server_count == 0) {
        tp_http_error(r, 404, "not_found", "this gateway announces no authorization server");
        return 0;
    }
    json_t *servers = json_array();
    for (size_t i = 0; i < gw->cfg->authorization_server_count; i++)
        json_array_append_new(servers, json_string(gw->cfg->authorization_servers[i]));
    json_t *resource;
    if (gw->cfg->resource_url != NULL) {
        resource = json_string(gw->cfg->resource_url);
    } else {
        char *u = tp_sprintf("http://%.*s%s", (int)r->req->authority.len, r->req->authority.base, gw->cfg->path);
        resource = json_string(u);
        free(u);
    }
    tp_http_send_json(r, 200,
                      json_pack("{s:o, s:o, s:[s], s:s}", "resource", resource, "authorization_servers", servers,
                                "bearer_methods_supported", "header", "resource_name", "Triplane MCP gateway"));
    return 0;
}

/* The session a request names, or NULL after answering 400/404. */
static mcp_session_t *
request_session(mcp_gateway_t *gw, tp_request_t *r, const pol_verdict_t *v)
{
    h2o_iovec_t sid = tp_http_header(r, "mcp-session-id");
    if (sid.base == NULL) {
        refuse(r, 400, JSONRPC_INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required (initialize first)");
        return NULL;
    }
    mcp_session_t *s = mcp_session_find(gw, sid.base, sid.len);
    if (s == NULL || strcmp(s->principal, v->identity.principal->id) != 0) {
        refuse(r, 404, -32001, "Session not found: it ended or never existed; initialize a new one");
        return NULL;
    }
    /* A version this gateway speaks is accepted even when it is not the negotiated one: the
     * official clients send 2025-03-26 on some requests of a 2025-11-25 session. */
    h2o_iovec_t pv = tp_http_header(r, "mcp-protocol-version");
    if (pv.base != NULL && !mcp_protocol_supported(pv.base, pv.len)) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "Bad Request: unsupported MCP-Protocol-Version %.*s (supported: 2025-11-25, "
                 "2025-06-18, 2025-03-26)",
                 (int)(pv.len > 40 ? 40 : pv.len), pv.base);
        refuse(r, 400, JSONRPC_INVALID_REQUEST, msg);
        return NULL;
    }
    return s;
}

/* The virtual server a path names ("" after the endpoint: none). Returns false after a 404. */
static bool
virtual_of(mcp_gateway_t *gw, tp_request_t *r, const char **name)
{
    h2o_iovec_t path = r->req->path_normalized;
    size_t base = strlen(gw->cfg->path);
    *name = NULL;
    if (path.len <= base + 1)
        return true;
    const char *v = path.base + base + 1;
    size_t vlen = path.len - base - 1;
    for (size_t i = 0; i < gw->cfg->virtual_count; i++) {
        const char *n = gw->cfg->virtual_servers[i].name;
        if (strlen(n) == vlen && memcmp(n, v, vlen) == 0) {
            *name = n;
            return true;
        }
    }
    tp_http_error(r, 404, "not_found", "no such MCP endpoint");
    return false;
}

static void
handle_post(mcp_gateway_t *gw, tp_request_t *r, pol_verdict_t *v, const char *virtual_name)
{
    if (!accepts(tp_http_header(r, "accept"), "application/json") ||
        !accepts(tp_http_header(r, "accept"), "text/event-stream")) {
        refuse(r, 406, JSONRPC_INVALID_REQUEST,
               "Not Acceptable: Accept must list application/json and text/event-stream");
        return;
    }
    h2o_iovec_t ct = tp_http_header(r, "content-type");
    if (ct.base == NULL || ct.len < 16 || strncasecmp(ct.base, "application/json", 16) != 0) {
        refuse(r, 415, JSONRPC_INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json");
        return;
    }
    json_error_t jerr;
    json_t *msg = json_loadb(r->req->entity.base != NULL ? r->req->entity.base : "", r->req->entity.len,
                             JSON_REJECT_DUPLICATES, &jerr);
    if (msg == NULL) {
        char m[300];
        snprintf(m, sizeof(m), "Parse error: %s (at byte %d)", jerr.text, jerr.position);
        refuse(r, 400, JSONRPC_PARSE_ERROR, m);
        return;
    }
    if (json_is_array(msg)) {
        json_decref(msg);
        refuse(r, 400, JSONRPC_INVALID_REQUEST, "Invalid Request: send one JSON-RPC message per POST (no batches)");
        return;
    }
    const json_t *method = json_object_get(msg, "method");
    const json_t *id = json_object_get(msg, "id");
    bool is_response = method == NULL && id != NULL &&
                       (json_object_get(msg, "result") != NULL || json_object_get(msg, "error") != NULL);
    if (!json_is_object(msg) || !json_is_string(json_object_get(msg, "jsonrpc")) ||
        strcmp(json_string_value(json_object_get(msg, "jsonrpc")), "2.0") != 0 ||
        (method != NULL && !json_is_string(method)) || (id != NULL && !json_is_string(id) && !json_is_integer(id)) ||
        (method == NULL && !is_response)) {
        json_decref(msg);
        refuse(r, 400, JSONRPC_INVALID_REQUEST,
               "Invalid Request: expected a JSON-RPC 2.0 request, notification or response object");
        return;
    }
    if (method != NULL && strcmp(json_string_value(method), "initialize") == 0) {
        if (id == NULL) {
            json_decref(msg);
            refuse(r, 400, JSONRPC_INVALID_REQUEST, "Invalid Request: initialize must be a request (with an id)");
            return;
        }
        if (gw->draining)
            refuse(r, 503, JSONRPC_INTERNAL_ERROR, "Service Unavailable: the gateway is shutting down");
        else
            mcp_broker_initialize(gw, r, msg, v, virtual_name);
        json_decref(msg);
        return;
    }
    mcp_session_t *s = request_session(gw, r, v);
    if (s != NULL) {
        if ((s->virtual_name == NULL) != (virtual_name == NULL) ||
            (virtual_name != NULL && strcmp(s->virtual_name, virtual_name) != 0))
            refuse(r, 404, -32001, "Session not found on this endpoint");
        else
            mcp_broker_handle(gw, r, s, msg, v);
    }
    json_decref(msg);
}

static void
handle_get(mcp_gateway_t *gw, tp_request_t *r, pol_verdict_t *v)
{
    if (!accepts(tp_http_header(r, "accept"), "text/event-stream")) {
        refuse(r, 406, JSONRPC_INVALID_REQUEST, "Not Acceptable: Accept must list text/event-stream");
        return;
    }
    mcp_session_t *s = request_session(gw, r, v);
    if (s == NULL)
        return;
    h2o_iovec_t last = tp_http_header(r, "last-event-id");
    if (last.base != NULL) {
        uint64_t stream_id = 0, seq = 0;
        char buf[64];
        snprintf(buf, sizeof(buf), "%.*s", (int)(last.len < 63 ? last.len : 63), last.base);
        mcp_stream_t *st =
            sscanf(buf, "%" SCNu64 "-%" SCNu64, &stream_id, &seq) == 2 ? mcp_stream_find(s, stream_id) : NULL;
        if (st != NULL && !(st->standing && gw->draining)) {
            mcp_stream_attach(st, r, v, seq, false);
            return;
        }
    }
    if (gw->draining) {
        refuse(r, 503, JSONRPC_INTERNAL_ERROR, "Service Unavailable: the gateway is shutting down");
        return;
    }
    if (s->standing != NULL && mcp_stream_request(s->standing) != NULL) {
        refuse(r, 409, JSONRPC_INVALID_REQUEST, "Conflict: this session already has an open GET stream");
        return;
    }
    mcp_stream_t *st = s->standing != NULL ? s->standing : mcp_stream_new(s, true);
    mcp_stream_attach(st, r, v, st->next_seq - 1, strcmp(s->protocol, "2025-11-25") >= 0);
}

static void
verdict_dispose(void *p)
{
    pol_verdict_clear(p);
}

static int
on_mcp(tp_request_t *r, void *data)
{
    mcp_gateway_t *gw = data;
    mcp_gateway_attach(gw, r->worker);
    const char *virtual_name;
    if (!virtual_of(gw, r, &virtual_name))
        return 0;
    if (gw->cfg->allowed_host_count > 0 &&
        !matches_any(gw->cfg->allowed_hosts, gw->cfg->allowed_host_count, r->req->authority)) {
        refuse(r, 403, -32000, "Forbidden: Host not allowed");
        return 0;
    }
    h2o_iovec_t origin = tp_http_header(r, "origin");
    if (origin.base != NULL && !matches_any(gw->cfg->allowed_origins, gw->cfg->allowed_origin_count, origin)) {
        refuse(r, 403, -32000, "Forbidden: Origin not allowed");
        return 0;
    }
    tp_daemon_request_state_hold(gw->daemon, r); /* the verdict is used from later callbacks */
    pol_verdict_t *v = h2o_mem_alloc_shared(&r->req->pool, sizeof(*v), verdict_dispose);
    memset(v, 0, sizeof(*v));
    if (!pol_gate_authenticate(gw->gate, r, v)) {
        www_authenticate(gw, r, v);
        return 0;
    }
    r->principal = h2o_mem_alloc_pool(&r->req->pool, strlen(v->identity.principal->id) + 1);
    strcpy((char *)r->principal, v->identity.principal->id);
    if (tp_http_method_is(r, "POST")) {
        handle_post(gw, r, v, virtual_name);
    } else if (tp_http_method_is(r, "GET")) {
        handle_get(gw, r, v);
    } else if (tp_http_method_is(r, "DELETE")) {
        mcp_session_t *s = request_session(gw, r, v);
        if (s != NULL) {
            mcp_session_end(s, "deleted");
            tp_http_send(r, 200, "application/json", "{}", 2);
        }
    } else {
        tp_http_add_header(r, "allow", "GET, POST, DELETE");
        refuse(r, 405, JSONRPC_INVALID_REQUEST, "Method Not Allowed: use POST, GET or DELETE");
    }
    return 0;
}

void
mcp_endpoint_register(mcp_gateway_t *gw)
{
    tp_server_t *srv = tp_daemon_server(gw->daemon);
    tp_server_route(srv, NULL, gw->cfg->path, true, on_mcp, gw);
    tp_server_route(srv, "GET", "/.well-known/oauth-protected-resource", true, on_resource_metadata, gw);
}
