/*
 * gwctl model: the rotation of model-gw's deployments, through model-gw's control socket
 * (<control_dir>/model-gw.sock, commands model.status, model.drain and model.undrain).
 *
 * Drain state lives in model-gw's memory (a restart puts every deployment back in rotation), so
 * these commands talk to the running daemon, not the store; the store gets one audit record per
 * deployment a drain or undrain reached (model.drain / model.undrain, target "MODEL/INDEX",
 * with what the daemon answered as the detail).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "args.h"
#include "clock.h"
#include "control.h"
#include "mem.h"

#define DAEMON_NAME "model-gw"
/* How long drain --wait waits for the requests in flight by default, and how often it asks. */
#define DEFAULT_WAIT_TIMEOUT_MS 60000
#define WAIT_POLL_MS            100

/* Sends {"cmd": cmd, ...args} (args borrowed; may be NULL) to model-gw and returns its result
 * (new reference), or NULL after printing why. */
static json_t *
ask_model_gw(gwctl_call_t *c, const char *cmd, json_t *args)
{
    char *path = tp_sprintf("%s/%s.sock", c->g->control_dir, DAEMON_NAME);
    json_t *req = args != NULL ? json_deep_copy(args) : json_object();
    json_object_set_new(req, "cmd", json_string(cmd));
    json_t *resp = NULL;
    char *err = NULL;
    int rv = tp_control_request(path, req, c->g->timeout_ms, &resp, &err);
    json_decref(req);
    json_t *result = NULL;
    if (rv == -ENOENT || rv == -ECONNREFUSED) {
        gwctl_error(c, "model-gw is not running: nothing answers on %s (check --control-dir)", path);
    } else if (rv != 0) {
        gwctl_error(c, "%s: %s", path, err != NULL ? err : strerror(-rv));
    } else if (!json_is_true(json_object_get(resp, "ok"))) {
        const char *why = json_string_value(json_object_get(resp, "error"));
        if (why != NULL && strncmp(why, "unknown command", 15) == 0)
            gwctl_error(c, "%s (model-gw is older than this gwctl)", why);
        else
            gwctl_error(c, "%s", why != NULL ? why : "model-gw refused without saying why");
    } else {
        result = json_incref(json_object_get(resp, "result"));
        if (result == NULL)
            result = json_object();
    }
    json_decref(resp);
    free(err);
    free(path);
    return result;
}

/* ---- output ---- */

static void
circuit_text(json_t *d, char *buf, size_t len)
{
    json_t *circuit = json_object_get(d, "circuit");
    long long failures = (long long)json_integer_value(json_object_get(circuit, "failures"));
    if (json_is_true(json_object_get(circuit, "open")))
        snprintf(buf, len, "open");
    else if (failures > 0)
        snprintf(buf, len, "closed (%lld failed)", failures);
    else
        snprintf(buf, len, "closed");
}

static void
warmup_text(json_t *d, char *buf, size_t len)
{
    json_t *w = json_object_get(d, "warmup");
    if (!json_is_true(json_object_get(w, "enabled"))) {
        snprintf(buf, len, "off");
        return;
    }
    const char *state = json_string_value(json_object_get(d, "state"));
    long long attempts = (long long)json_integer_value(json_object_get(w, "attempts"));
    json_t *last = json_object_get(w, "last_failure_status");
    if (state == NULL || strcmp(state, "warming") != 0)
        snprintf(buf, len, "on");
    else if (json_is_integer(last) && json_integer_value(last) > 0)
        snprintf(buf, len, "attempt %lld, last failed %lld", attempts, (long long)json_integer_value(last));
    else if (json_is_integer(last))
        snprintf(buf, len, "attempt %lld, last failed to connect", attempts);
    else
        snprintf(buf, len, "attempt %lld", attempts);
}

static void
table_row(gwctl_table_t *t, const char *model, json_t *d)
{
    char in_flight[24], weight[24], circuit[64], warmup[96];
    snprintf(in_flight, sizeof(in_flight), "%lld", (long long)json_integer_value(json_object_get(d, "in_flight")));
    snprintf(weight, sizeof(weight), "%lld", (long long)json_integer_value(json_object_get(d, "weight")));
    circuit_text(d, circuit, sizeof(circuit));
    warmup_text(d, warmup, sizeof(warmup));
    gwctl_table_row(t, model, json_string_value(json_object_get(d, "id")),
                    json_string_value(json_object_get(d, "state")), in_flight, weight, circuit, warmup,
                    json_string_value(json_object_get(d, "url")));
}

static gwctl_table_t
new_table(void)
{
    gwctl_table_t t = GWCTL_TABLE(8);
    gwctl_table_row(&t, "MODEL", "DEPLOYMENT", "STATE", "IN-FLIGHT", "WEIGHT", "CIRCUIT", "WARMUP", "URL");
    return t;
}

/* ---- gwctl model status ---- */

