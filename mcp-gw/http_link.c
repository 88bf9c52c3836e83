/*
 * http_link.c — see http_link.h.
 *
 * A link keeps one "exchange" per message it sent and still hears about: its HTTP call (the POST,
 * or later the GET that resumes its stream), how the response is read, and the request's
 * deadline. The GET stream has its own small state (listener_t). One uv timer per link serves
 * every deadline and delay: request timeouts, resumption and reconnection. Resumptions and
 * reconnections start only from that timer, never from inside a callback, so a reader is never
 * reset while a feed is using it.
 *
 * Callbacks to the broker may call back into the link, even close it or abandon the very
 * exchange being read. An exchange is therefore unlinked at once when it ends but freed only when
 * no callback of ours that uses it is on the stack (`busy`); the link itself is freed only from
 * its timer's close callback, which runs on a later loop turn.
 */
#include "http_link.h"

#include <assert.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "sse.h"

#define ERROR_BODY_MAX 8192 /* how much of an error response is read, for its JSON-RPC message */
#define REASON_MAX     160  /* the longest server text quoted in a failure reason */
#define MAX_SESSION_ID 1024 /* longer Mcp-Session-Id values are refused */
#define MAX_VERSION    64   /* longer protocolVersion values are not sent back */

struct mcp_http_server {
    char *name;
    char *path;               /* the endpoint's path and query, e.g. "/mcp" */
    tp_upstream_t *up;        /* POSTs, DELETEs and the GETs that resume a request's stream */
    tp_upstream_t *listen_up; /* the long GET streams, so that they cannot starve requests */
    size_t max_message_bytes; /* with the default filled in */
    uint64_t timeout_ms;      /* with the default filled in */
    unsigned links;           /* open and closing links; worker only */
    h2o_linklist_t closing;   /* closed links whose DELETE is in flight */
};

/* ---- reading one HTTP response ---- */

typedef enum body_mode {
    BODY_DISCARD, /* nothing in it matters (202 and the like) */
    BODY_JSON,    /* one JSON message, kept whole up to max_message_bytes */
    BODY_SSE,     /* a stream of events */
    BODY_ERROR,   /* an error status: its start is kept for the JSON-RPC error message */
} body_mode_t;

typedef struct reader {
    int status;
    char ctype[64]; /* the media type, lower-case, without parameters */
    body_mode_t mode;
    char *buf; /* BODY_JSON, BODY_ERROR */
    size_t len, cap, max;
    bool over; /* the body went over max */
    tp_sse_t sse;
} reader_t;

static void
reader_init(reader_t *r, size_t max_message)
{
    memset(r, 0, sizeof(*r));
    tp_sse_init(&r->sse, max_message);
}

static void
reader_dispose(reader_t *r)
{
    free(r->buf);
    tp_sse_dispose(&r->sse);
}

static void
reader_reset(reader_t *r, size_t max_message)
{
    reader_dispose(r);
    reader_init(r, max_message);
}

/* Keeps the status and the media type of a response head. */
static void
reader_head(reader_t *r, int status, const h2o_header_t *headers, size_t num_headers)
{
    r->status = status;
    for (size_t i = 0; i < num_headers; i++) {
        if (headers[i].name != &H2O_TOKEN_CONTENT_TYPE->buf)
            continue;
        const char *v = headers[i].value.base;
        size_t n = headers[i].value.len, start = 0, end;
        while (start < n && (v[start] == ' ' || v[start] == '\t'))
            start++;
        end = start;
        while (end < n && v[end] != ';' && v[end] != ' ' && v[end] != '\t')
            end++;
        size_t len = end - start < sizeof(r->ctype) - 1 ? end - start : sizeof(r->ctype) - 1;
        for (size_t j = 0; j < len; j++)
            r->ctype[j] = (char)tolower((unsigned char)v[start + j]);
        r->ctype[len] = '\0';
    }
}

static bool
reader_is(const reader_t *r, const char *media_type)
{
    return strcmp(r->ctype, media_type) == 0;
}

/* Keeps body bytes up to r->max. Returns false once over it. */
static bool
reader_keep(reader_t *r, const char *buf, size_t len)
{
    if (r->over || len > r->max - r->len) {
        r->over = true;
        return false;
    }
    if (r->len + len > r->cap) {
        size_t cap = r->cap != 0 ? r->cap : 4096;
        while (cap < r->len + len)
            cap *= 2;
        r->cap = cap < r->max ? cap : r->max;
        r->buf = tp_realloc(r->buf, r->cap);
    }
    memcpy(r->buf + r->len, buf, len);
    r->len += len;
    return true;
}

/* Finds a header by its lower-case name; returns its value or a NULL base. */
static h2o_iovec_t
find_header(const h2o_header_t *headers, size_t num_headers, const char *lc_name)
{
    size_t n = strlen(lc_name);
    for (size_t i = 0; i < num_headers; i++) {
        if (h2o_lcstris(headers[i].name->base, headers[i].name->len, lc_name, n))
            return headers[i].value;
    }
    return h2o_iovec_init(NULL, 0);
}

/* True when v (n bytes) is 1 to max visible ASCII characters (0x21-0x7E), as MCP requires of a
 * session id. */
static bool
is_visible_ascii(const char *v, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < 0x21 || v[i] > 0x7e)
            return false;
    }
    return true;
}

