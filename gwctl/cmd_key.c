/* gwctl key: create, list, revoke and rotate API keys. A key's secret is printed once, here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "args.h"

#define DEFAULT_OVERLAP_MS (24 * 3600 * INT64_C(1000)) /* a day to roll the new key out everywhere */

#define ONCE_NOTE "This is the only time the key is shown: store it now. It cannot be shown again."

/* The listed key with this id (new reference), or NULL. */
static json_t *
find_key(sqlite3 *db, const char *id)
{
    char *err = NULL;
    json_t *keys = pol_admin_key_list(db, NULL, &err), *found = NULL, *k;
    size_t i;
    free(err);
    json_array_foreach(keys, i, k)
    {
        if (strcmp(json_string_value(json_object_get(k, "id")), id) == 0)
            found = json_incref(k);
    }
    json_decref(keys);
    return found;
}

/* Prints a freshly made key, then wipes and frees it. `info` is the key's listing (borrowed). */
static void
print_secret(gwctl_call_t *c, char *key, json_t *info, const char *replaces, int64_t old_expires_ms)
{
    char t[GWCTL_TIME_LEN];
    int64_t expires = json_integer_value(json_object_get(info, "expires_at_ms"));
    if (c->g->json) {
        json_t *out = json_pack("{s:O?, s:s, s:O?, s:O?, s:O?}", "id", json_object_get(info, "id"), "key", key,
                                "principal", json_object_get(info, "principal"), "name", json_object_get(info, "name"),
                                "expires_at_ms", json_object_get(info, "expires_at_ms"));
        if (replaces != NULL)
            json_object_set_new(out, "replaces",
                                json_pack("{s:s, s:I, s:s}", "id", replaces, "expires_at_ms",
                                          (json_int_t)old_expires_ms, "expires_at",
                                          gwctl_format_time(old_expires_ms, t)));
        json_object_set_new(out, "note", json_string(ONCE_NOTE));
        gwctl_print_json(out);
    } else {
        printf("API key %s for %s:\n\n    %s\n\n%s\n", json_string_value(json_object_get(info, "id")),
               json_string_value(json_object_get(info, "principal")), key, ONCE_NOTE);
        printf("It expires: %s\n", expires != 0 ? gwctl_format_time(expires, t) : "never");
        if (replaces != NULL)
            printf("The old key %s stops working at %s.\n", replaces, gwctl_format_time(old_expires_ms, t));
    }
    fflush(stdout);
    explicit_bzero(key, strlen(key));
    free(key);
}

static int
key_create(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "principal", required_argument, NULL, 'p' },
        { "name", required_argument, NULL, 'n' },
        { "expires-in", required_argument, NULL, 'e' },
        { NULL, 0, NULL, 0 },
    };
    const char *principal = NULL, *name = NULL;
    int64_t expires_in = 0;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        if (opt == 'p')
            principal = optarg;
        else if (opt == 'n')
            name = optarg;
        else if (gwctl_parse_duration(optarg, &expires_in) != 0 || expires_in == 0)
            return gwctl_usage_error(c, "--expires-in takes a duration such as 30d or 12h, not '%s'", optarg);
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    if (principal == NULL)
        return gwctl_usage_error(c, "--principal is required");
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *key = NULL, *id = NULL, *err = NULL;
    int64_t expires_at = expires_in > 0 ? gwctl_now_ms() + expires_in : 0;
    if (pol_admin_key_create(db, gwctl_call_actor(c), principal, name, expires_at, &key, &id, &err) != 0)
        return gwctl_fail(c, err);
    json_t *info = find_key(db, id);
    if (info == NULL) /* only if the store broke right after the commit; the key still works */
        info = json_pack("{s:s, s:s, s:s?, s:I}", "id", id, "principal", principal, "name", name, "expires_at_ms",
                         (json_int_t)expires_at);
    print_secret(c, key, info, NULL, 0);
    json_decref(info);
    free(id);
    return 0;
}

