/*
 * store_upload.c — uploads in progress: the in-memory map (by SHA-256 of user NUL key) and
 * the per-user count, an upload's temp file (tmp/<stem>.<gen>.part, blocks pwrite'd at
 * their offsets) and its sidecar (tmp/<stem>.<gen>.map: where its received blocks live,
 * one 8-byte hash per block, so a restart keeps them), block writes and the running MD5,
 * and reloading the uploads the metadata records at start.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "store_priv.h"
#include "util.h"

/* key_id() with a SHA-256 context of the caller's, reset and reused (no allocation). */
void
key_id_with(struct hash_ctx *c, const char *user, const char *key, size_t keylen,
    uint8_t id[HASH_SHA256_LEN])
{
	hash_update(c, user, strlen(user));
	hash_update(c, "", 1);
	hash_update(c, key, keylen);
	hash_final(c, id);
	hash_reset(c);
}

void
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
struct store_upload *
map_find(struct store *s, const uint8_t *id)
{
	struct store_upload *u;

	for (u = s->map[bucket_of(id)]; u != NULL; u = u->hnext)
		if (memcmp(u->id, id, HASH_SHA256_LEN) == 0)
			return u;
	return NULL;
}

/* Under mu; the map keeps its reference until the caller drops it. */
void
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
int
ucount_get(struct store *s, const char *user)
{
	struct ucount *c = *ucount_slot(s, user);

	return c != NULL ? c->n : 0;
}

/* Adds d to user's count (an entry at 0 is freed; no memory: not counted). Under mu. */
void
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

void
map_insert(struct store *s, struct store_upload *u)
{
	size_t b = bucket_of(u->id);

	ucount_add(s, u->user, 1);
	u->hnext = s->map[b];
	s->map[b] = u;
}

void
upload_free(struct store_upload *u)
{
	if (u == NULL)
		return;
	if (u->fd >= 0)
		close(u->fd);
	if (u->mapfd >= 0)
		close(u->mapfd);
	if (u->inl_budget != NULL)
		atomic_fetch_sub(u->inl_budget, u->size);
	bitmap_release(&u->bm);
	hash_free(u->md5);
	if (!u->onebuf) {
		free(u->mem);
		free(u->user);
		free(u->key);
	}
	free(u);
}

void
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

void
upload_fname(const struct store_upload *u, const char *ext, char *out, size_t n)
{
	snprintf(out, n, "%s.%s%s", u->stem, u->gen, ext);
}

struct store_upload *
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
int
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

void
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
int
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
 * Block index (len bytes at data) of a multi-block upload has been written: hashes what
 * can be hashed in order (under mu). Only uploads over HASH_AT_COMMIT_MAX: smaller ones
 * (the chunks of a large file cut into blocks of 1 MiB) are hashed whole by the commit
 * thread, side by side with others and out of mu (commit_hash_many); hashing them here
 * one block at a time was 14% of stepd's CPU in a first backup.
 */
static void
hash_in_order(struct store_upload *u, uint64_t index, const uint8_t *data, size_t len, int fd)
{
	if (u->inl || u->size <= HASH_AT_COMMIT_MAX)
		return;
	if (index == u->next_hashed) {
		hash_update(u->md5, data, len);
		u->next_hashed++;
	}
	if (fd >= 0)
		upload_catch_up(u, fd, CATCHUP_BLOCKS);
}

/* Queues the commit of u in job cj, with w (NULL: none) among its waiters. Under mu. */
static void
commit_queue(struct store *s, struct store_upload *u, struct store_job *cj, struct store_waiter *w)
{
	u->state = UP_COMMITTING;
	if (w != NULL) {
		w->next = u->waiters;
		u->waiters = w;
	}
	u->refs++;
	cj->u = u;
	job_queue_push(s, cj);
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
	/* A big one is hashed by the commit thread, with others side by side. */
	md5[0] = '\0';
	if (len <= INLINE_MAX)
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
	commit_queue(s, u, cj, w);
	cj = NULL;
	r = STORE_PENDING;
out:
	pthread_mutex_unlock(&s->mu);
	job_free(cj);
	free(mem);
	return r;
}

/*
 * Writes one block of u with pwrite at its offset in the temp object and, when need_map,
 * its hash in the sidecar (where the upload's received blocks are recorded). fail: an
 * injected errno. The temp object's fd is left in *fdp (or -1) for the caller to close.
 * 0, STEP_ENOSPC or STEP_EIO.
 */
