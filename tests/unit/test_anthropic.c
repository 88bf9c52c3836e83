#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anthropic.h"

/*
 * JSON in these tests is written with single quotes ('model':'m'), turned into double quotes by
 * J(); a double quote inside a JSON string is written \\' (it becomes \").
 */

static json_t *
J(const char *text)
{
    char *s = strdup(text);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t err;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &err);
    if (v == NULL)
        fail_msg("bad test JSON (%s) at %d: %s", err.text, err.position, s);
    free(s);
    return v;
}

static void
assert_json(json_t *got, const char *want_text)
{
    json_t *want = J(want_text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        char *w = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
        print_error("got:  %s\nwant: %s\n", g ? g : "NULL", w);
        free(g);
        free(w);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

#define BASE "{'model':'claude-x','max_tokens':64,"

/* ---- requests ---- */

/* Translates body; it must be accepted, leave the body as it was, and give a chat body the
 * gateway's chat validator accepts. */
static json_t *
translate(const char *body_text, const tp_model_config_t *model)
{
    json_t *body = J(body_text);
    json_t *copy = json_deep_copy(body);
    json_t *chat = NULL;
    mg_invalid_t inv;
    bool ok = mg_anthropic_request(body, model, &chat, &inv);
    if (!ok)
        fail_msg("refused: param '%s': %s\nbody: %s", inv.param, inv.message, body_text);
    assert_non_null(chat);
    assert_string_equal(inv.param, "");
    assert_true(json_equal(body, copy));
    mg_invalid_t chat_inv;
    if (!mg_validate_chat(chat, NULL, &chat_inv)) {
        char *t = json_dumps(chat, JSON_COMPACT);
        fail_msg("chat body invalid at %s: %s\n%s", chat_inv.param, chat_inv.message, t);
    }
    json_decref(body);
    json_decref(copy);
    return chat;
}

typedef struct refusal {
    const char *body;
    const char *param;
    const char *says; /* a piece of the message */
} refusal_t;

static const refusal_t refusals[] = {
    { "[1]", "", "must be a JSON object" },
    { "{'max_tokens':5,'messages':[{'role':'user','content':'hi'}]}", "model", "field required" },
    { "{'model':5,'max_tokens':5,'messages':[{'role':'user','content':'hi'}]}", "model", "must be a string" },
    { "{'model':'','max_tokens':5,'messages':[{'role':'user','content':'hi'}]}", "model", "non-empty" },
    { "{'model':'m','messages':[{'role':'user','content':'hi'}]}", "max_tokens", "field required" },
    { "{'model':'m','max_tokens':null,'messages':[{'role':'user','content':'hi'}]}", "max_tokens", "field required" },
    { "{'model':'m','max_tokens':0,'messages':[{'role':'user','content':'hi'}]}", "max_tokens", "at least 1" },
    { "{'model':'m','max_tokens':1.5,'messages':[{'role':'user','content':'hi'}]}", "max_tokens", "integer" },
    { "{'model':'m','max_tokens':'9','messages':[{'role':'user','content':'hi'}]}", "max_tokens", "got a string" },
    { "{'model':'m','max_tokens':5001,'messages':[{'role':'user','content':'hi'}]}", "max_tokens", "limit of 5000" },
    { "{'model':'m','max_tokens':5}", "messages", "field required" },
    { BASE "'messages':[]}", "messages", "at least one" },
    { BASE "'messages':'hi'}", "messages", "array" },
    { BASE "'messages':['hi']}", "messages.0", "object" },
    { BASE "'messages':[{'content':'hi'}]}", "messages.0.role", "field required" },
    { BASE "'messages':[{'role':'system','content':'hi'}]}", "messages.0.role", "top-level system" },
    { BASE "'messages':[{'role':'bot','content':'hi'}]}", "messages.0.role", "'bot'" },
    { BASE "'messages':[{'role':'user'}]}", "messages.0.content", "field required" },
    { BASE "'messages':[{'role':'user','content':5}]}", "messages.0.content", "string or an array" },
    { BASE "'messages':[{'role':'user','content':[]}]}", "messages.0.content", "at least one" },
    { BASE "'messages':[{'role':'user','content':['hi']}]}", "messages.0.content.0", "content block" },
    { BASE "'messages':[{'role':'user','content':[{'text':'hi'}]}]}", "messages.0.content.0.type", "required" },
    { BASE "'messages':[{'role':'user','content':[{'type':'video'}]}]}", "messages.0.content.0.type",
      "one of text, image, tool_result" },
    { BASE "'messages':[{'role':'user','content':[{'type':'text'}]}]}", "messages.0.content.0.text", "required" },
    { BASE "'messages':[{'role':'user','content':[{'type':'text','text':5}]}]}", "messages.0.content.0.text",
      "string" },
    { BASE "'messages':[{'role':'user','content':[{'type':'image'}]}]}", "messages.0.content.0.source", "required" },
    { BASE "'messages':[{'role':'user','content':[{'type':'image','source':{'type':'file','file_id':'f'}}]}]}",
      "messages.0.content.0.source.type", "Files API" },
    { BASE "'messages':[{'role':'user','content':[{'type':'image','source':{'type':'ftp'}}]}]}",
      "messages.0.content.0.source.type", "base64, url" },
    { BASE "'messages':[{'role':'user','content':[{'type':'image','source':{'type':'base64','media_type':'image/"
           "bmp','data':'AA'}}]}]}",
      "messages.0.content.0.source.media_type", "image/jpeg" },
    { BASE "'messages':[{'role':'user','content':[{'type':'image','source':{'type':'base64','media_type':'image/"
           "png'}}]}]}",
      "messages.0.content.0.source.data", "required" },
    { BASE "'messages':[{'role':'user','content':[{'type':'image','source':{'type':'url'}}]}]}",
      "messages.0.content.0.source.url", "required" },
    { BASE "'messages':[{'role':'user','content':[{'type':'document','source':{'type':'text','data':'x'}}]}]}",
      "messages.0.content.0.type", "chat completions" },
    { BASE "'messages':[{'role':'user','content':[{'type':'web_search_tool_result','tool_use_id':'s'}]}]}",
      "messages.0.content.0.type", "runs no tools" },
    { BASE "'messages':[{'role':'user','content':[{'type':'tool_use','id':'a','name':'f','input':{}}]}]}",
      "messages.0.content.0.type", "assistant messages" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_result','tool_use_id':'a'}]}]}",
      "messages.0.content.0.type", "user messages" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'image','source':{'type':'url','url':'u'}}]}]}",
      "messages.0.content.0.type", "user messages" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','name':'f','input':{}}]}]}",
      "messages.0.content.0.id", "required" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','input':{}}]}]}",
      "messages.0.content.0.name", "required" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f'}]}]}",
      "messages.0.content.0.input", "required" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':'{}'}]}]}",
      "messages.0.content.0.input", "must be an object" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':{}},"
           "{'type':'tool_use','id':'a','name':'g','input':{}}]},"
           "{'role':'user','content':[{'type':'tool_result','tool_use_id':'a'}]}]}",
      "messages.0.content.1.id", "unique" },
    { BASE "'messages':[{'role':'user','content':'hi'},"
           "{'role':'user','content':[{'type':'tool_result','tool_use_id':'a','content':'x'}]}]}",
      "messages.1.content.0.tool_use_id", "answers no tool_use" },
    { BASE "'messages':[{'role':'user','content':[{'type':'tool_result','tool_use_id':'a'}]}]}",
      "messages.0.content.0.tool_use_id", "answers no tool_use" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':{}}]},"
           "{'role':'user','content':[{'type':'tool_result','tool_use_id':'b'}]}]}",
      "messages.1.content.0.tool_use_id", "messages.0" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':{}}]},"
           "{'role':'user','content':[{'type':'tool_result','tool_use_id':'a'},"
           "{'type':'tool_result','tool_use_id':'a'}]}]}",
      "messages.1.content.1.tool_use_id", "twice" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':{}}]},"
           "{'role':'user','content':[{'type':'tool_result','tool_use_id':'a','content':"
           "[{'type':'image','source':{'type':'url','url':'u'}}]}]}]}",
      "messages.1.content.0.content.0.type", "text only" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':{}}]},"
           "{'role':'user','content':[{'type':'tool_result','tool_use_id':'a','content':7}]}]}",
      "messages.1.content.0.content", "string or an array" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':{}}]},"
           "{'role':'user','content':[{'type':'tool_result','tool_use_id':'a','is_error':'yes'}]}]}",
      "messages.1.content.0.is_error", "true or false" },
    { BASE "'messages':[{'role':'user','content':'go'},"
           "{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':{}},"
           "{'type':'tool_use','id':'b','name':'f','input':{}}]},"
           "{'role':'user','content':[{'type':'tool_result','tool_use_id':'a'},{'type':'text','text':'hm'}]}]}",
      "messages.2", "tool_use 'b' of messages.1" },
    { BASE "'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':{}}]},"
           "{'role':'assistant','content':'and?'}]}",
      "messages.1", "tool_use 'a' of messages.0" },
    { BASE "'messages':[{'role':'user','content':'go'},"
           "{'role':'assistant','content':[{'type':'tool_use','id':'a','name':'f','input':{}}]}]}",
      "messages.1", "nothing answers" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'system':5}", "system", "string or an array" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'system':[{'type':'image','source':{}}]}", "system.0.type",
      "must be one of text" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'system':[{'type':'text'}]}", "system.0.text", "required" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':{}}", "tools", "array" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[5]}", "tools.0", "must be a tool" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'input_schema':{'type':'object'}}]}", "tools.0.name",
      "required" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'name':'get weather','input_schema':{'type':"
           "'object'}}]}",
      "tools.0.name", "a-zA-Z0-9_-" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'name':'"
           "a123456789a123456789a123456789a123456789a123456789a123456789abcde','input_schema':{'type':'object'}}]}",
      "tools.0.name", "65 characters" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'name':'f','input_schema':{'type':'object'}},"
           "{'name':'f','input_schema':{'type':'object'}}]}",
      "tools.1.name", "unique" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'name':'f'}]}", "tools.0.input_schema", "required" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'name':'f','input_schema':[]}]}",
      "tools.0.input_schema", "JSON Schema object" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'name':'f','input_schema':{'type':'array'}}]}",
      "tools.0.input_schema.type", "'object'" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'name':'f','description':5,'input_schema':{'type':"
           "'object'}}]}",
      "tools.0.description", "string" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'type':'web_search_20250305','name':'web_"
           "search'}]}",
      "tools.0.type", "runs no tools" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'type':'bash_20250124','name':'bash'}]}",
      "tools.0.type", "server tools" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'type':'text_editor_20250728','name':'str_"
           "replace_based_edit_tool'}]}",
      "tools.0.type", "runs no tools" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tool_choice':'auto'}", "tool_choice", "object" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tool_choice':{}}", "tool_choice.type", "required" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tool_choice':{'type':'sometimes'}}", "tool_choice.type",
      "auto, any, tool, none" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'name':'f','input_schema':{'type':'object'}}],"
           "'tool_choice':{'type':'tool'}}",
      "tool_choice.name", "required" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tool_choice':{'type':'tool','name':'g'},"
           "'tools':[{'name':'f','input_schema':{'type':'object'}}]}",
      "tool_choice.name", "'g' is not the name" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tool_choice':{'type':'any'}}", "tool_choice",
      "defines no tools" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'tool_choice':{'type':'auto','disable_parallel_tool_use':"
           "'yes'}}",
      "tool_choice.disable_parallel_tool_use", "true or false" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'temperature':1.5}", "temperature", "between 0 and 1" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'temperature':'hot'}", "temperature", "got a string" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'top_p':-0.1}", "top_p", "between 0 and 1" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'top_k':-1}", "top_k", "at least 0" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'top_k':2.5}", "top_k", "at least 0" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'stop_sequences':'END'}", "stop_sequences", "array" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'stop_sequences':['a','']}", "stop_sequences.1", "non-empty" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'stop_sequences':[5]}", "stop_sequences.0", "string" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'stream':'yes'}", "stream", "true or false" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'metadata':'u'}", "metadata", "object" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'metadata':{'user_id':5}}", "metadata.user_id", "string" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'thinking':true}", "thinking", "object" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'mcp_servers':[{'type':'url','url':'u','name':'n'}]}",
      "mcp_servers", "runs no tools" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'container':'c1'}", "container", "runs no tools" },
};

