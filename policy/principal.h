/*
 * principal.h — who a caller is, as every plane sees it.
 *
 * A principal comes from the store (created with gwctl, found through an API key) or from a
 * verified JWT (built from its claims; when the store also has a principal with that id, the
 * store's record is used, so it can be disabled or killed). Principals in a snapshot are
 * immutable and shared by every worker thread; never modify one.
 */
#ifndef POL_PRINCIPAL_H
#define POL_PRINCIPAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum pol_kind {
    POL_KIND_USER = 0,
    POL_KIND_SERVICE,
    POL_KIND_AGENT,
} pol_kind_t;

typedef struct pol_label {
    char *key;
    char *value;
} pol_label_t;

typedef struct pol_principal {
    char *id;
    pol_kind_t kind;
    char *team;   /* NULL when the principal has no team */
    char **roles; /* num_roles role names */
    size_t num_roles;
    pol_label_t *labels; /* num_labels key/value pairs, sorted by key */
    size_t num_labels;
    bool enabled; /* a disabled principal authenticates to nothing */
    char *issuer; /* for a principal built from a JWT: the `iss` that asserted it; else NULL */
    int64_t created_at_ms;
    int64_t updated_at_ms;
} pol_principal_t;

/* "user", "service", "agent". */
const char *pol_kind_name(pol_kind_t kind);

/* Parses a kind name. Returns 0, or -EINVAL. */
int pol_kind_parse(const char *name, pol_kind_t *out);

/* The value of label `key`, or NULL. */
const char *pol_principal_label(const pol_principal_t *p, const char *key);

/* True when the principal has role `role`. */
bool pol_principal_has_role(const pol_principal_t *p, const char *role);

/* Frees the strings and arrays inside p (not p itself). */
void pol_principal_clear(pol_principal_t *p);

#endif
