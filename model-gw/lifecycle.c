/*
 * lifecycle.c — drain, undrain with a warm-up, and deployment status: control commands, admin
 * endpoints and the draining metric (see lifecycle.h).
 *
 * The rotation state itself is in models.c (atomics, read by routing). Drains and undrains
 * happen on the main thread (control socket) or on any worker (admin endpoints); warm-ups run
 * on worker 0 only, so everything a warm-up keeps between callbacks (its call, its retry timer)
 * is touched by that one thread.
 */
#include "lifecycle.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "mem.h"

/* One deployment's warm-up. The first four fields are set at start-up and never change; the
 * rest belongs to worker 0. */
typedef struct warmer {
    const mg_model_t *model;
    mg_deployment_t *d;
    const char *path;         /* after the deployment URL's own path: "/chat/completions", … */
    char *body;               /* the warm-up request (JSON), built once */
    tp_worker_t *worker;      /* worker 0, once a warm-up ran */
    tp_upstream_call_t *call; /* the warm-up request in flight, or NULL */
    uint64_t call_ticket;     /* the warm-up it belongs to (see mg_deployment_warmup_ticket) */
    int status;               /* the response status of the call */
    uint64_t sent_ns;         /* when it was sent */
    uv_timer_t timer;         /* the retry after a failure */
    bool timer_ready;         /* initialised on worker 0's loop */
    uint64_t timer_ticket;    /* the warm-up the scheduled retry belongs to */
    uint64_t backoff_ms;      /* the wait before the next retry */
} warmer_t;

static struct lifecycle {
    mg_gateway_t *gw;
    warmer_t *warmers; /* every deployment's, model by model */
    size_t *first;     /* per model: the index of its first deployment's warmer */
    tp_metric_t *draining;
} lc;

static warmer_t *
warmer_of(const mg_model_t *m, const mg_deployment_t *d)
{
    return &lc.warmers[lc.first[m - lc.gw->models->models] + d->index];
}

static void
set_draining_metric(const mg_model_t *m, const mg_deployment_t *d)
{
    tp_metric_set(lc.draining, (const char *[]){ m->cfg->name, d->label }, mg_deployment_in_rotation(d) ? 0 : 1);
}

/* ---- status ---- */

static json_t *
deployment_status(const mg_deployment_t *d)
{
    int64_t until = atomic_load(&d->open_until_ms);
    int last = atomic_load(&d->warmup_last_status);
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:{s:b, s:i, s:o}, s:{s:b, s:s, s:i, s:o}}", "id", d->label,
                     "url", d->cfg->url, "upstream_model", d->upstream_model, "state", mg_deployment_state_name(d),
                     "in_flight", mg_deployment_in_flight(d), "weight", d->cfg->weight, "max_concurrency",
                     d->cfg->max_concurrency, "circuit", "open", until != 0, "failures", atomic_load(&d->failures),
                     "open_until_ms", until != 0 ? json_integer(until) : json_null(), "warmup", "enabled",
                     d->cfg->warmup, "prompt", d->cfg->warmup_prompt, "attempts", atomic_load(&d->warmup_attempts),
                     "last_failure_status", last >= 0 ? json_integer(last) : json_null());
}

static json_t *
model_status(const mg_model_t *m)
{
    json_t *list = json_array();
    for (size_t j = 0; j < m->num_deployments; j++)
        json_array_append_new(list, deployment_status(&m->deployments[j]));
    return json_pack("{s:s, s:s, s:b, s:o}", "model", m->cfg->name, "kind", m->cfg->kind, "healthy",
                     mg_model_healthy(m, tp_unix_ms()), "deployments", list);
}

json_t *
mg_lifecycle_deployments_brief(const mg_model_t *m, bool with_urls)
{
    json_t *list = json_array();
    for (size_t j = 0; j < m->num_deployments; j++) {
        const mg_deployment_t *d = &m->deployments[j];
        json_t *o = json_pack("{s:s, s:s, s:i}", "id", d->label, "state", mg_deployment_state_name(d), "in_flight",
                              mg_deployment_in_flight(d));
        if (with_urls)
            json_object_set_new(o, "url", json_string(d->cfg->url));
        json_array_append_new(list, o);
    }
    return list;
}

/* ---- warm-up (worker 0) ---- */

static void send_warmup(warmer_t *wu, uint64_t ticket);

static int
on_warmup_head(tp_upstream_call_t *call, int status, const h2o_header_t *headers, size_t num_headers)
{
    (void)headers;
    (void)num_headers;
    ((warmer_t *)tp_upstream_call_data(call))->status = status;
    return 0;
}

