/*
 * test_responses.c — model-gw/responses.c: validation of POST /v1/responses bodies (a table of
 * valid bodies and a table of invalid ones with the exact error.param), items → chat messages,
 * the Response object, and the stream: realistic chunk sequences are fed in, the SSE text that
 * comes out is parsed back and replayed the way the openai SDK's ResponseStream accumulates it
 * (every event must name an item and part that exist, deltas must add up to the .done values),
 * and the final response is compared with the translation of the equivalent whole completion.
 *
 * JSON in this file is written with single quotes for readability and turned into JSON before
 * parsing, so no JSON text here may contain an apostrophe.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "responses.h"

static const tp_model_config_t limited_model = { .name = "small", .max_tokens = 4096 };
static const tp_model_config_t strict_model = { .name = "strict", .deny_unknown_fields = true };

enum model { ANY, LIMITED, STRICT };

static const tp_model_config_t *
model_of(enum model m)
{
    return m == LIMITED ? &limited_model : m == STRICT ? &strict_model : NULL;
}

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

/* Fails, showing both, unless a and b are equal JSON. */
static void
assert_json_equal(json_t *got, json_t *want, const char *what)
{
    if (json_equal(got, want))
        return;
    char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
    char *w = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
    print_error("%s:\n got: %s\nwant: %s\n", what, g ? g : "(null)", w ? w : "(null)");
    free(g);
    free(w);
    fail();
}

static void
assert_json_text(json_t *got, const char *want_single_quoted, const char *what)
{
    json_t *want = parse(want_single_quoted);
    assert_json_equal(got, want, what);
    json_decref(want);
}

/* ---- validation: valid bodies ---- */

#define FN_TOOL                                                                                                        \
    "{'type':'function','name':'get_weather','description':'Weather in a city','parameters':{'type':'object',"         \
    "'properties':{'city':{'type':'string'}},'required':['city']},'strict':true}"

typedef struct valid_case {
    const char *name;
    enum model model;
    const char *body;
} valid_case_t;

static const valid_case_t valid_cases[] = {
    { "string input", ANY, "{'model':'m','input':'hi'}" },
    { "easy message without type", ANY, "{'model':'m','input':[{'role':'user','content':'hi'}]}" },
    { "all roles and part types", ANY,
      "{'model':'m','input':[{'type':'message','role':'system','content':'be brief'},"
      "{'role':'developer','content':[{'type':'input_text','text':'really'}]},"
      "{'role':'user','content':[{'type':'input_text','text':'look'},"
      "{'type':'input_image','image_url':'https://x/y.png','detail':'low'},"
      "{'type':'input_file','file_data':'data:application/pdf;base64,AAAA','filename':'a.pdf'}]},"
      "{'id':'msg_1','type':'message','role':'assistant','status':'completed',"
      "'content':[{'type':'output_text','text':'ok','annotations':[]},{'type':'refusal','refusal':'no'}]}]}" },
    { "function call round trip", ANY,
      "{'model':'m','input':[{'role':'user','content':'weather?'},"
      "{'type':'function_call','call_id':'c1','name':'get_weather','arguments':'{}'},"
      "{'type':'function_call_output','call_id':'c1','output':'sunny'},"
      "{'type':'function_call_output','call_id':'c1','output':[{'type':'input_text','text':'a'}]},"
      "{'type':'reasoning','summary':[]}]}" },
    { "every parameter", ANY,
      "{'model':'m','input':'hi','instructions':'be nice','tools':[" FN_TOOL "],"
      "'tool_choice':{'type':'function','name':'get_weather'},'max_output_tokens':100,'temperature':2,"
      "'top_p':0,'stream':true,'store':false,'parallel_tool_calls':false,"
      "'text':{'format':{'type':'json_schema','name':'out','schema':{'type':'object'},'strict':true},"
      "'verbosity':'low'},'metadata':{'k':'v'},'previous_response_id':'resp_1','background':false,"
      "'truncation':'auto','include':['message.output_text.logprobs'],'reasoning':{'effort':'low'},"
      "'user':'u','safety_identifier':'s','prompt_cache_key':'p','service_tier':'auto','top_logprobs':2,"
      "'max_tool_calls':3,'stream_options':{'include_obfuscation':false}}" },
    { "tool choice modes", ANY, "{'model':'m','input':'hi','tools':[" FN_TOOL "],'tool_choice':'required'}" },
    { "tool choice none without tools", ANY, "{'model':'m','input':'hi','tool_choice':'none'}" },
    { "json_object and text formats", ANY, "{'model':'m','input':'hi','text':{'format':{'type':'json_object'}}}" },
    { "nulls count as absent", ANY,
      "{'model':'m','input':'hi','instructions':null,'tools':null,'conversation':null,'prompt':null,"
      "'temperature':null}" },
    { "max_output_tokens at the cap", LIMITED, "{'model':'m','input':'hi','max_output_tokens':4096}" },
    { "strict model, known fields", STRICT, "{'model':'m','input':'hi','store':true}" },
    { "unknown field passes", ANY, "{'model':'m','input':'hi','x_vendor':1}" },
};

static void
valid_bodies_pass(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof valid_cases / sizeof valid_cases[0]; i++) {
        const valid_case_t *t = &valid_cases[i];
        json_t *body = parse(t->body);
        mg_responses_req_t req;
        mg_invalid_t out;
        if (!mg_responses_parse(body, model_of(t->model), "req1", &req, &out))
            fail_msg("%s: refused: %s: %s", t->name, out.param, out.message);
        assert_non_null(req.input_items);
        mg_responses_req_clear(&req);
        json_decref(body);
    }
}

/* ---- validation: invalid bodies ---- */

typedef struct invalid_case {
    const char *name;
    enum model model;
    const char *body;
    const char *param;
    const char *says; /* a piece of the message */
} invalid_case_t;

