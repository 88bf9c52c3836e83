/*
 * test_budget.c — tests for policy/budget.c.
 *
 * Times are Unix milliseconds of known UTC instants (checked with `date -u`), injected into every
 * call. Seeding runs against a real store made by tp_store_open in a temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "budget.h"
#include "mem.h"
#include "store.h"

#define DAY ((int64_t)86400000)

#define MAR15_2024_NOON ((int64_t)1710504000000)
#define MAR15_2024      ((int64_t)1710460800000)
#define MAR16_2024      ((int64_t)1710547200000)
#define MAR01_2024      ((int64_t)1709251200000)
#define APR01_2024      ((int64_t)1711929600000)
#define FEB29_2024      ((int64_t)1709164800000)
#define FEB01_2024      ((int64_t)1706745600000)
#define FEB28_2023      ((int64_t)1677542400000)
#define MAR01_2023      ((int64_t)1677628800000)
#define DEC31_2023      ((int64_t)1703980800000)
#define DEC01_2023      ((int64_t)1701388800000)
#define JAN01_2024      ((int64_t)1704067200000)
#define DEC01_1969      ((int64_t)-2678400000)

static int64_t
used_tokens(pol_budgets_t *b, pol_budget_scope_t kind, const char *scope, pol_budget_period_t period, int64_t now)
{
    pol_budget_usage_t u;
    pol_budget_usage(b, kind, scope, period, now, &u);
    return u.used_tokens;
}

static void
cost_micros_rounding(void **state)
{
    (void)state;
    /* A price per million tokens is micro-units per token. */
    assert_int_equal(pol_cost_micros(1000, 500, 0.15, 0.60), 150 + 300);
    assert_int_equal(pol_cost_micros(1000000, 1000000, 2.5, 10), 12500000);
    /* Rounded once, on the total, to the nearest micro-unit, halves up. */
    assert_int_equal(pol_cost_micros(1, 0, 0.5, 0), 1);
    assert_int_equal(pol_cost_micros(1, 0, 0.4, 0), 0);
    assert_int_equal(pol_cost_micros(1, 1, 0.3, 0.3), 1);
    assert_int_equal(pol_cost_micros(3, 0, 0.1, 0), 0);
    assert_int_equal(pol_cost_micros(7, 0, 0.1, 0), 1);
    /* Nonsense counts nothing; huge saturates. */
    assert_int_equal(pol_cost_micros(-5, -5, 1, 1), 0);
    assert_int_equal(pol_cost_micros(5, 5, -1, NAN), 0);
    assert_int_equal(pol_cost_micros(INT64_MAX, 0, 1e6, 0), INT64_MAX);
}

static void
names_parse(void **state)
{
    (void)state;
    pol_budget_scope_t k;
    pol_budget_period_t p;
    assert_int_equal(pol_budget_scope_parse("team", &k), 0);
    assert_int_equal(k, POL_BUDGET_TEAM);
    assert_string_equal(pol_budget_scope_name(k), "team");
    assert_int_equal(pol_budget_scope_parse("group", &k), -EINVAL);
    assert_int_equal(pol_budget_period_parse("month", &p), 0);
    assert_int_equal(p, POL_BUDGET_MONTH);
    assert_string_equal(pol_budget_period_name(p), "month");
    assert_int_equal(pol_budget_period_parse("week", &p), -EINVAL);
}

