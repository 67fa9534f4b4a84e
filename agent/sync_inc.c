/*
 * sync_inc.c — incremental runs of the sync engine. The caller (the watcher) names the
 * directories whose entries changed and the subtrees that must be read whole (a
 * directory created or moved in); the scan reads those and their ancestors (their trees
 * change with them) and reuses every other directory's tree id as the last run stored it
 * (table dirtrees), without reading below it. Entries gone from the directories read
 * are found with one query per entry of the state, and dropped.
 *
 * Safety: a reused tree must be recorded as on the server (objects table), the table
 * holds the trees of the last run only when it succeeded (a failed run clears it), and
 * without a root row the run is a full one.
 */
#include "sync_int.h"

static void
path_id(const char *path, size_t len, uint8_t id[HASH_SHA256_LEN])
{
	hash_sha256(path, len, id);
}

static int
set_has(const struct idset *set, const char *path, size_t len)
{
	uint8_t id[HASH_SHA256_LEN];

	path_id(path, len, id);
	return sync_idset_has(set, id);
}

static void
set_add(struct idset *set, const char *path, size_t len)
{
	uint8_t id[HASH_SHA256_LEN];

	path_id(path, len, id);
	if (!sync_idset_has(set, id))
		sync_idset_add(set, id);
}

/* Adds path's ancestors ("" included) to vset. */
static void
add_ancestors(struct sync_job *s, const char *path)
{
	const char *p = path + strlen(path);

	for (;;) {
		while (p > path && *p != '/')
			p--;
		set_add(&s->vset, path, (size_t)(p - path));
		if (p == path)
			return;
		p--;
	}
}

static char **
copy_paths(char *const *v, size_t n)
{
	char **c = xcalloc(n ? n : 1, sizeof(*c));
	size_t i;

	for (i = 0; i < n; i++)
		c[i] = xstrdup(v[i]);
	return c;
}

/* Remembers that directory path is read (its vanished entries are looked for). */
static void
read_dir(struct sync_job *s, const char *path)
{
	if (s->nreaddirs == s->capreaddirs) {
		s->capreaddirs = s->capreaddirs ? 2 * s->capreaddirs : 16;
		s->readdirs = xrealloc(s->readdirs, s->capreaddirs * sizeof(*s->readdirs));
	}
	s->readdirs[s->nreaddirs++] = xstrdup(path);
}

int
sync_inc_prepare(struct sync_job *s, const struct sync_changes *ch)
{
	struct files_dirtree root;
	size_t i;
	int r;

	s->inc = 0;
	if (ch == NULL || ch->full)
		return 0;
	for (i = 0; i < ch->ntrees; i++)
		if (ch->trees[i][0] == '\0')
			return 0; /* the whole tree */
	if ((r = files_dirtree_get(s->files, s->name, "", &root)) != 0) {
		if (r != STEP_ENOENT)
			return r;
		log_info(
		    "'%s': no trees of a last run to build on: reading the whole tree", s->root);
		return 0;
	}
	s->inc = 1;
	s->known = root.files;
	read_dir(s, "");
	s->deep = copy_paths(ch->trees, ch->ntrees);
	s->ndeep = ch->ntrees;
	set_add(&s->vset, "", 0);
	for (i = 0; i < ch->ndirs; i++) {
		set_add(&s->vset, ch->dirs[i], strlen(ch->dirs[i]));
		add_ancestors(s, ch->dirs[i]);
	}
	for (i = 0; i < ch->ntrees; i++) {
		set_add(&s->tset, ch->trees[i], strlen(ch->trees[i]));
		add_ancestors(s, ch->trees[i]);
	}
	return 0;
}

void
sync_inc_release(struct sync_job *s)
{
	size_t i;

	for (i = 0; i < s->nreaddirs; i++)
		free(s->readdirs[i]);
	for (i = 0; i < s->ndeep; i++)
		free(s->deep[i]);
	free(s->readdirs);
	free(s->deep);
	free(s->vset.slot);
	free(s->tset.slot);
	free(s->seen.slot);
}

void
sync_inc_seen(struct sync_job *s, const char *path)
{
	if (s->inc)
		set_add(&s->seen, path, strlen(path));
}

/* 1 when directory path must be read: named, an ancestor of one named, or in a subtree
 * to read whole. */
