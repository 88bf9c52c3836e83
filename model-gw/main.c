/*
 * model-gw — the model plane: an OpenAI-compatible gateway in front of inference servers.
 * The OpenAI API routes arrive with the model-gw issue; this file wires the daemon's life.
 */
#include "daemon.h"
#include "http.h"
#include "gate.h"
#include "snapshot.h"

/* OpenAI's error envelope: {"error":{"message","type","param","code"}}. */
static void
openai_error(tp_request_t *r, int status, const char *code, const char *message)
{
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    tp_http_send_json(
        r, status,
        json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", message, "type", type, "param", "code", code));
}

/* Authentication, kill switches, rules and quotas for this plane; lives as long as the daemon. */
static pol_gate_t *gate;

static int
setup(tp_daemon_t *d, char **err)
{
    gate = pol_gate_new(d, "model", err);
    return gate != NULL ? 0 : -1;
}

static const tp_daemon_spec_t model_gw = {
    .name = "model-gw",
    .summary = "Triplane model gateway: one governed OpenAI-compatible API in front of every model.",
    .state_ops = &pol_snapshot_state_ops,
    .setup = setup,
    .error_fn = openai_error,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&model_gw, argc, argv);
}
