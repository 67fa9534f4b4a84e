/* test_client_blockset.c — the acknowledged-block set: bits, counts, stored bitmaps and
 * stepd's "received" ranges (including malformed ones, which must change nothing). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "blockset.h"
#include "err.h"

static void
test_set_and_count(void **state)
{
	struct blockset b;

	assert_int_equal(blockset_init(&b, 10), 0);
	assert_int_equal(blockset_nbytes(10), 2);
	assert_int_equal(blockset_set(&b, 3), 1);
	assert_int_equal(blockset_set(&b, 3), 0); /* repeats are not counted twice */
	assert_int_equal(blockset_set(&b, 9), 1);
	assert_int_equal(blockset_set(&b, 10), 0); /* out of range is ignored */
	assert_int_equal(b.count, 2);
	assert_true(blockset_test(&b, 3));
	assert_false(blockset_test(&b, 4));
	assert_false(blockset_test(&b, 10));
	assert_int_equal(blockset_next_missing(&b, 0), 0);
	assert_int_equal(blockset_next_missing(&b, 3), 4);
	blockset_clear(&b);
	assert_int_equal(b.count, 0);
	blockset_release(&b);
}

static void
test_next_missing_skips_full_bytes(void **state)
{
	struct blockset b;
	uint32_t i;

	assert_int_equal(blockset_init(&b, 100), 0);
	for (i = 0; i < 100; i++)
		if (i != 77)
			blockset_set(&b, i);
	assert_int_equal(blockset_next_missing(&b, 0), 77);
	blockset_set(&b, 77);
	assert_int_equal(blockset_next_missing(&b, 0), 100);
	blockset_release(&b);
}

static void
test_load(void **state)
{
	struct blockset b;
	uint8_t bits[2] = { 0x81, 0xff }; /* blocks 0, 7, 8, 9 (padding bits ignored) */

	assert_int_equal(blockset_init(&b, 10), 0);
	assert_int_equal(blockset_load(&b, bits, 2), 0);
	assert_int_equal(b.count, 4);
	assert_true(blockset_test(&b, 7));
	assert_true(blockset_test(&b, 9));
	assert_int_equal(blockset_load(&b, bits, 1), STEP_EINVAL); /* wrong length */
	blockset_release(&b);
}

static void
test_ranges(void **state)
{
	struct blockset b;
	json_t *r;

	assert_int_equal(blockset_init(&b, 20), 0);
	r = json_loads("[[0,2],[5,5],[18,19]]", 0, NULL);
	assert_int_equal(blockset_add_ranges(&b, r), 0);
	json_decref(r);
	assert_int_equal(b.count, 6);
	assert_true(blockset_test(&b, 5));
	assert_false(blockset_test(&b, 3));
	assert_int_equal(blockset_next_missing(&b, 0), 3);
	blockset_release(&b);
}

static void
test_bad_ranges_change_nothing(void **state)
{
	static const char *const bad[] = { "{}", "[[0]]", "[[3,1]]", "[[0,20]]", "[[-1,2]]",
		"[[0,1],[\"a\",2]]", "[[0,1],[2,99]]", "[1,2]" };
	struct blockset b;
	size_t i;
	json_t *r;

	assert_int_equal(blockset_init(&b, 20), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = json_loads(bad[i], 0, NULL);
		assert_non_null(r);
		assert_int_equal(blockset_add_ranges(&b, r), STEP_EINVAL);
		assert_int_equal(b.count, 0);
		json_decref(r);
	}
	blockset_release(&b);
}

static void
test_empty_file(void **state)
{
	struct blockset b;
	json_t *r = json_loads("[]", 0, NULL);

	assert_int_equal(blockset_init(&b, 0), 0);
	assert_int_equal(blockset_add_ranges(&b, r), 0);
	assert_int_equal(blockset_next_missing(&b, 0), 0);
	assert_int_equal(blockset_load(&b, "", 0), 0);
	json_decref(r);
	blockset_release(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_and_count),
		cmocka_unit_test(test_next_missing_skips_full_bytes),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_bad_ranges_change_nothing),
		cmocka_unit_test(test_empty_file),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("client_blockset", tests, NULL, NULL);
}
