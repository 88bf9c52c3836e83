#include "log.h"
#include "mem.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char log_daemon[64] = "triplane";
static _Atomic int log_min_level = TP_LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void
tp_log_init(const char *daemon, tp_log_level_t min_level)
{
    snprintf(log_daemon, sizeof(log_daemon), "%s", daemon);
    atomic_store(&log_min_level, (int)min_level);
}

void
tp_log_set_level(tp_log_level_t min_level)
{
    atomic_store(&log_min_level, (int)min_level);
}

bool
tp_log_enabled(tp_log_level_t level)
{
    return (int)level >= atomic_load(&log_min_level);
}

int
tp_log_level_parse(const char *s, tp_log_level_t *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (tp_log_level_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *
tp_log_level_name(tp_log_level_t level)
{
    return level <= TP_LOG_ERROR ? level_names[level] : "unknown";
}

static void
format_timestamp(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void
write_line(const char *line)
{
    size_t len = strlen(line);
    /* One write per line: the kernel keeps writes to a pipe atomic up to PIPE_BUF, and a
     * terminal or file does not interleave a single write either in practice. */
    char *buf = tp_malloc(len + 1);
    memcpy(buf, line, len);
    buf[len] = '\n';
    size_t off = 0;
    while (off < len + 1) {
        ssize_t w = write(STDERR_FILENO, buf + off, len + 1 - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += (size_t)w;
    }
    free(buf);
}

void
tp_log_fields(tp_log_level_t level, const char *request_id, const char *msg, json_t *fields)
{
    if ((int)level < atomic_load(&log_min_level)) {
        json_decref(fields);
        return;
    }
    char ts[40];
    format_timestamp(ts, sizeof(ts));
    json_t *obj = json_object();
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(tp_log_level_name(level)));
    json_object_set_new(obj, "daemon", json_string(log_daemon));
    json_object_set_new(obj, "msg", json_string(msg != NULL ? msg : ""));
    if (request_id != NULL)
        json_object_set_new(obj, "request_id", json_string(request_id));
    if (fields != NULL) {
        const char *key;
        json_t *value;
        json_object_foreach(fields, key, value)
        {
            if (json_object_get(obj, key) == NULL)
                json_object_set(obj, key, value); /* borrows value, adds a reference */
        }
        json_decref(fields);
    }
    char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(obj);
    if (line == NULL)
        return;
    write_line(line);
    free(line);
}

void
tp_log(tp_log_level_t level, const char *request_id, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_min_level))
        return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    tp_log_fields(level, request_id, buf, NULL);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when it is not valid. */
static size_t
utf8_sequence(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len = (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    }
    uint32_t cp = len == 2   ? (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f)
                  : len == 3 ? (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f)
                             : (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
                                   (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
    static const uint32_t min_for_len[] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (cp < min_for_len[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0; /* overlong, out of range, or a surrogate */
    return len;
}

json_t *
tp_log_string(const char *s, size_t n)
{
    json_t *out = json_stringn(s, n);
    if (out != NULL)
        return out;
    char *buf = tp_malloc(n * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_sequence((const unsigned char *)s + i, n - i);
        if (len == 0) {
            memcpy(buf + o, "\xef\xbf\xbd", 3); /* U+FFFD */
            o += 3;
            i++;
        } else {
            memcpy(buf + o, s + i, len);
            o += len;
            i += len;
        }
    }
    out = json_stringn(buf, o);
    free(buf);
    return out;
}

void
tp_fatal(const char *what)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "{\"level\":\"fatal\",\"daemon\":\"%s\",\"msg\":\"%s\"}\n", log_daemon, what);
    ssize_t rv = write(STDERR_FILENO, buf, strlen(buf));
    (void)rv;
    abort();
}
