/*
 * test_ledger.c — agent-gw/ledger.c against a real store: task states in both A2A versions,
 * tasks and transitions recorded through the batching writer (changes only, final states final),
 * the reads gwctl tasks makes (list with filters, show), and the in-memory index of who may ask
 * about each task (first record stands, least recently used forgotten, seeded from the table).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger.h"
#include "store.h"

#define BUSY_TIMEOUT_MS 5000

typedef struct fixture {
    char dir[64];
    char path[128];
    tp_store_t *store;
    sqlite3 *db;
    tp_store_writer_t *w;
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_ledger.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    tp_store_options_t so = { .busy_timeout_ms = BUSY_TIMEOUT_MS, .create = true };
    char *err = NULL;
    assert_int_equal(tp_store_open(f->path, &so, &f->store, &err), 0);
    f->db = tp_store_db(f->store);
    tp_store_writer_options_t wo = {
        .queue_size = 1024, .batch_size = 64, .flush_ms = 5, .block_ms = 5, .busy_timeout_ms = BUSY_TIMEOUT_MS
    };
    assert_int_equal(tp_store_writer_start(f->path, &wo, NULL, &f->w, &err), 0);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    tp_store_writer_stop(f->w);
    tp_store_close(f->store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- helpers ---- */

static void
exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static int64_t
query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return v;
}

/* The rows of a query as one string: columns joined by ' ', rows by '\n', NULL as "NULL". */
static char *
query_rows(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    char *out = strdup("");
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(stmt); i++) {
            const char *s = (const char *)sqlite3_column_text(stmt, i);
            char *more = NULL;
            assert_true(asprintf(&more, "%s%s%s", out, i > 0 ? " " : (out[0] != '\0' ? "\n" : ""),
                                 s != NULL ? s : "NULL") >= 0);
            free(out);
            out = more;
        }
    }
    sqlite3_finalize(stmt);
    return out;
}

static void
assert_rows(sqlite3 *db, const char *sql, const char *want)
{
    char *got = query_rows(db, sql);
    if (strcmp(got, want) != 0)
        fail_msg("%s:\ngot:\n%s\nwant:\n%s", sql, got, want);
    free(got);
}

/* The transitions of a task as "state@at[:reason]" lines. */
static void
assert_transitions(sqlite3 *db, const char *agent, const char *task, const char *want)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT state || '@' || at_ms || coalesce(':' || reason, '') FROM task_transitions "
             "WHERE agent = '%s' AND task_id = '%s' ORDER BY id",
             agent, task);
    assert_rows(db, sql, want);
}

static void
assert_task(sqlite3 *db, const char *agent, const char *task, const char *want)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT state, created_ms, updated_ms, ended_ms FROM tasks WHERE agent = '%s' AND id = '%s'", agent, task);
    assert_rows(db, sql, want);
}

/* ---- states ---- */

static void
test_normalize_v03_states(void **state)
{
    (void)state;
    static const char *const states[] = {
        "submitted", "working", "input-required", "auth-required", "completed",
        "canceled",  "failed",  "rejected",       "unknown",
    };
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        assert_string_equal(ag_task_state_normalize(states[i]), states[i]);
}

static void
test_normalize_v10_enums(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        { "TASK_STATE_SUBMITTED", "submitted" },
        { "TASK_STATE_WORKING", "working" },
        { "TASK_STATE_INPUT_REQUIRED", "input-required" },
        { "TASK_STATE_AUTH_REQUIRED", "auth-required" },
        { "TASK_STATE_COMPLETED", "completed" },
        { "TASK_STATE_CANCELED", "canceled" },
        { "TASK_STATE_CANCELLED", "canceled" }, /* the protobuf spelling */
        { "TASK_STATE_FAILED", "failed" },
        { "TASK_STATE_REJECTED", "rejected" },
        { "TASK_STATE_UNSPECIFIED", "unknown" },
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        assert_string_equal(ag_task_state_normalize(pairs[i][0]), pairs[i][1]);
}

static void
test_normalize_refuses_the_rest(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",         "Completed", "cancelled", "input_required", "TASK_STATE_", "TASK_STATE_DONE", "task_state_working",
        " working",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ag_task_state_normalize(bad[i]) != NULL)
            fail_msg("'%s' was normalized", bad[i]);
    }
    assert_null(ag_task_state_normalize(NULL));
}

