/*
 * authn.h — one call for every plane: credentials in, principal out, or the reason why not.
 *
 * `Authorization: Bearer <credential>`, where the credential is a Triplane API key
 * (tp_<key-id>_<secret>) or a JWT from a configured issuer. Planes map any failure to their
 * protocol's 401; the reason goes to the log and, in words safe to show, to the caller.
 */
#ifndef POL_AUTHN_H
#define POL_AUTHN_H

typedef enum pol_authn_status {
    POL_AUTHN_OK = 0,
    POL_AUTHN_MISSING,            /* no Authorization header */
    POL_AUTHN_MALFORMED,          /* not "Bearer <credential>", or an unparsable key or token */
    POL_AUTHN_UNKNOWN_KEY,        /* no API key with that id, or the secret does not match */
    POL_AUTHN_REVOKED,            /* the API key was revoked */
    POL_AUTHN_EXPIRED,            /* the API key or token expired */
    POL_AUTHN_NOT_YET_VALID,      /* the token's nbf (or iat) is in the future */
    POL_AUTHN_BAD_SIGNATURE,      /* the token's signature does not verify */
    POL_AUTHN_UNKNOWN_ISSUER,     /* the token's iss is not a configured issuer */
    POL_AUTHN_WRONG_AUDIENCE,     /* the token's aud names none of the issuer's audiences */
    POL_AUTHN_ALGORITHM_REFUSED,  /* alg none, an algorithm not allowed for the issuer, or a key-type mismatch */
    POL_AUTHN_UNKNOWN_KID,        /* the token's kid names no key of the issuer */
    POL_AUTHN_BAD_CLAIMS,         /* a required claim is missing or has the wrong type */
    POL_AUTHN_DISABLED,           /* the principal is disabled */
} pol_authn_status_t;

/* A short machine-readable name ("unknown_key"). */
const char *pol_authn_status_name(pol_authn_status_t status);

/* A sentence safe to show the caller ("the API key was revoked"). */
const char *pol_authn_status_message(pol_authn_status_t status);

#endif
