/*
 * test_jwt.c — JWT verification (policy/jwt_verify.c): valid tokens of every key source, the known
 * attacks, time and audience checks, claim mapping, key loading errors, threads and cost.
 *
 * Keys are generated here with OpenSSL; tokens are signed here, by hand, so that malicious ones
 * (alg none, key confusion, tampering) can be made as easily as good ones. One test checks that
 * tokens minted by libjwt 1.10 verify too.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "config.h"
#include "jwt_verify.h"
#include "principal.h"

#include <jwt.h> /* libjwt 1.10, to mint tokens for the interoperability test */

#define NOW       ((int64_t)1700000000)
#define LEEWAY    60
#define HS_SECRET "an-hmac-secret-of-more-than-32-bytes-for-tests"
#define HS_OTHER  "another-hmac-secret-also-longer-than-32-bytes"

enum {
    ISS_HS,     /* HS256, HS512 with hs_secret */
    ISS_RS,     /* RS256, PS256 with a PEM RSA key */
    ISS_BOTH,   /* HS256 and RS256: hs_secret and the same PEM RSA key */
    ISS_EC,     /* ES256 with a PEM EC key, no leeway */
    ISS_JWKS,   /* RS256, ES256 from a JWKS: two RSA keys and one EC key */
    ISS_CLAIMS, /* HS256 with custom claim names and default_kind service */
    ISS_COUNT,
};

static const char *const iss_names[ISS_COUNT] = {
    "https://hs.example", "https://rs.example",   "https://both.example",
    "https://ec.example", "https://jwks.example", "https://claims.example",
};

static struct {
    char dir[64];
    EVP_PKEY *rsa, *rsa2, *ec, *ec384;
    char *rsa_pub_pem; /* the PEM text of rsa's public key: the secret of the confusion attack */
    char rsa_pem_path[128], ec_pem_path[128], jwks_path[128];
    pol_jwt_verifier_t *v;
} S;

/* ---- helpers: encoding and signing ---- */

static char *
b64url(const uint8_t *data, size_t len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(len * 4 / 3 + 4), *o = out;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
        *o++ = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
    }
    *o = '\0';
    return out;
}

static char *
b64url_str(const char *s)
{
    return b64url((const uint8_t *)s, strlen(s));
}

static const EVP_MD *
md_for(const char *alg)
{
    if (strcmp(alg + 2, "384") == 0)
        return EVP_sha384();
    if (strcmp(alg + 2, "512") == 0)
        return EVP_sha512();
    return EVP_sha256();
}

/* Signs `signing_input` with sig_alg (HS with secret; RS, PS and ES with pkey); NULL sig_alg gives
 * an empty signature. Returns the base64url signature. */
static char *
sign(const char *signing_input, const char *sig_alg, const char *secret, EVP_PKEY *pkey)
{
    uint8_t sig[1024];
    size_t sig_len = 0;

    if (sig_alg == NULL)
        return strdup("");
    if (strncmp(sig_alg, "HS", 2) == 0) {
        unsigned int n = 0;
        assert_non_null(HMAC(md_for(sig_alg), secret, (int)strlen(secret), (const uint8_t *)signing_input,
                             strlen(signing_input), sig, &n));
        return b64url(sig, n);
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    assert_int_equal(EVP_DigestSignInit(ctx, &pctx, md_for(sig_alg), NULL, pkey), 1);
    if (strncmp(sig_alg, "PS", 2) == 0) {
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
    }
    sig_len = sizeof(sig);
    assert_int_equal(EVP_DigestSign(ctx, sig, &sig_len, (const uint8_t *)signing_input, strlen(signing_input)), 1);
    EVP_MD_CTX_free(ctx);
    if (strncmp(sig_alg, "ES", 2) == 0) {
        /* DER -> r || s, each padded to the size of the key's curve. */
        size_t n = ((size_t)EVP_PKEY_get_bits(pkey) + 7) / 8;
        const uint8_t *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);
        assert_non_null(es);
        uint8_t raw[132];
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, (int)n), (int)n);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + n, (int)n), (int)n);
        ECDSA_SIG_free(es);
        return b64url(raw, 2 * n);
    }
    return b64url(sig, sig_len);
}

/* Makes header.payload.signature from raw JSON texts. */
static char *
sign_raw(const char *header, const char *payload, const char *sig_alg, const char *secret, EVP_PKEY *pkey)
{
    char *h = b64url_str(header), *p = b64url_str(payload);
    size_t n = strlen(h) + strlen(p) + 2;
    char *input = malloc(n);
    snprintf(input, n, "%s.%s", h, p);
    char *s = sign(input, sig_alg, secret, pkey);
    char *token = malloc(n + strlen(s) + 1);
    sprintf(token, "%s.%s", input, s);
    free(h);
    free(p);
    free(input);
    free(s);
    return token;
}

/* Standard claims for issuer `iss`: aud "triplane", sub "alice", exp in an hour. */
static json_t *
claims(int iss)
{
    return json_pack("{s:s, s:s, s:s, s:I}", "iss", iss_names[iss], "aud", "triplane", "sub", "alice", "exp",
                     (json_int_t)(NOW + 3600));
}

/* Signs claims (stolen) with alg in the header, and kid when not NULL. */
static char *
mint(const char *alg, const char *kid, json_t *c, const char *secret, EVP_PKEY *pkey)
{
    json_t *h = json_pack("{s:s, s:s}", "alg", alg, "typ", "JWT");
    if (kid != NULL)
        json_object_set_new(h, "kid", json_string(kid));
    char *hs = json_dumps(h, JSON_COMPACT), *cs = json_dumps(c, JSON_COMPACT);
    char *token = sign_raw(hs, cs, alg, secret, pkey);
    free(hs);
    free(cs);
    json_decref(h);
    json_decref(c);
    return token;
}

static pol_authn_status_t
verify_at(const char *token, int64_t now)
{
    pol_principal_t p;
    pol_authn_status_t st = pol_jwt_verify(S.v, token, strlen(token), now, &p);
    if (st == POL_AUTHN_OK) {
        pol_principal_clear(&p);
    } else {
        pol_principal_t zero;
        memset(&zero, 0, sizeof(zero));
        assert_memory_equal(&p, &zero, sizeof(p)); /* nothing to free on failure */
    }
    return st;
}

/* Checks a token's status (and frees the token), naming both statuses on failure. */
#define expect_at(token, now, want)                                                                                    \
    do {                                                                                                               \
        char *t_ = (token);                                                                                            \
        pol_authn_status_t got_ = verify_at(t_, (now));                                                                \
        if (got_ != (want))                                                                                            \
            fail_msg("%s: got %s, want %s\n  token: %.200s", #token, pol_authn_status_name(got_),                      \
                     pol_authn_status_name(want), t_);                                                                 \
        free(t_);                                                                                                      \
    } while (0)
#define expect(token, want) expect_at(token, NOW, want)

/* ---- fixtures ---- */

/* The contents of a memory BIO as a NUL-terminated string (the BIO's buffer is not), freed
 * with the BIO. */
static char *
bio_text(BIO *b, int *len)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)n + 1);
    assert_non_null(out);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    if (len != NULL)
        *len = (int)n;
    BIO_free(b);
    return out;
}