static void
test_final_states(void **state)
{
    (void)state;
    assert_true(ag_task_state_final("completed"));
    assert_true(ag_task_state_final("canceled"));
    assert_true(ag_task_state_final("failed"));
    assert_true(ag_task_state_final("rejected"));
    assert_false(ag_task_state_final("submitted"));
    assert_false(ag_task_state_final("working"));
    assert_false(ag_task_state_final("input-required"));
    assert_false(ag_task_state_final("auth-required"));
    assert_false(ag_task_state_final("unknown"));
    assert_false(ag_task_state_final("TASK_STATE_COMPLETED")); /* normalized names only */
    assert_false(ag_task_state_final(NULL));
}

/* ---- the daemon's writes ---- */

static void
test_first_sighting_records_task_and_state(void **state)
{
    fixture_t *f = *state;
    int64_t version = tp_store_state_version(f->store);
    assert_int_equal(ag_ledger_task(f->w, "planner", "t1", "ctx-1", "alice", "[\"alice\",\"t0\"]", "submitted", 1000),
                     0);
    tp_store_writer_flush(f->w);
    assert_int_equal(tp_store_state_version(f->store), version); /* the ledger makes no daemon reload */
    assert_rows(f->db,
                "SELECT agent, id, context_id, caller, chain, state, created_ms, updated_ms, ended_ms FROM tasks",
                "planner t1 ctx-1 alice [\"alice\",\"t0\"] submitted 1000 1000 NULL");
    assert_transitions(f->db, "planner", "t1", "submitted@1000");

    /* No context and no chain: NULL and "[]". */
    assert_int_equal(ag_ledger_task(f->w, "coder", "t9", NULL, "bob", NULL, "TASK_STATE_WORKING", 1500), 0);
    tp_store_writer_flush(f->w);
    assert_rows(f->db, "SELECT context_id, chain, state FROM tasks WHERE id = 't9'", "NULL [] working");
    assert_transitions(f->db, "coder", "t9", "working@1500");
}

static void
test_repeated_states_are_not_recorded(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(ag_ledger_task(f->w, "planner", "t1", "ctx", "alice", "[]", "submitted", 1000), 0);
    assert_int_equal(ag_ledger_task(f->w, "planner", "t1", "ctx", "alice", "[]", "submitted", 1010), 0);
    for (int i = 0; i < 5; i++) /* a stream repeating its status, in either spelling */
        assert_int_equal(
            ag_ledger_transition(f->w, "planner", "t1", i % 2 ? "working" : "TASK_STATE_WORKING", NULL, 1100 + i), 0);
    assert_int_equal(ag_ledger_transition(f->w, "planner", "t1", "input-required", NULL, 1200), 0);
    assert_int_equal(ag_ledger_transition(f->w, "planner", "t1", "TASK_STATE_INPUT_REQUIRED", NULL, 1210), 0);
    assert_int_equal(ag_ledger_transition(f->w, "planner", "t1", "working", NULL, 1300), 0);
    tp_store_writer_flush(f->w);
    assert_transitions(f->db, "planner", "t1", "submitted@1000\nworking@1100\ninput-required@1200\nworking@1300");
    assert_task(f->db, "planner", "t1", "working 1000 1300 NULL");
}

static void
test_later_sighting_changes_state_keeps_origin(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(ag_ledger_task(f->w, "planner", "t1", "ctx", "alice", "[\"alice\"]", "submitted", 1000), 0);
    /* tasks/get by another caller later: the state is news, the caller and chain are not. */
    assert_int_equal(ag_ledger_task(f->w, "planner", "t1", "other", "bob", "[]", "working", 1500), 0);
    tp_store_writer_flush(f->w);
    assert_rows(f->db, "SELECT context_id, caller, chain FROM tasks", "ctx alice [\"alice\"]");
    assert_transitions(f->db, "planner", "t1", "submitted@1000\nworking@1500");
    assert_task(f->db, "planner", "t1", "working 1000 1500 NULL");
}

