/*
 * control_client.c — the blocking control socket client (gwctl, tests): plain POSIX, no libuv.
 *
 * One request and a broadcast share the same machinery: a set of endpoints, each a non-blocking
 * socket that moves connect → send → receive → done, driven by one poll() loop that never waits
 * past the deadline.
 */
#include "clock.h"
#include "control.h"

#include "mem.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* An answer longer than this is treated as malformed, so a broken daemon cannot exhaust gwctl. */
#define CONTROL_MAX_ANSWER (64 * 1024 * 1024)
/* A listener whose backlog is full refuses a non-blocking connect with EAGAIN; retry this often. */
#define CONTROL_CONNECT_RETRY_MS 10

typedef enum endpoint_state {
    EP_CONNECT, /* connect() must be (re)tried */
    EP_SEND,
    EP_RECV,
    EP_DONE,
} endpoint_state_t;

typedef struct endpoint {
    tp_control_result_t *res; /* where the outcome goes */
    int fd;
    endpoint_state_t state;
    size_t sent;    /* bytes of the request line sent */
    int send_errno; /* why sending stopped early, when it did */
    char *in;       /* bytes of the answer received */
    size_t in_len, in_cap;
} endpoint_t;

static double
now_ms(void)
{
    return (double)tp_mono_ns() / 1e6;
}

static void
ep_finish(endpoint_t *ep, double start, int status, char *error)
{
    if (ep->fd >= 0)
        close(ep->fd);
    ep->fd = -1;
    ep->state = EP_DONE;
    ep->res->status = status;
    ep->res->error = error;
    ep->res->elapsed_ms = now_ms() - start;
}

static void
ep_fail_errno(endpoint_t *ep, double start, const char *what, int err)
{
    char *msg;
    if (err == ENOENT)
        msg = tp_sprintf("control socket %s does not exist", ep->res->path);
    else if (err == ECONNREFUSED)
        msg = tp_sprintf("control socket %s: connection refused (stale socket: the daemon is not running)",
                         ep->res->path);
    else
        msg = tp_sprintf("%s %s: %s", what, ep->res->path, strerror(err));
    ep_finish(ep, start, -err, msg);
}

static void
ep_connect(endpoint_t *ep, double start)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    size_t len = strlen(ep->res->path);
    if (len >= sizeof(addr.sun_path)) {
        ep_finish(ep, start, -ENAMETOOLONG, tp_sprintf("control socket path %s is too long", ep->res->path));
        return;
    }
    memcpy(addr.sun_path, ep->res->path, len + 1);
    if (ep->fd < 0) {
        ep->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (ep->fd < 0) {
            ep_fail_errno(ep, start, "socket for", errno);
            return;
        }
    }
    if (connect(ep->fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
        ep->state = EP_SEND;
        return;
    }
    if (errno == EAGAIN)
        return; /* backlog full: stay in EP_CONNECT and retry */
    if (errno == EINPROGRESS) {
        ep->state = EP_SEND; /* completion shows as POLLOUT; errors surface on send */
        return;
    }
    ep_fail_errno(ep, start, "connect", errno);
}

static void ep_recv(endpoint_t *ep, double start);

static void
ep_send(endpoint_t *ep, double start, const char *line, size_t len)
{
    while (ep->sent < len) {
        ssize_t n = send(ep->fd, line + ep->sent, len - ep->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            if (errno != EPIPE && errno != ECONNRESET) {
                ep_fail_errno(ep, start, "send to", errno);
                return;
            }
            /* the daemon hung up early, maybe after explaining why (a refused uid): read that */
            ep->send_errno = errno;
            ep->state = EP_RECV;
            ep_recv(ep, start);
            return;
        }
        ep->sent += (size_t)n;
    }
    ep->state = EP_RECV;
    ep->res->sent = true;
    ep->res->sent_ms = now_ms() - start;
}

