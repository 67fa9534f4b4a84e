/*
 * store_meta_pg.c — the PostgreSQL metadata backend (libpq): several stepd instances share
 * one database and one root directory (a shared filesystem), and any instance serves any
 * request of any upload.
 *
 * What makes it safe with many instances:
 *   - an upload is one uploads row (UNIQUE(usr, key)), inserted by the SAVE that starts it;
 *     its received blocks are rows of blocks, recorded by step_block() under the upload
 *     row's lock (SELECT ... FOR UPDATE), which also counts them: the block that completes
 *     the set flips state 0 -> 1 (claimed) in that transaction, so exactly one instance
 *     commits it; a block arriving later on another instance waits for that commit;
 *   - the commit is one statement per upload inside the batch's transaction: it deletes
 *     the row only if it is still claimed and inserts the object (ON CONFLICT DO NOTHING,
 *     or DO UPDATE for a replace), so a DELETE that dropped the upload first wins;
 *   - a DELETE or a new SAVE drops an upload only while its row is open (state 0);
 *   - expiry is DELETE ... WHERE touched < now() - ttl RETURNING: each row goes to one
 *     sweeper, and step_block moves touched under the same row lock;
 *   - the schema is created or migrated at start under an advisory lock (step_schema);
 *   - the root's marker file (ROOT/cluster.id) must match the one the database recorded.
 * Inline (small) objects' bytes are rows of blobs, written in the batch's transaction:
 * packs are append-only files of one writer, which several instances cannot share.
 * A commit thread sends a batch as one pipeline (group commit): one round trip per
 * PIPE_CHUNK jobs, not one per object. A SAVE of a new inline (one-block) upload makes no
 * round trip of its own: the upload's commit answers it, or a lookup of many keys at once
 * (plan_many, store_check.c); the commit statement alone decides whether an object is
 * inserted, as above. That lookup also records the plans it lets stand (table plans,
 * one row per key, the latest SAVE's), so that the UPLOAD may reach another instance
 * (plan_find); the commit of such a planned upload deletes the row in its statement and
 * inserts the object only if it did, so one instance commits it; rows older than the
 * upload TTL are deleted by every instance's sweep (each row goes once). When PostgreSQL is slow or
 * gone, requests get STEP_ECONNECT (503) and nothing is half-committed.
 *
 * Test-only hook: STEP_PG_DEAD_S=N takes over the claims of instances not seen for N
 * seconds instead of DEAD_S.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "err.h"
#include "hash.h"
#include "log.h"
#include "store_priv.h"
#include "util.h"

#define SCHEMA_VERSION 2
#define POOL_MAX       8   /* connections for requests */
#define PIPE_CHUNK     256 /* jobs sent before their results are read */
#define ADVISORY_KEY   "735560801"
#define DEAD_S         180 /* an instance not seen this long is dead (heartbeat <= 60 s) */

static const char schema_v1[] =
    "CREATE TABLE step_info(name text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE objects(usr text COLLATE \"C\" NOT NULL, key text COLLATE \"C\" NOT NULL,"
    " size bigint NOT NULL, block_size integer NOT NULL, md5 text NOT NULL,"
    " file text NOT NULL, src text NOT NULL DEFAULT '', mtime bigint NOT NULL,"
    " PRIMARY KEY(usr, key));"
    "CREATE TABLE blobs(id bigserial PRIMARY KEY, data bytea NOT NULL);"
    "CREATE TABLE uploads(id bigserial PRIMARY KEY, usr text COLLATE \"C\" NOT NULL,"
    " key text COLLATE \"C\" NOT NULL, file text NOT NULL, size bigint NOT NULL,"
    " block_size integer NOT NULL, claim text, replace boolean NOT NULL DEFAULT false,"
    " state smallint NOT NULL DEFAULT 0, claimed_by text, nblocks bigint NOT NULL DEFAULT 0,"
    " touched timestamptz NOT NULL DEFAULT now(), claimed timestamptz, UNIQUE(usr, key));"
    "CREATE INDEX uploads_touched ON uploads(touched);"
    "CREATE TABLE blocks(upload bigint NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,"
    " idx bigint NOT NULL, PRIMARY KEY(upload, idx));"
    "CREATE TABLE data(usr text COLLATE \"C\" NOT NULL, key text COLLATE \"C\" NOT NULL,"
    " json text NOT NULL, PRIMARY KEY(usr, key));"
    "CREATE TABLE obj_gen(usr text COLLATE \"C\" PRIMARY KEY, gen bigint NOT NULL);"
    "CREATE TABLE step_instances(id text PRIMARY KEY, seen timestamptz NOT NULL);"
    "CREATE FUNCTION step_block(u bigint, i bigint, total bigint, me text) RETURNS integer"
    " LANGUAGE plpgsql AS $$"
    " DECLARE st smallint; cb text; n bigint; added integer;"
    " BEGIN"
    "  SELECT state, claimed_by INTO st, cb FROM uploads WHERE id = u FOR UPDATE;"
    "  IF NOT FOUND THEN RETURN 3; END IF;"
    "  IF st <> 0 AND cb = me THEN RETURN 1; END IF;" /* ours, its answer was lost */
    "  IF st <> 0 THEN RETURN 2; END IF;"
    "  INSERT INTO blocks(upload, idx) VALUES (u, i) ON CONFLICT DO NOTHING;"
    "  GET DIAGNOSTICS added = ROW_COUNT;"
    "  UPDATE uploads SET nblocks = nblocks + added, touched = now() WHERE id = u"
    "   RETURNING nblocks INTO n;"
    "  IF n < total THEN RETURN 0; END IF;"
    "  UPDATE uploads SET state = 1, claimed = now(), claimed_by = me WHERE id = u;"
    "  RETURN 1;"
    " END $$;";

/* Version 2: the plans of one-block uploads, for an UPLOAD that reaches another instance
 * than its SAVE (pg_plan_many, pg_plan_find; consumed by the commit, q_commit_many). */
static const char schema_v2[] =
    "CREATE TABLE plans(usr text COLLATE \"C\" NOT NULL, key text COLLATE \"C\" NOT NULL,"
    " file text NOT NULL, size bigint NOT NULL, block_size integer NOT NULL, claim text,"
    " made_by text NOT NULL, made timestamptz NOT NULL DEFAULT now(), PRIMARY KEY(usr, key));"
    "CREATE INDEX plans_made ON plans(made);";

struct store_meta {
	struct store *s;
	char *conninfo;
	pthread_mutex_t mu; /* the pool */
	pthread_cond_t cv;
	PGconn *pool[POOL_MAX];
	int used[POOL_MAX];
	int ready[POOL_MAX]; /* its statements are prepared (0 after a (re)connect) */
	int w_ready;
	PGconn *w;           /* the commit thread's */
	char me[33];         /* this instance's id: whose claims are whose */
	int dead_s;          /* DEAD_S, or STEP_PG_DEAD_S (tests) */
	int64_t down_logged; /* wall second of the last "unreachable" line */
};

/* ---- connections ---- */

/* The server's notices ("relation already exists, skipping") are not ours to print. */
static void
pg_notice(void *arg, const char *msg)
{
	log_debug("postgresql: %s", msg);
}

static PGconn *
pg_connect(const char *conninfo, int durable)
{
	/* Later keywords win: the connection string may override these defaults. Requests
	 * record uploads and blocks without waiting for the WAL flush (like the SQLite
	 * backend's upload rows, written by the commit thread later): after a crash of the
	 * database a few acknowledged blocks may be asked for again, as after a power loss.
	 * The commit thread's transactions (objects, deletes, DATA) wait for it. */
	static const char *const keys[] = { "connect_timeout", "application_name", "options",
		"keepalives_idle", "dbname", NULL };
	const char *vals[] = { "5", "stepd",
		durable
		    ? "-c statement_timeout=15000 -c lock_timeout=10000"
		    : "-c statement_timeout=15000 -c lock_timeout=10000 -c synchronous_commit=off",
		"10", conninfo, NULL };

	PGconn *c = PQconnectdbParams(keys, vals, 1);

	if (c != NULL)
		PQsetNoticeProcessor(c, pg_notice, NULL);
	return c;
}

/* One line of a libpq message (its first), in buf. */
static const char *
pg_msg(const char *msg, char *buf, size_t n)
{
	snprintf(buf, n, "%s", msg != NULL ? msg : "");
	buf[strcspn(buf, "\n")] = '\0';
	return buf;
}

/* Logs that the database cannot be reached, once every 10 s at most. */
static void
pg_down(struct store_meta *m, PGconn *c)
{
	char buf[256];
	int64_t now = util_wall_s();

	if (now - m->down_logged < 10)
		return;
	m->down_logged = now;
	log_warnx("postgresql: %s", pg_msg(PQerrorMessage(c), buf, sizeof(buf)));
}

static int prepare(PGconn *c, int w);
static int exec_ok(PGconn *c, const char *sql);