static void
period_bounds_utc(void **state)
{
    (void)state;
    assert_int_equal(pol_budget_period_start(POL_BUDGET_DAY, MAR15_2024_NOON), MAR15_2024);
    assert_int_equal(pol_budget_period_end(POL_BUDGET_DAY, MAR15_2024_NOON), MAR16_2024);
    assert_int_equal(pol_budget_period_start(POL_BUDGET_MONTH, MAR15_2024_NOON), MAR01_2024);
    assert_int_equal(pol_budget_period_end(POL_BUDGET_MONTH, MAR15_2024_NOON), APR01_2024);
    /* Leap day 2024: its own day, the last of a 29-day February. */
    assert_int_equal(pol_budget_period_start(POL_BUDGET_DAY, FEB29_2024 + DAY / 2), FEB29_2024);
    assert_int_equal(pol_budget_period_end(POL_BUDGET_DAY, FEB29_2024 + DAY / 2), MAR01_2024);
    assert_int_equal(pol_budget_period_start(POL_BUDGET_MONTH, MAR01_2024 - 1), FEB01_2024);
    assert_int_equal(pol_budget_period_end(POL_BUDGET_MONTH, MAR01_2024 - 1), MAR01_2024);
    assert_int_equal(pol_budget_period_start(POL_BUDGET_MONTH, MAR01_2024), MAR01_2024);
    /* 2023 is no leap year: February 28 is the last day. */
    assert_int_equal(pol_budget_period_end(POL_BUDGET_DAY, FEB28_2023 + DAY - 1), MAR01_2023);
    assert_int_equal(pol_budget_period_end(POL_BUDGET_MONTH, FEB28_2023), MAR01_2023);
    /* Year end. */
    assert_int_equal(pol_budget_period_start(POL_BUDGET_MONTH, DEC31_2023 + DAY - 1), DEC01_2023);
    assert_int_equal(pol_budget_period_end(POL_BUDGET_MONTH, DEC31_2023 + DAY - 1), JAN01_2024);
    assert_int_equal(pol_budget_period_start(POL_BUDGET_MONTH, JAN01_2024), JAN01_2024);
    /* Before the epoch, days still start at midnight. */
    assert_int_equal(pol_budget_period_start(POL_BUDGET_DAY, -1), -DAY);
    assert_int_equal(pol_budget_period_end(POL_BUDGET_DAY, -1), 0);
    assert_int_equal(pol_budget_period_start(POL_BUDGET_MONTH, -1), DEC01_1969);
    assert_int_equal(pol_budget_period_end(POL_BUDGET_MONTH, -1), 0);
}

static void
reserve_settle_cancel(void **state)
{
    (void)state;
    pol_budgets_t *b = pol_budgets_new();
    const pol_budget_limit_t limits[] = {
        { POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, 1000, 0 },
    };
    const int64_t now = MAR15_2024_NOON;
    pol_reservation_t r1, r2, r3, r4;
    pol_budget_usage_t u;

    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", NULL, 600, 60, now, &r1), POL_BUDGET_OK);
    assert_true(r1.active);
    assert_int_equal(r1.reserved_at_ms, now);
    pol_budget_usage(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, now, &u);
    assert_int_equal(u.reserved_tokens, 600);
    assert_int_equal(u.reserved_cost_micros, 60);
    assert_int_equal(u.used_tokens, 0);

    /* 600 held + 500 > 1000: refused, nothing reserved, and told why and until when. */
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", NULL, 500, 0, now, &r2), POL_BUDGET_OVER);
    assert_false(r2.active);
    assert_ptr_equal(r2.over.limit, &limits[0]);
    assert_true(r2.over.tokens);
    assert_int_equal(r2.over.used, 0);
    assert_int_equal(r2.over.reserved, 600);
    assert_int_equal(r2.over.max, 1000);
    assert_int_equal(r2.over.resets_at_ms, MAR16_2024);
    pol_budget_usage(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, now, &u);
    assert_int_equal(u.reserved_tokens, 600);

    /* Exactly filling the budget is allowed; then nothing is left, even for an estimate of 0. */
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", NULL, 400, 0, now, &r2), POL_BUDGET_OK);
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", NULL, 0, 0, now, &r3), POL_BUDGET_OVER);

    /* The actual usage may exceed the estimate. */
    pol_budget_settle(b, &r1, 700, 70);
    assert_false(r1.active);
    pol_budget_cancel(b, &r2);
    pol_budget_usage(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, now, &u);
    assert_int_equal(u.used_tokens, 700);
    assert_int_equal(u.used_cost_micros, 70);
    assert_int_equal(u.reserved_tokens, 0);
    assert_int_equal(u.reserved_cost_micros, 0);
    /* A second settle or cancel does nothing. */
    pol_budget_settle(b, &r1, 700, 70);
    pol_budget_cancel(b, &r2);
    assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, now), 700);

    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", NULL, 300, 0, now, &r3), POL_BUDGET_OK);
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", NULL, 1, 0, now, &r4), POL_BUDGET_OVER);
    pol_budget_settle(b, &r3, 300, 0);
    /* The month counts everything too, with no limit on it. */
    assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_MONTH, now), 1000);
    pol_budgets_free(b);
}

