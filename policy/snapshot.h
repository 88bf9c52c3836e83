/*
 * snapshot.h — the immutable in-memory picture of the policy state a daemon serves from.
 *
 * Built from the store on the daemon's main thread, never changed afterwards, and replaced
 * whole when the store's state_version changes, so that readers need no locks and no request
 * ever waits on SQLite. It holds principals, API keys (hashes only), the rules, the default
 * effect, rate limits, budgets and the kill switches in force.
 *
 * A snapshot that cannot be built completely (a stored rule that no longer parses, say) is not
 * built at all: the daemon keeps serving from the previous one, and is not ready at start-up.
 * Failing closed matters here: skipping one unparsable deny rule would allow too much.
 */
#ifndef POL_SNAPSHOT_H
#define POL_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "apikey.h"
#include "budget.h"
#include "daemon.h"
#include "principal.h"
#include "rules.h"

typedef struct pol_kill {
    char *target_kind; /* "agent", "principal", "team" or "all" */
    char *target;      /* the name or id; "*" for all */
    char *reason;
    char *created_by;
    int64_t created_at_ms; /* Unix time, milliseconds */
    int64_t expires_at_ms; /* 0: until released */
} pol_kill_t;

typedef struct pol_key {
    char id[POL_APIKEY_ID_LEN + 1];
    uint8_t hash[POL_APIKEY_HASH_LEN]; /* SHA-256 of the secret */
    const pol_principal_t *principal;  /* in the same snapshot */
    int64_t expires_at_ms;             /* 0: never */
    int64_t revoked_at_ms;             /* 0: not revoked */
} pol_key_t;

typedef struct pol_rate_limit {
    pol_budget_scope_t scope_kind;
    char *scope;
    char *resource;              /* glob; "*" for the whole scope */
    int64_t requests_per_minute; /* 0: none */
    int64_t tokens_per_minute;   /* 0: none */
} pol_rate_limit_t;

typedef struct pol_snapshot {
    int64_t loaded_at_ms;
    pol_kill_t *kills; /* the kills in force at loaded_at_ms (released and expired ones left out) */
    size_t num_kills;
    pol_principal_t *principals; /* sorted by id */
    size_t num_principals;
    pol_key_t *keys; /* sorted by id */
    size_t num_keys;
    pol_ruleset_t *rules;
    bool default_allow; /* what happens when no rule matches */
    pol_rate_limit_t *limits;
    size_t num_limits;
    pol_budget_limit_t *budgets; /* scope strings owned by the snapshot */
    size_t num_budgets;
} pol_snapshot_t;

/* Reads the snapshot from db. Returns NULL and *err (malloc'd) on failure. */
pol_snapshot_t *pol_snapshot_load(sqlite3 *db, char **err);

/* The principal with this id, or NULL. O(log n); no locks. */
const pol_principal_t *pol_snapshot_principal(const pol_snapshot_t *snap, const char *id);

/* The API key with this id, or NULL. O(log n); no locks. */
const pol_key_t *pol_snapshot_key(const pol_snapshot_t *snap, const char *id);

/* Frees a snapshot (NULL is fine). */
void pol_snapshot_free(pol_snapshot_t *snap);

/* {"principals": n, "keys": n, "rules": n, "default_effect", "limits": n, "budgets": n,
 *  "kills_active": n, "kills": [...]} (new reference). */
json_t *pol_snapshot_describe(const pol_snapshot_t *snap);

/* The snapshot as daemon state (tp_state_ops_t), for tp_daemon_spec_t.state_ops. */
extern const tp_state_ops_t pol_snapshot_state_ops;

#endif
