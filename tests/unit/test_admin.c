/*
 * test_admin.c — policy/admin.c, policy/snapshot.c and pol_authenticate (policy/authn.c) against
 * a real store: what gwctl changes is audited, and what the daemons load authenticates as it
 * should (API keys: valid, wrong secret, unknown, revoked, expired, rotated, disabled principal).
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
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "authn.h"
#include "snapshot.h"
#include "store.h"

typedef struct fixture {
    char dir[64];
    tp_store_t *store;
    sqlite3 *db;
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_admin.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/t.db", f->dir);
    tp_store_options_t so = { .busy_timeout_ms = 1000, .create = true };
    char *err = NULL;
    assert_int_equal(tp_store_open(path, &so, &f->store, &err), 0);
    f->db = tp_store_db(f->store);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    tp_store_close(f->store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
add_principal(sqlite3 *db, const char *json)
{
    json_t *p = json_loads(json, 0, NULL);
    assert_non_null(p);
    char *err = NULL;
    int rv = pol_admin_principal_put(db, "os:test", p, true, &err);
    if (rv != 0)
        fail_msg("principal_put: %s", err);
    json_decref(p);
}

static pol_authn_status_t
auth(sqlite3 *db, const char *key, pol_identity_t *id)
{
    char *err = NULL;
    pol_snapshot_t *snap = pol_snapshot_load(db, &err);
    if (snap == NULL)
        fail_msg("snapshot: %s", err);
    char header[256];
    snprintf(header, sizeof(header), "Bearer %s", key);
    pol_authn_status_t st = pol_authenticate(snap, NULL, header, strlen(header), now_ms(), id);
    char principal[64] = "";
    if (st == POL_AUTHN_OK)
        snprintf(principal, sizeof(principal), "%s", id->principal->id);
    pol_identity_clear(id);
    pol_snapshot_free(snap);
    if (st == POL_AUTHN_OK)
        assert_string_equal(principal, "alice");
    return st;
}

static void
keys_authenticate_until_revoked(void **state)
{
    fixture_t *f = *state;
    add_principal(f->db, "{\"id\":\"alice\",\"kind\":\"user\",\"team\":\"ml\",\"roles\":[\"eng\"]}");
    char *key = NULL, *id = NULL, *err = NULL;
    assert_int_equal(pol_admin_key_create(f->db, "os:test", "alice", "laptop", 0, &key, &id, &err), 0);
    pol_identity_t ident;
    assert_int_equal(auth(f->db, key, &ident), POL_AUTHN_OK);

    char wrong[256];
    snprintf(wrong, sizeof(wrong), "%s", key);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == 'a' ? 'b' : 'a';
    assert_int_equal(auth(f->db, wrong, &ident), POL_AUTHN_UNKNOWN_KEY);
    assert_int_equal(auth(f->db, "tp_zzzzzzzzzzzz_0123456789012345678901234567890123456789012", &ident),
                     POL_AUTHN_UNKNOWN_KEY);
    assert_int_equal(auth(f->db, "not-a-key", &ident), POL_AUTHN_MALFORMED);

    assert_int_equal(pol_admin_key_revoke(f->db, "os:test", id, &err), 0);
    assert_int_equal(auth(f->db, key, &ident), POL_AUTHN_REVOKED);
    /* Revoking again is a no-op; an unknown key is an error naming it. */
    assert_int_equal(pol_admin_key_revoke(f->db, "os:test", id, &err), 0);
    assert_int_equal(pol_admin_key_revoke(f->db, "os:test", "nosuchkey000", &err), -ENOENT);
    assert_non_null(strstr(err, "nosuchkey000"));
    free(err);
    free(key);
    free(id);
}

