/* gwctl mcp: the tool pins of mcp-gw, and approving or forgetting tools whose definition changed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "mem.h"
/* By path: mcp-gw is not on gwctl's include path, where its stdio.h would shadow <stdio.h>. */
#include "../mcp-gw/pins.h"

#define HASH_PREFIX_LEN 12 /* enough to tell definitions apart at a glance */

/* SERVER/TOOL split at the first '/' (server names have none; tool names may). Returns 0 with
 * *server malloc'd and *tool pointing into spec, or 2 after a usage error. */
static int
parse_target(const gwctl_call_t *c, const char *spec, char **server, const char **tool)
{
    const char *slash = strchr(spec, '/');
    if (slash == NULL || slash == spec || slash[1] == '\0')
        return gwctl_usage_error(c, "give the tool as SERVER/TOOL (its upstream name), not '%s'", spec);
    *server = tp_strndup(spec, (size_t)(slash - spec));
    *tool = slash + 1;
    return 0;
}

/* The first HASH_PREFIX_LEN characters of a hash member of row (borrowed), in buf. */
static const char *
hash_prefix(json_t *row, const char *key, char buf[HASH_PREFIX_LEN + 1])
{
    const char *hash = json_string_value(json_object_get(row, key));
    snprintf(buf, HASH_PREFIX_LEN + 1, "%s", hash != NULL ? hash : "");
    return buf;
}

/* The pin (server, tool) as mcp_pins_list shows it (a new reference), or NULL when there is none
 * or the store failed (then *err is set). */
static json_t *
find_pin(sqlite3 *db, const char *server, const char *tool, char **err)
{
    json_t *rows = mcp_pins_list(db, server, false, err);
    json_t *found = NULL;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        if (strcmp(json_string_value(json_object_get(row, "tool")), tool) == 0)
            found = json_incref(row);
    }
    json_decref(rows);
    return found;
}

static void
print_pins(json_t *rows)
{
    gwctl_table_t t = GWCTL_TABLE(6);
    gwctl_table_row(&t, "SERVER", "TOOL", "STATUS", "HASH", "FIRST SEEN", "CHANGED");
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        char pinned[HASH_PREFIX_LEN + 1], seen[HASH_PREFIX_LEN + 1], first[GWCTL_TIME_LEN], changed[GWCTL_TIME_LEN];
        const char *status = json_string_value(json_object_get(row, "status"));
        char *hash = json_is_string(json_object_get(row, "seen_hash"))
                         ? tp_sprintf("%s -> %s", hash_prefix(row, "hash", pinned), hash_prefix(row, "seen_hash", seen))
                         : tp_strdup(hash_prefix(row, "hash", pinned));
        gwctl_table_row(&t, json_string_value(json_object_get(row, "server")),
                        json_string_value(json_object_get(row, "tool")), status, hash,
                        gwctl_format_time(json_integer_value(json_object_get(row, "first_seen_ms")), first),
                        gwctl_format_time(json_integer_value(json_object_get(row, "changed_ms")), changed));
        free(hash);
    }
    gwctl_table_print(&t);
}

static int
mcp_tools(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "server", required_argument, NULL, 's' },
        { "drift", no_argument, NULL, 'd' },
        { NULL, 0, NULL, 0 },
    };
    const char *server = NULL;
    bool drift_only = false;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        if (opt == 's')
            server = optarg;
        else
            drift_only = true;
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *rows = db != NULL ? mcp_pins_list(db, server, drift_only, &err) : NULL;
    if (rows == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    if (c->g->json) {
        gwctl_print_json(rows);
        return 0;
    }
    print_pins(rows);
    json_decref(rows);
    return 0;
}

static int
mcp_approve(gwctl_call_t *c, int argc, char **argv)
{
    const char *spec, *tool;
    char *server;
    if (gwctl_plain_args(c, argc, argv, 1, "SERVER/TOOL", &spec) != 0 || parse_target(c, spec, &server, &tool) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL) {
        free(server);
        return 1;
    }
    /* For the message only (which hash replaces which); the approval reads the pin again. */
    char *why = NULL, *err = NULL;
    json_t *before = find_pin(db, server, tool, &why);
    free(why);
    int rv = mcp_pins_approve(db, gwctl_call_actor(c), server, tool, &err);
    if (rv == 0) {
        char was[HASH_PREFIX_LEN + 1], now[HASH_PREFIX_LEN + 1];
        if (c->g->json)
            gwctl_print_json(json_pack("{s:s, s:s, s:b, s:O?, s:O?}", "server", server, "tool", tool, "approved", true,
                                       "hash", json_object_get(before, "seen_hash"), "previous_hash",
                                       json_object_get(before, "hash")));
        else
            printf("%s approved: its definition %s is pinned (was %s), and the tool is served again\n", spec,
                   hash_prefix(before, "seen_hash", now), hash_prefix(before, "hash", was));
    }
    json_decref(before);
    free(server);
    return rv == 0 ? 0 : gwctl_fail(c, err);
}

static int
mcp_forget(gwctl_call_t *c, int argc, char **argv)
{
    const char *spec, *tool;
    char *server;
    if (gwctl_plain_args(c, argc, argv, 1, "SERVER/TOOL", &spec) != 0 || parse_target(c, spec, &server, &tool) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL) {
        free(server);
        return 1;
    }
    char *err = NULL;
    int rv = mcp_pins_forget(db, gwctl_call_actor(c), server, tool, &err);
    if (rv == 0 && c->g->json)
        gwctl_print_json(json_pack("{s:s, s:s, s:b}", "server", server, "tool", tool, "forgotten", true));
    else if (rv == 0)
        printf("%s forgotten: the next definition mcp-gw sees for it is pinned afresh\n", spec);
    free(server);
    return rv == 0 ? 0 : gwctl_fail(c, err);
}

static const gwctl_sub_t subs[] = {
    { "tools", " [--server S] [--drift]", mcp_tools },
    { "approve", " SERVER/TOOL", mcp_approve },
    { "forget", " SERVER/TOOL", mcp_forget },
};

static int
run_mcp(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_mcp, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_mcp = {
    .name = "mcp",
    .summary = "Review MCP tool pins; approve or forget tools whose definition changed.",
    .usage = " tools [--server S] [--drift]\n"
             "       gwctl mcp approve SERVER/TOOL\n"
             "       gwctl mcp forget SERVER/TOOL\n"
             "  mcp-gw pins each upstream tool's definition (name, title, description, schemas,\n"
             "  annotations) the first time it sees it. When a server later serves another definition,\n"
             "  the tool is quarantined: hidden from lists and refused until an operator approves it.\n"
             "  tools lists the pins (--drift: quarantined ones only; --json: with the definitions,\n"
             "  pinned and drifted); approve pins a quarantined tool's new definition; forget drops a\n"
             "  pin so that the next definition is pinned afresh. TOOL is the upstream's own name,\n"
             "  without the prefix mcp-gw adds. Both changes are audited (mcp.tool.approve,\n"
             "  mcp.tool.forget).",
    .run = run_mcp,
};
