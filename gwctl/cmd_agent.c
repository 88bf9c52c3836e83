/* gwctl agent: the agents agent-gw fronts (configured and stored), and the peer graph that the
 * policy rules allow between callers and agents. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "clock.h"
#include "config.h"
#include "mem.h"
#include "rules.h"
#include "snapshot.h"
/* By path, as mcp-gw's pins.h: the daemons' folders are not on gwctl's include path. */
#include "../agent-gw/registry.h"

#define GRAPH_DEFAULT_ACTION "message" /* the method family of message/send, SendMessage, … */

/* Loads gwctl's configuration file for its agent_gw section into *cfg (zeroed when gwctl uses
 * none). Returns 0, or 1 after printing why; free *cfg with tp_config_free either way. */
static int
load_config(const gwctl_call_t *c, tp_config_t *cfg)
{
    *cfg = (tp_config_t){ 0 };
    if (c->g->config_path == NULL)
        return 0;
    char *errors = NULL;
    if (tp_config_load(c->g->config_path, cfg, &errors) != 0) {
        gwctl_error(c, "%s", errors != NULL ? errors : "the configuration is invalid");
        free(errors);
        return 1;
    }
    return 0;
}

/* "k=v,k2=v2" of a labels object, shortened to max bytes, in buf (max + 1 bytes). */
static const char *
labels_text(json_t *labels, char *buf, size_t max)
{
    json_t *pairs = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(labels, k, v)
    {
        char *pair = tp_sprintf("%s=%s", k, json_string_value(v));
        json_array_append_new(pairs, json_string(pair));
        free(pair);
    }
    gwctl_join(pairs, buf, max);
    json_decref(pairs);
    return buf;
}

/* The listed agent `name` from the store (a new reference), or NULL. */
static json_t *
stored_entry(sqlite3 *db, const char *name)
{
    char *err = NULL;
    json_t *all = ag_registry_list(db, NULL, &err);
    free(err);
    json_t *found = NULL;
    size_t i;
    json_t *a;
    json_array_foreach(all, i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "name")), name) == 0)
            found = json_incref(a);
    }
    json_decref(all);
    return found;
}

/* Stores the agent unless the configuration names it; returns the exit status. */
static int
add_stored(gwctl_call_t *c, const char *name, const char *url, const char *card_url, const char *version,
           json_t *labels)
{
    tp_config_t cfg;
    int rv = load_config(c, &cfg);
    if (rv == 0 && ag_registry_configured(&cfg.agent_gw, name) != NULL)
        rv = gwctl_error(c, "agent %s is configured in %s; change it there (the configuration wins over the store)",
                         name, c->g->config_path);
    tp_config_free(&cfg);
    sqlite3 *db = rv == 0 ? gwctl_call_db(c) : NULL;
    if (db == NULL)
        return 1;
    char *err = NULL;
    if (ag_registry_add(db, gwctl_call_actor(c), name, url, card_url, version, labels, &err) != 0)
        return gwctl_fail(c, err);
    if (c->g->json)
        gwctl_print_json(stored_entry(db, name));
    else
        printf("agent %s added; agent-gw serves it at /agents/%s\n", name, name);
    return 0;
}

static int
agent_add(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "url", required_argument, NULL, 'u' },
        { "card-url", required_argument, NULL, 'c' },
        { "version", required_argument, NULL, 'v' },
        { "label", required_argument, NULL, 'l' },
        { NULL, 0, NULL, 0 },
    };
    const char *url = NULL, *card_url = NULL, *version = NULL, *name = NULL;
    json_t *labels = json_object();
    int opt, rv = 0;
    while (rv == 0 && (opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            rv = 2;
        else if (opt == 'u')
            url = optarg;
        else if (opt == 'c')
            card_url = optarg;
        else if (opt == 'v')
            version = optarg;
        else if (gwctl_parse_label(optarg, labels) != 0)
            rv = gwctl_usage_error(c, "a label reads KEY=VALUE, not '%s'", optarg);
    }
    if (rv == 0)
        rv = gwctl_operands(c, argc, argv, 1, "the agent's NAME", &name);
    if (rv == 0 && url == NULL)
        rv = gwctl_usage_error(c, "--url is required: the agent's JSON-RPC endpoint");
    if (rv == 0 && version != NULL && strcmp(version, "0.3") != 0 && strcmp(version, "1.0") != 0)
        rv = gwctl_usage_error(c, "--version is 0.3 or 1.0, not '%s'", version);
    if (rv == 0)
        rv = add_stored(c, name, url, card_url, version, labels);
    json_decref(labels);
    return rv;
}

static int
agent_rm(gwctl_call_t *c, int argc, char **argv)
{
    const char *name;
    if (gwctl_plain_args(c, argc, argv, 1, "the agent's NAME", &name) != 0)
        return 2;
    tp_config_t cfg;
    int rv = load_config(c, &cfg);
    sqlite3 *db = rv == 0 ? gwctl_call_db(c) : NULL;
    if (db == NULL) {
        tp_config_free(&cfg);
        return 1;
    }
    bool configured = ag_registry_configured(&cfg.agent_gw, name) != NULL;
    char *err = NULL;
    rv = ag_registry_remove(db, gwctl_call_actor(c), name, &err);
    if (rv == -ENOENT && configured) {
        free(err);
        gwctl_error(c,
                    "agent %s is configured in %s, not added with gwctl; remove it from the configuration and "
                    "reload agent-gw",
                    name, c->g->config_path);
    } else if (rv != 0) {
        gwctl_fail(c, err);
    } else if (c->g->json) {
        gwctl_print_json(json_pack("{s:s, s:b}", "name", name, "removed", true));
    } else {
        printf("agent %s removed from the store%s\n", name,
               configured ? " (the configured agent of that name stays)" : "");
    }
    tp_config_free(&cfg);
    return rv == 0 ? 0 : 1;
}

