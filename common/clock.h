/*
 * clock.h — the two clocks the code base reads: wall-clock Unix time in milliseconds (for what
 * is stored or shown: audit rows, expiries, budgets' periods) and a monotonic clock in
 * nanoseconds (for durations, timeouts and rate limits, which must not jump with the wall
 * clock). Inline: they sit on request paths.
 */
#ifndef TP_CLOCK_H
#define TP_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Unix time, in milliseconds. */
static inline int64_t
tp_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLOCK_MONOTONIC, in nanoseconds. */
static inline uint64_t
tp_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
