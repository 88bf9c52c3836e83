/*
 * test_control.c — tests for common/control.c (server) and common/control_client.c (client).
 *
 * The servers run on a libuv loop in a background thread; the test thread plays the client. Work
 * for the loop thread (starting servers, answering held calls) is handed over with run_on_loop(),
 * which wakes the loop with a uv_async_t and waits until the function has run, so nothing sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "control.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#define MAX_SERVERS 4
#define MAX_HELD    16
#define SLOW_MS     40 /* how long the async handler takes to answer */

typedef struct fixture fixture_t;
typedef void (*loop_fn_t)(fixture_t *f, void *arg);

struct fixture {
    uv_loop_t loop;
    uv_async_t wake;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    loop_fn_t task; /* the function run_on_loop hands to the loop thread */
    void *task_arg;
    bool task_done;
    char dir[64];
    tp_control_server_t *srv[MAX_SERVERS];
    tp_control_call_t *held[MAX_HELD]; /* calls of the "hold" handler, not answered yet */
    int nheld;
    int held_total;
};

/* ---- the loop thread ---- */

static void
on_wake(uv_async_t *async)
{
    fixture_t *f = async->data;
    pthread_mutex_lock(&f->mu);
    loop_fn_t fn = f->task;
    void *arg = f->task_arg;
    f->task = NULL;
    pthread_mutex_unlock(&f->mu);
    if (fn == NULL)
        return;
    fn(f, arg);
    pthread_mutex_lock(&f->mu);
    f->task_done = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void *
loop_thread(void *arg)
{
    fixture_t *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Runs fn(f, arg) on the loop thread and waits until it has returned. */
static void
run_on_loop(fixture_t *f, loop_fn_t fn, void *arg)
{
    pthread_mutex_lock(&f->mu);
    assert_null(f->task);
    f->task = fn;
    f->task_arg = arg;
    f->task_done = false;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(uv_async_send(&f->wake), 0);
    pthread_mutex_lock(&f->mu);
    while (!f->task_done)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

/* ---- handlers (run on the loop thread) ---- */

/* Answers at once with the server's name and the peer's credentials. */
static void
handle_status(tp_control_call_t *call, json_t *args, void *data)
{
    int pid, uid;
    tp_control_call_peer(call, &pid, &uid);
    tp_control_reply(call, json_pack("{s:s, s:i, s:i}", "name", (const char *)data, "pid", pid, "uid", uid));
}

typedef struct slow_answer {
    uv_timer_t timer;
    tp_control_call_t *call;
} slow_answer_t;

static void
on_slow_closed(uv_handle_t *handle)
{
    free(handle->data);
}

static void
on_slow_timer(uv_timer_t *timer)
{
    slow_answer_t *slow = timer->data;
    tp_control_reply(slow->call, json_pack("{s:b}", "slow", 1));
    uv_close((uv_handle_t *)&slow->timer, on_slow_closed);
}

/* Answers SLOW_MS later, from a timer. */
static void
handle_slow(tp_control_call_t *call, json_t *args, void *data)
{
    fixture_t *f = data;
    slow_answer_t *slow = calloc(1, sizeof(*slow));
    slow->call = call;
    uv_timer_init(&f->loop, &slow->timer);
    slow->timer.data = slow;
    uv_timer_start(&slow->timer, on_slow_timer, SLOW_MS, 0);
}

/* Keeps the call; the test answers it later with answer_held (or teardown does). */
static void
handle_hold(tp_control_call_t *call, json_t *args, void *data)
{
    fixture_t *f = data;
    pthread_mutex_lock(&f->mu);
    if (f->nheld >= MAX_HELD)
        abort(); /* not a cmocka assert: this is the loop thread */
    f->held[f->nheld++] = call;
    f->held_total++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Closes the server it was registered on from inside a handler. */
static void
handle_close_server(tp_control_call_t *call, json_t *args, void *data)
{
    fixture_t *f = data;
    tp_control_reply(call, NULL);
    for (int i = 0; i < MAX_SERVERS; i++) {
        if (f->srv[i] != NULL) {
            tp_control_close(f->srv[i]);
            f->srv[i] = NULL;
        }
    }
}

static void
answer_held(fixture_t *f, void *arg)
{
    pthread_mutex_lock(&f->mu);
    int n = f->nheld;
    f->nheld = 0;
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < n; i++)
        tp_control_reply(f->held[i], json_pack("{s:b}", "held", 1));
}

static void
wait_held_total(fixture_t *f, int n)
{
    pthread_mutex_lock(&f->mu);
    while (f->held_total < n)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

/* ---- starting and stopping servers ---- */

typedef struct listen_args {
    int slot;
    const char *dir; /* NULL: the fixture's directory */
    const char *name;
    bool hold_status; /* "status" never answers */
    int rv;
    char *err;
} listen_args_t;

static void
do_listen(fixture_t *f, void *arg)
{
    listen_args_t *a = arg;
    tp_control_server_t *srv = NULL;
    a->rv = tp_control_listen(&f->loop, a->dir != NULL ? a->dir : f->dir, a->name, &srv, &a->err);
    if (a->rv != 0)
        return;
    tp_control_register(srv, "status", handle_status, (void *)a->name);
    if (a->hold_status)
        tp_control_register(srv, "status", handle_hold, f); /* replaces the registration above */
    tp_control_register(srv, "slow", handle_slow, f);
    tp_control_register(srv, "hold", handle_hold, f);
    tp_control_register(srv, "shutdown", handle_close_server, f);
    f->srv[a->slot] = srv;
}

static int
start_server_in(fixture_t *f, int slot, const char *dir, const char *name, bool hold_status, char **err)
{
    listen_args_t a = { .slot = slot, .dir = dir, .name = name, .hold_status = hold_status };
    run_on_loop(f, do_listen, &a);
    if (err != NULL)
        *err = a.err;
    else
        free(a.err);
    return a.rv;
}

static void
start_server(fixture_t *f, int slot, const char *name)
{
    char *err = NULL;
    int rv = start_server_in(f, slot, NULL, name, false, &err);
    if (rv != 0)
        fail_msg("listen %s: %s", name, err);
}

static void
do_nothing(fixture_t *f, void *arg)
{
}

static void
do_close_all(fixture_t *f, void *arg)
{
    for (int i = 0; i < MAX_SERVERS; i++) {
        if (f->srv[i] != NULL) {
            tp_control_close(f->srv[i]);
            f->srv[i] = NULL;
        }
    }
}

static void
do_shutdown(fixture_t *f, void *arg)
{
    do_close_all(f, arg);
    answer_held(f, NULL); /* the connections are gone: these answers are discarded */
    uv_close((uv_handle_t *)&f->wake, NULL);
}

static char *
sock_path(const fixture_t *f, const char *name)
{
    static char buf[96];
    snprintf(buf, sizeof(buf), "%s/%s.sock", f->dir, name);
    return buf;
}

static void
remove_tree(const char *dir)
{
    char *cmd = NULL;
    assert_true(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    tp_log_init("test_control", TP_LOG_ERROR);
    snprintf(f->dir, sizeof(f->dir), "/tmp/tpctl.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_async_init(&f->loop, &f->wake, on_wake), 0);
    f->wake.data = f;
    assert_int_equal(pthread_create(&f->thread, NULL, loop_thread, f), 0);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    run_on_loop(f, do_shutdown, NULL);
    pthread_join(f->thread, NULL);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* every handle was closed and freed */
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    remove_tree(f->dir);
    free(f);
    return 0;
}

/* ---- a raw client, for bytes tp_control_request would never send ---- */

static int
raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    return fd;
}

static void
raw_send(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

static void
raw_send_str(int fd, const char *s)
{
    raw_send(fd, s, strlen(s));
}

/* Waits until the server has read everything sent on fd (a Unix socket's unread bytes are charged
 * to the sender), driving the loop meanwhile, so that two sends arrive as two reads. */
static void
wait_consumed(fixture_t *f, int fd)
{
    for (int i = 0; i < 10000; i++) {
        int queued = -1;
        assert_int_equal(ioctl(fd, SIOCOUTQ, &queued), 0);
        if (queued == 0)
            return;
        run_on_loop(f, do_nothing, NULL); /* one more turn of the loop */
    }
    fail_msg("the server did not read the data");
}

/* Reads one line (bounded by a 5 s guard, which only a broken server reaches) and parses it. */
static json_t *
raw_read_answer(int fd)
{
    static char buf[4096];
    size_t len = 0;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        assert_int_equal(poll(&p, 1, 5000), 1);
        ssize_t n = recv(fd, buf + len, 1, 0); /* byte by byte: the next line stays in the socket */
        assert_int_equal(n, 1);
        if (buf[len] == '\n')
            break;
        len++;
        assert_true(len < sizeof(buf));
    }
    json_error_t jerr;
    json_t *answer = json_loadb(buf, len, 0, &jerr);
    if (answer == NULL)
        fail_msg("answer is not JSON: %s: %.*s", jerr.text, (int)len, buf);
    return answer;
}

/* Asserts the peer closed the connection (EOF or reset) within the guard. */
static void
assert_closed(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    assert_int_equal(poll(&p, 1, 5000), 1);
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
}

static void
assert_error_answer(json_t *answer, const char *prefix)
{
    assert_true(json_is_false(json_object_get(answer, "ok")));
    const char *error = json_string_value(json_object_get(answer, "error"));
    assert_non_null(error);
    if (strncmp(error, prefix, strlen(prefix)) != 0)
        fail_msg("error '%s' does not start with '%s'", error, prefix);
}

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Sends {"cmd":cmd} with tp_control_request and returns the status; *answer is set on success. */
static int
request(const char *path, const char *cmd, int timeout_ms, json_t **answer, char **err)
{
    json_t *req = json_pack("{s:s}", "cmd", cmd);
    int rv = tp_control_request(path, req, timeout_ms, answer, err);
    json_decref(req);
    return rv;
}

/* ---- tests ---- */

static void
test_status_sync(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    json_t *answer = NULL;
    char *err = NULL;
    assert_int_equal(request(sock_path(f, "alpha"), "status", 2000, &answer, &err), 0);
    assert_null(err);
    assert_true(json_is_true(json_object_get(answer, "ok")));
    json_t *result = json_object_get(answer, "result");
    assert_string_equal(json_string_value(json_object_get(result, "name")), "alpha");
    assert_int_equal(json_integer_value(json_object_get(result, "pid")), getpid());
    assert_int_equal(json_integer_value(json_object_get(result, "uid")), getuid());
    assert_null(json_object_get(answer, "id")); /* no id asked, none echoed */
    json_decref(answer);
}

static void
test_id_echo(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    json_t *req = json_pack("{s:s, s:s}", "cmd", "status", "id", "req-7");
    json_t *answer = NULL;
    char *err = NULL;
    assert_int_equal(tp_control_request(sock_path(f, "alpha"), req, 2000, &answer, &err), 0);
    assert_string_equal(json_string_value(json_object_get(answer, "id")), "req-7");
    json_decref(answer);
    json_decref(req);

    /* an error answer echoes the id too */
    int fd = raw_connect(sock_path(f, "alpha"));
    raw_send_str(fd, "{\"cmd\":\"nope\",\"id\":42}\n");
    answer = raw_read_answer(fd);
    assert_error_answer(answer, "unknown command 'nope'");
    assert_int_equal(json_integer_value(json_object_get(answer, "id")), 42);
    json_decref(answer);
    close(fd);
}

static void
test_malformed_requests(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    int fd = raw_connect(sock_path(f, "alpha"));
    /* each bad line gets its own error answer and the connection stays usable */
    raw_send_str(fd, "{nope\n[1,2]\n{\"id\":5}\n{\"cmd\":17}\n\n{\"cmd\":\"whatever\"}\r\n{\"cmd\":\"status\"}\n");
    json_t *answer = raw_read_answer(fd);
    assert_error_answer(answer, "malformed request: ");
    json_decref(answer);
    answer = raw_read_answer(fd);
    assert_error_answer(answer, "malformed request: not a JSON object");
    json_decref(answer);
    answer = raw_read_answer(fd);
    assert_error_answer(answer, "malformed request: no string \"cmd\"");
    assert_int_equal(json_integer_value(json_object_get(answer, "id")), 5);
    json_decref(answer);
    answer = raw_read_answer(fd);
    assert_error_answer(answer, "malformed request: no string \"cmd\"");
    json_decref(answer);
    answer = raw_read_answer(fd); /* the blank line got no answer */
    assert_error_answer(answer, "unknown command 'whatever'");
    json_decref(answer);
    answer = raw_read_answer(fd);
    assert_true(json_is_true(json_object_get(answer, "ok")));
    json_decref(answer);
    close(fd);
}

static void
test_pipelined_answers_in_order(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    int fd = raw_connect(sock_path(f, "alpha"));
    /* the first answer comes from a timer, the second at once: the second must wait */
    raw_send_str(fd, "{\"cmd\":\"slow\",\"id\":1}\n{\"cmd\":\"status\",\"id\":2}\n{\"cmd\":\"bad\",\"id\":3}\n");
    json_t *answer = raw_read_answer(fd);
    assert_int_equal(json_integer_value(json_object_get(answer, "id")), 1);
    assert_true(json_is_true(json_object_get(json_object_get(answer, "result"), "slow")));
    json_decref(answer);
    answer = raw_read_answer(fd);
    assert_int_equal(json_integer_value(json_object_get(answer, "id")), 2);
    assert_string_equal(json_string_value(json_object_get(json_object_get(answer, "result"), "name")), "alpha");
    json_decref(answer);
    answer = raw_read_answer(fd);
    assert_int_equal(json_integer_value(json_object_get(answer, "id")), 3);
    assert_error_answer(answer, "unknown command 'bad'");
    json_decref(answer);
    close(fd);
}

static void
test_partial_lines(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    int fd = raw_connect(sock_path(f, "alpha"));
    raw_send_str(fd, "{\"cmd\":\"sta");
    wait_consumed(f, fd);
    raw_send_str(fd, "tus\",\"id\":7}\n{\"cmd\":\"st");
    wait_consumed(f, fd);
    json_t *answer = raw_read_answer(fd);
    assert_int_equal(json_integer_value(json_object_get(answer, "id")), 7);
    assert_true(json_is_true(json_object_get(answer, "ok")));
    json_decref(answer);
    raw_send_str(fd, "atus\",\"id\":8}\n");
    answer = raw_read_answer(fd);
    assert_int_equal(json_integer_value(json_object_get(answer, "id")), 8);
    assert_true(json_is_true(json_object_get(answer, "ok")));
    json_decref(answer);
    close(fd);
}

static void
test_line_too_long(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    int fd = raw_connect(sock_path(f, "alpha"));
    /* a good request first: its answer still arrives before the refusal */
    raw_send_str(fd, "{\"cmd\":\"slow\",\"id\":1}\n");
    size_t len = TP_CONTROL_MAX_LINE + 16;
    char *big = malloc(len);
    memset(big, 'a', len);
    /* the server stops reading once the line is too long, so the tail may be refused: ignore */
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, big + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    free(big);
    json_t *answer = raw_read_answer(fd);
    assert_int_equal(json_integer_value(json_object_get(answer, "id")), 1);
    json_decref(answer);
    answer = raw_read_answer(fd);
    assert_error_answer(answer, "request line longer than 1048576 bytes");
    json_decref(answer);
    assert_closed(fd);
    close(fd);

    /* the server still serves others */
    json_t *ok = NULL;
    char *err = NULL;
    assert_int_equal(request(sock_path(f, "alpha"), "status", 2000, &ok, &err), 0);
    json_decref(ok);
}

static void
test_peer_gone_before_async_answer(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    int fd = raw_connect(sock_path(f, "alpha"));
    raw_send_str(fd, "{\"cmd\":\"hold\"}\n{\"cmd\":\"hold\"}\n{\"cmd\":\"status\"}\n");
    wait_held_total(f, 2);
    close(fd);
    /* answering after the peer left must neither crash nor leak (ASan checks) */
    run_on_loop(f, answer_held, NULL);

    /* a call whose connection the server closed (tp_control_close) is freed by its answer */
    fd = raw_connect(sock_path(f, "alpha"));
    raw_send_str(fd, "{\"cmd\":\"hold\"}\n");
    wait_held_total(f, 3);
    run_on_loop(f, do_close_all, NULL);
    assert_closed(fd);
    close(fd);
    run_on_loop(f, answer_held, NULL);
    struct stat st;
    assert_int_equal(stat(sock_path(f, "alpha"), &st), -1); /* tp_control_close unlinked it */
    assert_int_equal(errno, ENOENT);
}

static void
test_close_from_handler(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    int fd = raw_connect(sock_path(f, "alpha"));
    raw_send_str(fd, "{\"cmd\":\"shutdown\"}\n{\"cmd\":\"status\"}\n");
    /* the server closed itself while answering: the second request is never answered */
    char buf[4096];
    size_t len = 0;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        assert_int_equal(poll(&p, 1, 5000), 1);
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    assert_null(strstr(buf, "alpha"));
    close(fd);
    json_t *answer = NULL;
    char *err = NULL;
    assert_int_equal(request(sock_path(f, "alpha"), "status", 1000, &answer, &err), -ENOENT);
    free(err);
}

static void
make_stale_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    close(fd); /* the file stays; nobody listens */
}

static void
test_stale_socket_replaced(void **state)
{
    fixture_t *f = *state;
    make_stale_socket(sock_path(f, "alpha"));
    json_t *answer = NULL;
    char *err = NULL;
    assert_int_equal(request(sock_path(f, "alpha"), "status", 1000, &answer, &err), -ECONNREFUSED);
    assert_non_null(strstr(err, sock_path(f, "alpha")));
    free(err);

    start_server(f, 0, "alpha");
    assert_int_equal(request(sock_path(f, "alpha"), "status", 2000, &answer, &err), 0);
    assert_true(json_is_true(json_object_get(answer, "ok")));
    json_decref(answer);
}

static void
test_live_socket_in_use(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    char *err = NULL;
    assert_int_equal(start_server_in(f, 1, NULL, "alpha", false, &err), -EADDRINUSE);
    char *want = NULL;
    assert_true(asprintf(&want, "control socket %s is in use by another process", sock_path(f, "alpha")) > 0);
    assert_string_equal(err, want);
    free(want);
    free(err);
    /* the first server is unharmed */
    json_t *answer = NULL;
    assert_int_equal(request(sock_path(f, "alpha"), "status", 2000, &answer, &err), 0);
    json_decref(answer);

    /* a path that is not a socket is not removed */
    FILE *file = fopen(sock_path(f, "beta"), "w");
    assert_non_null(file);
    fclose(file);
    assert_int_equal(start_server_in(f, 1, NULL, "beta", false, &err), -EEXIST);
    assert_non_null(strstr(err, "is not a socket"));
    free(err);

    /* a path longer than sun_path is refused */
    char name[200];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    assert_int_equal(start_server_in(f, 1, NULL, name, false, &err), -ENAMETOOLONG);
    assert_non_null(strstr(err, "too long"));
    free(err);
}

static void
test_socket_and_dir_modes(void **state)
{
    fixture_t *f = *state;
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/run/triplane", f->dir);
    mode_t old = umask(022);
    char *err = NULL;
    int rv = start_server_in(f, 0, dir, "alpha", false, &err);
    umask(old);
    if (rv != 0)
        fail_msg("listen: %s", err);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0770);
    char path[160];
    snprintf(path, sizeof(path), "%s/alpha.sock", dir);
    assert_string_equal(tp_control_path(f->srv[0]), path);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0660);
}

static void
test_request_errors(void **state)
{
    fixture_t *f = *state;
    json_t *answer = NULL;
    char *err = NULL;
    assert_int_equal(request(sock_path(f, "missing"), "status", 1000, &answer, &err), -ENOENT);
    assert_null(answer);
    assert_non_null(strstr(err, sock_path(f, "missing")));
    free(err);

    /* a handler that never answers: the deadline holds */
    start_server(f, 0, "alpha");
    double start = now_ms();
    assert_int_equal(request(sock_path(f, "alpha"), "hold", 150, &answer, &err), -ETIMEDOUT);
    double elapsed = now_ms() - start;
    assert_true(elapsed >= 149 && elapsed < 1500);
    assert_non_null(strstr(err, sock_path(f, "alpha")));
    free(err);
}

typedef struct fake_server {
    int listen_fd;
    const char *reply;
} fake_server_t;

static void *
fake_server_thread(void *arg)
{
    fake_server_t *fs = arg;
    int fd = accept(fs->listen_fd, NULL, NULL);
    if (fd >= 0) {
        char buf[256];
        ssize_t n = recv(fd, buf, sizeof(buf), 0); /* the request */
        (void)n;
        n = send(fd, fs->reply, strlen(fs->reply), MSG_NOSIGNAL);
        (void)n;
        close(fd);
    }
    return NULL;
}

static void
assert_malformed_answer(fixture_t *f, const char *reply)
{
    fake_server_t fs = { .reply = reply };
    fs.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fs.listen_fd >= 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock_path(f, "fake"));
    unlink(addr.sun_path);
    assert_int_equal(bind(fs.listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(fs.listen_fd, 4), 0);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, fake_server_thread, &fs), 0);
    json_t *answer = NULL;
    char *err = NULL;
    assert_int_equal(request(sock_path(f, "fake"), "status", 2000, &answer, &err), -EPROTO);
    assert_null(answer);
    assert_non_null(strstr(err, sock_path(f, "fake")));
    free(err);
    pthread_join(thread, NULL);
    close(fs.listen_fd);
}

