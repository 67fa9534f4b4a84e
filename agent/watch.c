/*
 * watch.c — the inotify engine: recursive watches, cookie-paired moves, IN_IGNORED
 * bookkeeping, overflow and watch-limit fallbacks. It only observes and reports through
 * the callback; it never reads file contents and never does I/O beyond inotify and
 * directory listing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "watch.h"

/* An IN_MOVED_FROM waits this long for its IN_MOVED_TO before it counts as a delete. */
#define WATCH_PAIR_MS 200

#define WATCH_MASK                                                                                 \
	(IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_DELETE | IN_MOVED_FROM |          \
	    IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK | IN_DONT_FOLLOW)

/* ---- move pairing ---- */

void
watch_moves_init(struct watch_moves *m)
{
	memset(m, 0, sizeof(*m));
}

void
watch_moves_release(struct watch_moves *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		free(m->v[i].path);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

int
watch_moves_add(
    struct watch_moves *m, uint32_t cookie, const char *path, int isdir, uint64_t now_ms)
{
	char *p;

	if (m->n == m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 8;
		struct watch_move *nv = realloc(m->v, ncap * sizeof(*nv));

		if (nv == NULL)
			return STEP_ENOMEM;
		m->v = nv;
		m->cap = ncap;
	}
	if ((p = strdup(path)) == NULL)
		return STEP_ENOMEM;
	m->v[m->n].cookie = cookie;
	m->v[m->n].path = p;
	m->v[m->n].isdir = isdir;
	m->v[m->n].t_ms = now_ms;
	m->n++;
	return STEP_OK;
}

static void
moves_remove(struct watch_moves *m, size_t i, char **pathp, int *isdirp)
{
	*pathp = m->v[i].path;
	*isdirp = m->v[i].isdir;
	/* Keep arrival order so expired entries are reported oldest first. */
	memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(m->v[0]));
	m->n--;
}

int
watch_moves_take(struct watch_moves *m, uint32_t cookie, char **pathp, int *isdirp)
{
	size_t i;

	for (i = 0; i < m->n; i++) {
		if (m->v[i].cookie == cookie) {
			moves_remove(m, i, pathp, isdirp);
			return STEP_OK;
		}
	}
	return STEP_ENOENT;
}

int
watch_moves_pop_expired(
    struct watch_moves *m, uint64_t now_ms, uint64_t age_ms, char **pathp, int *isdirp)
{
	if (m->n == 0)
		return 0;
	if (age_ms != 0 && now_ms < m->v[0].t_ms + age_ms)
		return 0;
	moves_remove(m, 0, pathp, isdirp);
	return 1;
}

/* ---- debounce ---- */

void
watch_debounce_init(struct watch_debounce *d, uint64_t quiet_ms, uint64_t max_ms)
{
	memset(d, 0, sizeof(*d));
	d->quiet_ms = quiet_ms;
	if (max_ms == 0) {
		max_ms = quiet_ms * 10;
		if (max_ms < 10000)
			max_ms = 10000;
	}
	if (max_ms < quiet_ms)
		max_ms = quiet_ms;
	d->max_ms = max_ms;
}

void
watch_debounce_note(struct watch_debounce *d, uint64_t now_ms)
{
	if (d->nevents == 0)
		d->first_ms = now_ms;
	d->last_ms = now_ms;
	d->nevents++;
}

long long
watch_debounce_timeout(const struct watch_debounce *d, uint64_t now_ms)
{
	uint64_t due, cap;

	if (d->nevents == 0)
		return -1;
	due = d->last_ms + d->quiet_ms;
	cap = d->first_ms + d->max_ms;
	if (cap < due)
		due = cap;
	return due <= now_ms ? 0 : (long long)(due - now_ms);
}

int
watch_debounce_due(const struct watch_debounce *d, uint64_t now_ms)
{
	return watch_debounce_timeout(d, now_ms) == 0;
}

