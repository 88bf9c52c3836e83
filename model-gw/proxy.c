/*
 * proxy.c — POST /v1/chat/completions, /v1/completions and /v1/embeddings, and the APIs
 * translated onto chat completions, POST /v1/responses (responses.h) and POST /v1/messages
 * (anthropic.h): authenticate, validate, authorise, reserve tokens, route to a deployment
 * (retrying others, then fallback models, while nothing has reached the client), relay the
 * answer (streamed with backpressure), and settle usage. A kill switch that covers the caller
 * ends the request wherever it is (mg_proxy_kill): each worker keeps its requests in flight on a
 * list for that.
 *
 * A translated request is turned into a chat completions body before routing, and the
 * upstream's answer is parsed and translated chunk by chunk (the byte-splicing fast paths are
 * for chat completions only). A stored Response is saved when it ends (response_store.h).
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/random.h>

#include "clock.h"
#include "gateway.h"
#include "http.h"
#include "anthropic.h"
#include "jsonscan.h"
#include "log.h"
#include "mem.h"
#include "relay.h"
#include "response_store.h"
#include "responses.h"
#include "sse.h"
#include "validate.h"

#define MAX_ATTEMPTS       8                   /* deployments tried for one request, fallbacks included */
#define MAX_UPSTREAM_BODY  (64u * 1024 * 1024) /* a whole (non-streamed) answer, at most */
#define MAX_SSE_EVENT      (8u * 1024 * 1024)  /* one streamed event, at most */
#define HIGH_WATER         (256u * 1024)       /* bytes queued for a slow client before the upstream is paused */
#define LOW_WATER          (64u * 1024)        /* ... and resumed */
#define DEFAULT_EST_TOKENS 1024                /* completion tokens reserved when a request sets no max */
#define MAX_EST_TOKENS     (1 << 24)           /* a bound on what one request's max_tokens reserves */

/* The API a client speaks: the upstream's own, or one translated onto chat completions. */
typedef enum dialect {
    DIALECT_OPENAI = 0, /* chat completions, completions, embeddings: relayed as they are */
    DIALECT_RESPONSES,  /* the Responses API */
    DIALECT_MESSAGES,   /* Anthropic's Messages API */
} dialect_t;

typedef struct endpoint {
    const char *path;   /* "/chat/completions", appended to the deployment's base URL */
    const char *action; /* policy action */
    bool (*validate)(json_t *body, const tp_model_config_t *model, mg_invalid_t *out);
    bool can_stream;
    dialect_t dialect;
} endpoint_t;

static const endpoint_t chat = { "/chat/completions", "chat", mg_validate_chat, true, DIALECT_OPENAI };
static const endpoint_t completions = { "/completions", "complete", mg_validate_completion, true, DIALECT_OPENAI };
static const endpoint_t embeddings = { "/embeddings", "embed", mg_validate_embeddings, false, DIALECT_OPENAI };
static const endpoint_t responses_api = { "/chat/completions", "chat", NULL, true, DIALECT_RESPONSES };
static const endpoint_t messages_api = { "/chat/completions", "chat", NULL, true, DIALECT_MESSAGES };

/* model-gw's metrics, registered once at start-up (families are fixed; series are created on
 * first use with the model's public name and the deployment's index as labels). */
static struct {
    tp_metric_t *requests;        /* {model, deployment, status} */
    tp_metric_t *duration;        /* {model}: the whole request, as the client saw it */
    tp_metric_t *ttft;            /* {model}: to the first streamed event, or the whole answer */
    tp_metric_t *overhead;        /* {model}: the request's time not spent waiting on upstreams */
    tp_metric_t *tokens;          /* {model, kind} */
    tp_metric_t *cost;            /* {model}: in the pricing section's currency */
    tp_metric_t *upstream_errors; /* {model, deployment, kind} */
    tp_metric_t *retries;         /* {model} */
    tp_metric_t *repairs;         /* {model} */
    tp_metric_t *inflight;        /* {model, deployment} */
    tp_metric_t *circuit;         /* {model, deployment}: 1 while the circuit is open */
} metrics;

void
mg_deployment_outcome(const char *model, mg_deployment_t *d, bool ok, const char *request_id, const char *by)
{
    if (!mg_deployment_report(d, ok, tp_unix_ms()))
        return;
    tp_metric_set(metrics.circuit, (const char *[]){ model, d->label }, ok ? 0 : 1);
    tp_log_fields(
        ok ? TP_LOG_INFO : TP_LOG_WARN, request_id, ok ? "deployment circuit closed" : "deployment circuit open",
        json_pack("{s:s, s:s, s:s, s:s}", "model", model, "deployment", d->label, "url", d->cfg->url, "by", by));
}

/* One request's life. Lives in the request's pool; its dispose (on_dispose) cancels an upstream
 * call still running, so no upstream callback outlives the request. */
typedef struct proxy {
    h2o_generator_t super; /* first: h2o hands the generator back to proceed/stop */
    tp_request_t *r;
    mg_gateway_t *gw;
    const endpoint_t *ep;
    json_t *body; /* the client's request, parsed (with the model replaced per attempt when not spliced) */
    /* The body upstreams get: when `spliced`, the client's bytes with the model value (and, for a
     * stream, stream_options) replaced in place; otherwise p->body printed by jansson. */
    bool spliced;
    h2o_iovec_t model_value; /* the model member's value text in the request body */
    h2o_iovec_t options_at;  /* stream_options' value text to replace, or (len 0) where to insert it;
                                base NULL when it stays */
    bool stream;
    mg_model_t *attempts_model[MAX_ATTEMPTS];
    mg_deployment_t *attempts[MAX_ATTEMPTS];
    size_t num_attempts, attempt;
    mg_deployment_t *deployment; /* of the current attempt; its inflight counts this request */
    tp_upstream_call_t *call;
    int upstream_status;
    bool relaying;                 /* the current attempt answered 200 to a stream: its events are read */
    bool started;                  /* the client has the response head: no more retries */
    bool finished;                 /* the final h2o_send was made */
    bool sending;                  /* an h2o_send is in flight: wait for proceed */
    bool upstream_done;            /* the upstream call ended */
    const char *upstream_error;    /* static or pool text when it ended badly */
    mg_buffer_t in;                /* non-streamed: the upstream's body; streamed before commit: an error body */
    mg_buffer_t answer;            /* non-streamed: the relayed body, which h2o sends from here */
    mg_buffer_t pending, inflight; /* streamed: relayed bytes queued, and those h2o is sending */
    bool paused;
    bool accounted; /* tokens were reserved and the request went upstream: settle at the end */
    bool seen_done; /* the upstream's stream reached data: [DONE] */
    tp_sse_t sse;
    mg_relay_t relay;
    pol_verdict_t verdict; /* never copied: it points into itself */
    pol_reservation_t reservation;
    int64_t est_prompt_tokens;
    uint64_t start_ns, first_byte_ns;
    uint64_t attempt_start_ns, upstream_ns; /* the current attempt's start; time spent on upstreams */
    mg_model_t *model;                      /* the public model asked for */
    const char *answering_model;            /* the public name of the model of the last attempt (the
                                               model asked for, or a fallback): it is billed */
    struct backoff *backoff;                /* a pending retry's timer, or NULL */
    const char *last_deployment;            /* the label of the last deployment tried, for metrics */
    const char *last_upstream;              /* and its URL, for the usage row */
    char public_model[256];
    struct proxy *prev, *next; /* on gw->active[worker] from authentication to dispose */
    bool listed;
    bool killed; /* a kill switch ended it */
    /* A translated API (ep->dialect != DIALECT_OPENAI): p->body is the chat body built from
     * `client`, the client's own body. */
    json_t *client;
    int64_t body_bytes;      /* the chat body's size, for the token estimate */
    mg_responses_req_t rreq; /* Responses: the request, validated */
    mg_responses_ctx_t rctx; /* ... what its Response echoes */
    mg_responses_stream_t rstream;
    mg_response_load_t *load; /* the conversation being read from the store, or NULL */
    bool saved;               /* the Response was stored (or needs not be) */
    mg_anthropic_ctx_t actx;  /* Messages */
    mg_anthropic_stream_t astream;
    char object_id[64]; /* resp_… or msg_… */
} proxy_t;

