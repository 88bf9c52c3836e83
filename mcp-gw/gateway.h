/*
 * gateway.h — the state of mcp-gw and the contracts between its modules.
 *
 * mcp-gw serves MCP (Streamable HTTP) to clients and talks MCP to the servers the operator
 * configured. Everything MCP happens on one event loop, the server's only worker: client
 * sessions, their SSE streams, the links to upstream servers and the supervised stdio children.
 * The main thread only loads state snapshots and answers control commands, and reaches the
 * worker through tp_server_each_worker. Nothing here takes a lock.
 *
 * Modules:
 *   endpoint.c  the HTTP side: POST/GET/DELETE on the MCP path, headers, Origin, authentication
 *   session.c   client sessions (ids, principal, idle expiry) and their SSE streams
 *   broker.c    what each JSON-RPC method does: local answers, aggregation, routing, relay
 *   servers.c   upstream servers: links (HTTP per session, one shared stdio child), handshakes,
 *               request id remapping, the tool/prompt/resource catalogs, pins and schemas
 *   audit.c     the audit and metrics of tool calls, reads and prompt gets
 *
 * Attribution. An HTTP upstream gets one upstream session per client session, so whatever it
 * sends belongs to exactly one client. A stdio server is one child shared by every session, and
 * what it sends unprompted carries no session: progress is routed by its token, resources/updated
 * goes to every session subscribed to the uri, and a log message or a server-to-client request
 * goes to the one session with calls in flight to it; when several have, the message is dropped
 * (counted in mcp_messages_dropped_total) and the request is answered with an error rather than
 * guessed. Per-session attribution of everything needs an HTTP upstream.
 */
#ifndef MCP_GATEWAY_H
#define MCP_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "daemon.h"
#include "gate.h"
#include "metrics.h"
#include "server.h"

#define MCP_PROTOCOL_LATEST "2025-11-25"
#define MCP_SESSION_ID_LEN  43  /* 32 random bytes, base64url without padding */
#define MCP_LIST_PAGE_SIZE  200 /* items per page of an aggregated list */

/* JSON-RPC and MCP error codes. */
#define JSONRPC_PARSE_ERROR        (-32700)
#define JSONRPC_INVALID_REQUEST    (-32600)
#define JSONRPC_METHOD_NOT_FOUND   (-32601)
#define JSONRPC_INVALID_PARAMS     (-32602)
#define JSONRPC_INTERNAL_ERROR     (-32603)
#define MCP_ERR_RESOURCE_NOT_FOUND (-32002)
/* The gateway's own, in the implementation-defined server error range. */
#define MCP_ERR_FORBIDDEN    (-32010) /* policy refuses this caller this tool, resource or prompt */
#define MCP_ERR_RATE_LIMITED (-32011) /* data.retry_after_s says when to retry */
#define MCP_ERR_UPSTREAM     (-32012) /* the upstream server is down, failed or timed out */
#define MCP_ERR_QUARANTINED  (-32013) /* the tool's definition changed and awaits an operator */

typedef struct mcp_gateway mcp_gateway_t;
typedef struct mcp_session mcp_session_t;
typedef struct mcp_stream mcp_stream_t;
typedef struct mcp_server mcp_server_t;
typedef struct mcp_link mcp_link_t;
typedef struct mcp_call mcp_call_t;

/* ---- the gateway ---- */

typedef struct mcp_metrics {
    tp_metric_t *calls;         /* mcp_tool_calls_total{server,tool,outcome} */
    tp_metric_t *call_seconds;  /* mcp_upstream_request_duration_seconds{server,method} */
    tp_metric_t *rejections;    /* mcp_validation_rejections_total{kind} */
    tp_metric_t *quarantined;   /* mcp_tools_quarantined{server} */
    tp_metric_t *server_up;     /* mcp_upstream_up{server} */
    tp_metric_t *restarts;      /* mcp_upstream_restarts_total{server} */
    tp_metric_t *sessions;      /* mcp_sessions_active */
    tp_metric_t *session_total; /* mcp_sessions_total{outcome} */
    tp_metric_t *messages;      /* mcp_messages_total{direction,kind} */
    tp_metric_t *dropped;       /* mcp_messages_dropped_total{reason}: upstream messages no client got */
} mcp_metrics_t;

