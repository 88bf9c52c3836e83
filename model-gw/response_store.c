#include "response_store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

#define SHARDS        16
#define SHARD_BUCKETS 1024
#define MS_PER_DAY    (24LL * 3600 * 1000)
#define TOMBSTONE_MS  60000 /* a tombstone outlives its DELETE's commit by far: not evicted before */
#define RECENT        1024  /* ids of the last responses put, for a store read that misses */

typedef struct shard {
    pthread_mutex_t lock;
    mg_stored_response_t *buckets[SHARD_BUCKETS];
    mg_stored_response_t *lru_head, *lru_tail; /* head: most recently used */
    size_t bytes;
} shard_t;

/* A read-only connection for one thread-pool thread, kept until the store is freed. */
typedef struct reader {
    sqlite3 *db;
    struct reader *next;
} reader_t;

struct mg_response_store {
    uint64_t serial; /* tells this store's readers from those of a store freed before */
    char *db_path;
    tp_store_writer_t *writer;
    size_t shard_cap; /* bytes a shard may hold */
    int64_t retention_ms;
    tp_metric_t *loads;       /* {source} */
    tp_metric_t *cache_bytes; /* gauge */
    _Atomic int64_t bytes;
    _Atomic uint64_t recent[RECENT]; /* hashes of the ids put last (a ring) */
    _Atomic size_t recent_next;
    pthread_mutex_t readers_lock; /* only to add a reader, or free them all */
    reader_t *readers;
    shard_t shards[SHARDS];
};

/* This thread's reader, for the store with this serial (a store freed since closed it). */
static _Thread_local struct {
    uint64_t serial;
    sqlite3 *db;
} thread_reader;
static _Atomic uint64_t next_serial = 1;

/* ---- entries ---- */

static mg_stored_response_t *
entry_new(const char *id, const char *principal, const char *model, const char *previous_id, const char *status,
          int64_t created_ms, int64_t expires_ms, json_t *input_items, json_t *response, size_t bytes)
{
    mg_stored_response_t *e = tp_calloc(1, sizeof(*e));
    atomic_init(&e->refs, 1);
    e->id = tp_strdup(id);
    e->principal = tp_strdup(principal);
    e->model = tp_strdup(model != NULL ? model : "");
    e->previous_id = previous_id != NULL ? tp_strdup(previous_id) : NULL;
    e->status = tp_strdup(status != NULL ? status : "completed");
    e->created_ms = created_ms;
    e->expires_ms = expires_ms;
    e->input_items = input_items;
    e->response = response;
    e->bytes = bytes + sizeof(*e) + strlen(id) + strlen(principal) + 64;
    return e;
}

void
mg_stored_response_release(mg_stored_response_t *r)
{
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    free(r->id);
    free(r->principal);
    free(r->model);
    free(r->previous_id);
    free(r->status);
    json_decref(r->input_items);
    json_decref(r->response);
    free(r);
}

size_t
mg_stored_response_text_bytes(const mg_stored_response_t *r)
{
    return r->bytes / 3; /* entries count 3 bytes of memory per byte of text */
}

static mg_stored_response_t *
entry_ref(mg_stored_response_t *r)
{
    atomic_fetch_add(&r->refs, 1);
    return r;
}

/* ---- the cache ---- */

static uint64_t
hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)id; *c != '\0'; c++)
        h = (h ^ *c) * 1099511628211ull;
    return h;
}

static shard_t *
shard_of(mg_response_store_t *s, uint64_t h)
{
    return &s->shards[h % SHARDS];
}

static mg_stored_response_t **
bucket_of(shard_t *sh, uint64_t h)
{
    return &sh->buckets[(h / SHARDS) % SHARD_BUCKETS];
}