static void
rotation_keeps_the_old_key_for_the_overlap(void **state)
{
    fixture_t *f = *state;
    add_principal(f->db, "{\"id\":\"alice\",\"kind\":\"user\"}");
    char *key = NULL, *id = NULL, *err = NULL, *key2 = NULL, *id2 = NULL, *key3 = NULL, *id3 = NULL;
    assert_int_equal(pol_admin_key_create(f->db, "os:test", "alice", NULL, 0, &key, &id, &err), 0);
    assert_int_equal(pol_admin_key_rotate(f->db, "os:test", id, 3600 * 1000, &key2, &id2, &err), 0);
    pol_identity_t ident;
    assert_int_equal(auth(f->db, key, &ident), POL_AUTHN_OK); /* still inside the overlap */
    assert_int_equal(auth(f->db, key2, &ident), POL_AUTHN_OK);
    /* Rotating the new key with no overlap expires it at once. */
    assert_int_equal(pol_admin_key_rotate(f->db, "os:test", id2, 0, &key3, &id3, &err), 0);
    assert_int_equal(auth(f->db, key2, &ident), POL_AUTHN_EXPIRED);
    assert_int_equal(auth(f->db, key3, &ident), POL_AUTHN_OK);
    /* Only an active key rotates. */
    char *k4 = NULL, *i4 = NULL;
    assert_int_equal(pol_admin_key_rotate(f->db, "os:test", id2, 0, &k4, &i4, &err), -EINVAL);
    free(err);
    free(key), free(id), free(key2), free(id2), free(key3), free(id3);
}

static void
disabled_principals_and_deleted_ones(void **state)
{
    fixture_t *f = *state;
    add_principal(f->db, "{\"id\":\"alice\",\"kind\":\"user\"}");
    char *key = NULL, *id = NULL, *err = NULL;
    assert_int_equal(pol_admin_key_create(f->db, "os:test", "alice", NULL, 0, &key, &id, &err), 0);
    pol_identity_t ident;
    assert_int_equal(pol_admin_principal_set_enabled(f->db, "os:test", "alice", false, &err), 0);
    assert_int_equal(auth(f->db, key, &ident), POL_AUTHN_DISABLED);
    assert_int_equal(pol_admin_principal_set_enabled(f->db, "os:test", "alice", true, &err), 0);
    assert_int_equal(auth(f->db, key, &ident), POL_AUTHN_OK);
    assert_int_equal(pol_admin_principal_delete(f->db, "os:test", "alice", &err), 0);
    assert_int_equal(auth(f->db, key, &ident), POL_AUTHN_UNKNOWN_KEY); /* its keys went with it */
    free(key);
    free(id);
}

static void
invalid_input_changes_nothing(void **state)
{
    fixture_t *f = *state;
    static const char *const bad[] = {
        "{\"id\":\"a b\",\"kind\":\"user\"}",
        "{\"id\":\"bob\",\"kind\":\"robot\"}",
        "{\"id\":\"bob\",\"kind\":\"user\",\"roles\":\"admin\"}",
        "{\"id\":\"bob\",\"kind\":\"user\",\"labels\":{\"env\":1}}",
        "{\"id\":\"bob\",\"kind\":\"user\",\"colour\":\"blue\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *p = json_loads(bad[i], 0, NULL);
        char *err = NULL;
        assert_int_equal(pol_admin_principal_put(f->db, "os:test", p, true, &err), -EINVAL);
        assert_non_null(err);
        free(err);
        json_decref(p);
    }
    add_principal(f->db, "{\"id\":\"bob\",\"kind\":\"user\"}");
    json_t *dup = json_loads("{\"id\":\"bob\",\"kind\":\"agent\"}", 0, NULL);
    char *err = NULL;
    assert_int_equal(pol_admin_principal_put(f->db, "os:test", dup, true, &err), -EEXIST);
    free(err);
    json_decref(dup);
    char *key = NULL, *id = NULL;
    assert_int_equal(pol_admin_key_create(f->db, "os:test", "nobody", NULL, 0, &key, &id, &err), -ENOENT);
    free(err);
    json_t *rule = json_loads("{\"id\":\"r1\",\"effect\":\"maybe\"}", 0, NULL);
    assert_int_equal(pol_admin_rule_put(f->db, "os:test", rule, true, &err), -EINVAL);
    free(err);
    json_decref(rule);
    json_t *principals = pol_admin_principal_list(f->db, &err);
    assert_int_equal(json_array_size(principals), 1);
    json_decref(principals);
}

