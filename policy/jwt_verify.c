/*
 * jwt.c — JWT verification with OpenSSL 3 and jansson.
 *
 * A token is split and decoded here (strict base64url, JSON objects without duplicate names), so
 * the bytes whose signature is checked are exactly the bytes whose claims are read. The issuer,
 * algorithm and key are all chosen from configuration before the signature is looked at; the
 * signature is checked before any claim is believed. Why not libjwt 1.10: see jwt.h.
 */
#include "jwt_verify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "log.h"
#include "mem.h"

#define HS_SECRET_MIN_LEN 32   /* RFC 7518 3.2: an HMAC key at least as long as the hash; config.c agrees */
#define RSA_MIN_BITS      2048 /* RFC 7518 3.3; shorter RSA keys are refused at load */

/* ---- algorithms ---- */

typedef enum alg_family {
    ALG_HS, /* HMAC with the issuer's hs_secret */
    ALG_RS, /* RSASSA-PKCS1-v1_5 with an RSA key */
    ALG_PS, /* RSASSA-PSS (MGF1 with the same hash, salt as long as the hash) with an RSA key */
    ALG_ES, /* ECDSA with an EC key on the named curve; signature is r || s */
} alg_family_t;

typedef enum md_index { MD_SHA256, MD_SHA384, MD_SHA512, MD_COUNT } md_index_t;

typedef struct alg_info {
    const char *name;
    alg_family_t family;
    md_index_t md;
    int curve_nid; /* ES: the curve the algorithm requires */
    size_t ec_len; /* ES: bytes in each of r and s */
} alg_info_t;

static const alg_info_t algs[] = {
    { "HS256", ALG_HS, MD_SHA256, 0, 0 },
    { "HS384", ALG_HS, MD_SHA384, 0, 0 },
    { "HS512", ALG_HS, MD_SHA512, 0, 0 },
    { "RS256", ALG_RS, MD_SHA256, 0, 0 },
    { "RS384", ALG_RS, MD_SHA384, 0, 0 },
    { "RS512", ALG_RS, MD_SHA512, 0, 0 },
    { "PS256", ALG_PS, MD_SHA256, 0, 0 },
    { "PS384", ALG_PS, MD_SHA384, 0, 0 },
    { "PS512", ALG_PS, MD_SHA512, 0, 0 },
    { "ES256", ALG_ES, MD_SHA256, NID_X9_62_prime256v1, 32 },
    { "ES384", ALG_ES, MD_SHA384, NID_secp384r1, 48 },
    { "ES512", ALG_ES, MD_SHA512, NID_secp521r1, 66 },
};
#define ALG_COUNT (sizeof(algs) / sizeof(algs[0]))

static const char *const md_names[MD_COUNT] = { "SHA256", "SHA384", "SHA512" };

