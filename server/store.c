/*
 * store.c — objects, uploads in progress and DATA records for stepd: filesystem for bytes,
 * SQLite for metadata, a commit thread for everything that must be durable (group commit).
 *
 * Locking: one mutex (mu) guards the upload map and every upload's state, bitmap and MD5;
 * block data is pwrite'd outside it. The reader connection has its own lock (rlock); the
 * commit thread owns the writer connection. Lock order: mu, then rlock. Never does network
 * I/O and never blocks on another request.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bitmap.h"
#include "err.h"
#include "hash.h"
#include "log.h"
#include "meta.h"
#include "store.h"
#include "util.h"

#define MAP_BUCKETS      16384
#define MAX_TOTAL_BLOCK  (1ull << 24) /* bounds bitmap and sidecar sizes */
#define CATCHUP_BLOCKS   16           /* out-of-order blocks hashed per request at most */
#define BATCH_MAX        4096         /* jobs per group commit: a few PUTMANY requests */
#define WRITEBACK_BYTES  (8u << 20)   /* start writeback every this much contiguous data */
#define SPACE_RESERVE    (2u << 20)   /* bytes block writes leave free for SQLite */
/* One-block objects up to this size live in SQLite (table blobs), not in files of their
 * own: no temp file, rename, directory entry or separate sync per object, and the commit's
 * SQLite transaction is what makes them durable. A backup of many small files is bounded by
 * exactly those per-file costs; below a few tens of KiB a blob in SQLite is also cheaper to
 * read back than a file (sqlite.org/fasterthanfs.html). */
#define INLINE_MAX       STORE_INLINE_MAX
#define BLOB_PREFIX      "blob:" /* objects.file of an inline object: "blob:<rowid>" */
/* Inline objects committed since packs exist are appended to pack/NNNNNNNN.pack instead:
 * objects.file is "pack:<number>:<offset>" and the length is objects.size. A batch of them
 * is one pwritev and one fdatasync, where SQLite wrote each blob twice (WAL, then the
 * checkpoint) a page at a time. Packs are append-only; a deleted object's range is
 * punched out (FALLOC_FL_PUNCH_HOLE), so its space returns to the filesystem. Bytes
 * written by a batch whose transaction never committed are unreferenced garbage. */
#define PACK_PREFIX      "pack:"
#define PACK_MAX         (1ull << 30) /* bytes per pack before the next one starts */
#define CHECKPOINT_IDLE  1000         /* WAL frames worth a checkpoint when no job waits */
#define CHECKPOINT_FORCE 16384        /* ...and at this many even when jobs wait (64 MiB) */
#define WSTMT_CACHE      16           /* prepared statements the commit thread keeps */
/* The sidecar (.map) of an upload: MAP_MAGIC, then per block 8 bytes, 0 until the block is
 * received, then block_hash() of its bytes. Older sidecars (a byte per block) cannot be
 * checked: their blocks are asked for again. */
#define MAP_MAGIC        "STEPMAP2"
#define MAP_HDR          8

enum { UP_OPEN = 0, UP_COMMITTING, UP_DEAD };
enum { JOB_ROW = 0, JOB_COMMIT, JOB_DROP, JOB_OBJ_DELETE, JOB_DATA_SAVE, JOB_DATA_DELETE, JOB_NOP };

/* Prepared statements of one connection, prepared on first use and then reused: a batch
 * of a few hundred small objects would otherwise spend much of its time in the SQL parser. */
struct stmt_cache {
	sqlite3 *db;
	struct {
		const char *sql; /* a string literal: the cache is keyed by its address */
		sqlite3_stmt *st;
	} e[WSTMT_CACHE];
};

struct store_upload {
	uint8_t id[HASH_SHA256_LEN]; /* SHA-256(user NUL key) */
	char stem[65];               /* hex of id */
	char gen[17];                /* random generation: file names differ per upload; also
	                              * the upload_id clients may name on UPLOAD */
	char want_md5[33];           /* MD5 declared at SAVE ("": none): the commit must match */
	int replace;                 /* SAVE "replace": the commit swaps out the key's object */
	char *user, *key;            /* owned; key is keylen bytes (+NUL) */
	size_t keylen;
	uint64_t size;       /* bytes */
	uint32_t block_size; /* bytes */
	uint64_t total;      /* blocks */
	int fd, mapfd;       /* temp object and sidecar; -1 until opened */
	int inl;             /* inline (one block, <= INLINE_MAX): no files, kept in mem */
	uint8_t *mem;        /* inline: the block once received (size bytes), owned */
	char mem_md5[33];    /* inline: MD5 (hex) of mem */
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
	unsigned pack_no;       /* the pack inline commits append to (commit thread) */
	uint64_t pack_end;      /* its size: where the next batch goes */
	int pack_dirty;         /* written since the last sync (commit thread) */
	uint64_t pack_wrote[2]; /* offset and length the last batch wrote (commit thread) */
	uint64_t pack_max;      /* PACK_MAX, or STEP_PACK_MAX (tests) */
	pthread_mutex_t mu;
	pthread_cond_t wcond; /* writers reached 0 */
	struct store_upload *map[MAP_BUCKETS];
	sqlite3 *rdb; /* readers, under rlock */
	pthread_mutex_t rlock;
	struct stmt_cache rstmt; /* rdb's statements, under rlock */
	sqlite3 *wdb;            /* commit thread only */
	struct stmt_cache wstmt; /* wdb's statements */
	int wal_frames;          /* frames in the WAL after wdb's last commit */
	pthread_mutex_t qmu;
	pthread_cond_t qcond;
	struct store_job *qhead, *qtail;
	int stop;
	pthread_t thread;
	int thread_started;
	/* Fault hook (tests): fail the n-th block pwrite / commit sync (alloc: a global). */
	long fault_write, fault_fsync, fault_dirsync;
	int fault_errno;
	long nwrite, nfsync; /* counted under mu / by the commit thread */
	long ndirsync;       /* commit thread */
};

long store_fault_alloc_at;
static long fault_nalloc; /* allocations counted so far (atomic: every worker counts) */

int
store_fault_alloc_hit(void)
{
	if (__atomic_add_fetch(&fault_nalloc, 1, __ATOMIC_RELAXED) != store_fault_alloc_at)
		return 0;
	log_warnx("test fault hook: allocation %ld fails", store_fault_alloc_at);
	return 1;
}

/* The cached statement for sql (a string literal); NULL when it cannot be prepared. The
 * caller holds the connection's lock and gives it back with stmt_done(). */
static sqlite3_stmt *
stmt_get(struct stmt_cache *c, const char *sql)
{
	size_t i;

	for (i = 0; i < WSTMT_CACHE && c->e[i].sql != NULL; i++)
		if (c->e[i].sql == sql)
			return c->e[i].st;
	if (i == WSTMT_CACHE) {
		assert(!"WSTMT_CACHE too small");
		return NULL;
	}
	if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->e[i].st, NULL) !=
	    SQLITE_OK) {
		sqlite3_finalize(c->e[i].st);
		c->e[i].st = NULL;
		return NULL;
	}
	c->e[i].sql = sql;
	return c->e[i].st;
}

static void
stmt_done(sqlite3_stmt *st)
{
	if (st == NULL)
		return;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static void
stmt_cache_release(struct stmt_cache *c)
{
	size_t i;

	for (i = 0; i < WSTMT_CACHE; i++)
		sqlite3_finalize(c->e[i].st);
	memset(c, 0, sizeof(*c));
}

static int
err_from_errno(int e)
{
	return (e == ENOSPC || e == EDQUOT) ? STEP_ENOSPC : STEP_EIO;
}

int
store_key_valid(const char *key, size_t keylen)
{
	return keylen > 0 && keylen <= STORE_MAX_KEY && memchr(key, '\0', keylen) == NULL;
}

/* key_id() with a SHA-256 context of the caller's, reset and reused (no allocation). */
static void
key_id_with(struct hash_ctx *c, const char *user, const char *key, size_t keylen,
    uint8_t id[HASH_SHA256_LEN])
{
	hash_update(c, user, strlen(user));
	hash_update(c, "", 1);
	hash_update(c, key, keylen);
	hash_final(c, id);
	hash_reset(c);
}

static void
key_id(const char *user, const char *key, size_t keylen, uint8_t id[HASH_SHA256_LEN])
{
	struct hash_ctx *c = hash_sha256_new();

	if (c == NULL) {
		/* Cannot happen short of OOM; fall back to a one-shot over a bounded copy. */
		memset(id, 0, HASH_SHA256_LEN);
		return;
	}
	key_id_with(c, user, key, keylen, id);
	hash_free(c);
}

void
store_key_name(const char *user, const char *key, size_t keylen, char out[65])
{
	uint8_t id[HASH_SHA256_LEN];

	key_id(user, key, keylen, id);
	hash_to_hex(id, sizeof(id), out);
}

static size_t
bucket_of(const uint8_t *id)
{
	return ((size_t)id[0] << 8 | id[1]) % MAP_BUCKETS;
}

/* Under mu. */
static struct store_upload *
map_find(struct store *s, const uint8_t *id)
{
	struct store_upload *u;

	for (u = s->map[bucket_of(id)]; u != NULL; u = u->hnext)
		if (memcmp(u->id, id, HASH_SHA256_LEN) == 0)
			return u;
	return NULL;
}

static void ucount_add(struct store *s, const char *user, int d);

/* Under mu; the map keeps its reference until the caller drops it. */
static void
map_remove(struct store *s, struct store_upload *u)
{
	struct store_upload **pp;

	for (pp = &s->map[bucket_of(u->id)]; *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == u) {
			*pp = u->hnext;
			u->hnext = NULL;
			ucount_add(s, u->user, -1);
			return;
		}
	}
}

static struct ucount **
ucount_slot(struct store *s, const char *user)
{
	uint32_t h = 2166136261u;
	struct ucount **pp;
	const char *p;

	for (p = user; *p != '\0'; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	for (pp = &s->ucount[h % UCOUNT_BUCKETS]; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->user, user) == 0)
			break;
	return pp;
}

/* Uploads of user in the map. Under mu. */
static int
ucount_get(struct store *s, const char *user)
{
	struct ucount *c = *ucount_slot(s, user);

	return c != NULL ? c->n : 0;
}

/* Adds d to user's count (an entry at 0 is freed; no memory: not counted). Under mu. */
static void
ucount_add(struct store *s, const char *user, int d)
{
	struct ucount **pp = ucount_slot(s, user), *c = *pp;

	if (c == NULL) {
		if (d <= 0 || (c = calloc(1, sizeof(*c))) == NULL ||
		    (c->user = strdup(user)) == NULL) {
			free(c);
			return;
		}
		*pp = c;
	}
	c->n += d;
	if (c->n <= 0) {
		*pp = c->next;
		free(c->user);
		free(c);
	}
}

static void
map_insert(struct store *s, struct store_upload *u)
{
	size_t b = bucket_of(u->id);

	ucount_add(s, u->user, 1);
	u->hnext = s->map[b];
	s->map[b] = u;
}

static void
upload_free(struct store_upload *u)
{
	if (u == NULL)
		return;
	if (u->fd >= 0)
		close(u->fd);
	if (u->mapfd >= 0)
		close(u->mapfd);
	bitmap_release(&u->bm);
	hash_free(u->md5);
	if (!u->onebuf) {
		free(u->mem);
		free(u->user);
		free(u->key);
	}
	free(u);
}

static void
upload_unref(struct store *s, struct store_upload *u)
{
	int last;

	pthread_mutex_lock(&s->mu);
	last = --u->refs == 0;
	pthread_mutex_unlock(&s->mu);
	if (last)
		upload_free(u);
}

void
store_upload_put(struct store *s, struct store_upload *u)
{
	if (u != NULL)
		upload_unref(s, u);
}

static void
upload_fname(const struct store_upload *u, const char *ext, char *out, size_t n)
{
	snprintf(out, n, "%s.%s%s", u->stem, u->gen, ext);
}

