/*
 * restore.c — the restore engine of format-2 snapshots: a tree walk that turns each
 * directory's tree into work (subtrees to fetch, file chunks to fetch, empty files and
 * symlinks made at once) and N fetch.c connections that do the work, pipelined.
 *
 * Concurrency: one lock (mu) guards the two queues and the count of jobs in progress; a
 * worker takes small chunks in batches, so most objects cost no lock at all. Counters,
 * the pending counts of directories and files are atomics. File system calls happen
 * outside the lock except for the open of a file of several chunks. A directory holds a descriptor
 * from the moment its tree arrives until everything in it is finished; then its mode and times are
 * set through that descriptor (so deepest first) and it is closed. Trees are taken from a stack
 * (depth first, few directories open) before chunks, unless many directories are open already.
 *
 * Never follows a symlink in the target: a directory is made with mkdirat() and opened
 * with O_NOFOLLOW | O_DIRECTORY relative to its parent's descriptor; files are written
 * unnamed (O_TMPFILE) and linked to their name when complete and verified (linkat never
 * replaces), or where O_TMPFILE or linkat cannot be used, created with O_CREAT | O_EXCL |
 * O_NOFOLLOW under a temporary name and renamed; symlinks are made
 * under a temporary name and renamed; modes and times go through descriptors (utimensat
 * with AT_SYMLINK_NOFOLLOW for symlinks). Never prints.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fetch.h"
#include "manifest.h"
#include "restore.h"
#include "restore_links.h"
#include "tree.h"
#include "util.h"

#define DIR_FD_BUDGET   256          /* open directories above which chunks go before trees */
#define BATCH_JOBS      32           /* chunks a worker takes at once, at most... */
#define BATCH_BYTES     (256u << 10) /* ...and bytes of them (a large chunk goes alone) */
#define STOP_EVERY      64           /* next() calls between looks for a pending signal */
#define HOLE_BLOCK      4096         /* aligned runs of zeros this long are left as holes */
#define FLUSH_EARLY_MIN (256u << 10) /* chunks written out as soon as they are complete */

#define ADD(p, n) __atomic_add_fetch((p), (n), __ATOMIC_RELAXED)

enum { JOB_TREE = 1, JOB_CHUNK };

/* How a file gets its name once complete: an O_TMPFILE linked in place with linkat(), by
 * AT_EMPTY_PATH or through /proc/self/fd; or (NONE) a temporary name, renamed. */
enum { TMPFILE_NONE = 0, TMPFILE_EMPTY_PATH, TMPFILE_PROC };

int restore_test_no_tmpfile;

struct rdir {
	struct rdir *parent;
	int fd;     /* open from when its tree arrived until it is finished; -1 otherwise */
	char *name; /* in the parent ("" for the root; owned) */
	uint8_t id[HASH_SHA256_LEN]; /* its tree */
	unsigned mode;
	int64_t mtime_ns;
	uint32_t uid, gid;
	int meta;       /* 0 for the target itself: its mode and times are left alone */
	uint32_t depth; /* 0: the target */
	size_t pending; /* 1 for its tree until processed, + entries not finished */
	int ok;         /* created and opened */
	int fresh;      /* made by this restore (mkdirat succeeded): nothing of its own in it */
	int64_t newgid; /* the group a file made in it gets (set-group-ID or ours); -1: unknown */
};

struct rfile {
	struct rdir *dir;
	char *name;   /* owned */
	char tmp[64]; /* the temporary name, when named (else an O_TMPFILE without a name) */
	int named;
	int sized;     /* the last byte was written (else file_finish() sets the size) */
	int made_mode; /* the mode it was made with, umask applied; -1: unknown */
	unsigned mode;
	int64_t mtime_ns;
	uint32_t uid, gid;
	uint64_t size;
	uint32_t nchunks, left; /* chunks, and chunks not ended */
	int fd;                 /* the temporary file, -1 until the first bytes */
	int failed;
	uint64_t link;                   /* its hard-link group, 0: none */
	uint8_t digest[HASH_SHA256_LEN]; /* with link: rlinks_digest() of its chunks */
};

struct rjob {
	struct rjob *next;
	int kind;
	struct rdir *dir;   /* JOB_TREE: the directory the tree fills */
	struct rfile *file; /* JOB_CHUNK */
	uint8_t id[HASH_SHA256_LEN];
	uint64_t off, size; /* JOB_CHUNK: where in the file, bytes */
	struct buf tree;    /* JOB_TREE: its bytes */
	char err[256];      /* a local failure of data() */
};

struct engine {
	const struct restore_opts *o;
	pthread_mutex_t mu, errmu;
	pthread_cond_t cv;
	struct rjob *trees;               /* a stack */
	struct rjob *chunks, *chunk_tail; /* a queue */
	size_t inprogress; /* jobs taken and not done (atomic; reaching 0 under mu) */
	size_t open_dirs;
	int alive;    /* workers still running */
	int abort_rc; /* a reason to stop everything, 0: none */
	char **comp;  /* subpath components */
	size_t ncomp;
	int sub_missing; /* subpath is not in the snapshot */
	int fatal_rc;    /* the first worker's fatal error */
	char fatal_msg[512];
	unsigned long tmpseq;
	long pid;
	int tmpfile; /* TMPFILE_*: how files get their names (tmpfile_probe()) */
	int umask_known;
	unsigned umask_bits;
	uid_t euid;
	gid_t egid;
	struct restore_stats st;
	struct rlinks *links; /* restored files of hard-link groups */
	/* progress (atomics): files and bytes found in the trees so far, and done */
	uint64_t pg_files_seen, pg_bytes_seen, pg_files_done, pg_bytes_done;
	uint64_t pg_last_ms; /* the last call of o->progress */
	pthread_mutex_t pgmu;
};

/* ---- small helpers ---- */