/* Index of the algorithm named exactly `name` (JWA names are case-sensitive), or -1. */
static int
find_alg(const char *name)
{
    for (size_t i = 0; i < ALG_COUNT; i++) {
        if (strcmp(algs[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

/* ---- the verifier ---- */

typedef struct jwt_key {
    char *kid;     /* the JWK's kid; NULL for public_key_file or a JWK without one */
    int alg;       /* the JWK's alg as an index into algs, or -1: any algorithm of the key's type */
    bool rsa;      /* RSA, else EC */
    int curve_nid; /* EC: the key's curve */
    bool from_jwks;
    EVP_PKEY *pkey;
} jwt_key_t;

typedef struct jwt_issuer {
    char *iss;
    char **audiences;
    size_t audience_count;
    uint32_t allowed; /* bit i set: algs[i] is allowed */
    unsigned char *hs_secret;
    size_t hs_secret_len;
    EVP_MAC_CTX *hmac[MD_COUNT]; /* keyed with hs_secret for each allowed HS algorithm; copied per token */
    jwt_key_t *keys;
    size_t key_count;
    bool has_jwks; /* a key came from jwks_file: then a token's kid must name one */
    int64_t leeway_s;
    pol_kind_t default_kind;
    bool stored_principals; /* may tokens act as the stored principal with the same id */
    char *claim_principal;
    char *claim_kind;
    char *claim_team;
    char *claim_roles;
} jwt_issuer_t;

struct pol_jwt_verifier {
    jwt_issuer_t *issuers;
    size_t issuer_count;
    /* Fetched once: an implicit fetch on every call costs time and takes OpenSSL 3's global locks. */
    EVP_MD *md[MD_COUNT];
    EVP_MAC *hmac;
};

static void set_err(char **err, const char *iss, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
set_err(char **err, const char *iss, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ERR_clear_error();
    if (err != NULL)
        *err = tp_sprintf("auth.jwt issuer \"%s\": %s", iss != NULL ? iss : "(unnamed)", buf);
}

static void
issuer_clear(jwt_issuer_t *is)
{
    free(is->iss);
    for (size_t i = 0; i < is->audience_count; i++)
        free(is->audiences[i]);
    free(is->audiences);
    if (is->hs_secret != NULL) {
        OPENSSL_cleanse(is->hs_secret, is->hs_secret_len);
        free(is->hs_secret);
    }
    for (int i = 0; i < MD_COUNT; i++)
        EVP_MAC_CTX_free(is->hmac[i]); /* cleanses the key */
    for (size_t i = 0; i < is->key_count; i++) {
        free(is->keys[i].kid);
        EVP_PKEY_free(is->keys[i].pkey);
    }
    free(is->keys);
    free(is->claim_principal);
    free(is->claim_kind);
    free(is->claim_team);
    free(is->claim_roles);
}

void
pol_jwt_verifier_free(pol_jwt_verifier_t *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->issuer_count; i++)
        issuer_clear(&v->issuers[i]);
    free(v->issuers);
    for (int i = 0; i < MD_COUNT; i++)
        EVP_MD_free(v->md[i]);
    EVP_MAC_free(v->hmac);
    free(v);
}

/* ---- base64url ---- */

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

/* Decodes n characters of unpadded base64url into out (room for n * 3 / 4 bytes). Only the
 * canonical encoding is accepted (unused low bits zero), so no two strings decode to the same
 * bytes: a changed signature character is always a changed signature. Returns the decoded
 * length, or -1. */
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

/* Decodes a base64url JSON string member into a fresh buffer. Returns NULL when s is not one. */
static uint8_t *
b64url_decode_json(json_t *s, size_t *len)
{
    if (!json_is_string(s))
        return NULL;
    size_t n = json_string_length(s);
    uint8_t *out = tp_malloc(n * 3 / 4 + 1);
    long got = b64url_decode(json_string_value(s), n, out);
    if (got <= 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)got;
    return out;
}

/* ---- loading keys ---- */

/* Checks that pkey is an RSA key of at least RSA_MIN_BITS or an EC key on P-256/384/521 and
 * passes OpenSSL's public key check, and appends it to is->keys (taking pkey). Returns 0, or -1
 * with *why set (pkey is then freed). */
static int
add_key(jwt_issuer_t *is, EVP_PKEY *pkey, const char *kid, int alg, bool from_jwks, char *why, size_t why_size)
{
    jwt_key_t k = { .alg = alg, .from_jwks = from_jwks, .pkey = pkey };

    if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < RSA_MIN_BITS) {
            snprintf(why, why_size, "RSA key of %d bits; at least %d are required", bits, RSA_MIN_BITS);
            goto err;
        }
        k.rsa = true;
    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen) != 1) {
            snprintf(why, why_size, "EC key without a named curve");
            goto err;
        }
        k.curve_nid = OBJ_sn2nid(group);
        if (k.curve_nid != NID_X9_62_prime256v1 && k.curve_nid != NID_secp384r1 && k.curve_nid != NID_secp521r1) {
            snprintf(why, why_size, "EC curve %s is not P-256, P-384 or P-521", group);
            goto err;
        }
    } else {
        snprintf(why, why_size, "key type %s is not RSA or EC", EVP_PKEY_get0_type_name(pkey));
        goto err;
    }

    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (ctx == NULL)
        tp_fatal("EVP_PKEY_CTX_new_from_pkey: out of memory");
    int ok = EVP_PKEY_public_check(ctx);
    EVP_PKEY_CTX_free(ctx);
    if (ok != 1) {
        snprintf(why, why_size, "the public key is not valid (OpenSSL public key check failed)");
        goto err;
    }

    if (alg >= 0) {
        const alg_info_t *a = &algs[alg];
        bool fits =
            k.rsa ? (a->family == ALG_RS || a->family == ALG_PS) : (a->family == ALG_ES && a->curve_nid == k.curve_nid);
        if (!fits) {
            snprintf(why, why_size, "alg %s does not fit a key of this type or curve", a->name);
            goto err;
        }
    }
    k.kid = kid != NULL ? tp_strdup(kid) : NULL;
    is->keys = tp_realloc(is->keys, (is->key_count + 1) * sizeof(*is->keys));
    is->keys[is->key_count++] = k;
    return 0;

err:
    EVP_PKEY_free(pkey);
    return -1;
}

static int
load_pem(jwt_issuer_t *is, const char *path, char **err)
{
    char why[256];
    errno = 0;
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        set_err(err, is->iss, "public_key_file %s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
        return -1;
    }
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (pkey == NULL) {
        set_err(err, is->iss, "public_key_file %s: no PEM public key (-----BEGIN PUBLIC KEY-----) in it", path);
        return -1;
    }
    if (add_key(is, pkey, NULL, -1, false, why, sizeof(why)) != 0) {
        set_err(err, is->iss, "public_key_file %s: %s", path, why);
        return -1;
    }
    return 0;
}

/* Builds an RSA public key from a JWK's n and e. Returns NULL with *why set. */
static EVP_PKEY *
jwk_rsa(json_t *jwk, char *why, size_t why_size)
{
    size_t n_len = 0, e_len = 0;
    uint8_t *n = b64url_decode_json(json_object_get(jwk, "n"), &n_len); /* json_object_get borrows */
    uint8_t *e = b64url_decode_json(json_object_get(jwk, "e"), &e_len);
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;

    if (n == NULL || e == NULL) {
        snprintf(why, why_size, "RSA key needs n and e as base64url strings");
        goto out;
    }
    bn_n = BN_bin2bn(n, (int)n_len, NULL);
    bn_e = BN_bin2bn(e, (int)e_len, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (bn_n == NULL || bn_e == NULL || bld == NULL)
        tp_fatal("jwk_rsa: out of memory");
    if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
        tp_fatal("jwk_rsa: OSSL_PARAM_BLD: out of memory");
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        snprintf(why, why_size, "RSA key: OpenSSL does not accept n and e");
        pkey = NULL;
    }

out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    free(n);
    free(e);
    return pkey;
}

/* Builds an EC public key from a JWK's crv, x and y. Returns NULL with *why set. */
static EVP_PKEY *
jwk_ec(json_t *jwk, char *why, size_t why_size)
{
    static const struct {
        const char *crv, *group;
        size_t len;
    } curves[] = {
        { "P-256", "prime256v1", 32 },
        { "P-384", "secp384r1", 48 },
        { "P-521", "secp521r1", 66 },
    };
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    size_t c, x_len = 0, y_len = 0;
    uint8_t *x = NULL, *y = NULL, point[1 + 2 * 66];
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;

    for (c = 0; c < sizeof(curves) / sizeof(curves[0]); c++) {
        if (crv != NULL && strcmp(crv, curves[c].crv) == 0)
            break;
    }
    if (c == sizeof(curves) / sizeof(curves[0])) {
        snprintf(why, why_size, "EC key needs crv P-256, P-384 or P-521");
        return NULL;
    }
    x = b64url_decode_json(json_object_get(jwk, "x"), &x_len);
    y = b64url_decode_json(json_object_get(jwk, "y"), &y_len);
    if (x == NULL || y == NULL || x_len != curves[c].len || y_len != curves[c].len) {
        snprintf(why, why_size, "EC key needs x and y as base64url strings of %zu bytes", curves[c].len);
        goto out;
    }
    point[0] = 0x04; /* uncompressed: 04 || x || y */
    memcpy(point + 1, x, x_len);
    memcpy(point + 1 + x_len, y, y_len);
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL || OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curves[c].group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + x_len + y_len) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
        tp_fatal("jwk_ec: OSSL_PARAM_BLD: out of memory");
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        snprintf(why, why_size, "EC key: (x, y) is not a point on %s", crv);
        pkey = NULL;
    }

