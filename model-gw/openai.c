/* OpenAI's error envelope. */
#include <string.h>

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

void
mg_send_error(tp_request_t *r, int status, const char *code, const char *param, const char *message)
{
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