/* ---- the worker's list of requests in flight ---- */

static void
list_add(proxy_t *p)
{
    proxy_t **head = &p->gw->active[tp_worker_id(p->r->worker)];
    p->prev = NULL;
    p->next = *head;
    if (*head != NULL)
        (*head)->prev = p;
    *head = p;
    p->listed = true;
}

static void
list_remove(proxy_t *p)
{
    if (!p->listed)
        return;
    proxy_t **head = &p->gw->active[tp_worker_id(p->r->worker)];
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        *head = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->listed = false;
}

static void start_attempt(proxy_t *p);

/* ---- ending ---- */

static void
settle(proxy_t *p)
{
    if (!p->accounted)
        return;
    p->accounted = false; /* settled once */
    int64_t in = p->relay.usage.seen ? p->relay.usage.prompt_tokens : p->est_prompt_tokens;
    int64_t out = p->relay.usage.seen ? p->relay.usage.completion_tokens : 0;
    uint64_t now = tp_mono_ns();
    pol_usage_detail_t detail = {
        .status = p->r->req->res.status != 0 ? p->r->req->res.status : 499,
        .latency_ms = (double)(now - p->start_ns) / 1e6,
        .ttft_ms = p->first_byte_ns != 0 ? (double)(p->first_byte_ns - p->start_ns) / 1e6 : -1,
        .upstream = p->last_upstream,
    };
    /* Billed at the price of the model that answered, which the usage row names (a fallback's
     * tokens cost what the fallback costs). Set by every attempt, and settling needs one. */
    assert(p->answering_model != NULL);
    pol_gate_settle(p->gw->gate, p->r, &p->verdict, p->answering_model, &p->reservation, in, out, &detail);
}

/* A timer that starts the next attempt after a backoff. It outlives neither the request nor
 * itself: the request's dispose detaches it (p = NULL) and closes it. */
typedef struct backoff {
    uv_timer_t timer;
    proxy_t *p;
} backoff_t;

static void
on_backoff_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
on_backoff(uv_timer_t *t)
{
    backoff_t *b = t->data;
    proxy_t *p = b->p;
    b->p = NULL;
    uv_close((uv_handle_t *)&b->timer, on_backoff_closed);
    if (p != NULL) {
        p->backoff = NULL;
        start_attempt(p);
    }
}

/* Starts the next attempt: at once on a deployment not tried yet for this request; after a
 * jittered, growing backoff (10 ms × 2^n × [0.5, 1.5), at most 400 ms) when it is one that just
 * failed, so a briefly overloaded upstream is not hit again at once by every retrying request. */
static void
retry_later(proxy_t *p)
{
    bool again = false;
    for (size_t i = 0; i < p->attempt; i++)
        again = again || p->attempts[i] == p->attempts[p->attempt];
    if (!again) {
        start_attempt(p);
        return;
    }
    unsigned shift = p->attempt < 5 ? (unsigned)p->attempt : 5;
    double jitter = 0.5 + (double)(p->start_ns % 1000) / 1000.0; /* varies per request */
    uint64_t ms = (uint64_t)(10.0 * (double)(1u << shift) * jitter);
    backoff_t *b = tp_calloc(1, sizeof(*b));
    b->p = p;
    b->timer.data = b;
    uv_timer_init(tp_worker_loop(p->r->worker), &b->timer);
    uv_timer_start(&b->timer, on_backoff, ms < 400 ? ms : 400, 0);
    p->backoff = b;
}

static void
release_deployment(proxy_t *p)
{
    if (p->deployment != NULL) {
        atomic_fetch_sub(&p->deployment->inflight, 1);
        tp_metric_add(metrics.inflight, (const char *[]){ p->public_model, p->deployment->label }, -1);
        p->upstream_ns += tp_mono_ns() - p->attempt_start_ns;
        p->deployment = NULL;
    }
}

static void
record_metrics(proxy_t *p)
{
    if (p->model == NULL)
        return; /* refused before a model was chosen: the common HTTP metrics count it */
    const char *model = p->public_model;
    int code = p->r->req->res.status != 0 ? p->r->req->res.status : 499;
    char status[4] = { (char)('0' + code / 100 % 10), (char)('0' + code / 10 % 10), (char)('0' + code % 10), '\0' };
    uint64_t total = tp_mono_ns() - p->start_ns;
    tp_metric_add(metrics.requests,
                  (const char *[]){ model, p->last_deployment != NULL ? p->last_deployment : "none", status }, 1);
    tp_metric_observe(metrics.duration, (const char *[]){ model }, (double)total / 1e9);
    if (p->first_byte_ns != 0)
        tp_metric_observe(metrics.ttft, (const char *[]){ model }, (double)(p->first_byte_ns - p->start_ns) / 1e9);
    if (p->upstream_ns <= total)
        tp_metric_observe(metrics.overhead, (const char *[]){ model }, (double)(total - p->upstream_ns) / 1e9);
    if (p->relay.usage.seen) {
        tp_metric_add(metrics.tokens, (const char *[]){ model, "prompt" }, (double)p->relay.usage.prompt_tokens);
        tp_metric_add(metrics.tokens, (const char *[]){ model, "completion" },
                      (double)p->relay.usage.completion_tokens);
        /* Labelled by the model asked for, like every model-gw metric; priced as the model that
         * answered, as in its usage row. */
        int64_t micros = pol_gate_cost_micros(p->gw->gate, p->answering_model, p->relay.usage.prompt_tokens,
                                              p->relay.usage.completion_tokens);
        if (micros > 0)
            tp_metric_add(metrics.cost, (const char *[]){ model }, (double)micros / 1e6);
    }
    if (p->relay.repairs > 0)
        tp_metric_add(metrics.repairs, (const char *[]){ model }, p->relay.repairs);
}

