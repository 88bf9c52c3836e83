/*
 * test_config.c — tests for common/config.c: defaults, a full file, and every class of error with
 * the exact "FILE:LINE: key: message" line a user would read.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Loads `text` as "t.yaml" and returns the error text (NULL when valid); the caller frees it. */
static char *
load(const char *text, tp_config_t *cfg)
{
    char *errors = (char *)"untouched";
    int rv = tp_config_load_string("t.yaml", text, cfg, &errors);
    if (rv == 0)
        assert_null(errors);
    else
        assert_int_equal(rv, -EINVAL);
    return errors;
}

/* Asserts that `text` is rejected with exactly `expected` as the error text. */
static void
assert_errors(const char *text, const char *expected)
{
    tp_config_t cfg;
    char *errors = load(text, &cfg);
    assert_non_null(errors);
    assert_string_equal(errors, expected);
    assert_null(cfg.path); /* left freed */
    assert_null(cfg.model_gw.plane.listen);
    free(errors);
}

static void
assert_default_listener(const tp_plane_config_t *plane, int port, int workers)
{
    assert_int_equal(plane->listen_count, 1);
    assert_string_equal(plane->listen[0].host, TP_CFG_DEFAULT_HOST);
    assert_int_equal(plane->listen[0].port, port);
    assert_null(plane->listen[0].tls_cert);
    assert_null(plane->listen[0].tls_key);
    assert_int_equal(plane->workers, workers);
}

static void
assert_defaults(const tp_config_t *cfg)
{
    assert_string_equal(cfg->common.log_level, "info");
    assert_int_equal(cfg->common.max_request_size, 8388608);
    assert_int_equal(cfg->common.idle_timeout_ms, 60000);
    assert_int_equal(cfg->common.request_timeout_ms, 30000);
    assert_int_equal(cfg->common.shutdown_timeout_ms, 30000);
    assert_string_equal(cfg->store.path, TP_CFG_DEFAULT_STORE_PATH);
    assert_int_equal(cfg->store.busy_timeout_ms, 5000);
    assert_int_equal(cfg->store.watch_interval_ms, 250);
    assert_int_equal(cfg->store.writer_queue_size, 65536);
    assert_int_equal(cfg->store.writer_batch_size, 512);
    assert_int_equal(cfg->store.writer_flush_ms, 5);
    assert_int_equal(cfg->store.writer_block_ms, 5);
    assert_string_equal(cfg->control.dir, TP_CFG_DEFAULT_CONTROL_DIR);
    assert_default_listener(&cfg->model_gw.plane, 9080, 0);
    assert_default_listener(&cfg->mcp_gw.plane, 9081, 1); /* one event loop */
    assert_string_equal(cfg->mcp_gw.path, "/mcp");
    assert_int_equal(cfg->mcp_gw.server_count, 0);
    assert_int_equal(cfg->mcp_gw.allowed_origin_count, 5);
    assert_string_equal(cfg->model_gw.readiness, "every_model");
    assert_default_listener(&cfg->agent_gw.plane, 9082, 0);
}

static void
defaults_for_empty_file(void **state)
{
    (void)state;
    tp_config_t cfg;
    assert_null(load("", &cfg));
    assert_defaults(&cfg);
    assert_string_equal(cfg.path, "t.yaml");
    tp_config_free(&cfg);
}

static void
defaults_for_comments_and_empty_sections(void **state)
{
    (void)state;
    tp_config_t cfg;
    assert_null(load("# nothing set yet\n", &cfg));
    assert_defaults(&cfg);
    tp_config_free(&cfg);

    /* `section:` with nothing under it, and an explicit null, mean defaults too */
    assert_null(load("common:\nmodel_gw:\n  # listen: later\nstore: ~\n", &cfg));
    assert_defaults(&cfg);
    tp_config_free(&cfg);
}

static const char full_file[] = "common:\n"
                                "  log_level: debug\n"
                                "  max_request_size: 1m\n"
                                "  idle_timeout_ms: 1000\n"
                                "  request_timeout_ms: 2000\n"
                                "  shutdown_timeout_ms: 3000\n"
                                "store:\n"
                                "  path: /data/tp.db\n"
                                "  busy_timeout_ms: 100\n"
                                "  watch_interval_ms: 50\n"
                                "  writer_queue_size: 1024\n"
                                "  writer_batch_size: 64\n"
                                "  writer_flush_ms: 10\n"
                                "  writer_block_ms: 0\n"
                                "control:\n"
                                "  dir: /run/triplane\n"
                                "model_gw:\n"
                                "  workers: 4\n"
                                "  listen:\n"
                                "    - host: 0.0.0.0\n"
                                "      port: 8080\n"
                                "    - {host: '::', port: 8443, tls_cert: /tls/cert.pem, tls_key: /tls/key.pem}\n"
                                "mcp_gw:\n"
                                "  listen:\n"
                                "    - port: 7000\n"
                                "agent_gw:\n"
                                "  workers: 256\n";