static void
team_and_principal_limits(void **state)
{
    (void)state;
    pol_budgets_t *b = pol_budgets_new();
    const pol_budget_limit_t alice[] = {
        { POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, 800, 0 },
        { POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, 1000, 0 },
        { POL_BUDGET_TEAM, "ml", POL_BUDGET_MONTH, 0, 5000 },
    };
    const pol_budget_limit_t bob[] = {
        { POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, 1000, 0 },
        { POL_BUDGET_TEAM, "ml", POL_BUDGET_MONTH, 0, 5000 },
    };
    const int64_t now = MAR15_2024_NOON;
    pol_reservation_t r;

    assert_int_equal(pol_budget_reserve(b, alice, 3, "alice", "ml", 700, 100, now, &r), POL_BUDGET_OK);
    pol_budget_settle(b, &r, 700, 100);
    /* Bob is refused by the team's day limit, which alice's usage filled. */
    assert_int_equal(pol_budget_reserve(b, bob, 2, "bob", "ml", 400, 100, now, &r), POL_BUDGET_OVER);
    assert_ptr_equal(r.over.limit, &bob[0]);
    assert_int_equal(r.over.used, 700);
    /* Alice is refused by her own limit although the team has room. */
    assert_int_equal(pol_budget_reserve(b, alice, 3, "alice", "ml", 200, 100, now, &r), POL_BUDGET_OVER);
    assert_ptr_equal(r.over.limit, &alice[0]);
    assert_int_equal(pol_budget_reserve(b, bob, 2, "bob", "ml", 300, 100, now, &r), POL_BUDGET_OK);
    pol_budget_settle(b, &r, 300, 4800);
    assert_int_equal(used_tokens(b, POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, now), 1000);
    assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "bob", POL_BUDGET_DAY, now), 300);

    /* Tomorrow the day limits are clear, but the team's money for the month is spent: the
     * refusal names the limit that resets last, so its Retry-After is one that works. */
    int64_t tomorrow = now + DAY;
    assert_int_equal(pol_budget_reserve(b, alice, 3, "alice", "ml", 10, 101, tomorrow, &r), POL_BUDGET_OVER);
    assert_ptr_equal(r.over.limit, &alice[2]);
    assert_false(r.over.tokens);
    assert_int_equal(r.over.used, 4900);
    assert_int_equal(r.over.max, 5000);
    assert_int_equal(r.over.resets_at_ms, APR01_2024);
    /* Both a day and the month refuse: the month is reported. */
    const pol_budget_limit_t both[] = {
        { POL_BUDGET_PRINCIPAL, "bob", POL_BUDGET_DAY, 100, 0 },
        { POL_BUDGET_TEAM, "ml", POL_BUDGET_MONTH, 0, 5000 },
    };
    assert_int_equal(pol_budget_reserve(b, both, 2, "bob", "ml", 500, 500, now, &r), POL_BUDGET_OVER);
    assert_ptr_equal(r.over.limit, &both[1]);
    pol_budgets_free(b);
}

