/*
 * chain.c — signing and verifying delegation chains (the format is described in chain.h).
 */
#include "chain.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "log.h"
#include "mem.h"

#define VERSION     "c1."
#define VERSION_LEN 3
#define MAC_LEN     32 /* HMAC-SHA256 */
#define MAC_B64_LEN 43 /* MAC_LEN bytes as unpadded base64url */

/* ---- base64url, unpadded ---- */

static const char b64url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t
b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

/* Writes b64url_len(n) characters for the n bytes at in to out (no NUL). */
static void
b64url_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
}

static int
b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes the n characters at s into out (room for n * 3 / 4 bytes). Only the canonical encoding
 * is accepted (a length that is not 1 mod 4, unused low bits zero), so each byte string has
 * exactly one encoding. Returns the decoded length, or -1. */
static long
b64url_decode(const char *s, size_t n, uint8_t *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;

    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
        acc &= (1u << bits) - 1;
    }
    if (acc != 0)
        return -1;
    return (long)o;
}

/* ---- hops ---- */

/* True when s is a usable id: at most AG_CHAIN_ID_MAX bytes and, when required, not empty. */
static bool
id_ok(const char *s, size_t n, bool required)
{
    return n <= AG_CHAIN_ID_MAX && (!required || n > 0) && memchr(s, '\0', n) == NULL;
}

int
ag_chain_append(ag_chain_t *c, const char *caller, const char *target, const char *task, int64_t at_ms)
{
    if (task == NULL)
        task = "";
    if (caller == NULL || target == NULL || at_ms < 0)
        return -EINVAL;
    size_t caller_len = strlen(caller), target_len = strlen(target), task_len = strlen(task);
    if (!id_ok(caller, caller_len, true) || !id_ok(target, target_len, true) || !id_ok(task, task_len, false))
        return -EINVAL;
    if (c->n >= AG_CHAIN_MAX)
        return -ENOSPC;

    ag_hop_t *h = &c->hops[c->n++];
    memcpy(h->caller, caller, caller_len + 1);
    memcpy(h->target, target, target_len + 1);
    memcpy(h->task, task, task_len + 1);
    h->at_ms = at_ms;
    return 0;
}

/* The length of a NUL-terminated field, or AG_CHAIN_ID_MAX + 1 when it has no NUL (which a
 * chain filled by hand could have), so id_ok refuses it. */
static size_t
field_len(const char field[AG_CHAIN_ID_MAX + 1])
{
    const char *nul = memchr(field, '\0', AG_CHAIN_ID_MAX + 1);
    return nul != NULL ? (size_t)(nul - field) : AG_CHAIN_ID_MAX + 1;
}

/* The hops as the compact JSON array the token carries. Returns a new reference, or NULL when a
 * hop is not one ag_chain_append would accept or holds a string that is not UTF-8. */
static json_t *
hops_to_wire(const ag_chain_t *c)
{
    json_t *arr = json_array();
    if (arr == NULL)
        tp_fatal("out of memory");
    for (size_t i = 0; i < c->n; i++) {
        const ag_hop_t *h = &c->hops[i];
        if (!id_ok(h->caller, field_len(h->caller), true) || !id_ok(h->target, field_len(h->target), true) ||
            !id_ok(h->task, field_len(h->task), false) || h->at_ms < 0)
            goto err;
        /* json_string returns NULL for text that is not UTF-8; json_pack then fails. */
        json_t *hop = json_pack("[s,s,s,I]", h->caller, h->target, h->task, (json_int_t)h->at_ms);
        if (hop == NULL)
            goto err;
        json_array_append_new(arr, hop);
    }
    return arr;

err:
    json_decref(arr);
    return NULL;
}

/* mac = HMAC-SHA256(key, the n bytes at data). */
static void
chain_mac(const uint8_t *key, size_t key_len, const char *data, size_t n, uint8_t mac[MAC_LEN])
{
    unsigned mac_len = 0;
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, n, mac, &mac_len) == NULL ||
        mac_len != MAC_LEN)
        tp_fatal("HMAC-SHA256 failed");
}

static bool
key_ok(size_t key_len)
{
    return key_len >= AG_CHAIN_KEY_MIN && key_len <= INT_MAX;
}

char *
ag_chain_sign(const uint8_t *key, size_t key_len, const ag_chain_t *c)
{
    if (!key_ok(key_len) || c->n == 0 || c->n > AG_CHAIN_MAX)
        return NULL;
    json_t *wire = hops_to_wire(c);
    if (wire == NULL)
        return NULL;
    char *json = json_dumps(wire, JSON_COMPACT);
    json_decref(wire);
    if (json == NULL)
        tp_fatal("out of memory");

    size_t json_len = strlen(json);
    size_t payload_len = b64url_len(json_len);
    size_t signed_len = VERSION_LEN + payload_len;
    size_t token_len = signed_len + 1 + MAC_B64_LEN;
    if (token_len > AG_CHAIN_TOKEN_MAX) {
        free(json);
        return NULL;
    }

    char *token = tp_malloc(token_len + 1);
    memcpy(token, VERSION, VERSION_LEN);
    b64url_encode((const uint8_t *)json, json_len, token + VERSION_LEN);
    free(json);
    token[signed_len] = '.';

    uint8_t mac[MAC_LEN];
    chain_mac(key, key_len, token, signed_len, mac);
    b64url_encode(mac, MAC_LEN, token + signed_len + 1);
    token[token_len] = '\0';
    OPENSSL_cleanse(mac, sizeof(mac));
    return token;
}

/* Copies one JSON string into an id field. Returns false when it is not a string, is too long,
 * or is empty while required. */