static void
every_change_is_audited_without_secrets(void **state)
{
    fixture_t *f = *state;
    char *err = NULL, *key = NULL, *id = NULL;
    add_principal(f->db, "{\"id\":\"alice\",\"kind\":\"user\"}");
    assert_int_equal(pol_admin_key_create(f->db, "os:test", "alice", NULL, 0, &key, &id, &err), 0);
    json_t *rule = json_loads("{\"id\":\"r1\",\"effect\":\"allow\",\"subjects\":{\"principals\":[\"*\"]},"
                              "\"plane\":\"model\",\"resources\":[\"*\"],\"actions\":[\"chat\"]}",
                              0, NULL);
    assert_int_equal(pol_admin_rule_put(f->db, "os:test", rule, true, &err), 0);
    json_decref(rule);
    assert_int_equal(pol_admin_set_default_effect(f->db, "os:test", "allow", &err), 0);
    assert_int_equal(pol_admin_limit_set(f->db, "os:test", "principal", "alice", "*", 60, 0, &err), 0);
    assert_int_equal(pol_admin_budget_set(f->db, "os:test", "principal", "alice", "day", 1000, 0, &err), 0);
    assert_int_equal(pol_admin_rule_delete(f->db, "os:test", "r1", &err), 0);

    json_t *rows = pol_admin_audit(f->db, NULL, NULL, NULL, 0, 0, 0, 100, &err);
    assert_non_null(rows);
    static const char *const expected[] = { "rule.delete", "budget.set", "limit.set",       "settings.default_effect",
                                            "rule.create", "key.create", "principal.create" };
    assert_int_equal(json_array_size(rows), sizeof(expected) / sizeof(expected[0]));
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *row = json_array_get(rows, i);
        assert_string_equal(json_string_value(json_object_get(row, "action")), expected[i]);
        assert_string_equal(json_string_value(json_object_get(row, "actor")), "os:test");
        assert_true(json_is_object(json_object_get(row, "detail")));
    }
    char *text = json_dumps(rows, 0);
    const char *secret = strchr(key + 3, '_') + 1;
    assert_null(strstr(text, secret));
    assert_null(strstr(text, "secret_hash"));
    free(text);
    json_decref(rows);

    /* The snapshot sees all of it. */
    pol_snapshot_t *snap = pol_snapshot_load(f->db, &err);
    assert_non_null(snap);
    assert_true(snap->default_allow);
    assert_int_equal(snap->num_limits, 1);
    assert_int_equal(snap->limits[0].requests_per_minute, 60);
    assert_int_equal(snap->num_budgets, 1);
    assert_int_equal(snap->budgets[0].max_tokens, 1000);
    assert_int_equal(pol_ruleset_count(snap->rules), 0);
    pol_snapshot_free(snap);
    free(key);
    free(id);
}

static void
a_stored_rule_that_no_longer_parses_fails_the_snapshot(void **state)
{
    fixture_t *f = *state;
    char *err = NULL;
    assert_int_equal(tp_store_exec(f->store,
                                   "INSERT INTO policies (id, effect, plane, definition, created_at_ms, updated_at_ms) "
                                   "VALUES ('broken', 'deny', '*', '{\"id\":\"broken\"}', 1, 1)",
                                   &err),
                     0);
    pol_snapshot_t *snap = pol_snapshot_load(f->db, &err);
    assert_null(snap);
    assert_non_null(strstr(err, "broken"));
    free(err);
}