static int
must_read(struct sync_job *s, const char *path)
{
	size_t n = strlen(path);

	if (set_has(&s->vset, path, n))
		return 1;
	for (;;) {
		if (set_has(&s->tset, path, n))
			return 1;
		while (n > 0 && path[n - 1] != '/')
			n--;
		if (n == 0)
			return 0;
		n--;
	}
}

/*
 * For the scan's directory path: 1 with s->nsub its last tree when that tree is reused
 * (not read), 0 when the directory must be read, or a database error.
 */
int
sync_inc_reuse(struct sync_job *s, const char *path)
{
	char key[MANIFEST_KEY_MAX + 1];
	int r;

	if (!s->inc)
		return 0;
	if (set_has(&s->vset, path, strlen(path))) {
		read_dir(s, path);
		return 0;
	}
	if (must_read(s, path))
		return 0;
	if ((r = files_dirtree_get(s->files, s->name, path, &s->nsub)) != 0)
		return r == STEP_ENOENT ? 0 : r;
	manifest_tree_key(s->nsub.id, key, sizeof(key));
	if ((r = files_object_known(s->files, key)) <= 0)
		return r; /* not known on the server: read it */
	s->dirs_reused++;
	return 1;
}

/* A tree the builder finished: remembered for the next incremental run. */
void
sync_tree_closed(
    void *arg, const char *path, const uint8_t id[HASH_SHA256_LEN], const struct tree_counts *c)
{
	struct sync_job *s = arg;
	struct files_dirtree t;

	if (s->tree_err != 0)
		return;
	memcpy(t.id, id, sizeof(t.id));
	t.files = c->files;
	t.dirs = c->dirs;
	t.symlinks = c->symlinks;
	t.bytes = c->bytes;
	s->tree_err = files_dirtree_put(s->files, s->name, path, &t);
}

/* "<d>/" and "<d>0" (d not ""): the range of the paths below d. */
static void
range_below(const char *d, size_t n, char *lo, char *hi)
{
	memcpy(lo, d, n);
	memcpy(hi, d, n);
	lo[n] = '/';
	hi[n] = '0';
	lo[n + 1] = hi[n + 1] = '\0';
}

/*
 * Drops the rows of files gone from directory d (deep: from anywhere below d): one seek
 * per row, and per subdirectory of d that the scan did not see at all (gone with
 * everything in it), one range delete.
 */
static int
vanish_in(struct sync_job *s, const char *d, int deep)
{
	char *lo = xmalloc(SCAN_PATH_MAX + 3), *hi = xmalloc(SCAN_PATH_MAX + 3);
	char *p = xmalloc(SCAN_PATH_MAX + 3), *q = xmalloc(SCAN_PATH_MAX + 3);
	size_t n = strlen(d), pre = n ? n + 1 : 0, len;
	uint64_t gone;
	char *slash;
	int r;

	if (n > SCAN_PATH_MAX) {
		r = 0;
		goto out;
	}
	if (n > 0)
		range_below(d, n, lo, hi);
	else
		lo[0] = '\0';
	while ((r = files_seek(s->files, s->name, lo, n ? hi : NULL, p, SCAN_PATH_MAX + 1)) == 1) {
		len = strlen(p);
		slash = deep ? NULL : strchr(p + pre, '/');
		if (slash == NULL) { /* an entry of d itself (or below it, deep) */
			if (!set_has(&s->seen, p, len)) {
				if ((r = files_drop(s->files, s->name, p)) != 0)
					break;
				s->vanished++;
			}
			memcpy(lo, p, len);
			lo[len] = '\x01'; /* the next path after p */
			lo[len + 1] = '\0';
			continue;
		}
		len = (size_t)(slash - p); /* a subdirectory of d: p[0..len) */
		range_below(p, len, q, lo);
		if (!set_has(&s->seen, p, len)) {
			if ((r = files_drop_range(s->files, s->name, q, lo, &gone)) != 0)
				break;
			s->vanished += gone;
		}
		/* lo is "<subdirectory>0": the seek goes on after its rows */
	}
out:
	free(lo);
	free(hi);
	free(p);
	free(q);
	return r < 0 ? r : 0;
}

int
sync_inc_vanish(struct sync_job *s)
{
	size_t i;
	int r;

	for (i = 0; i < s->nreaddirs; i++)
		if ((r = vanish_in(s, s->readdirs[i], 0)) != 0)
			return r;
	for (i = 0; i < s->ndeep; i++)
		if ((r = vanish_in(s, s->deep[i], 1)) != 0)
			return r;
	s->found = s->known > s->vanished ? s->known - s->vanished : 0;
	return 0;
}
