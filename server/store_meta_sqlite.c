/*
 * store_meta_sqlite.c — the default metadata backend: SQLite in ROOT/meta.db (schema in
 * meta.c). A reader connection (rdb, under rlock) answers lookups; the commit thread owns
 * the writer connection (wdb) and applies each batch in one IMMEDIATE transaction.
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "err.h"
#include "hash.h"
#include "log.h"
#include "meta.h"
#include "store_priv.h"
#include "util.h"

#define CHECKPOINT_IDLE  1000  /* WAL frames worth a checkpoint when no job waits */
#define CHECKPOINT_FORCE 16384 /* ...and at this many even when jobs wait (64 MiB) */
#define WSTMT_CACHE      16    /* prepared statements a connection keeps */

/* Prepared statements of one connection, prepared on first use and then reused: a batch
 * of a few hundred small objects would otherwise spend much of its time in the SQL parser. */
struct stmt_cache {
	sqlite3 *db;
	struct {
		const char *sql; /* a string literal: the cache is keyed by its address */
		sqlite3_stmt *st;
	} e[WSTMT_CACHE];
};

struct store_meta {
	struct store *s;
	sqlite3 *rdb; /* readers, under rlock */
	pthread_mutex_t rlock;
	struct stmt_cache rstmt; /* rdb's statements, under rlock */
	sqlite3 *wdb;            /* commit thread only */
	struct stmt_cache wstmt; /* wdb's statements */
	int wal_frames;          /* frames in the WAL after wdb's last commit */
};

/* Set while this thread holds rlock between read_begin and read_end. */
static _Thread_local int in_read;
/* The cached statement for sql (a string literal); NULL when it cannot be prepared. The
 * caller holds the connection's lock and gives it back with stmt_done(). */
static sqlite3_stmt *
stmt_get(struct stmt_cache *c, const char *sql)
{
	size_t i;

	for (i = 0; i < WSTMT_CACHE && c->e[i].sql != NULL; i++)
		if (c->e[i].sql == sql)
			return c->e[i].st;
	if (i == WSTMT_CACHE) {
		assert(!"WSTMT_CACHE too small");
		return NULL;
	}
	if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->e[i].st, NULL) !=
	    SQLITE_OK) {
		sqlite3_finalize(c->e[i].st);
		c->e[i].st = NULL;
		return NULL;
	}
	c->e[i].sql = sql;
	return c->e[i].st;
}

static void
stmt_done(sqlite3_stmt *st)
{
	if (st == NULL)
		return;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static void
stmt_cache_release(struct stmt_cache *c)
{
	size_t i;

	for (i = 0; i < WSTMT_CACHE; i++)
		sqlite3_finalize(c->e[i].st);
	memset(c, 0, sizeof(*c));
}

/* exists() with rlock held. */
static int
exists_locked(struct store_meta *m, const char *user, const char *key, size_t keylen, int data)
{
	static const char q_data[] = "SELECT 1 FROM data WHERE user = ?1 AND key = ?2";
	static const char q_obj[] = "SELECT 1 FROM objects WHERE user = ?1 AND key = ?2";
	sqlite3_stmt *st;
	int r;

	if ((st = stmt_get(&m->rstmt, data ? q_data : q_obj)) == NULL)
		return STEP_EIO;
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, (int)keylen, SQLITE_STATIC);
	switch (sqlite3_step(st)) {
	case SQLITE_ROW:
		r = 1;
		break;
	case SQLITE_DONE:
		r = 0;
		break;
	default:
		r = STEP_EIO;
	}
	stmt_done(st);
	return r;
}

/*
 * Runs the cached statement sql (BEGIN / COMMIT / ROLLBACK) on the reader connection, under
 * rlock; 0 or STEP_EIO. Lookups between BEGIN and COMMIT share one read transaction: one
 * snapshot, and the connection's page cache survives from one lookup to the next, where
 * each autocommit lookup after a commit of the writer starts with an empty cache and
 * reads its B-tree pages again.
 */