static struct store_upload *
upload_new(const char *user, const char *key, size_t keylen, uint64_t size, uint32_t bs)
{
	struct store_upload *u;

	if (step_fault_alloc() || (u = calloc(1, sizeof(*u))) == NULL)
		return NULL;
	u->fd = u->mapfd = -1;
	u->size = size;
	u->block_size = bs;
	u->total = (size + bs - 1) / bs;
	u->user = strdup(user);
	u->key = malloc(keylen + 1);
	u->md5 = hash_md5_new();
	if (u->user == NULL || u->key == NULL || u->md5 == NULL ||
	    bitmap_init(&u->bm, u->total) != 0) {
		upload_free(u);
		return NULL;
	}
	memcpy(u->key, key, keylen);
	u->key[keylen] = '\0';
	u->keylen = keylen;
	key_id(user, key, keylen, u->id);
	hash_to_hex(u->id, sizeof(u->id), u->stem);
	u->touched = util_wall_s();
	u->refs = 1; /* the caller's */
	return u;
}

/*
 * Opens the temp object if needed (create: it must not exist yet). The sidecar is opened
 * (created) only with map set: an upload whose blocks all arrived at once never needs it,
 * because nothing is acknowledged before the commit. Under mu.
 */
static int
upload_open_files(struct store *s, struct store_upload *u, int create, int map)
{
	char name[128];
	int fl = O_RDWR | O_NOFOLLOW | O_CLOEXEC;

	if (u->fd < 0) {
		upload_fname(u, ".part", name, sizeof(name));
		if ((u->fd = openat(s->tmpfd, name, fl | (create ? O_CREAT | O_EXCL : 0), 0600)) <
		    0)
			return err_from_errno(errno);
	}
	if (map && u->mapfd < 0) {
		upload_fname(u, ".map", name, sizeof(name));
		if ((u->mapfd = openat(s->tmpfd, name, fl | O_CREAT, 0600)) < 0)
			return err_from_errno(errno);
	}
	return STEP_OK;
}

/* Opens the temp object (ext ".part") or the sidecar (".map", created with its header
 * when missing) for one block's write; the caller closes it. -1 with errno. */
static int
upload_openat(struct store *s, struct store_upload *u, const char *ext, int map)
{
	char name[128];
	int fd, fl = O_RDWR | O_NOFOLLOW | O_CLOEXEC;

	upload_fname(u, ext, name, sizeof(name));
	if (!map)
		return openat(s->tmpfd, name, fl);
	if ((fd = openat(s->tmpfd, name, fl | O_CREAT | O_EXCL, 0600)) >= 0) {
		if (pwrite(fd, MAP_MAGIC, MAP_HDR, 0) != MAP_HDR) {
			close(fd);
			return -1;
		}
		return fd;
	}
	return errno == EEXIST ? openat(s->tmpfd, name, fl) : -1;
}

static void
upload_unlink_files(struct store *s, struct store_upload *u)
{
	char name[128];

	if (u->inl)
		return;
	upload_fname(u, ".part", name, sizeof(name));
	unlinkat(s->tmpfd, name, 0);
	upload_fname(u, ".map", name, sizeof(name));
	unlinkat(s->tmpfd, name, 0);
}

/* ---- commit queue ---- */

static struct store_job *
job_new(int kind)
{
	struct store_job *j;

	if (step_fault_alloc())
		return NULL;
	if ((j = calloc(1, sizeof(*j))) != NULL)
		j->kind = kind;
	return j;
}

static void
job_free(struct store_job *j)
{
	if (j == NULL || j->embedded)
		return;
	free(j->user);
	free(j->key);
	free(j->json);
	free(j);
}

static void
queue_push(struct store *s, struct store_job *j)
{
	pthread_mutex_lock(&s->qmu);
	j->next = NULL;
	if (s->qtail != NULL)
		s->qtail->next = j;
	else
		s->qhead = j;
	s->qtail = j;
	pthread_cond_signal(&s->qcond);
	pthread_mutex_unlock(&s->qmu);
}

/* Queues a job that holds a new reference to u. Under mu. On allocation failure the
 * job is skipped: only metadata bookkeeping (ROW/DROP) is ever lost that way. */
static int
queue_upload_job(struct store *s, int kind, struct store_upload *u)
{
	struct store_job *j = job_new(kind);

	if (j == NULL)
		return STEP_ENOMEM;
	u->refs++;
	j->u = u;
	queue_push(s, j);
	return STEP_OK;
}

static int
fault_hit(long *counter, long at, const char *what)
{
	if (at <= 0 || ++*counter != at)
		return 0;
	log_warnx("test fault hook: %s %ld fails", what, at);
	return 1;
}

/*
 * 1 when writing len more bytes would eat into the space kept free for the metadata
 * database. Without that reserve a full disk also fails SQLite's transactions, and then
 * not even a DELETE can free space again.
 */
static int
space_low(int dirfd, size_t len)
{
	struct statvfs v;

	if (fstatvfs(dirfd, &v) != 0)
		return 0;
	return (uint64_t)v.f_bavail * v.f_frsize < (uint64_t)len + SPACE_RESERVE;
}

/* Writes iov[0..cnt) at off, however many calls it takes; 0, or -1 with errno. */
static int
pwritev_all(int fd, struct iovec *iov, int cnt, off_t off)
{
	for (;;) {
		ssize_t n;

		while (cnt > 0 && iov->iov_len == 0) { /* nothing to write there */
			iov++;
			cnt--;
		}
		if (cnt == 0)
			break;
		n = pwritev(fd, iov, cnt > IOV_MAX ? IOV_MAX : cnt, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = ENOSPC; /* nothing written and no error: no room */
			return -1;
		}
		off += n;
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* pwrite() of all len bytes: a short write (a disk that just filled up) is continued, so
 * the error that ends it is the real one (ENOSPC), not a guess. */
static ssize_t
pwrite_all(int fd, const uint8_t *data, size_t len, off_t off)
{
	struct iovec v = { (void *)data, len };

	return pwritev_all(fd, &v, 1, off) == 0 ? (ssize_t)len : -1;
}

/* Reads exactly len bytes at off; STEP_OK, or STEP_EIO (an error or end of file). */
static int
pread_all(int fd, uint8_t *dst, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, dst + done, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return STEP_EIO;
		done += (size_t)n;
	}
	return STEP_OK;
}

/* ---- packs ---- */

/* The fd of pack n, opened (created when create is set) on first use; -1 with errno. */
static int
pack_fd(struct store *s, unsigned n, int create)
{
	char name[32];
	int fd = -1, created = 0;

	pthread_mutex_lock(&s->pmu);
	if (n < s->npackfd && s->packfd[n] >= 0) {
		fd = s->packfd[n];
		goto out;
	}
	if (n >= s->npackfd) {
		unsigned want = n + 16, i;
		int *grown = realloc(s->packfd, want * sizeof(*grown));

		if (grown == NULL) {
			errno = ENOMEM;
			goto out;
		}
		for (i = s->npackfd; i < want; i++)
			grown[i] = -1;
		s->packfd = grown;
		s->npackfd = want;
	}
	snprintf(name, sizeof(name), "%08u.pack", n);
	fd = openat(s->packdir, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		fd = openat(
		    s->packdir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		created = fd >= 0;
	}
	if (fd >= 0)
		s->packfd[n] = fd;
out:
	pthread_mutex_unlock(&s->pmu);
	if (created && fsync(s->packdir) != 0) /* the new name must survive a crash */
		log_warn("pack: directory fsync");
	return fd;
}

/* Parses "pack:<n>:<off>"; 1 when file names a pack range. */
static int
pack_parse(const char *file, unsigned *n, uint64_t *off)
{
	unsigned long long o;
	char tail;

	if (strncmp(file, PACK_PREFIX, strlen(PACK_PREFIX)) != 0)
		return 0;
	return sscanf(file + strlen(PACK_PREFIX), "%u:%llu%c", n, &o, &tail) == 2 &&
	    ((*off = o), 1);
}

/* "pack:<n>:<off>", what pack_parse reads (snprintf's text, without its cost per object). */
static void
pack_name(char out[160], unsigned n, uint64_t off)
{
	char *p = out;

	memcpy(p, PACK_PREFIX, sizeof(PACK_PREFIX) - 1);
	p = util_put_u64(p + sizeof(PACK_PREFIX) - 1, n);
	*p++ = ':';
	p = util_put_u64(p, off);
	*p = '\0';
}

/*
 * Appends the bytes of the batch's inline commits to the current pack (the next one when it
 * would grow past PACK_MAX) and names each job's range in j->file. On failure those jobs
 * get the error and the pack is cut back to where it was: nothing references the range.
 */
static void
pack_write_batch(struct store *s, struct store_job *batch)
{
	struct store_job *j;
	struct iovec *iov;
	uint64_t total = 0, off;
	int cnt = 0, fd, e = 0;

	for (j = batch; j != NULL; j = j->next)
		if (j->kind == JOB_COMMIT && j->err == 0 && j->u->inl) {
			total += j->u->size;
			cnt++;
		}
	if (cnt == 0)
		return;
	if (s->pack_end > 0 && s->pack_end + total > s->pack_max) {
		s->pack_no++;
		s->pack_end = 0;
	}
	if ((iov = calloc((size_t)cnt, sizeof(*iov))) == NULL)
		e = STEP_ENOMEM;
	else if ((fd = pack_fd(s, s->pack_no, 1)) < 0)
		e = err_from_errno(errno);
	if (e == 0) {
		cnt = 0;
		off = s->pack_end;
		for (j = batch; j != NULL; j = j->next) {
			if (j->kind != JOB_COMMIT || j->err != 0 || !j->u->inl)
				continue;
			iov[cnt].iov_base = j->u->mem;
			iov[cnt++].iov_len = j->u->size;
			pack_name(j->file, s->pack_no, off);
			off += j->u->size;
		}
		if (pwritev_all(fd, iov, cnt, (off_t)s->pack_end) != 0) {
			e = err_from_errno(errno);
			log_warn("pack %u: write", s->pack_no);
			if (ftruncate(fd, (off_t)s->pack_end) != 0)
				log_warn("pack %u: truncate", s->pack_no);
		} else {
			s->pack_wrote[0] = s->pack_end;
			s->pack_wrote[1] = off - s->pack_end;
			s->pack_end = off;
			s->pack_dirty = 1;
		}
	}
	free(iov);
	if (e != 0)
		for (j = batch; j != NULL; j = j->next)
			if (j->kind == JOB_COMMIT && j->err == 0 && j->u->inl)
				j->err = e;
}

/* Gives a deleted (or never committed) pack range back to the filesystem. */
static void
pack_punch(struct store *s, const char *file, uint64_t len)
{
	uint64_t off;
	unsigned n;
	int fd;

	if (len == 0 || !pack_parse(file, &n, &off) || (fd = pack_fd(s, n, 0)) < 0)
		return;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) !=
	        0 &&
	    errno != EOPNOTSUPP)
		log_warn("pack %u: cannot free %llu bytes at %llu", n, (unsigned long long)len,
		    (unsigned long long)off);
}

/* Reads len bytes at off of the pack object o; 0, STEP_EIO. */
static int
pack_read(struct store *s, const struct store_obj *o, uint64_t off, uint8_t *dst, size_t len)
{
	uint64_t base;
	unsigned n;
	int fd;

	if (!pack_parse(o->file, &n, &base) || off > o->size || len > o->size - off ||
	    (fd = pack_fd(s, n, 0)) < 0)
		return STEP_EIO;
	return pread_all(fd, dst, len, (off_t)(base + off));
}

/* Finds the newest pack and its size (where appending goes on). 0, or -1 with errno. */
static int
pack_open_last(struct store *s)
{
	DIR *d;
	struct dirent *e;
	struct stat sb;
	int fd = dup(s->packdir);

	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	s->pack_no = 1;
	while ((e = readdir(d)) != NULL) {
		unsigned n;
		char tail;

		if (strlen(e->d_name) == 13 && sscanf(e->d_name, "%8u.pac%c", &n, &tail) == 2 &&
		    tail == 'k' && n > s->pack_no)
			s->pack_no = n;
	}
	closedir(d);
	if ((fd = pack_fd(s, s->pack_no, 1)) < 0 || fstat(fd, &sb) != 0)
		return -1;
	s->pack_end = (uint64_t)sb.st_size;
	return 0;
}