/* Formats "<prefix>: <text>" into why, text cut to REASON_MAX bytes at a character boundary and
 * its control characters made spaces: server text goes into reasons and logs. */
static void
reason_with_text(char *why, size_t size, const char *prefix, const char *text)
{
    size_t n = strlen(text);
    if (n > REASON_MAX) {
        n = REASON_MAX;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
            n--;
    }
    int w = snprintf(why, size, "%s: ", prefix);
    if (w < 0 || (size_t)w >= size)
        return;
    size_t at = (size_t)w;
    for (size_t i = 0; i < n && at + 1 < size; i++) {
        unsigned char c = (unsigned char)text[i];
        why[at++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    why[at] = '\0';
}

/* "HTTP <status>", with the JSON-RPC error message of the body when it has one. */
static void
http_reason(const reader_t *r, char *why, size_t size)
{
    json_t *body = r->buf != NULL && !r->over ? json_loadb(r->buf, r->len, 0, NULL) : NULL;
    const char *message = json_string_value(json_object_get(json_object_get(body, "error"), "message"));
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "HTTP %d", r->status);
    if (message != NULL)
        reason_with_text(why, size, prefix, message);
    else
        snprintf(why, size, "%s", prefix);
    json_decref(body);
}

/* A response: "result" or "error", and no "method". */
static bool
is_response(const json_t *msg)
{
    return json_object_get(msg, "method") == NULL &&
           (json_object_get(msg, "result") != NULL || json_object_get(msg, "error") != NULL);
}

/* The delay after `failures` attempts in a row that brought nothing: the minimum, doubled each
 * time, up to the maximum. */
static uint64_t
backoff_ms(unsigned failures)
{
    uint64_t d = MCP_HTTP_RECONNECT_MIN_MS;
    for (unsigned i = 1; i < failures && d < MCP_HTTP_RECONNECT_MAX_MS; i++)
        d *= 2;
    return d < MCP_HTTP_RECONNECT_MAX_MS ? d : MCP_HTTP_RECONNECT_MAX_MS;
}

/* ---- the server ---- */

static bool
is_link_header(h2o_iovec_t name)
{
    static const char *const names[] = { "accept", "content-type", "mcp-session-id", "mcp-protocol-version",
                                         "last-event-id" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (h2o_lcstris(name.base, name.len, names[i], strlen(names[i])))
            return true;
    }
    return false;
}

/* Splits url into its origin (scheme://authority, for tp_upstream, which checks it) and the
 * endpoint's path and query. Returns NULL or the problem. */
static const char *
split_url(const char *url, char **origin, char **path)
{
    if (strchr(url, '#') != NULL)
        return "a URL with a fragment";
    const char *scheme_end = strstr(url, "://");
    const char *authority = scheme_end != NULL ? scheme_end + 3 : url;
    const char *rest = authority + strcspn(authority, "/?");
    for (const char *q = rest; *q != '\0'; q++) {
        if ((unsigned char)*q <= 0x20 || *q == 0x7f)
            return "invalid path";
    }
    *origin = tp_strndup(url, (size_t)(rest - url));
    if (*rest == '\0')
        *path = tp_strdup("/");
    else if (*rest == '?')
        *path = tp_sprintf("/%s", rest);
    else
        *path = tp_strdup(rest);
    return NULL;
}

mcp_http_server_t *
mcp_http_server_new(const mcp_http_server_options_t *o, char **err)
{
    const char *name = o->name != NULL ? o->name : "";
    if (o->url == NULL) {
        *err = tp_sprintf("mcp server \"%s\": no URL", name);
        return NULL;
    }
    for (size_t i = 0; i < o->num_headers; i++) {
        if (is_link_header(o->headers[i].name)) {
            *err = tp_sprintf("mcp server \"%s\": header %.*s is written by the gateway", name,
                              (int)o->headers[i].name.len, o->headers[i].name.base);
            return NULL;
        }
    }
    char *origin = NULL, *path = NULL;
    const char *problem = split_url(o->url, &origin, &path);
    if (problem != NULL) {
        *err = tp_sprintf("mcp server \"%s\": URL \"%s\": %s", name, o->url, problem);
        return NULL;
    }
    uint64_t timeout = o->timeout_ms != 0 ? o->timeout_ms : MCP_HTTP_DEFAULT_TIMEOUT_MS;
    tp_upstream_options_t uo = {
        .max_connections = o->max_connections != 0 ? o->max_connections : MCP_HTTP_DEFAULT_MAX_CONNECTIONS,
        .connect_timeout_ms =
            timeout < TP_UPSTREAM_DEFAULT_CONNECT_TIMEOUT_MS ? timeout : TP_UPSTREAM_DEFAULT_CONNECT_TIMEOUT_MS,
        .first_byte_timeout_ms = timeout,
        .idle_timeout_ms = o->idle_timeout_ms != 0 ? o->idle_timeout_ms : MCP_HTTP_DEFAULT_IDLE_TIMEOUT_MS,
        .headers = o->headers,
        .num_headers = o->num_headers,
        .ca_file = o->ca_file,
    };
    char *why = NULL;
    tp_upstream_t *up = tp_upstream_new(origin, &uo, &why);
    tp_upstream_t *listen_up = up != NULL ? tp_upstream_new(origin, &uo, &why) : NULL;
    free(origin);
    if (listen_up == NULL) {
        tp_upstream_free(up);
        free(path);
        *err = tp_sprintf("mcp server \"%s\": %s", name, why);
        free(why);
        return NULL;
    }
    mcp_http_server_t *s = tp_calloc(1, sizeof(*s));
    s->name = tp_strdup(name);
    s->path = path;
    s->up = up;
    s->listen_up = listen_up;
    s->max_message_bytes = o->max_message_bytes != 0 ? o->max_message_bytes : MCP_HTTP_DEFAULT_MAX_MESSAGE_BYTES;
    s->timeout_ms = timeout;
    h2o_linklist_init_anchor(&s->closing);
    return s;
}

unsigned
mcp_http_server_links(const mcp_http_server_t *s)
{
    return s->links;
}

void
mcp_http_server_free(mcp_http_server_t *s)
{
    if (s == NULL)
        return;
    tp_upstream_free(s->up);
    tp_upstream_free(s->listen_up);
    free(s->name);
    free(s->path);
    free(s);
}

/* ---- the link ---- */

typedef struct exchange {
    h2o_linklist_t node; /* in the link's list while alive */
    mcp_http_link_t *l;
    tp_upstream_call_t *call; /* NULL while waiting to resume, and once ended */
    json_t *id;               /* our request's id (a copy); NULL for a notification or a response */
    bool is_initialize;
    bool resuming;       /* the current call is a GET that resumes the stream */
    bool answered;       /* the response went to the broker; the rest is read for the connection's sake */
    bool progressed;     /* the current call brought an event */
    bool dead;           /* ended: out of the list; freed once busy is 0 */
    unsigned busy;       /* our callbacks on the stack that use it */
    unsigned resumes;    /* resumptions in a row that brought no event */
    char *sent_session;  /* the session id the current call carried, or NULL */
    char *last_event_id; /* the stream's cursor for resuming it, or NULL */
    long long retry_ms;  /* the stream's last `retry`, or -1 */
    uint64_t deadline;   /* for the response (loop time); UINT64_MAX: none */
    uint64_t resume_at;  /* when to resume; UINT64_MAX: not waiting */
    reader_t r;
} exchange_t;

typedef enum listen_state {
    LISTEN_OFF,     /* not asked for, or ended with its session */
    LISTEN_WAIT,    /* (re)connects at reconnect_at */
    LISTEN_CALL,    /* a GET is in flight */
    LISTEN_STOPPED, /* the server said 405: no GET stream until the next initialize */
} listen_state_t;

typedef struct listener {
    listen_state_t state;
    tp_upstream_call_t *call;
    unsigned gen;       /* bumped when the stream is stopped, so that a feed in progress notices */
    unsigned failures;  /* attempts in a row that brought no event */
    bool progressed;    /* the current call brought an event, or stayed open long enough to count as healthy */
    uint64_t opened_at; /* when the current call's stream opened (200); 0: it did not */
    char *sent_session;
    char *last_event_id;
    long long retry_ms;
    uint64_t reconnect_at;
    reader_t r;
} listener_t;

struct mcp_http_link {
    mcp_http_server_t *s;
    h2o_context_t *ctx;
    mcp_http_link_callbacks_t cb;
    void *data;
    char *session_id;
    char *protocol_version;
    h2o_linklist_t exchanges; /* exchange_t, oldest first */
    listener_t listen;
    uv_timer_t timer; /* deadlines, resumptions, reconnections; closing it frees the link */
    tp_upstream_call_t *delete_call;
    h2o_linklist_t closing; /* in s->closing while delete_call runs */
    bool closed;
};

static void arm(mcp_http_link_t *l);
static void listen_stop(mcp_http_link_t *l, listen_state_t next);

typedef struct header_list {
    tp_upstream_header_t h[5];
    size_t n;
} header_list_t;

static void
add_header(header_list_t *hl, const char *name, const char *value)
{
    assert(hl->n < sizeof(hl->h) / sizeof(hl->h[0]));
    hl->h[hl->n++] = (tp_upstream_header_t){ h2o_iovec_init(name, strlen(name)), h2o_iovec_init(value, strlen(value)) };
}

/* The headers of every message after initialize. */
static void
add_session_headers(const mcp_http_link_t *l, header_list_t *hl)
{
    if (l->session_id != NULL)
        add_header(hl, "Mcp-Session-Id", l->session_id);
    if (l->protocol_version != NULL)
        add_header(hl, "MCP-Protocol-Version", l->protocol_version);
}

static char *
dup_or_null(const char *s)
{
    return s != NULL ? tp_strdup(s) : NULL;
}

static tp_upstream_call_t *
start_call(mcp_http_link_t *l, tp_upstream_t *up, const char *method, const header_list_t *hl, h2o_iovec_t body,
           const tp_upstream_handlers_t *h, void *data)
{
    tp_upstream_request_t req = {
        .method = method,
        .path = h2o_iovec_init(l->s->path, strlen(l->s->path)),
        .headers = hl->h,
        .num_headers = hl->n,
        .body = body,
    };
    return tp_upstream_call(up, l->ctx, &req, h, data);
}

/* The server ended the session sent_session (a 404): forget it and its GET stream, unless a newer
 * session already replaced it. */
static void
drop_session(mcp_http_link_t *l, const char *sent_session)
{
    if (l->session_id == NULL || sent_session == NULL || strcmp(l->session_id, sent_session) != 0)
        return;
    free(l->session_id);
    l->session_id = NULL;
    listen_stop(l, LISTEN_OFF);
}

/* An initialize goes out: what belonged to the old session goes. */
static void
new_session(mcp_http_link_t *l)
{
    free(l->session_id);
    l->session_id = NULL;
    free(l->protocol_version);
    l->protocol_version = NULL;
    listen_stop(l, LISTEN_OFF);
}

/* Reads protocolVersion from an initialize result, for the MCP-Protocol-Version header. */
static void
note_protocol_version(mcp_http_link_t *l, const json_t *response)
{
    const char *v = json_string_value(json_object_get(json_object_get(response, "result"), "protocolVersion"));
    if (v == NULL || !is_visible_ascii(v, strlen(v), MAX_VERSION))
        return;
    free(l->protocol_version);
    l->protocol_version = tp_strdup(v);
}

/* ---- exchanges ---- */

static void
ex_free(exchange_t *ex)
{
    json_decref(ex->id);
    free(ex->sent_session);
    free(ex->last_event_id);
    reader_dispose(&ex->r);
    free(ex);
}

static void
ex_release(exchange_t *ex)
{
    assert(ex->busy > 0);
    if (--ex->busy == 0 && ex->dead)
        ex_free(ex);
}

/* Ends the exchange without a word to the broker: unlinks it and cancels its call. */
static void
ex_end(exchange_t *ex)
{
    if (ex->dead)
        return;
    ex->dead = true;
    h2o_linklist_unlink(&ex->node);
    if (ex->call != NULL) {
        tp_upstream_cancel(ex->call);
        ex->call = NULL;
    }
    if (ex->busy == 0)
        ex_free(ex);
}

/* Ends the exchange and reports that its message will get no answer (quietly once answered). */
static void
ex_fail(exchange_t *ex, int status, const char *why)
{
    mcp_http_link_t *l = ex->l;
    if (ex->dead)
        return;
    ex->busy++;
    bool report = !ex->answered && !l->closed;
    ex_end(ex);
    if (report && l->cb.on_failure != NULL)
        l->cb.on_failure(l, l->data, ex->id, status, why);
    ex_release(ex);
}

static void
ex_session_lost(exchange_t *ex)
{
    mcp_http_link_t *l = ex->l;
    ex->busy++;
    ex_end(ex);
    if (!l->closed && l->cb.on_session_lost != NULL)
        l->cb.on_session_lost(l, l->data, ex->id);
    ex_release(ex);
}

/* Hands one message of the exchange's response to the broker. Returns false when the exchange or
 * the link ended meanwhile. */
static bool
ex_deliver(exchange_t *ex, json_t *msg)
{
    mcp_http_link_t *l = ex->l;
    if (l->closed)
        return false;
    if (!json_is_object(msg)) {
        tp_log(TP_LOG_WARN, NULL, "mcp server %s: skipped a message that is not a JSON object", l->s->name);
        return true;
    }
    if (ex->id != NULL && !ex->answered && is_response(msg)) {
        json_t *rid = json_object_get(msg, "id");
        if (rid == NULL || json_is_null(rid)) {
            /* an error that names no request (e.g. a parse error): it answers ours */
            const char *m = json_string_value(json_object_get(json_object_get(msg, "error"), "message"));
            char why[256];
            reason_with_text(why, sizeof(why), "JSON-RPC error", m != NULL ? m : "(no message)");
            ex_fail(ex, ex->r.status, why);
            return false;
        }
        if (json_equal(rid, ex->id)) {
            ex->answered = true;
            if (ex->is_initialize)
                note_protocol_version(l, msg);
        }
    }
    ex->progressed = true;
    if (l->cb.on_message != NULL)
        l->cb.on_message(l, l->data, msg, ex->id);
    return !ex->dead && !l->closed;
}

/* Parses a message, or a batch of them, and delivers it. Returns false when the exchange or the
 * link ended. */
static bool
ex_deliver_text(exchange_t *ex, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *v = json_loadb(text, len, 0, &jerr);
    if (v == NULL) {
        char why[256];
        reason_with_text(why, sizeof(why), "bad JSON from the server", jerr.text);
        ex_fail(ex, ex->r.status, why);
        return false;
    }
    bool go_on = true;
    if (json_is_array(v)) {
        for (size_t i = 0; go_on && i < json_array_size(v); i++)
            go_on = ex_deliver(ex, json_array_get(v, i));
    } else {
        go_on = ex_deliver(ex, v);
    }
    json_decref(v);
    return go_on;
}

static void
ex_fail_oversize(exchange_t *ex)
{
    char why[64];
    snprintf(why, sizeof(why), "a message over %zu bytes", ex->l->s->max_message_bytes);
    ex_fail(ex, 0, why);
}

/* Takes the stream's cursor and retry time as events end. */
static void
ex_note_cursor(exchange_t *ex)
{
    const char *id = tp_sse_last_id(&ex->r.sse);
    if (id != NULL && (ex->last_event_id == NULL || strcmp(id, ex->last_event_id) != 0)) {
        free(ex->last_event_id);
        ex->last_event_id = tp_strdup(id);
        ex->progressed = true;
    }
    if (tp_sse_retry_ms(&ex->r.sse) >= 0)
        ex->retry_ms = tp_sse_retry_ms(&ex->r.sse);
}

static int
ex_on_event(void *data, const char *event, size_t len)
{
    exchange_t *ex = data;
    ex_note_cursor(ex);
    if (len == 0)
        return 0; /* e.g. the priming event: an ID, no message */
    return ex_deliver_text(ex, event, len) ? 0 : 1;
}

/* The stream ended or dropped before the response: schedules its resumption when the server gave
 * event IDs. Returns false when it cannot be resumed. */
static bool
ex_schedule_resume(exchange_t *ex)
{
    if (ex->id == NULL || ex->last_event_id == NULL)
        return false;
    if (ex->progressed)
        ex->resumes = 0;
    if (ex->resumes >= MCP_HTTP_MAX_RESUMES)
        return false;
    ex->resumes++;
    uint64_t delay = ex->retry_ms >= 0 ? (uint64_t)ex->retry_ms : ex->resumes == 1 ? 0 : backoff_ms(ex->resumes - 1);
    ex->resume_at = uv_now(ex->l->ctx->loop) + delay;
    arm(ex->l);
    return true;
}

static void
ex_stream_ended(exchange_t *ex, const char *error)
{
    if (error == NULL && tp_sse_pending(&ex->r.sse))
        error = "the stream ended inside an event";
    if (ex_schedule_resume(ex))
        return;
    ex_fail(ex, 0, error != NULL ? error : "the stream ended without the response");
}

static void
ex_http_error(exchange_t *ex)
{
    if (ex->r.status == 404 && ex->sent_session != NULL) {
        ex_session_lost(ex);
        return;
    }
    char why[256];
    http_reason(&ex->r, why, sizeof(why));
    ex_fail(ex, ex->r.status, why);
}

/* Chooses how to read the response. Returns 0 to read it, -1 when the exchange ended. */
static int
ex_choose_mode(exchange_t *ex, const h2o_header_t *headers, size_t num_headers)
{
    mcp_http_link_t *l = ex->l;
    reader_t *r = &ex->r;
    if (r->status < 200 || r->status > 299) {
        if (r->status == 404 && ex->sent_session != NULL)
            drop_session(l, ex->sent_session); /* reported at the end */
        r->mode = BODY_ERROR;
        r->max = ERROR_BODY_MAX;
        return 0;
    }
    if (ex->is_initialize && !ex->resuming) {
        h2o_iovec_t sid = find_header(headers, num_headers, "mcp-session-id");
        if (sid.base != NULL) {
            if (!is_visible_ascii(sid.base, sid.len, MAX_SESSION_ID)) {
                ex_fail(ex, r->status, "the server gave an invalid Mcp-Session-Id");
                return -1;
            }
            free(l->session_id);
            l->session_id = tp_strndup(sid.base, sid.len);
        }
    }
    if (ex->id == NULL) {
        r->mode = BODY_DISCARD; /* 202 for a notification or a response */
        return 0;
    }
    if (reader_is(r, "text/event-stream")) {
        r->mode = BODY_SSE;
        return 0;
    }
    if (reader_is(r, "application/json") && !ex->resuming) {
        r->mode = BODY_JSON;
        r->max = l->s->max_message_bytes;
        return 0;
    }
    char why[128];
    if (r->ctype[0] == '\0')
        snprintf(why, sizeof(why), "HTTP %d without a response", r->status);
    else
        snprintf(why, sizeof(why), "the response is neither JSON nor SSE (%s)", r->ctype);
    ex_fail(ex, r->status, why);
    return -1;
}

static int
ex_on_head(tp_upstream_call_t *call, int status, const h2o_header_t *headers, size_t num_headers)
{
    exchange_t *ex = tp_upstream_call_data(call);
    ex->busy++;
    reader_head(&ex->r, status, headers, num_headers);
    int rv = ex_choose_mode(ex, headers, num_headers);
    ex_release(ex);
    return rv;
}

static void
ex_on_body(tp_upstream_call_t *call, const char *buf, size_t len)
{
    exchange_t *ex = tp_upstream_call_data(call);
    reader_t *r = &ex->r;
    ex->busy++;
    switch (r->mode) {
    case BODY_SSE: {
        int rv = tp_sse_feed(&r->sse, buf, len, ex_on_event, ex);
        if (!ex->dead) {
            ex_note_cursor(ex); /* an event without data ends without a callback */
            if (rv == -1)
                ex_fail_oversize(ex);
        }
        break;
    }
    case BODY_JSON:
        if (!reader_keep(r, buf, len))
            ex_fail_oversize(ex);
        break;
    case BODY_ERROR:
        reader_keep(r, buf, len); /* its start is enough */
        break;
    case BODY_DISCARD:
        break;
    }
    ex_release(ex);
}

static void
ex_on_done(tp_upstream_call_t *call, const char *error)
{
    exchange_t *ex = tp_upstream_call_data(call);
    reader_t *r = &ex->r;
    ex->call = NULL;
    ex->busy++;
    if (r->mode == BODY_ERROR) {
        ex_http_error(ex); /* even if the error body was cut: the status says enough */
    } else if (ex->answered) {
        ex_end(ex);
    } else if (r->mode == BODY_SSE) {
        ex_stream_ended(ex, error);
    } else if (error != NULL) {
        ex_fail(ex, 0, error);
    } else if (r->mode == BODY_JSON) {
        if (ex_deliver_text(ex, r->buf != NULL ? r->buf : "", r->len)) {
            if (ex->answered)
                ex_end(ex);
            else
                ex_fail(ex, r->status, "the response does not answer the request");
        }
    } else {
        ex_end(ex); /* a notification or a response was accepted */
    }
    ex_release(ex);
}

static const tp_upstream_handlers_t ex_handlers = { ex_on_head, ex_on_body, ex_on_done };

/* Resumes the stream with a GET and Last-Event-ID. Runs from the timer. */
static void
ex_start_resume(exchange_t *ex)
{
    mcp_http_link_t *l = ex->l;
    ex->resume_at = UINT64_MAX;
    ex->resuming = true;
    ex->progressed = false;
    reader_reset(&ex->r, l->s->max_message_bytes);
    header_list_t hl = { .n = 0 };
    add_header(&hl, "Accept", "text/event-stream");
    add_session_headers(l, &hl);
    add_header(&hl, "Last-Event-ID", ex->last_event_id);
    free(ex->sent_session);
    ex->sent_session = dup_or_null(l->session_id);
    ex->call = start_call(l, l->s->up, "GET", &hl, h2o_iovec_init(NULL, 0), &ex_handlers, ex);
}

/* ---- the GET stream ---- */

static void
listen_stop(mcp_http_link_t *l, listen_state_t next)
{
    listener_t *lt = &l->listen;
    if (lt->call != NULL) {
        tp_upstream_cancel(lt->call);
        lt->call = NULL;
    }
    lt->gen++;
    lt->state = next;
    lt->failures = 0;
    lt->retry_ms = -1;
    free(lt->last_event_id);
    lt->last_event_id = NULL;
}

/* Takes the stream's cursor and retry time as events end. */
static void
listen_note_cursor(listener_t *lt)
{
    const char *id = tp_sse_last_id(&lt->r.sse);
    if (id != NULL && (lt->last_event_id == NULL || strcmp(id, lt->last_event_id) != 0)) {
        free(lt->last_event_id);
        lt->last_event_id = tp_strdup(id);
        lt->progressed = true;
    }
    if (tp_sse_retry_ms(&lt->r.sse) >= 0)
        lt->retry_ms = tp_sse_retry_ms(&lt->r.sse);
}

/* Schedules a reconnection: after the server's retry time, or with backoff after attempts that
 * brought nothing. */
static void
listen_retry(mcp_http_link_t *l)
{
    listener_t *lt = &l->listen;
    lt->failures = lt->progressed ? 0 : lt->failures + 1;
    uint64_t delay = lt->retry_ms >= 0 ? (uint64_t)lt->retry_ms : MCP_HTTP_RECONNECT_MIN_MS;
    if (lt->failures > 0 && backoff_ms(lt->failures) > delay)
        delay = backoff_ms(lt->failures);
    lt->state = LISTEN_WAIT;
    lt->reconnect_at = uv_now(l->ctx->loop) + delay;
    arm(l);
}

static int
listen_on_event(void *data, const char *event, size_t len)
{
    mcp_http_link_t *l = data;
    listener_t *lt = &l->listen;
    unsigned gen = lt->gen;
    listen_note_cursor(lt);
    if (len == 0)
        return 0;
    json_error_t jerr;
    json_t *v = json_loadb(event, len, 0, &jerr);
    if (v == NULL) {
        tp_log(TP_LOG_WARN, NULL, "mcp server %s: GET stream: skipped bad JSON: %s", l->s->name, jerr.text);
        return 0;
    }
    lt->progressed = true;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    for (size_t i = 0; i < n && !l->closed && lt->gen == gen; i++) {
        json_t *msg = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_object(msg)) {
            tp_log(TP_LOG_WARN, NULL, "mcp server %s: skipped a message that is not a JSON object", l->s->name);
            continue;
        }
        if (l->cb.on_message != NULL)
            l->cb.on_message(l, l->data, msg, NULL);
    }
    json_decref(v);
    return l->closed || lt->gen != gen ? 1 : 0;
}

