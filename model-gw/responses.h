/*
 * responses.h — the OpenAI Responses API (POST /v1/responses) over a chat-completions upstream:
 * a Responses request (with the items of the responses it continues) becomes a chat completions
 * request, and the upstream's completion (whole, or streamed chunk by chunk) becomes a Response
 * object or the Responses stream events, in the official order and shapes.
 *
 * Pure translation: no I/O, no globals; every function is thread-safe on distinct arguments.
 * Storage (responses_store.h) and the HTTP side (proxy.c, responses_api.c) are elsewhere.
 *
 * Items ↔ messages:
 *   instructions                          → a first {"role":"system"} message (this request's
 *                                           only: instructions of earlier responses are not
 *                                           carried over, as OpenAI does)
 *   message items (role user|system|developer|assistant; content a string or input_text /
 *   input_image / input_file / output_text / refusal parts) → messages (developer → system;
 *   content that is all text becomes one string, the parts joined with "\n")
 *   function_call items                   → tool_calls of one assistant message (consecutive
 *                                           calls, and an assistant message right before them,
 *                                           merge into it); arguments kept as the exact text
 *   function_call_output items            → {"role":"tool","tool_call_id":call_id}
 *   reasoning items                       → dropped (a chat upstream has none)
 *   tools[] {type:function,name,description,parameters,strict} → chat tools; other tool types
 *                                           (web_search, file_search, …) are refused: the
 *                                           gateway never runs a tool
 *   tool_choice, parallel_tool_calls, temperature, top_p, user / safety_identifier → same;
 *   max_output_tokens → max_tokens; text.format json_schema|json_object → response_format
 * Completion → output items: text → one "message" item with one output_text part (annotations
 * []); tool_calls → one "function_call" item each (call_id = the tool call's id, arguments the
 * exact text); finish_reason length → status "incomplete", incomplete_details
 * {"reason":"max_output_tokens"}; content_filter → incomplete, reason "content_filter"; a
 * refusal → a "refusal" part; usage {input_tokens, output_tokens, total_tokens,
 * input_tokens_details {cached_tokens}, output_tokens_details {reasoning_tokens}} (those two
 * as the upstream reports them in prompt_tokens_details / completion_tokens_details, else 0).
 */
#ifndef MG_RESPONSES_H
#define MG_RESPONSES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buffer.h"
#include "config.h"
#include "validate.h"

/* A validated request. */
typedef struct mg_responses_req {
    json_t *input_items;              /* new reference: the input as items, a string input as one user
                                         message item; every item has an "id" (made up when the
                                         client gave none: "msg_…", "fc_…", "fco_…") */
    const char *previous_response_id; /* borrowed from the body, or NULL */
    bool store;                       /* default true */
    bool stream;
} mg_responses_req_t;

/* Validates a POST /v1/responses body (types, ranges and enums of the documented fields, the
 * shape of input items and tools; refuses built-in tool types and unsupported features such as
 * "background": true or "conversation" with a message saying so). `seed` makes the made-up item
 * ids unique (the request id). `model` (may be NULL) gives the max_tokens cap and
 * deny_unknown_fields. Returns true and *req (release with mg_responses_req_clear), or false and
 * *out (param in OpenAI's style: "input[2].call_id"). `body` is not modified. */
bool mg_responses_parse(json_t *body, const tp_model_config_t *model, const char *seed, mg_responses_req_t *req,
                        mg_invalid_t *out);

void mg_responses_req_clear(mg_responses_req_t *req);

/* Builds the chat completions body: instructions, then `history` (borrowed array of the items of
 * the responses continued, oldest first: each one's input items then its output items; may be
 * NULL), then req->input_items, then the mapped parameters. "model" is the body's model (the
 * proxy replaces it per deployment); "stream" and stream_options.include_usage are set when
 * req->stream. Fails (false, *out) when the items do not make a valid conversation, such as a
 * function_call_output whose call_id answers no earlier function_call ("No tool call found for
 * function call output with call_id …", param "input"). Returns true and *chat (new reference). */
