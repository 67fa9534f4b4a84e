/*
 * mbhash.h — hashing many messages side by side (md5_many, hash_sha256_many): the lane
 * scheduler both share, and the 16-lane vector type their kernels work on. Internal to
 * common/.
 *
 * One message's digest is a single chain of steps, but separate messages are
 * independent: with a vector register of 16 32-bit lanes, one pass of a kernel hashes a
 * block of each of 16 messages. Each lane takes the next message as soon as its own is
 * done, so messages of different lengths keep the lanes full.
 */
#ifndef STEP_MBHASH_H
#define STEP_MBHASH_H

#include <stddef.h>
#include <stdint.h>

#define MB_LANES 16

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define MB_VECTOR 1
#include <immintrin.h>

typedef uint32_t mb_vec __attribute__((vector_size(4 * MB_LANES)));

/* One pass: a block of each lane (lane l's the 64 bytes at bp[l]) into the state, word w
 * of every lane in st[w]. */
typedef void mb_block_fn(mb_vec *st, const uint8_t *const bp[MB_LANES]);

/* The 16 blocks at bp loaded whole and transposed in registers (four rounds of 16
 * shuffles): x[w] holds word w of every lane's block, as the bytes lie in memory. */
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) void
mb_transpose16(const uint8_t *const bp[MB_LANES], __m512i x[16])
{
	__m512i r[16], t[16];
	int i, j;

	for (i = 0; i < 16; i++)
		r[i] = _mm512_loadu_si512(bp[i]);
	for (i = 0; i < 16; i += 2) { /* pairs of rows, word by word */
		t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
		t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
	}
	for (i = 0; i < 16; i += 4) { /* r[i + j]: rows i..i+3, word 4c + j of each chunk c */
		r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
		r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
		r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
		r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
	}
	for (j = 0; j < 4; j++) {
		__m512i a0 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88);
		__m512i a1 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xdd);
		__m512i b0 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88);
		__m512i b1 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xdd);

		x[j] = _mm512_shuffle_i32x4(a0, b0, 0x88);
		x[8 + j] = _mm512_shuffle_i32x4(a0, b0, 0xdd);
		x[4 + j] = _mm512_shuffle_i32x4(a1, b1, 0x88);
		x[12 + j] = _mm512_shuffle_i32x4(a1, b1, 0xdd);
	}
}
#else
typedef void mb_block_fn;
#endif

/* What the scheduler needs to know of a hash with 64-byte blocks and 32-bit state words. */
struct mb_algo {
	unsigned nst;        /* state words, at most 8 */
	const uint32_t *iv;  /* nst words */
	int be;              /* the bit length ends the padding big-endian (else little) */
	unsigned min_active; /* fewer lanes busy than this: finish them with blocks() */
	/* One message's n blocks at p into st; NULL when min_active <= 1 and block is given. */
	void (*blocks)(uint32_t *st, const uint8_t *p, size_t n);
	void (*digest)(const uint32_t *st, uint8_t *out);
	size_t outlen; /* bytes digest() writes */
};

/* Hashes n messages (data[i], len[i]) into out (outlen bytes each, in order): by block
 * (NULL: none on this CPU or build) while at least min_active lanes are busy, the rest
 * one at a time by a->blocks. */
void mb_hash(const struct mb_algo *a, mb_block_fn *block, size_t n, const void *const data[],
    const size_t len[], uint8_t *out);

#endif