static int
listen_on_head(tp_upstream_call_t *call, int status, const h2o_header_t *headers, size_t num_headers)
{
    mcp_http_link_t *l = tp_upstream_call_data(call);
    reader_t *r = &l->listen.r;
    reader_head(r, status, headers, num_headers);
    if (status >= 200 && status <= 299 && reader_is(r, "text/event-stream")) {
        r->mode = BODY_SSE;
        l->listen.opened_at = uv_now(l->ctx->loop);
    } else {
        r->mode = BODY_ERROR;
        r->max = ERROR_BODY_MAX;
    }
    return 0;
}

static void
listen_on_body(tp_upstream_call_t *call, const char *buf, size_t len)
{
    mcp_http_link_t *l = tp_upstream_call_data(call);
    listener_t *lt = &l->listen;
    if (lt->r.mode == BODY_ERROR) {
        reader_keep(&lt->r, buf, len);
        return;
    }
    unsigned gen = lt->gen;
    int rv = tp_sse_feed(&lt->r.sse, buf, len, listen_on_event, l);
    if (l->closed || lt->gen != gen)
        return; /* the broker stopped the stream meanwhile */
    listen_note_cursor(lt);
    if (rv == -1) {
        tp_log(TP_LOG_WARN, NULL, "mcp server %s: GET stream: a message over %zu bytes; reconnecting", l->s->name,
               l->s->max_message_bytes);
        tp_upstream_cancel(lt->call);
        lt->call = NULL;
        lt->progressed = false; /* a replay of the same message must back off */
        listen_retry(l);
    }
}

