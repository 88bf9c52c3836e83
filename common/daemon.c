#include "daemon.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

#define DEFAULT_CONFIG_PATH "/etc/triplane/triplane.yaml" /* where the container image puts it */
#define DRAIN_POLL_MS       20                            /* how often shutdown checks in-flight requests */
#define DRAIN_IDLE_MS       250 /* connections with no request for this long are idle keep-alives */

/* A snapshot with a reference count: the main thread holds one reference to the current snapshot,
 * and a request that keeps using a snapshot after its handler returns holds one more (see
 * tp_daemon_request_state_hold). The last reference released frees it, on whichever thread. */
typedef struct state_ref {
    void *state;
    _Atomic long refs;
    const tp_state_ops_t *ops;
} state_ref_t;

static state_ref_t *
state_ref_new(void *state, const tp_state_ops_t *ops)
{
    state_ref_t *ref = tp_malloc(sizeof(*ref));
    ref->state = state;
    atomic_init(&ref->refs, 1);
    ref->ops = ops;
    return ref;
}

static void
state_ref_release(state_ref_t *ref)
{
    if (ref != NULL && atomic_fetch_sub(&ref->refs, 1) == 1) {
        ref->ops->release(ref->state);
        free(ref);
    }
}

struct tp_daemon {
    const tp_daemon_spec_t *spec;
    tp_config_t cfg;
    const tp_plane_config_t *plane;
    uv_loop_t loop;
    tp_metrics_t *metrics;
    tp_store_t *store;
    tp_store_writer_t *writer;
    tp_server_t *server;
    tp_control_server_t *control;
    state_ref_t *state;          /* the current snapshot, as the main thread sees it (holds one reference) */
    state_ref_t **worker_states; /* per worker: the snapshot its requests use; written only on that worker */
    uv_timer_t expiry_timer;     /* reloads the snapshot when something in it expires */
    _Atomic bool state_ready;    /* a snapshot was loaded: read by /readyz on workers */
    _Atomic bool config_ready;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer;
    uint64_t drain_deadline_ms; /* uv_now() at which in-flight requests are abandoned */
    bool shutting_down;
    bool listeners_closed;
    bool finished;            /* finish_shutdown ran */
    int64_t started_at_ms;    /* Unix time */
    uint64_t started_mono_ms; /* uv_now at start */
    tp_metric_t *m_reloads;
};

/* ---- state snapshot ---- */

/* What a control command waits for: the command, and for `kill` and `release` the kill it
 * names, which the new snapshot must show in force (kill) or no longer in force (release). */
typedef struct state_wait {
    tp_control_call_t *call;
    const char *cmd;   /* "refresh", "kill" or "release" (static) */
    json_t *kill;      /* {"id"?, "target_kind", "target"} (own reference), or NULL */
    double started_ms; /* uv_hrtime in ms when the command arrived */
} state_wait_t;

typedef struct state_swap {
    tp_daemon_t *d;
    state_ref_t *next;
    state_ref_t *prev;
    state_wait_t wait; /* wait.call answered once every worker uses `next`, or NULL */
} state_swap_t;

static void answer_wait(tp_daemon_t *d, const state_wait_t *w, const void *state);

static void
swap_on_worker(tp_worker_t *w, void *arg)
{
    state_swap_t *swap = arg;
    swap->d->worker_states[tp_worker_id(w)] = swap->next;
    if (swap->d->spec->on_worker_state != NULL)
        swap->d->spec->on_worker_state(swap->d, w, swap->next->state);
}

/* Every worker now uses the new snapshot, so none can still read the old one; the plane's
 * on_worker_state ran on each, and since each worker runs its tasks in order, the work its
 * on_state queued before the swap (ending what a kill covers) has run on every worker too. */
static void
swap_done(void *arg)
{
    state_swap_t *swap = arg;
    state_ref_release(swap->prev);
    if (swap->wait.call != NULL)
        answer_wait(swap->d, &swap->wait, swap->next->state);
    json_decref(swap->wait.kill);
    free(swap);
}

static void on_state_expiry(uv_timer_t *t);

