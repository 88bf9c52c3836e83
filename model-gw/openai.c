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

/* Whether the request is to the Anthropic Messages API (/v1/messages and below). */
static bool
anthropic_route(const tp_request_t *r)
{
    h2o_iovec_t path = r->req->path_normalized;
    size_t n = sizeof("/v1/messages") - 1;
    return path.len >= n && memcmp(path.base, "/v1/messages", n) == 0 && (path.len == n || path.base[n] == '/');
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
