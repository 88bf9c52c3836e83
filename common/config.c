/*
 * config.c — the configuration tables and the engine that walks them over a YAML document.
 *
 * The file is loaded with libyaml's document API; then the top-level table is walked against the
 * document tree. The walk is driven by the tables, never by the document, so its depth is bounded
 * whatever the file holds. Every problem is recorded and the walk carries on, so the user sees all
 * of them at once, sorted by line.
 *
 * What the header leaves open is decided here:
 * - A key whose value is null (`key:` or `key: ~`) counts as absent: its default applies. So an
 *   empty `model_gw:` section means all defaults.
 * - The default of a LIST is YAML flow text ("[{port: 9080}]"), loaded like the file is.
 * - `validate` on a SECTION gets the section's struct once its keys are parsed; on a LIST it is
 *   called once per element with the element; on anything else with the field. It is skipped
 *   when parsing what it would check already failed, so one mistake gives one error.
 * - ${VAR} is expanded in values only: not in keys, not in defaults.
 */
#include "config.h"

#include "log.h"
#include "mem.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

/* ---- validators ---- */

static const char *
check_not_empty(const void *value)
{
    const char *s = *(char *const *)value;
    return s != NULL && s[0] == '\0' ? "must not be empty" : NULL;
}

/* TLS needs both halves; one alone is almost certainly a typo, not a wish for plain HTTP. */
static const char *
check_listener(const void *value)
{
    const tp_listener_config_t *l = value;
    if (l->tls_cert != NULL && l->tls_key == NULL)
        return "tls_key is required when tls_cert is set";
    if (l->tls_key != NULL && l->tls_cert == NULL)
        return "tls_cert is required when tls_key is set";
    return NULL;
}

static const char *
check_plane(const void *value)
{
    const tp_plane_config_t *plane = value;
    if (plane->listen_count == 0)
        return "listen must have at least one listener";
    for (size_t i = 0; i < plane->listen_count; i++) {
        for (size_t j = 0; j < i; j++) {
            const tp_listener_config_t *a = &plane->listen[i], *b = &plane->listen[j];
            if (a->port == b->port && strcmp(a->host, b->host) == 0)
                return "listen has two listeners on the same host and port";
        }
    }
    return NULL;
}

static const char *
check_store(const void *value)
{
    const tp_store_config_t *store = value;
    if (store->writer_batch_size > store->writer_queue_size)
        return "writer_batch_size must not be larger than writer_queue_size";
    return NULL;
}

/* ---- the tables ---- */

static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };

static const tp_cfg_field_t common_fields[] = {
    { .key = "log_level",
      .type = TP_CFG_ENUM,
      .offset = offsetof(tp_common_config_t, log_level),
      .def = TP_CFG_DEFAULT_LOG_LEVEL,
      .choices = log_levels,
      .doc = "least severe level logged: debug, info, warn or error (applied again on reload)" },
    { .key = "max_request_size",
      .type = TP_CFG_INT64,
      .offset = offsetof(tp_common_config_t, max_request_size),
      .def = TP_CFG_DEFAULT_MAX_REQUEST_SIZE,
      .min = 1024,
      .max = INT64_MAX,
      .doc = "largest request body accepted, in bytes (k, m, g suffixes); larger ones get 413" },
    { .key = "idle_timeout_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_common_config_t, idle_timeout_ms),
      .def = TP_CFG_DEFAULT_IDLE_TIMEOUT_MS,
      .min = 1,
      .max = INT_MAX,
      .doc = "idle keep-alive and HTTP/2 connections are closed after this many milliseconds" },
    { .key = "request_timeout_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_common_config_t, request_timeout_ms),
      .def = TP_CFG_DEFAULT_REQUEST_TIMEOUT_MS,
      .min = 1,
      .max = INT_MAX,
      .doc = "milliseconds allowed to receive a request's head and body" },
    { .key = "shutdown_timeout_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_common_config_t, shutdown_timeout_ms),
      .def = TP_CFG_DEFAULT_SHUTDOWN_TIMEOUT_MS,
      .min = 1,
      .max = INT_MAX,
      .doc = "on SIGTERM, milliseconds in-flight requests get to finish" },
    { .key = "debug_endpoints",
      .type = TP_CFG_BOOL,
      .offset = offsetof(tp_common_config_t, debug_endpoints),
      .def = "false",
      .doc = "serve GET /debug/sleep?ms=N, a request that stays in flight N ms (drills and tests; not in production)" },
    { .key = NULL },
};

static const tp_cfg_field_t store_fields[] = {
    { .key = "path",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_store_config_t, path),
      .def = TP_CFG_DEFAULT_STORE_PATH,
      .validate = check_not_empty,
      .doc = "SQLite database file shared by the three daemons and gwctl" },
    { .key = "busy_timeout_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_store_config_t, busy_timeout_ms),
      .def = TP_CFG_DEFAULT_BUSY_TIMEOUT_MS,
      .min = 1,
      .max = INT_MAX,
      .doc = "milliseconds a connection waits for a lock held by another process" },
    { .key = "watch_interval_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_store_config_t, watch_interval_ms),
      .def = TP_CFG_DEFAULT_WATCH_INTERVAL_MS,
      .min = 1,
      .max = INT_MAX,
      .doc = "milliseconds between checks for changes made by another process" },
    { .key = "writer_queue_size",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_store_config_t, writer_queue_size),
      .def = TP_CFG_DEFAULT_WRITER_QUEUE_SIZE,
      .min = 1,
      .max = INT_MAX,
      .doc = "records the writer queue holds before producers wait" },
    { .key = "writer_batch_size",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_store_config_t, writer_batch_size),
      .def = TP_CFG_DEFAULT_WRITER_BATCH_SIZE,
      .min = 1,
      .max = INT_MAX,
      .doc = "most records committed in one transaction; at most writer_queue_size" },
    { .key = "writer_flush_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_store_config_t, writer_flush_ms),
      .def = TP_CFG_DEFAULT_WRITER_FLUSH_MS,
      .min = 1,
      .max = INT_MAX,
      .doc = "milliseconds after which a partial batch is committed" },
    { .key = "writer_block_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_store_config_t, writer_block_ms),
      .def = TP_CFG_DEFAULT_WRITER_BLOCK_MS,
      .min = 0, /* 0: drop at once rather than slow a request down */
      .max = INT_MAX,
      .doc = "milliseconds a producer waits on a full queue before the record is dropped and counted" },
    { .key = NULL },
};

static const tp_cfg_field_t control_fields[] = {
    { .key = "dir",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_control_config_t, dir),
      .def = TP_CFG_DEFAULT_CONTROL_DIR,
      .validate = check_not_empty,
      .doc = "directory holding each daemon's control socket, <daemon>.sock" },
    { .key = NULL },
};

static const tp_cfg_field_t listener_fields[] = {
    { .key = "host",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_listener_config_t, host),
      .def = TP_CFG_DEFAULT_HOST,
      .validate = check_not_empty,
      .doc = "address to bind; 0.0.0.0 or :: to accept from anywhere" },
    { .key = "port",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_listener_config_t, port),
      .required = true,
      .min = 0,
      .max = 65535,
      .doc = "TCP port to bind; 0 picks a free port (logged at start, and shown by gwctl status)" },
    { .key = "tls_cert",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_listener_config_t, tls_cert),
      .validate = check_not_empty,
      .doc = "PEM certificate chain file; serves HTTPS (with tls_key) instead of plain HTTP" },
    { .key = "tls_key",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_listener_config_t, tls_key),
      .validate = check_not_empty,
      .doc = "PEM private key file for tls_cert" },
    { .key = NULL },
};

/* Every plane section starts with `listen` and `workers` (a plane adds its own fields after them);
 * only the default port differs between daemons. */
#define LISTEN_FIELD(default_port)                                                                                     \
    {                                                                                                                  \
        .key = "listen", .type = TP_CFG_LIST, .offset = offsetof(tp_plane_config_t, listen),                           \
        .def = "[{port: " default_port "}]", .sub = listener_fields, .elem_size = sizeof(tp_listener_config_t),        \
        .count_offset = offsetof(tp_plane_config_t, listen_count), .validate = check_listener,                         \
        .doc = "listeners, each {host, port, tls_cert, tls_key}; default one on " TP_CFG_DEFAULT_HOST ":" default_port \
    }

#define WORKERS_FIELD                                                                                                  \
    {                                                                                                                  \
        .key = "workers", .type = TP_CFG_INT, .offset = offsetof(tp_plane_config_t, workers), .def = "0", .min = 0,    \
        .max = 256, .doc = "worker threads; 0 means one per CPU core"                                                  \
    }

static const char *const model_kinds[] = { "chat", "completion", "embedding", NULL };
static const char *const model_readiness[] = { "every_model", "any_model", "none", NULL };

