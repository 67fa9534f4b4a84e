/*
 * sync_upload.c — the sync engine's uploads of whole files (small and mid-sized ones): rows of
 * temp.sync_pending, each content once, handed to client pools in batches.
 */
#include "sync_int.h"

/* A key's fingerprint (FNV-1a). */
uint32_t
sync_pend_fp(const char *okey)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; okey[i] != '\0'; i++)
		h = (h ^ (uint8_t)okey[i]) * 16777619u;
	return h;
}

static void
pend_insert(struct pend_set *p, uint64_t v)
{
	size_t i = (size_t)(v >> 32) & (p->cap - 1);

	while (p->slot[i] != 0)
		i = (i + 1) & (p->cap - 1);
	p->slot[i] = v;
	p->n++;
}

/* Records that okey (fingerprint fp) is queued in row rowid. */
static int
pend_add(struct pend_set *p, uint32_t fp, int64_t rowid)
{
	if (rowid <= 0 || rowid > UINT32_MAX)
		return STEP_ETOOBIG; /* 4 billion objects in one run */
	if (2 * (p->n + 1) > p->cap) {
		struct pend_set q = { xcalloc(p->cap ? 2 * p->cap : 1024, sizeof(uint64_t)),
			p->cap ? 2 * p->cap : 1024, 0 };
		size_t i;

		for (i = 0; i < p->cap; i++)
			if (p->slot[i] != 0)
				pend_insert(&q, p->slot[i]);
		free(p->slot);
		*p = q;
	}
	pend_insert(p, (uint64_t)fp << 32 | (uint64_t)rowid);
	return 0;
}

/* 1 when okey is queued already, 0 if not, or a STEP_E*. */
int
sync_pend_has(struct sync_job *s, const char *okey, uint32_t fp)
{
	struct pend_set *p = &s->pend;
	size_t i;
	int rc, same;

	if (p->cap == 0)
		return 0;
	for (i = fp & (p->cap - 1); p->slot[i] != 0; i = (i + 1) & (p->cap - 1)) {
		if ((uint32_t)(p->slot[i] >> 32) != fp)
			continue;
		sqlite3_bind_int64(s->pend_key, 1, (sqlite3_int64)(p->slot[i] & UINT32_MAX));
		rc = sqlite3_step(s->pend_key);
		same = rc == SQLITE_ROW &&
		    strcmp((const char *)sqlite3_column_text(s->pend_key, 0), okey) == 0;
		sqlite3_reset(s->pend_key);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return db_err(rc);
		if (same)
			return 1;
	}
	return 0;
}

/* Queues an object for upload unless queued already; h (NULL if none) is its content,
 * kept for sending while the budget allows, freed otherwise. */
int
sync_queue_object(struct sync_job *s, const char *path, uint64_t size, const char *okey,
    const char *md5, struct held *h)
{
	uint32_t fp = sync_pend_fp(okey);
	int rc, r;

	if ((r = sync_pend_has(s, okey, fp)) != 0) {
		free(h);
		return r < 0 ? r : sync_uploader_scan_step(s, s->scan_c, 0);
	}
	sqlite3_bind_text(s->pend_ins, 1, okey, -1, SQLITE_STATIC);
	sqlite3_bind_text(s->pend_ins, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s->pend_ins, 3, (sqlite3_int64)size);
	sqlite3_bind_text(s->pend_ins, 4, md5, -1, SQLITE_STATIC);
	rc = sqlite3_step(s->pend_ins);
	sqlite3_reset(s->pend_ins);
	if (rc != SQLITE_DONE) {
		free(h);
		return db_err(rc);
	}
	if ((r = pend_add(&s->pend, fp, sqlite3_last_insert_rowid(db_handle(s->db)))) != 0) {
		free(h);
		return r;
	}
	s->pending++;
	s->pending_bytes += size;
	s->pending_small += size <= SYNC_SCAN_SMALL;
	if (h != NULL && s->up != NULL && h->len == size &&
	    s->cache_bytes + size <= SYNC_HELD_MAX) {
		h->rowid = sqlite3_last_insert_rowid(db_handle(s->db));
		h->next = NULL;
		if (s->cache_tail != NULL)
			s->cache_tail->next = h;
		else
			s->cache_head = h;
		s->cache_tail = h;
		s->cache_bytes += size;
		h = NULL;
	}
	free(h);
	return sync_uploader_scan_step(s, s->scan_c, 0);
}