static void
count_upstream_error(proxy_t *p, const char *label, const char *kind)
{
    tp_metric_add(metrics.upstream_errors, (const char *[]){ p->public_model, label, kind }, 1);
}

/* Cancels the upstream call or the pending retry, and gives the deployment's slot back. */
static void
stop_upstream(proxy_t *p)
{
    if (p->call != NULL) {
        tp_upstream_cancel(p->call);
        p->call = NULL;
    }
    if (p->backoff != NULL) {
        p->backoff->p = NULL;
        uv_timer_stop(&p->backoff->timer);
        uv_close((uv_handle_t *)&p->backoff->timer, on_backoff_closed);
        p->backoff = NULL;
    }
    release_deployment(p);
}

/* The request's end (arg points to the proxy_t *; see handle). */
static void
on_dispose(void *arg)
{
    proxy_t *p = *(proxy_t **)arg;
    list_remove(p);
    stop_upstream(p);
    record_metrics(p);
    settle(p);
    pol_verdict_clear(&p->verdict);
    json_decref(p->body);
    mg_response_load_cancel(p->load);
    mg_responses_stream_dispose(&p->rstream);
    mg_responses_req_clear(&p->rreq);
    json_decref(p->client);
    mg_buffer_release(&p->in);
    mg_buffer_release(&p->answer);
    mg_buffer_release(&p->pending);
    mg_buffer_release(&p->inflight);
    tp_sse_dispose(&p->sse);
}

/* An error before anything reached the client: the OpenAI envelope. */
static void
fail(proxy_t *p, int status, const char *code, const char *param, const char *message)
{
    /* No answer came from a model: give the reservation back, record no usage. */
    pol_gate_cancel(p->gw->gate, &p->reservation);
    p->accounted = false;
    mg_send_error(p->r, status, code, param, message);
    p->finished = true;
}

/* ---- streaming to the client ---- */

static void flush(proxy_t *p);
static void append_error_event(proxy_t *p, const char *message, const char *type, const char *code);

static void
on_proceed(h2o_generator_t *self, h2o_req_t *req)
{
    proxy_t *p = (proxy_t *)self;
    p->sending = false;
    p->inflight.len = 0;
    if (p->paused && p->pending.len < LOW_WATER && p->call != NULL) {
        p->paused = false;
        tp_upstream_resume(p->call);
    }
    flush(p);
}

static void
on_stop(h2o_generator_t *self, h2o_req_t *req)
{
    /* The client went away: stop the upstream too (its tokens are still settled). */
    proxy_t *p = (proxy_t *)self;
    p->finished = true;
    if (p->call != NULL) {
        tp_upstream_cancel(p->call);
        p->call = NULL;
    }
}