/* Arms the expiry timer for the earliest moment something in the snapshot stops applying. */
static void
arm_expiry(tp_daemon_t *d)
{
    int64_t at = d->spec->state_ops->expires_at_ms != NULL ? d->spec->state_ops->expires_at_ms(d->state->state) : 0;
    uv_timer_stop(&d->expiry_timer);
    if (at > 0) {
        int64_t wait = at - tp_unix_ms();
        uv_timer_start(&d->expiry_timer, on_state_expiry, wait > 0 ? (uint64_t)wait + 1 : 0, 0);
    }
}

/* Loads a new snapshot and hands it to every worker. When `wait` is not NULL its call is
 * answered once every worker uses the new snapshot (or at once with the failure); the wait's
 * kill reference passes to this function. */
static int
load_state_then(tp_daemon_t *d, const char *why, const state_wait_t *wait)
{
    char *err = NULL;
    void *next = d->spec->state_ops->load(tp_store_db(d->store), &err);
    if (next == NULL) {
        tp_log_fields(TP_LOG_ERROR, NULL, "state load failed",
                      json_pack("{s:s, s:s}", "reason", why, "error", err != NULL ? err : "unknown"));
        tp_metric_add(d->m_reloads, (const char *[]){ "failed" }, 1);
        if (wait != NULL) {
            tp_control_fail(wait->call, err != NULL ? err : "state load failed");
            json_decref(wait->kill);
        }
        free(err);
        return -1;
    }
    state_ref_t *prev = d->state;
    d->state = state_ref_new(next, d->spec->state_ops);
    atomic_store(&d->state_ready, true);
    if (d->spec->on_state != NULL)
        d->spec->on_state(d, next);
    if (d->server != NULL && d->worker_states != NULL) {
        state_swap_t *swap = tp_calloc(1, sizeof(*swap));
        *swap = (state_swap_t){ .d = d, .next = d->state, .prev = prev };
        if (wait != NULL)
            swap->wait = *wait;
        tp_server_each_worker(d->server, swap_on_worker, swap, &d->loop, swap_done, swap);
    } else {
        state_ref_release(prev);
        if (wait != NULL) {
            answer_wait(d, wait, next);
            json_decref(wait->kill);
        }
    }
    arm_expiry(d);
    tp_metric_add(d->m_reloads, (const char *[]){ "ok" }, 1);
    tp_log_fields(TP_LOG_DEBUG, NULL, "state loaded", json_pack("{s:s}", "reason", why));
    return 0;
}

static int
load_state(tp_daemon_t *d, const char *why)
{
    return load_state_then(d, why, NULL);
}

static void
on_state_expiry(uv_timer_t *t)
{
    load_state(t->data, "expiry");
}

static void
on_store_change(tp_store_t *store, int64_t state_version, void *data)
{
    load_state(data, "store changed");
}

/* ---- reload (SIGHUP, control `reload`) ---- */

/* Re-reads the configuration file and applies what can change at run time (the log level);
 * other changes need a restart, which is logged. Then reloads the state snapshot. Returns 0,
 * or -1 with *err when the new file is invalid (the old configuration stays in force). */
static int
reload(tp_daemon_t *d, char **err)
{
    tp_config_t next;
    char *errors = NULL;
    if (tp_config_load(d->cfg.path, &next, &errors) != 0) {
        tp_log_fields(TP_LOG_ERROR, NULL, "reload refused: configuration invalid",
                      json_pack("{s:s}", "errors", errors != NULL ? errors : ""));
        *err = tp_sprintf("configuration invalid, nothing changed:\n%s", errors != NULL ? errors : "");
        free(errors);
        return -1;
    }
    tp_log_level_t level;
    if (tp_log_level_parse(next.common.log_level, &level) == 0)
        tp_log_set_level(level);
    if (strcmp(next.common.log_level, d->cfg.common.log_level) != 0) {
        free(d->cfg.common.log_level);
        d->cfg.common.log_level = tp_strdup(next.common.log_level);
    }
    tp_config_free(&next);
    tp_info("configuration reloaded (log_level applied; listeners, workers, store and timeouts need a restart)");
    return load_state(d, "reload") == 0 ? 0 : (*err = tp_strdup("state reload failed; see the log"), -1);
}

/* ---- control commands ---- */

