/*
 * forward.c — POST /agents/<name>: the checks, then the call to the agent, then its answer
 * (one JSON body, or an SSE stream relayed with back pressure) back to the caller, with the task
 * ledger kept from what passes by.
 *
 * The checks, in order: the agent exists; authentication (401); the JSON-RPC message and the
 * A2A version (the A2A-Version header, absent = 0.3, must be the agent's); the delegation chain
 * (x-triplane-chain: a gateway-signed token the calling agent passes back; forged → refused;
 * the target already on it → loop; too long → depth); kill switches on the caller, the target
 * and everyone on the chain; policy for the caller and for the principal that started the chain
 * (a delegated call never exceeds its origin's rights), with the caller's rate limits; message
 * limits (size, parts, inline file bytes) and the agent's concurrency cap; push-notification URLs
 * (SSRF). Refusals are JSON-RPC errors with data.reason naming the check.
 *
 * Every forward in flight is on its worker's list, so a kill can end it: the caller gets a final
 * canceled status event (or a suspended error), the agent gets a cancel for the task.
 */
#include "gateway.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "chain.h"
#include "clock.h"
#include "http.h"
#include "ledger.h"
#include "log.h"
#include "mem.h"
#include "pushurl.h"
#include "sse.h"
#include "store.h"

#define CHAIN_MAX_AGE_MS   (24LL * 3600 * 1000) /* a chain older than a day is not accepted */
#define MAX_ANSWER_BYTES   (32u * 1024 * 1024)  /* a non-streamed answer larger than this is refused */
#define MAX_EVENT_BYTES    (16u * 1024 * 1024)
#define STREAM_PAUSE_BYTES (1u * 1024 * 1024) /* bytes queued for a slow caller before the agent is paused */
#define FORWARD_ID_MAX     128

struct ag_forward {
    h2o_generator_t super; /* first: the generator of a relayed stream */
    ag_gateway_t *gw;
    tp_request_t *r; /* NULL once the request is disposed */
    ag_agent_rt_t *rt;
    const ag_method_t *method;
    ag_version_t version;
    json_t *id; /* the caller's JSON-RPC id */
    char caller[FORWARD_ID_MAX];
    char *chain_json; /* the chain as sent upstream, for the ledger and audit */
    ag_chain_t chain;
    tp_upstream_call_t *call;
    bool counted; /* holds one of rt->inflight */
    /* the answer */
    int status;
    bool streaming;
    char *body;
    size_t body_len, body_cap;
    char content_type[96];
    tp_sse_t sse;
    /* the relay to the caller (streaming) */
    char *inflight, *pending;
    size_t pending_len, pending_cap;
    bool sending, end, done, paused;
    /* the task, as seen */
    char task_id[FORWARD_ID_MAX], context_id[FORWARD_ID_MAX], state[32];
    bool ledgered;
    uint64_t start_ns;
    json_t *audit; /* detail of the audit row written when the forward ends */
    const char *outcome;
    unsigned worker;
    ag_forward_t *prev, *next;
};

/* ---- answers ---- */

/* A JSON-RPC error for request `id`. A streaming method gets it as the one event of an SSE
 * stream: the v0.3 SDK client loses the message of a JSON answer to a streaming call. */
static void
send_error(tp_request_t *r, const json_t *id, bool sse, int code, const char *reason, const char *message, json_t *data)
{
    if (data == NULL)
        data = json_object();
    json_object_set_new(data, "reason", json_string(reason));
    json_t *e = json_pack("{s:s, s:O, s:{s:i, s:s, s:o}}", "jsonrpc", "2.0", "id", id != NULL ? id : json_null(),
                          "error", "code", code, "message", message, "data", data);
    if (!sse) {
        tp_http_send_json(r, 200, e);
        return;
    }
    char *text = e != NULL ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    char *body = tp_sprintf("data: %s\n\n", text != NULL ? text : "{}");
    free(text);
    tp_http_add_header(r, "cache-control", "no-cache");
    tp_http_send(r, 200, "text/event-stream", body, strlen(body));
    free(body);
}

void
ag_jsonrpc_error(tp_request_t *r, const json_t *id, int code, const char *reason, const char *message)
{
    send_error(r, id, false, code, reason, message, NULL);
}

