/*
 * test_jsonscan.c — model-gw/jsonscan.c: what it accepts jansson accepts, with the same members;
 * integers; strings written as jansson writes them. Checked on hand-picked documents and on
 * many deterministic mutations of them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jsonscan.h"

/* What jansson says of text: an object (new reference), or NULL. */
static json_t *
jansson_object(const char *text, size_t len)
{
    json_t *j = json_loadb(text, len, 0, NULL);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* When the scan accepts text, jansson must too, and every member must be jansson's: the last of
 * each raw key, with an equal value. Returns whether the scan accepted. */
static bool
agrees_with_jansson(const char *text, size_t len)
{
    mg_json_object_t obj;
    bool scanned = mg_json_scan_object(text, len, &obj);
    json_t *j = jansson_object(text, len);
    if (!scanned) {
        json_decref(j);
        return false;
    }
    if (j == NULL)
        fail_msg("the scan accepts what jansson refuses: %.*s", (int)len, text);
    assert_int_equal(*obj.close, '}');
    if (!obj.escaped_keys) {
        size_t distinct = 0;
        for (size_t i = 0; i < obj.count; i++) {
            char key[256];
            snprintf(key, sizeof(key), "%.*s", (int)obj.members[i].key_len, obj.members[i].key);
            const mg_json_member_t *last = mg_json_find(&obj, key, NULL);
            distinct += last == &obj.members[i];
            json_t *value = json_loadb(last->value, last->value_len, JSON_DECODE_ANY, NULL);
            assert_non_null(value);
            assert_true(json_equal(value, json_object_get(j, key)));
            json_decref(value);
        }
        assert_int_equal(distinct, json_object_size(j));
    }
    json_decref(j);
    return true;
}

static const char *const valid[] = {
    "{}",
    " {\"a\" : 1 } \n",
    "{\"model\":\"llama3\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}",
    "{\"a\":[1,-2,3.5,-0.0,1e10,2E-3,0],\"b\":{\"c\":{\"d\":[]}},\"e\":null,\"f\":true,\"g\":false}",
    "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}",
    "{\"utf8\":\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"}",
    "{\"dup\":1,\"dup\":2}",
    "{\"mod\\u0065l\":\"x\"}",
    "{\"i\":9223372036854775807,\"j\":-9223372036854775808}",
    "{\"\":\"empty key\"}",
};

static const char *const invalid[] = {
    "",
    "   ",
    "[]",
    "\"x\"",
    "{",
    "{\"a\"}",
    "{\"a\":}",
    "{\"a\":1,}",
    "{\"a\":1}}",
    "{\"a\":1} x",
    "{\"a\":01}",
    "{\"a\":1.}",
    "{\"a\":.5}",
    "{\"a\":+1}",
    "{\"a\":-}",
    "{\"a\":1e}",
    "{\"a\":tru}",
    "{\"a\":truex}",
    "{\"a\":\"\\u0000\"}",
    "{\"a\":\"\\ud800\"}",
    "{\"a\":\"\\ud800\\u0041\"}",
    "{\"a\":\"\\udc00\"}",
    "{\"a\":\"\\x\"}",
    "{\"a\":\"tab\there\"}",
    "{\"a\":\"\xc0\xaf\"}",         /* overlong */
    "{\"a\":\"\xed\xa0\x80\"}",     /* an encoded surrogate */
    "{\"a\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
    "{\"a\":\"\xe2\x82\"}",         /* cut short */
    "{\"a\":9223372036854775808}",
    "{\"a\":-9223372036854775809}",
    "{\"a\":1e400}",
    "{'a':1}",
    "{\"a\":1 \"b\":2}",
};

static void
hand_picked(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        if (!agrees_with_jansson(valid[i], strlen(valid[i])))
            fail_msg("refused: %s", valid[i]);
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        mg_json_object_t obj;
        if (mg_json_scan_object(invalid[i], strlen(invalid[i]), &obj))
            fail_msg("accepted: %s", invalid[i]);
    }
    /* A NUL byte inside the text is not JSON. */
    mg_json_object_t obj;
    assert_false(mg_json_scan_object("{\"a\":\"x\0y\"}", 11, &obj));
}

