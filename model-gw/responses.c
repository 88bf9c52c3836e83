#include "responses.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refusal.h"

/*
 * How it works.
 *
 * Validation walks the body as validate.c does for chat: required members first, then every
 * member in document order, each with its checker, then the relations between well-formed
 * members. The JSON path of the value being checked lives in out->param: path_push() extends it
 * on the way down and path_pop() shortens it on the way up, but only on success, so when a
 * checker fails the path of the value it refused is already in place and fail() only says what
 * is wrong ("input[2].call_id is required").
 *
 * Translation to chat happens on the normalised input items (every item has an id and a type,
 * every message's content is an array of parts), which are also what is stored for the
 * continuation of this response. Item ids are made up from the request id for input items
 * ("msg_<seed>_in<position>") and from the response id for output items ("msg_<suffix>_<output
 * index>"), so the two never meet even when the response id is made from the request id.
 *
 * The stream keeps the output items in s->output as the client's SDK accumulates them from the
 * events: an item is appended at response.output_item.added with empty content (a message) or
 * empty arguments (a function call); the text of the open part, or the arguments of the open
 * call, grow in s->acc (not in a JSON string, which would be copied on every delta) and are
 * written into the item when it closes, or when the stream fails.
 */

#define TEXT_JOIN "\n" /* between the text parts of one message or tool output, for chat */

/* Whether o has member key with a value other than null. */
static bool
present(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return v && !json_is_null(v);
}

/* A deep copy of v (new reference), or null when v is NULL. */
static json_t *
copy_or_null(json_t *v)
{
    return v ? json_deep_copy(v) : json_null();
}

/* ---- validation: paths and messages ---- */

typedef struct vctx {
    mg_refusal_t r; /* the path being checked, and the refusal */
    const tp_model_config_t *model;
    json_t *body;
} vctx_t;

/* refusal.h's path and refusal helpers, on this checker's context. */
#define path_push(c, key, index) mg_refusal_push(&(c)->r, (key), (index))
#define path_pop(c, saved)       mg_refusal_pop(&(c)->r, (saved))
#define fail(c, ...)             mg_refusal_fail(&(c)->r, __VA_ARGS__)

/* Fails at member key of the current value (the path is extended and left so). */
static bool fail_at(vctx_t *c, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool
fail_at(vctx_t *c, const char *key, const char *fmt, ...)
{
    path_push(c, key, 0);
    char text[sizeof c->r.out->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return fail(c, "%s", text);
}

typedef bool (*check_fn)(vctx_t *c, json_t *v);

/* Checks member key of o with check when it is present and not null (or, when required, fails
 * when it is absent or null). */
static bool
check_member(vctx_t *c, json_t *o, const char *key, check_fn check, bool required)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return fail_at(c, key, "is required");
        return true;
    }
    size_t saved = path_push(c, key, 0);
    if (!check(c, v))
        return false;
    path_pop(c, saved);
    return true;
}

/* ---- validation: scalars ---- */

static bool
chk_string(vctx_t *c, json_t *v)
{
    if (!json_is_string(v))
        return fail(c, "must be a string, got %s", mg_json_type_name(v));
    return true;
}

static bool
chk_nonempty_string(vctx_t *c, json_t *v)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return fail(c, "must be a non-empty string, got %s",
                    json_is_string(v) ? "an empty string" : mg_json_type_name(v));
    return true;
}

static bool
chk_bool(vctx_t *c, json_t *v)
{
    if (!json_is_boolean(v))
        return fail(c, "must be true or false, got %s", mg_json_type_name(v));
    return true;
}

static bool
chk_object(vctx_t *c, json_t *v)
{
    if (!json_is_object(v))
        return fail(c, "must be an object, got %s", mg_json_type_name(v));
    return true;
}

static bool
chk_array(vctx_t *c, json_t *v)
{
    if (!json_is_array(v))
        return fail(c, "must be an array, got %s", mg_json_type_name(v));
    return true;
}

static bool
chk_temperature(vctx_t *c, json_t *v)
{
    return mg_refusal_range(&c->r, v, false, 0, 2);
}

static bool
chk_top_p(vctx_t *c, json_t *v)
{
    return mg_refusal_range(&c->r, v, false, 0, 1);
}

static bool
chk_top_logprobs(vctx_t *c, json_t *v)
{
    return mg_refusal_range(&c->r, v, true, 0, 20);
}

static bool
chk_positive_int(vctx_t *c, json_t *v)
{
    return mg_refusal_range(&c->r, v, true, 1, INFINITY);
}

/* max_output_tokens: a positive integer within the model's configured cap. */
static bool
chk_max_output_tokens(vctx_t *c, json_t *v)
{
    if (!chk_positive_int(c, v))
        return false;
    json_int_t n = json_integer_value(v);
    if (c->model && c->model->max_tokens > 0 && n > c->model->max_tokens)
        return fail(c, "%" JSON_INTEGER_FORMAT " exceeds this model's limit of %lld", n,
                    (long long)c->model->max_tokens);
    return true;
}

static const char *const truncation_choices[] = { "auto", "disabled", NULL };
static const char *const status_choices[] = { "in_progress", "completed", "incomplete", NULL };
static const char *const role_choices[] = { "user", "assistant", "system", "developer", NULL };
static const char *const detail_choices[] = { "auto", "low", "high", "original", NULL };
static const char *const verbosity_choices[] = { "low", "medium", "high", NULL };
static const char *const tool_choice_modes[] = { "none", "auto", "required", NULL };

static bool
chk_truncation(vctx_t *c, json_t *v)
{
    return mg_refusal_enum(&c->r, v, truncation_choices);
}

static bool
chk_status(vctx_t *c, json_t *v)
{
    return mg_refusal_enum(&c->r, v, status_choices);
}

static bool
chk_role(vctx_t *c, json_t *v)
{
    return mg_refusal_enum(&c->r, v, role_choices);
}

static bool
chk_detail(vctx_t *c, json_t *v)
{
    return mg_refusal_enum(&c->r, v, detail_choices);
}

static bool
chk_verbosity(vctx_t *c, json_t *v)
{
    return mg_refusal_enum(&c->r, v, verbosity_choices);
}

/* Function and schema names: ^[a-zA-Z0-9_-]{1,64}$. */
static bool
chk_name(vctx_t *c, json_t *v)
{
    return mg_refusal_name(&c->r, v);
}

/* An array of strings (include). */
static bool
chk_strings(vctx_t *c, json_t *v)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of strings, got %s", mg_json_type_name(v));
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s)
    {
        if (!json_is_string(s)) {
            path_push(c, NULL, i);
            return fail(c, "must be a string, got %s", mg_json_type_name(s));
        }
    }
    return true;
}

/* metadata: at most 16 pairs of strings, keys up to 64 characters, values up to 512. */
static bool
chk_metadata(vctx_t *c, json_t *v)
{
    return mg_refusal_metadata(&c->r, v);
}

/* ---- validation: features the gateway does not have ---- */

static bool
chk_background(vctx_t *c, json_t *v)
{
    if (!chk_bool(c, v))
        return false;
    if (json_is_true(v))
        return fail(c, "true is not supported: this gateway answers while the request is open; leave background "
                       "out or set it to false");
    return true;
}

static bool
chk_conversation(vctx_t *c, json_t *v)
{
    return fail(c, "is not supported by this gateway; continue a conversation with previous_response_id instead");
}

static bool
chk_prompt(vctx_t *c, json_t *v)
{
    return fail(c, "is not supported: this gateway has no stored prompt templates; send instructions and input "
                   "instead");
}

/* ---- validation: input items ---- */

/* Content part types, and which message roles may carry them (chat allows images and files in
 * user messages only, refusals in assistant messages only). */
enum { R_USER = 1u << 0, R_ASSISTANT = 1u << 1, R_SYSTEM = 1u << 2, R_ANY = R_USER | R_ASSISTANT | R_SYSTEM };

typedef struct part_kind {
    const char *type;
    unsigned roles;
    bool (*check)(vctx_t *c, json_t *part);
} part_kind_t;

