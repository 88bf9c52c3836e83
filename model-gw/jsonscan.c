/*
 * jsonscan.c — see jsonscan.h. A recursive-descent checker over the text, with jansson's rules
 * (load.c and utf.c of jansson 2.14) for what it accepts.
 */
#include "jsonscan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH       2048 /* jansson's JSON_PARSER_MAX_DEPTH: values nested deeper are refused */
#define MAX_NUMBER_LEN  64   /* longer numbers are left to jansson (see mg_json_scan_object) */
#define MAX_REAL_DIGITS 300  /* a real whose magnitude may reach 1e300 is left to jansson (overflow) */

typedef struct scan {
    const char *p, *end;
    bool escaped_key; /* some key, at any depth, had an escape */
} scan_t;

static void
skip_space(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p (at least 4 bytes before end), or -1. */
static long
hex4(const char *p, const char *end)
{
    if (end - p < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(p[i]);
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* One UTF-8 sequence of a non-ASCII character at s->p: jansson's utf8_check_first/full (no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
static bool
utf8_char(scan_t *s)
{
    unsigned char u = (unsigned char)*s->p;
    size_t size;
    unsigned long value;
    if (u >= 0xC2 && u <= 0xDF)
        size = 2, value = u & 0x1F;
    else if (u >= 0xE0 && u <= 0xEF)
        size = 3, value = u & 0x0F;
    else if (u >= 0xF0 && u <= 0xF4)
        size = 4, value = u & 0x07;
    else
        return false;
    if ((size_t)(s->end - s->p) < size)
        return false;
    for (size_t i = 1; i < size; i++) {
        unsigned char c = (unsigned char)s->p[i];
        if (c < 0x80 || c > 0xBF)
            return false;
        value = value << 6 | (c & 0x3F);
    }
    if (value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF))
        return false;
    if ((size == 3 && value < 0x800) || (size == 4 && value < 0x10000))
        return false;
    s->p += size;
    return true;
}

/* A string at s->p (its opening quote); on success s->p is past the closing quote. *escaped tells
 * whether it had an escape. */
static bool
scan_string(scan_t *s, bool *escaped)
{
    s->p++;
    *escaped = false;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            return true;
        }
        if (c < 0x20)
            return false; /* a control character */
        if (c >= 0x80) {
            if (!utf8_char(s))
                return false;
            continue;
        }
        if (c != '\\') {
            s->p++;
            continue;
        }
        *escaped = true;
        if (s->end - s->p < 2)
            return false;
        char e = s->p[1];
        if (e != 'u') {
            if (strchr("\"\\/bfnrt", e) == NULL || e == '\0')
                return false;
            s->p += 2;
            continue;
        }
        long v = hex4(s->p + 2, s->end);
        if (v <= 0 || (v >= 0xDC00 && v <= 0xDFFF))
            return false; /* "\u0000" (jansson refuses it without JSON_ALLOW_NUL), or a lone low surrogate */
        s->p += 6;
        if (v >= 0xD800 && v <= 0xDBFF) {
            /* a high surrogate must be followed by an escaped low one */
            if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u')
                return false;
            long low = hex4(s->p + 2, s->end);
            if (low < 0xDC00 || low > 0xDFFF)
                return false;
            s->p += 6;
        }
    }
    return false;
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A number at s->p. Integers must fit in 64 bits; a real that might overflow a double, or a
 * number longer than MAX_NUMBER_LEN, is refused (jansson decides those). */
static bool
scan_number(scan_t *s)
{
    const char *start = s->p, *p = s->p, *end = s->end;
    if (p < end && *p == '-')
        p++;
    if (p >= end || !is_digit(*p))
        return false;
    const char *int_start = p;
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p))
            return false; /* a leading zero */
    } else {
        while (p < end && is_digit(*p))
            p++;
    }
    size_t int_digits = (size_t)(p - int_start);
    bool real = false;
    if (p < end && *p == '.') {
        real = true;
        p++;
        if (p >= end || !is_digit(*p))
            return false;
        while (p < end && is_digit(*p))
            p++;
    }
    long exp = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        bool neg = false;
        if (p < end && (*p == '+' || *p == '-'))
            neg = *p++ == '-';
        if (p >= end || !is_digit(*p))
            return false;
        while (p < end && is_digit(*p)) {
            if (exp < 100000)
                exp = exp * 10 + (*p - '0');
            p++;
        }
        if (neg)
            exp = -exp;
    }
    size_t len = (size_t)(p - start);
    if (len > MAX_NUMBER_LEN)
        return false;
    if (real) {
        /* |value| < 10^(int_digits + exp): no overflow while that stays well below 1e308. */
        if ((long)int_digits + exp > MAX_REAL_DIGITS)
            return false;
    } else if (int_digits > 18) { /* up to 18 digits always fit in 64 bits */
        char buf[MAX_NUMBER_LEN + 1];
        memcpy(buf, start, len);
        buf[len] = '\0';
        errno = 0;
        (void)strtoll(buf, NULL, 10);
        if (errno == ERANGE)
            return false; /* jansson: "too big integer" */
    }
    s->p = p;
    return true;
}

static bool
scan_literal(scan_t *s, const char *word, size_t len)
{
    if ((size_t)(s->end - s->p) < len || memcmp(s->p, word, len) != 0)
        return false;
    s->p += len;
    return true;
}

