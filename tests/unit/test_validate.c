/*
 * test_validate.c — model-gw/validate.c: a table of valid bodies that must pass, and a table of
 * invalid ones, each with the exact JSON path (error.param) and what the message must say.
 *
 * Bodies are written with single quotes for readability and turned into JSON before parsing, so
 * no body may contain an apostrophe.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

enum api { CHAT, COMPLETION, EMBEDDINGS };
enum model { ANY, LIMITED, STRICT };

static const tp_model_config_t limited_model = { .name = "small", .max_tokens = 4096 };
static const tp_model_config_t strict_model = { .name = "strict", .deny_unknown_fields = true };

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
    json_t *body = json_loads(text, JSON_DECODE_ANY, &err);
    if (!body)
        fail_msg("test body does not parse: %s: %s", err.text, text);
    free(text);
    return body;
}

static bool
run(enum api api, json_t *body, enum model m, mg_invalid_t *out)
{
    switch (api) {
    case CHAT:
        return mg_validate_chat(body, model_of(m), out);
    case COMPLETION:
        return mg_validate_completion(body, model_of(m), out);
    case EMBEDDINGS:
        break;
    }
    return mg_validate_embeddings(body, model_of(m), out);
}

/* ---- valid bodies ---- */

#define USER_HI "'messages':[{'role':'user','content':'hi'}]"
#define WEATHER_TOOLS                                                                                                  \
    "'tools':[{'type':'function','function':{'name':'get_weather','description':'Weather in a city',"                  \
    "'parameters':{'type':'object','properties':{'city':{'type':'string'}},'required':['city']},'strict':true}},"      \
    "{'type':'function','function':{'name':'get_time'}}]"

typedef struct valid_case {
    const char *name;
    enum api api;
    enum model model;
    const char *body;
} valid_case_t;