/* Sends what is queued when h2o is ready for it; ends the response once the upstream ended. */
static void
flush(proxy_t *p)
{
    if (p->sending || p->finished)
        return;
    bool last = p->upstream_done;
    if (p->pending.len == 0 && !last)
        return;
    mg_buffer_t t = p->inflight;
    p->inflight = p->pending;
    p->pending = t;
    p->pending.len = 0;
    h2o_iovec_t buf = h2o_iovec_init(p->inflight.data, p->inflight.len);
    p->sending = !last;
    if (last)
        p->finished = true;
    h2o_send(p->r->req, &buf, buf.len != 0 ? 1 : 0, last ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void
start_stream(proxy_t *p)
{
    h2o_req_t *req = p->r->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    p->super.proceed = on_proceed;
    p->super.stop = on_stop;
    h2o_start_response(req, &p->super);
    p->started = true;
    if (p->ep->dialect == DIALECT_RESPONSES)
        mg_responses_stream_begin(&p->rstream, &p->pending);
}

/* ---- translated APIs ---- */

/* Stores the Response (borrowed; never modified afterwards) once, when the client asked for it.
 * text: the Response as printed for the client already, or NULL. */
static void
save_response(proxy_t *p, json_t *object, const char *text)
{
    if (p->saved || p->ep->dialect != DIALECT_RESPONSES || !p->rreq.store || object == NULL)
        return;
    p->saved = true;
    const char *status = json_string_value(json_object_get(object, "status"));
    mg_response_store_put(p->gw->responses, p->object_id, p->verdict.identity.principal->id, p->public_model,
                          p->rreq.previous_response_id, status != NULL ? status : "completed",
                          p->rctx.created_at * 1000, json_incref(p->rreq.input_items), json_incref(object), text);
}

/* Translates one streamed upstream event (a chat chunk, or [DONE]) into the client's API. */
static void
translate_event(proxy_t *p, const char *event, size_t len)
{
    bool responses = p->ep->dialect == DIALECT_RESPONSES;
    if (len == 6 && memcmp(event, "[DONE]", 6) == 0) {
        p->seen_done = true;
        if (responses) {
            mg_responses_stream_end(&p->rstream, &p->pending);
            save_response(p, p->rstream.result, NULL);
        } else {
            mg_anthropic_stream_end(&p->astream, &p->pending);
        }
        return;
    }
    json_t *chunk = json_loadb(event, len, 0, NULL);
    if (!json_is_object(chunk)) {
        tp_log_fields(TP_LOG_DEBUG, p->r->id, "an upstream event that is not a JSON object was skipped",
                      json_pack("{s:s}", "model", p->public_model));
        json_decref(chunk);
        return;
    }
    json_t *error = json_object_get(chunk, "error");
    if (json_is_object(error) && json_object_get(chunk, "choices") == NULL) {
        /* An inference server reporting a failure inside the stream (vLLM does). */
        const char *msg = json_string_value(json_object_get(error, "message"));
        char text[512];
        snprintf(text, sizeof(text), "the upstream failed mid-stream: %s", msg != NULL ? msg : "no message");
        append_error_event(p, text, "api_error", "upstream_error");
        json_decref(chunk);
        return;
    }
    mg_relay_chunk_json(&p->relay, chunk);
    if (responses)
        mg_responses_stream_chunk(&p->rstream, chunk, &p->pending);
    else
        mg_anthropic_stream_chunk(&p->astream, chunk, &p->pending);
    json_decref(chunk);
}

/* Answers with a whole chat completion (taken) in the client's API, printed once for the client
 * and, for a stored Response, the store. */
static void
send_translated(proxy_t *p, json_t *completion)
{
    bool responses = p->ep->dialect == DIALECT_RESPONSES;
    json_t *answer =
        responses ? mg_responses_from_completion(&p->rctx, completion) : mg_anthropic_message(&p->actx, completion);
    json_decref(completion);
    p->finished = true;
    char *text = json_dumps(answer, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        tp_http_send_json(p->r, 200, answer); /* (its fixed 500 for what cannot be printed) */
        return;
    }
    save_response(p, answer, text);
    tp_http_send(p->r, 200, "application/json", text, strlen(text));
    free(text);
    json_decref(answer);
}

static int
on_event(void *data, const char *event, size_t len)
{
    proxy_t *p = data;
    if (!p->started) {
        p->first_byte_ns = tp_mono_ns();
        start_stream(p);
    }
    if (p->ep->dialect != DIALECT_OPENAI) {
        translate_event(p, event, len);
        return 0;
    }
    if (len == 6 && memcmp(event, "[DONE]", 6) == 0)
        p->seen_done = true;
    mg_relay_chunk(&p->relay, event, len, &p->pending);
    return 0;
}

/* Queues an error event in the client's API: for chat completions data:
 * {"error":{"message","type","param":null,"code"}}; response.failed (the Response stored as
 * failed); Anthropic's error event. */
static void
append_error_event(proxy_t *p, const char *message, const char *type, const char *code)
{
    if (p->ep->dialect == DIALECT_RESPONSES) {
        mg_responses_stream_fail(&p->rstream, code, message, &p->pending);
        save_response(p, p->rstream.result, NULL);
        return;
    }
    if (p->ep->dialect == DIALECT_MESSAGES) {
        mg_anthropic_stream_error(&p->astream, type, message, &p->pending);
        return;
    }
    json_t *e = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", message, "type", type, "param", "code", code);
    char *text = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    mg_buffer_add(&p->pending, "data: ", 6);
    mg_buffer_add(&p->pending, text, strlen(text));
    mg_buffer_add(&p->pending, "\n\n", 2);
    free(text);
}

static void
append_stream_error(proxy_t *p, const char *message)
{
    append_error_event(p, message, "api_error", "upstream_error");
}

/* ---- the upstream call ---- */

static bool
retryable(int status)
{
    return status == 429 || status >= 500;
}

static int
on_head(tp_upstream_call_t *call, int status, const h2o_header_t *headers, size_t num_headers)
{
    proxy_t *p = tp_upstream_call_data(call);
    p->upstream_status = status;
    if (p->deployment != NULL && !retryable(status))
        mg_deployment_outcome(p->public_model, p->deployment, true, p->r->id, "request");
    if (p->stream && status == 200 && !p->finished) {
        /* The client's response starts with the first event, not now: an upstream that answers
         * 200 and breaks before any event can still be retried elsewhere. */
        tp_sse_dispose(&p->sse);
        tp_sse_init(&p->sse, MAX_SSE_EVENT);
        p->relaying = true;
    }
    return 0;
}

static void
on_body(tp_upstream_call_t *call, const char *buf, size_t len)
{
    proxy_t *p = tp_upstream_call_data(call);
    if (!p->relaying) {
        if (p->in.len + len > MAX_UPSTREAM_BODY) {
            p->upstream_error = "the upstream's answer is too large";
            tp_upstream_cancel(call);
            p->call = NULL;
            fail(p, 502, "upstream_error", NULL, "the upstream's answer is too large");
            return;
        }
        mg_buffer_add(&p->in, buf, len);
        return;
    }
    if (tp_sse_feed(&p->sse, buf, len, on_event, p) != 0) {
        tp_upstream_cancel(call);
        p->call = NULL;
        release_deployment(p);
        if (!p->started)
            start_stream(p);
        append_stream_error(p, "the upstream sent an event larger than the gateway accepts");
        p->upstream_done = true;
    }
    if (p->pending.len > HIGH_WATER && !p->paused && p->call != NULL) {
        p->paused = true; /* a slow client: stop reading the upstream until it catches up */
        tp_upstream_pause(call);
    }
    flush(p);
}

/* Sends the relayed answer in p->answer as a complete 200 response. h2o sends from the buffer,
 * which stays with p until the request is disposed. */
static void
send_answer(proxy_t *p)
{
    static h2o_generator_t generator = { NULL, NULL }; /* one whole body: nothing to proceed or stop */
    h2o_req_t *req = p->r->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    req->res.content_length = p->answer.len;
    h2o_start_response(req, &generator);
    h2o_iovec_t buf = h2o_iovec_init(p->answer.data, p->answer.len);
    h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
    p->finished = true;
}

/* The whole (non-streamed) answer, or an upstream error answer before any commit. */
static void
finish_buffered(proxy_t *p)
{
    /* Most answers go out as the upstream's bytes with the model name changed; the others (tool
     * calls to check, text jansson would refuse) through jansson. */
    if (p->ep->dialect == DIALECT_OPENAI && p->upstream_status == 200 &&
        mg_relay_response_text(&p->relay, p->in.data, p->in.len, &p->answer)) {
        p->first_byte_ns = tp_mono_ns();
        send_answer(p);
        return;
    }
    json_t *body = json_loadb(p->in.data != NULL ? p->in.data : "", p->in.len, 0, NULL);
    if (p->upstream_status == 200 && json_is_object(body)) {
        p->first_byte_ns = tp_mono_ns();
        mg_relay_response(&p->relay, body);
        if (p->ep->dialect != DIALECT_OPENAI) {
            send_translated(p, body);
            return;
        }
        tp_http_send_json(p->r, 200, body);
        p->finished = true;
        return;
    }
    if (p->upstream_status == 200) {
        json_decref(body);
        fail(p, 502, "upstream_error", NULL, "the upstream's answer is not a JSON object");
        return;
    }
    /* 401, 403 and 404 from an upstream are about the gateway's credentials or configuration,
     * not the client's: a 502. Other 4xx are the client's to fix (a context too long, say): the
     * upstream's status, message, code and param pass on. */
    json_t *e = json_object_get(body, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *param = json_string_value(json_object_get(e, "param"));
    int st = p->upstream_status;
    bool clients = st >= 400 && st < 500 && st != 401 && st != 403 && st != 404;
    char text[512];
    snprintf(text, sizeof(text), "the upstream refused the request (HTTP %d): %s", st,
             msg != NULL ? msg : "no message");
    fail(p, clients ? st : 502, clients && code != NULL ? code : "upstream_error", clients ? param : NULL, text);
    json_decref(body);
}

static void
on_done(tp_upstream_call_t *call, const char *error)
{
    proxy_t *p = tp_upstream_call_data(call);
    p->call = NULL;
    mg_deployment_t *d = p->deployment;
    const char *label = d != NULL ? d->label : "none";
    release_deployment(p);
    if (error != NULL)
        count_upstream_error(p, label, strncmp(error, "timeout", 7) == 0 ? "timeout" : "connection");
    else if (retryable(p->upstream_status))
        count_upstream_error(p, label, p->upstream_status == 429 ? "status_429" : "status_5xx");
    if (d != NULL && (error != NULL || retryable(p->upstream_status)) && p->upstream_status != 200)
        mg_deployment_outcome(p->public_model, d, false, p->r->id, "request");
    if (p->finished)
        return;
    if (p->started) {
        /* Bytes reached the client: never retry; end the stream with an error event if it broke.
         * A stream without its [DONE] is broken even when the connection closed cleanly (h2o 2.2
         * reports a chunked body cut at a chunk boundary as complete). */
        if (error != NULL || tp_sse_pending(&p->sse) || !p->seen_done) {
            char msg[256];
            snprintf(msg, sizeof(msg), "the upstream failed mid-stream: %s",
                     error != NULL             ? error
                     : tp_sse_pending(&p->sse) ? "the stream ended inside an event"
                                               : "the stream ended before [DONE]");
            append_stream_error(p, msg);
            tp_log_fields(TP_LOG_WARN, p->r->id, "upstream failed mid-stream",
                          json_pack("{s:s, s:s}", "model", p->public_model, "error", msg));
        }
        p->upstream_done = true;
        flush(p);
        return;
    }
    if (p->relaying && error == NULL)
        error = "the stream ended before its first event";
    p->relaying = false;
    bool retry = error != NULL || retryable(p->upstream_status);
    if (retry && p->attempt + 1 < p->num_attempts) {
        tp_log_fields(
            TP_LOG_INFO, p->r->id, "retrying another deployment",
            json_pack("{s:s, s:s?, s:i}", "model", p->public_model, "error", error, "status", p->upstream_status));
        tp_metric_add(metrics.retries, (const char *[]){ p->public_model }, 1);
        p->attempt++;
        p->in.len = 0;
        retry_later(p);
        return;
    }
    if (error != NULL) {
        char msg[400];
        snprintf(msg, sizeof(msg), "no deployment of model '%s' answered: %s", p->public_model, error);
        fail(p, strstr(error, "timeout") != NULL ? 504 : 502, "upstream_unavailable", NULL, msg);
        return;
    }
    if (retryable(p->upstream_status)) {
        char msg[400];
        snprintf(msg, sizeof(msg), "every deployment of model '%s' is busy or failing (last: HTTP %d)", p->public_model,
                 p->upstream_status);
        if (p->upstream_status == 429)
            tp_http_add_header(p->r, "retry-after", "1");
        fail(p, p->upstream_status == 429 ? 503 : 502, "upstream_unavailable", NULL, msg);
        return;
    }
    finish_buffered(p);
}

static const tp_upstream_handlers_t handlers = { .on_head = on_head, .on_body = on_body, .on_done = on_done };

/* Takes a slot of d's concurrency cap; false when it is full. */
static bool
claim(mg_deployment_t *d)
{
    int cap = d->cfg->max_concurrency, n = atomic_load(&d->inflight);
    do {
        if (cap > 0 && n >= cap)
            return false;
    } while (!atomic_compare_exchange_weak(&d->inflight, &n, n + 1));
    return true;
}

/* The body for deployment d when p->spliced: the client's bytes with d's model name in place of
 * the model value and, for a stream, usage asked for. Written to buf, or the client's body itself
 * when nothing changes. */
static h2o_iovec_t
splice_body(proxy_t *p, const mg_deployment_t *d, mg_buffer_t *buf)
{
    static const char options[] = "{\"include_usage\":true}";
    h2o_iovec_t entity = p->r->req->entity;
    bool model_changes = strcmp(d->upstream_model, p->public_model) != 0;
    if (!model_changes && p->options_at.base == NULL)
        return entity;
    /* At most two edits, applied in the order they appear in the body. */
    struct edit {
        h2o_iovec_t at;
        bool model;
    } edits[2];
    size_t n = 0;
    if (model_changes)
        edits[n++] = (struct edit){ p->model_value, true };
    if (p->options_at.base != NULL) {
        edits[n++] = (struct edit){ p->options_at, false };
        if (n == 2 && edits[1].at.base < edits[0].at.base) {
            struct edit t = edits[0];
            edits[0] = edits[1];
            edits[1] = t;
        }
    }
    const char *from = entity.base;
    for (size_t i = 0; i < n; i++) {
        mg_buffer_add(buf, from, (size_t)(edits[i].at.base - from));
        if (edits[i].model) {
            char *w = mg_buffer_reserve(buf, mg_json_string_size(d->upstream_model));
            buf->len += mg_json_write_string(d->upstream_model, w);
        } else if (edits[i].at.len == 0) {
            mg_buffer_add(buf, ",\"stream_options\":", sizeof(",\"stream_options\":") - 1); /* a new member */
            mg_buffer_add(buf, options, sizeof(options) - 1);
        } else {
            mg_buffer_add(buf, options, sizeof(options) - 1);
        }
        from = edits[i].at.base + edits[i].at.len;
    }
    mg_buffer_add(buf, from, (size_t)(entity.base + entity.len - from));
    return h2o_iovec_init(buf->data, buf->len);
}

/* Decides whether upstream bodies can be spliced from the client's bytes (see proxy_t), and
 * where. They can when the body has no duplicate keys (checked by the parse), its keys are
 * written plainly, and stream_options is absent, null or already asks for usage. Otherwise
 * p->body is changed to what upstreams get and printed per attempt. */
static void
plan_body(proxy_t *p, bool duplicates)
{
    h2o_iovec_t entity = p->r->req->entity;
    json_t *opts = json_object_get(p->body, "stream_options");
    bool opts_ok = !p->stream || json_is_true(json_object_get(opts, "include_usage"));
    mg_json_object_t obj;
    const mg_json_member_t *model;
    size_t count;
    if (!duplicates && mg_json_scan_object(entity.base, entity.len, &obj) && !obj.escaped_keys &&
        (model = mg_json_find(&obj, "model", &count)) != NULL && count == 1) {
        const mg_json_member_t *options = mg_json_find(&obj, "stream_options", NULL);
        p->spliced = true;
        p->model_value = h2o_iovec_init(model->value, model->value_len);
        if (!opts_ok && options == NULL)
            p->options_at = h2o_iovec_init(obj.close, 0);
        else if (!opts_ok && json_is_null(opts))
            p->options_at = h2o_iovec_init(options->value, options->value_len);
        else if (!opts_ok)
            p->spliced = false; /* an object without include_usage: jansson adds it */
    }
    if (p->spliced || opts_ok)
        return;
    /* Usage is always asked for (budgets need it). */
    if (!json_is_object(opts)) {
        opts = json_object();
        json_object_set_new(p->body, "stream_options", opts);
    }
    json_object_set_new(opts, "include_usage", json_true());
}

static void
start_attempt(proxy_t *p)
{
    while (p->attempt < p->num_attempts && !claim(p->attempts[p->attempt]))
        p->attempt++; /* at its cap since the plan was made */
    if (p->attempt == p->num_attempts) {
        tp_http_add_header(p->r, "retry-after", "1");
        fail(p, 503, "upstream_unavailable", NULL, "every deployment of this model is at its concurrency limit");
        return;
    }
    mg_deployment_t *d = p->attempts[p->attempt];
    p->deployment = d;
    p->answering_model = p->attempts_model[p->attempt]->cfg->name;
    p->last_deployment = d->label;
    p->last_upstream = d->cfg->url;
    p->attempt_start_ns = tp_mono_ns();
    tp_metric_add(metrics.inflight, (const char *[]){ p->public_model, d->label }, 1);
    p->relaying = false;
    p->seen_done = false;
    p->upstream_status = 0;
    mg_buffer_t spliced = { 0 };
    char *printed = NULL;
    h2o_iovec_t body;
    if (p->spliced) {
        body = splice_body(p, d, &spliced);
    } else {
        json_object_set_new(p->body, "model", json_string(d->upstream_model));
        printed = json_dumps(p->body, JSON_COMPACT | JSON_PRESERVE_ORDER);
        body = h2o_iovec_init(printed, strlen(printed));
    }
    tp_upstream_header_t hdrs[] = {
        { h2o_iovec_init(H2O_STRLIT("content-type")), h2o_iovec_init(H2O_STRLIT("application/json")) },
        { h2o_iovec_init(H2O_STRLIT("x-request-id")), h2o_iovec_init(p->r->id, strlen(p->r->id)) },
    };
    tp_upstream_request_t req = {
        .method = "POST",
        .path = h2o_iovec_init(p->ep->path, strlen(p->ep->path)),
        .headers = hdrs,
        .num_headers = sizeof(hdrs) / sizeof(hdrs[0]),
        .body = body,
    };
    p->call = tp_upstream_call(d->upstream, tp_worker_h2o(p->r->worker), &req, &handlers, p);
    /* tp_upstream_call copied the request */
    mg_buffer_release(&spliced);
    free(printed);
}

/* The request's affinity key for the model, or {NULL, 0} when it has none. */
static h2o_iovec_t
affinity_key(proxy_t *p, const mg_model_t *m)
{
    const char *a = m->cfg->affinity;
    if (a == NULL || a[0] == '\0')
        return h2o_iovec_init(NULL, 0);
    if (strcmp(a, "user") == 0) {
        json_t *user = json_object_get(p->body, "user");
        return json_is_string(user) ? h2o_iovec_init(json_string_value(user), json_string_length(user))
                                    : h2o_iovec_init(NULL, 0);
    }
    char name[128];
    size_t n = 0;
    for (const char *c = a + 7; *c != '\0' && n + 1 < sizeof(name); c++)
        name[n++] = (char)h2o_tolower(*c);
    name[n] = '\0';
    return tp_http_header(p->r, name);
}

/* The attempts: the model's deployments by current load, then each fallback model's. */
static void
plan_attempts(proxy_t *p, mg_model_t *m)
{
    mg_model_t *chain[1 + 8];
    size_t n = 0;
    chain[n++] = m;
    for (size_t i = 0; i < m->cfg->fallback_count && n < sizeof(chain) / sizeof(chain[0]); i++) {
        mg_model_t *f = mg_models_find(p->gw->models, m->cfg->fallbacks[i]);
        /* A fallback is another model: the caller must be allowed to use it too. */
        if (f != NULL && pol_gate_permits(p->gw->gate, &p->verdict, f->cfg->name, p->ep->action))
            chain[n++] = f;
    }
    h2o_iovec_t key = affinity_key(p, m);
    for (size_t c = 0; c < n && p->num_attempts < MAX_ATTEMPTS; c++) {
        mg_deployment_t *first =
            c == 0 && key.base != NULL ? mg_model_pick_affine(chain[c], key.base, key.len) : mg_model_pick(chain[c]);
        if (first == NULL)
            continue; /* every deployment of this model is at its concurrency cap */
        p->attempts_model[p->num_attempts] = chain[c];
        p->attempts[p->num_attempts++] = first;
        for (size_t i = 0; i < chain[c]->num_deployments && p->num_attempts < MAX_ATTEMPTS; i++) {
            mg_deployment_t *d = &chain[c]->deployments[i];
            if (d != first && atomic_load(&d->open_until_ms) == 0 && mg_deployment_in_rotation(d)) {
                p->attempts_model[p->num_attempts] = chain[c];
                p->attempts[p->num_attempts++] = d;
            }
        }
        if (chain[c]->num_deployments == 1 && p->num_attempts < MAX_ATTEMPTS) {
            /* A lone deployment gets one retry of its own, after a backoff (see retry_later). */
            p->attempts_model[p->num_attempts] = chain[c];
            p->attempts[p->num_attempts++] = first;
        }
    }
}

/* ---- the handler ---- */

static int64_t
estimate_tokens(proxy_t *p)
{
    /* About four bytes a token for the prompt, plus what the request may generate. */
    int64_t bytes = p->body_bytes > 0 ? p->body_bytes : (int64_t)p->r->req->entity.len;
    p->est_prompt_tokens = bytes / 4 + 1;
    json_t *max = json_object_get(p->body, "max_completion_tokens");
    if (!json_is_integer(max))
        max = json_object_get(p->body, "max_tokens");
    int64_t out = json_is_integer(max) ? json_integer_value(max) : (p->ep == &embeddings ? 0 : DEFAULT_EST_TOKENS);
    if (out < 0 || out > MAX_EST_TOKENS)
        out = MAX_EST_TOKENS; /* no overflow, and no request may reserve more than this */
    return p->est_prompt_tokens + out;
}

/* Why a request found no deployment to try: all at their caps, or none in rotation. */
static const char *
no_deployment_reason(const mg_model_t *m)
{
    for (size_t i = 0; i < m->num_deployments; i++) {
        if (mg_deployment_in_rotation(&m->deployments[i]))
            return "every deployment of this model is at its concurrency limit";
    }
    return "no deployment of this model is in rotation: each is drained or warming up";
}

/* Once the body upstreams get is known (p->body) and the caller may use model m: the size
 * limit, the token reservation, the plan, and the first attempt. */
static void
admit(proxy_t *p, mg_model_t *m, bool duplicates)
{
    tp_request_t *r = p->r;
    h2o_iovec_t entity = r->req->entity;
    if (m->cfg->max_input_bytes > 0 && (int64_t)entity.len > m->cfg->max_input_bytes) {
        fail(p, 413, "request_too_large", NULL, "the request is larger than this model accepts");
        return;
    }
    if (p->ep->dialect != DIALECT_OPENAI) {
        /* What goes upstream is checked as any chat request is: the translation's own checks
         * should have caught everything, but the upstream must never see a body that a chat
         * client could not have sent. */
        mg_invalid_t invalid;
        if (!mg_validate_chat(p->body, m->cfg, &invalid)) {
            char msg[sizeof(invalid.message) + sizeof(invalid.param) + 80];
            snprintf(msg, sizeof(msg), "the request cannot be served as a chat completion: %s%s%s", invalid.param,
                     invalid.param[0] != '\0' ? ": " : "", invalid.message);
            fail(p, 400, "invalid_request", NULL, msg);
            return;
        }
    }
    if (!pol_gate_reserve(p->gw->gate, r, &p->verdict, p->public_model, estimate_tokens(p), &p->reservation)) {
        pol_gate_refuse(r, &p->verdict);
        p->finished = true;
        return;
    }
    json_t *stream = json_object_get(p->ep->dialect != DIALECT_OPENAI ? p->client : p->body, "stream");
    p->stream = p->ep->can_stream && json_is_true(stream);
    p->relay.public_model = p->public_model;
    p->relay.request_id = r->id;
    /* Usage is always asked for (budgets need it); the client gets it only if it asked. */
    p->relay.client_wants_usage =
        p->stream && json_is_true(json_object_get(json_object_get(p->body, "stream_options"), "include_usage"));
    if (p->ep->dialect == DIALECT_OPENAI)
        plan_body(p, duplicates);
    p->accounted = true;
    p->model = m;
    plan_attempts(p, m);
    if (p->num_attempts == 0) {
        tp_http_add_header(r, "retry-after", "1");
        fail(p, 503, "upstream_unavailable", NULL, no_deployment_reason(m));
        return;
    }
    start_attempt(p);
}

/* A unique id for what a translated API answers: prefix and 24 random bytes in hex. */
static void
make_object_id(char *out, size_t size, const char *prefix)
{
    unsigned char raw[24];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno != EINTR)
            tp_fatal("getrandom failed");
        got += n > 0 ? (size_t)n : 0;
    }
    size_t at = (size_t)snprintf(out, size, "%s", prefix);
    for (size_t i = 0; i < sizeof(raw) && at + 2 < size; i++)
        at += (size_t)snprintf(out + at, size - at, "%02x", raw[i]);
}

/* Responses: builds the chat body from the conversation so far (history, borrowed; NULL for
 * none) and the request, then admits it. */
static void
build_responses_body(proxy_t *p, json_t *history)
{
    mg_invalid_t invalid;
    if (!mg_responses_chat_body(p->client, &p->rreq, history, &p->body, &invalid)) {
        fail(p, 400, "invalid_request", invalid.param[0] != '\0' ? invalid.param : NULL, invalid.message);
        return;
    }
    admit(p, p->model, false);
}

/* The conversation that previous_response_id continues, read from the store. */
static void
on_history(mg_response_chain_t *chain, void *data)
{
    proxy_t *p = data;
    p->load = NULL;
    if (p->finished) {
        mg_response_chain_clear(chain); /* killed, or the client left, meanwhile */
        return;
    }
    if (chain->n == 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "Previous response with id '%.200s' not found.", p->rreq.previous_response_id);
        fail(p, 400, "previous_response_not_found", "previous_response_id", msg);
        return;
    }
    json_t *history = mg_response_chain_history(chain);
    /* The conversation makes the body larger than what the client sent: the token estimate
     * counts what goes upstream (the stored text's size, without printing it again). */
    p->body_bytes = (int64_t)p->r->req->entity.len;
    for (size_t i = 0; i < chain->n; i++)
        p->body_bytes += (int64_t)mg_stored_response_text_bytes(chain->items[i]);
    mg_response_chain_clear(chain);
    build_responses_body(p, history);
    json_decref(history);
}

