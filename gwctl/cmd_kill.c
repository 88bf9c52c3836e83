/*
 * gwctl kill, release and kills: the kill switch.
 *
 * A kill or a release is written to the store first (durable, audited as kill.create or
 * kill.release), then sent to every daemon's control socket (commands `kill` and `release`),
 * and gwctl reports per daemon whether the command was *requested* (delivered to the socket) and
 * *confirmed* (the daemon answered after its snapshot showed the change and its workers had acted
 * on in-flight work), with the time each took from the moment gwctl started writing the store.
 * That outcome is audited too (kill.broadcast), so every kill and release, confirmed or not,
 * leaves a record.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "args.h"
#include "clock.h"
#include "control.h"
#include "mem.h"

/* The daemons a deployment may run: one that has no socket in the control directory is reported
 * as not running (it enforces the store's kills when it starts). */
static const char *const KNOWN_DAEMONS[] = { "agent-gw", "mcp-gw", "model-gw" };
#define NUM_KNOWN (sizeof(KNOWN_DAEMONS) / sizeof(KNOWN_DAEMONS[0]))

/* What one kill or release command does. */
typedef struct switch_op {
    gwctl_call_t *c;
    const char *cmd; /* "kill" or "release" */
    const char *kind;
    const char *target; /* "*" for all */
    const char *reason; /* kill only */
    int64_t ttl_ms;     /* kill only; 0: until released */
    int deadline_ms;
    uint64_t start_ns;     /* when gwctl started writing the store */
    int64_t started_at_ms; /* the same moment, Unix time */
    int64_t id;            /* the kill's id */
    bool already;          /* kill: one was already in force (nothing was written) */
    double stored_ms;
} switch_op_t;

static double
since_start_ms(const switch_op_t *op)
{
    return (double)(tp_mono_ns() - op->start_ns) / 1e6;
}

/* Milliseconds rounded to 0.01, for output (printed by print_json without binary noise). */
static json_t *
ms_json(double ms)
{
    return json_real(round(ms * 100.0) / 100.0);
}

/* Prints a JSON value as gwctl_print_json does, with reals at 10 significant digits, and
 * releases it. */
static void
print_json(json_t *value)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (text != NULL)
        printf("%s\n", text);
    free(text);
    json_decref(value);
}

/* ---- arguments ---- */

static bool
valid_kind(const char *kind)
{
    return strcmp(kind, "agent") == 0 || strcmp(kind, "principal") == 0 || strcmp(kind, "team") == 0 ||
           strcmp(kind, "all") == 0;
}

/* Reads "KIND NAME" or "all" from the operands into op. Returns 0, or 2 after a usage error. */
static int
parse_target(switch_op_t *op, int argc, char **argv)
{
    int have = argc - optind;
    if (have < 1)
        return gwctl_usage_error(op->c, "what to %s is missing: agent NAME, principal ID, team ID or all", op->cmd);
    op->kind = argv[optind];
    if (!valid_kind(op->kind))
        return gwctl_usage_error(op->c, "'%s' is not agent, principal, team or all", op->kind);
    if (strcmp(op->kind, "all") == 0) {
        if (have == 2 && strcmp(argv[optind + 1], "*") != 0)
            return gwctl_usage_error(op->c, "unexpected argument '%s' (all takes no name)", argv[optind + 1]);
        if (have > 2)
            return gwctl_usage_error(op->c, "unexpected argument '%s'", argv[optind + 2]);
        op->target = "*";
        return 0;
    }
    if (have < 2)
        return gwctl_usage_error(op->c, "the %s's name is missing", op->kind);
    if (have > 2)
        return gwctl_usage_error(op->c, "unexpected argument '%s'", argv[optind + 2]);
    op->target = argv[optind + 1];
    return 0;
}

