#include "refusal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

size_t
mg_refusal_push(mg_refusal_t *r, const char *key, size_t index)
{
    size_t saved = r->len, room = sizeof r->out->param - r->len;
    char *end = r->out->param + r->len;
    const char *dot = r->len ? "." : "";
    int n = key         ? snprintf(end, room, "%s%s", dot, key)
            : r->dotted ? snprintf(end, room, "%s%zu", dot, index)
                        : snprintf(end, room, "[%zu]", index);
    r->len = (n < 0 || (size_t)n >= room) ? sizeof r->out->param - 1 : r->len + (size_t)n;
    return saved;
}

void
mg_refusal_pop(mg_refusal_t *r, size_t saved)
{
    r->len = saved;
    r->out->param[saved] = '\0';
}

bool
mg_refusal_fail(mg_refusal_t *r, const char *fmt, ...)
{
    char *m = r->out->message;
    size_t cap = sizeof r->out->message;
    const char *subject = r->len ? r->out->param : r->root;
    int n = subject != NULL ? snprintf(m, cap, "%s%s", subject, r->sep) : 0;
    if (n < 0 || (size_t)n >= cap)
        return false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m + n, cap - (size_t)n, fmt, ap);
    va_end(ap);
    return false;
}

const char *
mg_json_type_name(const json_t *v)
{
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        break;
    }
    return "null";
}

bool
mg_streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

const char *
mg_json_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}