static const invalid_case_t invalid_cases[] = {
    { "not an object", ANY, "[1]", "", "must be a JSON object" },
    { "model missing", ANY, "{'input':'hi'}", "model", "is required" },
    { "model not a string", ANY, "{'model':3,'input':'hi'}", "model", "non-empty string" },
    { "input missing", ANY, "{'model':'m'}", "input", "is required" },
    { "input a number", ANY, "{'model':'m','input':5}", "input", "string or an array of input items" },
    { "input empty", ANY, "{'model':'m','input':[]}", "input", "empty array" },
    { "item not an object", ANY, "{'model':'m','input':['hi']}", "input[0]", "input item object" },
    { "item without type", ANY, "{'model':'m','input':[{'content':'hi'}]}", "input[0].type", "is required" },
    { "unknown item type", ANY, "{'model':'m','input':[{'type':'chat','content':'hi'}]}", "input[0].type",
      "must be one of message, function_call" },
    { "built-in tool item", ANY, "{'model':'m','input':[{'type':'web_search_call','id':'w'}]}", "input[0].type",
      "runs no tools" },
    { "item_reference", ANY, "{'model':'m','input':[{'type':'item_reference','id':'msg_1'}]}", "input[0]",
      "does not support" },
    { "bare id is a reference", ANY, "{'model':'m','input':[{'id':'msg_1'}]}", "input[0]", "item_reference" },
    { "role missing", ANY, "{'model':'m','input':[{'type':'message','content':'hi'}]}", "input[0].role",
      "is required" },
    { "bad role", ANY, "{'model':'m','input':[{'role':'tool','content':'hi'}]}", "input[0].role",
      "user, assistant, system, developer" },
    { "content missing", ANY, "{'model':'m','input':[{'role':'user'}]}", "input[0].content", "is required" },
    { "content a number", ANY, "{'model':'m','input':[{'role':'user','content':1}]}", "input[0].content",
      "string or an array" },
    { "content empty", ANY, "{'model':'m','input':[{'role':'user','content':[]}]}", "input[0].content", "empty array" },
    { "part text missing", ANY, "{'model':'m','input':[{'role':'user','content':[{'type':'input_text'}]}]}",
      "input[0].content[0].text", "is required" },
    { "refusal from the user", ANY,
      "{'model':'m','input':[{'role':'user','content':[{'type':'refusal','refusal':'x'}]}]}",
      "input[0].content[0].type", "in a user message" },
    { "image from the assistant", ANY,
      "{'model':'m','input':[{'role':'assistant','content':[{'type':'input_image','image_url':'u'}]}]}",
      "input[0].content[0].type", "output_text, refusal" },
    { "image by file_id", ANY,
      "{'model':'m','input':[{'role':'user','content':[{'type':'input_image','file_id':'f'}]}]}",
      "input[0].content[0].image_url", "not by file_id" },
    { "image detail", ANY,
      "{'model':'m','input':[{'role':'user','content':[{'type':'input_image','image_url':'u','detail':'max'}]}]}",
      "input[0].content[0].detail", "auto, low, high, original" },
    { "file by url", ANY,
      "{'model':'m','input':[{'role':'user','content':[{'type':'input_file','file_url':'https://x'}]}]}",
      "input[0].content[0].file_url", "not supported" },
    { "item status", ANY, "{'model':'m','input':[{'role':'user','content':'hi','status':'done'}]}", "input[0].status",
      "in_progress, completed, incomplete" },
    { "call without call_id", ANY,
      "{'model':'m','input':[{'role':'user','content':'hi'},{'role':'user','content':'again'},"
      "{'type':'function_call','name':'f','arguments':'{}'}]}",
      "input[2].call_id", "is required" },
    { "call name missing", ANY, "{'model':'m','input':[{'type':'function_call','call_id':'c','arguments':'{}'}]}",
      "input[0].name", "is required" },
    { "call arguments an object", ANY,
      "{'model':'m','input':[{'type':'function_call','call_id':'c','name':'f','arguments':{}}]}", "input[0].arguments",
      "JSON text" },
    { "output without call_id", ANY, "{'model':'m','input':[{'type':'function_call_output','output':'x'}]}",
      "input[0].call_id", "is required" },
    { "output missing", ANY, "{'model':'m','input':[{'type':'function_call_output','call_id':'c'}]}", "input[0].output",
      "is required" },
    { "output an image", ANY,
      "{'model':'m','input':[{'type':'function_call_output','call_id':'c','output':[{'type':'input_image',"
      "'image_url':'u'}]}]}",
      "input[0].output[0].type", "only text" },
    { "instructions a number", ANY, "{'model':'m','input':'hi','instructions':1}", "instructions", "a string" },
    { "tools not an array", ANY, "{'model':'m','input':'hi','tools':{}}", "tools", "array of tools" },
    { "web_search tool", ANY, "{'model':'m','input':'hi','tools':[{'type':'web_search'}]}", "tools[0].type",
      "runs no tools" },
    { "file_search tool", ANY, "{'model':'m','input':'hi','tools':[" FN_TOOL ",{'type':'file_search'}]}",
      "tools[1].type", "only function tools" },
    { "mcp tool", ANY, "{'model':'m','input':'hi','tools':[{'type':'mcp','server_label':'x'}]}", "tools[0].type",
      "'mcp' is not supported" },
    { "custom tool", ANY, "{'model':'m','input':'hi','tools':[{'type':'custom','name':'x'}]}", "tools[0].type",
      "'custom' is not supported" },
    { "chat-style tool", ANY, "{'model':'m','input':'hi','tools':[{'type':'function','function':{'name':'f'}}]}",
      "tools[0].name", "is required" },
    { "bad tool name", ANY, "{'model':'m','input':'hi','tools':[{'type':'function','name':'a b'}]}", "tools[0].name",
      "letters, digits" },
    { "parameters not an object schema", ANY,
      "{'model':'m','input':'hi','tools':[{'type':'function','name':'f','parameters':{'type':'array'}}]}",
      "tools[0].parameters.type", "must be 'object'" },
    { "duplicate tool", ANY, "{'model':'m','input':'hi','tools':[" FN_TOOL "," FN_TOOL "]}", "tools[1].name",
      "already defined" },
    { "tool_choice mode", ANY, "{'model':'m','input':'hi','tool_choice':'any'}", "tool_choice",
      "none, auto, required" },
    { "tool_choice required without tools", ANY, "{'model':'m','input':'hi','tool_choice':'required'}", "tool_choice",
      "defines no tools" },
    { "tool_choice unknown function", ANY,
      "{'model':'m','input':'hi','tools':[" FN_TOOL "],'tool_choice':{'type':'function','name':'nope'}}", "tool_choice",
      "defined: get_weather" },
    { "tool_choice built-in", ANY, "{'model':'m','input':'hi','tool_choice':{'type':'web_search_preview'}}",
      "tool_choice.type", "runs no tools" },
    { "tool_choice function without name", ANY, "{'model':'m','input':'hi','tool_choice':{'type':'function'}}",
      "tool_choice.name", "is required" },
    { "max_output_tokens zero", ANY, "{'model':'m','input':'hi','max_output_tokens':0}", "max_output_tokens",
      "at least 1" },
    { "max_output_tokens real", ANY, "{'model':'m','input':'hi','max_output_tokens':1.5}", "max_output_tokens",
      "an integer" },
    { "max_output_tokens over the cap", LIMITED, "{'model':'m','input':'hi','max_output_tokens':5000}",
      "max_output_tokens", "exceeds this model's limit of 4096" },
    { "temperature", ANY, "{'model':'m','input':'hi','temperature':2.5}", "temperature", "between 0 and 2" },
    { "top_p", ANY, "{'model':'m','input':'hi','top_p':-0.1}", "top_p", "between 0 and 1" },
    { "stream a string", ANY, "{'model':'m','input':'hi','stream':'yes'}", "stream", "true or false" },
    { "store a number", ANY, "{'model':'m','input':'hi','store':1}", "store", "true or false" },
    { "parallel_tool_calls", ANY, "{'model':'m','input':'hi','parallel_tool_calls':'no'}", "parallel_tool_calls",
      "true or false" },
    { "text format type", ANY, "{'model':'m','input':'hi','text':{'format':{'type':'yaml'}}}", "text.format.type",
      "text, json_object, json_schema" },
    { "json_schema without name", ANY,
      "{'model':'m','input':'hi','text':{'format':{'type':'json_schema','schema':{}}}}", "text.format.name",
      "is required" },
    { "json_schema without schema", ANY,
      "{'model':'m','input':'hi','text':{'format':{'type':'json_schema','name':'x'}}}", "text.format.schema",
      "is required" },
    { "json_schema strict", ANY,
      "{'model':'m','input':'hi','text':{'format':{'type':'json_schema','name':'x','schema':{},'strict':1}}}",
      "text.format.strict", "true or false" },
    { "metadata value", ANY, "{'model':'m','input':'hi','metadata':{'a':1}}", "metadata.a", "must be a string" },
    { "metadata size", ANY,
      "{'model':'m','input':'hi','metadata':{'a':'','b':'','c':'','d':'','e':'','f':'','g':'','h':'','i':'',"
      "'j':'','k':'','l':'','m':'','n':'','o':'','p':'','q':''}}",
      "metadata", "at most 16" },
    { "previous_response_id", ANY, "{'model':'m','input':'hi','previous_response_id':7}", "previous_response_id",
      "non-empty string" },
    { "background", ANY, "{'model':'m','input':'hi','background':true}", "background", "not supported" },
    { "conversation", ANY, "{'model':'m','input':'hi','conversation':'conv_1'}", "conversation",
      "continue a conversation with previous_response_id" },
    { "prompt", ANY, "{'model':'m','input':'hi','prompt':{'id':'p'}}", "prompt", "not supported" },
    { "truncation", ANY, "{'model':'m','input':'hi','truncation':'middle'}", "truncation", "auto, disabled" },
    { "include", ANY, "{'model':'m','input':'hi','include':[1]}", "include[0]", "must be a string" },
    { "reasoning", ANY, "{'model':'m','input':'hi','reasoning':'high'}", "reasoning", "an object" },
    { "stream_options without stream", ANY, "{'model':'m','input':'hi','stream_options':{}}", "stream_options",
      "only allowed when stream is true" },
    { "unknown field on a strict model", STRICT, "{'model':'m','input':'hi','messages':[]}", "messages",
      "not part of the OpenAI Responses API" },
    { "first problem in document order", ANY, "{'model':'m','input':'hi','temperature':9,'top_p':9}", "temperature",
      "between 0 and 2" },
};

static void
invalid_bodies_fail_with_path(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof invalid_cases / sizeof invalid_cases[0]; i++) {
        const invalid_case_t *t = &invalid_cases[i];
        json_t *body = parse(t->body);
        mg_responses_req_t req;
        mg_invalid_t out;
        if (mg_responses_parse(body, model_of(t->model), "req1", &req, &out))
            fail_msg("%s: accepted", t->name);
        if (strcmp(out.param, t->param) != 0 || !strstr(out.message, t->says))
            fail_msg("%s: got param '%s' message '%s'; want param '%s' and '%s'", t->name, out.param, out.message,
                     t->param, t->says);
        assert_null(req.input_items);
        json_decref(body);
    }
}

/* ---- normalised input items ---- */

