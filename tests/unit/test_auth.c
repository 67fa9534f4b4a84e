/*
 * test_auth.c — token make/verify (altered, forged, expired, malformed), user names, the
 * failed-login throttle table (per user, per address, window, eviction, bounded size) and
 * auth_login over a temporary root (unknown user and wrong password alike, in result and
 * in PBKDF2 work; a locked user or address refused even with the right password).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "auth.h"
#include "err.h"
#include "hash.h"
#include "log.h"
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

#define U(s) (s), strlen(s)

static void
test_throttle_pair(void **state)
{
	struct auth_throttle *t = NULL;
	uint64_t now = 1000000;
	int i;

	assert_int_equal(auth_throttle_new(3, 60, key1, &t), 0);
	for (i = 0; i < 2; i++) {
		auth_throttle_fail(t, U("alice"), "10.0.0.1", now);
		assert_int_equal(auth_throttle_wait(t, U("alice"), "10.0.0.1", now), 0);
	}
	/* The third failure of the pair: its next attempt waits 1 s. */
	auth_throttle_fail(t, U("alice"), "10.0.0.1", now);
	assert_int_equal(auth_throttle_wait(t, U("alice"), "10.0.0.1", now), 1);
	/* Never the name for everyone, nor the address for other names (3 < 3 x 4). */
	assert_int_equal(auth_throttle_wait(t, U("alice"), "10.0.0.2", now), 0);
	assert_int_equal(auth_throttle_wait(t, U("bob"), "10.0.0.1", now), 0);
	assert_int_equal(auth_throttle_wait(t, U("alicf"), "10.0.0.1", now), 0);
	/* The delay passes, and grows with each further failure: 2 s, 4 s, 8 s. */
	assert_int_equal(auth_throttle_wait(t, U("alice"), "10.0.0.1", now + 1000), 0);
	auth_throttle_fail(t, U("alice"), "10.0.0.1", now + 1000);
	assert_int_equal(auth_throttle_wait(t, U("alice"), "10.0.0.1", now + 1000), 2);
	auth_throttle_fail(t, U("alice"), "10.0.0.1", now + 3000);
	assert_int_equal(auth_throttle_wait(t, U("alice"), "10.0.0.1", now + 3000), 4);
	auth_throttle_fail(t, U("alice"), "10.0.0.1", now + 7000);
	assert_int_equal(auth_throttle_wait(t, U("alice"), "10.0.0.1", now + 7500), 8);
	/* At most the window (11 failures: the address, 3 x 4, does not wait yet). */
	for (i = 0; i < 5; i++)
		auth_throttle_fail(t, U("alice"), "10.0.0.1", now + 8000);
	assert_int_equal(auth_throttle_wait(t, U("alice"), "10.0.0.1", now + 8000), 60);
	/* A success forgets the pair. */
	auth_throttle_success(t, U("alice"), "10.0.0.1");
	assert_int_equal(auth_throttle_wait(t, U("alice"), "10.0.0.1", now + 8000), 0);
	/* Failures are forgotten a window after the last one. */
	for (i = 0; i < 3; i++)
		auth_throttle_fail(t, U("carol"), "10.0.0.3", now);
	auth_throttle_fail(t, U("carol"), "10.0.0.3", now + 61000);
	assert_int_equal(auth_throttle_wait(t, U("carol"), "10.0.0.3", now + 61000), 0);
	/* Without an address nothing is counted (a name alone is never throttled). */
	for (i = 0; i < 10; i++)
		auth_throttle_fail(t, U("dave"), NULL, now);
	assert_int_equal(auth_throttle_wait(t, U("dave"), "10.0.0.4", now), 0);
	auth_throttle_free(t);
}

