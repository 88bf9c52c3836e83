/*
 * ratelimit.h — in-memory rate limits (requests per minute, tokens per minute) shared by all the
 * worker threads of a daemon.
 *
 * The algorithm is GCRA (the generic cell rate algorithm), which behaves as a token bucket of
 * depth `burst` refilled at `per_minute` units a minute, but keeps one number per key: the
 * theoretical arrival time (TAT), the moment the bucket will be full again. With T = 60 s /
 * per_minute (the emission interval) and tau = burst * T, a take of `cost` units at `now` computes
 * tat' = max(TAT, now) + cost * T and is allowed when tat' - now <= tau; the key then stores tat'.
 *
 * Keys are strings the caller builds ("p:alice", "t:ml", "pr:alice|llama3"); the limits are
 * passed on every call, so changing a limit (a reload) needs no call here, and one key's state
 * survives it. Times are nanoseconds on a monotonic clock the caller reads (uv_hrtime(),
 * CLOCK_MONOTONIC); tests inject them. Every call is thread-safe.
 *
 * Concurrency: the table is split into stripes by key hash, each with its own read-write lock.
 * A take on an existing key holds its stripe's lock shared and updates the TAT with a
 * compare-and-swap, so threads on one hot key never serialise on a mutex, and threads on
 * different keys rarely touch the same lock. Only the first take of a key (an insert) and
 * reclaiming take a stripe's lock exclusively; no call ever holds two stripe locks.
 *
 * Bound: the table holds at most max_keys keys. An entry whose TAT is in the past holds nothing
 * worth keeping (a full bucket is what a new key gets anyway), so when the table is full an
 * insert reclaims every such entry. When none can be reclaimed, the request is allowed without
 * being tracked, and the "untracked" counter (pol_ratelimit_stats) goes up, with a warning in the
 * log at most once a minute: the limits then fail open for keys never seen, rather than refusing
 * callers because of other callers. Size max_keys for principals x limited resources in use per
 * window. Sweeps are serialised by the one table-wide mutex, taken only when the table is full;
 * a sweep after a fruitless one waits until the earliest TAT has passed, so while the table stays
 * full a new key costs O(1), not a scan.
 */
#ifndef POL_RATELIMIT_H
#define POL_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pol_ratelimit pol_ratelimit_t;

/* max_keys when the caller passes 0: enough for every principal of a large organisation times a
 * few models, at about 100 bytes a key. */
#define POL_RATELIMIT_DEFAULT_MAX_KEYS 100000

typedef struct pol_ratelimit_stats {
    size_t keys;        /* keys in the table now */
    size_t max_keys;    /* the bound */
    uint64_t untracked; /* takes and charges let through (or dropped) because the table was full */
    uint64_t reclaimed; /* entries removed because their TAT had passed */
} pol_ratelimit_stats_t;

/* Creates an empty table for at most max_keys keys (0: POL_RATELIMIT_DEFAULT_MAX_KEYS). Aborts on
 * out-of-memory. Free with pol_ratelimit_free. */
pol_ratelimit_t *pol_ratelimit_new(size_t max_keys);

/* Frees the table and every key in it. No thread may use it afterwards. NULL does nothing. */
void pol_ratelimit_free(pol_ratelimit_t *rl);

/* Takes `cost` units from `key`'s bucket at now_ns, or refuses.
 *
 * per_minute: the sustained rate in units a minute; <= 0 (or NaN) means no limit: always
 *   allowed, and the table is not touched.
 * burst: the bucket depth in units; 0 (or less) means one minute's worth (burst = per_minute),
 *   so "60 a minute" lets a client send 60 at once, as the name suggests. Values between 0 and 1
 *   count as 1.
 * cost: units taken (1 for a request; the estimated tokens for a tokens-per-minute limit).
 *   0 takes nothing and answers whether the key is in debt: after pol_ratelimit_charge pushed
 *   it past its bucket, takes of cost 0 are refused until the debt is paid back. Negative counts
 *   as 0. A cost larger than the whole bucket could never fit; such a take is allowed when the
 *   bucket is full and then charges its whole cost (the key waits correspondingly longer), and
 *   is otherwise refused until the bucket is full.
 *
 * Returns true when allowed (and the units are consumed). Returns false when refused: nothing is
 * consumed and *retry_after_s (when not NULL) is the time in seconds until the same take would
 * be allowed, exact to the nanosecond; planes round it up for Retry-After. When allowed,
 * *retry_after_s is 0. The key is copied when it is new. */
bool pol_ratelimit_take(pol_ratelimit_t *rl, const char *key, double per_minute, double burst, double cost,
                        int64_t now_ns, double *retry_after_s);

/* Consumes `cost` units from `key`'s bucket unconditionally, for usage known only afterwards
 * (the tokens of a response). The bucket may go into debt, and later takes wait until it is
 * paid back. per_minute and burst as for pol_ratelimit_take (burst is unused but kept so calls
 * mirror take). A charge that finds the table full and nothing to reclaim is dropped and counted
 * as untracked. */
void pol_ratelimit_charge(pol_ratelimit_t *rl, const char *key, double per_minute, double burst, double cost,
                          int64_t now_ns);

/* Forgets `key` (its bucket is full again), e.g. when an operator resets a principal's limits.
 * Returns true when the key was in the table. */
bool pol_ratelimit_reset_key(pol_ratelimit_t *rl, const char *key);

/* Counters for the status command and metrics. Thread-safe; the numbers are read one by one,
 * each exact at some moment during the call. */
void pol_ratelimit_stats(pol_ratelimit_t *rl, pol_ratelimit_stats_t *out);

#endif
