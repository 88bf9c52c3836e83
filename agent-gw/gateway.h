/*
 * gateway.h — the state of agent-gw and the contracts between its modules.
 *
 * agent-gw stands between A2A callers and A2A agents. It serves each agent's card with every
 * URL pointing back at itself (cards.c), and forwards JSON-RPC posted to /agents/<name> to the
 * agent (forward.c) after the checks: authentication, kill switches, the delegation chain (loops,
 * depth, forgery), policy for the caller and for the chain's origin, limits, push-URL SSRF
 * guard. Streams pass through with back pressure while the gateway reads each event to keep the
 * task ledger. Requests run on every worker; the little state that is shared is immutable (the
 * registry), atomic (the per-agent counters) or behind sharded locks (who owns each task,
 * ledger.h). What a kill or a shutdown must end is on per-worker lists, touched only by their
 * worker.
 */
#ifndef AG_GATEWAY_H
#define AG_GATEWAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "a2a.h"
#include "config.h"
#include "daemon.h"
#include "gate.h"
#include "metrics.h"
#include "registry.h"
#include "upstream.h"

typedef struct ag_gateway ag_gateway_t;
typedef struct ag_forward ag_forward_t;
typedef struct ag_owners ag_owners_t;

/* What the gateway keeps per agent: its upstreams and counters. A reload that leaves an agent as
 * it was hands the same runtime to the new world, so its concurrency count, connection pools and
 * cards carry over. Allocated by main.c; freed at exit with the last world that lists it. */
typedef struct ag_agent_rt {
    const ag_agent_t *agent;        /* in the registry of the world that made it (kept while running) */
    tp_upstream_t *upstream;        /* the agent's origin for unary calls: timeouts of its timeout_ms */
    tp_upstream_t *stream_upstream; /* the same origin for streaming methods: quiet for long is fine */
    char *path;                     /* the path of the agent's JSON-RPC URL ("/" when none) */
    tp_upstream_t *card_upstream;   /* the card's origin, with the agent's headers */
    char *card_path;
    atomic_int inflight;         /* requests in flight, for max_concurrent_tasks */
    struct ag_card_cache *cards; /* one per worker: the fetched card and when (cards.c) */
    unsigned worlds;             /* worlds that list it (main thread only) */
} ag_agent_rt_t;

/* One registry as loaded, with its runtime. Registries are never freed while the daemon runs
 * (a request may still use an older one); reloading keeps them on a list freed at exit. */
typedef struct ag_world {
    ag_registry_t *registry;
    ag_agent_rt_t **rt; /* per agent, in registry order; NULL for an agent that cannot be called */
    struct ag_world *older;
} ag_world_t;

typedef struct ag_metrics {
    tp_metric_t *messages;    /* triplane_a2a_messages_total{caller,target,method,outcome} */
    tp_metric_t *refusals;    /* triplane_a2a_refusals_total{reason} */
    tp_metric_t *transitions; /* triplane_a2a_task_transitions_total{target,state} */
    tp_metric_t *streams;     /* triplane_a2a_streams_active{target} */
    tp_metric_t *upstream_s;  /* triplane_a2a_upstream_duration_seconds{target,method} */
} ag_metrics_t;

/* What each worker keeps on its own thread (no locks): the work a kill or a shutdown must end. */
typedef struct ag_worker {
    ag_forward_t *active;      /* forwards that can still be killed: not answered, upstream not done */
    struct ag_cancel *cancels; /* cancels the gateway sent to agents, not yet answered (forward.c) */
} ag_worker_t;

struct ag_gateway {
    tp_daemon_t *daemon;
    const tp_agent_gw_config_t *cfg;
    pol_gate_t *gate;
    tp_store_writer_t *writer;
    ag_metrics_t metrics;
    _Atomic(ag_world_t *) world; /* the current registry */
    uint8_t chain_key[128]; /* the HMAC key of delegation chains (hex text from the store, or the configured one) */
    size_t chain_key_len;
    ag_owners_t *owners; /* who may ask about each task (ledger.h); shared by the workers */
    ag_worker_t *w;      /* per worker (its thread only) */
    unsigned workers;
};

/* The world a request uses (an atomic load; worlds are never freed while running). */
ag_world_t *ag_world(ag_gateway_t *gw);
/* The runtime of agent `name` in world w, or NULL (no such agent, or one that cannot be called). */
ag_agent_rt_t *ag_world_agent(ag_world_t *w, const char *name);
/* Loads the registry (main thread) and makes it current. An agent whose upstream cannot be made
 * is left out, with an error in the log. Returns 0, or -1 with *err when the store cannot be read
 * (the current world stays). */
int ag_world_load(ag_gateway_t *gw, char **err);
/* Frees every world (at exit, after the workers stopped and ag_*_shutdown_worker ran). */
void ag_world_free_all(ag_gateway_t *gw);

/* ---- cards.c ---- */

/* Registers GET /agents and the card routes. */
void ag_cards_register(ag_gateway_t *gw);
typedef struct ag_card_cache ag_card_cache_t;
/* Per-worker card caches for one agent, and their release. */
ag_card_cache_t *ag_cards_new(unsigned workers);
void ag_cards_free(ag_card_cache_t *cards, unsigned workers);
/* Cancels the card fetch worker w has in flight for rt, if any (at shutdown, after the worker
 * stopped: its waiting requests are abandoned with the loop). */
void ag_cards_shutdown_worker(ag_agent_rt_t *rt, tp_worker_t *w);
/* The card as callers see it: every endpoint `url` (the gateway's), JSON-RPC only, no signatures
 * (they would not hold). New reference. */
json_t *ag_card_rewrite(const json_t *card, const char *url, const ag_agent_t *agent);
/* The gateway's URL for agent `name` as callers should use it (pool memory of r). */
const char *ag_agent_public_url(ag_gateway_t *gw, tp_request_t *r, const char *name);

/* ---- forward.c ---- */

/* Registers POST /agents/<name>. */
void ag_forward_register(ag_gateway_t *gw);

/* Ends, on worker w's thread, every forward in flight there that a kill of snapshot snap covers
 * (its caller, by id or team; its target; anyone on its chain): the client gets a final canceled
 * status (or a suspended error), the agent gets a cancel, the ledger and the audit record it.
 * Runs right after the worker switched to snap. */
void ag_forward_kill(ag_gateway_t *gw, tp_worker_t *w, const pol_snapshot_t *snap);

/* Cancels every upstream call worker w still has (forwards, cancels), once the workers have
 * stopped, so that the upstreams can be freed. The requests are abandoned with the loop. */
void ag_forward_shutdown_worker(ag_gateway_t *gw, tp_worker_t *w);

/* Sends a JSON-RPC error (id may be NULL) with HTTP 200, data.reason = reason. */
void ag_jsonrpc_error(tp_request_t *r, const json_t *id, int code, const char *reason, const char *message);
/* The plane's error envelope (for h2o-level and routing errors). */
void ag_error_envelope(tp_request_t *r, int status, const char *code, const char *message);

#endif