static void
invalid_arguments(void **state)
{
    (void)state;
    pol_budgets_t *b = pol_budgets_new();
    const pol_budget_limit_t carol[] = { { POL_BUDGET_PRINCIPAL, "carol", POL_BUDGET_DAY, 10, 0 } };
    const pol_budget_limit_t team[] = { { POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, 10, 0 } };
    pol_reservation_t r;
    const int64_t now = MAR15_2024_NOON;
    assert_int_equal(pol_budget_reserve(b, carol, 1, "alice", "ml", 1, 0, now, &r), POL_BUDGET_INVALID);
    assert_int_equal(pol_budget_reserve(b, team, 1, "alice", NULL, 1, 0, now, &r), POL_BUDGET_INVALID);
    assert_int_equal(pol_budget_reserve(b, NULL, 0, NULL, NULL, 1, 0, now, &r), POL_BUDGET_INVALID);
    assert_int_equal(pol_budget_reserve(b, NULL, 0, "alice", NULL, -1, 0, now, &r), POL_BUDGET_INVALID);
    assert_false(r.active);
    /* Nothing was reserved by the refused calls. */
    pol_budget_usage_t u;
    pol_budget_usage(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, now, &u);
    assert_int_equal(u.reserved_tokens, 0);
    pol_budgets_free(b);
}

static void
day_rollover_at_midnight_utc(void **state)
{
    (void)state;
    pol_budgets_t *b = pol_budgets_new();
    const pol_budget_limit_t limits[] = {
        { POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, 1000, 0 },
        { POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_MONTH, 1500, 0 },
    };
    const int64_t last_ms = MAR16_2024 - 1;
    pol_reservation_t r;
    assert_int_equal(pol_budget_reserve(b, limits, 2, "alice", NULL, 800, 0, last_ms, &r), POL_BUDGET_OK);
    pol_budget_settle(b, &r, 800, 0);
    assert_int_equal(pol_budget_reserve(b, limits, 2, "alice", NULL, 300, 0, last_ms, &r), POL_BUDGET_OVER);
    assert_ptr_equal(r.over.limit, &limits[0]);
    assert_int_equal(r.over.resets_at_ms, MAR16_2024);

    /* At midnight the day starts at zero; the month keeps counting. */
    assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, MAR16_2024), 0);
    assert_int_equal(pol_budget_reserve(b, limits, 2, "alice", NULL, 300, 0, MAR16_2024, &r), POL_BUDGET_OK);
    pol_budget_settle(b, &r, 300, 0);
    assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_MONTH, MAR16_2024), 1100);
    assert_int_equal(pol_budget_reserve(b, limits, 2, "alice", NULL, 500, 0, MAR16_2024, &r), POL_BUDGET_OVER);
    assert_ptr_equal(r.over.limit, &limits[1]);
    assert_int_equal(r.over.resets_at_ms, APR01_2024);
    pol_budgets_free(b);
}

/* The last millisecond of a month and the first of the next. */
static void
check_month_end(int64_t last_ms, int64_t next_month)
{
    pol_budgets_t *b = pol_budgets_new();
    const pol_budget_limit_t limits[] = { { POL_BUDGET_TEAM, "ml", POL_BUDGET_MONTH, 0, 100 } };
    pol_reservation_t r;
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", "ml", 1, 100, last_ms, &r), POL_BUDGET_OK);
    pol_budget_settle(b, &r, 1, 100);
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", "ml", 1, 1, last_ms, &r), POL_BUDGET_OVER);
    assert_int_equal(r.over.resets_at_ms, next_month);
    assert_int_equal(pol_budget_reserve(b, limits, 1, "bob", "ml", 1, 100, next_month, &r), POL_BUDGET_OK);
    pol_budget_cancel(b, &r);
    pol_budget_usage_t u;
    pol_budget_usage(b, POL_BUDGET_TEAM, "ml", POL_BUDGET_MONTH, next_month, &u);
    assert_int_equal(u.period_start_ms, next_month);
    assert_int_equal(u.used_cost_micros, 0);
    pol_budgets_free(b);
}

