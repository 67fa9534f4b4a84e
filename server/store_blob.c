/*
 * store_blob.c — object bytes under the root: complete writes and reads at offsets, the
 * free-space reserve, reading a committed object, giving a removed object's bytes back,
 * and the start-up clean-up of files no object names.
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

int
err_from_errno(int e)
{
	if (e == ENOTCONN)
		return STEP_ECONNECT; /* shared storage unreachable (and STEP_FAULT's enotconn): 503
		                       */
	return (e == ENOSPC || e == EDQUOT) ? STEP_ENOSPC : STEP_EIO;
}

/*
 * 1 when writing len more bytes would eat into the space kept free for the metadata
 * database. Without that reserve a full disk also fails SQLite's transactions, and then
 * not even a DELETE can free space again.
 */
int
space_low(int dirfd, size_t len)
{
	struct statvfs v;

	if (fstatvfs(dirfd, &v) != 0)
		return 0;
	return (uint64_t)v.f_bavail * v.f_frsize < (uint64_t)len + SPACE_RESERVE;
}

/* Writes iov[0..cnt) at off, however many calls it takes; 0, or -1 with errno. */
int
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
ssize_t
pwrite_all(int fd, const uint8_t *data, size_t len, off_t off)
{
	struct iovec v = { (void *)data, len };

	return pwritev_all(fd, &v, 1, off) == 0 ? (ssize_t)len : -1;
}

/* Reads exactly len bytes at off; STEP_OK, or STEP_EIO (an error or end of file). */
int
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

int
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

int
store_object_read(
    struct store *s, const struct store_obj *o, uint64_t off, uint8_t *dst, size_t len)
{
	int fd, r;

	if (strncmp(o->file, PACK_PREFIX, strlen(PACK_PREFIX)) == 0)
		return pack_read(s, o, off, dst, len);
	if (strncmp(o->file, BLOB_PREFIX, strlen(BLOB_PREFIX)) == 0)
		return s->mops->blob_read(s->meta, o->file, off, dst, len);
	if ((fd = openat(s->objfd, o->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return errno == ENOENT ? STEP_ENOENT : STEP_EIO;
	r = pread_all(fd, dst, len, (off_t)off);
	close(fd);
	return r;
}

/* Gives the bytes of an object whose row is gone back: its pack range or its file. */
void
obj_reclaim(struct store *s, const char *file, uint64_t size)
{
	uint64_t off;
	unsigned n;

	if (pack_parse(file, &n, &off))
		pack_punch(s, file, size);
	else if (strncmp(file, BLOB_PREFIX, strlen(BLOB_PREFIX)) != 0)
		unlinkat(s->objfd, file, 0);
}

/*
 * Start-up clean-up after a crash: a file in obj/ that no object names (renamed, then the
 * crash came before its row was committed) is removed, and so is the tail of the last
 * pack beyond its last referenced byte (written, then the crash came before the rows).
 */
void
reclaim_orphans(struct store *s)
{
	struct dirent *e;
	uint64_t end = 0;
	unsigned removed = 0;
	DIR *d;
	int fd = dup(s->objfd);

	if (fd >= 0 && (d = fdopendir(fd)) != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.')
				continue;
			if (s->mops->file_named(s->meta, e->d_name) == 0 &&
			    unlinkat(s->objfd, e->d_name, 0) == 0)
				removed++;
		}
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
	if (s->mops->pack_end(s->meta, s->pack_no, &end) != 0)
		return;
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
