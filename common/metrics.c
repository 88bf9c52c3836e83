#include "metrics.h"

#include "log.h"
#include "mem.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Layout. A family (tp_metric_t) owns its series: one `struct series` per distinct label-value
 * tuple, kept in creation order and indexed by a hash table, both guarded by the family mutex.
 * Each family also has one `struct shard` per registry shard; a shard maps a label tuple to a
 * `struct cell` holding that shard's part of the series' value, guarded by the shard mutex.
 *
 * Recording hashes the label values, locks the calling thread's shard and finds the cell. Only
 * the first time a shard sees a series does it take the family mutex (to find or create the
 * series), and then it never holds both: it drops the shard mutex first. Readers (render, set,
 * value) take the family mutex and then each shard mutex in turn, so the lock order is always
 * registry -> family -> shard and there is no cycle.
 */

/* Default latency buckets in seconds. */
const double tp_metrics_latency_buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                              0.5,   1,      2.5,   5,    10,    30,   60 };
const size_t tp_metrics_latency_buckets_count = sizeof(tp_metrics_latency_buckets) / sizeof(double);

/* A new table gets this many slots; it doubles when half full. */
#define TABLE_MIN_SLOTS 8

/* Shards are padded to a cache line so that workers recording on neighbouring shards do not
 * contend for one line. */
#define CACHE_LINE 64

enum kind {
    KIND_COUNTER,
    KIND_GAUGE,
    KIND_GAUGE_FN,
    KIND_HISTOGRAM,
};

static const char *const kind_type[] = { "counter", "gauge", "gauge", "histogram" };

struct series {
    char **values; /* copies of the label values, one per label name; immutable */
    uint64_t hash; /* of values */
    size_t ord;    /* position in the family's creation order */
    bool has_set;  /* tp_metric_set was called: set_value is the base of the value */
    double set_value;
};

/* One shard's part of a series. */
struct cell {
    struct series *series;
    double value;      /* counter/gauge: the adds since the last set; histogram: sum of observations */
    uint64_t counts[]; /* histogram only: observations per bucket, not cumulative, nbounds + 1 */
};

struct slot {
    uint64_t hash;
    struct series *series; /* NULL marks an empty slot */
    struct cell *cell;     /* NULL in the family's index */
};

/* Open addressing with linear probing; cap is 0 or a power of two. */
struct table {
    struct slot *slots;
    size_t cap;
    size_t used;
};

struct shard {
    _Alignas(CACHE_LINE) pthread_mutex_t lock;
    struct table cells;
};

struct tp_metric {
    enum kind kind;
    char *name;
    char *help;
    char **labels;
    size_t nlabels;
    double *bounds; /* histogram bucket upper bounds, without +Inf */
    size_t nbounds;
    double (*fn)(void *data); /* gauge_fn only */
    void *fn_data;
    unsigned nshards;
    pthread_mutex_t lock; /* guards series, nseries, index and every series' set fields */
    struct series **series;
    size_t nseries;
    size_t series_cap;
    struct table index;
    struct shard *shards; /* nshards of them */
};

struct tp_metrics {
    unsigned nshards;
    pthread_mutex_t lock; /* guards the family list against a render running during registration */
    tp_metric_t **families;
    size_t nfamilies;
    size_t families_cap;
};

static _Thread_local unsigned bound_shard;

/* ---- label tuples ---------------------------------------------------------------------- */

static const char *
value_at(const char *const *values, size_t i)
{
    return values[i] != NULL ? values[i] : "";
}

/* FNV-1a over the values, each followed by a byte that cannot end a UTF-8 string. Collisions
 * only cost a string comparison. */
static uint64_t
hash_values(const char *const *values, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)value_at(values, i); *p != '\0'; p++) {
            h ^= *p;
            h *= 1099511628211ull;
        }
        h ^= 0xff;
        h *= 1099511628211ull;
    }
    return h;
}

static bool
values_equal(char *const *stored, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(stored[i], value_at(values, i)) != 0)
            return false;
    }
    return true;
}

/* ---- hash table ------------------------------------------------------------------------ */