static int
block_put(struct store *s, struct store_upload *u, uint64_t index, const uint8_t *data, size_t len,
    int fail, int need_map, int *fdp)
{
	int fd = -1, mapfd = -1;
	ssize_t n;

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
		if (mapfd >= 0) {
			uint64_t h = block_hash(data, len);

			if (pwrite(mapfd, &h, sizeof(h), map_off(index)) != sizeof(h))
				n = -1;
		}
	} else if (n >= 0) {
		errno = EIO;
		n = -1;
	}
	if (mapfd >= 0)
		close(mapfd);
	*fdp = fd;
	return n < 0 ? err_from_errno(errno) : STEP_OK;
}

static int shared_write(struct store *s, struct store_upload *u, uint64_t index,
    const uint8_t *data, size_t len, struct store_waiter *w);
static void writeback_plan(struct store_upload *u, uint64_t wb[4]);
static void writeback_run(int fd, const uint64_t wb[4]);

/*
 * Start writeback of the contiguous prefix every WRITEBACK_BYTES, so the commit's sync
 * finds little left to write (SYNC_FILE_RANGE_WRITE only queues the I/O): the range in
 * wb[0..1]. Drop-behind: the range before the last one is hashed and (almost surely)
 * written back by now; it is dropped from the page cache (wb[2..3]). An upload then cycles
 * through a few warm MiB of cache instead of claiming fresh pages for every byte — on a
 * VM, first touching a page costs several times the copy into it — and a backup does not
 * push hotter data out of the cache. Under mu.
 */
static void
writeback_plan(struct store_upload *u, uint64_t wb[4])
{
	if (u->next_hashed * u->block_size < u->flushed + WRITEBACK_BYTES)
		return;
	wb[0] = u->flushed;
	wb[1] = u->next_hashed * u->block_size - u->flushed;
	u->flushed += wb[1];
	wb[2] = u->dropped;
	wb[3] = u->wb_last - u->dropped;
	u->dropped = u->wb_last;
	u->wb_last = wb[0];
}

/* Starts what writeback_plan planned (outside mu). */
static void
writeback_run(int fd, const uint64_t wb[4])
{
	if (wb[1] > 0 &&
	    sync_file_range(fd, (off_t)wb[0], (off_t)wb[1], SYNC_FILE_RANGE_WRITE) != 0)
		log_debug("sync_file_range: %s", strerror(errno));
	/* Pages still dirty or under writeback are skipped: this never waits for the disk,
	 * and the commit's fdatasync still makes everything durable. */
	if (wb[3] > 0)
		posix_fadvise(fd, (off_t)wb[2], (off_t)wb[3], POSIX_FADV_DONTNEED);
}

