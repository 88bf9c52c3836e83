#include "registry.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "clock.h"
#include "log.h"
#include "mem.h"
#include "store.h"

#define CARD_PATH       "/.well-known/agent-card.json" /* where A2A agents serve their card */
#define DEFAULT_VERSION "0.3" /* what an agent speaks when nobody said: the version most deployed */

struct ag_registry {
    ag_agent_t *agents; /* sorted by name */
    size_t count;
};

/* ---- helpers both sides use ---- */

bool
ag_registry_valid_name(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > AG_AGENT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* The length of "scheme://host[:port]" at the start of url, or 0 when it is not http(s). */
static size_t
origin_length(const char *url)
{
    size_t scheme = strncmp(url, "http://", 7) == 0 ? 7 : strncmp(url, "https://", 8) == 0 ? 8 : 0;
    if (scheme == 0)
        return 0;
    return scheme + strcspn(url + scheme, "/?#");
}

char *
ag_registry_default_card_url(const char *url)
{
    size_t n = url != NULL ? origin_length(url) : 0;
    if (n == 0)
        return NULL;
    return tp_sprintf("%.*s%s", (int)n, url, CARD_PATH);
}

const tp_agent_config_t *
ag_registry_configured(const tp_agent_gw_config_t *cfg, const char *name)
{
    for (size_t i = 0; cfg != NULL && i < cfg->agent_count; i++) {
        if (strcmp(cfg->agents[i].name, name) == 0)
            return &cfg->agents[i];
    }
    return NULL;
}

/* The labels of a configured agent ("key=value" strings) as an object (a new reference). */
static json_t *
config_labels(const tp_agent_config_t *a)
{
    json_t *labels = json_object();
    for (size_t i = 0; i < a->label_count; i++) {
        const char *eq = strchr(a->labels[i], '='); /* the configuration checked there is one */
        size_t n = eq != NULL ? (size_t)(eq - a->labels[i]) : strlen(a->labels[i]);
        char *key = tp_strndup(a->labels[i], n);
        json_object_set_new(labels, key, json_string(eq != NULL ? eq + 1 : ""));
        free(key);
    }
    return labels;
}

/* ---- reading the store ---- */

__attribute__((format(printf, 3, 4))) static int
fail(char **err, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        tp_fatal("out of memory");
    va_end(ap);
    *err = msg;
    return rv;
}

static int
db_fail(sqlite3 *db, char **err, const char *what)
{
    return fail(err, -EIO, "%s: %s", what, sqlite3_errmsg(db));
}

static sqlite3_stmt *
prepare(sqlite3 *db, const char *sql, char **err)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        db_fail(db, err, "read agents");
        return NULL;
    }
    return stmt;
}

static json_t *
text_or_null(sqlite3_stmt *stmt, int i)
{
    const char *s = (const char *)sqlite3_column_text(stmt, i);
    return s != NULL ? json_string(s) : json_null();
}

/* One row of STORED_COLUMNS as an object: what the audit records and listings build on. */
static json_t *
stored_row(sqlite3_stmt *stmt)
{
    const char *labels_text = (const char *)sqlite3_column_text(stmt, 4);
    json_t *labels = labels_text != NULL ? json_loads(labels_text, 0, NULL) : NULL;
    if (!json_is_object(labels)) { /* only a hand-edited row can hold anything else */
        json_decref(labels);
        labels = json_object();
    }
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:I, s:o}", "name", text_or_null(stmt, 0), "url", text_or_null(stmt, 1),
                     "card_url", text_or_null(stmt, 2), "version", text_or_null(stmt, 3), "labels", labels,
                     "created_at_ms", (json_int_t)sqlite3_column_int64(stmt, 5), "created_by", text_or_null(stmt, 6));
}

#define STORED_COLUMNS "name, url, card_url, version, labels, created_at_ms, created_by"

