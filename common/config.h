/*
 * config.h — the one YAML configuration file shared by the three daemons.
 *
 * The file has the sections `common`, `store`, `control`, `model_gw`, `mcp_gw` and `agent_gw`.
 * Parsing is table-driven (redis standardConfig, nginx ngx_command_t): each section is a table of
 * tp_cfg_field_t giving key, type, offset into a struct, default and validator. Unknown keys are
 * errors; every error names the file, the line and the dotted key ("model_gw.listen[0].port").
 * Scalars may contain ${ENV_VAR} (an unset variable is an error naming it) and ${ENV_VAR:-default};
 * "$$" stands for a literal "$".
 */
#ifndef TP_CONFIG_H
#define TP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the configuration ---- */

typedef struct tp_listener_config {
    char *host;     /* address to bind; default TP_CFG_DEFAULT_HOST */
    int port;       /* 1..65535, required */
    char *tls_cert; /* PEM certificate chain file; NULL means plain HTTP */
    char *tls_key;  /* PEM private key file; required when tls_cert is set */
} tp_listener_config_t;

/* What every daemon's section has: its listeners and worker count. Plane issues extend the
 * daemon sections with their own fields after these. */
typedef struct tp_plane_config {
    tp_listener_config_t *listen; /* array of listen_count listeners; at least one */
    size_t listen_count;
    int workers; /* worker threads; 0 means one per CPU core */
} tp_plane_config_t;

/* One place a model is served: an OpenAI-compatible API (llama.cpp, vLLM, Ollama, hosted). */
typedef struct tp_deployment_config {
    char *url;                 /* base URL of the API, e.g. http://127.0.0.1:8080/v1 */
    char *model;               /* the model name the upstream knows; default: the public name */
    int weight;                /* share of traffic among healthy deployments */
    char *api_key_env;         /* environment variable holding the upstream's credential, or NULL */
    int timeout_ms;            /* whole request, upstream side */
    int first_byte_timeout_ms; /* until the upstream's response head */
    int max_concurrency;       /* requests in flight to this deployment at most; 0: no cap */
    char *health_path;         /* probed with GET every health_interval_ms; "" for none */
    bool warmup;               /* undrain sends a tiny request first; traffic only after it succeeds */
    char *warmup_prompt;       /* the warm-up request's prompt (or embedding input) */
} tp_deployment_config_t;

/* A public model name and where it is served. */
typedef struct tp_model_config {
    char *name; /* what clients ask for */
    tp_deployment_config_t *deployments;
    size_t deployment_count;
    char **fallbacks; /* other public models to try when every deployment of this one fails */
    size_t fallback_count;
    int64_t max_tokens;       /* cap on max_tokens / max_completion_tokens; 0: none */
    int64_t max_input_bytes;  /* request body cap for this model; 0: common.max_request_size */
    bool deny_unknown_fields; /* refuse top-level fields the OpenAI API does not define */
    char *kind;               /* chat | completion | embedding: which endpoints serve it */
    char *affinity;           /* "" none; "user" (the request's user field); "header:<name>" */
} tp_model_config_t;

typedef struct tp_common_config {
    char *log_level;          /* debug | info | warn | error */
    int64_t max_request_size; /* bytes; larger request bodies get 413 */
    int idle_timeout_ms;      /* idle keep-alive / HTTP/2 connections are closed after this */
    int request_timeout_ms;   /* time allowed to receive a request's head and body */
    int shutdown_timeout_ms;  /* on SIGTERM, in-flight requests get this long to finish */
    bool debug_endpoints;     /* serve /debug/sleep, for drills and tests */
} tp_common_config_t;

/* model-gw's section: the common plane settings, then its models. */
typedef struct tp_model_gw_config {
    tp_plane_config_t plane; /* first: the table engine reads listen and workers at its offsets */
    tp_model_config_t *models;
    size_t model_count;
    int health_interval_ms;       /* how often deployments with a health_path are probed */
    char *readiness;              /* every_model | any_model | none: what /readyz asks of the models */
    int response_retention_days;  /* stored Responses are purged this long after creation; 0: kept */
    int64_t response_cache_bytes; /* memory for recent stored Responses (continuation without disk) */
} tp_model_gw_config_t;

