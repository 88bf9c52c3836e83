/*
 * control.c — the control socket server: line-delimited JSON on a Unix stream socket, on a libuv loop.
 *
 * Ownership: the server owns its listener and connections; a connection owns the FIFO of calls it
 * has received and not yet answered on the wire. A call whose connection goes away is detached
 * (call->conn = NULL) and then belongs to the handler alone, which frees it by answering.
 *
 * The process must ignore SIGPIPE (the daemons do at start-up): libuv writes to the socket with
 * write(2), and a peer that has hung up would otherwise kill the daemon.
 */
#include "control.h"

#include "log.h"
#include "mem.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_BACKLOG     64
#define CONTROL_SOCKET_MODE 0660
#define CONTROL_DIR_MODE    0770
/* Reading pauses while this many answer bytes wait to be written, so a peer that sends requests
 * without reading the answers cannot make the daemon buffer without bound. */
#define CONTROL_WRITE_HIGH_WATER (4 * 1024 * 1024)

typedef struct tp_control_conn tp_control_conn_t;

typedef struct control_handler {
    struct control_handler *next;
    char *cmd;
    tp_control_handler_t fn;
    void *data;
} control_handler_t;

struct tp_control_server {
    uv_pipe_t listener; /* first member: the close callback casts back */
    uv_loop_t *loop;
    char *path;
    control_handler_t *handlers;
    tp_control_conn_t *conns; /* open connections (not yet closing) */
    unsigned open_handles;    /* listener + connections whose close callback has not fired */
    bool closing;
};

struct tp_control_conn {
    uv_pipe_t pipe; /* first member: the close callback casts back */
    tp_control_server_t *srv;
    tp_control_conn_t *prev, *next;
    int pid, uid;
    char *line; /* the partial line received so far */
    size_t line_len, line_cap;
    tp_control_call_t *head, *tail; /* calls in request order, answered or not */
    size_t writes_pending;
    bool reading;    /* uv_read_start is in effect */
    bool input_done; /* no more requests will be read (EOF, refused, line too long) */
    bool paused;     /* reading stopped for backpressure */
    bool closing;
};

struct tp_control_call {
    tp_control_conn_t *conn; /* NULL once the connection has gone: answering just frees the call */
    tp_control_call_t *next;
    json_t *id;   /* the request's "id" (own reference), or NULL */
    char *answer; /* the encoded answer line once answered, until written */
    size_t answer_len;
    bool answered;
    int pid, uid;
};

typedef struct control_write {
    uv_write_t req;
    tp_control_conn_t *conn;
    char *data;
} control_write_t;

static void conn_close(tp_control_conn_t *conn);
static void conn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* ---- server lifetime ---- */

static void
server_free(tp_control_server_t *srv)
{
    control_handler_t *h = srv->handlers;
    while (h != NULL) {
        control_handler_t *next = h->next;
        free(h->cmd);
        free(h);
        h = next;
    }
    free(srv->path);
    free(srv);
}

static void
server_handle_closed(tp_control_server_t *srv)
{
    assert(srv->open_handles > 0);
    srv->open_handles--;
    if (srv->open_handles == 0)
        server_free(srv);
}

static void
on_listener_closed(uv_handle_t *handle)
{
    server_handle_closed((tp_control_server_t *)handle);
}

