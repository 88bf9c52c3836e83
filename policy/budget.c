#include "budget.h"

#include "log.h"
#include "mem.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * Layout. Counters are individually allocated (a reservation holds pointers to them) and chained
 * in STRIPES hash tables, each behind its own mutex; the top bits of a counter's hash choose the
 * stripe, the low bits the bucket. Every field of a counter is guarded by its stripe's mutex.
 *
 * A counter whose period has ended is dropped when its stripe next creates a counter, unless a
 * reservation still holds it (pins), in which case it waits for the settle.
 */

/* A power of two. */
#define STRIPES     64
#define STRIPE_BITS 6

/* Buckets a stripe starts with; it doubles them when it has more counters than buckets. */
#define STRIPE_MIN_BUCKETS 8

#define CACHE_LINE 64

#define MS_PER_DAY ((int64_t)86400000)

struct pol_budget_counter {
    struct pol_budget_counter *next;
    uint64_t hash;
    pol_budget_scope_t kind;
    pol_budget_period_t period;
    int64_t start_ms; /* the period's first millisecond */
    int64_t end_ms;   /* the next period's first millisecond */
    int64_t used_tokens;
    int64_t used_cost_micros;
    int64_t reserved_tokens;
    int64_t reserved_cost_micros;
    unsigned pins;   /* active reservations holding this counter */
    unsigned stripe; /* index of the stripe holding it */
    char scope[];
};

struct stripe {
    _Alignas(CACHE_LINE) pthread_mutex_t lock;
    pol_budget_counter_t **buckets; /* nbuckets chains; a power of two */
    size_t nbuckets;
    size_t count;
    int64_t next_expiry_ms; /* no counter here has a period ending before this */
};

struct pol_budgets {
    struct stripe stripes[STRIPES];
};

/* What a counter is looked up by. */
struct target {
    pol_budget_scope_t kind;
    pol_budget_period_t period;
    const char *scope;
    int64_t start_ms;
    int64_t end_ms;
    uint64_t hash;
    pol_budget_counter_t *counter; /* found or created, with its stripe locked */
};

/* ---- names and periods ------------------------------------------------------------------- */

const char *
pol_budget_scope_name(pol_budget_scope_t kind)
{
    return kind == POL_BUDGET_TEAM ? "team" : "principal";
}

int
pol_budget_scope_parse(const char *name, pol_budget_scope_t *out)
{
    if (strcmp(name, "principal") == 0)
        *out = POL_BUDGET_PRINCIPAL;
    else if (strcmp(name, "team") == 0)
        *out = POL_BUDGET_TEAM;
    else
        return -EINVAL;
    return 0;
}

const char *
pol_budget_period_name(pol_budget_period_t period)
{
    return period == POL_BUDGET_MONTH ? "month" : "day";
}

int
pol_budget_period_parse(const char *name, pol_budget_period_t *out)
{
    if (strcmp(name, "day") == 0)
        *out = POL_BUDGET_DAY;
    else if (strcmp(name, "month") == 0)
        *out = POL_BUDGET_MONTH;
    else
        return -EINVAL;
    return 0;
}

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Unix ms of 00:00Z on the 1st of month `mon` (0-11; 12 is January of the next year) of tm year
 * `year` (years since 1900). timegm normalises the month. */
static int64_t
month_start_ms(int year, int mon)
{
    struct tm t = { .tm_year = year, .tm_mon = mon, .tm_mday = 1 };
    return (int64_t)timegm(&t) * 1000;
}

/* The month containing day number `day` (days since 1970-01-01), cached per thread: the hot
 * path pays for gmtime and timegm once a day. */
static void
month_bounds(int64_t day, int64_t *start_ms, int64_t *end_ms)
{
    static _Thread_local struct {
        bool valid;
        int64_t day;
        int64_t start_ms;
        int64_t end_ms;
    } cache;
    if (!cache.valid || cache.day != day) {
        time_t secs = (time_t)(day * 86400);
        struct tm tm;
        if (gmtime_r(&secs, &tm) == NULL)
            tp_fatal("gmtime_r: time out of range");
        cache.start_ms = month_start_ms(tm.tm_year, tm.tm_mon);
        cache.end_ms = month_start_ms(tm.tm_year, tm.tm_mon + 1);
        cache.day = day;
        cache.valid = true;
    }
    *start_ms = cache.start_ms;
    *end_ms = cache.end_ms;
}