static int
parse_deadline(switch_op_t *op, const char *text)
{
    int64_t ms;
    if (gwctl_parse_count(text, &ms) != 0 || ms <= 0 || ms > 600000)
        return gwctl_usage_error(op->c, "--deadline-ms takes a number of milliseconds from 1 to 600000, not '%s'",
                                 text);
    op->deadline_ms = (int)ms;
    return 0;
}

/* `kill all` on a terminal: the operator types "yes". Returns true when they did. */
static bool
confirm_all(const switch_op_t *op)
{
    fprintf(stderr,
            "gwctl kill all: this stops every caller on every plane (reason: %s).\n"
            "Type \"yes\" to go ahead: ",
            op->reason);
    fflush(stderr);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    bool yes = n > 0 && (strcmp(line, "yes\n") == 0 || strcmp(line, "yes") == 0);
    free(line);
    return yes;
}

/* ---- the daemons' answers ---- */

/* One daemon's part in a broadcast. */
typedef struct daemon_outcome {
    const char *name;
    const char *result; /* "confirmed", "not confirmed", "failed", "refused", "unreachable", "not running" */
    bool running, requested, confirmed;
    double requested_ms, answered_ms; /* from the start of the command; answered: confirmed or failed */
    int workers;
    char *error; /* why not confirmed (malloc'd), or NULL */
} daemon_outcome_t;

static void
outcome_from_result(const switch_op_t *op, const tp_control_result_t *r, double offset_ms, daemon_outcome_t *o)
{
    o->name = r->name;
    o->requested = r->sent;
    o->requested_ms = r->sent ? offset_ms + r->sent_ms : 0;
    o->answered_ms = offset_ms + r->elapsed_ms;
    o->running = true;
    if (r->status == -ECONNREFUSED || r->status == -ENOENT) {
        o->running = false;
        o->result = "not running";
        o->error = tp_strdup("its socket is stale: it enforces the store's kills when it starts");
        return;
    }
    if (r->status == -ETIMEDOUT) {
        o->result = r->sent ? "not confirmed" : "unreachable";
        o->error = tp_sprintf("no answer within %d ms", op->deadline_ms);
        return;
    }
    if (r->status != 0) {
        o->result = "unreachable";
        o->error = tp_strdup(r->error != NULL ? r->error : strerror(-r->status));
        return;
    }
    if (!json_is_true(json_object_get(r->response, "ok"))) {
        const char *why = json_string_value(json_object_get(r->response, "error"));
        why = why != NULL ? why : "failed without saying why";
        o->result = strncmp(why, "permission denied", 17) == 0 ? "refused" : "failed";
        if (strncmp(why, "unknown command", 15) == 0)
            o->error = tp_sprintf("%s (a daemon older than this gwctl: it converges within one watch interval)", why);
        else
            o->error = tp_strdup(why);
        return;
    }
    o->confirmed = true;
    o->result = "confirmed";
    o->workers = (int)json_integer_value(json_object_get(json_object_get(r->response, "result"), "workers"));
}

static json_t *
outcome_json(const daemon_outcome_t *o)
{
    json_t *j =
        json_pack("{s:s, s:s, s:b, s:b, s:o, s:b, s:o}", "daemon", o->name, "result", o->result, "running", o->running,
                  "requested", o->requested, "requested_ms", o->requested ? ms_json(o->requested_ms) : json_null(),
                  "confirmed", o->confirmed, "confirmed_ms", o->confirmed ? ms_json(o->answered_ms) : json_null());
    if (o->confirmed)
        json_object_set_new(j, "workers", json_integer(o->workers));
    json_object_set_new(j, "error", o->error != NULL ? json_string(o->error) : json_null());
    return j;
}

static int
compare_outcomes(const void *a, const void *b)
{
    return strcmp(((const daemon_outcome_t *)a)->name, ((const daemon_outcome_t *)b)->name);
}

/* Sends the command to every socket in the control directory, and adds the known daemons that
 * have none as not running. Returns the outcomes (*n of them; free with outcomes_free). */