static struct slot *
table_find(const struct table *t, uint64_t hash, const char *const *values, size_t n)
{
    if (t->cap == 0)
        return NULL;
    size_t mask = t->cap - 1;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        struct slot *s = &t->slots[i];
        if (s->series == NULL)
            return NULL;
        if (s->hash == hash && values_equal(s->series->values, values, n))
            return s;
    }
}

static void
table_place(struct slot *slots, size_t cap, struct slot s)
{
    size_t mask = cap - 1;
    size_t i = (size_t)s.hash & mask;
    while (slots[i].series != NULL)
        i = (i + 1) & mask;
    slots[i] = s;
}

/* Inserts a slot whose tuple is not in the table yet. */
static void
table_insert(struct table *t, struct slot s)
{
    if ((t->used + 1) * 2 > t->cap) {
        size_t cap = t->cap != 0 ? t->cap * 2 : TABLE_MIN_SLOTS;
        struct slot *slots = tp_calloc(cap, sizeof(*slots));
        for (size_t i = 0; i < t->cap; i++) {
            if (t->slots[i].series != NULL)
                table_place(slots, cap, t->slots[i]);
        }
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
    }
    table_place(t->slots, t->cap, s);
    t->used++;
}

/* ---- series and cells ------------------------------------------------------------------ */

/* Finds or creates the series for values. Called with m->lock held. */
static struct series *
series_get_locked(tp_metric_t *m, const char *const *values, uint64_t hash)
{
    struct slot *found = table_find(&m->index, hash, values, m->nlabels);
    if (found != NULL)
        return found->series;

    struct series *s = tp_calloc(1, sizeof(*s));
    s->values = tp_calloc(m->nlabels, sizeof(char *));
    for (size_t i = 0; i < m->nlabels; i++)
        s->values[i] = tp_strdup(value_at(values, i));
    s->hash = hash;
    s->ord = m->nseries;
    if (m->nseries == m->series_cap) {
        m->series_cap = m->series_cap != 0 ? m->series_cap * 2 : TABLE_MIN_SLOTS;
        m->series = tp_realloc(m->series, m->series_cap * sizeof(*m->series));
    }
    m->series[m->nseries++] = s;
    table_insert(&m->index, (struct slot){ .hash = hash, .series = s });
    return s;
}

static struct series *
series_get(tp_metric_t *m, const char *const *values, uint64_t hash)
{
    pthread_mutex_lock(&m->lock);
    struct series *s = series_get_locked(m, values, hash);
    pthread_mutex_unlock(&m->lock);
    return s;
}

static struct shard *
current_shard(const tp_metric_t *m)
{
    unsigned i = bound_shard;
    return &m->shards[i < m->nshards ? i : 0];
}

/* Returns the calling thread's cell for values, creating it (and the series) on first use,
 * with the shard's mutex held: the caller records and unlocks. */
static struct cell *
lock_cell(tp_metric_t *m, struct shard *sh, const char *const *values)
{
    uint64_t hash = hash_values(values, m->nlabels);
    pthread_mutex_lock(&sh->lock);
    struct slot *found = table_find(&sh->cells, hash, values, m->nlabels);
    if (found != NULL)
        return found->cell;

    /* First use in this shard. Never hold the shard mutex while taking the family mutex: a
     * render holds them in the other order. */
    pthread_mutex_unlock(&sh->lock);
    struct series *s = series_get(m, values, hash);
    pthread_mutex_lock(&sh->lock);
    /* Another thread bound to this shard may have created the cell meanwhile. */
    found = table_find(&sh->cells, hash, values, m->nlabels);
    if (found != NULL)
        return found->cell;
    size_t ncounts = m->kind == KIND_HISTOGRAM ? m->nbounds + 1 : 0;
    struct cell *c = tp_calloc(1, sizeof(*c) + ncounts * sizeof(uint64_t));
    c->series = s;
    table_insert(&sh->cells, (struct slot){ .hash = hash, .series = s, .cell = c });
    return c;
}

/* Returns the shard's cell of series s, or NULL. Called with the shard's mutex held. */
static struct cell *
shard_cell_of(const struct shard *sh, const tp_metric_t *m, const struct series *s)
{
    struct slot *found = table_find(&sh->cells, s->hash, (const char *const *)s->values, m->nlabels);
    return found != NULL ? found->cell : NULL;
}

/* ---- registration ---------------------------------------------------------------------- */

