/*
 * health.c — active health checks: every health_interval_ms, each deployment with a health_path
 * gets a GET; a 2xx counts as a success for its circuit breaker (closing an open circuit), any
 * other answer or a failure counts toward opening it. Probes run on worker 0's loop, through the
 * same upstream client and pools as requests; one probe per deployment at a time.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway.h"
#include "log.h"
#include "mem.h"

typedef struct probe {
    mg_deployment_t *d;
    const char *model;
    int status;
} probe_t;

static int
on_probe_head(tp_upstream_call_t *call, int status, const h2o_header_t *headers, size_t num_headers)
{
    ((probe_t *)tp_upstream_call_data(call))->status = status;
    return 0;
}

static void
on_probe_body(tp_upstream_call_t *call, const char *buf, size_t len)
{
    /* The body does not matter. */
}

static void
on_probe_done(tp_upstream_call_t *call, const char *error)
{
    probe_t *pr = tp_upstream_call_data(call);
    bool ok = error == NULL && pr->status >= 200 && pr->status < 300;
    mg_deployment_outcome(pr->model, pr->d, ok, NULL, "health check");
    if (!ok)
        tp_log_fields(TP_LOG_DEBUG, NULL, "health check failed",
                      json_pack("{s:s, s:s, s:i, s:s?}", "model", pr->model, "deployment", pr->d->label, "status",
                                pr->status, "error", error));
    atomic_store(&pr->d->probing, false);
    free(pr);
}

static const tp_upstream_handlers_t probe_handlers = { .on_head = on_probe_head,
                                                       .on_body = on_probe_body,
                                                       .on_done = on_probe_done };

/* Runs on every worker; only worker 0 probes (one prober is enough, and its pools are warm). */
static void
probe_on_worker(tp_worker_t *w, void *arg)
{
    mg_gateway_t *gw = arg;
    if (tp_worker_id(w) != 0 || tp_server_draining(tp_worker_server(w)))
        return;
    for (size_t i = 0; i < gw->models->num_models; i++) {
        mg_model_t *m = &gw->models->models[i];
        for (size_t j = 0; j < m->num_deployments; j++) {
            mg_deployment_t *d = &m->deployments[j];
            const char *path = d->cfg->health_path;
            if (path == NULL || path[0] == '\0' || atomic_exchange(&d->probing, true))
                continue;
            probe_t *pr = tp_calloc(1, sizeof(*pr));
            pr->d = d;
            pr->model = m->cfg->name;
            tp_upstream_request_t req = { .method = "GET", .path = h2o_iovec_init(path, strlen(path)) };
            tp_upstream_call(d->upstream, tp_worker_h2o(w), &req, &probe_handlers, pr);
        }
    }
}

static void
on_tick(uv_timer_t *t)
{
    mg_gateway_t *gw = t->data;
    tp_server_t *srv = tp_daemon_server(gw->daemon);
    if (!tp_server_draining(srv))
        tp_server_each_worker(srv, probe_on_worker, gw, NULL, NULL, NULL);
}

void
mg_health_start(mg_gateway_t *gw)
{
    bool any = false;
    for (size_t i = 0; i < gw->models->num_models && !any; i++)
        for (size_t j = 0; j < gw->models->models[i].num_deployments && !any; j++)
            any = gw->models->models[i].deployments[j].cfg->health_path[0] != '\0';
    if (!any)
        return;
    static uv_timer_t timer; /* lives as long as the process; unref'd so it never holds the loop open */
    uint64_t every = (uint64_t)tp_daemon_config(gw->daemon)->model_gw.health_interval_ms;
    uv_timer_init(tp_daemon_loop(gw->daemon), &timer);
    timer.data = gw;
    uv_timer_start(&timer, on_tick, every, every);
    uv_unref((uv_handle_t *)&timer);
}