static const char *
check_url(const void *value)
{
    const char *url = *(char *const *)value;
    if (url != NULL && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return "must be an http:// or https:// URL";
    return NULL;
}

static const char *
check_affinity(const void *value)
{
    const char *a = *(char *const *)value;
    if (a == NULL || a[0] == '\0' || strcmp(a, "user") == 0 || (strncmp(a, "header:", 7) == 0 && a[7] != '\0'))
        return NULL;
    return "must be empty, \"user\" or \"header:NAME\"";
}

static const char *
check_model(const void *value)
{
    const tp_model_config_t *m = value;
    return m->deployment_count == 0 ? "deployments must list at least one deployment" : NULL;
}

static const tp_cfg_field_t deployment_fields[] = {
    { .key = "url",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_deployment_config_t, url),
      .required = true,
      .validate = check_url,
      .doc = "base URL of the upstream's OpenAI-compatible API (http or https; https is verified)" },
    { .key = "model",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_deployment_config_t, model),
      .validate = check_not_empty,
      .doc = "the model name the upstream knows; default: the public name" },
    { .key = "weight",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_deployment_config_t, weight),
      .def = "1",
      .min = 1,
      .max = 1000,
      .doc = "share of traffic among the model's healthy deployments" },
    { .key = "api_key_env",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_deployment_config_t, api_key_env),
      .validate = check_not_empty,
      .doc = "environment variable with the upstream's API key (client credentials are never forwarded)" },
    { .key = "timeout_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_deployment_config_t, timeout_ms),
      .def = "300000",
      .min = 1,
      .max = INT_MAX,
      .doc = "longest a whole upstream request may take" },
    { .key = "first_byte_timeout_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_deployment_config_t, first_byte_timeout_ms),
      .def = "60000",
      .min = 1,
      .max = INT_MAX,
      .doc = "longest wait for the upstream's response head (a model loading, a long prompt)" },
    { .key = "max_concurrency",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_deployment_config_t, max_concurrency),
      .def = "0",
      .min = 0,
      .max = 1000000,
      .doc = "requests in flight to this deployment at most; 0: no cap" },
    { .key = "health_path",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_deployment_config_t, health_path),
      .def = "",
      .doc = "path probed with GET every health_interval_ms, after the url's own path (e.g. /models); a 2xx is "
             "healthy, anything else counts toward opening the circuit; empty: no probes" },
    { .key = "warmup",
      .type = TP_CFG_BOOL,
      .offset = offsetof(tp_deployment_config_t, warmup),
      .def = "true",
      .doc = "after an undrain, send one tiny request (max_tokens 1) and take traffic only once it succeeds" },
    { .key = "warmup_prompt",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_deployment_config_t, warmup_prompt),
      .def = "Hello",
      .validate = check_not_empty,
      .doc = "the warm-up request's prompt (the input of an embedding model's)" },
    { .key = NULL },
};

static const tp_cfg_field_t model_fields[] = {
    { .key = "name",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_model_config_t, name),
      .required = true,
      .validate = check_not_empty,
      .doc = "the public model name clients ask for" },
    { .key = "kind",
      .type = TP_CFG_ENUM,
      .offset = offsetof(tp_model_config_t, kind),
      .def = "chat",
      .choices = model_kinds,
      .doc = "what the model does: chat (chat and text completions), completion, or embedding" },
    { .key = "deployments",
      .type = TP_CFG_LIST,
      .offset = offsetof(tp_model_config_t, deployments),
      .count_offset = offsetof(tp_model_config_t, deployment_count),
      .sub = deployment_fields,
      .elem_size = sizeof(tp_deployment_config_t),
      .required = true,
      .doc = "where the model is served" },
    { .key = "fallbacks",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_model_config_t, fallbacks),
      .count_offset = offsetof(tp_model_config_t, fallback_count),
      .validate = check_not_empty,
      .doc = "public models to try, in order, when every deployment of this one fails" },
    { .key = "max_tokens",
      .type = TP_CFG_INT64,
      .offset = offsetof(tp_model_config_t, max_tokens),
      .def = "0",
      .min = 0,
      .max = INT64_MAX,
      .doc = "largest max_tokens / max_completion_tokens a request may ask for; 0: no cap" },
    { .key = "max_input_bytes",
      .type = TP_CFG_INT64,
      .offset = offsetof(tp_model_config_t, max_input_bytes),
      .def = "0",
      .min = 0,
      .max = INT64_MAX,
      .doc = "largest request body for this model; 0: common.max_request_size" },
    { .key = "affinity",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_model_config_t, affinity),
      .def = "",
      .validate = check_affinity,
      .doc = "keep a conversation on one deployment (its prefix cache): \"user\" (the request's user field) or "
             "\"header:NAME\"; empty: none" },
    { .key = "deny_unknown_fields",
      .type = TP_CFG_BOOL,
      .offset = offsetof(tp_model_config_t, deny_unknown_fields),
      .def = "false",
      .doc = "refuse top-level request fields the OpenAI API does not define (else they pass through)" },
    { .key = NULL },
};

/* model_gw as a whole: the plane's listeners, model names used once, fallbacks that exist. */
static const char *
check_model_gw(const void *value)
{
    const tp_model_gw_config_t *g = value;
    const char *msg = check_plane(&g->plane);
    if (msg != NULL)
        return msg;
    for (size_t i = 0; i < g->model_count; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(g->models[i].name, g->models[j].name) == 0)
                return "models has two models with the same name";
        }
        for (size_t f = 0; f < g->models[i].fallback_count; f++) {
            bool known = false;
            for (size_t j = 0; j < g->model_count; j++)
                known = known || strcmp(g->models[i].fallbacks[f], g->models[j].name) == 0;
            if (!known)
                return "a model's fallbacks name a model that is not configured";
        }
    }
    return NULL;
}

/* LISTEN_FIELD, WORKERS_FIELD and check_plane read a plane section as a tp_plane_config_t. */
_Static_assert(offsetof(tp_model_gw_config_t, plane) == 0, "the plane settings must come first");

static const tp_cfg_field_t model_gw_fields[] = {
    LISTEN_FIELD("9080"),
    WORKERS_FIELD,
    { .key = "models",
      .type = TP_CFG_LIST,
      .offset = offsetof(tp_model_gw_config_t, models),
      .count_offset = offsetof(tp_model_gw_config_t, model_count),
      .sub = model_fields,
      .elem_size = sizeof(tp_model_config_t),
      .validate = check_model,
      .doc = "the models model-gw serves, by public name" },
    { .key = "health_interval_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_model_gw_config_t, health_interval_ms),
      .def = "5000",
      .min = 100,
      .max = INT_MAX,
      .doc = "how often deployments with a health_path are probed" },
    { .key = "readiness",
      .type = TP_CFG_ENUM,
      .offset = offsetof(tp_model_gw_config_t, readiness),
      .def = "every_model",
      .choices = model_readiness,
      .doc = "/readyz fails when a model has no healthy deployment (every_model), only when none has one "
             "(any_model), or never for models (none)" },
    { .key = "response_retention_days",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_model_gw_config_t, response_retention_days),
      .def = "30",
      .min = 0,
      .max = 36500,
      .doc = "stored Responses (/v1/responses with store) are purged this many days after they were created; "
             "0: kept until deleted" },
    { .key = "response_cache_bytes",
      .type = TP_CFG_INT64,
      .offset = offsetof(tp_model_gw_config_t, response_cache_bytes),
      .def = "67108864",
      .min = 0,
      .max = INT64_MAX,
      .doc = "memory for recently stored Responses, so continuing a conversation (previous_response_id) does not "
             "read the store; 0: every continuation reads it" },
    { .key = NULL },
};

/* ---- mcp_gw ---- */

static const char *const mcp_transports[] = { "http", "stdio", NULL };
static const char *const mcp_starts[] = { "on_demand", "boot", NULL };

static bool
is_name(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            return false;
    }
    return true;
}

static const char *
check_mcp_name(const void *value)
{
    return is_name(*(char *const *)value) ? NULL : "must be letters, digits, '_' or '-'";
}

static const char *
check_env_entry(const void *value)
{
    const char *e = *(char *const *)value;
    const char *eq = strchr(e, '=');
    return eq != NULL && eq != e ? NULL : "entries must read NAME=VALUE";
}

static const char *
check_header_name(const void *value)
{
    const char *n = *(char *const *)value;
    for (const char *p = n; *p != '\0'; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return "must be a header name (letters, digits, '-')";
    }
    return n[0] != '\0' ? NULL : "must not be empty";
}

static const tp_cfg_field_t mcp_header_fields[] = {
    { .key = "name",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_header_config_t, name),
      .required = true,
      .validate = check_header_name,
      .doc = "header name, e.g. Authorization" },
    { .key = "value",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_header_config_t, value),
      .required = true,
      .doc = "header value; put secrets in the environment: \"Bearer ${GITHUB_TOKEN}\"" },
    { .key = NULL },
};