static daemon_outcome_t *
broadcast(switch_op_t *op, tp_control_result_t **results, int *num_results, size_t *n)
{
    json_t *req = json_pack("{s:s, s:{s:I, s:s, s:s}}", "cmd", op->cmd, "kill", "id", (json_int_t)op->id, "target_kind",
                            op->kind, "target", op->target);
    char *err = NULL;
    double offset_ms = since_start_ms(op);
    int found = tp_control_broadcast(op->c->g->control_dir, req, op->deadline_ms, results, &err);
    json_decref(req);
    if (found < 0) {
        gwctl_error(op->c, "warning: %s", err != NULL ? err : "the control directory cannot be read");
        found = 0;
    }
    free(err);
    *num_results = found;
    daemon_outcome_t *out = tp_calloc((size_t)found + NUM_KNOWN, sizeof(*out));
    size_t count = 0;
    for (int i = 0; i < found; i++)
        outcome_from_result(op, &(*results)[i], offset_ms, &out[count++]);
    for (size_t k = 0; k < NUM_KNOWN; k++) {
        bool seen = false;
        for (int i = 0; i < found; i++)
            seen = seen || strcmp((*results)[i].name, KNOWN_DAEMONS[k]) == 0;
        if (!seen)
            out[count++] = (daemon_outcome_t){
                .name = KNOWN_DAEMONS[k],
                .result = "not running",
                .error = tp_sprintf("no control socket in %s: it enforces the store's kills when it starts",
                                    op->c->g->control_dir),
            };
    }
    qsort(out, count, sizeof(*out), compare_outcomes);
    *n = count;
    return out;
}

static void
outcomes_free(daemon_outcome_t *o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(o[i].error);
    free(o);
}

/* ---- reporting ---- */

/* The kill's row as the store has it now (new reference), or NULL. */
static json_t *
kill_row(sqlite3 *db, int64_t id)
{
    char *err = NULL;
    json_t *all = pol_admin_kills(db, true, &err);
    free(err);
    json_t *row = NULL;
    size_t i;
    json_t *k;
    json_array_foreach(all, i, k)
    {
        if (json_integer_value(json_object_get(k, "id")) == id)
            row = json_incref(k);
    }
    json_decref(all);
    return row;
}

/* "agent planner", or "all". */
static const char *
subject(const switch_op_t *op, char *buf, size_t len)
{
    if (strcmp(op->kind, "all") == 0)
        snprintf(buf, len, "all");
    else
        snprintf(buf, len, "%s %s", op->kind, op->target);
    return buf;
}

static void
print_header(const switch_op_t *op, json_t *row)
{
    char who[300], since[GWCTL_TIME_LEN], until[GWCTL_TIME_LEN];
    const char *by = json_string_value(json_object_get(row, "created_by"));
    const char *reason = json_string_value(json_object_get(row, "reason"));
    int64_t expires = json_integer_value(json_object_get(row, "expires_at_ms"));
    gwctl_format_time(json_integer_value(json_object_get(row, "created_at_ms")), since);
    subject(op, who, sizeof(who));
    if (strcmp(op->cmd, "release") == 0) {
        printf("kill #%lld of %s released in the store (%.1f ms); it was in force since %s (by %s: %s)\n",
               (long long)op->id, who, op->stored_ms, since, by != NULL ? by : "?", reason != NULL ? reason : "");
        return;
    }
    printf("kill #%lld of %s %s (%.1f ms): since %s by %s, %s%s; reason: %s\n", (long long)op->id, who,
           op->already ? "was already in force, nothing written" : "stored", op->stored_ms, since,
           by != NULL ? by : "?", expires != 0 ? "expires " : "until released",
           expires != 0 ? gwctl_format_time(expires, until) : "", reason != NULL ? reason : "");
}

