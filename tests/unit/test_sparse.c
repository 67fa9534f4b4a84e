/* test_sparse.c — sparse_read() gives exactly read(2)'s bytes for files with holes at the
 * start, in the middle and at the end, for a file without holes and an empty one, in reads
 * of every size that matters (1 byte to more than the file). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "sparse.h"

#define SIZE (3 * 1024 * 1024 + 123)

static char path[64];

/* Writes a file of SIZE bytes (none: an empty one) with data only in [a, b) and [c, d). */
static void
make_file(off_t a, off_t b, off_t c, off_t d, int empty)
{
	uint8_t blk[8192];
	off_t o;
	int fd;

	snprintf(path, sizeof(path), "/tmp/test_sparse.%ld", (long)getpid());
	assert_true((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0);
	if (!empty)
		assert_int_equal(ftruncate(fd, SIZE), 0);
	for (o = 0; !empty && o < SIZE; o += (off_t)sizeof(blk)) {
		size_t n = SIZE - o < (off_t)sizeof(blk) ? (size_t)(SIZE - o) : sizeof(blk);

		if (!((o >= a && o < b) || (o >= c && o < d)))
			continue;
		for (size_t i = 0; i < n; i++)
			blk[i] = (uint8_t)(o + (off_t)i * 7 + 1);
		assert_int_equal(pwrite(fd, blk, n, o), (ssize_t)n);
	}
	close(fd);
}

/* Reads the whole file with sparse_read() in reads of step bytes; compares with read(). */
static void
check(size_t step)
{
	uint8_t *want = malloc(SIZE + 1), *got = malloc(SIZE + step + 1);
	size_t nw = 0, ng = 0;
	ssize_t k;
	int fd;

	assert_non_null(want);
	assert_non_null(got);
	assert_true((fd = open(path, O_RDONLY)) >= 0);
	while ((k = read(fd, want + nw, SIZE + 1 - nw)) > 0)
		nw += (size_t)k;
	close(fd);
	assert_true((fd = open(path, O_RDONLY)) >= 0);
	while ((k = sparse_read(fd, got + ng, step)) > 0)
		ng += (size_t)k;
	assert_int_equal(k, 0);
	close(fd);
	assert_int_equal(ng, nw);
	assert_memory_equal(got, want, nw);
	free(want);
	free(got);
}

static void
test_shapes(void **state)
{
	static const size_t steps[] = { 1 << 20, 4096, 65536 + 17, 3 * 1024 * 1024 + 500 };
	static const off_t shapes[][5] = {
		{ 0, 0, 0, 0, 0 },                  /* all hole */
		{ 1 << 20, 1 << 21, 0, 0, 0 },      /* hole, data, hole */
		{ 0, 65536, SIZE - 5000, SIZE, 0 }, /* data, hole, data */
		{ 0, SIZE, 0, 0, 0 },               /* no hole */
		{ 0, 0, 0, 0, 1 },                  /* empty */
	};

	(void)state;
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		make_file(
		    shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], (int)shapes[s][4]);
		for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
			check(steps[i]);
	}
	check(1); /* byte by byte, once (the empty file) */
	unlink(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shapes),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("sparse", tests, NULL, NULL);
}
