/*
 * responses_api.c — the stored Responses as a resource: GET /v1/responses/{id},
 * GET /v1/responses/{id}/input_items and DELETE /v1/responses/{id}, for the principal that
 * created them (anyone else gets 404, as for a response that does not exist); the control
 * command responses.forget that gwctl sends after it purged rows; and the retention timer.
 * (POST /v1/responses is in proxy.c, with the other requests that go upstream.)
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "gateway.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "response_store.h"

#define PURGE_EVERY_MS (10 * 60 * 1000) /* expired rows are deleted this often */
#define MAX_ID         128

typedef enum op { OP_RETRIEVE, OP_INPUT_ITEMS, OP_DELETE } op_t;

/* One request for a stored response; lives in the request's pool. */
typedef struct lookup {
    tp_request_t *r;
    mg_gateway_t *gw;
    op_t op;
    char id[MAX_ID + 1];
    pol_verdict_t verdict;
    mg_response_load_t *load;
    bool done;
} lookup_t;

static void
on_dispose(void *arg)
{
    lookup_t *l = *(lookup_t **)arg;
    mg_response_load_cancel(l->load);
    pol_verdict_clear(&l->verdict);
}

static void
not_found(lookup_t *l)
{
    char msg[MAX_ID + 64];
    snprintf(msg, sizeof(msg), "Response with id '%s' not found.", l->id);
    mg_send_error(l->r, 404, "response_not_found", NULL, msg);
}

/* A query parameter that is an integer in [lo, hi]; def when absent. False (after a 400) when
 * it is present and not one. */
static bool
int_param(lookup_t *l, const char *name, long lo, long hi, long def, long *out)
{
    char text[32];
    *out = def;
    if (!tp_http_query_param(l->r, name, text, sizeof(text)))
        return true;
    char *end;
    long v = strtol(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || v < lo || v > hi) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s must be an integer from %ld to %ld", name, lo, hi);
        mg_send_error(l->r, 400, "invalid_request", name, msg);
        return false;
    }
    *out = v;
    return true;
}

/* GET …/input_items: the response's own input items, newest first unless order=asc, after the
 * item `after`, at most `limit` (1-100, default 20), as a cursor page. */
static void
send_input_items(lookup_t *l, const mg_stored_response_t *resp)
{
    long limit;
    char order[8] = "desc", after[MAX_ID + 1] = "";
    if (!int_param(l, "limit", 1, 100, 20, &limit))
        return;
    if (tp_http_query_param(l->r, "order", order, sizeof(order)) && strcmp(order, "asc") != 0 &&
        strcmp(order, "desc") != 0) {
        mg_send_error(l->r, 400, "invalid_request", "order", "order must be asc or desc");
        return;
    }
    bool asc = strcmp(order, "asc") == 0;
    bool has_after = tp_http_query_param(l->r, "after", after, sizeof(after));
    h2o_iovec_t path = l->r->req->path;
    size_t query = l->r->req->query_at;
    if (!has_after && query != SIZE_MAX && query < path.len &&
        (h2o_strstr(path.base + query, path.len - query, H2O_STRLIT("?after=")) != SIZE_MAX ||
         h2o_strstr(path.base + query, path.len - query, H2O_STRLIT("&after=")) != SIZE_MAX)) {
        /* present, but no item id: too long, or with a NUL */
        mg_send_error(l->r, 400, "invalid_request", "after", "after must be the id of an input item");
        return;
    }
    has_after = has_after && after[0] != '\0';
    size_t n = json_array_size(resp->input_items);
    json_t *data = json_array();
    bool started = !has_after, more = false;
    for (size_t k = 0; k < n; k++) {
        json_t *item = json_array_get(resp->input_items, asc ? k : n - 1 - k);
        const char *id = json_string_value(json_object_get(item, "id"));
        if (!started) {
            started = id != NULL && strcmp(id, after) == 0;
            continue;
        }
        if (json_array_size(data) == (size_t)limit) {
            more = true;
            break;
        }
        json_array_append(data, item); /* shared, never changed */
    }
    json_t *first = json_object_get(json_array_get(data, 0), "id");
    json_t *last = json_object_get(json_array_get(data, json_array_size(data) - 1), "id");
    tp_http_send_json(l->r, 200,
                      json_pack("{s:s, s:o, s:O?, s:O?, s:b}", "object", "list", "data", data, "first_id", first,
                                "last_id", last, "has_more", more));
}

static void
on_loaded(mg_response_chain_t *chain, void *data)
{
    lookup_t *l = data;
    l->load = NULL;
    if (chain->n == 0) {
        not_found(l);
        return;
    }
    const mg_stored_response_t *resp = chain->items[chain->n - 1];
    switch (l->op) {
    case OP_RETRIEVE:
        tp_http_send_json(l->r, 200, json_incref(resp->response)); /* only printed: shared, never changed */
        break;
    case OP_INPUT_ITEMS:
        send_input_items(l, resp);
        break;
    case OP_DELETE:
        mg_response_store_delete(l->gw->responses, resp);
        tp_log_fields(TP_LOG_INFO, l->r->id, "stored response deleted",
                      json_pack("{s:s, s:s}", "response", resp->id, "principal", resp->principal));
        tp_http_send_json(l->r, 200, json_pack("{s:s, s:s, s:b}", "id", resp->id, "object", "response", "deleted", 1));
        break;
    }
    mg_response_chain_clear(chain);
}

