/*
 * sync_server.c — the sync engine and the server: the state bound to one server, the objects
 * cache checked against the store, the snapshot record.
 */
#include "sync_int.h"

/* What the snapshot holds, from its trees (an incremental run reads part of the tree). */
static void
snapshot_counts(const struct sync_job *s, struct manifest_header *h)
{
	h->files = s->counts.files;
	h->dirs = s->counts.dirs;
	h->symlinks = s->counts.symlinks;
	h->bytes = s->counts.bytes;
}

/* The snapshot's digest in the state (snapshots.h): the first 128 bits of its root tree's
 * id, which says "same tree" for every entry's name, type, metadata and content. */
static const char *
root_digest(struct sync_job *s)
{
	char hex[2 * HASH_SHA256_LEN + 1];

	hash_to_hex(s->root_id, HASH_SHA256_LEN, hex);
	memcpy(s->digest, hex, 32);
	s->digest[32] = '\0';
	return s->digest;
}

/*
 * With --skip-unchanged, a run whose tree is exactly the latest snapshot's (same
 * manifest entries, by digest) records no new one: that snapshot, still on the server
 * and still the latest there, is the backup of this tree. 1 and *h (that snapshot) when so, 0 when
 * a snapshot must be recorded, or an error.
 */
int
sync_snapshot_unchanged(struct sync_job *s, struct client *c, struct manifest_header *h)
{
	struct snapshots_rec rec;
	uint64_t local = 0, latest = 0;
	int r;

	if (!s->skip_unchanged || s->upload_failed > 0 || s->read_errors > 0)
		return 0;
	if ((r = snapshots_latest(s->db, s->name, &local)) != 0)
		return r;
	if (local == 0 || snapshots_get(s->db, s->name, local, &rec) != 0 ||
	    strcmp(rec.digest, root_digest(s)) != 0)
		return 0;
	if ((r = snapshot_latest(c, s->name, local, &latest)) != 0) {
		sync_set_fatal(s, r, "cannot find the latest snapshot", client_error(c));
		return r;
	}
	if (latest != local)
		return 0; /* pruned away, or another machine recorded one since */
	if ((r = snapshot_exists(c, s->name, local)) != 1) {
		if (r < 0)
			sync_set_fatal(s, r, "cannot find the latest snapshot", client_error(c));
		return r;
	}
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", s->name);
	h->seq = local;
	h->time = rec.time;
	snapshot_counts(s, h);
	return 1;
}

/* Step 5: the snapshot record (format 2: it names the root tree) under a new seq, then
 * its DATA record, then the local record. */
int
sync_record_snapshot(struct sync_job *s, struct client *c, struct manifest_header *h)
{
	char key[MANIFEST_KEY_MAX + 1];
	struct snapshot_record sr;
	struct snapshots_rec rec;
	struct client_result res;
	struct buf out;
	uint64_t local = 0, latest = 0;
	int r, attempt;

	buf_init(&out, 1u << 20);
	if ((r = snapshots_latest(s->db, s->name, &local)) != 0)
		return r;
	if ((r = snapshot_latest(c, s->name, local, &latest)) != 0) {
		sync_set_fatal(s, r, "cannot find the latest snapshot", client_error(c));
		return r;
	}
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", s->name);
	h->time = util_wall_s();
	h->seq = (latest > local ? latest : local) + 1;
	snapshot_counts(s, h);
	memset(&sr, 0, sizeof(sr));
	snprintf(sr.name, sizeof(sr.name), "%s", s->name);
	memcpy(sr.root, s->root_id, sizeof(sr.root));
	sr.time = h->time;
	sr.files = h->files;
	sr.dirs = h->dirs;
	sr.symlinks = h->symlinks;
	sr.bytes = h->bytes;
	for (attempt = 0; attempt < 5; attempt++, h->seq++) {
		sr.seq = h->seq;
		out.len = 0;
		if ((r = snapshot_record_encode(&sr, &out)) != 0 ||
		    (r = manifest_snapshot_key(s->name, h->seq, key, sizeof(key))) != 0)
			goto out;
		r = client_put_mem(c, buf_ptr(&out), out.len, key, 0, &res);
		if (r != STEP_EEXIST)
			break;
		/* Someone else recorded this seq meanwhile: take the next one. */
		log_info("snapshot key '%s' already exists; trying the next seq", key);
	}
	if (r != 0) {
		sync_set_fatal(s, r, "cannot upload the snapshot record", client_error(c));
		goto out;
	}
	memset(&rec, 0, sizeof(rec));
	snprintf(rec.digest, sizeof(rec.digest), "%s", root_digest(s));
	rec.seq = h->seq;
	rec.time = h->time;
	rec.files = h->files;
	rec.dirs = h->dirs;
	rec.symlinks = h->symlinks;
	rec.bytes = h->bytes;
	r = snapshot_info_save(c, s->name, &rec);
	if (r != 0 && r != STEP_EEXIST) {
		sync_set_fatal(s, r, "cannot save the snapshot record", client_error(c));
		goto out;
	}
	r = snapshots_put(s->db, s->name, &rec);
out:
	buf_release(&out);
	return r;
}

