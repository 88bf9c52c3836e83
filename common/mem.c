#include "mem.h"

#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *
tp_malloc(size_t n)
{
    void *p = malloc(n != 0 ? n : 1);
    if (p == NULL)
        tp_fatal("out of memory");
    return p;
}

void *
tp_calloc(size_t count, size_t n)
{
    void *p = calloc(count != 0 ? count : 1, n != 0 ? n : 1);
    if (p == NULL)
        tp_fatal("out of memory");
    return p;
}

void *
tp_realloc(void *p, size_t n)
{
    void *q = realloc(p, n != 0 ? n : 1);
    if (q == NULL)
        tp_fatal("out of memory");
    return q;
}

char *
tp_strdup(const char *s)
{
    char *p = strdup(s);
    if (p == NULL)
        tp_fatal("out of memory");
    return p;
}

char *
tp_strndup(const char *s, size_t n)
{
    /* Not strndup: s need not be NUL-terminated within n bytes, and some checkers insist. */
    const char *nul = memchr(s, '\0', n);
    size_t len = nul != NULL ? (size_t)(nul - s) : n;
    char *p = tp_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *
tp_sprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    int rv = vasprintf(&out, fmt, ap);
    va_end(ap);
    if (rv < 0)
        tp_fatal("out of memory");
    return out;
}
