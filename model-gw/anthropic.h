/*
 * anthropic.h — the Anthropic Messages API (POST /v1/messages) over a chat-completions upstream:
 * a Messages request becomes a chat completions request, and the upstream's completion (whole,
 * or streamed chunk by chunk) becomes a Message or the Messages stream events.
 *
 * Pure translation: no I/O, no globals; every function is thread-safe on distinct arguments.
 * The proxy (proxy.c) owns authentication, routing, retries and accounting; this module only
 * knows the two wire formats.
 *
 * Mapping (request):
 *   system (string or text blocks)          → a first {"role":"system"} message
 *   user text / image blocks                → user message content (string, or parts:
 *                                             text and image_url with a data: URL or the url)
 *   user tool_result blocks                 → one {"role":"tool","tool_call_id"} message each,
 *                                             placed before the user's other content
 *   assistant text + tool_use blocks        → one assistant message: content text and tool_calls
 *                                             (id = tool_use.id, arguments = JSON text of input)
 *   tools[] {name, description, input_schema} → tools[] {type:function, function{name,
 *                                             description, parameters}}
 *   tool_choice auto|any|tool|none          → "auto" | "required" | {function:{name}} | "none";
 *                                             disable_parallel_tool_use → parallel_tool_calls false
 *   max_tokens (required) → max_tokens; temperature, top_p, stop_sequences → stop; stream;
 *   metadata.user_id → user; top_k and thinking are refused only when the model config says
 *   deny_unknown_fields, else dropped (a chat upstream has no equivalent).
 * Mapping (answer): content text → a text block; tool_calls → tool_use blocks (input parsed from
 * the arguments; see mg_anthropic_message); finish_reason stop → end_turn, length →
 * max_tokens, tool_calls → tool_use, content_filter → refusal, a stop sequence → stop_sequence
 * with stop_sequence set when the text ends with one of the request's stop_sequences;
 * usage prompt_tokens → input_tokens, completion_tokens → output_tokens.
 *
 * Choices where the two APIs differ:
 *   - Text blocks join: system blocks and a tool_result's text blocks with "\n"; an assistant
 *     message's text blocks with nothing between (they are one answer cut into blocks). A user
 *     message's blocks stay separate content parts (one text block becomes a plain string).
 *   - tool_result is_error: true → the tool message's text is prefixed with "Error: " (a chat
 *     tool message has no error flag, and the model should still know the call failed).
 *     Images (or other non-text blocks) inside a tool_result are refused: a chat tool message
 *     carries text only.
 *   - Every tool_use must be answered by a tool_result in the next message, and a conversation
 *     cannot end with an unanswered tool_use (chat upstreams refuse both).
 *   - Stop sequences: OpenAI-style servers report finish_reason "stop" for both the natural end
 *     and a stop-sequence match, and strip the matched sequence from the text. stop_sequence is
 *     reported only when it is knowable: the upstream names the matched string (vLLM's
 *     choices[].stop_reason) or the text ends with one of the request's stop_sequences (servers
 *     that keep it; in a stream, within the last 64 bytes). Otherwise end_turn. The text is
 *     passed as the upstream sent it (never cut).
 *   - finish_reason "stop" (or none) with tool calls present → tool_use (some servers say "stop"),
 *     so a client's tool loop still runs.
 *   - Refused always: document blocks, image sources of type file, server tools (web search,
 *     bash, text editor, computer, code execution, …), mcp_servers and container: the gateway
 *     runs no tools and a chat upstream takes no documents. Messages with role "system" are
 *     refused (the system prompt is the top-level "system").
 *   - Dropped: thinking / redacted_thinking blocks, cache_control, citations, top_k, thinking
 *     and the other Anthropic-only top-level fields (refused instead when deny_unknown_fields,
 *     except thinking {type: disabled}). Unknown top-level fields are never forwarded.
 *   - Answers carry no thinking blocks (reasoning_content of an upstream is dropped).
 */
#ifndef MG_ANTHROPIC_H
#define MG_ANTHROPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buffer.h"
#include "config.h"
#include "validate.h"

/* Validates a Messages request body and builds the chat completions body for it (a new object
 * whose "model" is the request's model; the proxy replaces it per deployment). Refusals follow
 * the Messages API (max_tokens required, messages non-empty and alternating is NOT required,
 * first message may be assistant, every tool_result must answer a tool_use of the message
 * before, content block types known, tool names unique, tool_choice.name among the tools, …)
 * and name the JSON path (out->param, "messages.2.content.0.tool_use_id" in Anthropic's dotted
 * style) with a sentence saying what is wrong. `model` (may be NULL) gives the max_tokens cap
 * and deny_unknown_fields. Returns true and *chat, or false and *out. `body` is not modified. */