/* /v1/responses/{id}[/input_items]: which response and which operation, or false (after a 404). */
static bool
parse_path(lookup_t *l, const char *method)
{
    h2o_iovec_t path = l->r->req->path_normalized;
    const size_t prefix = sizeof("/v1/responses/") - 1;
    const char *id = path.base + prefix, *end = path.base + path.len;
    const char *slash = path.len > prefix ? memchr(id, '/', (size_t)(end - id)) : NULL;
    size_t id_len = (size_t)((slash != NULL ? slash : end) - id);
    bool items = slash != NULL && h2o_memis(slash, (size_t)(end - slash), H2O_STRLIT("/input_items"));
    bool plain = path.len > prefix && id_len > 0 && id_len <= MAX_ID;
    for (size_t i = 0; plain && i < id_len; i++)
        plain = isalnum((unsigned char)id[i]) || id[i] == '_' ||
                id[i] == '-'; /* as the gateway makes them: no %00 tricks */
    if (!plain || (slash != NULL && !items) || (items && strcmp(method, "GET") != 0)) {
        mg_send_error(l->r, 404, "not_found", NULL, "no such endpoint: see /v1/responses/{id} and its input_items");
        return false;
    }
    memcpy(l->id, id, id_len);
    l->id[id_len] = '\0';
    l->op = items ? OP_INPUT_ITEMS : strcmp(method, "DELETE") == 0 ? OP_DELETE : OP_RETRIEVE;
    return true;
}

static int
handle(tp_request_t *r, mg_gateway_t *gw, const char *method)
{
    lookup_t *l = h2o_mem_alloc_pool(&r->req->pool, sizeof(*l));
    memset(l, 0, sizeof(*l));
    l->r = r;
    l->gw = gw;
    bool authenticated = pol_gate_authenticate(gw->gate, r, &l->verdict);
    *(lookup_t **)h2o_mem_alloc_shared(&r->req->pool, sizeof(l), on_dispose) = l;
    if (!authenticated) {
        pol_gate_refuse(r, &l->verdict);
        return 0;
    }
    if (!parse_path(l, method))
        return 0;
    l->load = mg_response_store_load(gw->responses, tp_worker_loop(r->worker), l->id, l->verdict.identity.principal->id,
                                     false, on_loaded, l);
    return 0;
}

static int
handle_get(tp_request_t *r, void *data)
{
    return handle(r, data, "GET");
}

static int
handle_delete(tp_request_t *r, void *data)
{
    return handle(r, data, "DELETE");
}

/* responses.forget {id} | {principal, before_ms}: gwctl deleted these rows; drop them from the
 * cache too, or this daemon would go on serving them. */
static void
control_forget(tp_control_call_t *call, json_t *args, void *data)
{
    mg_gateway_t *gw = data;
    const char *id = json_string_value(json_object_get(args, "id"));
    const char *principal = json_string_value(json_object_get(args, "principal"));
    json_int_t before = json_integer_value(json_object_get(args, "before_ms"));
    if (id == NULL && principal == NULL && before <= 0 && !json_is_true(json_object_get(args, "all"))) {
        tp_control_fail(call, "responses.forget needs id, principal, before_ms or all");
        return;
    }
    size_t n = mg_response_store_forget(gw->responses, id, principal, before);
    tp_control_reply(call, json_pack("{s:I}", "forgotten", (json_int_t)n));
}

static void
on_purge_tick(uv_timer_t *t)
{
    mg_gateway_t *gw = t->data;
    mg_response_store_purge_expired(gw->responses);
}

void
mg_responses_api_register(mg_gateway_t *gw)
{
    tp_daemon_t *d = gw->daemon;
    const tp_config_t *cfg = tp_daemon_config(d);
    gw->responses =
        mg_response_store_new(cfg->store.path, tp_daemon_writer(d), (size_t)cfg->model_gw.response_cache_bytes,
                              cfg->model_gw.response_retention_days, tp_daemon_metrics(d));
    tp_server_t *srv = tp_daemon_server(d);
    tp_server_route(srv, "GET", "/v1/responses", true, handle_get, gw);
    tp_server_route(srv, "DELETE", "/v1/responses", true, handle_delete, gw);
    tp_control_register(tp_daemon_control(d), "responses.forget", control_forget, gw);
    if (cfg->model_gw.response_retention_days > 0) {
        static uv_timer_t timer; /* lives as long as the process; unref'd so it never holds the loop open */
        uv_timer_init(tp_daemon_loop(d), &timer);
        timer.data = gw;
        uv_timer_start(&timer, on_purge_tick, 1000, PURGE_EVERY_MS);
        uv_unref((uv_handle_t *)&timer);
    }
}
