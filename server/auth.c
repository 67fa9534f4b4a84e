/*
 * auth.c — logins (user table with PBKDF2, or the course's open rule), HMAC tokens with
 * expiry, the per-server secret, a small cache of verified logins so that clients
 * which log in once per block do not pay PBKDF2 every time, and the bounded table that
 * throttles failed logins per user name and per address. Never logs secrets.
 */
#include <ctype.h>
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
	uint64_t rev;                 /* auth's revocation count when verified */
	uint8_t mac[HASH_SHA256_LEN]; /* HMAC(secret, md5hex) of the verified password */
	int64_t when;                 /* wall seconds of the verification */
};

struct auth_throttle_entry {
	uint8_t id[16];    /* keyed hash of the address, or of the (name, address) pair */
	int used;          /* 0: free slot */
	unsigned fails;    /* failures since the entry was (re)started */
	uint64_t last_ms;  /* monotonic ms of the latest failure */
	uint64_t until_ms; /* the next attempt waits until this monotonic ms; 0: none */
};

struct auth_throttle {
	unsigned limit;     /* failures of a (name, address) pair before delays start */
	uint64_t window_ms; /* failures are forgotten this long after the last; longest delay */
	uint64_t delay_ms;  /* the first delay (then doubling) */
	uint8_t key[AUTH_SECRET_LEN];
	pthread_mutex_t lock;
	struct auth_throttle_entry e[AUTH_THROTTLE_SETS][AUTH_THROTTLE_WAYS];
};

/* A LOGIN waiting for a password thread. */
struct auth_job {
	char user[AUTH_MAX_USER + 1];
	size_t ulen;
	char pass[AUTH_MAX_PASS + 1];
	size_t plen;
	char peer[64];
	auth_done_fn *fn;
	void *arg;
	struct auth_job *next;
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
	/* Revocation: `stepd user del/passwd/add` rewrites ROOT/users.rev; a change of its
	 * inode or times ends every cached token and login verification at once. */
	char *rev_path;
	uint64_t rev_sig; /* signature of the file as last seen (atomic) */
	uint64_t rev;     /* bumped on each change seen (atomic) */
	/* Password threads: PBKDF2 never runs on an event-loop worker. */
	pthread_mutex_t jmu;
	pthread_cond_t jcond;
	struct auth_job *jhead, *jtail;
	unsigned njobs; /* queued, under jmu */
	int jstop;
	int nthreads;
	pthread_t threads[AUTH_MAX_THREADS];
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
	uint64_t rev;     /* the auth's revocation count when it was verified */
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

int
auth_user_name_ok(const char *name)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > AUTH_MAX_NEW_USER || !(isalnum((unsigned char)name[0]) || name[0] == '_'))
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && strchr("._@+-", name[i]) == NULL)
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
	pthread_mutex_init(&a->jmu, NULL);
	pthread_cond_init(&a->jcond, NULL);
	if ((a->rev_path = malloc(strlen(root) + sizeof("/users.rev"))) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	snprintf(a->rev_path, strlen(root) + sizeof("/users.rev"), "%s/users.rev", root);
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
	auth_stop_threads(a);
	for (i = 0; i < AUTH_CACHE_SLOTS; i++)
		free(a->cache[i].user);
	free(a->rev_path);
	pthread_mutex_destroy(&a->jmu);
	pthread_cond_destroy(&a->jcond);
	auth_throttle_free(a->thr);
	sqlite3_close(a->db);
	pthread_mutex_destroy(&a->lock);
	OPENSSL_cleanse(a, sizeof(*a));
	free(a);
}

