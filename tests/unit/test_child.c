/*
 * test_child.c — tests for mcp-gw/child.c: supervised MCP stdio server processes.
 *
 * Each test runs real children (/bin/cat, sh, env, pwd) on a fresh loop in the test thread and
 * drives the loop until a condition holds; a 5 ms ticker keeps uv_run(UV_RUN_ONCE) returning and
 * every wait is bounded by WAIT_MS, so a failure cannot hang. Nothing sleeps in this process (the
 * children do, where a test needs a slow one).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "child.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS    10000 /* bound on every wait */
#define MAX_MSGS   512
#define MAX_STATES 16
#define PATH_ENV   "PATH=/usr/bin:/bin"
#define NELEM(a)   (sizeof(a) / sizeof((a)[0]))

typedef struct state_event {
    mcp_stdio_state_t state;
    char why[256];
    uint64_t at_ms;
    int msgs_before; /* messages received when it was reported */
} state_event_t;

typedef struct fixture {
    uv_loop_t loop;
    uv_timer_t ticker;
    mcp_stdio_t *p;
    char *msgs[MAX_MSGS];
    size_t msg_lens[MAX_MSGS];
    int nmsgs;
    state_event_t states[MAX_STATES];
    int nstates;
    int nerrors;
    char last_error[256];
    bool stop_on_message; /* on_message calls mcp_stdio_stop */
    bool free_on_stopped; /* on_state(STOPPED) frees p */
    char dir[64];         /* a scratch directory */
} fixture_t;

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Drives the loop until cond holds, failing the test after WAIT_MS. */
#define RUN_UNTIL(f, cond)                                                                                             \
    do {                                                                                                               \
        uint64_t end_ = mono_ms() + WAIT_MS;                                                                           \
        while (!(cond) && mono_ms() < end_)                                                                            \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                                                           \
        if (!(cond))                                                                                                   \
            fail_msg("timed out waiting for %s", #cond);                                                               \
    } while (0)

/* ---- callbacks ---- */

static void
on_message(mcp_stdio_t *p, void *data, const char *line, size_t len)
{
    fixture_t *f = data;
    if (f->nmsgs >= MAX_MSGS)
        abort();
    f->msgs[f->nmsgs] = malloc(len + 1); /* not strndup: line is not NUL-terminated */
    memcpy(f->msgs[f->nmsgs], line, len);
    f->msgs[f->nmsgs][len] = '\0';
    f->msg_lens[f->nmsgs] = len;
    f->nmsgs++;
    if (f->stop_on_message)
        mcp_stdio_stop(p);
}

static void
on_state(mcp_stdio_t *p, void *data, mcp_stdio_state_t state, const char *why)
{
    fixture_t *f = data;
    if (f->nstates >= MAX_STATES)
        return; /* a restart loop outran the test; the counts below still say enough */
    state_event_t *e = &f->states[f->nstates++];
    e->state = state;
    snprintf(e->why, sizeof(e->why), "%s", why);
    e->at_ms = mono_ms();
    e->msgs_before = f->nmsgs;
    if (state == MCP_STDIO_STOPPED && f->free_on_stopped) {
        mcp_stdio_free(p);
        f->p = NULL;
    }
}

static void
on_error(mcp_stdio_t *p, void *data, const char *what)
{
    fixture_t *f = data;
    f->nerrors++;
    snprintf(f->last_error, sizeof(f->last_error), "%s", what);
}

static const mcp_stdio_callbacks_t callbacks = { .on_message = on_message, .on_state = on_state, .on_error = on_error };

static int
count_states(const fixture_t *f, mcp_stdio_state_t state)
{
    int n = 0;
    for (int i = 0; i < f->nstates; i++)
        n += f->states[i].state == state;
    return n;
}

/* The i-th (from 0) report of `state`, or NULL. */
static const state_event_t *
nth_state(const fixture_t *f, mcp_stdio_state_t state, int i)
{
    for (int k = 0; k < f->nstates; k++) {
        if (f->states[k].state == state && i-- == 0)
            return &f->states[k];
    }
    return NULL;
}

/* ---- fixture ---- */

static void
on_tick(uv_timer_t *t)
{
}

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->ticker);
    uv_timer_start(&f->ticker, on_tick, 5, 5);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_stdio.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static void