out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pkey;
}

static const jwt_key_t *
find_kid(const jwt_issuer_t *is, const char *kid)
{
    for (size_t i = 0; i < is->key_count; i++) {
        if (is->keys[i].from_jwks && is->keys[i].kid != NULL && strcmp(is->keys[i].kid, kid) == 0)
            return &is->keys[i];
    }
    return NULL;
}

/* Loads one JWK. Returns 1 when the key was added, 0 when it is skipped (not a signing key of a
 * supported type), -1 with *why set when it is broken. */
static int
load_jwk(jwt_issuer_t *is, json_t *jwk, char *why, size_t why_size)
{
    if (!json_is_object(jwk)) {
        snprintf(why, why_size, "not an object");
        return -1;
    }
    json_t *kty = json_object_get(jwk, "kty"), *use = json_object_get(jwk, "use");
    json_t *kid = json_object_get(jwk, "kid"), *alg = json_object_get(jwk, "alg");
    if (!json_is_string(kty) || (use != NULL && !json_is_string(use)) || (kid != NULL && !json_is_string(kid)) ||
        (alg != NULL && !json_is_string(alg))) {
        snprintf(why, why_size, "kty must be a string, and use, kid and alg strings when present");
        return -1;
    }
    bool rsa = strcmp(json_string_value(kty), "RSA") == 0, ec = strcmp(json_string_value(kty), "EC") == 0;
    if ((!rsa && !ec) || (use != NULL && strcmp(json_string_value(use), "sig") != 0))
        return 0; /* RFC 7517 4.1: ignore key types we do not use; encryption keys are not ours */
    int alg_index = alg != NULL ? find_alg(json_string_value(alg)) : -1;
    if (alg != NULL && alg_index < 0)
        return 0; /* an algorithm that is not a JWS algorithm we verify (e.g. RSA-OAEP) */
    if (kid != NULL && find_kid(is, json_string_value(kid)) != NULL) {
        snprintf(why, why_size, "kid \"%s\" is used by two keys", json_string_value(kid));
        return -1;
    }
    EVP_PKEY *pkey = rsa ? jwk_rsa(jwk, why, why_size) : jwk_ec(jwk, why, why_size);
    if (pkey == NULL)
        return -1;
    if (add_key(is, pkey, kid != NULL ? json_string_value(kid) : NULL, alg_index, true, why, why_size) != 0)
        return -1;
    return 1;
}