static void
input_items_are_normalised(void **state)
{
    (void)state;
    json_t *body = parse("{'model':'m','input':'hello','stream':true,'store':false,'previous_response_id':'resp_9'}");
    mg_responses_req_t req;
    mg_invalid_t out;
    assert_true(mg_responses_parse(body, NULL, "req7", &req, &out));
    assert_json_text(req.input_items,
                     "[{'id':'msg_req7_in0','type':'message','role':'user',"
                     "'content':[{'type':'input_text','text':'hello'}]}]",
                     "string input");
    assert_true(req.stream);
    assert_false(req.store);
    assert_string_equal(req.previous_response_id, "resp_9");
    mg_responses_req_clear(&req);
    json_decref(body);

    body = parse("{'model':'m','input':[{'role':'assistant','content':'hi'},"
                 "{'id':'mine','type':'function_call','call_id':'c','name':'f','arguments':'{}'},"
                 "{'type':'function_call_output','call_id':'c','output':'x'},{'type':'reasoning','summary':[]}]}");
    assert_true(mg_responses_parse(body, NULL, "r", &req, &out));
    assert_json_text(req.input_items,
                     "[{'id':'msg_r_in0','type':'message','role':'assistant',"
                     "'content':[{'type':'output_text','text':'hi','annotations':[]}]},"
                     "{'id':'mine','type':'function_call','call_id':'c','name':'f','arguments':'{}'},"
                     "{'id':'fco_r_in2','type':'function_call_output','call_id':'c','output':'x'},"
                     "{'id':'rs_r_in3','type':'reasoning','summary':[]}]",
                     "array input");
    assert_true(req.store);
    assert_false(req.stream);
    assert_null(req.previous_response_id);
    mg_responses_req_clear(&req);
    json_decref(body);
}

/* ---- items → chat ---- */

typedef struct chat_case {
    const char *name;
    const char *body;
    const char *history; /* NULL for none */
    const char *chat;    /* the expected chat body, or NULL when it must fail */
    const char *says;    /* when it fails: a piece of the message (param is "input") */
} chat_case_t;

static const chat_case_t chat_cases[] = {
    { "string input and instructions", "{'model':'m','input':'hi','instructions':'be brief'}", NULL,
      "{'model':'m','messages':[{'role':'system','content':'be brief'},{'role':'user','content':'hi'}]}", NULL },
    { "roles and parts",
      "{'model':'m','input':[{'role':'developer','content':'d'},"
      "{'role':'user','content':[{'type':'input_text','text':'a'},{'type':'input_text','text':'b'}]},"
      "{'role':'user','content':[{'type':'input_text','text':'see'},"
      "{'type':'input_image','image_url':'data:image/png;base64,AA','detail':'high'},"
      "{'type':'input_image','image_url':'u2','detail':'original'},"
      "{'type':'input_file','file_id':'file_1'}]},"
      "{'role':'assistant','content':[{'type':'refusal','refusal':'no'}]}]}",
      NULL,
      "{'model':'m','messages':[{'role':'system','content':'d'},{'role':'user','content':'a\\nb'},"
      "{'role':'user','content':[{'type':'text','text':'see'},"
      "{'type':'image_url','image_url':{'url':'data:image/png;base64,AA','detail':'high'}},"
      "{'type':'image_url','image_url':{'url':'u2'}},{'type':'file','file':{'file_id':'file_1'}}]},"
      "{'role':'assistant','content':[{'type':'refusal','refusal':'no'}]}]}",
      NULL },
    { "consecutive calls merge into the assistant text before them",
      "{'model':'m','input':[{'role':'user','content':'weather in A and B?'},"
      "{'role':'assistant','content':'Checking.'},{'type':'reasoning','summary':[]},"
      "{'type':'function_call','call_id':'c1','name':'get_weather','arguments':'{\\'city\\': \\'A\\'}'},"
      "{'type':'function_call','call_id':'c2','name':'get_weather','arguments':'{\\'city\\':\\'B\\'}'},"
      "{'type':'function_call_output','call_id':'c1','output':'sunny'},"
      "{'type':'function_call_output','call_id':'c2','output':[{'type':'input_text','text':'rain'},"
      "{'type':'input_text','text':'wind'}]}]}",
      NULL,
      "{'model':'m','messages':[{'role':'user','content':'weather in A and B?'},"
      "{'role':'assistant','content':'Checking.','tool_calls':["
      "{'id':'c1','type':'function','function':{'name':'get_weather','arguments':'{\\'city\\': \\'A\\'}'}},"
      "{'id':'c2','type':'function','function':{'name':'get_weather','arguments':'{\\'city\\':\\'B\\'}'}}]},"
      "{'role':'tool','tool_call_id':'c1','content':'sunny'},"
      "{'role':'tool','tool_call_id':'c2','content':'rain\\nwind'}]}",
      NULL },
    { "a call after tool output starts a new assistant message",
      "{'model':'m','input':[{'role':'user','content':'go'},"
      "{'type':'function_call','call_id':'c1','name':'f','arguments':'{}'},"
      "{'type':'function_call_output','call_id':'c1','output':'1'},"
      "{'type':'function_call','call_id':'c2','name':'f','arguments':'{}'},"
      "{'type':'function_call_output','call_id':'c2','output':'2'}]}",
      NULL,
      "{'model':'m','messages':[{'role':'user','content':'go'},"
      "{'role':'assistant','content':null,'tool_calls':[{'id':'c1','type':'function','function':{'name':'f',"
      "'arguments':'{}'}}]},{'role':'tool','tool_call_id':'c1','content':'1'},"
      "{'role':'assistant','content':null,'tool_calls':[{'id':'c2','type':'function','function':{'name':'f',"
      "'arguments':'{}'}}]},{'role':'tool','tool_call_id':'c2','content':'2'}]}",
      NULL },
    { "history then input",
      "{'model':'m','instructions':'new rules','input':[{'type':'function_call_output','call_id':'call_1',"
      "'output':'22C'}]}",
      "[{'id':'msg_a_in0','type':'message','role':'user','content':[{'type':'input_text','text':'weather?'}]},"
      "{'id':'msg_a_0','type':'message','status':'completed','role':'assistant','content':[{'type':'output_text',"
      "'annotations':[],'logprobs':[],'text':'Let me check.'}]},"
      "{'id':'fc_a_1','type':'function_call','status':'completed','arguments':'{}','call_id':'call_1',"
      "'name':'get_weather'}]",
      "{'model':'m','messages':[{'role':'system','content':'new rules'},{'role':'user','content':'weather?'},"
      "{'role':'assistant','content':'Let me check.','tool_calls':[{'id':'call_1','type':'function',"
      "'function':{'name':'get_weather','arguments':'{}'}}]},"
      "{'role':'tool','tool_call_id':'call_1','content':'22C'}]}",
      NULL },
    { "parameters",
      "{'model':'m','input':'hi','tools':[" FN_TOOL ",{'type':'function','name':'t2'}],"
      "'tool_choice':{'type':'function','name':'t2'},'parallel_tool_calls':false,'temperature':0.5,"
      "'top_p':0.9,'max_output_tokens':50,'user':'u1','stream':true,'store':false,'metadata':{'a':'b'},"
      "'text':{'format':{'type':'json_schema','name':'out','schema':{'type':'object'},'strict':true}},"
      "'truncation':'auto','reasoning':{'effort':'high'},'include':[]}",
      NULL,
      "{'model':'m','messages':[{'role':'user','content':'hi'}],'tools':[{'type':'function','function':{"
      "'name':'get_weather','description':'Weather in a city','parameters':{'type':'object','properties':{"
      "'city':{'type':'string'}},'required':['city']},'strict':true}},{'type':'function','function':{'name':'t2'}}],"
      "'tool_choice':{'type':'function','function':{'name':'t2'}},'parallel_tool_calls':false,'temperature':0.5,"
      "'top_p':0.9,'max_tokens':50,'user':'u1','response_format':{'type':'json_schema','json_schema':{"
      "'name':'out','schema':{'type':'object'},'strict':true}},'stream':true,'stream_options':{'include_usage':true}}",
      NULL },
    { "tool_choice without tools is left out",
      "{'model':'m','input':'hi','tool_choice':'none',"
      "'parallel_tool_calls':true,'text':{'format':{'type':'json_object'}}}",
      NULL, "{'model':'m','messages':[{'role':'user','content':'hi'}],'response_format':{'type':'json_object'}}",
      NULL },
    { "output without a call",
      "{'model':'m','input':[{'role':'user','content':'x'},{'type':'function_call_output','call_id':'c9',"
      "'output':'y'}]}",
      NULL, NULL, "No tool call found for function call output with call_id c9." },
    { "output before its call",
      "{'model':'m','input':[{'type':'function_call_output','call_id':'c1','output':'y'},"
      "{'type':'function_call','call_id':'c1','name':'f','arguments':'{}'}]}",
      NULL, NULL, "No tool call found for function call output with call_id c1." },
    { "call without output", "{'model':'m','input':[{'role':'user','content':'x'}]}",
      "[{'type':'function_call','call_id':'call_7','name':'f','arguments':'{}'}]", NULL,
      "No tool output found for function call call_7" },
    { "nothing for the model", "{'model':'m','input':[{'type':'reasoning','summary':[]}]}", NULL, NULL, "no message" },
};