static void
full_file_sets_every_field(void **state)
{
    (void)state;
    tp_config_t cfg;
    assert_null(load(full_file, &cfg));
    assert_string_equal(cfg.common.log_level, "debug");
    assert_int_equal(cfg.common.max_request_size, 1048576);
    assert_int_equal(cfg.common.idle_timeout_ms, 1000);
    assert_int_equal(cfg.common.request_timeout_ms, 2000);
    assert_int_equal(cfg.common.shutdown_timeout_ms, 3000);
    assert_string_equal(cfg.store.path, "/data/tp.db");
    assert_int_equal(cfg.store.busy_timeout_ms, 100);
    assert_int_equal(cfg.store.watch_interval_ms, 50);
    assert_int_equal(cfg.store.writer_queue_size, 1024);
    assert_int_equal(cfg.store.writer_batch_size, 64);
    assert_int_equal(cfg.store.writer_flush_ms, 10);
    assert_int_equal(cfg.store.writer_block_ms, 0);
    assert_string_equal(cfg.control.dir, "/run/triplane");

    assert_int_equal(cfg.model_gw.plane.workers, 4);
    assert_int_equal(cfg.model_gw.plane.listen_count, 2);
    assert_string_equal(cfg.model_gw.plane.listen[0].host, "0.0.0.0");
    assert_int_equal(cfg.model_gw.plane.listen[0].port, 8080);
    assert_null(cfg.model_gw.plane.listen[0].tls_cert);
    assert_string_equal(cfg.model_gw.plane.listen[1].host, "::");
    assert_int_equal(cfg.model_gw.plane.listen[1].port, 8443);
    assert_string_equal(cfg.model_gw.plane.listen[1].tls_cert, "/tls/cert.pem");
    assert_string_equal(cfg.model_gw.plane.listen[1].tls_key, "/tls/key.pem");

    assert_int_equal(cfg.mcp_gw.plane.listen_count, 1);
    assert_string_equal(cfg.mcp_gw.plane.listen[0].host, TP_CFG_DEFAULT_HOST); /* per-listener default */
    assert_int_equal(cfg.mcp_gw.plane.listen[0].port, 7000);
    assert_int_equal(cfg.agent_gw.plane.workers, 256);
    assert_default_listener(
        &(tp_plane_config_t){ .listen = cfg.agent_gw.plane.listen, .listen_count = cfg.agent_gw.plane.listen_count },
        9082, 0);
    tp_config_free(&cfg);
}

static void
plane_by_daemon_name(void **state)
{
    (void)state;
    tp_config_t cfg;
    assert_null(load(full_file, &cfg));
    assert_ptr_equal(tp_config_plane(&cfg, "model-gw"), &cfg.model_gw);
    assert_ptr_equal(tp_config_plane(&cfg, "mcp-gw"), &cfg.mcp_gw.plane);
    assert_ptr_equal(tp_config_plane(&cfg, "agent-gw"), &cfg.agent_gw.plane);
    assert_null(tp_config_plane(&cfg, "model_gw"));
    assert_null(tp_config_plane(&cfg, "gwctl"));
    tp_config_free(&cfg);
}

static void
unknown_key_top_level(void **state)
{
    (void)state;
    assert_errors("common:\n  log_level: info\nmodels:\n  x: 1\n", "t.yaml:3: models: unknown key\n");
}

static void
unknown_key_nested(void **state)
{
    (void)state;
    assert_errors("common:\n"
                  "  idle_timeout: 5\n"
                  "model_gw:\n"
                  "  listen:\n"
                  "    - port: 9000\n"
                  "    - host: 0.0.0.0\n"
                  "      prot: 9001\n",
                  "t.yaml:2: common.idle_timeout: unknown key\n"
                  "t.yaml:6: model_gw.listen[1].port: required key is missing\n"
                  "t.yaml:7: model_gw.listen[1].prot: unknown key\n");
}

