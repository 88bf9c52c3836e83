/*
 * stream.c — messages to a client as Server-Sent Events, with resumption.
 *
 * A stream outlives the HTTP response writing it (the sink): when the client's connection
 * drops, events keep being retained (the last stream_buffer_events of them) and a GET with
 * Last-Event-ID attaches a new sink that replays what was missed, as the MCP transport
 * specifies. A sink writes with back pressure: one h2o_send in flight at a time; what arrives
 * meanwhile waits in a buffer, and a client that lets that buffer grow past SINK_MAX_PENDING is
 * cut off (its events stay retained for a resumption). One event always fits, whatever its size
 * (an answer may be as large as the server's max_response_bytes): the cut-off applies only to
 * what would join bytes already waiting.
 *
 * An answer whose client went away before it was written waits for a resumption that may never
 * come: a session keeps at most MAX_UNCLAIMED such streams, and drops the oldest beyond that, or
 * every abandoned call would hold its answer until the session ends.
 *
 * A sink also carries the verdict of its request (authenticated as the session's principal), so
 * that work answering on the stream later can ask the policy with the request that will carry
 * the answer, and never with one that is gone.
 */
#include "gateway.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "log.h"
#include "mem.h"

#define SINK_MAX_PENDING (8u * 1024 * 1024) /* bytes queued for a slow client before it is cut off */
#define MAX_UNCLAIMED    16                 /* finished POST streams per session kept for a resumption */
/* Sent when a final message cannot be encoded: the request still gets its answer. */
#define UNENCODABLE_ANSWER                                                                                             \
    "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"Internal error: the answer could not "  \
    "be encoded\"}}"

typedef struct mcp_event {
    uint64_t seq;
    char *text; /* the whole SSE event */
    size_t len;
    struct mcp_event *next;
} mcp_event_t;

typedef struct mcp_sink {
    h2o_generator_t super;
    tp_request_t *r;
    pol_verdict_t *v;     /* r's verdict, in r's pool */
    bool opener;          /* r opened the stream (the POST of its request) */
    mcp_stream_t *stream; /* NULL once detached */
    char *inflight;       /* the bytes h2o is sending now */
    char *pending;        /* bytes waiting for proceed */
    size_t pending_len, pending_cap;
    bool sending;
    bool end;  /* send FINAL once pending is written */
    bool done; /* FINAL or ERROR was sent */
} mcp_sink_t;

static void sink_flush(mcp_sink_t *k);
static void trim_unclaimed(mcp_session_t *s);

static void
sink_detach(mcp_sink_t *k)
{
    if (k->stream != NULL && k->stream->sink == (struct mcp_sink *)k)
        k->stream->sink = NULL;
    k->stream = NULL;
}

static void
sink_free_buffers(mcp_sink_t *k)
{
    free(k->inflight);
    free(k->pending);
    k->inflight = k->pending = NULL;
    k->pending_len = k->pending_cap = 0;
}

static void
on_sink_dispose(void *p)
{
    mcp_sink_t *k = p;
    sink_detach(k);
    sink_free_buffers(k);
}

static void
on_sink_stop(h2o_generator_t *g, h2o_req_t *req)
{
    mcp_sink_t *k = (mcp_sink_t *)g;
    mcp_stream_t *st = k->stream;
    k->done = true;
    sink_detach(k);
    if (st != NULL && st->finished && !st->standing) /* the client left before its answer was written */
        trim_unclaimed(st->session);
}

/* A finished POST stream whose last event was written has nothing left to resume. */
static void
stream_delivered(mcp_stream_t *st)
{
    if (st != NULL && st->finished && !st->standing)
        mcp_stream_free(st);
}

static void
on_sink_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    mcp_sink_t *k = (mcp_sink_t *)g;
    free(k->inflight);
    k->inflight = NULL;
    k->sending = false;
    sink_flush(k);
}

