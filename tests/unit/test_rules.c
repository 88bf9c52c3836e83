#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "rules.h"

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- fixtures ---------------------------------------------------------------------------- */

/* Rule JSON in these tests uses ' for " so that it stays readable; j() turns it back. */
static json_t *
j(const char *text)
{
    char *s = strdup(text);
    assert_non_null(s);
    for (char *p = s; *p != '\0'; p++) {
        if (*p == '\'')
            *p = '"';
    }
    json_error_t jerr;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &jerr);
    if (v == NULL)
        fail_msg("bad test JSON %s: %s", s, jerr.text);
    free(s);
    return v;
}

static pol_rule_t *
rule(const char *text)
{
    json_t *def = j(text);
    pol_rule_t *r = NULL;
    char *err = NULL;
    int rv = pol_rule_parse(def, &r, &err);
    if (rv != 0)
        fail_msg("parse %s: %s", text, err);
    json_decref(def);
    return r;
}

/* Builds a ruleset from a NULL-terminated list of rule texts. */
static pol_ruleset_t *
ruleset(const char *const *texts)
{
    pol_rule_t *rules[64];
    size_t n = 0;
    for (; texts[n] != NULL; n++) {
        assert_true(n < 64);
        rules[n] = rule(texts[n]);
    }
    char *err = NULL;
    pol_ruleset_t *rs = pol_ruleset_new(rules, n, &err);
    if (rs == NULL)
        fail_msg("ruleset: %s", err);
    return rs;
}

#define RULESET(...) ruleset((const char *const[]){ __VA_ARGS__, NULL })

static char *alice_roles[] = { "admin", "dev" };
static pol_label_t alice_labels[] = { { "env", "prod-eu" }, { "tier", "gold" } };
static const pol_principal_t alice = {
    .id = "alice",
    .kind = POL_KIND_USER,
    .team = "ml",
    .roles = alice_roles,
    .num_roles = 2,
    .labels = alice_labels,
    .num_labels = 2,
    .enabled = true,
};

static const pol_principal_t indexer = {
    .id = "svc-indexer",
    .kind = POL_KIND_SERVICE,
    .team = NULL,
    .enabled = true,
};

static char *agent_roles[] = { "reader" };
static pol_label_t agent_labels[] = { { "env", "staging" } };
static const pol_principal_t agent7 = {
    .id = "agent-7",
    .kind = POL_KIND_AGENT,
    .team = "ops",
    .roles = agent_roles,
    .num_roles = 1,
    .labels = agent_labels,
    .num_labels = 1,
    .enabled = true,
};

/* Unix milliseconds for a UTC date and time. 2024-01-01 was a Monday. */
static int64_t
utc(int year, int month, int day, int hour, int minute)
{
    struct tm tm = { .tm_year = year - 1900, .tm_mon = month - 1, .tm_mday = day, .tm_hour = hour, .tm_min = minute };
    return (int64_t)timegm(&tm) * 1000;
}

/* Wednesday 2024-01-03 12:00 UTC, unless a test says otherwise. */
#define NOON_WED utc(2024, 1, 3, 12, 0)

static pol_request_t
request(const pol_principal_t *p, const char *plane, const char *resource, const char *action)
{
    return (pol_request_t){
        .principal = p, .plane = plane, .resource = resource, .action = action, .request_size = 100, .now_ms = NOON_WED
    };
}

/* The decision's rule id, or "-" when the default decided. */
static const char *
decided_by(pol_decision_t d)
{
    return d.rule != NULL ? pol_rule_id(d.rule) : "-";
}

static char *
dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    assert_non_null(s);
    return s;
}

/* ---- parsing ----------------------------------------------------------------------------- */

typedef struct parse_case {
    const char *text;
    const char *error;
} parse_case_t;

#define BASE "'id':'r1','effect':'allow','subjects':{'teams':['ml']},'plane':'model'"
#define RA   "'resources':['m'],'actions':['chat']"

