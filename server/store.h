/*
 * store.h — stepd's storage: objects and uploads on the local filesystem, metadata in
 * SQLite (ROOT/meta.db) behind an interface (store_meta.h), one namespace per user. The
 * parts of the implementation are listed in store_priv.h.
 *
 * Layout under ROOT: obj/<sha256hex(user NUL key)>.<gen> (committed objects),
 * tmp/<same>.<gen>.part (an upload's blocks, pwrite'd in place) and tmp/<...>.map (one byte
 * per block: the received-block bitmap, so a restart keeps partial uploads). Objects of one
 * block up to 16 KiB are appended to pack/NNNNNNNN.pack instead (objects.file is then
 * "pack:<number>:<offset>"; a delete punches the range out), held in memory between their
 * UPLOAD (or PUTMANY) and their commit; older stores' "blob:<rowid>" rows of the blobs
 * table in meta.db are still read. The key never
 * reaches the filesystem, so no key can produce '/', '..' or an over-long name. Files are
 * 0600, directories 0700, and nothing inside the root is opened through a symlink.
 *
 * With shared metadata, a SAVE's lookup of whether its key exists may be answered by
 * a check thread instead, many SAVEs per round trip (store_save_may_defer).
 * Commits, DATA writes and deletes go through one commit thread that batches them (group
 * commit: one sync, one directory fsync and one SQLite transaction per batch) and then
 * calls the waiting requests' completion functions from that thread. Functions that queue
 * such work return STORE_PENDING and call the waiter exactly once later.
 *
 * Test-only fault hook:
 * STEP_FAULT="write:N[,fsync:M][,dirsync:D][,alloc:K][,times:T|for:MS][,enospc|eio|enotconn]"
 * makes the N-th block pwrite (and/or the M-th commit sync, the D-th sync of obj/ after a
 * commit's renames; with times:T each of them and the T-1 after it, with for:MS every one
 * for MS milliseconds from the first failure) fail with ENOSPC
 * (default, answered 507), EIO (500) or ENOTCONN (503, as when storage or the metadata
 * database is unreachable: clients retry), and
 * the K-th allocation on the request path (handler replies and pending replies, DATA
 * records, DOWNLOAD buffers, uploads, commit jobs, resume plans) fail as if malloc had
 * returned NULL: that request is answered 500, the server goes on. Each fault fires once
 * (write, fsync, dirsync: T times, or for MS ms).
 * STEP_PACK_MAX=BYTES (tests) starts a new pack file once one would grow past BYTES.
 */
#ifndef STEPD_STORE_H
#define STEPD_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_PENDING     1  /* the waiter will be called from the commit thread */
#define STORE_TMP_DELETED 2  /* DELETE hit an upload in progress; its data is gone */
#define STORE_LOCKED      3  /* SAVE: another session's upload of the key is active */
#define STORE_TAKEOVER_S  60 /* ...active: a block within this many seconds */
#define STORE_RETRY                                                                                \
	4                  /* SAVE, GET: the key's commit is being decided on another              \
	                    * instance (shared metadata): answer 503, retry */
#define STORE_MAX_KEY 8192 /* bytes */

struct store;
struct store_upload; /* an upload in progress; refcounted */

/* The alloc:K fault hook: K, or 0 when unset (then step_fault_alloc() is one branch). */
extern long store_fault_alloc_at;
/* Counts one allocation; 1 when it is the K-th (the one that must fail). */
int store_fault_alloc_hit(void);
#define step_fault_alloc() (store_fault_alloc_at != 0 && store_fault_alloc_hit())

/*
 * A request waiting for the commit thread. done() is called exactly once, from the commit
 * thread, with err 0 or STEP_E*, and for commits the object's MD5 (lower-case hex). The
 * waiter is owned by the caller and must stay valid until done() runs.
 */
struct store_waiter {
	void (*done)(struct store_waiter *w, int err, const char *md5hex);
	struct store_waiter *next; /* used by the store while queued */
};

struct store_opts {
	const char *root;
	uint32_t block_size;      /* bytes per block of new plans */
	uint64_t max_object_size; /* bytes; SAVE beyond it fails with STEP_ETOOBIG */
	int64_t upload_ttl;       /* seconds without a block before an upload is dropped */
	/* NULL or "": SQLite in ROOT/meta.db. Otherwise a libpq connection string or URL
	 * (postgresql://...): PostgreSQL metadata shared by every stepd on the same root. */
	const char *metadata;
};

/* An upload plan (SAVE reply) and, when resuming, the blocks already received. */
struct store_plan {
	uint64_t size;
	uint32_t block_size;
	uint64_t total_block;
	uint64_t (*ranges)[2]; /* owned by the caller after store_file_save; free() */
	size_t nranges;        /* ranges listed (at most STORE_MAX_RANGES) */
	int ranges_cut;        /* 1 when more ranges exist than were listed */
	char upload_id[17];    /* the upload's id (hex), for UPLOAD's upload_id */
};
#define STORE_MAX_RANGES 10000

