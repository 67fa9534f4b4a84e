/*
 * sync_scan.c — the sync engine's scan: every entry visited in path order, quick-checked against
 * the files table, the trees built bottom-up, vanished files dropped, mass deletion refused.
 */
#include "sync_int.h"
#include "links.h"

static void cursor_close(struct sync_job *s);

/* Adds a file's entry to the trees: its chunks are the list of a chunked file, one
 * chunk (the whole content) otherwise, none when empty. */
static int
tree_add_file(struct sync_job *s, const char *path, const struct files_row *row, uint32_t uid,
    uint32_t gid, uint64_t link)
{
	struct tree_entry te;
	struct tree_chunk one, *chunks = NULL;
	void *data = NULL;
	size_t len = 0, i, k;
	int r;

	memset(&te, 0, sizeof(te));
	te.type = TREE_FILE;
	te.mode = row->mode & 07777;
	te.mtime_ns = row->mtime_ns;
	te.uid = uid;
	te.gid = gid;
	te.link = link; /* links_group(): several hard links, else 0 */
	te.size = row->size;
	if (row->okey[0] == 'c') {
		if ((r = files_chunks_get(s->files, row->okey, &data, &len)) != 0)
			return r;
		te.nchunks = len / FILES_CHUNK_REC;
		chunks = xcalloc(te.nchunks ? te.nchunks : 1, sizeof(*chunks));
		for (i = 0; i < te.nchunks; i++) {
			const uint8_t *p = (const uint8_t *)data + i * FILES_CHUNK_REC;

			memcpy(chunks[i].id, p, HASH_SHA256_LEN);
			for (k = 0; k < 8; k++)
				chunks[i].size |= (uint64_t)p[HASH_SHA256_LEN + k] << (8 * k);
		}
		te.chunks = chunks;
	} else if (row->okey[0] != '\0') {
		if (util_hex_decode(row->okey + 2, one.id, HASH_SHA256_LEN) != 0)
			return STEP_EINVAL;
		one.size = row->size;
		te.chunks = &one;
		te.nchunks = 1;
	}
	r = tree_builder_add(s->tb, path, &te);
	free(chunks);
	free(data);
	return r;
}

/* Remembers a chunk list whose chunks this run sends: known once they are all in. */
static void
newlist_add(struct sync_job *s, const char *okey)
{
	if (s->nnewlists == s->capnewlists) {
		s->capnewlists = s->capnewlists ? 2 * s->capnewlists : 16;
		s->newlists = xrealloc(s->newlists, s->capnewlists * sizeof(*s->newlists));
	}
	s->newlists[s->nnewlists++] = xstrdup(okey);
}

/* The rest of a file's visit once its row is complete: records it, queues its content
 * when the server may lack it (h: the content if held, else NULL; taken), and adds it to
 * the manifest. unchanged: the row is the state's, as found. */
static int
finish_file(struct sync_job *s, const char *path, struct files_row *row, int unchanged,
    struct held *h, uint32_t uid, uint32_t gid, uint64_t link)
{
	struct manifest_entry *e = &s->ent;
	size_t n = strlen(path);
	int r;

	/* Unchanged files write nothing (see mark_seen()). */
	if (!unchanged && (r = files_put(s->files, s->name, path, row, s->gen)) != 0) {
		free(h);
		return r;
	}
	if ((r = tree_add_file(s, path, row, uid, gid, link)) != 0) {
		free(h);
		return r;
	}
	if (row->okey[0] == 'c') {
		/* A chunked file: its chunks went to the sender as it was read. In the
		 * manifest (digest, mark_seen) it stands under its list's id. */
		free(h);
		if (!unchanged)
			newlist_add(s, row->okey);
		memcpy(e->path, path, n + 1);
		e->type = MANIFEST_FILE;
		e->target[0] = '\0';
		e->mode = row->mode & 07777;
		e->mtime_ns = row->mtime_ns;
		e->size = row->size;
		memcpy(e->key, row->okey, strlen(row->okey) + 1);
		e->key[0] = 'o';
		memset(e->md5, '0', HASH_MD5_HEX - 1);
		e->md5[HASH_MD5_HEX - 1] = '\0';
		return manifest_writer_add(s->mw, e);
	}
	memcpy(e->path, path, n + 1); /* n <= MANIFEST_PATH_MAX: see sync_visit */
	e->type = MANIFEST_FILE;
	e->target[0] = '\0';
	/* An unchanged file's mode is the row's: a chmod would have changed its ctime. */
	e->mode = row->mode & 07777;
	e->mtime_ns = row->mtime_ns;
	e->size = row->size;
	memcpy(e->md5, row->md5, sizeof(e->md5));
	memcpy(e->key, row->okey,
	    sizeof(row->okey) < sizeof(e->key) ? sizeof(row->okey) : sizeof(e->key));
	if (e->key[0] != '\0') {
		/* An unchanged file's lookup said whether its object is known already; a
		 * file read whole by the scan went to the sender already. */
		r = unchanged ? row->known : files_object_known(s->files, e->key);
		if (r == 0 && !unchanged && sync_queued_key(s, e->key))
			r = 1;
		if (r < 0) {
			free(h);
			return r;
		}
		if (r == 0)
			return (r = sync_queue_object(s, path, e->size, e->key, e->md5, h)) != 0
			    ? r
			    : manifest_writer_add(s->mw, e);
	}
	free(h);
	return manifest_writer_add(s->mw, e);
}