static void
listen_on_done(tp_upstream_call_t *call, const char *error)
{
    mcp_http_link_t *l = tp_upstream_call_data(call);
    listener_t *lt = &l->listen;
    reader_t *r = &lt->r;
    lt->call = NULL;
    /* A quiet stream that ended after a while (e.g. at the idle timeout) was not a failure. */
    if (lt->opened_at != 0 && uv_now(l->ctx->loop) - lt->opened_at >= MCP_HTTP_RECONNECT_MAX_MS)
        lt->progressed = true;
    if (r->mode == BODY_ERROR && r->status == 405) {
        tp_log(TP_LOG_DEBUG, NULL, "mcp server %s: offers no GET stream (405)", l->s->name);
        listen_stop(l, LISTEN_STOPPED);
        return;
    }
    if (r->mode == BODY_ERROR && r->status == 404 && lt->sent_session != NULL && l->session_id != NULL &&
        strcmp(lt->sent_session, l->session_id) == 0) {
        drop_session(l, lt->sent_session); /* stops the stream */
        if (l->cb.on_session_lost != NULL)
            l->cb.on_session_lost(l, l->data, NULL);
        return;
    }
    if (r->mode == BODY_ERROR) {
        char why[256];
        http_reason(r, why, sizeof(why));
        tp_log(TP_LOG_WARN, NULL, "mcp server %s: GET stream: %s", l->s->name, why);
    } else if (error != NULL) {
        /* a stream that drops is part of the protocol; not reaching the server is not */
        tp_log(r->status == 0 ? TP_LOG_WARN : TP_LOG_DEBUG, NULL, "mcp server %s: GET stream: %s", l->s->name, error);
    }
    listen_retry(l);
}

