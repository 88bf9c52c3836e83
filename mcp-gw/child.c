/*
 * child.c — a supervised MCP server process on a libuv loop (see child.h for the contract).
 *
 * Life of a child: spawn() starts it (or fails and says why); from then on it is "active" until
 * child_done(), which runs once the leader has been reaped, stdout and stderr have reached EOF (or
 * were given up on), no process of its group is still running, and its handles are closed. Only
 * then is EXITED reported and a restart scheduled, so every line a child wrote arrives before its
 * EXITED, and a new child's handles never meet an old one's. child_check() is the one place that
 * decides whether the child is over; every event that can change the answer calls it.
 *
 * Teardown: after the leader exits (or a stop has closed stdin and waited stop_grace_ms), the
 * group gets SIGTERM, then SIGKILL after another stop_grace_ms, and after one more the pipes are
 * given up on (a process outside the group may hold them). `timer` paces these steps while a
 * child is active, and is the restart timer while none is; `kick` re-runs child_check soon after
 * a failed spawn and every GROUP_POLL_MS while the group outlives its leader.
 */
#include "child.h"

#include "clock.h"
#include "log.h"
#include "mem.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define READ_BUF_SIZE   (64 * 1024)
#define GROUP_POLL_MS   20                             /* how often a lingering process group is looked at */
#define LINE_KEEP_BYTES (64 * 1024)                    /* a larger stdout line buffer is freed after use */
#define FALLBACK_PATH   "/usr/local/bin:/usr/bin:/bin" /* when neither env nor the gateway has PATH */
#define NS_PER_MS       1000000u

typedef enum teardown_stage {
    STAGE_NONE,      /* nothing sent yet (during a stop: stdin is closed) */
    STAGE_TERM,      /* SIGTERM sent to the group */
    STAGE_KILL,      /* SIGKILL sent to the group */
    STAGE_ABANDONED, /* the pipes and the group are no longer waited for */
} teardown_stage_t;

/* The current child, from a spawn attempt until it is over. Handles' data point to the owner. */
typedef struct child {
    bool active;  /* a spawn was attempted and the child is not over */
    bool spawned; /* uv_spawn succeeded: pid and its process group are real */
    bool exited;  /* the leader has been reaped (by libuv, or by mcp_stdio_kill_now) */
    bool over;    /* child_close has begun closing the handles */
    bool in_open, out_open, err_open, proc_open;
    unsigned open_handles; /* initialised handles whose close callback has not run */
    teardown_stage_t stage;
    int pid;
    uint64_t started_ns, exited_ns;
    char *why; /* how it ended, once known */
    uv_process_t proc;
    uv_pipe_t in, out, err;
    char *line; /* the stdout line received so far */
    size_t line_len, line_cap;
    bool discarding; /* the current stdout line is too long: drop bytes up to the next newline */
    char err_line[MCP_STDIO_STDERR_LINE_MAX];
    size_t err_len;
    bool err_truncated;
} child_t;

struct mcp_stdio {
    uv_loop_t *loop;
    char *name;
    char *command;
    char *cwd;
    char **argv;          /* command, args…, NULL */
    char **envp;          /* env…, NULL */
    const char *env_path; /* the value of PATH in envp (points into it), or NULL */
    uint64_t restart_min_ms, restart_max_ms, stable_ms, stop_grace_ms;
    size_t max_message, max_queue;
    mcp_stdio_callbacks_t cb;
    void *data;

    mcp_stdio_state_t state;
    bool stopping;
    bool timers_inited;
    unsigned open_timers;
    uv_timer_t timer; /* restart backoff while no child is active; teardown steps while one is */
    uv_timer_t kick;  /* re-runs child_check */
    uint64_t backoff_ms;
    bool restart_now; /* mcp_stdio_start came while the old child was ending */
    uint64_t generation;
    unsigned restarts;
    char *stop_why; /* for on_state(STOPPED) */
    child_t child;
    char rbuf[READ_BUF_SIZE]; /* for every read: libuv reads one stream at a time */
};

typedef struct stdin_write {
    uv_write_t req;
    char data[]; /* the message and its '\n' */
} stdin_write_t;

static void child_check(mcp_stdio_t *p);
static int spawn(mcp_stdio_t *p);

/* ---- logging ---- */

/* Logs msg with {"server": name, …fields}. Takes ownership of fields (an object or NULL). */
static void
log_event(const mcp_stdio_t *p, tp_log_level_t level, const char *msg, json_t *fields)
{
    if (!tp_log_enabled(level)) {
        json_decref(fields);
        return;
    }
    json_t *all = json_pack("{s:s}", "server", p->name);
    if (fields != NULL) {
        json_object_update(all, fields); /* borrows fields' values */
        json_decref(fields);
    }
    tp_log_fields(level, NULL, msg, all);
}