/* Finishes a deferred directory or symlink: its manifest and tree entries. */
static int
finish_other(struct sync_job *s, const struct deferred *q)
{
	struct manifest_entry *e = &s->ent;
	struct tree_entry te;
	int r;

	memset(&te, 0, sizeof(te));
	te.type = q->kind == DQ_DIR || q->kind == DQ_SUB ? TREE_DIR : TREE_SYMLINK;
	te.mode = q->mode;
	te.mtime_ns = q->mtime_ns;
	te.uid = q->uid;
	te.gid = q->gid;
	if (q->target != NULL) {
		te.target = q->target;
		te.targetlen = strlen(q->target);
	}
	if (q->kind == DQ_SUB) {
		struct tree_counts c = { q->sub.files, q->sub.dirs, q->sub.symlinks, q->sub.bytes };

		memcpy(te.subtree, q->sub.id, sizeof(te.subtree));
		r = tree_builder_add_subtree(s->tb, q->path, &te, &c);
	} else {
		r = tree_builder_add(s->tb, q->path, &te);
	}
	if (r != 0)
		return r;

	memcpy(e->path, q->path, strlen(q->path) + 1); /* <= MANIFEST_PATH_MAX: sync_visit */
	e->type = q->kind == DQ_LINK ? MANIFEST_SYMLINK : MANIFEST_DIR;
	e->mode = q->mode;
	e->mtime_ns = q->mtime_ns;
	e->size = 0;
	e->key[0] = e->md5[0] = e->target[0] = '\0';
	if (q->target != NULL)
		memcpy(e->target, q->target, strlen(q->target) + 1);
	return manifest_writer_add(s->mw, e);
}

static void
deferred_free(struct deferred *q)
{
	free(q->h);
	free(q->path);
	free(q->target);
}

/* Computes the keys (SHA-256) and MD5s of the deferred small files, side by side, then
 * finishes every deferred visit in scan order, so the manifest stays in scan order. */
static int
flush_deferred(struct sync_job *s)
{
	const void **data = s->hdata;
	size_t *len = s->hlen, i, k, n = s->ndq;
	uint8_t d[SYNC_HASH_BATCH][HASH_MD5_LEN], sha[SYNC_HASH_BATCH][HASH_SHA256_LEN];
	int r = 0;

	for (i = k = 0; i < n; i++)
		if (s->dq[i].kind == DQ_HASH) {
			data[k] = s->dq[i].h->data;
			len[k++] = s->dq[i].h->len;
		}
	hash_sha256_many(k, data, len, sha);
	md5_many(k, data, len, d);
	s->ndq = s->nhash = 0;
	for (i = k = 0; i < n; i++) {
		struct deferred *q = &s->dq[i];

		if (q->kind == DQ_HASH) {
			manifest_object_key(sha[k], q->row.okey, sizeof(q->row.okey));
			hash_to_hex(d[k++], HASH_MD5_LEN, q->row.md5);
		}
		if (r == 0 && (q->kind == DQ_DIR || q->kind == DQ_LINK || q->kind == DQ_SUB)) {
			r = finish_other(s, q);
		} else if (r == 0) {
			r = finish_file(
			    s, q->path, &q->row, q->kind == DQ_SAME, q->h, q->uid, q->gid, q->link);
			q->h = NULL; /* finish_file took it */
		}
		deferred_free(q);
	}
	return r;
}

