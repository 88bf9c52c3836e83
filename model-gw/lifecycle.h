/*
 * lifecycle.h — taking a model's deployments out of rotation and putting them back, for
 * maintenance (a model reload, a GPU swap, an upgrade of the inference server).
 *
 * Drain: the deployment gets no new requests; those in flight finish as they would have.
 * Undrain: with the deployment's `warmup` on (the default), it first gets one tiny request (its
 * `warmup_prompt`, max_tokens 1, through its own upstream client, from worker 0) and takes
 * traffic only once that succeeds; a failure or timeout keeps it warming and the request is
 * sent again after a backoff (1 s, doubling up to 30 s) until it succeeds or the deployment is
 * drained again. With `warmup` off it goes straight back into rotation.
 *
 * Drain state lives in this process's memory only: a restart puts every deployment back in
 * rotation (without a warm-up). Several model-gw processes behind a load balancer are drained
 * one by one.
 *
 * Three ways in, all on the same state:
 *   - control socket commands "model.drain", "model.undrain" {model, deployment?} and
 *     "model.status" {model?} (gwctl model …; gwctl writes the audit records);
 *   - HTTP: GET /v1/admin/models, POST /v1/admin/models/{model}/deployments/{id}/drain and
 *     …/undrain, for principals the policy allows action "admin" on the model (plane model),
 *     audited through the store writer with the principal as actor;
 *   - GET /v1/models shows each deployment's state (catalog.c, with
 *     mg_lifecycle_deployments_brief).
 * Metric: triplane_model_deployment_draining{model,deployment}, 1 while not in rotation
 * (draining or warming).
 */
#ifndef MG_LIFECYCLE_H
#define MG_LIFECYCLE_H

#include <stdbool.h>

#include <jansson.h>

#include "gateway.h"

/* The warm-up's backoff between failed attempts: the first wait, and the longest. */
#define MG_WARMUP_FIRST_BACKOFF_MS 1000
#define MG_WARMUP_MAX_BACKOFF_MS   30000

/* Registers the control commands, the admin routes and the draining metric, and prepares the
 * warm-ups. Call once from setup, after the models are built; everything it makes lives as long
 * as the process. */
void mg_lifecycle_register(mg_gateway_t *gw);

/* The deployments of `m` for a model object of GET /v1/models: [{"id", "state", "in_flight"}],
 * with "url" too when with_urls (a caller the policy allows "admin" on the model). New
 * reference. Thread-safe. */
json_t *mg_lifecycle_deployments_brief(const mg_model_t *m, bool with_urls);

#endif
