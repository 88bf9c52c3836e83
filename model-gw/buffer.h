/*
 * buffer.h — growable byte buffers for what model-gw relays (an upstream's answer, the events
 * queued for a client), with their storage recycled per thread.
 *
 * Most of these buffers live for one request and stay under MG_BUFFER_CHUNK bytes. Storage of
 * exactly that size is kept, on release, in a small cache of the releasing thread and handed out
 * again by the next buffer on that thread, so a worker's steady state allocates nothing for them
 * (and glibc does not consolidate its free lists for a large allocation per request). Larger
 * storage goes back to malloc. A thread's cache is freed when the thread exits.
 */
#ifndef MG_BUFFER_H
#define MG_BUFFER_H

#include <stddef.h>

#define MG_BUFFER_CHUNK 8192 /* storage size that is recycled; buffers grow by doubling from it */

typedef struct mg_buffer {
    char *data; /* NULL until the first write */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
} mg_buffer_t;

/* Makes room for `more` bytes after the used ones and returns where they go (the caller then
 * adds what it wrote to len). Aborts on out-of-memory, as tp_malloc does. */
char *mg_buffer_reserve(mg_buffer_t *b, size_t more);

/* Appends len bytes. */
void mg_buffer_add(mg_buffer_t *b, const void *data, size_t len);

/* Releases the storage (to this thread's cache when it is a chunk) and empties the buffer. */
void mg_buffer_release(mg_buffer_t *b);

#endif
