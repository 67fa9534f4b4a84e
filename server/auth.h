/*
 * auth.h — logins and tokens for stepd.
 *
 * Two modes: AUTH_USERS (a user table in ROOT/meta.db holding PBKDF2-HMAC-SHA256 of the
 * MD5 hex the client sends) and AUTH_OPEN (the course rule: password == md5(username)).
 * Tokens are base64("<user>|<expiry>|<hex HMAC-SHA256(secret, user|expiry|binding)>") with
 * a per-server 32-byte secret kept in ROOT/secret (0600), so they survive restarts and any
 * instance sharing the secret can verify them. The binding is the auth mode and, with a
 * user table, the user's epoch (random, new at `user add` and `user passwd`): a token made
 * under --auth open, for a deleted user or before a password change does not verify. The
 * user commands rewrite ROOT/users.rev, which a running stepd stats on every verification:
 * cached tokens and cached password checks end at once.
 * Failed logins are counted per client address and per (user name, address) pair in a
 * fixed-size table (auth_throttle): past a limit, the next attempt of that pair (or
 * address) must wait, 1 s and doubling, and is answered at once without a password check;
 * a name is never locked for every address. PBKDF2 runs on password threads
 * (auth_start_threads), never on the caller's. Never logs passwords or tokens.
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

#define AUTH_FAIL_LIMIT  5 /* default: failed logins of a (name, address) pair ... */
#define AUTH_ADDR_FACTOR 4 /* ... (times this for an address, whatever the names) ... */
#define AUTH_FAIL_WINDOW                                                                           \
	300                   /* ... before delays of 1 s, doubling up to this many seconds;       \
	                       * failures are forgotten this long after the last one */
#define AUTH_MAX_PASS    256  /* bytes of password accepted */
#define AUTH_MAX_THREADS 8    /* password threads at most */
#define AUTH_MAX_QUEUE   1024 /* LOGINs waiting for a password thread; beyond: STEP_EBUSY */
#define AUTH_PENDING     1    /* auth_login_start: the callback answers later */

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
 * after limit failures of a (name, address) pair, or limit * AUTH_ADDR_FACTOR of an
 * address, each further failure makes the next attempt wait 1 s, 2 s, 4 s, ... at most
 * window seconds; failures are forgotten window seconds after the last one. limit 0
 * turns throttling off. The default after auth_open is AUTH_FAIL_LIMIT / AUTH_FAIL_WINDOW.
 * Returns 0 or STEP_ENOMEM.
 */
int auth_set_throttle(struct auth *a, unsigned limit, unsigned window);
/* The first delay of the throttle (default 1 s; then doubling, at most the window). */
int auth_set_throttle_delay(struct auth *a, unsigned seconds);
void auth_throttle_set_delay(struct auth_throttle *t, unsigned seconds);

/*
 * The answer to a LOGIN handed to a password thread: err 0 with token (malloc'd, the callee
 * frees it), or STEP_EAUTH / STEP_ENOMEM / STEP_EIO with token NULL. Called on a password
 * thread.
 */
typedef void auth_done_fn(void *arg, int err, char *token, unsigned wait_s);

/*
 * Checks a LOGIN. user/pass are as sent (pass = hex MD5 of the password); peer is the
 * client's numeric address (NULL or "": unknown, not throttled). Returns 0 and *token
 * (malloc'd, caller frees); STEP_EAUTH for a bad user name, an unknown user or a wrong
 * password (indistinguishable on purpose); STEP_EAGAIN when the pair or the address must
 * wait (*wait_s seconds, whether the password is right or not); STEP_EBUSY when too many
 * LOGINs wait for a password thread; STEP_ENOMEM, STEP_EIO; or AUTH_PENDING when fn is
 * set, password threads run and the check needs PBKDF2: fn(arg, ...) answers later.
 */
int auth_login_start(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen,
    const char *peer, char **token, unsigned *wait_s, auth_done_fn *fn, void *arg);
/* auth_login_start on the calling thread (no callback; throttled: STEP_EAGAIN). */
int auth_login(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen,
    const char *peer, char **token);
/* Starts n (at most AUTH_MAX_THREADS) password threads; 0 or STEP_ESYS. */
int auth_start_threads(struct auth *a, int n);
/* Answers every queued LOGIN, then stops the password threads (before the callbacks'
 * targets go away). auth_free does it too. */
void auth_stop_threads(struct auth *a);

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
/* 1 when name may be given to `user add`: 1..AUTH_MAX_NEW_USER bytes of letters, digits and
 * . _ @ + -, starting with a letter, a digit or _ (no spaces, no '/', no "..", nothing a
 * shell or a path would read differently). */
#define AUTH_MAX_NEW_USER 64
int auth_user_name_ok(const char *name);

/*
 * The failed-login table, exposed for unit tests (auth_login drives it). Thread-safe.
 * Entries are keyed by a keyed hash (key: AUTH_SECRET_LEN bytes) of the address (IPv4,
 * IPv4-mapped IPv6 as IPv4, other IPv6 by its /64 prefix) or of the (user name, address)
 * pair, so table slots cannot be aimed at from outside; a full set evicts an expired entry
 * first, then the one whose last failure is oldest. Without an address nothing is
 * counted. Times are monotonic milliseconds. window is in seconds; limit > 0.
 */
int auth_throttle_new(unsigned limit, unsigned window, const uint8_t key[AUTH_SECRET_LEN],
    struct auth_throttle **out);
void auth_throttle_free(struct auth_throttle *t);
/* Seconds a LOGIN of user (ulen 0: none) from peer must still wait at now_ms (0: none). */
unsigned auth_throttle_wait(
    struct auth_throttle *t, const char *user, size_t ulen, const char *peer, uint64_t now_ms);
/* Counts a failed login against peer and the (user, peer) pair (ulen 0: the address only). */
void auth_throttle_fail(
    struct auth_throttle *t, const char *user, size_t ulen, const char *peer, uint64_t now_ms);
/* A successful login: forgets the (user, peer) pair's failures (not the address's). */
void auth_throttle_success(
    struct auth_throttle *t, const char *user, size_t ulen, const char *peer);
/* Entries in use (for tests; at most AUTH_THROTTLE_SETS * AUTH_THROTTLE_WAYS). */
size_t auth_throttle_count(struct auth_throttle *t, uint64_t now_ms);

/* User administration on ROOT/meta.db (the CLI). plain is the clear-text password; the
 * stored verifier is over md5hex(plain). Each change rewrites ROOT/users.rev, so a running
 * stepd drops the user's tokens and cached checks at once. Return 0, STEP_EEXIST (add),
 * STEP_ENOENT (del, passwd), STEP_EINVAL (bad name), STEP_EIO, STEP_ESYS. */
int auth_user_add(const char *root, const char *name, const char *plain);
int auth_user_passwd(const char *root, const char *name, const char *plain);
int auth_user_del(const char *root, const char *name);
/* Calls fn for each user name in order; stops and returns fn's value if non-zero. */
int auth_user_list(const char *root, int (*fn)(void *arg, const char *name), void *arg);

#endif