static void
month_rollover_at_month_ends(void **state)
{
    (void)state;
    check_month_end(MAR01_2024 - 1, MAR01_2024); /* leap day 2024-02-29 */
    check_month_end(MAR01_2023 - 1, MAR01_2023); /* 2023-02-28 */
    check_month_end(JAN01_2024 - 1, JAN01_2024); /* year end */
    check_month_end(APR01_2024 - 1, APR01_2024); /* a 31-day month */
    /* Within a month, a new day does not reset the month. */
    pol_budgets_t *b = pol_budgets_new();
    pol_reservation_t r;
    assert_int_equal(pol_budget_reserve(b, NULL, 0, "alice", NULL, 5, 0, FEB29_2024, &r), POL_BUDGET_OK);
    pol_budget_settle(b, &r, 5, 0);
    assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_MONTH, FEB01_2024), 5);
    assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, FEB01_2024), 0);
    pol_budgets_free(b);
}

static void
settle_after_midnight_charges_reserved_period(void **state)
{
    (void)state;
    pol_budgets_t *b = pol_budgets_new();
    pol_reservation_t r, other;
    assert_int_equal(pol_budget_reserve(b, NULL, 0, "alice", "ml", 100, 10, MAR16_2024 - 1, &r), POL_BUDGET_OK);
    /* After midnight, another request creates the new day's counters (and may drop old ones,
     * but not the held one). */
    assert_int_equal(pol_budget_reserve(b, NULL, 0, "alice", "ml", 1, 0, MAR16_2024, &other), POL_BUDGET_OK);
    pol_budget_cancel(b, &other);
    pol_budget_settle(b, &r, 150, 15);
    pol_budget_usage_t u;
    pol_budget_usage(b, POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, MAR15_2024, &u);
    assert_int_equal(u.used_tokens, 150);
    assert_int_equal(u.reserved_tokens, 0);
    pol_budget_usage(b, POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, MAR16_2024, &u);
    assert_int_equal(u.used_tokens, 0);
    assert_int_equal(u.reserved_tokens, 0);
    /* Both days are in March: the month has it once. */
    assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_MONTH, MAR16_2024), 150);
    pol_budgets_free(b);
}

static void
usage_json_shape(void **state)
{
    (void)state;
    pol_budgets_t *b = pol_budgets_new();
    const pol_budget_limit_t limits[] = {
        { POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, 1000, 0 },
        { POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, 5, 5 },
    };
    pol_reservation_t r1, r2;
    const int64_t now = MAR15_2024_NOON;
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", NULL, 100, 20, now, &r1), POL_BUDGET_OK);
    pol_budget_settle(b, &r1, 90, 18);
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", NULL, 50, 5, now, &r2), POL_BUDGET_OK);

    json_t *j = pol_budget_usage_json(b, POL_BUDGET_PRINCIPAL, "alice", limits, 2, now);
    assert_string_equal(json_string_value(json_object_get(j, "scope_kind")), "principal");
    assert_string_equal(json_string_value(json_object_get(j, "scope")), "alice");
    json_t *day = json_object_get(j, "day");
    assert_int_equal(json_integer_value(json_object_get(day, "period_start_ms")), MAR15_2024);
    assert_int_equal(json_integer_value(json_object_get(day, "resets_at_ms")), MAR16_2024);
    assert_int_equal(json_integer_value(json_object_get(day, "used_tokens")), 90);
    assert_int_equal(json_integer_value(json_object_get(day, "used_cost_micros")), 18);
    assert_int_equal(json_integer_value(json_object_get(day, "reserved_tokens")), 50);
    assert_int_equal(json_integer_value(json_object_get(day, "reserved_cost_micros")), 5);
    assert_int_equal(json_integer_value(json_object_get(day, "max_tokens")), 1000);
    assert_true(json_is_null(json_object_get(day, "max_cost_micros")));
    json_t *month = json_object_get(j, "month");
    assert_int_equal(json_integer_value(json_object_get(month, "period_start_ms")), MAR01_2024);
    assert_int_equal(json_integer_value(json_object_get(month, "used_tokens")), 90);
    assert_true(json_is_null(json_object_get(month, "max_tokens")));
    json_decref(j);

    /* A scope never seen reads as zeros. */
    j = pol_budget_usage_json(b, POL_BUDGET_TEAM, "nobody", NULL, 0, now);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "day"), "used_tokens")), 0);
    json_decref(j);
    pol_budget_cancel(b, &r2);
    pol_budgets_free(b);
}

