/*
 * log.h — structured logging: one JSON object per line on stderr.
 *
 * Every line carries "ts" (RFC 3339, UTC, milliseconds), "level", "daemon" and "msg", plus
 * "request_id" when one is given and any extra fields. Each line is written with a single
 * write(2), so lines from different threads never interleave. Safe to call from any thread.
 */
#ifndef TP_LOG_H
#define TP_LOG_H

#include <stdbool.h>

#include <jansson.h>

typedef enum tp_log_level {
    TP_LOG_DEBUG = 0,
    TP_LOG_INFO,
    TP_LOG_WARN,
    TP_LOG_ERROR,
} tp_log_level_t;

/* Sets the daemon name printed in every line (the string is copied) and the minimum level.
 * Call once at start-up, before any other thread logs. Before it is called, lines say
 * "daemon":"triplane" and the level is info. */
void tp_log_init(const char *daemon, tp_log_level_t min_level);

/* Changes the minimum level at run time (e.g. on reload). Thread-safe. */
void tp_log_set_level(tp_log_level_t min_level);

/* True when a line at `level` would be written, so callers can skip building one. */
bool tp_log_enabled(tp_log_level_t level);

/* Parses "debug", "info", "warn" or "error". Returns 0, or -EINVAL for anything else. */
int tp_log_level_parse(const char *s, tp_log_level_t *out);

/* Returns the level's name ("info", …). */
const char *tp_log_level_name(tp_log_level_t level);

/* Logs a printf-formatted message. request_id may be NULL. */
void tp_log(tp_log_level_t level, const char *request_id, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Logs msg with extra fields. Takes ownership of fields (an object, or NULL); its keys are
 * added after the standard ones and may not replace them. request_id may be NULL. */
void tp_log_fields(tp_log_level_t level, const char *request_id, const char *msg, json_t *fields);

#define tp_debug(...) tp_log(TP_LOG_DEBUG, NULL, __VA_ARGS__)
#define tp_info(...)  tp_log(TP_LOG_INFO, NULL, __VA_ARGS__)
#define tp_warn(...)  tp_log(TP_LOG_WARN, NULL, __VA_ARGS__)
#define tp_error(...) tp_log(TP_LOG_ERROR, NULL, __VA_ARGS__)

/* A JSON string holding the n bytes at s, with every byte that is not part of valid UTF-8
 * replaced by U+FFFD, so client-supplied text (paths, methods) never drops out of a log line.
 * Returns a new reference. */
json_t *tp_log_string(const char *s, size_t n);

/* Prints "fatal: <what>" as a log line and aborts. For out-of-memory and broken invariants. */
__attribute__((noreturn)) void tp_fatal(const char *what);

#endif
