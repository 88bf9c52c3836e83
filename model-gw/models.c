#include "models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "mem.h"

static const char *
action_for(const char *kind)
{
    if (strcmp(kind, "embedding") == 0)
        return "embed";
    if (strcmp(kind, "completion") == 0)
        return "complete";
    return "chat";
}

mg_models_t *
mg_models_new(const tp_model_gw_config_t *cfg, char **err)
{
    mg_models_t *ms = tp_calloc(1, sizeof(*ms));
    ms->num_models = cfg->model_count;
    ms->models = tp_calloc(cfg->model_count, sizeof(mg_model_t));
    for (size_t i = 0; i < cfg->model_count; i++) {
        const tp_model_config_t *mc = &cfg->models[i];
        mg_model_t *m = &ms->models[i];
        m->cfg = mc;
        m->action = action_for(mc->kind);
        m->num_deployments = mc->deployment_count;
        m->deployments = tp_calloc(mc->deployment_count, sizeof(mg_deployment_t));
        for (size_t j = 0; j < mc->deployment_count; j++) {
            mg_deployment_t *d = &m->deployments[j];
            d->cfg = &mc->deployments[j];
            d->index = j;
            d->upstream_model = d->cfg->model != NULL ? d->cfg->model : mc->name;
            snprintf(d->label, sizeof(d->label), "%zu", j);
            atomic_store(&d->warmup_last_status, -1);
            if (d->cfg->api_key_env != NULL) {
                const char *key = getenv(d->cfg->api_key_env);
                if (key == NULL || key[0] == '\0') {
                    *err = tp_sprintf("model %s, deployment %s: environment variable %s is not set", mc->name,
                                      d->cfg->url, d->cfg->api_key_env);
                    mg_models_free(ms);
                    return NULL;
                }
                d->authorization = tp_sprintf("Bearer %s", key);
            }
            tp_upstream_header_t auth = { h2o_iovec_init(H2O_STRLIT("authorization")),
                                          h2o_iovec_init(d->authorization,
                                                         d->authorization != NULL ? strlen(d->authorization) : 0) };
            tp_upstream_options_t uo = {
                .first_byte_timeout_ms = (uint64_t)d->cfg->first_byte_timeout_ms,
                .total_timeout_ms = (uint64_t)d->cfg->timeout_ms,
                .headers = d->authorization != NULL ? &auth : NULL,
                .num_headers = d->authorization != NULL ? 1 : 0,
            };
            char *why = NULL;
            if ((d->upstream = tp_upstream_new(d->cfg->url, &uo, &why)) == NULL) {
                *err = tp_sprintf("model %s: %s", mc->name, why);
                free(why);
                mg_models_free(ms);
                return NULL;
            }
        }
    }
    return ms;
}

void
mg_models_free(mg_models_t *ms)
{
    if (ms == NULL)
        return;
    for (size_t i = 0; i < ms->num_models; i++) {
        for (size_t j = 0; j < ms->models[i].num_deployments; j++) {
            free(ms->models[i].deployments[j].authorization);
            tp_upstream_free(ms->models[i].deployments[j].upstream);
        }
        free(ms->models[i].deployments);
    }
    free(ms->models);
    free(ms);
}

mg_model_t *
mg_models_find(const mg_models_t *ms, const char *name)
{
    for (size_t i = 0; i < ms->num_models; i++) {
        if (strcmp(ms->models[i].cfg->name, name) == 0)
            return &ms->models[i];
    }
    return NULL;
}

bool
mg_deployment_usable(mg_deployment_t *d, int64_t now_ms)
{
    int64_t until = atomic_load(&d->open_until_ms);
    if (until == 0)
        return true;
    /* Open: once the cool-down has passed, exactly one caller moves the deadline on and probes. */
    return now_ms >= until &&
           atomic_compare_exchange_strong(&d->open_until_ms, &until, now_ms + MG_CIRCUIT_COOLDOWN_MS);
}

bool
mg_deployment_report(mg_deployment_t *d, bool ok, int64_t now_ms)
{
    if (ok) {
        atomic_store(&d->failures, 0);
        return atomic_exchange(&d->open_until_ms, 0) != 0;
    }
    int failures = atomic_fetch_add(&d->failures, 1) + 1;
    if (failures < MG_CIRCUIT_FAILURES)
        return false;
    int64_t closed = 0;
    /* The failure that reaches the threshold opens it; a failed probe keeps it open. */
    if (atomic_compare_exchange_strong(&d->open_until_ms, &closed, now_ms + MG_CIRCUIT_COOLDOWN_MS))
        return true;
    return false;
}

/* ---- rotation ---- */

#define ROTATION_STATE(word)      ((mg_rotation_t)((word)&3u))
#define ROTATION_GEN(word)        ((word) >> 2)
#define ROTATION_WORD(gen, state) (((gen) << 2) | (uint64_t)(state))

bool
mg_deployment_in_rotation(const mg_deployment_t *d)
{
    return ROTATION_STATE(atomic_load(&d->rotation)) == MG_IN_ROTATION;
}

mg_rotation_t
mg_deployment_rotation(const mg_deployment_t *d)
{
    return ROTATION_STATE(atomic_load(&d->rotation));
}