/* ---- seeding from a real store ----------------------------------------------------------- */

struct store_fixture {
    char dir[64];
    char *path;
    tp_store_t *store;
};

static int
store_setup(void **state)
{
    struct store_fixture *f = tp_calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_budget.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    f->path = tp_sprintf("%s/triplane.db", f->dir);
    tp_store_options_t opts = { .busy_timeout_ms = 5000, .create = true };
    char *err = NULL;
    if (tp_store_open(f->path, &opts, &f->store, &err) != 0) {
        fprintf(stderr, "tp_store_open: %s\n", err);
        free(err);
        return -1;
    }
    *state = f;
    return 0;
}

static int
store_teardown(void **state)
{
    struct store_fixture *f = *state;
    tp_store_close(f->store);
    const char *suffixes[] = { "", "-wal", "-shm", "-journal" };
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char *p = tp_sprintf("%s%s", f->path, suffixes[i]);
        unlink(p);
        free(p);
    }
    rmdir(f->dir);
    free(f->path);
    free(f);
    return 0;
}

static void
insert_usage(sqlite3 *db, int64_t ts, const char *principal, const char *team, int64_t in, int64_t out, int64_t cost)
{
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "INSERT INTO usage (ts_ms, plane, principal_id, team, resource,"
                           " input_tokens, output_tokens, cost_micros) VALUES (?, 'model', ?, ?, 'm', ?, ?, ?)",
                           -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(st, 1, ts);
    sqlite3_bind_text(st, 2, principal, -1, SQLITE_STATIC);
    if (team != NULL)
        sqlite3_bind_text(st, 3, team, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, in);
    sqlite3_bind_int64(st, 5, out);
    sqlite3_bind_int64(st, 6, cost);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

static void
seed_from_store(void **state)
{
    struct store_fixture *f = *state;
    sqlite3 *db = tp_store_db(f->store);
    const int64_t now = MAR15_2024_NOON;
    insert_usage(db, MAR15_2024 + 3600000, "alice", "ml", 100, 50, 1000);
    insert_usage(db, now - 1, "alice", "ml", 10, 0, 5);
    insert_usage(db, MAR15_2024 - 1, "alice", "ml", 1000, 0, 7000);   /* yesterday: month only */
    insert_usage(db, MAR01_2024 - 1, "alice", "ml", 99999, 0, 99999); /* last month: not at all */
    insert_usage(db, APR01_2024, "alice", "ml", 88888, 0, 88888);     /* next month: not at all */
    insert_usage(db, MAR15_2024, "bob", "ml", 150, 50, 300);
    insert_usage(db, MAR16_2024 - 1, "bob", NULL, 5, 0, 1);
    insert_usage(db, MAR01_2024, "carol", "ops", 30, 10, 40);

    pol_budgets_t *b = pol_budgets_new();
    char *err = NULL;
    for (int pass = 0; pass < 2; pass++) {
        /* Seeding twice replaces rather than adds. */
        assert_int_equal(pol_budgets_seed(b, db, now, &err), 0);
        pol_budget_usage_t u;
        pol_budget_usage(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_DAY, now, &u);
        assert_int_equal(u.used_tokens, 160);
        assert_int_equal(u.used_cost_micros, 1005);
        pol_budget_usage(b, POL_BUDGET_PRINCIPAL, "alice", POL_BUDGET_MONTH, now, &u);
        assert_int_equal(u.used_tokens, 1160);
        assert_int_equal(u.used_cost_micros, 8005);
        pol_budget_usage(b, POL_BUDGET_PRINCIPAL, "bob", POL_BUDGET_DAY, now, &u);
        assert_int_equal(u.used_tokens, 205);
        assert_int_equal(u.used_cost_micros, 301);
        pol_budget_usage(b, POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, now, &u);
        assert_int_equal(u.used_tokens, 360);
        assert_int_equal(u.used_cost_micros, 1305);
        pol_budget_usage(b, POL_BUDGET_TEAM, "ml", POL_BUDGET_MONTH, now, &u);
        assert_int_equal(u.used_tokens, 1360);
        assert_int_equal(u.used_cost_micros, 8305);
        assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "carol", POL_BUDGET_DAY, now), 0);
        assert_int_equal(used_tokens(b, POL_BUDGET_PRINCIPAL, "carol", POL_BUDGET_MONTH, now), 40);
        assert_int_equal(used_tokens(b, POL_BUDGET_TEAM, "ops", POL_BUDGET_MONTH, now), 40);
    }

    /* The seeded usage counts against limits: a restart does not reset a budget. */
    const pol_budget_limit_t limits[] = { { POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, 400, 0 } };
    pol_reservation_t r;
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", "ml", 50, 0, now, &r), POL_BUDGET_OVER);
    assert_int_equal(r.over.used, 360);
    assert_int_equal(pol_budget_reserve(b, limits, 1, "alice", "ml", 40, 0, now, &r), POL_BUDGET_OK);
    pol_budget_settle(b, &r, 40, 0);
    pol_budgets_free(b);
}

