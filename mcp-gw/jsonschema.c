#include "jsonschema.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <arpa/inet.h>
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

/*
 * How it works. mcp_schema_compile() turns every subschema into a node_t: keyword values are
 * checked and decoded once (bounds into num_t, regexes compiled, properties sorted for a binary
 * search, $ref linked to the node it names), so validating is a walk over nodes that never looks a
 * keyword up by name. Nodes are found again by the json_t they were compiled from (a pointer
 * map), which is how a $ref to "#/properties/a/items" finds the node already built for it.
 *
 * Validation counts errors in a vctx_t and fills the caller's array until it is full, then stops.
 * anyOf/oneOf/not/contains/if try a subschema in a sub-context that shares the path but stores
 * nothing and stops at the first error ("probing"), so a failed alternative costs no formatting;
 * only when the combinator fails and its error will be shown are the alternatives run again to
 * find the one closest to matching.
 *
 * The path of the value being checked is a stack of segments (a key or an index) and is only
 * turned into text when an error is stored.
 */

#define MAX_FRAMES       512     /* nested node visits in one validation: a second guard on the stack */
#define MAX_STEPS        2000000 /* node visits in one validation (tens of ms): bounds the cost of nested anyOfs */
#define MAX_SCHEMA_DEPTH 128     /* nested subschemas in a schema document */
#define MAX_CHAIN        1024    /* nodes in one chain of $ref/allOf/... applied to the same value */
#define MATCH_LIMIT      1000000 /* PCRE2 backtracking steps for one match (a few ms) */
#define HEAP_LIMIT_KIB   4096    /* PCRE2 backtracking memory for one match */
#define PROBE_LIMIT      16      /* errors counted per alternative when looking for the closest one */
#define SHOW             48      /* bytes of a value's string quoted in a message */
#define FOLD_MAX         16      /* unknown properties whose suggestion can stand for a missing one */
#define WHERE_MAX        512     /* bytes of a schema location in a compile error */

/* Error reporting: kept out of line, so its buffers are not on the stack of every recursion. */
#define COLD __attribute__((cold, noinline))

/* ---- compiled form ---- */

enum {
    TY_NULL = 1u << 0,
    TY_BOOLEAN = 1u << 1,
    TY_OBJECT = 1u << 2,
    TY_ARRAY = 1u << 3,
    TY_NUMBER = 1u << 4,
    TY_STRING = 1u << 5,
    TY_INTEGER = 1u << 6, /* a number with a zero fraction, 3.0 included */
};

static const char *const type_names[] = { "null", "boolean", "object", "array", "number", "string", "integer" };

typedef enum node_kind { NODE_SCHEMA, NODE_TRUE, NODE_FALSE } node_kind_t;

/* A JSON number as written: integers compare exactly with integers, everything else as doubles. */
typedef struct num {
    bool is_int;
    json_int_t i;
    double d; /* always set */
} num_t;

enum { HAS_MIN = 1, HAS_MAX = 2, HAS_XMIN = 4, HAS_XMAX = 8, HAS_MULT = 16 };

typedef struct format {
    const char *name;
    bool (*check)(const char *s, size_t len);
    const char *expect; /* how a valid value looks, for the message */
} format_t;

typedef struct node node_t;

typedef struct prop {
    const char *name; /* borrowed from the schema */
    node_t *schema;
} prop_t;

typedef struct pattern_prop {
    const char *source; /* the regex as written: a key of patternProperties */
    pcre2_code *re;
    node_t *schema;
} pattern_prop_t;

/* dependentRequired / dependentSchemas / draft-07 dependencies: what `name` being present demands. */
typedef struct dep {
    const char *name;
    json_t *required; /* array of property names, borrowed; or NULL */
    node_t *schema;   /* or NULL */
} dep_t;

struct node {
    json_t *json; /* this subschema, borrowed from the compiled root */
    node_kind_t kind;
    size_t index;   /* in mcp_schema_t.nodes */
    unsigned types; /* TY_* accepted; 0: any */

    node_t *ref;
    const char *ref_text; /* the $ref as written */
    char *ref_where;      /* "#/$defs/a/$ref": for compile errors (owned) */

    json_t *enum_values; /* array, borrowed */
    json_t *const_value; /* borrowed; NULL when absent (a const null is JSON null) */
    node_t **all_of, **any_of, **one_of;
    size_t n_all, n_any, n_one;
    node_t *not_, *if_, *then_, *else_;

    unsigned nums; /* HAS_* */
    num_t minimum, maximum, xminimum, xmaximum, multiple_of;

    size_t min_length, max_length; /* code points; SIZE_MAX: no maximum */
    pcre2_code *pattern;
    const char *pattern_text;
    const format_t *format;

    node_t **prefix; /* prefixItems, or draft-07 items as an array */
    size_t n_prefix;
    node_t *items;             /* every item after the prefix */
    const char *items_keyword; /* "items" or "additionalItems", for errors */
    size_t min_items, max_items;
    bool unique;
    node_t *contains;
    size_t min_contains, max_contains;

    json_t *properties; /* borrowed, in document order: names for messages */
    prop_t *props;      /* sorted by name */
    size_t n_props;
    pattern_prop_t *pprops;
    size_t n_pprops;
    node_t *additional;
    node_t *property_names;
    json_t *required; /* array of strings, borrowed */
    size_t min_props, max_props;
    dep_t *deps;
    size_t n_deps;
};

struct mcp_schema {
    json_t *root; /* our reference */
    node_t *entry;
    node_t **nodes; /* every node, for freeing */
    size_t n_nodes, cap_nodes;
    pcre2_match_context *mctx; /* the backtracking limits; read-only once compiled */
};

/* ---- small helpers ---- */

static bool
is_digit(int ch)
{
    return ch >= '0' && ch <= '9';
}

static bool
is_alpha(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool
is_alnum(int ch)
{
    return is_alpha(ch) || is_digit(ch);
}

static bool
is_hex(int ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static bool
in_set(int ch, const char *set)
{
    return ch != '\0' && strchr(set, ch) != NULL;
}

static void
grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return;
    size_t n = *cap ? *cap * 2 : 8;
    while (n < need)
        n *= 2;
    *p = tp_realloc(*p, n * size);
    *cap = n;
}

/* Cuts buf (a string of len bytes) before a UTF-8 sequence that the cut left incomplete. */
static void
utf8_trim(char *buf, size_t len)
{
    size_t i = len, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)buf[i - 1] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)buf[i - 1];
    size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (want > back + 1)
        buf[i - 1] = '\0';
}

static size_t
utf8_count(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* Writes s (len bytes) quoted and escaped like a JSON string, cut after about `show` bytes at a
 * code point boundary with "..." before the closing quote. */
static void
quote(char *out, size_t cap, const char *s, size_t len, size_t show)
{
    assert(cap >= 16);
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((i >= show && (ch & 0xC0) != 0x80) || o + 12 > cap) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch == '\n') {
            memcpy(out + o, "\\n", 2);
            o += 2;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
}

static void
quote_str(char *out, size_t cap, const char *s)
{
    quote(out, cap, s, strlen(s), SHOW);
}

static const char *
kind_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        break;
    }
    return "null";
}

/* ---- numbers and JSON equality ---- */

static num_t
num_of(const json_t *v)
{
    num_t n = { 0 };
    if (json_is_integer(v)) {
        n.is_int = true;
        n.i = json_integer_value(v);
        n.d = (double)n.i;
    } else {
        n.d = json_real_value(v);
    }
    return n;
}

static int
num_cmp(num_t a, num_t b)
{
    if (a.is_int && b.is_int)
        return (a.i > b.i) - (a.i < b.i);
    return (a.d > b.d) - (a.d < b.d);
}

static bool
is_whole(double d)
{
    return isfinite(d) && d == floor(d);
}

/* The shortest text that reads back as the same number: 0.1, not 0.10000000000000001. */
static void
num_text(num_t n, char *out, size_t cap)
{
    if (n.is_int) {
        snprintf(out, cap, "%" JSON_INTEGER_FORMAT, n.i);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, n.d);
        if (strtod(out, NULL) == n.d)
            break;
    }
    if (is_whole(n.d) && fabs(n.d) < 1e15 && !strchr(out, 'e'))
        snprintf(out + strlen(out), cap - strlen(out), ".0");
}

static bool
multiple_of(num_t x, num_t m)
{
    if (x.is_int && m.is_int)
        return x.i % m.i == 0;
    double q = x.d / m.d;
    if (!isfinite(q))
        return false;
    return fabs(q - nearbyint(q)) <= 1e-9 * fmax(1.0, fabs(q));
}

/* JSON equality as JSON Schema defines it: numbers by value (1 == 1.0), objects regardless of order. */
static bool
json_eq(json_t *a, json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return num_cmp(num_of(a), num_of(b)) == 0;
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY: {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return false;
        for (size_t i = 0; i < n; i++)
            if (!json_eq(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *key;
        json_t *v;
        json_object_foreach(a, key, v)
        {
            json_t *w = json_object_get(b, key);
            if (!w || !json_eq(v, w))
                return false;
        }
        return true;
    }
    default:
        return true; /* true, false, null */
    }
}

/* A hash consistent with json_eq: equal values hash alike. */
static uint64_t
json_hash(json_t *v)
{
    uint64_t h = 1469598103934665603ull;
    switch (json_typeof(v)) {
    case JSON_INTEGER:
    case JSON_REAL: {
        double d = json_number_value(v);
        if (d == 0)
            d = 0; /* -0.0 */
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        return bits * 0x9E3779B97F4A7C15ull;
    }
    case JSON_STRING: {
        const unsigned char *s = (const unsigned char *)json_string_value(v);
        for (size_t i = 0, n = json_string_length(v); i < n; i++)
            h = (h ^ s[i]) * 1099511628211ull;
        return h;
    }
    case JSON_ARRAY:
        for (size_t i = 0, n = json_array_size(v); i < n; i++)
            h = (h ^ json_hash(json_array_get(v, i))) * 1099511628211ull;
        return h ^ 0xA;
    case JSON_OBJECT: {
        uint64_t sum = 0xB;
        const char *key;
        json_t *m;
        json_object_foreach(v, key, m)
        {
            uint64_t k = 1469598103934665603ull;
            for (const unsigned char *p = (const unsigned char *)key; *p; p++)
                k = (k ^ *p) * 1099511628211ull;
            sum += k * 31 + json_hash(m); /* order-independent */
        }
        return sum;
    }
    default:
        return (uint64_t)json_typeof(v) * 0x51ED27ull;
    }
}

/* ---- suggestions ---- */

#define NAME_MAX_NORM 64

/* Lower-cases ASCII letters and drops '_', '-', '.' and spaces, so snake_case, kebab-case and
 * camelCase spellings of a name become one. Returns the length, or SIZE_MAX when too long. */
static size_t
normalize(const char *s, char *out)
{
    size_t o = 0;
    for (; *s; s++) {
        if (in_set(*s, "_-. "))
            continue;
        if (o == NAME_MAX_NORM)
            return SIZE_MAX;
        out[o++] = (*s >= 'A' && *s <= 'Z') ? (char)(*s - 'A' + 'a') : *s;
    }
    out[o] = '\0';
    return o;
}

/* Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps. */
static size_t
edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t rows[3][NAME_MAX_NORM + 1];
    size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t d = prev[j] + 1;
            if (cur[j - 1] + 1 < d)
                d = cur[j - 1] + 1;
            if (prev[j - 1] + cost < d)
                d = prev[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < d)
                d = prev2[j - 2] + 1;
            cur[j] = d;
        }
        size_t *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

