/* test_md5.c — md5.c against RFC 1321's test suite and against OpenSSL's MD5 over many
 * lengths, split points and the hash.c interface (dup, reset, one-shot hex), and
 * md5_many's many-lane code in each of its implementations, and hash_sha256_many's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "hash.h"
#include "hashpair.h"
#include "md5.h"

static void
hex_of(const uint8_t *d, char out[HASH_MD5_HEX])
{
	hash_to_hex(d, HASH_MD5_LEN, out);
}

static void
openssl_md5_hex(const void *p, size_t n, char out[HASH_MD5_HEX])
{
	uint8_t d[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	assert_int_equal(EVP_Digest(p, n, d, &len, EVP_md5(), NULL), 1);
	assert_int_equal(len, HASH_MD5_LEN);
	hex_of(d, out);
}

static void
test_rfc1321(void **state)
{
	static const char *const v[][2] = {
		{ "", "d41d8cd98f00b204e9800998ecf8427e" },
		{ "a", "0cc175b9c0f1b6a831c399e269772661" },
		{ "abc", "900150983cd24fb0d6963f7d28e17f72" },
		{ "message digest", "f96b697d7cb7938d525a2f31aaf161d0" },
		{ "abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b" },
		{ "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
		    "d174ab98d277d9f5a5611c2c9f419d9f" },
		{ "1234567890123456789012345678901234567890123456789012345678901234567890123456"
		  "7890",
		    "57edf4a22be3c955ac49da2e2107b67a" },
	};
	char got[HASH_MD5_HEX];
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		hash_md5_hex(v[i][0], strlen(v[i][0]), got);
		assert_string_equal(got, v[i][1]);
	}
}

static uint8_t *
noise(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);
	uint32_t x = 2463534242u;
	size_t i;

	assert_non_null(p);
	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)x;
	}
	return p;
}

/* Every length up to a few blocks (all padding cases), each fed in two uneven pieces. */
static void
test_lengths_and_splits(void **state)
{
	uint8_t *p = noise(400), d[HASH_MD5_LEN];
	char want[HASH_MD5_HEX], got[HASH_MD5_HEX];
	size_t n, cut;

	for (n = 0; n <= 400; n++) {
		openssl_md5_hex(p, n, want);
		hash_md5_hex(p, n, got);
		assert_string_equal(got, want);
		for (cut = 0; cut <= n; cut += 1 + n / 7) {
			struct md5 m;

			md5_init(&m);
			md5_update(&m, p, cut);
			md5_update(&m, p + cut, n - cut);
			md5_final(&m, d);
			hex_of(d, got);
			assert_string_equal(got, want);
		}
	}
	free(p);
}

/* A large buffer in odd-sized pieces through hash.c, a dup midway, and reset + reuse. */
static void
test_stream_dup_reset(void **state)
{
	size_t n = 3 * 1048576 + 77, off, k, step = 1;
	uint8_t *p = noise(n), d[HASH_MD5_LEN];
	char want[HASH_MD5_HEX], half[HASH_MD5_HEX], got[HASH_MD5_HEX];
	struct hash_ctx *c = hash_md5_new(), *dup = NULL;

	assert_non_null(c);
	openssl_md5_hex(p, n, want);
	openssl_md5_hex(p, n / 2, half);
	for (off = 0; off < n; off += k, step = step * 3 % 65537 + 1) {
		k = n - off < step ? n - off : step;
		if (off < n / 2 && off + k > n / 2)
			k = n / 2 - off;
		assert_int_equal(hash_update(c, p + off, k), 0);
		if (off + k == n / 2) {
			assert_non_null(dup = hash_dup(c));
			assert_int_equal(hash_final(dup, d), HASH_MD5_LEN);
			hex_of(d, got);
			assert_string_equal(got, half);
		}
	}
	assert_non_null(dup);
	assert_int_equal(hash_final(c, d), HASH_MD5_LEN);
	hex_of(d, got);
	assert_string_equal(got, want);
	assert_int_equal(hash_reset(c), 0);
	assert_int_equal(hash_update(c, p, n / 2), 0);
	assert_int_equal(hash_final(c, d), HASH_MD5_LEN);
	hex_of(d, got);
	assert_string_equal(got, half);
	hash_free(dup);
	hash_free(c);
	free(p);
}

/* n messages in p (total bytes), at odd offsets as objects lie in a PUTMANY request:
 * mostly 0..130 bytes (1 to 3 blocks), now and then up to 20 KiB. */
static void
make_batch(const uint8_t *p, size_t total, size_t n, const void *data[], size_t len[], uint32_t *x)
{
	size_t i, off = 1;

	for (i = 0; i < n; i++) {
		*x = *x * 1103515245u + 12345u;
		len[i] = (*x >> 8) % 8 == 0 ? (*x >> 12) % 20480 : (*x >> 12) % 131;
		data[i] = p + off;
		off += len[i] + (*x & 3);
		assert_true(off < total);
	}
}