static void
test_final_state_sets_ended_and_stays(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(ag_ledger_task(f->w, "writer", "t2", NULL, "planner", "[]", "working", 1000), 0);
    assert_int_equal(ag_ledger_transition(f->w, "writer", "t2", "canceled", "killed: agent writer", 2000), 0);
    /* What arrives after the end changes nothing: the agent's late status, a second cancel. */
    assert_int_equal(ag_ledger_transition(f->w, "writer", "t2", "working", NULL, 2100), 0);
    assert_int_equal(ag_ledger_transition(f->w, "writer", "t2", "TASK_STATE_COMPLETED", NULL, 2200), 0);
    assert_int_equal(ag_ledger_task(f->w, "writer", "t2", NULL, "planner", "[]", "working", 2300), 0);
    assert_int_equal(ag_ledger_transition(f->w, "writer", "t2", "TASK_STATE_CANCELLED", "again", 2400), 0);
    tp_store_writer_flush(f->w);
    assert_transitions(f->db, "writer", "t2", "working@1000\ncanceled@2000:killed: agent writer");
    assert_task(f->db, "writer", "t2", "canceled 1000 2000 2000");

    /* A task first seen in a final state (a synchronous answer) ends when it starts. */
    assert_int_equal(ag_ledger_task(f->w, "writer", "t3", NULL, "alice", "[]", "TASK_STATE_REJECTED", 3000), 0);
    tp_store_writer_flush(f->w);
    assert_task(f->db, "writer", "t3", "rejected 3000 3000 3000");
    assert_transitions(f->db, "writer", "t3", "rejected@3000");
}

static void
test_transition_of_unknown_task_records_nothing(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(ag_ledger_transition(f->w, "planner", "ghost", "working", NULL, 1000), 0);
    tp_store_writer_flush(f->w);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM task_transitions"), 0);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM tasks"), 0);
}

static void
test_same_id_for_two_agents_are_two_tasks(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(ag_ledger_task(f->w, "a", "1", NULL, "alice", NULL, "submitted", 1000), 0);
    assert_int_equal(ag_ledger_task(f->w, "b", "1", NULL, "alice", NULL, "submitted", 1001), 0);
    assert_int_equal(ag_ledger_transition(f->w, "b", "1", "completed", NULL, 1002), 0);
    tp_store_writer_flush(f->w);
    assert_task(f->db, "a", "1", "submitted 1000 1000 NULL");
    assert_task(f->db, "b", "1", "completed 1001 1002 1002");
}

static void
test_writes_refuse_bad_arguments(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(ag_ledger_task(f->w, NULL, "t", NULL, "alice", NULL, "working", 1), -EINVAL);
    assert_int_equal(ag_ledger_task(f->w, "a", NULL, NULL, "alice", NULL, "working", 1), -EINVAL);
    assert_int_equal(ag_ledger_task(f->w, "a", "t", NULL, NULL, NULL, "working", 1), -EINVAL);
    assert_int_equal(ag_ledger_task(f->w, "a", "t", NULL, "alice", NULL, "done", 1), -EINVAL);
    assert_int_equal(ag_ledger_task(f->w, "a", "t", NULL, "alice", NULL, NULL, 1), -EINVAL);
    assert_int_equal(ag_ledger_transition(f->w, "a", "t", "Working", NULL, 1), -EINVAL);
    assert_int_equal(ag_ledger_transition(f->w, "a", NULL, "working", NULL, 1), -EINVAL);
    tp_store_writer_flush(f->w);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM tasks"), 0);
}

/* ---- the admin side ---- */

/* Five tasks: planner t1 (alice, completed), coder t2 (planner, working), writer t2 (planner,
 * canceled), planner t3 (bob, input-required), coder t4 (alice, submitted), created 1000..5000. */
static void
seed(fixture_t *f)
{
    assert_int_equal(ag_ledger_task(f->w, "planner", "t1", "c1", "alice", "[]", "submitted", 1000), 0);
    assert_int_equal(ag_ledger_transition(f->w, "planner", "t1", "working", NULL, 1100), 0);
    assert_int_equal(ag_ledger_transition(f->w, "planner", "t1", "completed", NULL, 1200), 0);
    assert_int_equal(ag_ledger_task(f->w, "coder", "t2", "c1", "planner", "[\"alice\",\"planner\"]", "working", 2000),
                     0);
    assert_int_equal(ag_ledger_task(f->w, "writer", "t2", NULL, "planner", "[]", "working", 3000), 0);
    assert_int_equal(ag_ledger_transition(f->w, "writer", "t2", "canceled", "killed: agent writer", 3500), 0);
    assert_int_equal(ag_ledger_task(f->w, "planner", "t3", "c3", "bob", "[]", "TASK_STATE_INPUT_REQUIRED", 4000), 0);
    assert_int_equal(ag_ledger_task(f->w, "coder", "t4", NULL, "alice", "[]", "submitted", 5000), 0);
    tp_store_writer_flush(f->w);
}

