/*
 * test_registry.c — agent-gw/registry.c against a real store and a parsed configuration: the
 * merge of configured and stored agents (the configuration wins), default card URLs, lookups,
 * and the audited changes gwctl agent makes, which make the daemons reload.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry.h"
#include "config.h"
#include "store.h"

#define BUSY_TIMEOUT_MS 5000
#define ACTOR           "os:tester"

/* Two configured agents; the store may add others, or one of the same name. */
static const char CONFIG[] = "agent_gw:\n"
                             "  agents:\n"
                             "    - name: planner\n"
                             "      url: http://127.0.0.1:9001/a2a/v1\n"
                             "      labels: [team=ml, tier=1]\n"
                             "    - name: coder\n"
                             "      url: https://coder.example:8443/rpc\n"
                             "      card_url: https://cards.example/coder.json\n"
                             "      version: \"1.0\"\n";

typedef struct fixture {
    char dir[64];
    char path[128];
    tp_store_t *store;
    sqlite3 *db;
    tp_config_t cfg;
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_registry.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    tp_store_options_t so = { .busy_timeout_ms = BUSY_TIMEOUT_MS, .create = true };
    char *err = NULL;
    assert_int_equal(tp_store_open(f->path, &so, &f->store, &err), 0);
    f->db = tp_store_db(f->store);
    if (tp_config_load_string("test.yaml", CONFIG, &f->cfg, &err) != 0)
        fail_msg("config: %s", err);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    tp_config_free(&f->cfg);
    tp_store_close(f->store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- helpers ---- */

static void
exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static int64_t
query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return v;
}

/* The first column of the first row, parsed as JSON (a new reference). */
static json_t *
query_json(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    json_t *v = json_loads((const char *)sqlite3_column_text(stmt, 0), 0, NULL);
    sqlite3_finalize(stmt);
    assert_non_null(v);
    return v;
}

static json_t *
labels(const char *text)
{
    json_t *v = json_loads(text, 0, NULL);
    assert_non_null(v);
    return v;
}

static void
add_ok(fixture_t *f, const char *name, const char *url, const char *card_url, const char *version,
       const char *labels_json)
{
    json_t *l = labels_json != NULL ? labels(labels_json) : NULL;
    char *err = NULL;
    int rv = ag_registry_add(f->db, ACTOR, name, url, card_url, version, l, &err);
    if (rv != 0)
        fail_msg("add %s: %d %s", name, rv, err);
    json_decref(l);
}

/* The names in the registry, in order, joined with ' '. */
static void
assert_names(const ag_registry_t *r, const char *want)
{
    char got[512] = "";
    for (size_t i = 0; i < ag_registry_count(r); i++) {
        size_t n = strlen(got);
        snprintf(got + n, sizeof(got) - n, "%s%s", i > 0 ? " " : "", ag_registry_at(r, i)->name);
    }
    if (strcmp(got, want) != 0)
        fail_msg("registry '%s', want '%s'", got, want);
}

/* ---- helpers both sides use ---- */

static void
test_default_card_url(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        { "http://127.0.0.1:9001/a2a/v1", "http://127.0.0.1:9001/.well-known/agent-card.json" },
        { "https://agent.example", "https://agent.example/.well-known/agent-card.json" },
        { "https://agent.example?x=1", "https://agent.example/.well-known/agent-card.json" },
        { "http://[::1]:8080/rpc#f", "http://[::1]:8080/.well-known/agent-card.json" },
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        char *card = ag_registry_default_card_url(pairs[i][0]);
        assert_non_null(card);
        assert_string_equal(card, pairs[i][1]);
        free(card);
    }
    assert_null(ag_registry_default_card_url("ftp://agent.example/x"));
    assert_null(ag_registry_default_card_url("agent.example"));
    assert_null(ag_registry_default_card_url(NULL));
}

static void
test_valid_name(void **state)
{
    (void)state;
    assert_true(ag_registry_valid_name("planner"));
    assert_true(ag_registry_valid_name("Coder_2-b"));
    assert_false(ag_registry_valid_name(""));
    assert_false(ag_registry_valid_name(NULL));
    assert_false(ag_registry_valid_name("a b"));
    assert_false(ag_registry_valid_name("a/b"));
    assert_false(ag_registry_valid_name("a.b")); /* principal ids allow '.', agent names and paths do not */
    char longest[AG_AGENT_NAME_MAX + 2];
    memset(longest, 'a', AG_AGENT_NAME_MAX);
    longest[AG_AGENT_NAME_MAX] = '\0';
    assert_true(ag_registry_valid_name(longest));
    strcat(longest, "a");
    assert_false(ag_registry_valid_name(longest));
}

/* ---- the daemon's registry ---- */

