#include "snapshot.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mem.h"

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *
column_text(sqlite3_stmt *stmt, int col)
{
    const unsigned char *s = sqlite3_column_text(stmt, col);
    return tp_strdup(s != NULL ? (const char *)s : "");
}

static int
load_kills(sqlite3 *db, pol_snapshot_t *snap, char **err)
{
    static const char sql[] =
        "SELECT target_kind, target, reason, created_by, created_at_ms, expires_at_ms "
        "FROM kills WHERE released_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > ?) "
        "ORDER BY id";
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        *err = tp_sprintf("read kills: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(stmt, 1, snap->loaded_at_ms);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (snap->num_kills == cap) {
            cap = cap != 0 ? cap * 2 : 8;
            snap->kills = tp_realloc(snap->kills, cap * sizeof(*snap->kills));
        }
        pol_kill_t *k = &snap->kills[snap->num_kills++];
        k->target_kind = column_text(stmt, 0);
        k->target = column_text(stmt, 1);
        k->reason = column_text(stmt, 2);
        k->created_by = column_text(stmt, 3);
        k->created_at_ms = sqlite3_column_int64(stmt, 4);
        k->expires_at_ms = sqlite3_column_int64(stmt, 5); /* NULL reads as 0 */
    }
    if (rc != SQLITE_DONE)
        *err = tp_sprintf("read kills: %s", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

pol_snapshot_t *
pol_snapshot_load(sqlite3 *db, char **err)
{
    pol_snapshot_t *snap = tp_calloc(1, sizeof(*snap));
    snap->loaded_at_ms = now_ms();
    if (load_kills(db, snap, err) != 0) {
        pol_snapshot_free(snap);
        return NULL;
    }
    return snap;
}

void
pol_snapshot_free(pol_snapshot_t *snap)
{
    if (snap == NULL)
        return;
    for (size_t i = 0; i < snap->num_kills; i++) {
        pol_kill_t *k = &snap->kills[i];
        free(k->target_kind);
        free(k->target);
        free(k->reason);
        free(k->created_by);
    }
    free(snap->kills);
    free(snap);
}

json_t *
pol_snapshot_describe(const pol_snapshot_t *snap)
{
    json_t *kills = json_array();
    for (size_t i = 0; i < snap->num_kills; i++) {
        const pol_kill_t *k = &snap->kills[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "target_kind", k->target_kind, "target", k->target, "reason",
                              k->reason, "created_by", k->created_by, "created_at_ms", (json_int_t)k->created_at_ms);
        if (k->expires_at_ms != 0)
            json_object_set_new(o, "expires_at_ms", json_integer(k->expires_at_ms));
        json_array_append_new(kills, o);
    }
    return json_pack("{s:I, s:o}", "kills_active", (json_int_t)snap->num_kills, "kills", kills);
}

static void *
state_load(sqlite3 *db, char **err)
{
    return pol_snapshot_load(db, err);
}

static void
state_release(void *state)
{
    pol_snapshot_free(state);
}

static json_t *
state_describe(const void *state)
{
    return pol_snapshot_describe(state);
}

static int64_t
state_expires_at_ms(const void *state)
{
    const pol_snapshot_t *snap = state;
    int64_t at = 0;
    for (size_t i = 0; i < snap->num_kills; i++) {
        int64_t e = snap->kills[i].expires_at_ms;
        if (e > 0 && (at == 0 || e < at))
            at = e;
    }
    return at;
}

const tp_state_ops_t pol_snapshot_state_ops = {
    .load = state_load,
    .release = state_release,
    .describe = state_describe,
    .expires_at_ms = state_expires_at_ms,
};
