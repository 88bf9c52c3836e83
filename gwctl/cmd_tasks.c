/* gwctl tasks: the task ledger agent-gw keeps, every A2A task it saw and how its state changed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "mem.h"
/* By path, as mcp-gw's pins.h: the daemons' folders are not on gwctl's include path. */
#include "../agent-gw/ledger.h"

#define TIME_MS_LEN (GWCTL_TIME_LEN + 8) /* gwctl_format_time's text, ".123" and its Z and NUL */

/* ms since the epoch as RFC 3339 UTC with milliseconds, in buf: transitions of one task are
 * often less than a second apart. "-" for 0. */
static const char *
format_time_ms(int64_t ms, char buf[TIME_MS_LEN])
{
    char seconds[GWCTL_TIME_LEN];
    if (ms == 0)
        return strcpy(buf, "-");
    gwctl_format_time(ms, seconds);
    seconds[strlen(seconds) - 1] = '\0'; /* drop the Z */
    int64_t frac = ms % 1000;
    snprintf(buf, TIME_MS_LEN, "%s.%03dZ", seconds, (int)(frac < 0 ? frac + 1000 : frac));
    return buf;
}

/* --since: a duration before now ("1h") or a time gwctl_parse_time takes. */
static int
parse_since(const char *s, int64_t *ms)
{
    int64_t ago, now = gwctl_now_ms();
    if (gwctl_parse_duration(s, &ago) == 0) {
        *ms = now - ago;
        return 0;
    }
    return gwctl_parse_time(s, now, ms);
}

static void
print_tasks(json_t *tasks)
{
    gwctl_table_t t = GWCTL_TABLE(7);
    gwctl_table_row(&t, "CREATED", "AGENT", "TASK", "STATE", "CALLER", "CONTEXT", "ENDED");
    size_t i;
    json_t *task;
    json_array_foreach(tasks, i, task)
    {
        char created[GWCTL_TIME_LEN], ended[GWCTL_TIME_LEN];
        gwctl_table_row(
            &t, gwctl_format_time(json_integer_value(json_object_get(task, "created_ms")), created),
            json_string_value(json_object_get(task, "agent")), json_string_value(json_object_get(task, "id")),
            json_string_value(json_object_get(task, "state")), json_string_value(json_object_get(task, "caller")),
            json_string_value(json_object_get(task, "context_id")),
            gwctl_format_time(json_integer_value(json_object_get(task, "ended_ms")), ended));
    }
    gwctl_table_print(&t);
}

static int
tasks_list(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "agent", required_argument, NULL, 'a' }, { "caller", required_argument, NULL, 'c' },
        { "state", required_argument, NULL, 's' }, { "since", required_argument, NULL, 't' },
        { "limit", required_argument, NULL, 'n' }, { NULL, 0, NULL, 0 },
    };
    ag_ledger_filter_t f = { 0 };
    int64_t n;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        switch (opt) {
        case 'a':
            f.agent = optarg;
            break;
        case 'c':
            f.caller = optarg;
            break;
        case 's':
            if (ag_task_state_normalize(optarg) == NULL)
                return gwctl_usage_error(c,
                                         "unknown state '%s' (submitted, working, input-required, auth-required, "
                                         "completed, canceled, failed, rejected, unknown)",
                                         optarg);
            f.state = optarg;
            break;
        case 't':
            if (parse_since(optarg, &f.since_ms) != 0)
                return gwctl_usage_error(c, "--since takes a duration (30m, 24h, 7d) or a time, not '%s'", optarg);
            break;
        case 'n':
            if (gwctl_parse_count(optarg, &n) != 0 || n < 1 || n > 1000000)
                return gwctl_usage_error(c, "--limit takes a number from 1 to 1000000, not '%s'", optarg);
            f.limit = (int)n;
            break;
        default:
            return 2;
        }
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *tasks = db != NULL ? ag_ledger_list(db, &f, &err) : NULL;
    if (tasks == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    if (c->g->json) {
        gwctl_print_json(tasks);
        return 0;
    }
    print_tasks(tasks);
    json_decref(tasks);
    return 0;
}

