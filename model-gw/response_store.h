/*
 * response_store.h — stored Responses (/v1/responses with "store"): kept in the store's
 * `responses` table (migration 6) and, for the conversations going on now, in memory.
 *
 * Writes go through the store's batching writer (never on the request path's thread). Reads
 * are served from a bounded in-memory cache of recent responses (model_gw.response_cache_bytes),
 * so continuing a conversation (previous_response_id) costs no disk read while its responses are
 * cached; a miss reads the missing part of the chain with one query on libuv's thread pool, off
 * the worker. A response just written is in the cache before its row commits, so a client that
 * continues or retrieves it at once finds it.
 *
 * Entries are immutable and reference-counted; their JSON is shared between threads and must
 * never be modified (jansson's reference counts are atomic). The cache is split in shards, each
 * with its own lock and LRU list, held only to look up, insert or unlink.
 *
 * Ownership: a response belongs to the principal that created it. A lookup by anyone else, of a
 * deleted response, or of one past its retention reads as not found.
 *
 * A conversation whose older responses were deleted or purged continues from what is left: the
 * chain ends at the first response that is gone.
 */
#ifndef MG_RESPONSE_STORE_H
#define MG_RESPONSE_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "metrics.h"
#include "store.h"

#define MG_RESPONSE_MAX_CHAIN 4096 /* responses a continuation reads back at most */

typedef struct mg_response_store mg_response_store_t;

typedef struct mg_stored_response {
    _Atomic int refs;
    char *id;
    char *principal;
    char *model;
    char *previous_id; /* NULL when it continues nothing */
    char *status;
    int64_t created_ms;
    int64_t expires_ms;    /* 0: kept until deleted */
    json_t *input_items;   /* array; immutable */
    json_t *response;      /* the Response object; immutable */
    bool deleted;          /* a tombstone: deleted here, its row maybe not yet */
    int64_t keep_until_ms; /* a tombstone is not evicted before this */
    size_t bytes;          /* what it is counted as in the cache */
    /* cache links (the shard's lock guards them) */
    struct mg_stored_response *hash_next, *lru_prev, *lru_next;
    bool cached;
} mg_stored_response_t;

/* Creates the store's front. `db_path` is the store file (opened read-only per thread-pool
 * thread, lazily); `writer` takes the rows; metrics (may be NULL) get
 * triplane_model_response_loads_total{source="cache|store"} and
 * triplane_model_response_cache_bytes. retention_days 0: responses do not expire. */
mg_response_store_t *mg_response_store_new(const char *db_path, tp_store_writer_t *writer, size_t cache_bytes,
                                           int retention_days, tp_metrics_t *metrics);

/* Frees the cache and the readers. No load may be in flight. */
void mg_response_store_free(mg_response_store_t *s);

/* Stores a finished response: into the cache at once, and its row through the writer. Takes
 * the references to input_items and response, which must not be modified afterwards.
 * response_text is the response as printed already (compact, in order), or NULL to print it
 * here. */
void mg_response_store_put(mg_response_store_t *s, const char *id, const char *principal, const char *model,
                           const char *previous_id, const char *status, int64_t created_ms, json_t *input_items,
                           json_t *response, const char *response_text);

void mg_stored_response_release(mg_stored_response_t *r);

/* About how many bytes of JSON text the response's input items and output are. */
size_t mg_stored_response_text_bytes(const mg_stored_response_t *r);

/* A response and the ones it continues, oldest first; chain[n-1] is the one asked for. */
typedef struct mg_response_chain {
    mg_stored_response_t **items;
    size_t n;
} mg_response_chain_t;

void mg_response_chain_clear(mg_response_chain_t *c);

/* The conversation items of a chain, for mg_responses_chat_body: each response's input items,
 * then its output items, oldest first (new array; the items are shared, not copied). */
json_t *mg_response_chain_history(const mg_response_chain_t *c);

/* Called on the loop thread with the chain (ownership passes: clear it) — n == 0 when the
 * response is not found for this principal. `source_store` tells whether the store was read. */
typedef void (*mg_response_load_cb)(mg_response_chain_t *chain, void *data);

typedef struct mg_response_load mg_response_load_t;

/* Loads response `id` for `principal`, with the responses it continues when `whole_chain`
 * (else just it). When the cache has all that is needed, cb runs before this returns and NULL is
 * returned. Otherwise the store is read on the thread pool of `loop`, cb runs later on the loop's
 * thread, and the returned handle can cancel it (mg_response_load_cancel: cb will not run). */
mg_response_load_t *mg_response_store_load(mg_response_store_t *s, uv_loop_t *loop, const char *id,
                                           const char *principal, bool whole_chain, mg_response_load_cb cb, void *data);

void mg_response_load_cancel(mg_response_load_t *load);

/* Deletes a response the caller has just loaded (and so owns): a tombstone in the cache, and
 * its row through the writer. */
void mg_response_store_delete(mg_response_store_t *s, const mg_stored_response_t *r);

/* Drops from the cache what gwctl purged from the table: responses of `principal` (NULL: any)
 * created before `before_ms` (0: any time), or the one `id` when not NULL. Returns how many. */
size_t mg_response_store_forget(mg_response_store_t *s, const char *id, const char *principal, int64_t before_ms);

/* Queues the purge of expired rows (run from a timer on the main loop). */
void mg_response_store_purge_expired(mg_response_store_t *s);

#endif
