/*
 * cards.c — agent cards as the gateway serves them, and GET /agents.
 *
 * Each agent's card is fetched from the agent (per worker, kept card_refresh_ms) and served at
 * /agents/<name>/.well-known/agent-card.json (and the older agent.json) with every URL a client
 * would call — `url`, `additionalInterfaces[].url`, `supportedInterfaces[].url` — pointing at
 * the gateway's /agents/<name>, and only the JSON-RPC binding offered (the one the gateway
 * speaks), so a client that follows the card never bypasses the gateway. A card that cannot be
 * fetched is answered with 502 naming the agent; a stale card is served while it is refetched.
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "mem.h"

/* A card larger than this is refused: real cards are a few KiB, and callers wait for all of it. */
#define MAX_CARD_BYTES (1024u * 1024)

typedef struct card_wait card_wait_t;
typedef struct card_fetch card_fetch_t;

typedef struct ag_card_cache {
    json_t *card;         /* as the agent served it; NULL before the first fetch */
    int64_t fetched_ms;   /* Unix time of the fetch */
    card_wait_t *waiting; /* requests waiting for the first card */
    card_fetch_t *fetch;  /* the fetch in flight, or NULL */
} ag_card_cache_t;

/* A request waiting for a card: in its own pool, so that it lives exactly as long as the request;
 * disposing of the request takes it off the list. */
struct card_wait {
    tp_request_t *r;
    ag_card_cache_t *cache; /* the list it is on; NULL once off it */
    card_wait_t *prev, *next;
};

struct card_fetch {
    ag_gateway_t *gw;
    ag_agent_rt_t *rt;
    ag_card_cache_t *cache;
    tp_upstream_call_t *call; /* NULL once it ended */
    char *body;
    size_t len, cap;
    int status;
};

const char *
ag_agent_public_url(ag_gateway_t *gw, tp_request_t *r, const char *name)
{
    char buf[512];
    if (gw->cfg->public_url != NULL) {
        size_t n = strlen(gw->cfg->public_url);
        snprintf(buf, sizeof(buf), "%.*s/agents/%s", (int)(n > 0 && gw->cfg->public_url[n - 1] == '/' ? n - 1 : n),
                 gw->cfg->public_url, name);
    } else {
        bool tls = r->req->scheme == &H2O_URL_SCHEME_HTTPS;
        snprintf(buf, sizeof(buf), "%s://%.*s/agents/%s", tls ? "https" : "http", (int)r->req->authority.len,
                 r->req->authority.base, name);
    }
    char *out = h2o_mem_alloc_pool(&r->req->pool, strlen(buf) + 1);
    strcpy(out, buf);
    return out;
}

json_t *
ag_card_rewrite(const json_t *card, const char *url, const ag_agent_t *agent)
{
    json_t *c = json_deep_copy(card);
    json_object_del(c, "signatures"); /* a signature over the agent's card does not hold for this one */
    if (json_object_get(c, "url") != NULL || strcmp(agent->version, "0.3") == 0)
        json_object_set_new(c, "url", json_string(url));
    if (json_object_get(c, "preferredTransport") != NULL)
        json_object_set_new(c, "preferredTransport", json_string("JSONRPC"));
    json_t *extra = json_object_get(c, "additionalInterfaces");
    if (json_is_array(extra)) {
        json_array_clear(extra);
        json_array_append_new(extra, json_pack("{s:s, s:s}", "url", url, "transport", "JSONRPC"));
    }
    json_t *supported = json_object_get(c, "supportedInterfaces");
    if (json_is_array(supported)) {
        json_t *keep = json_array();
        for (size_t i = 0; i < json_array_size(supported); i++) {
            json_t *s = json_array_get(supported, i);
            const char *binding = json_string_value(json_object_get(s, "protocolBinding"));
            if (binding == NULL || strcasecmp(binding, "JSONRPC") == 0) {
                json_t *copy = json_deep_copy(s);
                json_object_set_new(copy, "url", json_string(url));
                json_array_append_new(keep, copy);
            }
        }
        if (json_array_size(keep) == 0)
            json_array_append_new(keep, json_pack("{s:s, s:s, s:s}", "url", url, "protocolBinding", "JSONRPC",
                                                  "protocolVersion", agent->version));
        json_object_set_new(c, "supportedInterfaces", keep);
    }
    return c;
}

