#include "validate.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "refusal.h"

/*
 * How it works. Every object the API defines is a table of field_t: the member's name, a checker
 * and the checker's parameters (range, choices, the table of a nested object). check_fields()
 * walks an object against its table: required members first, then each member in document
 * order. "Unions" (objects whose `type` selects which other member carries the payload: content
 * parts, tools, tool calls, tool_choice, response_format) are tables too: each variant is the
 * field_t of the member named after the type.
 *
 * The JSON path of the value being checked lives in out->param: path_push() appends a key or an
 * index on the way down and path_pop() removes it on the way up, but only on success, so when a
 * checker fails the path of the value it refused is already in place and fail() only has to say
 * what is wrong. Messages therefore read "<path> <what is wrong>".
 */

typedef struct vctx {
    mg_refusal_t r; /* the path being checked, and the refusal */
    const tp_model_config_t *model;
    json_t *body;
    const char *api; /* "chat completions": for the message about unknown fields */
} vctx_t;

/* refusal.h's path and refusal helpers, on this checker's context. */
#define path_push(c, key, index) mg_refusal_push(&(c)->r, (key), (index))
#define path_pop(c, saved)       mg_refusal_pop(&(c)->r, (saved))
#define fail(c, ...)             mg_refusal_fail(&(c)->r, __VA_ARGS__)

typedef struct field field_t;
typedef bool (*check_fn)(vctx_t *c, json_t *v, const field_t *f);

struct field {
    const char *name;
    check_fn check;             /* NULL: a union variant without a payload member */
    bool required;              /* absent (or null) is an error; otherwise null counts as absent */
    double min, max;            /* chk_number, chk_int: inclusive, +-INFINITY for no bound */
    const char *const *choices; /* chk_enum: NULL-terminated */
    const field_t *sub;         /* chk_object: its members; chk_union: its variants */
    unsigned mask;              /* chk_union, chk_content: which variants are allowed (bit i: sub[i]) */
    const char *what;           /* the expected value in type errors, when "a string" is not enough */
    check_fn relate;            /* top level: checked against other fields once all are well formed */
};

#define ALL_VARIANTS (~0u)
#define MAX_STOP     4    /* stop sequences */
#define MAX_EMBED    2048 /* items in one embeddings input array */

/* ---- paths, messages, lists ---- */

/* ---- the table walk ---- */

static const field_t *
find_field(const field_t *fields, const char *name)
{
    for (const field_t *f = fields; f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* Checks member `key` (value v) of the current object with field f, with the path extended. */
static bool
check_member(vctx_t *c, const char *key, json_t *v, const field_t *f)
{
    size_t saved = path_push(c, key, 0);
    if (f->check && !f->check(c, v, f))
        return false;
    path_pop(c, saved);
    return true;
}

/* Walks object o against its table. At the top level, an unknown member is refused when the
 * model's configuration says so; below it, unknown members are always passed through. */
static bool
check_fields(vctx_t *c, json_t *o, const field_t *fields, bool top)
{
    for (const field_t *f = fields; f->name; f++) {
        if (f->required && !json_object_get(o, f->name)) {
            path_push(c, f->name, 0);
            return fail(c, "is required");
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        const field_t *f = find_field(fields, key);
        if (!f) {
            if (top && c->model && c->model->deny_unknown_fields) {
                path_push(c, key, 0);
                return fail(c,
                            "is not part of the OpenAI %s API, and this model refuses fields the API does not define",
                            c->api);
            }
            continue;
        }
        if (json_is_null(v) && !f->required)
            continue;
        if (!check_member(c, key, v, f))
            return false;
    }
    return true;
}

/* ---- scalar checkers ---- */

static bool
chk_string(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_string(v))
        return fail(c, "must be %s, got %s", f->what ? f->what : "a string", mg_json_type_name(v));
    return true;
}

static bool
chk_nonempty_string(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return fail(c, "must be a non-empty string, got %s",
                    json_is_string(v) ? "an empty string" : mg_json_type_name(v));
    return true;
}

static bool
chk_bool(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_boolean(v))
        return fail(c, "must be true or false, got %s", mg_json_type_name(v));
    return true;
}

static bool
chk_object(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_object(v))
        return fail(c, "must be %s, got %s", f->what ? f->what : "an object", mg_json_type_name(v));
    return f->sub ? check_fields(c, v, f->sub, false) : true;
}

static bool
chk_number(vctx_t *c, json_t *v, const field_t *f)
{
    return mg_refusal_range(&c->r, v, false, f->min, f->max);
}

static bool
chk_int(vctx_t *c, json_t *v, const field_t *f)
{
    return mg_refusal_range(&c->r, v, true, f->min, f->max);
}

