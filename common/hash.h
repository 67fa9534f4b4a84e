/*
 * hash.h — MD5 (md5.c), SHA-256 and HMAC-SHA256 (OpenSSL's EVP interface), streaming.
 */
#ifndef STEP_HASH_H
#define STEP_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_MD5_LEN    16
#define HASH_MD5_HEX    33 /* 32 hex digits + NUL */
#define HASH_SHA256_LEN 32
#define HASH_SHA256_HEX 65

struct hash_ctx; /* opaque; an EVP_MD_CTX or an MD5 state */

/* New streaming MD5 / SHA-256 context; NULL on allocation failure. */
struct hash_ctx *hash_md5_new(void);
struct hash_ctx *hash_sha256_new(void);
/* Copies state (to fork a running hash); NULL on failure. */
struct hash_ctx *hash_dup(const struct hash_ctx *c);
int hash_update(struct hash_ctx *c, const void *p, size_t n);
/* Writes the digest (16 or 32 bytes) and returns its length; the context may be reused after
 * hash_reset. */
int hash_final(struct hash_ctx *c, uint8_t *out);
int hash_reset(struct hash_ctx *c);
void hash_free(struct hash_ctx *c);

/* One-shot helpers; hex output is lower case and NUL-terminated. */
void hash_md5_hex(const void *p, size_t n, char out[HASH_MD5_HEX]);
void hash_sha256(const void *p, size_t n, uint8_t out[HASH_SHA256_LEN]);
/* The SHA-256s of n separate messages: out[i] is that of the len[i] bytes at data[i].
 * With AVX-512, 16 side by side (sha256_many.c), else one by one through OpenSSL. */
void hash_sha256_many(
    size_t n, const void *const data[], const size_t len[], uint8_t out[][HASH_SHA256_LEN]);
/* Makes hash_sha256_many use its lanes (want 1, if the CPU has them) or not (0); returns
 * whether it does. For tests and benchmarks; it decides by itself otherwise. */
int hash_sha256_many_lanes(int want);
void hash_hmac_sha256(
    const void *key, size_t keylen, const void *p, size_t n, uint8_t out[HASH_SHA256_LEN]);
void hash_to_hex(const uint8_t *p, size_t n, char *out);
/* Constant-time comparison of n bytes; 1 when equal. */
int hash_equal(const void *a, const void *b, size_t n);
/* Fills p with n cryptographically random bytes; 0 or STEP_ESYS. */
int hash_random(void *p, size_t n);

#endif
