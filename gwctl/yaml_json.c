/* yaml_json.c — YAML to jansson with line numbers (see yaml_json.h). */
#include <errno.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "log.h"
#include "mem.h"
#include "yaml_json.h"

#define MAX_DEPTH 64 /* deeper nesting is no configuration a person wrote */

typedef struct line_record {
    const json_t *value; /* the value, or the object holding `key` */
    char *key;           /* NULL for a value's own line */
    int line;
} line_record_t;

struct gwctl_yaml {
    char *name;
    json_t *root;
    line_record_t *lines;
    size_t num_lines;
};

typedef struct convert {
    gwctl_yaml_t *doc;
    yaml_document_t *ydoc;
    char *err;
} convert_t;

static void
remember(gwctl_yaml_t *doc, const json_t *value, const char *key, size_t line)
{
    doc->lines = tp_realloc(doc->lines, (doc->num_lines + 1) * sizeof(*doc->lines));
    doc->lines[doc->num_lines++] =
        (line_record_t){ .value = value, .key = key != NULL ? tp_strdup(key) : NULL, .line = (int)line };
}

static void
forget_lines(gwctl_yaml_t *doc)
{
    for (size_t i = 0; i < doc->num_lines; i++)
        free(doc->lines[i].key);
    free(doc->lines);
    doc->lines = NULL;
    doc->num_lines = 0;
}

static size_t
line_of(const yaml_node_t *node)
{
    return node->start_mark.line + 1;
}

/* The core schema's plain scalars, in the order they are tried. */
enum { RE_NULL, RE_TRUE, RE_FALSE, RE_INT, RE_REAL, NUM_RE };
static const char *const patterns[NUM_RE] = {
    [RE_NULL] = "^(|~|null|Null|NULL)$",
    [RE_TRUE] = "^(true|True|TRUE)$",
    [RE_FALSE] = "^(false|False|FALSE)$",
    [RE_INT] = "^[-+]?[0-9]+$",
    [RE_REAL] = "^[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?$",
};

static bool
matches(const char *text, int which)
{
    static regex_t compiled[NUM_RE]; /* compiled once; gwctl is single-threaded */
    static bool ready;
    for (int i = 0; !ready && i < NUM_RE; i++) {
        if (regcomp(&compiled[i], patterns[i], REG_EXTENDED | REG_NOSUB) != 0)
            tp_fatal("regcomp: bad pattern in yaml_json.c");
    }
    ready = true;
    return regexec(&compiled[which], text, 0, NULL, 0) == 0;
}

/* A plain scalar typed by the core schema; NULL with c->err when an integer does not fit. */
static json_t *
plain_scalar(convert_t *c, const yaml_node_t *node, const char *text)
{
    if (matches(text, RE_NULL))
        return json_null();
    if (matches(text, RE_TRUE))
        return json_true();
    if (matches(text, RE_FALSE))
        return json_false();
    if (matches(text, RE_INT)) {
        errno = 0;
        long long v = strtoll(text, NULL, 10);
        if (errno == 0)
            return json_integer(v);
        c->err = tp_sprintf("%s:%zu: number %s is too large", c->doc->name, line_of(node), text);
        return NULL;
    }
    if (matches(text, RE_REAL))
        return json_real(strtod(text, NULL));
    return json_string(text);
}

static json_t *convert_node(convert_t *c, yaml_node_t *node, int depth);

static json_t *
convert_mapping(convert_t *c, yaml_node_t *node, int depth)
{
    json_t *obj = json_object();
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(c->ydoc, pair->key);
        yaml_node_t *v = yaml_document_get_node(c->ydoc, pair->value);
        if (k->type != YAML_SCALAR_NODE) {
            c->err = tp_sprintf("%s:%zu: a key must be a plain value", c->doc->name, line_of(k));
            break;
        }
        const char *key = (const char *)k->data.scalar.value;
        if (json_object_get(obj, key) != NULL) {
            c->err = tp_sprintf("%s:%zu: duplicate key '%s'", c->doc->name, line_of(k), key);
            break;
        }
        json_t *value = convert_node(c, v, depth + 1);
        if (value == NULL)
            break;
        json_object_set_new(obj, key, value);
        remember(c->doc, obj, key, line_of(k));
    }
    if (c->err != NULL) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

static json_t *
convert_sequence(convert_t *c, yaml_node_t *node, int depth)
{
    json_t *arr = json_array();
    for (yaml_node_item_t *item = node->data.sequence.items.start; item < node->data.sequence.items.top; item++) {
        json_t *value = convert_node(c, yaml_document_get_node(c->ydoc, *item), depth + 1);
        if (value == NULL) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, value);
    }
    return arr;
}

