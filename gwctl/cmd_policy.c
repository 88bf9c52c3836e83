/* gwctl policy: add, list, show and remove authorization rules, and the default effect. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "admin.h"
#include "args.h"
#include "mem.h"
#include "rules.h"
#include "snapshot.h"
#include "yaml_json.h"

/* Stores the file's rule; returns the exit status. */
static int
put_rule(gwctl_call_t *c, const gwctl_yaml_t *doc, bool replace)
{
    json_t *rule = gwctl_yaml_root(doc);
    if (!json_is_object(rule))
        return gwctl_error(c, "%s: the file must hold one rule: an object with id, effect, subjects, ...",
                           gwctl_yaml_name(doc));
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    int rv = pol_admin_rule_put(db, gwctl_call_actor(c), rule, !replace, &err);
    if (rv != 0) {
        gwctl_error(c, "%s: %s%s", gwctl_yaml_name(doc), err != NULL ? err : "failed",
                    rv == -EEXIST ? " (use --replace to change it)" : "");
        free(err);
        return 1;
    }
    const char *id = json_string_value(json_object_get(rule, "id"));
    json_t *stored = c->g->json ? pol_admin_rule_get(db, id, &err) : NULL;
    if (stored != NULL)
        gwctl_print_json(stored);
    else
        printf("rule %s %s\n", id, replace ? "stored" : "added");
    free(err);
    return 0;
}

static int
policy_add(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "file", required_argument, NULL, 'f' },
        { "replace", no_argument, NULL, 'r' },
        { NULL, 0, NULL, 0 },
    };
    const char *file = NULL;
    bool replace = false;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "f:", opts)) != -1) {
        if (opt == '?')
            return 2;
        if (opt == 'f')
            file = optarg;
        else
            replace = true;
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    if (file == NULL)
        return gwctl_usage_error(c, "-f FILE is required (- for standard input)");
    char *err = NULL;
    gwctl_yaml_t *doc = gwctl_yaml_load(file, &err);
    if (doc == NULL)
        return gwctl_fail(c, err);
    int rv = put_rule(c, doc, replace);
    gwctl_yaml_free(doc);
    return rv;
}

/* "alice,svc-*,team:ml,role:admin": the rule's subject lists, each kind prefixed but principals. */
static const char *
subjects_text(json_t *subjects, char *buf, size_t max)
{
    static const char *const kinds[][2] = {
        { "principals", "" }, { "teams", "team:" }, { "roles", "role:" }, { "kinds", "kind:" }
    };
    json_t *all = json_array();
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(subjects, kinds[k][0]), i, s)
        {
            char *text = tp_sprintf("%s%s", kinds[k][1], json_string_value(s));
            json_array_append_new(all, json_string(text));
            free(text);
        }
    }
    gwctl_join(all, buf, max);
    json_decref(all);
    return buf;
}