static void
wrong_types(void **state)
{
    (void)state;
    assert_errors("common:\n  idle_timeout_ms: abc\n",
                  "t.yaml:2: common.idle_timeout_ms: expected an integer, got 'abc'\n");
    assert_errors("common:\n  max_request_size: 8x\n",
                  "t.yaml:2: common.max_request_size: expected an integer (k, m or g suffix allowed), got '8x'\n");
    assert_errors("store:\n  path: [a, b]\n", "t.yaml:2: store.path: expected a string, got a sequence\n");
    assert_errors("store: 5\n", "t.yaml:1: store: expected a mapping, got '5'\n");
    assert_errors("model_gw:\n  listen: {port: 1}\n",
                  "t.yaml:2: model_gw.listen: expected a sequence, got a mapping\n");
    assert_errors("model_gw:\n  listen: [8080]\n", "t.yaml:2: model_gw.listen[0]: expected a mapping, got '8080'\n");
    assert_errors("- common\n", "t.yaml:1: expected a mapping at the top level, got a sequence\n");
}

static void
out_of_range(void **state)
{
    (void)state;
    assert_errors("model_gw:\n  workers: 257\n  listen:\n    - port: 70000\n",
                  "t.yaml:2: model_gw.workers: must be between 0 and 256, got '257'\n"
                  "t.yaml:4: model_gw.listen[0].port: must be between 0 and 65535, got '70000'\n");
    assert_errors("common:\n  request_timeout_ms: 0\n",
                  "t.yaml:2: common.request_timeout_ms: must be at least 1, got '0'\n");
    assert_errors("common:\n  max_request_size: 512\n",
                  "t.yaml:2: common.max_request_size: must be at least 1024, got '512'\n");
    assert_errors("common:\n  idle_timeout_ms: 99999999999\n",
                  "t.yaml:2: common.idle_timeout_ms: must be between 1 and 2147483647, got '99999999999'\n");
    assert_errors("store:\n  writer_queue_size: 10\n  writer_batch_size: 20\n",
                  "t.yaml:2: store: writer_batch_size must not be larger than writer_queue_size\n");
}

static void
enum_must_be_a_choice(void **state)
{
    (void)state;
    assert_errors("common:\n  log_level: verbose\n",
                  "t.yaml:2: common.log_level: must be one of debug, info, warn, error; got 'verbose'\n");
}

static void
env_var_substitution(void **state)
{
    (void)state;
    setenv("TP_TEST_DIR", "/srv", 1);
    setenv("TP_TEST_PORT", "8181", 1);
    setenv("TP_TEST_EMPTY", "", 1);
    unsetenv("TP_TEST_UNSET");
    tp_config_t cfg;
    assert_null(load("store:\n  path: ${TP_TEST_DIR}/tp.db\n"
                     "control:\n  dir: ${TP_TEST_UNSET:-/run/tp}\n"
                     "common:\n  log_level: ${TP_TEST_EMPTY:-warn}\n"
                     "model_gw:\n  listen:\n    - host: \"h${TP_TEST_EMPTY}\"\n      port: ${TP_TEST_PORT}\n",
                     &cfg));
    assert_string_equal(cfg.store.path, "/srv/tp.db");
    assert_string_equal(cfg.control.dir, "/run/tp");             /* unset: the default */
    assert_string_equal(cfg.common.log_level, "warn");           /* empty: the default too */
    assert_string_equal(cfg.model_gw.plane.listen[0].host, "h"); /* empty without a default: empty */
    assert_int_equal(cfg.model_gw.plane.listen[0].port, 8181);   /* substituted before conversion */
    tp_config_free(&cfg);
    unsetenv("TP_TEST_DIR");
    unsetenv("TP_TEST_PORT");
    unsetenv("TP_TEST_EMPTY");
}

static void
dollar_dollar_is_a_literal_dollar(void **state)
{
    (void)state;
    tp_config_t cfg;
    assert_null(load("store:\n  path: /a$$b/$${HOME}/c$d\n", &cfg));
    assert_string_equal(cfg.store.path, "/a$b/${HOME}/c$d");
    tp_config_free(&cfg);
}

static void
env_var_errors(void **state)
{
    (void)state;
    unsetenv("TP_TEST_UNSET");
    assert_errors("\nstore:\n  path: ${TP_TEST_UNSET}/x\n",
                  "t.yaml:3: store.path: environment variable TP_TEST_UNSET is not set\n");
    assert_errors("store:\n  path: /x/${HOME\n", "t.yaml:2: store.path: unterminated ${ in '/x/${HOME'\n");
    assert_errors("store:\n  path: ${1X}\n", "t.yaml:2: store.path: invalid environment variable name '1X'\n");
}

