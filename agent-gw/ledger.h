/*
 * ledger.h — the task ledger: every A2A task agent-gw sees, who asked for it, the delegation
 * chain it came with, and each change of its state, with times and reasons.
 *
 * Two sides, two tables (tasks, task_transitions; schema version 5):
 *  - the daemon's writes (ag_ledger_task, ag_ledger_transition): queued on the store's batching
 *    writer, so that no request or stream waits on SQLite. The change detection is done in SQL
 *    when the writer runs, so the daemon may report every status event it parses: a state that
 *    did not change records nothing.
 *  - the admin side (gwctl tasks): synchronous reads on a connection of the caller's.
 *
 * States are stored in the A2A v0.3 spellings (submitted, working, input-required,
 * auth-required, completed, canceled, failed, rejected, unknown), whichever version an agent
 * speaks; ag_task_state_normalize maps the v1.0 enum names onto them. completed, canceled, failed
 * and rejected are final: a task that reached one ends there (ended_ms is set), and the ledger
 * records no transition out of it (A2A does not restart a task in a final state; a status event
 * that arrives after the gateway canceled a task, say for a kill, does not bring it back).
 *
 * A task is keyed by (agent, id): the target agent's name and the task id the agent gave.
 *
 * Besides the tables, the daemon keeps in memory who may ask about each task (ag_owners_t): the
 * principal that created it and the origin of the chain it was created on. Requests read it, so it
 * lives beside the tables rather than in them: no request waits on SQLite. It is seeded from the
 * tasks table at start, so that a restart forgets nothing the ledger kept (up to its capacity).
 */
#ifndef AG_LEDGER_H
#define AG_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "store.h"

#define AG_LEDGER_DEFAULT_LIMIT 100 /* tasks ag_ledger_list returns when the filter says 0 */
/* Tasks whose owners the daemon remembers: each costs about 100 bytes plus its ids, so the
 * default holds a busy day's tasks in some tens of MiB. The least recently used go first. */
#define AG_OWNERS_DEFAULT_CAPACITY 200000

/* ---- task states ---- */

/* The v0.3 spelling (a static string) of a task state given in either version: a v0.3 state
 * ("input-required") or a v1.0 enum name ("TASK_STATE_INPUT_REQUIRED"; both TASK_STATE_CANCELED
 * and TASK_STATE_CANCELLED; TASK_STATE_UNSPECIFIED is "unknown"). Case-sensitive, as the
 * protocols are. NULL for NULL or anything else. */
const char *ag_task_state_normalize(const char *s);

/* True for the final states (completed, canceled, failed, rejected), given normalized. */
bool ag_task_state_final(const char *normalized);

/* ---- the daemon's writes (asynchronous) ----
 *
 * Strings are copied; at_ms is Unix time in milliseconds (the time of the event). Each call
 * queues its statements with tp_store_submit, which commits them in order. Returns 0 when
 * queued, -EINVAL for a NULL required argument or a state ag_task_state_normalize does not
 * know, or what tp_store_submit returned (-EAGAIN when the queue stayed full, -ESHUTDOWN). After
 * an error part of a call may have been queued; the next event for the task records what is
 * missing, since every statement compares with the stored state when it runs. */

/* Records a sighting of a task: the first one inserts the task (agent, task_id, context_id or
 * NULL, caller — the principal id —, chain_json — a JSON array as text, NULL for "[]" — and
 * state, created at at_ms) and its first transition; a later one changes the state as
 * ag_ledger_transition does (with no reason). The task's context, caller and chain are those of
 * its first sighting. */
int ag_ledger_task(tp_store_writer_t *w, const char *agent, const char *task_id, const char *context_id,
                   const char *caller, const char *chain_json, const char *state, int64_t at_ms);

/* Records that the task (agent, task_id) is now in `state`, for `reason` (NULL when the agent
 * reported it itself): a transition row and the task's state, updated_ms and, for a final state,
 * ended_ms. Only when it changes something: nothing for an unknown task, a state equal to the
 * stored one, or a task already in a final state. */
int ag_ledger_transition(tp_store_writer_t *w, const char *agent, const char *task_id, const char *state,
                         const char *reason, int64_t at_ms);

/* ---- the admin side (gwctl) ---- */

typedef struct ag_ledger_filter {
    const char *agent;  /* NULL: any */
    const char *caller; /* NULL: any */
    const char *state;  /* either version's spelling; NULL: any */
    int64_t since_ms;   /* tasks created at or after this; 0: any time */
    int limit;          /* at most this many; 0: AG_LEDGER_DEFAULT_LIMIT */
} ag_ledger_filter_t;

/* Tasks matching every field of f (f may be NULL: all), newest (created) first: a new JSON array
 * (the caller decrefs) of {agent, id, context_id, caller, chain (parsed), state, created_ms,
 * updated_ms, ended_ms}, absent values as null. NULL and *err (malloc'd) when the store fails,
 * or for an unknown state ("unknown task state 'done'") or a negative limit. */
json_t *ag_ledger_list(sqlite3 *db, const ag_ledger_filter_t *f, char **err);

/* One task as ag_ledger_list shows it, with "transitions": [{state, reason, at_ms}, …] oldest
 * first (a new reference). agent may be NULL when the id is unique across agents. NULL and *err
 * (malloc'd): "no task ID" (or "no task ID for agent A"), "task ID exists for several agents
 * (A, B); use --agent", or a store failure. */
json_t *ag_ledger_show(sqlite3 *db, const char *agent, const char *task_id, char **err);

/* ---- who may ask about a task (in memory, any thread) ---- */

typedef struct ag_owners ag_owners_t;

typedef enum ag_owner_answer {
    AG_OWNER_UNKNOWN, /* no task (agent, task) is remembered: never seen, or forgotten */
    AG_OWNER_YES,     /* the principal created the task, or started the chain it was created on */
    AG_OWNER_NO,      /* somebody else's task */
} ag_owner_answer_t;

/* An index of at most `capacity` tasks (0: AG_OWNERS_DEFAULT_CAPACITY), split into shards each
 * with its own lock, so that workers seldom wait for one another. Free with ag_owners_free. */
ag_owners_t *ag_owners_new(size_t capacity);
void ag_owners_free(ag_owners_t *o);

/* Remembers that principal `caller`, on a chain started by `origin` (the caller itself when the
 * call had no chain), created task `task` of `agent`. Strings are copied. The first record of a
 * task stands (as in the ledger): a later one only marks it used. When the index is full the
 * least recently used task is forgotten. */
void ag_owners_put(ag_owners_t *o, const char *agent, const char *task, const char *caller, const char *origin);

/* Whether `principal` may ask agent `agent` about task `task`; marks the task used. */
ag_owner_answer_t ag_owners_check(ag_owners_t *o, const char *agent, const char *task, const char *principal);

/* Tasks remembered now. */
size_t ag_owners_count(ag_owners_t *o);

/* Fills the index from the tasks table of db: the newest tasks, as many as it holds, with their
 * callers and the first caller of their stored chains. Returns how many were read, or -1 with
 * *err (malloc'd) when the store cannot be read. Main thread, at start. */
long ag_owners_seed(ag_owners_t *o, sqlite3 *db, char **err);

#endif
