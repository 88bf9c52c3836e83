/*
 * yaml_json.h — a YAML (or JSON) file read into jansson values, remembering the line each value
 * and each mapping key came from, so that later checks can say "FILE:LINE: …".
 *
 * Plain scalars are typed as YAML 1.2's core schema does: null/~/empty → null, true/false →
 * booleans, decimal integers → integers, decimals and exponents → reals, anything else →
 * strings (so "09:00" and "gpt-4o" stay strings). Quoted and block scalars are always strings.
 * Mapping keys must be scalars and unique. Only the first document of the file is read.
 */
#ifndef GWCTL_YAML_JSON_H
#define GWCTL_YAML_JSON_H

#include <jansson.h>

typedef struct gwctl_yaml gwctl_yaml_t;

/* Reads path ("-": standard input). Returns the document (free with gwctl_yaml_free), or NULL
 * and *err (malloc'd) such as "rules.yaml:4: duplicate key 'id'" or "x.yaml: No such file or
 * directory". A file that YAML cannot read but JSON can is taken as JSON, without line numbers. */
gwctl_yaml_t *gwctl_yaml_load(const char *path, char **err);

/* The document's value, borrowed from the document (NULL for an empty file). */
json_t *gwctl_yaml_root(const gwctl_yaml_t *doc);

/* The file's name for messages ("<stdin>" for "-"). */
const char *gwctl_yaml_name(const gwctl_yaml_t *doc);

/* The 1-based line where an object, array, string or number of the document starts; 0 when
 * unknown (true, false and null are shared by jansson and have no line of their own). */
int gwctl_yaml_line(const gwctl_yaml_t *doc, const json_t *value);

/* The line of `key` in `object`; 0 when unknown. */
int gwctl_yaml_key_line(const gwctl_yaml_t *doc, const json_t *object, const char *key);

void gwctl_yaml_free(gwctl_yaml_t *doc);

#endif
