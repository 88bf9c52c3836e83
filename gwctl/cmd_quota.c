/* gwctl limit and gwctl budget: rate limits and spending budgets per principal or team. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "args.h"

/* Who a limit or budget is for: --principal P or --team T, exactly one. */
typedef struct scope {
    const char *kind; /* "principal" or "team"; NULL until given */
    const char *id;
} scope_t;

static int
set_scope(const gwctl_call_t *c, scope_t *s, const char *kind, const char *id)
{
    if (s->kind != NULL)
        return gwctl_usage_error(c, "give one of --principal and --team, not both");
    *s = (scope_t){ .kind = kind, .id = id };
    return 0;
}

/* The row of `rows` for this scope whose member `key` is `value` (borrowed), or NULL. */
static json_t *
find_row(json_t *rows, const scope_t *s, const char *key, const char *value)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "scope_kind")), s->kind) == 0 &&
            strcmp(json_string_value(json_object_get(r, "scope")), s->id) == 0 &&
            strcmp(json_string_value(json_object_get(r, key)), value) == 0)
            return r;
    }
    return NULL;
}

/* "principal:alice" for tables. */
static const char *
scope_text(json_t *row, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%s", json_string_value(json_object_get(row, "scope_kind")),
             json_string_value(json_object_get(row, "scope")));
    return buf;
}

/* A count, or "-" for none (0 or null). */
static const char *
count_text(json_t *v, char *buf, size_t len)
{
    if (json_integer_value(v) == 0)
        return "-";
    snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    return buf;
}

/* ---- limit ---- */

#define LIMIT_SET_USAGE " (--principal P | --team T) [--resource GLOB] [--rpm N] [--tpm N]"

/* "60 requests/minute", or "no request limit" for 0. */
static const char *
amount_text(int64_t n, const char *unit, const char *none, char *buf, size_t len)
{
    if (n == 0)
        return none;
    snprintf(buf, len, "%lld %s", (long long)n, unit);
    return buf;
}

/* Prints the result of limit set: the limit as stored, or that it is gone. */
static void
print_limit(gwctl_call_t *c, const scope_t *s, const char *resource, int64_t rpm, int64_t tpm)
{
    char a[64], b[64];
    if (c->g->json)
        gwctl_print_json(json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "scope_kind", s->kind, "scope", s->id, "resource",
                                   resource, "requests_per_minute", (json_int_t)rpm, "tokens_per_minute",
                                   (json_int_t)tpm, "removed", rpm == 0 && tpm == 0));
    else if (rpm == 0 && tpm == 0)
        printf("no limit for %s %s on '%s' any more\n", s->kind, s->id, resource);
    else
        printf("limit for %s %s on '%s': %s, %s\n", s->kind, s->id, resource,
               amount_text(rpm, "requests/minute", "no request limit", a, sizeof(a)),
               amount_text(tpm, "tokens/minute", "no token limit", b, sizeof(b)));
}

static int
limit_set(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "principal", required_argument, NULL, 'p' }, { "team", required_argument, NULL, 't' },
        { "resource", required_argument, NULL, 'r' },  { "rpm", required_argument, NULL, 'R' },
        { "tpm", required_argument, NULL, 'T' },       { NULL, 0, NULL, 0 },
    };
    scope_t s = { 0 };
    const char *resource = "*";
    int64_t rpm = -1, tpm = -1; /* -1: keep what is set */
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        switch (opt) {
        case 'p':
        case 't':
            if (set_scope(c, &s, opt == 'p' ? "principal" : "team", optarg) != 0)
                return 2;
            break;
        case 'r':
            resource = optarg;
            break;
        case 'R':
        case 'T':
            if (gwctl_parse_count(optarg, opt == 'R' ? &rpm : &tpm) != 0)
                return gwctl_usage_error(c, "--%s takes a whole number (0: no limit), not '%s'",
                                         opt == 'R' ? "rpm" : "tpm", optarg);
            break;
        default:
            return 2;
        }
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    if (s.kind == NULL || (rpm < 0 && tpm < 0))
        return gwctl_usage_error(c, "give --principal or --team, and --rpm or --tpm (both 0 removes the limit)");
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *limits = db != NULL ? pol_admin_limit_list(db, &err) : NULL;
    if (limits == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    json_t *now = find_row(limits, &s, "resource", resource);
    rpm = rpm >= 0 ? rpm : json_integer_value(json_object_get(now, "requests_per_minute"));
    tpm = tpm >= 0 ? tpm : json_integer_value(json_object_get(now, "tokens_per_minute"));
    json_decref(limits);
    if (pol_admin_limit_set(db, gwctl_call_actor(c), s.kind, s.id, resource, rpm, tpm, &err) != 0)
        return gwctl_fail(c, err);
    print_limit(c, &s, resource, rpm, tpm);
    return 0;
}

