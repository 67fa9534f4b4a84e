/*
 * files.c — file-state and object tables of the sync engine; prepared statements reused
 * for every file of a run. Never prints, never commits on its own: transactions are the
 * caller's (one per scan).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "db.h"
#include "err.h"
#include "files.h"

static const char *const files_steps[] = {
	"CREATE TABLE files("
	" dir TEXT NOT NULL, path TEXT NOT NULL,"
	" dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,"
	" mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, mode INTEGER NOT NULL,"
	" md5 TEXT NOT NULL, okey TEXT NOT NULL, gen INTEGER NOT NULL,"
	" PRIMARY KEY(dir, path)) WITHOUT ROWID;"
	"CREATE TABLE objects("
	" okey TEXT PRIMARY KEY, size INTEGER NOT NULL, md5 TEXT NOT NULL,"
	" t INTEGER NOT NULL DEFAULT (strftime('%s','now'))) WITHOUT ROWID;",
	/* Chunk lists of large files (format 2): id "c.<sha256 of data>", data the chunks'
	 * 32-byte ids each followed by its size, 8 bytes little-endian. */
	"CREATE TABLE chunklists(id TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;",
	/* The tree id of every directory as the last run built it, and what it holds: an
	 * incremental run reuses the trees of directories it has no reason to read. */
	"CREATE TABLE dirtrees(dir TEXT NOT NULL, path TEXT NOT NULL, id BLOB NOT NULL,"
	" files INTEGER NOT NULL, dirs INTEGER NOT NULL, symlinks INTEGER NOT NULL,"
	" bytes INTEGER NOT NULL, PRIMARY KEY(dir, path)) WITHOUT ROWID;",
};

enum {
	ST_LOOKUP,
	ST_PUT,
	ST_TOUCH,
	ST_COUNT,
	ST_GEN,
	ST_DROP,
	ST_OKNOWN,
	ST_OADD,
	ST_OFORGET,
	ST_CPUT,
	ST_CGET,
	ST_DTGET,
	ST_DTPUT,
	ST_DTCLEAR,
	ST_SEEK,
	ST_DROP1,
	ST_DROPR,
	ST_N
};

