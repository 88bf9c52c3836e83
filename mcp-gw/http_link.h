/*
 * http_link.h — mcp-gw's pipe to one MCP server over the Streamable HTTP transport (MCP
 * 2025-11-25, and the 2025-06-18 and 2025-03-26 servers that speak the same transport), as an
 * MCP client.
 *
 * The broker sees every upstream as a duplex pipe of JSON-RPC messages: it sends a message with
 * mcp_http_link_send and receives the server's messages through on_message. This module turns
 * that into HTTP: every message we send is one POST to the MCP endpoint, answered with one JSON
 * message, with an SSE stream of messages that ends with the response, or with 202; the
 * optional GET stream (mcp_http_link_listen) carries what the server says unprompted.
 *
 * Threads: a server is created and freed on any thread (the main thread at start and at exit);
 * its links, and everything else here, run on the one worker thread whose h2o context they were
 * made on. Nothing is locked.
 *
 * Callbacks never run inside a call to this module (they come from the loop), never after
 * mcp_http_link_close, and may call any function here, including mcp_http_link_close and
 * mcp_http_link_abandon for the request being reported.
 *
 * Timing. timeout_ms bounds the wait for the response to each request we send, from the send to
 * the response message, whatever arrives meanwhile: progress notifications on the request's
 * stream do not extend it (a server that works longer must be given a longer timeout). Inside
 * any one HTTP response, a silence longer than idle_timeout_ms ends that response: a request's
 * stream is then resumed if it can be (below), else the request fails; the GET stream reconnects.
 *
 * Resumption. When a request's SSE stream ends or drops before its response and the server gave
 * its events IDs, the link resumes it as the specification says: a GET with Last-Event-ID, after
 * the server's `retry` time (else at once, then with backoff), and what that GET carries is
 * delivered as from the request's stream (`via` is the request's id). Without event IDs, or after
 * MCP_HTTP_MAX_RESUMES attempts in a row that brought nothing, the request fails.
 *
 * Memory is bounded: a message (a JSON body, or one SSE event) over max_message_bytes fails its
 * request (on the GET stream: drops that stream, which reconnects), and error bodies are read
 * only up to a small limit.
 */
#ifndef MCP_HTTP_LINK_H
#define MCP_HTTP_LINK_H

#include <stddef.h>
#include <stdint.h>

#include <h2o.h>
#include <jansson.h>

#include "upstream.h"

/* Defaults for options left at 0. */
#define MCP_HTTP_DEFAULT_MAX_MESSAGE_BYTES (4u * 1024 * 1024)
#define MCP_HTTP_DEFAULT_TIMEOUT_MS        60000 /* as the official SDKs' default request timeout */
#define MCP_HTTP_DEFAULT_IDLE_TIMEOUT_MS   60000
#define MCP_HTTP_DEFAULT_MAX_CONNECTIONS   256 /* per worker, for requests; as many again for GET streams */
/* Attempts in a row to resume a request's stream that bring no event before the request fails. */
#define MCP_HTTP_MAX_RESUMES 5
/* The GET stream's reconnection delay: the server's `retry` time, or this minimum, doubled after
 * every attempt that brought no event (a stream that stayed open for the maximum counts as one
 * that did), up to the maximum. It retries for as long as the link is open, except after 405 (the
 * server offers no GET stream) or 404 (the session is gone). */
#define MCP_HTTP_RECONNECT_MIN_MS 500
#define MCP_HTTP_RECONNECT_MAX_MS 30000

/* One configured upstream server. */
typedef struct mcp_http_server mcp_http_server_t;

typedef struct mcp_http_server_options {
    const char *name;                    /* for logs, e.g. the config key; copied */
    const char *url;                     /* the MCP endpoint: http(s)://host[:port][/path][?query]; copied */
    const tp_upstream_header_t *headers; /* sent with every request, e.g. Authorization; copied. Those the
                                            link writes (Accept, Content-Type, Mcp-Session-Id,
                                            MCP-Protocol-Version, Last-Event-ID) and hop-by-hop ones are
                                            refused */
    size_t num_headers;
    size_t max_message_bytes; /* the largest message accepted from the server (0: default) */
    uint64_t timeout_ms;      /* longest wait for a request's response, in total (0: default) */
    uint64_t idle_timeout_ms; /* longest silence inside one HTTP response (0: default) */
    unsigned max_connections; /* per worker and kind (requests, GET streams); more calls wait (0: default) */
    const char *ca_file;      /* PEM file of extra CAs for https; NULL: the system store only */
} mcp_http_server_options_t;

/* Creates a server from o (nothing in o is kept). Makes no connection. Returns NULL and *err
 * (free() it) on a bad option, e.g. "mcp server \"docs\": upstream URL \"ftp://x\": scheme must be
 * http or https". */
mcp_http_server_t *mcp_http_server_new(const mcp_http_server_options_t *o, char **err);

/* Links of this server that are open or closing (waiting for their DELETE). */
unsigned mcp_http_server_links(const mcp_http_server_t *s);

/* Releases the worker's share of the server, on the worker's thread: ends the DELETEs of closed
 * links still waiting (their links are freed on the loop's next turns) and closes the pooled
 * connections. Every link must have been closed. The loop must then turn until it has no
 * handles left (as at any shutdown) to release the memory. */