/* refused when the model refuses what it would have to drop (deny_unknown_fields) */
static const refusal_t strict_refusals[] = {
    { BASE "'messages':[{'role':'user','content':'hi'}],'fancy':1}", "fancy", "refuses fields" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'service_tier':'auto'}", "service_tier", "refuses" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'top_k':5}", "top_k", "refuses" },
    { BASE "'messages':[{'role':'user','content':'hi'}],'thinking':{'type':'enabled','budget_tokens':1024}}",
      "thinking", "refuses" },
};

static void
check_refusals(const refusal_t *table, size_t n, const tp_model_config_t *model)
{
    for (size_t i = 0; i < n; i++) {
        const refusal_t *r = &table[i];
        json_t *body = J(r->body);
        json_t *chat = (json_t *)&chat; /* must be set to NULL */
        mg_invalid_t inv;
        bool ok = mg_anthropic_request(body, model, &chat, &inv);
        if (ok || strcmp(inv.param, r->param) != 0 || strstr(inv.message, r->says) == NULL)
            fail_msg("case %zu: %s\n  ok=%d param '%s' (want '%s')\n  message '%s' (want '%s')", i, r->body, ok,
                     ok ? "" : inv.param, r->param, ok ? "" : inv.message, r->says);
        assert_null(chat);
        /* the message names the path, as Anthropic's do */
        if (*r->param) {
            char prefix[300];
            snprintf(prefix, sizeof prefix, "%s: ", r->param);
            assert_memory_equal(inv.message, prefix, strlen(prefix));
        }
        json_decref(body);
    }
}

static void
test_request_refusals(void **state)
{
    (void)state;
    tp_model_config_t lax = { .max_tokens = 5000 };
    tp_model_config_t strict = { .max_tokens = 5000, .deny_unknown_fields = true };
    check_refusals(refusals, sizeof refusals / sizeof refusals[0], &lax);
    check_refusals(strict_refusals, sizeof strict_refusals / sizeof strict_refusals[0], &strict);
    /* the same bodies pass where the model drops what it cannot take */
    for (size_t i = 0; i < sizeof strict_refusals / sizeof strict_refusals[0]; i++) {
        json_t *body = J(strict_refusals[i].body), *chat;
        mg_invalid_t inv;
        assert_true(mg_anthropic_request(body, &lax, &chat, &inv));
        json_decref(chat);
        json_decref(body);
    }
}

