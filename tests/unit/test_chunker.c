/* test_chunker.c — content-defined cuts: fixed for given bytes, within CHUNK_MIN..CHUNK_MAX,
 * about CHUNK_AVG on average, and stable under insertions and deletions. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "chunker.h"
#include "hash.h"

#define DATA_LEN      (48u << 20)
#define OVERWRITE_LEN (16u << 20)

struct cuts {
	size_t n;
	size_t len[256];
	uint8_t id[256][HASH_SHA256_LEN];
};

/* Deterministic pseudo-random bytes (xorshift64*), the same on every machine. */
static uint8_t *
random_bytes(size_t len, uint64_t seed)
{
	uint8_t *p = malloc(len + 16);
	uint64_t x = seed | 1;

	assert_non_null(p);
	for (size_t i = 0; i < len; i += 8) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		uint64_t v = x * 0x2545f4914f6cdd1dull;
		memcpy(p + i, &v, 8);
	}
	return p;
}

/* Cuts a whole buffer the way sync does: chunk_next over the rest of the file. */
static void
cut_all(const uint8_t *p, size_t len, struct cuts *c)
{
	size_t off = 0;

	c->n = 0;
	while (off < len) {
		size_t n = chunk_next(p + off, len - off);

		assert_true(n >= 1 && n <= len - off);
		assert_true(c->n < 256);
		c->len[c->n] = n;
		hash_sha256(p + off, n, c->id[c->n]);
		c->n++;
		off += n;
	}
}

/* Whether a has a chunk of this id. */
static int
has_chunk(const struct cuts *a, const uint8_t *id)
{
	for (size_t j = 0; j < a->n; j++)
		if (memcmp(a->id[j], id, HASH_SHA256_LEN) == 0)
			return 1;
	return 0;
}

/* Chunks of b that a does not have. */
static size_t
new_chunks(const struct cuts *a, const struct cuts *b)
{
	size_t fresh = 0;

	for (size_t i = 0; i < b->n; i++)
		fresh += !has_chunk(a, b->id[i]);
	return fresh;
}

static void
test_small(void **state)
{
	uint8_t *p = random_bytes(CHUNK_MIN + 1024, 7);

	(void)state;
	assert_int_equal(chunk_next(p, 0), 0);
	assert_int_equal(chunk_next(p, 1), 1);
	assert_int_equal(chunk_next(p, 4096), 4096);
	assert_int_equal(chunk_next(p, CHUNK_MIN), CHUNK_MIN);
	assert_true(chunk_next(p, CHUNK_MIN + 1) >= CHUNK_MIN);
	free(p);
}

/* The same bytes always give the same cuts: these numbers pin down the Gear table, the
 * masks and the window, so a change to any of them (which would re-chunk every backed-up
 * file) fails here. */
static void
test_fixed_cuts(void **state)
{
	static const size_t want[] = { 380971, 201837, 487183, 218069, 215808, 201226, 582462,
		447751 };
	uint8_t *p = random_bytes(DATA_LEN, 1);
	struct cuts *c = calloc(1, sizeof(*c)), *d = calloc(1, sizeof(*d));

	(void)state;
	cut_all(p, DATA_LEN, c);
	cut_all(p, DATA_LEN, d);
	assert_int_equal(c->n, d->n);
	assert_memory_equal(c->len, d->len, c->n * sizeof(c->len[0]));
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_int_equal(c->len[i], want[i]);
	free(c);
	free(d);
	free(p);
}