int
store_upload_write(struct store *s, struct store_upload *u, uint64_t index, const uint8_t *data,
    size_t len, struct store_waiter *w)
{
	struct store_job *cj = NULL;
	int fd = -1, r, fail = 0, need_map;
	uint64_t wb[4] = { 0, 0, 0, 0 }; /* writeback, then drop-behind: offset, length */

	if (s->mops->shared && u->rid != 0)
		return shared_write(s, u, index, data, len, w);
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

	r = block_put(s, u, index, data, len, fail, need_map, &fd);

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
	if (bitmap_full(&u->bm)) {
		/* What is left to hash is hashed by the commit thread, out of mu: a chunk sent
		 * as one block, with others side by side (commit_hash_many). */
		commit_queue(s, u, cj, w);
		pthread_mutex_unlock(&s->mu);
		r = STORE_PENDING;
		goto out;
	}
	hash_in_order(u, index, data, len, fd);
	writeback_plan(u, wb);
	pthread_mutex_unlock(&s->mu);
	writeback_run(fd, wb);
	r = STEP_OK;
out:
	if (fd >= 0)
		close(fd);
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
void
load_upload(struct store *s, const struct meta_upload_row *row)
{
	const char *user = row->user, *key = row->key, *file = row->file;
	size_t keylen = row->keylen;
	int64_t size = row->size, bs = row->block_size;
	struct store_upload *u;
	char name[128];
	struct stat sb;

	if (size < 0 || bs <= 0 || bs > (1 << 30) || file == NULL || strlen(file) != 81 ||
	    (u = upload_new(user, key, keylen, (uint64_t)size, (uint32_t)bs)) == NULL)
		return;
	memcpy(u->gen, file + 65, 16);
	u->gen[16] = '\0';
	if (row->claim != NULL && strlen(row->claim) == 32)
		memcpy(u->want_md5, row->claim, 32);
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
void
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

/* ---- shared metadata (several instances): the map as a cache of the uploads rows ---- */

/* Drops u from this instance's map without touching its files or its row: another
 * instance committed, dropped or restarted it. Under mu. */
void
upload_forget(struct store *s, struct store_upload *u)
{
	if (map_find(s, u->id) == u) {
		map_remove(s, u);
		u->refs--;
	}
	u->state = UP_DEAD;
}

/* A map entry for the uploads row f found in the metadata, or NULL (ENOMEM). */
static struct store_upload *
upload_from_row(const struct meta_upload_found *f)
{
	const struct meta_upload_row *row = &f->row;
	struct store_upload *u;
	size_t i;

	if (row->size < 0 || row->block_size <= 0 || row->block_size > (1 << 30) ||
	    strlen(row->file) != 81 ||
	    (u = upload_new(row->user, row->key, row->keylen, (uint64_t)row->size,
	         (uint32_t)row->block_size)) == NULL)
		return NULL;
	memcpy(u->gen, row->file + 65, 16);
	u->gen[16] = '\0';
	if (row->claim != NULL && strlen(row->claim) == 32)
		memcpy(u->want_md5, row->claim, 32);
	u->rid = row->rid;
	u->replace = row->replace;
	u->inl = u->size > 0 && u->size <= INLINE_MAX && u->total == 1;
	for (i = 0; i < f->nblocks; i++)
		if (f->blocks[i] < u->total)
			bitmap_set(&u->bm, f->blocks[i]);
	if (row->state != 0) {
		u->state = UP_COMMITTING;
		u->remote = 1;
	}
	return u;
}

int
upload_from_plan(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_upload **up)
{
	struct meta_upload_found f;
	struct store_upload *nu, *cur;
	int r;

	memset(&f, 0, sizeof(f));
	if ((r = s->mops->plan_find(s->meta, user, key, keylen, &f)) != 0)
		return r;
	nu = upload_from_row(&f);
	free(f.buf);
	if (nu == NULL)
		return STEP_ENOMEM;
	if (!nu->inl) { /* plans are recorded for inline uploads only */
		upload_free(nu);
		return STEP_ENOENT;
	}
	/* Its commit consumes the record: this instance's or the planner's, not both. */
	nu->planned = 1;
	pthread_mutex_lock(&s->mu);
	if ((cur = map_find(s, nu->id)) == NULL) {
		map_insert(s, nu); /* the new entry's reference becomes the map's */
		cur = nu;
		nu = NULL;
	}
	cur->refs++;
	*up = cur;
	pthread_mutex_unlock(&s->mu);
	upload_free(nu);
	return STEP_OK;
}

static void shared_commit(
    struct store *s, struct store_upload *u, struct store_job *cj, struct store_waiter *w);

/*
 * Brings the entry cur (same row) in line with the row f. A row this instance claimed while
 * cur is still open is a claim whose answer was lost (the database went away after it
 * committed): this instance commits it now, with the job *cjp (then set to NULL). Under mu.
 */
static void
upload_refresh(struct store *s, struct store_upload *cur, const struct meta_upload_found *f,
    struct store_job **cjp)
{
	size_t i;

	cur->replace = f->row.replace;
	for (i = 0; i < f->nblocks; i++)
		if (f->blocks[i] < cur->total && !bitmap_test(&cur->bm, f->blocks[i]))
			bitmap_set(&cur->bm, f->blocks[i]);
	if (f->row.state == 2 && cur->state == UP_OPEN && *cjp != NULL &&
	    (!cur->inl || cur->mem != NULL)) {
		shared_commit(s, cur, *cjp, NULL);
		*cjp = NULL;
	} else if (f->row.state != 0 && cur->state == UP_OPEN) {
		cur->state = UP_COMMITTING;
		cur->remote = 1;
	} else if (f->row.state == 0 && cur->remote) {
		cur->state = UP_OPEN;
		cur->remote = 0;
	}
}

int
upload_sync(struct store *s, const char *user, const char *key, size_t keylen, int blocks)
{
	struct meta_upload_found f;
	struct store_upload *cur, *nu = NULL;
	struct store_job *cj = NULL;
	uint8_t id[HASH_SHA256_LEN];
	int r;

	if (!s->mops->shared)
		return STEP_OK;
	memset(&f, 0, sizeof(f));
	r = s->mops->upload_find(s->meta, user, key, keylen, blocks, &f);
	if (r != 0 && r != STEP_ENOENT)
		return r;
	if (r == 0 &&
	    ((nu = upload_from_row(&f)) == NULL ||
	        (f.row.state == 2 && (cj = job_new(JOB_COMMIT)) == NULL))) {
		upload_free(nu);
		free(f.buf);
		free(f.blocks);
		return STEP_ENOMEM;
	}
	key_id(user, key, keylen, id);
	pthread_mutex_lock(&s->mu);
	cur = map_find(s, id);
	/* An entry this instance is committing is left alone: its commit ends it. */
	if (cur != NULL && (cur->state != UP_COMMITTING || cur->remote) &&
	    (nu == NULL || cur->rid != nu->rid)) {
		upload_forget(s, cur);
		if (cur->refs == 0)
			upload_free(cur);
		cur = NULL;
	}
	if (cur != NULL && nu != NULL && cur->rid == nu->rid) {
		upload_refresh(s, cur, &f, &cj);
	} else if (cur == NULL && nu != NULL) {
		map_insert(s, nu);
		nu = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	upload_free(nu);
	job_free(cj);
	free(f.buf);
	free(f.blocks);
	return STEP_OK;
}

/* Where a block request of u goes while u is not open: STEP_ENOENT, or STORE_PENDING
 * (w answered by this instance's commit, or by another's: await_queue); 0 when open.
 * Under mu. */
static int
shared_state(struct store *s, struct store_upload *u, struct store_waiter *w)
{
	if (u->state == UP_DEAD)
		return STEP_ENOENT;
	if (u->state == UP_OPEN)
		return STEP_OK;
	if (u->remote)
		return await_queue(s, u, w);
	w->next = u->waiters;
	u->waiters = w;
	return STORE_PENDING;
}

/* This instance won the commit of u (the metadata's claim): queue it. Under mu. */
static void
shared_commit(struct store *s, struct store_upload *u, struct store_job *cj, struct store_waiter *w)
{
	uint64_t i;

	for (i = 0; i < u->total; i++)
		if (!bitmap_test(&u->bm, i))
			bitmap_set(&u->bm, i);
	u->remote = 0;
	commit_queue(s, u, cj, w);
}

/*
 * store_upload_write with shared metadata: the block goes to the shared temp object with
 * pwrite at its offset (an inline upload's is kept in memory), then the metadata records
 * it and decides, under the row's lock, whether it completed the upload; the instance
 * whose block did commits. A block of an upload another instance commits is answered by
 * that commit (await_queue).
 */
static int
shared_write(struct store *s, struct store_upload *u, uint64_t index, const uint8_t *data,
    size_t len, struct store_waiter *w)
{
	struct store_job *cj = job_new(JOB_COMMIT);
	uint8_t *mem = NULL;
	uint64_t wb[4] = { 0, 0, 0, 0 };
	int fd = -1, r, rr = 0, fail = 0;

	if (cj == NULL || (u->inl && (mem = malloc(len)) == NULL)) {
		job_free(cj);
		return STEP_ENOMEM;
	}
	pthread_mutex_lock(&s->mu);
	if ((r = shared_state(s, u, w)) == 0) {
		u->writers++;
		if (fault_hit(&s->nwrite, s->fault_write, "block write"))
			fail = s->fault_errno;
	}
	pthread_mutex_unlock(&s->mu);
	if (r != 0)
		goto out;
	if (u->inl)
		r = fail ? err_from_errno(fail) : (memcpy(mem, data, len), STEP_OK);
	else
		r = block_put(s, u, index, data, len, fail, 0, &fd);
	if (r == 0 && (rr = s->mops->block_done(s->meta, u->rid, index, u->total)) < 0)
		r = rr;
	pthread_mutex_lock(&s->mu);
	if (--u->writers == 0)
		pthread_cond_broadcast(&s->wcond);
	if (r == 0 && u->state == UP_DEAD)
		r = STEP_ENOENT;
	if (r != 0)
		goto unlock;
	if (u->state == UP_COMMITTING && !u->remote && rr == META_BLOCK_RECORDED) {
		/* Recorded before another connection's block completed the set and won the
		 * claim: that block's answer carries the md5, this one is a plain OK. */
		goto unlock;
	}
	if (u->state == UP_COMMITTING && !u->remote && rr != META_BLOCK_GONE) {
		r = shared_state(s, u, w); /* a repeat while this instance commits: its answer */
		goto unlock;
	}
	switch (rr) {
	case META_BLOCK_GONE:
		upload_forget(s, u);
		r = STEP_ENOENT;
		break;
	case META_BLOCK_ELSEWHERE:
		if (u->state == UP_OPEN) {
			u->state = UP_COMMITTING;
			u->remote = 1;
		}
		r = shared_state(s, u, w);
		break;
	case META_BLOCK_CLAIMED:
		if (u->inl) {
			u->mem = mem;
			mem = NULL;
			hash_md5_hex(u->mem, len, u->mem_md5);
			u->next_hashed = 1;
		}
		shared_commit(s, u, cj, w);
		cj = NULL;
		r = STORE_PENDING;
		break;
	default:
		if (!bitmap_test(&u->bm, index))
			bitmap_set(&u->bm, index);
		u->touched = util_wall_s();
		hash_in_order(u, index, data, len, fd);
		if (fd >= 0)
			writeback_plan(u, wb);
	}
unlock:
	pthread_mutex_unlock(&s->mu);
	if (fd >= 0)
		writeback_run(fd, wb);
out:
	if (fd >= 0)
		close(fd);
	job_free(cj);
	free(mem);
	return r;
}
