/*
 * sparse.c — read(2) that skips reading holes (sparse.h). Only lseek and fstat besides
 * read; never changes the file.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sparse.h"

ssize_t
sparse_read(int fd, void *buf, size_t n)
{
	struct stat st;
	off_t pos, data;
	size_t k;

	if (n == 0 || (pos = lseek(fd, 0, SEEK_CUR)) < 0)
		return read(fd, buf, n);
	data = lseek(fd, pos, SEEK_DATA);
	if (data == pos || (data < 0 && errno != ENXIO)) {
		/* data here, or no SEEK_DATA: an ordinary read (from pos again) */
		if (data != pos && lseek(fd, pos, SEEK_SET) < 0)
			return -1;
		return read(fd, buf, n);
	}
	if (data < 0) {
		/* ENXIO: a hole up to the end of the file, or the end itself */
		if (fstat(fd, &st) != 0)
			return -1;
		if (st.st_size <= pos) {
			if (lseek(fd, pos, SEEK_SET) < 0)
				return -1;
			return read(fd, buf, n); /* 0, or what was appended meanwhile */
		}
		data = st.st_size;
	}
	k = (uint64_t)(data - pos) < n ? (size_t)(data - pos) : n;
	memset(buf, 0, k);
	if (lseek(fd, pos + (off_t)k, SEEK_SET) < 0)
		return -1;
	return (ssize_t)k;
}