static void
members_and_flags(void **state)
{
    (void)state;
    const char *text = "{ \"model\" : \"up\", \"n\": [1, {\"x\": 2}], \"model\":\"again\" }";
    mg_json_object_t obj;
    assert_true(mg_json_scan_object(text, strlen(text), &obj));
    assert_int_equal(obj.count, 3);
    assert_false(obj.escaped_keys);
    assert_memory_equal(obj.members[1].value, "[1, {\"x\": 2}]", obj.members[1].value_len);
    size_t count;
    const mg_json_member_t *m = mg_json_find(&obj, "model", &count);
    assert_int_equal(count, 2);
    assert_memory_equal(m->value, "\"again\"", m->value_len); /* jansson keeps the last */
    assert_null(mg_json_find(&obj, "absent", &count));
    assert_int_equal(count, 0);
    assert_ptr_equal(obj.close, text + strlen(text) - 1);

    const char *nested = "{\"a\":{\"k\\u0065y\":1}}";
    assert_true(mg_json_scan_object(nested, strlen(nested), &obj));
    assert_true(obj.escaped_keys); /* at any depth */

    char big[2048] = "{";
    for (int i = 0; i <= MG_JSON_MAX_MEMBERS; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "%s\"k%d\":%d", i ? "," : "", i, i);
    strcat(big, "}");
    assert_false(mg_json_scan_object(big, strlen(big), &obj)); /* left to jansson */
}

static void
depth_limit(void **state)
{
    (void)state;
    /* jansson refuses values nested deeper than 2048 (the document's value at depth 1). */
    size_t n = 2047; /* arrays inside the object: the innermost at depth 2048 */
    char *text = malloc(2 * n + 16);
    char *w = text;
    w += sprintf(w, "{\"a\":");
    for (size_t i = 0; i < n - 1; i++)
        *w++ = '[';
    for (size_t i = 0; i < n - 1; i++)
        *w++ = ']';
    w += sprintf(w, "}");
    assert_true(agrees_with_jansson(text, (size_t)(w - text)));
    w = text + sprintf(text, "{\"a\":");
    for (size_t i = 0; i < n; i++)
        *w++ = '[';
    *w++ = '1'; /* a value at depth 2049 */
    for (size_t i = 0; i < n; i++)
        *w++ = ']';
    w += sprintf(w, "}");
    mg_json_object_t obj;
    assert_false(mg_json_scan_object(text, (size_t)(w - text), &obj));
    free(text);
}

static uint64_t
next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Deterministic mutations of the valid documents (bytes changed, inserted, deleted, spans
 * duplicated): whatever the scan accepts, jansson accepts with the same members. */
static void
mutations(void **state)
{
    (void)state;
    static const char alphabet[] = "{}[]\":,\\u0123456789abcdefnrtlse.-+E \t\n\xc3\xa9\xed\xf0\x80\xbf";
    uint64_t seed = 0x9e3779b97f4a7c15u;
    size_t accepted = 0, tried = 0;
    for (int round = 0; round < 40000; round++) {
        const char *base = valid[next(&seed) % (sizeof(valid) / sizeof(valid[0]))];
        char buf[512];
        size_t len = strlen(base);
        memcpy(buf, base, len);
        int edits = 1 + (int)(next(&seed) % 3);
        for (int e = 0; e < edits && len > 0 && len < sizeof(buf) - 16; e++) {
            size_t at = next(&seed) % len;
            char c = alphabet[next(&seed) % (sizeof(alphabet) - 1)];
            switch (next(&seed) % 4) {
            case 0:
                buf[at] = c;
                break;
            case 1:
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = c;
                len++;
                break;
            case 2:
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break;
            default: {
                size_t span = 1 + next(&seed) % 8;
                if (at + span <= len && len + span < sizeof(buf)) {
                    memmove(buf + at + span, buf + at, len - at);
                    len += span;
                }
            }
            }
        }
        tried++;
        accepted += agrees_with_jansson(buf, len);
    }
    /* The mutations must also produce documents that pass, or the property says little. */
    assert_true(accepted > tried / 20);
}

static void
integers(void **state)
{
    (void)state;
    int64_t v;
    assert_true(mg_json_integer("42", 2, &v));
    assert_int_equal(v, 42);
    assert_true(mg_json_integer("-7", 2, &v));
    assert_int_equal(v, -7);
    assert_false(mg_json_integer("4.0", 3, &v));
    assert_false(mg_json_integer("1e3", 3, &v));
    assert_false(mg_json_integer("\"1\"", 3, &v));
    assert_false(mg_json_integer("null", 4, &v));
}

static void
strings_written_as_jansson_writes_them(void **state)
{
    (void)state;
    const char *cases[] = { "llama3", "a\"b\\c/d", "tab\tnl\ncr\rbs\bff\f", "ctl\x01\x1f", "h\xc3\xa9", "" };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[128];
        assert_true(mg_json_string_size(cases[i]) <= sizeof(out));
        size_t n = mg_json_write_string(cases[i], out);
        json_t *s = json_string(cases[i]);
        char *want = json_dumps(s, JSON_ENCODE_ANY | JSON_COMPACT);
        assert_int_equal(n, strlen(want));
        assert_memory_equal(out, want, n);
        free(want);
        json_decref(s);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hand_picked), cmocka_unit_test(members_and_flags),
        cmocka_unit_test(depth_limit), cmocka_unit_test(mutations),
        cmocka_unit_test(integers),    cmocka_unit_test(strings_written_as_jansson_writes_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