static void
print_outcomes(const daemon_outcome_t *o, size_t n)
{
    gwctl_table_t t = GWCTL_TABLE(5);
    gwctl_table_row(&t, "DAEMON", "RESULT", "REQUESTED", "CONFIRMED", "DETAIL");
    for (size_t i = 0; i < n; i++) {
        char req[32] = "-", conf[32] = "-", detail[300];
        if (o[i].requested)
            snprintf(req, sizeof(req), "%.1f ms", o[i].requested_ms);
        if (o[i].confirmed) {
            snprintf(conf, sizeof(conf), "%.1f ms", o[i].answered_ms);
            snprintf(detail, sizeof(detail), "enforced on %d worker%s", o[i].workers, o[i].workers == 1 ? "" : "s");
        } else {
            gwctl_shorten(o[i].error, detail, 200);
        }
        gwctl_table_row(&t, o[i].name, o[i].result, req, conf, detail);
    }
    gwctl_table_print(&t);
}

/* Prints the verdict line (stdout when held, stderr otherwise). Returns the exit status. */
static int
verdict(const switch_op_t *op, const daemon_outcome_t *o, size_t n, double all_ms, bool quiet)
{
    size_t running = 0, confirmed = 0;
    char missing[512] = "";
    for (size_t i = 0; i < n; i++) {
        running += o[i].running;
        confirmed += o[i].confirmed;
        if (o[i].running && !o[i].confirmed) {
            size_t len = strlen(missing);
            snprintf(missing + len, sizeof(missing) - len, "%s%s (%s)", len > 0 ? ", " : "", o[i].name, o[i].result);
        }
    }
    const char *what = strcmp(op->cmd, "kill") == 0 ? "held" : "released";
    if (running > 0 && confirmed == running) {
        if (!quiet)
            printf("%s: all %zu running daemon%s confirmed within %.1f ms\n", what, running, running == 1 ? "" : "s",
                   all_ms);
        return 0;
    }
    if (running == 0) {
        gwctl_error(op->c,
                    "NOT CONFIRMED: no daemon is running in %s (check --control-dir); the change is "
                    "stored and every daemon applies it when it starts",
                    op->c->g->control_dir);
        return 1;
    }
    gwctl_error(op->c,
                "NOT CONFIRMED by %s; the change is stored, and a daemon that is up applies it within one "
                "store watch interval: check 'gwctl status' and its log",
                missing);
    return 1;
}

/* Broadcasts, reports, audits the outcome; returns the exit status. */
static int
announce(switch_op_t *op, sqlite3 *db, const char *actor)
{
    tp_control_result_t *results = NULL;
    int num_results = 0;
    size_t n = 0;
    daemon_outcome_t *o = broadcast(op, &results, &num_results, &n);
    double all_ms = 0;
    bool all = true;
    size_t running = 0;
    json_t *daemons = json_array();
    json_t *not_confirmed = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(daemons, outcome_json(&o[i]));
        running += o[i].running;
        if (o[i].running && !o[i].confirmed) {
            all = false;
            json_array_append_new(not_confirmed, json_string(o[i].name));
        }
        if (o[i].confirmed && o[i].answered_ms > all_ms)
            all_ms = o[i].answered_ms;
    }
    all = all && running > 0;

    json_t *outcome = json_pack("{s:s, s:I, s:I, s:i, s:O, s:b, s:o, s:O}", "command", op->cmd, "kill_id",
                                (json_int_t)op->id, "started_at_ms", (json_int_t)op->started_at_ms, "deadline_ms",
                                op->deadline_ms, "daemons", daemons, "all_confirmed", all, "confirmed_ms",
                                all ? ms_json(all_ms) : json_null(), "not_confirmed", not_confirmed);
    char *err = NULL;
    int audited = pol_admin_audit_kill_outcome(db, actor, op->kind, op->target, outcome, &err);
    if (audited != 0) {
        gwctl_error(op->c, "warning: the outcome could not be written to the audit log: %s", err);
        free(err);
    }

    json_t *row = kill_row(db, op->id);
    int rv;
    if (op->c->g->json) {
        json_t *out = json_pack("{s:s, s:O?, s:b, s:b, s:I, s:o, s:i, s:O, s:b, s:o, s:O}", "command", op->cmd, "kill",
                                row, "already_in_force", op->already, "target_known",
                                pol_admin_kill_target_known(db, op->kind, op->target), "started_at_ms",
                                (json_int_t)op->started_at_ms, "stored_ms", ms_json(op->stored_ms), "deadline_ms",
                                op->deadline_ms, "daemons", daemons, "all_confirmed", all, "confirmed_ms",
                                all ? ms_json(all_ms) : json_null(), "not_confirmed", not_confirmed);
        print_json(out);
        rv = verdict(op, o, n, all_ms, true);
    } else {
        print_header(op, row);
        print_outcomes(o, n);
        rv = verdict(op, o, n, all_ms, false);
    }
    json_decref(row);
    json_decref(outcome);
    json_decref(daemons);
    json_decref(not_confirmed);
    outcomes_free(o, n);
    tp_control_results_free(results, (size_t)num_results);
    return rv != 0 ? rv : (audited != 0 ? 1 : 0);
}