static bool
chk_text_part(vctx_t *c, json_t *part)
{
    return check_member(c, part, "text", chk_string, true);
}

static bool
chk_refusal_part(vctx_t *c, json_t *part)
{
    return check_member(c, part, "refusal", chk_string, true);
}

static bool
chk_image_part(vctx_t *c, json_t *part)
{
    if (!check_member(c, part, "image_url", chk_nonempty_string, false) ||
        !check_member(c, part, "file_id", chk_string, false) || !check_member(c, part, "detail", chk_detail, false))
        return false;
    if (present(part, "image_url"))
        return true;
    if (present(part, "file_id"))
        return fail_at(c, "image_url",
                       "is required: this gateway passes images to its upstream by URL or data URL, not by file_id");
    return fail_at(c, "image_url", "is required (a URL or a data URL of the image)");
}

static bool
chk_file_part(vctx_t *c, json_t *part)
{
    if (present(part, "file_url"))
        return fail_at(c, "file_url", "is not supported by this gateway; send the file as file_data or file_id");
    if (!check_member(c, part, "file_data", chk_string, false) ||
        !check_member(c, part, "file_id", chk_string, false) || !check_member(c, part, "filename", chk_string, false))
        return false;
    if (!present(part, "file_data") && !present(part, "file_id"))
        return fail(c, "must have file_data (the content, base64) or file_id (an uploaded file)");
    return true;
}

static const part_kind_t part_kinds[] = {
    { "input_text", R_ANY, chk_text_part },       { "output_text", R_ANY, chk_text_part },
    { "input_image", R_USER, chk_image_part },    { "input_file", R_USER, chk_file_part },
    { "refusal", R_ASSISTANT, chk_refusal_part }, { NULL, 0, NULL },
};

static unsigned
role_bit(const char *role)
{
    if (mg_streq(role, "user"))
        return R_USER;
    if (mg_streq(role, "assistant"))
        return R_ASSISTANT;
    return R_SYSTEM;
}

/* Refuses a part type this role cannot carry, naming those it can. */
static bool
fail_part_type(vctx_t *c, json_t *type, const char *role, unsigned bit)
{
    char list[120] = "";
    size_t len = 0;
    for (const part_kind_t *k = part_kinds; k->type; k++) {
        if (!(k->roles & bit))
            continue;
        int n = snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", k->type);
        if (n > 0 && (size_t)n < sizeof list - len)
            len += (size_t)n;
    }
    path_push(c, "type", 0);
    if (!type)
        return fail(c, "is required; expected one of %s", list);
    if (json_is_string(type))
        return fail(c, "must be one of %s in a%s %s message; got '%.*s'", list, bit == R_ASSISTANT ? "n" : "", role,
                    MG_SHOW, json_string_value(type));
    return fail(c, "must be one of %s, got %s", list, mg_json_type_name(type));
}

static bool
check_part(vctx_t *c, json_t *part, const char *role)
{
    if (!json_is_object(part))
        return fail(c, "must be a content part object, got %s", mg_json_type_name(part));
    json_t *type = json_object_get(part, "type");
    unsigned bit = role_bit(role);
    for (const part_kind_t *k = part_kinds; k->type; k++)
        if (mg_streq(k->type, json_string_value(type)) && (k->roles & bit))
            return k->check(c, part);
    return fail_part_type(c, type, role, bit);
}

/* Message content: a string, or a non-empty array of the parts its role may carry. */
static bool
check_content(vctx_t *c, json_t *v, const char *role)
{
    if (json_is_string(v))
        return true;
    if (!json_is_array(v))
        return fail(c, "must be a string or an array of content parts, got %s", mg_json_type_name(v));
    if (json_array_size(v) == 0)
        return fail(c, "must not be an empty array; give a string or at least one content part");
    size_t i;
    json_t *part;
    json_array_foreach(v, i, part)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_part(c, part, role))
            return false;
        path_pop(c, saved);
    }
    return true;
}

static bool
chk_message_item(vctx_t *c, json_t *item)
{
    if (!check_member(c, item, "role", chk_role, true))
        return false;
    json_t *content = json_object_get(item, "content");
    if (!content || json_is_null(content))
        return fail_at(c, "content", "is required");
    size_t saved = path_push(c, "content", 0);
    if (!check_content(c, content, mg_json_str(item, "role")))
        return false;
    path_pop(c, saved);
    return true;
}

static bool
chk_arguments(vctx_t *c, json_t *v)
{
    if (!json_is_string(v))
        return fail(c, "must be a string (the arguments as JSON text), got %s", mg_json_type_name(v));
    return true;
}

static bool
chk_function_call_item(vctx_t *c, json_t *item)
{
    return check_member(c, item, "call_id", chk_nonempty_string, true) &&
           check_member(c, item, "name", chk_nonempty_string, true) &&
           check_member(c, item, "arguments", chk_arguments, true);
}

/* A function call's output: a string, or an array of input_text parts. */
static bool
chk_call_output(vctx_t *c, json_t *v)
{
    if (json_is_string(v))
        return true;
    if (!json_is_array(v))
        return fail(c, "must be a string or an array of input_text parts, got %s", mg_json_type_name(v));
    size_t i;
    json_t *part;
    json_array_foreach(v, i, part)
    {
        size_t saved = path_push(c, NULL, i);
        if (!json_is_object(part))
            return fail(c, "must be an input_text part object, got %s", mg_json_type_name(part));
        const char *type = mg_json_str(part, "type");
        if (!mg_streq(type, "input_text")) {
            path_push(c, "type", 0);
            if (type)
                return fail(c,
                            "must be 'input_text'; got '%.*s': this gateway's upstream takes only text as a "
                            "tool's output",
                            MG_SHOW, type);
            return fail(c, "must be 'input_text', got %s", mg_json_type_name(json_object_get(part, "type")));
        }
        if (!chk_text_part(c, part))
            return false;
        path_pop(c, saved);
    }
    return true;
}

static bool
chk_function_call_output_item(vctx_t *c, json_t *item)
{
    return check_member(c, item, "call_id", chk_nonempty_string, true) &&
           check_member(c, item, "output", chk_call_output, true);
}

static bool
chk_reasoning_item(vctx_t *c, json_t *item)
{
    return true; /* dropped on the way to chat: a chat upstream has no reasoning items */
}

typedef struct item_kind {
    const char *type;
    const char *id_prefix; /* of the ids made up for items without one */
    bool (*check)(vctx_t *c, json_t *item);
} item_kind_t;

static const item_kind_t item_kinds[] = {
    { "message", "msg_", chk_message_item },
    { "function_call", "fc_", chk_function_call_item },
    { "function_call_output", "fco_", chk_function_call_output_item },
    { "reasoning", "rs_", chk_reasoning_item },
    { NULL, NULL, NULL },
};
#define ITEM_CHOICES "message, function_call, function_call_output, reasoning"

/* The type of an input item: its "type", or "message" for an item with a role and no type
 * (an EasyInputMessage), or "item_reference" for one with only an id. NULL when none. */
static const char *
item_type(const json_t *item)
{
    json_t *type = json_object_get(item, "type");
    if (type && !json_is_null(type))
        return json_string_value(type);
    if (present(item, "role"))
        return "message";
    if (present(item, "id"))
        return "item_reference";
    return NULL;
}

static const item_kind_t *
find_item_kind(const char *type)
{
    for (const item_kind_t *k = item_kinds; k->type; k++)
        if (mg_streq(k->type, type))
            return k;
    return NULL;
}

static bool
fail_item_type(vctx_t *c, json_t *item, const char *type)
{
    if (mg_streq(type, "item_reference"))
        return fail(c, "is an item_reference, which this gateway does not support; continue a stored response with "
                       "previous_response_id, or send the item itself");
    json_t *t = json_object_get(item, "type");
    path_push(c, "type", 0);
    if (!t || json_is_null(t))
        return fail(c, "is required; expected one of " ITEM_CHOICES);
    if (!type)
        return fail(c, "must be a string, got %s", mg_json_type_name(t));
    if (strstr(type, "_call") || strstr(type, "mcp_"))
        return fail(c,
                    "'%.*s' is not supported: this gateway runs no tools, so only message, function_call, "
                    "function_call_output and reasoning items are allowed",
                    MG_SHOW, type);
    return fail(c, "must be one of " ITEM_CHOICES "; got '%.*s'", MG_SHOW, type);
}