static void
on_warmup_body(tp_upstream_call_t *call, const char *buf, size_t len)
{
    /* What the model answered does not matter; that it answered does. */
    (void)call;
    (void)buf;
    (void)len;
}

static void
on_retry(uv_timer_t *t)
{
    warmer_t *wu = t->data;
    uint64_t ticket = mg_deployment_warmup_ticket(wu->d);
    /* A drain or another undrain since the failure makes this retry stale. */
    if (ticket != 0 && ticket == wu->timer_ticket && wu->call == NULL &&
        !tp_server_draining(tp_worker_server(wu->worker)))
        send_warmup(wu, ticket);
}

static void
on_warmup_done(tp_upstream_call_t *call, const char *error)
{
    warmer_t *wu = tp_upstream_call_data(call);
    wu->call = NULL;
    mg_deployment_t *d = wu->d;
    const char *model = wu->model->cfg->name;
    bool ok = error == NULL && wu->status >= 200 && wu->status < 300;
    double ms = (double)(tp_mono_ns() - wu->sent_ns) / 1e6;
    int attempt = atomic_load(&d->warmup_attempts);
    if (mg_deployment_warmup_ticket(d) != wu->call_ticket) {
        tp_log_fields(TP_LOG_INFO, NULL, "deployment warm-up outcome ignored: drained or undrained since",
                      json_pack("{s:s, s:s, s:b}", "model", model, "deployment", d->label, "ok", ok));
        return;
    }
    if (ok) {
        mg_deployment_outcome(model, d, true, NULL, "warm-up"); /* closes its circuit */
        if (mg_deployment_warmed(d, wu->call_ticket)) {
            set_draining_metric(wu->model, d);
            tp_log_fields(TP_LOG_INFO, NULL, "deployment warmed up: back in rotation",
                          json_pack("{s:s, s:s, s:s, s:i, s:i, s:f}", "model", model, "deployment", d->label, "url",
                                    d->cfg->url, "status", wu->status, "attempt", attempt, "ms", ms));
        }
        return;
    }
    atomic_store(&d->warmup_last_status, error != NULL ? 0 : wu->status);
    bool stopping = tp_server_draining(tp_worker_server(wu->worker));
    tp_log_fields(TP_LOG_WARN, NULL, "deployment warm-up failed: still warming",
                  json_pack("{s:s, s:s, s:s, s:i, s:s?, s:i, s:f, s:o}", "model", model, "deployment", d->label, "url",
                            d->cfg->url, "status", error != NULL ? 0 : wu->status, "error", error, "attempt", attempt,
                            "ms", ms, "retry_in_ms",
                            stopping ? json_null() : json_integer((json_int_t)wu->backoff_ms)));
    if (stopping)
        return;
    if (!wu->timer_ready) {
        uv_timer_init(tp_worker_loop(wu->worker), &wu->timer);
        wu->timer.data = wu;
        wu->timer_ready = true;
    }
    wu->timer_ticket = wu->call_ticket;
    uv_timer_start(&wu->timer, on_retry, wu->backoff_ms, 0);
    wu->backoff_ms = wu->backoff_ms * 2 > MG_WARMUP_MAX_BACKOFF_MS ? MG_WARMUP_MAX_BACKOFF_MS : wu->backoff_ms * 2;
}

static const tp_upstream_handlers_t warmup_handlers = { .on_head = on_warmup_head,
                                                        .on_body = on_warmup_body,
                                                        .on_done = on_warmup_done };

static void
send_warmup(warmer_t *wu, uint64_t ticket)
{
    static const tp_upstream_header_t json_type = { { H2O_STRLIT("content-type") },
                                                    { H2O_STRLIT("application/json") } };
    atomic_fetch_add(&wu->d->warmup_attempts, 1);
    wu->call_ticket = ticket;
    wu->status = 0;
    wu->sent_ns = tp_mono_ns();
    tp_upstream_request_t req = {
        .method = "POST",
        .path = h2o_iovec_init(wu->path, strlen(wu->path)),
        .headers = &json_type,
        .num_headers = 1,
        .body = h2o_iovec_init(wu->body, strlen(wu->body)),
    };
    wu->call = tp_upstream_call(wu->d->upstream, tp_worker_h2o(wu->worker), &req, &warmup_handlers, wu);
}

/* Starts the deployment's current warm-up unless it runs already. Runs on every worker; only
 * worker 0 acts. */