static const char *
check_mcp_server(const void *value)
{
    const tp_mcp_server_config_t *s = value;
    if (strcmp(s->transport, "http") == 0) {
        if (s->url == NULL)
            return "an http server needs url";
        if (s->command != NULL || s->arg_count > 0 || s->env_count > 0 || s->cwd != NULL)
            return "command, args, env and cwd are for stdio servers";
    } else {
        if (s->command == NULL)
            return "a stdio server needs command";
        if (s->url != NULL || s->header_count > 0)
            return "url and headers are for http servers";
    }
    if (s->restart_max_ms < s->restart_min_ms)
        return "restart_max_ms must not be smaller than restart_min_ms";
    return NULL;
}

static const tp_cfg_field_t mcp_server_fields[] = {
    { .key = "name",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_server_config_t, name),
      .required = true,
      .validate = check_mcp_name,
      .doc = "the server's name: the policy resource is NAME/TOOL, and tools are published as NAME__TOOL" },
    { .key = "transport",
      .type = TP_CFG_ENUM,
      .offset = offsetof(tp_mcp_server_config_t, transport),
      .required = true,
      .choices = mcp_transports,
      .doc = "http (Streamable HTTP, url) or stdio (a supervised child process, command)" },
    { .key = "url",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_server_config_t, url),
      .validate = check_url,
      .doc = "http: the server's MCP endpoint, e.g. http://127.0.0.1:3001/mcp" },
    { .key = "headers",
      .type = TP_CFG_LIST,
      .offset = offsetof(tp_mcp_server_config_t, headers),
      .count_offset = offsetof(tp_mcp_server_config_t, header_count),
      .sub = mcp_header_fields,
      .elem_size = sizeof(tp_mcp_header_config_t),
      .doc = "http: headers sent with every request, each {name, value}; a client's credential never is" },
    { .key = "command",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_server_config_t, command),
      .validate = check_not_empty,
      .doc = "stdio: the executable, a path or a name looked up in PATH" },
    { .key = "args",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_mcp_server_config_t, args),
      .count_offset = offsetof(tp_mcp_server_config_t, arg_count),
      .doc = "stdio: its arguments" },
    { .key = "env",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_mcp_server_config_t, env),
      .count_offset = offsetof(tp_mcp_server_config_t, env_count),
      .validate = check_env_entry,
      .doc = "stdio: the child's whole environment as NAME=VALUE entries (nothing is inherited)" },
    { .key = "cwd",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_server_config_t, cwd),
      .validate = check_not_empty,
      .doc = "stdio: working directory; default the gateway's" },
    { .key = "start",
      .type = TP_CFG_ENUM,
      .offset = offsetof(tp_mcp_server_config_t, start),
      .def = "on_demand",
      .choices = mcp_starts,
      .doc = "stdio: start the child at the first session that needs it (on_demand) or at boot" },
    { .key = "prefix",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_server_config_t, prefix),
      .doc = "prefix of the server's tool and prompt names; default NAME__; \"\" publishes them unprefixed" },
    { .key = "timeout_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_mcp_server_config_t, timeout_ms),
      .def = "60000",
      .min = 100,
      .max = INT_MAX,
      .doc = "longest one request to this server may take" },
    { .key = "restart_min_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_mcp_server_config_t, restart_min_ms),
      .def = "500",
      .min = 10,
      .max = INT_MAX,
      .doc = "stdio: delay before restarting a child that died" },
    { .key = "restart_max_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_mcp_server_config_t, restart_max_ms),
      .def = "30000",
      .min = 10,
      .max = INT_MAX,
      .doc = "stdio: the restart delay doubles up to this" },
    { .key = "max_response_bytes",
      .type = TP_CFG_INT64,
      .offset = offsetof(tp_mcp_server_config_t, max_response_bytes),
      .def = "16777216",
      .min = 1024,
      .max = INT64_MAX,
      .doc = "largest message accepted from this server" },
    { .key = NULL },
};

static const tp_cfg_field_t mcp_virtual_fields[] = {
    { .key = "name",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_virtual_config_t, name),
      .required = true,
      .validate = check_mcp_name,
      .doc = "served at PATH/NAME" },
    { .key = "tools",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_mcp_virtual_config_t, tools),
      .count_offset = offsetof(tp_mcp_virtual_config_t, tool_count),
      .required = true,
      .doc = "globs on published tool names (\"everything__echo\", \"memory__*\")" },
    { .key = NULL },
};

/* mcp_gw as a whole: one worker, server and virtual names used once. */
static const char *
check_mcp_gw(const void *value)
{
    const tp_mcp_gw_config_t *g = value;
    const char *msg = check_plane(&g->plane);
    if (msg != NULL)
        return msg;
    if (g->plane.workers != 1)
        return "workers must be 1: mcp-gw runs its sessions on one event loop";
    if (g->path[0] != '/')
        return "path must start with '/'";
    for (size_t i = 0; i < g->server_count; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(g->servers[i].name, g->servers[j].name) == 0)
                return "servers has two servers with the same name";
        }
    }
    for (size_t i = 0; i < g->virtual_count; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(g->virtual_servers[i].name, g->virtual_servers[j].name) == 0)
                return "virtual_servers has two with the same name";
        }
    }
    return NULL;
}

_Static_assert(offsetof(tp_mcp_gw_config_t, plane) == 0, "the plane settings must come first");

static const tp_cfg_field_t mcp_gw_fields[] = {
    LISTEN_FIELD("9081"),
    { .key = "workers",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_plane_config_t, workers),
      .def = "1",
      .min = 0,
      .max = 256,
      .doc = "must be 1: sessions, upstream links and stdio children live on one event loop" },
    { .key = "path",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_gw_config_t, path),
      .def = "/mcp",
      .doc = "the MCP endpoint; virtual servers are below it" },
    { .key = "allowed_origins",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_mcp_gw_config_t, allowed_origins),
      .count_offset = offsetof(tp_mcp_gw_config_t, allowed_origin_count),
      .def = "[\"http://localhost\", \"http://localhost:*\", \"http://127.0.0.1\", \"http://127.0.0.1:*\", "
             "\"http://[::1]:*\"]",
      .doc = "Origin patterns accepted ('*' matches any run of characters); a browser request from any other Origin "
             "gets 403 (requests without Origin "
             "pass)" },
    { .key = "allowed_hosts",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_mcp_gw_config_t, allowed_hosts),
      .count_offset = offsetof(tp_mcp_gw_config_t, allowed_host_count),
      .def = "[\"localhost\", \"localhost:*\", \"127.0.0.1\", \"127.0.0.1:*\", \"[::1]\", \"[::1]:*\"]",
      .doc = "Host header patterns accepted ('*' matches any run), against DNS rebinding; [\"*\"]: any" },
    { .key = "servers",
      .type = TP_CFG_LIST,
      .offset = offsetof(tp_mcp_gw_config_t, servers),
      .count_offset = offsetof(tp_mcp_gw_config_t, server_count),
      .sub = mcp_server_fields,
      .elem_size = sizeof(tp_mcp_server_config_t),
      .validate = check_mcp_server,
      .doc = "the MCP servers mcp-gw brokers; clients never name an upstream themselves" },
    { .key = "virtual_servers",
      .type = TP_CFG_LIST,
      .offset = offsetof(tp_mcp_gw_config_t, virtual_servers),
      .count_offset = offsetof(tp_mcp_gw_config_t, virtual_count),
      .sub = mcp_virtual_fields,
      .elem_size = sizeof(tp_mcp_virtual_config_t),
      .doc = "endpoints exposing a subset of the tools, each {name, tools}" },
    { .key = "session_idle_timeout_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_mcp_gw_config_t, session_idle_timeout_ms),
      .def = "1800000",
      .min = 1000,
      .max = INT_MAX,
      .doc = "a session without traffic for this long is ended (its upstream sessions too)" },
    { .key = "max_sessions",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_mcp_gw_config_t, max_sessions),
      .def = "10000",
      .min = 1,
      .max = INT_MAX,
      .doc = "open sessions at most; an initialize beyond it gets 503" },
    { .key = "stream_buffer_events",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_mcp_gw_config_t, stream_buffer_events),
      .def = "256",
      .min = 0,
      .max = 1000000,
      .doc = "events kept per SSE stream so a client can resume with Last-Event-ID" },
    { .key = "list_changed_debounce_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_mcp_gw_config_t, list_changed_debounce_ms),
      .def = "200",
      .min = 0,
      .max = 60000,
      .doc = "list_changed notifications from upstreams are merged over this window" },
    { .key = "audit_arguments",
      .type = TP_CFG_BOOL,
      .offset = offsetof(tp_mcp_gw_config_t, audit_arguments),
      .def = "false",
      .doc = "write raw tool arguments to the audit log (default: their shape and SHA-256 only)" },
    { .key = "authorization_servers",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_mcp_gw_config_t, authorization_servers),
      .count_offset = offsetof(tp_mcp_gw_config_t, authorization_server_count),
      .def = "[]",
      .doc = "OAuth authorization servers announced at /.well-known/oauth-protected-resource; empty: not served" },
    { .key = "resource_url",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_mcp_gw_config_t, resource_url),
      .validate = check_url,
      .doc = "the resource identifier in that metadata; default: derived from the request's Host" },
    { .key = NULL },
};

