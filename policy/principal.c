#include "principal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = { "user", "service", "agent" };

const char *
pol_kind_name(pol_kind_t kind)
{
    return (unsigned)kind < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[kind] : "unknown";
}

int
pol_kind_parse(const char *name, pol_kind_t *out)
{
    for (size_t i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
        if (strcmp(name, kind_names[i]) == 0) {
            *out = (pol_kind_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *
pol_principal_label(const pol_principal_t *p, const char *key)
{
    for (size_t i = 0; i < p->num_labels; i++) {
        if (strcmp(p->labels[i].key, key) == 0)
            return p->labels[i].value;
    }
    return NULL;
}

bool
pol_principal_has_role(const pol_principal_t *p, const char *role)
{
    for (size_t i = 0; i < p->num_roles; i++) {
        if (strcmp(p->roles[i], role) == 0)
            return true;
    }
    return false;
}

void
pol_principal_clear(pol_principal_t *p)
{
    free(p->id);
    free(p->team);
    free(p->issuer);
    for (size_t i = 0; i < p->num_roles; i++)
        free(p->roles[i]);
    free(p->roles);
    for (size_t i = 0; i < p->num_labels; i++) {
        free(p->labels[i].key);
        free(p->labels[i].value);
    }
    free(p->labels);
    memset(p, 0, sizeof(*p));
}