void
watch_debounce_reset(struct watch_debounce *d)
{
	d->nevents = 0;
	d->first_ms = d->last_ms = 0;
}

/* ---- the engine ---- */

struct unwatched {
	char *path;  /* owned; top of a subtree left without watches */
	uint64_t fp; /* fingerprint of the subtree at the last poll */
};

struct watch {
	int fd;
	int max_watches; /* test hook; 0 = only the kernel's limit */
	size_t nwatches; /* live watches */
	char **wdpath;   /* owned; indexed by wd, NULL when unused */
	size_t wdcap;
	char **roots; /* owned; the trees given to watch_add_tree() */
	size_t nroots;
	struct unwatched *unw; /* owned */
	size_t nunw;
	int limit_warned;
	struct watch_moves moves;
	watch_event_fn *cb;
	void *arg;
};

int
watch_new(int max_watches, watch_event_fn *cb, void *arg, struct watch **outp)
{
	struct watch *w;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return STEP_ENOMEM;
	if ((w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
		int saved = errno;

		free(w);
		errno = saved;
		return STEP_ESYS;
	}
	w->max_watches = max_watches;
	w->cb = cb;
	w->arg = arg;
	watch_moves_init(&w->moves);
	*outp = w;
	return STEP_OK;
}

void
watch_free(struct watch *w)
{
	size_t i;

	if (w == NULL)
		return;
	for (i = 0; i < w->wdcap; i++)
		free(w->wdpath[i]);
	free(w->wdpath);
	for (i = 0; i < w->nroots; i++)
		free(w->roots[i]);
	free(w->roots);
	for (i = 0; i < w->nunw; i++)
		free(w->unw[i].path);
	free(w->unw);
	watch_moves_release(&w->moves);
	close(w->fd); /* drops every watch at once */
	free(w);
}

int
watch_fd(const struct watch *w)
{
	return w->fd;
}

size_t
watch_count(const struct watch *w)
{
	return w->nwatches;
}

size_t
watch_unwatched_count(const struct watch *w)
{
	return w->nunw;
}

static int
join_path(char *out, size_t outlen, const char *dir, const char *name)
{
	int n = snprintf(out, outlen, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= outlen) {
		log_warnx("path too long under '%s'", dir);
		return STEP_ETOOBIG;
	}
	return STEP_OK;
}

static int
wd_set(struct watch *w, int wd, const char *path)
{
	char *p;

	if ((size_t)wd >= w->wdcap) {
		size_t ncap = w->wdcap ? w->wdcap : 64;
		char **nv;

		while (ncap <= (size_t)wd)
			ncap *= 2;
		if ((nv = realloc(w->wdpath, ncap * sizeof(*nv))) == NULL)
			return STEP_ENOMEM;
		memset(nv + w->wdcap, 0, (ncap - w->wdcap) * sizeof(*nv));
		w->wdpath = nv;
		w->wdcap = ncap;
	}
	if ((p = strdup(path)) == NULL)
		return STEP_ENOMEM;
	if (w->wdpath[wd] == NULL)
		w->nwatches++;
	free(w->wdpath[wd]);
	w->wdpath[wd] = p;
	return STEP_OK;
}

static const char *
wd_path(const struct watch *w, int wd)
{
	if (wd < 0 || (size_t)wd >= w->wdcap)
		return NULL;
	return w->wdpath[wd];
}

static void
wd_drop(struct watch *w, int wd)
{
	if (wd < 0 || (size_t)wd >= w->wdcap || w->wdpath[wd] == NULL)
		return;
	free(w->wdpath[wd]);
	w->wdpath[wd] = NULL;
	w->nwatches--;
}

/* 1 when path is prefix itself or lies below it. */
static int
path_under(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);

	return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static uint64_t fingerprint(const char *path, uint64_t h, int depth);

#define FP_SEED 14695981039346656037ULL

static int
unwatched_add(struct watch *w, const char *path)
{
	struct unwatched *nv;
	char *p;
	size_t i;

	for (i = 0; i < w->nunw; i++)
		if (strcmp(w->unw[i].path, path) == 0)
			return STEP_OK;
	if ((p = strdup(path)) == NULL)
		return STEP_ENOMEM;
	if ((nv = realloc(w->unw, (w->nunw + 1) * sizeof(*nv))) == NULL) {
		free(p);
		return STEP_ENOMEM;
	}
	w->unw = nv;
	w->unw[w->nunw].path = p;
	/* The baseline is taken now, so a change made before the first poll is seen. */
	w->unw[w->nunw].fp = fingerprint(path, FP_SEED, 0);
	w->nunw++;
	return STEP_OK;
}

/* 1 when path has a watch (a linear search: only the --max-watches test hook uses it). */
static int
watched(const struct watch *w, const char *path)
{
	size_t i;

	for (i = 0; i < w->wdcap; i++)
		if (w->wdpath[i] != NULL && strcmp(w->wdpath[i], path) == 0)
			return 1;
	return 0;
}

/* Watches one directory; 1 when the watch limit stopped it, 0 on success, <0 on error. */
static int
watch_one(struct watch *w, const char *path)
{
	int wd;

	if (w->max_watches > 0 && w->nwatches >= (size_t)w->max_watches && !watched(w, path)) {
		errno = ENOSPC;
		wd = -1;
	} else {
		wd = inotify_add_watch(w->fd, path, WATCH_MASK);
	}
	if (wd < 0) {
		if (errno == ENOSPC) {
			if (!w->limit_warned)
				log_warnx("inotify watch limit reached at '%s' (%zu watches): "
				          "raise /proc/sys/fs/inotify/max_user_watches; until then "
				          "the directories left over are scanned periodically",
				    path, w->nwatches);
			w->limit_warned = 1;
			return unwatched_add(w, path) == 0 ? 1 : STEP_ENOMEM;
		}
		return STEP_ESYS;
	}
	return wd_set(w, wd, path);
}

static int
add_tree_rec(struct watch *w, const char *path, int depth)
{
	char child[PATH_MAX];
	struct dirent *de;
	DIR *d = NULL;
	int r;

	if ((r = watch_one(w, path)) != 0)
		return r > 0 ? 0 : r;
	if (depth > 256)
		return STEP_OK;
	if ((d = opendir(path)) == NULL) {
		/* It may have vanished already; its IN_IGNORED drops the watch. */
		log_debug("cannot list '%s'", path);
		return STEP_OK;
	}
	while ((de = readdir(d)) != NULL) {
		int isdir = de->d_type == DT_DIR;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (join_path(child, sizeof(child), path, de->d_name) != 0)
			continue;
		if (de->d_type == DT_UNKNOWN) {
			struct stat st;

			isdir = lstat(child, &st) == 0 && S_ISDIR(st.st_mode);
		}
		if (!isdir)
			continue;
		if ((r = add_tree_rec(w, child, depth + 1)) == STEP_ENOMEM)
			goto out;
	}
	r = STEP_OK;
out:
	closedir(d);
	return r;
}

int
watch_add_tree(struct watch *w, const char *dir)
{
	char **nv;
	char *p;

	if ((p = strdup(dir)) == NULL)
		return STEP_ENOMEM;
	if ((nv = realloc(w->roots, (w->nroots + 1) * sizeof(*nv))) == NULL) {
		free(p);
		return STEP_ENOMEM;
	}
	w->roots = nv;
	w->roots[w->nroots++] = p;
	/* Fails only when the root itself cannot be watched for a reason other than the limit. */
	return add_tree_rec(w, dir, 0);
}

/* Removes every watch at or below path (a directory that left the tree). */
static void
drop_subtree(struct watch *w, const char *path)
{
	size_t i;

	for (i = 0; i < w->wdcap; i++) {
		if (w->wdpath[i] != NULL && path_under(w->wdpath[i], path)) {
			inotify_rm_watch(w->fd, (int)i);
			wd_drop(w, (int)i);
		}
	}
	for (i = 0; i < w->nunw;) {
		if (path_under(w->unw[i].path, path)) {
			free(w->unw[i].path);
			w->unw[i] = w->unw[--w->nunw];
		} else {
			i++;
		}
	}
}

/* A directory was renamed inside the trees: rewrite the paths of its watches. */
static void
rename_subtree(struct watch *w, const char *from, const char *to)
{
	char np[PATH_MAX];
	size_t i, n = strlen(from);

	for (i = 0; i < w->wdcap; i++) {
		char *p = w->wdpath[i], *dup;

		if (p == NULL || !path_under(p, from))
			continue;
		if (snprintf(np, sizeof(np), "%s%s", to, p + n) >= (int)sizeof(np))
			continue;
		if ((dup = strdup(np)) == NULL)
			continue; /* keeps the old name; the next rescan corrects it */
		free(p);
		w->wdpath[i] = dup;
	}
}

static void
expire_moves(struct watch *w, uint64_t now_ms, uint64_t age_ms)
{
	char *path;
	int isdir;

	while (watch_moves_pop_expired(&w->moves, now_ms, age_ms, &path, &isdir)) {
		if (isdir)
			drop_subtree(w, path);
		w->cb(w->arg, WATCH_EV_DELETE, path, NULL);
		free(path);
	}
}

static void
on_moved_to(struct watch *w, const struct inotify_event *ev, const char *path)
{
	char *from = NULL;
	int isdir = 0;

	if (ev->cookie != 0 && watch_moves_take(&w->moves, ev->cookie, &from, &isdir) == 0) {
		if (isdir)
			rename_subtree(w, from, path);
		w->cb(w->arg, WATCH_EV_MOVE, from, path);
		free(from);
		return;
	}
	/* Moved in from outside the watched trees: new content. */
	if (ev->mask & IN_ISDIR) {
		if (add_tree_rec(w, path, 0) == STEP_ENOMEM)
			log_error("out of memory watching '%s'", path);
		w->cb(w->arg, WATCH_EV_RESCAN, path, NULL);
	} else {
		w->cb(w->arg, WATCH_EV_CHANGE, path, NULL);
	}
}

/*
 * After a queue overflow the lost events may have created directories (not watched yet)
 * and removed some (their IN_IGNORED is lost too): drop the mappings of directories that
 * are gone and walk every tree again. inotify_add_watch() on a directory already watched
 * returns its existing descriptor, so this adds only what is missing.
 */
static void
rewatch_all(struct watch *w)
{
	struct stat st;
	size_t i;

	for (i = 0; i < w->wdcap; i++) {
		if (w->wdpath[i] != NULL &&
		    (lstat(w->wdpath[i], &st) != 0 || !S_ISDIR(st.st_mode))) {
			inotify_rm_watch(w->fd, (int)i);
			wd_drop(w, (int)i);
		}
	}
	for (i = 0; i < w->nroots; i++)
		if (add_tree_rec(w, w->roots[i], 0) == STEP_ENOMEM)
			log_error("out of memory watching '%s'", w->roots[i]);
}

static void
dispatch(struct watch *w, const struct inotify_event *ev, uint64_t now_ms)
{
	char path[PATH_MAX];
	const char *dir;
	size_t i;

	if (ev->mask & IN_Q_OVERFLOW) {
		log_warnx("inotify queue overflowed; rescanning everything");
		rewatch_all(w);
		for (i = 0; i < w->nroots; i++)
			w->cb(w->arg, WATCH_EV_RESCAN, w->roots[i], NULL);
		return;
	}
	if ((dir = wd_path(w, ev->wd)) == NULL)
		return; /* a watch we already dropped */
	if (ev->mask & IN_IGNORED) {
		wd_drop(w, ev->wd);
		return;
	}
	if (ev->len == 0 || ev->name[0] == '\0')
		return; /* events on the directory itself: its parent reports them */
	if (join_path(path, sizeof(path), dir, ev->name) != 0) {
		w->cb(w->arg, WATCH_EV_RESCAN, dir, NULL);
		return;
	}
	if (ev->mask & IN_MOVED_FROM) {
		if (watch_moves_add(&w->moves, ev->cookie, path, !!(ev->mask & IN_ISDIR), now_ms))
			w->cb(w->arg, WATCH_EV_DELETE, path, NULL);
	} else if (ev->mask & IN_MOVED_TO) {
		on_moved_to(w, ev, path);
	} else if (ev->mask & IN_DELETE) {
		w->cb(w->arg, WATCH_EV_DELETE, path, NULL);
	} else if ((ev->mask & IN_CREATE) && (ev->mask & IN_ISDIR)) {
		/* Watch first, then rescan: events before the watch existed are lost. */
		if (add_tree_rec(w, path, 0) == STEP_ENOMEM)
			log_error("out of memory watching '%s'", path);
		w->cb(w->arg, WATCH_EV_RESCAN, path, NULL);
	} else if (ev->mask & (IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB)) {
		/* A directory's own change (chmod, touch) is in its parent's tree: incremental
		 * runs read only the directories named by an event. */
		if (!(ev->mask & IN_ISDIR) || (ev->mask & IN_ATTRIB))
			w->cb(w->arg, WATCH_EV_CHANGE, path, NULL);
	}
}

int
watch_process(struct watch *w, uint64_t now_ms)
{
	char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));

	for (;;) {
		ssize_t n = read(w->fd, buf, sizeof(buf));
		size_t off = 0;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return STEP_ESYS;
		}
		if (n == 0)
			break;
		while (off + sizeof(struct inotify_event) <= (size_t)n) {
			const struct inotify_event *ev = (const struct inotify_event *)(buf + off);

			dispatch(w, ev, now_ms);
			off += sizeof(struct inotify_event) + ev->len;
		}
	}
	expire_moves(w, now_ms, WATCH_PAIR_MS);
	return STEP_OK;
}