/* ---- SAVE / UPLOAD ---- */

/* object_exists() with rlock held. */
static int
object_exists_locked(struct store *s, const char *user, const char *key, size_t keylen, int data)
{
	static const char q_data[] = "SELECT 1 FROM data WHERE user = ?1 AND key = ?2";
	static const char q_obj[] = "SELECT 1 FROM objects WHERE user = ?1 AND key = ?2";
	sqlite3_stmt *st;
	int r;

	if ((st = stmt_get(&s->rstmt, data ? q_data : q_obj)) == NULL)
		return STEP_EIO;
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, (int)keylen, SQLITE_STATIC);
	switch (sqlite3_step(st)) {
	case SQLITE_ROW:
		r = 1;
		break;
	case SQLITE_DONE:
		r = 0;
		break;
	default:
		r = STEP_EIO;
	}
	stmt_done(st);
	return r;
}

static int
object_exists(struct store *s, const char *user, const char *key, size_t keylen, int data)
{
	int r;

	pthread_mutex_lock(&s->rlock);
	r = object_exists_locked(s, user, key, keylen, data);
	pthread_mutex_unlock(&s->rlock);
	return r;
}

/*
 * Runs the cached statement sql (BEGIN / COMMIT / ROLLBACK) on the reader connection, under
 * rlock; 0 or STEP_EIO. Lookups between BEGIN and COMMIT share one read transaction: one
 * snapshot, and the connection's page cache survives from one lookup to the next, where
 * each autocommit lookup after a commit of the writer starts with an empty cache and
 * reads its B-tree pages again.
 */
static int
rdb_exec(struct store *s, const char *sql)
{
	sqlite3_stmt *st = stmt_get(&s->rstmt, sql);
	int r = st != NULL && sqlite3_step(st) == SQLITE_DONE ? STEP_OK : STEP_EIO;

	stmt_done(st);
	return r;
}

static int
plan_fill(struct store_upload *u, struct store_plan *plan)
{
	size_t n;

	memset(plan, 0, sizeof(*plan));
	plan->size = u->size;
	plan->block_size = u->block_size;
	plan->total_block = u->total;
	n = bitmap_ranges(&u->bm, NULL, 0);
	if (n == 0)
		return STEP_OK;
	if (n > STORE_MAX_RANGES) {
		plan->ranges_cut = 1;
		n = STORE_MAX_RANGES;
	}
	if (step_fault_alloc() || (plan->ranges = calloc(n, sizeof(*plan->ranges))) == NULL)
		return STEP_ENOMEM;
	plan->nranges = n;
	bitmap_ranges(&u->bm, plan->ranges, n);
	return STEP_OK;
}

int
store_file_save(struct store *s, const char *user, const char *key, size_t keylen, uint64_t size,
    struct store_plan *plan, struct store_waiter *w)
{
	return store_file_save_bs(s, user, key, keylen, size, 0, plan, w);
}

void
store_set_max_block_size(struct store *s, uint32_t max)
{
	s->max_block = max;
}

void
store_set_max_uploads(struct store *s, int max)
{
	s->max_uploads = max;
}

int
store_file_save_bs(struct store *s, const char *user, const char *key, size_t keylen, uint64_t size,
    uint32_t want_bs, struct store_plan *plan, struct store_waiter *w)
{
	return store_file_save_ex(s, user, key, keylen, size, want_bs, NULL, NULL, plan, w);
}

/*
 * What a SAVE of key does to the upload old already in progress: 1 resume it, 0 start over,
 * STORE_LOCKED refuse. A SAVE that declares the file's MD5 resumes only an upload declared
 * with the same MD5 and size (the same content, whoever sent it); otherwise it starts over
 * when it names the upload (upload_id: the client's own upload, whose file has changed)
 * or the upload has been idle for STORE_TAKEOVER_S, and is refused while someone else's
 * upload is active. A SAVE without one (a client that
 * does not know the extension) keeps the reference's behaviour: the same size resumes,
 * another size starts over; a declared MD5 still keeps a mix from being committed.
 */
static int
save_claim(const struct store_upload *old, uint64_t size, const char *upload_id, const char *md5)
{
	if (md5 == NULL)
		return old->size == size && size > 0 ? 1 : 0;
	if (old->want_md5[0] != '\0' && strcmp(old->want_md5, md5) == 0 && old->size == size &&
	    size > 0)
		return 1;
	if ((upload_id != NULL && strcmp(old->gen, upload_id) == 0) ||
	    util_wall_s() - old->touched >= STORE_TAKEOVER_S)
		return 0;
	return STORE_LOCKED;
}

int
store_file_save_ex(struct store *s, const char *user, const char *key, size_t keylen, uint64_t size,
    uint32_t want_bs, const char *upload_id, const char *md5, struct store_plan *plan,
    struct store_waiter *w)
{
	return store_file_save_rep(s, user, key, keylen, size, want_bs, upload_id, md5, 0, plan, w);
}

/*
 * The key of the upload old already in progress has a complete object too (a replacing
 * upload): a SAVE without "replace" finds the key existing. 1 (refuse: STEP_EEXIST), 0, or
 * STEP_EIO.
 */
static int
save_exists(struct store *s, const struct store_upload *old, const char *user, const char *key,
    size_t keylen, int replace)
{
	if (replace || !old->replace)
		return 0;
	return object_exists(s, user, key, keylen, 0);
}

int
store_file_save_rep(struct store *s, const char *user, const char *key, size_t keylen,
    uint64_t size, uint32_t want_bs, const char *upload_id, const char *md5, int replace,
    struct store_plan *plan, struct store_waiter *w)
{
	struct store_upload *u = NULL, *old;
	struct store_job *cj = NULL;
	uint8_t id[HASH_SHA256_LEN];
	uint32_t bs = s->o.block_size, max = s->max_block ? s->max_block : STORE_BIG_BLOCK_MAX;
	int r;

	if (want_bs > bs && max > bs)
		bs = want_bs < max ? want_bs : max;
	if (size > s->o.max_object_size || (size + bs - 1) / bs > MAX_TOTAL_BLOCK)
		return STEP_ETOOBIG;
	key_id(user, key, keylen, id);
	pthread_mutex_lock(&s->mu);
	if ((old = map_find(s, id)) != NULL) {
		if (old->state == UP_COMMITTING) {
			r = replace ? STORE_LOCKED : STEP_EEXIST;
			goto out;
		}
		if ((r = save_exists(s, old, user, key, keylen, replace)) != 0) {
			r = r > 0 ? STEP_EEXIST : r;
			goto out;
		}
		if ((r = save_claim(old, size, upload_id, md5)) == STORE_LOCKED)
			goto out;
		if (r == 1) {
			/* Resume extension: keep the received blocks. */
			old->touched = util_wall_s();
			old->replace |= replace;
			r = plan_fill(old, plan);
			memcpy(plan->upload_id, old->gen, sizeof(plan->upload_id));
			goto out;
		}
		/* A different size starts over (as the reference does for any SAVE). */
		old->state = UP_DEAD;
		map_remove(s, old);
		if (queue_upload_job(s, JOB_DROP, old) != 0)
			upload_unlink_files(s, old);
		old->refs--; /* the map's reference; the DROP job holds its own */
	} else {
		r = replace ? 0 : object_exists(s, user, key, keylen, 0);
		if (r != 0) {
			r = r > 0 ? STEP_EEXIST : r;
			goto out;
		}
		if (s->max_uploads > 0 && ucount_get(s, user) >= s->max_uploads) {
			r = STEP_EBUSY;
			goto out;
		}
	}
	/* An empty upload commits at once: its commit job is allocated before anything
	 * changes, so an allocation failure cannot leave it committing with nobody to
	 * finish it. */
	if ((u = upload_new(user, key, keylen, size, bs)) == NULL ||
	    (size == 0 && (cj = job_new(JOB_COMMIT)) == NULL)) {
		r = STEP_ENOMEM;
		goto out;
	}
	/* An inline upload has neither files nor an uploads row: its one block is held in
	 * memory from its UPLOAD to its commit, and a restart simply forgets the plan (the
	 * client sends the block again). */
	u->inl = size > 0 && size <= INLINE_MAX && u->total == 1;
	if (md5 != NULL)
		snprintf(u->want_md5, sizeof(u->want_md5), "%s", md5);
	u->replace = replace;
	if (hash_random(id, 8) != 0) {
		r = STEP_EIO;
		goto out;
	}
	hash_to_hex(id, 8, u->gen);
	if (!u->inl) {
		/* The temp file is created now and opened again when a block arrives: an
		 * upload in progress holds no descriptor. */
		if ((r = upload_open_files(s, u, 1, 0)) != 0) {
			upload_unlink_files(s, u);
			goto out;
		}
		close(u->fd);
		u->fd = -1;
	}
	map_insert(s, u); /* the caller's reference becomes the map's */
	if (!u->inl)
		queue_upload_job(s, JOB_ROW, u);
	if (size == 0) {
		u->state = UP_COMMITTING;
		w->next = NULL;
		u->waiters = w;
		u->refs++;
		cj->u = u;
		queue_push(s, cj);
		cj = NULL;
		memset(plan, 0, sizeof(*plan));
		plan->block_size = u->block_size;
		u = NULL;
		r = STORE_PENDING;
		goto out;
	}
	r = plan_fill(u, plan);
	memcpy(plan->upload_id, u->gen, sizeof(plan->upload_id));
	u = NULL;
out:
	pthread_mutex_unlock(&s->mu);
	upload_free(u);
	job_free(cj);
	return r;
}

int
store_upload_get(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_upload **up)
{
	uint8_t id[HASH_SHA256_LEN];
	struct store_upload *u;
	int r;

	key_id(user, key, keylen, id);
	pthread_mutex_lock(&s->mu);
	if ((u = map_find(s, id)) != NULL) {
		u->refs++;
		*up = u;
		r = STEP_OK;
	} else {
		r = object_exists(s, user, key, keylen, 0);
		r = r > 0 ? STEP_EEXIST : r == 0 ? STEP_ENOENT : r;
	}
	pthread_mutex_unlock(&s->mu);
	return r;
}

int
store_upload_is(const struct store_upload *u, const char *upload_id)
{
	return strcmp(u->gen, upload_id) == 0;
}

void
store_upload_plan(
    const struct store_upload *u, uint64_t *size, uint32_t *block_size, uint64_t *total_block)
{
	*size = u->size;
	*block_size = u->block_size;
	*total_block = u->total;
}

/* Where block index's record is in the sidecar. */
static off_t
map_off(uint64_t index)
{
	return (off_t)(MAP_HDR + index * 8);
}

/*
 * A 64-bit hash of a block, never 0 (0 marks a block not received). Not cryptographic: it
 * tells the bytes that were acknowledged from what a power loss left in their place (zeros,
 * stale data); whoever could forge it could as well send other bytes.
 */
static uint64_t
block_hash(const uint8_t *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)n, w;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	for (; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 32;
	return h | 1;
}

/* Hashes blocks [next_hashed, ...) that are present, reading them back through fd (the
 * temp object). Under mu. */
static int
upload_catch_up(struct store_upload *u, int fd, uint64_t max_blocks)
{
	uint8_t *tmp = NULL;
	uint64_t n = 0;
	int r = STEP_OK;

	while (u->next_hashed < u->total && bitmap_test(&u->bm, u->next_hashed) && n < max_blocks) {
		uint64_t off = u->next_hashed * u->block_size;
		size_t len =
		    (size_t)(u->size - off < u->block_size ? u->size - off : u->block_size);
		ssize_t got;

		if (tmp == NULL && (tmp = malloc(u->block_size)) == NULL)
			return STEP_ENOMEM;
		got = pread(fd, tmp, len, (off_t)off);
		if (got != (ssize_t)len) {
			r = STEP_EIO;
			break;
		}
		hash_update(u->md5, tmp, len);
		u->next_hashed++;
		n++;
	}
	free(tmp);
	return r;
}