static bool
check_item(vctx_t *c, json_t *item)
{
    if (!json_is_object(item))
        return fail(c, "must be an input item object, got %s", mg_json_type_name(item));
    const char *type = item_type(item);
    const item_kind_t *kind = find_item_kind(type);
    if (!kind)
        return fail_item_type(c, item, type);
    return check_member(c, item, "id", chk_string, false) && check_member(c, item, "status", chk_status, false) &&
           kind->check(c, item);
}

static bool
chk_input(vctx_t *c, json_t *v)
{
    if (json_is_string(v))
        return true;
    if (!json_is_array(v))
        return fail(c, "must be a string or an array of input items, got %s", mg_json_type_name(v));
    if (json_array_size(v) == 0)
        return fail(c, "must not be an empty array; give a string or at least one item");
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_item(c, item))
            return false;
        path_pop(c, saved);
    }
    return true;
}

/* ---- validation: tools, tool_choice, text ---- */

static bool
chk_parameters(vctx_t *c, json_t *v)
{
    if (!json_is_object(v))
        return fail(c, "must be a JSON Schema object, got %s", mg_json_type_name(v));
    json_t *type = json_object_get(v, "type");
    if (!type || mg_streq(json_string_value(type), "object"))
        return true;
    path_push(c, "type", 0);
    return fail(c, "must be 'object' (the arguments are a JSON object)");
}

static bool
check_tool(vctx_t *c, json_t *tool)
{
    if (!json_is_object(tool))
        return fail(c, "must be a tool object, got %s", mg_json_type_name(tool));
    json_t *type = json_object_get(tool, "type");
    const char *t = json_string_value(type);
    if (!mg_streq(t, "function")) {
        path_push(c, "type", 0);
        if (!type)
            return fail(c, "is required; expected 'function'");
        if (!t)
            return fail(c, "must be 'function', got %s", mg_json_type_name(type));
        return fail(c,
                    "'%.*s' is not supported: this gateway runs no tools, so only function tools (which your "
                    "application runs) are allowed",
                    MG_SHOW, t);
    }
    return check_member(c, tool, "name", chk_name, true) && check_member(c, tool, "description", chk_string, false) &&
           check_member(c, tool, "parameters", chk_parameters, false) &&
           check_member(c, tool, "strict", chk_bool, false);
}

static bool
chk_tools(vctx_t *c, json_t *v)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of tools, got %s", mg_json_type_name(v));
    size_t i;
    json_t *tool;
    json_array_foreach(v, i, tool)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_tool(c, tool))
            return false;
        const char *name = mg_json_str(tool, "name");
        for (size_t j = 0; j < i; j++)
            if (mg_streq(mg_json_str(json_array_get(v, j), "name"), name))
                return fail_at(c, "name", "'%s' is already defined by tools[%zu]; tool names must be unique", name, j);
        path_pop(c, saved);
    }
    return true;
}

static bool
chk_tool_choice(vctx_t *c, json_t *v)
{
    if (json_is_string(v))
        return mg_refusal_enum(&c->r, v, tool_choice_modes);
    if (!json_is_object(v))
        return fail(c, "must be none, auto, required or {\"type\": \"function\", \"name\": ...}, got %s",
                    mg_json_type_name(v));
    json_t *type = json_object_get(v, "type");
    const char *t = json_string_value(type);
    if (mg_streq(t, "function"))
        return check_member(c, v, "name", chk_nonempty_string, true);
    path_push(c, "type", 0);
    if (!type)
        return fail(c, "is required; expected 'function'");
    if (!t)
        return fail(c, "must be 'function', got %s", mg_json_type_name(type));
    return fail(c,
                "'%.*s' is not supported: this gateway runs no tools; use none, auto, required or "
                "{\"type\": \"function\", \"name\": ...}",
                MG_SHOW, t);
}

static bool
chk_json_schema_format(vctx_t *c, json_t *format)
{
    return check_member(c, format, "name", chk_name, true) && check_member(c, format, "schema", chk_object, true) &&
           check_member(c, format, "description", chk_string, false) &&
           check_member(c, format, "strict", chk_bool, false);
}

static bool
chk_format(vctx_t *c, json_t *v)
{
    static const char *const format_types[] = { "text", "json_object", "json_schema", NULL };
    if (!json_is_object(v))
        return fail(c, "must be an object with a type, got %s", mg_json_type_name(v));
    json_t *type = json_object_get(v, "type");
    if (!type)
        return fail_at(c, "type", "is required; expected one of text, json_object, json_schema");
    size_t saved = path_push(c, "type", 0);
    if (!mg_refusal_enum(&c->r, type, format_types))
        return false;
    path_pop(c, saved);
    return !mg_streq(json_string_value(type), "json_schema") || chk_json_schema_format(c, v);
}

static bool
chk_text(vctx_t *c, json_t *v)
{
    if (!json_is_object(v))
        return fail(c, "must be an object, got %s", mg_json_type_name(v));
    return check_member(c, v, "format", chk_format, false) && check_member(c, v, "verbosity", chk_verbosity, false);
}

static bool
chk_stream_options(vctx_t *c, json_t *v)
{
    if (!json_is_object(v))
        return fail(c, "must be an object, got %s", mg_json_type_name(v));
    return check_member(c, v, "include_obfuscation", chk_bool, false);
}

/* ---- validation: relations ---- */

static bool
rel_tool_choice(vctx_t *c, json_t *v)
{
    json_t *tools = json_object_get(c->body, "tools");
    size_t count = json_is_array(tools) ? json_array_size(tools) : 0;
    if (json_is_string(v)) {
        if (mg_streq(json_string_value(v), "required") && count == 0)
            return fail(c, "is 'required' but the request defines no tools");
        return true;
    }
    const char *name = mg_json_str(v, "name");
    char defined[200] = "";
    size_t len = 0;
    for (size_t i = 0; i < count; i++) {
        const char *n = mg_json_str(json_array_get(tools, i), "name");
        if (mg_streq(n, name))
            return true;
        int w = snprintf(defined + len, sizeof defined - len, "%s%s", len ? ", " : "", n);
        if (w > 0 && (size_t)w < sizeof defined - len)
            len += (size_t)w;
    }
    if (count == 0)
        return fail(c, "names function '%s', but the request defines no tools", name);
    return fail(c, "names function '%s', which is not in tools; defined: %s", name, defined);
}

static bool
rel_stream_options(vctx_t *c, json_t *v)
{
    if (!json_is_true(json_object_get(c->body, "stream")))
        return fail(c, "is only allowed when stream is true");
    return true;
}

/* ---- validation: the body ---- */

typedef struct field {
    const char *name;
    check_fn check;
    check_fn relate; /* checked against other fields once all are well formed */
    bool required;   /* null is refused too; otherwise null counts as absent */
} field_t;