/* A usable pool connection (reconnected when it broke), or NULL (then STEP_ECONNECT). */
static PGconn *
conn_get(struct store_meta *m, int *slot)
{
	PGconn *c;
	int i;

	pthread_mutex_lock(&m->mu);
	for (;;) {
		for (i = 0; i < POOL_MAX && m->used[i]; i++)
			;
		if (i < POOL_MAX)
			break;
		pthread_cond_wait(&m->cv, &m->mu);
	}
	m->used[i] = 1;
	pthread_mutex_unlock(&m->mu);
	*slot = i;
	if (m->pool[i] == NULL || PQstatus(m->pool[i]) != CONNECTION_OK)
		m->ready[i] = 0;
	if (m->pool[i] == NULL)
		m->pool[i] = pg_connect(m->conninfo, 0);
	else if (PQstatus(m->pool[i]) != CONNECTION_OK)
		PQreset(m->pool[i]);
	c = m->pool[i];
	if (c != NULL && PQstatus(c) == CONNECTION_OK && !m->ready[i])
		m->ready[i] = prepare(c, 0);
	if (c != NULL && PQstatus(c) == CONNECTION_OK && m->ready[i])
		return c;
	if (c != NULL)
		pg_down(m, c);
	pthread_mutex_lock(&m->mu);
	m->used[i] = 0;
	pthread_cond_signal(&m->cv);
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

static void
conn_put(struct store_meta *m, int slot)
{
	pthread_mutex_lock(&m->mu);
	m->used[slot] = 0;
	pthread_cond_signal(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

/* The commit thread's connection, or NULL. */
static PGconn *
conn_w(struct store_meta *m)
{
	if (m->w == NULL || PQstatus(m->w) != CONNECTION_OK)
		m->w_ready = 0;
	if (m->w == NULL)
		m->w = pg_connect(m->conninfo, 1);
	else if (PQstatus(m->w) != CONNECTION_OK)
		PQreset(m->w);
	if (m->w != NULL && PQstatus(m->w) == CONNECTION_OK && !m->w_ready)
		m->w_ready = prepare(m->w, 1);
	if (m->w != NULL && PQstatus(m->w) == CONNECTION_OK && m->w_ready)
		return m->w;
	if (m->w != NULL)
		pg_down(m, m->w);
	return NULL;
}

/* The error a failed result stands for: STEP_ECONNECT when the database is gone, too slow
 * (a statement or lock timeout) or shutting down, else STEP_EIO. */
static int
res_err(struct store_meta *m, PGconn *c, const PGresult *res)
{
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	char buf[256];

	if (PQstatus(c) != CONNECTION_OK || state == NULL || strncmp(state, "08", 2) == 0 ||
	    strncmp(state, "57", 2) == 0 || strncmp(state, "53", 2) == 0 ||
	    strcmp(state, "55P03") == 0 || strcmp(state, "40001") == 0 ||
	    strcmp(state, "40P01") == 0) {
		pg_down(m, c);
		return STEP_ECONNECT;
	}
	log_warnx("postgresql: %s", pg_msg(PQresultErrorMessage(res), buf, sizeof(buf)));
	return STEP_EIO;
}

/* Runs sql with n text parameters on c: the result (PQclear it), or NULL and *err. */
static PGresult *
pq(struct store_meta *m, PGconn *c, const char *sql, int n, const char *const *v, int *err)
{
	/* "@name": a statement prepare() made. */
	PGresult *res = sql[0] == '@' ? PQexecPrepared(c, sql + 1, n, v, NULL, NULL, 0)
	                              : PQexecParams(c, sql, n, NULL, v, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);

	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return res;
	*err = res_err(m, c, res);
	PQclear(res);
	return NULL;
}

/* A NUL-terminated copy of key (keylen bytes), or NULL. */
static char *
kdup(const char *key, size_t keylen)
{
	char *k = malloc(keylen + 1);

	if (k != NULL) {
		memcpy(k, key, keylen);
		k[keylen] = '\0';
	}
	return k;
}

/*
 * Runs sql with user and key (keylen bytes) as $1, $2 and up to two more text parameters,
 * on a pool connection: the result or NULL and *err.
 */
static PGresult *
pq_key(struct store_meta *m, const char *sql, const char *user, const char *key, size_t keylen,
    const char *p3, const char *p4, int *err)
{
	const char *v[4];
	PGresult *res = NULL;
	PGconn *c;
	int slot, n = p4 != NULL ? 4 : p3 != NULL ? 3 : 2;
	char *k = kdup(key, keylen);

	*err = STEP_ENOMEM;
	if (k == NULL)
		return NULL;
	v[0] = user;
	v[1] = k;
	v[2] = p3;
	v[3] = p4;
	*err = STEP_ECONNECT;
	if ((c = conn_get(m, &slot)) != NULL) {
		res = pq(m, c, sql, n, v, err);
		conn_put(m, slot);
	}
	free(k);
	return res;
}

/* Runs sql with the text parameters v on a pool connection: result, or NULL and *err. */
static PGresult *
pq_pool(struct store_meta *m, const char *sql, int n, const char *const *v, int *err)
{
	PGresult *res = NULL;
	PGconn *c;
	int slot;

	*err = STEP_ECONNECT;
	if ((c = conn_get(m, &slot)) != NULL) {
		res = pq(m, c, sql, n, v, err);
		conn_put(m, slot);
	}
	return res;
}

/* ---- lookups ---- */

static int
pg_exists(struct store_meta *m, const char *user, const char *key, size_t keylen, int data)
{
	PGresult *res =
	    pq_key(m, data ? "@ex_data" : "@ex_obj", user, key, keylen, NULL, NULL, &(int){ 0 });
	int r;

	if (res == NULL)
		return STEP_ECONNECT;
	r = PQntuples(res) > 0;
	PQclear(res);
	return r;
}

/* Runs the prepared statement sql with v[1] the JSON text of arr (its reference is taken;
 * NULL or built 0: out of memory) on a pool connection: the result, or NULL and *err. */
static PGresult *
pq_json(
    struct store_meta *m, const char *sql, json_t *arr, int built, const char **v, int n, int *err)
{
	PGresult *res = NULL;
	char *js = NULL;

	*err = STEP_ENOMEM;
	if (arr != NULL && built && (js = json_dumps(arr, JSON_COMPACT)) != NULL) {
		v[1] = js;
		res = pq_pool(m, sql, n, v, err);
	}
	json_decref(arr);
	free(js);
	return res;
}

static int
pg_exists_many(struct store_meta *m, const char *user, const char *const *keys, const size_t *lens,
    size_t n, uint8_t *out)
{
	json_t *arr = json_array();
	const char *v[2] = { user, NULL };
	PGresult *res;
	size_t i;
	int err, j, k;

	for (i = 0; arr != NULL && i < n; i++)
		if (json_array_append_new(arr, json_stringn(keys[i], lens[i])) != 0)
			break;
	if ((res = pq_json(m, "@ex_many", arr, i == n, v, 2, &err)) == NULL)
		return err;
	memset(out, 0, n);
	for (j = 0; j < PQntuples(res); j++)
		for (i = 0; i < n; i++) {
			k = PQgetlength(res, j, 0);
			if ((size_t)k == lens[i] &&
			    memcmp(PQgetvalue(res, j, 0), keys[i], lens[i]) == 0)
				out[i] = 1;
		}
	PQclear(res);
	return STEP_OK;
}

static void
pg_read_nop(struct store_meta *m)
{
}

static int
pg_object_get(
    struct store_meta *m, const char *user, const char *key, size_t keylen, struct store_obj *o)
{
	int err = 0;
	PGresult *res =
	    pq_key(m, "SELECT size, block_size, md5, file FROM objects WHERE usr = $1 AND key = $2",
	        user, key, keylen, NULL, NULL, &err);

	if (res == NULL)
		return err;
	if (PQntuples(res) == 0) {
		PQclear(res);
		return STEP_ENOENT;
	}
	o->size = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	o->block_size = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
	snprintf(o->md5, sizeof(o->md5), "%s", PQgetvalue(res, 0, 2));
	snprintf(o->file, sizeof(o->file), "%s", PQgetvalue(res, 0, 3));
	PQclear(res);
	return o->block_size > 0 ? STEP_OK : STEP_EIO;
}

static int
pg_blob_read(struct store_meta *m, const char *file, uint64_t off, uint8_t *dst, size_t len)
{
	char o[24], l[24];
	const char *v[3] = { file + 5, o, l };
	PGresult *res;
	PGconn *c;
	int slot, r;

	if (strncmp(file, "blob:", 5) != 0 || off > STORE_INLINE_MAX || len > STORE_INLINE_MAX)
		return STEP_EIO;
	snprintf(o, sizeof(o), "%" PRIu64, off + 1);
	snprintf(l, sizeof(l), "%zu", len);
	if ((c = conn_get(m, &slot)) == NULL)
		return STEP_ECONNECT;
	/* A binary result: the bytes as they are. */
	res = PQexecParams(c,
	    "SELECT substring(data FROM $2::int FOR $3::int) FROM blobs WHERE id = $1::bigint", 3,
	    NULL, v, NULL, NULL, 1);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		r = res_err(m, c, res);
	else if (PQntuples(res) == 0 || (size_t)PQgetlength(res, 0, 0) != len)
		r = STEP_ENOENT;
	else
		r = (memcpy(dst, PQgetvalue(res, 0, 0), len), STEP_OK);
	conn_put(m, slot);
	PQclear(res);
	return r;
}

static int
pg_data_get(struct store_meta *m, const char *user, const char *key, size_t keylen, char **json)
{
	int err = 0;
	PGresult *res = pq_key(m, "SELECT json FROM data WHERE usr = $1 AND key = $2", user, key,
	    keylen, NULL, NULL, &err);

	if (res == NULL)
		return err;
	err = STEP_ENOENT;
	if (PQntuples(res) > 0)
		err = (*json = strdup(PQgetvalue(res, 0, 0))) != NULL ? STEP_OK : STEP_ENOMEM;
	PQclear(res);
	return err;
}

static int
pg_list(struct store_meta *m, const char *user, int data, const char *prefix, size_t plen,
    const char *after, size_t alen, long long limit,
    int (*fn)(void *arg, const char *key, size_t keylen, int64_t mtime), void *arg, int *more)
{
	/* [table][strict][upper bound]; a range on the (usr, key) primary key (C collation:
	 * byte order), then starts_with() for the prefix itself. Objects with their commit
	 * times (list_mtime). */
	static const char *const sql[2][2][2] = {
		{ { "SELECT key, mtime FROM objects WHERE usr = $1 AND key >= $2 AND"
		    " starts_with(key, $3) ORDER BY key LIMIT $4::bigint",
		      "SELECT key, mtime FROM objects WHERE usr = $1 AND key >= $2 AND key < $5"
		      " AND starts_with(key, $3) ORDER BY key LIMIT $4::bigint" },
		    { "SELECT key, mtime FROM objects WHERE usr = $1 AND key > $2 AND"
		      " starts_with(key, $3) ORDER BY key LIMIT $4::bigint",
		        "SELECT key, mtime FROM objects WHERE usr = $1 AND key > $2 AND key < $5"
		        " AND starts_with(key, $3) ORDER BY key LIMIT $4::bigint" } },
		{ { "SELECT key FROM data WHERE usr = $1 AND key >= $2 AND starts_with(key, $3)"
		    " ORDER BY key LIMIT $4::bigint",
		      "SELECT key FROM data WHERE usr = $1 AND key >= $2 AND key < $5 AND"
		      " starts_with(key, $3) ORDER BY key LIMIT $4::bigint" },
		    { "SELECT key FROM data WHERE usr = $1 AND key > $2 AND starts_with(key, $3)"
		      " ORDER BY key LIMIT $4::bigint",
		        "SELECT key FROM data WHERE usr = $1 AND key > $2 AND key < $5 AND"
		        " starts_with(key, $3) ORDER BY key LIMIT $4::bigint" } },
	};
	char lim[24], up[STORE_MAX_KEY + 8], *p = kdup(prefix, plen), *a = NULL, *u = NULL;
	const char *low;
	size_t lowlen, uplen;
	PGresult *res = NULL;
	int err = STEP_ENOMEM, i, n, strict;

	*more = 0;
	snprintf(lim, sizeof(lim), "%lld", limit + 1);
	strict = store_list_lower(prefix, plen, after, alen, &low, &lowlen);
	a = kdup(low, lowlen);
	uplen = store_list_upper(prefix, plen, up, sizeof(up));
	if (uplen > 0)
		u = kdup(up, uplen);
	if (p != NULL && a != NULL && (uplen == 0 || u != NULL)) {
		const char *v[5] = { user, a, p, lim, u };

		res = pq_pool(m, sql[data != 0][strict][uplen > 0], uplen > 0 ? 5 : 4, v, &err);
	}
	free(p);
	free(a);
	free(u);
	if (res == NULL)
		return err;
	n = PQntuples(res);
	err = STEP_OK;
	for (i = 0; i < n && err == 0; i++) {
		if (i == limit) {
			*more = 1;
			break;
		}
		err = fn(arg, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0),
		    data ? 0 : (int64_t)strtoll(PQgetvalue(res, i, 1), NULL, 10));
	}
	PQclear(res);
	return err;
}

static int
pg_obj_gen(struct store_meta *m, const char *user, int64_t *gen)
{
	const char *v[1] = { user };
	int err = 0;
	PGresult *res = pq_pool(m, "SELECT gen FROM obj_gen WHERE usr = $1", 1, v, &err);

	if (res == NULL)
		return err;
	*gen = PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	PQclear(res);
	return STEP_OK;
}

/* A value of step_info, inserted as def when missing: 0 and out (n bytes), or an error. */
static int
info_get(struct store_meta *m, const char *name, const char *def, char *out, size_t n)
{
	const char *v[2] = { name, def };
	int err = 0;
	PGresult *res = pq_pool(m,
	    "WITH i AS (INSERT INTO step_info(name, value) VALUES($1, $2) ON CONFLICT DO NOTHING"
	    " RETURNING value) SELECT value FROM i UNION ALL"
	    " SELECT value FROM step_info WHERE name = $1",
	    2, v, &err);

	if (res == NULL)
		return err;
	if (PQntuples(res) == 0) {
		PQclear(res);
		return STEP_EIO;
	}
	snprintf(out, n, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return STEP_OK;
}

static int
pg_store_id(struct store_meta *m, char id[33])
{
	uint8_t b[16];
	char hex[33];

	if (hash_random(b, sizeof(b)) != 0)
		return STEP_EIO;
	hash_to_hex(b, sizeof(b), hex);
	return info_get(m, "store_id", hex, id, 33);
}

/* ---- uploads ---- */

/* Fills f's row with copies of user, key, file and claim ("": none), in f->buf: 0 or
 * STEP_ENOMEM. */
static int
found_init(struct meta_upload_found *f, const char *user, const char *key, size_t keylen,
    const char *file, const char *claim)
{
	size_t len = strlen(user) + 1 + keylen + 1 + 82 + 33;
	char *p;

	if ((f->buf = p = malloc(len)) == NULL)
		return STEP_ENOMEM;
	f->row.user = memcpy(p, user, strlen(user) + 1);
	p += strlen(user) + 1;
	f->row.key = memcpy(p, key, keylen);
	p[keylen] = '\0';
	p += keylen + 1;
	f->row.keylen = keylen;
	f->row.file = p;
	snprintf(p, 82, "%s", file);
	p += 82;
	snprintf(p, 33, "%s", claim);
	f->row.claim = p[0] != '\0' ? p : NULL;
	return STEP_OK;
}

static int
pg_upload_find(struct store_meta *m, const char *user, const char *key, size_t keylen, int blocks,
    struct meta_upload_found *f)
{
	int err = 0, i, n;
	/* state: 0 open, 1 claimed by another instance, 2 claimed by this one. */
	PGresult *res = pq_key(m,
	    "SELECT id, file, size, block_size, coalesce(claim, ''), replace,"
	    " CASE WHEN state = 0 THEN 0 WHEN claimed_by = $3 THEN 2 ELSE 1 END"
	    " FROM uploads WHERE usr = $1 AND key = $2",
	    user, key, keylen, m->me, NULL, &err);

	if (res == NULL)
		return err;
	if (PQntuples(res) == 0) {
		PQclear(res);
		return STEP_ENOENT;
	}
	if (found_init(f, user, key, keylen, PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 4)) != 0) {
		PQclear(res);
		return STEP_ENOMEM;
	}
	f->row.rid = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	f->row.size = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	f->row.block_size = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
	f->row.replace = PQgetvalue(res, 0, 5)[0] == 't';
	f->row.state = (int)strtol(PQgetvalue(res, 0, 6), NULL, 10);
	PQclear(res);
	if (!blocks || f->row.state != 0)
		return STEP_OK;
	{
		char rid[24];
		const char *v[1] = { rid };

		snprintf(rid, sizeof(rid), "%" PRId64, f->row.rid);
		if ((res = pq_pool(m, "SELECT idx FROM blocks WHERE upload = $1::bigint", 1, v,
		         &err)) == NULL) {
			free(f->buf);
			f->buf = NULL;
			return err;
		}
	}
	n = PQntuples(res);
	if (n > 0 && (f->blocks = calloc((size_t)n, sizeof(*f->blocks))) == NULL) {
		PQclear(res);
		free(f->buf);
		f->buf = NULL;
		return STEP_ENOMEM;
	}
	for (i = 0; i < n; i++)
		f->blocks[i] = strtoull(PQgetvalue(res, i, 0), NULL, 10);
	f->nblocks = (size_t)n;
	PQclear(res);
	return STEP_OK;
}

/* ---- plans of one-block uploads (schema_v2) ---- */

/*
 * Checks the keys of n new inline uploads of user's and records the plans of those that
 * have no object, in one statement: a later plan of the key (a SAVE on any instance)
 * replaces an earlier one, as a SAVE starts an upload over. Each upload goes as
 * {"i": position, "k": key, "f": file, "s": size, "b": block size, "c": declared MD5}.
 */
static int
pg_plan_many(
    struct store_meta *m, const char *user, struct store_upload *const *u, size_t n, uint8_t *out)
{
	json_t *arr = json_array(), *o;
	const char *v[3] = { user, NULL, m->me };
	char file[128];
	PGresult *res;
	size_t i;
	long long p;
	int err, j;

	for (i = 0; arr != NULL && i < n; i++) {
		upload_fname(u[i], "", file, sizeof(file));
		o = json_pack("{s:I,s:s%,s:s,s:I,s:I,s:s}", "i", (json_int_t)i, "k", u[i]->key,
		    u[i]->keylen, "f", file, "s", (json_int_t)u[i]->size, "b",
		    (json_int_t)u[i]->block_size, "c", u[i]->want_md5);
		if (o == NULL || json_array_append_new(arr, o) != 0)
			break;
	}
	if ((res = pq_json(m, "@plan_many", arr, i == n, v, 3, &err)) == NULL)
		return err;
	memset(out, 0, n);
	for (j = 0; j < PQntuples(res); j++)
		if ((p = strtoll(PQgetvalue(res, j, 0), NULL, 10)) >= 0 && (size_t)p < n)
			out[p] = 1;
	PQclear(res);
	return STEP_OK;
}

static int
pg_plan_find(struct store_meta *m, const char *user, const char *key, size_t keylen,
    struct meta_upload_found *f)
{
	char ttl[24];
	int err = 0;
	PGresult *res;

	/* A record older than the TTL is as good as swept (expire). */
	snprintf(ttl, sizeof(ttl), "%" PRId64, m->s->o.upload_ttl);
	res = pq_key(m,
	    "SELECT EXISTS (SELECT 1 FROM objects WHERE usr = $1 AND key = $2), p.file,"
	    " p.size, p.block_size, coalesce(p.claim, '') FROM (SELECT 1) AS one LEFT JOIN"
	    " plans p ON p.usr = $1 AND p.key = $2 AND p.made > now() - make_interval(secs =>"
	    " $3::double precision)",
	    user, key, keylen, ttl, NULL, &err);
	if (res == NULL)
		return err;
	if (PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] == 't' || PQgetisnull(res, 0, 1)) {
		err = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't' ? STEP_EEXIST
		                                                             : STEP_ENOENT;
		PQclear(res);
		return err;
	}
	if ((err = found_init(
	         f, user, key, keylen, PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 4))) == 0) {
		f->row.size = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
		f->row.block_size = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
	}
	PQclear(res);
	return err;
}

