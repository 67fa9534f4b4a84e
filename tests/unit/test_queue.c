/* test_queue.c — the durable watch queue and the status table on a temporary database. */
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
#include "queue.h"

struct fixture {
	char path[64];
	sqlite3 *db;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int fd;

	if (f == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "/tmp/test_queue.XXXXXX");
	if ((fd = mkstemp(f->path)) < 0)
		return -1;
	close(fd);
	if (sqlite3_open(f->path, &f->db) != SQLITE_OK)
		return -1;
	if (queue_migrate(f->db) != 0 || queue_migrate(f->db) != 0)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	sqlite3_close(f->db);
	unlink(f->path);
	free(f);
	return 0;
}

static void
test_push_coalesces(void **state)
{
	struct fixture *f = *state;
	long long n = -1;

	assert_int_equal(queue_push(f->db, "docs", "a.txt", QUEUE_CHANGE, 1), 0);
	assert_int_equal(queue_push(f->db, "docs", "a.txt", QUEUE_CHANGE, 2), 0);
	assert_int_equal(queue_push(f->db, "docs", "b.txt", QUEUE_DELETE, 3), 0);
	assert_int_equal(queue_push(f->db, "pics", "c.jpg", QUEUE_CHANGE, 3), 0);
	assert_int_equal(queue_count(f->db, "docs", &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(queue_count(f->db, NULL, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(queue_count(f->db, "none", &n), 0);
	assert_int_equal(n, 0);
}

/* A change that arrives while a sync runs is newer than the mark and survives the ack. */
static void
test_ack_keeps_newer(void **state)
{
	struct fixture *f = *state;
	long long mark = 0, n = -1;

	assert_int_equal(queue_mark(f->db, "docs", &mark), 0);
	assert_int_equal(mark, 0);
	assert_int_equal(queue_push(f->db, "docs", "a.txt", QUEUE_CHANGE, 1), 0);
	assert_int_equal(queue_push(f->db, "docs", "b.txt", QUEUE_CHANGE, 1), 0);
	assert_int_equal(queue_mark(f->db, "docs", &mark), 0);
	assert_true(mark > 0);
	/* during the sync: a.txt is written again, c.txt appears */
	assert_int_equal(queue_push(f->db, "docs", "a.txt", QUEUE_CHANGE, 2), 0);
	assert_int_equal(queue_push(f->db, "docs", "c.txt", QUEUE_CHANGE, 2), 0);
	assert_int_equal(queue_ack(f->db, "docs", mark), 0);
	assert_int_equal(queue_count(f->db, "docs", &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(queue_mark(f->db, "docs", &mark), 0);
	assert_int_equal(queue_ack(f->db, "docs", mark), 0);
	assert_int_equal(queue_count(f->db, "docs", &n), 0);
	assert_int_equal(n, 0);
}

/* Acknowledging one dir leaves the others' entries alone. */
static void
test_ack_per_dir(void **state)
{
	struct fixture *f = *state;
	long long mark = 0, n = -1;
	char **dirs = NULL;
	size_t nd = 0;

	assert_int_equal(queue_push(f->db, "a", "x", QUEUE_CHANGE, 1), 0);
	assert_int_equal(queue_push(f->db, "b", "y", QUEUE_CHANGE, 1), 0);
	assert_int_equal(queue_push(f->db, "b", "", QUEUE_RESCAN, 1), 0);
	assert_int_equal(queue_dirs(f->db, &dirs, &nd), 0);
	assert_int_equal(nd, 2);
	assert_string_equal(dirs[0], "a");
	assert_string_equal(dirs[1], "b");
	queue_dirs_free(dirs, nd);
	assert_int_equal(queue_mark(f->db, "b", &mark), 0);
	assert_int_equal(queue_ack(f->db, "b", mark), 0);
	assert_int_equal(queue_count(f->db, NULL, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(queue_dirs(f->db, &dirs, &nd), 0);
	assert_int_equal(nd, 1);
	assert_string_equal(dirs[0], "a");
	queue_dirs_free(dirs, nd);
}

/* The queue survives closing and reopening the database (a restart). */
static void
test_durable(void **state)
{
	struct fixture *f = *state;
	long long n = -1;

	assert_int_equal(queue_push(f->db, "docs", "k.txt", QUEUE_MOVE, 5), 0);
	sqlite3_close(f->db);
	assert_int_equal(sqlite3_open(f->path, &f->db), SQLITE_OK);
	assert_int_equal(queue_migrate(f->db), 0);
	assert_int_equal(queue_count(f->db, "docs", &n), 0);
	assert_int_equal(n, 1);
}

static void
test_status(void **state)
{
	struct fixture *f = *state;
	char *v = NULL;
	long long n = -1;

	assert_int_equal(queue_status_get(f->db, "last_error", &v), STEP_ENOENT);
	assert_int_equal(queue_status_get_int(f->db, "bytes_sent", &n), STEP_ENOENT);
	assert_int_equal(queue_status_set(f->db, "last_error", "cannot connect"), 0);
	assert_int_equal(queue_status_get(f->db, "last_error", &v), 0);
	assert_string_equal(v, "cannot connect");
	free(v);
	assert_int_equal(queue_status_set(f->db, "last_error", NULL), 0);
	assert_int_equal(queue_status_get(f->db, "last_error", &v), STEP_ENOENT);
	assert_int_equal(queue_status_add(f->db, "bytes_sent", 100), 0);
	assert_int_equal(queue_status_add(f->db, "bytes_sent", 23), 0);
	assert_int_equal(queue_status_get_int(f->db, "bytes_sent", &n), 0);
	assert_int_equal(n, 123);
	assert_int_equal(queue_status_set_int(f->db, "bytes_sent", 7), 0);
	assert_int_equal(queue_status_get_int(f->db, "bytes_sent", &n), 0);
	assert_int_equal(n, 7);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_push_coalesces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ack_keeps_newer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ack_per_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_durable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status, setup, teardown),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