void
ag_error_envelope(tp_request_t *r, int status, const char *code, const char *message)
{
    int rpc = status == 400 ? -32600 : status == 404 ? -32601 : status >= 500 ? -32603 : -32000;
    tp_http_send_json(r, status,
                      json_pack("{s:s, s:n, s:{s:i, s:s, s:{s:s}}}", "jsonrpc", "2.0", "id", "error", "code", rpc,
                                "message", message, "data", "reason", code));
}

static void
refuse(ag_gateway_t *gw, tp_request_t *r, const json_t *id, bool sse, int code, const char *reason, const char *message)
{
    tp_metric_add(gw->metrics.refusals, (const char *[]){ reason }, 1);
    tp_log_fields(TP_LOG_INFO, r->id, "a2a refused",
                  json_pack("{s:s, s:s?, s:s}", "reason", reason, "principal", r->principal, "message", message));
    send_error(r, id, sse, code, reason, message, NULL);
}

/* ---- the worker's list ---- */

static void
list_add(ag_forward_t *f)
{
    ag_forward_t **head = &f->gw->active[f->worker];
    f->next = *head;
    f->prev = NULL;
    if (*head != NULL)
        (*head)->prev = f;
    *head = f;
}

static void
list_remove(ag_forward_t *f)
{
    ag_forward_t **head = &f->gw->active[f->worker];
    if (f->prev != NULL)
        f->prev->next = f->next;
    else if (*head == f)
        *head = f->next;
    if (f->next != NULL)
        f->next->prev = f->prev;
    f->prev = f->next = NULL;
}

/* ---- ledger and audit ---- */

static void
note_task(ag_forward_t *f, const ag_task_info_t *t)
{
    if (t->task_id == NULL)
        return;
    if (f->task_id[0] == '\0')
        snprintf(f->task_id, sizeof(f->task_id), "%s", t->task_id);
    if (t->context_id != NULL && f->context_id[0] == '\0')
        snprintf(f->context_id, sizeof(f->context_id), "%s", t->context_id);
    const char *agent = f->rt->agent->name;
    int64_t now = tp_unix_ms();
    if (!f->ledgered) {
        f->ledgered = true;
        const char *state = t->state != NULL ? t->state : "submitted";
        ag_ledger_task(f->gw->writer, agent, t->task_id, f->context_id[0] != '\0' ? f->context_id : NULL, f->caller,
                       f->chain_json, state, now);
        snprintf(f->state, sizeof(f->state), "%s", state);
        tp_metric_add(f->gw->metrics.transitions, (const char *[]){ agent, state }, 1);
        return;
    }
    if (t->state != NULL && strcmp(t->state, f->state) != 0) {
        ag_ledger_transition(f->gw->writer, agent, t->task_id, t->state, NULL, now);
        snprintf(f->state, sizeof(f->state), "%s", t->state);
        tp_metric_add(f->gw->metrics.transitions, (const char *[]){ agent, t->state }, 1);
    }
}

static void
finish_audit(ag_forward_t *f)
{
    if (f->audit == NULL)
        return;
    double ms = (double)(tp_mono_ns() - f->start_ns) / 1e6;
    json_object_set_new(f->audit, "outcome", json_string(f->outcome != NULL ? f->outcome : "ok"));
    json_object_set_new(f->audit, "latency_ms", json_real(ms));
    if (f->task_id[0] != '\0')
        json_object_set_new(f->audit, "task", json_string(f->task_id));
    if (f->state[0] != '\0')
        json_object_set_new(f->audit, "state", json_string(f->state));
    char *text = json_dumps(f->audit, JSON_COMPACT);
    char action[96];
    snprintf(action, sizeof(action), "a2a.%s", f->method->name);
    tp_store_submit_audit(f->gw->writer, f->caller, action, f->rt->agent->name, text);
    free(text);
    json_decref(f->audit);
    f->audit = NULL;
    tp_metric_add(
        f->gw->metrics.messages,
        (const char *[]){ f->caller, f->rt->agent->name, f->method->name, f->outcome != NULL ? f->outcome : "ok" }, 1);
    tp_metric_observe(f->gw->metrics.upstream_s, (const char *[]){ f->rt->agent->name, f->method->name }, ms / 1000.0);
}

/* ---- the end of a forward ---- */

static void
release_slot(ag_forward_t *f)
{
    if (f->counted) {
        atomic_fetch_sub(&f->rt->inflight, 1);
        f->counted = false;
    }
}

