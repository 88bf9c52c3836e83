/*
 * relay.h — what model-gw does to an upstream's completion before the client sees it: read
 * the token usage (for budgets and accounting), strip the usage chunk the client did not ask
 * for, show the public model name, and restore the tool-call contract where a known upstream
 * breaks it (function.arguments sent as a JSON object instead of a string; a tool call without
 * an id). Tool calls are otherwise passed unchanged and unmerged: the gateway never runs a tool.
 */
#ifndef MG_RELAY_H
#define MG_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buffer.h"

/* Token counts above this (or below 0) from an upstream are read as 0. */
#define MG_MAX_TOKEN_COUNT ((int64_t)1 << 40)

typedef struct mg_usage {
    bool seen;
    int64_t prompt_tokens;
    int64_t completion_tokens;
} mg_usage_t;

typedef struct mg_relay {
    const char *public_model; /* the name the client asked for */
    const char *request_id;   /* seeds ids the gateway has to make up */
    bool client_wants_usage;  /* stream_options.include_usage was true */
    mg_usage_t usage;         /* the last usage the upstream reported */
    unsigned repairs;         /* contract repairs made so far (for the metric) */
} mg_relay_t;

/* Relays one streamed event of a chat (or text) completion. `event` is the event's data.
 * Appends "data: ...\n\n" to out, or nothing when the event is dropped (a usage-only chunk the
 * client did not ask for). "[DONE]" becomes "data: [DONE]\n\n". An event that is not JSON is
 * passed through as it came. An event with nothing to restore, strip or read (no tool calls, no
 * usage object) keeps the upstream's bytes; only its model name changes. */
void mg_relay_chunk(mg_relay_t *relay, const char *event, size_t len, mg_buffer_t *out);

/* Relays a whole (non-streamed) completion body given as text, when that can be done on its
 * bytes: a JSON object (as jansson would read it) without tool calls. Then appends the body
 * with the public model name to out, reads its usage, and returns true. Otherwise returns false
 * with out untouched: parse the body and use mg_relay_response. */
bool mg_relay_response_text(mg_relay_t *relay, const char *body, size_t len, mg_buffer_t *out);

/* Relays a whole (non-streamed) completion body in place (it is an object). */
void mg_relay_response(mg_relay_t *relay, json_t *body);

/* Relays one parsed streamed chunk (an object) in place, for an API translated from chat
 * completions (responses.h, anthropic.h): usage read (and left for the translation, which
 * reports it its own way), tool calls restored, the public model name shown. */
void mg_relay_chunk_json(mg_relay_t *relay, json_t *chunk);

#endif
