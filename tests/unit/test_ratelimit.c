/*
 * test_ratelimit.c — tests for policy/ratelimit.c.
 *
 * Every test injects the clock, so timings are exact to the nanosecond and nothing sleeps.
 * The rates are chosen so that the emission interval is a whole number of nanoseconds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "ratelimit.h"

#define SEC ((int64_t)1000000000)
#define MS  ((int64_t)1000000)

/* An arbitrary monotonic start, not 0, so that "now" and "TAT" are never confused with unset. */
#define T0 (1000 * SEC)

static void
burst_then_exact_retry(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(16);
    double retry = -1;
    /* 60 a minute: one a second; a burst of 5 at once. */
    for (int i = 0; i < 5; i++) {
        assert_true(pol_ratelimit_take(rl, "p:alice", 60, 5, 1, T0, &retry));
        assert_true(retry == 0);
    }
    assert_false(pol_ratelimit_take(rl, "p:alice", 60, 5, 1, T0, &retry));
    assert_true(retry == 1.0);
    /* One nanosecond early is still refused, by exactly one nanosecond. */
    assert_false(pol_ratelimit_take(rl, "p:alice", 60, 5, 1, T0 + SEC - 1, &retry));
    assert_true(retry == 1e-9);
    assert_true(pol_ratelimit_take(rl, "p:alice", 60, 5, 1, T0 + SEC, &retry));
    assert_false(pol_ratelimit_take(rl, "p:alice", 60, 5, 1, T0 + SEC, &retry));
    assert_true(retry == 1.0);
    /* After a long idle time the bucket is full again, but no fuller. */
    for (int i = 0; i < 5; i++)
        assert_true(pol_ratelimit_take(rl, "p:alice", 60, 5, 1, T0 + 3600 * SEC, NULL));
    assert_false(pol_ratelimit_take(rl, "p:alice", 60, 5, 1, T0 + 3600 * SEC, NULL));
    pol_ratelimit_free(rl);
}

static void
fractional_interval(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(16);
    double retry;
    /* 120 a minute with a burst of 1: one every 500 ms. */
    assert_true(pol_ratelimit_take(rl, "k", 120, 1, 1, T0, &retry));
    assert_false(pol_ratelimit_take(rl, "k", 120, 1, 1, T0, &retry));
    assert_true(retry == 0.5);
    assert_false(pol_ratelimit_take(rl, "k", 120, 1, 1, T0 + 250 * MS, &retry));
    assert_true(retry == 0.25);
    assert_true(pol_ratelimit_take(rl, "k", 120, 1, 1, T0 + 500 * MS, &retry));
    pol_ratelimit_free(rl);
}

static void
default_burst_is_one_minute(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(16);
    double retry;
    for (int i = 0; i < 10; i++)
        assert_true(pol_ratelimit_take(rl, "k", 10, 0, 1, T0, NULL));
    assert_false(pol_ratelimit_take(rl, "k", 10, 0, 1, T0, &retry));
    assert_true(retry == 6.0);
    /* A burst below 1 counts as 1. */
    assert_true(pol_ratelimit_take(rl, "small", 60, 0.25, 1, T0, NULL));
    assert_false(pol_ratelimit_take(rl, "small", 60, 0.25, 1, T0, &retry));
    assert_true(retry == 1.0);
    pol_ratelimit_free(rl);
}

static void
tokens_per_minute_cost(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(16);
    double retry;
    /* 6000 tokens a minute: 100 a second, one every 10 ms; the default bucket holds 6000. */
    assert_true(pol_ratelimit_take(rl, "tpm", 6000, 0, 4000, T0, &retry));
    assert_false(pol_ratelimit_take(rl, "tpm", 6000, 0, 2500, T0, &retry));
    assert_true(retry == 5.0); /* 500 tokens missing, at 100 a second */
    assert_true(pol_ratelimit_take(rl, "tpm", 6000, 0, 2000, T0, &retry));
    assert_false(pol_ratelimit_take(rl, "tpm", 6000, 0, 1, T0, &retry));
    assert_true(retry == 0.01);
    assert_true(pol_ratelimit_take(rl, "tpm", 6000, 0, 100, T0 + SEC, &retry));
    assert_false(pol_ratelimit_take(rl, "tpm", 6000, 0, 1, T0 + SEC, &retry));
    assert_true(retry == 0.01);
    pol_ratelimit_free(rl);
}

