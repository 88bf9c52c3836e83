/*
 * test_jsonschema.c — mcp-gw/jsonschema.c: tables of schemas with values that must pass and
 * values that must fail with the exact path, keyword, message and suggestion a model would be
 * shown; schemas that must not compile, with their error; mcp_suggest; the depth limit; the
 * backtracking budget; and the cost of validating a typical tool call.
 *
 * Schemas and values are written with single quotes for readability and turned into JSON before
 * parsing, so none may contain an apostrophe (write \\u0027).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonschema.h"

static json_t *
parse(const char *single_quoted)
{
    char *text = strdup(single_quoted);
    assert_non_null(text);
    for (char *p = text; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (!v)
        fail_msg("test JSON does not parse: %s: %s", err.text, text);
    free(text);
    return v;
}

static mcp_schema_t *
compile_or_fail(const char *schema_text)
{
    json_t *schema = parse(schema_text);
    char *err = NULL;
    mcp_schema_t *s = mcp_schema_compile(schema, &err);
    json_decref(schema); /* the compiled form keeps its own reference */
    if (!s)
        fail_msg("schema does not compile: %s: %s", err, schema_text);
    return s;
}

/* ---- schemas used by several cases ---- */

/* server-everything's "add" tool */
#define ADD                                                                                                            \
    "{'type':'object','properties':{'a':{'type':'number','description':'First number'},"                               \
    "'b':{'type':'number','description':'Second number'}},'required':['a','b']}"

#define WEATHER                                                                                                        \
    "{'type':'object','properties':{'city':{'type':'string'},'units':{'type':'string','enum':['celsius',"              \
    "'fahrenheit']},'color':{'type':'string'}},'required':['city'],'additionalProperties':false}"

#define COUNT "{'type':'object','properties':{'count':{'type':'integer','minimum':1,'maximum':10}}}"

#define LIST                                                                                                           \
    "{'type':'object','properties':{'items':{'type':'array','items':{'type':'object','properties':"                    \
    "{'name':{'type':'string','minLength':1}},'required':['name']}}}}"

/* what zod-to-json-schema emits for a search tool */
#define ZOD                                                                                                            \
    "{'$schema':'http://json-schema.org/draft-07/schema#','type':'object','properties':{"                              \
    "'query':{'type':'string','minLength':1},"                                                                         \
    "'limit':{'type':'integer','exclusiveMinimum':0,'maximum':100,'default':10},"                                      \
    "'tags':{'type':'array','items':{'type':'string'}},"                                                               \
    "'sort':{'type':'string','enum':['asc','desc']},"                                                                  \
    "'since':{'type':'string','format':'date-time'},"                                                                  \
    "'until':{'$ref':'#/properties/since'},"                                                                           \
    "'filter':{'anyOf':[{'type':'object','properties':{'field':{'type':'string'},'value':{'type':'string'}},"          \
    "'required':['field','value'],'additionalProperties':false},{'type':'null'}]},"                                    \
    "'mode':{'anyOf':[{'not':{}},{'type':'string'}]}},"                                                                \
    "'required':['query'],'additionalProperties':false}"

/* zod-to-json-schema with a name: the schema sits in definitions */
#define ZOD_NAMED                                                                                                      \
    "{'$ref':'#/definitions/Point','definitions':{'Point':{'type':'object','properties':{'x':{'type':'number'},"       \
    "'y':{'type':'number'}},'required':['x','y'],'additionalProperties':false}},"                                      \
    "'$schema':'http://json-schema.org/draft-07/schema#'}"

#define TREE                                                                                                           \
    "{'$defs':{'node':{'type':'object','properties':{'value':{'type':'integer'},'children':{'type':'array',"           \
    "'items':{'$ref':'#/$defs/node'}}},'required':['value']}},'$ref':'#/$defs/node'}"

#define SHAPES                                                                                                         \
    "{'anyOf':[{'type':'object','properties':{'kind':{'const':'circle'},'radius':{'type':'number'}},"                  \
    "'required':['kind','radius']},{'type':'object','properties':{'kind':{'const':'square'},"                          \
    "'side':{'type':'number'}},'required':['kind','side']}]}"

#define ONE_OF "{'oneOf':[{'type':'integer'},{'type':'number','minimum':0}]}"

/* ---- values that match ---- */

typedef struct good_case {
    const char *schema;
    const char *instance;
} good_case_t;