/* How near `cand` is to `name`: 0 for the same name spelt differently, larger is farther,
 * -1 when it is not near enough to suggest. */
static int
suggest_score(const char *name, const char *cand)
{
    char a[NAME_MAX_NORM + 1], b[NAME_MAX_NORM + 1];
    size_t la = normalize(name, a), lb = normalize(cand, b);
    if (la == SIZE_MAX || lb == SIZE_MAX)
        return strcasecmp(name, cand) == 0 ? 0 : -1;
    if (la == 0 || lb == 0)
        return -1;
    if (la == lb && memcmp(a, b, la) == 0)
        return 0;
    size_t longer = la > lb ? la : lb, shorter = la < lb ? la : lb;
    size_t allowed = longer < 3 ? 0 : longer <= 6 ? 1 : longer <= 11 ? 2 : 3;
    size_t d = edit_distance(a, la, b, lb);
    if (d <= allowed)
        return (int)(10 * d);
    const char *s = la < lb ? a : b, *l = la < lb ? b : a;
    size_t extra = longer - shorter > 9 ? 9 : longer - shorter;
    if (shorter >= 3 && memcmp(s, l, shorter) == 0)
        return (int)(40 + extra);
    if (shorter >= 4 && strstr(l, s))
        return (int)(50 + extra);
    size_t common = 0;
    while (common < shorter && s[common] == l[common])
        common++;
    if (common >= 4 && common * 3 >= shorter * 2)
        return (int)(60 + (longer - common > 9 ? 9 : longer - common));
    return -1;
}

/* Keeps the better of the current best and `cand` (the earlier one on a tie). */
static void
suggest_consider(const char *name, const char *cand, const char **best, int *best_score)
{
    int sc = suggest_score(name, cand);
    if (sc >= 0 && (!*best || sc < *best_score)) {
        *best = cand;
        *best_score = sc;
    }
}

const char *
mcp_suggest(const char *name, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    int best_score = 0;
    if (!name)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (candidates[i])
            suggest_consider(name, candidates[i], &best, &best_score);
    return best;
}

/* ---- formats ---- */

static int
digits_value(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int
days_in_month(int y, int m)
{
    static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

static bool
check_date(const char *s, size_t len)
{
    if (len != 10 || s[4] != '-' || s[7] != '-')
        return false;
    int y = digits_value(s, 4), m = digits_value(s + 5, 2), d = digits_value(s + 8, 2);
    return y >= 0 && m >= 1 && m <= 12 && d >= 1 && d <= days_in_month(y, m);
}

/* "HH:MM:SS[.frac]" then "Z" or "+HH:MM", which may be left out unless need_offset. */
static bool
check_time_offset(const char *s, size_t len, bool need_offset)
{
    if (len < 8 || s[2] != ':' || s[5] != ':')
        return false;
    int h = digits_value(s, 2), mi = digits_value(s + 3, 2), se = digits_value(s + 6, 2);
    if (h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 60) /* 60: a leap second */
        return false;
    size_t i = 8;
    if (i < len && s[i] == '.') {
        size_t start = ++i;
        while (i < len && is_digit(s[i]))
            i++;
        if (i == start)
            return false;
    }
    if (i == len)
        return !need_offset;
    if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len)
        return true;
    if ((s[i] == '+' || s[i] == '-') && len - i == 6 && s[i + 3] == ':') {
        int oh = digits_value(s + i + 1, 2), om = digits_value(s + i + 4, 2);
        return oh >= 0 && oh <= 23 && om >= 0 && om <= 59;
    }
    return false;
}

static bool
check_time(const char *s, size_t len)
{
    return check_time_offset(s, len, false);
}

static bool
check_date_time(const char *s, size_t len)
{
    return len > 11 && check_date(s, 10) && (s[10] == 'T' || s[10] == 't') && check_time_offset(s + 11, len - 11, true);
}

static bool
check_hostname(const char *s, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!is_alnum(s[i]) && (s[i] != '-' || label == 0))
            return false;
        label++;
    }
    return true;
}

static bool
check_ipv4(const char *s, size_t len)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= len || s[i] != '.')
                return false;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < len && is_digit(s[i]) && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        size_t n = i - start;
        if (n == 0 || v > 255 || (n > 1 && s[start] == '0'))
            return false;
    }
    return i == len;
}

static bool
check_ipv6(const char *s, size_t len)
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in6_addr addr;
    if (len == 0 || len >= sizeof buf || memchr(s, '\0', len))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &addr) == 1;
}

static bool
check_email(const char *s, size_t len)
{
    const char *at = memrchr(s, '@', len);
    if (!at)
        return false;
    size_t llen = (size_t)(at - s), dlen = len - llen - 1;
    const char *d = at + 1;
    if (llen == 0 || llen > 64 || dlen == 0)
        return false;
    if (s[0] == '"') { /* quoted local part */
        if (llen < 2 || s[llen - 1] != '"')
            return false;
        for (size_t i = 1; i + 1 < llen; i++) {
            if (s[i] == '\\' && i + 2 < llen)
                i++;
            else if (s[i] == '"' || s[i] == '\\' || (unsigned char)s[i] < 0x20)
                return false;
        }
    } else {
        for (size_t i = 0; i < llen; i++) {
            if (s[i] == '.') {
                if (i == 0 || i + 1 == llen || s[i + 1] == '.')
                    return false;
            } else if (!is_alnum(s[i]) && !in_set(s[i], "!#$%&'*+-/=?^_`{|}~")) {
                return false;
            }
        }
    }
    if (d[0] == '[' && d[dlen - 1] == ']' && dlen > 2) {
        if (dlen > 7 && strncasecmp(d + 1, "IPv6:", 5) == 0)
            return check_ipv6(d + 6, dlen - 7);
        return check_ipv4(d + 1, dlen - 2);
    }
    return check_hostname(d, dlen);
}

/* A percent sign followed by two hex digits at s[i]. */
static bool
pct_at(const char *s, size_t len, size_t i)
{
    return i + 2 < len && is_hex(s[i + 1]) && is_hex(s[i + 2]);
}

/* [userinfo@]host[:port] of an absolute URI. */
static bool
check_authority(const char *a, size_t n)
{
    const char *at = memrchr(a, '@', n);
    size_t i = 0;
    if (at) {
        for (; a + i < at; i++) {
            if (a[i] == '%' && pct_at(a, n, i))
                i += 2;
            else if (!is_alnum(a[i]) && !in_set(a[i], "-._~!$&'()*+,;=:"))
                return false;
        }
        i++;
    }
    if (i < n && a[i] == '[') {
        const char *close = memchr(a + i, ']', n - i);
        if (!close)
            return false;
        size_t hlen = (size_t)(close - (a + i)) - 1;
        if (!check_ipv6(a + i + 1, hlen) && !(hlen > 1 && (a[i + 1] == 'v' || a[i + 1] == 'V')))
            return false;
        i = (size_t)(close - a) + 1;
    } else {
        for (; i < n && a[i] != ':'; i++) {
            if (a[i] == '%' && pct_at(a, n, i))
                i += 2;
            else if (!is_alnum(a[i]) && !in_set(a[i], "-._~!$&'()*+,;="))
                return false;
        }
    }
    if (i == n)
        return true;
    if (a[i] != ':')
        return false;
    for (i++; i < n; i++)
        if (!is_digit(a[i]))
            return false;
    return true;
}

/* An absolute URI (RFC 3986): a scheme, then only characters a URI may hold. */
static bool
check_uri(const char *s, size_t len)
{
    if (len == 0 || !is_alpha(s[0]))
        return false;
    size_t i = 1;
    while (i < len && (is_alnum(s[i]) || in_set(s[i], "+-.")))
        i++;
    if (i == len || s[i] != ':')
        return false;
    i++;
    if (len - i >= 2 && s[i] == '/' && s[i + 1] == '/') {
        size_t start = i + 2, end = start;
        while (end < len && !in_set(s[end], "/?#"))
            end++;
        if (!check_authority(s + start, end - start))
            return false;
        i = end;
    }
    bool fragment = false;
    for (; i < len; i++) {
        if (s[i] == '%') {
            if (!pct_at(s, len, i))
                return false;
            i += 2;
        } else if (s[i] == '#') {
            if (fragment)
                return false;
            fragment = true;
        } else if (!is_alnum(s[i]) && !in_set(s[i], "-._~!$&'()*+,;=:@/?")) {
            return false;
        }
    }
    return true;
}

static bool
check_uuid(const char *s, size_t len)
{
    if (len != 36)
        return false;
    for (size_t i = 0; i < len; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return true;
}

static const format_t formats[] = {
    { "date-time", check_date_time, "an RFC 3339 date-time such as \"2024-05-01T14:30:00Z\"" },
    { "date", check_date, "a date such as \"2024-05-01\"" },
    { "time", check_time, "a time such as \"14:30:00\" or \"14:30:00+02:00\"" },
    { "email", check_email, "an email address such as \"ada@example.com\"" },
    { "uri", check_uri, "an absolute URI such as \"https://example.com/path\"" },
    { "uuid", check_uuid, "a UUID such as \"123e4567-e89b-12d3-a456-426614174000\"" },
    { "ipv4", check_ipv4, "an IPv4 address such as \"192.0.2.1\"" },
    { "ipv6", check_ipv6, "an IPv6 address such as \"2001:db8::1\"" },
    { "hostname", check_hostname, "a host name such as \"api.example.com\"" },
};

/* ---- regular expressions ---- */

static pthread_key_t match_key;
static pthread_once_t match_once = PTHREAD_ONCE_INIT;

static void
free_match_data(void *md)
{
    pcre2_match_data_free(md);
}

static void
make_match_key(void)
{
    if (pthread_key_create(&match_key, free_match_data) != 0)
        tp_fatal("pthread_key_create for the PCRE2 match data");
}

/* One match block per thread, reused by every match: it also keeps PCRE2's backtracking frames,
 * so a match allocates nothing once a thread has matched once. A single ovector pair is enough,
 * since only whether a pattern matches is asked. */
static pcre2_match_data *
thread_match_data(void)
{
    pthread_once(&match_once, make_match_key);
    pcre2_match_data *md = pthread_getspecific(match_key);
    if (md)
        return md;
    md = pcre2_match_data_create(1, NULL);
    if (!md || pthread_setspecific(match_key, md) != 0)
        tp_fatal("out of memory");
    return md;
}

/* 1 when re matches somewhere in s, 0 when not, -1 when the match ran over its budget. */
static int
regex_match(const mcp_schema_t *s, pcre2_code *re, const char *subject, size_t len)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)subject, len, 0, 0, thread_match_data(), s->mctx);
    if (rc >= 0) /* 0: matched, with more groups than the one ovector pair */
        return 1;
    return rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

/* ---- validation: context, paths, errors ---- */

typedef struct seg {
    const char *key; /* NULL: an array index */
    size_t index;
} seg_t;

typedef struct vctx {
    const mcp_schema_t *s;
    mcp_schema_error_t *errs;
    size_t max;        /* errors stored at most */
    size_t count;      /* errors found */
    size_t limit;      /* the walk stops when count reaches it */
    seg_t *segs;       /* the path, MCP_SCHEMA_MAX_DEPTH + 1 entries, shared with probes */
    size_t nseg;       /* == depth */
    unsigned frames;   /* nested node visits */
    size_t *steps;     /* node visits so far, shared with probes */
    size_t first_nseg; /* the depth of the first error, once count > 0 */
} vctx_t;

static void validate_node(vctx_t *c, const node_t *n, json_t *v);

static bool
done(const vctx_t *c)
{
    return c->count >= c->limit;
}