static int
mkdir_p(const char *dir, char **err)
{
    char *p = tp_strdup(dir);
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/')
        p[--len] = '\0';
    for (char *s = p + 1;; s++) {
        bool last = *s == '\0';
        if (*s != '/' && !last)
            continue;
        *s = '\0';
        if (mkdir(p, CONTROL_DIR_MODE) == 0) {
            /* mkdir's mode is filtered by the umask; the group must have access */
            if (last && chmod(p, CONTROL_DIR_MODE) != 0)
                tp_warn("control: chmod %s: %s", p, strerror(errno));
        } else if (errno != EEXIST) {
            int rv = -errno;
            *err = tp_sprintf("mkdir %s: %s", p, strerror(errno));
            free(p);
            return rv;
        }
        if (last)
            break;
        *s = '/';
    }
    struct stat st;
    int rv = 0;
    if (stat(p, &st) != 0) {
        rv = -errno;
        *err = tp_sprintf("stat %s: %s", p, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        rv = -ENOTDIR;
        *err = tp_sprintf("control directory %s is not a directory", p);
    }
    free(p);
    return rv;
}

/* Removes a socket file that nobody accepts on. A live one is -EADDRINUSE. The probe connects
 * without blocking: a full backlog (EAGAIN) also means somebody listens, and must not hang us. */
static int
remove_stale_socket(const char *path, char **err)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        int rv = -errno;
        *err = tp_sprintf("stat %s: %s", path, strerror(errno));
        return rv;
    }
    if (!S_ISSOCK(st.st_mode)) {
        *err = tp_sprintf("control socket path %s exists and is not a socket", path);
        return -EEXIST;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        int rv = -errno;
        *err = tp_sprintf("socket: %s", strerror(errno));
        return rv;
    }
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int crv = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    int cerr = errno;
    close(fd);
    if (crv == 0 || cerr == EAGAIN || cerr == EINPROGRESS) {
        *err = tp_sprintf("control socket %s is in use by another process", path);
        return -EADDRINUSE;
    }
    if (cerr != ECONNREFUSED) {
        *err = tp_sprintf("connect %s: %s", path, strerror(cerr));
        return -cerr;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        int rv = -errno;
        *err = tp_sprintf("unlink stale socket %s: %s", path, strerror(errno));
        return rv;
    }
    tp_info("control: removed stale socket %s", path);
    return 0;
}

static void on_connection(uv_stream_t *listener, int status);

int
tp_control_listen(uv_loop_t *loop, const char *dir, const char *name, tp_control_server_t **out, char **err)
{
    *out = NULL;
    *err = NULL;
    if (name[0] == '\0' || strchr(name, '/') != NULL) {
        *err = tp_sprintf("invalid control socket name '%s'", name);
        return -EINVAL;
    }
    char *path = tp_sprintf("%s/%s.sock", dir, name);
    struct sockaddr_un addr;
    if (strlen(path) >= sizeof(addr.sun_path)) {
        *err = tp_sprintf("control socket path %s is too long (%zu bytes, at most %zu)", path, strlen(path),
                          sizeof(addr.sun_path) - 1);
        free(path);
        return -ENAMETOOLONG;
    }
    int rv = mkdir_p(dir, err);
    if (rv != 0)
        goto err_path;
    rv = remove_stale_socket(path, err);
    if (rv != 0)
        goto err_path;

    tp_control_server_t *srv = tp_calloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->path = path;
    rv = uv_pipe_init(loop, &srv->listener, 0);
    if (rv != 0) {
        *err = tp_sprintf("uv_pipe_init: %s", uv_strerror(rv));
        free(srv);
        goto err_path;
    }
    srv->open_handles = 1;
    rv = uv_pipe_bind(&srv->listener, path);
    if (rv != 0) {
        *err = tp_sprintf("bind %s: %s", path, uv_strerror(rv));
        goto err_handle;
    }
    if (chmod(path, CONTROL_SOCKET_MODE) != 0) {
        rv = -errno;
        *err = tp_sprintf("chmod %s: %s", path, strerror(errno));
        goto err_bound;
    }
    rv = uv_listen((uv_stream_t *)&srv->listener, CONTROL_BACKLOG, on_connection);
    if (rv != 0) {
        *err = tp_sprintf("listen %s: %s", path, uv_strerror(rv));
        goto err_bound;
    }
    tp_info("control: listening on %s", path);
    *out = srv;
    return 0;

err_bound:
    unlink(path);
err_handle:
    /* the handle is initialised: it can only be freed by its close callback */
    srv->closing = true;
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    return rv;
err_path:
    free(path);
    return rv;
}

void
tp_control_register(tp_control_server_t *srv, const char *cmd, tp_control_handler_t handler, void *data)
{
    for (control_handler_t *h = srv->handlers; h != NULL; h = h->next) {
        if (strcmp(h->cmd, cmd) == 0) {
            h->fn = handler;
            h->data = data;
            return;
        }
    }
    control_handler_t *h = tp_calloc(1, sizeof(*h));
    h->cmd = tp_strdup(cmd);
    h->fn = handler;
    h->data = data;
    h->next = srv->handlers;
    srv->handlers = h;
}

