/*
 * auth.c — logins (user table with PBKDF2, or the course's open rule), HMAC tokens with
 * expiry, the per-server secret, and a small cache of verified logins so that clients
 * which log in once per block do not pay PBKDF2 every time. Never logs secrets.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "auth.h"
#include "err.h"
#include "hash.h"
#include "log.h"
#include "meta.h"
#include "util.h"

#define AUTH_PBKDF2_ITER 50000
#define AUTH_SALT_LEN    16
#define AUTH_CACHE_SLOTS 256
#define AUTH_CACHE_TTL   60 /* seconds a cached verification stays good */

struct auth_cache_slot {
	char *user;                   /* owned, NULL when empty */
	uint8_t mac[HASH_SHA256_LEN]; /* HMAC(secret, md5hex) of the verified password */
	int64_t when;                 /* wall seconds of the verification */
};

struct auth {
	int mode;
	int64_t token_ttl; /* seconds */
	uint8_t secret[AUTH_SECRET_LEN];
	sqlite3 *db; /* AUTH_USERS only; guarded by lock */
	pthread_mutex_t lock;
	struct auth_cache_slot cache[AUTH_CACHE_SLOTS];
};

int
auth_user_valid(const char *user, size_t ulen)
{
	size_t i;

	if (ulen == 0 || ulen > AUTH_MAX_USER)
		return 0;
	for (i = 0; i < ulen; i++)
		if ((unsigned char)user[i] < 0x20 || user[i] == 0x7f)
			return 0;
	return 1;
}

static int
auth_load_secret(const char *root, uint8_t secret[AUTH_SECRET_LEN], char *errbuf, size_t errlen)
{
	char path[PATH_MAX];
	char *data = NULL;
	size_t len = 0;
	int fd, r;

	if (snprintf(path, sizeof(path), "%s/secret", root) >= (int)sizeof(path))
		return STEP_EINVAL;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) >= 0) {
		uint8_t fresh[AUTH_SECRET_LEN];

		r = hash_random(fresh, sizeof(fresh));
		if (r == 0)
			r = util_write_all(fd, fresh, sizeof(fresh));
		if (r == 0 && fsync(fd) != 0)
			r = STEP_ESYS;
		close(fd);
		OPENSSL_cleanse(fresh, sizeof(fresh));
		if (r != 0) {
			unlink(path);
			snprintf(errbuf, errlen, "cannot create '%s': %s", path, strerror(errno));
			return r;
		}
	} else if (errno != EEXIST) {
		snprintf(errbuf, errlen, "cannot create '%s': %s", path, strerror(errno));
		return STEP_ESYS;
	}
	if ((r = util_read_file(path, 4096, &data, &len)) != 0) {
		snprintf(errbuf, errlen, "cannot read '%s': %s", path, strerror(errno));
		return r;
	}
	if (len != AUTH_SECRET_LEN) {
		snprintf(errbuf, errlen, "'%s' is not a %d-byte secret", path, AUTH_SECRET_LEN);
		OPENSSL_cleanse(data, len);
		free(data);
		return STEP_EINVAL;
	}
	memcpy(secret, data, AUTH_SECRET_LEN);
	OPENSSL_cleanse(data, len);
	free(data);
	return STEP_OK;
}

int
auth_open(
    const char *root, int mode, int64_t token_ttl, struct auth **out, char *errbuf, size_t errlen)
{
	struct auth *a;
	int r;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return STEP_ENOMEM;
	a->mode = mode;
	a->token_ttl = token_ttl;
	pthread_mutex_init(&a->lock, NULL);
	if ((r = auth_load_secret(root, a->secret, errbuf, errlen)) != 0)
		goto out;
	if (mode == AUTH_USERS && (r = meta_open(root, &a->db)) != 0) {
		snprintf(errbuf, errlen, "cannot open the user database in '%s'", root);
		goto out;
	}
	*out = a;
	a = NULL;
	r = STEP_OK;
out:
	auth_free(a);
	return r;
}

