/*
 * gateway.h — what model-gw's request handlers share: the daemon, the policy gate for plane
 * `model`, and the models it serves. One per process, built in setup and never freed.
 */
#ifndef MG_GATEWAY_H
#define MG_GATEWAY_H

#include "daemon.h"
#include "gate.h"
#include "models.h"
#include "snapshot.h"

struct proxy;
struct mg_response_store;

typedef struct mg_gateway {
    tp_daemon_t *daemon;
    pol_gate_t *gate;
    mg_models_t *models;
    struct proxy **active;               /* per worker: its proxied requests in flight (touched on that worker only) */
    struct mg_response_store *responses; /* stored Responses (response_store.h) */
} mg_gateway_t;

/* Sends an OpenAI error envelope {"error":{"message","type","param","code"}}. `param` (the JSON
 * path of the offending field) may be NULL. The type follows the status: invalid_request_error
 * (4xx other than below), authentication_error (401), permission_error (403), not_found_error
 * (404), rate_limit_error (429), api_error (5xx). On the Anthropic Messages API's routes
 * (/v1/messages…, and /v1/models… asked with anthropic-version) the envelope is Anthropic's instead
 * (mg_anthropic_error_body), which has no param: the message must say what it is about. */
void mg_send_error(tp_request_t *r, int status, const char *code, const char *param, const char *message);

/* The daemon's error envelope (tp_error_fn). */
void mg_error_fn(tp_request_t *r, int status, const char *code, const char *message);

/* Registers GET /v1/models and GET /v1/models/{id}. */
void mg_catalog_register(mg_gateway_t *gw);

/* Feeds an attempt's or a probe's outcome to the deployment's circuit breaker; a change is
 * logged (with `by`: "request" or "health check") and shown in the circuit metric. */
void mg_deployment_outcome(const char *model, mg_deployment_t *d, bool ok, const char *request_id, const char *by);

/* Starts the active health checks of deployments that have a health_path (a timer on the
 * daemon's main loop that has worker 0 probe). */
void mg_health_start(mg_gateway_t *gw);

/* Ends, on worker w, the proxied requests in flight whose principal a kill in `snap` covers: a
 * stream that has started gets an error event (code "suspended") and ends; a request that has
 * sent nothing yet gets 403 "suspended"; either way the upstream call is cancelled, and usage is
 * settled when the request is disposed. Runs on w's thread (the daemon's on_worker_state). */
void mg_proxy_kill(mg_gateway_t *gw, tp_worker_t *w, const pol_snapshot_t *snap);

/* Registers POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses and
 * /v1/messages. */
void mg_proxy_register(mg_gateway_t *gw);

/* Creates gw->responses and registers GET and DELETE /v1/responses/{id} (and input_items), the
 * control command responses.forget, and the purge of expired responses. Before
 * mg_proxy_register. */
void mg_responses_api_register(mg_gateway_t *gw);

#endif