static void
log_stderr_line(const mcp_stdio_t *p, const char *s, size_t n, bool truncated)
{
    if (n > 0 && s[n - 1] == '\r')
        n--;
    if ((n == 0 && !truncated) || !tp_log_enabled(TP_LOG_INFO))
        return;
    json_t *f = json_pack("{s:s, s:i, s:o}", "server", p->name, "pid", p->child.pid, "stderr", tp_log_string(s, n));
    if (truncated)
        json_object_set_new(f, "truncated", json_true());
    tp_log_fields(TP_LOG_INFO, NULL, "server stderr", f);
}

static void
report_error(mcp_stdio_t *p, const char *what)
{
    log_event(p, TP_LOG_WARN, "mcp server error", json_pack("{s:s}", "error", what));
    if (p->cb.on_error != NULL)
        p->cb.on_error(p, p->data, what);
}

/* ---- creating and freeing ---- */

static char **
copy_strings(const char *first, const char *const *v, size_t n)
{
    size_t off = first != NULL ? 1 : 0;
    char **out = tp_calloc(n + off + 1, sizeof(*out));
    if (first != NULL)
        out[0] = tp_strdup(first);
    for (size_t i = 0; i < n; i++)
        out[off + i] = tp_strdup(v[i]);
    return out;
}

static void
free_strings(char **v)
{
    if (v == NULL)
        return;
    for (char **s = v; *s != NULL; s++)
        free(*s);
    free(v);
}