/* HMAC-SHA256(secret, msg[0..n) followed by "|bind" when bind is set). */
static void
token_mac(const uint8_t secret[AUTH_SECRET_LEN], const void *msg, size_t n, const char *bind,
    uint8_t mac[HASH_SHA256_LEN])
{
	char buf[AUTH_MAX_USER + 128];

	if (bind == NULL || n + 1 + strlen(bind) > sizeof(buf)) {
		hash_hmac_sha256(secret, AUTH_SECRET_LEN, msg, n, mac);
		return;
	}
	memcpy(buf, msg, n);
	buf[n] = '|';
	memcpy(buf + n + 1, bind, strlen(bind));
	hash_hmac_sha256(secret, AUTH_SECRET_LEN, buf, n + 1 + strlen(bind), mac);
}

static int token_make_bound(const uint8_t secret[AUTH_SECRET_LEN], const char *user, size_t ulen,
    int64_t expiry, const char *bind, char **token);

int
auth_token_make(const uint8_t secret[AUTH_SECRET_LEN], const char *user, size_t ulen,
    int64_t expiry, char **token)
{
	return token_make_bound(secret, user, ulen, expiry, NULL, token);
}

/* A token whose MAC also covers bind (the auth mode and the user's epoch): the same text
 * format, so clients see no difference, but it verifies only under the same binding. */
static int
token_make_bound(const uint8_t secret[AUTH_SECRET_LEN], const char *user, size_t ulen,
    int64_t expiry, const char *bind, char **token)
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
	token_mac(secret, raw, ulen + (size_t)n, bind, mac);
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

/* Looks up the binding of a token's user (a->mode, the user's epoch): 0 and bind,
 * STEP_EAUTH (no such user), STEP_EIO. NULL a: no binding. */
static int auth_binding(struct auth *a, const char *user, size_t ulen, char bind[32]);
static uint64_t auth_rev(struct auth *a);

static int
token_check(struct auth *a, const uint8_t secret[AUTH_SECRET_LEN], const char *token, size_t len,
    int64_t now, char **user, int64_t *expiryp)
{
	char bind[32];
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
	if (expiry <= now)
		goto out;
	if (a != NULL && (r = auth_binding(a, (const char *)raw, ulen, bind)) != 0)
		goto out;
	r = STEP_EAUTH;
	token_mac(secret, raw, bar2, a != NULL ? bind : NULL, mac);
	hash_to_hex(mac, sizeof(mac), hex);
	if (!hash_equal(hex, raw + bar2 + 1, 64))
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

	return token_check(NULL, secret, token, len, now, user, &expiry);
}