static void
refused_takes_consume_nothing(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(16);
    double retry;
    assert_true(pol_ratelimit_take(rl, "k", 60, 1, 1, T0, NULL));
    for (int i = 0; i < 1000; i++)
        assert_false(pol_ratelimit_take(rl, "k", 60, 1, 1, T0 + i * MS / 2, NULL));
    assert_true(pol_ratelimit_take(rl, "k", 60, 1, 1, T0 + SEC, &retry));

    /* A refused large take leaves room for a smaller one that fits. */
    assert_true(pol_ratelimit_take(rl, "tpm", 600, 100, 90, T0, NULL));
    assert_false(pol_ratelimit_take(rl, "tpm", 600, 100, 50, T0, &retry));
    assert_true(retry == 4.0); /* 40 missing at 10 a second */
    assert_true(pol_ratelimit_take(rl, "tpm", 600, 100, 10, T0, NULL));
    assert_false(pol_ratelimit_take(rl, "tpm", 600, 100, 1, T0, NULL));
    pol_ratelimit_free(rl);
}

static void
charge_puts_key_in_debt(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(16);
    double retry;
    /* Tokens known only after the response: check with cost 0, then charge. */
    assert_true(pol_ratelimit_take(rl, "tpm", 6000, 0, 0, T0, &retry));
    pol_ratelimit_charge(rl, "tpm", 6000, 0, 9000, T0);
    /* 3000 tokens of debt beyond the bucket, paid back at 100 a second. */
    assert_false(pol_ratelimit_take(rl, "tpm", 6000, 0, 0, T0, &retry));
    assert_true(retry == 30.0);
    assert_false(pol_ratelimit_take(rl, "tpm", 6000, 0, 0, T0 + 30 * SEC - 1, NULL));
    assert_true(pol_ratelimit_take(rl, "tpm", 6000, 0, 0, T0 + 30 * SEC, &retry));
    assert_false(pol_ratelimit_take(rl, "tpm", 6000, 0, 1, T0 + 30 * SEC, &retry));
    assert_true(retry == 0.01);

    /* A charge on a new key creates it. */
    pol_ratelimit_charge(rl, "fresh", 60, 2, 3, T0);
    assert_false(pol_ratelimit_take(rl, "fresh", 60, 2, 1, T0, &retry));
    assert_true(retry == 2.0);
    pol_ratelimit_free(rl);
}

static void
oversize_take_waits_for_full_bucket(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(16);
    double retry;
    /* A cost of 15 never fits a bucket of 10: it passes when the bucket is full. */
    assert_true(pol_ratelimit_take(rl, "k", 60, 10, 15, T0, &retry));
    assert_false(pol_ratelimit_take(rl, "k", 60, 10, 1, T0, &retry));
    assert_true(retry == 6.0);
    assert_false(pol_ratelimit_take(rl, "k", 60, 10, 15, T0 + 6 * SEC, &retry));
    assert_true(retry == 9.0);
    assert_true(pol_ratelimit_take(rl, "k", 60, 10, 15, T0 + 15 * SEC, &retry));
    pol_ratelimit_free(rl);
}

static void
keys_are_independent_and_unlimited_is_free(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(16);
    assert_true(pol_ratelimit_take(rl, "p:alice", 60, 1, 1, T0, NULL));
    assert_false(pol_ratelimit_take(rl, "p:alice", 60, 1, 1, T0, NULL));
    assert_true(pol_ratelimit_take(rl, "p:bob", 60, 1, 1, T0, NULL));
    for (int i = 0; i < 100; i++)
        assert_true(pol_ratelimit_take(rl, "p:carol", 0, 0, 1, T0, NULL));
    pol_ratelimit_stats_t st;
    pol_ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 2); /* carol has no limit and no entry */
    pol_ratelimit_free(rl);
}