static int
check_options(const mcp_stdio_options_t *opts, const mcp_stdio_callbacks_t *cb, char **err)
{
    if (opts->name == NULL || opts->name[0] == '\0') {
        *err = tp_strdup("mcp stdio server: no name");
        return -EINVAL;
    }
    if (opts->command == NULL || opts->command[0] == '\0') {
        *err = tp_sprintf("mcp server %s: no command", opts->name);
        return -EINVAL;
    }
    if (cb == NULL || cb->on_message == NULL) {
        *err = tp_sprintf("mcp server %s: no on_message callback", opts->name);
        return -EINVAL;
    }
    for (size_t i = 0; i < opts->num_args; i++) {
        if (opts->args[i] == NULL) {
            *err = tp_sprintf("mcp server %s: argument %zu is NULL", opts->name, i + 1);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < opts->num_env; i++) {
        const char *e = opts->env[i];
        if (e == NULL || e[0] == '=' || strchr(e, '=') == NULL) {
            *err = tp_sprintf("mcp server %s: environment entry %zu is not NAME=VALUE", opts->name, i + 1);
            return -EINVAL;
        }
    }
    return 0;
}

mcp_stdio_t *
mcp_stdio_new(uv_loop_t *loop, const mcp_stdio_options_t *opts, const mcp_stdio_callbacks_t *cb, void *data, char **err)
{
    *err = NULL;
    if (check_options(opts, cb, err) != 0)
        return NULL;
    mcp_stdio_t *p = tp_calloc(1, sizeof(*p));
    p->loop = loop;
    p->name = tp_strdup(opts->name);
    p->command = tp_strdup(opts->command);
    p->cwd = opts->cwd != NULL ? tp_strdup(opts->cwd) : NULL;
    p->argv = copy_strings(opts->command, opts->args, opts->num_args);
    p->envp = copy_strings(NULL, opts->env, opts->num_env);
    for (char **e = p->envp; *e != NULL; e++) {
        if (strncmp(*e, "PATH=", 5) == 0) {
            p->env_path = *e + 5; /* the first one, as getenv finds it */
            break;
        }
    }
    p->restart_min_ms = opts->restart_min_ms != 0 ? opts->restart_min_ms : MCP_STDIO_DEFAULT_RESTART_MIN_MS;
    p->restart_max_ms = opts->restart_max_ms != 0 ? opts->restart_max_ms : MCP_STDIO_DEFAULT_RESTART_MAX_MS;
    if (p->restart_max_ms < p->restart_min_ms)
        p->restart_max_ms = p->restart_min_ms;
    p->stable_ms = opts->stable_ms != 0 ? opts->stable_ms : MCP_STDIO_DEFAULT_STABLE_MS;
    p->stop_grace_ms = opts->stop_grace_ms != 0 ? opts->stop_grace_ms : MCP_STDIO_DEFAULT_STOP_GRACE_MS;
    p->max_message = opts->max_message_bytes != 0 ? opts->max_message_bytes : MCP_STDIO_DEFAULT_MAX_MESSAGE;
    p->max_queue = opts->max_queue_bytes != 0 ? opts->max_queue_bytes : MCP_STDIO_DEFAULT_MAX_QUEUE;
    p->cb = *cb;
    p->data = data;
    p->backoff_ms = p->restart_min_ms;
    p->state = MCP_STDIO_IDLE;
    return p;
}

void
mcp_stdio_free(mcp_stdio_t *p)
{
    if (p == NULL)
        return;
    /* never started, or stopped with every handle closed */
    assert(!p->timers_inited || (p->state == MCP_STDIO_STOPPED && p->open_timers == 0));
    assert(!p->child.active);
    free(p->child.line);
    free(p->child.why);
    free(p->stop_why);
    free_strings(p->argv);
    free_strings(p->envp);
    free(p->cwd);
    free(p->command);
    free(p->name);
    free(p);
}

static void
init_timers(mcp_stdio_t *p)
{
    if (p->timers_inited)
        return;
    uv_timer_init(p->loop, &p->timer); /* cannot fail */
    uv_timer_init(p->loop, &p->kick);
    p->timer.data = p->kick.data = p;
    p->open_timers = 2;
    p->timers_inited = true;
}

/* ---- the process group ---- */

/* True when some process of group `pgid` is still running. Zombies do not count: they have ended
 * and only wait for their parent (init, for orphans) to reap them, which may take a while. */
static bool
group_running(int pgid)
{
    if (kill(-pgid, 0) != 0)
        return errno != ESRCH; /* EPERM: there is one we may not signal */
    DIR *d = opendir("/proc");
    if (d == NULL)
        return true; /* kill says the group has members, zombies or not */
    bool running = false;
    struct dirent *de;
    while (!running && (de = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (pid <= 0 || *end != '\0')
            continue; /* not a process */
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* gone meanwhile */
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        /* "pid (comm) state ppid pgrp …"; comm may hold any character, ')' included */
        const char *rp = strrchr(buf, ')');
        char state;
        int ppid, pgrp;
        if (rp == NULL || sscanf(rp + 1, " %c %d %d", &state, &ppid, &pgrp) != 3)
            continue;
        if (pgrp == pgid && state != 'Z' && state != 'X')
            running = true;
    }
    closedir(d);
    return running;
}

/* Sends sig to the child's process group, if any process of it still runs. */
static void
signal_group(mcp_stdio_t *p, int sig)
{
    child_t *c = &p->child;
    if (!c->spawned || (c->exited && !group_running(c->pid)))
        return;
    if (kill(-c->pid, sig) != 0) {
        if (errno != ESRCH)
            log_event(p, TP_LOG_WARN, "mcp server: cannot signal its process group",
                      json_pack("{s:i, s:i, s:s}", "pgid", c->pid, "signal", sig, "error", strerror(errno)));
        return;
    }
    log_event(p, TP_LOG_INFO, "mcp server process group signalled",
              json_pack("{s:i, s:s}", "pgid", c->pid, "signal", sig == SIGKILL ? "SIGKILL" : "SIGTERM"));
}

/* ---- resolving the command ---- */

/* The child's working directory as an absolute path (malloc'd), or NULL and *err. */
static char *
child_dir(const mcp_stdio_t *p, char **err)
{
    if (p->cwd != NULL && p->cwd[0] == '/')
        return tp_strdup(p->cwd);
    char *here = getcwd(NULL, 0);
    if (here == NULL) {
        *err = tp_sprintf("spawn %s: getcwd: %s", p->command, strerror(errno));
        return NULL;
    }
    if (p->cwd == NULL)
        return here;
    char *dir = tp_sprintf("%s/%s", here, p->cwd);
    free(here);
    return dir;
}

/* 0 when path is a file this process may execute, or a negative errno as execve would give. */
static int
check_executable(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -errno;
    if (S_ISDIR(st.st_mode))
        return -EACCES;
    if (access(path, X_OK) != 0)
        return -errno;
    return 0;
}

/* `name` under `dir`; a relative dir starts from the child's working directory. NULL and *err
 * when that cannot be known. */
static char *
path_join(const mcp_stdio_t *p, const char *dir, size_t dir_len, const char *name, char **err)
{
    if (dir_len > 0 && dir[0] == '/')
        return tp_sprintf("%.*s/%s", (int)dir_len, dir, name);
    char *base = child_dir(p, err);
    if (base == NULL)
        return NULL;
    while (name[0] == '.' && name[1] == '/')
        name += 2; /* "./server" in /srv is /srv/server */
    char *path = dir_len > 0 ? tp_sprintf("%s/%.*s/%s", base, (int)dir_len, dir, name)
                             : tp_sprintf("%s/%s", base, name); /* an empty PATH entry means "." */
    free(base);
    return path;
}

/* Finds the program to run, as execvp would in the child, and returns its absolute path
 * (malloc'd), or NULL with *rv and *err. */
static char *
resolve_command(const mcp_stdio_t *p, int *rv, char **err)
{
    *err = NULL;
    if (p->cwd != NULL) {
        struct stat st;
        *rv = stat(p->cwd, &st) != 0 ? -errno : !S_ISDIR(st.st_mode) ? -ENOTDIR : 0;
        if (*rv != 0) {
            *err = tp_sprintf("spawn %s: working directory %s: %s", p->command, p->cwd, strerror(-*rv));
            return NULL;
        }
    }
    const char *cmd = p->command;
    if (strchr(cmd, '/') != NULL) {
        char *path = cmd[0] == '/' ? tp_strdup(cmd) : path_join(p, "", 0, cmd, err);
        if (path == NULL) {
            *rv = -ENOENT;
            return NULL;
        }
        *rv = check_executable(path);
        if (*rv == 0)
            return path;
        *err = tp_sprintf("spawn %s: %s", cmd, strerror(-*rv));
        free(path);
        return NULL;
    }
    const char *search = p->env_path != NULL ? p->env_path : getenv("PATH");
    if (search == NULL)
        search = FALLBACK_PATH;
    bool denied = false;
    for (const char *s = search;;) {
        const char *colon = strchr(s, ':');
        size_t n = colon != NULL ? (size_t)(colon - s) : strlen(s);
        char *path = path_join(p, s, n, cmd, err);
        if (path == NULL) {
            *rv = -ENOENT;
            return NULL;
        }
        int r = check_executable(path);
        if (r == 0) {
            *rv = 0;
            return path;
        }
        free(path);
        denied = denied || r == -EACCES;
        if (colon == NULL)
            break;
        s = colon + 1;
    }
    *rv = denied ? -EACCES : -ENOENT;
    *err = denied ? tp_sprintf("spawn %s: found in PATH (%s) but not executable", cmd, search)
                  : tp_sprintf("spawn %s: not found in PATH (%s)", cmd, search);
    return NULL;
}

/* ---- ending a child ---- */

static void
on_timer_closed(uv_handle_t *handle)
{
    mcp_stdio_t *p = handle->data;
    assert(p->open_timers > 0);
    if (--p->open_timers > 0)
        return;
    p->state = MCP_STDIO_STOPPED;
    char *why = p->stop_why;
    p->stop_why = NULL;
    log_event(p, TP_LOG_INFO, "mcp server stopped", json_pack("{s:s}", "why", why));
    if (p->cb.on_state != NULL)
        p->cb.on_state(p, p->data, MCP_STDIO_STOPPED, why); /* may free p */
    free(why);
}

/* The end of a stop: closes the timers; the last close callback reports STOPPED. */
static void
stop_finish(mcp_stdio_t *p, const char *why)
{
    p->stop_why = tp_strdup(why);
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
    uv_close((uv_handle_t *)&p->kick, on_timer_closed);
}

static void on_restart_timer(uv_timer_t *timer);

/* The child is over and its handles are closed: report it, then restart or finish a stop. */
static void
child_done(mcp_stdio_t *p)
{
    child_t *c = &p->child;
    char *why = c->why != NULL ? c->why : tp_strdup("ended"); /* (every path sets why) */
    uint64_t ran_ms = c->spawned ? (c->exited_ns - c->started_ns) / NS_PER_MS : 0;
    free(c->line);
    memset(c, 0, sizeof(*c));
    uv_timer_stop(&p->timer);
    uv_timer_stop(&p->kick);
    if (p->stopping) {
        stop_finish(p, why);
        free(why);
        return;
    }
    if (ran_ms >= p->stable_ms)
        p->backoff_ms = p->restart_min_ms;
    uint64_t delay = p->restart_now ? 0 : p->backoff_ms;
    p->restart_now = false;
    p->backoff_ms = p->backoff_ms > p->restart_max_ms / 2 ? p->restart_max_ms : p->backoff_ms * 2;
    /* From now, not from the start of this loop turn (libuv's cached time): a busy turn must not
     * shorten the backoff. */
    uv_update_time(p->timer.loop);
    uv_timer_start(&p->timer, on_restart_timer, delay, 0);
    log_event(
        p, TP_LOG_INFO, "mcp server restart scheduled",
        json_pack("{s:s, s:I, s:I}", "why", why, "ran_ms", (json_int_t)ran_ms, "restart_in_ms", (json_int_t)delay));
    p->state = MCP_STDIO_EXITED;
    if (p->cb.on_state != NULL)
        p->cb.on_state(p, p->data, MCP_STDIO_EXITED, why);
    free(why);
}

static void
on_child_closed(uv_handle_t *handle)
{
    mcp_stdio_t *p = handle->data;
    child_t *c = &p->child;
    assert(c->open_handles > 0);
    if (--c->open_handles == 0 && c->over)
        child_done(p);
}

static void
close_pipe(uv_pipe_t *pipe, bool *open)
{
    if (!*open)
        return;
    *open = false;
    uv_close((uv_handle_t *)pipe, on_child_closed); /* pending writes end with UV_ECANCELED */
}

static void
flush_stderr(mcp_stdio_t *p)
{
    child_t *c = &p->child;
    if (c->err_len > 0 || c->err_truncated)
        log_stderr_line(p, c->err_line, c->err_len, c->err_truncated);
    c->err_len = 0;
    c->err_truncated = false;
}

/* Closes every handle of the child; child_done follows from the last close callback. */
static void
child_close(mcp_stdio_t *p)
{
    child_t *c = &p->child;
    c->over = true;
    uv_timer_stop(&p->kick);
    flush_stderr(p);
    close_pipe(&c->in, &c->in_open);
    close_pipe(&c->out, &c->out_open);
    close_pipe(&c->err, &c->err_open);
    if (c->proc_open) {
        c->proc_open = false;
        uv_close((uv_handle_t *)&c->proc, on_child_closed);
    }
    if (c->open_handles == 0)
        child_done(p);
}

static void
on_kick(uv_timer_t *timer)
{
    child_check(timer->data);
}

/* Decides whether the child is over, and if so closes it. */
static void
child_check(mcp_stdio_t *p)
{
    child_t *c = &p->child;
    if (!c->active || c->over || !c->exited)
        return;
    if (c->stage < STAGE_ABANDONED) {
        if (c->out_open || c->err_open)
            return; /* EOF, or the teardown timer, will call again */
        if (c->spawned && group_running(c->pid)) {
            uv_timer_start(&p->kick, on_kick, GROUP_POLL_MS, 0);
            return;
        }
    }
    child_close(p);
}

/* The next step of a teardown, stop_grace_ms after the previous one. */
static void
on_teardown_timer(uv_timer_t *timer)
{
    mcp_stdio_t *p = timer->data;
    child_t *c = &p->child;
    switch (c->stage) {
    case STAGE_NONE:
        signal_group(p, SIGTERM);
        c->stage = STAGE_TERM;
        uv_timer_start(&p->timer, on_teardown_timer, p->stop_grace_ms, 0);
        break;
    case STAGE_TERM:
        signal_group(p, SIGKILL);
        c->stage = STAGE_KILL;
        uv_timer_start(&p->timer, on_teardown_timer, p->stop_grace_ms, 0);
        break;
    case STAGE_KILL:
        c->stage = STAGE_ABANDONED;
        if (c->out_open || c->err_open || !c->exited)
            log_event(p, TP_LOG_WARN, "mcp server still not over after SIGKILL; giving up on its pipes",
                      json_pack("{s:i, s:b, s:b}", "pid", c->pid, "exited", c->exited, "pipes_open",
                                c->out_open || c->err_open));
        close_pipe(&c->out, &c->out_open);
        close_pipe(&c->err, &c->err_open);
        break;
    case STAGE_ABANDONED:
        break; /* only the leader's exit is awaited now */
    }
    child_check(p);
}

static void
on_child_exit(uv_process_t *proc, int64_t status, int term_signal)
{
    mcp_stdio_t *p = proc->data;
    child_t *c = &p->child;
    c->exited = true;
    c->exited_ns = tp_mono_ns();
    free(c->why);
    c->why = term_signal != 0 ? tp_sprintf("killed by signal %d", term_signal)
                              : tp_sprintf("exited with status %lld", (long long)status);
    log_event(p, p->stopping ? TP_LOG_INFO : TP_LOG_WARN, "mcp server exited",
              json_pack("{s:i, s:s, s:I}", "pid", c->pid, "why", c->why, "ran_ms",
                        (json_int_t)((c->exited_ns - c->started_ns) / NS_PER_MS)));
    close_pipe(&c->in, &c->in_open);
    if (c->stage < STAGE_TERM) {
        /* what is left of the group are helpers of a server that has ended */
        signal_group(p, SIGTERM);
        c->stage = STAGE_TERM;
        uv_timer_start(&p->timer, on_teardown_timer, p->stop_grace_ms, 0);
    }
    child_check(p);
}

/* ---- reading stdout and stderr ---- */

static void
on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    mcp_stdio_t *p = handle->data;
    *buf = uv_buf_init(p->rbuf, sizeof(p->rbuf));
}

static void
deliver(mcp_stdio_t *p, const char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > 0)
        p->cb.on_message(p, p->data, line, len);
}

