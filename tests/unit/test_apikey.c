/*
 * test_apikey.c — API key generation, parsing and verification (policy/apikey.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "apikey.h"

/* This definition interposes libcrypto's, so the test sees every constant-time comparison that
 * apikey.c makes. It is itself constant-time, so nothing it stands in for gets weaker. */
static unsigned crypto_memcmp_calls;

int
CRYPTO_memcmp(const void *in_a, const void *in_b, size_t len)
{
    const volatile unsigned char *a = in_a, *b = in_b;
    unsigned char x = 0;
    crypto_memcmp_calls++;
    for (size_t i = 0; i < len; i++)
        x |= a[i] ^ b[i];
    return x;
}

static const char *
secret_of(const pol_apikey_t *k)
{
    return k->key + POL_APIKEY_PREFIX_LEN + POL_APIKEY_ID_LEN + 1;
}

static void
test_generate_format(void **state)
{
    pol_apikey_t k;
    assert_int_equal(pol_apikey_generate(&k), 0);

    assert_int_equal(strlen(k.key), POL_APIKEY_KEY_LEN);
    assert_int_equal(POL_APIKEY_KEY_LEN, 59);
    assert_memory_equal(k.key, "tp_", 3);
    assert_int_equal(strlen(k.id), POL_APIKEY_ID_LEN);
    assert_memory_equal(k.key + 3, k.id, POL_APIKEY_ID_LEN);
    for (size_t i = 0; i < POL_APIKEY_ID_LEN; i++)
        assert_non_null(strchr("abcdefghijklmnopqrstuvwxyz0123456789", k.id[i]));
    assert_int_equal(k.key[3 + POL_APIKEY_ID_LEN], '_');
    const char *secret = secret_of(&k);
    assert_int_equal(strlen(secret), POL_APIKEY_SECRET_LEN);
    for (size_t i = 0; i < POL_APIKEY_SECRET_LEN; i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", secret[i]));

    /* The stored hash is SHA-256 of the secret alone. */
    uint8_t expect[32];
    SHA256((const unsigned char *)secret, strlen(secret), expect);
    assert_memory_equal(k.hash, expect, 32);

    /* A generated key parses back to its parts. */
    char id[POL_APIKEY_ID_LEN + 1];
    const char *s;
    size_t slen;
    assert_int_equal(pol_apikey_parse(k.key, strlen(k.key), id, &s, &slen), 0);
    assert_string_equal(id, k.id);
    assert_ptr_equal(s, secret);
    assert_int_equal(slen, POL_APIKEY_SECRET_LEN);
    assert_true(pol_apikey_verify(k.hash, s, slen));
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* 20000 keys: no id or secret repeats, and every character of each alphabet shows up (a
 * generator stuck on part of its alphabet, or reusing its randomness, fails here). */
static void
test_generate_unique(void **state)
{
    enum { N = 20000 };
    char(*ids)[POL_APIKEY_ID_LEN + 1] = calloc(N, sizeof(*ids));
    char(*secrets)[POL_APIKEY_SECRET_LEN + 1] = calloc(N, sizeof(*secrets));
    unsigned seen_id[256] = { 0 }, seen_secret[256] = { 0 };
    assert_non_null(ids);
    assert_non_null(secrets);

    for (size_t i = 0; i < N; i++) {
        pol_apikey_t k;
        assert_int_equal(pol_apikey_generate(&k), 0);
        memcpy(ids[i], k.id, sizeof(ids[i]));
        memcpy(secrets[i], secret_of(&k), sizeof(secrets[i]));
        for (const char *c = k.id; *c; c++)
            seen_id[(unsigned char)*c]++;
        for (const char *c = secrets[i]; *c; c++)
            seen_secret[(unsigned char)*c]++;
    }
    qsort(ids, N, sizeof(*ids), cmp_str);
    qsort(secrets, N, sizeof(*secrets), cmp_str);
    for (size_t i = 1; i < N; i++) {
        assert_string_not_equal(ids[i - 1], ids[i]);
        assert_string_not_equal(secrets[i - 1], secrets[i]);
    }
    for (const char *c = "abcdefghijklmnopqrstuvwxyz0123456789"; *c; c++)
        assert_true(seen_id[(unsigned char)*c] > 0);
    for (const char *c = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"; *c; c++)
        assert_true(seen_secret[(unsigned char)*c] > 0);

    /* Roughly uniform: each id character is expected N*12/36 times; a biased `% 36` without
     * rejection would still pass this, but a broken mapping (e.g. half the alphabet) would not. */
    double expect = (double)N * POL_APIKEY_ID_LEN / 36;
    for (const char *c = "abcdefghijklmnopqrstuvwxyz0123456789"; *c; c++) {
        double got = seen_id[(unsigned char)*c];
        assert_true(got > expect * 0.9 && got < expect * 1.1);
    }
    free(ids);
    free(secrets);
}

static void
test_parse_accepts(void **state)
{
    char id[POL_APIKEY_ID_LEN + 1];
    const char *s;
    size_t slen;

    /* 43 base62 characters: the shortest accepted. */
    const char *k1 = "tp_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
    assert_int_equal(pol_apikey_parse(k1, strlen(k1), id, &s, &slen), 0);
    assert_string_equal(id, "abc123def456");
    assert_int_equal(slen, 43);
    assert_memory_equal(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq", 43);

    /* 64 hex characters. */
    char k2[3 + 12 + 1 + 64 + 1];
    snprintf(k2, sizeof(k2), "tp_000000000000_%s", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    assert_int_equal(pol_apikey_parse(k2, strlen(k2), id, &s, &slen), 0);
    assert_string_equal(id, "000000000000");
    assert_int_equal(slen, 64);

    /* The longest accepted secret. */
    char k3[POL_APIKEY_MAX_LEN + 1];
    memcpy(k3, "tp_zzzzzzzzzzzz_", 16);
    memset(k3 + 16, 'Q', POL_APIKEY_SECRET_MAX_LEN);
    k3[POL_APIKEY_MAX_LEN] = '\0';
    assert_int_equal(pol_apikey_parse(k3, strlen(k3), id, &s, &slen), 0);
    assert_int_equal(slen, POL_APIKEY_SECRET_MAX_LEN);

    /* The token need not be NUL-terminated: only len bytes are read. */
    char k4[128];
    snprintf(k4, sizeof(k4), "%s trailing junk", k1);
    assert_int_equal(pol_apikey_parse(k4, strlen(k1), id, &s, &slen), 0);
    assert_int_equal(slen, 43);
}

static void
test_parse_rejects(void **state)
{
    static const char secret43[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
    char long_secret[POL_APIKEY_MAX_LEN + 2];
    memcpy(long_secret, "tp_zzzzzzzzzzzz_", 16);
    memset(long_secret + 16, 'Q', POL_APIKEY_SECRET_MAX_LEN + 1);
    long_secret[POL_APIKEY_MAX_LEN + 1] = '\0';

    const char *bad[] = {
        "",
        "tp_",
        "tp",
        "eyJhbGciOiJIUzI1NiJ9.e30.sig",
        "TP_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq",  /* prefix case */
        "sk_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq",  /* other prefix */
        "tp_abc123def45_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqr",  /* 11-char id */
        "tp_abc123def4567_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop",  /* 13-char id */
        "tp_abc123Def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq",  /* upper case in id */
        "tp_abc12_def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq",  /* '_' in id */
        "tp_abc123def456-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq",  /* wrong separator */
        "tp_abc123def456_",                                             /* empty secret */
        "tp_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop",   /* 42-char secret */
        "tp_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop_",  /* '_' in secret */
        "tp_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop-",  /* '-' in secret */
        "tp_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmno+/",  /* base64 characters */
        "tp_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq ", /* trailing space */
        " tp_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq", /* leading space */
        "tp_abc123def456_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop\xc3\xa9",
        long_secret, /* 129-char secret */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char id[POL_APIKEY_ID_LEN + 1];
        const char *s = (const char *)1;
        size_t slen = 99;
        memset(id, 'x', sizeof(id));
        if (pol_apikey_parse(bad[i], strlen(bad[i]), id, &s, &slen) != -EINVAL)
            fail_msg("accepted malformed key #%zu: \"%s\"", i, bad[i]);
        assert_string_equal(id, "");
        assert_null(s);
        assert_int_equal(slen, 0);
    }

    /* An embedded NUL is a bad character, not the end of the key. */
    char nul[3 + 12 + 1 + 43];
    memcpy(nul, "tp_abc123def456_", 16);
    memcpy(nul + 16, secret43, 43);
    nul[30] = '\0';
    char id[POL_APIKEY_ID_LEN + 1];
    const char *s;
    size_t slen;
    assert_int_equal(pol_apikey_parse(nul, sizeof(nul), id, &s, &slen), -EINVAL);
}

static void
test_looks_like(void **state)
{
    assert_true(pol_apikey_looks_like("tp_", 3));
    assert_true(pol_apikey_looks_like("tp_anything", 11));
    assert_false(pol_apikey_looks_like("tp_", 2)); /* only len bytes count */
    assert_false(pol_apikey_looks_like("", 0));
    assert_false(pol_apikey_looks_like("eyJhbGciOiJSUzI1NiJ9.e30.x", 26));
    assert_false(pol_apikey_looks_like("TP_abc", 6));
}

static void
test_hash_verify(void **state)
{
    pol_apikey_t k;
    assert_int_equal(pol_apikey_generate(&k), 0);
    const char *secret = secret_of(&k);
    size_t len = strlen(secret);

    uint8_t h[32];
    pol_apikey_hash(secret, len, h);
    assert_memory_equal(h, k.hash, 32);
    /* A known vector: SHA-256("abc"). */
    static const uint8_t abc[32] = { 0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                     0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                     0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad };
    pol_apikey_hash("abc", 3, h);
    assert_memory_equal(h, abc, 32);

    assert_true(pol_apikey_verify(k.hash, secret, len));

    char wrong[POL_APIKEY_SECRET_LEN + 1];
    memcpy(wrong, secret, len + 1);
    wrong[len - 1] = wrong[len - 1] == 'A' ? 'B' : 'A';
    assert_false(pol_apikey_verify(k.hash, wrong, len));
    wrong[len - 1] = secret[len - 1];
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    assert_false(pol_apikey_verify(k.hash, wrong, len));
    assert_false(pol_apikey_verify(k.hash, secret, len - 1));
    assert_false(pol_apikey_verify(k.hash, "", 0));

    /* Another key's secret does not verify against this key's hash. */
    pol_apikey_t other;
    assert_int_equal(pol_apikey_generate(&other), 0);
    assert_false(pol_apikey_verify(k.hash, secret_of(&other), strlen(secret_of(&other))));
}

/* verify compares through CRYPTO_memcmp (interposed above), on the whole 32-byte hash, for a
 * match and for a mismatch alike. */
static void
test_verify_constant_time(void **state)
{
    pol_apikey_t k;
    assert_int_equal(pol_apikey_generate(&k), 0);
    const char *secret = secret_of(&k);

    unsigned before = crypto_memcmp_calls;
    assert_true(pol_apikey_verify(k.hash, secret, strlen(secret)));
    assert_int_equal(crypto_memcmp_calls, before + 1);
    assert_false(pol_apikey_verify(k.hash, "nope", 4));
    assert_int_equal(crypto_memcmp_calls, before + 2);
}

static void
test_verify_cost(void **state)
{
    enum { N = 200000 };
    pol_apikey_t k;
    struct timespec t0, t1;
    assert_int_equal(pol_apikey_generate(&k), 0);
    const char *secret = secret_of(&k);
    size_t len = strlen(secret);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        assert_true(pol_apikey_verify(k.hash, secret, len));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / N;
    printf("# pol_apikey_verify: %.0f ns/op\n", ns);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N / 100; i++)
        assert_int_equal(pol_apikey_generate(&k), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / (N / 100);
    printf("# pol_apikey_generate: %.0f ns/op\n", ns);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_format),      cmocka_unit_test(test_generate_unique),
        cmocka_unit_test(test_parse_accepts),        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_looks_like),           cmocka_unit_test(test_hash_verify),
        cmocka_unit_test(test_verify_constant_time), cmocka_unit_test(test_verify_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
