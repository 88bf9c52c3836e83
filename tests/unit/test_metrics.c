#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Renders reg and checks that the reported length matches the string. Free the result. */
static char *
render(tp_metrics_t *reg)
{
    size_t len = 0;
    char *out = tp_metrics_render(reg, &len);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));
    return out;
}

static void
assert_render(tp_metrics_t *reg, const char *expected)
{
    char *out = render(reg);
    assert_string_equal(out, expected);
    free(out);
}

static void
counter_add_and_render(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(2);
    tp_metric_t *c = tp_metrics_counter(reg, "requests_total", "Requests handled.", NULL);

    assert_render(reg, "# HELP requests_total Requests handled.\n"
                       "# TYPE requests_total counter\n"
                       "requests_total 0\n");

    tp_metric_add(c, NULL, 1);
    tp_metric_add(c, NULL, 2);
    assert_render(reg, "# HELP requests_total Requests handled.\n"
                       "# TYPE requests_total counter\n"
                       "requests_total 3\n");

    tp_metric_add(c, NULL, 0.5);
    assert_render(reg, "# HELP requests_total Requests handled.\n"
                       "# TYPE requests_total counter\n"
                       "requests_total 3.5\n");
    tp_metrics_free(reg);
}

static void
labels_are_escaped_and_ordered(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(2);
    const char *const labels[] = { "method", "path", NULL };
    tp_metric_t *c = tp_metrics_counter(reg, "http_requests_total", "Help with \\ and\nnewline \"quoted\".", labels);

    /* Created first, on shard 1: it must render first although shard 0 is merged first. */
    tp_metrics_bind_shard(1);
    tp_metric_add(c, (const char *const[]){ "POST", "/b" }, 1);
    tp_metrics_bind_shard(0);
    tp_metric_add(c, (const char *const[]){ "GET", "a\"b\\c\nd" }, 2);
    tp_metric_add(c, (const char *const[]){ "GET", NULL }, 4);
    tp_metric_add(c, (const char *const[]){ "POST", "/b" }, 1);

    assert_render(reg, "# HELP http_requests_total Help with \\\\ and\\nnewline \"quoted\".\n"
                       "# TYPE http_requests_total counter\n"
                       "http_requests_total{method=\"POST\",path=\"/b\"} 2\n"
                       "http_requests_total{method=\"GET\",path=\"a\\\"b\\\\c\\nd\"} 2\n"
                       "http_requests_total{method=\"GET\",path=\"\"} 4\n");
    /* A NULL value and "" are the same series. */
    assert_true(tp_metric_value(c, (const char *const[]){ "GET", "" }) == 4);
    tp_metrics_free(reg);
}

static void
gauge_add_set_negative(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(3);
    const char *const labels[] = { "pool", NULL };
    tp_metric_t *g = tp_metrics_gauge(reg, "connections", "Open connections.", labels);
    const char *const a[] = { "a" };

    tp_metric_add(g, a, 5);
    tp_metrics_bind_shard(2);
    tp_metric_add(g, a, -7);
    assert_true(tp_metric_value(g, a) == -2);

    /* A set replaces what every shard added before it; later adds count on top. */
    tp_metrics_bind_shard(1);
    tp_metric_set(g, a, 10);
    assert_true(tp_metric_value(g, a) == 10);
    tp_metrics_bind_shard(2);
    tp_metric_add(g, a, 2.5);
    tp_metrics_bind_shard(0);
    tp_metric_add(g, a, -1);
    assert_true(tp_metric_value(g, a) == 11.5);

    /* Set on a series that never had an add creates it. */
    tp_metric_set(g, (const char *const[]){ "b" }, -3);
    assert_render(reg, "# HELP connections Open connections.\n"
                       "# TYPE connections gauge\n"
                       "connections{pool=\"a\"} 11.5\n"
                       "connections{pool=\"b\"} -3\n");
    tp_metrics_free(reg);
}

