/*
 * model-gw — the model plane: one governed OpenAI-compatible API in front of inference servers
 * (llama.cpp, vLLM, Ollama) and hosted APIs.
 */
#include "clock.h"
#include "daemon.h"
#include "gateway.h"
#include "snapshot.h"

static mg_gateway_t gateway; /* one per process; lives as long as the daemon */

/* /readyz: not ready while a configured model has no deployment that may be tried. */
static bool
ready_models(void *data, const char **detail)
{
    const mg_gateway_t *gw = data;
    int64_t now = tp_unix_ms();
    for (size_t i = 0; i < gw->models->num_models; i++) {
        if (!mg_model_healthy(&gw->models->models[i], now)) {
            *detail = "a model has no healthy deployment (see triplane_model_deployment_circuit_open)";
            return false;
        }
    }
    return true;
}

static int
setup(tp_daemon_t *d, char **err)
{
    gateway.daemon = d;
    if ((gateway.gate = pol_gate_new(d, "model", err)) == NULL)
        return -1;
    if ((gateway.models = mg_models_new(&tp_daemon_config(d)->model_gw, err)) == NULL)
        return -1;
    mg_catalog_register(&gateway);
    mg_proxy_register(&gateway);
    mg_health_start(&gateway);
    tp_server_add_ready_check(tp_daemon_server(d), "models", ready_models, &gateway);
    return 0;
}

static const tp_daemon_spec_t model_gw = {
    .name = "model-gw",
    .summary = "Triplane model gateway: one governed OpenAI-compatible API in front of every model.",
    .state_ops = &pol_snapshot_state_ops,
    .error_fn = mg_error_fn,
    .setup = setup,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&model_gw, argc, argv);
}
