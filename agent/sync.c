/*
 * sync.c — one run of the sync engine from start to end (see sync.h).
 */
#include "sync_int.h"

void
sync_set_fatal(struct sync_job *s, int r, const char *what, const char *detail)
{
	if (s->fatal != 0)
		return;
	s->fatal = r;
	snprintf(s->fatal_msg, sizeof(s->fatal_msg), "%s: %s", what,
	    detail != NULL && *detail ? detail : step_strerror(r));
}

int
sync_is_transport(int r)
{
	return r == STEP_ECONNECT || r == STEP_ETIMEDOUT || r == STEP_ECLOSED || r == STEP_EAUTH ||
	    r == STEP_ETLS || r == STEP_EPROTO || r == STEP_ESTOPPED;
}

/* Tells the progress hook, if any, how far the run is. */
void
sync_progress_note(struct sync_job *s, int scanning)
{
	struct sync_progress p;

	if (s->progress == NULL)
		return;
	p.files_done = p.files_total = s->visited;
	p.bytes_done = s->sent_bytes;
	p.bytes_total = s->pending_bytes + s->chunk_bytes_new;
	if (p.bytes_done > p.bytes_total)
		p.bytes_total = p.bytes_done; /* content another run had half sent */
	p.scanning = scanning;
	s->progress(s->progress_arg, &p);
}

int
sync_exit_for(struct sync_job *s, int r)
{
	if (s->fatal != 0) {
		agent_error("sync '%s': %s", s->name, s->fatal_msg);
		return snapshot_exit_code(s->fatal);
	}
	if (r != 0) {
		agent_error("sync '%s': %s", s->name, step_strerror(r));
		return AGENT_EXIT_FAIL;
	}
	return AGENT_EXIT_OK;
}

/* A new run (the options' strings borrowed) with its buffers. */
static struct sync_job *
job_new(const struct sync_opts *o)
{
	struct sync_job *s = xcalloc(1, sizeof(*s));

	s->a = o->a;
	s->name = o->name;
	s->root = o->root;
	s->exclude = o->exclude;
	s->nexclude = o->nexclude;
	s->dry_run = o->dry_run;
	s->allow_mass_delete = o->allow_mass_delete;
	s->skip_unchanged = o->skip_unchanged;
	s->progress = o->progress;
	s->hold_mass_delete = o->hold_mass_delete;
	s->progress_arg = o->progress_arg;
	/* Chunks (up to CHUNK_MAX) are allocated and freed all the time: glibc would map and
	 * unmap each one (and fault its pages in again); keep them on the heap instead. */
	mallopt(M_MMAP_THRESHOLD, (int)CHUNK_MAX + 4096);
	mallopt(M_TRIM_THRESHOLD, (int)SYNC_SEND_BUDGET * 2);
	s->hbuf = xmalloc(SYNC_HASH_BUF);
	buf_init(&s->clist, (size_t)TREE_CHUNKS_MAX * FILES_CHUNK_REC);
	s->dq = xcalloc(SYNC_DQ_MAX, sizeof(*s->dq));
	return s;
}

/* Frees everything a run holds (waiting for uploads still in flight first). */
static void
job_free(struct sync_job *s)
{
	sync_uploader_free(s, s->up); /* waits for batches still in flight */
	sender_free(s->snd);
	tree_builder_free(s->tb);
	sync_inc_release(s);
	free(s->lastpath);
	free(s->queued.slot);
	free(s->cbuf);
	hashpair_free(s->hp);
	buf_release(&s->clist);
	while (s->nnewlists > 0)
		free(s->newlists[--s->nnewlists]);
	free(s->newlists);
	sync_held_free(s, &s->cache_head);
	s->cache_tail = NULL;
	sqlite3_finalize(s->pend_ins);
	sqlite3_finalize(s->pend_key);
	free(s->pend.slot);
	files_free(s->files);
	manifest_writer_free(s->mw);
	free(s->hbuf);
	free(s->dq);
	free(s->hheld);
	hash_free(s->sha);
	free(s);
}

