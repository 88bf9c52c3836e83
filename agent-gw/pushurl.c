/*
 * pushurl.c — the SSRF guard for push-notification URLs (the rules are listed in pushurl.h).
 */
#include "pushurl.h"

#include "pattern.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#define HOST_MAX  AG_PUSHURL_HOST_MAX
#define LABEL_MAX 63

/* ---- address ranges ---- */

typedef struct range4 {
    uint32_t net;
    unsigned len;     /* prefix length */
    const char *what; /* "a private address": finishes "push URL host X is …" */
    bool always;      /* refused even when allow_private: never a webhook */
} range4_t;

/* First match wins, so the narrower ranges come before the ones that contain them. */
static const range4_t ranges4[] = {
    { 0x00000000, 32, "an unspecified address", true },
    { 0xffffffff, 32, "a broadcast address", true },
    { 0xe0000000, 4, "a multicast address", true },
    { 0x00000000, 8, "a reserved address", false }, /* "this network" */
    { 0x0a000000, 8, "a private address", false },
    { 0x64400000, 10, "a shared (carrier-grade NAT) address", false },
    { 0x7f000000, 8, "a loopback address", false },
    { 0xa9fe0000, 16, "a link-local address", false },
    { 0xac100000, 12, "a private address", false },
    { 0xc0000000, 24, "a reserved address", false }, /* IETF protocol assignments */
    { 0xc0000200, 24, "a documentation address", false },
    { 0xc0a80000, 16, "a private address", false },
    { 0xc6120000, 15, "a benchmarking address", false },
    { 0xc6336400, 24, "a documentation address", false },
    { 0xcb007100, 24, "a documentation address", false },
    { 0xf0000000, 4, "a reserved address", false },
};

typedef struct range6 {
    uint8_t net[16];
    unsigned len;
    const char *what; /* NULL: judge the IPv4 address embedded at v4_at instead */
    bool always;
    unsigned v4_at; /* byte offset of the embedded IPv4 address, when what is NULL */
} range6_t;

static const range6_t ranges6[] = {
    { { 0 }, 128, "an unspecified address", true, 0 },
    { { [15] = 1 }, 128, "a loopback address", false, 0 },
    { { [10] = 0xff, [11] = 0xff }, 96, NULL, false, 12 },                         /* IPv4-mapped */
    { { [8] = 0xff, [9] = 0xff }, 96, NULL, false, 12 },                           /* IPv4-translated */
    { { 0x00, 0x64, 0xff, 0x9b }, 96, NULL, false, 12 },                           /* NAT64 */
    { { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 }, 48, "a private address", false, 0 }, /* local NAT64 */
    { { 0x20, 0x02 }, 16, NULL, false, 2 },                                        /* 6to4 */
    { { 0 }, 96, "a reserved address", false, 0 },                                 /* IPv4-compatible */
    { { 0x01, 0x00 }, 64, "a reserved address", false, 0 },                        /* discard-only */
    { { 0x20, 0x01, 0x0d, 0xb8 }, 32, "a documentation address", false, 0 },
    { { 0xfc }, 7, "a private address", false, 0 },
    { { 0xfe, 0x80 }, 10, "a link-local address", false, 0 },
    { { 0xfe, 0xc0 }, 10, "a private address", false, 0 }, /* site-local, deprecated */
    { { 0xff }, 8, "a multicast address", true, 0 },
};

/* The range addr (host byte order) falls in, or NULL for a public address. */
static const range4_t *
classify4(uint32_t addr)
{
    for (size_t i = 0; i < sizeof(ranges4) / sizeof(ranges4[0]); i++) {
        uint32_t mask = ranges4[i].len == 0 ? 0 : 0xffffffffu << (32 - ranges4[i].len);
        if ((addr & mask) == ranges4[i].net)
            return &ranges4[i];
    }
    return NULL;
}

