/*
 * md5.c — MD5 (RFC 1321) in plain C; pure functions over memory, no allocation.
 *
 * MD5 is one long chain of dependent steps, so its speed is the length of that chain:
 * per step, the operations that need b (the previous step's result). Two things keep it
 * short here. Round 2's G = (b & d) | (c & ~d) is written as (b & d) + (c & ~d) (the two
 * terms never share a bit), so c & ~d joins the early sum and only one operation on b
 * precedes the add (OpenSSL's assembly does two); and an empty asm statement makes the
 * compiler finish the sum of everything that does not need b (a, the message word, the
 * constant) before it adds the function of b, instead of reassociating b's term into the
 * front of the chain. About 5% faster than OpenSSL 3.0's md5-x86_64 on the machines
 * tried; test_md5 compares the two over many lengths and split points.
 */
#include <string.h>

#include "mbhash.h"
#include "md5.h"

#if defined(__GNUC__) || defined(__clang__)
#define SEQ(x) __asm__("" : "+r"(x)) /* no code: x is complete here */
#else
#define SEQ(x) ((void)0)
#endif

#define ROL(x, s) (((x) << (s)) | ((x) >> (32 - (s))))

#define STEP_F(a, b, c, d, m, k, s)                                                                \
	do {                                                                                       \
		a += (m) + (k);                                                                    \
		SEQ(a);                                                                            \
		a += ((c ^ d) & b) ^ d;                                                            \
		a = ROL(a, s) + b;                                                                 \
	} while (0)
#define STEP_G(a, b, c, d, m, k, s)                                                                \
	do {                                                                                       \
		a += (m) + (k) + (~d & c);                                                         \
		SEQ(a);                                                                            \
		a += d & b;                                                                        \
		a = ROL(a, s) + b;                                                                 \
	} while (0)
#define STEP_H(a, b, c, d, m, k, s)                                                                \
	do {                                                                                       \
		a += (m) + (k);                                                                    \
		SEQ(a);                                                                            \
		a += (c ^ d) ^ b;                                                                  \
		a = ROL(a, s) + b;                                                                 \
	} while (0)
#define STEP_I(a, b, c, d, m, k, s)                                                                \
	do {                                                                                       \
		a += (m) + (k);                                                                    \
		SEQ(a);                                                                            \
		a += (b | ~d) ^ c;                                                                 \
		a = ROL(a, s) + b;                                                                 \
	} while (0)

/* The 64 steps of one block over a, b, c, d and the message words x[0..15], given the
 * four step functions: shared by the one-message and the many-lane code. */