/* Ties the state to this server and user; another one makes every object unknown. */
int
sync_bind_server(const struct agent *a, struct db *db)
{
	char id[sizeof(a->host) + 300];
	int changed = 0, r;

	snprintf(id, sizeof(id), "%.255s@%s:%d", a->user != NULL ? a->user : "", a->host, a->port);
	r = server_id_bind(db, id, &changed);
	if (r == 0 && changed)
		log_info("the state was used with another server or user: every object is "
		         "checked again on %s",
		    id);
	return r;
}

/* Replaces the objects cache with what the server lists (o.* keys); chunk lists are
 * forgotten too, so their files are read again and any missing chunk sent. */
static int
reconcile_by_list(struct sync_job *s, struct client *c)
{
	char **keys = NULL, **tkeys = NULL;
	sqlite3_stmt *ins = NULL;
	size_t n = 0, nt = 0, i;
	int r, rc;

	if ((r = client_list(c, "o.", &keys, &n)) != 0 ||
	    (r = client_list(c, "t.", &tkeys, &nt)) != 0) {
		sync_set_fatal(s, r, "cannot list the objects on the server", client_error(c));
		client_keys_free(keys, n);
		return r;
	}
	keys = xrealloc(keys, (n + nt + 1) * sizeof(*keys));
	memcpy(keys + n, tkeys, nt * sizeof(*keys));
	n += nt;
	free(tkeys);
	if ((r = db_begin(s->db)) != 0)
		goto out;
	r = db_exec(s->db,
	    "CREATE TEMP TABLE IF NOT EXISTS srv_keys(k TEXT PRIMARY KEY);"
	    "DELETE FROM temp.srv_keys;");
	if (r == 0 &&
	    (rc = sqlite3_prepare_v2(db_handle(s->db),
	         "INSERT OR IGNORE INTO temp.srv_keys VALUES(?)", -1, &ins, NULL)) != SQLITE_OK)
		r = db_err(rc);
	for (i = 0; r == 0 && i < n; i++) {
		sqlite3_bind_text(ins, 1, keys[i], -1, SQLITE_STATIC);
		rc = sqlite3_step(ins);
		sqlite3_reset(ins);
		if (rc != SQLITE_DONE)
			r = db_err(rc);
	}
	if (r == 0)
		r = db_exec(s->db,
		    "DELETE FROM objects WHERE substr(okey, 1, 2) NOT IN ('o.', 't.') OR okey NOT "
		    "IN (SELECT k FROM temp.srv_keys);"
		    "INSERT OR IGNORE INTO objects(okey, size, md5, t) SELECT k, 0, '',"
		    " strftime('%s', 'now') FROM temp.srv_keys;"
		    "DELETE FROM temp.srv_keys;");
	if (r == 0 && s->has_gen)
		r = server_id_store_set(s->db, s->store_id, s->gen0);
	sqlite3_finalize(ins);
	ins = NULL;
	if (r == 0)
		r = db_commit(s->db);
	else
		db_rollback(s->db);
out:
	client_keys_free(keys, n);
	return r;
}

