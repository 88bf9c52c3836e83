/*
 * mem.h — allocation wrappers that abort with a message on out-of-memory, as h2o and redis do.
 * Everything they return is released with free().
 */
#ifndef TP_MEM_H
#define TP_MEM_H

#include <stddef.h>

void *tp_malloc(size_t n);
void *tp_calloc(size_t count, size_t n);
void *tp_realloc(void *p, size_t n);
char *tp_strdup(const char *s);
char *tp_strndup(const char *s, size_t n);
/* Formats into a fresh string. */
char *tp_sprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