static void
histogram_buckets_are_cumulative(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(2);
    const char *const labels[] = { "route", NULL };
    const double bounds[] = { 0.005, 0.5, 1 };
    tp_metric_t *h = tp_metrics_histogram(reg, "latency_seconds", "Latency.", labels, bounds, 3);
    const char *const r[] = { "/x" };

    tp_metric_observe(h, r, 0.00390625);
    tp_metric_observe(h, r, 0.5); /* on a bound: counted in that bucket */
    tp_metrics_bind_shard(1);
    tp_metric_observe(h, r, 0.25);
    tp_metric_observe(h, r, 2);
    tp_metrics_bind_shard(0);

    assert_render(reg, "# HELP latency_seconds Latency.\n"
                       "# TYPE latency_seconds histogram\n"
                       "latency_seconds_bucket{route=\"/x\",le=\"0.005\"} 1\n"
                       "latency_seconds_bucket{route=\"/x\",le=\"0.5\"} 3\n"
                       "latency_seconds_bucket{route=\"/x\",le=\"1\"} 3\n"
                       "latency_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"
                       "latency_seconds_sum{route=\"/x\"} 2.75390625\n"
                       "latency_seconds_count{route=\"/x\"} 4\n");
    tp_metrics_free(reg);
}

static void
unlabelled_histogram_renders_zeroes(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(1);
    const double bounds[] = { 1 };
    tp_metrics_histogram(reg, "size_bytes", "Sizes.", NULL, bounds, 1);
    assert_render(reg, "# HELP size_bytes Sizes.\n"
                       "# TYPE size_bytes histogram\n"
                       "size_bytes_bucket{le=\"1\"} 0\n"
                       "size_bytes_bucket{le=\"+Inf\"} 0\n"
                       "size_bytes_sum 0\n"
                       "size_bytes_count 0\n");
    tp_metrics_free(reg);
}

static double
read_double(void *data)
{
    return *(double *)data;
}

static void
gauge_fn_is_computed_at_render(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(1);
    double v = 42;
    tp_metric_t *g = tp_metrics_gauge_fn(reg, "uptime_seconds", "Uptime.", read_double, &v);
    assert_render(reg, "# HELP uptime_seconds Uptime.\n"
                       "# TYPE uptime_seconds gauge\n"
                       "uptime_seconds 42\n");
    v = 0.125;
    assert_render(reg, "# HELP uptime_seconds Uptime.\n"
                       "# TYPE uptime_seconds gauge\n"
                       "uptime_seconds 0.125\n");
    assert_true(tp_metric_value(g, NULL) == 0.125);
    tp_metrics_free(reg);
}

static void
empty_labelled_family_has_no_samples(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(2);
    const char *const labels[] = { "code", NULL };
    tp_metrics_counter(reg, "errors_total", "Errors.", labels);
    tp_metrics_gauge(reg, "queue_depth", "Depth.", NULL);
    tp_metrics_histogram(reg, "wait_seconds", "Wait.", labels, tp_metrics_latency_buckets,
                         tp_metrics_latency_buckets_count);
    assert_render(reg, "# HELP errors_total Errors.\n"
                       "# TYPE errors_total counter\n"
                       "# HELP queue_depth Depth.\n"
                       "# TYPE queue_depth gauge\n"
                       "queue_depth 0\n"
                       "# HELP wait_seconds Wait.\n"
                       "# TYPE wait_seconds histogram\n");
    tp_metrics_free(reg);
}

static void
reregistration_returns_same_family(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(1);
    const char *const labels[] = { "a", "b", NULL };
    const char *const same_labels[] = { "a", "b", NULL };
    tp_metric_t *c = tp_metrics_counter(reg, "x_total", "X.", labels);
    assert_ptr_equal(tp_metrics_counter(reg, "x_total", "X again.", same_labels), c);
    const double bounds[] = { 1, 2 };
    tp_metric_t *h = tp_metrics_histogram(reg, "h", "H.", NULL, bounds, 2);
    assert_ptr_equal(tp_metrics_histogram(reg, "h", "H.", NULL, bounds, 2), h);
    assert_ptr_not_equal(h, c);

    tp_metric_add(c, (const char *const[]){ "1", "2" }, 1);
    /* One family each, with the first help text. */
    assert_render(reg, "# HELP x_total X.\n"
                       "# TYPE x_total counter\n"
                       "x_total{a=\"1\",b=\"2\"} 1\n"
                       "# HELP h H.\n"
                       "# TYPE h histogram\n"
                       "h_bucket{le=\"1\"} 0\n"
                       "h_bucket{le=\"2\"} 0\n"
                       "h_bucket{le=\"+Inf\"} 0\n"
                       "h_sum 0\n"
                       "h_count 0\n");
    tp_metrics_free(reg);
}