static int
rdb_exec(struct store_meta *m, const char *sql)
{
	sqlite3_stmt *st = stmt_get(&m->rstmt, sql);
	int r = st != NULL && sqlite3_step(st) == SQLITE_DONE ? STEP_OK : STEP_EIO;

	stmt_done(st);
	return r;
}

/* The rowid of an inline object's name, or 0 when the object is a file of its own. */
static sqlite3_int64
blob_rowid(const char *file)
{
	if (strncmp(file, BLOB_PREFIX, strlen(BLOB_PREFIX)) != 0)
		return 0;
	return strtoll(file + strlen(BLOB_PREFIX), NULL, 10);
}

/* Reads len bytes at off of an inline object ("blob:<rowid>"); 0, STEP_ENOENT, STEP_EIO. */
static int
sq_blob_read(struct store_meta *m, const char *file, uint64_t off, uint8_t *dst, size_t len)
{
	sqlite3_int64 rowid = blob_rowid(file);
	sqlite3_blob *b = NULL;
	int r;

	if (rowid <= 0)
		return STEP_ENOENT;
	if (off > INLINE_MAX || len > INLINE_MAX)
		return STEP_EIO;
	pthread_mutex_lock(&m->rlock);
	r = sqlite3_blob_open(m->rdb, "main", "blobs", "data", rowid, 0, &b);
	if (r == SQLITE_OK)
		r = sqlite3_blob_read(b, dst, (int)len, (int)off) == SQLITE_OK ? STEP_OK : STEP_EIO;
	else
		r = r == SQLITE_ERROR ? STEP_ENOENT : STEP_EIO;
	sqlite3_blob_close(b);
	pthread_mutex_unlock(&m->rlock);
	return r;
}

/* ---- DATA ---- */

static int
sq_data_get(struct store_meta *m, const char *user, const char *key, size_t keylen, char **json)
{
	sqlite3_stmt *st = NULL;
	int r;

	pthread_mutex_lock(&m->rlock);
	if (sqlite3_prepare_v2(m->rdb, "SELECT json FROM data WHERE user = ?1 AND key = ?2", -1,
	        &st, NULL) != SQLITE_OK) {
		r = STEP_EIO;
		goto out;
	}
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, (int)keylen, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		char *copy = strdup((const char *)sqlite3_column_text(st, 0));

		r = copy != NULL ? STEP_OK : STEP_ENOMEM;
		if (copy != NULL)
			*json = copy;
	} else {
		r = r == SQLITE_DONE ? STEP_ENOENT : STEP_EIO;
	}
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&m->rlock);
	return r;
}

static int
sq_list(struct store_meta *m, const char *user, int data, const char *prefix, size_t plen,
    const char *after, size_t alen, long long limit,
    int (*fn)(void *arg, const char *key, size_t keylen, int64_t mtime), void *arg, int *more)
{
	static const char *const sql[2][2] = {
		{ "SELECT key, mtime FROM objects WHERE user = ?1 AND key >= ?2 AND key < ?3 AND "
		  "substr(CAST(key AS BLOB), 1, ?5) = CAST(?4 AS BLOB) ORDER BY key",
		    "SELECT key, mtime FROM objects WHERE user = ?1 AND key > ?2 AND key < ?3 AND "
		    "substr(CAST(key AS BLOB), 1, ?5) = CAST(?4 AS BLOB) ORDER BY key" },
		{ "SELECT key FROM data WHERE user = ?1 AND key >= ?2 AND key < ?3 AND "
		  "substr(CAST(key AS BLOB), 1, ?5) = CAST(?4 AS BLOB) ORDER BY key",
		    "SELECT key FROM data WHERE user = ?1 AND key > ?2 AND key < ?3 AND "
		    "substr(CAST(key AS BLOB), 1, ?5) = CAST(?4 AS BLOB) ORDER BY key" },
	};
	sqlite3_stmt *st = NULL;
	const char *low;
	char up[STORE_MAX_KEY + 8];
	size_t lowlen, uplen;
	long long n = 0;
	int r, step, strict;

	*more = 0;
	strict = store_list_lower(prefix, plen, after, alen, &low, &lowlen);
	/* No upper bound (an empty prefix): 0xF5 starts no UTF-8 sequence, every key is
	 * below it. */
	if ((uplen = store_list_upper(prefix, plen, up, sizeof(up))) == 0)
		memcpy(up, "\xf5", uplen = 1);
	pthread_mutex_lock(&m->rlock);
	/* A range on the (user, key) index; substr() on a BLOB cast compares bytes, so any
	 * prefix works. */
	if (sqlite3_prepare_v2(m->rdb, sql[data != 0][strict], -1, &st, NULL) != SQLITE_OK) {
		r = STEP_EIO;
		goto out;
	}
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, low, (int)lowlen, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, up, (int)uplen, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, prefix, (int)plen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)plen);
	r = STEP_OK;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == limit) {
			*more = 1;
			break;
		}
		if ((r = fn(arg, (const char *)sqlite3_column_text(st, 0),
		         (size_t)sqlite3_column_bytes(st, 0),
		         data ? 0 : (int64_t)sqlite3_column_int64(st, 1))) != 0)
			goto out;
		n++;
	}
	if (step != SQLITE_ROW && step != SQLITE_DONE)
		r = STEP_EIO;
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&m->rlock);
	return r;
}

