/*
 * sse.h — an incremental reader of Server-Sent Events, as upstreams stream them: inference
 * servers (`data: {json}\n\n`, ending `data: [DONE]`) and MCP servers (one JSON-RPC message per
 * event).
 *
 * Bytes are fed as they arrive, in pieces of any size; each complete event's data (multi-line
 * data joined with '\n', per the SSE specification) is handed to a callback. Comments (lines
 * starting with ':') and fields other than `data` are skipped. Lines may end in \n, \r\n or \r.
 * Memory is bounded: an event larger than the limit is an error, not an unbounded buffer.
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
    size_t max_event; /* the limit on one event's data, in bytes */
    bool has_data;    /* the current event had at least one data line */
    bool last_cr;     /* the previous byte was \r (a following \n is part of the same line end) */
} tp_sse_t;

/* Called with one event's data (not NUL-terminated; len may be 0). Return 0 to go on, non-zero to
 * stop feeding (tp_sse_feed then returns that value). */
typedef int (*tp_sse_event_cb)(void *data, const char *event, size_t len);

void tp_sse_init(tp_sse_t *s, size_t max_event);
void tp_sse_dispose(tp_sse_t *s);

/* Feeds bytes. Returns 0, the callback's non-zero value, or -1 when an event exceeds the limit. */
int tp_sse_feed(tp_sse_t *s, const char *bytes, size_t len, tp_sse_event_cb cb, void *data);

/* True when bytes of an unfinished event are pending (the stream ended mid-event). */
bool tp_sse_pending(const tp_sse_t *s);

#endif