static void
reset_key_refills(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(16);
    assert_true(pol_ratelimit_take(rl, "k", 60, 1, 1, T0, NULL));
    assert_false(pol_ratelimit_take(rl, "k", 60, 1, 1, T0, NULL));
    assert_true(pol_ratelimit_reset_key(rl, "k"));
    assert_false(pol_ratelimit_reset_key(rl, "k"));
    assert_true(pol_ratelimit_take(rl, "k", 60, 1, 1, T0, NULL));
    pol_ratelimit_stats_t st;
    pol_ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 1);
    pol_ratelimit_free(rl);
}

static void
table_bound_and_reclaim(void **state)
{
    (void)state;
    pol_ratelimit_t *rl = pol_ratelimit_new(4);
    pol_ratelimit_stats_t st;
    /* Four keys, one a second with a burst of 1: "a" is busy for 10 s, the others for 1 s. */
    pol_ratelimit_charge(rl, "a", 60, 1, 10, T0);
    assert_true(pol_ratelimit_take(rl, "b", 60, 1, 1, T0, NULL));
    assert_true(pol_ratelimit_take(rl, "c", 60, 1, 1, T0, NULL));
    assert_true(pol_ratelimit_take(rl, "d", 60, 1, 1, T0, NULL));

    /* Full, nothing idle: a new key is let through untracked, every time. */
    assert_true(pol_ratelimit_take(rl, "e", 60, 1, 1, T0 + SEC / 2, NULL));
    assert_true(pol_ratelimit_take(rl, "e", 60, 1, 1, T0 + SEC / 2, NULL));
    pol_ratelimit_charge(rl, "f", 60, 1, 1, T0 + SEC / 2);
    pol_ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 4);
    assert_int_equal(st.max_keys, 4);
    assert_int_equal(st.untracked, 3);
    assert_int_equal(st.reclaimed, 0);
    /* The tracked keys keep their state. */
    assert_false(pol_ratelimit_take(rl, "b", 60, 1, 1, T0 + SEC / 2, NULL));

    /* At T0 + 1 s, b, c and d are idle: they are reclaimed and "e" is tracked from then on. */
    assert_true(pol_ratelimit_take(rl, "e", 60, 1, 1, T0 + SEC, NULL));
    assert_false(pol_ratelimit_take(rl, "e", 60, 1, 1, T0 + SEC, NULL));
    pol_ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 2);
    assert_int_equal(st.untracked, 3);
    assert_int_equal(st.reclaimed, 3);
    /* "a" survived with its debt. */
    assert_false(pol_ratelimit_take(rl, "a", 60, 1, 1, T0 + SEC, NULL));
    assert_false(pol_ratelimit_take(rl, "a", 60, 1, 1, T0 + 10 * SEC - 1, NULL));
    assert_true(pol_ratelimit_take(rl, "a", 60, 1, 1, T0 + 10 * SEC, NULL));
    pol_ratelimit_free(rl);
}

static void
full_table_many_keys(void **state)
{
    (void)state;
    /* Many keys through a small table over simulated time: the bound holds and idle keys make room. */
    pol_ratelimit_t *rl = pol_ratelimit_new(100);
    pol_ratelimit_stats_t st;
    char key[32];
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 100; i++) {
            snprintf(key, sizeof(key), "p:%d:%d", round, i);
            assert_true(pol_ratelimit_take(rl, key, 60, 1, 1, T0 + round * SEC, NULL));
            assert_false(pol_ratelimit_take(rl, key, 60, 1, 1, T0 + round * SEC, NULL));
        }
        pol_ratelimit_stats(rl, &st);
        assert_int_equal(st.keys, 100);
        assert_int_equal(st.untracked, 0);
    }
    assert_int_equal(st.reclaimed, 900);
    pol_ratelimit_free(rl);
}

/* ---- threads ----------------------------------------------------------------------------- */