/* ---- the commit thread ---- */

/* The writer connection's last failure: 507 material when the disk is full. */
static int
wdb_err(struct store_meta *m)
{
	return (sqlite3_errcode(m->wdb) & 0xff) == SQLITE_FULL ? STEP_ENOSPC : STEP_EIO;
}

static int
wexec(struct store_meta *m, const char *sql, const char *user, const char *key, size_t keylen,
    const char *t3, sqlite3_int64 i4, sqlite3_int64 i5, const char *t6, sqlite3_int64 i7)
{
	sqlite3_stmt *st;
	int r;

	/* Parameters the statement does not use are simply not bound (SQLITE_RANGE). */
	if ((st = stmt_get(&m->wstmt, sql)) == NULL)
		return STEP_EIO;
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, (int)keylen, SQLITE_STATIC);
	if (t3 != NULL)
		sqlite3_bind_text(st, 3, t3, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, i4);
	sqlite3_bind_int64(st, 5, i5);
	if (t6 != NULL)
		sqlite3_bind_text(st, 6, t6, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, i7);
	r = sqlite3_step(st);
	if (r == SQLITE_DONE)
		r = sqlite3_changes(m->wdb) > 0 ? STEP_OK : STEP_ENOENT;
	else if (r == SQLITE_CONSTRAINT)
		r = STEP_EEXIST;
	else
		r = wdb_err(m);
	stmt_done(st);
	return r;
}

static void
blob_delete(struct store_meta *m, sqlite3_int64 rowid)
{
	sqlite3_stmt *st = stmt_get(&m->wstmt, "DELETE FROM blobs WHERE id = ?1");

	if (st == NULL)
		return;
	sqlite3_bind_int64(st, 1, rowid);
	sqlite3_step(st);
	stmt_done(st);
}

/*
 * The replaced object of a replacing commit: its file and size into j->old_file and
 * j->old_size ("" when the key has no object now). 0 or STEP_EIO.
 */
static int
commit_old(struct store_meta *m, struct store_job *j)
{
	sqlite3_stmt *st = stmt_get(&m->wstmt,
	    "SELECT file, size FROM objects"
	    " WHERE user = ?1 AND key = ?2");
	int r;

	j->old_file[0] = '\0';
	if (st == NULL)
		return STEP_EIO;
	sqlite3_bind_text(st, 1, j->u->user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, j->u->key, (int)j->u->keylen, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		snprintf(j->old_file, sizeof(j->old_file), "%s",
		    (const char *)sqlite3_column_text(st, 0));
		j->old_size = (uint64_t)sqlite3_column_int64(st, 1);
	}
	stmt_done(st);
	return r == SQLITE_ROW || r == SQLITE_DONE ? STEP_OK : STEP_EIO;
}