static const char *const accepted[] = {
    BASE "'messages':[{'role':'user','content':'hi'}]}",
    BASE "'messages':[{'role':'assistant','content':'I start'},{'role':'user','content':'go on'}]}",
    BASE "'messages':[{'role':'user','content':[{'type':'text','text':'hi','cache_control':{'type':'ephemeral'}}]}],"
         "'system':[{'type':'text','text':'Be brief.','cache_control':{'type':'ephemeral'}}]}",
    BASE "'messages':[{'role':'user','content':'hi'},{'role':'assistant','content':[{'type':'thinking','thinking':'"
         "hmm','signature':'sig'},{'type':'redacted_thinking','data':'xx'},{'type':'text','text':'Hello'}]},"
         "{'role':'user','content':'again'}]}",
    BASE "'messages':[{'role':'user','content':'hi'}],'temperature':0,'top_p':1,'top_k':0,'stream':false,"
         "'metadata':{'user_id':null},'stop_sequences':[],'tools':[],'system':'','thinking':{'type':'disabled'},"
         "'mcp_servers':[],'service_tier':'auto','tool_choice':null}",
    BASE "'messages':[{'role':'user','content':'hi'}],'tools':[{'type':'custom','name':'f','input_schema':{'type':"
         "'object'},'strict':true,'cache_control':{'type':'ephemeral'}}],'tool_choice':{'type':'none'}}",
};

static void
test_request_accepted(void **state)
{
    (void)state;
    tp_model_config_t lax = { .max_tokens = 64 };
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++)
        json_decref(translate(accepted[i], &lax));
    /* deny_unknown_fields still takes what maps, and thinking disabled */
    tp_model_config_t strict = { .deny_unknown_fields = true };
    json_decref(translate(BASE "'messages':[{'role':'user','content':'hi'}],'thinking':{'type':'disabled'},"
                               "'temperature':0.5,'metadata':{'user_id':'u1'},'stream':true}",
                          &strict));
    json_decref(translate(accepted[1], NULL));
}

static void
test_request_basic(void **state)
{
    (void)state;
    json_t *chat = translate(BASE "'messages':[{'role':'user','content':'hi'}],'system':'Be brief.',"
                                  "'temperature':0.2,'top_p':0.9,'top_k':40,'stop_sequences':['END','###'],"
                                  "'metadata':{'user_id':'user-7'},'stream':true,'unknown_thing':{'a':1}}",
                             NULL);
    assert_json(chat, "{'model':'claude-x','messages':[{'role':'system','content':'Be brief.'},"
                      "{'role':'user','content':'hi'}],'max_tokens':64,'temperature':0.2,'top_p':0.9,"
                      "'stop':['END','###'],'user':'user-7','stream':true,'stream_options':{'include_usage':true}}");
    /* model, messages and max_tokens lead, whatever the request's order */
    const char *first[] = { "model", "messages", "max_tokens" };
    void *it = json_object_iter(chat);
    for (size_t i = 0; i < 3; i++, it = json_object_iter_next(chat, it))
        assert_string_equal(json_object_iter_key(it), first[i]);
    json_decref(chat);

    chat = translate("{'stream':false,'messages':[{'role':'user','content':'hi'}],'max_tokens':3,'model':'m'}", NULL);
    assert_json(chat, "{'model':'m','messages':[{'role':'user','content':'hi'}],'max_tokens':3}");
    it = json_object_iter(chat);
    for (size_t i = 0; i < 3; i++, it = json_object_iter_next(chat, it))
        assert_string_equal(json_object_iter_key(it), first[i]);
    json_decref(chat);
}

static void
test_request_system_and_images(void **state)
{
    (void)state;
    json_t *chat = translate(
        BASE "'messages':[{'role':'user','content':[{'type':'text','text':'What is in these?'},"
             "{'type':'image','source':{'type':'base64','media_type':'image/png','data':'iVBORw0KGgo='}},"
             "{'type':'text','text':''},"
             "{'type':'image','source':{'type':'url','url':'https://example.com/cat.jpg'}}]},"
             "{'role':'assistant','content':[{'type':'text','text':'A chart'},{'type':'text','text':' and a cat.'}]},"
             "{'role':'user','content':[{'type':'text','text':'Thanks'}]}],"
             "'system':[{'type':'text','text':'You describe images.'},{'type':'text','text':'Be exact.'}]}",
        NULL);
    assert_json(chat, "{'model':'claude-x','messages':["
                      "{'role':'system','content':'You describe images.\\nBe exact.'},"
                      "{'role':'user','content':[{'type':'text','text':'What is in these?'},"
                      "{'type':'image_url','image_url':{'url':'data:image/png;base64,iVBORw0KGgo='}},"
                      "{'type':'image_url','image_url':{'url':'https://example.com/cat.jpg'}}]},"
                      "{'role':'assistant','content':'A chart and a cat.'},"
                      "{'role':'user','content':'Thanks'}],'max_tokens':64}");
    json_decref(chat);
}

static void
test_request_tool_round_trip(void **state)
{
    (void)state;
    json_t *chat = translate(
        BASE "'tools':[{'name':'get_weather','description':'Weather of a city','input_schema':{'type':'object',"
             "'properties':{'city':{'type':'string'}},'required':['city']}},"
             "{'name':'get_time','input_schema':{'type':'object'}}],"
             "'tool_choice':{'type':'auto','disable_parallel_tool_use':true},"
             "'messages':[{'role':'user','content':'Weather and time in Paris?'},"
             "{'role':'assistant','content':[{'type':'thinking','thinking':'two calls','signature':'s'},"
             "{'type':'text','text':'Let me check.'},"
             "{'type':'tool_use','id':'toolu_1','name':'get_weather','input':{'city':'Paris','units':['C']}},"
             "{'type':'tool_use','id':'toolu_2','name':'get_time','input':{}}]},"
             "{'role':'user','content':[{'type':'text','text':'Here you go.'},"
             "{'type':'tool_result','tool_use_id':'toolu_2','content':'timezone unknown','is_error':true},"
             "{'type':'tool_result','tool_use_id':'toolu_1','content':[{'type':'text','text':'18C'},"
             "{'type':'text','text':'sunny'}],'is_error':false}]},"
             "{'role':'assistant','content':[{'type':'tool_use','id':'toolu_3','name':'get_time','input':{}}]},"
             "{'role':'user','content':[{'type':'tool_result','tool_use_id':'toolu_3','is_error':true}]}]}",
        NULL);
    assert_json(
        chat, "{'model':'claude-x','messages':["
              "{'role':'user','content':'Weather and time in Paris?'},"
              "{'role':'assistant','content':'Let me check.','tool_calls':["
              "{'id':'toolu_1','type':'function','function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\',"
              "\\'units\\':[\\'C\\']}'}},"
              "{'id':'toolu_2','type':'function','function':{'name':'get_time','arguments':'{}'}}]},"
              "{'role':'tool','tool_call_id':'toolu_2','content':'Error: timezone unknown'},"
              "{'role':'tool','tool_call_id':'toolu_1','content':'18C\\nsunny'},"
              "{'role':'user','content':'Here you go.'},"
              "{'role':'assistant','content':null,'tool_calls':["
              "{'id':'toolu_3','type':'function','function':{'name':'get_time','arguments':'{}'}}]},"
              "{'role':'tool','tool_call_id':'toolu_3','content':'Error'}],"
              "'max_tokens':64,"
              "'tools':[{'type':'function','function':{'name':'get_weather','description':'Weather of a city',"
              "'parameters':{'type':'object','properties':{'city':{'type':'string'}},'required':['city']}}},"
              "{'type':'function','function':{'name':'get_time','parameters':{'type':'object'}}}],"
              "'tool_choice':'auto','parallel_tool_calls':false}");
    json_decref(chat);
}