bool mg_anthropic_request(json_t *body, const tp_model_config_t *model, json_t **chat, mg_invalid_t *out);

/* What the answer needs to know of its request. */
typedef struct mg_anthropic_ctx {
    const char *public_model; /* the model the client asked for */
    const char *message_id;   /* "msg_..." made by the caller, unique per request */
    json_t *stop_sequences;   /* borrowed array of strings, or NULL */
} mg_anthropic_ctx_t;

/* A whole chat completion (borrowed) → a Message object (new reference):
 * {"id","type":"message","role":"assistant","model","content":[...],"stop_reason",
 *  "stop_sequence","usage":{"input_tokens","output_tokens"}}. Never NULL: a completion without
 * choices gives empty content and stop_reason end_turn. Tool-call arguments that are not a JSON
 * object become input {} (the model's text is lost, which Anthropic clients cannot represent). */
json_t *mg_anthropic_message(const mg_anthropic_ctx_t *ctx, json_t *completion);

/* The translation of one streamed completion. Zero-initialise, then mg_anthropic_stream_init. */
typedef struct mg_anthropic_stream {
    mg_anthropic_ctx_t ctx;
    bool started;         /* message_start sent */
    bool ended;           /* message_stop (or an error) sent */
    int block;            /* index of the open content block, -1 when none */
    int next_block;       /* index the next block gets */
    int open_tool;        /* chat tool_calls index of the open tool_use block, -1 when none */
    char finish[32];      /* the chat finish_reason seen, "" until one came */
    int64_t input_tokens; /* from the usage chunk, 0 until one came */
    int64_t output_tokens;
    bool usage_seen;
    char tail[64]; /* the last bytes of text, to tell a stop sequence */
    size_t tail_len;
    int max_tool;              /* highest chat tool_calls index opened so far, -1 when none: a
                                  fragment of an index already closed is dropped (a block cannot
                                  reopen); a tool_use block was sent when >= 0 */
    uint64_t tool_id_hash;     /* hash of the open tool call's id: a fragment with another id
                                  opens a new block even on the same index (servers that give
                                  every call index 0) */
    const char *stop_sequence; /* the stop sequence the upstream said it matched (vLLM's
                                  choices[].stop_reason), borrowed from ctx.stop_sequences */
} mg_anthropic_stream_t;

void mg_anthropic_stream_init(mg_anthropic_stream_t *s, const mg_anthropic_ctx_t *ctx);

/* Translates one streamed chat chunk (borrowed; already repaired by the relay) into zero or more
 * Messages events appended to out as "event: <type>\ndata: <json>\n\n": message_start (first
 * call; usage.input_tokens from the chunk's usage if any, else 0), content_block_start /
 * content_block_delta (text_delta, input_json_delta) / content_block_stop as text and tool
 * calls open and close. A usage-only chunk (choices []) is read, not sent. Only the choice with
 * index 0 is read; what cannot be read (choices not an array, a delta not an object, content
 * not a string, a chunk not an object) is skipped, and an empty text opens no block. Block
 * indices count from 0 in order of appearance; a block closes when the next one opens. */
void mg_anthropic_stream_chunk(mg_anthropic_stream_t *s, json_t *chunk, mg_buffer_t *out);

/* The upstream's stream ended with [DONE]: closes an open block, then message_delta
 * ({"stop_reason","stop_sequence"}, usage {"output_tokens"} and "input_tokens" when a usage
 * chunk came) and message_stop. message_start comes first when no chunk was seen. Nothing
 * after an end or an error. */
void mg_anthropic_stream_end(mg_anthropic_stream_t *s, mg_buffer_t *out);

/* The stream broke, or was ended by the gateway: an "error" event
 * {"type":"error","error":{"type":type,"message":message}}; nothing is sent after it. When no
 * message_start was sent yet, that comes first (SDKs expect it). */
void mg_anthropic_stream_error(mg_anthropic_stream_t *s, const char *type, const char *message, mg_buffer_t *out);

/* Anthropic's error type for an HTTP status: 400 invalid_request_error, 401 authentication_error,
 * 403 permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error,
 * 503/529 overloaded_error, other 5xx api_error, other 4xx invalid_request_error. */
const char *mg_anthropic_error_type(int status);

/* The error body {"type":"error","error":{"type","message"},"request_id"} (new reference). */
json_t *mg_anthropic_error_body(int status, const char *message, const char *request_id);

#endif