static bool
storing(const vctx_t *c)
{
    return c->count < c->max;
}

/* A key shown as ".key" in a path; any other is shown as ["key"]. */
static bool
plain_key(const char *k)
{
    if (!*k || is_digit(*k))
        return false;
    for (; *k; k++)
        if (!is_alnum(*k) && !in_set(*k, "_$-") && (unsigned char)*k < 0x80)
            return false;
    return true;
}

static void
render_path(const seg_t *segs, size_t nseg, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < nseg; i++) {
        const seg_t *g = &segs[i];
        int n;
        if (!g->key) {
            n = snprintf(out + o, cap - o, "[%zu]", g->index);
        } else if (plain_key(g->key)) {
            n = snprintf(out + o, cap - o, "%s%s", o ? "." : "", g->key);
        } else {
            char q[160];
            quote(q, sizeof q, g->key, strlen(g->key), 120);
            n = snprintf(out + o, cap - o, "[%s]", q);
        }
        if (n < 0 || (size_t)n >= cap - o) { /* cut, and say so */
            out[cap - 4] = '\0';
            utf8_trim(out, cap - 4);
            strcat(out, "...");
            return;
        }
        o += (size_t)n;
    }
}

/* Counts an error at the current path; returns the slot to describe it in, or NULL when the
 * caller only wants it counted. */
static mcp_schema_error_t *
new_error(vctx_t *c, const node_t *n, const char *keyword)
{
    size_t i = c->count++;
    if (i == 0)
        c->first_nseg = c->nseg;
    if (i >= c->max)
        return NULL;
    mcp_schema_error_t *e = &c->errs[i];
    render_path(c->segs, c->nseg, e->path, sizeof e->path);
    e->keyword = keyword;
    e->message[0] = '\0';
    e->suggestion = NULL;
    e->schema = n->json;
    return e;
}

/* The same, at the member `key` of the current object. */
static mcp_schema_error_t *
new_error_at(vctx_t *c, const node_t *n, const char *keyword, const char *key)
{
    c->segs[c->nseg] = (seg_t){ .key = key };
    c->nseg++;
    mcp_schema_error_t *e = new_error(c, n, keyword);
    c->nseg--;
    return e;
}

static void say(mcp_schema_error_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
say(mcp_schema_error_t *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= sizeof e->message)
        utf8_trim(e->message, sizeof e->message - 1);
}

/* A probe: runs n on v with nothing stored and the first error ending the walk. True when v matches. */
static bool
probe(const vctx_t *c, const node_t *n, json_t *v)
{
    vctx_t sub = *c;
    sub.errs = NULL;
    sub.max = 0;
    sub.count = 0;
    sub.limit = 1;
    validate_node(&sub, n, v);
    return sub.count == 0;
}

/* ---- validation: messages about values ---- */

/* "string \"5\"", "integer 5", "number 2.5", "boolean true", "null", "object", "array". */
static void
describe(json_t *v, char *out, size_t cap)
{
    char buf[SHOW * 2 + 16];
    switch (json_typeof(v)) {
    case JSON_STRING:
        quote(buf, sizeof buf, json_string_value(v), json_string_length(v), SHOW);
        snprintf(out, cap, "string %s", buf);
        return;
    case JSON_INTEGER:
    case JSON_REAL:
        num_text(num_of(v), buf, sizeof buf);
        snprintf(out, cap, "%s %s", kind_name(v), buf);
        return;
    case JSON_TRUE:
    case JSON_FALSE:
        snprintf(out, cap, "boolean %s", json_is_true(v) ? "true" : "false");
        return;
    default:
        snprintf(out, cap, "%s", kind_name(v));
    }
}

/* A value as JSON, cut when long: "\"red\"", "5", "[1,2]". */
static void
value_text(json_t *v, char *out, size_t cap)
{
    if (json_is_string(v)) {
        quote(out, cap, json_string_value(v), json_string_length(v), cap > 24 ? cap - 24 : 8);
        return;
    }
    if (json_is_number(v)) {
        num_text(num_of(v), out, cap);
        return;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        tp_fatal("out of memory");
    size_t len = strlen(text);
    if (len >= cap) {
        memcpy(out, text, cap - 4);
        memcpy(out + cap - 4, "...", 4);
        utf8_trim(out, cap - 4);
    } else {
        memcpy(out, text, len + 1);
    }
    free(text);
}

/* "integer", "string or null", "string, number or null". */
static void
types_text(unsigned mask, char *out, size_t cap)
{
    static const struct {
        unsigned bit;
        const char *name;
    } order[] = { { TY_STRING, "string" },   { TY_NUMBER, "number" }, { TY_INTEGER, "integer" },
                  { TY_BOOLEAN, "boolean" }, { TY_OBJECT, "object" }, { TY_ARRAY, "array" },
                  { TY_NULL, "null" } };
    if (mask & TY_NUMBER)
        mask &= ~TY_INTEGER;
    size_t total = 0, seen = 0, o = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        total += (mask & order[i].bit) != 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof order / sizeof order[0] && o < cap; i++) {
        if (!(mask & order[i].bit))
            continue;
        const char *sep = seen == 0 ? "" : seen + 1 == total ? " or " : ", ";
        int n = snprintf(out + o, cap - o, "%s%s", sep, order[i].name);
        if (n < 0)
            break;
        o += (size_t)n;
        seen++;
    }
}

static unsigned
types_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return TY_OBJECT;
    case JSON_ARRAY:
        return TY_ARRAY;
    case JSON_STRING:
        return TY_STRING;
    case JSON_INTEGER:
        return TY_NUMBER | TY_INTEGER;
    case JSON_REAL:
        return TY_NUMBER | (is_whole(json_real_value(v)) ? TY_INTEGER : 0);
    case JSON_TRUE:
    case JSON_FALSE:
        return TY_BOOLEAN;
    case JSON_NULL:
        break;
    }
    return TY_NULL;
}

/* A hint for a value of the wrong type that is the right value in the wrong dress: "5" for 5,
 * a JSON-encoded object for an object, 5 for "5". Empty when there is none. */
static void
type_hint(unsigned want, json_t *v, char *out, size_t cap)
{
    out[0] = '\0';
    if (json_is_string(v) && json_string_length(v) <= 4096) {
        json_t *inner = json_loadb(json_string_value(v), json_string_length(v), JSON_DECODE_ANY, NULL);
        if (inner && (types_of(inner) & want)) {
            if (json_is_object(inner) || json_is_array(inner)) {
                snprintf(out, cap, " (send the %s itself, not a JSON-encoded string)", kind_name(inner));
            } else {
                char text[64];
                value_text(inner, text, sizeof text);
                snprintf(out, cap, " (write it without quotes: %s)", text);
            }
        }
        json_decref(inner);
        if (out[0])
            return;
    }
    if ((want & TY_STRING) && (json_is_number(v) || json_is_boolean(v))) {
        char text[64];
        value_text(v, text, sizeof text);
        snprintf(out, cap, " (put it in quotes: \"%s\")", text);
    } else if ((want & TY_ARRAY) && !json_is_object(v) && !json_is_array(v) && !json_is_null(v)) {
        char text[80];
        value_text(v, text, sizeof text);
        snprintf(out, cap, " (for a single item, wrap it in an array: [%s])", text);
    }
}

static COLD void
report_type(vctx_t *c, const node_t *n, const char *keyword, unsigned want, json_t *v)
{
    mcp_schema_error_t *e = new_error(c, n, keyword);
    if (!e)
        return;
    char expected[80], got[SHOW * 2 + 32], hint[140];
    types_text(want, expected, sizeof expected);
    describe(v, got, sizeof got);
    type_hint(want, v, hint, sizeof hint);
    say(e, "expected %s, got %s%s", expected, got, hint);
}

/* ---- validation: keywords by instance type ---- */

static const prop_t *
find_prop(const node_t *n, const char *key)
{
    size_t lo = 0, hi = n->n_props;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(key, n->props[mid].name);
        if (cmp == 0)
            return &n->props[mid];
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* Validates v, member `key` (or item `index` when key is NULL) of the current value, with n. */
static void
descend(vctx_t *c, const node_t *n, const char *key, size_t index, json_t *v)
{
    if (n->kind == NODE_TRUE)
        return;
    c->segs[c->nseg] = (seg_t){ .key = key, .index = index };
    c->nseg++;
    if (c->nseg > MCP_SCHEMA_MAX_DEPTH) {
        mcp_schema_error_t *e = new_error(c, n, "depth");
        if (e)
            say(e, "nested more than %d levels deep", MCP_SCHEMA_MAX_DEPTH);
    } else if (n->kind == NODE_FALSE && key) {
        mcp_schema_error_t *e = new_error(c, n, "false");
        char q[SHOW * 2 + 16];
        if (e) {
            quote_str(q, sizeof q, key);
            say(e, "property %s is not allowed here", q);
        }
    } else {
        validate_node(c, n, v);
    }
    c->nseg--;
}

/* Whether key is matched by patternProperties; a regex over its budget counts as no match. */
static bool
pattern_prop_matches(const vctx_t *c, const pattern_prop_t *pp, const char *key)
{
    return regex_match(c->s, pp->re, key, strlen(key)) == 1;
}

static bool
declared(const vctx_t *c, const node_t *n, const char *key)
{
    if (find_prop(n, key))
        return true;
    for (size_t i = 0; i < n->n_pprops; i++)
        if (pattern_prop_matches(c, &n->pprops[i], key))
            return true;
    return false;
}

/* The declared property nearest to `key` that the object does not have yet. */
static const char *
suggest_property(const node_t *n, json_t *o, const char *key)
{
    const char *best = NULL;
    int best_score = 0;
    const char *name;
    json_t *sub;
    json_object_foreach(n->properties, name, sub)
    {
        if (!json_object_get(o, name))
            suggest_consider(key, name, &best, &best_score);
    }
    return best;
}

/* "\"a\", \"b\" or \"c\"" from the names of `properties`, cut when long. */
static void
names_text(json_t *properties, char *out, size_t cap)
{
    size_t total = json_object_size(properties), seen = 0, o = 0;
    const char *name;
    json_t *sub;
    out[0] = '\0';
    json_object_foreach(properties, name, sub)
    {
        char q[80];
        quote_str(q, sizeof q, name);
        const char *sep = seen == 0 ? "" : seen + 1 == total ? " or " : ", ";
        int n = snprintf(out + o, cap - o, "%s%s", sep, q);
        if (n < 0 || (size_t)n >= cap - o - 16) {
            snprintf(out + o, cap - o, ", ... (%zu in all)", total);
            return;
        }
        o += (size_t)n;
        seen++;
    }
}

/* additionalProperties: false. Unknown properties first: an invented name is the most common
 * mistake. Records in folded[] the properties they suggest, which then need no error of their own. */
static COLD void
report_unknown(vctx_t *c, const node_t *n, json_t *o, const char **folded, size_t *n_folded)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        if (declared(c, n, key))
            continue;
        mcp_schema_error_t *e = new_error_at(c, n, "additionalProperties", key);
        if (e) {
            char q[SHOW * 2 + 16], list[200];
            quote_str(q, sizeof q, key);
            const char *near = suggest_property(n, o, key);
            if (near) {
                e->suggestion = near;
                say(e, "unknown property %s (did you mean \"%s\"?)", q, near);
                if (*n_folded < FOLD_MAX)
                    folded[(*n_folded)++] = near;
            } else if (json_object_size(n->properties) > 0) {
                names_text(n->properties, list, sizeof list);
                say(e, "unknown property %s; expected %s%s", q, list,
                    n->n_pprops ? " or a name matching patternProperties" : "");
            } else {
                say(e, "unknown property %s; this object takes no properties%s", q,
                    n->n_pprops ? " but those matching patternProperties" : "");
            }
        }
        if (done(c))
            return;
    }
}