/*
 * The rows of one COMMIT job: the upload row goes, the object row comes. A replacing
 * upload's row takes the key over in one statement (the old row is read first, so its
 * bytes are reclaimed once the transaction is durable); any other finds an existing key
 * STEP_EEXIST. Sets j->err.
 */
static void
commit_sql(struct store_meta *m, struct store_job *j, int64_t now)
{
	struct store_upload *u = j->u;
	char file[160];
	int r;

	if (j->err != 0 && u->inl)
		return;
	snprintf(file, sizeof(file), "%s.%s", u->stem, u->gen);
	if (!u->inl) {
		wexec(m, "DELETE FROM uploads WHERE user = ?1 AND key = ?2 AND file = ?3", u->user,
		    u->key, u->keylen, file, 0, 0, NULL, 0);
		if (j->err != 0)
			return;
	}
	/* An inline object's file is the pack range pack_write_batch named. */
	if (u->replace && (r = commit_old(m, j)) != 0) {
		j->err = r;
	} else {
		j->err = wexec(m,
		    u->replace
		        ? "INSERT INTO objects(user, key, file, size, block_size, md5, mtime)"
		          " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(user, key) DO"
		          " UPDATE SET file = excluded.file, size = excluded.size,"
		          " block_size = excluded.block_size, md5 = excluded.md5,"
		          " mtime = excluded.mtime"
		        : "INSERT INTO objects(user, key, file, size, block_size, md5, mtime)"
		          " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
		    u->user, u->key, u->keylen, u->inl ? j->file : file, (sqlite3_int64)u->size,
		    u->block_size < m->s->o.block_size ? u->block_size : m->s->o.block_size, j->md5,
		    now);
	}
	if (j->err != 0) {
		j->old_file[0] = '\0';
		if (u->inl)
			pack_punch(m->s, j->file, u->size);
		return;
	}
	if (j->old_file[0] == '\0')
		return;
	/* The replaced object is gone: as for a DELETE, the user's obj_gen moves. */
	if (blob_rowid(j->old_file) > 0)
		blob_delete(m, blob_rowid(j->old_file));
	if (wexec(m,
	        "INSERT INTO obj_gen(user, gen) VALUES(?1, 1)"
	        " ON CONFLICT(user) DO UPDATE SET gen = gen + 1",
	        u->user, NULL, 0, NULL, 0, 0, NULL, 0) != STEP_OK)
		j->err = wdb_err(m);
}

