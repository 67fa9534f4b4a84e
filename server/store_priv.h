/*
 * store_priv.h — what the parts of the store share; not for the rest of stepd (store.h).
 *
 * Where things are:
 *   store.c             the request path: SAVE, GET, DELETE, DATA, LIST, PUTMANY; open/free
 *   store_upload.c      uploads in progress: the in-memory map, their temp file and the
 *                       sidecar (.map) that records each received block, block writes,
 *                       reloading them at start
 *   store_blob.c        object bytes under the root: reads, writes, reclaiming files
 *   store_pack.c        packs of small (inline) objects
 *   store_commit.c      the commit queue and thread (group commit): what makes a commit
 *                       happen exactly once, then expiry of abandoned uploads
 *   store_check.c       shared metadata: the check thread, which looks up whether the keys
 *                       of many inline SAVEs exist in one round trip and then answers them
 *   store_meta.h        the metadata interface; store_meta_sqlite.c implements it
 *   store_fault.c       the STEP_FAULT test hook
 *
 * Locking: one mutex (mu) guards the upload map and every upload's state, bitmap and MD5;
 * block data is pwrite'd outside it. The metadata backend locks its own connections; the
 * commit thread alone writes through it. Lock order: mu, then the backend's. Never does
 * network I/O (other than the backend's) and never blocks on another request.
 */
#ifndef STEPD_STORE_PRIV_H
#define STEPD_STORE_PRIV_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <stdatomic.h>

#include "bitmap.h"
#include "hash.h"
#include "store.h"
#include "store_meta.h"

#define MAP_BUCKETS        16384
#define MAX_TOTAL_BLOCK    (1ull << 24) /* bounds bitmap and sidecar sizes */
#define CATCHUP_BLOCKS     16           /* out-of-order blocks hashed per request at most */
/* Uploads up to this size are hashed by the commit thread, read whole through a mapping
 * (commit_hash_many); larger ones block by block as they come (hash_in_order). */
#define HASH_AT_COMMIT_MAX (16u << 20)
#define BATCH_MAX          4096       /* jobs per group commit: a few PUTMANY requests */
#define WRITEBACK_BYTES    (8u << 20) /* start writeback every this much contiguous data */
#define SPACE_RESERVE      (2u << 20) /* bytes block writes leave free for SQLite */
/* One-block objects up to this size are inline: held in memory from their UPLOAD to the
 * commit and then appended to a pack (store_pack.c), with no temp file, rename, directory
 * entry or separate sync per object. Older stores kept them in SQLite (table blobs,
 * objects.file "blob:<rowid>"); those are still read and deleted. */
#define INLINE_MAX         STORE_INLINE_MAX
/* With packs (not with the metadata holding inline bytes), one-block objects up to
 * INLINE_BIG_MAX are inline as well while the inline uploads open hold at most
 * INLINE_BUDGET bytes (reserved at SAVE): the chunks and trees of a backup (at most 4 MiB)
 * then cost one pack append and one sync per batch instead of a temp file, an uploads
 * row, a rename and a directory sync each. Beyond the budget they get temp files as
 * before. */
#define INLINE_BIG_MAX     (8u << 20)
#define INLINE_BUDGET      (256u << 20)
#define BLOB_PREFIX        "blob:" /* objects.file of an inline object: "blob:<rowid>" */
/* Inline objects committed since packs exist are appended to pack/NNNNNNNN.pack instead:
 * objects.file is "pack:<number>:<offset>" and the length is objects.size. A batch of them
 * is one pwritev and one fdatasync, where SQLite wrote each blob twice (WAL, then the
 * checkpoint) a page at a time. Packs are append-only; a deleted object's range is
 * punched out (FALLOC_FL_PUNCH_HOLE), so its space returns to the filesystem. Bytes
 * written by a batch whose transaction never committed are unreferenced garbage. */
#define PACK_PREFIX        "pack:"
#define PACK_MAX           (1ull << 30) /* bytes per pack before the next one starts */
/* The sidecar (.map) of an upload: MAP_MAGIC, then per block 8 bytes, 0 until the block is
 * received, then block_hash() of its bytes. Older sidecars (a byte per block) cannot be
 * checked: their blocks are asked for again. */
#define MAP_MAGIC          "STEPMAP2"
#define MAP_HDR            8

enum { UP_OPEN = 0, UP_COMMITTING, UP_DEAD };
enum {
	JOB_ROW = 0,
	JOB_COMMIT,
	JOB_DROP,
	JOB_OBJ_DELETE,
	JOB_DATA_SAVE,
	JOB_DATA_DELETE,
	JOB_NOP,
	JOB_AWAIT,  /* shared metadata: a waiter for another instance's commit (s->awaiting) */
	JOB_RESOLVE /* shared metadata: a commit whose outcome is unknown (s->resolving) */
};