/* Drops deferred visits unfinished (the run failed). */
static void
drop_deferred(struct sync_job *s)
{
	size_t i;

	for (i = 0; i < s->ndq; i++)
		deferred_free(&s->dq[i]);
	s->ndq = s->nhash = 0;
}

/* Finishes the visit of scan entry se (row: a file's), or queues it to be finished with
 * the next batch (flush_deferred): a small file whose content sync_hash_once read (s->hheld,
 * DQ_HASH), and every entry after one, so that the manifest keeps the scan's order. */
int
sync_defer(struct sync_job *s, int kind, const struct scan_entry *se, struct files_row *row)
{
	struct deferred *q;

	if (s->ndq == 0 && kind != DQ_HASH) { /* none waits: at once */
		struct deferred now = { .kind = kind,
			.path = (char *)se->path,
			.target = (char *)(kind == DQ_LINK ? se->target : NULL),
			.mode = se->st->st_mode & 07777,
			.mtime_ns = scan_mtime_ns(se->st),
			.uid = (uint32_t)se->st->st_uid,
			.gid = (uint32_t)se->st->st_gid,
			.link = links_group(se->st) };

		now.sub = s->nsub;
		return kind == DQ_DIR || kind == DQ_LINK || kind == DQ_SUB
		    ? finish_other(s, &now)
		    : finish_file(
		          s, se->path, row, kind == DQ_SAME, NULL, now.uid, now.gid, now.link);
	}
	q = &s->dq[s->ndq++];
	memset(q, 0, sizeof(*q));
	q->kind = kind;
	if (row != NULL)
		q->row = *row;
	q->path = xstrdup(se->path);
	if (kind == DQ_LINK)
		q->target = xstrdup(se->target);
	q->mode = se->st->st_mode & 07777;
	q->mtime_ns = scan_mtime_ns(se->st);
	q->uid = (uint32_t)se->st->st_uid;
	q->gid = (uint32_t)se->st->st_gid;
	q->sub = s->nsub;
	q->link = links_group(se->st);
	if (kind == DQ_HASH) {
		q->h = s->hheld;
		s->hheld = NULL;
		s->nhash++;
	}
	return s->nhash == SYNC_HASH_BATCH || s->ndq == SYNC_DQ_MAX ? flush_deferred(s) : 0;
}

/*
 * A file that could not be read (r: STEP_ESYS), or kept changing while read however often
 * it was tried (STEP_ECHANGED): a busy file never stops the snapshot. Its previous version
 * (old: its state row, whose content the server holds; NULL when none) goes into the
 * snapshot instead, or, without one, the file is left out; either way the run ends with
 * the "incomplete snapshot" status and says which.
 */
static int
not_read(struct sync_job *s, const struct scan_entry *se, int r, struct files_row *old)
{
	if (r == STEP_ECHANGED && old != NULL) {
		agent_error("'%s' kept changing while it was read; its previous version "
		            "goes into this snapshot",
		    se->path);
		s->busy_kept++;
		return sync_defer(s, DQ_SAME, se, old);
	}
	if (r == STEP_ECHANGED)
		agent_error(
		    "'%s' kept changing while it was read; left out of this snapshot", se->path);
	else
		agent_error(
		    "cannot read '%s': %s; left out of this snapshot", se->path, strerror(errno));
	s->read_errors++;
	return 0;
}