remove_dir(const char *dir)
{
    char *cmd;
    assert_true(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    if (f->p != NULL) {
        mcp_stdio_state_t st = mcp_stdio_state(f->p);
        if (st != MCP_STDIO_IDLE && st != MCP_STDIO_STOPPED) {
            mcp_stdio_stop(f->p);
            RUN_UNTIL(f, mcp_stdio_state(f->p) == MCP_STDIO_STOPPED);
        }
        mcp_stdio_free(f->p);
    }
    uv_close((uv_handle_t *)&f->ticker, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* every handle was closed */
    for (int i = 0; i < f->nmsgs; i++)
        free(f->msgs[i]);
    remove_dir(f->dir);
    free(f);
    return 0;
}

/* Options with test-friendly timings. */
static mcp_stdio_options_t
options(const char *command, const char *const *args, size_t num_args)
{
    static const char *const env[] = { PATH_ENV };
    return (mcp_stdio_options_t){
        .name = "test-server",
        .command = command,
        .args = args,
        .num_args = num_args,
        .env = env,
        .num_env = 1,
        .restart_min_ms = 20,
        .restart_max_ms = 200,
        .stop_grace_ms = 200,
    };
}

static void
create(fixture_t *f, const mcp_stdio_options_t *opts)
{
    char *err = NULL;
    f->p = mcp_stdio_new(&f->loop, opts, &callbacks, f, &err);
    if (f->p == NULL)
        fail_msg("mcp_stdio_new: %s", err);
}

static void
create_and_start(fixture_t *f, const mcp_stdio_options_t *opts)
{
    create(f, opts);
    assert_int_equal(mcp_stdio_start(f->p), 0);
    assert_true(mcp_stdio_running(f->p));
}

static void
send_str(fixture_t *f, const char *s)
{
    assert_int_equal(mcp_stdio_send(f->p, s, strlen(s)), 0);
}

static void
stop_and_wait(fixture_t *f)
{
    mcp_stdio_stop(f->p);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_STOPPED) == 1);
}

/* True when pid no longer runs: gone, or a zombie waiting for its parent (orphans wait for init,
 * which may take its time) to reap it. */
static bool
process_ended(int pid)
{
    if (kill(pid, 0) != 0)
        return errno == ESRCH;
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp != NULL && (rp[2] == 'Z' || rp[2] == 'X');
}

/* ---- tests ---- */

static void
test_echo_round_trip(void **state)
{
    fixture_t *f = *state;
    mcp_stdio_options_t o = options("/bin/cat", NULL, 0);
    create_and_start(f, &o);
    assert_int_equal(mcp_stdio_generation(f->p), 1);
    assert_true(mcp_stdio_pid(f->p) > 0);
    assert_int_equal(count_states(f, MCP_STDIO_RUNNING), 1);
    assert_int_equal(mcp_stdio_state(f->p), MCP_STDIO_RUNNING);

    size_t big_len = 1024 * 1024;
    char *big = malloc(big_len + 1);
    memset(big, 'x', big_len);
    big[0] = '"';
    big[big_len - 1] = '"';
    big[big_len] = '\0';

    send_str(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
    send_str(f, "{\"id\":2,\"text\":\"caf\xc3\xa9\"}");
    assert_int_equal(mcp_stdio_send(f->p, big, big_len), 0);
    send_str(f, "{\"id\":3}\r"); /* a CRLF line ending loses its '\r' */
    assert_int_equal(mcp_stdio_send(f->p, "{\"a\":\n1}", 8), -EINVAL);
    assert_int_equal(mcp_stdio_send(f->p, "", 0), -EINVAL);

    RUN_UNTIL(f, f->nmsgs == 4);
    assert_string_equal(f->msgs[0], "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
    assert_string_equal(f->msgs[1], "{\"id\":2,\"text\":\"caf\xc3\xa9\"}");
    assert_int_equal(f->msg_lens[2], big_len);
    assert_memory_equal(f->msgs[2], big, big_len);
    assert_string_equal(f->msgs[3], "{\"id\":3}");
    free(big);

    /* cat exits on stdin EOF, so the stop needs no signal */
    uint64_t t0 = mono_ms();
    stop_and_wait(f);
    assert_true(mono_ms() - t0 < 200);
    assert_string_equal(nth_state(f, MCP_STDIO_STOPPED, 0)->why, "exited with status 0");
    assert_int_equal(count_states(f, MCP_STDIO_EXITED), 0);
    assert_false(mcp_stdio_running(f->p));
    assert_int_equal(mcp_stdio_pid(f->p), 0);
    assert_int_equal(mcp_stdio_send(f->p, "{}", 2), -EPIPE);
    assert_int_equal(mcp_stdio_start(f->p), -ECANCELED);
    assert_string_equal(mcp_stdio_state_name(mcp_stdio_state(f->p)), "stopped");
}

/* A line the child writes in two writes, 100 ms apart, arrives as one message. */
static void
test_line_split_across_writes(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c", "printf '{\"part\":'; sleep 0.1; printf '1}\\n{\"next\":2}\\n'; "
                                              "exec sleep 1000" };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    create_and_start(f, &o);
    RUN_UNTIL(f, f->nmsgs == 2);
    assert_string_equal(f->msgs[0], "{\"part\":1}");
    assert_string_equal(f->msgs[1], "{\"next\":2}");
}

/* Everything a child wrote arrives before its EXITED. */
static void
test_all_output_before_exited(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c",
                                        "i=0; while [ $i -lt 300 ]; do echo \"{\\\"n\\\":$i}\"; i=$((i+1)); done; "
                                        "exit 0" };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.restart_min_ms = 5000;
    create_and_start(f, &o);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    const state_event_t *e = nth_state(f, MCP_STDIO_EXITED, 0);
    assert_int_equal(e->msgs_before, 300);
    assert_string_equal(e->why, "exited with status 0");
    assert_string_equal(f->msgs[299], "{\"n\":299}");
    assert_int_equal(mcp_stdio_state(f->p), MCP_STDIO_EXITED);
}

