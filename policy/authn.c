#include "authn.h"

#include <string.h>
#include <strings.h>

#include "jwt_verify.h"
#include "snapshot.h"

static const struct {
    const char *name;
    const char *message;
} statuses[] = {
    [POL_AUTHN_OK] = { "ok", "authenticated" },
    [POL_AUTHN_MISSING] = { "missing_credentials", "no credentials: send Authorization: Bearer <API key or JWT>" },
    [POL_AUTHN_MALFORMED] = { "malformed_credentials", "the credentials are malformed" },
    [POL_AUTHN_UNKNOWN_KEY] = { "unknown_key", "the API key is not valid" },
    [POL_AUTHN_REVOKED] = { "revoked_key", "the API key was revoked" },
    [POL_AUTHN_EXPIRED] = { "expired", "the credentials have expired" },
    [POL_AUTHN_NOT_YET_VALID] = { "not_yet_valid", "the token is not valid yet" },
    [POL_AUTHN_BAD_SIGNATURE] = { "bad_signature", "the token's signature does not verify" },
    [POL_AUTHN_UNKNOWN_ISSUER] = { "unknown_issuer", "the token's issuer is not trusted" },
    [POL_AUTHN_WRONG_AUDIENCE] = { "wrong_audience", "the token is not meant for this gateway (audience)" },
    [POL_AUTHN_ALGORITHM_REFUSED] = { "algorithm_refused", "the token's signature algorithm is not accepted" },
    [POL_AUTHN_UNKNOWN_KID] = { "unknown_kid", "the token's key id is not known" },
    [POL_AUTHN_BAD_CLAIMS] = { "bad_claims", "the token lacks a required claim" },
    [POL_AUTHN_DISABLED] = { "principal_disabled", "the principal is disabled" },
    [POL_AUTHN_PRINCIPAL_CONFLICT] = { "principal_conflict",
                                       "the token names a principal that its issuer may not act as" },
};

const char *
pol_authn_status_name(pol_authn_status_t status)
{
    return (unsigned)status < sizeof(statuses) / sizeof(statuses[0]) ? statuses[status].name : "unknown";
}

const char *
pol_authn_status_message(pol_authn_status_t status)
{
    return (unsigned)status < sizeof(statuses) / sizeof(statuses[0]) ? statuses[status].message : "not authenticated";
}

/* Strips "Bearer " (any case, then spaces) and surrounding blanks. Returns the credential's
 * start and length, or NULL when the scheme is not Bearer or nothing follows it. */
static const char *
bearer_credential(const char *h, size_t len, size_t *out_len)
{
    while (len > 0 && (h[0] == ' ' || h[0] == '\t'))
        h++, len--;
    if (len < 7 || strncasecmp(h, "bearer ", 7) != 0)
        return NULL;
    h += 7, len -= 7;
    while (len > 0 && h[0] == ' ')
        h++, len--;
    while (len > 0 && (h[len - 1] == ' ' || h[len - 1] == '\t'))
        len--;
    *out_len = len;
    return len > 0 ? h : NULL;
}

static pol_authn_status_t
authenticate_key(const pol_snapshot_t *snap, const char *cred, size_t len, int64_t now_ms, pol_identity_t *out)
{
    char id[POL_APIKEY_ID_LEN + 1];
    const char *secret;
    size_t secret_len;
    if (pol_apikey_parse(cred, len, id, &secret, &secret_len) != 0)
        return POL_AUTHN_MALFORMED;
    const pol_key_t *key = pol_snapshot_key(snap, id);
    /* The secret is checked first, so only a caller holding the key learns its state; an
     * unknown id is hashed against a dummy all the same, so timing does not tell ids apart. */
    static const uint8_t dummy[POL_APIKEY_HASH_LEN];
    bool match = pol_apikey_verify(key != NULL ? key->hash : dummy, secret, secret_len);
    if (key == NULL || !match)
        return POL_AUTHN_UNKNOWN_KEY;
    if (key->revoked_at_ms != 0)
        return POL_AUTHN_REVOKED;
    if (key->expires_at_ms != 0 && key->expires_at_ms <= now_ms)
        return POL_AUTHN_EXPIRED;
    if (!key->principal->enabled)
        return POL_AUTHN_DISABLED;
    out->principal = key->principal;
    memcpy(out->key_id, id, sizeof(out->key_id));
    out->method = "api_key";
    return POL_AUTHN_OK;
}

static pol_authn_status_t
authenticate_jwt(const pol_snapshot_t *snap, const pol_jwt_verifier_t *jwt, const char *cred, size_t len,
                 int64_t now_ms, pol_identity_t *out)
{
    size_t dots = 0;
    for (size_t i = 0; i < len; i++)
        dots += cred[i] == '.';
    if (dots != 2)
        return POL_AUTHN_MALFORMED; /* neither an API key nor a JWT */
    if (jwt == NULL)
        return POL_AUTHN_UNKNOWN_ISSUER; /* no issuer is trusted */
    pol_authn_status_t st = pol_jwt_verify(jwt, cred, len, now_ms / 1000, &out->jwt_principal);
    if (st != POL_AUTHN_OK)
        return st;
    out->method = "jwt";
    const pol_principal_t *stored = pol_snapshot_principal(snap, out->jwt_principal.id);
    if (stored != NULL) {
        if (!pol_jwt_issuer_may_act_as_stored(jwt, out->jwt_principal.issuer))
            return POL_AUTHN_PRINCIPAL_CONFLICT;
        pol_principal_clear(&out->jwt_principal);
        if (!stored->enabled)
            return POL_AUTHN_DISABLED;
        out->principal = stored;
    } else {
        out->principal = &out->jwt_principal;
    }
    return POL_AUTHN_OK;
}

pol_authn_status_t
pol_authenticate(const pol_snapshot_t *snap, const pol_jwt_verifier_t *jwt, const char *authorization, size_t len,
                 int64_t now_ms, pol_identity_t *out)
{
    memset(out, 0, sizeof(*out));
    if (authorization == NULL || len == 0)
        return POL_AUTHN_MISSING;
    size_t cred_len;
    const char *cred = bearer_credential(authorization, len, &cred_len);
    if (cred == NULL)
        return POL_AUTHN_MALFORMED;
    pol_authn_status_t st = pol_apikey_looks_like(cred, cred_len)
                                ? authenticate_key(snap, cred, cred_len, now_ms, out)
                                : authenticate_jwt(snap, jwt, cred, cred_len, now_ms, out);
    if (st != POL_AUTHN_OK)
        pol_identity_clear(out);
    return st;
}

void
pol_identity_clear(pol_identity_t *id)
{
    pol_principal_clear(&id->jwt_principal);
    id->principal = NULL;
}