static void
seed_reports_errors(void **state)
{
    (void)state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    pol_budgets_t *b = pol_budgets_new();
    char *err = NULL;
    assert_int_equal(pol_budgets_seed(b, db, MAR15_2024_NOON, &err), -EIO);
    assert_non_null(strstr(err, "no such table: usage"));
    free(err);
    pol_budgets_free(b);
    sqlite3_close(db);
}

/* ---- threads ----------------------------------------------------------------------------- */

#define THREADS 8

struct racer {
    pol_budgets_t *b;
    pthread_barrier_t *barrier;
    const pol_budget_limit_t *limits;
    size_t nlimits;
    int id;
    int rounds;
    bool hold;            /* keep every reservation (true) or settle / cancel at once */
    atomic_long *ok;      /* successful reservations */
    atomic_long *settled; /* tokens settled */
};

/* One reservation per round, all threads released together by the barrier. */
static void *
racer_once_main(void *arg)
{
    struct racer *r = arg;
    char principal[16];
    snprintf(principal, sizeof(principal), "p%d", r->id);
    for (int round = 0; round < r->rounds; round++) {
        pthread_barrier_wait(r->barrier);
        pol_reservation_t res;
        pol_budget_status_t st = pol_budget_reserve(r->b, r->limits, r->nlimits, principal, "ml", 10, 10,
                                                    MAR15_2024_NOON + round * DAY, &res);
        if (st == POL_BUDGET_OK) {
            atomic_fetch_add(r->ok, 1);
            pol_budget_settle(r->b, &res, 10, 10);
        }
    }
    return NULL;
}

static void
run_racers(struct racer *proto, void *(*fn)(void *))
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    pthread_t tids[THREADS];
    struct racer rs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        rs[i] = *proto;
        rs[i].barrier = &barrier;
        rs[i].id = i;
        assert_int_equal(pthread_create(&tids[i], NULL, fn, &rs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&barrier);
}

static void
concurrent_only_one_fits(void **state)
{
    (void)state;
    /* Each simulated day the team has room for exactly one request of 10; eight threads
     * (eight principals) race for it. */
    pol_budgets_t *b = pol_budgets_new();
    const pol_budget_limit_t limits[] = { { POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, 10, 0 } };
    atomic_long ok = 0;
    struct racer proto = { .b = b, .limits = limits, .nlimits = 1, .rounds = 300, .ok = &ok };
    run_racers(&proto, racer_once_main);
    assert_int_equal(atomic_load(&ok), 300);
    pol_budgets_free(b);
}

