/* test_store_list.c — the key range of a LIST: it starts at the later of "after" and the
 * prefix and ends before the first string that no longer has the prefix, so a LIST of a
 * few keys never walks the user's other keys. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "store_meta.h"

static void
upper_is(const char *prefix, const char *want)
{
	char out[64];
	size_t n = store_list_upper(prefix, strlen(prefix), out, sizeof(out));

	assert_int_equal(n, strlen(want));
	assert_memory_equal(out, want, n);
}

static void
test_upper(void **state)
{
	(void)state;
	upper_is("s.tree.", "s.tree/");
	upper_is("o.", "o/");
	upper_is("", "");                                 /* no bound */
	upper_is("caf\xc3\xa9", "caf\xc3\xaa");           /* é -> ê */
	upper_is("a\xed\x9f\xbf", "a\xee\x80\x80");       /* U+D7FF -> U+E000 (no surrogates) */
	upper_is("b\xf4\x8f\xbf\xbf", "c");               /* U+10FFFF dropped, b -> c */
	upper_is("\xf4\x8f\xbf\xbf\xf4\x8f\xbf\xbf", ""); /* nothing above */
	upper_is("x\x7f", "x\xc2\x80");                   /* DEL -> U+0080, still UTF-8 */
	upper_is("bad\xff", "");                          /* not UTF-8: no bound */
}

static void
test_lower(void **state)
{
	const char *low;
	size_t len;

	(void)state;
	/* No "after": from the prefix, itself included. */
	assert_int_equal(store_list_lower("s.t.", 4, "", 0, &low, &len), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(low, "s.t.", 4);
	/* "after" inside the prefix's range: strictly after it. */
	assert_int_equal(store_list_lower("s.t.", 4, "s.t.0005", 8, &low, &len), 1);
	assert_memory_equal(low, "s.t.0005", 8);
	/* "after" below the prefix: from the prefix. */
	assert_int_equal(store_list_lower("s.t.", 4, "o.ffff", 6, &low, &len), 0);
	assert_memory_equal(low, "s.t.", 4);
	/* "after" a proper prefix of the prefix: from the prefix. */
	assert_int_equal(store_list_lower("s.t.", 4, "s.", 2, &low, &len), 0);
	/* "after" equal to the prefix: strictly after it. */
	assert_int_equal(store_list_lower("s.t.", 4, "s.t.", 4, &low, &len), 1);
	/* "after" past the range: the range is empty from there on. */
	assert_int_equal(store_list_lower("s.t.", 4, "u", 1, &low, &len), 1);
	/* Empty prefix, empty after: everything. */
	assert_int_equal(store_list_lower("", 0, "", 0, &low, &len), 0);
	assert_int_equal(len, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_upper),
		cmocka_unit_test(test_lower),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("store_list", tests, NULL, NULL);
}