static void
lru_unlink(shard_t *sh, mg_stored_response_t *e)
{
    if (e->lru_prev != NULL)
        e->lru_prev->lru_next = e->lru_next;
    else
        sh->lru_head = e->lru_next;
    if (e->lru_next != NULL)
        e->lru_next->lru_prev = e->lru_prev;
    else
        sh->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void
lru_push(shard_t *sh, mg_stored_response_t *e)
{
    e->lru_prev = NULL;
    e->lru_next = sh->lru_head;
    if (sh->lru_head != NULL)
        sh->lru_head->lru_prev = e;
    sh->lru_head = e;
    if (sh->lru_tail == NULL)
        sh->lru_tail = e;
}

/* Unlinks e from its bucket and the LRU list (the shard's lock held); the caller releases it. */
static void
cache_unlink(mg_response_store_t *s, shard_t *sh, mg_stored_response_t *e)
{
    mg_stored_response_t **at = bucket_of(sh, hash_id(e->id));
    while (*at != NULL && *at != e)
        at = &(*at)->hash_next;
    if (*at == e)
        *at = e->hash_next;
    e->hash_next = NULL;
    lru_unlink(sh, e);
    e->cached = false;
    sh->bytes -= e->bytes;
    atomic_fetch_sub(&s->bytes, (int64_t)e->bytes);
}

/* The cached entry for id (a new reference), or NULL. */
static mg_stored_response_t *
cache_get(mg_response_store_t *s, const char *id)
{
    uint64_t h = hash_id(id);
    shard_t *sh = shard_of(s, h);
    pthread_mutex_lock(&sh->lock);
    mg_stored_response_t *e = *bucket_of(sh, h);
    while (e != NULL && strcmp(e->id, id) != 0)
        e = e->hash_next;
    if (e != NULL) {
        lru_unlink(sh, e);
        lru_push(sh, e);
        entry_ref(e);
    }
    pthread_mutex_unlock(&sh->lock);
    return e;
}

/* Puts e in the cache (taking a reference), replacing an entry with its id unless that one is
 * a tombstone and e is not (a row read from disk before its delete committed); then evicts the
 * least recently used entries over the shard's share, but not a tombstone younger than
 * TOMBSTONE_MS (its row may not be deleted yet), so tombstones are kept even with no room. */
static void
cache_put(mg_response_store_t *s, mg_stored_response_t *e)
{
    if (s->shard_cap == 0 && !e->deleted)
        return;
    uint64_t h = hash_id(e->id);
    shard_t *sh = shard_of(s, h);
    mg_stored_response_t *evicted = NULL;
    pthread_mutex_lock(&sh->lock);
    mg_stored_response_t *old = *bucket_of(sh, h);
    while (old != NULL && strcmp(old->id, e->id) != 0)
        old = old->hash_next;
    if (old != NULL && old->deleted && !e->deleted) {
        pthread_mutex_unlock(&sh->lock);
        return;
    }
    if (old != NULL) {
        cache_unlink(s, sh, old);
        old->hash_next = evicted;
        evicted = old;
    }
    mg_stored_response_t **b = bucket_of(sh, h);
    e->hash_next = *b;
    *b = entry_ref(e);
    lru_push(sh, e);
    e->cached = true;
    sh->bytes += e->bytes;
    atomic_fetch_add(&s->bytes, (int64_t)e->bytes);
    int64_t now = tp_unix_ms();
    for (mg_stored_response_t *last = sh->lru_tail, *prev; last != NULL && sh->bytes > s->shard_cap; last = prev) {
        prev = last->lru_prev;
        if (last == e || (last->deleted && last->keep_until_ms > now))
            continue;
        cache_unlink(s, sh, last);
        last->hash_next = evicted;
        evicted = last;
    }
    pthread_mutex_unlock(&sh->lock);
    while (evicted != NULL) {
        mg_stored_response_t *next = evicted->hash_next;
        evicted->hash_next = NULL;
        mg_stored_response_release(evicted);
        evicted = next;
    }
    tp_metric_set(s->cache_bytes, NULL, (double)atomic_load(&s->bytes));
}

/* ---- the store ---- */

mg_response_store_t *
mg_response_store_new(const char *db_path, tp_store_writer_t *writer, size_t cache_bytes, int retention_days,
                      tp_metrics_t *metrics)
{
    mg_response_store_t *s = tp_calloc(1, sizeof(*s));
    for (size_t i = 0; i < RECENT; i++)
        atomic_init(&s->recent[i], 0);
    atomic_init(&s->recent_next, 0);
    s->serial = atomic_fetch_add(&next_serial, 1);
    s->db_path = tp_strdup(db_path);
    s->writer = writer;
    s->shard_cap = cache_bytes / SHARDS;
    s->retention_ms = (int64_t)retention_days * MS_PER_DAY;
    pthread_mutex_init(&s->readers_lock, NULL);
    for (size_t i = 0; i < SHARDS; i++)
        pthread_mutex_init(&s->shards[i].lock, NULL);
    if (metrics != NULL) {
        s->loads = tp_metrics_counter(metrics, "triplane_model_response_loads_total",
                                      "Stored responses read for retrieval or continuation, by where they came from.",
                                      (const char *[]){ "source", NULL });
        s->cache_bytes = tp_metrics_gauge(metrics, "triplane_model_response_cache_bytes",
                                          "Memory held by the cache of recent stored responses (estimated).",
                                          (const char *[]){ NULL });
    }
    return s;
}

void
mg_response_store_free(mg_response_store_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < SHARDS; i++) {
        shard_t *sh = &s->shards[i];
        while (sh->lru_head != NULL) {
            mg_stored_response_t *e = sh->lru_head;
            cache_unlink(s, sh, e);
            mg_stored_response_release(e);
        }
        pthread_mutex_destroy(&sh->lock);
    }
    for (reader_t *r = s->readers, *next; r != NULL; r = next) {
        next = r->next;
        sqlite3_close(r->db);
        free(r);
    }
    pthread_mutex_destroy(&s->readers_lock);
    free(s->db_path);
    free(s);
}