/* Parses the answer line in ep->in[0, len). */
static void
ep_parse(endpoint_t *ep, double start, size_t len)
{
    json_error_t jerr;
    json_t *answer = json_loadb(ep->in, len, 0, &jerr);
    if (answer == NULL) {
        ep_finish(ep, start, -EPROTO, tp_sprintf("malformed answer from %s: %s", ep->res->path, jerr.text));
        return;
    }
    if (!json_is_object(answer) || !json_is_boolean(json_object_get(answer, "ok"))) {
        json_decref(answer);
        ep_finish(ep, start, -EPROTO,
                  tp_sprintf("malformed answer from %s: not an object with a boolean \"ok\"", ep->res->path));
        return;
    }
    ep->res->response = answer;
    ep_finish(ep, start, 0, NULL);
}

static void
ep_recv(endpoint_t *ep, double start)
{
    for (;;) {
        if (ep->in_cap - ep->in_len < 4096) {
            ep->in_cap = ep->in_cap != 0 ? ep->in_cap * 2 : 8192;
            ep->in = tp_realloc(ep->in, ep->in_cap);
        }
        ssize_t n = recv(ep->fd, ep->in + ep->in_len, ep->in_cap - ep->in_len, 0);
        if (n < 0) {
            if ((errno == EAGAIN || errno == EINTR) && ep->send_errno == 0)
                return;
            ep_fail_errno(ep, start, ep->send_errno != 0 ? "send to" : "recv from",
                          ep->send_errno != 0 ? ep->send_errno : errno);
            return;
        }
        if (n == 0 && ep->send_errno != 0) {
            ep_fail_errno(ep, start, "send to", ep->send_errno);
            return;
        }
        if (n == 0) {
            ep_finish(ep, start, -EPROTO,
                      tp_sprintf("malformed answer from %s: connection closed before a complete line", ep->res->path));
            return;
        }
        char *nl = memchr(ep->in + ep->in_len, '\n', (size_t)n);
        ep->in_len += (size_t)n;
        if (nl != NULL) {
            ep_parse(ep, start, (size_t)(nl - ep->in));
            return;
        }
        if (ep->in_len > CONTROL_MAX_ANSWER) {
            ep_finish(ep, start, -EPROTO, tp_sprintf("malformed answer from %s: line too long", ep->res->path));
            return;
        }
    }
}