static void
cmd_status(tp_control_call_t *call, json_t *args, void *data)
{
    tp_daemon_t *d = data;
    json_t *r = json_object();
    json_object_set_new(r, "name", json_string(d->spec->name));
    json_object_set_new(r, "version", json_string(TP_VERSION));
    json_object_set_new(r, "pid", json_integer(getpid()));
    json_object_set_new(r, "uptime_s", json_real((double)(uv_now(&d->loop) - d->started_mono_ms) / 1000.0));
    json_object_set_new(r, "started_at_ms", json_integer(d->started_at_ms));
    json_object_set_new(r, "state", json_string(d->shutting_down ? "draining" : "running"));
    json_object_set_new(r, "in_flight", json_integer(tp_server_inflight(d->server)));
    json_object_set_new(r, "workers", json_integer(tp_server_worker_count(d->server)));
    json_object_set_new(r, "listen", tp_server_listen_addresses(d->server));
    json_object_set_new(r, "config", json_string(d->cfg.path));
    json_object_set_new(r, "store", json_string(tp_store_path(d->store)));
    json_object_set_new(r, "store_healthy", json_boolean(tp_store_healthy(d->store)));
    json_object_set_new(r, "schema_version", json_integer(tp_store_schema_version(d->store)));
    json_object_set_new(r, "writer_queue", json_integer((json_int_t)tp_store_writer_depth(d->writer)));
    json_object_set_new(r, "policy", d->state != NULL ? d->spec->state_ops->describe(d->state->state) : json_null());
    tp_control_reply(call, r);
}

/* `refresh`: rebuild the state snapshot from the store now (gwctl sends it after every change,
 * so a change does not wait for the next watch tick); answered once every worker uses it. */
static void
cmd_refresh(tp_control_call_t *call, json_t *args, void *data)
{
    state_wait_t w = { .call = call, .cmd = "refresh", .started_ms = (double)uv_hrtime() / 1e6 };
    load_state_then(data, "control refresh", &w);
}

/* Whether the snapshot has a kill of kind/target in force, read from its description's "kills"
 * array (the policy snapshot's: [{"target_kind", "target", ...}]). */
static bool
state_has_kill(tp_daemon_t *d, const void *state, const char *kind, const char *target)
{
    json_t *desc = d->spec->state_ops->describe(state);
    bool found = false;
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(desc, "kills"), i, k)
    {
        const char *kk = json_string_value(json_object_get(k, "target_kind"));
        const char *kt = json_string_value(json_object_get(k, "target"));
        found = found || (kk != NULL && kt != NULL && strcmp(kk, kind) == 0 && strcmp(kt, target) == 0);
    }
    json_decref(desc);
    return found;
}

/* Answers a command that waited for every worker to use `state`. For `kill` and `release` the
 * snapshot must agree with the store change the command announces; otherwise the answer is a
 * failure that says what the daemon sees (a kill released or expired in the meantime, say). */
static void
answer_wait(tp_daemon_t *d, const state_wait_t *w, const void *state)
{
    double took_ms = (double)uv_hrtime() / 1e6 - w->started_ms;
    if (w->kill == NULL) {
        tp_control_reply(w->call, json_pack("{s:b, s:f}", "refreshed", 1, "took_ms", took_ms));
        return;
    }
    bool kill = strcmp(w->cmd, "kill") == 0;
    const char *kind = json_string_value(json_object_get(w->kill, "target_kind"));
    const char *target = json_string_value(json_object_get(w->kill, "target"));
    json_int_t id = json_integer_value(json_object_get(w->kill, "id"));
    int pid, uid;
    tp_control_call_peer(w->call, &pid, &uid);
    bool in_force = state_has_kill(d, state, kind, target);
    if (in_force != kill) {
        char *msg =
            kill ? tp_sprintf("kill #%lld of %s %s is not in force in the store (released or expired "
                              "meanwhile?); nothing to enforce",
                              (long long)id, kind, target)
                 : tp_sprintf("a kill of %s %s is still in force in the store (killed again meanwhile?)", kind, target);
        tp_log_fields(TP_LOG_WARN, NULL, kill ? "kill not confirmed" : "release not confirmed",
                      json_pack("{s:I, s:s, s:s, s:s, s:i, s:i}", "kill_id", id, "target_kind", kind, "target", target,
                                "error", msg, "peer_pid", pid, "peer_uid", uid));
        tp_control_fail(w->call, msg);
        free(msg);
        return;
    }
    unsigned workers = d->server != NULL ? tp_server_worker_count(d->server) : 0;
    tp_log_fields(TP_LOG_INFO, NULL, kill ? "kill enforced" : "kill released",
                  json_pack("{s:I, s:s, s:s, s:f, s:i, s:i, s:i}", "kill_id", id, "target_kind", kind, "target", target,
                            "took_ms", took_ms, "workers", (int)workers, "peer_pid", pid, "peer_uid", uid));
    tp_control_reply(w->call, json_pack("{s:b, s:O, s:b, s:i, s:f}", kill ? "enforced" : "released", 1, "kill", w->kill,
                                        "in_force", kill, "workers", (int)workers, "took_ms", took_ms));
}

