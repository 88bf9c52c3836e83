/*
 * rules.c — authorization rules (see rules.h for the language and the decision).
 *
 * Speed comes from compiling a ruleset once: every pattern is classified when parsed (exact
 * string, literal prefix, match-all, or general glob), so most checks are a strcmp or a memcmp;
 * and per plane and per effect the rules are indexed by their resource patterns, so evaluation
 * only looks at rules that could match the request's resource:
 *   - exact resource patterns go into a hash table keyed by the string;
 *   - other patterns that start with a literal byte go into one of 256 lists by that byte;
 *   - patterns that start with a wildcard ("*", "?", "[") go into the "wild" list.
 * A request's candidates are the union of its hash hit, its first byte's list and the wild list,
 * walked in ruleset order by merging the three sorted lists. Deny rules are searched first, so a
 * decision needs at most one pass over the deny candidates and a partial pass over the allows.
 *
 * pol_explain deliberately does not use the index: it checks every rule of the plane one by
 * one, which makes it the reference the indexed path is tested against.
 */
#include "rules.h"

#include "log.h"
#include "mem.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RULE_ID_MAX          128  /* longest rule id, in bytes */
#define RULE_DESCRIPTION_MAX 1024 /* longest description, in bytes */
#define RULE_PATTERN_MAX     1024 /* longest pattern, in bytes; bounds the cost of one glob match */
#define ALL_DAYS             0x7f /* bit d set: day d (0 = Monday) */
#define MINUTES_PER_DAY      1440
#define MS_PER_DAY           86400000LL
#define MS_PER_MINUTE        60000LL

/* ---- patterns ---------------------------------------------------------------------------- */

typedef enum pattern_kind {
    PATTERN_EXACT = 0, /* no wildcard: strcmp against lit */
    PATTERN_PREFIX,    /* a literal followed by "*" only: strncmp against lit */
    PATTERN_ANY,       /* "*" (or "**"…): matches every string */
    PATTERN_GLOB,      /* anything else: glob_match on src */
} pattern_kind_t;

typedef struct pattern {
    char *src;      /* as written; what pol_rule_to_json gives back */
    char *lit;      /* EXACT: the string with escapes removed; PREFIX: the literal part; else NULL */
    size_t lit_len; /* strlen(lit) */
    pattern_kind_t kind;
} pattern_t;

typedef struct patterns {
    pattern_t *v;
    size_t n;
} patterns_t;

static bool
is_meta(char c)
{
    return c == '*' || c == '?' || c == '[';
}

/* For the class that opens at p ('['): the position of its closing ']', or NULL when there is
 * none. A ']' right after "[" or "[!" is a member, and "\x" is the literal x. */
static const char *
class_end(const char *p)
{
    p++;
    if (*p == '!' || *p == '^')
        p++;
    if (*p == ']')
        p++;
    while (*p != '\0' && *p != ']') {
        if (*p == '\\') {
            if (p[1] == '\0')
                return NULL;
            p++;
        }
        p++;
    }
    return *p == ']' ? p : NULL;
}

/* Reads one class member at *p (an escaped or plain byte) and moves past it. */
static unsigned char
class_byte(const char **p)
{
    if (**p == '\\')
        (*p)++;
    unsigned char c = (unsigned char)**p;
    (*p)++;
    return c;
}

/* Does byte c belong to the (well-formed) class opening at p? *next is set past its ']'. */
static bool
class_match(const char *p, unsigned char c, const char **next)
{
    p++;
    bool negate = false;
    if (*p == '!' || *p == '^') {
        negate = true;
        p++;
    }
    bool hit = false;
    bool first = true;
    while (first || *p != ']') {
        first = false;
        unsigned char lo = class_byte(&p);
        unsigned char hi = lo;
        if (*p == '-' && p[1] != ']' && p[1] != '\0') {
            p++;
            hi = class_byte(&p);
        }
        if (lo <= c && c <= hi)
            hit = true;
    }
    *next = p + 1;
    return hit != negate;
}

/* Does byte c match the single pattern element at p ("?", a class, "\x" or a literal)? */
static bool
element_match(const char *p, unsigned char c, const char **next)
{
    switch (*p) {
    case '?':
        *next = p + 1;
        return true;
    case '[':
        return class_match(p, c, next);
    case '\\':
        *next = p + 2;
        return (unsigned char)p[1] == c;
    default:
        *next = p + 1;
        return (unsigned char)*p == c;
    }
}

/* Glob match of a well-formed pattern against s. Backtracks only to the last '*', so the cost
 * is at most strlen(p) * strlen(s) steps. */
static bool
glob_match(const char *p, const char *s)
{
    const char *star_p = NULL; /* pattern position just after the last '*' seen */
    const char *star_s = NULL; /* where in s that '*' currently stops */
    for (;;) {
        if (*p == '*') {
            while (*p == '*')
                p++;
            if (*p == '\0')
                return true;
            star_p = p;
            star_s = s;
            continue;
        }
        if (*s == '\0')
            return *p == '\0';
        const char *next;
        if (*p != '\0' && element_match(p, (unsigned char)*s, &next)) {
            p = next;
            s++;
            continue;
        }
        if (star_p == NULL)
            return false;
        p = star_p;
        s = ++star_s;
    }
}

/* Returns NULL when p is a well-formed pattern, else what is wrong with it. */
static const char *
pattern_problem(const char *p)
{
    for (; *p != '\0'; p++) {
        if (*p == '\\') {
            if (p[1] == '\0')
                return "ends with a lone \\";
            p++;
        } else if (*p == '[') {
            const char *end = class_end(p);
            if (end == NULL)
                return "has a [ without its ]";
            p = end;
        }
    }
    return NULL;
}

