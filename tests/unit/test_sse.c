/*
 * test_sse.c — model-gw/sse.c: events split at every possible byte, line endings, comments,
 * multi-line data, the size limit, and a stream cut mid-event.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "sse.h"

typedef struct collected {
    char events[16][128];
    size_t count;
} collected_t;

static int
collect(void *data, const char *event, size_t len)
{
    collected_t *c = data;
    assert_true(c->count < 16 && len < 128);
    memcpy(c->events[c->count], event, len);
    c->events[c->count][len] = '\0';
    c->count++;
    return 0;
}

static const char STREAM[] = ": keep-alive\n\n"
                             "data: {\"a\":1}\n\n"
                             "event: message\r\ndata: {\"b\":2}\r\n\r\n"
                             "data: line one\ndata: line two\n\n"
                             "id: 7\nretry: 10\n\n"
                             "data:{\"c\":3}\r\r"
                             "data: [DONE]\n\n";

static void
check(const collected_t *c)
{
    assert_int_equal(c->count, 5);
    assert_string_equal(c->events[0], "{\"a\":1}");
    assert_string_equal(c->events[1], "{\"b\":2}");
    assert_string_equal(c->events[2], "line one\nline two");
    assert_string_equal(c->events[3], "{\"c\":3}");
    assert_string_equal(c->events[4], "[DONE]");
}

static void
whole_stream_at_once(void **state)
{
    (void)state;
    tp_sse_t s;
    tp_sse_init(&s, 1024);
    collected_t c = { .count = 0 };
    assert_int_equal(tp_sse_feed(&s, STREAM, sizeof(STREAM) - 1, collect, &c), 0);
    check(&c);
    assert_false(tp_sse_pending(&s));
    tp_sse_dispose(&s);
}

static void
split_at_every_byte(void **state)
{
    (void)state;
    size_t n = sizeof(STREAM) - 1;
    for (size_t cut = 1; cut < n; cut++) {
        tp_sse_t s;
        tp_sse_init(&s, 1024);
        collected_t c = { .count = 0 };
        assert_int_equal(tp_sse_feed(&s, STREAM, cut, collect, &c), 0);
        assert_int_equal(tp_sse_feed(&s, STREAM + cut, n - cut, collect, &c), 0);
        check(&c);
        tp_sse_dispose(&s);
    }
    /* And one byte at a time. */
    tp_sse_t s;
    tp_sse_init(&s, 1024);
    collected_t c = { .count = 0 };
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tp_sse_feed(&s, STREAM + i, 1, collect, &c), 0);
    check(&c);
    tp_sse_dispose(&s);
}

static void
oversized_event_is_an_error(void **state)
{
    (void)state;
    tp_sse_t s;
    tp_sse_init(&s, 16);
    collected_t c = { .count = 0 };
    const char big[] = "data: 0123456789abcdefghij\n\n";
    assert_int_equal(tp_sse_feed(&s, big, sizeof(big) - 1, collect, &c), -1);
    assert_int_equal(c.count, 0);
    tp_sse_dispose(&s);
}

static void
cut_mid_event_is_pending(void **state)
{
    (void)state;
    tp_sse_t s;
    tp_sse_init(&s, 1024);
    collected_t c = { .count = 0 };
    const char part[] = "data: {\"a\":1}\n\ndata: {\"b\"";
    assert_int_equal(tp_sse_feed(&s, part, sizeof(part) - 1, collect, &c), 0);
    assert_int_equal(c.count, 1);
    assert_true(tp_sse_pending(&s));
    tp_sse_dispose(&s);
}

static int
stop_after_first(void *data, const char *event, size_t len)
{
    (void)event;
    (void)len;
    (*(int *)data)++;
    return 42;
}

static void
callback_can_stop(void **state)
{
    (void)state;
    tp_sse_t s;
    tp_sse_init(&s, 1024);
    int calls = 0;
    assert_int_equal(tp_sse_feed(&s, STREAM, sizeof(STREAM) - 1, stop_after_first, &calls), 42);
    assert_int_equal(calls, 1);
    tp_sse_dispose(&s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(whole_stream_at_once),        cmocka_unit_test(split_at_every_byte),
        cmocka_unit_test(oversized_event_is_an_error), cmocka_unit_test(cut_mid_event_is_pending),
        cmocka_unit_test(callback_can_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