/* Validates the body in the client's API and, for a translated one, builds the chat body.
 * Returns the public model name asked for, or NULL after answering 400. */
static const char *
validate_body(proxy_t *p, mg_model_t *m)
{
    mg_invalid_t invalid;
    const tp_model_config_t *cfg = m != NULL ? m->cfg : NULL;
    bool ok;
    switch (p->ep->dialect) {
    case DIALECT_RESPONSES:
        ok = mg_responses_parse(p->client, cfg, p->r->id, &p->rreq, &invalid);
        break;
    case DIALECT_MESSAGES:
        ok = mg_anthropic_request(p->client, cfg, &p->body, &invalid);
        break;
    default:
        ok = p->ep->validate(p->body, cfg, &invalid);
        break;
    }
    if (!ok) {
        fail(p, 400, "invalid_request", invalid.param[0] != '\0' ? invalid.param : NULL, invalid.message);
        return NULL;
    }
    return json_string_value(json_object_get(p->ep->dialect != DIALECT_OPENAI ? p->client : p->body, "model"));
}

/* The context a translated answer needs, once the request is known to go upstream. */
static void
prepare_translation(proxy_t *p)
{
    if (p->ep->dialect == DIALECT_RESPONSES) {
        make_object_id(p->object_id, sizeof(p->object_id), "resp_");
        p->rctx = (mg_responses_ctx_t){
            .id = p->object_id, .public_model = p->public_model, .created_at = tp_unix_ms() / 1000, .request = p->client
        };
        mg_responses_stream_init(&p->rstream, &p->rctx);
        p->saved = !p->rreq.store;
    } else if (p->ep->dialect == DIALECT_MESSAGES) {
        make_object_id(p->object_id, sizeof(p->object_id), "msg_");
        json_t *stops = json_object_get(p->client, "stop_sequences");
        p->actx = (mg_anthropic_ctx_t){ .public_model = p->public_model,
                                        .message_id = p->object_id,
                                        .stop_sequences = json_is_array(stops) ? stops : NULL };
        mg_anthropic_stream_init(&p->astream, &p->actx);
    }
}

