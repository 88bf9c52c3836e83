#include "anthropic.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "refusal.h"

/*
 * How it works. The request is checked and translated in one walk: each top-level member of
 * the body has a handler (top_fields) that checks its value and writes what it maps to into the
 * chat body. The chat body starts as {"model","messages","max_tokens"} so those come first; the
 * rest follows in the order of the request. Relations between members that are checked only
 * once all are well formed (tool_choice against tools) come after the walk.
 *
 * The path of the value being checked lives in out->param, in Anthropic's dotted style
 * ("messages.1.content.0.tool_use_id"): path_push() appends a key or an index on the way down
 * and path_pop() removes it on the way up, only on success, so when a check fails the path of
 * the refused value is already in place and fail() only says what is wrong. Messages read
 * "<path>: <what is wrong>", as Anthropic's do.
 *
 * The stream is a small state machine over the chat chunks (see mg_anthropic_stream_t): at most
 * one content block is open; text opens a text block, a tool call fragment with a new index (or
 * a new id) opens a tool_use block, and opening one closes the other.
 */

#define MAX_NAME 64 /* tool names: ^[a-zA-Z0-9_-]{1,64}$ */
#define SHOW     64 /* characters of a refused string quoted back in a message */

/* ---- paths and messages ---- */

typedef struct actx {
    mg_refusal_t r; /* the path being checked, and the refusal */
    const tp_model_config_t *model;
} actx_t;

/* refusal.h's path and refusal helpers, on this checker's context. */
#define path_push(c, key, index) mg_refusal_push(&(c)->r, (key), (index))
#define path_pop(c, saved)       mg_refusal_pop(&(c)->r, (saved))
#define fail(c, ...)             mg_refusal_fail(&(c)->r, __VA_ARGS__)

/* ---- value checks: each refuses the value at the current path ---- */

/* Member key of o, which must be present and not null; NULL after a refusal naming it. */
static json_t *
required(actx_t *c, json_t *o, const char *key, const char *what)
{
    json_t *v = json_object_get(o, key);
    if (v != NULL && !json_is_null(v))
        return v;
    path_push(c, key, 0);
    fail(c, "field required (%s)", what);
    return NULL;
}

static bool
check_string(actx_t *c, const json_t *v, bool nonempty)
{
    if (!json_is_string(v))
        return fail(c, "must be a string, got %s", mg_json_type_name(v));
    if (nonempty && json_string_length(v) == 0)
        return fail(c, "must be a non-empty string");
    return true;
}

/* Member key of o, which must be a (non-empty) string when present; *s is NULL when absent or
 * null. */
static bool
optional_string(actx_t *c, json_t *o, const char *key, bool nonempty, const char **s)
{
    json_t *v = json_object_get(o, key);
    *s = NULL;
    if (v == NULL || json_is_null(v))
        return true;
    size_t saved = path_push(c, key, 0);
    if (!check_string(c, v, nonempty))
        return false;
    path_pop(c, saved);
    *s = json_string_value(v);
    return true;
}

/* Member key of o, which must be a string when present: borrowed, or NULL when absent. */
static bool
required_string(actx_t *c, json_t *o, const char *key, const char *what, const char **s)
{
    json_t *v = required(c, o, key, what);
    if (v == NULL)
        return false;
    return optional_string(c, o, key, true, s);
}

static bool
check_bool(actx_t *c, const json_t *v)
{
    if (!json_is_boolean(v))
        return fail(c, "must be true or false, got %s", mg_json_type_name(v));
    return true;
}

/* Member key of o: true, false, or absent (false). */
static bool
optional_bool(actx_t *c, json_t *o, const char *key, bool *b)
{
    json_t *v = json_object_get(o, key);
    *b = false;
    if (v == NULL || json_is_null(v))
        return true;
    size_t saved = path_push(c, key, 0);
    if (!check_bool(c, v))
        return false;
    path_pop(c, saved);
    *b = json_is_true(v);
    return true;
}

static bool
check_unit_interval(actx_t *c, const json_t *v)
{
    if (!json_is_number(v))
        return fail(c, "must be a number between 0 and 1, got %s", mg_json_type_name(v));
    double x = json_number_value(v);
    if (!(x >= 0.0 && x <= 1.0))
        return fail(c, "must be a number between 0 and 1; got %g", x);
    return true;
}

/* The request has a member the chat upstream cannot take: dropped, or refused when the model's
 * configuration says so. */
static bool
drop_or_refuse(actx_t *c)
{
    if (c->model && c->model->deny_unknown_fields)
        return fail(c, "is not supported by this gateway (its upstream speaks the chat completions API), and this "
                       "model refuses fields it would have to drop");
    return true;
}

/* ---- content blocks ---- */

/* The type of content block b, or NULL after a refusal. */
static const char *
block_type(actx_t *c, json_t *b)
{
    if (!json_is_object(b)) {
        fail(c, "must be a content block (an object with a type), got %s", mg_json_type_name(b));
        return NULL;
    }
    const char *type;
    if (!required_string(c, b, "type", "the block type, such as 'text'", &type))
        return NULL;
    return type;
}

/* Refuses a block type that neither role may send here; `allowed` lists the ones that may. */
static bool
fail_block(actx_t *c, const char *type, const char *allowed)
{
    path_push(c, "type", 0);
    if (mg_streq(type, "document"))
        return fail(c, "'document' blocks are not supported: the upstream speaks the chat completions API, "
                       "which takes no documents; send the document's text as a text block");
    if (mg_streq(type, "server_tool_use") || strstr(type, "_tool_result") != NULL)
        return fail(c, "'%.*s' blocks belong to Anthropic's server tools, and this gateway runs no tools", SHOW, type);
    return fail(c, "must be one of %s; got '%.*s'", allowed, SHOW, type);
}

/* A text block's text (borrowed), or NULL after a refusal. */
static const char *
block_text(actx_t *c, json_t *b)
{
    json_t *v = required(c, b, "text", "a string");
    if (v == NULL)
        return NULL;
    size_t saved = path_push(c, "text", 0);
    if (!check_string(c, v, false))
        return NULL;
    path_pop(c, saved);
    return json_string_value(v);
}

/* Appends s to the text being joined in *acc (a new string, or NULL before the first piece),
 * with sep between pieces. */
