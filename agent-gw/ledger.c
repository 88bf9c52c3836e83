#include "ledger.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

/* ---- task states ---- */

static const struct {
    const char *v03; /* the stored spelling */
    const char *v10; /* the A2A v1.0 enum name */
    bool final;
} STATES[] = {
    { "submitted", "TASK_STATE_SUBMITTED", false },
    { "working", "TASK_STATE_WORKING", false },
    { "input-required", "TASK_STATE_INPUT_REQUIRED", false },
    { "auth-required", "TASK_STATE_AUTH_REQUIRED", false },
    { "completed", "TASK_STATE_COMPLETED", true },
    { "canceled", "TASK_STATE_CANCELED", true },
    { "failed", "TASK_STATE_FAILED", true },
    { "rejected", "TASK_STATE_REJECTED", true },
    { "unknown", "TASK_STATE_UNSPECIFIED", false },
};
#define NUM_STATES (sizeof(STATES) / sizeof(STATES[0]))

/* The final states as an SQL list: must agree with STATES. */
#define FINAL_SQL "('completed', 'canceled', 'failed', 'rejected')"

const char *
ag_task_state_normalize(const char *s)
{
    if (s == NULL)
        return NULL;
    /* The protobuf enum of v1.0 spells it CANCELLED, the JSON binding of the specification
     * CANCELED; SDKs emit both. */
    if (strcmp(s, "TASK_STATE_CANCELLED") == 0)
        return "canceled";
    for (size_t i = 0; i < NUM_STATES; i++) {
        if (strcmp(s, STATES[i].v03) == 0 || strcmp(s, STATES[i].v10) == 0)
            return STATES[i].v03;
    }
    return NULL;
}

bool
ag_task_state_final(const char *normalized)
{
    for (size_t i = 0; normalized != NULL && i < NUM_STATES; i++) {
        if (strcmp(normalized, STATES[i].v03) == 0)
            return STATES[i].final;
    }
    return false;
}

/* ---- the daemon's writes ---- */

/* The statements are static arrays: the writer caches its prepared statements by address. Each
 * compares with the stored state when the writer runs it, so that the order of the queue, not
 * what the daemon believed when it queued, decides what is recorded. */

/* A new task's first state, queued before the task itself: only while the task does not exist. */
static const char FIRST_TRANSITION_SQL[] =
    "INSERT INTO task_transitions (agent, task_id, state, reason, at_ms) SELECT ?1, ?2, ?3, NULL, ?4 "
    "WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE agent = ?1 AND id = ?2)";

static const char INSERT_TASK_SQL[] =
    "INSERT OR IGNORE INTO tasks (agent, id, context_id, caller, chain, state, created_ms, updated_ms, ended_ms) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, CASE WHEN ?6 IN " FINAL_SQL " THEN ?7 END)";

/* What makes a state a change: the task exists, is not in a final state, and is in another
 * state. The transition row is written first, while the task still shows its old state. */
#define STATE_CHANGES "agent = ?1 AND id = ?2 AND state IS NOT ?3 AND state NOT IN " FINAL_SQL

static const char TRANSITION_SQL[] = "INSERT INTO task_transitions (agent, task_id, state, reason, at_ms) "
                                     "SELECT ?1, ?2, ?3, ?5, ?4 FROM tasks WHERE " STATE_CHANGES;

static const char UPDATE_STATE_SQL[] = "UPDATE tasks SET state = ?3, updated_ms = ?4, "
                                       "ended_ms = CASE WHEN ?3 IN " FINAL_SQL " THEN ?4 END WHERE " STATE_CHANGES;

static tp_store_value_t
text_value(const char *s)
{
    return (tp_store_value_t){ .type = TP_STORE_TEXT, .u.s = s }; /* NULL is SQL NULL */
}

static tp_store_value_t
int_value(int64_t i)
{
    return (tp_store_value_t){ .type = TP_STORE_INT, .u.i = i };
}

/* Queues the change of an existing task to `state` (normalized). */
static int
queue_transition(tp_store_writer_t *w, const char *agent, const char *task_id, const char *state, const char *reason,
                 int64_t at_ms)
{
    tp_store_value_t values[] = {
        text_value(agent), text_value(task_id), text_value(state), int_value(at_ms), text_value(reason),
    };
    int rv = tp_store_submit(w, TRANSITION_SQL, values, 5);
    if (rv != 0)
        return rv; /* the task is left as it is: the next event records the change */
    return tp_store_submit(w, UPDATE_STATE_SQL, values, 4);
}