/* An undeclared member of o that looks like a misspelling of `name`. */
static const char *
misspelt_as(const vctx_t *c, const node_t *n, json_t *o, const char *name)
{
    const char *best = NULL;
    int best_score = 0;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        if (!declared(c, n, key))
            suggest_consider(name, key, &best, &best_score);
    }
    return best;
}

static COLD void
report_missing(vctx_t *c, const node_t *n, json_t *o, const char *const *folded, size_t n_folded)
{
    size_t i;
    json_t *r;
    json_array_foreach(n->required, i, r)
    {
        const char *name = json_string_value(r);
        if (json_object_get(o, name))
            continue;
        bool fold = false;
        for (size_t f = 0; f < n_folded && !fold; f++)
            fold = strcmp(folded[f], name) == 0;
        if (fold)
            continue;
        mcp_schema_error_t *e = new_error_at(c, n, "required", name);
        if (e) {
            char q[SHOW * 2 + 16], k[SHOW * 2 + 16];
            quote_str(q, sizeof q, name);
            const char *near = misspelt_as(c, n, o, name);
            if (near) {
                quote_str(k, sizeof k, near);
                say(e, "missing required property %s (%s was given; rename it to %s)", q, k, q);
            } else {
                say(e, "missing required property %s", q);
            }
        }
        if (done(c))
            return;
    }
}

/* minItems, maxItems, minProperties, maxProperties: "must have at least 2 items, got 1". */
static COLD void
report_count(vctx_t *c, const node_t *n, const char *keyword, const char *relation, size_t bound, const char *one,
             const char *many, size_t size)
{
    mcp_schema_error_t *e = new_error(c, n, keyword);
    if (e)
        say(e, "must have %s %zu %s, got %zu", relation, bound, bound == 1 ? one : many, size);
}

static COLD void
report_property_name(vctx_t *c, const node_t *n, const char *key, json_t *name)
{
    mcp_schema_error_t *e = new_error_at(c, n, "propertyNames", key);
    if (!e)
        return;
    /* the first reason, from a sub-context that stores one error */
    mcp_schema_error_t *why = tp_malloc(sizeof *why);
    vctx_t sub = *c;
    sub.errs = why;
    sub.max = 1;
    sub.count = 0;
    sub.limit = 1;
    validate_node(&sub, n->property_names, name);
    char q[SHOW * 2 + 16];
    quote_str(q, sizeof q, key);
    say(e, "property name %s is not allowed: %s", q, why->message);
    free(why);
}

/* propertyNames: the name as a JSON string (the only allocation on the way of a valid value). */
static void
validate_property_name(vctx_t *c, const node_t *n, const char *key)
{
    json_t *name = json_string(key);
    if (!name)
        tp_fatal("out of memory");
    if (!probe(c, n->property_names, name))
        report_property_name(c, n, key, name);
    json_decref(name);
}

static COLD void
report_dependency(vctx_t *c, const node_t *n, const char *name, const char *because)
{
    mcp_schema_error_t *e = new_error_at(c, n, "dependentRequired", name);
    if (!e)
        return;
    char q[SHOW * 2 + 16], b[SHOW * 2 + 16];
    quote_str(q, sizeof q, name);
    quote_str(b, sizeof b, because);
    say(e, "property %s is required when %s is given", q, b);
}

static void
validate_dependencies(vctx_t *c, const node_t *n, json_t *o)
{
    for (size_t d = 0; d < n->n_deps; d++) {
        const dep_t *dep = &n->deps[d];
        if (!json_object_get(o, dep->name))
            continue;
        size_t i;
        json_t *r;
        json_array_foreach(dep->required, i, r)
        {
            const char *name = json_string_value(r);
            if (json_object_get(o, name))
                continue;
            report_dependency(c, n, name, dep->name);
            if (done(c))
                return;
        }
        if (dep->schema) {
            validate_node(c, dep->schema, o);
            if (done(c))
                return;
        }
    }
}

static void
validate_object(vctx_t *c, const node_t *n, json_t *o)
{
    const char *folded[FOLD_MAX];
    size_t n_folded = 0;
    if (n->additional && n->additional->kind == NODE_FALSE) {
        report_unknown(c, n, o, folded, &n_folded);
        if (done(c))
            return;
    }
    if (n->required) {
        report_missing(c, n, o, folded, n_folded);
        if (done(c))
            return;
    }
    if (n->n_props || n->n_pprops || n->additional || n->property_names) {
        const char *key;
        json_t *v;
        json_object_foreach(o, key, v)
        {
            const prop_t *p = find_prop(n, key);
            bool matched = p != NULL;
            if (p)
                descend(c, p->schema, key, 0, v);
            for (size_t i = 0; i < n->n_pprops && !done(c); i++) {
                int m = regex_match(c->s, n->pprops[i].re, key, strlen(key));
                if (m < 0) {
                    mcp_schema_error_t *e = new_error_at(c, n, "patternProperties", key);
                    if (e)
                        say(e,
                            "the name could not be checked against the pattern \"%s\": it needs too much "
                            "backtracking",
                            n->pprops[i].source);
                } else if (m) {
                    matched = true;
                    descend(c, n->pprops[i].schema, key, 0, v);
                }
            }
            if (!matched && n->additional && n->additional->kind != NODE_FALSE && !done(c))
                descend(c, n->additional, key, 0, v);
            if (n->property_names && !done(c))
                validate_property_name(c, n, key);
            if (done(c))
                return;
        }
    }
    size_t size = json_object_size(o);
    if (size < n->min_props)
        report_count(c, n, "minProperties", "at least", n->min_props, "property", "properties", size);
    else if (size > n->max_props)
        report_count(c, n, "maxProperties", "at most", n->max_props, "property", "properties", size);
    if (!done(c) && n->n_deps)
        validate_dependencies(c, n, o);
}

static int
cmp_hashed(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b; /* [hash, index] pairs */
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

/* The first pair of equal items (i < j), or false. Small arrays are compared pairwise; larger ones
 * by hash, so a long array cannot make this quadratic. */
static bool
find_duplicate(json_t *a, size_t *first, size_t *second)
{
    size_t n = json_array_size(a);
    if (n <= 16) {
        for (size_t j = 1; j < n; j++)
            for (size_t i = 0; i < j; i++)
                if (json_eq(json_array_get(a, i), json_array_get(a, j))) {
                    *first = i;
                    *second = j;
                    return true;
                }
        return false;
    }
    uint64_t(*h)[2] = tp_malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) {
        h[i][0] = json_hash(json_array_get(a, i));
        h[i][1] = i;
    }
    qsort(h, n, sizeof *h, cmp_hashed);
    bool found = false;
    for (size_t start = 0, end; start < n; start = end) {
        for (end = start + 1; end < n && h[end][0] == h[start][0]; end++)
            ;
        /* a run of equal hashes, by index: its first equal pair has the smallest second index */
        bool in_run = false;
        for (size_t l = start + 1; l < end && !in_run; l++) {
            for (size_t k = start; k < l && !in_run; k++) {
                size_t i = (size_t)h[k][1], j = (size_t)h[l][1];
                if (json_eq(json_array_get(a, i), json_array_get(a, j))) {
                    in_run = true;
                    if (!found || j < *second) {
                        found = true;
                        *first = i;
                        *second = j;
                    }
                }
            }
        }
    }
    free(h);
    return found;
}

static void
validate_contains(vctx_t *c, const node_t *n, json_t *a)
{
    size_t matches = 0, i;
    json_t *item;
    json_array_foreach(a, i, item)
    {
        if (probe(c, n->contains, item))
            matches++;
        if (matches > n->max_contains || (matches >= n->min_contains && n->max_contains == SIZE_MAX))
            break;
    }
    if (matches < n->min_contains) {
        mcp_schema_error_t *e = new_error(c, n, n->min_contains == 1 ? "contains" : "minContains");
        if (e && matches == 0)
            say(e, "must contain at least %zu item%s matching the \"contains\" schema, got none", n->min_contains,
                n->min_contains == 1 ? "" : "s");
        else if (e)
            say(e, "must contain at least %zu items matching the \"contains\" schema, got %zu", n->min_contains,
                matches);
    } else if (matches > n->max_contains) {
        mcp_schema_error_t *e = new_error(c, n, "maxContains");
        if (e)
            say(e, "must contain at most %zu item%s matching the \"contains\" schema", n->max_contains,
                n->max_contains == 1 ? "" : "s");
    }
}

static void
validate_array(vctx_t *c, const node_t *n, json_t *a)
{
    size_t size = json_array_size(a);
    if (size < n->min_items)
        report_count(c, n, "minItems", "at least", n->min_items, "item", "items", size);
    else if (size > n->max_items)
        report_count(c, n, "maxItems", "at most", n->max_items, "item", "items", size);
    if (done(c))
        return;
    for (size_t i = 0; i < size; i++) {
        const node_t *item = i < n->n_prefix ? n->prefix[i] : n->items;
        if (!item)
            break;
        if (i >= n->n_prefix && item->kind == NODE_FALSE) {
            c->segs[c->nseg++] = (seg_t){ .index = i };
            mcp_schema_error_t *e = new_error(c, n, n->items_keyword);
            c->nseg--;
            if (e)
                say(e, "unexpected item: at most %zu item%s allowed here, got %zu", n->n_prefix,
                    n->n_prefix == 1 ? " is" : "s are", size);
            break;
        }
        descend(c, item, NULL, i, json_array_get(a, i));
        if (done(c))
            return;
    }
    size_t i = 0, j = 0;
    if (n->unique && size > 1 && find_duplicate(a, &i, &j)) {
        mcp_schema_error_t *e = new_error(c, n, "uniqueItems");
        if (e)
            say(e, "items %zu and %zu are equal; every item must be unique", i, j);
        if (done(c))
            return;
    }
    if (n->contains)
        validate_contains(c, n, a);
}

/* Refuses string v for pattern (m == 0: no match, else over budget) or format (m unused). */
static COLD void
report_string(vctx_t *c, const node_t *n, const char *keyword, json_t *v, int m)
{
    mcp_schema_error_t *e = new_error(c, n, keyword);
    if (!e)
        return;
    char q[SHOW * 2 + 16], p[SHOW * 2 + 16];
    quote(q, sizeof q, json_string_value(v), json_string_length(v), SHOW);
    if (strcmp(keyword, "format") == 0) {
        say(e, "%s is not a valid %s; expected %s", q, n->format->name, n->format->expect);
        return;
    }
    quote_str(p, sizeof p, n->pattern_text);
    if (m == 0)
        say(e, "%s does not match the pattern %s", q, p);
    else
        say(e, "%s could not be checked against the pattern %s: it needs too much backtracking", q, p);
}

static COLD void
report_length(vctx_t *c, const node_t *n, size_t cps)
{
    bool too_short = cps < n->min_length;
    mcp_schema_error_t *e = new_error(c, n, too_short ? "minLength" : "maxLength");
    size_t bound = too_short ? n->min_length : n->max_length;
    if (e)
        say(e, "must be at %s %zu character%s long, got %zu", too_short ? "least" : "most", bound,
            bound == 1 ? "" : "s", cps);
}