static const valid_case_t valid_cases[] = {
    { "minimal chat", CHAT, ANY, "{'model':'m'," USER_HI "}" },
    { "multi-turn tool conversation", CHAT, ANY,
      "{'model':'m','messages':["
      "{'role':'system','content':'You are helpful.'},"
      "{'role':'user','content':'Weather and time in Paris?'},"
      "{'role':'assistant','content':null,'tool_calls':["
      "{'id':'call_a','type':'function','function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\'}'}},"
      "{'id':'call_b','type':'function','function':{'name':'get_time','arguments':'not json, still a string'}}]},"
      "{'role':'tool','tool_call_id':'call_a','content':'18 C, sunny'},"
      "{'role':'tool','tool_call_id':'call_b','content':[{'type':'text','text':'14:05'}]},"
      "{'role':'assistant','content':'It is 18 C and sunny; the time is 14:05.'}]," WEATHER_TOOLS
      ",'tool_choice':'auto','parallel_tool_calls':true}" },
    { "assistant tool calls without content key", CHAT, ANY,
      "{'model':'m','messages':[{'role':'user','content':'x'},{'role':'assistant','tool_calls':["
      "{'id':'c1','type':'function','function':{'name':'get_time','arguments':'{}'}}]},"
      "{'role':'tool','tool_call_id':'c1','content':'now'}]," WEATHER_TOOLS "}" },
    { "user content parts", CHAT, ANY,
      "{'model':'m','messages':[{'role':'user','name':'ann','content':["
      "{'type':'text','text':'What is this?'},"
      "{'type':'image_url','image_url':{'url':'https://example.com/a.png','detail':'high'}},"
      "{'type':'image_url','image_url':{'url':'data:image/png;base64,AAAA'}},"
      "{'type':'input_audio','input_audio':{'data':'UklGRg==','format':'wav'}},"
      "{'type':'file','file':{'file_id':'file-abc'}},"
      "{'type':'file','file':{'file_data':'JVBERi0=','filename':'a.pdf'}}]}]}" },
    { "developer and system text parts, assistant refusal part", CHAT, ANY,
      "{'model':'m','messages':[{'role':'developer','content':[{'type':'text','text':'be brief'}]},"
      "{'role':'system','content':''},{'role':'user','content':'hi'},"
      "{'role':'assistant','content':[{'type':'refusal','refusal':'no'}],'refusal':'no'},"
      "{'role':'assistant','content':'ok','refusal':null,'name':'bot'}]}" },
    { "every chat field, with a model refusing unknown fields", CHAT, STRICT,
      "{'model':'m'," USER_HI ",'audio':{'voice':'alloy','format':'mp3'},'frequency_penalty':-2,"
      "'function_call':'auto','functions':[{'name':'f','parameters':{'type':'object'}}],"
      "'logit_bias':{'50256':-100,'7':100},'logprobs':true,'max_completion_tokens':100,'max_tokens':1,"
      "'metadata':{'team':'ml'},'modalities':['text','audio'],'n':128,'parallel_tool_calls':false,"
      "'prediction':{'type':'content','content':'abc'},'presence_penalty':2,'prompt_cache_key':'k',"
      "'prompt_cache_retention':'24h','reasoning_effort':'minimal',"
      "'response_format':{'type':'json_object'},'safety_identifier':'u1','seed':-5,'service_tier':'auto',"
      "'stop':['a','b','c','d'],'store':false,'stream':true,'stream_options':{'include_usage':true,"
      "'include_obfuscation':false},'temperature':2,'tool_choice':'required'," WEATHER_TOOLS ","
      "'top_logprobs':20,'top_p':0,'user':'u','verbosity':'low',"
      "'web_search_options':{'search_context_size':'medium','user_location':null}}" },
    { "json_schema response format, named tool choice", CHAT, ANY,
      "{'model':'m'," USER_HI ",'response_format':{'type':'json_schema','json_schema':{'name':'answer-v1',"
      "'schema':{'type':'object'},'strict':null}}," WEATHER_TOOLS
      ",'tool_choice':{'type':'function','function':{'name':'get_time'}}}" },
    { "allowed_tools and custom tools", CHAT, ANY,
      "{'model':'m','messages':[{'role':'user','content':'x'},{'role':'assistant','tool_calls':["
      "{'id':'c9','type':'custom','custom':{'name':'grep','input':'foo'}}]},"
      "{'role':'tool','tool_call_id':'c9','content':'bar'}],'tools':[{'type':'custom','custom':{'name':'grep'}},"
      "{'type':'function','function':{'name':'get_time'}}],'tool_choice':{'type':'allowed_tools','allowed_tools':"
      "{'mode':'required','tools':[{'type':'custom','custom':{'name':'grep'}},"
      "{'type':'function','function':{'name':'get_time'}}]}}}" },
    { "nulls count as absent", CHAT, ANY,
      "{'model':'m'," USER_HI ",'temperature':null,'tools':null,'tool_choice':null,'stop':null,"
      "'stream_options':null,'top_logprobs':null,'metadata':null}" },
    { "legacy function role", CHAT, ANY,
      "{'model':'m','messages':[{'role':'user','content':'x'},"
      "{'role':'assistant','content':null,'function_call':{'name':'f','arguments':'{}'}},"
      "{'role':'function','name':'f','content':'done'}],'functions':[{'name':'f'}],"
      "'function_call':{'name':'f'}}" },
    { "max_tokens at the model's limit", CHAT, LIMITED, "{'model':'m'," USER_HI ",'max_tokens':4096}" },
    { "unknown fields pass through", CHAT, ANY, "{'model':'m'," USER_HI ",'top_k':40,'min_p':0.1}" },
    { "unknown fields inside messages pass through", CHAT, STRICT,
      "{'model':'m','messages':[{'role':'user','content':'hi','cache_control':{'type':'ephemeral'}}]}" },
    { "completion, string prompt", COMPLETION, LIMITED,
      "{'model':'m','prompt':'Once upon','max_tokens':4096,'temperature':0.7,'top_p':1,'n':2,'best_of':3,"
      "'logprobs':5,'echo':true,'stop':'\\n','presence_penalty':0,'frequency_penalty':0,'logit_bias':{'1':5},"
      "'seed':1,'suffix':'end','user':'u','stream':true,'stream_options':{'include_usage':true}}" },
    { "completion, empty string and max_tokens 0", COMPLETION, ANY, "{'model':'m','prompt':'','max_tokens':0}" },
    { "completion, array prompts", COMPLETION, ANY, "{'model':'m','prompt':['a','b']}" },
    { "completion, token prompt", COMPLETION, ANY, "{'model':'m','prompt':[1,2,3]}" },
    { "completion, token-array prompts", COMPLETION, STRICT, "{'model':'m','prompt':[[1,2],[3]]}" },
    { "embeddings, string", EMBEDDINGS, STRICT,
      "{'model':'e','input':'hello','encoding_format':'base64','dimensions':256,'user':'u'}" },
    { "embeddings, strings", EMBEDDINGS, ANY, "{'model':'e','input':['a','b'],'encoding_format':'float'}" },
    { "embeddings, tokens", EMBEDDINGS, ANY, "{'model':'e','input':[0,1,2]}" },
    { "embeddings, token arrays", EMBEDDINGS, ANY, "{'model':'e','input':[[1],[2,3]]}" },
};

static void
valid_bodies_pass(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof valid_cases / sizeof valid_cases[0]; i++) {
        const valid_case_t *t = &valid_cases[i];
        json_t *body = parse(t->body);
        char before[2048];
        char *dump = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(before, sizeof before, "%s", dump);
        free(dump);
        mg_invalid_t out;
        memset(&out, 'x', sizeof out);
        if (!run(t->api, body, t->model, &out)) {
            print_error("valid case '%s' refused: param '%s': %s\n", t->name, out.param, out.message);
            failures++;
        } else if (out.param[0] || out.message[0]) {
            print_error("valid case '%s' left an error behind\n", t->name);
            failures++;
        }
        /* The body is borrowed, never changed. */
        dump = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
        if (strncmp(before, dump, sizeof before - 1) != 0) {
            print_error("valid case '%s' changed the body\n", t->name);
            failures++;
        }
        free(dump);
        json_decref(body);
    }
    assert_int_equal(failures, 0);
}