/*
 * Keeps the one block of an inline upload and queues its commit. The copy and its MD5 are
 * made before taking mu (u->inl never changes), so the lock every request and the commit
 * thread share is held only for the bookkeeping; a block sent twice at once costs one
 * wasted copy. Returns 0 (a repeat), STORE_PENDING (w is answered by the commit),
 * STEP_ENOENT (the upload is gone), STEP_ENOSPC or STEP_EIO (fault hook), STEP_ENOMEM; on
 * failure nothing changed.
 */
static int
inline_write(struct store *s, struct store_upload *u, const uint8_t *data, size_t len,
    struct store_waiter *w)
{
	struct store_job *cj = NULL;
	uint8_t *mem = NULL;
	char md5[33];
	int r, low;

	if ((cj = job_new(JOB_COMMIT)) == NULL || (mem = malloc(len)) == NULL) {
		job_free(cj);
		return STEP_ENOMEM;
	}
	memcpy(mem, data, len);
	hash_md5_hex(mem, len, md5);
	low = space_low(s->tmpfd, len); /* the blob goes to SQLite: the same reserve */
	pthread_mutex_lock(&s->mu);
	if (u->state == UP_DEAD) {
		r = STEP_ENOENT;
		goto out;
	}
	if (u->state == UP_COMMITTING) {
		/* A repeated block during the commit: answer when it is durable. */
		w->next = u->waiters;
		u->waiters = w;
		r = STORE_PENDING;
		goto out;
	}
	if (bitmap_test(&u->bm, 0)) {
		r = STEP_OK;
		goto out;
	}
	if (fault_hit(&s->nwrite, s->fault_write, "block write")) {
		r = err_from_errno(s->fault_errno);
		goto out;
	}
	if (low) {
		r = STEP_ENOSPC;
		goto out;
	}
	u->mem = mem;
	mem = NULL;
	memcpy(u->mem_md5, md5, sizeof(md5));
	bitmap_set(&u->bm, 0);
	u->next_hashed = 1;
	u->touched = util_wall_s();
	u->state = UP_COMMITTING;
	w->next = u->waiters;
	u->waiters = w;
	u->refs++;
	cj->u = u;
	queue_push(s, cj);
	cj = NULL;
	r = STORE_PENDING;
out:
	pthread_mutex_unlock(&s->mu);
	job_free(cj);
	free(mem);
	return r;
}

int
store_upload_write(struct store *s, struct store_upload *u, uint64_t index, const uint8_t *data,
    size_t len, struct store_waiter *w)
{
	struct store_job *cj = NULL;
	int fd = -1, mapfd = -1, r, fail = 0, need_map;
	uint64_t wb_off = 0, wb_len = 0, dr_off = 0, dr_len = 0;
	ssize_t n;

	if (u->inl)
		return inline_write(s, u, data, len, w);
	pthread_mutex_lock(&s->mu);
	if (u->state == UP_DEAD) {
		pthread_mutex_unlock(&s->mu);
		return STEP_ENOENT;
	}
	if (u->state == UP_COMMITTING) {
		/* A repeated block during the commit: answer when it is durable. */
		w->next = u->waiters;
		u->waiters = w;
		pthread_mutex_unlock(&s->mu);
		return STORE_PENDING;
	}
	if (bitmap_test(&u->bm, index)) {
		u->touched = util_wall_s();
		pthread_mutex_unlock(&s->mu);
		return STEP_OK;
	}
	/* The sidecar records blocks of an upload that stays incomplete after this one. */
	need_map = u->bm.count + 1 < u->total;
	u->writers++;
	if (fault_hit(&s->nwrite, s->fault_write, "block write"))
		fail = s->fault_errno;
	pthread_mutex_unlock(&s->mu);

	/* The files are opened for this block only: an upload in progress holds no
	 * descriptor between its blocks. */
	if (fail) {
		errno = fail;
		n = -1;
	} else if ((fd = upload_openat(s, u, ".part", 0)) < 0 ||
	    (need_map && (mapfd = upload_openat(s, u, ".map", 1)) < 0)) {
		n = -1;
	} else if (space_low(s->tmpfd, len)) {
		errno = ENOSPC;
		n = -1;
	} else {
		n = pwrite_all(fd, data, len, (off_t)(index * u->block_size));
	}
	if (n == (ssize_t)len) {
		/* The block's hash, not a mere flag: after a power loss the map may outlive the
		 * bytes, and a restart re-checks every block against it (load_upload). */
		uint64_t h = block_hash(data, len);

		if (mapfd >= 0 && pwrite(mapfd, &h, sizeof(h), map_off(index)) != sizeof(h))
			n = -1;
	} else if (n >= 0) {
		errno = EIO;
		n = -1;
	}
	r = n < 0 ? err_from_errno(errno) : STEP_OK;
	if (mapfd >= 0)
		close(mapfd);

	pthread_mutex_lock(&s->mu);
	if (--u->writers == 0)
		pthread_cond_broadcast(&s->wcond);
	if (r != 0 || u->state == UP_DEAD) {
		pthread_mutex_unlock(&s->mu);
		r = r != 0 ? r : STEP_ENOENT;
		goto out;
	}
	if (u->state == UP_COMMITTING) {
		/* Another connection wrote the same block and completed the set. */
		w->next = u->waiters;
		u->waiters = w;
		pthread_mutex_unlock(&s->mu);
		r = STORE_PENDING;
		goto out;
	}
	if (bitmap_test(&u->bm, index)) {
		pthread_mutex_unlock(&s->mu);
		r = STEP_OK;
		goto out;
	}
	/* The block that completes the set needs its commit job: allocated before the bit is
	 * set, so that on failure the block is simply not received (the client sends it
	 * again) instead of an upload that is complete but never committed. */
	if (u->bm.count + 1 == u->total && (cj = job_new(JOB_COMMIT)) == NULL) {
		pthread_mutex_unlock(&s->mu);
		r = STEP_ENOMEM;
		goto out;
	}
	bitmap_set(&u->bm, index);
	u->touched = util_wall_s();
	if (index == u->next_hashed) {
		hash_update(u->md5, data, len);
		u->next_hashed++;
	}
	upload_catch_up(u, fd, CATCHUP_BLOCKS);
	if (!bitmap_full(&u->bm) &&
	    u->next_hashed * u->block_size >= u->flushed + WRITEBACK_BYTES) {
		/* Start writeback of the contiguous prefix now, so the commit's sync finds little
		 * left to write. SYNC_FILE_RANGE_WRITE only queues the I/O. */
		wb_off = u->flushed;
		wb_len = u->next_hashed * u->block_size - u->flushed;
		u->flushed += wb_len;
		/* Drop-behind: the range before the last one is hashed and (almost surely)
		 * written back by now; drop it from the page cache. An upload then cycles through
		 * a few warm MiB of cache instead of claiming fresh pages for every byte — on a
		 * VM, first touching a page costs several times the copy into it — and a backup
		 * does not push hotter data out of the cache. */
		dr_off = u->dropped;
		dr_len = u->wb_last - u->dropped;
		u->dropped = u->wb_last;
		u->wb_last = wb_off;
	}
	if (bitmap_full(&u->bm)) {
		u->state = UP_COMMITTING;
		w->next = u->waiters;
		u->waiters = w;
		u->refs++;
		cj->u = u;
		queue_push(s, cj);
		pthread_mutex_unlock(&s->mu);
		r = STORE_PENDING;
		goto out;
	}
	pthread_mutex_unlock(&s->mu);
	if (wb_len > 0 &&
	    sync_file_range(fd, (off_t)wb_off, (off_t)wb_len, SYNC_FILE_RANGE_WRITE) != 0)
		log_debug("sync_file_range: %s", strerror(errno));
	/* Pages still dirty or under writeback are skipped: this never waits for the disk,
	 * and the commit's fdatasync still makes everything durable. */
	if (dr_len > 0)
		posix_fadvise(fd, (off_t)dr_off, (off_t)dr_len, POSIX_FADV_DONTNEED);
	r = STEP_OK;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

/* ---- GET / DOWNLOAD / DELETE ---- */

/* ---- PUTMANY ---- */

/*
 * A committing inline upload for one PUTMANY item with its commit job, in one allocation,
 * or NULL (ENOMEM). kc: a SHA-256 context for the key id, or NULL.
 */
static struct put_obj *
put_obj_new(struct store *s, const char *user, size_t ulen, const struct store_put_item *it,
    struct hash_ctx *kc)
{
	struct put_obj *po;
	struct store_upload *u;

	if (step_fault_alloc() ||
	    (po = malloc(sizeof(*po) + ulen + 1 + it->keylen + 1 + it->len)) == NULL)
		return NULL;
	memset(po, 0, sizeof(*po));
	u = &po->u;
	u->fd = u->mapfd = -1;
	u->size = it->len;
	u->block_size = s->o.block_size;
	u->total = 1;
	u->inl = 1;
	u->onebuf = 1;
	u->user = po->buf;
	memcpy(u->user, user, ulen + 1);
	u->key = u->user + ulen + 1;
	memcpy(u->key, it->key, it->keylen);
	u->key[it->keylen] = '\0';
	u->keylen = it->keylen;
	u->mem = (uint8_t *)u->key + it->keylen + 1;
	memcpy(u->mem, it->data, it->len);
	memcpy(u->mem_md5, it->md5, sizeof(u->mem_md5));
	if (kc != NULL)
		key_id_with(kc, user, it->key, it->keylen, u->id);
	else
		key_id(user, it->key, it->keylen, u->id);
	hash_to_hex(u->id, sizeof(u->id), u->stem);
	u->next_hashed = 1;
	u->touched = util_wall_s();
	u->state = UP_COMMITTING;
	u->refs = 1;
	po->j.kind = JOB_COMMIT;
	po->j.embedded = 1;
	return po;
}

/* Items checked under one hold of mu and one read transaction: bounds how long other
 * requests wait for mu. */
#define PUT_CHUNK 64

void
store_put_many(struct store *s, const char *user, struct store_put_item *items, size_t n)
{
	struct store_job *head = NULL, **tail = &head, *last = NULL;
	struct put_obj *po[PUT_CHUNK];
	struct hash_ctx *kc = hash_sha256_new(); /* NULL: key_id() allocates its own */
	size_t i, c, m, total = 0, ulen = strlen(user);
	int low;

	for (i = 0; i < n; i++)
		total += items[i].len;
	low = space_low(s->tmpfd, total);
	for (c = 0; c < n; c += m) {
		struct store_put_item *chunk = &items[c];
		int rtx;

		m = n - c < PUT_CHUNK ? n - c : PUT_CHUNK;
		/* Allocated before the lock: nothing changes when an allocation fails. */
		for (i = 0; i < m; i++) {
			struct store_put_item *it = &chunk[i];

			po[i] = NULL;
			if (it->len == 0 || it->len > INLINE_MAX)
				it->status = STEP_ETOOBIG;
			else if (low)
				it->status = STEP_ENOSPC;
			else if ((po[i] = put_obj_new(s, user, ulen, it, kc)) == NULL)
				it->status = STEP_ENOMEM;
		}
		pthread_mutex_lock(&s->mu);
		pthread_mutex_lock(&s->rlock);
		rtx = rdb_exec(s, "BEGIN") == 0;
		for (i = 0; i < m; i++) {
			struct store_put_item *it = &chunk[i];
			struct store_upload *u, *old;
			int r;

			if (po[i] == NULL)
				continue;
			u = &po[i]->u;
			if ((old = map_find(s, u->id)) != NULL)
				r = old->state == UP_COMMITTING ? STEP_EEXIST : STEP_EBUSY;
			else if ((r = object_exists_locked(s, user, it->key, it->keylen, 0)) > 0)
				r = STEP_EEXIST;
			else if (r == 0 && fault_hit(&s->nwrite, s->fault_write, "block write"))
				r = err_from_errno(s->fault_errno);
			if (r == 0) {
				it->w->next = NULL;
				u->waiters = it->w;
				map_insert(s, u); /* the map's reference */
				u->refs++;        /* the job's */
				po[i]->j.u = u;
				*tail = &po[i]->j;
				tail = &po[i]->j.next;
				last = &po[i]->j;
				po[i] = NULL;
				r = STORE_PENDING;
			}
			it->status = r;
		}
		if (rtx && rdb_exec(s, "COMMIT") != 0 && !sqlite3_get_autocommit(s->rdb))
			rdb_exec(s, "ROLLBACK");
		pthread_mutex_unlock(&s->rlock);
		pthread_mutex_unlock(&s->mu);
		for (i = 0; i < m; i++)
			upload_free(po[i] != NULL ? &po[i]->u : NULL);
	}
	hash_free(kc);
	if (head == NULL)
		return;
	/* One hand-over for the whole request: the commit thread takes it as one batch. */
	pthread_mutex_lock(&s->qmu);
	if (s->qtail != NULL)
		s->qtail->next = head;
	else
		s->qhead = head;
	s->qtail = last;
	pthread_cond_signal(&s->qcond);
	pthread_mutex_unlock(&s->qmu);
}

int
store_object_get(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_obj *o)
{
	uint8_t id[HASH_SHA256_LEN];
	struct store_upload *u;
	sqlite3_stmt *st = NULL;
	int r, busy;

	key_id(user, key, keylen, id);
	pthread_mutex_lock(&s->mu);
	/* An upload replacing the key's object leaves the old one readable until it commits. */
	busy = (u = map_find(s, id)) == NULL ? 0 : u->replace ? 1 : 2;
	pthread_mutex_unlock(&s->mu);
	if (busy == 2)
		return STEP_EBUSY;
	pthread_mutex_lock(&s->rlock);
	if ((st = stmt_get(&s->rstmt,
	         "SELECT size, block_size, md5, file FROM objects"
	         " WHERE user = ?1 AND key = ?2")) == NULL) {
		r = STEP_EIO;
		goto out;
	}
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, (int)keylen, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		o->size = (uint64_t)sqlite3_column_int64(st, 0);
		o->block_size = (uint32_t)sqlite3_column_int64(st, 1);
		snprintf(o->md5, sizeof(o->md5), "%s", (const char *)sqlite3_column_text(st, 2));
		snprintf(o->file, sizeof(o->file), "%s", (const char *)sqlite3_column_text(st, 3));
		r = o->block_size > 0 ? STEP_OK : STEP_EIO;
	} else {
		r = r != SQLITE_DONE ? STEP_EIO : busy ? STEP_EBUSY : STEP_ENOENT;
	}
out:
	stmt_done(st);
	pthread_mutex_unlock(&s->rlock);
	return r;
}

