/*
 * bitmap.h — the received-block set of an upload: one bit per block, a running count,
 * and listing as inclusive index ranges (the resume extension's "received" field).
 * Pure memory; no I/O.
 */
#ifndef STEPD_BITMAP_H
#define STEPD_BITMAP_H

#include <stddef.h>
#include <stdint.h>

struct bitmap {
	uint64_t *words; /* owned; nbits rounded up to 64 */
	uint64_t nbits;  /* number of blocks */
	uint64_t count;  /* bits set */
};

/* Allocates an empty set of nbits (0 is allowed). Returns 0 or STEP_ENOMEM. */
int bitmap_init(struct bitmap *b, uint64_t nbits);
/* Frees the words; b may be reused after bitmap_init. */
void bitmap_release(struct bitmap *b);
/* 1 when bit i is set; 0 otherwise (also for i out of range). */
int bitmap_test(const struct bitmap *b, uint64_t i);
/* Sets bit i. Returns 1 when it was newly set, 0 when already set or out of range. */
int bitmap_set(struct bitmap *b, uint64_t i);
/* 1 when every bit is set. */
int bitmap_full(const struct bitmap *b);
/*
 * Lists the set bits as inclusive ranges [first, last] in increasing order. Writes at most
 * max ranges into out (out may be NULL when max is 0) and returns the total number of
 * ranges, so a caller can tell that the list was cut.
 */
size_t bitmap_ranges(const struct bitmap *b, uint64_t (*out)[2], size_t max);

#endif
