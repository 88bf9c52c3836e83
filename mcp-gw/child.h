/*
 * child.h — a supervised MCP server process speaking the MCP stdio transport, on one libuv loop.
 *
 * The child reads newline-delimited JSON-RPC messages on stdin and writes them on stdout, one
 * message per line (UTF-8, no embedded newline). What it writes on stderr goes to the gateway log
 * line by line, tagged with the server's name. The supervisor spawns the child, restarts it with
 * exponential backoff whenever it exits, and on request stops it: stdin EOF, then SIGTERM, then
 * SIGKILL.
 *
 * Each child runs in its own session (setsid), so it leads a process group, and every signal goes
 * to the whole group: helpers it started (`npx foo` runs node under npm) end with it. A child is
 * not over until its leader has been reaped, its stdout and stderr have reached EOF and no process
 * of its group is still running (zombies waiting for their reaper do not count). A group left
 * behind by a leader that exited on its own is sent SIGTERM at once, then SIGKILL after
 * stop_grace_ms. If the gateway dies without stopping its children, they see EOF on stdin, on
 * which MCP servers exit.
 *
 * Threading: every function is called on the thread that runs the loop given to mcp_stdio_new.
 * Callbacks run on that loop; they may call any function here except mcp_stdio_free, which is
 * allowed from on_state(STOPPED) on.
 *
 * Process-wide requirements: SIGPIPE is ignored (the daemons do so at start-up), or a write to a
 * dead child's stdin would kill the gateway. Nothing else in the process may reap children it did
 * not spawn (waitpid(-1, …), SIGCHLD set to SIG_IGN, PR_SET_CHILD_SUBREAPER): libuv reaps each
 * child by pid from its SIGCHLD handler, and exits would go unnoticed.
 */
#ifndef MCP_CHILD_H
#define MCP_CHILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* Defaults for the options left at 0. */
#define MCP_STDIO_DEFAULT_RESTART_MIN_MS 250                /* first restart delay */
#define MCP_STDIO_DEFAULT_RESTART_MAX_MS 30000              /* the backoff doubles up to this */
#define MCP_STDIO_DEFAULT_STABLE_MS      30000              /* a child that ran this long resets the backoff */
#define MCP_STDIO_DEFAULT_MAX_MESSAGE    (8u * 1024 * 1024) /* longest stdout line delivered */
#define MCP_STDIO_DEFAULT_MAX_QUEUE      (16u * 1024 * 1024)
#define MCP_STDIO_DEFAULT_STOP_GRACE_MS  3000
#define MCP_STDIO_STDERR_LINE_MAX        4096 /* a longer stderr line is logged truncated */

typedef struct mcp_stdio mcp_stdio_t;

typedef struct mcp_stdio_options {
    const char *name; /* the server's name, for logs; required */
    /* A path (a relative one starts from the child's cwd), or a bare name looked up in the PATH of
     * `env` or, when `env` has none, in the gateway's PATH (else /usr/local/bin:/usr/bin:/bin).
     * Resolved to an absolute path before each spawn. Required. */
    const char *command;
    const char *const *args; /* argv[1..]; argv[0] is `command` as given */
    size_t num_args;
    const char *const *env; /* "NAME=VALUE" entries: the child's whole environment, nothing inherited */
    size_t num_env;
    const char *cwd;          /* the child's working directory; NULL: the gateway's */
    uint64_t restart_min_ms;  /* delay before the first restart after an exit (0: default) */
    uint64_t restart_max_ms;  /* the delay doubles per exit up to this (0: default; raised to min if below) */
    uint64_t stable_ms;       /* a child that ran this long restarts after restart_min_ms again (0: default) */
    size_t max_message_bytes; /* a longer stdout line is dropped and reported through on_error (0: default) */
    size_t max_queue_bytes;   /* bytes sent, not yet taken by the child's stdin; see mcp_stdio_send (0: default) */
    uint64_t stop_grace_ms;   /* each step of a stop (stdin EOF, SIGTERM, SIGKILL) waits this long (0: default) */
} mcp_stdio_options_t;

typedef enum mcp_stdio_state {
    MCP_STDIO_IDLE,     /* created, never started */
    MCP_STDIO_RUNNING,  /* a child is running (it may just have exited, not yet reported) */
    MCP_STDIO_EXITED,   /* the last child is over and a restart is scheduled */
    MCP_STDIO_STOPPING, /* mcp_stdio_stop was called; STOPPED follows */
    MCP_STDIO_STOPPED,  /* final: the child is gone and every handle is closed */
} mcp_stdio_state_t;

