/*
 * model-gw — the model plane: an OpenAI-compatible gateway in front of inference servers.
 * The OpenAI API routes arrive with the model-gw issue; this file wires the daemon's life.
 */
#include "daemon.h"
#include "http.h"
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

static const tp_daemon_spec_t model_gw = {
    .name = "model-gw",
    .summary = "Triplane model gateway: one governed OpenAI-compatible API in front of every model.",
    .state_ops = &pol_snapshot_state_ops,
    .error_fn = openai_error,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&model_gw, argc, argv);
}
