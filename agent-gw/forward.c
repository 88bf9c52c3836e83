/*
 * forward.c — POST /agents/<name>: the checks, then the call to the agent, then its answer
 * (one JSON body, or an SSE stream relayed with back pressure) back to the caller, with the task
 * ledger kept from what passes by.
 *
 * The checks, in order: the agent exists; authentication (401; a killed caller 403); the JSON-RPC
 * message and the A2A version (the A2A-Version header, absent = 0.3, must be the agent's); the
 * task the request names; the delegation chain (x-triplane-chain: a gateway-signed token the
 * calling agent passes back; forged → refused; the target already on it → loop; too long →
 * depth); kill switches on the target and everyone on the chain (by id and team); policy for the
 * caller and for the principal that started the chain (a delegated call never exceeds its
 * origin's rights), with the caller's rate limits; task ownership (only the task's creator and
 * the origin of its chain may name it); message limits (size, parts, inline file bytes) and the
 * agent's concurrency cap; push-notification URLs (SSRF: the URL as written, then every address
 * its host resolves to). Refusals are JSON-RPC errors with data.reason naming the check.
 *
 * A forward is on its worker's list from the moment it is made until it can no longer be
 * killed: its upstream call ended (or was cancelled) and its answer is with h2o. A kill ends what
 * is on the list: the caller gets a final canceled status event (or a suspended error), the agent
 * gets a cancel for the task.
 */
#include "gateway.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netdb.h>
#include <openssl/sha.h>
#include <uv.h>

#include "chain.h"
#include "clock.h"
#include "http.h"
#include "ledger.h"
#include "log.h"
#include "mem.h"
#include "pushurl.h"
#include "snapshot.h"
#include "sse.h"
#include "store.h"

/* How long after the gateway forwarded a call the agent that got it may still present its chain
 * to delegate. An hour covers any exchange within one call; work that goes on for longer gets a
 * fresh chain with each later call to the agent, and a background task that delegates more than
 * an hour after the call that started it is refused (reason chain, "expired"): a chain is a
 * bearer token for the origin's rights, and a day was too long to leave one usable. */
#define CHAIN_MAX_AGE_MS (3600LL * 1000)
/* A non-streamed answer larger than this is refused (the gateway holds it whole to read it). */
#define MAX_ANSWER_BYTES (32u * 1024 * 1024)
/* The largest SSE event the gateway reads for the ledger: the 1.x SDK client refuses larger
 * events, so no agent can usefully send one. A larger event is still relayed, unread. */
#define MAX_EVENT_BYTES    (4u * 1024 * 1024)
#define STREAM_PAUSE_BYTES (1u * 1024 * 1024)    /* bytes queued for a slow caller before the agent is paused */
#define ID_BUF             (AG_CHAIN_ID_MAX + 1) /* an id (principal, agent, task) and its NUL */
#define PUSH_HOSTS_MAX     4                     /* distinct push-URL host names one request may name */

typedef struct ag_resolve ag_resolve_t;

struct ag_forward {
    h2o_generator_t super; /* first: the generator of a relayed stream */
    ag_gateway_t *gw;
    tp_request_t *r; /* NULL once the request is disposed */
    ag_agent_rt_t *rt;
    const ag_method_t *method;
    ag_version_t version;
    json_t *id; /* the caller's JSON-RPC id */
    char caller[ID_BUF];
    const char *caller_team; /* as the caller authenticated (pool memory); NULL: none */
    char *chain_json;        /* the chain as sent upstream, for the ledger and audit */
    ag_chain_t chain;        /* the same, with this call's hop */
    char *token;             /* the signed chain, until the call is made */
    tp_upstream_call_t *call;
    ag_resolve_t *resolve; /* the push-URL hosts being resolved, or NULL */
    bool counted;          /* holds one of rt->inflight */
    bool listed;           /* on its worker's list: a kill can still end it */
    bool answered;         /* the caller has its whole answer, or the end of its stream */
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
    char task_id[ID_BUF], context_id[ID_BUF], state[32];
    bool ledgered;    /* the ledger has the task */
    bool owner_noted; /* the owners index has it */
    uint64_t start_ns;
    json_t *audit; /* detail of the audit row written when the forward ends */
    const char *outcome;
    unsigned worker;
    ag_forward_t *prev, *next;
};

/* A cancel the gateway sent to an agent (a kill), until the agent answers it. */
typedef struct ag_cancel {
    tp_upstream_call_t *call;
    ag_worker_t *owner;
    struct ag_cancel *prev, *next;
    char task[]; /* for the log */
} ag_cancel_t;

/* The host names of a request's push URLs, resolved one after the other on the worker's loop
 * before the request is forwarded. malloc'd: a resolution cannot be taken back once libuv's
 * threads run it, so this outlives the forward when the caller leaves first. */
struct ag_resolve {
    uv_getaddrinfo_t req;
    ag_forward_t *f; /* NULL once the forward is gone */
    size_t n, at;    /* hosts, and the one being resolved */
    char hosts[PUSH_HOSTS_MAX][AG_PUSHURL_HOST_MAX + 1];
};

/* ---- answers ---- */