/* Drives every endpoint to EP_DONE, or fails the rest with -ETIMEDOUT at start + deadline_ms. */
static void
run_endpoints(endpoint_t *eps, size_t n, const char *line, size_t len, double start, int deadline_ms)
{
    struct pollfd *pfds = tp_calloc(n, sizeof(*pfds));
    endpoint_t **owners = tp_calloc(n, sizeof(*owners));
    for (size_t i = 0; i < n; i++)
        ep_connect(&eps[i], start);
    for (;;) {
        size_t npfd = 0;
        bool retrying = false;
        for (size_t i = 0; i < n; i++) {
            endpoint_t *ep = &eps[i];
            if (ep->state == EP_CONNECT)
                ep_connect(ep, start);
            if (ep->state == EP_SEND)
                ep_send(ep, start, line, len);
            if (ep->state == EP_CONNECT)
                retrying = true;
            if (ep->state != EP_SEND && ep->state != EP_RECV)
                continue;
            pfds[npfd] = (struct pollfd){ .fd = ep->fd, .events = ep->state == EP_SEND ? POLLOUT : POLLIN };
            owners[npfd++] = ep;
        }
        if (npfd == 0 && !retrying)
            break;
        double left = start + deadline_ms - now_ms();
        if (left <= 0)
            break;
        int timeout = (int)left + 1;
        if (retrying && timeout > CONTROL_CONNECT_RETRY_MS)
            timeout = CONTROL_CONNECT_RETRY_MS;
        int rv = poll(pfds, npfd, timeout);
        if (rv < 0 && errno != EINTR) {
            for (size_t i = 0; i < npfd; i++)
                ep_fail_errno(owners[i], start, "poll for", errno);
            break;
        }
        for (size_t i = 0; rv > 0 && i < npfd; i++) {
            if (pfds[i].revents == 0)
                continue;
            if (owners[i]->state == EP_SEND)
                ep_send(owners[i], start, line, len);
            else
                ep_recv(owners[i], start);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (eps[i].state != EP_DONE)
            ep_finish(&eps[i], start, -ETIMEDOUT,
                      tp_sprintf("control socket %s: no answer within %d ms", eps[i].res->path, deadline_ms));
        free(eps[i].in);
    }
    free(owners);
    free(pfds);
}

static char *
encode_request(json_t *request, size_t *len)
{
    char *text = json_dumps(request, JSON_COMPACT); /* compact output never contains a newline */
    if (text == NULL)
        return NULL;
    *len = strlen(text);
    text = tp_realloc(text, *len + 2);
    text[(*len)++] = '\n';
    text[*len] = '\0';
    return text;
}

int
tp_control_request(const char *path, json_t *request, int timeout_ms, json_t **response, char **err)
{
    double start = now_ms();
    *response = NULL;
    *err = NULL;
    size_t len;
    char *line = encode_request(request, &len);
    if (line == NULL) {
        *err = tp_sprintf("request to %s cannot be encoded as JSON", path);
        return -EINVAL;
    }
    tp_control_result_t res = { .path = (char *)path };
    endpoint_t ep = { .res = &res, .fd = -1 };
    run_endpoints(&ep, 1, line, len, start, timeout_ms);
    free(line);
    *response = res.response;
    *err = res.error;
    return res.status;
}

static int
compare_results(const void *a, const void *b)
{
    return strcmp(((const tp_control_result_t *)a)->name, ((const tp_control_result_t *)b)->name);
}

/* Lists the *.sock entries of dir into *out (sorted by name); returns their number. */
static int
list_sockets(const char *dir, tp_control_result_t **out, char **err)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        int rv = -errno;
        *err = tp_sprintf("opendir %s: %s", dir, strerror(errno));
        return rv;
    }
    tp_control_result_t *results = NULL;
    size_t n = 0, cap = 0;
    static const char suffix[] = ".sock";
    const size_t suffix_len = sizeof(suffix) - 1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len <= suffix_len || strcmp(de->d_name + len - suffix_len, suffix) != 0)
            continue;
        if (n == cap) {
            cap = cap != 0 ? cap * 2 : 8;
            results = tp_realloc(results, cap * sizeof(*results));
        }
        results[n++] = (tp_control_result_t){
            .name = tp_strndup(de->d_name, len - suffix_len),
            .path = tp_sprintf("%s/%s", dir, de->d_name),
        };
    }
    closedir(d);
    if (n > 0)
        qsort(results, n, sizeof(*results), compare_results);
    *out = results;
    return (int)n;
}

int
tp_control_broadcast(const char *dir, json_t *request, int deadline_ms, tp_control_result_t **results, char **err)
{
    double start = now_ms();
    *results = NULL;
    *err = NULL;
    size_t len;
    char *line = encode_request(request, &len);
    if (line == NULL) {
        *err = tp_sprintf("request to %s cannot be encoded as JSON", dir);
        return -EINVAL;
    }
    tp_control_result_t *res = NULL;
    int n = list_sockets(dir, &res, err);
    if (n <= 0) {
        free(line);
        return n;
    }
    endpoint_t *eps = tp_calloc((size_t)n, sizeof(*eps));
    for (int i = 0; i < n; i++)
        eps[i] = (endpoint_t){ .res = &res[i], .fd = -1 };
    run_endpoints(eps, (size_t)n, line, len, start, deadline_ms);
    free(eps);
    free(line);
    *results = res;
    return n;
}

void
tp_control_results_free(tp_control_result_t *results, size_t n)
{
    if (results == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(results[i].name);
        free(results[i].path);
        free(results[i].error);
        json_decref(results[i].response);
    }
    free(results);
}