/* The stored agents, by name (name NULL: all, sorted by name): a new array, or NULL and *err. */
static json_t *
stored_agents(sqlite3 *db, const char *name, char **err)
{
    sqlite3_stmt *stmt =
        prepare(db, "SELECT " STORED_COLUMNS " FROM agents WHERE ?1 IS NULL OR name = ?1 ORDER BY name", err);
    if (stmt == NULL)
        return NULL;
    if (name != NULL)
        sqlite3_bind_text(stmt, 1, name, -1, SQLITE_TRANSIENT);
    json_t *rows = json_array();
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        json_array_append_new(rows, stored_row(stmt));
    if (rc != SQLITE_DONE) {
        db_fail(db, err, "read agents");
        json_decref(rows);
        rows = NULL;
    }
    sqlite3_finalize(stmt);
    return rows;
}

/* ---- the daemon's registry ---- */

static int
compare_agents(const void *a, const void *b)
{
    return strcmp(((const ag_agent_t *)a)->name, ((const ag_agent_t *)b)->name);
}

/* The effective card URL: the given one, else the default for url (NULL when url is not http(s)). */
static char *
card_url_of(const char *card_url, const char *url)
{
    return card_url != NULL ? tp_strdup(card_url) : ag_registry_default_card_url(url);
}

static void
agent_clear(ag_agent_t *a)
{
    free(a->name);
    free(a->url);
    free(a->card_url);
    free(a->version);
    json_decref(a->labels);
}

static ag_agent_t
agent_from_config(const tp_agent_config_t *c)
{
    return (ag_agent_t){
        .name = tp_strdup(c->name),
        .url = tp_strdup(c->url),
        .card_url = card_url_of(c->card_url, c->url),
        .version = tp_strdup(c->version != NULL ? c->version : DEFAULT_VERSION),
        .labels = config_labels(c),
        .cfg = c,
    };
}

/* Fills *a from a stored row; false (with a warning) for one the daemon cannot serve. */
static bool
agent_from_row(json_t *row, ag_agent_t *a)
{
    const char *name = json_string_value(json_object_get(row, "name"));
    const char *url = json_string_value(json_object_get(row, "url"));
    const char *given_card_url = json_string_value(json_object_get(row, "card_url"));
    const char *why = ag_registry_url_problem(url);
    if (why == NULL && given_card_url != NULL)
        why = ag_registry_url_problem(given_card_url);
    if (why != NULL) { /* ag_registry_add refuses these: the row was edited by hand, or by an older gwctl */
        tp_warn("agent %s in the store ignored: its url '%s' or card url '%s' cannot be used: %s", name,
                url != NULL ? url : "", given_card_url != NULL ? given_card_url : "(default)", why);
        return false;
    }
    char *card_url = card_url_of(given_card_url, url);
    *a = (ag_agent_t){
        .name = tp_strdup(name),
        .url = tp_strdup(url),
        .card_url = card_url,
        .version = tp_strdup(json_string_value(json_object_get(row, "version"))),
        .labels = json_incref(json_object_get(row, "labels")),
    };
    return true;
}

ag_registry_t *
ag_registry_load(sqlite3 *db, const tp_agent_gw_config_t *cfg, char **err)
{
    json_t *rows = stored_agents(db, NULL, err);
    if (rows == NULL)
        return NULL;
    size_t configured = cfg != NULL ? cfg->agent_count : 0;
    ag_registry_t *r = tp_calloc(1, sizeof(*r));
    r->agents = tp_calloc(configured + json_array_size(rows) + 1, sizeof(*r->agents));
    for (size_t i = 0; i < configured; i++)
        r->agents[r->count++] = agent_from_config(&cfg->agents[i]);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *name = json_string_value(json_object_get(row, "name"));
        if (ag_registry_configured(cfg, name) != NULL)
            tp_warn("agent %s in the store ignored: an agent of that name is configured, and the configuration wins",
                    name);
        else if (agent_from_row(row, &r->agents[r->count]))
            r->count++;
    }
    json_decref(rows);
    qsort(r->agents, r->count, sizeof(*r->agents), compare_agents);
    return r;
}

void
ag_registry_free(ag_registry_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->count; i++)
        agent_clear(&r->agents[i]);
    free(r->agents);
    free(r);
}