/* A header sent to an upstream MCP server over HTTP (secrets via ${ENV}). */
typedef struct tp_mcp_header_config {
    char *name;
    char *value;
} tp_mcp_header_config_t;

/* One MCP server mcp-gw brokers: over Streamable HTTP (url) or a supervised stdio child. */
typedef struct tp_mcp_server_config {
    char *name;      /* [A-Za-z0-9_-]+, unique; the policy resource is "<name>/<tool>" */
    char *transport; /* http | stdio */
    char *url;       /* http: the server's MCP endpoint */
    tp_mcp_header_config_t *headers;
    size_t header_count;
    char *command; /* stdio: the executable */
    char **args;
    size_t arg_count;
    char **env; /* stdio: "NAME=VALUE", the child's whole environment */
    size_t env_count;
    char *cwd;                  /* stdio: working directory; NULL: the gateway's */
    char *start;                /* stdio: on_demand | boot */
    char *prefix;               /* prefix for tool and prompt names; NULL: "<name>__"; "": none */
    int timeout_ms;             /* one request to this server, start to final answer */
    int restart_min_ms;         /* stdio: first restart delay after the child died */
    int restart_max_ms;         /* stdio: the delay doubles up to this */
    int64_t max_response_bytes; /* one message from this server; larger ones are refused */
} tp_mcp_server_config_t;

/* A virtual server: /mcp/<name> exposes only the tools matching `tools` (globs on public names). */
typedef struct tp_mcp_virtual_config {
    char *name;
    char **tools;
    size_t tool_count;
} tp_mcp_virtual_config_t;

/* mcp-gw's section. */
typedef struct tp_mcp_gw_config {
    tp_plane_config_t plane; /* first: the table engine reads listen and workers at its offsets */
    char *path;              /* the MCP endpoint */
    char **allowed_origins;  /* Origin globs accepted (a request without Origin is accepted) */
    size_t allowed_origin_count;
    char **allowed_hosts; /* Host globs accepted (DNS-rebinding protection); empty: any */
    size_t allowed_host_count;
    tp_mcp_server_config_t *servers;
    size_t server_count;
    tp_mcp_virtual_config_t *virtual_servers;
    size_t virtual_count;
    int session_idle_timeout_ms; /* a session without traffic for this long is ended */
    int max_sessions;            /* open sessions at most; initialize beyond it gets 503 */
    int stream_buffer_events;    /* events kept per stream for Last-Event-ID resumption */
    int list_changed_debounce_ms;
    bool audit_arguments;         /* audit raw tool arguments (default: shape and hash only) */
    char **authorization_servers; /* OAuth protected-resource metadata; empty: not served */
    size_t authorization_server_count;
    char *resource_url; /* the resource identifier in that metadata; NULL: derived from the request */
} tp_mcp_gw_config_t;

typedef struct tp_store_config {
    char *path;            /* SQLite database file */
    int busy_timeout_ms;   /* sqlite3_busy_timeout for every connection */
    int watch_interval_ms; /* how often PRAGMA data_version is polled */
    int writer_queue_size; /* records the writer queue holds before it is full */
    int writer_batch_size; /* records committed per transaction at most */
    int writer_flush_ms;   /* a batch is committed after at most this long */
    int writer_block_ms;   /* a producer waits this long on a full queue before dropping */
} tp_store_config_t;

typedef struct tp_control_config {
    char *dir; /* directory holding <daemon>.sock */
} tp_control_config_t;

/* Which JWT claims give a principal's id, kind, team and roles. */
typedef struct tp_jwt_claims_config {
    char *principal; /* default "sub" */
    char *kind;      /* default "kind"; when absent from a token, default_kind applies */
    char *team;      /* default "team" */
    char *roles;     /* default "roles": an array of strings, or one space-separated string */
} tp_jwt_claims_config_t;