static void
validate_string(vctx_t *c, const node_t *n, json_t *v)
{
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    /* a string of len bytes holds between len / 4 and len code points */
    if ((len + 3) / 4 < n->min_length || (n->max_length != SIZE_MAX && len > n->max_length)) {
        size_t cps = utf8_count(s, len);
        if (cps < n->min_length || cps > n->max_length) {
            report_length(c, n, cps);
            if (done(c))
                return;
        }
    }
    if (n->pattern) {
        int m = regex_match(c->s, n->pattern, s, len);
        if (m != 1) {
            report_string(c, n, "pattern", v, m);
            if (done(c))
                return;
        }
    }
    if (n->format && (memchr(s, '\0', len) || !n->format->check(s, len)))
        report_string(c, n, "format", v, 0);
}

static COLD void
report_bound(vctx_t *c, const node_t *n, const char *keyword, const char *op, num_t bound, num_t x)
{
    mcp_schema_error_t *e = new_error(c, n, keyword);
    if (!e)
        return;
    char b[40], v[40];
    num_text(bound, b, sizeof b);
    num_text(x, v, sizeof v);
    say(e, "must be %s %s, got %s", op, b, v);
}

static void
validate_number(vctx_t *c, const node_t *n, json_t *v)
{
    if (!n->nums)
        return;
    num_t x = num_of(v);
    if ((n->nums & HAS_MIN) && num_cmp(x, n->minimum) < 0)
        report_bound(c, n, "minimum", ">=", n->minimum, x);
    if ((n->nums & HAS_XMIN) && num_cmp(x, n->xminimum) <= 0)
        report_bound(c, n, "exclusiveMinimum", ">", n->xminimum, x);
    if ((n->nums & HAS_MAX) && num_cmp(x, n->maximum) > 0)
        report_bound(c, n, "maximum", "<=", n->maximum, x);
    if ((n->nums & HAS_XMAX) && num_cmp(x, n->xmaximum) >= 0)
        report_bound(c, n, "exclusiveMaximum", "<", n->xmaximum, x);
    if ((n->nums & HAS_MULT) && !multiple_of(x, n->multiple_of))
        report_bound(c, n, "multipleOf", "a multiple of", n->multiple_of, x);
}

/* ---- validation: enum, const, combinators ---- */

/* "\"a\", \"b\" or \"c\"" from the values of an enum, cut when long. */
static void
values_text(json_t *values, char *out, size_t cap)
{
    size_t total = json_array_size(values), o = 0, i;
    json_t *x;
    out[0] = '\0';
    json_array_foreach(values, i, x)
    {
        char t[64];
        value_text(x, t, sizeof t);
        const char *sep = i == 0 ? "" : i + 1 == total ? " or " : ", ";
        int w = snprintf(out + o, cap - o, "%s%s", sep, t);
        if (w < 0 || (size_t)w >= cap - o - 20) {
            snprintf(out + o, cap - o, ", ... (%zu in all)", total);
            return;
        }
        o += (size_t)w;
    }
}

static COLD void
report_enum(vctx_t *c, const node_t *n, json_t *v)
{
    mcp_schema_error_t *e = new_error(c, n, "enum");
    if (!e)
        return;
    char list[200], got[SHOW * 2 + 32], sugg[SHOW * 2 + 32] = "";
    const char *best = NULL;
    int best_score = 0;
    size_t i;
    json_t *x;
    if (json_is_string(v)) {
        json_array_foreach(n->enum_values, i, x)
        {
            if (json_is_string(x))
                suggest_consider(json_string_value(v), json_string_value(x), &best, &best_score);
        }
    }
    values_text(n->enum_values, list, sizeof list);
    value_text(v, got, sizeof got);
    if (best) {
        e->suggestion = best;
        quote_str(sugg, sizeof sugg, best);
        say(e, "expected %s%s, got %s (did you mean %s?)", json_array_size(n->enum_values) == 1 ? "" : "one of ", list,
            got, sugg);
    } else {
        say(e, "expected %s%s, got %s", json_array_size(n->enum_values) == 1 ? "" : "one of ", list, got);
    }
}

static COLD void
report_const(vctx_t *c, const node_t *n, json_t *v)
{
    mcp_schema_error_t *e = new_error(c, n, "const");
    if (!e)
        return;
    char want[120], got[SHOW * 2 + 32];
    value_text(n->const_value, want, sizeof want);
    value_text(v, got, sizeof got);
    say(e, "expected %s, got %s", want, got);
}

/* The types an alternative accepts, looking through $refs: for "expected string or null". */
static unsigned
accepted_types(const node_t *n)
{
    for (int hops = 0; n && hops < 16; hops++, n = n->ref) {
        if (n->kind != NODE_SCHEMA)
            return 0;
        if (n->types)
            return n->types;
    }
    return 0;
}

/* Every alternative of an anyOf/oneOf failed and the error will be shown: runs each again,
 * storing its errors, to say the most useful thing. The errors of the first alternative that
 * accepts this kind of value are kept, so when it is the only one they are the answer without a
 * third run: a nested anyOf would otherwise cost twice as much per level. */
static COLD void
explain_no_match(vctx_t *c, const node_t *n, json_t *v, node_t *const *alts, size_t count, const char *keyword)
{
    size_t room = c->max - c->count, want = c->limit - c->count;
    assert(room > 0); /* only called while storing */
    mcp_schema_error_t *cur = tp_malloc(room * sizeof *cur), *kept = tp_malloc(room * sizeof *kept);
    mcp_schema_error_t *best = tp_malloc(sizeof *best);
    char *here = tp_malloc(MCP_SCHEMA_PATH_MAX);
    render_path(c->segs, c->nseg, here, MCP_SCHEMA_PATH_MAX);
    size_t best_i = SIZE_MAX, best_count = 0, best_depth = 0, accepting = 0, kept_count = 0, kept_depth = 0;
    unsigned kinds = 0;
    for (size_t i = 0; i < count; i++) {
        vctx_t sub = *c;
        sub.errs = cur;
        sub.max = room;
        sub.count = 0;
        sub.limit = want > PROBE_LIMIT ? want : PROBE_LIMIT;
        validate_node(&sub, alts[i], v);
        if (sub.count == 0)
            continue;
        /* an alternative refusing this kind of value at this very place (a type, a false schema)
         * is not a near miss */
        bool wrong_kind =
            sub.first_nseg == c->nseg && (strcmp(cur->keyword, "type") == 0 || strcmp(cur->keyword, "false") == 0 ||
                                          strcmp(cur->keyword, "not") == 0);
        if (wrong_kind) {
            kinds |= accepted_types(alts[i]);
            continue;
        }
        const mcp_schema_error_t *first = cur;
        if (++accepting == 1) {
            mcp_schema_error_t *t = kept;
            kept = cur;
            cur = t;
            kept_count = sub.count;
            kept_depth = sub.first_nseg;
            first = kept;
        }
        /* the closest: the fewest errors, then the one that got deepest into the value */
        if (best_i == SIZE_MAX || sub.count < best_count || (sub.count == best_count && sub.first_nseg > best_depth)) {
            *best = *first;
            best_i = i;
            best_count = sub.count;
            best_depth = sub.first_nseg;
        }
    }
    if (accepting == 1) {
        /* as if the others were not there: a nullable object reports the object's errors */
        memcpy(&c->errs[c->count], kept, (kept_count < room ? kept_count : room) * sizeof *kept);
        if (c->count == 0)
            c->first_nseg = kept_depth;
        c->count += kept_count;
    } else {
        mcp_schema_error_t *e = new_error(c, n, accepting == 0 && kinds ? "type" : keyword);
        if (accepting == 0 && kinds) {
            char expected[80], got[SHOW * 2 + 32], hint[140];
            types_text(kinds, expected, sizeof expected);
            describe(v, got, sizeof got);
            type_hint(kinds, v, hint, sizeof hint);
            say(e, "expected %s, got %s%s", expected, got, hint);
        } else if (accepting == 0) {
            char got[SHOW * 2 + 32];
            describe(v, got, sizeof got);
            say(e, "matches none of the %zu alternatives of %s, got %s", count, keyword, got);
        } else {
            size_t skip = strlen(here);
            const char *rel = strlen(best->path) > skip ? best->path + skip : "";
            if (*rel == '.')
                rel++;
            e->suggestion = best->suggestion;
            say(e, "matches none of the %zu alternatives; closest is %s[%zu]%s%s: %s", count, keyword, best_i,
                *rel ? " at " : "", rel, best->message);
        }
    }
    free(here);
    free(best);
    free(kept);
    free(cur);
}

static void
validate_alternatives(vctx_t *c, const node_t *n, json_t *v, node_t *const *alts, size_t count, bool one)
{
    size_t matched = 0, first = 0, second = 0;
    for (size_t i = 0; i < count; i++) {
        if (!probe(c, alts[i], v))
            continue;
        if (matched++ == 0)
            first = i;
        else
            second = i;
        if (!one || matched == 2)
            break;
    }
    if (one ? matched == 1 : matched > 0)
        return;
    if (!storing(c)) {
        c->count++;
        return;
    }
    if (matched == 0) {
        explain_no_match(c, n, v, alts, count, one ? "oneOf" : "anyOf");
        return;
    }
    mcp_schema_error_t *e = new_error(c, n, "oneOf");
    say(e, "matches both oneOf[%zu] and oneOf[%zu]; it must match exactly one of the %zu alternatives", first, second,
        count);
}

static void
validate_keywords(vctx_t *c, const node_t *n, json_t *v)
{
    if (n->types && !(n->types & types_of(v))) {
        report_type(c, n, "type", n->types, v);
        return; /* the other keywords would only repeat it */
    }
    if (n->ref) {
        validate_node(c, n->ref, v);
        if (done(c))
            return;
    }
    if (n->const_value && !json_eq(n->const_value, v)) {
        report_const(c, n, v);
        if (done(c))
            return;
    }
    if (n->enum_values) {
        size_t i;
        json_t *x;
        bool found = false;
        json_array_foreach(n->enum_values, i, x)
        {
            if ((found = json_eq(x, v)))
                break;
        }
        if (!found)
            report_enum(c, n, v);
        if (done(c))
            return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        validate_object(c, n, v);
        break;
    case JSON_ARRAY:
        validate_array(c, n, v);
        break;
    case JSON_STRING:
        validate_string(c, n, v);
        break;
    case JSON_INTEGER:
    case JSON_REAL:
        validate_number(c, n, v);
        break;
    default:
        break;
    }
    for (size_t i = 0; i < n->n_all && !done(c); i++)
        validate_node(c, n->all_of[i], v);
    if (n->n_any && !done(c))
        validate_alternatives(c, n, v, n->any_of, n->n_any, false);
    if (n->n_one && !done(c))
        validate_alternatives(c, n, v, n->one_of, n->n_one, true);
    if (n->not_ && !done(c) && probe(c, n->not_, v)) {
        mcp_schema_error_t *e = new_error(c, n, "not");
        bool never = n->not_->kind == NODE_TRUE || json_object_size(n->not_->json) == 0;
        if (e)
            say(e, never ? "no value is allowed here" : "must not match the schema in \"not\"");
    }
    if (n->if_ && !done(c)) {
        const node_t *branch = probe(c, n->if_, v) ? n->then_ : n->else_;
        if (branch)
            validate_node(c, branch, v);
    }
}

static void
validate_node(vctx_t *c, const node_t *n, json_t *v)
{
    if (n->kind == NODE_TRUE)
        return;
    if (n->kind == NODE_FALSE) {
        mcp_schema_error_t *e = new_error(c, n, "false");
        if (e)
            say(e, "no value is allowed here");
        return;
    }
    if (++*c->steps > MAX_STEPS) {
        mcp_schema_error_t *e = new_error(c, n, "complexity"); /* mcp_schema_validate() reports it again */
        if (e)
            say(e, "the value is too complex to check against this schema");
        return;
    }
    if (c->frames >= MAX_FRAMES) {
        mcp_schema_error_t *e = new_error(c, n, "depth");
        if (e)
            say(e, "the schema nests too deeply to check this value");
        return;
    }
    c->frames++;
    validate_keywords(c, n, v);
    c->frames--;
}