static void
test_load_config_only(void **state)
{
    fixture_t *f = *state;
    char *err = NULL;
    ag_registry_t *r = ag_registry_load(f->db, &f->cfg.agent_gw, &err);
    assert_non_null(r);
    assert_names(r, "coder planner");

    const ag_agent_t *p = ag_registry_find(r, "planner");
    assert_non_null(p);
    assert_ptr_equal(p->cfg, &f->cfg.agent_gw.agents[0]);
    assert_string_equal(p->url, "http://127.0.0.1:9001/a2a/v1");
    assert_string_equal(p->card_url, "http://127.0.0.1:9001/.well-known/agent-card.json");
    assert_string_equal(p->version, "0.3");
    assert_string_equal(json_string_value(json_object_get(p->labels, "team")), "ml");
    assert_string_equal(json_string_value(json_object_get(p->labels, "tier")), "1");

    const ag_agent_t *c = ag_registry_find(r, "coder");
    assert_non_null(c);
    assert_string_equal(c->card_url, "https://cards.example/coder.json");
    assert_string_equal(c->version, "1.0");
    assert_int_equal(json_object_size(c->labels), 0);

    assert_null(ag_registry_find(r, "writer"));
    assert_null(ag_registry_find(r, "Planner"));
    assert_null(ag_registry_at(r, 2));
    ag_registry_free(r);
}

static void
test_load_merges_store_config_wins(void **state)
{
    fixture_t *f = *state;
    add_ok(f, "writer", "http://10.0.0.5:7000/", NULL, "1.0", "{\"env\":\"dev\"}");
    add_ok(f, "archivist", "https://arch.example/rpc", "https://arch.example/card", NULL, NULL);
    add_ok(f, "coder", "http://evil.example/", NULL, NULL, NULL); /* shadowed by the configuration */
    char *err = NULL;
    ag_registry_t *r = ag_registry_load(f->db, &f->cfg.agent_gw, &err);
    assert_non_null(r);
    assert_names(r, "archivist coder planner writer");

    const ag_agent_t *c = ag_registry_find(r, "coder");
    assert_non_null(c->cfg);
    assert_string_equal(c->url, "https://coder.example:8443/rpc");

    const ag_agent_t *w = ag_registry_find(r, "writer");
    assert_null(w->cfg);
    assert_string_equal(w->url, "http://10.0.0.5:7000/");
    assert_string_equal(w->card_url, "http://10.0.0.5:7000/.well-known/agent-card.json");
    assert_string_equal(w->version, "1.0");
    assert_string_equal(json_string_value(json_object_get(w->labels, "env")), "dev");

    const ag_agent_t *a = ag_registry_find(r, "archivist");
    assert_string_equal(a->card_url, "https://arch.example/card");
    assert_string_equal(a->version, "0.3");
    ag_registry_free(r);

    /* Without a configuration the stored agents are all there is, coder included. */
    r = ag_registry_load(f->db, NULL, &err);
    assert_names(r, "archivist coder writer");
    assert_string_equal(ag_registry_find(r, "coder")->url, "http://evil.example/");
    ag_registry_free(r);
}

static void
test_load_skips_unusable_rows(void **state)
{
    fixture_t *f = *state;
    /* What only a hand edit (or an older gwctl) can store: a URL that is not http(s), or that the
     * gateway cannot call (https to an address, user info; the card URL too), labels that are not
     * an object. The agent is left out, the others load. */
    exec_sql(f->db, "INSERT INTO agents (name, url, labels, created_at_ms, created_by) VALUES "
                    "('ftp', 'ftp://x/', '{}', 1, 'sql'), ('odd', 'http://odd/', '[1]', 1, 'sql'), "
                    "('tlsip', 'https://10.0.0.1/a2a', '{}', 1, 'sql'), ('creds', 'http://u:p@x/', '{}', 1, 'sql')");
    exec_sql(f->db, "INSERT INTO agents (name, url, card_url, labels, created_at_ms, created_by) VALUES "
                    "('badcard', 'http://x/', 'https://10.0.0.2/card', '{}', 1, 'sql')");
    char *err = NULL;
    ag_registry_t *r = ag_registry_load(f->db, NULL, &err);
    assert_non_null(r);
    assert_names(r, "odd");
    assert_true(json_is_object(ag_registry_find(r, "odd")->labels));
    ag_registry_free(r);
}

static void
test_load_reports_store_failure(void **state)
{
    fixture_t *f = *state;
    exec_sql(f->db, "DROP TABLE agents");
    char *err = NULL;
    assert_null(ag_registry_load(f->db, &f->cfg.agent_gw, &err));
    assert_non_null(strstr(err, "no such table: agents"));
    free(err);
}

static void
test_empty_registry(void **state)
{
    fixture_t *f = *state;
    char *err = NULL;
    ag_registry_t *r = ag_registry_load(f->db, NULL, &err);
    assert_non_null(r);
    assert_int_equal(ag_registry_count(r), 0);
    assert_null(ag_registry_find(r, "planner"));
    ag_registry_free(r);
    assert_int_equal(ag_registry_count(NULL), 0);
    ag_registry_free(NULL);
}

