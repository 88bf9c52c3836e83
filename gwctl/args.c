/* args.c — subcommand dispatch, option and value parsing, and tables for gwctl's state commands. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "args.h"
#include "mem.h"

#define MS_PER_DAY (86400 * INT64_C(1000))

/* ---- calls and subcommands ---- */

void
gwctl_call_begin(gwctl_call_t *c, gwctl_t *g, const gwctl_command_t *cmd)
{
    *c = (gwctl_call_t){ .g = g, .usage = cmd->usage };
    snprintf(c->who, sizeof(c->who), "%s", cmd->name);
    optind = 0; /* glibc: start afresh, forgetting where the last scan stopped */
}

int
gwctl_call_end(gwctl_call_t *c, int rv)
{
    /* A call that asked for an actor changed the store: tell the daemons now rather than let
     * them find out at their next watch tick. */
    if (rv == 0 && c->actor != NULL)
        gwctl_notify_daemons(c->g);
    if (c->store != NULL)
        tp_store_close(c->store);
    free(c->actor);
    c->store = NULL;
    c->actor = NULL;
    return rv;
}

sqlite3 *
gwctl_call_db(gwctl_call_t *c)
{
    if (c->store == NULL)
        c->store = gwctl_open_store(c->g, false);
    return c->store != NULL ? tp_store_db(c->store) : NULL;
}

const char *
gwctl_call_actor(gwctl_call_t *c)
{
    if (c->actor == NULL)
        c->actor = pol_admin_actor();
    return c->actor;
}

static void
print_usage_lines(FILE *out, const gwctl_command_t *cmd, const gwctl_sub_t *subs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s gwctl %s %s%s\n", i == 0 ? "usage:" : "      ", cmd->name, subs[i].name, subs[i].usage);
}

int
gwctl_run_sub(const gwctl_command_t *cmd, const gwctl_sub_t *subs, size_t n, gwctl_t *g, int argc, char **argv)
{
    const gwctl_sub_t *sub = NULL;
    for (size_t i = 0; argc > 1 && i < n; i++) {
        if (strcmp(subs[i].name, argv[1]) == 0)
            sub = &subs[i];
    }
    if (sub == NULL) {
        if (argc > 1)
            fprintf(stderr, "gwctl %s: unknown subcommand '%s'\n", cmd->name, argv[1]);
        else
            fprintf(stderr, "gwctl %s: a subcommand is needed\n", cmd->name);
        print_usage_lines(stderr, cmd, subs, n);
        return 2;
    }
    gwctl_call_t c;
    gwctl_call_begin(&c, g, cmd);
    snprintf(c.who, sizeof(c.who), "%s %s", cmd->name, sub->name);
    c.usage = sub->usage;
    return gwctl_call_end(&c, sub->run(&c, argc - 1, argv + 1));
}

/* ---- messages ---- */

/* The length of a usage text's synopsis: the explanation after it starts on a line indented by
 * two spaces (continued synopsis lines are indented further). */
static size_t
syntax_length(const char *usage)
{
    for (const char *p = strchr(usage, '\n'); p != NULL; p = strchr(p + 1, '\n')) {
        if (p[1] == ' ' && p[2] == ' ' && p[3] != ' ')
            return (size_t)(p - usage);
    }
    return strlen(usage);
}

int
gwctl_usage_error(const gwctl_call_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gwctl %s: ", c->who);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: gwctl %s%.*s\n", c->who, (int)syntax_length(c->usage), c->usage);
    return 2;
}

