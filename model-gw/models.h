/*
 * models.h — the models model-gw serves, from model_gw.models in the configuration, and the
 * run-time state of their deployments (requests in flight) that routing reads.
 *
 * Built once at start-up; the set of models and deployments does not change at run time
 * (a configuration change needs a restart). Every field that changes is atomic, so any worker
 * thread may route without locks.
 *
 * Rotation: an operator may take a deployment out (drain: no new requests, those in flight
 * finish) and put it back (undrain: straight back, or through a warm-up request first; see
 * lifecycle.h, which sends it). This state lives in this process's memory only: a restart puts
 * every deployment back in rotation.
 */
#ifndef MG_MODELS_H
#define MG_MODELS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "config.h"
#include "upstream.h"

typedef struct mg_deployment {
    const tp_deployment_config_t *cfg;
    const char *upstream_model;     /* the name the upstream knows (cfg->model, or the public name) */
    char *authorization;            /* "Bearer <key>" from cfg->api_key_env, or NULL */
    size_t index;                   /* position in the model's deployments, for metrics labels */
    char label[32];                 /* "0", "1", …: the deployment label in metrics */
    tp_upstream_t *upstream;        /* the HTTP client for cfg->url */
    _Atomic int inflight;           /* requests to this deployment now */
    _Atomic int failures;           /* consecutive failed attempts */
    _Atomic bool probing;           /* a health probe is in flight */
    _Atomic int64_t open_until_ms;  /* circuit breaker: 0 closed; else not tried before this (Unix ms),
                                       then one probe at a time until an attempt succeeds */
    _Atomic uint64_t rotation;      /* (generation << 2) | mg_rotation_t: every drain and undrain bumps the
                                       generation, so a warm-up started before them cannot end them */
    _Atomic int warmup_attempts;    /* warm-up requests sent since the last undrain (for status) */
    _Atomic int warmup_last_status; /* the last failed warm-up's HTTP status; 0: a transport failure;
                                       -1: none failed since the last undrain */
} mg_deployment_t;

/* Whether a deployment takes new requests. A deployment starts in rotation. */
typedef enum mg_rotation {
    MG_IN_ROTATION = 0,
    MG_DRAINING = 1, /* taken out by an operator: no new requests; those in flight finish */
    MG_WARMING = 2,  /* undrained; its warm-up request must succeed before it takes traffic */
} mg_rotation_t;

/* The circuit breaker: after this many consecutive failures a deployment is left alone for the
 * cool-down, then one request probes it; a success closes it again. */
#define MG_CIRCUIT_FAILURES    5
#define MG_CIRCUIT_COOLDOWN_MS 10000

typedef struct mg_model {
    const tp_model_config_t *cfg;
    const char *action; /* the policy action its endpoint implies: "chat", "complete" or "embed" */
    mg_deployment_t *deployments;
    size_t num_deployments;
    _Atomic unsigned long picks; /* spreads ties between equally loaded deployments */
} mg_model_t;

typedef struct mg_models {
    mg_model_t *models;
    size_t num_models;
} mg_models_t;

/* Builds the models from the configuration (which must outlive them). An api_key_env that is
 * not set is an error naming it. Returns NULL and *err on failure. */
mg_models_t *mg_models_new(const tp_model_gw_config_t *cfg, char **err);

void mg_models_free(mg_models_t *models);

/* The model with this public name, or NULL. */
mg_model_t *mg_models_find(const mg_models_t *models, const char *name);

/* Picks the deployment for the next request: fewest requests in flight relative to weight,
 * skipping deployments not in rotation, those at their concurrency cap and those whose circuit
 * is open (a deployment whose cool-down has passed is taken by one request as a probe); NULL
 * when none is usable. Thread-safe. */
mg_deployment_t *mg_model_pick(mg_model_t *model);

/* The deployment for a request with affinity key `key` (len bytes): the same key goes to the
 * same deployment while it is usable (weighted rendezvous hashing over the deployments in
 * rotation, so draining or losing one deployment moves only its share of keys). When that one
 * is at its cap or its circuit is open, the usual pick; NULL when none is in rotation. */
mg_deployment_t *mg_model_pick_affine(mg_model_t *model, const char *key, size_t len);

/* Whether a deployment may be tried now (its circuit is closed, or this call takes the probe of
 * a cool-down that has passed). */
bool mg_deployment_usable(mg_deployment_t *d, int64_t now_ms);

/* The outcome of an attempt: a success closes the circuit; a failure (connect error, timeout,
 * 429, 5xx) counts, and the MG_CIRCUIT_FAILURES-th in a row opens it. Returns true when this
 * call changed the circuit's state (for the log and the metric). */
bool mg_deployment_report(mg_deployment_t *d, bool ok, int64_t now_ms);

/* True when the model has a deployment in rotation whose circuit is closed, or whose cool-down
 * has passed so that it may be probed (for /readyz: a model whose every deployment is drained or
 * warming is not healthy). */
bool mg_model_healthy(const mg_model_t *model, int64_t now_ms);

/* ---- rotation (drain / undrain); all thread-safe and lock-free ---- */

/* Whether the deployment takes new requests (neither draining nor warming). */
bool mg_deployment_in_rotation(const mg_deployment_t *d);

/* Its rotation state now. */
mg_rotation_t mg_deployment_rotation(const mg_deployment_t *d);

/* Takes the deployment out of rotation (from any state; a warm-up in flight is disowned: its
 * outcome no longer changes anything). Requests in flight are not touched. Returns true when it
 * was not draining already. */
bool mg_deployment_drain(mg_deployment_t *d);

/* Puts a draining deployment back: with `warm`, into MG_WARMING (its warm-up ticket is then
 * mg_deployment_warmup_ticket), without, straight into rotation. A deployment that is not
 * draining is left as it is (an undrain of one that is warming does not restart its warm-up).
 * Returns true when it was draining. */
bool mg_deployment_undrain(mg_deployment_t *d, bool warm);

/* The ticket of the warm-up the deployment waits for now (it changes with every drain and
 * undrain), or 0 when it is not warming. */
uint64_t mg_deployment_warmup_ticket(const mg_deployment_t *d);

/* The warm-up with `ticket` succeeded: puts the deployment in rotation if it is still warming
 * under that ticket. Returns true when it did. */
bool mg_deployment_warmed(mg_deployment_t *d, uint64_t ticket);

/* What an operator sees: "draining", "warming", "circuit_open" (in rotation with its circuit
 * open, cool-down passed or not) or "healthy". A static string. */
const char *mg_deployment_state_name(const mg_deployment_t *d);

/* Requests in flight to the deployment now. */
int mg_deployment_in_flight(const mg_deployment_t *d);

#endif