/* One trusted JWT issuer. A token is verified only against the issuer named by its `iss`. */
typedef struct tp_jwt_issuer_config {
    char *issuer;     /* the exact `iss` value */
    char **audiences; /* accepted `aud` values; a token must carry one of them */
    size_t audience_count;
    char **algorithms; /* allowed `alg` values (HS256, RS256, ES256, …); `none` is refused */
    size_t algorithm_count;
    char *hs_secret;        /* the HMAC secret for HS* (use ${ENV}) */
    char *public_key_file;  /* a PEM public key for RS*, PS* and ES* */
    char *jwks_file;        /* a JWKS file; keys are picked by `kid` */
    int leeway_s;           /* clock skew allowed for exp and nbf */
    char *default_kind;     /* user | service | agent, when the kind claim is absent */
    bool stored_principals; /* tokens may act as the stored principal with the same id */
    tp_jwt_claims_config_t claims;
} tp_jwt_issuer_config_t;

typedef struct tp_auth_config {
    tp_jwt_issuer_config_t *jwt; /* jwt_count trusted issuers */
    size_t jwt_count;
} tp_auth_config_t;

/* What a model costs, for budgets in money. `model` is a glob; the first match wins. */
typedef struct tp_price_config {
    char *model;
    double input_per_million;  /* currency units per million input tokens */
    double output_per_million; /* currency units per million output tokens */
} tp_price_config_t;

/* One A2A agent agent-gw fronts (more can be added at run time with gwctl agent add). */
typedef struct tp_agent_config {
    char *name;     /* [A-Za-z0-9_-]+: the policy resource, the path /agents/<name>, and the principal id
                       an agent calling through the gateway authenticates as */
    char *url;      /* the agent's JSON-RPC endpoint */
    char *card_url; /* its agent card; NULL: <origin of url>/.well-known/agent-card.json */
    char *version;  /* 0.3 | 1.0: the A2A version pinned upstream (A2A-Version header for 1.0) */
    tp_mcp_header_config_t *headers; /* sent upstream, e.g. the agent's own credential (${ENV}) */
    size_t header_count;
    char **labels; /* "key=value" */
    size_t label_count;
    int timeout_ms;           /* a non-streaming call, start to answer */
    int max_concurrent_tasks; /* requests in flight to this agent at most; 0: no cap */
} tp_agent_config_t;

/* agent-gw's section. */
typedef struct tp_agent_gw_config {
    tp_plane_config_t plane; /* first: the table engine reads listen and workers at its offsets */
    tp_agent_config_t *agents;
    size_t agent_count;
    int max_depth;             /* delegation hops at most (1: no delegation) */
    char *chain_key;           /* HMAC key for delegation chains; NULL: a key kept in the store */
    int64_t max_parts;         /* parts in one message at most */
    int64_t max_file_bytes;    /* one file part's inline bytes (base64 decoded) at most */
    char **push_allowed_hosts; /* host patterns a push-notification URL may name; empty: any public host */
    size_t push_allowed_host_count;
    bool push_allow_http;    /* accept http:// push URLs (default: https only) */
    bool push_allow_private; /* accept private, loopback and link-local addresses (default: refused) */
    bool audit_content;      /* audit raw message content (default: a hash and sizes only) */
    int card_refresh_ms;     /* how long a fetched agent card is served before it is fetched again */
    char *public_url;        /* the gateway's base URL in rewritten cards; NULL: from the request's Host */
} tp_agent_gw_config_t;

typedef struct tp_config {
    char *path; /* the file it was loaded from (absolute when possible) */
    tp_common_config_t common;
    tp_auth_config_t auth;
    tp_price_config_t *pricing; /* pricing_count entries */
    size_t pricing_count;
    tp_store_config_t store;
    tp_control_config_t control;
    tp_model_gw_config_t model_gw;
    tp_mcp_gw_config_t mcp_gw;
    tp_agent_gw_config_t agent_gw;
} tp_config_t;

