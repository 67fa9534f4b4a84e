/*
 * hasher.h — MD5 of data that is being written, computed on a second thread so a
 * download's hashing overlaps its network and disk I/O. The writer appends in order
 * and says how far it got; the hasher reads what is written (from the file through
 * pread, or from memory) and hashes it. Used for downloads only: uploads hash the
 * bytes they read, in the same pass.
 */
#ifndef STEP_HASHER_H
#define STEP_HASHER_H

#include <stdint.h>

#include "hash.h"

struct hasher;

/*
 * Starts hashing total bytes that will appear in order in fd (pread) or, when fd < 0,
 * at mem. Returns 0 and *outp (end with hasher_finish() or hasher_free()),
 * STEP_ENOMEM, or STEP_ESYS when no thread can be started.
 */
int hasher_start(int fd, const uint8_t *mem, uint64_t total, struct hasher **outp);

/* The first n bytes are written (n only grows). */
void hasher_advance(struct hasher *h, uint64_t n);

/*
 * Waits until all total bytes are hashed, writes the lower-case hex MD5 and frees h.
 * Returns 0, or STEP_ESYS when reading back failed. Call only after
 * hasher_advance(h, total).
 */
int hasher_finish(struct hasher *h, char out[HASH_MD5_HEX]);

/* Stops the thread without a result and frees h; hasher_free(NULL) does nothing. */
void hasher_free(struct hasher *h);

#endif