/* Runs fn in a child and checks that it aborts (tp_fatal) rather than returns. */
static void
assert_aborts(void (*fn)(tp_metrics_t *reg))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *devnull = freopen("/dev/null", "w", stderr);
        (void)devnull;
        tp_metrics_t *reg = tp_metrics_new(1);
        const double bounds[] = { 1 };
        tp_metrics_counter(reg, "taken_total", "Taken.", (const char *const[]){ "a", NULL });
        tp_metrics_histogram(reg, "taken_seconds", "Taken.", NULL, bounds, 1);
        fn(reg);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void
bad_metric_name(tp_metrics_t *reg)
{
    tp_metrics_counter(reg, "1st_total", "", NULL);
}

static void
bad_label_name(tp_metrics_t *reg)
{
    tp_metrics_gauge(reg, "g", "", (const char *const[]){ "ok", "not-ok", NULL });
}

static void
reserved_label_name(tp_metrics_t *reg)
{
    tp_metrics_gauge(reg, "g", "", (const char *const[]){ "__name", NULL });
}

static void
le_label_on_histogram(tp_metrics_t *reg)
{
    const double bounds[] = { 1 };
    tp_metrics_histogram(reg, "h_seconds", "", (const char *const[]){ "le", NULL }, bounds, 1);
}

static void
unsorted_bounds(tp_metrics_t *reg)
{
    const double bounds[] = { 1, 1 };
    tp_metrics_histogram(reg, "h_seconds", "", NULL, bounds, 2);
}

static void
infinite_bound(tp_metrics_t *reg)
{
    const double bounds[] = { 1, INFINITY };
    tp_metrics_histogram(reg, "h_seconds", "", NULL, bounds, 2);
}

static void
different_labels(tp_metrics_t *reg)
{
    tp_metrics_counter(reg, "taken_total", "Taken.", (const char *const[]){ "b", NULL });
}

static void
different_type(tp_metrics_t *reg)
{
    tp_metrics_gauge(reg, "taken_total", "Taken.", (const char *const[]){ "a", NULL });
}

static void
different_bounds(tp_metrics_t *reg)
{
    const double bounds[] = { 2 };
    tp_metrics_histogram(reg, "taken_seconds", "Taken.", NULL, bounds, 1);
}

static void
observe_on_counter(tp_metrics_t *reg)
{
    tp_metric_t *c = tp_metrics_counter(reg, "taken_total", "Taken.", (const char *const[]){ "a", NULL });
    tp_metric_observe(c, (const char *const[]){ "x" }, 1);
}

static void
programming_errors_abort(void **state)
{
    (void)state;
    assert_aborts(bad_metric_name);
    assert_aborts(bad_label_name);
    assert_aborts(reserved_label_name);
    assert_aborts(le_label_on_histogram);
    assert_aborts(unsorted_bounds);
    assert_aborts(infinite_bound);
    assert_aborts(different_labels);
    assert_aborts(different_type);
    assert_aborts(different_bounds);
    assert_aborts(observe_on_counter);
}

static void
numbers_are_formatted_for_prometheus(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(1);
    const char *const labels[] = { "v", NULL };
    tp_metric_t *g = tp_metrics_gauge(reg, "g", "G.", labels);
    tp_metric_set(g, (const char *const[]){ "int" }, 123456789);
    tp_metric_set(g, (const char *const[]){ "tenth" }, 0.1);
    tp_metric_set(g, (const char *const[]){ "third" }, 1.0 / 3);
    tp_metric_set(g, (const char *const[]){ "big" }, 1e20);
    tp_metric_set(g, (const char *const[]){ "small" }, 2.5e-10);
    tp_metric_set(g, (const char *const[]){ "pinf" }, INFINITY);
    tp_metric_set(g, (const char *const[]){ "ninf" }, -INFINITY);
    tp_metric_set(g, (const char *const[]){ "nan" }, NAN);
    assert_render(reg, "# HELP g G.\n"
                       "# TYPE g gauge\n"
                       "g{v=\"int\"} 123456789\n"
                       "g{v=\"tenth\"} 0.1\n"
                       "g{v=\"third\"} 0.3333333333333333\n"
                       "g{v=\"big\"} 1e+20\n"
                       "g{v=\"small\"} 2.5e-10\n"
                       "g{v=\"pinf\"} +Inf\n"
                       "g{v=\"ninf\"} -Inf\n"
                       "g{v=\"nan\"} NaN\n");
    tp_metrics_free(reg);
}