/* ---- invalid bodies ---- */

typedef struct invalid_case {
    enum api api;
    enum model model;
    const char *body;
    const char *param;   /* exactly */
    const char *message; /* a substring, or the whole message when exact */
    bool exact;
} invalid_case_t;

/* S: the message must contain the text; X: the message must be exactly the text. */
// clang-format off
#define S(api, model, body, param, message) { api, model, body, param, message, false }
#define X(api, model, body, param, message) { api, model, body, param, message, true }
// clang-format on
#define HI    "{'role':'user','content':'hi'}"
#define C(x)  "{'model':'m'," USER_HI "," x "}"
#define CM(x) "{'model':'m','messages':[" x "]}"
#define TWO_CALLS                                                                                                      \
    "{'role':'assistant','tool_calls':[{'id':'call_a','type':'function','function':{'name':'get_weather',"             \
    "'arguments':'{}'}},{'id':'call_b','type':'function','function':{'name':'get_time','arguments':'{}'}}]}"
#define NAME65 "a123456789b123456789c123456789d123456789e123456789f123456789g1234"

static const invalid_case_t invalid_cases[] = {
    /* the body, model, messages */
    X(CHAT, ANY, "[1]", "", "the request body must be a JSON object, got an array"),
    X(CHAT, ANY, "{" USER_HI "}", "model", "model is required"),
    S(CHAT, ANY, "{'model':''," USER_HI "}", "model", "must be a non-empty string, got an empty string"),
    S(CHAT, ANY, "{'model':7," USER_HI "}", "model", "must be a non-empty string, got a number"),
    X(CHAT, ANY, "{'model':'m'}", "messages", "messages is required"),
    S(CHAT, ANY, "{'model':'m','messages':[]}", "messages", "must contain at least one message"),
    S(CHAT, ANY, "{'model':'m','messages':{'role':'user'}}", "messages", "must be an array of messages, got an object"),
    S(CHAT, ANY, CM("'hi'"), "messages[0]", "must be a message object with a role, got a string"),
    X(CHAT, ANY, CM(HI "," HI ",{'role':'bot','content':'x'}"), "messages[2].role",
      "messages[2].role must be one of system, developer, user, assistant, tool; got 'bot'"),
    S(CHAT, ANY, CM("{'content':'x'}"), "messages[0].role", "is required; expected one of system, developer"),
    S(CHAT, ANY, CM("{'role':3}"), "messages[0].role", "got a number"),
    /* content */
    X(CHAT, ANY, CM("{'role':'user','content':5}"), "messages[0].content",
      "messages[0].content must be a string or an array of content parts, got a number"),
    X(CHAT, ANY, CM("{'role':'user'}"), "messages[0].content", "messages[0].content is required"),
    S(CHAT, ANY, CM("{'role':'user','content':null}"), "messages[0].content", "got null"),
    S(CHAT, ANY, CM("{'role':'user','content':[]}"), "messages[0].content", "must not be an empty array"),
    S(CHAT, ANY, CM("{'role':'system','content':[{'type':'image_url','image_url':{'url':'u'}}]}"),
      "messages[0].content[0].type", "must be 'text'; got 'image_url'"),
    S(CHAT, ANY, CM("{'role':'user','content':[{'type':'text','text':'a'},{'type':'video'}]}"),
      "messages[0].content[1].type", "must be one of text, image_url, input_audio, file; got 'video'"),
    S(CHAT, ANY, CM("{'role':'user','content':[{'text':'a'}]}"), "messages[0].content[0].type",
      "is required; expected one of text, image_url"),
    S(CHAT, ANY, CM("{'role':'user','content':['a']}"), "messages[0].content[0]",
      "must be an object with a type, got a string"),
    S(CHAT, ANY, CM("{'role':'user','content':[{'type':'text','text':5}]}"), "messages[0].content[0].text",
      "must be a string, got a number"),
    S(CHAT, ANY, CM("{'role':'user','content':[{'type':'text'}]}"), "messages[0].content[0].text",
      "is required when type is 'text'"),
    S(CHAT, ANY, CM("{'role':'user','content':[{'type':'image_url','image_url':{'detail':'low'}}]}"),
      "messages[0].content[0].image_url.url", "is required"),
    S(CHAT, ANY, CM("{'role':'user','content':[{'type':'image_url','image_url':{'url':'u','detail':'ultra'}}]}"),
      "messages[0].content[0].image_url.detail", "must be one of auto, low, high; got 'ultra'"),
    S(CHAT, ANY, CM("{'role':'user','content':[{'type':'input_audio','input_audio':{'data':'x','format':'flac'}}]}"),
      "messages[0].content[0].input_audio.format", "must be one of wav, mp3; got 'flac'"),
    S(CHAT, ANY, CM("{'role':'user','content':[{'type':'file','file':{'filename':'a.pdf'}}]}"),
      "messages[0].content[0].file", "must have file_data"),
    S(CHAT, ANY, CM(HI ",{'role':'assistant','content':[{'type':'image_url','image_url':{'url':'u'}}]}"),
      "messages[1].content[0].type", "must be one of text, refusal; got 'image_url'"),
    S(CHAT, ANY, CM("{'role':'user','content':'x','name':5}"), "messages[0].name", "must be a string, got a number"),
    /* assistant tool calls */
    S(CHAT, ANY, CM(HI ",{'role':'assistant'}"), "messages[1].content",
      "is required when the assistant message has no tool_calls"),
    S(CHAT, ANY, CM(HI ",{'role':'assistant','content':null,'tool_calls':null}"), "messages[1].content",
      "is required when the assistant message has no tool_calls"),
    X(CHAT, ANY,
      CM(HI ",{'role':'assistant','tool_calls':[{'id':'c','type':'function','function':{'name':'f',"
            "'arguments':{'city':'Paris'}}}]}"),
      "messages[1].tool_calls[0].function.arguments",
      "messages[1].tool_calls[0].function.arguments must be a string (JSON text), got an object"),
    S(CHAT, ANY, CM(HI ",{'role':'assistant','tool_calls':[{'id':'c','type':'func','function':{}}]}"),
      "messages[1].tool_calls[0].type", "must be one of function, custom; got 'func'"),
    S(CHAT, ANY,
      CM(HI ",{'role':'assistant','tool_calls':[{'type':'function','function':{'name':'f','arguments':''}}]}"),
      "messages[1].tool_calls[0].id", "is required"),
    S(CHAT, ANY, CM(HI ",{'role':'assistant','tool_calls':[{'id':'c','type':'function','function':{'name':'f'}}]}"),
      "messages[1].tool_calls[0].function.arguments", "is required"),
    S(CHAT, ANY, CM(HI ",{'role':'assistant','tool_calls':[{'id':'c','type':'custom','custom':{'name':'g'}}]}"),
      "messages[1].tool_calls[0].custom.input", "is required"),
    S(CHAT, ANY, CM(HI ",{'role':'assistant','content':'x','tool_calls':[]}"), "messages[1].tool_calls",
      "must not be an empty array"),
    S(CHAT, ANY, CM(HI ",{'role':'assistant','content':'x','tool_calls':{}}"), "messages[1].tool_calls",
      "must be an array of tool calls, got an object"),
    /* tool messages */
    S(CHAT, ANY, CM(HI "," TWO_CALLS ",{'role':'tool','content':'x'}"), "messages[2].tool_call_id", "is required"),
    X(CHAT, ANY,
      CM(HI "," TWO_CALLS ",{'role':'tool','tool_call_id':'call_a','content':'x'},"
            "{'role':'tool','tool_call_id':'call_x','content':'y'}"),
      "messages[3].tool_call_id",
      "messages[3].tool_call_id 'call_x' answers no tool call of an earlier assistant message; "
      "awaiting answers: call_b"),
    S(CHAT, ANY, CM(HI ",{'role':'tool','tool_call_id':'call_a','content':'x'}," TWO_CALLS), "messages[1].tool_call_id",
      "'call_a' answers no tool call of an earlier assistant message; no tool calls"),
    S(CHAT, ANY, CM(HI "," TWO_CALLS ",{'role':'tool','tool_call_id':'call_a','content':5}"), "messages[2].content",
      "must be a string or an array of text parts, got a number"),
    S(CHAT, ANY, CM(HI "," TWO_CALLS ",{'role':'tool','tool_call_id':7,'content':'x'}"), "messages[2].tool_call_id",
      "must be a string, got a number"),
    S(CHAT, ANY, CM(HI ",{'role':'function','content':'x'}"), "messages[1].name", "is required"),
    /* tools and tool_choice */
    S(CHAT, ANY, C("'tools':{}"), "tools", "must be an array of tools, got an object"),
    S(CHAT, ANY, C("'tools':[{'function':{'name':'f'}}]"), "tools[0].type",
      "is required; expected one of function, custom"),
    S(CHAT, ANY, C("'tools':[{'type':'function'}]"), "tools[0].function", "is required when type is 'function'"),
    S(CHAT, ANY, C("'tools':[{'type':'function','function':{'name':'get weather'}}]"), "tools[0].function.name",
      "^[a-zA-Z0-9_-]{1,64}$"),
    S(CHAT, ANY, C("'tools':[{'type':'function','function':{'name':'" NAME65 "'}}]"), "tools[0].function.name",
      "{1,64}$); got 65 characters"),
    S(CHAT, ANY, C("'tools':[{'type':'function','function':{'name':''}}]"), "tools[0].function.name",
      "must be 1 to 64 letters"),
    S(CHAT, ANY, C("'tools':[{'type':'function','function':{'description':'d'}}]"), "tools[0].function.name",
      "is required"),
    S(CHAT, ANY, C("'tools':[{'type':'function','function':{'name':'f','parameters':{'type':'array'}}}]"),
      "tools[0].function.parameters.type", "must be 'object' (the arguments are a JSON object); got 'array'"),
    S(CHAT, ANY, C("'tools':[{'type':'function','function':{'name':'f','parameters':'{}'}}]"),
      "tools[0].function.parameters", "must be a JSON Schema object, got a string"),
    S(CHAT, ANY, C("'tools':[{'type':'function','function':{'name':'f','description':5}}]"),
      "tools[0].function.description", "must be a string, got a number"),
    S(CHAT, ANY, C("'tools':[{'type':'function','function':{'name':'f','strict':'yes'}}]"), "tools[0].function.strict",
      "must be true or false, got a string"),
    S(CHAT, ANY,
      C("'tools':[{'type':'function','function':{'name':'get_weather'}},"
        "{'type':'function','function':{'name':'get_weather'}}]"),
      "tools[1].function.name", "'get_weather' is already defined by tools[0]"),
    X(CHAT, ANY, C(WEATHER_TOOLS ",'tool_choice':{'type':'function','function':{'name':'get_wether'}}"), "tool_choice",
      "tool_choice names function 'get_wether', which is not in tools; defined: get_weather, get_time"),
    X(CHAT, ANY, C("'tool_choice':'required'"), "tool_choice",
      "tool_choice is 'required' but the request defines no tools"),
    S(CHAT, ANY, C("'tool_choice':{'type':'function','function':{'name':'f'}}"), "tool_choice",
      "names function 'f', but the request defines no tools"),
    S(CHAT, ANY, C("'tools':[],'tool_choice':'required'"), "tool_choice", "defines no tools"),
    S(CHAT, ANY, C("'tool_choice':'any'"), "tool_choice", "must be one of none, auto, required; got 'any'"),
    S(CHAT, ANY, C("'tool_choice':1"), "tool_choice",
      "must be none, auto, required or an object naming a tool, got a number"),
    S(CHAT, ANY, C(WEATHER_TOOLS ",'tool_choice':{'type':'function','function':{}}"), "tool_choice.function.name",
      "is required"),
    S(CHAT, ANY,
      C(WEATHER_TOOLS ",'tool_choice':{'type':'allowed_tools','allowed_tools':{'mode':'auto','tools':["
                      "{'type':'function','function':{'name':'get_time'}},"
                      "{'type':'function','function':{'name':'nope'}}]}}"),
      "tool_choice.allowed_tools.tools[1]", "names function 'nope', which is not in tools"),
    S(CHAT, ANY, C(WEATHER_TOOLS ",'tool_choice':{'type':'allowed_tools','allowed_tools':{'mode':'all','tools':[]}}"),
      "tool_choice.allowed_tools.mode", "must be one of auto, required; got 'all'"),
    S(CHAT, ANY, C("'parallel_tool_calls':'yes'"), "parallel_tool_calls", "must be true or false, got a string"),
    S(CHAT, ANY, C("'functions':[{'name':'a b'}]"), "functions[0].name", "must be 1 to 64 letters"),
    S(CHAT, ANY, C("'function_call':'required'"), "function_call", "must be one of none, auto; got 'required'"),
    /* streaming */
    S(CHAT, ANY, C("'stream':1"), "stream", "must be true or false, got a number"),
    X(CHAT, ANY, C("'stream_options':{'include_usage':true}"), "stream_options",
      "stream_options is only allowed when stream is true"),
    S(CHAT, ANY, C("'stream':false,'stream_options':{'include_usage':true}"), "stream_options",
      "only allowed when stream is true"),
    S(CHAT, ANY, C("'stream':true,'stream_options':{'include_usage':'yes'}"), "stream_options.include_usage",
      "must be true or false, got a string"),
    S(CHAT, ANY, C("'stream':true,'stream_options':{'include_obfuscation':0}"), "stream_options.include_obfuscation",
      "got a number"),
    S(CHAT, ANY, C("'stream':true,'stream_options':true"), "stream_options", "must be an object, got a boolean"),
    /* numbers */
    X(CHAT, ANY, C("'temperature':2.5"), "temperature", "temperature must be a number between 0 and 2; got 2.5"),
    S(CHAT, ANY, C("'temperature':'hot'"), "temperature", "must be a number between 0 and 2, got a string"),
    S(CHAT, ANY, C("'top_p':1.5"), "top_p", "must be a number between 0 and 1; got 1.5"),
    S(CHAT, ANY, C("'frequency_penalty':-3"), "frequency_penalty", "must be a number between -2 and 2; got -3"),
    S(CHAT, ANY, C("'presence_penalty':2.1"), "presence_penalty", "between -2 and 2; got 2.1"),
    X(CHAT, ANY, C("'n':0"), "n", "n must be an integer from 1 to 128; got 0"),
    S(CHAT, ANY, C("'n':129"), "n", "got 129"),
    S(CHAT, ANY, C("'n':1.5"), "n", "must be an integer from 1 to 128; got 1.5"),
    S(CHAT, ANY, C("'max_tokens':0"), "max_tokens", "must be an integer of at least 1; got 0"),
    S(CHAT, ANY, C("'max_tokens':'100'"), "max_tokens", "must be an integer of at least 1, got a string"),
    X(CHAT, LIMITED, C("'max_tokens':8000"), "max_tokens", "max_tokens 8000 exceeds this model's limit of 4096"),
    X(CHAT, LIMITED, C("'max_completion_tokens':5000"), "max_completion_tokens",
      "max_completion_tokens 5000 exceeds this model's limit of 4096"),
    S(CHAT, ANY, C("'max_completion_tokens':-1"), "max_completion_tokens", "at least 1; got -1"),
    X(CHAT, ANY, C("'seed':'42'"), "seed", "seed must be an integer, got a string"),
    S(CHAT, ANY, C("'logprobs':'true'"), "logprobs", "must be true or false, got a string"),
    S(CHAT, ANY, C("'logprobs':true,'top_logprobs':21"), "top_logprobs", "must be an integer from 0 to 20; got 21"),
    X(CHAT, ANY, C("'top_logprobs':5"), "top_logprobs", "top_logprobs requires logprobs to be true"),
    S(CHAT, ANY, C("'top_logprobs':5,'logprobs':false"), "top_logprobs", "requires logprobs to be true"),
    S(CHAT, ANY, C("'logit_bias':{'hello':5}"), "logit_bias.hello", "is not a token id"),
    S(CHAT, ANY, C("'logit_bias':{'50256':150}"), "logit_bias.50256", "must be a number between -100 and 100; got 150"),
    S(CHAT, ANY, C("'logit_bias':{'50256':'x'}"), "logit_bias.50256", "got a string"),
    S(CHAT, ANY, C("'logit_bias':[1]"), "logit_bias", "must be an object mapping token ids to biases, got an array"),
    /* strings, enums and objects */
    S(CHAT, ANY, C("'stop':['a','b','c','d','e']"), "stop", "has 5 sequences; at most 4 are allowed"),
    S(CHAT, ANY, C("'stop':[1]"), "stop[0]", "must be a string, got a number"),
    S(CHAT, ANY, C("'stop':7"), "stop", "must be a string or an array of at most 4 strings, got a number"),
    S(CHAT, ANY, C("'user':5"), "user", "must be a string, got a number"),
    S(CHAT, ANY, C("'metadata':{'k':5}"), "metadata.k", "must be a string, got a number"),
    S(CHAT, ANY,
      C("'metadata':{'a':'','b':'','c':'','d':'','e':'','f':'','g':'','h':'','i':'','j':'','k':'','l':'','m':'',"
        "'n':'','o':'','p':'','q':''}"),
      "metadata", "has 17 pairs; at most 16 are allowed"),
    S(CHAT, ANY, C("'metadata':'x'"), "metadata", "must be an object of string values, got a string"),
    S(CHAT, ANY, C("'store':'no'"), "store", "must be true or false"),
    X(CHAT, ANY, C("'reasoning_effort':'max'"), "reasoning_effort",
      "reasoning_effort must be one of none, minimal, low, medium, high, xhigh; got 'max'"),
    S(CHAT, ANY, C("'verbosity':3"), "verbosity", "must be one of low, medium, high, got a number"),
    S(CHAT, ANY, C("'modalities':['text','video']"), "modalities[1]", "must be one of text, audio; got 'video'"),
    S(CHAT, ANY, C("'modalities':'text'"), "modalities", "got a string"),
    S(CHAT, ANY, C("'service_tier':1"), "service_tier", "must be a string, got a number"),
    S(CHAT, ANY, C("'prediction':{'type':'content'}"), "prediction.content", "is required"),
    S(CHAT, ANY, C("'prediction':{'type':'diff','content':'x'}"), "prediction.type", "must be 'content'; got 'diff'"),
    S(CHAT, ANY, C("'audio':'alloy'"), "audio", "must be an object, got a string"),
    S(CHAT, ANY, C("'audio':{'voice':'alloy','format':'ogg'}"), "audio.format",
      "must be one of wav, aac, mp3, flac, opus, pcm16; got 'ogg'"),
    S(CHAT, ANY, C("'web_search_options':{'search_context_size':'huge'}"), "web_search_options.search_context_size",
      "must be one of low, medium, high; got 'huge'"),
    S(CHAT, ANY, C("'web_search_options':[]"), "web_search_options", "must be an object, got an array"),
    /* response_format */
    S(CHAT, ANY, C("'response_format':{'type':'xml'}"), "response_format.type",
      "must be one of text, json_object, json_schema; got 'xml'"),
    S(CHAT, ANY, C("'response_format':'json'"), "response_format", "must be an object with a type, got a string"),
    S(CHAT, ANY, C("'response_format':{'type':'json_schema'}"), "response_format.json_schema",
      "is required when type is 'json_schema'"),
    S(CHAT, ANY, C("'response_format':{'type':'json_schema','json_schema':{'schema':{}}}"),
      "response_format.json_schema.name", "is required"),
    S(CHAT, ANY, C("'response_format':{'type':'json_schema','json_schema':{'name':'my schema'}}"),
      "response_format.json_schema.name", "^[a-zA-Z0-9_-]{1,64}$"),
    S(CHAT, ANY, C("'response_format':{'type':'json_schema','json_schema':{'name':'s','schema':'{}'}}"),
      "response_format.json_schema.schema", "must be a JSON Schema object, got a string"),
    S(CHAT, ANY, C("'response_format':{'type':'json_schema','json_schema':{'name':'s','strict':'yes'}}"),
      "response_format.json_schema.strict", "must be true or false"),
    /* unknown fields and order */
    X(CHAT, STRICT, C("'foo':1"), "foo",
      "foo is not part of the OpenAI chat completions API, and this model refuses fields the API does not define"),
    S(CHAT, ANY, "{'model':'m','temperature':5," USER_HI ",'top_p':7}", "temperature", "got 5"),
    S(CHAT, ANY, "{'top_p':7,'model':'m','temperature':5," USER_HI "}", "top_p", "got 7"),
    S(CHAT, ANY, "{'model':'m','tool_choice':'required'," USER_HI ",'temperature':9}", "temperature", "got 9"),
    S(CHAT, ANY, "{'messages':[{'role':'bot'}]}", "model", "is required"),
    /* completions */
    X(COMPLETION, ANY, "{'model':'m'}", "prompt", "prompt is required"),
    S(COMPLETION, ANY, "{'model':'m','prompt':{}}", "prompt",
      "must be a string, an array of strings, an array of token ids or an array of token-id arrays, got an object"),
    S(COMPLETION, ANY, "{'model':'m','prompt':['a',1]}", "prompt[1]",
      "must be a string like the first item, got a number"),
    S(COMPLETION, ANY, "{'model':'m','prompt':[1,'a']}", "prompt[1]", "must be a token id"),
    S(COMPLETION, ANY, "{'model':'m','prompt':[[1,2],[-1]]}", "prompt[1][0]", "must be a token id"),
    S(COMPLETION, ANY, "{'model':'m','prompt':[[1],[]]}", "prompt[1]", "must not be an empty array of token ids"),
    S(COMPLETION, ANY, "{'model':'m','prompt':[{}]}", "prompt[0]",
      "must be a string, a token id or an array of token ids, got an object"),
    S(COMPLETION, ANY, "{'model':'m','prompt':[]}", "prompt", "must not be an empty array"),
    S(COMPLETION, ANY, "{'model':'m','prompt':'x','logprobs':6}", "logprobs", "must be an integer from 0 to 5; got 6"),
    S(COMPLETION, ANY, "{'model':'m','prompt':'x','logprobs':true}", "logprobs", "got a boolean"),
    X(COMPLETION, ANY, "{'model':'m','prompt':'x','best_of':1,'n':2}", "best_of", "best_of 1 must be at least n (2)"),
    S(COMPLETION, ANY, "{'model':'m','prompt':'x','best_of':0}", "best_of", "must be at least n (1)"),
    S(COMPLETION, ANY, "{'model':'m','prompt':'x','echo':'yes'}", "echo", "must be true or false"),
    S(COMPLETION, ANY, "{'model':'m','prompt':'x','suffix':1}", "suffix", "must be a string, got a number"),
    S(COMPLETION, ANY, "{'model':'m','prompt':'x','max_tokens':-1}", "max_tokens", "at least 0; got -1"),
    X(COMPLETION, LIMITED, "{'model':'m','prompt':'x','max_tokens':5000}", "max_tokens",
      "max_tokens 5000 exceeds this model's limit of 4096"),
    S(COMPLETION, ANY, "{'model':'m','prompt':'x','stream_options':{}}", "stream_options",
      "only allowed when stream is true"),
    S(COMPLETION, ANY, "{'model':'m','prompt':'x','stop':['a','b','c','d','e']}", "stop", "at most 4"),
    S(COMPLETION, STRICT, "{'model':'m','prompt':'x','messages':[]}", "messages",
      "messages is not part of the OpenAI completions API"),
    /* embeddings */
    X(EMBEDDINGS, ANY, "{'model':'e'}", "input", "input is required"),
    S(EMBEDDINGS, ANY, "{'input':'x'}", "model", "is required"),
    S(EMBEDDINGS, ANY, "{'model':'e','input':''}", "input", "must not be an empty string"),
    S(EMBEDDINGS, ANY, "{'model':'e','input':['a','']}", "input[1]", "must not be an empty string"),
    S(EMBEDDINGS, ANY, "{'model':'e','input':[]}", "input", "must not be an empty array"),
    S(EMBEDDINGS, ANY, "{'model':'e','input':[[]]}", "input[0]", "must not be an empty array of token ids"),
    S(EMBEDDINGS, ANY, "{'model':'e','input':5}", "input", "got a number"),
    S(EMBEDDINGS, ANY, "{'model':'e','input':'x','encoding_format':'int8'}", "encoding_format",
      "must be one of float, base64; got 'int8'"),
    S(EMBEDDINGS, ANY, "{'model':'e','input':'x','dimensions':0}", "dimensions",
      "must be an integer of at least 1; got 0"),
    S(EMBEDDINGS, ANY, "{'model':'e','input':'x','user':5}", "user", "must be a string"),
    S(EMBEDDINGS, STRICT, "{'model':'e','input':'x','temperature':1}", "temperature",
      "not part of the OpenAI embeddings API"),
};

