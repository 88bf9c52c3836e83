/*
 * session.c — client sessions: random ids, the principal that owns each, idle expiry.
 *
 * Session ids are 32 bytes from the kernel's CSPRNG, base64url-encoded: unguessable, and
 * visible ASCII as the transport requires. A session answers only to the principal that opened
 * it; to anyone else it does not exist (404), so an id seen in a log is not a credential.
 */
#include "gateway.h"

#include <string.h>
#include <sys/random.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

#define SESSION_BUCKETS   4096
#define SWEEP_INTERVAL_MS 1000

typedef struct mcp_session_table {
    mcp_session_t *buckets[SESSION_BUCKETS];
    size_t count;
    uv_timer_t sweep;
} mcp_session_table_t;

static uint32_t
hash_id(const char *id, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a: the ids are random already */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)id[i]) * 16777619u;
    return h % SESSION_BUCKETS;
}

static mcp_session_table_t *
table(mcp_gateway_t *gw)
{
    if (gw->sessions == NULL)
        gw->sessions = tp_calloc(1, sizeof(mcp_session_table_t));
    return gw->sessions;
}

static void
make_id(char out[MCP_SESSION_ID_LEN + 1])
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t raw[33];
    size_t got = 0;
    while (got < 32) {
        ssize_t n = getrandom(raw + got, 32 - got, 0);
        if (n < 0)
            tp_fatal("getrandom failed");
        got += (size_t)n;
    }
    raw[32] = 0;
    size_t o = 0;
    for (size_t i = 0; i < 33 && o < MCP_SESSION_ID_LEN; i += 3) {
        uint32_t v =
            (uint32_t)raw[i] << 16 | (i + 1 < 33 ? (uint32_t)raw[i + 1] << 8 : 0) | (i + 2 < 33 ? raw[i + 2] : 0);
        for (int k = 18; k >= 0 && o < MCP_SESSION_ID_LEN; k -= 6)
            out[o++] = b64[(v >> k) & 63];
    }
    out[MCP_SESSION_ID_LEN] = '\0';
}

mcp_session_t *
mcp_session_new(mcp_gateway_t *gw, const char *principal, const char *team)
{
    mcp_session_table_t *t = table(gw);
    if (t->count >= (size_t)gw->cfg->max_sessions)
        return NULL;
    mcp_session_t *s = tp_calloc(1, sizeof(*s));
    s->gw = gw;
    make_id(s->id);
    s->principal = tp_strdup(principal);
    s->team = team != NULL ? tp_strdup(team) : NULL;
    s->links = tp_calloc(gw->num_servers > 0 ? gw->num_servers : 1, sizeof(mcp_link_t *));
    s->subscriptions = json_object();
    s->server_requests = json_object();
    s->last_seen_ms = (uint64_t)tp_unix_ms();
    uint32_t b = hash_id(s->id, MCP_SESSION_ID_LEN);
    s->next = t->buckets[b];
    t->buckets[b] = s;
    t->count++;
    tp_metric_set(gw->metrics.sessions, NULL, (double)t->count);
    tp_metric_add(gw->metrics.session_total, (const char *[]){ "opened" }, 1);
    return s;
}

mcp_session_t *
mcp_session_find(mcp_gateway_t *gw, const char *id, size_t len)
{
    if (len != MCP_SESSION_ID_LEN)
        return NULL;
    mcp_session_table_t *t = table(gw);
    for (mcp_session_t *s = t->buckets[hash_id(id, len)]; s != NULL; s = s->next) {
        if (memcmp(s->id, id, len) == 0 && !s->ended) {
            s->last_seen_ms = (uint64_t)tp_unix_ms();
            return s;
        }
    }
    return NULL;
}

static void
unlink_session(mcp_session_table_t *t, mcp_session_t *s)
{
    for (mcp_session_t **p = &t->buckets[hash_id(s->id, MCP_SESSION_ID_LEN)]; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            t->count--;
            return;
        }
    }
}

static void session_free(mcp_session_t *s);

void
mcp_session_end(mcp_session_t *s, const char *why)
{
    if (s->ended)
        return;
    s->ended = true;
    /* Cancelling the calls below drops the references they hold; ours keeps s until the end. */
    mcp_session_ref(s);
    mcp_gateway_t *gw = s->gw;
    tp_log_fields(TP_LOG_INFO, NULL, "session ended",
                  json_pack("{s:s, s:s, s:s}", "session", s->id, "principal", s->principal, "reason", why));
    mcp_servers_session_ended(gw, s, why); /* cancels calls upstream, closes links */
    while (s->streams != NULL)
        mcp_stream_free(s->streams);
    mcp_session_table_t *t = table(gw);
    unlink_session(t, s);
    tp_metric_set(gw->metrics.sessions, NULL, (double)t->count);
    tp_metric_add(gw->metrics.session_total, (const char *[]){ why }, 1);
    mcp_session_unref(s);
}

void
mcp_session_ref(mcp_session_t *s)
{
    s->refs++;
}

void
mcp_session_unref(mcp_session_t *s)
{
    if (--s->refs == 0 && s->ended)
        session_free(s);
}

static void
session_free(mcp_session_t *s)
{
    json_decref(s->client_capabilities);
    json_decref(s->client_info);
    json_decref(s->subscriptions);
    json_decref(s->server_requests);
    free(s->links);
    free(s->principal);
    free(s->team);
    free(s->protocol);
    free(s->virtual_name);
    free(s);
}

void
mcp_session_each(mcp_gateway_t *gw, void (*fn)(mcp_session_t *s, void *arg), void *arg)
{
    mcp_session_table_t *t = table(gw);
    for (size_t b = 0; b < SESSION_BUCKETS; b++) {
        for (mcp_session_t *s = t->buckets[b], *next; s != NULL; s = next) {
            next = s->next;
            fn(s, arg);
        }
    }
}

size_t
mcp_session_count(const mcp_gateway_t *gw)
{
    return gw->sessions != NULL ? gw->sessions->count : 0;
}

/* Whether a client listens on one of the session's streams (its GET stream, say): a client that
 * holds a stream open is there, however long since its last request. */
static bool
listened_to(const mcp_session_t *s)
{
    for (const mcp_stream_t *st = s->streams; st != NULL; st = st->next) {
        if (mcp_stream_request(st) != NULL)
            return true;
    }
    return false;
}

static void
expire_one(mcp_session_t *s, void *arg)
{
    uint64_t now = *(uint64_t *)arg;
    if (s->calls == NULL && !listened_to(s) && now - s->last_seen_ms > (uint64_t)s->gw->cfg->session_idle_timeout_ms)
        mcp_session_end(s, "idle");
}

static void
on_sweep(uv_timer_t *timer)
{
    mcp_gateway_t *gw = timer->data;
    uint64_t now = (uint64_t)tp_unix_ms();
    mcp_session_each(gw, expire_one, &now);
}

void
mcp_sessions_start(mcp_gateway_t *gw)
{
    mcp_session_table_t *t = table(gw);
    uv_timer_init(gw->loop, &t->sweep);
    t->sweep.data = gw;
    uv_timer_start(&t->sweep, on_sweep, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
    uv_unref((uv_handle_t *)&t->sweep);
}
