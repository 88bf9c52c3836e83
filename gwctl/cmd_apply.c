/*
 * gwctl apply: make the store match a declarative YAML file.
 *
 * Three passes, so that a bad file changes nothing: check the whole file (keys, types, values,
 * rules through pol_rule_parse, duplicates); compare every entry with the store and plan the
 * changes (only the fields an entry sets are compared); then make the changes in order, printing
 * each one, and stop at the first the store refuses, saying what was already applied.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "args.h"
#include "mem.h"
#include "rules.h"
#include "yaml_json.h"

#define ID_MAX    128                /* as policy/admin.c accepts for principal, team and rule ids */
#define MONEY_MAX (INT64_C(1) << 52) /* micros; far above any budget, and exact in a double */

typedef enum kind { K_SETTING, K_TEAM, K_PRINCIPAL, K_RULE, K_LIMIT, K_BUDGET } kind_t;

typedef enum ftype { T_ID, T_TEXT, T_BOOL, T_COUNT, T_MONEY, T_STRINGS, T_LABELS } ftype_t;

typedef struct field {
    const char *key;
    ftype_t type;
    bool required;
    const char *const *choices; /* T_TEXT: the allowed values, NULL-terminated; NULL: any */
    bool nullable;              /* null is allowed ("team: null": no team) */
} field_t;

static const char *const kinds[] = { "user", "service", "agent", NULL };
static const char *const effects[] = { "allow", "deny", NULL };
static const char *const periods[] = { "day", "month", NULL };

static const field_t setting_fields[] = {
    { .key = "default_effect", .type = T_TEXT, .choices = effects },
    { .key = NULL },
};
static const field_t team_fields[] = {
    { .key = "id", .type = T_ID, .required = true },
    { .key = "description", .type = T_TEXT },
    { .key = NULL },
};
static const field_t principal_fields[] = {
    { .key = "id", .type = T_ID, .required = true },
    { .key = "kind", .type = T_TEXT, .choices = kinds }, /* required for a new principal */
    { .key = "team", .type = T_ID, .nullable = true },
    { .key = "roles", .type = T_STRINGS },
    { .key = "labels", .type = T_LABELS },
    { .key = "enabled", .type = T_BOOL },
    { .key = "description", .type = T_TEXT },
    { .key = NULL },
};
static const field_t limit_fields[] = {
    { .key = "principal", .type = T_ID },
    { .key = "team", .type = T_ID },
    { .key = "resource", .type = T_TEXT }, /* default "*" */
    { .key = "rpm", .type = T_COUNT },
    { .key = "tpm", .type = T_COUNT },
    { .key = NULL },
};
static const field_t budget_fields[] = {
    { .key = "principal", .type = T_ID },
    { .key = "team", .type = T_ID },
    { .key = "period", .type = T_TEXT, .required = true, .choices = periods },
    { .key = "tokens", .type = T_COUNT },
    { .key = "cost", .type = T_MONEY },
    { .key = NULL },
};

/* How limits and budgets differ: both belong to a principal or a team, are keyed by one more
 * member, and hold two amounts where 0 means "no limit" and both 0 means "none". */
typedef struct quota_kind {
    const char *key;         /* "resource" / "period", in the file and in the store's rows */
    const char *key_default; /* when the file leaves it out; NULL: required */
    const char *joiner;      /* "principal alice on *", "team ml per month" */
    const char *amounts[2];  /* the file's names */
    const char *columns[2];  /* the store's names */
} quota_kind_t;

static const quota_kind_t limit_kind = {
    "resource", "*", "on", { "rpm", "tpm" }, { "requests_per_minute", "tokens_per_minute" }
};
static const quota_kind_t budget_kind = {
    "period", NULL, "per", { "tokens", "cost" }, { "max_tokens", "max_cost_micros" }
};