static bool
prefix_match(const uint8_t a[16], const uint8_t net[16], unsigned len)
{
    unsigned full = len / 8, rest = len % 8;
    if (memcmp(a, net, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == net[full];
}

static uint32_t
load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* What addr is ("a loopback address"), or NULL for a public address; *always says whether
 * allow_private lifts the refusal. Embedded IPv4 addresses are judged as IPv4. */
static const char *
classify6(const uint8_t addr[16], bool *always)
{
    for (size_t i = 0; i < sizeof(ranges6) / sizeof(ranges6[0]); i++) {
        const range6_t *r = &ranges6[i];
        if (!prefix_match(addr, r->net, r->len))
            continue;
        if (r->what != NULL) {
            *always = r->always;
            return r->what;
        }
        const range4_t *r4 = classify4(load_be32(addr + r->v4_at));
        if (r4 == NULL)
            return NULL;
        *always = r4->always;
        return r4->what;
    }
    return NULL;
}

/* ---- names ---- */

static bool
ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* True for the names that resolve to the host itself or the local network. A name without a dot
 * is looked up through the resolver's search domains and /etc/hosts ("metadata", a cluster
 * service name), so it is local too. host is lowercase. */
static bool
is_private_name(const char *host)
{
    static const char *const exact[] = { "localhost", "ip6-localhost", "ip6-loopback" };
    static const char *const suffixes[] = { ".localhost", ".local", ".localdomain", ".internal", ".home.arpa" };
    size_t n = strlen(host);

    if (strchr(host, '.') == NULL)
        return true;
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strcmp(host, exact[i]) == 0)
            return true;
    }
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        if (ends_with(host, n, suffixes[i]))
            return true;
    }
    return false;
}

static char
lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool
is_hex(char c)
{
    return is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'f');
}

/* ---- parsing ---- */

typedef enum host_kind {
    HOST_NAME,
    HOST_V4,
    HOST_V6,
} host_kind_t;

typedef struct parsed_host {
    host_kind_t kind;
    char text[HOST_MAX + 2]; /* lowercase, no trailing dot, no brackets */
    uint32_t v4;             /* HOST_V4, host byte order */
    uint8_t v6[16];          /* HOST_V6 */
} parsed_host_t;