static void
join_text(char **acc, const char *s, const char *sep)
{
    if (*acc == NULL) {
        *acc = tp_strdup(s);
        return;
    }
    char *joined = tp_sprintf("%s%s%s", *acc, sep, s);
    free(*acc);
    *acc = joined;
}

static const char *const media_types[] = { "image/jpeg", "image/png", "image/gif", "image/webp", NULL };

/* An image block's source → the URL a chat image_url part carries (new string), or NULL after
 * a refusal. */
static char *
image_url(actx_t *c, json_t *b)
{
    json_t *source = required(c, b, "source", "an object with type base64 or url");
    if (source == NULL)
        return NULL;
    path_push(c, "source", 0);
    if (!json_is_object(source)) {
        fail(c, "must be an object with type base64 or url, got %s", mg_json_type_name(source));
        return NULL;
    }
    const char *type;
    if (!required_string(c, source, "type", "base64 or url", &type))
        return NULL;
    if (mg_streq(type, "base64")) {
        const char *media, *data;
        if (!required_string(c, source, "media_type", "image/jpeg, image/png, image/gif or image/webp", &media))
            return NULL;
        const char *const *m = media_types;
        while (*m && !mg_streq(*m, media))
            m++;
        if (*m == NULL) {
            path_push(c, "media_type", 0);
            fail(c, "must be one of image/jpeg, image/png, image/gif, image/webp; got '%.*s'", SHOW, media);
            return NULL;
        }
        if (!required_string(c, source, "data", "the image, base64", &data))
            return NULL;
        return tp_sprintf("data:%s;base64,%s", media, data);
    }
    if (mg_streq(type, "url")) {
        const char *url;
        if (!required_string(c, source, "url", "the image's URL", &url))
            return NULL;
        return tp_strdup(url);
    }
    path_push(c, "type", 0);
    if (mg_streq(type, "file"))
        fail(c, "'file' sources need Anthropic's Files API, which this gateway does not offer; send the image as "
                "base64 or url");
    else
        fail(c, "must be one of base64, url; got '%.*s'", SHOW, type);
    return NULL;
}

/* The tool_use block of content (an assistant message's, borrowed) with this id, or NULL. */
static json_t *
find_tool_use(json_t *content, const char *id)
{
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        if (mg_streq(mg_json_str(b, "type"), "tool_use") && mg_streq(mg_json_str(b, "id"), id))
            return b;
    }
    return NULL;
}

/* Whether content has a tool_result for id before position `before`. */
static bool
find_tool_result(json_t *content, const char *id, size_t before)
{
    for (size_t i = 0; i < before && i < json_array_size(content); i++) {
        json_t *b = json_array_get(content, i);
        if (mg_streq(mg_json_str(b, "type"), "tool_result") && mg_streq(mg_json_str(b, "tool_use_id"), id))
            return true;
    }
    return false;
}

/* One block of a tool_result's content: its text (borrowed), or NULL after a refusal. */
static const char *
tool_result_piece(actx_t *c, json_t *part)
{
    const char *type = block_type(c, part);
    if (type == NULL)
        return NULL;
    if (mg_streq(type, "text"))
        return block_text(c, part);
    if (mg_streq(type, "image")) {
        path_push(c, "type", 0);
        fail(c, "images in a tool_result are not supported: the upstream's tool messages carry text only; send the "
                "image in a user message");
        return NULL;
    }
    fail_block(c, type, "text");
    return NULL;
}

/* The text of a tool_result's content: a string, or text blocks joined with "\n" (new string),
 * or NULL after a refusal. */
static char *
tool_result_text(actx_t *c, json_t *b)
{
    json_t *content = json_object_get(b, "content");
    if (content == NULL || json_is_null(content))
        return tp_strdup("");
    size_t saved = path_push(c, "content", 0);
    if (json_is_string(content)) {
        path_pop(c, saved);
        return tp_strdup(json_string_value(content));
    }
    if (!json_is_array(content)) {
        fail(c, "must be a string or an array of text blocks, got %s", mg_json_type_name(content));
        return NULL;
    }
    char *text = NULL;
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        size_t at = path_push(c, NULL, i);
        const char *s = tool_result_piece(c, part);
        if (s == NULL) {
            free(text);
            return NULL;
        }
        join_text(&text, s, "\n");
        path_pop(c, at);
    }
    path_pop(c, saved);
    return text != NULL ? text : tp_strdup("");
}

/* A tool_result block → a {"role":"tool"} message appended to msgs. It must answer a tool_use
 * of prev (the previous message's content, when that is an assistant's; else NULL), once. */