static void
duplicate_key(void **state)
{
    (void)state;
    assert_errors("common:\n  log_level: info\n  log_level: debug\ncommon: {}\n",
                  "t.yaml:3: common.log_level: duplicate key (first at line 2)\n"
                  "t.yaml:4: common: duplicate key (first at line 1)\n");
}

static void
yaml_syntax_error(void **state)
{
    (void)state;
    assert_errors("common:\n  log_level: info\n   bad: [\n",
                  "t.yaml:3: yaml: mapping values are not allowed in this context\n");
    assert_errors("common: {}\n---\nstore: {}\n", "t.yaml:3: yaml: only one document is allowed\n");
}

static void
tls_needs_cert_and_key(void **state)
{
    (void)state;
    assert_errors("mcp_gw:\n"
                  "  listen:\n"
                  "    - port: 1\n"
                  "      tls_cert: c.pem\n"
                  "    - port: 2\n"
                  "      tls_key: k.pem\n",
                  "t.yaml:3: mcp_gw.listen[0]: tls_key is required when tls_cert is set\n"
                  "t.yaml:5: mcp_gw.listen[1]: tls_cert is required when tls_key is set\n");
}

static void
listeners_checked_as_a_whole(void **state)
{
    (void)state;
    assert_errors("agent_gw:\n  listen: []\n", "t.yaml:2: agent_gw: listen must have at least one listener\n");
    assert_errors("agent_gw:\n  listen: [{port: 1}, {port: 1, host: 127.0.0.1}]\n",
                  "t.yaml:2: agent_gw: listen has two listeners on the same host and port\n");
}

static void
all_errors_reported_together(void **state)
{
    (void)state;
    unsetenv("TP_TEST_UNSET");
    assert_errors("bogus: 1\n"
                  "common:\n"
                  "  log_level: loud\n"
                  "  idle_timeout_ms: soon\n"
                  "store:\n"
                  "  path: ${TP_TEST_UNSET}\n"
                  "model_gw:\n"
                  "  listen:\n"
                  "    - port: -1\n",
                  "t.yaml:1: bogus: unknown key\n"
                  "t.yaml:3: common.log_level: must be one of debug, info, warn, error; got 'loud'\n"
                  "t.yaml:4: common.idle_timeout_ms: expected an integer, got 'soon'\n"
                  "t.yaml:6: store.path: environment variable TP_TEST_UNSET is not set\n"
                  "t.yaml:9: model_gw.listen[0].port: must be between 0 and 65535, got '-1'\n");
}

static void
size_suffixes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t bytes;
    } cases[] = {
        { "8m", INT64_C(8) << 20 }, { "8M", INT64_C(8) << 20 }, { "64k", INT64_C(64) << 10 },
        { "2G", INT64_C(2) << 30 }, { "4096", 4096 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "common:\n  max_request_size: %s\n", cases[i].text);
        tp_config_t cfg;
        assert_null(load(text, &cfg));
        assert_int_equal(cfg.common.max_request_size, cases[i].bytes);
        tp_config_free(&cfg);
    }
}

static void
size_suffix_limits(void **state)
{
    (void)state;
    tp_config_t cfg;
    assert_null(load("common:\n  max_request_size: 1k\n", &cfg)); /* exactly the minimum */
    assert_int_equal(cfg.common.max_request_size, 1024);
    tp_config_free(&cfg);
    assert_errors(
        "common:\n  max_request_size: 9999999999999g\n",
        "t.yaml:2: common.max_request_size: must be between 1024 and 9223372036854775807, got '9999999999999g'\n");
    assert_errors("common:\n  max_request_size: 8mb\n",
                  "t.yaml:2: common.max_request_size: expected an integer (k, m or g suffix allowed), got '8mb'\n");
    assert_errors("common:\n  idle_timeout_ms: 8k\n",
                  "t.yaml:2: common.idle_timeout_ms: expected an integer, got '8k'\n");
}

static void
free_twice_and_on_zeroed(void **state)
{
    (void)state;
    tp_config_t cfg = { 0 };
    tp_config_free(&cfg);
    assert_null(load(full_file, &cfg));
    tp_config_free(&cfg);
    assert_null(cfg.path);
    assert_null(cfg.common.log_level);
    assert_null(cfg.model_gw.plane.listen);
    assert_int_equal(cfg.model_gw.plane.listen_count, 0);
    tp_config_free(&cfg); /* a second call finds nothing to free */
}