static const good_case_t good_cases[] = {
    { ADD, "{'a':1,'b':2.5}" },
    { ADD, "{'a':1,'b':2,'c':3}" }, /* additional properties are allowed unless refused */
    { WEATHER, "{'city':'Paris','units':'celsius','color':'red'}" },
    { COUNT, "{'count':3.0}" }, /* 3.0 is an integer */
    { COUNT, "{'count':10}" },
    { COUNT, "{}" },
    { LIST, "{'items':[{'name':'a'},{'name':'b','extra':1}]}" },
    { ZOD, "{'query':'x','limit':5,'tags':['a','b'],'sort':'asc','filter':null,'since':'2024-05-01T14:30:00Z',"
           "'until':'2024-05-02T00:00:00.5+02:00'}" },
    { ZOD, "{'query':'x','filter':{'field':'f','value':'v'}}" },
    { ZOD_NAMED, "{'x':1,'y':-2}" },
    { TREE, "{'value':1,'children':[{'value':2,'children':[{'value':3}]},{'value':4,'children':[]}]}" },
    { "{'type':'object','properties':{'next':{'$ref':'#'},'v':{'type':'integer'}}}",
      "{'v':1,'next':{'v':2,'next':{}}}" },
    { SHAPES, "{'kind':'square','side':2}" },
    { ONE_OF, "-1" },
    { ONE_OF, "2.5" },
    /* type */
    { "true", "{'anything':[1]}" },
    { "{}", "null" },
    { "{'type':['string','null']}", "null" },
    { "{'type':'number'}", "7" },
    { "{'type':'integer'}", "-0.0" },
    /* strings: lengths count code points, patterns are not anchored */
    { "{'type':'string','maxLength':3}", "'h\\u00e9\\u00e9'" },
    { "{'type':'string','minLength':2,'maxLength':2}", "'\\ud83d\\ude00\\ud83d\\ude00'" },
    { "{'type':'string','pattern':'b'}", "'abc'" },
    { "{'pattern':'^[a-z]+$'}", "42" }, /* pattern only applies to strings */
    { "{'type':'string','pattern':'^\\\\p{L}+$'}", "'h\\u00e9llo'" },
    { "{'type':'string','pattern':'^\\\\u0041$'}", "'A'" }, /* ECMA \\u escapes */
    { "{'type':'string','pattern':'^[^]$'}", "'\\n'" },     /* ECMA [^] is any character */
    /* numbers */
    { "{'multipleOf':0.01}", "0.07" },
    { "{'multipleOf':0.0001}", "0.0075" },
    { "{'multipleOf':3}", "-9" },
    { "{'minimum':0,'exclusiveMinimum':true}", "0.001" },
    { "{'maximum':5,'exclusiveMaximum':false}", "5" },
    { "{'exclusiveMaximum':5}", "4.999" },
    /* enum and const compare as JSON */
    { "{'const':1}", "1.0" },
    { "{'enum':[{'a':[1,2]},null]}", "{'a':[1.0,2]}" },
    { "{'const':null}", "null" },
    /* arrays */
    { "{'prefixItems':[{'type':'string'},{'type':'integer'}],'items':false}", "['a',1]" },
    { "{'prefixItems':[{'type':'string'}],'items':{'type':'integer'}}", "['a',1,2]" },
    { "{'items':[{'type':'string'},{'type':'integer'}],'additionalItems':false}", "['a']" },
    { "{'items':[{'type':'string'}]}", "['a',{},3]" },
    { "{'uniqueItems':true}", "[1,'1',[1],{'a':1},{'a':2},true,null]" },
    { "{'contains':{'type':'integer'}}", "['a',2]" },
    { "{'contains':{'type':'integer'},'minContains':2,'maxContains':3}", "[1,'a',2,3]" },
    { "{'contains':{'type':'integer'},'minContains':0}", "[]" },
    { "{'minItems':1,'maxItems':2}", "[1,2]" },
    /* objects */
    { "{'patternProperties':{'^x-':{'type':'string'}},'additionalProperties':false}", "{'x-trace':'1'}" },
    { "{'propertyNames':{'pattern':'^[a-z]+$'}}", "{'abc':1,'de':2}" },
    { "{'minProperties':1,'maxProperties':2}", "{'a':1}" },
    { "{'dependentRequired':{'card':['cvc']}}", "{'name':'x'}" },
    { "{'dependentRequired':{'card':['cvc']}}", "{'card':'x','cvc':'1'}" },
    { "{'dependencies':{'card':['cvc'],'ship':{'required':['address']}}}", "{'ship':1,'address':'x'}" },
    { "{'properties':{'a':false}}", "{'b':1}" },
    /* combinators */
    { "{'allOf':[{'type':'integer'},{'minimum':2}]}", "3" },
    { "{'not':{'type':'string'}}", "3" },
    { "{'if':{'properties':{'country':{'const':'US'}}},'then':{'required':['zip']},'else':{'required':['postcode']}}",
      "{'country':'US','zip':'1'}" },
    { "{'if':{'properties':{'country':{'const':'US'}}},'then':{'required':['zip']},'else':{'required':['postcode']}}",
      "{'country':'FR','postcode':'1'}" },
    /* references */
    { "{'$defs':{'a b':{'type':'integer'}},'$ref':'#/$defs/a%20b'}", "1" },
    { "{'$defs':{'a/b':{'type':'integer'},'c~d':{'type':'string'}},'properties':{'x':{'$ref':'#/$defs/a~1b'},"
      "'y':{'$ref':'#/$defs/c~0d'}}}",
      "{'x':1,'y':'s'}" },
    { "{'$defs':{'n':{'$anchor':'num','type':'number'}},'$ref':'#num'}", "1.5" },
    { "{'definitions':{'n':{'$id':'#num','type':'number'}},'$ref':'#num'}", "1.5" }, /* draft-07 anchor */
    { "{'$id':'https://example.com/root.json','$defs':{'item':{'$id':'item.json','type':'string'}},"
      "'items':{'$ref':'https://example.com/item.json'},'properties':{'i':{'$ref':'item.json'}}}",
      "['a','b']" },
    { "{'$id':'https://example.com/root.json','type':'object','properties':{'self':{'$ref':'root.json'}}}",
      "{'self':{'self':{}}}" },
    { "{'anyOf':[{'$ref':'#/$defs/a'}],'$defs':{'a':{'type':'integer'}}}", "1" },
    { "{'components':{'x':{'type':'integer'}},'$ref':'#/components/x'}", "1" },
    { "{'prefixItems':[{'type':'string'},{'$ref':'#/prefixItems/0'}]}", "['a','b']" },
    /* unknown keywords and formats are ignored */
    { "{'type':'string','format':'color','x-whatever':{'type':'integer'},'nullable':true}", "'blue'" },
};

static void
good_values_pass(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
        const good_case_t *t = &good_cases[i];
        mcp_schema_t *s = compile_or_fail(t->schema);
        json_t *v = parse(t->instance);
        mcp_schema_error_t errs[4];
        size_t n = 99;
        if (!mcp_schema_validate(s, v, errs, 4, &n)) {
            print_error("good case %zu: %s refused %s: '%s' %s: %s\n", i, t->schema, t->instance, errs[0].path,
                        errs[0].keyword, errs[0].message);
            failures++;
        } else if (n != 0) {
            print_error("good case %zu: count %zu\n", i, n);
            failures++;
        }
        json_decref(v);
        mcp_schema_free(s);
    }
    assert_int_equal(failures, 0);
}

/* ---- values that fail ---- */

typedef struct bad_case {
    const char *schema;
    const char *instance;
    const char *path;       /* exactly */
    const char *keyword;    /* exactly */
    const char *message;    /* exactly, or a substring when !exact */
    const char *suggestion; /* exactly; NULL: none */
    bool exact;
} bad_case_t;

// clang-format off
#define X(schema, inst, path, kw, msg, sugg) { schema, inst, path, kw, msg, sugg, true }
#define S(schema, inst, path, kw, msg, sugg) { schema, inst, path, kw, msg, sugg, false }
// clang-format on