void
tp_control_close(tp_control_server_t *srv)
{
    if (srv->closing)
        return;
    srv->closing = true;
    /* the listener first, so that a peer that sees its connection close finds no socket file */
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed); /* libuv unlinks the bound path */
    if (unlink(srv->path) != 0 && errno != ENOENT)
        tp_warn("control: unlink %s: %s", srv->path, strerror(errno));
    while (srv->conns != NULL)
        conn_close(srv->conns); /* unlinks itself from srv->conns */
    tp_info("control: closed %s", srv->path);
}

const char *
tp_control_path(const tp_control_server_t *srv)
{
    return srv->path;
}

/* ---- connections ---- */

static void
on_conn_closed(uv_handle_t *handle)
{
    tp_control_conn_t *conn = (tp_control_conn_t *)handle;
    tp_control_server_t *srv = conn->srv;
    free(conn->line);
    free(conn);
    server_handle_closed(srv);
}

static void
call_free(tp_control_call_t *call)
{
    json_decref(call->id);
    free(call->answer);
    free(call);
}

/* Closes the connection now. Answered calls are dropped; unanswered ones are detached and freed
 * when their handler answers. Pending writes are cancelled by libuv before on_conn_closed. */
static void
conn_close(tp_control_conn_t *conn)
{
    if (conn->closing)
        return;
    conn->closing = true;
    tp_control_call_t *call = conn->head;
    while (call != NULL) {
        tp_control_call_t *next = call->next;
        if (call->answered) {
            call_free(call);
        } else {
            call->conn = NULL;
            call->next = NULL;
        }
        call = next;
    }
    conn->head = conn->tail = NULL;
    tp_control_server_t *srv = conn->srv;
    if (conn->prev != NULL)
        conn->prev->next = conn->next;
    else
        srv->conns = conn->next;
    if (conn->next != NULL)
        conn->next->prev = conn->prev;
    conn->prev = conn->next = NULL;
    uv_close((uv_handle_t *)&conn->pipe, on_conn_closed);
}

static void
conn_stop_reading(tp_control_conn_t *conn)
{
    if (conn->reading) {
        uv_read_stop((uv_stream_t *)&conn->pipe);
        conn->reading = false;
    }
}

static void
on_read_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    buf->base = tp_malloc(suggested);
    buf->len = suggested;
}

static void
conn_start_reading(tp_control_conn_t *conn)
{
    if (conn->reading || conn->input_done || conn->closing)
        return;
    int rv = uv_read_start((uv_stream_t *)&conn->pipe, on_read_alloc, conn_read);
    if (rv != 0) {
        tp_warn("control: read start: %s", uv_strerror(rv));
        conn_close(conn);
        return;
    }
    conn->reading = true;
}

/* Closes the connection once its input has ended and every answer has been written. */
static void
conn_maybe_finish(tp_control_conn_t *conn)
{
    if (!conn->closing && conn->input_done && conn->head == NULL && conn->writes_pending == 0)
        conn_close(conn);
}

static void
on_write(uv_write_t *req, int status)
{
    control_write_t *w = (control_write_t *)req;
    tp_control_conn_t *conn = w->conn;
    free(w->data);
    free(w);
    conn->writes_pending--;
    if (conn->closing)
        return;
    if (status < 0) {
        tp_debug("control: write: %s", uv_strerror(status));
        conn_close(conn);
        return;
    }
    if (conn->paused && uv_stream_get_write_queue_size((uv_stream_t *)&conn->pipe) == 0) {
        conn->paused = false;
        conn_start_reading(conn);
    }
    conn_maybe_finish(conn);
}

/* Writes `data` (malloc'd, ownership taken) to the connection. */
static void
conn_write(tp_control_conn_t *conn, char *data, size_t len)
{
    control_write_t *w = tp_malloc(sizeof(*w));
    w->conn = conn;
    w->data = data;
    uv_buf_t buf = uv_buf_init(data, (unsigned)len);
    int rv = uv_write(&w->req, (uv_stream_t *)&conn->pipe, &buf, 1, on_write);
    if (rv != 0) {
        tp_debug("control: write: %s", uv_strerror(rv));
        free(data);
        free(w);
        conn_close(conn);
        return;
    }
    conn->writes_pending++;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&conn->pipe) > CONTROL_WRITE_HIGH_WATER && conn->reading) {
        conn_stop_reading(conn);
        conn->paused = true;
    }
}