#define MD5_STEPS(F, G, H, I, x)                                                                   \
	F(a, b, c, d, x[0], 0xd76aa478, 7);                                                        \
	F(d, a, b, c, x[1], 0xe8c7b756, 12);                                                       \
	F(c, d, a, b, x[2], 0x242070db, 17);                                                       \
	F(b, c, d, a, x[3], 0xc1bdceee, 22);                                                       \
	F(a, b, c, d, x[4], 0xf57c0faf, 7);                                                        \
	F(d, a, b, c, x[5], 0x4787c62a, 12);                                                       \
	F(c, d, a, b, x[6], 0xa8304613, 17);                                                       \
	F(b, c, d, a, x[7], 0xfd469501, 22);                                                       \
	F(a, b, c, d, x[8], 0x698098d8, 7);                                                        \
	F(d, a, b, c, x[9], 0x8b44f7af, 12);                                                       \
	F(c, d, a, b, x[10], 0xffff5bb1, 17);                                                      \
	F(b, c, d, a, x[11], 0x895cd7be, 22);                                                      \
	F(a, b, c, d, x[12], 0x6b901122, 7);                                                       \
	F(d, a, b, c, x[13], 0xfd987193, 12);                                                      \
	F(c, d, a, b, x[14], 0xa679438e, 17);                                                      \
	F(b, c, d, a, x[15], 0x49b40821, 22);                                                      \
	G(a, b, c, d, x[1], 0xf61e2562, 5);                                                        \
	G(d, a, b, c, x[6], 0xc040b340, 9);                                                        \
	G(c, d, a, b, x[11], 0x265e5a51, 14);                                                      \
	G(b, c, d, a, x[0], 0xe9b6c7aa, 20);                                                       \
	G(a, b, c, d, x[5], 0xd62f105d, 5);                                                        \
	G(d, a, b, c, x[10], 0x02441453, 9);                                                       \
	G(c, d, a, b, x[15], 0xd8a1e681, 14);                                                      \
	G(b, c, d, a, x[4], 0xe7d3fbc8, 20);                                                       \
	G(a, b, c, d, x[9], 0x21e1cde6, 5);                                                        \
	G(d, a, b, c, x[14], 0xc33707d6, 9);                                                       \
	G(c, d, a, b, x[3], 0xf4d50d87, 14);                                                       \
	G(b, c, d, a, x[8], 0x455a14ed, 20);                                                       \
	G(a, b, c, d, x[13], 0xa9e3e905, 5);                                                       \
	G(d, a, b, c, x[2], 0xfcefa3f8, 9);                                                        \
	G(c, d, a, b, x[7], 0x676f02d9, 14);                                                       \
	G(b, c, d, a, x[12], 0x8d2a4c8a, 20);                                                      \
	H(a, b, c, d, x[5], 0xfffa3942, 4);                                                        \
	H(d, a, b, c, x[8], 0x8771f681, 11);                                                       \
	H(c, d, a, b, x[11], 0x6d9d6122, 16);                                                      \
	H(b, c, d, a, x[14], 0xfde5380c, 23);                                                      \
	H(a, b, c, d, x[1], 0xa4beea44, 4);                                                        \
	H(d, a, b, c, x[4], 0x4bdecfa9, 11);                                                       \
	H(c, d, a, b, x[7], 0xf6bb4b60, 16);                                                       \
	H(b, c, d, a, x[10], 0xbebfbc70, 23);                                                      \
	H(a, b, c, d, x[13], 0x289b7ec6, 4);                                                       \
	H(d, a, b, c, x[0], 0xeaa127fa, 11);                                                       \
	H(c, d, a, b, x[3], 0xd4ef3085, 16);                                                       \
	H(b, c, d, a, x[6], 0x04881d05, 23);                                                       \
	H(a, b, c, d, x[9], 0xd9d4d039, 4);                                                        \
	H(d, a, b, c, x[12], 0xe6db99e5, 11);                                                      \
	H(c, d, a, b, x[15], 0x1fa27cf8, 16);                                                      \
	H(b, c, d, a, x[2], 0xc4ac5665, 23);                                                       \
	I(a, b, c, d, x[0], 0xf4292244, 6);                                                        \
	I(d, a, b, c, x[7], 0x432aff97, 10);                                                       \
	I(c, d, a, b, x[14], 0xab9423a7, 15);                                                      \
	I(b, c, d, a, x[5], 0xfc93a039, 21);                                                       \
	I(a, b, c, d, x[12], 0x655b59c3, 6);                                                       \
	I(d, a, b, c, x[3], 0x8f0ccc92, 10);                                                       \
	I(c, d, a, b, x[10], 0xffeff47d, 15);                                                      \
	I(b, c, d, a, x[1], 0x85845dd1, 21);                                                       \
	I(a, b, c, d, x[8], 0x6fa87e4f, 6);                                                        \
	I(d, a, b, c, x[15], 0xfe2ce6e0, 10);                                                      \
	I(c, d, a, b, x[6], 0xa3014314, 15);                                                       \
	I(b, c, d, a, x[13], 0x4e0811a1, 21);                                                      \
	I(a, b, c, d, x[4], 0xf7537e82, 6);                                                        \
	I(d, a, b, c, x[11], 0xbd3af235, 10);                                                      \
	I(c, d, a, b, x[2], 0x2ad7d2bb, 15);                                                       \
	I(b, c, d, a, x[9], 0xeb86d391, 21)

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Hashes n 64-byte blocks at p into st. */
static void
md5_blocks(uint32_t st[4], const uint8_t *p, size_t n)
{
	uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
	uint32_t x[16];
	int i;

	for (; n > 0; n--, p += 64) {
		uint32_t aa = a, bb = b, cc = c, dd = d;

		for (i = 0; i < 16; i++)
			x[i] = le32(p + 4 * i); /* one load on little-endian hosts */
		MD5_STEPS(STEP_F, STEP_G, STEP_H, STEP_I, x);

		a += aa;
		b += bb;
		c += cc;
		d += dd;
	}
	st[0] = a;
	st[1] = b;
	st[2] = c;
	st[3] = d;
}