static void
test_request_tool_choice(void **state)
{
    (void)state;
    static const struct {
        const char *choice;
        const char *want; /* tool_choice in the chat body, or NULL for none */
        bool serial;      /* parallel_tool_calls false */
    } cases[] = {
        { "{'type':'auto'}", "'auto'", false },
        { "{'type':'any'}", "'required'", false },
        { "{'type':'any','disable_parallel_tool_use':true}", "'required'", true },
        { "{'type':'tool','name':'f'}", "{'type':'function','function':{'name':'f'}}", false },
        { "{'type':'tool','name':'f','disable_parallel_tool_use':true}", "{'type':'function','function':{'name':'f'}}",
          true },
        { "{'type':'none'}", "'none'", false },
        { "{'type':'none','disable_parallel_tool_use':true}", "'none'", false },
        { "{'type':'auto','disable_parallel_tool_use':false}", "'auto'", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 BASE "'messages':[{'role':'user','content':'hi'}],'tool_choice':%s,"
                      "'tools':[{'name':'f','input_schema':{'type':'object'}}]}",
                 cases[i].choice);
        json_t *chat = translate(body, NULL);
        assert_json(json_object_get(chat, "tool_choice"), cases[i].want);
        assert_int_equal(json_object_get(chat, "parallel_tool_calls") != NULL, cases[i].serial);
        if (cases[i].serial)
            assert_true(json_is_false(json_object_get(chat, "parallel_tool_calls")));
        json_decref(chat);
    }
    /* auto and none without tools: dropped, as chat upstreams refuse a tool_choice without tools */
    json_t *chat = translate(BASE "'messages':[{'role':'user','content':'hi'}],"
                                  "'tool_choice':{'type':'auto','disable_parallel_tool_use':true}}",
                             NULL);
    assert_null(json_object_get(chat, "tool_choice"));
    assert_null(json_object_get(chat, "parallel_tool_calls"));
    assert_null(json_object_get(chat, "tools"));
    json_decref(chat);
}

static void
test_request_cut_path(void **state)
{
    (void)state;
    /* a path longer than the buffer is cut, never overrun */
    char key[400];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    json_t *body = J(BASE "'messages':[{'role':'user','content':'hi'}]}");
    json_object_set_new(body, key, json_integer(1));
    tp_model_config_t strict = { .deny_unknown_fields = true };
    json_t *chat;
    mg_invalid_t inv;
    assert_false(mg_anthropic_request(body, &strict, &chat, &inv));
    assert_int_equal(strlen(inv.param), sizeof inv.param - 1);
    json_decref(body);
}

/* ---- whole answers ---- */

static json_t *stops; /* ["END","###"] */

static mg_anthropic_ctx_t
ctx(void)
{
    return (mg_anthropic_ctx_t){ .public_model = "claude-x", .message_id = "msg_01", .stop_sequences = stops };
}

static json_t *
message_of(const char *completion)
{
    mg_anthropic_ctx_t c = ctx();
    json_t *in = J(completion);
    json_t *msg = mg_anthropic_message(&c, in);
    json_decref(in);
    assert_non_null(msg);
    return msg;
}

static void
test_message_text(void **state)
{
    (void)state;
    json_t *msg = message_of("{'id':'chatcmpl-1','object':'chat.completion','model':'llama-3-8b','choices':[{'index':"
                             "0,'message':{'role':'assistant','content':'Hello there.'},'finish_reason':'stop'}],"
                             "'usage':{'prompt_tokens':12,'completion_tokens':3,'total_tokens':15}}");
    assert_json(msg, "{'id':'msg_01','type':'message','role':'assistant','model':'claude-x',"
                     "'content':[{'type':'text','text':'Hello there.'}],'stop_reason':'end_turn',"
                     "'stop_sequence':null,'usage':{'input_tokens':12,'output_tokens':3}}");
    json_decref(msg);
}

static void
test_message_tool_calls(void **state)
{
    (void)state;
    json_t *msg = message_of(
        "{'choices':[{'index':0,'message':{'role':'assistant','content':'Checking both.','tool_calls':["
        "{'id':'call_a','type':'function','function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\'}'}},"
        "{'id':'call_b','type':'function','function':{'name':'get_time','arguments':'{\\'tz\\':\\'CET\\',"
        "\\'fmt\\':[1,2]}'}},"
        "{'type':'function','function':{'name':'broken','arguments':'{not json'}},"
        "{'id':'call_d','type':'function','function':{'name':'listy','arguments':'[1]'}},5]},"
        "'finish_reason':'tool_calls'}],'usage':{'prompt_tokens':40,'completion_tokens':22}}");
    assert_json(msg, "{'id':'msg_01','type':'message','role':'assistant','model':'claude-x','content':["
                     "{'type':'text','text':'Checking both.'},"
                     "{'type':'tool_use','id':'call_a','name':'get_weather','input':{'city':'Paris'}},"
                     "{'type':'tool_use','id':'call_b','name':'get_time','input':{'tz':'CET','fmt':[1,2]}},"
                     "{'type':'tool_use','id':'toolu_msg_01_2','name':'broken','input':{}},"
                     "{'type':'tool_use','id':'call_d','name':'listy','input':{}}],"
                     "'stop_reason':'tool_use','stop_sequence':null,"
                     "'usage':{'input_tokens':40,'output_tokens':22}}");
    json_decref(msg);
}

static void
test_message_stop_reasons(void **state)
{
    (void)state;
    static const struct {
        const char *completion;
        const char *reason;
        const char *sequence;
    } cases[] = {
        { "{'choices':[{'message':{'content':'abc'},'finish_reason':'length'}]}", "max_tokens", NULL },
        { "{'choices':[{'message':{'content':''},'finish_reason':'content_filter'}]}", "refusal", NULL },
        { "{'choices':[{'message':{'content':'done'},'finish_reason':'stop'}]}", "end_turn", NULL },
        { "{'choices':[{'message':{'content':'done'},'finish_reason':null}]}", "end_turn", NULL },
        /* the upstream kept the stop sequence in the text */
        { "{'choices':[{'message':{'content':'one two END'},'finish_reason':'stop'}]}", "stop_sequence", "END" },
        /* vLLM names the matched stop string */
        { "{'choices':[{'message':{'content':'one two'},'finish_reason':'stop','stop_reason':'###'}]}", "stop_sequence",
          "###" },
        /* a stop_reason that is no stop sequence of the request (an EOS token id, or another string) */
        { "{'choices':[{'message':{'content':'x'},'finish_reason':'stop','stop_reason':128001}]}", "end_turn", NULL },
        { "{'choices':[{'message':{'content':'x'},'finish_reason':'stop','stop_reason':'other'}]}", "end_turn", NULL },
        /* tool calls with "stop" (some servers): the client's tool loop must still run */
        { "{'choices':[{'message':{'content':null,'tool_calls':[{'id':'c','function':{'name':'f','arguments':'{}'}}]},"
          "'finish_reason':'stop'}]}",
          "tool_use", NULL },
        { "{'choices':[{'message':{'content':'x'},'finish_reason':'function_call'}]}", "tool_use", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *msg = message_of(cases[i].completion);
        assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), cases[i].reason);
        json_t *seq = json_object_get(msg, "stop_sequence");
        if (cases[i].sequence)
            assert_string_equal(json_string_value(seq), cases[i].sequence);
        else
            assert_true(json_is_null(seq));
        json_decref(msg);
    }
}

