/*
 * test_models.c — model-gw/models.c: routing by load and weight, concurrency caps, the circuit
 * breaker (opens after MG_CIRCUIT_FAILURES failures, one probe after the cool-down, closes on
 * success), and rotation (drained and warming deployments get no new requests, readiness follows
 * them, a warm-up's ticket goes stale when an operator acts again).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models.h"

static tp_config_t cfg;
static mg_models_t *models;

static int
setup(void **state)
{
    char *errors = NULL;
    int rv = tp_config_load_string("t.yaml",
                                   "model_gw:\n"
                                   "  models:\n"
                                   "    - name: m\n"
                                   "      deployments:\n"
                                   "        - {url: 'http://127.0.0.1:1/v1', weight: 1}\n"
                                   "        - {url: 'http://127.0.0.1:2/v1', weight: 3, max_concurrency: 2}\n",
                                   &cfg, &errors);
    if (rv != 0)
        fail_msg("%s", errors);
    char *err = NULL;
    models = mg_models_new(&cfg.model_gw, &err);
    assert_non_null(models);
    (void)state;
    return 0;
}

static int
teardown(void **state)
{
    mg_models_free(models);
    tp_config_free(&cfg);
    (void)state;
    return 0;
}

static void
weights_and_caps(void **state)
{
    (void)state;
    mg_model_t *m = mg_models_find(models, "m");
    mg_deployment_t *a = &m->deployments[0], *b = &m->deployments[1];
    /* Idle: the heavier deployment wins (1/3 < 1/1). */
    assert_ptr_equal(mg_model_pick(m), b);
    atomic_store(&b->inflight, 2); /* at its cap */
    assert_ptr_equal(mg_model_pick(m), a);
    atomic_store(&a->inflight, 5);
    atomic_store(&b->inflight, 1); /* 2/3 < 6/1 */
    assert_ptr_equal(mg_model_pick(m), b);
    atomic_store(&a->inflight, 0);
    atomic_store(&b->inflight, 0);
    assert_null(mg_models_find(models, "nope"));
}

static void
circuit_breaker(void **state)
{
    (void)state;
    mg_model_t *m = mg_models_find(models, "m");
    mg_deployment_t *a = &m->deployments[0], *b = &m->deployments[1];
    int64_t now = 1000000;
    for (int i = 1; i < MG_CIRCUIT_FAILURES; i++)
        assert_false(mg_deployment_report(b, false, now));
    assert_true(mg_deployment_report(b, false, now)); /* the threshold opens it */
    assert_false(mg_deployment_usable(b, now + 1));
    assert_true(mg_model_healthy(m, now + 1)); /* a is still closed */
    assert_ptr_equal(mg_model_pick(m), a);     /* open circuits are skipped */

    for (int i = 0; i < MG_CIRCUIT_FAILURES; i++)
        mg_deployment_report(a, false, now);
    assert_false(mg_model_healthy(m, now + 1));
    /* After the cool-down exactly one caller gets the probe. */
    int64_t later = now + MG_CIRCUIT_COOLDOWN_MS;
    assert_true(mg_model_healthy(m, later));
    assert_true(mg_deployment_usable(b, later));
    assert_false(mg_deployment_usable(b, later));
    /* A failed probe keeps it open; a success closes it. */
    assert_false(mg_deployment_report(b, false, later));
    assert_false(mg_deployment_usable(b, later + 1));
    assert_true(mg_deployment_report(b, true, later + 2));
    assert_true(mg_deployment_usable(b, later + 3));
    assert_int_equal(atomic_load(&b->failures), 0);
    mg_deployment_report(a, true, later);
}

static void
affinity_keeps_a_key_on_one_deployment(void **state)
{
    (void)state;
    mg_model_t *m = mg_models_find(models, "m");
    mg_deployment_t *b = &m->deployments[1];
    size_t on_b = 0;
    for (int i = 0; i < 2000; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "conversation-%d", i);
        mg_deployment_t *first = mg_model_pick_affine(m, key, (size_t)n);
        for (int again = 0; again < 3; again++)
            assert_ptr_equal(mg_model_pick_affine(m, key, (size_t)n), first); /* stable */
        on_b += first == b;
    }
    /* Weights 1:3, so about three quarters of the keys land on b. */
    assert_in_range(on_b, 1350, 1650);
    /* A key whose deployment is full goes where there is room. */
    for (int i = 0;; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "k%d", i);
        if (mg_model_pick_affine(m, key, (size_t)n) != b)
            continue;
        atomic_store(&b->inflight, 2);
        assert_ptr_equal(mg_model_pick_affine(m, key, (size_t)n), &m->deployments[0]);
        atomic_store(&b->inflight, 0);
        break;
    }
}

/* Puts every deployment of m back in rotation (without a warm-up). */
static void
undrain_all(mg_model_t *m)
{
    for (size_t i = 0; i < m->num_deployments; i++)
        mg_deployment_undrain(&m->deployments[i], false);
}