static const char insert_sql[] = "INSERT OR REPLACE INTO responses (id, principal, model, previous_id, status, "
                                 "created_ms, expires_ms, input_items, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
static const char delete_sql[] = "DELETE FROM responses WHERE id = ?";
static const char purge_sql[] = "DELETE FROM responses WHERE expires_ms IS NOT NULL AND expires_ms <= ?";

static tp_store_value_t
text_value(const char *s)
{
    return s != NULL ? (tp_store_value_t){ .type = TP_STORE_TEXT, .u.s = s } : (tp_store_value_t){ 0 };
}

void
mg_response_store_put(mg_response_store_t *s, const char *id, const char *principal, const char *model,
                      const char *previous_id, const char *status, int64_t created_ms, json_t *input_items,
                      json_t *response, const char *printed)
{
    char *items_text = json_dumps(input_items, JSON_COMPACT);
    char *made = printed != NULL ? NULL : json_dumps(response, JSON_COMPACT | JSON_PRESERVE_ORDER);
    const char *response_text = printed != NULL ? printed : made;
    size_t text_bytes =
        (items_text != NULL ? strlen(items_text) : 0) + (response_text != NULL ? strlen(response_text) : 0);
    int64_t expires = s->retention_ms > 0 ? created_ms + s->retention_ms : 0;
    /* Parsed JSON takes a few times its text; 3× is a fair estimate for the cache's budget. */
    mg_stored_response_t *e = entry_new(id, principal, model, previous_id, status, created_ms, expires, input_items,
                                        response, text_bytes * 3);
    cache_put(s, e);
    atomic_store(&s->recent[atomic_fetch_add(&s->recent_next, 1) % RECENT], hash_id(id));
    tp_store_value_t v[9] = {
        text_value(id),
        text_value(principal),
        text_value(model),
        text_value(previous_id),
        text_value(status),
        { .type = TP_STORE_INT, .u.i = created_ms },
        expires > 0 ? (tp_store_value_t){ .type = TP_STORE_INT, .u.i = expires } : (tp_store_value_t){ 0 },
        text_value(items_text != NULL ? items_text : "[]"),
        text_value(response_text != NULL ? response_text : "{}"),
    };
    if (tp_store_submit(s->writer, insert_sql, v, 9) != 0)
        tp_log_fields(TP_LOG_ERROR, NULL, "a stored response could not be queued for the store",
                      json_pack("{s:s}", "response", id));
    free(items_text);
    free(made);
    mg_stored_response_release(e);
}