typedef struct section {
    const char *key;      /* top-level key of the file */
    const char *singular; /* for messages and change lines */
    kind_t kind;
    const field_t *fields;     /* NULL for rules: pol_rule_parse checks them */
    const quota_kind_t *quota; /* limits and budgets */
} section_t;

static const section_t sections[] = {
    { "settings", "settings", K_SETTING, setting_fields, NULL },
    { "teams", "team", K_TEAM, team_fields, NULL },
    { "principals", "principal", K_PRINCIPAL, principal_fields, NULL },
    { "rules", "rule", K_RULE, NULL, NULL },
    { "limits", "limit", K_LIMIT, limit_fields, &limit_kind },
    { "budgets", "budget", K_BUDGET, budget_fields, &budget_kind },
};
#define NUM_SECTIONS (sizeof(sections) / sizeof(sections[0]))

typedef struct change {
    char op; /* '+' create, '~' update, '-' delete */
    const section_t *section;
    char *name;     /* "alice", "principal alice on *" */
    json_t *fields; /* for '~': the names of the fields that differ */
    int line;       /* of the entry in the file; 0 for deletions by --prune */
    json_t *value;  /* what to store: the object to put, or for quotas {scope_kind, scope, key, a, b} */
} change_t;

typedef struct apply {
    gwctl_call_t *c;
    gwctl_yaml_t *doc;
    int problems;
    json_t *seen[NUM_SECTIONS]; /* entry name -> line, for duplicates and --prune */
    change_t *changes;
    size_t num_changes;
    size_t unchanged;
    /* the store as it is */
    json_t *principals, *teams, *rules, *limits, *budgets;
    char *default_effect;
} apply_t;

__attribute__((format(printf, 3, 4))) static void
problem(apply_t *a, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (line > 0)
        fprintf(stderr, "gwctl apply: %s:%d: ", gwctl_yaml_name(a->doc), line);
    else
        fprintf(stderr, "gwctl apply: %s: ", gwctl_yaml_name(a->doc));
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    a->problems++;
}

static const char *
str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- pass 1: check the file ---- */

static json_t *
find_by_id(json_t *rows, const char *id)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        if (strcmp(str(r, "id"), id) == 0)
            return r;
    }
    return NULL;
}

static bool
one_of(const char *s, const char *const *choices)
{
    for (; *choices != NULL; choices++) {
        if (strcmp(s, *choices) == 0)
            return true;
    }
    return false;
}

/* The amount in the file as an integer (money as micros); -1 when it is not one. */
static int64_t
amount_of(json_t *v, bool money)
{
    int64_t n = -1;
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        n = money ? (json_integer_value(v) <= MONEY_MAX / 1000000 ? json_integer_value(v) * 1000000 : -1)
                  : json_integer_value(v);
    else if (money && json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) * 1e6 < (double)MONEY_MAX)
        n = llround(json_real_value(v) * 1e6);
    else if (money && json_is_string(v) && gwctl_parse_money(json_string_value(v), &n) != 0)
        n = -1;
    return n;
}

static bool
is_strings(json_t *v)
{
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s)
    {
        if (json_string_length(s) == 0)
            return false;
    }
    return json_is_array(v);
}

static bool
is_labels(json_t *v)
{
    const char *k;
    json_t *s;
    json_object_foreach(v, k, s)
    {
        if (k[0] == '\0' || !json_is_string(s))
            return false;
    }
    return json_is_object(v);
}

/* What a field must be, for messages. */
static const char *
expected(const field_t *f)
{
    static const char *const what[] = {
        [T_ID] = "an id: 1-128 characters of A-Z a-z 0-9 - _ . : @",
        [T_TEXT] = "a string",
        [T_BOOL] = "true or false",
        [T_COUNT] = "a whole number, 0 or more",
        [T_MONEY] = "an amount such as 12.50",
        [T_STRINGS] = "a list of non-empty strings",
        [T_LABELS] = "a mapping of names to strings (quote numbers)",
    };
    return what[f->type];
}