static void
changes_nest_inside_a_caller_transaction(void **state)
{
    fixture_t *f = *state;
    char *err = NULL;
    /* Committed together. */
    assert_int_equal(sqlite3_exec(f->db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    add_principal(f->db, "{\"id\":\"alice\",\"kind\":\"user\"}");
    add_principal(f->db, "{\"id\":\"bob\",\"kind\":\"user\"}");
    /* A failing change inside rolls back only itself... */
    char *key = NULL, *id = NULL;
    assert_int_equal(pol_admin_key_create(f->db, "os:test", "nobody", NULL, 0, &key, &id, &err), -ENOENT);
    free(err);
    err = NULL;
    assert_int_equal(sqlite3_get_autocommit(f->db), 0); /* ...and leaves the caller's transaction open */
    assert_int_equal(sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    json_t *list = pol_admin_principal_list(f->db, &err);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);

    /* Rolled back together: nothing of it remains, not even its audit records. */
    json_t *audit_before = pol_admin_audit(f->db, NULL, NULL, NULL, 0, 0, 0, 100, &err);
    assert_int_equal(sqlite3_exec(f->db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    add_principal(f->db, "{\"id\":\"carol\",\"kind\":\"user\"}");
    assert_int_equal(pol_admin_principal_delete(f->db, "os:test", "alice", &err), 0);
    assert_int_equal(sqlite3_exec(f->db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    list = pol_admin_principal_list(f->db, &err);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);
    json_t *audit_after = pol_admin_audit(f->db, NULL, NULL, NULL, 0, 0, 0, 100, &err);
    assert_int_equal(json_array_size(audit_after), json_array_size(audit_before));
    json_decref(audit_before);
    json_decref(audit_after);
}

static void
deleting_a_principal_audits_its_keys(void **state)
{
    fixture_t *f = *state;
    char *err = NULL, *key = NULL, *id = NULL;
    add_principal(f->db, "{\"id\":\"alice\",\"kind\":\"user\"}");
    assert_int_equal(pol_admin_key_create(f->db, "os:test", "alice", "ci", 0, &key, &id, &err), 0);
    assert_int_equal(pol_admin_principal_delete(f->db, "os:test", "alice", &err), 0);
    json_t *rows = pol_admin_audit(f->db, NULL, "principal.delete", NULL, 0, 0, 0, 10, &err);
    assert_int_equal(json_array_size(rows), 1);
    json_t *keys =
        json_object_get(json_object_get(json_object_get(json_array_get(rows, 0), "detail"), "before"), "api_keys");
    assert_int_equal(json_array_size(keys), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(keys, 0), "id")), id);
    json_decref(rows);
    free(key);
    free(id);
}

/* The audit rows of `action`, newest first (new reference). */
static json_t *
audit_rows(sqlite3 *db, const char *action)
{
    char *err = NULL;
    json_t *rows = pol_admin_audit(db, NULL, action, NULL, 0, 0, 0, 100, &err);
    assert_non_null(rows);
    return rows;
}

static size_t
snapshot_kills(sqlite3 *db)
{
    char *err = NULL;
    pol_snapshot_t *snap = pol_snapshot_load(db, &err);
    assert_non_null(snap);
    size_t n = snap->num_kills;
    pol_snapshot_free(snap);
    return n;
}

static void
a_kill_and_its_release_are_audited_and_reach_the_snapshot(void **state)
{
    fixture_t *f = *state;
    char *err = NULL;
    int64_t id = pol_admin_kill(f->db, "os:alice", "agent", "planner", "incident 42", 0, &err);
    assert_true(id > 0);
    assert_int_equal(snapshot_kills(f->db), 1);

    json_t *kills = pol_admin_kills(f->db, false, &err);
    assert_int_equal(json_array_size(kills), 1);
    json_t *k = json_array_get(kills, 0);
    assert_int_equal(json_integer_value(json_object_get(k, "id")), id);
    assert_string_equal(json_string_value(json_object_get(k, "target")), "planner");
    assert_string_equal(json_string_value(json_object_get(k, "created_by")), "os:alice");
    assert_string_equal(json_string_value(json_object_get(k, "status")), "active");
    assert_true(json_is_null(json_object_get(k, "expires_at_ms")));
    json_decref(kills);

    json_t *rows = audit_rows(f->db, "kill.create");
    assert_int_equal(json_array_size(rows), 1);
    json_t *row = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(row, "actor")), "os:alice");
    assert_string_equal(json_string_value(json_object_get(row, "target")), "agent:planner");
    json_t *after = json_object_get(json_object_get(row, "detail"), "after");
    assert_string_equal(json_string_value(json_object_get(after, "reason")), "incident 42");
    assert_int_equal(json_integer_value(json_object_get(after, "id")), id);
    json_decref(rows);

    /* One kill per target: a second is refused, naming the first, and nothing is written. */
    assert_int_equal(pol_admin_kill(f->db, "os:bob", "agent", "planner", "again", 0, &err), -EEXIST);
    char want[32];
    snprintf(want, sizeof(want), "kill #%lld", (long long)id);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, "os:alice"));
    free(err);
    err = NULL;
    rows = audit_rows(f->db, "kill.create");
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    /* Another kind with the same name is another target. */
    int64_t other = pol_admin_kill(f->db, "os:alice", "principal", "planner", "belt and braces", 0, &err);
    assert_true(other > id);
    assert_int_equal(pol_admin_release(f->db, "os:alice", "principal", "planner", &err), other);

    assert_int_equal(pol_admin_release(f->db, "os:carol", "agent", "planner", &err), id);
    assert_int_equal(snapshot_kills(f->db), 0);
    kills = pol_admin_kills(f->db, false, &err);
    assert_int_equal(json_array_size(kills), 0);
    json_decref(kills);
    kills = pol_admin_kills(f->db, true, &err);
    assert_int_equal(json_array_size(kills), 2);
    k = json_array_get(kills, 1); /* newest first */
    assert_int_equal(json_integer_value(json_object_get(k, "id")), id);
    assert_string_equal(json_string_value(json_object_get(k, "status")), "released");
    assert_string_equal(json_string_value(json_object_get(k, "released_by")), "os:carol");
    assert_true(json_integer_value(json_object_get(k, "released_at_ms")) > 0);
    json_decref(kills);

    rows = audit_rows(f->db, "kill.release");
    assert_int_equal(json_array_size(rows), 2);
    row = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(row, "actor")), "os:carol");
    json_t *detail = json_object_get(row, "detail");
    assert_true(json_is_null(json_object_get(json_object_get(detail, "before"), "released_at_ms")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(detail, "after"), "reason")), "incident 42");
    assert_string_equal(json_string_value(json_object_get(json_object_get(detail, "after"), "status")), "released");
    json_decref(rows);

    /* Nothing left to release. */
    assert_int_equal(pol_admin_release(f->db, "os:carol", "agent", "planner", &err), -ENOENT);
    assert_string_equal(err, "no kill of agent 'planner' is in force");
    free(err);
}