/* The id of the kill of kind/target in force, or 0. */
static int64_t
active_id(sqlite3 *db, const char *kind, const char *target)
{
    char *err = NULL;
    json_t *kills = pol_admin_kills(db, false, &err);
    free(err);
    int64_t id = 0;
    size_t i;
    json_t *k;
    json_array_foreach(kills, i, k)
    {
        if (strcmp(json_string_value(json_object_get(k, "target_kind")), kind) == 0 &&
            strcmp(json_string_value(json_object_get(k, "target")), target) == 0)
            id = json_integer_value(json_object_get(k, "id"));
    }
    json_decref(kills);
    return id;
}

/* ---- gwctl kill ---- */

static int
run_kill(gwctl_t *g, int argc, char **argv)
{
    static const struct option opts[] = {
        { "reason", required_argument, NULL, 'r' },
        { "ttl", required_argument, NULL, 't' },
        { "deadline-ms", required_argument, NULL, 'D' },
        { "yes", no_argument, NULL, 'y' },
        { NULL, 0, NULL, 0 },
    };
    gwctl_call_t c;
    gwctl_call_begin(&c, g, &gwctl_cmd_kill);
    switch_op_t op = { .c = &c, .cmd = "kill", .deadline_ms = g->timeout_ms };
    bool yes = false;
    int opt;
    while ((opt = gwctl_getopt(&c, argc, argv, "r:y", opts)) != -1) {
        if (opt == '?')
            return gwctl_call_end(&c, 2);
        if (opt == 'r')
            op.reason = optarg;
        else if (opt == 't' && (gwctl_parse_duration(optarg, &op.ttl_ms) != 0 || op.ttl_ms <= 0))
            return gwctl_call_end(&c,
                                  gwctl_usage_error(&c, "--ttl takes a duration such as 30m or 4h, not '%s'", optarg));
        else if (opt == 'D' && parse_deadline(&op, optarg) != 0)
            return gwctl_call_end(&c, 2);
        else if (opt == 'y')
            yes = true;
    }
    if (parse_target(&op, argc, argv) != 0)
        return gwctl_call_end(&c, 2);
    if (op.reason == NULL || op.reason[0] == '\0')
        return gwctl_call_end(&c, gwctl_usage_error(&c, "--reason is required: say what the incident is"));
    if (strcmp(op.kind, "all") == 0 && !yes) {
        if (!isatty(STDIN_FILENO))
            return gwctl_call_end(
                &c, gwctl_usage_error(&c, "kill all stops every caller on every plane: add --yes to confirm (stdin "
                                          "is not a terminal to ask on)"));
        if (!confirm_all(&op))
            return gwctl_call_end(&c, gwctl_error(&c, "not confirmed; nothing changed"));
    }

    sqlite3 *db = gwctl_call_db(&c);
    if (db == NULL)
        return gwctl_call_end(&c, 1);
    char *actor = pol_admin_actor(); /* not gwctl_call_actor: this command tells the daemons itself */
    op.start_ns = tp_mono_ns();
    op.started_at_ms = tp_unix_ms();
    char *err = NULL;
    op.id = pol_admin_kill(db, actor, op.kind, op.target, op.reason, op.ttl_ms, &err);
    if (op.id == -EEXIST && (op.id = active_id(db, op.kind, op.target)) > 0) {
        /* Running the command again is how an operator re-checks that a kill holds. */
        if (!g->json)
            gwctl_error(&c, "note: %s", err);
        free(err);
        err = NULL;
        op.already = true;
    }
    if (op.id <= 0) {
        free(actor);
        return gwctl_call_end(&c, gwctl_fail(&c, err));
    }
    op.stored_ms = since_start_ms(&op);
    if (!op.already && !g->json && !pol_admin_kill_target_known(db, op.kind, op.target))
        gwctl_error(&c,
                    "note: nothing in the store is called '%s' (a typo?); the kill covers any caller that "
                    "authenticates under that name",
                    op.target);
    int rv = announce(&op, db, actor);
    free(actor);
    return gwctl_call_end(&c, rv);
}

