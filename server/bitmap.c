/* bitmap.c — received-block set with range listing; pure memory, never does I/O. */
#include <stdlib.h>

#include "bitmap.h"
#include "err.h"

int
bitmap_init(struct bitmap *b, uint64_t nbits)
{
	uint64_t nwords = (nbits + 63) / 64;

	b->words = NULL;
	b->nbits = nbits;
	b->count = 0;
	if (nwords > SIZE_MAX / sizeof(uint64_t))
		return STEP_ENOMEM;
	if ((b->words = calloc(nwords ? (size_t)nwords : 1, sizeof(uint64_t))) == NULL)
		return STEP_ENOMEM;
	return STEP_OK;
}

void
bitmap_release(struct bitmap *b)
{
	free(b->words);
	b->words = NULL;
	b->nbits = b->count = 0;
}

int
bitmap_test(const struct bitmap *b, uint64_t i)
{
	if (i >= b->nbits)
		return 0;
	return (int)((b->words[i / 64] >> (i % 64)) & 1);
}

int
bitmap_set(struct bitmap *b, uint64_t i)
{
	uint64_t m;

	if (i >= b->nbits)
		return 0;
	m = (uint64_t)1 << (i % 64);
	if (b->words[i / 64] & m)
		return 0;
	b->words[i / 64] |= m;
	b->count++;
	return 1;
}

int
bitmap_full(const struct bitmap *b)
{
	return b->count == b->nbits;
}

size_t
bitmap_ranges(const struct bitmap *b, uint64_t (*out)[2], size_t max)
{
	size_t n = 0;
	uint64_t i = 0;

	while (i < b->nbits) {
		uint64_t first;

		/* Skip whole empty words quickly. */
		if (i % 64 == 0 && b->words[i / 64] == 0) {
			i += 64;
			continue;
		}
		if (!bitmap_test(b, i)) {
			i++;
			continue;
		}
		first = i;
		while (i < b->nbits) {
			if (i % 64 == 0 && b->words[i / 64] == UINT64_MAX && i + 64 <= b->nbits) {
				i += 64;
				continue;
			}
			if (!bitmap_test(b, i))
				break;
			i++;
		}
		if (n < max) {
			out[n][0] = first;
			out[n][1] = i - 1;
		}
		n++;
	}
	return n;
}
