/*
 * store_meta.h — the metadata interface of the store: where objects, uploads in progress,
 * DATA records, per-user obj_gen counters and the store id are recorded. The store calls
 * it; bytes never pass through it (they live under the root: store_blob.c, store_pack.c).
 *
 * One implementation per backend, chosen at store_open from store_opts.metadata:
 * store_meta_sqlite.c (ROOT/meta.db, the default). Every function returns 0 or a STEP_E*
 * code unless it says otherwise; lookups may be called from any request thread at once
 * (the backend does its own locking), apply() only from the commit thread.
 */
#ifndef STEPD_STORE_META_H
#define STEPD_STORE_META_H

#include <stddef.h>
#include <stdint.h>

struct store;
struct store_job;
struct store_obj;
struct store_meta; /* a backend's connections and state */

/* One upload in progress as recorded (load at start). Strings borrowed for the call. */
struct meta_upload_row {
	const char *user, *key;
	size_t keylen;
	int64_t size, block_size;
	const char *file;  /* "<stem>.<gen>" */
	const char *claim; /* the MD5 declared at SAVE, or NULL */
};

struct store_meta_ops {
	const char *name;
	/* Opens the backend for the store s (root already open), creating or migrating its
	 * schema; errbuf gets one line on failure. */
	int (*open)(struct store *s, struct store_meta **out, char *errbuf, size_t errlen);
	void (*close)(struct store_meta *m);
	/* The store's id: 32 lower-case hex digits, created (random) once. */
	int (*store_id)(struct store_meta *m, char id[33]);
	/* 1 when (user, key) has a complete object (data: a DATA record), 0, or STEP_EIO. */
	int (*exists)(
	    struct store_meta *m, const char *user, const char *key, size_t keylen, int data);
	/* Brackets many exists() calls (PUTMANY): one read snapshot where the backend can. */
	void (*read_begin)(struct store_meta *m);
	void (*read_end)(struct store_meta *m);
	/* The object row: size, block_size, md5, file. STEP_ENOENT when there is none. */
	int (*object_get)(struct store_meta *m, const char *user, const char *key, size_t keylen,
	    struct store_obj *o);
	/* Bytes of an object kept inside the metadata ("blob:<id>" rows of older stores). */
	int (*blob_read)(
	    struct store_meta *m, const char *file, uint64_t off, uint8_t *dst, size_t len);
	int (*data_get)(
	    struct store_meta *m, const char *user, const char *key, size_t keylen, char **json);
	int (*list)(struct store_meta *m, const char *user, int data, const char *prefix,
	    size_t plen, const char *after, size_t alen, long long limit,
	    int (*fn)(void *arg, const char *key, size_t keylen), void *arg, int *more);
	int (*obj_gen)(struct store_meta *m, const char *user, int64_t *gen);
	/* Calls fn for every recorded upload in progress (start-up). */
	int (*uploads)(struct store_meta *m, struct store *s,
	    void (*fn)(struct store *s, const struct meta_upload_row *row));
	/* Records a batch of jobs (struct store_job, store_priv.h) in one transaction and
	 * sets each job's err; the group commit. Commit thread only. */
	void (*apply)(struct store_meta *m, struct store *s, struct store_job *batch);
	/* Start-up clean-up: 1 when an object names file, 0, STEP_EIO; and the end of the
	 * last byte objects reference in pack n (0 when none). */
	int (*file_named)(struct store_meta *m, const char *file);
	int (*pack_end)(struct store_meta *m, unsigned n, uint64_t *end);
	/* Called by the commit thread between batches (busy: jobs are waiting). */
	void (*idle)(struct store_meta *m, int busy);
};

extern const struct store_meta_ops store_meta_sqlite;

#endif
