/*
 * auth.c — logins (user table with PBKDF2, or the course's open rule), HMAC tokens with
 * expiry, the per-server secret, a small cache of verified logins so that clients
 * which log in once per block do not pay PBKDF2 every time, and the bounded table that
 * throttles failed logins per user name and per address. Never logs secrets.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <arpa/inet.h>
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

struct auth_throttle_entry {
	uint8_t id[16];    /* keyed hash of the user name or the address */
	int used;          /* 0: free slot */
	unsigned fails;    /* failures counted since first_ms */
	uint64_t first_ms; /* monotonic ms of the window's first failure */
	uint64_t last_ms;  /* monotonic ms of the latest failure */
	uint64_t until_ms; /* locked until this monotonic ms; 0: not locked */
};

struct auth_throttle {
	unsigned limit;     /* failures that lock */
	uint64_t window_ms; /* counting window, and the lock's length */
	uint8_t key[AUTH_SECRET_LEN];
	pthread_mutex_t lock;
	struct auth_throttle_entry e[AUTH_THROTTLE_SETS][AUTH_THROTTLE_WAYS];
};

struct auth {
	int mode;
	int64_t token_ttl; /* seconds */
	uint8_t secret[AUTH_SECRET_LEN];
	sqlite3 *db; /* AUTH_USERS only; guarded by lock */
	pthread_mutex_t lock;
	struct auth_cache_slot cache[AUTH_CACHE_SLOTS];
	struct auth_throttle *thr; /* owned; NULL: throttling off */
	uint64_t id;               /* unique per auth_open: keys the token cache */
};

#define TCACHE_TOKEN_MAX 512 /* longer tokens are always verified */

/*
 * The last token each worker thread verified. A client sends the same token with every
 * request, and verifying it (base64, HMAC-SHA256, a copy) was 5% of the server's time
 * for a backup of many small files. The same bytes under the same secret, before the
 * expiry they carry, get the same answer; tokens are not revocable anyway.
 */
static _Thread_local struct {
	uint64_t auth_id; /* 0: empty */
	size_t len;
	int64_t expiry;
	char tok[TCACHE_TOKEN_MAX];
	char user[AUTH_MAX_USER + 1];
} tcache;
static uint64_t auth_ids;

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

/* Reads the secret without following a symlink; STEP_EINVAL when it is not a regular file
 * of exactly AUTH_SECRET_LEN bytes, STEP_ESYS (errno set) when it cannot be read. */
static int
auth_read_secret(const char *path, uint8_t secret[AUTH_SECRET_LEN])
{
	uint8_t data[AUTH_SECRET_LEN + 1];
	struct stat sb;
	ssize_t n;
	size_t got = 0;
	int fd, r = STEP_EINVAL;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0)
		return STEP_ESYS;
	if (fstat(fd, &sb) != 0) {
		r = STEP_ESYS;
		goto out;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size != AUTH_SECRET_LEN)
		goto out;
	while (got < sizeof(data) && (n = read(fd, data + got, sizeof(data) - got)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = STEP_ESYS;
			goto out;
		}
		got += (size_t)n;
	}
	if (got != AUTH_SECRET_LEN)
		goto out;
	memcpy(secret, data, AUTH_SECRET_LEN);
	r = STEP_OK;
out:
	OPENSSL_cleanse(data, sizeof(data));
	close(fd);
	return r;
}

