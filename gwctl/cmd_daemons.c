/* gwctl status and gwctl reload: commands broadcast to every daemon's control socket. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "gwctl.h"
#include "mem.h"

/* Broadcasts {"cmd": cmd} and returns the number of daemons found (< 0 on error, printed). */
static int
broadcast(gwctl_t *g, const char *cmd, tp_control_result_t **results)
{
    char *err = NULL;
    json_t *req = json_pack("{s:s}", "cmd", cmd);
    int n = tp_control_broadcast(g->control_dir, req, g->timeout_ms, results, &err);
    json_decref(req);
    if (n < 0) {
        fprintf(stderr, "gwctl: %s\n", err != NULL ? err : "cannot reach the control directory");
        free(err);
        return -1;
    }
    if (n == 0)
        fprintf(stderr, "gwctl: no daemon control sockets in %s\n", g->control_dir);
    return n;
}

/* The daemon's answer if it succeeded, else NULL with *why set. */
static json_t *
answer_of(const tp_control_result_t *r, const char **why)
{
    if (r->status != 0) {
        *why = r->error != NULL ? r->error : strerror(-r->status);
        return NULL;
    }
    if (!json_is_true(json_object_get(r->response, "ok"))) {
        *why = json_string_value(json_object_get(r->response, "error"));
        if (*why == NULL)
            *why = "failed";
        return NULL;
    }
    json_t *result = json_object_get(r->response, "result");
    if (!json_is_object(result)) {
        *why = "malformed answer (no result)";
        return NULL;
    }
    return result;
}

/* A string member of o, or "-" when it is missing or not a string. */
static const char *
str_or_dash(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v != NULL ? v : "-";
}

static json_t *
result_json(const tp_control_result_t *r)
{
    const char *why = NULL;
    json_t *answer = answer_of(r, &why);
    json_t *o = json_pack("{s:s, s:s, s:b, s:f}", "daemon", r->name, "socket", r->path, "ok", answer != NULL,
                          "elapsed_ms", r->elapsed_ms);
    if (answer != NULL)
        json_object_set(o, "result", answer);
    else
        json_object_set_new(o, "error", json_string(why));
    return o;
}

static void
format_uptime(double s, char *buf, size_t len)
{
    if (s < 120)
        snprintf(buf, len, "%.0fs", s);
    else if (s < 7200)
        snprintf(buf, len, "%.0fm", s / 60);
    else if (s < 172800)
        snprintf(buf, len, "%.1fh", s / 3600);
    else
        snprintf(buf, len, "%.1fd", s / 86400);
}

enum { COLS = 8 };

static void
status_row(const tp_control_result_t *r, char cells[COLS][256])
{
    const char *why = NULL;
    json_t *a = answer_of(r, &why);
    snprintf(cells[0], 256, "%s", r->name);
    snprintf(cells[7], 256, "%.1fms", r->elapsed_ms);
    if (a == NULL) {
        snprintf(cells[1], 256, "unreachable: %s", why);
        for (int i = 2; i < 7; i++)
            snprintf(cells[i], 256, "-");
        return;
    }
    snprintf(cells[1], 256, "%s", str_or_dash(a, "state"));
    snprintf(cells[2], 256, "%lld", (long long)json_integer_value(json_object_get(a, "pid")));
    format_uptime(json_number_value(json_object_get(a, "uptime_s")), cells[3], 256);
    snprintf(cells[4], 256, "%lld", (long long)json_integer_value(json_object_get(a, "in_flight")));
    json_t *listen = json_object_get(a, "listen");
    const char *first = json_string_value(json_array_get(listen, 0));
    snprintf(cells[5], 256, "%s", first != NULL ? first : "-");
    json_t *kills = json_object_get(json_object_get(a, "policy"), "kills_active");
    snprintf(cells[6], 256, "%lld", (long long)json_integer_value(kills));
}

static int
run_status(gwctl_t *g, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "gwctl status: unexpected argument '%s'\n", argv[1]);
        return 2;
    }
    tp_control_result_t *results = NULL;
    int n = broadcast(g, "status", &results);
    if (n <= 0)
        return 1;
    int failed = 0;
    json_t *all = json_array();
    char(*cells)[COLS][256] = tp_calloc((size_t)n + 1, sizeof(*cells));
    const char *header[COLS] = { "DAEMON", "STATE", "PID", "UPTIME", "IN-FLIGHT", "LISTEN", "KILLS", "ANSWERED" };
    for (int i = 0; i < COLS; i++)
        snprintf(cells[0][i], 256, "%s", header[i]);
    for (int i = 0; i < n; i++) {
        const char *why;
        failed += answer_of(&results[i], &why) == NULL;
        json_array_append_new(all, result_json(&results[i]));
        status_row(&results[i], cells[i + 1]);
    }
    if (g->json) {
        gwctl_print_json(all);
    } else {
        json_decref(all);
        const char **flat = tp_calloc((size_t)(n + 1) * COLS, sizeof(*flat));
        for (int r = 0; r <= n; r++)
            for (int c = 0; c < COLS; c++)
                flat[r * COLS + c] = cells[r][c];
        gwctl_print_table(flat, (size_t)n + 1, COLS);
        free(flat);
    }
    free(cells);
    tp_control_results_free(results, (size_t)n);
    return failed == 0 ? 0 : 1;
}

static int
run_reload(gwctl_t *g, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "gwctl reload: unexpected argument '%s'\n", argv[1]);
        return 2;
    }
    tp_control_result_t *results = NULL;
    int n = broadcast(g, "reload", &results);
    if (n <= 0)
        return 1;
    int failed = 0;
    json_t *all = json_array();
    for (int i = 0; i < n; i++) {
        const char *why = NULL;
        bool ok = answer_of(&results[i], &why) != NULL;
        failed += !ok;
        if (g->json)
            json_array_append_new(all, result_json(&results[i]));
        else
            printf("%-10s %s (%.1fms)\n", results[i].name, ok ? "reloaded" : why, results[i].elapsed_ms);
    }
    if (g->json)
        gwctl_print_json(all);
    else
        json_decref(all);
    tp_control_results_free(results, (size_t)n);
    return failed == 0 ? 0 : 1;
}

void
gwctl_notify_daemons(gwctl_t *g)
{
    tp_control_result_t *results = NULL;
    char *err = NULL;
    json_t *req = json_pack("{s:s}", "cmd", "refresh");
    int n = tp_control_broadcast(g->control_dir, req, g->timeout_ms, &results, &err);
    json_decref(req);
    free(err); /* no control directory: no daemon to tell */
    for (int i = 0; i < n; i++) {
        const char *why = NULL;
        if (answer_of(&results[i], &why) == NULL)
            fprintf(stderr,
                    "gwctl: warning: %s did not confirm the change (%s); it applies it within one watch "
                    "interval\n",
                    results[i].name, why);
    }
    if (n > 0)
        tp_control_results_free(results, (size_t)n);
}

const gwctl_command_t gwctl_cmd_status = {
    .name = "status",
    .summary = "Ask every daemon in the control directory for its status.",
    .usage = "",
    .run = run_status,
};

const gwctl_command_t gwctl_cmd_reload = {
    .name = "reload",
    .summary = "Make every daemon re-read its configuration and the store's state.",
    .usage = "",
    .run = run_reload,
};