static void
a_kill_needs_a_known_kind_a_valid_name_and_a_reason(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *kind, *target, *reason;
        int64_t ttl_ms;
        const char *says;
    } bad[] = {
        { "robot", "x", "r", 0, "not 'robot'" },      { "agent", "two words", "r", 0, "not 'two words'" },
        { "agent", NULL, "r", 0, "name must be" },    { "team", "ops", "", 0, "needs a reason" },
        { "team", "ops", NULL, 0, "needs a reason" }, { "principal", "bob", "r", -1, "time to live" },
        { "all", "bob", "r", 0, "takes no name" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        assert_int_equal(
            pol_admin_kill(f->db, "os:test", bad[i].kind, bad[i].target, bad[i].reason, bad[i].ttl_ms, &err), -EINVAL);
        if (strstr(err, bad[i].says) == NULL)
            fail_msg("case %zu: '%s' does not say '%s'", i, err, bad[i].says);
        free(err);
    }
    char *long_reason = malloc(POL_KILL_REASON_MAX + 2);
    memset(long_reason, 'x', POL_KILL_REASON_MAX + 1);
    long_reason[POL_KILL_REASON_MAX + 1] = '\0';
    char *err = NULL;
    assert_int_equal(pol_admin_kill(f->db, "os:test", "team", "ops", long_reason, 0, &err), -EINVAL);
    free(err);
    free(long_reason);
    json_t *all = pol_admin_kills(f->db, true, &err);
    assert_int_equal(json_array_size(all), 0);
    json_decref(all);
    json_t *rows = pol_admin_audit(f->db, NULL, NULL, NULL, 0, 0, 0, 100, &err);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);

    /* "all" is spelled without a name, or "*". */
    int64_t id = pol_admin_kill(f->db, "os:test", "all", NULL, "everything stops", 0, &err);
    assert_true(id > 0);
    assert_int_equal(pol_admin_kill(f->db, "os:test", "all", "*", "twice", 0, &err), -EEXIST);
    free(err);
    err = NULL;
    assert_int_equal(pol_admin_release(f->db, "os:test", "all", "", &err), id);
}

