/*
 * auth.h — logins and tokens for stepd.
 *
 * Two modes: AUTH_USERS (a user table in ROOT/meta.db holding PBKDF2-HMAC-SHA256 of the
 * MD5 hex the client sends) and AUTH_OPEN (the course rule: password == md5(username)).
 * Tokens are base64("<user>|<expiry>|<hex HMAC-SHA256(secret, user|expiry)>") with a
 * per-server 32-byte secret kept in ROOT/secret (0600), so they survive restarts and any
 * instance sharing the secret can verify them. Never logs passwords or tokens.
 */
#ifndef STEPD_AUTH_H
#define STEPD_AUTH_H

#include <stddef.h>
#include <stdint.h>

enum auth_mode { AUTH_USERS = 0, AUTH_OPEN = 1 };

#define AUTH_SECRET_LEN 32
#define AUTH_MAX_USER   255  /* bytes */
#define AUTH_MAX_TOKEN  2048 /* bytes of base64 accepted from the wire */

struct auth;

/*
 * Opens the authenticator over root: loads ROOT/secret or creates it (0600) on first
 * start; in AUTH_USERS mode opens ROOT/meta.db. token_ttl is in seconds.
 * Returns 0 and *out (free with auth_free), STEP_ESYS or STEP_EIO with errbuf filled.
 */
int auth_open(
    const char *root, int mode, int64_t token_ttl, struct auth **out, char *errbuf, size_t errlen);
void auth_free(struct auth *a);

/*
 * Checks a LOGIN. user/pass are as sent (pass = hex MD5 of the password). On success
 * returns 0 and *token (malloc'd, caller frees). STEP_EAUTH for a bad user name, an
 * unknown user or a wrong password (indistinguishable on purpose), STEP_ENOMEM, STEP_EIO.
 */
int auth_login(
    struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen, char **token);

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

/* User administration on ROOT/meta.db (the CLI). plain is the clear-text password; the
 * stored verifier is over md5hex(plain). Return 0, STEP_EEXIST (add), STEP_ENOENT (del),
 * STEP_EINVAL (bad name), STEP_EIO. */
int auth_user_add(const char *root, const char *name, const char *plain);
int auth_user_del(const char *root, const char *name);
/* Calls fn for each user name in order; stops and returns fn's value if non-zero. */
int auth_user_list(const char *root, int (*fn)(void *arg, const char *name), void *arg);

#endif