static json_t *
convert_node(convert_t *c, yaml_node_t *node, int depth)
{
    if (depth > MAX_DEPTH) {
        c->err = tp_sprintf("%s:%zu: nested too deeply", c->doc->name, line_of(node));
        return NULL;
    }
    json_t *value = NULL;
    switch (node->type) {
    case YAML_SCALAR_NODE:
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
            value = plain_scalar(c, node, (const char *)node->data.scalar.value);
        else
            value = json_stringn((const char *)node->data.scalar.value, node->data.scalar.length);
        if (value == NULL && c->err == NULL)
            c->err = tp_sprintf("%s:%zu: text is not valid UTF-8", c->doc->name, line_of(node));
        break;
    case YAML_MAPPING_NODE:
        value = convert_mapping(c, node, depth);
        break;
    case YAML_SEQUENCE_NODE:
        value = convert_sequence(c, node, depth);
        break;
    default:
        c->err = tp_sprintf("%s:%zu: unexpected YAML node", c->doc->name, line_of(node));
    }
    if (value != NULL && !json_is_true(value) && !json_is_false(value) && !json_is_null(value))
        remember(c->doc, value, NULL, line_of(node));
    return value;
}

/* The whole of path ("-": stdin) in a malloc'd buffer, or NULL with *err. */
static char *
read_all(const char *path, const char *name, size_t *len, char **err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) {
        *err = tp_sprintf("%s: %s", name, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0, got;
    char *buf = tp_malloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0)
            buf = tp_realloc(buf, cap *= 2);
    }
    bool failed = ferror(f) != 0;
    if (f != stdin)
        fclose(f);
    if (failed) {
        *err = tp_sprintf("%s: read failed", name);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Parses text as YAML into doc->root; returns 0, or -EINVAL with *err. */
static int
load_yaml(gwctl_yaml_t *doc, const char *text, size_t len, char **err)
{
    yaml_parser_t parser;
    yaml_document_t ydoc;
    if (!yaml_parser_initialize(&parser))
        tp_fatal("yaml_parser_initialize: out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &ydoc)) {
        *err = tp_sprintf("%s:%zu: %s", doc->name, parser.problem_mark.line + 1,
                          parser.problem != NULL ? parser.problem : "not valid YAML");
        yaml_parser_delete(&parser);
        return -EINVAL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&ydoc);
    convert_t c = { .doc = doc, .ydoc = &ydoc };
    doc->root = root != NULL ? convert_node(&c, root, 0) : NULL;
    yaml_document_delete(&ydoc);
    yaml_parser_delete(&parser);
    *err = c.err;
    return c.err != NULL ? -EINVAL : 0;
}

gwctl_yaml_t *
gwctl_yaml_load(const char *path, char **err)
{
    gwctl_yaml_t *doc = tp_calloc(1, sizeof(*doc));
    doc->name = tp_strdup(strcmp(path, "-") == 0 ? "<stdin>" : path);
    size_t len = 0;
    char *text = read_all(path, doc->name, &len, err);
    if (text == NULL) {
        gwctl_yaml_free(doc);
        return NULL;
    }
    if (load_yaml(doc, text, len, err) != 0) {
        /* Some valid JSON (tabs for indentation) is not YAML that libyaml accepts. */
        forget_lines(doc);
        json_error_t jerr;
        size_t skip = strspn(text, " \t\r\n");
        doc->root = text[skip] == '{' || text[skip] == '[' ? json_loadb(text, len, 0, &jerr) : NULL;
        if (doc->root != NULL) {
            free(*err);
            *err = NULL;
        }
    }
    free(text);
    if (*err != NULL) {
        gwctl_yaml_free(doc);
        return NULL;
    }
    return doc;
}

json_t *
gwctl_yaml_root(const gwctl_yaml_t *doc)
{
    return doc->root;
}

const char *
gwctl_yaml_name(const gwctl_yaml_t *doc)
{
    return doc->name;
}

int
gwctl_yaml_line(const gwctl_yaml_t *doc, const json_t *value)
{
    for (size_t i = 0; i < doc->num_lines; i++) {
        if (doc->lines[i].value == value && doc->lines[i].key == NULL)
            return doc->lines[i].line;
    }
    return 0;
}

int
gwctl_yaml_key_line(const gwctl_yaml_t *doc, const json_t *object, const char *key)
{
    for (size_t i = 0; i < doc->num_lines; i++) {
        if (doc->lines[i].value == object && doc->lines[i].key != NULL && strcmp(doc->lines[i].key, key) == 0)
            return doc->lines[i].line;
    }
    return 0;
}

void
gwctl_yaml_free(gwctl_yaml_t *doc)
{
    if (doc == NULL)
        return;
    forget_lines(doc);
    json_decref(doc->root);
    free(doc->name);
    free(doc);
}