static void
test_malformed_answers(void **state)
{
    fixture_t *f = *state;
    assert_malformed_answer(f, "this is not json\n");
    assert_malformed_answer(f, "[true]\n");
    assert_malformed_answer(f, "{\"ok\":true"); /* closed before the end of the line */
}

static void
test_broadcast(void **state)
{
    fixture_t *f = *state;
    start_server(f, 0, "alpha");
    start_server(f, 1, "beta");
    char *err = NULL;
    assert_int_equal(start_server_in(f, 2, NULL, "gamma", true, &err), 0); /* never answers */
    make_stale_socket(sock_path(f, "delta"));
    char notes[128];
    snprintf(notes, sizeof(notes), "%s/notes.txt", f->dir);
    FILE *other = fopen(notes, "w"); /* not *.sock: ignored */
    assert_non_null(other);
    fclose(other);

    const int deadline = 300;
    json_t *req = json_pack("{s:s}", "cmd", "status");
    tp_control_result_t *results = NULL;
    double start = now_ms();
    int n = tp_control_broadcast(f->dir, req, deadline, &results, &err);
    double elapsed = now_ms() - start;
    json_decref(req);
    assert_int_equal(n, 4);
    assert_true(elapsed >= deadline - 1 && elapsed < deadline + 1000);

    assert_string_equal(results[0].name, "alpha");
    assert_int_equal(results[0].status, 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(results[0].response, "result"), "name")),
                        "alpha");
    assert_true(results[0].elapsed_ms < deadline);

    assert_string_equal(results[1].name, "beta");
    assert_int_equal(results[1].status, 0);
    assert_true(json_is_true(json_object_get(results[1].response, "ok")));
    assert_true(results[1].elapsed_ms < deadline);

    assert_string_equal(results[2].name, "delta");
    assert_int_equal(results[2].status, -ECONNREFUSED);
    assert_string_equal(results[2].path, sock_path(f, "delta"));
    assert_non_null(strstr(results[2].error, sock_path(f, "delta")));
    assert_null(results[2].response);

    assert_string_equal(results[3].name, "gamma");
    assert_int_equal(results[3].status, -ETIMEDOUT);
    assert_non_null(results[3].error);
    assert_true(results[3].elapsed_ms >= deadline - 1 && results[3].elapsed_ms < deadline + 1000);
    wait_held_total(f, 1); /* gamma did receive the request */

    tp_control_results_free(results, (size_t)n);

    /* an unreadable directory is an error; an empty one has no results */
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/none", f->dir);
    req = json_pack("{s:s}", "cmd", "status");
    assert_int_equal(tp_control_broadcast(missing, req, deadline, &results, &err), -ENOENT);
    assert_non_null(strstr(err, missing));
    free(err);
    assert_int_equal(mkdir(missing, 0700), 0);
    assert_int_equal(tp_control_broadcast(missing, req, deadline, &results, &err), 0);
    json_decref(req);
}

static void
test_foreign_uid_refused(void **state)
{
    fixture_t *f = *state;
    if (geteuid() != 0)
        skip(); /* needs root to become another user */
    start_server(f, 0, "alpha");
    /* let the other user reach the socket; the server's own check is what is tested */
    assert_int_equal(chmod(f->dir, 0777), 0);
    assert_int_equal(chmod(sock_path(f, "alpha"), 0666), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(2);
        json_t *answer = NULL;
        char *err = NULL;
        if (request(sock_path(f, "alpha"), "status", 2000, &answer, &err) != 0)
            _exit(3);
        const char *error = json_string_value(json_object_get(answer, "error"));
        if (!json_is_false(json_object_get(answer, "ok")) || error == NULL ||
            strcmp(error, "permission denied: uid 65534 may not use this socket") != 0)
            _exit(4);
        _exit(0);
    }
    int wstatus;
    assert_int_equal(waitpid(child, &wstatus, 0), child);
    assert_true(WIFEXITED(wstatus));
    assert_int_equal(WEXITSTATUS(wstatus), 0);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as every daemon does: libuv writes to peers that may have left */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_status_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_answers_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_line_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_gone_before_async_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_socket_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_socket_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_and_dir_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broadcast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_uid_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