static const parse_case_t parse_cases[] = {
    { "[]", "rule: definition must be a JSON object" },
    { "{}", "rule: id is required" },
    { "{'id':5}", "rule: id must be 1 to 128 characters from A-Z a-z 0-9 . _ : -" },
    { "{'id':''}", "rule: id must be 1 to 128 characters from A-Z a-z 0-9 . _ : -" },
    { "{'id':'has space'}", "rule: id must be 1 to 128 characters from A-Z a-z 0-9 . _ : -" },
    { "{'id':'"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "a"
      "aaaaaaaaaaaaaaaa'}",
      "rule: id must be 1 to 128 characters from A-Z a-z 0-9 . _ : -" },
    { "{'id':'r1','effect':'allow','colour':'red'}", "rule r1: unknown key \"colour\"" },
    { "{'id':'r1'}", "rule r1: effect is required" },
    { "{'id':'r1','effect':'permit'}", "rule r1: effect must be \"allow\" or \"deny\"" },
    { "{'id':'r1','effect':true}", "rule r1: effect must be \"allow\" or \"deny\"" },
    { "{'id':'r1','effect':'deny','description':7}", "rule r1: description must be a string of at most 1024 bytes" },
    { "{'id':'r1','effect':'deny'}", "rule r1: subjects is required" },
    { "{'id':'r1','effect':'deny','subjects':['alice']}", "rule r1: subjects must be an object" },
    { "{'id':'r1','effect':'deny','subjects':{'users':['a']}}", "rule r1: unknown key \"subjects.users\"" },
    { "{'id':'r1','effect':'deny','subjects':{'teams':'ml'}}", "rule r1: subjects.teams must be an array of strings" },
    { "{'id':'r1','effect':'deny','subjects':{'roles':['a','']}}",
      "rule r1: subjects.roles[1] must be a non-empty string" },
    { "{'id':'r1','effect':'deny','subjects':{'principals':[],'teams':[]}}",
      "rule r1: subjects must list at least one of principals, teams, roles, kinds" },
    { "{'id':'r1','effect':'deny','subjects':{'kinds':['agent','robot']}}",
      "rule r1: subjects.kinds[1] \"robot\" matches no kind (user, service, agent)" },
    { "{'id':'r1','effect':'deny','subjects':{'principals':['a[b']}}",
      "rule r1: subjects.principals[0] \"a[b\" has a [ without its ]" },
    { "{'id':'r1','effect':'deny','subjects':{'teams':['ml']}}", "rule r1: plane is required" },
    { "{'id':'r1','effect':'deny','subjects':{'teams':['ml']},'plane':'tools'}",
      "rule r1: plane must be one of \"model\", \"mcp\", \"agent\" or \"*\"" },
    { "{" BASE "}", "rule r1: resources must be a non-empty array of strings" },
    { "{" BASE ",'resources':[]}", "rule r1: resources must be a non-empty array of strings" },
    { "{" BASE ",'resources':'m'}", "rule r1: resources must be a non-empty array of strings" },
    { "{" BASE ",'resources':['m',3]}", "rule r1: resources[1] must be a non-empty string" },
    { "{" BASE ",'resources':['ab\\\\']}", "rule r1: resources[0] \"ab\\\" ends with a lone \\" },
    { "{" BASE ",'resources':['[!]']}", "rule r1: resources[0] \"[!]\" has a [ without its ]" },
    { "{" BASE ",'resources':['m']}", "rule r1: actions must be a non-empty array of strings" },
    { "{" BASE ",'resources':['m'],'actions':[null]}", "rule r1: actions[0] must be a non-empty string" },
    { "{" BASE "," RA ",'conditions':[]}", "rule r1: conditions must be an object" },
    { "{" BASE "," RA ",'conditions':{'geo':'eu'}}", "rule r1: unknown key \"conditions.geo\"" },
    { "{" BASE "," RA ",'conditions':{'time':'9-5'}}", "rule r1: conditions.time must be an object" },
    { "{" BASE "," RA ",'conditions':{'time':{'zone':'UTC'}}}", "rule r1: unknown key \"conditions.time.zone\"" },
    { "{" BASE "," RA ",'conditions':{'time':{}}}", "rule r1: conditions.time must have days, or start and end" },
    { "{" BASE "," RA ",'conditions':{'time':{'start':'09:00'}}}",
      "rule r1: conditions.time needs both start and end, or neither" },
    { "{" BASE "," RA ",'conditions':{'time':{'start':'9:00','end':'17:00'}}}",
      "rule r1: conditions.time.start must be \"HH:MM\" between 00:00 and 23:59" },
    { "{" BASE "," RA ",'conditions':{'time':{'start':'24:00','end':'17:00'}}}",
      "rule r1: conditions.time.start must be \"HH:MM\" between 00:00 and 23:59" },
    { "{" BASE "," RA ",'conditions':{'time':{'start':'09:00','end':'12:60'}}}",
      "rule r1: conditions.time.end must be \"HH:MM\" between 00:00 and 24:00" },
    { "{" BASE "," RA ",'conditions':{'time':{'start':'09:00','end':'24:01'}}}",
      "rule r1: conditions.time.end must be \"HH:MM\" between 00:00 and 24:00" },
    { "{" BASE "," RA ",'conditions':{'time':{'start':'09:00','end':900}}}",
      "rule r1: conditions.time.end must be \"HH:MM\" between 00:00 and 24:00" },
    { "{" BASE "," RA ",'conditions':{'time':{'start':'09:00','end':'09:00'}}}",
      "rule r1: conditions.time start and end must differ" },
    { "{" BASE "," RA ",'conditions':{'time':{'days':[]}}}",
      "rule r1: conditions.time.days must be a non-empty array of day names (mon..sun)" },
    { "{" BASE "," RA ",'conditions':{'time':{'days':['mon','Monday']}}}",
      "rule r1: conditions.time.days[1] \"Monday\" is not a day (mon, tue, wed, thu, fri, sat, sun)" },
    { "{" BASE "," RA ",'conditions':{'time':{'days':[1]}}}",
      "rule r1: conditions.time.days[0] must be a day name (mon..sun)" },
    { "{" BASE "," RA ",'conditions':{'max_request_size':-1}}",
      "rule r1: conditions.max_request_size must be a non-negative integer (bytes)" },
    { "{" BASE "," RA ",'conditions':{'max_request_size':'64k'}}",
      "rule r1: conditions.max_request_size must be a non-negative integer (bytes)" },
    { "{" BASE "," RA ",'conditions':{'max_request_size':1.5}}",
      "rule r1: conditions.max_request_size must be a non-negative integer (bytes)" },
    { "{" BASE "," RA ",'conditions':{'labels':['env']}}",
      "rule r1: conditions.labels must be an object of label name to glob" },
    { "{" BASE "," RA ",'conditions':{'labels':{'env':3}}}",
      "rule r1: conditions.labels.env must be a non-empty string" },
    { "{" BASE "," RA ",'conditions':{'labels':{'env':''}}}",
      "rule r1: conditions.labels.env must be a non-empty string" },
    { "{" BASE "," RA ",'conditions':{'labels':{'':'x'}}}",
      "rule r1: conditions.labels: label names must be non-empty" },
    { "{" BASE "," RA ",'conditions':{'labels':{'env':'[x'}}}",
      "rule r1: conditions.labels.env \"[x\" has a [ without its ]" },
};

static void
parse_errors_name_the_field(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        json_t *def = j(parse_cases[i].text);
        pol_rule_t *r = (pol_rule_t *)&r; /* must be reset to NULL */
        char *err = NULL;
        int rv = pol_rule_parse(def, &r, &err);
        if (rv != -EINVAL)
            fail_msg("case %zu (%s) parsed", i, parse_cases[i].text);
        assert_null(r);
        if (err == NULL || strcmp(err, parse_cases[i].error) != 0)
            fail_msg("case %zu (%s):\n  got  %s\n  want %s", i, parse_cases[i].text, err, parse_cases[i].error);
        free(err);
        json_decref(def);
    }
}

static void
parse_accepts_valid_edges(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "{'id':'A-z.0_9:x','effect':'allow','subjects':{'principals':['*']},'plane':'*','resources':['*'],'actions':['*"
        "']}",
        "{" BASE "," RA ",'conditions':{}}",
        "{" BASE "," RA ",'conditions':{'time':{'days':['sun']}}}",
        "{" BASE "," RA ",'conditions':{'time':{'start':'00:00','end':'24:00'}}}",
        "{" BASE "," RA ",'conditions':{'time':{'start':'23:59','end':'00:00'}}}",
        "{" BASE "," RA ",'conditions':{'max_request_size':0}}",
        "{" BASE ",'resources':['a\\\\*b','[]x]','[!a-c]?'],'actions':['chat']}",
        "{'id':'r','effect':'deny','subjects':{'kinds':['*']},'plane':'mcp','resources':['x'],'actions':['y']}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        pol_rule_free(rule(ok[i]));
}