void
auth_free(struct auth *a)
{
	size_t i;

	if (a == NULL)
		return;
	for (i = 0; i < AUTH_CACHE_SLOTS; i++)
		free(a->cache[i].user);
	sqlite3_close(a->db);
	pthread_mutex_destroy(&a->lock);
	OPENSSL_cleanse(a, sizeof(*a));
	free(a);
}

int
auth_token_make(const uint8_t secret[AUTH_SECRET_LEN], const char *user, size_t ulen,
    int64_t expiry, char **token)
{
	uint8_t mac[HASH_SHA256_LEN];
	char hex[HASH_SHA256_HEX];
	char *raw = NULL, *tok = NULL;
	size_t rawlen;
	int n;

	if (!auth_user_valid(user, ulen))
		return STEP_EINVAL;
	/* raw = user|expiry|hexmac */
	rawlen = ulen + 1 + 24 + 1 + 64 + 1;
	if ((raw = malloc(rawlen)) == NULL)
		return STEP_ENOMEM;
	memcpy(raw, user, ulen);
	n = snprintf(raw + ulen, rawlen - ulen, "|%lld", (long long)expiry);
	hash_hmac_sha256(secret, AUTH_SECRET_LEN, raw, ulen + (size_t)n, mac);
	hash_to_hex(mac, sizeof(mac), hex);
	snprintf(raw + ulen + (size_t)n, rawlen - ulen - (size_t)n, "|%s", hex);
	rawlen = ulen + (size_t)n + 65;
	if ((tok = malloc(4 * ((rawlen + 2) / 3) + 1)) == NULL) {
		free(raw);
		return STEP_ENOMEM;
	}
	util_b64_encode(raw, rawlen, tok);
	free(raw);
	*token = tok;
	return STEP_OK;
}

int
auth_token_check(
    const uint8_t secret[AUTH_SECRET_LEN], const char *token, size_t len, int64_t now, char **user)
{
	uint8_t *raw = NULL;
	uint8_t mac[HASH_SHA256_LEN];
	char hex[HASH_SHA256_HEX];
	size_t rawlen = 0, ulen, i, bar1 = 0, bar2 = 0;
	long long expiry;
	char num[32];
	char *u;
	int r = STEP_EAUTH;

	if (len == 0 || len > AUTH_MAX_TOKEN || memchr(token, '\0', len) != NULL)
		return STEP_EAUTH;
	if ((raw = malloc(3 * (len / 4) + 3)) == NULL)
		return STEP_ENOMEM;
	if (util_b64_decode(token, len, raw, &rawlen) != 0)
		goto out;
	/* From the right: "|<64 hex>" then "|<expiry>"; the rest is the user name. */
	if (rawlen < 1 + 1 + 1 + 1 + 64)
		goto out;
	bar2 = rawlen - 65;
	if (raw[bar2] != '|')
		goto out;
	for (i = bar2; i > 0; i--)
		if (raw[i - 1] == '|')
			break;
	if (i == 0)
		goto out;
	bar1 = i - 1;
	ulen = bar1;
	if (!auth_user_valid((const char *)raw, ulen) || bar2 - bar1 - 1 >= sizeof(num) ||
	    bar2 - bar1 - 1 == 0)
		goto out;
	memcpy(num, raw + bar1 + 1, bar2 - bar1 - 1);
	num[bar2 - bar1 - 1] = '\0';
	if (util_parse_ll(num, 0, INT64_MAX, &expiry) != 0)
		goto out;
	hash_hmac_sha256(secret, AUTH_SECRET_LEN, raw, bar2, mac);
	hash_to_hex(mac, sizeof(mac), hex);
	if (!hash_equal(hex, raw + bar2 + 1, 64))
		goto out;
	if (expiry <= now)
		goto out;
	if ((u = malloc(ulen + 1)) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	memcpy(u, raw, ulen);
	u[ulen] = '\0';
	*user = u;
	r = STEP_OK;
out:
	free(raw);
	return r;
}

int
auth_verify(struct auth *a, const char *token, size_t len, char **user)
{
	return auth_token_check(a->secret, token, len, util_wall_s(), user);
}

static int
auth_pbkdf2(const char *md5hex, size_t n, const uint8_t *salt, size_t saltlen, int iter,
    uint8_t out[HASH_SHA256_LEN])
{
	if (PKCS5_PBKDF2_HMAC(
	        md5hex, (int)n, salt, (int)saltlen, iter, EVP_sha256(), HASH_SHA256_LEN, out) != 1)
		return STEP_EIO;
	return STEP_OK;
}

static size_t
auth_slot(const char *user, size_t ulen)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < ulen; i++)
		h = (h ^ (uint8_t)user[i]) * 16777619u;
	return h % AUTH_CACHE_SLOTS;
}