void
mg_response_store_delete(mg_response_store_t *s, const mg_stored_response_t *r)
{
    mg_stored_response_t *t = entry_new(r->id, r->principal, r->model, r->previous_id, r->status, r->created_ms,
                                        r->expires_ms, NULL, NULL, 0);
    t->deleted = true;
    t->keep_until_ms = tp_unix_ms() + TOMBSTONE_MS;
    cache_put(s, t);
    mg_stored_response_release(t);
    tp_store_value_t v[1] = { text_value(r->id) };
    tp_store_submit(s->writer, delete_sql, v, 1);
}

size_t
mg_response_store_forget(mg_response_store_t *s, const char *id, const char *principal, int64_t before_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < SHARDS; i++) {
        shard_t *sh = &s->shards[i];
        mg_stored_response_t *gone = NULL;
        pthread_mutex_lock(&sh->lock);
        for (mg_stored_response_t *e = sh->lru_head, *next; e != NULL; e = next) {
            next = e->lru_next;
            bool match = id != NULL ? strcmp(e->id, id) == 0
                                    : (principal == NULL || strcmp(e->principal, principal) == 0) &&
                                          (before_ms == 0 || e->created_ms < before_ms);
            if (match && !e->deleted) {
                cache_unlink(s, sh, e);
                e->hash_next = gone;
                gone = e;
                n++;
            }
        }
        pthread_mutex_unlock(&sh->lock);
        while (gone != NULL) {
            mg_stored_response_t *next = gone->hash_next;
            mg_stored_response_release(gone);
            gone = next;
        }
    }
    tp_metric_set(s->cache_bytes, NULL, (double)atomic_load(&s->bytes));
    return n;
}

void
mg_response_store_purge_expired(mg_response_store_t *s)
{
    if (s->retention_ms <= 0)
        return;
    tp_store_value_t v[1] = { { .type = TP_STORE_INT, .u.i = tp_unix_ms() } };
    tp_store_submit(s->writer, purge_sql, v, 1);
}

/* ---- chains ---- */

void
mg_response_chain_clear(mg_response_chain_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        mg_stored_response_release(c->items[i]);
    free(c->items);
    c->items = NULL;
    c->n = 0;
}

json_t *
mg_response_chain_history(const mg_response_chain_t *c)
{
    json_t *history = json_array();
    for (size_t i = 0; i < c->n; i++) {
        json_array_extend(history, c->items[i]->input_items);
        json_t *output = json_object_get(c->items[i]->response, "output");
        if (json_is_array(output))
            json_array_extend(history, output);
    }
    return history;
}

static bool
live(const mg_stored_response_t *e, int64_t now)
{
    return !e->deleted && (e->expires_ms == 0 || e->expires_ms > now);
}

/* A chain being gathered newest first: `newest` holds references. */
typedef struct gathered {
    mg_stored_response_t **items;
    size_t n, cap;
} gathered_t;

static void
gathered_add(gathered_t *g, mg_stored_response_t *e)
{
    if (g->n == g->cap) {
        g->cap = g->cap != 0 ? g->cap * 2 : 8;
        g->items = tp_realloc(g->items, g->cap * sizeof(*g->items));
    }
    g->items[g->n++] = e;
}

/* Hands the gathered entries to the chain, oldest first. */
static void
gathered_to_chain(gathered_t *g, mg_response_chain_t *c)
{
    for (size_t i = 0; i < g->n / 2; i++) {
        mg_stored_response_t *t = g->items[i];
        g->items[i] = g->items[g->n - 1 - i];
        g->items[g->n - 1 - i] = t;
    }
    c->items = g->items;
    c->n = g->n;
    *g = (gathered_t){ 0 };
}

static void
gathered_clear(gathered_t *g)
{
    for (size_t i = 0; i < g->n; i++)
        mg_stored_response_release(g->items[i]);
    free(g->items);
    *g = (gathered_t){ 0 };
}

/* Walks the chain in the cache from `id`. Returns the id (in *missing, malloc'd) where the
 * cache has nothing and the store must be read, or NULL when the walk is done. *found is false
 * when the response asked for is gone (deleted, expired, another principal's). */
