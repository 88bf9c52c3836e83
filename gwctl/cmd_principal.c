/* gwctl principal: add, list, show, disable, enable and remove principals. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "args.h"

#define ADD_USAGE " ID --kind user|service|agent [--team T] [--role R]... [--label k=v]... [--description D]"

static bool
valid_kind(const char *kind)
{
    return strcmp(kind, "user") == 0 || strcmp(kind, "service") == 0 || strcmp(kind, "agent") == 0;
}

/* Parses add's options into a new principal object; returns 0 or 2 after a usage error. */
static int
parse_add(gwctl_call_t *c, int argc, char **argv, json_t *p)
{
    static const struct option opts[] = {
        { "kind", required_argument, NULL, 'k' },        { "team", required_argument, NULL, 't' },
        { "role", required_argument, NULL, 'r' },        { "label", required_argument, NULL, 'l' },
        { "description", required_argument, NULL, 'd' }, { NULL, 0, NULL, 0 },
    };
    json_t *roles = json_array(), *labels = json_object();
    json_object_set_new(p, "roles", roles);
    json_object_set_new(p, "labels", labels);
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        if (opt == 'k' && !valid_kind(optarg))
            return gwctl_usage_error(c, "--kind must be user, service or agent, not '%s'", optarg);
        if (opt == 'l' && gwctl_parse_label(optarg, labels) != 0)
            return gwctl_usage_error(c, "--label takes key=value, not '%s'", optarg);
        if (opt == 'k')
            json_object_set_new(p, "kind", json_string(optarg));
        else if (opt == 't')
            json_object_set_new(p, "team", json_string(optarg));
        else if (opt == 'r')
            json_array_append_new(roles, json_string(optarg));
        else if (opt == 'd')
            json_object_set_new(p, "description", json_string(optarg));
    }
    const char *id;
    if (gwctl_operands(c, argc, argv, 1, "the principal's ID", &id) != 0)
        return 2;
    if (json_object_get(p, "kind") == NULL)
        return gwctl_usage_error(c, "--kind is required");
    json_object_set_new(p, "id", json_string(id));
    return 0;
}

static int
principal_add(gwctl_call_t *c, int argc, char **argv)
{
    json_t *p = json_object();
    int rv = parse_add(c, argc, argv, p);
    sqlite3 *db = rv == 0 ? gwctl_call_db(c) : NULL;
    if (rv != 0 || db == NULL) {
        json_decref(p);
        return rv != 0 ? rv : 1;
    }
    char *err = NULL;
    const char *id = json_string_value(json_object_get(p, "id"));
    if (pol_admin_principal_put(db, gwctl_call_actor(c), p, true, &err) != 0) {
        json_decref(p);
        return gwctl_fail(c, err);
    }
    if (c->g->json)
        gwctl_print_json(pol_admin_principal_get(db, id, &err));
    else
        printf("principal %s added (%s)\n", id, json_string_value(json_object_get(p, "kind")));
    free(err);
    json_decref(p);
    return 0;
}

