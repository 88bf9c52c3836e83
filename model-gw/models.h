/*
 * models.h — the models model-gw serves, from model_gw.models in the configuration, and the
 * run-time state of their deployments (requests in flight) that routing reads.
 *
 * Built once at start-up; the set of models and deployments does not change at run time
 * (a configuration change needs a restart). Every field that changes is atomic, so any worker
 * thread may route without locks.
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
    const char *upstream_model;    /* the name the upstream knows (cfg->model, or the public name) */
    char *authorization;           /* "Bearer <key>" from cfg->api_key_env, or NULL */
    size_t index;                  /* position in the model's deployments, for metrics labels */
    char label[32];                /* "0", "1", …: the deployment label in metrics */
    tp_upstream_t *upstream;       /* the HTTP client for cfg->url */
    _Atomic int inflight;          /* requests to this deployment now */
    _Atomic int failures;          /* consecutive failed attempts */
    _Atomic bool probing;          /* a health probe is in flight */
    _Atomic int64_t open_until_ms; /* circuit breaker: 0 closed; else not tried before this (Unix ms),
                                      then one probe at a time until an attempt succeeds */
} mg_deployment_t;

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
 * skipping deployments at their concurrency cap and those whose circuit is open (a deployment
 * whose cool-down has passed is taken by one request as a probe); NULL when none is usable.
 * Thread-safe. */
mg_deployment_t *mg_model_pick(mg_model_t *model);

/* The deployment for a request with affinity key `key` (len bytes): the same key goes to the
 * same deployment while it is usable (weighted rendezvous hashing, so adding or losing one
 * deployment moves only its share of keys). When that one is at its cap or its circuit is open,
 * the usual pick. */
mg_deployment_t *mg_model_pick_affine(mg_model_t *model, const char *key, size_t len);

/* Whether a deployment may be tried now (its circuit is closed, or this call takes the probe of
 * a cool-down that has passed). */
bool mg_deployment_usable(mg_deployment_t *d, int64_t now_ms);

/* The outcome of an attempt: a success closes the circuit; a failure (connect error, timeout,
 * 429, 5xx) counts, and the MG_CIRCUIT_FAILURES-th in a row opens it. Returns true when this
 * call changed the circuit's state (for the log and the metric). */
bool mg_deployment_report(mg_deployment_t *d, bool ok, int64_t now_ms);

/* True when the model has a deployment whose circuit is not open (for /readyz). */
bool mg_model_healthy(const mg_model_t *model, int64_t now_ms);

#endif
