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
struct store_upload;

/* One upload in progress as recorded (load at start). Strings borrowed for the call. */
struct meta_upload_row {
	const char *user, *key;
	size_t keylen;
	int64_t size, block_size;
	const char *file;  /* "<stem>.<gen>" */
	const char *claim; /* the MD5 declared at SAVE, or NULL */
	int64_t rid;       /* shared backends: the row's id; its state (0 open, 1 committing) */
	int state, replace;
};

/* An uploads row found by upload_find, with the blocks it records; meta_found_free. */
struct meta_upload_found {
	struct meta_upload_row row;
	char *buf;        /* owns row's strings */
	uint64_t *blocks; /* received block indexes (with blocks set) */
	size_t nblocks;
};

/* block_done's answers. */
enum { META_BLOCK_RECORDED = 0, META_BLOCK_CLAIMED, META_BLOCK_ELSEWHERE, META_BLOCK_GONE };

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
	/* store_list (store.h): fn gets each object's mtime column (records: 0). */
	int (*list)(struct store_meta *m, const char *user, int data, const char *prefix,
	    size_t plen, const char *after, size_t alen, long long limit,
	    int (*fn)(void *arg, const char *key, size_t keylen, int64_t mtime), void *arg,
	    int *more);
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

	/*
	 * Shared backends (several stepd on one metadata and one root) set shared and the
	 * functions below; the store then treats its upload map as a cache of the uploads
	 * rows. STEP_ECONNECT: the metadata is unreachable (answered 503, retryable).
	 */
	int shared;
	int inline_in_meta; /* inline objects' bytes go in the metadata, not in packs */
	/* Which of n keys of user have a complete object (out[i] 1 or 0), in one round trip:
	 * 0, or an error. NULL: exists() one by one. */
	int (*exists_many)(struct store_meta *m, const char *user, const char *const *keys,
	    const size_t *lens, size_t n, uint8_t *out);
	/* As exists_many, for new inline (one-block) uploads u[0..n-1] of user whose SAVEs
	 * the check thread answers (store_check.c); also records the plan of each whose key
	 * has no object, so that its UPLOAD may reach any instance (plan_find). A later SAVE
	 * of the key, on any instance, replaces the record; the commit of such an upload
	 * (u->planned) consumes it, so one instance commits it; expire drops records older
	 * than the upload TTL. NULL: exists_many, no records. */
	int (*plan_many)(struct store_meta *m, const char *user, struct store_upload *const *u,
	    size_t n, uint8_t *out);
	/* The recorded plan of (user, key), for an UPLOAD on an instance without an upload of
	 * the key: 0 and *f (rid 0, state 0; free f->buf), STEP_EEXIST (the key has an
	 * object), STEP_ENOENT (neither), or an error. */
	int (*plan_find)(struct store_meta *m, const char *user, const char *key, size_t keylen,
	    struct meta_upload_found *f);
	/* Deletes the recorded plan of (user, key) (a DELETE on an instance that does not
	 * have it): 1, 0 (none), or an error. */
	int (*plan_drop)(struct store_meta *m, const char *user, const char *key, size_t keylen);
	/* The uploads row of (user, key): 0 and *f (free f->buf, f->blocks), or STEP_ENOENT. */
	int (*upload_find)(struct store_meta *m, const char *user, const char *key, size_t keylen,
	    int blocks, struct meta_upload_found *f);
	/* Inserts u's row (state 1, claimed, when u->size is 0) and sets u->rid; STEP_EEXIST
	 * when another upload of the key has a row. */
	int (*upload_begin)(struct store_meta *m, struct store_upload *u);
	/* Deletes row rid if it is open: 1, 0 (being committed), or an error. */
	int (*upload_drop)(struct store_meta *m, int64_t rid);
	/* Records block idx of row rid (atomically, under the row's lock) and claims the commit
	 * when it was the last one: META_BLOCK_*, or an error. */
	int (*block_done)(struct store_meta *m, int64_t rid, uint64_t idx, uint64_t total);
	/* Another instance's commit of u: 0 and md5 (committed), STORE_PENDING, STEP_ENOENT
	 * (the upload and its object are gone), STEP_EBUSY (given back: retry). */
	int (*await)(struct store_meta *m, const struct store_upload *u, char md5[33]);
	/* A commit of u whose transaction's outcome is unknown: 1 committed, 0 not (its row is
	 * claimed still), STEP_ENOENT (gone), or an error (ask again later). */
	int (*resolve)(struct store_meta *m, const struct store_upload *u);
	/* Drops rows idle for ttl seconds (gone(s, file, 0) for each: its temp files go) and
	 * gives back the claims of instances that died (gone(s, file, 1): its file, if moved
	 * to obj/ already, goes back to tmp/). Also this instance's heartbeat. */
	void (*expire)(struct store_meta *m, struct store *s, int64_t ttl,
	    void (*gone)(struct store *s, const char *file, int reopen));
};

extern const struct store_meta_ops store_meta_sqlite;
extern const struct store_meta_ops store_meta_pg;

/*
 * LIST ranges (store_list.c). store_list_lower(): the range starts at *low (1: strictly
 * after it, 0: itself included), the later of after and prefix. store_list_upper(): the
 * exclusive upper bound of the keys that start with prefix, written to out (valid UTF-8);
 * its length, or 0 when there is none (an empty prefix).
 */
int store_list_lower(const char *prefix, size_t plen, const char *after, size_t alen,
    const char **low, size_t *lowlen);
size_t store_list_upper(const char *prefix, size_t plen, char *out, size_t outlen);

#endif