/* A JSON-RPC error for request `id` with HTTP status 200. A streaming method gets it as the one
 * event of an SSE stream: the v0.3 SDK client loses the message of a JSON answer to a streaming
 * call. data (stolen; NULL: a new object) gets data.reason. */
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

/* The plane's envelope with HTTP status `status` for request id (NULL: unknown). */
static void
envelope(tp_request_t *r, int status, const json_t *id, const char *code, const char *message)
{
    int rpc = status == 400 ? -32600 : status == 404 ? -32601 : status >= 500 ? -32603 : -32000;
    tp_http_send_json(r, status,
                      json_pack("{s:s, s:O, s:{s:i, s:s, s:{s:s}}}", "jsonrpc", "2.0", "id",
                                id != NULL ? id : json_null(), "error", "code", rpc, "message", message, "data",
                                "reason", code));
}

void
ag_error_envelope(tp_request_t *r, int status, const char *code, const char *message)
{
    envelope(r, status, NULL, code, message);
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
    ag_forward_t **head = &f->gw->w[f->worker].active;
    f->next = *head;
    f->prev = NULL;
    if (*head != NULL)
        (*head)->prev = f;
    *head = f;
    f->listed = true;
}

/* Takes f off the list: nothing of it is left for a kill to end. */
static void
list_remove(ag_forward_t *f)
{
    if (!f->listed)
        return;
    ag_forward_t **head = &f->gw->w[f->worker].active;
    if (f->prev != NULL)
        f->prev->next = f->next;
    else
        *head = f->next;
    if (f->next != NULL)
        f->next->prev = f->prev;
    f->prev = f->next = NULL;
    f->listed = false;
}

/* ---- ledger and audit ---- */