/* max_tokens and max_completion_tokens: an integer, and within the model's configured cap. */
static bool
chk_max_tokens(vctx_t *c, json_t *v, const field_t *f)
{
    if (!chk_int(c, v, f))
        return false;
    json_int_t n = json_integer_value(v);
    if (c->model && c->model->max_tokens > 0 && n > c->model->max_tokens)
        return fail(c, "%" JSON_INTEGER_FORMAT " exceeds this model's limit of %lld", n,
                    (long long)c->model->max_tokens);
    return true;
}

static bool
chk_enum(vctx_t *c, json_t *v, const field_t *f)
{
    return mg_refusal_enum(&c->r, v, f->choices);
}

/* Function, tool and schema names: ^[a-zA-Z0-9_-]{1,64}$. */
static bool
chk_name(vctx_t *c, json_t *v, const field_t *f)
{
    return mg_refusal_name(&c->r, v);
}

/* ---- unions: objects whose `type` says which member carries the payload ---- */

static bool
check_union(vctx_t *c, json_t *v, const field_t *variants, unsigned mask)
{
    if (!json_is_object(v))
        return fail(c, "must be an object with a type, got %s", mg_json_type_name(v));
    json_t *type = json_object_get(v, "type");
    const char *t = json_string_value(type);
    const field_t *var = NULL;
    mg_list_t l = { 0 };
    for (unsigned i = 0; variants[i].name; i++) {
        if (!(mask & (1u << i)))
            continue;
        mg_list_add(&l, variants[i].name);
        if (mg_streq(variants[i].name, t))
            var = &variants[i];
    }
    if (!var) {
        path_push(c, "type", 0);
        if (!type)
            return fail(c, "is required; expected %s%s", l.count == 1 ? "" : "one of ", l.text);
        return mg_refusal_choice(&c->r, &l, type);
    }
    if (!var->check)
        return true;
    json_t *payload = json_object_get(v, var->name);
    if (!payload) {
        path_push(c, var->name, 0);
        return fail(c, "is required when type is '%s'", var->name);
    }
    return check_member(c, var->name, payload, var);
}

static bool
chk_union(vctx_t *c, json_t *v, const field_t *f)
{
    return check_union(c, v, f->sub, f->mask ? f->mask : ALL_VARIANTS);
}

/* ---- content ---- */

static const char *const detail_choices[] = { "auto", "low", "high", NULL };
static const char *const audio_format_choices[] = { "wav", "mp3", NULL };

static const field_t image_url_fields[] = {
    { .name = "url", .check = chk_nonempty_string, .required = true },
    { .name = "detail", .check = chk_enum, .choices = detail_choices },
    { 0 },
};

static const field_t input_audio_fields[] = {
    { .name = "data", .check = chk_string, .required = true, .what = "a string (base64 audio)" },
    { .name = "format", .check = chk_enum, .required = true, .choices = audio_format_choices },
    { 0 },
};

static const field_t file_fields[] = {
    { .name = "file_data", .check = chk_string, .what = "a string (base64 file content)" },
    { .name = "file_id", .check = chk_string },
    { .name = "filename", .check = chk_string },
    { 0 },
};

static bool
chk_file(vctx_t *c, json_t *v, const field_t *f)
{
    if (!chk_object(c, v, f))
        return false;
    if (!json_is_string(json_object_get(v, "file_data")) && !json_is_string(json_object_get(v, "file_id")))
        return fail(c, "must have file_data (the content, base64) or file_id (an uploaded file)");
    return true;
}

/* Content part types; bit i of a mask stands for part_variants[i]. */
enum { P_TEXT = 1u << 0, P_IMAGE = 1u << 1, P_AUDIO = 1u << 2, P_FILE = 1u << 3, P_REFUSAL = 1u << 4 };

static const field_t part_variants[] = {
    { .name = "text", .check = chk_string, .required = true },
    { .name = "image_url", .check = chk_object, .required = true, .sub = image_url_fields },
    { .name = "input_audio", .check = chk_object, .required = true, .sub = input_audio_fields },
    { .name = "file", .check = chk_file, .required = true, .sub = file_fields },
    { .name = "refusal", .check = chk_string, .required = true },
    { 0 },
};

/* Message content: a string, or a non-empty array of the parts f->mask allows. */
static bool
chk_content(vctx_t *c, json_t *v, const field_t *f)
{
    if (json_is_string(v))
        return true;
    const char *kind = f->mask == P_TEXT ? "text" : "content";
    if (!json_is_array(v))
        return fail(c, "must be a string or an array of %s parts, got %s", kind, mg_json_type_name(v));
    if (json_array_size(v) == 0)
        return fail(c, "must not be an empty array; give a string or at least one %s part", kind);
    size_t i;
    json_t *part;
    json_array_foreach(v, i, part)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_union(c, part, part_variants, f->mask))
            return false;
        path_pop(c, saved);
    }
    return true;
}