int
ag_ledger_task(tp_store_writer_t *w, const char *agent, const char *task_id, const char *context_id, const char *caller,
               const char *chain_json, const char *state, int64_t at_ms)
{
    const char *norm = ag_task_state_normalize(state);
    if (agent == NULL || task_id == NULL || caller == NULL || norm == NULL)
        return -EINVAL;
    tp_store_value_t first[] = {
        text_value(agent),
        text_value(task_id),
        text_value(norm),
        int_value(at_ms),
    };
    int rv = tp_store_submit(w, FIRST_TRANSITION_SQL, first, sizeof(first) / sizeof(first[0]));
    if (rv != 0)
        return rv;
    tp_store_value_t task[] = {
        text_value(agent),
        text_value(task_id),
        text_value(context_id),
        text_value(caller),
        text_value(chain_json != NULL ? chain_json : "[]"),
        text_value(norm),
        int_value(at_ms),
    };
    rv = tp_store_submit(w, INSERT_TASK_SQL, task, sizeof(task) / sizeof(task[0]));
    if (rv != 0)
        return rv;
    /* A task seen before may be in another state by now; for a new one this records nothing. */
    return queue_transition(w, agent, task_id, norm, NULL, at_ms);
}

int
ag_ledger_transition(tp_store_writer_t *w, const char *agent, const char *task_id, const char *state,
                     const char *reason, int64_t at_ms)
{
    const char *norm = ag_task_state_normalize(state);
    if (agent == NULL || task_id == NULL || norm == NULL)
        return -EINVAL;
    return queue_transition(w, agent, task_id, norm, reason, at_ms);
}

/* ---- the admin side ---- */

__attribute__((format(printf, 2, 3))) static void
set_err(char **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        tp_fatal("out of memory");
    va_end(ap);
    *err = msg;
}

static sqlite3_stmt *
prepare(sqlite3 *db, const char *sql, char **err)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        set_err(err, "read the task ledger: %s", sqlite3_errmsg(db));
        return NULL;
    }
    return stmt;
}

static void
bind_text_or_null(sqlite3_stmt *stmt, int i, const char *s)
{
    if (s != NULL)
        sqlite3_bind_text(stmt, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt, i);
}

/* A column as JSON: integers, text (parsed when `parse` and it is JSON), or null. */
static json_t *
column_json(sqlite3_stmt *stmt, int i, bool parse)
{
    switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
        return json_integer(sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(stmt, i));
    case SQLITE_TEXT: {
        const char *text = (const char *)sqlite3_column_text(stmt, i);
        json_t *v = parse ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
        return v != NULL ? v : json_string(text);
    }
    default:
        return json_null();
    }
}

/* Steps stmt to the end collecting its rows as objects keyed by column name (the column
 * "chain" parsed), and finalizes it. NULL and *err when the store fails. */
static json_t *
rows_json(sqlite3 *db, sqlite3_stmt *stmt, char **err)
{
    json_t *rows = json_array();
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int i = 0; i < sqlite3_column_count(stmt); i++) {
            const char *name = sqlite3_column_name(stmt, i);
            json_object_set_new(row, name, column_json(stmt, i, strcmp(name, "chain") == 0));
        }
        json_array_append_new(rows, row);
    }
    if (rc != SQLITE_DONE) {
        set_err(err, "read the task ledger: %s", sqlite3_errmsg(db));
        json_decref(rows);
        rows = NULL;
    }
    sqlite3_finalize(stmt);
    return rows;
}

#define TASK_COLUMNS "agent, id, context_id, caller, chain, state, created_ms, updated_ms, ended_ms"

/* Appends " AND <column> = ?" to the query when value is set, and binds it later in order. */
static void
add_filter(char **sql, const char *column, const char *value, const char *binds[], int *n)
{
    if (value == NULL)
        return;
    char *more = tp_sprintf("%s AND %s = ?", *sql, column);
    free(*sql);
    *sql = more;
    binds[(*n)++] = value;
}