static bool
tool_message(actx_t *c, json_t *b, json_t *prev, size_t msg_index, json_t *content, size_t block_index, json_t *msgs)
{
    const char *id;
    if (!required_string(c, b, "tool_use_id", "the id of the tool_use it answers", &id))
        return false;
    size_t saved = path_push(c, "tool_use_id", 0);
    if (prev == NULL || msg_index == 0)
        return fail(c,
                    "'%.*s' answers no tool_use: a tool_result must answer a tool_use block of the assistant "
                    "message right before it",
                    SHOW, id);
    if (find_tool_use(prev, id) == NULL)
        return fail(c, "'%.*s' is not the id of a tool_use block in messages.%zu, the message before", SHOW, id,
                    msg_index - 1);
    if (find_tool_result(content, id, block_index))
        return fail(c, "'%.*s' is answered twice in this message", SHOW, id);
    path_pop(c, saved);
    bool is_error;
    if (!optional_bool(c, b, "is_error", &is_error))
        return false;
    char *text = tool_result_text(c, b);
    if (text == NULL)
        return false;
    if (is_error) {
        char *marked = tp_sprintf("Error%s%s", *text ? ": " : "", text);
        free(text);
        text = marked;
    }
    json_array_append_new(msgs, json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", id, "content", text));
    free(text);
    return true;
}

/* The content of a chat user message from its parts: a string for one text part, else the
 * parts (steals parts). */
static json_t *
user_content(json_t *parts)
{
    json_t *first = json_array_get(parts, 0);
    if (json_array_size(parts) == 0) {
        json_decref(parts);
        return json_string("");
    }
    if (json_array_size(parts) == 1 && mg_streq(mg_json_str(first, "type"), "text")) {
        json_t *text = json_incref(json_object_get(first, "text"));
        json_decref(parts);
        return text;
    }
    return parts;
}

/* One block of a user message other than tool_result (see tool_message): text and image
 * become content parts, thinking is dropped, the rest is refused. */
static bool
user_block(actx_t *c, json_t *b, const char *type, json_t *parts)
{
    if (mg_streq(type, "text")) {
        const char *text = block_text(c, b);
        if (text != NULL && *text)
            json_array_append_new(parts, json_pack("{s:s, s:s}", "type", "text", "text", text));
        return text != NULL;
    }
    if (mg_streq(type, "image")) {
        char *url = image_url(c, b);
        if (url != NULL)
            json_array_append_new(parts, json_pack("{s:s, s:{s:s}}", "type", "image_url", "image_url", "url", url));
        free(url);
        return url != NULL;
    }
    if (mg_streq(type, "thinking") || mg_streq(type, "redacted_thinking"))
        return true; /* dropped: a chat upstream takes no reasoning back */
    if (mg_streq(type, "tool_use")) {
        path_push(c, "type", 0);
        return fail(c, "tool_use blocks are only allowed in assistant messages");
    }
    return fail_block(c, type, "text, image, tool_result");
}

/* A user message → its tool messages (one per tool_result, in order), then a user message
 * with the other blocks, if there are any or no tool_result. */
static bool
user_message(actx_t *c, json_t *content, json_t *prev, size_t msg_index, json_t *msgs)
{
    if (json_is_string(content)) {
        json_array_append_new(msgs, json_pack("{s:s, s:O}", "role", "user", "content", content));
        return true;
    }
    if (json_array_size(content) == 0)
        return fail(c, "must have at least one content block");
    json_t *parts = json_array();
    bool answered = false;
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        size_t saved = path_push(c, NULL, i);
        const char *type = block_type(c, b);
        bool ok;
        if (type == NULL)
            ok = false;
        else if (mg_streq(type, "tool_result"))
            ok = answered = tool_message(c, b, prev, msg_index, content, i, msgs);
        else
            ok = user_block(c, b, type, parts);
        if (!ok) {
            json_decref(parts);
            return false;
        }
        path_pop(c, saved);
    }
    if (json_array_size(parts) == 0 && answered) {
        json_decref(parts);
        return true;
    }
    json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", "user", "content", user_content(parts)));
    return true;
}

/* A tool_use block → a chat tool call (new), or NULL after a refusal. Ids must be unique in
 * the message (content, before position `index`). */
static json_t *
tool_call(actx_t *c, json_t *b, json_t *content, size_t index)
{
    const char *id, *name;
    if (!required_string(c, b, "id", "the tool call's id", &id) ||
        !required_string(c, b, "name", "the tool's name", &name))
        return NULL;
    for (size_t i = 0; i < index; i++) {
        json_t *other = json_array_get(content, i);
        if (mg_streq(mg_json_str(other, "type"), "tool_use") && mg_streq(mg_json_str(other, "id"), id)) {
            path_push(c, "id", 0);
            fail(c, "'%.*s' is already the id of content.%zu; tool_use ids must be unique", SHOW, id, i);
            return NULL;
        }
    }
    json_t *input = required(c, b, "input", "an object, the tool's arguments");
    if (input == NULL)
        return NULL;
    if (!json_is_object(input)) {
        path_push(c, "input", 0);
        fail(c, "must be an object (the tool's arguments), got %s", mg_json_type_name(input));
        return NULL;
    }
    char *arguments = json_dumps(input, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (arguments == NULL)
        tp_fatal("json_dumps: out of memory");
    json_t *call = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function", "name", name,
                             "arguments", arguments);
    free(arguments);
    return call;
}

/* Block i of an assistant message: text joins *text, tool_use joins calls, thinking is
 * dropped, the rest is refused. */
static bool
assistant_block(actx_t *c, json_t *b, json_t *content, size_t i, char **text, json_t *calls)
{
    const char *type = block_type(c, b);
    if (type == NULL)
        return false;
    if (mg_streq(type, "text")) {
        const char *s = block_text(c, b);
        if (s != NULL)
            join_text(text, s, "");
        return s != NULL;
    }
    if (mg_streq(type, "tool_use")) {
        json_t *call = tool_call(c, b, content, i);
        if (call != NULL)
            json_array_append_new(calls, call);
        return call != NULL;
    }
    if (mg_streq(type, "thinking") || mg_streq(type, "redacted_thinking"))
        return true; /* dropped: a chat upstream takes no reasoning back */
    if (mg_streq(type, "image") || mg_streq(type, "tool_result")) {
        path_push(c, "type", 0);
        return fail(c, "%s blocks are only allowed in user messages", type);
    }
    return fail_block(c, type, "text, tool_use, thinking, redacted_thinking");
}

/* An assistant message → one chat assistant message: the text blocks joined, the tool_use
 * blocks as tool_calls. */
static bool
assistant_message(actx_t *c, json_t *content, json_t *msgs)
{
    if (json_is_string(content)) {
        json_array_append_new(msgs, json_pack("{s:s, s:O}", "role", "assistant", "content", content));
        return true;
    }
    char *text = NULL;
    json_t *calls = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        size_t saved = path_push(c, NULL, i);
        if (!assistant_block(c, b, content, i, &text, calls)) {
            free(text);
            json_decref(calls);
            return false;
        }
        path_pop(c, saved);
    }
    json_t *msg = json_pack("{s:s}", "role", "assistant");
    if (json_array_size(calls) > 0) {
        json_object_set_new(msg, "content", text != NULL && *text ? json_string(text) : json_null());
        json_object_set_new(msg, "tool_calls", calls);
    } else {
        json_object_set_new(msg, "content", json_string(text != NULL ? text : ""));
        json_decref(calls);
    }
    free(text);
    json_array_append_new(msgs, msg);
    return true;
}

/* The content of message m when it is an assistant's with tool_use blocks, else NULL. */
static json_t *
tool_uses_of(json_t *m)
{
    json_t *content = json_object_get(m, "content");
    if (!mg_streq(mg_json_str(m, "role"), "assistant") || !json_is_array(content))
        return NULL;
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        if (mg_streq(mg_json_str(b, "type"), "tool_use"))
            return content;
    }
    return NULL;
}

