/*
 * snapshots.c — local cache of recorded snapshots (table "snapshots"). Never prints.
 */
#include <string.h>

#include <sqlite3.h>

#include "db.h"
#include "err.h"
#include "snapshots.h"

static const char *const snap_steps[] = {
	"CREATE TABLE snapshots("
	" name TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL,"
	" files INTEGER NOT NULL, dirs INTEGER NOT NULL, symlinks INTEGER NOT NULL,"
	" bytes INTEGER NOT NULL, PRIMARY KEY(name, seq));",
	/* MD5 of the manifest's entry lines: a run whose tree is the same records nothing. */
	"ALTER TABLE snapshots ADD COLUMN digest TEXT NOT NULL DEFAULT '';",
};

int
snapshots_migrate(struct db *db)
{
	return db_migrate(db, "snapshots", snap_steps, sizeof(snap_steps) / sizeof(snap_steps[0]));
}

static int
prep(struct db *db, const char *sql, sqlite3_stmt **st)
{
	int rc = sqlite3_prepare_v2(db_handle(db), sql, -1, st, NULL);

	return rc == SQLITE_OK ? 0 : db_err(rc);
}

int
snapshots_put(struct db *db, const char *name, const struct snapshots_rec *rec)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = prep(db,
	         "INSERT OR REPLACE INTO snapshots(name, seq, time, files, dirs, symlinks, bytes,"
	         " digest) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
	         &st)) != 0)
		return r;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)rec->seq);
	sqlite3_bind_int64(st, 3, rec->time);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)rec->files);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)rec->dirs);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)rec->symlinks);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)rec->bytes);
	sqlite3_bind_text(st, 8, rec->digest, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(rc);
}

int
snapshots_delete(struct db *db, const char *name, uint64_t seq)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = prep(db, "DELETE FROM snapshots WHERE name = ? AND seq = ?", &st)) != 0)
		return r;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(rc);
}

int
snapshots_latest(struct db *db, const char *name, uint64_t *seqp)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = prep(db, "SELECT coalesce(max(seq), 0) FROM snapshots WHERE name = ?", &st)) != 0)
		return r;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*seqp = (uint64_t)sqlite3_column_int64(st, 0);
		r = 0;
	} else {
		r = db_err(rc);
	}
	sqlite3_finalize(st);
	return r;
}

int
snapshots_get(struct db *db, const char *name, uint64_t seq, struct snapshots_rec *rec)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = prep(db,
	         "SELECT time, files, dirs, symlinks, bytes, digest FROM snapshots"
	         " WHERE name = ? AND seq = ?",
	         &st)) != 0)
		return r;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		memset(rec, 0, sizeof(*rec));
		rec->seq = seq;
		rec->time = sqlite3_column_int64(st, 0);
		rec->files = (uint64_t)sqlite3_column_int64(st, 1);
		rec->dirs = (uint64_t)sqlite3_column_int64(st, 2);
		rec->symlinks = (uint64_t)sqlite3_column_int64(st, 3);
		rec->bytes = (uint64_t)sqlite3_column_int64(st, 4);
		if (sqlite3_column_bytes(st, 5) == (int)sizeof(rec->digest) - 1)
			memcpy(rec->digest, sqlite3_column_text(st, 5), sizeof(rec->digest));
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? STEP_ENOENT : db_err(rc);
	}
	sqlite3_finalize(st);
	return r;
}