/* Classifies a well-formed pattern and fills pt (which takes a copy of src). */
static void
pattern_init(pattern_t *pt, const char *src)
{
    size_t len = strlen(src);
    char *lit = tp_malloc(len + 1);
    size_t n = 0;
    const char *p = src;
    while (*p != '\0' && !is_meta(*p)) {
        if (*p == '\\')
            p++;
        lit[n++] = *p++;
    }
    lit[n] = '\0';

    pt->src = tp_strdup(src);
    pt->lit = NULL;
    pt->lit_len = 0;
    if (*p == '\0') {
        pt->kind = PATTERN_EXACT;
    } else {
        const char *rest = p;
        while (*rest == '*')
            rest++;
        if (*p == '*' && *rest == '\0')
            pt->kind = n == 0 ? PATTERN_ANY : PATTERN_PREFIX;
        else
            pt->kind = PATTERN_GLOB;
    }
    if (pt->kind == PATTERN_EXACT || pt->kind == PATTERN_PREFIX) {
        pt->lit = lit;
        pt->lit_len = n;
    } else {
        free(lit);
    }
}

/* Does pt match s (len bytes, NUL-terminated)? Lengths are compared first: on the hot path most
 * exact patterns differ in length from the string they are tried on. */
static bool
pattern_match(const pattern_t *pt, const char *s, size_t len)
{
    switch (pt->kind) {
    case PATTERN_EXACT:
        return len == pt->lit_len && memcmp(pt->lit, s, len) == 0;
    case PATTERN_PREFIX:
        return len >= pt->lit_len && memcmp(pt->lit, s, pt->lit_len) == 0;
    case PATTERN_ANY:
        return true;
    case PATTERN_GLOB:
        return glob_match(pt->src, s);
    }
    return false;
}

static bool
patterns_match(const patterns_t *ps, const char *s, size_t len)
{
    for (size_t i = 0; i < ps->n; i++) {
        if (pattern_match(&ps->v[i], s, len))
            return true;
    }
    return false;
}

/* The first byte every string matching pt starts with, or -1 when it may start with any. */
static int
pattern_first_byte(const pattern_t *pt)
{
    if (pt->kind == PATTERN_EXACT || pt->kind == PATTERN_PREFIX)
        return pt->lit_len > 0 ? (unsigned char)pt->lit[0] : -1;
    const char *p = pt->src;
    if (is_meta(*p))
        return -1;
    return (unsigned char)(*p == '\\' ? p[1] : p[0]);
}

static void
patterns_clear(patterns_t *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i].src);
        free(ps->v[i].lit);
    }
    free(ps->v);
    ps->v = NULL;
    ps->n = 0;
}

/* ---- rules ------------------------------------------------------------------------------- */

typedef struct label_cond {
    char *key;
    pattern_t value;
} label_cond_t;

struct pol_rule {
    char *id;
    char *description; /* NULL when absent */
    pol_effect_t effect;
    pol_plane_t plane;
    patterns_t principals, teams, roles, kinds;
    unsigned kind_mask; /* bit k: the kinds patterns match pol_kind_t k */
    patterns_t resources, actions;

    bool has_time;
    bool days_given;    /* "days" was written (kept for the canonical form) */
    uint8_t days;       /* bit d: day d, 0 = Monday; ALL_DAYS when not given */
    bool has_window;    /* start/end given */
    uint16_t start_min; /* minutes after midnight UTC, 0..1439 */
    uint16_t end_min;   /* 0..1440; < start_min wraps past midnight */

    bool has_max_size;
    int64_t max_size; /* bytes */

    label_cond_t *labels; /* sorted by key */
    size_t num_labels;
};

static const char *const effect_names[] = { "allow", "deny" };
static const char *const plane_names[] = { "*", "model", "mcp", "agent" };
static const char *const day_names[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };
#define NUM_PLANES (sizeof(plane_names) / sizeof(plane_names[0]))
#define NUM_KINDS  3

const char *
pol_effect_name(pol_effect_t effect)
{
    return (unsigned)effect < 2 ? effect_names[effect] : "unknown";
}

const char *
pol_plane_name(pol_plane_t plane)
{
    return (unsigned)plane < NUM_PLANES ? plane_names[plane] : "unknown";
}

void
pol_rule_free(pol_rule_t *rule)
{
    if (rule == NULL)
        return;
    free(rule->id);
    free(rule->description);
    patterns_clear(&rule->principals);
    patterns_clear(&rule->teams);
    patterns_clear(&rule->roles);
    patterns_clear(&rule->kinds);
    patterns_clear(&rule->resources);
    patterns_clear(&rule->actions);
    for (size_t i = 0; i < rule->num_labels; i++) {
        free(rule->labels[i].key);
        free(rule->labels[i].value.src);
        free(rule->labels[i].value.lit);
    }
    free(rule->labels);
    free(rule);
}

const char *
pol_rule_id(const pol_rule_t *rule)
{
    return rule->id;
}

pol_effect_t
pol_rule_effect(const pol_rule_t *rule)
{
    return rule->effect;
}

pol_plane_t
pol_rule_plane(const pol_rule_t *rule)
{
    return rule->plane;
}

const char *
pol_rule_description(const pol_rule_t *rule)
{
    return rule->description;
}

/* ---- parsing ----------------------------------------------------------------------------- */

typedef struct parser {
    const char *id; /* the rule's id once it is known to be valid, for messages */
    char **err;
} parser_t;

/* Sets *err to "rule <id>: <message>" and returns -EINVAL. */
__attribute__((format(printf, 2, 3))) static int
parse_error(parser_t *ps, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ps->err != NULL)
        *ps->err = ps->id != NULL ? tp_sprintf("rule %s: %s", ps->id, msg) : tp_sprintf("rule: %s", msg);
    return -EINVAL;
}