/* ---- agent_gw ---- */

static const char *const a2a_versions[] = { "0.3", "1.0", NULL };

static const tp_cfg_field_t agent_fields[] = {
    { .key = "name",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_agent_config_t, name),
      .required = true,
      .validate = check_mcp_name,
      .doc = "the agent's name: the policy resource, the path /agents/NAME, and the principal id it calls as" },
    { .key = "url",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_agent_config_t, url),
      .required = true,
      .validate = check_url,
      .doc = "the agent's JSON-RPC endpoint" },
    { .key = "card_url",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_agent_config_t, card_url),
      .validate = check_url,
      .doc = "its agent card; default ORIGIN/.well-known/agent-card.json of url" },
    { .key = "version",
      .type = TP_CFG_ENUM,
      .offset = offsetof(tp_agent_config_t, version),
      .def = "0.3",
      .choices = a2a_versions,
      .doc = "the A2A version the agent speaks (1.0 sends A2A-Version: 1.0 upstream)" },
    { .key = "headers",
      .type = TP_CFG_LIST,
      .offset = offsetof(tp_agent_config_t, headers),
      .count_offset = offsetof(tp_agent_config_t, header_count),
      .sub = mcp_header_fields,
      .elem_size = sizeof(tp_mcp_header_config_t),
      .doc = "headers sent upstream, each {name, value}, e.g. the agent's credential from ${ENV}" },
    { .key = "labels",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_agent_config_t, labels),
      .count_offset = offsetof(tp_agent_config_t, label_count),
      .validate = check_env_entry,
      .doc = "KEY=VALUE labels, shown in listings" },
    { .key = "timeout_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_agent_config_t, timeout_ms),
      .def = "120000",
      .min = 100,
      .max = INT_MAX,
      .doc = "longest a non-streaming call to the agent may take" },
    { .key = "max_concurrent_tasks",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_agent_config_t, max_concurrent_tasks),
      .def = "0",
      .min = 0,
      .max = INT_MAX,
      .doc = "requests in flight to this agent at most; 0: no cap" },
    { .key = NULL },
};

static const char *
check_agent_gw(const void *value)
{
    const tp_agent_gw_config_t *g = value;
    const char *msg = check_plane(&g->plane);
    if (msg != NULL)
        return msg;
    for (size_t i = 0; i < g->agent_count; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(g->agents[i].name, g->agents[j].name) == 0)
                return "agents has two agents with the same name";
        }
    }
    if (g->chain_key != NULL && strlen(g->chain_key) < 32)
        return "chain_key must be at least 32 bytes";
    return NULL;
}

_Static_assert(offsetof(tp_agent_gw_config_t, plane) == 0, "the plane settings must come first");

static const tp_cfg_field_t agent_gw_fields[] = {
    LISTEN_FIELD("9082"),
    WORKERS_FIELD,
    { .key = "agents",
      .type = TP_CFG_LIST,
      .offset = offsetof(tp_agent_gw_config_t, agents),
      .count_offset = offsetof(tp_agent_gw_config_t, agent_count),
      .sub = agent_fields,
      .elem_size = sizeof(tp_agent_config_t),
      .doc = "the agents agent-gw fronts (more with gwctl agent add)" },
    { .key = "max_depth",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_agent_gw_config_t, max_depth),
      .def = "4",
      .min = 1,
      .max = 64,
      .doc = "delegation hops at most: a call deeper in a chain is refused (1: no delegation)" },
    { .key = "chain_key",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_agent_gw_config_t, chain_key),
      .doc = "HMAC key signing delegation chains (${ENV}, 32+ bytes); default: one generated and kept in the store" },
    { .key = "max_parts",
      .type = TP_CFG_INT64,
      .offset = offsetof(tp_agent_gw_config_t, max_parts),
      .def = "64",
      .min = 1,
      .max = 1000000,
      .doc = "parts in one message at most" },
    { .key = "max_file_bytes",
      .type = TP_CFG_INT64,
      .offset = offsetof(tp_agent_gw_config_t, max_file_bytes),
      .def = "10485760",
      .min = 0,
      .max = INT64_MAX,
      .doc = "inline bytes of one file part at most" },
    { .key = "push_allowed_hosts",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_agent_gw_config_t, push_allowed_hosts),
      .count_offset = offsetof(tp_agent_gw_config_t, push_allowed_host_count),
      .def = "[]",
      .doc = "host patterns ('*' matches any run) a push-notification URL may name; empty: any public host" },
    { .key = "push_allow_http",
      .type = TP_CFG_BOOL,
      .offset = offsetof(tp_agent_gw_config_t, push_allow_http),
      .def = "false",
      .doc = "accept http:// push-notification URLs (default: https only)" },
    { .key = "push_allow_private",
      .type = TP_CFG_BOOL,
      .offset = offsetof(tp_agent_gw_config_t, push_allow_private),
      .def = "false",
      .doc = "accept push-notification URLs on private, loopback and link-local addresses" },
    { .key = "audit_content",
      .type = TP_CFG_BOOL,
      .offset = offsetof(tp_agent_gw_config_t, audit_content),
      .def = "false",
      .doc = "write raw message content to the audit log (default: a SHA-256 and sizes only)" },
    { .key = "card_refresh_ms",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_agent_gw_config_t, card_refresh_ms),
      .def = "300000",
      .min = 0,
      .max = INT_MAX,
      .doc = "how long a fetched agent card is served before it is fetched again" },
    { .key = "public_url",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_agent_gw_config_t, public_url),
      .validate = check_url,
      .doc = "the gateway's base URL written into agent cards; default: http://HOST of the request" },
    { .key = NULL },
};

static const char *const principal_kinds[] = { "user", "service", "agent", NULL };

static const char *
check_algorithm(const void *value)
{
    static const char *const known[] = { "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
                                         "PS384", "PS512", "ES256", "ES384", "ES512", NULL };
    const char *alg = *(char *const *)value;
    for (const char *const *k = known; *k != NULL; k++) {
        if (strcmp(alg, *k) == 0)
            return NULL;
    }
    return "unknown or refused algorithm (allowed: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512)";
}

static const char *
check_issuer(const void *value)
{
    const tp_jwt_issuer_config_t *j = value;
    bool hs = false, pk = false;
    for (size_t i = 0; i < j->algorithm_count; i++) {
        if (strncmp(j->algorithms[i], "HS", 2) == 0)
            hs = true;
        else
            pk = true;
    }
    if (j->algorithm_count == 0)
        return "algorithms must name at least one algorithm";
    if (j->audience_count == 0)
        return "audience must name at least one accepted audience";
    if (hs && j->hs_secret == NULL)
        return "an HS algorithm needs hs_secret";
    if (pk && j->public_key_file == NULL && j->jwks_file == NULL)
        return "an RS, PS or ES algorithm needs public_key_file or jwks_file";
    if (j->hs_secret != NULL && strlen(j->hs_secret) < 32)
        return "hs_secret must be at least 32 bytes";
    return NULL;
}

static const tp_cfg_field_t claims_fields[] = {
    { .key = "principal",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_jwt_claims_config_t, principal),
      .def = "sub",
      .validate = check_not_empty,
      .doc = "claim holding the principal id" },
    { .key = "kind",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_jwt_claims_config_t, kind),
      .def = "kind",
      .validate = check_not_empty,
      .doc = "claim holding the principal kind (user, service or agent)" },
    { .key = "team",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_jwt_claims_config_t, team),
      .def = "team",
      .validate = check_not_empty,
      .doc = "claim holding the team" },
    { .key = "roles",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_jwt_claims_config_t, roles),
      .def = "roles",
      .validate = check_not_empty,
      .doc = "claim holding the roles (an array, or a space-separated string)" },
    { .key = NULL },
};