static const bad_case_t bad_cases[] = {
    /* server-everything add */
    X(ADD, "{'a':1}", "b", "required", "missing required property \"b\"", NULL),
    X(ADD, "{'a':'1','b':2}", "a", "type", "expected number, got string \"1\" (write it without quotes: 1)", NULL),
    X(ADD, "[1,2]", "", "type", "expected object, got array", NULL),
    X(ADD, "{'a':1,'B':2}", "b", "required", "missing required property \"b\" (\"B\" was given; rename it to \"b\")",
      NULL),
    /* invented, misspelt and misplaced names */
    X(WEATHER, "{'city':'Paris','colour':'red'}", "colour", "additionalProperties",
      "unknown property \"colour\" (did you mean \"color\"?)", "color"),
    X(WEATHER, "{'City':'Paris'}", "City", "additionalProperties", "unknown property \"City\" (did you mean \"city\"?)",
      "city"),
    X(WEATHER, "{'city':'Paris','zzz':1}", "zzz", "additionalProperties",
      "unknown property \"zzz\"; expected \"city\", \"units\" or \"color\"", NULL),
    X(WEATHER, "{'city':'Paris','units':'celcius'}", "units", "enum",
      "expected one of \"celsius\" or \"fahrenheit\", got \"celcius\" (did you mean \"celsius\"?)", "celsius"),
    X(WEATHER, "{'city':'Paris','units':'kelvin'}", "units", "enum",
      "expected one of \"celsius\" or \"fahrenheit\", got \"kelvin\"", NULL),
    X(WEATHER, "{'city':5}", "city", "type", "expected string, got integer 5 (put it in quotes: \"5\")", NULL),
    X(WEATHER, "{}", "city", "required", "missing required property \"city\"", NULL),
    X("{'type':'object','additionalProperties':false}", "{'a':1}", "a", "additionalProperties",
      "unknown property \"a\"; this object takes no properties", NULL),
    X("{'properties':{'user_id':{'type':'string'}},'additionalProperties':false}", "{'userId':'u1'}", "userId",
      "additionalProperties", "unknown property \"userId\" (did you mean \"user_id\"?)", "user_id"),
    /* integers */
    X(COUNT, "{'count':'5'}", "count", "type", "expected integer, got string \"5\" (write it without quotes: 5)", NULL),
    X(COUNT, "{'count':3.5}", "count", "type", "expected integer, got number 3.5", NULL),
    X(COUNT, "{'count':0}", "count", "minimum", "must be >= 1, got 0", NULL),
    X(COUNT, "{'count':11}", "count", "maximum", "must be <= 10, got 11", NULL),
    X(COUNT, "{'count':true}", "count", "type", "expected integer, got boolean true", NULL),
    X(COUNT, "{'count':null}", "count", "type", "expected integer, got null", NULL),
    /* nested arrays of objects */
    X(LIST, "{'items':[{'name':'a'},{'name':'b'},{'name':7}]}", "items[2].name", "type",
      "expected string, got integer 7 (put it in quotes: \"7\")", NULL),
    X(LIST, "{'items':[{'name':'a'},{}]}", "items[1].name", "required", "missing required property \"name\"", NULL),
    X(LIST, "{'items':[{'name':''}]}", "items[0].name", "minLength", "must be at least 1 character long, got 0", NULL),
    X(LIST, "{'items':{'name':'a'}}", "items", "type", "expected array, got object", NULL),
    /* zod's draft-07 output */
    X(ZOD, "{'query':'x','limit':0}", "limit", "exclusiveMinimum", "must be > 0, got 0", NULL),
    X(ZOD, "{'query':''}", "query", "minLength", "must be at least 1 character long, got 0", NULL),
    X(ZOD, "{'query':'x','filter':{'feild':'a','value':'v'}}", "filter.feild", "additionalProperties",
      "unknown property \"feild\" (did you mean \"field\"?)", "field"),
    X(ZOD, "{'query':'x','filter':5}", "filter", "type", "expected object or null, got integer 5", NULL),
    X(ZOD, "{'query':'x','filter':'{\\'field\\':\\'a\\',\\'value\\':\\'b\\'}'}", "filter", "type",
      "expected object or null, got string \"{\\\"field\\\":\\\"a\\\",\\\"value\\\":\\\"b\\\"}\" (send the object "
      "itself, "
      "not a JSON-encoded string)",
      NULL),
    X(ZOD, "{'query':'x','tags':'a'}", "tags", "type",
      "expected array, got string \"a\" (for a single item, wrap it in an array: [\"a\"])", NULL),
    X(ZOD, "{'query':'x','until':'yesterday'}", "until", "format",
      "\"yesterday\" is not a valid date-time; expected an RFC 3339 date-time such as \"2024-05-01T14:30:00Z\"", NULL),
    X(ZOD, "{'query':'x','mode':7}", "mode", "type", "expected string, got integer 7 (put it in quotes: \"7\")", NULL),
    X(ZOD, "{'limit':5}", "query", "required", "missing required property \"query\"", NULL),
    X(ZOD_NAMED, "{'x':1}", "y", "required", "missing required property \"y\"", NULL),
    X(ZOD_NAMED, "{'x':1,'z':2}", "z", "additionalProperties", "unknown property \"z\"; expected \"x\" or \"y\"",
      NULL), /* one letter apart is not a misspelling of a one-letter name */
    /* recursion */
    X(TREE, "{'value':1,'children':[{'value':2,'children':[{'value':'x'}]}]}", "children[0].children[0].value", "type",
      "expected integer, got string \"x\"", NULL),
    X(TREE, "{'value':1,'children':[{'value':2},{'children':[]}]}", "children[1].value", "required",
      "missing required property \"value\"", NULL),
    /* anyOf, oneOf */
    X(SHAPES, "{'kind':'circle','radius':'x'}", "", "anyOf",
      "matches none of the 2 alternatives; closest is anyOf[0] at radius: expected number, got string \"x\"", NULL),
    X(SHAPES, "{'kind':'circel','radius':1}", "", "anyOf",
      "matches none of the 2 alternatives; closest is anyOf[0] at kind: expected \"circle\", got \"circel\"", NULL),
    X(SHAPES, "'circle'", "", "type", "expected object, got string \"circle\"", NULL),
    X(ONE_OF, "5", "", "oneOf", "matches both oneOf[0] and oneOf[1]; it must match exactly one of the 2 alternatives",
      NULL),
    X(ONE_OF, "-2.5", "", "minimum", "must be >= 0, got -2.5", NULL),
    X(ONE_OF, "'5'", "", "type", "expected number, got string \"5\" (write it without quotes: 5)", NULL),
    X("{'anyOf':[{'type':'string'},{'type':'null'}]}", "5", "", "type",
      "expected string or null, got integer 5 (put it in quotes: \"5\")", NULL),
    X("{'anyOf':[{'const':'a'},{'const':'b'}]}", "'c'", "", "anyOf",
      "matches none of the 2 alternatives; closest is anyOf[0]: expected \"a\", got \"c\"", NULL),
    X("{'oneOf':[{'required':['a']},{'required':['b']}]}", "{'a':1,'b':2}", "", "oneOf",
      "matches both oneOf[0] and oneOf[1]; it must match exactly one of the 2 alternatives", NULL),
    /* patterns */
    X("{'type':'object','properties':{'code':{'type':'string','pattern':'^[A-Z]{3}$'}}}", "{'code':'abc'}", "code",
      "pattern", "\"abc\" does not match the pattern \"^[A-Z]{3}$\"", NULL),
    X("{'type':'string','pattern':'^a$'}", "'a\\n'", "", "pattern", "\"a\\n\" does not match the pattern \"^a$\"",
      NULL),
    /* lengths in code points */
    X("{'type':'string','maxLength':3}", "'h\\u00e9\\u00e9\\u00e9'", "", "maxLength",
      "must be at most 3 characters long, got 4", NULL),
    X("{'type':'string','minLength':4}", "'h\\u00e9\\u00e9'", "", "minLength",
      "must be at least 4 characters long, got 3", NULL),
    X("{'type':'string','minLength':3}", "'\\ud83d\\ude00\\ud83d\\ude00'", "", "minLength",
      "must be at least 3 characters long, got 2", NULL),
    /* numbers */
    X("{'multipleOf':0.01}", "0.075", "", "multipleOf", "must be a multiple of 0.01, got 0.075", NULL),
    X("{'multipleOf':5}", "12", "", "multipleOf", "must be a multiple of 5, got 12", NULL),
    X("{'multipleOf':0.123456789}", "1e308", "", "multipleOf", "must be a multiple of 0.123456789, got 1e+308", NULL),
    X("{'minimum':0,'exclusiveMinimum':true}", "0", "", "exclusiveMinimum", "must be > 0, got 0", NULL),
    X("{'exclusiveMaximum':5}", "5.0", "", "exclusiveMaximum", "must be < 5, got 5.0", NULL),
    /* enum, const */
    X("{'const':'circle'}", "'Circle'", "", "const", "expected \"circle\", got \"Circle\"", NULL),
    X("{'const':{'a':1}}", "{'a':2}", "", "const", "expected {\"a\":1}, got {\"a\":2}", NULL),
    X("{'enum':[1,2,3]}", "'1'", "", "enum", "expected one of 1, 2 or 3, got \"1\"", NULL),
    X("{'enum':['only']}", "'onyl'", "", "enum", "expected \"only\", got \"onyl\" (did you mean \"only\"?)", "only"),
    /* arrays */
    X("{'prefixItems':[{'type':'string'},{'type':'integer'}],'items':false}", "['a',1,2]", "[2]", "items",
      "unexpected item: at most 2 items are allowed here, got 3", NULL),
    X("{'items':[{'type':'string'}],'additionalItems':false}", "['a','b']", "[1]", "additionalItems",
      "unexpected item: at most 1 item is allowed here, got 2", NULL),
    X("{'prefixItems':[{'type':'string'}],'items':{'type':'integer'}}", "['a',1,'2']", "[2]", "type",
      "expected integer, got string \"2\" (write it without quotes: 2)", NULL),
    X("{'uniqueItems':true}", "[1,2,1.0]", "", "uniqueItems", "items 0 and 2 are equal; every item must be unique",
      NULL),
    X("{'uniqueItems':true}", "[{'a':1,'b':2},{'b':2,'a':1}]", "", "uniqueItems",
      "items 0 and 1 are equal; every item must be unique", NULL),
    X("{'minItems':2}", "[1]", "", "minItems", "must have at least 2 items, got 1", NULL),
    X("{'maxItems':1}", "[1,2]", "", "maxItems", "must have at most 1 item, got 2", NULL),
    X("{'contains':{'type':'integer'}}", "['a']", "", "contains",
      "must contain at least 1 item matching the \"contains\" schema, got none", NULL),
    X("{'contains':{'type':'integer'},'minContains':2}", "['a',1]", "", "minContains",
      "must contain at least 2 items matching the \"contains\" schema, got 1", NULL),
    X("{'contains':{'type':'integer'},'maxContains':1}", "[1,2]", "", "maxContains",
      "must contain at most 1 item matching the \"contains\" schema", NULL),
    /* objects */
    X("{'patternProperties':{'^x-':{'type':'string'}},'additionalProperties':false}", "{'x-a':1}", "x-a", "type",
      "expected string, got integer 1 (put it in quotes: \"1\")", NULL),
    X("{'properties':{'a':{}},'patternProperties':{'^x-':{}},'additionalProperties':false}", "{'y':1}", "y",
      "additionalProperties", "unknown property \"y\"; expected \"a\" or a name matching patternProperties", NULL),
    X("{'propertyNames':{'pattern':'^[a-z]+$'}}", "{'ok':1,'Bad':2}", "Bad", "propertyNames",
      "property name \"Bad\" is not allowed: \"Bad\" does not match the pattern \"^[a-z]+$\"", NULL),
    X("{'minProperties':2}", "{'a':1}", "", "minProperties", "must have at least 2 properties, got 1", NULL),
    X("{'maxProperties':1}", "{'a':1,'b':2}", "", "maxProperties", "must have at most 1 property, got 2", NULL),
    X("{'dependentRequired':{'card':['cvc']}}", "{'card':'x'}", "cvc", "dependentRequired",
      "property \"cvc\" is required when \"card\" is given", NULL),
    X("{'dependencies':{'ship':{'required':['address']}}}", "{'ship':1}", "address", "required",
      "missing required property \"address\"", NULL),
    X("{'properties':{'a':false}}", "{'a':1}", "a", "false", "property \"a\" is not allowed here", NULL),
    X("{'properties':{'odd key':{'type':'string'},'1st':{'type':'string'}}}", "{'odd key':1}", "[\"odd key\"]", "type",
      "expected string, got integer 1 (put it in quotes: \"1\")", NULL),
    X("{'properties':{'a':{'properties':{'1st':{'type':'string'}}}}}", "{'a':{'1st':true}}", "a[\"1st\"]", "type",
      "expected string, got boolean true (put it in quotes: \"true\")", NULL),
    /* combinators, boolean schemas */
    X("false", "1", "", "false", "no value is allowed here", NULL),
    X("{'not':{'type':'string'}}", "'s'", "", "not", "must not match the schema in \"not\"", NULL),
    X("{'not':{}}", "1", "", "not", "no value is allowed here", NULL),
    X("{'allOf':[{'type':'integer'},{'minimum':2}]}", "1", "", "minimum", "must be >= 2, got 1", NULL),
    X("{'if':{'properties':{'country':{'const':'US'}}},'then':{'required':['zip']},'else':{'required':['postcode']}}",
      "{'country':'US','postcode':'1'}", "zip", "required", "missing required property \"zip\"", NULL),
    X("{'$defs':{'n':{'$anchor':'num','type':'number'}},'properties':{'a':{'$ref':'#num'}}}", "{'a':'1'}", "a", "type",
      "expected number, got string \"1\" (write it without quotes: 1)", NULL),
    X("{'$id':'https://example.com/root.json','$defs':{'item':{'$id':'item.json','type':'string'}},"
      "'items':{'$ref':'https://example.com/item.json'}}",
      "['a',2]", "[1]", "type", "expected string, got integer 2 (put it in quotes: \"2\")", NULL),
};