static void
chat_bodies(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof chat_cases / sizeof chat_cases[0]; i++) {
        const chat_case_t *t = &chat_cases[i];
        json_t *body = parse(t->body);
        json_t *history = t->history ? parse(t->history) : NULL;
        mg_responses_req_t req;
        mg_invalid_t out;
        if (!mg_responses_parse(body, NULL, "q", &req, &out))
            fail_msg("%s: refused: %s: %s", t->name, out.param, out.message);
        json_t *chat = NULL;
        bool ok = mg_responses_chat_body(body, &req, history, &chat, &out);
        if (t->chat) {
            if (!ok)
                fail_msg("%s: failed: %s: %s", t->name, out.param, out.message);
            assert_json_text(chat, t->chat, t->name);
        } else {
            if (ok)
                fail_msg("%s: succeeded", t->name);
            assert_null(chat);
            assert_string_equal(out.param, "input");
            if (!strstr(out.message, t->says))
                fail_msg("%s: message '%s' lacks '%s'", t->name, out.message, t->says);
        }
        json_decref(chat);
        json_decref(history);
        mg_responses_req_clear(&req);
        json_decref(body);
    }
}

/* ---- the Response object ---- */

static void
object_defaults(void **state)
{
    (void)state;
    json_t *request = parse("{'model':'m','input':'hi'}");
    mg_responses_ctx_t ctx = { .id = "resp_x1", .public_model = "gpt-x", .created_at = 1700000000, .request = request };
    json_t *r = mg_responses_object(&ctx, "in_progress", NULL, NULL, NULL, NULL);
    assert_json_text(r,
                     "{'id':'resp_x1','object':'response','created_at':1700000000,'status':'in_progress',"
                     "'error':null,'incomplete_details':null,'instructions':null,'max_output_tokens':null,"
                     "'model':'gpt-x','output':[],'parallel_tool_calls':true,'previous_response_id':null,"
                     "'reasoning':{'effort':null,'summary':null},'store':true,'temperature':1.0,"
                     "'text':{'format':{'type':'text'}},'tool_choice':'auto','tools':[],'top_p':1.0,"
                     "'truncation':'disabled','usage':null,'user':null,'metadata':{}}",
                     "defaults");
    /* the official order of the members */
    static const char *const order[] = { "id",
                                         "object",
                                         "created_at",
                                         "status",
                                         "error",
                                         "incomplete_details",
                                         "instructions",
                                         "max_output_tokens",
                                         "model",
                                         "output",
                                         "parallel_tool_calls",
                                         "previous_response_id",
                                         "reasoning",
                                         "store",
                                         "temperature",
                                         "text",
                                         "tool_choice",
                                         "tools",
                                         "top_p",
                                         "truncation",
                                         "usage",
                                         "user",
                                         "metadata" };
    size_t k = 0;
    const char *key;
    json_t *v;
    json_object_foreach(r, key, v)
    {
        assert_true(k < sizeof order / sizeof order[0]);
        assert_string_equal(key, order[k++]);
    }
    assert_int_equal(k, sizeof order / sizeof order[0]);
    json_decref(r);
    json_decref(request);
}

static void
object_echoes_the_request(void **state)
{
    (void)state;
    json_t *request = parse("{'model':'m','input':'hi','instructions':'be brief','max_output_tokens':99,"
                            "'parallel_tool_calls':false,'previous_response_id':'resp_0','store':false,"
                            "'temperature':0.2,'top_p':0.5,'text':{'verbosity':'low'},'tool_choice':'required',"
                            "'tools':[{'type':'function','name':'f','parameters':{'type':'object'}}],"
                            "'truncation':'auto','user':'u','metadata':{'k':'v'}}");
    json_t *error = parse("{'code':'server_error','message':'boom'}");
    json_t *details = parse("{'reason':'max_output_tokens'}");
    json_t *output = parse("[{'type':'message'}]");
    json_t *usage = parse("{'input_tokens':1}");
    mg_responses_ctx_t ctx = { .id = "resp_x2", .public_model = "gpt-x", .created_at = 5, .request = request };
    json_t *r = mg_responses_object(&ctx, "failed", output, usage, error, details);
    assert_json_text(r,
                     "{'id':'resp_x2','object':'response','created_at':5,'status':'failed',"
                     "'error':{'code':'server_error','message':'boom'},'incomplete_details':{'reason':"
                     "'max_output_tokens'},'instructions':'be brief','max_output_tokens':99,'model':'gpt-x',"
                     "'output':[{'type':'message'}],'parallel_tool_calls':false,'previous_response_id':'resp_0',"
                     "'reasoning':{'effort':null,'summary':null},'store':false,'temperature':0.2,"
                     "'text':{'verbosity':'low','format':{'type':'text'}},'tool_choice':'required',"
                     "'tools':[{'type':'function','name':'f','description':null,'parameters':{'type':'object'},"
                     "'strict':null}],'top_p':0.5,'truncation':'auto','usage':{'input_tokens':1},'user':'u',"
                     "'metadata':{'k':'v'}}",
                     "echo");
    /* the object holds copies: changing what went in changes nothing */
    json_object_set_new(json_array_get(output, 0), "type", json_string("changed"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r, "output"), 0), "type")),
                        "message");
    json_decref(r);
    json_decref(error);
    json_decref(details);
    json_decref(output);
    json_decref(usage);
    json_decref(request);
}

/* ---- whole completions ---- */

#define CTX_REQUEST "{'model':'m','input':'hi'}"

static json_t *
from_completion(const char *completion)
{
    json_t *request = parse(CTX_REQUEST);
    json_t *c = parse(completion);
    mg_responses_ctx_t ctx = { .id = "resp_abc", .public_model = "gpt-x", .created_at = 1, .request = request };
    json_t *r = mg_responses_from_completion(&ctx, c);
    json_decref(c);
    json_decref(request);
    return r;
}

static void
completion_with_text(void **state)
{
    (void)state;
    json_t *r = from_completion("{'id':'chatcmpl-1','object':'chat.completion','choices':[{'index':0,'message':"
                                "{'role':'assistant','content':'Hello there'},'finish_reason':'stop'}],"
                                "'usage':{'prompt_tokens':10,'completion_tokens':3,'total_tokens':13}}");
    assert_string_equal(json_string_value(json_object_get(r, "status")), "completed");
    assert_true(json_is_null(json_object_get(r, "incomplete_details")));
    assert_json_text(json_object_get(r, "output"),
                     "[{'id':'msg_abc_0','type':'message','status':'completed','role':'assistant','content':["
                     "{'type':'output_text','annotations':[],'logprobs':[],'text':'Hello there'}]}]",
                     "output");
    assert_json_text(json_object_get(r, "usage"),
                     "{'input_tokens':10,'input_tokens_details':{'cached_tokens':0},'output_tokens':3,"
                     "'output_tokens_details':{'reasoning_tokens':0},'total_tokens':13}",
                     "usage");
    json_decref(r);
}