struct store_obj {
	uint64_t size;
	uint32_t block_size;
	char md5[33];
	char file[160]; /* name under obj/ */
};

/*
 * Opens the store: creates ROOT/obj and ROOT/tmp, opens the database, reloads uploads in
 * progress, removes orphaned temp files and starts the commit thread.
 * Returns 0 and *out, or STEP_ESYS / STEP_EIO with errbuf filled.
 */
int store_open(const struct store_opts *o, struct store **out, char *errbuf, size_t errlen);
/* Finishes every queued job (calling its waiters), stops the commit thread, frees all. */
void store_free(struct store *s);

/* Waits until every job queued before the call has been processed (tests, fuzzing). */
void store_sync(struct store *s);

/* 1 when key is acceptable as a key: 1..STORE_MAX_KEY bytes, no NUL. */
int store_key_valid(const char *key, size_t keylen);
/* The file-name stem for (user, key): 64 lower-case hex digits of SHA-256(user NUL key). */
void store_key_name(const char *user, const char *key, size_t keylen, char out[65]);

/*
 * FILE SAVE. Returns 0 with *plan filled (resume: same size keeps received blocks; a
 * different size starts over), STORE_PENDING for size 0 (w is called when the empty object
 * is committed), STEP_EEXIST (a completed object or a commit in progress has that key),
 * STEP_EBUSY (the user has store_set_max_uploads' number of uploads in progress),
 * STEP_ETOOBIG (size over the limit), STEP_ENOSPC, STEP_EIO, STEP_ENOMEM.
 */
int store_file_save(struct store *s, const char *user, const char *key, size_t keylen,
    uint64_t size, struct store_plan *plan, struct store_waiter *w);
/*
 * The same, for a client that can take blocks of up to want_bs bytes (the big_blocks
 * extension): a new plan then has blocks of min(want_bs, store_set_max_block_size's limit)
 * bytes when that is more than the configured size. Fewer, larger blocks cost both ends less per
 * byte. The committed object keeps the configured size as its download plan, so clients
 * that size their buffers for the specification's 65536 can still read it.
 */
#define STORE_BIG_BLOCK_MAX (1u << 20) /* the default limit */
int store_file_save_bs(struct store *s, const char *user, const char *key, size_t keylen,
    uint64_t size, uint32_t want_bs, struct store_plan *plan, struct store_waiter *w);
/*
 * The same again, with the whole file's MD5 the client declares (md5: 32 lower-case hex,
 * or NULL) and the id of its own upload it is resuming (upload_id from an earlier plan, or
 * NULL). With md5, the upload commits only if its bytes have that MD5 (else the final
 * block is answered STEP_EMISMATCH and the upload discarded), an upload of the key already
 * in progress is resumed only if it was declared with the same MD5 and size, and anyone
 * else's active upload makes this SAVE return STORE_LOCKED (the client's own, named by
 * upload_id, or one idle for STORE_TAKEOVER_S, is started over). Without md5: as
 * store_file_save_bs.
 */
int store_file_save_ex(struct store *s, const char *user, const char *key, size_t keylen,
    uint64_t size, uint32_t want_bs, const char *upload_id, const char *md5,
    struct store_plan *plan, struct store_waiter *w);
/*
 * The same, with the replace extension: replace != 0 lets the SAVE proceed when the key
 * has a complete object. That object stays readable (store_object_get finds it) until
 * the new upload commits; the commit then swaps the key to the new object in one
 * transaction and reclaims the old bytes. An upload that is dropped, expires or fails
 * leaves the old object alone. A FILE DELETE during it drops the upload and deletes the
 * object. A commit in progress for the key answers STORE_LOCKED (retry).
 */
int store_file_save_rep(struct store *s, const char *user, const char *key, size_t keylen,
    uint64_t size, uint32_t want_bs, const char *upload_id, const char *md5, int replace,
    struct store_plan *plan, struct store_waiter *w);
/*
 * 1 when a SAVE of a size over 0 may be answered later: with shared metadata, a SAVE that
 * starts a new inline (one-block) upload and is given a waiter w returns STORE_PENDING;
 * the check thread then fills *plan and calls w->done(w, 0, NULL), or calls it with what
 * the SAVE would have returned (STEP_EEXIST, STORE_LOCKED, ...). plan and w must stay
 * valid until then. 0: w is used for size 0 only.
 */
int store_save_may_defer(const struct store *s);
/*
 * Hands such SAVEs, made since the last call, to the check thread; the event loop calls it
 * after each round of requests, so that a SAVE whose UPLOAD came in the same round is
 * answered by the commit, without a lookup (a SAVE nobody hands over is looked up after
 * 50 ms). Any thread; cheap when there is nothing to hand over.
 */