/* Fails on the first key of obj that is not in allowed (NULL-terminated); path prefixes it. */
static int
check_keys(parser_t *ps, json_t *obj, const char *path, const char *const *allowed)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL && !known; i++)
            known = strcmp(key, allowed[i]) == 0;
        if (!known)
            return parse_error(ps, "unknown key \"%s%s%.64s\"", path, *path != '\0' ? "." : "", key);
    }
    return 0;
}

static bool
valid_id(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > RULE_ID_MAX)
        return false;
    for (const char *p = id; *p != '\0'; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                  c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* Parses arr (NULL when absent) as a list of patterns named field. When required, the list must
 * be present and non-empty. */
static int
parse_patterns(parser_t *ps, json_t *arr, const char *field, bool required, patterns_t *out)
{
    if (arr == NULL && !required)
        return 0;
    if (!json_is_array(arr) || (required && json_array_size(arr) == 0))
        return parse_error(ps, "%s must be %s of strings", field, required ? "a non-empty array" : "an array");
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (s == NULL || *s == '\0')
            return parse_error(ps, "%s[%zu] must be a non-empty string", field, i);
        if (strlen(s) > RULE_PATTERN_MAX)
            return parse_error(ps, "%s[%zu] is longer than %d bytes", field, i, RULE_PATTERN_MAX);
        const char *problem = pattern_problem(s);
        if (problem != NULL)
            return parse_error(ps, "%s[%zu] \"%.64s\" %s", field, i, s, problem);
    }
    out->v = tp_calloc(n, sizeof(*out->v));
    for (size_t i = 0; i < n; i++)
        pattern_init(&out->v[i], json_string_value(json_array_get(arr, i)));
    out->n = n;
    return 0;
}

static int
parse_subjects(parser_t *ps, json_t *subjects, pol_rule_t *r)
{
    static const char *const keys[] = { "principals", "teams", "roles", "kinds", NULL };
    if (subjects == NULL)
        return parse_error(ps, "subjects is required");
    if (!json_is_object(subjects))
        return parse_error(ps, "subjects must be an object");
    int rv = check_keys(ps, subjects, "subjects", keys);
    if (rv != 0)
        return rv;
    patterns_t *lists[] = { &r->principals, &r->teams, &r->roles, &r->kinds };
    static const char *const fields[] = { "subjects.principals", "subjects.teams", "subjects.roles", "subjects.kinds" };
    for (size_t i = 0; i < 4; i++) {
        rv = parse_patterns(ps, json_object_get(subjects, keys[i]), fields[i], false, lists[i]);
        if (rv != 0)
            return rv;
    }
    if (r->principals.n + r->teams.n + r->roles.n + r->kinds.n == 0)
        return parse_error(ps, "subjects must list at least one of principals, teams, roles, kinds");
    for (size_t i = 0; i < r->kinds.n; i++) {
        unsigned mask = 0;
        for (unsigned k = 0; k < NUM_KINDS; k++) {
            const char *name = pol_kind_name((pol_kind_t)k);
            if (pattern_match(&r->kinds.v[i], name, strlen(name)))
                mask |= 1u << k;
        }
        if (mask == 0)
            return parse_error(ps, "subjects.kinds[%zu] \"%.64s\" matches no kind (user, service, agent)", i,
                               r->kinds.v[i].src);
        r->kind_mask |= mask;
    }
    return 0;
}

/* Parses "HH:MM" into minutes after midnight; max_minutes is 1439 or 1440 ("24:00"). */
static bool
parse_hhmm(const char *s, unsigned max_minutes, uint16_t *out)
{
    if (s == NULL || strlen(s) != 5 || s[2] != ':')
        return false;
    for (int i = 0; i < 5; i++) {
        if (i != 2 && (s[i] < '0' || s[i] > '9'))
            return false;
    }
    unsigned h = (unsigned)(s[0] - '0') * 10 + (unsigned)(s[1] - '0');
    unsigned m = (unsigned)(s[3] - '0') * 10 + (unsigned)(s[4] - '0');
    if (m > 59 || h * 60 + m > max_minutes)
        return false;
    *out = (uint16_t)(h * 60 + m);
    return true;
}

static int
parse_days(parser_t *ps, json_t *days, pol_rule_t *r)
{
    if (!json_is_array(days) || json_array_size(days) == 0)
        return parse_error(ps, "conditions.time.days must be a non-empty array of day names (mon..sun)");
    uint8_t mask = 0;
    for (size_t i = 0; i < json_array_size(days); i++) {
        const char *s = json_string_value(json_array_get(days, i));
        if (s == NULL)
            return parse_error(ps, "conditions.time.days[%zu] must be a day name (mon..sun)", i);
        size_t d = 0;
        while (d < 7 && strcmp(s, day_names[d]) != 0)
            d++;
        if (d == 7)
            return parse_error(
                ps, "conditions.time.days[%zu] \"%.16s\" is not a day (mon, tue, wed, thu, fri, sat, sun)", i, s);
        mask |= (uint8_t)(1u << d);
    }
    r->days = mask;
    r->days_given = true;
    return 0;
}