static int
handle(tp_request_t *r, mg_gateway_t *gw, const endpoint_t *ep)
{
    /* p is plain pool memory (freed after every dispose of the pool has run); its dispose hook
     * is registered after pol_gate_authenticate, which holds the request's snapshot for the
     * verdict. h2o releases a pool's shared allocations newest first, so the hook, which settles
     * usage from that snapshot, runs while the gate's hold still keeps it: one hold per request. */
    proxy_t *p = h2o_mem_alloc_pool(&r->req->pool, sizeof(*p));
    memset(p, 0, sizeof(*p));
    p->r = r;
    p->gw = gw;
    p->ep = ep;
    p->start_ns = tp_mono_ns();
    bool authenticated = pol_gate_authenticate(gw->gate, r, &p->verdict);
    *(proxy_t **)h2o_mem_alloc_shared(&r->req->pool, sizeof(p), on_dispose) = p;
    if (!authenticated) {
        pol_gate_refuse(r, &p->verdict);
        return 0;
    }
    list_add(p); /* a kill seen from now on ends it (mg_proxy_kill) */
    if (ep->dialect == DIALECT_MESSAGES && tp_http_header(r, "anthropic-version").len == 0) {
        fail(p, 400, "invalid_request", NULL, "anthropic-version: header is required");
        return 0;
    }
    json_error_t jerr;
    h2o_iovec_t entity = r->req->entity;
    const char *text = entity.base != NULL ? entity.base : "";
    /* Parsed refusing duplicate keys first: a body without them can be forwarded as its own bytes
     * (plan_body), since then the upstream reads what validation checked. One with them is
     * parsed again as jansson reads it (the last value wins) and forwarded as jansson prints it. */
    json_t *body = json_loadb(text, entity.len, JSON_REJECT_DUPLICATES, &jerr);
    bool duplicates = body == NULL && json_error_code(&jerr) == json_error_duplicate_key;
    if (duplicates)
        body = json_loadb(text, entity.len, 0, &jerr);
    if (ep->dialect != DIALECT_OPENAI)
        p->client = body; /* p->body will be the chat body built from it */
    else
        p->body = body;
    if (!json_is_object(body)) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the request body must be a JSON object: %s",
                 body == NULL ? jerr.text : "got another JSON value");
        fail(p, 400, "invalid_json", NULL, msg);
        return 0;
    }
    const char *asked = json_string_value(json_object_get(body, "model"));
    mg_model_t *m = asked != NULL ? mg_models_find(gw->models, asked) : NULL;
    const char *name = validate_body(p, m);
    if (name == NULL)
        return 0;
    size_t name_len = strnlen(name, sizeof(p->public_model) - 1);
    memcpy(p->public_model, name, name_len); /* (a longer name is no configured model: 404 below) */
    p->public_model[name_len] = '\0';
    /* One policy evaluation decides: a model the caller may not use reads as absent (its name
     * is not the caller's business), like one that does not exist. */
    if (m == NULL || !pol_gate_authorize(gw->gate, r, name, ep->action, &p->verdict)) {
        if (m != NULL && p->verdict.outcome != POL_OUTCOME_FORBIDDEN) {
            pol_gate_refuse(r, &p->verdict); /* a rate limit */
            p->finished = true;
            return 0;
        }
        char msg[400];
        snprintf(msg, sizeof(msg), "The model '%s' does not exist or you do not have access to it.", name);
        fail(p, 404, "model_not_found", "model", msg);
        return 0;
    }
    p->model = m;
    prepare_translation(p);
    if (ep->dialect == DIALECT_RESPONSES) {
        if (p->rreq.previous_response_id == NULL)
            build_responses_body(p, NULL);
        else
            p->load = mg_response_store_load(gw->responses, tp_worker_loop(r->worker), p->rreq.previous_response_id,
                                             p->verdict.identity.principal->id, true, on_history, p);
        return 0;
    }
    admit(p, m, duplicates);
    return 0;
}