static void report(struct engine *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
report(struct engine *g, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (g->o->error == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&g->errmu);
	g->o->error(g->o->error_arg, msg);
	pthread_mutex_unlock(&g->errmu);
}

/* Writes "a/b/" for directory b in a (nothing for the target); the length written. */
static size_t
path_put(const struct rdir *d, char *out, size_t outlen)
{
	size_t len;

	if (d == NULL || d->parent == NULL)
		return 0;
	len = path_put(d->parent, out, outlen); /* depth <= RESTORE_DEPTH_MAX */
	if (len + 1 < outlen) {
		snprintf(out + len, outlen - len, "%s/", d->name);
		len += strlen(out + len);
	}
	return len;
}

/* The path of name in d relative to the target, for messages ("." for the target). */
static void
path_of(const struct rdir *d, const char *name, char *out, size_t outlen)
{
	size_t len;

	out[0] = '\0';
	len = path_put(d, out, outlen);
	if (len + 1 < outlen)
		snprintf(out + len, outlen - len, "%s", name);
	len = strlen(out);
	if (len > 0 && out[len - 1] == '/')
		out[len - 1] = '\0';
	if (out[0] == '\0')
		snprintf(out, outlen, ".");
}

static unsigned
safe_mode(const struct engine *g, int type, unsigned mode)
{
	mode &= 07777;
	if (g->o->preserve_special_bits)
		return mode;
	mode &= ~(unsigned)(S_ISUID | S_ISGID | S_ISVTX);
	if (type == TREE_DIR)
		mode &= ~(unsigned)S_IWOTH;
	return mode;
}

static void
to_times(int64_t ns, struct timespec ts[2])
{
	ts[0].tv_sec = ns / 1000000000;
	ts[0].tv_nsec = ns % 1000000000;
	if (ts[0].tv_nsec < 0) {
		ts[0].tv_nsec += 1000000000;
		ts[0].tv_sec--;
	}
	ts[1] = ts[0];
}

static void
tmp_name(struct engine *g, char *out, size_t outlen)
{
	unsigned long n = __atomic_add_fetch(&g->tmpseq, 1, __ATOMIC_RELAXED);

	snprintf(out, outlen, ".stepsync-restore.%ld.%lu", g->pid, n);
}

/* Gives the O_TMPFILE fd the name in dirfd (mode: TMPFILE_EMPTY_PATH or TMPFILE_PROC); fails
 * with EEXIST when the name is taken (never replaces, never follows a symlink there). */
static int
link_tmpfile(int mode, int fd, int dirfd, const char *name)
{
	char proc[48];

	if (mode == TMPFILE_EMPTY_PATH)
		return linkat(fd, "", dirfd, name, AT_EMPTY_PATH);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW);
}

/* Whether files can be made unnamed in dirfd (O_TMPFILE) and linked into place, and how:
 * one is tried under a temporary name, then removed. TMPFILE_NONE: temporary names. */
static int
tmpfile_probe(struct engine *g, int dirfd)
{
	char tmp[64];
	int fd, mode;

	if (restore_test_no_tmpfile ||
	    (fd = openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600)) < 0)
		return TMPFILE_NONE;
	tmp_name(g, tmp, sizeof(tmp));
	for (mode = TMPFILE_EMPTY_PATH; mode <= TMPFILE_PROC; mode++)
		if (link_tmpfile(mode, fd, dirfd, tmp) == 0)
			break;
	if (mode <= TMPFILE_PROC)
		unlinkat(dirfd, tmp, 0);
	else
		mode = TMPFILE_NONE;
	close(fd);
	return mode;
}

/* The process's umask, from /proc (reading it with umask() would change it for a moment);
 * 0 or -1. */
static int
read_umask(unsigned *out)
{
	char line[128];
	FILE *fp;
	int r = -1;

	if ((fp = fopen("/proc/self/status", "re")) == NULL)
		return -1;
	while (r != 0 && fgets(line, sizeof(line), fp) != NULL)
		if (sscanf(line, "Umask: %o", out) == 1)
			r = 0;
	fclose(fp);
	return r;
}

/* The mode to make f's file with: its own when nothing special and the umask leaves it whole
 * (an O_TMPFILE has no name until complete: nobody can open it), else 0600; *madep the mode
 * it will have, -1 when the umask is unknown. */
static unsigned
create_mode(const struct engine *g, const struct rfile *f, int unnamed, int *madep)
{
	unsigned m = 0600;

	if (unnamed && g->umask_known && (f->mode & ~0777u) == 0 && (f->mode & 0200) != 0 &&
	    (f->mode & g->umask_bits) == 0)
		m = f->mode;
	*madep = g->umask_known ? (int)(m & ~g->umask_bits) : -1;
	return m;
}

/* The group a file made in the directory fd gets; -1: unknown. */
static int64_t
root_newgid(const struct engine *g, int fd)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return -1;
	return st.st_mode & S_ISGID ? (int64_t)st.st_gid : (int64_t)g->egid;
}

/* Mode, owner and times of an open file or directory; 0 or errno. made_mode and made_gid
 * (-1: unknown) are what a file this restore made has already: not set again. */
static int
set_meta(const struct engine *g, int fd, unsigned mode, uint32_t uid, uint32_t gid, int64_t ns,
    int made_mode, int64_t made_gid)
{
	struct timespec ts[2];

	if (g->o->owner &&
	    (made_gid < 0 || uid != (uint32_t)g->euid || gid != (uint64_t)made_gid) &&
	    fchown(fd, (uid_t)uid, (gid_t)gid) != 0)
		return errno;
	/* (a chown clears only set-user-ID and set-group-ID bits, which made_mode never has) */
	if (made_mode != (int)mode && fchmod(fd, (mode_t)mode) != 0)
		return errno;
	to_times(ns, ts);
	if (futimens(fd, ts) != 0)
		return errno;
	return 0;
}

static void
count_failed(struct engine *g)
{
	ADD(&g->st.failed, 1);
}

/* Calls o->progress when 100 ms have passed since the last call (or final), one at a time. */
static void
progress_tick(struct engine *g, int final)
{
	uint64_t now, last;

	if (g->o->progress == NULL)
		return;
	now = util_now_ms();
	last = __atomic_load_n(&g->pg_last_ms, __ATOMIC_RELAXED);
	if (!final && (now - last < 100 || pthread_mutex_trylock(&g->pgmu) != 0))
		return;
	if (final)
		pthread_mutex_lock(&g->pgmu);
	__atomic_store_n(&g->pg_last_ms, now, __ATOMIC_RELAXED);
	g->o->progress(g->o->progress_arg, __atomic_load_n(&g->pg_files_done, __ATOMIC_RELAXED),
	    __atomic_load_n(&g->pg_files_seen, __ATOMIC_RELAXED),
	    __atomic_load_n(&g->pg_bytes_done, __ATOMIC_RELAXED),
	    __atomic_load_n(&g->pg_bytes_seen, __ATOMIC_RELAXED), final);
	pthread_mutex_unlock(&g->pgmu);
}