/* The rowid of an inline object's name, or 0 when the object is a file of its own. */
static sqlite3_int64
blob_rowid(const char *file)
{
	if (strncmp(file, BLOB_PREFIX, strlen(BLOB_PREFIX)) != 0)
		return 0;
	return strtoll(file + strlen(BLOB_PREFIX), NULL, 10);
}

/* Reads len bytes at off of an inline object; 0, STEP_ENOENT, STEP_EIO. */
static int
blob_read(struct store *s, sqlite3_int64 rowid, uint64_t off, uint8_t *dst, size_t len)
{
	sqlite3_blob *b = NULL;
	int r;

	if (off > INLINE_MAX || len > INLINE_MAX)
		return STEP_EIO;
	pthread_mutex_lock(&s->rlock);
	r = sqlite3_blob_open(s->rdb, "main", "blobs", "data", rowid, 0, &b);
	if (r == SQLITE_OK)
		r = sqlite3_blob_read(b, dst, (int)len, (int)off) == SQLITE_OK ? STEP_OK : STEP_EIO;
	else
		r = r == SQLITE_ERROR ? STEP_ENOENT : STEP_EIO;
	sqlite3_blob_close(b);
	pthread_mutex_unlock(&s->rlock);
	return r;
}

int
store_object_read(
    struct store *s, const struct store_obj *o, uint64_t off, uint8_t *dst, size_t len)
{
	int fd, r;

	if (strncmp(o->file, PACK_PREFIX, strlen(PACK_PREFIX)) == 0)
		return pack_read(s, o, off, dst, len);
	if (blob_rowid(o->file) > 0)
		return blob_read(s, blob_rowid(o->file), off, dst, len);
	if ((fd = openat(s->objfd, o->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return errno == ENOENT ? STEP_ENOENT : STEP_EIO;
	r = pread_all(fd, dst, len, (off_t)off);
	close(fd);
	return r;
}

static int
keyed_job(struct store *s, int kind, const char *user, const char *key, size_t keylen,
    const char *json, struct store_waiter *w)
{
	struct store_job *j = job_new(kind);

	if (j == NULL)
		return STEP_ENOMEM;
	j->user = strdup(user);
	j->key = malloc(keylen + 1);
	j->json = json != NULL ? strdup(json) : NULL;
	if (j->user == NULL || j->key == NULL || (json != NULL && j->json == NULL)) {
		job_free(j);
		return STEP_ENOMEM;
	}
	memcpy(j->key, key, keylen);
	j->key[keylen] = '\0';
	j->keylen = keylen;
	j->w = w;
	queue_push(s, j);
	return STORE_PENDING;
}

int
store_file_delete(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_waiter *w)
{
	uint8_t id[HASH_SHA256_LEN];
	struct store_upload *u;
	int r;

	key_id(user, key, keylen, id);
	pthread_mutex_lock(&s->mu);
	if ((u = map_find(s, id)) != NULL) {
		if (u->state == UP_COMMITTING) {
			pthread_mutex_unlock(&s->mu);
			return STEP_EBUSY;
		}
		int rep = u->replace;

		u->state = UP_DEAD;
		map_remove(s, u);
		if (queue_upload_job(s, JOB_DROP, u) != 0)
			upload_unlink_files(s, u);
		u->refs--; /* the map's; the job holds its own (or the last one is ours below) */
		if (u->refs == 0)
			upload_free(u);
		/* A replacing upload is dropped and the object it would have replaced is
		 * deleted as well: the key is gone either way. */
		r = rep ? object_exists(s, user, key, keylen, 0) : 0;
		pthread_mutex_unlock(&s->mu);
		if (r <= 0)
			return r == 0 ? STORE_TMP_DELETED : r;
		return keyed_job(s, JOB_OBJ_DELETE, user, key, keylen, NULL, w);
	}
	r = object_exists(s, user, key, keylen, 0);
	pthread_mutex_unlock(&s->mu);
	if (r <= 0)
		return r == 0 ? STEP_ENOENT : r;
	return keyed_job(s, JOB_OBJ_DELETE, user, key, keylen, NULL, w);
}

/* ---- DATA ---- */

int
store_data_get(struct store *s, const char *user, const char *key, size_t keylen, char **json)
{
	sqlite3_stmt *st = NULL;
	int r;

	pthread_mutex_lock(&s->rlock);
	if (sqlite3_prepare_v2(s->rdb, "SELECT json FROM data WHERE user = ?1 AND key = ?2", -1,
	        &st, NULL) != SQLITE_OK) {
		r = STEP_EIO;
		goto out;
	}
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, (int)keylen, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		char *copy = strdup((const char *)sqlite3_column_text(st, 0));

		r = copy != NULL ? STEP_OK : STEP_ENOMEM;
		if (copy != NULL)
			*json = copy;
	} else {
		r = r == SQLITE_DONE ? STEP_ENOENT : STEP_EIO;
	}
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->rlock);
	return r;
}

int
store_data_save(struct store *s, const char *user, const char *key, size_t keylen, const char *json,
    struct store_waiter *w)
{
	int r = object_exists(s, user, key, keylen, 1);

	if (r != 0)
		return r > 0 ? STEP_EEXIST : r;
	return keyed_job(s, JOB_DATA_SAVE, user, key, keylen, json, w);
}

int
store_data_delete(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_waiter *w)
{
	int r = object_exists(s, user, key, keylen, 1);

	if (r <= 0)
		return r == 0 ? STEP_ENOENT : r;
	return keyed_job(s, JOB_DATA_DELETE, user, key, keylen, NULL, w);
}

int
store_list(struct store *s, const char *user, int data, const char *prefix, size_t plen,
    const char *after, size_t alen, long long limit,
    int (*fn)(void *arg, const char *key, size_t keylen), void *arg, int *more)
{
	sqlite3_stmt *st = NULL;
	long long n = 0;
	int r, step;

	*more = 0;
	pthread_mutex_lock(&s->rlock);
	/* substr() on a BLOB cast compares bytes, so any prefix works. */
	if (sqlite3_prepare_v2(s->rdb,
	        data ? "SELECT key FROM data WHERE user = ?1 AND key > ?2 AND key >= ?3 AND "
	               "substr(CAST(key AS BLOB), 1, ?4) = CAST(?3 AS BLOB) ORDER BY key"
	             : "SELECT key FROM objects WHERE user = ?1 AND key > ?2 AND key >= ?3 AND "
	               "substr(CAST(key AS BLOB), 1, ?4) = CAST(?3 AS BLOB) ORDER BY key",
	        -1, &st, NULL) != SQLITE_OK) {
		r = STEP_EIO;
		goto out;
	}
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, after, (int)alen, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, prefix, (int)plen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)plen);
	r = STEP_OK;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == limit) {
			*more = 1;
			break;
		}
		if ((r = fn(arg, (const char *)sqlite3_column_text(st, 0),
		         (size_t)sqlite3_column_bytes(st, 0))) != 0)
			goto out;
		n++;
	}
	if (step != SQLITE_ROW && step != SQLITE_DONE)
		r = STEP_EIO;
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->rlock);
	return r;
}

/* ---- the commit thread ---- */

/* The writer connection's last failure: 507 material when the disk is full. */
static int
wdb_err(struct store *s)
{
	return (sqlite3_errcode(s->wdb) & 0xff) == SQLITE_FULL ? STEP_ENOSPC : STEP_EIO;
}

static int
wexec(struct store *s, const char *sql, const char *user, const char *key, size_t keylen,
    const char *t3, sqlite3_int64 i4, sqlite3_int64 i5, const char *t6, sqlite3_int64 i7)
{
	sqlite3_stmt *st;
	int r;

	/* Parameters the statement does not use are simply not bound (SQLITE_RANGE). */
	if ((st = stmt_get(&s->wstmt, sql)) == NULL)
		return STEP_EIO;
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, (int)keylen, SQLITE_STATIC);
	if (t3 != NULL)
		sqlite3_bind_text(st, 3, t3, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, i4);
	sqlite3_bind_int64(st, 5, i5);
	if (t6 != NULL)
		sqlite3_bind_text(st, 6, t6, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, i7);
	r = sqlite3_step(st);
	if (r == SQLITE_DONE)
		r = sqlite3_changes(s->wdb) > 0 ? STEP_OK : STEP_ENOENT;
	else if (r == SQLITE_CONSTRAINT)
		r = STEP_EEXIST;
	else
		r = wdb_err(s);
	stmt_done(st);
	return r;
}

static void
blob_delete(struct store *s, sqlite3_int64 rowid)
{
	sqlite3_stmt *st = stmt_get(&s->wstmt, "DELETE FROM blobs WHERE id = ?1");

	if (st == NULL)
		return;
	sqlite3_bind_int64(st, 1, rowid);
	sqlite3_step(st);
	stmt_done(st);
}

/* Finishes the MD5 of a complete upload (reading back what was not hashed in order). */
static void
commit_prepare(struct store *s, struct store_job *j)
{
	struct store_upload *u = j->u;
	uint8_t md[HASH_MD5_LEN];

	if (u->inl) {
		/* Nobody writes an inline upload once it is committing. */
		memcpy(j->md5, u->mem_md5, sizeof(j->md5));
		if (u->want_md5[0] != '\0' && strcmp(u->want_md5, j->md5) != 0)
			j->err = STEP_EMISMATCH;
		return;
	}
	pthread_mutex_lock(&s->mu);
	while (u->writers > 0)
		pthread_cond_wait(&s->wcond, &s->mu);
	if (upload_open_files(s, u, 0, 0) != 0)
		j->err = STEP_EIO;
	pthread_mutex_unlock(&s->mu);
	if (j->err != 0)
		return;
	/* State is COMMITTING: nobody else touches md5/next_hashed now. */
	if (upload_catch_up(u, u->fd, UINT64_MAX) != 0 || u->next_hashed != u->total) {
		j->err = STEP_EIO;
		return;
	}
	hash_final(u->md5, md);
	hash_to_hex(md, sizeof(md), j->md5);
	/* The MD5 declared at SAVE: a mix of two uploads (or a changed file) is never
	 * committed. The upload is discarded; the client starts over. */
	if (u->want_md5[0] != '\0' && strcmp(u->want_md5, j->md5) != 0) {
		log_info("commit of '%s': MD5 %s, not the declared %s: discarded", u->stem, j->md5,
		    u->want_md5);
		j->err = STEP_EMISMATCH;
	}
}