/* ---- tools ---- */

/* JSON Schema of the arguments: an object schema. */
static bool
chk_parameters(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_object(v))
        return fail(c, "must be a JSON Schema object, got %s", mg_json_type_name(v));
    json_t *type = json_object_get(v, "type");
    if (!type || mg_streq(json_string_value(type), "object"))
        return true;
    path_push(c, "type", 0);
    if (json_is_string(type))
        return fail(c, "must be 'object' (the arguments are a JSON object); got '%.*s'", MG_SHOW,
                    json_string_value(type));
    return fail(c, "must be 'object' (the arguments are a JSON object), got %s", mg_json_type_name(type));
}

static const field_t function_def_fields[] = {
    { .name = "name", .check = chk_name, .required = true },
    { .name = "description", .check = chk_string },
    { .name = "parameters", .check = chk_parameters },
    { .name = "strict", .check = chk_bool },
    { 0 },
};

static const field_t custom_def_fields[] = {
    { .name = "name", .check = chk_name, .required = true },
    { .name = "description", .check = chk_string },
    { .name = "format", .check = chk_object },
    { 0 },
};

static const field_t tool_variants[] = {
    { .name = "function", .check = chk_object, .required = true, .sub = function_def_fields },
    { .name = "custom", .check = chk_object, .required = true, .sub = custom_def_fields },
    { 0 },
};

/* The name a well-formed tool (or named tool choice) gives, and its kind ("function", "custom"). */
static const char *
tool_name(const json_t *tool, const char **kind)
{
    *kind = mg_json_str(tool, "type");
    return *kind ? mg_json_str(json_object_get(tool, *kind), "name") : NULL;
}

static bool
chk_tools(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of tools, got %s", mg_json_type_name(v));
    size_t i;
    json_t *tool;
    json_array_foreach(v, i, tool)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_union(c, tool, tool_variants, ALL_VARIANTS))
            return false;
        const char *kind, *name = tool_name(tool, &kind);
        for (size_t j = 0; j < i; j++) {
            const char *other_kind;
            if (mg_streq(tool_name(json_array_get(v, j), &other_kind), name)) {
                path_push(c, kind, 0);
                path_push(c, "name", 0);
                return fail(c, "'%s' is already defined by tools[%zu]; tool names must be unique", name, j);
            }
        }
        path_pop(c, saved);
    }
    return true;
}

/* Legacy `functions`: an array of function definitions. */
static bool
chk_functions(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of function definitions, got %s", mg_json_type_name(v));
    size_t i;
    json_t *fn;
    json_array_foreach(v, i, fn)
    {
        size_t saved = path_push(c, NULL, i);
        if (!json_is_object(fn))
            return fail(c, "must be a function definition object, got %s", mg_json_type_name(fn));
        if (!check_fields(c, fn, function_def_fields, false))
            return false;
        path_pop(c, saved);
    }
    return true;
}

static const field_t name_fields[] = {
    { .name = "name", .check = chk_string, .required = true },
    { 0 },
};

static const char *const allowed_mode_choices[] = { "auto", "required", NULL };

static bool chk_allowed_list(vctx_t *c, json_t *v, const field_t *f);

static const field_t allowed_tools_fields[] = {
    { .name = "mode", .check = chk_enum, .required = true, .choices = allowed_mode_choices },
    { .name = "tools", .check = chk_allowed_list, .required = true },
    { 0 },
};

/* tool_choice objects; the first two also name the tools of an allowed_tools list. */
static const field_t tool_choice_variants[] = {
    { .name = "function", .check = chk_object, .required = true, .sub = name_fields },
    { .name = "custom", .check = chk_object, .required = true, .sub = name_fields },
    { .name = "allowed_tools", .check = chk_object, .required = true, .sub = allowed_tools_fields },
    { 0 },
};
#define NAMED_TOOL (1u << 0 | 1u << 1)

static bool
chk_allowed_list(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of tool references, got %s", mg_json_type_name(v));
    size_t i;
    json_t *ref;
    json_array_foreach(v, i, ref)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_union(c, ref, tool_choice_variants, NAMED_TOOL))
            return false;
        path_pop(c, saved);
    }
    return true;
}

static const char *const tool_choice_modes[] = { "none", "auto", "required", NULL };

static bool
chk_tool_choice(vctx_t *c, json_t *v, const field_t *f)
{
    if (json_is_string(v))
        return mg_refusal_enum(&c->r, v, tool_choice_modes);
    if (json_is_object(v))
        return check_union(c, v, tool_choice_variants, ALL_VARIANTS);
    return fail(c, "must be none, auto, required or an object naming a tool, got %s", mg_json_type_name(v));
}