static int
model_status(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option none[] = { { NULL, 0, NULL, 0 } };
    if (gwctl_getopt(c, argc, argv, "", none) != -1)
        return 2; /* it takes no option: gwctl_getopt has said what is wrong */
    if (argc - optind > 1)
        return gwctl_usage_error(c, "unexpected argument '%s'", argv[optind + 1]);
    json_t *args = json_object();
    if (argc - optind == 1)
        json_object_set_new(args, "model", json_string(argv[optind]));
    json_t *result = ask_model_gw(c, "model.status", args);
    json_decref(args);
    if (result == NULL)
        return 1;
    json_t *models = json_object_get(result, "models");
    if (c->g->json) {
        gwctl_print_json(json_incref(models));
        json_decref(result);
        return 0;
    }
    if (json_array_size(models) == 0) {
        printf("model-gw serves no model\n");
        json_decref(result);
        return 0;
    }
    gwctl_table_t t = new_table();
    size_t i, j;
    json_t *m, *d;
    json_array_foreach(models, i, m)
    {
        json_array_foreach(json_object_get(m, "deployments"), j, d)
            table_row(&t, json_string_value(json_object_get(m, "model")), d);
    }
    gwctl_table_print(&t);
    json_decref(result);
    return 0;
}

/* ---- gwctl model drain / undrain ---- */

typedef struct rotation_op {
    gwctl_call_t *c;
    const char *cmd;    /* "model.drain" or "model.undrain" (also the audit action) */
    const char *model;  /* operand */
    const char *index;  /* operand, or NULL for every deployment */
    bool wait;          /* drain: wait for in-flight requests to reach 0 */
    int64_t timeout_ms; /* for the wait */
} rotation_op_t;

/* Writes one audit record per deployment in the daemon's answer. Returns 0, or 1 after a warning. */
static int
audit(rotation_op_t *op, json_t *result)
{
    sqlite3 *db = gwctl_call_db(op->c);
    if (db == NULL)
        return gwctl_error(op->c, "warning: the change is made, but no audit record could be written");
    char *actor = pol_admin_actor();
    char *err = NULL;
    int txn = tp_store_change_begin(db, "model_rotation", &err);
    int rv = txn < 0 ? txn : 0;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "deployments"), i, d)
    {
        if (rv != 0)
            break;
        char *target = tp_sprintf("%s/%s", op->model, json_string_value(json_object_get(d, "id")));
        json_t *detail = json_pack("{s:s, s:O?, s:O?, s:O?, s:O?}", "via", "gwctl", "changed",
                                   json_object_get(d, "changed"), "state", json_object_get(d, "state"), "in_flight",
                                   json_object_get(d, "in_flight"), "url", json_object_get(d, "url"));
        rv = pol_admin_record(db, actor, op->cmd, target, detail, &err);
        json_decref(detail);
        free(target);
    }
    if (txn >= 0)
        rv = tp_store_change_end(db, txn, "model_rotation", rv, &err);
    free(actor);
    if (rv != 0) {
        gwctl_error(op->c, "warning: the change is made, but the audit record could not be written: %s",
                    err != NULL ? err : "unknown error");
        free(err);
        return 1;
    }
    return 0;
}

/* The requests still in flight on the deployments `op` drained, or -1 after printing why the
 * daemon could not say. */
static long long
in_flight_now(rotation_op_t *op)
{
    json_t *args = json_pack("{s:s}", "model", op->model);
    json_t *result = ask_model_gw(op->c, "model.status", args);
    json_decref(args);
    if (result == NULL)
        return -1;
    long long sum = 0;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(json_array_get(json_object_get(result, "models"), 0), "deployments"), i, d)
    {
        if (op->index == NULL || strcmp(json_string_value(json_object_get(d, "id")), op->index) == 0)
            sum += (long long)json_integer_value(json_object_get(d, "in_flight"));
    }
    json_decref(result);
    return sum;
}

/* Polls until the drained deployments have no request in flight. Returns 0, or 1 on timeout (or
 * when model-gw stops answering). Fills *waited_ms and *left. */
static int
wait_idle(rotation_op_t *op, double *waited_ms, long long *left)
{
    uint64_t start = tp_mono_ns();
    for (;;) {
        *left = in_flight_now(op);
        *waited_ms = (double)(tp_mono_ns() - start) / 1e6;
        if (*left < 0)
            return 1;
        if (*left == 0)
            return 0;
        if (*waited_ms >= (double)op->timeout_ms)
            return 1;
        struct timespec ts = { 0, WAIT_POLL_MS * 1000000L };
        nanosleep(&ts, NULL);
    }
}

static int
parse_rotation_args(rotation_op_t *op, int argc, char **argv, bool drain)
{
    static const struct option opts[] = {
        { "wait", no_argument, NULL, 'w' },
        { "timeout-ms", required_argument, NULL, 'T' },
        { NULL, 0, NULL, 0 },
    };
    static const struct option none[] = { { NULL, 0, NULL, 0 } };
    bool timeout_given = false;
    int opt;
    while ((opt = gwctl_getopt(op->c, argc, argv, "", drain ? opts : none)) != -1) {
        if (opt == '?')
            return 2;
        if (opt == 'w') {
            op->wait = true;
        } else if (opt == 'T') {
            if (gwctl_parse_count(optarg, &op->timeout_ms) != 0 || op->timeout_ms <= 0 || op->timeout_ms > 86400000)
                return gwctl_usage_error(op->c, "--timeout-ms takes milliseconds from 1 to 86400000, not '%s'", optarg);
            timeout_given = true;
        }
    }
    if (timeout_given && !op->wait)
        return gwctl_usage_error(op->c, "--timeout-ms goes with --wait");
    int have = argc - optind;
    if (have < 1)
        return gwctl_usage_error(op->c, "the model's name is missing");
    if (have > 2)
        return gwctl_usage_error(op->c, "unexpected argument '%s'", argv[optind + 2]);
    op->model = argv[optind];
    op->index = have == 2 ? argv[optind + 1] : NULL;
    return 0;
}