/* A child that exits is restarted after the backoff, which doubles, with a new generation. */
static void
test_restart_with_backoff(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c", "exit 3" };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.restart_min_ms = 50;
    o.restart_max_ms = 2000;
    create_and_start(f, &o);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_RUNNING) == 3);
    mcp_stdio_stop(f->p);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_STOPPED) == 1);

    /* RUNNING, EXITED, RUNNING, EXITED, RUNNING, (EXITED,) STOPPED */
    for (int i = 0; i < 2; i++)
        assert_string_equal(nth_state(f, MCP_STDIO_EXITED, i)->why, "exited with status 3");
    uint64_t gap1 = nth_state(f, MCP_STDIO_RUNNING, 1)->at_ms - nth_state(f, MCP_STDIO_EXITED, 0)->at_ms;
    uint64_t gap2 = nth_state(f, MCP_STDIO_RUNNING, 2)->at_ms - nth_state(f, MCP_STDIO_EXITED, 1)->at_ms;
    assert_true(gap1 >= 50);
    assert_true(gap2 >= 100);
    assert_true(mcp_stdio_generation(f->p) >= 3);
    assert_true(mcp_stdio_restarts(f->p) >= 2);
}

/* A child that ran longer than stable_ms restarts after restart_min_ms again, not doubled. */
static void
test_backoff_resets_after_stable_run(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c", "sleep 0.15; exit 1" };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.restart_min_ms = 100;
    o.restart_max_ms = 5000;
    o.stable_ms = 50;
    create_and_start(f, &o);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_RUNNING) == 3);
    uint64_t gap2 = nth_state(f, MCP_STDIO_RUNNING, 2)->at_ms - nth_state(f, MCP_STDIO_EXITED, 1)->at_ms;
    assert_true(gap2 >= 100);
    assert_true(gap2 < 200); /* doubled, it would be 200 */
    assert_int_equal(mcp_stdio_generation(f->p), 3);
}