static bool
valid_name(const char *s, bool colon)
{
    if (s == NULL || *s == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || (colon && ch == ':') ||
                  (p != s && ch >= '0' && ch <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static size_t
count_labels(const char *const *labels)
{
    size_t n = 0;
    while (labels != NULL && labels[n] != NULL)
        n++;
    return n;
}

static void
check_labels(const char *name, enum kind kind, const char *const *labels, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *l = labels[i];
        if (!valid_name(l, false) || strncmp(l, "__", 2) == 0)
            tp_fatal(tp_sprintf("metrics: %s: invalid label name \"%s\"", name, l));
        if (kind == KIND_HISTOGRAM && strcmp(l, "le") == 0)
            tp_fatal(tp_sprintf("metrics: %s: a histogram cannot have a label named \"le\"", name));
        for (size_t j = 0; j < i; j++) {
            if (strcmp(labels[j], l) == 0)
                tp_fatal(tp_sprintf("metrics: %s: duplicate label name \"%s\"", name, l));
        }
    }
}

static void
check_bounds(const char *name, const double *bounds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(bounds[i]))
            tp_fatal(tp_sprintf("metrics: %s: bucket bound %zu is not finite", name, i));
        if (i > 0 && !(bounds[i] > bounds[i - 1]))
            tp_fatal(tp_sprintf("metrics: %s: bucket bounds are not strictly increasing", name));
    }
}

/* Whether an existing family matches a re-registration. */
static bool
same_family(const tp_metric_t *m, enum kind kind, const char *const *labels, size_t nlabels, const double *bounds,
            size_t nbounds, double (*fn)(void *), void *data)
{
    if (m->kind != kind || m->nlabels != nlabels || m->nbounds != nbounds || m->fn != fn || m->fn_data != data)
        return false;
    for (size_t i = 0; i < nlabels; i++) {
        if (strcmp(m->labels[i], labels[i]) != 0)
            return false;
    }
    for (size_t i = 0; i < nbounds; i++) {
        if (m->bounds[i] != bounds[i])
            return false;
    }
    return true;
}

static tp_metric_t *
family_new(tp_metrics_t *reg, enum kind kind, const char *name, const char *help, const char *const *labels,
           size_t nlabels, const double *bounds, size_t nbounds)
{
    tp_metric_t *m = tp_calloc(1, sizeof(*m));
    m->kind = kind;
    m->name = tp_strdup(name);
    m->help = tp_strdup(help != NULL ? help : "");
    m->labels = tp_calloc(nlabels, sizeof(char *));
    for (size_t i = 0; i < nlabels; i++)
        m->labels[i] = tp_strdup(labels[i]);
    m->nlabels = nlabels;
    m->bounds = tp_calloc(nbounds, sizeof(double));
    if (nbounds > 0)
        memcpy(m->bounds, bounds, nbounds * sizeof(double));
    m->nbounds = nbounds;
    m->nshards = reg->nshards;
    pthread_mutex_init(&m->lock, NULL);

    void *shards = NULL;
    if (posix_memalign(&shards, CACHE_LINE, reg->nshards * sizeof(struct shard)) != 0)
        tp_fatal("out of memory");
    m->shards = shards;
    for (unsigned i = 0; i < reg->nshards; i++) {
        memset(&m->shards[i], 0, sizeof(m->shards[i]));
        pthread_mutex_init(&m->shards[i].lock, NULL);
    }
    return m;
}