static const tp_cfg_field_t jwt_fields[] = {
    { .key = "issuer",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_jwt_issuer_config_t, issuer),
      .required = true,
      .validate = check_not_empty,
      .doc = "the exact `iss` of tokens from this issuer" },
    { .key = "audience",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_jwt_issuer_config_t, audiences),
      .count_offset = offsetof(tp_jwt_issuer_config_t, audience_count),
      .required = true,
      .validate = check_not_empty,
      .doc = "accepted `aud` values (one or a list); a token must carry one" },
    { .key = "algorithms",
      .type = TP_CFG_STRINGS,
      .offset = offsetof(tp_jwt_issuer_config_t, algorithms),
      .count_offset = offsetof(tp_jwt_issuer_config_t, algorithm_count),
      .required = true,
      .validate = check_algorithm,
      .doc = "allowed signature algorithms; `none` is never accepted" },
    { .key = "hs_secret",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_jwt_issuer_config_t, hs_secret),
      .doc = "HMAC secret for HS algorithms, at least 32 bytes (use ${ENV_VAR})" },
    { .key = "public_key_file",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_jwt_issuer_config_t, public_key_file),
      .validate = check_not_empty,
      .doc = "PEM public key for RS, PS and ES algorithms" },
    { .key = "jwks_file",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_jwt_issuer_config_t, jwks_file),
      .validate = check_not_empty,
      .doc = "JWKS file with the issuer's public keys, chosen by `kid`" },
    { .key = "leeway_s",
      .type = TP_CFG_INT,
      .offset = offsetof(tp_jwt_issuer_config_t, leeway_s),
      .def = "60",
      .min = 0,
      .max = 3600,
      .doc = "seconds of clock skew allowed when checking exp and nbf" },
    { .key = "default_kind",
      .type = TP_CFG_ENUM,
      .offset = offsetof(tp_jwt_issuer_config_t, default_kind),
      .def = "user",
      .choices = principal_kinds,
      .doc = "principal kind when a token has no kind claim" },
    { .key = "stored_principals",
      .type = TP_CFG_BOOL,
      .offset = offsetof(tp_jwt_issuer_config_t, stored_principals),
      .def = "false",
      .doc = "tokens may act as the stored principal with the same id (its team, roles, labels and enabled "
             "flag apply); when false, a token naming a stored principal is refused" },
    { .key = "claims",
      .type = TP_CFG_SECTION,
      .offset = offsetof(tp_jwt_issuer_config_t, claims),
      .sub = claims_fields,
      .doc = "which claims map to principal id, kind, team and roles" },
    { .key = NULL },
};

static const tp_cfg_field_t auth_fields[] = {
    { .key = "jwt",
      .type = TP_CFG_LIST,
      .offset = offsetof(tp_auth_config_t, jwt),
      .count_offset = offsetof(tp_auth_config_t, jwt_count),
      .sub = jwt_fields,
      .elem_size = sizeof(tp_jwt_issuer_config_t),
      .validate = check_issuer,
      .doc = "trusted JWT issuers; tokens from any other issuer are rejected" },
    { .key = NULL },
};

static const tp_cfg_field_t price_fields[] = {
    { .key = "model",
      .type = TP_CFG_STRING,
      .offset = offsetof(tp_price_config_t, model),
      .required = true,
      .validate = check_not_empty,
      .doc = "model name or glob (`gpt-4o*`); the first matching entry applies" },
    { .key = "input_per_million",
      .type = TP_CFG_DOUBLE,
      .offset = offsetof(tp_price_config_t, input_per_million),
      .def = "0",
      .min = 0,
      .max = 1000000,
      .doc = "cost of one million input tokens, in the budget's currency" },
    { .key = "output_per_million",
      .type = TP_CFG_DOUBLE,
      .offset = offsetof(tp_price_config_t, output_per_million),
      .def = "0",
      .min = 0,
      .max = 1000000,
      .doc = "cost of one million output tokens, in the budget's currency" },
    { .key = NULL },
};

const tp_cfg_field_t tp_config_table[] = {
    { .key = "common",
      .type = TP_CFG_SECTION,
      .offset = offsetof(tp_config_t, common),
      .sub = common_fields,
      .doc = "settings shared by the three daemons" },
    { .key = "auth",
      .type = TP_CFG_SECTION,
      .offset = offsetof(tp_config_t, auth),
      .sub = auth_fields,
      .doc = "how callers authenticate besides API keys" },
    { .key = "pricing",
      .type = TP_CFG_LIST,
      .offset = offsetof(tp_config_t, pricing),
      .count_offset = offsetof(tp_config_t, pricing_count),
      .sub = price_fields,
      .elem_size = sizeof(tp_price_config_t),
      .doc = "model prices for budgets in money" },
    { .key = "store",
      .type = TP_CFG_SECTION,
      .offset = offsetof(tp_config_t, store),
      .sub = store_fields,
      .validate = check_store,
      .doc = "the SQLite store and its batching writer" },
    { .key = "control",
      .type = TP_CFG_SECTION,
      .offset = offsetof(tp_config_t, control),
      .sub = control_fields,
      .doc = "the control sockets gwctl talks to" },
    { .key = "model_gw",
      .type = TP_CFG_SECTION,
      .offset = offsetof(tp_config_t, model_gw),
      .sub = model_gw_fields,
      .validate = check_model_gw,
      .doc = "the model gateway daemon" },
    { .key = "mcp_gw",
      .type = TP_CFG_SECTION,
      .offset = offsetof(tp_config_t, mcp_gw),
      .sub = mcp_gw_fields,
      .validate = check_mcp_gw,
      .doc = "the MCP gateway daemon" },
    { .key = "agent_gw",
      .type = TP_CFG_SECTION,
      .offset = offsetof(tp_config_t, agent_gw),
      .sub = agent_gw_fields,
      .validate = check_agent_gw,
      .doc = "the agent gateway daemon" },
    { .key = NULL },
};

/* ---- growing strings ---- */

typedef struct strbuf {
    char *data; /* NUL-terminated once anything was added; NULL before */
    size_t len;
} strbuf_t;