static int
auth_load_secret(const char *root, uint8_t secret[AUTH_SECRET_LEN], char *errbuf, size_t errlen)
{
	char path[PATH_MAX];
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
	if ((r = auth_read_secret(path, secret)) != 0) {
		if (r == STEP_EINVAL)
			snprintf(errbuf, errlen, "'%s' is not a %d-byte regular file", path,
			    AUTH_SECRET_LEN);
		else
			snprintf(errbuf, errlen, "cannot read '%s': %s", path, strerror(errno));
		return r;
	}
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
	a->id = __atomic_add_fetch(&auth_ids, 1, __ATOMIC_RELAXED);
	pthread_mutex_init(&a->lock, NULL);
	if ((r = auth_load_secret(root, a->secret, errbuf, errlen)) != 0)
		goto out;
	if ((r = auth_set_throttle(a, AUTH_FAIL_LIMIT, AUTH_FAIL_WINDOW)) != 0) {
		snprintf(errbuf, errlen, "out of memory");
		goto out;
	}
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
	auth_throttle_free(a->thr);
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

static int
token_check(const uint8_t secret[AUTH_SECRET_LEN], const char *token, size_t len, int64_t now,
    char **user, int64_t *expiryp)
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
	*expiryp = (int64_t)expiry;
	r = STEP_OK;
out:
	free(raw);
	return r;
}

int
auth_token_check(
    const uint8_t secret[AUTH_SECRET_LEN], const char *token, size_t len, int64_t now, char **user)
{
	int64_t expiry;

	return token_check(secret, token, len, now, user, &expiry);
}

