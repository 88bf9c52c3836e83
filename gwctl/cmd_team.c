/* gwctl team: add, list and remove teams. */
#include <stdio.h>
#include <stdlib.h>

#include "admin.h"
#include "args.h"

static int
team_add(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "description", required_argument, NULL, 'd' },
        { NULL, 0, NULL, 0 },
    };
    const char *id, *desc = NULL;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        if (opt == '?')
            return 2;
        desc = optarg;
    }
    if (gwctl_operands(c, argc, argv, 1, "the team's ID", &id) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    json_t *t = json_pack("{s:s}", "id", id);
    if (desc != NULL)
        json_object_set_new(t, "description", json_string(desc));
    char *err = NULL;
    int rv = pol_admin_team_put(db, gwctl_call_actor(c), t, true, &err);
    if (rv == 0 && c->g->json)
        gwctl_print_json(json_pack("{s:s, s:s}", "id", id, "description", desc != NULL ? desc : ""));
    else if (rv == 0)
        printf("team %s added\n", id);
    json_decref(t);
    return rv == 0 ? 0 : gwctl_fail(c, err);
}

static int
team_list(gwctl_call_t *c, int argc, char **argv)
{
    if (gwctl_plain_args(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    char *err = NULL;
    json_t *list = db != NULL ? pol_admin_team_list(db, &err) : NULL;
    if (list == NULL)
        return db != NULL ? gwctl_fail(c, err) : 1;
    if (c->g->json) {
        gwctl_print_json(list);
        return 0;
    }
    gwctl_table_t t = GWCTL_TABLE(3);
    gwctl_table_row(&t, "ID", "MEMBERS", "DESCRIPTION");
    size_t i;
    json_t *team;
    json_array_foreach(list, i, team)
    {
        char members[24], desc[61];
        snprintf(members, sizeof(members), "%lld", (long long)json_integer_value(json_object_get(team, "members")));
        gwctl_table_row(&t, json_string_value(json_object_get(team, "id")), members,
                        gwctl_shorten(json_string_value(json_object_get(team, "description")), desc, 60));
    }
    gwctl_table_print(&t);
    json_decref(list);
    return 0;
}

static int
team_rm(gwctl_call_t *c, int argc, char **argv)
{
    const char *id;
    if (gwctl_plain_args(c, argc, argv, 1, "the team's ID", &id) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *err = NULL;
    if (pol_admin_team_delete(db, gwctl_call_actor(c), id, &err) != 0)
        return gwctl_fail(c, err);
    if (c->g->json)
        gwctl_print_json(json_pack("{s:s, s:b}", "id", id, "removed", true));
    else
        printf("team %s removed (its members keep the team name)\n", id);
    return 0;
}

static const gwctl_sub_t subs[] = {
    { "add", " ID [--description D]", team_add },
    { "list", "", team_list },
    { "rm", " ID", team_rm },
};

static int
run_team(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_team, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_team = {
    .name = "team",
    .summary = "Manage teams, which group principals for rules, limits and budgets.",
    .usage = " add ID [--description D]\n"
             "       gwctl team list\n"
             "       gwctl team rm ID",
    .run = run_team,
};