/* The child's environment is exactly the one given; PATH from it finds the command. */
static void
test_environment_is_exact(void **state)
{
    fixture_t *f = *state;
    static const char *const env[] = { PATH_ENV, "FOO=bar baz", "EMPTY=" };
    mcp_stdio_options_t o = options("env", NULL, 0);
    o.env = env;
    o.num_env = 3;
    o.restart_min_ms = 5000;
    create_and_start(f, &o);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    assert_int_equal(f->nmsgs, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(f->msgs[i], env[i]);
}

/* Without PATH in env, a bare name is found in the gateway's PATH; an empty env stays empty. */
static void
test_environment_without_path(void **state)
{
    fixture_t *f = *state;
    static const char *const env[] = { "ONLY=1" };
    mcp_stdio_options_t o = options("env", NULL, 0);
    o.env = env;
    o.num_env = 1;
    o.restart_min_ms = 5000;
    create_and_start(f, &o);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    assert_int_equal(f->nmsgs, 1);
    assert_string_equal(f->msgs[0], "ONLY=1");
    stop_and_wait(f);
    mcp_stdio_free(f->p);

    /* nothing at all */
    f->nstates = 0;
    o.env = NULL;
    o.num_env = 0;
    o.command = "/usr/bin/env";
    create_and_start(f, &o);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    assert_int_equal(f->nmsgs, 1); /* only the line of the first child */
    assert_string_equal(nth_state(f, MCP_STDIO_EXITED, 0)->why, "exited with status 0");
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    assert_int_equal(chmod(path, mode), 0);
}

/* The child runs in cwd, and a relative command is found from there. */
static void
test_cwd(void **state)
{
    fixture_t *f = *state;
    char script[PATH_MAX], real[PATH_MAX];
    snprintf(script, sizeof(script), "%s/hello.sh", f->dir);
    write_file(script, "#!/bin/sh\npwd\necho \"$0\"\n", 0755);
    assert_non_null(realpath(f->dir, real));

    mcp_stdio_options_t o = options("./hello.sh", NULL, 0);
    o.cwd = f->dir;
    o.restart_min_ms = 5000;
    create_and_start(f, &o);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    assert_int_equal(f->nmsgs, 2);
    assert_string_equal(f->msgs[0], real);
    assert_string_equal(f->msgs[1], script); /* what was executed: the resolved path */
}

/* The child's argv is the command as given, then the arguments. */
static void
test_argv(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c", "tr '\\0' '\\n' < /proc/$$/cmdline", "arg 0", "two words" };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.restart_min_ms = 5000;
    create_and_start(f, &o);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    assert_int_equal(f->nmsgs, 5);
    assert_string_equal(f->msgs[0], "sh");
    for (int i = 0; i < 4; i++)
        assert_string_equal(f->msgs[i + 1], args[i]);
}

/* Commands that cannot run: a clear reason, a negative errno, and retries. */
static void
test_missing_command(void **state)
{
    fixture_t *f = *state;
    mcp_stdio_options_t o = options("no-such-mcp-server-here", NULL, 0);
    create(f, &o);
    assert_int_equal(mcp_stdio_send(f->p, "{}", 2), -EPIPE); /* not started */
    assert_int_equal(mcp_stdio_start(f->p), -ENOENT);
    assert_false(mcp_stdio_running(f->p));
    assert_int_equal(f->nstates, 0); /* EXITED comes from the loop */
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) >= 3);
    assert_string_equal(nth_state(f, MCP_STDIO_EXITED, 0)->why,
                        "spawn no-such-mcp-server-here: not found in PATH (/usr/bin:/bin)");
    assert_true(mcp_stdio_restarts(f->p) >= 2);
    assert_int_equal(mcp_stdio_generation(f->p), 0);
    assert_int_equal(count_states(f, MCP_STDIO_RUNNING), 0);
    assert_int_equal(mcp_stdio_send(f->p, "{}", 2), -EPIPE);
    stop_and_wait(f);
    mcp_stdio_free(f->p);
    f->p = NULL;

    struct {
        const char *command;
        int rv;
        const char *why;
    } cases[] = {
        { "/nonexistent/server", -ENOENT, "spawn /nonexistent/server: No such file or directory" },
        { "not-executable", -EACCES, "Permission denied" },
        { "/tmp", -EACCES, "spawn /tmp: Permission denied" },
    };
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/not-executable", f->dir);
    write_file(path, "#!/bin/sh\n", 0644);
    cases[1].command = path;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        f->nstates = 0;
        o.command = cases[i].command;
        o.restart_min_ms = 5000;
        create(f, &o);
        assert_int_equal(mcp_stdio_start(f->p), cases[i].rv);
        RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
        assert_non_null(strstr(nth_state(f, MCP_STDIO_EXITED, 0)->why, cases[i].why));
        stop_and_wait(f);
        mcp_stdio_free(f->p);
        f->p = NULL;
    }

    /* a working directory that does not exist */
    f->nstates = 0;
    o.command = "/bin/cat";
    o.cwd = "/nonexistent-dir";
    create(f, &o);
    assert_int_equal(mcp_stdio_start(f->p), -ENOENT);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    assert_string_equal(nth_state(f, MCP_STDIO_EXITED, 0)->why,
                        "spawn /bin/cat: working directory /nonexistent-dir: No such file or directory");
}

