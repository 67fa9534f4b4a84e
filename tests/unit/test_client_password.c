/* test_client_password.c — where the password comes from (--password-file, then
 * $STEPSYNC_PASSWORD, then the config's password_file, then a prompt) and that only
 * its MD5 is kept; also the client option checks. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cmd.h"
#include "config.h"
#include "err.h"
#include "hash.h"

static char dir[] = "/tmp/test_pw.XXXXXX";
static char pwfile[256], pwfile2[256], emptyfile[256];

static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int
setup(void **state)
{
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(pwfile, sizeof(pwfile), "%s/pw", dir);
	snprintf(pwfile2, sizeof(pwfile2), "%s/pw2", dir);
	snprintf(emptyfile, sizeof(emptyfile), "%s/empty", dir);
	write_text(pwfile, "from-file\n");
	write_text(pwfile2, "from-config\r\n");
	write_text(emptyfile, "\n");
	return 0;
}

static int
teardown(void **state)
{
	unlink(pwfile);
	unlink(pwfile2);
	unlink(emptyfile);
	return rmdir(dir);
}

static void
expect_md5_of(const struct agent *a, const char *pw)
{
	char want[HASH_MD5_HEX];

	hash_md5_hex(pw, strlen(pw), want);
	assert_string_equal(a->password_md5, want);
}

static void
test_file_beats_environment(void **state)
{
	struct agent a;
	char err[256];

	memset(&a, 0, sizeof(a));
	setenv("STEPSYNC_PASSWORD", "from-env", 1);
	a.password_file = pwfile;
	assert_int_equal(agent_password(&a, err, sizeof(err)), 0);
	expect_md5_of(&a, "from-file"); /* trailing newline stripped */
}

static void
test_environment_beats_config(void **state)
{
	struct agent a;
	char err[256];

	memset(&a, 0, sizeof(a));
	assert_int_equal(config_new(&a.cfg), 0);
	a.cfg->password_file = strdup(pwfile2);
	setenv("STEPSYNC_PASSWORD", "from-env", 1);
	assert_int_equal(agent_password(&a, err, sizeof(err)), 0);
	expect_md5_of(&a, "from-env");
	config_free(a.cfg);
}

static void
test_config_file_last(void **state)
{
	struct agent a;
	char err[256];

	memset(&a, 0, sizeof(a));
	assert_int_equal(config_new(&a.cfg), 0);
	a.cfg->password_file = strdup(pwfile2);
	unsetenv("STEPSYNC_PASSWORD");
	assert_int_equal(agent_password(&a, err, sizeof(err)), 0);
	expect_md5_of(&a, "from-config"); /* CRLF stripped */
	config_free(a.cfg);
}

static void
test_bad_files(void **state)
{
	struct agent a;
	char err[256];

	memset(&a, 0, sizeof(a));
	a.password_file = emptyfile;
	assert_int_equal(agent_password(&a, err, sizeof(err)), STEP_EINVAL);
	assert_non_null(strstr(err, "empty"));
	assert_string_equal(a.password_md5, "");
	a.password_file = "/nonexistent/pw";
	assert_int_equal(agent_password(&a, err, sizeof(err)), STEP_ESYS);
	assert_non_null(strstr(err, "/nonexistent/pw"));
}

static void
test_client_opts_need_server_and_user(void **state)
{
	struct client_opts o;
	struct agent a;
	char err[256];

	memset(&a, 0, sizeof(a));
	a.timeout_s = 30;
	assert_int_equal(agent_client_opts(&a, &o, err, sizeof(err)), STEP_EINVAL);
	assert_non_null(strstr(err, "no server"));
	snprintf(a.host, sizeof(a.host), "127.0.0.1");
	a.port = 1379;
	assert_int_equal(agent_client_opts(&a, &o, err, sizeof(err)), STEP_EINVAL);
	assert_non_null(strstr(err, "no user"));
	a.user = "u";
	setenv("STEPSYNC_PASSWORD", "u", 1);
	assert_int_equal(agent_password(&a, err, sizeof(err)), 0);
	assert_int_equal(agent_client_opts(&a, &o, err, sizeof(err)), 0);
	assert_int_equal(o.timeout_ms, 30000);
	assert_string_equal(o.password_md5, a.password_md5);
	agent_release(&a);
	assert_string_equal(a.password_md5, ""); /* wiped */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_beats_environment),
		cmocka_unit_test(test_environment_beats_config),
		cmocka_unit_test(test_config_file_last),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_client_opts_need_server_and_user),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("client_password", tests, setup, teardown);
}