static void
md5_digest(const uint32_t st[4], uint8_t out[MD5_DIGEST_LEN])
{
	int i;

	for (i = 0; i < 16; i++)
		out[i] = (uint8_t)(st[i / 4] >> (8 * (i % 4)));
}

static const uint32_t md5_iv[4] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476 };

void
md5_init(struct md5 *m)
{
	memcpy(m->st, md5_iv, sizeof(m->st));
	m->len = 0;
	m->nbuf = 0;
}

void
md5_update(struct md5 *m, const void *data, size_t n)
{
	const uint8_t *p = data;
	size_t k;

	m->len += n;
	if (m->nbuf > 0) {
		k = 64 - m->nbuf < n ? 64 - m->nbuf : n;
		memcpy(m->buf + m->nbuf, p, k);
		m->nbuf += k;
		p += k;
		n -= k;
		if (m->nbuf < 64)
			return;
		md5_blocks(m->st, m->buf, 1);
		m->nbuf = 0;
	}
	if (n >= 64) {
		md5_blocks(m->st, p, n / 64);
		p += n / 64 * 64;
		n %= 64;
	}
	if (n > 0) {
		memcpy(m->buf, p, n);
		m->nbuf = n;
	}
}

void
md5_final(struct md5 *m, uint8_t out[MD5_DIGEST_LEN])
{
	uint64_t bits = m->len * 8;
	int i;

	m->buf[m->nbuf++] = 0x80;
	if (m->nbuf > 56) {
		memset(m->buf + m->nbuf, 0, 64 - m->nbuf);
		md5_blocks(m->st, m->buf, 1);
		m->nbuf = 0;
	}
	memset(m->buf + m->nbuf, 0, 56 - m->nbuf);
	for (i = 0; i < 8; i++)
		m->buf[56 + i] = (uint8_t)(bits >> (8 * i));
	md5_blocks(m->st, m->buf, 1);
	md5_digest(m->st, out);
}

/*
 * Many messages at once (mbhash.h). When only a few are left, they are finished one at a
 * time, which is cheaper than a mostly empty pass. The same source is compiled for
 * AVX-512 (one instruction per operation), AVX2 (two) and the x86-64 baseline;
 * md5_many() picks by what the CPU has, once.
 */
#define MB_MIN 3 /* fewer lanes busy than this: finish them one at a time */

#ifdef MB_VECTOR
#define VSTEP(a, b, m, k, s, f)                                                                    \
	do {                                                                                       \
		a += (m) + (k) + (f);                                                              \
		a = ((a << s) | (a >> (32 - s))) + b;                                              \
	} while (0)
#define VSTEP_F(a, b, c, d, m, k, s) VSTEP(a, b, m, k, s, ((c ^ d) & b) ^ d)
#define VSTEP_G(a, b, c, d, m, k, s) VSTEP(a, b, m, k, s, (b & d) | (c & ~d))
#define VSTEP_H(a, b, c, d, m, k, s) VSTEP(a, b, m, k, s, b ^ c ^ d)
#define VSTEP_I(a, b, c, d, m, k, s) VSTEP(a, b, m, k, s, c ^ (b | ~d))