static void
sink_flush(mcp_sink_t *k)
{
    if (k->sending || k->done)
        return;
    if (k->pending_len == 0 && !k->end)
        return;
    h2o_iovec_t buf = h2o_iovec_init(k->pending, k->pending_len);
    k->inflight = k->pending;
    k->pending = NULL;
    k->pending_len = k->pending_cap = 0;
    k->sending = true;
    if (k->end) {
        k->done = true;
        mcp_stream_t *st = k->stream;
        sink_detach(k);
        h2o_send(k->r->req, &buf, buf.len > 0 ? 1 : 0, H2O_SEND_STATE_FINAL);
        stream_delivered(st);
        return;
    }
    h2o_send(k->r->req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
}

static void
sink_write(mcp_sink_t *k, const char *text, size_t len)
{
    if (k->done)
        return;
    if (k->pending_len > 0 && k->pending_len + len > SINK_MAX_PENDING) {
        /* The client does not read: cut it off; the events stay retained for a resumption. */
        tp_log_fields(TP_LOG_WARN, k->r->id, "slow client cut off",
                      json_pack("{s:I}", "pending_bytes", (json_int_t)k->pending_len));
        sink_detach(k);
        k->end = true;
        sink_flush(k);
        return;
    }
    if (k->pending_len + len > k->pending_cap) {
        size_t cap = k->pending_cap > 0 ? k->pending_cap : 4096;
        while (cap < k->pending_len + len)
            cap *= 2;
        k->pending = tp_realloc(k->pending, cap);
        k->pending_cap = cap;
    }
    memcpy(k->pending + k->pending_len, text, len);
    k->pending_len += len;
}

/* ---- events ---- */

static void
event_format(mcp_stream_t *st, uint64_t seq, const char *data, size_t dlen, char **out, size_t *out_len)
{
    size_t cap = dlen + 96;
    char *t = tp_malloc(cap);
    int n = snprintf(t, cap, "id: %" PRIu64 "-%" PRIu64 "\nevent: message\ndata: ", st->id, seq);
    memcpy(t + n, data, dlen);
    memcpy(t + n + dlen, "\n\n", 2);
    *out = t;
    *out_len = (size_t)n + dlen + 2;
}

static void
retain(mcp_stream_t *st, uint64_t seq, char *text, size_t len)
{
    size_t limit = (size_t)st->session->gw->cfg->stream_buffer_events;
    if (limit == 0) {
        free(text);
        return;
    }
    mcp_event_t *e = tp_calloc(1, sizeof(*e));
    e->seq = seq;
    e->text = text;
    e->len = len;
    if (st->events_tail != NULL)
        st->events_tail->next = e;
    else
        st->events_head = e;
    st->events_tail = e;
    if (++st->num_events > limit) {
        mcp_event_t *old = st->events_head;
        st->events_head = old->next;
        if (st->events_head == NULL)
            st->events_tail = NULL;
        free(old->text);
        free(old);
        st->num_events--;
    }
}

/* ---- streams ---- */

/* Drops the oldest finished POST streams nobody listens to beyond MAX_UNCLAIMED (the list is
 * newest first). */
static void
trim_unclaimed(mcp_session_t *s)
{
    size_t n = 0;
    for (mcp_stream_t *st = s->streams, *next; st != NULL; st = next) {
        next = st->next;
        if (!st->standing && st->finished && st->sink == NULL && ++n > MAX_UNCLAIMED)
            mcp_stream_free(st);
    }
}

mcp_stream_t *
mcp_stream_new(mcp_session_t *s, bool standing)
{
    mcp_stream_t *st = tp_calloc(1, sizeof(*st));
    st->session = s;
    st->id = ++s->gw->next_stream_id;
    st->standing = standing;
    st->next_seq = 1;
    st->next = s->streams;
    s->streams = st;
    if (standing)
        s->standing = st;
    return st;
}

mcp_stream_t *
mcp_stream_find(mcp_session_t *s, uint64_t id)
{
    for (mcp_stream_t *st = s->streams; st != NULL; st = st->next) {
        if (st->id == id)
            return st;
    }
    return NULL;
}

void
mcp_stream_attach(mcp_stream_t *st, tp_request_t *r, pol_verdict_t *v, uint64_t after_seq, bool prime)
{
    if (st->sink != NULL)
        mcp_stream_close(st); /* one listener per stream: the newer one wins */
    mcp_sink_t *k = h2o_mem_alloc_shared(&r->req->pool, sizeof(*k), on_sink_dispose);
    memset(k, 0, sizeof(*k));
    k->super.proceed = on_sink_proceed;
    k->super.stop = on_sink_stop;
    k->r = r;
    k->v = v;
    k->opener = st->sinks++ == 0;
    k->stream = st;
    st->sink = (struct mcp_sink *)k;
    r->req->res.status = 200;
    r->req->res.reason = "OK";
    tp_http_add_header(r, "content-type", "text/event-stream");
    tp_http_add_header(r, "cache-control", "no-cache");
    tp_http_add_header(r, "x-accel-buffering", "no");
    tp_http_add_header(r, "mcp-session-id", st->session->id);
    h2o_start_response(r->req, &k->super);
    if (prime) {
        /* An event with an id and empty data: the client can resume from here (2025-11-25). */
        char head[64];
        int n = snprintf(head, sizeof(head), "id: %" PRIu64 "-0\ndata: \n\n", st->id);
        sink_write(k, head, (size_t)n);
    }
    for (mcp_event_t *e = st->events_head; e != NULL; e = e->next) {
        if (e->seq > after_seq)
            sink_write(k, e->text, e->len);
    }
    if (st->finished)
        k->end = true;
    sink_flush(k);
}

/* The text of a final message that could not be encoded: an internal error with its id. */
static char *
unencodable_answer(const json_t *msg)
{
    json_t *err = mcp_jsonrpc_error(json_object_get(msg, "id"), JSONRPC_INTERNAL_ERROR,
                                    "Internal error: the answer could not be encoded", NULL);
    char *data = err != NULL ? json_dumps(err, JSON_COMPACT) : NULL;
    json_decref(err);
    return data != NULL ? data : tp_strdup(UNENCODABLE_ANSWER);
}

void
mcp_stream_send(mcp_stream_t *st, json_t *msg, bool final)
{
    if (st->finished)
        return;
    char *data = msg != NULL ? json_dumps(msg, JSON_COMPACT) : NULL;
    if (data == NULL && !final) {
        tp_log_fields(TP_LOG_WARN, NULL, "a message to a client could not be encoded; dropped",
                      json_pack("{s:s}", "session", st->session->id));
        return;
    }
    if (data == NULL) /* the request must still end, or the client waits for ever */
        data = unencodable_answer(msg);
    uint64_t seq = st->next_seq++;
    char *text;
    size_t len;
    event_format(st, seq, data, strlen(data), &text, &len);
    free(data);
    st->finished = final;
    mcp_sink_t *k = (mcp_sink_t *)st->sink;
    if (k != NULL) {
        sink_write(k, text, len);
        if (final)
            k->end = true;
    }
    retain(st, seq, text, len);
    mcp_session_t *s = st->session;
    bool unclaimed = final && st->sink == NULL && !st->standing;
    if (k != NULL && st->sink == (struct mcp_sink *)k)
        sink_flush(k); /* may free st when this was the final event */
    if (unclaimed)
        trim_unclaimed(s);
}

tp_request_t *
mcp_stream_request(const mcp_stream_t *st)
{
    return st->sink != NULL ? ((const mcp_sink_t *)st->sink)->r : NULL;
}

pol_verdict_t *
mcp_stream_verdict(const mcp_stream_t *st)
{
    return st->sink != NULL ? ((const mcp_sink_t *)st->sink)->v : NULL;
}

tp_request_t *
mcp_stream_opener(const mcp_stream_t *st)
{
    const mcp_sink_t *k = (const mcp_sink_t *)st->sink;
    return k != NULL && k->opener ? k->r : NULL;
}

void
mcp_stream_close(mcp_stream_t *st)
{
    mcp_sink_t *k = (mcp_sink_t *)st->sink;
    if (k == NULL)
        return;
    sink_detach(k);
    k->end = true;
    sink_flush(k);
}

void
mcp_stream_finish(mcp_stream_t *st)
{
    if (st->finished)
        return;
    st->finished = true;
    mcp_sink_t *k = (mcp_sink_t *)st->sink;
    if (k == NULL) {
        if (!st->standing) /* nobody listens, and nothing is left to resume */
            mcp_stream_free(st);
        return;
    }
    k->end = true;
    sink_flush(k); /* frees st once the last bytes are written */
}

void
mcp_stream_free(mcp_stream_t *st)
{
    mcp_session_t *s = st->session;
    for (mcp_stream_t **p = &s->streams; *p != NULL; p = &(*p)->next) {
        if (*p == st) {
            *p = st->next;
            break;
        }
    }
    if (s->standing == st)
        s->standing = NULL;
    /* Calls answering on this stream lose it; their answers then go nowhere (the client left). */
    for (mcp_call_t *c = s->calls; c != NULL; c = c->next_in_session) {
        if (c->stream == st)
            c->stream = NULL;
    }
    mcp_stream_close(st);
    for (mcp_event_t *e = st->events_head, *n; e != NULL; e = n) {
        n = e->next;
        free(e->text);
        free(e);
    }
    free(st);
}
