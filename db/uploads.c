/*
 * uploads.c — the uploads table: resumable upload progress. Never prints.
 */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "err.h"
#include "uploads.h"

static const char *const uploads_steps[] = {
	"CREATE TABLE uploads("
	" server TEXT NOT NULL, user TEXT NOT NULL, key TEXT NOT NULL,"
	" path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
	" ctime_ns INTEGER NOT NULL, ino INTEGER NOT NULL,"
	" block_size INTEGER NOT NULL, total_block INTEGER NOT NULL,"
	" bitmap BLOB NOT NULL, updated INTEGER NOT NULL DEFAULT (strftime('%s','now')),"
	" PRIMARY KEY(server, user, key))",
};

int
uploads_migrate(struct db *db)
{
	return db_migrate(
	    db, "uploads", uploads_steps, (int)(sizeof(uploads_steps) / sizeof(uploads_steps[0])));
}

static int
prepare(struct db *db, const char *sql, sqlite3_stmt **st)
{
	return db_err(sqlite3_prepare_v2(db_handle(db), sql, -1, st, NULL));
}

static char *
col_dup(sqlite3_stmt *st, int i)
{
	const unsigned char *s = sqlite3_column_text(st, i);

	return strdup(s != NULL ? (const char *)s : "");
}

void
uploads_rec_free(struct upload_rec *rec)
{
	if (rec == NULL)
		return;
	free(rec->server);
	free(rec->user);
	free(rec->key);
	free(rec->path);
	free(rec->bitmap);
	free(rec);
}

int
uploads_load(
    struct db *db, const char *server, const char *user, const char *key, struct upload_rec **outp)
{
	sqlite3_stmt *st = NULL;
	struct upload_rec *rec = NULL;
	const void *blob;
	int r, rc;

	if ((r = prepare(db,
	         "SELECT path, size, mtime_ns, ctime_ns, ino, block_size, total_block, bitmap"
	         " FROM uploads WHERE server = ? AND user = ? AND key = ?",
	         &st)) != 0)
		return r;
	sqlite3_bind_text(st, 1, server, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		r = STEP_ENOENT;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = db_err(rc);
		goto out;
	}
	if ((rec = calloc(1, sizeof(*rec))) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	rec->server = strdup(server);
	rec->user = strdup(user);
	rec->key = strdup(key);
	rec->path = col_dup(st, 0);
	rec->size = (uint64_t)sqlite3_column_int64(st, 1);
	rec->mtime_ns = sqlite3_column_int64(st, 2);
	rec->ctime_ns = sqlite3_column_int64(st, 3);
	rec->ino = (uint64_t)sqlite3_column_int64(st, 4);
	rec->block_size = (uint32_t)sqlite3_column_int64(st, 5);
	rec->total_block = (uint32_t)sqlite3_column_int64(st, 6);
	blob = sqlite3_column_blob(st, 7);
	rec->nbitmap = (size_t)sqlite3_column_bytes(st, 7);
	rec->bitmap = malloc(rec->nbitmap + 1);
	if (!rec->server || !rec->user || !rec->key || !rec->path || !rec->bitmap) {
		r = STEP_ENOMEM;
		goto out;
	}
	if (rec->nbitmap > 0)
		memcpy(rec->bitmap, blob, rec->nbitmap);
	*outp = rec;
	rec = NULL;
	r = STEP_OK;
out:
	uploads_rec_free(rec);
	sqlite3_finalize(st);
	return r;
}

int
uploads_save(struct db *db, const struct upload_rec *rec)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = prepare(db,
	         "INSERT OR REPLACE INTO uploads(server, user, key, path, size, mtime_ns,"
	         " ctime_ns, ino, block_size, total_block, bitmap)"
	         " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
	         &st)) != 0)
		return r;
	sqlite3_bind_text(st, 1, rec->server, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, rec->user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, rec->key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, rec->path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)rec->size);
	sqlite3_bind_int64(st, 6, rec->mtime_ns);
	sqlite3_bind_int64(st, 7, rec->ctime_ns);
	sqlite3_bind_int64(st, 8, (sqlite3_int64)rec->ino);
	sqlite3_bind_int64(st, 9, rec->block_size);
	sqlite3_bind_int64(st, 10, rec->total_block);
	sqlite3_bind_blob(
	    st, 11, rec->bitmap ? (const void *)rec->bitmap : "", (int)rec->nbitmap, SQLITE_STATIC);
	rc = sqlite3_step(st);
	r = rc == SQLITE_DONE ? STEP_OK : db_err(rc);
	sqlite3_finalize(st);
	return r;
}

int
uploads_save_bitmap(struct db *db, const char *server, const char *user, const char *key,
    const uint8_t *bitmap, size_t nbitmap)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = prepare(db,
	         "UPDATE uploads SET bitmap = ?, updated = strftime('%s','now')"
	         " WHERE server = ? AND user = ? AND key = ?",
	         &st)) != 0)
		return r;
	sqlite3_bind_blob(st, 1, bitmap, (int)nbitmap, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, server, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		r = db_err(rc);
	else
		r = sqlite3_changes(db_handle(db)) > 0 ? STEP_OK : STEP_ENOENT;
	sqlite3_finalize(st);
	return r;
}

int
uploads_delete(struct db *db, const char *server, const char *user, const char *key)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = prepare(
	         db, "DELETE FROM uploads WHERE server = ? AND user = ? AND key = ?", &st)) != 0)
		return r;
	sqlite3_bind_text(st, 1, server, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	r = rc == SQLITE_DONE ? STEP_OK : db_err(rc);
	sqlite3_finalize(st);
	return r;
}

static uint32_t
bits_set(const uint8_t *p, size_t n, uint32_t limit)
{
	uint32_t count = 0;

	for (size_t i = 0; i < n; i++)
		count += (uint32_t)__builtin_popcount(p[i]);
	return count < limit ? count : limit;
}

int
uploads_each(struct db *db, int (*fn)(const struct upload_progress *p, void *arg), void *arg)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = prepare(db,
	         "SELECT path, key, size, total_block, bitmap, updated FROM uploads"
	         " ORDER BY updated, rowid",
	         &st)) != 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct upload_progress p;
		const uint8_t *bitmap = sqlite3_column_blob(st, 4);
		size_t nbitmap = (size_t)sqlite3_column_bytes(st, 4);

		p.path = (const char *)sqlite3_column_text(st, 0);
		p.key = (const char *)sqlite3_column_text(st, 1);
		p.size = (uint64_t)sqlite3_column_int64(st, 2);
		p.total_block = (uint32_t)sqlite3_column_int64(st, 3);
		p.acked = bitmap != NULL ? bits_set(bitmap, nbitmap, p.total_block) : 0;
		p.updated = sqlite3_column_int64(st, 5);
		if (p.path == NULL)
			p.path = "";
		if (p.key == NULL)
			p.key = "";
		if ((r = fn(&p, arg)) != 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		r = db_err(rc);
	sqlite3_finalize(st);
	return r;
}