static int
load_jwks(jwt_issuer_t *is, const char *path, char **err)
{
    json_error_t jerr;
    char why[256];
    size_t added = 0;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr); /* new reference */
    if (root == NULL) {
        set_err(err, is->iss, "jwks_file %s: line %d: %s", path, jerr.line, jerr.text);
        return -1;
    }
    json_t *keys = json_object_get(root, "keys"); /* borrowed */
    if (!json_is_array(keys)) {
        set_err(err, is->iss, "jwks_file %s: no \"keys\" array", path);
        goto err;
    }
    for (size_t i = 0; i < json_array_size(keys); i++) {
        int rv = load_jwk(is, json_array_get(keys, i), why, sizeof(why));
        if (rv < 0) {
            set_err(err, is->iss, "jwks_file %s: keys[%zu]: %s", path, i, why);
            goto err;
        }
        added += (size_t)rv;
    }
    if (added == 0) {
        set_err(err, is->iss, "jwks_file %s: no RSA or EC signing key in it", path);
        goto err;
    }
    is->has_jwks = true;
    json_decref(root);
    return 0;

err:
    json_decref(root);
    return -1;
}

/* True when key k can verify algorithm a. */
static bool
key_fits(const jwt_key_t *k, const alg_info_t *a)
{
    if (k->alg >= 0 && &algs[k->alg] != a)
        return false;
    switch (a->family) {
    case ALG_RS:
    case ALG_PS:
        return k->rsa;
    case ALG_ES:
        return !k->rsa && k->curve_nid == a->curve_nid;
    case ALG_HS:
        return false;
    }
    return false;
}

/* Prepares the keyed HMAC context that each HS token's check copies. */
static void
hmac_template(const pol_jwt_verifier_t *v, jwt_issuer_t *is, md_index_t md)
{
    if (is->hmac[md] != NULL)
        return;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)md_names[md], 0),
        OSSL_PARAM_construct_end(),
    };
    is->hmac[md] = EVP_MAC_CTX_new(v->hmac);
    if (is->hmac[md] == NULL || EVP_MAC_init(is->hmac[md], is->hs_secret, is->hs_secret_len, params) != 1)
        tp_fatal("EVP_MAC_init HMAC: failed");
}

