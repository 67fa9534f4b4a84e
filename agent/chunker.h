/*
 * chunker.h — content-defined chunking (FastCDC's Gear rolling hash, with a minimum
 * size) for files of at least CHUNK_MIN bytes.
 *
 * Sizes, and why: every chunk is a STEP object, and an object costs a SAVE, the upload and
 * a commit: chunks must be large enough that this per-object cost stays far below the cost
 * of the bytes, and small enough that a change in the middle of a file costs little. A
 * change costs the chunks it touches plus the chunks cut differently after it until the
 * cuts fall in step with the old ones again. A cut is the first cut point (one byte in 256
 * Ki, by content) at least CHUNK_MIN bytes after the last cut, so chunks average CHUNK_MIN
 * + 256 KiB = 448 KiB. In 800 simulated 1 MiB overwrites of random data this cost 1.63 MiB
 * on average and more than 3 MiB twice. FastCDC's normalized chunking (a harder test
 * before 512 KiB, an easier one after, with a 128 KiB minimum; what earlier builds cut
 * with) bunches sizes around the average but falls back in step slowly: the same trials
 * cost 2.30 MiB on average and more than 3 MiB in one in six. CHUNK_MIN also bounds the
 * object count from below (and hashing starts only just before it, so that part of every
 * chunk is skipped by the rolling hash); CHUNK_MAX 4 MiB bounds the memory a chunk takes
 * while it is sent (a chunk reaches it once in about 4 million).
 *
 * Cuts depend only on the bytes (a fixed Gear table, no seed), so the same content is cut
 * the same way on every machine and in every run; an insertion or deletion moves at most
 * the cuts around it (the rolling hash looks at the last 64 bytes only).
 */
#ifndef STEP_CHUNKER_H
#define STEP_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

#define CHUNK_MIN (192u << 10)
#define CHUNK_AVG (CHUNK_MIN + (256u << 10)) /* the mean chunk: CHUNK_MIN + 1 / P(cut point) */
#define CHUNK_MAX (4u << 20)

/*
 * The length of the chunk that starts at buf[0]: the first cut point in buf[0..len).
 * len must be at least CHUNK_MAX unless buf holds the rest of the file (then a chunk that
 * finds no cut point ends at len). Returns a value in 1..min(len, CHUNK_MAX); len when
 * len <= CHUNK_MIN; 0 only when len is 0. Pure: no state between calls.
 */
size_t chunk_next(const uint8_t *buf, size_t len);

#endif