/* The counters of run s (h: its snapshot, NULL when none) into *res. */
static void
job_result(const struct sync_job *s, const struct manifest_header *h, struct sync_result *res)
{
	if (h != NULL) {
		res->seq = h->seq;
		res->files = h->files;
		res->dirs = h->dirs;
		res->symlinks = h->symlinks;
		res->bytes = h->bytes;
	}
	res->sent_files = s->sent + s->chunked_files_new;
	res->sent_bytes = s->sent_bytes;
	res->existed = s->existed;
	res->blocks_sent = s->blocks_sent;
	res->chunks_sent = s->chunks_sent;
	res->trees_sent = s->trees_sent;
	res->tree_bytes_sent = s->tree_bytes_sent;
	res->read_errors = s->read_errors;
	res->busy_kept = s->busy_kept;
	res->pending = s->pending;
	res->pending_bytes = s->pending_bytes;
	res->chunks_new = s->chunks_new;
	res->chunk_bytes_new = s->chunk_bytes_new;
	res->trees_new = s->trees_new;
	res->gone = s->known > s->found ? s->known - s->found : 0;
	res->dry_listed = s->dry_listed;
	res->dirs_scanned = s->dirs_scanned;
	res->files_hashed = s->hashed;
	res->visited = s->visited;
}

/* Steps 4 and 5, after the scan: uploads, then the snapshot record. Returns the exit
 * status; *h is the snapshot recorded or kept (h->seq 0: none). */
static int
job_finish(struct sync_job *s, struct client *c, struct manifest_header *h, int *unchangedp)
{
	double t0 = util_now_s();
	int r, unchanged;

	if ((r = client_connect(c)) != 0) {
		sync_set_fatal(s, r, "cannot log in", client_error(c));
		return sync_exit_for(s, r);
	}
	if (s->pending > 0 && (r = sync_upload_pending(s, c)) != 0)
		return sync_exit_for(s, r);
	if ((r = sync_sender_finish(s)) != 0)
		return sync_exit_for(s, r);
	log_info("%" PRIu64 " large files chunked; sent %" PRIu64 " new chunks (%" PRIu64
	         " bytes) and %" PRIu64 " new trees (%" PRIu64 " bytes)",
	    s->chunked, s->chunks_new, s->chunk_bytes_new, s->trees_new, s->tree_bytes_new);
	log_info("sent %" PRIu64 " files in %.3f s (login included)", s->sent, util_now_s() - t0);
	t0 = util_now_s();
	if (s->upload_failed > 0) {
		agent_error("sync '%s': %" PRIu64 " of %" PRIu64 " files could not be sent; "
		            "no snapshot recorded (the previous one stays the latest)",
		    s->name, s->upload_failed, s->pending);
		return AGENT_EXIT_FAIL;
	}
	if ((unchanged = sync_snapshot_unchanged(s, c, h)) < 0)
		return sync_exit_for(s, unchanged);
	if (!unchanged) {
		agent_test_hold("STEPSYNC_TEST_HOLD_RECORD");
		if ((r = sync_record_snapshot(s, c, h)) != 0 ||
		    (r = sync_check_generation(s, c, h)) != 0)
			return sync_exit_for(s, r);
	}
	*unchangedp = unchanged;
	sync_progress_note(s, 0);
	log_info("%s snapshot #%" PRIu64 " in %.3f s", unchanged ? "kept" : "recorded", h->seq,
	    util_now_s() - t0);
	if (s->read_errors > 0 || s->busy_kept > 0) {
		agent_error("sync '%s': snapshot #%" PRIu64 " is incomplete: %" PRIu64 " %s not "
		            "read (left out), %" PRIu64 " busy %s kept at %s previous version "
		            "(listed above)",
		    s->name, h->seq, s->read_errors,
		    s->read_errors == 1 ? "entry was" : "entries were", s->busy_kept,
		    s->busy_kept == 1 ? "file" : "files", s->busy_kept == 1 ? "its" : "their");
		return SYNC_EXIT_INCOMPLETE;
	}
	return AGENT_EXIT_OK;
}

