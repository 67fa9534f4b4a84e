/*
 * runs.c — the last run of each snapshot NAME (table "runs"), written by sync and watch,
 * read by status and watch. Never prints.
 */
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "db.h"
#include "err.h"
#include "runs.h"

static const char *const runs_steps[] = {
	"CREATE TABLE runs("
	" name TEXT PRIMARY KEY, command TEXT NOT NULL, time INTEGER NOT NULL,"
	" exit_status INTEGER NOT NULL, result TEXT NOT NULL, snapshot TEXT, error TEXT,"
	" last_ok INTEGER NOT NULL DEFAULT 0);",
	/* The order of runs within one second (time has a second's resolution). */
	"ALTER TABLE runs ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;",
};

int
runs_migrate(struct db *db)
{
	return db_migrate(db, "runs", runs_steps, sizeof(runs_steps) / sizeof(runs_steps[0]));
}

const char *
runs_result(int exit_status)
{
	if (exit_status == 0)
		return "ok";
	return exit_status == 3 ? "incomplete" : "failed";
}

int
runs_put(struct db *db, const struct runs_rec *rec)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db_handle(db),
	    "INSERT INTO runs(name, command, time, exit_status, result, snapshot, error, last_ok,"
	    " seq) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, CASE WHEN ?4 = 0 THEN ?3 ELSE 0 END,"
	    " (SELECT coalesce(max(seq), 0) + 1 FROM runs))"
	    " ON CONFLICT(name) DO UPDATE SET command = excluded.command, time = excluded.time,"
	    " seq = excluded.seq,"
	    " exit_status = excluded.exit_status, result = excluded.result,"
	    " snapshot = coalesce(excluded.snapshot, runs.snapshot), error = excluded.error,"
	    " last_ok = CASE WHEN excluded.exit_status = 0 THEN excluded.time"
	    " ELSE runs.last_ok END",
	    -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_err(rc);
	sqlite3_bind_text(st, 1, rec->name != NULL ? rec->name : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, rec->command, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, rec->time);
	sqlite3_bind_int(st, 4, rec->exit_status);
	sqlite3_bind_text(st, 5, runs_result(rec->exit_status), -1, SQLITE_STATIC);
	if (rec->snapshot != NULL)
		sqlite3_bind_text(st, 6, rec->snapshot, -1, SQLITE_STATIC);
	if (rec->error != NULL)
		sqlite3_bind_text(st, 7, rec->error, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(rc);
}

static void
row_read(sqlite3_stmt *st, struct runs_rec *rec)
{
	rec->name = (const char *)sqlite3_column_text(st, 0);
	rec->command = (const char *)sqlite3_column_text(st, 1);
	rec->time = sqlite3_column_int64(st, 2);
	rec->exit_status = sqlite3_column_int(st, 3);
	rec->result = (const char *)sqlite3_column_text(st, 4);
	rec->snapshot = (const char *)sqlite3_column_text(st, 5);
	rec->error = (const char *)sqlite3_column_text(st, 6);
	rec->last_ok = sqlite3_column_int64(st, 7);
}

#define RUNS_COLUMNS "name, command, time, exit_status, result, snapshot, error, last_ok"

int
runs_each(struct db *db, runs_each_fn *fn, void *arg)
{
	sqlite3_stmt *st = NULL;
	struct runs_rec rec;
	int rc, r = 0;

	rc = sqlite3_prepare_v2(db_handle(db),
	    "SELECT " RUNS_COLUMNS " FROM runs ORDER BY time DESC, seq DESC, name", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_err(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row_read(st, &rec);
		if ((r = fn(&rec, arg)) != 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = db_err(rc);
	sqlite3_finalize(st);
	return r;
}

/* Copies s into buf at *used; NULL stays NULL. */
static const char *
keep(const char *s, char *buf, size_t bufsize, size_t *used)
{
	char *p;
	int n;

	if (s == NULL || *used >= bufsize)
		return NULL;
	p = buf + *used;
	n = snprintf(p, bufsize - *used, "%s", s);
	*used += n < 0 ? 0 : ((size_t)n + 1 > bufsize - *used ? bufsize - *used : (size_t)n + 1);
	return p;
}

int
runs_get(struct db *db, const char *name, struct runs_rec *rec, char *buf, size_t bufsize)
{
	sqlite3_stmt *st = NULL;
	struct runs_rec row;
	size_t used = 0;
	int rc, r;

	rc = sqlite3_prepare_v2(
	    db_handle(db), "SELECT " RUNS_COLUMNS " FROM runs WHERE name = ?", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_err(rc);
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		row_read(st, &row);
		*rec = row;
		rec->name = keep(row.name, buf, bufsize, &used);
		rec->command = keep(row.command, buf, bufsize, &used);
		rec->result = keep(row.result, buf, bufsize, &used);
		rec->snapshot = keep(row.snapshot, buf, bufsize, &used);
		rec->error = keep(row.error, buf, bufsize, &used);
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? STEP_ENOENT : db_err(rc);
	}
	sqlite3_finalize(st);
	return r;
}