bool mg_responses_chat_body(json_t *body, const mg_responses_req_t *req, json_t *history, json_t **chat,
                            mg_invalid_t *out);

/* What a Response object echoes and is named by. */
typedef struct mg_responses_ctx {
    const char *id;           /* "resp_…", made by the caller */
    const char *public_model; /* the model the client asked for */
    int64_t created_at;       /* Unix seconds */
    json_t *request;          /* borrowed: the client's body, for instructions, tools, tool_choice,
                                 text, temperature, top_p, max_output_tokens, metadata, store,
                                 previous_response_id, parallel_tool_calls, truncation, user */
} mg_responses_ctx_t;

/* A Response object (new reference) with this status ("completed", "incomplete", "failed",
 * "in_progress"), output (borrowed array, NULL for []), usage (borrowed, NULL for null), error
 * (borrowed {"code","message"}, or NULL) and incomplete_details (borrowed, or NULL). Every field
 * of the official object is present: id, object "response", created_at, status, error,
 * incomplete_details, instructions, max_output_tokens, model, output, parallel_tool_calls,
 * previous_response_id, reasoning, store, temperature, text, tool_choice, tools, top_p,
 * truncation, usage, user, metadata (and output_text is NOT included: SDKs compute it). */
json_t *mg_responses_object(const mg_responses_ctx_t *ctx, const char *status, json_t *output, json_t *usage,
                            json_t *error, json_t *incomplete_details);

/* A whole chat completion (borrowed, already repaired by the relay) → the Response object (new
 * reference), status completed or incomplete. */
json_t *mg_responses_from_completion(const mg_responses_ctx_t *ctx, json_t *completion);

/* The translation of one streamed completion. Zero-initialise, then mg_responses_stream_init;
 * release with mg_responses_stream_dispose. Events are appended to out as
 * "event: <type>\ndata: <json>\n\n", each with a "sequence_number" counting from 0. */
typedef struct mg_responses_stream {
    mg_responses_ctx_t ctx;
    int64_t seq;     /* the next sequence_number */
    json_t *output;  /* the output items so far (the open one included) */
    int open_item;   /* index in output of the open item, -1 when none */
    int open_tool;   /* chat tool_calls index of the open function_call item, -1 when none */
    int last_tool;   /* the highest chat tool_calls index opened so far, -1 before any: a late
                        fragment of a closed call is dropped, not made a new item */
    mg_buffer_t acc; /* the text of the open content part, or the arguments of the open
                        function_call, so far (written into the item when it closes) */
    json_t *usage;   /* Responses usage once the usage chunk came, else NULL */
    char finish[32]; /* the chat finish_reason seen, "" until one came */
    json_t *result;  /* the final Response object once ended or failed, else NULL */
    bool ended;
} mg_responses_stream_t;

void mg_responses_stream_init(mg_responses_stream_t *s, const mg_responses_ctx_t *ctx);

/* response.created then response.in_progress (the object with status in_progress, output []). */
void mg_responses_stream_begin(mg_responses_stream_t *s, mg_buffer_t *out);

/* One streamed chat chunk (borrowed): response.output_item.added, response.content_part.added,
 * response.output_text.delta, response.function_call_arguments.delta and the matching .done
 * events as items open and close. A usage-only chunk is read, not sent. */
void mg_responses_stream_chunk(mg_responses_stream_t *s, json_t *chunk, mg_buffer_t *out);

/* The upstream's stream ended with [DONE]: closes the open item (…done events), then
 * response.completed, or response.incomplete when the finish reason says so. s->result is set. */
void mg_responses_stream_end(mg_responses_stream_t *s, mg_buffer_t *out);

/* The stream broke or was ended by the gateway: closes nothing, sends response.failed with
 * error {"code","message"} (the output so far kept in the object). s->result is set. */
void mg_responses_stream_fail(mg_responses_stream_t *s, const char *code, const char *message, mg_buffer_t *out);

void mg_responses_stream_dispose(mg_responses_stream_t *s);

#endif