static bool
field_ok(const field_t *f, json_t *v)
{
    if (json_is_null(v))
        return f->nullable;
    switch (f->type) {
    case T_ID:
        return json_is_string(v) && pol_admin_valid_id(json_string_value(v));
    case T_TEXT:
        return json_is_string(v) && (f->choices == NULL || one_of(json_string_value(v), f->choices));
    case T_BOOL:
        return json_is_boolean(v);
    case T_COUNT:
        return amount_of(v, false) >= 0;
    case T_MONEY:
        return amount_of(v, true) >= 0;
    case T_STRINGS:
        return is_strings(v);
    case T_LABELS:
        return is_labels(v);
    }
    return false;
}

/* "principal alice", or "principals entry 3" when the entry has no usable id. */
static char *
entry_label(const section_t *s, json_t *entry, size_t index)
{
    const char *id = str(entry, "id");
    if (s->kind == K_SETTING)
        return tp_strdup("settings");
    if (id != NULL && s->quota == NULL)
        return tp_sprintf("%s %s", s->singular, id);
    return tp_sprintf("%s entry %zu", s->key, index + 1);
}

/* "user, service or agent". */
static const char *
choices_text(const field_t *f, char buf[128])
{
    size_t len = 0;
    for (const char *const *c = f->choices; *c != NULL; c++)
        len += (size_t)snprintf(buf + len, 128 - len, "%s%s", c == f->choices ? "" : c[1] == NULL ? " or " : ", ", *c);
    return buf;
}

static void
check_fields(apply_t *a, const section_t *s, json_t *entry, const char *label, int line)
{
    for (const field_t *f = s->fields; f->key != NULL; f++) {
        if (f->required && json_object_get(entry, f->key) == NULL)
            problem(a, line, "%s: %s is required", label, f->key);
    }
    char alts[128];
    const char *key;
    json_t *v;
    json_object_foreach(entry, key, v)
    {
        const field_t *f = s->fields;
        while (f->key != NULL && strcmp(f->key, key) != 0)
            f++;
        int at = gwctl_yaml_key_line(a->doc, entry, key);
        if (f->key == NULL)
            problem(a, at, "%s: unknown key '%s'", label, key);
        else if (!field_ok(f, v) && f->choices != NULL && json_is_string(v))
            problem(a, at, "%s: %s is '%s', not one of %s", label, key, json_string_value(v), choices_text(f, alts));
        else if (!field_ok(f, v))
            problem(a, at, "%s: %s must be %s", label, key, expected(f));
    }
}

/* The entry's identity within its section, for duplicates, --prune and change lines (malloc'd). */
static char *
entry_name(const section_t *s, json_t *entry)
{
    if (s->quota == NULL)
        return tp_strdup(s->kind == K_SETTING ? "default_effect" : str(entry, "id"));
    const char *kind = json_object_get(entry, "principal") != NULL ? "principal" : "team";
    const char *key = str(entry, s->quota->key);
    return tp_sprintf("%s %s %s %s", kind, str(entry, kind), s->quota->joiner,
                      key != NULL ? key : s->quota->key_default);
}

/* Checks that cannot be said with a field table. Returns true when the entry has a name. */
static bool
check_special(apply_t *a, const section_t *s, json_t *entry, const char *label, int line)
{
    if (s->kind == K_RULE) {
        pol_rule_t *rule = NULL;
        char *err = NULL;
        if (pol_rule_parse(entry, &rule, &err) != 0)
            problem(a, line, "%s", err != NULL ? err : "invalid rule");
        free(err);
        pol_rule_free(rule);
        return str(entry, "id") != NULL;
    }
    const char *id = str(entry, "id");
    if (s->kind == K_PRINCIPAL && id != NULL && json_object_get(entry, "kind") == NULL &&
        find_by_id(a->principals, id) == NULL)
        problem(a, line, "%s: kind is required for a new principal", label);
    if (s->quota == NULL)
        return s->kind == K_SETTING || id != NULL;
    bool principal = json_object_get(entry, "principal") != NULL, team = json_object_get(entry, "team") != NULL;
    if (principal == team)
        problem(a, line, "%s: give principal or team, one of them", label);
    if (json_object_get(entry, s->quota->amounts[0]) == NULL && json_object_get(entry, s->quota->amounts[1]) == NULL)
        problem(a, line, "%s: give %s or %s (0: no limit)", label, s->quota->amounts[0], s->quota->amounts[1]);
    const char *kind = principal ? "principal" : "team";
    return principal != team && str(entry, kind) != NULL &&
           (s->quota->key_default != NULL || str(entry, s->quota->key) != NULL);
}

