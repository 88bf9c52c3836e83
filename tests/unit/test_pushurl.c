/*
 * test_pushurl.c — the SSRF guard for push-notification URLs (agent-gw/pushurl.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "pushurl.h"

static const char *const hosts[] = {
    "hooks.example.com", "*.callbacks.example.org", "10.1.2.3", "HOOKS.*.example.net", "2001:db8::1", "*.internal",
};
static const char *const one_host[] = { "hooks.example.com" };
static const char *const star[] = { "*" };

static const ag_pushurl_policy_t def = { 0 };
static const ag_pushurl_policy_t http = { .allow_http = true };
static const ag_pushurl_policy_t priv = { .allow_private = true };
static const ag_pushurl_policy_t listed = { .allowed_hosts = hosts, .num_allowed_hosts = 6 };
static const ag_pushurl_policy_t listed_priv = { .allow_private = true,
                                                 .allowed_hosts = hosts,
                                                 .num_allowed_hosts = 6 };
static const ag_pushurl_policy_t listed_one = { .allowed_hosts = one_host, .num_allowed_hosts = 1 };
static const ag_pushurl_policy_t listed_star = { .allowed_hosts = star, .num_allowed_hosts = 1 };

typedef struct url_case {
    const ag_pushurl_policy_t *p;
    const char *url;
    const char *why; /* NULL: accepted */
} url_case_t;

#define OK(p, url)                                                                                                     \
    {                                                                                                                  \
        &(p), url, NULL                                                                                                \
    }
#define NO(p, url, why)                                                                                                \
    {                                                                                                                  \
        &(p), url, why                                                                                                 \
    }
#define PRIVATE(h)     "push URL host " h " is a private address"
#define LOOPBACK(h)    "push URL host " h " is a loopback address"
#define LINKLOCAL(h)   "push URL host " h " is a link-local address"
#define RESERVED(h)    "push URL host " h " is a reserved address"
#define MULTICAST(h)   "push URL host " h " is a multicast address"
#define NAME(h)        "push URL host " h " is a private name"
#define NONCANON(h)    "push URL host " h " is not an IPv4 address in dotted-quad form"
#define NOT_ALLOWED(h) "push URL host " h " is not in the allowed hosts"
#define BAD_NAME(h)    "push URL host " h " is not a valid host name"
#define HTTPS_ONLY     "push URL scheme must be https"
#define NOT_ABSOLUTE   "push URL must be an absolute URL (https://host/path)"
#define CREDENTIALS    "push URL must not carry credentials"
#define NOT_PRINTABLE  "push URL must be printable ASCII, without spaces or backslashes"
#define BAD_PORT       "push URL has an invalid port"
#define BAD_V6         "push URL host is not a valid IPv6 address"

static void
run_cases(const url_case_t *cases, size_t n)
{
    unsigned failed = 0;
    for (size_t i = 0; i < n; i++) {
        char why[256];
        memset(why, 'z', sizeof(why));
        int rv = ag_pushurl_check(cases[i].url, cases[i].p, why, sizeof(why));
        if (cases[i].why == NULL && rv != 0) {
            print_error("refused %s: %s\n", cases[i].url, why);
            failed++;
        } else if (cases[i].why == NULL && why[0] != '\0') {
            print_error("accepted %s but left a reason: %s\n", cases[i].url, why);
            failed++;
        } else if (cases[i].why != NULL && (rv != -1 || strcmp(why, cases[i].why) != 0)) {
            print_error("%s: expected \"%s\", got %d \"%s\"\n", cases[i].url, cases[i].why, rv, rv ? why : "");
            failed++;
        }
    }
    if (failed > 0)
        fail_msg("%u of %zu cases wrong", failed, n);
    printf("# %zu cases\n", n);
}