struct store_upload {
	uint8_t id[HASH_SHA256_LEN]; /* SHA-256(user NUL key) */
	char stem[65];               /* hex of id */
	char gen[17];                /* random generation: file names differ per upload; also
	                              * the upload_id clients may name on UPLOAD */
	char want_md5[33];           /* MD5 declared at SAVE ("": none): the commit must match */
	int replace;                 /* SAVE "replace": the commit swaps out the key's object */
	int64_t rid;                 /* shared metadata: the uploads row's id (0: none) */
	int remote;                  /* shared: UP_COMMITTING by another instance */
	char *user, *key;            /* owned; key is keylen bytes (+NUL) */
	size_t keylen;
	uint64_t size;                /* bytes */
	uint32_t block_size;          /* bytes */
	uint64_t total;               /* blocks */
	int fd, mapfd;                /* temp object and sidecar; -1 until opened */
	int inl;                      /* inline (one block, <= INLINE_MAX): no files, kept in mem */
	_Atomic uint64_t *inl_budget; /* a big inline upload: the budget it holds size of */
	int unchecked;                /* shared: SAVEs wait for the check thread (store_check.c) */
	int planned;      /* shared, inline: its plan is recorded for every instance (plan_many), so
	                   * its commit must consume that record (exactly once, by one instance) */
	uint8_t *mem;     /* inline: the block once received (size bytes), owned */
	char mem_md5[33]; /* inline: MD5 (hex) of mem */
	struct bitmap bm;
	struct hash_ctx *md5;
	uint64_t next_hashed; /* blocks [0, next_hashed) are in md5 */
	uint64_t flushed;     /* bytes [0, flushed) handed to writeback early */
	uint64_t wb_last;     /* where the last range handed to writeback starts */
	uint64_t dropped;     /* bytes [0, dropped) dropped from the page cache */
	int64_t touched;      /* wall seconds of the last block */
	int state;
	int onebuf;                   /* user, key and mem live in this allocation (put_obj) */
	int refs;                     /* map + jobs + callers */
	int writers;                  /* pwrites in flight */
	struct store_waiter *waiters; /* answered when the commit ends */
	struct store_upload *hnext;
};

struct store_job {
	int kind;
	struct store_upload *u; /* referenced (ROW, COMMIT, DROP) */
	char *user, *key, *json;
	size_t keylen;
	char file[160];     /* OBJ_DELETE: the file to unlink after the transaction; inline
	                     * COMMIT: the pack range its bytes were written to */
	uint64_t size;      /* OBJ_DELETE: the object's size */
	uint64_t since;     /* AWAIT: when it started (ms) */
	char old_file[160]; /* replacing COMMIT: the replaced object's file, reclaimed after
	                     * the transaction ("": nothing replaced) */
	uint64_t old_size;
	struct store_waiter *w;
	int err;
	char md5[33];
	int embedded; /* a put_obj's: freed with its upload, not by job_free */
	struct store_job *next;
};

/* A PUTMANY object: its upload and commit job in one allocation, then user, key (with
 * NUL) and the bytes. */
struct put_obj {
	struct store_upload u;
	struct store_job j;
	char buf[];
};

/* Uploads in the map per user (the per-user cap). Under mu. */
struct ucount {
	char *user;
	int n;
	struct ucount *next;
};
#define UCOUNT_BUCKETS 1024

struct store {
	char *root;
	struct ucount *ucount[UCOUNT_BUCKETS]; /* under mu */
	int max_uploads;                       /* per user; 0: no limit */
	char id[33]; /* store_id: random at creation, kept in meta.db's info table */
	struct store_opts o;
	uint32_t max_block;        /* largest big_blocks plan, 0: STORE_BIG_BLOCK_MAX */
	int objfd, tmpfd, packdir; /* directory fds */
	pthread_mutex_t pmu;       /* packfd */
	int *packfd;               /* by pack number: O_RDWR fds opened on first use, or -1 */
	unsigned npackfd;
	unsigned pack_no;           /* the pack inline commits append to (commit thread) */
	uint64_t pack_end;          /* its size: where the next batch goes */
	int pack_dirty;             /* written since the last sync (commit thread) */
	_Atomic uint64_t inl_bytes; /* INLINE_BUDGET bytes held by big inline uploads */
	uint64_t pack_wrote[2];     /* offset and length the last batch wrote (commit thread) */
	uint64_t pack_max;          /* PACK_MAX, or STEP_PACK_MAX (tests) */
	pthread_mutex_t mu;
	pthread_cond_t wcond; /* writers reached 0 */
	struct store_upload *map[MAP_BUCKETS];
	const struct store_meta_ops *mops; /* the metadata backend (store_meta.h) */
	struct store_meta *meta;
	pthread_mutex_t qmu;
	pthread_cond_t qcond;
	struct store_job *qhead, *qtail;
	struct store_job *awaiting;  /* JOB_AWAIT jobs (under qmu) */
	struct store_job *resolving; /* JOB_RESOLVE jobs (commit thread) */
	int stop;
	pthread_t thread;
	int thread_started;
	/* Fault hook (tests): fail the n-th block pwrite / commit sync (alloc: a global). */
	long fault_write, fault_fsync, fault_dirsync;
	int fault_errno;
	long nwrite, nfsync;    /* counted under mu / by the commit thread */
	long ndirsync;          /* commit thread */
	struct save_check *chk; /* shared metadata: the check thread (store_check.c), or NULL */
};