/* Every tool_use of prev (an assistant's content) has its tool_result in m (the next message):
 * refused at m otherwise. */
static bool
check_answered(actx_t *c, json_t *prev, size_t prev_index, json_t *m)
{
    json_t *content = json_object_get(m, "content");
    bool user = mg_streq(mg_json_str(m, "role"), "user");
    size_t i;
    json_t *b;
    json_array_foreach(prev, i, b)
    {
        const char *id = mg_json_str(b, "id");
        if (!mg_streq(mg_json_str(b, "type"), "tool_use"))
            continue;
        if (!user || !json_is_array(content) || !find_tool_result(content, id, json_array_size(content)))
            return fail(c,
                        "must answer tool_use '%.*s' of messages.%zu with a tool_result block: each tool_use needs "
                        "its tool_result in the next message, which must be a user message",
                        SHOW, id, prev_index);
    }
    return true;
}

static bool
one_message(actx_t *c, json_t *m, json_t *prev_tools, size_t index, json_t *msgs)
{
    if (!json_is_object(m))
        return fail(c, "must be an object with role and content, got %s", mg_json_type_name(m));
    const char *role;
    if (!required_string(c, m, "role", "'user' or 'assistant'", &role))
        return false;
    if (!mg_streq(role, "user") && !mg_streq(role, "assistant")) {
        path_push(c, "role", 0);
        if (mg_streq(role, "system"))
            return fail(c, "must be 'user' or 'assistant'; got 'system': put a system prompt in the top-level "
                           "system parameter");
        return fail(c, "must be 'user' or 'assistant'; got '%.*s'", SHOW, role);
    }
    json_t *content = required(c, m, "content", "a string or an array of content blocks");
    if (content == NULL)
        return false;
    size_t saved = path_push(c, "content", 0);
    if (!json_is_string(content) && !json_is_array(content))
        return fail(c, "must be a string or an array of content blocks, got %s", mg_json_type_name(content));
    bool ok = mg_streq(role, "user") ? user_message(c, content, prev_tools, index, msgs)
                                     : assistant_message(c, content, msgs);
    if (!ok)
        return false;
    path_pop(c, saved);
    return prev_tools == NULL || check_answered(c, prev_tools, index - 1, m);
}

/* ---- top-level members: each checks its value and writes what it maps to into chat ---- */

static bool
do_model(actx_t *c, json_t *v, json_t *chat)
{
    if (!check_string(c, v, true))
        return false;
    json_object_set(chat, "model", v);
    return true;
}

static bool
do_max_tokens(actx_t *c, json_t *v, json_t *chat)
{
    if (json_is_real(v))
        return fail(c, "must be an integer of at least 1; got %g", json_real_value(v));
    if (!json_is_integer(v))
        return fail(c, "must be an integer of at least 1, got %s", mg_json_type_name(v));
    json_int_t n = json_integer_value(v);
    if (n < 1)
        return fail(c, "must be an integer of at least 1; got %" JSON_INTEGER_FORMAT, n);
    if (c->model && c->model->max_tokens > 0 && n > c->model->max_tokens)
        return fail(c, "%" JSON_INTEGER_FORMAT " exceeds this model's limit of %lld", n,
                    (long long)c->model->max_tokens);
    json_object_set(chat, "max_tokens", v);
    return true;
}

static bool
do_messages(actx_t *c, json_t *v, json_t *chat)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of messages, got %s", mg_json_type_name(v));
    if (json_array_size(v) == 0)
        return fail(c, "must have at least one message");
    json_t *msgs = json_object_get(chat, "messages");
    json_t *prev_tools = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m)
    {
        size_t saved = path_push(c, NULL, i);
        if (!one_message(c, m, prev_tools, i, msgs))
            return false;
        path_pop(c, saved);
        prev_tools = tool_uses_of(m);
    }
    if (prev_tools != NULL) {
        path_push(c, NULL, json_array_size(v) - 1);
        return fail(c, "ends the conversation with a tool_use that nothing answers; send its tool_result in a user "
                       "message after it");
    }
    return true;
}

static bool
do_system(actx_t *c, json_t *v, json_t *chat)
{
    char *text = NULL;
    if (json_is_string(v)) {
        text = tp_strdup(json_string_value(v));
    } else if (json_is_array(v)) {
        size_t i;
        json_t *b;
        json_array_foreach(v, i, b)
        {
            size_t saved = path_push(c, NULL, i);
            const char *type = block_type(c, b);
            const char *s = NULL;
            if (type != NULL && !mg_streq(type, "text"))
                fail_block(c, type, "text");
            else if (type != NULL)
                s = block_text(c, b);
            if (s == NULL) {
                free(text);
                return false;
            }
            join_text(&text, s, "\n");
            path_pop(c, saved);
        }
    } else {
        return fail(c, "must be a string or an array of text blocks, got %s", mg_json_type_name(v));
    }
    if (text != NULL && *text)
        json_array_insert_new(json_object_get(chat, "messages"), 0,
                              json_pack("{s:s, s:s}", "role", "system", "content", text));
    free(text);
    return true;
}

static bool
check_tool_name(actx_t *c, const char *name, json_t *tools)
{
    size_t len = strlen(name);
    size_t saved = path_push(c, "name", 0);
    static const char rule[] = "must be 1 to 64 letters, digits, underscores or dashes (^[a-zA-Z0-9_-]{1,64}$)";
    if (len > MAX_NAME)
        return fail(c, "%s; got %zu characters", rule, len);
    if (len == 0 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != len)
        return fail(c, "%s; got '%.*s'", rule, SHOW, name);
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        if (mg_streq(mg_json_str(json_object_get(t, "function"), "name"), name))
            return fail(c, "'%s' is already the name of tools.%zu; tool names must be unique", name, i);
    }
    path_pop(c, saved);
    return true;
}

/* One custom tool → a chat function tool (new), or NULL after a refusal. `tools` holds the
 * earlier ones, for unique names. */