/* Reserves until refused; holds or releases each reservation. */
static void *
racer_drain_main(void *arg)
{
    struct racer *r = arg;
    char principal[16];
    snprintf(principal, sizeof(principal), "p%d", r->id);
    pthread_barrier_wait(r->barrier);
    pol_reservation_t *held = tp_calloc(2000, sizeof(*held));
    size_t nheld = 0;
    long settled = 0;
    for (int i = 0;; i++) {
        pol_reservation_t res;
        if (pol_budget_reserve(r->b, r->limits, r->nlimits, principal, "ml", 7, 3, MAR15_2024_NOON, &res) !=
            POL_BUDGET_OK)
            break;
        atomic_fetch_add(r->ok, 1);
        if (r->hold) {
            assert_true(nheld < 2000);
            held[nheld++] = res;
        } else if (i % 3 == 0) {
            pol_budget_cancel(r->b, &res);
        } else {
            pol_budget_settle(r->b, &res, 7, 3);
            settled += 7;
        }
    }
    atomic_fetch_add(r->settled, settled);
    /* Cancelling before every thread was refused would make room for the others. */
    pthread_barrier_wait(r->barrier);
    for (size_t i = 0; i < nheld; i++)
        pol_budget_cancel(r->b, &held[i]);
    free(held);
    return NULL;
}

static void
concurrent_reservations_never_oversubscribe(void **state)
{
    (void)state;
    const pol_budget_limit_t limits[] = {
        { POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, 7000, 0 },
        { POL_BUDGET_TEAM, "ml", POL_BUDGET_MONTH, 0, 100000 },
    };
    for (int run = 0; run < 5; run++) {
        /* Holding: exactly floor(7000 / 7) reservations pass, however the threads interleave. */
        pol_budgets_t *b = pol_budgets_new();
        atomic_long ok = 0, settled = 0;
        struct racer proto = { .b = b, .limits = limits, .nlimits = 2, .hold = true, .ok = &ok, .settled = &settled };
        run_racers(&proto, racer_drain_main);
        assert_int_equal(atomic_load(&ok), 1000);
        pol_budget_usage_t u;
        pol_budget_usage(b, POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, MAR15_2024_NOON, &u);
        assert_int_equal(u.reserved_tokens, 0);
        assert_int_equal(u.used_tokens, 0);
        pol_budgets_free(b);

        /* Settling and cancelling as they go: usage never passes the limit, nothing stays held. */
        b = pol_budgets_new();
        atomic_store(&ok, 0);
        proto = (struct racer){ .b = b, .limits = limits, .nlimits = 2, .ok = &ok, .settled = &settled };
        run_racers(&proto, racer_drain_main);
        pol_budget_usage(b, POL_BUDGET_TEAM, "ml", POL_BUDGET_DAY, MAR15_2024_NOON, &u);
        assert_int_equal(u.used_tokens, atomic_load(&settled));
        assert_true(u.used_tokens <= 7000);
        assert_true(u.used_tokens > 0);
        assert_int_equal(u.reserved_tokens, 0);
        assert_int_equal(u.reserved_cost_micros, 0);
        int64_t per_principal = 0;
        for (int i = 0; i < THREADS; i++) {
            char p[16];
            snprintf(p, sizeof(p), "p%d", i);
            per_principal += used_tokens(b, POL_BUDGET_PRINCIPAL, p, POL_BUDGET_DAY, MAR15_2024_NOON);
        }
        assert_int_equal(per_principal, u.used_tokens);
        atomic_store(&settled, 0);
        pol_budgets_free(b);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cost_micros_rounding),
        cmocka_unit_test(names_parse),
        cmocka_unit_test(period_bounds_utc),
        cmocka_unit_test(reserve_settle_cancel),
        cmocka_unit_test(team_and_principal_limits),
        cmocka_unit_test(invalid_arguments),
        cmocka_unit_test(day_rollover_at_midnight_utc),
        cmocka_unit_test(month_rollover_at_month_ends),
        cmocka_unit_test(settle_after_midnight_charges_reserved_period),
        cmocka_unit_test(usage_json_shape),
        cmocka_unit_test_setup_teardown(seed_from_store, store_setup, store_teardown),
        cmocka_unit_test(seed_reports_errors),
        cmocka_unit_test(concurrent_only_one_fits),
        cmocka_unit_test(concurrent_reservations_never_oversubscribe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