static void
bad_values_fail(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case_t *t = &bad_cases[i];
        mcp_schema_t *s = compile_or_fail(t->schema);
        json_t *v = parse(t->instance);
        mcp_schema_error_t errs[4];
        size_t n = 0;
        if (mcp_schema_validate(s, v, errs, 4, &n) || n == 0) {
            print_error("bad case %zu: %s accepted %s\n", i, t->schema, t->instance);
            failures++;
        } else {
            const mcp_schema_error_t *e = &errs[0];
            bool msg_ok = t->exact ? strcmp(e->message, t->message) == 0 : strstr(e->message, t->message) != NULL;
            bool sugg_ok = t->suggestion ? e->suggestion && strcmp(e->suggestion, t->suggestion) == 0 : !e->suggestion;
            if (strcmp(e->path, t->path) != 0 || strcmp(e->keyword, t->keyword) != 0 || !msg_ok || !sugg_ok ||
                !e->schema) {
                print_error("bad case %zu: %s with %s\n  got  path '%s' keyword %s suggestion %s\n       %s\n"
                            "  want path '%s' keyword %s suggestion %s\n       %s\n",
                            i, t->schema, t->instance, e->path, e->keyword, e->suggestion ? e->suggestion : "(none)",
                            e->message, t->path, t->keyword, t->suggestion ? t->suggestion : "(none)", t->message);
                failures++;
            }
        }
        json_decref(v);
        mcp_schema_free(s);
    }
    assert_int_equal(failures, 0);
}

