/*
 * cmd_prune.c — `stepsync prune --keep-last/--keep-daily/... N`: delete the snapshots of
 * a NAME that no keep rule keeps (retention.h), then the objects no remaining snapshot
 * references.
 *
 * Safety rules: a non-empty policy always keeps the newest snapshot; snapshots are
 * deleted oldest first; an object is deleted only when it is referenced by a
 * deleted snapshot and by no remaining snapshot of any NAME this agent can see (every
 * manifest on a server with LIST; else this NAME, the config's [dir]s and the names in
 * the state database). Runs under the same lock as sync, so no sync of this state can
 * be between "object uploaded" and "manifest recorded" meanwhile.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "client.h"
#include "cmd.h"
#include "config.h"
#include "db.h"
#include "err.h"
#include "files.h"
#include "lock.h"
#include "log.h"
#include "manifest.h"
#include "prune.h"
#include "retention.h"
#include "snapshot.h"
#include "snapshots.h"
#include "treewalk.h"
#include "util.h"

struct prune_run {
	struct agent *a;
	struct client *c;
	struct db *db;
	sqlite3_stmt *ins_keep, *ins_cand;
	sqlite3_stmt *ins_snap; /* the snapshot keys collect() has read (prune_snaps) */
	sqlite3_stmt *ins;      /* the table a format-2 walk fills (one of the two above) */
	sqlite3_stmt *has_keep; /* is a key in prune_keep? */
	int err;                /* a database error in a walk callback */
	int log_removed;        /* log_info() each deleted snapshot */
	int orphans;            /* look for orphans (mark_orphans) */
	int always_mark;        /* ... even when no snapshot goes (the command) */
	int64_t grace;          /* orphans committed less than this long ago stay (seconds) */
	uint64_t young;         /* orphans left for being younger than grace */
	int listed;             /* mark_orphans listed the objects */
	int quiet;              /* collect() says nothing (recheck_late judges its failures) */
	int fenced;             /* fence() moved the generation */
	sqlite3_stmt *ins_late; /* prune_late: what one late snapshot references */
	struct manifest_entry e;
};