static json_t *
one_tool(actx_t *c, json_t *t, json_t *tools)
{
    if (!json_is_object(t)) {
        fail(c, "must be a tool (an object with name, description and input_schema), got %s", mg_json_type_name(t));
        return NULL;
    }
    const char *type, *name, *description;
    if (!optional_string(c, t, "type", true, &type))
        return NULL;
    if (type != NULL && !mg_streq(type, "custom")) {
        path_push(c, "type", 0);
        fail(c,
             "'%.*s' is one of Anthropic's server tools, which Anthropic runs; this gateway runs no tools, so only "
             "custom tools (name, description, input_schema) are accepted",
             SHOW, type);
        return NULL;
    }
    if (!required_string(c, t, "name", "the tool's name", &name) || !check_tool_name(c, name, tools) ||
        !optional_string(c, t, "description", false, &description))
        return NULL;
    json_t *schema = required(c, t, "input_schema", "a JSON Schema object with type 'object'");
    if (schema == NULL)
        return NULL;
    size_t saved = path_push(c, "input_schema", 0);
    if (!json_is_object(schema)) {
        fail(c, "must be a JSON Schema object with type 'object', got %s", mg_json_type_name(schema));
        return NULL;
    }
    if (!mg_streq(mg_json_str(schema, "type"), "object")) {
        path_push(c, "type", 0);
        fail(c, "must be 'object': a tool's input is an object");
        return NULL;
    }
    path_pop(c, saved);
    json_t *strict = json_object_get(t, "strict");
    if (strict != NULL && !json_is_null(strict)) {
        saved = path_push(c, "strict", 0);
        if (!check_bool(c, strict))
            return NULL;
        path_pop(c, saved);
    }
    json_t *fn = json_pack("{s:s}", "name", name);
    if (description != NULL)
        json_object_set_new(fn, "description", json_string(description));
    json_object_set(fn, "parameters", schema);
    if (json_is_boolean(strict))
        json_object_set(fn, "strict", strict);
    return json_pack("{s:s, s:o}", "type", "function", "function", fn);
}

static bool
do_tools(actx_t *c, json_t *v, json_t *chat)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of tools, got %s", mg_json_type_name(v));
    json_t *tools = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t)
    {
        size_t saved = path_push(c, NULL, i);
        json_t *tool = one_tool(c, t, tools);
        if (tool == NULL) {
            json_decref(tools);
            return false;
        }
        json_array_append_new(tools, tool);
        path_pop(c, saved);
    }
    if (json_array_size(tools) > 0)
        json_object_set_new(chat, "tools", tools);
    else
        json_decref(tools);
    return true;
}

static bool
do_tool_choice(actx_t *c, json_t *v, json_t *chat)
{
    if (!json_is_object(v))
        return fail(c, "must be an object with a type (auto, any, tool or none), got %s", mg_json_type_name(v));
    const char *type, *name = NULL;
    bool serial;
    if (!required_string(c, v, "type", "auto, any, tool or none", &type) ||
        !optional_bool(c, v, "disable_parallel_tool_use", &serial))
        return false;
    json_t *choice;
    if (mg_streq(type, "auto") || mg_streq(type, "none")) {
        choice = json_string(type);
    } else if (mg_streq(type, "any")) {
        choice = json_string("required");
    } else if (mg_streq(type, "tool")) {
        if (!required_string(c, v, "name", "the name of the tool to call", &name))
            return false;
        choice = json_pack("{s:s, s:{s:s}}", "type", "function", "function", "name", name);
    } else {
        path_push(c, "type", 0);
        return fail(c, "must be one of auto, any, tool, none; got '%.*s'", SHOW, type);
    }
    json_object_set_new(chat, "tool_choice", choice);
    if (serial && !mg_streq(type, "none"))
        json_object_set_new(chat, "parallel_tool_calls", json_false());
    return true;
}

static bool
do_sampling(actx_t *c, json_t *v, json_t *chat, const char *key)
{
    if (!check_unit_interval(c, v))
        return false;
    json_object_set(chat, key, v);
    return true;
}

static bool
do_temperature(actx_t *c, json_t *v, json_t *chat)
{
    return do_sampling(c, v, chat, "temperature");
}

static bool
do_top_p(actx_t *c, json_t *v, json_t *chat)
{
    return do_sampling(c, v, chat, "top_p");
}

static bool
do_top_k(actx_t *c, json_t *v, json_t *chat)
{
    (void)chat;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fail(c, "must be an integer of at least 0, got %s",
                    json_is_integer(v) ? "a negative number" : mg_json_type_name(v));
    return drop_or_refuse(c);
}

static bool
do_thinking(actx_t *c, json_t *v, json_t *chat)
{
    (void)chat;
    if (!json_is_object(v))
        return fail(c, "must be an object with a type, got %s", mg_json_type_name(v));
    const char *type;
    if (!required_string(c, v, "type", "enabled, disabled or adaptive", &type))
        return false;
    return mg_streq(type, "disabled") || drop_or_refuse(c);
}

static bool
do_stop_sequences(actx_t *c, json_t *v, json_t *chat)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of strings, got %s", mg_json_type_name(v));
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_string(c, s, true))
            return false;
        path_pop(c, saved);
    }
    if (json_array_size(v) > 0)
        json_object_set_new(chat, "stop", json_deep_copy(v));
    return true;
}