__attribute__((format(printf, 3, 4))) static int
fail(char *why, size_t why_len, const char *fmt, ...)
{
    if (why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The host as the messages show it: an IPv6 address in brackets. */
static const char *
shown(const parsed_host_t *h, char *buf, size_t n)
{
    if (h->kind != HOST_V6)
        return h->text;
    snprintf(buf, n, "[%s]", h->text);
    return buf;
}

/* The label at s (n characters) is a number as inet_aton reads one: decimal, octal or 0x-hex. */
static bool
is_numeric_label(const char *s, size_t n)
{
    size_t i = 0;
    if (n >= 2 && s[0] == '0' && s[1] == 'x') {
        for (i = 2; i < n && is_hex(s[i]); i++)
            ;
        return i == n;
    }
    for (; i < n && is_digit(s[i]); i++)
        ;
    return n > 0 && i == n;
}

/* Reads a canonical dotted quad: four decimal numbers 0..255 without leading zeros. */
static bool
parse_canonical_v4(const char *s, uint32_t *out)
{
    uint32_t addr = 0;
    for (int part = 0; part < 4; part++) {
        unsigned v = 0, digits = 0;
        for (; is_digit(*s) && digits < 4; s++, digits++)
            v = v * 10 + (unsigned)(*s - '0');
        if (digits == 0 || digits > 3 || v > 255 || (digits > 1 && s[-(int)digits] == '0'))
            return false;
        addr = addr << 8 | v;
        if (part < 3 && *s++ != '.')
            return false;
    }
    if (*s != '\0')
        return false;
    *out = addr;
    return true;
}

/* Checks a host name's syntax and sorts out numeric hosts. The n characters at s are copied,
 * lowercase, into h->text. Returns 0 or -1 with the reason in why. */
static int
parse_name(const char *s, size_t n, parsed_host_t *h, char *why, size_t why_len)
{
    if (n > 0 && s[n - 1] == '.')
        n--; /* "example.com." is the same name; "localhost." must still be caught */
    if (n == 0)
        return fail(why, why_len, "push URL has no host");
    if (n > HOST_MAX)
        return fail(why, why_len, "push URL host is longer than %d characters", HOST_MAX);
    for (size_t i = 0; i < n; i++)
        h->text[i] = lower(s[i]);
    h->text[n] = '\0';

    const char *t = h->text, *last = t;
    for (size_t start = 0; start <= n;) {
        const char *dot = memchr(t + start, '.', n - start);
        size_t end = dot != NULL ? (size_t)(dot - t) : n, len = end - start;
        bool ok = len >= 1 && len <= LABEL_MAX && t[start] != '-' && t[end - 1] != '-';
        for (size_t i = start; ok && i < end; i++)
            ok = is_digit(t[i]) || (t[i] >= 'a' && t[i] <= 'z') || t[i] == '-';
        if (!ok)
            return fail(why, why_len, "push URL host %s is not a valid host name", t);
        last = t + start;
        start = end + 1;
    }

    /* Resolvers read a name whose last label is a number as an IPv4 address in any of several
     * encodings; only the one everybody reads the same way is accepted. */
    if (!is_numeric_label(last, (size_t)(t + n - last))) {
        h->kind = HOST_NAME;
        return 0;
    }
    if (!parse_canonical_v4(t, &h->v4))
        return fail(why, why_len, "push URL host %s is not an IPv4 address in dotted-quad form", t);
    h->kind = HOST_V4;
    return 0;
}

static int
parse_v6(const char *s, size_t n, parsed_host_t *h, char *why, size_t why_len)
{
    if (n == 0 || n >= INET6_ADDRSTRLEN)
        return fail(why, why_len, "push URL host is not a valid IPv6 address");
    for (size_t i = 0; i < n; i++) {
        if (!is_hex(s[i]) && s[i] != ':' && s[i] != '.')
            return fail(why, why_len, "push URL host is not a valid IPv6 address");
        h->text[i] = lower(s[i]);
    }
    h->text[n] = '\0';
    if (inet_pton(AF_INET6, h->text, h->v6) != 1)
        return fail(why, why_len, "push URL host [%s] is not a valid IPv6 address", h->text);
    h->kind = HOST_V6;
    return 0;
}

/* Reads the n characters at s as a port 1..65535. */
static bool
port_ok(const char *s, size_t n)
{
    unsigned v = 0;
    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

/* Splits the authority (n characters at a, already free of '@') into host and port. */
static int
parse_authority(const char *a, size_t n, parsed_host_t *h, char *why, size_t why_len)
{
    const char *port = NULL;
    int rv;

    if (n > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        if (close == NULL)
            return fail(why, why_len, "push URL host is not a valid IPv6 address");
        rv = parse_v6(a + 1, (size_t)(close - a - 1), h, why, why_len);
        if (rv != 0)
            return rv;
        const char *after = close + 1, *end = a + n;
        if (after < end && *after != ':')
            return fail(why, why_len, "push URL host is not a valid IPv6 address");
        port = after < end ? after + 1 : NULL;
    } else {
        const char *colon = memchr(a, ':', n);
        size_t host_len = colon != NULL ? (size_t)(colon - a) : n;
        rv = parse_name(a, host_len, h, why, why_len);
        if (rv != 0)
            return rv;
        port = colon != NULL ? colon + 1 : NULL;
    }
    if (port != NULL && !port_ok(port, (size_t)(a + n - port)))
        return fail(why, why_len, "push URL has an invalid port");
    return 0;
}

/* Checks the scheme and returns where the authority starts, or NULL with the reason in why. */
static const char *
parse_scheme(const char *url, const ag_pushurl_policy_t *p, char *why, size_t why_len)
{
    const char *colon = strchr(url, ':');
    if (colon == NULL || colon == url || strncmp(colon, "://", 3) != 0) {
        fail(why, why_len, "push URL must be an absolute URL (https://host/path)");
        return NULL;
    }
    size_t n = (size_t)(colon - url);
    bool https = n == 5 && strncasecmp(url, "https", 5) == 0;
    bool http = n == 4 && strncasecmp(url, "http", 4) == 0;
    if (https || (http && p->allow_http))
        return colon + 3;
    fail(why, why_len, p->allow_http ? "push URL scheme must be https or http" : "push URL scheme must be https");
    return NULL;
}

/* Judges a parsed host against the allow-list, the address ranges and the private names. */
static int
check_host(const parsed_host_t *h, const ag_pushurl_policy_t *p, char *why, size_t why_len)
{
    char buf[HOST_MAX + 4]; /* room for any host text in brackets */

    if (p->num_allowed_hosts > 0) {
        bool allowed = false;
        for (size_t i = 0; i < p->num_allowed_hosts && !allowed; i++)
            allowed = p->allowed_hosts[i] != NULL && tp_pattern_match(p->allowed_hosts[i], h->text, strlen(h->text));
        if (!allowed)
            return fail(why, why_len, "push URL host %s is not in the allowed hosts", shown(h, buf, sizeof(buf)));
    }

    const char *what = NULL;
    bool always = false;
    if (h->kind == HOST_V4) {
        const range4_t *r = classify4(h->v4);
        if (r != NULL) {
            what = r->what;
            always = r->always;
        }
    } else if (h->kind == HOST_V6) {
        what = classify6(h->v6, &always);
    } else if (is_private_name(h->text)) {
        what = "a private name";
    }
    if (what != NULL && (always || !p->allow_private))
        return fail(why, why_len, "push URL host %s is %s", shown(h, buf, sizeof(buf)), what);
    return 0;
}

int
ag_pushurl_check(const char *url, const ag_pushurl_policy_t *p, char *why, size_t why_len)
{
    static const ag_pushurl_policy_t defaults;
    if (p == NULL)
        p = &defaults;
    if (why_len > 0)
        why[0] = '\0';
    if (url == NULL || url[0] == '\0')
        return fail(why, why_len, "push URL is empty");

    size_t len = strnlen(url, AG_PUSHURL_MAX_LEN + 1);
    if (len > AG_PUSHURL_MAX_LEN)
        return fail(why, why_len, "push URL is longer than %d bytes", AG_PUSHURL_MAX_LEN);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f || c == '\\')
            return fail(why, why_len, "push URL must be printable ASCII, without spaces or backslashes");
    }

    const char *auth = parse_scheme(url, p, why, why_len);
    if (auth == NULL)
        return -1;
    size_t auth_len = strcspn(auth, "/?#");
    if (memchr(auth, '@', auth_len) != NULL)
        return fail(why, why_len, "push URL must not carry credentials");
    if (memchr(auth, '%', auth_len) != NULL)
        return fail(why, why_len, "push URL host must not be percent-encoded");
    if (auth_len == 0)
        return fail(why, why_len, "push URL has no host");

    parsed_host_t h;
    int rv = parse_authority(auth, auth_len, &h, why, why_len);
    if (rv != 0)
        return rv;
    return check_host(&h, p, why, why_len);
}

int
ag_pushurl_check_resolved(const struct sockaddr *sa, const ag_pushurl_policy_t *p, char *why, size_t why_len)
{
    static const ag_pushurl_policy_t defaults;
    char text[INET6_ADDRSTRLEN];
    const char *what = NULL;
    bool always = false;

    if (p == NULL)
        p = &defaults;
    if (why_len > 0)
        why[0] = '\0';
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        const range4_t *r = classify4(ntohl(in->sin_addr.s_addr));
        if (r != NULL) {
            what = r->what;
            always = r->always;
        }
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        what = classify6(in6->sin6_addr.s6_addr, &always);
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    } else {
        return fail(why, why_len, "push URL host resolved to an address that is neither IPv4 nor IPv6");
    }
    if (what != NULL && (always || !p->allow_private))
        return fail(why, why_len, "push URL host resolved to %s, %s", text, what);
    return 0;
}

int
ag_pushurl_host(const char *url, char *host, size_t host_len)
{
    static const ag_pushurl_policy_t any_scheme = { .allow_http = true };
    if (url == NULL || strnlen(url, AG_PUSHURL_MAX_LEN + 1) > AG_PUSHURL_MAX_LEN)
        return -1;
    const char *auth = parse_scheme(url, &any_scheme, NULL, 0);
    if (auth == NULL)
        return -1;
    size_t auth_len = strcspn(auth, "/?#");
    if (auth_len == 0 || memchr(auth, '@', auth_len) != NULL || memchr(auth, '%', auth_len) != NULL)
        return -1;
    parsed_host_t h;
    if (parse_authority(auth, auth_len, &h, NULL, 0) != 0 || strlen(h.text) >= host_len)
        return -1;
    memcpy(host, h.text, strlen(h.text) + 1);
    return h.kind == HOST_NAME ? 1 : 0;
}
