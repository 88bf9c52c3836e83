/*
 * gwctl responses: the Responses model-gw stored (/v1/responses with "store"): list, show,
 * delete and purge. A delete or purge changes the store (audited as responses.delete and
 * responses.purge), then tells every running model-gw (control command responses.forget) to
 * drop the same responses from its cache; one that does not answer is named, and serves them
 * from memory until it restarts or evicts them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "args.h"
#include "control.h"
#include "mem.h"

#define MAX_LIST 10000

/* ---- reading ---- */

static const char columns[] = "id, principal, model, previous_id, status, created_ms, expires_ms";

static json_t *
row_json(sqlite3_stmt *st, bool whole)
{
    json_t *row =
        json_pack("{s:s, s:s, s:s, s:s?, s:s, s:I}", "id", (const char *)sqlite3_column_text(st, 0), "principal",
                  (const char *)sqlite3_column_text(st, 1), "model", (const char *)sqlite3_column_text(st, 2),
                  "previous_id", (const char *)sqlite3_column_text(st, 3), "status",
                  (const char *)sqlite3_column_text(st, 4), "created_ms", (json_int_t)sqlite3_column_int64(st, 5));
    json_object_set_new(row, "expires_ms",
                        sqlite3_column_type(st, 6) == SQLITE_NULL ? json_null()
                                                                  : json_integer(sqlite3_column_int64(st, 6)));
    if (whole) {
        json_object_set_new(row, "input_items", json_loads((const char *)sqlite3_column_text(st, 7), 0, NULL));
        json_object_set_new(row, "response", json_loads((const char *)sqlite3_column_text(st, 8), 0, NULL));
    }
    return row;
}

static int
responses_list(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "principal", required_argument, NULL, 'p' },
        { "model", required_argument, NULL, 'm' },
        { "limit", required_argument, NULL, 'n' },
        { NULL, 0, NULL, 0 },
    };
    const char *principal = NULL, *model = NULL;
    int64_t limit = 100;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        switch (opt) {
        case 'p':
            principal = optarg;
            break;
        case 'm':
            model = optarg;
            break;
        case 'n':
            if (gwctl_parse_count(optarg, &limit) != 0 || limit < 1 || limit > MAX_LIST)
                return gwctl_usage_error(c, "--limit must be a count from 1 to %d", MAX_LIST);
            break;
        default:
            return 2;
        }
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *sql = tp_sprintf("SELECT %s FROM responses WHERE (?1 IS NULL OR principal = ?1) AND (?2 IS NULL OR "
                           "model = ?2) ORDER BY created_ms DESC, id LIMIT ?3",
                           columns);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return gwctl_error(c, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, principal, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, limit);
    json_t *rows = json_array();
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(rows, row_json(st, false));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        json_decref(rows);
        return gwctl_error(c, "%s", sqlite3_errmsg(db));
    }
    if (c->g->json) {
        gwctl_print_json(rows);
        return 0;
    }
    gwctl_table_t t = GWCTL_TABLE(6);
    gwctl_table_row(&t, "CREATED", "ID", "PRINCIPAL", "MODEL", "STATUS", "CONTINUES");
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        char created[GWCTL_TIME_LEN];
        gwctl_table_row(
            &t, gwctl_format_time(json_integer_value(json_object_get(row, "created_ms")), created),
            json_string_value(json_object_get(row, "id")), json_string_value(json_object_get(row, "principal")),
            json_string_value(json_object_get(row, "model")), json_string_value(json_object_get(row, "status")),
            json_string_value(json_object_get(row, "previous_id")));
    }
    gwctl_table_print(&t);
    json_decref(rows);
    return 0;
}