/* Whether tools defines a tool of this kind and name; collects the names of that kind in *defined. */
static bool
find_tool(const json_t *tools, const char *kind, const char *name, mg_list_t *defined)
{
    size_t i;
    json_t *tool;
    json_array_foreach(tools, i, tool)
    {
        const char *k, *n = tool_name(tool, &k);
        if (!mg_streq(k, kind) || !n)
            continue;
        if (mg_streq(n, name))
            return true;
        mg_list_add(defined, n);
    }
    return false;
}

/* A tool reference (tool_choice or an allowed_tools entry) must name a tool of the request. */
static bool
check_tool_ref(vctx_t *c, const json_t *ref, const json_t *tools)
{
    const char *kind, *name = tool_name(ref, &kind);
    const char *what = mg_streq(kind, "function") ? "function" : "custom tool";
    mg_list_t defined = { 0 };
    if (json_array_size(tools) == 0)
        return fail(c, "names %s '%s', but the request defines no tools", what, name);
    if (!find_tool(tools, kind, name, &defined))
        return fail(c, "names %s '%s', which is not in tools; defined: %s", what, name, mg_list_text(&defined));
    return true;
}

static bool
rel_tool_choice(vctx_t *c, json_t *v, const field_t *f)
{
    json_t *tools = json_object_get(c->body, "tools");
    if (!json_is_array(tools))
        tools = NULL;
    if (json_is_string(v)) {
        if (mg_streq(json_string_value(v), "required") && json_array_size(tools) == 0)
            return fail(c, "is 'required' but the request defines no tools");
        return true;
    }
    if (!mg_streq(mg_json_str(v, "type"), "allowed_tools"))
        return check_tool_ref(c, v, tools);
    json_t *refs = json_object_get(json_object_get(v, "allowed_tools"), "tools");
    size_t i;
    json_t *ref;
    json_array_foreach(refs, i, ref)
    {
        size_t saved = path_push(c, "allowed_tools", 0);
        path_push(c, "tools", 0);
        path_push(c, NULL, i);
        if (!check_tool_ref(c, ref, tools))
            return false;
        path_pop(c, saved);
    }
    return true;
}

static const char *const function_call_modes[] = { "none", "auto", NULL };

/* Legacy top-level `function_call`: none, auto or {name}. */
static bool
chk_function_call(vctx_t *c, json_t *v, const field_t *f)
{
    if (json_is_string(v))
        return mg_refusal_enum(&c->r, v, function_call_modes);
    if (json_is_object(v))
        return check_fields(c, v, name_fields, false);
    return fail(c, "must be none, auto or an object naming a function, got %s", mg_json_type_name(v));
}

/* ---- messages ---- */

static const field_t call_function_fields[] = {
    { .name = "name", .check = chk_string, .required = true },
    { .name = "arguments", .check = chk_string, .required = true, .what = "a string (JSON text)" },
    { 0 },
};

static const field_t call_custom_fields[] = {
    { .name = "name", .check = chk_string, .required = true },
    { .name = "input", .check = chk_string, .required = true },
    { 0 },
};

static const field_t tool_call_variants[] = {
    { .name = "function", .check = chk_object, .required = true, .sub = call_function_fields },
    { .name = "custom", .check = chk_object, .required = true, .sub = call_custom_fields },
    { 0 },
};

static const field_t tool_call_id_fields[] = {
    { .name = "id", .check = chk_string, .required = true },
    { 0 },
};

static bool
chk_tool_calls(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of tool calls, got %s", mg_json_type_name(v));
    if (json_array_size(v) == 0)
        return fail(c, "must not be an empty array; leave tool_calls out when there are no calls");
    size_t i;
    json_t *call;
    json_array_foreach(v, i, call)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_union(c, call, tool_call_variants, ALL_VARIANTS) ||
            !check_fields(c, call, tool_call_id_fields, false))
            return false;
        path_pop(c, saved);
    }
    return true;
}

static const field_t audio_ref_fields[] = {
    { .name = "id", .check = chk_string, .required = true },
    { 0 },
};

static const field_t system_fields[] = {
    { .name = "content", .check = chk_content, .required = true, .mask = P_TEXT },
    { .name = "name", .check = chk_string },
    { 0 },
};

static const field_t user_fields[] = {
    { .name = "content", .check = chk_content, .required = true, .mask = P_TEXT | P_IMAGE | P_AUDIO | P_FILE },
    { .name = "name", .check = chk_string },
    { 0 },
};