#define THREADS        4
#define STEPS          200
#define TAKES_PER_STEP 100
/* 60000 a minute is one per millisecond; a step of 100 ms refills 100, as many as one thread
 * tries, so the four threads contend for every unit. */
#define HAMMER_RATE    60000
#define HAMMER_BURST   100
#define HAMMER_REFILL  100
#define HAMMER_STEP_NS (100 * MS)

struct hammer {
    pol_ratelimit_t *rl;
    pthread_barrier_t *barrier;
    const char *key_prefix; /* NULL: every thread uses "hot" */
    int id;
    int64_t step_ns; /* simulated time between steps */
    atomic_long *allowed;
};

/* Each step, all threads meet at the barrier and then take at the same simulated instant, so the
 * capacity of the window is exact: the burst, plus the refill of every step after the first. */
static void *
hammer_main(void *arg)
{
    struct hammer *h = arg;
    char key[32] = "hot";
    long allowed = 0;
    for (int step = 0; step <= STEPS; step++) {
        pthread_barrier_wait(h->barrier);
        int64_t now = T0 + step * h->step_ns;
        for (int i = 0; i < TAKES_PER_STEP; i++) {
            if (h->key_prefix != NULL)
                snprintf(key, sizeof(key), "%s%d", h->key_prefix, (step * TAKES_PER_STEP + i + h->id) % 37);
            if (pol_ratelimit_take(h->rl, key, HAMMER_RATE, HAMMER_BURST, 1, now, NULL))
                allowed++;
        }
    }
    atomic_fetch_add(h->allowed, allowed);
    return NULL;
}

static long
run_hammer(pol_ratelimit_t *rl, const char *key_prefix, int64_t step_ns)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    atomic_long allowed = 0;
    pthread_t tids[THREADS];
    struct hammer h[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){
            .rl = rl, .barrier = &barrier, .key_prefix = key_prefix, .id = i, .step_ns = step_ns, .allowed = &allowed
        };
        assert_int_equal(pthread_create(&tids[i], NULL, hammer_main, &h[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&barrier);
    return atomic_load(&allowed);
}

static void
threads_hammer_one_key(void **state)
{
    (void)state;
    for (int run = 0; run < 20; run++) {
        pol_ratelimit_t *rl = pol_ratelimit_new(16);
        assert_int_equal(run_hammer(rl, NULL, HAMMER_STEP_NS), HAMMER_BURST + HAMMER_REFILL * STEPS);
        pol_ratelimit_free(rl);
    }
}

static void
threads_insert_and_reclaim(void **state)
{
    (void)state;
    /* 37 keys through a table of 8, from four threads: inserts, sweeps and takes race. Steps are
     * 2 s apart, longer than a full bucket takes to refill (100 ms), so each step finds the keys
     * of the last one idle. */
    pol_ratelimit_t *rl = pol_ratelimit_new(8);
    long allowed = run_hammer(rl, "k", 2 * SEC);
    pol_ratelimit_stats_t st;
    pol_ratelimit_stats(rl, &st);
    assert_true(st.keys <= 8);
    assert_true(st.reclaimed > 0);
    assert_true(allowed > 0);
    assert_true(allowed <= (long)THREADS * TAKES_PER_STEP * (STEPS + 1));
    pol_ratelimit_free(rl);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_exact_retry),
        cmocka_unit_test(fractional_interval),
        cmocka_unit_test(default_burst_is_one_minute),
        cmocka_unit_test(tokens_per_minute_cost),
        cmocka_unit_test(refused_takes_consume_nothing),
        cmocka_unit_test(charge_puts_key_in_debt),
        cmocka_unit_test(oversize_take_waits_for_full_bucket),
        cmocka_unit_test(keys_are_independent_and_unlimited_is_free),
        cmocka_unit_test(reset_key_refills),
        cmocka_unit_test(table_bound_and_reclaim),
        cmocka_unit_test(full_table_many_keys),
        cmocka_unit_test(threads_hammer_one_key),
        cmocka_unit_test(threads_insert_and_reclaim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