static void
completion_with_two_tool_calls(void **state)
{
    (void)state;
    json_t *r = from_completion(
        "{'choices':[{'index':0,'message':{'role':'assistant','content':null,'tool_calls':["
        "{'id':'call_A','type':'function','function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\'}'}},"
        "{'id':'call_B','type':'function','function':{'name':'get_time','arguments':'{}'}}]},"
        "'finish_reason':'tool_calls'}],'usage':{'prompt_tokens':5,'completion_tokens':7,"
        "'prompt_tokens_details':{'cached_tokens':2}}}");
    assert_string_equal(json_string_value(json_object_get(r, "status")), "completed");
    assert_json_text(json_object_get(r, "output"),
                     "[{'id':'fc_abc_0','type':'function_call','status':'completed',"
                     "'arguments':'{\\'city\\':\\'Paris\\'}','call_id':'call_A','name':'get_weather'},"
                     "{'id':'fc_abc_1','type':'function_call','status':'completed','arguments':'{}',"
                     "'call_id':'call_B','name':'get_time'}]",
                     "output");
    assert_json_text(json_object_get(r, "usage"),
                     "{'input_tokens':5,'input_tokens_details':{'cached_tokens':2},'output_tokens':7,"
                     "'output_tokens_details':{'reasoning_tokens':0},'total_tokens':12}",
                     "usage");
    json_decref(r);

    /* text before the calls is its own message item, first */
    r = from_completion("{'choices':[{'message':{'role':'assistant','content':'Let me look.','tool_calls':["
                        "{'type':'function','function':{'name':'f','arguments':{'a':1}}}]},"
                        "'finish_reason':'tool_calls'}]}");
    json_t *output = json_object_get(r, "output");
    assert_int_equal(json_array_size(output), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(output, 0), "id")), "msg_abc_0");
    assert_json_text(json_array_get(output, 1),
                     "{'id':'fc_abc_1','type':'function_call','status':'completed','arguments':'{\\'a\\':1}',"
                     "'call_id':'call_abc_0','name':'f'}",
                     "call repaired");
    assert_true(json_is_null(json_object_get(r, "usage")));
    json_decref(r);
}

static void
completion_cut_short(void **state)
{
    (void)state;
    json_t *r = from_completion("{'choices':[{'message':{'role':'assistant','content':'Once upon a'},"
                                "'finish_reason':'length'}]}");
    assert_string_equal(json_string_value(json_object_get(r, "status")), "incomplete");
    assert_json_text(json_object_get(r, "incomplete_details"), "{'reason':'max_output_tokens'}", "details");
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r, "output"), 0), "status")),
                        "incomplete");
    json_decref(r);

    r = from_completion("{'choices':[{'message':{'role':'assistant','content':''},'finish_reason':'content_filter'}]}");
    assert_string_equal(json_string_value(json_object_get(r, "status")), "incomplete");
    assert_json_text(json_object_get(r, "incomplete_details"), "{'reason':'content_filter'}", "details");
    json_decref(r);
}

static void
completion_odd_shapes(void **state)
{
    (void)state;
    /* a refusal, an empty answer, and no choices at all: always one message item */
    json_t *r = from_completion("{'choices':[{'message':{'role':'assistant','content':null,'refusal':'I cannot.'},"
                                "'finish_reason':'stop'}]}");
    assert_json_text(json_object_get(json_array_get(json_object_get(r, "output"), 0), "content"),
                     "[{'type':'refusal','refusal':'I cannot.'}]", "refusal");
    json_decref(r);
    static const char *const empties[] = { "{'choices':[{'message':{'role':'assistant','content':''}}]}",
                                           "{'choices':[]}", "{'choices':'x'}", "[]" };
    for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
        r = from_completion(empties[i]);
        assert_string_equal(json_string_value(json_object_get(r, "status")), "completed");
        assert_json_text(json_object_get(r, "output"),
                         "[{'id':'msg_abc_0','type':'message','status':'completed','role':'assistant','content':["
                         "{'type':'output_text','annotations':[],'logprobs':[],'text':''}]}]",
                         empties[i]);
        json_decref(r);
    }
}

/* ---- the stream ---- */

/* Splits SSE text into the data objects of its events, checking that each block is exactly
 * "event: <type>\ndata: <json>" with type equal to the data's "type". New reference. */
static json_t *
parse_sse(const mg_buffer_t *b)
{
    json_t *events = json_array();
    const char *p = b->data, *end = b->data + b->len;
    while (p && p < end) {
        const char *stop = memmem(p, (size_t)(end - p), "\n\n", 2);
        assert_non_null(stop);
        assert_memory_equal(p, "event: ", 7);
        const char *nl = memchr(p, '\n', (size_t)(stop - p));
        assert_non_null(nl);
        assert_memory_equal(nl + 1, "data: ", 6);
        json_error_t err;
        json_t *data = json_loadb(nl + 7, (size_t)(stop - nl - 7), 0, &err);
        if (!data)
            fail_msg("event data is not JSON: %s", err.text);
        const char *type = json_string_value(json_object_get(data, "type"));
        assert_non_null(type);
        assert_int_equal(strlen(type), (size_t)(nl - p - 7));
        assert_memory_equal(type, p + 7, strlen(type));
        json_array_append_new(events, data);
        p = stop + 2;
    }
    return events;
}

static const char *
type_of(json_t *ev)
{
    return json_string_value(json_object_get(ev, "type"));
}

static json_int_t
int_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

/* The item an event names by output_index, checking item_id against it. */
static json_t *
named_item(json_t *snapshot, json_t *ev)
{
    json_t *item = json_array_get(json_object_get(snapshot, "output"), (size_t)int_of(ev, "output_index"));
    if (!item)
        fail_msg("%s names output %lld, which does not exist", type_of(ev), (long long)int_of(ev, "output_index"));
    assert_string_equal(json_string_value(json_object_get(ev, "item_id")),
                        json_string_value(json_object_get(item, "id")));
    return item;
}

static json_t *
named_part(json_t *item, json_t *ev)
{
    assert_string_equal(json_string_value(json_object_get(item, "type")), "message");
    json_t *part = json_array_get(json_object_get(item, "content"), (size_t)int_of(ev, "content_index"));
    if (!part)
        fail_msg("%s names content %lld, which does not exist", type_of(ev), (long long)int_of(ev, "content_index"));
    return part;
}

static void
append_string(json_t *o, const char *key, json_t *delta)
{
    assert_true(json_is_string(delta));
    json_t *s = json_object_get(o, key);
    assert_true(json_is_string(s));
    size_t a = json_string_length(s), b = json_string_length(delta);
    char *joined = malloc(a + b + 1);
    memcpy(joined, json_string_value(s), a);
    memcpy(joined + a, json_string_value(delta), b);
    json_object_set_new(o, key, json_stringn(joined, a + b));
    free(joined);
}

/* One event applied to the snapshot as the SDK does, with the checks the SDK makes and a few
 * more (one item open at a time, .done values equal to the sum of the deltas). */
static void
apply_event(json_t *snapshot, json_t *ev, int *open)
{
    const char *type = type_of(ev);
    json_t *output = json_object_get(snapshot, "output");
    if (strcmp(type, "response.output_item.added") == 0) {
        assert_int_equal(*open, -1);
        assert_int_equal(int_of(ev, "output_index"), json_array_size(output));
        json_t *item = json_object_get(ev, "item");
        assert_string_equal(json_string_value(json_object_get(item, "status")), "in_progress");
        for (size_t i = 0; i < json_array_size(output); i++)
            assert_string_not_equal(json_string_value(json_object_get(json_array_get(output, i), "id")),
                                    json_string_value(json_object_get(item, "id")));
        json_array_append_new(output, json_deep_copy(item));
        *open = (int)int_of(ev, "output_index");
    } else if (strcmp(type, "response.content_part.added") == 0) {
        json_t *item = named_item(snapshot, ev);
        assert_int_equal(int_of(ev, "output_index"), *open);
        json_t *content = json_object_get(item, "content");
        assert_int_equal(int_of(ev, "content_index"), json_array_size(content));
        json_array_append_new(content, json_deep_copy(json_object_get(ev, "part")));
    } else if (strcmp(type, "response.output_text.delta") == 0) {
        json_t *part = named_part(named_item(snapshot, ev), ev);
        assert_string_equal(json_string_value(json_object_get(part, "type")), "output_text");
        assert_true(json_is_array(json_object_get(ev, "logprobs")));
        append_string(part, "text", json_object_get(ev, "delta"));
    } else if (strcmp(type, "response.refusal.delta") == 0) {
        json_t *part = named_part(named_item(snapshot, ev), ev);
        append_string(part, "refusal", json_object_get(ev, "delta"));
    } else if (strcmp(type, "response.output_text.done") == 0) {
        json_t *part = named_part(named_item(snapshot, ev), ev);
        assert_json_equal(json_object_get(ev, "text"), json_object_get(part, "text"), "output_text.done text");
        assert_true(json_is_array(json_object_get(ev, "logprobs")));
    } else if (strcmp(type, "response.refusal.done") == 0) {
        json_t *part = named_part(named_item(snapshot, ev), ev);
        assert_json_equal(json_object_get(ev, "refusal"), json_object_get(part, "refusal"), "refusal.done");
    } else if (strcmp(type, "response.content_part.done") == 0) {
        json_t *part = named_part(named_item(snapshot, ev), ev);
        assert_json_equal(json_object_get(ev, "part"), part, "content_part.done part");
    } else if (strcmp(type, "response.function_call_arguments.delta") == 0) {
        json_t *item = named_item(snapshot, ev);
        assert_string_equal(json_string_value(json_object_get(item, "type")), "function_call");
        append_string(item, "arguments", json_object_get(ev, "delta"));
    } else if (strcmp(type, "response.function_call_arguments.done") == 0) {
        json_t *item = named_item(snapshot, ev);
        assert_json_equal(json_object_get(ev, "arguments"), json_object_get(item, "arguments"), "arguments.done");
        if (json_string_length(json_object_get(item, "name")) == 0) /* the upstream sent the name late */
            json_object_set(item, "name", json_object_get(ev, "name"));
        assert_json_equal(json_object_get(ev, "name"), json_object_get(item, "name"), "arguments.done name");
    } else if (strcmp(type, "response.output_item.done") == 0) {
        assert_int_equal(int_of(ev, "output_index"), *open);
        json_t *item = json_array_get(output, (size_t)*open);
        json_t *done = json_object_get(ev, "item");
        json_object_set(item, "status", json_object_get(done, "status"));
        assert_json_equal(done, item, "output_item.done item");
        *open = -1;
    } else {
        fail_msg("unexpected event %s", type);
    }
}