/* `kill` and `release` {"kill": {"id"?, "target_kind", "target"}}: gwctl sends them after it
 * wrote the change to the store. The daemon reloads its snapshot as for `refresh` and answers
 * once every worker uses it and the plane has acted on in-flight work, confirming that the kill
 * is (kill) or is no longer (release) in force. Who may send them is decided by the control
 * socket's peer check (root or the daemon's own user), as for every command. */
static void
cmd_kill_or_release(tp_control_call_t *call, json_t *args, const char *cmd, tp_daemon_t *d)
{
    json_t *kill = json_object_get(args, "kill");
    const char *kind = json_string_value(json_object_get(kill, "target_kind"));
    const char *target = json_string_value(json_object_get(kill, "target"));
    json_t *id = json_object_get(kill, "id");
    if (kind == NULL || target == NULL || (id != NULL && !json_is_integer(id))) {
        char *msg = tp_sprintf("%s needs {\"kill\": {\"target_kind\": ..., \"target\": ..., \"id\"?: n}}", cmd);
        tp_control_fail(call, msg);
        free(msg);
        return;
    }
    state_wait_t w = {
        .call = call,
        .cmd = cmd,
        .kill = json_pack("{s:s, s:s}", "target_kind", kind, "target", target),
        .started_ms = (double)uv_hrtime() / 1e6,
    };
    if (id != NULL)
        json_object_set(w.kill, "id", id);
    load_state_then(d, strcmp(cmd, "kill") == 0 ? "control kill" : "control release", &w);
}

static void
cmd_kill(tp_control_call_t *call, json_t *args, void *data)
{
    cmd_kill_or_release(call, args, "kill", data);
}

static void
cmd_release(tp_control_call_t *call, json_t *args, void *data)
{
    cmd_kill_or_release(call, args, "release", data);
}

static void
cmd_reload(tp_control_call_t *call, json_t *args, void *data)
{
    char *err = NULL;
    if (reload(data, &err) != 0) {
        tp_control_fail(call, err);
        free(err);
        return;
    }
    tp_control_reply(call, json_pack("{s:b}", "reloaded", 1));
}

/* ---- readiness ---- */

static bool
ready_config(void *data, const char **detail)
{
    tp_daemon_t *d = data;
    *detail = "not loaded";
    return atomic_load(&d->config_ready);
}

static bool
ready_store(void *data, const char **detail)
{
    tp_daemon_t *d = data;
    *detail = "unreachable";
    return tp_store_healthy(d->store);
}

static bool
ready_state(void *data, const char **detail)
{
    tp_daemon_t *d = data;
    *detail = "kill-switch and policy state not loaded";
    return atomic_load(&d->state_ready);
}

/* ---- metrics ---- */

static double
resident_bytes(void *data)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : 0;
}

static void
register_metrics(tp_daemon_t *d)
{
    tp_metric_t *info = tp_metrics_gauge(d->metrics, "triplane_build_info", "Build information; the value is 1.",
                                         (const char *[]){ "daemon", "version", NULL });
    tp_metric_set(info, (const char *[]){ d->spec->name, TP_VERSION }, 1);
    tp_metric_t *start = tp_metrics_gauge(d->metrics, "process_start_time_seconds",
                                          "Start time of the process since the Unix epoch, in seconds.", NULL);
    tp_metric_set(start, NULL, (double)d->started_at_ms / 1000.0);
    tp_metrics_gauge_fn(d->metrics, "process_resident_memory_bytes", "Resident memory size in bytes.", resident_bytes,
                        NULL);
    d->m_reloads =
        tp_metrics_counter(d->metrics, "triplane_state_loads_total", "State snapshot loads from the store, by result.",
                           (const char *[]){ "result", NULL });
}

