/*
 * uploads.h — progress of interrupted uploads in the agent's state database, so `put`
 * can resume: which file (path, size, mtime_ns, ctime_ns, ino) was being uploaded under
 * which key to which server and user, with the server's plan and the bitmap of blocks
 * the server acknowledged. Callers commit the bitmap in batches, never per block.
 * Functions return 0 or a negative STEP_E* (STEP_EIO/STEP_EBUSY for SQLite failures).
 */
#ifndef STEP_UPLOADS_H
#define STEP_UPLOADS_H

#include <stddef.h>
#include <stdint.h>

struct db;

struct upload_rec {
	char *server; /* "host:port" */
	char *user;
	char *key;
	char *path;       /* as given to put */
	uint64_t size;    /* bytes */
	int64_t mtime_ns; /* of the file when the upload started */
	int64_t ctime_ns;
	uint64_t ino;
	uint32_t block_size; /* bytes, from the server's plan */
	uint32_t total_block;
	uint8_t *bitmap; /* acknowledged blocks, (total_block + 7) / 8 bytes */
	size_t nbitmap;
};

/* Creates or upgrades the uploads table (module "uploads"). */
int uploads_migrate(struct db *db);

/*
 * Loads the record of (server, user, key): 0 and a new record in *outp (free with
 * uploads_rec_free()), STEP_ENOENT when there is none.
 */
int uploads_load(
    struct db *db, const char *server, const char *user, const char *key, struct upload_rec **outp);

/* Inserts or replaces the whole record (rec borrowed). */
int uploads_save(struct db *db, const struct upload_rec *rec);

/* Updates only the bitmap of (server, user, key); STEP_ENOENT when no record. */
int uploads_save_bitmap(struct db *db, const char *server, const char *user, const char *key,
    const uint8_t *bitmap, size_t nbitmap);

/* Forgets (server, user, key); no record is not an error. */
int uploads_delete(struct db *db, const char *server, const char *user, const char *key);

/* One upload in progress, as `stepsync status` shows it (strings borrowed for the call). */
struct upload_progress {
	const char *path;
	const char *key;
	uint64_t size;        /* bytes */
	uint32_t total_block; /* blocks in the server's plan */
	uint32_t acked;       /* blocks acknowledged, as last committed */
	int64_t updated;      /* Unix time of the last commit */
};

/*
 * Calls fn for every upload in progress, oldest first; stops early and returns fn's
 * value when it is non-zero. 0 or a STEP_E* from SQLite.
 */
int uploads_each(struct db *db, int (*fn)(const struct upload_progress *p, void *arg), void *arg);

void uploads_rec_free(struct upload_rec *rec);

#endif
