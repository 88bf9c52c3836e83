#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonscan.h"
#include "mem.h"

/* A token count an upstream reported, as the gateway bills it: a negative count (or one past
 * any real context) is an upstream's bug, counted as 0 so that it never reaches a counter or a
 * budget. */
static int64_t
token_count(int64_t n)
{
    return n >= 0 && n <= MG_MAX_TOKEN_COUNT ? n : 0;
}

static void
read_usage(mg_relay_t *relay, json_t *usage)
{
    if (!json_is_object(usage))
        return;
    relay->usage.seen = true;
    relay->usage.prompt_tokens = token_count(json_integer_value(json_object_get(usage, "prompt_tokens")));
    relay->usage.completion_tokens = token_count(json_integer_value(json_object_get(usage, "completion_tokens")));
}

/* Restores the contract of one tool call: arguments a string, an id present (on the call that
 * opens it: in a stream, the fragment that carries the function name). */
static void
repair_tool_call(mg_relay_t *relay, json_t *call, size_t position, bool streamed)
{
    json_t *fn = json_object_get(call, "function");
    json_t *args = json_object_get(fn, "arguments");
    if (args != NULL && (json_is_object(args) || json_is_array(args))) {
        char *text = json_dumps(args, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_object_set_new(fn, "arguments", json_string(text != NULL ? text : "{}"));
        free(text);
        relay->repairs++;
    }
    bool opens = !streamed || json_object_get(fn, "name") != NULL;
    json_t *id = json_object_get(call, "id");
    if (opens && (!json_is_string(id) || json_string_length(id) == 0)) {
        json_int_t index = json_integer_value(json_object_get(call, "index"));
        char made[128];
        snprintf(made, sizeof(made), "call_%s_%lld", relay->request_id,
                 (long long)(json_is_integer(json_object_get(call, "index")) ? index : (json_int_t)position));
        json_object_set_new(call, "id", json_string(made));
        if (json_object_get(call, "type") == NULL)
            json_object_set_new(call, "type", json_string("function"));
        relay->repairs++;
    }
}

static void
repair_choices(mg_relay_t *relay, json_t *choices, const char *member, bool streamed)
{
    size_t i;
    json_t *choice;
    json_array_foreach(choices, i, choice)
    {
        json_t *calls = json_object_get(json_object_get(choice, member), "tool_calls");
        size_t j;
        json_t *call;
        json_array_foreach(calls, j, call)
        {
            if (json_is_object(call))
                repair_tool_call(relay, call, j, streamed);
        }
    }
}

static void
show_public_model(mg_relay_t *relay, json_t *obj)
{
    if (relay->public_model != NULL && json_object_get(obj, "model") != NULL)
        json_object_set_new(obj, "model", json_string(relay->public_model));
}

/* Whether member m's raw key is `key`. */
static bool
key_is(const mg_json_member_t *m, const char *key, size_t key_len)
{
    return m->key_len == key_len && memcmp(m->key, key, key_len) == 0;
}

/* Whether text (a chunk or a whole answer) may be relayed as its bytes: it scans as a JSON object
 * whose keys are written plainly (so a search by raw key finds what jansson would), and it has no
 * tool calls, which may need restoring. The check for tool calls is on the raw text: a mention
 * in content merely takes the jansson path. */
static bool
relayable_as_text(const char *text, size_t len, mg_json_object_t *obj)
{
    return len > 0 && memmem(text, len, "tool_calls", 10) == NULL && mg_json_scan_object(text, len, obj) &&
           !obj->escaped_keys;
}

/* Appends text with the value of every top-level "model" replaced by the public model name, as
 * show_public_model does on a parsed object; all other bytes as they came. */
static void
add_with_public_model(mg_relay_t *relay, const char *text, size_t len, const mg_json_object_t *obj, mg_buffer_t *out)
{
    const char *from = text;
    for (size_t i = 0; i < obj->count && relay->public_model != NULL; i++) {
        const mg_json_member_t *m = &obj->members[i];
        if (!key_is(m, "model", 5))
            continue;
        mg_buffer_add(out, from, (size_t)(m->value - from));
        char *w = mg_buffer_reserve(out, mg_json_string_size(relay->public_model));
        out->len += mg_json_write_string(relay->public_model, w);
        from = m->value + m->value_len;
    }
    mg_buffer_add(out, from, (size_t)(text + len - from));
}

/* The usage member of a scanned object, read as read_usage reads a parsed one. Returns false
 * when it is an object this module cannot read (the caller then parses the whole text). */
static bool
read_usage_text(mg_relay_t *relay, const mg_json_object_t *obj)
{
    const mg_json_member_t *u = mg_json_find(obj, "usage", NULL);
    if (u == NULL || u->value[0] != '{')
        return true; /* absent, or not an object: no usage, as read_usage */
    mg_json_object_t usage;
    if (!mg_json_scan_object(u->value, u->value_len, &usage) || usage.escaped_keys)
        return false;
    const mg_json_member_t *in = mg_json_find(&usage, "prompt_tokens", NULL);
    const mg_json_member_t *out = mg_json_find(&usage, "completion_tokens", NULL);
    int64_t prompt = 0, completion = 0;
    if (in != NULL && !mg_json_integer(in->value, in->value_len, &prompt))
        prompt = 0;
    if (out != NULL && !mg_json_integer(out->value, out->value_len, &completion))
        completion = 0;
    relay->usage = (mg_usage_t){ .seen = true,
                                 .prompt_tokens = token_count(prompt),
                                 .completion_tokens = token_count(completion) };
    return true;
}

static void
add_event(mg_buffer_t *out, const char *payload, size_t len)
{
    char *w = mg_buffer_reserve(out, len + 8);
    memcpy(w, "data: ", 6);
    memcpy(w + 6, payload, len);
    memcpy(w + 6 + len, "\n\n", 2);
    out->len += len + 8;
}

/* The parsed path of mg_relay_chunk: usage read and stripped, tool calls restored. */
static void
relay_parsed_chunk(mg_relay_t *relay, const char *event, size_t len, mg_buffer_t *out)
{
    json_t *chunk = json_loadb(event, len, 0, NULL);
    char *text = NULL;
    if (json_is_object(chunk)) {
        json_t *usage = json_object_get(chunk, "usage");
        json_t *choices = json_object_get(chunk, "choices");
        if (json_is_object(usage)) {
            read_usage(relay, usage);
            if (!relay->client_wants_usage) {
                if (json_array_size(choices) == 0) {
                    json_decref(chunk);
                    return; /* the usage chunk the gateway asked for, not the client */
                }
                json_object_del(chunk, "usage"); /* usage on every chunk (vLLM continuous usage) */
            }
        }
        repair_choices(relay, choices, "delta", true);
        show_public_model(relay, chunk);
        text = json_dumps(chunk, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    json_decref(chunk);
    if (text != NULL)
        add_event(out, text, strlen(text));
    else
        add_event(out, event, len); /* not JSON: as it came */
    free(text);
}

void
mg_relay_chunk(mg_relay_t *relay, const char *event, size_t len, mg_buffer_t *out)
{
    if (len == 6 && memcmp(event, "[DONE]", 6) == 0) {
        mg_buffer_add(out, "data: [DONE]\n\n", sizeof("data: [DONE]\n\n") - 1);
        return;
    }
    mg_json_object_t obj;
    const mg_json_member_t *usage;
    if (!relayable_as_text(event, len, &obj) ||
        ((usage = mg_json_find(&obj, "usage", NULL)) != NULL && usage->value[0] == '{')) {
        relay_parsed_chunk(relay, event, len, out);
        return;
    }
    mg_buffer_add(out, "data: ", 6);
    add_with_public_model(relay, event, len, &obj, out);
    mg_buffer_add(out, "\n\n", 2);
}

bool
mg_relay_response_text(mg_relay_t *relay, const char *body, size_t len, mg_buffer_t *out)
{
    mg_json_object_t obj;
    if (!relayable_as_text(body, len, &obj) || !read_usage_text(relay, &obj))
        return false; /* (read_usage_text changes nothing when it fails) */
    add_with_public_model(relay, body, len, &obj, out);
    return true;
}

void
mg_relay_response(mg_relay_t *relay, json_t *body)
{
    read_usage(relay, json_object_get(body, "usage"));
    repair_choices(relay, json_object_get(body, "choices"), "message", false);
    show_public_model(relay, body);
}

void
mg_relay_chunk_json(mg_relay_t *relay, json_t *chunk)
{
    read_usage(relay, json_object_get(chunk, "usage"));
    repair_choices(relay, json_object_get(chunk, "choices"), "delta", true);
    show_public_model(relay, chunk);
}