/* ---- formats ---- */

typedef struct format_case {
    const char *format;
    const char *value;
    bool valid;
} format_case_t;

static const format_case_t format_cases[] = {
    { "date-time", "2024-05-01T14:30:00Z", true },
    { "date-time", "2024-02-29t23:59:60.123+05:30", true },
    { "date-time", "2024-05-01 14:30:00Z", false },
    { "date-time", "2024-05-01T14:30:00", false }, /* RFC 3339 needs the offset */
    { "date-time", "2023-02-29T00:00:00Z", false },
    { "date-time", "2024-05-01T24:00:00Z", false },
    { "date", "2024-12-31", true },
    { "date", "2024-13-01", false },
    { "date", "2024-4-01", false },
    { "date", "2024-04-31", false },
    { "time", "14:30:00", true },
    { "time", "14:30:00.5+02:00", true },
    { "time", "14:30", false },
    { "time", "14:60:00", false },
    { "time", "14:30:00+2", false },
    { "email", "ada@example.com", true },
    { "email", "first.last+tag@sub.example.org", true },
    { "email", "\"odd person\"@example.com", true },
    { "email", "ada@[192.0.2.1]", true },
    { "email", "ada@[IPv6:2001:db8::1]", true },
    { "email", "ada.example.com", false },
    { "email", "ada@", false },
    { "email", ".ada@example.com", false },
    { "email", "a..da@example.com", false },
    { "email", "ada@exa mple.com", false },
    { "uri", "https://example.com/a/b?c=d#e", true },
    { "uri", "urn:isbn:0451450523", true },
    { "uri", "http://[2001:db8::1]:8080/", true },
    { "uri", "mailto:ada@example.com", true },
    { "uri", "https://user@example.com:443/%20x", true },
    { "uri", "/relative/path", false },
    { "uri", "https://exa mple.com", false },
    { "uri", "https://example.com:80a/", false },
    { "uri", "https://example.com/%zz", false },
    { "uri", "1http://x", false },
    { "uuid", "123e4567-e89b-12d3-a456-426614174000", true },
    { "uuid", "123E4567-E89B-12D3-A456-426614174000", true },
    { "uuid", "123e4567e89b12d3a456426614174000", false },
    { "uuid", "123e4567-e89b-12d3-a456-42661417400g", false },
    { "ipv4", "192.0.2.255", true },
    { "ipv4", "0.0.0.0", true },
    { "ipv4", "256.0.0.1", false },
    { "ipv4", "192.0.2", false },
    { "ipv4", "192.0.02.1", false },
    { "ipv4", "1.2.3.4.5", false },
    { "ipv6", "2001:db8::1", true },
    { "ipv6", "::ffff:192.0.2.1", true },
    { "ipv6", "::", true },
    { "ipv6", "2001:db8:::1", false },
    { "ipv6", "fe80::1%eth0", false },
    { "ipv6", "12345::1", false },
    { "hostname", "api.example.com", true },
    { "hostname", "localhost", true },
    { "hostname", "xn--bcher-kva.example", true },
    { "hostname", "-bad.example.com", false },
    { "hostname", "bad-.example.com", false },
    { "hostname", "a..b", false },
    { "hostname", "under_score.com", false },
    { "hostname", "a23456789012345678901234567890123456789012345678901234567890abcd.com", false }, /* 64 */
};

static void
formats_are_asserted(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof format_cases / sizeof format_cases[0]; i++) {
        const format_case_t *t = &format_cases[i];
        json_t *schema = json_pack("{s:s, s:s}", "type", "string", "format", t->format);
        mcp_schema_t *s = mcp_schema_compile(schema, NULL);
        json_decref(schema);
        assert_non_null(s);
        json_t *v = json_string(t->value);
        mcp_schema_error_t e;
        size_t n;
        bool ok = mcp_schema_validate(s, v, &e, 1, &n);
        if (ok != t->valid) {
            print_error("format %s: \"%s\" should be %s\n", t->format, t->value, t->valid ? "valid" : "invalid");
            failures++;
        } else if (!ok && (strcmp(e.keyword, "format") != 0 || !strstr(e.message, "is not a valid"))) {
            print_error("format %s: \"%s\": %s %s\n", t->format, t->value, e.keyword, e.message);
            failures++;
        }
        json_decref(v);
        mcp_schema_free(s);
    }
    assert_int_equal(failures, 0);
}

/* ---- schemas that do not compile ---- */

typedef struct compile_case {
    const char *schema;
    const char *error; /* a substring */
} compile_case_t;