static void
note_task(ag_forward_t *f, const ag_task_info_t *t)
{
    if (t->task_id == NULL)
        return;
    if (strlen(t->task_id) >= sizeof(f->task_id)) {
        /* Never recorded cut short: such a task could not be named through the gateway anyway. */
        tp_log_fields(TP_LOG_WARN, NULL, "a2a task id too long to record",
                      json_pack("{s:s, s:I}", "agent", f->rt->agent->name, "bytes", (json_int_t)strlen(t->task_id)));
        return;
    }
    const char *agent = f->rt->agent->name;
    if (!f->owner_noted || strcmp(t->task_id, f->task_id) != 0) {
        /* Before the answer or event that names the task is relayed, so that the caller cannot ask
         * about it before the gateway knows it is theirs. A task somebody made earlier keeps its
         * owner (the first record stands); only its owner's calls get here anyway. */
        ag_owners_put(f->gw->owners, agent, t->task_id, f->caller, ag_chain_origin(&f->chain));
        f->owner_noted = true;
    }
    if (f->task_id[0] == '\0')
        snprintf(f->task_id, sizeof(f->task_id), "%s", t->task_id);
    if (t->context_id != NULL && f->context_id[0] == '\0' && strlen(t->context_id) < sizeof(f->context_id))
        snprintf(f->context_id, sizeof(f->context_id), "%s", t->context_id);
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
    tp_store_submit_audit(f->gw->writer, f->caller, action, f->rt->agent->name, text != NULL ? text : "{}");
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

/* Cancels the upstream call, if any: nothing of the forward is left at the agent's end. */
static void
drop_call(ag_forward_t *f)
{
    if (f->call != NULL) {
        tp_upstream_cancel(f->call);
        f->call = NULL;
    }
    release_slot(f);
    list_remove(f);
}

/* The caller's whole answer is a JSON-RPC error (an SSE event for a streaming method). */
static void
answer_error(ag_forward_t *f, int code, const char *reason, const char *message)
{
    if (f->r == NULL || f->answered)
        return;
    f->answered = true;
    send_error(f->r, f->id, f->method->streams, code, reason, message, NULL);
}

static void
on_forward_dispose(void *p)
{
    ag_forward_t *f = p;
    if (f->call != NULL && f->outcome == NULL)
        f->outcome = "caller_gone";
    drop_call(f);
    if (f->resolve != NULL) {
        f->resolve->f = NULL; /* it frees itself when the resolver is done */
        f->resolve = NULL;
    }
    if (f->streaming)
        tp_metric_add(f->gw->metrics.streams, (const char *[]){ f->rt->agent->name }, -1);
    finish_audit(f);
    tp_sse_dispose(&f->sse);
    free(f->body);
    free(f->inflight);
    free(f->pending);
    free(f->chain_json);
    free(f->token);
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
        f->outcome = "caller_gone";
        drop_call(f);
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

/* Queues one event (msg, borrowed) and the end of the stream: the caller's last event. */
static void
relay_last_event(ag_forward_t *f, json_t *msg)
{
    char *text = msg != NULL ? json_dumps(msg, JSON_COMPACT) : NULL;
    if (text != NULL) {
        relay_write(f, "data: ", 6);
        relay_write(f, text, strlen(text));
        relay_write(f, "\n\n", 2);
        free(text);
    }
    f->end = true;
    f->answered = true;
    relay_flush(f);
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
        drop_call(f);
        answer_error(f, A2A_INVALID_AGENT_RESPONSE, "answer_too_large",
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

static bool
keep_callers_task(const char *task_id, void *data)
{
    ag_forward_t *f = data;
    return ag_owners_check(f->gw->owners, f->rt->agent->name, task_id, f->caller) == AG_OWNER_YES;
}

/* Sends the agent's whole JSON answer, read for the ledger, and rewritten where the gateway must:
 * the extended card's endpoints become the gateway's; a task list keeps the caller's tasks. */
static void
answer_json(ag_forward_t *f)
{
    json_t *answer = json_loadb(f->body != NULL ? f->body : "", f->body_len, 0, NULL);
    bool rewrite = false;
    if (answer != NULL) {
        ag_task_info_t t;
        ag_task_info(answer, &t);
        note_task(f, &t);
        if (json_object_get(answer, "error") != NULL)
            f->outcome = "error";
        if (strcmp(f->method->family, "card") == 0 && json_is_object(json_object_get(answer, "result"))) {
            const char *url = ag_agent_public_url(f->gw, f->r, f->rt->agent->name);
            json_object_set_new(answer, "result",
                                ag_card_rewrite(json_object_get(answer, "result"), url, f->rt->agent));
            rewrite = true;
        }
        if (f->method->lists_tasks) {
            ag_filter_task_list(answer, keep_callers_task, f);
            rewrite = true;
        }
    }
    if (answer == NULL && f->method->lists_tasks) { /* a list the gateway cannot read: none of it passes */
        answer_error(f, A2A_INVALID_AGENT_RESPONSE, "upstream", "the agent's task list could not be read");
        return;
    }
    f->answered = true;
    if (rewrite) {
        tp_http_send_json(f->r, f->status, answer);
        return;
    }
    json_decref(answer);
    tp_http_send(f->r, f->status, f->content_type[0] != '\0' ? f->content_type : "application/json",
                 f->body != NULL ? f->body : "", f->body_len);
}

static void
on_done(tp_upstream_call_t *call, const char *error)
{
    ag_forward_t *f = tp_upstream_call_data(call);
    f->call = NULL;
    release_slot(f);
    list_remove(f); /* the agent is done: a kill has nothing left to end */
    if (f->streaming) {
        json_t *e = NULL;
        if (error != NULL && f->r != NULL && !f->done) {
            e = json_pack("{s:s, s:O, s:{s:i, s:s, s:{s:s}}}", "jsonrpc", "2.0", "id", f->id, "error", "code",
                          AG_ERR_UPSTREAM, "message", error, "data", "reason", "upstream");
            f->outcome = "upstream_error";
        }
        relay_last_event(f, e);
        json_decref(e);
        return;
    }
    if (f->r == NULL || f->answered)
        return;
    if (error != NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "agent \"%s\" is unavailable: %s", f->rt->agent->name, error);
        f->outcome = "upstream_error";
        answer_error(f, AG_ERR_UPSTREAM, "upstream", msg);
        return;
    }
    answer_json(f);
}

static const tp_upstream_handlers_t handlers = { .on_head = on_head, .on_body = on_body, .on_done = on_done };

/* Sends the request to the agent: the caller's body unchanged, the signed chain, the version. */
static void
start_call(ag_forward_t *f)
{
    tp_request_t *r = f->r;
    h2o_iovec_t accept = tp_http_header(r, "accept");
    tp_upstream_header_t headers[4];
    size_t nh = 0;
    headers[nh++] = (tp_upstream_header_t){ h2o_iovec_init(H2O_STRLIT("content-type")),
                                            h2o_iovec_init(H2O_STRLIT("application/json")) };
    headers[nh++] = (tp_upstream_header_t){ h2o_iovec_init(H2O_STRLIT("accept")),
                                            accept.base != NULL
                                                ? accept
                                                : h2o_iovec_init(H2O_STRLIT("application/json, text/event-stream")) };
    headers[nh++] = (tp_upstream_header_t){ h2o_iovec_init(H2O_STRLIT(AG_CHAIN_HEADER)),
                                            h2o_iovec_init(f->token, strlen(f->token)) };
    if (f->version == AG_V10)
        headers[nh++] =
            (tp_upstream_header_t){ h2o_iovec_init(H2O_STRLIT("a2a-version")), h2o_iovec_init(H2O_STRLIT("1.0")) };
    tp_upstream_request_t ur = {
        .method = "POST",
        .path = h2o_iovec_init(f->rt->path, strlen(f->rt->path)),
        .headers = headers,
        .num_headers = nh,
        .body = r->req->entity,
    };
    /* A stream may stay quiet for long; a unary call gets the agent's timeout as a whole. */
    tp_upstream_t *up = f->method->streams ? f->rt->stream_upstream : f->rt->upstream;
    f->call = tp_upstream_call(up, tp_worker_h2o(r->worker), &ur, &handlers, f); /* copies ur */
    free(f->token);
    f->token = NULL;
}

/* ---- cancels sent by the gateway itself ---- */

static void
cancel_unlink(ag_cancel_t *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        c->owner->cancels = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
}

static void
on_cancel_done(tp_upstream_call_t *call, const char *error)
{
    ag_cancel_t *c = tp_upstream_call_data(call);
    if (error != NULL)
        tp_log_fields(TP_LOG_WARN, NULL, "a2a cancel not delivered",
                      json_pack("{s:s, s:s}", "task", c->task, "error", error));
    cancel_unlink(c);
    free(c);
}

static void
send_cancel(ag_gateway_t *gw, ag_agent_rt_t *rt, tp_worker_t *w, ag_version_t v, const char *task_id)
{
    json_t *req = ag_cancel_request(v, task_id);
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (body == NULL) {
        tp_log_fields(TP_LOG_WARN, NULL, "a2a cancel not sent", json_pack("{s:s}", "task", task_id));
        return;
    }
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
    ag_cancel_t *c = tp_malloc(sizeof(*c) + strlen(task_id) + 1);
    strcpy(c->task, task_id);
    c->owner = &gw->w[tp_worker_id(w)];
    c->prev = NULL;
    c->next = c->owner->cancels;
    if (c->next != NULL)
        c->next->prev = c;
    c->owner->cancels = c;
    c->call = tp_upstream_call(rt->upstream, tp_worker_h2o(w), &ur, &h, c);
    free(body);
}

/* ---- kills ---- */

/* The kill of snap that covers principal id, of team `team` (NULL: the team the snapshot knows
 * for id, if any), or NULL. */
static const pol_kill_t *
kill_of(const pol_snapshot_t *snap, const char *id, const char *team, int64_t now)
{
    pol_principal_t p = { .id = (char *)id, .team = (char *)team };
    if (team == NULL) {
        const pol_principal_t *known = pol_snapshot_principal(snap, id);
        p.team = known != NULL ? known->team : NULL;
    }
    for (size_t i = 0; i < snap->num_kills; i++) {
        if (pol_kill_covers(&snap->kills[i], &p, now))
            return &snap->kills[i];
    }
    return NULL;
}

/* The kill of snap that stops a conversation: one that covers the caller (of team caller_team,
 * as it authenticated; NULL: the snapshot's), the target, or anyone on the chain. A JWT caller's
 * team is known for its own calls only: on a later hop of its chain, the snapshot's record of the
 * id (if any) is what counts. */
static const pol_kill_t *
conversation_kill(const pol_snapshot_t *snap, const char *caller, const char *caller_team, const char *target,
                  const ag_chain_t *chain)
{
    if (snap == NULL || snap->num_kills == 0)
        return NULL;
    int64_t now = tp_unix_ms();
    const pol_kill_t *k = kill_of(snap, caller, caller_team, now);
    if (k == NULL)
        k = kill_of(snap, target, NULL, now);
    for (size_t i = 0; i < chain->n && k == NULL; i++) {
        k = kill_of(snap, chain->hops[i].caller, NULL, now);
        if (k == NULL)
            k = kill_of(snap, chain->hops[i].target, NULL, now);
    }
    return k;
}

static void
kill_forward(ag_forward_t *f, tp_worker_t *w, const char *reason)
{
    char why[300];
    snprintf(why, sizeof(why), "stopped by an operator's kill switch: %s", reason != NULL ? reason : "no reason given");
    drop_call(f);
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
    if (!f->streaming) {
        answer_error(f, AG_ERR_SUSPENDED, "killed", why);
    } else if (!f->done) {
        json_t *e = ag_canceled_event(f->version, f->id, f->task_id[0] != '\0' ? f->task_id : "",
                                      f->context_id[0] != '\0' ? f->context_id : NULL, why);
        relay_last_event(f, e);
        json_decref(e);
    }
}

void
ag_forward_kill(ag_gateway_t *gw, tp_worker_t *w, const pol_snapshot_t *snap)
{
    for (ag_forward_t *f = gw->w[tp_worker_id(w)].active, *next; f != NULL; f = next) {
        next = f->next;
        const pol_kill_t *k = conversation_kill(snap, f->caller, f->caller_team, f->rt->agent->name, &f->chain);
        if (k != NULL)
            kill_forward(f, w, k->reason);
    }
}

void
ag_forward_shutdown_worker(ag_gateway_t *gw, tp_worker_t *w)
{
    ag_worker_t *aw = &gw->w[tp_worker_id(w)];
    while (aw->active != NULL) {
        ag_forward_t *f = aw->active;
        if (f->outcome == NULL)
            f->outcome = "shutdown";
        drop_call(f); /* takes f off the list */
    }
    while (aw->cancels != NULL) {
        ag_cancel_t *c = aw->cancels;
        cancel_unlink(c);
        tp_upstream_cancel(c->call);
        free(c);
    }
}

/* ---- push-notification URLs ---- */

static ag_pushurl_policy_t
push_policy(const ag_gateway_t *gw)
{
    return (ag_pushurl_policy_t){
        .allow_http = gw->cfg->push_allow_http,
        .allow_private = gw->cfg->push_allow_private,
        .allowed_hosts = (const char *const *)gw->cfg->push_allowed_hosts,
        .num_allowed_hosts = gw->cfg->push_allowed_host_count,
    };
}

typedef struct push_check {
    ag_pushurl_policy_t policy;
    char why[256];
    size_t n; /* host names to resolve */
    char hosts[PUSH_HOSTS_MAX][AG_PUSHURL_HOST_MAX + 1];
} push_check_t;

/* Judges one URL as written, and keeps its host name for resolving. */
static int
check_push(const char *url, void *data)
{
    push_check_t *pc = data;
    if (ag_pushurl_check(url, &pc->policy, pc->why, sizeof(pc->why)) != 0)
        return -1;
    char host[AG_PUSHURL_HOST_MAX + 1];
    if (pc->policy.allow_private || ag_pushurl_host(url, host, sizeof(host)) != 1)
        return 0; /* an address literal: judged already */
    for (size_t i = 0; i < pc->n; i++) {
        if (strcmp(pc->hosts[i], host) == 0)
            return 0;
    }
    if (pc->n == PUSH_HOSTS_MAX) {
        snprintf(pc->why, sizeof(pc->why), "a request may name push URLs on at most %d host names", PUSH_HOSTS_MAX);
        return -1;
    }
    memcpy(pc->hosts[pc->n++], host, strlen(host) + 1);
    return 0;
}

/* The end of a forward refused after it was made (a push URL whose host resolves inward). */
static void
forward_refuse(ag_forward_t *f, int code, const char *reason, const char *message)
{
    drop_call(f);
    json_decref(f->audit); /* a refusal, as those before the forward was made: no audit row */
    f->audit = NULL;
    f->outcome = "refused";
    if (f->r == NULL || f->answered)
        return;
    f->answered = true;
    refuse(f->gw, f->r, f->id, f->method->streams, code, reason, message);
}

static void resolve_next(ag_resolve_t *rs);

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    ag_resolve_t *rs = req->data;
    ag_forward_t *f = rs->f;
    char why[640] = "";
    bool ok = status == 0;
    if (!ok) {
        snprintf(why, sizeof(why), "push URL host %s could not be resolved (%.100s)", rs->hosts[rs->at],
                 uv_strerror(status));
    } else if (f != NULL) {
        ag_pushurl_policy_t pp = push_policy(f->gw);
        char addr_why[256];
        for (const struct addrinfo *ai = res; ok && ai != NULL; ai = ai->ai_next)
            ok = ag_pushurl_check_resolved(ai->ai_addr, &pp, addr_why, sizeof(addr_why)) == 0;
        if (!ok) /* "push URL host resolved to 127.0.0.1, a loopback address": name the host too */
            snprintf(why, sizeof(why), "%s (%s)", addr_why, rs->hosts[rs->at]);
    }
    uv_freeaddrinfo(res);
    if (f == NULL || f->answered) { /* the caller left, or a kill ended the forward meanwhile */
        if (f != NULL)
            f->resolve = NULL;
        free(rs);
        return;
    }
    if (ok && ++rs->at < rs->n) {
        resolve_next(rs);
        return;
    }
    f->resolve = NULL;
    free(rs);
    if (!ok)
        forward_refuse(f, AG_ERR_PUSH_URL, "push_url", why);
    else
        start_call(f);
}

static void
resolve_next(ag_resolve_t *rs)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    rs->req.data = rs;
    int rv = uv_getaddrinfo(tp_worker_loop(rs->f->r->worker), &rs->req, on_resolved, rs->hosts[rs->at], NULL, &hints);
    if (rv != 0)
        on_resolved(&rs->req, rv, NULL);
}

/* Resolves the hosts of pc, then forwards f (or refuses it). */
static void
start_resolve(ag_forward_t *f, const push_check_t *pc)
{
    ag_resolve_t *rs = tp_calloc(1, sizeof(*rs));
    rs->f = f;
    rs->n = pc->n;
    memcpy(rs->hosts, pc->hosts, sizeof(rs->hosts));
    f->resolve = rs;
    resolve_next(rs);
}

/* ---- the checks ---- */

/* A request as the checks read it. */
typedef struct post {
    ag_gateway_t *gw;
    tp_request_t *r;
    const pol_snapshot_t *snap;
    pol_verdict_t v;
    ag_agent_rt_t *rt;
    char agent[AG_AGENT_NAME_MAX + 1];
    char caller[ID_BUF];
    json_t *msg;
    const json_t *id, *params;
    const ag_method_t *method;
    ag_version_t version;
    bool sse;          /* refusals as an SSE event */
    char task[ID_BUF]; /* the task the request names; "" when none */
    ag_chain_t chain;  /* the chain it continues, then with this call's hop */
    char *token;       /* the chain signed for the agent */
    push_check_t push;
} post_t;

/* The agent of /agents/NAME (or /agents/NAME/); false after answering 404. */
static bool
read_agent(post_t *p)
{
    h2o_iovec_t path = p->r->req->path_normalized;
    size_t nlen = path.len > 8 ? path.len - 8 : 0; /* after "/agents/" */
    const char *name = path.base + 8;
    if (nlen > 0 && name[nlen - 1] == '/') /* /agents/NAME/ too: SDK clients resolve URLs against it */
        nlen--;
    if (nlen == 0 || nlen > AG_AGENT_NAME_MAX || memchr(name, '/', nlen) != NULL) {
        tp_http_error(p->r, 404, "not_found", "no such agent endpoint");
        return false;
    }
    memcpy(p->agent, name, nlen);
    p->agent[nlen] = '\0';
    p->rt = ag_world_agent(ag_world(p->gw), p->agent);
    if (p->rt == NULL) {
        char m[300];
        snprintf(m, sizeof(m), "no agent named \"%s\" is registered", p->agent);
        tp_http_error(p->r, 404, "unknown_agent", m);
        return false;
    }
    return true;
}

/* The request's JSON-RPC id, read only to answer a refusal with it (a new reference or NULL). */
static json_t *
peek_id(tp_request_t *r)
{
    json_t *msg = json_loadb(r->req->entity.base != NULL ? r->req->entity.base : "", r->req->entity.len, 0, NULL);
    json_t *id = json_object_get(msg, "id");
    id = json_is_string(id) || json_is_integer(id) ? json_incref(id) : NULL;
    json_decref(msg);
    return id;
}

/* Authentication and the kill switches on the caller; false after refusing. */
static bool
authenticate(post_t *p)
{
    if (pol_gate_authenticate(p->gw->gate, p->r, &p->v)) {
        p->snap = (const pol_snapshot_t *)p->v.snapshot;
        return true;
    }
    if (p->v.outcome == POL_OUTCOME_SUSPENDED) { /* authenticated, then refused: the answer names the request */
        json_t *id = peek_id(p->r);
        envelope(p->r, p->v.status, id, p->v.code, p->v.message);
        json_decref(id);
    } else {
        pol_gate_refuse(p->r, &p->v);
    }
    return false;
}

/* The JSON-RPC message, the method and the version; false after refusing. */
static bool
read_message(post_t *p)
{
    tp_request_t *r = p->r;
    json_error_t jerr;
    p->msg = json_loadb(r->req->entity.base != NULL ? r->req->entity.base : "", r->req->entity.len, 0, &jerr);
    p->id = json_object_get(p->msg, "id");
    p->params = json_object_get(p->msg, "params");
    const char *method_name = json_string_value(json_object_get(p->msg, "method"));
    char m[300];
    if (p->msg == NULL) {
        snprintf(m, sizeof(m), "Parse error: %s", jerr.text);
        ag_jsonrpc_error(r, NULL, -32700, "parse", m);
        return false;
    }
    if (!json_is_object(p->msg) || method_name == NULL ||
        (p->id != NULL && !json_is_string(p->id) && !json_is_integer(p->id))) {
        p->id = json_is_string(p->id) || json_is_integer(p->id) ? p->id : NULL;
        ag_jsonrpc_error(r, p->id, -32600, "invalid_request", "Invalid Request: expected a JSON-RPC 2.0 request");
        return false;
    }
    h2o_iovec_t vh = tp_http_header(r, "a2a-version");
    if (!ag_version_parse(vh.base, vh.len, &p->version)) {
        ag_jsonrpc_error(r, p->id, A2A_VERSION_NOT_SUPPORTED, "version", "A2A-Version must be 0.3 or 1.0");
        return false;
    }
    p->method = ag_method_find(method_name, p->version);
    if (p->method == NULL) {
        snprintf(m, sizeof(m), "Method not found: %.80s is not an A2A %s method", method_name,
                 ag_version_name(p->version));
        ag_jsonrpc_error(r, p->id, -32601, "method", m);
        return false;
    }
    p->sse = p->method->streams;
    if (strcmp(ag_version_name(p->version), p->rt->agent->version) != 0) {
        snprintf(m, sizeof(m), "agent \"%s\" speaks A2A %s; send A2A-Version: %s", p->agent, p->rt->agent->version,
                 p->rt->agent->version);
        send_error(r, p->id, p->sse, A2A_VERSION_NOT_SUPPORTED, "version", m, NULL);
        return false;
    }
    return true;
}

/* The task the request names, as the agent will read it; false after refusing. */
static bool
read_task(post_t *p)
{
    const char *task, *why = NULL;
    size_t len;
    int rv = ag_request_task_id(p->method, p->params, &task, &len, &why);
    if (rv < 0) {
        send_error(p->r, p->id, p->sse, -32602, "invalid_params", why, NULL);
        return false;
    }
    if (rv == 0 || len == 0)
        return true;
    if (len > AG_CHAIN_ID_MAX) {
        char m[200];
        snprintf(m, sizeof(m), "the task id is %zu bytes long; the gateway accepts task ids of at most %d bytes", len,
                 AG_CHAIN_ID_MAX);
        refuse(p->gw, p->r, p->id, p->sse, AG_ERR_LIMIT, "task_id", m);
        return false;
    }
    memcpy(p->task, task, len);
    p->task[len] = '\0';
    return true;
}

/* The chain this request continues (or an empty one), loops and depth; false after refusing. */
static bool
check_chain(post_t *p)
{
    char m[400];
    h2o_iovec_t h = tp_http_header(p->r, AG_CHAIN_HEADER);
    memset(&p->chain, 0, sizeof(p->chain));
    if (h.base != NULL) {
        const char *why = NULL;
        if (ag_chain_verify(p->gw->chain_key, p->gw->chain_key_len, h.base, h.len, tp_unix_ms(), CHAIN_MAX_AGE_MS,
                            &p->chain, &why) != 0) {
            snprintf(m, sizeof(m),
                     "the delegation chain header is not valid (%s): pass back the %s header exactly "
                     "as the gateway sent it",
                     why != NULL ? why : "invalid", AG_CHAIN_HEADER);
            refuse(p->gw, p->r, p->id, p->sse, AG_ERR_CHAIN, "chain", m);
            return false;
        }
        const char *last = ag_chain_last_target(&p->chain);
        if (last == NULL || strcmp(last, p->caller) != 0) {
            snprintf(m, sizeof(m), "the delegation chain was issued to agent \"%s\", not to the caller \"%s\"",
                     last != NULL ? last : "", p->caller);
            refuse(p->gw, p->r, p->id, p->sse, AG_ERR_CHAIN, "chain", m);
            return false;
        }
    }
    if (p->chain.n > 0 && ag_chain_contains_agent(&p->chain, p->agent)) {
        snprintf(m, sizeof(m), "delegation loop: agent \"%s\" is already on this chain (started by \"%s\")", p->agent,
                 ag_chain_origin(&p->chain));
        refuse(p->gw, p->r, p->id, p->sse, AG_ERR_LOOP, "loop", m);
        return false;
    }
    if ((int)p->chain.n + 1 > p->gw->cfg->max_depth) {
        snprintf(m, sizeof(m), "delegation too deep: this call would be hop %zu; at most %d are allowed",
                 p->chain.n + 1, p->gw->cfg->max_depth);
        refuse(p->gw, p->r, p->id, p->sse, AG_ERR_DEPTH, "depth", m);
        return false;
    }
    return true;
}

/* Kill switches on the target and everyone on the chain (the caller's were the gate's). */
static bool
check_kills(post_t *p)
{
    const pol_principal_t *who = p->v.identity.principal;
    const pol_kill_t *k = conversation_kill(p->snap, p->caller, who->team, p->agent, &p->chain);
    if (k == NULL)
        return true;
    char m[400];
    snprintf(m, sizeof(m), "suspended: a kill switch stops this conversation (%s)",
             k->reason != NULL && k->reason[0] != '\0' ? k->reason : "no reason given");
    refuse(p->gw, p->r, p->id, p->sse, AG_ERR_SUSPENDED, "killed", m);
    return false;
}

/* Policy for the caller (with its rate limits) and for the chain's origin. */
static bool
check_policy(post_t *p)
{
    const char *family = p->method->family;
    if (!pol_gate_authorize(p->gw->gate, p->r, p->agent, family, &p->v)) {
        if (p->v.outcome == POL_OUTCOME_RATE_LIMITED || p->v.outcome == POL_OUTCOME_OVER_BUDGET) {
            tp_metric_add(p->gw->metrics.refusals, (const char *[]){ "rate_limit" }, 1);
            send_error(p->r, p->id, p->sse, AG_ERR_RATE_LIMITED, "rate_limit", p->v.message,
                       json_pack("{s:f}", "retry_after_s", p->v.retry_after_s));
        } else {
            refuse(p->gw, p->r, p->id, p->sse, AG_ERR_FORBIDDEN, "policy", p->v.message);
        }
        return false;
    }
    if (p->chain.n == 0)
        return true;
    const char *origin = ag_chain_origin(&p->chain);
    pol_principal_t temp = { .id = (char *)origin, .kind = POL_KIND_USER, .enabled = true };
    const pol_principal_t *known = pol_snapshot_principal(p->snap, origin);
    pol_request_t preq = {
        .principal = known != NULL ? known : &temp,
        .plane = "agent",
        .resource = p->agent,
        .action = family,
        .request_size = 0,
        .now_ms = tp_unix_ms(),
    };
    if (pol_evaluate(p->snap->rules, &preq, p->snap->default_allow).allow)
        return true;
    char m[400];
    snprintf(m, sizeof(m), "\"%s\", who started this delegation chain, may not %s agent \"%s\"", origin,
             strcmp(family, "message") == 0 ? "message" : family, p->agent);
    refuse(p->gw, p->r, p->id, p->sse, AG_ERR_FORBIDDEN, "origin_policy", m);
    return false;
}

/* Only the principal that created a task, or the origin of the chain it was created on, may name
 * it. Anyone else, and everyone for a task the gateway does not know (made before the start of
 * the ledger it read, forgotten, or made elsewhere), gets the agent's own "not found", so that
 * whether somebody else's task exists does not show. */
static bool
check_owner(post_t *p)
{
    if (p->task[0] == '\0' || ag_owners_check(p->gw->owners, p->agent, p->task, p->caller) == AG_OWNER_YES)
        return true;
    char m[300];
    snprintf(m, sizeof(m), "Task not found: %s", p->task);
    refuse(p->gw, p->r, p->id, p->sse, A2A_TASK_NOT_FOUND, "task_not_found", m);
    return false;
}

/* Message limits, push URLs as written, and the agent's concurrency cap (taken last). */
static bool
check_limits(post_t *p)
{
    const tp_agent_gw_config_t *cfg = p->gw->cfg;
    size_t parts;
    int64_t largest;
    char m[300];
    if (ag_message_measure(p->params, &parts, &largest)) {
        if ((int64_t)parts > cfg->max_parts) {
            snprintf(m, sizeof(m), "the message has %zu parts; at most %" PRId64 " are accepted", parts,
                     cfg->max_parts);
            refuse(p->gw, p->r, p->id, p->sse, AG_ERR_LIMIT, "parts", m);
            return false;
        }
        if (largest > cfg->max_file_bytes) {
            snprintf(m, sizeof(m), "a file part holds %" PRId64 " bytes; at most %" PRId64 " are accepted", largest,
                     cfg->max_file_bytes);
            refuse(p->gw, p->r, p->id, p->sse, AG_ERR_LIMIT, "file_size", m);
            return false;
        }
    }
    p->push.policy = push_policy(p->gw);
    if (ag_push_urls(p->params, check_push, &p->push) != 0) {
        refuse(p->gw, p->r, p->id, p->sse, AG_ERR_PUSH_URL, "push_url", p->push.why);
        return false;
    }
    int cap = p->rt->agent->cfg != NULL ? p->rt->agent->cfg->max_concurrent_tasks : 0;
    if (cap > 0 && atomic_fetch_add(&p->rt->inflight, 1) >= cap) {
        atomic_fetch_sub(&p->rt->inflight, 1);
        snprintf(m, sizeof(m), "agent \"%s\" is handling %d requests already, its limit; retry later", p->agent, cap);
        refuse(p->gw, p->r, p->id, p->sse, AG_ERR_LIMIT, "concurrency", m);
        return false;
    }
    if (cap <= 0)
        atomic_fetch_add(&p->rt->inflight, 1);
    return true;
}

/* This call's hop on the chain, signed for the agent; false after refusing. */
static bool
sign_chain(post_t *p)
{
    int rv = ag_chain_append(&p->chain, p->caller, p->agent, p->task, tp_unix_ms());
    if (rv == 0)
        p->token = ag_chain_sign(p->gw->chain_key, p->gw->chain_key_len, &p->chain);
    if (p->token != NULL)
        return true;
    char m[300];
    if (rv == -EINVAL) /* ids were checked: only a NUL inside one gets here */
        snprintf(m, sizeof(m), "the delegation chain cannot carry this call's caller, agent or task id");
    else
        snprintf(m, sizeof(m), "the delegation chain is too long to carry another hop (at most %d bytes)",
                 AG_CHAIN_TOKEN_MAX);
    refuse(p->gw, p->r, p->id, p->sse, AG_ERR_CHAIN, "chain", m);
    return false;
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

/* Makes the forward of a request that passed every check (it holds a concurrency slot), and
 * sends it, or first resolves its push-URL hosts. */
static void
forward(post_t *p)
{
    tp_request_t *r = p->r;
    ag_forward_t *f = h2o_mem_alloc_shared(&r->req->pool, sizeof(*f), on_forward_dispose);
    memset(f, 0, sizeof(*f));
    f->gw = p->gw;
    f->r = r;
    f->rt = p->rt;
    f->counted = true;
    f->method = p->method;
    f->version = p->version;
    f->id = json_incref((json_t *)(p->id != NULL ? p->id : json_null()));
    memcpy(f->caller, p->caller, sizeof(f->caller));
    const char *team = p->v.identity.principal->team;
    if (team != NULL) {
        char *copy = h2o_mem_alloc_pool(&r->req->pool, strlen(team) + 1);
        f->caller_team = strcpy(copy, team);
    }
    f->start_ns = r->start_ns;
    f->worker = tp_worker_id(r->worker);
    if (p->task[0] != '\0') {
        memcpy(f->task_id, p->task, sizeof(f->task_id));
        f->ledgered = true; /* a known task: only its transitions are new */
    }
    f->chain = p->chain;
    f->token = p->token;
    p->token = NULL;
    json_t *cj = ag_chain_to_json(&f->chain);
    f->chain_json = json_dumps(cj, JSON_COMPACT);
    if (f->chain_json == NULL)
        f->chain_json = tp_strdup("[]");
    f->audit = json_pack("{s:o, s:o}", "chain", cj, "content", content_digest(r, p->gw->cfg->audit_content, p->params));
    list_add(f);
    if (p->push.n > 0)
        start_resolve(f, &p->push);
    else
        start_call(f);
}

/* ---- the route ---- */

static int
on_agent_post(tp_request_t *r, void *data)
{
    post_t *p = tp_calloc(1, sizeof(*p)); /* a chain is 25 KiB: not on the worker's stack twice */
    p->gw = data;
    p->r = r;
    if (!read_agent(p))
        goto out;
    if (!authenticate(p))
        goto out;
    snprintf(p->caller, sizeof(p->caller), "%s", p->v.identity.principal->id);
    if (strlen(p->v.identity.principal->id) >= sizeof(p->caller)) {
        char m[200];
        snprintf(m, sizeof(m), "the caller's id is longer than the %d bytes the gateway can carry on a chain",
                 AG_CHAIN_ID_MAX);
        json_t *id = peek_id(r);
        envelope(r, 403, id, "id_too_long", m);
        json_decref(id);
        goto out;
    }
    if (read_message(p) && read_task(p) && check_chain(p) && check_kills(p) && check_policy(p) && check_owner(p) &&
        check_limits(p)) {
        if (sign_chain(p))
            forward(p);
        else
            atomic_fetch_sub(&p->rt->inflight, 1); /* the slot check_limits took */
    }
out:
    pol_verdict_clear(&p->v); /* what the forward needs of the caller was copied */
    json_decref(p->msg);
    free(p->token);
    free(p);
    return 0;
}

void
ag_forward_register(ag_gateway_t *gw)
{
    tp_server_route(tp_daemon_server(gw->daemon), "POST", "/agents", true, on_agent_post, gw);
}
