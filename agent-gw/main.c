/*
 * agent-gw — the agent plane: an A2A gateway that mediates agent-to-agent messages, with a
 * governed peer graph, delegation chains it signs, a task ledger and a kill switch. See
 * gateway.h for how the modules fit together.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"
#include "gateway.h"
#include "log.h"
#include "mem.h"
#include "snapshot.h"
#include "store.h"

#define CHAIN_KEY_SETTING "agent_gw.chain_key"

static ag_gateway_t gateway; /* one per process */

/* ---- worlds: the registry and what the gateway keeps per agent ---- */

ag_world_t *
ag_world(ag_gateway_t *gw)
{
    return atomic_load_explicit(&gw->world, memory_order_acquire);
}

ag_agent_rt_t *
ag_world_agent(ag_world_t *w, const char *name)
{
    for (size_t i = 0; i < ag_registry_count(w->registry); i++) {
        if (strcmp(ag_registry_at(w->registry, i)->name, name) == 0)
            return &w->rt[i];
    }
    return NULL;
}

/* Splits "scheme://authority/path?query" into an origin upstream and the path. */
static tp_upstream_t *
upstream_for(const char *url, const tp_agent_config_t *cfg, char **path, char **err)
{
    const char *auth = strstr(url, "://");
    const char *slash = auth != NULL ? strchr(auth + 3, '/') : NULL;
    char *origin = slash != NULL ? tp_strndup(url, (size_t)(slash - url)) : tp_strdup(url);
    *path = tp_strdup(slash != NULL ? slash : "/");
    tp_upstream_header_t *headers = NULL;
    size_t n = cfg != NULL ? cfg->header_count : 0;
    if (n > 0) {
        headers = tp_calloc(n, sizeof(*headers));
        for (size_t i = 0; i < n; i++) {
            headers[i].name = h2o_iovec_init(cfg->headers[i].name, strlen(cfg->headers[i].name));
            headers[i].value = h2o_iovec_init(cfg->headers[i].value, strlen(cfg->headers[i].value));
        }
    }
    tp_upstream_options_t o = {
        .headers = headers,
        .num_headers = n,
        .first_byte_timeout_ms = cfg != NULL ? (uint64_t)cfg->timeout_ms : 0,
        .idle_timeout_ms = 24ull * 3600 * 1000, /* streams may be quiet for long; total_timeout bounds calls */
    };
    tp_upstream_t *up = tp_upstream_new(origin, &o, err);
    free(headers);
    free(origin);
    return up;
}

static bool
same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool
same_agents(const ag_registry_t *a, const ag_registry_t *b)
{
    if (ag_registry_count(a) != ag_registry_count(b))
        return false;
    for (size_t i = 0; i < ag_registry_count(a); i++) {
        const ag_agent_t *x = ag_registry_at(a, i), *y = ag_registry_at(b, i);
        if (!same_str(x->name, y->name) || !same_str(x->url, y->url) || !same_str(x->card_url, y->card_url) ||
            !same_str(x->version, y->version) || !json_equal(x->labels, y->labels))
            return false;
    }
    return true;
}

int
ag_world_load(ag_gateway_t *gw, char **err)
{
    ag_registry_t *reg = ag_registry_load(tp_store_db(tp_daemon_store(gw->daemon)), gw->cfg, err);
    if (reg == NULL)
        return -1;
    ag_world_t *current = ag_world(gw);
    if (current != NULL && same_agents(current->registry, reg)) {
        ag_registry_free(reg); /* another kind of change: keep the upstreams and their pools */
        return 0;
    }
    ag_world_t *w = tp_calloc(1, sizeof(*w));
    w->registry = reg;
    size_t n = ag_registry_count(reg);
    w->rt = tp_calloc(n > 0 ? n : 1, sizeof(ag_agent_rt_t));
    for (size_t i = 0; i < n; i++) {
        ag_agent_rt_t *rt = &w->rt[i];
        rt->agent = ag_registry_at(reg, i);
        rt->upstream = upstream_for(rt->agent->url, rt->agent->cfg, &rt->path, err);
        if (rt->upstream != NULL)
            rt->card_upstream = upstream_for(rt->agent->card_url, NULL, &rt->card_path, err);
        if (rt->upstream == NULL || rt->card_upstream == NULL) {
            tp_log_fields(TP_LOG_ERROR, NULL, "agent not usable",
                          json_pack("{s:s, s:s}", "agent", rt->agent->name, "error", *err != NULL ? *err : "?"));
            return -1; /* the world leaks: a configuration error ends the daemon */
        }
        rt->cards = ag_cards_new(gw->workers);
    }
    w->older = ag_world(gw);
    atomic_store_explicit(&gw->world, w, memory_order_release);
    return 0;
}

void
ag_world_free_all(ag_gateway_t *gw)
{
    ag_world_t *w = ag_world(gw);
    atomic_store(&gw->world, NULL);
    while (w != NULL) {
        ag_world_t *older = w->older;
        for (size_t i = 0; i < ag_registry_count(w->registry); i++) {
            tp_upstream_free(w->rt[i].upstream);
            tp_upstream_free(w->rt[i].card_upstream);
            free(w->rt[i].path);
            free(w->rt[i].card_path);
            ag_cards_free(w->rt[i].cards, gw->workers);
        }
        free(w->rt);
        ag_registry_free(w->registry);
        free(w);
        w = older;
    }
}

/* ---- the chain key ---- */