static tp_metric_t *
register_family(tp_metrics_t *reg, enum kind kind, const char *name, const char *help, const char *const *labels,
                const double *bounds, size_t nbounds, double (*fn)(void *), void *data)
{
    if (!valid_name(name, true))
        tp_fatal(tp_sprintf("metrics: invalid metric name \"%s\"", name != NULL ? name : "(null)"));
    size_t nlabels = count_labels(labels);
    check_labels(name, kind, labels, nlabels);
    check_bounds(name, bounds, nbounds);

    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->nfamilies; i++) {
        tp_metric_t *m = reg->families[i];
        if (strcmp(m->name, name) != 0)
            continue;
        if (!same_family(m, kind, labels, nlabels, bounds, nbounds, fn, data))
            tp_fatal(tp_sprintf("metrics: %s registered twice with a different type or labels", name));
        pthread_mutex_unlock(&reg->lock);
        return m;
    }

    tp_metric_t *m = family_new(reg, kind, name, help, labels, nlabels, bounds, nbounds);
    m->fn = fn;
    m->fn_data = data;
    /* A family without labels has exactly one series: create it now so that it renders as 0
     * before anything is recorded. */
    if (nlabels == 0 && kind != KIND_GAUGE_FN)
        series_get_locked(m, NULL, hash_values(NULL, 0));
    if (reg->nfamilies == reg->families_cap) {
        reg->families_cap = reg->families_cap != 0 ? reg->families_cap * 2 : TABLE_MIN_SLOTS;
        reg->families = tp_realloc(reg->families, reg->families_cap * sizeof(*reg->families));
    }
    reg->families[reg->nfamilies++] = m;
    pthread_mutex_unlock(&reg->lock);
    return m;
}

tp_metric_t *
tp_metrics_counter(tp_metrics_t *reg, const char *name, const char *help, const char *const *labels)
{
    return register_family(reg, KIND_COUNTER, name, help, labels, NULL, 0, NULL, NULL);
}

tp_metric_t *
tp_metrics_gauge(tp_metrics_t *reg, const char *name, const char *help, const char *const *labels)
{
    return register_family(reg, KIND_GAUGE, name, help, labels, NULL, 0, NULL, NULL);
}

tp_metric_t *
tp_metrics_histogram(tp_metrics_t *reg, const char *name, const char *help, const char *const *labels,
                     const double *bounds, size_t nbounds)
{
    return register_family(reg, KIND_HISTOGRAM, name, help, labels, bounds, nbounds, NULL, NULL);
}

tp_metric_t *
tp_metrics_gauge_fn(tp_metrics_t *reg, const char *name, const char *help, double (*fn)(void *data), void *data)
{
    if (fn == NULL)
        tp_fatal(tp_sprintf("metrics: %s: gauge_fn without a function", name != NULL ? name : "(null)"));
    return register_family(reg, KIND_GAUGE_FN, name, help, NULL, NULL, 0, fn, data);
}

/* ---- registry -------------------------------------------------------------------------- */