static void
invalid_bodies_fail_with_path(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof invalid_cases / sizeof invalid_cases[0]; i++) {
        const invalid_case_t *t = &invalid_cases[i];
        json_t *body = parse(t->body);
        mg_invalid_t out;
        memset(&out, 'x', sizeof out);
        bool ok = run(t->api, body, t->model, &out);
        bool message_ok = t->exact ? strcmp(out.message, t->message) == 0 : strstr(out.message, t->message) != NULL;
        if (ok || strcmp(out.param, t->param) != 0 || !message_ok) {
            print_error("invalid case %zu %s\n  want param '%s', message %s '%s'\n  got  %s param '%s': %s\n", i,
                        t->body, t->param, t->exact ? "equal to" : "containing", t->message, ok ? "valid," : "invalid,",
                        ok ? "" : out.param, ok ? "" : out.message);
            failures++;
        }
        json_decref(body);
    }
    assert_int_equal(failures, 0);
}

/* More than 2048 embeddings inputs. */
static void
embeddings_input_limit(void **state)
{
    (void)state;
    json_t *body = json_pack("{s:s, s:[]}", "model", "e", "input");
    json_t *input = json_object_get(body, "input");
    for (int i = 0; i < 2048; i++)
        json_array_append_new(input, json_string("x"));
    mg_invalid_t out;
    assert_true(mg_validate_embeddings(body, NULL, &out));
    json_array_append_new(input, json_string("x"));
    assert_false(mg_validate_embeddings(body, NULL, &out));
    assert_string_equal(out.param, "input");
    assert_string_equal(out.message, "input has 2049 items; at most 2048 are allowed");
    json_decref(body);
}

