/* meta.c — the SQLite metadata database of stepd: open, pragmas, schema. No policy here. */
#include <limits.h>
#include <stdio.h>

#include "err.h"
#include "log.h"
#include "meta.h"

static const char *meta_schema =
    "CREATE TABLE IF NOT EXISTS objects(user TEXT NOT NULL, key TEXT NOT NULL,"
    " size INTEGER NOT NULL, block_size INTEGER NOT NULL, md5 TEXT NOT NULL,"
    " file TEXT NOT NULL, mtime INTEGER NOT NULL, PRIMARY KEY(user, key)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS objects_file ON objects(file);"
    "CREATE TABLE IF NOT EXISTS uploads(user TEXT NOT NULL, key TEXT NOT NULL,"
    " size INTEGER NOT NULL, block_size INTEGER NOT NULL, file TEXT NOT NULL,"
    " mtime INTEGER NOT NULL, claim TEXT, PRIMARY KEY(user, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS data(user TEXT NOT NULL, key TEXT NOT NULL,"
    " json TEXT NOT NULL, PRIMARY KEY(user, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS blobs(id INTEGER PRIMARY KEY, data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, salt BLOB NOT NULL,"
    " iter INTEGER NOT NULL, hash BLOB NOT NULL, epoch INTEGER NOT NULL DEFAULT 0)"
    " WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS info(name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS obj_gen(user TEXT PRIMARY KEY, gen INTEGER NOT NULL)"
    " WITHOUT ROWID;";

int
meta_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_warnx("sqlite: %s", msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return STEP_EIO;
	}
	return STEP_OK;
}

int
meta_open(const char *root, sqlite3 **out)
{
	char path[PATH_MAX];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int r = STEP_EIO;

	if (snprintf(path, sizeof(path), "%s/meta.db", root) >= (int)sizeof(path))
		return STEP_EINVAL;
	if (sqlite3_open_v2(path, &db,
	        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
	            SQLITE_OPEN_NOFOLLOW,
	        NULL) != SQLITE_OK) {
		log_warnx("cannot open '%s': %s", path, db ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(db, 10000);
	if (meta_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") != 0)
		goto out;
	if (meta_exec(db, meta_schema) != 0)
		goto out;
	/* Older roots: users without the epoch that binds their tokens (0 until a passwd). */
	if (sqlite3_prepare_v2(db, "SELECT epoch FROM users LIMIT 0", -1, &st, NULL) != SQLITE_OK &&
	    meta_exec(db, "ALTER TABLE users ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0") != 0)
		goto out;
	sqlite3_finalize(st);
	st = NULL;
	/* ...and uploads without the MD5 and session their SAVE declared. */
	if (sqlite3_prepare_v2(db, "SELECT claim FROM uploads LIMIT 0", -1, &st, NULL) !=
	        SQLITE_OK &&
	    meta_exec(db, "ALTER TABLE uploads ADD COLUMN claim TEXT") != 0)
		goto out;
	sqlite3_finalize(st);
	st = NULL;
	*out = db;
	db = NULL;
	r = STEP_OK;
out:
	sqlite3_finalize(st);
	sqlite3_close(db);
	return r;
}