/* One "label: value" line; an absent value shows as "-". */
static void
print_field(const char *label, const char *value)
{
    printf("%-9s %s\n", label, value != NULL && value[0] != '\0' ? value : "-");
}

static void
print_task(json_t *task)
{
    char created[TIME_MS_LEN], updated[TIME_MS_LEN], ended[TIME_MS_LEN];
    char *chain = json_dumps(json_object_get(task, "chain"), JSON_COMPACT | JSON_ENCODE_ANY);
    print_field("task:", json_string_value(json_object_get(task, "id")));
    print_field("agent:", json_string_value(json_object_get(task, "agent")));
    print_field("context:", json_string_value(json_object_get(task, "context_id")));
    print_field("caller:", json_string_value(json_object_get(task, "caller")));
    print_field("chain:", chain);
    print_field("state:", json_string_value(json_object_get(task, "state")));
    print_field("created:", format_time_ms(json_integer_value(json_object_get(task, "created_ms")), created));
    print_field("updated:", format_time_ms(json_integer_value(json_object_get(task, "updated_ms")), updated));
    print_field("ended:", format_time_ms(json_integer_value(json_object_get(task, "ended_ms")), ended));
    free(chain);

    json_t *transitions = json_object_get(task, "transitions");
    printf("transitions (%zu):\n", json_array_size(transitions));
    gwctl_table_t t = GWCTL_TABLE(3);
    gwctl_table_row(&t, "  AT", "STATE", "REASON");
    size_t i;
    json_t *tr;
    json_array_foreach(transitions, i, tr)
    {
        char at[TIME_MS_LEN];
        char *cell = tp_sprintf("  %s", format_time_ms(json_integer_value(json_object_get(tr, "at_ms")), at));
        gwctl_table_row(&t, cell, json_string_value(json_object_get(tr, "state")),
                        json_string_value(json_object_get(tr, "reason")));
        free(cell);
    }
    gwctl_table_print(&t);
}

static int
tasks_show(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "agent", required_argument, NULL, 'a' },
        { NULL, 0, NULL, 0 },
    };
    const char *agent = NULL, *id = NULL;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        agent = optarg;
    }
    if (gwctl_operands(c, argc, argv, 1, "the task's ID", &id) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    json_t *task = ag_ledger_show(db, agent, id, &err);
    if (task == NULL)
        return gwctl_fail(c, err);
    if (c->g->json) {
        gwctl_print_json(task);
        return 0;
    }
    print_task(task);
    json_decref(task);
    return 0;
}

static const gwctl_sub_t subs[] = {
    { "list", " [--agent A] [--caller P] [--state S] [--since DURATION|TIME] [--limit N]", tasks_list },
    { "show", " ID [--agent A]", tasks_show },
};

static int
run_tasks(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_tasks, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_tasks = {
    .name = "tasks",
    .summary = "Read the ledger of A2A tasks agent-gw saw: who asked, which agent, each change of state.",
    .usage = " list [--agent A] [--caller P] [--state S] [--since DURATION|TIME] [--limit N]\n"
             "       gwctl tasks show ID [--agent A]\n"
             "  list shows tasks newest first (at most N, default 100), filtered by the target agent, the\n"
             "  calling principal, the current state (submitted, working, input-required, auth-required,\n"
             "  completed, canceled, failed, rejected, unknown; v1.0 names such as TASK_STATE_WORKING work\n"
             "  too) and creation time (--since 24h, or a time such as 2024-05-01T12:00:00Z). show prints\n"
             "  one task with its delegation chain and every state it went through, with times and\n"
             "  reasons; --agent picks one when agents gave the same task id. --json prints the rows.",
    .run = run_tasks,
};
