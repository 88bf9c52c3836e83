/*
 * jsonscan.h — JSON text read without building a tree.
 *
 * model-gw relays most upstream answers (and forwards most client requests) as the bytes that
 * came, changing only what it must in place (the model name), instead of parsing them into
 * jansson values and printing them again. This module is what makes that safe: it checks a
 * document the way jansson's json_loadb(…, 0, …) does, so text it accepts is text jansson would
 * accept too, and finds the byte spans of an object's members. It allocates nothing and is
 * thread-safe.
 *
 * Every caller has a fallback: when a scan fails (invalid JSON, or merely something this module
 * does not handle, such as an object with more than MG_JSON_MAX_MEMBERS members), the caller
 * takes the jansson path it would have taken anyway.
 */
#ifndef MG_JSONSCAN_H
#define MG_JSONSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One member of an object, as spans of the scanned text. */
typedef struct mg_json_member {
    const char *key; /* the key's raw bytes between its quotes (escapes not decoded) */
    size_t key_len;
    const char *value; /* the value's text, from its first byte to its last */
    size_t value_len;
} mg_json_member_t;

#define MG_JSON_MAX_MEMBERS 64 /* members of one object that a scan records (OpenAI objects have a dozen) */

typedef struct mg_json_object {
    mg_json_member_t members[MG_JSON_MAX_MEMBERS]; /* in document order */
    size_t count;
    const char *close; /* the object's closing '}' */
    bool escaped_keys; /* some key, at any depth, has an escape: its raw bytes differ from the key
                          jansson sees, so a search by raw key may miss it */
} mg_json_object_t;

/* Checks that text[0..len) is one JSON document whose value is an object (whitespace around it
 * allowed), and records the object's members in *out. The check is jansson's: RFC 8259 syntax,
 * valid UTF-8, no "\u0000" and no unpaired surrogate escape in strings, integers that fit in 64
 * bits, reals that do not overflow, nesting at most 2048 deep. Returns false when the text fails
 * it, or has more than MG_JSON_MAX_MEMBERS top-level members or a number longer than 64
 * characters (which jansson may still accept). */
bool mg_json_scan_object(const char *text, size_t len, mg_json_object_t *out);

/* The last member whose raw key equals `key` (jansson keeps the last of duplicate keys), or
 * NULL. *count, when not NULL, gets how many members have that raw key. */
const mg_json_member_t *mg_json_find(const mg_json_object_t *obj, const char *key, size_t *count);

/* Whether the value text (from a scan) is an integer (a number with no fraction or exponent),
 * and then its value. */
bool mg_json_integer(const char *value, size_t len, int64_t *out);

/* Writes s as a JSON string (quotes and escapes as jansson writes them) to out, which has room
 * for at least mg_json_string_size(s) bytes; returns the bytes written. */
size_t mg_json_write_string(const char *s, char *out);

/* The bytes mg_json_write_string writes at most for s. */
size_t mg_json_string_size(const char *s);

#endif
