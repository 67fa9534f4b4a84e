/* test_auth.c — token make/verify (altered, forged, expired, malformed) and user names. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "auth.h"
#include "err.h"
#include "util.h"

static const uint8_t key1[AUTH_SECRET_LEN] = { 1, 2, 3 };
static const uint8_t key2[AUTH_SECRET_LEN] = { 3, 2, 1 };

static void
test_roundtrip(void **state)
{
	char *tok = NULL, *user = NULL;

	assert_int_equal(auth_token_make(key1, "alice", 5, 1000, &tok), 0);
	assert_int_equal(auth_token_check(key1, tok, strlen(tok), 999, &user), 0);
	assert_string_equal(user, "alice");
	free(user);
	free(tok);
}

static void
test_user_with_separators(void **state)
{
	const char *u = "a|b|123|x.y";
	char *tok = NULL, *user = NULL;

	assert_int_equal(auth_token_make(key1, u, strlen(u), 1000, &tok), 0);
	assert_int_equal(auth_token_check(key1, tok, strlen(tok), 1, &user), 0);
	assert_string_equal(user, u);
	free(user);
	free(tok);
}

static void
test_rejects(void **state)
{
	char *tok = NULL, *user = NULL, *forged;
	uint8_t raw[512];
	size_t rawlen;

	assert_int_equal(auth_token_make(key1, "alice", 5, 1000, &tok), 0);
	/* expired */
	assert_int_equal(auth_token_check(key1, tok, strlen(tok), 1000, &user), STEP_EAUTH);
	/* another server's secret */
	assert_int_equal(auth_token_check(key2, tok, strlen(tok), 1, &user), STEP_EAUTH);
	/* not base64 */
	assert_int_equal(auth_token_check(key1, "%%%%", 4, 1, &user), STEP_EAUTH);
	assert_int_equal(auth_token_check(key1, "", 0, 1, &user), STEP_EAUTH);
	/* altered: change the user name, keep the MAC */
	assert_int_equal(util_b64_decode(tok, strlen(tok), raw, &rawlen), 0);
	raw[0] = 'b';
	forged = malloc(4 * ((rawlen + 2) / 3) + 1);
	util_b64_encode(raw, rawlen, forged);
	assert_int_equal(auth_token_check(key1, forged, strlen(forged), 1, &user), STEP_EAUTH);
	/* altered expiry */
	assert_int_equal(util_b64_decode(tok, strlen(tok), raw, &rawlen), 0);
	raw[6] = '9';
	util_b64_encode(raw, rawlen, forged);
	assert_int_equal(auth_token_check(key1, forged, strlen(forged), 1, &user), STEP_EAUTH);
	/* truncated */
	assert_int_equal(auth_token_check(key1, tok, 8, 1, &user), STEP_EAUTH);
	assert_null(user);
	free(forged);
	free(tok);
}

static void
test_user_names(void **state)
{
	char *tok = NULL;

	assert_true(auth_user_valid("alice", 5));
	assert_true(auth_user_valid("z\xc3\xbcrich", 7));
	assert_false(auth_user_valid("", 0));
	assert_false(auth_user_valid("a\nb", 3));
	assert_false(auth_user_valid("a\0b", 3));
	assert_int_equal(auth_token_make(key1, "a\nb", 3, 10, &tok), STEP_EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_user_with_separators),
		cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_user_names),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