/* Replays the events: created and in_progress first, sequence numbers 0, 1, 2..., every event
 * consistent with what came before, one final event (completed, incomplete or failed) whose
 * output is what the events built. Returns the final response (new reference). */
static json_t *
replay(json_t *events)
{
    size_t n = json_array_size(events);
    assert_true(n >= 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(int_of(json_array_get(events, i), "sequence_number"), (json_int_t)i);
    json_t *created = json_array_get(events, 0), *progress = json_array_get(events, 1);
    assert_string_equal(type_of(created), "response.created");
    assert_string_equal(type_of(progress), "response.in_progress");
    assert_json_equal(json_object_get(created, "response"), json_object_get(progress, "response"), "in_progress");
    json_t *snapshot = json_deep_copy(json_object_get(created, "response"));
    assert_string_equal(json_string_value(json_object_get(snapshot, "status")), "in_progress");
    assert_int_equal(json_array_size(json_object_get(snapshot, "output")), 0);
    int open = -1;
    for (size_t i = 2; i + 1 < n; i++)
        apply_event(snapshot, json_array_get(events, i), &open);
    json_t *last = json_array_get(events, n - 1);
    const char *type = type_of(last);
    json_t *final = json_object_get(last, "response");
    bool failed = strcmp(type, "response.failed") == 0;
    if (!failed)
        assert_int_equal(open, -1);
    assert_true(failed || strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0);
    assert_string_equal(json_string_value(json_object_get(final, "status")), type + strlen("response."));
    assert_json_equal(json_object_get(final, "output"), json_object_get(snapshot, "output"), "final output");
    assert_string_equal(json_string_value(json_object_get(final, "id")),
                        json_string_value(json_object_get(snapshot, "id")));
    json_decref(snapshot);
    return json_deep_copy(final);
}

typedef struct run {
    json_t *events;   /* every event's data, in order */
    json_t *response; /* the final response */
} run_t;

/* Streams chunks (single-quoted JSON texts, NULL-terminated) then ends the stream normally (or
 * fails it with code "server_error" when fail_message is not NULL); checks s->result against
 * the last event and replays the events. */
static run_t
stream_chunks(const char *const *chunks, const char *fail_message)
{
    json_t *request = parse(CTX_REQUEST);
    mg_responses_ctx_t ctx = { .id = "resp_abc", .public_model = "gpt-x", .created_at = 1, .request = request };
    mg_responses_stream_t s = { 0 };
    mg_responses_stream_init(&s, &ctx);
    mg_buffer_t out = { 0 };
    mg_responses_stream_begin(&s, &out);
    for (const char *const *c = chunks; *c; c++) {
        json_t *chunk = parse(*c);
        mg_responses_stream_chunk(&s, chunk, &out);
        json_decref(chunk);
    }
    if (fail_message)
        mg_responses_stream_fail(&s, "server_error", fail_message, &out);
    else
        mg_responses_stream_end(&s, &out);
    assert_true(s.ended);
    /* after the end nothing more is sent */
    size_t len = out.len;
    json_t *late = parse("{'choices':[{'index':0,'delta':{'content':'late'}}]}");
    mg_responses_stream_chunk(&s, late, &out);
    mg_responses_stream_end(&s, &out);
    mg_responses_stream_fail(&s, "server_error", "again", &out);
    json_decref(late);
    assert_int_equal(out.len, len);

    run_t r;
    r.events = parse_sse(&out);
    r.response = replay(r.events);
    assert_json_equal(s.result, r.response, "s->result");
    mg_buffer_release(&out);
    mg_responses_stream_dispose(&s);
    json_decref(request);
    return r;
}

static void
run_free(run_t *r)
{
    json_decref(r->events);
    json_decref(r->response);
}

/* Fails unless the events have exactly these types, in order. */
static void
assert_types(json_t *events, const char *const *want)
{
    size_t i = 0;
    for (; want[i]; i++) {
        json_t *ev = json_array_get(events, i);
        if (!ev)
            fail_msg("event %zu missing: want %s", i, want[i]);
        if (strcmp(type_of(ev), want[i]) != 0)
            fail_msg("event %zu is %s; want %s", i, type_of(ev), want[i]);
    }
    assert_int_equal(json_array_size(events), i);
}

/* Fails unless the streamed response's output and usage equal those of the whole completion. */
static void
assert_same_as_completion(run_t *r, const char *completion)
{
    json_t *whole = from_completion(completion);
    assert_json_equal(json_object_get(r->response, "output"), json_object_get(whole, "output"), "output vs whole");
    assert_json_equal(json_object_get(r->response, "usage"), json_object_get(whole, "usage"), "usage vs whole");
    assert_json_equal(json_object_get(r->response, "status"), json_object_get(whole, "status"), "status vs whole");
    assert_json_equal(json_object_get(r->response, "incomplete_details"), json_object_get(whole, "incomplete_details"),
                      "details vs whole");
    json_decref(whole);
}

#define CHUNK(delta)      "{'id':'c','object':'chat.completion.chunk','choices':[{'index':0,'delta':" delta "}]}"
#define FINISH(reason)    "{'id':'c','choices':[{'index':0,'delta':{},'finish_reason':'" reason "'}]}"
#define USAGE(in, out)    "{'id':'c','choices':[],'usage':{'prompt_tokens':" #in ",'completion_tokens':" #out "}}"
#define ARGS(index, text) CHUNK("{'tool_calls':[{'index':" #index ",'function':{'arguments':'" text "'}}]}")
#define CALL(index, id, fn)                                                                                            \
    CHUNK("{'tool_calls':[{'index':" #index ",'id':'" id "','type':'function','function':{'name':'" fn                 \
          "','arguments':''}}]}")

static const char *const text_events[] = {
    "response.created",           "response.in_progress",
    "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.delta",
    "response.output_text.delta", "response.output_text.done",
    "response.content_part.done", "response.output_item.done",
    "response.completed",         NULL,
};

static void
stream_text_only(void **state)
{
    (void)state;
    const char *const chunks[] = { CHUNK("{'role':'assistant','content':''}"),
                                   CHUNK("{'content':'Hel'}"),
                                   CHUNK("{'content':'lo, '}"),
                                   CHUNK("{'content':'w\\u00f6rld \\u2603\\n'}"),
                                   FINISH("stop"),
                                   USAGE(12, 4),
                                   NULL };
    run_t r = stream_chunks(chunks, NULL);
    assert_types(r.events, text_events);
    json_t *delta = json_array_get(r.events, 4);
    assert_json_text(delta,
                     "{'type':'response.output_text.delta','sequence_number':4,'item_id':'msg_abc_0',"
                     "'output_index':0,'content_index':0,'delta':'Hel','logprobs':[]}",
                     "delta event");
    assert_json_text(json_array_get(r.events, 2),
                     "{'type':'response.output_item.added','sequence_number':2,'output_index':0,'item':{"
                     "'id':'msg_abc_0','type':'message','status':'in_progress','role':'assistant','content':[]}}",
                     "added event");
    assert_json_text(json_array_get(r.events, 3),
                     "{'type':'response.content_part.added','sequence_number':3,'item_id':'msg_abc_0',"
                     "'output_index':0,'content_index':0,'part':{'type':'output_text','annotations':[],"
                     "'logprobs':[],'text':''}}",
                     "part added event");
    assert_same_as_completion(&r, "{'choices':[{'message':{'role':'assistant','content':'Hello, w\\u00f6rld "
                                  "\\u2603\\n'},'finish_reason':'stop'}],'usage':{'prompt_tokens':12,"
                                  "'completion_tokens':4}}");
    run_free(&r);
}

static void
stream_text_then_parallel_calls(void **state)
{
    (void)state;
    const char *const chunks[] = { CHUNK("{'role':'assistant','content':null}"),
                                   CHUNK("{'content':'Checking both.'}"),
                                   CALL(0, "call_A", "get_weather"),
                                   ARGS(0, "{\\'ci"),
                                   ARGS(0, "ty\\': \\'Par"),
                                   ARGS(0, "is\\'}"),
                                   CALL(1, "call_B", "get_time"),
                                   ARGS(1, "{}"),
                                   FINISH("tool_calls"),
                                   USAGE(30, 25),
                                   NULL };
    run_t r = stream_chunks(chunks, NULL);
    static const char *const want[] = { "response.created",
                                        "response.in_progress",
                                        "response.output_item.added",
                                        "response.content_part.added",
                                        "response.output_text.delta",
                                        "response.output_text.done",
                                        "response.content_part.done",
                                        "response.output_item.done",
                                        "response.output_item.added",
                                        "response.function_call_arguments.delta",
                                        "response.function_call_arguments.delta",
                                        "response.function_call_arguments.delta",
                                        "response.function_call_arguments.done",
                                        "response.output_item.done",
                                        "response.output_item.added",
                                        "response.function_call_arguments.delta",
                                        "response.function_call_arguments.done",
                                        "response.output_item.done",
                                        "response.completed",
                                        NULL };
    assert_types(r.events, want);
    assert_json_text(json_array_get(r.events, 8),
                     "{'type':'response.output_item.added','sequence_number':8,'output_index':1,'item':{"
                     "'id':'fc_abc_1','type':'function_call','status':'in_progress','arguments':'',"
                     "'call_id':'call_A','name':'get_weather'}}",
                     "call added");
    assert_json_text(json_array_get(r.events, 9),
                     "{'type':'response.function_call_arguments.delta','sequence_number':9,'item_id':'fc_abc_1',"
                     "'output_index':1,'delta':'{\\'ci'}",
                     "arguments delta");
    assert_json_text(json_array_get(r.events, 12),
                     "{'type':'response.function_call_arguments.done','sequence_number':12,'item_id':'fc_abc_1',"
                     "'output_index':1,'name':'get_weather','arguments':'{\\'city\\': \\'Paris\\'}'}",
                     "arguments done");
    assert_same_as_completion(&r, "{'choices':[{'message':{'role':'assistant','content':'Checking both.',"
                                  "'tool_calls':[{'id':'call_A','type':'function','function':{'name':'get_weather',"
                                  "'arguments':'{\\'city\\': \\'Paris\\'}'}},{'id':'call_B','type':'function',"
                                  "'function':{'name':'get_time','arguments':'{}'}}]},'finish_reason':'tool_calls'}],"
                                  "'usage':{'prompt_tokens':30,'completion_tokens':25}}");
    assert_int_equal(int_of(json_object_get(r.response, "usage"), "total_tokens"), 55);
    run_free(&r);
}

/* Servers that put every call at index 0: a new id is a new call, never more arguments for the
 * open one; a fragment of a closed call is dropped. */
static void
stream_calls_sharing_index_zero(void **state)
{
    (void)state;
    const char *const chunks[] = { CHUNK("{'role':'assistant','content':null}"),
                                   CALL(0, "call_A", "f"),
                                   ARGS(0, "{\\'a\\':1}"),
                                   CALL(0, "call_B", "g"),
                                   ARGS(0, "{\\'b\\':2}"),
                                   CALL(0, "call_A", "f"),
                                   FINISH("tool_calls"),
                                   NULL };
    run_t r = stream_chunks(chunks, NULL);
    json_t *output = json_object_get(r.response, "output");
    assert_int_equal(json_array_size(output), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(output, 0), "call_id")), "call_A");
    assert_string_equal(json_string_value(json_object_get(json_array_get(output, 0), "arguments")), "{\"a\":1}");
    assert_string_equal(json_string_value(json_object_get(json_array_get(output, 1), "call_id")), "call_B");
    assert_string_equal(json_string_value(json_object_get(json_array_get(output, 1), "arguments")), "{\"b\":2}");
    run_free(&r);
}