/* A regular file: quick check, hash when needed, queue unknown content. Fills s->ent. */
static int
visit_file(struct sync_job *s, const struct scan_entry *se)
{
	const struct stat *st = se->st;
	struct files_row row, old;
	struct stat hst;
	uint8_t sha[HASH_SHA256_LEN];
	int r, have, unchanged, i;

	free(s->hheld); /* only a sync_hash_once of this very file may fill it */
	s->hheld = NULL;

	/* The scan comes in path order: one sorted pass over the table, no lookups. */
	r = s->cur != NULL ? files_cursor_find(s->cur, se->path, &row)
	                   : files_lookup(s->files, s->name, se->path, &row);
	if (r != 0 && r != STEP_ENOENT)
		return r;
	have = r == 0;
	if (have)
		s->found++;
	unchanged = have && row.size == (uint64_t)st->st_size &&
	    row.mtime_ns == scan_mtime_ns(st) && row.ino == (uint64_t)st->st_ino &&
	    row.dev == (uint64_t)st->st_dev && row.ctime_ns == scan_ctime_ns(st);
	/* A chunked file whose chunks are not all known on the server is read again. */
	if (unchanged && (row.okey[0] != 'c' || row.known))
		return sync_defer(s, DQ_SAME, se, &row);
	old = row;
	have = have && row.known;
	memset(&row, 0, sizeof(row));
	if (st->st_size >= SYNC_CHUNKED) {
		uint64_t new0 = s->chunks_new;

		r = STEP_ECHANGED;
		for (i = 0; i < SYNC_HASH_TRY && r == STEP_ECHANGED; i++)
			r = sync_chunk_file(s, se->dirfd, se->name, st, i, &row, &hst);
		if (r != 0 && r != STEP_ECHANGED && r != STEP_ESYS)
			return r;
		if (r != 0)
			return not_read(s, se, r, have ? &old : NULL);
		s->hashed++;
		s->chunked_files_new += s->chunks_new > new0;
		if (s->dry_run && s->chunks_new > new0)
			printf(
			    "would send %s (%" PRIu64 " bytes)\n", se->path, (uint64_t)hst.st_size);
	} else if (st->st_size == 0) {
		memcpy(row.md5, MANIFEST_EMPTY_MD5, sizeof(row.md5));
		hst = *st;
	} else {
		r = STEP_ECHANGED;
		for (i = 0; i < SYNC_HASH_TRY && r == STEP_ECHANGED; i++)
			r = sync_hash_once(s, se->dirfd, se->name, st, i, sha, row.md5, &hst);
		if (r == STEP_ENOMEM || r == STEP_ESTOPPED)
			return r;
		if (r != 0)
			return not_read(s, se, r, have ? &old : NULL);
		if (s->hheld != NULL && s->hheld->len > SYNC_SCAN_SMALL) {
			/* Larger than a batch's file: hashed now and sent from what was read, so
			 * it is never read again (and cannot change between hash and upload). */
			struct held *h = s->hheld;
			int isnew;

			s->hheld = NULL;
			hash_sha256(h->data, h->len, sha);
			hash_md5_hex(h->data, h->len, row.md5);
			r = sync_send_object(s, sha, h->data, h->len, row.md5, SEND_FILE, &isnew);
			free(h);
			if (r != 0)
				return r;
			if (isnew && s->dry_run)
				printf("would send %s (%" PRIu64 " bytes)\n", se->path,
				    (uint64_t)hst.st_size);
			if (isnew) {
				s->pending++;
				s->pending_bytes += (uint64_t)hst.st_size;
			}
		}
		if (s->hheld == NULL) /* else flush_deferred computes the key */
			manifest_object_key(sha, row.okey, sizeof(row.okey));
		s->hashed++;
	}
	row.dev = (uint64_t)hst.st_dev;
	row.ino = (uint64_t)hst.st_ino;
	row.size = (uint64_t)hst.st_size;
	row.mtime_ns = scan_mtime_ns(&hst);
	row.ctime_ns = scan_ctime_ns(&hst);
	row.mode = hst.st_mode;
	return sync_defer(s, s->hheld != NULL ? DQ_HASH : DQ_FILE, se, &row);
}

/* A directory: read (its entries come next), or, in an incremental run, its tree of the
 * last run reused and its contents skipped. */
static int
visit_dir(struct sync_job *s, const struct scan_entry *se)
{
	int r;

	if ((r = sync_inc_reuse(s, se->path)) < 0)
		return r;
	if (r == 1)
		return (r = sync_defer(s, DQ_SUB, se, NULL)) != 0 ? r : SCAN_SKIP;
	s->dirs_scanned++;
	return sync_defer(s, DQ_DIR, se, NULL);
}