static void
print_change(const rotation_op_t *op, json_t *result)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "deployments"), i, d)
    {
        const char *state = json_string_value(json_object_get(d, "state"));
        const char *id = json_string_value(json_object_get(d, "id"));
        long long inflight = (long long)json_integer_value(json_object_get(d, "in_flight"));
        if (!json_is_true(json_object_get(d, "changed")))
            printf("%s/%s: unchanged, %s\n", op->model, id, state);
        else if (strcmp(op->cmd, "model.drain") == 0)
            printf("%s/%s: drained; %lld request%s in flight finish%s there\n", op->model, id, inflight,
                   inflight == 1 ? "" : "s", inflight == 1 ? "es" : "");
        else if (strcmp(state, "warming") == 0)
            printf("%s/%s: undrained; warming up (traffic once a warm-up request succeeds)\n", op->model, id);
        else
            printf("%s/%s: undrained; back in rotation\n", op->model, id);
    }
}

static int
rotate(gwctl_call_t *c, int argc, char **argv, bool drain)
{
    rotation_op_t op = { .c = c,
                         .cmd = drain ? "model.drain" : "model.undrain",
                         .timeout_ms = DEFAULT_WAIT_TIMEOUT_MS };
    int rv = parse_rotation_args(&op, argc, argv, drain);
    if (rv != 0)
        return rv;
    json_t *args = json_pack("{s:s}", "model", op.model);
    if (op.index != NULL)
        json_object_set_new(args, "deployment", json_string(op.index));
    json_t *result = ask_model_gw(c, op.cmd, args);
    json_decref(args);
    if (result == NULL)
        return 1;
    int audited = audit(&op, result);
    double waited_ms = 0;
    long long left = 0;
    int waited = op.wait ? wait_idle(&op, &waited_ms, &left) : 0;
    if (c->g->json) {
        json_t *out = json_pack("{s:s, s:O}", "model", op.model, "deployments", json_object_get(result, "deployments"));
        if (op.wait)
            json_object_set_new(out, "wait",
                                json_pack("{s:b, s:I, s:I}", "idle", waited == 0, "in_flight", (json_int_t)left,
                                          "waited_ms", (json_int_t)waited_ms));
        gwctl_print_json(out);
    } else {
        print_change(&op, result);
        if (op.wait && waited == 0)
            printf("no request in flight after %.0f ms\n", waited_ms);
    }
    if (op.wait && waited != 0 && left >= 0)
        gwctl_error(c, "%lld request%s still in flight after %.0f ms (the deployment stays drained)", left,
                    left == 1 ? "" : "s", waited_ms);
    json_decref(result);
    return waited != 0 ? 1 : audited;
}

static int
model_drain(gwctl_call_t *c, int argc, char **argv)
{
    return rotate(c, argc, argv, true);
}

static int
model_undrain(gwctl_call_t *c, int argc, char **argv)
{
    return rotate(c, argc, argv, false);
}

static const gwctl_sub_t subs[] = {
    { "status", " [MODEL]", model_status },
    { "drain", " MODEL [DEPLOYMENT] [--wait [--timeout-ms N]]", model_drain },
    { "undrain", " MODEL [DEPLOYMENT]", model_undrain },
};

static int
run_model(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_model, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_model = {
    .name = "model",
    .summary = "Take model-gw's deployments out of rotation and back (drain, undrain); show their state.",
    .usage = " status [MODEL]\n"
             "       gwctl model drain MODEL [DEPLOYMENT] [--wait [--timeout-ms N]]\n"
             "       gwctl model undrain MODEL [DEPLOYMENT]\n"
             "  Talks to the running model-gw over its control socket. DEPLOYMENT is the index of one of\n"
             "  the model's deployments (0, 1, …, in the configuration's order); without it, every one.\n"
             "  status shows each deployment's STATE (healthy, circuit_open, draining, warming), requests\n"
             "  IN-FLIGHT, weight, circuit and warm-up. drain stops new requests to it; those in flight\n"
             "  finish. --wait then waits until none is in flight (exit 1 if some still are after\n"
             "  --timeout-ms, default 60000). undrain puts it back: after one successful warm-up request\n"
             "  (its warmup_prompt, max_tokens 1) when its warmup is on, else at once. Drain state is held\n"
             "  by model-gw in memory: a restart puts every deployment back in rotation. drain and undrain\n"
             "  are audited (model.drain, model.undrain; target MODEL/INDEX).",
    .run = run_model,
};
