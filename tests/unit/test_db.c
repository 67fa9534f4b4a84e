/* test_db.c — the state database on a temporary file: per-module migrations (run once,
 * append-only, refusing downgrades, rolled back on failure), nested transactions, and
 * the uploads table. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "db.h"
#include "err.h"
#include "uploads.h"

static char dir[] = "/tmp/test_db.XXXXXX";
static char path[256];

static int
setup(void **state)
{
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/sub/state.db", dir);
	return 0;
}

static int
teardown(void **state)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int
count_rows(struct db *db, const char *table)
{
	sqlite3_stmt *st;
	char sql[128];
	int n = -1;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	if (sqlite3_prepare_v2(db_handle(db), sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return n;
}

static void
test_open_creates_directory_and_wal(void **state)
{
	struct db *db = NULL;
	sqlite3_stmt *st;
	char err[256];

	assert_int_equal(db_open(path, &db, err, sizeof(err)), 0);
	assert_int_equal(
	    sqlite3_prepare_v2(db_handle(db), "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	db_close(db);
	db_close(NULL);
}

static void
test_open_error_names_the_file(void **state)
{
	struct db *db = NULL;
	char err[256] = "";

	assert_int_not_equal(db_open("/proc/nonexistent/dir/x.db", &db, err, sizeof(err)), 0);
	assert_null(db);
	assert_non_null(strstr(err, "/proc/nonexistent/dir"));
}

static void
test_migrate_once_and_append(void **state)
{
	static const char *const v1[] = { "CREATE TABLE m1(a)" };
	static const char *const v2[] = { "CREATE TABLE m1(a)", "ALTER TABLE m1 ADD COLUMN b" };
	struct db *db = NULL;
	int v;

	assert_int_equal(db_open(path, &db, NULL, 0), 0);
	assert_int_equal(db_schema_version(db, "mod", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(db_migrate(db, "mod", v1, 1), 0);
	assert_int_equal(db_migrate(db, "mod", v1, 1), 0); /* idempotent */
	assert_int_equal(db_schema_version(db, "mod", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(db_migrate(db, "mod", v2, 2), 0); /* only step 2 runs */
	assert_int_equal(db_schema_version(db, "mod", &v), 0);
	assert_int_equal(v, 2);
	assert_int_equal(db_exec(db, "INSERT INTO m1(a, b) VALUES(1, 2)"), 0);
	/* A second module is independent. */
	assert_int_equal(db_migrate(db, "other", v1 + 0, 0), 0);
	assert_int_equal(db_schema_version(db, "other", &v), 0);
	assert_int_equal(v, 0);
	/* Downgrade: refused. */
	assert_int_equal(db_migrate(db, "mod", v1, 1), STEP_EINVAL);
	db_close(db);
}

static void
test_migrate_failure_rolls_back(void **state)
{
	static const char *const bad[] = { "CREATE TABLE r1(a)", "THIS IS NOT SQL" };
	struct db *db = NULL;
	int v;

	assert_int_equal(db_open(path, &db, NULL, 0), 0);
	assert_int_equal(db_migrate(db, "rb", bad, 2), STEP_EIO);
	assert_int_equal(db_schema_version(db, "rb", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(count_rows(db, "r1"), -1); /* step 1 was rolled back too */
	db_close(db);
}

static void
test_nested_transactions(void **state)
{
	struct db *db = NULL;

	assert_int_equal(db_open(path, &db, NULL, 0), 0);
	assert_int_equal(db_exec(db, "CREATE TABLE t(x)"), 0);
	assert_int_equal(db_begin(db), 0);
	assert_int_equal(db_begin(db), 0);
	assert_int_equal(db_exec(db, "INSERT INTO t VALUES(1)"), 0);
	assert_int_equal(db_commit(db), 0); /* inner: nothing committed yet */
	assert_int_equal(db_rollback(db), 0);
	assert_int_equal(count_rows(db, "t"), 0);
	assert_int_equal(db_begin(db), 0);
	assert_int_equal(db_exec(db, "INSERT INTO t VALUES(2)"), 0);
	assert_int_equal(db_commit(db), 0);
	assert_int_equal(count_rows(db, "t"), 1);
	assert_int_equal(db_commit(db), STEP_EINVAL); /* no transaction open */
	db_close(db);
}

static void
test_uploads_roundtrip(void **state)
{
	struct upload_rec rec, *got = NULL;
	uint8_t bits[3] = { 0x0f, 0x00, 0x01 };
	struct db *db = NULL;

	assert_int_equal(db_open(path, &db, NULL, 0), 0);
	assert_int_equal(uploads_migrate(db), 0);
	assert_int_equal(uploads_migrate(db), 0);
	memset(&rec, 0, sizeof(rec));
	rec.server = "127.0.0.1:1379";
	rec.user = "alice";
	rec.key = "k\xc3\xa9y";
	rec.path = "/tmp/f";
	rec.size = 409600;
	rec.mtime_ns = 1700000000123456789LL;
	rec.ctime_ns = 1700000000987654321LL;
	rec.ino = 42;
	rec.block_size = 20480;
	rec.total_block = 20;
	rec.bitmap = bits;
	rec.nbitmap = 3;
	assert_int_equal(uploads_save(db, &rec), 0);
	assert_int_equal(uploads_load(db, rec.server, "bob", rec.key, &got), STEP_ENOENT);
	assert_int_equal(uploads_load(db, rec.server, "alice", rec.key, &got), 0);
	assert_int_equal(got->size, 409600);
	assert_true(got->mtime_ns == rec.mtime_ns);
	assert_true(got->ctime_ns == rec.ctime_ns);
	assert_int_equal(got->ino, 42);
	assert_int_equal(got->total_block, 20);
	assert_int_equal(got->nbitmap, 3);
	assert_memory_equal(got->bitmap, bits, 3);
	assert_string_equal(got->path, "/tmp/f");
	uploads_rec_free(got);
	got = NULL;

	bits[1] = 0xff;
	assert_int_equal(uploads_save_bitmap(db, rec.server, "alice", rec.key, bits, 3), 0);
	assert_int_equal(uploads_save_bitmap(db, rec.server, "bob", rec.key, bits, 3), STEP_ENOENT);
	assert_int_equal(uploads_load(db, rec.server, "alice", rec.key, &got), 0);
	assert_int_equal(got->bitmap[1], 0xff);
	uploads_rec_free(got);

	assert_int_equal(uploads_delete(db, rec.server, "alice", rec.key), 0);
	assert_int_equal(uploads_delete(db, rec.server, "alice", rec.key), 0);
	assert_int_equal(uploads_load(db, rec.server, "alice", rec.key, &got), STEP_ENOENT);
	uploads_rec_free(NULL);
	db_close(db);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_creates_directory_and_wal),
		cmocka_unit_test(test_open_error_names_the_file),
		cmocka_unit_test(test_migrate_once_and_append),
		cmocka_unit_test(test_migrate_failure_rolls_back),
		cmocka_unit_test(test_nested_transactions),
		cmocka_unit_test(test_uploads_roundtrip),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("db", tests, setup, teardown);
}