static void
warm_on_worker(tp_worker_t *w, void *arg)
{
    warmer_t *wu = arg;
    if (tp_worker_id(w) != 0 || tp_server_draining(tp_worker_server(w)))
        return;
    wu->worker = w;
    uint64_t ticket = mg_deployment_warmup_ticket(wu->d);
    if (ticket == 0)
        return; /* drained again, or warmed up already */
    if (wu->call != NULL) {
        if (wu->call_ticket == ticket)
            return;
        tp_upstream_cancel(wu->call); /* an earlier warm-up's request: this one starts afresh */
        wu->call = NULL;
    }
    if (wu->timer_ready && uv_is_active((uv_handle_t *)&wu->timer)) {
        if (wu->timer_ticket == ticket)
            return;
        uv_timer_stop(&wu->timer);
    }
    wu->backoff_ms = MG_WARMUP_FIRST_BACKOFF_MS;
    send_warmup(wu, ticket);
}

static void
build_warmer(warmer_t *wu, const mg_model_t *m, mg_deployment_t *d)
{
    wu->model = m;
    wu->d = d;
    const char *prompt = d->cfg->warmup_prompt;
    json_t *body;
    if (strcmp(m->cfg->kind, "embedding") == 0) {
        wu->path = "/embeddings";
        body = json_pack("{s:s, s:s}", "model", d->upstream_model, "input", prompt);
    } else if (strcmp(m->cfg->kind, "completion") == 0) {
        wu->path = "/completions";
        body = json_pack("{s:s, s:s, s:i}", "model", d->upstream_model, "prompt", prompt, "max_tokens", 1);
    } else {
        wu->path = "/chat/completions";
        body = json_pack("{s:s, s:[{s:s, s:s}], s:i}", "model", d->upstream_model, "messages", "role", "user",
                         "content", prompt, "max_tokens", 1);
    }
    /* json_pack and json_dumps of plain strings fail only without memory. */
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (text == NULL) {
        fprintf(stderr, "model-gw: out of memory building a warm-up request\n");
        abort();
    }
    wu->body = text;
    json_decref(body);
}

/* ---- drain and undrain ---- */

/* Drains or undrains one deployment on behalf of `by` ("control socket" or a principal's id).
 * Returns whether its state changed. */
static bool
apply(const mg_model_t *m, mg_deployment_t *d, bool drain, const char *by)
{
    const char *before = mg_deployment_state_name(d);
    bool changed = drain ? mg_deployment_drain(d) : mg_deployment_undrain(d, d->cfg->warmup);
    if (!changed)
        return false;
    set_draining_metric(m, d);
    const char *after = mg_deployment_state_name(d);
    tp_log_fields(TP_LOG_INFO, NULL, drain ? "deployment drained" : "deployment undrained",
                  json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s}", "model", m->cfg->name, "deployment", d->label, "url",
                            d->cfg->url, "before", before, "after", after, "in_flight", mg_deployment_in_flight(d),
                            "by", by));
    if (!drain && mg_deployment_rotation(d) == MG_WARMING)
        tp_server_each_worker(tp_daemon_server(lc.gw->daemon), warm_on_worker, warmer_of(m, d), NULL, NULL, NULL);
    return true;
}

/* The deployment index in `text` ("0", "1", …), or -1 when it is not one of m's. */
static long
parse_index(const mg_model_t *m, const char *text)
{
    if (text == NULL || text[0] == '\0' || strlen(text) > 9)
        return -1;
    for (const char *p = text; *p != '\0'; p++)
        if (!isdigit((unsigned char)*p))
            return -1;
    long i = strtol(text, NULL, 10);
    return (size_t)i < m->num_deployments ? i : -1;
}

/* ---- control commands (main thread) ---- */

/* Reads {model, deployment?} into *m and *index (-1: every deployment). Returns NULL, or the
 * error for the caller (malloc'd). */
static char *
control_target(json_t *args, mg_model_t **m, long *index)
{
    const char *name = json_string_value(json_object_get(args, "model"));
    if (name == NULL)
        return tp_strdup("\"model\" (a model name) is required");
    if ((*m = mg_models_find(lc.gw->models, name)) == NULL)
        return tp_sprintf("unknown model '%s'", name);
    json_t *dep = json_object_get(args, "deployment");
    *index = -1;
    if (dep == NULL || json_is_null(dep))
        return NULL;
    char text[32];
    if (json_is_integer(dep))
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(dep));
    else if (json_is_string(dep) && json_string_length(dep) < sizeof(text))
        snprintf(text, sizeof(text), "%s", json_string_value(dep));
    else
        return tp_strdup("\"deployment\" must be a deployment's index, as a number or a string");
    if ((*index = parse_index(*m, text)) < 0)
        return tp_sprintf("model '%s' has no deployment '%s' (its deployments are 0 to %zu)", name, text,
                          (*m)->num_deployments - 1);
    return NULL;
}