bool
mcp_schema_validate(const mcp_schema_t *s, const json_t *instance, mcp_schema_error_t *errors, size_t max,
                    size_t *count)
{
    assert(s && instance && (errors || max == 0));
    seg_t segs[MCP_SCHEMA_MAX_DEPTH + 1];
    size_t steps = 0;
    vctx_t c = { .s = s, .errs = errors, .max = max, .limit = max ? max : 1, .segs = segs, .steps = &steps };
    /* jansson's iteration API takes non-const pointers; nothing below modifies the value */
    validate_node(&c, s->entry, (json_t *)instance);
    if (steps > MAX_STEPS) {
        /* what was found so far may be wrong: a probe cut short fails, so a "not" would pass */
        c.count = 1;
        if (max > 0) {
            mcp_schema_error_t *e = &errors[0];
            *e = (mcp_schema_error_t){ .keyword = "complexity", .schema = s->entry->json };
            say(e, "the value is too complex to check against this schema (more than %d steps)", MAX_STEPS);
        }
    }
    if (count)
        *count = c.count < c.max ? c.count : c.max;
    return c.count == 0;
}

/* ---- compiling ---- */

/* Nodes by the json_t they were compiled from: open addressing, keys never removed. */
typedef struct ptrmap {
    json_t **keys;
    node_t **vals;
    size_t cap, count; /* cap: a power of two, or 0 */
} ptrmap_t;

typedef struct resource {
    char *id; /* the absolute $id, without fragment (owned) */
    json_t *json;
} resource_t;

typedef struct anchor {
    const char *name; /* borrowed from the schema */
    json_t *json;
    json_t *resource;
} anchor_t;

/* Where references in a subschema resolve: the nearest enclosing schema with an $id. */
typedef struct scope {
    json_t *resource;
    const char *base; /* its absolute $id, or NULL for a document without one */
} scope_t;

typedef struct pending_ref {
    node_t *node;
    scope_t scope;
} pending_ref_t;

typedef struct cctx {
    mcp_schema_t *s;
    char *err;             /* the first error */
    char where[WHERE_MAX]; /* JSON pointer of what is being compiled: "#/properties/a" */
    size_t len;
    unsigned depth;
    ptrmap_t map;
    pending_ref_t *refs;
    size_t n_refs, cap_refs;
    resource_t *res;
    size_t n_res, cap_res;
    anchor_t *anchors;
    size_t n_anchors, cap_anchors;
    pcre2_compile_context *ccontext;
} cctx_t;

static size_t
ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x;
}

static node_t *
map_get(const ptrmap_t *m, const json_t *k)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = ptr_hash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == k)
            return m->vals[i];
        if (!m->keys[i])
            return NULL;
    }
}

static void map_put(ptrmap_t *m, json_t *k, node_t *v);

static void
map_grow(ptrmap_t *m)
{
    ptrmap_t old = *m;
    m->cap = old.cap ? old.cap * 2 : 64;
    m->count = 0;
    m->keys = tp_calloc(m->cap, sizeof *m->keys);
    m->vals = tp_calloc(m->cap, sizeof *m->vals);
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i])
            map_put(m, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
}

static void
map_put(ptrmap_t *m, json_t *k, node_t *v)
{
    if ((m->count + 1) * 2 > m->cap)
        map_grow(m);
    size_t i = ptr_hash(k) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != k)
        i = (i + 1) & (m->cap - 1);
    m->count += !m->keys[i];
    m->keys[i] = k;
    m->vals[i] = v;
}

static void *cfail(cctx_t *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records "<where>: <message>" as the compile error, unless one is already recorded; returns NULL. */
static void *
cfail(cctx_t *cc, const char *fmt, ...)
{
    if (cc->err)
        return NULL;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cc->err = tp_sprintf("%s: %s", cc->where, msg);
    return NULL;
}

/* Appends "/token" (JSON pointer escaped) to cc->where; returns the length to restore. */
static size_t
where_push(cctx_t *cc, const char *token)
{
    size_t saved = cc->len;
    char *w = cc->where;
    if (cc->len + 1 < sizeof cc->where)
        w[cc->len++] = '/';
    for (const char *p = token; *p; p++) {
        const char *esc = *p == '~' ? "~0" : *p == '/' ? "~1" : NULL;
        size_t n = esc ? 2 : 1;
        if (cc->len + n >= sizeof cc->where)
            break;
        memcpy(w + cc->len, esc ? esc : p, n);
        cc->len += n;
    }
    w[cc->len] = '\0';
    utf8_trim(w, cc->len);
    cc->len = strlen(w);
    return saved;
}

static size_t
where_index(cctx_t *cc, size_t i)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%zu", i);
    return where_push(cc, buf);
}

static void
where_pop(cctx_t *cc, size_t saved)
{
    cc->len = saved;
    cc->where[saved] = '\0';
}

static node_t *compile(cctx_t *cc, json_t *json, const scope_t *scope);

static node_t *
compile_at(cctx_t *cc, json_t *json, const scope_t *scope, const char *key)
{
    size_t saved = where_push(cc, key);
    node_t *n = compile(cc, json, scope);
    if (n)
        where_pop(cc, saved);
    return n;
}

/* A non-negative integer keyword (2.0 allowed), left unchanged when absent. */
static bool
get_count(cctx_t *cc, json_t *schema, const char *kw, size_t *out)
{
    json_t *v = json_object_get(schema, kw);
    if (!v)
        return true;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (size_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v) && is_whole(json_real_value(v)) && json_real_value(v) >= 0 && json_real_value(v) < 9e18) {
        *out = (size_t)json_real_value(v);
        return true;
    }
    where_push(cc, kw);
    cfail(cc, "must be a non-negative integer, got %s", kind_name(v));
    return false;
}

static bool
get_number(cctx_t *cc, json_t *schema, const char *kw, num_t *out, unsigned *flags, unsigned flag)
{
    json_t *v = json_object_get(schema, kw);
    if (!v)
        return true;
    if (!json_is_number(v)) {
        where_push(cc, kw);
        cfail(cc, "must be a number, got %s", kind_name(v));
        return false;
    }
    *out = num_of(v);
    *flags |= flag;
    return true;
}

/* A keyword holding one schema; *out stays NULL when absent. */
static bool
get_schema(cctx_t *cc, json_t *schema, const char *kw, const scope_t *sc, node_t **out)
{
    json_t *v = json_object_get(schema, kw);
    if (!v)
        return true;
    *out = compile_at(cc, v, sc, kw);
    return *out != NULL;
}

/* A keyword holding a non-empty array of schemas. */
static bool
get_schema_list(cctx_t *cc, json_t *schema, const char *kw, const scope_t *sc, node_t ***out, size_t *n)
{
    json_t *v = json_object_get(schema, kw);
    if (!v)
        return true;
    size_t saved = where_push(cc, kw);
    if (!json_is_array(v) || json_array_size(v) == 0) {
        cfail(cc, "must be a non-empty array of schemas, got %s%s", json_is_array(v) ? "an empty " : "", kind_name(v));
        return false;
    }
    *n = json_array_size(v);
    *out = tp_calloc(*n, sizeof **out);
    for (size_t i = 0; i < *n; i++) {
        size_t at = where_index(cc, i);
        if (!((*out)[i] = compile(cc, json_array_get(v, i), sc)))
            return false;
        where_pop(cc, at);
    }
    where_pop(cc, saved);
    return true;
}

/* A keyword holding an object; NULL when absent, and an error when it is not an object. */
static json_t *
get_object(cctx_t *cc, json_t *schema, const char *kw, bool *ok)
{
    json_t *v = json_object_get(schema, kw);
    *ok = true;
    if (v && !json_is_object(v)) {
        where_push(cc, kw);
        cfail(cc, "must be an object, got %s", kind_name(v));
        *ok = false;
        return NULL;
    }
    return v;
}

/* An array of property names. */
static bool
check_names(cctx_t *cc, json_t *v, const char *kw)
{
    size_t saved = where_push(cc, kw), i;
    json_t *x;
    if (!json_is_array(v)) {
        cfail(cc, "must be an array of property names, got %s", kind_name(v));
        return false;
    }
    json_array_foreach(v, i, x)
    {
        if (!json_is_string(x)) {
            where_index(cc, i);
            cfail(cc, "must be a property name (a string), got %s", kind_name(x));
            return false;
        }
    }
    where_pop(cc, saved);
    return true;
}

static pcre2_code *
compile_regex(cctx_t *cc, const char *src)
{
    int code;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_ALLOW_EMPTY_CLASS | PCRE2_ALT_BSUX;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, opts, &code, &off, cc->ccontext);
    if (!re) {
        PCRE2_UCHAR msg[160];
        char q[SHOW * 2 + 16];
        pcre2_get_error_message(code, msg, sizeof msg);
        quote_str(q, sizeof q, src);
        cfail(cc, "invalid regular expression %s at offset %zu: %s", q, (size_t)off, (const char *)msg);
    }
    return re;
}

static bool
compile_type(cctx_t *cc, node_t *n)
{
    json_t *t = json_object_get(n->json, "type");
    if (!t)
        return true;
    size_t saved = where_push(cc, "type");
    size_t count = json_is_array(t) ? json_array_size(t) : 1;
    if (!json_is_string(t) && !(json_is_array(t) && count > 0)) {
        cfail(cc, "must be a type name or a non-empty array of them, got %s", kind_name(t));
        return false;
    }
    for (size_t i = 0; i < count; i++) {
        const char *name = json_string_value(json_is_array(t) ? json_array_get(t, i) : t);
        size_t k = 0;
        while (name && k < sizeof type_names / sizeof type_names[0] && strcmp(name, type_names[k]) != 0)
            k++;
        if (name && k < sizeof type_names / sizeof type_names[0]) {
            n->types |= 1u << k;
            continue;
        }
        if (json_is_array(t))
            where_index(cc, i);
        const char *near = name ? mcp_suggest(name, type_names, sizeof type_names / sizeof type_names[0]) : NULL;
        if (!name)
            cfail(cc, "must be a type name, got %s", kind_name(json_array_get(t, i)));
        else if (near)
            cfail(cc, "unknown type \"%s\" (did you mean \"%s\"?)", name, near);
        else
            cfail(cc, "unknown type \"%s\"; the types are null, boolean, object, array, number, string, integer", name);
        return false;
    }
    where_pop(cc, saved);
    return true;
}

static void
add_ref(cctx_t *cc, node_t *n, const scope_t *sc)
{
    grow((void **)&cc->refs, &cc->cap_refs, cc->n_refs + 1, sizeof *cc->refs);
    cc->refs[cc->n_refs++] = (pending_ref_t){ .node = n, .scope = *sc };
}

static bool
compile_ref(cctx_t *cc, node_t *n, const scope_t *sc)
{
    static const char *const kws[] = { "$ref", "$dynamicRef", "$recursiveRef" };
    for (size_t i = 0; i < sizeof kws / sizeof kws[0]; i++) {
        json_t *r = json_object_get(n->json, kws[i]);
        if (!r)
            continue;
        size_t saved = where_push(cc, kws[i]);
        if (!json_is_string(r)) {
            cfail(cc, "must be a string, got %s", kind_name(r));
            return false;
        }
        n->ref_text = json_string_value(r);
        n->ref_where = tp_strdup(cc->where);
        where_pop(cc, saved);
        add_ref(cc, n, sc);
        return true;
    }
    return true;
}

