#include "ledger.h"

#include <errno.h>
#include <pthread.h>
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

/* ---- who may ask about a task ---- */

#define OWNER_SHARDS 64 /* locks: enough that workers seldom meet on one */

typedef struct owner {
    struct owner *chain;         /* the next in the bucket */
    struct owner *older, *newer; /* the shard's order of use, for eviction */
    uint64_t hash;
    const char *task, *caller, *origin; /* point into key */
    char key[];                         /* agent NUL task NUL caller NUL origin NUL */
} owner_t;

typedef struct owner_shard {
    pthread_mutex_t lock;
    owner_t **buckets;
    size_t mask; /* buckets - 1 (a power of two) */
    size_t count, capacity;
    owner_t *oldest, *newest;
} owner_shard_t;

struct ag_owners {
    owner_shard_t shards[OWNER_SHARDS];
    size_t capacity; /* as asked for; the shards hold it rounded up to a multiple of OWNER_SHARDS */
};

/* FNV-1a over agent, a NUL, and task. */
static uint64_t
owner_hash(const char *agent, const char *task)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *s = agent;; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
        if (*s == '\0')
            break;
    }
    for (const char *s = task; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

ag_owners_t *
ag_owners_new(size_t capacity)
{
    if (capacity == 0)
        capacity = AG_OWNERS_DEFAULT_CAPACITY;
    ag_owners_t *o = tp_calloc(1, sizeof(*o));
    o->capacity = capacity;
    size_t per = (capacity + OWNER_SHARDS - 1) / OWNER_SHARDS;
    size_t buckets = 1;
    while (buckets < per)
        buckets <<= 1;
    for (size_t i = 0; i < OWNER_SHARDS; i++) {
        owner_shard_t *sh = &o->shards[i];
        if (pthread_mutex_init(&sh->lock, NULL) != 0)
            tp_fatal("pthread_mutex_init failed");
        sh->buckets = tp_calloc(buckets, sizeof(*sh->buckets));
        sh->mask = buckets - 1;
        sh->capacity = per;
    }
    return o;
}

void
ag_owners_free(ag_owners_t *o)
{
    if (o == NULL)
        return;
    for (size_t i = 0; i < OWNER_SHARDS; i++) {
        owner_shard_t *sh = &o->shards[i];
        for (owner_t *e = sh->oldest, *next; e != NULL; e = next) {
            next = e->newer;
            free(e);
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(o);
}

static owner_shard_t *
shard_of(ag_owners_t *o, uint64_t hash)
{
    return &o->shards[hash % OWNER_SHARDS];
}

/* The entry's place in its bucket (the pointer that points at it), or where it would go. */
static owner_t **
owner_slot(owner_shard_t *sh, uint64_t hash, const char *agent, const char *task)
{
    owner_t **p = &sh->buckets[(hash >> 6) & sh->mask];
    while (*p != NULL && !((*p)->hash == hash && strcmp((*p)->key, agent) == 0 && strcmp((*p)->task, task) == 0))
        p = &(*p)->chain;
    return p;
}

static void
use_unlink(owner_shard_t *sh, owner_t *e)
{
    if (e->older != NULL)
        e->older->newer = e->newer;
    else
        sh->oldest = e->newer;
    if (e->newer != NULL)
        e->newer->older = e->older;
    else
        sh->newest = e->older;
    e->older = e->newer = NULL;
}

static void
use_append(owner_shard_t *sh, owner_t *e)
{
    e->older = sh->newest;
    e->newer = NULL;
    if (sh->newest != NULL)
        sh->newest->newer = e;
    else
        sh->oldest = e;
    sh->newest = e;
}

static void
evict_oldest(owner_shard_t *sh)
{
    owner_t *e = sh->oldest;
    owner_t **p = owner_slot(sh, e->hash, e->key, e->task);
    *p = e->chain;
    use_unlink(sh, e);
    sh->count--;
    free(e);
}

void
ag_owners_put(ag_owners_t *o, const char *agent, const char *task, const char *caller, const char *origin)
{
    if (agent == NULL || task == NULL || caller == NULL)
        return;
    if (origin == NULL)
        origin = caller;
    uint64_t hash = owner_hash(agent, task);
    owner_shard_t *sh = shard_of(o, hash);
    size_t la = strlen(agent) + 1, lt = strlen(task) + 1, lc = strlen(caller) + 1, lo = strlen(origin) + 1;
    owner_t *fresh = tp_malloc(sizeof(*fresh) + la + lt + lc + lo); /* outside the lock */
    memset(fresh, 0, sizeof(*fresh));
    fresh->hash = hash;
    memcpy(fresh->key, agent, la);
    memcpy(fresh->key + la, task, lt);
    memcpy(fresh->key + la + lt, caller, lc);
    memcpy(fresh->key + la + lt + lc, origin, lo);
    fresh->task = fresh->key + la;
    fresh->caller = fresh->task + lt;
    fresh->origin = fresh->caller + lc;

    pthread_mutex_lock(&sh->lock);
    owner_t **slot = owner_slot(sh, hash, agent, task);
    if (*slot != NULL) { /* the first record stands */
        use_unlink(sh, *slot);
        use_append(sh, *slot);
        pthread_mutex_unlock(&sh->lock);
        free(fresh);
        return;
    }
    if (sh->count >= sh->capacity) {
        evict_oldest(sh);
        slot = owner_slot(sh, hash, agent, task); /* the bucket may have changed */
    }
    *slot = fresh;
    use_append(sh, fresh);
    sh->count++;
    pthread_mutex_unlock(&sh->lock);
}

ag_owner_answer_t
ag_owners_check(ag_owners_t *o, const char *agent, const char *task, const char *principal)
{
    uint64_t hash = owner_hash(agent, task);
    owner_shard_t *sh = shard_of(o, hash);
    pthread_mutex_lock(&sh->lock);
    owner_t *e = *owner_slot(sh, hash, agent, task);
    ag_owner_answer_t answer = AG_OWNER_UNKNOWN;
    if (e != NULL) {
        use_unlink(sh, e);
        use_append(sh, e);
        answer = strcmp(principal, e->caller) == 0 || strcmp(principal, e->origin) == 0 ? AG_OWNER_YES : AG_OWNER_NO;
    }
    pthread_mutex_unlock(&sh->lock);
    return answer;
}

size_t
ag_owners_count(ag_owners_t *o)
{
    size_t n = 0;
    for (size_t i = 0; i < OWNER_SHARDS; i++) {
        pthread_mutex_lock(&o->shards[i].lock);
        n += o->shards[i].count;
        pthread_mutex_unlock(&o->shards[i].lock);
    }
    return n;
}

long
ag_owners_seed(ag_owners_t *o, sqlite3 *db, char **err)
{
    /* The newest tasks, put oldest first so that the newest are the last evicted. The origin is
     * the first hop's caller of the stored chain (the caller when the call had none). */
    sqlite3_stmt *stmt =
        prepare(db,
                "SELECT agent, id, caller, coalesce(CASE WHEN json_valid(chain) THEN "
                "json_extract(chain, '$[0].caller') END, caller) FROM "
                "(SELECT agent, id, caller, chain, created_ms FROM tasks ORDER BY created_ms DESC LIMIT ?1) "
                "ORDER BY created_ms ASC",
                err);
    if (stmt == NULL)
        return -1;
    sqlite3_bind_int64(stmt, 1, (sqlite3_int64)o->capacity);
    long n = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *origin = (const char *)sqlite3_column_text(stmt, 3);
        ag_owners_put(o, (const char *)sqlite3_column_text(stmt, 0), (const char *)sqlite3_column_text(stmt, 1),
                      (const char *)sqlite3_column_text(stmt, 2), origin);
        n++;
    }
    if (rc != SQLITE_DONE) {
        set_err(err, "read the task ledger: %s", sqlite3_errmsg(db));
        n = -1;
    }
    sqlite3_finalize(stmt);
    return n;
}