static int
sync_visit(void *ctx, const struct scan_entry *se)
{
	struct sync_job *s = ctx;
	size_t n = strlen(se->path);
	int r;

	if (n > MANIFEST_PATH_MAX)
		return 0; /* the scanner already refuses these */
	if (s->holding && (r = sync_hold_catch_up(s, se->path, S_ISDIR(se->st->st_mode))) != 0)
		return r;
	if ((++s->visited & 63) == 0)
		sync_progress_note(s, 1);
	if ((s->visited & 1023) == 0 && util_stop_pending()) {
		sync_set_fatal(s, STEP_ESTOPPED, "stopped", NULL);
		return STEP_ESTOPPED;
	}
	sync_inc_seen(s, se->path);
	if (S_ISREG(se->st->st_mode))
		return visit_file(s, se);
	if (S_ISDIR(se->st->st_mode))
		return visit_dir(s, se);
	if (S_ISLNK(se->st->st_mode) && strlen(se->target) <= MANIFEST_PATH_MAX)
		return sync_defer(s, DQ_LINK, se, NULL);
	return 0; /* the scanner only hands out directories, symlinks and files */
}

/* Prints what a dry run would send. */
static int
print_pending(struct sync_job *s)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db_handle(s->db),
	    "SELECT path, size FROM temp.sync_pending ORDER BY rowid", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_err(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		printf("would send %s (%" PRId64 " bytes)\n",
		    (const char *)sqlite3_column_text(st, 0), (int64_t)sqlite3_column_int64(st, 1));
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(rc);
}

/* Rows of files that vanished must go, and the scan writes nothing for unchanged files
 * (so a no-change run writes nothing at all). Only when fewer known files were found
 * than the table holds are this scan's files marked with the run's gen — read back from
 * the manifest being built — and the others dropped. */
static int
mark_seen(struct sync_job *s)
{
	struct manifest_header h;
	struct manifest_reader *rd = NULL;
	struct manifest_entry *e = xmalloc(sizeof(*e));
	FILE *f = NULL;
	int r;

	memset(&h, 0, sizeof(h));
	snprintf(h.name, sizeof(h.name), "%s", s->name);
	h.seq = 1;
	h.time = util_wall_s();
	if ((f = tmpfile()) == NULL) {
		r = STEP_ESYS;
		goto out;
	}
	if ((r = manifest_writer_finish(s->mw, &h, f)) != 0 || fseek(f, 0, SEEK_SET) != 0 ||
	    (r = manifest_reader_new(f, &h, &rd)) != 0) {
		r = r != 0 ? r : STEP_ESYS;
		goto out;
	}
	while ((r = manifest_reader_next(rd, e)) == 1)
		if (e->type == MANIFEST_FILE &&
		    (r = files_touch(s->files, s->name, e->path, s->gen)) != 0)
			goto out;
	if (r == 0)
		r = files_drop_unseen(s->files, s->name, s->gen);
out:
	manifest_reader_free(rd);
	if (f != NULL)
		fclose(f);
	free(e);
	return r;
}

/* Opens the sorted walk on a connection of its own, whose read transaction keeps seeing
 * the table as it was while this run's transaction writes. Without it (cannot open),
 * visit_file() looks every file up instead. */
static void
cursor_open(struct sync_job *s)
{
	char path[4096];

	if (sync_state_path(s->a, path, sizeof(path)) != 0 ||
	    db_open(path, &s->rdb, NULL, 0) != 0 ||
	    files_cursor_open(s->rdb, s->name, &s->cur) != 0) {
		log_info("state database: no sorted walk; looking files up one by one");
		cursor_close(s);
	}
}

static void
cursor_close(struct sync_job *s)
{
	files_cursor_free(s->cur);
	s->cur = NULL;
	db_close(s->rdb);
	s->rdb = NULL;
}

