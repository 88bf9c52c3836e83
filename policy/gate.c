#include "gate.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "http.h"
#include "jwt_verify.h"
#include "log.h"
#include "mem.h"
#include "ratelimit.h"
#include "snapshot.h"

#define RATELIMIT_MAX_KEYS 65536 /* distinct (scope, resource) buckets held at once */
#define QUERY_VALUE_MAX    256

struct pol_gate {
    tp_daemon_t *daemon;
    char *plane;
    pol_jwt_verifier_t *jwt; /* NULL when no issuer is configured */
    pol_ratelimit_t *limiter;
    pol_budgets_t *budgets;
};

/* ---- verdicts ---- */

__attribute__((format(printf, 5, 6))) static bool
refuse(pol_verdict_t *v, pol_outcome_t outcome, int status, const char *code, const char *fmt, ...)
{
    v->outcome = outcome;
    v->status = status;
    v->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->message, sizeof(v->message), fmt, ap);
    va_end(ap);
    return false;
}

void
pol_verdict_clear(pol_verdict_t *v)
{
    pol_identity_clear(&v->identity);
}

void
pol_gate_refuse(tp_request_t *r, const pol_verdict_t *v)
{
    if (v->status == 401)
        tp_http_add_header(r, "www-authenticate", "Bearer realm=\"triplane\"");
    if (v->status == 429) {
        char secs[32];
        snprintf(secs, sizeof(secs), "%.0f", ceil(v->retry_after_s > 0 ? v->retry_after_s : 1));
        tp_http_add_header(r, "retry-after", secs);
    }
    tp_http_error(r, v->status, v->code, v->message);
}

/* ---- the checks ---- */

bool
pol_kill_covers(const pol_kill_t *k, const pol_principal_t *p, int64_t now)
{
    if (k->expires_at_ms != 0 && k->expires_at_ms <= now)
        return false;
    if (strcmp(k->target_kind, "all") == 0)
        return true;
    if (strcmp(k->target_kind, "principal") == 0)
        return strcmp(k->target, p->id) == 0;
    if (strcmp(k->target_kind, "agent") == 0)
        return strcmp(k->target, p->id) == 0; /* whatever kind it was stored or asserted as */
    if (strcmp(k->target_kind, "team") == 0)
        return p->team != NULL && strcmp(k->target, p->team) == 0;
    return false;
}

static const pol_kill_t *
find_kill(const pol_snapshot_t *snap, const pol_principal_t *p, int64_t now)
{
    for (size_t i = 0; i < snap->num_kills; i++) {
        if (pol_kill_covers(&snap->kills[i], p, now))
            return &snap->kills[i];
    }
    return NULL;
}

bool
pol_gate_authenticate(pol_gate_t *g, tp_request_t *r, pol_verdict_t *v)
{
    memset(v, 0, sizeof(*v));
    /* Held until the request is disposed: the verdict points into it, and a plane settles
     * usage from callbacks long after this handler returned. */
    const pol_snapshot_t *snap = tp_daemon_request_state_hold(g->daemon, r);
    v->snapshot = snap;
    h2o_iovec_t auth = tp_http_header(r, "authorization");
    if (auth.len == 0) {
        /* Anthropic's clients send the key as x-api-key: the same credential, another header. */
        h2o_iovec_t key = tp_http_header(r, "x-api-key");
        if (key.len != 0)
            auth = h2o_concat(&r->req->pool, h2o_iovec_init(H2O_STRLIT("Bearer ")), key);
    }
    int64_t now = tp_unix_ms();
    v->authn = pol_authenticate(snap, g->jwt, auth.base, auth.len, now, &v->identity);
    if (v->authn != POL_AUTHN_OK) {
        tp_log_fields(TP_LOG_INFO, r->id, "authentication failed",
                      json_pack("{s:s, s:s}", "reason", pol_authn_status_name(v->authn), "plane", g->plane));
        return refuse(v, POL_OUTCOME_UNAUTHENTICATED, 401,
                      v->authn == POL_AUTHN_MISSING ? "missing_credentials" : "invalid_credentials", "%s",
                      pol_authn_status_message(v->authn));
    }
    const pol_principal_t *p = v->identity.principal;
    r->principal = h2o_mem_alloc_pool(&r->req->pool, strlen(p->id) + 1);
    memcpy((char *)r->principal, p->id, strlen(p->id) + 1);
    const pol_kill_t *k = find_kill(snap, p, now);
    if (k != NULL) {
        /* The operator's reason may be an internal incident note: it goes to the log only. */
        tp_log_fields(TP_LOG_WARN, r->id, "refused: kill switch",
                      json_pack("{s:s, s:s, s:s, s:s, s:s}", "principal", p->id, "plane", g->plane, "kill_kind",
                                k->target_kind, "kill_target", k->target, "reason", k->reason));
        return refuse(v, POL_OUTCOME_SUSPENDED, 403, "suspended",
                      "%s '%s' is suspended by an operator; ask them to release it", pol_kind_name(p->kind), p->id);
    }
    v->outcome = POL_OUTCOME_ALLOW;
    return true;
}