void store_kick(struct store *s);
/* 1 when upload_id (from a SAVE answer) names the upload u, else 0. */
int store_upload_is(const struct store_upload *u, const char *upload_id);
/* Sets that limit (bytes; at most the configured block size turns the extension off). */
void store_set_max_block_size(struct store *s, uint32_t max);
/* Caps the uploads in progress per user (0: no cap; default STORE_MAX_UPLOADS): a SAVE that
 * would start one more fails with STEP_EBUSY. */
#define STORE_MAX_UPLOADS 1024
void store_set_max_uploads(struct store *s, int max);

/*
 * Finds the upload in progress for (user, key). Returns 0 and a reference in *up (release
 * with store_upload_put), STEP_EEXIST when the object is complete, STEP_ENOENT when there
 * is no upload, STEP_EIO.
 */
int store_upload_get(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_upload **up);
void store_upload_put(struct store *s, struct store_upload *u);
/* The plan of an upload (fields never change). */
void store_upload_plan(
    const struct store_upload *u, uint64_t *size, uint32_t *block_size, uint64_t *total_block);
/*
 * Stores block index (already validated against the plan: length and range). Returns 0
 * (stored, or a repeat), STORE_PENDING when this block completed the upload (or the upload
 * is already being committed): w->done gets the MD5; STEP_ENOENT when the upload vanished
 * meanwhile, STEP_ENOSPC, STEP_EIO.
 */
int store_upload_write(struct store *s, struct store_upload *u, uint64_t index, const uint8_t *data,
    size_t len, struct store_waiter *w);

/* Largest object PUTMANY may carry (one block, stored inline). */
#define STORE_INLINE_MAX (16u << 10)

/*
 * One object of a PUTMANY request: a complete one-block object given whole, with the MD5
 * the caller computed over data. store_put_many sets status: STORE_PENDING (w->done is
 * called once from the commit thread, with 0 and the MD5 when the object is durable, or
 * an error), STEP_EEXIST (a complete object, or a commit in progress, has the key),
 * STEP_EBUSY (an upload in progress has the key: use SAVE/UPLOAD), STEP_ETOOBIG (len is 0
 * or over STORE_INLINE_MAX), STEP_ENOSPC, STEP_ENOMEM, STEP_EIO. data is copied.
 */
struct store_put_item {
	const char *key;
	size_t keylen;
	const uint8_t *data;
	size_t len;
	char md5[33];
	int status;
	struct store_waiter *w;
};
/* Stores n objects of user's; the pending ones are committed together. */
void store_put_many(struct store *s, const char *user, struct store_put_item *items, size_t n);

/* FILE GET / DOWNLOAD: 0 and *o; STEP_ENOENT; STEP_EBUSY when only an upload exists. */
int store_object_get(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_obj *o);
/* Reads len bytes at off of a committed object into dst; 0, STEP_ENOENT, STEP_EIO. */
int store_object_read(
    struct store *s, const struct store_obj *o, uint64_t off, uint8_t *dst, size_t len);
/*
 * FILE DELETE: STORE_PENDING (object deletion queued; w->done gets 0 or an error; also when
 * a replacing upload was dropped along with the object), STORE_TMP_DELETED (an upload in
 * progress was dropped), STEP_EBUSY (being committed),
 * STEP_ENOENT, STEP_EIO.
 */
int store_file_delete(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_waiter *w);

/* DATA GET: 0 and *json (malloc'd text of the stored object), STEP_ENOENT, STEP_EIO. */
int store_data_get(struct store *s, const char *user, const char *key, size_t keylen, char **json);
/* DATA SAVE: STORE_PENDING (w gets 0 or STEP_EEXIST), STEP_EEXIST, STEP_EIO, STEP_ENOMEM. */
int store_data_save(struct store *s, const char *user, const char *key, size_t keylen,
    const char *json, struct store_waiter *w);
/* DATA DELETE: STORE_PENDING (w gets 0 or STEP_ENOENT), STEP_ENOENT, STEP_EIO. */
int store_data_delete(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_waiter *w);

/*
 * LIST: calls fn(arg, key, keylen, mtime) for at most limit keys of user's completed
 * objects (data != 0: DATA records) that start with prefix and sort after after (byte
 * order); mtime is the object's commit time (Unix seconds; 0 for records). *more is set to
 * 1 when further keys exist. Returns 0, fn's non-zero value, STEP_EIO.
 */
int store_list(struct store *s, const char *user, int data, const char *prefix, size_t plen,
    const char *after, size_t alen, long long limit,
    int (*fn)(void *arg, const char *key, size_t keylen, int64_t mtime), void *arg, int *more);

/* The store's id (objgen extension): 32 lower-case hex digits, random when the store was
 * first initialised, kept in meta.db; the same for the store's lifetime. Borrowed. */
const char *store_id(const struct store *s);
/*
 * The objgen extension: how many times a complete object of user's was removed (FILE DELETE;
 * counted in the transaction that removes it). 0 and *gen (0 when never), or STEP_EIO.
 */
int store_obj_gen(struct store *s, const char *user, int64_t *gen);

#endif