static int
issuer_init(const pol_jwt_verifier_t *v, jwt_issuer_t *is, const tp_jwt_issuer_config_t *c, char **err)
{
    if (c->issuer == NULL || c->issuer[0] == '\0') {
        set_err(err, NULL, "issuer is empty");
        return -1;
    }
    is->iss = tp_strdup(c->issuer);
    if (c->audience_count == 0) {
        set_err(err, is->iss, "audience must name at least one accepted audience");
        return -1;
    }
    is->audiences = tp_calloc(c->audience_count, sizeof(char *));
    for (size_t i = 0; i < c->audience_count; i++)
        is->audiences[i] = tp_strdup(c->audiences[i]);
    is->audience_count = c->audience_count;
    is->leeway_s = c->leeway_s > 0 ? c->leeway_s : 0;
    is->stored_principals = c->stored_principals;
    is->default_kind = POL_KIND_USER;
    if (c->default_kind != NULL && pol_kind_parse(c->default_kind, &is->default_kind) != 0) {
        set_err(err, is->iss, "default_kind \"%s\" is not user, service or agent", c->default_kind);
        return -1;
    }
    is->claim_principal = tp_strdup(c->claims.principal != NULL ? c->claims.principal : "sub");
    is->claim_kind = tp_strdup(c->claims.kind != NULL ? c->claims.kind : "kind");
    is->claim_team = tp_strdup(c->claims.team != NULL ? c->claims.team : "team");
    is->claim_roles = tp_strdup(c->claims.roles != NULL ? c->claims.roles : "roles");

    if (c->hs_secret != NULL) {
        is->hs_secret_len = strlen(c->hs_secret);
        is->hs_secret = (unsigned char *)tp_strdup(c->hs_secret);
    }
    if (c->public_key_file != NULL && load_pem(is, c->public_key_file, err) != 0)
        return -1;
    if (c->jwks_file != NULL && load_jwks(is, c->jwks_file, err) != 0)
        return -1;

    if (c->algorithm_count == 0) {
        set_err(err, is->iss, "algorithms must name at least one algorithm");
        return -1;
    }
    for (size_t i = 0; i < c->algorithm_count; i++) {
        int a = find_alg(c->algorithms[i]);
        if (a < 0) {
            set_err(err, is->iss, "algorithm \"%s\" is unknown or refused", c->algorithms[i]);
            return -1;
        }
        is->allowed |= 1u << a;
        bool usable = false;
        if (algs[a].family == ALG_HS) {
            if (is->hs_secret_len < HS_SECRET_MIN_LEN) {
                set_err(err, is->iss, "algorithm %s needs an hs_secret of at least %d bytes", algs[a].name,
                        HS_SECRET_MIN_LEN);
                return -1;
            }
            hmac_template(v, is, algs[a].md);
            usable = true;
        }
        for (size_t k = 0; k < is->key_count && !usable; k++)
            usable = key_fits(&is->keys[k], &algs[a]);
        if (!usable) {
            set_err(err, is->iss, "algorithm %s is allowed but no key in public_key_file or jwks_file can verify it",
                    algs[a].name);
            return -1;
        }
    }
    return 0;
}

pol_jwt_verifier_t *
pol_jwt_verifier_new(const tp_jwt_issuer_config_t *issuers, size_t n, char **err)
{
    pol_jwt_verifier_t *v = tp_calloc(1, sizeof(*v));

    if (err != NULL)
        *err = NULL;
    for (int i = 0; i < MD_COUNT; i++) {
        v->md[i] = EVP_MD_fetch(NULL, md_names[i], NULL);
        if (v->md[i] == NULL) {
            set_err(err, NULL, "EVP_MD_fetch %s: not available", md_names[i]);
            goto err;
        }
    }
    v->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (v->hmac == NULL) {
        set_err(err, NULL, "EVP_MAC_fetch HMAC: not available");
        goto err;
    }
    v->issuers = tp_calloc(n > 0 ? n : 1, sizeof(*v->issuers));
    for (size_t i = 0; i < n; i++) {
        v->issuer_count = i + 1; /* so that pol_jwt_verifier_free clears a half-made issuer */
        if (issuer_init(v, &v->issuers[i], &issuers[i], err) != 0)
            goto err;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(v->issuers[j].iss, v->issuers[i].iss) == 0) {
                set_err(err, v->issuers[i].iss, "configured twice");
                goto err;
            }
        }
    }
    return v;

