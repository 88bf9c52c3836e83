/* The error envelope: OpenAI's, or Anthropic's on the Messages API's routes. */
#include <string.h>

#include "anthropic.h"
#include "gateway.h"
#include "http.h"
#include "log.h"

static const char *
error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* Whether path is `prefix` or below it. */
static bool
under(h2o_iovec_t path, const char *prefix)
{
    size_t n = strlen(prefix);
    return path.len >= n && memcmp(path.base, prefix, n) == 0 && (path.len == n || path.base[n] == '/');
}

/* Whether the request is Anthropic's: to the Messages API (/v1/messages and below), or to the
 * models list from a client that sends anthropic-version (see catalog.c). */
static bool
anthropic_route(const tp_request_t *r)
{
    h2o_iovec_t path = r->req->path_normalized;
    return under(path, "/v1/messages") ||
           (under(path, "/v1/models") && tp_http_header(r, "anthropic-version").len != 0);
}

void
mg_send_error(tp_request_t *r, int status, const char *code, const char *param, const char *message)
{
    if (anthropic_route(r)) {
        /* Anthropic's shape has no code or param: the message says what is wrong (the
         * translation's refusals lead with the offending path themselves). */
        json_t *msg = tp_log_string(message, strlen(message));
        tp_http_send_json(r, status, mg_anthropic_error_body(status, json_string_value(msg), r->id));
        json_decref(msg);
        return;
    }
    /* The message may quote client or upstream text cut at any byte: never let that break it. */
    json_t *e = json_object();
    json_object_set_new(e, "message", tp_log_string(message, strlen(message)));
    json_object_set_new(e, "type", json_string(error_type(status)));
    json_object_set_new(e, "param", param != NULL ? tp_log_string(param, strlen(param)) : json_null());
    json_object_set_new(e, "code", code != NULL ? tp_log_string(code, strlen(code)) : json_null());
    tp_http_send_json(r, status, json_pack("{s:o}", "error", e));
}

void
mg_error_fn(tp_request_t *r, int status, const char *code, const char *message)
{
    mg_send_error(r, status, code, NULL, message);
}