static bool
compile_numbers(cctx_t *cc, node_t *n)
{
    json_t *j = n->json;
    if (!get_number(cc, j, "minimum", &n->minimum, &n->nums, HAS_MIN) ||
        !get_number(cc, j, "maximum", &n->maximum, &n->nums, HAS_MAX) ||
        !get_number(cc, j, "multipleOf", &n->multiple_of, &n->nums, HAS_MULT))
        return false;
    if ((n->nums & HAS_MULT) && n->multiple_of.d <= 0) {
        where_push(cc, "multipleOf");
        cfail(cc, "must be greater than 0");
        return false;
    }
    /* draft-04: a boolean that makes minimum/maximum exclusive; later drafts: a bound of its own */
    static const struct {
        const char *kw;
        unsigned plain, excl;
    } ex[] = { { "exclusiveMinimum", HAS_MIN, HAS_XMIN }, { "exclusiveMaximum", HAS_MAX, HAS_XMAX } };
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(j, ex[i].kw);
        num_t *plain = i == 0 ? &n->minimum : &n->maximum, *excl = i == 0 ? &n->xminimum : &n->xmaximum;
        if (json_is_true(v) && (n->nums & ex[i].plain)) {
            *excl = *plain;
            n->nums = (n->nums & ~ex[i].plain) | ex[i].excl;
        } else if (!json_is_boolean(v) && !get_number(cc, j, ex[i].kw, excl, &n->nums, ex[i].excl)) {
            return false;
        }
    }
    return true;
}

static bool
compile_strings(cctx_t *cc, node_t *n)
{
    json_t *j = n->json;
    if (!get_count(cc, j, "minLength", &n->min_length) || !get_count(cc, j, "maxLength", &n->max_length))
        return false;
    json_t *p = json_object_get(j, "pattern");
    if (p) {
        size_t saved = where_push(cc, "pattern");
        if (!json_is_string(p)) {
            cfail(cc, "must be a regular expression (a string), got %s", kind_name(p));
            return false;
        }
        n->pattern_text = json_string_value(p);
        if (!(n->pattern = compile_regex(cc, n->pattern_text)))
            return false;
        where_pop(cc, saved);
    }
    json_t *f = json_object_get(j, "format");
    if (f && !json_is_string(f)) {
        where_push(cc, "format");
        cfail(cc, "must be a string, got %s", kind_name(f));
        return false;
    }
    for (size_t i = 0; f && i < sizeof formats / sizeof formats[0]; i++)
        if (strcmp(json_string_value(f), formats[i].name) == 0)
            n->format = &formats[i];
    return true;
}

static bool
compile_arrays(cctx_t *cc, node_t *n, const scope_t *sc)
{
    json_t *j = n->json, *items = json_object_get(j, "items");
    n->items_keyword = "items";
    if (!get_schema_list(cc, j, "prefixItems", sc, &n->prefix, &n->n_prefix))
        return false;
    if (json_is_array(items)) { /* draft-07 tuple */
        if (n->prefix) {
            where_push(cc, "items");
            cfail(cc, "must be a schema when prefixItems is present, got array");
            return false;
        }
        size_t saved = where_push(cc, "items");
        n->n_prefix = json_array_size(items);
        n->prefix = tp_calloc(n->n_prefix, sizeof *n->prefix);
        for (size_t i = 0; i < n->n_prefix; i++) {
            size_t at = where_index(cc, i);
            if (!(n->prefix[i] = compile(cc, json_array_get(items, i), sc)))
                return false;
            where_pop(cc, at);
        }
        where_pop(cc, saved);
        n->items_keyword = "additionalItems";
        if (!get_schema(cc, j, "additionalItems", sc, &n->items))
            return false;
    } else if (!get_schema(cc, j, "items", sc, &n->items)) {
        return false;
    }
    json_t *u = json_object_get(j, "uniqueItems");
    if (u && !json_is_boolean(u)) {
        where_push(cc, "uniqueItems");
        cfail(cc, "must be a boolean, got %s", kind_name(u));
        return false;
    }
    n->unique = json_is_true(u);
    return get_count(cc, j, "minItems", &n->min_items) && get_count(cc, j, "maxItems", &n->max_items) &&
           get_schema(cc, j, "contains", sc, &n->contains) && get_count(cc, j, "minContains", &n->min_contains) &&
           get_count(cc, j, "maxContains", &n->max_contains);
}

static int
cmp_props(const void *a, const void *b)
{
    return strcmp(((const prop_t *)a)->name, ((const prop_t *)b)->name);
}

static bool
compile_properties(cctx_t *cc, node_t *n, const scope_t *sc)
{
    bool ok;
    json_t *props = get_object(cc, n->json, "properties", &ok);
    if (!props)
        return ok;
    size_t saved = where_push(cc, "properties");
    const char *key;
    json_t *v;
    n->properties = props;
    n->props = tp_calloc(json_object_size(props), sizeof *n->props);
    json_object_foreach(props, key, v)
    {
        prop_t *p = &n->props[n->n_props++];
        p->name = key;
        if (!(p->schema = compile_at(cc, v, sc, key)))
            return false;
    }
    qsort(n->props, n->n_props, sizeof *n->props, cmp_props);
    where_pop(cc, saved);
    return true;
}

static bool
compile_pattern_properties(cctx_t *cc, node_t *n, const scope_t *sc)
{
    bool ok;
    json_t *pp = get_object(cc, n->json, "patternProperties", &ok);
    if (!pp)
        return ok;
    size_t saved = where_push(cc, "patternProperties");
    const char *key;
    json_t *v;
    n->pprops = tp_calloc(json_object_size(pp), sizeof *n->pprops);
    json_object_foreach(pp, key, v)
    {
        pattern_prop_t *p = &n->pprops[n->n_pprops++];
        p->source = key;
        size_t at = where_push(cc, key);
        if (!(p->re = compile_regex(cc, key)) || !(p->schema = compile(cc, v, sc)))
            return false;
        where_pop(cc, at);
    }
    where_pop(cc, saved);
    return true;
}

/* dependentRequired, dependentSchemas, and draft-07 dependencies (which holds either). */
static bool
compile_dependencies(cctx_t *cc, node_t *n, const scope_t *sc)
{
    static const char *const kws[] = { "dependentRequired", "dependentSchemas", "dependencies" };
    for (size_t k = 0; k < 3; k++) {
        bool ok;
        json_t *deps = get_object(cc, n->json, kws[k], &ok);
        if (!deps) {
            if (!ok)
                return false;
            continue;
        }
        size_t saved = where_push(cc, kws[k]);
        const char *key;
        json_t *v;
        n->deps = tp_realloc(n->deps, (n->n_deps + json_object_size(deps)) * sizeof *n->deps);
        json_object_foreach(deps, key, v)
        {
            dep_t *d = &n->deps[n->n_deps++];
            *d = (dep_t){ .name = key };
            if (k == 0 || (k == 2 && json_is_array(v))) {
                if (!check_names(cc, v, key))
                    return false;
                d->required = v;
            } else if (!(d->schema = compile_at(cc, v, sc, key))) {
                return false;
            }
        }
        where_pop(cc, saved);
    }
    return true;
}

static bool
compile_objects(cctx_t *cc, node_t *n, const scope_t *sc)
{
    json_t *j = n->json, *req = json_object_get(j, "required");
    if (req && !check_names(cc, req, "required"))
        return false;
    n->required = req && json_array_size(req) ? req : NULL;
    return compile_properties(cc, n, sc) && compile_pattern_properties(cc, n, sc) &&
           get_schema(cc, j, "additionalProperties", sc, &n->additional) &&
           get_schema(cc, j, "propertyNames", sc, &n->property_names) &&
           get_count(cc, j, "minProperties", &n->min_props) && get_count(cc, j, "maxProperties", &n->max_props) &&
           compile_dependencies(cc, n, sc);
}

static bool
compile_values(cctx_t *cc, node_t *n)
{
    json_t *e = json_object_get(n->json, "enum");
    if (e && !json_is_array(e)) {
        where_push(cc, "enum");
        cfail(cc, "must be an array, got %s", kind_name(e));
        return false;
    }
    n->enum_values = e;
    n->const_value = json_object_get(n->json, "const");
    return true;
}

static bool
compile_applicators(cctx_t *cc, node_t *n, const scope_t *sc)
{
    json_t *j = n->json;
    if (!get_schema_list(cc, j, "allOf", sc, &n->all_of, &n->n_all) ||
        !get_schema_list(cc, j, "anyOf", sc, &n->any_of, &n->n_any) ||
        !get_schema_list(cc, j, "oneOf", sc, &n->one_of, &n->n_one) || !get_schema(cc, j, "not", sc, &n->not_) ||
        !get_schema(cc, j, "if", sc, &n->if_) || !get_schema(cc, j, "then", sc, &n->then_) ||
        !get_schema(cc, j, "else", sc, &n->else_))
        return false;
    /* $defs and definitions: compiled so that their errors show and $refs find them built */
    static const char *const defs[] = { "$defs", "definitions" };
    for (size_t k = 0; k < 2; k++) {
        bool ok;
        json_t *d = get_object(cc, j, defs[k], &ok);
        if (!ok)
            return false;
        size_t saved = where_push(cc, defs[k]);
        const char *key;
        json_t *v;
        json_object_foreach(d, key, v)
        {
            if (!compile_at(cc, v, sc, key))
                return false;
        }
        where_pop(cc, saved);
    }
    return true;
}

/* The absolute form of `ref` against `base` (RFC 3986 in its common cases: no dot segments),
 * without its fragment. Returns a malloc'd string. */
static char *
resolve_uri(const char *base, const char *ref, size_t ref_len)
{
    size_t i = 0;
    while (i < ref_len && (is_alnum(ref[i]) || in_set(ref[i], "+-.")))
        i++;
    bool absolute = i > 0 && i < ref_len && ref[i] == ':' && is_alpha(ref[0]);
    char *out;
    if (absolute || !base) {
        out = tp_strndup(ref, ref_len);
    } else if (ref_len == 0) {
        out = tp_strdup(base);
    } else {
        const char *scheme_end = strstr(base, "://");
        const char *path = scheme_end ? strchr(scheme_end + 3, '/') : strchr(base, '/');
        size_t keep;
        if (ref_len >= 2 && ref[0] == '/' && ref[1] == '/')
            keep = scheme_end ? (size_t)(scheme_end - base) + 1 : 0;
        else if (ref[0] == '/')
            keep = path ? (size_t)(path - base) : strlen(base);
        else
            keep = strrchr(base, '/') ? (size_t)(strrchr(base, '/') - base) + 1 : 0;
        out = tp_malloc(keep + ref_len + 1);
        memcpy(out, base, keep);
        memcpy(out + keep, ref, ref_len);
        out[keep + ref_len] = '\0';
    }
    char *hash = strchr(out, '#');
    if (hash)
        *hash = '\0';
    return out;
}