static void
control_apply(tp_control_call_t *call, json_t *args, bool drain)
{
    mg_model_t *m = NULL;
    long index = -1;
    char *why = control_target(args, &m, &index);
    if (why != NULL) {
        tp_control_fail(call, why);
        free(why);
        return;
    }
    json_t *list = json_array();
    for (size_t j = 0; j < m->num_deployments; j++) {
        if (index >= 0 && (size_t)index != j)
            continue;
        mg_deployment_t *d = &m->deployments[j];
        bool changed = apply(m, d, drain, "control socket");
        json_t *st = deployment_status(d);
        json_object_set_new(st, "changed", json_boolean(changed));
        json_array_append_new(list, st);
    }
    tp_control_reply(call, json_pack("{s:s, s:o}", "model", m->cfg->name, "deployments", list));
}

static void
cmd_drain(tp_control_call_t *call, json_t *args, void *data)
{
    (void)data;
    control_apply(call, args, true);
}

static void
cmd_undrain(tp_control_call_t *call, json_t *args, void *data)
{
    (void)data;
    control_apply(call, args, false);
}

static void
cmd_status(tp_control_call_t *call, json_t *args, void *data)
{
    (void)data;
    json_t *name = json_object_get(args, "model");
    json_t *list = json_array();
    for (size_t i = 0; i < lc.gw->models->num_models; i++) {
        const mg_model_t *m = &lc.gw->models->models[i];
        if (name == NULL || json_is_null(name) ||
            (json_is_string(name) && strcmp(json_string_value(name), m->cfg->name) == 0))
            json_array_append_new(list, model_status(m));
    }
    if (json_array_size(list) == 0 && name != NULL && !json_is_null(name)) {
        char *why = json_is_string(name) ? tp_sprintf("unknown model '%s'", json_string_value(name))
                                         : tp_strdup("\"model\" must be a model name");
        json_decref(list);
        tp_control_fail(call, why);
        free(why);
        return;
    }
    tp_control_reply(call, json_pack("{s:o}", "models", list));
}

/* ---- admin endpoints (workers) ---- */

static int
handle_admin_list(tp_request_t *r, void *data)
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
        if (pol_gate_permits(gw->gate, &v, m->cfg->name, "admin"))
            json_array_append_new(list, model_status(m));
    }
    pol_verdict_clear(&v);
    tp_http_send_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "data", list));
    return 0;
}

/* Splits "/v1/admin/models/{model}/deployments/{id}/{action}" (the model name may itself hold
 * slashes) into NUL-terminated copies in the request's pool. Returns false when it is not that. */
static bool
split_admin_path(tp_request_t *r, char **model, char **id, char **action)
{
    static const char prefix[] = "/v1/admin/models/", middle[] = "/deployments/";
    h2o_iovec_t path = r->req->path_normalized;
    size_t plen = sizeof(prefix) - 1, mlen = sizeof(middle) - 1;
    if (path.len <= plen || path.len > 1024 || memcmp(path.base, prefix, plen) != 0)
        return false;
    char *rest = h2o_mem_alloc_pool(&r->req->pool, path.len - plen + 1);
    memcpy(rest, path.base + plen, path.len - plen);
    rest[path.len - plen] = '\0';
    char *slash = strrchr(rest, '/');
    if (slash == NULL)
        return false;
    *action = slash + 1;
    *slash = '\0';
    if ((slash = strrchr(rest, '/')) == NULL)
        return false;
    *id = slash + 1;
    /* rest now ends with "/deployments/" + id: what comes before is the model. */
    size_t before = (size_t)(slash - rest) + 1;
    if (before < mlen + 1 || memcmp(rest + before - mlen, middle, mlen) != 0)
        return false;
    rest[before - mlen] = '\0';
    *model = rest;
    return true;
}

