#include "sse.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

void
tp_sse_init(tp_sse_t *s, size_t max_event)
{
    memset(s, 0, sizeof(*s));
    s->max_event = max_event;
    s->retry_ms = -1;
}

void
tp_sse_dispose(tp_sse_t *s)
{
    free(s->buf);
    free(s->line);
    free(s->id_buf);
    free(s->last_id);
    memset(s, 0, sizeof(*s));
    s->retry_ms = -1;
}

static int
append(char **buf, size_t *len, size_t *cap, const char *bytes, size_t n, size_t max)
{
    if (*len + n > max)
        return -1;
    if (n == 0)
        return 0; /* *buf may still be NULL: memcpy must not see it */
    if (*len + n > *cap) {
        size_t want = *cap != 0 ? *cap : 256;
        while (want < *len + n)
            want *= 2;
        *buf = tp_realloc(*buf, want);
        *cap = want;
    }
    memcpy(*buf + *len, bytes, n);
    *len += n;
    return 0;
}

/* The end of an event: its ID becomes the last event ID (the specification commits it even for an
 * event without data, as MCP's priming event). */
static void
commit_id(tp_sse_t *s)
{
    if (!s->id_seen)
        return;
    s->id_seen = false;
    free(s->last_id);
    s->last_id = s->id_buf != NULL && s->id_buf[0] != '\0' ? tp_strdup(s->id_buf) : NULL;
}

static void
set_id(tp_sse_t *s, const char *value, size_t n)
{
    if (memchr(value, '\0', n) != NULL)
        return; /* ignored, as the specification says */
    free(s->id_buf);
    s->id_buf = tp_strndup(value, n);
    s->id_seen = true;
}

static void
set_retry(tp_sse_t *s, const char *value, size_t n)
{
    long long ms = 0;
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        if (value[i] < '0' || value[i] > '9')
            return;               /* ignored, as the specification says */
        if (ms < 1000000000000LL) /* clamp: no one waits 30 years */
            ms = ms * 10 + (value[i] - '0');
    }
    s->retry_ms = ms;
}

/* One complete line (without its end). An empty line dispatches the event. */
static int
process_line(tp_sse_t *s, const char *line, size_t n, tp_sse_event_cb cb, void *data)
{
    if (n == 0) {
        commit_id(s);
        if (!s->has_data)
            return 0;
        int rv = cb(data, s->buf != NULL ? s->buf : "", s->len);
        s->len = 0;
        s->has_data = false;
        return rv;
    }
    if (line[0] == ':')
        return 0; /* a comment, e.g. a keep-alive */
    const char *colon = memchr(line, ':', n);
    size_t name_len = colon != NULL ? (size_t)(colon - line) : n;
    const char *value = colon != NULL ? colon + 1 : line + n;
    if (value < line + n && *value == ' ')
        value++;
    size_t value_len = (size_t)(line + n - value);
    if (name_len == 2 && memcmp(line, "id", 2) == 0) {
        set_id(s, value, value_len);
        return 0;
    }
    if (name_len == 5 && memcmp(line, "retry", 5) == 0) {
        set_retry(s, value, value_len);
        return 0;
    }
    if (name_len != 4 || memcmp(line, "data", 4) != 0)
        return 0; /* event, or unknown: not needed */
    if (s->has_data && append(&s->buf, &s->len, &s->cap, "\n", 1, s->max_event) != 0)
        return -1;
    s->has_data = true;
    return append(&s->buf, &s->len, &s->cap, value, value_len, s->max_event);
}

int
tp_sse_feed(tp_sse_t *s, const char *bytes, size_t len, tp_sse_event_cb cb, void *data)
{
    size_t i = 0;
    while (i < len) {
        if (s->last_cr && bytes[i] == '\n') {
            s->last_cr = false; /* the \n of a \r\n already ended its line */
            i++;
            continue;
        }
        s->last_cr = false;
        size_t start = i;
        while (i < len && bytes[i] != '\n' && bytes[i] != '\r')
            i++;
        if (i == len) {
            /* An unfinished line: keep it for the next feed. */
            if (append(&s->line, &s->line_len, &s->line_cap, bytes + start, i - start, s->max_event + 16) != 0)
                return -1;
            break;
        }
        s->last_cr = bytes[i] == '\r';
        int rv;
        if (s->line_len != 0) {
            if (append(&s->line, &s->line_len, &s->line_cap, bytes + start, i - start, s->max_event + 16) != 0)
                return -1;
            rv = process_line(s, s->line, s->line_len, cb, data);
            s->line_len = 0;
        } else {
            rv = process_line(s, bytes + start, i - start, cb, data);
        }
        i++;
        if (rv != 0)
            return rv;
    }
    return 0;
}

bool
tp_sse_pending(const tp_sse_t *s)
{
    return s->has_data || s->line_len != 0;
}

const char *
tp_sse_last_id(const tp_sse_t *s)
{
    return s->last_id;
}

long long
tp_sse_retry_ms(const tp_sse_t *s)
{
    return s->retry_ms;
}