/* Reads the log lines in `text` that are "server stderr" lines of `server`, into out. */
static int
stderr_log_lines(const char *text, const char *server, json_t **out, int max)
{
    int n = 0;
    for (const char *s = text; *s != '\0' && n < max;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl != NULL ? (size_t)(nl - s) : strlen(s);
        json_t *line = json_loadb(s, len, 0, NULL);
        if (line != NULL && strcmp(json_string_value(json_object_get(line, "msg")), "server stderr") == 0 &&
            strcmp(json_string_value(json_object_get(line, "server")), server) == 0)
            out[n++] = line;
        else
            json_decref(line);
        s += nl != NULL ? len + 1 : len;
    }
    return n;
}

/* stderr goes to the log, a line at a time, with the server's name; long lines are truncated and
 * a last line without newline is flushed when the child ends. */
static void
test_stderr_logged(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = {
        "-c", "echo 'hello from stderr' >&2; head -c 5000 /dev/zero | tr '\\0' a >&2; echo >&2; "
              "printf 'crlf\\r\\n\\n' >&2; echo '{\"on\":\"stdout\"}'; printf 'no newline' >&2; exit 0"
    };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.name = "noisy";
    o.restart_min_ms = 5000;

    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/log", f->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    create(f, &o);
    int rv = mcp_stdio_start(f->p);
    uint64_t end = mono_ms() + WAIT_MS;
    while (count_states(f, MCP_STDIO_EXITED) == 0 && mono_ms() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    dup2(saved, STDERR_FILENO); /* before any assertion, so that failures can be read */
    close(saved);
    assert_int_equal(rv, 0);
    assert_int_equal(count_states(f, MCP_STDIO_EXITED), 1);
    assert_int_equal(f->nmsgs, 1);

    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    static char text[256 * 1024];
    size_t n = fread(text, 1, sizeof(text) - 1, fp);
    fclose(fp);
    text[n] = '\0';
    json_t *lines[8];
    int nlines = stderr_log_lines(text, "noisy", lines, 8);
    assert_int_equal(nlines, 4);
    assert_string_equal(json_string_value(json_object_get(lines[0], "stderr")), "hello from stderr");
    assert_string_equal(json_string_value(json_object_get(lines[0], "level")), "info");
    assert_true(json_integer_value(json_object_get(lines[0], "pid")) > 0);
    const char *longline = json_string_value(json_object_get(lines[1], "stderr"));
    assert_int_equal(strlen(longline), MCP_STDIO_STDERR_LINE_MAX);
    assert_int_equal(strspn(longline, "a"), MCP_STDIO_STDERR_LINE_MAX);
    assert_true(json_is_true(json_object_get(lines[1], "truncated")));
    assert_null(json_object_get(lines[0], "truncated"));
    assert_string_equal(json_string_value(json_object_get(lines[2], "stderr")), "crlf");
    assert_string_equal(json_string_value(json_object_get(lines[3], "stderr")), "no newline");
    for (int i = 0; i < nlines; i++)
        json_decref(lines[i]);
}

/* Stop ends the whole process group: the grandchild too, even though the shell ignores stdin EOF. */
static void
test_stop_kills_group(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c", "sleep 1000 & echo $!; wait" };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.stop_grace_ms = 100;
    create_and_start(f, &o);
    RUN_UNTIL(f, f->nmsgs == 1);
    int grandchild = atoi(f->msgs[0]);
    int pid = mcp_stdio_pid(f->p);
    assert_true(grandchild > 0);
    assert_int_equal(kill(grandchild, 0), 0);
    assert_int_equal(getpgid(grandchild), pid); /* the child leads the group */
    assert_int_equal(getsid(pid), pid);         /* in its own session */

    uint64_t t0 = mono_ms();
    mcp_stdio_stop(f->p);
    assert_false(mcp_stdio_running(f->p));
    assert_int_equal(count_states(f, MCP_STDIO_STOPPED), 0); /* never from inside stop */
    RUN_UNTIL(f, count_states(f, MCP_STDIO_STOPPED) == 1);
    assert_true(mono_ms() - t0 >= 100); /* stdin EOF alone did not end it */
    assert_string_equal(nth_state(f, MCP_STDIO_STOPPED, 0)->why, "killed by signal 15");
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_true(process_ended(grandchild));
    assert_int_equal(count_states(f, MCP_STDIO_EXITED), 0);
}

/* When the leader exits on its own, what it left in its group is terminated before EXITED. */
static void
test_exit_kills_leftovers(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c", "sleep 1000 & echo $!; exit 1" };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.restart_min_ms = 5000;
    create_and_start(f, &o);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    assert_int_equal(f->nmsgs, 1);
    assert_string_equal(nth_state(f, MCP_STDIO_EXITED, 0)->why, "exited with status 1");
    assert_true(process_ended(atoi(f->msgs[0])));
}

/* A child that ignores stdin EOF and SIGTERM is SIGKILLed after the grace periods. */
static void
test_sigterm_ignored(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c", "trap '' TERM; echo ready; while :; do sleep 1; done" };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.stop_grace_ms = 100;
    create_and_start(f, &o);
    RUN_UNTIL(f, f->nmsgs == 1); /* the trap is set */
    int pid = mcp_stdio_pid(f->p);
    uint64_t t0 = mono_ms();
    mcp_stdio_stop(f->p);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_STOPPED) == 1);
    assert_true(mono_ms() - t0 >= 200); /* EOF, then SIGTERM, each given 100 ms */
    assert_string_equal(nth_state(f, MCP_STDIO_STOPPED, 0)->why, "killed by signal 9");
    assert_int_equal(kill(pid, 0), -1);
}

