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
#include <stddef.h>

#include "config.h"
#include "upstream.h"

typedef struct mg_deployment {
    const tp_deployment_config_t *cfg;
    const char *upstream_model; /* the name the upstream knows (cfg->model, or the public name) */
    char *authorization;        /* "Bearer <key>" from cfg->api_key_env, or NULL */
    size_t index;               /* position in the model's deployments, for metrics labels */
    char label[32];             /* "0", "1", …: the deployment label in metrics */
    tp_upstream_t *upstream;    /* the HTTP client for cfg->url */
    _Atomic int inflight;       /* requests to this deployment now */
} mg_deployment_t;

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
 * skipping deployments at their concurrency cap; NULL when all are at capacity. Thread-safe. */
mg_deployment_t *mg_model_pick(mg_model_t *model);

#endif