/* Whether a limit or budget scoped to (kind, scope) covers principal p. */
static bool
scope_covers(pol_budget_scope_t kind, const char *scope, const pol_principal_t *p)
{
    return kind == POL_BUDGET_PRINCIPAL ? strcmp(scope, p->id) == 0 : p->team != NULL && strcmp(scope, p->team) == 0;
}

/* Whether rate limit l covers p's requests for resource, and its bucket key for `what`
 * ("rpm" or "tpm") when it does. */
static bool
limit_covers(const pol_rate_limit_t *l, const pol_principal_t *p, const char *resource, const char *what, char key[512])
{
    if (!scope_covers(l->scope_kind, l->scope, p) || fnmatch(l->resource, resource, 0) != 0)
        return false;
    snprintf(key, 512, "%s|%s|%s|%s", what, pol_budget_scope_name(l->scope_kind), l->scope, l->resource);
    return true;
}

/* Takes one request from every requests-per-minute limit that covers the caller and resource. */
static bool
take_request_limits(pol_gate_t *g, const pol_snapshot_t *snap, const pol_principal_t *p, const char *resource,
                    pol_verdict_t *v)
{
    int64_t now = tp_mono_ns();
    for (size_t i = 0; i < snap->num_limits; i++) {
        const pol_rate_limit_t *l = &snap->limits[i];
        char key[512];
        if (l->requests_per_minute <= 0 || !limit_covers(l, p, resource, "rpm", key))
            continue;
        double retry = 0;
        if (!pol_ratelimit_take(g->limiter, key, (double)l->requests_per_minute, 0, 1, now, &retry)) {
            v->retry_after_s = retry;
            return refuse(v, POL_OUTCOME_RATE_LIMITED, 429, "rate_limit_exceeded",
                          "rate limit of %lld requests per minute for %s '%s' on '%s' reached; retry in %.0f s",
                          (long long)l->requests_per_minute, pol_budget_scope_name(l->scope_kind), l->scope,
                          l->resource, ceil(retry));
        }
    }
    return true;
}

bool
pol_gate_check(pol_gate_t *g, tp_request_t *r, const char *resource, const char *action, pol_verdict_t *v)
{
    return pol_gate_authenticate(g, r, v) && pol_gate_authorize(g, r, resource, action, v);
}

bool
pol_gate_authorize(pol_gate_t *g, tp_request_t *r, const char *resource, const char *action, pol_verdict_t *v)
{
    const pol_snapshot_t *snap = v->snapshot;
    const pol_principal_t *p = v->identity.principal;
    pol_request_t preq = {
        .principal = p,
        .plane = g->plane,
        .resource = resource,
        .action = action,
        .request_size = r->req->entity.base != NULL ? (int64_t)r->req->entity.len : 0,
        .now_ms = tp_unix_ms(),
    };
    v->decision = pol_evaluate(snap->rules, &preq, snap->default_allow);
    if (!v->decision.allow) {
        const char *rule = v->decision.rule != NULL ? pol_rule_id(v->decision.rule) : NULL;
        tp_log_fields(TP_LOG_INFO, r->id, "denied by policy",
                      json_pack("{s:s, s:s, s:s, s:s, s:s?}", "principal", p->id, "plane", g->plane, "resource",
                                resource, "action", action, "rule", rule));
        return refuse(v, POL_OUTCOME_FORBIDDEN, 403, "permission_denied", "%s '%s' may not %s '%s' (%s%s%s)",
                      pol_kind_name(p->kind), p->id, action, resource, v->decision.reason, rule != NULL ? " " : "",
                      rule != NULL ? rule : "");
    }
    return take_request_limits(g, snap, p, resource, v);
}