static void
load_from_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char good[] = "common:\n  log_level: error\n";
    assert_int_equal(write(fd, good, strlen(good)), (ssize_t)strlen(good));
    close(fd);

    tp_config_t cfg;
    char *errors = (char *)"untouched";
    assert_int_equal(tp_config_load(path, &cfg, &errors), 0);
    assert_null(errors);
    assert_string_equal(cfg.common.log_level, "error");
    char *abs = realpath(path, NULL);
    assert_string_equal(cfg.path, abs);
    free(abs);
    tp_config_free(&cfg);

    /* errors name the path as given */
    static const char text[] = "common:\n  log_level: error\n  bogus: 1\n";
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(tp_config_load(path, &cfg, &errors), -EINVAL);
    char *expected = NULL;
    assert_true(asprintf(&expected, "%s:3: common.bogus: unknown key\n", path) > 0);
    assert_string_equal(errors, expected);
    free(expected);
    free(errors);
    unlink(path);

    assert_int_equal(tp_config_load(path, &cfg, &errors), -ENOENT);
    assert_true(asprintf(&expected, "%s: cannot read: No such file or directory\n", path) > 0);
    assert_string_equal(errors, expected);
    assert_null(cfg.path);
    free(expected);
    free(errors);
}

static void
booleans(void **state)
{
    (void)state;
    static const char *const truthy[] = { "true", "yes", "on", "True", "ON" };
    static const char *const falsy[] = { "false", "no", "off" };
    for (size_t i = 0; i < sizeof(truthy) / sizeof(truthy[0]) + sizeof(falsy) / sizeof(falsy[0]); i++) {
        bool expect = i < sizeof(truthy) / sizeof(truthy[0]);
        const char *word = expect ? truthy[i] : falsy[i - sizeof(truthy) / sizeof(truthy[0])];
        char text[64];
        snprintf(text, sizeof(text), "common:\n  debug_endpoints: %s\n", word);
        tp_config_t cfg;
        char *errors = load(text, &cfg);
        if (errors != NULL)
            fail_msg("'%s' was refused: %s", word, errors);
        assert_int_equal(cfg.common.debug_endpoints, expect);
        tp_config_free(&cfg);
    }
    assert_errors("common:\n  debug_endpoints: maybe\n",
                  "t.yaml:2: common.debug_endpoints: expected true/false, yes/no or on/off, got 'maybe'\n");
}

