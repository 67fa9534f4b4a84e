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

/* The MD5s of n separate messages: out[i] is that of the len[i] bytes at data[i], as
 * md5_init, md5_update and md5_final would give. Hashes up to 16 messages side by side in
 * vector registers where the CPU has them, several times faster than one by one for
 * many small messages. */
void md5_many(
    size_t n, const void *const data[], const size_t len[], uint8_t out[][MD5_DIGEST_LEN]);
/* Makes md5_many use the named implementation ("avx512", "avx2", "sse2" or "scalar"; NULL:
 * the fastest this CPU has) and returns its name, or NULL when this CPU or build has no
 * such one. For tests and benchmarks; md5_many picks by itself otherwise. */
const char *md5_many_isa(const char *want);

#endif