/* A path longer than error.param holds is cut, and the message stays a terminated string. */
static void
long_paths_are_cut(void **state)
{
    (void)state;
    char key[600];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    json_t *body = json_pack("{s:s, s:[{s:s, s:s}], s:{s:i}}", "model", "m", "messages", "role", "user", "content",
                             "hi", "metadata", key, 1);
    mg_invalid_t out;
    assert_false(mg_validate_chat(body, NULL, &out));
    assert_int_equal(strlen(out.param), sizeof out.param - 1);
    assert_memory_equal(out.param, "metadata.kkk", 12);
    assert_true(strlen(out.message) < sizeof out.message);
    json_decref(body);

    body = json_pack("{s:s, s:[{s:s, s:s}], s:i}", "model", "m", "messages", "role", "user", "content", "hi", key, 1);
    assert_false(mg_validate_chat(body, &strict_model, &out));
    assert_int_equal(strlen(out.param), sizeof out.param - 1);
    json_decref(body);
}

/* A tool message in a long conversation finds its call, and the awaiting list is cut, not overrun. */
static void
many_tool_calls(void **state)
{
    (void)state;
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", "go"));
    json_t *calls = json_array();
    for (int i = 0; i < 100; i++) {
        char id[32];
        snprintf(id, sizeof id, "call_%03d_abcdefgh", i);
        json_array_append_new(calls, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function",
                                               "name", "f", "arguments", "{}"));
    }
    json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", "assistant", "tool_calls", calls));
    json_array_append_new(
        msgs, json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", "call_099_abcdefgh", "content", "ok"));
    json_t *body = json_pack("{s:s, s:o}", "model", "m", "messages", msgs);
    mg_invalid_t out;
    assert_true(mg_validate_chat(body, NULL, &out));

    json_array_append_new(msgs, json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", "nope", "content", "x"));
    assert_false(mg_validate_chat(body, NULL, &out));
    assert_string_equal(out.param, "messages[3].tool_call_id");
    assert_non_null(strstr(out.message, "awaiting answers: call_000_abcdefgh, call_001_abcdefgh"));
    assert_null(strstr(out.message, "call_099_abcdefgh"));
    assert_non_null(strstr(out.message, "..."));
    json_decref(body);
}

/* A NULL body (a request that did not parse) is refused, not crashed on. */
static void
null_body(void **state)
{
    (void)state;
    mg_invalid_t out;
    assert_false(mg_validate_chat(NULL, NULL, &out));
    assert_string_equal(out.param, "");
    assert_string_equal(out.message, "the request body must be a JSON object, got null");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_bodies_pass),      cmocka_unit_test(invalid_bodies_fail_with_path),
        cmocka_unit_test(embeddings_input_limit), cmocka_unit_test(long_paths_are_cut),
        cmocka_unit_test(many_tool_calls),        cmocka_unit_test(null_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