/* ---- kills ---- */

/* Ends one request for a kill: see mg_proxy_kill. */
static void
kill_proxy(proxy_t *p, const pol_kill_t *k)
{
    const pol_principal_t *who = p->verdict.identity.principal;
    char msg[300];
    snprintf(msg, sizeof(msg), "%s '%s' is suspended by an operator; ask them to release it", pol_kind_name(who->kind),
             who->id);
    /* The operator's reason may be an internal incident note: it goes to the log only. */
    tp_log_fields(TP_LOG_WARN, p->r->id, "ended by a kill switch",
                  json_pack("{s:s, s:s, s:b, s:s, s:s, s:s}", "principal", who->id, "model", p->public_model,
                            "streaming", p->started, "kill_kind", k->target_kind, "kill_target", k->target, "reason",
                            k->reason));
    p->killed = true;
    stop_upstream(p);
    if (p->started) {
        append_error_event(p, msg, "permission_error", "suspended");
        p->upstream_done = true;
        flush(p);
    } else {
        fail(p, 403, "suspended", NULL, msg);
    }
}

void
mg_proxy_kill(mg_gateway_t *gw, tp_worker_t *w, const pol_snapshot_t *snap)
{
    if (snap->num_kills == 0)
        return;
    int64_t now = tp_unix_ms();
    for (proxy_t *p = gw->active[tp_worker_id(w)], *next; p != NULL; p = next) {
        next = p->next;
        if (p->finished || p->killed || p->upstream_done)
            continue;
        for (size_t i = 0; i < snap->num_kills; i++) {
            if (pol_kill_covers(&snap->kills[i], p->verdict.identity.principal, now)) {
                kill_proxy(p, &snap->kills[i]);
                break;
            }
        }
    }
}