/* Handles one finished upload job. */
static int
upload_done(
    struct sync_job *s, struct client *c, struct client_job *j, const char *md5, uint64_t size)
{
	int r = j->rc;

	if (r == STEP_EEXIST) {
		/* Our content key holds other bytes (a damaged object): replace it. */
		log_warnx("object '%s' on the server has the wrong content; replacing it", j->key);
		r = client_put_file(c, j->path, j->key, CLIENT_PUT_REPLACE, &j->res);
		if (r != 0)
			snprintf(j->error, sizeof(j->error), "%s", client_error(c));
	}
	if (r == 0 && strcmp(j->res.md5, md5) != 0) {
		/* The file changed between hashing and sending: the object under this content
		 * key is wrong, take it away again. */
		log_warnx(
		    "'%s' changed while it was sent; it will be sent by the next run", j->path);
		(void)client_file_delete(c, j->key);
		s->upload_failed++;
		return 0;
	}
	if (r != 0) {
		if (sync_is_transport(r)) {
			sync_set_fatal(s, r, "cannot upload", j->error);
			return r;
		}
		agent_error(
		    "cannot upload '%s': %s", j->path, *j->error ? j->error : step_strerror(r));
		s->upload_failed++;
		return 0;
	}
	if ((r = files_object_add(s->files, j->key, size, md5)) != 0)
		return r;
	s->blocks_sent += j->res.blocks_sent;
	if (j->res.existed) {
		s->existed++;
	} else {
		s->sent++;
		s->sent_bytes += size;
	}
	return 0;
}

/*
 * The uploads of a run: rows of temp.sync_pending handed to a client pool SYNC_BATCH at a
 * time. While the scan goes on finding more, two batches are in flight, each on a pool of
 * its own (the scan's hashing, the network and the server's work then overlap, and a
 * batch's last answers do not hold up the next one); the rest goes after the scan, one
 * batch at a time.
 */
#define SYNC_INFLIGHT 2

/* One batch of jobs and what they borrow until it is collected. */
struct upbatch {
	struct client_pool *pool; /* made with the slot's first batch */
	size_t n;                 /* jobs in flight, 0 when none */
	struct client_job *jobs;
	char **paths, **keys;
	char (*md5s)[HASH_MD5_HEX];
	uint64_t *sizes;
	struct held *held; /* the content the batch sends */
};

struct uploader {
	sqlite3_stmt *next;       /* after the scan: the next rows after a rowid */
	sqlite3_stmt *next_small; /* during the scan: the next small rows after a rowid */
	int64_t last;             /* rowid of the last row handed out */
	int64_t scan_last;        /* ...of the last one handed out during the scan */
	uint64_t taken;           /* rows handed out */
	int scan_done;
	struct upbatch b[SYNC_INFLIGHT];
	unsigned cur; /* the slot the next batch goes to; the others are older */
};

/* Frees a list of held contents and takes them off the budget. */
void
sync_held_free(struct sync_job *s, struct held **list)
{
	struct held *h, *next;

	for (h = *list; h != NULL; h = next) {
		next = h->next;
		s->cache_bytes -= h->len;
		free(h);
	}
	*list = NULL;
}

/* Gives job j (row rowid, content MD5 md5) the content the scan kept for it, if any: the
 * held entry moves to batch b. Rows come in rowid order, the cache too; what is skipped
 * over (rows another pass hands out) is dropped. */
static void
held_attach(
    struct sync_job *s, struct upbatch *b, int64_t rowid, struct client_job *j, const char *md5)
{
	struct held *h;

	while ((h = s->cache_head) != NULL && h->rowid <= rowid) {
		s->cache_head = h->next;
		if (s->cache_head == NULL)
			s->cache_tail = NULL;
		if (h->rowid < rowid) {
			s->cache_bytes -= h->len;
			free(h);
			continue;
		}
		h->next = b->held;
		b->held = h;
		j->mem = h->data;
		j->memlen = h->len;
		j->md5 = md5;
		return;
	}
}

/* Frees the paths and keys of batch b's first n jobs and the content it held. */
static void
batch_release(struct sync_job *s, struct upbatch *b, size_t n)
{
	size_t i;

	for (i = 0; b->paths != NULL && i < n; i++) {
		free(b->paths[i]);
		free(b->keys[i]);
		b->paths[i] = b->keys[i] = NULL;
	}
	sync_held_free(s, &b->held);
}