static const char *const files_sql[ST_N] = {
	[ST_LOOKUP] = "SELECT f.dev, f.ino, f.size, f.mtime_ns, f.ctime_ns, f.mode, f.md5, f.okey,"
	              " o.okey IS NOT NULL FROM files f LEFT JOIN objects o ON o.okey = f.okey"
	              " WHERE f.dir = ?1 AND f.path = ?2",
	[ST_PUT] = ("INSERT OR REPLACE INTO files(dir, path, dev, ino, size, mtime_ns, ctime_ns,"
	            " mode, md5, okey, gen) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
	[ST_TOUCH] = "UPDATE files SET gen = ?3 WHERE dir = ?1 AND path = ?2",
	[ST_COUNT] = "SELECT count(*) FROM files WHERE dir = ?1",
	[ST_GEN] = "SELECT coalesce(max(gen), 0) + 1 FROM files WHERE dir = ?1",
	[ST_DROP] = "DELETE FROM files WHERE dir = ?1 AND gen <> ?2",
	[ST_OKNOWN] = "SELECT 1 FROM objects WHERE okey = ?1",
	/* t is bound, not left to the column's strftime() default: SQLite formats and parses
	 * a date string for every row that way, a good part of the insert. */
	[ST_OADD] = "INSERT OR REPLACE INTO objects(okey, size, md5, t) VALUES(?1, ?2, ?3, ?4)",
	[ST_OFORGET] = "DELETE FROM objects WHERE okey = ?1",
	[ST_CPUT] = "INSERT OR IGNORE INTO chunklists(id, data) VALUES(?1, ?2)",
	[ST_CGET] = "SELECT data FROM chunklists WHERE id = ?1",
	[ST_DTGET] = "SELECT id, files, dirs, symlinks, bytes FROM dirtrees WHERE dir = ?1 AND"
	             " path = ?2",
	[ST_DTPUT] = "INSERT OR REPLACE INTO dirtrees(dir, path, id, files, dirs, symlinks, bytes)"
	             " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_DTCLEAR] = "DELETE FROM dirtrees WHERE dir = ?1",
	/* An unbounded range binds ?3 as a blob: every text sorts before every blob. */
	[ST_SEEK] = "SELECT path FROM files WHERE dir = ?1 AND path >= ?2 AND path < ?3"
	            " ORDER BY path LIMIT 1",
	[ST_DROP1] = "DELETE FROM files WHERE dir = ?1 AND path = ?2",
	[ST_DROPR] = "DELETE FROM files WHERE dir = ?1 AND path >= ?2 AND path < ?3",
};

struct files {
	struct db *db; /* borrowed */
	sqlite3_stmt *st[ST_N];
};

int
files_migrate(struct db *db)
{
	return db_migrate(db, "files", files_steps, sizeof(files_steps) / sizeof(files_steps[0]));
}

int
files_new(struct db *db, struct files **outp)
{
	struct files *f = calloc(1, sizeof(*f));
	int i, rc;

	if (f == NULL)
		return STEP_ENOMEM;
	f->db = db;
	for (i = 0; i < ST_N; i++) {
		rc = sqlite3_prepare_v3(
		    db_handle(db), files_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &f->st[i], NULL);
		if (rc != SQLITE_OK) {
			files_free(f);
			return db_err(rc);
		}
	}
	*outp = f;
	return 0;
}

void
files_free(struct files *f)
{
	int i;

	if (f == NULL)
		return;
	for (i = 0; i < ST_N; i++)
		sqlite3_finalize(f->st[i]);
	free(f);
}

/* Steps a statement that returns no row (or whose row is ignored) and resets it. */
static int
run(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_err(rc);
}

static void
copy_text(sqlite3_stmt *st, int col, char *out, size_t outlen)
{
	const unsigned char *s = sqlite3_column_text(st, col);
	size_t n = s != NULL ? (size_t)sqlite3_column_bytes(st, col) : 0;

	if (n >= outlen)
		n = outlen - 1;
	if (n > 0)
		memcpy(out, s, n);
	out[n] = '\0';
}

/* Columns c0.. are dev, ino, size, mtime_ns, ctime_ns, mode, md5, okey, known. */
static void
row_from(sqlite3_stmt *st, int c0, struct files_row *row)
{
	row->dev = (uint64_t)sqlite3_column_int64(st, c0);
	row->ino = (uint64_t)sqlite3_column_int64(st, c0 + 1);
	row->size = (uint64_t)sqlite3_column_int64(st, c0 + 2);
	row->mtime_ns = sqlite3_column_int64(st, c0 + 3);
	row->ctime_ns = sqlite3_column_int64(st, c0 + 4);
	row->mode = (unsigned)sqlite3_column_int(st, c0 + 5);
	copy_text(st, c0 + 6, row->md5, sizeof(row->md5));
	copy_text(st, c0 + 7, row->okey, sizeof(row->okey));
	row->known = sqlite3_column_int(st, c0 + 8);
}

int
files_lookup(struct files *f, const char *dir, const char *path, struct files_row *row)
{
	sqlite3_stmt *st = f->st[ST_LOOKUP];
	int rc, r;

	sqlite3_bind_text(st, 1, dir, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		row_from(st, 0, row);
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? STEP_ENOENT : db_err(rc);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

int
files_put(
    struct files *f, const char *dir, const char *path, const struct files_row *row, int64_t gen)
{
	sqlite3_stmt *st = f->st[ST_PUT];

	sqlite3_bind_text(st, 1, dir, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)row->dev);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)row->ino);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)row->size);
	sqlite3_bind_int64(st, 6, row->mtime_ns);
	sqlite3_bind_int64(st, 7, row->ctime_ns);
	sqlite3_bind_int(st, 8, (int)row->mode);
	sqlite3_bind_text(st, 9, row->md5, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 10, row->okey, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 11, gen);
	return run(st);
}

int
files_touch(struct files *f, const char *dir, const char *path, int64_t gen)
{
	sqlite3_stmt *st = f->st[ST_TOUCH];

	sqlite3_bind_text(st, 1, dir, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, gen);
	return run(st);
}