static void
test_message_degenerate(void **state)
{
    (void)state;
    const char *odd[] = { "{}",
                          "{'choices':[]}",
                          "{'choices':'x'}",
                          "{'choices':[5]}",
                          "{'choices':[{}]}",
                          "{'choices':[{'message':5}]}",
                          "{'choices':[{'message':{'content':5,'tool_calls':'x'}}]}",
                          "[]",
                          "{'choices':[{'index':1,'message':{'content':'second choice'}}]}" };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        json_t *msg = message_of(odd[i]);
        assert_json(msg, "{'id':'msg_01','type':'message','role':'assistant','model':'claude-x','content':[],"
                         "'stop_reason':'end_turn','stop_sequence':null,'usage':{'input_tokens':0,'output_tokens':0}}");
        json_decref(msg);
    }
    /* refusal text (an upstream's refusal field) is shown as text */
    json_t *msg = message_of("{'choices':[{'message':{'content':null,'refusal':'I cannot help with that.'},"
                             "'finish_reason':'content_filter'}]}");
    assert_json(json_object_get(msg, "content"), "[{'type':'text','text':'I cannot help with that.'}]");
    assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), "refusal");
    json_decref(msg);
    /* NULL strings in the context */
    mg_anthropic_ctx_t bare = { 0 };
    json_t *in = J("{'choices':[{'message':{'content':'x','tool_calls':[{'function':{'name':'f'}}]}}]}");
    msg = mg_anthropic_message(&bare, in);
    assert_string_equal(json_string_value(json_object_get(msg, "model")), "");
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(msg, "content"), 1), "id")),
                        "toolu__0");
    json_decref(msg);
    json_decref(in);
}

/* ---- streams ---- */

typedef struct event {
    char name[32];
    json_t *data;
} event_t;

typedef struct events {
    event_t e[128];
    size_t n;
} events_t;

static void
events_clear(events_t *evs)
{
    for (size_t i = 0; i < evs->n; i++)
        json_decref(evs->e[i].data);
    evs->n = 0;
}

/* Parses what the stream wrote: "event: <name>\ndata: <json>\n\n" records, the data's type being
 * the event's name. */
static void
parse_sse(const mg_buffer_t *b, events_t *evs)
{
    char *text = strndup(b->data ? b->data : "", b->len);
    char *p = text;
    while (*p) {
        char *end = strstr(p, "\n\n");
        assert_non_null(end);
        *end = '\0';
        assert_memory_equal(p, "event: ", 7);
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = '\0';
        assert_true(evs->n < sizeof evs->e / sizeof evs->e[0]);
        event_t *e = &evs->e[evs->n++];
        snprintf(e->name, sizeof e->name, "%s", p + 7);
        assert_memory_equal(nl + 1, "data: ", 6);
        assert_null(strchr(nl + 7, '\n'));
        json_error_t err;
        e->data = json_loads(nl + 7, 0, &err);
        if (e->data == NULL)
            fail_msg("event data is not JSON (%s): %s", err.text, nl + 7);
        assert_string_equal(json_string_value(json_object_get(e->data, "type")), e->name);
        p = end + 2;
    }
    free(text);
}

static char *
concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    assert_non_null(s);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

/* What the SDK's MessageStream does with the events, with the order checked on the way: one
 * message_start first; a block starts at the next index while none is open; deltas go to the
 * open block and match its type; input_json_delta fragments are JSON-parsed when the block
 * stops; message_delta with no block open; message_stop or error last. Returns the message
 * (new), and *error the error event's data (borrowed) when the stream ended with one. */
static json_t *
accumulate(events_t *evs, json_t **error)
{
    *error = NULL;
    assert_true(evs->n >= 1);
    assert_string_equal(evs->e[0].name, "message_start");
    json_t *msg = json_deep_copy(json_object_get(evs->e[0].data, "message"));
    json_t *content = json_object_get(msg, "content");
    char *json_buf = NULL;
    json_int_t open = -1;
    bool delta_seen = false;
    for (size_t i = 1; i < evs->n; i++) {
        const char *name = evs->e[i].name;
        json_t *d = evs->e[i].data;
        json_int_t index = json_integer_value(json_object_get(d, "index"));
        json_t *block = json_array_get(content, (size_t)index);
        bool last = i == evs->n - 1;
        assert_false(delta_seen && strcmp(name, "message_stop") != 0 && strcmp(name, "error") != 0);
        if (strcmp(name, "content_block_start") == 0) {
            assert_int_equal(open, -1);
            assert_int_equal(index, json_array_size(content));
            json_t *cb = json_object_get(d, "content_block");
            const char *type = json_string_value(json_object_get(cb, "type"));
            if (strcmp(type, "text") == 0) {
                assert_string_equal(json_string_value(json_object_get(cb, "text")), "");
            } else {
                assert_string_equal(type, "tool_use");
                assert_true(json_is_string(json_object_get(cb, "id")));
                assert_true(json_is_string(json_object_get(cb, "name")));
                assert_json(json_object_get(cb, "input"), "{}");
            }
            json_array_append(content, cb);
            open = index;
        } else if (strcmp(name, "content_block_delta") == 0) {
            assert_int_equal(index, open);
            json_t *delta = json_object_get(d, "delta");
            const char *type = json_string_value(json_object_get(delta, "type"));
            if (strcmp(type, "text_delta") == 0) {
                assert_string_equal(json_string_value(json_object_get(block, "type")), "text");
                const char *piece = json_string_value(json_object_get(delta, "text"));
                assert_true(piece != NULL && *piece); /* no empty deltas */
                char *joined = concat(json_string_value(json_object_get(block, "text")), piece);
                json_object_set_new(block, "text", json_string(joined));
                free(joined);
            } else {
                assert_string_equal(type, "input_json_delta");
                assert_string_equal(json_string_value(json_object_get(block, "type")), "tool_use");
                const char *piece = json_string_value(json_object_get(delta, "partial_json"));
                assert_true(piece != NULL && *piece);
                char *joined = concat(json_buf ? json_buf : "", piece);
                free(json_buf);
                json_buf = joined;
            }
        } else if (strcmp(name, "content_block_stop") == 0) {
            assert_int_equal(index, open);
            if (json_buf != NULL) {
                json_error_t err;
                json_t *input = json_loads(json_buf, 0, &err);
                if (!json_is_object(input))
                    fail_msg("partial_json does not make a JSON object: %s", json_buf);
                json_object_set_new(block, "input", input);
                free(json_buf);
                json_buf = NULL;
            }
            open = -1;
        } else if (strcmp(name, "message_delta") == 0) {
            assert_int_equal(open, -1);
            json_t *delta = json_object_get(d, "delta");
            json_t *usage = json_object_get(d, "usage");
            json_object_set(msg, "stop_reason", json_object_get(delta, "stop_reason"));
            json_object_set(msg, "stop_sequence", json_object_get(delta, "stop_sequence"));
            assert_true(json_is_integer(json_object_get(usage, "output_tokens")));
            json_object_set(json_object_get(msg, "usage"), "output_tokens", json_object_get(usage, "output_tokens"));
            if (json_object_get(usage, "input_tokens") != NULL)
                json_object_set(json_object_get(msg, "usage"), "input_tokens", json_object_get(usage, "input_tokens"));
            delta_seen = true;
        } else if (strcmp(name, "message_stop") == 0) {
            assert_true(last);
            assert_true(delta_seen);
        } else if (strcmp(name, "error") == 0) {
            assert_true(last);
            *error = d;
        } else {
            fail_msg("unexpected event %s", name);
        }
    }
    free(json_buf);
    return msg;
}

