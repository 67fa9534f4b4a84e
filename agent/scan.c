/*
 * scan.c — a deterministic, non-following tree walk over directory descriptors.
 * Never follows a symlink, never crosses into what it cannot open, never holds more
 * than the names of the directories on the current path.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "scan.h"

struct scan_walk {
	char *const *exclude;
	size_t nexclude;
	scan_fn *fn;
	void *ctx;
	struct scan_stats *stats;
	char path[SCAN_PATH_MAX + 1];
	char target[SCAN_PATH_MAX + 1];
};

int64_t
scan_mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

int64_t
scan_ctime_ns(const struct stat *st)
{
	return (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
free_names(char **names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* 1 when dfd's entry de is a directory (d_type, or lstat when the filesystem does not say). */
static int
entry_is_dir(int dfd, const struct dirent *de)
{
	struct stat st;

	if (de->d_type != DT_UNKNOWN)
		return de->d_type == DT_DIR;
	return fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* Reads dfd's entry names (without . and ..), directories with a '/' appended, sorted:
 * so siblings sort as their subtrees' full paths do, and the walk visits paths in
 * ascending byte order. Takes ownership of dfd's DIR. */
static int
read_names(int dfd, char ***namesp, size_t *np)
{
	DIR *d = NULL;
	struct dirent *de;
	char **names = NULL, **nn;
	size_t n = 0, cap = 0, len;
	int fd, r = STEP_ESYS;

	if ((fd = dup(dfd)) < 0)
		return STEP_ESYS;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return STEP_ESYS;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL) {
			if (errno != 0)
				goto out;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			if ((nn = realloc(names, cap * sizeof(*names))) == NULL) {
				r = STEP_ENOMEM;
				goto out;
			}
			names = nn;
		}
		len = strlen(de->d_name);
		if ((names[n] = malloc(len + 2)) == NULL) {
			r = STEP_ENOMEM;
			goto out;
		}
		memcpy(names[n], de->d_name, len + 1);
		if (entry_is_dir(dfd, de)) {
			names[n][len] = '/';
			names[n][len + 1] = '\0';
		}
		n++;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), name_cmp);
	*namesp = names;
	*np = n;
	names = NULL;
	n = 0;
	r = 0;
out:
	free_names(names, n);
	closedir(d);
	return r;
}

static int walk_dir(struct scan_walk *w, int dfd, size_t plen);

static int
walk_one(struct scan_walk *w, int dfd, size_t plen, const char *name)
{
	struct scan_entry e;
	struct stat st;
	size_t nlen = strlen(name), elen;
	ssize_t tl;
	int cfd, r, is_dir;

	elen = plen + (plen ? 1 : 0) + nlen;
	if (elen > SCAN_PATH_MAX) {
		log_warnx("path too long, skipped: '%.*s/%s'", (int)plen, w->path, name);
		w->stats->errors++;
		return 0;
	}
	if (plen)
		w->path[plen] = '/';
	memcpy(w->path + plen + (plen ? 1 : 0), name, nlen + 1);
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno != ENOENT) { /* vanished since readdir: simply gone */
			log_warn("cannot stat '%s'", w->path);
			w->stats->errors++;
		}
		return 0;
	}
	is_dir = S_ISDIR(st.st_mode);
	if (!is_dir && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
		log_info("not a file, directory or symlink, skipped: '%s'", w->path);
		w->stats->skipped++;
		return 0;
	}
	if (w->nexclude > 0 && config_exclude_match(w->exclude, w->nexclude, w->path, is_dir)) {
		log_debug("excluded: '%s'", w->path);
		w->stats->skipped++;
		return 0;
	}
	e.path = w->path;
	e.name = w->path + elen - nlen;
	e.dirfd = dfd;
	e.st = &st;
	e.target = NULL;
	if (S_ISLNK(st.st_mode)) {
		tl = readlinkat(dfd, name, w->target, sizeof(w->target) - 1);
		if (tl <= 0 || (size_t)tl >= sizeof(w->target) - 1) {
			log_warn("cannot read symlink '%s'", w->path);
			w->stats->errors++;
			return 0;
		}
		w->target[tl] = '\0';
		e.target = w->target;
		w->stats->symlinks++;
	} else if (is_dir) {
		w->stats->dirs++;
	} else {
		w->stats->files++;
		w->stats->bytes += (uint64_t)st.st_size;
	}
	if (is_dir) {
		/* Opened before it is reported: an unreadable directory is an error, not
		 * an empty directory. */
		cfd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0) {
			log_warn("cannot open directory '%s'", w->path);
			w->stats->errors++;
			return 0;
		}
		if ((r = w->fn(w->ctx, &e)) != 0) {
			close(cfd);
			return r == SCAN_SKIP ? 0 : r;
		}
		r = walk_dir(w, cfd, elen);
		close(cfd);
		return r;
	}
	return w->fn(w->ctx, &e);
}

static int
walk_dir(struct scan_walk *w, int dfd, size_t plen)
{
	char **names = NULL;
	size_t n = 0, i;
	int r;

	if ((r = read_names(dfd, &names, &n)) != 0) {
		if (r == STEP_ENOMEM)
			return r;
		w->path[plen] = '\0';
		log_warn("cannot read directory '%s'", plen ? w->path : ".");
		w->stats->errors++;
		return 0;
	}
	for (i = 0; i < n; i++) {
		size_t len = strlen(names[i]);

		if (len > 1 && names[i][len - 1] == '/')
			names[i][len - 1] = '\0'; /* the sort key's mark, not part of the name */
		if ((r = walk_one(w, dfd, plen, names[i])) != 0)
			break;
	}
	free_names(names, n);
	return r;
}

int
scan_tree(const char *root, char *const *exclude, size_t nexclude, scan_fn *fn, void *ctx,
    struct scan_stats *stats)
{
	struct scan_walk *w = NULL;
	int fd, r;

	memset(stats, 0, sizeof(*stats));
	if ((fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return STEP_ESYS;
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		close(fd);
		return STEP_ENOMEM;
	}
	w->exclude = exclude;
	w->nexclude = nexclude;
	w->fn = fn;
	w->ctx = ctx;
	w->stats = stats;
	r = walk_dir(w, fd, 0);
	close(fd);
	free(w);
	return r;
}
