/* gwctl audit: the latest changes, or a filtered search of the audit log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "args.h"
#include "mem.h"

#define DEFAULT_TAIL  20  /* a screenful */
#define DEFAULT_LIMIT 100 /* as many rows as a query shows unless told */
#define MAX_ROWS      100000

/* What changed, from {"before", "after"}: "created", "deleted", or the members that differ. */
static const char *
change_text(json_t *detail, char *buf, size_t max)
{
    json_t *before = json_object_get(detail, "before"), *after = json_object_get(detail, "after");
    if (!json_is_object(detail) || (before == NULL && after == NULL))
        return gwctl_shorten(json_is_string(detail) ? json_string_value(detail) : "", buf, max);
    if (json_is_null(before))
        return gwctl_shorten("created", buf, max);
    if (json_is_null(after))
        return gwctl_shorten("deleted", buf, max);
    if (!json_is_object(before) || !json_is_object(after)) {
        char *text = tp_sprintf("%s -> %s", json_string_value(before), json_string_value(after));
        gwctl_shorten(text, buf, max);
        free(text);
        return buf;
    }
    json_t *changed = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(after, key, v)
    {
        if (strcmp(key, "updated_at_ms") != 0 && !json_equal(v, json_object_get(before, key)))
            json_array_append_new(changed, json_string(key));
    }
    json_object_foreach(before, key, v)
    {
        if (json_object_get(after, key) == NULL)
            json_array_append_new(changed, json_string(key));
    }
    gwctl_join(changed, buf, max);
    json_decref(changed);
    return buf;
}

/* Prints rows (newest first, as pol_admin_audit returns them) oldest first. Steals rows. */
static void
print_rows(gwctl_call_t *c, json_t *rows)
{
    size_t n = json_array_size(rows);
    char when[GWCTL_TIME_LEN];
    if (c->g->json) {
        json_t *out = json_array();
        for (size_t i = n; i-- > 0;) {
            json_t *r = json_array_get(rows, i);
            json_object_set_new(r, "time",
                                json_string(gwctl_format_time(json_integer_value(json_object_get(r, "ts_ms")), when)));
            json_array_append(out, r);
        }
        json_decref(rows);
        gwctl_print_json(out);
        return;
    }
    gwctl_table_t t = GWCTL_TABLE(5);
    gwctl_table_row(&t, "TIME", "ACTOR", "ACTION", "TARGET", "CHANGE");
    for (size_t i = n; i-- > 0;) {
        json_t *r = json_array_get(rows, i);
        char target[41], change[61];
        gwctl_table_row(&t, gwctl_format_time(json_integer_value(json_object_get(r, "ts_ms")), when),
                        json_string_value(json_object_get(r, "actor")), json_string_value(json_object_get(r, "action")),
                        gwctl_shorten(json_string_value(json_object_get(r, "target")), target, 40),
                        change_text(json_object_get(r, "detail"), change, 60));
    }
    gwctl_table_print(&t);
    json_decref(rows);
}

typedef struct audit_query {
    const char *actor, *action, *target;
    int64_t since_ms, until_ms;
    int64_t limit;
} audit_query_t;

static int
run_query(gwctl_call_t *c, const audit_query_t *q)
{
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    json_t *rows =
        pol_admin_audit(db, q->actor, q->action, q->target, q->since_ms, q->until_ms, 0, (int)q->limit, &err);
    if (rows == NULL)
        return gwctl_fail(c, err);
    print_rows(c, rows);
    return 0;
}

static int
audit_tail(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "lines", required_argument, NULL, 'n' },
        { NULL, 0, NULL, 0 },
    };
    audit_query_t q = { .limit = DEFAULT_TAIL };
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "n:", opts)) != -1) {
        if (opt == '?')
            return 2;
        if (gwctl_parse_count(optarg, &q.limit) != 0 || q.limit == 0 || q.limit > MAX_ROWS)
            return gwctl_usage_error(c, "-n takes a number of rows from 1 to %d, not '%s'", MAX_ROWS, optarg);
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    return run_query(c, &q);
}

static int
audit_query(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "actor", required_argument, NULL, 'a' },
        { "action", required_argument, NULL, 'x' },
        { "target", required_argument, NULL, 't' },
        { "since", required_argument, NULL, 's' },
        { "until", required_argument, NULL, 'u' },
        { "limit", required_argument, NULL, 'l' },
        { NULL, 0, NULL, 0 },
    };
    audit_query_t q = { .limit = DEFAULT_LIMIT };
    int64_t now = gwctl_now_ms();
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        if ((opt == 's' && gwctl_parse_time(optarg, now, &q.since_ms) != 0) ||
            (opt == 'u' && gwctl_parse_time(optarg, now, &q.until_ms) != 0))
            return gwctl_usage_error(c,
                                     "--%s takes an RFC 3339 time, a date, 'today' or a time ago such as -1h, "
                                     "not '%s'",
                                     opt == 's' ? "since" : "until", optarg);
        if (opt == 'l' && (gwctl_parse_count(optarg, &q.limit) != 0 || q.limit == 0 || q.limit > MAX_ROWS))
            return gwctl_usage_error(c, "--limit takes a number of rows from 1 to %d, not '%s'", MAX_ROWS, optarg);
        if (opt == 'a')
            q.actor = optarg;
        else if (opt == 'x')
            q.action = optarg;
        else if (opt == 't')
            q.target = optarg;
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    return run_query(c, &q);
}

static const gwctl_sub_t subs[] = {
    { "tail", " [-n N]", audit_tail },
    { "query", " [--actor A] [--action X] [--target T] [--since TIME] [--until TIME] [--limit N]", audit_query },
};

static int
run_audit(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_audit, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_audit = {
    .name = "audit",
    .summary = "Show who changed what: the latest audit records, or a search.",
    .usage =
        " tail [-n N]\n"
        "       gwctl audit query [--actor A] [--action X] [--target T] [--since TIME] [--until TIME] [--limit N]\n"
        "  tail shows the last N records (default 20); query the newest --limit (default 100) that match,\n"
        "  both oldest first. Actions look like principal.create, rule.update, key.revoke. TIME is\n"
        "  RFC 3339, a date, 'today', 'now', or a time ago (-1h). Times are printed in UTC.",
    .run = run_audit,
};