static int
one_int(sqlite3_stmt *st, int64_t *out)
{
	int rc = sqlite3_step(st), r = 0;

	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	else
		r = db_err(rc);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

int
files_count(struct files *f, const char *dir, uint64_t *np)
{
	int64_t n = 0;
	int r;

	sqlite3_bind_text(f->st[ST_COUNT], 1, dir, -1, SQLITE_STATIC);
	if ((r = one_int(f->st[ST_COUNT], &n)) == 0)
		*np = (uint64_t)n;
	return r;
}

int
files_next_gen(struct files *f, const char *dir, int64_t *genp)
{
	sqlite3_bind_text(f->st[ST_GEN], 1, dir, -1, SQLITE_STATIC);
	return one_int(f->st[ST_GEN], genp);
}

int
files_drop_unseen(struct files *f, const char *dir, int64_t gen)
{
	sqlite3_bind_text(f->st[ST_DROP], 1, dir, -1, SQLITE_STATIC);
	sqlite3_bind_int64(f->st[ST_DROP], 2, gen);
	return run(f->st[ST_DROP]);
}

int
files_object_known(struct files *f, const char *okey)
{
	sqlite3_stmt *st = f->st[ST_OKNOWN];
	int rc;

	sqlite3_bind_text(st, 1, okey, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : db_err(rc);
}

int
files_object_add(struct files *f, const char *okey, uint64_t size, const char *md5)
{
	sqlite3_stmt *st = f->st[ST_OADD];

	sqlite3_bind_text(st, 1, okey, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)size);
	sqlite3_bind_text(st, 3, md5, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
	return run(st);
}

int
files_object_forget(struct files *f, const char *okey)
{
	sqlite3_bind_text(f->st[ST_OFORGET], 1, okey, -1, SQLITE_STATIC);
	return run(f->st[ST_OFORGET]);
}

struct files_cursor {
	sqlite3_stmt *st;
	int state; /* SQLITE_ROW: positioned on a row; SQLITE_DONE: past the end */
};

int
files_cursor_open(struct db *db, const char *dir, struct files_cursor **outp)
{
	struct files_cursor *c = calloc(1, sizeof(*c));
	int rc;

	if (c == NULL)
		return STEP_ENOMEM;
	rc = sqlite3_prepare_v2(db_handle(db),
	    "SELECT f.path, f.dev, f.ino, f.size, f.mtime_ns, f.ctime_ns, f.mode, f.md5, f.okey,"
	    " o.okey IS NOT NULL FROM files f LEFT JOIN objects o ON o.okey = f.okey"
	    " WHERE f.dir = ?1 ORDER BY f.path",
	    -1, &c->st, NULL);
	if (rc != SQLITE_OK) {
		files_cursor_free(c);
		return db_err(rc);
	}
	sqlite3_bind_text(c->st, 1, dir, -1, SQLITE_TRANSIENT);
	c->state = sqlite3_step(c->st);
	if (c->state != SQLITE_ROW && c->state != SQLITE_DONE) {
		rc = c->state;
		files_cursor_free(c);
		return db_err(rc);
	}
	*outp = c;
	return 0;
}

int
files_cursor_find(struct files_cursor *c, const char *path, struct files_row *row)
{
	const char *p;
	int cmp = 1;

	while (c->state == SQLITE_ROW) {
		p = (const char *)sqlite3_column_text(c->st, 0);
		if (p != NULL && (cmp = strcmp(p, path)) >= 0)
			break;
		c->state = sqlite3_step(c->st);
	}
	if (c->state != SQLITE_ROW && c->state != SQLITE_DONE)
		return db_err(c->state);
	if (c->state != SQLITE_ROW || cmp != 0)
		return STEP_ENOENT;
	row_from(c->st, 1, row);
	return 0;
}

int
files_cursor_peek(struct files_cursor *c, const char **pathp, struct files_row *row)
{
	if (c->state != SQLITE_ROW)
		return c->state == SQLITE_DONE ? 0 : db_err(c->state);
	*pathp = (const char *)sqlite3_column_text(c->st, 0);
	row_from(c->st, 1, row);
	return *pathp != NULL;
}

int
files_cursor_next(struct files_cursor *c)
{
	if (c->state == SQLITE_ROW)
		c->state = sqlite3_step(c->st);
	return c->state == SQLITE_ROW || c->state == SQLITE_DONE ? 0 : db_err(c->state);
}

void
files_cursor_free(struct files_cursor *c)
{
	if (c == NULL)
		return;
	sqlite3_finalize(c->st);
	free(c);
}

int
files_chunks_put(struct files *f, const char *id, const void *data, size_t len)
{
	sqlite3_stmt *st = f->st[ST_CPUT];

	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 2, data, len, SQLITE_STATIC);
	return run(st);
}

int
files_chunks_get(struct files *f, const char *id, void **datap, size_t *lenp)
{
	sqlite3_stmt *st = f->st[ST_CGET];
	size_t n;
	void *d;
	int rc;

	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		return rc == SQLITE_DONE ? STEP_ENOENT : db_err(rc);
	}
	n = (size_t)sqlite3_column_bytes(st, 0);
	if ((d = malloc(n ? n : 1)) == NULL) {
		sqlite3_reset(st);
		return STEP_ENOMEM;
	}
	if (n > 0)
		memcpy(d, sqlite3_column_blob(st, 0), n);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	*datap = d;
	*lenp = n;
	return 0;
}

