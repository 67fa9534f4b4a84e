/*
 * restore_links.c — turns the restored members of each hard-link group back into one inode
 * (see restore_links.h). Runs after the restore's workers, on one thread; never follows a
 * symlink on a path and never removes a file before its link is in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "restore_links.h"
#include "tree.h"

struct rmember {
	uint64_t link;
	size_t seq; /* order of arrival: the first restored is the group's target */
	uint8_t digest[HASH_SHA256_LEN];
	char *dir, *name; /* owned */
	int64_t dir_mtime_ns;
	int dir_meta;
};

struct rlinks {
	pthread_mutex_t mu;
	struct rmember *m;
	size_t n, cap;
};

int
rlinks_new(struct rlinks **outp)
{
	struct rlinks *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return STEP_ENOMEM;
	pthread_mutex_init(&l->mu, NULL);
	*outp = l;
	return STEP_OK;
}

void
rlinks_free(struct rlinks *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < l->n; i++) {
		free(l->m[i].dir);
		free(l->m[i].name);
	}
	free(l->m);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

void
rlinks_digest(const struct tree_entry *e, uint8_t digest[HASH_SHA256_LEN])
{
	struct hash_ctx *h = hash_sha256_new();
	uint8_t size[8];

	if (h == NULL) {
		memset(digest, 0, HASH_SHA256_LEN); /* then no member matches another */
		digest[0] = 1;
		return;
	}
	for (size_t i = 0; i < e->nchunks; i++) {
		for (int k = 0; k < 8; k++)
			size[k] = (uint8_t)(e->chunks[i].size >> (8 * k));
		hash_update(h, e->chunks[i].id, HASH_SHA256_LEN);
		hash_update(h, size, sizeof(size));
	}
	hash_final(h, digest);
	hash_free(h);
}

int
rlinks_add(struct rlinks *l, uint64_t link, const uint8_t digest[HASH_SHA256_LEN], const char *dir,
    const char *name, int64_t dir_mtime_ns, int dir_meta)
{
	struct rmember m, *nm;
	int r = STEP_OK;

	memset(&m, 0, sizeof(m));
	m.link = link;
	memcpy(m.digest, digest, HASH_SHA256_LEN);
	m.dir_mtime_ns = dir_mtime_ns;
	m.dir_meta = dir_meta;
	if ((m.dir = strdup(dir)) == NULL || (m.name = strdup(name)) == NULL) {
		free(m.dir);
		return STEP_ENOMEM;
	}
	pthread_mutex_lock(&l->mu);
	if (l->n == l->cap) {
		size_t ncap = l->cap ? 2 * l->cap : 16;

		if ((nm = realloc(l->m, ncap * sizeof(*nm))) == NULL) {
			r = STEP_ENOMEM;
			goto out;
		}
		l->m = nm;
		l->cap = ncap;
	}
	m.seq = l->n;
	l->m[l->n++] = m;
	m.dir = m.name = NULL;
out:
	pthread_mutex_unlock(&l->mu);
	free(m.dir);
	free(m.name);
	return r;
}

static int
member_cmp(const void *a, const void *b)
{
	const struct rmember *x = a, *y = b;
	int c;

	if (x->link != y->link)
		return x->link < y->link ? -1 : 1;
	/* Names whose content differs (the file changed between them during the backup) are
	 * linked among themselves, each set to its first restored member. */
	if ((c = memcmp(x->digest, y->digest, HASH_SHA256_LEN)) != 0)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Opens directory path (relative to fd, '/'-separated, "" for fd itself) one component at a
 * time with O_NOFOLLOW. A new descriptor, or -1 with errno. */
static int
open_dir_path(int fd, const char *path)
{
	char comp[TREE_NAME_MAX + 1];
	const char *p = path, *s;
	int cur = dup(fd), next;
	size_t n;

	while (cur >= 0 && *p != '\0') {
		s = strchr(p, '/');
		n = s ? (size_t)(s - p) : strlen(p);
		if (n == 0 || n > TREE_NAME_MAX) {
			close(cur);
			errno = EINVAL;
			return -1;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(cur);
		cur = next;
		p = s ? s + 1 : p + n;
	}
	return cur;
}

/* Makes m a hard link of first; 0 or errno. */
static int
link_one(int targetfd, const struct rmember *first, const struct rmember *m)
{
	char tmp[64];
	struct timespec ts[2];
	int from = -1, to = -1, e = 0;

	snprintf(tmp, sizeof(tmp), ".stepsync-link.%ld.%zu", (long)getpid(), m->seq);
	if ((from = open_dir_path(targetfd, first->dir)) < 0 ||
	    (to = open_dir_path(targetfd, m->dir)) < 0) {
		e = errno;
		goto out;
	}
	if (linkat(from, first->name, to, tmp, 0) != 0) {
		e = errno;
		goto out;
	}
	if (renameat(to, tmp, to, m->name) != 0) {
		e = errno;
		unlinkat(to, tmp, 0);
		goto out;
	}
	if (m->dir_meta) {
		/* the link and the rename touched the directory: its time from the snapshot */
		ts[0].tv_sec = m->dir_mtime_ns / 1000000000;
		ts[0].tv_nsec = m->dir_mtime_ns % 1000000000;
		if (ts[0].tv_nsec < 0) {
			ts[0].tv_nsec += 1000000000;
			ts[0].tv_sec--;
		}
		ts[1] = ts[0];
		futimens(to, ts);
	}
out:
	if (from >= 0)
		close(from);
	if (to >= 0)
		close(to);
	return e;
}

uint64_t
rlinks_apply(struct rlinks *l, int targetfd, rlinks_report_fn *report, void *arg, uint64_t *failedp)
{
	const struct rmember *first = NULL;
	char msg[1024];
	uint64_t linked = 0;
	int e;

	*failedp = 0;
	if (l->n > 1)
		qsort(l->m, l->n, sizeof(*l->m), member_cmp);
	for (size_t i = 0; i < l->n; i++) {
		const struct rmember *m = &l->m[i];

		if (first == NULL || first->link != m->link ||
		    memcmp(first->digest, m->digest, HASH_SHA256_LEN) != 0) {
			first = m; /* a new group, or other content within it */
			continue;
		}
		if ((e = link_one(targetfd, first, m)) == 0) {
			linked++;
			continue;
		}
		(*failedp)++;
		snprintf(msg, sizeof(msg),
		    "cannot make '%s%s%s' a hard link of '%s%s%s' (%s); it is restored as a copy",
		    m->dir, *m->dir ? "/" : "", m->name, first->dir, *first->dir ? "/" : "",
		    first->name, strerror(e));
		if (report != NULL)
			report(arg, msg);
	}
	return linked;
}