const ag_agent_t *
ag_registry_find(const ag_registry_t *r, const char *name)
{
    if (r == NULL || r->count == 0 || name == NULL)
        return NULL;
    ag_agent_t key = { .name = (char *)name };
    return bsearch(&key, r->agents, r->count, sizeof(*r->agents), compare_agents);
}

size_t
ag_registry_count(const ag_registry_t *r)
{
    return r != NULL ? r->count : 0;
}

const ag_agent_t *
ag_registry_at(const ag_registry_t *r, size_t i)
{
    return r != NULL && i < r->count ? &r->agents[i] : NULL;
}

/* ---- the admin side ---- */

/* Admin changes go through tp_store_change_begin / _end (see store.h), under savepoint ag_registry. */
static int
begin(sqlite3 *db, char **err)
{
    return tp_store_change_begin(db, "ag_registry", err);
}

static int
finish(sqlite3 *db, int txn, int rv, char **err)
{
    return tp_store_change_end(db, txn, "ag_registry", rv, err);
}

/* Runs a prepared statement that returns no rows, and finalizes it. */
static int
run(sqlite3 *db, sqlite3_stmt *stmt, char **err, const char *what)
{
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : db_fail(db, err, what);
}

/* Writes the audit row of a change inside the caller's transaction. Steals before and after. */
static int
audit(sqlite3 *db, const char *actor, const char *action, const char *target, json_t *before, json_t *after, char **err)
{
    json_t *detail = json_pack("{s:o, s:o}", "before", before != NULL ? before : json_null(), "after",
                               after != NULL ? after : json_null());
    char *text = json_dumps(detail, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(detail);
    if (text == NULL)
        tp_fatal("out of memory");
    sqlite3_stmt *stmt =
        prepare(db, "INSERT INTO audit_log (ts_ms, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)", err);
    if (stmt == NULL) {
        free(text);
        return -EIO;
    }
    sqlite3_bind_int64(stmt, 1, tp_unix_ms());
    sqlite3_bind_text(stmt, 2, actor, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, action, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 4, target, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 5, text, -1, SQLITE_TRANSIENT);
    free(text);
    return run(db, stmt, err, "write the audit record");
}

/* Reads the stored agent `name`. Returns 0 with *out (a new reference, NULL when there is
 * none), or a negative code with *err, so that a read error is never taken for "absent". */
static int
stored_get(sqlite3 *db, const char *name, json_t **out, char **err)
{
    json_t *rows = stored_agents(db, name, err);
    if (rows == NULL)
        return -EIO;
    *out = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return 0;
}

static bool
is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_';
}

/* True for a dotted-quad IPv4 address (as inet_pton reads one). */
static bool
is_ipv4(const char *s, size_t n)
{
    char buf[16];
    struct in_addr a;
    if (n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET, buf, &a) == 1;
}

const char *
ag_registry_url_problem(const char *url)
{
    size_t n = url != NULL ? origin_length(url) : 0;
    if (n == 0)
        return "the scheme must be http or https";
    for (const unsigned char *p = (const unsigned char *)url; *p != '\0'; p++) {
        if (*p <= ' ' || *p == 0x7f)
            return "it must not contain spaces or control characters";
    }
    if (strchr(url, '#') != NULL)
        return "an agent's URL has no fragment";
    bool https = url[4] == 's';
    const char *auth = url + (https ? 8 : 7), *end = url + n;
    if (memchr(auth, '@', (size_t)(end - auth)) != NULL)
        return "user info is not supported (configure credentials as headers)";
    const char *host = auth, *host_end;
    bool bracketed = *auth == '[';
    if (bracketed) {
        host_end = memchr(auth, ']', (size_t)(end - auth));
        if (host_end == NULL || host_end == auth + 1)
            return "invalid IPv6 address";
        for (const char *c = auth + 1; c < host_end; c++) {
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F') || *c == ':' ||
                  *c == '.'))
                return "invalid IPv6 address";
        }
        host_end++;
    } else {
        host_end = memchr(auth, ':', (size_t)(end - auth));
        if (host_end == NULL)
            host_end = end;
        if (host_end == host)
            return "it has no host";
        for (const char *c = host; c < host_end; c++) {
            if (!is_host_char(*c))
                return "invalid host";
        }
    }
    if (host_end != end) {
        unsigned long port = 0;
        if (*host_end != ':' || end - host_end < 2 || end - host_end > 6)
            return "invalid port";
        for (const char *c = host_end + 1; c < end; c++) {
            if (*c < '0' || *c > '9')
                return "invalid port";
            port = port * 10 + (unsigned long)(*c - '0');
        }
        if (port == 0 || port > 65535)
            return "invalid port";
    }
    if (https && (bracketed || is_ipv4(host, (size_t)(host_end - host))))
        return "https needs a host name, not an IP address (the certificate is checked against the name)";
    return NULL;
}