/* Makes the batch's object files and pack bytes durable. 0, or -1 with errno. */
static int
commit_sync(struct store *s, struct store_job *batch)
{
	struct store_job *j, *one = NULL;
	int nfile = 0;

	if (fault_hit(&s->nfsync, s->fault_fsync, "commit sync")) {
		errno = s->fault_errno;
		return -1;
	}
	for (j = batch; j != NULL; j = j->next)
		if (j->kind == JOB_COMMIT && j->err == 0 && !j->u->inl) {
			one = j;
			nfile++;
		}
	if (s->pack_dirty) {
		s->pack_dirty = 0;
		if (nfile == 0)
			return fdatasync(pack_fd(s, s->pack_no, 0));
		nfile += 2; /* the pack as well: one sync for all */
	}
	if (nfile == 0)
		return 0;
	if (nfile == 1)
		return fdatasync(one->u->fd);
	/* Many files: one filesystem-wide sync instead of one fsync each. */
	return syncfs(s->tmpfd);
}

/*
 * The replaced object of a replacing commit: its file and size into j->old_file and
 * j->old_size ("" when the key has no object now). 0 or STEP_EIO.
 */
static int
commit_old(struct store *s, struct store_job *j)
{
	sqlite3_stmt *st = stmt_get(&s->wstmt,
	    "SELECT file, size FROM objects"
	    " WHERE user = ?1 AND key = ?2");
	int r;

	j->old_file[0] = '\0';
	if (st == NULL)
		return STEP_EIO;
	sqlite3_bind_text(st, 1, j->u->user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, j->u->key, (int)j->u->keylen, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		snprintf(j->old_file, sizeof(j->old_file), "%s",
		    (const char *)sqlite3_column_text(st, 0));
		j->old_size = (uint64_t)sqlite3_column_int64(st, 1);
	}
	stmt_done(st);
	return r == SQLITE_ROW || r == SQLITE_DONE ? STEP_OK : STEP_EIO;
}

/*
 * The rows of one COMMIT job: the upload row goes, the object row comes. A replacing
 * upload's row takes the key over in one statement (the old row is read first, so its
 * bytes are reclaimed once the transaction is durable); any other finds an existing key
 * STEP_EEXIST. Sets j->err.
 */
static void
commit_sql(struct store *s, struct store_job *j, int64_t now)
{
	struct store_upload *u = j->u;
	char file[160];
	int r;

	if (j->err != 0 && u->inl)
		return;
	snprintf(file, sizeof(file), "%s.%s", u->stem, u->gen);
	if (!u->inl) {
		wexec(s, "DELETE FROM uploads WHERE user = ?1 AND key = ?2 AND file = ?3", u->user,
		    u->key, u->keylen, file, 0, 0, NULL, 0);
		if (j->err != 0)
			return;
	}
	/* An inline object's file is the pack range pack_write_batch named. */
	if (u->replace && (r = commit_old(s, j)) != 0) {
		j->err = r;
	} else {
		j->err = wexec(s,
		    u->replace
		        ? "INSERT INTO objects(user, key, file, size, block_size, md5, mtime)"
		          " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(user, key) DO"
		          " UPDATE SET file = excluded.file, size = excluded.size,"
		          " block_size = excluded.block_size, md5 = excluded.md5,"
		          " mtime = excluded.mtime"
		        : "INSERT INTO objects(user, key, file, size, block_size, md5, mtime)"
		          " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
		    u->user, u->key, u->keylen, u->inl ? j->file : file, (sqlite3_int64)u->size,
		    u->block_size < s->o.block_size ? u->block_size : s->o.block_size, j->md5, now);
	}
	if (j->err != 0) {
		j->old_file[0] = '\0';
		if (u->inl)
			pack_punch(s, j->file, u->size);
		return;
	}
	if (j->old_file[0] == '\0')
		return;
	/* The replaced object is gone: as for a DELETE, the user's obj_gen moves. */
	if (blob_rowid(j->old_file) > 0)
		blob_delete(s, blob_rowid(j->old_file));
	if (wexec(s,
	        "INSERT INTO obj_gen(user, gen) VALUES(?1, 1)"
	        " ON CONFLICT(user) DO UPDATE SET gen = gen + 1",
	        u->user, NULL, 0, NULL, 0, 0, NULL, 0) != STEP_OK)
		j->err = wdb_err(s);
}

static void
batch_apply_sql(struct store *s, struct store_job *batch)
{
	struct store_job *j;
	int64_t now = util_wall_s();
	int r, abort_tx = 0;

	if (meta_exec(s->wdb, "BEGIN IMMEDIATE") != 0) {
		r = wdb_err(s);
		for (j = batch; j != NULL; j = j->next)
			if (j->err == 0)
				j->err = r;
		return;
	}
	for (j = batch; j != NULL; j = j->next) {
		struct store_upload *u = j->u;
		char file[160], claim[64];

		switch (j->kind) {
		case JOB_ROW:
			snprintf(file, sizeof(file), "%s.%s", u->stem, u->gen);
			snprintf(claim, sizeof(claim), "%s", u->want_md5);
			wexec(s,
			    "INSERT OR REPLACE INTO uploads(user, key, file, size, block_size, "
			    "mtime, claim)"
			    " VALUES(?1, ?2, ?3, ?4, ?5, ?7, ?6)",
			    u->user, u->key, u->keylen, file, (sqlite3_int64)u->size, u->block_size,
			    claim, now);
			break;
		case JOB_DROP:
			if (u->inl)
				break;
			snprintf(file, sizeof(file), "%s.%s", u->stem, u->gen);
			wexec(s, "DELETE FROM uploads WHERE user = ?1 AND key = ?2 AND file = ?3",
			    u->user, u->key, u->keylen, file, 0, 0, NULL, 0);
			break;
		case JOB_COMMIT:
			commit_sql(s, j, now);
			break;
		case JOB_OBJ_DELETE: {
			sqlite3_stmt *st;

			j->err = STEP_ENOENT;
			if ((st = stmt_get(&s->wstmt,
			         "DELETE FROM objects WHERE user = ?1 AND key = ?2"
			         " RETURNING file, size")) == NULL) {
				j->err = STEP_EIO;
				break;
			}
			sqlite3_bind_text(st, 1, j->user, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, j->key, (int)j->keylen, SQLITE_STATIC);
			if (sqlite3_step(st) == SQLITE_ROW) {
				snprintf(j->file, sizeof(j->file), "%s",
				    (const char *)sqlite3_column_text(st, 0));
				j->size = (uint64_t)sqlite3_column_int64(st, 1);
				j->err = STEP_OK;
				while (sqlite3_step(st) == SQLITE_ROW)
					;
			}
			stmt_done(st);
			if (j->err == STEP_OK && blob_rowid(j->file) > 0)
				blob_delete(s, blob_rowid(j->file));
			/* A complete object is gone: its user's obj_gen moves, in this transaction.
			 */
			if (j->err == STEP_OK &&
			    wexec(s,
			        "INSERT INTO obj_gen(user, gen) VALUES(?1, 1)"
			        " ON CONFLICT(user) DO UPDATE SET gen = gen + 1",
			        j->user, NULL, 0, NULL, 0, 0, NULL, 0) != STEP_OK)
				j->err = wdb_err(s);
			break;
		}
		case JOB_DATA_SAVE:
			j->err = wexec(s,
			    "INSERT INTO data(user, key, json) VALUES(?1, ?2, ?3)"
			    " ON CONFLICT DO NOTHING",
			    j->user, j->key, j->keylen, j->json, 0, 0, NULL, 0);
			if (j->err == STEP_ENOENT)
				j->err = STEP_EEXIST; /* no row inserted: the key exists */
			break;
		case JOB_DATA_DELETE:
			j->err = wexec(s, "DELETE FROM data WHERE user = ?1 AND key = ?2", j->user,
			    j->key, j->keylen, NULL, 0, 0, NULL, 0);
			break;
		}
	}
	if (abort_tx || meta_exec(s->wdb, "COMMIT") != 0) {
		r = abort_tx ? STEP_EIO : wdb_err(s);
		if (!sqlite3_get_autocommit(s->wdb)) /* SQLite may have rolled back already */
			meta_exec(s->wdb, "ROLLBACK");
		for (j = batch; j != NULL; j = j->next)
			if (j->err == 0 || j->kind == JOB_OBJ_DELETE)
				j->err = r;
	}
}

/* Gives the bytes of an object whose row is gone back: its pack range or its file. */
static void
obj_reclaim(struct store *s, const char *file, uint64_t size)
{
	uint64_t off;
	unsigned n;

	if (pack_parse(file, &n, &off))
		pack_punch(s, file, size);
	else if (blob_rowid(file) == 0)
		unlinkat(s->objfd, file, 0);
}

static void
batch_run(struct store *s, struct store_job *batch)
{
	struct store_job *j, *next, *dead = NULL;
	int ncommit = 0, nrenamed = 0;

	for (j = batch; j != NULL; j = j->next) {
		if (j->kind != JOB_COMMIT)
			continue;
		commit_prepare(s, j);
		if (j->err == 0)
			ncommit++;
	}
	if (ncommit > 0)
		pack_write_batch(s, batch);
	if (ncommit > 0 && commit_sync(s, batch) != 0) {
		int e = err_from_errno(errno);

		log_warn("commit: sync failed");
		for (j = batch; j != NULL; j = j->next)
			if (j->kind == JOB_COMMIT && j->err == 0)
				j->err = e;
	} else if (s->pack_wrote[1] > 0) {
		/* Drop-behind, as for uploads: the batch's pack pages are clean now. Giving them
		 * back lets the next batch reuse warm pages instead of claiming fresh ones (on a
		 * VM, first touching a page costs several times the copy into it), and a backup
		 * does not push hotter data out of the cache. */
		posix_fadvise(pack_fd(s, s->pack_no, 0), (off_t)s->pack_wrote[0],
		    (off_t)s->pack_wrote[1], POSIX_FADV_DONTNEED);
	}
	s->pack_wrote[1] = 0;
	for (j = batch; j != NULL; j = j->next) {
		char from[128], to[128];

		if (j->kind != JOB_COMMIT || j->err != 0 || j->u->inl)
			continue;
		upload_fname(j->u, ".part", from, sizeof(from));
		upload_fname(j->u, "", to, sizeof(to));
		if (renameat(s->tmpfd, from, s->objfd, to) != 0) {
			log_warn("commit: rename '%s'", from);
			j->err = err_from_errno(errno);
			continue;
		}
		nrenamed++;
	}
	if (nrenamed > 0 &&
	    (fault_hit(&s->ndirsync, s->fault_dirsync, "directory fsync")
	            ? (errno = s->fault_errno, 1)
	            : fsync(s->objfd) != 0)) {
		/* The new names may not survive a crash: the commits fail (their files are
		 * removed below, as renamed but not recorded). */
		int e = err_from_errno(errno);

		log_warn("commit: directory fsync");
		for (j = batch; j != NULL; j = j->next)
			if (j->kind == JOB_COMMIT && j->err == 0 && !j->u->inl)
				j->err = e;
	}
	batch_apply_sql(s, batch);

	/* Finished uploads leave the map under one lock for the whole batch (the lock every
	 * request takes); their waiters move to the job. */
	pthread_mutex_lock(&s->mu);
	for (j = batch; j != NULL; j = j->next) {
		if (j->kind != JOB_COMMIT)
			continue;
		if (map_find(s, j->u->id) == j->u) {
			map_remove(s, j->u);
			j->u->refs--;
		}
		j->u->state = UP_DEAD;
		j->w = j->u->waiters;
		j->u->waiters = NULL;
	}
	pthread_mutex_unlock(&s->mu);

	/* Answer first, clean up after: temp files of finished uploads are orphans on restart. */
	for (j = batch; j != NULL; j = j->next) {
		struct store_waiter *w, *wn;
		char name[128];

		switch (j->kind) {
		case JOB_COMMIT:
			if (j->err != 0 && !j->u->inl) {
				upload_fname(j->u, "", name, sizeof(name));
				unlinkat(s->objfd, name, 0); /* renamed but not recorded */
			}
			if (j->err == 0 && j->old_file[0] != '\0')
				obj_reclaim(s, j->old_file, j->old_size);
			for (w = j->w; w != NULL; w = wn) {
				wn = w->next;
				w->done(w, j->err, j->err == 0 ? j->md5 : NULL);
			}
			break;
		case JOB_DROP:
			break;
		case JOB_OBJ_DELETE:
			if (j->err == 0)
				obj_reclaim(s, j->file, j->size);
			/* fall through */
		default:
			if (j->w != NULL)
				j->w->done(j->w, j->err, NULL);
		}
	}
	for (j = batch; j != NULL; j = j->next)
		if (j->kind == JOB_COMMIT || j->kind == JOB_DROP)
			upload_unlink_files(s, j->u);
	/* An embedded job (put_obj) is its upload's memory: once the job's reference is
	 * dropped and the upload is still referenced elsewhere, it is not touched again. */
	pthread_mutex_lock(&s->mu);
	for (j = batch; j != NULL; j = next) {
		next = j->next;
		if (j->u != NULL && --j->u->refs > 0) {
			j->u = NULL; /* still referenced elsewhere */
			if (j->embedded)
				continue;
		}
		j->next = dead;
		dead = j;
	}
	pthread_mutex_unlock(&s->mu);
	for (j = dead; j != NULL; j = next) {
		struct store_upload *u = j->u; /* the last reference, or NULL */

		next = j->next;
		job_free(j); /* nothing for an embedded job: it goes with u */
		upload_free(u);
	}
}