static char *
pub_pem(EVP_PKEY *pkey)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, pkey), 1);
    return bio_text(b, NULL);
}

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static json_t *
jwk_rsa(EVP_PKEY *pkey, const char *kid, const char *alg)
{
    BIGNUM *n = NULL, *e = NULL;
    uint8_t buf[1024];
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e), 1);
    char *ns = b64url(buf, (size_t)BN_bn2bin(n, buf));
    char *es = b64url(buf, (size_t)BN_bn2bin(e, buf));
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "kty", "RSA", "use", "sig", "n", ns, "e", es);
    if (kid != NULL)
        json_object_set_new(j, "kid", json_string(kid));
    if (alg != NULL)
        json_object_set_new(j, "alg", json_string(alg));
    free(ns);
    free(es);
    BN_free(n);
    BN_free(e);
    return j;
}

static json_t *
jwk_ec(EVP_PKEY *pkey, const char *kid, const char *crv, int len)
{
    BIGNUM *x = NULL, *y = NULL;
    uint8_t buf[66];
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x), 1);
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y), 1);
    char *xs = b64url(buf, (size_t)BN_bn2binpad(x, buf, len));
    char *ys = b64url(buf, (size_t)BN_bn2binpad(y, buf, len));
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", crv, "x", xs, "y", ys);
    if (kid != NULL)
        json_object_set_new(j, "kid", json_string(kid));
    free(xs);
    free(ys);
    BN_free(x);
    BN_free(y);
    return j;
}

static void
write_jwks(const char *path, json_t *keys)
{
    json_t *root = json_pack("{s:o}", "keys", keys);
    assert_int_equal(json_dump_file(root, path, JSON_INDENT(2)), 0);
    json_decref(root);
}

static char *aud_list[] = { "triplane", "other" };
static char *algs_hs[] = { "HS256", "HS512" };
static char *algs_rs[] = { "RS256", "PS256" };
static char *algs_both[] = { "HS256", "RS256" };
static char *algs_es[] = { "ES256" };
static char *algs_jwks[] = { "RS256", "ES256" };
static char *algs_hs256[] = { "HS256" };

/* One issuer's configuration, as the config loader would fill it. */
static tp_jwt_issuer_config_t
issuer_config(int iss)
{
    tp_jwt_issuer_config_t c = {
        .issuer = (char *)iss_names[iss],
        .audiences = aud_list,
        .audience_count = 2,
        .leeway_s = LEEWAY,
        .default_kind = "user",
        .claims = { .principal = "sub", .kind = "kind", .team = "team", .roles = "roles" },
    };
    switch (iss) {
    case ISS_HS:
        c.algorithms = algs_hs;
        c.algorithm_count = 2;
        c.hs_secret = HS_SECRET;
        break;
    case ISS_RS:
        c.algorithms = algs_rs;
        c.algorithm_count = 2;
        c.public_key_file = S.rsa_pem_path;
        break;
    case ISS_BOTH:
        c.algorithms = algs_both;
        c.algorithm_count = 2;
        c.hs_secret = HS_OTHER;
        c.public_key_file = S.rsa_pem_path;
        break;
    case ISS_EC:
        c.algorithms = algs_es;
        c.algorithm_count = 1;
        c.public_key_file = S.ec_pem_path;
        c.leeway_s = 0;
        break;
    case ISS_JWKS:
        c.algorithms = algs_jwks;
        c.algorithm_count = 2;
        c.jwks_file = S.jwks_path;
        break;
    case ISS_CLAIMS:
        c.algorithms = algs_hs256;
        c.algorithm_count = 1;
        c.hs_secret = HS_SECRET;
        c.default_kind = "service";
        c.claims = (tp_jwt_claims_config_t){ .principal = "email", .kind = "pkind", .team = "org", .roles = "scope" };
        break;
    }
    return c;
}

