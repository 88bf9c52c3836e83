/*
 * validate.h — checks OpenAI API request bodies before anything goes upstream.
 *
 * model-gw refuses a malformed request itself, with HTTP 400 and an error that names the JSON
 * path of the offending value as the OpenAI API does (error.param = "messages[3].content"), so a
 * developer or a model can fix the request, and an upstream never sees it.
 *
 * The checks are deterministic and follow the OpenAI API reference: types, ranges and enums of
 * every documented field, the shape of messages, content parts, tools and tool calls, and the
 * relations between fields (tool_choice must name a tool in tools, a tool message must answer a
 * tool call of an earlier assistant message, stream_options needs stream, ...). A field set to
 * null counts as absent unless it is required. Unknown top-level fields are passed through, or
 * refused when the model's configuration says deny_unknown_fields; unknown fields inside
 * objects are always passed through.
 *
 * Order: when a body has several problems, the one reported is the first found: a missing
 * required field, then the first malformed value in document order, then the first broken
 * relation between well-formed fields, in document order of the field that depends on another.
 *
 * Cost: one walk over the body, no allocation; the functions are thread-safe.
 */
#ifndef MG_VALIDATE_H
#define MG_VALIDATE_H

#include <stdbool.h>

#include <jansson.h>

#include "config.h"

/* Why a request body was refused. */
typedef struct mg_invalid {
    char param[256];   /* JSON path of the offending value, "messages[3].tool_calls[0].function.arguments";
                          "" when the body itself is wrong. Longer paths are cut. */
    char message[512]; /* one sentence for a developer or a model: what is wrong, what is expected */
} mg_invalid_t;

/* Validates a POST /v1/chat/completions body. `body` is borrowed and not modified. `model` is the
 * configuration of the requested model, for its max_tokens cap and deny_unknown_fields; it may be
 * NULL (no cap, unknown fields allowed). Returns true when the body is valid (*out is then emptied);
 * otherwise false with *out describing the first problem. `out` must not be NULL. */
bool mg_validate_chat(json_t *body, const tp_model_config_t *model, mg_invalid_t *out);

/* Same, for a POST /v1/completions body (the legacy text completions API). */
bool mg_validate_completion(json_t *body, const tp_model_config_t *model, mg_invalid_t *out);

/* Same, for a POST /v1/embeddings body. Only deny_unknown_fields of `model` applies. */
bool mg_validate_embeddings(json_t *body, const tp_model_config_t *model, mg_invalid_t *out);

#endif