/*
 * The objects cache is a hint (a store can be replaced, another client can delete): it is
 * trusted only while the server says nothing was deleted since it was last confirmed
 * (stepd's objgen: same store id, same generation). Otherwise it is replaced by the
 * server's listing (LIST), or, on a server that can do neither, forgotten: every object
 * is then confirmed by its upload (SAVE answers 402 for what is there; its MD5 is
 * compared). 0 or an error (sync_set_fatal'd).
 */
int
sync_verify_cache(struct sync_job *s, struct client *c)
{
	char old[65];
	int64_t oldgen;
	int r;

	if ((r = client_connect(c)) != 0) {
		sync_set_fatal(s, r, "cannot log in", client_error(c));
		return r;
	}
	if (client_has_ext(c, "objgen") &&
	    client_store_gen(c, 0, s->store_id, sizeof(s->store_id), &s->gen0) == 0) {
		s->has_gen = 1;
		if ((r = server_id_store_get(s->db, old, sizeof(old), &oldgen)) != 0)
			return r;
		if (strcmp(old, s->store_id) == 0 && oldgen == s->gen0)
			return 0;
		log_info("objects may have been deleted on the server since the last run "
		         "(store %s, generation %lld, was %s %lld): checking",
		    s->store_id, (long long)s->gen0, old[0] ? old : "none", (long long)oldgen);
		return reconcile_by_list(s, c);
	}
	if (client_has_ext(c, "list"))
		return reconcile_by_list(s, c);
	log_info("the server cannot say what it holds cheaply: every object is confirmed by its "
	         "upload");
	return db_exec(s->db, "DELETE FROM objects");
}

/* Takes back snapshot h (its record, DATA record and row): 0 or a client error. */
static int
take_back(struct sync_job *s, struct client *c, const struct manifest_header *h)
{
	char key[MANIFEST_KEY_MAX + 1];
	int r;

	if ((r = manifest_snapshot_key(s->name, h->seq, key, sizeof(key))) != 0)
		return r;
	if ((r = client_file_delete(c, key)) != 0 && r != STEP_ENOENT)
		return r;
	if ((r = snapshot_info_delete(c, s->name, h->seq)) != 0)
		return r;
	snapshots_delete(s->db, s->name, h->seq);
	return 0;
}

/*
 * After snapshot h is recorded: nothing may have been deleted since this run began, or h
 * is taken back. A prune moves the generation before it reads the snapshots that stay
 * (cmd_prune.c), so a snapshot it did not read is one recorded after that move, which
 * this check finds unless this run began after the move too; prune reads those after its
 * deletions (recheck_late). Only a run killed before taking back escapes both.
 */
int
sync_check_generation(struct sync_job *s, struct client *c, struct manifest_header *h)
{
	char sid[65], why[256];
	int64_t gen;
	int r;

	if (!s->has_gen)
		return 0;
	if ((r = client_store_gen(c, 1, sid, sizeof(sid), &gen)) != 0) {
		sync_set_fatal(s, r, "cannot log in", client_error(c));
		return r;
	}
	if (strcmp(sid, s->store_id) == 0 && gen == s->gen0)
		return 0;
	if ((r = take_back(s, c, h)) != 0) {
		snprintf(why, sizeof(why),
		    "objects were deleted on the server while this run went on (a prune?), and "
		    "snapshot #%" PRIu64 " could not be taken back (%s): run 'stepsync check'",
		    h->seq, client_error(c));
		sync_set_fatal(s, r, "snapshot may be incomplete", why);
		return r;
	}
	log_info("snapshot #%" PRIu64 " taken back: objects were deleted meanwhile", h->seq);
	h->seq = 0;
	sync_set_fatal(s, STEP_EBUSY, "no snapshot recorded",
	    "objects were deleted on the server while this run went on (a prune?); the next "
	    "run checks every object again");
	return STEP_EBUSY;
}