static int
principal_list(gwctl_call_t *c, int argc, char **argv)
{
    if (gwctl_plain_args(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *list = db != NULL ? pol_admin_principal_list(db, &err) : NULL;
    if (list == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    if (c->g->json) {
        gwctl_print_json(list);
        return 0;
    }
    gwctl_table_t t = GWCTL_TABLE(6);
    gwctl_table_row(&t, "ID", "KIND", "TEAM", "ROLES", "ENABLED", "DESCRIPTION");
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p)
    {
        char roles[41], desc[41];
        gwctl_table_row(&t, json_string_value(json_object_get(p, "id")), json_string_value(json_object_get(p, "kind")),
                        json_string_value(json_object_get(p, "team")),
                        gwctl_join(json_object_get(p, "roles"), roles, 40),
                        json_is_true(json_object_get(p, "enabled")) ? "yes" : "no",
                        gwctl_shorten(json_string_value(json_object_get(p, "description")), desc, 40));
    }
    gwctl_table_print(&t);
    json_decref(list);
    return 0;
}

static void
print_principal(json_t *p, json_t *keys)
{
    char roles[256], t1[GWCTL_TIME_LEN], t2[GWCTL_TIME_LEN];
    const char *team = json_string_value(json_object_get(p, "team"));
    printf("id:          %s\n", json_string_value(json_object_get(p, "id")));
    printf("kind:        %s\n", json_string_value(json_object_get(p, "kind")));
    printf("team:        %s\n", team != NULL ? team : "-");
    gwctl_join(json_object_get(p, "roles"), roles, 255);
    printf("roles:       %s\n", roles[0] != '\0' ? roles : "-");
    printf("labels:     %s", json_object_size(json_object_get(p, "labels")) == 0 ? " -" : "");
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(p, "labels"), k, v) printf(" %s=%s", k, json_string_value(v));
    printf("\nenabled:     %s\n", json_is_true(json_object_get(p, "enabled")) ? "yes" : "no");
    printf("description: %s\n", json_string_value(json_object_get(p, "description")));
    printf("created:     %s\n", gwctl_format_time(json_integer_value(json_object_get(p, "created_at_ms")), t1));
    printf("updated:     %s\n", gwctl_format_time(json_integer_value(json_object_get(p, "updated_at_ms")), t2));
    size_t i, active = 0;
    json_t *key;
    json_array_foreach(keys, i, key) active += strcmp(json_string_value(json_object_get(key, "status")), "active") == 0;
    printf("API keys:    %zu active, %zu in all (gwctl key list --principal %s)\n", active, json_array_size(keys),
           json_string_value(json_object_get(p, "id")));
}

static int
principal_show(gwctl_call_t *c, int argc, char **argv)
{
    const char *id;
    if (gwctl_plain_args(c, argc, argv, 1, "the principal's ID", &id) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    json_t *p = pol_admin_principal_get(db, id, &err);
    json_t *keys = p != NULL ? pol_admin_key_list(db, id, &err) : NULL;
    if (keys == NULL) {
        json_decref(p);
        return gwctl_fail(c, err);
    }
    if (c->g->json) {
        json_object_set_new(p, "keys", keys);
        gwctl_print_json(p);
        return 0;
    }
    print_principal(p, keys);
    json_decref(keys);
    json_decref(p);
    return 0;
}

/* disable, enable and rm: one ID, one call, one line. */
static int
principal_change(gwctl_call_t *c, int argc, char **argv)
{
    const char *id;
    if (gwctl_plain_args(c, argc, argv, 1, "the principal's ID", &id) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    const char *actor = gwctl_call_actor(c);
    bool rm = strcmp(argv[0], "rm") == 0, enable = strcmp(argv[0], "enable") == 0;
    int rv = rm ? pol_admin_principal_delete(db, actor, id, &err)
                : pol_admin_principal_set_enabled(db, actor, id, enable, &err);
    if (rv != 0)
        return gwctl_fail(c, err);
    if (c->g->json && rm)
        gwctl_print_json(json_pack("{s:s, s:b}", "id", id, "removed", true));
    else if (c->g->json)
        gwctl_print_json(json_pack("{s:s, s:b}", "id", id, "enabled", enable));
    else if (rm)
        printf("principal %s removed, with its API keys\n", id);
    else
        printf("principal %s %s\n", id, enable ? "enabled" : "disabled");
    return 0;
}

static const gwctl_sub_t subs[] = {
    { "add", ADD_USAGE, principal_add },    { "list", "", principal_list },        { "show", " ID", principal_show },
    { "disable", " ID", principal_change }, { "enable", " ID", principal_change }, { "rm", " ID", principal_change },
};

static int
run_principal(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_principal, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_principal = {
    .name = "principal",
    .summary = "Manage principals: the users, services and agents that call the gateways.",
    .usage = " add" ADD_USAGE "\n"
             "       gwctl principal list\n"
             "       gwctl principal show|disable|enable|rm ID\n"
             "  rm also removes the principal's API keys.",
    .run = run_principal,
};