static const tp_upstream_handlers_t listen_handlers = { listen_on_head, listen_on_body, listen_on_done };

/* Connects (or reconnects) the GET stream. Runs from the timer. */
static void
listen_start(mcp_http_link_t *l)
{
    listener_t *lt = &l->listen;
    lt->state = LISTEN_CALL;
    lt->progressed = false;
    lt->opened_at = 0;
    reader_reset(&lt->r, l->s->max_message_bytes);
    header_list_t hl = { .n = 0 };
    add_header(&hl, "Accept", "text/event-stream");
    add_session_headers(l, &hl);
    if (lt->last_event_id != NULL)
        add_header(&hl, "Last-Event-ID", lt->last_event_id);
    free(lt->sent_session);
    lt->sent_session = dup_or_null(l->session_id);
    lt->call = start_call(l, l->s->listen_up, "GET", &hl, h2o_iovec_init(NULL, 0), &listen_handlers, l);
}

/* ---- the timer ---- */

static void
on_timer(uv_timer_t *timer)
{
    mcp_http_link_t *l = timer->data;
    uint64_t now = uv_now(timer->loop);
    /* Each pass handles one due exchange, which then is no longer due; the broker's callbacks may
     * change the list meanwhile, hence the fresh scan. */
    while (!l->closed) {
        exchange_t *due = NULL;
        for (h2o_linklist_t *n = l->exchanges.next; n != &l->exchanges; n = n->next) {
            exchange_t *ex = H2O_STRUCT_FROM_MEMBER(exchange_t, node, n);
            if (ex->deadline <= now || ex->resume_at <= now) {
                due = ex;
                break;
            }
        }
        if (due == NULL)
            break;
        if (due->deadline <= now) {
            char why[64];
            snprintf(why, sizeof(why), "timeout: no response in %llu ms", (unsigned long long)l->s->timeout_ms);
            ex_fail(due, 0, why); /* quiet for the tail of an answered stream */
        } else {
            ex_start_resume(due);
        }
    }
    if (l->closed)
        return;
    if (l->listen.state == LISTEN_WAIT && l->listen.reconnect_at <= now)
        listen_start(l);
    arm(l);
}

