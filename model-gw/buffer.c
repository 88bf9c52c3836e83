#include "buffer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define CACHE_MAX 64 /* chunks one thread keeps: more than a worker has requests at its high-water mark is rare */

typedef struct cache {
    char *chunks[CACHE_MAX];
    size_t count;
} cache_t;

static pthread_key_t cache_key; /* its destructor frees a thread's cache when the thread exits */
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void
free_cache(void *arg)
{
    cache_t *c = arg;
    for (size_t i = 0; i < c->count; i++)
        free(c->chunks[i]);
    free(c);
}

static void
make_key(void)
{
    if (pthread_key_create(&cache_key, free_cache) != 0)
        abort();
}

static cache_t *
this_cache(void)
{
    pthread_once(&cache_once, make_key);
    cache_t *c = pthread_getspecific(cache_key);
    if (c == NULL) {
        c = tp_calloc(1, sizeof(*c));
        pthread_setspecific(cache_key, c);
    }
    return c;
}

char *
mg_buffer_reserve(mg_buffer_t *b, size_t more)
{
    if (b->cap - b->len >= more)
        return b->data + b->len;
    size_t need = b->len + more;
    if (b->data == NULL && need <= MG_BUFFER_CHUNK) {
        cache_t *c = this_cache();
        b->data = c->count > 0 ? c->chunks[--c->count] : tp_malloc(MG_BUFFER_CHUNK);
        b->cap = MG_BUFFER_CHUNK;
        return b->data + b->len;
    }
    size_t cap = b->cap != 0 ? b->cap : MG_BUFFER_CHUNK;
    while (cap < need)
        cap *= 2;
    if (b->cap == MG_BUFFER_CHUNK) {
        /* keep the chunk for the cache; the data moves to a larger allocation */
        char *grown = tp_malloc(cap);
        memcpy(grown, b->data, b->len);
        mg_buffer_release(&(mg_buffer_t){ .data = b->data, .cap = b->cap });
        b->data = grown;
    } else {
        b->data = tp_realloc(b->data, cap);
    }
    b->cap = cap;
    return b->data + b->len;
}

void
mg_buffer_add(mg_buffer_t *b, const void *data, size_t len)
{
    if (len == 0)
        return;
    memcpy(mg_buffer_reserve(b, len), data, len);
    b->len += len;
}

void
mg_buffer_release(mg_buffer_t *b)
{
    if (b->data != NULL) {
        cache_t *c = b->cap == MG_BUFFER_CHUNK ? this_cache() : NULL;
        if (c != NULL && c->count < CACHE_MAX)
            c->chunks[c->count++] = b->data;
        else
            free(b->data);
    }
    *b = (mg_buffer_t){ 0 };
}
