/*
 * queue.c — durable pending-change queue and status table for `stepsync watch` and
 * `stepsync status`. Plain prepared statements on a borrowed handle; never prints.
 */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "queue.h"

static const char queue_schema[] =
    "CREATE TABLE IF NOT EXISTS watch_queue ("
    " dir TEXT NOT NULL,"
    " path TEXT NOT NULL,"
    " kind INTEGER NOT NULL,"
    " t INTEGER NOT NULL,"
    " seq INTEGER NOT NULL,"
    " PRIMARY KEY (dir, path));"
    "CREATE INDEX IF NOT EXISTS watch_queue_seq ON watch_queue(dir, seq);"
    /* queue_push()'s max(seq) of every dir: one index step, not a pass over the queue
     * per change (a burst of 10,000 changes was quadratic). */
    "CREATE INDEX IF NOT EXISTS watch_queue_seq_all ON watch_queue(seq);"
    "CREATE TABLE IF NOT EXISTS agent_status ("
    " k TEXT PRIMARY KEY,"
    " v TEXT NOT NULL);";

static int
sql_err(int rc)
{
	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
		return STEP_EBUSY;
	if (rc == SQLITE_NOMEM)
		return STEP_ENOMEM;
	return STEP_EIO;
}

int
queue_migrate(sqlite3 *db)
{
	int rc = sqlite3_exec(db, queue_schema, NULL, NULL, NULL);

	return rc == SQLITE_OK ? STEP_OK : sql_err(rc);
}

/* Prepares sql, runs it to completion with up to three text/int binds; for writes. */
static int
run(sqlite3 *db, const char *sql, const char *a, const char *b, long long c, long long d, int nint)
{
	sqlite3_stmt *st = NULL;
	int rc, i = 1;

	if ((rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL)) != SQLITE_OK)
		goto out;
	if (a != NULL)
		sqlite3_bind_text(st, i++, a, -1, SQLITE_STATIC);
	if (b != NULL)
		sqlite3_bind_text(st, i++, b, -1, SQLITE_STATIC);
	if (nint >= 1)
		sqlite3_bind_int64(st, i++, c);
	if (nint >= 2)
		sqlite3_bind_int64(st, i++, d);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE || rc == SQLITE_ROW)
		rc = SQLITE_OK;
out:
	sqlite3_finalize(st);
	return rc == SQLITE_OK ? STEP_OK : sql_err(rc);
}

int
queue_push(sqlite3 *db, const char *dir, const char *path, int kind, int64_t t_s)
{
	/* The new sequence number is above every pending one, so a mark taken earlier
	 * never covers this change. */
	return run(db,
	    "INSERT INTO watch_queue(dir, path, kind, t, seq) VALUES (?1, ?2, ?3, ?4,"
	    " (SELECT coalesce(max(seq), 0) + 1 FROM watch_queue))"
	    " ON CONFLICT(dir, path) DO UPDATE SET kind = excluded.kind, t = excluded.t,"
	    " seq = excluded.seq",
	    dir, path, kind, t_s, 2);
}

/* Runs a one-row, one-integer query with an optional text bind. */
static int
query_int(sqlite3 *db, const char *sql, const char *a, long long *outp)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if ((rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL)) != SQLITE_OK)
		goto out;
	if (a != NULL)
		sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(st)) != SQLITE_ROW)
		goto out;
	*outp = sqlite3_column_int64(st, 0);
	rc = SQLITE_OK;
out:
	sqlite3_finalize(st);
	return rc == SQLITE_OK ? STEP_OK : sql_err(rc);
}

int
queue_count(sqlite3 *db, const char *dir, long long *countp)
{
	if (dir == NULL)
		return query_int(db, "SELECT count(*) FROM watch_queue", NULL, countp);
	return query_int(db, "SELECT count(*) FROM watch_queue WHERE dir = ?1", dir, countp);
}

int
queue_mark(sqlite3 *db, const char *dir, long long *seqp)
{
	return query_int(
	    db, "SELECT coalesce(max(seq), 0) FROM watch_queue WHERE dir = ?1", dir, seqp);
}