long long
watch_next_timeout(const struct watch *w, uint64_t now_ms)
{
	uint64_t due;

	if (w->moves.n == 0)
		return -1;
	due = w->moves.v[0].t_ms + WATCH_PAIR_MS;
	return due <= now_ms ? 0 : (long long)(due - now_ms);
}

/* FNV-1a over names, sizes, mtimes and inodes of a subtree. */
static uint64_t
fp_mix(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;

	while (n-- > 0) {
		h ^= *c++;
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t
fingerprint(const char *path, uint64_t h, int depth)
{
	char child[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *d;

	if (depth > 256 || (d = opendir(path)) == NULL)
		return fp_mix(h, "!", 1);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (join_path(child, sizeof(child), path, de->d_name) != 0 ||
		    lstat(child, &st) != 0)
			continue;
		h = fp_mix(h, de->d_name, strlen(de->d_name) + 1);
		h = fp_mix(h, &st.st_size, sizeof(st.st_size));
		h = fp_mix(h, &st.st_mtim, sizeof(st.st_mtim));
		h = fp_mix(h, &st.st_ino, sizeof(st.st_ino));
		if (S_ISDIR(st.st_mode))
			h = fingerprint(child, h, depth + 1);
	}
	closedir(d);
	return h;
}

size_t
watch_poll_unwatched(struct watch *w)
{
	size_t i;

	for (i = 0; i < w->nunw; i++) {
		/* readdir order is stable while a directory is unchanged. */
		uint64_t fp = fingerprint(w->unw[i].path, FP_SEED, 0);

		if (fp != w->unw[i].fp)
			w->cb(w->arg, WATCH_EV_RESCAN, w->unw[i].path, NULL);
		w->unw[i].fp = fp;
	}
	return w->nunw;
}