static void
value_sums_shards(void **state)
{
    (void)state;
    tp_metrics_t *reg = tp_metrics_new(4);
    const char *const labels[] = { "k", NULL };
    tp_metric_t *c = tp_metrics_counter(reg, "c_total", "C.", labels);
    const char *const k[] = { "k" };
    assert_true(tp_metric_value(c, k) == 0);
    for (unsigned s = 0; s < 6; s++) {
        tp_metrics_bind_shard(s); /* 4 and 5 are out of range: they fall back to shard 0 */
        tp_metric_add(c, k, s + 1);
    }
    tp_metrics_bind_shard(0);
    assert_true(tp_metric_value(c, k) == 21);
    assert_true(tp_metric_value(c, (const char *const[]){ "absent" }) == 0);
    tp_metrics_free(reg);
}

/* ---- concurrency ------------------------------------------------------------------------ */

#define THREAD_ITERATIONS 100000
#define NWORKERS          5

struct workload {
    tp_metrics_t *reg;
    tp_metric_t *ops;
    tp_metric_t *inflight;
    tp_metric_t *latency;
    tp_metric_t *batches;
    atomic_int running;
    int renders;
    bool went_down; /* set by the renderer: cmocka asserts only work on the main thread */
};

struct worker {
    struct workload *w;
    unsigned shard;
};

static void *
worker_main(void *arg)
{
    struct worker *me = arg;
    struct workload *w = me->w;
    tp_metrics_bind_shard(me->shard);
    for (int i = 0; i < THREAD_ITERATIONS; i++) {
        const char *const parity[] = { i % 2 ? "odd" : "even" };
        tp_metric_add(w->ops, parity, 1);
        tp_metric_add(w->inflight, NULL, 1);
        tp_metric_observe(w->latency, NULL, i % 2 ? 0.5 : 2);
        tp_metric_add(w->inflight, NULL, -1);
        if (i % 1000 == 0) {
            /* New series appear on every shard while the renderer runs. */
            char batch[16];
            snprintf(batch, sizeof(batch), "b%d", i / 1000);
            tp_metric_add(w->batches, (const char *const[]){ batch }, 1);
        }
    }
    atomic_fetch_sub(&w->running, 1);
    return NULL;
}

static void *
renderer_main(void *arg)
{
    struct workload *w = arg;
    double last = 0;
    while (atomic_load(&w->running) > 0 || w->renders == 0) {
        free(tp_metrics_render(w->reg, NULL));
        double even = tp_metric_value(w->ops, (const char *const[]){ "even" });
        if (even < last) /* a counter never goes down, even mid-merge */
            w->went_down = true;
        last = even;
        w->renders++;
    }
    return NULL;
}

static void
concurrent_recording_is_exact(void **state)
{
    (void)state;
    struct workload w = { .reg = tp_metrics_new(4) };
    w.ops = tp_metrics_counter(w.reg, "ops_total", "Ops.", (const char *const[]){ "parity", NULL });
    w.inflight = tp_metrics_gauge(w.reg, "inflight", "In flight.", NULL);
    const double bounds[] = { 0.5, 1 };
    w.latency = tp_metrics_histogram(w.reg, "op_seconds", "Op latency.", NULL, bounds, 2);
    w.batches = tp_metrics_counter(w.reg, "batches_total", "Batches.", (const char *const[]){ "batch", NULL });
    atomic_init(&w.running, NWORKERS);

    /* Shard 1 is shared by two workers. */
    struct worker workers[NWORKERS] = { { &w, 0 }, { &w, 1 }, { &w, 2 }, { &w, 3 }, { &w, 1 } };
    pthread_t threads[NWORKERS], renderer;
    assert_int_equal(pthread_create(&renderer, NULL, renderer_main, &w), 0);
    for (int i = 0; i < NWORKERS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, worker_main, &workers[i]), 0);
    for (int i = 0; i < NWORKERS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    assert_int_equal(pthread_join(renderer, NULL), 0);
    assert_true(w.renders > 0);
    assert_false(w.went_down);

    const double half = (double)NWORKERS * THREAD_ITERATIONS / 2;
    assert_true(tp_metric_value(w.ops, (const char *const[]){ "even" }) == half);
    assert_true(tp_metric_value(w.ops, (const char *const[]){ "odd" }) == half);
    assert_true(tp_metric_value(w.inflight, NULL) == 0);
    assert_true(tp_metric_value(w.batches, (const char *const[]){ "b0" }) == NWORKERS);
    assert_true(tp_metric_value(w.batches, (const char *const[]){ "b99" }) == NWORKERS);

    char *out = render(w.reg);
    assert_non_null(strstr(out, "\nops_total{parity=\"even\"} 250000\n"));
    assert_non_null(strstr(out, "\nops_total{parity=\"odd\"} 250000\n"));
    assert_non_null(strstr(out, "\ninflight 0\n"));
    assert_non_null(strstr(out, "\nop_seconds_bucket{le=\"0.5\"} 250000\n"));
    assert_non_null(strstr(out, "\nop_seconds_bucket{le=\"1\"} 250000\n"));
    assert_non_null(strstr(out, "\nop_seconds_bucket{le=\"+Inf\"} 500000\n"));
    assert_non_null(strstr(out, "\nop_seconds_sum 625000\n"));
    assert_non_null(strstr(out, "\nop_seconds_count 500000\n"));
    /* Every batch series exists exactly once. */
    int nbatches = 0;
    for (const char *p = out; (p = strstr(p, "\nbatches_total{")) != NULL; p++)
        nbatches++;
    assert_int_equal(nbatches, THREAD_ITERATIONS / 1000);
    free(out);
    tp_metrics_free(w.reg);
}