static int
handle_chat(tp_request_t *r, void *data)
{
    return handle(r, data, &chat);
}

static int
handle_completions(tp_request_t *r, void *data)
{
    return handle(r, data, &completions);
}

static int
handle_embeddings(tp_request_t *r, void *data)
{
    return handle(r, data, &embeddings);
}

static int
handle_responses(tp_request_t *r, void *data)
{
    return handle(r, data, &responses_api);
}

static int
handle_messages(tp_request_t *r, void *data)
{
    return handle(r, data, &messages_api);
}

static void
register_metrics(tp_metrics_t *reg)
{
    static const double ttft_buckets[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
    static const double overhead_buckets[] = { 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05 };
    metrics.requests = tp_metrics_counter(reg, "triplane_model_requests_total",
                                          "Model requests by public model, last deployment tried and status.",
                                          (const char *[]){ "model", "deployment", "status", NULL });
    metrics.duration = tp_metrics_histogram(
        reg, "triplane_model_request_duration_seconds", "Model request duration as the client saw it.",
        (const char *[]){ "model", NULL }, tp_metrics_latency_buckets, tp_metrics_latency_buckets_count);
    metrics.ttft = tp_metrics_histogram(reg, "triplane_model_time_to_first_token_seconds",
                                        "Time to the first streamed event (or the whole answer when not streamed).",
                                        (const char *[]){ "model", NULL }, ttft_buckets,
                                        sizeof(ttft_buckets) / sizeof(ttft_buckets[0]));
    metrics.overhead = tp_metrics_histogram(reg, "triplane_model_gateway_overhead_seconds",
                                            "Time a model request spent in the gateway, not waiting on upstreams.",
                                            (const char *[]){ "model", NULL }, overhead_buckets,
                                            sizeof(overhead_buckets) / sizeof(overhead_buckets[0]));
    metrics.tokens = tp_metrics_counter(reg, "triplane_model_tokens_total", "Tokens reported by upstreams.",
                                        (const char *[]){ "model", "kind", NULL });
    metrics.cost = tp_metrics_counter(reg, "triplane_model_cost_total",
                                      "Cost of the tokens used, from the pricing section, in its currency.",
                                      (const char *[]){ "model", NULL });
    metrics.upstream_errors =
        tp_metrics_counter(reg, "triplane_model_upstream_errors_total", "Failed upstream attempts by kind.",
                           (const char *[]){ "model", "deployment", "kind", NULL });
    metrics.retries =
        tp_metrics_counter(reg, "triplane_model_retries_total", "Attempts on another deployment or fallback model.",
                           (const char *[]){ "model", NULL });
    metrics.repairs = tp_metrics_counter(reg, "triplane_model_contract_repairs_total",
                                         "Tool-call contract breaks by upstreams that the gateway repaired.",
                                         (const char *[]){ "model", NULL });
    metrics.inflight =
        tp_metrics_gauge(reg, "triplane_model_deployment_in_flight", "Requests in flight per deployment.",
                         (const char *[]){ "model", "deployment", NULL });
    metrics.circuit = tp_metrics_gauge(reg, "triplane_model_deployment_circuit_open",
                                       "1 while a deployment's circuit breaker is open (it is not tried).",
                                       (const char *[]){ "model", "deployment", NULL });
}

void
mg_proxy_register(mg_gateway_t *gw)
{
    register_metrics(tp_daemon_metrics(gw->daemon));
    tp_server_t *srv = tp_daemon_server(gw->daemon);
    tp_server_route(srv, "POST", "/v1/chat/completions", false, handle_chat, gw);
    tp_server_route(srv, "POST", "/v1/completions", false, handle_completions, gw);
    tp_server_route(srv, "POST", "/v1/embeddings", false, handle_embeddings, gw);
    tp_server_route(srv, "POST", "/v1/responses", false, handle_responses, gw);
    tp_server_route(srv, "POST", "/v1/messages", false, handle_messages, gw);
}