static bool
do_stream(actx_t *c, json_t *v, json_t *chat)
{
    if (!check_bool(c, v))
        return false;
    if (json_is_true(v)) {
        json_object_set_new(chat, "stream", json_true());
        json_object_set_new(chat, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    return true;
}

static bool
do_metadata(actx_t *c, json_t *v, json_t *chat)
{
    if (!json_is_object(v))
        return fail(c, "must be an object, got %s", mg_json_type_name(v));
    const char *user;
    if (!optional_string(c, v, "user_id", false, &user))
        return false;
    if (user != NULL && *user)
        json_object_set_new(chat, "user", json_string(user));
    return true;
}

/* Members that would make Anthropic run tools for the client. */
static bool
do_runs_tools(actx_t *c, json_t *v, json_t *chat)
{
    (void)chat;
    if (json_is_array(v) && json_array_size(v) == 0)
        return true;
    return fail(c, "is not supported: it makes Anthropic's platform run tools, and this gateway runs no tools");
}

typedef bool (*top_fn)(actx_t *c, json_t *v, json_t *chat);

static const struct top_field {
    const char *name;
    top_fn fn;
} top_fields[] = {
    { "model", do_model },
    { "max_tokens", do_max_tokens },
    { "messages", do_messages },
    { "system", do_system },
    { "tools", do_tools },
    { "tool_choice", do_tool_choice },
    { "temperature", do_temperature },
    { "top_p", do_top_p },
    { "top_k", do_top_k },
    { "stop_sequences", do_stop_sequences },
    { "stream", do_stream },
    { "metadata", do_metadata },
    { "thinking", do_thinking },
    { "mcp_servers", do_runs_tools },
    { "container", do_runs_tools },
};

static const struct top_field *
find_top(const char *name)
{
    for (size_t i = 0; i < sizeof top_fields / sizeof top_fields[0]; i++)
        if (strcmp(top_fields[i].name, name) == 0)
            return &top_fields[i];
    return NULL;
}

/* tool_choice against tools: a named tool must be among them; any and tool need tools; auto
 * and none without tools are dropped (chat upstreams refuse a tool_choice without tools). */
static bool
relate_tool_choice(actx_t *c, json_t *body, json_t *chat)
{
    json_t *choice = json_object_get(body, "tool_choice");
    json_t *tools = json_object_get(chat, "tools");
    const char *type = mg_json_str(choice, "type");
    if (json_object_get(chat, "tool_choice") == NULL)
        return true;
    path_push(c, "tool_choice", 0);
    if (tools == NULL && (mg_streq(type, "any") || mg_streq(type, "tool")))
        return fail(c, "is '%s', but the request defines no tools", type);
    if (tools == NULL) {
        json_object_del(chat, "tool_choice");
        json_object_del(chat, "parallel_tool_calls");
        return true;
    }
    const char *name = mg_json_str(choice, "name");
    if (!mg_streq(type, "tool"))
        return true;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        if (mg_streq(mg_json_str(json_object_get(t, "function"), "name"), name))
            return true;
    }
    path_push(c, "name", 0);
    return fail(c, "'%.*s' is not the name of any of the request's tools", SHOW, name);
}

bool
mg_anthropic_request(json_t *body, const tp_model_config_t *model, json_t **chat, mg_invalid_t *out)
{
    memset(out, 0, sizeof *out);
    *chat = NULL;
    actx_t c = { .r = { .out = out, .dotted = true, .sep = ": ", .root = NULL }, .model = model };
    if (!json_is_object(body))
        return fail(&c, "the request body must be a JSON object, got %s", mg_json_type_name(body));
    if (!required(&c, body, "model", "the name of the model") ||
        !required(&c, body, "max_tokens", "the most tokens to generate, an integer of at least 1") ||
        !required(&c, body, "messages", "an array of user and assistant messages"))
        return false;
    json_t *built = json_pack("{s:n, s:[], s:n}", "model", "messages", "max_tokens");
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        const struct top_field *f = find_top(key);
        size_t saved = path_push(&c, key, 0);
        bool ok;
        if (f == NULL)
            ok = drop_or_refuse(&c); /* never forwarded: the upstream speaks chat */
        else
            ok = json_is_null(v) || f->fn(&c, v, built); /* null: absent (required ones were checked) */
        if (!ok)
            goto refused;
        path_pop(&c, saved);
    }
    if (!relate_tool_choice(&c, body, built))
        goto refused;
    memset(out, 0, sizeof *out);
    *chat = built;
    return true;
refused:
    json_decref(built);
    return false;
}

/* ---- answers ---- */

/* {"type":type,"message":message} (new); a message jansson refuses (not UTF-8) is replaced. */
static json_t *
error_object(const char *type, const char *message)
{
    json_t *e = json_pack("{s:s, s:s}", "type", type, "message", message != NULL ? message : "");
    if (e == NULL)
        e = json_pack("{s:s, s:s}", "type", type, "message", "(an error whose message was not UTF-8)");
    return e;
}

static const char *
model_name(const mg_anthropic_ctx_t *ctx)
{
    return ctx->public_model != NULL ? ctx->public_model : "";
}

/* The entry of the request's stop_sequences equal to s[0..len) (borrowed), or NULL. */
static const char *
listed_stop(const mg_anthropic_ctx_t *ctx, const char *s, size_t len)
{
    size_t i;
    json_t *seq;
    json_array_foreach(ctx->stop_sequences, i, seq)
    {
        if (json_is_string(seq) && json_string_length(seq) == len && memcmp(json_string_value(seq), s, len) == 0)
            return json_string_value(seq);
    }
    return NULL;
}

/* The first of the request's stop_sequences that text[0..len) ends with (borrowed), or NULL. */
static const char *
ending_stop(const mg_anthropic_ctx_t *ctx, const char *text, size_t len)
{
    size_t i;
    json_t *seq;
    json_array_foreach(ctx->stop_sequences, i, seq)
    {
        size_t n = json_string_length(seq);
        if (json_is_string(seq) && n > 0 && n <= len && memcmp(text + len - n, json_string_value(seq), n) == 0)
            return json_string_value(seq);
    }
    return NULL;
}

/* The stop sequence the upstream names as matched (vLLM's choices[].stop_reason), or NULL. */
static const char *
reported_stop(const mg_anthropic_ctx_t *ctx, json_t *choice)
{
    json_t *reason = json_object_get(choice, "stop_reason");
    if (!json_is_string(reason))
        return NULL;
    return listed_stop(ctx, json_string_value(reason), json_string_length(reason));
}

/* finish_reason → stop_reason; *sequence is the matched stop sequence for "stop_sequence". */
static const char *
stop_reason(const char *finish, bool tools, const char *matched, const char **sequence)
{
    *sequence = NULL;
    if (mg_streq(finish, "length"))
        return "max_tokens";
    if (mg_streq(finish, "tool_calls") || mg_streq(finish, "function_call"))
        return "tool_use";
    if (mg_streq(finish, "content_filter"))
        return "refusal";
    if (tools)
        return "tool_use";
    if (matched != NULL) {
        *sequence = matched;
        return "stop_sequence";
    }
    return "end_turn";
}