static bool
copy_id(json_t *s, char dst[AG_CHAIN_ID_MAX + 1], bool required)
{
    if (!json_is_string(s))
        return false;
    size_t n = json_string_length(s);
    const char *v = json_string_value(s);
    if (!id_ok(v, n, required))
        return false;
    memcpy(dst, v, n);
    dst[n] = '\0';
    return true;
}

/* Fills out from the decoded payload. Returns NULL or the reason it was refused. */
static const char *
parse_hops(const uint8_t *json, size_t n, ag_chain_t *out)
{
    json_t *arr = json_loadb((const char *)json, n, JSON_REJECT_DUPLICATES, NULL);
    const char *why = "malformed";

    if (!json_is_array(arr) || json_array_size(arr) == 0)
        goto done;
    if (json_array_size(arr) > AG_CHAIN_MAX) {
        why = "too long";
        goto done;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *hop = json_array_get(arr, i); /* borrowed */
        if (!json_is_array(hop) || json_array_size(hop) != 4)
            goto done;
        ag_hop_t *h = &out->hops[i];
        json_t *at = json_array_get(hop, 3);
        if (!copy_id(json_array_get(hop, 0), h->caller, true) || !copy_id(json_array_get(hop, 1), h->target, true) ||
            !copy_id(json_array_get(hop, 2), h->task, false) || !json_is_integer(at) || json_integer_value(at) < 0)
            goto done;
        h->at_ms = json_integer_value(at);
    }
    out->n = json_array_size(arr);
    why = NULL;

done:
    json_decref(arr);
    return why;
}

static int
refuse(ag_chain_t *out, const char **why, const char *reason)
{
    out->n = 0;
    if (why != NULL)
        *why = reason;
    return -1;
}

int
ag_chain_verify(const uint8_t *key, size_t key_len, const char *token, size_t len, int64_t now_ms, int64_t max_age_ms,
                ag_chain_t *out, const char **why)
{
    assert(now_ms >= 0 && max_age_ms >= 0);
    out->n = 0;
    if (!key_ok(key_len))
        return refuse(out, why, "bad key");
    if (len > AG_CHAIN_TOKEN_MAX)
        return refuse(out, why, "too long");
    if (token == NULL || len < VERSION_LEN + 1 + MAC_B64_LEN || memcmp(token, VERSION, VERSION_LEN) != 0)
        return refuse(out, why, "malformed");

    /* "c1." payload "." mac: the MAC is the last MAC_B64_LEN characters, after the only other dot. */
    size_t signed_len = len - MAC_B64_LEN - 1;
    size_t payload_len = signed_len - VERSION_LEN;
    if (token[signed_len] != '.' || payload_len == 0 || payload_len % 4 == 1)
        return refuse(out, why, "malformed");
    for (size_t i = VERSION_LEN; i < signed_len; i++) {
        if (b64url_value((unsigned char)token[i]) < 0)
            return refuse(out, why, "malformed");
    }
    uint8_t got[MAC_LEN + 1], want[MAC_LEN];
    if (b64url_decode(token + signed_len + 1, MAC_B64_LEN, got) != MAC_LEN)
        return refuse(out, why, "malformed");
    chain_mac(key, key_len, token, signed_len, want);
    bool match = CRYPTO_memcmp(got, want, MAC_LEN) == 0;
    OPENSSL_cleanse(want, sizeof(want));
    if (!match)
        return refuse(out, why, "bad signature");

    /* Authentic from here on; a failure below means a gateway wrote something it cannot read. */
    uint8_t *json = tp_malloc(payload_len * 3 / 4 + 1);
    long json_len = b64url_decode(token + VERSION_LEN, payload_len, json);
    const char *reason = json_len > 0 ? parse_hops(json, (size_t)json_len, out) : "malformed";
    free(json);
    if (reason != NULL)
        return refuse(out, why, reason);

    int64_t issued = out->hops[out->n - 1].at_ms;
    if (max_age_ms > 0 && issued < now_ms && now_ms - issued > max_age_ms)
        return refuse(out, why, "expired");
    if (max_age_ms > 0 && issued > now_ms && issued - now_ms > AG_CHAIN_CLOCK_SKEW_MS)
        return refuse(out, why, "not yet valid");
    return 0;
}

/* ---- questions the gateway asks ---- */

bool
ag_chain_contains_agent(const ag_chain_t *c, const char *agent)
{
    if (agent == NULL)
        return false;
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->hops[i].caller, agent) == 0 || strcmp(c->hops[i].target, agent) == 0)
            return true;
    }
    return false;
}

const char *
ag_chain_origin(const ag_chain_t *c)
{
    return c->n > 0 ? c->hops[0].caller : NULL;
}

const char *
ag_chain_last_target(const ag_chain_t *c)
{
    return c->n > 0 ? c->hops[c->n - 1].target : NULL;
}

json_t *
ag_chain_to_json(const ag_chain_t *c)
{
    json_t *arr = json_array();
    if (arr == NULL)
        tp_fatal("out of memory");
    for (size_t i = 0; i < c->n; i++) {
        const ag_hop_t *h = &c->hops[i];
        json_t *o = json_object();
        if (o == NULL)
            tp_fatal("out of memory");
        json_object_set_new(o, "caller", tp_log_string(h->caller, strlen(h->caller)));
        json_object_set_new(o, "target", tp_log_string(h->target, strlen(h->target)));
        if (h->task[0] != '\0')
            json_object_set_new(o, "task", tp_log_string(h->task, strlen(h->task)));
        json_object_set_new(o, "at_ms", json_integer(h->at_ms));
        json_array_append_new(arr, o);
    }
    return arr;
}
