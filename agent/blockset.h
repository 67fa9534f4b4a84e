/*
 * blockset.h — the set of blocks of one transfer that the server has acknowledged: a
 * bitmap with a count, loadable from the state database's blob and from stepd's
 * "received" ranges. Pure: no I/O.
 */
#ifndef STEP_BLOCKSET_H
#define STEP_BLOCKSET_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct blockset {
	uint8_t *bits;  /* owned; bit i set when block i is acknowledged */
	uint32_t total; /* number of blocks */
	uint32_t count; /* bits set */
};

/* Bytes of bitmap for total blocks. */
size_t blockset_nbytes(uint32_t total);
/* Empty set of total blocks (embedded by the caller). 0 or STEP_ENOMEM. */
int blockset_init(struct blockset *b, uint32_t total);
void blockset_release(struct blockset *b);
int blockset_test(const struct blockset *b, uint32_t i);
/* Sets bit i (i < total); returns 1 when it was not set before, else 0. */
int blockset_set(struct blockset *b, uint32_t i);
void blockset_clear(struct blockset *b);
/* Replaces the bits with a stored bitmap of exactly blockset_nbytes(total) bytes
 * (padding bits ignored). 0 or STEP_EINVAL. */
int blockset_load(struct blockset *b, const void *bits, size_t len);
/*
 * Adds inclusive ranges [[first,last],...] (stepd's "received"). Every range must be
 * 0 <= first <= last < total. 0, or STEP_EINVAL (b unchanged) for anything else.
 */
int blockset_add_ranges(struct blockset *b, const json_t *ranges);
/* The first block >= from that is not set, or total when none. */
uint32_t blockset_next_missing(const struct blockset *b, uint32_t from);

#endif