/* Looks the verifier up and runs PBKDF2; the user's existence is not revealed by the
 * result (an unknown user runs the same derivation against a dummy salt). */
static int
auth_check_users(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen)
{
	static const uint8_t dummy_salt[AUTH_SALT_LEN] = { 0 };
	uint8_t salt[64], stored[HASH_SHA256_LEN], got[HASH_SHA256_LEN];
	size_t saltlen = sizeof(dummy_salt);
	int iter = AUTH_PBKDF2_ITER, found = 0, r;
	sqlite3_stmt *st = NULL;

	memcpy(salt, dummy_salt, sizeof(dummy_salt));
	memset(stored, 0, sizeof(stored));
	pthread_mutex_lock(&a->lock);
	if (sqlite3_prepare_v2(a->db, "SELECT salt, iter, hash FROM users WHERE name = ?1", -1, &st,
	        NULL) != SQLITE_OK) {
		pthread_mutex_unlock(&a->lock);
		return STEP_EIO;
	}
	sqlite3_bind_text(st, 1, user, (int)ulen, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW && sqlite3_column_bytes(st, 0) > 0 &&
	    sqlite3_column_bytes(st, 0) <= (int)sizeof(salt) &&
	    sqlite3_column_bytes(st, 2) == HASH_SHA256_LEN) {
		saltlen = (size_t)sqlite3_column_bytes(st, 0);
		memcpy(salt, sqlite3_column_blob(st, 0), saltlen);
		iter = sqlite3_column_int(st, 1);
		memcpy(stored, sqlite3_column_blob(st, 2), HASH_SHA256_LEN);
		found = iter > 0;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&a->lock);
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		return STEP_EIO;
	if (iter <= 0 || iter > 10000000)
		iter = AUTH_PBKDF2_ITER;
	if (auth_pbkdf2(pass, plen, salt, saltlen, iter, got) != 0)
		return STEP_EIO;
	r = found && hash_equal(got, stored, sizeof(got)) ? STEP_OK : STEP_EAUTH;
	OPENSSL_cleanse(got, sizeof(got));
	return r;
}

