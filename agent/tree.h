/*
 * tree.h — tree objects (snapshot format 2): one content-addressed object per directory.
 *
 * A tree is the canonical binary encoding of one directory's entries; its id is the
 * SHA-256 of those bytes and its server key "o." + hex id (manifest_object_key()), the
 * same namespace as file chunks. An entry is a file (its chunks in order: id and size of
 * each; a file of up to CHUNK_MIN bytes is one chunk, the SHA-256 of its whole content; an
 * empty file has none), a directory (the id of its own tree) or a symlink (its target).
 *
 * Encoding (all integers unsigned LEB128, minimal; mtime zig-zag encoded first):
 *   magic    "steptree" (8 bytes), version byte 1
 *   count    number of entries
 *   entries  sorted by name, bytewise (memcmp; a name before every longer name that starts
 *            with it), no two equal, each:
 *     type (1 byte: 1 file, 2 dir, 3 symlink, 4 file with a link group), name length,
 *     name bytes, mode (permission bits, <= 07777), mtime_ns (zig-zag), uid, gid,
 *     file:    size, chunk count, then per chunk: 32-byte id, chunk size (>= 1)
 *     linked:  as file, then the link group id (>= 1)
 *     dir:     32-byte subtree id
 *     symlink: target length, target bytes
 *   nothing after the last entry.
 * Type 4 was added for hard links (a file whose inode has several names): the files of one
 * snapshot that carry the same link id were one inode, and restore makes them one again.
 * A file without one is type 1 as before, so trees without hard links keep their bytes and
 * ids, and every tree written before type 4 existed still decodes the same.
 * The same entries always give the same bytes, so an unchanged directory gives the same
 * id in every snapshot and is stored once.
 *
 * Decoding treats the bytes as hostile: a name that is empty, ".", "..", holds '/' or
 * NUL or is longer than TREE_NAME_MAX; entries out of order or repeated; an unknown type;
 * a file whose chunk sizes do not add up to its size, or with more than TREE_CHUNKS_MAX
 * chunks; a symlink target empty, with NUL or over TREE_TARGET_MAX; a varint that is not
 * minimal or overflows; trailing bytes; anything past the end: all refused. This module
 * does no I/O.
 */
#ifndef STEP_TREE_H
#define STEP_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "hash.h"

#define TREE_VERSION     1
#define TREE_NAME_MAX    255
#define TREE_TARGET_MAX  4095
#define TREE_CHUNKS_MAX  (1u << 22) /* 32 TiB of 8 MiB chunks */
#define TREE_ENTRIES_MAX (1u << 22)
#define TREE_MAX_BYTES   (256u << 20) /* largest tree object accepted */

enum tree_type { TREE_FILE = 1, TREE_DIR = 2, TREE_SYMLINK = 3 };
#define TREE_WIRE_LINKED 4 /* the wire type of a TREE_FILE with link != 0 */

struct tree_chunk {
	uint8_t id[HASH_SHA256_LEN]; /* SHA-256 of the chunk's bytes */
	uint64_t size;
};

struct tree_entry {
	int type;         /* enum tree_type */
	const char *name; /* namelen bytes (not NUL-terminated in a decoded entry) */
	size_t namelen;
	unsigned mode; /* permission bits, <= 07777 */
	int64_t mtime_ns;
	uint32_t uid, gid;
	uint64_t size;                    /* files: the sum of the chunk sizes */
	const struct tree_chunk *chunks;  /* files */
	size_t nchunks;                   /* files */
	uint8_t subtree[HASH_SHA256_LEN]; /* dirs */
	const char *target;               /* symlinks: targetlen bytes */
	size_t targetlen;
	uint64_t link; /* files: 0, or the link group of a file with several hard links (the
	                  same nonzero value for every name of one inode in a snapshot) */
};

/*
 * Encodes n entries (borrowed; sorted in place by name) as one tree, appended to out.
 * Returns 0, STEP_EINVAL (an entry that decoding would refuse, or two with one name),
 * STEP_ETOOBIG (over TREE_MAX_BYTES), STEP_ENOMEM.
 */
int tree_encode(struct tree_entry *e, size_t n, struct buf *out);

/*
 * Reads a tree's entries in order. tree_reader_init() checks the magic and version and
 * reads the count (0, or STEP_EPROTO). tree_reader_next() returns 1 with the next entry
 * in *e (its name, target and chunks point into the data or into the reader, valid until
 * the next call), 0 after the last one (when exactly the data was used), STEP_EPROTO for
 * malformed or truncated bytes, STEP_EINVAL for an unsafe entry (see above), STEP_ENOMEM.
 */
struct tree_reader {
	const uint8_t *p, *end;
	uint64_t left; /* entries still to read */
	const char *prev;
	size_t prevlen; /* the last name, for the order check */
	struct tree_chunk *chunks;
	size_t capchunks;
};
int tree_reader_init(struct tree_reader *r, const uint8_t *data, size_t len);
int tree_reader_next(struct tree_reader *r, struct tree_entry *e);
void tree_reader_release(struct tree_reader *r);

/*
 * Builds the trees of a scan. Entries come in scan order (scan.h: pre-order, paths in
 * ascending byte order, a directory's contents right after it); path is the entry's path
 * relative to the root, '/'-separated, and e->name/namelen are ignored (the last
 * component of path is used). A directory opens a level (its e->subtree is ignored); a
 * level is closed when an entry outside it arrives, and at finish: its entries are
 * encoded, the tree's id computed and handed to emit (data valid during the call only),
 * then the directory is added to its parent with that id. tree_builder_finish() closes
 * every level and the root's and gives the root's id. Memory: the entries of the open
 * levels only. Returns 0, STEP_EINVAL (a path out of order, or with an unsafe component),
 * STEP_ENOMEM, or emit's error (which ends the build).
 */
typedef int tree_emit_fn(
    void *arg, const uint8_t id[HASH_SHA256_LEN], const uint8_t *data, size_t len);
struct tree_builder;
int tree_builder_new(tree_emit_fn *emit, void *arg, struct tree_builder **outp);
int tree_builder_add(struct tree_builder *b, const char *path, const struct tree_entry *e);

/* What a subtree holds (the directory itself not counted). */
struct tree_counts {
	uint64_t files, dirs, symlinks, bytes;
};
/*
 * Adds directory path as a finished subtree, without opening a level: e->subtree is its
 * tree's id (from an earlier build; not emitted again), c what it holds. Same order rules
 * and errors as tree_builder_add().
 */
int tree_builder_add_subtree(struct tree_builder *b, const char *path, const struct tree_entry *e,
    const struct tree_counts *c);
/*
 * Called as each directory's tree is finished (after emit): its path ("" for the root;
 * borrowed for the call), its id and what it holds. NULL: none.
 */
typedef void tree_close_fn(
    void *arg, const char *path, const uint8_t id[HASH_SHA256_LEN], const struct tree_counts *c);
void tree_builder_on_close(struct tree_builder *b, tree_close_fn *fn, void *arg);
/* After tree_builder_finish(): what the whole tree holds. */
void tree_builder_counts(const struct tree_builder *b, struct tree_counts *c);
int tree_builder_finish(struct tree_builder *b, uint8_t root[HASH_SHA256_LEN]);
/* Trees emitted so far, and their total bytes. */
void tree_builder_stats(const struct tree_builder *b, uint64_t *ntrees, uint64_t *nbytes);
void tree_builder_free(struct tree_builder *b);

#endif