/* "agent/id" of each listed task, joined with ' '. */
static void
assert_listed(json_t *tasks, const char *want)
{
    assert_non_null(tasks);
    char got[1024] = "";
    size_t i;
    json_t *t;
    json_array_foreach(tasks, i, t)
    {
        size_t n = strlen(got);
        snprintf(got + n, sizeof(got) - n, "%s%s/%s", i > 0 ? " " : "", json_string_value(json_object_get(t, "agent")),
                 json_string_value(json_object_get(t, "id")));
    }
    if (strcmp(got, want) != 0)
        fail_msg("listed '%s', want '%s'", got, want);
    json_decref(tasks);
}

static void
test_list_newest_first_with_filters(void **state)
{
    fixture_t *f = *state;
    seed(f);
    char *err = NULL;
    assert_listed(ag_ledger_list(f->db, NULL, &err), "coder/t4 planner/t3 writer/t2 coder/t2 planner/t1");
    assert_listed(ag_ledger_list(f->db, &(ag_ledger_filter_t){ .agent = "planner" }, &err), "planner/t3 planner/t1");
    assert_listed(ag_ledger_list(f->db, &(ag_ledger_filter_t){ .caller = "alice" }, &err), "coder/t4 planner/t1");
    assert_listed(ag_ledger_list(f->db, &(ag_ledger_filter_t){ .state = "canceled" }, &err), "writer/t2");
    assert_listed(ag_ledger_list(f->db, &(ag_ledger_filter_t){ .state = "TASK_STATE_INPUT_REQUIRED" }, &err),
                  "planner/t3");
    assert_listed(ag_ledger_list(f->db, &(ag_ledger_filter_t){ .since_ms = 3000 }, &err),
                  "coder/t4 planner/t3 writer/t2");
    assert_listed(ag_ledger_list(f->db, &(ag_ledger_filter_t){ .limit = 2 }, &err), "coder/t4 planner/t3");
    assert_listed(
        ag_ledger_list(f->db, &(ag_ledger_filter_t){ .agent = "coder", .caller = "alice", .since_ms = 1 }, &err),
        "coder/t4");
    assert_listed(ag_ledger_list(f->db, &(ag_ledger_filter_t){ .agent = "coder", .state = "completed" }, &err), "");
}

static void
test_list_rows_are_whole(void **state)
{
    fixture_t *f = *state;
    seed(f);
    char *err = NULL;
    json_t *tasks = ag_ledger_list(f->db, &(ag_ledger_filter_t){ .agent = "coder", .caller = "planner" }, &err);
    assert_non_null(tasks);
    assert_int_equal(json_array_size(tasks), 1);
    json_t *t = json_array_get(tasks, 0);
    assert_string_equal(json_string_value(json_object_get(t, "context_id")), "c1");
    json_t *chain = json_object_get(t, "chain");
    assert_true(json_is_array(chain)); /* parsed, not a string */
    assert_string_equal(json_string_value(json_array_get(chain, 1)), "planner");
    assert_string_equal(json_string_value(json_object_get(t, "state")), "working");
    assert_int_equal(json_integer_value(json_object_get(t, "created_ms")), 2000);
    assert_true(json_is_null(json_object_get(t, "ended_ms")));
    json_decref(tasks);
}

static void
test_list_default_limit_and_errors(void **state)
{
    fixture_t *f = *state;
    exec_sql(f->db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150) "
                    "INSERT INTO tasks (agent, id, caller, state, created_ms, updated_ms) "
                    "SELECT 'a', 't' || i, 'alice', 'working', i, i FROM n");
    char *err = NULL;
    json_t *tasks = ag_ledger_list(f->db, NULL, &err);
    assert_int_equal(json_array_size(tasks), AG_LEDGER_DEFAULT_LIMIT);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tasks, 0), "id")), "t150");
    json_decref(tasks);
    tasks = ag_ledger_list(f->db, &(ag_ledger_filter_t){ .limit = 1000 }, &err);
    assert_int_equal(json_array_size(tasks), 150);
    json_decref(tasks);

    assert_null(ag_ledger_list(f->db, &(ag_ledger_filter_t){ .state = "done" }, &err));
    assert_non_null(strstr(err, "unknown task state 'done'"));
    free(err);
    err = NULL;
    assert_null(ag_ledger_list(f->db, &(ag_ledger_filter_t){ .limit = -1 }, &err));
    assert_non_null(err);
    free(err);
}

