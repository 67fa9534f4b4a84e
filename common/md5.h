/*
 * md5.h — MD5 (RFC 1321), streaming, in plain C. Both ends of every transfer spend most
 * of their CPU here, and this one is a few per cent faster than OpenSSL's assembly
 * (see md5.c). Not for security: STEP uses MD5 to detect corruption only.
 */
#ifndef STEP_MD5_H
#define STEP_MD5_H

#include <stddef.h>
#include <stdint.h>

#define MD5_DIGEST_LEN 16

struct md5 {
	uint32_t st[4];
	uint64_t len;    /* bytes hashed so far */
	uint8_t buf[64]; /* a partial block */
	size_t nbuf;     /* bytes in buf */
};

void md5_init(struct md5 *m);
void md5_update(struct md5 *m, const void *p, size_t n);
/* Writes the digest; m must be md5_init'ed again before reuse. */
void md5_final(struct md5 *m, uint8_t out[MD5_DIGEST_LEN]);

#endif