static const field_t assistant_fields[] = {
    { .name = "content", .check = chk_content, .mask = P_TEXT | P_REFUSAL },
    { .name = "name", .check = chk_string },
    { .name = "refusal", .check = chk_string },
    { .name = "tool_calls", .check = chk_tool_calls },
    { .name = "function_call", .check = chk_object, .sub = call_function_fields },
    { .name = "audio", .check = chk_object, .sub = audio_ref_fields },
    { 0 },
};

static const field_t tool_fields[] = {
    { .name = "tool_call_id", .check = chk_string, .required = true },
    { .name = "content", .check = chk_content, .required = true, .mask = P_TEXT },
    { 0 },
};

static const field_t function_fields[] = {
    { .name = "name", .check = chk_string, .required = true },
    { .name = "content", .check = chk_string },
    { 0 },
};

typedef struct role {
    const char *name;
    const field_t *fields;
} role_t;

/* The legacy "function" role is accepted, and left out of messages about roles. */
static const role_t roles[] = {
    { "system", system_fields },       { "developer", system_fields }, { "user", user_fields },
    { "assistant", assistant_fields }, { "tool", tool_fields },        { "function", function_fields },
};
#define ROLE_CHOICES "system, developer, user, assistant, tool"

/* Whether o has member key with a value other than null. */
static bool
present(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return v && !json_is_null(v);
}

static bool
has_role(const json_t *msg, const char *role)
{
    return mg_streq(mg_json_str(msg, "role"), role);
}

/* Whether a tool message in msgs[from, to) answers the tool call with this id. */
static bool
answered(const json_t *msgs, size_t from, size_t to, const char *id)
{
    for (size_t k = from; k < to; k++) {
        const json_t *m = json_array_get(msgs, k);
        if (has_role(m, "tool") && mg_streq(mg_json_str(m, "tool_call_id"), id))
            return true;
    }
    return false;
}

/* Whether an assistant message before msgs[i] made the tool call `id`. When not, collects the ids
 * of the calls before msgs[i] that no tool message has answered yet into *awaiting. The search
 * goes backwards: the call a tool message answers is almost always just before it. */
static bool
earlier_call(const json_t *msgs, size_t i, const char *id, mg_list_t *awaiting)
{
    for (size_t k = i; k-- > 0;) {
        const json_t *m = json_array_get(msgs, k);
        if (!has_role(m, "assistant"))
            continue;
        size_t j;
        json_t *call;
        json_array_foreach(json_object_get(m, "tool_calls"), j, call)
        {
            if (mg_streq(mg_json_str(call, "id"), id))
                return true;
        }
    }
    for (size_t k = 0; k < i; k++) {
        const json_t *m = json_array_get(msgs, k);
        if (!has_role(m, "assistant"))
            continue;
        size_t j;
        json_t *call;
        json_array_foreach(json_object_get(m, "tool_calls"), j, call)
        {
            const char *call_id = mg_json_str(call, "id");
            if (call_id && !answered(msgs, k + 1, i, call_id))
                mg_list_add(awaiting, call_id);
        }
    }
    return false;
}

/* What a message needs beyond its own fields: an assistant message says something or calls a
 * tool; a tool message answers a tool call made earlier. */
static bool
check_message_relations(vctx_t *c, json_t *msgs, size_t i, json_t *msg)
{
    if (has_role(msg, "assistant")) {
        if (!present(msg, "content") && !present(msg, "tool_calls") && !present(msg, "function_call") &&
            !present(msg, "audio")) {
            path_push(c, "content", 0);
            return fail(c, "is required when the assistant message has no tool_calls");
        }
        return true;
    }
    if (!has_role(msg, "tool"))
        return true;
    const char *id = mg_json_str(msg, "tool_call_id");
    mg_list_t awaiting = { 0 };
    if (earlier_call(msgs, i, id, &awaiting))
        return true;
    path_push(c, "tool_call_id", 0);
    if (awaiting.count == 0)
        return fail(c, "'%.*s' answers no tool call of an earlier assistant message; no tool calls await answers",
                    MG_SHOW, id);
    return fail(c, "'%.*s' answers no tool call of an earlier assistant message; awaiting answers: %s", MG_SHOW, id,
                awaiting.text);
}

static bool
check_message(vctx_t *c, json_t *msgs, size_t i, json_t *msg)
{
    if (!json_is_object(msg))
        return fail(c, "must be a message object with a role, got %s", mg_json_type_name(msg));
    json_t *role = json_object_get(msg, "role");
    const char *r = json_string_value(role);
    const role_t *found = NULL;
    for (size_t k = 0; r && k < sizeof roles / sizeof roles[0]; k++)
        if (strcmp(roles[k].name, r) == 0)
            found = &roles[k];
    if (!found) {
        path_push(c, "role", 0);
        if (!role)
            return fail(c, "is required; expected one of " ROLE_CHOICES);
        if (!r)
            return fail(c, "must be one of " ROLE_CHOICES ", got %s", mg_json_type_name(role));
        return fail(c, "must be one of " ROLE_CHOICES "; got '%.*s'", MG_SHOW, r);
    }
    return check_fields(c, msg, found->fields, false) && check_message_relations(c, msgs, i, msg);
}

