/*
 * jwt_verify.h — verifying JWTs (JWS compact form) from the configured issuers, and turning their claims
 * into a principal.
 *
 * Nothing in a token is trusted before its signature is checked with a key chosen by the
 * gateway: the token's `iss` only selects the issuer; its `alg` must be in that issuer's
 * allow-list (`none` never is) and selects a key of the matching type (HS* only the issuer's
 * hs_secret, RS* and PS* only an RSA key, ES* only an EC key on the curve the algorithm names), so
 * a public key can never be used as an HMAC secret; `kid` selects among the issuer's JWKS keys
 * (it is ignored for HS* and for an issuer without a JWKS). Headers that point at keys elsewhere
 * (jku, x5u, jwk, x5c) are ignored: no key is ever fetched or taken from a token.
 *
 * Signatures are checked with OpenSSL directly, not with libjwt 1.10: libjwt parses the PEM key
 * again on every jwt_decode, which with OpenSSL 3's decoders makes an RS256 check cost ~370 µs
 * where this one, with keys parsed once at load, costs ~24 µs (test_jwt prints both); it has no
 * PS* algorithms; and it lets the token's header decide how the key it is given is used. For the
 * same reason JWKS keys are built straight into EVP_PKEYs (EVP_PKEY_fromdata), not into PEM.
 */
#ifndef POL_JWT_VERIFY_H
#define POL_JWT_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "authn.h"
#include "config.h"
#include "principal.h"

/* Longer tokens are refused as malformed before any decoding. */
#define POL_JWT_MAX_LEN 16384

typedef struct pol_jwt_verifier pol_jwt_verifier_t;

/* Builds a verifier for n issuers, reading each issuer's keys: hs_secret for HS*, a PEM public key
 * (RSA of at least 2048 bits, or EC P-256/P-384/P-521) from public_key_file, and the RSA and EC
 * signing keys of a JWKS from jwks_file (keys of other types, or with "use" other than "sig",
 * are skipped). Every allowed algorithm must have a key it can use. The configuration is copied;
 * issuers may be freed afterwards. Returns the verifier, or NULL with *err set to a message naming
 * the issuer and file (free it with free()). The verifier is immutable: any number of threads may
 * call pol_jwt_verify on it at once. */
pol_jwt_verifier_t *pol_jwt_verifier_new(const tp_jwt_issuer_config_t *issuers, size_t n, char **err);

/* Frees the verifier. NULL is allowed. */
void pol_jwt_verifier_free(pol_jwt_verifier_t *v);

/* Verifies token (len bytes, need not be NUL-terminated) at time now_s (Unix seconds), and on
 * POL_AUTHN_OK fills *out with a principal from the issuer's claim mapping: id, kind (or the
 * issuer's default_kind), team and roles (an array of strings or one space-separated string),
 * enabled, no labels. The caller frees it with pol_principal_clear(). On any other status *out is
 * zeroed and owns nothing. The statuses, in the order they are checked:
 *   MALFORMED          empty or longer than POL_JWT_MAX_LEN, not three base64url parts, header or
 *                      payload not a JSON object (duplicate names count), no alg, or a crit header
 *   ALGORITHM_REFUSED  alg `none`, in any case
 *   UNKNOWN_ISSUER     iss missing, not a string, or not configured
 *   ALGORITHM_REFUSED  alg not in the issuer's allow-list, or the kid's key is of another type
 *   UNKNOWN_KID        the issuer has JWKS keys and kid names none of them, or there is no kid and
 *                      more than one of the issuer's keys could verify the algorithm
 *   BAD_SIGNATURE      the signature does not verify
 *   BAD_CLAIMS         exp missing, or exp, nbf or iat not a number
 *   EXPIRED            exp <= now - leeway
 *   NOT_YET_VALID      nbf or iat > now + leeway
 *   WRONG_AUDIENCE     aud missing, or naming none of the issuer's audiences (BAD_CLAIMS when it is
 *                      neither a string nor an array of strings)
 *   BAD_CLAIMS         the principal claim missing or not a non-empty string, kind not a kind
 *                      name, team not a string, roles neither a string nor an array of strings
 * A JSON null counts as absent for the optional kind, team and roles claims. */
pol_authn_status_t pol_jwt_verify(const pol_jwt_verifier_t *v, const char *token, size_t len, int64_t now_s,
                                  pol_principal_t *out);

/* True when the issuer `iss` is configured with stored_principals: its tokens may act as the
 * stored principal with the same id. */
bool pol_jwt_issuer_may_act_as_stored(const pol_jwt_verifier_t *v, const char *iss);

#endif
