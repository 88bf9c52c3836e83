/*
 * budget.h — budgets in tokens and money per principal and per team, per UTC day and per UTC
 * calendar month, with reservations held while a request runs.
 *
 * A plane asks pol_budget_reserve before it sends a request upstream, with an estimate of the
 * tokens and cost; when the request ends it calls pol_budget_settle with what was really used (or
 * pol_budget_cancel when it failed before using anything). Money is int64 micro-units (millionths
 * of the currency unit) everywhere; no counter is ever a floating-point number.
 *
 * Counters live in this process's memory, one per (scope kind, scope, period, period start): a
 * request counts against its principal's day and month and, when it has a team, its team's day
 * and month, whether or not a limit applies (so `gwctl budget show` and a limit set later see the
 * usage). At start-up pol_budgets_seed sums the store's usage table, so a restart does not reset a
 * budget. Each daemon counts what it serves; the store is where they meet.
 *
 * Periods are UTC: a day starts at 00:00:00.000Z, a month at 00:00 on its 1st. When now crosses
 * into a new period, the new period's counters start at zero; the old ones are dropped lazily.
 *
 * Thread-safety: every call. Counters are spread over striped mutexes by hash; a reservation locks
 * the (at most four) stripes it touches in ascending order, checks every limit and adds its
 * estimate while holding them, so two concurrent reservations can never both pass when only one
 * fits. No lock is held across anything that blocks.
 */
#ifndef POL_BUDGET_H
#define POL_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

typedef struct pol_budgets pol_budgets_t;
typedef struct pol_budget_counter pol_budget_counter_t; /* opaque; held by reservations */

typedef enum pol_budget_scope {
    POL_BUDGET_PRINCIPAL = 0,
    POL_BUDGET_TEAM,
} pol_budget_scope_t;

typedef enum pol_budget_period {
    POL_BUDGET_DAY = 0, /* UTC calendar day */
    POL_BUDGET_MONTH,   /* UTC calendar month */
} pol_budget_period_t;

typedef enum pol_budget_status {
    POL_BUDGET_OK = 0,
    POL_BUDGET_OVER,    /* a limit would be exceeded; out->over says which */
    POL_BUDGET_INVALID, /* no principal, a negative estimate, or a limit naming neither the principal nor the team */
} pol_budget_status_t;

/* One limit, as the caller's policy snapshot holds it. */
typedef struct pol_budget_limit {
    pol_budget_scope_t scope_kind;
    const char *scope; /* the principal id or team name; borrowed */
    pol_budget_period_t period;
    int64_t max_tokens;      /* input + output tokens; 0 (or less) = no limit */
    int64_t max_cost_micros; /* 0 (or less) = no limit */
} pol_budget_limit_t;

/* Which limit refused a reservation, for the plane's error and its Retry-After. */
typedef struct pol_budget_over {
    const pol_budget_limit_t *limit; /* points into the caller's limits array */
    bool tokens;                     /* true: max_tokens refused; false: max_cost_micros */
    int64_t used;                    /* settled usage this period, in that unit */
    int64_t reserved;                /* held by requests in flight, in that unit */
    int64_t max;                     /* the limit, in that unit */
    int64_t resets_at_ms;            /* start of the next period: when the limit allows again */
} pol_budget_over_t;

/* Counters a reservation can hold: the principal's and the team's day and month. */
#define POL_BUDGET_MAX_COUNTERS 4

/* Caller-owned (on the request, say); filled by pol_budget_reserve, consumed by settle or cancel. */
typedef struct pol_reservation {
    pol_budget_counter_t *counters[POL_BUDGET_MAX_COUNTERS]; /* the counters holding the estimate */
    size_t ncounters;
    int64_t tokens;         /* the estimate held */
    int64_t cost_micros;    /* the estimate held */
    int64_t reserved_at_ms; /* now_ms of the reservation: stamp the usage row with it (see settle) */
    bool active;            /* reserved and not yet settled or cancelled */
    pol_budget_over_t over; /* filled when pol_budget_reserve returns POL_BUDGET_OVER */
} pol_reservation_t;

/* Usage of one scope in one period. */
typedef struct pol_budget_usage {
    int64_t period_start_ms;
    int64_t resets_at_ms; /* start of the next period */
    int64_t used_tokens;
    int64_t used_cost_micros;
    int64_t reserved_tokens; /* held by requests in flight */
    int64_t reserved_cost_micros;
} pol_budget_usage_t;

/* "principal" / "team" and "day" / "month", as the store's budgets table spells them. The parse
 * functions return 0, or -EINVAL for any other name. */
const char *pol_budget_scope_name(pol_budget_scope_t kind);
int pol_budget_scope_parse(const char *name, pol_budget_scope_t *out);
const char *pol_budget_period_name(pol_budget_period_t period);
int pol_budget_period_parse(const char *name, pol_budget_period_t *out);

