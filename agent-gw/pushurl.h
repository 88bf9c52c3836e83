/*
 * pushurl.h — the SSRF guard for push-notification webhook URLs.
 *
 * An agent or a client asks the gateway to register a URL that will later be called with task
 * updates. Left unchecked, that makes whoever calls it a proxy into internal networks (cloud
 * metadata, admin ports, the gateway's own control plane). ag_pushurl_check refuses such a URL
 * when it is registered; ag_pushurl_check_resolved refuses the address a name resolves to, at
 * connect time, so a name that points at a private address (or is re-pointed there later: DNS
 * rebinding, names like 127.0.0.1.nip.io) is caught too. Both are needed: the first gives the
 * registering caller a clear error, the second is the one that cannot be talked around.
 *
 * The parser is deliberately narrower than what URL libraries accept, so that no other parser
 * (the agent's HTTP client, a resolver) can read a different host out of an accepted URL:
 *   scheme://host[:port][/path][?query][#fragment]
 *   - scheme: https, or http when allowed; case-insensitive.
 *   - no userinfo ("user:pass@"): refused, since "https://good.example@10.0.0.1/" misleads people.
 *   - host: a DNS name of letters, digits, '-' and '.' (labels of 1..63 characters, not starting
 *     or ending with '-'; one trailing dot is ignored); a canonical dotted-quad IPv4 address
 *     (four decimal numbers 0..255 without leading zeros); or an IPv6 address in brackets
 *     without a zone. A host whose last label is a number ("2130706433", "127.1", "0x7f.1",
 *     "0177.0.0.1", "1.2.3.4.5") is an IPv4 address in an encoding that resolvers accept, and is
 *     refused unless it is a canonical dotted quad. Percent-encoding, non-ASCII (use punycode),
 *     spaces, control characters and backslashes are refused anywhere in the URL.
 *   - port: 1..65535 when present.
 *
 * Refused unless allow_private (always refused: unspecified, broadcast and multicast addresses,
 * which are never a webhook):
 *   IPv4  0.0.0.0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24,
 *         192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4, 240/4, 255.255.255.255
 *   IPv6  ::/96 (unspecified, loopback, IPv4-compatible), 100::/64, 2001:db8::/32, fc00::/7,
 *         fe80::/10, fec0::/10, ff00::/8, 64:ff9b:1::/48; and for ::ffff:0:0/96 (IPv4-mapped),
 *         64:ff9b::/96 (NAT64) and 2002::/16 (6to4) the embedded IPv4 address is checked
 *   names localhost, *.localhost, ip6-localhost, ip6-loopback, *.local, *.localdomain,
 *         *.internal, *.home.arpa, and any name without a dot ("metadata", a cluster service
 *         name), which resolvers look up through the local search domains and /etc/hosts
 */
#ifndef AG_PUSHURL_H
#define AG_PUSHURL_H

#include <stdbool.h>
#include <stddef.h>

#include <sys/socket.h>

#define AG_PUSHURL_MAX_LEN  2048 /* bytes in a push URL at most */
#define AG_PUSHURL_HOST_MAX 253  /* bytes in a host name at most (a DNS name without the trailing dot) */

typedef struct ag_pushurl_policy {
    bool allow_http;    /* accept http:// as well as https:// (default: https only) */
    bool allow_private; /* accept the private, loopback, link-local and reserved ranges and names */
    /* Patterns the host must match, '*' matching any run of characters, case-insensitive, against
     * the host as written (lowercase, without a trailing dot, an IPv6 address without brackets).
     * E.g. "hooks.example.com", "*.example.com" (not example.com itself). Borrowed. */
    const char *const *allowed_hosts;
    size_t num_allowed_hosts; /* 0: any host that passes the other checks */
} ag_pushurl_policy_t;

/* Checks the NUL-terminated url against policy p (NULL: the defaults, https to public hosts
 * only). Returns 0 when it may be registered; otherwise -1 and, when why_len > 0, a sentence for
 * the caller in why (truncated to why_len), e.g. "push URL scheme must be https", "push URL must
 * not carry credentials", "push URL host 10.0.0.5 is a private address", "push URL host
 * metadata.internal is not in the allowed hosts". The allow-list is checked before the address
 * ranges, so a host that fails both is reported as not allowed. Does no I/O. */
int ag_pushurl_check(const char *url, const ag_pushurl_policy_t *p, char *why, size_t why_len);

/* Checks an address the URL's host resolved to (AF_INET or AF_INET6; anything else, or NULL, is
 * refused) against the same ranges and allow_private, right before connecting to it; the
 * allow-list is about names and is not consulted. p NULL: the defaults. Returns 0, or -1 with a
 * sentence in why as above ("push URL host resolved to 10.0.0.5, a private address"). */
int ag_pushurl_check_resolved(const struct sockaddr *sa, const ag_pushurl_policy_t *p, char *why, size_t why_len);

/* The host of url as a resolver takes it (lowercase, without the trailing dot, an IPv6 address
 * without brackets), copied into host (host_len bytes; AG_PUSHURL_HOST_MAX + 1 always suffice).
 * Returns 1 when the host is a DNS name, whose addresses the caller resolves and checks with
 * ag_pushurl_check_resolved; 0 when it is an IP address, which ag_pushurl_check judged already;
 * -1 when url is not one ag_pushurl_check could accept (http or https) or host_len is too small.
 * Does no I/O. */
int ag_pushurl_host(const char *url, char *host, size_t host_len);

#endif