static int
responses_show(gwctl_call_t *c, int argc, char **argv)
{
    const char *id;
    if (gwctl_plain_args(c, argc, argv, 1, "ID", &id) != 0)
        return 2;
    sqlite3 *db = gwctl_call_db(c);
    if (db == NULL)
        return 1;
    char *sql = tp_sprintf("SELECT %s, input_items, response FROM responses WHERE id = ?", columns);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return gwctl_error(c, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    json_t *row = rc == SQLITE_ROW ? row_json(st, true) : NULL;
    sqlite3_finalize(st);
    if (row == NULL)
        return rc == SQLITE_DONE ? gwctl_error(c, "no stored response %s", id)
                                 : gwctl_error(c, "%s", sqlite3_errmsg(db));
    /* One format: the record is nested JSON either way. */
    gwctl_print_json(row);
    return 0;
}

/* ---- changing ---- */

/* Tells every running model-gw to drop what was deleted from its cache. */
static void
tell_daemons(gwctl_call_t *c, json_t *forget)
{
    char *path = tp_sprintf("%s/model-gw.sock", c->g->control_dir);
    json_object_set_new(forget, "cmd", json_string("responses.forget"));
    json_t *resp = NULL;
    char *err = NULL;
    int rc = tp_control_request(path, forget, c->g->timeout_ms, &resp, &err);
    if (rc != 0 && rc != -ENOENT && rc != -ECONNREFUSED)
        fprintf(stderr,
                "gwctl %s: warning: model-gw did not confirm (%s); it may serve the responses from memory "
                "until it restarts\n",
                c->who, err != NULL ? err : "no answer");
    else if (rc == 0 && !json_is_true(json_object_get(resp, "ok")))
        fprintf(stderr, "gwctl %s: warning: model-gw refused: %s\n", c->who,
                json_string_value(json_object_get(resp, "error")));
    json_decref(resp);
    json_decref(forget);
    free(err);
    free(path);
}

/* Which stored responses a delete or purge takes: all of the filters set (NULL or 0: unset). */
typedef struct selection {
    const char *id;
    const char *principal;
    int64_t created_before_ms;
    int64_t expired_at_ms; /* those whose expiry is at or before this */
} selection_t;

static const char delete_sql[] = "DELETE FROM responses WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR principal = "
                                 "?2) AND (?3 = 0 OR created_ms < ?3) AND (?4 = 0 OR (expires_ms IS NOT NULL AND "
                                 "expires_ms <= ?4))";

/* Deletes the selection in an audited change. Returns the rows deleted, or -1 after printing
 * why. */
static int64_t
delete_audited(gwctl_call_t *c, const selection_t *sel, const char *action, const char *target, json_t *detail)
{
    sqlite3 *db = gwctl_call_db(c);
    const char *actor = db != NULL ? gwctl_call_actor(c) : NULL;
    if (db == NULL || actor == NULL)
        return -1;
    char *err = NULL;
    int txn = tp_store_change_begin(db, "responses", &err);
    if (txn < 0) {
        gwctl_fail(c, err);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    int rv = 0;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db, delete_sql, -1, &st, NULL) != SQLITE_OK) {
        err = tp_sprintf("%s", sqlite3_errmsg(db));
        rv = -1;
    } else {
        sqlite3_bind_text(st, 1, sel->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, sel->principal, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, sel->created_before_ms);
        sqlite3_bind_int64(st, 4, sel->expired_at_ms);
        if (sqlite3_step(st) != SQLITE_DONE) {
            err = tp_sprintf("%s", sqlite3_errmsg(db));
            rv = -1;
        } else {
            n = sqlite3_changes64(db);
        }
        sqlite3_finalize(st);
    }
    if (rv == 0 && n > 0) {
        json_object_set_new(detail, "deleted", json_integer(n));
        rv = pol_admin_record(db, actor, action, target, detail, &err);
    }
    rv = tp_store_change_end(db, txn, "responses", rv, &err);
    if (rv != 0) {
        gwctl_fail(c, err);
        return -1;
    }
    return n;
}

