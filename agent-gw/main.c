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
#include "ledger.h"
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
    const ag_agent_t *a = ag_registry_find(w->registry, name);
    return a != NULL ? w->rt[a - ag_registry_at(w->registry, 0)] : NULL;
}

/* Timeouts of the calls to an agent. A stored agent has no timeout_ms of its own: it gets the
 * configuration's default. */
#define DEFAULT_CALL_TIMEOUT_MS 120000 /* agent_gw.agents[].timeout_ms when not configured */
#define CARD_TIMEOUT_MS         10000  /* a card fetch at most (its waiting callers get 502 then) */

typedef enum call_kind {
    CALLS_UNARY,  /* one JSON answer: the whole call within the agent's timeout_ms */
    CALLS_STREAM, /* SSE: the head within timeout_ms, then quiet for as long as a task waits */
    CALLS_CARD,   /* the card: small, and callers wait for it */
} call_kind_t;

/* An upstream for the origin ("scheme://authority") of url, with the agent's headers (cfg NULL:
 * none) and the timeouts of `kind`. NULL and *err when tp_upstream_new refuses the URL. */
static tp_upstream_t *
upstream_for(const char *url, const tp_agent_config_t *cfg, call_kind_t kind, char **err)
{
    const char *auth = strstr(url, "://");
    char *origin = tp_strndup(url, auth != NULL ? (size_t)(auth + 3 - url) + strcspn(auth + 3, "/?#") : strlen(url));
    tp_upstream_header_t *headers = NULL;
    size_t n = cfg != NULL ? cfg->header_count : 0;
    if (n > 0) {
        headers = tp_calloc(n, sizeof(*headers));
        for (size_t i = 0; i < n; i++) {
            headers[i].name = h2o_iovec_init(cfg->headers[i].name, strlen(cfg->headers[i].name));
            headers[i].value = h2o_iovec_init(cfg->headers[i].value, strlen(cfg->headers[i].value));
        }
    }
    uint64_t timeout = cfg != NULL && cfg->timeout_ms > 0 ? (uint64_t)cfg->timeout_ms : DEFAULT_CALL_TIMEOUT_MS;
    tp_upstream_options_t o = { .headers = headers, .num_headers = n, .first_byte_timeout_ms = timeout };
    switch (kind) {
    case CALLS_UNARY:
        o.idle_timeout_ms = o.total_timeout_ms = timeout;
        break;
    case CALLS_STREAM:
        /* A task may wait on a person for long between events; a paused stream is bounded by h2o's
         * own timer (TP_UPSTREAM_MAX_PAUSE_MS), so nothing longer would hold. */
        o.idle_timeout_ms = TP_UPSTREAM_MAX_PAUSE_MS;
        break;
    case CALLS_CARD:
        o.first_byte_timeout_ms = o.idle_timeout_ms = o.total_timeout_ms =
            timeout < CARD_TIMEOUT_MS ? timeout : CARD_TIMEOUT_MS;
        break;
    }
    tp_upstream_t *up = tp_upstream_new(origin, &o, err);
    free(headers);
    free(origin);
    return up;
}

/* The path and query of url after its authority ("/" when none), malloc'd. */
static char *
path_of(const char *url)
{
    const char *auth = strstr(url, "://");
    const char *rest = auth != NULL ? auth + 3 + strcspn(auth + 3, "/?#") : "";
    return rest[0] == '/' ? tp_strdup(rest) : tp_sprintf("/%s", rest);
}

static void
rt_free(ag_agent_rt_t *rt, unsigned workers)
{
    tp_upstream_free(rt->upstream);
    tp_upstream_free(rt->stream_upstream);
    tp_upstream_free(rt->card_upstream);
    free(rt->path);
    free(rt->card_path);
    if (rt->cards != NULL)
        ag_cards_free(rt->cards, workers);
    free(rt);
}

/* A runtime for agent a, or NULL and *err when an upstream cannot be made of its URLs. */
static ag_agent_rt_t *
rt_new(ag_gateway_t *gw, const ag_agent_t *a, char **err)
{
    ag_agent_rt_t *rt = tp_calloc(1, sizeof(*rt));
    rt->agent = a;
    atomic_init(&rt->inflight, 0);
    rt->path = path_of(a->url);
    rt->card_path = path_of(a->card_url);
    /* The card may need the agent's credential as much as its calls do. */
    if ((rt->upstream = upstream_for(a->url, a->cfg, CALLS_UNARY, err)) == NULL ||
        (rt->stream_upstream = upstream_for(a->url, a->cfg, CALLS_STREAM, err)) == NULL ||
        (rt->card_upstream = upstream_for(a->card_url, a->cfg, CALLS_CARD, err)) == NULL) {
        rt_free(rt, gw->workers);
        return NULL;
    }
    rt->cards = ag_cards_new(gw->workers);
    return rt;
}