static int
pg_plan_drop(struct store_meta *m, const char *user, const char *key, size_t keylen)
{
	int err = 0;
	PGresult *res = pq_key(m, "DELETE FROM plans WHERE usr = $1 AND key = $2 RETURNING 1", user,
	    key, keylen, NULL, NULL, &err);

	if (res == NULL)
		return err;
	err = PQntuples(res) > 0;
	PQclear(res);
	return err;
}

/* Runs sql with an upload row id as $1 (and more text parameters) on a pool connection. */
static PGresult *
pq_rid(struct store_meta *m, const char *sql, int64_t rid, const char *p2, const char *p3,
    const char *p4, int *err)
{
	char r[24];
	const char *v[4] = { r, p2, p3, p4 };

	snprintf(r, sizeof(r), "%" PRId64, rid);
	return pq_pool(m, sql, p4 != NULL ? 4 : p3 != NULL ? 3 : p2 != NULL ? 2 : 1, v, err);
}

static int
pg_upload_begin(struct store_meta *m, struct store_upload *u)
{
	char file[128], size[24], bs[24];
	const char *v[9] = { u->user, u->key, file, size, bs, u->want_md5, u->replace ? "t" : "f",
		u->size == 0 ? "1" : "0", m->me };
	int err = 0;
	PGresult *res;

	upload_fname(u, "", file, sizeof(file));
	snprintf(size, sizeof(size), "%" PRIu64, u->size);
	snprintf(bs, sizeof(bs), "%" PRIu32, u->block_size);
	res = pq_pool(m,
	    "INSERT INTO uploads(usr, key, file, size, block_size, claim, replace, state, claimed,"
	    " claimed_by) VALUES($1, $2, $3, $4::bigint, $5::integer, NULLIF($6, ''),"
	    " $7::boolean, $8::smallint, CASE WHEN $8::smallint = 1 THEN now() END, $9)"
	    " ON CONFLICT (usr, key) DO NOTHING RETURNING id",
	    9, v, &err);
	if (res == NULL)
		return err;
	err = STEP_EEXIST;
	if (PQntuples(res) > 0) {
		u->rid = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		err = STEP_OK;
	}
	PQclear(res);
	return err;
}