struct mcp_gateway {
    tp_daemon_t *daemon;
    const tp_mcp_gw_config_t *cfg;
    pol_gate_t *gate;
    tp_store_writer_t *writer;
    mcp_metrics_t metrics;
    mcp_server_t **servers; /* num_servers, in configuration order */
    size_t num_servers;
    /* The worker's side, set when the worker first runs gateway code (mcp_gateway_attach). */
    h2o_context_t *ctx;
    uv_loop_t *loop;
    struct mcp_session_table *sessions;
    uint64_t next_call_id;   /* ids of requests the gateway sends upstream */
    uint64_t next_client_id; /* ids of server-to-client requests the gateway forwards */
    uint64_t next_stream_id;
    struct mcp_pins *pins;     /* the pins the worker sees (swapped in from the main thread) */
    json_t *pin_overlay;       /* pins and drifts this process recorded since (see servers.c) */
    bool draining;             /* shutting down: no new sessions, no new standing streams */
    unsigned changed;          /* list kinds changed since the last notification (1 tools, 2 prompts, 4 resources) */
    uv_timer_t *changed_timer; /* debounces list_changed notifications */
};

/* Binds the gateway to the worker thread that calls it (idempotent). */
void mcp_gateway_attach(mcp_gateway_t *gw, tp_worker_t *w);

/* ---- streams: where messages to a client go ---- */

/* A stream carries JSON-RPC messages to the client: the answer to one POST (JSON when the
 * answer is the only message, SSE otherwise), or the session's standing GET stream. Events
 * get ids "<stream>-<seq>" and the last stream_buffer_events of them are kept, so a client
 * whose connection dropped can resume with GET and Last-Event-ID (a session keeps the answers of
 * a few such streams nobody came back for, and drops older ones: stream.c). */
struct mcp_stream {
    mcp_session_t *session;
    uint64_t id;
    bool standing; /* the GET stream */
    bool finished; /* the final message was queued: the sink ends once it is written */
    uint64_t next_seq;
    unsigned sinks;                              /* sinks attached so far: the first is the request that opened it */
    struct mcp_sink *sink;                       /* the HTTP response writing it now, or NULL when nobody listens */
    struct mcp_event *events_head, *events_tail; /* retained events, oldest first */
    size_t num_events;
    mcp_stream_t *next; /* in the session's list */
};

/* Opens a stream on the session. */
mcp_stream_t *mcp_stream_new(mcp_session_t *s, bool standing);
/* Attaches an HTTP request as the stream's sink and writes the SSE head; the events after
 * `after_seq` are replayed first (0: all retained ones, for a new stream none exist). `v` is the
 * request's verdict, in its pool like the sink: both are forgotten when the request goes. */
void mcp_stream_attach(mcp_stream_t *st, tp_request_t *r, pol_verdict_t *v, uint64_t after_seq, bool prime);
/* Queues one message (borrowed) to the stream. `final` ends the stream after it; a final message
 * that cannot be encoded (NULL, say) goes out as a JSON-RPC internal error instead, so the request
 * is always answered. */
void mcp_stream_send(mcp_stream_t *st, json_t *msg, bool final);
/* Ends the stream's sink (the connection closes) without more messages; the stream stays. */
void mcp_stream_close(mcp_stream_t *st);
/* Ends a POST stream without a final message (its request was cancelled): the sink ends once what
 * is queued is written, and the stream is then freed; with no sink it is freed now. */
void mcp_stream_finish(mcp_stream_t *st);
/* The request writing the stream now, or NULL when nobody listens (the client went away). */
tp_request_t *mcp_stream_request(const mcp_stream_t *st);
/* The verdict of the request writing the stream now, or NULL when nobody listens. */
pol_verdict_t *mcp_stream_verdict(const mcp_stream_t *st);
/* The request that opened the stream while it still writes it; NULL once it went away or a
 * resumption (GET with Last-Event-ID) took its place. */
tp_request_t *mcp_stream_opener(const mcp_stream_t *st);
/* Frees a stream (detaching any sink). */
void mcp_stream_free(mcp_stream_t *st);
/* Finds a stream of the session by the stream part of an event id; NULL when unknown. */
mcp_stream_t *mcp_stream_find(mcp_session_t *s, uint64_t id);

/* ---- sessions ---- */

typedef enum mcp_link_state {
    MCP_LINK_NONE = 0,     /* not created yet */
    MCP_LINK_INITIALIZING, /* initialize sent */
    MCP_LINK_READY,
    MCP_LINK_FAILED, /* the handshake failed; retried at the next use */
} mcp_link_state_t;