typedef struct mcp_stdio_callbacks {
    /* One stdout line without its newline (nor a trailing '\r'); empty lines are skipped. `line` is
     * valid during the call only and is not NUL-terminated. Lines of a child arrive between its
     * RUNNING and its EXITED/STOPPED, including while a stop is under way. Required. */
    void (*on_message)(mcp_stdio_t *p, void *data, const char *line, size_t len);
    /* RUNNING: a child was spawned (called from inside mcp_stdio_start or the restart timer).
     * EXITED: the child is over and a restart is scheduled; `why` says how it ended ("exited with
     * status 1", "killed by signal 9", "spawn foo: not found in PATH (/usr/bin:/bin)").
     * STOPPED: after mcp_stdio_stop, once the child is over and all handles are closed; `why` is
     * how the last child ended, or "stopped" when none was running. Never called from inside
     * mcp_stdio_stop. `why` is valid during the call. Optional. */
    void (*on_state)(mcp_stdio_t *p, void *data, mcp_stdio_state_t state, const char *why);
    /* A problem that does not end the child, e.g. an oversize stdout line was dropped. Optional. */
    void (*on_error)(mcp_stdio_t *p, void *data, const char *what);
} mcp_stdio_callbacks_t;

/* Creates a supervisor; copies opts and cb (strings and arrays included) and does not start it.
 * Returns NULL and *err (malloc'd) when the options are invalid: no name or command, a NULL
 * argument, an env entry without '=', no on_message. */
mcp_stdio_t *mcp_stdio_new(uv_loop_t *loop, const mcp_stdio_options_t *opts, const mcp_stdio_callbacks_t *cb,
                           void *data, char **err);

/* Spawns the child now, cancelling a scheduled restart. Returns 0 when the child runs (on_state
 * RUNNING has been called) or already ran. When the old child has exited but is not over yet, it
 * returns 0 and the next one starts without backoff once it is. Otherwise a negative errno:
 * -ENOENT / -EACCES / … when the spawn failed, in which case on_state(EXITED, why) follows from
 * the loop and a restart is scheduled, or -ECANCELED after mcp_stdio_stop. */
int mcp_stdio_start(mcp_stdio_t *p);

/* Queues one message for the child's stdin: copies json and appends '\n'. Returns 0, -EINVAL when
 * len is 0 or json contains '\n', -EPIPE when no child is running (or its stdin has failed, or a
 * stop has begun), -ENOBUFS when bytes are already queued and this message would take the queue
 * past max_queue_bytes (a message of any size is accepted into an empty queue). A message
 * accepted here is lost if the child exits before reading it; the caller fails requests of an
 * earlier generation. */
int mcp_stdio_send(mcp_stdio_t *p, const char *json, size_t len);

/* True while a child runs and mcp_stdio_send can accept messages. */
bool mcp_stdio_running(const mcp_stdio_t *p);

/* The last state reported through on_state, or IDLE / STOPPING. */
mcp_stdio_state_t mcp_stdio_state(const mcp_stdio_t *p);

/* "idle", "running", … */
const char *mcp_stdio_state_name(mcp_stdio_state_t state);

/* The number of children spawned so far: +1 per successful spawn, so a caller can fail the
 * requests it sent to an earlier one. */
uint64_t mcp_stdio_generation(const mcp_stdio_t *p);

/* The number of spawns made by the restart timer (successful or not). */
unsigned mcp_stdio_restarts(const mcp_stdio_t *p);

/* The child's pid (its process group id too) until it has been reaped; 0 otherwise. */
int mcp_stdio_pid(const mcp_stdio_t *p);

/* The server's name (owned by p). */
const char *mcp_stdio_name(const mcp_stdio_t *p);

/* Stops for good: no more restarts; closes the child's stdin (messages it has not taken yet are
 * discarded), waits up to stop_grace_ms for it to exit, sends SIGTERM to its process group, waits
 * again, sends SIGKILL, and waits once more for the pipes to reach EOF. Lines the child writes
 * meanwhile are still delivered. on_state(STOPPED) follows from the loop once the child is over and
 * all handles are closed; mcp_stdio_free is allowed from then on. Calling it again does nothing. */
void mcp_stdio_stop(mcp_stdio_t *p);

/* Frees p. Only before the first mcp_stdio_start / mcp_stdio_stop, or after on_state(STOPPED). */
void mcp_stdio_free(mcp_stdio_t *p);

/* For process exit when the loop no longer runs: sends SIGKILL to the child's process group and
 * reaps the child, synchronously (closing the process handle, so that libuv forgets a pid that may
 * be reused), then does what mcp_stdio_stop does. No callback runs from inside; if the loop runs
 * again, on_state(STOPPED) follows quickly and p can be freed. */
void mcp_stdio_kill_now(mcp_stdio_t *p);

#endif