static void
line_append(child_t *c, const char *data, size_t len)
{
    if (c->line_len + len > c->line_cap) {
        size_t cap = c->line_cap != 0 ? c->line_cap : 4096;
        while (cap < c->line_len + len)
            cap *= 2;
        c->line = tp_realloc(c->line, cap);
        c->line_cap = cap;
    }
    memcpy(c->line + c->line_len, data, len);
    c->line_len += len;
}

static void
line_reset(child_t *c)
{
    c->line_len = 0;
    if (c->line_cap > LINE_KEEP_BYTES) {
        free(c->line);
        c->line = NULL;
        c->line_cap = 0;
    }
}

/* Splits stdout bytes into messages. on_message may call anything but mcp_stdio_free, none of
 * which touches the line buffer. */
static void
stdout_consume(mcp_stdio_t *p, const char *data, size_t len)
{
    child_t *c = &p->child;
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t chunk = nl != NULL ? (size_t)(nl - data) : len;
        size_t used = nl != NULL ? chunk + 1 : len;
        if (c->discarding) {
            c->discarding = nl == NULL;
        } else if (c->line_len + chunk > p->max_message) {
            line_reset(c);
            c->discarding = nl == NULL;
            char *what = tp_sprintf("stdout line longer than %zu bytes dropped", p->max_message);
            report_error(p, what);
            free(what);
        } else if (nl == NULL) {
            line_append(c, data, chunk);
        } else if (c->line_len == 0) {
            deliver(p, data, chunk); /* straight from the read buffer */
        } else {
            line_append(c, data, chunk);
            size_t line_len = c->line_len;
            c->line_len = 0;
            deliver(p, c->line, line_len);
            line_reset(c);
        }
        data += used;
        len -= used;
    }
}