static const compile_case_t compile_cases[] = {
    { "{'properties':{'q':{'type':'string','pattern':'[a-'}}}",
      "#/properties/q/pattern: invalid regular expression \"[a-\" at offset 3: missing terminating ] for character "
      "class" },
    { "{'patternProperties':{'(':{}}}", "#/patternProperties/(: invalid regular expression \"(\" at offset 1" },
    { "{'properties':{'a':{'$ref':'#/$defs/nope'}}}",
      "#/properties/a/$ref: \"#/$defs/nope\" does not resolve to any part of this schema" },
    { "{'$ref':'#nowhere'}", "#/$ref: \"#nowhere\" does not resolve" },
    { "{'$ref':'https://example.com/other.json#/a'}",
      "#/$ref: \"https://example.com/other.json#/a\" does not resolve: only references to this schema" },
    { "{'$ref':'#/$defs/a%zz'}", "has a malformed %-escape" },
    { "{'$defs':{'x':5},'$ref':'#/$defs/x'}", "#/$defs/x: a schema must be an object or a boolean, got integer" },
    { "{'properties':{'a':{'minLength':'3'}}}",
      "#/properties/a/minLength: must be a non-negative integer, got string" },
    { "{'maxItems':-1}", "#/maxItems: must be a non-negative integer, got integer" },
    { "{'minimum':'0'}", "#/minimum: must be a number, got string" },
    { "{'multipleOf':0}", "#/multipleOf: must be greater than 0" },
    { "{'type':'strng'}", "#/type: unknown type \"strng\" (did you mean \"string\"?)" },
    { "{'type':['string','int']}", "#/type/1: unknown type \"int\" (did you mean \"integer\"?)" },
    { "{'type':'whatever'}", "#/type: unknown type \"whatever\"; the types are" },
    { "{'type':5}", "#/type: must be a type name or a non-empty array of them, got integer" },
    { "{'required':'a'}", "#/required: must be an array of property names, got string" },
    { "{'required':['a',1]}", "#/required/1: must be a property name (a string), got integer" },
    { "{'properties':[]}", "#/properties: must be an object, got array" },
    { "{'properties':{'a/b':5}}", "#/properties/a~1b: a schema must be an object or a boolean, got integer" },
    { "{'anyOf':[]}", "#/anyOf: must be a non-empty array of schemas, got an empty array" },
    { "{'allOf':[{},{'oneOf':{}}]}", "#/allOf/1/oneOf: must be a non-empty array of schemas, got object" },
    { "{'enum':'a'}", "#/enum: must be an array, got string" },
    { "{'uniqueItems':1}", "#/uniqueItems: must be a boolean, got integer" },
    { "{'format':1}", "#/format: must be a string, got integer" },
    { "{'prefixItems':[{}],'items':[{}]}", "#/items: must be a schema when prefixItems is present" },
    { "{'dependentRequired':{'a':'b'}}", "#/dependentRequired/a: must be an array of property names, got string" },
    { "{'$ref':5}", "#/$ref: must be a string, got integer" },
    { "{'$defs':{'a':{'$ref':'#/$defs/b'},'b':{'allOf':[{'$ref':'#/$defs/a'}]}},'$ref':'#/$defs/a'}",
      "leads back to itself without descending into a property or item" },
    { "{'$ref':'#'}", "#/$ref: \"#\" leads back to itself" },
    { "'object'", "#: a schema must be an object or a boolean, got string" },
};

static void
bad_schemas_do_not_compile(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof compile_cases / sizeof compile_cases[0]; i++) {
        const compile_case_t *t = &compile_cases[i];
        json_t *schema = parse(t->schema);
        char *err = NULL;
        mcp_schema_t *s = mcp_schema_compile(schema, &err);
        if (s) {
            print_error("compile case %zu: %s compiled\n", i, t->schema);
            failures++;
            mcp_schema_free(s);
        } else if (!err || !strstr(err, t->error)) {
            print_error("compile case %zu: %s\n  got  %s\n  want %s\n", i, t->schema, err ? err : "(no error)",
                        t->error);
            failures++;
        }
        free(err);
        /* a NULL err is allowed */
        assert_null(mcp_schema_compile(schema, NULL));
        json_decref(schema);
    }
    assert_int_equal(failures, 0);
}

/* ---- several errors ---- */

/* The most useful first: unknown properties, then missing ones, then values in document order; an
 * unknown property whose suggestion is a missing required one stands for both. */
static void
errors_come_in_order(void **state)
{
    (void)state;
    mcp_schema_t *s =
        compile_or_fail("{'type':'object','properties':{'city':{'type':'string'},'days':{'type':'integer'},"
                        "'units':{'enum':['c','f']},'lang':{'type':'string'}},"
                        "'required':['city','days','lang'],'additionalProperties':false}");
    json_t *v = parse("{'units':'k','cty':'Paris','days':'3','extra':1}");
    mcp_schema_error_t errs[8];
    size_t n = 0;
    assert_false(mcp_schema_validate(s, v, errs, 8, &n));
    assert_int_equal(n, 5);
    assert_string_equal(errs[0].path, "cty");
    assert_string_equal(errs[0].suggestion, "city");
    assert_string_equal(errs[1].path, "extra");
    assert_string_equal(errs[1].message,
                        "unknown property \"extra\"; expected \"city\", \"days\", \"units\" or \"lang\"");
    assert_string_equal(errs[2].path, "lang"); /* "city" is not repeated: "cty" names it */
    assert_string_equal(errs[2].keyword, "required");
    assert_string_equal(errs[3].path, "units");
    assert_string_equal(errs[3].keyword, "enum");
    assert_string_equal(errs[4].path, "days");
    assert_string_equal(errs[4].keyword, "type");

    /* the schema of an error: the property's own, or the object's for required and unknown names */
    json_t *root = json_object_get(errs[0].schema, "properties");
    assert_non_null(root);
    assert_ptr_equal(errs[4].schema, json_object_get(root, "days"));

    /* max bounds the count, and the walk stops there */
    assert_false(mcp_schema_validate(s, v, errs, 2, &n));
    assert_int_equal(n, 2);
    assert_string_equal(errs[1].path, "extra");
    /* no room for errors: only the answer */
    assert_false(mcp_schema_validate(s, v, NULL, 0, &n));
    assert_int_equal(n, 0);
    assert_false(mcp_schema_validate(s, v, NULL, 0, NULL));
    json_decref(v);

    v = parse("{'city':'Paris','days':3,'lang':'en'}");
    n = 99;
    assert_true(mcp_schema_validate(s, v, errs, 8, &n));
    assert_int_equal(n, 0);
    assert_true(mcp_schema_validate(s, v, NULL, 0, NULL));
    json_decref(v);
    mcp_schema_free(s);
}

/* ---- limits ---- */

static json_t *
nested_arrays(size_t levels)
{
    json_t *v = json_array();
    for (size_t i = 1; i < levels; i++) {
        json_t *outer = json_array();
        json_array_append_new(outer, v);
        v = outer;
    }
    return v;
}