static void
period_bounds(pol_budget_period_t period, int64_t now_ms, int64_t *start_ms, int64_t *end_ms)
{
    int64_t day = floor_div(now_ms, MS_PER_DAY);
    if (period == POL_BUDGET_MONTH) {
        month_bounds(day, start_ms, end_ms);
        return;
    }
    *start_ms = day * MS_PER_DAY;
    *end_ms = *start_ms + MS_PER_DAY;
}

int64_t
pol_budget_period_start(pol_budget_period_t period, int64_t now_ms)
{
    int64_t start, end;
    period_bounds(period, now_ms, &start, &end);
    return start;
}

int64_t
pol_budget_period_end(pol_budget_period_t period, int64_t now_ms)
{
    int64_t start, end;
    period_bounds(period, now_ms, &start, &end);
    return end;
}

/* ---- arithmetic -------------------------------------------------------------------------- */

static int64_t
add_sat(int64_t a, int64_t b)
{
    assert(a >= 0 && b >= 0);
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* True when a limit of max refuses est more on top of used + reserved. */
static bool
exceeds(int64_t used, int64_t reserved, int64_t est, int64_t max)
{
    if (max <= 0)
        return false;
    int64_t held = add_sat(used, reserved);
    return held >= max || est > max - held;
}

int64_t
pol_cost_micros(int64_t input_tokens, int64_t output_tokens, double input_per_million, double output_per_million)
{
    long double total = 0;
    if (input_tokens > 0 && input_per_million > 0)
        total += (long double)input_tokens * input_per_million;
    if (output_tokens > 0 && output_per_million > 0)
        total += (long double)output_tokens * output_per_million;
    total += 0.5L;
    if (total >= (long double)INT64_MAX)
        return INT64_MAX;
    return (int64_t)total;
}

/* ---- counters ---------------------------------------------------------------------------- */

/* FNV-1a over the scope, then the kind, period and period start. */
static uint64_t
target_hash(const struct target *t)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)t->scope; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    uint64_t tail[] = { (uint64_t)t->kind, (uint64_t)t->period, (uint64_t)t->start_ms };
    for (size_t i = 0; i < sizeof(tail) / sizeof(tail[0]); i++) {
        h ^= tail[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void
target_init(struct target *t, pol_budget_scope_t kind, const char *scope, pol_budget_period_t period, int64_t now_ms)
{
    t->kind = kind;
    t->scope = scope;
    t->period = period;
    period_bounds(period, now_ms, &t->start_ms, &t->end_ms);
    t->hash = target_hash(t);
    t->counter = NULL;
}

static unsigned
stripe_index(uint64_t hash)
{
    return (unsigned)(hash >> (64 - STRIPE_BITS));
}

static bool
counter_is(const pol_budget_counter_t *c, const struct target *t)
{
    return c->hash == t->hash && c->kind == t->kind && c->period == t->period && c->start_ms == t->start_ms &&
           strcmp(c->scope, t->scope) == 0;
}

/* The counter for t, or NULL. The stripe is locked. */
static pol_budget_counter_t *
stripe_find(const struct stripe *s, const struct target *t)
{
    for (pol_budget_counter_t *c = s->buckets[t->hash & (s->nbuckets - 1)]; c != NULL; c = c->next) {
        if (counter_is(c, t))
            return c;
    }
    return NULL;
}

static void
stripe_grow(struct stripe *s)
{
    size_t n = s->nbuckets * 2;
    pol_budget_counter_t **b = tp_calloc(n, sizeof(*b));
    for (size_t i = 0; i < s->nbuckets; i++) {
        pol_budget_counter_t *c = s->buckets[i];
        while (c != NULL) {
            pol_budget_counter_t *next = c->next;
            c->next = b[c->hash & (n - 1)];
            b[c->hash & (n - 1)] = c;
            c = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/* Drops the counters of periods ended by now_ms that no reservation holds. The stripe is locked. */
static void
stripe_drop_ended(struct stripe *s, int64_t now_ms)
{
    int64_t next_expiry = INT64_MAX;
    for (size_t i = 0; i < s->nbuckets; i++) {
        pol_budget_counter_t **pp = &s->buckets[i];
        while (*pp != NULL) {
            pol_budget_counter_t *c = *pp;
            if (c->end_ms <= now_ms && c->pins == 0) {
                *pp = c->next;
                free(c);
                s->count--;
                continue;
            }
            if (c->end_ms < next_expiry)
                next_expiry = c->end_ms;
            pp = &c->next;
        }
    }
    s->next_expiry_ms = next_expiry;
}

/* The counter for t, created (at zero) when missing. The stripe is locked. */
static pol_budget_counter_t *
stripe_get(struct stripe *s, unsigned index, const struct target *t, int64_t now_ms)
{
    pol_budget_counter_t *c = stripe_find(s, t);
    if (c != NULL)
        return c;
    if (now_ms >= s->next_expiry_ms)
        stripe_drop_ended(s, now_ms);
    if (s->count >= s->nbuckets)
        stripe_grow(s);
    size_t len = strlen(t->scope);
    c = tp_calloc(1, sizeof(*c) + len + 1);
    memcpy(c->scope, t->scope, len + 1);
    c->hash = t->hash;
    c->kind = t->kind;
    c->period = t->period;
    c->start_ms = t->start_ms;
    c->end_ms = t->end_ms;
    c->stripe = index;
    pol_budget_counter_t **head = &s->buckets[t->hash & (s->nbuckets - 1)];
    c->next = *head;
    *head = c;
    s->count++;
    if (c->end_ms < s->next_expiry_ms)
        s->next_expiry_ms = c->end_ms;
    return c;
}

/* Sorts the n (<= POL_BUDGET_MAX_COUNTERS) stripe indexes and removes duplicates; returns how many
 * are left. Locking in this order is what keeps two reservations from deadlocking. */
static size_t
sort_unique(unsigned *idx, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        unsigned v = idx[i];
        size_t j = i;
        for (; j > 0 && idx[j - 1] > v; j--)
            idx[j] = idx[j - 1];
        idx[j] = v;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m == 0 || idx[m - 1] != idx[i])
            idx[m++] = idx[i];
    }
    return m;
}

static void
lock_stripes(pol_budgets_t *b, const unsigned *idx, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pthread_mutex_lock(&b->stripes[idx[i]].lock);
}

static void
unlock_stripes(pol_budgets_t *b, const unsigned *idx, size_t n)
{
    for (size_t i = n; i-- > 0;)
        pthread_mutex_unlock(&b->stripes[idx[i]].lock);
}

/* ---- life cycle -------------------------------------------------------------------------- */

pol_budgets_t *
pol_budgets_new(void)
{
    /* aligned_alloc, not calloc: the stripes are cache-line aligned, which malloc does not promise;
     * sizeof is a multiple of the alignment because the struct has that alignment. */
    pol_budgets_t *b = aligned_alloc(_Alignof(pol_budgets_t), sizeof(*b));
    if (b == NULL)
        tp_fatal("out of memory");
    memset(b, 0, sizeof(*b));
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *s = &b->stripes[i];
        if (pthread_mutex_init(&s->lock, NULL) != 0)
            tp_fatal("pthread_mutex_init failed");
        s->nbuckets = STRIPE_MIN_BUCKETS;
        s->buckets = tp_calloc(s->nbuckets, sizeof(*s->buckets));
        s->next_expiry_ms = INT64_MAX;
    }
    return b;
}

void
pol_budgets_free(pol_budgets_t *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *s = &b->stripes[i];
        for (size_t j = 0; j < s->nbuckets; j++) {
            pol_budget_counter_t *c = s->buckets[j];
            while (c != NULL) {
                pol_budget_counter_t *next = c->next;
                free(c);
                c = next;
            }
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    free(b);
}

/* ---- seeding ----------------------------------------------------------------------------- */

/* Sets one counter's used values. */
static void
seed_counter(pol_budgets_t *b, pol_budget_scope_t kind, const char *scope, pol_budget_period_t period, int64_t now_ms,
             int64_t tokens, int64_t cost_micros)
{
    struct target t;
    target_init(&t, kind, scope, period, now_ms);
    unsigned index = stripe_index(t.hash);
    struct stripe *s = &b->stripes[index];
    pthread_mutex_lock(&s->lock);
    pol_budget_counter_t *c = stripe_get(s, index, &t, now_ms);
    c->used_tokens = tokens > 0 ? tokens : 0;
    c->used_cost_micros = cost_micros > 0 ? cost_micros : 0;
    pthread_mutex_unlock(&s->lock);
}

/* One pass over the month's rows per scope kind; the day's sums are the rows of the month that
 * also fall in the day. The bounded ts_ms range keeps it to this month's rows: without statistics
 * SQLite reads them through usage_ts (contiguous, since rows arrive in time order: about 100 ms
 * for 170k rows), after ANALYZE through a skip-scan of usage_principal_ts / usage_team_ts. */
static const char *const seed_sql[] = {
    [POL_BUDGET_PRINCIPAL] = "SELECT principal_id,"
                             " SUM(CASE WHEN ts_ms >= ?3 AND ts_ms < ?4 THEN input_tokens + output_tokens ELSE 0 END),"
                             " SUM(CASE WHEN ts_ms >= ?3 AND ts_ms < ?4 THEN cost_micros ELSE 0 END),"
                             " SUM(input_tokens + output_tokens), SUM(cost_micros)"
                             " FROM usage WHERE ts_ms >= ?1 AND ts_ms < ?2 GROUP BY principal_id",
    [POL_BUDGET_TEAM] = "SELECT team,"
                        " SUM(CASE WHEN ts_ms >= ?3 AND ts_ms < ?4 THEN input_tokens + output_tokens ELSE 0 END),"
                        " SUM(CASE WHEN ts_ms >= ?3 AND ts_ms < ?4 THEN cost_micros ELSE 0 END),"
                        " SUM(input_tokens + output_tokens), SUM(cost_micros)"
                        " FROM usage WHERE team IS NOT NULL AND ts_ms >= ?1 AND ts_ms < ?2 GROUP BY team",
};

static int
seed_scope(pol_budgets_t *b, sqlite3 *db, pol_budget_scope_t kind, int64_t now_ms, char **err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, seed_sql[kind], -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(stmt, 1, pol_budget_period_start(POL_BUDGET_MONTH, now_ms));
    sqlite3_bind_int64(stmt, 2, pol_budget_period_end(POL_BUDGET_MONTH, now_ms));
    sqlite3_bind_int64(stmt, 3, pol_budget_period_start(POL_BUDGET_DAY, now_ms));
    sqlite3_bind_int64(stmt, 4, pol_budget_period_end(POL_BUDGET_DAY, now_ms));
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *scope = (const char *)sqlite3_column_text(stmt, 0);
        if (scope == NULL)
            continue;
        seed_counter(b, kind, scope, POL_BUDGET_DAY, now_ms, sqlite3_column_int64(stmt, 1),
                     sqlite3_column_int64(stmt, 2));
        seed_counter(b, kind, scope, POL_BUDGET_MONTH, now_ms, sqlite3_column_int64(stmt, 3),
                     sqlite3_column_int64(stmt, 4));
    }
    if (rc != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(stmt);
    return 0;

fail:
    *err = tp_sprintf("seed budgets (%s): %s", pol_budget_scope_name(kind), sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    return -EIO;
}

int
pol_budgets_seed(pol_budgets_t *b, sqlite3 *db, int64_t now_ms, char **err)
{
    int rv = seed_scope(b, db, POL_BUDGET_PRINCIPAL, now_ms, err);
    if (rv != 0)
        return rv;
    return seed_scope(b, db, POL_BUDGET_TEAM, now_ms, err);
}

/* ---- reservations ------------------------------------------------------------------------ */

/* The target a limit applies to, or -1 when it names none of them. */
static int
match_limit(const struct target *t, size_t nt, const pol_budget_limit_t *limit)
{
    if (limit->scope == NULL)
        return -1;
    for (size_t i = 0; i < nt; i++) {
        if (t[i].kind == limit->scope_kind && t[i].period == limit->period && strcmp(t[i].scope, limit->scope) == 0)
            return (int)i;
    }
    return -1;
}

/* Records a refusal in *over unless one that resets later is already there. */
static void
note_over(pol_budget_over_t *over, const pol_budget_limit_t *limit, bool tokens, const pol_budget_counter_t *c)
{
    if (over->limit != NULL && over->resets_at_ms >= c->end_ms)
        return;
    over->limit = limit;
    over->tokens = tokens;
    over->used = tokens ? c->used_tokens : c->used_cost_micros;
    over->reserved = tokens ? c->reserved_tokens : c->reserved_cost_micros;
    over->max = tokens ? limit->max_tokens : limit->max_cost_micros;
    over->resets_at_ms = c->end_ms;
}

pol_budget_status_t
pol_budget_reserve(pol_budgets_t *b, const pol_budget_limit_t *limits, size_t n, const char *principal,
                   const char *team, int64_t est_tokens, int64_t est_cost_micros, int64_t now_ms,
                   pol_reservation_t *out)
{
    memset(out, 0, sizeof(*out));
    if (principal == NULL || est_tokens < 0 || est_cost_micros < 0 || (n > 0 && limits == NULL))
        return POL_BUDGET_INVALID;

    struct target t[POL_BUDGET_MAX_COUNTERS];
    size_t nt = 0;
    target_init(&t[nt++], POL_BUDGET_PRINCIPAL, principal, POL_BUDGET_DAY, now_ms);
    target_init(&t[nt++], POL_BUDGET_PRINCIPAL, principal, POL_BUDGET_MONTH, now_ms);
    if (team != NULL) {
        target_init(&t[nt++], POL_BUDGET_TEAM, team, POL_BUDGET_DAY, now_ms);
        target_init(&t[nt++], POL_BUDGET_TEAM, team, POL_BUDGET_MONTH, now_ms);
    }
    for (size_t i = 0; i < n; i++) {
        if (match_limit(t, nt, &limits[i]) < 0)
            return POL_BUDGET_INVALID;
    }

    unsigned idx[POL_BUDGET_MAX_COUNTERS];
    for (size_t i = 0; i < nt; i++)
        idx[i] = stripe_index(t[i].hash);
    size_t nidx = sort_unique(idx, nt);
    lock_stripes(b, idx, nidx);
    for (size_t i = 0; i < nt; i++) {
        unsigned index = stripe_index(t[i].hash);
        t[i].counter = stripe_get(&b->stripes[index], index, &t[i], now_ms);
    }

    for (size_t i = 0; i < n; i++) {
        const pol_budget_limit_t *limit = &limits[i];
        const pol_budget_counter_t *c = t[match_limit(t, nt, limit)].counter;
        if (exceeds(c->used_tokens, c->reserved_tokens, est_tokens, limit->max_tokens))
            note_over(&out->over, limit, true, c);
        if (exceeds(c->used_cost_micros, c->reserved_cost_micros, est_cost_micros, limit->max_cost_micros))
            note_over(&out->over, limit, false, c);
    }
    if (out->over.limit != NULL) {
        unlock_stripes(b, idx, nidx);
        return POL_BUDGET_OVER;
    }

    for (size_t i = 0; i < nt; i++) {
        pol_budget_counter_t *c = t[i].counter;
        c->reserved_tokens = add_sat(c->reserved_tokens, est_tokens);
        c->reserved_cost_micros = add_sat(c->reserved_cost_micros, est_cost_micros);
        c->pins++;
        out->counters[i] = c;
    }
    unlock_stripes(b, idx, nidx);
    out->ncounters = nt;
    out->tokens = est_tokens;
    out->cost_micros = est_cost_micros;
    out->reserved_at_ms = now_ms;
    out->active = true;
    return POL_BUDGET_OK;
}

/* Releases r's estimate from its counters and adds tokens and cost as used. */
static void
release(pol_budgets_t *b, pol_reservation_t *r, int64_t tokens, int64_t cost_micros)
{
    if (!r->active)
        return;
    unsigned idx[POL_BUDGET_MAX_COUNTERS];
    for (size_t i = 0; i < r->ncounters; i++)
        idx[i] = r->counters[i]->stripe;
    size_t nidx = sort_unique(idx, r->ncounters);
    lock_stripes(b, idx, nidx);
    for (size_t i = 0; i < r->ncounters; i++) {
        pol_budget_counter_t *c = r->counters[i];
        assert(c->pins > 0 && c->reserved_tokens >= r->tokens && c->reserved_cost_micros >= r->cost_micros);
        c->reserved_tokens -= r->tokens;
        c->reserved_cost_micros -= r->cost_micros;
        c->pins--;
        c->used_tokens = add_sat(c->used_tokens, tokens);
        c->used_cost_micros = add_sat(c->used_cost_micros, cost_micros);
    }
    unlock_stripes(b, idx, nidx);
    r->active = false;
}

void
pol_budget_settle(pol_budgets_t *b, pol_reservation_t *r, int64_t actual_tokens, int64_t actual_cost_micros)
{
    release(b, r, actual_tokens > 0 ? actual_tokens : 0, actual_cost_micros > 0 ? actual_cost_micros : 0);
}

void
pol_budget_cancel(pol_budgets_t *b, pol_reservation_t *r)
{
    release(b, r, 0, 0);
}

/* ---- reading ----------------------------------------------------------------------------- */

void
pol_budget_usage(pol_budgets_t *b, pol_budget_scope_t kind, const char *scope, pol_budget_period_t period,
                 int64_t now_ms, pol_budget_usage_t *out)
{
    struct target t;
    target_init(&t, kind, scope, period, now_ms);
    memset(out, 0, sizeof(*out));
    out->period_start_ms = t.start_ms;
    out->resets_at_ms = t.end_ms;
    struct stripe *s = &b->stripes[stripe_index(t.hash)];
    pthread_mutex_lock(&s->lock);
    const pol_budget_counter_t *c = stripe_find(s, &t);
    if (c != NULL) {
        out->used_tokens = c->used_tokens;
        out->used_cost_micros = c->used_cost_micros;
        out->reserved_tokens = c->reserved_tokens;
        out->reserved_cost_micros = c->reserved_cost_micros;
    }
    pthread_mutex_unlock(&s->lock);
}

/* An integer, or null when the limit is 0 (none). Returns a new reference. */
static json_t *
limit_json(int64_t max)
{
    return max > 0 ? json_integer(max) : json_null();
}

static json_t *
period_json(pol_budgets_t *b, pol_budget_scope_t kind, const char *scope, pol_budget_period_t period,
            const pol_budget_limit_t *limits, size_t n, int64_t now_ms)
{
    pol_budget_usage_t u;
    pol_budget_usage(b, kind, scope, period, now_ms, &u);
    int64_t max_tokens = 0, max_cost = 0;
    for (size_t i = 0; i < n; i++) {
        const pol_budget_limit_t *l = &limits[i];
        if (l->scope_kind == kind && l->period == period && l->scope != NULL && strcmp(l->scope, scope) == 0) {
            max_tokens = l->max_tokens;
            max_cost = l->max_cost_micros;
        }
    }
    /* json_pack's "o" steals the references limit_json returns. */
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "period_start_ms", (json_int_t)u.period_start_ms,
                     "resets_at_ms", (json_int_t)u.resets_at_ms, "used_tokens", (json_int_t)u.used_tokens,
                     "used_cost_micros", (json_int_t)u.used_cost_micros, "reserved_tokens",
                     (json_int_t)u.reserved_tokens, "reserved_cost_micros", (json_int_t)u.reserved_cost_micros,
                     "max_tokens", limit_json(max_tokens), "max_cost_micros", limit_json(max_cost));
}

json_t *
pol_budget_usage_json(pol_budgets_t *b, pol_budget_scope_t kind, const char *scope, const pol_budget_limit_t *limits,
                      size_t n, int64_t now_ms)
{
    if (limits == NULL)
        n = 0;
    json_t *o = json_pack("{s:s, s:s, s:o, s:o}", "scope_kind", pol_budget_scope_name(kind), "scope", scope, "day",
                          period_json(b, kind, scope, POL_BUDGET_DAY, limits, n, now_ms), "month",
                          period_json(b, kind, scope, POL_BUDGET_MONTH, limits, n, now_ms));
    if (o == NULL)
        tp_fatal("json_pack failed (out of memory)");
    return o;
}