void
sync_uploader_free(struct sync_job *s, struct uploader *u)
{
	unsigned k;

	if (u == NULL)
		return;
	for (k = 0; k < SYNC_INFLIGHT; k++) {
		struct upbatch *b = &u->b[k];

		client_pool_free(b->pool); /* waits for a batch still in flight */
		batch_release(s, b, SYNC_BATCH);
		free(b->jobs);
		free(b->paths);
		free(b->keys);
		free(b->md5s);
		free(b->sizes);
	}
	sqlite3_finalize(u->next);
	sqlite3_finalize(u->next_small);
	free(u);
}

/* Waits for batch b and records its results (in the caller's transaction). */
static int
batch_collect(struct sync_job *s, struct client *c, struct upbatch *b)
{
	size_t i;
	int r = 0;

	if (b->n == 0)
		return 0;
	(void)client_pool_wait(b->pool);
	for (i = 0; i < b->n && r == 0; i++)
		r = upload_done(s, c, &b->jobs[i], b->md5s[i], b->sizes[i]);
	batch_release(s, b, b->n);
	b->n = 0;
	return r;
}

/* Collects every batch in flight, oldest first. */
static int
uploader_collect(struct sync_job *s, struct client *c)
{
	struct uploader *u = s->up;
	unsigned k;
	int r = 0, r1;

	for (k = 0; k < SYNC_INFLIGHT; k++)
		if ((r1 = batch_collect(s, c, &u->b[(u->cur + k) % SYNC_INFLIGHT])) != 0 && r == 0)
			r = r1;
	return r;
}

/* Waits for every batch in flight without recording anything. */
static void
uploader_wait(struct uploader *u)
{
	unsigned k;

	for (k = 0; k < SYNC_INFLIGHT; k++)
		if (u->b[k].n > 0)
			(void)client_pool_wait(u->b[k].pool);
}

/* Hands the next rows (at most SYNC_BATCH) to the current slot's pool without waiting
 * (the slot must be free); *startedp is the number handed out (0: nothing pending). */
static int
uploader_start(struct sync_job *s, size_t *startedp)
{
	struct uploader *u = s->up;
	struct upbatch *b = &u->b[u->cur];
	struct client_opts o;
	sqlite3_stmt *st;
	char errbuf[256];
	size_t n, rootlen = strlen(s->root);
	int r, rc, nconn;

	*startedp = 0;
	if (util_stop_pending()) {
		sync_set_fatal(s, STEP_ESTOPPED, "stopped", NULL);
		return STEP_ESTOPPED;
	}
	assert(b->n == 0);
	if (b->pool == NULL) {
		if ((r = agent_client_opts(s->a, &o, errbuf, sizeof(errbuf))) != 0) {
			sync_set_fatal(s, r, "cannot connect", errbuf);
			return r;
		}
		o.outage_ms = SYNC_OUTAGE_MS;
		nconn = s->a->connections;
		if (nconn <= 1 && s->pending >= 16)
			nconn = SYNC_AUTO_CONN;
		if ((uint64_t)nconn > s->pending)
			nconn = (int)s->pending;
		if ((r = client_pool_new(&o, nconn, &b->pool)) != 0) {
			sync_set_fatal(s, r, "cannot connect", step_strerror(r));
			return r;
		}
	}
	if (!u->scan_done) {
		st = u->next_small;
		sqlite3_bind_int64(st, 1, u->last);
	} else {
		/* Rows after the scan's last, and the larger ones the scan left behind. */
		st = u->next;
		sqlite3_bind_int64(st, 1, u->last);
		sqlite3_bind_int64(st, 3, u->scan_last);
	}
	sqlite3_bind_int(st, 2, SYNC_BATCH);
	for (n = 0; n < SYNC_BATCH && (rc = sqlite3_step(st)) == SQLITE_ROW; n++) {
		const char *path = (const char *)sqlite3_column_text(st, 2);
		const char *md5 = (const char *)sqlite3_column_text(st, 4);
		size_t plen = strlen(path), mlen = strlen(md5);

		u->last = sqlite3_column_int64(st, 0);
		b->keys[n] = xstrdup((const char *)sqlite3_column_text(st, 1));
		b->paths[n] = xmalloc(rootlen + 2 + plen);
		memcpy(b->paths[n], s->root, rootlen);
		b->paths[n][rootlen] = '/';
		memcpy(b->paths[n] + rootlen + 1, path, plen + 1);
		b->sizes[n] = (uint64_t)sqlite3_column_int64(st, 3);
		mlen = mlen < HASH_MD5_HEX - 1 ? mlen : HASH_MD5_HEX - 1;
		memcpy(b->md5s[n], md5, mlen);
		b->md5s[n][mlen] = '\0';
		memset(&b->jobs[n], 0, sizeof(b->jobs[n]));
		b->jobs[n].path = b->paths[n];
		b->jobs[n].key = b->keys[n];
		held_attach(s, b, u->last, &b->jobs[n], b->md5s[n]);
		b->jobs[n].flags = CLIENT_PUT_EXIST_OK | (u->scan_done ? 0 : CLIENT_PUT_NO_STATE);
	}
	sqlite3_reset(st);
	if (!u->scan_done)
		u->scan_last = u->last;
	if (n > 0 && !u->scan_done)
		log_info("sending %zu files while scanning", n);
	if (n > 0) {
		client_pool_start(b->pool, b->jobs, n);
		u->cur = (u->cur + 1) % SYNC_INFLIGHT;
	}
	b->n = n;
	u->taken += n;
	*startedp = n;
	return 0;
}

