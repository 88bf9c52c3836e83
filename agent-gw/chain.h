/*
 * chain.h — delegation chains that a caller cannot forge.
 *
 * When agent-gw forwards a request to an agent, it sends the chain of calls that led there in
 * the header `x-triplane-chain`. An agent that, while handling that request, calls another agent
 * through the gateway passes the token back unchanged; the gateway verifies it, checks the new
 * call against it (loops, depth, the origin's permissions), appends a hop and signs the result
 * for the next agent. The token is signed with HMAC-SHA256 under a gateway key, so an agent can
 * neither invent a chain, nor drop or edit a hop, nor splice two chains together.
 *
 * Token format (version c1), all of it header-safe ASCII:
 *
 *     c1.<payload>.<mac>
 *
 *   payload  base64url without padding of the compact JSON array of hops, each hop an array
 *            [caller, target, task, at_ms], e.g. [["alice","planner","t-1",1718000000000]]
 *   mac      base64url without padding of HMAC-SHA256(key, "c1.<payload>"): 43 characters
 *
 * The MAC covers the version label as well as the payload, and is checked before the payload is
 * decoded, so nothing unauthenticated is ever parsed. Base64url decoding is strict (canonical
 * encodings only). A token is at most AG_CHAIN_TOKEN_MAX bytes and holds at most AG_CHAIN_MAX
 * hops, whichever bound is reached first.
 *
 * What the token does not do: it is not bound to a connection, so it must only ever be accepted
 * from the agent it was sent to. The gateway checks that the authenticated caller presenting a
 * token equals ag_chain_last_target(); a token leaked to anyone else is then worthless, and
 * max_age_ms bounds how long a leaked token stays useful to its own agent.
 */
#ifndef AG_CHAIN_H
#define AG_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define AG_CHAIN_HEADER        "x-triplane-chain" /* the header the token travels in, both ways */
#define AG_CHAIN_MAX           64                 /* hops in one chain at most */
#define AG_CHAIN_ID_MAX        128  /* bytes in a caller, target or task id at most: as principal ids and agent names */
#define AG_CHAIN_TOKEN_MAX     8192 /* bytes in a token at most */
#define AG_CHAIN_KEY_MIN       32   /* bytes of HMAC key at least: as long as the MAC */
#define AG_CHAIN_CLOCK_SKEW_MS 60000 /* a token this far ahead of now is still accepted */

typedef struct ag_hop {
    char caller[AG_CHAIN_ID_MAX + 1]; /* the principal id that made the call; never empty */
    char target[AG_CHAIN_ID_MAX + 1]; /* the agent name it called; never empty */
    char task[AG_CHAIN_ID_MAX + 1];   /* the task or context id the call belongs to; "" when none */
    int64_t at_ms;                    /* Unix ms when the gateway forwarded the call; >= 0 */
} ag_hop_t;

/* About 25 KiB: fine on a thread's stack, too big to copy around casually. */
typedef struct ag_chain {
    ag_hop_t hops[AG_CHAIN_MAX]; /* hops[0] is the call that started the chain */
    size_t n;                    /* hops in use */
} ag_chain_t;

/* Appends the hop caller -> target (task may be NULL or "") to c, all strings copied. Returns 0;
 * -ENOSPC when c already has AG_CHAIN_MAX hops; -EINVAL when caller or target is NULL or empty,
 * a string is longer than AG_CHAIN_ID_MAX bytes, or at_ms < 0. Ids are never truncated, since two
 * different ids must never end up looking the same. On error c is unchanged. */
int ag_chain_append(ag_chain_t *c, const char *caller, const char *target, const char *task, int64_t at_ms);

/* Signs c under the key_len bytes at key and returns the token as a NUL-terminated string the
 * caller frees. Returns NULL when key is shorter than AG_CHAIN_KEY_MIN, when c is empty or holds
 * a hop ag_chain_append would refuse (or a string that is not UTF-8), or when the token would be
 * longer than AG_CHAIN_TOKEN_MAX: the gateway then refuses the call as a chain too long. */
char *ag_chain_sign(const uint8_t *key, size_t key_len, const ag_chain_t *c);

/* Verifies the len bytes at token (need not be NUL-terminated) under key and, on success, fills
 * *out and returns 0. The MAC is compared in constant time (CRYPTO_memcmp). When max_age_ms > 0
 * the token is refused once the newest hop is more than max_age_ms older than now_ms, or more
 * than AG_CHAIN_CLOCK_SKEW_MS newer; 0 turns both checks off. now_ms and max_age_ms must not be
 * negative. On failure returns -1, sets out->n to 0 and, when why is not NULL, *why to a static
 * reason: "too long" (over AG_CHAIN_TOKEN_MAX bytes or AG_CHAIN_MAX hops), "malformed" (not the
 * format above), "bad signature" (a MAC that does not match: forged, edited or another key),
 * "expired", "not yet valid", or "bad key" (key shorter than AG_CHAIN_KEY_MIN). */
int ag_chain_verify(const uint8_t *key, size_t key_len, const char *token, size_t len, int64_t now_ms,
                    int64_t max_age_ms, ag_chain_t *out, const char **why);

/* True when agent is the caller or the target of any hop: calling it again would be a loop. */
bool ag_chain_contains_agent(const ag_chain_t *c, const char *agent);

/* The caller of the first hop: the principal that started the chain, whose permissions bound
 * every delegated call. NULL when c is empty. Borrows c's memory. */
const char *ag_chain_origin(const ag_chain_t *c);

/* The target of the newest hop: the only agent that may present this chain. NULL when c is
 * empty. Borrows c's memory. */
const char *ag_chain_last_target(const ag_chain_t *c);

/* The chain for the task ledger and the audit: a new reference to an array of objects
 * {"caller", "target", "task" (only when not empty), "at_ms"}, oldest hop first. */
json_t *ag_chain_to_json(const ag_chain_t *c);

#endif