static int
parse_time(parser_t *ps, json_t *time, pol_rule_t *r)
{
    static const char *const keys[] = { "days", "start", "end", NULL };
    if (!json_is_object(time))
        return parse_error(ps, "conditions.time must be an object");
    int rv = check_keys(ps, time, "conditions.time", keys);
    if (rv != 0)
        return rv;
    r->has_time = true;
    r->days = ALL_DAYS;
    json_t *days = json_object_get(time, "days");
    if (days != NULL && (rv = parse_days(ps, days, r)) != 0)
        return rv;
    json_t *start = json_object_get(time, "start");
    json_t *end = json_object_get(time, "end");
    if (start == NULL && end == NULL) {
        if (days == NULL)
            return parse_error(ps, "conditions.time must have days, or start and end");
        return 0;
    }
    if (start == NULL || end == NULL)
        return parse_error(ps, "conditions.time needs both start and end, or neither");
    if (!parse_hhmm(json_string_value(start), MINUTES_PER_DAY - 1, &r->start_min))
        return parse_error(ps, "conditions.time.start must be \"HH:MM\" between 00:00 and 23:59");
    if (!parse_hhmm(json_string_value(end), MINUTES_PER_DAY, &r->end_min))
        return parse_error(ps, "conditions.time.end must be \"HH:MM\" between 00:00 and 24:00");
    if (r->start_min == r->end_min)
        return parse_error(ps, "conditions.time start and end must differ");
    r->has_window = true;
    return 0;
}

static int
label_cmp(const void *a, const void *b)
{
    return strcmp(((const label_cond_t *)a)->key, ((const label_cond_t *)b)->key);
}

static int
parse_labels(parser_t *ps, json_t *labels, pol_rule_t *r)
{
    if (!json_is_object(labels))
        return parse_error(ps, "conditions.labels must be an object of label name to glob");
    const char *key;
    json_t *value;
    json_object_foreach(labels, key, value)
    {
        const char *s = json_string_value(value);
        if (*key == '\0')
            return parse_error(ps, "conditions.labels: label names must be non-empty");
        if (s == NULL || *s == '\0')
            return parse_error(ps, "conditions.labels.%.64s must be a non-empty string", key);
        if (strlen(s) > RULE_PATTERN_MAX)
            return parse_error(ps, "conditions.labels.%.64s is longer than %d bytes", key, RULE_PATTERN_MAX);
        const char *problem = pattern_problem(s);
        if (problem != NULL)
            return parse_error(ps, "conditions.labels.%.64s \"%.64s\" %s", key, s, problem);
    }
    size_t n = json_object_size(labels);
    r->labels = tp_calloc(n, sizeof(*r->labels));
    json_object_foreach(labels, key, value)
    {
        label_cond_t *lc = &r->labels[r->num_labels++];
        lc->key = tp_strdup(key);
        pattern_init(&lc->value, json_string_value(value));
    }
    qsort(r->labels, r->num_labels, sizeof(*r->labels), label_cmp);
    return 0;
}

static int
parse_conditions(parser_t *ps, json_t *conds, pol_rule_t *r)
{
    static const char *const keys[] = { "time", "max_request_size", "labels", NULL };
    if (!json_is_object(conds))
        return parse_error(ps, "conditions must be an object");
    int rv = check_keys(ps, conds, "conditions", keys);
    if (rv != 0)
        return rv;
    json_t *time = json_object_get(conds, "time");
    if (time != NULL && (rv = parse_time(ps, time, r)) != 0)
        return rv;
    json_t *size = json_object_get(conds, "max_request_size");
    if (size != NULL) {
        if (!json_is_integer(size) || json_integer_value(size) < 0)
            return parse_error(ps, "conditions.max_request_size must be a non-negative integer (bytes)");
        r->has_max_size = true;
        r->max_size = json_integer_value(size);
    }
    json_t *labels = json_object_get(conds, "labels");
    if (labels != NULL && (rv = parse_labels(ps, labels, r)) != 0)
        return rv;
    return 0;
}

/* Parses an enumerated string field: its index in names[0..n), or -1 with *err set. */
static int
parse_enum(parser_t *ps, json_t *def, const char *field, const char *const *names, size_t n, const char *expected)
{
    json_t *v = json_object_get(def, field);
    if (v == NULL)
        return parse_error(ps, "%s is required", field), -1;
    const char *s = json_string_value(v);
    for (size_t i = 0; s != NULL && i < n; i++) {
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    }
    return parse_error(ps, "%s must be %s", field, expected), -1;
}

static int
parse_body(parser_t *ps, json_t *def, pol_rule_t *r)
{
    static const char *const keys[] = { "id",        "effect",  "description", "subjects", "plane",
                                        "resources", "actions", "conditions",  NULL };
    int rv = check_keys(ps, def, "", keys);
    if (rv != 0)
        return rv;
    int effect = parse_enum(ps, def, "effect", effect_names, 2, "\"allow\" or \"deny\"");
    if (effect < 0)
        return -EINVAL;
    r->effect = (pol_effect_t)effect;
    json_t *desc = json_object_get(def, "description");
    if (desc != NULL) {
        if (!json_is_string(desc) || json_string_length(desc) > RULE_DESCRIPTION_MAX)
            return parse_error(ps, "description must be a string of at most %d bytes", RULE_DESCRIPTION_MAX);
        r->description = tp_strdup(json_string_value(desc));
    }
    if ((rv = parse_subjects(ps, json_object_get(def, "subjects"), r)) != 0)
        return rv;
    int plane = parse_enum(ps, def, "plane", plane_names, NUM_PLANES, "one of \"model\", \"mcp\", \"agent\" or \"*\"");
    if (plane < 0)
        return -EINVAL;
    r->plane = (pol_plane_t)plane;
    if ((rv = parse_patterns(ps, json_object_get(def, "resources"), "resources", true, &r->resources)) != 0)
        return rv;
    if ((rv = parse_patterns(ps, json_object_get(def, "actions"), "actions", true, &r->actions)) != 0)
        return rv;
    json_t *conds = json_object_get(def, "conditions");
    if (conds != NULL && (rv = parse_conditions(ps, conds, r)) != 0)
        return rv;
    return 0;
}