/* ---- store_fault.c ---- */
int fault_hit(long *counter, long at, const char *what);
void fault_parse(struct store *s);

/* ---- store_upload.c ---- */
void key_id(const char *user, const char *key, size_t keylen, uint8_t id[HASH_SHA256_LEN]);
void key_id_with(struct hash_ctx *c, const char *user, const char *key, size_t keylen,
    uint8_t id[HASH_SHA256_LEN]);
struct store_upload *map_find(struct store *s, const uint8_t *id);
void map_remove(struct store *s, struct store_upload *u);
void map_insert(struct store *s, struct store_upload *u);
int ucount_get(struct store *s, const char *user);
void ucount_add(struct store *s, const char *user, int d);
struct store_upload *upload_new(
    const char *user, const char *key, size_t keylen, uint64_t size, uint32_t bs);
void upload_free(struct store_upload *u);
void upload_unref(struct store *s, struct store_upload *u);
void upload_fname(const struct store_upload *u, const char *ext, char *out, size_t n);
int upload_open_files(struct store *s, struct store_upload *u, int create, int map);
void upload_unlink_files(struct store *s, struct store_upload *u);
int upload_catch_up(struct store_upload *u, int fd, uint64_t max_blocks);
void load_upload(struct store *s, const struct meta_upload_row *row);
int upload_sync(struct store *s, const char *user, const char *key, size_t keylen, int blocks);
void upload_forget(struct store *s, struct store_upload *u);
/* An UPLOAD's lookup where neither this instance nor the uploads rows know the key: the
 * one-block plan another instance recorded (plan_find), made a planned entry of the map. 0
 * and a reference in *up, STEP_EEXIST (the key has an object), STEP_ENOENT, an error. */
int upload_from_plan(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_upload **up);
int await_queue(struct store *s, struct store_upload *u, struct store_waiter *w);
void remove_orphans(struct store *s);

/* ---- store_blob.c ---- */
int err_from_errno(int e);
int space_low(int dirfd, size_t len);
int pwritev_all(int fd, struct iovec *iov, int cnt, off_t off);
ssize_t pwrite_all(int fd, const uint8_t *data, size_t len, off_t off);
int pread_all(int fd, uint8_t *dst, size_t len, off_t off);
int open_dir(const char *root, const char *sub, int *fd);
void obj_reclaim(struct store *s, const char *file, uint64_t size);
void reclaim_orphans(struct store *s);

/* ---- store_pack.c ---- */
int pack_fd(struct store *s, unsigned n, int create);
int pack_parse(const char *file, unsigned *n, uint64_t *off);
void pack_write_batch(struct store *s, struct store_job *batch);
void pack_punch(struct store *s, const char *file, uint64_t len);
int pack_read(struct store *s, const struct store_obj *o, uint64_t off, uint8_t *dst, size_t len);
int pack_open_last(struct store *s);

/* ---- store_commit.c ---- */
struct store_job *job_new(int kind);
void job_free(struct store_job *j);
void job_queue_push(struct store *s, struct store_job *j);
int queue_upload_job(struct store *s, int kind, struct store_upload *u);
void batch_run(struct store *s, struct store_job *batch);
/* At stop: answers the waiters of other instances' commits (503) and forgets the rest. */
void waits_drain(struct store *s);
void *commit_main(void *arg);

/* ---- store_check.c ---- */
struct check_item;
/* A SAVE's check item, while unused, and the SAVE's waiter. */
struct store_check_ctx {
	struct check_item *it;
	struct store_waiter *w;
};
/* Starts the check thread (shared backends with exists_many): 0, or an error. */
int check_start(struct store *s);
/* Answers every queued SAVE, then stops the thread. */
void check_stop(struct store *s);
/* A check item for check_attach, or NULL (ENOMEM); check_item_free for one not used. */
struct check_item *check_item_new(void);
void check_item_free(struct check_item *it);
/* Queues the check of u (new, inline, in the map; plan made) for the SAVE waiting on w;
 * marks u unchecked. STORE_PENDING. Under mu. */
int check_attach(
    struct store *s, struct check_item *it, struct store_upload *u, struct store_waiter *w);
/* Hands the SAVEs staged since the last call to the check thread (store_kick). */
void check_kick(struct store *s);
/* Looks u (unchecked, not committing) up now and answers its SAVEs: 1 an object (u has
 * left the map), 0 none (u is checked), or an error (u has left the map). Under mu. */
int check_now(struct store *s, struct store_upload *u);

/* ---- store.c ---- */
/* 1 when (user, key) has a complete object (data: a DATA record), 0, or STEP_EIO. */
int object_exists(struct store *s, const char *user, const char *key, size_t keylen, int data);

#endif