/* Checks one entry of section si; `line` is the section's, for an entry without one (null). */
static void
check_entry(apply_t *a, size_t si, json_t *entry, size_t index, int line)
{
    const section_t *s = &sections[si];
    if (gwctl_yaml_line(a->doc, entry) > 0)
        line = gwctl_yaml_line(a->doc, entry);
    char *label = entry_label(s, entry, index);
    if (!json_is_object(entry)) {
        problem(a, line, "%s must be a mapping", label);
        free(label);
        return;
    }
    if (s->fields != NULL)
        check_fields(a, s, entry, label, line);
    if (check_special(a, s, entry, label, line)) {
        char *name = entry_name(s, entry);
        json_t *first = json_object_get(a->seen[si], name);
        if (first != NULL)
            problem(a, line, "%s %s is in the file twice (first at line %d)", s->singular, name,
                    (int)json_integer_value(first));
        else
            json_object_set_new(a->seen[si], name, json_integer(line));
        free(name);
    }
    free(label);
}

static void
check_file(apply_t *a, json_t *root)
{
    if (!json_is_object(root)) {
        problem(a, gwctl_yaml_line(a->doc, root),
                "the file must be a mapping with settings, teams, principals, "
                "rules, limits and budgets");
        return;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        size_t si = 0;
        while (si < NUM_SECTIONS && strcmp(sections[si].key, key) != 0)
            si++;
        int line = gwctl_yaml_key_line(a->doc, root, key);
        if (si == NUM_SECTIONS)
            problem(a, line, "unknown key '%s' (expected settings, teams, principals, rules, limits, budgets)", key);
        else if (sections[si].kind == K_SETTING)
            check_entry(a, si, v, 0, line);
        else if (!json_is_array(v) && !json_is_null(v)) /* null: an empty list */
            problem(a, line, "%s must be a list", key);
        for (size_t i = 0; si < NUM_SECTIONS && json_is_array(v) && i < json_array_size(v); i++)
            check_entry(a, si, json_array_get(v, i), i, line);
    }
}

/* ---- pass 2: compare with the store and plan ---- */

static void
plan(apply_t *a, char op, const section_t *s, const char *name, json_t *fields, int line, json_t *value)
{
    a->changes = tp_realloc(a->changes, (a->num_changes + 1) * sizeof(*a->changes));
    a->changes[a->num_changes++] =
        (change_t){ .op = op, .section = s, .name = tp_strdup(name), .fields = fields, .line = line, .value = value };
}

/* Plans '~' when `changed` names any field, else counts the entry unchanged. Steals both. */
static void
plan_update(apply_t *a, const section_t *s, const char *name, json_t *changed, int line, json_t *value)
{
    if (json_array_size(changed) == 0) {
        a->unchanged++;
        json_decref(changed);
        json_decref(value);
        return;
    }
    plan(a, '~', s, name, changed, line, value);
}