static bool
chk_messages(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of messages, got %s", mg_json_type_name(v));
    if (json_array_size(v) == 0)
        return fail(c, "must contain at least one message");
    size_t i;
    json_t *msg;
    json_array_foreach(v, i, msg)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_message(c, v, i, msg))
            return false;
        path_pop(c, saved);
    }
    return true;
}

/* ---- other top-level fields ---- */

/* stop: a string, or an array of at most 4 strings. */
static bool
chk_stop(vctx_t *c, json_t *v, const field_t *f)
{
    if (json_is_string(v))
        return true;
    if (!json_is_array(v))
        return fail(c, "must be a string or an array of at most %d strings, got %s", MAX_STOP, mg_json_type_name(v));
    if (json_array_size(v) > MAX_STOP)
        return fail(c, "has %zu sequences; at most %d are allowed", json_array_size(v), MAX_STOP);
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

/* logit_bias: token ids (decimal strings) to numbers from -100 to 100. */
static bool
chk_logit_bias(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_object(v))
        return fail(c, "must be an object mapping token ids to biases, got %s", mg_json_type_name(v));
    const char *key;
    json_t *bias;
    json_object_foreach(v, key, bias)
    {
        size_t saved = path_push(c, key, 0);
        if (key[0] == '\0' || key[strspn(key, "0123456789")] != '\0')
            return fail(c, "is not a token id; the keys of logit_bias are token ids in decimal, like \"50256\"");
        if (!mg_refusal_range(&c->r, bias, false, -100, 100))
            return false;
        path_pop(c, saved);
    }
    return true;
}

/* metadata: at most 16 pairs of strings, keys up to 64 characters, values up to 512. */
static bool
chk_metadata(vctx_t *c, json_t *v, const field_t *f)
{
    return mg_refusal_metadata(&c->r, v);
}

static const char *const modality_choices[] = { "text", "audio", NULL };

static bool
chk_modalities(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of \"text\" and \"audio\", got %s", mg_json_type_name(v));
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m)
    {
        size_t saved = path_push(c, NULL, i);
        if (!mg_refusal_enum(&c->r, m, modality_choices))
            return false;
        path_pop(c, saved);
    }
    return true;
}

static bool
chk_voice(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_string(v) && !json_is_object(v))
        return fail(c, "must be a voice name or an object naming a custom voice, got %s", mg_json_type_name(v));
    return true;
}

static const char *const output_audio_formats[] = { "wav", "aac", "mp3", "flac", "opus", "pcm16", NULL };

static const field_t audio_fields[] = {
    { .name = "voice", .check = chk_voice, .required = true },
    { .name = "format", .check = chk_enum, .required = true, .choices = output_audio_formats },
    { 0 },
};

static const char *const prediction_types[] = { "content", NULL };

static const field_t prediction_fields[] = {
    { .name = "type", .check = chk_enum, .required = true, .choices = prediction_types },
    { .name = "content", .check = chk_content, .required = true, .mask = P_TEXT },
    { 0 },
};

static const char *const context_sizes[] = { "low", "medium", "high", NULL };

static const field_t web_search_fields[] = {
    { .name = "search_context_size", .check = chk_enum, .choices = context_sizes },
    { .name = "user_location", .check = chk_object },
    { 0 },
};

static const field_t stream_options_fields[] = {
    { .name = "include_usage", .check = chk_bool },
    { .name = "include_obfuscation", .check = chk_bool },
    { 0 },
};

static const field_t json_schema_fields[] = {
    { .name = "name", .check = chk_name, .required = true },
    { .name = "description", .check = chk_string },
    { .name = "schema", .check = chk_object, .what = "a JSON Schema object" },
    { .name = "strict", .check = chk_bool },
    { 0 },
};

static const field_t response_format_variants[] = {
    { .name = "text" },
    { .name = "json_object" },
    { .name = "json_schema", .check = chk_object, .required = true, .sub = json_schema_fields },
    { 0 },
};

static bool
rel_stream_options(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_true(json_object_get(c->body, "stream")))
        return fail(c, "is only allowed when stream is true");
    return true;
}

static bool
rel_top_logprobs(vctx_t *c, json_t *v, const field_t *f)
{
    if (!json_is_true(json_object_get(c->body, "logprobs")))
        return fail(c, "requires logprobs to be true");
    return true;
}

