#include "ratelimit.h"

#include "log.h"
#include "mem.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/*
 * Layout. STRIPES stripes, chosen by the top bits of the key's hash; each is a chained hash table
 * (the low bits choose the bucket) behind a read-write lock. An entry's TAT is an atomic updated
 * by compare-and-swap while the stripe is held shared; the exclusive lock is for changing chains
 * (insert, reclaim, reset, resize), which is when no CAS may run on an entry being freed.
 *
 * The key count is one atomic for the whole table, reserved before an insert (fetch_add, undone
 * when over the bound). Reclaiming when full is serialised by sweep_lock, the only table-wide lock,
 * taken only on that degraded path; it locks one stripe at a time, never two.
 */

/* A power of two; 64 stripes make two workers meeting on one stripe rare with dozens of threads. */
#define STRIPES     64
#define STRIPE_BITS 6

/* Buckets a stripe starts with; the stripe doubles them when it has more entries than buckets. */
#define STRIPE_MIN_BUCKETS 16

/* Stripes are padded to a cache line so that locking one does not slow its neighbours. */
#define CACHE_LINE 64

#define NS_PER_MINUTE 60e9
#define NS_PER_SECOND 1e9

/* Longest wait one take or charge can add: about 31 years, far beyond any useful limit, and far
 * enough from INT64_MAX that sums of a few never overflow. */
#define MAX_SPAN_NS ((int64_t)1000000000000000000)

/* A full table warns at most this often. */
#define WARN_INTERVAL_NS ((int64_t)60 * 1000000000)

struct entry {
    struct entry *next;
    uint64_t hash;
    _Atomic int64_t tat; /* theoretical arrival time, ns; the bucket is full from then on */
    char key[];
};

struct stripe {
    _Alignas(CACHE_LINE) pthread_rwlock_t lock;
    struct entry **buckets; /* nbuckets chains; nbuckets is a power of two */
    size_t nbuckets;
    size_t count;
};

struct pol_ratelimit {
    struct stripe stripes[STRIPES];
    size_t max_keys;
    _Atomic size_t count; /* entries in all stripes, including slots reserved for an insert */
    _Atomic uint64_t untracked;
    _Atomic uint64_t reclaimed;
    /* No entry's TAT is below this: a sweep before it would reclaim nothing. Lowered by inserts,
     * recomputed by sweeps (under sweep_lock). */
    _Atomic int64_t sweep_floor_ns;
    _Atomic int64_t next_warn_ns;
    pthread_mutex_t sweep_lock;
};

/* The two lengths of time a take works with, in integer nanoseconds. */
struct gcra {
    int64_t inc; /* cost * T: how far the take moves the TAT */
    int64_t tau; /* burst * T: how far ahead of now the TAT may be */
};

/* ---- arithmetic -------------------------------------------------------------------------- */

/* units * interval_ns rounded to the nearest nanosecond, within [0, MAX_SPAN_NS]. */
static int64_t
span_ns(double units, double interval_ns)
{
    double v = units * interval_ns;
    if (!(v > 0))
        return 0;
    if (v >= (double)MAX_SPAN_NS)
        return MAX_SPAN_NS;
    return (int64_t)(v + 0.5);
}

static struct gcra
gcra_of(double per_minute, double burst, double cost)
{
    double interval_ns = NS_PER_MINUTE / per_minute;
    if (!(burst > 0))
        burst = per_minute;
    if (burst < 1)
        burst = 1;
    return (struct gcra){ .inc = span_ns(cost, interval_ns), .tau = span_ns(burst, interval_ns) };
}