/* Overlays the entry's fields on `current` (borrowed) into `merged`, listing those that differ. */
static json_t *
merge(json_t *entry, json_t *current, const char *const *fields, json_t *merged)
{
    json_t *changed = json_array();
    for (const char *const *f = fields; *f != NULL; f++) {
        json_t *now = json_object_get(current, *f), *want = json_object_get(entry, *f);
        if (now != NULL)
            json_object_set(merged, *f, now);
        if (want == NULL)
            continue;
        if (!json_equal(want, now != NULL ? now : json_null()))
            json_array_append_new(changed, json_string(*f));
        json_object_set(merged, *f, want);
    }
    if (json_is_null(json_object_get(merged, "team")))
        json_object_del(merged, "team");
    return changed;
}

static void
plan_entity(apply_t *a, const section_t *s, json_t *entry, int line)
{
    static const char *const team_fields_cmp[] = { "description", NULL };
    static const char *const principal_fields_cmp[] = { "kind",    "team",        "roles", "labels",
                                                        "enabled", "description", NULL };
    const char *id = str(entry, "id");
    json_t *current = find_by_id(s->kind == K_TEAM ? a->teams : a->principals, id);
    if (current == NULL) {
        json_t *value = json_deep_copy(entry);
        if (json_is_null(json_object_get(value, "team")))
            json_object_del(value, "team");
        plan(a, '+', s, id, NULL, line, value);
        return;
    }
    json_t *merged = json_pack("{s:s}", "id", id);
    json_t *changed = merge(entry, current, s->kind == K_TEAM ? team_fields_cmp : principal_fields_cmp, merged);
    plan_update(a, s, id, changed, line, merged);
}

static void
plan_rule(apply_t *a, const section_t *s, json_t *entry, int line)
{
    pol_rule_t *rule = NULL;
    char *err = NULL;
    if (pol_rule_parse(entry, &rule, &err) != 0) { /* checked in pass 1 */
        free(err);
        return;
    }
    json_t *want = pol_rule_to_json(rule), *now = find_by_id(a->rules, pol_rule_id(rule));
    pol_rule_free(rule);
    const char *id = str(want, "id");
    if (now == NULL) {
        plan(a, '+', s, id, NULL, line, want);
        return;
    }
    json_t *changed = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(want, key, v)
    {
        if (!json_equal(v, json_object_get(now, key)))
            json_array_append_new(changed, json_string(key));
    }
    json_object_foreach(now, key, v)
    {
        if (json_object_get(want, key) == NULL)
            json_array_append_new(changed, json_string(key));
    }
    plan_update(a, s, id, changed, line, want);
}

/* The store's row of `rows` for this quota, or NULL. */
static json_t *
find_quota(json_t *rows, const quota_kind_t *q, const char *kind, const char *scope, const char *key)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        if (strcmp(str(r, "scope_kind"), kind) == 0 && strcmp(str(r, "scope"), scope) == 0 &&
            strcmp(str(r, q->key), key) == 0)
            return r;
    }
    return NULL;
}

static void
plan_quota(apply_t *a, const section_t *s, json_t *entry, int line)
{
    const quota_kind_t *q = s->quota;
    const char *kind = json_object_get(entry, "principal") != NULL ? "principal" : "team";
    const char *scope = str(entry, kind), *key = str(entry, q->key) != NULL ? str(entry, q->key) : q->key_default;
    json_t *now = find_quota(s->kind == K_LIMIT ? a->limits : a->budgets, q, kind, scope, key);
    json_t *changed = json_array();
    int64_t want[2];
    for (int i = 0; i < 2; i++) {
        int64_t current = json_integer_value(json_object_get(now, q->columns[i])); /* null: 0, no limit */
        json_t *v = json_object_get(entry, q->amounts[i]);
        want[i] = v != NULL ? amount_of(v, s->kind == K_BUDGET && i == 1) : current;
        if (want[i] != current)
            json_array_append_new(changed, json_string(q->amounts[i]));
    }
    char *name = entry_name(s, entry);
    json_t *value = json_pack("{s:s, s:s, s:s, s:I, s:I}", "scope_kind", kind, "scope", scope, "key", key, "a",
                              (json_int_t)want[0], "b", (json_int_t)want[1]);
    bool none = want[0] == 0 && want[1] == 0;
    if (now == NULL && !none) {
        plan(a, '+', s, name, NULL, line, value);
        json_decref(changed);
    } else if (now != NULL && none) {
        plan(a, '-', s, name, NULL, line, value);
        json_decref(changed);
    } else {
        plan_update(a, s, name, changed, line, value); /* unchanged when absent and meant to be absent */
    }
    free(name);
}