tp_metrics_t *
tp_metrics_new(unsigned shards)
{
    assert(shards >= 1);
    tp_metrics_t *reg = tp_calloc(1, sizeof(*reg));
    reg->nshards = shards >= 1 ? shards : 1;
    pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

static void
family_free(tp_metric_t *m)
{
    for (unsigned i = 0; i < m->nshards; i++) {
        struct shard *sh = &m->shards[i];
        for (size_t j = 0; j < sh->cells.cap; j++)
            free(sh->cells.slots[j].cell);
        free(sh->cells.slots);
        pthread_mutex_destroy(&sh->lock);
    }
    free(m->shards);
    for (size_t i = 0; i < m->nseries; i++) {
        for (size_t j = 0; j < m->nlabels; j++)
            free(m->series[i]->values[j]);
        free(m->series[i]->values);
        free(m->series[i]);
    }
    free(m->series);
    free(m->index.slots);
    pthread_mutex_destroy(&m->lock);
    for (size_t i = 0; i < m->nlabels; i++)
        free(m->labels[i]);
    free(m->labels);
    free(m->bounds);
    free(m->name);
    free(m->help);
    free(m);
}

void
tp_metrics_free(tp_metrics_t *reg)
{
    if (reg == NULL)
        return;
    for (size_t i = 0; i < reg->nfamilies; i++)
        family_free(reg->families[i]);
    free(reg->families);
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

void
tp_metrics_bind_shard(unsigned shard)
{
    bound_shard = shard;
}

/* ---- recording ------------------------------------------------------------------------- */

__attribute__((noreturn)) static void
misuse(const tp_metric_t *m, const char *call)
{
    tp_fatal(tp_sprintf("metrics: %s on %s, a %s", call, m->name, kind_type[m->kind]));
}

void
tp_metric_add(tp_metric_t *m, const char *const *values, double v)
{
    if (m->kind != KIND_COUNTER && m->kind != KIND_GAUGE)
        misuse(m, "tp_metric_add");
    if (m->kind == KIND_COUNTER && !(v >= 0)) {
        assert(!"a counter only goes up");
        return;
    }
    struct shard *sh = current_shard(m);
    struct cell *c = lock_cell(m, sh, values);
    c->value += v;
    pthread_mutex_unlock(&sh->lock);
}

void
tp_metric_set(tp_metric_t *m, const char *const *values, double v)
{
    if (m->kind != KIND_GAUGE)
        misuse(m, "tp_metric_set");
    pthread_mutex_lock(&m->lock);
    struct series *s = series_get_locked(m, values, hash_values(values, m->nlabels));
    /* The set value replaces everything added before it, on every shard. */
    for (unsigned i = 0; i < m->nshards; i++) {
        struct shard *sh = &m->shards[i];
        pthread_mutex_lock(&sh->lock);
        struct cell *c = shard_cell_of(sh, m, s);
        if (c != NULL)
            c->value = 0;
        pthread_mutex_unlock(&sh->lock);
    }
    s->has_set = true;
    s->set_value = v;
    pthread_mutex_unlock(&m->lock);
}

/* Index of the bucket that counts v: the first bound >= v, or nbounds (+Inf). */
static size_t
bucket_of(const double *bounds, size_t n, double v)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

void
tp_metric_observe(tp_metric_t *m, const char *const *values, double v)
{
    if (m->kind != KIND_HISTOGRAM)
        misuse(m, "tp_metric_observe");
    size_t b = bucket_of(m->bounds, m->nbounds, v);
    struct shard *sh = current_shard(m);
    struct cell *c = lock_cell(m, sh, values);
    c->counts[b]++;
    c->value += v;
    pthread_mutex_unlock(&sh->lock);
}

double
tp_metric_value(tp_metric_t *m, const char *const *values)
{
    if (m->kind == KIND_GAUGE_FN)
        return m->fn(m->fn_data);
    if (m->kind == KIND_HISTOGRAM)
        misuse(m, "tp_metric_value");
    uint64_t hash = hash_values(values, m->nlabels);
    double v = 0;
    pthread_mutex_lock(&m->lock);
    struct slot *found = table_find(&m->index, hash, values, m->nlabels);
    if (found != NULL) {
        struct series *s = found->series;
        v = s->has_set ? s->set_value : 0;
        for (unsigned i = 0; i < m->nshards; i++) {
            pthread_mutex_lock(&m->shards[i].lock);
            struct cell *c = shard_cell_of(&m->shards[i], m, s);
            if (c != NULL)
                v += c->value;
            pthread_mutex_unlock(&m->shards[i].lock);
        }
    }
    pthread_mutex_unlock(&m->lock);
    return v;
}

/* ---- rendering ------------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t len;
    size_t cap;
};

static void
buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap != 0 ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->p = tp_realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
buf_puts(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* Appends s escaped for a HELP line (quote false) or a label value (quote true). */
static void
buf_escaped(struct buf *b, const char *s, bool quote)
{
    const char *run = s;
    for (const char *p = s; *p != '\0'; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (quote && *p == '"')
            esc = "\\\"";
        if (esc == NULL)
            continue;
        buf_add(b, run, (size_t)(p - run));
        buf_puts(b, esc);
        run = p + 1;
    }
    buf_puts(b, run);
}

/* Formats v as Prometheus reads it: integers without exponent or fraction, otherwise the
 * shortest of %.15g/%.16g/%.17g that reads back as v. */
static void
format_number(char out[32], double v)
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) <= 9007199254740992.0) { /* 2^53: every integer up to it is exact */
        snprintf(out, 32, "%.0f", v);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void
buf_number(struct buf *b, double v)
{
    char num[32];
    format_number(num, v);
    buf_puts(b, num);
}

static void
render_header(struct buf *b, const tp_metric_t *m)
{
    buf_puts(b, "# HELP ");
    buf_puts(b, m->name);
    buf_puts(b, " ");
    buf_escaped(b, m->help, false);
    buf_puts(b, "\n# TYPE ");
    buf_puts(b, m->name);
    buf_puts(b, " ");
    buf_puts(b, kind_type[m->kind]);
    buf_puts(b, "\n");
}

/* Appends `name<suffix>{labels[,le="le"]} value\n`. */
static void
render_sample(struct buf *b, const tp_metric_t *m, const struct series *s, const char *suffix, const char *le, double v)
{
    buf_puts(b, m->name);
    buf_puts(b, suffix);
    if (m->nlabels > 0 || le != NULL) {
        buf_puts(b, "{");
        for (size_t i = 0; i < m->nlabels; i++) {
            if (i > 0)
                buf_puts(b, ",");
            buf_puts(b, m->labels[i]);
            buf_puts(b, "=\"");
            buf_escaped(b, s->values[i], true);
            buf_puts(b, "\"");
        }
        if (le != NULL) {
            buf_puts(b, m->nlabels > 0 ? ",le=\"" : "le=\"");
            buf_puts(b, le);
            buf_puts(b, "\"");
        }
        buf_puts(b, "}");
    }
    buf_puts(b, " ");
    buf_number(b, v);
    buf_puts(b, "\n");
}

/* Sums of every series over the shards, indexed by series ord. */
struct totals {
    double *values;   /* counter/gauge value, or histogram sum */
    uint64_t *counts; /* histogram: (nbounds + 1) per series, not cumulative */
};

/* Merges the shards of m into t. Called with m->lock held, so no series appears meanwhile. */
static void
collect(tp_metric_t *m, struct totals *t)
{
    size_t width = m->nbounds + 1;
    t->values = tp_calloc(m->nseries, sizeof(double));
    t->counts = m->kind == KIND_HISTOGRAM ? tp_calloc(m->nseries * width, sizeof(uint64_t)) : NULL;
    for (size_t i = 0; i < m->nseries; i++) {
        if (m->series[i]->has_set)
            t->values[i] = m->series[i]->set_value;
    }
    for (unsigned i = 0; i < m->nshards; i++) {
        struct shard *sh = &m->shards[i];
        pthread_mutex_lock(&sh->lock);
        for (size_t j = 0; j < sh->cells.cap; j++) {
            const struct cell *c = sh->cells.slots[j].cell;
            if (c == NULL)
                continue;
            size_t ord = c->series->ord;
            assert(ord < m->nseries);
            t->values[ord] += c->value;
            for (size_t k = 0; t->counts != NULL && k < width; k++)
                t->counts[ord * width + k] += c->counts[k];
        }
        pthread_mutex_unlock(&sh->lock);
    }
}

static void
render_histogram(struct buf *b, const tp_metric_t *m, const struct series *s, const uint64_t *counts, double sum)
{
    uint64_t cumulative = 0;
    char le[32];
    for (size_t k = 0; k < m->nbounds; k++) {
        cumulative += counts[k];
        format_number(le, m->bounds[k]);
        render_sample(b, m, s, "_bucket", le, (double)cumulative);
    }
    cumulative += counts[m->nbounds];
    render_sample(b, m, s, "_bucket", "+Inf", (double)cumulative);
    render_sample(b, m, s, "_sum", NULL, sum);
    render_sample(b, m, s, "_count", NULL, (double)cumulative);
}

static void
render_family(struct buf *b, tp_metric_t *m)
{
    render_header(b, m);
    if (m->kind == KIND_GAUGE_FN) {
        buf_puts(b, m->name);
        buf_puts(b, " ");
        buf_number(b, m->fn(m->fn_data));
        buf_puts(b, "\n");
        return;
    }
    pthread_mutex_lock(&m->lock);
    struct totals t;
    collect(m, &t);
    for (size_t i = 0; i < m->nseries; i++) {
        if (m->kind == KIND_HISTOGRAM)
            render_histogram(b, m, m->series[i], &t.counts[i * (m->nbounds + 1)], t.values[i]);
        else
            render_sample(b, m, m->series[i], "", NULL, t.values[i]);
    }
    pthread_mutex_unlock(&m->lock);
    free(t.values);
    free(t.counts);
}

char *
tp_metrics_render(tp_metrics_t *reg, size_t *len)
{
    struct buf b = { 0 };
    buf_add(&b, "", 0);
    /* Gauge functions run with the registry mutex held: they must not register families. */
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->nfamilies; i++)
        render_family(&b, reg->families[i]);
    pthread_mutex_unlock(&reg->lock);
    if (len != NULL)
        *len = b.len;
    return b.p;
}
