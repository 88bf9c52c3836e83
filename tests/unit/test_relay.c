/*
 * test_relay.c — model-gw/relay.c: usage read and stripped or kept, the public model name, and
 * the tool-call contract restored for upstreams that break it, in streams and whole responses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "relay.h"

/* Relays one event; returns what the client gets as text ("" when the event is dropped). */
static char *
relay_text(mg_relay_t *relay, const char *event)
{
    mg_buffer_t out = { 0 };
    mg_relay_chunk(relay, event, strlen(event), &out);
    char *text = strndup(out.data != NULL ? out.data : "", out.len);
    mg_buffer_release(&out);
    return text;
}

static json_t *
relay_one(mg_relay_t *relay, const char *event)
{
    char *out = relay_text(relay, event);
    size_t len = strlen(out);
    if (len == 0) {
        free(out);
        return NULL;
    }
    assert_memory_equal(out, "data: ", 6);
    assert_memory_equal(out + len - 2, "\n\n", 2);
    json_t *j = json_loadb(out + 6, len - 8, 0, NULL);
    free(out);
    assert_non_null(j);
    return j;
}

static void
usage_chunk_stripped_unless_asked(void **state)
{
    (void)state;
    const char *usage = "{\"id\":\"x\",\"model\":\"up\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,"
                        "\"completion_tokens\":5,\"total_tokens\":12}}";
    mg_relay_t r = { .public_model = "llama3", .request_id = "rid", .client_wants_usage = false };
    assert_null(relay_one(&r, usage));
    assert_true(r.usage.seen);
    assert_int_equal(r.usage.prompt_tokens, 7);
    assert_int_equal(r.usage.completion_tokens, 5);

    mg_relay_t asked = { .public_model = "llama3", .request_id = "rid", .client_wants_usage = true };
    json_t *j = relay_one(&asked, usage);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")), 12);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "llama3");
    json_decref(j);
}

/* An upstream's impossible counts (negative, absurdly large) are read as 0, whichever path
 * (parsed, scanned, a translated chunk) reads them: they must never reach a counter or a budget. */
static void
impossible_token_counts_read_as_zero(void **state)
{
    (void)state;
    mg_relay_t r = { .public_model = "m", .request_id = "rid" };
    json_decref(relay_one(&r, "{\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],"
                              "\"usage\":{\"prompt_tokens\":-7,\"completion_tokens\":99999999999999999}}"));
    assert_true(r.usage.seen);
    assert_int_equal(r.usage.prompt_tokens, 0);
    assert_int_equal(r.usage.completion_tokens, 0);

    mg_relay_t whole = { .public_model = "m", .request_id = "rid" };
    const char *body = "{\"model\":\"up\",\"choices\":[],\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":3}}";
    mg_buffer_t out = { 0 };
    assert_true(mg_relay_response_text(&whole, body, strlen(body), &out));
    assert_int_equal(whole.usage.prompt_tokens, 0);
    assert_int_equal(whole.usage.completion_tokens, 3);
    mg_buffer_release(&out);

    mg_relay_t translated = { .public_model = "m", .request_id = "rid" };
    json_t *chunk = json_pack("{s:[], s:{s:i, s:i}}", "choices", "usage", "prompt_tokens", -5, "completion_tokens", 2);
    mg_relay_chunk_json(&translated, chunk);
    assert_int_equal(translated.usage.prompt_tokens, 0);
    assert_int_equal(translated.usage.completion_tokens, 2);
    json_decref(chunk);
}

static void
continuous_usage_removed_from_content_chunks(void **state)
{
    (void)state;
    mg_relay_t r = { .public_model = "m", .request_id = "rid" };
    json_t *j = relay_one(&r, "{\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],"
                              "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}");
    assert_null(json_object_get(j, "usage"));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta"), "content")),
                        "hi");
    assert_int_equal(r.usage.completion_tokens, 1);
    json_decref(j);
}

static void
tool_call_fragments_pass_unchanged(void **state)
{
    (void)state;
    mg_relay_t r = { .public_model = "m", .request_id = "rid" };
    const char *open = "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\","
                       "\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}";
    const char *frag = "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
                       "\"function\":{\"arguments\":\"{\\\"ci\"}}]}}]}";
    json_t *a = relay_one(&r, open), *b = relay_one(&r, frag);
    json_t *expect_a = json_loads(open, 0, NULL), *expect_b = json_loads(frag, 0, NULL);
    assert_true(json_equal(a, expect_a));
    assert_true(json_equal(b, expect_b)); /* a fragment gets no invented id */
    assert_int_equal(r.repairs, 0);
    json_decref(a), json_decref(b), json_decref(expect_a), json_decref(expect_b);
}