static void
serve_card(ag_gateway_t *gw, tp_request_t *r, ag_agent_rt_t *rt, const json_t *card)
{
    const char *url = ag_agent_public_url(gw, r, rt->agent->name);
    tp_http_send_json(r, 200, ag_card_rewrite(card, url, rt->agent));
}

static void
wait_unlink(card_wait_t *w)
{
    if (w->cache == NULL)
        return;
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        w->cache->waiting = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->cache = NULL;
}

static void
on_wait_dispose(void *p)
{
    wait_unlink(p); /* the client went away before the card came */
}

/* The end of a fetch (error NULL: the body arrived): keeps the card, answers every waiting
 * request, frees the fetch. */
static void
fetch_end(card_fetch_t *cf, const char *error)
{
    ag_card_cache_t *cache = cf->cache;
    cache->fetch = NULL;
    json_t *card =
        error == NULL && cf->status == 200 ? json_loadb(cf->body != NULL ? cf->body : "", cf->len, 0, NULL) : NULL;
    char why[300];
    if (!json_is_object(card)) {
        snprintf(why, sizeof(why), "the card of agent \"%s\" could not be fetched: %s", cf->rt->agent->name,
                 error != NULL       ? error
                 : cf->status != 200 ? "unexpected HTTP status"
                                     : "not a JSON object");
        tp_log_fields(TP_LOG_WARN, NULL, "agent card fetch failed",
                      json_pack("{s:s, s:s, s:i}", "agent", cf->rt->agent->name, "error", why, "status", cf->status));
        json_decref(card);
    } else {
        json_decref(cache->card);
        cache->card = card;
        cache->fetched_ms = tp_unix_ms();
    }
    card_wait_t *w;
    while ((w = cache->waiting) != NULL) {
        wait_unlink(w);
        if (cache->card != NULL)
            serve_card(cf->gw, w->r, cf->rt, cache->card);
        else
            tp_http_error(w->r, 502, "card_unavailable", why);
    }
    free(cf->body);
    free(cf);
}

static int
on_card_head(tp_upstream_call_t *call, int status, const h2o_header_t *headers, size_t n)
{
    card_fetch_t *cf = tp_upstream_call_data(call);
    cf->status = status;
    return 0;
}

static void
on_card_body(tp_upstream_call_t *call, const char *buf, size_t len)
{
    card_fetch_t *cf = tp_upstream_call_data(call);
    if (cf->len + len > MAX_CARD_BYTES) { /* no use reading the rest: the waiting callers get 502 now */
        tp_upstream_cancel(call);
        cf->call = NULL;
        char why[64];
        snprintf(why, sizeof(why), "the card is larger than %u bytes", MAX_CARD_BYTES);
        fetch_end(cf, why);
        return;
    }
    if (cf->len + len > cf->cap) {
        size_t cap = cf->cap > 0 ? cf->cap : 4096;
        while (cap < cf->len + len)
            cap *= 2;
        cf->body = tp_realloc(cf->body, cap);
        cf->cap = cap;
    }
    memcpy(cf->body + cf->len, buf, len);
    cf->len += len;
}

static void
on_card_done(tp_upstream_call_t *call, const char *error)
{
    card_fetch_t *cf = tp_upstream_call_data(call);
    cf->call = NULL;
    fetch_end(cf, error);
}

static const tp_upstream_handlers_t card_handlers = {
    .on_head = on_card_head,
    .on_body = on_card_body,
    .on_done = on_card_done,
};

static void
fetch_card(ag_gateway_t *gw, ag_agent_rt_t *rt, tp_worker_t *w)
{
    ag_card_cache_t *cache = &rt->cards[tp_worker_id(w)];
    if (cache->fetch != NULL)
        return;
    card_fetch_t *cf = tp_calloc(1, sizeof(*cf));
    cf->gw = gw;
    cf->rt = rt;
    cf->cache = cache;
    cache->fetch = cf;
    tp_upstream_header_t accept = { h2o_iovec_init(H2O_STRLIT("accept")),
                                    h2o_iovec_init(H2O_STRLIT("application/json")) };
    tp_upstream_request_t ur = {
        .method = "GET",
        .path = h2o_iovec_init(rt->card_path, strlen(rt->card_path)),
        .headers = &accept,
        .num_headers = 1,
    };
    cf->call = tp_upstream_call(rt->card_upstream, tp_worker_h2o(w), &ur, &card_handlers, cf);
}