static void
sq_apply(struct store_meta *m, struct store *s, struct store_job *batch)
{
	struct store_job *j;
	int64_t now = util_wall_s();
	int r, abort_tx = 0;

	if (meta_exec(m->wdb, "BEGIN IMMEDIATE") != 0) {
		r = wdb_err(m);
		for (j = batch; j != NULL; j = j->next)
			if (j->err == 0)
				j->err = r;
		return;
	}
	for (j = batch; j != NULL; j = j->next) {
		struct store_upload *u = j->u;
		char file[160], claim[64];

		switch (j->kind) {
		case JOB_ROW:
			snprintf(file, sizeof(file), "%s.%s", u->stem, u->gen);
			snprintf(claim, sizeof(claim), "%s", u->want_md5);
			wexec(m,
			    "INSERT OR REPLACE INTO uploads(user, key, file, size, block_size, "
			    "mtime, claim)"
			    " VALUES(?1, ?2, ?3, ?4, ?5, ?7, ?6)",
			    u->user, u->key, u->keylen, file, (sqlite3_int64)u->size, u->block_size,
			    claim, now);
			break;
		case JOB_DROP:
			if (u->inl)
				break;
			snprintf(file, sizeof(file), "%s.%s", u->stem, u->gen);
			wexec(m, "DELETE FROM uploads WHERE user = ?1 AND key = ?2 AND file = ?3",
			    u->user, u->key, u->keylen, file, 0, 0, NULL, 0);
			break;
		case JOB_COMMIT:
			commit_sql(m, j, now);
			break;
		case JOB_OBJ_DELETE: {
			sqlite3_stmt *st;

			j->err = STEP_ENOENT;
			if ((st = stmt_get(&m->wstmt,
			         "DELETE FROM objects WHERE user = ?1 AND key = ?2"
			         " RETURNING file, size")) == NULL) {
				j->err = STEP_EIO;
				break;
			}
			sqlite3_bind_text(st, 1, j->user, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, j->key, (int)j->keylen, SQLITE_STATIC);
			if (sqlite3_step(st) == SQLITE_ROW) {
				snprintf(j->file, sizeof(j->file), "%s",
				    (const char *)sqlite3_column_text(st, 0));
				j->size = (uint64_t)sqlite3_column_int64(st, 1);
				j->err = STEP_OK;
				while (sqlite3_step(st) == SQLITE_ROW)
					;
			}
			stmt_done(st);
			if (j->err == STEP_OK && blob_rowid(j->file) > 0)
				blob_delete(m, blob_rowid(j->file));
			/* A complete object is gone: its user's obj_gen moves, in this transaction.
			 */
			if (j->err == STEP_OK &&
			    wexec(m,
			        "INSERT INTO obj_gen(user, gen) VALUES(?1, 1)"
			        " ON CONFLICT(user) DO UPDATE SET gen = gen + 1",
			        j->user, NULL, 0, NULL, 0, 0, NULL, 0) != STEP_OK)
				j->err = wdb_err(m);
			break;
		}
		case JOB_DATA_SAVE:
			j->err = wexec(m,
			    "INSERT INTO data(user, key, json) VALUES(?1, ?2, ?3)"
			    " ON CONFLICT DO NOTHING",
			    j->user, j->key, j->keylen, j->json, 0, 0, NULL, 0);
			if (j->err == STEP_ENOENT)
				j->err = STEP_EEXIST; /* no row inserted: the key exists */
			break;
		case JOB_DATA_DELETE:
			j->err = wexec(m, "DELETE FROM data WHERE user = ?1 AND key = ?2", j->user,
			    j->key, j->keylen, NULL, 0, 0, NULL, 0);
			break;
		}
	}
	if (abort_tx || meta_exec(m->wdb, "COMMIT") != 0) {
		r = abort_tx ? STEP_EIO : wdb_err(m);
		if (!sqlite3_get_autocommit(m->wdb)) /* SQLite may have rolled back already */
			meta_exec(m->wdb, "ROLLBACK");
		for (j = batch; j != NULL; j = j->next)
			if (j->err == 0 || j->kind == JOB_OBJ_DELETE)
				j->err = r;
	}
}

/* Counts the WAL's frames after each commit of the writer connection (sqlite3_wal_hook). */
static int
wal_counted(void *arg, sqlite3 *db, const char *name, int frames)
{
	struct store_meta *m = arg;

	m->wal_frames = frames;
	return SQLITE_OK;
}

/*
 * The WAL is copied back into the database here rather than by SQLite's automatic
 * checkpoint inside a commit: while requests keep coming (a backup of many small files
 * puts every blob through the WAL), commits only append and sync the WAL, and the copy
 * waits for a quiet moment, or for CHECKPOINT_FORCE frames at most.
 */
static void
sq_idle(struct store_meta *m, int busy)
{
	if (m->wal_frames < CHECKPOINT_IDLE)
		return;
	if (busy && m->wal_frames < CHECKPOINT_FORCE)
		return;
	if (sqlite3_wal_checkpoint_v2(m->wdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) !=
	    SQLITE_OK)
		log_info("checkpoint: %s", sqlite3_errmsg(m->wdb));
	m->wal_frames = 0;
}

