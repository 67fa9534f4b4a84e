/*
 * sync_hold.c — holding back a mass deletion. `stepsync sync` refuses a snapshot when
 * most known files vanished (an unmounted disk looks like that); a watcher must not
 * stop backing up the rest, so it asks the engine to hold the deletions instead: the
 * run is scanned again with the state's sorted walk beside the scan, and every file of
 * the state that the scan no longer finds goes into the snapshot as it was (its row: size,
 * mode, mtime, content), with the directories it needs. Nothing of the state is dropped,
 * so every later run holds them too, until a run allowed to record the deletion (`sync
 * --allow-mass-delete`) drops them. Held entries get the agent's uid and gid (the state
 * does not keep them) and directories made up for them mode 0755 and mtime 0.
 */
#include "queue.h"
#include "sync_int.h"

/* 1 when directory d (its first n bytes) is open in the scan: the last entry is d
 * itself, a directory, or below it. */
static int
is_open(const struct sync_job *s, const char *d, size_t n)
{
	const char *l = s->lastpath != NULL ? s->lastpath : "";

	if (n == 0)
		return 1;
	if (strncmp(l, d, n) != 0)
		return 0;
	return l[n] == '/' || (l[n] == '\0' && s->last_isdir);
}

/* 1 when root/path (its first n bytes) exists: the scan has it, or left it out. */
static int
exists(const struct sync_job *s, const char *path, size_t n)
{
	char full[PATH_MAX];
	struct stat st;

	if (snprintf(full, sizeof(full), "%s/%.*s", s->root, (int)n, path) >= (int)sizeof(full))
		return 1;
	return lstat(full, &st) == 0;
}

static void
set_last(struct sync_job *s, const char *path, size_t n, int isdir)
{
	free(s->lastpath);
	s->lastpath = xmalloc(n + 1);
	memcpy(s->lastpath, path, n);
	s->lastpath[n] = '\0';
	s->last_isdir = isdir;
}

/* Hands a made-up entry (a directory, or the held file row) to the trees, in order. */
static int
inject(struct sync_job *s, const char *path, size_t n, struct files_row *row)
{
	struct scan_entry se;
	struct stat st;
	char *p = xmalloc(n + 1);
	const char *slash;
	int r;

	memcpy(p, path, n);
	p[n] = '\0';
	memset(&st, 0, sizeof(st));
	st.st_uid = getuid();
	st.st_gid = getgid();
	if (row != NULL) {
		st.st_mode = S_IFREG | (row->mode & 07777);
		st.st_size = (off_t)row->size;
		st.st_mtim.tv_sec = row->mtime_ns / 1000000000;
		st.st_mtim.tv_nsec = row->mtime_ns % 1000000000;
	} else {
		st.st_mode = S_IFDIR | 0755;
	}
	slash = strrchr(p, '/');
	se.path = p;
	se.name = slash != NULL ? slash + 1 : p;
	se.dirfd = -1;
	se.st = &st;
	se.target = NULL;
	r = sync_defer(s, row != NULL ? DQ_SAME : DQ_DIR, &se, row);
	set_last(s, p, n, row == NULL);
	free(p);
	if (row != NULL) {
		s->found++;
		s->held++;
	}
	return r;
}

/* Holds one file of the state the scan passed without finding it (path copied). */
static int
hold_one(struct sync_job *s, const char *path, struct files_row *row)
{
	size_t n = strlen(path), k;
	int r;

	if (s->lastpath != NULL && strcmp(path, s->lastpath) == 0)
		return 0; /* the scan has it as a directory or symlink now */
	if (row->okey[0] != '\0' && !row->known)
		return 0; /* its content is not known on the server: nothing to keep */
	if (exists(s, path, n))
		return 0;       /* the scan has it in another form, or left it out */
	for (k = 0; k < n; k++) /* its directories the scan does not have: not on disk */
		if (path[k] == '/' && !is_open(s, path, k) && exists(s, path, k))
			return 0;
	for (k = 0; k < n; k++)
		if (path[k] == '/' && !is_open(s, path, k) && (r = inject(s, path, k, NULL)) != 0)
			return r;
	return inject(s, path, n, row);
}

int
sync_hold_catch_up(struct sync_job *s, const char *upto, int isdir)
{
	struct files_row row;
	const char *p;
	char *key = NULL, *copy;
	int r;

	if (upto != NULL) { /* where the scan is: a directory sorts as "path/" */
		size_t n = strlen(upto);

		key = xmalloc(n + 2);
		memcpy(key, upto, n);
		key[n] = '/';
		key[n + (isdir != 0)] = '\0';
	}
	while ((r = files_cursor_peek(s->cur, &p, &row)) == 1) {
		if (key != NULL && strcmp(p, key) >= 0)
			break;
		copy = xstrdup(p);
		if ((r = files_cursor_next(s->cur)) == 0)
			r = hold_one(s, copy, &row);
		free(copy);
		if (r != 0)
			break;
	}
	free(key);
	if (r < 0)
		return r;
	if (upto != NULL)
		set_last(s, upto, strlen(upto), isdir);
	return 0;
}

/*
 * The state's record of what is held, for `stepsync status` and the watcher's Prometheus
 * file: status key "held", a JSON object by snapshot name of {"files": N, "since": unix
 * time, "release": the command that records the deletions}. A run that held nothing
 * takes its name out. Errors are logged, never fatal.
 */
void
sync_hold_note(struct agent *a, const char *name, const char *root, uint64_t held)
{
	char *old = NULL, *text = NULL, release[PATH_MAX + 512];
	json_t *all = NULL, *e;
	sqlite3 *sq;

	if (a->db == NULL)
		return;
	sq = db_handle(a->db);
	if (queue_migrate(sq) != 0)
		return;
	if (queue_status_get(sq, "held", &old) == 0)
		all = json_loads(old, 0, NULL);
	if (!json_is_object(all)) {
		json_decref(all);
		all = json_object();
	}
	e = json_object_get(all, name);
	if (held == 0 && e == NULL)
		goto out;
	if (held == 0) {
		json_object_del(all, name);
	} else {
		snprintf(release, sizeof(release),
		    "stepsync sync --allow-mass-delete --name '%s' '%s'", name, root);
		json_object_set_new(all, name,
		    json_pack("{s:I, s:I, s:s}", "files", (json_int_t)held, "since",
		        (json_int_t)(json_is_object(e) &&
		                    json_integer_value(json_object_get(e, "since"))
		                ? json_integer_value(json_object_get(e, "since"))
		                : (json_int_t)util_wall_s()),
		        "release", release));
	}
	text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
	if (text == NULL || queue_status_set(sq, "held", json_object_size(all) ? text : NULL) != 0)
		log_warnx("cannot record the held deletions of '%s'", name);
out:
	free(text);
	free(old);
	json_decref(all);
}