static int
setup(void **state)
{
    snprintf(S.dir, sizeof(S.dir), "/tmp/test_jwt.XXXXXX");
    if (mkdtemp(S.dir) == NULL)
        return -1;
    S.rsa = EVP_RSA_gen(2048);
    S.rsa2 = EVP_RSA_gen(2048);
    S.ec = EVP_EC_gen("P-256");
    S.ec384 = EVP_EC_gen("P-384");
    if (S.rsa == NULL || S.rsa2 == NULL || S.ec == NULL || S.ec384 == NULL)
        return -1;
    S.rsa_pub_pem = pub_pem(S.rsa);
    snprintf(S.rsa_pem_path, sizeof(S.rsa_pem_path), "%s/rsa.pem", S.dir);
    snprintf(S.ec_pem_path, sizeof(S.ec_pem_path), "%s/ec.pem", S.dir);
    snprintf(S.jwks_path, sizeof(S.jwks_path), "%s/jwks.json", S.dir);
    write_file(S.rsa_pem_path, S.rsa_pub_pem);
    char *ec_pem = pub_pem(S.ec);
    write_file(S.ec_pem_path, ec_pem);
    free(ec_pem);

    /* Two RSA keys and an EC key, plus keys that must be skipped: a symmetric key, an encryption
     * key, and an OKP key. */
    json_t *keys = json_array();
    json_array_append_new(keys, jwk_rsa(S.rsa, "rsa-1", "RS256"));
    json_array_append_new(keys, jwk_rsa(S.rsa2, "rsa-2", NULL));
    json_array_append_new(keys, jwk_ec(S.ec, "ec-1", "P-256", 32));
    json_array_append_new(keys, json_pack("{s:s, s:s, s:s}", "kty", "oct", "kid", "sym", "k", "c2VjcmV0"));
    json_t *enc = jwk_rsa(S.rsa2, "enc-1", NULL);
    json_object_set_new(enc, "use", json_string("enc"));
    json_array_append_new(keys, enc);
    json_array_append_new(keys, json_pack("{s:s, s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "kid", "ed", "x",
                                          "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"));
    write_jwks(S.jwks_path, keys);

    tp_jwt_issuer_config_t cfg[ISS_COUNT];
    for (int i = 0; i < ISS_COUNT; i++)
        cfg[i] = issuer_config(i);
    char *err = NULL;
    S.v = pol_jwt_verifier_new(cfg, ISS_COUNT, &err);
    if (S.v == NULL) {
        fprintf(stderr, "pol_jwt_verifier_new: %s\n", err);
        free(err);
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    pol_jwt_verifier_free(S.v);
    EVP_PKEY_free(S.rsa);
    EVP_PKEY_free(S.rsa2);
    EVP_PKEY_free(S.ec);
    EVP_PKEY_free(S.ec384);
    free(S.rsa_pub_pem);
    unlink(S.rsa_pem_path);
    unlink(S.ec_pem_path);
    unlink(S.jwks_path);
    rmdir(S.dir);
    return 0;
}

/* ---- valid tokens ---- */

static void
test_valid_hs256(void **state)
{
    char *t = mint("HS256", NULL, claims(ISS_HS), HS_SECRET, NULL);
    pol_principal_t p;
    assert_int_equal(pol_jwt_verify(S.v, t, strlen(t), NOW, &p), POL_AUTHN_OK);
    assert_string_equal(p.id, "alice");
    assert_int_equal(p.kind, POL_KIND_USER);
    assert_null(p.team);
    assert_int_equal(p.num_roles, 0);
    assert_int_equal(p.num_labels, 0);
    assert_true(p.enabled);
    pol_principal_clear(&p);

    /* Only len bytes are read: the token need not be NUL-terminated. */
    size_t n = strlen(t);
    char *padded = malloc(n + 8);
    memcpy(padded, t, n);
    memcpy(padded + n, ".junk!!", 8);
    assert_int_equal(pol_jwt_verify(S.v, padded, n, NOW, &p), POL_AUTHN_OK);
    pol_principal_clear(&p);
    free(padded);
    free(t);

    expect(mint("HS512", NULL, claims(ISS_HS), HS_SECRET, NULL), POL_AUTHN_OK);
    /* A kid on an HS token is ignored: the issuer has one secret. */
    expect(mint("HS256", "whatever", claims(ISS_HS), HS_SECRET, NULL), POL_AUTHN_OK);
    /* A token without typ is fine. */
    expect(sign_raw("{\"alg\":\"HS256\"}",
                    "{\"iss\":\"https://hs.example\",\"aud\":\"triplane\",\"sub\":\"bob\",\"exp\":1700003600}", "HS256",
                    HS_SECRET, NULL),
           POL_AUTHN_OK);
}

static void
test_valid_rs256_ps256_pem(void **state)
{
    expect(mint("RS256", NULL, claims(ISS_RS), NULL, S.rsa), POL_AUTHN_OK);
    expect(mint("PS256", NULL, claims(ISS_RS), NULL, S.rsa), POL_AUTHN_OK);
    /* With a PEM key only, a kid is not needed and not looked up. */
    expect(mint("RS256", "some-kid", claims(ISS_RS), NULL, S.rsa), POL_AUTHN_OK);
    /* Signed by another RSA key. */
    expect(mint("RS256", NULL, claims(ISS_RS), NULL, S.rsa2), POL_AUTHN_BAD_SIGNATURE);
    /* A PKCS#1 v1.5 signature presented as PSS and the other way round. */
    char *t = mint("RS256", NULL, claims(ISS_RS), NULL, S.rsa);
    char *dot = strchr(t, '.');
    char *ps_header = b64url_str("{\"alg\":\"PS256\",\"typ\":\"JWT\"}");
    char *swapped = malloc(strlen(ps_header) + strlen(dot) + 1);
    sprintf(swapped, "%s%s", ps_header, dot);
    expect(swapped, POL_AUTHN_BAD_SIGNATURE);
    free(ps_header);
    free(t);
}

static void
test_valid_es256_pem(void **state)
{
    char *t = mint("ES256", NULL, claims(ISS_EC), NULL, S.ec);
    pol_principal_t p;
    assert_int_equal(pol_jwt_verify(S.v, t, strlen(t), NOW, &p), POL_AUTHN_OK);
    assert_string_equal(p.id, "alice");
    pol_principal_clear(&p);
    free(t);
    /* Signed with a P-384 key but presented as ES256: the key is P-256, the signature is not. */
    expect(mint("ES256", NULL, claims(ISS_EC), NULL, S.ec384), POL_AUTHN_BAD_SIGNATURE);
    /* ES384 is not allowed for this issuer (and it has no P-384 key). */
    expect(mint("ES384", NULL, claims(ISS_EC), NULL, S.ec384), POL_AUTHN_ALGORITHM_REFUSED);
}

static void
test_valid_jwks(void **state)
{
    expect(mint("RS256", "rsa-1", claims(ISS_JWKS), NULL, S.rsa), POL_AUTHN_OK);
    expect(mint("RS256", "rsa-2", claims(ISS_JWKS), NULL, S.rsa2), POL_AUTHN_OK);
    expect(mint("ES256", "ec-1", claims(ISS_JWKS), NULL, S.ec), POL_AUTHN_OK);
    /* The kid picks the key: rsa-1's kid with rsa-2's signature fails. */
    expect(mint("RS256", "rsa-1", claims(ISS_JWKS), NULL, S.rsa2), POL_AUTHN_BAD_SIGNATURE);
    /* The kid's key must fit the algorithm. */
    expect(mint("RS256", "ec-1", claims(ISS_JWKS), NULL, S.rsa), POL_AUTHN_ALGORITHM_REFUSED);
    expect(mint("ES256", "rsa-1", claims(ISS_JWKS), NULL, S.ec), POL_AUTHN_ALGORITHM_REFUSED);
    /* Keys that were skipped at load are not there. */
    expect(mint("RS256", "enc-1", claims(ISS_JWKS), NULL, S.rsa2), POL_AUTHN_UNKNOWN_KID);
    expect(mint("HS256", "sym", claims(ISS_JWKS), "secret", NULL), POL_AUTHN_ALGORITHM_REFUSED);
    /* Without a kid: one EC key, so ES256 is unambiguous; two RSA keys, so RS256 is not. */
    expect(mint("ES256", NULL, claims(ISS_JWKS), NULL, S.ec), POL_AUTHN_OK);
    expect(mint("RS256", NULL, claims(ISS_JWKS), NULL, S.rsa), POL_AUTHN_UNKNOWN_KID);
}

static void
test_unknown_kid(void **state)
{
    expect(mint("RS256", "nope", claims(ISS_JWKS), NULL, S.rsa), POL_AUTHN_UNKNOWN_KID);
    expect(mint("ES256", "", claims(ISS_JWKS), NULL, S.ec), POL_AUTHN_UNKNOWN_KID);
    expect(mint("RS256", "RSA-1", claims(ISS_JWKS), NULL, S.rsa), POL_AUTHN_UNKNOWN_KID); /* case matters */
    /* kid must be a string. */
    expect(sign_raw("{\"alg\":\"RS256\",\"kid\":1}",
                    "{\"iss\":\"https://jwks.example\",\"aud\":\"triplane\",\"sub\":\"a\",\"exp\":1700003600}", "RS256",
                    NULL, S.rsa),
           POL_AUTHN_MALFORMED);
}

/* ---- attacks ---- */

static void
test_alg_none(void **state)
{
    static const char *const nones[] = { "none", "NONE", "None", "nOnE" };
    for (size_t i = 0; i < sizeof(nones) / sizeof(nones[0]); i++) {
        for (int iss = 0; iss < ISS_COUNT; iss++) {
            char header[64];
            snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", nones[i]);
            json_t *c = claims(iss);
            char *payload = json_dumps(c, JSON_COMPACT);
            /* Unsigned, as RFC 7519 6.1 writes it (empty signature). */
            expect(sign_raw(header, payload, NULL, NULL, NULL), POL_AUTHN_ALGORITHM_REFUSED);
            /* With a valid HS256 signature attached, in case "none" were mapped to a key. */
            expect(sign_raw(header, payload, "HS256", HS_SECRET, NULL), POL_AUTHN_ALGORITHM_REFUSED);
            free(payload);
            json_decref(c);
        }
    }
    /* Unsigned with no signature part at all. */
    char *h = b64url_str("{\"alg\":\"none\"}"), *p = b64url_str("{\"iss\":\"https://hs.example\"}");
    char *t = malloc(strlen(h) + strlen(p) + 2);
    sprintf(t, "%s.%s", h, p);
    expect(t, POL_AUTHN_MALFORMED);
    free(h);
    free(p);
}

/* The classic confusion: the attacker knows the RSA public key (it is public) and signs an HS256
 * token with its PEM text as the HMAC secret, hoping the verifier hands "the key" to HMAC. */
static void
test_hs_rs_confusion(void **state)
{
    /* Against an issuer that allows RS256 (and PS256) only: HS256 is not allowed. */
    expect(mint("HS256", NULL, claims(ISS_RS), S.rsa_pub_pem, NULL), POL_AUTHN_ALGORITHM_REFUSED);
    /* Against an issuer that allows HS256 and RS256: HS256 uses hs_secret, never the RSA key. */
    expect(mint("HS256", NULL, claims(ISS_BOTH), S.rsa_pub_pem, NULL), POL_AUTHN_BAD_SIGNATURE);
    /* Also without the PEM's trailing newline, and against the JWKS issuer with a kid. */
    char *trimmed = strdup(S.rsa_pub_pem);
    trimmed[strlen(trimmed) - 1] = '\0';
    expect(mint("HS256", NULL, claims(ISS_BOTH), trimmed, NULL), POL_AUTHN_BAD_SIGNATURE);
    expect(mint("HS256", "rsa-1", claims(ISS_JWKS), S.rsa_pub_pem, NULL), POL_AUTHN_ALGORITHM_REFUSED);
    free(trimmed);
    /* Both legitimate credentials of the mixed issuer still work. */
    expect(mint("HS256", NULL, claims(ISS_BOTH), HS_OTHER, NULL), POL_AUTHN_OK);
    expect(mint("RS256", NULL, claims(ISS_BOTH), NULL, S.rsa), POL_AUTHN_OK);

    /* The forged token is well made: an issuer whose hs_secret *is* the PEM text accepts it, so
     * the rejections above come from key selection, not from a broken forgery. */
    tp_jwt_issuer_config_t c = issuer_config(ISS_BOTH);
    c.hs_secret = S.rsa_pub_pem;
    char *err = NULL;
    pol_jwt_verifier_t *naive = pol_jwt_verifier_new(&c, 1, &err);
    assert_non_null(naive);
    char *t = mint("HS256", NULL, claims(ISS_BOTH), S.rsa_pub_pem, NULL);
    pol_principal_t p;
    assert_int_equal(pol_jwt_verify(naive, t, strlen(t), NOW, &p), POL_AUTHN_OK);
    pol_principal_clear(&p);
    free(t);
    pol_jwt_verifier_free(naive);
}

static void
test_alg_not_allowed(void **state)
{
    expect(mint("HS384", NULL, claims(ISS_HS), HS_SECRET, NULL), POL_AUTHN_ALGORITHM_REFUSED);
    expect(mint("RS512", NULL, claims(ISS_RS), NULL, S.rsa), POL_AUTHN_ALGORITHM_REFUSED);
    expect(mint("RS256", NULL, claims(ISS_HS), NULL, S.rsa), POL_AUTHN_ALGORITHM_REFUSED);
    expect(mint("ES256", NULL, claims(ISS_RS), NULL, S.ec), POL_AUTHN_ALGORITHM_REFUSED);
    /* JWA names are case-sensitive, and unknown names are refused. */
    json_t *c = claims(ISS_HS);
    char *payload = json_dumps(c, JSON_COMPACT);
    expect(sign_raw("{\"alg\":\"hs256\"}", payload, "HS256", HS_SECRET, NULL), POL_AUTHN_ALGORITHM_REFUSED);
    expect(sign_raw("{\"alg\":\"XS256\"}", payload, "HS256", HS_SECRET, NULL), POL_AUTHN_ALGORITHM_REFUSED);
    expect(sign_raw("{\"alg\":\"HS256 \"}", payload, "HS256", HS_SECRET, NULL), POL_AUTHN_ALGORITHM_REFUSED);
    /* alg missing or not a string: malformed. */
    expect(sign_raw("{\"typ\":\"JWT\"}", payload, "HS256", HS_SECRET, NULL), POL_AUTHN_MALFORMED);
    expect(sign_raw("{\"alg\":[\"HS256\"]}", payload, "HS256", HS_SECRET, NULL), POL_AUTHN_MALFORMED);
    /* Duplicate names: a parser keeping the first "alg" and one keeping the last must not disagree. */
    expect(sign_raw("{\"alg\":\"HS256\",\"alg\":\"none\"}", payload, "HS256", HS_SECRET, NULL), POL_AUTHN_MALFORMED);
    /* A critical extension we do not understand. */
    expect(sign_raw("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", payload, "HS256", HS_SECRET, NULL),
           POL_AUTHN_MALFORMED);
    free(payload);
    json_decref(c);

    /* Headers that point at keys (or carry one) are ignored: the configured key still decides. */
    c = claims(ISS_RS);
    payload = json_dumps(c, JSON_COMPACT);
    expect(sign_raw("{\"alg\":\"RS256\",\"jku\":\"https://evil.example/jwks\",\"x5u\":\"https://evil.example/c\"}",
                    payload, "RS256", NULL, S.rsa2),
           POL_AUTHN_BAD_SIGNATURE);
    json_t *attacker_jwk = jwk_rsa(S.rsa2, NULL, NULL);
    json_t *hdr = json_pack("{s:s, s:o}", "alg", "RS256", "jwk", attacker_jwk);
    char *hdr_text = json_dumps(hdr, JSON_COMPACT);
    expect(sign_raw(hdr_text, payload, "RS256", NULL, S.rsa2), POL_AUTHN_BAD_SIGNATURE);
    free(hdr_text);
    json_decref(hdr);
    free(payload);
    json_decref(c);
}

static void
test_expired_and_leeway(void **state)
{
    json_t *c;

    c = claims(ISS_HS);
    json_object_set_new(c, "exp", json_integer(NOW - LEEWAY - 1));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_EXPIRED);
    c = claims(ISS_HS);
    json_object_set_new(c, "exp", json_integer(NOW - LEEWAY));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_EXPIRED);
    /* Within the leeway: accepted. */
    c = claims(ISS_HS);
    json_object_set_new(c, "exp", json_integer(NOW - LEEWAY + 1));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_OK);
    c = claims(ISS_HS);
    json_object_set_new(c, "exp", json_real((double)NOW - LEEWAY + 0.5)); /* NumericDate may be fractional */
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_OK);

    /* An issuer with no leeway: exp == now is expired, now + 1 is not. */
    c = claims(ISS_EC);
    json_object_set_new(c, "exp", json_integer(NOW));
    expect(mint("ES256", NULL, c, NULL, S.ec), POL_AUTHN_EXPIRED);
    c = claims(ISS_EC);
    json_object_set_new(c, "exp", json_integer(NOW + 1));
    expect(mint("ES256", NULL, c, NULL, S.ec), POL_AUTHN_OK);

    /* The same token, before and after it expires. */
    char *t = mint("HS256", NULL, claims(ISS_HS), HS_SECRET, NULL);
    expect_at(strdup(t), NOW + 3600 + LEEWAY - 1, POL_AUTHN_OK);
    expect_at(strdup(t), NOW + 3600 + LEEWAY, POL_AUTHN_EXPIRED);
    free(t);

    /* An expired token with a bad signature says bad signature: claims are read only after. */
    c = claims(ISS_HS);
    json_object_set_new(c, "exp", json_integer(NOW - 1000));
    expect(mint("HS256", NULL, c, HS_OTHER, NULL), POL_AUTHN_BAD_SIGNATURE);
}