typedef struct run {
    mg_anthropic_stream_t s;
    mg_buffer_t out;
    events_t evs;
} run_t;

static run_t *
run_new(void)
{
    run_t *r = calloc(1, sizeof *r);
    mg_anthropic_ctx_t c = ctx();
    mg_anthropic_stream_init(&r->s, &c);
    return r;
}

static void
run_free(run_t *r)
{
    events_clear(&r->evs);
    mg_buffer_release(&r->out);
    free(r);
}

static void
feed(run_t *r, const char *chunk)
{
    json_t *c = J(chunk);
    mg_anthropic_stream_chunk(&r->s, c, &r->out);
    json_decref(c);
}

/* Ends the stream and parses all it wrote. */
static void
finish(run_t *r)
{
    mg_anthropic_stream_end(&r->s, &r->out);
    parse_sse(&r->out, &r->evs);
}

static void
assert_names(const events_t *evs, const char *const *names, size_t n)
{
    for (size_t i = 0; i < evs->n && i < n; i++)
        if (strcmp(evs->e[i].name, names[i]) != 0)
            fail_msg("event %zu is %s, want %s", i, evs->e[i].name, names[i]);
    assert_int_equal(evs->n, n);
}

#define ASSERT_NAMES(evs, ...)                                                                                         \
    do {                                                                                                               \
        static const char *const names_[] = { __VA_ARGS__ };                                                           \
        assert_names(evs, names_, sizeof names_ / sizeof names_[0]);                                                   \
    } while (0)

static void
test_stream_text(void **state)
{
    (void)state;
    run_t *r = run_new();
    const char *pre = "{'id':'chatcmpl-9','object':'chat.completion.chunk','model':'llama','choices':[{'index':0,";
    char chunk[512];
    snprintf(chunk, sizeof chunk, "%s'delta':{'role':'assistant','content':''},'finish_reason':null}],'usage':null}",
             pre);
    feed(r, chunk);
    snprintf(chunk, sizeof chunk, "%s'delta':{'content':'Hel'},'finish_reason':null}]}", pre);
    feed(r, chunk);
    snprintf(chunk, sizeof chunk, "%s'delta':{'content':''},'finish_reason':null}]}", pre);
    feed(r, chunk);
    snprintf(chunk, sizeof chunk, "%s'delta':{'content':'lo \\'you\\'\\n\\u00e9'},'finish_reason':null}]}", pre);
    feed(r, chunk);
    snprintf(chunk, sizeof chunk, "%s'delta':{},'finish_reason':'stop'}]}", pre);
    feed(r, chunk);
    feed(r, "{'id':'chatcmpl-9','choices':[],'usage':{'prompt_tokens':21,'completion_tokens':4,'total_tokens':25}}");
    finish(r);
    ASSERT_NAMES(&r->evs, "message_start", "content_block_start", "content_block_delta", "content_block_delta",
                 "content_block_stop", "message_delta", "message_stop");
    assert_json(r->evs.e[0].data, "{'type':'message_start','message':{'id':'msg_01','type':'message','role':"
                                  "'assistant','model':'claude-x','content':[],'stop_reason':null,"
                                  "'stop_sequence':null,'usage':{'input_tokens':0,'output_tokens':0}}}");
    assert_json(r->evs.e[1].data, "{'type':'content_block_start','index':0,'content_block':{'type':'text','text':''}}");
    assert_json(r->evs.e[2].data,
                "{'type':'content_block_delta','index':0,'delta':{'type':'text_delta','text':'Hel'}}");
    assert_json(r->evs.e[4].data, "{'type':'content_block_stop','index':0}");
    assert_json(r->evs.e[5].data, "{'type':'message_delta','delta':{'stop_reason':'end_turn','stop_sequence':null},"
                                  "'usage':{'input_tokens':21,'output_tokens':4}}");
    json_t *error;
    json_t *msg = accumulate(&r->evs, &error);
    assert_null(error);
    assert_json(msg, "{'id':'msg_01','type':'message','role':'assistant','model':'claude-x',"
                     "'content':[{'type':'text','text':'Hello \\'you\\'\\n\\u00e9'}],'stop_reason':'end_turn',"
                     "'stop_sequence':null,'usage':{'input_tokens':21,'output_tokens':4}}");
    json_decref(msg);
    /* nothing after the end */
    size_t len = r->out.len;
    feed(r, "{'choices':[{'delta':{'content':'late'}}]}");
    mg_anthropic_stream_end(&r->s, &r->out);
    mg_anthropic_stream_error(&r->s, "api_error", "late", &r->out);
    assert_int_equal(r->out.len, len);
    run_free(r);
}