static void
plan_settings(apply_t *a, const section_t *s, json_t *settings, int line)
{
    json_t *want = json_object_get(settings, "default_effect");
    if (want == NULL)
        return;
    if (strcmp(json_string_value(want), a->default_effect) != 0)
        plan(a, '~', s, "default_effect", NULL, line, json_incref(want));
    else
        a->unchanged++;
}

/* With --prune: deletes of the rules, limits and budgets in the store that the file does not
 * name, for the sections the file has. */
static void
plan_prune(apply_t *a, json_t *root)
{
    for (size_t si = 0; si < NUM_SECTIONS; si++) {
        const section_t *s = &sections[si];
        if ((s->kind != K_RULE && s->quota == NULL) || json_object_get(root, s->key) == NULL)
            continue;
        json_t *rows = s->kind == K_RULE ? a->rules : s->kind == K_LIMIT ? a->limits : a->budgets;
        size_t i;
        json_t *r;
        json_array_foreach(rows, i, r)
        {
            const char *key = s->quota != NULL ? str(r, s->quota->key) : NULL;
            char *name = s->quota != NULL
                             ? tp_sprintf("%s %s %s %s", str(r, "scope_kind"), str(r, "scope"), s->quota->joiner, key)
                             : tp_strdup(str(r, "id"));
            if (json_object_get(a->seen[si], name) == NULL)
                plan(a, '-', s, name, NULL, 0,
                     s->quota != NULL ? json_pack("{s:s, s:s, s:s, s:i, s:i}", "scope_kind", str(r, "scope_kind"),
                                                  "scope", str(r, "scope"), "key", key, "a", 0, "b", 0)
                                      : NULL);
            free(name);
        }
    }
}

static void
plan_file(apply_t *a, json_t *root, bool prune)
{
    for (size_t si = 0; si < NUM_SECTIONS; si++) {
        const section_t *s = &sections[si];
        json_t *v = json_object_get(root, s->key);
        if (s->kind == K_SETTING && v != NULL)
            plan_settings(a, s, v, gwctl_yaml_line(a->doc, v));
        for (size_t i = 0; s->kind != K_SETTING && i < json_array_size(v); i++) {
            json_t *entry = json_array_get(v, i);
            int line = gwctl_yaml_line(a->doc, entry);
            if (s->kind == K_RULE)
                plan_rule(a, s, entry, line);
            else if (s->quota != NULL)
                plan_quota(a, s, entry, line);
            else
                plan_entity(a, s, entry, line);
        }
    }
    if (prune)
        plan_prune(a, root);
}

static int
read_store(apply_t *a, sqlite3 *db)
{
    char *err = NULL;
    if ((a->principals = pol_admin_principal_list(db, &err)) == NULL ||
        (a->teams = pol_admin_team_list(db, &err)) == NULL || (a->rules = pol_admin_rule_list(db, &err)) == NULL ||
        (a->limits = pol_admin_limit_list(db, &err)) == NULL ||
        (a->budgets = pol_admin_budget_list(db, NULL, NULL, gwctl_now_ms(), &err)) == NULL ||
        (a->default_effect = pol_admin_default_effect(db, &err)) == NULL)
        return gwctl_fail(a->c, err);
    return 0;
}

/* ---- pass 3: change the store ---- */