/* Points the timer at the nearest deadline or delay. */
static void
arm(mcp_http_link_t *l)
{
    if (l->closed)
        return;
    uint64_t at = UINT64_MAX;
    for (h2o_linklist_t *n = l->exchanges.next; n != &l->exchanges; n = n->next) {
        exchange_t *ex = H2O_STRUCT_FROM_MEMBER(exchange_t, node, n);
        if (ex->deadline < at)
            at = ex->deadline;
        if (ex->resume_at < at)
            at = ex->resume_at;
    }
    if (l->listen.state == LISTEN_WAIT && l->listen.reconnect_at < at)
        at = l->listen.reconnect_at;
    if (at == UINT64_MAX) {
        uv_timer_stop(&l->timer);
        return;
    }
    uint64_t now = uv_now(l->ctx->loop);
    uv_timer_start(&l->timer, on_timer, at > now ? at - now : 0, 0);
}

/* ---- the API ---- */

mcp_http_link_t *
mcp_http_link_new(mcp_http_server_t *s, h2o_context_t *ctx, const mcp_http_link_callbacks_t *cb, void *data)
{
    mcp_http_link_t *l = tp_calloc(1, sizeof(*l));
    l->s = s;
    l->ctx = ctx;
    l->cb = *cb;
    l->data = data;
    h2o_linklist_init_anchor(&l->exchanges);
    l->listen.retry_ms = -1;
    reader_init(&l->listen.r, s->max_message_bytes);
    uv_timer_init(ctx->loop, &l->timer);
    l->timer.data = l;
    s->links++;
    return l;
}

