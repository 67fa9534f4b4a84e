/*
 * manifest.h — the snapshot manifest: what a snapshot holds, as JSON lines.
 *
 * A manifest is a text file of JSON objects, one per line (ASCII only):
 *   line 1   header   {"stepsync_manifest":1,"name":..,"seq":..,"time":..,"files":..,...}
 *   then     entries  {"path":"a/b","type":"file","mode":420,"mtime_ns":..,"size":..,
 *                      "key":"o.<sha256>","md5":".."}  (dirs and symlinks too)
 *   last     trailer  {"end":N}   N = number of entries, so truncation is detected
 * Paths that are not valid UTF-8 are stored base64-encoded as "path_b64" (and
 * "target_b64" for symlink targets). The format is streamed both ways so a snapshot of
 * a million files never sits in memory. Decoding treats the manifest as hostile: an
 * absolute path, a ".." or "." component, an empty component, a bad key or MD5 is an
 * error. This module does no network I/O.
 *
 * Also here: the server key names that the manifest refers to (objects and snapshots).
 */
#ifndef STEP_MANIFEST_H
#define STEP_MANIFEST_H

#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "hash.h"

#define MANIFEST_VERSION   1
#define MANIFEST_PATH_MAX  4095        /* bytes of a relative path or symlink target */
#define MANIFEST_KEY_MAX   127         /* bytes of a server key */
#define MANIFEST_NAME_MAX  80          /* bytes of a snapshot NAME before encoding */
#define MANIFEST_MAX_LINE  (64u << 10) /* longest accepted manifest line */
#define MANIFEST_EMPTY_MD5 "d41d8cd98f00b204e9800998ecf8427e"

enum manifest_type { MANIFEST_FILE = 1, MANIFEST_DIR = 2, MANIFEST_SYMLINK = 3 };

struct manifest_entry {
	int type;                           /* enum manifest_type */
	char path[MANIFEST_PATH_MAX + 1];   /* relative, '/'-separated, no NUL */
	char target[MANIFEST_PATH_MAX + 1]; /* symlink target; "" otherwise */
	unsigned mode;                      /* permission bits, <= 07777 */
	int64_t mtime_ns;                   /* nanoseconds since the epoch */
	uint64_t size;                      /* bytes (files) */
	char key[MANIFEST_KEY_MAX + 1];     /* object key; "" for an empty file */
	char md5[HASH_MD5_HEX];             /* lower-case hex (files) */
};

struct manifest_header {
	char name[MANIFEST_NAME_MAX + 1]; /* the snapshot NAME */
	uint64_t seq;                     /* sequence number, >= 1 */
	int64_t time;                     /* wall-clock seconds when the snapshot was taken */
	uint64_t files, dirs, symlinks;   /* entry counts by type */
	uint64_t bytes;                   /* sum of file sizes */
};

/* Appends one entry line (with '\n') to out. Returns 0, STEP_EINVAL (bad entry), STEP_ENOMEM,
 * STEP_ETOOBIG. */
int manifest_entry_encode(const struct manifest_entry *e, struct buf *out);
/* Appends the header line to out. Returns 0, STEP_EINVAL, STEP_ENOMEM, STEP_ETOOBIG. */
int manifest_header_encode(const struct manifest_header *h, struct buf *out);

/*
 * Decodes one entry line (len bytes, no trailing newline needed) into *e, validating it
 * as described above. Returns 0, or STEP_EPROTO (not an entry object) / STEP_EINVAL (a
 * field is missing, of the wrong type or unsafe). *e is scratch on error.
 */
int manifest_entry_decode(const char *line, size_t len, struct manifest_entry *e);
/* Decodes the header line. Returns 0, STEP_EPROTO or STEP_EINVAL (e.g. unknown version). */
int manifest_header_decode(const char *line, size_t len, struct manifest_header *h);

/* Returns 1 when path is a safe relative manifest path (see above), else 0. */
int manifest_path_safe(const char *path);

/*
 * Streaming writer. manifest_writer_new() makes one that collects entries in an
 * anonymous temporary file; manifest_writer_add() appends an entry and counts it;
 * manifest_writer_finish() writes header (with the counts filled in from the entries),
 * entries and trailer to out. Returns 0 or STEP_E*; the writer is freed with
 * manifest_writer_free() in every case.
 */
struct manifest_writer;
int manifest_writer_new(struct manifest_writer **outp);
int manifest_writer_add(struct manifest_writer *w, const struct manifest_entry *e);
/* MD5 (lower-case hex) of the entry lines, header excluded: equal digests mean the same
 * tree. No entry may be added after it was taken. Borrowed from w. */
const char *manifest_writer_digest(struct manifest_writer *w);
/* Counts so far (files, bytes); valid before finish. */
void manifest_writer_counts(const struct manifest_writer *w, struct manifest_header *h);
int manifest_writer_finish(struct manifest_writer *w, struct manifest_header *h, FILE *out);
void manifest_writer_free(struct manifest_writer *w);

/*
 * Streaming reader over f (borrowed, not closed). manifest_reader_new() reads and checks
 * the header into *h. manifest_reader_next() returns 1 with the next entry in *e, 0 at
 * the trailer (when the entry count matches and nothing follows), or STEP_EPROTO for a
 * truncated or malformed manifest, STEP_EINVAL for an unsafe entry, STEP_ENOMEM.
 * manifest_reader_line() is the 1-based line number of the last line read.
 */
struct manifest_reader;
int manifest_reader_new(FILE *f, struct manifest_header *h, struct manifest_reader **outp);
int manifest_reader_next(struct manifest_reader *r, struct manifest_entry *e);
long manifest_reader_line(const struct manifest_reader *r);
void manifest_reader_free(struct manifest_reader *r);

/*
 * Server keys. Objects: "o." + hex SHA-256 of the content. Snapshots:
 * "s." + encoded NAME + "." + 10-digit zero-padded seq. NAME encoding keeps [A-Za-z0-9-]
 * and writes every other byte as "_xx" (lower-case hex), so the key is a safe file name
 * on a reference server (no '/', no leading dot, no "..").
 * Each returns 0, or STEP_EINVAL (empty or over-long NAME, seq out of range) /
 * STEP_ETOOBIG (out too small).
 */
int manifest_object_key(const uint8_t sha256[HASH_SHA256_LEN], char *out, size_t outlen);
/* Tree objects of snapshot format 2 (tree.h): "t." + hex SHA-256 of the tree's bytes, so
 * they are told from file content by their key (status, counts, listings). */
int manifest_tree_key(const uint8_t sha256[HASH_SHA256_LEN], char *out, size_t outlen);
int manifest_is_tree_key(const char *key);
int manifest_name_encode(const char *name, char *out, size_t outlen);
int manifest_snapshot_key(const char *name, uint64_t seq, char *out, size_t outlen);
/* Prefix "s.<encoded NAME>." of every snapshot key of name. */
int manifest_snapshot_prefix(const char *name, char *out, size_t outlen);
/* Parses the seq out of key when key starts with prefix and ends in 10 digits; 0 or STEP_EINVAL. */
int manifest_snapshot_seq(const char *key, const char *prefix, uint64_t *seqp);
/* Returns 1 when key has the shape of an object key. */
int manifest_is_object_key(const char *key);

#define MANIFEST_SEQ_MAX 9999999999ULL

#endif