static void
on_stdout(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    mcp_stdio_t *p = stream->data;
    child_t *c = &p->child;
    if (nread > 0)
        stdout_consume(p, buf->base, (size_t)nread);
    if (nread >= 0)
        return;
    if (nread != UV_EOF)
        log_event(p, TP_LOG_WARN, "mcp server stdout", json_pack("{s:s}", "error", uv_strerror((int)nread)));
    else if (c->line_len > 0 && !c->discarding)
        deliver(p, c->line, c->line_len); /* a last line without its newline */
    c->line_len = 0;
    close_pipe(&c->out, &c->out_open);
    child_check(p);
}

/* Splits stderr bytes into log lines of at most MCP_STDIO_STDERR_LINE_MAX bytes. */
static void
stderr_consume(mcp_stdio_t *p, const char *data, size_t len)
{
    child_t *c = &p->child;
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t chunk = nl != NULL ? (size_t)(nl - data) : len;
        size_t room = sizeof(c->err_line) - c->err_len;
        size_t take = chunk < room ? chunk : room;
        memcpy(c->err_line + c->err_len, data, take);
        c->err_len += take;
        c->err_truncated = c->err_truncated || take < chunk;
        if (nl == NULL)
            return;
        flush_stderr(p);
        data += chunk + 1;
        len -= chunk + 1;
    }
}