/* A recursive schema on a deep value stops at MCP_SCHEMA_MAX_DEPTH with an error, never a crash. */
static void
depth_is_limited(void **state)
{
    (void)state;
    mcp_schema_t *s = compile_or_fail("{'type':'array','items':{'$ref':'#'}}");
    mcp_schema_error_t e;
    size_t n;

    json_t *v = nested_arrays(MCP_SCHEMA_MAX_DEPTH + 1); /* the innermost is 64 levels below the top */
    assert_true(mcp_schema_validate(s, v, &e, 1, &n));
    json_decref(v);

    v = nested_arrays(MCP_SCHEMA_MAX_DEPTH + 2);
    assert_false(mcp_schema_validate(s, v, &e, 1, &n));
    assert_string_equal(e.keyword, "depth");
    assert_string_equal(e.message, "nested more than 64 levels deep");
    assert_int_equal(strlen(e.path), 3 * (MCP_SCHEMA_MAX_DEPTH + 1)); /* "[0]" 65 times */
    json_decref(v);

    v = nested_arrays(5000);
    assert_false(mcp_schema_validate(s, v, &e, 1, &n));
    assert_string_equal(e.keyword, "depth");
    json_decref(v);
    mcp_schema_free(s);

    /* inside an anyOf too, while probing */
    s = compile_or_fail("{'anyOf':[{'type':'array','items':{'$ref':'#'}},{'type':'null'}]}");
    v = nested_arrays(5000);
    assert_false(mcp_schema_validate(s, v, &e, 1, &n));
    assert_string_equal(e.keyword, "depth");
    json_decref(v);
    mcp_schema_free(s);

    /* a deep schema document is refused when compiled */
    json_t *deep = json_object();
    for (int i = 0; i < 300; i++)
        deep = json_pack("{s:o}", "not", deep);
    char *err = NULL;
    assert_null(mcp_schema_compile(deep, &err));
    assert_non_null(strstr(err, "the schema nests deeper than 128 levels"));
    free(err);
    json_decref(deep);
}

/* A schema whose alternatives both recurse makes a naive walk exponential in the depth of the
 * value; the walk has a budget and says so instead of taking the thread. */
static void
cost_is_limited(void **state)
{
    (void)state;
    mcp_schema_t *s = compile_or_fail("{'anyOf':[{'type':'array','items':{'$ref':'#'}},"
                                      "{'type':'array','items':{'$ref':'#'},'minItems':1}]}");
    json_t *v = json_string("x");
    for (int i = 0; i < 40; i++) {
        json_t *outer = json_array();
        json_array_append_new(outer, v);
        v = outer;
    }
    mcp_schema_error_t errs[4];
    size_t n;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_false(mcp_schema_validate(s, v, errs, 4, &n));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(n, 1);
    assert_string_equal(errs[0].keyword, "complexity");
    assert_string_equal(errs[0].path, "");
    assert_non_null(strstr(errs[0].message, "too complex to check against this schema"));
    assert_false(mcp_schema_validate(s, v, NULL, 0, NULL));
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    print_message("exponential schema gave up after %.1f ms\n", ms);
    assert_true(ms < 5000);
    json_decref(v);

    /* the same schema on a valid deep value is linear */
    v = json_array();
    for (int i = 0; i < 60; i++) {
        json_t *outer = json_array();
        json_array_append_new(outer, v);
        v = outer;
    }
    assert_true(mcp_schema_validate(s, v, errs, 4, &n));
    json_decref(v);
    mcp_schema_free(s);

    /* a nullable recursive object reports the innermost problem, without doubling per level */
    s = compile_or_fail("{'anyOf':[{'type':'object','properties':{'v':{'type':'integer'},'next':{'$ref':'#'}}},"
                        "{'type':'null'}]}");
    v = json_pack("{s:s}", "v", "deep");
    for (int i = 0; i < 60; i++)
        v = json_pack("{s:i, s:o}", "v", i, "next", v);
    assert_false(mcp_schema_validate(s, v, errs, 4, &n));
    assert_int_equal(n, 1);
    assert_string_equal(errs[0].keyword, "type");
    assert_string_equal(errs[0].message, "expected integer, got string \"deep\"");
    assert_int_equal(strncmp(errs[0].path, "next.next.next.", 15), 0);
    json_decref(v);
    mcp_schema_free(s);
}

typedef struct shared_schema {
    const mcp_schema_t *s;
    int failures;
} shared_schema_t;

static void *
validate_many(void *arg)
{
    shared_schema_t *sh = arg;
    json_t *good = parse("{'id':'ab-12','when':'2024-05-01T14:30:00Z'}");
    json_t *bad = parse("{'id':'AB 12','when':'2024-05-01'}");
    mcp_schema_error_t errs[4];
    size_t n;
    for (int i = 0; i < 20000; i++) {
        if (!mcp_schema_validate(sh->s, good, errs, 4, &n))
            __atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
        if (mcp_schema_validate(sh->s, bad, errs, 4, &n) || n != 2 || strcmp(errs[0].keyword, "pattern") != 0)
            __atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
    }
    json_decref(good);
    json_decref(bad);
    return NULL;
}

/* One compiled schema, validated from several threads at once (each has its own PCRE2 match
 * block, freed when the thread ends). */
static void
threads_share_a_schema(void **state)
{
    (void)state;
    mcp_schema_t *s = compile_or_fail("{'type':'object','properties':{'id':{'type':'string','pattern':'^[a-z0-9-]+$'},"
                                      "'when':{'type':'string','format':'date-time'}}}");
    shared_schema_t sh = { .s = s };
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, validate_many, &sh), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    assert_int_equal(sh.failures, 0);
    mcp_schema_free(s);
}

/* Catastrophic backtracking is cut off, and reported. */
static void
backtracking_is_limited(void **state)
{
    (void)state;
    mcp_schema_t *s = compile_or_fail("{'type':'string','pattern':'^(a+)+$'}");
    char text[64];
    memset(text, 'a', 40);
    strcpy(text + 40, "!");
    json_t *v = json_string(text);
    mcp_schema_error_t e;
    size_t n;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_false(mcp_schema_validate(s, v, &e, 1, &n));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_string_equal(e.keyword, "pattern");
    assert_non_null(strstr(e.message, "could not be checked against the pattern \"^(a+)+$\": it needs too much "
                                      "backtracking"));
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    print_message("pathological pattern gave up after %.1f ms\n", ms);
    assert_true(ms < 2000);
    json_decref(v);
    mcp_schema_free(s);
}

/* Long values and keys are cut in messages and paths, at a character boundary. */
static void
long_text_is_cut(void **state)
{
    (void)state;
    mcp_schema_t *s = compile_or_fail("{'additionalProperties':{'type':'integer'}}");
    char key[400];
    for (size_t i = 0; i + 2 < sizeof key; i += 2)
        memcpy(key + i, "\xc3\xa9", 2); /* é */
    key[sizeof key - 2] = '\0';
    json_t *v = json_object();
    json_object_set_new(v, key, json_string(key));
    mcp_schema_error_t e;
    size_t n;
    assert_false(mcp_schema_validate(s, v, &e, 1, &n));
    assert_true(strlen(e.path) < sizeof e.path);
    assert_string_equal(e.path + strlen(e.path) - 5, "\xc3\xa9..."); /* cut after a whole character */
    json_t *as_json = json_string(e.path);                           /* NULL if not valid UTF-8 */
    assert_non_null(as_json);
    json_decref(as_json);
    as_json = json_string(e.message);
    assert_non_null(as_json);
    json_decref(as_json);
    assert_non_null(strstr(e.message, "...\""));
    json_decref(v);
    mcp_schema_free(s);
}