/* Reads the store's id from meta.db, creating it (random) when the store is new. */
static int
sq_store_id(struct store_meta *m, char id[33])
{
	uint8_t b[16];
	char hex[33];
	sqlite3_stmt *st = NULL;
	int r = STEP_EIO;

	if (hash_random(b, sizeof(b)) != 0)
		return STEP_EIO;
	hash_to_hex(b, sizeof(b), hex);
	if (sqlite3_prepare_v2(m->wdb,
	        "INSERT INTO info(name, value) VALUES('store_id', ?1) ON CONFLICT DO NOTHING", -1,
	        &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_text(st, 1, hex, 32, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto out;
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(m->wdb, "SELECT value FROM info WHERE name = 'store_id'", -1, &st,
	        NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW || sqlite3_column_bytes(st, 0) != 32)
		goto out;
	memcpy(id, sqlite3_column_text(st, 0), 32);
	id[32] = '\0';
	r = STEP_OK;
out:
	sqlite3_finalize(st);
	return r;
}

static int
sq_obj_gen(struct store_meta *m, const char *user, int64_t *gen)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&m->rlock);
	if ((st = stmt_get(&m->rstmt, "SELECT gen FROM obj_gen WHERE user = ?1")) == NULL) {
		pthread_mutex_unlock(&m->rlock);
		return STEP_EIO;
	}
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		*gen = sqlite3_column_int64(st, 0);
		r = STEP_OK;
	} else if (r == SQLITE_DONE) {
		*gen = 0;
		r = STEP_OK;
	} else {
		r = STEP_EIO;
	}
	stmt_done(st);
	pthread_mutex_unlock(&m->rlock);
	return r;
}
static int
sq_exists(struct store_meta *m, const char *user, const char *key, size_t keylen, int data)
{
	int r;

	if (in_read)
		return exists_locked(m, user, key, keylen, data);
	pthread_mutex_lock(&m->rlock);
	r = exists_locked(m, user, key, keylen, data);
	pthread_mutex_unlock(&m->rlock);
	return r;
}

static void
sq_read_begin(struct store_meta *m)
{
	pthread_mutex_lock(&m->rlock);
	in_read = rdb_exec(m, "BEGIN") == 0 ? 2 : 1;
}

static void
sq_read_end(struct store_meta *m)
{
	if (in_read == 2 && rdb_exec(m, "COMMIT") != 0 && !sqlite3_get_autocommit(m->rdb))
		rdb_exec(m, "ROLLBACK");
	in_read = 0;
	pthread_mutex_unlock(&m->rlock);
}

static int
sq_object_get(
    struct store_meta *m, const char *user, const char *key, size_t keylen, struct store_obj *o)
{
	sqlite3_stmt *st = NULL;
	int r;

	pthread_mutex_lock(&m->rlock);
	if ((st = stmt_get(&m->rstmt,
	         "SELECT size, block_size, md5, file FROM objects"
	         " WHERE user = ?1 AND key = ?2")) == NULL) {
		r = STEP_EIO;
		goto out;
	}
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, (int)keylen, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		o->size = (uint64_t)sqlite3_column_int64(st, 0);
		o->block_size = (uint32_t)sqlite3_column_int64(st, 1);
		snprintf(o->md5, sizeof(o->md5), "%s", (const char *)sqlite3_column_text(st, 2));
		snprintf(o->file, sizeof(o->file), "%s", (const char *)sqlite3_column_text(st, 3));
		r = o->block_size > 0 ? STEP_OK : STEP_EIO;
	} else {
		r = r != SQLITE_DONE ? STEP_EIO : STEP_ENOENT;
	}
out:
	stmt_done(st);
	pthread_mutex_unlock(&m->rlock);
	return r;
}

static int
sq_uploads(struct store_meta *m, struct store *s,
    void (*fn)(struct store *s, const struct meta_upload_row *row))
{
	sqlite3_stmt *st = NULL;
	int r;

	if (sqlite3_prepare_v2(m->wdb,
	        "SELECT user, key, size, block_size, file, claim FROM uploads", -1, &st,
	        NULL) != SQLITE_OK)
		return STEP_EIO;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct meta_upload_row row;

		row.user = (const char *)sqlite3_column_text(st, 0);
		row.key = (const char *)sqlite3_column_text(st, 1);
		row.keylen = (size_t)sqlite3_column_bytes(st, 1);
		row.size = sqlite3_column_int64(st, 2);
		row.block_size = sqlite3_column_int64(st, 3);
		row.file = (const char *)sqlite3_column_text(st, 4);
		row.claim = sqlite3_column_type(st, 5) == SQLITE_TEXT
		    ? (const char *)sqlite3_column_text(st, 5)
		    : NULL;
		if (row.user != NULL && row.key != NULL)
			fn(s, &row);
	}
	sqlite3_finalize(st);
	return r == SQLITE_DONE ? STEP_OK : STEP_EIO;
}

