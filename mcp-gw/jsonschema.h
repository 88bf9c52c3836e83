/*
 * jsonschema.h — checks the arguments of an MCP tools/call against the tool's inputSchema before
 * the call goes upstream, with errors written for the model that made the call.
 *
 * A model that invents a parameter, misspells one or passes "5" where 5 is wanted gets an answer it
 * can act on: where the problem is ("items[2].name"), what is wrong in one sentence ("expected
 * integer, got string \"5\" (write it without quotes: 5)"), the nearest valid name for a
 * misspelling ("unknown property \"colour\" (did you mean \"color\"?)") and the part of the schema
 * that refused the value, so the gateway can show it.
 *
 * Dialect: JSON Schema 2020-12, plus the draft-04/06/07 forms MCP servers still emit (zod-to-json-
 * schema writes draft-07): boolean schemas; type; properties, required, additionalProperties,
 * patternProperties, propertyNames, min/maxProperties, dependentRequired, dependentSchemas and
 * draft-07 dependencies; prefixItems and items, draft-07 tuple items with additionalItems,
 * min/maxItems, uniqueItems, contains with min/maxContains; enum and const (JSON equality, so
 * 1 == 1.0); minimum, maximum, exclusiveMinimum/Maximum (numbers, or draft-04 booleans),
 * multipleOf; minLength/maxLength in code points; pattern; format; allOf, anyOf, oneOf, not,
 * if/then/else; $ref (also $dynamicRef and $recursiveRef, resolved like $ref) to "#", JSON
 * pointers ("#/$defs/x", "#/definitions/x", ~0 ~1 and %-escapes), $anchor names, draft-07
 * "$id": "#name" anchors, and the $id of any schema in the same document. Not supported:
 * unevaluatedProperties/unevaluatedItems and the dynamic scope of $dynamicRef (both ignored), and
 * references to other documents (a compile error, as is any $ref that does not resolve). Unknown
 * keywords and formats are ignored.
 *
 * Patterns are ECMA-262 regular expressions run by PCRE2 in UTF mode, unanchored, with ECMA's
 * "$", "[^]" and \uXXXX / \u{X…}; a match that backtracks more than a fixed budget fails
 * with an error instead of taking the thread. Formats asserted: date-time, date, time (RFC 3339;
 * time's offset is optional as zod's time() emits none), email, uri, uuid, ipv4, ipv6, hostname.
 *
 * Cost: compiling does the work once (regexes, $ref resolution, a check that no $ref loops back
 * to itself without descending into the value). Validating a valid value allocates nothing but
 * a per-thread PCRE2 match block on a thread's first pattern (and a string per key for
 * propertyNames); describing errors allocates a little. A typical five-property tool call takes
 * well under a microsecond. Limits keep a hostile schema or value from taking the thread: values
 * nested deeper than MCP_SCHEMA_MAX_DEPTH, a pattern's backtracking, and the total work of one
 * validation (alternatives that each recurse can make it exponential) are bounded, and exceeding
 * one is an error ("depth", "pattern", "complexity"). A compiled schema is immutable: validate it
 * from any number of threads at once.
 */
#ifndef MCP_JSONSCHEMA_H
#define MCP_JSONSCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* Values nested deeper than this below the validated value are refused with keyword "depth";
 * it bounds the stack a recursive schema (a tree) can take. */
#define MCP_SCHEMA_MAX_DEPTH 64

/* Bytes in mcp_schema_error_t's path and message, with the terminating NUL. */
#define MCP_SCHEMA_PATH_MAX    256
#define MCP_SCHEMA_MESSAGE_MAX 320

typedef struct mcp_schema mcp_schema_t;

/* Compiles `schema`, which is borrowed: the compiled form takes its own reference and points into
 * it, so the caller must not modify it afterwards. Returns the compiled schema, to release with
 * mcp_schema_free(). When the schema itself is unusable (a keyword of the wrong type such as
 * "minLength": "3", an unknown type name, a bad regular expression, a $ref that does not resolve or
 * that loops back to itself) returns NULL and, when err is not NULL, sets *err to a malloc'd
 * message naming the place in the schema: "#/properties/q/pattern: invalid regular expression
 * \"[a-\" at offset 3: missing terminating ] for character class". */
mcp_schema_t *mcp_schema_compile(json_t *schema, char **err);

/* Releases a compiled schema and its reference to the schema JSON. NULL is allowed. */
void mcp_schema_free(mcp_schema_t *s);

/* One reason a value does not match. All strings are valid UTF-8 and NUL-terminated; long ones
 * are cut (a cut path ends in "..."), never overrun. */
typedef struct mcp_schema_error {
    char path[MCP_SCHEMA_PATH_MAX];       /* where in the value: "" for the value itself, then "a.b",
                                             "items[2].name", or ["odd key"] for keys that are not
                                             plain names. For a missing or unknown property it is the
                                             property's own path ("config.retries"). */
    const char *keyword;                  /* static: the keyword that refused it: "type", "required",
                                             "additionalProperties", "enum", "const", "minimum",
                                             "pattern", "format", "anyOf", "oneOf", "not", "false" (a
                                             false schema), "depth", "complexity", ... */
    char message[MCP_SCHEMA_MESSAGE_MAX]; /* what is wrong and what is expected, without the path:
                                             "expected integer, got string \"5\" (write it without
                                             quotes: 5)", "missing required property \"b\"",
                                             "unknown property \"colour\" (did you mean \"color\"?)" */
    const char *suggestion;               /* the nearest valid name for an unknown property or a
                                             misspelt enum string, else NULL; points into the schema */
    json_t *schema;                       /* borrowed from the compiled schema: the subschema that
                                             refused the value (the object's schema for required and
                                             additionalProperties, the one holding anyOf/oneOf for
                                             those). Valid until mcp_schema_free(). */
} mcp_schema_error_t;

/* Validates `instance` (borrowed, not modified, not NULL) against `s`. Returns true when it
 * matches; *count is then 0. Otherwise returns false and fills errors[0 .. *count) with at most
 * `max` errors, the most useful first: unknown properties, then missing required ones (one that an
 * unknown property's suggestion already names is not repeated), then problems inside the values in
 * document order. A failed anyOf/oneOf is one error: when only one alternative accepts this kind of
 * value its own errors are reported, when none does "expected string or null, got integer 5", else
 * "matches none of the 3 alternatives; closest is anyOf[1] at radius: <that one's first error>".
 * `errors` may be NULL when max is 0 (only the answer is wanted, the fastest way); count may be
 * NULL. The walk stops once `max` errors are found. */
bool mcp_schema_validate(const mcp_schema_t *s, const json_t *instance, mcp_schema_error_t *errors, size_t max,
                         size_t *count);

/* The candidate nearest to `name`, or NULL when none is near enough to be a plausible misspelling.
 * Names compare case-insensitively with '_', '-', '.' and spaces ignored, so camelCase, snake_case
 * and kebab-case spellings of one name are equal; then by edit distance (a transposition counts
 * once, up to 1 edit for names of 3 to 6 characters, 2 up to 11, 3 beyond), then as a prefix (3
 * characters or more), a substring (4 or more) or a long shared start ("retries", "retry"). Ties go
 * to the earlier candidate. Returns one of `candidates` (borrowed); NULL entries are skipped. */
const char *mcp_suggest(const char *name, const char *const *candidates, size_t n);

#endif