/* Inserts key through ins: 1 when it was new, 0 when there already, or an error. */
static int
insert_key(struct prune_run *p, sqlite3_stmt *ins, const char *key)
{
	int rc;

	sqlite3_bind_text(ins, 1, key, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(ins);
	sqlite3_reset(ins);
	if (rc != SQLITE_DONE)
		return db_err(rc);
	return sqlite3_changes(db_handle(p->db)) > 0;
}

/* 1 when key is in prune_keep, 0 when not, or a database error. */
static int
is_kept(struct prune_run *p, const char *key)
{
	int rc;

	sqlite3_bind_text(p->has_keep, 1, key, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(p->has_keep);
	sqlite3_reset(p->has_keep);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : db_err(rc);
}

/* Format 2: a tree is walked once per table; below a tree in prune_keep, everything is
 * kept, so a candidate walk stops there. */
static int
walk_seen(void *arg, const uint8_t id[HASH_SHA256_LEN])
{
	struct prune_run *p = arg;
	char key[MANIFEST_KEY_MAX + 1];
	int r;

	manifest_tree_key(id, key, sizeof(key));
	if (p->ins == p->ins_cand && is_kept(p, key) == 1)
		return 1;
	if ((r = insert_key(p, p->ins, key)) < 0) {
		p->err = r;
		return 1;
	}
	return r == 0;
}

static int
walk_entry(void *arg, const char *path, const struct tree_entry *e, int leave)
{
	struct prune_run *p = arg;
	char key[MANIFEST_KEY_MAX + 1];
	size_t i;
	int r;

	if (p->err != 0)
		return p->err;
	for (i = 0; e->type == TREE_FILE && !leave && i < e->nchunks; i++) {
		manifest_object_key(e->chunks[i].id, key, sizeof(key));
		if ((r = insert_key(p, p->ins, key)) < 0)
			return r;
	}
	return 0;
}

/* Adds every object key of manifest key to the table behind ins (once: a snapshot read
 * already is skipped). */
static int
collect(struct prune_run *p, const char *key, sqlite3_stmt *ins)
{
	struct manifest_reader *rd = NULL;
	struct manifest_header h;
	struct snapshot_record rec;
	char errbuf[512];
	FILE *f = NULL;
	int r, rc, fmt = 1;

	if ((r = insert_key(p, p->ins_snap, key)) <= 0)
		return r;
	if ((r = snapshot_fetch_any(p->c, key, &fmt, &f, &rec)) != 0) {
		if (!p->quiet)
			agent_error("cannot download snapshot '%s': %s; nothing deleted", key,
			    r == STEP_ESYS         ? strerror(errno)
			        : r == STEP_EPROTO ? "not a valid snapshot record"
			                           : client_error(p->c));
		return r;
	}
	if (fmt == 2) {
		p->ins = ins;
		p->err = 0;
		r = treewalk(p->c, rec.root, walk_entry, walk_seen, p, errbuf, sizeof(errbuf));
		if (r == 0)
			r = p->err;
		if (r != 0 && !p->quiet)
			agent_error("snapshot '%s': %s; nothing deleted", key,
			    *errbuf ? errbuf : step_strerror(r));
		return r;
	}
	if ((r = manifest_reader_new(f, &h, &rd)) != 0) {
		agent_error("manifest '%s' is not valid; nothing deleted", key);
		goto out;
	}
	while ((r = manifest_reader_next(rd, &p->e)) == 1) {
		if (p->e.key[0] == '\0')
			continue;
		sqlite3_bind_text(ins, 1, p->e.key, -1, SQLITE_STATIC);
		rc = sqlite3_step(ins);
		sqlite3_reset(ins);
		if (rc != SQLITE_DONE) {
			r = db_err(rc);
			goto out;
		}
	}
	if (r < 0)
		agent_error("manifest '%s' is not valid (line %ld); nothing deleted", key,
		    manifest_reader_line(rd));
out:
	manifest_reader_free(rd);
	fclose(f);
	return r;
}

/* Keep set from another NAME's manifests (all of them). */
static int
keep_name(struct prune_run *p, const char *name)
{
	char key[MANIFEST_KEY_MAX + 1];
	uint64_t *seqs = NULL;
	size_t n = 0, i;
	int r;

	if ((r = snapshot_list(p->c, name, &seqs, &n)) != 0)
		return r;
	for (i = 0; i < n && r == 0; i++)
		if (manifest_snapshot_key(name, seqs[i], key, sizeof(key)) == 0)
			r = collect(p, key, p->ins_keep);
	free(seqs);
	return r;
}

/* Keep set from everything but name's deleted range. */
static int
keep_others(struct prune_run *p, const char *name)
{
	char prefix[MANIFEST_KEY_MAX + 1];
	char **keys = NULL;
	sqlite3_stmt *st = NULL;
	size_t n = 0, i;
	int r = 0;

	if (client_has_ext(p->c, "list")) {
		manifest_snapshot_prefix(name, prefix, sizeof(prefix));
		if ((r = client_list(p->c, "s.", &keys, &n)) != 0)
			return r;
		for (i = 0; i < n && r == 0; i++)
			if (strncmp(keys[i], prefix, strlen(prefix)) != 0)
				r = collect(p, keys[i], p->ins_keep);
		client_keys_free(keys, n);
		return r;
	}
	for (i = 0; p->a->cfg != NULL && i < p->a->cfg->ndirs && r == 0; i++)
		if (strcmp(p->a->cfg->dirs[i].name, name) != 0)
			r = keep_name(p, p->a->cfg->dirs[i].name);
	if (r != 0)
		return r;
	if (sqlite3_prepare_v2(db_handle(p->db), "SELECT DISTINCT name FROM snapshots", -1, &st,
	        NULL) != SQLITE_OK)
		return STEP_EIO;
	while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
		const char *other = (const char *)sqlite3_column_text(st, 0);

		if (strcmp(other, name) != 0 && config_find_dir(p->a->cfg, other) == NULL)
			r = keep_name(p, other);
	}
	sqlite3_finalize(st);
	return r;
}

/* Deletes what the pruned snapshots referenced and no remaining one does (prune_gone:
 * prune_cand minus prune_keep), forgetting each first. 0 and *nobjp, or an error (said). */
static int
sweep(struct prune_run *p, uint64_t *nobjp)
{
	struct files *fs = NULL;
	sqlite3_stmt *st = NULL;
	int r;

	*nobjp = 0;
	if ((r = files_new(p->db, &fs)) != 0)
		goto dberr;
	if (sqlite3_prepare_v2(
	        db_handle(p->db), "SELECT okey FROM temp.prune_gone", -1, &st, NULL) != SQLITE_OK) {
		r = STEP_EIO;
		goto dberr;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *ok = (const char *)sqlite3_column_text(st, 0);

		/* Forget it first: a later sync must never trust an object that may be gone. */
		files_object_forget(fs, ok);
		r = client_file_delete(p->c, ok);
		if (r != 0 && r != STEP_ENOENT) {
			agent_error("cannot delete object '%s': %s", ok, client_error(p->c));
			goto out;
		}
		(*nobjp)++;
	}
	/* A chunk list counts as known only while all its chunks are: after deletions, the
	 * next sync reads large files again (and sends what is missing). */
	r = 0;
	if (*nobjp > 0 &&
	    (r = db_exec(p->db, "DELETE FROM objects WHERE substr(okey, 1, 2) = 'c.'")) != 0)
		goto dberr;
	goto out;
dberr:
	agent_error("state database: %s", db_errmsg(p->db));
out:
	sqlite3_finalize(st);
	files_free(fs);
	return r;
}

/* The snapshots of name with their times (the server's DATA record, the truth for every
 * agent, else this state's; 0 when neither has one) in *snapsp. 0 or a client error. */
static int
list_snaps(struct prune_run *p, const char *name, struct retention_snap **snapsp, size_t *np)
{
	struct retention_snap *v;
	struct snapshots_rec rec;
	uint64_t *seqs = NULL;
	size_t n = 0, i;
	int r;

	if ((r = snapshot_list(p->c, name, &seqs, &n)) != 0)
		return r;
	v = xcalloc(n ? n : 1, sizeof(*v));
	for (i = 0; i < n; i++) {
		v[i].seq = seqs[i];
		r = snapshot_info_get(p->c, name, seqs[i], &rec);
		if (r == 0 && rec.time > 0)
			v[i].time = rec.time;
		else if (r != 0 && r != STEP_ENOENT)
			break;
		else if (snapshots_get(p->db, name, seqs[i], &rec) == 0)
			v[i].time = rec.time;
		r = 0;
	}
	free(seqs);
	if (r != 0) {
		free(v);
		return r;
	}
	*snapsp = v;
	*np = n;
	return 0;
}

static int
by_seq(const void *a, const void *b)
{
	const struct retention_snap *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* "daily,monthly" for the rules that keep s (or "unknown time"). */
static void
reasons_str(const struct retention_snap *s, char *out, size_t outlen)
{
	size_t len = 0;
	int r;

	out[0] = '\0';
	if (s->reasons & KEEP_UNKNOWN_TIME)
		snprintf(out, outlen, "unknown time");
	for (r = 0; r < KEEP_NRULES; r++)
		if ((s->reasons & (1u << r)) && len < outlen)
			len += (size_t)snprintf(out + len, outlen - len, "%s%s", len ? "," : "",
			    retention_rule_name(r));
}

/* Prints (stderr with --json, else stdout) and returns as JSON what the policy keeps and
 * deletes; s is sorted by seq. */
static json_t *
report_plan(
    struct prune_run *p, const char *name, const struct retention_snap *s, size_t n, int dry_run)
{
	FILE *out = stdout; /* stderr with --json (agent_json_claim_stdout) */
	json_t *keep = json_array(), *del = json_array();
	char when[32], why[96];
	size_t i;

	for (i = 0; i < n; i++) {
		agent_fmt_time(s[i].time, when, sizeof(when));
		reasons_str(&s[i], why, sizeof(why));
		if (dry_run || p->a->verbose > 0)
			fprintf(out, "%s %s#%" PRIu64 "  %s%s%s\n",
			    s[i].reasons ? "keep  " : (dry_run ? "would delete" : "delete"), name,
			    s[i].seq, when, s[i].reasons ? "  " : "", why);
		json_array_append_new(s[i].reasons ? keep : del,
		    s[i].reasons
		        ? json_pack("{s:I, s:s, s:s}", "id", (json_int_t)s[i].seq, "time", when,
		              "reasons", why)
		        : json_pack("{s:I, s:s}", "id", (json_int_t)s[i].seq, "time", when));
	}
	return json_pack("{s:o, s:o}", "kept", keep, "deleted", del);
}

/* client_list_each callback: an object or tree key committed at least grace before the
 * server's clock becomes a candidate (kept if a snapshot references it). */
static int
orphan_add(void *arg, const char *key, int64_t mtime, int64_t now)
{
	struct prune_run *p = arg;
	int r;

	if (!manifest_is_object_key(key) && !manifest_is_tree_key(key))
		return 0; /* not sync's: a put's key of the same prefix */
	if ((r = is_kept(p, key)) != 0)
		return r < 0 ? (p->err = r) : 0; /* referenced, or a database error */
	if (mtime > now - p->grace) {
		p->young++;
		return 0;
	}
	if ((r = insert_key(p, p->ins_cand, key)) < 0)
		return p->err = r;
	return 0;
}

/* Whether the server lets prune find orphans safely (mark_orphans). */
static int
orphans_listable(struct prune_run *p)
{
	return client_has_ext(p->c, "list_mtime") && client_has_ext(p->c, "objgen");
}

/*
 * Orphans: objects and trees no snapshot ever referenced (a run stopped before its
 * snapshot, the chunks of a file that changed while read). Listed only where the server
 * gives each object's commit time (list_mtime) and its deletions a generation (objgen):
 * what a backup running now has just uploaded is younger than the grace period, and a
 * backup whose older objects go meanwhile records no snapshot (sync_check_generation).
 */
static int
mark_orphans(struct prune_run *p)
{
	int r;

	if (!p->orphans || !orphans_listable(p))
		return 0;
	p->young = 0;
	p->listed = 1;
	p->err = 0;
	if ((r = client_list_each(p->c, "o.", 1, orphan_add, p)) == 0)
		r = client_list_each(p->c, "t.", 1, orphan_add, p);
	if (r != 0)
		agent_error("cannot list the objects: %s; nothing deleted",
		    p->err != 0 ? db_errmsg(p->db) : client_error(p->c));
	return r;
}

/* Fills the temp tables prune_keep (what stays referenced) and prune_cand (what the
 * deleted snapshots referenced). */
static int
mark(struct prune_run *p, const char *name, const struct retention_snap *s, size_t n)
{
	char key[MANIFEST_KEY_MAX + 1];
	size_t i;
	int r;

	if ((r = db_exec(p->db,
	         "CREATE TEMP TABLE IF NOT EXISTS prune_keep(okey TEXT PRIMARY KEY);"
	         "CREATE TEMP TABLE IF NOT EXISTS prune_cand(okey TEXT PRIMARY KEY);"
	         "CREATE TEMP TABLE IF NOT EXISTS prune_snaps(okey TEXT PRIMARY KEY);"
	         "CREATE TEMP TABLE IF NOT EXISTS prune_late(okey TEXT PRIMARY KEY);"
	         "CREATE TEMP VIEW IF NOT EXISTS prune_gone AS SELECT okey FROM temp.prune_cand"
	         " WHERE okey NOT IN (SELECT okey FROM temp.prune_keep);"
	         "DELETE FROM temp.prune_keep; DELETE FROM temp.prune_cand;"
	         "DELETE FROM temp.prune_snaps;")) != 0)
		return r;
	if (sqlite3_prepare_v2(db_handle(p->db), "INSERT OR IGNORE INTO temp.prune_keep VALUES(?)",
	        -1, &p->ins_keep, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db_handle(p->db), "INSERT OR IGNORE INTO temp.prune_cand VALUES(?)",
	        -1, &p->ins_cand, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db_handle(p->db), "INSERT OR IGNORE INTO temp.prune_snaps VALUES(?)",
	        -1, &p->ins_snap, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db_handle(p->db), "INSERT OR IGNORE INTO temp.prune_late VALUES(?)",
	        -1, &p->ins_late, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db_handle(p->db), "SELECT 1 FROM temp.prune_keep WHERE okey = ?", -1,
	        &p->has_keep, NULL) != SQLITE_OK) {
		agent_error("state database: %s", db_errmsg(p->db));
		return STEP_EIO;
	}
	for (i = 0; i < n; i++) {
		manifest_snapshot_key(name, s[i].seq, key, sizeof(key));
		if (s[i].reasons && (r = collect(p, key, p->ins_keep)) != 0)
			return r;
	}
	if ((r = keep_others(p, name)) != 0) {
		agent_error(
		    "cannot read the other snapshots: %s; nothing deleted", client_error(p->c));
		return r;
	}
	for (i = 0; i < n; i++) {
		manifest_snapshot_key(name, s[i].seq, key, sizeof(key));
		if (!s[i].reasons && (r = collect(p, key, p->ins_cand)) != 0)
			return r;
	}
	return mark_orphans(p);
}

/* The key prune puts and deletes to move the generation (no snapshot, chunk or tree key
 * has this shape). */
#define PRUNE_FENCE_KEY "x.stepsync-prune-fence"

/* The answer of a "SELECT EXISTS(...)": 1, 0, or a database error. */
static int
sql_exists(struct prune_run *p, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(db_handle(p->db), sql, -1, &st, NULL) != SQLITE_OK)
		return STEP_EIO;
	rc = sqlite3_step(st);
	rc = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : db_err(rc);
	sqlite3_finalize(st);
	return rc;
}

/* 1 when prune_cand holds a key prune_keep does not (something is to be deleted). */
static int
have_unreferenced(struct prune_run *p)
{
	return sql_exists(p, "SELECT EXISTS(SELECT 1 FROM temp.prune_gone)");
}

/*
 * Before anything is deleted, where the server counts deletions (objgen): the generation
 * is moved (an object put and deleted), then every snapshot recorded since the marking
 * began is marked too. A sync takes its snapshot back when the generation moved while it
 * ran (sync_check_generation, after recording), so a snapshot recorded after this move
 * stays only when its sync began after it too (recheck_late reads those after the
 * deletions), and one recorded before it is read here. 0 or an error (said).
 */
static int
fence(struct prune_run *p, size_t ndel)
{
	struct client_result res;
	char **keys = NULL;
	size_t n = 0, i;
	int r;

	if (!client_has_ext(p->c, "objgen"))
		return 0;
	if (ndel == 0 && (r = have_unreferenced(p)) <= 0)
		return r < 0 ? r : 0; /* nothing to delete: the generation stays */
	r = client_put_mem(p->c, "f", 1, PRUNE_FENCE_KEY, CLIENT_PUT_NO_STATE, &res);
	if ((r != 0 && r != STEP_EEXIST) ||
	    ((r = client_file_delete(p->c, PRUNE_FENCE_KEY)) != 0 && r != STEP_ENOENT) ||
	    (r = client_list(p->c, "s.", &keys, &n)) != 0) {
		agent_error("cannot move the server's object generation: %s; nothing deleted",
		    client_error(p->c));
		return r;
	}
	p->fenced = 1;
	for (i = 0, r = 0; i < n && r == 0; i++)
		r = collect(p, keys[i], p->ins_keep); /* says what failed */
	client_keys_free(keys, n);
	return r;
}

/* 1 when the late snapshot just read (prune_late) uses something deleted. */
static int
late_uses_deleted(struct prune_run *p)
{
	return sql_exists(p,
	    "SELECT EXISTS(SELECT 1 FROM temp.prune_late WHERE okey IN "
	    "(SELECT okey FROM temp.prune_gone))");
}

/* Deletes late snapshot key (a broken one) and its DATA record, and says so. */
static int
drop_late(struct prune_run *p, const char *key)
{
	char ikey[MANIFEST_KEY_MAX + 1];
	int r;

	snprintf(ikey, sizeof(ikey), "i%s", key + 1);
	if (((r = client_file_delete(p->c, key)) != 0 && r != STEP_ENOENT) ||
	    ((r = client_data_delete(p->c, ikey)) != 0 && r != STEP_ENOENT)) {
		agent_error("snapshot '%s' uses objects this prune deleted and cannot be deleted: "
		            "%s; run 'stepsync check'",
		    key, client_error(p->c));
		return r;
	}
	log_warnx("snapshot '%s' was recorded while this prune deleted objects it uses: deleted "
	          "(the next sync of its name records a new one)",
	    key);
	return 0;
}

/*
 * After the deletions: a sync that began after the fence and checked the generation
 * before the first deletion keeps a snapshot prune has not read, which may use what was
 * deleted. Every snapshot not read yet is read now; one that uses a deleted object (or
 * whose trees are missing) is deleted, so none stays that points at nothing. A damaged
 * one is left and said (check reports it). 0 or an error (said).
 */
static int
recheck_late(struct prune_run *p)
{
	char **keys = NULL;
	size_t n = 0, i;
	int r;

	if (!p->fenced)
		return 0;
	if ((r = client_list(p->c, "s.", &keys, &n)) != 0) {
		agent_error("cannot list the snapshots after deleting: %s; run 'stepsync check'",
		    client_error(p->c));
		return r;
	}
	p->quiet = 1;
	for (i = 0; i < n && r == 0; i++) {
		if ((r = db_exec(p->db, "DELETE FROM temp.prune_late")) != 0)
			break;
		r = collect(p, keys[i], p->ins_late);
		if (r == STEP_ENOENT || (r == 0 && (r = late_uses_deleted(p)) == 1)) {
			r = drop_late(p, keys[i]); /* a tree gone, or a deleted key used */
		} else if (r == STEP_EMISMATCH || r == STEP_EPROTO) {
			log_warnx(
			    "snapshot '%s' was recorded while this prune ran and cannot be read "
			    "(damaged); left as it is: run 'stepsync check'",
			    keys[i]);
			r = 0;
		}
	}
	p->quiet = 0;
	client_keys_free(keys, n);
	return r;
}

/* Deletes the snapshots the policy does not keep (oldest first), then the objects nobody
 * references any more. *nsnapp and *nobjp count what went. */
static int
delete_unkept(struct prune_run *p, const char *name, const struct retention_snap *s, size_t n,
    uint64_t *nsnapp, uint64_t *nobjp)
{
	char key[MANIFEST_KEY_MAX + 1];
	size_t i, ndel = 0;
	int r;

	for (i = 0; i < n; i++)
		ndel += s[i].reasons == 0;
	if ((r = fence(p, ndel)) != 0)
		return r;
	agent_test_hold("STEPSYNC_TEST_HOLD_PRUNE");
	for (i = 0; i < n; i++) {
		if (s[i].reasons)
			continue;
		manifest_snapshot_key(name, s[i].seq, key, sizeof(key));
		if ((r = client_file_delete(p->c, key)) != 0 && r != STEP_ENOENT) {
			agent_error("cannot delete snapshot %s#%" PRIu64 ": %s", name, s[i].seq,
			    client_error(p->c));
			return r;
		}
		snapshots_delete(p->db, name, s[i].seq);
		if (p->log_removed)
			log_info("prune '%s': deleted snapshot #%" PRIu64, name, s[i].seq);
		(*nsnapp)++;
	}
	if ((r = sweep(p, nobjp)) != 0)
		return r;
	return recheck_late(p);
}

static int
prune_policy(struct prune_run *p, const char *name, const struct keep_policy *pol, int dry_run,
    struct prune_result *res)
{
	struct retention_snap *s = NULL;
	size_t n = 0, i, ndel = 0;
	int r;

	memset(res, 0, sizeof(*res));
	if ((r = list_snaps(p, name, &s, &n)) != 0) {
		agent_error("cannot list the snapshots of '%s': %s", name, client_error(p->c));
		return r;
	}
	retention_apply(pol, s, n);
	qsort(s, n, sizeof(*s), by_seq);
	for (i = 0; i < n; i++)
		ndel += s[i].reasons == 0;
	res->plan = report_plan(p, name, s, n, dry_run);
	res->kept = n - ndel;
	if ((ndel == 0 && !(p->always_mark && p->orphans && orphans_listable(p))) || dry_run) {
		res->would_delete = ndel;
		goto out;
	}
	if ((r = mark(p, name, s, n)) == 0)
		r = delete_unkept(p, name, s, n, &res->deleted_snapshots, &res->deleted_objects);
	res->young_objects = p->young;
	res->orphans_listed = p->listed;
out:
	sqlite3_finalize(p->ins_keep);
	sqlite3_finalize(p->ins_cand);
	sqlite3_finalize(p->has_keep);
	sqlite3_finalize(p->ins_snap);
	sqlite3_finalize(p->ins_late);
	p->ins_keep = p->ins_cand = p->has_keep = p->ins_snap = p->ins_late = NULL;
	free(s);
	return r;
}

/* The command's summary line and JSON document for one name. */
static int
prune_name(struct prune_run *p, const char *name, const struct keep_policy *pol, int dry_run)
{
	struct prune_result res;
	char polstr[128];
	int r;

	retention_format(pol, polstr, sizeof(polstr));
	r = prune_policy(p, name, pol, dry_run, &res);
	if (r != 0) {
		json_decref(res.plan);
		r = r < 0 ? snapshot_exit_code(r) : AGENT_EXIT_FAIL;
		return agent_json_error(p->a, "prune", client_error(p->c), r);
	}
	if (dry_run)
		printf("prune '%s' (%s), dry run: would delete %zu %s, keep %zu\n", name, polstr,
		    res.would_delete, agent_plural(res.would_delete, "snapshot", "snapshots"),
		    res.kept);
	else
		printf("prune '%s' (%s): deleted %" PRIu64 " %s and %" PRIu64
		       " unreferenced %s; kept %zu %s\n",
		    name, polstr, res.deleted_snapshots,
		    agent_plural(res.deleted_snapshots, "snapshot", "snapshots"),
		    res.deleted_objects, agent_plural(res.deleted_objects, "object", "objects"),
		    res.kept, agent_plural(res.kept, "snapshot", "snapshots"));
	if (!dry_run && res.young_objects > 0)
		printf("prune '%s': %" PRIu64 " unreferenced %s younger than --grace (%" PRId64
		       " s) left for a later prune\n",
		    name, res.young_objects, agent_plural(res.young_objects, "object", "objects"),
		    p->grace);
	if (p->a->json) {
		json_object_set_new(res.plan, "command", json_string("prune"));
		json_object_set_new(res.plan, "name", json_string(name));
		json_object_set_new(res.plan, "policy", json_string(polstr));
		json_object_set_new(res.plan, "dry_run", json_boolean(dry_run));
		json_object_set_new(
		    res.plan, "deleted_snapshots", json_integer((json_int_t)res.deleted_snapshots));
		json_object_set_new(
		    res.plan, "deleted_objects", json_integer((json_int_t)res.deleted_objects));
		json_object_set_new(
		    res.plan, "young_objects", json_integer((json_int_t)res.young_objects));
		agent_json(p->a, json_incref(res.plan));
	}
	json_decref(res.plan);
	return AGENT_EXIT_OK;
}

int
prune_apply(struct agent *a, struct client *c, struct db *db, const char *name,
    const struct keep_policy *pol, int dry_run, int log_removed, int orphans,
    struct prune_result *res)
{
	struct prune_run *p = xcalloc(1, sizeof(*p));
	int r;

	p->a = a;
	p->c = c;
	p->db = db;
	p->log_removed = log_removed;
	p->orphans = orphans;
	p->grace = PRUNE_GRACE_DEFAULT;
	r = prune_policy(p, name, pol, dry_run, res);
	free(p);
	return r;
}

/* The policy from the options, else from the config's [dir] of name. 0, or a usage exit. */
static int
pick_policy(struct agent *a, const char *name, struct keep_policy *pol)
{
	const struct config_dir *d;

	if (!retention_empty(pol))
		return 0;
	d = config_find_dir(a->cfg, name);
	if (d != NULL && d->keep != NULL) {
		char err[256];

		if (retention_parse(d->keep, pol, err, sizeof(err)) == 0)
			return 0;
		agent_error("[dir \"%s\"] %s", name, err);
		return SYNC_EXIT_CONFIG;
	}
	agent_error("prune: no keep rule; give --keep-last/--keep-daily/... or set "
	            "'keep = ...' in the [dir \"%s\"] section",
	    name);
	return AGENT_EXIT_USAGE;
}

static const char prune_usage[] =
    "prune [--name NAME] [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
    "       [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--grace TIME]\n"
    "       [--dry-run]";

static void
prune_help(void)
{
	printf("usage: stepsync %s\n\n"
	       "Deletes NAME's snapshots that no keep rule keeps, then the objects that no\n"
	       "remaining snapshot of any NAME references. Rules as restic's forget: the\n"
	       "newest N snapshots (last), and the newest snapshot of each of the newest N\n"
	       "hours, days, ISO weeks, months and years (local time) that have one; a\n"
	       "snapshot kept by any rule stays, and so does one of unknown time. Without\n"
	       "options, the rules of 'keep = last=N daily=N ...' in the config's [dir NAME].\n"
	       "On stepd (list_mtime and objgen), objects and trees that no snapshot\n"
	       "references at all (left by an interrupted run, or by a file that changed\n"
	       "while read) are deleted too once older than the grace period; a backup\n"
	       "running meanwhile whose older objects go records no snapshot (its next run\n"
	       "sends them again).\n\n"
	       "  --name NAME        the snapshot name (default: the config's only [dir])\n"
	       "  --keep-last N      keep the newest N snapshots (--keep N: the same)\n"
	       "  --keep-hourly N    keep the newest snapshot of each of the last N hours\n"
	       "  --keep-daily N     ... days\n"
	       "  --keep-weekly N    ... ISO weeks\n"
	       "  --keep-monthly N   ... months\n"
	       "  --keep-yearly N    ... years\n"
	       "  --grace TIME       leave unreferenced objects younger than TIME (seconds,\n"
	       "                     or with a suffix s, m, h, d; default 24h)\n"
	       "  --dry-run          list what would be kept (and why) and deleted; change\n"
	       "                     nothing\n\n"
	       "Exit status: 0 done, 2 usage, 75 server unreachable or another sync/prune\n"
	       "is running, 77 login refused, 78 configuration, 1 other failure.\n",
	    prune_usage);
}

/* "90", "90s", "30m", "24h", "7d" into seconds (at most ten years): 0 or -1. */
static int
parse_grace(const char *arg, int64_t *out)
{
	static const char units[] = "smhd";
	static const int64_t mult[] = { 1, 60, 3600, 86400 };
	char num[32];
	size_t len = strlen(arg);
	const char *u;
	long long v;
	int64_t m = 1;

	if (len == 0 || len >= sizeof(num))
		return -1;
	memcpy(num, arg, len + 1);
	if ((u = strchr(units, num[len - 1])) != NULL && len > 1) {
		m = mult[u - units];
		num[len - 1] = '\0';
	}
	if (util_parse_ll(num, 0, 10LL * 366 * 86400, &v) != 0 || v * m > 10LL * 366 * 86400)
		return -1;
	*out = (int64_t)v * m;
	return 0;
}

/* Parses prune's options into *pol, *namep, *dry_run and p->grace: 0, -1 for --help, or a
 * usage exit status. */
static int
prune_opts(int argc, char **argv, struct keep_policy *pol, const char **namep, int *dry_run,
    struct prune_run *p)
{
	static const struct option opts[] = {
		{ "keep", required_argument, NULL, 'k' },
		{ "keep-last", required_argument, NULL, 'k' },
		{ "keep-hourly", required_argument, NULL, 'H' },
		{ "keep-daily", required_argument, NULL, 'D' },
		{ "keep-weekly", required_argument, NULL, 'W' },
		{ "keep-monthly", required_argument, NULL, 'M' },
		{ "keep-yearly", required_argument, NULL, 'Y' },
		{ "dry-run", no_argument, NULL, 'd' },
		{ "grace", required_argument, NULL, 'g' },
		{ "name", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char rules[] = "kHDWMY"; /* in enum order: KEEP_LAST .. KEEP_YEARLY */
	long long v;
	int ch;

	memset(pol, 0, sizeof(*pol));
	while ((ch = getopt_long(argc, argv, "+k:n:h", opts, NULL)) != -1) {
		if (ch != 0 && strchr(rules, ch) != NULL) {
			if (util_parse_ll(optarg, 1, 1000000, &v) != 0) {
				agent_error("--keep-%s needs a number from 1 to 1000000",
				    retention_rule_name((int)(strchr(rules, ch) - rules)));
				return AGENT_EXIT_USAGE;
			}
			pol->n[strchr(rules, ch) - rules] = (unsigned)v;
		} else if (ch == 'd') {
			*dry_run = 1;
		} else if (ch == 'g') {
			if (parse_grace(optarg, &p->grace) != 0) {
				agent_error(
				    "--grace needs a time: seconds, or a number with s, m, h "
				    "or d (at most ten years)");
				return AGENT_EXIT_USAGE;
			}
		} else if (ch == 'n') {
			*namep = optarg;
		} else if (ch == 'h') {
			prune_help();
			return -1;
		} else {
			return agent_usage(prune_usage);
		}
	}
	return optind != argc ? agent_usage(prune_usage) : 0;
}

int
cmd_prune(struct agent *a, int argc, char **argv)
{
	struct prune_run *p = NULL;
	struct keep_policy pol;
	const char *name = NULL;
	char sp[4096];
	pid_t holder = 0;
	int r, dry_run = 0, lockfd = -1;

	p = xcalloc(1, sizeof(*p));
	p->a = a;
	p->orphans = p->always_mark = 1;
	p->grace = PRUNE_GRACE_DEFAULT;
	if ((r = prune_opts(argc, argv, &pol, &name, &dry_run, p)) != 0) {
		r = r < 0 ? AGENT_EXIT_OK : r;
		goto out;
	}
	if (name == NULL && (name = snapshot_default_name(a)) == NULL) {
		r = AGENT_EXIT_USAGE;
		goto out;
	}
	if ((r = pick_policy(a, name, &pol)) != 0)
		goto out;
	if (a->state_path != NULL)
		snprintf(sp, sizeof(sp), "%s", a->state_path);
	else if (config_default_state_path(sp, sizeof(sp)) != 0) {
		agent_error("no state database path (set --state or HOME)");
		r = SYNC_EXIT_CONFIG;
		goto out;
	}
	if ((r = lock_acquire(sp, &lockfd, &holder)) != 0) {
		agent_error("cannot lock '%s': %s", sp,
		    r == STEP_EBUSY ? "another sync or prune is running" : strerror(errno));
		r = r == STEP_EBUSY ? SYNC_EXIT_TEMPFAIL : SYNC_EXIT_CONFIG;
		goto out;
	}
	r = SYNC_EXIT_CONFIG;
	if (agent_db(a, &p->db) != 0 || agent_client(a, &p->c) != 0)
		goto out;
	if (files_migrate(p->db) != 0 || snapshots_migrate(p->db) != 0) {
		agent_error("state database: %s", db_errmsg(p->db));
		r = AGENT_EXIT_FAIL;
		goto out;
	}
	r = prune_name(p, name, &pol, dry_run);
out:
	free(p);
	lock_release(lockfd);
	return r;
}