static bool
rel_best_of(vctx_t *c, json_t *v, const field_t *f)
{
    json_t *n = json_object_get(c->body, "n");
    json_int_t want = json_is_integer(n) ? json_integer_value(n) : 1;
    if (json_integer_value(v) < want)
        return fail(c, "%" JSON_INTEGER_FORMAT " must be at least n (%" JSON_INTEGER_FORMAT ")", json_integer_value(v),
                    want);
    return true;
}

/* prompt (completions) and input (embeddings): a string, an array of strings, an array of token
 * ids or an array of token-id arrays. Embeddings refuse empty strings and more than 2048 items. */
static bool
check_tokens(vctx_t *c, json_t *v)
{
    if (!json_is_array(v))
        return fail(c, "must be an array of token ids like the first item, got %s", mg_json_type_name(v));
    if (json_array_size(v) == 0)
        return fail(c, "must not be an empty array of token ids");
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t)
    {
        if (!json_is_integer(t) || json_integer_value(t) < 0) {
            path_push(c, NULL, i);
            return fail(c, "must be a token id (an integer of at least 0), got %s",
                        json_is_integer(t) ? "a negative number" : mg_json_type_name(t));
        }
    }
    return true;
}

static bool
check_item(vctx_t *c, json_t *item, json_type kind, bool embeddings)
{
    switch (kind) {
    case JSON_STRING:
        if (!json_is_string(item))
            return fail(c, "must be a string like the first item, got %s", mg_json_type_name(item));
        if (embeddings && json_string_length(item) == 0)
            return fail(c, "must not be an empty string");
        return true;
    case JSON_INTEGER:
        if (!json_is_integer(item) || json_integer_value(item) < 0)
            return fail(c, "must be a token id (an integer of at least 0) like the first item, got %s",
                        json_is_integer(item) ? "a negative number" : mg_json_type_name(item));
        return true;
    case JSON_ARRAY:
        return check_tokens(c, item);
    default:
        return fail(c, "must be a string, a token id or an array of token ids, got %s", mg_json_type_name(item));
    }
}

static bool
check_text_or_tokens(vctx_t *c, json_t *v, bool embeddings)
{
    if (json_is_string(v)) {
        if (embeddings && json_string_length(v) == 0)
            return fail(c, "must not be an empty string");
        return true;
    }
    if (!json_is_array(v))
        return fail(c,
                    "must be a string, an array of strings, an array of token ids or an array of token-id arrays, "
                    "got %s",
                    mg_json_type_name(v));
    size_t n = json_array_size(v);
    if (n == 0)
        return fail(c, "must not be an empty array");
    if (embeddings && n > MAX_EMBED)
        return fail(c, "has %zu items; at most %d are allowed", n, MAX_EMBED);
    json_type kind = json_typeof(json_array_get(v, 0));
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        size_t saved = path_push(c, NULL, i);
        if (!check_item(c, item, kind, embeddings))
            return false;
        path_pop(c, saved);
    }
    return true;
}

static bool
chk_prompt(vctx_t *c, json_t *v, const field_t *f)
{
    return check_text_or_tokens(c, v, false);
}

static bool
chk_input(vctx_t *c, json_t *v, const field_t *f)
{
    return check_text_or_tokens(c, v, true);
}

/* ---- the three APIs ---- */

#define RANGE(lo, hi) .min = (lo), .max = (hi)

static const char *const reasoning_efforts[] = { "none", "minimal", "low", "medium", "high", "xhigh", NULL };
static const char *const verbosities[] = { "low", "medium", "high", NULL };
static const char *const encoding_formats[] = { "float", "base64", NULL };