/* An oversize stdout line is dropped and reported; the lines around it arrive. */
static void
test_oversize_line_dropped(void **state)
{
    fixture_t *f = *state;
    mcp_stdio_options_t o = options("/bin/cat", NULL, 0);
    o.max_message_bytes = 1024;
    create_and_start(f, &o);
    char at_limit[1025], over[5001];
    memset(at_limit, 'a', 1024);
    at_limit[1024] = '\0';
    memset(over, 'b', 5000);
    over[5000] = '\0';
    send_str(f, at_limit);
    send_str(f, over);
    send_str(f, "{\"after\":1}");
    RUN_UNTIL(f, f->nmsgs == 2);
    assert_string_equal(f->msgs[0], at_limit);
    assert_string_equal(f->msgs[1], "{\"after\":1}");
    assert_int_equal(f->nerrors, 1);
    assert_string_equal(f->last_error, "stdout line longer than 1024 bytes dropped");
    assert_true(mcp_stdio_running(f->p));
}

/* Bytes the child does not take are bounded by max_queue_bytes. */
static void
test_queue_limit(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c", "exec sleep 1000" }; /* never reads stdin */
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.max_queue_bytes = 64 * 1024;
    o.stop_grace_ms = 50;
    create_and_start(f, &o);
    size_t len = 4 * 1024 * 1024;
    char *big = malloc(len);
    memset(big, 'x', len);
    assert_int_equal(mcp_stdio_send(f->p, big, len), 0); /* an empty queue takes any message */
    assert_int_equal(mcp_stdio_send(f->p, "{}", 2), -ENOBUFS);
    free(big);
    stop_and_wait(f); /* the queued bytes are discarded */
    assert_string_equal(nth_state(f, MCP_STDIO_STOPPED, 0)->why, "killed by signal 15");
}

/* kill_now kills the group and reaps the child synchronously, without the loop, and stops: when
 * the loop runs again, STOPPED follows without waiting for any grace period. */
static void
test_kill_now(void **state)
{
    fixture_t *f = *state;
    static const char *const args[] = { "-c", "sleep 1000 & echo $!; wait" };
    mcp_stdio_options_t o = options("sh", args, NELEM(args));
    o.stop_grace_ms = 5000;
    create_and_start(f, &o);
    RUN_UNTIL(f, f->nmsgs == 1);
    int grandchild = atoi(f->msgs[0]);
    int pid = mcp_stdio_pid(f->p);
    int nstates = f->nstates;

    uint64_t t0 = mono_ms();
    mcp_stdio_kill_now(f->p);
    assert_int_equal(kill(pid, 0), -1); /* reaped already */
    assert_int_equal(errno, ESRCH);
    assert_int_equal(mcp_stdio_pid(f->p), 0);
    assert_false(mcp_stdio_running(f->p));
    assert_int_equal(mcp_stdio_state(f->p), MCP_STDIO_STOPPING);
    assert_int_equal(f->nstates, nstates); /* no callback from inside */

    RUN_UNTIL(f, count_states(f, MCP_STDIO_STOPPED) == 1);
    assert_true(mono_ms() - t0 < 5000);
    assert_true(process_ended(grandchild));
    assert_string_equal(nth_state(f, MCP_STDIO_STOPPED, 0)->why, "killed by signal 9");
    assert_int_equal(count_states(f, MCP_STDIO_EXITED), 0);
    mcp_stdio_stop(f->p); /* nothing more */
    mcp_stdio_kill_now(f->p);
}