/* Defaults, each with its reason. */
#define TP_CFG_DEFAULT_HOST                "127.0.0.1" /* never expose by accident; containers set 0.0.0.0 */
#define TP_CFG_DEFAULT_LOG_LEVEL           "info"
#define TP_CFG_DEFAULT_MAX_REQUEST_SIZE    "8388608" /* 8 MiB: long chat histories fit, abuse does not */
#define TP_CFG_DEFAULT_IDLE_TIMEOUT_MS     "60000"   /* one minute, like common reverse proxies */
#define TP_CFG_DEFAULT_REQUEST_TIMEOUT_MS  "30000"   /* slow-loris bound for receiving a request */
#define TP_CFG_DEFAULT_SHUTDOWN_TIMEOUT_MS "30000"   /* long enough for a typical streamed completion */
#define TP_CFG_DEFAULT_STORE_PATH          "var/triplane.db"
#define TP_CFG_DEFAULT_BUSY_TIMEOUT_MS     "5000" /* three daemons and gwctl share one file */
#define TP_CFG_DEFAULT_WATCH_INTERVAL_MS   "250"  /* how quickly a change by gwctl takes effect */
#define TP_CFG_DEFAULT_WRITER_QUEUE_SIZE   "65536"
#define TP_CFG_DEFAULT_WRITER_BATCH_SIZE   "512"
#define TP_CFG_DEFAULT_WRITER_FLUSH_MS     "5" /* bounded latency from accept to commit */
#define TP_CFG_DEFAULT_WRITER_BLOCK_MS     "5" /* brief back-pressure before counting a drop */
#define TP_CFG_DEFAULT_CONTROL_DIR         "var/run"

/* Loads and validates a configuration file into *cfg (zeroed first). Returns 0 on success.
 * On failure returns -EINVAL (or -errno when the file cannot be read) and sets *errors to a
 * malloc'd string of one line per problem, "FILE:LINE: KEY: message" (free() it); *cfg is then
 * left freed. Every problem found is reported, not only the first. */
int tp_config_load(const char *path, tp_config_t *cfg, char **errors);

/* Same as tp_config_load, from a string; `name` is used as the file name in errors. */
int tp_config_load_string(const char *name, const char *text, tp_config_t *cfg, char **errors);

/* Frees everything tp_config_load allocated inside cfg (not cfg itself). Safe on a zeroed cfg. */
void tp_config_free(tp_config_t *cfg);

/* The section of the daemon with this name ("model-gw", "mcp-gw", "agent-gw"), or NULL. */
const tp_plane_config_t *tp_config_plane(const tp_config_t *cfg, const char *daemon);

/* The configuration reference (Markdown) generated from the tables: docs/configuration.md.
 * Returns a malloc'd string. */
char *tp_config_reference(void);

/* ---- the table engine, for sections defined elsewhere ---- */

typedef enum tp_cfg_type {
    TP_CFG_STRING,  /* char *; default may be NULL */
    TP_CFG_INT,     /* int; min/max checked */
    TP_CFG_INT64,   /* int64_t; min/max checked; accepts suffixes k, m, g (×1024) for sizes */
    TP_CFG_BOOL,    /* bool; true/false/yes/no/on/off */
    TP_CFG_ENUM,    /* char *; must be one of `choices` (NULL-terminated) */
    TP_CFG_SECTION, /* a nested mapping described by `sub`, stored inline at offset */
    TP_CFG_LIST,    /* a sequence of mappings described by `sub`: a pointer to an array of
                       elem_size elements at offset, and its size_t count at count_offset */
    TP_CFG_DOUBLE,  /* double; min/max checked when min < max */
    TP_CFG_STRINGS, /* a sequence of strings: char ** at offset, size_t count at count_offset;
                       a single scalar is taken as a one-element list */
} tp_cfg_type_t;

typedef struct tp_cfg_field tp_cfg_field_t;

/* Validates a parsed value; returns NULL when fine, or a static message. `value` points at the
 * field inside the struct. */
typedef const char *(*tp_cfg_validator_t)(const void *value);

struct tp_cfg_field {
    const char *key;
    tp_cfg_type_t type;
    size_t offset;
    const char *def;             /* default as YAML scalar text; NULL means none (then see `required`) */
    bool required;               /* missing key is an error */
    int64_t min, max;            /* for INT/INT64, when min < max */
    const char *const *choices;  /* for ENUM */
    const tp_cfg_field_t *sub;   /* for SECTION and LIST: table ending with key == NULL */
    size_t elem_size;            /* for LIST */
    size_t count_offset;         /* for LIST */
    tp_cfg_validator_t validate; /* optional */
    const char *doc;             /* one line for the configuration reference */
};

/* The top-level table (sections), for documentation generators and tests. */
extern const tp_cfg_field_t tp_config_table[];

#endif
