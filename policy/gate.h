/*
 * gate.h — the one question every plane asks before it does anything for a caller: who is
 * this, may they do this, and are they within their limits?
 *
 * A gate belongs to one daemon and one plane ("model", "mcp", "agent"). It reads the daemon's
 * state snapshot for the request's worker (no locks, no SQLite), so a check costs microseconds.
 * The order is fixed: authenticate (401), kill switches (403 "suspended"), policy rules (403),
 * request rate limits (429 with Retry-After). Token budgets and token rate limits are checked
 * by the plane that knows token counts, with pol_gate_reserve / pol_gate_settle.
 *
 * Every daemon with a gate also serves GET /whoami: the caller's identity as the gateway sees
 * it and, with ?resource=R&action=A, the policy decision for that request (never the rules).
 */
#ifndef POL_GATE_H
#define POL_GATE_H

#include <stdbool.h>
#include <stdint.h>

#include "authn.h"
#include "budget.h"
#include "daemon.h"
#include "rules.h"
#include "snapshot.h"

typedef struct pol_gate pol_gate_t;

typedef enum pol_outcome {
    POL_OUTCOME_ALLOW = 0,
    POL_OUTCOME_UNAUTHENTICATED, /* 401 */
    POL_OUTCOME_SUSPENDED,       /* 403: a kill switch covers the caller */
    POL_OUTCOME_FORBIDDEN,       /* 403: the rules deny */
    POL_OUTCOME_RATE_LIMITED,    /* 429 */
    POL_OUTCOME_OVER_BUDGET,     /* 429 */
} pol_outcome_t;

/* A verdict points into itself (identity.principal may be &identity.jwt_principal) and into the
 * snapshot it was made with, which the request holds until it is disposed: keep it where it was
 * filled in (in the request's pool, say); never copy it. */
typedef struct pol_verdict {
    const struct pol_snapshot *snapshot; /* the snapshot the request holds, for later calls */
    pol_outcome_t outcome;
    int status;               /* the HTTP status that goes with the outcome */
    const char *code;         /* machine-readable: "invalid_api_key", "suspended", "permission_denied", … */
    char message[320];        /* for the caller: what happened and what to do */
    double retry_after_s;     /* for 429: seconds until a retry can succeed */
    pol_authn_status_t authn; /* why authentication failed, when it did */
    pol_identity_t identity;  /* valid when authenticated; release with pol_verdict_clear */
    pol_decision_t decision;  /* the policy decision, when one was made */
} pol_verdict_t;

/* Creates the gate for `plane`: the JWT verifier from the configuration's auth section, the
 * in-memory rate limiter, and the budget counters seeded from the store. Registers GET /whoami
 * on the daemon's server. Call from the daemon's setup. Returns NULL and *err on failure
 * (an unreadable key file, say). The gate lives as long as the daemon. */
pol_gate_t *pol_gate_new(tp_daemon_t *d, const char *plane, char **err);

void pol_gate_free(pol_gate_t *g);

/* Authenticates the request (Authorization: Bearer, or when that header is absent, x-api-key as
 * Anthropic's clients send it) and checks kill switches only. Returns true when the caller may
 * proceed; otherwise *v says why (see pol_gate_refuse). Always pol_verdict_clear *v. */
bool pol_gate_authenticate(pol_gate_t *g, tp_request_t *r, pol_verdict_t *v);

/* The whole check for one request: authenticate, kill switches, the rules for (resource,
 * action) with the request's body size, and the caller's requests-per-minute limits. Sets
 * r->principal on success. Returns true when allowed. */
bool pol_gate_check(pol_gate_t *g, tp_request_t *r, const char *resource, const char *action, pol_verdict_t *v);

/* Whether the authenticated caller of verdict v may perform `action` on `resource` on this
 * gate's plane (no rate limits taken), e.g. to list only the models a caller may use. */
bool pol_gate_permits(pol_gate_t *g, const pol_verdict_t *v, const char *resource, const char *action);

/* The second half of pol_gate_check, for a caller already authenticated with
 * pol_gate_authenticate into the same verdict: the rules and the requests-per-minute limits. */
bool pol_gate_authorize(pol_gate_t *g, tp_request_t *r, const char *resource, const char *action, pol_verdict_t *v);

/* Answers the request with the verdict's error in the plane's envelope, with WWW-Authenticate
 * for 401 and Retry-After for 429. */
void pol_gate_refuse(tp_request_t *r, const pol_verdict_t *v);

void pol_verdict_clear(pol_verdict_t *v);

/* Whether kill k covers principal p at Unix time `now` (ms): its id for a principal or agent
 * kill, its team for a team kill, everyone for "all"; an expired kill covers no one. Planes use
 * it to end the long-lived work (sessions, streams) of a principal a new kill covers. */
bool pol_kill_covers(const pol_kill_t *k, const pol_principal_t *p, int64_t now);

/* Reserves an estimate of tokens (and its cost from the configured prices) against the
 * caller's budgets and tokens-per-minute limits before a request goes upstream. Returns true
 * when it fits; otherwise *v is set to OVER_BUDGET or RATE_LIMITED. */
bool pol_gate_reserve(pol_gate_t *g, tp_request_t *r, pol_verdict_t *v, const char *resource, int64_t est_tokens,
                      pol_reservation_t *res);

/* What input and output tokens of `resource` cost, in micro-units, from the pricing section
 * (0 when no price matches). */
int64_t pol_gate_cost_micros(pol_gate_t *g, const char *resource, int64_t input_tokens, int64_t output_tokens);

/* Gives back a reservation of a request that ends before any usage (refused, failed upstream). */
void pol_gate_cancel(pol_gate_t *g, pol_reservation_t *res);

/* What a plane knows about how a request went, for its usage row. */
typedef struct pol_usage_detail {
    int status;           /* the HTTP status the client got */
    double latency_ms;    /* the whole request */
    double ttft_ms;       /* to the first token (streamed event or answer); < 0 when none came */
    const char *upstream; /* the upstream that answered, or NULL */
} pol_usage_detail_t;

/* Settles a reservation with the actual token counts and records the usage row through the
 * store writer (asynchronously). detail may be NULL. */
void pol_gate_settle(pol_gate_t *g, tp_request_t *r, const pol_verdict_t *v, const char *resource,
                     pol_reservation_t *res, int64_t input_tokens, int64_t output_tokens,
                     const pol_usage_detail_t *detail);

#endif