static void
test_sizes(void **state)
{
	uint8_t *p = random_bytes(DATA_LEN, 2);
	struct cuts *c = calloc(1, sizeof(*c));
	double mean;

	(void)state;
	cut_all(p, DATA_LEN, c);
	for (size_t i = 0; i + 1 < c->n; i++)
		assert_true(c->len[i] >= CHUNK_MIN && c->len[i] <= CHUNK_MAX);
	mean = (double)DATA_LEN / (double)c->n;
	print_message("# %zu chunks, mean %.0f bytes\n", c->n, mean);
	assert_true(mean > 0.75 * CHUNK_AVG && mean < 1.5 * CHUNK_AVG);

	/* Bytes without a cut point (all zeros: the hash settles on one value) are cut at
	 * CHUNK_MAX; a last piece shorter than that ends at the end of the data. */
	memset(p, 0, DATA_LEN);
	cut_all(p, 3 * CHUNK_MAX + 5, c);
	assert_int_equal(c->n, 4);
	assert_int_equal(c->len[0], CHUNK_MAX);
	assert_int_equal(c->len[2], CHUNK_MAX);
	assert_int_equal(c->len[3], 5);
	/* A buffer longer than CHUNK_MAX never gives more than CHUNK_MAX. */
	assert_int_equal(chunk_next(p, DATA_LEN), CHUNK_MAX);
	free(c);
	free(p);
}

/* One byte inserted or deleted, or a run of bytes deleted, at the start or in the middle:
 * at most two chunks differ from the original's. */
static void
test_shift(void **state)
{
	static const size_t where[] = { 0, 1, DATA_LEN / 2, DATA_LEN / 3 + 12345 };
	static const size_t howmany[] = { 1, 100, 70000 };
	uint8_t *p = random_bytes(DATA_LEN, 3);
	uint8_t *q = malloc(DATA_LEN + 1);
	struct cuts *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));

	(void)state;
	cut_all(p, DATA_LEN, a);
	for (size_t w = 0; w < sizeof(where) / sizeof(where[0]); w++) {
		size_t at = where[w];

		memcpy(q, p, at);
		q[at] = 0x5a;
		memcpy(q + at + 1, p + at, DATA_LEN - at);
		cut_all(q, DATA_LEN + 1, b);
		assert_true(new_chunks(a, b) <= 2);
		assert_true(b->n <= a->n + 1 && b->n + 1 >= a->n);

		for (size_t h = 0; h < sizeof(howmany) / sizeof(howmany[0]); h++) {
			size_t del = howmany[h];

			memcpy(q, p, at);
			memcpy(q + at, p + at + del, DATA_LEN - at - del);
			cut_all(q, DATA_LEN - del, b);
			assert_true(new_chunks(a, b) <= 2);
		}
	}
	free(a);
	free(b);
	free(q);
	free(p);
}

/* Bytes of b's chunks that a does not have. */
static size_t
new_bytes(const struct cuts *a, const struct cuts *b)
{
	size_t fresh = 0;

	for (size_t i = 0; i < b->n; i++)
		fresh += has_chunk(a, b->id[i]) ? 0 : b->len[i];
	return fresh;
}

/* 1 MiB overwritten in the middle of a large file costs at most 3 MiB of new chunks: the
 * cuts after the change fall back in step with the old ones within a chunk or two. 32
 * files of different bytes; FastCDC's normalized chunking, cut here before, cost more than
 * 3 MiB in one case in six (3.49 MiB for the first of these files). */
static void
test_overwrite(void **state)
{
	struct cuts *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));

	(void)state;
	for (uint64_t seed = 1; seed <= 32; seed++) {
		uint8_t *p = random_bytes(OVERWRITE_LEN, 2 * seed + 1);
		uint8_t *x = random_bytes(1u << 20, seed * 977);
		size_t at = OVERWRITE_LEN / 2 + (size_t)(seed * 40503u) % (1u << 20), fresh;

		cut_all(p, OVERWRITE_LEN, a);
		memcpy(p + at, x, 1u << 20);
		cut_all(p, OVERWRITE_LEN, b);
		fresh = new_bytes(a, b);
		print_message("# seed %u: %zu new bytes\n", (unsigned)seed, fresh);
		assert_true(fresh >= 1u << 20 && fresh <= 3u << 20);
		free(x);
		free(p);
	}
	free(a);
	free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_small),
		cmocka_unit_test(test_fixed_cuts),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_shift),
		cmocka_unit_test(test_overwrite),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("chunker", tests, NULL, NULL);
}