static void
audit_http(mg_gateway_t *gw, const char *actor, const char *action, const mg_model_t *m, const mg_deployment_t *d,
           const char *before, bool changed)
{
    char target[300];
    snprintf(target, sizeof(target), "%s/%s", m->cfg->name, d->label);
    json_t *detail =
        json_pack("{s:s, s:s, s:s, s:b, s:i}", "via", "http", "before", before, "after", mg_deployment_state_name(d),
                  "changed", changed, "in_flight", mg_deployment_in_flight(d));
    char *text = json_dumps(detail, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(detail);
    int rv = tp_store_submit_audit(tp_daemon_writer(gw->daemon), actor, action, target, text);
    if (rv != 0)
        tp_log_fields(TP_LOG_WARN, NULL, "audit record not queued",
                      json_pack("{s:s, s:s, s:s}", "action", action, "target", target, "error", strerror(-rv)));
    free(text);
}

static int
handle_admin_action(tp_request_t *r, void *data)
{
    mg_gateway_t *gw = data;
    char *name, *id, *action;
    bool ok = split_admin_path(r, &name, &id, &action);
    bool drain = ok && strcmp(action, "drain") == 0;
    if (!ok || (!drain && strcmp(action, "undrain") != 0)) {
        mg_send_error(r, 404, "not_found", NULL,
                      "no such endpoint: POST /v1/admin/models/{model}/deployments/{id}/drain or /undrain");
        return 0;
    }
    pol_verdict_t v;
    if (!pol_gate_authenticate(gw->gate, r, &v)) {
        pol_gate_refuse(r, &v);
        pol_verdict_clear(&v);
        return 0;
    }
    mg_model_t *m = mg_models_find(gw->models, name);
    bool admin = m != NULL && pol_gate_permits(gw->gate, &v, m->cfg->name, "admin");
    if (m == NULL || (!admin && !pol_gate_permits(gw->gate, &v, m->cfg->name, m->action))) {
        /* A model the caller may not even use reads as absent, as in GET /v1/models. */
        char msg[320];
        snprintf(msg, sizeof(msg), "The model '%.200s' does not exist or you do not have access to it.", name);
        mg_send_error(r, 404, "model_not_found", "model", msg);
    } else if (!admin) {
        char msg[320];
        snprintf(msg, sizeof(msg), "You may use the model '%.200s' but not administer it (policy action \"admin\").",
                 name);
        mg_send_error(r, 403, "permission_denied", NULL, msg);
    } else {
        long index = parse_index(m, id);
        if (index < 0) {
            char msg[320];
            snprintf(msg, sizeof(msg), "The model '%.200s' has no deployment '%.20s' (its deployments are 0 to %zu).",
                     name, id, m->num_deployments - 1);
            mg_send_error(r, 404, "deployment_not_found", "deployment", msg);
        } else {
            mg_deployment_t *d = &m->deployments[index];
            const char *before = mg_deployment_state_name(d);
            const char *actor = v.identity.principal->id;
            bool changed = apply(m, d, drain, actor);
            audit_http(gw, actor, drain ? "model.drain" : "model.undrain", m, d, before, changed);
            tp_http_send_json(r, 200,
                              json_pack("{s:s, s:o, s:b}", "model", m->cfg->name, "deployment", deployment_status(d),
                                        "changed", changed));
        }
    }
    pol_verdict_clear(&v);
    return 0;
}

/* ---- registration ---- */

void
mg_lifecycle_register(mg_gateway_t *gw)
{
    lc.gw = gw;
    const mg_models_t *ms = gw->models;
    size_t total = 0;
    lc.first = tp_calloc(ms->num_models + 1, sizeof(*lc.first));
    for (size_t i = 0; i < ms->num_models; i++) {
        lc.first[i] = total;
        total += ms->models[i].num_deployments;
    }
    lc.warmers = tp_calloc(total + 1, sizeof(*lc.warmers));
    lc.draining = tp_metrics_gauge(tp_daemon_metrics(gw->daemon), "triplane_model_deployment_draining",
                                   "1 while a deployment is out of rotation (drained by an operator, or warming up).",
                                   (const char *[]){ "model", "deployment", NULL });
    for (size_t i = 0; i < ms->num_models; i++) {
        mg_model_t *m = &ms->models[i];
        for (size_t j = 0; j < m->num_deployments; j++) {
            build_warmer(&lc.warmers[lc.first[i] + j], m, &m->deployments[j]);
            set_draining_metric(m, &m->deployments[j]);
        }
    }
    tp_control_server_t *ctl = tp_daemon_control(gw->daemon);
    tp_control_register(ctl, "model.drain", cmd_drain, gw);
    tp_control_register(ctl, "model.undrain", cmd_undrain, gw);
    tp_control_register(ctl, "model.status", cmd_status, gw);
    tp_server_t *srv = tp_daemon_server(gw->daemon);
    tp_server_route(srv, "GET", "/v1/admin/models", false, handle_admin_list, gw);
    tp_server_route(srv, "POST", "/v1/admin/models", true, handle_admin_action, gw);
}