/* Drops uploads that saw no block for upload_ttl seconds. */
static void
sweep_expired(struct store *s)
{
	int64_t now = util_wall_s();
	size_t b;

	pthread_mutex_lock(&s->mu);
	for (b = 0; b < MAP_BUCKETS; b++) {
		struct store_upload **pp = &s->map[b];

		while (*pp != NULL) {
			struct store_upload *u = *pp;

			if (u->state != UP_OPEN || u->writers > 0 ||
			    now - u->touched < s->o.upload_ttl) {
				pp = &u->hnext;
				continue;
			}
			log_info("upload of '%s' expired", u->stem);
			*pp = u->hnext;
			u->hnext = NULL;
			ucount_add(s, u->user, -1);
			u->state = UP_DEAD;
			if (queue_upload_job(s, JOB_DROP, u) != 0)
				upload_unlink_files(s, u);
			if (--u->refs == 0)
				upload_free(u);
		}
	}
	pthread_mutex_unlock(&s->mu);
}

/* Counts the WAL's frames after each commit of the writer connection (sqlite3_wal_hook). */
static int
wal_counted(void *arg, sqlite3 *db, const char *name, int frames)
{
	struct store *s = arg;

	s->wal_frames = frames;
	return SQLITE_OK;
}

/*
 * The WAL is copied back into the database here rather than by SQLite's automatic
 * checkpoint inside a commit: while requests keep coming (a backup of many small files
 * puts every blob through the WAL), commits only append and sync the WAL, and the copy
 * waits for a quiet moment, or for CHECKPOINT_FORCE frames at most.
 */
static void
checkpoint_maybe(struct store *s)
{
	int busy;

	if (s->wal_frames < CHECKPOINT_IDLE)
		return;
	pthread_mutex_lock(&s->qmu);
	busy = s->qhead != NULL;
	pthread_mutex_unlock(&s->qmu);
	if (busy && s->wal_frames < CHECKPOINT_FORCE)
		return;
	if (sqlite3_wal_checkpoint_v2(s->wdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) !=
	    SQLITE_OK)
		log_info("checkpoint: %s", sqlite3_errmsg(s->wdb));
	s->wal_frames = 0;
}

static void *
commit_main(void *arg)
{
	struct store *s = arg;
	int64_t interval_ms = s->o.upload_ttl * 1000 / 2;
	uint64_t next_sweep;

	if (interval_ms < 200)
		interval_ms = 200;
	if (interval_ms > 60000)
		interval_ms = 60000;
	next_sweep = util_now_ms() + (uint64_t)interval_ms;
	for (;;) {
		struct store_job *batch, *j;
		int n = 1;

		pthread_mutex_lock(&s->qmu);
		while (s->qhead == NULL && !s->stop && util_now_ms() < next_sweep) {
			struct timespec ts;
			uint64_t wait_ms = next_sweep - util_now_ms();

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += (time_t)(wait_ms / 1000);
			ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&s->qcond, &s->qmu, &ts);
		}
		if (s->qhead == NULL && s->stop) {
			pthread_mutex_unlock(&s->qmu);
			break;
		}
		batch = s->qhead;
		for (j = batch; j != NULL && j->next != NULL && n < BATCH_MAX; j = j->next)
			n++;
		if (j != NULL) {
			s->qhead = j->next;
			j->next = NULL;
			if (s->qhead == NULL)
				s->qtail = NULL;
		}
		pthread_mutex_unlock(&s->qmu);
		if (batch != NULL)
			batch_run(s, batch);
		checkpoint_maybe(s);
		if (util_now_ms() >= next_sweep) {
			sweep_expired(s);
			next_sweep = util_now_ms() + (uint64_t)interval_ms;
		}
	}
	return NULL;
}

struct sync_wait {
	struct store_waiter w;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
};

static void
sync_done(struct store_waiter *w, int err, const char *md5hex)
{
	struct sync_wait *sw = (struct sync_wait *)w;

	pthread_mutex_lock(&sw->mu);
	sw->done = 1;
	pthread_cond_signal(&sw->cv);
	pthread_mutex_unlock(&sw->mu);
}

void
store_sync(struct store *s)
{
	struct sync_wait sw = { { sync_done, NULL }, PTHREAD_MUTEX_INITIALIZER,
		PTHREAD_COND_INITIALIZER, 0 };
	struct store_job *j = job_new(JOB_NOP);

	if (j == NULL)
		return;
	j->w = &sw.w;
	queue_push(s, j);
	pthread_mutex_lock(&sw.mu);
	while (!sw.done)
		pthread_cond_wait(&sw.cv, &sw.mu);
	pthread_mutex_unlock(&sw.mu);
	pthread_mutex_destroy(&sw.mu);
	pthread_cond_destroy(&sw.cv);
}

/* ---- open / restart ---- */