/* Starting and stopping at the edges: start while running, stop while idle or while a restart is
 * pending, stop from inside on_message, free from inside on_state(STOPPED). */
static void
test_lifecycle_edges(void **state)
{
    fixture_t *f = *state;
    mcp_stdio_options_t o = options("/bin/cat", NULL, 0);

    /* never started: free at once */
    create(f, &o);
    assert_int_equal(mcp_stdio_state(f->p), MCP_STDIO_IDLE);
    mcp_stdio_free(f->p);

    /* stopped before starting: STOPPED comes from the loop */
    create(f, &o);
    mcp_stdio_stop(f->p);
    mcp_stdio_stop(f->p); /* again: nothing */
    assert_int_equal(f->nstates, 0);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_STOPPED) == 1);
    assert_string_equal(nth_state(f, MCP_STDIO_STOPPED, 0)->why, "stopped");
    assert_int_equal(mcp_stdio_start(f->p), -ECANCELED);
    mcp_stdio_free(f->p);

    /* start while running: nothing new */
    f->nstates = 0;
    create_and_start(f, &o);
    assert_int_equal(mcp_stdio_start(f->p), 0);
    assert_int_equal(mcp_stdio_generation(f->p), 1);
    assert_int_equal(count_states(f, MCP_STDIO_RUNNING), 1);

    /* stop from inside on_message; free from inside on_state(STOPPED) */
    f->stop_on_message = true;
    f->free_on_stopped = true;
    send_str(f, "{\"bye\":1}");
    RUN_UNTIL(f, f->p == NULL);
    assert_int_equal(count_states(f, MCP_STDIO_STOPPED), 1);
    f->stop_on_message = f->free_on_stopped = false;

    /* stop while a restart is scheduled */
    f->nstates = 0;
    static const char *const args[] = { "-c", "exit 2" };
    mcp_stdio_options_t e = options("sh", args, NELEM(args));
    e.restart_min_ms = 60000;
    create_and_start(f, &e);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    assert_int_equal(mcp_stdio_state(f->p), MCP_STDIO_EXITED);
    uint64_t t0 = mono_ms();
    stop_and_wait(f);
    assert_true(mono_ms() - t0 < 1000);
    assert_int_equal(mcp_stdio_restarts(f->p), 0);
    mcp_stdio_free(f->p);

    /* start while a restart is scheduled: now, not after the backoff */
    f->nstates = 0;
    create_and_start(f, &e);
    RUN_UNTIL(f, count_states(f, MCP_STDIO_EXITED) == 1);
    assert_int_equal(mcp_stdio_start(f->p), 0);
    assert_int_equal(count_states(f, MCP_STDIO_RUNNING), 2);
    assert_int_equal(mcp_stdio_generation(f->p), 2);
}

static void
test_invalid_options(void **state)
{
    fixture_t *f = *state;
    char *err = NULL;
    mcp_stdio_options_t o = options(NULL, NULL, 0);
    assert_null(mcp_stdio_new(&f->loop, &o, &callbacks, f, &err));
    assert_string_equal(err, "mcp server test-server: no command");
    free(err);

    static const char *const bad_env[] = { PATH_ENV, "NOEQUALS" };
    o = options("/bin/cat", NULL, 0);
    o.env = bad_env;
    o.num_env = 2;
    assert_null(mcp_stdio_new(&f->loop, &o, &callbacks, f, &err));
    assert_string_equal(err, "mcp server test-server: environment entry 2 is not NAME=VALUE");
    free(err);

    o = options("/bin/cat", NULL, 0);
    mcp_stdio_callbacks_t none = { 0 };
    assert_null(mcp_stdio_new(&f->loop, &o, &none, f, &err));
    assert_non_null(strstr(err, "on_message"));
    free(err);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as every daemon does: a child's stdin may close under a write */
    tp_log_init("test_stdio", TP_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_line_split_across_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_output_before_exited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_with_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff_resets_after_stable_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment_is_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment_without_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cwd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_argv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stderr_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_kills_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_kills_leftovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_line_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifecycle_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_options, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