int
auth_login(
    struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen, char **token)
{
	uint8_t mac[HASH_SHA256_LEN];
	struct auth_cache_slot *s;
	int64_t now = util_wall_s();
	int r;

	if (!auth_user_valid(user, ulen) || plen == 0 || plen > 256 ||
	    memchr(pass, '\0', plen) != NULL)
		return STEP_EAUTH;
	if (a->mode == AUTH_OPEN) {
		char want[HASH_MD5_HEX];

		hash_md5_hex(user, ulen, want);
		if (plen != 32 || strncasecmp(want, pass, 32) != 0)
			return STEP_EAUTH;
		return auth_token_make(a->secret, user, ulen, now + a->token_ttl, token);
	}
	hash_hmac_sha256(a->secret, AUTH_SECRET_LEN, pass, plen, mac);
	s = &a->cache[auth_slot(user, ulen)];
	pthread_mutex_lock(&a->lock);
	r = s->user != NULL && strlen(s->user) == ulen && memcmp(s->user, user, ulen) == 0 &&
	    now - s->when < AUTH_CACHE_TTL && hash_equal(s->mac, mac, sizeof(mac));
	pthread_mutex_unlock(&a->lock);
	if (!r) {
		char *copy;

		if ((r = auth_check_users(a, user, ulen, pass, plen)) != 0)
			return r;
		if ((copy = malloc(ulen + 1)) != NULL) {
			memcpy(copy, user, ulen);
			copy[ulen] = '\0';
			pthread_mutex_lock(&a->lock);
			free(s->user);
			s->user = copy;
			memcpy(s->mac, mac, sizeof(mac));
			s->when = now;
			pthread_mutex_unlock(&a->lock);
		}
	}
	return auth_token_make(a->secret, user, ulen, now + a->token_ttl, token);
}

int
auth_user_add(const char *root, const char *name, const char *plain)
{
	uint8_t salt[AUTH_SALT_LEN], hash[HASH_SHA256_LEN];
	char md5hex[HASH_MD5_HEX];
	sqlite3_stmt *st = NULL;
	sqlite3 *db = NULL;
	int r;

	if (!auth_user_valid(name, strlen(name)))
		return STEP_EINVAL;
	if ((r = meta_open(root, &db)) != 0)
		return r;
	hash_md5_hex(plain, strlen(plain), md5hex);
	if ((r = hash_random(salt, sizeof(salt))) != 0)
		goto out;
	if ((r = auth_pbkdf2(md5hex, 32, salt, sizeof(salt), AUTH_PBKDF2_ITER, hash)) != 0)
		goto out;
	r = STEP_EIO;
	if (sqlite3_prepare_v2(db, "INSERT INTO users(name, salt, iter, hash) VALUES(?1,?2,?3,?4)",
	        -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, salt, sizeof(salt), SQLITE_STATIC);
	sqlite3_bind_int(st, 3, AUTH_PBKDF2_ITER);
	sqlite3_bind_blob(st, 4, hash, sizeof(hash), SQLITE_STATIC);
	switch (sqlite3_step(st)) {
	case SQLITE_DONE:
		r = STEP_OK;
		break;
	case SQLITE_CONSTRAINT:
		r = STEP_EEXIST;
		break;
	default:
		r = STEP_EIO;
	}
out:
	OPENSSL_cleanse(md5hex, sizeof(md5hex));
	OPENSSL_cleanse(hash, sizeof(hash));
	sqlite3_finalize(st);
	sqlite3_close(db);
	return r;
}

int
auth_user_del(const char *root, const char *name)
{
	sqlite3_stmt *st = NULL;
	sqlite3 *db = NULL;
	int r;

	if ((r = meta_open(root, &db)) != 0)
		return r;
	r = STEP_EIO;
	if (sqlite3_prepare_v2(db, "DELETE FROM users WHERE name = ?1", -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto out;
	r = sqlite3_changes(db) > 0 ? STEP_OK : STEP_ENOENT;
out:
	sqlite3_finalize(st);
	sqlite3_close(db);
	return r;
}

int
auth_user_list(const char *root, int (*fn)(void *arg, const char *name), void *arg)
{
	sqlite3_stmt *st = NULL;
	sqlite3 *db = NULL;
	int r, s;

	if ((r = meta_open(root, &db)) != 0)
		return r;
	r = STEP_EIO;
	if (sqlite3_prepare_v2(db, "SELECT name FROM users ORDER BY name", -1, &st, NULL) !=
	    SQLITE_OK)
		goto out;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		if ((r = fn(arg, (const char *)sqlite3_column_text(st, 0))) != 0)
			goto out;
	}
	r = s == SQLITE_DONE ? STEP_OK : STEP_EIO;
out:
	sqlite3_finalize(st);
	sqlite3_close(db);
	return r;
}
