/*
 * policy_eval.c — how long pol_evaluate takes on a ruleset of realistic size.
 *
 * Builds 1,000 rules (mixed planes; exact names and globs; some time, size and label
 * conditions; 10% deny rules) from JSON through pol_rule_parse, compiles them, and times
 * pol_evaluate on requests that are decided by a rule near the start, by a rule near the end,
 * by a deny rule, by no rule at all, and on a mix of all of these. Each figure is the median
 * of several timed runs. Usage: bench_policy_eval [rules] [runs] [evaluations-per-run]
 */
#include "principal.h"
#include "rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_RULES 1000
#define DEFAULT_RUNS  7
#define DEFAULT_EVALS 200000
#define NUM_TEAMS     100
#define NOW_MS        1704283200000LL /* Wednesday 2024-01-03 12:00 UTC: inside business hours */

static const char *const families[] = { "llama3",   "qwen2.5", "mistral", "gpt-4o",
                                        "claude-3", "gemma2",  "phi3",    "deepseek-r1" };
static const char *const sizes[] = { "8b", "70b", "mini", "7b", "large", "instruct" };
static const char *const servers[] = { "github", "jira",       "fs",  "slack", "postgres",
                                       "s3",     "confluence", "web", "k8s",   "vault" };
static const char *const tools[] = { "read_file", "search", "create_issue", "list", "query", "get", "update" };
#define N(a) (sizeof(a) / sizeof(a[0]))

/* A request known to satisfy a rule's subjects, resources, actions and conditions. */
typedef struct witness {
    char principal[32];
    char team[16];
    const char *plane;
    char resource[64];
    const char *action;
} witness_t;

static uint64_t rng_state = 0x853c49e6748fea9bULL;

static unsigned
rnd(unsigned n)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (unsigned)((rng_state * 0x2545f4914f6cdd1dULL) >> 33) % n;
}

/* Subjects for rule i: a team (half), one user, or a service-account glob; w gets a match. */
static json_t *
gen_subjects(int i, witness_t *w)
{
    unsigned pick = rnd(10);
    snprintf(w->principal, sizeof(w->principal), "user-%d", i);
    snprintf(w->team, sizeof(w->team), "team-%02d", i % NUM_TEAMS);
    if (pick < 5)
        return json_pack("{s:[s]}", "teams", w->team);
    if (pick < 8)
        return json_pack("{s:[s]}", "principals", w->principal);
    snprintf(w->principal, sizeof(w->principal), "svc-%d-worker", i);
    char glob[32];
    snprintf(glob, sizeof(glob), "svc-%d-*", i);
    return json_pack("{s:[s], s:[s]}", "principals", glob, "kinds", "agent");
}

static json_t *
gen_model_rule(int i, witness_t *w)
{
    const char *family = families[rnd(N(families))];
    const char *size = sizes[rnd(N(sizes))];
    w->plane = "model";
    w->action = rnd(4) == 0 ? "embed" : "chat";
    snprintf(w->resource, sizeof(w->resource), "%s-%s-v%d", family, size, i);
    json_t *resources = json_array();
    if (rnd(2) == 0) {
        char glob[64];
        snprintf(glob, sizeof(glob), "%s-*-v%d", family, i);
        json_array_append_new(resources, json_string(glob));
    } else {
        json_array_append_new(resources, json_string(w->resource));
        char other[64];
        snprintf(other, sizeof(other), "%s-%s-v%d", families[rnd(N(families))], sizes[rnd(N(sizes))], i + 1);
        json_array_append_new(resources, json_string(other));
    }
    return json_pack("{s:s, s:o, s:[s,s,s]}", "plane", "model", "resources", resources, "actions", "chat",
                     "completions", "embed");
}

static json_t *
gen_mcp_rule(int i, witness_t *w)
{
    const char *server = servers[rnd(N(servers))];
    const char *tool = tools[rnd(N(tools))];
    w->plane = "mcp";
    w->action = "tools/call";
    char server_i[32];
    snprintf(server_i, sizeof(server_i), "%s%d", server, i);
    snprintf(w->resource, sizeof(w->resource), "%s/%s", server_i, tool);
    char pattern[64];
    switch (rnd(3)) {
    case 0:
        snprintf(pattern, sizeof(pattern), "%s/*", server_i);
        break;
    case 1:
        snprintf(pattern, sizeof(pattern), "%s/%.4s*", server_i, tool);
        break;
    default:
        snprintf(pattern, sizeof(pattern), "%s", w->resource);
    }
    return json_pack("{s:s, s:[s], s:[s,s]}", "plane", "mcp", "resources", pattern, "actions", "tools/list",
                     "tools/call");
}