static void
on_forward_dispose(void *p)
{
    ag_forward_t *f = p;
    if (f->call != NULL) {
        tp_upstream_cancel(f->call);
        f->call = NULL;
        if (f->outcome == NULL)
            f->outcome = "caller_gone";
    }
    if (f->streaming)
        tp_metric_add(f->gw->metrics.streams, (const char *[]){ f->rt->agent->name }, -1);
    finish_audit(f);
    release_slot(f);
    list_remove(f);
    tp_sse_dispose(&f->sse);
    free(f->body);
    free(f->inflight);
    free(f->pending);
    free(f->chain_json);
    json_decref(f->id);
    f->r = NULL;
}

/* ---- relaying a stream ---- */

static void relay_flush(ag_forward_t *f);

static void
on_relay_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    ag_forward_t *f = (ag_forward_t *)g;
    free(f->inflight);
    f->inflight = NULL;
    f->sending = false;
    relay_flush(f);
    if (f->paused && f->pending_len < STREAM_PAUSE_BYTES && f->call != NULL) {
        f->paused = false;
        tp_upstream_resume(f->call);
    }
}

static void
on_relay_stop(h2o_generator_t *g, h2o_req_t *req)
{
    ag_forward_t *f = (ag_forward_t *)g;
    f->done = true;
    if (f->call != NULL) { /* the caller left: the task goes on at the agent, the relay does not */
        tp_upstream_cancel(f->call);
        f->call = NULL;
        f->outcome = "caller_gone";
    }
}

