/*
 * hashpair.h — a batch of messages hashed by two threads: the caller and one helper.
 *
 * hash_sha256_many and md5_many hash 16 messages side by side on one core. On two cores,
 * the second half of a batch (a sync's chunks of a large file) is hashed by a helper thread
 * while the caller hashes the first: a backup of a large, mostly unchanged file is bound by
 * that hashing, and takes about half the time. A batch of fewer than HASHPAIR_SPLIT
 * messages is hashed by the caller alone: a half with few lanes busy costs as much as a
 * full one.
 */
#ifndef STEP_HASHPAIR_H
#define STEP_HASHPAIR_H

#include <stddef.h>
#include <stdint.h>

#include "hash.h"

#define HASHPAIR_SPLIT 24 /* messages from which a batch is split between the threads */

struct hashpair;

/* Starts the helper thread. Returns 0 and *out (end with hashpair_free), STEP_ENOMEM or
 * STEP_ESYS. */
int hashpair_new(struct hashpair **out);

/* Stops the helper; hashpair_free(NULL) does nothing. */
void hashpair_free(struct hashpair *p);

/*
 * The SHA-256s (into ids, unless NULL) and the MD5s (into md5s, unless NULL) of the n
 * messages (data[i], len[i]), as hash_sha256_many and md5_many would give them. p may be
 * NULL: the caller hashes everything. Not for use by two threads at once on one p.
 */
void hashpair_run(struct hashpair *p, size_t n, const void *const data[], const size_t len[],
    uint8_t (*ids)[HASH_SHA256_LEN], uint8_t (*md5s)[HASH_MD5_LEN]);

#endif