/* ---- the admin side ---- */

static void
test_add_is_audited_and_bumps(void **state)
{
    fixture_t *f = *state;
    int64_t version = tp_store_state_version(f->store);
    add_ok(f, "writer", "http://10.0.0.5:7000/rpc", NULL, "1.0", "{\"env\":\"dev\"}");
    assert_true(tp_store_state_version(f->store) > version); /* agent-gw reloads its registry */

    assert_int_equal(query_int(f->db, "SELECT count(*) FROM audit_log"), 1);
    json_t *detail = query_json(f->db, "SELECT detail FROM audit_log WHERE action = 'agent.add' AND target = 'writer' "
                                       "AND actor = '" ACTOR "'");
    assert_true(json_is_null(json_object_get(detail, "before")));
    json_t *after = json_object_get(detail, "after");
    assert_string_equal(json_string_value(json_object_get(after, "url")), "http://10.0.0.5:7000/rpc");
    assert_true(json_is_null(json_object_get(after, "card_url")));
    assert_string_equal(json_string_value(json_object_get(after, "version")), "1.0");
    assert_string_equal(json_string_value(json_object_get(json_object_get(after, "labels"), "env")), "dev");
    assert_string_equal(json_string_value(json_object_get(after, "created_by")), ACTOR);
    json_decref(detail);
}

static void
test_add_refuses_bad_input(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *name, *url, *card_url, *version, *labels, *message;
    } cases[] = {
        { "a b", "http://x/", NULL, NULL, NULL, "agent name 'a b' must be" },
        { "", "http://x/", NULL, NULL, NULL, "agent name '' must be" },
        { "a", "ftp://x/", NULL, NULL, NULL, "url 'ftp://x/' must be an http:// or https:// URL" },
        { "a", "http://", NULL, NULL, NULL, "url 'http://' must be" },
        { "a", "http:///path", NULL, NULL, NULL, "url 'http:///path' must be" },
        { "a", "http://x y/", NULL, NULL, NULL, "url 'http://x y/' must be" },
        { "a", "http://x/", "file:///etc/passwd", NULL, NULL, "card url 'file:///etc/passwd' must be" },
        /* What the gateway could not call (tp_upstream_new refuses it): refused here already. */
        { "a", "https://10.0.0.1/a2a", NULL, NULL, NULL, "https needs a host name, not an IP address" },
        { "a", "https://[::1]/a2a", NULL, NULL, NULL, "https needs a host name" },
        { "a", "http://user:pw@x/", NULL, NULL, NULL, "user info is not supported" },
        { "a", "http://x/a#frag", NULL, NULL, NULL, "no fragment" },
        { "a", "http://x:0/", NULL, NULL, NULL, "invalid port" },
        { "a", "http://x:99999/", NULL, NULL, NULL, "invalid port" },
        { "a", "http://x:/", NULL, NULL, NULL, "invalid port" },
        { "a", "http://x!y/", NULL, NULL, NULL, "invalid host" },
        { "a", "http://[zz]/", NULL, NULL, NULL, "invalid IPv6 address" },
        { "a", "http://x/", "https://192.168.1.1/card", NULL, NULL, "card url 'https://192.168.1.1/card' must be" },
        { "a", "http://x/", NULL, "2.0", NULL, "version must be 0.3 or 1.0, not '2.0'" },
        { "a", "http://x/", NULL, NULL, "{\"n\":1}", "labels must be an object of strings" },
        { "a", "http://x/", NULL, NULL, "[\"x\"]", "labels must be an object of strings" },
    };
    int64_t version = tp_store_state_version(f->store);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *l = cases[i].labels != NULL ? labels(cases[i].labels) : NULL;
        char *err = NULL;
        int rv =
            ag_registry_add(f->db, ACTOR, cases[i].name, cases[i].url, cases[i].card_url, cases[i].version, l, &err);
        json_decref(l);
        assert_int_equal(rv, -EINVAL);
        if (strstr(err, cases[i].message) == NULL)
            fail_msg("case %zu: '%s' does not say '%s'", i, err, cases[i].message);
        free(err);
    }
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM agents"), 0);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM audit_log"), 0);
    assert_int_equal(tp_store_state_version(f->store), version);
}

static void
test_add_accepts_a_query(void **state)
{
    fixture_t *f = *state;
    add_ok(f, "tenant", "http://q.example/rpc?tenant=1", NULL, NULL, NULL);
    char *err = NULL;
    ag_registry_t *r = ag_registry_load(f->db, NULL, &err);
    assert_string_equal(ag_registry_find(r, "tenant")->url, "http://q.example/rpc?tenant=1");
    assert_string_equal(ag_registry_find(r, "tenant")->card_url, "http://q.example/.well-known/agent-card.json");
    ag_registry_free(r);
}

