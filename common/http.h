/*
 * http.h — small response and request helpers on top of h2o, used by every route handler.
 * All of them run on the request's worker thread; memory they allocate lives in req->pool.
 */
#ifndef TP_HTTP_H
#define TP_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <h2o.h>
#include <jansson.h>

#include "server.h"

/* Sends `body` as a complete JSON response with `status`. Takes ownership of body (decref'd).
 * A NULL body (a failed json_pack) is answered with a fixed 500 and logged, never a crash. */
void tp_http_send_json(tp_request_t *r, int status, json_t *body);

/* Sends a complete response with a given content type. The body is copied into the pool. */
void tp_http_send(tp_request_t *r, int status, const char *content_type, const char *body, size_t len);

/* Sends an error through the server's error envelope (see tp_error_fn). */
void tp_http_error(tp_request_t *r, int status, const char *code, const char *message);

/* The default error envelope: {"error":{"code":code,"message":message}}. */
void tp_http_default_error(tp_request_t *r, int status, const char *code, const char *message);

/* Adds a response header (name, lowercased, and value are copied into the pool). */
void tp_http_add_header(tp_request_t *r, const char *name, const char *value);

/* Finds a request header by lowercase name. Returns its value and length, or {NULL, 0}. */
h2o_iovec_t tp_http_header(const tp_request_t *r, const char *lowercase_name);

/* Finds query parameter `name` in the request's URL and copies its value, percent-decoded
 * ('+' as space), NUL-terminated, into out. Returns false when absent, or when the decoded value
 * does not fit or contains a NUL byte. */
bool tp_http_query_param(const tp_request_t *r, const char *name, char *out, size_t out_len);

/* The standard reason phrase for a status ("Not Found"). */
const char *tp_http_reason(int status);

/* True when the request method equals `method`. */
int tp_http_method_is(const tp_request_t *r, const char *method);

#endif