static int
pg_upload_drop(struct store_meta *m, int64_t rid)
{
	int err = 0, r;
	PGresult *res = pq_rid(m,
	    "WITH d AS (DELETE FROM uploads WHERE id = $1::bigint AND state = 0 RETURNING 1)"
	    " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM uploads WHERE id = "
	    "$1::bigint)",
	    rid, NULL, NULL, NULL, &err);

	if (res == NULL)
		return err;
	/* Dropped now, or gone already: 1; still there (claimed by a commit): 0. */
	r = PQgetvalue(res, 0, 0)[0] != '0' || PQgetvalue(res, 0, 1)[0] == '0';
	PQclear(res);
	return r;
}

static int
pg_block_done(struct store_meta *m, int64_t rid, uint64_t idx, uint64_t total)
{
	char i[24], t[24];
	int err = 0, r;
	PGresult *res;

	snprintf(i, sizeof(i), "%" PRIu64, idx);
	snprintf(t, sizeof(t), "%" PRIu64, total);
	res = pq_rid(
	    m, "SELECT step_block($1::bigint, $2::bigint, $3::bigint, $4)", rid, i, t, m->me, &err);
	if (res == NULL)
		return err;
	r = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return r >= META_BLOCK_RECORDED && r <= META_BLOCK_GONE ? r : STEP_EIO;
}

/* The upload row's state ("" when gone) and the md5 of the object its commit made ("" when
 * none): 0, or an error. */
static int
upload_outcome(struct store_meta *m, const struct store_upload *u, char state[4], char md5[33])
{
	char file[128];
	int err = 0;
	PGresult *res;

	upload_fname(u, "", file, sizeof(file));
	res = pq_rid(m,
	    "SELECT (SELECT state FROM uploads WHERE id = $1::bigint), (SELECT md5 FROM objects"
	    " WHERE usr = $2 AND key = $3 AND src = $4)",
	    u->rid, u->user, u->key, file, &err);
	if (res == NULL)
		return err;
	snprintf(state, 4, "%s", PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
	snprintf(md5, 33, "%s", PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1));
	PQclear(res);
	return STEP_OK;
}

static int
pg_await(struct store_meta *m, const struct store_upload *u, char md5[33])
{
	char state[4];
	int r = upload_outcome(m, u, state, md5);

	if (r != 0)
		return r;
	if (state[0] != '\0')
		return state[0] == '0' ? STEP_EBUSY : STORE_PENDING;
	return md5[0] != '\0' ? STEP_OK : STEP_ENOENT;
}

static int
pg_resolve(struct store_meta *m, const struct store_upload *u)
{
	char state[4], md5[33];
	int r = upload_outcome(m, u, state, md5);

	if (r != 0)
		return r;
	if (md5[0] != '\0')
		return 1;
	return state[0] != '\0' ? 0 : STEP_ENOENT;
}

/* This instance is alive (step_instances): its claims are not taken over. */
static int
heartbeat(struct store_meta *m)
{
	const char *v[1] = { m->me };
	int err = 0;
	PGresult *res = pq_pool(m,
	    "INSERT INTO step_instances(id, seen) VALUES($1, now())"
	    " ON CONFLICT (id) DO UPDATE SET seen = now()",
	    1, v, &err);

	PQclear(res);
	return res != NULL ? STEP_OK : err;
}

