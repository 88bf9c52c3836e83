/*
 * admin.h — changes to identity, policy and quota state in the store, each one audited.
 *
 * What gwctl (and `gwctl apply`) calls. Every function runs one short transaction on the
 * given connection (BEGIN IMMEDIATE … COMMIT) that makes the change and writes an audit_log
 * row with the actor, the action, the target and {"before":…, "after":…} as detail, so the
 * audit can never disagree with the state. Secrets (API key secrets, hashes) never appear in
 * the audit. Daemons see the change within one watch interval (triggers bump state_version).
 *
 * Return values: 0 on success; -ENOENT when the target does not exist; -EEXIST when creating
 * something that exists; -EINVAL for invalid input; another negative code for a store failure.
 * On failure *err is set to a malloc'd sentence naming the problem ("principal 'bob' does not
 * exist"). Nothing is changed when a call fails.
 *
 * Listing functions return a new JSON array of objects (the caller decrefs), or NULL with *err.
 */
#ifndef POL_ADMIN_H
#define POL_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

/* True when s is a valid principal, team or rule id: 1-128 of A-Z a-z 0-9 - _ . : @. */
bool pol_admin_valid_id(const char *s);

/* Who is making changes: the OS user running gwctl ("os:alice", or "os:root(sudo:alice)"). */
char *pol_admin_actor(void);

/* ---- principals and teams ---- */

/* Creates (create == true; -EEXIST if present) or replaces a principal. `p` is
 * {"id", "kind", "team"?, "roles"?: [..], "labels"?: {..}, "enabled"?: bool, "description"?}. */
int pol_admin_principal_put(sqlite3 *db, const char *actor, json_t *p, bool create, char **err);
int pol_admin_principal_set_enabled(sqlite3 *db, const char *actor, const char *id, bool enabled, char **err);
/* Deletes a principal and its API keys. */
int pol_admin_principal_delete(sqlite3 *db, const char *actor, const char *id, char **err);
/* One principal as JSON (new reference), or NULL with *err (e.g. "principal 'bob' does not exist"). */
json_t *pol_admin_principal_get(sqlite3 *db, const char *id, char **err);
json_t *pol_admin_principal_list(sqlite3 *db, char **err);

/* `t` is {"id", "description"?}. */
int pol_admin_team_put(sqlite3 *db, const char *actor, json_t *t, bool create, char **err);
int pol_admin_team_delete(sqlite3 *db, const char *actor, const char *id, char **err);
json_t *pol_admin_team_list(sqlite3 *db, char **err);

/* ---- API keys ---- */

/* Creates a key for `principal`. expires_at_ms 0: never. On success *key_out is the full key
 * (malloc'd; shown once, never stored) and *id_out its id (malloc'd). */
int pol_admin_key_create(sqlite3 *db, const char *actor, const char *principal, const char *name, int64_t expires_at_ms,
                         char **key_out, char **id_out, char **err);
/* Revokes a key now. -ENOENT when unknown; revoking a revoked key is a no-op success. */
int pol_admin_key_revoke(sqlite3 *db, const char *actor, const char *id, char **err);
/* Creates a new key for the same principal and makes the old one expire after overlap_ms
 * (0: at once). Outputs as for pol_admin_key_create. */
int pol_admin_key_rotate(sqlite3 *db, const char *actor, const char *id, int64_t overlap_ms, char **key_out,
                         char **id_out, char **err);
/* Keys (never secrets): id, principal, name, created_at_ms, expires_at_ms, revoked_at_ms,
 * status ("active", "expired", "revoked"). principal may be NULL for all. */
json_t *pol_admin_key_list(sqlite3 *db, const char *principal, char **err);

/* ---- policy rules ---- */

/* Adds (create) or replaces a rule. `rule` is the rule JSON of policy/rules.h; it is validated
 * with pol_rule_parse and stored in canonical form. */
int pol_admin_rule_put(sqlite3 *db, const char *actor, json_t *rule, bool create, char **err);
int pol_admin_rule_delete(sqlite3 *db, const char *actor, const char *id, char **err);
json_t *pol_admin_rule_get(sqlite3 *db, const char *id, char **err);
json_t *pol_admin_rule_list(sqlite3 *db, char **err);
/* "allow" or "deny": what happens when no rule matches. */
int pol_admin_set_default_effect(sqlite3 *db, const char *actor, const char *effect, char **err);
/* The current default effect ("deny" when unset), malloc'd. */
char *pol_admin_default_effect(sqlite3 *db, char **err);

/* ---- quotas ---- */

/* Sets a rate limit for scope_kind "principal" or "team", scope, resource glob ("*" for the
 * whole scope). rpm / tpm 0 means no limit of that kind; both 0 removes the limit. */