/* POST /v1/responses: every documented member (model and input are required). */
static const field_t body_fields[] = {
    { .name = "model", .check = chk_nonempty_string, .required = true },
    { .name = "input", .check = chk_input, .required = true },
    { .name = "background", .check = chk_background },
    { .name = "context_management", .check = chk_array }, /* compaction: nothing to compact here */
    { .name = "conversation", .check = chk_conversation },
    { .name = "include", .check = chk_strings }, /* what it can ask for needs built-in tools or logprobs */
    { .name = "instructions", .check = chk_string },
    { .name = "max_output_tokens", .check = chk_max_output_tokens },
    { .name = "max_tool_calls", .check = chk_positive_int }, /* counts built-in tool calls, which never happen */
    { .name = "metadata", .check = chk_metadata },
    { .name = "parallel_tool_calls", .check = chk_bool },
    { .name = "previous_response_id", .check = chk_nonempty_string },
    { .name = "prompt", .check = chk_prompt },
    { .name = "prompt_cache_key", .check = chk_string },
    { .name = "prompt_cache_retention", .check = chk_string },
    { .name = "reasoning", .check = chk_object }, /* a chat upstream may have no reasoning settings */
    { .name = "safety_identifier", .check = chk_string },
    { .name = "service_tier", .check = chk_string },
    { .name = "store", .check = chk_bool },
    { .name = "stream", .check = chk_bool },
    { .name = "stream_options", .check = chk_stream_options, .relate = rel_stream_options },
    { .name = "temperature", .check = chk_temperature },
    { .name = "text", .check = chk_text },
    { .name = "tool_choice", .check = chk_tool_choice, .relate = rel_tool_choice },
    { .name = "tools", .check = chk_tools },
    { .name = "top_logprobs", .check = chk_top_logprobs },
    { .name = "top_p", .check = chk_top_p },
    { .name = "truncation", .check = chk_truncation },
    { .name = "user", .check = chk_string },
    { 0 },
};

static const field_t *
find_field(const char *name)
{
    for (const field_t *f = body_fields; f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static bool
check_body(vctx_t *c, json_t *body)
{
    if (!json_is_object(body))
        return fail(c, "must be a JSON object, got %s", mg_json_type_name(body));
    if (!json_object_get(body, "model"))
        return fail_at(c, "model", "is required");
    if (!json_object_get(body, "input"))
        return fail_at(c, "input", "is required (a string, or an array of input items)");
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        const field_t *f = find_field(key);
        if (!f) {
            if (c->model && c->model->deny_unknown_fields)
                return fail_at(c, key,
                               "is not part of the OpenAI Responses API, and this model refuses fields the API does "
                               "not define");
            continue;
        }
        if (json_is_null(v) && !f->required)
            continue;
        size_t saved = path_push(c, key, 0);
        if (!f->check(c, v))
            return false;
        path_pop(c, saved);
    }
    json_object_foreach(body, key, v)
    {
        const field_t *f = find_field(key);
        if (!f || !f->relate || json_is_null(v))
            continue;
        size_t saved = path_push(c, key, 0);
        if (!f->relate(c, v))
            return false;
        path_pop(c, saved);
    }
    return true;
}

/* ---- normalised input items ---- */

/* [{"type": "input_text" (or "output_text" for the assistant), "text": s}]. */
static json_t *
text_parts(const char *role, json_t *text)
{
    bool assistant = mg_streq(role, "assistant");
    json_t *part = json_pack("{s:s, s:O}", "type", assistant ? "output_text" : "input_text", "text", text);
    if (assistant)
        json_object_set_new(part, "annotations", json_array());
    return json_pack("[o]", part);
}

/* A validated input item with an id and a type first, then its members as given; a message's
 * string content becomes one text part. New reference. */
static json_t *
normalise_item(json_t *item, const char *seed, size_t position)
{
    const char *type = item_type(item);
    const item_kind_t *kind = find_item_kind(type);
    json_t *norm = json_object();
    if (json_is_string(json_object_get(item, "id"))) {
        json_object_set_new(norm, "id", json_deep_copy(json_object_get(item, "id")));
    } else {
        char id[200];
        snprintf(id, sizeof id, "%s%s_in%zu", kind->id_prefix, seed ? seed : "", position);
        json_object_set_new(norm, "id", json_string(id));
    }
    json_object_set_new(norm, "type", json_string(type));
    const char *key;
    json_t *v;
    json_object_foreach(item, key, v)
    {
        if (strcmp(key, "id") != 0 && strcmp(key, "type") != 0)
            json_object_set_new(norm, key, json_deep_copy(v));
    }
    json_t *content = json_object_get(item, "content");
    if (mg_streq(type, "message") && json_is_string(content))
        json_object_set_new(norm, "content", text_parts(mg_json_str(item, "role"), content));
    return norm;
}

static json_t *
normalise_input(json_t *input, const char *seed)
{
    json_t *items = json_array();
    if (json_is_string(input)) {
        json_t *msg = json_pack("{s:s, s:O}", "role", "user", "content", input);
        json_array_append_new(items, normalise_item(msg, seed, 0));
        json_decref(msg);
        return items;
    }
    size_t i;
    json_t *item;
    json_array_foreach(input, i, item)
    {
        json_array_append_new(items, normalise_item(item, seed, i));
    }
    return items;
}

bool
mg_responses_parse(json_t *body, const tp_model_config_t *model, const char *seed, mg_responses_req_t *req,
                   mg_invalid_t *out)
{
    vctx_t c = { .r = { .out = out, .dotted = false, .sep = " ", .root = "the request body" },
                 .model = model,
                 .body = body };
    out->param[0] = '\0';
    out->message[0] = '\0';
    memset(req, 0, sizeof *req);
    if (!check_body(&c, body))
        return false;
    req->input_items = normalise_input(json_object_get(body, "input"), seed);
    req->previous_response_id = mg_json_str(body, "previous_response_id");
    json_t *store = json_object_get(body, "store");
    req->store = !json_is_false(store);
    req->stream = json_is_true(json_object_get(body, "stream"));
    return true;
}

void
mg_responses_req_clear(mg_responses_req_t *req)
{
    json_decref(req->input_items);
    memset(req, 0, sizeof *req);
}

/* ---- items → chat messages ---- */

/* The texts of parts (input_text or output_text) joined with TEXT_JOIN (new reference), or NULL
 * when a part is something else. */
static json_t *
joined_text(json_t *parts)
{
    mg_buffer_t b = { 0 };
    size_t i;
    json_t *part;
    json_array_foreach(parts, i, part)
    {
        const char *type = mg_json_str(part, "type");
        json_t *text = json_object_get(part, "text");
        if (!(mg_streq(type, "input_text") || mg_streq(type, "output_text")) || !json_is_string(text)) {
            mg_buffer_release(&b);
            return NULL;
        }
        if (i > 0)
            mg_buffer_add(&b, TEXT_JOIN, strlen(TEXT_JOIN));
        mg_buffer_add(&b, json_string_value(text), json_string_length(text));
    }
    json_t *s = json_stringn(b.data ? b.data : "", b.len);
    mg_buffer_release(&b);
    return s;
}

/* One Responses content part as a chat content part (new reference), or NULL to drop it. */
static json_t *
chat_part(json_t *part)
{
    const char *type = mg_json_str(part, "type");
    if (mg_streq(type, "input_text") || mg_streq(type, "output_text"))
        return json_pack("{s:s, s:O}", "type", "text", "text", json_object_get(part, "text"));
    if (mg_streq(type, "refusal"))
        return json_pack("{s:s, s:O}", "type", "refusal", "refusal", json_object_get(part, "refusal"));
    if (mg_streq(type, "input_image")) {
        json_t *image = json_pack("{s:O}", "url", json_object_get(part, "image_url"));
        const char *detail = mg_json_str(part, "detail");
        if (mg_streq(detail, "auto") || mg_streq(detail, "low") || mg_streq(detail, "high"))
            json_object_set_new(image, "detail", json_string(detail)); /* chat has no "original" */
        return json_pack("{s:s, s:o}", "type", "image_url", "image_url", image);
    }
    if (mg_streq(type, "input_file")) {
        json_t *file = json_object();
        static const char *const members[] = { "file_data", "file_id", "filename", NULL };
        for (const char *const *m = members; *m; m++)
            if (json_is_string(json_object_get(part, *m)))
                json_object_set(file, *m, json_object_get(part, *m));
        return json_pack("{s:s, s:o}", "type", "file", "file", file);
    }
    return NULL;
}

/* A message item's content for chat (new reference): the joined text when every part is text
 * (some chat upstreams take only strings for system and assistant messages), else chat parts. */
static json_t *
chat_content(json_t *content)
{
    if (json_is_string(content))
        return json_incref(content);
    json_t *text = joined_text(content);
    if (text)
        return text;
    json_t *parts = json_array();
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *p = chat_part(part);
        if (p)
            json_array_append_new(parts, p);
    }
    return parts;
}

