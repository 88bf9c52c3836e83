/*
 * snapshot.h — the immutable in-memory picture of the policy state a daemon serves from.
 *
 * Built from the store on the daemon's main thread, never changed afterwards, and replaced
 * whole when the store's state_version changes, so that readers need no locks and no request
 * ever waits on SQLite. It holds the kill switches in force; keys, principals and rules join it
 * with the identity and policy work.
 */
#ifndef POL_SNAPSHOT_H
#define POL_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "daemon.h"

typedef struct pol_kill {
    char *target_kind; /* "agent", "principal", "team" or "all" */
    char *target;      /* the name or id; "*" for all */
    char *reason;
    char *created_by;
    int64_t created_at_ms; /* Unix time, milliseconds */
    int64_t expires_at_ms; /* 0: until released */
} pol_kill_t;

typedef struct pol_snapshot {
    int64_t loaded_at_ms;
    pol_kill_t *kills; /* the kills in force at loaded_at_ms (released and expired ones left out) */
    size_t num_kills;
} pol_snapshot_t;

/* Reads the snapshot from db. Returns NULL and *err (malloc'd) on failure. */
pol_snapshot_t *pol_snapshot_load(sqlite3 *db, char **err);

/* Frees a snapshot (NULL is fine). */
void pol_snapshot_free(pol_snapshot_t *snap);

/* {"kills_active": n, "kills": [...]} (new reference). */
json_t *pol_snapshot_describe(const pol_snapshot_t *snap);

/* The snapshot as daemon state (tp_state_ops_t), for tp_daemon_spec_t.state_ops. */
extern const tp_state_ops_t pol_snapshot_state_ops;

#endif