static json_t *
gen_agent_rule(int i, witness_t *w)
{
    w->plane = "agent";
    w->action = "message/send";
    snprintf(w->resource, sizeof(w->resource), "planner-%d", i);
    return json_pack("{s:s, s:[s], s:[s,s]}", "plane", "agent", "resources", w->resource, "actions", "message/send",
                     "tasks/*");
}

/* Optional conditions, all of which hold for the witness at NOW_MS with a small request. */
static void
gen_conditions(json_t *def)
{
    unsigned pick = rnd(10);
    if (pick == 0)
        json_object_set_new(def, "conditions",
                            json_pack("{s:{s:[s,s,s,s,s], s:s, s:s}}", "time", "days", "mon", "tue", "wed", "thu",
                                      "fri", "start", "08:00", "end", "18:00"));
    else if (pick == 1)
        json_object_set_new(def, "conditions", json_pack("{s:i}", "max_request_size", 1 << 20));
    else if (pick == 2)
        json_object_set_new(def, "conditions", json_pack("{s:{s:s}}", "labels", "env", "prod*"));
}

static pol_rule_t *
parse_or_die(json_t *def)
{
    pol_rule_t *r = NULL;
    char *err = NULL;
    if (pol_rule_parse(def, &r, &err) != 0) {
        fprintf(stderr, "bench rule: %s\n", err);
        exit(1);
    }
    json_decref(def);
    return r;
}

/* Rule i of n: 45% model, 40% mcp, 10% agent, 5% plane "*"; one in ten is a deny. */
static pol_rule_t *
gen_rule(int i, witness_t *w)
{
    char id[32];
    snprintf(id, sizeof(id), "rule-%04d", i);
    unsigned kind = rnd(20);
    json_t *def;
    if (kind < 9)
        def = gen_model_rule(i, w);
    else if (kind < 17)
        def = gen_mcp_rule(i, w);
    else if (kind < 19)
        def = gen_agent_rule(i, w);
    else
        def = json_pack("{s:s, s:[s], s:[s]}", "plane", "*", "resources", "*secret*", "actions", "*");
    if (kind == 19) {
        w->plane = "mcp";
        w->action = "tools/call";
        snprintf(w->resource, sizeof(w->resource), "vault/read_secret_%d", i);
    }
    json_object_set_new(def, "id", json_string(id));
    json_object_set_new(def, "effect", json_string(kind == 19 || rnd(20) == 0 ? "deny" : "allow"));
    json_object_set_new(def, "subjects", gen_subjects(i, w));
    gen_conditions(def);
    return parse_or_die(def);
}

typedef struct who {
    pol_principal_t p;
    pol_label_t label;
    char *roles[1];
} who_t;

static void
who_init(who_t *who, const witness_t *w)
{
    memset(who, 0, sizeof(*who));
    who->p.id = (char *)w->principal;
    who->p.kind = strncmp(w->principal, "svc-", 4) == 0 ? POL_KIND_AGENT : POL_KIND_USER;
    who->p.team = (char *)w->team;
    who->roles[0] = "developer";
    who->p.roles = who->roles;
    who->p.num_roles = 1;
    who->label = (pol_label_t){ "env", "prod-eu" };
    who->p.labels = &who->label;
    who->p.num_labels = 1;
    who->p.enabled = true;
}

/* One benchmark case: requests and their principals. */
typedef struct workload {
    const char *name;
    size_t n;
    witness_t w[64];
    who_t who[64];
    pol_request_t req[64];
} workload_t;

static void
workload_add(workload_t *wl, const witness_t *w)
{
    size_t k = wl->n++;
    wl->w[k] = *w;
    who_init(&wl->who[k], &wl->w[k]);
    wl->req[k] = (pol_request_t){ .principal = &wl->who[k].p,
                                  .plane = w->plane,
                                  .resource = wl->w[k].resource,
                                  .action = w->action,
                                  .request_size = 2048,
                                  .now_ms = NOW_MS };
}

static double
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile uintptr_t sink; /* keeps the compiler from dropping the evaluations */

/* Median ns per evaluation over runs timed runs of evals evaluations each. */
static double
time_workload(const pol_ruleset_t *rs, const workload_t *wl, int runs, long evals)
{
    double per[64];
    for (int r = 0; r < runs && r < 64; r++) {
        uintptr_t acc = 0;
        double t0 = now_ns();
        for (long i = 0; i < evals; i++) {
            pol_decision_t d = pol_evaluate(rs, &wl->req[(size_t)i % wl->n], false);
            acc += (uintptr_t)d.rule + d.allow;
        }
        per[r] = (now_ns() - t0) / (double)evals;
        sink += acc;
    }
    qsort(per, (size_t)runs, sizeof(double), cmp_double);
    return per[runs / 2];
}

