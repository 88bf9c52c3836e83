/*
 * refusal.h — what model-gw's request checkers (validate.c for the OpenAI API, responses.c for
 * the Responses API, anthropic.c for Anthropic's Messages API) share to say why a body is
 * refused: the JSON path being checked, built in the mg_invalid_t that is returned, and the
 * sentence that names it; plus the small JSON readers they all use.
 *
 * A checker keeps an mg_refusal_t in its context, pushes a member or index as it descends and
 * pops it on the way back; the first failure writes the message and leaves the path as it was.
 * Paths and messages are cut at their buffers' sizes, never overrun. No allocation; thread-safe
 * on distinct refusals.
 */
#ifndef MG_REFUSAL_H
#define MG_REFUSAL_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "validate.h"

typedef struct mg_refusal {
    mg_invalid_t *out; /* out->param is the path buffer */
    size_t len;        /* strlen(out->param) */
    bool dotted;       /* indexes as ".2" (Anthropic's style) instead of "[2]" (OpenAI's) */
    const char *sep;   /* between the path and the text of a message: " " or ": " */
    const char *root;  /* the message's subject when the path is empty ("the request body"), or
                          NULL for none (the text alone) */
} mg_refusal_t;

/* Appends ".key" (just "key" at the root), or the index when key is NULL; returns the previous
 * length for mg_refusal_pop. */
size_t mg_refusal_push(mg_refusal_t *r, const char *key, size_t index);

void mg_refusal_pop(mg_refusal_t *r, size_t saved);

/* Writes "<path><sep><text>" (or "<root><sep><text>", or the text alone, at the root) as the
 * message. Returns false, for `return fail(...)`. */
bool mg_refusal_fail(mg_refusal_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- value checks every checker makes the same way: each refuses v at the current path ---- */

#define MG_SHOW 64 /* characters of a refused string quoted back in a message */

/* A number (an integer when `integer`) in [min, max] (+-INFINITY for no bound). */
bool mg_refusal_range(mg_refusal_t *r, const json_t *v, bool integer, double min, double max);

/* A string among `choices` (NULL-terminated). */
bool mg_refusal_enum(mg_refusal_t *r, const json_t *v, const char *const *choices);

/* A function or schema name: ^[a-zA-Z0-9_-]{1,64}$. */
bool mg_refusal_name(mg_refusal_t *r, const json_t *v);

/* metadata: at most 16 pairs of strings, keys up to 64 characters, values up to 512 (the path is
 * left at the offending key). */
bool mg_refusal_metadata(mg_refusal_t *r, const json_t *v);

/* A comma-separated list of names for messages ("get_weather, get_time"), cut with "..." when
 * long. Zero-initialise. */
typedef struct mg_list {
    char text[200];
    size_t len;
    size_t count;
} mg_list_t;

void mg_list_add(mg_list_t *l, const char *s);

/* The list's text, or "none". */
const char *mg_list_text(const mg_list_t *l);

/* Refuses v, which is none of the list's choices: "must be 'x'" or "must be one of x, y". */
bool mg_refusal_choice(mg_refusal_t *r, const mg_list_t *l, const json_t *v);

/* "an object", "an array", "a string", "a number", "a boolean" or "null", for messages. */
const char *mg_json_type_name(const json_t *v);

/* Whether two strings are equal; false when either is NULL. */
bool mg_streq(const char *a, const char *b);

/* The string value of member key of o, or NULL (absent, not a string, o not an object). */
const char *mg_json_str(const json_t *o, const char *key);

#endif