static void
test_good_urls(void **state)
{
    static const url_case_t cases[] = {
        OK(def, "https://hooks.example.com/a2a/push"),
        OK(def, "https://hooks.example.com"),
        OK(def, "https://hooks.example.com:8443/x?y=1#frag"),
        OK(def, "https://hooks.example.com?x=1"),
        OK(def, "HTTPS://Hooks.Example.COM/Path"), /* scheme and host are case-insensitive */
        OK(def, "HtTpS://example.com/"),
        OK(def, "https://example.com./"), /* one trailing dot */
        OK(def, "https://a-b.example.com/"),
        OK(def, "https://xn--bcher-kva.example/"), /* IDNs as punycode */
        OK(def, "https://bad.cafe/"),              /* hex letters, but a name */
        OK(def, "https://1e100.net/"),
        OK(def, "https://0x7f.example.com/"), /* a numeric label that is not the last */
        OK(def, "https://127.0.0.1.example.com/"),
        OK(def, "https://localhost.example.com/"),
        OK(def, "https://local.example.com/"),
        OK(def, "https://internal.example.com/"),
        OK(def, "https://notlocal.com/"),
        OK(def, "https://example.com/path@with-at/and:colon"),
        OK(def, "https://example.com:1/"),
        OK(def, "https://example.com:65535/"),
        OK(def, "https://8.8.8.8/"),
        OK(def, "https://1.1.1.1:443/x"),
        OK(def, "https://11.0.0.1/"),
        OK(def, "https://9.255.255.255/"),
        OK(def, "https://100.63.255.255/"),
        OK(def, "https://100.128.0.1/"),
        OK(def, "https://172.15.255.255/"),
        OK(def, "https://172.32.0.1/"),
        OK(def, "https://198.17.255.255/"),
        OK(def, "https://198.20.0.1/"),
        OK(def, "https://223.255.255.255/"),
        OK(def, "https://[2606:4700:4700::1111]/"),
        OK(def, "https://[2606:4700:4700::1111]:8443/dns"),
        OK(def, "https://[2606:4700:4700:0:0:0:0:1111]/"),
        OK(def, "https://[::ffff:8.8.8.8]/"),   /* IPv4-mapped, public inside */
        OK(def, "https://[64:ff9b::8.8.8.8]/"), /* NAT64, public inside */
        OK(def, "https://[2002:808:808::1]/"),  /* 6to4 of 8.8.8.8 */
        OK(def, "https://[fbff:ffff::1]/"),     /* just below fc00::/7 */
        OK(def, "https://[fe00::1]/"),          /* between fc00::/7 and fe80::/10 */
    };
    run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void
test_scheme_and_shape(void **state)
{
    static const url_case_t cases[] = {
        NO(def, "http://example.com/", HTTPS_ONLY),
        NO(def, "HTTP://example.com/", HTTPS_ONLY),
        NO(def, "ftp://example.com/", HTTPS_ONLY),
        NO(def, "file:///etc/passwd", HTTPS_ONLY),
        NO(def, "gopher://example.com:70/", HTTPS_ONLY),
        NO(def, "httpss://example.com/", HTTPS_ONLY),
        NO(def, "ws://example.com/", HTTPS_ONLY),
        OK(http, "http://example.com/"),
        OK(http, "HTTP://example.com/"),
        OK(http, "https://example.com/"),
        NO(http, "ftp://example.com/", "push URL scheme must be https or http"),
        NO(http, "http://10.0.0.5/", PRIVATE("10.0.0.5")), /* allow_http is not allow_private */
        NO(def, "", "push URL is empty"),
        NO(def, "https", NOT_ABSOLUTE),
        NO(def, "javascript:alert(1)", NOT_ABSOLUTE),
        NO(def, "//example.com/x", NOT_ABSOLUTE),
        NO(def, "example.com/x", NOT_ABSOLUTE),
        NO(def, "https:/example.com", NOT_ABSOLUTE),
        NO(def, "https:example.com", NOT_ABSOLUTE),
        NO(def, "://example.com", NOT_ABSOLUTE),
        NO(def, "https://user:pass@example.com/", CREDENTIALS),
        NO(def, "https://user@example.com/", CREDENTIALS),
        NO(def, "https://@example.com/", CREDENTIALS),
        NO(def, "https://example.com@10.0.0.1/", CREDENTIALS),
        NO(def, "https://example.com:443@evil.example/", CREDENTIALS),
        NO(priv, "https://user:pass@example.com/", CREDENTIALS),
        NO(def, "https://exa mple.com/", NOT_PRINTABLE),
        NO(def, " https://example.com/", NOT_PRINTABLE),
        NO(def, "https://example.com/ ", NOT_PRINTABLE),
        NO(def, "https://example.com\\@127.0.0.1/", NOT_PRINTABLE),
        NO(def, "https://example.com/\\x", NOT_PRINTABLE),
        NO(def, "https://example.com/\x01", NOT_PRINTABLE),
        NO(def, "https://example.com/\x7f", NOT_PRINTABLE),
        NO(def, "https://ex\xc3\xa4mple.com/", NOT_PRINTABLE),
        NO(def, "https://example.com\r\nHost: evil/", NOT_PRINTABLE),
        NO(def, "https://%31%32%37.0.0.1/", "push URL host must not be percent-encoded"),
        NO(def, "https://[fe80::1%25eth0]/", "push URL host must not be percent-encoded"),
        NO(def, "https:///path", "push URL has no host"),
        NO(def, "https://", "push URL has no host"),
        NO(def, "https://?x", "push URL has no host"),
        NO(def, "https://:443/", "push URL has no host"),
        NO(def, "https://./", "push URL has no host"),
        NO(def, "https://::1/", "push URL has no host"),
        NO(def, "https://a..b/", BAD_NAME("a..b")),
        NO(def, "https://example.com../", BAD_NAME("example.com.")),
        NO(def, "https://.example.com/", BAD_NAME(".example.com")),
        NO(def, "https://-a.example.com/", BAD_NAME("-a.example.com")),
        NO(def, "https://a-.example.com/", BAD_NAME("a-.example.com")),
        NO(def, "https://a_b.example.com/", BAD_NAME("a_b.example.com")),
        NO(def, "https://exa$mple.com/", BAD_NAME("exa$mple.com")),
        NO(def, "https://example.com]/", BAD_NAME("example.com]")),
        NO(def, "https://example.com:0/", BAD_PORT),
        NO(def, "https://example.com:65536/", BAD_PORT),
        NO(def, "https://example.com:/", BAD_PORT),
        NO(def, "https://example.com:8o/", BAD_PORT),
        NO(def, "https://example.com:-1/", BAD_PORT),
        NO(def, "https://example.com:443:443/", BAD_PORT),
        NO(def, "https://example.com:000443/", BAD_PORT),
        NO(def, "https://fe80::1/", BAD_PORT),
        NO(def, "https://[::1/", BAD_V6),
        NO(def, "https://[::1]x/", BAD_V6),
        NO(def, "https://[]/", BAD_V6),
        NO(def, "https://[::1]:0/", BAD_PORT),
        NO(def, "https://[::1]:/", BAD_PORT),
        NO(def, "https://[v1.fe80::1]/", BAD_V6),
        NO(def, "https://[1:2:3:4:5:6:7:8:9]/", "push URL host [1:2:3:4:5:6:7:8:9] is not a valid IPv6 address"),
        NO(def, "https://[1::2::3]/", "push URL host [1::2::3] is not a valid IPv6 address"),
        NO(def, "https://[127.0.0.1]/", "push URL host [127.0.0.1] is not a valid IPv6 address"),
    };
    run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* IPv4 addresses in the encodings that inet_aton and browsers accept: refused whatever the
 * policy, since the agent's HTTP client may read them as an address the guard never saw. */
static void
test_ipv4_encodings(void **state)
{
    static const url_case_t cases[] = {
        NO(def, "https://2130706433/", NONCANON("2130706433")),
        NO(def, "https://0177.0.0.1/", NONCANON("0177.0.0.1")),
        NO(def, "https://0x7f.1/", NONCANON("0x7f.1")),
        NO(def, "https://0X7F.1/", NONCANON("0x7f.1")),
        NO(def, "https://0x7f000001/", NONCANON("0x7f000001")),
        NO(def, "https://0x7f.0.0.1/", NONCANON("0x7f.0.0.1")),
        NO(def, "https://127.1/", NONCANON("127.1")),
        NO(def, "https://127.0.1/", NONCANON("127.0.1")),
        NO(def, "https://127.0.0.01/", NONCANON("127.0.0.01")),
        NO(def, "https://010.0.0.1/", NONCANON("010.0.0.1")),
        NO(def, "https://00.0.0.0/", NONCANON("00.0.0.0")),
        NO(def, "https://1.2.3.4.5/", NONCANON("1.2.3.4.5")),
        NO(def, "https://256.1.1.1/", NONCANON("256.1.1.1")),
        NO(def, "https://1.2.3.1000/", NONCANON("1.2.3.1000")),
        NO(def, "https://0/", NONCANON("0")),
        NO(def, "https://0x/", NONCANON("0x")),
        NO(def, "https://3232235777/", NONCANON("3232235777")), /* 192.168.1.1 */
        NO(def, "https://134744072/", NONCANON("134744072")),   /* 8.8.8.8: public, still ambiguous */
        NO(def, "https://8.8.8.010/", NONCANON("8.8.8.010")),
        NO(def, "https://example.123/", NONCANON("example.123")),
        NO(def, "https://127.0.0.1.2130706433/", NONCANON("127.0.0.1.2130706433")),
        NO(priv, "https://0177.0.0.1/", NONCANON("0177.0.0.1")),
        NO(priv, "https://2130706433/", NONCANON("2130706433")),
        NO(priv, "https://127.1/", NONCANON("127.1")),
        NO(listed_star, "https://0x7f.1/", NONCANON("0x7f.1")),
        OK(priv, "https://127.0.0.1/"),
        OK(priv, "https://127.0.0.1./"),
        OK(def, "https://8.8.8.8./"),
        OK(def, "https://0xcafe.example/"),
    };
    run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void
test_private_ranges(void **state)
{
    static const url_case_t cases[] = {
        NO(def, "https://10.0.0.5/", PRIVATE("10.0.0.5")),
        NO(def, "https://10.255.255.255/", PRIVATE("10.255.255.255")),
        NO(def, "https://127.0.0.1/", LOOPBACK("127.0.0.1")),
        NO(def, "https://127.0.0.1:8080/admin", LOOPBACK("127.0.0.1")),
        NO(def, "https://127.255.255.254/", LOOPBACK("127.255.255.254")),
        NO(def, "https://127.0.0.1./", LOOPBACK("127.0.0.1")),
        NO(def, "https://0.0.0.0/", "push URL host 0.0.0.0 is an unspecified address"),
        NO(def, "https://0.1.2.3/", RESERVED("0.1.2.3")),
        NO(def, "https://100.64.0.1/", "push URL host 100.64.0.1 is a shared (carrier-grade NAT) address"),
        NO(def, "https://100.127.255.255/", "push URL host 100.127.255.255 is a shared (carrier-grade NAT) address"),
        NO(def, "https://169.254.169.254/latest/meta-data/", LINKLOCAL("169.254.169.254")),
        NO(def, "https://172.16.0.1/", PRIVATE("172.16.0.1")),
        NO(def, "https://172.31.255.255/", PRIVATE("172.31.255.255")),
        NO(def, "https://192.168.1.1/", PRIVATE("192.168.1.1")),
        NO(def, "https://192.0.0.8/", RESERVED("192.0.0.8")),
        NO(def, "https://192.0.2.1/", "push URL host 192.0.2.1 is a documentation address"),
        NO(def, "https://198.51.100.7/", "push URL host 198.51.100.7 is a documentation address"),
        NO(def, "https://203.0.113.9/", "push URL host 203.0.113.9 is a documentation address"),
        NO(def, "https://198.18.0.1/", "push URL host 198.18.0.1 is a benchmarking address"),
        NO(def, "https://198.19.255.255/", "push URL host 198.19.255.255 is a benchmarking address"),
        NO(def, "https://224.0.0.1/", MULTICAST("224.0.0.1")),
        NO(def, "https://239.255.255.250/", MULTICAST("239.255.255.250")),
        NO(def, "https://240.0.0.1/", RESERVED("240.0.0.1")),
        NO(def, "https://255.255.255.254/", RESERVED("255.255.255.254")),
        NO(def, "https://255.255.255.255/", "push URL host 255.255.255.255 is a broadcast address"),
        NO(def, "https://[::]/", "push URL host [::] is an unspecified address"),
        NO(def, "https://[::1]/", LOOPBACK("[::1]")),
        NO(def, "https://[::1]:8080/", LOOPBACK("[::1]")),
        NO(def, "https://[0:0:0:0:0:0:0:1]/", LOOPBACK("[0:0:0:0:0:0:0:1]")),
        NO(def, "https://[::ffff:127.0.0.1]/", LOOPBACK("[::ffff:127.0.0.1]")),
        NO(def, "https://[::ffff:7f00:1]/", LOOPBACK("[::ffff:7f00:1]")),
        NO(def, "https://[::FFFF:10.0.0.1]/", PRIVATE("[::ffff:10.0.0.1]")),
        NO(def, "https://[::ffff:169.254.169.254]/", LINKLOCAL("[::ffff:169.254.169.254]")),
        NO(def, "https://[::ffff:0.0.0.0]/", "push URL host [::ffff:0.0.0.0] is an unspecified address"),
        NO(def, "https://[::ffff:0:7f00:1]/", LOOPBACK("[::ffff:0:7f00:1]")),
        NO(def, "https://[64:ff9b::a9fe:a9fe]/", LINKLOCAL("[64:ff9b::a9fe:a9fe]")),
        NO(def, "https://[64:ff9b::10.0.0.1]/", PRIVATE("[64:ff9b::10.0.0.1]")),
        NO(def, "https://[64:ff9b:1::1]/", PRIVATE("[64:ff9b:1::1]")),
        NO(def, "https://[2002:7f00:1::]/", LOOPBACK("[2002:7f00:1::]")),
        NO(def, "https://[2002:a9fe:a9fe::1]/", LINKLOCAL("[2002:a9fe:a9fe::1]")),
        NO(def, "https://[::127.0.0.1]/", RESERVED("[::127.0.0.1]")),
        NO(def, "https://[::8.8.8.8]/", RESERVED("[::8.8.8.8]")),
        NO(def, "https://[100::1]/", RESERVED("[100::1]")),
        NO(def, "https://[2001:db8::1]/", "push URL host [2001:db8::1] is a documentation address"),
        NO(def, "https://[fc00::1]/", PRIVATE("[fc00::1]")),
        NO(def, "https://[fd12:3456:789a::1]/", PRIVATE("[fd12:3456:789a::1]")),
        NO(def, "https://[fe80::1]/", LINKLOCAL("[fe80::1]")),
        NO(def, "https://[FE80::1]/", LINKLOCAL("[fe80::1]")),
        NO(def, "https://[febf:ffff::1]/", LINKLOCAL("[febf:ffff::1]")),
        NO(def, "https://[fec0::1]/", PRIVATE("[fec0::1]")),
        NO(def, "https://[ff02::1]/", MULTICAST("[ff02::1]")),
        NO(def, "https://localhost/", NAME("localhost")),
        NO(def, "https://LOCALHOST:8080/", NAME("localhost")),
        NO(def, "https://localhost./", NAME("localhost")),
        NO(def, "https://foo.localhost/", NAME("foo.localhost")),
        NO(def, "https://ip6-localhost/", NAME("ip6-localhost")),
        NO(def, "https://printer.local/", NAME("printer.local")),
        NO(def, "https://metadata.internal/", NAME("metadata.internal")),
        NO(def, "https://metadata.google.internal/computeMetadata/v1/", NAME("metadata.google.internal")),
        NO(def, "https://router.home.arpa/", NAME("router.home.arpa")),
        NO(def, "https://box.localdomain/", NAME("box.localdomain")),
        NO(def, "https://metadata/", NAME("metadata")), /* one label: resolved through search domains */
        NO(def, "https://my-svc/", NAME("my-svc")),
    };
    run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* allow_private lifts the private ranges and names; never unspecified, broadcast or multicast,
 * and never anything about the URL's form. */
static void
test_allow_private(void **state)
{
    static const url_case_t cases[] = {
        OK(priv, "https://10.0.0.5/"),
        OK(priv, "https://127.0.0.1:8080/"),
        OK(priv, "https://169.254.169.254/"),
        OK(priv, "https://100.64.0.1/"),
        OK(priv, "https://240.0.0.1/"),
        OK(priv, "https://[::1]/"),
        OK(priv, "https://[fe80::1]/"),
        OK(priv, "https://[fd00::1]/"),
        OK(priv, "https://[::ffff:10.0.0.1]/"),
        OK(priv, "https://localhost/"),
        OK(priv, "https://metadata.internal/"),
        OK(priv, "https://printer.local/"),
        OK(priv, "https://metadata/"),
        NO(priv, "https://0.0.0.0/", "push URL host 0.0.0.0 is an unspecified address"),
        NO(priv, "https://255.255.255.255/", "push URL host 255.255.255.255 is a broadcast address"),
        NO(priv, "https://224.0.0.1/", MULTICAST("224.0.0.1")),
        NO(priv, "https://[::]/", "push URL host [::] is an unspecified address"),
        NO(priv, "https://[::ffff:0.0.0.0]/", "push URL host [::ffff:0.0.0.0] is an unspecified address"),
        NO(priv, "https://[::ffff:224.0.0.1]/", MULTICAST("[::ffff:224.0.0.1]")),
        NO(priv, "https://[ff02::1]/", MULTICAST("[ff02::1]")),
        NO(priv, "http://10.0.0.5/", HTTPS_ONLY),
    };
    run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void
test_allowed_hosts(void **state)
{
    static const url_case_t cases[] = {
        OK(listed, "https://hooks.example.com/"),
        OK(listed, "https://HOOKS.EXAMPLE.COM./x"),
        OK(listed, "https://hooks.example.com:8443/x"),
        NO(listed, "https://evil.example.com/", NOT_ALLOWED("evil.example.com")),
        NO(listed, "https://hooks.example.com.evil.net/", NOT_ALLOWED("hooks.example.com.evil.net")),
        NO(listed, "https://xhooks.example.com/", NOT_ALLOWED("xhooks.example.com")),
        OK(listed, "https://a.callbacks.example.org/"),
        OK(listed, "https://a.b.callbacks.example.org/"),
        NO(listed, "https://callbacks.example.org/", NOT_ALLOWED("callbacks.example.org")),
        NO(listed, "https://xcallbacks.example.org/", NOT_ALLOWED("xcallbacks.example.org")),
        NO(listed, "https://a.callbacks.example.org.evil/", NOT_ALLOWED("a.callbacks.example.org.evil")),
        OK(listed, "https://hooks.eu.example.net/"), /* patterns ignore case too */
        OK(listed, "https://hooks.eu.west.example.net/"),
        NO(listed, "https://hooks.example.net/", NOT_ALLOWED("hooks.example.net")),
        /* The allow-list does not lift the private ranges: that takes allow_private. */
        NO(listed, "https://10.1.2.3/", PRIVATE("10.1.2.3")),
        OK(listed_priv, "https://10.1.2.3/"),
        NO(listed_priv, "https://10.1.2.4/", NOT_ALLOWED("10.1.2.4")),
        NO(listed, "https://[2001:db8::1]/", "push URL host [2001:db8::1] is a documentation address"),
        OK(listed_priv, "https://[2001:db8::1]/"),
        NO(listed_priv, "https://[2001:db8::2]/", NOT_ALLOWED("[2001:db8::2]")),
        NO(listed, "https://metadata.internal/", NAME("metadata.internal")),
        OK(listed_priv, "https://metadata.internal/"),
        NO(listed_one, "https://metadata.internal/", NOT_ALLOWED("metadata.internal")),
        NO(listed_one, "https://127.0.0.1/", NOT_ALLOWED("127.0.0.1")),
        NO(listed_one, "http://hooks.example.com/", HTTPS_ONLY),
        NO(listed_one, "https://user@hooks.example.com/", CREDENTIALS),
        OK(listed_star, "https://anything.example/"),
        NO(listed_star, "https://10.0.0.1/", PRIVATE("10.0.0.1")),
    };
    run_cases(cases, sizeof(cases) / sizeof(cases[0]));

    /* Pattern corner cases: several stars, a star that must backtrack, empty patterns. */
    static const char *const odd[] = { "", "a*b*c.example", "*-hooks.*.example.com", "**.star.example" };
    static const ag_pushurl_policy_t p = { .allowed_hosts = odd, .num_allowed_hosts = 4 };
    static const url_case_t odd_cases[] = {
        OK(p, "https://abc.example/"),
        OK(p, "https://a-b-c.example/"),
        OK(p, "https://abbbbc.example/"),
        OK(p, "https://acbc.example/"),
        NO(p, "https://acb.example/", NOT_ALLOWED("acb.example")),
        OK(p, "https://eu-hooks.x.example.com/"),
        OK(p, "https://eu-hooks.eu-hooks.x.example.com/"),
        NO(p, "https://eu-hooks.example.com/", NOT_ALLOWED("eu-hooks.example.com")),
        OK(p, "https://a.star.example/"),
        NO(p, "https://star.example/", NOT_ALLOWED("star.example")),
    };
    run_cases(odd_cases, sizeof(odd_cases) / sizeof(odd_cases[0]));
}

static void
test_limits_and_reasons(void **state)
{
    char why[256];

    /* Host and label lengths. */
    char url[AG_PUSHURL_MAX_LEN + 16];
    char label[64];
    memset(label, 'a', 63);
    label[63] = '\0';
    snprintf(url, sizeof(url), "https://%s.example.com/", label);
    assert_int_equal(ag_pushurl_check(url, NULL, why, sizeof(why)), 0);
    snprintf(url, sizeof(url), "https://%sa.example.com/", label);
    assert_int_equal(ag_pushurl_check(url, NULL, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "is not a valid host name"));
    /* 253 characters: four 63-character labels less two, with dots. */
    snprintf(url, sizeof(url), "https://%s.%s.%s.%.61s/", label, label, label, label);
    assert_int_equal(ag_pushurl_check(url, NULL, why, sizeof(why)), 0);
    snprintf(url, sizeof(url), "https://%s.%s.%s.%.62s/", label, label, label, label);
    assert_int_equal(ag_pushurl_check(url, NULL, why, sizeof(why)), -1);
    assert_string_equal(why, "push URL host is longer than 253 characters");

    /* The URL as a whole. */
    memcpy(url, "https://example.com/", 20);
    memset(url + 20, 'p', AG_PUSHURL_MAX_LEN - 20);
    url[AG_PUSHURL_MAX_LEN] = '\0';
    assert_int_equal(ag_pushurl_check(url, NULL, why, sizeof(why)), 0);
    url[AG_PUSHURL_MAX_LEN] = 'p';
    url[AG_PUSHURL_MAX_LEN + 1] = '\0';
    assert_int_equal(ag_pushurl_check(url, NULL, why, sizeof(why)), -1);
    assert_string_equal(why, "push URL is longer than 2048 bytes");

    /* NULL url, NULL policy, no room for a reason, a small one. */
    assert_int_equal(ag_pushurl_check(NULL, NULL, why, sizeof(why)), -1);
    assert_string_equal(why, "push URL is empty");
    assert_int_equal(ag_pushurl_check("https://10.0.0.5/", NULL, NULL, 0), -1);
    assert_int_equal(ag_pushurl_check("https://example.com/", NULL, NULL, 0), 0);
    char small[12];
    assert_int_equal(ag_pushurl_check("https://10.0.0.5/", NULL, small, sizeof(small)), -1);
    assert_string_equal(small, "push URL ho");
}

static void
check_addr(const char *addr, const ag_pushurl_policy_t *p, const char *expect)
{
    struct sockaddr_storage ss;
    char why[256];
    memset(&ss, 0, sizeof(ss));
    if (strchr(addr, ':') != NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(443);
        assert_int_equal(inet_pton(AF_INET6, addr, &in6->sin6_addr), 1);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(443);
        assert_int_equal(inet_pton(AF_INET, addr, &in->sin_addr), 1);
    }
    int rv = ag_pushurl_check_resolved((const struct sockaddr *)&ss, p, why, sizeof(why));
    if (expect == NULL && rv != 0)
        fail_msg("%s refused: %s", addr, why);
    if (expect != NULL && (rv != -1 || strcmp(why, expect) != 0))
        fail_msg("%s: expected \"%s\", got %d \"%s\"", addr, expect, rv, why);
}

/* The address a name resolved to, as the connecting code checks it (DNS rebinding). */
static void
test_resolved(void **state)
{
    check_addr("8.8.8.8", NULL, NULL);
    check_addr("93.184.216.34", &def, NULL);
    check_addr("10.0.0.5", NULL, "push URL host resolved to 10.0.0.5, a private address");
    check_addr("127.0.0.1", &def, "push URL host resolved to 127.0.0.1, a loopback address");
    check_addr("169.254.169.254", &def, "push URL host resolved to 169.254.169.254, a link-local address");
    check_addr("0.0.0.0", &def, "push URL host resolved to 0.0.0.0, an unspecified address");
    check_addr("2606:4700:4700::1111", &def, NULL);
    check_addr("::1", &def, "push URL host resolved to ::1, a loopback address");
    check_addr("::ffff:10.0.0.1", &def, "push URL host resolved to ::ffff:10.0.0.1, a private address");
    check_addr("64:ff9b::7f00:1", &def, "push URL host resolved to 64:ff9b::7f00:1, a loopback address");
    check_addr("fd00::1", &def, "push URL host resolved to fd00::1, a private address");
    check_addr("fe80::1", &def, "push URL host resolved to fe80::1, a link-local address");
    check_addr("10.0.0.5", &priv, NULL);
    check_addr("::1", &priv, NULL);
    check_addr("224.0.0.251", &priv, "push URL host resolved to 224.0.0.251, a multicast address");
    check_addr("ff02::fb", &priv, "push URL host resolved to ff02::fb, a multicast address");
    check_addr("::", &priv, "push URL host resolved to ::, an unspecified address");
    /* The allow-list is about names; an address it resolved to is judged by range alone. */
    check_addr("8.8.8.8", &listed_one, NULL);

    char why[128];
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    assert_int_equal(ag_pushurl_check_resolved((const struct sockaddr *)&un, NULL, why, sizeof(why)), -1);
    assert_string_equal(why, "push URL host resolved to an address that is neither IPv4 nor IPv6");
    assert_int_equal(ag_pushurl_check_resolved(NULL, NULL, why, sizeof(why)), -1);
}

/* Random URLs built from URL-ish pieces: never a crash, every refusal has a reason, and no
 * accepted URL has credentials, a backslash, a space or a non-ASCII byte. */
/* The host a resolver is asked for: names to resolve, address literals already judged. */
static void
test_host(void **state)
{
    (void)state;
    char host[AG_PUSHURL_HOST_MAX + 1];
    assert_int_equal(ag_pushurl_host("https://Hooks.Example.COM./x?y#z", host, sizeof(host)), 1);
    assert_string_equal(host, "hooks.example.com");
    assert_int_equal(ag_pushurl_host("http://hooks.example.com:8443", host, sizeof(host)), 1);
    assert_string_equal(host, "hooks.example.com");
    assert_int_equal(ag_pushurl_host("https://10.0.0.1/x", host, sizeof(host)), 0);
    assert_string_equal(host, "10.0.0.1");
    assert_int_equal(ag_pushurl_host("https://[::1]:8443/x", host, sizeof(host)), 0);
    assert_string_equal(host, "::1");
    static const char *const bad[] = {
        "ftp://example.com/", "https://u:p@example.com/", "https://exa%6dple.com/", "https:///x",
        "example.com",        "https://127.1/",           "https://[::1/",          NULL,
    };
    for (size_t i = 0; bad[i] != NULL; i++) {
        if (ag_pushurl_host(bad[i], host, sizeof(host)) != -1)
            fail_msg("%s: a host was read", bad[i]);
    }
    assert_int_equal(ag_pushurl_host(NULL, host, sizeof(host)), -1);
    char small[8];
    assert_int_equal(ag_pushurl_host("https://hooks.example.com/", small, sizeof(small)), -1);
}

static void
test_fuzz(void **state)
{
    enum { ROUNDS = 50000 };
    static const char *const pieces[] = {
        "https://", "http://", "HTTPS://", "[",   "]",     "::", ":",  "1", "0",    "x",
        "7f",       ".",       "..",       "@",   "%",     "/",  "?",  "#", "127",  "10",
        "255",      "ffff",    "example",  "com", "local", "-",  "\\", " ", "\xc3", "a",
    };
    char url[512];
    char why[256];
    unsigned accepted = 0;

    srand(4242);
    for (int r = 0; r < ROUNDS; r++) {
        size_t n = 0;
        int k = 1 + rand() % 12;
        for (int i = 0; i < k; i++) {
            const char *piece = pieces[(size_t)rand() % (sizeof(pieces) / sizeof(pieces[0]))];
            size_t len = strlen(piece);
            if (n + len >= sizeof(url))
                break;
            memcpy(url + n, piece, len);
            n += len;
        }
        url[n] = '\0';
        const ag_pushurl_policy_t *p = r % 3 == 0 ? &priv : r % 3 == 1 ? &http : &def;
        if (ag_pushurl_check(url, p, why, sizeof(why)) == 0) {
            accepted++;
            const char *auth = strstr(url, "://") + 3;
            assert_null(memchr(auth, '@', strcspn(auth, "/?#")));
            for (const char *c = url; *c; c++)
                assert_true(*c > 0x20 && *c < 0x7f && *c != '\\');
        } else {
            assert_true(strncmp(why, "push URL ", 9) == 0);
        }
    }
    printf("# fuzz: %d URLs, %u accepted\n", ROUNDS, accepted);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_urls),
        cmocka_unit_test(test_scheme_and_shape),
        cmocka_unit_test(test_ipv4_encodings),
        cmocka_unit_test(test_private_ranges),
        cmocka_unit_test(test_allow_private),
        cmocka_unit_test(test_allowed_hosts),
        cmocka_unit_test(test_limits_and_reasons),
        cmocka_unit_test(test_resolved),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
