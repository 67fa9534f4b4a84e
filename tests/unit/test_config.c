/* test_config.c — stepsync.conf parsing, errors naming file and line, defaults, excludes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "err.h"

static struct config *
parse_ok(const char *text)
{
	struct config *c = NULL;
	char err[256] = "";

	if (config_parse(text, strlen(text), "/etc/x/test.conf", &c, err, sizeof(err)) != 0)
		fail_msg("unexpected error: %s", err);
	return c;
}

/* Returns the error message; the test asserts on it. */
static const char *
parse_err(const char *text, char *err, size_t errlen)
{
	struct config *c = NULL;

	assert_int_equal(config_parse(text, strlen(text), "t.conf", &c, err, errlen), STEP_EINVAL);
	assert_null(c);
	return err;
}

static void
test_full_file(void **state)
{
	struct config *c;
	const struct config_dir *d;

	setenv("HOME", "/home/u", 1);
	c = parse_ok("# comment\n"
	             "[server]\n"
	             "address = 127.0.0.1:1400\n"
	             "user = alice\n"
	             "password_file = pw ; inline comment\n"
	             "tls = yes\n"
	             "ca = ~/ca.pem\n"
	             "[state]\n"
	             "path = \"/var/tmp/state.db\"\n"
	             "[dir \"my docs\"]\n"
	             "path = ~/Documents\n"
	             "exclude = *.tmp\n"
	             "exclude = node_modules/\n"
	             "[dir photos]\n"
	             "path = /srv/photos\n");
	assert_string_equal(c->server, "127.0.0.1:1400");
	assert_string_equal(c->user, "alice");
	assert_string_equal(c->password_file, "/etc/x/pw");
	assert_int_equal(c->tls, 1);
	assert_string_equal(c->ca, "/home/u/ca.pem");
	assert_string_equal(c->state_path, "/var/tmp/state.db");
	assert_int_equal(c->ndirs, 2);
	d = config_find_dir(c, "my docs");
	assert_non_null(d);
	assert_string_equal(d->path, "/home/u/Documents");
	assert_int_equal(d->nexclude, 2);
	assert_string_equal(d->exclude[0], "*.tmp");
	assert_string_equal(d->exclude[1], "node_modules/");
	d = config_find_dir(c, "photos");
	assert_non_null(d);
	assert_string_equal(d->path, "/srv/photos");
	assert_null(config_find_dir(c, "nope"));
	assert_string_equal(c->file, "/etc/x/test.conf");
	config_free(c);
}

static void
test_empty_and_defaults(void **state)
{
	struct config *c = parse_ok("");

	assert_null(c->server);
	assert_int_equal(c->tls, -1);
	assert_int_equal(c->ndirs, 0);
	config_free(c);
	config_free(NULL);
}

/* The watcher's verification rescan period of a [dir]: unset is 0. */
static void
test_dir_rescan(void **state)
{
	struct config *c =
	    parse_ok("[dir \"a\"]\npath = /a\nrescan = 3600\n[dir \"b\"]\npath = /b\n");

	(void)state;
	assert_int_equal(c->dirs[0].rescan_s, 3600);
	assert_int_equal(c->dirs[1].rescan_s, 0);
	config_free(c);
}

static void
test_errors_name_line(void **state)
{
	char err[256];

	assert_string_equal(parse_err("[server]\nuser = a\nfoo = 1\n", err, sizeof(err)),
	    "t.conf:3: unknown key 'foo' in [server]");
	assert_non_null(strstr(parse_err("[server]\n\n[serv\n", err, sizeof(err)), "t.conf:3:"));
	assert_non_null(strstr(parse_err("[server]\njust words\n", err, sizeof(err)), "t.conf:2:"));
	assert_non_null(strstr(parse_err("[bogus]\nx = 1\n", err, sizeof(err)), "unknown section"));
	assert_non_null(strstr(parse_err("[server]\ntls = maybe\n", err, sizeof(err)), "'tls'"));
	assert_non_null(
	    strstr(parse_err("[server]\naddress = h:99999\n", err, sizeof(err)), "t.conf:2:"));
	assert_non_null(
	    strstr(parse_err("[server]\npassword = x\n", err, sizeof(err)), "password_file"));
	assert_non_null(
	    strstr(parse_err("[dir \"a\"]\nexclude = *.o\n", err, sizeof(err)), "t.conf:1:"));
	assert_non_null(
	    strstr(parse_err("[dir \"a\"]\npath = rel/dir\n", err, sizeof(err)), "absolute"));
	assert_non_null(strstr(parse_err("x = 1\n", err, sizeof(err)), "outside any section"));
	assert_non_null(strstr(
	    parse_err("[dir \"a\"]\npath = /a\nrescan = 59\n", err, sizeof(err)), "t.conf:3:"));
	assert_non_null(strstr(
	    parse_err("[dir \"a\"]\npath = /a\nrescan = 1h\n", err, sizeof(err)), "60..2592000"));
	assert_non_null(strstr(parse_err("[server]\nuser=a\nuser=b\n", err, sizeof(err)),
	    "t.conf:3: 'user' given twice"));
}

