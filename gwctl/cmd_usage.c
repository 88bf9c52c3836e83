/* gwctl usage: requests, tokens and cost summed over a time range, grouped by one dimension. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "args.h"

typedef struct usage_query {
    const char *by; /* "principal", "team", "model" or "plane" */
    const char *principal, *team, *model;
    int64_t since_ms, until_ms; /* until 0: now */
} usage_query_t;

static int
parse_query(gwctl_call_t *c, int argc, char **argv, usage_query_t *q)
{
    static const struct option opts[] = {
        { "by", required_argument, NULL, 'b' },
        { "principal", required_argument, NULL, 'p' },
        { "team", required_argument, NULL, 't' },
        { "model", required_argument, NULL, 'm' },
        { "since", required_argument, NULL, 's' },
        { "until", required_argument, NULL, 'u' },
        { NULL, 0, NULL, 0 },
    };
    int64_t now = gwctl_now_ms();
    *q = (usage_query_t){ .by = "principal", .since_ms = gwctl_day_start_ms(now) };
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        if (opt == 'b' && strcmp(optarg, "principal") != 0 && strcmp(optarg, "team") != 0 &&
            strcmp(optarg, "model") != 0 && strcmp(optarg, "plane") != 0)
            return gwctl_usage_error(c, "--by is principal, team, model or plane, not '%s'", optarg);
        if ((opt == 's' && gwctl_parse_time(optarg, now, &q->since_ms) != 0) ||
            (opt == 'u' && gwctl_parse_time(optarg, now, &q->until_ms) != 0))
            return gwctl_usage_error(c,
                                     "--%s takes an RFC 3339 time, a date, 'today' or a time ago such as -1h, "
                                     "not '%s'",
                                     opt == 's' ? "since" : "until", optarg);
        if (opt == 'b')
            q->by = optarg;
        else if (opt == 'p')
            q->principal = optarg;
        else if (opt == 't')
            q->team = optarg;
        else if (opt == 'm')
            q->model = optarg;
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    if (q->until_ms != 0 && q->until_ms <= q->since_ms)
        return gwctl_usage_error(c, "--until must be later than --since");
    return 0;
}

static void
add_row(gwctl_table_t *t, const char *key, int64_t req, int64_t in, int64_t out, int64_t cost)
{
    char r[24], i[24], o[24], m[GWCTL_MONEY_LEN];
    snprintf(r, sizeof(r), "%lld", (long long)req);
    snprintf(i, sizeof(i), "%lld", (long long)in);
    snprintf(o, sizeof(o), "%lld", (long long)out);
    gwctl_table_row(t, key, r, i, o, gwctl_format_money(cost, m));
}

static void
print_table(const usage_query_t *q, json_t *rows)
{
    char since[GWCTL_TIME_LEN], until[GWCTL_TIME_LEN], header[16];
    printf("usage from %s to %s\n\n", gwctl_format_time(q->since_ms, since),
           q->until_ms != 0 ? gwctl_format_time(q->until_ms, until) : "now");
    size_t n;
    for (n = 0; q->by[n] != '\0' && n + 1 < sizeof(header); n++)
        header[n] = (char)(q->by[n] - 'a' + 'A');
    header[n] = '\0';
    gwctl_table_t t = GWCTL_TABLE(5);
    gwctl_table_row(&t, header, "REQUESTS", "INPUT TOKENS", "OUTPUT TOKENS", "COST");
    int64_t sum[4] = { 0 };
    static const char *const cols[4] = { "requests", "input_tokens", "output_tokens", "cost_micros" };
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        int64_t v[4];
        for (int k = 0; k < 4; k++)
            sum[k] += v[k] = json_integer_value(json_object_get(r, cols[k]));
        add_row(&t, json_string_value(json_object_get(r, "key")), v[0], v[1], v[2], v[3]);
    }
    if (json_array_size(rows) > 1)
        add_row(&t, "(total)", sum[0], sum[1], sum[2], sum[3]);
    gwctl_table_print(&t);
}

static int
run_usage(gwctl_t *g, int argc, char **argv)
{
    gwctl_call_t c;
    gwctl_call_begin(&c, g, &gwctl_cmd_usage);
    usage_query_t q;
    int rv = parse_query(&c, argc, argv, &q);
    if (rv != 0)
        return gwctl_call_end(&c, rv);
    sqlite3 *db = gwctl_call_db(&c);
    char *err = NULL;
    json_t *rows =
        db != NULL ? pol_admin_usage(db, q.by, q.principal, q.team, q.model, q.since_ms, q.until_ms, &err) : NULL;
    if (rows == NULL)
        return gwctl_call_end(&c, db != NULL ? gwctl_fail(&c, err) : 1);
    if (g->json) {
        char since[GWCTL_TIME_LEN], until[GWCTL_TIME_LEN];
        gwctl_print_json(json_pack("{s:s, s:s, s:s?, s:o}", "by", q.by, "since", gwctl_format_time(q.since_ms, since),
                                   "until", q.until_ms != 0 ? gwctl_format_time(q.until_ms, until) : NULL, "rows",
                                   rows));
    } else {
        print_table(&q, rows);
        json_decref(rows);
    }
    return gwctl_call_end(&c, 0);
}

const gwctl_command_t gwctl_cmd_usage = {
    .name = "usage",
    .summary = "Show requests, tokens and cost, by principal, team, model or plane.",
    .usage = " [--by principal|team|model|plane] [--principal P] [--team T] [--model M] [--since TIME]\n"
             "       [--until TIME]\n"
             "  The default is since the start of today (UTC), by principal. TIME is RFC 3339\n"
             "  (2024-05-01T09:00:00Z), a date (2024-05-01), 'today', 'now', or a time ago (-1h, -7d).",
    .run = run_usage,
};