static void
test_throttle_address(void **state)
{
	struct auth_throttle *t = NULL;
	char name[32];
	int i;

	assert_int_equal(auth_throttle_new(1, 60, key1, &t), 0);
	/* Four names (1 x AUTH_ADDR_FACTOR) from one address: the address waits. */
	for (i = 0; i < AUTH_ADDR_FACTOR; i++) {
		snprintf(name, sizeof(name), "user%d", i);
		auth_throttle_fail(t, U(name), "192.0.2.7", 100);
	}
	assert_int_equal(auth_throttle_wait(t, U("anyone"), "192.0.2.7", 101), 1);
	assert_int_equal(auth_throttle_wait(t, NULL, 0, "192.0.2.7", 101), 1);
	assert_int_equal(auth_throttle_wait(t, U("user0"), "192.0.2.8", 101), 0);
	/* IPv4-mapped IPv6 is the IPv4 address. */
	assert_int_equal(auth_throttle_wait(t, NULL, 0, "::ffff:192.0.2.7", 101), 1);
	/* IPv6 counts by /64. */
	for (i = 0; i < AUTH_ADDR_FACTOR; i++) {
		snprintf(name, sizeof(name), "2001:db8:1:2::%x", i + 1);
		auth_throttle_fail(t, NULL, 0, name, 100);
	}
	assert_int_equal(auth_throttle_wait(t, NULL, 0, "2001:db8:1:2:ffff::1", 101), 1);
	assert_int_equal(auth_throttle_wait(t, NULL, 0, "2001:db8:1:3::1", 101), 0);
	auth_throttle_free(t);
}

static void
test_throttle_bounded(void **state)
{
	const size_t cap = (size_t)AUTH_THROTTLE_SETS * AUTH_THROTTLE_WAYS;
	struct auth_throttle *t = NULL;
	char name[32];
	int i;

	assert_int_equal(auth_throttle_new(2, 60, key1, &t), 0);
	/* A flood of failures under fresh names and addresses fills the table but never
	 * grows it. */
	for (i = 0; i < 200000; i++) {
		snprintf(
		    name, sizeof(name), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		auth_throttle_fail(t, U("flood"), name, 20);
	}
	assert_int_equal(auth_throttle_count(t, 21), cap);
	/* Everything expires with the window. */
	assert_int_equal(auth_throttle_count(t, 20 + 60000), 0);
	auth_throttle_free(t);
}

static char test_root[64];

static int
root_setup(void **state)
{
	snprintf(test_root, sizeof(test_root), "/tmp/test_auth.XXXXXX");
	if (mkdtemp(test_root) == NULL)
		return -1;
	return auth_user_add(test_root, "alice", "right") == 0 &&
	        auth_user_add(test_root, "bob", "right") == 0
	    ? 0
	    : -1;
}

static int
root_teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_root);
	return system(cmd) == 0 ? 0 : -1;
}

/* Seconds one auth_login takes (best of n: the least disturbed by other load). */
static double
login_time(struct auth *a, const char *user, const char *plain, int want, int n)
{
	char md5hex[HASH_MD5_HEX], *tok = NULL;
	double best = 1e9;
	int i;

	hash_md5_hex(plain, strlen(plain), md5hex);
	for (i = 0; i < n; i++) {
		double t0 = util_now_s(), dt;

		assert_int_equal(auth_login(a, U(user), md5hex, 32, NULL, &tok), want);
		dt = util_now_s() - t0;
		if (dt < best)
			best = dt;
		free(tok);
		tok = NULL;
	}
	return best;
}

static void
test_login_unknown_user(void **state)
{
	struct auth *a = NULL;
	char err[256];
	double wrong, unknown;
	int i;

	assert_int_equal(auth_open(test_root, AUTH_USERS, 3600, &a, err, sizeof(err)), 0);
	assert_int_equal(auth_set_throttle(a, 0, 60), 0);
	/* Same result, and the unknown name pays the same PBKDF2: best of 10 interleaved runs
	 * each, within a factor of three (they are equal on an idle machine; the margin is for
	 * a loaded one), where skipping the derivation would be a factor of a thousand. */
	login_time(a, "alice", "wrong", STEP_EAUTH, 2); /* warm-up: the first calls are slower */
	login_time(a, "mallory", "wrong", STEP_EAUTH, 2);
	wrong = unknown = 1e9;
	for (i = 0; i < 10; i++) {
		double w = login_time(a, "alice", "wrong", STEP_EAUTH, 1);
		double u = login_time(a, "mallory", "wrong", STEP_EAUTH, 1);

		wrong = w < wrong ? w : wrong;
		unknown = u < unknown ? u : unknown;
	}
	print_message(
	    "# wrong password %.2f ms, unknown user %.2f ms\n", wrong * 1e3, unknown * 1e3);
	assert_true(wrong > 0.001);
	assert_true(unknown > wrong / 3 && unknown < wrong * 3);
	login_time(a, "alice", "right", 0, 1);
	auth_free(a);
}