int
pol_rule_parse(json_t *def, pol_rule_t **out, char **err)
{
    parser_t ps = { .id = NULL, .err = err };
    *out = NULL;
    if (!json_is_object(def))
        return parse_error(&ps, "definition must be a JSON object");
    json_t *id = json_object_get(def, "id");
    if (id == NULL)
        return parse_error(&ps, "id is required");
    if (!json_is_string(id) || !valid_id(json_string_value(id)))
        return parse_error(&ps, "id must be 1 to %d characters from A-Z a-z 0-9 . _ : -", RULE_ID_MAX);

    pol_rule_t *r = tp_calloc(1, sizeof(*r));
    r->id = tp_strdup(json_string_value(id));
    ps.id = r->id;
    int rv = parse_body(&ps, def, r);
    if (rv != 0) {
        pol_rule_free(r);
        return rv;
    }
    *out = r;
    return 0;
}

/* ---- canonical JSON ---------------------------------------------------------------------- */

static json_t *
must(json_t *j)
{
    if (j == NULL)
        tp_fatal("out of memory");
    return j;
}

/* Sets obj[key] = value, stealing value. */
static void
put(json_t *obj, const char *key, json_t *value)
{
    if (json_object_set_new(obj, key, must(value)) != 0)
        tp_fatal("out of memory");
}

static void
append(json_t *arr, json_t *value)
{
    if (json_array_append_new(arr, must(value)) != 0)
        tp_fatal("out of memory");
}

static json_t *
patterns_json(const patterns_t *ps)
{
    json_t *arr = must(json_array());
    for (size_t i = 0; i < ps->n; i++)
        append(arr, json_string(ps->v[i].src));
    return arr;
}

static json_t *
hhmm_json(unsigned minutes)
{
    char buf[8];
    snprintf(buf, sizeof(buf), "%02u:%02u", (minutes / 60) % 100, minutes % 60);
    return json_string(buf);
}

static json_t *
conditions_json(const pol_rule_t *r)
{
    json_t *conds = must(json_object());
    if (r->has_time) {
        json_t *time = must(json_object());
        if (r->days_given) {
            json_t *days = must(json_array());
            for (unsigned d = 0; d < 7; d++) {
                if (r->days & (1u << d))
                    append(days, json_string(day_names[d]));
            }
            put(time, "days", days);
        }
        if (r->has_window) {
            put(time, "start", hhmm_json(r->start_min));
            put(time, "end", hhmm_json(r->end_min));
        }
        put(conds, "time", time);
    }
    if (r->has_max_size)
        put(conds, "max_request_size", json_integer(r->max_size));
    if (r->num_labels > 0) {
        json_t *labels = must(json_object());
        for (size_t i = 0; i < r->num_labels; i++)
            put(labels, r->labels[i].key, json_string(r->labels[i].value.src));
        put(conds, "labels", labels);
    }
    return conds;
}

json_t *
pol_rule_to_json(const pol_rule_t *r)
{
    json_t *obj = must(json_object());
    put(obj, "id", json_string(r->id));
    put(obj, "effect", json_string(pol_effect_name(r->effect)));
    if (r->description != NULL)
        put(obj, "description", json_string(r->description));

    json_t *subjects = must(json_object());
    const patterns_t *lists[] = { &r->principals, &r->teams, &r->roles, &r->kinds };
    static const char *const keys[] = { "principals", "teams", "roles", "kinds" };
    for (size_t i = 0; i < 4; i++) {
        if (lists[i]->n > 0)
            put(subjects, keys[i], patterns_json(lists[i]));
    }
    put(obj, "subjects", subjects);
    put(obj, "plane", json_string(pol_plane_name(r->plane)));
    put(obj, "resources", patterns_json(&r->resources));
    put(obj, "actions", patterns_json(&r->actions));

    json_t *conds = conditions_json(r);
    if (json_object_size(conds) > 0)
        put(obj, "conditions", conds);
    else
        json_decref(conds);
    return obj;
}

/* ---- matching one rule ------------------------------------------------------------------- */

/* The request, with what every rule needs computed once. */
typedef struct match_ctx {
    const pol_principal_t *principal;
    size_t id_len, team_len; /* of principal->id and ->team (0 when NULL) */
    const char *resource;
    size_t resource_len;
    const char *action;
    size_t action_len;
    int64_t request_size;
    unsigned weekday; /* 0 = Monday, UTC */
    unsigned minute;  /* minutes after midnight, UTC */
} match_ctx_t;

typedef enum why {
    WHY_MATCHED = 0,
    WHY_SUBJECT,
    WHY_RESOURCE,
    WHY_ACTION,
    WHY_TIME,
    WHY_SIZE,
    WHY_LABELS,
} why_t;

static const char *const why_text[] = {
    [WHY_MATCHED] = "matched",
    [WHY_SUBJECT] = "subject did not match",
    [WHY_RESOURCE] = "resource did not match",
    [WHY_ACTION] = "action did not match",
    [WHY_TIME] = "condition time failed",
    [WHY_SIZE] = "condition max_request_size failed",
    [WHY_LABELS] = "condition labels failed",
};

static void
match_ctx_init(match_ctx_t *c, const pol_request_t *req)
{
    c->principal = req->principal;
    c->id_len = req->principal->id != NULL ? strlen(req->principal->id) : 0;
    c->team_len = req->principal->team != NULL ? strlen(req->principal->team) : 0;
    c->resource = req->resource != NULL ? req->resource : "";
    c->resource_len = strlen(c->resource);
    c->action = req->action != NULL ? req->action : "";
    c->action_len = strlen(c->action);
    c->request_size = req->request_size;
    /* Floor division, so that times before 1970 still land on the right day. */
    int64_t day = req->now_ms / MS_PER_DAY;
    int64_t ms_of_day = req->now_ms % MS_PER_DAY;
    if (ms_of_day < 0) {
        ms_of_day += MS_PER_DAY;
        day--;
    }
    /* 1970-01-01 was a Thursday (3 when Monday is 0). */
    int64_t wd = (day + 3) % 7;
    c->weekday = (unsigned)(wd < 0 ? wd + 7 : wd);
    c->minute = (unsigned)(ms_of_day / MS_PER_MINUTE);
}

