#include "authn.h"

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