/* ---- gwctl release ---- */

static int
run_release(gwctl_t *g, int argc, char **argv)
{
    static const struct option opts[] = {
        { "deadline-ms", required_argument, NULL, 'D' },
        { NULL, 0, NULL, 0 },
    };
    gwctl_call_t c;
    gwctl_call_begin(&c, g, &gwctl_cmd_release);
    switch_op_t op = { .c = &c, .cmd = "release", .deadline_ms = g->timeout_ms };
    int opt;
    while ((opt = gwctl_getopt(&c, argc, argv, "", opts)) != -1) {
        if (opt == '?' || (opt == 'D' && parse_deadline(&op, optarg) != 0))
            return gwctl_call_end(&c, 2);
    }
    if (parse_target(&op, argc, argv) != 0)
        return gwctl_call_end(&c, 2);
    sqlite3 *db = gwctl_call_db(&c);
    if (db == NULL)
        return gwctl_call_end(&c, 1);
    char *actor = pol_admin_actor();
    op.start_ns = tp_mono_ns();
    op.started_at_ms = tp_unix_ms();
    char *err = NULL;
    op.id = pol_admin_release(db, actor, op.kind, op.target, &err);
    if (op.id <= 0) {
        free(actor);
        return gwctl_call_end(&c, gwctl_fail(&c, err));
    }
    op.stored_ms = since_start_ms(&op);
    int rv = announce(&op, db, actor);
    free(actor);
    return gwctl_call_end(&c, rv);
}

/* ---- gwctl kills ---- */

