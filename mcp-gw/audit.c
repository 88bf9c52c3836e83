/*
 * audit.c — the record of every tools/call, resources/read and prompts/get (who, what, how it
 * went, how long it took), and the plane's metrics.
 *
 * Audit rows go through the store writer (asynchronous, batched): the request never waits on
 * SQLite. Arguments are recorded by shape (types, no values) and SHA-256 unless the operator
 * asked for raw values (mcp_gw.audit_arguments), since tool arguments often carry personal data.
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "log.h"
#include "mem.h"
#include "store.h"

#define SHAPE_MAX_DEPTH 6 /* deeper values are shown as their type only */

void
mcp_metrics_init(mcp_gateway_t *gw)
{
    tp_metrics_t *reg = tp_daemon_metrics(gw->daemon);
    mcp_metrics_t *m = &gw->metrics;
    m->calls = tp_metrics_counter(reg, "triplane_mcp_calls_total",
                                  "tools/call, resources/read and prompts/get by server, target and outcome",
                                  (const char *[]){ "server", "method", "outcome", NULL });
    m->call_seconds = tp_metrics_histogram(
        reg, "triplane_mcp_upstream_duration_seconds", "time from sending a request upstream to its answer",
        (const char *[]){ "server", "method", NULL }, tp_metrics_latency_buckets, tp_metrics_latency_buckets_count);
    m->rejections = tp_metrics_counter(reg, "triplane_mcp_validation_rejections_total",
                                       "tool calls refused before reaching a server, by reason (schema keyword, "
                                       "unknown_tool)",
                                       (const char *[]){ "kind", NULL });
    m->quarantined = tp_metrics_gauge(reg, "triplane_mcp_tools_quarantined",
                                      "tools hidden because their definition drifted from the pin",
                                      (const char *[]){ "server", NULL });
    m->server_up = tp_metrics_gauge(reg, "triplane_mcp_upstream_up", "1 when the server is running and initialised",
                                    (const char *[]){ "server", NULL });
    m->restarts = tp_metrics_counter(reg, "triplane_mcp_upstream_restarts_total",
                                     "stdio servers that died and were "
                                     "restarted",
                                     (const char *[]){ "server", NULL });
    m->sessions = tp_metrics_gauge(reg, "triplane_mcp_sessions_active", "client sessions open", NULL);
    m->session_total = tp_metrics_counter(reg, "triplane_mcp_sessions_total", "client sessions by how they ended",
                                          (const char *[]){ "event", NULL });
    m->messages = tp_metrics_counter(reg, "triplane_mcp_messages_total", "JSON-RPC messages relayed",
                                     (const char *[]){ "direction", "kind", NULL });
    m->dropped = tp_metrics_counter(reg, "triplane_mcp_messages_dropped_total",
                                    "messages from servers that reached no client, by reason (unattributable: a "
                                    "shared stdio server's message with no single session it belongs to)",
                                    (const char *[]){ "reason", NULL });
}

/* The server label of a target ("server/tool"): a configured server's name, else "unknown". A
 * target can come from the client (an unknown tool's name), and label values must come from a
 * fixed set, or every name a client makes up becomes a series of its own. */
static const char *
server_label(const mcp_gateway_t *gw, const char *target)
{
    const char *slash = strchr(target, '/');
    size_t len = slash != NULL ? (size_t)(slash - target) : 0;
    for (size_t i = 0; i < gw->num_servers && slash != NULL; i++) {
        const char *name = mcp_server_name(gw->servers[i]);
        if (strlen(name) == len && memcmp(name, target, len) == 0)
            return name;
    }
    return "unknown";
}

void
mcp_audit_call(mcp_gateway_t *gw, const char *principal, const char *method, const char *target, const char *outcome,
               double latency_ms, json_t *detail)
{
    if (detail == NULL)
        detail = json_object();
    json_object_set_new(detail, "outcome", json_string(outcome));
    json_object_set_new(detail, "latency_ms", json_real(latency_ms));
    char *text = json_dumps(detail, JSON_COMPACT);
    char action[64];
    snprintf(action, sizeof(action), "mcp.%s", method);
    if (gw->writer != NULL && tp_store_submit_audit(gw->writer, principal, action, target, text) != 0)
        tp_warn("audit record dropped (store writer queue full)");
    free(text);
    json_decref(detail);
    tp_metric_add(gw->metrics.calls, (const char *[]){ server_label(gw, target), method, outcome }, 1);
}

static json_t *
shape(const json_t *v, int depth)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (depth >= SHAPE_MAX_DEPTH)
            return json_string("object");
        json_t *o = json_object();
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) json_object_set_new(o, k, shape(x, depth + 1));
        return o;
    }
    case JSON_ARRAY: {
        char t[48];
        snprintf(t, sizeof(t), "array[%zu]", json_array_size(v));
        return json_string(t);
    }
    case JSON_STRING:
        return json_string("string");
    case JSON_INTEGER:
        return json_string("integer");
    case JSON_REAL:
        return json_string("number");
    case JSON_TRUE:
    case JSON_FALSE:
        return json_string("boolean");
    default:
        return json_string("null");
    }
}

json_t *
mcp_audit_arguments(const json_t *arguments, bool raw)
{
    if (arguments == NULL)
        return json_pack("{s:{}}", "shape");
    char *text = json_dumps(arguments, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)(text != NULL ? text : ""), text != NULL ? strlen(text) : 0, md);
    free(text);
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    json_t *out = json_pack("{s:o, s:s}", "shape", shape(arguments, 0), "sha256", hex);
    if (raw)
        json_object_set(out, "raw", (json_t *)arguments);
    return out;
}