static void
stream_calls_only_in_one_chunk(void **state)
{
    (void)state;
    /* two whole calls in one chunk, no index (some upstreams), usage on the last choice chunk */
    const char *const chunks[] = {
        CHUNK("{'role':'assistant','content':''}"),
        CHUNK("{'tool_calls':[{'id':'call_1','type':'function','function':{'name':'a','arguments':'{\\'x\\':1}'}},"
              "{'id':'call_2','type':'function','function':{'name':'b','arguments':'{}'}}]}"),
        "{'choices':[{'index':0,'delta':{},'finish_reason':'tool_calls'}],'usage':{'prompt_tokens':3,"
        "'completion_tokens':4,'total_tokens':7}}",
        NULL
    };
    run_t r = stream_chunks(chunks, NULL);
    assert_same_as_completion(&r, "{'choices':[{'message':{'role':'assistant','content':'','tool_calls':["
                                  "{'id':'call_1','type':'function','function':{'name':'a','arguments':'{\\'x\\':1}'}},"
                                  "{'id':'call_2','type':'function','function':{'name':'b','arguments':'{}'}}]},"
                                  "'finish_reason':'tool_calls'}],'usage':{'prompt_tokens':3,'completion_tokens':4}}");
    run_free(&r);
}

static void
stream_malformed_chunks(void **state)
{
    (void)state;
    const char *const chunks[] = {
        "'just a string'",
        "[1,2]",
        "{'choices':'nope'}",
        "{'choices':[1,null,'x']}",
        "{'choices':[{'index':0}]}",
        "{'choices':[{'index':0,'delta':null}]}",
        "{'choices':[{'index':0,'delta':'text'}]}",
        CHUNK("{'content':null}"),
        CHUNK("{'content':5}"),
        CHUNK("{'content':'A'}"),
        CHUNK("{'tool_calls':'x'}"),
        CHUNK("{'tool_calls':[null,7,{'index':-3,'function':{'arguments':'?'}}]}"),
        CHUNK("{'tool_calls':[{'index':0,'function':null}]}"),
        CHUNK("{'tool_calls':[{'index':0,'function':{'arguments':{'a':1}}}]}"),
        CHUNK("{'tool_calls':[{'index':0,'function':{'name':'late_name','arguments':'{}'}}]}"),
        "{'choices':[{'index':1,'delta':{'content':'other choice'}}]}",
        "{'usage':'lots'}",
        "{'choices':[{'index':0,'delta':{},'finish_reason':7}]}",
        NULL,
    };
    run_t r = stream_chunks(chunks, NULL);
    json_t *output = json_object_get(r.response, "output");
    assert_int_equal(json_array_size(output), 2);
    assert_json_text(json_object_get(json_array_get(output, 0), "content"),
                     "[{'type':'output_text','annotations':[],'logprobs':[],'text':'A'}]", "text");
    /* a call without an id gets one; its name, sent after, is kept */
    assert_json_text(json_array_get(output, 1),
                     "{'id':'fc_abc_1','type':'function_call','status':'completed','arguments':'{}',"
                     "'call_id':'call_abc_0','name':'late_name'}",
                     "call");
    assert_string_equal(json_string_value(json_object_get(r.response, "status")), "completed");
    assert_true(json_is_null(json_object_get(r.response, "usage")));
    run_free(&r);
}

static void
stream_finish_length(void **state)
{
    (void)state;
    const char *const chunks[] = { CHUNK("{'content':'Once upon'}"), CHUNK("{'content':' a'}"), FINISH("length"),
                                   USAGE(5, 2), NULL };
    run_t r = stream_chunks(chunks, NULL);
    json_t *last = json_array_get(r.events, json_array_size(r.events) - 1);
    assert_string_equal(type_of(last), "response.incomplete");
    assert_json_text(json_object_get(r.response, "incomplete_details"), "{'reason':'max_output_tokens'}", "details");
    assert_same_as_completion(&r, "{'choices':[{'message':{'role':'assistant','content':'Once upon a'},"
                                  "'finish_reason':'length'}],'usage':{'prompt_tokens':5,'completion_tokens':2}}");
    run_free(&r);

    /* cut inside a tool call: the call is incomplete */
    const char *const in_call[] = { CALL(0, "call_1", "f"), ARGS(0, "{\\'a\\':"), FINISH("length"), NULL };
    r = stream_chunks(in_call, NULL);
    assert_same_as_completion(&r, "{'choices':[{'message':{'role':'assistant','content':null,'tool_calls':["
                                  "{'id':'call_1','type':'function','function':{'name':'f','arguments':'{\\'a\\':'}}]},"
                                  "'finish_reason':'length'}]}");
    json_t *output = json_object_get(r.response, "output");
    assert_string_equal(json_string_value(json_object_get(json_array_get(output, 0), "status")), "incomplete");
    run_free(&r);
}