static void
test_long_line_and_nul(void **state)
{
	char err[256];
	size_t n = CONFIG_MAX_LINE + 100;
	char *t = malloc(n + 32);
	struct config *c = NULL;

	assert_non_null(t);
	memcpy(t, "[server]\nuser = ", 16);
	memset(t + 16, 'a', n);
	t[16 + n] = '\n';
	t[17 + n] = '\0';
	assert_non_null(strstr(parse_err(t, err, sizeof(err)), "t.conf:2: line longer"));
	/* A long but accepted value survives whole (inih alone cuts at 200 bytes). */
	memset(t + 16, 'b', 1000);
	t[1016] = '\n';
	t[1017] = '\0';
	c = parse_ok(t);
	assert_int_equal(strlen(c->user), 1000);
	config_free(c);
	free(t);
	assert_int_equal(
	    config_parse("[server]\0x", 10, "n.conf", &c, err, sizeof(err)), STEP_EINVAL);
	assert_non_null(strstr(err, "NUL"));
}

static void
test_load_missing_file(void **state)
{
	struct config *c = NULL;
	char err[256];

	assert_int_equal(
	    config_load("/nonexistent/stepsync.conf", &c, err, sizeof(err)), STEP_ESYS);
	assert_non_null(strstr(err, "/nonexistent/stepsync.conf"));
	assert_null(c);
}

static void
test_address(void **state)
{
	char host[64];
	int port = 0;

	assert_int_equal(
	    config_parse_address("127.0.0.1:1400", 1379, host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 1400);
	assert_int_equal(config_parse_address("example.org", 1379, host, sizeof(host), &port), 0);
	assert_string_equal(host, "example.org");
	assert_int_equal(port, 1379);
	assert_int_equal(config_parse_address("[::1]:99", 1379, host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 99);
	assert_int_equal(config_parse_address("::1", 1379, host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(config_parse_address("h:0", 1, host, sizeof(host), &port), STEP_EINVAL);
	assert_int_equal(config_parse_address("h:x", 1, host, sizeof(host), &port), STEP_EINVAL);
	assert_int_equal(config_parse_address(":80", 1, host, sizeof(host), &port), STEP_EINVAL);
	assert_int_equal(config_parse_address("[::1", 1, host, sizeof(host), &port), STEP_EINVAL);
	assert_int_equal(config_parse_address("", 1, host, sizeof(host), &port), STEP_EINVAL);
}

static void
test_default_paths(void **state)
{
	char p[256];

	setenv("XDG_STATE_HOME", "/xdg/state", 1);
	assert_int_equal(config_default_state_path(p, sizeof(p)), 0);
	if (geteuid() != 0)
		assert_string_equal(p, "/xdg/state/stepsync/state.db");
	unsetenv("XDG_STATE_HOME");
	setenv("HOME", "/home/u", 1);
	assert_int_equal(config_default_state_path(p, sizeof(p)), 0);
	if (geteuid() != 0)
		assert_string_equal(p, "/home/u/.local/state/stepsync/state.db");
	assert_int_equal(config_default_state_path(p, 5), STEP_ETOOBIG);
	setenv("STEPSYNC_CONFIG", "/tmp/s.conf", 1);
	assert_int_equal(config_default_path(p, sizeof(p)), 0);
	assert_string_equal(p, "/tmp/s.conf");
	unsetenv("STEPSYNC_CONFIG");
}

static void
test_exclude(void **state)
{
	char *pats[] = { "*.tmp", "node_modules/", "/build/out*", "docs/*/draft", ".cache" };
	size_t n = sizeof(pats) / sizeof(pats[0]);

	assert_true(config_exclude_match(pats, n, "a.tmp", 0));
	assert_true(config_exclude_match(pats, n, "deep/dir/a.tmp", 0));
	assert_false(config_exclude_match(pats, n, "a.tmpx", 0));
	assert_true(config_exclude_match(pats, n, "x/node_modules", 1));
	assert_false(config_exclude_match(pats, n, "x/node_modules", 0)); /* a file */
	assert_true(config_exclude_match(pats, n, "build/out.o", 0));
	assert_false(config_exclude_match(pats, n, "src/build/out.o", 0)); /* anchored */
	assert_true(config_exclude_match(pats, n, "docs/2024/draft", 0));
	assert_false(config_exclude_match(pats, n, "docs/a/b/draft", 0)); /* * stops at / */
	assert_true(config_exclude_match(pats, n, "home/.cache", 1));
	assert_false(config_exclude_match(pats, n, "keep.txt", 0));
	assert_false(config_exclude_match(NULL, 0, "a.tmp", 0));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_empty_and_defaults),
		cmocka_unit_test(test_errors_name_line),
		cmocka_unit_test(test_long_line_and_nul),
		cmocka_unit_test(test_load_missing_file),
		cmocka_unit_test(test_address),
		cmocka_unit_test(test_default_paths),
		cmocka_unit_test(test_exclude),
		cmocka_unit_test(test_dir_rescan),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