static void
pg_expire(struct store_meta *m, struct store *s, int64_t ttl,
    void (*gone)(struct store *s, const char *file, int reopen))
{
	char dead[24], inl[24];
	const char *v[2] = { dead, inl };
	PGresult *res;
	int err = 0, i;

	heartbeat(m);
	res = pq_rid(m,
	    "DELETE FROM uploads WHERE state = 0 AND touched < now() - make_interval(secs =>"
	    " $1::double precision) RETURNING file",
	    ttl, NULL, NULL, NULL, &err);
	for (i = 0; res != NULL && i < PQntuples(res); i++)
		gone(s, PQgetvalue(res, i, 0), 0);
	PQclear(res);
	/* Plans of one-block uploads never committed (nothing on disk): by the same clock. */
	PQclear(pq_rid(m,
	    "DELETE FROM plans WHERE made < now() - make_interval(secs => $1::double precision)",
	    ttl, NULL, NULL, NULL, &err));
	/* Claims of an instance not seen for DEAD_S (it died while committing): an upload
	 * with files is open again, its file back in tmp/ if the dead one had moved it (its
	 * next block or SAVE commits it); an inline one (its bytes were in that memory) goes.
	 * A live instance's claim is never taken, however long its commit takes. */
	snprintf(dead, sizeof(dead), "%d", m->dead_s);
	snprintf(inl, sizeof(inl), "%u", STORE_INLINE_MAX);
	res = pq_pool(m,
	    "WITH dead AS (SELECT id FROM uploads u WHERE state = 1 AND NOT EXISTS (SELECT 1"
	    " FROM step_instances i WHERE i.id = u.claimed_by AND i.seen > now() -"
	    " make_interval(secs => $1::double precision)) FOR UPDATE SKIP LOCKED),"
	    " x AS (DELETE FROM uploads WHERE id IN (SELECT id FROM dead) AND size <= $2::bigint"
	    " AND size <= block_size RETURNING 1)"
	    " UPDATE uploads SET state = 0, claimed = NULL, claimed_by = NULL WHERE id IN"
	    " (SELECT id FROM dead) AND NOT (size <= $2::bigint AND size <= block_size)"
	    " RETURNING file",
	    2, v, &err);
	for (i = 0; res != NULL && i < PQntuples(res); i++)
		gone(s, PQgetvalue(res, i, 0), 1);
	PQclear(res);
}

/* ---- the group commit: one transaction, sent as a pipeline ---- */

static const char q_commit[] =
    "WITH d AS (DELETE FROM uploads WHERE $1::bigint <> 0 AND id = $1::bigint AND state = 1"
    " RETURNING 1),"
    " ok AS (SELECT 1 WHERE $1::bigint = 0 OR EXISTS (SELECT 1 FROM d)),"
    " o AS (SELECT file, size FROM objects WHERE usr = $2 AND key = $3),"
    " b AS (INSERT INTO blobs(data) SELECT $11::bytea WHERE $12::boolean AND"
    " EXISTS (SELECT 1 FROM ok) AND ($10::boolean OR NOT EXISTS (SELECT 1 FROM o))"
    " RETURNING id),"
    " i AS (INSERT INTO objects(usr, key, file, size, block_size, md5, mtime, src)"
    " SELECT $2, $3, CASE WHEN $12::boolean THEN 'blob:' || (SELECT id FROM b) ELSE $4 END,"
    " $5::bigint, $6::integer, $7, $8::bigint, $9 WHERE EXISTS (SELECT 1 FROM ok) AND"
    " (NOT $12::boolean OR EXISTS (SELECT 1 FROM b))"
    " ON CONFLICT (usr, key) DO UPDATE SET file = excluded.file, size = excluded.size,"
    " block_size = excluded.block_size, md5 = excluded.md5, mtime = excluded.mtime,"
    " src = excluded.src WHERE $10::boolean RETURNING 1),"
    " ob AS (DELETE FROM blobs WHERE EXISTS (SELECT 1 FROM i) AND $10::boolean AND"
    " id = (SELECT substr(file, 6)::bigint FROM o WHERE file LIKE 'blob:%')),"
    " g AS (INSERT INTO obj_gen(usr, gen) SELECT $2, 1 WHERE EXISTS (SELECT 1 FROM i) AND"
    " EXISTS (SELECT 1 FROM o) ON CONFLICT (usr) DO UPDATE SET gen = obj_gen.gen + 1)"
    " SELECT (SELECT count(*) FROM ok), (SELECT count(*) FROM i), (SELECT file FROM o),"
    " (SELECT size FROM o)";

/* The commit of a new small object (inline, no uploads row, not a replace): the common case
 * of a backup of many small files, in a statement of two steps instead of seven. */
static const char q_commit_small[] =
    "WITH b AS (INSERT INTO blobs(data) SELECT $6::bytea WHERE NOT EXISTS"
    " (SELECT 1 FROM objects WHERE usr = $1 AND key = $2) RETURNING id),"
    " i AS (INSERT INTO objects(usr, key, file, size, block_size, md5, mtime, src)"
    " SELECT $1, $2, 'blob:' || id, $3::bigint, $4::integer, $5, $7::bigint, '' FROM b"
    " ON CONFLICT (usr, key) DO NOTHING RETURNING 1)"
    " SELECT 1, (SELECT count(*) FROM i), NULL, NULL";

/* The commits of many new small objects (as q_commit_small) in one statement, one array
 * element per object: each is inserted only if its key has no object (one probe of the
 * primary key each: see ex_many; a key inserted meanwhile, or twice, conflicts). Blob ids
 * are taken first (f is evaluated once) so that each object names its own, and only the
 * objects inserted get their blob, its bytes taken from the array by position (not
 * carried through f). A planned upload (its plan recorded for every instance; $8 its
 * file, '' for the others; $9: there is one) is inserted only if this statement deletes
 * that record (p): one commit consumes it, on whichever instance. The positions of the
 * objects inserted are returned with 1, those of planned uploads whose record was gone
 * (consumed, replaced, expired) while their key has no object with 0. */
static const char q_commit_many[] =
    "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::integer[],"
    " $5::text[], $8::text[]) WITH ORDINALITY AS v(usr, key, size, bs, md5, pf, n)),"
    " p AS (DELETE FROM plans USING v WHERE $9::boolean AND v.pf <> '' AND"
    " plans.usr = v.usr AND plans.key = v.key AND plans.file = v.pf RETURNING v.n),"
    " f AS (SELECT nextval('blobs_id_seq') AS bid, v.* FROM v LEFT JOIN LATERAL"
    " (SELECT 1 AS x FROM objects o WHERE o.usr = v.usr AND o.key = v.key LIMIT 1) AS e"
    " ON true WHERE e.x IS NULL AND (v.pf = '' OR v.n IN (SELECT n FROM p))),"
    " i AS (INSERT INTO objects(usr, key, file, size, block_size, md5, mtime, src)"
    " SELECT usr, key, 'blob:' || bid, size, bs, md5, $7::bigint, '' FROM f"
    " ON CONFLICT (usr, key) DO NOTHING RETURNING substr(file, 6)::bigint AS bid),"
    " b AS (INSERT INTO blobs(id, data) SELECT bid, ($6::bytea[])[n::integer] FROM f"
    " WHERE bid IN (SELECT bid FROM i))"
    " SELECT n, 1 FROM f WHERE bid IN (SELECT bid FROM i)"
    " UNION ALL SELECT n, 0 FROM v WHERE $9::boolean AND v.pf <> '' AND v.n NOT IN"
    " (SELECT n FROM p) AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.usr = v.usr AND"
    " o.key = v.key)";

/* Records the plans of new inline uploads whose keys have no object and returns the
 * positions of those whose keys have one (pg_plan_many): one probe of the primary key
 * each, as ex_many. A key twice in one call keeps its last plan. */
static const char q_plan_many[] =
    "WITH v AS (SELECT * FROM json_to_recordset($2::json) AS v(i bigint, k text, f text,"
    " s bigint, b integer, c text)),"
    " e AS (SELECT v.i, v.k FROM v, LATERAL (SELECT 1 FROM objects WHERE usr = $1 AND"
    " key = v.k LIMIT 1) AS x),"
    " p AS (INSERT INTO plans(usr, key, file, size, block_size, claim, made_by)"
    " SELECT DISTINCT ON (k) $1, k, f, s, b, NULLIF(c, ''), $3 FROM v"
    " WHERE k NOT IN (SELECT k FROM e) ORDER BY k, i DESC"
    " ON CONFLICT (usr, key) DO UPDATE SET file = excluded.file, size = excluded.size,"
    " block_size = excluded.block_size, claim = excluded.claim, made_by = excluded.made_by,"
    " made = now())"
    " SELECT i FROM e";

static const char q_delete[] =
    "WITH d AS (DELETE FROM objects WHERE usr = $1 AND key = $2 RETURNING file, size),"
    " b AS (DELETE FROM blobs WHERE id = (SELECT substr(file, 6)::bigint FROM d"
    " WHERE file LIKE 'blob:%')),"
    " g AS (INSERT INTO obj_gen(usr, gen) SELECT $1, 1 WHERE EXISTS (SELECT 1 FROM d)"
    " ON CONFLICT (usr) DO UPDATE SET gen = obj_gen.gen + 1)"
    " SELECT file, size FROM d";