static void
accessors(void **state)
{
    (void)state;
    pol_rule_t *r = rule("{'id':'ml-chat','effect':'deny','description':'no chat','subjects':{'teams':['ml']},"
                         "'plane':'mcp','resources':['x'],'actions':['y']}");
    assert_string_equal(pol_rule_id(r), "ml-chat");
    assert_int_equal(pol_rule_effect(r), POL_EFFECT_DENY);
    assert_int_equal(pol_rule_plane(r), POL_PLANE_MCP);
    assert_string_equal(pol_rule_description(r), "no chat");
    assert_string_equal(pol_effect_name(pol_rule_effect(r)), "deny");
    assert_string_equal(pol_plane_name(pol_rule_plane(r)), "mcp");
    assert_string_equal(pol_plane_name(POL_PLANE_ANY), "*");
    pol_rule_free(r);

    r = rule("{" BASE "," RA "}");
    assert_null(pol_rule_description(r));
    pol_rule_free(r);
}

/* ---- canonical form ---------------------------------------------------------------------- */

static void
to_json_is_canonical(void **state)
{
    (void)state;
    pol_rule_t *r = rule("{'conditions':{'labels':{'tier':'g*','env':'prod*'},'max_request_size':65536,"
                         "'time':{'end':'06:00','start':'22:00','days':['sun','fri','mon','fri']}},"
                         "'actions':['chat','embed'],'resources':['llama3*','fs/read_*'],'plane':'model',"
                         "'subjects':{'kinds':['agent'],'roles':[],'principals':['alice','svc-*']},"
                         "'description':'night shift','effect':'allow','id':'ml-chat'}");
    json_t *v = pol_rule_to_json(r);
    char *s = dump(v);
    assert_string_equal(s, "{\"id\":\"ml-chat\",\"effect\":\"allow\",\"description\":\"night shift\","
                           "\"subjects\":{\"principals\":[\"alice\",\"svc-*\"],\"kinds\":[\"agent\"]},"
                           "\"plane\":\"model\",\"resources\":[\"llama3*\",\"fs/read_*\"],"
                           "\"actions\":[\"chat\",\"embed\"],\"conditions\":{\"time\":{\"days\":[\"mon\",\"fri\","
                           "\"sun\"],\"start\":\"22:00\",\"end\":\"06:00\"},\"max_request_size\":65536,"
                           "\"labels\":{\"env\":\"prod*\",\"tier\":\"g*\"}}}");
    free(s);
    json_decref(v);
    pol_rule_free(r);
}

static void
to_json_round_trips(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "{" BASE "," RA "}",
        "{" BASE "," RA ",'conditions':{}}",
        "{'id':'x','effect':'deny','description':'','subjects':{'roles':['a*'],'teams':['t']},'plane':'*',"
        "'resources':['a\\\\*','[]x]'],'actions':['*']}",
        "{" BASE "," RA ",'conditions':{'time':{'days':['sat','sun']}}}",
        "{" BASE "," RA ",'conditions':{'time':{'start':'00:00','end':'24:00'}}}",
        "{" BASE "," RA ",'conditions':{'time':{'days':['tue'],'start':'23:30','end':'00:15'},'max_request_size':0}}",
        "{" BASE "," RA ",'conditions':{'labels':{'b':'2','a':'1*'}}}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        pol_rule_t *r = rule(texts[i]);
        json_t *first = pol_rule_to_json(r);
        pol_rule_t *again = NULL;
        char *err = NULL;
        assert_int_equal(pol_rule_parse(first, &again, &err), 0);
        json_t *second = pol_rule_to_json(again);
        char *a = dump(first), *b = dump(second);
        assert_string_equal(a, b);
        free(a);
        free(b);
        json_decref(first);
        json_decref(second);
        pol_rule_free(r);
        pol_rule_free(again);
    }
}

/* ---- globs ------------------------------------------------------------------------------- */

/* Does a resource pattern match s? Asked through a one-rule ruleset, both ways (index and
 * explain), so that the index's shortcuts are checked against the plain matcher too. */
static bool
resource_matches(const char *pattern, const char *s)
{
    json_t *def = json_pack("{s:s, s:s, s:{s:[s]}, s:s, s:[s], s:[s]}", "id", "g", "effect", "allow", "subjects",
                            "principals", "*", "plane", "*", "resources", pattern, "actions", "*");
    assert_non_null(def);
    pol_rule_t *r = NULL;
    char *err = NULL;
    if (pol_rule_parse(def, &r, &err) != 0)
        fail_msg("pattern %s: %s", pattern, err);
    json_decref(def);
    pol_ruleset_t *rs = pol_ruleset_new(&r, 1, NULL);
    pol_request_t req = request(&alice, "model", s, "chat");
    bool allow = pol_evaluate(rs, &req, false).allow;
    json_t *ex = pol_explain(rs, &req, false);
    assert_string_equal(json_string_value(json_object_get(ex, "decision")), allow ? "allow" : "deny");
    json_decref(ex);
    pol_ruleset_free(rs);
    return allow;
}

typedef struct glob_case {
    const char *pattern;
    const char *s;
    bool match;
} glob_case_t;

static const glob_case_t glob_cases[] = {
    { "llama3", "llama3", true },
    { "llama3", "llama3-8b", false },
    { "llama3", "Llama3", false }, /* case-sensitive */
    { "llama3*", "llama3", true },
    { "llama3*", "llama3-70b-instruct", true },
    { "llama3*", "llama2", false },
    { "llama3**", "llama3x", true },
    { "*", "", true },
    { "*", "anything/at/all", true },
    { "fs/read_*", "fs/read_file", true },
    { "fs/read_*", "fs/write_file", false },
    { "fs/*", "fs/a/b", true }, /* '*' crosses '/' */
    { "*/read_file", "fs/read_file", true },
    { "*/read_file", "fs/read_files", false },
    { "*-8b", "llama3-8b", true },
    { "*-8b", "llama3-8b-q4", false },
    { "a*b*c", "aXXbYYc", true },
    { "a*b*c", "aXXcYYb", false },
    { "*ab", "aab", true },
    { "llama?-8b", "llama3-8b", true },
    { "llama?-8b", "llama-8b", false },
    { "?", "", false },
    { "[lg]*", "gpt-4o", true },
    { "[lg]*", "mistral", false },
    { "[a-c]x", "bx", true },
    { "[a-c]x", "dx", false },
    { "[!a-c]x", "dx", true },
    { "[!a-c]x", "ax", false },
    { "[^a]", "b", true },
    { "[]]", "]", true },
    { "[!]]", "]", false },
    { "[a-]", "-", true },
    { "\\*", "*", true },
    { "\\*", "x", false },
    { "a\\*b*", "a*bc", true },
    { "a\\*b*", "axbc", false },
    { "\\[x]", "[x]", true },
    { "x?", "x\xc3", true }, /* '?' is one byte */
};

