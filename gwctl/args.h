/*
 * args.h — what gwctl's state commands share: subcommand dispatch, the call context (store and
 * actor opened on first use), option parsing with gwctl's messages, parsers for the values
 * admins type (durations, times, money, counts, labels), and a table builder for their output.
 *
 * Every parser returns 0 on success or -EINVAL when the text is not valid; the caller prints
 * the usage error, so parsers print nothing.
 */
#ifndef GWCTL_ARGS_H
#define GWCTL_ARGS_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "gwctl.h"

/* One invocation of a (sub)command. */
typedef struct gwctl_call {
    gwctl_t *g;
    char who[64];      /* "principal add": the prefix of every message */
    const char *usage; /* what follows "gwctl WHO" in a usage line */
    tp_store_t *store; /* opened by gwctl_call_db, closed by gwctl_call_end */
    char *actor;       /* from pol_admin_actor, made by gwctl_call_actor, freed by gwctl_call_end */
} gwctl_call_t;

typedef struct gwctl_sub {
    const char *name;  /* "add" */
    const char *usage; /* arguments after "gwctl CMD NAME", e.g. " ID --kind KIND" */
    /* argv[0] is the subcommand's name; returns the exit status (0, 1 or 2). */
    int (*run)(gwctl_call_t *c, int argc, char **argv);
} gwctl_sub_t;

/* Runs the subcommand named by argv[1] of `cmd` (argv[0] is the command's name), or prints a
 * usage error (exit 2) when it is missing or unknown. Closes what the call opened. */
int gwctl_run_sub(const gwctl_command_t *cmd, const gwctl_sub_t *subs, size_t n, gwctl_t *g, int argc, char **argv);

/* Sets up a call for a command without subcommands; finish it with gwctl_call_end. */
void gwctl_call_begin(gwctl_call_t *c, gwctl_t *g, const gwctl_command_t *cmd);

/* Returns rv after closing the store and freeing the actor. */
int gwctl_call_end(gwctl_call_t *c, int rv);

/* The store's connection, opened (not created) on first use; NULL after printing why. */
sqlite3 *gwctl_call_db(gwctl_call_t *c);

/* The actor for audited changes (pol_admin_actor), owned by the call. */
const char *gwctl_call_actor(gwctl_call_t *c);

/* Prints "gwctl WHO: message" and "usage: gwctl WHO USAGE" to stderr; returns 2. */
int gwctl_usage_error(const gwctl_call_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "gwctl WHO: message" to stderr; returns 1. */
int gwctl_error(const gwctl_call_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "gwctl WHO: err" (err from a pol_admin_* call, may be NULL) and frees err; returns 1. */
int gwctl_fail(const gwctl_call_t *c, char *err);

/* getopt_long over argv with gwctl's messages. Returns the option's value, -1 after the last
 * option (optind is then the first operand), or '?' after printing a usage error. Reset
 * optind to 1 (gwctl_run_sub does) before the first call. */
int gwctl_getopt(const gwctl_call_t *c, int argc, char **argv, const char *shortopts, const struct option *longopts);

/* After options: requires exactly `n` operands (0, 1) and sets *operand to it when n is 1.
 * `name` names the operand in the message ("ID"). Returns 0, or 2 after a usage error. */
int gwctl_operands(const gwctl_call_t *c, int argc, char **argv, int n, const char *name, const char **operand);

/* For subcommands without options: refuses any option, then checks operands as gwctl_operands. */
int gwctl_plain_args(const gwctl_call_t *c, int argc, char **argv, int n, const char *name, const char **operand);

/* "30s", "15m", "24h", "7d", "2w", "500ms", or a sum such as "1h30m". */
int gwctl_parse_duration(const char *s, int64_t *ms);

/* An RFC 3339 time ("2024-05-01T12:00:00Z", "…+02:00", fractions allowed), a UTC date
 * ("2024-05-01", its midnight), "now", "today" (midnight UTC), or a duration before now ("-1h"). */
int gwctl_parse_time(const char *s, int64_t now_ms, int64_t *ms);

/* A non-negative amount with at most 6 decimals ("12.50") as millionths (12500000). */
int gwctl_parse_money(const char *s, int64_t *micros);

/* A non-negative decimal integer. */
int gwctl_parse_count(const char *s, int64_t *n);

/* "key=value" into labels (an object; the value is set as a new string). The key is not empty. */
int gwctl_parse_label(const char *s, json_t *labels);

/* Unix time in milliseconds now, and the start of its UTC day. */
int64_t gwctl_now_ms(void);
int64_t gwctl_day_start_ms(int64_t ms);

/* Formats ms since the epoch as RFC 3339 UTC ("2024-05-01T12:00:00Z"); "-" for 0. */
#define GWCTL_TIME_LEN 32
const char *gwctl_format_time(int64_t ms, char buf[GWCTL_TIME_LEN]);

/* Formats millionths as money with 2 to 6 decimals ("12.50", "0.000125"). */
#define GWCTL_MONEY_LEN 32
const char *gwctl_format_money(int64_t micros, char buf[GWCTL_MONEY_LEN]);

/* ---- tables ---- */

/* Rows of strings for gwctl_print_table; cells are copied. */
typedef struct gwctl_table {
    size_t cols;
    size_t rows;
    char **cells; /* rows × cols */
} gwctl_table_t;

#define GWCTL_TABLE(ncols) ((gwctl_table_t){ .cols = (ncols) })

/* Appends a row of t->cols strings (NULL or "" shows as "-"). */
void gwctl_table_row(gwctl_table_t *t, ...);

/* Prints the table (row 0 is the header) and frees its cells. */
void gwctl_table_print(gwctl_table_t *t);

/* The strings of a JSON array joined with ",", shortened to at most max bytes with "..."
 * (max >= 4); "" when there are none. Returns buf. */
const char *gwctl_join(json_t *array, char *buf, size_t max);

/* s (may be NULL: "") shortened to at most max bytes with "...". Returns buf (max + 1 bytes). */
const char *gwctl_shorten(const char *s, char *buf, size_t max);

#endif
