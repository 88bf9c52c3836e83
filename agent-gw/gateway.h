/*
 * gateway.h — the state of agent-gw and the contracts between its modules.
 *
 * agent-gw stands between A2A callers and A2A agents. It serves each agent's card with every
 * URL pointing back at itself (cards.c), and forwards JSON-RPC posted to /agents/<name> to the
 * agent (forward.c) after the checks: authentication, kill switches, the delegation chain (loops,
 * depth, forgery), policy for the caller and for the chain's origin, limits, push-URL SSRF
 * guard. Streams pass through with back pressure while the gateway reads each event to keep the
 * task ledger. Requests run on every worker; the little state that is shared (the registry, the
 * per-agent counters) is immutable or atomic.
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

/* What the gateway keeps per agent of a registry: its upstream and its counters. */
typedef struct ag_agent_rt {
    const ag_agent_t *agent;
    tp_upstream_t *upstream; /* the agent's origin; the path of its URL goes in each request */
    char *path;              /* the path of the agent's JSON-RPC URL ("/" when none) */
    tp_upstream_t *card_upstream;
    char *card_path;
    atomic_int inflight;         /* requests in flight, for max_concurrent_tasks */
    struct ag_card_cache *cards; /* one per worker: the fetched card and when (cards.c) */
} ag_agent_rt_t;

/* One registry as loaded, with its runtime. Registries are never freed while the daemon runs
 * (a request may still use an older one); reloading keeps them on a list freed at exit. */
typedef struct ag_world {
    ag_registry_t *registry;
    ag_agent_rt_t *rt; /* per agent, in registry order */
    struct ag_world *older;
} ag_world_t;

typedef struct ag_metrics {
    tp_metric_t *messages;    /* triplane_a2a_messages_total{caller,target,method,outcome} */
    tp_metric_t *refusals;    /* triplane_a2a_refusals_total{reason} */
    tp_metric_t *transitions; /* triplane_a2a_task_transitions_total{target,state} */
    tp_metric_t *streams;     /* triplane_a2a_streams_active{target} */
    tp_metric_t *upstream_s;  /* triplane_a2a_upstream_duration_seconds{target,method} */
} ag_metrics_t;

struct ag_gateway {
    tp_daemon_t *daemon;
    const tp_agent_gw_config_t *cfg;
    pol_gate_t *gate;
    tp_store_writer_t *writer;
    ag_metrics_t metrics;
    _Atomic(ag_world_t *) world; /* the current registry */
    uint8_t chain_key[128]; /* the HMAC key of delegation chains (hex text from the store, or the configured one) */
    size_t chain_key_len;
    ag_forward_t **active; /* per worker: forwards in flight on that worker (its thread only) */
    unsigned workers;
};

/* The world a request uses (an atomic load; worlds are never freed while running). */
ag_world_t *ag_world(ag_gateway_t *gw);
/* The runtime of agent `name` in world w, or NULL. */
ag_agent_rt_t *ag_world_agent(ag_world_t *w, const char *name);
/* Loads the registry (main thread) and makes it current. Returns 0 or -1 with *err. */
int ag_world_load(ag_gateway_t *gw, char **err);
/* Frees every world (at exit, after the workers stopped). */
void ag_world_free_all(ag_gateway_t *gw);

/* ---- cards.c ---- */

/* Registers GET /agents and the card routes. */
void ag_cards_register(ag_gateway_t *gw);
typedef struct ag_card_cache ag_card_cache_t;
/* Per-worker card caches for one agent, and their release. */
ag_card_cache_t *ag_cards_new(unsigned workers);
void ag_cards_free(ag_card_cache_t *cards, unsigned workers);
/* The card as callers see it: every endpoint `url` (the gateway's), JSON-RPC only, no signatures
 * (they would not hold). New reference. */
json_t *ag_card_rewrite(const json_t *card, const char *url, const ag_agent_t *agent);
/* The gateway's URL for agent `name` as callers should use it (pool memory of r). */
const char *ag_agent_public_url(ag_gateway_t *gw, tp_request_t *r, const char *name);

/* ---- forward.c ---- */

/* Registers POST /agents/<name>. */
void ag_forward_register(ag_gateway_t *gw);

/* A kill in force, copied from the snapshot for the workers. */
typedef struct ag_kill_list {
    pol_kill_t *kills;
    size_t n;
} ag_kill_list_t;
/* Ends, on the calling worker, every forward a kill covers: the client gets a final canceled
 * status (or a suspended error), the agent gets a cancel, the ledger and the audit record it. */
void ag_forward_kill(ag_gateway_t *gw, tp_worker_t *w, const ag_kill_list_t *kills);

/* Sends a JSON-RPC error (id may be NULL) with HTTP 200, data.reason = reason. */
void ag_jsonrpc_error(tp_request_t *r, const json_t *id, int code, const char *reason, const char *message);
/* The plane's error envelope (for h2o-level and routing errors). */
void ag_error_envelope(tp_request_t *r, int status, const char *code, const char *message);

#endif
