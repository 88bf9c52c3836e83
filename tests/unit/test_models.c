/*
 * test_models.c — model-gw/models.c: routing by load and weight, concurrency caps, and the
 * circuit breaker (opens after MG_CIRCUIT_FAILURES failures, one probe after the cool-down,
 * closes on success).
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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(weights_and_caps),
        cmocka_unit_test(circuit_breaker),
        cmocka_unit_test(affinity_keeps_a_key_on_one_deployment),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