static int
make_change(apply_t *a, sqlite3 *db, const change_t *ch, char **err)
{
    const char *actor = gwctl_call_actor(a->c);
    json_t *v = ch->value;
    switch (ch->section->kind) {
    case K_SETTING:
        return pol_admin_set_default_effect(db, actor, json_string_value(v), err);
    case K_TEAM:
        return pol_admin_team_put(db, actor, v, ch->op == '+', err);
    case K_PRINCIPAL:
        return pol_admin_principal_put(db, actor, v, ch->op == '+', err);
    case K_RULE:
        return ch->op == '-' ? pol_admin_rule_delete(db, actor, ch->name, err)
                             : pol_admin_rule_put(db, actor, v, ch->op == '+', err);
    case K_LIMIT:
        return pol_admin_limit_set(db, actor, str(v, "scope_kind"), str(v, "scope"), str(v, "key"),
                                   json_integer_value(json_object_get(v, "a")),
                                   json_integer_value(json_object_get(v, "b")), err);
    case K_BUDGET:
        return pol_admin_budget_set(db, actor, str(v, "scope_kind"), str(v, "scope"), str(v, "key"),
                                    json_integer_value(json_object_get(v, "a")),
                                    json_integer_value(json_object_get(v, "b")), err);
    default:
        return -1;
    }
}

static void
print_change(const apply_t *a, const change_t *ch, json_t *out)
{
    if (a->c->g->json) {
        char op[2] = { ch->op, '\0' };
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:O?}", "op", op, "kind", ch->section->singular, "name",
                                             ch->name, "fields", ch->fields));
        return;
    }
    char fields[256];
    if (ch->fields != NULL)
        printf("%c %s %s (%s)\n", ch->op, ch->section->singular, ch->name, gwctl_join(ch->fields, fields, 255));
    else
        printf("%c %s %s\n", ch->op, ch->section->singular, ch->name);
}

/* Makes (or with dry_run only prints) the planned changes; returns the exit status. */
static int
execute(apply_t *a, sqlite3 *db, bool dry_run)
{
    json_t *out = json_array();
    size_t done = 0;
    char *err = NULL;
    for (; done < a->num_changes; done++) {
        const change_t *ch = &a->changes[done];
        if (!dry_run && make_change(a, db, ch, &err) != 0)
            break;
        print_change(a, ch, out);
    }
    bool failed = done < a->num_changes;
    if (failed) {
        const change_t *ch = &a->changes[done];
        problem(a, ch->line, "cannot make '%c %s %s': %s", ch->op, ch->section->singular, ch->name,
                err != NULL ? err : "failed");
        fprintf(stderr, "gwctl apply: nothing was changed (all changes are made in one transaction)\n");
        done = 0;
    }
    if (a->c->g->json) {
        json_t *result = json_pack("{s:b, s:o, s:I, s:I}", "dry_run", dry_run, "changes", out, "changed",
                                   (json_int_t)done, "unchanged", (json_int_t)a->unchanged);
        if (failed)
            json_object_set_new(result, "error", json_string(err != NULL ? err : "failed"));
        gwctl_print_json(result);
    } else {
        json_decref(out);
        if (dry_run)
            printf("%zu to change, %zu unchanged (dry run: nothing was changed)\n", done, a->unchanged);
        else if (!failed)
            printf("%zu changed, %zu unchanged\n", done, a->unchanged);
    }
    free(err);
    return failed ? 1 : 0;
}

static void
apply_free(apply_t *a)
{
    for (size_t i = 0; i < a->num_changes; i++) {
        free(a->changes[i].name);
        json_decref(a->changes[i].fields);
        json_decref(a->changes[i].value);
    }
    free(a->changes);
    for (size_t i = 0; i < NUM_SECTIONS; i++)
        json_decref(a->seen[i]);
    json_decref(a->principals);
    json_decref(a->teams);
    json_decref(a->rules);
    json_decref(a->limits);
    json_decref(a->budgets);
    free(a->default_effect);
    gwctl_yaml_free(a->doc);
}