/* The scan's statements, uploaders, tree builder and counts (in the scan's transaction). */
static int
scan_prepare(struct sync_job *s)
{
	int r;

	if ((r = db_exec(s->db,
	         "CREATE TEMP TABLE IF NOT EXISTS sync_pending(okey TEXT NOT NULL,"
	         " path TEXT NOT NULL, size INTEGER NOT NULL, md5 TEXT NOT NULL);"
	         "DELETE FROM temp.sync_pending;")) != 0)
		return r;
	/* Each key at most once: see struct pend_set. */
	if ((r = db_err(sqlite3_prepare_v2(db_handle(s->db),
	         "INSERT INTO temp.sync_pending(okey, path, size, md5) VALUES(?,?,?,?)", -1,
	         &s->pend_ins, NULL))) != 0 ||
	    (r = db_err(sqlite3_prepare_v2(db_handle(s->db),
	         "SELECT okey FROM temp.sync_pending WHERE rowid = ?", -1, &s->pend_key, NULL))) !=
	        0)
		return r;
	if (!s->dry_run && s->up == NULL && (r = sync_uploader_new(s)) != 0)
		return r;
	if (!s->dry_run && s->snd == NULL && (r = sync_sender_start(s)) != 0)
		return r;
	if ((r = tree_builder_new(sync_tree_emit, s, &s->tb)) != 0)
		return r;
	tree_builder_on_close(s->tb, sync_tree_closed, s);
	/* An incremental run: s->known is the root's count of the last run, and rows are
	 * dropped one by one (sync_inc_vanish()), not by generation: any gen will do (max(gen)
	 * would be a pass over the whole table). */
	if (s->inc) {
		s->gen = 1;
		return 0;
	}
	/* A full run stores every directory's tree anew. */
	if ((r = files_dirtree_clear(s->files, s->name)) != 0 ||
	    (r = files_count(s->files, s->name, &s->known)) != 0 ||
	    (r = files_next_gen(s->files, s->name, &s->gen)) != 0)
		return r;
	cursor_open(s); /* an incremental run looks its few files up */
	if (s->holding && s->cur == NULL)
		s->holding = 0; /* cannot: the mass deletion is refused */
	return 0;
}

/* The walk and the trees; in an incremental run, the files gone. */
static int
scan_walk(struct sync_job *s, struct scan_stats *stats)
{
	int r;

	s->dirs_scanned = 1; /* the root */
	r = scan_tree(s->root, s->exclude, s->nexclude, sync_visit, s, stats);
	if (r == 0 && s->holding)
		r = sync_hold_catch_up(s, NULL, 0);
	if (r == 0)
		r = flush_deferred(s);
	if (r == 0)
		r = tree_builder_finish(s->tb, s->root_id);
	if (r == 0)
		r = s->tree_err;
	if (r == 0)
		tree_builder_counts(s->tb, &s->counts);
	if (r == 0 && s->inc)
		r = sync_inc_vanish(s);
	if (r == 0)
		r = sync_collect_sent(s);
	if (r == 0) /* the last small files go while the run commits the scan */
		r = sync_uploader_scan_step(s, s->scan_c, 1);
	drop_deferred(s);
	cursor_close(s);
	return r;
}

/* Steps 2 and 3: the scan in one transaction. Returns 0, an error, or 1 for "stop here,
 * *exitp says how" (dry run, mass deletion). */
int
sync_scan_phase(struct sync_job *s, int *exitp)
{
	struct scan_stats stats;
	uint64_t gone;
	int r, e;

	if ((r = db_begin(s->db)) != 0)
		return r;
	if ((r = scan_prepare(s)) != 0)
		goto fail;
	r = scan_walk(s, &stats);
	if (r == STEP_ESYS) {
		e = errno;
		db_rollback(s->db);
		agent_error("cannot open '%s': %s", s->root, strerror(e));
		*exitp = AGENT_EXIT_FAIL;
		return 1;
	}
	if (r != 0)
		goto fail;
	s->read_errors += stats.errors;
	gone = s->known - s->found;
	if (s->known > 0 && gone * 2 > s->known && !s->allow_mass_delete && !s->holding) {
		db_rollback(s->db);
		if (s->hold_mass_delete && !s->holding) {
			*exitp = SYNC_HOLD_AGAIN; /* again, keeping the files gone */
			return 1;
		}
		agent_error("sync '%s': %" PRIu64 " of %" PRIu64 " known files are gone from '%s' "
		            "(unmounted disk?); no snapshot recorded. Rerun with "
		            "--allow-mass-delete if this is intended",
		    s->name, gone, s->known, s->root);
		*exitp = SYNC_EXIT_MASSDEL;
		return 1;
	}
	if (s->dry_run) {
		r = print_pending(s);
		db_rollback(s->db);
		s->dry_listed = 1;
		*exitp = r == 0 ? AGENT_EXIT_OK : AGENT_EXIT_FAIL;
		return 1;
	}
	if (!s->inc && s->found < s->known && (r = mark_seen(s)) != 0)
		goto fail;
	return db_commit(s->db);
fail:
	db_rollback(s->db);
	return r;
}