static int
agent_list(gwctl_call_t *c, int argc, char **argv)
{
    if (gwctl_plain_args(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    tp_config_t cfg;
    if (load_config(c, &cfg) != 0)
        return 1;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *agents = db != NULL ? ag_registry_list(db, &cfg.agent_gw, &err) : NULL;
    tp_config_free(&cfg);
    if (agents == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    if (c->g->json) {
        gwctl_print_json(agents);
        return 0;
    }
    gwctl_table_t t = GWCTL_TABLE(5);
    gwctl_table_row(&t, "NAME", "SOURCE", "VERSION", "URL", "LABELS");
    size_t i;
    json_t *a;
    json_array_foreach(agents, i, a)
    {
        char labels[49];
        bool ignored = json_is_true(json_object_get(a, "ignored"));
        gwctl_table_row(&t, json_string_value(json_object_get(a, "name")),
                        ignored ? "store (ignored: configured)" : json_string_value(json_object_get(a, "source")),
                        json_string_value(json_object_get(a, "version")), json_string_value(json_object_get(a, "url")),
                        labels_text(json_object_get(a, "labels"), labels, 48));
    }
    gwctl_table_print(&t);
    json_decref(agents);
    return 0;
}

/* Appends to edges every allowed (caller, agent) pair for `action`: each enabled principal of
 * snap against each agent of agents (ignored store entries left out). */
static void
collect_edges(const pol_snapshot_t *snap, json_t *agents, const char *action, json_t *edges)
{
    pol_request_t req = { .plane = "agent", .action = action, .request_size = -1, .now_ms = tp_unix_ms() };
    for (size_t p = 0; p < snap->num_principals; p++) {
        req.principal = &snap->principals[p];
        if (!req.principal->enabled) /* a disabled principal authenticates to nothing */
            continue;
        size_t i;
        json_t *a;
        json_array_foreach(agents, i, a)
        {
            if (json_is_true(json_object_get(a, "ignored")))
                continue;
            req.resource = json_string_value(json_object_get(a, "name"));
            pol_decision_t d = pol_evaluate(snap->rules, &req, snap->default_allow);
            if (!d.allow)
                continue;
            json_array_append_new(edges, json_pack("{s:s, s:s, s:s, s:s?, s:s}", "caller", req.principal->id, "kind",
                                                   pol_kind_name(req.principal->kind), "agent", req.resource, "rule",
                                                   d.rule != NULL ? pol_rule_id(d.rule) : NULL, "reason", d.reason));
        }
    }
}

static int
agent_graph(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "action", required_argument, NULL, 'a' },
        { NULL, 0, NULL, 0 },
    };
    const char *action = GRAPH_DEFAULT_ACTION;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        action = optarg;
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    tp_config_t cfg;
    if (load_config(c, &cfg) != 0)
        return 1;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *agents = db != NULL ? ag_registry_list(db, &cfg.agent_gw, &err) : NULL;
    tp_config_free(&cfg);
    if (agents == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    pol_snapshot_t *snap = pol_snapshot_load(db, &err);
    if (snap == NULL) {
        json_decref(agents);
        return gwctl_fail(c, err);
    }
    json_t *edges = json_array();
    collect_edges(snap, agents, action, edges);
    pol_snapshot_free(snap);
    json_decref(agents);
    if (c->g->json) {
        gwctl_print_json(edges);
        return 0;
    }
    size_t i;
    json_t *e;
    json_array_foreach(edges, i, e)
    {
        const char *rule = json_string_value(json_object_get(e, "rule"));
        printf("%s -> %s (%s%s)\n", json_string_value(json_object_get(e, "caller")),
               json_string_value(json_object_get(e, "agent")), rule != NULL ? "rule " : "default allow",
               rule != NULL ? rule : "");
    }
    if (json_array_size(edges) == 0)
        printf("no principal may %s any agent\n", action);
    json_decref(edges);
    return 0;
}

static const gwctl_sub_t subs[] = {
    { "add", " NAME --url URL [--card-url URL] [--version 0.3|1.0] [--label KEY=VALUE]...", agent_add },
    { "rm", " NAME", agent_rm },
    { "list", "", agent_list },
    { "graph", " [--action A]", agent_graph },
};

static int
run_agent(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_agent, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_agent = {
    .name = "agent",
    .summary = "Manage the A2A agents agent-gw fronts; show which callers may reach which agent.",
    .usage = " add NAME --url URL [--card-url URL] [--version 0.3|1.0] [--label KEY=VALUE]...\n"
             "       gwctl agent rm NAME\n"
             "       gwctl agent list\n"
             "       gwctl agent graph [--action A]\n"
             "  Agents come from the configuration (agent_gw.agents) and from the store (add, rm); for a\n"
             "  name in both, the configuration wins. add stores an agent: URL is its JSON-RPC endpoint,\n"
             "  the card defaults to ORIGIN/.well-known/agent-card.json, the A2A version to 0.3. rm\n"
             "  removes a stored agent (configured ones are removed from the file). Both are audited\n"
             "  (agent.add, agent.remove) and take effect in agent-gw at once. list shows every agent\n"
             "  with its source (config or store). graph prints the peer graph the policy allows, one\n"
             "  edge 'CALLER -> AGENT (rule ID)' for every enabled principal in the store (users,\n"
             "  services, agents) that may send action A (default message) to an agent on plane agent,\n"
             "  decided now as 'gwctl policy explain' decides; --json gives the edges.",
    .run = run_agent,
};