static int64_t
add_sat(int64_t a, int64_t b)
{
    assert(b >= 0);
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* Moves the TAT for a take of g at now (force: a charge, which always succeeds). Returns false
 * and the wait in *wait_ns when refused, in which case the TAT is unchanged. */
static bool
gcra_apply(_Atomic int64_t *tatp, const struct gcra *g, int64_t now, bool force, int64_t *wait_ns)
{
    int64_t tat = atomic_load_explicit(tatp, memory_order_relaxed);
    for (;;) {
        int64_t next = add_sat(tat > now ? tat : now, g->inc);
        /* An oversize take (inc > tau) could never fit under the tolerance; it is let through
         * when the bucket is full instead. */
        bool fits = next - now <= g->tau || (g->inc > g->tau && tat <= now);
        if (!fits && !force) {
            /* tat > now here. Normal take: until next - tau reaches now; oversize: until full. */
            *wait_ns = tat - now + (g->inc < g->tau ? g->inc - g->tau : 0);
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(tatp, &tat, next, memory_order_relaxed, memory_order_relaxed))
            return true;
    }
}

/* ---- the table --------------------------------------------------------------------------- */

/* FNV-1a, 64 bits. */
static uint64_t
hash_key(const char *key)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

static struct stripe *
stripe_of(pol_ratelimit_t *rl, uint64_t hash)
{
    return &rl->stripes[hash >> (64 - STRIPE_BITS)];
}

/* The entry for key, or NULL. The stripe is locked (either way). */
static struct entry *
stripe_find(const struct stripe *s, const char *key, uint64_t hash)
{
    for (struct entry *e = s->buckets[hash & (s->nbuckets - 1)]; e != NULL; e = e->next) {
        if (e->hash == hash && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

/* Doubles the buckets. The stripe is locked exclusively. */
static void
stripe_grow(struct stripe *s)
{
    size_t n = s->nbuckets * 2;
    struct entry **b = tp_calloc(n, sizeof(*b));
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct entry *e = s->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/* Adds an entry (the slot is reserved in rl->count). The stripe is locked exclusively. */
static void
stripe_insert(pol_ratelimit_t *rl, struct stripe *s, const char *key, uint64_t hash, int64_t tat)
{
    size_t len = strlen(key);
    struct entry *e = tp_malloc(sizeof(*e) + len + 1);
    memcpy(e->key, key, len + 1);
    e->hash = hash;
    atomic_init(&e->tat, tat);
    if (s->count >= s->nbuckets)
        stripe_grow(s);
    struct entry **head = &s->buckets[hash & (s->nbuckets - 1)];
    e->next = *head;
    *head = e;
    s->count++;

    int64_t floor = atomic_load_explicit(&rl->sweep_floor_ns, memory_order_relaxed);
    while (tat < floor && !atomic_compare_exchange_weak_explicit(&rl->sweep_floor_ns, &floor, tat, memory_order_relaxed,
                                                                 memory_order_relaxed)) {
    }
}

/* Removes the entries whose TAT is at or before now; returns how many, and lowers *min_tat to
 * the smallest TAT left. The stripe is locked exclusively. */
static size_t
stripe_reclaim(struct stripe *s, int64_t now, int64_t *min_tat)
{
    size_t freed = 0;
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct entry **pp = &s->buckets[i];
        while (*pp != NULL) {
            struct entry *e = *pp;
            int64_t tat = atomic_load_explicit(&e->tat, memory_order_relaxed);
            if (tat <= now) {
                *pp = e->next;
                free(e);
                freed++;
                continue;
            }
            if (tat < *min_tat)
                *min_tat = tat;
            pp = &e->next;
        }
    }
    s->count -= freed;
    return freed;
}

/* Reserves a slot for one more key. */
static bool
reserve_slot(pol_ratelimit_t *rl)
{
    if (atomic_fetch_add_explicit(&rl->count, 1, memory_order_relaxed) < rl->max_keys)
        return true;
    atomic_fetch_sub_explicit(&rl->count, 1, memory_order_relaxed);
    return false;
}

/* The table is full: reclaims every entry whose TAT has passed, unless the floor says none has.
 * Returns true when there may be room now. Called with no stripe locked. */
static bool
make_room(pol_ratelimit_t *rl, int64_t now)
{
    pthread_mutex_lock(&rl->sweep_lock);
    if (atomic_load_explicit(&rl->count, memory_order_relaxed) < rl->max_keys) {
        pthread_mutex_unlock(&rl->sweep_lock);
        return true; /* another thread's sweep or a reset made room */
    }
    if (now < atomic_load_explicit(&rl->sweep_floor_ns, memory_order_relaxed)) {
        pthread_mutex_unlock(&rl->sweep_lock);
        return false;
    }
    /* Inserts during the sweep lower the floor from here; survivors lower it at the end. */
    atomic_store_explicit(&rl->sweep_floor_ns, INT64_MAX, memory_order_relaxed);
    int64_t min_tat = INT64_MAX;
    size_t freed = 0;
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *s = &rl->stripes[i];
        pthread_rwlock_wrlock(&s->lock);
        freed += stripe_reclaim(s, now, &min_tat);
        pthread_rwlock_unlock(&s->lock);
    }
    int64_t floor = atomic_load_explicit(&rl->sweep_floor_ns, memory_order_relaxed);
    while (min_tat < floor && !atomic_compare_exchange_weak_explicit(&rl->sweep_floor_ns, &floor, min_tat,
                                                                     memory_order_relaxed, memory_order_relaxed)) {
    }
    atomic_fetch_sub_explicit(&rl->count, freed, memory_order_relaxed);
    atomic_fetch_add_explicit(&rl->reclaimed, freed, memory_order_relaxed);
    pthread_mutex_unlock(&rl->sweep_lock);
    return freed > 0;
}

static void
count_untracked(pol_ratelimit_t *rl, int64_t now)
{
    uint64_t n = atomic_fetch_add_explicit(&rl->untracked, 1, memory_order_relaxed) + 1;
    int64_t next = atomic_load_explicit(&rl->next_warn_ns, memory_order_relaxed);
    if (now < next || !atomic_compare_exchange_strong_explicit(&rl->next_warn_ns, &next, now + WARN_INTERVAL_NS,
                                                               memory_order_relaxed, memory_order_relaxed))
        return;
    tp_warn("rate limit table full (%zu keys, none idle): new keys are not limited; %llu untracked so far",
            rl->max_keys, (unsigned long long)n);
}

/* The key was not found with the stripe held shared. A missing key has a full bucket, so the
 * take or charge succeeds whatever it costs; this stores its TAT (or finds the key inserted by
 * another thread meanwhile and applies to it, which may refuse). */
static bool
apply_missing(pol_ratelimit_t *rl, const char *key, uint64_t hash, const struct gcra *g, int64_t now, bool force,
              int64_t *wait_ns)
{
    struct stripe *s = stripe_of(rl, hash);
    int64_t tat = add_sat(now, g->inc);
    for (int attempt = 0;; attempt++) {
        pthread_rwlock_wrlock(&s->lock);
        struct entry *e = stripe_find(s, key, hash);
        if (e != NULL) {
            bool ok = gcra_apply(&e->tat, g, now, force, wait_ns);
            pthread_rwlock_unlock(&s->lock);
            return ok;
        }
        if (reserve_slot(rl)) {
            stripe_insert(rl, s, key, hash, tat);
            pthread_rwlock_unlock(&s->lock);
            return true;
        }
        pthread_rwlock_unlock(&s->lock);
        if (attempt > 0 || !make_room(rl, now))
            break;
    }
    count_untracked(rl, now);
    return true;
}

static bool
apply(pol_ratelimit_t *rl, const char *key, double per_minute, double burst, double cost, int64_t now, bool force,
      int64_t *wait_ns)
{
    *wait_ns = 0;
    if (!(per_minute > 0))
        return true;
    struct gcra g = gcra_of(per_minute, burst, cost);
    uint64_t hash = hash_key(key);
    struct stripe *s = stripe_of(rl, hash);

    pthread_rwlock_rdlock(&s->lock);
    struct entry *e = stripe_find(s, key, hash);
    if (e != NULL) {
        bool ok = gcra_apply(&e->tat, &g, now, force, wait_ns);
        pthread_rwlock_unlock(&s->lock);
        return ok;
    }
    pthread_rwlock_unlock(&s->lock);
    /* A take of nothing on a missing key leaves a full bucket: no state to store. */
    if (g.inc == 0)
        return true;
    return apply_missing(rl, key, hash, &g, now, force, wait_ns);
}

/* ---- public ------------------------------------------------------------------------------ */

pol_ratelimit_t *
pol_ratelimit_new(size_t max_keys)
{
    /* aligned_alloc, not calloc: the stripes are cache-line aligned, which malloc does not promise;
     * sizeof is a multiple of the alignment because the struct has that alignment. */
    pol_ratelimit_t *rl = aligned_alloc(_Alignof(pol_ratelimit_t), sizeof(*rl));
    if (rl == NULL)
        tp_fatal("out of memory");
    memset(rl, 0, sizeof(*rl));
    rl->max_keys = max_keys != 0 ? max_keys : POL_RATELIMIT_DEFAULT_MAX_KEYS;
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *s = &rl->stripes[i];
        if (pthread_rwlock_init(&s->lock, NULL) != 0)
            tp_fatal("pthread_rwlock_init failed");
        s->nbuckets = STRIPE_MIN_BUCKETS;
        s->buckets = tp_calloc(s->nbuckets, sizeof(*s->buckets));
    }
    atomic_init(&rl->count, 0);
    atomic_init(&rl->untracked, 0);
    atomic_init(&rl->reclaimed, 0);
    atomic_init(&rl->sweep_floor_ns, INT64_MIN);
    atomic_init(&rl->next_warn_ns, INT64_MIN);
    if (pthread_mutex_init(&rl->sweep_lock, NULL) != 0)
        tp_fatal("pthread_mutex_init failed");
    return rl;
}

void
pol_ratelimit_free(pol_ratelimit_t *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *s = &rl->stripes[i];
        for (size_t j = 0; j < s->nbuckets; j++) {
            struct entry *e = s->buckets[j];
            while (e != NULL) {
                struct entry *next = e->next;
                free(e);
                e = next;
            }
        }
        free(s->buckets);
        pthread_rwlock_destroy(&s->lock);
    }
    pthread_mutex_destroy(&rl->sweep_lock);
    free(rl);
}

bool
pol_ratelimit_take(pol_ratelimit_t *rl, const char *key, double per_minute, double burst, double cost, int64_t now_ns,
                   double *retry_after_s)
{
    int64_t wait_ns;
    bool ok = apply(rl, key, per_minute, burst, cost, now_ns, false, &wait_ns);
    if (retry_after_s != NULL)
        *retry_after_s = ok ? 0 : (double)wait_ns / NS_PER_SECOND;
    return ok;
}

void
pol_ratelimit_charge(pol_ratelimit_t *rl, const char *key, double per_minute, double burst, double cost, int64_t now_ns)
{
    int64_t wait_ns;
    bool ok = apply(rl, key, per_minute, burst, cost, now_ns, true, &wait_ns);
    assert(ok);
    (void)ok;
}

bool
pol_ratelimit_reset_key(pol_ratelimit_t *rl, const char *key)
{
    uint64_t hash = hash_key(key);
    struct stripe *s = stripe_of(rl, hash);
    pthread_rwlock_wrlock(&s->lock);
    for (struct entry **pp = &s->buckets[hash & (s->nbuckets - 1)]; *pp != NULL; pp = &(*pp)->next) {
        struct entry *e = *pp;
        if (e->hash == hash && strcmp(e->key, key) == 0) {
            *pp = e->next;
            s->count--;
            pthread_rwlock_unlock(&s->lock);
            free(e);
            atomic_fetch_sub_explicit(&rl->count, 1, memory_order_relaxed);
            return true;
        }
    }
    pthread_rwlock_unlock(&s->lock);
    return false;
}

void
pol_ratelimit_stats(pol_ratelimit_t *rl, pol_ratelimit_stats_t *out)
{
    size_t keys = atomic_load_explicit(&rl->count, memory_order_relaxed);
    /* A failed slot reservation holds one past the bound for an instant. */
    out->keys = keys < rl->max_keys ? keys : rl->max_keys;
    out->max_keys = rl->max_keys;
    out->untracked = atomic_load_explicit(&rl->untracked, memory_order_relaxed);
    out->reclaimed = atomic_load_explicit(&rl->reclaimed, memory_order_relaxed);
}
