/*
 * sse.h — an incremental reader of Server-Sent Events, as upstreams stream them: inference
 * servers (`data: {json}\n\n`, ending `data: [DONE]`) and MCP servers (one JSON-RPC message per
 * event).
 *
 * Bytes are fed as they arrive, in pieces of any size; each complete event's data (multi-line
 * data joined with '\n', per the SSE specification) is handed to a callback. Comments (lines
 * starting with ':') and the `event` field are skipped. Lines may end in \n, \r\n or \r.
 * Memory is bounded: an event larger than the limit is an error, not an unbounded buffer.
 *
 * For resumable streams (MCP's Last-Event-ID) the reader also keeps, as the SSE specification
 * says, the last event ID — an `id` field takes effect when its event ends (at the blank line,
 * even an event without data, as MCP's priming event `id: x` + empty data) — and the last
 * `retry` value.
 */
#ifndef TP_SSE_H
#define TP_SSE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tp_sse {
    char *buf; /* the event being assembled (data lines) */
    size_t len, cap;
    char *line; /* a line split between two feeds */
    size_t line_len, line_cap;
    size_t max_event;   /* the limit on one event's data, in bytes */
    bool has_data;      /* the current event had at least one data line */
    bool last_cr;       /* the previous byte was \r (a following \n is part of the same line end) */
    char *id_buf;       /* the last `id` field read, NUL-terminated, not yet committed; NULL: none */
    bool id_seen;       /* an `id` field was read since the last event ended */
    char *last_id;      /* the last event ID, committed when an event ends; NULL: none or empty */
    long long retry_ms; /* the last valid `retry` field, in milliseconds; -1: none */
} tp_sse_t;

/* Called with one event's data (not NUL-terminated; len may be 0). Return 0 to go on, non-zero to
 * stop feeding (tp_sse_feed then returns that value). During the call, tp_sse_last_id is this
 * event's ID (or the one before it when the event has no `id` field). */
typedef int (*tp_sse_event_cb)(void *data, const char *event, size_t len);

void tp_sse_init(tp_sse_t *s, size_t max_event);
void tp_sse_dispose(tp_sse_t *s);

/* Feeds bytes. Returns 0, the callback's non-zero value, or -1 when an event exceeds the limit. */
int tp_sse_feed(tp_sse_t *s, const char *bytes, size_t len, tp_sse_event_cb cb, void *data);

/* True when bytes of an unfinished event are pending (the stream ended mid-event). */
bool tp_sse_pending(const tp_sse_t *s);

/* The last event ID: the `id` of the most recent ended event that had one, NUL-terminated and
 * owned by the reader (valid until the next feed or dispose). NULL when there is none, or when an
 * empty `id` reset it; an `id` containing NUL is ignored, as the specification says. */
const char *tp_sse_last_id(const tp_sse_t *s);

/* The reconnection time from the last valid `retry` field (ASCII digits only), in milliseconds, or
 * -1 when the stream sent none. */
long long tp_sse_retry_ms(const tp_sse_t *s);

#endif
