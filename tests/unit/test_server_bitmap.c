/* test_server_bitmap.c — received-block bitmap: set, repeat, full, range listing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "bitmap.h"
#include "err.h"

static void
test_set_and_count(void **state)
{
	struct bitmap b;

	assert_int_equal(bitmap_init(&b, 130), 0);
	assert_int_equal(bitmap_set(&b, 0), 1);
	assert_int_equal(bitmap_set(&b, 0), 0); /* repeat */
	assert_int_equal(bitmap_set(&b, 129), 1);
	assert_int_equal(bitmap_set(&b, 130), 0); /* out of range */
	assert_int_equal(bitmap_test(&b, 129), 1);
	assert_int_equal(bitmap_test(&b, 64), 0);
	assert_int_equal(bitmap_test(&b, 1000), 0);
	assert_int_equal(b.count, 2);
	assert_false(bitmap_full(&b));
	bitmap_release(&b);
}

static void
test_full_and_empty(void **state)
{
	struct bitmap b;
	uint64_t i;

	assert_int_equal(bitmap_init(&b, 0), 0);
	assert_true(bitmap_full(&b)); /* a zero-size upload is complete at once */
	assert_int_equal(bitmap_ranges(&b, NULL, 0), 0);
	bitmap_release(&b);
	assert_int_equal(bitmap_init(&b, 200), 0);
	for (i = 200; i-- > 0;)
		bitmap_set(&b, i);
	assert_true(bitmap_full(&b));
	bitmap_release(&b);
}

static void
test_ranges(void **state)
{
	static const uint64_t set[] = { 0, 1, 2, 5, 63, 64, 65, 127, 128, 129, 199 };
	uint64_t out[8][2];
	struct bitmap b;
	size_t i, n;

	assert_int_equal(bitmap_init(&b, 200), 0);
	for (i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		bitmap_set(&b, set[i]);
	n = bitmap_ranges(&b, out, 8);
	assert_int_equal(n, 5);
	assert_int_equal(out[0][0], 0);
	assert_int_equal(out[0][1], 2);
	assert_int_equal(out[1][0], 5);
	assert_int_equal(out[1][1], 5);
	assert_int_equal(out[2][0], 63);
	assert_int_equal(out[2][1], 65);
	assert_int_equal(out[3][0], 127);
	assert_int_equal(out[3][1], 129);
	assert_int_equal(out[4][0], 199);
	assert_int_equal(out[4][1], 199);
	/* A short output array still reports the total count. */
	assert_int_equal(bitmap_ranges(&b, out, 2), 5);
	bitmap_release(&b);
}

static void
test_ranges_whole_words(void **state)
{
	uint64_t out[2][2];
	struct bitmap b;
	uint64_t i;

	assert_int_equal(bitmap_init(&b, 1000), 0);
	for (i = 10; i < 900; i++)
		bitmap_set(&b, i);
	assert_int_equal(bitmap_ranges(&b, out, 2), 1);
	assert_int_equal(out[0][0], 10);
	assert_int_equal(out[0][1], 899);
	bitmap_release(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_and_count),
		cmocka_unit_test(test_full_and_empty),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_ranges_whole_words),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("server_bitmap", tests, NULL, NULL);
}