/* Writes the answers at the head of the FIFO that are ready, in order. */
static void
conn_flush(tp_control_conn_t *conn)
{
    while (!conn->closing && conn->head != NULL && conn->head->answered) {
        tp_control_call_t *call = conn->head;
        conn->head = call->next;
        if (conn->head == NULL)
            conn->tail = NULL;
        char *data = call->answer;
        size_t len = call->answer_len;
        call->answer = NULL;
        call_free(call);
        conn_write(conn, data, len);
    }
    conn_maybe_finish(conn);
}

/* ---- calls ---- */

static tp_control_call_t *
call_new(tp_control_conn_t *conn, json_t *id)
{
    tp_control_call_t *call = tp_calloc(1, sizeof(*call));
    call->conn = conn;
    call->id = json_incref(id);
    call->pid = conn->pid;
    call->uid = conn->uid;
    if (conn->tail != NULL)
        conn->tail->next = call;
    else
        conn->head = call;
    conn->tail = call;
    return call;
}

/* Answers the call with `answer` (ownership taken). */
static void
call_finish(tp_control_call_t *call, json_t *answer)
{
    assert(!call->answered); /* a handler answers exactly once */
    tp_control_conn_t *conn = call->conn;
    if (conn == NULL) {
        json_decref(answer);
        call_free(call);
        return;
    }
    if (call->id != NULL)
        json_object_set(answer, "id", call->id); /* borrows call->id, which the call still owns */
    char *text = json_dumps(answer, JSON_COMPACT);
    json_decref(answer);
    if (text == NULL) {
        tp_error("control: cannot encode an answer");
        text = tp_strdup("{\"ok\":false,\"error\":\"internal error: the answer cannot be encoded\"}");
    }
    size_t len = strlen(text);
    call->answer = tp_realloc(text, len + 2);
    call->answer[len] = '\n';
    call->answer[len + 1] = '\0';
    call->answer_len = len + 1;
    call->answered = true;
    conn_flush(conn);
}

void
tp_control_reply(tp_control_call_t *call, json_t *result)
{
    json_t *answer = json_object();
    json_object_set_new(answer, "ok", json_true());
    json_object_set_new(answer, "result", result != NULL ? result : json_object()); /* steals result */
    call_finish(call, answer);
}

void
tp_control_fail(tp_control_call_t *call, const char *message)
{
    json_t *answer = json_object();
    json_object_set_new(answer, "ok", json_false());
    json_object_set_new(answer, "error", json_string(message));
    call_finish(call, answer);
}

void
tp_control_call_peer(const tp_control_call_t *call, int *pid, int *uid)
{
    *pid = call->pid;
    *uid = call->uid;
}

static control_handler_t *
find_handler(tp_control_server_t *srv, const char *cmd)
{
    for (control_handler_t *h = srv->handlers; h != NULL; h = h->next) {
        if (strcmp(h->cmd, cmd) == 0)
            return h;
    }
    return NULL;
}

static void
handle_line(tp_control_conn_t *conn, const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    if (len == 0)
        return; /* blank lines are ignored, which is friendly to people typing */

    json_error_t jerr;
    json_t *req = json_loadb(line, len, 0, &jerr);
    if (req == NULL) {
        char *msg = tp_sprintf("malformed request: %s", jerr.text);
        tp_control_fail(call_new(conn, NULL), msg);
        free(msg);
        return;
    }
    if (!json_is_object(req)) {
        tp_control_fail(call_new(conn, NULL), "malformed request: not a JSON object");
        json_decref(req);
        return;
    }
    tp_control_call_t *call = call_new(conn, json_object_get(req, "id")); /* get borrows; call_new increfs */
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    if (cmd == NULL) {
        tp_control_fail(call, "malformed request: no string \"cmd\"");
        json_decref(req);
        return;
    }
    control_handler_t *h = find_handler(conn->srv, cmd);
    if (h == NULL) {
        char *msg = tp_sprintf("unknown command '%s'", cmd);
        tp_control_fail(call, msg);
        free(msg);
        json_decref(req);
        return;
    }
    h->fn(call, req, h->data);
    json_decref(req);
}