static void
glob_matching(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(glob_cases) / sizeof(glob_cases[0]); i++) {
        const glob_case_t *c = &glob_cases[i];
        if (resource_matches(c->pattern, c->s) != c->match)
            fail_msg("pattern \"%s\" on \"%s\": expected %s", c->pattern, c->s, c->match ? "match" : "no match");
    }
}

/* A small deterministic generator (xorshift64*), so failures reproduce. */
static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

static const char *
pick(uint64_t *s, const char *const *v, size_t n)
{
    return v[rnd(s) % n];
}

#define PICK(s, arr) pick(s, arr, sizeof(arr) / sizeof(arr[0]))

/* The matcher agrees with fnmatch(3) (flags 0, C locale) on random patterns and strings. */
static void
glob_agrees_with_fnmatch(void **state)
{
    (void)state;
    static const char *const tokens[] = { "a",    "b",    "c",     "/",    "-",   "*",   "*",  "?",
                                          "[ab]", "[!a]", "[a-c]", "[]a]", "\\*", "\\?", "\\[" };
    static const char alphabet[] = "abc/-*?[]";
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 3000; i++) {
        char pattern[64] = "", s[16];
        size_t ntok = 1 + rnd(&seed) % 5;
        for (size_t t = 0; t < ntok; t++)
            strcat(pattern, PICK(&seed, tokens));
        size_t len = rnd(&seed) % 8;
        for (size_t k = 0; k < len; k++)
            s[k] = alphabet[rnd(&seed) % (sizeof(alphabet) - 1)];
        s[len] = '\0';
        bool want = fnmatch(pattern, s, 0) == 0;
        if (resource_matches(pattern, s) != want)
            fail_msg("pattern \"%s\" on \"%s\": fnmatch says %s", pattern, s, want ? "match" : "no match");
    }
}

/* ---- subjects, planes, decisions --------------------------------------------------------- */

typedef struct subject_case {
    const char *subjects;
    const pol_principal_t *who;
    bool match;
} subject_case_t;

static void
each_subject_kind(void **state)
{
    (void)state;
    static const subject_case_t cases[] = {
        { "{'principals':['alice']}", &alice, true },
        { "{'principals':['alice']}", &indexer, false },
        { "{'principals':['svc-*']}", &indexer, true },
        { "{'principals':['*']}", &agent7, true },
        { "{'principals':['*']}", &indexer, true },
        { "{'teams':['ml']}", &alice, true },
        { "{'teams':['ml']}", &agent7, false },
        { "{'teams':['*']}", &indexer, false }, /* no team matches no team pattern */
        { "{'teams':['o*']}", &agent7, true },
        { "{'roles':['dev']}", &alice, true },
        { "{'roles':['read*']}", &agent7, true },
        { "{'roles':['admin']}", &agent7, false },
        { "{'roles':['*']}", &indexer, false }, /* no roles */
        { "{'kinds':['agent']}", &agent7, true },
        { "{'kinds':['agent']}", &alice, false },
        { "{'kinds':['s*']}", &indexer, true },
        { "{'kinds':['user','service']}", &agent7, false },
        /* any entry of any list */
        { "{'principals':['bob'],'teams':['nope'],'roles':['nope'],'kinds':['service']}", &indexer, true },
        { "{'principals':['bob'],'teams':['ops']}", &agent7, true },
        { "{'principals':['bob'],'teams':['x'],'roles':['y'],'kinds':['user']}", &agent7, false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 "{'id':'s','effect':'allow','subjects':%s,'plane':'*','resources':['m'],'actions':['chat']}",
                 cases[i].subjects);
        pol_ruleset_t *rs = RULESET(text);
        pol_request_t req = request(cases[i].who, "model", "m", "chat");
        if (pol_evaluate(rs, &req, false).allow != cases[i].match)
            fail_msg("subjects %s for %s: expected %s", cases[i].subjects, cases[i].who->id,
                     cases[i].match ? "match" : "no match");
        pol_ruleset_free(rs);
    }
}

