/*
 * test_chain.c — signed delegation chains (agent-gw/chain.c).
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

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "chain.h"

/* This definition interposes libcrypto's, so the test sees every constant-time comparison that
 * chain.c makes. It is itself constant-time, so nothing it stands in for gets weaker. */
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

static const uint8_t key[32] = "0123456789abcdef0123456789abcdef";
static const int64_t T0 = 1718000000000; /* a fixed "now" */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* A three-hop chain: alice -> planner -> coder -> reviewer. */
static void
sample_chain(ag_chain_t *c)
{
    memset(c, 0, sizeof(*c));
    assert_int_equal(ag_chain_append(c, "alice", "planner", "task-1", T0 - 3000), 0);
    assert_int_equal(ag_chain_append(c, "planner", "coder", "ctx \"2\" \xc3\xa9", T0 - 2000), 0);
    assert_int_equal(ag_chain_append(c, "coder", "reviewer", NULL, T0 - 1000), 0);
}

static int
verify_str(const char *token, int64_t now, int64_t max_age, ag_chain_t *out, const char **why)
{
    return ag_chain_verify(key, sizeof(key), token, strlen(token), now, max_age, out, why);
}

/* Standard base64 from OpenSSL turned into unpadded base64url: an encoder independent of
 * chain.c's, so hand-made tokens check the documented format rather than the code. */
static char *
b64url(const uint8_t *in, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    assert_non_null(out);
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return out;
}

/* "c1." base64url(json) "." base64url(HMAC-SHA256(k, "c1." base64url(json))). */
static char *
hand_token(const uint8_t *k, size_t k_len, const char *json)
{
    char *payload = b64url((const uint8_t *)json, strlen(json));
    size_t signed_len = 3 + strlen(payload);
    char *signed_part = malloc(signed_len + 1);
    assert_non_null(signed_part);
    snprintf(signed_part, signed_len + 1, "c1.%s", payload);
    uint8_t mac[32];
    unsigned mac_len = 0;
    assert_non_null(HMAC(EVP_sha256(), k, (int)k_len, (const unsigned char *)signed_part, signed_len, mac, &mac_len));
    assert_int_equal(mac_len, 32);
    char *mac64 = b64url(mac, 32);
    size_t total = signed_len + 1 + strlen(mac64) + 1;
    char *token = malloc(total);
    assert_non_null(token);
    snprintf(token, total, "%s.%s", signed_part, mac64);
    free(payload);
    free(signed_part);
    free(mac64);
    return token;
}

static void
test_round_trip(void **state)
{
    ag_chain_t c, got;
    const char *why = NULL;
    sample_chain(&c);

    char *token = ag_chain_sign(key, sizeof(key), &c);
    assert_non_null(token);
    printf("# 3-hop token: %zu bytes\n", strlen(token));

    /* Header-safe: "c1.", base64url, ".", 43 characters of MAC. */
    assert_memory_equal(token, "c1.", 3);
    size_t len = strlen(token), dots = 0;
    for (size_t i = 0; i < len; i++) {
        if (token[i] == '.')
            dots++;
        else
            assert_non_null(strchr(b64chars, token[i]));
    }
    assert_int_equal(dots, 2);
    assert_int_equal(strrchr(token, '.') - token, (long)(len - 44));

    assert_int_equal(verify_str(token, T0, 60000, &got, &why), 0);
    assert_int_equal(got.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(got.hops[i].caller, c.hops[i].caller);
        assert_string_equal(got.hops[i].target, c.hops[i].target);
        assert_string_equal(got.hops[i].task, c.hops[i].task);
        assert_int_equal(got.hops[i].at_ms, c.hops[i].at_ms);
    }
    assert_string_equal(got.hops[1].task, "ctx \"2\" \xc3\xa9");
    assert_string_equal(got.hops[2].task, "");

    /* Signing is deterministic, and the verified chain signs to the same token. */
    char *again = ag_chain_sign(key, sizeof(key), &got);
    assert_string_equal(again, token);

    /* Only len bytes are read: the header value need not be NUL-terminated. */
    char *padded = malloc(len + 16);
    assert_non_null(padded);
    memcpy(padded, token, len);
    memcpy(padded + len, "xxxxxxxxxxxxxxx", 16);
    assert_int_equal(ag_chain_verify(key, sizeof(key), padded, len, T0, 0, &got, &why), 0);
    assert_int_equal(got.n, 3);
    /* ... and the trailing bytes do count when len includes them. */
    assert_int_equal(ag_chain_verify(key, sizeof(key), padded, len + 1, T0, 0, &got, &why), -1);
    assert_int_equal(got.n, 0);

    /* Appending a hop and signing again gives a token that still verifies, with four hops. */
    assert_int_equal(ag_chain_append(&c, "reviewer", "tester", "t-9", T0), 0);
    char *longer = ag_chain_sign(key, sizeof(key), &c);
    assert_int_equal(verify_str(longer, T0, 60000, &got, &why), 0);
    assert_int_equal(got.n, 4);
    assert_string_equal(got.hops[3].target, "tester");

    free(padded);
    free(again);
    free(longer);
    free(token);
}

