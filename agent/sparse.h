/*
 * sparse.h — reading files with holes: what a hole holds (zeros) is filled in without
 * reading it (SEEK_DATA), so backing up a large sparse file does not read its holes from
 * disk. The bytes are the same as read(2)'s. The restore side is restore.c's write_sparse().
 */
#ifndef STEP_SPARSE_H
#define STEP_SPARSE_H

#include <stddef.h>
#include <sys/types.h>

/*
 * read(2) of up to n bytes at fd's offset, which it advances: the count (0 at the end of
 * the file) or -1 with errno. Within a hole it gives zeros without reading; a file system
 * without SEEK_DATA is simply read.
 */
ssize_t sparse_read(int fd, void *buf, size_t n);

#endif