/* One file done (restored, failed or left as it was), bytes of it not counted yet. */
static void
progress_file(struct engine *g, uint64_t bytes)
{
	ADD(&g->pg_files_done, 1);
	if (bytes > 0)
		ADD(&g->pg_bytes_done, bytes);
	progress_tick(g, 0);
}

/* A file of hard-link group link was restored as name in d: noted for restore_links.c. */
static void
link_record(struct engine *g, const struct rdir *d, const char *name, uint64_t link,
    const uint8_t digest[HASH_SHA256_LEN])
{
	char dir[1024] = "";
	size_t len;

	if (link == 0)
		return;
	len = path_put(d, dir, sizeof(dir));
	if (len > 0 && dir[len - 1] == '/')
		dir[len - 1] = '\0';
	if (rlinks_add(g->links, link, digest, dir, name, d->mtime_ns, d->meta) != 0)
		report(g, "out of memory: '%s%s%s' is restored as a copy, not a hard link", dir,
		    *dir ? "/" : "", name);
}

/* ---- directories ---- */

/* One entry of d finished (or its tree was processed): the last one finishes d, which
 * finishes its parent in turn. */
static void
dir_release(struct engine *g, struct rdir *d)
{
	char path[1024];
	int e;

	while (d != NULL) {
		struct rdir *parent = d->parent;

		if (__atomic_sub_fetch(&d->pending, 1, __ATOMIC_ACQ_REL) > 0)
			return;
		if (d->fd >= 0)
			__atomic_sub_fetch(&g->open_dirs, 1, __ATOMIC_RELAXED);
		if (d->ok && d->meta)
			ADD(&g->st.dirs, 1);
		if (d->fd >= 0) {
			if (d->meta &&
			    (e = set_meta(
			         g, d->fd, d->mode, d->uid, d->gid, d->mtime_ns, -1, -1)) != 0) {
				path_of(d, "", path, sizeof(path));
				report(g, "cannot set the mode or time of '%s': %s", path,
				    strerror(e));
			}
			close(d->fd);
		}
		free(d->name);
		free(d);
		d = parent;
	}
}

/* The tree of d arrived: creates and opens d below its parent (the target is open
 * already). 0, or -1 after a report. */
static int
dir_open(struct engine *g, struct rdir *d)
{
	char path[1024];
	struct stat st;
	int fd;

	if (d->parent == NULL)
		return 0;
	if (mkdirat(d->parent->fd, d->name, 0700) == 0) {
		d->fresh = 1;
	} else if (errno != EEXIST) {
		path_of(d, "", path, sizeof(path));
		report(g, "cannot create directory '%s': %s", path, strerror(errno));
		return -1;
	}
	fd = openat(d->parent->fd, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		path_of(d, "", path, sizeof(path));
		report(g, "refusing '%s': %s", path,
		    errno == ELOOP || errno == ENOTDIR
		        ? "something that is not a directory (a symlink?) is in the way"
		        : strerror(errno));
		return -1;
	}
	/* an existing directory we cannot write into (an earlier restore's 0555) gets its
	 * final mode at the end anyway */
	d->newgid = -1;
	if (fstat(fd, &st) == 0) {
		if ((st.st_mode & 0700) != 0700 && st.st_uid == g->euid)
			fchmod(fd, (st.st_mode & 07777) | 0700);
		d->newgid = st.st_mode & S_ISGID ? (int64_t)st.st_gid : (int64_t)g->egid;
	}
	d->fd = fd; /* seen by other threads through the queue's lock */
	d->ok = 1;
	ADD(&g->open_dirs, 1);
	return 0;
}

/* ---- files ---- */

/* Gives f (complete, verified, its metadata set) its name: linked there (an O_TMPFILE) or
 * renamed from its temporary name; over what took the name meanwhile (--overwrite, or
 * something made in the target during the restore), as a rename does. 0 or errno. */
static int
file_place(struct engine *g, struct rfile *f)
{
	int dfd = f->dir->fd;

	if (!f->named) {
		if (link_tmpfile(g->tmpfile, f->fd, dfd, f->name) == 0)
			return 0;
		if (errno != EEXIST)
			return errno;
		tmp_name(g, f->tmp, sizeof(f->tmp));
		if (link_tmpfile(g->tmpfile, f->fd, dfd, f->tmp) != 0)
			return errno;
		f->named = 1;
	}
	return renameat(dfd, f->tmp, dfd, f->name) == 0 ? 0 : errno;
}

/* The last chunk of f ended: into place with its metadata, or clean up. */
static void
file_finish(struct engine *g, struct rfile *f)
{
	char path[1024];
	int e = 0;

	if (!f->failed && f->fd < 0)
		f->failed = 1; /* cannot happen: every chunk has bytes */
	if (!f->failed) {
		/* the size, for a file that ends in a hole (chunk_write() left it unwritten) */
		if ((!f->sized && ftruncate(f->fd, (off_t)f->size) != 0 && (e = errno) != 0) ||
		    (e = set_meta(g, f->fd, f->mode, f->uid, f->gid, f->mtime_ns, f->made_mode,
		         f->dir->newgid)) != 0 ||
		    (e = file_place(g, f)) != 0) {
			path_of(f->dir, f->name, path, sizeof(path));
			report(g, "cannot restore '%s': %s", path, strerror(e));
			f->failed = 1;
		}
	}
	if (f->failed && f->named)
		unlinkat(f->dir->fd, f->tmp, 0);
	if (f->fd >= 0)
		close(f->fd);
	if (f->failed) {
		ADD(&g->st.failed, 1);
	} else {
		ADD(&g->st.files, 1);
		ADD(&g->st.bytes, f->size);
		link_record(g, f->dir, f->name, f->link, f->digest);
	}
	progress_file(g, 0);
	dir_release(g, f->dir);
	free(f->name);
	free(f);
}