static void
an_expired_kill_is_no_longer_in_force(void **state)
{
    fixture_t *f = *state;
    char *err = NULL;
    int64_t before = now_ms();
    int64_t id = pol_admin_kill(f->db, "os:test", "team", "ops", "for an hour", 3600 * 1000, &err);
    assert_true(id > 0);
    json_t *kills = pol_admin_kills(f->db, false, &err);
    int64_t expires = json_integer_value(json_object_get(json_array_get(kills, 0), "expires_at_ms"));
    assert_true(expires >= before + 3600 * 1000 && expires <= now_ms() + 3600 * 1000);
    json_decref(kills);

    /* Its hour is over (moved into the past rather than waited for). */
    assert_int_equal(tp_store_exec(f->store, "UPDATE kills SET expires_at_ms = 1", &err), 0);
    assert_int_equal(snapshot_kills(f->db), 0);
    kills = pol_admin_kills(f->db, false, &err);
    assert_int_equal(json_array_size(kills), 0);
    json_decref(kills);
    kills = pol_admin_kills(f->db, true, &err);
    assert_string_equal(json_string_value(json_object_get(json_array_get(kills, 0), "status")), "expired");
    json_decref(kills);
    assert_int_equal(pol_admin_release(f->db, "os:test", "team", "ops", &err), -ENOENT);
    free(err);
    err = NULL;
    /* A new kill of the same team is not a duplicate of an expired one. */
    assert_true(pol_admin_kill(f->db, "os:test", "team", "ops", "again", 0, &err) > id);
}

static void
the_outcome_of_a_broadcast_is_audited(void **state)
{
    fixture_t *f = *state;
    char *err = NULL;
    int64_t id = pol_admin_kill(f->db, "os:test", "principal", "bob", "drill", 0, &err);
    json_t *outcome = json_pack("{s:s, s:I, s:b, s:[{s:s, s:b, s:b}]}", "command", "kill", "kill_id", (json_int_t)id,
                                "all_confirmed", 0, "daemons", "daemon", "mcp-gw", "requested", 1, "confirmed", 0);
    assert_int_equal(pol_admin_audit_kill_outcome(f->db, "os:test", "principal", "bob", outcome, &err), 0);
    json_t *rows = audit_rows(f->db, "kill.broadcast");
    assert_int_equal(json_array_size(rows), 1);
    json_t *row = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(row, "target")), "principal:bob");
    assert_true(json_equal(json_object_get(row, "detail"), outcome));
    json_decref(rows);
    json_decref(outcome);
}

static void
unknown_kill_targets_are_told_apart(void **state)
{
    fixture_t *f = *state;
    char *err = NULL;
    add_principal(f->db, "{\"id\":\"planner\",\"kind\":\"agent\",\"team\":\"ml\"}");
    assert_int_equal(tp_store_exec(f->store,
                                   "INSERT INTO agents (name, url, created_at_ms, created_by) VALUES ('slow', "
                                   "'http://127.0.0.1:9/', 1, 'os:test')",
                                   &err),
                     0);
    assert_true(pol_admin_kill_target_known(f->db, "agent", "planner"));
    assert_true(pol_admin_kill_target_known(f->db, "agent", "slow"));
    assert_true(pol_admin_kill_target_known(f->db, "principal", "planner"));
    assert_false(pol_admin_kill_target_known(f->db, "principal", "slow"));
    assert_false(pol_admin_kill_target_known(f->db, "agent", "plannr"));
    assert_true(pol_admin_kill_target_known(f->db, "team", "ml"));
    assert_false(pol_admin_kill_target_known(f->db, "team", "ops"));
    assert_true(pol_admin_kill_target_known(f->db, "all", "*"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(keys_authenticate_until_revoked, setup, teardown),
        cmocka_unit_test_setup_teardown(rotation_keeps_the_old_key_for_the_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(disabled_principals_and_deleted_ones, setup, teardown),
        cmocka_unit_test_setup_teardown(invalid_input_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(every_change_is_audited_without_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(a_stored_rule_that_no_longer_parses_fails_the_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(changes_nest_inside_a_caller_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(deleting_a_principal_audits_its_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(a_kill_and_its_release_are_audited_and_reach_the_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(a_kill_needs_a_known_kind_a_valid_name_and_a_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(an_expired_kill_is_no_longer_in_force, setup, teardown),
        cmocka_unit_test_setup_teardown(the_outcome_of_a_broadcast_is_audited, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_kill_targets_are_told_apart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