static void
on_stderr(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    mcp_stdio_t *p = stream->data;
    child_t *c = &p->child;
    if (nread > 0)
        stderr_consume(p, buf->base, (size_t)nread);
    if (nread >= 0)
        return;
    if (nread != UV_EOF)
        log_event(p, TP_LOG_WARN, "mcp server stderr", json_pack("{s:s}", "error", uv_strerror((int)nread)));
    flush_stderr(p);
    close_pipe(&c->err, &c->err_open);
    child_check(p);
}

/* ---- starting a child ---- */

static void
on_restart_timer(uv_timer_t *timer)
{
    mcp_stdio_t *p = timer->data;
    p->restarts++;
    spawn(p);
}

/* The spawn failed with rv and `why` (ownership taken): the child is over at once, but EXITED is
 * reported from the loop, never from inside mcp_stdio_start. */
static int
spawn_failed(mcp_stdio_t *p, int rv, char *why)
{
    child_t *c = &p->child;
    c->exited = true;
    c->stage = STAGE_ABANDONED; /* nothing to wait for; the pipes, if any, are closed as they are */
    c->why = why;
    log_event(p, TP_LOG_ERROR, "mcp server spawn failed", json_pack("{s:s}", "error", why));
    uv_timer_start(&p->kick, on_kick, 0, 0);
    return rv;
}

