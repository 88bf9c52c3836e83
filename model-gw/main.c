/*
 * model-gw — the model plane: one governed OpenAI-compatible API in front of inference servers
 * (llama.cpp, vLLM, Ollama) and hosted APIs.
 */
#include <string.h>

#include "clock.h"
#include "daemon.h"
#include "gateway.h"
#include "lifecycle.h"
#include "mem.h"
#include "snapshot.h"

static mg_gateway_t gateway; /* one per process; lives as long as the daemon */

/* /readyz under model_gw.readiness every_model: not ready while any configured model has no
 * deployment that may be tried (in rotation, circuit closed or cooled down). */
static bool
ready_every_model(void *data, const char **detail)
{
    const mg_gateway_t *gw = data;
    int64_t now = tp_unix_ms();
    for (size_t i = 0; i < gw->models->num_models; i++) {
        if (!mg_model_healthy(&gw->models->models[i], now)) {
            *detail = "a model has no healthy deployment in rotation (see triplane_model_deployment_circuit_open and "
                      "triplane_model_deployment_draining)";
            return false;
        }
    }
    return true;
}

/* /readyz under any_model: not ready only while no model has a deployment that may be tried
 * (a gateway without models has nothing to wait for, as under every_model). */
static bool
ready_any_model(void *data, const char **detail)
{
    const mg_gateway_t *gw = data;
    int64_t now = tp_unix_ms();
    for (size_t i = 0; i < gw->models->num_models; i++) {
        if (mg_model_healthy(&gw->models->models[i], now))
            return true;
    }
    if (gw->models->num_models == 0)
        return true;
    *detail = "no model has a healthy deployment in rotation (see triplane_model_deployment_circuit_open and "
              "triplane_model_deployment_draining)";
    return false;
}

/* Registers the "models" readiness check that model_gw.readiness asks for; with "none" the
 * models are no part of readiness (and /readyz lists no "models" check). */
static void
add_ready_check(mg_gateway_t *gw, const char *mode)
{
    tp_server_t *srv = tp_daemon_server(gw->daemon);
    if (mode != NULL && strcmp(mode, "none") == 0)
        return;
    if (mode != NULL && strcmp(mode, "any_model") == 0)
        tp_server_add_ready_check(srv, "models", ready_any_model, gw);
    else
        tp_server_add_ready_check(srv, "models", ready_every_model, gw);
}

static int
setup(tp_daemon_t *d, char **err)
{
    gateway.daemon = d;
    if ((gateway.gate = pol_gate_new(d, "model", err)) == NULL)
        return -1;
    if ((gateway.models = mg_models_new(&tp_daemon_config(d)->model_gw, err)) == NULL)
        return -1;
    gateway.active = tp_calloc(tp_server_worker_count(tp_daemon_server(d)), sizeof(*gateway.active));
    mg_catalog_register(&gateway);
    mg_responses_api_register(&gateway);
    mg_proxy_register(&gateway);
    mg_lifecycle_register(&gateway);
    mg_health_start(&gateway);
    add_ready_check(&gateway, tp_daemon_config(d)->model_gw.readiness);
    return 0;
}

/* Each worker, right after it switched to a new snapshot, ends what a kill in it covers. */
static void
on_worker_state(tp_daemon_t *d, tp_worker_t *w, const void *state)
{
    if (gateway.active != NULL)
        mg_proxy_kill(&gateway, w, state);
}

static const tp_daemon_spec_t model_gw = {
    .name = "model-gw",
    .summary = "Triplane model gateway: one governed OpenAI-compatible API in front of every model.",
    .state_ops = &pol_snapshot_state_ops,
    .error_fn = mg_error_fn,
    .setup = setup,
    .on_worker_state = on_worker_state,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&model_gw, argc, argv);
}