static bool
subject_matches(const pol_rule_t *r, const match_ctx_t *c)
{
    const pol_principal_t *p = c->principal;
    if ((unsigned)p->kind < NUM_KINDS && (r->kind_mask & (1u << p->kind)) != 0)
        return true;
    if (p->id != NULL && patterns_match(&r->principals, p->id, c->id_len))
        return true;
    if (p->team != NULL && patterns_match(&r->teams, p->team, c->team_len))
        return true;
    if (r->roles.n > 0) {
        for (size_t i = 0; i < p->num_roles; i++) {
            if (patterns_match(&r->roles, p->roles[i], strlen(p->roles[i])))
                return true;
        }
    }
    return false;
}

static bool
time_holds(const pol_rule_t *r, const match_ctx_t *c)
{
    unsigned today = 1u << c->weekday;
    if (!r->has_window)
        return (r->days & today) != 0;
    if (r->start_min < r->end_min)
        return (r->days & today) != 0 && c->minute >= r->start_min && c->minute < r->end_min;
    /* Wraps past midnight: the early-morning part belongs to the window that opened yesterday. */
    if (c->minute >= r->start_min)
        return (r->days & today) != 0;
    unsigned yesterday = 1u << ((c->weekday + 6) % 7);
    return c->minute < r->end_min && (r->days & yesterday) != 0;
}

static bool
labels_hold(const pol_rule_t *r, const pol_principal_t *p)
{
    for (size_t i = 0; i < r->num_labels; i++) {
        const char *v = pol_principal_label(p, r->labels[i].key);
        if (v == NULL || !pattern_match(&r->labels[i].value, v, strlen(v)))
            return false;
    }
    return true;
}

/* The first check that fails, in the documented order, or WHY_MATCHED. The plane is checked by
 * the caller. */
static why_t
rule_check(const pol_rule_t *r, const match_ctx_t *c)
{
    if (!subject_matches(r, c))
        return WHY_SUBJECT;
    if (!patterns_match(&r->resources, c->resource, c->resource_len))
        return WHY_RESOURCE;
    if (!patterns_match(&r->actions, c->action, c->action_len))
        return WHY_ACTION;
    if (r->has_time && !time_holds(r, c))
        return WHY_TIME;
    if (r->has_max_size && (c->request_size < 0 || c->request_size > r->max_size))
        return WHY_SIZE;
    if (r->num_labels > 0 && !labels_hold(r, c->principal))
        return WHY_LABELS;
    return WHY_MATCHED;
}

/* ---- ruleset ----------------------------------------------------------------------------- */

typedef struct span {
    uint32_t off; /* into the index's pool */
    uint32_t cnt;
} span_t;

typedef struct exact_slot {
    const char *key; /* borrowed from a pattern's lit; NULL: empty slot */
    uint64_t hash;
    span_t rules;
} exact_slot_t;

/* The rules of one plane and one effect, indexed by resource pattern. Every list holds rule
 * positions (into pol_ruleset.rules), ascending and without repeats. */
typedef struct effect_index {
    exact_slot_t *slots; /* open addressing; NULL when no rule has an exact resource */
    size_t mask;         /* number of slots - 1 */
    span_t by_byte[256]; /* rules with a non-exact pattern that starts with this literal byte */
    span_t wild;         /* rules with a pattern that starts with a wildcard */
    uint32_t *pool;
} effect_index_t;

typedef struct plane_index {
    uint32_t *rules; /* every rule of this plane and of "*", in ruleset order (what explain lists) */
    size_t num_rules;
    effect_index_t by_effect[2]; /* [pol_effect_t] */
} plane_index_t;

struct pol_ruleset {
    pol_rule_t **rules;
    size_t n;
    pol_rule_t **by_id; /* sorted by id, for pol_ruleset_find */
    /* [POL_PLANE_ANY] holds only the "*" rules: it serves requests on a plane with no rules of
     * its own name. */
    plane_index_t planes[NUM_PLANES];
};

static uint64_t
hash_string(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

typedef struct u32vec {
    uint32_t *v;
    size_t n, cap;
} u32vec_t;

/* Appends x unless it is already the last element (lists are built in rule order). */
static void
u32vec_add(u32vec_t *vec, uint32_t x)
{
    if (vec->n > 0 && vec->v[vec->n - 1] == x)
        return;
    if (vec->n == vec->cap) {
        vec->cap = vec->cap != 0 ? vec->cap * 2 : 8;
        vec->v = tp_realloc(vec->v, vec->cap * sizeof(*vec->v));
    }
    vec->v[vec->n++] = x;
}

/* The slot for key: the one holding it, or the empty one where it belongs. */
static exact_slot_t *
exact_slot(const effect_index_t *ix, const char *key, uint64_t hash)
{
    for (size_t i = hash & ix->mask;; i = (i + 1) & ix->mask) {
        exact_slot_t *s = &ix->slots[i];
        if (s->key == NULL || (s->hash == hash && strcmp(s->key, key) == 0))
            return s;
    }
}

typedef struct exact_pair {
    const char *key;
    uint64_t hash;
    uint32_t rule;
} exact_pair_t;

/* Builds the hash table of exact resources from pairs (in rule order, no repeated pair), placing
 * the rule lists in pool from *pos on. */
static void
effect_index_exact(effect_index_t *ix, const exact_pair_t *pairs, size_t n, size_t *pos)
{
    if (n == 0)
        return;
    size_t cap = 8;
    while (cap < 2 * n)
        cap *= 2;
    ix->slots = tp_calloc(cap, sizeof(*ix->slots));
    ix->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        exact_slot_t *s = exact_slot(ix, pairs[i].key, pairs[i].hash);
        s->key = pairs[i].key;
        s->hash = pairs[i].hash;
        s->rules.cnt++;
    }
    for (size_t i = 0; i < cap; i++) {
        if (ix->slots[i].key == NULL)
            continue;
        ix->slots[i].rules.off = (uint32_t)*pos;
        *pos += ix->slots[i].rules.cnt;
        ix->slots[i].rules.cnt = 0;
    }
    for (size_t i = 0; i < n; i++) {
        exact_slot_t *s = exact_slot(ix, pairs[i].key, pairs[i].hash);
        ix->pool[s->rules.off + s->rules.cnt++] = pairs[i].rule;
    }
}