static int
load_chain_key(ag_gateway_t *gw, char **err)
{
    if (gw->cfg->chain_key != NULL) {
        gw->chain_key_len =
            strlen(gw->cfg->chain_key) < sizeof(gw->chain_key) ? strlen(gw->cfg->chain_key) : sizeof(gw->chain_key);
        memcpy(gw->chain_key, gw->cfg->chain_key, gw->chain_key_len);
        return 0;
    }
    /* One key for every agent-gw on this store, made by whichever starts first. */
    sqlite3 *db = tp_store_db(tp_daemon_store(gw->daemon));
    uint8_t raw[32];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        *err = tp_strdup("getrandom failed");
        return -1;
    }
    char hex[65];
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, CHAIN_KEY_SETTING, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, hex, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT value FROM settings WHERE key = ?1", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, CHAIN_KEY_SETTING, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            const char *v = (const char *)sqlite3_column_text(st, 0);
            gw->chain_key_len = v != NULL && strlen(v) < sizeof(gw->chain_key) ? strlen(v) : 0;
            memcpy(gw->chain_key, v, gw->chain_key_len);
        }
    }
    sqlite3_finalize(st);
    if (gw->chain_key_len < 32) {
        *err = tp_sprintf("the delegation chain key could not be kept in the store: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

/* ---- state changes: the registry and kills ---- */

static void
kill_on_worker(tp_worker_t *w, void *arg)
{
    ag_forward_kill(&gateway, w, arg);
}

static void
free_kills(void *arg)
{
    ag_kill_list_t *k = arg;
    for (size_t i = 0; i < k->n; i++) {
        free(k->kills[i].target_kind);
        free(k->kills[i].target);
        free(k->kills[i].reason);
    }
    free(k->kills);
    free(k);
}

static void
on_state(tp_daemon_t *d, const void *state)
{
    ag_gateway_t *gw = &gateway;
    if (gw->gate == NULL)
        return; /* the first snapshot, before setup */
    char *err = NULL;
    if (ag_world_load(gw, &err) != 0) {
        tp_log_fields(TP_LOG_WARN, NULL, "agent registry not reloaded", json_pack("{s:s}", "error", err ? err : "?"));
        free(err);
    }
    const pol_snapshot_t *snap = state;
    if (snap->num_kills == 0)
        return;
    ag_kill_list_t *k = tp_calloc(1, sizeof(*k));
    k->n = snap->num_kills;
    k->kills = tp_calloc(k->n, sizeof(pol_kill_t));
    for (size_t i = 0; i < k->n; i++) {
        k->kills[i].target_kind = tp_strdup(snap->kills[i].target_kind);
        k->kills[i].target = tp_strdup(snap->kills[i].target);
        k->kills[i].reason = tp_strdup(snap->kills[i].reason != NULL ? snap->kills[i].reason : "");
        k->kills[i].expires_at_ms = snap->kills[i].expires_at_ms;
    }
    tp_server_each_worker(tp_daemon_server(d), kill_on_worker, k, tp_daemon_loop(d), free_kills, k);
}

static void
on_stopped(tp_daemon_t *d)
{
    ag_world_free_all(&gateway);
}

static void
metrics_init(ag_gateway_t *gw)
{
    tp_metrics_t *reg = tp_daemon_metrics(gw->daemon);
    ag_metrics_t *m = &gw->metrics;
    m->messages = tp_metrics_counter(reg, "triplane_a2a_messages_total",
                                     "A2A requests by caller, target, method and "
                                     "outcome",
                                     (const char *[]){ "caller", "target", "method", "outcome", NULL });
    m->refusals =
        tp_metrics_counter(reg, "triplane_a2a_refusals_total",
                           "requests refused by the gateway, by reason (policy, loop, depth, limit, killed, …)",
                           (const char *[]){ "reason", NULL });
    m->transitions = tp_metrics_counter(reg, "triplane_a2a_task_transitions_total", "task states seen, by agent",
                                        (const char *[]){ "target", "state", NULL });
    m->streams = tp_metrics_gauge(reg, "triplane_a2a_streams_active", "SSE streams being relayed, by agent",
                                  (const char *[]){ "target", NULL });
    m->upstream_s = tp_metrics_histogram(
        reg, "triplane_a2a_upstream_duration_seconds", "time from forwarding a request to the end of its answer",
        (const char *[]){ "target", "method", NULL }, tp_metrics_latency_buckets, tp_metrics_latency_buckets_count);
}

static int
setup(tp_daemon_t *d, char **err)
{
    ag_gateway_t *gw = &gateway;
    gw->daemon = d;
    gw->cfg = &tp_daemon_config(d)->agent_gw;
    gw->writer = tp_daemon_writer(d);
    gw->workers = tp_server_worker_count(tp_daemon_server(d));
    gw->active = tp_calloc(gw->workers, sizeof(ag_forward_t *));
    metrics_init(gw);
    if (load_chain_key(gw, err) != 0)
        return -1;
    if (ag_world_load(gw, err) != 0)
        return -1;
    gw->gate = pol_gate_new(d, "agent", err);
    if (gw->gate == NULL)
        return -1;
    ag_cards_register(gw);
    ag_forward_register(gw);
    return 0;
}

static const tp_daemon_spec_t agent_gw = {
    .name = "agent-gw",
    .summary = "Triplane A2A gateway: a governed peer graph between agents, with a kill switch.",
    .state_ops = &pol_snapshot_state_ops,
    .error_fn = ag_error_envelope,
    .setup = setup,
    .on_state = on_state,
    .on_stopped = on_stopped,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&agent_gw, argc, argv);
}