/* A chunk of f ended with rc (msg says why when rc != 0; NULL: quietly). */
static void
chunk_end(struct engine *g, struct rjob *j, int rc, const char *msg)
{
	struct rfile *f = j->file;
	char path[1024];

	if (rc != 0 && __atomic_exchange_n(&f->failed, 1, __ATOMIC_ACQ_REL) == 0 && msg != NULL) {
		path_of(f->dir, f->name, path, sizeof(path));
		report(g, "cannot restore '%s': %s", path, j->err[0] ? j->err : msg);
	}
	/* A large chunk's pages start for the disk now, so that the final syncfs() finds little
	 * left to write: a 1 GiB restore spent a quarter of its time in it. */
	if (rc == 0 && j->size >= FLUSH_EARLY_MIN && !g->o->no_flush && f->fd >= 0)
		(void)sync_file_range(f->fd, (off_t)j->off, (off_t)j->size, SYNC_FILE_RANGE_WRITE);
	/* the last chunk to end finishes the file; acq_rel makes the others' writes its own */
	if (__atomic_sub_fetch(&f->left, 1, __ATOMIC_ACQ_REL) == 0)
		file_finish(g, f);
}

/* f's temporary file in *fdp, opened by whichever chunk comes first (under the lock when
 * several chunks may race for it). */