void
mcp_http_link_send(mcp_http_link_t *l, json_t *msg)
{
    if (l->closed)
        return;
    assert(json_is_object(msg));
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *id = json_object_get(msg, "id");
    bool is_request = method != NULL && id != NULL && !json_is_null(id);
    char *body = json_dumps(msg, JSON_COMPACT);
    if (body == NULL)
        tp_fatal("json_dumps: out of memory");

    exchange_t *ex = tp_calloc(1, sizeof(*ex));
    ex->l = l;
    ex->id = is_request ? json_deep_copy(id) : NULL;
    ex->is_initialize = is_request && strcmp(method, "initialize") == 0;
    ex->retry_ms = -1;
    ex->deadline = is_request ? uv_now(l->ctx->loop) + l->s->timeout_ms : UINT64_MAX;
    ex->resume_at = UINT64_MAX;
    reader_init(&ex->r, l->s->max_message_bytes);
    h2o_linklist_insert(&l->exchanges, &ex->node);

    if (ex->is_initialize)
        new_session(l);
    header_list_t hl = { .n = 0 };
    add_header(&hl, "Accept", "application/json, text/event-stream");
    add_header(&hl, "Content-Type", "application/json");
    add_session_headers(l, &hl);
    ex->sent_session = dup_or_null(l->session_id);
    ex->call = start_call(l, l->s->up, "POST", &hl, h2o_iovec_init(body, strlen(body)), &ex_handlers, ex);
    free(body);
    if (is_request)
        arm(l);
}