bool
pol_gate_permits(pol_gate_t *g, const pol_verdict_t *v, const char *resource, const char *action)
{
    const pol_snapshot_t *snap = v->snapshot;
    pol_request_t preq = {
        .principal = v->identity.principal,
        .plane = g->plane,
        .resource = resource,
        .action = action,
        .request_size = 0,
        .now_ms = tp_unix_ms(),
    };
    return pol_evaluate(snap->rules, &preq, snap->default_allow).allow;
}

/* ---- tokens: budgets and tokens per minute ---- */

static const tp_price_config_t *
price_of(pol_gate_t *g, const char *resource)
{
    const tp_config_t *cfg = tp_daemon_config(g->daemon);
    for (size_t i = 0; i < cfg->pricing_count; i++) {
        if (fnmatch(cfg->pricing[i].model, resource, 0) == 0)
            return &cfg->pricing[i];
    }
    return NULL;
}

/* The budgets that apply to p: its own and its team's. Returns how many were copied. */
static size_t
budgets_for(const pol_snapshot_t *snap, const pol_principal_t *p, pol_budget_limit_t *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < snap->num_budgets && n < max; i++) {
        const pol_budget_limit_t *b = &snap->budgets[i];
        if (scope_covers(b->scope_kind, b->scope, p))
            out[n++] = *b;
    }
    return n;
}

bool
pol_gate_reserve(pol_gate_t *g, tp_request_t *r, pol_verdict_t *v, const char *resource, int64_t est_tokens,
                 pol_reservation_t *res)
{
    memset(res, 0, sizeof(*res));
    const pol_snapshot_t *snap = v->snapshot;
    const pol_principal_t *p = v->identity.principal;
    int64_t now_ns = tp_mono_ns();
    for (size_t i = 0; i < snap->num_limits; i++) {
        const pol_rate_limit_t *l = &snap->limits[i];
        char key[512];
        if (l->tokens_per_minute <= 0 || !limit_covers(l, p, resource, "tpm", key))
            continue;
        double retry = 0;
        if (!pol_ratelimit_take(g->limiter, key, (double)l->tokens_per_minute, 0, (double)est_tokens, now_ns, &retry)) {
            v->retry_after_s = retry;
            return refuse(v, POL_OUTCOME_RATE_LIMITED, 429, "rate_limit_exceeded",
                          "token rate limit of %lld per minute for %s '%s' reached; retry in %.0f s",
                          (long long)l->tokens_per_minute, pol_budget_scope_name(l->scope_kind), l->scope, ceil(retry));
        }
    }
    pol_budget_limit_t limits[POL_BUDGET_MAX_COUNTERS];
    size_t n = budgets_for(snap, p, limits, POL_BUDGET_MAX_COUNTERS);
    const tp_price_config_t *price = price_of(g, resource);
    int64_t est_cost = price != NULL ? pol_cost_micros(est_tokens, 0, price->input_per_million, 0) : 0;
    int64_t now = tp_unix_ms();
    if (pol_budget_reserve(g->budgets, limits, n, p->id, p->team, est_tokens, est_cost, now, res) == POL_BUDGET_OVER) {
        const pol_budget_over_t *o = &res->over;
        v->retry_after_s = (double)(o->resets_at_ms - now) / 1000.0;
        return refuse(v, POL_OUTCOME_OVER_BUDGET, 429, "budget_exceeded",
                      "%s budget of %s '%s' exhausted (%lld of %lld %s used); it resets in %.0f s",
                      pol_budget_period_name(o->limit->period), pol_budget_scope_name(o->limit->scope_kind),
                      o->limit->scope, (long long)o->used, (long long)o->max, o->tokens ? "tokens" : "micro-units",
                      ceil(v->retry_after_s));
    }
    return true;
}