/*
 * Prepares the statements run most (planned once per connection, not per object): the
 * commit's on the commit thread's connection (w), the existence checks on the others.
 * 1, or 0 when the connection failed. Those of an attempt that failed half-way (a lock or
 * statement timeout) are dropped first, so that the next attempt can succeed.
 */
static int
prepare(PGconn *c, int w)
{
	PGresult *res;
	int ok;

	if (!exec_ok(c, "DEALLOCATE ALL"))
		return 0;
	if (w) {
		res = PQprepare(c, "commit", q_commit, 0, NULL);
		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
		res = PQprepare(c, "commit_small", q_commit_small, 0, NULL);
		ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
		res = PQprepare(c, "commit_many", q_commit_many, 0, NULL);
		ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
		return ok;
	}
	res = PQprepare(c, "ex_obj", "SELECT 1 FROM objects WHERE usr = $1 AND key = $2", 0, NULL);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	res = PQprepare(c, "ex_data", "SELECT 1 FROM data WHERE usr = $1 AND key = $2", 0, NULL);
	ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	/* One probe of the primary key per key (the LIMIT keeps the subquery a nested loop):
	 * as a plain join or "= ANY" it may be planned as a scan of every row of the user's,
	 * or of objects (a hash join), which grows with the store. */
	res = PQprepare(c, "ex_many",
	    "SELECT k FROM json_array_elements_text($2::json) AS k,"
	    " LATERAL (SELECT 1 FROM objects WHERE usr = $1 AND key = k LIMIT 1) AS x",
	    0, NULL);
	ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	res = PQprepare(c, "plan_many", q_plan_many, 0, NULL);
	ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	return ok;
}

/* Sends the deletion of the record of planned upload u (dropped, or its commit failed):
 * 1 sent, -1 failed. */
static int
send_plan_drop(PGconn *c, const struct store_upload *u)
{
	char file[128];
	const char *v[3] = { u->user, u->key, file };

	upload_fname(u, "", file, sizeof(file));
	return PQsendQueryParams(c, "DELETE FROM plans WHERE usr = $1 AND key = $2 AND file = $3",
	           3, NULL, v, NULL, NULL, 0) == 1
	    ? 1
	    : -1;
}

/* Sends a COMMIT job's statement. 1 sent, 0 nothing to send, -1 failed. */
static int
send_commit(struct store *s, PGconn *c, struct store_job *j)
{
	struct store_upload *u = j->u;
	char rid[24], file[128], size[24], bs[24], mt[24];
	const char *v[12];
	int len[12] = { 0 }, fmt[12] = { 0 };

	snprintf(rid, sizeof(rid), "%" PRId64, u->rid);
	if (j->err != 0) {
		/* A failed commit (MD5, files): the upload is discarded, as with SQLite. */
		v[0] = rid;
		if (u->rid == 0)
			return u->planned ? send_plan_drop(c, u) : 0;
		return PQsendQueryParams(c, "DELETE FROM uploads WHERE id = $1::bigint", 1, NULL, v,
		           NULL, NULL, 0) == 1
		    ? 1
		    : -1;
	}
	upload_fname(u, "", file, sizeof(file));
	snprintf(size, sizeof(size), "%" PRIu64, u->size);
	snprintf(bs, sizeof(bs), "%" PRIu32,
	    u->block_size < s->o.block_size ? u->block_size : s->o.block_size);
	snprintf(mt, sizeof(mt), "%" PRId64, util_wall_s());
	if (u->inl && u->rid == 0 && !u->replace) {
		const char *w[7] = { u->user, u->key, size, bs, j->md5, (const char *)u->mem, mt };
		int wl[7] = { 0, 0, 0, 0, 0, (int)u->size, 0 }, wf[7] = { 0, 0, 0, 0, 0, 1, 0 };

		return PQsendQueryPrepared(c, "commit_small", 7, w, wl, wf, 0) == 1 ? 1 : -1;
	}
	v[0] = rid;
	v[1] = u->user;
	v[2] = u->key;
	v[3] = file;
	v[4] = size;
	v[5] = bs;
	v[6] = j->md5;
	v[7] = mt;
	v[8] = file;
	v[9] = u->replace ? "t" : "f";
	v[10] = u->inl ? (const char *)u->mem : NULL;
	len[10] = u->inl ? (int)u->size : 0;
	fmt[10] = 1;
	v[11] = u->inl ? "t" : "f";
	return PQsendQueryPrepared(c, "commit", 12, v, len, fmt, 0) == 1 ? 1 : -1;
}

/* Sends job j's statement: 1 sent, 0 nothing to send, -1 failed. */
static int
send_job(struct store *s, PGconn *c, struct store_job *j)
{
	const char *v[3];
	char rid[24];

	switch (j->kind) {
	case JOB_COMMIT:
		return send_commit(s, c, j);
	case JOB_DROP:
		/* An inline upload's: its plan's record, if one was made (store_check.c). */
		if (j->u->rid == 0)
			return j->u->planned || j->file[0] != '\0' ? send_plan_drop(c, j->u) : 0;
		snprintf(rid, sizeof(rid), "%" PRId64, j->u->rid);
		v[0] = rid;
		return PQsendQueryParams(c,
		           "DELETE FROM uploads WHERE id = $1::bigint AND state = 0", 1, NULL, v,
		           NULL, NULL, 0) == 1
		    ? 1
		    : -1;
	case JOB_OBJ_DELETE:
	case JOB_DATA_SAVE:
	case JOB_DATA_DELETE:
		v[0] = j->user;
		v[1] = j->key;
		v[2] = j->json;
		return PQsendQueryParams(c,
		           j->kind == JOB_OBJ_DELETE ? q_delete
		               : j->kind == JOB_DATA_SAVE
		               ? "INSERT INTO data(usr, key, json) VALUES($1, $2, $3)"
		                 " ON CONFLICT DO NOTHING RETURNING 1"
		               : "DELETE FROM data WHERE usr = $1 AND key = $2 RETURNING 1",
		           j->kind == JOB_DATA_SAVE ? 3 : 2, NULL, v, NULL, NULL, 0) == 1
		    ? 1
		    : -1;
	default:
		return 0;
	}
}

/* Reads job j's result (res, a success) into j. */
static void
take_result(struct store_job *j, PGresult *res)
{
	int n = PQntuples(res);

	switch (j->kind) {
	case JOB_COMMIT:
		if (j->err != 0 || n == 0)
			break;
		if (PQgetvalue(res, 0, 0)[0] == '0') {
			j->err =
			    STEP_ENOENT; /* the upload was dropped meanwhile (DELETE, expiry) */
		} else if (PQgetvalue(res, 0, 1)[0] == '0') {
			j->err = STEP_EEXIST;
		} else if (j->u->replace && !PQgetisnull(res, 0, 2)) {
			snprintf(j->old_file, sizeof(j->old_file), "%s", PQgetvalue(res, 0, 2));
			j->old_size = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
		}
		break;
	case JOB_OBJ_DELETE:
		j->err = n > 0 ? STEP_OK : STEP_ENOENT;
		if (n > 0) {
			snprintf(j->file, sizeof(j->file), "%s", PQgetvalue(res, 0, 0));
			j->size = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
		}
		break;
	case JOB_DATA_SAVE:
		j->err = n > 0 ? STEP_OK : STEP_EEXIST;
		break;
	case JOB_DATA_DELETE:
		j->err = n > 0 ? STEP_OK : STEP_ENOENT;
		break;
	default:
		break;
	}
}

/* ---- many small commits per statement (q_commit_many) ---- */

#define SMALL_MAX 256 /* commits per statement */

/* 1 when j is the commit of a new small object (q_commit_small's). */
static int
small_commit(const struct store_job *j)
{
	return j->kind == JOB_COMMIT && j->err == 0 && j->u->inl && j->u->rid == 0 &&
	    !j->u->replace;
}

/* A binary (PostgreSQL wire format) one-dimensional array being built. */
struct pg_arr {
	uint8_t *p;
	size_t len;
};

static void
arr_u32(struct pg_arr *a, uint32_t v)
{
	uint8_t *d = a->p + a->len;

	d[0] = (uint8_t)(v >> 24);
	d[1] = (uint8_t)(v >> 16);
	d[2] = (uint8_t)(v >> 8);
	d[3] = (uint8_t)v;
	a->len += 4;
}

/* Starts an array of n elements of type oid, room for data bytes of them: 0, or -1. */
static int
arr_begin(struct pg_arr *a, uint32_t oid, int n, size_t data)
{
	a->len = 0;
	if ((a->p = malloc(20 + 4 * (size_t)n + data)) == NULL)
		return -1;
	arr_u32(a, 1); /* dimensions */
	arr_u32(a, 0); /* no NULLs */
	arr_u32(a, oid);
	arr_u32(a, (uint32_t)n);
	arr_u32(a, 1); /* lower bound */
	return 0;
}