/* The three passes over a loaded file; returns the exit status. */
static int
apply_file(apply_t *a, bool dry_run, bool prune)
{
    json_t *root = gwctl_yaml_root(a->doc);
    for (size_t i = 0; i < NUM_SECTIONS; i++)
        a->seen[i] = json_object();
    sqlite3 *db = gwctl_call_db(a->c);
    if (db == NULL)
        return 1;
    /* One transaction from reading the store to the last change: the plan is made against the
     * state it changes, and daemons see the whole file applied or none of it (each admin call
     * becomes a savepoint inside it). */
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "gwctl apply: begin: %s\n", sqlite3_errmsg(db));
        return 1;
    }
    int rv = 1;
    if (read_store(a, db) != 0)
        goto out;
    check_file(a, root);
    if (a->problems > 0) {
        fprintf(stderr, "gwctl apply: %d problem%s in %s; nothing was changed\n", a->problems,
                a->problems == 1 ? "" : "s", gwctl_yaml_name(a->doc));
        goto out;
    }
    plan_file(a, root, prune);
    rv = execute(a, db, dry_run);
out:
    if (rv == 0 && !dry_run && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "gwctl apply: commit: %s; nothing was changed\n", sqlite3_errmsg(db));
        rv = 1;
    }
    if (sqlite3_get_autocommit(db) == 0)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rv;
}

static int
run_apply(gwctl_t *g, int argc, char **argv)
{
    static const struct option opts[] = {
        { "file", required_argument, NULL, 'f' },
        { "dry-run", no_argument, NULL, 'n' },
        { "prune", no_argument, NULL, 'p' },
        { NULL, 0, NULL, 0 },
    };
    gwctl_call_t c;
    gwctl_call_begin(&c, g, &gwctl_cmd_apply);
    const char *file = NULL;
    bool dry_run = false, prune = false;
    int opt;
    while ((opt = gwctl_getopt(&c, argc, argv, "f:", opts)) != -1) {
        if (opt == '?')
            return gwctl_call_end(&c, 2);
        if (opt == 'f')
            file = optarg;
        dry_run = dry_run || opt == 'n';
        prune = prune || opt == 'p';
    }
    if (gwctl_operands(&c, argc, argv, 0, NULL, NULL) != 0)
        return gwctl_call_end(&c, 2);
    if (file == NULL)
        return gwctl_call_end(&c, gwctl_usage_error(&c, "-f FILE is required (- for standard input)"));
    char *err = NULL;
    apply_t a = { .c = &c, .doc = gwctl_yaml_load(file, &err) };
    if (a.doc == NULL)
        return gwctl_call_end(&c, gwctl_fail(&c, err));
    int rv = apply_file(&a, dry_run, prune);
    apply_free(&a);
    return gwctl_call_end(&c, rv);
}

const gwctl_command_t gwctl_cmd_apply = {
    .name = "apply",
    .summary = "Make teams, principals, rules, limits and budgets match a YAML file.",
    .usage = " -f FILE [--dry-run] [--prune]\n"
             "  FILE (- for standard input) may have these top-level keys:\n"
             "    settings:   {default_effect: allow|deny}\n"
             "    teams:      [{id, description}]\n"
             "    principals: [{id, kind, team, roles: [..], labels: {..}, enabled, description}]\n"
             "    rules:      [rule objects, as `gwctl policy show` prints them]\n"
             "    limits:     [{principal|team: ID, resource: GLOB (default *), rpm, tpm}]\n"
             "    budgets:    [{principal|team: ID, period: day|month, tokens, cost}]\n"
             "  Only the fields an entry sets are compared and changed. Each change is printed as\n"
             "  '+ principal alice', '~ rule ml-chat (resources)' or '- rule old'. --dry-run changes\n"
             "  nothing. --prune deletes rules, limits and budgets that the file does not list, in the\n"
             "  sections the file has (never principals, teams or keys). The whole file is checked first.",
    .run = run_apply,
};