int
sync_uploader_new(struct sync_job *s)
{
	struct uploader *u = xcalloc(1, sizeof(*u));
	unsigned k;
	int rc;

	rc = sqlite3_prepare_v2(db_handle(s->db),
	    "SELECT rowid, okey, path, size, md5 FROM temp.sync_pending WHERE rowid > ?1"
	    " AND (rowid > ?3 OR size > " STR(SYNC_SCAN_SMALL) ") ORDER BY rowid LIMIT ?2",
	    -1, &u->next, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db_handle(s->db),
		    "SELECT rowid, okey, path, size, md5 FROM temp.sync_pending WHERE rowid > ?1"
		    " AND size <= " STR(SYNC_SCAN_SMALL) " ORDER BY rowid LIMIT ?2",
		    -1, &u->next_small, NULL);
	if (rc != SQLITE_OK) {
		sync_uploader_free(s, u);
		return db_err(rc);
	}
	for (k = 0; k < SYNC_INFLIGHT; k++) {
		struct upbatch *b = &u->b[k];

		b->jobs = xcalloc(SYNC_BATCH, sizeof(*b->jobs));
		b->paths = xcalloc(SYNC_BATCH, sizeof(*b->paths));
		b->keys = xcalloc(SYNC_BATCH, sizeof(*b->keys));
		b->md5s = xcalloc(SYNC_BATCH, sizeof(*b->md5s));
		b->sizes = xcalloc(SYNC_BATCH, sizeof(*b->sizes));
	}
	s->up = u;
	return 0;
}

/* During the scan: once a whole batch is waiting (last: once the scan is over, whatever
 * is), start it, after collecting the oldest batch in flight if every slot is busy. */
int
sync_uploader_scan_step(struct sync_job *s, struct client *c, int last)
{
	size_t started;
	int r;

	if (s->up == NULL || s->pending_small - s->up->taken < (last ? 1 : SYNC_BATCH))
		return 0;
	/* A run that sent nothing yet has not seen the server: its files go after the scan,
	 * once the session is known to be up (a watcher against a server that is down would
	 * otherwise wait out the pool's reconnect attempts as well as the session's). */
	if (last && s->up->b[0].pool == NULL && s->up->b[1].pool == NULL)
		return 0;
	if ((r = batch_collect(s, c, &s->up->b[s->up->cur])) != 0)
		return r;
	return uploader_start(s, &started);
}

/* After the scan: everything not handed out yet. The results of a batch are recorded in a
 * transaction of their own, never held while the batch runs: the pool's connections write
 * resume rows of large files into the same state database. */
int
sync_upload_pending(struct sync_job *s, struct client *c)
{
	size_t started;
	int r;

	s->up->scan_done = 1;
	s->up->last = 0;
	do {
		uploader_wait(s->up);
		if ((r = db_begin(s->db)) != 0)
			return r;
		r = uploader_collect(s, c);
		if (db_commit(s->db) != 0 && r == 0)
			r = STEP_EIO;
		sync_progress_note(s, 0);
		if (r == 0)
			r = uploader_start(s, &started);
		if (r != 0)
			return r;
	} while (started > 0);
	return 0;
}
