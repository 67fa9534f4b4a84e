/*
 * sha256_many.c — SHA-256 (FIPS 180-4) of many messages side by side (mbhash.h), for the
 * content keys of a sync's small files and chunks. With AVX-512, one pass hashes a block of
 * each of 16 messages, about twice what OpenSSL's single-message SHA-NI code does on the
 * same core (4.0 against 2.1 GB/s here): a lane is worth an eighth of SHA-NI. So once the
 * last messages are in the lanes and fewer than SHA_NI_LANES are still busy, a CPU with
 * SHA-NI finishes them one by one through OpenSSL; without it, the lanes run to the end.
 * Elsewhere, one message at a time through OpenSSL.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Update from a given state: no EVP call does */
#include <string.h>

#include "hash.h"
#include "mbhash.h"

#ifdef MB_VECTOR /* x86-64 */
#include <cpuid.h>
#include <openssl/sha.h>
#endif

static const uint32_t sha256_iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f,
	0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };

#ifdef MB_VECTOR
static const uint32_t K[64] = { 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b,
	0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6,
	0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d,
	0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
	0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585,
	0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa,
	0xa4506ceb, 0xbef9a3f7, 0xc67178f2 };

#define ROR(x, n)    (((x) >> (n)) | ((x) << (32 - (n))))
#define S0(x)        (ROR(x, 2) ^ ROR(x, 13) ^ ROR(x, 22))
#define S1(x)        (ROR(x, 6) ^ ROR(x, 11) ^ ROR(x, 25))
#define s0(x)        (ROR(x, 7) ^ ROR(x, 18) ^ ((x) >> 3))
#define s1(x)        (ROR(x, 17) ^ ROR(x, 19) ^ ((x) >> 10))
#define CH(e, f, g)  (((f ^ g) & e) ^ g)
#define MAJ(a, b, c) ((a & b) | (c & (a | b)))

/* Round i on the eight working variables, named as they stand in this round; w is the
 * 16-word window of the message schedule, extended in place from round 16 on. */
#define ROUND(a, b, c, d, e, f, g, h, i)                                                           \
	do {                                                                                       \
		if ((i) >= 16)                                                                     \
			w[(i)&15] += s1(w[((i)-2) & 15]) + w[((i)-7) & 15] + s0(w[((i)-15) & 15]); \
		t1 = h + S1(e) + CH(e, f, g) + K[i] + w[(i)&15];                                   \
		d += t1;                                                                           \
		h = t1 + S0(a) + MAJ(a, b, c);                                                     \
	} while (0)

__attribute__((target("avx512f,avx512bw"))) static void
sha_block_avx512(mb_vec *st, const uint8_t *const bp[MB_LANES])
{
	/* Each 32-bit word's bytes reversed: SHA-256 reads big-endian words. */
	const __m512i bswap = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
	mb_vec a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6],
	       h = st[7], t1, w[16];
	__m512i x[16];
	int i;

	mb_transpose16(bp, x);
	for (i = 0; i < 16; i++)
		w[i] = (mb_vec)_mm512_shuffle_epi8(x[i], bswap);
	for (i = 0; i < 64; i += 8) {
		ROUND(a, b, c, d, e, f, g, h, i);
		ROUND(h, a, b, c, d, e, f, g, i + 1);
		ROUND(g, h, a, b, c, d, e, f, i + 2);
		ROUND(f, g, h, a, b, c, d, e, i + 3);
		ROUND(e, f, g, h, a, b, c, d, i + 4);
		ROUND(d, e, f, g, h, a, b, c, i + 5);
		ROUND(c, d, e, f, g, h, a, b, i + 6);
		ROUND(b, c, d, e, f, g, h, a, i + 7);
	}
	st[0] += a;
	st[1] += b;
	st[2] += c;
	st[3] += d;
	st[4] += e;
	st[5] += f;
	st[6] += g;
	st[7] += h;
}

static int
sha_vector(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

#define SHA_NI_LANES 9 /* fewer lanes busy than this: finished through SHA-NI */

/* Whether the CPU has the SHA extensions (CPUID leaf 7, EBX bit 29), which OpenSSL uses. */
static int
sha_ni(void)
{
	unsigned a, b, c, d;

	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)) != 0;
}

/* n whole blocks at p into the state st, through OpenSSL's SHA256_Update (SHA-NI). */
static void
sha_blocks_ni(uint32_t *st, const uint8_t *p, size_t n)
{
	SHA256_CTX c;

	SHA256_Init(&c);
	memcpy(c.h, st, sizeof(c.h));
	SHA256_Update(&c, p, n * 64);
	memcpy(st, c.h, sizeof(c.h));
}
#endif

static void
sha_digest(const uint32_t *st, uint8_t *out)
{
	int i;

	for (i = 0; i < 32; i++)
		out[i] = (uint8_t)(st[i / 4] >> (24 - 8 * (i % 4)));
}

/* -1 until looked at, then 1 when the CPU has the 16-lane kernel's instructions. */
static int sha_chosen = -1;

int
hash_sha256_many_lanes(int want)
{
	int have = 0;

#ifdef MB_VECTOR
	have = sha_vector();
#endif
	__atomic_store_n(&sha_chosen, want && have, __ATOMIC_RELAXED);
	return want && have;
}

void
hash_sha256_many(
    size_t n, const void *const data[], const size_t len[], uint8_t out[][HASH_SHA256_LEN])
{
	static const struct mb_algo sha = {
		.nst = 8,
		.iv = sha256_iv,
		.be = 1,
		.min_active = 1,
		.blocks = NULL, /* the lanes run to the end (without SHA-NI) */
		.digest = sha_digest,
		.outlen = HASH_SHA256_LEN,
	};
	int vec = __atomic_load_n(&sha_chosen, __ATOMIC_RELAXED);
	size_t i;

	if (vec < 0)
		vec = hash_sha256_many_lanes(1);
#ifdef MB_VECTOR
	if (vec && n > 0) {
		static int ni = -1;
		struct mb_algo a = sha;

		if (__atomic_load_n(&ni, __ATOMIC_RELAXED) < 0)
			__atomic_store_n(&ni, sha_ni(), __ATOMIC_RELAXED);
		if (__atomic_load_n(&ni, __ATOMIC_RELAXED)) {
			a.min_active = SHA_NI_LANES; /* the last few finished through SHA-NI */
			a.blocks = sha_blocks_ni;
		}
		mb_hash(&a, sha_block_avx512, n, data, len, &out[0][0]);
		return;
	}
#endif
	for (i = 0; i < n; i++)
		hash_sha256(data[i], len[i], out[i]);
}