int
auth_verify(struct auth *a, const char *token, size_t len, char **user)
{
	int64_t now = util_wall_s(), expiry;
	char *u;
	int r;

	if (tcache.auth_id == a->id && tcache.len == len && now < tcache.expiry &&
	    memcmp(tcache.tok, token, len) == 0) {
		if ((u = strdup(tcache.user)) == NULL)
			return STEP_ENOMEM;
		*user = u;
		return STEP_OK;
	}
	if ((r = token_check(a->secret, token, len, now, user, &expiry)) != 0)
		return r;
	if (len <= sizeof(tcache.tok) && strlen(*user) < sizeof(tcache.user)) {
		tcache.auth_id = a->id;
		tcache.len = len;
		tcache.expiry = expiry;
		memcpy(tcache.tok, token, len);
		memcpy(tcache.user, *user, strlen(*user) + 1);
	}
	return STEP_OK;
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

/* ---- failed-login throttle ---- */

int
auth_throttle_new(
    unsigned limit, unsigned window, const uint8_t key[AUTH_SECRET_LEN], struct auth_throttle **out)
{
	struct auth_throttle *t;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return STEP_ENOMEM;
	t->limit = limit;
	t->window_ms = (uint64_t)window * 1000;
	memcpy(t->key, key, AUTH_SECRET_LEN);
	pthread_mutex_init(&t->lock, NULL);
	*out = t;
	return STEP_OK;
}

void
auth_throttle_free(struct auth_throttle *t)
{
	if (t == NULL)
		return;
	pthread_mutex_destroy(&t->lock);
	OPENSSL_cleanse(t->key, sizeof(t->key));
	free(t);
}

/*
 * The entry id of a user name ('u' + name) or an address ('a' + its bytes: 4 for IPv4 and
 * IPv4-mapped IPv6, the /64 prefix for other IPv6, the text for anything else).
 */
static void
throttle_id(const struct auth_throttle *t, char kind, const char *s, size_t n, uint8_t id[16])
{
	uint8_t msg[1 + AUTH_MAX_USER], mac[HASH_SHA256_LEN], a6[16];
	size_t len = 0;

	msg[len++] = (uint8_t)kind;
	if (kind == 'a' && inet_pton(AF_INET, s, msg + 1) == 1) {
		len += 4;
	} else if (kind == 'a' && inet_pton(AF_INET6, s, a6) == 1) {
		static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		if (memcmp(a6, mapped, sizeof(mapped)) == 0) {
			memcpy(msg + 1, a6 + 12, 4);
			len += 4;
		} else {
			msg[0] = '6';
			memcpy(msg + 1, a6, 8);
			len += 8;
		}
	} else {
		if (n > AUTH_MAX_USER)
			n = AUTH_MAX_USER;
		memcpy(msg + 1, s, n);
		len += n;
	}
	hash_hmac_sha256(t->key, AUTH_SECRET_LEN, msg, len, mac);
	memcpy(id, mac, 16);
}

/* 1 when e holds nothing that still counts at now. */
static int
throttle_expired(const struct auth_throttle *t, const struct auth_throttle_entry *e, uint64_t now)
{
	if (!e->used)
		return 1;
	if (e->until_ms != 0)
		return now >= e->until_ms;
	return now - e->first_ms >= t->window_ms;
}

static struct auth_throttle_entry *
throttle_set(struct auth_throttle *t, const uint8_t id[16])
{
	uint32_t h;

	memcpy(&h, id, sizeof(h));
	return t->e[h % AUTH_THROTTLE_SETS];
}

/* The entry holding id, expired or not, or NULL. Called with t->lock. */
static struct auth_throttle_entry *
throttle_find(struct auth_throttle *t, const uint8_t id[16])
{
	struct auth_throttle_entry *set = throttle_set(t, id);
	size_t i;

	for (i = 0; i < AUTH_THROTTLE_WAYS; i++)
		if (set[i].used && memcmp(set[i].id, id, 16) == 0)
			return &set[i];
	return NULL;
}

/* The slot of set to reuse: a free or expired one, else the unlocked one whose last
 * failure is oldest, else the locked one that unlocks first. */
static struct auth_throttle_entry *
throttle_victim(struct auth_throttle *t, struct auth_throttle_entry *set, uint64_t now)
{
	struct auth_throttle_entry *best = NULL;
	size_t i;

	for (i = 0; i < AUTH_THROTTLE_WAYS; i++)
		if (throttle_expired(t, &set[i], now))
			return &set[i];
	for (i = 0; i < AUTH_THROTTLE_WAYS; i++)
		if (set[i].until_ms == 0 && (best == NULL || set[i].last_ms < best->last_ms))
			best = &set[i];
	if (best != NULL)
		return best;
	for (i = 0; i < AUTH_THROTTLE_WAYS; i++)
		if (best == NULL || set[i].until_ms < best->until_ms)
			best = &set[i];
	return best;
}

/*
 * The live entry for the name or address s of kind (throttle_id), or NULL. With create,
 * a missing or expired one is (re)started empty, evicting within its set
 * (throttle_victim). Called with t->lock.
 */
static struct auth_throttle_entry *
throttle_get(struct auth_throttle *t, char kind, const char *s, size_t n, uint64_t now, int create)
{
	struct auth_throttle_entry *e;
	uint8_t id[16];

	throttle_id(t, kind, s, n, id);
	e = throttle_find(t, id);
	if (e != NULL && !throttle_expired(t, e, now))
		return e;
	if (!create)
		return NULL;
	if (e == NULL)
		e = throttle_victim(t, throttle_set(t, id), now);
	memset(e, 0, sizeof(*e));
	memcpy(e->id, id, 16);
	e->used = 1;
	e->first_ms = now;
	return e;
}

static int
throttle_locked_id(struct auth_throttle *t, char kind, const char *s, size_t n, uint64_t now)
{
	struct auth_throttle_entry *e = throttle_get(t, kind, s, n, now, 0);

	return e != NULL && e->until_ms > now;
}

int
auth_throttle_locked(
    struct auth_throttle *t, const char *user, size_t ulen, const char *peer, uint64_t now_ms)
{
	int r = 0;

	pthread_mutex_lock(&t->lock);
	if (ulen > 0 && throttle_locked_id(t, 'u', user, ulen, now_ms))
		r = 1;
	if (!r && peer != NULL && peer[0] != '\0' &&
	    throttle_locked_id(t, 'a', peer, strlen(peer), now_ms))
		r = 1;
	pthread_mutex_unlock(&t->lock);
	return r;
}

/* Counts one failure for the id; returns 1 when it has just become locked. */
static int
throttle_fail_id(struct auth_throttle *t, char kind, const char *s, size_t n, uint64_t now)
{
	struct auth_throttle_entry *e = throttle_get(t, kind, s, n, now, 1);

	if (e->until_ms != 0)
		return 0; /* already locked (a concurrent login): the lock is not extended */
	e->fails++;
	e->last_ms = now;
	if (e->fails < t->limit)
		return 0;
	e->until_ms = now + t->window_ms;
	if (e->until_ms == 0)
		e->until_ms = 1;
	return 1;
}

void
auth_throttle_fail(
    struct auth_throttle *t, const char *user, size_t ulen, const char *peer, uint64_t now_ms)
{
	int lu = 0, la = 0;

	pthread_mutex_lock(&t->lock);
	if (ulen > 0)
		lu = throttle_fail_id(t, 'u', user, ulen, now_ms);
	if (peer != NULL && peer[0] != '\0')
		la = throttle_fail_id(t, 'a', peer, strlen(peer), now_ms);
	pthread_mutex_unlock(&t->lock);
	/* Logged once per lock, not per attempt. */
	if (lu)
		log_info("login: user '%.*s' locked for %llu s after %u failures", (int)ulen, user,
		    (unsigned long long)(t->window_ms / 1000), t->limit);
	if (la)
		log_info("login: address %s locked for %llu s after %u failures", peer,
		    (unsigned long long)(t->window_ms / 1000), t->limit);
}

void
auth_throttle_success(struct auth_throttle *t, const char *user, size_t ulen)
{
	struct auth_throttle_entry *e;
	uint8_t id[16];

	if (ulen == 0)
		return;
	throttle_id(t, 'u', user, ulen, id);
	pthread_mutex_lock(&t->lock);
	e = throttle_find(t, id);
	if (e != NULL)
		memset(e, 0, sizeof(*e));
	pthread_mutex_unlock(&t->lock);
}

size_t
auth_throttle_count(struct auth_throttle *t, uint64_t now_ms)
{
	size_t i, j, n = 0;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < AUTH_THROTTLE_SETS; i++)
		for (j = 0; j < AUTH_THROTTLE_WAYS; j++)
			n += !throttle_expired(t, &t->e[i][j], now_ms);
	pthread_mutex_unlock(&t->lock);
	return n;
}

