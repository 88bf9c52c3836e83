/*
 * rules.h — authorization rules: parse, compile, evaluate, explain.
 *
 * A rule is stored as JSON (the store's policies.definition column; policy files are YAML
 * converted to JSON):
 *
 *   {"id": "ml-chat", "effect": "allow" | "deny", "description": "...",
 *    "subjects": {"principals": ["alice", "svc-*"], "teams": ["ml"], "roles": ["admin"], "kinds": ["agent"]},
 *    "plane": "model" | "mcp" | "agent" | "*",
 *    "resources": ["llama3*", "fs/read_*"],
 *    "actions": ["chat", "embed", "tools/call", "*"],
 *    "conditions": {"time": {"days": ["mon", "tue"], "start": "09:00", "end": "17:00"},
 *                   "max_request_size": 65536,
 *                   "labels": {"env": "prod*"}}}
 *
 * Patterns (subjects, resources, actions, label values) are globs over bytes: `*` matches any
 * run of bytes including `/`, `?` one byte, `[a-z]` / `[!a-z]` one byte in / not in a set, and
 * `\` makes the next byte literal. Matching is case-sensitive and does not depend on the locale.
 *
 * A rule applies to a request when all of these hold, checked in this order (the order in which
 * pol_explain reports the first failure):
 *   - the rule's plane is the request's plane, or "*";
 *   - the subject matches: the principal's id matches a `principals` pattern, or its team a
 *     `teams` pattern (a principal without a team matches none), or one of its roles a `roles`
 *     pattern, or its kind a `kinds` pattern;
 *   - the resource matches a `resources` pattern;
 *   - the action matches an `actions` pattern;
 *   - every condition holds:
 *       time: the request time (UTC) is in [start, end) on one of `days` (all days when absent).
 *             When end < start the window wraps past midnight and the part after midnight belongs
 *             to the day the window started on (fri 22:00-06:00 covers Saturday 01:00). "24:00"
 *             is allowed as an end. Without start/end the whole of each listed day is covered.
 *       max_request_size: the request is known (request_size >= 0) and not larger, in bytes.
 *       labels: each listed label exists on the principal and its value matches the glob.
 *
 * Decision: any applying deny rule denies (the first in ruleset order is named); otherwise any
 * applying allow rule allows (the first in ruleset order is named); otherwise the caller's
 * default decides. Rule order never changes the outcome, only which rule is named. Whether the
 * principal is enabled or killed is not checked here (authn and the kill switches do that).
 */
#ifndef POL_RULES_H
#define POL_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "principal.h"

typedef enum pol_effect {
    POL_EFFECT_ALLOW = 0,
    POL_EFFECT_DENY,
} pol_effect_t;

typedef enum pol_plane {
    POL_PLANE_ANY = 0, /* "*": every plane */
    POL_PLANE_MODEL,
    POL_PLANE_MCP,
    POL_PLANE_AGENT,
} pol_plane_t;

typedef struct pol_rule pol_rule_t;
typedef struct pol_ruleset pol_ruleset_t;

/* One request, as every plane describes it. All pointers are borrowed for the call only. */
typedef struct pol_request {
    const pol_principal_t *principal; /* required; authn's result */
    const char *plane;                /* "model", "mcp" or "agent"; any other name is matched by "*" rules only */
    const char *resource;             /* model name, "server/tool", or agent name */
    const char *action;               /* "chat", "embed", "tools/call", … */
    int64_t request_size;             /* bytes; negative when unknown (max_request_size then fails) */
    int64_t now_ms;                   /* Unix time in milliseconds (UTC), for time conditions */
} pol_request_t;

typedef struct pol_decision {
    bool allow;
    const pol_rule_t *rule; /* the rule that decided, owned by the ruleset; NULL when the default decided */
    const char *reason;     /* static text: "denied by rule", "allowed by rule", "no rule matched: default deny",
                               "no rule matched: default allow" */
} pol_decision_t;

/* "allow" / "deny". */
const char *pol_effect_name(pol_effect_t effect);

/* "*", "model", "mcp", "agent". */
const char *pol_plane_name(pol_plane_t plane);

/* Validates and parses one rule definition (def is borrowed). Unknown keys at any level are
 * errors. Returns 0 and *out (free with pol_rule_free), or -EINVAL and *err (malloc'd, free it),
 * a sentence naming the rule and the field: `rule ml-chat: resources must be a non-empty array
 * of strings`. */
int pol_rule_parse(json_t *def, pol_rule_t **out, char **err);

/* The rule in canonical form (new reference): keys in a fixed order, empty subject lists and
 * absent conditions left out, days in week order, labels sorted by key. Parsing it gives back an
 * equal rule; storing it and displaying it use this form. */
json_t *pol_rule_to_json(const pol_rule_t *rule);

/* Frees a rule (NULL is fine). Never free a rule that a ruleset owns. */
void pol_rule_free(pol_rule_t *rule);

/* Accessors. Strings are owned by the rule. The description is NULL when the rule has none. */
const char *pol_rule_id(const pol_rule_t *rule);
pol_effect_t pol_rule_effect(const pol_rule_t *rule);
pol_plane_t pol_rule_plane(const pol_rule_t *rule);
const char *pol_rule_description(const pol_rule_t *rule);

/* Compiles rules[0..n) into a ruleset, taking ownership of every rule (also on failure; the
 * array itself stays the caller's). The order of `rules` is the ruleset order. Returns the
 * ruleset (free with pol_ruleset_free), or NULL and *err (malloc'd) when two rules share an id.
 * The ruleset is immutable: any number of threads may evaluate it at once without locks. */
pol_ruleset_t *pol_ruleset_new(pol_rule_t **rules, size_t n, char **err);

/* Frees a ruleset and its rules (NULL is fine). */
void pol_ruleset_free(pol_ruleset_t *rs);

/* The number of rules. */
size_t pol_ruleset_count(const pol_ruleset_t *rs);

/* The i-th rule in ruleset order (i < count), owned by the ruleset. */
const pol_rule_t *pol_ruleset_rule(const pol_ruleset_t *rs, size_t i);

/* The rule with this id, owned by the ruleset, or NULL. */
const pol_rule_t *pol_ruleset_find(const pol_ruleset_t *rs, const char *id);

/* Decides a request (see the top of this file). Allocates nothing; thread-safe. */
pol_decision_t pol_evaluate(const pol_ruleset_t *rs, const pol_request_t *req, bool default_allow);

/* The same decision with the rule chain behind it (new reference):
 *   {"decision": "allow" | "deny", "rule": id | null, "reason": ...,
 *    "rules": [{"id", "effect", "matched": bool, "why": ...}, ...]}
 * "rules" lists, in ruleset order, every rule of the request's plane and of plane "*". "why" is
 * "matched" or the first check that failed: "subject did not match", "resource did not match",
 * "action did not match", "condition time failed", "condition max_request_size failed",
 * "condition labels failed". This is what `gwctl policy explain` prints. */
json_t *pol_explain(const pol_ruleset_t *rs, const pol_request_t *req, bool default_allow);

#endif
