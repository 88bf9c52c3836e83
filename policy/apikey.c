#include "apikey.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

static const char id_alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
static const char secret_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* Fills buf with len bytes from the kernel CSPRNG. getrandom() blocks only until the pool is
 * first initialised, and may return short reads when interrupted. Returns 0 or -EIO. */
static int
random_bytes(uint8_t *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = getrandom(buf + done, len - done, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -EIO;
        }
        done += (size_t)n;
    }
    return 0;
}

/* Writes n characters drawn uniformly from alphabet (size m) to out. Bytes >= the largest
 * multiple of m are rejected so that `byte % m` has no bias. Returns 0 or -EIO. */
static int
random_chars(char *out, size_t n, const char *alphabet, unsigned m)
{
    const unsigned limit = 256 - 256 % m;
    uint8_t pool[64];
    size_t avail = 0, pos = 0;
    int rv = 0;

    for (size_t i = 0; i < n;) {
        if (pos == avail) {
            rv = random_bytes(pool, sizeof(pool));
            if (rv != 0)
                break;
            avail = sizeof(pool);
            pos = 0;
        }
        uint8_t b = pool[pos++];
        if (b < limit)
            out[i++] = alphabet[b % m];
    }
    OPENSSL_cleanse(pool, sizeof(pool));
    return rv;
}

int
pol_apikey_generate(pol_apikey_t *out)
{
    char *p = out->key;
    int rv;

    memset(out, 0, sizeof(*out));
    memcpy(p, POL_APIKEY_PREFIX, POL_APIKEY_PREFIX_LEN);
    p += POL_APIKEY_PREFIX_LEN;
    rv = random_chars(p, POL_APIKEY_ID_LEN, id_alphabet, sizeof(id_alphabet) - 1);
    if (rv != 0)
        goto err;
    memcpy(out->id, p, POL_APIKEY_ID_LEN);
    p += POL_APIKEY_ID_LEN;
    *p++ = '_';
    rv = random_chars(p, POL_APIKEY_SECRET_LEN, secret_alphabet, sizeof(secret_alphabet) - 1);
    if (rv != 0)
        goto err;
    pol_apikey_hash(p, POL_APIKEY_SECRET_LEN, out->hash);
    return 0;

err:
    OPENSSL_cleanse(out, sizeof(*out));
    return rv;
}

bool
pol_apikey_looks_like(const char *token, size_t len)
{
    return len >= POL_APIKEY_PREFIX_LEN && memcmp(token, POL_APIKEY_PREFIX, POL_APIKEY_PREFIX_LEN) == 0;
}

static bool
is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
is_secret_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int
pol_apikey_parse(const char *token, size_t len, char id[POL_APIKEY_ID_LEN + 1], const char **secret, size_t *secret_len)
{
    const size_t secret_at = POL_APIKEY_PREFIX_LEN + POL_APIKEY_ID_LEN + 1;

    id[0] = '\0';
    *secret = NULL;
    *secret_len = 0;
    if (len < secret_at + POL_APIKEY_SECRET_MIN_LEN || len > POL_APIKEY_MAX_LEN)
        return -EINVAL;
    if (!pol_apikey_looks_like(token, len))
        return -EINVAL;
    for (size_t i = POL_APIKEY_PREFIX_LEN; i < secret_at - 1; i++) {
        if (!is_id_char(token[i]))
            return -EINVAL;
    }
    if (token[secret_at - 1] != '_')
        return -EINVAL;
    for (size_t i = secret_at; i < len; i++) {
        if (!is_secret_char(token[i]))
            return -EINVAL;
    }
    memcpy(id, token + POL_APIKEY_PREFIX_LEN, POL_APIKEY_ID_LEN);
    id[POL_APIKEY_ID_LEN] = '\0';
    *secret = token + secret_at;
    *secret_len = len - secret_at;
    return 0;
}

void
pol_apikey_hash(const char *secret, size_t len, uint8_t out[POL_APIKEY_HASH_LEN])
{
    SHA256((const unsigned char *)secret, len, out);
}

bool
pol_apikey_verify(const uint8_t stored[POL_APIKEY_HASH_LEN], const char *secret, size_t len)
{
    uint8_t h[POL_APIKEY_HASH_LEN];
    pol_apikey_hash(secret, len, h);
    bool ok = CRYPTO_memcmp(h, stored, POL_APIKEY_HASH_LEN) == 0;
    OPENSSL_cleanse(h, sizeof(h));
    return ok;
}