/* ---- promtool --------------------------------------------------------------------------- */

static double
constant_fn(void *data)
{
    (void)data;
    return 7;
}

static void
promtool_accepts_render(void **state)
{
    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        skip();

    tp_metrics_t *reg = tp_metrics_new(2);
    const char *const labels[] = { "method", "path", NULL };
    tp_metric_t *c = tp_metrics_counter(reg, "tp_requests_total", "Requests \\ with\nescapes.", labels);
    tp_metrics_counter(reg, "tp_restarts_total", "Restarts.", NULL);
    tp_metrics_counter(reg, "tp_unused_total", "Never used.", labels);
    tp_metric_t *g = tp_metrics_gauge(reg, "tp_connections", "Connections.", (const char *const[]){ "pool", NULL });
    tp_metric_t *h = tp_metrics_histogram(reg, "tp_request_duration_seconds", "Request duration.", labels,
                                          tp_metrics_latency_buckets, tp_metrics_latency_buckets_count);
    tp_metrics_gauge_fn(reg, "tp_build_info", "Build.", constant_fn, NULL);

    const char *const odd[] = { "GET", "/a\"b\\c\nd" };
    tp_metric_add(c, odd, 3);
    tp_metric_add(c, (const char *const[]){ "POST", "/v1/chat" }, 1.5);
    tp_metric_add(g, (const char *const[]){ "db" }, -2);
    tp_metric_set(g, (const char *const[]){ "cache" }, INFINITY);
    tp_metric_observe(h, odd, 0.003);
    tp_metric_observe(h, odd, 120);

    char path[] = "/tmp/test_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = 0;
    char *out = tp_metrics_render(reg, &len);
    assert_int_equal(write(fd, out, len), (ssize_t)len);
    close(fd);

    char *cmd = NULL;
    assert_true(asprintf(&cmd, "promtool check metrics < %s", path) > 0);
    int rv = system(cmd);
    if (rv != 0)
        fprintf(stderr, "promtool rejected:\n%s", out);
    unlink(path);
    free(cmd);
    free(out);
    tp_metrics_free(reg);
    assert_true(WIFEXITED(rv));
    assert_int_equal(WEXITSTATUS(rv), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counter_add_and_render),
        cmocka_unit_test(labels_are_escaped_and_ordered),
        cmocka_unit_test(gauge_add_set_negative),
        cmocka_unit_test(histogram_buckets_are_cumulative),
        cmocka_unit_test(unlabelled_histogram_renders_zeroes),
        cmocka_unit_test(gauge_fn_is_computed_at_render),
        cmocka_unit_test(empty_labelled_family_has_no_samples),
        cmocka_unit_test(reregistration_returns_same_family),
        cmocka_unit_test(programming_errors_abort),
        cmocka_unit_test(numbers_are_formatted_for_prometheus),
        cmocka_unit_test(value_sums_shards),
        cmocka_unit_test(concurrent_recording_is_exact),
        cmocka_unit_test(promtool_accepts_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