int
auth_verify(struct auth *a, const char *token, size_t len, char **user)
{
	int64_t now = util_wall_s(), expiry;
	uint64_t rev = auth_rev(a);
	char *u;
	int r;

	if (tcache.auth_id == a->id && tcache.rev == rev && tcache.len == len &&
	    now < tcache.expiry && memcmp(tcache.tok, token, len) == 0) {
		if ((u = strdup(tcache.user)) == NULL)
			return STEP_ENOMEM;
		*user = u;
		return STEP_OK;
	}
	if ((r = token_check(a, a->secret, token, len, now, user, &expiry)) != 0)
		return r == STEP_EIO ? STEP_EAUTH : r;
	if (len <= sizeof(tcache.tok) && strlen(*user) < sizeof(tcache.user)) {
		tcache.auth_id = a->id;
		tcache.rev = rev;
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
	t->delay_ms = 1000;
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

/* The bytes naming an address: 4 for IPv4 and IPv4-mapped IPv6, the /64 prefix (tag '6')
 * for other IPv6, the text for anything else. Returns the length written to out[0..17). */
static size_t
addr_bytes(const char *peer, uint8_t out[17])
{
	uint8_t a6[16];
	size_t n;

	if (inet_pton(AF_INET, peer, out + 1) == 1) {
		out[0] = '4';
		return 5;
	}
	if (inet_pton(AF_INET6, peer, a6) == 1) {
		static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		if (memcmp(a6, mapped, sizeof(mapped)) == 0) {
			out[0] = '4';
			memcpy(out + 1, a6 + 12, 4);
			return 5;
		}
		out[0] = '6';
		memcpy(out + 1, a6, 8);
		return 9;
	}
	n = strlen(peer) < 16 ? strlen(peer) : 16;
	out[0] = 't';
	memcpy(out + 1, peer, n);
	return n + 1;
}

/* The entry id of an address ('a' + its bytes) or of a (name, address) pair ('p' + the
 * address bytes + the name), keyed so that table slots cannot be aimed at from outside. */
static void
throttle_id(
    const struct auth_throttle *t, const char *user, size_t ulen, const char *peer, uint8_t id[16])
{
	uint8_t msg[1 + 17 + AUTH_MAX_USER], mac[HASH_SHA256_LEN];
	size_t len = 0;

	msg[len++] = user != NULL ? 'p' : 'a';
	len += addr_bytes(peer != NULL ? peer : "", msg + len);
	if (user != NULL) {
		if (ulen > AUTH_MAX_USER)
			ulen = AUTH_MAX_USER;
		memcpy(msg + len, user, ulen);
		len += ulen;
	}
	hash_hmac_sha256(t->key, AUTH_SECRET_LEN, msg, len, mac);
	memcpy(id, mac, 16);
}

/* 1 when e holds nothing that still counts at now. */
static int
throttle_expired(const struct auth_throttle *t, const struct auth_throttle_entry *e, uint64_t now)
{
	return !e->used || (now >= e->until_ms && now - e->last_ms >= t->window_ms);
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

/* The slot of set to reuse: a free or expired one, else the one whose last failure is
 * oldest. */
static struct auth_throttle_entry *
throttle_victim(struct auth_throttle *t, struct auth_throttle_entry *set, uint64_t now)
{
	struct auth_throttle_entry *best = NULL;
	size_t i;

	for (i = 0; i < AUTH_THROTTLE_WAYS; i++)
		if (throttle_expired(t, &set[i], now))
			return &set[i];
	for (i = 0; i < AUTH_THROTTLE_WAYS; i++)
		if (best == NULL || set[i].last_ms < best->last_ms)
			best = &set[i];
	return best;
}

/* The live entry for id, or NULL; with create, a missing or expired one is (re)started
 * empty. Called with t->lock. */
static struct auth_throttle_entry *
throttle_get(struct auth_throttle *t, const uint8_t id[16], uint64_t now, int create)
{
	struct auth_throttle_entry *e = throttle_find(t, id);

	if (e != NULL && !throttle_expired(t, e, now))
		return e;
	if (!create)
		return NULL;
	if (e == NULL)
		e = throttle_victim(t, throttle_set(t, id), now);
	memset(e, 0, sizeof(*e));
	memcpy(e->id, id, 16);
	e->used = 1;
	return e;
}

/* Milliseconds left to wait for id at now (0: none). Called with t->lock. */
static uint64_t
throttle_left(struct auth_throttle *t, const uint8_t id[16], uint64_t now)
{
	struct auth_throttle_entry *e = throttle_get(t, id, now, 0);

	return e != NULL && e->until_ms > now ? e->until_ms - now : 0;
}

unsigned
auth_throttle_wait(
    struct auth_throttle *t, const char *user, size_t ulen, const char *peer, uint64_t now_ms)
{
	uint8_t ida[16], idp[16];
	uint64_t a, p;

	if (peer == NULL || peer[0] == '\0')
		return 0; /* an unknown source: nothing to key on (never a name alone) */
	throttle_id(t, NULL, 0, peer, ida);
	if (ulen > 0)
		throttle_id(t, user, ulen, peer, idp);
	pthread_mutex_lock(&t->lock);
	a = throttle_left(t, ida, now_ms);
	p = ulen > 0 ? throttle_left(t, idp, now_ms) : 0;
	pthread_mutex_unlock(&t->lock);
	if (p > a)
		a = p;
	return (unsigned)((a + 999) / 1000);
}

/* Counts a failure for id; past limit, the next attempt waits delay_ms, then twice as long
 * per further failure, at most the window. Returns the delay in seconds when it is the
 * first one (for the log), else 0. */
static unsigned
throttle_fail_id(struct auth_throttle *t, const uint8_t id[16], unsigned limit, uint64_t now)
{
	struct auth_throttle_entry *e = throttle_get(t, id, now, 1);
	uint64_t delay;
	unsigned over;

	e->fails++;
	e->last_ms = now;
	if (e->fails < limit)
		return 0;
	over = e->fails - limit;
	delay = over >= 30 ? t->window_ms : t->delay_ms << over;
	if (delay > t->window_ms)
		delay = t->window_ms;
	e->until_ms = now + delay;
	return over == 0 ? (unsigned)((delay + 999) / 1000) : 0;
}

void
auth_throttle_fail(
    struct auth_throttle *t, const char *user, size_t ulen, const char *peer, uint64_t now_ms)
{
	uint8_t id[16];
	unsigned da = 0, dp = 0;

	if (peer == NULL || peer[0] == '\0')
		return;
	pthread_mutex_lock(&t->lock);
	throttle_id(t, NULL, 0, peer, id);
	da = throttle_fail_id(t, id, t->limit * AUTH_ADDR_FACTOR, now_ms);
	if (ulen > 0) {
		throttle_id(t, user, ulen, peer, id);
		dp = throttle_fail_id(t, id, t->limit, now_ms);
	}
	pthread_mutex_unlock(&t->lock);
	/* Logged when the delays start, never per attempt. */
	if (dp > 0)
		log_info("login: '%.*s' from %s waits %u s after failed logins", (int)ulen, user,
		    peer, dp);
	if (da > 0)
		log_info("login: address %s waits %u s after failed logins", peer, da);
}

void
auth_throttle_success(struct auth_throttle *t, const char *user, size_t ulen, const char *peer)
{
	struct auth_throttle_entry *e;
	uint8_t id[16];

	if (ulen == 0 || peer == NULL || peer[0] == '\0')
		return;
	throttle_id(t, user, ulen, peer, id);
	pthread_mutex_lock(&t->lock);
	if ((e = throttle_find(t, id)) != NULL)
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

void
auth_throttle_set_delay(struct auth_throttle *t, unsigned seconds)
{
	t->delay_ms = seconds > 0 ? (uint64_t)seconds * 1000 : 1000;
}

int
auth_set_throttle_delay(struct auth *a, unsigned seconds)
{
	if (a->thr != NULL)
		auth_throttle_set_delay(a->thr, seconds);
	return STEP_OK;
}

/* ---- revocation and token binding ---- */

/* The revocation count: bumped (and the login cache emptied) when ROOT/users.rev has
 * changed since last seen. One stat() per call, no lock unless it changed. */
static uint64_t
auth_rev(struct auth *a)
{
	struct stat sb;
	uint64_t sig = 1, h = 1469598103934665603ull;
	size_t i;

	if (a->mode != AUTH_USERS || a->rev_path == NULL)
		return 0;
	if (stat(a->rev_path, &sb) == 0) {
		uint64_t v[5] = { (uint64_t)sb.st_ino, (uint64_t)sb.st_mtim.tv_sec,
			(uint64_t)sb.st_mtim.tv_nsec, (uint64_t)sb.st_ctim.tv_nsec,
			(uint64_t)sb.st_size };

		for (i = 0; i < 5; i++)
			h = (h ^ v[i]) * 1099511628211ull;
		sig = h | 2;
	}
	if (__atomic_load_n(&a->rev_sig, __ATOMIC_ACQUIRE) != sig) {
		pthread_mutex_lock(&a->lock);
		if (a->rev_sig != sig) {
			for (i = 0; i < AUTH_CACHE_SLOTS; i++) {
				free(a->cache[i].user);
				a->cache[i].user = NULL;
			}
			__atomic_add_fetch(&a->rev, 1, __ATOMIC_ACQ_REL);
			__atomic_store_n(&a->rev_sig, sig, __ATOMIC_RELEASE);
		}
		pthread_mutex_unlock(&a->lock);
	}
	return __atomic_load_n(&a->rev, __ATOMIC_ACQUIRE);
}

static int
auth_binding(struct auth *a, const char *user, size_t ulen, char bind[32])
{
	sqlite3_stmt *st = NULL;
	int r;

	if (a->mode == AUTH_OPEN) {
		snprintf(bind, 32, "open");
		return STEP_OK;
	}
	pthread_mutex_lock(&a->lock);
	if (sqlite3_prepare_v2(a->db, "SELECT epoch FROM users WHERE name = ?1", -1, &st, NULL) !=
	    SQLITE_OK) {
		pthread_mutex_unlock(&a->lock);
		return STEP_EIO;
	}
	sqlite3_bind_text(st, 1, user, (int)ulen, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		snprintf(bind, 32, "users:%lld", (long long)sqlite3_column_int64(st, 0));
		r = STEP_OK;
	} else {
		r = r == SQLITE_DONE ? STEP_EAUTH : STEP_EIO;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&a->lock);
	return r;
}

/* A new token for user, bound to the mode and the user's epoch. */
static int
auth_token_new(struct auth *a, const char *user, size_t ulen, int64_t now, char **token)
{
	char bind[32];
	int r;

	if ((r = auth_binding(a, user, ulen, bind)) != 0)
		return r;
	return token_make_bound(a->secret, user, ulen, now + a->token_ttl, bind, token);
}

/* Tells a running stepd over root that the user table changed (revocation). */
static int
auth_bump_rev(const char *root)
{
	char path[PATH_MAX], txt[40];
	uint8_t b[8];
	int n;

	if (snprintf(path, sizeof(path), "%s/users.rev", root) >= (int)sizeof(path) ||
	    hash_random(b, sizeof(b)) != 0)
		return STEP_EINVAL;
	n = snprintf(txt, sizeof(txt), "%02x%02x%02x%02x%02x%02x%02x%02x\n", b[0], b[1], b[2], b[3],
	    b[4], b[5], b[6], b[7]);
	return util_write_file_atomic(path, txt, (size_t)n, 0600) == 0 ? STEP_OK : STEP_ESYS;
}

/* The password check proper, without the throttle: 0, STEP_EAUTH, STEP_ENOMEM, STEP_EIO. */
static int
auth_check(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen,
    int64_t now, char **token)
{
	uint8_t mac[HASH_SHA256_LEN];
	struct auth_cache_slot *s;
	uint64_t rev;
	int r;

	if (a->mode == AUTH_OPEN) {
		char want[HASH_MD5_HEX];

		hash_md5_hex(user, ulen, want);
		if (plen != 32 || strncasecmp(want, pass, 32) != 0)
			return STEP_EAUTH;
		return auth_token_new(a, user, ulen, now, token);
	}
	rev = auth_rev(a); /* a user table changed since: the cache is emptied first */
	hash_hmac_sha256(a->secret, AUTH_SECRET_LEN, pass, plen, mac);
	s = &a->cache[auth_slot(user, ulen)];
	pthread_mutex_lock(&a->lock);
	r = s->user != NULL && s->rev == rev && strlen(s->user) == ulen &&
	    memcmp(s->user, user, ulen) == 0 && now - s->when < AUTH_CACHE_TTL &&
	    hash_equal(s->mac, mac, sizeof(mac));
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
			s->rev = rev; /* a revocation during the check makes this entry stale */
			pthread_mutex_unlock(&a->lock);
		}
	}
	return auth_token_new(a, user, ulen, now, token);
}

/* 1 when a LOGIN of user with pass would skip PBKDF2 (open mode, or a cached verification). */
static int
auth_cheap(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen)
{
	uint8_t mac[HASH_SHA256_LEN];
	struct auth_cache_slot *s;
	uint64_t rev;
	int r;

	if (a->mode == AUTH_OPEN)
		return 1;
	rev = auth_rev(a);
	hash_hmac_sha256(a->secret, AUTH_SECRET_LEN, pass, plen, mac);
	s = &a->cache[auth_slot(user, ulen)];
	pthread_mutex_lock(&a->lock);
	r = s->user != NULL && s->rev == rev && strlen(s->user) == ulen &&
	    memcmp(s->user, user, ulen) == 0 && util_wall_s() - s->when < AUTH_CACHE_TTL &&
	    hash_equal(s->mac, mac, sizeof(mac));
	pthread_mutex_unlock(&a->lock);
	return r;
}

/* The check and the throttle's bookkeeping, on whatever thread runs it. */
static int
auth_login_run(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen,
    const char *peer, char **token)
{
	int valid = auth_user_valid(user, ulen), r;

	if (!valid || plen == 0 || plen > AUTH_MAX_PASS || memchr(pass, '\0', plen) != NULL)
		r = STEP_EAUTH;
	else
		r = auth_check(a, user, ulen, pass, plen, util_wall_s(), token);
	if (a->thr != NULL && r == STEP_EAUTH)
		auth_throttle_fail(
		    a->thr, valid ? user : NULL, valid ? ulen : 0, peer, util_now_ms());
	else if (a->thr != NULL && r == STEP_OK)
		auth_throttle_success(a->thr, user, ulen, peer);
	return r;
}

static void *
auth_thread(void *arg)
{
	struct auth *a = arg;

	for (;;) {
		struct auth_job *j;
		char *token = NULL;
		int r;

		pthread_mutex_lock(&a->jmu);
		while (a->jhead == NULL && !a->jstop)
			pthread_cond_wait(&a->jcond, &a->jmu);
		if ((j = a->jhead) == NULL) {
			pthread_mutex_unlock(&a->jmu);
			return NULL;
		}
		a->jhead = j->next;
		if (a->jhead == NULL)
			a->jtail = NULL;
		a->njobs--;
		pthread_mutex_unlock(&a->jmu);
		r = auth_login_run(a, j->user, j->ulen, j->pass, j->plen, j->peer, &token);
		j->fn(j->arg, r, token, 0);
		OPENSSL_cleanse(j, sizeof(*j));
		free(j);
	}
}

int
auth_start_threads(struct auth *a, int n)
{
	if (n > AUTH_MAX_THREADS)
		n = AUTH_MAX_THREADS;
	while (a->nthreads < n) {
		if (pthread_create(&a->threads[a->nthreads], NULL, auth_thread, a) != 0)
			return a->nthreads > 0 ? STEP_OK : STEP_ESYS;
		pthread_setname_np(a->threads[a->nthreads], "stepd-auth");
		a->nthreads++;
	}
	return STEP_OK;
}

void
auth_stop_threads(struct auth *a)
{
	int i;

	if (a == NULL || a->nthreads == 0)
		return;
	pthread_mutex_lock(&a->jmu);
	a->jstop = 1;
	pthread_cond_broadcast(&a->jcond);
	pthread_mutex_unlock(&a->jmu);
	/* The threads finish the queue (each job answered) and exit. */
	for (i = 0; i < a->nthreads; i++)
		pthread_join(a->threads[i], NULL);
	a->nthreads = 0;
}

int
auth_login_start(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen,
    const char *peer, char **token, unsigned *wait_s, auth_done_fn *fn, void *arg)
{
	int valid = auth_user_valid(user, ulen);
	struct auth_job *j;
	unsigned w;

	*wait_s = 0;
	/* A waiting name-and-address pair, or address, is answered before any password work,
	 * the same whether the password is right or not. */
	if (a->thr != NULL &&
	    (w = auth_throttle_wait(
	         a->thr, valid ? user : NULL, valid ? ulen : 0, peer, util_now_ms())) > 0) {
		*wait_s = w;
		return STEP_EAGAIN;
	}
	if (fn == NULL || a->nthreads == 0 || !valid || plen == 0 || plen > AUTH_MAX_PASS ||
	    auth_cheap(a, user, ulen, pass, plen))
		return auth_login_run(a, user, ulen, pass, plen, peer, token);
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return STEP_ENOMEM;
	memcpy(j->user, user, ulen);
	j->ulen = ulen;
	memcpy(j->pass, pass, plen);
	j->plen = plen;
	snprintf(j->peer, sizeof(j->peer), "%s", peer != NULL ? peer : "");
	j->fn = fn;
	j->arg = arg;
	pthread_mutex_lock(&a->jmu);
	if (a->njobs >= AUTH_MAX_QUEUE || a->jstop) {
		pthread_mutex_unlock(&a->jmu);
		OPENSSL_cleanse(j, sizeof(*j));
		free(j);
		return STEP_EBUSY;
	}
	if (a->jtail != NULL)
		a->jtail->next = j;
	else
		a->jhead = j;
	a->jtail = j;
	a->njobs++;
	pthread_cond_signal(&a->jcond);
	pthread_mutex_unlock(&a->jmu);
	return AUTH_PENDING;
}

int
auth_login(struct auth *a, const char *user, size_t ulen, const char *pass, size_t plen,
    const char *peer, char **token)
{
	unsigned w;

	return auth_login_start(a, user, ulen, pass, plen, peer, token, &w, NULL, NULL);
}

/* user add (passwd 0) or user passwd (1). */
static int
auth_user_set(const char *root, const char *name, const char *plain, int passwd)
{
	uint8_t salt[AUTH_SALT_LEN], hash[HASH_SHA256_LEN];
	uint64_t epoch = 0;
	char md5hex[HASH_MD5_HEX];
	sqlite3_stmt *st = NULL;
	sqlite3 *db = NULL;
	int r;

	if (passwd ? !auth_user_valid(name, strlen(name)) : !auth_user_name_ok(name))
		return STEP_EINVAL;
	if ((r = meta_open(root, &db)) != 0)
		return r;
	hash_md5_hex(plain, strlen(plain), md5hex);
	if ((r = hash_random(salt, sizeof(salt))) != 0 ||
	    (r = hash_random((uint8_t *)&epoch, sizeof(epoch))) != 0)
		goto out;
	if ((r = auth_pbkdf2(md5hex, 32, salt, sizeof(salt), AUTH_PBKDF2_ITER, hash)) != 0)
		goto out;
	r = STEP_EIO;
	/* A new epoch: tokens of an earlier user of the same name, or of the old password,
	 * do not verify against it. */
	if (sqlite3_prepare_v2(db,
	        passwd
	            ? "UPDATE users SET salt = ?2, iter = ?3, hash = ?4, epoch = ?5 WHERE name = ?1"
	            : "INSERT INTO users(name, salt, iter, hash, epoch) VALUES(?1,?2,?3,?4,?5)",
	        -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, salt, sizeof(salt), SQLITE_STATIC);
	sqlite3_bind_int(st, 3, AUTH_PBKDF2_ITER);
	sqlite3_bind_blob(st, 4, hash, sizeof(hash), SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)(epoch & INT64_MAX));
	switch (sqlite3_step(st)) {
	case SQLITE_DONE:
		r = passwd && sqlite3_changes(db) == 0 ? STEP_ENOENT : STEP_OK;
		break;
	case SQLITE_CONSTRAINT:
		r = STEP_EEXIST;
		break;
	default:
		r = STEP_EIO;
	}
	if (r == STEP_OK)
		r = auth_bump_rev(root);
out:
	OPENSSL_cleanse(md5hex, sizeof(md5hex));
	OPENSSL_cleanse(hash, sizeof(hash));
	sqlite3_finalize(st);
	sqlite3_close(db);
	return r;
}

int
auth_user_add(const char *root, const char *name, const char *plain)
{
	return auth_user_set(root, name, plain, 0);
}

int
auth_user_passwd(const char *root, const char *name, const char *plain)
{
	return auth_user_set(root, name, plain, 1);
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
	if (r == STEP_OK)
		r = auth_bump_rev(root);
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