static bool
same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Whether a runtime made for agent a serves agent b as well: the same calls, the same headers. */
static bool
same_calls(const ag_agent_t *a, const ag_agent_t *b)
{
    return same_str(a->name, b->name) && same_str(a->url, b->url) && same_str(a->card_url, b->card_url) &&
           same_str(a->version, b->version) && a->cfg == b->cfg;
}

static bool
same_agents(const ag_registry_t *a, const ag_registry_t *b)
{
    if (ag_registry_count(a) != ag_registry_count(b))
        return false;
    for (size_t i = 0; i < ag_registry_count(a); i++) {
        const ag_agent_t *x = ag_registry_at(a, i), *y = ag_registry_at(b, i);
        if (!same_calls(x, y) || !json_equal(x->labels, y->labels))
            return false;
    }
    return true;
}

/* The runtime of world w that serves agent a as it is, or NULL. */
static ag_agent_rt_t *
carried_rt(ag_world_t *w, const ag_agent_t *a)
{
    ag_agent_rt_t *rt = w != NULL ? ag_world_agent(w, a->name) : NULL;
    return rt != NULL && same_calls(rt->agent, a) ? rt : NULL;
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
    w->rt = tp_calloc(n > 0 ? n : 1, sizeof(*w->rt));
    for (size_t i = 0; i < n; i++) {
        const ag_agent_t *a = ag_registry_at(reg, i);
        ag_agent_rt_t *rt = carried_rt(current, a);
        char *why = NULL;
        if (rt == NULL && (rt = rt_new(gw, a, &why)) == NULL) {
            /* One agent the gateway cannot call does not hold up the others: it is left out. */
            tp_log_fields(
                TP_LOG_ERROR, NULL, "agent not usable: left out of the registry",
                json_pack("{s:s, s:s, s:s}", "agent", a->name, "url", a->url, "error", why != NULL ? why : "?"));
            free(why);
            continue;
        }
        rt->worlds++;
        w->rt[i] = rt;
    }
    w->older = current;
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
            ag_agent_rt_t *rt = w->rt[i];
            if (rt != NULL && --rt->worlds == 0)
                rt_free(rt, gw->workers);
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
}

/* Right after worker w switched to a new snapshot: from here no request on it passes the old
 * snapshot's kills, so ending what the new kills cover leaves no gap. */
static void
on_worker_state(tp_daemon_t *d, tp_worker_t *w, const void *state)
{
    if (gateway.gate != NULL)
        ag_forward_kill(&gateway, w, state);
}

/* After the workers stopped: the calls they had in flight are cancelled (their requests are
 * abandoned with the loops), so that every upstream is idle when it is freed. */
static void
shutdown_on_worker(tp_worker_t *w, void *arg)
{
    ag_gateway_t *gw = arg;
    ag_forward_shutdown_worker(gw, w);
    for (ag_world_t *world = ag_world(gw); world != NULL; world = world->older) {
        for (size_t i = 0; i < ag_registry_count(world->registry); i++) {
            if (world->rt[i] != NULL)
                ag_cards_shutdown_worker(world->rt[i], w);
        }
    }
}

static void
on_stopped(tp_daemon_t *d)
{
    ag_gateway_t *gw = &gateway;
    if (gw->w != NULL)
        tp_server_each_worker(tp_daemon_server(d), shutdown_on_worker, gw, NULL, NULL, NULL);
    ag_world_free_all(gw);
    ag_owners_free(gw->owners);
    gw->owners = NULL;
    free(gw->w);
    gw->w = NULL;
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
    gw->w = tp_calloc(gw->workers, sizeof(*gw->w));
    metrics_init(gw);
    if (load_chain_key(gw, err) != 0)
        return -1;
    gw->owners = ag_owners_new(AG_OWNERS_DEFAULT_CAPACITY);
    char *seed_err = NULL;
    long seeded = ag_owners_seed(gw->owners, tp_store_db(tp_daemon_store(d)), &seed_err);
    if (seeded < 0) {
        /* Not fatal: tasks made before this start are then refused to everyone (not found). */
        tp_log_fields(TP_LOG_WARN, NULL, "task owners not read from the ledger",
                      json_pack("{s:s}", "error", seed_err != NULL ? seed_err : "?"));
        free(seed_err);
    } else {
        tp_log_fields(TP_LOG_DEBUG, NULL, "task owners read from the ledger",
                      json_pack("{s:I}", "tasks", (json_int_t)seeded));
    }
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
    .on_worker_state = on_worker_state,
    .on_stopped = on_stopped,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&agent_gw, argc, argv);
}