void
ag_cards_shutdown_worker(ag_agent_rt_t *rt, tp_worker_t *w)
{
    ag_card_cache_t *cache = &rt->cards[tp_worker_id(w)];
    card_fetch_t *cf = cache->fetch;
    if (cf == NULL)
        return;
    cache->fetch = NULL;
    if (cf->call != NULL)
        tp_upstream_cancel(cf->call);
    free(cf->body);
    free(cf);
}

/* GET /agents/<name>/.well-known/agent-card.json (or agent.json). Cards are public metadata,
 * as A2A intends; what an agent may be asked is decided when it is called. */
static int
on_card(tp_request_t *r, void *data)
{
    ag_gateway_t *gw = data;
    h2o_iovec_t path = r->req->path_normalized;
    if (path.len <= 8) { /* "/agents/" */
        tp_http_error(r, 404, "not_found", "no such agent resource");
        return 0;
    }
    const char *name = path.base + 8;
    const char *slash = memchr(name, '/', path.len - 8);
    static const char *const suffixes[] = { "/.well-known/agent-card.json", "/.well-known/agent.json", NULL };
    bool is_card = false;
    for (const char *const *s = suffixes; *s != NULL && slash != NULL; s++) {
        size_t sl = strlen(*s);
        is_card = is_card || ((size_t)(path.base + path.len - slash) == sl && memcmp(slash, *s, sl) == 0);
    }
    if (!is_card || slash == name || (size_t)(slash - name) > AG_AGENT_NAME_MAX) {
        tp_http_error(r, 404, "not_found", "no such agent resource");
        return 0;
    }
    char agent[AG_AGENT_NAME_MAX + 1];
    snprintf(agent, sizeof(agent), "%.*s", (int)(slash - name), name);
    ag_agent_rt_t *rt = ag_world_agent(ag_world(gw), agent);
    if (rt == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "no agent named \"%s\" is registered", agent);
        tp_http_error(r, 404, "unknown_agent", msg);
        return 0;
    }
    ag_card_cache_t *cache = &rt->cards[tp_worker_id(r->worker)];
    bool fresh = cache->card != NULL && tp_unix_ms() - cache->fetched_ms < gw->cfg->card_refresh_ms;
    if (cache->card != NULL) {
        serve_card(gw, r, rt, cache->card);
        if (!fresh)
            fetch_card(gw, rt, r->worker); /* served stale while it is refetched */
        return 0;
    }
    card_wait_t *w = h2o_mem_alloc_shared(&r->req->pool, sizeof(*w), on_wait_dispose);
    *w = (card_wait_t){ .r = r, .cache = cache, .next = cache->waiting };
    if (cache->waiting != NULL)
        cache->waiting->prev = w;
    cache->waiting = w;
    fetch_card(gw, rt, r->worker);
    return 0;
}

/* GET /agents: the agents the caller may message. */
static int
on_list(tp_request_t *r, void *data)
{
    ag_gateway_t *gw = data;
    pol_verdict_t v;
    memset(&v, 0, sizeof(v));
    if (!pol_gate_authenticate(gw->gate, r, &v)) {
        pol_gate_refuse(r, &v);
        pol_verdict_clear(&v);
        return 0;
    }
    ag_world_t *world = ag_world(gw);
    json_t *list = json_array();
    for (size_t i = 0; i < ag_registry_count(world->registry); i++) {
        const ag_agent_t *a = ag_registry_at(world->registry, i);
        if (world->rt[i] == NULL || !pol_gate_permits(gw->gate, &v, a->name, "message"))
            continue;
        const char *url = ag_agent_public_url(gw, r, a->name);
        char *card = tp_sprintf("%s/.well-known/agent-card.json", url);
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:O}", "name", a->name, "url", url, "card", card,
                                              "version", a->version, "labels", a->labels));
        free(card);
    }
    pol_verdict_clear(&v);
    tp_http_send_json(r, 200, json_pack("{s:o}", "agents", list));
    return 0;
}

void
ag_cards_register(ag_gateway_t *gw)
{
    tp_server_t *srv = tp_daemon_server(gw->daemon);
    tp_server_route(srv, "GET", "/agents", false, on_list, gw);
    tp_server_route(srv, "GET", "/agents", true, on_card, gw);
}

ag_card_cache_t *
ag_cards_new(unsigned workers)
{
    return tp_calloc(workers, sizeof(ag_card_cache_t));
}

void
ag_cards_free(ag_card_cache_t *cards, unsigned workers)
{
    for (unsigned i = 0; i < workers; i++)
        json_decref(cards[i].card);
    free(cards);
}