static int
responses_delete(gwctl_call_t *c, int argc, char **argv)
{
    const char *id;
    if (gwctl_plain_args(c, argc, argv, 1, "ID", &id) != 0)
        return 2;
    json_t *detail = json_object();
    int64_t n = delete_audited(c, &(selection_t){ .id = id }, "responses.delete", id, detail);
    json_decref(detail);
    if (n < 0)
        return 1;
    if (n == 0)
        return gwctl_error(c, "no stored response %s", id);
    tell_daemons(c, json_pack("{s:s}", "id", id));
    if (c->g->json)
        gwctl_print_json(json_pack("{s:s, s:I}", "id", id, "deleted", (json_int_t)n));
    else
        printf("deleted %s\n", id);
    return 0;
}

static int
responses_purge(gwctl_call_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "principal", required_argument, NULL, 'p' },
        { "older-than", required_argument, NULL, 'o' },
        { "expired", no_argument, NULL, 'e' },
        { NULL, 0, NULL, 0 },
    };
    const char *principal = NULL;
    int64_t older = 0;
    bool expired = false;
    int opt;
    while ((opt = gwctl_getopt(c, argc, argv, "", opts)) != -1) {
        switch (opt) {
        case 'p':
            principal = optarg;
            break;
        case 'o':
            if (gwctl_parse_duration(optarg, &older) != 0 || older <= 0)
                return gwctl_usage_error(c, "--older-than must be a duration such as 30d or 12h");
            break;
        case 'e':
            expired = true;
            break;
        default:
            return 2;
        }
    }
    if (gwctl_operands(c, argc, argv, 0, NULL, NULL) != 0)
        return 2;
    if (principal == NULL && older == 0 && !expired)
        return gwctl_usage_error(c, "say what to purge: --principal P, --older-than DURATION and/or --expired");
    int64_t now = gwctl_now_ms();
    int64_t before = older > 0 ? now - older : 0;
    json_t *detail =
        json_pack("{s:s?, s:I, s:b}", "principal", principal, "before_ms", (json_int_t)before, "expired", expired);
    selection_t sel = { .principal = principal, .created_before_ms = before, .expired_at_ms = expired ? now : 0 };
    int64_t n = delete_audited(c, &sel, "responses.purge", principal != NULL ? principal : "*", detail);
    json_decref(detail);
    if (n < 0)
        return 1;
    if (n > 0) {
        /* Expired responses are already invisible to model-gw; the others must leave its cache. */
        if (principal != NULL || before > 0)
            tell_daemons(c, json_pack("{s:s?, s:I}", "principal", principal, "before_ms", (json_int_t)before));
    }
    if (c->g->json)
        gwctl_print_json(json_pack("{s:I}", "deleted", (json_int_t)n));
    else
        printf("purged %lld stored response%s\n", (long long)n, n == 1 ? "" : "s");
    return 0;
}

static const gwctl_sub_t subs[] = {
    { "list", " [--principal P] [--model M] [--limit N]", responses_list },
    { "show", " ID", responses_show },
    { "delete", " ID", responses_delete },
    { "purge", " [--principal P] [--older-than DURATION] [--expired]", responses_purge },
};

static int
run_responses(gwctl_t *g, int argc, char **argv)
{
    return gwctl_run_sub(&gwctl_cmd_responses, subs, sizeof(subs) / sizeof(subs[0]), g, argc, argv);
}

const gwctl_command_t gwctl_cmd_responses = {
    .name = "responses",
    .summary = "List, show, delete and purge the Responses model-gw stored (/v1/responses).",
    .usage = " list [--principal P] [--model M] [--limit N]\n"
             "       gwctl responses show ID\n"
             "       gwctl responses delete ID\n"
             "       gwctl responses purge [--principal P] [--older-than DURATION] [--expired]\n"
             "  list shows stored responses newest first (at most N, default 100), with the one each\n"
             "  continues; show prints one with its input items and the Response as its client got it.\n"
             "  delete and purge remove them from the store (audited: responses.delete, responses.purge)\n"
             "  and from every running model-gw's memory. purge takes every response matching all the\n"
             "  filters given: a principal's (to erase what they stored), those created more than\n"
             "  DURATION ago, and/or those past model_gw.response_retention_days (model-gw also purges\n"
             "  these itself every 10 minutes). --json prints the rows or the count.",
    .run = run_responses,
};