int64_t
pol_gate_cost_micros(pol_gate_t *g, const char *resource, int64_t input_tokens, int64_t output_tokens)
{
    const tp_price_config_t *price = price_of(g, resource);
    return price != NULL
               ? pol_cost_micros(input_tokens, output_tokens, price->input_per_million, price->output_per_million)
               : 0;
}

void
pol_gate_cancel(pol_gate_t *g, pol_reservation_t *res)
{
    if (res->active)
        pol_budget_cancel(g->budgets, res);
}

/* Charges tokens beyond the estimate to the tokens-per-minute buckets that cover the request. */
static void
charge_token_limits(pol_gate_t *g, const pol_snapshot_t *snap, const pol_principal_t *p, const char *resource,
                    int64_t extra)
{
    if (extra <= 0)
        return;
    int64_t now_ns = tp_mono_ns();
    for (size_t i = 0; i < snap->num_limits; i++) {
        const pol_rate_limit_t *l = &snap->limits[i];
        char key[512];
        if (l->tokens_per_minute <= 0 || !limit_covers(l, p, resource, "tpm", key))
            continue;
        pol_ratelimit_charge(g->limiter, key, (double)l->tokens_per_minute, 0, (double)extra, now_ns);
    }
}

void
pol_gate_settle(pol_gate_t *g, tp_request_t *r, const pol_verdict_t *v, const char *resource, pol_reservation_t *res,
                int64_t input_tokens, int64_t output_tokens, const pol_usage_detail_t *detail)
{
    const pol_principal_t *p = v->identity.principal;
    const tp_price_config_t *price = price_of(g, resource);
    int64_t cost = price != NULL ? pol_cost_micros(input_tokens, output_tokens, price->input_per_million,
                                                   price->output_per_million)
                                 : 0;
    /* Stamped with the reservation's time, so the row counts in the period the budget charged
     * (a request that straddles midnight), and seeding after a restart agrees. */
    int64_t ts = res->active ? res->reserved_at_ms : tp_unix_ms();
    int64_t estimated = res->active ? res->tokens : 0;
    if (res->active)
        pol_budget_settle(g->budgets, res, input_tokens + output_tokens, cost);
    charge_token_limits(g, v->snapshot, p, resource, input_tokens + output_tokens - estimated);
    const tp_store_value_t values[] = {
        { .type = TP_STORE_INT, .u.i = ts },
        { .type = TP_STORE_TEXT, .u.s = r->id },
        { .type = TP_STORE_TEXT, .u.s = g->plane },
        { .type = TP_STORE_TEXT, .u.s = p->id },
        { .type = p->team != NULL ? TP_STORE_TEXT : TP_STORE_NULL, .u.s = p->team },
        { .type = TP_STORE_TEXT, .u.s = resource },
        { .type = TP_STORE_INT, .u.i = input_tokens },
        { .type = TP_STORE_INT, .u.i = output_tokens },
        { .type = TP_STORE_INT, .u.i = cost },
        { .type = detail != NULL ? TP_STORE_INT : TP_STORE_NULL, .u.i = detail != NULL ? detail->status : 0 },
        { .type = detail != NULL ? TP_STORE_REAL : TP_STORE_NULL, .u.r = detail != NULL ? detail->latency_ms : 0 },
        { .type = detail != NULL && detail->ttft_ms >= 0 ? TP_STORE_REAL : TP_STORE_NULL,
          .u.r = detail != NULL ? detail->ttft_ms : 0 },
        { .type = detail != NULL && detail->upstream != NULL ? TP_STORE_TEXT : TP_STORE_NULL,
          .u.s = detail != NULL ? detail->upstream : NULL },
    };
    tp_store_submit(tp_daemon_writer(g->daemon),
                    "INSERT INTO usage (ts_ms, request_id, plane, principal_id, team, resource, input_tokens, "
                    "output_tokens, cost_micros, status, latency_ms, ttft_ms, upstream) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values, sizeof(values) / sizeof(values[0]));
}

/* ---- GET /whoami ---- */

static json_t *
principal_json(const pol_principal_t *p)
{
    json_t *roles = json_array(), *labels = json_object();
    for (size_t i = 0; i < p->num_roles; i++)
        json_array_append_new(roles, json_string(p->roles[i]));
    for (size_t i = 0; i < p->num_labels; i++)
        json_object_set_new(labels, p->labels[i].key, json_string(p->labels[i].value));
    return json_pack("{s:s, s:s, s:s?, s:o, s:o, s:s?}", "id", p->id, "kind", pol_kind_name(p->kind), "team", p->team,
                     "roles", roles, "labels", labels, "issuer", p->issuer);
}

static int
handle_whoami(tp_request_t *r, void *data)
{
    pol_gate_t *g = data;
    pol_verdict_t v;
    bool ok = pol_gate_authenticate(g, r, &v);
    if (!ok && v.outcome == POL_OUTCOME_UNAUTHENTICATED) {
        pol_gate_refuse(r, &v);
        pol_verdict_clear(&v);
        return 0;
    }
    const pol_principal_t *p = v.identity.principal;
    json_t *body = json_pack("{s:o, s:s, s:s?, s:b}", "principal", principal_json(p), "method", v.identity.method,
                             "key_id", v.identity.key_id[0] != '\0' ? v.identity.key_id : NULL, "suspended",
                             v.outcome == POL_OUTCOME_SUSPENDED);
    char resource[QUERY_VALUE_MAX], action[QUERY_VALUE_MAX];
    if (tp_http_query_param(r, "resource", resource, sizeof(resource)) &&
        tp_http_query_param(r, "action", action, sizeof(action))) {
        const pol_snapshot_t *snap = v.snapshot;
        pol_request_t preq = {
            .principal = p,
            .plane = g->plane,
            .resource = resource,
            .action = action,
            .request_size = 0,
            .now_ms = tp_unix_ms(),
        };
        pol_decision_t d = pol_evaluate(snap->rules, &preq, snap->default_allow);
        json_object_set_new(body, "decision",
                            json_pack("{s:s, s:s, s:s, s:s, s:s?}", "plane", g->plane, "resource", resource, "action",
                                      action, "effect", d.allow ? "allow" : "deny", "rule",
                                      d.rule != NULL ? pol_rule_id(d.rule) : NULL));
    }
    pol_verdict_clear(&v);
    tp_http_send_json(r, 200, body);
    return 0;
}

/* ---- life ---- */

pol_gate_t *
pol_gate_new(tp_daemon_t *d, const char *plane, char **err)
{
    const tp_config_t *cfg = tp_daemon_config(d);
    pol_gate_t *g = tp_calloc(1, sizeof(*g));
    g->daemon = d;
    g->plane = tp_strdup(plane);
    if (cfg->auth.jwt_count > 0 && (g->jwt = pol_jwt_verifier_new(cfg->auth.jwt, cfg->auth.jwt_count, err)) == NULL)
        goto fail;
    g->limiter = pol_ratelimit_new(RATELIMIT_MAX_KEYS);
    g->budgets = pol_budgets_new();
    if (pol_budgets_seed(g->budgets, tp_store_db(tp_daemon_store(d)), tp_unix_ms(), err) != 0)
        goto fail;
    tp_server_route(tp_daemon_server(d), "GET", "/whoami", false, handle_whoami, g);
    return g;
fail:
    pol_gate_free(g);
    return NULL;
}

void
pol_gate_free(pol_gate_t *g)
{
    if (g == NULL)
        return;
    if (g->jwt != NULL)
        pol_jwt_verifier_free(g->jwt);
    pol_ratelimit_free(g->limiter);
    pol_budgets_free(g->budgets);
    free(g->plane);
    free(g);
}
