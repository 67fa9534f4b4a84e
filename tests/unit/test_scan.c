/* test_scan.c — tree walk order, types, symlinks never followed, excludes, special files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "err.h"
#include "log.h"
#include "scan.h"

struct seen {
	char out[4096];
};

static int
collect(void *ctx, const struct scan_entry *e)
{
	struct seen *s = ctx;
	size_t n = strlen(s->out);
	char t = S_ISDIR(e->st->st_mode) ? 'd' : S_ISLNK(e->st->st_mode) ? 'l' : 'f';

	snprintf(s->out + n, sizeof(s->out) - n, "%c:%s%s%s;", t, e->path, e->target ? "->" : "",
	    e->target ? e->target : "");
	/* name points at the last component and dirfd reaches it */
	assert_int_equal(faccessat(e->dirfd, e->name, F_OK, AT_SYMLINK_NOFOLLOW), 0);
	return 0;
}

static int
stop_at_b(void *ctx, const struct scan_entry *e)
{
	return strcmp(e->path, "b") == 0 ? STEP_EBUSY : 0;
}

static void
mk(const char *root, const char *rel, const char *content)
{
	char p[512];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	if (content == NULL) {
		assert_int_equal(mkdir(p, 0755), 0);
		return;
	}
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

static void
test_walk(void **state)
{
	char root[] = "/tmp/test_scan.XXXXXX";
	char p[512], cmd[600];
	struct scan_stats st;
	struct seen s;
	char *ex[] = { "*.tmp", "skipdir/" };

	assert_non_null(mkdtemp(root));
	mk(root, "b", "bb");
	mk(root, "a", NULL);
	mk(root, "a/z", "z");
	mk(root, "a/y.tmp", "tmp");
	mk(root, "a/empty", NULL);
	mk(root, "skipdir", NULL);
	mk(root, "skipdir/x", "x");
	mk(root, "c d\xc3\xa9", "");
	snprintf(p, sizeof(p), "%s/link", root);
	assert_int_equal(symlink("/nonexistent/target", p), 0);
	snprintf(p, sizeof(p), "%s/dirlink", root);
	assert_int_equal(symlink("a", p), 0);
	snprintf(p, sizeof(p), "%s/fifo", root);
	assert_int_equal(mkfifo(p, 0600), 0);

	memset(&s, 0, sizeof(s));
	assert_int_equal(scan_tree(root, ex, 2, collect, &s, &st), 0);
	assert_string_equal(s.out,
	    "d:a;d:a/empty;f:a/z;f:b;f:c d\xc3\xa9;l:dirlink->a;"
	    "l:link->/nonexistent/target;");
	assert_int_equal(st.files, 3);
	assert_int_equal(st.dirs, 2);
	assert_int_equal(st.symlinks, 2);
	assert_int_equal(st.bytes, 3);
	assert_int_equal(st.skipped, 3); /* y.tmp, skipdir, fifo */
	assert_int_equal(st.errors, 0);

	/* Without excludes everything regular shows up. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(scan_tree(root, NULL, 0, collect, &s, &st), 0);
	assert_non_null(strstr(s.out, "f:a/y.tmp;"));
	assert_non_null(strstr(s.out, "d:skipdir;f:skipdir/x;"));

	/* A callback error stops the walk and comes back. */
	assert_int_equal(scan_tree(root, NULL, 0, stop_at_b, NULL, &st), STEP_EBUSY);

	/* A missing root is an error. */
	assert_int_equal(scan_tree("/nonexistent/root", NULL, 0, collect, &s, &st), STEP_ESYS);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* Paths come in ascending byte order of the whole path (what the sync engine's sorted
 * walk over its table relies on): a directory sorts as "name/". */
static void
test_path_order(void **state)
{
	char root[] = "/tmp/test_scan.XXXXXX";
	char cmd[600];
	struct scan_stats st;
	struct seen s;

	(void)state;
	assert_non_null(mkdtemp(root));
	mk(root, "a", NULL);
	mk(root, "a/x", "x");
	mk(root, "a b", "1");
	mk(root, "a.txt", "2");
	mk(root, "a0", "3");
	mk(root, "a-", NULL);
	mk(root, "a-/y", "y");
	memset(&s, 0, sizeof(s));
	assert_int_equal(scan_tree(root, NULL, 0, collect, &s, &st), 0);
	assert_string_equal(s.out, "f:a b;d:a-;f:a-/y;f:a.txt;d:a;f:a/x;f:a0;");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_walk),
		cmocka_unit_test(test_path_order),
	};

	log_init("test_scan", LOG_LVL_WARN, false); /* the FIFO skip is info */
	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("scan", tests, NULL, NULL);
}
