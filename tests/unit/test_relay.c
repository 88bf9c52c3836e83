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

static json_t *
relay_one(mg_relay_t *relay, const char *event)
{
    size_t len = 0;
    char *out = mg_relay_chunk(relay, event, strlen(event), &len);
    if (out == NULL)
        return NULL;
    assert_int_equal(strlen(out), len);
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
    size_t len;
    char *done = mg_relay_chunk(&r, "[DONE]", 6, &len);
    assert_string_equal(done, "data: [DONE]\n\n");
    free(done);
    char *odd = mg_relay_chunk(&r, "not json", 8, &len);
    assert_string_equal(odd, "data: not json\n\n");
    free(odd);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