void
mcp_http_link_listen(mcp_http_link_t *l)
{
    if (l->closed || l->listen.state != LISTEN_OFF)
        return;
    /* from the timer, so that no reader is reset under a feed that called us */
    l->listen.state = LISTEN_WAIT;
    l->listen.failures = 0;
    l->listen.reconnect_at = uv_now(l->ctx->loop);
    arm(l);
}

void
mcp_http_link_abandon(mcp_http_link_t *l, const json_t *id)
{
    if (l->closed || id == NULL)
        return;
    for (h2o_linklist_t *n = l->exchanges.next; n != &l->exchanges; n = n->next) {
        exchange_t *ex = H2O_STRUCT_FROM_MEMBER(exchange_t, node, n);
        if (ex->id != NULL && !ex->answered && json_equal(ex->id, id)) {
            ex_end(ex);
            return;
        }
    }
}

static void
on_link_closed(uv_handle_t *h)
{
    mcp_http_link_t *l = h->data;
    reader_dispose(&l->listen.r);
    free(l->listen.sent_session);
    free(l->listen.last_event_id);
    free(l->session_id);
    free(l->protocol_version);
    free(l);
}

/* Frees the link on the loop's next turn (a timer is freed only in its close callback). The
 * server is done with it now: it may be freed before that turn. */
static void
link_free(mcp_http_link_t *l)
{
    l->s->links--;
    uv_close((uv_handle_t *)&l->timer, on_link_closed);
}

static void
on_delete_done(tp_upstream_call_t *call, const char *error)
{
    mcp_http_link_t *l = tp_upstream_call_data(call);
    l->delete_call = NULL;
    h2o_linklist_unlink(&l->closing);
    if (error != NULL)
        tp_log(TP_LOG_DEBUG, NULL, "mcp server %s: DELETE of the session: %s", l->s->name, error);
    link_free(l);
}

static const tp_upstream_handlers_t delete_handlers = { NULL, NULL, on_delete_done };

void
mcp_http_link_close(mcp_http_link_t *l)
{
    if (l->closed)
        return;
    l->closed = true;
    while (!h2o_linklist_is_empty(&l->exchanges))
        ex_end(H2O_STRUCT_FROM_MEMBER(exchange_t, node, l->exchanges.next));
    listen_stop(l, LISTEN_OFF);
    uv_timer_stop(&l->timer);
    if (l->session_id == NULL) {
        link_free(l);
        return;
    }
    header_list_t hl = { .n = 0 };
    add_session_headers(l, &hl);
    l->delete_call = start_call(l, l->s->up, "DELETE", &hl, h2o_iovec_init(NULL, 0), &delete_handlers, l);
    h2o_linklist_insert(&l->s->closing, &l->closing);
}

const char *
mcp_http_link_session_id(const mcp_http_link_t *l)
{
    return l->session_id;
}

const char *
mcp_http_link_protocol_version(const mcp_http_link_t *l)
{
    return l->protocol_version;
}

void
mcp_http_server_close_worker(mcp_http_server_t *s, h2o_context_t *ctx)
{
    while (!h2o_linklist_is_empty(&s->closing)) {
        mcp_http_link_t *l = H2O_STRUCT_FROM_MEMBER(mcp_http_link_t, closing, s->closing.next);
        h2o_linklist_unlink(&l->closing);
        tp_upstream_cancel(l->delete_call);
        l->delete_call = NULL;
        link_free(l);
    }
    tp_upstream_close_worker(s->up, ctx);
    tp_upstream_close_worker(s->listen_up, ctx);
}