static void
planes_and_star(void **state)
{
    (void)state;
    pol_ruleset_t *rs =
        RULESET("{'id':'model-only','effect':'allow','subjects':{'principals':['*']},'plane':'model','resources':['r'],"
                "'actions':['a']}",
                "{'id':'mcp-only','effect':'allow','subjects':{'principals':['*']},'plane':'mcp','resources':['t/*'],"
                "'actions':['a']}",
                "{'id':'everywhere','effect':'allow','subjects':{'principals':['*']},'plane':'*','resources':['any'],"
                "'actions':['a']}");
    static const struct {
        const char *plane, *resource, *by;
    } cases[] = {
        { "model", "r", "model-only" },
        { "mcp", "r", "-" },
        { "agent", "r", "-" },
        { "mcp", "t/x", "mcp-only" },
        { "model", "t/x", "-" },
        { "model", "any", "everywhere" },
        { "mcp", "any", "everywhere" },
        { "agent", "any", "everywhere" },
        { "other", "any", "everywhere" },
        { "other", "r", "-" },
        { "MODEL", "r", "-" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pol_request_t req = request(&alice, cases[i].plane, cases[i].resource, "a");
        pol_decision_t d = pol_evaluate(rs, &req, false);
        if (strcmp(decided_by(d), cases[i].by) != 0)
            fail_msg("%s %s: decided by %s, want %s", cases[i].plane, cases[i].resource, decided_by(d), cases[i].by);
        assert_int_equal(d.allow, d.rule != NULL);
    }
    pol_ruleset_free(rs);
}

static void
deny_overrides_allow_in_any_order(void **state)
{
    (void)state;
    const char *allow = "{'id':'allow-ml','effect':'allow','subjects':{'teams':['ml']},'plane':'model',"
                        "'resources':['llama3*'],'actions':['*']}";
    const char *allow2 = "{'id':'allow-alice','effect':'allow','subjects':{'principals':['alice']},'plane':'*',"
                         "'resources':['*'],'actions':['chat']}";
    const char *deny = "{'id':'deny-70b','effect':'deny','subjects':{'principals':['*']},'plane':'model',"
                       "'resources':['llama3-70b'],'actions':['chat']}";
    const char *deny2 = "{'id':'deny-admins','effect':'deny','subjects':{'roles':['admin']},'plane':'*',"
                        "'resources':['llama3-70b'],'actions':['*']}";
    pol_ruleset_t *sets[] = {
        RULESET(allow, allow2, deny, deny2),
        RULESET(deny, deny2, allow, allow2),
        RULESET(allow, deny, allow2, deny2),
    };
    for (size_t i = 0; i < 3; i++) {
        pol_request_t req = request(&alice, "model", "llama3-70b", "chat");
        pol_decision_t d = pol_evaluate(sets[i], &req, true);
        assert_false(d.allow);
        assert_string_equal(decided_by(d), "deny-70b"); /* the first matching deny in ruleset order */
        assert_string_equal(d.reason, "denied by rule");

        req.action = "embed"; /* deny-70b does not apply, deny-admins does */
        d = pol_evaluate(sets[i], &req, true);
        assert_false(d.allow);
        assert_string_equal(decided_by(d), "deny-admins");

        req.resource = "llama3-8b";
        d = pol_evaluate(sets[i], &req, false);
        assert_true(d.allow);
        assert_string_equal(decided_by(d), "allow-ml");
        assert_string_equal(d.reason, "allowed by rule");

        req.action = "chat"; /* both allows apply: the first in ruleset order is named */
        d = pol_evaluate(sets[i], &req, false);
        assert_true(d.allow);
        assert_string_equal(decided_by(d), "allow-ml");
    }
    pol_request_t req = request(&agent7, "model", "llama3-8b", "chat");
    assert_string_equal(decided_by(pol_evaluate(sets[1], &req, false)), "-");
    for (size_t i = 0; i < 3; i++)
        pol_ruleset_free(sets[i]);
}

static void
default_decides_when_nothing_matches(void **state)
{
    (void)state;
    pol_rule_t *none[1];
    pol_ruleset_t *empty = pol_ruleset_new(none, 0, NULL);
    assert_non_null(empty);
    assert_int_equal(pol_ruleset_count(empty), 0);
    pol_ruleset_t *rs =
        RULESET("{'id':'a','effect':'allow','subjects':{'teams':['ml']},'plane':'model','resources':['m'],"
                "'actions':['chat']}");
    pol_ruleset_t *sets[] = { empty, rs };
    for (size_t i = 0; i < 2; i++) {
        pol_request_t req = request(&indexer, "model", "m", "chat");
        pol_decision_t d = pol_evaluate(sets[i], &req, false);
        assert_false(d.allow);
        assert_null(d.rule);
        assert_string_equal(d.reason, "no rule matched: default deny");
        d = pol_evaluate(sets[i], &req, true);
        assert_true(d.allow);
        assert_null(d.rule);
        assert_string_equal(d.reason, "no rule matched: default allow");
    }
    pol_ruleset_free(empty);
    pol_ruleset_free(rs);
}

static void
ruleset_lookup_and_duplicates(void **state)
{
    (void)state;
    pol_ruleset_t *rs = RULESET(
        "{'id':'b','effect':'allow','subjects':{'teams':['x']},'plane':'model','resources':['m'],'actions':['c']}",
        "{'id':'a','effect':'deny','subjects':{'teams':['x']},'plane':'mcp','resources':['m'],'actions':['c']}",
        "{'id':'c','effect':'allow','subjects':{'teams':['x']},'plane':'agent','resources':['m'],'actions':['c']}");
    assert_int_equal(pol_ruleset_count(rs), 3);
    assert_string_equal(pol_rule_id(pol_ruleset_rule(rs, 0)), "b");
    assert_string_equal(pol_rule_id(pol_ruleset_rule(rs, 2)), "c");
    assert_ptr_equal(pol_ruleset_find(rs, "a"), pol_ruleset_rule(rs, 1));
    assert_ptr_equal(pol_ruleset_find(rs, "c"), pol_ruleset_rule(rs, 2));
    assert_null(pol_ruleset_find(rs, "d"));
    assert_null(pol_ruleset_find(rs, ""));
    pol_ruleset_free(rs);

    pol_rule_t *rules[] = {
        rule("{'id':'x','effect':'allow','subjects':{'teams':['x']},'plane':'model','resources':['m'],"
             "'actions':['c']}"),
        rule("{'id':'y','effect':'allow','subjects':{'teams':['x']},'plane':'model','resources':['m'],"
             "'actions':['c']}"),
        rule("{'id':'x','effect':'deny','subjects':{'teams':['x']},'plane':'mcp','resources':['m'],"
             "'actions':['c']}"),
    };
    char *err = NULL;
    assert_null(pol_ruleset_new(rules, 3, &err)); /* the rules are freed: ASan would report a leak */
    assert_string_equal(err, "rules: two rules have the id \"x\"");
    free(err);
}

/* ---- conditions -------------------------------------------------------------------------- */

typedef struct time_case {
    const char *time;
    int64_t at;
    bool holds;
} time_case_t;

static void
time_windows(void **state)
{
    (void)state;
    /* 2024-01-05 is a Friday, 2024-01-06 a Saturday, 2024-01-07 a Sunday, 2024-01-08 a Monday. */
    const time_case_t cases[] = {
        { "{'start':'09:00','end':'17:00'}", utc(2024, 1, 3, 9, 0), true }, /* start is inside */
        { "{'start':'09:00','end':'17:00'}", utc(2024, 1, 3, 8, 59), false },
        { "{'start':'09:00','end':'17:00'}", utc(2024, 1, 3, 16, 59) + 59999, true },
        { "{'start':'09:00','end':'17:00'}", utc(2024, 1, 3, 17, 0), false }, /* end is outside */
        { "{'days':['mon','tue','wed','thu','fri'],'start':'09:00','end':'17:00'}", utc(2024, 1, 6, 12, 0), false },
        { "{'days':['mon','tue','wed','thu','fri'],'start':'09:00','end':'17:00'}", utc(2024, 1, 5, 12, 0), true },
        /* across midnight: the part after midnight belongs to the day the window opened */
        { "{'start':'22:00','end':'06:00'}", utc(2024, 1, 3, 23, 0), true },
        { "{'start':'22:00','end':'06:00'}", utc(2024, 1, 3, 5, 59), true },
        { "{'start':'22:00','end':'06:00'}", utc(2024, 1, 3, 6, 0), false },
        { "{'start':'22:00','end':'06:00'}", utc(2024, 1, 3, 21, 59), false },
        { "{'days':['fri'],'start':'22:00','end':'06:00'}", utc(2024, 1, 5, 22, 0), true },
        { "{'days':['fri'],'start':'22:00','end':'06:00'}", utc(2024, 1, 6, 1, 0), true },  /* Saturday morning */
        { "{'days':['fri'],'start':'22:00','end':'06:00'}", utc(2024, 1, 5, 1, 0), false }, /* Thursday's night */
        { "{'days':['fri'],'start':'22:00','end':'06:00'}", utc(2024, 1, 6, 22, 30), false },
        { "{'days':['sun'],'start':'23:00','end':'01:00'}", utc(2024, 1, 8, 0, 30), true }, /* Sunday → Monday */
        { "{'days':['sun'],'start':'23:00','end':'01:00'}", utc(2024, 1, 7, 0, 30), false },
        /* days only: the whole UTC day, to the millisecond */
        { "{'days':['sat','sun']}", utc(2024, 1, 6, 0, 0), true },
        { "{'days':['sat','sun']}", utc(2024, 1, 6, 0, 0) - 1, false },
        { "{'days':['sat','sun']}", utc(2024, 1, 8, 0, 0) - 1, true },
        { "{'days':['sat','sun']}", utc(2024, 1, 8, 0, 0), false },
        { "{'days':['mon']}", utc(2024, 1, 8, 0, 0), true },
        { "{'start':'00:00','end':'24:00'}", utc(2024, 1, 8, 23, 59) + 59999, true },
        { "{'days':['tue'],'start':'12:00','end':'24:00'}", utc(2024, 1, 2, 23, 59), true },
        { "{'days':['tue'],'start':'12:00','end':'24:00'}", utc(2024, 1, 3, 0, 0), false },
        /* before 1970 (negative now_ms): 1969-12-31 was a Wednesday */
        { "{'days':['wed'],'start':'23:00','end':'24:00'}", -1, true },
        { "{'days':['thu']}", 0, true },
        { "{'days':['thu'],'start':'00:00','end':'00:01'}", 59999, true },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), "{" BASE "," RA ",'conditions':{'time':%s}}", cases[i].time);
        pol_ruleset_t *rs = RULESET(text);
        pol_request_t req = request(&alice, "model", "m", "chat");
        req.now_ms = cases[i].at;
        pol_decision_t d = pol_evaluate(rs, &req, false);
        if (d.allow != cases[i].holds)
            fail_msg("case %zu: time %s at %lld: expected %s", i, cases[i].time, (long long)cases[i].at,
                     cases[i].holds ? "holds" : "fails");
        json_t *ex = pol_explain(rs, &req, false);
        const char *why = json_string_value(json_object_get(json_array_get(json_object_get(ex, "rules"), 0), "why"));
        assert_string_equal(why, cases[i].holds ? "matched" : "condition time failed");
        json_decref(ex);
        pol_ruleset_free(rs);
    }
}