static void
broken_tool_calls_are_repaired(void **state)
{
    (void)state;
    mg_relay_t r = { .public_model = "m", .request_id = "rid" };
    json_t *j = relay_one(&r, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,"
                              "\"function\":{\"name\":\"f\",\"arguments\":{\"city\":\"Oslo\"}}}]}}]}");
    json_t *call = json_array_get(
        json_object_get(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta"), "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(call, "id")), "call_rid_1");
    assert_string_equal(json_string_value(json_object_get(call, "type")), "function");
    assert_string_equal(json_string_value(json_object_get(json_object_get(call, "function"), "arguments")),
                        "{\"city\":\"Oslo\"}");
    assert_int_equal(r.repairs, 2);
    json_decref(j);

    mg_relay_t whole = { .public_model = "pub", .request_id = "r2" };
    json_t *body = json_loads("{\"model\":\"up\",\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":null,"
                              "\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
                              "{\"a\":1}}}]}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}",
                              0, NULL);
    mg_relay_response(&whole, body);
    json_t *wc = json_array_get(
        json_object_get(json_object_get(json_array_get(json_object_get(body, "choices"), 0), "message"), "tool_calls"),
        0);
    assert_string_equal(json_string_value(json_object_get(wc, "id")), "call_r2_0");
    assert_string_equal(json_string_value(json_object_get(json_object_get(wc, "function"), "arguments")), "{\"a\":1}");
    assert_string_equal(json_string_value(json_object_get(body, "model")), "pub");
    assert_int_equal(whole.usage.prompt_tokens, 9);
    json_decref(body);
}

static void
done_and_non_json_pass_through(void **state)
{
    (void)state;
    mg_relay_t r = { .public_model = "m", .request_id = "rid" };
    char *done = relay_text(&r, "[DONE]");
    assert_string_equal(done, "data: [DONE]\n\n");
    free(done);
    char *odd = relay_text(&r, "not json");
    assert_string_equal(odd, "data: not json\n\n");
    free(odd);
    /* JSON that jansson refuses (a lone surrogate escape) is not JSON either: as it came */
    char *lone = relay_text(&r, "{\"model\":\"up\",\"x\":\"\\udc00\"}");
    assert_string_equal(lone, "data: {\"model\":\"up\",\"x\":\"\\udc00\"}\n\n");
    free(lone);
}

/* A chunk with nothing to restore, strip or read keeps the upstream's bytes (spacing, key order,
 * number and string spelling); only the model name changes. */
static void
plain_chunks_keep_their_bytes(void **state)
{
    (void)state;
    mg_relay_t r = { .public_model = "pub\"lic", .request_id = "rid" };
    char *out = relay_text(&r, "{ \"id\": \"c1\", \"model\" : \"up\", \"x\": 1.50, \"s\": \"\\u00e9/\", "
                               "\"choices\": [{\"delta\": {\"content\": \"hi\"}}], \"usage\": null }");
    assert_string_equal(out, "data: { \"id\": \"c1\", \"model\" : \"pub\\\"lic\", \"x\": 1.50, \"s\": \"\\u00e9/\", "
                             "\"choices\": [{\"delta\": {\"content\": \"hi\"}}], \"usage\": null }\n\n");
    free(out);
    /* no model member: nothing added */
    out = relay_text(&r, "{\"choices\":[]}");
    assert_string_equal(out, "data: {\"choices\":[]}\n\n");
    free(out);
    assert_false(r.usage.seen);
}

/* A whole answer relayed as text: the same result as the parsed path, usage read. */
static void
whole_answer_as_text(void **state)
{
    (void)state;
    const char *body = "{\"id\":\"x\",\"object\":\"chat.completion\",\"model\":\"up\",\"choices\":[{\"index\":0,"
                       "\"message\":{\"role\":\"assistant\",\"content\":\"hello\"},\"finish_reason\":\"stop\"}],"
                       "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}";
    mg_relay_t t = { .public_model = "pub", .request_id = "r" };
    mg_buffer_t out = { 0 };
    assert_true(mg_relay_response_text(&t, body, strlen(body), &out));
    json_t *got = json_loadb(out.data, out.len, 0, NULL);
    mg_buffer_release(&out);
    mg_relay_t j = { .public_model = "pub", .request_id = "r" };
    json_t *want = json_loads(body, 0, NULL);
    mg_relay_response(&j, want);
    assert_true(json_equal(got, want));
    assert_true(t.usage.seen);
    assert_int_equal(t.usage.prompt_tokens, 9);
    assert_int_equal(t.usage.completion_tokens, 4);
    json_decref(got), json_decref(want);

    /* tool calls, an escaped key, or text jansson refuses: left to the parsed path */
    const char *refused[] = {
        "{\"model\":\"up\",\"choices\":[{\"message\":{\"tool_calls\":[]}}]}",
        "{\"mod\\u0065l\":\"up\"}",
        "{\"model\":\"up\",\"n\":123456789012345678901}",
        "{\"model\":\"up\"} x",
        "",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        mg_relay_t r = { .public_model = "pub", .request_id = "r" };
        assert_false(mg_relay_response_text(&r, refused[i], strlen(refused[i]), &out));
        assert_int_equal(out.len, 0);
        assert_false(r.usage.seen);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(usage_chunk_stripped_unless_asked),
        cmocka_unit_test(continuous_usage_removed_from_content_chunks),
        cmocka_unit_test(tool_call_fragments_pass_unchanged),
        cmocka_unit_test(broken_tool_calls_are_repaired),
        cmocka_unit_test(done_and_non_json_pass_through),
        cmocka_unit_test(plain_chunks_keep_their_bytes),
        cmocka_unit_test(whole_answer_as_text),
        cmocka_unit_test(impossible_token_counts_read_as_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