static int
init_pipe(mcp_stdio_t *p, uv_pipe_t *pipe, bool *open)
{
    int rv = uv_pipe_init(p->loop, pipe, 0);
    if (rv != 0)
        return rv;
    pipe->data = p;
    *open = true;
    p->child.open_handles++;
    return 0;
}

static int
start_reading(mcp_stdio_t *p, uv_pipe_t *pipe, bool *open, uv_read_cb cb)
{
    int rv = uv_read_start((uv_stream_t *)pipe, on_alloc, cb);
    if (rv != 0) {
        log_event(p, TP_LOG_ERROR, "mcp server: cannot read a pipe", json_pack("{s:s}", "error", uv_strerror(rv)));
        close_pipe(pipe, open); /* the teardown will not wait for it */
    }
    return rv;
}

static int
spawn(mcp_stdio_t *p)
{
    child_t *c = &p->child;
    assert(!c->active);
    memset(c, 0, sizeof(*c));
    c->active = true;
    int rv;
    char *err;
    char *file = resolve_command(p, &rv, &err);
    if (file == NULL)
        return spawn_failed(p, rv, err);
    if ((rv = init_pipe(p, &c->in, &c->in_open)) != 0 || (rv = init_pipe(p, &c->out, &c->out_open)) != 0 ||
        (rv = init_pipe(p, &c->err, &c->err_open)) != 0) {
        free(file);
        return spawn_failed(p, rv, tp_sprintf("spawn %s: uv_pipe_init: %s", p->command, uv_strerror(rv)));
    }
    uv_stdio_container_t stdio[3] = {
        { .flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&c->in },
        { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->out },
        { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->err },
    };
    uv_process_options_t options = {
        .exit_cb = on_child_exit,
        .file = file,
        .args = p->argv,
        .env = p->envp, /* never NULL, which would mean "inherit" */
        .cwd = p->cwd,
        .flags = UV_PROCESS_DETACHED, /* setsid: the child leads a new process group */
        .stdio_count = 3,
        .stdio = stdio,
    };
    rv = uv_spawn(p->loop, &c->proc, &options);
    c->proc.data = p;
    c->proc_open = true; /* uv_spawn initialises the handle even when it fails */
    c->open_handles++;
    if (rv != 0) {
        char *why = tp_sprintf("spawn %s: %s", file, strerror(-rv));
        free(file);
        return spawn_failed(p, rv, why);
    }
    c->spawned = true;
    c->pid = c->proc.pid;
    c->started_ns = tp_mono_ns();
    p->generation++;
    log_event(p, TP_LOG_INFO, "mcp server started",
              json_pack("{s:i, s:s, s:I}", "pid", c->pid, "command", file, "generation", (json_int_t)p->generation));
    free(file);
    start_reading(p, &c->out, &c->out_open, on_stdout);
    start_reading(p, &c->err, &c->err_open, on_stderr);
    p->state = MCP_STDIO_RUNNING;
    if (p->cb.on_state != NULL) {
        char why[48];
        snprintf(why, sizeof(why), "started as pid %d", c->pid);
        p->cb.on_state(p, p->data, MCP_STDIO_RUNNING, why);
    }
    return 0;
}

int
mcp_stdio_start(mcp_stdio_t *p)
{
    if (p->stopping)
        return -ECANCELED;
    init_timers(p);
    if (p->child.active) {
        if (p->child.exited)
            p->restart_now = true; /* the old child is ending: no backoff after it */
        return 0;
    }
    uv_timer_stop(&p->timer); /* a scheduled restart */
    return spawn(p);
}

/* ---- writing stdin ---- */

static void
on_written(uv_write_t *req, int status)
{
    mcp_stdio_t *p = req->handle->data;
    free(req); /* req is the first member of the stdin_write_t */
    if (status == 0 || status == UV_ECANCELED)
        return;
    child_t *c = &p->child;
    if (!c->in_open)
        return;
    log_event(p, TP_LOG_WARN, "mcp server stdin: write failed; no more messages to this child",
              json_pack("{s:i, s:s}", "pid", c->pid, "error", uv_strerror(status)));
    close_pipe(&c->in, &c->in_open);
}

int
mcp_stdio_send(mcp_stdio_t *p, const char *json, size_t len)
{
    if (len == 0 || len >= UINT_MAX || memchr(json, '\n', len) != NULL)
        return -EINVAL; /* (a uv_buf_t holds at most UINT_MAX bytes) */
    if (!mcp_stdio_running(p))
        return -EPIPE;
    uv_stream_t *in = (uv_stream_t *)&p->child.in;
    size_t queued = uv_stream_get_write_queue_size(in);
    if (queued > 0 && (queued >= p->max_queue || len + 1 > p->max_queue - queued))
        return -ENOBUFS;
    stdin_write_t *w = tp_malloc(sizeof(*w) + len + 1);
    memcpy(w->data, json, len);
    w->data[len] = '\n';
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)(len + 1));
    int rv = uv_write(&w->req, in, &buf, 1, on_written);
    if (rv != 0) {
        free(w);
        return rv;
    }
    return 0;
}