/* ---- shutdown ---- */

static void
close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void
finish_shutdown(tp_daemon_t *d)
{
    if (d->finished)
        return;
    d->finished = true;
    int64_t abandoned = tp_server_inflight(d->server);
    if (abandoned > 0)
        tp_warn("shutdown: %lld requests in flight are abandoned", (long long)abandoned);
    tp_server_stop(d->server);
    if (d->spec->on_stopped != NULL)
        d->spec->on_stopped(d);
    tp_store_watch_stop(d->store);
    tp_control_close(d->control);
    d->control = NULL;
    close_handle((uv_handle_t *)&d->drain_timer);
    close_handle((uv_handle_t *)&d->expiry_timer);
    close_handle((uv_handle_t *)&d->sig_term);
    close_handle((uv_handle_t *)&d->sig_int);
    close_handle((uv_handle_t *)&d->sig_hup);
}

static void
on_drain_tick(uv_timer_t *t)
{
    tp_daemon_t *d = t->data;
    bool drained = tp_server_drained(d->server, DRAIN_IDLE_MS);
    if (drained || uv_now(&d->loop) >= d->drain_deadline_ms) {
        if (!drained)
            tp_warn("shutdown deadline (%d ms) passed with requests in flight", d->cfg.common.shutdown_timeout_ms);
        uv_timer_stop(t);
        finish_shutdown(d);
    }
}

/* Every worker has closed its listeners: from now on in-flight work only decreases. */
static void
on_listeners_closed(void *data)
{
    tp_daemon_t *d = data;
    d->listeners_closed = true;
    if (!uv_is_closing((uv_handle_t *)&d->drain_timer))
        uv_timer_start(&d->drain_timer, on_drain_tick, 0, DRAIN_POLL_MS);
}

static void
begin_shutdown(tp_daemon_t *d, const char *why)
{
    if (d->shutting_down) {
        /* A second signal: the operator does not want to wait. */
        tp_warn("shutdown: second %s, stopping now", why);
        uv_timer_stop(&d->drain_timer);
        finish_shutdown(d);
        return;
    }
    d->shutting_down = true;
    tp_log_fields(TP_LOG_INFO, NULL, "shutting down",
                  json_pack("{s:s, s:I, s:i}", "reason", why, "in_flight", (json_int_t)tp_server_inflight(d->server),
                            "deadline_ms", d->cfg.common.shutdown_timeout_ms));
    d->drain_deadline_ms = uv_now(&d->loop) + (uint64_t)d->cfg.common.shutdown_timeout_ms;
    tp_server_begin_shutdown(d->server, &d->loop, on_listeners_closed, d);
    if (d->spec->on_drain != NULL)
        d->spec->on_drain(d);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    tp_daemon_t *d = h->data;
    if (signum == SIGHUP) {
        char *err = NULL;
        if (reload(d, &err) != 0)
            free(err);
        return;
    }
    begin_shutdown(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void
watch_signal(tp_daemon_t *d, uv_signal_t *h, int signum)
{
    uv_signal_init(&d->loop, h);
    h->data = d;
    uv_signal_start(h, on_signal, signum);
}

/* ---- command line ---- */

static void
usage(const tp_daemon_spec_t *spec, FILE *out)
{
    fprintf(out,
            "usage: %s [--config PATH] [--check-config]\n"
            "%s\n\n"
            "  -c, --config PATH   configuration file (default: $TRIPLANE_CONFIG or %s)\n"
            "      --check-config  validate the configuration, print \"ok\" or the errors, and exit\n"
            "  -V, --version       print the version and exit\n"
            "  -h, --help          print this help and exit\n\n"
            "Signals: SIGTERM/SIGINT shut down gracefully; SIGHUP reloads the configuration and state.\n",
            spec->name, spec->summary, DEFAULT_CONFIG_PATH);
}

typedef struct daemon_args {
    const char *config;
    bool check_only;
} daemon_args_t;

/* Returns -1 to continue, or an exit status. */
static int
parse_args(const tp_daemon_spec_t *spec, int argc, char **argv, daemon_args_t *a)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "check-config", no_argument, NULL, 'C' },
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *env = getenv("TRIPLANE_CONFIG");
    a->config = env != NULL && env[0] != '\0' ? env : DEFAULT_CONFIG_PATH;
    int c;
    while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            a->config = optarg;
            break;
        case 'C':
            a->check_only = true;
            break;
        case 'V':
            printf("%s %s\n", spec->name, TP_VERSION);
            return 0;
        case 'h':
            usage(spec, stdout);
            return 0;
        default:
            usage(spec, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", spec->name, argv[optind]);
        usage(spec, stderr);
        return 2;
    }
    return -1;
}

