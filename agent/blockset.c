/*
 * blockset.c — acknowledged-block bitmap with a count. Pure, no I/O.
 */
#include <stdlib.h>
#include <string.h>

#include "blockset.h"
#include "err.h"

size_t
blockset_nbytes(uint32_t total)
{
	return ((size_t)total + 7) / 8;
}

int
blockset_init(struct blockset *b, uint32_t total)
{
	b->total = total;
	b->count = 0;
	b->bits = calloc(blockset_nbytes(total) + 1, 1);
	return b->bits != NULL ? STEP_OK : STEP_ENOMEM;
}

void
blockset_release(struct blockset *b)
{
	free(b->bits);
	b->bits = NULL;
	b->total = b->count = 0;
}

int
blockset_test(const struct blockset *b, uint32_t i)
{
	return i < b->total && (b->bits[i >> 3] >> (i & 7)) & 1;
}

int
blockset_set(struct blockset *b, uint32_t i)
{
	if (i >= b->total || blockset_test(b, i))
		return 0;
	b->bits[i >> 3] |= (uint8_t)(1u << (i & 7));
	b->count++;
	return 1;
}

void
blockset_clear(struct blockset *b)
{
	memset(b->bits, 0, blockset_nbytes(b->total));
	b->count = 0;
}

int
blockset_load(struct blockset *b, const void *bits, size_t len)
{
	uint32_t i;

	if (len != blockset_nbytes(b->total))
		return STEP_EINVAL;
	blockset_clear(b);
	for (i = 0; i < b->total; i++)
		if ((((const uint8_t *)bits)[i >> 3] >> (i & 7)) & 1)
			blockset_set(b, i);
	return STEP_OK;
}

int
blockset_add_ranges(struct blockset *b, const json_t *ranges)
{
	json_t *r;
	json_int_t first, last;
	size_t i;
	uint32_t k;

	if (!json_is_array(ranges))
		return STEP_EINVAL;
	json_array_foreach(ranges, i, r)
	{
		if (!json_is_array(r) || json_array_size(r) != 2 ||
		    !json_is_integer(json_array_get(r, 0)) ||
		    !json_is_integer(json_array_get(r, 1)))
			return STEP_EINVAL;
		first = json_integer_value(json_array_get(r, 0));
		last = json_integer_value(json_array_get(r, 1));
		if (first < 0 || first > last || last >= (json_int_t)b->total)
			return STEP_EINVAL;
	}
	json_array_foreach(ranges, i, r)
	{
		first = json_integer_value(json_array_get(r, 0));
		last = json_integer_value(json_array_get(r, 1));
		for (k = (uint32_t)first; k <= (uint32_t)last; k++)
			blockset_set(b, k);
	}
	return STEP_OK;
}

uint32_t
blockset_next_missing(const struct blockset *b, uint32_t from)
{
	uint32_t i;

	for (i = from; i < b->total; i++) {
		if (b->bits[i >> 3] == 0xff && (i & 7) == 0 && i + 8 <= b->total) {
			i += 7;
			continue;
		}
		if (!blockset_test(b, i))
			return i;
	}
	return b->total;
}
