/*
 * pins.h — tool-definition pinning: mcp-gw trusts a tool's definition the first time it sees it,
 * and hides and refuses the tool when its server later serves a different one, until an
 * operator approves the change (`gwctl mcp approve SERVER/TOOL`). This defeats "rug pulls",
 * where a server changes a tool's description or schema after it was trusted.
 *
 * A definition is pinned by the SHA-256 of its canonical JSON: the members name, title,
 * description, inputSchema, outputSchema and annotations that are present (not _meta, not
 * icons, nothing else), with object keys sorted at every depth and no whitespace.
 *
 * Three sides, one table (mcp_tool_pins, schema version 4):
 *  - the daemon's snapshot (mcp_pins_t): immutable, loaded on the main thread whenever the
 *    store's state_version changes, read lock-free by workers (mcp_pins_check);
 *  - the daemon's writes (mcp_pins_record_*): queued on the store's batching writer, so that no
 *    request waits on SQLite;
 *  - the admin side (gwctl): synchronous changes, each audited in the same transaction.
 *
 * A pin is keyed by (server, tool): the configured server's name and the upstream's own tool
 * name (before any prefix mcp-gw adds). Audit targets and gwctl name it "server/tool".
 */
#ifndef MCP_PINS_H
#define MCP_PINS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <sqlite3.h>

#include "store.h"

#define MCP_PIN_HASH_LEN 64 /* hex characters of a SHA-256 */

typedef struct mcp_pins mcp_pins_t;

typedef enum mcp_pin_verdict {
    MCP_PIN_NEW = 0, /* never seen: record it (mcp_pins_record_new) and serve it */
    MCP_PIN_OK,      /* the approved definition: serve it */
    MCP_PIN_DRIFT,   /* another definition, or the pin is quarantined: hide it, refuse calls to it,
                      * and record the drift (mcp_pins_record_drift) */
} mcp_pin_verdict_t;

/* ---- hashing ---- */

/* The canonical JSON text of a tool definition (`tool` is one entry of a tools/list result), as
 * described above: what is hashed, and what the daemon should store as the definition. Returns a
 * malloc'd string, or NULL when tool is not a JSON object. */
char *mcp_pin_canonical(const json_t *tool);

/* SHA-256 of mcp_pin_canonical(tool) as MCP_PIN_HASH_LEN lowercase hex characters (malloc'd,
 * NUL-terminated), or NULL when tool is not a JSON object. */
char *mcp_pin_hash(const json_t *tool);

/* ---- the daemon's snapshot ---- */

/* Reads every pin from db (one consistent read). Call on the thread that owns db, off the
 * request path. Returns the snapshot (free with mcp_pins_free), or NULL and *err (malloc'd,
 * "read mcp_tool_pins: no such table: …"). */
mcp_pins_t *mcp_pins_load(sqlite3 *db, char **err);

/* Frees a snapshot (NULL is fine). No reader may use it any more. */
void mcp_pins_free(mcp_pins_t *p);

/* The number of pins in the snapshot, quarantined ones included (0 for NULL). */
size_t mcp_pins_count(const mcp_pins_t *p);

/* The verdict for a definition with this hash (from mcp_pin_hash) served by server as tool.
 * O(log n), no locks, no allocation; p must not be NULL (a daemon that could not load its pins
 * does not serve tools rather than trust everything afresh). */
mcp_pin_verdict_t mcp_pins_check(const mcp_pins_t *p, const char *server, const char *tool, const char *hash);

/* ---- the daemon's writes (asynchronous) ---- */

/* Queues a new pin (status pinned, first seen now). Nothing happens when a pin for (server,
 * tool) exists by the time the writer runs it: the first definition stays the trusted one.
 * definition_json is the definition as JSON text, best mcp_pin_canonical's (then the stored
 * definition is exactly what was hashed); it is kept as given. Strings are copied. Returns
 * as tp_store_submit (0 when queued, -EAGAIN when the queue stayed full, -ESHUTDOWN), or -EINVAL
 * when an argument is NULL. */
int mcp_pins_record_new(tp_store_writer_t *w, const char *server, const char *tool, const char *hash,
                        const char *definition_json);

/* Queues the quarantine of (server, tool) because its server now serves a definition with
 * seen_hash: status quarantined, seen_hash and seen_definition set, changed now; and an audit
 * record (actor "mcp-gw", action "mcp.tool.quarantined", target "server/tool", detail
 * {"before": {status, hash, seen_hash}, "after": {…}}). Both happen only when they change
 * something: not when seen_hash is the approved hash (an approval raced ahead of the daemon's
 * snapshot), nor when the pin is already quarantined on seen_hash, nor when there is no pin. So
 * the daemon may call this on every DRIFT verdict without flooding the audit log or making
 * every daemon reload. Returns as mcp_pins_record_new; on an error the pin may have been left
 * unchanged, and the next call (at the next DRIFT verdict) does what is missing. */
int mcp_pins_record_drift(tp_store_writer_t *w, const char *server, const char *tool, const char *seen_hash,
                          const char *seen_definition_json);

/* ---- the admin side (gwctl) ----
 *
 * As in policy/admin.h: one short transaction on db (BEGIN IMMEDIATE, or a savepoint when the
 * caller has a transaction open) that makes the change and writes an audit_log row with actor,
 * action, target "server/tool" and detail {"before": pin, "after": pin or null}, the pins as
 * mcp_pins_list shows them (so the audit keeps both definitions). Returns 0, -ENOENT when there
 * is no pin for (server, tool), -EINVAL when there is nothing to do, or another negative code
 * for a store failure; on failure *err is a malloc'd sentence ("no pin for everything/echo")
 * and nothing changed. Running daemons see the change within one watch interval, or at once
 * after gwctl_notify_daemons. */

/* Approves the drifted definition of a quarantined pin: it becomes the pinned one (hash,
 * definition), the pin is served again, approved_by/approved_ms record who and when. Action
 * "mcp.tool.approve". -EINVAL ("everything/echo is not quarantined") when there is nothing to
 * approve. */
int mcp_pins_approve(sqlite3 *db, const char *actor, const char *server, const char *tool, char **err);

/* Deletes a pin, quarantined or not, so that the next definition the daemon sees is pinned
 * afresh. Action "mcp.tool.forget". */
int mcp_pins_forget(sqlite3 *db, const char *actor, const char *server, const char *tool, char **err);

/* The pins of server (NULL: all servers), only quarantined ones when drift_only, sorted by
 * server then tool: a new JSON array (the caller decrefs) of {server, tool, status, hash,
 * definition, seen_hash, seen_definition, first_seen_ms, changed_ms, approved_by, approved_ms},
 * definitions as JSON values and absent values as null. NULL and *err when the store fails. */
json_t *mcp_pins_list(sqlite3 *db, const char *server, bool drift_only, char **err);

#endif