static void
strbuf_add(strbuf_t *b, const char *s, size_t n)
{
    b->data = tp_realloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void
strbuf_vprintf(strbuf_t *b, const char *fmt, va_list ap)
{
    va_list measure;
    va_copy(measure, ap);
    int n = vsnprintf(NULL, 0, fmt, measure);
    va_end(measure);
    assert(n >= 0);
    b->data = tp_realloc(b->data, b->len + (size_t)n + 1);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

/* ---- the walk's state and its errors ---- */

typedef struct cfg_problem {
    size_t line;  /* sorted on, so the user reads problems top to bottom */
    size_t order; /* ties keep the order they were found in */
    char *text;   /* the whole line, with its newline */
} cfg_problem_t;

typedef struct cfg_parser {
    const char *name;        /* file name used in messages */
    yaml_document_t *doc;    /* the document whose nodes are being walked */
    cfg_problem_t *problems; /* error_count of them */
    size_t error_count;      /* also lets a validator be skipped when what it checks is already wrong */
} cfg_parser_t;

/* Records "NAME:LINE: PATH: message\n" ("NAME:LINE: message\n" when path is empty). */
__attribute__((format(printf, 4, 5))) static void
cfg_error(cfg_parser_t *p, size_t line, const char *path, const char *fmt, ...)
{
    strbuf_t text = { 0 };
    char *prefix = tp_sprintf(path[0] != '\0' ? "%s:%zu: %s: " : "%s:%zu: %s", p->name, line, path);
    strbuf_add(&text, prefix, strlen(prefix));
    free(prefix);
    va_list ap;
    va_start(ap, fmt);
    strbuf_vprintf(&text, fmt, ap);
    va_end(ap);
    strbuf_add(&text, "\n", 1);
    p->problems = tp_realloc(p->problems, (p->error_count + 1) * sizeof *p->problems);
    p->problems[p->error_count] = (cfg_problem_t){ .line = line, .order = p->error_count, .text = text.data };
    p->error_count++;
}

static int
compare_problems(const void *a, const void *b)
{
    const cfg_problem_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Returns every problem in file order as one string (NULL when there are none) and frees them. */
static char *
take_errors(cfg_parser_t *p)
{
    if (p->error_count == 0)
        return NULL;
    qsort(p->problems, p->error_count, sizeof *p->problems, compare_problems);
    strbuf_t all = { 0 };
    for (size_t i = 0; i < p->error_count; i++) {
        strbuf_add(&all, p->problems[i].text, strlen(p->problems[i].text));
        free(p->problems[i].text);
    }
    free(p->problems);
    p->problems = NULL;
    return all.data;
}

/* ---- nodes ---- */

static size_t
node_line(const yaml_node_t *node)
{
    return node->start_mark.line + 1;
}

static const char *
scalar_text(const yaml_node_t *node)
{
    assert(node->type == YAML_SCALAR_NODE);
    return (const char *)node->data.scalar.value;
}

/* `key:`, `key: ~` and `key: null` — but not `key: ""`, which is an empty string. */
static bool
node_is_null(const yaml_node_t *node)
{
    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = scalar_text(node);
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

static void
error_expected(cfg_parser_t *p, const char *path, const yaml_node_t *node, const char *expected)
{
    if (node->type == YAML_SCALAR_NODE)
        cfg_error(p, node_line(node), path, "expected %s, got '%s'", expected, scalar_text(node));
    else
        cfg_error(p, node_line(node), path, "expected %s, got a %s", expected,
                  node->type == YAML_MAPPING_NODE ? "mapping" : "sequence");
}

/* The value of the first pair whose key is `key`, or NULL. */
static yaml_node_t *
mapping_find(yaml_document_t *doc, const yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
        const yaml_node_t *k = yaml_document_get_node(doc, pair->key);
        if (k->type == YAML_SCALAR_NODE && strcmp(scalar_text(k), key) == 0)
            return yaml_document_get_node(doc, pair->value);
    }
    return NULL;
}

static const tp_cfg_field_t *
table_find(const tp_cfg_field_t *table, const char *key)
{
    for (const tp_cfg_field_t *f = table; f->key != NULL; f++) {
        if (strcmp(f->key, key) == 0)
            return f;
    }
    return NULL;
}

static char *
child_path(const char *path, const char *key)
{
    return path[0] != '\0' ? tp_sprintf("%s.%s", path, key) : tp_strdup(key);
}

/* The first of pairs[0..i) whose key equals pairs[i]'s scalar key, or NULL. */
static const yaml_node_t *
find_earlier_key(yaml_document_t *doc, const yaml_node_pair_t *pairs, size_t i)
{
    const char *key = scalar_text(yaml_document_get_node(doc, pairs[i].key));
    for (size_t j = 0; j < i; j++) {
        const yaml_node_t *k = yaml_document_get_node(doc, pairs[j].key);
        if (k->type == YAML_SCALAR_NODE && strcmp(scalar_text(k), key) == 0)
            return k;
    }
    return NULL;
}

/* Reports keys that are not scalars, repeated, or not in the table. */
static void
check_keys(cfg_parser_t *p, const tp_cfg_field_t *table, const yaml_node_t *map, const char *path)
{
    const yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    size_t count = (size_t)(map->data.mapping.pairs.top - pairs);
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *key = yaml_document_get_node(p->doc, pairs[i].key);
        if (key->type != YAML_SCALAR_NODE) {
            error_expected(p, path, key, "a key");
            continue;
        }
        char *kpath = child_path(path, scalar_text(key));
        const yaml_node_t *first = find_earlier_key(p->doc, pairs, i);
        if (first != NULL)
            cfg_error(p, node_line(key), kpath, "duplicate key (first at line %zu)", node_line(first));
        else if (table_find(table, scalar_text(key)) == NULL)
            cfg_error(p, node_line(key), kpath, "unknown key");
        free(kpath);
    }
}

/* ---- environment variables ---- */

static bool
is_env_name(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    }
    return true;
}

/* Appends the value of the expression between "${" and "}" (`expr`, `n` bytes) to out.
 * Returns false after reporting an error. */
static bool
expand_var(cfg_parser_t *p, const char *expr, size_t n, strbuf_t *out, const char *path, size_t line)
{
    const char *sep = memmem(expr, n, ":-", 2);
    size_t name_len = sep != NULL ? (size_t)(sep - expr) : n;
    if (!is_env_name(expr, name_len)) {
        cfg_error(p, line, path, "invalid environment variable name '%.*s'", (int)name_len, expr);
        return false;
    }
    char *name = tp_strndup(expr, name_len);
    const char *value = getenv(name);
    bool ok = true;
    if (sep != NULL && (value == NULL || value[0] == '\0')) {
        const char *def = sep + 2;
        strbuf_add(out, def, n - (size_t)(def - expr));
    } else if (value == NULL) {
        cfg_error(p, line, path, "environment variable %s is not set", name);
        ok = false;
    } else {
        strbuf_add(out, value, strlen(value));
    }
    free(name);
    return ok;
}

/* Returns `text` with ${VAR}, ${VAR:-default} and $$ replaced (free() it), or NULL after
 * reporting an error. A "$" followed by anything else stays as it is. */
static char *
expand_env(cfg_parser_t *p, const char *text, const char *path, size_t line)
{
    strbuf_t out = { 0 };
    strbuf_add(&out, "", 0);
    const char *s = text;
    for (const char *dollar; (dollar = strchr(s, '$')) != NULL;) {
        strbuf_add(&out, s, (size_t)(dollar - s));
        if (dollar[1] == '$') {
            strbuf_add(&out, "$", 1);
            s = dollar + 2;
        } else if (dollar[1] == '{') {
            const char *close = strchr(dollar + 2, '}');
            if (close == NULL) {
                cfg_error(p, line, path, "unterminated ${ in '%s'", text);
                goto err;
            }
            if (!expand_var(p, dollar + 2, (size_t)(close - dollar - 2), &out, path, line))
                goto err;
            s = close + 1;
        } else {
            strbuf_add(&out, "$", 1);
            s = dollar + 1;
        }
    }
    strbuf_add(&out, s, strlen(s));
    return out.data;
err:
    free(out.data);
    return NULL;
}

/* ---- scalar conversion ---- */

/* Parses a decimal integer, with a k/m/g (×1024) suffix when `sizes`. Returns 0, -EINVAL when
 * the text is not such a number, or -ERANGE when it does not fit in int64_t. */
static int
parse_integer(const char *text, bool sizes, int64_t *out)
{
    const char *digits = text[0] == '-' || text[0] == '+' ? text + 1 : text;
    if (!isdigit((unsigned char)digits[0]))
        return -EINVAL;
    char *end;
    errno = 0;
    long long n = strtoll(text, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    int64_t mult = 1;
    if (sizes && *end != '\0') {
        switch (tolower((unsigned char)*end)) {
        case 'k':
            mult = INT64_C(1) << 10;
            break;
        case 'm':
            mult = INT64_C(1) << 20;
            break;
        case 'g':
            mult = INT64_C(1) << 30;
            break;
        default:
            return -EINVAL;
        }
        end++;
    }
    if (*end != '\0')
        return -EINVAL;
    if (__builtin_mul_overflow((int64_t)n, mult, out))
        return -ERANGE;
    return 0;
}

/* Names the bound that was crossed, or both when the other one is a real limit too. */
static void
error_range(cfg_parser_t *p, size_t line, const char *path, int64_t min, int64_t max, bool too_small, const char *text)
{
    if (too_small && (max == INT_MAX || max == INT64_MAX))
        cfg_error(p, line, path, "must be at least %lld, got '%s'", (long long)min, text);
    else if (!too_small && (min == INT_MIN || min == INT64_MIN))
        cfg_error(p, line, path, "must be at most %lld, got '%s'", (long long)max, text);
    else
        cfg_error(p, line, path, "must be between %lld and %lld, got '%s'", (long long)min, (long long)max, text);
}

static bool
convert_integer(cfg_parser_t *p, const tp_cfg_field_t *f, void *dst, const char *text, const char *path, size_t line)
{
    bool sizes = f->type == TP_CFG_INT64;
    int64_t min = f->min < f->max ? f->min : sizes ? INT64_MIN : INT_MIN;
    int64_t max = f->min < f->max ? f->max : sizes ? INT64_MAX : INT_MAX;
    int64_t v;
    int rv = parse_integer(text, sizes, &v);
    if (rv == -EINVAL) {
        cfg_error(p, line, path, "expected an integer%s, got '%s'", sizes ? " (k, m or g suffix allowed)" : "", text);
        return false;
    }
    if (rv == -ERANGE || v < min || v > max) {
        error_range(p, line, path, min, max, rv == -ERANGE ? text[0] == '-' : v < min, text);
        return false;
    }
    if (sizes)
        *(int64_t *)dst = v;
    else
        *(int *)dst = (int)v;
    return true;
}

static bool
convert_bool(cfg_parser_t *p, void *dst, const char *text, const char *path, size_t line)
{
    static const char *const yes[] = { "true", "yes", "on" }, *const no[] = { "false", "no", "off" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(text, yes[i]) == 0 || strcasecmp(text, no[i]) == 0) {
            *(bool *)dst = strcasecmp(text, yes[i]) == 0;
            return true;
        }
    }
    cfg_error(p, line, path, "expected true/false, yes/no or on/off, got '%s'", text);
    return false;
}

static bool
convert_enum(cfg_parser_t *p, const tp_cfg_field_t *f, void *dst, const char *text, const char *path, size_t line)
{
    for (const char *const *c = f->choices; *c != NULL; c++) {
        if (strcmp(*c, text) == 0) {
            *(char **)dst = tp_strdup(text);
            return true;
        }
    }
    strbuf_t list = { 0 };
    for (const char *const *c = f->choices; *c != NULL; c++) {
        if (c != f->choices)
            strbuf_add(&list, ", ", 2);
        strbuf_add(&list, *c, strlen(*c));
    }
    cfg_error(p, line, path, "must be one of %s; got '%s'", list.data != NULL ? list.data : "", text);
    free(list.data);
    return false;
}

static bool
convert_double(cfg_parser_t *p, const tp_cfg_field_t *f, void *dst, const char *text, const char *path, size_t line)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (text[0] == '\0' || end == NULL || *end != '\0' || errno == ERANGE || v != v) {
        cfg_error(p, line, path, "expected a number, got '%s'", text);
        return false;
    }
    if (f->min < f->max && (v < (double)f->min || v > (double)f->max)) {
        cfg_error(p, line, path, "must be between %lld and %lld, got '%s'", (long long)f->min, (long long)f->max, text);
        return false;
    }
    *(double *)dst = v;
    return true;
}