static void
refuse_long_line(tp_control_conn_t *conn)
{
    char *msg = tp_sprintf("request line longer than %d bytes", TP_CONTROL_MAX_LINE);
    tp_warn("control: %s (pid %d, uid %d); closing the connection", msg, conn->pid, conn->uid);
    conn->input_done = true;
    conn_stop_reading(conn);
    free(conn->line);
    conn->line = NULL;
    conn->line_len = conn->line_cap = 0;
    tp_control_fail(call_new(conn, NULL), msg);
    free(msg);
}

static void
line_append(tp_control_conn_t *conn, const char *data, size_t len)
{
    if (conn->line_len + len > conn->line_cap) {
        size_t cap = conn->line_cap != 0 ? conn->line_cap : 256;
        while (cap < conn->line_len + len)
            cap *= 2;
        conn->line = tp_realloc(conn->line, cap);
        conn->line_cap = cap;
    }
    memcpy(conn->line + conn->line_len, data, len);
    conn->line_len += len;
}

/* Splits received bytes into lines. Stops when the input ends or the connection closes (a
 * handler may close the server). */
static void
conn_consume(tp_control_conn_t *conn, const char *data, size_t len)
{
    while (len > 0 && !conn->input_done && !conn->closing) {
        const char *nl = memchr(data, '\n', len);
        size_t chunk = nl != NULL ? (size_t)(nl - data) : len;
        if (conn->line_len + chunk > TP_CONTROL_MAX_LINE) {
            refuse_long_line(conn);
            return;
        }
        if (nl == NULL) {
            line_append(conn, data, chunk);
            return;
        }
        if (conn->line_len == 0) {
            handle_line(conn, data, chunk);
        } else {
            line_append(conn, data, chunk);
            size_t line_len = conn->line_len;
            conn->line_len = 0; /* the buffer stays allocated until the connection's close callback */
            handle_line(conn, conn->line, line_len);
        }
        data += chunk + 1;
        len -= chunk + 1;
    }
}

static void
conn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    tp_control_conn_t *conn = (tp_control_conn_t *)stream;
    if (nread > 0)
        conn_consume(conn, buf->base, (size_t)nread);
    free(buf->base);
    if (nread >= 0 || conn->closing)
        return;
    if (nread != UV_EOF) {
        tp_debug("control: read: %s", uv_strerror((int)nread));
        conn_close(conn);
        return;
    }
    /* the peer has finished sending; answer what it asked, then close */
    conn->input_done = true;
    conn_stop_reading(conn);
    conn_maybe_finish(conn);
}

static void
conn_refuse(tp_control_conn_t *conn)
{
    tp_warn("control: refused a connection from pid %d uid %d on %s", conn->pid, conn->uid, conn->srv->path);
    char *line =
        tp_sprintf("{\"ok\":false,\"error\":\"permission denied: uid %d may not use this socket\"}\n", conn->uid);
    conn->input_done = true;
    conn_write(conn, line, strlen(line));
    conn_maybe_finish(conn);
}

static void
on_connection(uv_stream_t *listener, int status)
{
    tp_control_server_t *srv = (tp_control_server_t *)listener;
    if (status < 0) {
        tp_warn("control: accept on %s: %s", srv->path, uv_strerror(status));
        return;
    }
    tp_control_conn_t *conn = tp_calloc(1, sizeof(*conn));
    conn->srv = srv;
    conn->pid = conn->uid = -1;
    int rv = uv_pipe_init(srv->loop, &conn->pipe, 0);
    if (rv != 0) {
        tp_warn("control: uv_pipe_init: %s", uv_strerror(rv));
        free(conn);
        return;
    }
    srv->open_handles++;
    conn->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = conn;
    srv->conns = conn;

    rv = uv_accept(listener, (uv_stream_t *)&conn->pipe);
    if (rv != 0) {
        tp_warn("control: accept on %s: %s", srv->path, uv_strerror(rv));
        conn_close(conn);
        return;
    }
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t cred_len = sizeof(cred);
    rv = uv_fileno((uv_handle_t *)&conn->pipe, &fd);
    if (rv != 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0) {
        tp_warn("control: cannot read the peer's credentials on %s: %s", srv->path,
                rv != 0 ? uv_strerror(rv) : strerror(errno));
        conn_close(conn);
        return;
    }
    conn->pid = (int)cred.pid;
    conn->uid = (int)cred.uid;
    if (cred.uid != 0 && cred.uid != geteuid()) {
        conn_refuse(conn);
        return;
    }
    conn_start_reading(conn);
}