static void
test_add_twice_is_refused(void **state)
{
    fixture_t *f = *state;
    add_ok(f, "writer", "http://a/", NULL, NULL, NULL);
    char *err = NULL;
    assert_int_equal(ag_registry_add(f->db, ACTOR, "writer", "http://b/", NULL, NULL, NULL, &err), -EEXIST);
    assert_string_equal(err, "agent writer is already in the store");
    free(err);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM audit_log"), 1);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM agents WHERE url = 'http://a/'"), 1);
}

static void
test_remove_is_audited_and_bumps(void **state)
{
    fixture_t *f = *state;
    add_ok(f, "writer", "http://a/", NULL, NULL, "{\"env\":\"dev\"}");
    int64_t version = tp_store_state_version(f->store);
    char *err = NULL;
    assert_int_equal(ag_registry_remove(f->db, ACTOR, "writer", &err), 0);
    assert_true(tp_store_state_version(f->store) > version);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM agents"), 0);
    json_t *detail = query_json(f->db, "SELECT detail FROM audit_log WHERE action = 'agent.remove' AND target = "
                                       "'writer'");
    assert_string_equal(json_string_value(json_object_get(json_object_get(detail, "before"), "url")), "http://a/");
    assert_true(json_is_null(json_object_get(detail, "after")));
    json_decref(detail);

    assert_int_equal(ag_registry_remove(f->db, ACTOR, "writer", &err), -ENOENT);
    assert_string_equal(err, "no agent writer in the store");
    free(err);
    err = NULL;
    /* A configured agent is not in the store: the caller (gwctl) says what to do instead. */
    assert_int_equal(ag_registry_remove(f->db, ACTOR, "planner", &err), -ENOENT);
    free(err);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM audit_log"), 2);
}

static void
test_changes_join_an_open_transaction(void **state)
{
    fixture_t *f = *state;
    /* gwctl apply runs many changes in one transaction: they roll back with it. */
    exec_sql(f->db, "BEGIN");
    add_ok(f, "writer", "http://a/", NULL, NULL, NULL);
    char *err = NULL;
    assert_int_equal(ag_registry_add(f->db, ACTOR, "writer", "http://a/", NULL, NULL, NULL, &err), -EEXIST);
    free(err);
    exec_sql(f->db, "ROLLBACK");
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM agents"), 0);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM audit_log"), 0);

    exec_sql(f->db, "BEGIN");
    add_ok(f, "writer", "http://a/", NULL, NULL, NULL);
    exec_sql(f->db, "COMMIT");
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM agents"), 1);
}

static void
test_list_shows_sources(void **state)
{
    fixture_t *f = *state;
    add_ok(f, "writer", "http://10.0.0.5:7000/rpc", NULL, NULL, "{\"env\":\"dev\"}");
    add_ok(f, "coder", "http://evil.example/", NULL, NULL, NULL);
    char *err = NULL;
    json_t *list = ag_registry_list(f->db, &f->cfg.agent_gw, &err);
    assert_non_null(list);
    assert_int_equal(json_array_size(list), 4);
    static const char *const want[][3] = {
        { "coder", "config", "https://cards.example/coder.json" },
        { "coder", "store", "http://evil.example/.well-known/agent-card.json" },
        { "planner", "config", "http://127.0.0.1:9001/.well-known/agent-card.json" },
        { "writer", "store", "http://10.0.0.5:7000/.well-known/agent-card.json" },
    };
    for (size_t i = 0; i < 4; i++) {
        json_t *a = json_array_get(list, i);
        assert_string_equal(json_string_value(json_object_get(a, "name")), want[i][0]);
        assert_string_equal(json_string_value(json_object_get(a, "source")), want[i][1]);
        assert_string_equal(json_string_value(json_object_get(a, "card_url")), want[i][2]);
    }
    assert_true(json_is_true(json_object_get(json_array_get(list, 1), "ignored")));
    assert_null(json_object_get(json_array_get(list, 3), "ignored"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 3), "created_by")), ACTOR);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(list, 2), "labels"), "team")),
                        "ml");
    json_decref(list);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_card_url),
        cmocka_unit_test(test_valid_name),
        T(test_load_config_only),
        T(test_load_merges_store_config_wins),
        T(test_load_skips_unusable_rows),
        T(test_load_reports_store_failure),
        T(test_empty_registry),
        T(test_add_is_audited_and_bumps),
        T(test_add_refuses_bad_input),
        T(test_add_accepts_a_query),
        T(test_add_twice_is_refused),
        T(test_remove_is_audited_and_bumps),
        T(test_changes_join_an_open_transaction),
        T(test_list_shows_sources),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