static void
relay_flush(ag_forward_t *f)
{
    if (f->sending || f->done || f->r == NULL)
        return;
    if (f->pending_len == 0 && !f->end)
        return;
    h2o_iovec_t buf = h2o_iovec_init(f->pending, f->pending_len);
    f->inflight = f->pending;
    f->pending = NULL;
    f->pending_len = f->pending_cap = 0;
    f->sending = true;
    if (f->end) {
        f->done = true;
        h2o_send(f->r->req, &buf, buf.len > 0 ? 1 : 0, H2O_SEND_STATE_FINAL);
    } else {
        h2o_send(f->r->req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
    }
}

static void
relay_write(ag_forward_t *f, const char *bytes, size_t len)
{
    if (f->done)
        return;
    if (f->pending_len + len > f->pending_cap) {
        size_t cap = f->pending_cap > 0 ? f->pending_cap : 8192;
        while (cap < f->pending_len + len)
            cap *= 2;
        f->pending = tp_realloc(f->pending, cap);
        f->pending_cap = cap;
    }
    memcpy(f->pending + f->pending_len, bytes, len);
    f->pending_len += len;
}

static void
relay_event(ag_forward_t *f, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    if (text == NULL)
        return;
    relay_write(f, "data: ", 6);
    relay_write(f, text, strlen(text));
    relay_write(f, "\n\n", 2);
    free(text);
}

static int
on_stream_event(void *data, const char *event, size_t len)
{
    ag_forward_t *f = data;
    json_t *msg = json_loadb(event, len, 0, NULL);
    if (msg != NULL) {
        ag_task_info_t t;
        ag_task_info(msg, &t);
        note_task(f, &t);
        json_decref(msg);
    }
    return 0;
}

/* ---- the upstream call ---- */

static int
on_head(tp_upstream_call_t *call, int status, const h2o_header_t *headers, size_t n)
{
    ag_forward_t *f = tp_upstream_call_data(call);
    f->status = status;
    for (size_t i = 0; i < n; i++) {
        if (headers[i].name == &H2O_TOKEN_CONTENT_TYPE->buf)
            snprintf(f->content_type, sizeof(f->content_type), "%.*s", (int)headers[i].value.len,
                     headers[i].value.base);
    }
    if (status == 200 && strncasecmp(f->content_type, "text/event-stream", 17) == 0 && f->r != NULL) {
        f->streaming = true;
        tp_metric_add(f->gw->metrics.streams, (const char *[]){ f->rt->agent->name }, 1);
        tp_sse_init(&f->sse, MAX_EVENT_BYTES);
        f->super.proceed = on_relay_proceed;
        f->super.stop = on_relay_stop;
        f->r->req->res.status = 200;
        f->r->req->res.reason = "OK";
        tp_http_add_header(f->r, "content-type", "text/event-stream");
        tp_http_add_header(f->r, "cache-control", "no-cache");
        h2o_start_response(f->r->req, &f->super);
    }
    return 0;
}

static void
on_body(tp_upstream_call_t *call, const char *buf, size_t len)
{
    ag_forward_t *f = tp_upstream_call_data(call);
    if (f->streaming) {
        relay_write(f, buf, len);
        if (tp_sse_feed(&f->sse, buf, len, on_stream_event, f) < 0)
            tp_warn("a2a stream: an event over the size limit was not read for the ledger");
        relay_flush(f);
        if (f->pending_len >= STREAM_PAUSE_BYTES && !f->paused) {
            f->paused = true;
            tp_upstream_pause(call);
        }
        return;
    }
    if (f->body_len + len > MAX_ANSWER_BYTES) {
        f->outcome = "answer_too_large";
        tp_upstream_cancel(call);
        f->call = NULL;
        release_slot(f);
        if (f->r != NULL)
            ag_jsonrpc_error(f->r, f->id, A2A_INVALID_AGENT_RESPONSE, "answer_too_large",
                             "the agent's answer is larger than the gateway relays");
        return;
    }
    if (f->body_len + len > f->body_cap) {
        f->body_cap = (f->body_len + len) * 2;
        f->body = tp_realloc(f->body, f->body_cap);
    }
    memcpy(f->body + f->body_len, buf, len);
    f->body_len += len;
}

static void
on_done(tp_upstream_call_t *call, const char *error)
{
    ag_forward_t *f = tp_upstream_call_data(call);
    f->call = NULL;
    release_slot(f);
    if (f->streaming) {
        if (error != NULL && f->r != NULL && !f->done) {
            json_t *e = json_pack("{s:s, s:O, s:{s:i, s:s, s:{s:s}}}", "jsonrpc", "2.0", "id", f->id, "error", "code",
                                  AG_ERR_UPSTREAM, "message", error, "data", "reason", "upstream");
            relay_event(f, e);
            json_decref(e);
            f->outcome = "upstream_error";
        }
        f->end = true;
        relay_flush(f);
        return;
    }
    if (f->r == NULL)
        return;
    if (error != NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "agent \"%s\" is unavailable: %s", f->rt->agent->name, error);
        f->outcome = "upstream_error";
        ag_jsonrpc_error(f->r, f->id, AG_ERR_UPSTREAM, "upstream", msg);
        return;
    }
    json_t *answer = json_loadb(f->body != NULL ? f->body : "", f->body_len, 0, NULL);
    if (answer != NULL) {
        ag_task_info_t t;
        ag_task_info(answer, &t);
        note_task(f, &t);
        if (json_object_get(answer, "error") != NULL)
            f->outcome = "error";
        if (strcmp(f->method->family, "card") == 0 && json_is_object(json_object_get(answer, "result"))) {
            /* The extended card names the agent's endpoints too: they become the gateway's. */
            const char *url = ag_agent_public_url(f->gw, f->r, f->rt->agent->name);
            json_object_set_new(answer, "result",
                                ag_card_rewrite(json_object_get(answer, "result"), url, f->rt->agent));
            tp_http_send_json(f->r, f->status, answer);
            return;
        }
        json_decref(answer);
    }
    tp_http_send(f->r, f->status, f->content_type[0] != '\0' ? f->content_type : "application/json",
                 f->body != NULL ? f->body : "", f->body_len);
}

static const tp_upstream_handlers_t handlers = { .on_head = on_head, .on_body = on_body, .on_done = on_done };

/* ---- cancels sent by the gateway itself ---- */

static void
on_cancel_done(tp_upstream_call_t *call, const char *error)
{
    char *what = tp_upstream_call_data(call);
    if (error != NULL)
        tp_log_fields(TP_LOG_WARN, NULL, "a2a cancel not delivered",
                      json_pack("{s:s, s:s}", "task", what, "error", error));
    free(what);
}

static void
send_cancel(ag_gateway_t *gw, ag_agent_rt_t *rt, tp_worker_t *w, ag_version_t v, const char *task_id)
{
    json_t *req = ag_cancel_request(v, task_id);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    tp_upstream_header_t headers[2] = {
        { h2o_iovec_init(H2O_STRLIT("content-type")), h2o_iovec_init(H2O_STRLIT("application/json")) },
        { h2o_iovec_init(H2O_STRLIT("a2a-version")), h2o_iovec_init(H2O_STRLIT("1.0")) },
    };
    tp_upstream_request_t ur = {
        .method = "POST",
        .path = h2o_iovec_init(rt->path, strlen(rt->path)),
        .headers = headers,
        .num_headers = v == AG_V10 ? 2 : 1,
        .body = h2o_iovec_init(body, strlen(body)),
    };
    static const tp_upstream_handlers_t h = { .on_done = on_cancel_done };
    tp_upstream_call(rt->upstream, tp_worker_h2o(w), &ur, &h, tp_strdup(task_id));
    free(body);
}