/* The choice with index 0 of a completion or chunk (borrowed), or NULL. */
static json_t *
first_choice(json_t *obj)
{
    size_t i;
    json_t *choice;
    json_array_foreach(json_object_get(obj, "choices"), i, choice)
    {
        json_t *index = json_object_get(choice, "index");
        if (json_is_object(choice) && (!json_is_integer(index) || json_integer_value(index) == 0))
            return choice;
    }
    return NULL;
}

static json_int_t
usage_count(json_t *usage, const char *key)
{
    json_t *v = json_object_get(usage, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 0;
}

/* A chat tool call → a tool_use block (new). Arguments that are not a JSON object → {}. */
static json_t *
tool_use_block(const mg_anthropic_ctx_t *ctx, json_t *call, size_t position)
{
    json_t *fn = json_object_get(call, "function");
    const char *id = mg_json_str(call, "id");
    const char *name = mg_json_str(fn, "name");
    const char *arguments = mg_json_str(fn, "arguments");
    json_t *input = arguments != NULL ? json_loads(arguments, JSON_DECODE_ANY, NULL) : NULL;
    if (!json_is_object(input)) {
        json_decref(input);
        input = json_object();
    }
    char made[160];
    if (id == NULL || *id == '\0') {
        snprintf(made, sizeof made, "toolu_%s_%zu", ctx->message_id != NULL ? ctx->message_id : "", position);
        id = made;
    }
    return json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id", id, "name", name != NULL ? name : "", "input",
                     input);
}

json_t *
mg_anthropic_message(const mg_anthropic_ctx_t *ctx, json_t *completion)
{
    json_t *choice = first_choice(completion);
    json_t *message = json_object_get(choice, "message");
    json_t *content = json_array();
    json_t *text = json_object_get(message, "content");
    if (!json_is_string(text) || json_string_length(text) == 0)
        text = json_object_get(message, "refusal");
    if (json_is_string(text) && json_string_length(text) > 0)
        json_array_append_new(content, json_pack("{s:s, s:O}", "type", "text", "text", text));
    size_t i;
    json_t *call;
    bool tools = false;
    json_array_foreach(json_object_get(message, "tool_calls"), i, call)
    {
        if (!json_is_object(call))
            continue;
        json_array_append_new(content, tool_use_block(ctx, call, i));
        tools = true;
    }
    const char *matched = reported_stop(ctx, choice);
    if (matched == NULL && json_is_string(text))
        matched = ending_stop(ctx, json_string_value(text), json_string_length(text));
    const char *sequence;
    const char *reason = stop_reason(mg_json_str(choice, "finish_reason"), tools, matched, &sequence);
    json_t *usage = json_object_get(completion, "usage");
    json_t *msg = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s?, s:{s:I, s:I}}", "id",
                            ctx->message_id != NULL ? ctx->message_id : "", "type", "message", "role", "assistant",
                            "model", model_name(ctx), "content", content, "stop_reason", reason, "stop_sequence",
                            sequence, "usage", "input_tokens", usage_count(usage, "prompt_tokens"), "output_tokens",
                            usage_count(usage, "completion_tokens"));
    assert(msg != NULL); /* every string above came from valid JSON or is ours */
    return msg;
}

/* ---- the stream ---- */

static void
add_text(mg_buffer_t *out, const char *s)
{
    mg_buffer_add(out, s, strlen(s));
}

/* Appends "event: <type>\ndata: <data>\n\n" (steals data). */
static void
send_event(mg_buffer_t *out, const char *type, json_t *data)
{
    assert(data != NULL); /* built from valid JSON strings and our own */
    char *text = json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(data);
    if (text == NULL)
        tp_fatal("json_dumps: out of memory");
    add_text(out, "event: ");
    add_text(out, type);
    add_text(out, "\ndata: ");
    add_text(out, text);
    add_text(out, "\n\n");
    free(text);
}

/* A content_block_delta whose delta is {"type":kind, member: value}; written as text, since it
 * is the event sent most (value is a JSON string from the chunk). */
static void
send_delta(mg_buffer_t *out, int index, const char *kind, const char *member, json_t *value)
{
    char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
    if (text == NULL)
        tp_fatal("json_dumps: out of memory");
    char head[192];
    int n = snprintf(head, sizeof head,
                     "event: content_block_delta\ndata: "
                     "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"%s\",\"%s\":",
                     index, kind, member);
    assert(n > 0 && (size_t)n < sizeof head);
    mg_buffer_add(out, head, (size_t)n);
    add_text(out, text);
    add_text(out, "}}\n\n");
    free(text);
}

void
mg_anthropic_stream_init(mg_anthropic_stream_t *s, const mg_anthropic_ctx_t *ctx)
{
    memset(s, 0, sizeof *s);
    s->ctx = *ctx;
    s->block = -1;
    s->open_tool = -1;
    s->max_tool = -1;
}

static void
send_start(mg_anthropic_stream_t *s, mg_buffer_t *out)
{
    s->started = true;
    send_event(out, "message_start",
               json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:[], s:n, s:n, s:{s:I, s:I}}}", "type", "message_start",
                         "message", "id", s->ctx.message_id != NULL ? s->ctx.message_id : "", "type", "message", "role",
                         "assistant", "model", model_name(&s->ctx), "content", "stop_reason", "stop_sequence", "usage",
                         "input_tokens", (json_int_t)s->input_tokens, "output_tokens", (json_int_t)0));
}

static void
close_block(mg_anthropic_stream_t *s, mg_buffer_t *out)
{
    if (s->block < 0)
        return;
    send_event(out, "content_block_stop", json_pack("{s:s, s:i}", "type", "content_block_stop", "index", s->block));
    s->block = -1;
    s->open_tool = -1;
}

/* Closes the open block and opens the next one with content_block (stolen). */
static void
open_block(mg_anthropic_stream_t *s, json_t *content_block, mg_buffer_t *out)
{
    close_block(s, out);
    s->block = s->next_block++;
    send_event(
        out, "content_block_start",
        json_pack("{s:s, s:i, s:o}", "type", "content_block_start", "index", s->block, "content_block", content_block));
}

/* Keeps the last bytes of the text sent, to tell at the end whether it ended with a stop
 * sequence. */