int
queue_each(sqlite3 *db, const char *dir, long long seq, queue_entry_fn *fn, void *arg)
{
	sqlite3_stmt *st = NULL;
	int rc, r = 0;

	rc = sqlite3_prepare_v2(db,
	    "SELECT path, kind FROM watch_queue WHERE dir = ?1 AND seq <= ?2 ORDER BY path", -1,
	    &st, NULL);
	if (rc != SQLITE_OK)
		return sql_err(rc);
	sqlite3_bind_text(st, 1, dir, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
		r = fn(arg, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int(st, 1));
	if (r == 0 && rc != SQLITE_DONE)
		r = sql_err(rc);
	sqlite3_finalize(st);
	return r;
}

int
queue_ack(sqlite3 *db, const char *dir, long long seq)
{
	return run(
	    db, "DELETE FROM watch_queue WHERE dir = ?1 AND seq <= ?2", dir, NULL, seq, 0, 1);
}

void
queue_dirs_free(char **dirs, size_t n)
{
	size_t i;

	if (dirs == NULL)
		return;
	for (i = 0; i < n; i++)
		free(dirs[i]);
	free(dirs);
}

int
queue_dirs(sqlite3 *db, char ***dirsp, size_t *np)
{
	sqlite3_stmt *st = NULL;
	char **v = NULL;
	size_t n = 0;
	int rc, r;

	if ((rc = sqlite3_prepare_v2(db, "SELECT DISTINCT dir FROM watch_queue ORDER BY dir", -1,
	         &st, NULL)) != SQLITE_OK) {
		r = sql_err(rc);
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *d = (const char *)sqlite3_column_text(st, 0);
		char **nv;

		if ((nv = realloc(v, (n + 1) * sizeof(*nv))) == NULL) {
			r = STEP_ENOMEM;
			goto out;
		}
		v = nv;
		if ((v[n] = strdup(d != NULL ? d : "")) == NULL) {
			r = STEP_ENOMEM;
			goto out;
		}
		n++;
	}
	if (rc != SQLITE_DONE) {
		r = sql_err(rc);
		goto out;
	}
	*dirsp = v;
	*np = n;
	v = NULL;
	n = 0;
	r = STEP_OK;
out:
	queue_dirs_free(v, n);
	sqlite3_finalize(st);
	return r;
}

int
queue_status_set(sqlite3 *db, const char *key, const char *value)
{
	if (value == NULL)
		return run(db, "DELETE FROM agent_status WHERE k = ?1", key, NULL, 0, 0, 0);
	return run(
	    db, "INSERT OR REPLACE INTO agent_status(k, v) VALUES (?1, ?2)", key, value, 0, 0, 0);
}

int
queue_status_set_int(sqlite3 *db, const char *key, long long value)
{
	return run(db, "INSERT OR REPLACE INTO agent_status(k, v) VALUES (?1, ?2)", key, NULL,
	    value, 0, 1);
}

int
queue_status_add(sqlite3 *db, const char *key, long long delta)
{
	return run(db,
	    "INSERT INTO agent_status(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET"
	    " v = CAST(agent_status.v AS INTEGER) + excluded.v",
	    key, NULL, delta, 0, 1);
}

int
queue_status_get(sqlite3 *db, const char *key, char **valuep)
{
	sqlite3_stmt *st = NULL;
	const char *txt;
	char *v;
	int rc, r;

	if ((rc = sqlite3_prepare_v2(
	         db, "SELECT v FROM agent_status WHERE k = ?1", -1, &st, NULL)) != SQLITE_OK) {
		r = sql_err(rc);
		goto out;
	}
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		r = STEP_ENOENT;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = sql_err(rc);
		goto out;
	}
	txt = (const char *)sqlite3_column_text(st, 0);
	if ((v = strdup(txt != NULL ? txt : "")) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	*valuep = v;
	r = STEP_OK;
out:
	sqlite3_finalize(st);
	return r;
}

int
queue_status_get_int(sqlite3 *db, const char *key, long long *valuep)
{
	char *v = NULL;
	int r;

	if ((r = queue_status_get(db, key, &v)) != 0)
		return r;
	*valuep = strtoll(v, NULL, 10);
	free(v);
	return STEP_OK;
}