bool
mg_deployment_drain(mg_deployment_t *d)
{
    uint64_t word = atomic_load(&d->rotation);
    do {
        if (ROTATION_STATE(word) == MG_DRAINING)
            return false;
    } while (!atomic_compare_exchange_weak(&d->rotation, &word, ROTATION_WORD(ROTATION_GEN(word) + 1, MG_DRAINING)));
    return true;
}

bool
mg_deployment_undrain(mg_deployment_t *d, bool warm)
{
    uint64_t word = atomic_load(&d->rotation), next;
    do {
        if (ROTATION_STATE(word) != MG_DRAINING)
            return false;
        next = ROTATION_WORD(ROTATION_GEN(word) + 1, warm ? MG_WARMING : MG_IN_ROTATION);
    } while (!atomic_compare_exchange_weak(&d->rotation, &word, next));
    if (warm) {
        atomic_store(&d->warmup_attempts, 0);
        atomic_store(&d->warmup_last_status, -1);
    }
    return true;
}

uint64_t
mg_deployment_warmup_ticket(const mg_deployment_t *d)
{
    uint64_t word = atomic_load(&d->rotation);
    return ROTATION_STATE(word) == MG_WARMING ? word : 0;
}

bool
mg_deployment_warmed(mg_deployment_t *d, uint64_t ticket)
{
    if (ROTATION_STATE(ticket) != MG_WARMING)
        return false;
    /* The same generation: the ticket is only ever replaced by a newer one (a drain or undrain). */
    return atomic_compare_exchange_strong(&d->rotation, &ticket, ROTATION_WORD(ROTATION_GEN(ticket), MG_IN_ROTATION));
}

const char *
mg_deployment_state_name(const mg_deployment_t *d)
{
    switch (mg_deployment_rotation(d)) {
    case MG_DRAINING:
        return "draining";
    case MG_WARMING:
        return "warming";
    case MG_IN_ROTATION:
        break;
    }
    return atomic_load(&d->open_until_ms) != 0 ? "circuit_open" : "healthy";
}

int
mg_deployment_in_flight(const mg_deployment_t *d)
{
    return atomic_load(&d->inflight);
}

bool
mg_model_healthy(const mg_model_t *m, int64_t now_ms)
{
    for (size_t i = 0; i < m->num_deployments; i++) {
        if (!mg_deployment_in_rotation(&m->deployments[i]))
            continue;
        int64_t until = atomic_load(&m->deployments[i].open_until_ms);
        if (until == 0 || now_ms >= until)
            return true;
    }
    return false;
}

mg_deployment_t *
mg_model_pick(mg_model_t *m)
{
    /* Least outstanding requests per unit of weight; ties go round-robin from a moving start so
     * an idle pool still spreads load. */
    unsigned long start = atomic_fetch_add(&m->picks, 1);
    mg_deployment_t *best = NULL;
    double best_load = 0;
    for (size_t k = 0; k < m->num_deployments; k++) {
        mg_deployment_t *d = &m->deployments[(start + k) % m->num_deployments];
        if (!mg_deployment_in_rotation(d))
            continue; /* drained or warming: no new requests */
        int inflight = atomic_load(&d->inflight);
        if (d->cfg->max_concurrency > 0 && inflight >= d->cfg->max_concurrency)
            continue;
        if (atomic_load(&d->open_until_ms) != 0)
            continue; /* open circuits are considered last, by mg_deployment_usable */
        double load = (double)(inflight + 1) / (double)d->cfg->weight;
        if (best == NULL || load < best_load) {
            best = d;
            best_load = load;
        }
    }
    if (best == NULL) {
        /* Every closed deployment is busy or none is closed: a cooled-down one may be probed. */
        int64_t now = tp_unix_ms();
        for (size_t k = 0; k < m->num_deployments && best == NULL; k++) {
            mg_deployment_t *d = &m->deployments[(start + k) % m->num_deployments];
            if (mg_deployment_in_rotation(d) && atomic_load(&d->open_until_ms) != 0 && mg_deployment_usable(d, now))
                best = d;
        }
    }
    return best;
}

/* FNV-1a over the key, then the deployment's index, finished with a 64-bit mixer. */
static uint64_t
affinity_hash(const char *key, size_t len, size_t index)
{
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211u;
    h ^= (uint64_t)index + 0x9e3779b97f4a7c15u;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h;
}

mg_deployment_t *
mg_model_pick_affine(mg_model_t *m, const char *key, size_t len)
{
    mg_deployment_t *best = NULL;
    double best_score = 0;
    for (size_t i = 0; i < m->num_deployments; i++) {
        mg_deployment_t *d = &m->deployments[i];
        if (!mg_deployment_in_rotation(d))
            continue; /* its keys spread over the others; the others keep theirs */
        /* Weighted rendezvous: score = -weight / ln(u), u uniform in (0, 1). */
        double u = ((double)(affinity_hash(key, len, i) >> 11) + 0.5) / 9007199254740992.0;
        double score = -(double)d->cfg->weight / log(u);
        if (best == NULL || score > best_score) {
            best = d;
            best_score = score;
        }
    }
    if (best == NULL)
        return NULL;
    bool full = best->cfg->max_concurrency > 0 && atomic_load(&best->inflight) >= best->cfg->max_concurrency;
    if (full || atomic_load(&best->open_until_ms) != 0)
        return mg_model_pick(m);
    return best;
}