static void
test_show_gives_transitions(void **state)
{
    fixture_t *f = *state;
    seed(f);
    char *err = NULL;
    json_t *t = ag_ledger_show(f->db, NULL, "t1", &err);
    assert_non_null(t);
    assert_string_equal(json_string_value(json_object_get(t, "agent")), "planner");
    assert_string_equal(json_string_value(json_object_get(t, "state")), "completed");
    assert_int_equal(json_integer_value(json_object_get(t, "ended_ms")), 1200);
    json_t *tr = json_object_get(t, "transitions");
    assert_int_equal(json_array_size(tr), 3);
    static const char *const states[] = { "submitted", "working", "completed" };
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(json_string_value(json_object_get(json_array_get(tr, i), "state")), states[i]);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(tr, i), "at_ms")), 1000 + 100 * (int)i);
        assert_true(json_is_null(json_object_get(json_array_get(tr, i), "reason")));
    }
    json_decref(t);

    t = ag_ledger_show(f->db, "writer", "t2", &err);
    assert_non_null(t);
    tr = json_object_get(t, "transitions");
    assert_int_equal(json_array_size(tr), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tr, 1), "reason")), "killed: agent writer");
    json_decref(t);
}

static void
test_show_errors(void **state)
{
    fixture_t *f = *state;
    seed(f);
    char *err = NULL;
    assert_null(ag_ledger_show(f->db, NULL, "t2", &err));
    assert_string_equal(err, "task t2 exists for several agents (coder, writer); use --agent");
    free(err);
    err = NULL;
    assert_null(ag_ledger_show(f->db, NULL, "nope", &err));
    assert_string_equal(err, "no task nope");
    free(err);
    err = NULL;
    assert_null(ag_ledger_show(f->db, "writer", "t1", &err));
    assert_string_equal(err, "no task t1 for agent writer");
    free(err);
}

static void
test_reads_report_store_failures(void **state)
{
    fixture_t *f = *state;
    exec_sql(f->db, "DROP TABLE task_transitions");
    seed(f); /* the transitions fail in the writer; the tasks are recorded */
    char *err = NULL;
    assert_null(ag_ledger_show(f->db, NULL, "t1", &err));
    assert_non_null(strstr(err, "task_transitions"));
    free(err);
    err = NULL;
    exec_sql(f->db, "DROP TABLE tasks");
    assert_null(ag_ledger_list(f->db, NULL, &err));
    assert_non_null(strstr(err, "tasks"));
    free(err);
}

/* ---- who may ask about a task ---- */

static void
test_owners_answer_caller_and_origin_only(void **state)
{
    (void)state;
    ag_owners_t *o = ag_owners_new(0);
    assert_int_equal(ag_owners_check(o, "echo", "t1", "alice"), AG_OWNER_UNKNOWN);
    ag_owners_put(o, "echo", "t1", "d1", "alice"); /* d1 made it on a chain alice started */
    ag_owners_put(o, "echo", "t2", "mallory", NULL);
    assert_int_equal(ag_owners_check(o, "echo", "t1", "d1"), AG_OWNER_YES);
    assert_int_equal(ag_owners_check(o, "echo", "t1", "alice"), AG_OWNER_YES);
    assert_int_equal(ag_owners_check(o, "echo", "t1", "mallory"), AG_OWNER_NO);
    assert_int_equal(ag_owners_check(o, "echo", "t2", "mallory"), AG_OWNER_YES); /* origin NULL: the caller */
    assert_int_equal(ag_owners_check(o, "echo", "t2", "alice"), AG_OWNER_NO);
    /* A task is (agent, id): the same id at another agent is another task. */
    assert_int_equal(ag_owners_check(o, "other", "t1", "alice"), AG_OWNER_UNKNOWN);
    /* The first record stands, as in the ledger. */
    ag_owners_put(o, "echo", "t1", "mallory", "mallory");
    assert_int_equal(ag_owners_check(o, "echo", "t1", "mallory"), AG_OWNER_NO);
    assert_int_equal(ag_owners_count(o), 2);
    /* Ids that differ only after a prefix, or in which part is the agent, stay apart. */
    ag_owners_put(o, "ab", "c", "x", NULL);
    ag_owners_put(o, "a", "bc", "y", NULL);
    assert_int_equal(ag_owners_check(o, "ab", "c", "y"), AG_OWNER_NO);
    assert_int_equal(ag_owners_check(o, "a", "bc", "y"), AG_OWNER_YES);
    ag_owners_free(o);
}