static int
key_list(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "principal", required_argument, NULL, 'p' },
        { NULL, 0, NULL, 0 },
    };
    const char *principal = NULL;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        principal = optarg;
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *keys = db != NULL ? pol_admin_key_list(db, principal, &err) : NULL;
    if (keys == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    if (c->g->json) {
        gwctl_print_json(keys);
        return 0;
    }
    gwctl_table_t t = GWCTL_TABLE(6);
    gwctl_table_row(&t, "ID", "PRINCIPAL", "NAME", "STATUS", "CREATED", "EXPIRES");
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        char created[GWCTL_TIME_LEN], expires[GWCTL_TIME_LEN], name[31];
        gwctl_table_row(&t, json_string_value(json_object_get(k, "id")),
                        json_string_value(json_object_get(k, "principal")),
                        gwctl_shorten(json_string_value(json_object_get(k, "name")), name, 30),
                        json_string_value(json_object_get(k, "status")),
                        gwctl_format_time(json_integer_value(json_object_get(k, "created_at_ms")), created),
                        gwctl_format_time(json_integer_value(json_object_get(k, "expires_at_ms")), expires));
    }
    gwctl_table_print(&t);
    json_decref(keys);
    return 0;
}

static int
key_revoke(gwctl_call_t *c, int argc, char **argv)
{
    const char *id;
    if (gwctl_plain_args(c, argc, argv, 1, "the key's ID", &id) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    if (pol_admin_key_revoke(db, gwctl_call_actor(c), id, &err) != 0)
        return gwctl_fail(c, err);
    if (c->g->json)
        gwctl_print_json(json_pack("{s:s, s:s}", "id", id, "status", "revoked"));
    else
        printf("API key %s revoked: it stops working within one watch interval\n", id);
    return 0;
}

static int
key_rotate(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "overlap", required_argument, NULL, 'o' },
        { NULL, 0, NULL, 0 },
    };
    const char *old;
    int64_t overlap = DEFAULT_OVERLAP_MS;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        if (gwctl_parse_duration(optarg, &overlap) != 0)
            return gwctl_usage_error(c, "--overlap takes a duration such as 24h or 0, not '%s'", optarg);
    }
    if (gwctl_operands(c, argc, argv, 1, "the key's ID", &old) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *key = NULL, *id = NULL, *err = NULL;
    if (pol_admin_key_rotate(db, gwctl_call_actor(c), old, overlap, &key, &id, &err) != 0)
        return gwctl_fail(c, err);
    json_t *info = find_key(db, id), *old_info = find_key(db, old);
    if (info == NULL)
        info = json_pack("{s:s}", "id", id);
    print_secret(c, key, info, old, json_integer_value(json_object_get(old_info, "expires_at_ms")));
    json_decref(info);
    json_decref(old_info);
    free(id);
    return 0;
}

static const gwctl_sub_t subs[] = {
    { "create", " --principal P [--name N] [--expires-in DURATION]", key_create },
    { "list", " [--principal P]", key_list },
    { "revoke", " KEYID", key_revoke },
    { "rotate", " KEYID [--overlap DURATION]", key_rotate },
};

static int
run_key(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_key, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_key = {
    .name = "key",
    .summary = "Manage API keys (tp_...): create, list, revoke, rotate.",
    .usage = " create --principal P [--name N] [--expires-in DURATION]\n"
             "       gwctl key list [--principal P]\n"
             "       gwctl key revoke KEYID\n"
             "       gwctl key rotate KEYID [--overlap DURATION]\n"
             "  A new key is printed once and cannot be shown again. rotate makes a new key for the same\n"
             "  principal; the old one keeps working for --overlap (default 24h; 0: stops at once).\n"
             "  Durations: 30s, 15m, 24h, 7d, 2w, or sums such as 1h30m.",
    .run = run_key,
};