/* The documented format, built here with OpenSSL alone, is what the gateway reads. */
static void
test_documented_format(void **state)
{
    ag_chain_t got;
    const char *why;
    char *t = hand_token(key, sizeof(key), "[[\"alice\",\"planner\",\"t-1\",1718000000000]]");
    assert_int_equal(verify_str(t, T0, 0, &got, &why), 0);
    assert_int_equal(got.n, 1);
    assert_string_equal(got.hops[0].caller, "alice");
    assert_string_equal(got.hops[0].target, "planner");
    assert_string_equal(got.hops[0].task, "t-1");
    assert_int_equal(got.hops[0].at_ms, 1718000000000);

    /* And what ag_chain_sign makes is exactly that. */
    ag_chain_t c = { .n = 0 };
    assert_int_equal(ag_chain_append(&c, "alice", "planner", "t-1", 1718000000000), 0);
    char *signed_token = ag_chain_sign(key, sizeof(key), &c);
    assert_string_equal(signed_token, t);
    free(signed_token);
    free(t);
}

/* Every single-character change anywhere in a token is refused: in the payload as a bad
 * signature, in the MAC as a bad signature (or malformed, for a non-canonical last character),
 * in the version or a separator as malformed. */
static void
test_any_modified_byte_refused(void **state)
{
    ag_chain_t c, got;
    sample_chain(&c);
    char *token = ag_chain_sign(key, sizeof(key), &c);
    size_t len = strlen(token), mac_at = len - 43;
    static const char others[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x80\xff";
    unsigned tried = 0;

    for (size_t i = 0; i < len; i++) {
        for (const char *o = others; *o; o++) {
            if (*o == token[i])
                continue;
            char saved = token[i];
            token[i] = *o;
            const char *why = NULL;
            int rv = ag_chain_verify(key, sizeof(key), token, len, T0, 0, &got, &why);
            token[i] = saved;
            tried++;
            if (rv != -1)
                fail_msg("accepted a token with byte %zu changed to 0x%02x", i, (unsigned char)*o);
            assert_int_equal(got.n, 0);
            bool b64 = strchr(b64chars, *o) != NULL;
            if (i < 3 || i == mac_at - 1 || !b64)
                assert_string_equal(why, "malformed");
            else if (i < mac_at - 1 || i < len - 1)
                assert_string_equal(why, "bad signature");
            else if (strcmp(why, "bad signature") != 0)
                assert_string_equal(why, "malformed");
        }
    }
    printf("# %u modified tokens refused\n", tried);

    /* A payload from one token with the MAC of another: both authentic, spliced: refused. */
    ag_chain_t c2 = c;
    c2.hops[0].at_ms++;
    char *other = ag_chain_sign(key, sizeof(key), &c2);
    assert_int_equal(strlen(other), len);
    memcpy(other + mac_at, token + mac_at, 43);
    const char *why;
    assert_int_equal(verify_str(other, T0, 0, &got, &why), -1);
    assert_string_equal(why, "bad signature");
    free(other);
    free(token);
}

static void
test_wrong_key(void **state)
{
    ag_chain_t c, got;
    const char *why;
    sample_chain(&c);
    char *token = ag_chain_sign(key, sizeof(key), &c);
    size_t len = strlen(token);

    uint8_t k2[32];
    memcpy(k2, key, 32);
    k2[31] ^= 1; /* one bit off */
    assert_int_equal(ag_chain_verify(k2, sizeof(k2), token, len, T0, 0, &got, &why), -1);
    assert_string_equal(why, "bad signature");

    uint8_t k3[40];
    memcpy(k3, key, 32);
    memset(k3 + 32, 'x', 8); /* the right key plus more bytes */
    assert_int_equal(ag_chain_verify(k3, sizeof(k3), token, len, T0, 0, &got, &why), -1);
    assert_string_equal(why, "bad signature");

    /* A token signed under the longer key does not verify under its 32-byte prefix. */
    char *t3 = ag_chain_sign(k3, sizeof(k3), &c);
    assert_non_null(t3);
    assert_int_equal(verify_str(t3, T0, 0, &got, &why), -1);
    assert_string_equal(why, "bad signature");
    assert_int_equal(ag_chain_verify(k3, sizeof(k3), t3, strlen(t3), T0, 0, &got, &why), 0);

    /* Keys shorter than AG_CHAIN_KEY_MIN are refused by both sides. */
    assert_null(ag_chain_sign(key, 31, &c));
    assert_null(ag_chain_sign(key, 0, &c));
    assert_int_equal(ag_chain_verify(key, 31, token, len, T0, 0, &got, &why), -1);
    assert_string_equal(why, "bad key");

    free(t3);
    free(token);
}

static void
test_refuse_reasons(void **state)
{
    ag_chain_t c, got;
    const char *why;
    sample_chain(&c);
    char *token = ag_chain_sign(key, sizeof(key), &c);
    size_t len = strlen(token);

    static const struct {
        const char *token;
        const char *why;
    } cases[] = {
        { "", "malformed" },
        { "c1.", "malformed" },
        { "c1..", "malformed" },
        { "hello", "malformed" },
        { "Bearer abc.def.ghi", "malformed" },
        { "eyJhbGciOiJIUzI1NiJ9.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed" },
        { "c2.W10.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed" },
        { "c1..AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed" },        /* empty payload */
        { "c1.W10.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "bad signature" }, /* "[]", forged */
        { "c1.W10.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed" },      /* 42-char MAC */
        { "c1.W10=.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed" },    /* padding */
        { "c1.W1.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed" },    /* three dots */
        { "c1.W10.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", "malformed" },     /* non-canonical */
        { "c1.W10 .AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        why = NULL;
        if (verify_str(cases[i].token, T0, 0, &got, &why) != -1)
            fail_msg("accepted \"%s\"", cases[i].token);
        if (strcmp(why, cases[i].why) != 0)
            fail_msg("\"%s\": expected %s, got %s", cases[i].token, cases[i].why, why);
    }
    assert_int_equal(ag_chain_verify(key, sizeof(key), NULL, 0, T0, 0, &got, &why), -1);
    assert_string_equal(why, "malformed");
    /* why may be NULL. */
    assert_int_equal(ag_chain_verify(key, sizeof(key), "x", 1, T0, 0, &got, NULL), -1);

    /* Every truncation is refused as malformed: cutting the end cuts the MAC short. */
    for (size_t k = 0; k < len; k++) {
        assert_int_equal(ag_chain_verify(key, sizeof(key), token, k, T0, 0, &got, &why), -1);
        assert_string_equal(why, "malformed");
    }
    /* Payload cut short with the MAC kept: a well-formed token whose MAC no longer matches. */
    size_t mac_at = len - 43;
    for (size_t cut = 1; cut < mac_at - 4; cut++) {
        char buf[512];
        size_t plen = mac_at - 1 - 3 - cut;
        memcpy(buf, token, 3 + plen);
        memcpy(buf + 3 + plen, token + mac_at - 1, 44);
        assert_int_equal(ag_chain_verify(key, sizeof(key), buf, 3 + plen + 44, T0, 0, &got, &why), -1);
        assert_string_equal(why, plen % 4 == 1 ? "malformed" : "bad signature");
    }

    /* Over AG_CHAIN_TOKEN_MAX bytes: refused before anything else is looked at. */
    char *big = malloc(AG_CHAIN_TOKEN_MAX + 2);
    assert_non_null(big);
    memset(big, 'A', AG_CHAIN_TOKEN_MAX + 1);
    memcpy(big, token, len);
    big[AG_CHAIN_TOKEN_MAX + 1] = '\0';
    assert_int_equal(ag_chain_verify(key, sizeof(key), big, AG_CHAIN_TOKEN_MAX + 1, T0, 0, &got, &why), -1);
    assert_string_equal(why, "too long");
    free(big);
    free(token);
}

/* Authentic tokens (MAC right) whose payload is not a chain are still refused: the parser does
 * not trust the key to stand in for the format. */
static void
test_authentic_but_malformed(void **state)
{
    static const struct {
        const char *json;
        const char *why;
    } cases[] = {
        { "[]", "malformed" },
        { "{}", "malformed" },
        { "[[\"a\",\"b\",\"\",1]] x", "malformed" },
        { "[[\"a\",\"b\",\"\"]]", "malformed" },
        { "[[\"a\",\"b\",\"\",1,2]]", "malformed" },
        { "[[\"\",\"b\",\"\",1]]", "malformed" },
        { "[[\"a\",\"\",\"\",1]]", "malformed" },
        { "[[\"a\",\"b\",null,1]]", "malformed" },
        { "[[\"a\",\"b\",\"\",-1]]", "malformed" },
        { "[[\"a\",\"b\",\"\",1.5]]", "malformed" },
        { "[[\"a\",\"b\",\"\",\"1\"]]", "malformed" },
        { "[[\"a\\u0000x\",\"b\",\"\",1]]", "malformed" },
        { "[{\"caller\":\"a\"}]", "malformed" },
        { "[[\"a\",\"b\",\"\",1]]", NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ag_chain_t got;
        const char *why = NULL;
        char *t = hand_token(key, sizeof(key), cases[i].json);
        int rv = verify_str(t, T0, 0, &got, &why);
        if (cases[i].why == NULL) {
            if (rv != 0)
                fail_msg("%s: refused (%s)", cases[i].json, why);
        } else if (rv != -1 || strcmp(why, cases[i].why) != 0) {
            fail_msg("%s: expected %s, got %d %s", cases[i].json, cases[i].why, rv, why ? why : "");
        }
        free(t);
    }

    /* An id of 128 bytes (AG_CHAIN_ID_MAX) is read back; 129 is malformed. */
    char json[512];
    char id[130];
    memset(id, 'i', 129);
    id[128] = '\0';
    snprintf(json, sizeof(json), "[[\"%s\",\"b\",\"\",1]]", id);
    char *t = hand_token(key, sizeof(key), json);
    ag_chain_t got;
    const char *why;
    assert_int_equal(verify_str(t, T0, 0, &got, &why), 0);
    assert_string_equal(got.hops[0].caller, id);
    free(t);
    id[128] = 'i';
    id[129] = '\0';
    snprintf(json, sizeof(json), "[[\"a\",\"b\",\"%s\",1]]", id);
    t = hand_token(key, sizeof(key), json);
    assert_int_equal(verify_str(t, T0, 0, &got, &why), -1);
    assert_string_equal(why, "malformed");
    free(t);

    /* 65 hops, authentic: too long. */
    char *many = malloc(65 * 24 + 8);
    assert_non_null(many);
    size_t o = 0;
    many[o++] = '[';
    for (int i = 0; i < 65; i++)
        o += (size_t)sprintf(many + o, "%s[\"a\",\"b\",\"\",%d]", i ? "," : "", i);
    many[o++] = ']';
    many[o] = '\0';
    t = hand_token(key, sizeof(key), many);
    assert_int_equal(verify_str(t, T0, 0, &got, &why), -1);
    assert_string_equal(why, "too long");
    free(t);
    free(many);
}

static void
test_expiry(void **state)
{
    ag_chain_t c, got;
    const char *why;
    memset(&c, 0, sizeof(c));
    /* The chain started long ago; its newest hop is what dates it. */
    assert_int_equal(ag_chain_append(&c, "alice", "planner", "t", T0 - 3600000), 0);
    assert_int_equal(ag_chain_append(&c, "planner", "coder", "t", T0), 0);
    char *token = ag_chain_sign(key, sizeof(key), &c);

    assert_int_equal(verify_str(token, T0, 1000, &got, &why), 0);
    assert_int_equal(verify_str(token, T0 + 1000, 1000, &got, &why), 0);
    assert_int_equal(verify_str(token, T0 + 1001, 1000, &got, &why), -1);
    assert_string_equal(why, "expired");
    assert_int_equal(got.n, 0);
    /* max_age 0: no limit. */
    assert_int_equal(verify_str(token, T0 + 10LL * 365 * 86400000, 0, &got, &why), 0);
    /* A token from a gateway whose clock runs ahead: a little is fine, a lot is not. */
    assert_int_equal(verify_str(token, T0 - AG_CHAIN_CLOCK_SKEW_MS, 1000, &got, &why), 0);
    assert_int_equal(verify_str(token, T0 - AG_CHAIN_CLOCK_SKEW_MS - 1, 1000, &got, &why), -1);
    assert_string_equal(why, "not yet valid");
    assert_int_equal(verify_str(token, 0, 0, &got, &why), 0);
    free(token);
}

static void
test_questions(void **state)
{
    ag_chain_t c;
    memset(&c, 0, sizeof(c));
    assert_null(ag_chain_origin(&c));
    assert_null(ag_chain_last_target(&c));
    assert_false(ag_chain_contains_agent(&c, "alice"));

    sample_chain(&c);
    assert_string_equal(ag_chain_origin(&c), "alice");
    assert_string_equal(ag_chain_last_target(&c), "reviewer");
    /* Callers and targets alike: A -> B -> A is a loop whichever side A was on. */
    assert_true(ag_chain_contains_agent(&c, "alice"));
    assert_true(ag_chain_contains_agent(&c, "planner"));
    assert_true(ag_chain_contains_agent(&c, "coder"));
    assert_true(ag_chain_contains_agent(&c, "reviewer"));
    assert_false(ag_chain_contains_agent(&c, "tester"));
    assert_false(ag_chain_contains_agent(&c, "plan"));     /* whole ids only */
    assert_false(ag_chain_contains_agent(&c, "planners")); /* whole ids only */
    assert_false(ag_chain_contains_agent(&c, "task-1"));   /* tasks are not agents */
    assert_false(ag_chain_contains_agent(&c, ""));
    assert_false(ag_chain_contains_agent(&c, NULL));
}

static void
test_to_json(void **state)
{
    ag_chain_t c;
    sample_chain(&c);
    json_t *j = ag_chain_to_json(&c);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s, "[{\"caller\":\"alice\",\"target\":\"planner\",\"task\":\"task-1\",\"at_ms\":1717999997000},"
                           "{\"caller\":\"planner\",\"target\":\"coder\",\"task\":\"ctx \\\"2\\\" \xc3\xa9\","
                           "\"at_ms\":1717999998000},"
                           "{\"caller\":\"coder\",\"target\":\"reviewer\",\"at_ms\":1717999999000}]");
    free(s);
    json_decref(j);

    memset(&c, 0, sizeof(c));
    j = ag_chain_to_json(&c);
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 0);
    json_decref(j);
}

static void
test_append_and_bounds(void **state)
{
    ag_chain_t c, got;
    const char *why;
    /* ids of AG_CHAIN_ID_MAX (128) bytes fit, as principal ids and agent names do; 129 do not */
    char id128[129], id129[130];
    memset(id128, 'x', 128);
    id128[128] = '\0';
    memset(id129, 'y', 129);
    id129[129] = '\0';

    memset(&c, 0, sizeof(c));
    assert_int_equal(ag_chain_append(&c, NULL, "b", NULL, 1), -EINVAL);
    assert_int_equal(ag_chain_append(&c, "a", NULL, NULL, 1), -EINVAL);
    assert_int_equal(ag_chain_append(&c, "", "b", NULL, 1), -EINVAL);
    assert_int_equal(ag_chain_append(&c, "a", "", NULL, 1), -EINVAL);
    assert_int_equal(ag_chain_append(&c, "a", "b", NULL, -1), -EINVAL);
    assert_int_equal(ag_chain_append(&c, id129, "b", NULL, 1), -EINVAL);
    assert_int_equal(ag_chain_append(&c, "a", id129, NULL, 1), -EINVAL);
    assert_int_equal(ag_chain_append(&c, "a", "b", id129, 1), -EINVAL);
    assert_int_equal(c.n, 0);
    assert_int_equal(ag_chain_append(&c, id128, id128, id128, 0), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.hops[0].task, id128);

    /* 64 short hops fit in a token and come back; a 65th hop does not fit in the chain. */
    memset(&c, 0, sizeof(c));
    for (int i = 0; i < AG_CHAIN_MAX; i++) {
        char caller[16], target[16];
        snprintf(caller, sizeof(caller), "agent-%d", i);
        snprintf(target, sizeof(target), "agent-%d", i + 1);
        assert_int_equal(ag_chain_append(&c, caller, target, "t", T0 + i), 0);
    }
    ag_chain_t before = c;
    assert_int_equal(ag_chain_append(&c, "agent-64", "agent-65", "t", T0 + 64), -ENOSPC);
    assert_memory_equal(&c, &before, sizeof(c));
    char *token = ag_chain_sign(key, sizeof(key), &c);
    assert_non_null(token);
    assert_true(strlen(token) <= AG_CHAIN_TOKEN_MAX);
    printf("# 64-hop token: %zu bytes\n", strlen(token));
    assert_int_equal(verify_str(token, T0 + 63, 1000, &got, &why), 0);
    assert_int_equal(got.n, AG_CHAIN_MAX);
    assert_string_equal(ag_chain_origin(&got), "agent-0");
    assert_string_equal(ag_chain_last_target(&got), "agent-64");
    free(token);

    /* Long ids run into the byte bound before the hop bound: no token rather than a huge one. */
    memset(&c, 0, sizeof(c));
    size_t hops_signed = 0;
    for (int i = 0; i < AG_CHAIN_MAX; i++) {
        assert_int_equal(ag_chain_append(&c, id128, id128, id128, T0), 0);
        char *t = ag_chain_sign(key, sizeof(key), &c);
        if (t == NULL)
            break;
        assert_true(strlen(t) <= AG_CHAIN_TOKEN_MAX);
        hops_signed = c.n;
        free(t);
    }
    assert_true(hops_signed >= 8 && hops_signed < AG_CHAIN_MAX);
    printf("# hops of 3 x 128-byte ids that fit in %d bytes: %zu\n", AG_CHAIN_TOKEN_MAX, hops_signed);
}

static void
test_sign_refuses(void **state)
{
    ag_chain_t c;
    memset(&c, 0, sizeof(c));
    assert_null(ag_chain_sign(key, sizeof(key), &c)); /* empty */

    /* Hops filled in by hand are held to ag_chain_append's rules. */
    assert_int_equal(ag_chain_append(&c, "a", "b", NULL, 1), 0);
    memset(c.hops[0].caller, 'x', sizeof(c.hops[0].caller)); /* no NUL */
    assert_null(ag_chain_sign(key, sizeof(key), &c));
    strcpy(c.hops[0].caller, "a");
    c.hops[0].target[0] = '\0';
    assert_null(ag_chain_sign(key, sizeof(key), &c));
    strcpy(c.hops[0].target, "b");
    c.hops[0].at_ms = -5;
    assert_null(ag_chain_sign(key, sizeof(key), &c));
    c.hops[0].at_ms = 5;
    strcpy(c.hops[0].task, "\xff\xfe"); /* not UTF-8 */
    assert_null(ag_chain_sign(key, sizeof(key), &c));
    c.hops[0].task[0] = '\0';
    char *t = ag_chain_sign(key, sizeof(key), &c);
    assert_non_null(t);
    free(t);
    c.n = AG_CHAIN_MAX + 1;
    assert_null(ag_chain_sign(key, sizeof(key), &c));
}

/* Both a match and a mismatch go through one CRYPTO_memcmp over the whole MAC. */
static void
test_constant_time(void **state)
{
    ag_chain_t c, got;
    const char *why;
    sample_chain(&c);
    char *token = ag_chain_sign(key, sizeof(key), &c);

    unsigned before = crypto_memcmp_calls;
    assert_int_equal(verify_str(token, T0, 0, &got, &why), 0);
    assert_int_equal(crypto_memcmp_calls, before + 1);
    size_t len = strlen(token);
    token[len - 10] = token[len - 10] == 'A' ? 'B' : 'A';
    assert_int_equal(verify_str(token, T0, 0, &got, &why), -1);
    assert_int_equal(crypto_memcmp_calls, before + 2);
    free(token);
}

/* Random bytes, and random edits of a real token: never a crash, never an acceptance of
 * anything but the original bytes. */
static void
test_fuzz(void **state)
{
    enum { ROUNDS = 20000 };
    ag_chain_t c, got;
    const char *why;
    sample_chain(&c);
    char *token = ag_chain_sign(key, sizeof(key), &c);
    size_t len = strlen(token);
    char *buf = malloc(AG_CHAIN_TOKEN_MAX + 64);
    assert_non_null(buf);
    unsigned accepted = 0;

    srand(12345);
    for (int r = 0; r < ROUNDS; r++) {
        size_t n;
        if (r % 2 == 0) {
            n = (size_t)rand() % (r % 100 == 0 ? AG_CHAIN_TOKEN_MAX + 16 : 300);
            for (size_t i = 0; i < n; i++)
                buf[i] = r % 4 == 0 ? b64chars[rand() % 64] : (char)(rand() & 0xff);
            if (n > 3 && r % 8 == 0)
                memcpy(buf, "c1.", 3);
        } else {
            memcpy(buf, token, len);
            n = len;
            for (int e = 1 + rand() % 3; e > 0; e--) {
                size_t at = (size_t)rand() % n;
                switch (rand() % 3) {
                case 0:
                    buf[at] = (char)(rand() & 0xff);
                    break;
                case 1: /* delete */
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                    break;
                default: /* insert */
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = b64chars[rand() % 64];
                    n++;
                    break;
                }
            }
        }
        if (ag_chain_verify(key, sizeof(key), buf, n, T0, 0, &got, &why) == 0) {
            assert_int_equal(n, len);
            assert_memory_equal(buf, token, len);
            accepted++;
        } else {
            assert_non_null(why);
            assert_int_equal(got.n, 0);
        }
    }
    printf("# fuzz: %d inputs, %u accepted (edits that restored the original)\n", ROUNDS, accepted);
    free(buf);
    free(token);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_documented_format),
        cmocka_unit_test(test_any_modified_byte_refused),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_refuse_reasons),
        cmocka_unit_test(test_authentic_but_malformed),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_questions),
        cmocka_unit_test(test_to_json),
        cmocka_unit_test(test_append_and_bounds),
        cmocka_unit_test(test_sign_refuses),
        cmocka_unit_test(test_constant_time),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
