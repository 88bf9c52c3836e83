/*
 * mcp-gw — the tools and data plane: an MCP gateway that brokers clients' access to the MCP
 * servers the operator configured, with per-identity policy, argument validation that teaches,
 * tool pinning and an audit of every call. See gateway.h for how the modules fit together.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "child.h"
#include "clock.h"
#include "gateway.h"
#include "log.h"
#include "mem.h"
#include "pins.h"
#include "snapshot.h"
#include "store.h"

#define CHILD_STOP_GRACE_MS 2000 /* at exit, a child gets this long after SIGTERM before SIGKILL */

static mcp_gateway_t gateway; /* one per process */
static uv_timer_t boot_timer;

void
mcp_gateway_attach(mcp_gateway_t *gw, tp_worker_t *w)
{
    if (gw->ctx != NULL)
        return;
    gw->ctx = tp_worker_h2o(w);
    gw->loop = tp_worker_loop(w);
    mcp_sessions_start(gw);
    mcp_servers_boot(gw);
}

static void
attach_on_worker(tp_worker_t *w, void *arg)
{
    mcp_gateway_attach(arg, w);
}

/* Runs once the loop turns, after the server started: the worker creates the stdio children
 * that start at boot. */
static void
on_boot(uv_timer_t *t)
{
    mcp_gateway_t *gw = t->data;
    tp_server_each_worker(tp_daemon_server(gw->daemon), attach_on_worker, gw, NULL, NULL, NULL);
    uv_close((uv_handle_t *)t, NULL);
}

/* ---- pins: loaded on the main thread, swapped in on the worker ---- */

/* What the worker learns from a new state snapshot: the pins (loaded on the main thread). */
typedef struct state_news {
    mcp_gateway_t *gw;
    mcp_pins_t *pins;
} state_news_t;

static void
apply_news(tp_worker_t *w, void *arg)
{
    state_news_t *news = arg;
    mcp_gateway_t *gw = news->gw;
    mcp_gateway_attach(gw, w);
    mcp_pins_t *old = gw->pins;
    gw->pins = news->pins;
    mcp_pins_free(old);
    mcp_servers_republish(gw);
    free(news);
}

/* Ends the sessions of principals a kill covers: their requests in flight get an error, their
 * calls are cancelled upstream. */
static void
end_if_killed(mcp_session_t *s, void *arg)
{
    const pol_snapshot_t *snap = arg;
    pol_principal_t p = { .id = s->principal, .team = s->team };
    int64_t now = tp_unix_ms();
    for (size_t i = 0; i < snap->num_kills; i++) {
        if (pol_kill_covers(&snap->kills[i], &p, now)) {
            mcp_session_end(s, "killed");
            return;
        }
    }
}

/* Right after the worker switched to a new snapshot: nothing can pass the old one's checks any
 * more, so this is where a new kill ends the work already under way. */
static void
on_worker_state(tp_daemon_t *d, tp_worker_t *w, const void *state)
{
    const pol_snapshot_t *snap = state;
    if (snap->num_kills == 0)
        return;
    mcp_gateway_attach(&gateway, w);
    mcp_session_each(&gateway, end_if_killed, (void *)snap);
}

static void
on_state(tp_daemon_t *d, const void *state)
{
    mcp_gateway_t *gw = &gateway;
    if (gw->gate == NULL)
        return; /* the first snapshot, before setup: setup loads the pins itself */
    char *err = NULL;
    mcp_pins_t *pins = mcp_pins_load(tp_store_db(tp_daemon_store(d)), &err);
    if (pins == NULL) {
        tp_log_fields(TP_LOG_WARN, NULL, "tool pins not reloaded",
                      json_pack("{s:s}", "error", err != NULL ? err : "?"));
        free(err);
        return;
    }
    state_news_t *news = tp_calloc(1, sizeof(*news));
    news->gw = gw;
    news->pins = pins;
    tp_server_each_worker(tp_daemon_server(d), apply_news, news, NULL, NULL, NULL);
}

/* ---- shutdown ---- */

static void
close_standing(mcp_session_t *s, void *arg)
{
    if (s->standing != NULL)
        mcp_stream_close(s->standing);
}

static void
drain_on_worker(tp_worker_t *w, void *arg)
{
    mcp_gateway_t *gw = arg;
    gw->draining = true;
    if (gw->sessions != NULL)
        mcp_session_each(gw, close_standing, NULL); /* GET streams never end by themselves */
}

static void
on_drain(tp_daemon_t *d)
{
    tp_server_each_worker(tp_daemon_server(d), drain_on_worker, &gateway, NULL, NULL, NULL);
}

/* The worker has stopped: its loop no longer runs, so its children are stopped from here,
 * synchronously: SIGTERM to each child's process group, a grace period, then SIGKILL. */
static void
on_stopped(tp_daemon_t *d)
{
    mcp_gateway_t *gw = &gateway;
    int *pids = tp_calloc(gw->num_servers > 0 ? gw->num_servers : 1, sizeof(int));
    size_t n = 0;
    for (size_t i = 0; i < gw->num_servers; i++) {
        int pid = mcp_servers_child_pid(gw, i);
        if (pid > 0) {
            kill(-pid, SIGTERM);
            pids[n++] = pid;
        }
    }
    for (int waited = 0; n > 0 && waited < CHILD_STOP_GRACE_MS; waited += 10) {
        size_t alive = 0;
        for (size_t i = 0; i < n; i++) {
            if (pids[i] > 0 && waitpid(pids[i], NULL, WNOHANG) == 0)
                alive++;
            else
                pids[i] = 0;
        }
        if (alive == 0)
            break;
        nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        if (pids[i] > 0) {
            tp_warn("stdio server (pid %d) ignored SIGTERM; killing it", pids[i]);
            kill(-pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
        }
    }
    free(pids);
}

/* ---- readiness ---- */

static int
setup(tp_daemon_t *d, char **err)
{
    mcp_gateway_t *gw = &gateway;
    gw->daemon = d;
    gw->cfg = &tp_daemon_config(d)->mcp_gw;
    gw->writer = tp_daemon_writer(d);
    gw->pin_overlay = json_object();
    mcp_metrics_init(gw);
    gw->pins = mcp_pins_load(tp_store_db(tp_daemon_store(d)), err);
    if (gw->pins == NULL)
        return -1;
    if (mcp_servers_create(gw, err) != 0)
        return -1;
    gw->gate = pol_gate_new(d, "mcp", err);
    if (gw->gate == NULL)
        return -1;
    mcp_endpoint_register(gw);
    uv_timer_init(tp_daemon_loop(d), &boot_timer);
    boot_timer.data = gw;
    uv_timer_start(&boot_timer, on_boot, 0, 0);
    return 0;
}

static const tp_daemon_spec_t mcp_gw = {
    .name = "mcp-gw",
    .summary = "Triplane MCP gateway: per-identity policy in front of every MCP server.",
    .state_ops = &pol_snapshot_state_ops,
    .error_fn = mcp_error_envelope,
    .setup = setup,
    .on_state = on_state,
    .on_worker_state = on_worker_state,
    .on_drain = on_drain,
    .on_stopped = on_stopped,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&mcp_gw, argc, argv);
}