static void
test_stream_parallel_tools(void **state)
{
    (void)state;
    run_t *r = run_new();
    feed(r, "{'choices':[{'index':0,'delta':{'role':'assistant','content':'Let me '}}]}");
    feed(r, "{'choices':[{'index':0,'delta':{'content':'check.'}}]}");
    feed(r, "{'choices':[{'index':0,'delta':{'tool_calls':[{'index':0,'id':'call_w','type':'function',"
            "'function':{'name':'get_weather','arguments':''}}]}}]}");
    feed(r, "{'choices':[{'index':0,'delta':{'tool_calls':[{'index':0,'function':{'arguments':'{\\'ci'}}]}}]}");
    feed(r, "{'choices':[{'index':0,'delta':{'tool_calls':[{'index':0,'function':{'arguments':'ty\\': \\'Par'}}]}}]}");
    feed(r, "{'choices':[{'index':0,'delta':{'tool_calls':[{'index':0,'function':{'arguments':'is\\'}'}}]}}]}");
    feed(r, "{'choices':[{'index':0,'delta':{'tool_calls':[{'index':1,'id':'call_t','type':'function',"
            "'function':{'name':'get_time','arguments':'{\\'tz\\''}}]}}]}");
    feed(r, "{'choices':[{'index':0,'delta':{'tool_calls':[{'index':1,'function':{'arguments':': \\'CET\\', "
            "\\'n\\': [1, {\\'x\\': null}]}'}}]}}]}");
    feed(r, "{'choices':[{'index':0,'delta':{},'finish_reason':'tool_calls'}]}");
    feed(r, "{'choices':[],'usage':{'prompt_tokens':80,'completion_tokens':31}}");
    finish(r);
    ASSERT_NAMES(&r->evs, "message_start", "content_block_start", "content_block_delta", "content_block_delta",
                 "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
                 "content_block_delta", "content_block_stop", "content_block_start", "content_block_delta",
                 "content_block_delta", "content_block_stop", "message_delta", "message_stop");
    assert_json(r->evs.e[5].data, "{'type':'content_block_start','index':1,'content_block':{'type':'tool_use',"
                                  "'id':'call_w','name':'get_weather','input':{}}}");
    assert_json(r->evs.e[6].data, "{'type':'content_block_delta','index':1,'delta':{'type':'input_json_delta',"
                                  "'partial_json':'{\\'ci'}}");
    assert_json(r->evs.e[10].data, "{'type':'content_block_start','index':2,'content_block':{'type':'tool_use',"
                                   "'id':'call_t','name':'get_time','input':{}}}");
    json_t *error;
    json_t *msg = accumulate(&r->evs, &error);
    assert_null(error);
    assert_json(msg, "{'id':'msg_01','type':'message','role':'assistant','model':'claude-x','content':["
                     "{'type':'text','text':'Let me check.'},"
                     "{'type':'tool_use','id':'call_w','name':'get_weather','input':{'city':'Paris'}},"
                     "{'type':'tool_use','id':'call_t','name':'get_time','input':{'tz':'CET','n':[1,{'x':null}]}}],"
                     "'stop_reason':'tool_use','stop_sequence':null,'usage':{'input_tokens':80,'output_tokens':31}}");
    json_decref(msg);
    run_free(r);
}

static void
test_stream_tool_edge_cases(void **state)
{
    (void)state;
    /* every call on index 0 (distinct ids), a call whose arguments come whole, one without
     * arguments, one without an id, a late fragment of a closed call, text after a call */
    run_t *r = run_new();
    feed(r, "{'choices':[{'delta':{'tool_calls':[{'index':0,'id':'a','function':{'name':'f','arguments':'{}'}}]}}]}");
    feed(r, "{'choices':[{'delta':{'tool_calls':[{'index':0,'id':'b','function':{'name':'g','arguments':'{\\'k\\''}}"
            "]}}]}");
    feed(r, "{'choices':[{'delta':{'tool_calls':[{'index':0,'id':'b','function':{'arguments':':1}'}}]}}]}");
    feed(r, "{'choices':[{'delta':{'tool_calls':[{'index':1,'id':'c','function':{'name':'h'}}]}}]}");
    feed(r, "{'choices':[{'delta':{'tool_calls':[{'index':0,'function':{'arguments':'lost'}}]}}]}");
    feed(r, "{'choices':[{'delta':{'tool_calls':[{'index':2,'function':{'name':'i','arguments':'{\\'z\\':2}'}}]}}]}");
    feed(r, "{'choices':[{'delta':{'content':'Done.'}}]}");
    feed(r, "{'choices':[{'delta':{'tool_calls':[{'index':2,'function':{'arguments':'also lost'}}]}}]}");
    feed(r, "{'choices':[{'delta':{},'finish_reason':'stop'}]}");
    finish(r);
    json_t *error;
    json_t *msg = accumulate(&r->evs, &error);
    assert_null(error);
    assert_json(json_object_get(msg, "content"), "[{'type':'tool_use','id':'a','name':'f','input':{}},"
                                                 "{'type':'tool_use','id':'b','name':'g','input':{'k':1}},"
                                                 "{'type':'tool_use','id':'c','name':'h','input':{}},"
                                                 "{'type':'tool_use','id':'toolu_msg_01_3','name':'i','input':{'z':2}},"
                                                 "{'type':'text','text':'Done.'}]");
    /* "stop" with tool calls: tool_use; no usage chunk: output 0 and no input_tokens */
    assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), "tool_use");
    json_t *last_delta = r->evs.e[r->evs.n - 2].data;
    assert_json(json_object_get(last_delta, "usage"), "{'output_tokens':0}");
    json_decref(msg);
    run_free(r);
}

static void
test_stream_usage_first(void **state)
{
    (void)state;
    /* usage on every chunk (vLLM continuous usage): the first gives message_start its input
     * tokens, the last one counts */
    run_t *r = run_new();
    feed(r, "{'choices':[{'delta':{'role':'assistant'}}],'usage':{'prompt_tokens':9,'completion_tokens':0}}");
    feed(r, "{'choices':[{'delta':{'content':'x'}}],'usage':{'prompt_tokens':9,'completion_tokens':1}}");
    feed(r, "{'choices':[{'delta':{'content':'y'},'finish_reason':'length'}],'usage':{'prompt_tokens':9,"
            "'completion_tokens':2}}");
    finish(r);
    assert_json(json_object_get(json_object_get(r->evs.e[0].data, "message"), "usage"),
                "{'input_tokens':9,'output_tokens':0}");
    json_t *error;
    json_t *msg = accumulate(&r->evs, &error);
    assert_json(msg, "{'id':'msg_01','type':'message','role':'assistant','model':'claude-x',"
                     "'content':[{'type':'text','text':'xy'}],'stop_reason':'max_tokens','stop_sequence':null,"
                     "'usage':{'input_tokens':9,'output_tokens':2}}");
    json_decref(msg);
    run_free(r);
}