static bool scan_value(scan_t *s, int depth, mg_json_object_t *record);

/* An object at s->p ('{'). Records its members in *record when it is not NULL. */
static bool
scan_members(scan_t *s, int depth, mg_json_object_t *record)
{
    s->p++;
    skip_space(s);
    if (s->p < s->end && *s->p == '}') {
        if (record != NULL)
            record->close = s->p;
        s->p++;
        return true;
    }
    for (;;) {
        if (s->p >= s->end || *s->p != '"')
            return false;
        const char *key = s->p + 1;
        bool escaped;
        if (!scan_string(s, &escaped))
            return false;
        s->escaped_key = s->escaped_key || escaped;
        size_t key_len = (size_t)(s->p - 1 - key);
        skip_space(s);
        if (s->p >= s->end || *s->p != ':')
            return false;
        s->p++;
        skip_space(s);
        const char *value = s->p;
        if (!scan_value(s, depth + 1, NULL))
            return false;
        if (record != NULL) {
            if (record->count == MG_JSON_MAX_MEMBERS)
                return false;
            record->members[record->count++] = (mg_json_member_t){
                .key = key, .key_len = key_len, .value = value, .value_len = (size_t)(s->p - value)
            };
        }
        skip_space(s);
        if (s->p >= s->end)
            return false;
        if (*s->p == '}') {
            if (record != NULL)
                record->close = s->p;
            s->p++;
            return true;
        }
        if (*s->p != ',')
            return false;
        s->p++;
        skip_space(s);
    }
}

static bool
scan_elements(scan_t *s, int depth)
{
    s->p++;
    skip_space(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return true;
    }
    for (;;) {
        if (!scan_value(s, depth + 1, NULL))
            return false;
        skip_space(s);
        if (s->p >= s->end)
            return false;
        if (*s->p == ']') {
            s->p++;
            return true;
        }
        if (*s->p != ',')
            return false;
        s->p++;
        skip_space(s);
    }
}

/* A value at s->p, at nesting `depth` (the document's value is at depth 1, as in jansson). */
static bool
scan_value(scan_t *s, int depth, mg_json_object_t *record)
{
    if (depth > MAX_DEPTH || s->p >= s->end)
        return false;
    bool escaped;
    switch (*s->p) {
    case '{':
        return scan_members(s, depth, record);
    case '[':
        return scan_elements(s, depth);
    case '"':
        return scan_string(s, &escaped);
    case 't':
        return scan_literal(s, "true", 4);
    case 'f':
        return scan_literal(s, "false", 5);
    case 'n':
        return scan_literal(s, "null", 4);
    default:
        return scan_number(s);
    }
}

bool
mg_json_scan_object(const char *text, size_t len, mg_json_object_t *out)
{
    out->count = 0;
    out->close = NULL;
    out->escaped_keys = false;
    scan_t s = { .p = text, .end = text + len };
    skip_space(&s);
    if (s.p >= s.end || *s.p != '{' || !scan_value(&s, 1, out))
        return false;
    out->escaped_keys = s.escaped_key;
    skip_space(&s);
    return s.p == s.end;
}

const mg_json_member_t *
mg_json_find(const mg_json_object_t *obj, const char *key, size_t *count)
{
    size_t key_len = strlen(key), n = 0;
    const mg_json_member_t *found = NULL;
    for (size_t i = 0; i < obj->count; i++) {
        const mg_json_member_t *m = &obj->members[i];
        if (m->key_len == key_len && memcmp(m->key, key, key_len) == 0) {
            found = m;
            n++;
        }
    }
    if (count != NULL)
        *count = n;
    return found;
}

bool
mg_json_integer(const char *value, size_t len, int64_t *out)
{
    if (len == 0 || len > MAX_NUMBER_LEN || !(is_digit(value[0]) || value[0] == '-'))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (value[i] == '.' || value[i] == 'e' || value[i] == 'E')
            return false;
    }
    char buf[MAX_NUMBER_LEN + 1];
    memcpy(buf, value, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

size_t
mg_json_string_size(const char *s)
{
    return 2 + 6 * strlen(s);
}

size_t
mg_json_write_string(const char *s, char *out)
{
    static const char hex[] = "0123456789ABCDEF"; /* as jansson writes it */
    char *w = out;
    *w++ = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
        switch (*c) {
        case '"':
            *w++ = '\\', *w++ = '"';
            break;
        case '\\':
            *w++ = '\\', *w++ = '\\';
            break;
        case '\b':
            *w++ = '\\', *w++ = 'b';
            break;
        case '\f':
            *w++ = '\\', *w++ = 'f';
            break;
        case '\n':
            *w++ = '\\', *w++ = 'n';
            break;
        case '\r':
            *w++ = '\\', *w++ = 'r';
            break;
        case '\t':
            *w++ = '\\', *w++ = 't';
            break;
        default:
            if (*c < 0x20) {
                memcpy(w, "\\u00", 4);
                w[4] = hex[*c >> 4];
                w[5] = hex[*c & 0xF];
                w += 6;
            } else {
                *w++ = (char)*c;
            }
        }
    }
    *w++ = '"';
    return (size_t)(w - out);
}