static void
parse_fault(struct store *s)
{
	const char *f = getenv("STEP_FAULT");
	char buf[128], *p, *save = NULL;

	s->fault_errno = ENOSPC;
	if (f == NULL || strlen(f) >= sizeof(buf))
		return;
	memcpy(buf, f, strlen(f) + 1);
	for (p = strtok_r(buf, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
		long long n;

		if (strncmp(p, "write:", 6) == 0 && util_parse_ll(p + 6, 1, 1LL << 40, &n) == 0)
			s->fault_write = (long)n;
		else if (strncmp(p, "fsync:", 6) == 0 &&
		    util_parse_ll(p + 6, 1, 1LL << 40, &n) == 0)
			s->fault_fsync = (long)n;
		else if (strncmp(p, "dirsync:", 8) == 0 &&
		    util_parse_ll(p + 8, 1, 1LL << 40, &n) == 0)
			s->fault_dirsync = (long)n;
		else if (strncmp(p, "alloc:", 6) == 0 &&
		    util_parse_ll(p + 6, 1, 1LL << 40, &n) == 0)
			store_fault_alloc_at = (long)n;
		else if (strcmp(p, "eio") == 0)
			s->fault_errno = EIO;
		else if (strcmp(p, "enospc") == 0)
			s->fault_errno = ENOSPC;
	}
	if (s->fault_write || s->fault_fsync || s->fault_dirsync || store_fault_alloc_at)
		log_warnx("test fault hook active: STEP_FAULT=%s", f);
}

static int
open_dir(const char *root, const char *sub, int *fd)
{
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%s", root, sub) >= (int)sizeof(path))
		return STEP_EINVAL;
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return STEP_ESYS;
	if ((*fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return STEP_ESYS;
	return STEP_OK;
}

/* Reads the store's id from meta.db, creating it (random) when the store is new. */
static int
load_store_id(struct store *s)
{
	uint8_t b[16];
	char hex[33];
	sqlite3_stmt *st = NULL;
	int r = STEP_EIO;

	if (hash_random(b, sizeof(b)) != 0)
		return STEP_EIO;
	hash_to_hex(b, sizeof(b), hex);
	if (sqlite3_prepare_v2(s->wdb,
	        "INSERT INTO info(name, value) VALUES('store_id', ?1) ON CONFLICT DO NOTHING", -1,
	        &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_text(st, 1, hex, 32, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto out;
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(s->wdb, "SELECT value FROM info WHERE name = 'store_id'", -1, &st,
	        NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW || sqlite3_column_bytes(st, 0) != 32)
		goto out;
	memcpy(s->id, sqlite3_column_text(st, 0), 32);
	s->id[32] = '\0';
	r = STEP_OK;
out:
	sqlite3_finalize(st);
	return r;
}

const char *
store_id(const struct store *s)
{
	return s->id;
}

int
store_obj_gen(struct store *s, const char *user, int64_t *gen)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&s->rlock);
	if ((st = stmt_get(&s->rstmt, "SELECT gen FROM obj_gen WHERE user = ?1")) == NULL) {
		pthread_mutex_unlock(&s->rlock);
		return STEP_EIO;
	}
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		*gen = sqlite3_column_int64(st, 0);
		r = STEP_OK;
	} else if (r == SQLITE_DONE) {
		*gen = 0;
		r = STEP_OK;
	} else {
		r = STEP_EIO;
	}
	stmt_done(st);
	pthread_mutex_unlock(&s->rlock);
	return r;
}

/*
 * Marks the blocks the sidecar of u records as received, each only after its bytes in the
 * temp object hash to the recorded value: after a power loss the sidecar may say
 * "received" for a block whose bytes never reached the disk. Such blocks, and every block
 * of an older sidecar (no hashes), are simply asked for again.
 */
static void
load_map(struct store_upload *u)
{
	enum { CHUNK = 8192 };
	uint64_t *rec = malloc(CHUNK * sizeof(*rec)), first, i, bad = 0;
	uint8_t *blk = malloc(u->block_size);
	char hdr[MAP_HDR];

	if (rec == NULL || blk == NULL)
		goto out;
	if (pread(u->mapfd, hdr, MAP_HDR, 0) != MAP_HDR || memcmp(hdr, MAP_MAGIC, MAP_HDR) != 0) {
		log_info(
		    "upload '%s': sidecar without block hashes; its blocks are asked for again",
		    u->stem);
		goto out;
	}
	for (first = 0; first < u->total; first += CHUNK) {
		size_t want = (size_t)(u->total - first < CHUNK ? u->total - first : CHUNK);
		ssize_t n = pread(u->mapfd, rec, want * sizeof(*rec), map_off(first));

		if (n <= 0)
			break;
		for (i = 0; i < (uint64_t)n / sizeof(*rec); i++) {
			uint64_t idx = first + i, off = idx * u->block_size;
			size_t len =
			    (size_t)(u->size - off < u->block_size ? u->size - off : u->block_size);

			if (rec[i] == 0)
				continue;
			if (pread_all(u->fd, blk, len, (off_t)off) == 0 &&
			    block_hash(blk, len) == rec[i])
				bitmap_set(&u->bm, idx);
			else
				bad++;
		}
		if ((size_t)n < want * sizeof(*rec))
			break;
	}
	if (bad > 0)
		log_warnx("upload '%s': %llu acknowledged block(s) not on disk as received (power "
		          "loss?); they are asked for again",
		    u->stem, (unsigned long long)bad);
out:
	free(rec);
	free(blk);
}

/* Reloads one upload row; drops it when its temp file is gone. */
static void
load_upload(struct store *s, sqlite3_stmt *st)
{
	const char *user = (const char *)sqlite3_column_text(st, 0);
	const char *key = (const char *)sqlite3_column_text(st, 1);
	size_t keylen = (size_t)sqlite3_column_bytes(st, 1);
	int64_t size = sqlite3_column_int64(st, 2), bs = sqlite3_column_int64(st, 3);
	const char *file = (const char *)sqlite3_column_text(st, 4);
	struct store_upload *u;
	char name[128];
	struct stat sb;

	if (size < 0 || bs <= 0 || bs > (1 << 30) || file == NULL || strlen(file) != 81 ||
	    (u = upload_new(user, key, keylen, (uint64_t)size, (uint32_t)bs)) == NULL)
		return;
	memcpy(u->gen, file + 65, 16);
	u->gen[16] = '\0';
	if (sqlite3_column_type(st, 5) == SQLITE_TEXT) {
		const char *claim = (const char *)sqlite3_column_text(st, 5);

		if (strlen(claim) == 32)
			memcpy(u->want_md5, claim, 32);
	}
	/* Only a replacing upload can be in progress for a key that has an object. */
	u->replace = object_exists(s, user, key, keylen, 0) > 0;
	if (strncmp(file, u->stem, 64) != 0 || upload_open_files(s, u, 0, 0) != 0) {
		log_info("dropping upload '%s': temp files missing", file);
		u->state = UP_DEAD;
		queue_upload_job(s, JOB_DROP, u);
		upload_unref(s, u);
		return;
	}
	/* No sidecar: no block was acknowledged. */
	upload_fname(u, ".map", name, sizeof(name));
	u->mapfd = openat(s->tmpfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fstat(u->mapfd >= 0 ? u->mapfd : u->fd, &sb) == 0)
		u->touched = sb.st_mtime;
	if (u->mapfd >= 0 && u->total > 0)
		load_map(u);
	/* No descriptor is held for an upload in progress (a commit opens its file again). */
	close(u->fd);
	u->fd = -1;
	if (u->mapfd >= 0)
		close(u->mapfd);
	u->mapfd = -1;
	if (map_find(s, u->id) != NULL) {
		upload_unref(s, u);
		return;
	}
	map_insert(s, u);
	if (bitmap_full(&u->bm)) {
		/* Every block arrived before the stop: commit now. */
		u->state = UP_COMMITTING;
		queue_upload_job(s, JOB_COMMIT, u);
	}
}

/* Removes temp files that belong to no known upload (a SAVE whose row was never written). */
static void
remove_orphans(struct store *s)
{
	DIR *d;
	struct dirent *e;
	int fd = dup(s->tmpfd);

	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		uint8_t id[HASH_SHA256_LEN];
		struct store_upload *u;
		size_t i;
		int keep = 0;

		if (e->d_name[0] == '.')
			continue;
		if (strlen(e->d_name) > 81 && e->d_name[64] == '.') {
			for (i = 0; i < HASH_SHA256_LEN; i++) {
				unsigned v;

				if (sscanf(e->d_name + 2 * i, "%2x", &v) != 1)
					break;
				id[i] = (uint8_t)v;
			}
			u = i == HASH_SHA256_LEN ? map_find(s, id) : NULL;
			keep = u != NULL && strncmp(e->d_name + 65, u->gen, 16) == 0;
		}
		if (!keep)
			unlinkat(s->tmpfd, e->d_name, 0);
	}
	closedir(d);
}

/*
 * Start-up clean-up after a crash: a file in obj/ that no object names (renamed, then the
 * crash came before its row was committed) is removed, and so is the tail of the last
 * pack beyond its last referenced byte (written, then the crash came before the rows).
 */
static void
reclaim_orphans(struct store *s)
{
	sqlite3_stmt *st = NULL;
	struct dirent *e;
	uint64_t end = 0;
	unsigned removed = 0;
	char lo[40], hi[40];
	DIR *d;
	int fd = dup(s->objfd);

	if (fd >= 0 && (d = fdopendir(fd)) != NULL) {
		if (sqlite3_prepare_v2(s->rdb, "SELECT 1 FROM objects WHERE file = ?1", -1, &st,
		        NULL) == SQLITE_OK) {
			while ((e = readdir(d)) != NULL) {
				if (e->d_name[0] == '.')
					continue;
				sqlite3_reset(st);
				sqlite3_bind_text(st, 1, e->d_name, -1, SQLITE_STATIC);
				if (sqlite3_step(st) == SQLITE_DONE &&
				    unlinkat(s->objfd, e->d_name, 0) == 0)
					removed++;
			}
		}
		sqlite3_finalize(st);
		st = NULL;
		closedir(d);
	} else if (fd >= 0) {
		close(fd);
	}
	if (removed > 0) {
		log_info("start-up: removed %u object file(s) that no object names", removed);
		if (fsync(s->objfd) != 0)
			log_warn("obj: directory fsync");
	}
	/* The last pack: keep up to the end of its last referenced range. */
	snprintf(lo, sizeof(lo), PACK_PREFIX "%u:", s->pack_no);
	snprintf(hi, sizeof(hi), PACK_PREFIX "%u;", s->pack_no);
	if (sqlite3_prepare_v2(s->rdb,
	        "SELECT file, size FROM objects WHERE file >= ?1 AND file < ?2", -1, &st,
	        NULL) != SQLITE_OK)
		return;
	sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW) {
		uint64_t off;
		unsigned n;

		if (pack_parse((const char *)sqlite3_column_text(st, 0), &n, &off) &&
		    n == s->pack_no && off + (uint64_t)sqlite3_column_int64(st, 1) > end)
			end = off + (uint64_t)sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (end < s->pack_end && (fd = pack_fd(s, s->pack_no, 0)) >= 0) {
		if (ftruncate(fd, (off_t)end) == 0 && fdatasync(fd) == 0) {
			log_info("start-up: pack %u: %llu unreferenced byte(s) at its end removed",
			    s->pack_no, (unsigned long long)(s->pack_end - end));
			s->pack_end = end;
		} else {
			log_warn("pack %u: cannot cut its unreferenced end", s->pack_no);
		}
	}
}

int
store_open(const struct store_opts *o, struct store **out, char *errbuf, size_t errlen)
{
	struct store *s;
	sqlite3_stmt *st = NULL;
	int r;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return STEP_ENOMEM;
	s->o = *o;
	s->objfd = s->tmpfd = s->packdir = -1;
	s->max_uploads = STORE_MAX_UPLOADS;
	pthread_mutex_init(&s->pmu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->rlock, NULL);
	pthread_mutex_init(&s->qmu, NULL);
	pthread_cond_init(&s->wcond, NULL);
	pthread_cond_init(&s->qcond, NULL);
	parse_fault(s);
	s->pack_max = PACK_MAX;
	if (getenv("STEP_PACK_MAX") != NULL) {
		long long v;

		if (util_parse_ll(getenv("STEP_PACK_MAX"), 1, PACK_MAX, &v) == 0)
			s->pack_max = (uint64_t)v;
		log_warnx("test hook active: STEP_PACK_MAX=%llu", (unsigned long long)s->pack_max);
	}
	if ((s->root = strdup(o->root)) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	s->o.root = s->root;
	if ((r = open_dir(o->root, "obj", &s->objfd)) != 0 ||
	    (r = open_dir(o->root, "tmp", &s->tmpfd)) != 0 ||
	    (r = open_dir(o->root, "pack", &s->packdir)) != 0) {
		snprintf(errbuf, errlen, "cannot create directories in '%s': %s", o->root,
		    strerror(errno));
		goto out;
	}
	if ((r = meta_open(o->root, &s->wdb)) != 0 || (r = meta_open(o->root, &s->rdb)) != 0) {
		snprintf(errbuf, errlen, "cannot open '%s/meta.db'", o->root);
		goto out;
	}
	/* Readers map the database: every commit invalidates their page cache, and re-reading
	 * the pages an object lookup needs would otherwise be a pread each. */
	meta_exec(s->rdb, "PRAGMA mmap_size=1073741824");
	s->rstmt.db = s->rdb;
	s->wstmt.db = s->wdb;
	/* Checkpoints are the commit thread's (checkpoint_maybe), not every commit's. */
	sqlite3_wal_autocheckpoint(s->wdb, 0);
	meta_exec(s->wdb, "PRAGMA journal_size_limit=4194304"); /* a grown WAL shrinks back */
	sqlite3_wal_hook(s->wdb, wal_counted, s);
	if ((r = load_store_id(s)) != 0) {
		snprintf(
		    errbuf, errlen, "cannot read or create the store id in '%s/meta.db'", o->root);
		goto out;
	}
	if (sqlite3_prepare_v2(s->wdb,
	        "SELECT user, key, size, block_size, file, claim FROM uploads", -1, &st,
	        NULL) == SQLITE_OK) {
		while (sqlite3_step(st) == SQLITE_ROW)
			load_upload(s, st);
	}
	sqlite3_finalize(st);
	remove_orphans(s);
	if (pack_open_last(s) != 0) {
		snprintf(errbuf, errlen, "cannot open a pack in '%s/pack': %s", o->root,
		    strerror(errno));
		r = STEP_ESYS;
		goto out;
	}
	reclaim_orphans(s);
	if (pthread_create(&s->thread, NULL, commit_main, s) != 0) {
		snprintf(errbuf, errlen, "cannot start the commit thread");
		r = STEP_ESYS;
		goto out;
	}
	s->thread_started = 1;
	pthread_setname_np(s->thread, "stepd-commit");
	*out = s;
	s = NULL;
	r = STEP_OK;
out:
	store_free(s);
	return r;
}

void
store_free(struct store *s)
{
	size_t b;

	if (s == NULL)
		return;
	if (s->thread_started) {
		pthread_mutex_lock(&s->qmu);
		s->stop = 1;
		pthread_cond_signal(&s->qcond);
		pthread_mutex_unlock(&s->qmu);
		pthread_join(s->thread, NULL);
	} else {
		/* Jobs queued while loading: run them here. */
		while (s->qhead != NULL) {
			struct store_job *batch = s->qhead;

			s->qhead = s->qtail = NULL;
			if (s->wdb != NULL)
				batch_run(s, batch);
			else
				while (batch != NULL) {
					struct store_job *n = batch->next;
					struct store_upload *u = batch->u;

					job_free(batch); /* before u: an embedded job is u's */
					if (u != NULL)
						upload_unref(s, u);
					batch = n;
				}
		}
	}
	for (b = 0; b < MAP_BUCKETS; b++) {
		while (s->map[b] != NULL) {
			struct store_upload *u = s->map[b];

			s->map[b] = u->hnext;
			upload_free(u);
		}
	}
	for (b = 0; b < UCOUNT_BUCKETS; b++)
		while (s->ucount[b] != NULL) {
			struct ucount *c = s->ucount[b];

			s->ucount[b] = c->next;
			free(c->user);
			free(c);
		}
	stmt_cache_release(&s->rstmt);
	stmt_cache_release(&s->wstmt);
	sqlite3_close(s->rdb);
	sqlite3_close(s->wdb);
	if (s->objfd >= 0)
		close(s->objfd);
	if (s->tmpfd >= 0)
		close(s->tmpfd);
	if (s->packdir >= 0)
		close(s->packdir);
	for (b = 0; b < s->npackfd; b++)
		if (s->packfd[b] >= 0)
			close(s->packfd[b]);
	free(s->packfd);
	pthread_mutex_destroy(&s->pmu);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->rlock);
	pthread_mutex_destroy(&s->qmu);
	pthread_cond_destroy(&s->wcond);
	pthread_cond_destroy(&s->qcond);
	free(s->root);
	free(s);
}