static void
pick_skips_deployments_out_of_rotation(void **state)
{
    (void)state;
    mg_model_t *m = mg_models_find(models, "m");
    mg_deployment_t *a = &m->deployments[0], *b = &m->deployments[1];
    assert_true(mg_deployment_in_rotation(b));
    assert_true(mg_deployment_drain(b));
    assert_false(mg_deployment_drain(b)); /* already draining: no change */
    assert_false(mg_deployment_in_rotation(b));
    /* b is the heavier one and idle, yet every pick goes to a. */
    for (int i = 0; i < 20; i++)
        assert_ptr_equal(mg_model_pick(m), a);
    /* Even with a far busier than b would be. */
    atomic_store(&a->inflight, 50);
    assert_ptr_equal(mg_model_pick(m), a);
    atomic_store(&a->inflight, 0);
    /* Affinity: every key lands on a while b is out; keys that were a's stay a's afterwards. */
    size_t moved_back = 0;
    for (int i = 0; i < 200; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "conversation-%d", i);
        assert_ptr_equal(mg_model_pick_affine(m, key, (size_t)n), a);
    }
    /* Warming is out of rotation too. */
    assert_true(mg_deployment_undrain(b, true));
    assert_int_equal(mg_deployment_rotation(b), MG_WARMING);
    assert_ptr_equal(mg_model_pick(m), a);
    /* Both out: nothing to pick, with or without affinity. */
    assert_true(mg_deployment_drain(a));
    assert_null(mg_model_pick(m));
    assert_null(mg_model_pick_affine(m, "k", 1));
    /* An open circuit whose cool-down passed is not probed while drained either. */
    for (int i = 0; i < MG_CIRCUIT_FAILURES; i++)
        mg_deployment_report(a, false, 1000);
    assert_null(mg_model_pick(m));
    mg_deployment_report(a, true, 2000);
    undrain_all(m);
    assert_true(mg_deployment_warmed(b, mg_deployment_warmup_ticket(b)));
    for (int i = 0; i < 200; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "conversation-%d", i);
        moved_back += mg_model_pick_affine(m, key, (size_t)n) == b;
    }
    assert_in_range(moved_back, 100, 190); /* b's share (3/4) comes back */
    assert_ptr_equal(mg_model_pick(m), b);
}

static void
readiness_follows_rotation(void **state)
{
    (void)state;
    mg_model_t *m = mg_models_find(models, "m");
    mg_deployment_t *a = &m->deployments[0], *b = &m->deployments[1];
    int64_t now = 5000000;
    assert_true(mg_model_healthy(m, now));
    mg_deployment_drain(a);
    assert_true(mg_model_healthy(m, now)); /* b still serves */
    mg_deployment_drain(b);
    assert_false(mg_model_healthy(m, now)); /* every deployment drained */
    mg_deployment_undrain(b, true);
    assert_false(mg_model_healthy(m, now)); /* warming does not count */
    assert_true(mg_deployment_warmed(b, mg_deployment_warmup_ticket(b)));
    assert_true(mg_model_healthy(m, now));
    /* In rotation but with its circuit open (and cooling down): not healthy. */
    for (int i = 0; i < MG_CIRCUIT_FAILURES; i++)
        mg_deployment_report(b, false, now);
    assert_false(mg_model_healthy(m, now + 1));
    mg_deployment_report(b, true, now + 2);
    undrain_all(m);
    assert_true(mg_model_healthy(m, now));
}

static void
state_names_and_warmup_tickets(void **state)
{
    (void)state;
    mg_model_t *m = mg_models_find(models, "m");
    mg_deployment_t *a = &m->deployments[0];
    assert_string_equal(mg_deployment_state_name(a), "healthy");
    for (int i = 0; i < MG_CIRCUIT_FAILURES; i++)
        mg_deployment_report(a, false, 1000);
    assert_string_equal(mg_deployment_state_name(a), "circuit_open");
    /* An operator's state wins over the circuit's. */
    mg_deployment_drain(a);
    assert_string_equal(mg_deployment_state_name(a), "draining");
    assert_int_equal(mg_deployment_warmup_ticket(a), 0);
    assert_true(mg_deployment_undrain(a, true));
    assert_string_equal(mg_deployment_state_name(a), "warming");
    uint64_t first = mg_deployment_warmup_ticket(a);
    assert_true(first != 0);
    assert_false(mg_deployment_undrain(a, true)); /* already warming: the same warm-up goes on */
    assert_int_equal(mg_deployment_warmup_ticket(a), first);
    /* Drained and undrained again while the first warm-up was in flight: its success is stale. */
    mg_deployment_drain(a);
    assert_false(mg_deployment_warmed(a, first));
    assert_string_equal(mg_deployment_state_name(a), "draining");
    mg_deployment_undrain(a, true);
    uint64_t second = mg_deployment_warmup_ticket(a);
    assert_true(second != first);
    assert_false(mg_deployment_warmed(a, first));
    assert_string_equal(mg_deployment_state_name(a), "warming");
    assert_true(mg_deployment_warmed(a, second));
    assert_false(mg_deployment_warmed(a, second)); /* once */
    assert_int_equal(mg_deployment_warmup_ticket(a), 0);
    assert_string_equal(mg_deployment_state_name(a), "circuit_open");
    mg_deployment_report(a, true, 2000);
    assert_string_equal(mg_deployment_state_name(a), "healthy");
    /* Undrain without warm-up: straight back; undrain of one in rotation changes nothing. */
    mg_deployment_drain(a);
    assert_true(mg_deployment_undrain(a, false));
    assert_true(mg_deployment_in_rotation(a));
    assert_false(mg_deployment_undrain(a, false));
    atomic_store(&a->inflight, 3);
    assert_int_equal(mg_deployment_in_flight(a), 3);
    atomic_store(&a->inflight, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(weights_and_caps),
        cmocka_unit_test(circuit_breaker),
        cmocka_unit_test(affinity_keeps_a_key_on_one_deployment),
        cmocka_unit_test(pick_skips_deployments_out_of_rotation),
        cmocka_unit_test(readiness_follows_rotation),
        cmocka_unit_test(state_names_and_warmup_tickets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
