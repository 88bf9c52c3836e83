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
 */
#ifndef AG_LEDGER_H
#define AG_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "store.h"

#define AG_LEDGER_DEFAULT_LIMIT 100 /* tasks ag_ledger_list returns when the filter says 0 */

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

#endif