struct mcp_session {
    mcp_gateway_t *gw;
    char id[MCP_SESSION_ID_LEN + 1];
    char *principal; /* the principal that opened it; others get 404 */
    char *team;      /* its team then (NULL: none), for kill switches on teams */
    char *protocol;  /* negotiated protocol version */
    json_t *client_capabilities;
    json_t *client_info;
    char *virtual_name; /* the virtual server it was opened on, or NULL for the whole catalog */
    char log_level[16]; /* the level set with logging/setLevel ("" : none set) */
    bool initialized;   /* notifications/initialized arrived */
    bool ended;
    uint64_t last_seen_ms;
    mcp_stream_t *streams; /* the standing stream (if any) and the open POST streams */
    mcp_stream_t *standing;
    mcp_link_t **links;      /* per server (gw->num_servers): this session's HTTP links, lazily */
    mcp_call_t *calls;       /* requests in flight for this session */
    json_t *subscriptions;   /* uri -> index of the server subscribed to, for resources/updated */
    json_t *server_requests; /* "gw-sN" -> {"server": index, "id": upstream's id, "call": up_id of the call it
                                came with (absent: none)}: requests relayed to the client, oldest first */
    unsigned refs;           /* holds by work that outlives a callback; freed at 0 once ended */
    mcp_session_t *next;     /* in its bucket */
};

/* Keeps an ended session's memory alive (not its work) until mcp_session_unref. */
void mcp_session_ref(mcp_session_t *s);
void mcp_session_unref(mcp_session_t *s);

/* Creates a session for `principal` (of `team`, or NULL) with a fresh random id. NULL when
 * max_sessions is reached. */
mcp_session_t *mcp_session_new(mcp_gateway_t *gw, const char *principal, const char *team);
/* Finds a live session by id; NULL when unknown or ended. Refreshes its idle time. */
mcp_session_t *mcp_session_find(mcp_gateway_t *gw, const char *id, size_t len);
/* Ends a session: cancels its calls upstream (their POST streams end), closes its streams and
 * links, forgets it. Its memory stays while something holds a reference (mcp_session_ref). */
void mcp_session_end(mcp_session_t *s, const char *why);
/* Calls fn on every live session. fn may end the session it is given. */
void mcp_session_each(mcp_gateway_t *gw, void (*fn)(mcp_session_t *s, void *arg), void *arg);
size_t mcp_session_count(const mcp_gateway_t *gw);
/* Starts the idle sweep on the worker's loop. A session is idle when it has no call in flight,
 * no stream anybody listens to (an open GET stream keeps it) and no request for that long. */
void mcp_sessions_start(mcp_gateway_t *gw);

/* ---- calls: a request in flight upstream ---- */

/* The gateway's own requests learn how they ended: the response, or NULL when the call was
 * cancelled (its session ended) and no response will come. */
typedef void (*mcp_call_done_fn)(mcp_call_t *c, json_t *response);

typedef enum mcp_call_state {
    MCP_CALL_NEW = 0, /* made, or waiting on a timer to report that it could not be sent */
    MCP_CALL_QUEUED,  /* in its link's queue, waiting for the handshake */
    MCP_CALL_SENT,    /* in flight: on its server's list of calls, an answer is expected */
} mcp_call_state_t;

struct mcp_call {
    mcp_gateway_t *gw;
    mcp_server_t *server;
    mcp_link_t *link;       /* the link it went on */
    uint64_t up_id;         /* the id upstream sees */
    json_t *request;        /* the message as sent upstream (kept for a replay after session loss) */
    mcp_session_t *session; /* NULL for the gateway's own requests (handshakes, list fetches) */
    json_t *client_id;      /* the client's id (new reference), for forwarded requests */
    mcp_stream_t *stream;   /* where the answer goes */
    char *progress_token;   /* the token the upstream sees, when the client asked for progress */
    json_t *client_token;   /* the client's own progress token */
    mcp_call_done_fn done;  /* the gateway's own requests: called with the response (NULL: failed) */
    void *done_data;
    const char *method; /* static: the method if it is a known one, else "other" */
    char *target;       /* "server/tool" etc. for audit and metrics */
    json_t *audit;      /* audit detail to complete, or NULL */
    uint64_t start_ns;
    uv_timer_t *timer; /* the deadline (stdio; HTTP links time out themselves) */
    bool replayed;
    mcp_call_state_t state;
    struct mcp_call_queue *queue;                /* QUEUED: the queue it waits in */
    mcp_call_t *next_in_queue, *prev_in_queue;   /* QUEUED */
    mcp_call_t *next_in_server, *prev_in_server; /* SENT */
    mcp_call_t *next_in_session, *prev_in_session;
};