/* ---- start-up ---- */

static int
open_store(tp_daemon_t *d)
{
    char *err = NULL;
    const tp_store_config_t *sc = &d->cfg.store;
    tp_store_options_t so = { .busy_timeout_ms = sc->busy_timeout_ms, .create = true };
    if (tp_store_open(sc->path, &so, &d->store, &err) != 0)
        goto fail;
    tp_store_writer_options_t wo = {
        .queue_size = (size_t)sc->writer_queue_size,
        .batch_size = (size_t)sc->writer_batch_size,
        .flush_ms = (unsigned)sc->writer_flush_ms,
        .block_ms = (unsigned)sc->writer_block_ms,
        .busy_timeout_ms = sc->busy_timeout_ms,
    };
    if (tp_store_writer_start(sc->path, &wo, d->metrics, &d->writer, &err) != 0)
        goto fail;
    return 0;
fail:
    tp_log_fields(TP_LOG_ERROR, NULL, "store unavailable", json_pack("{s:s}", "error", err));
    free(err);
    return -1;
}

static int
start_server(tp_daemon_t *d)
{
    char *err = NULL;
    d->server = tp_server_new(d->spec->name, &d->cfg, d->plane, d->metrics, &err);
    if (d->server == NULL)
        goto fail;
    tp_server_set_error_fn(d->server, d->spec->error_fn);
    tp_server_add_ready_check(d->server, "config", ready_config, d);
    tp_server_add_ready_check(d->server, "store", ready_store, d);
    tp_server_add_ready_check(d->server, "state", ready_state, d);
    if (tp_control_listen(&d->loop, d->cfg.control.dir, d->spec->name, &d->control, &err) != 0)
        goto fail;
    tp_control_register(d->control, "status", cmd_status, d);
    tp_control_register(d->control, "reload", cmd_reload, d);
    tp_control_register(d->control, "refresh", cmd_refresh, d);
    tp_control_register(d->control, "kill", cmd_kill, d);
    tp_control_register(d->control, "release", cmd_release, d);
    if (d->spec->setup != NULL && d->spec->setup(d, &err) != 0)
        goto fail;
    /* Workers read their own slot without locks; they start with the snapshot loaded above. */
    d->worker_states = tp_calloc(tp_server_worker_count(d->server), sizeof(*d->worker_states));
    for (unsigned i = 0; i < tp_server_worker_count(d->server); i++)
        d->worker_states[i] = d->state;
    if (tp_server_start(d->server, &err) != 0)
        goto fail;
    return 0;
fail:
    tp_log_fields(TP_LOG_ERROR, NULL, "start-up failed", json_pack("{s:s}", "error", err != NULL ? err : "unknown"));
    free(err);
    return -1;
}

static void
log_started(tp_daemon_t *d)
{
    tp_log_fields(TP_LOG_INFO, NULL, "started",
                  json_pack("{s:s, s:i, s:s, s:o, s:s, s:s}", "version", TP_VERSION, "pid", getpid(), "config",
                            d->cfg.path, "listen", tp_server_listen_addresses(d->server), "store", d->cfg.store.path,
                            "control", tp_control_path(d->control)));
}

static void
cleanup(tp_daemon_t *d)
{
    if (d->writer != NULL)
        tp_store_writer_stop(d->writer); /* commits everything accepted */
    if (d->store != NULL)
        tp_store_close(d->store);
    state_ref_release(d->state);
    tp_server_free(d->server);
    free(d->worker_states);
    close_handle((uv_handle_t *)&d->drain_timer);
    close_handle((uv_handle_t *)&d->expiry_timer);
    uv_run(&d->loop, UV_RUN_NOWAIT); /* let closed handles finish */
    if (uv_loop_close(&d->loop) != 0)
        tp_debug("main loop closed with handles still open");
    tp_metrics_free(d->metrics);
    tp_config_free(&d->cfg);
}

