/*
 * auth.h — logins and tokens for stepd.
 *
 * Two modes: AUTH_USERS (a user table in ROOT/meta.db holding PBKDF2-HMAC-SHA256 of the
 * MD5 hex the client sends) and AUTH_OPEN (the course rule: password == md5(username)).
 * Tokens are base64("<user>|<expiry>|<hex HMAC-SHA256(secret, user|expiry)>") with a
 * per-server 32-byte secret kept in ROOT/secret (0600), so they survive restarts and any
 * instance sharing the secret can verify them. Failed logins are counted per user name and
 * per client address in a fixed-size table (auth_throttle): past a limit, LOGINs for that
 * name or from that address fail at once, without a password check, for a window. Never
 * logs passwords or tokens.
 */
#ifndef STEPD_AUTH_H
#define STEPD_AUTH_H

#include <stddef.h>
#include <stdint.h>

enum auth_mode { AUTH_USERS = 0, AUTH_OPEN = 1 };

#define AUTH_SECRET_LEN 32
#define AUTH_MAX_USER   255  /* bytes */
#define AUTH_MAX_TOKEN  2048 /* bytes of base64 accepted from the wire */

#define AUTH_THROTTLE_SETS 512 /* the throttle table: SETS x WAYS entries, never more */
#define AUTH_THROTTLE_WAYS 8

#define AUTH_FAIL_LIMIT  10  /* default: failed logins per user or address ... */
#define AUTH_FAIL_WINDOW 300 /* ... within this many seconds lock it for as long */

struct auth;
struct auth_throttle;

/*
 * Opens the authenticator over root: loads ROOT/secret or creates it (0600) on first
 * start; in AUTH_USERS mode opens ROOT/meta.db. token_ttl is in seconds.
 * Returns 0 and *out (free with auth_free), STEP_ESYS or STEP_EIO with errbuf filled.
 */
int auth_open(
    const char *root, int mode, int64_t token_ttl, struct auth **out, char *errbuf, size_t errlen);
void auth_free(struct auth *a);

/*
 * Sets the failed-login throttle of a (before serving; not thread-safe against logins):
 * limit failures within window seconds lock the user name, or the address, for window
 * seconds from the failure that reached the limit. limit 0 turns throttling off. The
 * default after auth_open is AUTH_FAIL_LIMIT / AUTH_FAIL_WINDOW. Returns 0 or STEP_ENOMEM.
 */
int auth_set_throttle(struct auth *a, unsigned limit, unsigned window);

/*
 * Checks a LOGIN. user/pass are as sent (pass = hex MD5 of the password); peer is the
 * client's numeric address (NULL or "": unknown, only the user name is throttled). On
 * success returns 0 and *token (malloc'd, caller frees). STEP_EAUTH for a bad user name,
 * an unknown user, a wrong password or a throttled user or address (indistinguishable on
 * purpose), STEP_ENOMEM, STEP_EIO.
 */
int auth_login(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen,
    const char *peer, char **token);

/*
 * Verifies a token. Returns 0 and *user (malloc'd NUL-terminated, caller frees), or
 * STEP_EAUTH when it is malformed, forged, altered or expired; STEP_ENOMEM.
 */
int auth_verify(struct auth *a, const char *token, size_t len, char **user);

/* Pure token helpers (exposed for unit tests). Same contracts as above, with explicit
 * secret and clock. */
int auth_token_make(const uint8_t secret[AUTH_SECRET_LEN], const char *user, size_t ulen,
    int64_t expiry, char **token);
int auth_token_check(
    const uint8_t secret[AUTH_SECRET_LEN], const char *token, size_t len, int64_t now, char **user);
/* 1 when a user name is acceptable: 1..AUTH_MAX_USER bytes, no control characters. */
int auth_user_valid(const char *user, size_t ulen);

/*
 * The failed-login table, exposed for unit tests (auth_login drives it). Thread-safe.
 * Entries are keyed by a keyed hash (key: AUTH_SECRET_LEN bytes) of the user name or of
 * the address (IPv4, IPv4-mapped IPv6 as IPv4, other IPv6 by its /64 prefix), so table
 * slots cannot be aimed at from outside; a full set evicts an expired entry first, then
 * the stalest unlocked one, a locked one only when all are locked. Times are monotonic
 * milliseconds. window is in seconds; limit > 0.
 */
int auth_throttle_new(unsigned limit, unsigned window, const uint8_t key[AUTH_SECRET_LEN],
    struct auth_throttle **out);
void auth_throttle_free(struct auth_throttle *t);
/* 1 when user (ulen 0: none) or peer (NULL or "": none) is locked at now_ms, else 0. */
int auth_throttle_locked(
    struct auth_throttle *t, const char *user, size_t ulen, const char *peer, uint64_t now_ms);
/* Counts a failed login against user and peer (either may be absent, as above). */
void auth_throttle_fail(
    struct auth_throttle *t, const char *user, size_t ulen, const char *peer, uint64_t now_ms);
/* A successful login: forgets user's failures (not the address's). */
void auth_throttle_success(struct auth_throttle *t, const char *user, size_t ulen);
/* Entries in use (for tests; at most AUTH_THROTTLE_SETS * AUTH_THROTTLE_WAYS). */
size_t auth_throttle_count(struct auth_throttle *t, uint64_t now_ms);

/* User administration on ROOT/meta.db (the CLI). plain is the clear-text password; the
 * stored verifier is over md5hex(plain). Return 0, STEP_EEXIST (add), STEP_ENOENT (del),
 * STEP_EINVAL (bad name), STEP_EIO. */
int auth_user_add(const char *root, const char *name, const char *plain);
int auth_user_del(const char *root, const char *name);
/* Calls fn for each user name in order; stops and returns fn's value if non-zero. */
int auth_user_list(const char *root, int (*fn)(void *arg, const char *name), void *arg);

#endif