static char *
walk_cache(mg_response_store_t *s, const char *id, const char *principal, bool whole_chain, gathered_t *g, bool *found)
{
    int64_t now = tp_unix_ms();
    const char *cur = id;
    *found = true;
    while (cur != NULL && g->n < MG_RESPONSE_MAX_CHAIN) {
        mg_stored_response_t *e = cache_get(s, cur);
        if (e == NULL)
            return tp_strdup(cur);
        if (!live(e, now) || (g->n == 0 && strcmp(e->principal, principal) != 0)) {
            mg_stored_response_release(e);
            *found = g->n > 0; /* an older response gone ends the chain there */
            return NULL;
        }
        gathered_add(g, e);
        if (!whole_chain)
            return NULL;
        cur = e->previous_id;
    }
    return NULL;
}

struct mg_response_load {
    uv_work_t work;
    mg_response_store_t *s;
    char *id;        /* the response asked for */
    char *principal; /* who asks */
    char *missing;   /* where the store is read from */
    bool whole_chain;
    gathered_t got;    /* newest first: from the cache, then (after the work) from the store */
    gathered_t loaded; /* from the store, newest first (filled on the thread pool) */
    bool found;
    bool cancelled;
    mg_response_load_cb cb;
    void *data;
};

/* This thread's read-only connection, opened on first use. */
static sqlite3 *
reader_db(mg_response_store_t *s)
{
    if (thread_reader.serial == s->serial)
        return thread_reader.db;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(s->db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        tp_log_fields(TP_LOG_ERROR, NULL, "cannot open the store to read responses",
                      json_pack("{s:s, s:s}", "path", s->db_path, "error", db != NULL ? sqlite3_errmsg(db) : "?"));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    reader_t *r = tp_calloc(1, sizeof(*r));
    r->db = db;
    pthread_mutex_lock(&s->readers_lock);
    r->next = s->readers;
    s->readers = r;
    pthread_mutex_unlock(&s->readers_lock);
    thread_reader.serial = s->serial;
    thread_reader.db = db;
    return db;
}

/* Reads the chain from `id` back (or just it), newest first, into out. Returns false on an
 * SQLite error (logged). */
static bool
read_chain(sqlite3 *db, const char *id, bool whole_chain, size_t max, gathered_t *out)
{
    static const char chain_sql[] =
        "WITH RECURSIVE chain(id, depth) AS (SELECT ?1, 0 UNION ALL SELECT r.previous_id, c.depth + 1 FROM chain c "
        "JOIN responses r ON r.id = c.id WHERE r.previous_id IS NOT NULL AND c.depth + 1 < ?2) "
        "SELECT r.id, r.principal, r.model, r.previous_id, r.status, r.created_ms, r.expires_ms, r.input_items, "
        "r.response FROM chain c JOIN responses r ON r.id = c.id ORDER BY c.depth";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, chain_sql, -1, &st, NULL) != SQLITE_OK) {
        tp_log_fields(TP_LOG_ERROR, NULL, "reading stored responses failed",
                      json_pack("{s:s}", "error", sqlite3_errmsg(db)));
        return false;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, whole_chain ? (sqlite3_int64)max : 1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *items_text = (const char *)sqlite3_column_text(st, 7);
        const char *response_text = (const char *)sqlite3_column_text(st, 8);
        json_t *items = json_loads(items_text != NULL ? items_text : "[]", 0, NULL);
        json_t *response = json_loads(response_text != NULL ? response_text : "{}", 0, NULL);
        if (!json_is_array(items) || !json_is_object(response)) {
            json_decref(items);
            json_decref(response);
            tp_log_fields(TP_LOG_ERROR, NULL, "a stored response is not valid JSON; the conversation ends before it",
                          json_pack("{s:s}", "response", (const char *)sqlite3_column_text(st, 0)));
            break;
        }
        size_t bytes = (size_t)(sqlite3_column_bytes(st, 7) + sqlite3_column_bytes(st, 8)) * 3;
        mg_stored_response_t *e =
            entry_new((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
                      (const char *)sqlite3_column_text(st, 2), (const char *)sqlite3_column_text(st, 3),
                      (const char *)sqlite3_column_text(st, 4), sqlite3_column_int64(st, 5),
                      sqlite3_column_int64(st, 6), items, response, bytes);
        gathered_add(out, e);
    }
    bool ok = rc == SQLITE_DONE || rc == SQLITE_ROW;
    if (!ok)
        tp_log_fields(TP_LOG_ERROR, NULL, "reading stored responses failed",
                      json_pack("{s:s}", "error", sqlite3_errmsg(db)));
    sqlite3_finalize(st);
    return ok;
}