/* Has rule r already put this exact key in the index (through an earlier pattern)? */
static bool
exact_seen(const pol_rule_t *r, size_t upto, const char *lit)
{
    for (size_t j = 0; j < upto; j++) {
        if (r->resources.v[j].kind == PATTERN_EXACT && strcmp(r->resources.v[j].lit, lit) == 0)
            return true;
    }
    return false;
}

static span_t
pool_put(effect_index_t *ix, const u32vec_t *vec, size_t *pos)
{
    span_t sp = { (uint32_t)*pos, (uint32_t)vec->n };
    if (vec->n > 0)
        memcpy(ix->pool + *pos, vec->v, vec->n * sizeof(uint32_t));
    *pos += vec->n;
    return sp;
}

/* Indexes the rules at positions list[0..n) (ascending) that have the given effect. */
static void
effect_index_build(effect_index_t *ix, pol_rule_t *const *rules, const uint32_t *list, size_t n, pol_effect_t effect)
{
    u32vec_t by_byte[256] = { 0 };
    u32vec_t wild = { 0 };
    exact_pair_t *pairs = NULL;
    size_t num_pairs = 0, cap_pairs = 0;
    size_t total = 0;

    for (size_t i = 0; i < n; i++) {
        const pol_rule_t *r = rules[list[i]];
        if (r->effect != effect)
            continue;
        for (size_t j = 0; j < r->resources.n; j++) {
            const pattern_t *pt = &r->resources.v[j];
            if (pt->kind == PATTERN_EXACT) {
                if (exact_seen(r, j, pt->lit))
                    continue;
                if (num_pairs == cap_pairs) {
                    cap_pairs = cap_pairs != 0 ? cap_pairs * 2 : 16;
                    pairs = tp_realloc(pairs, cap_pairs * sizeof(*pairs));
                }
                pairs[num_pairs++] = (exact_pair_t){ pt->lit, hash_string(pt->lit), list[i] };
                continue;
            }
            int b = pattern_first_byte(pt);
            u32vec_add(b >= 0 ? &by_byte[b] : &wild, list[i]);
        }
    }
    total = num_pairs + wild.n;
    for (size_t b = 0; b < 256; b++)
        total += by_byte[b].n;

    ix->pool = tp_calloc(total, sizeof(uint32_t));
    size_t pos = 0;
    for (size_t b = 0; b < 256; b++) {
        ix->by_byte[b] = pool_put(ix, &by_byte[b], &pos);
        free(by_byte[b].v);
    }
    ix->wild = pool_put(ix, &wild, &pos);
    free(wild.v);
    effect_index_exact(ix, pairs, num_pairs, &pos);
    free(pairs);
    assert(pos == total);
}

static void
plane_index_build(plane_index_t *pi, pol_rule_t *const *rules, size_t n, pol_plane_t plane)
{
    pi->rules = tp_calloc(n, sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        if (rules[i]->plane == plane || rules[i]->plane == POL_PLANE_ANY)
            pi->rules[pi->num_rules++] = (uint32_t)i;
    }
    effect_index_build(&pi->by_effect[POL_EFFECT_ALLOW], rules, pi->rules, pi->num_rules, POL_EFFECT_ALLOW);
    effect_index_build(&pi->by_effect[POL_EFFECT_DENY], rules, pi->rules, pi->num_rules, POL_EFFECT_DENY);
}

static int
rule_id_cmp(const void *a, const void *b)
{
    return strcmp((*(pol_rule_t *const *)a)->id, (*(pol_rule_t *const *)b)->id);
}

pol_ruleset_t *
pol_ruleset_new(pol_rule_t **rules, size_t n, char **err)
{
    if (n > UINT32_MAX / 4) {
        for (size_t i = 0; i < n; i++)
            pol_rule_free(rules[i]);
        if (err != NULL)
            *err = tp_sprintf("rules: too many rules (%zu)", n);
        return NULL;
    }
    pol_ruleset_t *rs = tp_calloc(1, sizeof(*rs));
    rs->n = n;
    rs->rules = tp_calloc(n, sizeof(*rs->rules));
    if (n > 0)
        memcpy(rs->rules, rules, n * sizeof(*rules));
    rs->by_id = tp_calloc(n, sizeof(*rs->by_id));
    if (n > 0)
        memcpy(rs->by_id, rules, n * sizeof(*rules));
    qsort(rs->by_id, n, sizeof(*rs->by_id), rule_id_cmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(rs->by_id[i - 1]->id, rs->by_id[i]->id) == 0) {
            if (err != NULL)
                *err = tp_sprintf("rules: two rules have the id \"%s\"", rs->by_id[i]->id);
            pol_ruleset_free(rs);
            return NULL;
        }
    }
    for (size_t p = 0; p < NUM_PLANES; p++)
        plane_index_build(&rs->planes[p], rs->rules, n, (pol_plane_t)p);
    return rs;
}