static int
sq_file_named(struct store_meta *m, const char *file)
{
	sqlite3_stmt *st;
	int r;

	pthread_mutex_lock(&m->rlock);
	if ((st = stmt_get(&m->rstmt, "SELECT 1 FROM objects WHERE file = ?1")) == NULL) {
		pthread_mutex_unlock(&m->rlock);
		return STEP_EIO;
	}
	sqlite3_bind_text(st, 1, file, -1, SQLITE_STATIC);
	r = sqlite3_step(st);
	r = r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : STEP_EIO;
	stmt_done(st);
	pthread_mutex_unlock(&m->rlock);
	return r;
}

static int
sq_pack_end(struct store_meta *m, unsigned n, uint64_t *end)
{
	sqlite3_stmt *st = NULL;
	char lo[40], hi[40];
	int r;

	*end = 0;
	snprintf(lo, sizeof(lo), "pack:%u:", n);
	snprintf(hi, sizeof(hi), "pack:%u;", n);
	if (sqlite3_prepare_v2(m->rdb,
	        "SELECT file, size FROM objects WHERE file >= ?1 AND file < ?2", -1, &st,
	        NULL) != SQLITE_OK)
		return STEP_EIO;
	sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t off;
		unsigned pn;

		if (pack_parse((const char *)sqlite3_column_text(st, 0), &pn, &off) && pn == n &&
		    off + (uint64_t)sqlite3_column_int64(st, 1) > *end)
			*end = off + (uint64_t)sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	return r == SQLITE_DONE ? STEP_OK : STEP_EIO;
}

static void
sq_close(struct store_meta *m)
{
	if (m == NULL)
		return;
	stmt_cache_release(&m->rstmt);
	stmt_cache_release(&m->wstmt);
	sqlite3_close(m->rdb);
	sqlite3_close(m->wdb);
	pthread_mutex_destroy(&m->rlock);
	free(m);
}

static int
sq_open(struct store *s, struct store_meta **out, char *errbuf, size_t errlen)
{
	struct store_meta *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return STEP_ENOMEM;
	m->s = s;
	pthread_mutex_init(&m->rlock, NULL);
	if (meta_open(s->root, &m->wdb) != 0 || meta_open(s->root, &m->rdb) != 0) {
		snprintf(errbuf, errlen, "cannot open '%s/meta.db'", s->root);
		sq_close(m);
		return STEP_EIO;
	}
	/* Readers map the database: every commit invalidates their page cache, and re-reading
	 * the pages an object lookup needs would otherwise be a pread each. */
	meta_exec(m->rdb, "PRAGMA mmap_size=1073741824");
	m->rstmt.db = m->rdb;
	m->wstmt.db = m->wdb;
	/* Checkpoints are the commit thread's (sq_idle), not every commit's. */
	sqlite3_wal_autocheckpoint(m->wdb, 0);
	meta_exec(m->wdb, "PRAGMA journal_size_limit=4194304"); /* a grown WAL shrinks back */
	sqlite3_wal_hook(m->wdb, wal_counted, m);
	*out = m;
	return STEP_OK;
}

const struct store_meta_ops store_meta_sqlite = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.store_id = sq_store_id,
	.exists = sq_exists,
	.read_begin = sq_read_begin,
	.read_end = sq_read_end,
	.object_get = sq_object_get,
	.blob_read = sq_blob_read,
	.data_get = sq_data_get,
	.list = sq_list,
	.obj_gen = sq_obj_gen,
	.uploads = sq_uploads,
	.apply = sq_apply,
	.file_named = sq_file_named,
	.pack_end = sq_pack_end,
	.idle = sq_idle,
};
