/*
 * test_buffer.c — model-gw/buffer.c: appends keep every byte across growth, and a released
 * chunk is handed out again on the same thread.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "buffer.h"

static void
grows_and_keeps_bytes(void **state)
{
    (void)state;
    mg_buffer_t b = { 0 };
    for (int i = 0; i < 3000; i++) {
        char piece[16];
        int n = snprintf(piece, sizeof(piece), "%d,", i);
        mg_buffer_add(&b, piece, (size_t)n);
    }
    assert_true(b.len > MG_BUFFER_CHUNK);
    assert_true(b.cap >= b.len);
    size_t at = 0;
    for (int i = 0; i < 3000; i++) {
        char piece[16];
        int n = snprintf(piece, sizeof(piece), "%d,", i);
        assert_memory_equal(b.data + at, piece, (size_t)n);
        at += (size_t)n;
    }
    assert_int_equal(at, b.len);
    mg_buffer_release(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

static void
chunks_are_recycled(void **state)
{
    (void)state;
    mg_buffer_t a = { 0 };
    char *w = mg_buffer_reserve(&a, 100);
    memcpy(w, "x", 1);
    a.len = 1;
    char *storage = a.data;
    assert_int_equal(a.cap, MG_BUFFER_CHUNK);
    mg_buffer_release(&a);
    mg_buffer_t b = { 0 };
    mg_buffer_add(&b, "y", 1);
    assert_ptr_equal(b.data, storage); /* the same chunk, from this thread's cache */
    mg_buffer_release(&b);
    mg_buffer_add(&b, "", 0);
    assert_null(b.data); /* nothing added: nothing allocated */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grows_and_keeps_bytes),
        cmocka_unit_test(chunks_are_recycled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