err:
    pol_jwt_verifier_free(v);
    return NULL;
}

/* ---- verifying ---- */

static const jwt_issuer_t *
find_issuer(const pol_jwt_verifier_t *v, const char *iss)
{
    for (size_t i = 0; i < v->issuer_count; i++) {
        if (strcmp(v->issuers[i].iss, iss) == 0)
            return &v->issuers[i];
    }
    return NULL;
}

/* Chooses the key for algorithm a: *key stays NULL for HS (the hs_secret is used). */
static pol_authn_status_t
select_key(const jwt_issuer_t *is, const alg_info_t *a, const char *kid, const jwt_key_t **key)
{
    *key = NULL;
    if (a->family == ALG_HS)
        return is->hmac[a->md] != NULL ? POL_AUTHN_OK : POL_AUTHN_ALGORITHM_REFUSED;
    if (kid != NULL && is->has_jwks) {
        *key = find_kid(is, kid);
        if (*key == NULL)
            return POL_AUTHN_UNKNOWN_KID;
        return key_fits(*key, a) ? POL_AUTHN_OK : POL_AUTHN_ALGORITHM_REFUSED;
    }
    /* No kid (or no JWKS to look it up in): only an unambiguous key will do. */
    size_t fitting = 0;
    for (size_t i = 0; i < is->key_count; i++) {
        if (key_fits(&is->keys[i], a)) {
            *key = &is->keys[i];
            fitting++;
        }
    }
    if (fitting == 1)
        return POL_AUTHN_OK;
    *key = NULL;
    return fitting == 0 ? POL_AUTHN_ALGORITHM_REFUSED : POL_AUTHN_UNKNOWN_KID;
}

static bool
verify_hmac(const jwt_issuer_t *is, const alg_info_t *a, const char *msg, size_t msg_len, const uint8_t *sig,
            size_t sig_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    /* Copying the keyed template (read-only, so safe from many threads) saves a fetch and the key
     * schedule on every token. */
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(is->hmac[a->md]);
    if (ctx == NULL)
        tp_fatal("EVP_MAC_CTX_dup: out of memory");
    bool ok = EVP_MAC_update(ctx, (const unsigned char *)msg, msg_len) == 1 &&
              EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac)) == 1;
    EVP_MAC_CTX_free(ctx);
    /* The length is public (it follows from alg); the bytes are compared in constant time. */
    return ok && sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
}

/* JWS carries ECDSA signatures as r || s (RFC 7518 3.4); OpenSSL wants DER. Returns the DER
 * length written to der (at least 160 bytes), or 0 when sig has the wrong length. */
static size_t
ecdsa_raw_to_der(const alg_info_t *a, const uint8_t *sig, size_t sig_len, uint8_t *der)
{
    if (sig_len != 2 * a->ec_len)
        return 0;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)a->ec_len, NULL), *s = BN_bin2bn(sig + a->ec_len, (int)a->ec_len, NULL);
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1)
        tp_fatal("ecdsa_raw_to_der: out of memory");
    int n = i2d_ECDSA_SIG(es, NULL);
    if (n <= 0 || n > 160) {
        ECDSA_SIG_free(es);
        return 0;
    }
    n = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    return n > 0 ? (size_t)n : 0;
}

static bool
verify_pkey(const pol_jwt_verifier_t *v, const jwt_key_t *k, const alg_info_t *a, const char *msg, size_t msg_len,
            const uint8_t *sig, size_t sig_len)
{
    uint8_t der[160];
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = false;

    if (a->family == ALG_ES) {
        sig_len = ecdsa_raw_to_der(a, sig, sig_len, der);
        if (sig_len == 0)
            return false;
        sig = der;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        tp_fatal("EVP_MD_CTX_new: out of memory");
    if (EVP_DigestVerifyInit(ctx, &pctx, v->md[a->md], NULL, k->pkey) != 1)
        goto out;
    if (a->family == ALG_PS && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                                EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
        goto out;
    ok = EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)msg, msg_len) == 1;

out:
    EVP_MD_CTX_free(ctx);
    if (!ok)
        ERR_clear_error(); /* a bad signature is an answer, not an error to leave in this thread's queue */
    return ok;
}