int pol_admin_limit_set(sqlite3 *db, const char *actor, const char *scope_kind, const char *scope, const char *resource,
                        int64_t rpm, int64_t tpm, char **err);
json_t *pol_admin_limit_list(sqlite3 *db, char **err);

/* Sets a budget for scope_kind "principal" or "team", period "day" or "month". max_tokens /
 * max_cost_micros 0 means no limit of that kind; both 0 removes the budget. */
int pol_admin_budget_set(sqlite3 *db, const char *actor, const char *scope_kind, const char *scope, const char *period,
                         int64_t max_tokens, int64_t max_cost_micros, char **err);
/* Budgets with their usage so far in the current period (computed from the usage table).
 * scope_kind/scope may be NULL for all. */
json_t *pol_admin_budget_list(sqlite3 *db, const char *scope_kind, const char *scope, int64_t now_ms, char **err);

/* ---- kill switches ---- */

/* A kill switch stops one subject on every plane: target_kind "agent" or "principal" (target is
 * the principal id or agent name), "team" (a team id), or "all" (target "*"; NULL or "" reads as
 * "*" there). Targets need not exist in the store: a JWT identity or a configured agent may carry
 * the name.
 *
 * pol_admin_kill puts one in force. `reason` is required (what the incident is; at most
 * POL_KILL_REASON_MAX bytes). ttl_ms 0: until released; otherwise it expires by itself ttl_ms
 * from now. At most one kill per target is active: a second one for the same kind and target is
 * refused with -EEXIST, and *err names the one in force (its id, since when, by whom) — release
 * it first to change its reason or expiry. Audited as "kill.create", target "KIND:TARGET",
 * {"before": null, "after": the kill}. Returns the new kill's id (> 0), or a negative code. */
#define POL_KILL_REASON_MAX 1000
int64_t pol_admin_kill(sqlite3 *db, const char *actor, const char *target_kind, const char *target, const char *reason,
                       int64_t ttl_ms, char **err);

/* Releases the kill of target_kind/target that is in force: sets released_at_ms and released_by.
 * -ENOENT when none is (an expired kill is no longer in force). Audited as "kill.release" with
 * the kill before and after. Returns the released kill's id (> 0; if rows written by other means
 * left several active for the target, all are released and the newest id is returned). */
int64_t pol_admin_release(sqlite3 *db, const char *actor, const char *target_kind, const char *target, char **err);

/* Kills newest first: those in force only, or with include_released every one ever made. Rows:
 * {id, target_kind, target, reason, created_by, created_at_ms, expires_at_ms (null: none),
 * released_at_ms, released_by (null unless released), status ("active", "expired", "released")}. */
json_t *pol_admin_kills(sqlite3 *db, bool include_released, char **err);

/* Whether anything in the store answers to the target: a principal (agent, principal), an
 * agent in the registry (agent), a team or a principal in it (team); always true for "all". A
 * kill of an unknown name is allowed (see above); gwctl uses this to warn about typos. */
bool pol_admin_kill_target_known(sqlite3 *db, const char *target_kind, const char *target);

/* Records what happened when a kill or release was sent to the daemons, as an audit row of its
 * own ("kill.broadcast", target "KIND:TARGET"): `outcome` is borrowed and stored as the detail
 * (gwctl writes {"command", "kill_id", "daemons": [...], "all_confirmed"}). Written after the
 * broadcast, so that every kill and release, confirmed or not, leaves its outcome in the audit. */
int pol_admin_audit_kill_outcome(sqlite3 *db, const char *actor, const char *target_kind, const char *target,
                                 json_t *outcome, char **err);

/* Writes an audit row (detail borrowed; NULL for none) inside the caller's transaction, for
 * admin changes made outside this module (gwctl's responses and model commands). */
int pol_admin_record(sqlite3 *db, const char *actor, const char *action, const char *target, json_t *detail,
                     char **err);

/* ---- reading usage and audit ---- */

/* Usage summed over [since_ms, until_ms) grouped by `by` ("principal", "team", "model" or
 * "plane"), optionally filtered (NULL: no filter). Rows: {key, requests, input_tokens,
 * output_tokens, cost_micros}. */
json_t *pol_admin_usage(sqlite3 *db, const char *by, const char *principal, const char *team, const char *model,
                        int64_t since_ms, int64_t until_ms, char **err);

/* Audit rows, newest first, at most `limit`, filtered by any non-NULL field. Rows: {id, ts_ms,
 * actor, action, target, detail (parsed JSON when it is JSON)}. */
json_t *pol_admin_audit(sqlite3 *db, const char *actor, const char *action, const char *target, int64_t since_ms,
                        int64_t until_ms, int64_t after_id, int limit, char **err);

#endif