static void
remember_tail(mg_anthropic_stream_t *s, const char *text, size_t len)
{
    size_t cap = sizeof s->tail;
    if (len >= cap) {
        memcpy(s->tail, text + len - cap, cap);
        s->tail_len = cap;
        return;
    }
    if (s->tail_len + len > cap) {
        size_t drop = s->tail_len + len - cap;
        memmove(s->tail, s->tail + drop, s->tail_len - drop);
        s->tail_len -= drop;
    }
    memcpy(s->tail + s->tail_len, text, len);
    s->tail_len += len;
}

static void
stream_text(mg_anthropic_stream_t *s, json_t *text, mg_buffer_t *out)
{
    if (!json_is_string(text) || json_string_length(text) == 0)
        return;
    if (s->block < 0 || s->open_tool >= 0)
        open_block(s, json_pack("{s:s, s:s}", "type", "text", "text", ""), out);
    send_delta(out, s->block, "text_delta", "text", text);
    remember_tail(s, json_string_value(text), json_string_length(text));
}

/* FNV-1a: tells one tool call id from another without keeping it. */
static uint64_t
id_hash(const char *id)
{
    uint64_t h = 14695981039346656037ull;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

/* One fragment of a chat tool call: it continues the open tool_use block (same index, no new
 * id), opens a new one (an index not seen yet, or a new id), or is dropped (a fragment of a
 * call whose block was closed: blocks cannot reopen). */
static void
stream_tool_call(mg_anthropic_stream_t *s, json_t *call, mg_buffer_t *out)
{
    json_t *fn = json_object_get(call, "function");
    json_t *jindex = json_object_get(call, "index");
    json_int_t raw = json_is_integer(jindex) ? json_integer_value(jindex) : 0;
    int index = raw < 0 ? 0 : raw > INT_MAX - 1 ? INT_MAX - 1 : (int)raw;
    const char *id = mg_json_str(call, "id");
    bool has_id = id != NULL && *id != '\0';
    bool fresh = has_id && (s->open_tool < 0 || id_hash(id) != s->tool_id_hash);
    bool continues = index == s->open_tool && !fresh;
    if (!continues && index <= s->max_tool && !fresh)
        return;
    if (!continues) {
        char made[160];
        if (!has_id) {
            snprintf(made, sizeof made, "toolu_%s_%d", s->ctx.message_id != NULL ? s->ctx.message_id : "",
                     s->next_block);
            id = made;
        }
        const char *name = mg_json_str(fn, "name");
        open_block(
            s,
            json_pack("{s:s, s:s, s:s, s:{}}", "type", "tool_use", "id", id, "name", name != NULL ? name : "", "input"),
            out);
        s->open_tool = index;
        s->max_tool = index > s->max_tool ? index : s->max_tool;
        s->tool_id_hash = id_hash(id);
    }
    json_t *arguments = json_object_get(fn, "arguments");
    if (json_is_string(arguments) && json_string_length(arguments) > 0)
        send_delta(out, s->block, "input_json_delta", "partial_json", arguments);
}

static void
stream_choice(mg_anthropic_stream_t *s, json_t *choice, mg_buffer_t *out)
{
    json_t *delta = json_object_get(choice, "delta");
    if (json_is_object(delta)) {
        stream_text(s, json_object_get(delta, "content"), out);
        stream_text(s, json_object_get(delta, "refusal"), out);
        size_t i;
        json_t *call;
        json_array_foreach(json_object_get(delta, "tool_calls"), i, call)
        {
            if (json_is_object(call))
                stream_tool_call(s, call, out);
        }
    }
    const char *finish = mg_json_str(choice, "finish_reason");
    if (finish != NULL)
        snprintf(s->finish, sizeof s->finish, "%s", finish);
    const char *matched = reported_stop(&s->ctx, choice);
    if (matched != NULL)
        s->stop_sequence = matched;
}

void
mg_anthropic_stream_chunk(mg_anthropic_stream_t *s, json_t *chunk, mg_buffer_t *out)
{
    if (s->ended)
        return;
    json_t *usage = json_object_get(chunk, "usage");
    if (json_is_object(usage)) {
        s->input_tokens = usage_count(usage, "prompt_tokens");
        s->output_tokens = usage_count(usage, "completion_tokens");
        s->usage_seen = true;
    }
    if (!s->started)
        send_start(s, out);
    json_t *choice = first_choice(chunk);
    if (choice != NULL)
        stream_choice(s, choice, out);
}

void
mg_anthropic_stream_end(mg_anthropic_stream_t *s, mg_buffer_t *out)
{
    if (s->ended)
        return;
    if (!s->started)
        send_start(s, out);
    close_block(s, out);
    const char *matched = s->stop_sequence;
    if (matched == NULL)
        matched = ending_stop(&s->ctx, s->tail, s->tail_len);
    const char *sequence;
    const char *reason = stop_reason(s->finish[0] ? s->finish : NULL, s->max_tool >= 0, matched, &sequence);
    json_t *usage = json_object();
    if (s->usage_seen)
        json_object_set_new(usage, "input_tokens", json_integer(s->input_tokens));
    json_object_set_new(usage, "output_tokens", json_integer(s->output_tokens));
    send_event(out, "message_delta",
               json_pack("{s:s, s:{s:s, s:s?}, s:o}", "type", "message_delta", "delta", "stop_reason", reason,
                         "stop_sequence", sequence, "usage", usage));
    send_event(out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    s->ended = true;
}

void
mg_anthropic_stream_error(mg_anthropic_stream_t *s, const char *type, const char *message, mg_buffer_t *out)
{
    if (s->ended)
        return;
    if (!s->started)
        send_start(s, out);
    send_event(
        out, "error",
        json_pack("{s:s, s:o}", "type", "error", "error", error_object(type != NULL ? type : "api_error", message)));
    s->ended = true;
}

/* ---- errors ---- */

const char *
mg_anthropic_error_type(int status)
{
    switch (status) {
    case 400:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
    case 529:
        return "overloaded_error";
    default:
        break;
    }
    if (status >= 400 && status < 500)
        return "invalid_request_error";
    return "api_error";
}

json_t *
mg_anthropic_error_body(int status, const char *message, const char *request_id)
{
    json_t *body =
        json_pack("{s:s, s:o}", "type", "error", "error", error_object(mg_anthropic_error_type(status), message));
    if (request_id != NULL)
        json_object_set_new(body, "request_id", json_string(request_id));
    return body;
}
