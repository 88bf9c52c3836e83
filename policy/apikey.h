/*
 * apikey.h — Triplane API keys: tp_<key-id>_<secret>.
 *
 * The key id is 12 characters of [a-z0-9]; it is not secret, names the key in the store and in
 * logs, and lets the gateway find the key without scanning. The secret is 43 characters of
 * [A-Za-z0-9] (256 bits from the OS CSPRNG). The store keeps only SHA-256(secret): the secret
 * has full entropy, so a fast unsalted hash cannot be brute-forced and keeps the hot path cheap.
 * The full key is shown once, when it is generated, and never again.
 */
#ifndef POL_APIKEY_H
#define POL_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POL_APIKEY_PREFIX         "tp_"
#define POL_APIKEY_PREFIX_LEN     3
#define POL_APIKEY_ID_LEN         12  /* [a-z0-9]: 36^12, about 62 bits, enough to never collide by chance */
#define POL_APIKEY_SECRET_LEN     43  /* what pol_apikey_generate makes: 43 base62 characters >= 256 bits */
#define POL_APIKEY_SECRET_MIN_LEN 43  /* shorter secrets are refused: under 256 bits */
#define POL_APIKEY_SECRET_MAX_LEN 128 /* room to lengthen secrets later without invalidating keys */
#define POL_APIKEY_HASH_LEN       32  /* SHA-256 */
/* The length of a generated key: "tp_" + id + "_" + secret. */
#define POL_APIKEY_KEY_LEN (POL_APIKEY_PREFIX_LEN + POL_APIKEY_ID_LEN + 1 + POL_APIKEY_SECRET_LEN)
/* The longest string pol_apikey_parse accepts. */
#define POL_APIKEY_MAX_LEN (POL_APIKEY_PREFIX_LEN + POL_APIKEY_ID_LEN + 1 + POL_APIKEY_SECRET_MAX_LEN)

typedef struct pol_apikey {
    char key[POL_APIKEY_KEY_LEN + 1];  /* the full key, NUL-terminated: show it once, then wipe it */
    char id[POL_APIKEY_ID_LEN + 1];    /* the key id, NUL-terminated: store it */
    uint8_t hash[POL_APIKEY_HASH_LEN]; /* SHA-256 of the secret: store it */
} pol_apikey_t;

/* Generates a new key from the OS CSPRNG (getrandom). Fills *out; the secret exists only in
 * out->key, so the caller should explicit_bzero() *out once the key has been shown. Returns 0,
 * or -EIO when the CSPRNG fails (out is then zeroed). */
int pol_apikey_generate(pol_apikey_t *out);

/* True when token (len bytes, need not be NUL-terminated) starts with "tp_", i.e. is meant as an
 * API key rather than a JWT (JWTs start with "eyJ"). Says nothing about validity. */
bool pol_apikey_looks_like(const char *token, size_t len);

/* Splits an API key. token is len bytes and need not be NUL-terminated. On success returns 0,
 * copies the key id (NUL-terminated) into id, and points *secret at the secret inside token
 * (*secret_len bytes; it borrows token's memory). Returns -EINVAL for anything malformed: wrong
 * prefix, an id that is not 12 [a-z0-9] characters, a missing separator, or a secret that is not
 * 43..128 characters of [A-Za-z0-9]; then id is "" and *secret is NULL. */
int pol_apikey_parse(const char *token, size_t len, char id[POL_APIKEY_ID_LEN + 1], const char **secret,
                     size_t *secret_len);

/* out = SHA-256 of the len bytes at secret. */
void pol_apikey_hash(const char *secret, size_t len, uint8_t out[POL_APIKEY_HASH_LEN]);

/* True when SHA-256(secret) equals stored. The hashes are compared in constant time
 * (CRYPTO_memcmp), so the time taken says nothing about how much of a guess was right. */
bool pol_apikey_verify(const uint8_t stored[POL_APIKEY_HASH_LEN], const char *secret, size_t len);

#endif
