/* OpenAI's error envelope. */
#include <string.h>

#include "gateway.h"
#include "http.h"

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
    json_t *body = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message, "type", error_type(status),
                             "param", param, "code", code);
    tp_http_send_json(r, status, body);
}

void
mg_error_fn(tp_request_t *r, int status, const char *code, const char *message)
{
    mg_send_error(r, status, code, NULL, message);
}
