/*
 * hasher.c — a background MD5 over an in-order growing file or buffer. The only
 * shared state is two byte counts under one mutex. A file is mapped when it can be, so
 * the hasher reads the written pages in place instead of copying them out with pread.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "err.h"
#include "hasher.h"

#define HASHER_CHUNK (1u << 20)  /* bytes read back and hashed at a time */
#define DROP_STEP    (8u << 20)  /* page-cache drop-behind granularity */
#define DROP_LAG     (32u << 20) /* hashed bytes kept cached behind the hasher */

struct hasher {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;
	const uint8_t *mem;
	uint64_t total; /* bytes to hash */
	uint64_t avail; /* bytes written so far (writer) */
	uint64_t done;  /* bytes hashed (hasher thread) */
	int stop;       /* writer gave up */
	int err;        /* STEP_ESYS when a read failed */
	struct hash_ctx *md5;
	uint8_t *buf;     /* HASHER_CHUNK bytes, file mode only */
	void *map;        /* the file mapped read-only (mem points into it), or NULL */
	int file_fd;      /* the file (also when mapped), -1 for memory */
	uint64_t dropped; /* bytes [0, dropped) dropped from the page cache */
};

/*
 * Drop-behind: hashed bytes well behind the hasher were handed to writeback by the
 * writer (every few MiB) and are not needed again: drop them from the page cache, so a
 * download cycles through a few warm MiB of cache instead of claiming fresh pages for
 * every byte (on a VM, first touching a page costs several times the copy into it).
 * Pages still dirty are skipped; nothing here waits for the disk.
 */
static void
drop_behind(struct hasher *h, uint64_t hashed)
{
	uint64_t to;

	if (h->file_fd < 0 || hashed < h->dropped + DROP_LAG + DROP_STEP)
		return;
	to = (hashed - DROP_LAG) / DROP_STEP * DROP_STEP;
	if (h->map != NULL)
		madvise((uint8_t *)h->map + h->dropped, (size_t)(to - h->dropped), MADV_DONTNEED);
	posix_fadvise(h->file_fd, (off_t)h->dropped, (off_t)(to - h->dropped), POSIX_FADV_DONTNEED);
	h->dropped = to;
}

static int
read_back(struct hasher *h, uint64_t off, size_t n)
{
	size_t got = 0;
	ssize_t k;

	while (got < n) {
		k = pread(h->fd, h->buf + got, n - got, (off_t)(off + got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return STEP_ESYS;
		got += (size_t)k;
	}
	return STEP_OK;
}

static void *
hasher_main(void *arg)
{
	struct hasher *h = arg;
	uint64_t off;
	size_t n;
	int r = 0;

	pthread_mutex_lock(&h->mu);
	while (h->done < h->total && !h->stop && r == 0) {
		if (h->avail == h->done) {
			pthread_cond_wait(&h->cv, &h->mu);
			continue;
		}
		off = h->done;
		n = h->avail - off > HASHER_CHUNK ? HASHER_CHUNK : (size_t)(h->avail - off);
		pthread_mutex_unlock(&h->mu);
		if (h->fd >= 0) {
			if ((r = read_back(h, off, n)) == 0)
				hash_update(h->md5, h->buf, n);
		} else {
			hash_update(h->md5, h->mem + off, n);
		}
		if (r == 0)
			drop_behind(h, off + n);
		pthread_mutex_lock(&h->mu);
		h->done += n;
	}
	h->err = r;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

int
hasher_start(int fd, const uint8_t *mem, uint64_t total, struct hasher **outp)
{
	struct hasher *h;

	if ((h = calloc(1, sizeof(*h))) == NULL)
		return STEP_ENOMEM;
	h->fd = fd;
	h->file_fd = fd;
	h->mem = mem;
	h->total = total;
	if (fd >= 0 && total > 0 && total <= SIZE_MAX) {
		/* Only bytes already written are read, so no page past the end of the file is
		 * touched; the file is our own temporary file, nobody truncates it. */
		h->map = mmap(NULL, (size_t)total, PROT_READ, MAP_SHARED, fd, 0);
		if (h->map == MAP_FAILED) {
			h->map = NULL;
		} else {
			madvise(h->map, (size_t)total, MADV_SEQUENTIAL);
			h->mem = h->map;
			h->fd = -1;
		}
	}
	if ((h->md5 = hash_md5_new()) == NULL ||
	    (h->fd >= 0 && (h->buf = malloc(HASHER_CHUNK)) == NULL)) {
		hash_free(h->md5);
		if (h->map != NULL)
			munmap(h->map, (size_t)total);
		free(h);
		return STEP_ENOMEM;
	}
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	if (pthread_create(&h->th, NULL, hasher_main, h) != 0) {
		pthread_mutex_destroy(&h->mu);
		pthread_cond_destroy(&h->cv);
		hash_free(h->md5);
		free(h->buf);
		if (h->map != NULL)
			munmap(h->map, (size_t)total);
		free(h);
		return STEP_ESYS;
	}
	*outp = h;
	return STEP_OK;
}

void
hasher_advance(struct hasher *h, uint64_t n)
{
	pthread_mutex_lock(&h->mu);
	if (n > h->avail) {
		h->avail = n > h->total ? h->total : n;
		pthread_cond_signal(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
}

/* Frees h after its thread has been joined. */
static void
hasher_free_joined(struct hasher *h)
{
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	hash_free(h->md5);
	free(h->buf);
	if (h->map != NULL)
		munmap(h->map, (size_t)h->total);
	free(h);
}

int
hasher_finish(struct hasher *h, char out[HASH_MD5_HEX])
{
	uint8_t dig[HASH_MD5_LEN];
	int r;

	pthread_join(h->th, NULL);
	r = h->err;
	if (r == 0 && h->done == h->total) {
		hash_final(h->md5, dig);
		hash_to_hex(dig, HASH_MD5_LEN, out);
	} else if (r == 0) {
		r = STEP_EIO;
	}
	hasher_free_joined(h);
	return r;
}

void
hasher_free(struct hasher *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->mu);
	h->stop = 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->th, NULL);
	hasher_free_joined(h);
}