/* Decodes one base64url part holding a JSON object. Returns a new reference, or NULL. */
static json_t *
decode_json_part(const char *s, size_t n, uint8_t *buf)
{
    long len = b64url_decode(s, n, buf);
    if (len <= 0)
        return NULL;
    json_t *j = json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* exp, nbf, iat and aud. Checked only after the signature. */
static pol_authn_status_t
check_registered_claims(const jwt_issuer_t *is, json_t *claims, int64_t now_s)
{
    json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
    json_t *iat = json_object_get(claims, "iat"), *aud = json_object_get(claims, "aud");

    if (!json_is_number(exp) || (nbf != NULL && !json_is_number(nbf)) || (iat != NULL && !json_is_number(iat)))
        return POL_AUTHN_BAD_CLAIMS;
    if (json_number_value(exp) <= (double)(now_s - is->leeway_s))
        return POL_AUTHN_EXPIRED;
    if (nbf != NULL && json_number_value(nbf) > (double)(now_s + is->leeway_s))
        return POL_AUTHN_NOT_YET_VALID;
    if (iat != NULL && json_number_value(iat) > (double)(now_s + is->leeway_s))
        return POL_AUTHN_NOT_YET_VALID;

    if (aud == NULL)
        return POL_AUTHN_WRONG_AUDIENCE;
    if (!json_is_string(aud) && !json_is_array(aud))
        return POL_AUTHN_BAD_CLAIMS;
    size_t n = json_is_array(aud) ? json_array_size(aud) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *one = json_is_array(aud) ? json_array_get(aud, i) : aud;
        if (!json_is_string(one))
            return POL_AUTHN_BAD_CLAIMS;
        for (size_t j = 0; j < is->audience_count; j++) {
            if (strcmp(json_string_value(one), is->audiences[j]) == 0)
                return POL_AUTHN_OK;
        }
    }
    return POL_AUTHN_WRONG_AUDIENCE;
}

static void
add_role(pol_principal_t *p, const char *role, size_t len)
{
    if (len == 0)
        return;
    p->roles = tp_realloc(p->roles, (p->num_roles + 1) * sizeof(char *));
    p->roles[p->num_roles++] = tp_strndup(role, len);
}

/* Fills *out from the issuer's claim mapping. On failure *out may hold part of a principal. */
static pol_authn_status_t
map_claims(const jwt_issuer_t *is, json_t *claims, pol_principal_t *out)
{
    json_t *id = json_object_get(claims, is->claim_principal), *kind = json_object_get(claims, is->claim_kind);
    json_t *team = json_object_get(claims, is->claim_team), *roles = json_object_get(claims, is->claim_roles);

    if (!json_is_string(id) || json_string_length(id) == 0)
        return POL_AUTHN_BAD_CLAIMS;
    out->kind = is->default_kind;
    if (kind != NULL && !json_is_null(kind) &&
        (!json_is_string(kind) || pol_kind_parse(json_string_value(kind), &out->kind) != 0))
        return POL_AUTHN_BAD_CLAIMS;
    if (team != NULL && !json_is_null(team) && !json_is_string(team))
        return POL_AUTHN_BAD_CLAIMS;

    if (json_is_string(roles)) {
        const char *s = json_string_value(roles);
        while (*s != '\0') {
            size_t len = strcspn(s, " ");
            add_role(out, s, len);
            s += len;
            s += strspn(s, " ");
        }
    } else if (json_is_array(roles)) {
        for (size_t i = 0; i < json_array_size(roles); i++) {
            json_t *r = json_array_get(roles, i);
            if (!json_is_string(r))
                return POL_AUTHN_BAD_CLAIMS;
            add_role(out, json_string_value(r), json_string_length(r));
        }
    } else if (roles != NULL && !json_is_null(roles)) {
        return POL_AUTHN_BAD_CLAIMS;
    }

    out->id = tp_strdup(json_string_value(id));
    out->issuer = tp_strdup(is->iss);
    if (json_is_string(team) && json_string_length(team) > 0)
        out->team = tp_strdup(json_string_value(team));
    out->enabled = true;
    return POL_AUTHN_OK;
}

/* The token's three parts, decoded. */
typedef struct parsed {
    json_t *header;
    json_t *claims;
    const char *alg;
    const char *kid;    /* NULL when absent */
    size_t signed_len;  /* header.payload: the bytes the signature covers */
    const uint8_t *sig; /* inside buf */
    size_t sig_len;
} parsed_t;