/* Whether id is one of the responses put last: its row may still be on its way to the store. */
static bool
put_lately(mg_response_store_t *s, const char *id)
{
    uint64_t h = hash_id(id);
    for (size_t i = 0; i < RECENT; i++) {
        if (atomic_load_explicit(&s->recent[i], memory_order_relaxed) == h)
            return true;
    }
    return false;
}

static void
load_work(uv_work_t *w)
{
    mg_response_load_t *l = w->data;
    sqlite3 *db = reader_db(l->s);
    if (db == NULL)
        return;
    size_t max = MG_RESPONSE_MAX_CHAIN - l->got.n;
    if (read_chain(db, l->missing, l->whole_chain, max, &l->loaded) && l->loaded.n == 0 &&
        put_lately(l->s, l->missing)) {
        /* Put a moment ago and already out of the cache: let the writer commit it. (Only then:
         * an id nobody wrote must not make every store read wait for a commit.) */
        tp_store_writer_flush(l->s->writer);
        read_chain(db, l->missing, l->whole_chain, max, &l->loaded);
    }
}

static void
load_free(mg_response_load_t *l)
{
    gathered_clear(&l->got);
    gathered_clear(&l->loaded);
    free(l->id);
    free(l->principal);
    free(l->missing);
    free(l);
}

/* Joins what the store gave to what the cache gave, checking each as walk_cache does, and
 * caches it. */
static void
load_after(uv_work_t *w, int status)
{
    mg_response_load_t *l = w->data;
    mg_response_store_t *s = l->s;
    int64_t now = tp_unix_ms();
    bool found = true;
    tp_metric_add(s->loads, (const char *[]){ "store" }, 1);
    for (size_t i = 0; i < l->loaded.n; i++) {
        mg_stored_response_t *e = l->loaded.items[i];
        l->loaded.items[i] = NULL;
        /* A tombstone in the cache wins over a row read before its delete committed. */
        mg_stored_response_t *cached = cache_get(s, e->id);
        if (cached != NULL) {
            mg_stored_response_release(e);
            e = cached;
        } else {
            cache_put(s, e);
        }
        if (!live(e, now) || (l->got.n == 0 && strcmp(e->principal, l->principal) != 0)) {
            mg_stored_response_release(e);
            found = l->got.n > 0;
            break;
        }
        gathered_add(&l->got, e);
    }
    for (size_t i = 0; i < l->loaded.n; i++)
        mg_stored_response_release(l->loaded.items[i]);
    l->loaded.n = 0;
    if (l->got.n == 0)
        found = false;
    if (!l->cancelled) {
        mg_response_chain_t chain = { 0 };
        if (found)
            gathered_to_chain(&l->got, &chain);
        l->cb(&chain, l->data);
    }
    (void)status;
    load_free(l);
}

mg_response_load_t *
mg_response_store_load(mg_response_store_t *s, uv_loop_t *loop, const char *id, const char *principal, bool whole_chain,
                       mg_response_load_cb cb, void *data)
{
    gathered_t g = { 0 };
    bool found;
    char *missing = walk_cache(s, id, principal, whole_chain, &g, &found);
    if (missing == NULL) {
        tp_metric_add(s->loads, (const char *[]){ "cache" }, 1);
        mg_response_chain_t chain = { 0 };
        if (found && g.n > 0)
            gathered_to_chain(&g, &chain);
        gathered_clear(&g);
        cb(&chain, data);
        return NULL;
    }
    mg_response_load_t *l = tp_calloc(1, sizeof(*l));
    l->s = s;
    l->id = tp_strdup(id);
    l->principal = tp_strdup(principal);
    l->missing = missing;
    l->whole_chain = whole_chain;
    l->got = g;
    l->cb = cb;
    l->data = data;
    l->work.data = l;
    if (uv_queue_work(loop, &l->work, load_work, load_after) != 0) {
        l->loaded.n = 0;
        load_after(&l->work, -1);
        return NULL;
    }
    return l;
}

void
mg_response_load_cancel(mg_response_load_t *load)
{
    if (load != NULL)
        load->cancelled = true;
}