void mcp_http_server_close_worker(mcp_http_server_t *s, h2o_context_t *ctx);

/* Frees the server: after mcp_http_server_close_worker, or once the worker's loop has stopped for
 * good with no link left. Any thread. NULL is a no-op. */
void mcp_http_server_free(mcp_http_server_t *s);

/* One MCP session with a server; the broker makes one per client session. */
typedef struct mcp_http_link mcp_http_link_t;

typedef struct mcp_http_link_callbacks {
    /* A message from the server — a response (results and JSON-RPC errors alike), a notification
     * or a server-to-client request — parsed. msg is borrowed for the call (json_incref it to
     * keep it). `via` is the id (borrowed) of OUR request whose stream carried it, or NULL when it
     * came on the GET stream. A JSON-RPC batch (2025-03-26) arrives one message per call. */
    void (*on_message)(mcp_http_link_t *l, void *data, json_t *msg, const json_t *via);
    /* Our request `id` (borrowed) will get no answer. status is the HTTP status when the server's
     * answer itself was wrong (an error status other than a lost session's 404, a body that is not
     * JSON or SSE, bad JSON, no response in it), else 0 (connect, timeouts, a dropped stream, a
     * message over the limit). why is a short reason for a person, valid during the call, e.g.
     * "connect: connection failed", "timeout: no response in 60000 ms", "HTTP 500: <the body's
     * JSON-RPC error message>", "the response is neither JSON nor SSE (text/html)", "a message
     * over 4194304 bytes", "the stream ended without the response". A JSON-RPC error without an
     * id answering a request's POST ends up here too, with its message. For a notification or a
     * response we sent that failed or was refused, id is NULL. The link has forgotten the request
     * when this runs. */
    void (*on_failure)(mcp_http_link_t *l, void *data, const json_t *id, int status, const char *why);
    /* The server answered 404 to a message that carried our session id: the session is gone
     * upstream. id is the request that hit it (borrowed; NULL for a notification, a response or
     * the GET stream); the request got no answer and is forgotten. The link has dropped the
     * session id (unless it already has a newer one: a late 404 of an older session) and stopped
     * the GET stream. The broker re-initializes — sends a new initialize through the same link —
     * and replays. It fires once per message that hit the 404, so several may come for one lost
     * session. */
    void (*on_session_lost)(mcp_http_link_t *l, void *data, const json_t *id);
} mcp_http_link_callbacks_t;

/* Creates a link to s on the worker that owns ctx (call it on that thread). cb is copied; data is
 * the broker's, handed to every callback. Makes no connection. */
mcp_http_link_t *mcp_http_link_new(mcp_http_server_t *s, h2o_context_t *ctx, const mcp_http_link_callbacks_t *cb,
                                   void *data);

/* Sends one JSON-RPC message, an object: a request (it has "method" and "id"), a notification or
 * a response. msg is borrowed and serialised now. The POST carries Accept: application/json,
 * text/event-stream; Content-Type: application/json; the session id once the server gave one
 * (Mcp-Session-Id on the initialize response); and MCP-Protocol-Version once known (the
 * initialize result's protocolVersion, which the link reads as it passes).
 * An "initialize" request starts a new session: it is sent without either header, and the link
 * forgets the old session id, protocol version and GET stream (call mcp_http_link_listen again
 * after notifications/initialized).
 * A request ends with exactly one of: on_message with its response, on_failure,
 * on_session_lost, or mcp_http_link_abandon / mcp_http_link_close. A notification or response
 * reports only trouble (on_failure or on_session_lost with id NULL). The broker keeps the ids of
 * requests in flight unique. No-op after mcp_http_link_close. */
void mcp_http_link_send(mcp_http_link_t *l, json_t *msg);

/* Opens the GET SSE stream for the server's own messages (call it after sending
 * notifications/initialized); its messages come with via NULL. 405 means the server offers none:
 * the link stops quietly. When the stream ends or drops, it reconnects with Last-Event-ID (see
 * MCP_HTTP_RECONNECT_*). No-op when already listening, or after a 405 until the next initialize. */
void mcp_http_link_listen(mcp_http_link_t *l);

/* Stops waiting for the answer to our request `id` (borrowed): cancels its HTTP call; no callback
 * for it runs from now on. The broker sends notifications/cancelled itself. Unknown ids are
 * ignored. */
void mcp_http_link_abandon(mcp_http_link_t *l, const json_t *id);

/* Ends the link: cancels every call in flight and the GET stream; no callback runs after this
 * returns. When there is a session, sends DELETE with its id, fire and forget: the link frees
 * itself when that finishes or times out, and needs nothing of the caller's meanwhile (data is no
 * longer used). Without a session it is freed on the loop's next turn. Do not use l afterwards. */
void mcp_http_link_close(mcp_http_link_t *l);

/* The session id the server gave on initialize (NUL-terminated, owned by the link, valid until
 * the link's next send or callback), or NULL: before initialize, after the session was lost, or
 * when the server uses no sessions. */
const char *mcp_http_link_session_id(const mcp_http_link_t *l);

/* The protocol version read from the initialize result, or NULL (same lifetime). */
const char *mcp_http_link_protocol_version(const mcp_http_link_t *l);

#endif