static void
arr_elem(struct pg_arr *a, const void *d, size_t n)
{
	arr_u32(a, (uint32_t)n);
	memcpy(a->p + a->len, d, n);
	a->len += n;
}

static void
arr_int(struct pg_arr *a, uint64_t v, size_t n)
{
	uint8_t b[8];
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	arr_elem(a, b, n);
}

/* Sends the commits of the n jobs from j on (small_commit) as one statement: 1, or -1. */
static int
send_small(struct store *s, PGconn *c, struct store_job *j, int n)
{
	/* text, int8, int4, bytea */
	static const uint32_t oid[7] = { 25, 25, 20, 23, 25, 17, 25 };
	struct pg_arr a[7] = { { NULL, 0 } };
	size_t room[7] = { 0, 0, 8 * (size_t)n, 4 * (size_t)n, 32 * (size_t)n, 0, 0 };
	const char *v[9];
	int len[9], fmt[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 }, i, r = -1;
	struct store_job *k;
	uint8_t mt[8], planned = 0;
	char file[128];
	int64_t now = util_wall_s();

	for (k = j, i = 0; i < n; k = k->next, i++) {
		room[0] += strlen(k->u->user);
		room[1] += k->u->keylen;
		room[5] += k->u->size;
		room[6] += k->u->planned ? 81 : 0;
	}
	for (i = 0; i < 7; i++)
		if (arr_begin(&a[i], oid[i], n, room[i]) != 0)
			goto out;
	for (k = j, i = 0; i < n; k = k->next, i++) {
		struct store_upload *u = k->u;

		arr_elem(&a[0], u->user, strlen(u->user));
		arr_elem(&a[1], u->key, u->keylen);
		arr_int(&a[2], u->size, 8);
		arr_int(
		    &a[3], u->block_size < s->o.block_size ? u->block_size : s->o.block_size, 4);
		arr_elem(&a[4], k->md5, 32);
		arr_elem(&a[5], u->mem, u->size);
		/* A planned upload's record, which its commit must consume. */
		file[0] = '\0';
		if (u->planned)
			upload_fname(u, "", file, sizeof(file));
		arr_elem(&a[6], file, strlen(file));
		planned |= u->planned != 0;
	}
	for (i = 0; i < 6; i++) {
		v[i] = (const char *)a[i].p;
		len[i] = (int)a[i].len;
	}
	for (i = 0; i < 8; i++)
		mt[i] = (uint8_t)((uint64_t)now >> (8 * (7 - i)));
	v[6] = (const char *)mt;
	len[6] = 8;
	v[7] = (const char *)a[6].p;
	len[7] = (int)a[6].len;
	v[8] = (const char *)&planned;
	len[8] = 1;
	r = PQsendQueryPrepared(c, "commit_many", 9, v, len, fmt, 0) == 1 ? 1 : -1;
out:
	for (i = 0; i < 7; i++)
		free(a[i].p);
	return r;
}

/* Reads the result of send_small's statement (res, a success) into its n jobs from j on:
 * a job whose position is not returned found its key taken (STEP_EEXIST); one returned
 * with 0, its plan's record gone (STEP_ENOENT: no upload in progress). */
static void
take_small(struct store_job *j, int n, PGresult *res)
{
	uint8_t done[SMALL_MAX] = { 0 };
	long p;
	int i;

	for (i = 0; i < PQntuples(res); i++)
		if ((p = strtol(PQgetvalue(res, i, 0), NULL, 10)) >= 1 && p <= n)
			done[p - 1] = PQgetvalue(res, i, 1)[0] == '1' ? 1 : 2;
	for (i = 0; i < n; i++, j = j->next)
		if (done[i] != 1)
			j->err = done[i] == 2 ? STEP_ENOENT : STEP_EEXIST;
}

/* Reads one query's result and the NULL after it: 0, or an error (the first one). n > 0:
 * the statement of n small commits from j on (send_small). */
static int
read_one(struct store_meta *m, PGconn *c, struct store_job *j, int n)
{
	PGresult *res = PQgetResult(c), *end;
	ExecStatusType st = PQresultStatus(res);
	int r = STEP_OK;

	if (res == NULL)
		return STEP_ECONNECT;
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		if (j != NULL && n > 0)
			take_small(j, n, res);
		else if (j != NULL)
			take_result(j, res);
	} else {
		r = st == PGRES_PIPELINE_ABORTED ? STEP_EIO : res_err(m, c, res);
	}
	PQclear(res);
	if ((end = PQgetResult(c)) != NULL) {
		PQclear(end);
		return STEP_ECONNECT;
	}
	return r;
}

/* Reads the result of the pipeline's sync: 0, or STEP_ECONNECT. */
static int
sync_result(PGconn *c)
{
	PGresult *res = PQgetResult(c);
	int ok = PQresultStatus(res) == PGRES_PIPELINE_SYNC;

	PQclear(res);
	return ok ? STEP_OK : STEP_ECONNECT;
}

/*
 * Sends and reads one chunk of jobs from *jp (at most PIPE_CHUNK statements), the first
 * one after BEGIN; the last one with COMMIT, in the same round trip (a statement that
 * fails aborts the rest of the pipeline, COMMIT included: nothing is committed). A run of
 * consecutive small commits is one statement (send_small): the jobs keep their order.
 */
static int
pipe_chunk(struct store_meta *m, struct store *s, PGconn *c, struct store_job **jp, int begin)
{
	struct store_job *sent[PIPE_CHUNK], *j = *jp, *k;
	int cnt[PIPE_CHUNK], n = 0, i, r = STEP_OK, e;

	if (begin && PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1)
		return STEP_ECONNECT;
	while (j != NULL && n < PIPE_CHUNK) {
		for (k = j, i = 0; k != NULL && i < SMALL_MAX && small_commit(k); k = k->next)
			i++;
		/* A planned one alone too: q_commit_small does not consume its plan. */
		if (i > 1 || (i == 1 && j->u->planned)) {
			if (send_small(s, c, j, i) < 0)
				return STEP_ECONNECT;
			sent[n] = j;
			cnt[n++] = i;
			j = k;
			continue;
		}
		if ((e = send_job(s, c, j)) < 0)
			return STEP_ECONNECT;
		if (e > 0) {
			sent[n] = j;
			cnt[n++] = 0;
		}
		j = j->next;
	}
	*jp = j;
	if (j == NULL && PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1)
		return STEP_ECONNECT;
	if (PQpipelineSync(c) != 1)
		return STEP_ECONNECT;
	if (begin && (e = read_one(m, c, NULL, 0)) != 0)
		r = e;
	for (i = 0; i < n; i++)
		if ((e = read_one(m, c, sent[i], cnt[i])) != 0 && r == 0)
			r = e;
	if (j == NULL && (e = read_one(m, c, NULL, 0)) != 0 && r == 0)
		r = e;
	return sync_result(c) != 0 ? STEP_ECONNECT : r;
}

