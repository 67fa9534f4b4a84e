/*
 * watch_sync.c — `stepsync watch`'s seam to the sync engine (sync.h): one run of
 * sync_run() under the state's lock, as `stepsync sync --skip-unchanged` would do it,
 * its summary printed like sync's, its counters handed back.
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "client.h"
#include "cmd.h"
#include "cmd_sync.h"
#include "config.h"
#include "db.h"
#include "err.h"
#include "lock.h"
#include "queue.h"
#include "snapshot.h"
#include "sync.h"
#include "util.h"
#include "watch_retention.h"
#include "watch_sync.h"

/* The [dir]'s keep rules, at most once an hour, under the sync's lock. */
static void
apply_retention(struct agent *a, const char *name)
{
	struct client *c;
	struct db *db;

	if (agent_client(a, &c) == 0 && agent_db(a, &db) == 0)
		watch_retention_tick(a, c, db, name, util_wall_s());
}

/* What the queue says changed (see watch_sync_changes()). */
struct collect {
	const char *root;
	int full;
	char **dirs, **trees;
	size_t ndirs, capdirs, ntrees, captrees;
};

static void
push(char ***v, size_t *n, size_t *cap, const char *s, size_t len)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		*v = xrealloc(*v, *cap * sizeof(**v));
	}
	(*v)[*n] = xmalloc(len + 1);
	memcpy((*v)[*n], s, len);
	(*v)[(*n)++][len] = '\0';
}

/* Adds the directory holding path. */
static void
push_parent(struct collect *c, const char *path)
{
	const char *slash = strrchr(path, '/');

	push(&c->dirs, &c->ndirs, &c->capdirs, path, slash != NULL ? (size_t)(slash - path) : 0);
}

/* 1 when root/path is a directory now (not following a symlink). */
static int
is_dir(const char *root, const char *path)
{
	char full[PATH_MAX];
	struct stat st;

	if (snprintf(full, sizeof(full), "%s/%s", root, path) >= (int)sizeof(full))
		return 1; /* read it whole: the engine says what it is */
	return lstat(full, &st) == 0 && S_ISDIR(st.st_mode);
}

static int
collect_one(void *arg, const char *path, int kind)
{
	struct collect *c = arg;

	if (path[0] == '\0' && kind != QUEUE_CHANGE) {
		c->full = 1; /* the whole tree (start, overflow, periodic rescan) */
		return 0;
	}
	if (path[0] == '\0') /* the root's own metadata: not in any tree */
		return 0;
	if (kind == QUEUE_RESCAN || (kind == QUEUE_MOVE && is_dir(c->root, path)))
		push(&c->trees, &c->ntrees, &c->captrees, path, strlen(path));
	push_parent(c, path);
	return 0;
}

static int
str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts v and drops the repeated strings. */
static void
uniq(char **v, size_t *np)
{
	size_t i, k = 0;

	if (*np == 0)
		return;
	qsort(v, *np, sizeof(*v), str_cmp);
	for (i = 1; i < *np; i++) {
		if (strcmp(v[i], v[k]) == 0)
			free(v[i]);
		else
			v[++k] = v[i];
	}
	*np = k + 1;
}

static void
collect_free(struct collect *c)
{
	while (c->ndirs > 0)
		free(c->dirs[--c->ndirs]);
	while (c->ntrees > 0)
		free(c->trees[--c->ntrees]);
	free(c->dirs);
	free(c->trees);
}

static int run_sync(struct agent *a, const char *name, const char *path,
    const struct sync_changes *ch, struct watch_sync_result *res, char *errbuf, size_t errlen);

int
watch_sync_changes(struct agent *a, const char *name, const char *path, const char *qkey,
    long long mark, struct watch_sync_result *res, char *errbuf, size_t errlen)
{
	struct collect c;
	struct sync_changes ch;
	struct db *db = NULL;
	int r;

	memset(&c, 0, sizeof(c));
	memset(&ch, 0, sizeof(ch));
	c.root = path;
	if (agent_db(a, &db) != 0 || queue_each(db_handle(db), qkey, mark, collect_one, &c) != 0)
		c.full = 1;
	uniq(c.dirs, &c.ndirs);
	uniq(c.trees, &c.ntrees);
	ch.full = c.full;
	ch.dirs = c.dirs;
	ch.ndirs = c.ndirs;
	ch.trees = c.trees;
	ch.ntrees = c.ntrees;
	r = run_sync(a, name, path, &ch, res, errbuf, errlen);
	collect_free(&c);
	return r;
}

int
watch_sync_dir(struct agent *a, const char *name, const char *path, struct watch_sync_result *res,
    char *errbuf, size_t errlen)
{
	return run_sync(a, name, path, NULL, res, errbuf, errlen);
}

static int
run_sync(struct agent *a, const char *name, const char *path, const struct sync_changes *ch,
    struct watch_sync_result *res, char *errbuf, size_t errlen)
{
	const struct config_dir *cd;
	struct sync_opts o;
	struct sync_result sr;
	char base[PATH_MAX];
	int lockfd = -1, rc, recorded;

	memset(res, 0, sizeof(*res));
	memset(&sr, 0, sizeof(sr));
	if (snprintf(base, sizeof(base), "%s", path) >= (int)sizeof(base)) {
		snprintf(errbuf, errlen, "name or path too long");
		return STEP_EINVAL;
	}
	if (name == NULL)
		name = basename(base); /* the sync engine's default name */
	recorded = a->runs_recorded;
	a->run_command = "watch";
	if ((rc = sync_take_lock(a, &lockfd)) == 0) {
		cd = config_find_dir(a->cfg, name);
		memset(&o, 0, sizeof(o));
		o.a = a;
		o.name = name;
		o.root = path;
		o.exclude = cd != NULL ? cd->exclude : NULL;
		o.nexclude = cd != NULL ? cd->nexclude : 0;
		/* The start-up sync and the periodic rescan mostly find nothing new: they keep
		 * the latest snapshot instead of recording an identical one. */
		o.skip_unchanged = 1;
		/* A mass deletion never stops the watcher: it is held back (status says
		 * what and how to release it). */
		o.hold_mass_delete = 1;
		rc = sync_run(&o, ch, &sr);
		/* The engine keeps freed memory for its next run (mallopt in sync.c); a watcher
		 * idles between runs: give it back. */
		malloc_trim(0);
		if (sr.seq != 0 && (rc == AGENT_EXIT_OK || rc == SYNC_EXIT_INCOMPLETE))
			cmd_sync_report(a, name, &sr);
		if (rc == AGENT_EXIT_OK || rc == SYNC_EXIT_INCOMPLETE)
			apply_retention(a, name);
		lock_release(lockfd);
	}
	fflush(stdout);
	res->exit_status = rc;
	res->incremental = sr.incremental;
	res->dirs_scanned = sr.dirs_scanned;
	res->dirs_reused = sr.dirs_reused;
	res->files_hashed = sr.files_hashed;
	res->held = sr.held;
	if (rc != AGENT_EXIT_OK && a->runs_recorded == recorded && !util_stop_pending())
		agent_record_run(a, name, rc); /* failed before the tree */
	if (rc != AGENT_EXIT_OK) {
		snprintf(errbuf, errlen, "sync exited with status %d", rc);
		watch_sync_reset(a);
		return STEP_ESTATUS;
	}
	res->bytes_sent = sr.sent_bytes;
	snprintf(res->snapshot, sizeof(res->snapshot), "%s#%" PRIu64, name, sr.seq);
	return STEP_OK;
}

void
watch_sync_reset(struct agent *a)
{
	client_free(a->client);
	a->client = NULL;
}