static void
test_stream_malformed(void **state)
{
    (void)state;
    run_t *r = run_new();
    mg_anthropic_stream_chunk(&r->s, NULL, &r->out);
    const char *bad[] = {
        "'just a string'",
        "[1,2]",
        "{'choices':'x'}",
        "{'choices':[5,null,'x']}",
        "{'choices':[{'delta':null}]}",
        "{'choices':[{'delta':'text'}]}",
        "{'choices':[{'delta':{'content':null}}]}",
        "{'choices':[{'delta':{'content':5}}]}",
        "{'choices':[{'delta':{'content':''}}]}",
        "{'choices':[{'delta':{'tool_calls':'x'}}]}",
        "{'choices':[{'delta':{'tool_calls':[5,null]}}]}",
        "{'choices':[{'delta':{'content':'Hi'},'finish_reason':5}]}",
        "{'choices':[{'index':1,'delta':{'content':'other choice'}}]}",
        "{'choices':[{'delta':{'tool_calls':[{'index':-3,'id':'n','function':5}]}}]}",
        "{'choices':[{'delta':{'tool_calls':[{'index':0,'function':{'arguments':{'k':1}}}]}}]}",
        "{'usage':'x','choices':[{'finish_reason':'a-very-long-finish-reason-that-does-not-fit-the-buffer'}]}",
        "{'usage':{'prompt_tokens':'many','completion_tokens':-5}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        feed(r, bad[i]);
    finish(r);
    json_t *error;
    json_t *msg = accumulate(&r->evs, &error);
    assert_null(error);
    assert_json(msg, "{'id':'msg_01','type':'message','role':'assistant','model':'claude-x','content':["
                     "{'type':'text','text':'Hi'},{'type':'tool_use','id':'n','name':'','input':{}}],"
                     "'stop_reason':'tool_use','stop_sequence':null,'usage':{'input_tokens':0,'output_tokens':0}}");
    json_decref(msg);
    run_free(r);

    /* an empty stream: a message with no content */
    r = run_new();
    finish(r);
    ASSERT_NAMES(&r->evs, "message_start", "message_delta", "message_stop");
    assert_json(r->evs.e[1].data, "{'type':'message_delta','delta':{'stop_reason':'end_turn','stop_sequence':null},"
                                  "'usage':{'output_tokens':0}}");
    run_free(r);
}

static void
test_stream_stop_sequence(void **state)
{
    (void)state;
    /* the upstream kept the sequence, spread over chunks after a long text */
    run_t *r = run_new();
    feed(r, "{'choices':[{'delta':{'content':'0123456789012345678901234567890123456789012345678901234567890123456789"
            "0123456789'}}]}");
    feed(r, "{'choices':[{'delta':{'content':'tail #'}}]}");
    feed(r, "{'choices':[{'delta':{'content':'##'},'finish_reason':'stop'}]}");
    finish(r);
    json_t *error;
    json_t *msg = accumulate(&r->evs, &error);
    assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), "stop_sequence");
    assert_string_equal(json_string_value(json_object_get(msg, "stop_sequence")), "###");
    json_decref(msg);
    run_free(r);

    /* vLLM names it */
    r = run_new();
    feed(r, "{'choices':[{'delta':{'content':'a b'}}]}");
    feed(r, "{'choices':[{'delta':{},'finish_reason':'stop','stop_reason':'END'}]}");
    finish(r);
    msg = accumulate(&r->evs, &error);
    assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), "stop_sequence");
    assert_string_equal(json_string_value(json_object_get(msg, "stop_sequence")), "END");
    json_decref(msg);
    run_free(r);

    /* stripped and not named: unknowable, end_turn */
    r = run_new();
    feed(r, "{'choices':[{'delta':{'content':'a b'},'finish_reason':'stop'}]}");
    finish(r);
    msg = accumulate(&r->evs, &error);
    assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), "end_turn");
    assert_true(json_is_null(json_object_get(msg, "stop_sequence")));
    json_decref(msg);
    run_free(r);

    /* content_filter */
    r = run_new();
    feed(r, "{'choices':[{'delta':{'content':'no'},'finish_reason':'content_filter'}]}");
    finish(r);
    msg = accumulate(&r->evs, &error);
    assert_string_equal(json_string_value(json_object_get(msg, "stop_reason")), "refusal");
    json_decref(msg);
    run_free(r);
}

static void
test_stream_errors(void **state)
{
    (void)state;
    /* before anything was sent: message_start, then the error */
    run_t *r = run_new();
    mg_anthropic_stream_error(&r->s, "overloaded_error", "Overloaded", &r->out);
    feed(r, "{'choices':[{'delta':{'content':'late'}}]}");
    mg_anthropic_stream_end(&r->s, &r->out);
    mg_anthropic_stream_error(&r->s, "api_error", "again", &r->out);
    parse_sse(&r->out, &r->evs);
    ASSERT_NAMES(&r->evs, "message_start", "error");
    assert_json(r->evs.e[1].data, "{'type':'error','error':{'type':'overloaded_error','message':'Overloaded'}}");
    json_t *error;
    json_t *msg = accumulate(&r->evs, &error);
    assert_non_null(error);
    json_decref(msg);
    run_free(r);

    /* mid-text: the error ends the stream, with the block left open as Anthropic does */
    r = run_new();
    feed(r, "{'choices':[{'delta':{'content':'partial'}}]}");
    mg_anthropic_stream_error(&r->s, NULL, NULL, &r->out);
    mg_anthropic_stream_end(&r->s, &r->out);
    parse_sse(&r->out, &r->evs);
    ASSERT_NAMES(&r->evs, "message_start", "content_block_start", "content_block_delta", "error");
    assert_json(r->evs.e[3].data, "{'type':'error','error':{'type':'api_error','message':''}}");
    msg = accumulate(&r->evs, &error);
    assert_non_null(error);
    json_decref(msg);
    run_free(r);

    /* a message that is not UTF-8 still makes an event */
    r = run_new();
    mg_anthropic_stream_error(&r->s, "api_error", "bad \xff byte", &r->out);
    parse_sse(&r->out, &r->evs);
    ASSERT_NAMES(&r->evs, "message_start", "error");
    run_free(r);
}

/* ---- errors ---- */

static void
test_error_types(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *type;
    } cases[] = {
        { 400, "invalid_request_error" },
        { 401, "authentication_error" },
        { 403, "permission_error" },
        { 404, "not_found_error" },
        { 413, "request_too_large" },
        { 429, "rate_limit_error" },
        { 500, "api_error" },
        { 502, "api_error" },
        { 504, "api_error" },
        { 503, "overloaded_error" },
        { 529, "overloaded_error" },
        { 405, "invalid_request_error" },
        { 422, "invalid_request_error" },
        { 200, "api_error" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(mg_anthropic_error_type(cases[i].status), cases[i].type);
}

static void
test_error_bodies(void **state)
{
    (void)state;
    json_t *body = mg_anthropic_error_body(429, "Too many requests for this key.", "req_123");
    assert_json(body, "{'type':'error','error':{'type':'rate_limit_error','message':'Too many requests for this "
                      "key.'},'request_id':'req_123'}");
    json_decref(body);
    body = mg_anthropic_error_body(400, "messages: field required", NULL);
    assert_json(body, "{'type':'error','error':{'type':'invalid_request_error','message':'messages: field required'}}");
    json_decref(body);
    body = mg_anthropic_error_body(529, NULL, "r");
    assert_json(body, "{'type':'error','error':{'type':'overloaded_error','message':''},'request_id':'r'}");
    json_decref(body);
    body = mg_anthropic_error_body(500, "bad \xc3 utf8", "r");
    assert_string_equal(json_string_value(json_object_get(json_object_get(body, "error"), "type")), "api_error");
    assert_true(json_is_string(json_object_get(json_object_get(body, "error"), "message")));
    json_decref(body);
}

static int
setup(void **state)
{
    (void)state;
    stops = J("['END','###']");
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    json_decref(stops);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_refusals),
        cmocka_unit_test(test_request_accepted),
        cmocka_unit_test(test_request_basic),
        cmocka_unit_test(test_request_system_and_images),
        cmocka_unit_test(test_request_tool_round_trip),
        cmocka_unit_test(test_request_tool_choice),
        cmocka_unit_test(test_request_cut_path),
        cmocka_unit_test(test_message_text),
        cmocka_unit_test(test_message_tool_calls),
        cmocka_unit_test(test_message_stop_reasons),
        cmocka_unit_test(test_message_degenerate),
        cmocka_unit_test(test_stream_text),
        cmocka_unit_test(test_stream_parallel_tools),
        cmocka_unit_test(test_stream_tool_edge_cases),
        cmocka_unit_test(test_stream_usage_first),
        cmocka_unit_test(test_stream_malformed),
        cmocka_unit_test(test_stream_stop_sequence),
        cmocka_unit_test(test_stream_errors),
        cmocka_unit_test(test_error_types),
        cmocka_unit_test(test_error_bodies),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
