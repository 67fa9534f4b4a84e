/*
 * db.c — SQLite state database helpers: open with WAL and a busy timeout, per-module
 * migrations recorded in schema_version, nested transactions. Never prints.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db.h"
#include "err.h"
#include "util.h"

struct db {
	sqlite3 *h;
	int depth; /* open transaction nesting; 0 when none */
};

int
db_err(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return STEP_OK;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return STEP_EBUSY;
	case SQLITE_NOMEM:
		return STEP_ENOMEM;
	default:
		return STEP_EIO;
	}
}

/* Creates the parent directory of path (mode 0700) when it is missing. */
static int
make_parent(const char *path)
{
	char *dir = NULL, *slash;
	int r = STEP_OK;

	if ((dir = strdup(path)) == NULL)
		return STEP_ENOMEM;
	slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		r = util_mkdirs(dir, 0700);
	}
	free(dir);
	return r;
}

int
db_open(const char *path, struct db **outp, char *errbuf, size_t errlen)
{
	struct db *db = NULL;
	int r, rc;

	if (errbuf != NULL && errlen > 0)
		errbuf[0] = '\0';
	if (strcmp(path, ":memory:") != 0 && (r = make_parent(path)) != 0) {
		if (errbuf != NULL)
			snprintf(errbuf, errlen, "cannot create the directory of '%s': %s", path,
			    strerror(errno));
		return r;
	}
	if ((db = calloc(1, sizeof(*db))) == NULL)
		return STEP_ENOMEM;
	rc = sqlite3_open_v2(
	    path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		if (errbuf != NULL)
			snprintf(errbuf, errlen, "cannot open '%s': %s", path,
			    db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
		r = db_err(rc) == STEP_ENOMEM ? STEP_ENOMEM : STEP_EIO;
		goto out;
	}
	sqlite3_busy_timeout(db->h, DB_BUSY_TIMEOUT_MS);
	if ((r = db_exec(db,
	         "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	         "PRAGMA foreign_keys=ON;"
	         /* Reads through a map of the first 32 MiB (the whole state up to ~100,000
	          * files): a no-change sync reads every page of the files table, often
	          * more than once, and a pread for each was a quarter of its time. */
	         "PRAGMA mmap_size=33554432;"
	         "CREATE TABLE IF NOT EXISTS schema_version("
	         " module TEXT PRIMARY KEY, version INTEGER NOT NULL)")) != 0) {
		if (errbuf != NULL)
			snprintf(
			    errbuf, errlen, "cannot use '%s': %s", path, sqlite3_errmsg(db->h));
		goto out;
	}
	*outp = db;
	db = NULL;
	r = STEP_OK;
out:
	db_close(db);
	return r;
}

void
db_close(struct db *db)
{
	if (db == NULL)
		return;
	if (db->depth > 0)
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db->h);
	free(db);
}

sqlite3 *
db_handle(struct db *db)
{
	return db->h;
}

const char *
db_errmsg(struct db *db)
{
	return sqlite3_errmsg(db->h);
}

int
db_exec(struct db *db, const char *sql)
{
	return db_err(sqlite3_exec(db->h, sql, NULL, NULL, NULL));
}

int
db_schema_version(struct db *db, const char *module, int *versionp)
{
	sqlite3_stmt *st = NULL;
	int rc, r;

	rc = sqlite3_prepare_v2(
	    db->h, "SELECT version FROM schema_version WHERE module = ?", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_err(rc);
	sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*versionp = sqlite3_column_int(st, 0);
		r = STEP_OK;
	} else if (rc == SQLITE_DONE) {
		*versionp = 0;
		r = STEP_OK;
	} else {
		r = db_err(rc);
	}
	sqlite3_finalize(st);
	return r;
}

int
db_migrate(struct db *db, const char *module, const char *const *steps, int nsteps)
{
	sqlite3_stmt *st = NULL;
	int version, r, rc, i;

	if ((r = db_begin(db)) != 0)
		return r;
	if ((r = db_schema_version(db, module, &version)) != 0)
		goto out;
	if (version > nsteps) {
		r = STEP_EINVAL; /* written by a newer stepsync */
		goto out;
	}
	if (version == nsteps)
		goto out;
	for (i = version; i < nsteps; i++)
		if ((r = db_exec(db, steps[i])) != 0)
			goto out;
	rc = sqlite3_prepare_v2(db->h,
	    "INSERT INTO schema_version(module, version) VALUES(?, ?)"
	    " ON CONFLICT(module) DO UPDATE SET version = excluded.version",
	    -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = db_err(rc);
		goto out;
	}
	sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, nsteps);
	rc = sqlite3_step(st);
	r = rc == SQLITE_DONE ? STEP_OK : db_err(rc);
out:
	sqlite3_finalize(st);
	if (r == STEP_OK)
		return db_commit(db);
	db_rollback(db);
	return r;
}

int
db_begin(struct db *db)
{
	int r;

	if (db->depth > 0) {
		db->depth++;
		return STEP_OK;
	}
	if ((r = db_exec(db, "BEGIN IMMEDIATE")) != 0)
		return r;
	db->depth = 1;
	return STEP_OK;
}

int
db_commit(struct db *db)
{
	int r;

	if (db->depth == 0)
		return STEP_EINVAL;
	if (db->depth > 1) {
		db->depth--;
		return STEP_OK;
	}
	if ((r = db_exec(db, "COMMIT")) != 0)
		return r; /* still open: the caller rolls back */
	db->depth = 0;
	return STEP_OK;
}

int
db_rollback(struct db *db)
{
	if (db->depth == 0)
		return STEP_OK;
	db->depth = 0;
	return db_exec(db, "ROLLBACK");
}
