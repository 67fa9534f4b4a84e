/*
 * cmd_prune.c — `stepsync prune --keep N`: delete a NAME's oldest snapshots and the
 * objects no remaining snapshot references.
 *
 * Safety rules: manifests are deleted oldest first (the remaining ones stay a
 * contiguous range, which snapshot discovery without LIST relies on); the latest N,
 * N >= 1, are never touched; an object is deleted only when it is referenced by a
 * deleted manifest and by no remaining manifest of any NAME this agent can see (every
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
#include "snapshot.h"
#include "snapshots.h"
#include "treewalk.h"
#include "util.h"

struct prune_run {
	struct agent *a;
	struct client *c;
	struct db *db;
	sqlite3_stmt *ins_keep, *ins_cand;
	sqlite3_stmt *ins;      /* the table a format-2 walk fills (one of the two above) */
	sqlite3_stmt *has_keep; /* is a key in prune_keep? */
	int err;                /* a database error in a walk callback */
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

/* Format 2: a tree is walked once per table; below a tree in prune_keep, everything is
 * kept, so a candidate walk stops there. */
static int
walk_seen(void *arg, const uint8_t id[HASH_SHA256_LEN])
{
	struct prune_run *p = arg;
	char key[MANIFEST_KEY_MAX + 1];
	int r, rc;

	manifest_tree_key(id, key, sizeof(key));
	if (p->ins == p->ins_cand) {
		sqlite3_bind_text(p->has_keep, 1, key, -1, SQLITE_TRANSIENT);
		rc = sqlite3_step(p->has_keep);
		sqlite3_reset(p->has_keep);
		if (rc == SQLITE_ROW)
			return 1;
	}
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

/* Adds every object key of manifest key to the table behind ins. */
static int
collect(struct prune_run *p, const char *key, sqlite3_stmt *ins)
{
	struct manifest_reader *rd = NULL;
	struct manifest_header h;
	struct snapshot_record rec;
	char errbuf[512];
	FILE *f = NULL;
	int r, rc, fmt = 1;

	if ((r = snapshot_fetch_any(p->c, key, &fmt, &f, &rec)) != 0) {
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
		if (r != 0)
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
	uint64_t lo = 0, hi = 0, s;
	int r;

	if ((r = snapshot_range(p->c, name, 0, &lo, &hi)) != 0)
		return r;
	for (s = lo; s != 0 && s <= hi; s++) {
		if (manifest_snapshot_key(name, s, key, sizeof(key)) != 0)
			continue;
		if ((r = collect(p, key, p->ins_keep)) != 0)
			return r;
	}
	return 0;
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

/* Deletes what the pruned snapshots referenced and no remaining one does (prune_cand minus
 * prune_keep), forgetting each first. 0 and *nobjp, or an error (said). */
static int
sweep(struct prune_run *p, uint64_t *nobjp)
{
	struct files *fs = NULL;
	sqlite3_stmt *st = NULL;
	int r;

	*nobjp = 0;
	if ((r = files_new(p->db, &fs)) != 0)
		goto dberr;
	if (sqlite3_prepare_v2(db_handle(p->db),
	        "SELECT okey FROM temp.prune_cand WHERE okey NOT IN (SELECT okey FROM "
	        "temp.prune_keep)",
	        -1, &st, NULL) != SQLITE_OK) {
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

static int
prune_name(struct prune_run *p, const char *name, uint64_t keep)
{
	char key[MANIFEST_KEY_MAX + 1];
	uint64_t lo = 0, hi = 0, s, last_del, nobj = 0, nsnap = 0;
	int r;

	if ((r = snapshot_range(p->c, name, 0, &lo, &hi)) != 0) {
		agent_error("cannot list the snapshots of '%s': %s", name, client_error(p->c));
		return snapshot_exit_code(r);
	}
	if (lo == 0 || hi - lo + 1 <= keep) {
		printf("prune '%s': %" PRIu64 " snapshots, nothing to delete\n", name,
		    lo ? hi - lo + 1 : 0);
		return AGENT_EXIT_OK;
	}
	last_del = hi - keep;
	if ((r = db_exec(p->db,
	         "CREATE TEMP TABLE IF NOT EXISTS prune_keep(okey TEXT PRIMARY KEY);"
	         "CREATE TEMP TABLE IF NOT EXISTS prune_cand(okey TEXT PRIMARY KEY);"
	         "DELETE FROM temp.prune_keep; DELETE FROM temp.prune_cand;")) != 0)
		goto dberr;
	if (sqlite3_prepare_v2(db_handle(p->db), "INSERT OR IGNORE INTO temp.prune_keep VALUES(?)",
	        -1, &p->ins_keep, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db_handle(p->db), "INSERT OR IGNORE INTO temp.prune_cand VALUES(?)",
	        -1, &p->ins_cand, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db_handle(p->db), "SELECT 1 FROM temp.prune_keep WHERE okey = ?", -1,
	        &p->has_keep, NULL) != SQLITE_OK) {
		r = STEP_EIO;
		goto dberr;
	}
	/* 1. What stays referenced; 2. what the deleted manifests referenced. */
	for (s = last_del + 1; s <= hi; s++) {
		manifest_snapshot_key(name, s, key, sizeof(key));
		if ((r = collect(p, key, p->ins_keep)) != 0)
			goto fail;
	}
	if ((r = keep_others(p, name)) != 0) {
		agent_error(
		    "cannot read the other snapshots: %s; nothing deleted", client_error(p->c));
		goto fail;
	}
	for (s = lo; s <= last_del; s++) {
		manifest_snapshot_key(name, s, key, sizeof(key));
		if ((r = collect(p, key, p->ins_cand)) != 0)
			goto fail;
	}
	/* 3. Manifests, oldest first. */
	for (s = lo; s <= last_del; s++) {
		manifest_snapshot_key(name, s, key, sizeof(key));
		if ((r = client_file_delete(p->c, key)) != 0 && r != STEP_ENOENT) {
			agent_error("cannot delete snapshot %s#%" PRIu64 ": %s", name, s,
			    client_error(p->c));
			goto fail;
		}
		snapshots_delete(p->db, name, s);
		nsnap++;
	}
	/* 4. Objects nobody references any more. */
	if ((r = sweep(p, &nobj)) != 0)
		goto fail;
	printf("prune '%s': deleted %" PRIu64 " %s (#%" PRIu64 "..#%" PRIu64 ") and %" PRIu64
	       " unreferenced %s; kept #%" PRIu64 "..#%" PRIu64 "\n",
	    name, nsnap, agent_plural(nsnap, "snapshot", "snapshots"), lo, last_del, nobj,
	    agent_plural(nobj, "object", "objects"), last_del + 1, hi);
	if (p->a->json)
		agent_json(p->a,
		    json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "command", "prune", "name",
		        name, "deleted_snapshots", (json_int_t)nsnap, "deleted_objects",
		        (json_int_t)nobj, "first_deleted", (json_int_t)lo, "first_kept",
		        (json_int_t)(last_del + 1), "last_kept", (json_int_t)hi));
	r = AGENT_EXIT_OK;
	goto out;
dberr:
	agent_error("state database: %s", db_errmsg(p->db));
fail:
	r = r < 0 ? snapshot_exit_code(r) : AGENT_EXIT_FAIL;
out:
	sqlite3_finalize(p->ins_keep);
	sqlite3_finalize(p->ins_cand);
	sqlite3_finalize(p->has_keep);
	p->ins_keep = p->ins_cand = p->has_keep = NULL;
	return r;
}

int
cmd_prune(struct agent *a, int argc, char **argv)
{
	static const char usage[] = "prune --keep N [--name NAME]";
	static const struct option opts[] = {
		{ "keep", required_argument, NULL, 'k' },
		{ "name", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct prune_run *p = NULL;
	const char *name = NULL;
	char sp[4096];
	long long keep = 0;
	pid_t holder = 0;
	int ch, r, lockfd = -1;

	while ((ch = getopt_long(argc, argv, "+k:n:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'k':
			if (util_parse_ll(optarg, 1, 1000000000, &keep) != 0) {
				agent_error("--keep needs a number of at least 1");
				return AGENT_EXIT_USAGE;
			}
			break;
		case 'n':
			name = optarg;
			break;
		case 'h':
			printf("usage: stepsync %s\n\nDeletes NAME's snapshots except the newest "
			       "N, and\n"
			       "the objects that no remaining snapshot references.\n",
			    usage);
			return AGENT_EXIT_OK;
		default:
			return agent_usage(usage);
		}
	}
	if (optind != argc || keep < 1)
		return agent_usage(usage);
	if (name == NULL && (name = snapshot_default_name(a)) == NULL)
		return AGENT_EXIT_USAGE;
	if (a->state_path != NULL)
		snprintf(sp, sizeof(sp), "%s", a->state_path);
	else if (config_default_state_path(sp, sizeof(sp)) != 0) {
		agent_error("no state database path (set --state or HOME)");
		return SYNC_EXIT_CONFIG;
	}
	if ((r = lock_acquire(sp, &lockfd, &holder)) != 0) {
		agent_error("cannot lock '%s': %s", sp,
		    r == STEP_EBUSY ? "another sync or prune is running" : strerror(errno));
		return r == STEP_EBUSY ? SYNC_EXIT_TEMPFAIL : SYNC_EXIT_CONFIG;
	}
	p = xcalloc(1, sizeof(*p));
	p->a = a;
	r = SYNC_EXIT_CONFIG;
	if (agent_db(a, &p->db) != 0 || agent_client(a, &p->c) != 0)
		goto out;
	if (files_migrate(p->db) != 0 || snapshots_migrate(p->db) != 0) {
		agent_error("state database: %s", db_errmsg(p->db));
		r = AGENT_EXIT_FAIL;
		goto out;
	}
	r = prune_name(p, name, (uint64_t)keep);
out:
	free(p);
	lock_release(lockfd);
	return r;
}