static void
test_not_yet_valid(void **state)
{
    json_t *c;

    c = claims(ISS_HS);
    json_object_set_new(c, "nbf", json_integer(NOW + LEEWAY + 1));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_NOT_YET_VALID);
    c = claims(ISS_HS);
    json_object_set_new(c, "nbf", json_integer(NOW + LEEWAY));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_OK);
    c = claims(ISS_HS);
    json_object_set_new(c, "nbf", json_integer(NOW - 10));
    json_object_set_new(c, "iat", json_integer(NOW - 10));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_OK);
    /* Issued in the future. */
    c = claims(ISS_HS);
    json_object_set_new(c, "iat", json_integer(NOW + LEEWAY + 120));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_NOT_YET_VALID);
    /* No leeway: nbf one second ahead. */
    c = claims(ISS_EC);
    json_object_set_new(c, "nbf", json_integer(NOW + 1));
    expect(mint("ES256", NULL, c, NULL, S.ec), POL_AUTHN_NOT_YET_VALID);
    /* nbf of the wrong type. */
    c = claims(ISS_HS);
    json_object_set_new(c, "nbf", json_string("soon"));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_BAD_CLAIMS);
}

static void
test_missing_exp(void **state)
{
    json_t *c = claims(ISS_HS);
    json_object_del(c, "exp");
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_BAD_CLAIMS);
    c = claims(ISS_HS);
    json_object_set_new(c, "exp", json_string("1700003600"));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_BAD_CLAIMS);
    c = claims(ISS_HS);
    json_object_set_new(c, "exp", json_null());
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_BAD_CLAIMS);
}