/* ---- kills ---- */

static bool
covered(const ag_kill_list_t *k, const char *id, const char **reason)
{
    pol_principal_t p = { .id = (char *)id };
    int64_t now = tp_unix_ms();
    for (size_t i = 0; i < k->n; i++) {
        if (pol_kill_covers(&k->kills[i], &p, now)) {
            *reason = k->kills[i].reason;
            return true;
        }
    }
    return false;
}

static bool
forward_covered(const ag_forward_t *f, const ag_kill_list_t *k, const char **reason)
{
    if (covered(k, f->caller, reason) || covered(k, f->rt->agent->name, reason))
        return true;
    for (size_t i = 0; i < f->chain.n; i++) {
        if (covered(k, f->chain.hops[i].caller, reason) || covered(k, f->chain.hops[i].target, reason))
            return true;
    }
    return false;
}

static void
kill_forward(ag_forward_t *f, tp_worker_t *w, const char *reason)
{
    char why[300];
    snprintf(why, sizeof(why), "stopped by an operator's kill switch: %s", reason != NULL ? reason : "no reason given");
    if (f->call != NULL) {
        tp_upstream_cancel(f->call);
        f->call = NULL;
    }
    release_slot(f);
    f->outcome = "killed";
    if (f->task_id[0] != '\0') {
        send_cancel(f->gw, f->rt, w, f->version, f->task_id);
        ag_ledger_transition(f->gw->writer, f->rt->agent->name, f->task_id, "canceled", why, tp_unix_ms());
        snprintf(f->state, sizeof(f->state), "canceled");
    }
    tp_store_submit_audit(f->gw->writer, "agent-gw", "a2a.kill", f->rt->agent->name,
                          f->task_id[0] != '\0' ? f->task_id : NULL);
    if (f->r == NULL)
        return;
    if (f->streaming) {
        if (!f->done) {
            json_t *e = ag_canceled_event(f->version, f->id, f->task_id[0] != '\0' ? f->task_id : "",
                                          f->context_id[0] != '\0' ? f->context_id : NULL, why);
            relay_event(f, e);
            json_decref(e);
            f->end = true;
            relay_flush(f);
        }
    } else {
        ag_jsonrpc_error(f->r, f->id, AG_ERR_SUSPENDED, "killed", why);
    }
}

void
ag_forward_kill(ag_gateway_t *gw, tp_worker_t *w, const ag_kill_list_t *kills)
{
    unsigned id = tp_worker_id(w);
    for (ag_forward_t *f = gw->active[id], *next; f != NULL; f = next) {
        next = f->next;
        const char *reason = NULL;
        if (f->outcome == NULL && forward_covered(f, kills, &reason))
            kill_forward(f, w, reason);
    }
}

/* ---- the checks ---- */

static bool
killed(const pol_snapshot_t *snap, const char *id, const char **reason)
{
    pol_principal_t p = { .id = (char *)id };
    int64_t now = tp_unix_ms();
    for (size_t i = 0; i < snap->num_kills; i++) {
        if (pol_kill_covers(&snap->kills[i], &p, now)) {
            *reason = snap->kills[i].reason;
            return true;
        }
    }
    return false;
}

typedef struct push_check {
    const ag_pushurl_policy_t *policy;
    char why[256];
} push_check_t;

static int
check_push(const char *url, void *data)
{
    push_check_t *pc = data;
    return ag_pushurl_check(url, pc->policy, pc->why, sizeof(pc->why)) != 0 ? -1 : 0;
}

/* The chain this request continues, or an empty one; false after refusing. */
static bool
read_chain(ag_gateway_t *gw, tp_request_t *r, const json_t *id, bool sse, const char *caller, ag_chain_t *chain)
{
    memset(chain, 0, sizeof(*chain));
    h2o_iovec_t h = tp_http_header(r, AG_CHAIN_HEADER);
    if (h.base == NULL)
        return true;
    const char *why = NULL;
    if (ag_chain_verify(gw->chain_key, gw->chain_key_len, h.base, h.len, tp_unix_ms(), CHAIN_MAX_AGE_MS, chain, &why) !=
        0) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the delegation chain header is not valid (%s): pass back the %s header exactly "
                 "as the gateway sent it",
                 why != NULL ? why : "invalid", AG_CHAIN_HEADER);
        refuse(gw, r, id, sse, AG_ERR_CHAIN, "chain", msg);
        return false;
    }
    const char *last = ag_chain_last_target(chain);
    if (last == NULL || strcmp(last, caller) != 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the delegation chain was issued to agent \"%s\", not to the caller \"%s\"",
                 last != NULL ? last : "", caller);
        refuse(gw, r, id, sse, AG_ERR_CHAIN, "chain", msg);
        return false;
    }
    return true;
}

