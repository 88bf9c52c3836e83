#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static void
read_usage(mg_relay_t *relay, json_t *usage)
{
    if (!json_is_object(usage))
        return;
    relay->usage.seen = true;
    relay->usage.prompt_tokens = json_integer_value(json_object_get(usage, "prompt_tokens"));
    relay->usage.completion_tokens = json_integer_value(json_object_get(usage, "completion_tokens"));
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

char *
mg_relay_chunk(mg_relay_t *relay, const char *event, size_t len, size_t *out_len)
{
    if (len == 6 && memcmp(event, "[DONE]", 6) == 0) {
        *out_len = sizeof("data: [DONE]\n\n") - 1;
        return tp_strdup("data: [DONE]\n\n");
    }
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
                    return NULL; /* the usage chunk the gateway asked for, not the client */
                }
                json_object_del(chunk, "usage"); /* usage on every chunk (vLLM continuous usage) */
            }
        }
        repair_choices(relay, choices, "delta", true);
        show_public_model(relay, chunk);
        text = json_dumps(chunk, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    json_decref(chunk);
    const char *payload = text != NULL ? text : event;
    size_t payload_len = text != NULL ? strlen(text) : len;
    char *out = tp_malloc(payload_len + 9);
    memcpy(out, "data: ", 6);
    memcpy(out + 6, payload, payload_len);
    memcpy(out + 6 + payload_len, "\n\n", 3);
    *out_len = payload_len + 8;
    free(text);
    return out;
}

void
mg_relay_response(mg_relay_t *relay, json_t *body)
{
    read_usage(relay, json_object_get(body, "usage"));
    repair_choices(relay, json_object_get(body, "choices"), "message", false);
    show_public_model(relay, body);
}