static void
test_audience(void **state)
{
    json_t *c;

    c = claims(ISS_HS);
    json_object_set_new(c, "aud", json_string("someone-else"));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_WRONG_AUDIENCE);
    c = claims(ISS_HS);
    json_object_set_new(c, "aud", json_string("other")); /* the issuer's second audience */
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_OK);
    c = claims(ISS_HS);
    json_object_set_new(c, "aud", json_pack("[s,s]", "someone-else", "triplane"));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_OK);
    c = claims(ISS_HS);
    json_object_set_new(c, "aud", json_pack("[s,s]", "a", "b"));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_WRONG_AUDIENCE);
    c = claims(ISS_HS);
    json_object_set_new(c, "aud", json_array());
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_WRONG_AUDIENCE);
    c = claims(ISS_HS);
    json_object_set_new(c, "aud", json_string("Triplane")); /* exact match */
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_WRONG_AUDIENCE);
    c = claims(ISS_HS);
    json_object_del(c, "aud");
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_WRONG_AUDIENCE);
    c = claims(ISS_HS);
    json_object_set_new(c, "aud", json_integer(5));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_BAD_CLAIMS);
}

static void
test_issuer(void **state)
{
    json_t *c;

    /* Unknown issuer, even when signed with a configured secret. */
    c = claims(ISS_HS);
    json_object_set_new(c, "iss", json_string("https://evil.example"));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_UNKNOWN_ISSUER);
    c = claims(ISS_HS);
    json_object_set_new(c, "iss", json_string("https://hs.example/")); /* exact match */
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_UNKNOWN_ISSUER);
    c = claims(ISS_HS);
    json_object_del(c, "iss");
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_UNKNOWN_ISSUER);
    c = claims(ISS_HS);
    json_object_set_new(c, "iss", json_integer(1));
    expect(mint("HS256", NULL, c, HS_SECRET, NULL), POL_AUTHN_UNKNOWN_ISSUER);
    /* Wrong issuer: a token made with hs.example's secret that claims to come from both.example. */
    expect(mint("HS256", NULL, claims(ISS_BOTH), HS_SECRET, NULL), POL_AUTHN_BAD_SIGNATURE);
    /* ... or from rs.example, with rs.example's key type but a key of its own. */
    expect(mint("RS256", NULL, claims(ISS_RS), NULL, S.rsa2), POL_AUTHN_BAD_SIGNATURE);
}

/* Replaces the payload of a signed token, keeping its header and signature. */
static char *
swap_payload(const char *token, json_t *c)
{
    char *cs = json_dumps(c, JSON_COMPACT), *p = b64url_str(cs);
    const char *dot1 = strchr(token, '.'), *dot2 = strrchr(token, '.');
    char *out = malloc(strlen(token) + strlen(p) + 1);
    sprintf(out, "%.*s.%s%s", (int)(dot1 - token), token, p, dot2);
    free(cs);
    free(p);
    json_decref(c);
    return out;
}

static void
test_tampered_payload(void **state)
{
    struct {
        const char *alg;
        int iss;
        const char *secret;
        EVP_PKEY *pkey;
    } cases[] = {
        { "HS256", ISS_HS, HS_SECRET, NULL },
        { "RS256", ISS_RS, NULL, S.rsa },
        { "PS256", ISS_RS, NULL, S.rsa },
        { "ES256", ISS_EC, NULL, S.ec },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = mint(cases[i].alg, NULL, claims(cases[i].iss), cases[i].secret, cases[i].pkey);
        expect(strdup(t), POL_AUTHN_OK);
        json_t *c = claims(cases[i].iss);
        json_object_set_new(c, "sub", json_string("admin")); /* flip the principal */
        expect(swap_payload(t, c), POL_AUTHN_BAD_SIGNATURE);
        c = claims(cases[i].iss);
        json_object_set_new(c, "exp", json_integer(NOW + 999999)); /* extend the lifetime */
        expect(swap_payload(t, c), POL_AUTHN_BAD_SIGNATURE);
        c = claims(cases[i].iss);
        json_object_set_new(c, "roles", json_string("admin")); /* add a claim */
        expect(swap_payload(t, c), POL_AUTHN_BAD_SIGNATURE);
        free(t);
    }
}