static bool
check_origin(ag_gateway_t *gw, tp_request_t *r, const json_t *id, bool sse, const pol_snapshot_t *snap,
             const char *origin, const char *target, const char *family)
{
    pol_principal_t temp = { .id = (char *)origin, .kind = POL_KIND_USER, .enabled = true };
    const pol_principal_t *p = pol_snapshot_principal(snap, origin);
    pol_request_t preq = {
        .principal = p != NULL ? p : &temp,
        .plane = "agent",
        .resource = target,
        .action = family,
        .request_size = 0,
        .now_ms = tp_unix_ms(),
    };
    if (pol_evaluate(snap->rules, &preq, snap->default_allow).allow)
        return true;
    char msg[300];
    snprintf(msg, sizeof(msg), "\"%s\", who started this delegation chain, may not %s agent \"%s\"", origin,
             strcmp(family, "message") == 0 ? "message" : family, target);
    refuse(gw, r, id, sse, AG_ERR_FORBIDDEN, "origin_policy", msg);
    return false;
}

static bool
check_limits(ag_gateway_t *gw, tp_request_t *r, const json_t *id, bool sse, const json_t *params)
{
    size_t parts;
    int64_t largest;
    char msg[200];
    if (!ag_message_measure(params, &parts, &largest))
        return true;
    if ((int64_t)parts > gw->cfg->max_parts) {
        snprintf(msg, sizeof(msg), "the message has %zu parts; at most %" PRId64 " are accepted", parts,
                 gw->cfg->max_parts);
        refuse(gw, r, id, sse, AG_ERR_LIMIT, "parts", msg);
        return false;
    }
    if (largest > gw->cfg->max_file_bytes) {
        snprintf(msg, sizeof(msg), "a file part holds %" PRId64 " bytes; at most %" PRId64 " are accepted", largest,
                 gw->cfg->max_file_bytes);
        refuse(gw, r, id, sse, AG_ERR_LIMIT, "file_size", msg);
        return false;
    }
    return true;
}

static json_t *
content_digest(const tp_request_t *r, bool raw, const json_t *params)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)r->req->entity.base, r->req->entity.len, md);
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    json_t *d = json_pack("{s:s, s:I}", "sha256", hex, "bytes", (json_int_t)r->req->entity.len);
    if (raw)
        json_object_set(d, "params", (json_t *)params);
    return d;
}

/* ---- the route ---- */