static pol_authn_status_t
parse_token(const char *token, size_t len, uint8_t *buf, parsed_t *p)
{
    const char *dot1 = memchr(token, '.', len);
    if (dot1 == NULL)
        return POL_AUTHN_MALFORMED;
    const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (dot2 == NULL)
        return POL_AUTHN_MALFORMED;
    const char *end = token + len;
    size_t sig_chars = (size_t)(end - dot2 - 1);

    /* Three parts only: a fourth '.' (JWE has five parts) makes the signature part fail to decode. */
    p->header = decode_json_part(token, (size_t)(dot1 - token), buf);
    if (p->header == NULL)
        return POL_AUTHN_MALFORMED;
    p->claims = decode_json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf);
    if (p->claims == NULL)
        return POL_AUTHN_MALFORMED;
    long sig_len = b64url_decode(dot2 + 1, sig_chars, buf);
    if (sig_len < 0)
        return POL_AUTHN_MALFORMED;
    p->sig = buf;
    p->sig_len = (size_t)sig_len;
    p->signed_len = (size_t)(dot2 - token);

    json_t *alg = json_object_get(p->header, "alg"), *kid = json_object_get(p->header, "kid");
    if (!json_is_string(alg) || (kid != NULL && !json_is_string(kid)))
        return POL_AUTHN_MALFORMED;
    /* RFC 7515 4.1.11: extensions marked critical that we do not understand (we understand
     * none, e.g. b64=false) make the token unusable. */
    if (json_object_get(p->header, "crit") != NULL)
        return POL_AUTHN_MALFORMED;
    p->alg = json_string_value(alg);
    p->kid = kid != NULL ? json_string_value(kid) : NULL;
    return POL_AUTHN_OK;
}

static pol_authn_status_t
verify_parsed(const pol_jwt_verifier_t *v, const char *token, const parsed_t *p, int64_t now_s, pol_principal_t *out)
{
    if (strcasecmp(p->alg, "none") == 0)
        return POL_AUTHN_ALGORITHM_REFUSED;
    const char *iss = json_string_value(json_object_get(p->claims, "iss")); /* NULL unless a string */
    const jwt_issuer_t *is = iss != NULL ? find_issuer(v, iss) : NULL;
    if (is == NULL)
        return POL_AUTHN_UNKNOWN_ISSUER;
    int a = find_alg(p->alg);
    if (a < 0 || (is->allowed & (1u << a)) == 0)
        return POL_AUTHN_ALGORITHM_REFUSED;

    const jwt_key_t *key;
    pol_authn_status_t st = select_key(is, &algs[a], p->kid, &key);
    if (st != POL_AUTHN_OK)
        return st;
    bool ok = key == NULL ? verify_hmac(is, &algs[a], token, p->signed_len, p->sig, p->sig_len)
                          : verify_pkey(v, key, &algs[a], token, p->signed_len, p->sig, p->sig_len);
    if (!ok)
        return POL_AUTHN_BAD_SIGNATURE;

    st = check_registered_claims(is, p->claims, now_s);
    if (st != POL_AUTHN_OK)
        return st;
    return map_claims(is, p->claims, out);
}

pol_authn_status_t
pol_jwt_verify(const pol_jwt_verifier_t *v, const char *token, size_t len, int64_t now_s, pol_principal_t *out)
{
    parsed_t p = { 0 };
    pol_authn_status_t st;

    memset(out, 0, sizeof(*out));
    if (len == 0 || len > POL_JWT_MAX_LEN)
        return POL_AUTHN_MALFORMED;
    /* Each part decodes to at most 3/4 of its length; the parts reuse one buffer in turn. */
    uint8_t *buf = tp_malloc(len);
    st = parse_token(token, len, buf, &p);
    if (st == POL_AUTHN_OK)
        st = verify_parsed(v, token, &p, now_s, out);
    if (st != POL_AUTHN_OK)
        pol_principal_clear(out);
    json_decref(p.header);
    json_decref(p.claims);
    free(buf);
    return st;
}

bool
pol_jwt_issuer_may_act_as_stored(const pol_jwt_verifier_t *v, const char *iss)
{
    const jwt_issuer_t *is = iss != NULL ? find_issuer(v, iss) : NULL;
    return is != NULL && is->stored_principals;
}