/*
 * md5_many with every implementation this CPU has, over batches of 0..40 messages (fewer
 * than, as many as and more than the 16 lanes) whose lengths cover every padding case,
 * mixed with long ones so that lanes finish at different times; every digest must match
 * OpenSSL's. Messages start at odd offsets, as objects do in a PUTMANY request.
 */
static void
test_many(void **state)
{
	static const char *isa[] = { "avx512", "avx2", "sse2", "scalar" };
	size_t nmax = 40, total = 300000, n, i, k, tried = 0;
	uint8_t *p = noise(total), (*d)[MD5_DIGEST_LEN] = calloc(nmax, MD5_DIGEST_LEN);
	const void *data[40];
	size_t len[40];
	char want[HASH_MD5_HEX], got[HASH_MD5_HEX];
	uint32_t x = 12345;

	assert_non_null(d);
	for (k = 0; k < sizeof(isa) / sizeof(isa[0]); k++) {
		if (md5_many_isa(isa[k]) == NULL)
			continue; /* not on this CPU */
		tried++;
		for (n = 0; n <= nmax; n++) {
			make_batch(p, total, n, data, len, &x);
			memset(d, 0, nmax * MD5_DIGEST_LEN);
			md5_many(n, data, len, d);
			for (i = 0; i < n; i++) {
				openssl_md5_hex(data[i], len[i], want);
				hex_of(d[i], got);
				assert_string_equal(got, want);
			}
		}
	}
	assert_true(tried >= 2); /* scalar and sse2 at least, on any x86-64 */
	assert_null(md5_many_isa("no-such-isa"));
	assert_non_null(md5_many_isa(NULL));
	free(d);
	free(p);
}

/* hash_sha256_many with its lanes and without, over the same kind of batches as
 * test_many, against OpenSSL's one-message SHA-256. */
static void
test_sha256_many(void **state)
{
	size_t nmax = 40, total = 300000, n, i, k;
	uint8_t *p = noise(total), (*d)[HASH_SHA256_LEN] = calloc(nmax, HASH_SHA256_LEN);
	uint8_t want[HASH_SHA256_LEN];
	const void *data[40];
	size_t len[40];
	uint32_t x = 54321;
	unsigned int wl;

	assert_non_null(d);
	for (k = 0; k < 2; k++) {
		hash_sha256_many_lanes(k == 0); /* lanes first, where the CPU has them */
		for (n = 0; n <= nmax; n++) {
			make_batch(p, total, n, data, len, &x);
			memset(d, 0, nmax * HASH_SHA256_LEN);
			hash_sha256_many(n, data, len, d);
			for (i = 0; i < n; i++) {
				assert_int_equal(
				    EVP_Digest(data[i], len[i], want, &wl, EVP_sha256(), NULL), 1);
				assert_memory_equal(d[i], want, HASH_SHA256_LEN);
			}
		}
	}
	hash_sha256_many_lanes(1);
	free(d);
	free(p);
}

/* hashpair_run, split between two threads from HASHPAIR_SPLIT messages on, gives what
 * the one-thread calls give, in order, for SHA-256 and MD5 alone or together. */
static void
test_hashpair(void **state)
{
	size_t nmax = 40, total = 300000, n, i, k;
	uint8_t *p = noise(total);
	uint8_t(*ids)[HASH_SHA256_LEN] = calloc(nmax, HASH_SHA256_LEN);
	uint8_t(*md5s)[HASH_MD5_LEN] = calloc(nmax, HASH_MD5_LEN);
	uint8_t(*wids)[HASH_SHA256_LEN] = calloc(nmax, HASH_SHA256_LEN);
	uint8_t(*wmd5s)[HASH_MD5_LEN] = calloc(nmax, HASH_MD5_LEN);
	struct hashpair *hp;
	const void *data[40];
	size_t len[40];
	uint32_t x = 999;

	(void)state;
	assert_int_equal(hashpair_new(&hp), 0);
	for (n = 0; n <= nmax; n++) {
		make_batch(p, total, n, data, len, &x);
		hash_sha256_many(n, data, len, wids);
		md5_many(n, data, len, wmd5s);
		for (k = 0; k < 3; k++) {
			memset(ids, 0, nmax * HASH_SHA256_LEN);
			memset(md5s, 0, nmax * HASH_MD5_LEN);
			hashpair_run(hp, n, data, len, k != 1 ? ids : NULL, k != 0 ? md5s : NULL);
			for (i = 0; i < n; i++) {
				if (k != 1)
					assert_memory_equal(ids[i], wids[i], HASH_SHA256_LEN);
				if (k != 0)
					assert_memory_equal(md5s[i], wmd5s[i], HASH_MD5_LEN);
			}
		}
	}
	hashpair_free(hp);
	hashpair_free(NULL);
	free(ids);
	free(md5s);
	free(wids);
	free(wmd5s);
	free(p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc1321),
		cmocka_unit_test(test_lengths_and_splits),
		cmocka_unit_test(test_stream_dup_reset),
		cmocka_unit_test(test_many),
		cmocka_unit_test(test_sha256_many),
		cmocka_unit_test(test_hashpair),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