/* ---- upstream servers ---- */

/* Prepares a request (borrowed; copied, and its id replaced) to server `srv` for `session`
 * (NULL: the gateway's own request; for a stdio server the session only attributes the call).
 * The caller fills in what the answer needs (done and done_data for the gateway's own requests,
 * client_id and stream for forwarded ones) and then calls mcp_call_start. */
mcp_call_t *mcp_call_new(mcp_server_t *srv, mcp_session_t *session, const json_t *request, const char *method);
/* Sends the call, starting and initialising the server's link first when needed. The answer
 * arrives through done, or on the stream with the client's id restored; a failure arrives the
 * same way as a JSON-RPC error, never before this returns. */
void mcp_call_start(mcp_call_t *c);
/* Sends a notification or a response (borrowed) to the server on the session's link. */
void mcp_server_notify(mcp_server_t *srv, mcp_session_t *session, json_t *msg);
/* Stops waiting for a call and frees it: sends notifications/cancelled when it was sent, takes
 * it out of its link's queue when it was not, calls done(c, NULL) for the gateway's own requests
 * and ends the client's stream of a forwarded one (no answer follows a cancellation). */
void mcp_call_cancel(mcp_call_t *c, const char *reason);
/* Finishes a call with a response (borrowed) and frees it. */
void mcp_call_finish(mcp_call_t *c, json_t *response);
/* Releases everything a session holds on servers (its calls, its subscriptions at shared
 * children, its links). */
void mcp_servers_session_ended(mcp_gateway_t *gw, mcp_session_t *s, const char *why);
/* Records that session s subscribes to uri on srv (the broker then forwards the request). */
void mcp_server_subscribe(mcp_server_t *srv, mcp_session_t *s, const char *uri);
/* Records that session s unsubscribes from uri on srv. Returns whether the request must go
 * upstream: always for an HTTP server (the upstream session is this client's alone); for a
 * shared stdio child only when no other session stays subscribed, since the child holds one
 * subscription for all of them. When false, the broker answers the client itself. */
bool mcp_server_unsubscribe(mcp_server_t *srv, mcp_session_t *s, const char *uri);

/* Forgets a server's cached list of `kind` (it changed upstream). */
void mcp_server_invalidate(mcp_server_t *srv, const char *kind);
/* Publishes every loaded tool list again (after the pins changed). */
void mcp_servers_republish(mcp_gateway_t *gw);

/* Creates the servers from the configuration (main thread). */
int mcp_servers_create(mcp_gateway_t *gw, char **err);
/* Starts the servers with start: boot (worker thread). */
void mcp_servers_boot(mcp_gateway_t *gw);
/* Stops every stdio child gracefully (worker thread, at drain). */
void mcp_servers_stop(mcp_gateway_t *gw);
/* The pid of server i's child, 0 when none runs (main thread, after the worker stopped). */
int mcp_servers_child_pid(mcp_gateway_t *gw, size_t i);

const char *mcp_server_name(const mcp_server_t *srv);
size_t mcp_server_index(const mcp_server_t *srv);
mcp_gateway_t *mcp_server_gateway(const mcp_server_t *srv);
/* The only session with a call in flight to srv, or NULL when none or several. For a shared
 * stdio child this is the best attribution there is: see the note at the top. */
mcp_session_t *mcp_server_sole_caller(const mcp_server_t *srv);
/* The call whose progress token upstream is `token`, or NULL. */
mcp_call_t *mcp_server_call_by_token(const mcp_server_t *srv, const char *token);
/* Sends a request of the gateway's own on the session's link, when it is ready, and ignores the
 * answer (params borrowed). */
void mcp_server_request_quiet(mcp_server_t *srv, mcp_session_t *session, const char *method, const json_t *params);
bool mcp_server_available(const mcp_server_t *srv);

/* A catalog entry: one tool (or prompt) of one server as published. */
typedef struct mcp_tool {
    mcp_server_t *server;
    char *public_name;         /* with the server's prefix */
    const char *name;          /* the upstream's name (inside def) */
    json_t *def;               /* the published definition (name rewritten) */
    struct mcp_schema *schema; /* compiled inputSchema, or NULL when none/unusable */
    char *resource;            /* "server/tool": the policy resource */
} mcp_tool_t;