typedef struct conv {
    json_t *messages; /* the chat messages so far */
    json_t *calls;    /* call_id → true once answered, false while awaiting its output */
    const char *unanswered_first;
} conv_t;

static void
add_message_item(conv_t *v, json_t *item)
{
    const char *role = mg_json_str(item, "role");
    json_t *content = json_object_get(item, "content");
    if (!role || !content)
        return; /* a malformed stored item */
    json_t *msg = json_pack("{s:s, s:o}", "role", mg_streq(role, "developer") ? "system" : role, "content",
                            chat_content(content));
    json_array_append_new(v->messages, msg);
}

/* A function_call joins the tool calls of the assistant message just before it, or starts one. */
static void
add_function_call(conv_t *v, json_t *item)
{
    const char *call_id = mg_json_str(item, "call_id");
    json_t *name = json_object_get(item, "name");
    json_t *args = json_object_get(item, "arguments");
    if (!call_id || !json_is_string(name))
        return;
    json_t *call = json_pack("{s:s, s:s, s:{s:O, s:o}}", "id", call_id, "type", "function", "function", "name", name,
                             "arguments", json_is_string(args) ? json_incref(args) : json_string(""));
    size_t n = json_array_size(v->messages);
    json_t *last = n ? json_array_get(v->messages, n - 1) : NULL;
    if (!mg_streq(mg_json_str(last, "role"), "assistant")) {
        last = json_pack("{s:s, s:n}", "role", "assistant", "content");
        json_array_append_new(v->messages, last);
    }
    json_t *calls = json_object_get(last, "tool_calls");
    if (!calls) {
        calls = json_array();
        json_object_set_new(last, "tool_calls", calls);
    }
    json_array_append_new(calls, call);
    json_object_set_new(v->calls, call_id, json_false());
}

static bool
add_function_call_output(conv_t *v, json_t *item, mg_invalid_t *out)
{
    const char *call_id = mg_json_str(item, "call_id");
    json_t *output = json_object_get(item, "output");
    if (!call_id)
        return true; /* a malformed stored item */
    if (!json_object_get(v->calls, call_id)) {
        snprintf(out->param, sizeof out->param, "input");
        snprintf(out->message, sizeof out->message, "No tool call found for function call output with call_id %s.",
                 call_id);
        return false;
    }
    json_object_set_new(v->calls, call_id, json_true());
    json_t *content = json_is_string(output) ? json_incref(output) : joined_text(output);
    json_t *msg = json_pack("{s:s, s:s, s:o}", "role", "tool", "tool_call_id", call_id, "content",
                            content ? content : json_string(""));
    json_array_append_new(v->messages, msg);
    return true;
}

static bool
add_items(conv_t *v, json_t *items, mg_invalid_t *out)
{
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        const char *type = item_type(item);
        if (mg_streq(type, "message"))
            add_message_item(v, item);
        else if (mg_streq(type, "function_call"))
            add_function_call(v, item);
        else if (mg_streq(type, "function_call_output") && !add_function_call_output(v, item, out))
            return false;
        /* reasoning and anything else: dropped */
    }
    return true;
}

/* Every function call needs its output before the model can go on, as OpenAI requires. */
static bool
check_answered(conv_t *v, mg_invalid_t *out)
{
    const char *call_id;
    json_t *answered;
    json_object_foreach(v->calls, call_id, answered)
    {
        if (json_is_false(answered)) {
            snprintf(out->param, sizeof out->param, "input");
            snprintf(out->message, sizeof out->message,
                     "No tool output found for function call %s; send a function_call_output item with this call_id.",
                     call_id);
            return false;
        }
    }
    return true;
}

static json_t *
chat_tools(json_t *tools)
{
    json_t *chat = json_array();
    size_t i;
    json_t *tool;
    json_array_foreach(tools, i, tool)
    {
        json_t *fn = json_pack("{s:O}", "name", json_object_get(tool, "name"));
        static const char *const members[] = { "description", "parameters", "strict", NULL };
        for (const char *const *m = members; *m; m++)
            if (present(tool, *m))
                json_object_set_new(fn, *m, json_deep_copy(json_object_get(tool, *m)));
        json_array_append_new(chat, json_pack("{s:s, s:o}", "type", "function", "function", fn));
    }
    return chat;
}

static json_t *
chat_tool_choice(json_t *choice)
{
    if (json_is_string(choice))
        return json_incref(choice);
    return json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name", json_object_get(choice, "name"));
}

/* text.format → response_format (new reference), or NULL for plain text. */
static json_t *
chat_response_format(json_t *text)
{
    json_t *format = json_object_get(text, "format");
    const char *type = mg_json_str(format, "type");
    if (mg_streq(type, "json_object"))
        return json_pack("{s:s}", "type", "json_object");
    if (!mg_streq(type, "json_schema"))
        return NULL;
    json_t *schema = json_object();
    static const char *const members[] = { "name", "description", "schema", "strict", NULL };
    for (const char *const *m = members; *m; m++)
        if (present(format, *m))
            json_object_set_new(schema, *m, json_deep_copy(json_object_get(format, *m)));
    return json_pack("{s:s, s:o}", "type", "json_schema", "json_schema", schema);
}

/* Copies body[from] to chat[to] when present. */
static void
copy_param(json_t *chat, const char *to, json_t *body, const char *from)
{
    if (present(body, from))
        json_object_set_new(chat, to, json_deep_copy(json_object_get(body, from)));
}

