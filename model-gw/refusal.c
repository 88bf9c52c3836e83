#include "refusal.h"

#include <math.h>
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

/* ---- value checks ---- */

#define MAX_NAME       64  /* function and schema names */
#define MAX_METADATA   16  /* metadata pairs */
#define MAX_META_KEY   64  /* characters in a metadata key */
#define MAX_META_VALUE 512 /* characters in a metadata value */

static void
range_text(char *buf, size_t size, bool integer, double min, double max)
{
    const char *kind = integer ? "an integer" : "a number";
    if (min == -INFINITY && max == INFINITY)
        snprintf(buf, size, "%s", kind);
    else if (max == INFINITY)
        snprintf(buf, size, "%s of at least %g", kind, min);
    else
        snprintf(buf, size, "%s %s %g %s %g", kind, integer ? "from" : "between", min, integer ? "to" : "and", max);
}

bool
mg_refusal_range(mg_refusal_t *r, const json_t *v, bool integer, double min, double max)
{
    char want[80];
    range_text(want, sizeof want, integer, min, max);
    if (!json_is_number(v))
        return mg_refusal_fail(r, "must be %s, got %s", want, mg_json_type_name(v));
    if (integer && !json_is_integer(v))
        return mg_refusal_fail(r, "must be %s; got %g", want, json_real_value(v));
    double x = json_number_value(v);
    if (x >= min && x <= max)
        return true;
    if (integer)
        return mg_refusal_fail(r, "must be %s; got %" JSON_INTEGER_FORMAT, want, json_integer_value(v));
    return mg_refusal_fail(r, "must be %s; got %g", want, x);
}

void
mg_list_add(mg_list_t *l, const char *s)
{
    size_t room = sizeof l->text - l->len;
    if (room <= 1)
        return; /* already cut */
    int n = snprintf(l->text + l->len, room, "%s%s", l->count ? ", " : "", s);
    l->count++;
    if (n >= 0 && (size_t)n < room) {
        l->len += (size_t)n;
        return;
    }
    memcpy(l->text + sizeof l->text - 4, "...", 4);
    l->len = sizeof l->text - 1;
}

const char *
mg_list_text(const mg_list_t *l)
{
    return l->count ? l->text : "none";
}

bool
mg_refusal_choice(mg_refusal_t *r, const mg_list_t *l, const json_t *v)
{
    const char *s = json_string_value(v);
    if (l->count == 1 && s)
        return mg_refusal_fail(r, "must be '%s'; got '%.*s'", l->text, MG_SHOW, s);
    if (l->count == 1)
        return mg_refusal_fail(r, "must be '%s', got %s", l->text, mg_json_type_name(v));
    if (s)
        return mg_refusal_fail(r, "must be one of %s; got '%.*s'", l->text, MG_SHOW, s);
    return mg_refusal_fail(r, "must be one of %s, got %s", l->text, mg_json_type_name(v));
}

bool
mg_refusal_enum(mg_refusal_t *r, const json_t *v, const char *const *choices)
{
    const char *s = json_string_value(v);
    for (const char *const *p = choices; s && *p; p++)
        if (strcmp(*p, s) == 0)
            return true;
    mg_list_t l = { 0 };
    for (const char *const *p = choices; *p; p++)
        mg_list_add(&l, *p);
    return mg_refusal_choice(r, &l, v);
}

bool
mg_refusal_name(mg_refusal_t *r, const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s)
        return mg_refusal_fail(r, "must be a string, got %s", mg_json_type_name(v));
    static const char rule[] = "must be 1 to 64 letters, digits, underscores or dashes (^[a-zA-Z0-9_-]{1,64}$)";
    size_t len = json_string_length(v);
    if (len > MAX_NAME)
        return mg_refusal_fail(r, "%s; got %zu characters", rule, len);
    if (len == 0 || strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != len)
        return mg_refusal_fail(r, "%s; got '%.*s'", rule, MG_SHOW, s);
    return true;
}

bool
mg_refusal_metadata(mg_refusal_t *r, const json_t *v)
{
    if (!json_is_object(v))
        return mg_refusal_fail(r, "must be an object of string values, got %s", mg_json_type_name(v));
    if (json_object_size(v) > MAX_METADATA)
        return mg_refusal_fail(r, "has %zu pairs; at most %d are allowed", json_object_size(v), MAX_METADATA);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)v, key, value)
    {
        size_t saved = mg_refusal_push(r, key, 0);
        if (strlen(key) > MAX_META_KEY)
            return mg_refusal_fail(r, "is a key longer than %d characters", MAX_META_KEY);
        if (!json_is_string(value))
            return mg_refusal_fail(r, "must be a string, got %s", mg_json_type_name(value));
        if (json_string_length(value) > MAX_META_VALUE)
            return mg_refusal_fail(r, "is longer than %d characters", MAX_META_VALUE);
        mg_refusal_pop(r, saved);
    }
    return true;
}
