/*
 * chunker.h — content-defined chunking (FastCDC: a Gear rolling hash with normalized
 * chunking) for files of at least CHUNK_MIN bytes.
 *
 * Sizes, and why: every chunk is a STEP object, and an object costs a SAVE, the upload
 * and a commit (a file and an fsync on stepd): chunks must be large enough that this
 * per-object cost stays far below the cost of the bytes, and small enough that a change
 * in the middle of a file costs little. A change costs the chunks it touches plus, on
 * average, about one more on each side (the cuts right after it move too): with 1 MiB
 * chunks (restic's and borg's size class) 1 MiB overwritten in a large file cost 3 to 4
 * chunks, 3.2 to 4.3 MiB in our runs; with CHUNK_AVG 512 KiB it costs about 2 MiB, at
 * twice the objects per GiB, which stepd's group commit absorbs. CHUNK_MIN 128 KiB bounds
 * the count from below (and hashing starts only past it, so a part of every chunk is
 * skipped by the rolling hash); CHUNK_MAX 4 MiB bounds the memory a chunk takes while it
 * is sent.
 *
 * Cuts depend only on the bytes (a fixed Gear table, no seed), so the same content is cut
 * the same way on every machine and in every run; an insertion or deletion moves at most
 * the cuts around it (the rolling hash looks at the last 64 bytes only).
 */
#ifndef STEP_CHUNKER_H
#define STEP_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

#define CHUNK_MIN (128u << 10)
#define CHUNK_AVG (512u << 10)
#define CHUNK_MAX (4u << 20)

/*
 * The length of the chunk that starts at buf[0]: the first cut point in buf[0..len).
 * len must be at least CHUNK_MAX unless buf holds the rest of the file (then a chunk that
 * finds no cut point ends at len). Returns a value in 1..min(len, CHUNK_MAX); len when
 * len <= CHUNK_MIN; 0 only when len is 0. Pure: no state between calls.
 */
size_t chunk_next(const uint8_t *buf, size_t len);

#endif