/* The start of the UTC period containing now_ms, and the start of the next one (Unix ms). */
int64_t pol_budget_period_start(pol_budget_period_t period, int64_t now_ms);
int64_t pol_budget_period_end(pol_budget_period_t period, int64_t now_ms);

/* Creates an empty set of counters. Aborts on out-of-memory. */
pol_budgets_t *pol_budgets_new(void);

/* Frees every counter. Reservations still active become invalid (do not settle them). NULL does
 * nothing. */
void pol_budgets_free(pol_budgets_t *b);

/* Sets the used tokens and cost of the current day and month (those containing now_ms) of every
 * principal and team found in the store's usage table to the sums of its rows in those periods
 * (input_tokens + output_tokens, cost_micros), replacing what the counters held. Rows stamped
 * before the period, or in a later one, do not count. Meant for start-up, before requests are
 * served; reservations are untouched. `db` is used on the calling thread only. Returns 0, or
 * -EIO and a malloc'd message in *err ("seed budgets: no such table: usage"). */
int pol_budgets_seed(pol_budgets_t *b, sqlite3 *db, int64_t now_ms, char **err);

/* Reserves an estimate against the day and month counters of `principal` and of `team` (NULL:
 * none) for the periods containing now_ms, checking the n `limits` the caller found for them.
 *
 * A limit refuses when its budget has nothing left (used + reserved >= max) or when the estimate
 * does not fit (used + reserved + estimate > max): a request is refused when it would start over
 * budget, judged by its estimate, so concurrent requests cannot all start on the last bit of a
 * budget. The estimate is the caller's (prompt tokens + max output tokens, priced, is the safe
 * choice). A plane that wants a free model not to be stopped by a money budget leaves the money
 * limits out for it.
 *
 * Returns POL_BUDGET_OK with *out active; the caller must then call pol_budget_settle or
 * pol_budget_cancel exactly once. Returns POL_BUDGET_OVER with out->over naming the limit (when
 * several refuse, the one that resets last, so its Retry-After is one that will work) and nothing
 * reserved, or POL_BUDGET_INVALID with nothing reserved. Every limit must name `principal` (scope
 * kind principal) or `team` (scope kind team). */
pol_budget_status_t pol_budget_reserve(pol_budgets_t *b, const pol_budget_limit_t *limits, size_t n,
                                       const char *principal, const char *team, int64_t est_tokens,
                                       int64_t est_cost_micros, int64_t now_ms, pol_reservation_t *out);

/* Releases the reservation's estimate and adds the actual usage (which may exceed the estimate;
 * negative counts as 0) to the same counters. A reservation is charged to the periods it was
 * reserved in, even when settled after midnight: it was admitted against those budgets. To keep a
 * restart's seeding in agreement, the plane stamps the request's usage row with r->reserved_at_ms.
 * Leaves r inactive; a second settle or cancel does nothing. */
void pol_budget_settle(pol_budgets_t *b, pol_reservation_t *r, int64_t actual_tokens, int64_t actual_cost_micros);

/* Releases the reservation without any usage (the request failed before using anything). Leaves
 * r inactive; a second settle or cancel does nothing. */
void pol_budget_cancel(pol_budgets_t *b, pol_reservation_t *r);

/* The usage of one scope in the period containing now_ms (all zeros when nothing was counted). */
void pol_budget_usage(pol_budgets_t *b, pol_budget_scope_t kind, const char *scope, pol_budget_period_t period,
                      int64_t now_ms, pol_budget_usage_t *out);

/* The usage of one scope for `gwctl budget show`, as a new reference:
 *   {"scope_kind": "principal", "scope": "alice",
 *    "day": {"period_start_ms", "resets_at_ms", "used_tokens", "used_cost_micros", "reserved_tokens",
 *            "reserved_cost_micros", "max_tokens", "max_cost_micros"}, "month": {…}}
 * max_* come from the n `limits` (may be NULL) that name this scope and period, and are null when
 * none does. */
json_t *pol_budget_usage_json(pol_budgets_t *b, pol_budget_scope_t kind, const char *scope,
                              const pol_budget_limit_t *limits, size_t n, int64_t now_ms);

/* The cost of a request in micro-units, from prices in currency units per million tokens (as the
 * configuration's pricing gives them). A price per million tokens is a price in micro-units per
 * token, so this is input_tokens * input_per_million + output_tokens * output_per_million, summed
 * for the whole request and then rounded to the nearest micro-unit (halves up), so per-request
 * rounding never exceeds half a micro-unit. Negative or NaN counts and prices count as 0; the
 * result saturates at INT64_MAX. */
int64_t pol_cost_micros(int64_t input_tokens, int64_t output_tokens, double input_per_million,
                        double output_per_million);

#endif
