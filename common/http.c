#include "http.h"

#include <string.h>

#include "log.h"
#include "mem.h"

const char *
tp_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

void
tp_http_send(tp_request_t *r, int status, const char *content_type, const char *body, size_t len)
{
    h2o_req_t *req = r->req;
    req->res.status = status;
    req->res.reason = tp_http_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    req->res.content_length = len;
    char *copy = h2o_mem_alloc_pool(&req->pool, len + 1);
    memcpy(copy, body, len);
    copy[len] = '\0';
    h2o_send_inline(req, copy, len);
}

void
tp_http_send_json(tp_request_t *r, int status, json_t *body)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    if (text == NULL) {
        /* A body that could not be built (text that is not UTF-8 given to json_pack, say) must
         * not take the daemon down: answer a fixed error instead. */
        static const char fallback[] = "{\"error\":{\"code\":\"internal_error\",\"message\":\"the response could not "
                                       "be encoded\"}}";
        tp_log(TP_LOG_ERROR, r->id, "a JSON response could not be encoded; sent a fixed 500");
        tp_http_send(r, 500, "application/json", fallback, sizeof(fallback) - 1);
        return;
    }
    tp_http_send(r, status, "application/json", text, strlen(text));
    free(text);
}

void
tp_http_default_error(tp_request_t *r, int status, const char *code, const char *message)
{
    tp_http_send_json(r, status, json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message));
}

void
tp_http_error(tp_request_t *r, int status, const char *code, const char *message)
{
    tp__server_error_fn(r->server)(r, status, code, message);
}

void
tp_http_add_header(tp_request_t *r, const char *name, const char *value)
{
    h2o_req_t *req = r->req;
    size_t nlen = strlen(name), vlen = strlen(value);
    char *n = h2o_mem_alloc_pool(&req->pool, nlen);
    char *v = h2o_mem_alloc_pool(&req->pool, vlen);
    /* HTTP/2 requires lowercase field names, and h2o 2.2 does not lowercase them for us. */
    for (size_t i = 0; i < nlen; i++)
        n[i] = h2o_tolower(name[i]);
    memcpy(v, value, vlen);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n, nlen, 1, NULL, v, vlen);
}

h2o_iovec_t
tp_http_header(const tp_request_t *r, const char *lowercase_name)
{
    ssize_t i = h2o_find_header_by_str(&r->req->headers, lowercase_name, strlen(lowercase_name), -1);
    if (i < 0)
        return h2o_iovec_init(NULL, 0);
    return r->req->headers.entries[i].value;
}

int
tp_http_method_is(const tp_request_t *r, const char *method)
{
    return h2o_memis(r->req->method.base, r->req->method.len, method, strlen(method));
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes in[0..n) into out (out_len bytes with the NUL). */
static bool
url_decode(const char *in, size_t n, char *out, size_t out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= n)
                return false;
            int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0' || o + 1 >= out_len)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

bool
tp_http_query_param(const tp_request_t *r, const char *name, char *out, size_t out_len)
{
    const h2o_req_t *req = r->req;
    if (req->query_at == SIZE_MAX)
        return false;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t name_len = strlen(name);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (eq != NULL && (size_t)(eq - q) == name_len && memcmp(q, name, name_len) == 0)
            return url_decode(eq + 1, (size_t)(stop - eq - 1), out, out_len);
        q = stop + 1;
    }
    return false;
}