static bool
is_string_object(json_t *o)
{
    if (!json_is_object(o))
        return false;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (!json_is_string(v) || k[0] == '\0')
            return false;
    }
    return true;
}

/* Checks what ag_registry_add is given; returns 0 or -EINVAL with *err. */
static int
check_agent(const char *name, const char *url, const char *card_url, const char *version, json_t *labels, char **err)
{
    if (!ag_registry_valid_name(name))
        return fail(err, -EINVAL, "agent name '%s' must be 1-%d characters of A-Z a-z 0-9 _ -",
                    name != NULL ? name : "", AG_AGENT_NAME_MAX);
    const char *why = ag_registry_url_problem(url);
    if (why != NULL)
        return fail(err, -EINVAL, "agent %s: url '%s' must be an http:// or https:// URL with a host: %s", name,
                    url != NULL ? url : "", why);
    if (card_url != NULL && (why = ag_registry_url_problem(card_url)) != NULL)
        return fail(err, -EINVAL, "agent %s: card url '%s' must be an http:// or https:// URL with a host: %s", name,
                    card_url, why);
    if (version != NULL && strcmp(version, "0.3") != 0 && strcmp(version, "1.0") != 0)
        return fail(err, -EINVAL, "agent %s: version must be 0.3 or 1.0, not '%s'", name, version);
    if (labels != NULL && !is_string_object(labels))
        return fail(err, -EINVAL, "agent %s: labels must be an object of strings with non-empty keys", name);
    return 0;
}

/* Inserts the agent inside the open transaction and audits it; 0 or a negative code. */
static int
insert_agent(sqlite3 *db, const char *actor, const char *name, const char *url, const char *card_url,
             const char *version, json_t *labels, char **err)
{
    json_t *before;
    int rv = stored_get(db, name, &before, err);
    if (rv != 0)
        return rv;
    if (before != NULL) {
        json_decref(before);
        return fail(err, -EEXIST, "agent %s is already in the store", name);
    }
    sqlite3_stmt *stmt = prepare(db,
                                 "INSERT INTO agents (name, url, card_url, version, labels, created_at_ms, created_by) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 err);
    if (stmt == NULL)
        return -EIO;
    char *labels_text = labels != NULL ? json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS) : tp_strdup("{}");
    sqlite3_bind_text(stmt, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, url, -1, SQLITE_TRANSIENT);
    if (card_url != NULL)
        sqlite3_bind_text(stmt, 3, card_url, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt, 3);
    sqlite3_bind_text(stmt, 4, version != NULL ? version : DEFAULT_VERSION, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 5, labels_text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 6, tp_unix_ms());
    sqlite3_bind_text(stmt, 7, actor, -1, SQLITE_TRANSIENT);
    free(labels_text);
    if ((rv = run(db, stmt, err, "store the agent")) != 0)
        return rv;
    json_t *after;
    if ((rv = stored_get(db, name, &after, err)) != 0)
        return rv;
    return audit(db, actor, "agent.add", name, NULL, after, err);
}

int
ag_registry_add(sqlite3 *db, const char *actor, const char *name, const char *url, const char *card_url,
                const char *version, json_t *labels, char **err)
{
    int rv = check_agent(name, url, card_url, version, labels, err);
    if (rv != 0)
        return rv;
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    return finish(db, txn, insert_agent(db, actor, name, url, card_url, version, labels, err), err);
}