static void
test_login_throttled(void **state)
{
	char good[HASH_MD5_HEX], bad[HASH_MD5_HEX], *tok = NULL;
	struct auth *a = NULL;
	unsigned w = 0;
	char err[256];
	int i;

	hash_md5_hex("right", 5, good);
	hash_md5_hex("wrong", 5, bad);
	assert_int_equal(auth_open(test_root, AUTH_USERS, 3600, &a, err, sizeof(err)), 0);
	assert_int_equal(auth_set_throttle(a, 3, 60), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(auth_login(a, U("alice"), bad, 32, "10.1.1.1", &tok), STEP_EAUTH);
	/* That pair waits, right password or not: STEP_EAGAIN, not a wrong password. */
	assert_int_equal(
	    auth_login_start(a, U("alice"), good, 32, "10.1.1.1", &tok, &w, NULL, NULL),
	    STEP_EAGAIN);
	assert_int_equal(w, 1);
	assert_null(tok);
	/* The right password from another address works at once; so does another name. */
	assert_int_equal(auth_login(a, U("alice"), good, 32, "10.1.1.2", &tok), 0);
	free(tok);
	tok = NULL;
	assert_int_equal(auth_login(a, U("bob"), good, 32, "10.1.1.1", &tok), 0);
	free(tok);
	tok = NULL;
	/* Invalid names count against the address (3 x 4 failures make it wait). */
	for (i = 0; i < 9; i++)
		assert_int_equal(auth_login(a, "a\nb", 3, bad, 32, "10.1.1.1", &tok), STEP_EAUTH);
	assert_int_equal(auth_login(a, U("bob"), good, 32, "10.1.1.1", &tok), STEP_EAGAIN);
	assert_int_equal(auth_login(a, U("bob"), good, 32, "10.1.1.4", &tok), 0);
	free(tok);
	tok = NULL;
	auth_free(a);
	/* Throttling off: the right password works after any number of failures. */
	assert_int_equal(auth_open(test_root, AUTH_USERS, 3600, &a, err, sizeof(err)), 0);
	assert_int_equal(auth_set_throttle(a, 0, 60), 0);
	for (i = 0; i < 5; i++)
		assert_int_equal(auth_login(a, U("alice"), bad, 32, "10.1.1.1", &tok), STEP_EAUTH);
	assert_int_equal(auth_login(a, U("alice"), good, 32, "10.1.1.1", &tok), 0);
	free(tok);
	auth_free(a);
}

/* user del and user passwd end the user's tokens and cached checks at once; a token of
 * --auth open is no token of a user table over the same secret. */
static void
test_revocation(void **state)
{
	char good[HASH_MD5_HEX], newpw[HASH_MD5_HEX], *tok = NULL, *tok2 = NULL, *user = NULL;
	struct auth *a = NULL, *o = NULL;
	char err[256];

	hash_md5_hex("right", 5, good);
	hash_md5_hex("new", 3, newpw);
	assert_int_equal(auth_open(test_root, AUTH_USERS, 3600, &a, err, sizeof(err)), 0);
	assert_int_equal(auth_login(a, U("alice"), good, 32, NULL, &tok), 0);
	assert_int_equal(auth_verify(a, U(tok), &user), 0);
	free(user);
	user = NULL;
	/* passwd: the old token and the old (cached) password stop at once. */
	assert_int_equal(auth_user_passwd(test_root, "alice", "new"), 0);
	assert_int_equal(auth_verify(a, U(tok), &user), STEP_EAUTH);
	free(tok);
	tok = NULL;
	assert_int_equal(auth_login(a, U("alice"), good, 32, NULL, &tok2), STEP_EAUTH);
	assert_int_equal(auth_login(a, U("alice"), newpw, 32, NULL, &tok2), 0);
	assert_int_equal(auth_verify(a, U(tok2), &user), 0);
	free(user);
	user = NULL;
	assert_int_equal(auth_user_passwd(test_root, "nobody", "x"), STEP_ENOENT);
	/* del: the new token stops too; a new alice does not revive it. */
	assert_int_equal(auth_user_del(test_root, "alice"), 0);
	assert_int_equal(auth_verify(a, U(tok2), &user), STEP_EAUTH);
	assert_int_equal(auth_login(a, U("alice"), newpw, 32, NULL, &tok), STEP_EAUTH);
	assert_int_equal(auth_user_add(test_root, "alice", "new"), 0);
	assert_int_equal(auth_verify(a, U(tok2), &user), STEP_EAUTH);
	free(tok2);
	tok2 = NULL;
	/* Mode binding: a token made under --auth open over the same root is refused. */
	assert_int_equal(auth_open(test_root, AUTH_OPEN, 3600, &o, err, sizeof(err)), 0);
	hash_md5_hex("alice", 5, good);
	assert_int_equal(auth_login(o, U("alice"), good, 32, NULL, &tok2), 0);
	assert_int_equal(auth_verify(o, U(tok2), &user), 0);
	free(user);
	user = NULL;
	assert_int_equal(auth_verify(a, U(tok2), &user), STEP_EAUTH);
	free(tok2);
	auth_free(o);
	auth_free(a);
}

/* The per-thread cache of the last verified token answers only for the very same bytes
 * under the same secret: a token changed in one character, or the same token shown to a
 * server with another secret, is refused even right after the good one was cached. */
static void
test_token_cache(void **state)
{
	char good[HASH_MD5_HEX], other[] = "/tmp/test_auth2.XXXXXX", cmd[128], *tok = NULL;
	char *forged, *user = NULL;
	struct auth *a = NULL, *b = NULL;
	char err[256];
	size_t i;

	hash_md5_hex("right", 5, good);
	assert_non_null(mkdtemp(other));
	assert_int_equal(auth_open(test_root, AUTH_USERS, 3600, &a, err, sizeof(err)), 0);
	assert_int_equal(auth_open(other, AUTH_OPEN, 3600, &b, err, sizeof(err)), 0);
	assert_int_equal(auth_login(a, U("alice"), good, 32, NULL, &tok), 0);
	for (i = 0; i < 2; i++) { /* the first fills the cache, the second is answered by it */
		assert_int_equal(auth_verify(a, U(tok), &user), 0);
		assert_string_equal(user, "alice");
		free(user);
		user = NULL;
	}
	forged = strdup(tok);
	assert_non_null(forged);
	for (i = 0; forged[i] != '\0'; i++) {
		/* Change one base64 character of the MAC part (near the end) to another. */
		if (i == strlen(forged) - 6) {
			forged[i] = forged[i] == 'A' ? 'B' : 'A';
			break;
		}
	}
	assert_int_equal(auth_verify(a, U(forged), &user), STEP_EAUTH);
	assert_int_equal(auth_verify(a, U(tok), &user), 0);
	free(user);
	user = NULL;
	assert_int_equal(auth_verify(b, U(tok), &user), STEP_EAUTH); /* another secret */
	assert_int_equal(auth_verify(a, U(tok), &user), 0);
	free(user);
	free(forged);
	free(tok);
	auth_free(a);
	auth_free(b);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", other);
	assert_int_equal(system(cmd), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_user_with_separators),
		cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_user_names),
		cmocka_unit_test(test_throttle_pair),
		cmocka_unit_test(test_throttle_address),
		cmocka_unit_test(test_throttle_bounded),
		cmocka_unit_test_setup_teardown(test_login_unknown_user, root_setup, root_teardown),
		cmocka_unit_test_setup_teardown(test_login_throttled, root_setup, root_teardown),
		cmocka_unit_test_setup_teardown(test_token_cache, root_setup, root_teardown),
		cmocka_unit_test_setup_teardown(test_revocation, root_setup, root_teardown),
	};

	log_init("test_auth", LOG_LVL_WARN, false); /* the lock messages are info */
	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