static void
max_request_size(void **state)
{
    (void)state;
    pol_ruleset_t *rs = RULESET("{" BASE "," RA ",'conditions':{'max_request_size':65536}}");
    const struct {
        int64_t size;
        bool holds;
    } cases[] = { { 0, true }, { 65535, true }, { 65536, true }, { 65537, false }, { -1, false } };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pol_request_t req = request(&alice, "model", "m", "chat");
        req.request_size = cases[i].size;
        assert_int_equal(pol_evaluate(rs, &req, false).allow, cases[i].holds);
    }
    pol_ruleset_free(rs);
}

static void
label_globs(void **state)
{
    (void)state;
    const struct {
        const char *labels;
        const pol_principal_t *who;
        bool holds;
    } cases[] = {
        { "{'env':'prod*'}", &alice, true },
        { "{'env':'prod'}", &alice, false },
        { "{'env':'prod-eu','tier':'gold'}", &alice, true },
        { "{'env':'prod*','tier':'silver'}", &alice, false }, /* all listed labels must match */
        { "{'env':'*'}", &agent7, true },
        { "{'tier':'*'}", &agent7, false }, /* the label must exist */
        { "{'env':'*'}", &indexer, false }, /* no labels at all */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 "{'id':'l','effect':'allow','subjects':{'principals':['*']},'plane':'*','resources':['m'],"
                 "'actions':['chat'],'conditions':{'labels':%s}}",
                 cases[i].labels);
        pol_ruleset_t *rs = RULESET(text);
        pol_request_t req = request(cases[i].who, "model", "m", "chat");
        if (pol_evaluate(rs, &req, false).allow != cases[i].holds)
            fail_msg("labels %s for %s: expected %s", cases[i].labels, cases[i].who->id,
                     cases[i].holds ? "holds" : "fails");
        pol_ruleset_free(rs);
    }
}

/* A deny rule whose condition fails does not deny. */
static void
conditions_gate_deny_rules_too(void **state)
{
    (void)state;
    pol_ruleset_t *rs = RULESET(
        "{'id':'after-hours','effect':'deny','subjects':{'principals':['*']},'plane':'*','resources':['*'],"
        "'actions':['*'],'conditions':{'time':{'start':'18:00','end':'08:00'}}}",
        "{'id':'big','effect':'deny','subjects':{'principals':['*']},'plane':'*','resources':['*'],"
        "'actions':['*'],'conditions':{'max_request_size':1000}}",
        "{'id':'ok','effect':'allow','subjects':{'principals':['*']},'plane':'*','resources':['*'],'actions':['*']}");
    pol_request_t req = request(&alice, "model", "m", "chat");
    req.request_size = 5000;
    assert_string_equal(decided_by(pol_evaluate(rs, &req, false)), "ok");
    req.now_ms = utc(2024, 1, 3, 19, 0);
    assert_string_equal(decided_by(pol_evaluate(rs, &req, false)), "after-hours");
    req.now_ms = NOON_WED;
    req.request_size = 10;
    assert_string_equal(decided_by(pol_evaluate(rs, &req, false)), "big");
    pol_ruleset_free(rs);
}

/* ---- explain ----------------------------------------------------------------------------- */

