/*
 * registry.h — the agents agent-gw fronts: those of the configuration (agent_gw.agents) and
 * those an operator added at run time with `gwctl agent add` (table agents, schema version 5).
 *
 * Two sides:
 *  - the daemon's registry (ag_registry_t): loaded on the main thread whenever the store's
 *    state_version changes (adding or removing an agent bumps it), immutable afterwards, read
 *    without locks by every worker;
 *  - the admin side (gwctl): synchronous changes to the agents table, each audited in the same
 *    transaction, and a listing that shows where each agent comes from.
 *
 * The configuration wins: a stored agent with the name of a configured one is ignored (with a
 * warning when the daemon loads it), so that the file stays the authority for what it names.
 * An agent's name is its policy resource, its path (/agents/<name>) and the principal id it
 * calls other agents as.
 */
#ifndef AG_REGISTRY_H
#define AG_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <sqlite3.h>

#include "config.h"

#define AG_AGENT_NAME_MAX 128 /* as principal ids: an agent calls as the principal of its name */

typedef struct ag_agent {
    char *name;
    char *url;                    /* the agent's JSON-RPC endpoint */
    char *card_url;               /* given, or <scheme://host:port of url>/.well-known/agent-card.json */
    char *version;                /* "0.3" or "1.0" */
    json_t *labels;               /* an object of strings; read only (never incref or decref it) */
    const tp_agent_config_t *cfg; /* its configuration (headers, timeouts); NULL for agents added with gwctl */
} ag_agent_t;

typedef struct ag_registry ag_registry_t;

/* ---- the daemon's registry ---- */

/* Builds the registry from the configured agents of cfg (NULL: none) and the agents stored in
 * db, sorted by name. The agents' cfg pointers point into cfg, which must outlive the registry.
 * A stored agent named like a configured one is left out, with a warning in the log. Returns
 * the registry (free with ag_registry_free), or NULL and *err (malloc'd, "read agents: no such
 * table: agents") when the store cannot be read. */
ag_registry_t *ag_registry_load(sqlite3 *db, const tp_agent_gw_config_t *cfg, char **err);

/* Frees a registry (NULL is fine). No reader may use it any more. */
void ag_registry_free(ag_registry_t *r);

/* The agent with this name (owned by the registry), or NULL. O(log n), no locks, no allocation. */
const ag_agent_t *ag_registry_find(const ag_registry_t *r, const char *name);

/* The number of agents (0 for NULL), and the i-th (i < count) in name order. */
size_t ag_registry_count(const ag_registry_t *r);
const ag_agent_t *ag_registry_at(const ag_registry_t *r, size_t i);

/* ---- helpers both sides use ---- */

/* True when name is 1-AG_AGENT_NAME_MAX characters of A-Z a-z 0-9 _ -. */
bool ag_registry_valid_name(const char *name);

/* The card URL an agent at `url` has when none is given: <scheme://host[:port]>/.well-known/
 * agent-card.json (malloc'd), or NULL when url is not an http(s) URL with a host. */
char *ag_registry_default_card_url(const char *url);

/* NULL when url is one the gateway can call (what tp_upstream_new accepts): http:// or https://,
 * a host (https: a name, not an IP address, since certificates are checked against names), an
 * optional port 1-65535, a path and query; no user info, fragment, spaces or control characters.
 * Otherwise a static sentence saying what is wrong ("user info is not supported (…)"). */
const char *ag_registry_url_problem(const char *url);

/* The configured agent named `name` in cfg (NULL: none), or NULL. */
const tp_agent_config_t *ag_registry_configured(const tp_agent_gw_config_t *cfg, const char *name);

/* ---- the admin side (gwctl) ----
 *
 * As in policy/admin.h: one short transaction on db (BEGIN IMMEDIATE, or a savepoint when the
 * caller has a transaction open) that makes the change and writes an audit_log row with actor,
 * action, target the agent's name and detail {"before": row or null, "after": row or null}, the
 * stored row being {name, url, card_url (null: the default), version, labels, created_at_ms,
 * created_by}. Returns 0, -EINVAL for invalid input,
 * -EEXIST, -ENOENT, or another negative code for a store failure; on failure *err is a malloc'd
 * sentence and nothing changed. Running agent-gw daemons reload within one watch interval, or at
 * once after gwctl_notify_daemons. Neither function knows the configuration: whether a name is
 * configured is the caller's to check (ag_registry_configured). */

/* Stores an agent. name: ag_registry_valid_name; url and card_url (NULL: the default): http or
 * https URLs with a host; version "0.3" or "1.0" (NULL: "0.3"); labels: an object of strings
 * (NULL: none; borrowed). created_by is the actor. Action "agent.add". -EEXIST ("agent X is
 * already in the store") when the name is taken. */
int ag_registry_add(sqlite3 *db, const char *actor, const char *name, const char *url, const char *card_url,
                    const char *version, json_t *labels, char **err);

/* Deletes a stored agent. Action "agent.remove". -ENOENT ("no agent X in the store"). */
int ag_registry_remove(sqlite3 *db, const char *actor, const char *name, char **err);

/* Every agent of cfg (NULL: none) and of the store, sorted by name (a configured agent before a
 * stored one of the same name): a new JSON array of {name, source: "config" | "store", version,
 * url, card_url (the effective one), labels}, stored ones with created_at_ms and created_by,
 * and "ignored": true on a stored agent a configured one overrides. NULL and *err when the
 * store fails. */
json_t *ag_registry_list(sqlite3 *db, const tp_agent_gw_config_t *cfg, char **err);

#endif
