/*
 * files.h — the sync engine's file-state tables in the agent's state database:
 *   files    what each synced path looked like when it was last hashed (quick check:
 *            size, mtime_ns, inode, ctime_ns) and which content key it had;
 *   objects  content keys known to be complete and verified on the server.
 * The files table is only a cache: losing it costs re-hashing, never correctness. An
 * objects row is written only after the server confirmed the object's MD5.
 *
 * Statements are prepared once per struct files (one per run) and reused for every
 * file, inside the caller's transaction: no per-file commit, no per-file fsync.
 * Every function returns 0 or a negative STEP_E* (STEP_EIO for SQLite failures).
 */
#ifndef STEP_FILES_H
#define STEP_FILES_H

#include <stdint.h>

struct db;
struct files;

#define FILES_KEY_MAX 127

struct files_row {
	uint64_t dev, ino, size;
	int64_t mtime_ns, ctime_ns;
	unsigned mode;
	char md5[33];                 /* lower-case hex */
	char okey[FILES_KEY_MAX + 1]; /* object key, "" for an empty file */
	int known;                    /* files_lookup(): 1 when okey is in the objects table */
};

/* Creates or upgrades the tables (module "files"). */
int files_migrate(struct db *db);

/* Prepares the statements on db (borrowed; must outlive the struct). Free with files_free(). */
int files_new(struct db *db, struct files **outp);
void files_free(struct files *f);

/* Looks up (dir, path): 0 and *row, or STEP_ENOENT. */
int files_lookup(struct files *f, const char *dir, const char *path, struct files_row *row);
/* Inserts or replaces (dir, path) with row, marking it seen in generation gen. */
int files_put(
    struct files *f, const char *dir, const char *path, const struct files_row *row, int64_t gen);
/* Marks an unchanged (dir, path) as seen in generation gen. */
int files_touch(struct files *f, const char *dir, const char *path, int64_t gen);
/* Number of rows of dir in *np. */
int files_count(struct files *f, const char *dir, uint64_t *np);
/* A generation number larger than any stored for dir. */
int files_next_gen(struct files *f, const char *dir, int64_t *genp);
/* Deletes dir's rows not seen in generation gen (files gone from the tree). */
int files_drop_unseen(struct files *f, const char *dir, int64_t gen);

/*
 * A sorted walk over dir's rows for a scan that visits paths in ascending byte order
 * (memcmp, as SQLite's BINARY collation): one B-tree pass instead of one lookup per file.
 * db should be a connection of its own (its read transaction then sees the table as it
 * was when the walk began, whatever the scan writes meanwhile on another connection).
 * files_cursor_find() fills *row (known included) and returns 0 when path has a row,
 * STEP_ENOENT when not (also for a path that comes out of order), or a database error.
 */
struct files_cursor;
int files_cursor_open(struct db *db, const char *dir, struct files_cursor **outp);
int files_cursor_find(struct files_cursor *c, const char *path, struct files_row *row);
void files_cursor_free(struct files_cursor *c);
/*
 * The row the walk is on, without moving: 1 with its path (borrowed until the walk moves)
 * and *row, 0 past the end, or a database error. files_cursor_next() moves to the next row.
 */
int files_cursor_peek(struct files_cursor *c, const char **pathp, struct files_row *row);
int files_cursor_next(struct files_cursor *c);

/* 1 when okey is recorded as on the server, 0 when not, or a negative STEP_E*. */
int files_object_known(struct files *f, const char *okey);
/* Records okey (size bytes, md5) as complete on the server. */
int files_object_add(struct files *f, const char *okey, uint64_t size, const char *md5);
/* Forgets okey (deleted by prune, or found missing on the server). */
int files_object_forget(struct files *f, const char *okey);

/*
 * Chunk lists of large files (snapshot format 2): a files row whose okey is "c.<hex>"
 * names the list stored under that id (FILES_CHUNK_REC bytes per chunk: its 32-byte id,
 * then its size as 8 bytes little-endian); the id is marked in the objects table once
 * every chunk of the list is on the server. put keeps an existing list (same id, same
 * data); get returns a new copy (caller frees) or STEP_ENOENT.
 */
#define FILES_CHUNK_REC 40
int files_chunks_put(struct files *f, const char *id, const void *data, size_t len);
int files_chunks_get(struct files *f, const char *id, void **datap, size_t *lenp);

/*
 * Directory trees of the last run (incremental syncs): a directory's tree id (path
 * relative to the tree, "" for the root) and what its subtree holds. get: 0 or
 * STEP_ENOENT; clear forgets every directory of dir (the next run reads them all).
 */
struct files_dirtree {
	uint8_t id[32];
	uint64_t files, dirs, symlinks, bytes;
};
int files_dirtree_get(struct files *f, const char *dir, const char *path, struct files_dirtree *t);
int files_dirtree_put(
    struct files *f, const char *dir, const char *path, const struct files_dirtree *t);
int files_dirtree_clear(struct files *f, const char *dir);

/*
 * The first path of dir's rows in [lo, hi) (hi NULL: no end), bytewise: 1 and the path in
 * out, 0 when none, or a database error. Lets a caller step through one directory's
 * entries and skip its subdirectories' rows at one query each.
 */
int files_seek(
    struct files *f, const char *dir, const char *lo, const char *hi, char *out, size_t outlen);
/* Deletes the row (dir, path); or the rows in [lo, hi), their number in *np. */
int files_drop(struct files *f, const char *dir, const char *path);
int files_drop_range(
    struct files *f, const char *dir, const char *lo, const char *hi, uint64_t *np);

#endif