/* POST /v1/chat/completions. Required fields first: they are reported in this order. */
static const field_t chat_fields[] = {
    { .name = "model", .check = chk_nonempty_string, .required = true },
    { .name = "messages", .check = chk_messages, .required = true },
    { .name = "audio", .check = chk_object, .sub = audio_fields },
    { .name = "frequency_penalty", .check = chk_number, RANGE(-2, 2) },
    { .name = "function_call", .check = chk_function_call },
    { .name = "functions", .check = chk_functions },
    { .name = "logit_bias", .check = chk_logit_bias },
    { .name = "logprobs", .check = chk_bool },
    { .name = "max_completion_tokens", .check = chk_max_tokens, RANGE(1, INFINITY) },
    { .name = "max_tokens", .check = chk_max_tokens, RANGE(1, INFINITY) },
    { .name = "metadata", .check = chk_metadata },
    { .name = "modalities", .check = chk_modalities },
    { .name = "n", .check = chk_int, RANGE(1, 128) },
    { .name = "parallel_tool_calls", .check = chk_bool },
    { .name = "prediction", .check = chk_object, .sub = prediction_fields },
    { .name = "presence_penalty", .check = chk_number, RANGE(-2, 2) },
    { .name = "prompt_cache_key", .check = chk_string },
    { .name = "prompt_cache_retention", .check = chk_string },
    { .name = "reasoning_effort", .check = chk_enum, .choices = reasoning_efforts },
    { .name = "response_format", .check = chk_union, .sub = response_format_variants },
    { .name = "safety_identifier", .check = chk_string },
    { .name = "seed", .check = chk_int, RANGE(-INFINITY, INFINITY) },
    { .name = "service_tier", .check = chk_string },
    { .name = "stop", .check = chk_stop },
    { .name = "store", .check = chk_bool },
    { .name = "stream", .check = chk_bool },
    { .name = "stream_options", .check = chk_object, .sub = stream_options_fields, .relate = rel_stream_options },
    { .name = "temperature", .check = chk_number, RANGE(0, 2) },
    { .name = "tool_choice", .check = chk_tool_choice, .relate = rel_tool_choice },
    { .name = "tools", .check = chk_tools },
    { .name = "top_logprobs", .check = chk_int, RANGE(0, 20), .relate = rel_top_logprobs },
    { .name = "top_p", .check = chk_number, RANGE(0, 1) },
    { .name = "user", .check = chk_string },
    { .name = "verbosity", .check = chk_enum, .choices = verbosities },
    { .name = "web_search_options", .check = chk_object, .sub = web_search_fields },
    { 0 },
};

/* POST /v1/completions. */
static const field_t completion_fields[] = {
    { .name = "model", .check = chk_nonempty_string, .required = true },
    { .name = "prompt", .check = chk_prompt, .required = true },
    { .name = "best_of", .check = chk_int, RANGE(0, 20), .relate = rel_best_of },
    { .name = "echo", .check = chk_bool },
    { .name = "frequency_penalty", .check = chk_number, RANGE(-2, 2) },
    { .name = "logit_bias", .check = chk_logit_bias },
    { .name = "logprobs", .check = chk_int, RANGE(0, 5) },
    { .name = "max_tokens", .check = chk_max_tokens, RANGE(0, INFINITY) },
    { .name = "n", .check = chk_int, RANGE(1, 128) },
    { .name = "presence_penalty", .check = chk_number, RANGE(-2, 2) },
    { .name = "seed", .check = chk_int, RANGE(-INFINITY, INFINITY) },
    { .name = "stop", .check = chk_stop },
    { .name = "stream", .check = chk_bool },
    { .name = "stream_options", .check = chk_object, .sub = stream_options_fields, .relate = rel_stream_options },
    { .name = "suffix", .check = chk_string },
    { .name = "temperature", .check = chk_number, RANGE(0, 2) },
    { .name = "top_p", .check = chk_number, RANGE(0, 1) },
    { .name = "user", .check = chk_string },
    { 0 },
};

/* POST /v1/embeddings. */
static const field_t embedding_fields[] = {
    { .name = "model", .check = chk_nonempty_string, .required = true },
    { .name = "input", .check = chk_input, .required = true },
    { .name = "dimensions", .check = chk_int, RANGE(1, INFINITY) },
    { .name = "encoding_format", .check = chk_enum, .choices = encoding_formats },
    { .name = "user", .check = chk_string },
    { 0 },
};

static bool
validate(json_t *body, const tp_model_config_t *model, mg_invalid_t *out, const field_t *fields, const char *api)
{
    vctx_t c = { .r = { .out = out, .dotted = false, .sep = " ", .root = "the request body" },
                 .model = model,
                 .body = body,
                 .api = api };
    out->param[0] = '\0';
    out->message[0] = '\0';
    if (!json_is_object(body))
        return fail(&c, "must be a JSON object, got %s", mg_json_type_name(body));
    if (!check_fields(&c, body, fields, true))
        return false;
    /* Every field is well formed now; check how they relate, in document order. */
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        const field_t *f = find_field(fields, key);
        if (!f || !f->relate || json_is_null(v))
            continue;
        size_t saved = path_push(&c, key, 0);
        if (!f->relate(&c, v, f))
            return false;
        path_pop(&c, saved);
    }
    return true;
}

bool
mg_validate_chat(json_t *body, const tp_model_config_t *model, mg_invalid_t *out)
{
    return validate(body, model, out, chat_fields, "chat completions");
}

bool
mg_validate_completion(json_t *body, const tp_model_config_t *model, mg_invalid_t *out)
{
    return validate(body, model, out, completion_fields, "completions");
}

bool
mg_validate_embeddings(json_t *body, const tp_model_config_t *model, mg_invalid_t *out)
{
    return validate(body, model, out, embedding_fields, "embeddings");
}