/* Deletes the agent inside the open transaction and audits it; 0 or a negative code. */
static int
delete_agent(sqlite3 *db, const char *actor, const char *name, char **err)
{
    json_t *before;
    int rv = stored_get(db, name, &before, err);
    if (rv != 0)
        return rv;
    if (before == NULL)
        return fail(err, -ENOENT, "no agent %s in the store", name);
    sqlite3_stmt *stmt = prepare(db, "DELETE FROM agents WHERE name = ?", err);
    if (stmt == NULL) {
        json_decref(before);
        return -EIO;
    }
    sqlite3_bind_text(stmt, 1, name, -1, SQLITE_TRANSIENT);
    if ((rv = run(db, stmt, err, "delete the agent")) != 0) {
        json_decref(before);
        return rv;
    }
    return audit(db, actor, "agent.remove", name, before, NULL, err);
}

int
ag_registry_remove(sqlite3 *db, const char *actor, const char *name, char **err)
{
    if (name == NULL)
        return fail(err, -EINVAL, "no agent name given");
    int txn = begin(db, err);
    if (txn < 0)
        return txn;
    return finish(db, txn, delete_agent(db, actor, name, err), err);
}

/* ---- listing ---- */

/* A configured agent as ag_registry_list shows it (a new reference). */
static json_t *
config_json(const tp_agent_config_t *c)
{
    char *card_url = card_url_of(c->card_url, c->url);
    json_t *listed = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:o}", "name", c->name, "source", "config", "version",
                               c->version != NULL ? c->version : DEFAULT_VERSION, "url", c->url, "card_url", card_url,
                               "labels", config_labels(c));
    free(card_url);
    return listed;
}

/* A stored row (borrowed) as ag_registry_list shows it (a new reference). */
static json_t *
listed_row(json_t *row, const tp_agent_gw_config_t *cfg)
{
    const char *name = json_string_value(json_object_get(row, "name"));
    json_t *listed = json_pack("{s:s, s:s, s:O, s:O}", "name", name, "source", "store", "version",
                               json_object_get(row, "version"), "url", json_object_get(row, "url"));
    char *card_url = card_url_of(json_string_value(json_object_get(row, "card_url")),
                                 json_string_value(json_object_get(row, "url")));
    json_object_set_new(listed, "card_url", card_url != NULL ? json_string(card_url) : json_null());
    free(card_url);
    json_object_set(listed, "labels", json_object_get(row, "labels"));
    json_object_set(listed, "created_at_ms", json_object_get(row, "created_at_ms"));
    json_object_set(listed, "created_by", json_object_get(row, "created_by"));
    if (ag_registry_configured(cfg, name) != NULL)
        json_object_set_new(listed, "ignored", json_true());
    return listed;
}

/* By name, then a configured agent before a stored one. */
static int
compare_listed(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int c = strcmp(json_string_value(json_object_get(x, "name")), json_string_value(json_object_get(y, "name")));
    if (c != 0)
        return c;
    return strcmp(json_string_value(json_object_get(x, "source")), json_string_value(json_object_get(y, "source")));
}

json_t *
ag_registry_list(sqlite3 *db, const tp_agent_gw_config_t *cfg, char **err)
{
    json_t *rows = stored_agents(db, NULL, err);
    if (rows == NULL)
        return NULL;
    size_t configured = cfg != NULL ? cfg->agent_count : 0, n = 0;
    json_t **all = tp_calloc(configured + json_array_size(rows) + 1, sizeof(*all));
    for (size_t i = 0; i < configured; i++)
        all[n++] = config_json(&cfg->agents[i]);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) all[n++] = listed_row(row, cfg);
    json_decref(rows);
    qsort(all, n, sizeof(*all), compare_listed);
    json_t *list = json_array();
    for (i = 0; i < n; i++)
        json_array_append_new(list, all[i]);
    free(all);
    return list;
}
