/*
 * store_pack.c — packs of small objects: one-block objects up to STORE_INLINE_MAX are
 * appended, a batch at a time, to pack/NNNNNNNN.pack (objects.file "pack:<n>:<off>"); a
 * removed object's range is punched out.
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

/* ---- packs ---- */

/* The fd of pack n, opened (created when create is set) on first use; -1 with errno. */
int
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
int
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
void
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
void
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
int
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
int
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