static int
policy_list(gwctl_call_t *c, int argc, char **argv)
{
    if (gwctl_plain_args(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *rules = db != NULL ? pol_admin_rule_list(db, &err) : NULL;
    if (rules == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    if (c->g->json) {
        gwctl_print_json(rules);
        return 0;
    }
    char *effect = pol_admin_default_effect(db, &err);
    if (effect == NULL) {
        json_decref(rules);
        return gwctl_fail(c, err);
    }
    gwctl_table_t t = GWCTL_TABLE(7);
    gwctl_table_row(&t, "ID", "EFFECT", "PLANE", "SUBJECTS", "RESOURCES", "ACTIONS", "DESCRIPTION");
    size_t i;
    json_t *r;
    json_array_foreach(rules, i, r)
    {
        char subjects[33], resources[33], actions[25], desc[41];
        gwctl_table_row(&t, json_string_value(json_object_get(r, "id")),
                        json_string_value(json_object_get(r, "effect")), json_string_value(json_object_get(r, "plane")),
                        subjects_text(json_object_get(r, "subjects"), subjects, 32),
                        gwctl_join(json_object_get(r, "resources"), resources, 32),
                        gwctl_join(json_object_get(r, "actions"), actions, 24),
                        gwctl_shorten(json_string_value(json_object_get(r, "description")), desc, 40));
    }
    gwctl_table_print(&t);
    printf("\nwhen no rule matches: %s\n", effect);
    json_decref(rules);
    free(effect);
    return 0;
}

static int
policy_show(gwctl_call_t *c, int argc, char **argv)
{
    const char *id;
    if (gwctl_plain_args(c, argc, argv, 1, "the rule's ID", &id) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    json_t *rule = pol_admin_rule_get(db, id, &err);
    if (rule == NULL)
        return gwctl_fail(c, err);
    gwctl_print_json(rule); /* the rule is JSON either way: what `policy add -f` takes back */
    return 0;
}

static int
policy_rm(gwctl_call_t *c, int argc, char **argv)
{
    const char *id;
    if (gwctl_plain_args(c, argc, argv, 1, "the rule's ID", &id) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    if (pol_admin_rule_delete(db, gwctl_call_actor(c), id, &err) != 0)
        return gwctl_fail(c, err);
    if (c->g->json)
        gwctl_print_json(json_pack("{s:s, s:b}", "id", id, "removed", true));
    else
        printf("rule %s removed\n", id);
    return 0;
}

static int
policy_default(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option none[] = { { NULL, 0, NULL, 0 } };
    if (gwctl_getopt(c, argc, argv, "", none) != -1)
        return 2;
    const char *set = NULL;
    if (argc - optind > 1)
        return gwctl_usage_error(c, "unexpected argument '%s'", argv[optind + 1]);
    if (argc - optind == 1)
        set = argv[optind];
    if (set != NULL && strcmp(set, "allow") != 0 && strcmp(set, "deny") != 0)
        return gwctl_usage_error(c, "the default effect is allow or deny, not '%s'", set);
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    if (set != NULL && pol_admin_set_default_effect(db, gwctl_call_actor(c), set, &err) != 0)
        return gwctl_fail(c, err);
    char *effect = pol_admin_default_effect(db, &err);
    if (effect == NULL)
        return gwctl_fail(c, err);
    if (c->g->json)
        gwctl_print_json(json_pack("{s:s}", "default_effect", effect));
    else
        printf("when no rule matches: %s\n", effect);
    free(effect);
    return 0;
}

static void
print_explain(json_t *e, const pol_principal_t *p, const pol_request_t *req)
{
    const char *rule = json_string_value(json_object_get(e, "rule"));
    printf("decision:  %s (%s%s%s)\n", json_string_value(json_object_get(e, "decision")),
           json_string_value(json_object_get(e, "reason")), rule != NULL ? ": " : "", rule != NULL ? rule : "");
    printf("principal: %s (%s%s%s", p->id, pol_kind_name(p->kind), p->team != NULL ? ", team " : "",
           p->team != NULL ? p->team : "");
    for (size_t i = 0; i < p->num_roles; i++)
        printf("%s%s", i == 0 ? ", roles " : " ", p->roles[i]);
    printf(")\nrequest:   plane %s, resource %s, action %s\n", req->plane, req->resource, req->action);
    json_t *rules = json_object_get(e, "rules");
    printf("rules considered, in order (%zu):\n", json_array_size(rules));
    size_t i;
    json_t *r;
    json_array_foreach(rules, i, r)
    {
        printf("  %-6s %-6s %-28s %s\n", json_is_true(json_object_get(r, "matched")) ? "MATCH" : "-",
               json_string_value(json_object_get(r, "effect")), json_string_value(json_object_get(r, "id")),
               json_string_value(json_object_get(r, "why")));
    }
}

/* explain: the decision for a hypothetical request and the rule chain behind it, computed from
 * the store with the same snapshot code the daemons run. */
static int
policy_explain(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "principal", required_argument, NULL, 'p' }, { "plane", required_argument, NULL, 'l' },
        { "resource", required_argument, NULL, 'r' },  { "action", required_argument, NULL, 'a' },
        { "size", required_argument, NULL, 's' },      { NULL, 0, NULL, 0 },
    };
    const char *principal = NULL;
    pol_request_t req = { .request_size = -1 };
    int opt;
    while ((opt = getopt_long(argc, argv, "p:l:r:a:s:", opts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            principal = optarg;
            break;
        case 'l':
            req.plane = optarg;
            break;
        case 'r':
            req.resource = optarg;
            break;
        case 'a':
            req.action = optarg;
            break;
        case 's':
            req.request_size = strtoll(optarg, NULL, 10);
            break;
        default:
            return gwctl_usage_error(c, "unknown option");
        }
    }
    if (principal == NULL || req.plane == NULL || req.resource == NULL || req.action == NULL)
        return gwctl_usage_error(c, "--principal, --plane, --resource and --action are required");
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    pol_snapshot_t *snap = pol_snapshot_load(db, &err);
    if (snap == NULL)
        return gwctl_fail(c, err);
    int rv = 0;
    req.principal = pol_snapshot_principal(snap, principal);
    if (req.principal == NULL) {
        rv = gwctl_error(c, "principal '%s' does not exist", principal);
    } else {
        req.now_ms = tp_unix_ms();
        json_t *e = pol_explain(snap->rules, &req, snap->default_allow);
        json_object_set_new(e, "default_effect", json_string(snap->default_allow ? "allow" : "deny"));
        if (c->g->json) {
            gwctl_print_json(e);
        } else {
            print_explain(e, req.principal, &req);
            printf("default:   %s\n", snap->default_allow ? "allow" : "deny");
            json_decref(e);
        }
    }
    pol_snapshot_free(snap);
    return rv;
}

/* The subcommands: add one with a row here and a usage line in gwctl_cmd_policy below. */
static const gwctl_sub_t subs[] = {
    { "add", " -f FILE [--replace]", policy_add },
    { "list", "", policy_list },
    { "show", " ID", policy_show },
    { "rm", " ID", policy_rm },
    { "default", " [allow|deny]", policy_default },
    { "explain", " --principal ID --plane PLANE --resource R --action A [--size BYTES]", policy_explain },
};

static int
run_policy(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_policy, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_policy = {
    .name = "policy",
    .summary = "Manage authorization rules and what happens when none matches.",
    .usage = " add -f FILE [--replace]\n"
             "       gwctl policy list\n"
             "       gwctl policy show|rm ID\n"
             "       gwctl policy default [allow|deny]\n"
             "       gwctl policy explain --principal ID --plane model|mcp|agent --resource R --action A [--size N]\n"
             "  add reads one rule from a JSON or YAML file (- for standard input); --replace changes an\n"
             "  existing rule. show prints the rule as JSON. default shows or sets the default effect.\n"
             "  explain prints the decision for that request and every rule considered, in order.",
    .run = run_policy,
};
