/*
 * test_response_store.c — model-gw/response_store.c against a real store and a libuv loop:
 * a response is found at once after it is put (before its row commits), by its owner only; a
 * conversation is read from the cache without the store, and from the store (one query, on the
 * thread pool) once evicted; deletes win over rows read before they commit; a deleted older
 * response ends the conversation there; expired responses are gone; purges and forgets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "metrics.h"
#include "response_store.h"
#include "store.h"

#define BUSY_TIMEOUT_MS 5000

typedef struct fixture {
    char dir[64];
    char path[128];
    tp_store_t *store;
    tp_store_writer_t *w;
    tp_metrics_t *metrics;
    uv_loop_t loop;
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_response_store.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    tp_store_options_t so = { .busy_timeout_ms = BUSY_TIMEOUT_MS, .create = true };
    char *err = NULL;
    assert_int_equal(tp_store_open(f->path, &so, &f->store, &err), 0);
    tp_store_writer_options_t wo = {
        .queue_size = 1024, .batch_size = 64, .flush_ms = 5, .block_ms = 5, .busy_timeout_ms = BUSY_TIMEOUT_MS
    };
    assert_int_equal(tp_store_writer_start(f->path, &wo, NULL, &f->w, &err), 0);
    f->metrics = tp_metrics_new(1);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    tp_store_writer_stop(f->w);
    tp_store_close(f->store);
    tp_metrics_free(f->metrics);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- helpers ---- */

/* Puts response `id` continuing `prev` for `who`, with one input item and one output item whose
 * text is the id (so a history shows the order). */
static void
put(mg_response_store_t *s, const char *id, const char *prev, const char *who, int64_t created_ms)
{
    json_t *items = json_pack("[{s:s, s:s, s:s, s:s}]", "id", "in", "type", "message", "role", "user", "content", id);
    json_t *response = json_pack("{s:s, s:s, s:[{s:s, s:s}]}", "id", id, "object", "response", "output", "type",
                                 "message", "text", id);
    mg_response_store_put(s, id, who, "m", prev, "completed", created_ms, items, response, NULL);
}

typedef struct result {
    bool called;
    size_t n;
    char ids[8][32];
} result_t;

static void
on_chain(mg_response_chain_t *chain, void *data)
{
    result_t *res = data;
    res->called = true;
    res->n = chain->n;
    for (size_t i = 0; i < chain->n && i < 8; i++)
        snprintf(res->ids[i], sizeof(res->ids[i]), "%s", chain->items[i]->id);
    mg_response_chain_clear(chain);
}