int
gwctl_error(const gwctl_call_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gwctl %s: ", c->who);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int
gwctl_fail(const gwctl_call_t *c, char *err)
{
    gwctl_error(c, "%s", err != NULL ? err : "failed");
    free(err);
    return 1;
}

/* ---- options ---- */

int
gwctl_getopt(const gwctl_call_t *c, int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    char spec[64];
    snprintf(spec, sizeof(spec), ":%s", shortopts); /* ':' first: a missing value is told apart */
    opterr = 0;
    int opt = getopt_long(argc, argv, spec, longopts, NULL);
    const char *text = optind - 1 < argc ? argv[optind - 1] : "";
    if (opt == ':')
        gwctl_usage_error(c, "option '%s' needs a value", text);
    else if (opt == '?' && optopt != 0)
        gwctl_usage_error(c, "unknown option '-%c'", optopt);
    else if (opt == '?')
        gwctl_usage_error(c, "unknown option '%s'", text);
    return opt == ':' ? '?' : opt;
}

int
gwctl_operands(const gwctl_call_t *c, int argc, char **argv, int n, const char *name, const char **operand)
{
    int have = argc - optind;
    if (have < n)
        return gwctl_usage_error(c, "%s is missing", name);
    if (have > n)
        return gwctl_usage_error(c, "unexpected argument '%s'", argv[optind + n]);
    if (n == 1)
        *operand = argv[optind];
    return 0;
}

int
gwctl_plain_args(const gwctl_call_t *c, int argc, char **argv, int n, const char *name, const char **operand)
{
    static const struct option none[] = { { NULL, 0, NULL, 0 } };
    if (gwctl_getopt(c, argc, argv, "", none) != -1)
        return 2;
    return gwctl_operands(c, argc, argv, n, name, operand);
}

/* ---- values ---- */

/* Reads exactly `width` digits (width 0: one or more, up to 18) at *s, advancing it. */
static int
read_digits(const char **s, int width, int64_t *out)
{
    int64_t v = 0;
    int n = 0;
    while (isdigit((unsigned char)**s) && (width == 0 ? n < 18 : n < width)) {
        v = v * 10 + (**s - '0');
        (*s)++;
        n++;
    }
    if (n == 0 || (width != 0 && n != width) || (width == 0 && isdigit((unsigned char)**s)))
        return -EINVAL;
    *out = v;
    return 0;
}

static int64_t
unit_ms(const char **s)
{
    static const struct {
        const char *name;
        int64_t ms;
    } units[] = {
        { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", MS_PER_DAY }, { "w", 7 * MS_PER_DAY },
    };
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        size_t len = strlen(units[i].name);
        if (strncmp(*s, units[i].name, len) == 0 && !isalpha((unsigned char)(*s)[len])) {
            *s += len;
            return units[i].ms;
        }
    }
    return 0;
}

int
gwctl_parse_duration(const char *s, int64_t *ms)
{
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    int64_t total = 0;
    do {
        int64_t v, unit;
        if (read_digits(&s, 0, &v) != 0 || (unit = unit_ms(&s)) == 0 || v > (INT64_MAX - total) / unit)
            return -EINVAL;
        total += v * unit;
    } while (*s != '\0');
    *ms = total;
    return 0;
}

/* "+HH:MM", "-HH:MM", "Z" or "z" as seconds east of UTC. */
static int
parse_offset(const char *s, int64_t *seconds)
{
    int64_t h, m;
    if ((s[0] == 'Z' || s[0] == 'z') && s[1] == '\0') {
        *seconds = 0;
        return 0;
    }
    if (s[0] != '+' && s[0] != '-')
        return -EINVAL;
    const char *p = s + 1;
    if (read_digits(&p, 2, &h) != 0 || *p++ != ':' || read_digits(&p, 2, &m) != 0 || *p != '\0' || h > 23 || m > 59)
        return -EINVAL;
    *seconds = (s[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return 0;
}

/* Seconds since the epoch of a UTC calendar time, or -EINVAL when a field is out of range. */
static int
utc_seconds(int64_t y, int64_t mo, int64_t d, int64_t h, int64_t mi, int64_t sec, int64_t *out)
{
    struct tm tm = { .tm_year = (int)y - 1900,
                     .tm_mon = (int)mo - 1,
                     .tm_mday = (int)d,
                     .tm_hour = (int)h,
                     .tm_min = (int)mi,
                     .tm_sec = (int)sec };
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60)
        return -EINVAL;
    time_t t = timegm(&tm);
    if (tm.tm_mday != d) /* timegm moved Feb 30 to March */
        return -EINVAL;
    *out = (int64_t)t;
    return 0;
}

/* "HH:MM:SS[.fff…]" at *s, advancing it; fractions below a millisecond are dropped. */
static int
parse_clock(const char **s, int64_t *h, int64_t *mi, int64_t *sec, int64_t *frac_ms)
{
    if (read_digits(s, 2, h) != 0 || *(*s)++ != ':' || read_digits(s, 2, mi) != 0 || *(*s)++ != ':' ||
        read_digits(s, 2, sec) != 0)
        return -EINVAL;
    *frac_ms = 0;
    if (**s != '.')
        return 0;
    int n = 0;
    for ((*s)++; isdigit((unsigned char)**s); (*s)++, n++) {
        if (n < 3)
            *frac_ms = *frac_ms * 10 + (**s - '0');
    }
    for (int i = n; i < 3; i++)
        *frac_ms *= 10;
    return n > 0 ? 0 : -EINVAL;
}

static int
parse_rfc3339(const char *s, int64_t *ms)
{
    int64_t y, mo, d, h = 0, mi = 0, sec = 0, frac_ms = 0, offset = 0, t;
    if (read_digits(&s, 4, &y) != 0 || *s++ != '-' || read_digits(&s, 2, &mo) != 0 || *s++ != '-' ||
        read_digits(&s, 2, &d) != 0)
        return -EINVAL;
    if (*s != '\0') { /* a date alone is its midnight UTC */
        if (*s != 'T' && *s != 't' && *s != ' ')
            return -EINVAL;
        s++;
        if (parse_clock(&s, &h, &mi, &sec, &frac_ms) != 0 || parse_offset(s, &offset) != 0)
            return -EINVAL;
    }
    if (utc_seconds(y, mo, d, h, mi, sec, &t) != 0)
        return -EINVAL;
    *ms = (t - offset) * 1000 + frac_ms;
    return 0;
}

int
gwctl_parse_time(const char *s, int64_t now_ms, int64_t *ms)
{
    int64_t ago;
    if (strcmp(s, "now") == 0)
        *ms = now_ms;
    else if (strcmp(s, "today") == 0)
        *ms = gwctl_day_start_ms(now_ms);
    else if (s[0] == '-' && gwctl_parse_duration(s + 1, &ago) == 0)
        *ms = now_ms - ago;
    else
        return parse_rfc3339(s, ms);
    return 0;
}

int
gwctl_parse_money(const char *s, int64_t *micros)
{
    int64_t whole, frac = 0;
    int decimals = 0;
    if (read_digits(&s, 0, &whole) != 0 || whole > INT64_MAX / 1000000 - 1)
        return -EINVAL;
    if (*s == '.') {
        for (s++; isdigit((unsigned char)*s) && decimals < 6; s++, decimals++)
            frac = frac * 10 + (*s - '0');
        if (decimals == 0)
            return -EINVAL;
    }
    if (*s != '\0')
        return -EINVAL;
    for (; decimals < 6; decimals++)
        frac *= 10;
    *micros = whole * 1000000 + frac;
    return 0;
}

int
gwctl_parse_count(const char *s, int64_t *n)
{
    return read_digits(&s, 0, n) == 0 && *s == '\0' ? 0 : -EINVAL;
}

int
gwctl_parse_label(const char *s, json_t *labels)
{
    const char *eq = strchr(s, '=');
    if (eq == NULL || eq == s)
        return -EINVAL;
    char *key = tp_strndup(s, (size_t)(eq - s));
    json_object_set_new(labels, key, json_string(eq + 1));
    free(key);
    return 0;
}

int64_t
gwctl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
gwctl_day_start_ms(int64_t ms)
{
    int64_t day = ms / MS_PER_DAY - (ms % MS_PER_DAY < 0);
    return day * MS_PER_DAY;
}

const char *
gwctl_format_time(int64_t ms, char buf[GWCTL_TIME_LEN])
{
    if (ms == 0)
        return strcpy(buf, "-");
    time_t t = (time_t)(ms / 1000 - (ms % 1000 < 0));
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, GWCTL_TIME_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

const char *
gwctl_format_money(int64_t micros, char buf[GWCTL_MONEY_LEN])
{
    snprintf(buf, GWCTL_MONEY_LEN, "%s%lld.%06lld", micros < 0 ? "-" : "", llabs(micros / 1000000),
             llabs(micros % 1000000));
    size_t len = strlen(buf);
    while (buf[len - 1] == '0' && buf[len - 3] != '.') /* keep two decimals */
        buf[--len] = '\0';
    return buf;
}

/* ---- tables ---- */

void
gwctl_table_row(gwctl_table_t *t, ...)
{
    t->cells = tp_realloc(t->cells, (t->rows + 1) * t->cols * sizeof(*t->cells));
    va_list ap;
    va_start(ap, t);
    for (size_t i = 0; i < t->cols; i++) {
        const char *cell = va_arg(ap, const char *);
        t->cells[t->rows * t->cols + i] = tp_strdup(cell != NULL && cell[0] != '\0' ? cell : "-");
    }
    va_end(ap);
    t->rows++;
}

void
gwctl_table_print(gwctl_table_t *t)
{
    gwctl_print_table((const char *const *)t->cells, t->rows, t->cols);
    for (size_t i = 0; i < t->rows * t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->rows = 0;
}

const char *
gwctl_shorten(const char *s, char *buf, size_t max)
{
    if (s == NULL)
        s = "";
    size_t len = strlen(s);
    if (len <= max) {
        memcpy(buf, s, len + 1);
        return buf;
    }
    memcpy(buf, s, max - 3);
    strcpy(buf + max - 3, "...");
    return buf;
}

const char *
gwctl_join(json_t *array, char *buf, size_t max)
{
    size_t len = 0, i;
    json_t *item;
    char *all = tp_strdup("");
    json_array_foreach(array, i, item)
    {
        const char *s = json_string_value(item);
        if (s == NULL)
            continue;
        all = tp_realloc(all, len + strlen(s) + 2);
        len += (size_t)sprintf(all + len, "%s%s", len > 0 ? "," : "", s);
    }
    gwctl_shorten(all, buf, max);
    free(all);
    return buf;
}