void
pol_ruleset_free(pol_ruleset_t *rs)
{
    if (rs == NULL)
        return;
    for (size_t p = 0; p < NUM_PLANES; p++) {
        free(rs->planes[p].rules);
        for (size_t e = 0; e < 2; e++) {
            free(rs->planes[p].by_effect[e].slots);
            free(rs->planes[p].by_effect[e].pool);
        }
    }
    for (size_t i = 0; i < rs->n; i++)
        pol_rule_free(rs->rules[i]);
    free(rs->rules);
    free(rs->by_id);
    free(rs);
}

size_t
pol_ruleset_count(const pol_ruleset_t *rs)
{
    return rs->n;
}

const pol_rule_t *
pol_ruleset_rule(const pol_ruleset_t *rs, size_t i)
{
    assert(i < rs->n);
    return rs->rules[i];
}

const pol_rule_t *
pol_ruleset_find(const pol_ruleset_t *rs, const char *id)
{
    size_t lo = 0, hi = rs->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(id, rs->by_id[mid]->id);
        if (c == 0)
            return rs->by_id[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- evaluation -------------------------------------------------------------------------- */

static const plane_index_t *
request_plane(const pol_ruleset_t *rs, const char *plane)
{
    for (size_t p = 1; plane != NULL && p < NUM_PLANES; p++) {
        if (strcmp(plane, plane_names[p]) == 0)
            return &rs->planes[p];
    }
    return &rs->planes[POL_PLANE_ANY];
}

/* The first rule (in ruleset order) of ix that applies to the request, or NULL. Walks the union
 * of the three candidate lists by merging them. */
static const pol_rule_t *
first_applying(const pol_ruleset_t *rs, const effect_index_t *ix, const match_ctx_t *c, uint64_t resource_hash)
{
    const uint32_t *a = NULL, *a_end = NULL;
    if (ix->slots != NULL) {
        const exact_slot_t *s = exact_slot(ix, c->resource, resource_hash);
        if (s->key != NULL) {
            a = ix->pool + s->rules.off;
            a_end = a + s->rules.cnt;
        }
    }
    span_t bs = ix->by_byte[(unsigned char)c->resource[0]];
    const uint32_t *b = ix->pool + bs.off, *b_end = b + bs.cnt;
    const uint32_t *w = ix->pool + ix->wild.off, *w_end = w + ix->wild.cnt;

    for (;;) {
        uint32_t next = UINT32_MAX;
        if (a != a_end && *a < next)
            next = *a;
        if (b != b_end && *b < next)
            next = *b;
        if (w != w_end && *w < next)
            next = *w;
        if (next == UINT32_MAX)
            return NULL;
        if (a != a_end && *a == next)
            a++;
        if (b != b_end && *b == next)
            b++;
        if (w != w_end && *w == next)
            w++;
        const pol_rule_t *r = rs->rules[next];
        if (rule_check(r, c) == WHY_MATCHED)
            return r;
    }
}

static pol_decision_t
decide(const pol_rule_t *deny, const pol_rule_t *allow, bool default_allow)
{
    if (deny != NULL)
        return (pol_decision_t){ .allow = false, .rule = deny, .reason = "denied by rule" };
    if (allow != NULL)
        return (pol_decision_t){ .allow = true, .rule = allow, .reason = "allowed by rule" };
    if (default_allow)
        return (pol_decision_t){ .allow = true, .rule = NULL, .reason = "no rule matched: default allow" };
    return (pol_decision_t){ .allow = false, .rule = NULL, .reason = "no rule matched: default deny" };
}

pol_decision_t
pol_evaluate(const pol_ruleset_t *rs, const pol_request_t *req, bool default_allow)
{
    assert(req->principal != NULL);
    match_ctx_t c;
    match_ctx_init(&c, req);
    const plane_index_t *pi = request_plane(rs, req->plane);
    uint64_t h = hash_string(c.resource);
    const pol_rule_t *deny = first_applying(rs, &pi->by_effect[POL_EFFECT_DENY], &c, h);
    if (deny != NULL)
        return decide(deny, NULL, default_allow);
    return decide(NULL, first_applying(rs, &pi->by_effect[POL_EFFECT_ALLOW], &c, h), default_allow);
}

json_t *
pol_explain(const pol_ruleset_t *rs, const pol_request_t *req, bool default_allow)
{
    assert(req->principal != NULL);
    match_ctx_t c;
    match_ctx_init(&c, req);
    const plane_index_t *pi = request_plane(rs, req->plane);
    const pol_rule_t *deny = NULL, *allow = NULL;
    json_t *chain = must(json_array());
    for (size_t i = 0; i < pi->num_rules; i++) {
        const pol_rule_t *r = rs->rules[pi->rules[i]];
        why_t why = rule_check(r, &c);
        if (why == WHY_MATCHED) {
            if (r->effect == POL_EFFECT_DENY && deny == NULL)
                deny = r;
            if (r->effect == POL_EFFECT_ALLOW && allow == NULL)
                allow = r;
        }
        json_t *entry = must(json_object());
        put(entry, "id", json_string(r->id));
        put(entry, "effect", json_string(pol_effect_name(r->effect)));
        put(entry, "matched", json_boolean(why == WHY_MATCHED));
        put(entry, "why", json_string(why_text[why]));
        append(chain, entry);
    }
    pol_decision_t d = decide(deny, allow, default_allow);
    json_t *out = must(json_object());
    put(out, "decision", json_string(d.allow ? "allow" : "deny"));
    put(out, "rule", d.rule != NULL ? json_string(d.rule->id) : json_null());
    put(out, "reason", json_string(d.reason));
    put(out, "rules", chain);
    return out;
}