/* Loads and runs the loop until the callback ran. Returns whether it ran before load returned. */
static bool
load(fixture_t *f, mg_response_store_t *s, const char *id, const char *who, bool chain, result_t *res)
{
    memset(res, 0, sizeof(*res));
    mg_response_load_t *l = mg_response_store_load(s, &f->loop, id, who, chain, on_chain, res);
    bool sync = res->called;
    assert_true(sync == (l == NULL));
    for (int i = 0; i < 1000 && !res->called; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(res->called);
    return sync;
}

static double
loads(fixture_t *f, const char *source)
{
    tp_metric_t *m =
        tp_metrics_counter(f->metrics, "triplane_model_response_loads_total", "", (const char *[]){ "source", NULL });
    return tp_metric_value(m, (const char *[]){ source });
}

static int64_t
rows(fixture_t *f)
{
    tp_store_writer_flush(f->w);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(tp_store_db(f->store), "SELECT count(*) FROM responses", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* ---- tests ---- */

static void
found_at_once_by_its_owner_only(void **state)
{
    fixture_t *f = *state;
    mg_response_store_t *s = mg_response_store_new(f->path, f->w, 1 << 20, 30, f->metrics);
    int64_t now = tp_unix_ms();
    put(s, "r1", NULL, "alice", now);
    result_t res;
    assert_true(load(f, s, "r1", "alice", false, &res));
    assert_int_equal(res.n, 1);
    assert_string_equal(res.ids[0], "r1");
    assert_true(load(f, s, "r1", "bob", false, &res)); /* cached: no store read to say no */
    assert_int_equal(res.n, 0);
    assert_int_equal(rows(f), 1);
    mg_response_store_free(s);
}

static void
take_chain(mg_response_chain_t *chain, void *data)
{
    *(mg_response_chain_t *)data = *chain;
}

static void
a_conversation_comes_from_the_cache(void **state)
{
    fixture_t *f = *state;
    mg_response_store_t *s = mg_response_store_new(f->path, f->w, 1 << 20, 0, f->metrics);
    int64_t now = tp_unix_ms();
    put(s, "a", NULL, "alice", now);
    put(s, "b", "a", "alice", now + 1);
    put(s, "c", "b", "alice", now + 2);
    result_t res;
    assert_true(load(f, s, "c", "alice", true, &res));
    assert_int_equal(res.n, 3);
    assert_string_equal(res.ids[0], "a");
    assert_string_equal(res.ids[1], "b");
    assert_string_equal(res.ids[2], "c");
    assert_true(loads(f, "cache") >= 1);
    assert_true(loads(f, "store") == 0);

    /* The history: each response's input, then its output, oldest first. */
    mg_response_chain_t chain = { 0 };
    assert_null(mg_response_store_load(s, &f->loop, "c", "alice", true, take_chain, &chain));
    json_t *history = mg_response_chain_history(&chain);
    assert_int_equal(json_array_size(history), 6);
    assert_string_equal(json_string_value(json_object_get(json_array_get(history, 0), "content")), "a");
    assert_string_equal(json_string_value(json_object_get(json_array_get(history, 1), "text")), "a");
    assert_string_equal(json_string_value(json_object_get(json_array_get(history, 5), "text")), "c");
    json_decref(history);
    mg_response_chain_clear(&chain);
    mg_response_store_free(s);
}

static void
an_evicted_conversation_is_read_from_the_store(void **state)
{
    fixture_t *f = *state;
    /* No cache at all: every load reads the store, on the thread pool. */
    mg_response_store_t *s = mg_response_store_new(f->path, f->w, 0, 0, f->metrics);
    int64_t now = tp_unix_ms();
    put(s, "a", NULL, "alice", now);
    put(s, "b", "a", "alice", now + 1);
    put(s, "c", "b", "alice", now + 2);
    result_t res;
    /* Not committed yet, maybe: the load lets the writer commit and reads again. */
    assert_false(load(f, s, "c", "alice", true, &res));
    assert_int_equal(res.n, 3);
    assert_string_equal(res.ids[0], "a");
    assert_string_equal(res.ids[2], "c");
    assert_false(load(f, s, "b", "alice", false, &res));
    assert_int_equal(res.n, 1);
    assert_string_equal(res.ids[0], "b");
    assert_false(load(f, s, "c", "bob", true, &res));
    assert_int_equal(res.n, 0);
    assert_false(load(f, s, "nope", "alice", true, &res));
    assert_int_equal(res.n, 0);
    assert_true(loads(f, "store") == 4);
    mg_response_store_free(s);

    /* A cache too small for all of it: the part that is missing is read. */
    s = mg_response_store_new(f->path, f->w, 1 << 20, 0, f->metrics);
    put(s, "d", "c", "alice", now + 3);
    assert_false(load(f, s, "d", "alice", true, &res));
    assert_int_equal(res.n, 4);
    assert_string_equal(res.ids[0], "a");
    assert_string_equal(res.ids[3], "d");
    /* ... and cached from then on. */
    assert_true(load(f, s, "d", "alice", true, &res));
    assert_int_equal(res.n, 4);
    mg_response_store_free(s);
}

static void
deleted_and_expired_responses_are_gone(void **state)
{
    fixture_t *f = *state;
    mg_response_store_t *s = mg_response_store_new(f->path, f->w, 1 << 20, 1, f->metrics);
    int64_t now = tp_unix_ms();
    put(s, "a", NULL, "alice", now);
    put(s, "b", "a", "alice", now + 1);
    put(s, "c", "b", "alice", now + 2);
    result_t res;
    mg_response_chain_t chain = { 0 };
    assert_null(mg_response_store_load(s, &f->loop, "b", "alice", false, take_chain, &chain));
    assert_int_equal(chain.n, 1);
    mg_response_store_delete(s, chain.items[0]);
    mg_response_chain_clear(&chain);
    assert_true(load(f, s, "b", "alice", false, &res));
    assert_int_equal(res.n, 0);
    /* A deleted older response ends the conversation there. */
    assert_true(load(f, s, "c", "alice", true, &res));
    assert_int_equal(res.n, 1);
    assert_string_equal(res.ids[0], "c");
    assert_int_equal(rows(f), 2);

    /* Past its retention (one day here): gone, in the cache and in the store. */
    put(s, "old", NULL, "alice", now - 2LL * 24 * 3600 * 1000);
    assert_true(load(f, s, "old", "alice", false, &res));
    assert_int_equal(res.n, 0);
    assert_int_equal(rows(f), 3);
    mg_response_store_purge_expired(s);
    assert_int_equal(rows(f), 2);
    mg_response_store_free(s);

    /* Read back from the store by a new cache: the delete holds. */
    s = mg_response_store_new(f->path, f->w, 1 << 20, 1, f->metrics);
    assert_false(load(f, s, "b", "alice", false, &res));
    assert_int_equal(res.n, 0);
    assert_false(load(f, s, "old", "alice", false, &res));
    assert_int_equal(res.n, 0);
    mg_response_store_free(s);
}

/* A tombstone stays while its DELETE may not have committed, even in a cache with no room:
 * otherwise a store read could bring the deleted row back. */
static void
tombstones_outlive_eviction(void **state)
{
    fixture_t *f = *state;
    mg_response_store_t *s = mg_response_store_new(f->path, f->w, 0, 0, f->metrics);
    int64_t now = tp_unix_ms();
    put(s, "gone", NULL, "alice", now);
    mg_response_chain_t chain = { 0 };
    mg_response_load_t *l = mg_response_store_load(s, &f->loop, "gone", "alice", false, take_chain, &chain);
    assert_non_null(l); /* nothing is cached with no room */
    for (int i = 0; i < 1000 && chain.n == 0; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(chain.n, 1);
    mg_response_store_delete(s, chain.items[0]);
    mg_response_chain_clear(&chain);
    for (int i = 0; i < 64; i++) {
        char id[32];
        snprintf(id, sizeof(id), "x%d", i);
        put(s, id, NULL, "alice", now);
        mg_response_store_delete(s, &(mg_stored_response_t){ .id = id, .principal = "alice", .model = "m" });
    }
    result_t res;
    assert_true(load(f, s, "gone", "alice", false, &res)); /* the tombstone answers, not the store */
    assert_int_equal(res.n, 0);
    mg_response_store_free(s);
}

static void
forget_drops_what_gwctl_purged(void **state)
{
    fixture_t *f = *state;
    mg_response_store_t *s = mg_response_store_new(f->path, f->w, 1 << 20, 0, f->metrics);
    int64_t now = tp_unix_ms();
    put(s, "a1", NULL, "alice", now - 10000);
    put(s, "a2", NULL, "alice", now);
    put(s, "b1", NULL, "bob", now - 10000);
    assert_int_equal(mg_response_store_forget(s, NULL, "alice", now - 5000), 1);
    assert_int_equal(mg_response_store_forget(s, "b1", NULL, 0), 1);
    assert_int_equal(mg_response_store_forget(s, "b1", NULL, 0), 0);
    /* Forgotten from memory; the rows (still there: this test purged nothing) are read again. */
    result_t res;
    assert_false(load(f, s, "a1", "alice", false, &res));
    assert_int_equal(res.n, 1);
    assert_true(load(f, s, "a2", "alice", false, &res));
    assert_int_equal(mg_response_store_forget(s, NULL, "alice", 0), 2);
    mg_response_store_free(s);
}

static void
a_cancelled_load_does_not_call_back(void **state)
{
    fixture_t *f = *state;
    mg_response_store_t *s = mg_response_store_new(f->path, f->w, 0, 0, f->metrics);
    put(s, "a", NULL, "alice", tp_unix_ms());
    result_t res = { 0 };
    mg_response_load_t *l = mg_response_store_load(s, &f->loop, "a", "alice", true, on_chain, &res);
    assert_non_null(l);
    mg_response_load_cancel(l);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_false(res.called);
    mg_response_store_free(s);
}

static void
a_long_conversation_is_one_query(void **state)
{
    fixture_t *f = *state;
    mg_response_store_t *s = mg_response_store_new(f->path, f->w, 0, 0, f->metrics);
    int64_t now = tp_unix_ms();
    char prev[32] = "", id[32];
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof(id), "r%03d", i);
        put(s, id, i > 0 ? prev : NULL, "alice", now + i);
        memcpy(prev, id, sizeof(prev));
    }
    result_t res;
    double before = loads(f, "store");
    uint64_t t0 = tp_mono_ns();
    assert_false(load(f, s, "r299", "alice", true, &res));
    double ms = (double)(tp_mono_ns() - t0) / 1e6;
    assert_int_equal(res.n, 300);
    assert_string_equal(res.ids[0], "r000");
    assert_true(loads(f, "store") == before + 1);
    print_message("# 300 responses read back from the store in %.2f ms\n", ms);
    mg_response_store_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(found_at_once_by_its_owner_only, setup, teardown),
        cmocka_unit_test_setup_teardown(a_conversation_comes_from_the_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(an_evicted_conversation_is_read_from_the_store, setup, teardown),
        cmocka_unit_test_setup_teardown(deleted_and_expired_responses_are_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(tombstones_outlive_eviction, setup, teardown),
        cmocka_unit_test_setup_teardown(forget_drops_what_gwctl_purged, setup, teardown),
        cmocka_unit_test_setup_teardown(a_cancelled_load_does_not_call_back, setup, teardown),
        cmocka_unit_test_setup_teardown(a_long_conversation_is_one_query, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