static void
add_params(json_t *chat, json_t *body, bool stream)
{
    json_t *tools = json_object_get(body, "tools");
    if (json_array_size(tools) > 0) {
        /* chat refuses tool_choice and parallel_tool_calls without tools; Responses does not */
        json_object_set_new(chat, "tools", chat_tools(tools));
        if (present(body, "tool_choice"))
            json_object_set_new(chat, "tool_choice", chat_tool_choice(json_object_get(body, "tool_choice")));
        copy_param(chat, "parallel_tool_calls", body, "parallel_tool_calls");
    }
    copy_param(chat, "temperature", body, "temperature");
    copy_param(chat, "top_p", body, "top_p");
    copy_param(chat, "max_tokens", body, "max_output_tokens");
    copy_param(chat, "user", body, "user");
    copy_param(chat, "safety_identifier", body, "safety_identifier");
    json_t *text = json_object_get(body, "text");
    json_t *format = chat_response_format(text);
    if (format)
        json_object_set_new(chat, "response_format", format);
    if (json_is_string(json_object_get(text, "verbosity")))
        json_object_set(chat, "verbosity", json_object_get(text, "verbosity"));
    if (stream) {
        json_object_set_new(chat, "stream", json_true());
        json_object_set_new(chat, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
}

bool
mg_responses_chat_body(json_t *body, const mg_responses_req_t *req, json_t *history, json_t **chat, mg_invalid_t *out)
{
    out->param[0] = '\0';
    out->message[0] = '\0';
    *chat = NULL;
    conv_t v = { .messages = json_array(), .calls = json_object() };
    json_t *instructions = json_object_get(body, "instructions");
    if (json_is_string(instructions))
        json_array_append_new(v.messages, json_pack("{s:s, s:O}", "role", "system", "content", instructions));
    bool ok = (!json_is_array(history) || add_items(&v, history, out)) && add_items(&v, req->input_items, out) &&
              check_answered(&v, out);
    if (ok && json_array_size(v.messages) == 0) {
        snprintf(out->param, sizeof out->param, "input");
        snprintf(out->message, sizeof out->message,
                 "input has no message for the model; give a string or at least one message item");
        ok = false;
    }
    json_decref(v.calls);
    if (!ok) {
        json_decref(v.messages);
        return false;
    }
    *chat = json_object();
    json_object_set_new(*chat, "model", copy_or_null(json_object_get(body, "model")));
    json_object_set_new(*chat, "messages", v.messages);
    add_params(*chat, body, req->stream);
    return true;
}

/* ---- the Response object ---- */

/* What comes after the first '_' of a response id ("resp_abc" → "abc"), for output item ids. */
static const char *
id_suffix(const char *id)
{
    const char *u = id ? strchr(id, '_') : NULL;
    return u ? u + 1 : (id ? id : "");
}

static json_t *
output_item_id(const char *prefix, const char *response_id, size_t index)
{
    char id[256];
    snprintf(id, sizeof id, "%s%s_%zu", prefix, id_suffix(response_id), index);
    return json_string(id);
}

/* The request's member as given (new reference), or def (stolen) when absent or null. */
static json_t *
echo(json_t *request, const char *key, json_t *def)
{
    json_t *v = json_object_get(request, key);
    if (!v || json_is_null(v))
        return def;
    json_decref(def);
    return json_deep_copy(v);
}

static json_t *
echo_tools(json_t *request)
{
    json_t *echoed = json_array();
    size_t i;
    json_t *tool;
    json_array_foreach(json_object_get(request, "tools"), i, tool)
    {
        json_array_append_new(echoed, json_pack("{s:s, s:o, s:o, s:o, s:o}", "type", "function", "name",
                                                copy_or_null(json_object_get(tool, "name")), "description",
                                                copy_or_null(json_object_get(tool, "description")), "parameters",
                                                copy_or_null(json_object_get(tool, "parameters")), "strict",
                                                copy_or_null(json_object_get(tool, "strict"))));
    }
    return echoed;
}

static json_t *
echo_text(json_t *request)
{
    json_t *text = json_object_get(request, "text");
    json_t *echoed = json_is_object(text) ? json_deep_copy(text) : json_object();
    if (!present(echoed, "format"))
        json_object_set_new(echoed, "format", json_pack("{s:s}", "type", "text"));
    return echoed;
}

json_t *
mg_responses_object(const mg_responses_ctx_t *ctx, const char *status, json_t *output, json_t *usage, json_t *error,
                    json_t *incomplete_details)
{
    json_t *r = ctx->request;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(ctx->id ? ctx->id : ""));
    json_object_set_new(o, "object", json_string("response"));
    json_object_set_new(o, "created_at", json_integer(ctx->created_at));
    json_object_set_new(o, "status", json_string(status));
    json_object_set_new(o, "error", copy_or_null(error));
    json_object_set_new(o, "incomplete_details", copy_or_null(incomplete_details));
    json_object_set_new(o, "instructions", echo(r, "instructions", json_null()));
    json_object_set_new(o, "max_output_tokens", echo(r, "max_output_tokens", json_null()));
    json_object_set_new(o, "model",
                        ctx->public_model ? json_string(ctx->public_model) : echo(r, "model", json_string("")));
    json_object_set_new(o, "output", output ? json_deep_copy(output) : json_array());
    json_object_set_new(o, "parallel_tool_calls", echo(r, "parallel_tool_calls", json_true()));
    json_object_set_new(o, "previous_response_id", echo(r, "previous_response_id", json_null()));
    json_object_set_new(o, "reasoning", json_pack("{s:n, s:n}", "effort", "summary"));
    json_object_set_new(o, "store", echo(r, "store", json_true()));
    json_object_set_new(o, "temperature", echo(r, "temperature", json_real(1.0)));
    json_object_set_new(o, "text", echo_text(r));
    json_object_set_new(o, "tool_choice", echo(r, "tool_choice", json_string("auto")));
    json_object_set_new(o, "tools", echo_tools(r));
    json_object_set_new(o, "top_p", echo(r, "top_p", json_real(1.0)));
    json_object_set_new(o, "truncation", echo(r, "truncation", json_string("disabled")));
    json_object_set_new(o, "usage", copy_or_null(usage));
    json_object_set_new(o, "user", echo(r, "user", json_null()));
    json_object_set_new(o, "metadata", echo(r, "metadata", json_object()));
    return o;
}

/* Chat usage → Responses usage (new reference), or NULL when usage is not an object. */
static json_t *
responses_usage(json_t *usage)
{
    if (!json_is_object(usage))
        return NULL;
    json_int_t in = json_integer_value(json_object_get(usage, "prompt_tokens"));
    json_int_t out = json_integer_value(json_object_get(usage, "completion_tokens"));
    json_t *total = json_object_get(usage, "total_tokens");
    json_int_t cached =
        json_integer_value(json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens"));
    json_int_t reasoning =
        json_integer_value(json_object_get(json_object_get(usage, "completion_tokens_details"), "reasoning_tokens"));
    return json_pack("{s:I, s:{s:I}, s:I, s:{s:I}, s:I}", "input_tokens", in, "input_tokens_details", "cached_tokens",
                     cached, "output_tokens", out, "output_tokens_details", "reasoning_tokens", reasoning,
                     "total_tokens", json_is_integer(total) ? json_integer_value(total) : in + out);
}

/* The reason a finish_reason leaves the response incomplete, or NULL when it completed. */
static const char *
incomplete_reason(const char *finish)
{
    if (mg_streq(finish, "length"))
        return "max_output_tokens";
    if (mg_streq(finish, "content_filter"))
        return "content_filter";
    return NULL;
}

static json_t *
new_message_item(const char *response_id, size_t index)
{
    return json_pack("{s:o, s:s, s:s, s:s, s:[]}", "id", output_item_id("msg_", response_id, index), "type", "message",
                     "status", "in_progress", "role", "assistant", "content");
}

static json_t *
new_text_part(void)
{
    return json_pack("{s:s, s:[], s:[], s:s}", "type", "output_text", "annotations", "logprobs", "text", "");
}

static json_t *
new_refusal_part(void)
{
    return json_pack("{s:s, s:s}", "type", "refusal", "refusal", "");
}

static json_t *
new_call_item(const char *response_id, size_t index, const char *call_id, const char *name)
{
    return json_pack("{s:o, s:s, s:s, s:s, s:s, s:s}", "id", output_item_id("fc_", response_id, index), "type",
                     "function_call", "status", "in_progress", "arguments", "", "call_id", call_id, "name", name);
}

/* A made-up call_id for a tool call the upstream gave none (the relay normally repairs this). */
static void
made_up_call_id(char *buf, size_t size, const char *response_id, size_t index)
{
    snprintf(buf, size, "call_%s_%zu", id_suffix(response_id), index);
}

/* A tool call's arguments as the exact text (new reference): a string as it came, JSON given as
 * a value (which the relay normally repairs) as compact text, nothing as "". */
static json_t *
arguments_text(json_t *args)
{
    if (json_is_string(args))
        return json_incref(args);
    if (!args || json_is_null(args))
        return json_string("");
    char *text = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *s = json_string(text ? text : "");
    free(text);
    return s;
}

/* The output items of a whole completion's message (new reference). */
static json_t *
completion_output(const char *id, json_t *message)
{
    json_t *output = json_array();
    json_t *content = json_object_get(message, "content");
    json_t *refusal = json_object_get(message, "refusal");
    json_t *calls = json_object_get(message, "tool_calls");
    bool has_text = json_is_string(content) && json_string_length(content) > 0;
    bool has_refusal = json_is_string(refusal) && json_string_length(refusal) > 0;
    if (has_text || has_refusal || json_array_size(calls) == 0) {
        json_t *item = new_message_item(id, 0);
        json_t *parts = json_object_get(item, "content");
        if (has_text || !has_refusal) {
            json_t *part = new_text_part();
            if (has_text)
                json_object_set(part, "text", content);
            json_array_append_new(parts, part);
        }
        if (has_refusal)
            json_array_append_new(parts, json_pack("{s:s, s:O}", "type", "refusal", "refusal", refusal));
        json_object_set_new(item, "status", json_string("completed"));
        json_array_append_new(output, item);
    }
    size_t j;
    json_t *call;
    json_array_foreach(calls, j, call)
    {
        json_t *fn = json_object_get(call, "function");
        if (!json_is_object(fn))
            continue;
        const char *call_id = mg_json_str(call, "id");
        char made[256];
        if (!call_id) {
            made_up_call_id(made, sizeof made, id, j);
            call_id = made;
        }
        const char *name = mg_json_str(fn, "name");
        json_t *item = new_call_item(id, json_array_size(output), call_id, name ? name : "");
        json_object_set_new(item, "arguments", arguments_text(json_object_get(fn, "arguments")));
        json_object_set_new(item, "status", json_string("completed"));
        json_array_append_new(output, item);
    }
    return output;
}

json_t *
mg_responses_from_completion(const mg_responses_ctx_t *ctx, json_t *completion)
{
    json_t *choice = json_array_get(json_object_get(completion, "choices"), 0);
    const char *finish = mg_json_str(choice, "finish_reason");
    const char *reason = incomplete_reason(finish);
    json_t *output = completion_output(ctx->id, json_object_get(choice, "message"));
    size_t n = json_array_size(output);
    if (reason && n > 0)
        json_object_set_new(json_array_get(output, n - 1), "status", json_string("incomplete"));
    json_t *usage = responses_usage(json_object_get(completion, "usage"));
    json_t *details = reason ? json_pack("{s:s}", "reason", reason) : NULL;
    json_t *r = mg_responses_object(ctx, reason ? "incomplete" : "completed", output, usage, NULL, details);
    json_decref(output);
    json_decref(usage);
    json_decref(details);
    return r;
}

/* ---- the stream ---- */

/* {"type": type, "sequence_number": n}: an event to fill (new reference). */
static json_t *
event_new(mg_responses_stream_t *s, const char *type)
{
    return json_pack("{s:s, s:I}", "type", type, "sequence_number", (json_int_t)s->seq++);
}

/* Appends "event: <type>\ndata: <json>\n\n" to out and releases ev. */
static void
event_send(json_t *ev, mg_buffer_t *out)
{
    const char *type = mg_json_str(ev, "type");
    char *data = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!data) {
        fprintf(stderr, "model-gw: out of memory writing a Responses event\n");
        abort();
    }
    mg_buffer_add(out, "event: ", 7);
    mg_buffer_add(out, type, strlen(type));
    mg_buffer_add(out, "\ndata: ", 7);
    mg_buffer_add(out, data, strlen(data));
    mg_buffer_add(out, "\n\n", 2);
    free(data);
    json_decref(ev);
}

/* An event about the response as a whole: {"type", "sequence_number", "response"}. */
static void
send_response_event(mg_responses_stream_t *s, const char *type, json_t *response, mg_buffer_t *out)
{
    json_t *ev = event_new(s, type);
    json_object_set(ev, "response", response);
    event_send(ev, out);
}

/* An event about output item `index`: {"type", "sequence_number", "item_id", "output_index"},
 * to be completed by the caller. */
static json_t *
item_event(mg_responses_stream_t *s, const char *type, size_t index)
{
    json_t *ev = event_new(s, type);
    json_object_set(ev, "item_id", json_object_get(json_array_get(s->output, index), "id"));
    json_object_set_new(ev, "output_index", json_integer((json_int_t)index));
    return ev;
}

static json_t *
open_item(const mg_responses_stream_t *s)
{
    return s->open_item >= 0 ? json_array_get(s->output, (size_t)s->open_item) : NULL;
}

static json_t *
acc_string(const mg_responses_stream_t *s)
{
    return json_stringn(s->acc.data ? s->acc.data : "", s->acc.len);
}

void
mg_responses_stream_init(mg_responses_stream_t *s, const mg_responses_ctx_t *ctx)
{
    s->ctx = *ctx;
    s->seq = 0;
    s->output = json_array();
    s->open_item = -1;
    s->open_tool = -1;
    s->last_tool = -1;
    s->acc = (mg_buffer_t){ 0 };
    s->usage = NULL;
    s->finish[0] = '\0';
    s->result = NULL;
    s->ended = false;
}

void
mg_responses_stream_begin(mg_responses_stream_t *s, mg_buffer_t *out)
{
    if (s->seq > 0 || s->ended)
        return;
    json_t *r = mg_responses_object(&s->ctx, "in_progress", NULL, NULL, NULL, NULL);
    send_response_event(s, "response.created", r, out);
    send_response_event(s, "response.in_progress", r, out);
    json_decref(r);
}

/* Writes the text of the open part into it (the last part of the open message). */
static json_t *
sync_open_part(mg_responses_stream_t *s, json_t *item)
{
    json_t *content = json_object_get(item, "content");
    size_t n = json_array_size(content);
    if (n == 0)
        return NULL;
    json_t *part = json_array_get(content, n - 1);
    json_object_set_new(part, mg_streq(mg_json_str(part, "type"), "refusal") ? "refusal" : "text", acc_string(s));
    return part;
}

/* Writes what s->acc holds into the open item, so that s->output shows everything so far. */
static void
sync_open_item(mg_responses_stream_t *s)
{
    json_t *item = open_item(s);
    if (mg_streq(mg_json_str(item, "type"), "message"))
        sync_open_part(s, item);
    else if (item)
        json_object_set_new(item, "arguments", acc_string(s));
}

/* Closes the open part of the open message: output_text.done (or refusal.done), then
 * content_part.done. */
static void
close_part(mg_responses_stream_t *s, json_t *item, mg_buffer_t *out)
{
    json_t *part = sync_open_part(s, item);
    if (!part)
        return;
    size_t index = (size_t)s->open_item;
    json_int_t content_index = (json_int_t)json_array_size(json_object_get(item, "content")) - 1;
    bool refusal = mg_streq(mg_json_str(part, "type"), "refusal");
    json_t *ev = item_event(s, refusal ? "response.refusal.done" : "response.output_text.done", index);
    json_object_set_new(ev, "content_index", json_integer(content_index));
    if (refusal) {
        json_object_set(ev, "refusal", json_object_get(part, "refusal"));
    } else {
        json_object_set(ev, "text", json_object_get(part, "text"));
        json_object_set_new(ev, "logprobs", json_array());
    }
    event_send(ev, out);
    ev = item_event(s, "response.content_part.done", index);
    json_object_set_new(ev, "content_index", json_integer(content_index));
    json_object_set(ev, "part", part);
    event_send(ev, out);
    s->acc.len = 0;
}

/* Closes the open item with this status: its .done events, then output_item.done. */
static void
close_item(mg_responses_stream_t *s, const char *status, mg_buffer_t *out)
{
    json_t *item = open_item(s);
    if (!item)
        return;
    size_t index = (size_t)s->open_item;
    if (mg_streq(mg_json_str(item, "type"), "message")) {
        close_part(s, item, out);
    } else {
        json_object_set_new(item, "arguments", acc_string(s));
        json_t *ev = item_event(s, "response.function_call_arguments.done", index);
        json_object_set(ev, "name", json_object_get(item, "name"));
        json_object_set(ev, "arguments", json_object_get(item, "arguments"));
        event_send(ev, out);
    }
    json_object_set_new(item, "status", json_string(status));
    json_t *ev = event_new(s, "response.output_item.done");
    json_object_set_new(ev, "output_index", json_integer((json_int_t)index));
    json_object_set(ev, "item", item);
    event_send(ev, out);
    s->open_item = -1;
    s->open_tool = -1;
    s->acc.len = 0;
}

/* Appends item (stolen) to the output as the open item: response.output_item.added. */
static void
open_new_item(mg_responses_stream_t *s, json_t *item, mg_buffer_t *out)
{
    size_t index = json_array_size(s->output);
    json_array_append_new(s->output, item);
    s->open_item = (int)index;
    s->acc.len = 0;
    json_t *ev = event_new(s, "response.output_item.added");
    json_object_set_new(ev, "output_index", json_integer((json_int_t)index));
    json_object_set(ev, "item", item);
    event_send(ev, out);
}

/* Makes the open item a message whose open part has this type ("output_text" or "refusal"),
 * closing what has to close first. Returns the part's content_index. */
static size_t
open_part(mg_responses_stream_t *s, const char *type, mg_buffer_t *out)
{
    json_t *item = open_item(s);
    if (!mg_streq(mg_json_str(item, "type"), "message")) {
        close_item(s, "completed", out);
        item = new_message_item(s->ctx.id, json_array_size(s->output));
        open_new_item(s, item, out);
    }
    json_t *content = json_object_get(item, "content");
    size_t n = json_array_size(content);
    if (n > 0 && mg_streq(mg_json_str(json_array_get(content, n - 1), "type"), type))
        return n - 1;
    close_part(s, item, out);
    json_t *part = mg_streq(type, "refusal") ? new_refusal_part() : new_text_part();
    json_array_append_new(content, part);
    json_t *ev = item_event(s, "response.content_part.added", (size_t)s->open_item);
    json_object_set_new(ev, "content_index", json_integer((json_int_t)n));
    json_object_set(ev, "part", part);
    event_send(ev, out);
    return n;
}

/* A fragment of text (or of a refusal): response.output_text.delta (response.refusal.delta). */
static void
text_delta(mg_responses_stream_t *s, const char *type, json_t *delta, mg_buffer_t *out)
{
    if (!json_is_string(delta) || json_string_length(delta) == 0)
        return;
    size_t content_index = open_part(s, type, out);
    bool refusal = mg_streq(type, "refusal");
    json_t *ev = item_event(s, refusal ? "response.refusal.delta" : "response.output_text.delta", (size_t)s->open_item);
    json_object_set_new(ev, "content_index", json_integer((json_int_t)content_index));
    json_object_set(ev, "delta", delta);
    if (!refusal)
        json_object_set_new(ev, "logprobs", json_array());
    event_send(ev, out);
    mg_buffer_add(&s->acc, json_string_value(delta), json_string_length(delta));
}

/* The chat tool_calls index a fragment belongs to: its "index"; without one (some upstreams),
 * the open call's unless the fragment carries another call's id, then the next index. */
static int
fragment_index(const mg_responses_stream_t *s, json_t *frag)
{
    json_t *index = json_object_get(frag, "index");
    if (json_is_integer(index))
        return json_integer_value(index) >= 0 && json_integer_value(index) < 1000000 ? (int)json_integer_value(index)
                                                                                     : -1;
    const char *id = mg_json_str(frag, "id");
    if (s->open_tool >= 0 && (!id || mg_streq(id, mg_json_str(open_item(s), "call_id"))))
        return s->open_tool;
    return s->last_tool + 1;
}

/* Whether a function_call item with this call_id is in the output already. */
static bool
call_seen(const mg_responses_stream_t *s, const char *call_id)
{
    size_t i;
    json_t *item;
    json_array_foreach(s->output, i, item)
    {
        if (mg_streq(mg_json_str(item, "type"), "function_call") && mg_streq(mg_json_str(item, "call_id"), call_id))
            return true;
    }
    return false;
}

/* One element of delta.tool_calls: opens a function_call item when a new call begins (closing
 * the open item), then response.function_call_arguments.delta for its arguments. A new call is
 * one with an index not seen yet, or with an id other than the open call's (some servers put
 * every call at index 0); a fragment of a call already closed is dropped (an item cannot be
 * reopened). */
static void
tool_fragment(mg_responses_stream_t *s, json_t *frag, mg_buffer_t *out)
{
    if (!json_is_object(frag))
        return;
    int index = fragment_index(s, frag);
    json_t *fn = json_object_get(frag, "function");
    const char *name = mg_json_str(fn, "name");
    const char *id = mg_json_str(frag, "id");
    const char *open_id = s->open_tool >= 0 ? mg_json_str(open_item(s), "call_id") : NULL;
    bool opens;
    if (index < 0)
        return;
    if (id != NULL && *id != '\0')
        opens = !(open_id != NULL && mg_streq(id, open_id));
    else
        opens = index != s->open_tool;
    if (opens && ((id != NULL && *id != '\0') ? call_seen(s, id) : index <= s->last_tool))
        return; /* a late fragment of a call already closed */
    if (opens) {
        close_item(s, "completed", out);
        size_t position = json_array_size(s->output);
        const char *call_id = mg_json_str(frag, "id");
        char made[256];
        if (!call_id || !*call_id) {
            made_up_call_id(made, sizeof made, s->ctx.id, (size_t)index);
            call_id = made;
        }
        open_new_item(s, new_call_item(s->ctx.id, position, call_id, name ? name : ""), out);
        s->open_tool = index;
        s->last_tool = index > s->last_tool ? index : s->last_tool;
    } else if (name && json_string_length(json_object_get(open_item(s), "name")) == 0) {
        json_object_set_new(open_item(s), "name", json_string(name)); /* the name came after the id */
    }
    json_t *args = json_object_get(fn, "arguments");
    if (!json_is_string(args) || json_string_length(args) == 0)
        return;
    json_t *ev = item_event(s, "response.function_call_arguments.delta", (size_t)s->open_item);
    json_object_set(ev, "delta", args);
    event_send(ev, out);
    mg_buffer_add(&s->acc, json_string_value(args), json_string_length(args));
}

/* The first choice of a chunk (index 0, or the first one given): n > 1 is not translated. */
static json_t *
first_choice(json_t *chunk)
{
    json_t *choices = json_object_get(chunk, "choices");
    size_t i;
    json_t *choice;
    json_array_foreach(choices, i, choice)
    {
        json_t *index = json_object_get(choice, "index");
        if (json_is_object(choice) && (!index || json_integer_value(index) == 0))
            return choice;
    }
    return NULL;
}

void
mg_responses_stream_chunk(mg_responses_stream_t *s, json_t *chunk, mg_buffer_t *out)
{
    if (s->ended || !json_is_object(chunk))
        return;
    mg_responses_stream_begin(s, out);
    json_t *usage = responses_usage(json_object_get(chunk, "usage"));
    if (usage) {
        json_decref(s->usage);
        s->usage = usage;
    }
    json_t *choice = first_choice(chunk);
    json_t *delta = json_object_get(choice, "delta");
    if (json_is_object(delta)) {
        text_delta(s, "output_text", json_object_get(delta, "content"), out);
        text_delta(s, "refusal", json_object_get(delta, "refusal"), out);
        size_t i;
        json_t *frag;
        json_array_foreach(json_object_get(delta, "tool_calls"), i, frag)
        {
            tool_fragment(s, frag, out);
        }
    }
    const char *finish = mg_json_str(choice, "finish_reason");
    if (finish)
        snprintf(s->finish, sizeof s->finish, "%s", finish);
}

void
mg_responses_stream_end(mg_responses_stream_t *s, mg_buffer_t *out)
{
    if (s->ended)
        return;
    mg_responses_stream_begin(s, out);
    const char *reason = incomplete_reason(s->finish);
    if (json_array_size(s->output) == 0)
        open_part(s, "output_text", out); /* nothing came: an empty message, as for a whole completion */
    close_item(s, reason ? "incomplete" : "completed", out);
    json_t *details = reason ? json_pack("{s:s}", "reason", reason) : NULL;
    const char *status = reason ? "incomplete" : "completed";
    s->result = mg_responses_object(&s->ctx, status, s->output, s->usage, NULL, details);
    json_decref(details);
    send_response_event(s, reason ? "response.incomplete" : "response.completed", s->result, out);
    s->ended = true;
}

void
mg_responses_stream_fail(mg_responses_stream_t *s, const char *code, const char *message, mg_buffer_t *out)
{
    if (s->ended)
        return;
    mg_responses_stream_begin(s, out);
    sync_open_item(s);
    json_t *error = json_pack("{s:s, s:s}", "code", code ? code : "server_error", "message", message ? message : "");
    s->result = mg_responses_object(&s->ctx, "failed", s->output, s->usage, error, NULL);
    json_decref(error);
    send_response_event(s, "response.failed", s->result, out);
    s->ended = true;
}

void
mg_responses_stream_dispose(mg_responses_stream_t *s)
{
    json_decref(s->output);
    json_decref(s->usage);
    json_decref(s->result);
    mg_buffer_release(&s->acc);
    s->output = s->usage = s->result = NULL;
}
