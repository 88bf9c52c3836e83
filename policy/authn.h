/*
 * authn.h — one call for every plane: credentials in, principal out, or the reason why not.
 *
 * `Authorization: Bearer <credential>`, where the credential is a Triplane API key
 * (tp_<key-id>_<secret>) or a JWT from a configured issuer. Planes map any failure to their
 * protocol's 401; the reason goes to the log and, in words safe to show, to the caller.
 */
#ifndef POL_AUTHN_H
#define POL_AUTHN_H

#include <stddef.h>
#include <stdint.h>

#include "apikey.h"
#include "principal.h"

typedef struct pol_snapshot pol_snapshot_t;
typedef struct pol_jwt_verifier pol_jwt_verifier_t;

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
    POL_AUTHN_PRINCIPAL_CONFLICT, /* a token names a stored principal its issuer may not act as */
} pol_authn_status_t;

/* A short machine-readable name ("unknown_key"). */
const char *pol_authn_status_name(pol_authn_status_t status);

/* A sentence safe to show the caller ("the API key was revoked"). */
const char *pol_authn_status_message(pol_authn_status_t status);

/* Who a request comes from, once authenticated. */
typedef struct pol_identity {
    const pol_principal_t *principal;   /* the caller: in the snapshot, or &jwt_principal */
    pol_principal_t jwt_principal;      /* filled for a JWT caller the store does not know */
    char key_id[POL_APIKEY_ID_LEN + 1]; /* the API key's id; "" for a JWT */
    const char *method;                 /* "api_key" or "jwt" (static) */
} pol_identity_t;

/* Authenticates the value of an Authorization header (authorization may be NULL when absent;
 * len is its length) against the snapshot's API keys and the JWT verifier (NULL when no issuer
 * is configured). On POL_AUTHN_OK, *out describes the caller; release it with
 * pol_identity_clear, and never copy *out (principal may point into it).
 *
 * A JWT whose principal id names a stored principal takes the store's record (team, roles,
 * labels, enabled) only when its issuer is configured with stored_principals; otherwise it is
 * refused with POL_AUTHN_PRINCIPAL_CONFLICT, so no trusted issuer can pass itself off as an
 * API-key principal that rules name by id. An API key whose secret does not match reports
 * POL_AUTHN_UNKNOWN_KEY, like an unknown id, and costs the same hash, so the id alone reveals
 * nothing. Thread-safe; allocates only for JWT principals. */
pol_authn_status_t pol_authenticate(const pol_snapshot_t *snap, const pol_jwt_verifier_t *jwt,
                                    const char *authorization, size_t len, int64_t now_ms, pol_identity_t *out);

/* Frees what pol_authenticate allocated in id (safe on a zeroed or failed identity). */
void pol_identity_clear(pol_identity_t *id);

#endif
