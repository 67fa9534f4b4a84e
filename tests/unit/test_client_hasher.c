/* test_client_hasher.c — the download hasher: the MD5 of a file written in pieces while
 * the hasher thread reads it (mapped, dropping what it hashed from the page cache), of a
 * memory buffer, and giving up midway. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "err.h"
#include "hash.h"
#include "hasher.h"

#define SIZE (40 * 1048576 + 12345) /* past the drop-behind distance, a partial page */

static uint8_t *
pattern(void)
{
	uint8_t *p = malloc(SIZE);
	uint32_t x = 12345;
	size_t i;

	assert_non_null(p);
	for (i = 0; i < SIZE; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (uint8_t)(x >> 16);
	}
	return p;
}

static void
test_file_written_in_pieces(void **state)
{
	char path[] = "/tmp/test_hasher.XXXXXX", want[HASH_MD5_HEX], got[HASH_MD5_HEX];
	uint8_t *p = pattern();
	struct hasher *h;
	size_t off, n;
	int fd;

	hash_md5_hex(p, SIZE, want);
	assert_true((fd = mkstemp(path)) >= 0);
	unlink(path);
	assert_int_equal(hasher_start(fd, NULL, SIZE, &h), 0);
	/* Written in uneven pieces, as blocks arrive; the hasher follows behind. */
	for (off = 0; off < SIZE; off += n) {
		n = SIZE - off < 65536 + 7 ? SIZE - off : 65536 + 7;
		assert_int_equal(pwrite(fd, p + off, n, (off_t)off), (ssize_t)n);
		hasher_advance(h, off + n);
	}
	assert_int_equal(hasher_finish(h, got), 0);
	assert_string_equal(got, want);
	close(fd);
	free(p);
}

static void
test_memory(void **state)
{
	char want[HASH_MD5_HEX], got[HASH_MD5_HEX];
	uint8_t *p = pattern();
	struct hasher *h;

	hash_md5_hex(p, SIZE, want);
	assert_int_equal(hasher_start(-1, p, SIZE, &h), 0);
	hasher_advance(h, 1000);
	hasher_advance(h, SIZE);
	assert_int_equal(hasher_finish(h, got), 0);
	assert_string_equal(got, want);
	free(p);
}

static void
test_give_up_midway(void **state)
{
	char path[] = "/tmp/test_hasher.XXXXXX";
	uint8_t *p = pattern();
	struct hasher *h;
	int fd;

	assert_true((fd = mkstemp(path)) >= 0);
	unlink(path);
	assert_int_equal(hasher_start(fd, NULL, SIZE, &h), 0);
	assert_int_equal(pwrite(fd, p, 100000, 0), 100000);
	hasher_advance(h, 100000);
	hasher_free(h); /* a failed download: stops without waiting for the rest */
	hasher_free(NULL);
	close(fd);
	free(p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_written_in_pieces),
		cmocka_unit_test(test_memory),
		cmocka_unit_test(test_give_up_midway),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("client_hasher", tests, NULL, NULL);
}