/* Stores `text` converted to the field's type at dst. Returns false after reporting an error. */
static bool
convert_scalar(cfg_parser_t *p, const tp_cfg_field_t *f, void *dst, const char *text, const char *path, size_t line)
{
    switch (f->type) {
    case TP_CFG_STRING:
        *(char **)dst = tp_strdup(text);
        return true;
    case TP_CFG_INT:
    case TP_CFG_INT64:
        return convert_integer(p, f, dst, text, path, line);
    case TP_CFG_BOOL:
        return convert_bool(p, dst, text, path, line);
    case TP_CFG_ENUM:
        return convert_enum(p, f, dst, text, path, line);
    case TP_CFG_DOUBLE:
        return convert_double(p, f, dst, text, path, line);
    case TP_CFG_SECTION:
    case TP_CFG_LIST:
    case TP_CFG_STRINGS:
        break;
    }
    assert(!"not a scalar type");
    return false;
}

/* What a scalar field holds, for "expected X, got a mapping". */
static const char *
scalar_noun(tp_cfg_type_t type)
{
    if (type == TP_CFG_INT || type == TP_CFG_INT64)
        return "an integer";
    if (type == TP_CFG_DOUBLE)
        return "a number";
    return type == TP_CFG_BOOL ? "a boolean" : "a string";
}

/* ---- the walk ---- */

static void parse_mapping(cfg_parser_t *p, const tp_cfg_field_t *table, void *base, const yaml_node_t *map,
                          const char *path, size_t line);

/* A scalar field: from `node`, or its default when node is NULL. */
static void
parse_scalar_field(cfg_parser_t *p, const tp_cfg_field_t *f, void *dst, const yaml_node_t *node, const char *path,
                   size_t line)
{
    bool ok;
    if (node == NULL) {
        if (f->def == NULL) {
            if (f->required)
                cfg_error(p, line, path, "required key is missing");
            return;
        }
        ok = convert_scalar(p, f, dst, f->def, path, line);
    } else if (node->type != YAML_SCALAR_NODE) {
        error_expected(p, path, node, scalar_noun(f->type));
        return;
    } else {
        char *text = expand_env(p, scalar_text(node), path, node_line(node));
        ok = text != NULL && convert_scalar(p, f, dst, text, path, node_line(node));
        free(text);
    }
    const char *msg = ok && f->validate != NULL ? f->validate(dst) : NULL;
    if (msg != NULL)
        cfg_error(p, node != NULL ? node_line(node) : line, path, "%s", msg);
}

static void
parse_section_field(cfg_parser_t *p, const tp_cfg_field_t *f, void *dst, const yaml_node_t *node, const char *path,
                    size_t line)
{
    if (node != NULL && node->type != YAML_MAPPING_NODE) {
        error_expected(p, path, node, "a mapping");
        return;
    }
    if (node != NULL)
        line = node_line(node);
    size_t before = p->error_count;
    parse_mapping(p, f->sub, dst, node, path, line);
    const char *msg = p->error_count == before && f->validate != NULL ? f->validate(dst) : NULL;
    if (msg != NULL)
        cfg_error(p, line, path, "%s", msg);
}

/* Fills the list at base+f->offset from the sequence `seq` (already checked to be one). */
static void
parse_list(cfg_parser_t *p, const tp_cfg_field_t *f, void *base, const yaml_node_t *seq, const char *path)
{
    size_t count = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    char *elems = count != 0 ? tp_calloc(count, f->elem_size) : NULL;
    /* Stored before the elements are parsed so tp_config_free finds their strings on failure. */
    *(void **)((char *)base + f->offset) = elems;
    *(size_t *)((char *)base + f->count_offset) = count;
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item = yaml_document_get_node(p->doc, seq->data.sequence.items.start[i]);
        char *ipath = tp_sprintf("%s[%zu]", path, i);
        if (item->type != YAML_MAPPING_NODE) {
            error_expected(p, ipath, item, "a mapping");
        } else {
            size_t before = p->error_count;
            parse_mapping(p, f->sub, elems + i * f->elem_size, item, ipath, node_line(item));
            const char *msg =
                p->error_count == before && f->validate != NULL ? f->validate(elems + i * f->elem_size) : NULL;
            if (msg != NULL)
                cfg_error(p, node_line(item), ipath, "%s", msg);
        }
        free(ipath);
    }
}

static void parse_list(cfg_parser_t *p, const tp_cfg_field_t *f, void *base, const yaml_node_t *node, const char *path);
static void parse_strings_field(cfg_parser_t *p, const tp_cfg_field_t *f, void *base, const yaml_node_t *node,
                                const char *path, size_t line);

/* A LIST's or STRINGS' default is YAML flow text, loaded from its own document. */
static void
parse_default_sequence(cfg_parser_t *p, const tp_cfg_field_t *f, void *base, const char *path, size_t line)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        tp_fatal("yaml_parser_initialize: out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)f->def, strlen(f->def));
    int loaded = yaml_parser_load(&parser, &doc);
    assert(loaded && "a LIST or STRINGS default must be a YAML sequence");
    (void)loaded;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    assert(root != NULL && root->type == YAML_SEQUENCE_NODE);
    yaml_document_t *file_doc = p->doc;
    p->doc = &doc;
    if (f->type == TP_CFG_LIST)
        parse_list(p, f, base, root, path);
    else
        parse_strings_field(p, f, base, root, path, line);
    p->doc = file_doc;
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
}

static void
parse_list_field(cfg_parser_t *p, const tp_cfg_field_t *f, void *base, const yaml_node_t *node, const char *path,
                 size_t line)
{
    if (node == NULL && f->def != NULL)
        parse_default_sequence(p, f, base, path, line);
    else if (node == NULL && f->required)
        cfg_error(p, line, path, "required key is missing");
    else if (node != NULL && node->type != YAML_SEQUENCE_NODE)
        error_expected(p, path, node, "a sequence");
    else if (node != NULL)
        parse_list(p, f, base, node, path);
}

/* A list of strings: a sequence of scalars, or one scalar; each gets ${VAR} substitution. */
static void
parse_strings_field(cfg_parser_t *p, const tp_cfg_field_t *f, void *base, const yaml_node_t *node, const char *path,
                    size_t line)
{
    char ***dst = (char ***)((char *)base + f->offset);
    size_t *count = (size_t *)((char *)base + f->count_offset);
    if (node == NULL && f->def != NULL) {
        parse_default_sequence(p, f, base, path, line);
        return;
    }
    if (node == NULL) {
        if (f->required)
            cfg_error(p, line, path, "required key is missing");
        return;
    }
    if (node->type == YAML_MAPPING_NODE) {
        error_expected(p, path, node, "a string or a sequence of strings");
        return;
    }
    bool single = node->type == YAML_SCALAR_NODE;
    size_t n = single ? 1 : (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    *dst = tp_calloc(n, sizeof(char *));
    *count = n;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = single ? node : yaml_document_get_node(p->doc, node->data.sequence.items.start[i]);
        char *ipath = single ? tp_strdup(path) : tp_sprintf("%s[%zu]", path, i);
        if (item->type != YAML_SCALAR_NODE)
            error_expected(p, ipath, item, "a string");
        else if (((*dst)[i] = expand_env(p, scalar_text(item), ipath, node_line(item))) != NULL &&
                 f->validate != NULL) {
            const char *msg = f->validate(&(*dst)[i]);
            if (msg != NULL)
                cfg_error(p, node_line(item), ipath, "%s", msg);
        }
        free(ipath);
    }
}

/* Walks `table` over the mapping `map` into the struct at base. map NULL (absent) means every
 * field gets its default; `line` is where to report what is missing. */
static void
parse_mapping(cfg_parser_t *p, const tp_cfg_field_t *table, void *base, const yaml_node_t *map, const char *path,
              size_t line)
{
    if (map != NULL)
        check_keys(p, table, map, path);
    for (const tp_cfg_field_t *f = table; f->key != NULL; f++) {
        const yaml_node_t *node = map != NULL ? mapping_find(p->doc, map, f->key) : NULL;
        size_t at = node != NULL ? node_line(node) : line;
        if (node != NULL && node_is_null(node))
            node = NULL;
        char *fpath = child_path(path, f->key);
        void *dst = (char *)base + f->offset;
        if (f->type == TP_CFG_SECTION)
            parse_section_field(p, f, dst, node, fpath, at);
        else if (f->type == TP_CFG_LIST)
            parse_list_field(p, f, base, node, fpath, at);
        else if (f->type == TP_CFG_STRINGS)
            parse_strings_field(p, f, base, node, fpath, at);
        else
            parse_scalar_field(p, f, dst, node, fpath, at);
        free(fpath);
    }
}