/* uniqueItems on a long array is not quadratic, and still finds the first duplicate pair. */
static void
unique_items_long_array(void **state)
{
    (void)state;
    mcp_schema_t *s = compile_or_fail("{'uniqueItems':true}");
    json_t *v = json_array();
    for (int i = 0; i < 20000; i++)
        json_array_append_new(v, json_pack("{s:i}", "id", i));
    assert_true(mcp_schema_validate(s, v, NULL, 0, NULL));
    json_array_append_new(v, json_pack("{s:f}", "id", 17.0));
    mcp_schema_error_t e;
    size_t n;
    assert_false(mcp_schema_validate(s, v, &e, 1, &n));
    assert_string_equal(e.message, "items 17 and 20000 are equal; every item must be unique");
    json_decref(v);

    v = json_array(); /* many equal items */
    for (int i = 0; i < 20000; i++)
        json_array_append_new(v, json_string("same"));
    assert_false(mcp_schema_validate(s, v, &e, 1, &n));
    assert_string_equal(e.message, "items 0 and 1 are equal; every item must be unique");
    json_decref(v);
    mcp_schema_free(s);
}

/* ---- mcp_suggest ---- */

static void
suggest_finds_near_names(void **state)
{
    (void)state;
    const char *const props[] = { "color",        "size",  "user_id",  "maxTokens",  "length",
                                  "search_query", "retry", "filename", "temperature" };
    size_t np = sizeof props / sizeof props[0];
    assert_string_equal(mcp_suggest("colour", props, np), "color");
    assert_string_equal(mcp_suggest("Color", props, np), "color");
    assert_string_equal(mcp_suggest("userId", props, np), "user_id");
    assert_string_equal(mcp_suggest("USER-ID", props, np), "user_id");
    assert_string_equal(mcp_suggest("max_tokens", props, np), "maxTokens");
    assert_string_equal(mcp_suggest("lenght", props, np), "length");
    assert_string_equal(mcp_suggest("query", props, np), "search_query");
    assert_string_equal(mcp_suggest("retries", props, np), "retry");
    assert_string_equal(mcp_suggest("file", props, np), "filename");
    assert_string_equal(mcp_suggest("temprature", props, np), "temperature");
    assert_string_equal(mcp_suggest("sizes", props, np), "size");
    assert_null(mcp_suggest("x", props, np));
    assert_null(mcp_suggest("weight", props, np));
    assert_null(mcp_suggest("___", props, np));
    assert_null(mcp_suggest("colour", props, 0));
    assert_null(mcp_suggest(NULL, props, np));

    const char *const ab[] = { "a", "b" };
    assert_null(mcp_suggest("c", ab, 2)); /* one-letter names are never near */
    const char *const tie[] = { NULL, "bat", "hat" };
    assert_string_equal(mcp_suggest("cat", tie, 3), "bat"); /* ties go to the first */
    const char *const exact[] = { "colors", "color" };
    assert_string_equal(mcp_suggest("COLOR", exact, 2), "color"); /* the same name beats a near one */
    /* names too long to measure compare only case-insensitively */
    char longname[200], shouted[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    memset(shouted, 'A', sizeof shouted - 1);
    shouted[sizeof shouted - 1] = '\0';
    const char *const longs[] = { longname };
    assert_ptr_equal(mcp_suggest(shouted, longs, 1), longname);
    assert_null(mcp_suggest("aaaa", longs, 1));
}

/* ---- cost ---- */

/* A typical tool call: five properties of the common kinds, valid. */
static void
validation_is_fast(void **state)
{
    (void)state;
    mcp_schema_t *s =
        compile_or_fail("{'$schema':'http://json-schema.org/draft-07/schema#','type':'object','properties':{"
                        "'path':{'type':'string','minLength':1,'description':'File to read'},"
                        "'encoding':{'type':'string','enum':['utf-8','latin1','base64'],'default':'utf-8'},"
                        "'offset':{'type':'integer','minimum':0},"
                        "'limit':{'type':'integer','minimum':1,'maximum':10000},"
                        "'follow':{'type':'boolean'}},'required':['path'],'additionalProperties':false}");
    json_t *v = parse("{'path':'/srv/data/report.txt','encoding':'utf-8','offset':0,'limit':200,'follow':true}");
    mcp_schema_error_t errs[4];
    size_t n;
    const int rounds = 200000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < rounds; i++)
        assert_true(mcp_schema_validate(s, v, errs, 4, &n));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / rounds;
    print_message("valid 5-property object: %.0f ns per validation\n", ns);
    assert_true(ns < 50000); /* generous: sanitizer builds are several times slower */

    json_t *bad = parse("{'pth':'/x','encoding':'utf8','offset':-1,'limit':'200','follow':'yes'}");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < rounds / 10; i++)
        assert_false(mcp_schema_validate(s, bad, errs, 4, &n));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / (rounds / 10);
    print_message("invalid one, 4 errors described: %.0f ns per validation\n", ns);
    assert_int_equal(n, 4);
    assert_string_equal(errs[0].message, "unknown property \"pth\" (did you mean \"path\"?)");
    json_decref(bad);

    mcp_schema_t *p = compile_or_fail("{'type':'object','properties':{'id':{'type':'string','pattern':'^[a-z0-9-]+$'},"
                                      "'when':{'type':'string','format':'date-time'}}}");
    json_t *pv = parse("{'id':'order-12345','when':'2024-05-01T14:30:00Z'}");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < rounds; i++)
        assert_true(mcp_schema_validate(p, pv, errs, 4, &n));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / rounds;
    print_message("pattern and date-time: %.0f ns per validation\n", ns);
    json_decref(pv);
    mcp_schema_free(p);
    json_decref(v);
    mcp_schema_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_values_pass),        cmocka_unit_test(bad_values_fail),
        cmocka_unit_test(formats_are_asserted),    cmocka_unit_test(bad_schemas_do_not_compile),
        cmocka_unit_test(errors_come_in_order),    cmocka_unit_test(depth_is_limited),
        cmocka_unit_test(cost_is_limited),         cmocka_unit_test(backtracking_is_limited),
        cmocka_unit_test(threads_share_a_schema),  cmocka_unit_test(long_text_is_cut),
        cmocka_unit_test(unique_items_long_array), cmocka_unit_test(suggest_finds_near_names),
        cmocka_unit_test(validation_is_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