static void
test_owners_forget_least_recently_used(void **state)
{
    (void)state;
    enum { CAPACITY = 128, PUTS = 20000 }; /* 2 per shard */
    ag_owners_t *o = ag_owners_new(CAPACITY);
    ag_owners_put(o, "echo", "keep", "alice", NULL);
    ag_owners_put(o, "echo", "first", "alice", NULL);
    char task[32];
    for (int i = 0; i < PUTS; i++) {
        snprintf(task, sizeof(task), "t%d", i);
        ag_owners_put(o, "echo", task, "bob", NULL);
        assert_int_equal(ag_owners_check(o, "echo", "keep", "alice"), AG_OWNER_YES); /* used: kept */
    }
    assert_true(ag_owners_count(o) <= CAPACITY);
    assert_int_equal(ag_owners_check(o, "echo", "first", "alice"), AG_OWNER_UNKNOWN); /* forgotten */
    assert_int_equal(ag_owners_check(o, "echo", task, "bob"), AG_OWNER_YES);          /* the newest is there */
    ag_owners_free(o);
}

static void
test_owners_seeded_from_the_ledger(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(ag_ledger_task(f->w, "echo", "t1", NULL, "d1",
                                    "[{\"caller\":\"alice\",\"target\":\"d1\",\"at_ms\":1},"
                                    "{\"caller\":\"d1\",\"target\":\"echo\",\"at_ms\":2}]",
                                    "submitted", 1000),
                     0);
    assert_int_equal(ag_ledger_task(f->w, "echo", "t2", NULL, "mallory", NULL, "working", 2000), 0);
    tp_store_writer_flush(f->w);
    exec_sql(f->db, "INSERT INTO tasks (agent, id, caller, chain, state, created_ms, updated_ms) "
                    "VALUES ('echo', 't3', 'carol', 'not json', 'working', 3000, 3000)");
    ag_owners_t *o = ag_owners_new(0);
    char *err = NULL;
    assert_int_equal(ag_owners_seed(o, f->db, &err), 3);
    assert_int_equal(ag_owners_check(o, "echo", "t1", "d1"), AG_OWNER_YES);
    assert_int_equal(ag_owners_check(o, "echo", "t1", "alice"), AG_OWNER_YES); /* the chain's origin */
    assert_int_equal(ag_owners_check(o, "echo", "t1", "mallory"), AG_OWNER_NO);
    assert_int_equal(ag_owners_check(o, "echo", "t2", "mallory"), AG_OWNER_YES);
    assert_int_equal(ag_owners_check(o, "echo", "t3", "carol"), AG_OWNER_YES); /* a chain it cannot read */
    ag_owners_free(o);

    /* A small index keeps the newest. */
    o = ag_owners_new(1);
    assert_int_equal(ag_owners_seed(o, f->db, &err), 1);
    assert_int_equal(ag_owners_check(o, "echo", "t3", "carol"), AG_OWNER_YES);
    assert_int_equal(ag_owners_check(o, "echo", "t1", "d1"), AG_OWNER_UNKNOWN);
    ag_owners_free(o);

    exec_sql(f->db, "DROP TABLE task_transitions; DROP TABLE tasks");
    o = ag_owners_new(0);
    assert_int_equal(ag_owners_seed(o, f->db, &err), -1);
    assert_non_null(strstr(err, "tasks"));
    free(err);
    ag_owners_free(o);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_v03_states),
        cmocka_unit_test(test_normalize_v10_enums),
        cmocka_unit_test(test_normalize_refuses_the_rest),
        cmocka_unit_test(test_final_states),
        T(test_first_sighting_records_task_and_state),
        T(test_repeated_states_are_not_recorded),
        T(test_later_sighting_changes_state_keeps_origin),
        T(test_final_state_sets_ended_and_stays),
        T(test_transition_of_unknown_task_records_nothing),
        T(test_same_id_for_two_agents_are_two_tasks),
        T(test_writes_refuse_bad_arguments),
        T(test_list_newest_first_with_filters),
        T(test_list_rows_are_whole),
        T(test_list_default_limit_and_errors),
        T(test_show_gives_transitions),
        T(test_show_errors),
        T(test_reads_report_store_failures),
        cmocka_unit_test(test_owners_answer_caller_and_origin_only),
        cmocka_unit_test(test_owners_forget_least_recently_used),
        T(test_owners_seeded_from_the_ledger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