static int
run_kills(gwctl_t *g, int argc, char **argv)
{
    static const struct option opts[] = {
        { "all", no_argument, NULL, 'a' },
        { NULL, 0, NULL, 0 },
    };
    gwctl_call_t c;
    gwctl_call_begin(&c, g, &gwctl_cmd_kills);
    bool all = false;
    int opt;
    while ((opt = gwctl_getopt(&c, argc, argv, "a", opts)) != -1) {
        if (opt == '?')
            return gwctl_call_end(&c, 2);
        all = true;
    }
    if (gwctl_operands(&c, argc, argv, 0, NULL, NULL) != 0)
        return gwctl_call_end(&c, 2);
    sqlite3 *db = gwctl_call_db(&c);
    char *err = NULL;
    json_t *kills = db != NULL ? pol_admin_kills(db, all, &err) : NULL;
    if (kills == NULL)
        return gwctl_call_end(&c, db != NULL ? gwctl_fail(&c, err) : 1);
    if (g->json) {
        gwctl_print_json(kills);
        return gwctl_call_end(&c, 0);
    }
    if (json_array_size(kills) == 0) {
        printf(all ? "no kill was ever made\n" : "no kill is in force\n");
        json_decref(kills);
        return gwctl_call_end(&c, 0);
    }
    gwctl_table_t t = GWCTL_TABLE(all ? 9 : 6);
    if (all)
        gwctl_table_row(&t, "ID", "TARGET", "SINCE", "BY", "EXPIRES", "STATUS", "RELEASED", "RELEASED-BY", "REASON");
    else
        gwctl_table_row(&t, "ID", "TARGET", "SINCE", "BY", "EXPIRES", "REASON");
    size_t i;
    json_t *k;
    json_array_foreach(kills, i, k)
    {
        char id[24], target[300], since[GWCTL_TIME_LEN], expires[GWCTL_TIME_LEN], released[GWCTL_TIME_LEN], reason[81];
        const char *kind = json_string_value(json_object_get(k, "target_kind"));
        snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_object_get(k, "id")));
        if (strcmp(kind, "all") == 0)
            snprintf(target, sizeof(target), "all");
        else
            snprintf(target, sizeof(target), "%s %s", kind, json_string_value(json_object_get(k, "target")));
        gwctl_format_time(json_integer_value(json_object_get(k, "created_at_ms")), since);
        int64_t exp = json_integer_value(json_object_get(k, "expires_at_ms"));
        if (exp == 0)
            snprintf(expires, sizeof(expires), "never");
        else
            gwctl_format_time(exp, expires);
        gwctl_shorten(json_string_value(json_object_get(k, "reason")), reason, 80);
        const char *by = json_string_value(json_object_get(k, "created_by"));
        if (all)
            gwctl_table_row(&t, id, target, since, by, expires, json_string_value(json_object_get(k, "status")),
                            gwctl_format_time(json_integer_value(json_object_get(k, "released_at_ms")), released),
                            json_string_value(json_object_get(k, "released_by")), reason);
        else
            gwctl_table_row(&t, id, target, since, by, expires, reason);
    }
    gwctl_table_print(&t);
    json_decref(kills);
    return gwctl_call_end(&c, 0);
}

const gwctl_command_t gwctl_cmd_kill = {
    .name = "kill",
    .summary = "Stop an agent, a principal, a team or everyone on every plane at once.",
    .usage = " agent|principal|team NAME --reason TEXT [--ttl DURATION] [--deadline-ms N]\n"
             "       gwctl kill all --reason TEXT [--yes] [--ttl DURATION] [--deadline-ms N]\n"
             "  Writes the kill to the store (audited), then sends it to every daemon in the control directory\n"
             "  and reports per daemon: REQUESTED (the command reached its socket) and CONFIRMED (the daemon\n"
             "  enforces the kill and has ended the subject's in-flight work), each in ms from the start.\n"
             "  --reason TEXT       what the incident is (required; kept in the audit log)\n"
             "  --ttl DURATION      the kill expires by itself after this long (30m, 4h, 1d); default: never\n"
             "  --deadline-ms N     how long to wait for the daemons (default: --timeout, 2000)\n"
             "  --yes               kill all without asking (required when stdin is not a terminal)\n"
             "  Exit status 0 when every running daemon confirmed; 1 when one did not (named on stderr), or\n"
             "  when no daemon is running; 2 on a usage error. Running it again for a kill in force re-checks it.",
    .run = run_kill,
};

const gwctl_command_t gwctl_cmd_release = {
    .name = "release",
    .summary = "Lift a kill: service comes back on every plane without restarts.",
    .usage = " agent|principal|team NAME [--deadline-ms N]\n"
             "       gwctl release all [--deadline-ms N]\n"
             "  Marks the kill released in the store (audited), then tells every daemon and reports as kill does.\n"
             "  Exit status 1 also when no kill of that target is in force.",
    .run = run_release,
};

const gwctl_command_t gwctl_cmd_kills = {
    .name = "kills",
    .summary = "List the kills in force: target, since when, by whom, why, expiry.",
    .usage = " [--all]\n"
             "  --all   every kill ever made, with its status (active, expired, released) and who released it",
    .run = run_kills,
};