/* Prints the rule that decides the workload's first request, and where it sits. */
static void
describe(const pol_ruleset_t *rs, const workload_t *wl)
{
    pol_decision_t d = pol_evaluate(rs, &wl->req[0], false);
    printf("  %-8s %zu request(s); first: %s %s %s %s -> %s by %s\n", wl->name, wl->n, wl->req[0].principal->id,
           wl->req[0].plane, wl->req[0].resource, wl->req[0].action, d.allow ? "allow" : "deny",
           d.rule != NULL ? pol_rule_id(d.rule) : "(default)");
}

/* Finds the first (or last) rule whose witness is decided by that very rule with the given
 * effect, and adds its witness to wl. */
static void
add_decided_by(workload_t *wl, const pol_ruleset_t *rs, const witness_t *ws, size_t n, bool from_end,
               pol_effect_t effect, size_t count)
{
    for (size_t k = 0; k < n && wl->n < count; k++) {
        size_t i = from_end ? n - 1 - k : k;
        workload_t probe = { .n = 0 };
        workload_add(&probe, &ws[i]);
        pol_decision_t d = pol_evaluate(rs, &probe.req[0], false);
        if (d.rule == pol_ruleset_rule(rs, i) && pol_rule_effect(d.rule) == effect)
            workload_add(wl, &ws[i]);
    }
}

int
main(int argc, char **argv)
{
    int nrules = argc > 1 ? atoi(argv[1]) : DEFAULT_RULES;
    int runs = argc > 2 ? atoi(argv[2]) : DEFAULT_RUNS;
    long evals = argc > 3 ? atol(argv[3]) : DEFAULT_EVALS;
    if (nrules < 20 || runs < 1 || runs > 64 || evals < 1) {
        fprintf(stderr, "usage: %s [rules >= 20] [runs 1..64] [evaluations-per-run]\n", argv[0]);
        return 2;
    }

    witness_t *ws = calloc((size_t)nrules, sizeof(*ws));
    pol_rule_t **rules = calloc((size_t)nrules, sizeof(*rules));
    if (ws == NULL || rules == NULL)
        return 1;
    double t0 = now_ns();
    for (int i = 0; i < nrules; i++)
        rules[i] = gen_rule(i, &ws[i]);
    double t1 = now_ns();
    char *err = NULL;
    pol_ruleset_t *rs = pol_ruleset_new(rules, (size_t)nrules, &err);
    if (rs == NULL) {
        fprintf(stderr, "ruleset: %s\n", err);
        return 1;
    }
    double t2 = now_ns();
    printf("rules: %d; parse %.0f us, compile %.0f us\n", nrules, (t1 - t0) / 1e3, (t2 - t1) / 1e3);

    static workload_t early = { .name = "early" }, late = { .name = "late" }, deny = { .name = "deny" },
                      none = { .name = "none" }, mix = { .name = "mix" };
    add_decided_by(&early, rs, ws, (size_t)nrules, false, POL_EFFECT_ALLOW, 1);
    add_decided_by(&late, rs, ws, (size_t)nrules, true, POL_EFFECT_ALLOW, 1);
    add_decided_by(&deny, rs, ws, (size_t)nrules, true, POL_EFFECT_DENY, 1);
    witness_t nobody = { .principal = "user-unknown",
                         .team = "team-none",
                         .plane = "model",
                         .resource = "llama3-8b-v99999",
                         .action = "chat" };
    workload_add(&none, &nobody);
    witness_t tool = { .principal = "user-unknown",
                       .team = "team-none",
                       .plane = "mcp",
                       .resource = "github/create_issue",
                       .action = "tools/call" };
    workload_add(&none, &tool);
    /* The mix: 48 requests decided by rules spread over the ruleset, then 16 that nothing decides. */
    for (size_t k = 0; k < 48; k++) {
        size_t i = (size_t)rnd((unsigned)nrules);
        workload_add(&mix, &ws[i]);
    }
    for (size_t k = 0; k < 16; k++) {
        witness_t w = nobody;
        snprintf(w.resource, sizeof(w.resource), "%s-%s-v%u", families[rnd(N(families))], sizes[rnd(N(sizes))],
                 100000 + rnd(1000));
        workload_add(&mix, &w);
    }
    if (early.n == 0 || late.n == 0 || deny.n == 0) {
        fprintf(stderr, "the generated ruleset lacks a case\n");
        return 1;
    }

    workload_t *cases[] = { &early, &late, &deny, &none, &mix };
    printf("workloads:\n");
    for (size_t c = 0; c < N(cases); c++)
        describe(rs, cases[c]);
    printf("ns per evaluation (median of %d runs x %ld evaluations):\n", runs, evals);
    for (size_t c = 0; c < N(cases); c++)
        printf("  %-8s %8.1f\n", cases[c]->name, time_workload(rs, cases[c], runs, evals));

    pol_ruleset_free(rs);
    free(rules);
    free(ws);
    return 0;
}
