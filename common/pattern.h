/*
 * pattern.h — the one wildcard the gateways' allow-lists use (Host and Origin lists, virtual
 * servers' tool lists, push-notification hosts): '*' matches any run of characters (also none),
 * every other character matches itself, ignoring ASCII case.
 */
#ifndef TP_PATTERN_H
#define TP_PATTERN_H

#include <stdbool.h>
#include <stddef.h>

/* True when the `len` bytes at s match `pattern` (NUL-terminated). Backtracks only to the latest
 * '*', so it is linear in practice and quadratic at worst. */
bool tp_pattern_match(const char *pattern, const char *s, size_t len);

#endif
