/* hash.c — streaming digests: MD5 by md5.c (faster than OpenSSL's, and MD5 is most of
 * a transfer's CPU), SHA-256 and HMAC over OpenSSL EVP; no global state beyond OpenSSL's
 * own. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>

#include "err.h"
#include "hash.h"
#include "md5.h"

/* SHA-256 fetched once: EVP_sha256() makes every EVP_DigestInit_ex look it up again in
 * OpenSSL's provider store (locks and a search), a tenth of hashing a 4 KiB file. NULL
 * when the fetch failed: then EVP_sha256(). Lives as long as the process. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void
sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *
sha256(void)
{
	pthread_once(&sha256_once, sha256_fetch);
	return sha256_md != NULL ? sha256_md : EVP_sha256();
}

struct hash_ctx {
	EVP_MD_CTX *md;     /* NULL for MD5 */
	const EVP_MD *type; /* NULL for MD5 */
	struct md5 m5;
};

static struct hash_ctx *
hash_new(const EVP_MD *type)
{
	struct hash_ctx *c = OPENSSL_zalloc(sizeof(*c));

	if (c == NULL)
		return NULL;
	c->type = type;
	if ((c->md = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(c->md, type, NULL) != 1) {
		hash_free(c);
		return NULL;
	}
	return c;
}

struct hash_ctx *
hash_md5_new(void)
{
	struct hash_ctx *c = OPENSSL_zalloc(sizeof(*c));

	if (c != NULL)
		md5_init(&c->m5);
	return c;
}

struct hash_ctx *
hash_sha256_new(void)
{
	return hash_new(sha256());
}

struct hash_ctx *
hash_dup(const struct hash_ctx *c)
{
	struct hash_ctx *d = OPENSSL_zalloc(sizeof(*d));

	if (d == NULL)
		return NULL;
	d->type = c->type;
	d->m5 = c->m5;
	if (c->md == NULL)
		return d;
	if ((d->md = EVP_MD_CTX_new()) == NULL || EVP_MD_CTX_copy_ex(d->md, c->md) != 1) {
		hash_free(d);
		return NULL;
	}
	return d;
}

int
hash_update(struct hash_ctx *c, const void *p, size_t n)
{
	if (c->md == NULL) {
		md5_update(&c->m5, p, n);
		return STEP_OK;
	}
	return EVP_DigestUpdate(c->md, p, n) == 1 ? STEP_OK : STEP_ENOMEM;
}

int
hash_final(struct hash_ctx *c, uint8_t *out)
{
	unsigned int len = 0;

	if (c->md == NULL) {
		md5_final(&c->m5, out);
		return HASH_MD5_LEN;
	}
	if (EVP_DigestFinal_ex(c->md, out, &len) != 1)
		return STEP_ENOMEM;
	return (int)len;
}

int
hash_reset(struct hash_ctx *c)
{
	if (c->md == NULL) {
		md5_init(&c->m5);
		return STEP_OK;
	}
	/* The digest the context has: no new fetch of the implementation (EVP_sha256() is
	 * only a name for one, looked up again by every init that is given it). */
	return EVP_DigestInit_ex2(c->md, NULL, NULL) == 1 ? STEP_OK : STEP_ENOMEM;
}

void
hash_free(struct hash_ctx *c)
{
	if (c == NULL)
		return;
	EVP_MD_CTX_free(c->md);
	OPENSSL_free(c);
}

void
hash_to_hex(const uint8_t *p, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hex[p[i] >> 4];
		out[2 * i + 1] = hex[p[i] & 15];
	}
	out[2 * n] = '\0';
}

void
hash_md5_hex(const void *p, size_t n, char out[HASH_MD5_HEX])
{
	uint8_t d[HASH_MD5_LEN];
	struct md5 m;

	md5_init(&m);
	md5_update(&m, p, n);
	md5_final(&m, d);
	hash_to_hex(d, HASH_MD5_LEN, out);
}

void
hash_sha256(const void *p, size_t n, uint8_t out[HASH_SHA256_LEN])
{
	unsigned int len = 0;

	EVP_Digest(p, n, out, &len, sha256(), NULL);
}

void
hash_hmac_sha256(
    const void *key, size_t keylen, const void *p, size_t n, uint8_t out[HASH_SHA256_LEN])
{
	unsigned int len = 0;

	HMAC(EVP_sha256(), key, (int)keylen, p, n, out, &len);
}

int
hash_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

int
hash_random(void *p, size_t n)
{
	return RAND_bytes(p, (int)n) == 1 ? STEP_OK : STEP_ESYS;
}