/* One block of each lane: x[w] holds word w of every lane's block. */
static inline __attribute__((always_inline)) void
mb_block(mb_vec st[4], const mb_vec x[16])
{
	mb_vec a = st[0], b = st[1], c = st[2], d = st[3];

	MD5_STEPS(VSTEP_F, VSTEP_G, VSTEP_H, VSTEP_I, x);
	st[0] += a;
	st[1] += b;
	st[2] += c;
	st[3] += d;
}

/* Lane l's block is the 64 bytes at bp[l]: transposed word by word. */
static inline __attribute__((always_inline)) void
mb_block_gather(mb_vec st[4], const uint8_t *const bp[MB_LANES])
{
	uint32_t xw[16][MB_LANES];
	mb_vec x[16];
	int w, l;

	for (w = 0; w < 16; w++)
		for (l = 0; l < MB_LANES; l++)
			xw[w][l] = le32(bp[l] + 4 * w);
	memcpy(x, xw, sizeof(x));
	mb_block(st, x);
}

__attribute__((target("avx512f"))) static void
mb_block_avx512(mb_vec *st, const uint8_t *const bp[MB_LANES])
{
	__m512i x[16];

	mb_transpose16(bp, x);
	mb_block(st, (const mb_vec *)x);
}

__attribute__((target("avx2"))) static void
mb_block_avx2(mb_vec *st, const uint8_t *const bp[MB_LANES])
{
	mb_block_gather(st, bp);
}

static void
mb_block_base(mb_vec *st, const uint8_t *const bp[MB_LANES])
{
	mb_block_gather(st, bp);
}

static const struct {
	const char *name;
	mb_block_fn *fn;
} mb_impl[] = {
	{ "avx512", mb_block_avx512 },
	{ "avx2", mb_block_avx2 },
	{ "sse2", mb_block_base },
};
#define MB_NIMPL (sizeof(mb_impl) / sizeof(mb_impl[0]))

/* __builtin_cpu_supports wants a literal, hence the switch. */
static int
mb_supported(size_t i)
{
	__builtin_cpu_init();
	switch (i) {
	case 0:
		return __builtin_cpu_supports("avx512f");
	case 1:
		return __builtin_cpu_supports("avx2");
	default:
		return 1;
	}
}
#else
#define MB_NIMPL 0
#endif

/* The implementation md5_many uses: an index into mb_impl, MB_NIMPL for one message at a
 * time, -1 until chosen. The same in every thread. */
static int mb_chosen = -1;

const char *
md5_many_isa(const char *want)
{
	size_t i;

#ifdef MB_VECTOR
	for (i = 0; i < MB_NIMPL; i++)
		if (mb_supported(i) && (want == NULL || strcmp(want, mb_impl[i].name) == 0)) {
			__atomic_store_n(&mb_chosen, (int)i, __ATOMIC_RELAXED);
			return mb_impl[i].name;
		}
#endif
	i = MB_NIMPL;
	if (want != NULL && strcmp(want, "scalar") != 0)
		return NULL;
	__atomic_store_n(&mb_chosen, (int)i, __ATOMIC_RELAXED);
	return "scalar";
}

void
md5_many(size_t n, const void *const data[], const size_t len[], uint8_t out[][MD5_DIGEST_LEN])
{
	static const struct mb_algo md5 = {
		.nst = 4,
		.iv = md5_iv,
		.be = 0,
		.min_active = MB_MIN,
		.blocks = md5_blocks,
		.digest = md5_digest,
		.outlen = MD5_DIGEST_LEN,
	};
	int isa = __atomic_load_n(&mb_chosen, __ATOMIC_RELAXED);

	if (isa < 0) {
		md5_many_isa(NULL);
		isa = __atomic_load_n(&mb_chosen, __ATOMIC_RELAXED);
	}
#ifdef MB_VECTOR
	mb_hash(&md5, isa < (int)MB_NIMPL ? mb_impl[isa].fn : NULL, n, data, len, &out[0][0]);
#else
	mb_hash(&md5, NULL, n, data, len, &out[0][0]);
#endif
}