/* One run of job s: setup, scan, uploads, snapshot. Returns the exit status, or
 * SYNC_HOLD_AGAIN; *h is the snapshot (h->seq 0: none). */
static int
job_run(
    struct sync_job *s, const struct sync_changes *ch, struct manifest_header *h, int *unchangedp)
{
	struct client *c = NULL;
	double t0;
	int r, ex = AGENT_EXIT_FAIL;

	if (agent_db(s->a, &s->db) != 0)
		return SYNC_EXIT_CONFIG;
	if ((r = files_migrate(s->db)) != 0 || (r = snapshots_migrate(s->db)) != 0 ||
	    (r = sync_bind_server(s->a, s->db)) != 0 || (r = files_new(s->db, &s->files)) != 0 ||
	    (r = manifest_writer_new(&s->mw)) != 0 || (r = sync_inc_prepare(s, ch)) != 0) {
		agent_error("state database: %s", step_strerror(r));
		return AGENT_EXIT_FAIL;
	}
	if (agent_client(s->a, &c) != 0)
		return SYNC_EXIT_CONFIG;
	client_set_outage(c, SYNC_OUTAGE_MS);
	s->scan_c = c;
	t0 = util_now_s();
	if (!s->dry_run && (r = sync_verify_cache(s, c)) != 0)
		return sync_exit_for(s, r);
	if ((r = sync_scan_phase(s, &ex)) != 0)
		return r < 0 ? sync_exit_for(s, r) : ex;
	log_info("scanned '%s' in %.3f s: %" PRIu64 " files hashed, %" PRIu64 " to send", s->root,
	    util_now_s() - t0, s->hashed, s->pending);
	if (s->held > 0)
		log_info("'%s': %" PRIu64 " files gone from the tree are held back (kept in the "
		         "snapshot)",
		    s->root, s->held);
	return job_finish(s, c, h, unchangedp);
}

int
sync_run(const struct sync_opts *o, const struct sync_changes *ch, struct sync_result *res)
{
	struct sync_job *s = job_new(o);
	struct manifest_header h;
	int unchanged = 0, ex;

	memset(res, 0, sizeof(*res));
	memset(&h, 0, sizeof(h));
	ex = job_run(s, ch, &h, &unchanged);
	if (ex == SYNC_HOLD_AGAIN) {
		log_info("'%s': %" PRIu64 " of %" PRIu64 " known files are gone: holding the "
		         "deletions back",
		    s->root, s->known - s->found, s->known);
		job_free(s);
		s = job_new(o);
		s->holding = 1;
		ex = job_run(s, NULL, &h, &unchanged);
		if (ex == SYNC_HOLD_AGAIN) /* not reached: a holding run does not ask */
			ex = SYNC_EXIT_MASSDEL;
	}
	job_result(s, h.seq != 0 ? &h : NULL, res);
	res->unchanged = unchanged;
	res->exit_status = ex;
	res->incremental = s->inc;
	res->dirs_reused = s->dirs_reused;
	res->held = s->held;
	/* A run that failed after its scan leaves trees it may not have sent: the next run
	 * reads the whole tree. */
	if (ex != AGENT_EXIT_OK && ex != SYNC_EXIT_INCOMPLETE && !o->dry_run && s->files != NULL)
		(void)files_dirtree_clear(s->files, s->name);
	job_free(s);
	if (!o->dry_run && (ex == AGENT_EXIT_OK || ex == SYNC_EXIT_INCOMPLETE))
		sync_hold_note(o->a, o->name, o->root, res->held);
	if (!o->dry_run)
		agent_record_run(o->a, o->name, ex); /* for `stepsync status` (db/runs.h) */
	return ex;
}

/* The state database path, as agent_db() will choose it (for the lock next to it). */
int
sync_state_path(struct agent *a, char *out, size_t outlen)
{
	if (a->state_path != NULL) {
		if (strlen(a->state_path) >= outlen)
			return STEP_ETOOBIG;
		snprintf(out, outlen, "%s", a->state_path);
		return 0;
	}
	return config_default_state_path(out, outlen);
}