static void
free_fields(const tp_cfg_field_t *table, void *base)
{
    for (const tp_cfg_field_t *f = table; f->key != NULL; f++) {
        void *dst = (char *)base + f->offset;
        if (f->type == TP_CFG_STRING || f->type == TP_CFG_ENUM) {
            free(*(char **)dst);
            *(char **)dst = NULL;
        } else if (f->type == TP_CFG_SECTION) {
            free_fields(f->sub, dst);
        } else if (f->type == TP_CFG_LIST) {
            char *elems = *(char **)dst;
            size_t *count = (size_t *)((char *)base + f->count_offset);
            for (size_t i = 0; i < *count; i++)
                free_fields(f->sub, elems + i * f->elem_size);
            free(elems);
            *(char **)dst = NULL;
            *count = 0;
        } else if (f->type == TP_CFG_STRINGS) {
            char **items = *(char ***)dst;
            size_t *count = (size_t *)((char *)base + f->count_offset);
            for (size_t i = 0; i < *count; i++)
                free(items[i]);
            free(items);
            *(char ***)dst = NULL;
            *count = 0;
        }
    }
}

/* ---- loading ---- */

static void
error_yaml(cfg_parser_t *p, const yaml_parser_t *parser)
{
    if (parser->error == YAML_MEMORY_ERROR)
        tp_fatal("yaml_parser_load: out of memory");
    cfg_error(p, parser->problem_mark.line + 1, "yaml", "%s", parser->problem != NULL ? parser->problem : "error");
}

/* Only one document per file: a second one would be silently ignored otherwise. */
static void
check_single_document(cfg_parser_t *p, yaml_parser_t *parser)
{
    yaml_document_t extra;
    if (!yaml_parser_load(parser, &extra)) {
        error_yaml(p, parser);
        return;
    }
    const yaml_node_t *root = yaml_document_get_root_node(&extra);
    if (root != NULL)
        cfg_error(p, node_line(root), "yaml", "only one document is allowed");
    yaml_document_delete(&extra);
}

static void
parse_document(cfg_parser_t *p, yaml_parser_t *parser, tp_config_t *cfg)
{
    yaml_document_t doc;
    if (!yaml_parser_load(parser, &doc)) {
        error_yaml(p, parser);
        return;
    }
    p->doc = &doc;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root != NULL && node_is_null(root))
        root = NULL; /* only comments */
    if (root != NULL && root->type != YAML_MAPPING_NODE)
        error_expected(p, "", root, "a mapping at the top level");
    else
        parse_mapping(p, tp_config_table, cfg, root, "", root != NULL ? node_line(root) : 1);
    p->doc = NULL;
    yaml_document_delete(&doc);
    check_single_document(p, parser);
}

/* Loads `len` bytes of text; `name` goes into messages and `path` into cfg->path. */
static int
load_text(const char *name, const char *path, const char *text, size_t len, tp_config_t *cfg, char **errors)
{
    memset(cfg, 0, sizeof *cfg);
    cfg_parser_t p = { .name = name };
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        tp_fatal("yaml_parser_initialize: out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    parse_document(&p, &parser, cfg);
    yaml_parser_delete(&parser);
    cfg->path = tp_strdup(path);
    bool failed = p.error_count != 0;
    char *text_errors = take_errors(&p);
    if (errors != NULL)
        *errors = text_errors;
    else
        free(text_errors);
    if (!failed)
        return 0;
    tp_config_free(cfg);
    return -EINVAL;
}

/* Reads a whole file into a NUL-terminated buffer (free() it). Returns 0 or -errno. */
static int
read_file(const char *path, char **out, size_t *out_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    strbuf_t buf = { 0 };
    strbuf_add(&buf, "", 0);
    char chunk[8192];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int rv = -errno;
            free(buf.data);
            close(fd);
            return rv;
        }
        if (n == 0)
            break;
        strbuf_add(&buf, chunk, (size_t)n);
    }
    close(fd);
    *out = buf.data;
    *out_len = buf.len;
    return 0;
}

int
tp_config_load(const char *path, tp_config_t *cfg, char **errors)
{
    char *text;
    size_t len;
    int rv = read_file(path, &text, &len);
    if (rv != 0) {
        memset(cfg, 0, sizeof *cfg);
        if (errors != NULL)
            *errors = tp_sprintf("%s: cannot read: %s\n", path, strerror(-rv));
        return rv;
    }
    char *abs = realpath(path, NULL);
    rv = load_text(path, abs != NULL ? abs : path, text, len, cfg, errors);
    free(abs);
    free(text);
    return rv;
}

int
tp_config_load_string(const char *name, const char *text, tp_config_t *cfg, char **errors)
{
    return load_text(name, name, text, strlen(text), cfg, errors);
}

void
tp_config_free(tp_config_t *cfg)
{
    free_fields(tp_config_table, cfg);
    free(cfg->path);
    cfg->path = NULL;
}

const tp_plane_config_t *
tp_config_plane(const tp_config_t *cfg, const char *daemon)
{
    if (strcmp(daemon, "model-gw") == 0)
        return &cfg->model_gw.plane;
    if (strcmp(daemon, "mcp-gw") == 0)
        return &cfg->mcp_gw.plane;
    if (strcmp(daemon, "agent-gw") == 0)
        return &cfg->agent_gw.plane;
    return NULL;
}

/* ---- the configuration reference ---- */

static const char *
type_name(const tp_cfg_field_t *f)
{
    switch (f->type) {
    case TP_CFG_STRING:
        return "string";
    case TP_CFG_INT:
        return "integer";
    case TP_CFG_INT64:
        return "size";
    case TP_CFG_BOOL:
        return "boolean";
    case TP_CFG_ENUM:
        return "choice";
    case TP_CFG_SECTION:
        return "section";
    case TP_CFG_LIST:
        return "list";
    case TP_CFG_DOUBLE:
        return "number";
    case TP_CFG_STRINGS:
        return "strings";
    }
    return "?";
}

static void strbuf_printf(strbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
strbuf_printf(strbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    strbuf_vprintf(b, fmt, ap);
    va_end(ap);
}

static void
reference_rows(strbuf_t *b, const tp_cfg_field_t *table, const char *prefix)
{
    for (const tp_cfg_field_t *f = table; f->key != NULL; f++) {
        char *key = tp_sprintf("%s%s", prefix, f->key);
        strbuf_printf(b, "| `%s` | %s | ", key, type_name(f));
        if (f->required)
            strbuf_printf(b, "required");
        else if (f->def != NULL)
            strbuf_printf(b, "`%s`", f->def);
        strbuf_printf(b, " | %s", f->doc != NULL ? f->doc : "");
        if (f->type == TP_CFG_ENUM) {
            strbuf_printf(b, " (one of:");
            for (const char *const *c = f->choices; *c != NULL; c++)
                strbuf_printf(b, " `%s`", *c);
            strbuf_printf(b, ")");
        }
        if ((f->type == TP_CFG_INT || f->type == TP_CFG_INT64) && f->min < f->max)
            strbuf_printf(b, " (at least %lld)", (long long)f->min);
        strbuf_printf(b, " |\n");
        if (f->type == TP_CFG_LIST || f->type == TP_CFG_SECTION) {
            char *sub = tp_sprintf(f->type == TP_CFG_LIST ? "%s[]." : "%s.", key);
            reference_rows(b, f->sub, sub);
            free(sub);
        }
        free(key);
    }
}

char *
tp_config_reference(void)
{
    strbuf_t b = { 0 };
    strbuf_printf(&b, "# Configuration reference\n\n"
                      "Generated from the configuration tables in `common/config.c` by `gwctl config reference`;\n"
                      "the test suite fails when this file and the tables disagree.\n\n"
                      "One YAML file configures all three daemons. Every key is optional unless marked required;\n"
                      "unknown keys are errors. Scalars may use `${VAR}` (an unset variable is an error),\n"
                      "`${VAR:-default}`, and `$$` for a literal `$`. Sizes take `k`, `m` and `g` suffixes (×1024).\n");
    for (const tp_cfg_field_t *s = tp_config_table; s->key != NULL; s++) {
        strbuf_printf(&b, "\n## `%s`\n\n%s.\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n", s->key,
                      s->doc);
        char *prefix = tp_sprintf(s->type == TP_CFG_LIST ? "%s[]." : "%s.", s->key);
        reference_rows(&b, s->sub, prefix);
        free(prefix);
    }
    return b.data;
}