static void
explain_lists_the_rule_chain(void **state)
{
    (void)state;
    pol_ruleset_t *rs = RULESET(
        "{'id':'r-subject','effect':'deny','subjects':{'teams':['ops']},'plane':'model','resources':['*'],"
        "'actions':['*']}",
        "{'id':'r-mcp','effect':'deny','subjects':{'principals':['*']},'plane':'mcp','resources':['*'],"
        "'actions':['*']}",
        "{'id':'r-resource','effect':'deny','subjects':{'principals':['*']},'plane':'*','resources':['gpt*'],"
        "'actions':['*']}",
        "{'id':'r-action','effect':'deny','subjects':{'principals':['*']},'plane':'model','resources':['*'],"
        "'actions':['embed']}",
        "{'id':'r-time','effect':'deny','subjects':{'principals':['*']},'plane':'model','resources':['*'],"
        "'actions':['*'],'conditions':{'time':{'days':['sun']}}}",
        "{'id':'r-size','effect':'deny','subjects':{'principals':['*']},'plane':'model','resources':['*'],"
        "'actions':['*'],'conditions':{'max_request_size':10}}",
        "{'id':'r-labels','effect':'deny','subjects':{'principals':['*']},'plane':'model','resources':['*'],"
        "'actions':['*'],'conditions':{'labels':{'env':'dev'}}}",
        "{'id':'r-allow','effect':'allow','subjects':{'roles':['admin']},'plane':'*','resources':['llama*'],"
        "'actions':['chat']}",
        "{'id':'r-allow2','effect':'allow','subjects':{'principals':['alice']},'plane':'model','resources':['*'],"
        "'actions':['*']}");
    pol_request_t req = request(&alice, "model", "llama3", "chat");
    json_t *ex = pol_explain(rs, &req, false);
    char *s = dump(ex);
    assert_string_equal(
        s, "{\"decision\":\"allow\",\"rule\":\"r-allow\",\"reason\":\"allowed by rule\",\"rules\":["
           "{\"id\":\"r-subject\",\"effect\":\"deny\",\"matched\":false,\"why\":\"subject did not match\"},"
           "{\"id\":\"r-resource\",\"effect\":\"deny\",\"matched\":false,\"why\":\"resource did not match\"},"
           "{\"id\":\"r-action\",\"effect\":\"deny\",\"matched\":false,\"why\":\"action did not match\"},"
           "{\"id\":\"r-time\",\"effect\":\"deny\",\"matched\":false,\"why\":\"condition time failed\"},"
           "{\"id\":\"r-size\",\"effect\":\"deny\",\"matched\":false,\"why\":\"condition max_request_size failed\"},"
           "{\"id\":\"r-labels\",\"effect\":\"deny\",\"matched\":false,\"why\":\"condition labels failed\"},"
           "{\"id\":\"r-allow\",\"effect\":\"allow\",\"matched\":true,\"why\":\"matched\"},"
           "{\"id\":\"r-allow2\",\"effect\":\"allow\",\"matched\":true,\"why\":\"matched\"}]}");
    free(s);
    json_decref(ex);

    /* On mcp: the "*" rules only plus r-mcp, which denies. */
    req.plane = "mcp";
    ex = pol_explain(rs, &req, true);
    s = dump(ex);
    assert_string_equal(
        s, "{\"decision\":\"deny\",\"rule\":\"r-mcp\",\"reason\":\"denied by rule\",\"rules\":["
           "{\"id\":\"r-mcp\",\"effect\":\"deny\",\"matched\":true,\"why\":\"matched\"},"
           "{\"id\":\"r-resource\",\"effect\":\"deny\",\"matched\":false,\"why\":\"resource did not match\"},"
           "{\"id\":\"r-allow\",\"effect\":\"allow\",\"matched\":true,\"why\":\"matched\"}]}");
    free(s);
    json_decref(ex);

    /* The default: rule is null. */
    req.plane = "agent";
    req.principal = &indexer;
    ex = pol_explain(rs, &req, false);
    s = dump(ex);
    assert_string_equal(s, "{\"decision\":\"deny\",\"rule\":null,\"reason\":\"no rule matched: default deny\","
                           "\"rules\":["
                           "{\"id\":\"r-resource\",\"effect\":\"deny\",\"matched\":false,\"why\":\"resource did not "
                           "match\"},"
                           "{\"id\":\"r-allow\",\"effect\":\"allow\",\"matched\":false,\"why\":\"subject did not "
                           "match\"}]}");
    free(s);
    json_decref(ex);
    pol_ruleset_free(rs);
}

/* ---- randomized: the index agrees with the rule-by-rule explain -------------------------- */

static const char *const gen_resources[] = { "llama3", "llama3*", "llama?-8b",           "gpt-4o",   "gpt-*",
                                             "*",      "fs/*",    "fs/read_*",           "[lg]*",    "*-8b",
                                             "\\*lit", "x",       "github/create_issue", "*/search", "m[!a]*" };
static const char *const gen_request_resources[] = { "llama3",
                                                     "llama3-8b",
                                                     "llama3-70b",
                                                     "gpt-4o",
                                                     "gpt-4o-mini",
                                                     "fs/read_file",
                                                     "fs/write_file",
                                                     "github/create_issue",
                                                     "*lit",
                                                     "x",
                                                     "",
                                                     "mistral",
                                                     "web/search",
                                                     "mb" };
static const char *const gen_actions[] = { "chat", "embed", "*", "tools/call", "c*" };
static const char *const gen_request_actions[] = { "chat", "embed", "tools/call", "completions" };
static const char *const gen_principals[] = { "alice", "svc-*", "*", "bob", "agent-?" };
static const char *const gen_teams[] = { "ml", "ops", "*" };
static const char *const gen_roles[] = { "admin", "read*" };
static const char *const gen_kinds[] = { "agent", "user", "s*" };
static const char *const gen_planes[] = { "*", "model", "mcp", "agent" };
static const char *const gen_request_planes[] = { "model", "mcp", "agent", "other" };
static const char *const gen_days[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };
static const char *const gen_hhmm[] = { "00:00", "06:00", "09:30", "17:00", "22:00", "23:59" };

static json_t *
gen_list(uint64_t *s, const char *const *v, size_t n, size_t max)
{
    json_t *arr = json_array();
    size_t k = 1 + rnd(s) % max;
    for (size_t i = 0; i < k; i++)
        json_array_append_new(arr, json_string(pick(s, v, n)));
    return arr;
}

#define GEN_LIST(s, arr, max) gen_list(s, arr, sizeof(arr) / sizeof(arr[0]), max)

static pol_rule_t *
gen_rule(uint64_t *s, int id)
{
    char name[32];
    snprintf(name, sizeof(name), "r%d", id);
    json_t *def = json_object();
    json_object_set_new(def, "id", json_string(name));
    json_object_set_new(def, "effect", json_string(rnd(s) % 4 == 0 ? "deny" : "allow"));
    json_t *subjects = json_object();
    unsigned which = 1 + (unsigned)(rnd(s) % 15);
    if (which & 1)
        json_object_set_new(subjects, "principals", GEN_LIST(s, gen_principals, 2));
    if (which & 2)
        json_object_set_new(subjects, "teams", GEN_LIST(s, gen_teams, 2));
    if (which & 4)
        json_object_set_new(subjects, "roles", GEN_LIST(s, gen_roles, 2));
    if (which & 8)
        json_object_set_new(subjects, "kinds", GEN_LIST(s, gen_kinds, 2));
    json_object_set_new(def, "subjects", subjects);
    json_object_set_new(def, "plane", json_string(PICK(s, gen_planes)));
    json_object_set_new(def, "resources", GEN_LIST(s, gen_resources, 3));
    json_object_set_new(def, "actions", GEN_LIST(s, gen_actions, 2));
    if (rnd(s) % 3 == 0) {
        json_t *conds = json_object();
        if (rnd(s) % 2 == 0) {
            json_t *time = json_object();
            json_object_set_new(time, "days", GEN_LIST(s, gen_days, 4));
            const char *start = PICK(s, gen_hhmm), *end = PICK(s, gen_hhmm);
            if (strcmp(start, end) != 0) {
                json_object_set_new(time, "start", json_string(start));
                json_object_set_new(time, "end", json_string(end));
            }
            json_object_set_new(conds, "time", time);
        }
        if (rnd(s) % 2 == 0)
            json_object_set_new(conds, "max_request_size", json_integer((json_int_t)(rnd(s) % 2000)));
        if (rnd(s) % 2 == 0)
            json_object_set_new(conds, "labels", json_pack("{s:s}", "env", rnd(s) % 2 ? "prod*" : "staging"));
        json_object_set_new(def, "conditions", conds);
    }
    pol_rule_t *r = NULL;
    char *err = NULL;
    if (pol_rule_parse(def, &r, &err) != 0)
        fail_msg("generated rule: %s", err);
    json_decref(def);
    return r;
}