static void
test_tampered_signature(void **state)
{
    struct {
        const char *alg;
        int iss;
        const char *secret;
        EVP_PKEY *pkey;
    } cases[] = {
        { "HS256", ISS_HS, HS_SECRET, NULL },
        { "RS256", ISS_RS, NULL, S.rsa },
        { "ES256", ISS_EC, NULL, S.ec },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = mint(cases[i].alg, NULL, claims(cases[i].iss), cases[i].secret, cases[i].pkey);
        size_t len = strlen(t);
        size_t sig_at = (size_t)(strrchr(t, '.') - t) + 1;
        /* Every single-character change anywhere in the signature is caught, including in the
         * last character, whose unused low bits a lax decoder would ignore. */
        for (size_t pos = sig_at; pos < len; pos++) {
            char *m = strdup(t);
            m[pos] = m[pos] == 'A' ? 'B' : 'A';
            pol_authn_status_t st = verify_at(m, NOW);
            if (st != POL_AUTHN_BAD_SIGNATURE && st != POL_AUTHN_MALFORMED)
                fail_msg("%s: signature changed at %zu: %s", cases[i].alg, pos - sig_at, pol_authn_status_name(st));
            free(m);
        }
        /* Truncated (which may also leave a non-canonical last character), extended, emptied. */
        char *m = strndup(t, len - 4);
        pol_authn_status_t st = verify_at(m, NOW);
        assert_true(st == POL_AUTHN_BAD_SIGNATURE || st == POL_AUTHN_MALFORMED);
        free(m);
        m = malloc(len + 5);
        sprintf(m, "%sAAAA", t);
        expect(m, POL_AUTHN_BAD_SIGNATURE);
        m = strndup(t, sig_at);
        expect(m, POL_AUTHN_BAD_SIGNATURE);
        free(t);
    }
}

/* ---- claims ---- */

static pol_principal_t
verify_ok(char *token)
{
    pol_principal_t p;
    pol_authn_status_t st = pol_jwt_verify(S.v, token, strlen(token), NOW, &p);
    if (st != POL_AUTHN_OK)
        fail_msg("got %s, want ok", pol_authn_status_name(st));
    free(token);
    return p;
}

static void
test_claims_mapping(void **state)
{
    json_t *c;
    pol_principal_t p;

    /* Custom claim names: email, pkind, org, scope (roles as a space-separated string). */
    c = claims(ISS_CLAIMS);
    json_object_set_new(c, "email", json_string("robot@example.com"));
    json_object_set_new(c, "pkind", json_string("agent"));
    json_object_set_new(c, "org", json_string("research"));
    json_object_set_new(c, "scope", json_string(" read  write admin "));
    json_object_set_new(c, "kind", json_string("bogus")); /* the default names mean nothing here */
    json_object_set_new(c, "roles", json_integer(7));
    p = verify_ok(mint("HS256", NULL, c, HS_SECRET, NULL));
    assert_string_equal(p.id, "robot@example.com");
    assert_int_equal(p.kind, POL_KIND_AGENT);
    assert_string_equal(p.team, "research");
    assert_int_equal(p.num_roles, 3);
    assert_string_equal(p.roles[0], "read");
    assert_string_equal(p.roles[1], "write");
    assert_string_equal(p.roles[2], "admin");
    assert_true(pol_principal_has_role(&p, "write"));
    assert_true(p.enabled);
    pol_principal_clear(&p);

    /* Roles as an array; kind absent: default_kind (service). */
    c = claims(ISS_CLAIMS);
    json_object_set_new(c, "email", json_string("svc@example.com"));
    json_object_set_new(c, "scope", json_pack("[s,s]", "deploy", "read"));
    p = verify_ok(mint("HS256", NULL, c, HS_SECRET, NULL));
    assert_string_equal(p.id, "svc@example.com");
    assert_int_equal(p.kind, POL_KIND_SERVICE);
    assert_null(p.team);
    assert_int_equal(p.num_roles, 2);
    assert_string_equal(p.roles[0], "deploy");
    assert_string_equal(p.roles[1], "read");
    pol_principal_clear(&p);

    /* Default names: kind, team and roles; null counts as absent. */
    c = claims(ISS_HS);
    json_object_set_new(c, "kind", json_string("service"));
    json_object_set_new(c, "team", json_null());
    json_object_set_new(c, "roles", json_pack("[s]", "viewer"));
    p = verify_ok(mint("HS256", NULL, c, HS_SECRET, NULL));
    assert_int_equal(p.kind, POL_KIND_SERVICE);
    assert_null(p.team);
    assert_int_equal(p.num_roles, 1);
    pol_principal_clear(&p);

    /* The principal claim is required, even when sub is there. */
    expect(mint("HS256", NULL, claims(ISS_CLAIMS), HS_SECRET, NULL), POL_AUTHN_BAD_CLAIMS);

    struct {
        const char *name;
        json_t *value;
    } bad[] = {
        { "email", json_integer(42) },     { "email", json_string("") },
        { "pkind", json_string("robot") }, { "pkind", json_string("User") },
        { "pkind", json_integer(1) },      { "org", json_integer(3) },
        { "org", json_pack("[s]", "a") },  { "scope", json_pack("[s,i]", "a", 1) },
        { "scope", json_object() },        { "scope", json_true() },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = claims(ISS_CLAIMS);
        json_object_set_new(c, "email", json_string("x@example.com"));
        json_object_set_new(c, bad[i].name, bad[i].value);
        char *t = mint("HS256", NULL, c, HS_SECRET, NULL);
        pol_authn_status_t st = verify_at(t, NOW);
        if (st != POL_AUTHN_BAD_CLAIMS)
            fail_msg("bad claim #%zu (%s): got %s", i, bad[i].name, pol_authn_status_name(st));
        free(t);
    }
}

/* ---- malformed and overlong ---- */

static void
test_malformed(void **state)
{
    json_t *c = claims(ISS_HS);
    char *payload = json_dumps(c, JSON_COMPACT);
    char *good = mint("HS256", NULL, claims(ISS_HS), HS_SECRET, NULL);
    char *h = b64url_str("{\"alg\":\"HS256\"}"), *p = b64url_str(payload);
    char buf[2048];

    static const char *const plain[] = {
        "", "abc", "a.b", ".", "..", "...", "a..b", ".a.b", "eyJ.eyJ.sig", "Bearer x.y.z", "tp_abc_def",
    };
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        expect(strdup(plain[i]), POL_AUTHN_MALFORMED);

    /* Four and five parts (JWE has five). */
    snprintf(buf, sizeof(buf), "%s.x", good);
    expect(strdup(buf), POL_AUTHN_MALFORMED);
    snprintf(buf, sizeof(buf), "%s.x.y", good);
    expect(strdup(buf), POL_AUTHN_MALFORMED);
    /* Padding, standard base64 characters, whitespace. */
    snprintf(buf, sizeof(buf), "%s=.%s.sig", h, p);
    expect(strdup(buf), POL_AUTHN_MALFORMED);
    snprintf(buf, sizeof(buf), "%s.%s.ab+/", h, p);
    expect(strdup(buf), POL_AUTHN_MALFORMED);
    snprintf(buf, sizeof(buf), " %s", good);
    expect(strdup(buf), POL_AUTHN_MALFORMED);
    snprintf(buf, sizeof(buf), "%s\n", good);
    expect(strdup(buf), POL_AUTHN_MALFORMED);
    /* Header or payload not JSON, not an object, or with trailing bytes. */
    expect(sign_raw("not json", payload, "HS256", HS_SECRET, NULL), POL_AUTHN_MALFORMED);
    expect(sign_raw("[\"HS256\"]", payload, "HS256", HS_SECRET, NULL), POL_AUTHN_MALFORMED);
    expect(sign_raw("{\"alg\":\"HS256\"} x", payload, "HS256", HS_SECRET, NULL), POL_AUTHN_MALFORMED);
    expect(sign_raw("{\"alg\":\"HS256\"}", "\"a string\"", "HS256", HS_SECRET, NULL), POL_AUTHN_MALFORMED);
    expect(sign_raw("{\"alg\":\"HS256\"}", "{\"iss\":", "HS256", HS_SECRET, NULL), POL_AUTHN_MALFORMED);
    expect(sign_raw("{\"alg\":\"HS256\"}",
                    "{\"iss\":\"https://hs.example\",\"sub\":\"a\",\"sub\":\"admin\",\"aud\":\"triplane\","
                    "\"exp\":1700003600}",
                    "HS256", HS_SECRET, NULL),
           POL_AUTHN_MALFORMED);
    /* A NUL inside a claim string. */
    expect(sign_raw("{\"alg\":\"HS256\"}",
                    "{\"iss\":\"https://hs.example\",\"sub\":\"a\\u0000b\",\"aud\":\"triplane\",\"exp\":1700003600}",
                    "HS256", HS_SECRET, NULL),
           POL_AUTHN_MALFORMED);
    free(h);
    free(p);
    free(good);
    free(payload);
    json_decref(c);
}