static void
stream_empty_and_tiny(void **state)
{
    (void)state;
    /* no text at all: one empty message, as for the whole completion */
    const char *const empty[] = { CHUNK("{'role':'assistant','content':''}"), FINISH("stop"), NULL };
    run_t r = stream_chunks(empty, NULL);
    static const char *const want[] = { "response.created",
                                        "response.in_progress",
                                        "response.output_item.added",
                                        "response.content_part.added",
                                        "response.output_text.done",
                                        "response.content_part.done",
                                        "response.output_item.done",
                                        "response.completed",
                                        NULL };
    assert_types(r.events, want);
    assert_same_as_completion(&r, "{'choices':[{'message':{'role':'assistant','content':''},'finish_reason':'stop'}]}");
    run_free(&r);

    /* nothing at all, not even a finish reason */
    const char *const nothing[] = { NULL };
    r = stream_chunks(nothing, NULL);
    assert_types(r.events, want);
    run_free(&r);

    /* one character per chunk, multibyte ones included */
    const char *const tiny[] = { CHUNK("{'content':'\\u00e9'}"),
                                 CHUNK("{'content':'t'}"),
                                 CHUNK("{'content':'\\ud83d\\ude00'}"),
                                 CHUNK("{'content':''}"),
                                 CHUNK("{'content':'!'}"),
                                 FINISH("stop"),
                                 NULL };
    r = stream_chunks(tiny, NULL);
    assert_same_as_completion(&r, "{'choices':[{'message':{'role':'assistant','content':'\\u00e9t\\ud83d\\ude00!'},"
                                  "'finish_reason':'stop'}]}");
    run_free(&r);
}

static void
stream_text_after_call_and_refusal(void **state)
{
    (void)state;
    /* text after a call opens a new message; a late fragment of the closed call is dropped */
    const char *const chunks[] = { CALL(0, "call_1", "f"),
                                   ARGS(0, "{}"),
                                   CHUNK("{'content':'Done.'}"),
                                   ARGS(0, "garbage"),
                                   CHUNK("{'refusal':'But no.'}"),
                                   FINISH("stop"),
                                   NULL };
    run_t r = stream_chunks(chunks, NULL);
    assert_json_text(json_object_get(r.response, "output"),
                     "[{'id':'fc_abc_0','type':'function_call','status':'completed','arguments':'{}',"
                     "'call_id':'call_1','name':'f'},"
                     "{'id':'msg_abc_1','type':'message','status':'completed','role':'assistant','content':["
                     "{'type':'output_text','annotations':[],'logprobs':[],'text':'Done.'},"
                     "{'type':'refusal','refusal':'But no.'}]}]",
                     "output");
    run_free(&r);
}

static void
stream_fails(void **state)
{
    (void)state;
    const char *const chunks[] = { CHUNK("{'content':'Part'}"), CHUNK("{'content':'ial'}"), USAGE(2, 2), NULL };
    run_t r = stream_chunks(chunks, "upstream closed the connection");
    json_t *last = json_array_get(r.events, json_array_size(r.events) - 1);
    assert_string_equal(type_of(last), "response.failed");
    assert_json_text(json_object_get(r.response, "error"),
                     "{'code':'server_error','message':'upstream closed the connection'}", "error");
    /* the output so far, the open item as it stands */
    assert_json_text(json_object_get(r.response, "output"),
                     "[{'id':'msg_abc_0','type':'message','status':'in_progress','role':'assistant','content':["
                     "{'type':'output_text','annotations':[],'logprobs':[],'text':'Partial'}]}]",
                     "output");
    assert_int_equal(int_of(json_object_get(r.response, "usage"), "total_tokens"), 4);
    run_free(&r);

    const char *const calls[] = { CALL(0, "call_1", "f"), ARGS(0, "{\\'a"), NULL };
    r = stream_chunks(calls, "gateway shutting down");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(r.response, "output"), 0), "arguments")),
        "{\"a");
    run_free(&r);
}

static void
stream_without_begin(void **state)
{
    (void)state;
    /* a chunk before begin still starts with response.created (the SDK requires it) */
    json_t *request = parse(CTX_REQUEST);
    mg_responses_ctx_t ctx = { .id = "resp_abc", .public_model = "gpt-x", .created_at = 1, .request = request };
    mg_responses_stream_t s = { 0 };
    mg_responses_stream_init(&s, &ctx);
    mg_buffer_t out = { 0 };
    json_t *chunk = parse(CHUNK("{'content':'x'}"));
    mg_responses_stream_chunk(&s, chunk, &out);
    mg_responses_stream_begin(&s, &out); /* late: sends nothing more */
    mg_responses_stream_end(&s, &out);
    json_t *events = parse_sse(&out);
    json_t *final = replay(events);
    assert_json_equal(final, s.result, "result");
    json_decref(final);
    json_decref(events);
    json_decref(chunk);
    mg_buffer_release(&out);
    mg_responses_stream_dispose(&s);
    json_decref(request);
}

static void
stream_many_deltas(void **state)
{
    (void)state;
    /* a long answer in many small deltas, then a call with many fragments */
    enum { N = 3000 };
    json_t *request = parse(CTX_REQUEST);
    mg_responses_ctx_t ctx = { .id = "resp_abc", .public_model = "gpt-x", .created_at = 1, .request = request };
    mg_responses_stream_t s = { 0 };
    mg_responses_stream_init(&s, &ctx);
    mg_buffer_t out = { 0 };
    mg_responses_stream_begin(&s, &out);
    for (int i = 0; i < N; i++) {
        json_t *chunk = json_pack("{s:[{s:i, s:{s:s}}]}", "choices", "index", 0, "delta", "content", "ab ");
        mg_responses_stream_chunk(&s, chunk, &out);
        json_decref(chunk);
    }
    json_t *open = parse(CALL(0, "call_1", "f"));
    mg_responses_stream_chunk(&s, open, &out);
    json_decref(open);
    for (int i = 0; i < N; i++) {
        json_t *chunk = json_pack("{s:[{s:i, s:{s:[{s:i, s:{s:s}}]}}]}", "choices", "index", 0, "delta", "tool_calls",
                                  "index", 0, "function", "arguments", "x");
        mg_responses_stream_chunk(&s, chunk, &out);
        json_decref(chunk);
    }
    mg_responses_stream_end(&s, &out);
    json_t *events = parse_sse(&out);
    assert_int_equal(json_array_size(events), 2 + 2 + N + 3 + 1 + N + 2 + 1);
    json_t *final = replay(events);
    json_t *output = json_object_get(final, "output");
    json_t *text = json_object_get(json_array_get(json_object_get(json_array_get(output, 0), "content"), 0), "text");
    assert_int_equal(json_string_length(text), 3 * N);
    assert_int_equal(json_string_length(json_object_get(json_array_get(output, 1), "arguments")), N);
    json_decref(final);
    json_decref(events);
    mg_buffer_release(&out);
    mg_responses_stream_dispose(&s);
    json_decref(request);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_bodies_pass),
        cmocka_unit_test(invalid_bodies_fail_with_path),
        cmocka_unit_test(input_items_are_normalised),
        cmocka_unit_test(chat_bodies),
        cmocka_unit_test(object_defaults),
        cmocka_unit_test(object_echoes_the_request),
        cmocka_unit_test(completion_with_text),
        cmocka_unit_test(completion_with_two_tool_calls),
        cmocka_unit_test(completion_cut_short),
        cmocka_unit_test(completion_odd_shapes),
        cmocka_unit_test(stream_text_only),
        cmocka_unit_test(stream_text_then_parallel_calls),
        cmocka_unit_test(stream_calls_only_in_one_chunk),
        cmocka_unit_test(stream_calls_sharing_index_zero),
        cmocka_unit_test(stream_malformed_chunks),
        cmocka_unit_test(stream_finish_length),
        cmocka_unit_test(stream_empty_and_tiny),
        cmocka_unit_test(stream_text_after_call_and_refusal),
        cmocka_unit_test(stream_fails),
        cmocka_unit_test(stream_without_begin),
        cmocka_unit_test(stream_many_deltas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