static int
limit_list(gwctl_call_t *c, int argc, char **argv)
{
    if (gwctl_plain_args(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *limits = db != NULL ? pol_admin_limit_list(db, &err) : NULL;
    if (limits == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    if (c->g->json) {
        gwctl_print_json(limits);
        return 0;
    }
    gwctl_table_t t = GWCTL_TABLE(4);
    gwctl_table_row(&t, "SCOPE", "RESOURCE", "REQUESTS/MIN", "TOKENS/MIN");
    size_t i;
    json_t *l;
    json_array_foreach(limits, i, l)
    {
        char scope[300], rpm[24], tpm[24];
        gwctl_table_row(&t, scope_text(l, scope, sizeof(scope)), json_string_value(json_object_get(l, "resource")),
                        count_text(json_object_get(l, "requests_per_minute"), rpm, sizeof(rpm)),
                        count_text(json_object_get(l, "tokens_per_minute"), tpm, sizeof(tpm)));
    }
    gwctl_table_print(&t);
    json_decref(limits);
    return 0;
}

static const gwctl_sub_t limit_subs[] = {
    { "set", LIMIT_SET_USAGE, limit_set },
    { "list", "", limit_list },
};

static int
run_limit(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_limit, limit_subs, sizeof(limit_subs) / sizeof(limit_subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_limit = {
    .name = "limit",
    .summary = "Set and list rate limits (requests and tokens per minute) of principals and teams.",
    .usage = " set" LIMIT_SET_USAGE "\n"
             "       gwctl limit list\n"
             "  --resource is a glob over model, tool or agent names (default *: the scope as a whole).\n"
             "  An option left out keeps its current value; 0 means no limit; both 0 removes the limit.",
    .run = run_limit,
};

/* ---- budget ---- */

#define BUDGET_SET_USAGE " (--principal P | --team T) --period day|month [--tokens N] [--cost AMOUNT]"

static void
print_budget(gwctl_call_t *c, const scope_t *s, const char *period, int64_t tokens, int64_t cost)
{
    char a[64], money[GWCTL_MONEY_LEN];
    if (c->g->json)
        gwctl_print_json(json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "scope_kind", s->kind, "scope", s->id, "period",
                                   period, "max_tokens", (json_int_t)tokens, "max_cost_micros", (json_int_t)cost,
                                   "removed", tokens == 0 && cost == 0));
    else if (tokens == 0 && cost == 0)
        printf("no budget per %s for %s %s any more\n", period, s->kind, s->id);
    else
        printf("budget per %s for %s %s: %s, cost %s\n", period, s->kind, s->id,
               amount_text(tokens, "tokens", "no token limit", a, sizeof(a)),
               cost != 0 ? gwctl_format_money(cost, money) : "not limited");
}

static int
budget_set(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "principal", required_argument, NULL, 'p' }, { "team", required_argument, NULL, 't' },
        { "period", required_argument, NULL, 'P' },    { "tokens", required_argument, NULL, 'T' },
        { "cost", required_argument, NULL, 'C' },      { NULL, 0, NULL, 0 },
    };
    scope_t s = { 0 };
    const char *period = NULL;
    int64_t tokens = -1, cost = -1; /* -1: keep what is set */
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        switch (opt) {
        case 'p':
        case 't':
            if (set_scope(c, &s, opt == 'p' ? "principal" : "team", optarg) != 0)
                return 2;
            break;
        case 'P':
            if (strcmp(optarg, "day") != 0 && strcmp(optarg, "month") != 0)
                return gwctl_usage_error(c, "--period is day or month, not '%s'", optarg);
            period = optarg;
            break;
        case 'T':
            if (gwctl_parse_count(optarg, &tokens) != 0)
                return gwctl_usage_error(c, "--tokens takes a whole number (0: no limit), not '%s'", optarg);
            break;
        case 'C':
            if (gwctl_parse_money(optarg, &cost) != 0)
                return gwctl_usage_error(c, "--cost takes an amount such as 12.50 (0: no limit), not '%s'", optarg);
            break;
        default:
            return 2;
        }
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    if (s.kind == NULL || period == NULL || (tokens < 0 && cost < 0))
        return gwctl_usage_error(c, "give --principal or --team, --period, and --tokens or --cost (both 0 removes it)");
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *budgets = db != NULL ? pol_admin_budget_list(db, s.kind, s.id, gwctl_now_ms(), &err) : NULL;
    if (budgets == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    json_t *now = find_row(budgets, &s, "period", period);
    tokens = tokens >= 0 ? tokens : json_integer_value(json_object_get(now, "max_tokens"));
    cost = cost >= 0 ? cost : json_integer_value(json_object_get(now, "max_cost_micros"));
    json_decref(budgets);
    if (pol_admin_budget_set(db, gwctl_call_actor(c), s.kind, s.id, period, tokens, cost, &err) != 0)
        return gwctl_fail(c, err);
    print_budget(c, &s, period, tokens, cost);
    return 0;
}

/* "1200 / 100000 (1.2%)", or the use alone when there is no limit. */
static const char *
used_text(int64_t used, int64_t limit, bool money, char *buf, size_t len)
{
    char u[GWCTL_MONEY_LEN], l[GWCTL_MONEY_LEN];
    if (money) {
        gwctl_format_money(used, u);
        gwctl_format_money(limit, l);
    } else {
        snprintf(u, sizeof(u), "%lld", (long long)used);
        snprintf(l, sizeof(l), "%lld", (long long)limit);
    }
    if (limit == 0)
        snprintf(buf, len, "%s / -", u);
    else
        snprintf(buf, len, "%s / %s (%.1f%%)", u, l, 100.0 * (double)used / (double)limit);
    return buf;
}

static int
budget_show(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "principal", required_argument, NULL, 'p' },
        { "team", required_argument, NULL, 't' },
        { NULL, 0, NULL, 0 },
    };
    scope_t s = { 0 };
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?' || set_scope(c, &s, opt == 'p' ? "principal" : "team", optarg) != 0)
            return 2;
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *budgets = db != NULL ? pol_admin_budget_list(db, s.kind, s.id, gwctl_now_ms(), &err) : NULL;
    if (budgets == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    if (c->g->json) {
        gwctl_print_json(budgets);
        return 0;
    }
    gwctl_table_t t = GWCTL_TABLE(5);
    gwctl_table_row(&t, "SCOPE", "PERIOD", "SINCE", "TOKENS USED / LIMIT", "COST USED / LIMIT");
    size_t i;
    json_t *b;
    json_array_foreach(budgets, i, b)
    {
        char scope[300], since[GWCTL_TIME_LEN], tokens[96], cost[96];
        gwctl_table_row(&t, scope_text(b, scope, sizeof(scope)), json_string_value(json_object_get(b, "period")),
                        gwctl_format_time(json_integer_value(json_object_get(b, "period_start_ms")), since),
                        used_text(json_integer_value(json_object_get(b, "used_tokens")),
                                  json_integer_value(json_object_get(b, "max_tokens")), false, tokens, sizeof(tokens)),
                        used_text(json_integer_value(json_object_get(b, "used_cost_micros")),
                                  json_integer_value(json_object_get(b, "max_cost_micros")), true, cost, sizeof(cost)));
    }
    gwctl_table_print(&t);
    json_decref(budgets);
    return 0;
}

static const gwctl_sub_t budget_subs[] = {
    { "set", BUDGET_SET_USAGE, budget_set },
    { "show", " [--principal P | --team T]", budget_show },
};

static int
run_budget(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_budget, budget_subs, sizeof(budget_subs) / sizeof(budget_subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_budget = {
    .name = "budget",
    .summary = "Set budgets (tokens, cost per UTC day or month) and show their use so far.",
    .usage = " set" BUDGET_SET_USAGE "\n"
             "       gwctl budget show [--principal P | --team T]\n"
             "  --cost is an amount in the configured currency (12.50). An option left out keeps its\n"
             "  current value; 0 means no limit; both 0 removes the budget.",
    .run = run_budget,
};