/* Runs sql (no parameters) on c: 1 when it succeeded. */
static int
exec_ok(PGconn *c, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(res);

	PQclear(res);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

static void
pg_apply(struct store_meta *m, struct store *s, struct store_job *batch)
{
	struct store_job *j = batch;
	PGconn *c = conn_w(m);
	int r = c != NULL ? STEP_OK : STEP_ECONNECT, first = 1;

	if (r == 0 && PQenterPipelineMode(c) != 1)
		r = STEP_ECONNECT;
	while (r == 0 && (j != NULL || first)) {
		r = pipe_chunk(m, s, c, &j, first);
		first = 0;
	}
	/* Whatever went through is rolled back: nothing is half-committed. A connection in
	 * an unknown state is closed and opened afresh next time. */
	if (c != NULL && (PQexitPipelineMode(c) != 1 || (r != 0 && !exec_ok(c, "ROLLBACK")))) {
		PQfinish(m->w);
		m->w = NULL;
	}
	if (r == 0)
		return;
	for (j = batch; j != NULL; j = j->next)
		if (j->err == 0 || j->kind == JOB_OBJ_DELETE)
			j->err = r;
}

/* ---- not used with shared metadata ---- */

static int
pg_uploads(struct store_meta *m, struct store *s,
    void (*fn)(struct store *s, const struct meta_upload_row *row))
{
	return STEP_OK;
}

static int
pg_file_named(struct store_meta *m, const char *file)
{
	return 1;
}

static int
pg_pack_end(struct store_meta *m, unsigned n, uint64_t *end)
{
	*end = UINT64_MAX;
	return STEP_OK;
}

static void
pg_idle(struct store_meta *m, int busy)
{
}

/* ---- open ---- */

/* The connection string: --metadata's value, or the first line of FILE for "@FILE". A
 * password inside a string given directly is refused: it would show in ps and logs. */
static int
conninfo_load(const char *arg, char **out, char *errbuf, size_t errlen)
{
	PQconninfoOption *opts, *o;
	char buf[4096];
	char *err = NULL;
	FILE *f;

	if (arg[0] == '@') {
		if ((f = fopen(arg + 1, "re")) == NULL || fgets(buf, sizeof(buf), f) == NULL) {
			snprintf(errbuf, errlen,
			    "cannot read the metadata connection string from '%s'", arg + 1);
			if (f != NULL)
				fclose(f);
			return STEP_EINVAL;
		}
		fclose(f);
		buf[strcspn(buf, "\r\n")] = '\0';
		return (*out = strdup(buf)) != NULL ? STEP_OK : STEP_ENOMEM;
	}
	if ((opts = PQconninfoParse(arg, &err)) == NULL) {
		snprintf(errbuf, errlen, "--metadata: not a PostgreSQL connection string or URL");
		PQfreemem(err);
		return STEP_EINVAL;
	}
	for (o = opts; o->keyword != NULL; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val != NULL && o->val[0] != '\0') {
			PQconninfoFree(opts);
			snprintf(errbuf, errlen,
			    "--metadata holds a password, which ps and logs would show: use "
			    "PGPASSFILE "
			    "or PGPASSWORD, or put the connection string in a file (--metadata "
			    "@FILE)");
			return STEP_EINVAL;
		}
	PQconninfoFree(opts);
	return (*out = strdup(arg)) != NULL ? STEP_OK : STEP_ENOMEM;
}

/* The schema, created or migrated under an advisory lock (instances starting together
 * wait for each other); a newer one than ours is refused. */
static int
schema_check(struct store_meta *m, PGconn *c, char *errbuf, size_t errlen)
{
	PGresult *res = NULL;
	char msg[256];
	int v = -1;

	if (!exec_ok(c, "BEGIN") || !exec_ok(c, "SET LOCAL synchronous_commit = on") ||
	    !exec_ok(c, "SELECT pg_advisory_xact_lock(" ADVISORY_KEY ")") ||
	    !exec_ok(c, "CREATE TABLE IF NOT EXISTS step_schema(version integer NOT NULL)") ||
	    PQresultStatus(res = PQexec(c, "SELECT coalesce(max(version), 0) FROM step_schema")) !=
	        PGRES_TUPLES_OK)
		goto fail;
	v = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	res = NULL;
	if (v > SCHEMA_VERSION) {
		exec_ok(c, "ROLLBACK");
		snprintf(errbuf, errlen,
		    "the metadata database has schema version %d, newer than this stepd's %d: "
		    "upgrade stepd",
		    v, SCHEMA_VERSION);
		return STEP_EINVAL;
	}
	if (v < 1 &&
	    (!exec_ok(c, schema_v1) || !exec_ok(c, "INSERT INTO step_schema(version) VALUES(1)")))
		goto fail;
	if (v < 2 &&
	    (!exec_ok(c, schema_v2) || !exec_ok(c, "INSERT INTO step_schema(version) VALUES(2)")))
		goto fail;
	/* A blob of up to a page stays in its row, uncompressed (as in a pack with SQLite):
	 * no compression attempt, TOAST chunks and their index entries per small object.
	 * Set once per database; rows already there are left as they are. */
	if (!exec_ok(c,
	        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid ="
	        " 'blobs'::regclass AND reloptions @> ARRAY['toast_tuple_target=8160'])"
	        " THEN ALTER TABLE blobs SET (toast_tuple_target = 8160); END IF; END $$"))
		goto fail;
	if (exec_ok(c, "COMMIT"))
		return STEP_OK;
fail:
	snprintf(errbuf, errlen, "cannot create or check the metadata schema: %s",
	    pg_msg(PQerrorMessage(c), msg, sizeof(msg)));
	PQclear(res);
	exec_ok(c, "ROLLBACK");
	return STEP_EIO;
}

/*
 * ROOT/cluster.id: a random id made by the first instance and recorded in the database.
 * An instance whose root holds another id (or none, while the database has one) does not
 * share the others' root: refused.
 */
static int
marker_check(struct store_meta *m, char *errbuf, size_t errlen)
{
	char path[4200], mine[64] = "", want[64];
	uint8_t b[16];
	int fd, r;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/cluster.id", m->s->root);
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) >= 0) {
		n = read(fd, mine, sizeof(mine) - 1);
		close(fd);
		mine[n > 0 ? n : 0] = '\0';
		mine[strcspn(mine, "\n")] = '\0';
	} else if (errno == ENOENT && hash_random(b, sizeof(b)) == 0) {
		hash_to_hex(b, sizeof(b), mine);
		if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) <
		        0 ||
		    write(fd, mine, 32) != 32 || fsync(fd) != 0) {
			snprintf(errbuf, errlen, "cannot write '%s': %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return STEP_ESYS;
		}
		close(fd);
	}
	if ((r = info_get(m, "root_marker", mine, want, sizeof(want))) != 0) {
		snprintf(errbuf, errlen, "cannot read the root marker from the metadata database");
		return r;
	}
	if (mine[0] != '\0' && strcmp(mine, want) == 0)
		return STEP_OK;
	snprintf(errbuf, errlen,
	    "'%s' is not the shared root of this cluster: its cluster.id is '%s', the metadata "
	    "database expects '%s' (every stepd must use the same shared --root)",
	    m->s->root, mine, want);
	return STEP_EINVAL;
}

static void
pg_close(struct store_meta *m)
{
	int i;

	if (m == NULL)
		return;
	for (i = 0; i < POOL_MAX; i++)
		PQfinish(m->pool[i]);
	PQfinish(m->w);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
	free(m->conninfo);
	free(m);
}

static int
pg_open(struct store *s, struct store_meta **out, char *errbuf, size_t errlen)
{
	struct store_meta *m = calloc(1, sizeof(*m));
	char msg[512];
	uint8_t b[16];
	PGconn *c;
	int r;

	if (m == NULL)
		return STEP_ENOMEM;
	m->s = s;
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	if (hash_random(b, sizeof(b)) != 0) {
		r = STEP_EIO;
		goto fail;
	}
	hash_to_hex(b, sizeof(b), m->me);
	m->dead_s = DEAD_S;
	if (getenv("STEP_PG_DEAD_S") != NULL) {
		long long v;

		if (util_parse_ll(getenv("STEP_PG_DEAD_S"), 1, DEAD_S, &v) == 0)
			m->dead_s = (int)v;
		log_warnx("test hook active: STEP_PG_DEAD_S=%d", m->dead_s);
	}
	if ((r = conninfo_load(s->o.metadata, &m->conninfo, errbuf, errlen)) != 0)
		goto fail;
	c = m->pool[0] = pg_connect(m->conninfo, 0);
	if (c == NULL || PQstatus(c) != CONNECTION_OK) {
		char *p;

		/* libpq's message names the host and what failed (refused, authentication,
		 * no such database); made one line. Never the connection string. */
		snprintf(msg, sizeof(msg), "%s", c != NULL ? PQerrorMessage(c) : "out of memory");
		while ((p = strchr(msg, '\n')) != NULL)
			*p = p[1] != '\0' ? ' ' : '\0';
		snprintf(
		    errbuf, errlen, "cannot connect to the PostgreSQL metadata database: %s", msg);
		r = STEP_ECONNECT;
		goto fail;
	}
	if ((r = schema_check(m, c, errbuf, errlen)) != 0 ||
	    (r = marker_check(m, errbuf, errlen)) != 0)
		goto fail;
	if ((r = heartbeat(m)) != 0) {
		snprintf(errbuf, errlen, "cannot register this instance in the metadata database");
		goto fail;
	}
	log_info("metadata: PostgreSQL database '%s' on %s", PQdb(c),
	    PQhost(c) != NULL ? PQhost(c) : "(default)");
	*out = m;
	return STEP_OK;
fail:
	pg_close(m);
	return r;
}

const struct store_meta_ops store_meta_pg = {
	.name = "postgresql",
	.open = pg_open,
	.close = pg_close,
	.store_id = pg_store_id,
	.exists = pg_exists,
	.read_begin = pg_read_nop,
	.read_end = pg_read_nop,
	.object_get = pg_object_get,
	.blob_read = pg_blob_read,
	.data_get = pg_data_get,
	.list = pg_list,
	.obj_gen = pg_obj_gen,
	.uploads = pg_uploads,
	.apply = pg_apply,
	.file_named = pg_file_named,
	.pack_end = pg_pack_end,
	.idle = pg_idle,
	.shared = 1,
	.inline_in_meta = 1,
	.exists_many = pg_exists_many,
	.plan_many = pg_plan_many,
	.plan_find = pg_plan_find,
	.plan_drop = pg_plan_drop,
	.upload_find = pg_upload_find,
	.upload_begin = pg_upload_begin,
	.upload_drop = pg_upload_drop,
	.block_done = pg_block_done,
	.await = pg_await,
	.resolve = pg_resolve,
	.expire = pg_expire,
};