int
files_dirtree_get(struct files *f, const char *dir, const char *path, struct files_dirtree *t)
{
	sqlite3_stmt *st = f->st[ST_DTGET];
	int rc, r = STEP_ENOENT;

	sqlite3_bind_text(st, 1, dir, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == (int)sizeof(t->id)) {
		memcpy(t->id, sqlite3_column_blob(st, 0), sizeof(t->id));
		t->files = (uint64_t)sqlite3_column_int64(st, 1);
		t->dirs = (uint64_t)sqlite3_column_int64(st, 2);
		t->symlinks = (uint64_t)sqlite3_column_int64(st, 3);
		t->bytes = (uint64_t)sqlite3_column_int64(st, 4);
		r = 0;
	} else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		r = db_err(rc);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

int
files_dirtree_put(struct files *f, const char *dir, const char *path, const struct files_dirtree *t)
{
	sqlite3_stmt *st = f->st[ST_DTPUT];

	sqlite3_bind_text(st, 1, dir, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, t->id, sizeof(t->id), SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)t->files);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)t->dirs);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)t->symlinks);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)t->bytes);
	return run(st);
}

int
files_dirtree_clear(struct files *f, const char *dir)
{
	sqlite3_bind_text(f->st[ST_DTCLEAR], 1, dir, -1, SQLITE_STATIC);
	return run(f->st[ST_DTCLEAR]);
}

/* Binds the range [lo, hi) (hi NULL: no end) as ?2 and ?3. */
static void
bind_range(sqlite3_stmt *st, const char *lo, const char *hi)
{
	static const uint8_t top = 0xff;

	sqlite3_bind_text(st, 2, lo, -1, SQLITE_STATIC);
	if (hi != NULL)
		sqlite3_bind_text(st, 3, hi, -1, SQLITE_STATIC);
	else
		sqlite3_bind_blob(st, 3, &top, 1, SQLITE_STATIC);
}

int
files_seek(
    struct files *f, const char *dir, const char *lo, const char *hi, char *out, size_t outlen)
{
	sqlite3_stmt *st = f->st[ST_SEEK];
	int rc, r = 0;

	sqlite3_bind_text(st, 1, dir, -1, SQLITE_STATIC);
	bind_range(st, lo, hi);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		copy_text(st, 0, out, outlen);
		r = 1;
	} else if (rc != SQLITE_DONE) {
		r = db_err(rc);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

int
files_drop(struct files *f, const char *dir, const char *path)
{
	sqlite3_bind_text(f->st[ST_DROP1], 1, dir, -1, SQLITE_STATIC);
	sqlite3_bind_text(f->st[ST_DROP1], 2, path, -1, SQLITE_STATIC);
	return run(f->st[ST_DROP1]);
}

int
files_drop_range(struct files *f, const char *dir, const char *lo, const char *hi, uint64_t *np)
{
	int r;

	sqlite3_bind_text(f->st[ST_DROPR], 1, dir, -1, SQLITE_STATIC);
	bind_range(f->st[ST_DROPR], lo, hi);
	r = run(f->st[ST_DROPR]);
	*np = r == 0 ? (uint64_t)sqlite3_changes(db_handle(f->db)) : 0;
	return r;
}