static int
on_agent_post(tp_request_t *r, void *data)
{
    ag_gateway_t *gw = data;
    ag_world_t *world = ag_world(gw);
    h2o_iovec_t path = r->req->path_normalized;
    const char *name = path.base + 8; /* after "/agents/" */
    size_t nlen = path.len - 8;
    if (nlen > 0 && name[nlen - 1] == '/') /* /agents/NAME/ too: SDK clients resolve URLs against it */
        nlen--;
    char agent_name[FORWARD_ID_MAX];
    if (nlen == 0 || nlen >= sizeof(agent_name) || memchr(name, '/', nlen) != NULL) {
        tp_http_error(r, 404, "not_found", "no such agent endpoint");
        return 0;
    }
    memcpy(agent_name, name, nlen);
    agent_name[nlen] = '\0';
    ag_agent_rt_t *rt = ag_world_agent(world, agent_name);
    if (rt == NULL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "no agent named \"%s\" is registered", agent_name);
        tp_http_error(r, 404, "unknown_agent", msg);
        return 0;
    }
    const pol_snapshot_t *snap = tp_daemon_request_state_hold(gw->daemon, r);
    pol_verdict_t *v = h2o_mem_alloc_pool(&r->req->pool, sizeof(*v));
    memset(v, 0, sizeof(*v));
    if (!pol_gate_authenticate(gw->gate, r, v)) {
        pol_gate_refuse(r, v);
        pol_verdict_clear(v);
        return 0;
    }
    char caller[FORWARD_ID_MAX];
    snprintf(caller, sizeof(caller), "%s", v->identity.principal->id);
    r->principal = h2o_mem_alloc_pool(&r->req->pool, strlen(caller) + 1);
    strcpy((char *)r->principal, caller);

    json_error_t jerr;
    json_t *msg = json_loadb(r->req->entity.base != NULL ? r->req->entity.base : "", r->req->entity.len, 0, &jerr);
    const json_t *id = json_object_get(msg, "id");
    const char *method_name = json_string_value(json_object_get(msg, "method"));
    const json_t *params = json_object_get(msg, "params");
    int done = 1;
    if (msg == NULL) {
        char m[200];
        snprintf(m, sizeof(m), "Parse error: %s", jerr.text);
        ag_jsonrpc_error(r, NULL, -32700, "parse", m);
        goto out;
    }
    if (!json_is_object(msg) || method_name == NULL || (id != NULL && !json_is_string(id) && !json_is_integer(id))) {
        ag_jsonrpc_error(r, id, -32600, "invalid_request", "Invalid Request: expected a JSON-RPC 2.0 request");
        goto out;
    }
    h2o_iovec_t vh = tp_http_header(r, "a2a-version");
    ag_version_t version;
    if (!ag_version_parse(vh.base, vh.len, &version)) {
        ag_jsonrpc_error(r, id, A2A_VERSION_NOT_SUPPORTED, "version", "A2A-Version must be 0.3 or 1.0");
        goto out;
    }
    const ag_method_t *method = ag_method_find(method_name, version);
    if (method == NULL) {
        char m[200];
        snprintf(m, sizeof(m), "Method not found: %.80s is not an A2A %s method", method_name,
                 ag_version_name(version));
        ag_jsonrpc_error(r, id, -32601, "method", m);
        goto out;
    }
    bool sse = method->streams;
    if (strcmp(ag_version_name(version), rt->agent->version) != 0) {
        char m[200];
        snprintf(m, sizeof(m), "agent \"%s\" speaks A2A %s; send A2A-Version: %s", agent_name, rt->agent->version,
                 rt->agent->version);
        send_error(r, id, sse, A2A_VERSION_NOT_SUPPORTED, "version", m, NULL);
        goto out;
    }
    ag_chain_t chain;
    if (!read_chain(gw, r, id, sse, caller, &chain))
        goto out;
    if (chain.n > 0 && ag_chain_contains_agent(&chain, agent_name)) {
        char m[300];
        snprintf(m, sizeof(m), "delegation loop: agent \"%s\" is already on this chain (started by \"%s\")", agent_name,
                 ag_chain_origin(&chain));
        refuse(gw, r, id, sse, AG_ERR_LOOP, "loop", m);
        goto out;
    }
    if ((int)chain.n + 1 > gw->cfg->max_depth) {
        char m[200];
        snprintf(m, sizeof(m), "delegation too deep: this call would be hop %zu; at most %d are allowed", chain.n + 1,
                 gw->cfg->max_depth);
        refuse(gw, r, id, sse, AG_ERR_DEPTH, "depth", m);
        goto out;
    }
    const char *kill_reason = NULL;
    bool target_killed = killed(snap, agent_name, &kill_reason);
    for (size_t i = 0; i < chain.n && !target_killed; i++)
        target_killed = killed(snap, chain.hops[i].caller, &kill_reason);
    if (target_killed) {
        char m[300];
        snprintf(m, sizeof(m), "suspended: a kill switch stops this conversation (%s)",
                 kill_reason != NULL ? kill_reason : "no reason given");
        refuse(gw, r, id, sse, AG_ERR_SUSPENDED, "killed", m);
        goto out;
    }
    if (!pol_gate_authorize(gw->gate, r, agent_name, method->family, v)) {
        if (v->outcome == POL_OUTCOME_RATE_LIMITED || v->outcome == POL_OUTCOME_OVER_BUDGET) {
            tp_metric_add(gw->metrics.refusals, (const char *[]){ "rate_limit" }, 1);
            send_error(r, id, sse, AG_ERR_RATE_LIMITED, "rate_limit", v->message,
                       json_pack("{s:f}", "retry_after_s", v->retry_after_s));
        } else {
            refuse(gw, r, id, sse, AG_ERR_FORBIDDEN, "policy", v->message);
        }
        goto out;
    }
    if (chain.n > 0 && !check_origin(gw, r, id, sse, snap, ag_chain_origin(&chain), agent_name, method->family))
        goto out;
    if (!check_limits(gw, r, id, sse, params))
        goto out;
    ag_pushurl_policy_t pp = {
        .allow_http = gw->cfg->push_allow_http,
        .allow_private = gw->cfg->push_allow_private,
        .allowed_hosts = (const char *const *)gw->cfg->push_allowed_hosts,
        .num_allowed_hosts = gw->cfg->push_allowed_host_count,
    };
    push_check_t pc = { .policy = &pp };
    if (ag_push_urls(params, check_push, &pc) != 0) {
        refuse(gw, r, id, sse, AG_ERR_PUSH_URL, "push_url", pc.why);
        goto out;
    }
    int cap = rt->agent->cfg != NULL ? rt->agent->cfg->max_concurrent_tasks : 0;
    if (cap > 0 && atomic_fetch_add(&rt->inflight, 1) >= cap) {
        atomic_fetch_sub(&rt->inflight, 1);
        char m[200];
        snprintf(m, sizeof(m), "agent \"%s\" is handling %d requests already, its limit; retry later", agent_name, cap);
        refuse(gw, r, id, sse, AG_ERR_LIMIT, "concurrency", m);
        goto out;
    }
    if (cap <= 0)
        atomic_fetch_add(&rt->inflight, 1);

    /* Forward. */
    ag_forward_t *f = h2o_mem_alloc_shared(&r->req->pool, sizeof(*f), on_forward_dispose);
    memset(f, 0, sizeof(*f));
    f->gw = gw;
    f->r = r;
    f->rt = rt;
    f->counted = true;
    f->method = method;
    f->version = version;
    f->id = json_incref((json_t *)(id != NULL ? id : json_null()));
    snprintf(f->caller, sizeof(f->caller), "%s", caller);
    f->start_ns = r->start_ns;
    f->worker = tp_worker_id(r->worker);
    const char *task = ag_request_task_id(params);
    if (task != NULL) {
        snprintf(f->task_id, sizeof(f->task_id), "%s", task);
        f->ledgered = true; /* a known task: only its transitions are new */
    }
    f->chain = chain;
    ag_chain_append(&f->chain, caller, agent_name, task != NULL ? task : "", tp_unix_ms());
    char *token = ag_chain_sign(gw->chain_key, gw->chain_key_len, &f->chain);
    json_t *cj = ag_chain_to_json(&f->chain);
    f->chain_json = json_dumps(cj, JSON_COMPACT);
    f->audit = json_pack("{s:o, s:o}", "chain", cj, "content", content_digest(r, gw->cfg->audit_content, params));
    list_add(f);

    h2o_iovec_t accept = tp_http_header(r, "accept");
    tp_upstream_header_t headers[4];
    size_t nh = 0;
    headers[nh++] = (tp_upstream_header_t){ h2o_iovec_init(H2O_STRLIT("content-type")),
                                            h2o_iovec_init(H2O_STRLIT("application/json")) };
    headers[nh++] = (tp_upstream_header_t){ h2o_iovec_init(H2O_STRLIT("accept")),
                                            accept.base != NULL
                                                ? accept
                                                : h2o_iovec_init(H2O_STRLIT("application/json, text/event-stream")) };
    headers[nh++] =
        (tp_upstream_header_t){ h2o_iovec_init(H2O_STRLIT(AG_CHAIN_HEADER)), h2o_iovec_init(token, strlen(token)) };
    if (version == AG_V10)
        headers[nh++] =
            (tp_upstream_header_t){ h2o_iovec_init(H2O_STRLIT("a2a-version")), h2o_iovec_init(H2O_STRLIT("1.0")) };
    tp_upstream_request_t ur = {
        .method = "POST",
        .path = h2o_iovec_init(rt->path, strlen(rt->path)),
        .headers = headers,
        .num_headers = nh,
        .body = r->req->entity,
    };
    f->call = tp_upstream_call(rt->upstream, tp_worker_h2o(r->worker), &ur, &handlers, f);
    free(token);
    done = 0;
out:
    if (done)
        pol_verdict_clear(v);
    json_decref(msg);
    return 0;
}

void
ag_forward_register(ag_gateway_t *gw)
{
    tp_server_route(tp_daemon_server(gw->daemon), "POST", "/agents", true, on_agent_post, gw);
}