/* ---- stopping ---- */

/* Waits for the leader, which has been sent SIGKILL, behind libuv's back, and closes the process
 * handle so that libuv stops waiting for a pid that may be reused. */
static void
reap_now(mcp_stdio_t *p)
{
    child_t *c = &p->child;
    int status, rv;
    do
        rv = waitpid(c->pid, &status, 0);
    while (rv < 0 && errno == EINTR);
    c->exited = true;
    c->exited_ns = tp_mono_ns();
    c->stage = STAGE_KILL;
    free(c->why);
    if (rv < 0)
        c->why = tp_sprintf("killed; waitpid: %s", strerror(errno));
    else if (WIFSIGNALED(status))
        c->why = tp_sprintf("killed by signal %d", WTERMSIG(status));
    else
        c->why = tp_sprintf("exited with status %d", WEXITSTATUS(status));
    log_event(p, TP_LOG_INFO, "mcp server killed", json_pack("{s:i, s:s}", "pid", c->pid, "why", c->why));
    c->proc_open = false;
    uv_close((uv_handle_t *)&c->proc, on_child_closed);
}

void
mcp_stdio_stop(mcp_stdio_t *p)
{
    if (p->stopping)
        return;
    p->stopping = true;
    p->state = MCP_STDIO_STOPPING;
    init_timers(p);
    child_t *c = &p->child;
    if (!c->active) {
        uv_timer_stop(&p->timer); /* a scheduled restart */
        stop_finish(p, "stopped");
        return;
    }
    log_event(p, TP_LOG_INFO, "mcp server stopping", json_pack("{s:i}", "pid", c->pid));
    close_pipe(&c->in, &c->in_open); /* EOF: an MCP server exits on it */
    if (!c->exited) {
        uv_timer_start(&p->timer, on_teardown_timer, p->stop_grace_ms, 0);
        return;
    }
    /* the leader is gone: its teardown is under way, unless mcp_stdio_kill_now reaped it */
    if (!uv_is_active((uv_handle_t *)&p->timer) && c->stage < STAGE_ABANDONED)
        uv_timer_start(&p->timer, on_teardown_timer, p->stop_grace_ms, 0);
    uv_timer_start(&p->kick, on_kick, 0, 0);
}

void
mcp_stdio_kill_now(mcp_stdio_t *p)
{
    if (!p->timers_inited)
        return; /* never started */
    child_t *c = &p->child;
    if (c->active && c->spawned && !c->over) {
        if (kill(-c->pid, SIGKILL) != 0 && errno != ESRCH)
            log_event(p, TP_LOG_WARN, "mcp server: cannot kill its process group",
                      json_pack("{s:i, s:s}", "pgid", c->pid, "error", strerror(errno)));
        if (!c->exited)
            reap_now(p);
    }
    mcp_stdio_stop(p); /* no callback runs until the loop does */
    if (c->active)
        uv_timer_start(&p->kick, on_kick, 0, 0); /* also when a stop was under way already */
}

/* ---- queries ---- */

bool
mcp_stdio_running(const mcp_stdio_t *p)
{
    const child_t *c = &p->child;
    return c->active && c->spawned && !c->exited && c->in_open && !p->stopping;
}

mcp_stdio_state_t
mcp_stdio_state(const mcp_stdio_t *p)
{
    return p->state;
}

const char *
mcp_stdio_state_name(mcp_stdio_state_t state)
{
    switch (state) {
    case MCP_STDIO_IDLE:
        return "idle";
    case MCP_STDIO_RUNNING:
        return "running";
    case MCP_STDIO_EXITED:
        return "exited";
    case MCP_STDIO_STOPPING:
        return "stopping";
    case MCP_STDIO_STOPPED:
        return "stopped";
    }
    return "unknown";
}

uint64_t
mcp_stdio_generation(const mcp_stdio_t *p)
{
    return p->generation;
}

unsigned
mcp_stdio_restarts(const mcp_stdio_t *p)
{
    return p->restarts;
}

int
mcp_stdio_pid(const mcp_stdio_t *p)
{
    const child_t *c = &p->child;
    return c->active && c->spawned && !c->exited ? c->pid : 0;
}

const char *
mcp_stdio_name(const mcp_stdio_t *p)
{
    return p->name;
}