/* Makes sure every server's catalogs are loaded (fetching those that are not, through the
 * session's links), then calls ready(session, data), always exactly once, even when the session
 * ended meanwhile (ready must check s->ended). Servers that fail are left out. */
void mcp_catalog_ensure(mcp_gateway_t *gw, mcp_session_t *s, const char *kind,
                        void (*ready)(mcp_session_t *s, void *data), void *data);
/* True when every server that offers lists of `kind` has its catalog loaded. */
bool mcp_catalog_loaded(mcp_gateway_t *gw, mcp_session_t *s, const char *kind);
/* The server's cached list of `kind` ("tools", "prompts", "resources", "resourceTemplates"),
 * or NULL when not loaded. */
const json_t *mcp_server_catalog(const mcp_server_t *srv, const char *kind);
/* The tools of a server as published (count in *n); quarantined tools are left out. */
const mcp_tool_t *mcp_server_tools(const mcp_server_t *srv, size_t *n);
const mcp_tool_t *mcp_server_prompts(const mcp_server_t *srv, size_t *n);
/* Finds a published tool or prompt by public name across servers. *quarantined is set when a
 * tool of that name exists but is quarantined. */
const mcp_tool_t *mcp_find_tool(mcp_gateway_t *gw, const char *public_name, bool *quarantined);
const mcp_tool_t *mcp_find_prompt(mcp_gateway_t *gw, const char *public_name);
/* The server that listed resource `uri` (or a template matching it), or NULL. */
mcp_server_t *mcp_find_resource_server(mcp_gateway_t *gw, const char *uri);

/* ---- the endpoint ---- */

/* Registers the MCP endpoint and the protected-resource metadata on the daemon's server. */
void mcp_endpoint_register(mcp_gateway_t *gw);
/* The plane's error envelope: a JSON-RPC error object with id null. */
void mcp_error_envelope(tp_request_t *r, int status, const char *code, const char *message);
bool mcp_protocol_supported(const char *v, size_t len);

/* ---- the broker ---- */

/* Handles initialize: negotiates the version, opens a session, answers with its id. */
void mcp_broker_initialize(mcp_gateway_t *gw, tp_request_t *r, json_t *msg, const pol_verdict_t *v,
                           const char *virtual_name);
/* Handles one message a client POSTed to session s. Answers through the request: 202 for
 * notifications and responses, JSON or SSE for requests. v is the request's verdict, in its pool
 * (the policy check of a routed request writes its decision there). */
void mcp_broker_handle(mcp_gateway_t *gw, tp_request_t *r, mcp_session_t *s, json_t *msg, pol_verdict_t *v);
/* A message from an upstream that is not the answer to a call: a notification or a
 * server-to-client request. `call` is the call whose stream it came on, or NULL. `session` is
 * the session the link belongs to (HTTP), or NULL (a shared stdio child). */
void mcp_broker_from_server(mcp_server_t *srv, mcp_session_t *session, mcp_call_t *call, json_t *msg);
/* A server's lists changed: tell the sessions that use it (debounced). */
void mcp_broker_list_changed(mcp_gateway_t *gw, mcp_server_t *srv, const char *kind);
/* A forwarded call ended: forgets the server-to-client requests that came with it. */
void mcp_broker_call_ended(mcp_call_t *c);

/* ---- JSON-RPC helpers ---- */

/* A response with `result` (stolen). NULL when result is NULL. */
json_t *mcp_jsonrpc_result(const json_t *id, json_t *result);
/* An error response (data stolen, may be NULL). A message that is not UTF-8 is replaced by a fixed
 * one, so the error is always built. */
json_t *mcp_jsonrpc_error(const json_t *id, int code, const char *message, json_t *data);
/* The length of the longest prefix of s, at most max bytes, that does not split a UTF-8
 * character: for quoting client or upstream text with "%.*s" into JSON strings. */
int mcp_utf8_cut(const char *s, size_t max);

/* ---- audit and metrics ---- */

void mcp_metrics_init(mcp_gateway_t *gw);
/* Records the audit row and metrics of a finished tool call, read or prompt get. target
 * ("server/tool", or what the client named) is audited as given: bound it; the metric labels it
 * with the server only when that names a configured one. detail is stolen. */
void mcp_audit_call(mcp_gateway_t *gw, const char *principal, const char *method, const char *target,
                    const char *outcome, double latency_ms, json_t *detail);
/* The shape (types, no values) and SHA-256 of arguments, for the audit. New reference. */
json_t *mcp_audit_arguments(const json_t *arguments, bool raw);

#endif