static void
jwt_issuers_and_pricing(void **state)
{
    (void)state;
    setenv("TP_TEST_JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
    tp_config_t cfg;
    char *errors = load("auth:\n"
                        "  jwt:\n"
                        "    - issuer: https://idp.example\n"
                        "      audience: [triplane, gw]\n"
                        "      algorithms: HS256\n"
                        "      hs_secret: ${TP_TEST_JWT_SECRET}\n"
                        "      claims: {team: org}\n"
                        "pricing:\n"
                        "  - model: gpt-4o*\n"
                        "    input_per_million: 2.5\n"
                        "    output_per_million: 10\n",
                        &cfg);
    assert_null(errors);
    assert_int_equal(cfg.auth.jwt_count, 1);
    const tp_jwt_issuer_config_t *j = &cfg.auth.jwt[0];
    assert_string_equal(j->issuer, "https://idp.example");
    assert_int_equal(j->audience_count, 2);
    assert_string_equal(j->audiences[1], "gw");
    assert_int_equal(j->algorithm_count, 1); /* one scalar is a one-element list */
    assert_string_equal(j->algorithms[0], "HS256");
    assert_string_equal(j->hs_secret, "0123456789abcdef0123456789abcdef");
    assert_int_equal(j->leeway_s, 60);
    assert_string_equal(j->default_kind, "user");
    assert_string_equal(j->claims.principal, "sub");
    assert_string_equal(j->claims.team, "org");
    assert_int_equal(cfg.pricing_count, 1);
    assert_string_equal(cfg.pricing[0].model, "gpt-4o*");
    assert_true(cfg.pricing[0].input_per_million == 2.5);
    assert_true(cfg.pricing[0].output_per_million == 10.0);
    tp_config_free(&cfg);
    assert_null(cfg.auth.jwt);
    assert_null(cfg.pricing);
}

static void
jwt_issuer_errors(void **state)
{
    (void)state;
    assert_errors("auth:\n"
                  "  jwt:\n"
                  "    - issuer: a\n"
                  "      audience: x\n"
                  "      algorithms: [RS256, none]\n"
                  "      public_key_file: k.pem\n"
                  "    - issuer: b\n"
                  "      audience: x\n"
                  "      algorithms: [HS256]\n"
                  "    - issuer: c\n"
                  "      audience: x\n"
                  "      algorithms: [ES256]\n"
                  "    - issuer: d\n"
                  "      audience: {a: 1}\n"
                  "      algorithms: [HS256]\n"
                  "      hs_secret: short\n"
                  "pricing:\n"
                  "  - model: m\n"
                  "    input_per_million: cheap\n",
                  "t.yaml:5: auth.jwt[0].algorithms[1]: unknown or refused algorithm (allowed: HS256/384/512, "
                  "RS256/384/512, PS256/384/512, ES256/384/512)\n"
                  "t.yaml:7: auth.jwt[1]: an HS algorithm needs hs_secret\n"
                  "t.yaml:10: auth.jwt[2]: an RS, PS or ES algorithm needs public_key_file or jwks_file\n"
                  "t.yaml:14: auth.jwt[3].audience: expected a string or a sequence of strings, got a mapping\n"
                  "t.yaml:19: pricing[0].input_per_million: expected a number, got 'cheap'\n");
}

static void
models_and_deployments(void **state)
{
    (void)state;
    tp_config_t cfg;
    char *errors = load("model_gw:\n"
                        "  models:\n"
                        "    - name: llama3\n"
                        "      deployments:\n"
                        "        - url: http://127.0.0.1:8080/v1\n"
                        "          model: meta-llama-3-8b\n"
                        "          weight: 3\n"
                        "        - url: https://gpu2.internal/v1\n"
                        "      fallbacks: [small]\n"
                        "      max_tokens: 4096\n"
                        "    - name: small\n"
                        "      deployments: [{url: 'http://127.0.0.1:8081'}]\n",
                        &cfg);
    assert_null(errors);
    assert_int_equal(cfg.model_gw.model_count, 2);
    const tp_model_config_t *m = &cfg.model_gw.models[0];
    assert_string_equal(m->name, "llama3");
    assert_string_equal(m->kind, "chat");
    assert_int_equal(m->deployment_count, 2);
    assert_string_equal(m->deployments[0].model, "meta-llama-3-8b");
    assert_int_equal(m->deployments[0].weight, 3);
    assert_null(m->deployments[1].model);
    assert_int_equal(m->deployments[1].weight, 1);
    assert_int_equal(m->deployments[1].first_byte_timeout_ms, 60000);
    assert_int_equal(m->fallback_count, 1);
    assert_int_equal(m->max_tokens, 4096);
    tp_config_free(&cfg);

    assert_errors("model_gw:\n"
                  "  models:\n"
                  "    - name: x\n"
                  "      deployments: []\n"
                  "    - name: y\n"
                  "      deployments:\n"
                  "        - url: ftp://nope\n",
                  "t.yaml:3: model_gw.models[0]: deployments must list at least one deployment\n"
                  "t.yaml:7: model_gw.models[1].deployments[0].url: must be an http:// or https:// URL\n");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_for_empty_file),
        cmocka_unit_test(defaults_for_comments_and_empty_sections),
        cmocka_unit_test(full_file_sets_every_field),
        cmocka_unit_test(plane_by_daemon_name),
        cmocka_unit_test(unknown_key_top_level),
        cmocka_unit_test(unknown_key_nested),
        cmocka_unit_test(wrong_types),
        cmocka_unit_test(out_of_range),
        cmocka_unit_test(enum_must_be_a_choice),
        cmocka_unit_test(env_var_substitution),
        cmocka_unit_test(dollar_dollar_is_a_literal_dollar),
        cmocka_unit_test(env_var_errors),
        cmocka_unit_test(duplicate_key),
        cmocka_unit_test(yaml_syntax_error),
        cmocka_unit_test(tls_needs_cert_and_key),
        cmocka_unit_test(listeners_checked_as_a_whole),
        cmocka_unit_test(all_errors_reported_together),
        cmocka_unit_test(size_suffixes),
        cmocka_unit_test(size_suffix_limits),
        cmocka_unit_test(free_twice_and_on_zeroed),
        cmocka_unit_test(load_from_file),
        cmocka_unit_test(booleans),
        cmocka_unit_test(jwt_issuers_and_pricing),
        cmocka_unit_test(jwt_issuer_errors),
        cmocka_unit_test(models_and_deployments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