int
auth_set_throttle(struct auth *a, unsigned limit, unsigned window)
{
	struct auth_throttle *t = NULL;
	int r;

	if (limit > 0 && (r = auth_throttle_new(limit, window, a->secret, &t)) != 0)
		return r;
	auth_throttle_free(a->thr);
	a->thr = t;
	return STEP_OK;
}

/* The password check proper, without the throttle: 0, STEP_EAUTH, STEP_ENOMEM, STEP_EIO. */
static int
auth_check(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen,
    int64_t now, char **token)
{
	uint8_t mac[HASH_SHA256_LEN];
	struct auth_cache_slot *s;
	int r;

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
auth_login(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen,
    const char *peer, char **token)
{
	uint64_t mono = util_now_ms();
	int valid = auth_user_valid(user, ulen), r;

	/* A locked name or address fails before any password work: the same 401 as a wrong
	 * password, so the lock reveals nothing about the account either. */
	if (a->thr != NULL &&
	    auth_throttle_locked(a->thr, valid ? user : NULL, valid ? ulen : 0, peer, mono)) {
		log_debug("login: throttled");
		return STEP_EAUTH;
	}
	if (!valid || plen == 0 || plen > 256 || memchr(pass, '\0', plen) != NULL)
		r = STEP_EAUTH;
	else
		r = auth_check(a, user, ulen, pass, plen, util_wall_s(), token);
	if (a->thr != NULL && r == STEP_EAUTH)
		auth_throttle_fail(a->thr, valid ? user : NULL, valid ? ulen : 0, peer, mono);
	else if (a->thr != NULL && r == STEP_OK)
		auth_throttle_success(a->thr, user, ulen);
	return r;
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