static void
test_overlong(void **state)
{
    /* Properly signed tokens around the cap: up to POL_JWT_MAX_LEN they verify, past it they are
     * refused unread. The padding claim grows one byte at a time across the boundary. */
    size_t filler = 12000, last_ok = 0, first_over = 0;
    char *pad = malloc(POL_JWT_MAX_LEN);
    while (first_over == 0) {
        assert_true(filler < POL_JWT_MAX_LEN);
        memset(pad, 'x', filler);
        pad[filler] = '\0';
        json_t *c = claims(ISS_HS);
        json_object_set_new(c, "pad", json_string(pad));
        char *t = mint("HS256", NULL, c, HS_SECRET, NULL);
        size_t len = strlen(t);
        pol_authn_status_t st = verify_at(t, NOW);
        if (len <= POL_JWT_MAX_LEN) {
            assert_int_equal(st, POL_AUTHN_OK);
            last_ok = len;
            filler += len + 64 < POL_JWT_MAX_LEN ? (POL_JWT_MAX_LEN - len) / 2 : 1;
        } else {
            assert_int_equal(st, POL_AUTHN_MALFORMED);
            first_over = len;
        }
        free(t);
    }
    assert_true(last_ok > POL_JWT_MAX_LEN - 4);
    free(pad);

    /* Far over the cap. */
    size_t big = 1 << 20;
    char *huge = malloc(big + 1);
    memset(huge, 'A', big);
    huge[10] = '.';
    huge[20] = '.';
    huge[big] = '\0';
    expect(huge, POL_AUTHN_MALFORMED);
}

/* ---- loading keys ---- */

static void
expect_load_error(tp_jwt_issuer_config_t *c, size_t n, const char *needle1, const char *needle2)
{
    char *err = NULL;
    pol_jwt_verifier_t *v = pol_jwt_verifier_new(c, n, &err);
    assert_null(v);
    assert_non_null(err);
    if (strstr(err, needle1) == NULL || (needle2 != NULL && strstr(err, needle2) == NULL))
        fail_msg("error \"%s\" does not mention \"%s\" and \"%s\"", err, needle1, needle2 ? needle2 : "");
    free(err);
}

static void
test_load_errors(void **state)
{
    char path[160], path2[160];
    tp_jwt_issuer_config_t c;

    c = issuer_config(ISS_RS);
    snprintf(path, sizeof(path), "%s/missing.pem", S.dir);
    c.public_key_file = path;
    expect_load_error(&c, 1, "https://rs.example", "missing.pem");

    /* A private key is not a public key file. */
    snprintf(path, sizeof(path), "%s/private.pem", S.dir);
    FILE *f = fopen(path, "w");
    PEM_write_PrivateKey(f, S.rsa, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    c.public_key_file = path;
    expect_load_error(&c, 1, "https://rs.example", "private.pem");
    unlink(path);

    /* RSA keys under 2048 bits are refused. */
    EVP_PKEY *small = EVP_RSA_gen(1024);
    char *small_pem = pub_pem(small);
    snprintf(path, sizeof(path), "%s/small.pem", S.dir);
    write_file(path, small_pem);
    expect_load_error(&c, 1, "small.pem", "1024 bits");
    unlink(path);
    free(small_pem);

    /* ES384 allowed, but the only key is P-256. */
    c = issuer_config(ISS_EC);
    char *es384[] = { "ES384" };
    c.algorithms = es384;
    expect_load_error(&c, 1, "https://ec.example", "ES384");
    /* An RSA algorithm with only an EC key. */
    char *rs256[] = { "RS256" };
    c.algorithms = rs256;
    expect_load_error(&c, 1, "https://ec.example", "RS256");

    /* HS without a secret, or with a short one; none; unknown algorithms. */
    c = issuer_config(ISS_HS);
    c.hs_secret = NULL;
    expect_load_error(&c, 1, "https://hs.example", "hs_secret");
    c.hs_secret = "short";
    expect_load_error(&c, 1, "https://hs.example", "hs_secret");
    c = issuer_config(ISS_HS);
    char *none[] = { "none" };
    c.algorithms = none;
    expect_load_error(&c, 1, "https://hs.example", "none");
    c.algorithm_count = 0;
    expect_load_error(&c, 1, "https://hs.example", "algorithm");
    c = issuer_config(ISS_HS);
    c.audience_count = 0;
    expect_load_error(&c, 1, "https://hs.example", "audience");
    c = issuer_config(ISS_HS);
    c.default_kind = "robot";
    expect_load_error(&c, 1, "https://hs.example", "robot");

    /* The same issuer twice. */
    tp_jwt_issuer_config_t two[2] = { issuer_config(ISS_HS), issuer_config(ISS_HS) };
    expect_load_error(two, 2, "https://hs.example", "twice");

    /* Broken JWKS files: not JSON (with the line), no keys, bad members, off-curve point. */
    c = issuer_config(ISS_JWKS);
    snprintf(path2, sizeof(path2), "%s/bad.json", S.dir);
    c.jwks_file = path2;
    write_file(path2, "{\n  \"keys\": [\n    {\"kty\": \"RSA\",}\n  ]\n}\n");
    expect_load_error(&c, 1, "bad.json", "line 3");
    write_file(path2, "{\"nokeys\": []}");
    expect_load_error(&c, 1, "https://jwks.example", "\"keys\"");
    write_file(path2, "{\"keys\": [{\"kty\": \"oct\", \"k\": \"AAAA\"}]}");
    expect_load_error(&c, 1, "bad.json", "no RSA or EC");
    write_file(path2, "{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQAB\"}]}");
    expect_load_error(&c, 1, "keys[0]", "n and e");
    write_file(path2, "{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQ+B\", \"e\": \"AQAB\"}]}");
    expect_load_error(&c, 1, "keys[0]", "n and e");

    json_t *k = jwk_ec(S.ec, "ec-x", "P-256", 32);
    char *ys = strdup(json_string_value(json_object_get(k, "y")));
    ys[5] = ys[5] == 'A' ? 'B' : 'A'; /* move y off the curve */
    json_object_set_new(k, "y", json_string(ys));
    free(ys);
    write_jwks(path2, json_pack("[o]", k));
    expect_load_error(&c, 1, "keys[0]", "not a point");

    k = jwk_ec(S.ec, "ec-x", "P-384", 32);
    write_jwks(path2, json_pack("[o]", k));
    expect_load_error(&c, 1, "keys[0]", "48 bytes");

    write_jwks(path2, json_pack("[o,o]", jwk_rsa(S.rsa, "dup", NULL), jwk_rsa(S.rsa2, "dup", NULL)));
    expect_load_error(&c, 1, "keys[1]", "dup");

    write_jwks(path2, json_pack("[o]", jwk_rsa(S.rsa, "k", "ES256")));
    expect_load_error(&c, 1, "keys[0]", "ES256");

    write_jwks(path2, json_pack("[o]", jwk_rsa(small, "k", NULL)));
    expect_load_error(&c, 1, "keys[0]", "1024 bits");
    EVP_PKEY_free(small);
    unlink(path2);

    /* err may be NULL. */
    c = issuer_config(ISS_HS);
    c.hs_secret = NULL;
    assert_null(pol_jwt_verifier_new(&c, 1, NULL));
    /* No issuers at all is a verifier that knows no issuer. */
    pol_jwt_verifier_t *empty = pol_jwt_verifier_new(NULL, 0, NULL);
    assert_non_null(empty);
    pol_principal_t pr;
    char *t = mint("HS256", NULL, claims(ISS_HS), HS_SECRET, NULL);
    assert_int_equal(pol_jwt_verify(empty, t, strlen(t), NOW, &pr), POL_AUTHN_UNKNOWN_ISSUER);
    free(t);
    pol_jwt_verifier_free(empty);
    pol_jwt_verifier_free(NULL);
}

/* ---- libjwt interoperability ---- */

static char *
libjwt_mint(jwt_alg_t alg, const char *iss, const unsigned char *key, int key_len)
{
    jwt_t *j = NULL;
    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(jwt_add_grant(j, "iss", iss), 0);
    assert_int_equal(jwt_add_grant(j, "aud", "triplane"), 0);
    assert_int_equal(jwt_add_grant(j, "sub", "from-libjwt"), 0);
    assert_int_equal(jwt_add_grant_int(j, "exp", (long)(NOW + 600)), 0);
    assert_int_equal(jwt_set_alg(j, alg, key, key_len), 0);
    char *t = jwt_encode_str(j);
    assert_non_null(t);
    jwt_free(j);
    return t;
}

static char *
private_pem(EVP_PKEY *pkey, int *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL), 1);
    return bio_text(b, len);
}