int
tp_daemon_main(const tp_daemon_spec_t *spec, int argc, char **argv)
{
    daemon_args_t args = { 0 };
    int rv = parse_args(spec, argc, argv, &args);
    if (rv >= 0)
        return rv;

    static tp_daemon_t daemon; /* one per process; static so handles outlive every callback */
    tp_daemon_t *d = &daemon;
    d->spec = spec;
    char *errors = NULL;
    if (tp_config_load(args.config, &d->cfg, &errors) != 0) {
        fprintf(stderr, "%s", errors != NULL ? errors : "configuration invalid\n");
        free(errors);
        return 2;
    }
    if (args.check_only) {
        printf("ok\n");
        tp_config_free(&d->cfg);
        return 0;
    }
    tp_log_level_t level = TP_LOG_INFO;
    tp_log_level_parse(d->cfg.common.log_level, &level);
    tp_log_init(spec->name, level);
    signal(SIGPIPE, SIG_IGN);

    d->plane = tp_config_plane(&d->cfg, spec->name);
    d->started_at_ms = tp_unix_ms();
    uv_loop_init(&d->loop);
    d->started_mono_ms = uv_now(&d->loop);
    uv_timer_init(&d->loop, &d->drain_timer);
    d->drain_timer.data = d;
    uv_timer_init(&d->loop, &d->expiry_timer);
    d->expiry_timer.data = d;
    d->metrics = tp_metrics_new(tp_server_shards(d->plane));
    register_metrics(d);
    atomic_store(&d->config_ready, true);

    rv = 1;
    if (open_store(d) != 0)
        goto out;
    if (load_state(d, "start") != 0)
        goto out;
    if (start_server(d) != 0)
        goto out;
    if (tp_store_watch_start(d->store, &d->loop, (unsigned)d->cfg.store.watch_interval_ms, on_store_change, d) != 0)
        tp_warn("store watcher did not start; changes by gwctl apply only on reload");
    watch_signal(d, &d->sig_term, SIGTERM);
    watch_signal(d, &d->sig_int, SIGINT);
    watch_signal(d, &d->sig_hup, SIGHUP);
    log_started(d);

    uv_run(&d->loop, UV_RUN_DEFAULT);
    tp_info("stopped");
    rv = 0;
out:
    if (rv != 0 && d->server != NULL) {
        tp_server_stop(d->server);
        if (d->spec->on_stopped != NULL)
            d->spec->on_stopped(d);
    }
    if (rv != 0 && d->control != NULL)
        tp_control_close(d->control);
    cleanup(d);
    return rv;
}

const tp_config_t *
tp_daemon_config(const tp_daemon_t *d)
{
    return &d->cfg;
}

tp_server_t *
tp_daemon_server(tp_daemon_t *d)
{
    return d->server;
}

tp_metrics_t *
tp_daemon_metrics(tp_daemon_t *d)
{
    return d->metrics;
}

tp_store_t *
tp_daemon_store(tp_daemon_t *d)
{
    return d->store;
}

tp_store_writer_t *
tp_daemon_writer(tp_daemon_t *d)
{
    return d->writer;
}

tp_control_server_t *
tp_daemon_control(tp_daemon_t *d)
{
    return d->control;
}

uv_loop_t *
tp_daemon_loop(tp_daemon_t *d)
{
    return &d->loop;
}

int64_t
tp_daemon_started_at_ms(const tp_daemon_t *d)
{
    return d->started_at_ms;
}

const void *
tp_daemon_state(const tp_daemon_t *d)
{
    return d->state != NULL ? d->state->state : NULL;
}

const void *
tp_daemon_request_state(const tp_daemon_t *d, const tp_request_t *r)
{
    return d->worker_states[tp_worker_id(r->worker)]->state;
}

static void
release_held_state(void *p)
{
    state_ref_release(*(state_ref_t **)p);
}

const void *
tp_daemon_request_state_hold(const tp_daemon_t *d, tp_request_t *r)
{
    state_ref_t *ref = d->worker_states[tp_worker_id(r->worker)];
    atomic_fetch_add(&ref->refs, 1);
    state_ref_t **slot = h2o_mem_alloc_shared(&r->req->pool, sizeof(*slot), release_held_state);
    *slot = ref;
    return ref->state;
}
