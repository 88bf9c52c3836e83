/* GET /v1/models and GET /v1/models/{id}: the models the caller may use, in OpenAI's shape, each
 * with its deployments' states (an extra field: OpenAI's SDKs keep or ignore unknown fields); or,
 * for a client that sends anthropic-version (Anthropic's SDKs), in the shape of Anthropic's
 * models API. */
#include <string.h>
#include <time.h>

#include "gateway.h"
#include "http.h"
#include "lifecycle.h"

/* The model object; its deployments' URLs only for a caller who may administer the model. */
static json_t *
model_object(mg_gateway_t *gw, const pol_verdict_t *v, const mg_model_t *m, int64_t created)
{
    bool admin = pol_gate_permits(gw->gate, v, m->cfg->name, "admin");
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", m->cfg->name, "object", "model", "created", (json_int_t)created,
                     "owned_by", "triplane", "deployments", mg_lifecycle_deployments_brief(m, admin));
}

/* A model exists, for its clients, since the gateway that serves it started. */
static int64_t
started_at_s(mg_gateway_t *gw)
{
    return tp_daemon_started_at_ms(gw->daemon) / 1000;
}

/* Whether the caller speaks Anthropic's API (its SDKs always send anthropic-version). */
static bool
anthropic_client(tp_request_t *r)
{
    return tp_http_header(r, "anthropic-version").len != 0;
}

/* The model as Anthropic's models API describes one. */
static json_t *
anthropic_model_object(mg_gateway_t *gw, const mg_model_t *m)
{
    time_t t = (time_t)started_at_s(gw);
    struct tm tm;
    char created[32];
    gmtime_r(&t, &tm);
    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_pack("{s:s, s:s, s:s, s:s}", "type", "model", "id", m->cfg->name, "display_name", m->cfg->name,
                     "created_at", created);
}

/* A page of Anthropic's shape, holding the whole list (data is taken). */
static json_t *
anthropic_page(json_t *data)
{
    json_t *first = json_object_get(json_array_get(data, 0), "id");
    json_t *last = json_object_get(json_array_get(data, json_array_size(data) - 1), "id");
    return json_pack("{s:o, s:b, s:O?, s:O?}", "data", data, "has_more", 0, "first_id", first, "last_id", last);
}

static int
handle_list(tp_request_t *r, void *data)
{
    mg_gateway_t *gw = data;
    pol_verdict_t v;
    if (!pol_gate_authenticate(gw->gate, r, &v)) {
        pol_gate_refuse(r, &v);
        pol_verdict_clear(&v);
        return 0;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < gw->models->num_models; i++) {
        const mg_model_t *m = &gw->models->models[i];
        if (pol_gate_permits(gw->gate, &v, m->cfg->name, m->action))
            json_array_append_new(list, anthropic_client(r) ? anthropic_model_object(gw, m)
                                                            : model_object(gw, &v, m, started_at_s(gw)));
    }
    pol_verdict_clear(&v);
    tp_http_send_json(
        r, 200, anthropic_client(r) ? anthropic_page(list) : json_pack("{s:s, s:o}", "object", "list", "data", list));
    return 0;
}

static int
handle_get(tp_request_t *r, void *data)
{
    mg_gateway_t *gw = data;
    h2o_iovec_t path = r->req->path_normalized;
    const size_t prefix = sizeof("/v1/models/") - 1;
    char name[256];
    if (path.len <= prefix || path.len - prefix >= sizeof(name)) {
        mg_send_error(r, 404, "model_not_found", "model", "no such model");
        return 0;
    }
    memcpy(name, path.base + prefix, path.len - prefix);
    name[path.len - prefix] = '\0';
    pol_verdict_t v;
    if (!pol_gate_authenticate(gw->gate, r, &v)) {
        pol_gate_refuse(r, &v);
        pol_verdict_clear(&v);
        return 0;
    }
    const mg_model_t *m = mg_models_find(gw->models, name);
    /* A model the caller may not use reads as absent: its name is not the caller's business. */
    if (m == NULL || !pol_gate_permits(gw->gate, &v, m->cfg->name, m->action)) {
        char msg[320];
        snprintf(msg, sizeof(msg), "The model '%s' does not exist or you do not have access to it.", name);
        mg_send_error(r, 404, "model_not_found", "model", msg);
    } else {
        tp_http_send_json(
            r, 200, anthropic_client(r) ? anthropic_model_object(gw, m) : model_object(gw, &v, m, started_at_s(gw)));
    }
    pol_verdict_clear(&v);
    return 0;
}

static int
handle_models(tp_request_t *r, void *data)
{
    h2o_iovec_t path = r->req->path_normalized;
    return h2o_memis(path.base, path.len, H2O_STRLIT("/v1/models")) ? handle_list(r, data) : handle_get(r, data);
}

void
mg_catalog_register(mg_gateway_t *gw)
{
    tp_server_route(tp_daemon_server(gw->daemon), "GET", "/v1/models", true, handle_models, gw);
}