static int
file_fd(struct engine *g, struct rjob *j, int *fdp)
{
	struct rfile *f = j->file;
	int e = 0;

	if (f->nchunks > 1)
		pthread_mutex_lock(&g->mu);
	if (f->fd < 0 && g->tmpfile != TMPFILE_NONE) {
		/* no name until it is complete and verified (file_place()) */
		f->fd = openat(f->dir->fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC,
		    create_mode(g, f, 1, &f->made_mode));
		if (f->fd < 0 && errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
			e = errno;
	}
	if (f->fd < 0 && e == 0) {
		tmp_name(g, f->tmp, sizeof(f->tmp));
		f->fd =
		    openat(f->dir->fd, f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		        create_mode(g, f, 0, &f->made_mode));
		if (f->fd < 0)
			e = errno;
		else
			f->named = 1;
	}
	*fdp = f->fd;
	if (f->nchunks > 1)
		pthread_mutex_unlock(&g->mu);
	if (e != 0) {
		snprintf(j->err, sizeof(j->err), "cannot create a file in its directory: %s",
		    strerror(e));
		return STEP_ESYS;
	}
	return 0;
}

static int
all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* The length of the run at p (file offset off, n bytes left) to write: up to the next
 * aligned HOLE_BLOCK of zeros. */
static size_t
data_run(const uint8_t *p, size_t n, uint64_t off)
{
	size_t run = HOLE_BLOCK - (size_t)(off % HOLE_BLOCK), seg;

	if (run > n)
		return n;
	while (run < n) {
		seg = n - run < HOLE_BLOCK ? n - run : HOLE_BLOCK;
		if (seg == HOLE_BLOCK && all_zero(p + run, seg))
			break;
		run += seg;
	}
	return run;
}

/*
 * Writes n bytes at off into the new (empty) file fd, leaving every aligned HOLE_BLOCK of
 * zeros unwritten: it reads as zeros, and a sparse file stays sparse (file_finish() sets
 * the size). 0, or errno.
 */
static int
write_sparse(int fd, const uint8_t *p, size_t n, uint64_t off, uint64_t *endp)
{
	size_t i = 0, run, done;
	ssize_t k;

	while (i < n) {
		if ((off + i) % HOLE_BLOCK == 0 && n - i >= HOLE_BLOCK &&
		    all_zero(p + i, HOLE_BLOCK)) {
			i += HOLE_BLOCK;
			continue;
		}
		run = data_run(p + i, n - i, off + i);
		for (done = 0; done < run; done += (size_t)k) {
			k = pwrite(fd, p + i + done, run - done, (off_t)(off + i + done));
			if (k < 0 && errno == EINTR)
				k = 0;
			else if (k < 0)
				return errno;
		}
		i += run;
		*endp = off + i;
	}
	return 0;
}

static int
chunk_write(struct engine *g, struct rjob *j, uint64_t off, const uint8_t *p, size_t n)
{
	uint64_t end = 0;
	int fd, r, e;

	if (off + n > j->size) {
		snprintf(j->err, sizeof(j->err), "the server sent more bytes than the chunk has");
		return STEP_EPROTO;
	}
	if ((r = file_fd(g, j, &fd)) != 0)
		return r;
	if ((e = write_sparse(fd, p, n, j->off + off, &end)) != 0) {
		snprintf(j->err, sizeof(j->err), "cannot write: %s", strerror(e));
		return STEP_ESYS;
	}
	if (end == j->file->size) /* seen by file_finish() through chunk_end()'s acq_rel */
		__atomic_store_n(&j->file->sized, 1, __ATOMIC_RELAXED);
	ADD(&g->pg_bytes_done, n);
	progress_tick(g, 0);
	return 0;
}

/* ---- the queues ---- */

/* Hands a batch of jobs over (trees onto the stack, chunks to the queue's end). */
static void
enqueue(struct engine *g, struct rjob *trees, struct rjob *chunks, struct rjob *chunks_tail)
{
	struct rjob *j, *nx;

	if (trees == NULL && chunks == NULL)
		return;
	pthread_mutex_lock(&g->mu);
	for (j = trees; j != NULL; j = nx) {
		nx = j->next;
		j->next = g->trees;
		g->trees = j;
	}
	if (chunks != NULL) {
		if (g->chunk_tail != NULL)
			g->chunk_tail->next = chunks;
		else
			g->chunks = chunks;
		g->chunk_tail = chunks_tail;
	}
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static void
job_free(struct rjob *j)
{
	if (j == NULL)
		return;
	buf_release(&j->tree);
	free(j);
}

/* ---- a tree's entries ---- */

struct batch {
	struct rjob *trees;
	struct rjob *chunks, *tail;
};

static int
make_empty_file(struct engine *g, struct rdir *d, const struct tree_entry *e, const char *name)
{
	char tmp[64];
	int fd, err;

	tmp_name(g, tmp, sizeof(tmp));
	fd = openat(d->fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno;
	err =
	    set_meta(g, fd, safe_mode(g, TREE_FILE, e->mode), e->uid, e->gid, e->mtime_ns, -1, -1);
	if (err == 0 && renameat(d->fd, tmp, d->fd, name) != 0)
		err = errno;
	if (err != 0)
		unlinkat(d->fd, tmp, 0);
	close(fd);
	return err;
}

static int
make_symlink(struct engine *g, struct rdir *d, const struct tree_entry *e, const char *name)
{
	char tmp[64], target[TREE_TARGET_MAX + 1];
	struct timespec ts[2];
	int err = 0;

	memcpy(target, e->target, e->targetlen);
	target[e->targetlen] = '\0';
	tmp_name(g, tmp, sizeof(tmp));
	if (symlinkat(target, d->fd, tmp) != 0)
		return errno;
	if (g->o->owner &&
	    fchownat(d->fd, tmp, (uid_t)e->uid, (gid_t)e->gid, AT_SYMLINK_NOFOLLOW) != 0)
		err = errno;
	to_times(e->mtime_ns, ts);
	if (err == 0 && utimensat(d->fd, tmp, ts, AT_SYMLINK_NOFOLLOW) != 0)
		err = errno;
	if (err == 0 && renameat(d->fd, tmp, d->fd, name) != 0)
		err = errno;
	if (err != 0)
		unlinkat(d->fd, tmp, 0);
	return err;
}

/* A directory entry: a new rdir and a job for its tree, unless it names an ancestor. */
static int
add_subdir(
    struct engine *g, struct rdir *d, const struct tree_entry *e, const char *name, struct batch *b)
{
	char path[1024];
	struct rdir *a, *s;
	struct rjob *j;

	for (a = d; a != NULL && d->depth < RESTORE_DEPTH_MAX; a = a->parent)
		if (memcmp(a->id, e->subtree, HASH_SHA256_LEN) == 0)
			break;
	if (a != NULL || d->depth >= RESTORE_DEPTH_MAX) {
		path_of(d, name, path, sizeof(path));
		report(g, "refusing '%s': %s", path,
		    a != NULL ? "its tree names one of its ancestors"
		              : "directories nested too deep");
		return -1;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL || (s->name = strdup(name)) == NULL ||
	    (j = calloc(1, sizeof(*j))) == NULL) {
		if (s != NULL)
			free(s->name);
		free(s);
		report(g, "out of memory");
		return -1;
	}
	s->parent = d;
	s->fd = -1;
	memcpy(s->id, e->subtree, HASH_SHA256_LEN);
	s->mode = safe_mode(g, TREE_DIR, e->mode);
	s->mtime_ns = e->mtime_ns;
	s->uid = e->uid;
	s->gid = e->gid;
	s->meta = 1;
	s->depth = d->depth + 1;
	s->pending = 1;
	j->kind = JOB_TREE;
	j->dir = s;
	memcpy(j->id, e->subtree, HASH_SHA256_LEN);
	buf_init(&j->tree, TREE_MAX_BYTES);
	j->next = b->trees;
	b->trees = j;
	ADD(&d->pending, 1);
	return 0;
}

/* A file with chunks: an rfile and a job per chunk. */
static int
add_file(
    struct engine *g, struct rdir *d, const struct tree_entry *e, const char *name, struct batch *b)
{
	struct rjob *first = NULL, *last = NULL, *j;
	struct rfile *f;
	uint64_t off = 0;

	if ((f = calloc(1, sizeof(*f))) == NULL || (f->name = strdup(name)) == NULL) {
		free(f);
		report(g, "out of memory");
		return -1;
	}
	f->dir = d;
	f->fd = -1;
	f->mode = safe_mode(g, TREE_FILE, e->mode);
	f->mtime_ns = e->mtime_ns;
	f->uid = e->uid;
	f->gid = e->gid;
	f->size = e->size;
	f->nchunks = f->left = (uint32_t)e->nchunks;
	if ((f->link = e->link) != 0)
		rlinks_digest(e, f->digest);
	for (size_t i = 0; i < e->nchunks; i++) {
		if ((j = calloc(1, sizeof(*j))) == NULL) {
			while (first != NULL) {
				j = first->next;
				free(first);
				first = j;
			}
			free(f->name);
			free(f);
			report(g, "out of memory");
			return -1;
		}
		j->kind = JOB_CHUNK;
		j->file = f;
		memcpy(j->id, e->chunks[i].id, HASH_SHA256_LEN);
		j->off = off;
		j->size = e->chunks[i].size;
		off += j->size;
		if (last != NULL)
			last->next = j;
		else
			first = j;
		last = j;
	}
	if (b->tail != NULL)
		b->tail->next = first;
	else
		b->chunks = first;
	b->tail = last;
	ADD(&d->pending, 1);
	return 0;
}

/* 1 when the regular file fd holds exactly e's chunks. */
static int
same_content(int fd, const struct tree_entry *e)
{
	uint8_t *p = NULL, id[HASH_SHA256_LEN];
	size_t i, cap = 0;
	uint64_t off = 0;
	ssize_t n;
	int same = 1;

	for (i = 0; same && i < e->nchunks; i++) {
		size_t want = (size_t)e->chunks[i].size, got = 0;

		if (want > cap) {
			free(p);
			if ((p = malloc(want)) == NULL)
				return 0;
			cap = want;
		}
		while (got < want && (n = pread(fd, p + got, want - got, (off_t)(off + got))) > 0)
			got += (size_t)n;
		hash_sha256(p, got, id);
		same = got == want && memcmp(id, e->chunks[i].id, sizeof(id)) == 0;
		off += want;
	}
	free(p);
	return same;
}

/*
 * An entry (file or symlink) whose name is taken in d already: 0 to restore it over what
 * is there, 1 to leave what is there (identical, or kept by the policy: reported).
 */
static int
existing(struct engine *g, struct rdir *d, const struct tree_entry *e, const char *name)
{
	char path[1024], target[TREE_TARGET_MAX + 2];
	struct stat st;
	ssize_t n;
	int fd, same = 0;

	if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return 0; /* nothing there (or nothing we can see: the restore says why) */
	if (e->type == TREE_FILE && S_ISREG(st.st_mode) && (uint64_t)st.st_size == e->size) {
		fd = openat(d->fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
		same = fd >= 0 && same_content(fd, e);
		if (fd >= 0)
			close(fd);
	} else if (e->type == TREE_SYMLINK && S_ISLNK(st.st_mode)) {
		n = readlinkat(d->fd, name, target, sizeof(target));
		same = n == (ssize_t)e->targetlen && memcmp(target, e->target, e->targetlen) == 0;
	}
	if (same) {
		ADD(&g->st.unchanged, 1);
		return 1;
	}
	switch (g->o->overwrite) {
	case RESTORE_OVERWRITE_ALWAYS:
	case RESTORE_OVERWRITE_IF_CHANGED:
		return 0;
	case RESTORE_OVERWRITE_IF_NEWER:
		if (e->mtime_ns > (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec)
			return 0;
		ADD(&g->st.kept, 1);
		return 1;
	}
	path_of(d, name, path, sizeof(path));
	report(g,
	    "'%s' is already there and differs from the snapshot; left alone "
	    "(--overwrite replaces it)",
	    path);
	ADD(&g->st.kept, 1);
	return 1;
}

/* One entry of d's tree. */
static void
add_entry(struct engine *g, struct rdir *d, const struct tree_entry *e, struct batch *b)
{
	char name[TREE_NAME_MAX + 1], path[1024];
	int err = 0, r = 0;

	memcpy(name, e->name, e->namelen);
	name[e->namelen] = '\0';
	if (e->type == TREE_FILE) {
		ADD(&g->pg_files_seen, 1);
		ADD(&g->pg_bytes_seen, e->size);
	}
	/* in a directory this restore made, nothing can be in the way but what another
	 * process put there since: replaced, as one that came after the look would be */
	if (e->type != TREE_DIR && !d->fresh && existing(g, d, e, name)) {
		if (e->type == TREE_FILE)
			progress_file(g, e->size);
		return;
	}
	switch (e->type) {
	case TREE_DIR:
		r = add_subdir(g, d, e, name, b);
		break;
	case TREE_FILE:
		if (e->nchunks > 0) {
			r = add_file(g, d, e, name, b);
			break;
		}
		progress_file(g, 0);
		if ((err = make_empty_file(g, d, e, name)) == 0) {
			uint8_t digest[HASH_SHA256_LEN];

			ADD(&g->st.files, 1);
			rlinks_digest(e, digest);
			link_record(g, d, name, e->link, digest);
		}
		break;
	default:
		if ((err = make_symlink(g, d, e, name)) == 0)
			ADD(&g->st.symlinks, 1);
		break;
	}
	if (err != 0) {
		path_of(d, name, path, sizeof(path));
		report(g, "cannot restore '%s': %s", path, strerror(err));
	}
	if (err != 0 || r != 0)
		count_failed(g);
}

/* The tree of d arrived (verified): its entries become work. */
static void
process_tree(struct engine *g, struct rdir *d, const uint8_t *data, size_t len)
{
	struct batch b = { NULL, NULL, NULL };
	struct tree_reader r;
	struct tree_entry e;
	const char *want = NULL;
	char path[1024];
	int rc, found = 0;

	if (g->ncomp > 0 && d->depth < g->ncomp)
		want = g->comp[d->depth];
	if ((rc = tree_reader_init(&r, data, len)) == 0) {
		while ((rc = tree_reader_next(&r, &e)) == 1) {
			if (want != NULL &&
			    (e.namelen != strlen(want) || memcmp(e.name, want, e.namelen) != 0))
				continue;
			if (want != NULL && d->depth + 1 < g->ncomp && e.type != TREE_DIR)
				break; /* a file where the subpath needs a directory */
			found = 1;
			add_entry(g, d, &e, &b);
		}
	}
	tree_reader_release(&r);
	if (rc < 0) {
		char key[FETCH_KEY_MAX];

		manifest_tree_key(d->id, key, sizeof(key));
		path_of(d, "", path, sizeof(path));
		report(g, "the tree of '%s' (object %s) is %s; some entries were not restored",
		    path, key, rc == STEP_EINVAL ? "unsafe" : "malformed");
		count_failed(g);
	}
	if (want != NULL && !found && rc >= 0)
		__atomic_store_n(&g->sub_missing, 1, __ATOMIC_RELAXED);
	enqueue(g, b.trees, b.chunks, b.tail);
}

/* ---- fetch.c's callbacks (arg: the worker) ---- */

struct worker {
	struct engine *g;
	pthread_t th;
	struct fetch_stats fs;
	struct rjob *local; /* jobs taken from the queues, not yet handed to fetch.c */
	unsigned calls;     /* next() calls, for STOP_EVERY */
	int rc;
};

/* Takes work from the queues into w->local (mu held): a tree, or a batch of chunks. 1 when
 * something was taken. */
static int
take_batch(struct engine *g, struct worker *w)
{
	struct rjob *j, **tail = &w->local;
	uint64_t bytes = 0;
	size_t n = 0;

	if (g->trees != NULL &&
	    (g->chunks == NULL ||
	        __atomic_load_n(&g->open_dirs, __ATOMIC_RELAXED) < DIR_FD_BUDGET)) {
		j = g->trees;
		g->trees = j->next;
		j->next = NULL;
		w->local = j;
		ADD(&g->inprogress, 1);
		return 1;
	}
	while ((j = g->chunks) != NULL && n < BATCH_JOBS &&
	    (n == 0 || bytes + j->size <= BATCH_BYTES)) {
		if ((g->chunks = j->next) == NULL)
			g->chunk_tail = NULL;
		j->next = NULL;
		*tail = j;
		tail = &j->next;
		bytes += j->size;
		n++;
	}
	ADD(&g->inprogress, n);
	return n > 0;
}

/* Gives w's untaken jobs back to the queue (mu held). */
static void
give_back(struct engine *g, struct worker *w)
{
	struct rjob *j;

	while ((j = w->local) != NULL) {
		w->local = j->next;
		__atomic_sub_fetch(&g->inprogress, 1, __ATOMIC_RELAXED);
		if (j->kind == JOB_TREE) {
			j->next = g->trees;
			g->trees = j;
		} else {
			j->next = g->chunks;
			g->chunks = j;
			if (g->chunk_tail == NULL)
				g->chunk_tail = j;
		}
	}
}

static int
eng_next(void *arg, int may_block, struct fetch_obj *o)
{
	struct worker *w = arg;
	struct engine *g = w->g;
	struct rjob *j;

	if (w->local == NULL || ++w->calls % STOP_EVERY == 0 ||
	    __atomic_load_n(&g->abort_rc, __ATOMIC_RELAXED) != 0) {
		pthread_mutex_lock(&g->mu);
		for (;;) {
			if (g->abort_rc == 0 && util_stop_pending())
				g->abort_rc = STEP_ESTOPPED;
			if (g->abort_rc != 0) {
				give_back(g, w);
				pthread_cond_broadcast(&g->cv);
				pthread_mutex_unlock(&g->mu);
				return FETCH_END;
			}
			if (w->local != NULL || take_batch(g, w))
				break;
			if (__atomic_load_n(&g->inprogress, __ATOMIC_RELAXED) == 0) {
				pthread_cond_broadcast(&g->cv);
				pthread_mutex_unlock(&g->mu);
				return FETCH_END;
			}
			if (!may_block) {
				pthread_mutex_unlock(&g->mu);
				return FETCH_NONE;
			}
			pthread_cond_wait(&g->cv, &g->mu);
		}
		pthread_mutex_unlock(&g->mu);
	}
	j = w->local;
	w->local = j->next;
	j->next = NULL;
	memset(o, 0, sizeof(*o));
	if (j->kind == JOB_TREE)
		manifest_tree_key(j->id, o->key, sizeof(o->key));
	else
		manifest_object_key(j->id, o->key, sizeof(o->key));
	memcpy(o->id, j->id, HASH_SHA256_LEN);
	o->arg = j;
	if (j->kind == JOB_TREE) {
		o->size = FETCH_SIZE_UNKNOWN;
		o->max_size = TREE_MAX_BYTES;
	} else {
		o->size = j->size;
	}
	return 1;
}

static int
eng_data(void *arg, const struct fetch_obj *o, uint64_t off, const uint8_t *p, size_t n)
{
	struct worker *w = arg;
	struct rjob *j = o->arg;

	if (j->kind == JOB_CHUNK)
		return chunk_write(w->g, j, off, p, n);
	if (off == 0)
		buf_reset(&j->tree);
	if (off != buf_avail(&j->tree)) {
		snprintf(j->err, sizeof(j->err), "tree bytes out of order");
		return STEP_EPROTO;
	}
	return buf_append(&j->tree, p, n);
}

/* One job is finished with: the last one wakes the workers waiting for work. */
static void
job_done(struct engine *g)
{
	pthread_mutex_lock(&g->mu);
	if (__atomic_sub_fetch(&g->inprogress, 1, __ATOMIC_RELAXED) == 0 && g->trees == NULL &&
	    g->chunks == NULL)
		pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static void
tree_done(struct engine *g, struct rjob *j, int rc, const char *msg)
{
	struct rdir *d = j->dir;
	char path[1024];

	if (rc != 0 && msg != NULL) {
		path_of(d, "", path, sizeof(path));
		report(g, "cannot restore '%s': %s", path, j->err[0] ? j->err : msg);
		count_failed(g);
	}
	if (rc == 0) {
		ADD(&g->st.trees, 1);
		if (dir_open(g, d) == 0)
			process_tree(g, d, buf_ptr(&j->tree), buf_avail(&j->tree));
		else
			count_failed(g);
	}
	dir_release(g, d); /* its tree is processed */
	job_free(j);
}

static void
eng_done(void *arg, const struct fetch_obj *o, int rc, const char *msg)
{
	struct worker *w = arg;
	struct rjob *j = o->arg;

	if (j->kind == JOB_TREE) {
		tree_done(w->g, j, rc, msg);
		job_done(w->g);
		return;
	}
	chunk_end(w->g, j, rc, msg);
	job_free(j);
	/* a chunk of a batch: the lock only for the batch's last, or when it may matter */
	if (w->local != NULL)
		__atomic_sub_fetch(&w->g->inprogress, 1, __ATOMIC_RELAXED);
	else
		job_done(w->g);
}

static const struct fetch_ops eng_ops = { eng_next, eng_data, eng_done };

/* ---- workers ---- */

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct engine *g = w->g;
	struct client *c = NULL;
	char msg[512] = "out of memory";

	if ((w->rc = client_new(g->o->client, &c)) == 0) {
		w->rc = fetch_run(c, &eng_ops, w, &w->fs);
		if (w->rc != 0)
			snprintf(msg, sizeof(msg), "%s", client_error(c));
	}
	client_free(c);
	pthread_mutex_lock(&g->mu);
	give_back(g, w); /* a worker that gave up leaves its batch to the others */
	if (w->rc != 0 && g->fatal_rc == 0) {
		g->fatal_rc = w->rc;
		snprintf(g->fatal_msg, sizeof(g->fatal_msg), "%s", msg);
	}
	if (--g->alive == 0 && (g->trees != NULL || g->chunks != NULL) && g->abort_rc == 0)
		g->abort_rc = w->rc != 0 ? w->rc : STEP_EIO;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

/* After the workers: what was never fetched fails quietly (one sentence says why). */
static void
drain(struct engine *g)
{
	struct rjob *j;

	for (;;) {
		pthread_mutex_lock(&g->mu);
		if ((j = g->trees) != NULL) {
			g->trees = j->next;
		} else if ((j = g->chunks) != NULL) {
			if ((g->chunks = j->next) == NULL)
				g->chunk_tail = NULL;
		}
		pthread_mutex_unlock(&g->mu);
		if (j == NULL)
			return;
		if (j->kind == JOB_TREE) {
			count_failed(g);
			tree_done(g, j, STEP_EIO, NULL);
		} else {
			chunk_end(g, j, STEP_EIO, NULL);
			job_free(j);
		}
	}
}

/* Splits subpath into g->comp; 0 or STEP_EINVAL / STEP_ENOMEM. */
static int
split_subpath(struct engine *g, const char *subpath)
{
	const char *p = subpath, *s;
	size_t n;

	while (p != NULL && *p != '\0') {
		s = strchr(p, '/');
		n = s ? (size_t)(s - p) : strlen(p);
		if (n > 0) {
			char **nc;

			if (n > TREE_NAME_MAX || (n == 1 && p[0] == '.') ||
			    (n == 2 && p[0] == '.' && p[1] == '.') || g->ncomp >= RESTORE_DEPTH_MAX)
				return STEP_EINVAL;
			if ((nc = realloc(g->comp, (g->ncomp + 1) * sizeof(*nc))) == NULL)
				return STEP_ENOMEM;
			g->comp = nc;
			if ((g->comp[g->ncomp] = strndup(p, n)) == NULL)
				return STEP_ENOMEM;
			g->ncomp++;
		}
		p = s ? s + 1 : NULL;
	}
	return STEP_OK;
}

/* More descriptors, when the hard limit allows: directories stay open while in use. */
static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Starts nconn workers on w (as many as the system lets start; none is an abort) and
 * waits for them all. */
static void
run_workers(struct engine *g, struct worker *w, int nconn)
{
	int started;

	g->alive = nconn;
	for (started = 0; started < nconn; started++) {
		w[started].g = g;
		if (pthread_create(&w[started].th, NULL, worker_main, &w[started]) != 0)
			break;
	}
	if (started < nconn) {
		pthread_mutex_lock(&g->mu);
		g->alive -= nconn - started;
		if (started == 0)
			g->abort_rc = STEP_ENOMEM;
		pthread_mutex_unlock(&g->mu);
	}
	for (int i = 0; i < started; i++) {
		pthread_join(w[i].th, NULL);
		g->st.requests += w[i].fs.requests;
	}
}

static void
link_report(void *arg, const char *msg)
{
	report(arg, "%s", msg);
}

/* After the workers: the names of each hard-link group become links of one inode. */
static void
relink(struct engine *g, int targetfd)
{
	uint64_t failed = 0;

	g->st.hardlinks = rlinks_apply(g->links, targetfd, link_report, g, &failed);
	g->st.failed += failed;
}

static void
engine_init(struct engine *g, const struct restore_opts *o)
{
	memset(g, 0, sizeof(*g));
	g->o = o;
	g->pid = (long)getpid();
	g->euid = geteuid();
	g->egid = getegid();
	g->umask_known = read_umask(&g->umask_bits) == 0;
	pthread_mutex_init(&g->mu, NULL);
	pthread_mutex_init(&g->errmu, NULL);
	pthread_mutex_init(&g->pgmu, NULL);
	pthread_cond_init(&g->cv, NULL);
}

int
restore_tree(const struct restore_opts *o, const uint8_t root[HASH_SHA256_LEN], const char *subpath,
    struct restore_stats *st)
{
	struct engine g;
	struct worker *w = NULL;
	struct rdir *rd = NULL;
	struct rjob *j = NULL;
	int nconn = o->nconn > 0 ? o->nconn : 4, flushfd = -1, r;

	engine_init(&g, o);
	if (o->client == NULL || o->target == NULL || nconn > RESTORE_CONN_MAX) {
		r = STEP_EINVAL;
		goto out;
	}
	if ((r = split_subpath(&g, subpath)) != 0) {
		if (r == STEP_EINVAL)
			report(&g, "bad path '%s' (no '.' or '..' components)", subpath);
		goto out;
	}
	raise_nofile();
	if (rlinks_new(&g.links) != 0 || (rd = calloc(1, sizeof(*rd))) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	rd->fd = -1;
	if ((rd->name = strdup("")) == NULL || (j = calloc(1, sizeof(*j))) == NULL ||
	    (w = calloc((size_t)nconn, sizeof(*w))) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	if (util_mkdirs(o->target, 0755) != 0 ||
	    (rd->fd = open(o->target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (flushfd = dup(rd->fd)) < 0) {
		report(&g, "cannot open '%s': %s", o->target, strerror(errno));
		r = STEP_ESYS;
		goto out;
	}
	g.tmpfile = tmpfile_probe(&g, rd->fd);
	rd->newgid = root_newgid(&g, rd->fd);
	memcpy(rd->id, root, HASH_SHA256_LEN);
	rd->ok = 1;
	rd->pending = 1;
	g.open_dirs = 1;
	j->kind = JOB_TREE;
	j->dir = rd;
	memcpy(j->id, root, HASH_SHA256_LEN);
	buf_init(&j->tree, TREE_MAX_BYTES);
	g.trees = j;
	rd = NULL;
	j = NULL;

	run_workers(&g, w, nconn);
	drain(&g);
	if (g.abort_rc == 0)
		relink(&g, flushfd);
	progress_tick(&g, 1);
	if (g.abort_rc != 0 && g.abort_rc != STEP_EIO)
		report(&g, "restore stopped: %s",
		    g.abort_rc == STEP_ESTOPPED ? "interrupted"
		        : g.fatal_msg[0]        ? g.fatal_msg
		                                : step_strerror(g.abort_rc));
	if (!o->no_flush && syncfs(flushfd) != 0) {
		report(&g, "cannot flush '%s' to disk: %s", o->target, strerror(errno));
		r = STEP_ESYS;
		goto out;
	}
	if (g.abort_rc != 0 && g.abort_rc != STEP_EIO)
		r = g.abort_rc;
	else if (g.sub_missing)
		r = STEP_ENOENT;
	else
		r = g.st.failed > 0 ? STEP_EIO : 0;
	if (g.sub_missing)
		report(&g, "'%s' is not in the snapshot", subpath);
out:
	if (st != NULL)
		*st = g.st;
	if (rd != NULL) {
		if (rd->fd >= 0)
			close(rd->fd);
		free(rd->name);
		free(rd);
	}
	job_free(j);
	free(w);
	if (flushfd >= 0)
		close(flushfd);
	for (size_t i = 0; i < g.ncomp; i++)
		free(g.comp[i]);
	free(g.comp);
	rlinks_free(g.links);
	pthread_cond_destroy(&g.cv);
	pthread_mutex_destroy(&g.mu);
	pthread_mutex_destroy(&g.errmu);
	pthread_mutex_destroy(&g.pgmu);
	return r;
}
