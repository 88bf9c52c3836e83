/*
 * metrics.h — a registry of counters, gauges and histograms with labels, exposed as Prometheus
 * text format 0.0.4.
 *
 * Sharding: the registry has a fixed number of shards. Each thread that records values binds
 * itself to one shard (tp_metrics_bind_shard); a worker thread owns its shard, so recording
 * takes only that shard's mutex, which no other thread takes except the scraper. A scrape
 * merges all shards. Threads that never bind use shard 0 (the main thread's).
 *
 * Families are registered at start-up (single-threaded, before workers run); series (one per
 * distinct label-value tuple) are created on first use from any thread. Label values are copied.
 */
#ifndef TP_METRICS_H
#define TP_METRICS_H

#include <stddef.h>

typedef struct tp_metrics tp_metrics_t;
typedef struct tp_metric tp_metric_t;

/* Creates a registry with `shards` shards (>= 1). Aborts on out-of-memory. */
tp_metrics_t *tp_metrics_new(unsigned shards);

/* Frees the registry and every family in it. No thread may record afterwards. */
void tp_metrics_free(tp_metrics_t *reg);

/* Binds the calling thread to shard `shard` of every registry (the index is thread-local; it
 * must be < the registry's shard count, otherwise shard 0 is used). */
void tp_metrics_bind_shard(unsigned shard);

/* Registers a family. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*, counters should end in
 * "_total"; `labels` is a NULL-terminated array of label names (or NULL for none), copied.
 * Registering the same name twice returns the existing family if the type and labels match,
 * and aborts otherwise (a programming error). The registry owns the result. */
tp_metric_t *tp_metrics_counter(tp_metrics_t *reg, const char *name, const char *help, const char *const *labels);
tp_metric_t *tp_metrics_gauge(tp_metrics_t *reg, const char *name, const char *help, const char *const *labels);

/* `bounds` are the upper bounds of the buckets, strictly increasing, without +Inf (added
 * automatically); copied. */
tp_metric_t *tp_metrics_histogram(tp_metrics_t *reg, const char *name, const char *help, const char *const *labels,
                                  const double *bounds, size_t nbounds);

/* A gauge whose value is computed at scrape time by fn(data) (no labels). fn runs on the
 * scraping thread and must be thread-safe. */
tp_metric_t *tp_metrics_gauge_fn(tp_metrics_t *reg, const char *name, const char *help, double (*fn)(void *data),
                                 void *data);

/* Default latency buckets in seconds: 1 ms … 60 s. */
extern const double tp_metrics_latency_buckets[];
extern const size_t tp_metrics_latency_buckets_count;

/* Recording. `values` holds one label value per label name of the family, in order (NULL when
 * the family has no labels). A NULL value is recorded as "". */

/* Adds v (>= 0) to a counter, or v (any sign) to a gauge. */
void tp_metric_add(tp_metric_t *m, const char *const *values, double v);

/* Sets a gauge's value. A set gauge is not summed across shards: the value last set wins,
 * plus whatever tp_metric_add added. */
void tp_metric_set(tp_metric_t *m, const char *const *values, double v);

/* Records one observation in a histogram. */
void tp_metric_observe(tp_metric_t *m, const char *const *values, double v);

/* Renders the whole registry as Prometheus text (families in registration order, series in
 * creation order). Returns a malloc'd NUL-terminated string (free() it) and its length in *len
 * when len is not NULL. Thread-safe against concurrent recording. */
char *tp_metrics_render(tp_metrics_t *reg, size_t *len);

/* The current value of a counter or gauge series summed over shards (0 when the series does
 * not exist), for tests and status output. */
double tp_metric_value(tp_metric_t *m, const char *const *values);

#endif
