/*
 * control.h — the control socket: line-delimited JSON over a Unix stream socket.
 *
 * Each daemon listens on <control_dir>/<daemon>.sock (mode 0660). A peer whose uid (SO_PEERCRED)
 * is neither 0 nor the daemon's own uid is refused: it gets one error line and is disconnected.
 *
 * Framing: a request is one JSON object on one line, {"cmd":"status", "id":..., ...args}; the
 * answer is one line, {"ok":true,"result":{...}} or {"ok":false,"error":"message"}, echoing
 * "id" when the request had one. A connection may carry many requests; answers come in request
 * order. Lines longer than TP_CONTROL_MAX_LINE are refused and the connection is closed.
 */
#ifndef TP_CONTROL_H
#define TP_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <uv.h>

#define TP_CONTROL_MAX_LINE (1024 * 1024)

/* ---- server (runs on one libuv loop: the daemon's main thread) ---- */

typedef struct tp_control_server tp_control_server_t;
typedef struct tp_control_call tp_control_call_t;

/* A command handler. `args` is the request object (borrowed; it includes "cmd"). The handler
 * must answer exactly once, now or later on the same loop, with tp_control_reply or
 * tp_control_fail. If the peer disconnected meanwhile, the answer is discarded. */
typedef void (*tp_control_handler_t)(tp_control_call_t *call, json_t *args, void *data);

/* Creates the socket <dir>/<name>.sock and starts listening on `loop`. A stale socket file
 * (nobody accepts on it) is replaced; a live one (another daemon with the same name) is an
 * error (-EADDRINUSE). The directory is created (mode 0770) when missing. Returns 0 and *out,
 * or a negative code and *err (malloc'd). */
int tp_control_listen(uv_loop_t *loop, const char *dir, const char *name, tp_control_server_t **out, char **err);

/* Registers a handler for `cmd` (copied). A later registration for the same cmd replaces it. */
void tp_control_register(tp_control_server_t *srv, const char *cmd, tp_control_handler_t handler, void *data);

/* Answers a call with {"ok":true,"result":result}. Takes ownership of result (may be NULL for {}). */
void tp_control_reply(tp_control_call_t *call, json_t *result);

/* Answers a call with {"ok":false,"error":message}. */
void tp_control_fail(tp_control_call_t *call, const char *message);

/* The peer's credentials, for audit records. */
void tp_control_call_peer(const tp_control_call_t *call, int *pid, int *uid);

/* Stops listening, closes every connection, unlinks the socket file, and frees the server once
 * its handles are closed (the loop must run for that). Pending calls are answered by nobody. */
void tp_control_close(tp_control_server_t *srv);

/* The socket path (owned by the server). */
const char *tp_control_path(const tp_control_server_t *srv);

/* ---- client (blocking, for gwctl and tests) ---- */

/* Sends one request to the socket at `path` and waits for its answer until timeout_ms.
 * Returns 0 and *response (a new reference: the whole answer object), or a negative code
 * (-ECONNREFUSED, -ENOENT, -ETIMEDOUT, -EPROTO for a malformed answer) and *err (malloc'd). */
int tp_control_request(const char *path, json_t *request, int timeout_ms, json_t **response, char **err);

typedef struct tp_control_result {
    char *name;        /* daemon name: the socket file name without ".sock" */
    char *path;        /* socket path */
    int status;        /* 0, or a negative code as for tp_control_request */
    char *error;       /* message when status != 0 */
    json_t *response;  /* the answer object when status == 0 */
    double elapsed_ms; /* from the start of the broadcast to the answer (or failure) */
    bool sent;         /* the whole request line was written to the daemon's socket */
    double sent_ms;    /* when it was, from the start of the broadcast (0 when not sent) */
} tp_control_result_t;

/* Sends `request` to every *.sock in `dir` at once and collects the answers until deadline_ms
 * has passed since the call. Results are sorted by name. Returns the number of sockets found
 * (>= 0) and *results (free with tp_control_results_free), or a negative code with *err when
 * the directory cannot be read. */
int tp_control_broadcast(const char *dir, json_t *request, int deadline_ms, tp_control_result_t **results, char **err);

void tp_control_results_free(tp_control_result_t *results, size_t n);

#endif