static pol_ruleset_t *
gen_ruleset(uint64_t *s, size_t n)
{
    pol_rule_t **rules = calloc(n, sizeof(*rules));
    assert_non_null(rules);
    for (size_t i = 0; i < n; i++)
        rules[i] = gen_rule(s, (int)i);
    pol_ruleset_t *rs = pol_ruleset_new(rules, n, NULL);
    assert_non_null(rs);
    free(rules);
    return rs;
}

static const pol_principal_t *const gen_who[] = { &alice, &indexer, &agent7 };

static pol_request_t
gen_request(uint64_t *s)
{
    pol_request_t req = {
        .principal = gen_who[rnd(s) % 3],
        .plane = PICK(s, gen_request_planes),
        .resource = PICK(s, gen_request_resources),
        .action = PICK(s, gen_request_actions),
        .request_size = (int64_t)(rnd(s) % 2100) - 50,
        .now_ms = utc(2024, 1, 1, 0, 0) + (int64_t)(rnd(s) % (8 * 86400000ULL)),
    };
    return req;
}

static void
index_agrees_with_explain(void **state)
{
    (void)state;
    uint64_t seed = 42;
    size_t decided_by_rule = 0, total = 0;
    for (int round = 0; round < 150; round++) {
        pol_ruleset_t *rs = gen_ruleset(&seed, 1 + rnd(&seed) % 40);
        for (int i = 0; i < 200; i++) {
            pol_request_t req = gen_request(&seed);
            bool default_allow = rnd(&seed) % 2;
            pol_decision_t d = pol_evaluate(rs, &req, default_allow);
            json_t *ex = pol_explain(rs, &req, default_allow);
            const char *want_rule = json_string_value(json_object_get(ex, "rule"));
            const char *want_decision = json_string_value(json_object_get(ex, "decision"));
            if (strcmp(decided_by(d), want_rule != NULL ? want_rule : "-") != 0 ||
                strcmp(d.allow ? "allow" : "deny", want_decision) != 0 ||
                strcmp(d.reason, json_string_value(json_object_get(ex, "reason"))) != 0)
                fail_msg("round %d request %d (%s %s %s %s): evaluate %s by %s, explain %s by %s", round, i,
                         req.principal->id, req.plane, req.resource, req.action, d.allow ? "allow" : "deny",
                         decided_by(d), want_decision, want_rule);
            decided_by_rule += d.rule != NULL;
            total++;
            json_decref(ex);
        }
        pol_ruleset_free(rs);
    }
    /* The generator must exercise both outcomes, or the comparison proves little. */
    assert_true(decided_by_rule > total / 5);
    assert_true(decided_by_rule < total - total / 5);
}

/* ---- concurrency ------------------------------------------------------------------------- */

#define CONC_REQUESTS 500
#define CONC_THREADS  4
#define CONC_ROUNDS   200

typedef struct conc {
    const pol_ruleset_t *rs;
    pol_request_t reqs[CONC_REQUESTS];
    const pol_rule_t *want_rule[CONC_REQUESTS];
    bool want_allow[CONC_REQUESTS];
    atomic_int go;
    atomic_long mismatches;
} conc_t;

static void *
conc_worker(void *arg)
{
    conc_t *c = arg;
    while (!atomic_load(&c->go))
        ;
    long bad = 0;
    for (int round = 0; round < CONC_ROUNDS; round++) {
        for (size_t i = 0; i < CONC_REQUESTS; i++) {
            pol_decision_t d = pol_evaluate(c->rs, &c->reqs[i], false);
            bad += d.rule != c->want_rule[i] || d.allow != c->want_allow[i];
        }
    }
    atomic_fetch_add(&c->mismatches, bad);
    return NULL;
}

static void
concurrent_evaluation(void **state)
{
    (void)state;
    uint64_t seed = 7;
    conc_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->rs = gen_ruleset(&seed, 60);
    for (size_t i = 0; i < CONC_REQUESTS; i++) {
        c->reqs[i] = gen_request(&seed);
        pol_decision_t d = pol_evaluate(c->rs, &c->reqs[i], false);
        c->want_rule[i] = d.rule;
        c->want_allow[i] = d.allow;
    }
    pthread_t threads[CONC_THREADS];
    for (int t = 0; t < CONC_THREADS; t++)
        assert_int_equal(pthread_create(&threads[t], NULL, conc_worker, c), 0);
    atomic_store(&c->go, 1);
    for (int t = 0; t < CONC_THREADS; t++)
        assert_int_equal(pthread_join(threads[t], NULL), 0);
    assert_int_equal(atomic_load(&c->mismatches), 0);
    pol_ruleset_free((pol_ruleset_t *)c->rs);
    free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_errors_name_the_field),
        cmocka_unit_test(parse_accepts_valid_edges),
        cmocka_unit_test(accessors),
        cmocka_unit_test(to_json_is_canonical),
        cmocka_unit_test(to_json_round_trips),
        cmocka_unit_test(glob_matching),
        cmocka_unit_test(glob_agrees_with_fnmatch),
        cmocka_unit_test(each_subject_kind),
        cmocka_unit_test(planes_and_star),
        cmocka_unit_test(deny_overrides_allow_in_any_order),
        cmocka_unit_test(default_decides_when_nothing_matches),
        cmocka_unit_test(ruleset_lookup_and_duplicates),
        cmocka_unit_test(time_windows),
        cmocka_unit_test(max_request_size),
        cmocka_unit_test(label_globs),
        cmocka_unit_test(conditions_gate_deny_rules_too),
        cmocka_unit_test(explain_lists_the_rule_chain),
        cmocka_unit_test(index_agrees_with_explain),
        cmocka_unit_test(concurrent_evaluation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