static void
test_libjwt_tokens(void **state)
{
    int len;
    expect(libjwt_mint(JWT_ALG_HS256, iss_names[ISS_HS], (const unsigned char *)HS_SECRET, (int)strlen(HS_SECRET)),
           POL_AUTHN_OK);
    char *pem = private_pem(S.rsa, &len);
    expect(libjwt_mint(JWT_ALG_RS256, iss_names[ISS_RS], (const unsigned char *)pem, len), POL_AUTHN_OK);
    free(pem);
    pem = private_pem(S.ec, &len);
    expect(libjwt_mint(JWT_ALG_ES256, iss_names[ISS_EC], (const unsigned char *)pem, len), POL_AUTHN_OK);
    free(pem);
}

/* ---- threads ---- */

enum { THREADS = 4, ROUNDS = 50 };
static char *thread_tokens[3];

static void *
verify_thread(void *arg)
{
    intptr_t failures = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < 3; i++) {
            pol_principal_t p;
            const char *t = thread_tokens[(i + (intptr_t)arg) % 3];
            if (pol_jwt_verify(S.v, t, strlen(t), NOW, &p) != POL_AUTHN_OK || strcmp(p.id, "alice") != 0)
                failures++;
            pol_principal_clear(&p);
        }
    }
    return (void *)failures;
}

static void
test_threads(void **state)
{
    pthread_t th[THREADS];
    thread_tokens[0] = mint("HS256", NULL, claims(ISS_HS), HS_SECRET, NULL);
    thread_tokens[1] = mint("RS256", "rsa-1", claims(ISS_JWKS), NULL, S.rsa);
    thread_tokens[2] = mint("ES256", NULL, claims(ISS_EC), NULL, S.ec);
    for (intptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, verify_thread, (void *)i), 0);
    for (int i = 0; i < THREADS; i++) {
        void *failures;
        assert_int_equal(pthread_join(th[i], &failures), 0);
        assert_int_equal((intptr_t)failures, 0);
    }
    for (int i = 0; i < 3; i++)
        free(thread_tokens[i]);
}

/* ---- cost ---- */

static double
ns_per_verify(const char *token, int n)
{
    struct timespec t0, t1;
    size_t len = strlen(token);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        pol_principal_t p;
        assert_int_equal(pol_jwt_verify(S.v, token, len, NOW, &p), POL_AUTHN_OK);
        pol_principal_clear(&p);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / n;
}

static void
test_cost(void **state)
{
    struct {
        const char *name;
        char *token;
        int n;
    } cases[] = {
        { "HS256", mint("HS256", NULL, claims(ISS_HS), HS_SECRET, NULL), 20000 },
        { "RS256", mint("RS256", NULL, claims(ISS_RS), NULL, S.rsa), 2000 },
        { "PS256", mint("PS256", NULL, claims(ISS_RS), NULL, S.rsa), 2000 },
        { "ES256", mint("ES256", NULL, claims(ISS_EC), NULL, S.ec), 2000 },
        { "RS256 (JWKS, kid)", mint("RS256", "rsa-1", claims(ISS_JWKS), NULL, S.rsa), 2000 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        printf("# pol_jwt_verify %s: %.0f ns/op\n", cases[i].name, ns_per_verify(cases[i].token, cases[i].n));
        free(cases[i].token);
    }

    /* For comparison, libjwt 1.10's jwt_decode on an RS256 token: it parses the PEM every time. */
    char *t = mint("RS256", NULL, claims(ISS_RS), NULL, S.rsa);
    struct timespec t0, t1;
    int n = 500;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        jwt_t *j = NULL;
        assert_int_equal(jwt_decode(&j, t, (const unsigned char *)S.rsa_pub_pem, (int)strlen(S.rsa_pub_pem)), 0);
        jwt_free(j);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("# libjwt jwt_decode RS256 (for comparison): %.0f ns/op\n",
           ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / n);
    free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_hs256),
        cmocka_unit_test(test_valid_rs256_ps256_pem),
        cmocka_unit_test(test_valid_es256_pem),
        cmocka_unit_test(test_valid_jwks),
        cmocka_unit_test(test_unknown_kid),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_hs_rs_confusion),
        cmocka_unit_test(test_alg_not_allowed),
        cmocka_unit_test(test_expired_and_leeway),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_missing_exp),
        cmocka_unit_test(test_audience),
        cmocka_unit_test(test_issuer),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_tampered_signature),
        cmocka_unit_test(test_claims_mapping),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_overlong),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_libjwt_tokens),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_cost),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