static bool
compile_ids(cctx_t *cc, node_t *n, scope_t *sc)
{
    json_t *j = n->json, *id = json_object_get(j, "$id");
    const char *ids = json_string_value(id);
    if (id && !ids) {
        where_push(cc, "$id");
        cfail(cc, "must be a string, got %s", kind_name(id));
        return false;
    }
    if (ids && ids[0] == '#') { /* draft-06/07 plain-name anchor */
        grow((void **)&cc->anchors, &cc->cap_anchors, cc->n_anchors + 1, sizeof *cc->anchors);
        cc->anchors[cc->n_anchors++] = (anchor_t){ .name = ids + 1, .json = j, .resource = sc->resource };
    } else if (ids && *ids) {
        grow((void **)&cc->res, &cc->cap_res, cc->n_res + 1, sizeof *cc->res);
        resource_t *r = &cc->res[cc->n_res++];
        r->id = resolve_uri(sc->base, ids, strlen(ids));
        r->json = j;
        sc->resource = j;
        sc->base = r->id;
    }
    static const char *const kws[] = { "$anchor", "$dynamicAnchor" };
    for (size_t k = 0; k < 2; k++) {
        json_t *a = json_object_get(j, kws[k]);
        if (!a)
            continue;
        if (!json_is_string(a)) {
            where_push(cc, kws[k]);
            cfail(cc, "must be a string, got %s", kind_name(a));
            return false;
        }
        grow((void **)&cc->anchors, &cc->cap_anchors, cc->n_anchors + 1, sizeof *cc->anchors);
        cc->anchors[cc->n_anchors++] = (anchor_t){ .name = json_string_value(a), .json = j, .resource = sc->resource };
    }
    return true;
}

static node_t *
new_node(cctx_t *cc, json_t *json)
{
    mcp_schema_t *s = cc->s;
    node_t *n = tp_calloc(1, sizeof *n);
    n->json = json;
    n->max_length = n->max_items = n->max_props = n->max_contains = SIZE_MAX;
    n->min_contains = 1;
    grow((void **)&s->nodes, &s->cap_nodes, s->n_nodes + 1, sizeof *s->nodes);
    n->index = s->n_nodes;
    s->nodes[s->n_nodes++] = n;
    map_put(&cc->map, json, n);
    return n;
}

static node_t *
compile(cctx_t *cc, json_t *json, const scope_t *outer)
{
    node_t *known = map_get(&cc->map, json);
    if (known)
        return known;
    if (!json_is_object(json) && !json_is_boolean(json))
        return cfail(cc, "a schema must be an object or a boolean, got %s", kind_name(json));
    if (cc->depth >= MAX_SCHEMA_DEPTH)
        return cfail(cc, "the schema nests deeper than %d levels", MAX_SCHEMA_DEPTH);
    node_t *n = new_node(cc, json);
    if (json_is_boolean(json)) {
        n->kind = json_is_true(json) ? NODE_TRUE : NODE_FALSE;
        return n;
    }
    scope_t sc = *outer;
    cc->depth++;
    bool ok = compile_ids(cc, n, &sc) && compile_type(cc, n) && compile_ref(cc, n, &sc) && compile_values(cc, n) &&
              compile_numbers(cc, n) && compile_strings(cc, n) && compile_arrays(cc, n, &sc) &&
              compile_objects(cc, n, &sc) && compile_applicators(cc, n, &sc);
    cc->depth--;
    return ok ? n : NULL;
}

/* Decodes %XX escapes of a URI fragment; NULL when one is malformed. */
static char *
percent_decode(const char *s)
{
    size_t len = strlen(s), o = 0;
    char *out = tp_malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        if (i + 2 >= len || !is_hex(s[i + 1]) || !is_hex(s[i + 2])) {
            free(out);
            return NULL;
        }
        char hex[3] = { s[i + 1], s[i + 2], '\0' };
        out[o++] = (char)strtol(hex, NULL, 16);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

/* Follows a JSON pointer ("/$defs/a~1b/items/0") from root; NULL when it leads nowhere. */
static json_t *
walk_pointer(json_t *root, const char *ptr)
{
    json_t *cur = root;
    char token[256];
    while (*ptr == '/' && cur) {
        ptr++;
        size_t o = 0;
        for (; *ptr && *ptr != '/'; ptr++) {
            char ch = *ptr;
            if (ch == '~') {
                if (ptr[1] != '0' && ptr[1] != '1')
                    return NULL;
                ch = *++ptr == '0' ? '~' : '/';
            }
            if (o + 1 >= sizeof token)
                return NULL;
            token[o++] = ch;
        }
        token[o] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, token);
        } else if (json_is_array(cur)) {
            if (o == 0 || strspn(token, "0123456789") != o || (o > 1 && token[0] == '0') || o > 18)
                return NULL;
            cur = json_array_get(cur, (size_t)strtoull(token, NULL, 10));
        } else {
            return NULL;
        }
    }
    return *ptr ? NULL : cur;
}

static bool
resolve_ref(cctx_t *cc, node_t *n, const scope_t *sc)
{
    const char *ref = n->ref_text, *hash = strchr(ref, '#');
    size_t ulen = hash ? (size_t)(hash - ref) : strlen(ref);
    scope_t target_sc = *sc;
    snprintf(cc->where, sizeof cc->where, "%s", n->ref_where);
    cc->len = strlen(cc->where);
    if (ulen > 0) {
        char *uri = resolve_uri(sc->base, ref, ulen);
        size_t i = 0;
        while (i < cc->n_res && strcmp(cc->res[i].id, uri) != 0)
            i++;
        free(uri);
        if (i == cc->n_res) {
            cfail(cc,
                  "\"%s\" does not resolve: only references to this schema and the $id of its parts are "
                  "supported",
                  ref);
            return false;
        }
        target_sc = (scope_t){ .resource = cc->res[i].json, .base = cc->res[i].id };
    }
    char *frag = percent_decode(hash ? hash + 1 : "");
    json_t *target = NULL;
    if (!frag) {
        cfail(cc, "\"%s\" has a malformed %%-escape", ref);
        return false;
    }
    if (!*frag) {
        target = target_sc.resource;
    } else if (frag[0] == '/') {
        target = walk_pointer(target_sc.resource, frag);
    } else {
        for (size_t i = 0; i < cc->n_anchors && !target; i++)
            if (strcmp(cc->anchors[i].name, frag) == 0 && cc->anchors[i].resource == target_sc.resource)
                target = cc->anchors[i].json;
        for (size_t i = 0; i < cc->n_anchors && !target; i++)
            if (strcmp(cc->anchors[i].name, frag) == 0)
                target = cc->anchors[i].json;
    }
    free(frag);
    if (!target) {
        cfail(cc, "\"%s\" does not resolve to any part of this schema", ref);
        return false;
    }
    n->ref = map_get(&cc->map, target);
    if (!n->ref) { /* somewhere no keyword leads, as "#/components/x": compile it now */
        snprintf(cc->where, sizeof cc->where, "%s", ref);
        cc->len = strlen(cc->where);
        n->ref = compile(cc, target, &target_sc);
    }
    return n->ref != NULL;
}

static bool
resolve_refs(cctx_t *cc)
{
    /* compiling a target may add references: the array can grow while this runs */
    for (size_t i = 0; i < cc->n_refs; i++) {
        pending_ref_t p = cc->refs[i];
        if (!resolve_ref(cc, p.node, &p.scope))
            return false;
    }
    return true;
}

enum { WHITE, GREY, BLACK };

typedef struct loopcheck {
    cctx_t *cc;
    unsigned char *color;
    node_t **stack;
    size_t depth;
} loopcheck_t;

static bool visit(loopcheck_t *lc, node_t *n);

static bool
visit_all(loopcheck_t *lc, node_t **list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!visit(lc, list[i]))
            return false;
    return true;
}

/* Depth-first over the subschemas applied to the same value as n: a cycle there would never end. */
static bool
visit(loopcheck_t *lc, node_t *n)
{
    if (!n || lc->color[n->index] == BLACK)
        return true;
    if (lc->color[n->index] == GREY) {
        const char *where = NULL, *ref = NULL;
        for (size_t i = lc->depth; i-- > 0 && !where;) {
            if (lc->stack[i]->ref_where) {
                where = lc->stack[i]->ref_where;
                ref = lc->stack[i]->ref_text;
            }
            if (lc->stack[i] == n)
                break;
        }
        snprintf(lc->cc->where, sizeof lc->cc->where, "%s", where ? where : "#");
        cfail(lc->cc, "\"%s\" leads back to itself without descending into a property or item", ref ? ref : "");
        return false;
    }
    if (lc->depth >= MAX_CHAIN) {
        snprintf(lc->cc->where, sizeof lc->cc->where, "#");
        cfail(lc->cc, "more than %d subschemas apply to one value through $ref, allOf, anyOf and the like", MAX_CHAIN);
        return false;
    }
    lc->color[n->index] = GREY;
    lc->stack[lc->depth++] = n;
    bool ok = visit(lc, n->ref) && visit_all(lc, n->all_of, n->n_all) && visit_all(lc, n->any_of, n->n_any) &&
              visit_all(lc, n->one_of, n->n_one) && visit(lc, n->not_) && visit(lc, n->if_) && visit(lc, n->then_) &&
              visit(lc, n->else_);
    for (size_t i = 0; ok && i < n->n_deps; i++)
        ok = visit(lc, n->deps[i].schema);
    if (!ok)
        return false;
    lc->depth--;
    lc->color[n->index] = BLACK;
    return true;
}

static bool
check_loops(cctx_t *cc)
{
    mcp_schema_t *s = cc->s;
    loopcheck_t lc = { .cc = cc, .color = tp_calloc(s->n_nodes, 1) };
    lc.stack = tp_calloc(s->n_nodes < MAX_CHAIN ? s->n_nodes : MAX_CHAIN, sizeof *lc.stack);
    bool ok = true;
    for (size_t i = 0; ok && i < s->n_nodes; i++)
        ok = visit(&lc, s->nodes[i]);
    free(lc.color);
    free(lc.stack);
    return ok;
}

mcp_schema_t *
mcp_schema_compile(json_t *schema, char **err)
{
    if (err)
        *err = NULL;
    mcp_schema_t *s = tp_calloc(1, sizeof *s);
    cctx_t cc = { .s = s, .where = "#", .len = 1 };
    if (!schema) {
        cfail(&cc, "no schema");
        goto out;
    }
    s->root = json_incref(schema);
    s->mctx = pcre2_match_context_create(NULL);
    cc.ccontext = pcre2_compile_context_create(NULL);
    if (!s->mctx || !cc.ccontext)
        tp_fatal("out of memory");
    pcre2_set_match_limit(s->mctx, MATCH_LIMIT);
    pcre2_set_heap_limit(s->mctx, HEAP_LIMIT_KIB);
    pcre2_set_compile_extra_options(cc.ccontext, PCRE2_EXTRA_ALT_BSUX); /* ECMA's \u{1F600} */
    scope_t sc = { .resource = schema };
    s->entry = compile(&cc, schema, &sc);
    if (s->entry && resolve_refs(&cc))
        check_loops(&cc);
out:
    free(cc.map.keys);
    free(cc.map.vals);
    free(cc.refs);
    for (size_t i = 0; i < cc.n_res; i++)
        free(cc.res[i].id);
    free(cc.res);
    free(cc.anchors);
    pcre2_compile_context_free(cc.ccontext);
    if (cc.err) {
        if (err)
            *err = cc.err;
        else
            free(cc.err);
        mcp_schema_free(s);
        return NULL;
    }
    return s;
}

void
mcp_schema_free(mcp_schema_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_nodes; i++) {
        node_t *n = s->nodes[i];
        free(n->ref_where);
        free(n->all_of);
        free(n->any_of);
        free(n->one_of);
        pcre2_code_free(n->pattern);
        free(n->prefix);
        free(n->props);
        for (size_t k = 0; k < n->n_pprops; k++)
            pcre2_code_free(n->pprops[k].re);
        free(n->pprops);
        free(n->deps);
        free(n);
    }
    free(s->nodes);
    pcre2_match_context_free(s->mctx);
    json_decref(s->root);
    free(s);
}