json_t *
ag_ledger_list(sqlite3 *db, const ag_ledger_filter_t *f, char **err)
{
    ag_ledger_filter_t none = { 0 };
    if (f == NULL)
        f = &none;
    const char *state = NULL;
    if (f->state != NULL && (state = ag_task_state_normalize(f->state)) == NULL) {
        set_err(err,
                "unknown task state '%s' (submitted, working, input-required, auth-required, completed, canceled, "
                "failed, rejected, unknown, or their TASK_STATE_ names)",
                f->state);
        return NULL;
    }
    if (f->limit < 0) {
        set_err(err, "the limit must not be negative");
        return NULL;
    }
    /* Only the filters given are in the statement, so that SQLite picks the index of the one
     * that narrows (an "?1 IS NULL OR agent = ?1" term would hide every index but created_ms's). */
    char *sql = tp_strdup("SELECT " TASK_COLUMNS " FROM tasks WHERE created_ms >= ?");
    const char *binds[3];
    int n = 0;
    add_filter(&sql, "agent", f->agent, binds, &n);
    add_filter(&sql, "caller", f->caller, binds, &n);
    add_filter(&sql, "state", state, binds, &n);
    char *full = tp_sprintf("%s ORDER BY created_ms DESC, agent, id LIMIT ?", sql);
    free(sql);
    sqlite3_stmt *stmt = prepare(db, full, err);
    free(full);
    if (stmt == NULL)
        return NULL;
    sqlite3_bind_int64(stmt, 1, f->since_ms);
    for (int i = 0; i < n; i++)
        sqlite3_bind_text(stmt, i + 2, binds[i], -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(stmt, n + 2, f->limit > 0 ? f->limit : AG_LEDGER_DEFAULT_LIMIT);
    return rows_json(db, stmt, err);
}

/* The tasks with this id (of `agent`, when not NULL): a new array, or NULL with *err. */
static json_t *
tasks_with_id(sqlite3 *db, const char *agent, const char *task_id, char **err)
{
    sqlite3_stmt *stmt = prepare(
        db, "SELECT " TASK_COLUMNS " FROM tasks WHERE id = ?1 AND (?2 IS NULL OR agent = ?2) ORDER BY agent", err);
    if (stmt == NULL)
        return NULL;
    sqlite3_bind_text(stmt, 1, task_id, -1, SQLITE_TRANSIENT);
    bind_text_or_null(stmt, 2, agent);
    return rows_json(db, stmt, err);
}

/* "A, B, C": the agents of tasks, for the message about an ambiguous id (malloc'd). */
static char *
agent_names(json_t *tasks)
{
    char *names = tp_strdup("");
    size_t i;
    json_t *t;
    json_array_foreach(tasks, i, t)
    {
        char *more = tp_sprintf("%s%s%s", names, i > 0 ? ", " : "", json_string_value(json_object_get(t, "agent")));
        free(names);
        names = more;
    }
    return names;
}

json_t *
ag_ledger_show(sqlite3 *db, const char *agent, const char *task_id, char **err)
{
    json_t *tasks = tasks_with_id(db, agent, task_id, err);
    if (tasks == NULL)
        return NULL;
    if (json_array_size(tasks) != 1) {
        if (json_array_size(tasks) == 0 && agent != NULL) {
            set_err(err, "no task %s for agent %s", task_id, agent);
        } else if (json_array_size(tasks) == 0) {
            set_err(err, "no task %s", task_id);
        } else {
            char *names = agent_names(tasks);
            set_err(err, "task %s exists for several agents (%s); use --agent", task_id, names);
            free(names);
        }
        json_decref(tasks);
        return NULL;
    }
    json_t *task = json_incref(json_array_get(tasks, 0));
    json_decref(tasks);
    sqlite3_stmt *stmt = prepare(db,
                                 "SELECT state, reason, at_ms FROM task_transitions WHERE agent = ?1 AND task_id = ?2 "
                                 "ORDER BY at_ms, id",
                                 err);
    json_t *transitions = NULL;
    if (stmt != NULL) {
        sqlite3_bind_text(stmt, 1, json_string_value(json_object_get(task, "agent")), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(stmt, 2, task_id, -1, SQLITE_TRANSIENT);
        transitions = rows_json(db, stmt, err);
    }
    if (transitions == NULL) {
        json_decref(task);
        return NULL;
    }
    json_object_set_new(task, "transitions", transitions);
    return task;
}
