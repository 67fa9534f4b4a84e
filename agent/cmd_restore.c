/*
 * cmd_restore.c — `stepsync restore`: rebuild a snapshot's tree from nothing but the
 * server and the credentials.
 *
 * The manifest is hostile until proven otherwise: manifest.c refuses absolute paths and
 * ".." components, and here every parent directory is opened component by component
 * with O_NOFOLLOW, so a symlink restored earlier (or planted in --to) is never written
 * through. Files are downloaded to a temporary name, MD5-checked and renamed; symlinks
 * are created as links and never followed; directories get their mode and mtime last,
 * deepest first, once nothing more is written into them.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "cmd.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "manifest.h"
#include "progress.h"
#include "snapshot.h"
#include "restore.h"
#include "util.h"

struct restore_dir {
	char *path;
	unsigned mode;
	int64_t mtime_ns;
};

struct restore_run {
	struct agent *a;
	struct client *c;
	const char *to;
	int rootfd;
	unsigned long tmpseq;
	struct restore_dir *dirs;
	size_t ndirs, capdirs;
	uint64_t files, dirs_done, symlinks, bytes, failed;
	int special;   /* --preserve-special-bits */
	int overwrite; /* enum restore_overwrite */
	uint64_t kept, unchanged;
	uint64_t hardlinks;  /* names made hard links of another restored file */
	const char *subpath; /* --path, NULL: everything */
	size_t sublen;
	int fatal; /* a client error that ends the restore (server gone) */
};

/* The mode to give a restored entry: setuid, setgid and sticky bits, and write access for
 * everyone on a directory, only with --preserve-special-bits (a snapshot is data from a
 * server, not a trusted installer). */
static unsigned
safe_mode(const struct restore_run *r, unsigned mode, int dir)
{
	if (r->special)
		return mode & 07777;
	mode &= 0777;
	return dir ? mode & ~0002u : mode;
}

/*
 * Opens the directory that holds path's last component, creating missing directories
 * (mode 0700 until the final pass), never following a symlink. Returns the descriptor
 * (caller closes) and *leafp pointing into path, or -1 with errno set.
 */
static int
open_parent(struct restore_run *r, const char *path, const char **leafp)
{
	char comp[MANIFEST_PATH_MAX + 1];
	const char *p = path, *slash;
	int fd, nfd;
	size_t n;

	if ((fd = dup(r->rootfd)) < 0)
		return -1;
	while ((slash = strchr(p, '/')) != NULL) {
		n = (size_t)(slash - p);
		memcpy(comp, p, n);
		comp[n] = '\0';
		nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0 && errno == ENOENT) {
			if (mkdirat(fd, comp, 0700) != 0 && errno != EEXIST) {
				close(fd);
				return -1;
			}
			nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		close(fd);
		if (nfd < 0)
			return -1; /* ELOOP/ENOTDIR: a symlink or file where a directory belongs */
		fd = nfd;
		p = slash + 1;
	}
	*leafp = p;
	return fd;
}

static void
set_times(int dfd, const char *leaf, int64_t mtime_ns)
{
	struct timespec ts[2];

	ts[0].tv_sec = mtime_ns / 1000000000;
	ts[0].tv_nsec = mtime_ns % 1000000000;
	if (ts[0].tv_nsec < 0) {
		ts[0].tv_nsec += 1000000000;
		ts[0].tv_sec--;
	}
	ts[1] = ts[0];
	if (utimensat(dfd, leaf, ts, AT_SYMLINK_NOFOLLOW) != 0)
		log_warn("cannot set the time of '%s'", leaf);
}

static void
tmp_name(struct restore_run *r, char *out, size_t outlen)
{
	snprintf(out, outlen, ".stepsync-restore.%ld.%lu", (long)getpid(), ++r->tmpseq);
}

/* Format 1: a file already at leaf — 1 to leave it (identical, or kept by --overwrite's
 * policy: reported), 0 to restore over it. */
static int
keep_existing(struct restore_run *r, const struct manifest_entry *e, int dfd, const char *leaf)
{
	char md5[HASH_MD5_HEX];
	struct stat st;
	struct hash_ctx *h;
	uint8_t buf[65536], d[HASH_MD5_LEN];
	ssize_t n;
	int fd;

	if (fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return 0;
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size == e->size &&
	    (fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)) >= 0) {
		if ((h = hash_md5_new()) != NULL) {
			while ((n = read(fd, buf, sizeof(buf))) > 0)
				hash_update(h, buf, (size_t)n);
			hash_final(h, d);
			hash_free(h);
			hash_to_hex(d, HASH_MD5_LEN, md5);
			if (n == 0 && strcmp(md5, e->md5) == 0) {
				close(fd);
				r->unchanged++;
				return 1;
			}
		}
		close(fd);
	}
	if (r->overwrite == RESTORE_OVERWRITE_ALWAYS ||
	    r->overwrite == RESTORE_OVERWRITE_IF_CHANGED)
		return 0;
	if (r->overwrite == RESTORE_OVERWRITE_IF_NEWER &&
	    e->mtime_ns > (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec)
		return 0;
	if (r->overwrite != RESTORE_OVERWRITE_IF_NEWER)
		agent_error("'%s' is already there and differs from the snapshot; left alone "
		            "(--overwrite replaces it)",
		    e->path);
	r->kept++;
	return 1;
}

static int
restore_file(struct restore_run *r, const struct manifest_entry *e, int dfd, const char *leaf)
{
	struct client_result res;
	char tmp[64], *full = NULL;
	size_t n;
	int fd, rc;

	if (keep_existing(r, e, dfd, leaf))
		return 0;

	if (e->size == 0) {
		tmp_name(r, tmp, sizeof(tmp));
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 || close(fd) != 0 || renameat(dfd, tmp, dfd, leaf) != 0) {
			agent_error("cannot create '%s': %s", e->path, strerror(errno));
			unlinkat(dfd, tmp, 0);
			return -1;
		}
	} else {
		n = strlen(r->to) + strlen(e->path) + 2;
		full = xmalloc(n);
		snprintf(full, n, "%s/%s", r->to, e->path);
		rc = client_get_file(r->c, e->key, full, 0600, &res);
		free(full);
		if (rc != 0) {
			agent_error("cannot restore '%s' (object %s): %s", e->path, e->key,
			    client_error(r->c));
			return rc;
		}
		if (strcmp(res.md5, e->md5) != 0 || res.size != e->size) {
			agent_error("'%s': the server's object %s does not match the manifest "
			            "(MD5 %s, expected %s); removed",
			    e->path, e->key, res.md5, e->md5);
			unlinkat(dfd, leaf, 0);
			return -1;
		}
	}
	if (fchmodat(dfd, leaf, safe_mode(r, e->mode, 0), 0) != 0)
		log_warn("cannot set the mode of '%s'", e->path);
	set_times(dfd, leaf, e->mtime_ns);
	r->files++;
	r->bytes += e->size;
	return 0;
}

static int
restore_entry(struct restore_run *r, const struct manifest_entry *e)
{
	struct stat st;
	const char *leaf = NULL;
	char tmp[64];
	int dfd, rc = 0;

	if ((dfd = open_parent(r, e->path, &leaf)) < 0) {
		agent_error(
		    "refusing '%s': a parent is not a directory (%s)", e->path, strerror(errno));
		return -1;
	}
	switch (e->type) {
	case MANIFEST_DIR:
		if (mkdirat(dfd, leaf, 0700) != 0 &&
		    (errno != EEXIST || fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		        !S_ISDIR(st.st_mode))) {
			agent_error("cannot create directory '%s': %s", e->path,
			    errno == EEXIST ? "something else is in the way" : strerror(errno));
			rc = -1;
			break;
		}
		if (r->ndirs == r->capdirs) {
			r->capdirs = r->capdirs ? 2 * r->capdirs : 64;
			r->dirs = xrealloc(r->dirs, r->capdirs * sizeof(*r->dirs));
		}
		r->dirs[r->ndirs].path = xstrdup(e->path);
		r->dirs[r->ndirs].mode = e->mode;
		r->dirs[r->ndirs].mtime_ns = e->mtime_ns;
		r->ndirs++;
		break;
	case MANIFEST_SYMLINK:
		tmp_name(r, tmp, sizeof(tmp));
		if (symlinkat(e->target, dfd, tmp) != 0 || renameat(dfd, tmp, dfd, leaf) != 0) {
			agent_error("cannot create symlink '%s': %s", e->path, strerror(errno));
			unlinkat(dfd, tmp, 0);
			rc = -1;
			break;
		}
		set_times(dfd, leaf, e->mtime_ns);
		r->symlinks++;
		break;
	default:
		rc = restore_file(r, e, dfd, leaf);
		break;
	}
	close(dfd);
	return rc;
}

/* Last pass: directory modes and times, deepest (latest in pre-order) first. */
static void
finish_dirs(struct restore_run *r)
{
	const char *leaf;
	size_t i;
	int dfd;

	for (i = r->ndirs; i-- > 0;) {
		if ((dfd = open_parent(r, r->dirs[i].path, &leaf)) >= 0) {
			if (fchmodat(dfd, leaf, safe_mode(r, r->dirs[i].mode, 1), 0) != 0)
				log_warn("cannot set the mode of '%s'", r->dirs[i].path);
			set_times(dfd, leaf, r->dirs[i].mtime_ns);
			close(dfd);
		}
		free(r->dirs[i].path);
	}
	r->dirs_done = r->ndirs;
	free(r->dirs);
	r->dirs = NULL;
}

/* ---- format 2: the restore engine (restore.h) ---- */

static void
restore_error(void *arg, const char *msg)
{
	agent_error("%s", msg);
}

/* The progress line of a format-2 restore: the totals are the snapshot's (the whole of it)
 * or what the walk has found so far (a --path, or a record without counts). */
struct restore_progress {
	struct progress *pg;
	uint64_t files, bytes; /* the snapshot's, 0 when unknown */
};

static void
restore_progress_cb(void *arg, uint64_t files_done, uint64_t files_seen, uint64_t bytes_done,
    uint64_t bytes_seen, int final)
{
	struct restore_progress *rp = arg;

	if (final) {
		/* ends the line ("done") whatever the snapshot's counts said */
		files_seen = files_done;
		bytes_seen = bytes_done;
	} else {
		files_seen = files_seen > rp->files ? files_seen : rp->files;
		bytes_seen = bytes_seen > rp->bytes ? bytes_seen : rp->bytes;
		/* not "done" before the end: the walk may still find more */
		if (files_done >= files_seen && bytes_done >= bytes_seen)
			files_seen = files_done + 1;
	}
	progress_run(rp->pg, files_done, files_seen, bytes_done, bytes_seen);
}

/* Restores a format-2 snapshot (or its subpath) into r->to; returns the exit status. */
static int
restore_format2(struct restore_run *r, const char *name, uint64_t seq,
    const struct snapshot_record *rec, const char *subpath)
{
	struct client_opts co;
	struct restore_opts ro;
	struct restore_stats st;
	struct restore_progress rp = { NULL, 0, 0 };
	char errbuf[256];
	int rc;

	if (agent_client_opts(r->a, &co, errbuf, sizeof(errbuf)) != 0) {
		agent_error("%s", errbuf);
		return SYNC_EXIT_CONFIG;
	}
	memset(&ro, 0, sizeof(ro));
	ro.client = &co;
	ro.nconn = r->a->connections > 1 ? r->a->connections : 4;
	ro.target = r->to;
	ro.preserve_special_bits = r->special;
	ro.overwrite = r->overwrite;
	ro.owner = geteuid() == 0;
	ro.error = restore_error;
	if (r->a->progress && !r->a->json && progress_new(1, &rp.pg) == 0) {
		if (subpath == NULL) {
			rp.files = rec->files;
			rp.bytes = rec->bytes;
		}
		ro.progress = restore_progress_cb;
		ro.progress_arg = &rp;
	}
	rc = restore_tree(&ro, rec->root, subpath, &st);
	progress_free(rp.pg); /* the line ends before the summary */
	r->files = st.files;
	r->dirs_done = st.dirs;
	r->symlinks = st.symlinks;
	r->bytes = st.bytes;
	r->failed = st.failed;
	r->kept = st.kept;
	r->unchanged = st.unchanged;
	r->hardlinks = st.hardlinks;
	switch (rc) {
	case 0:
		return r->kept > 0 ? AGENT_EXIT_CONFLICT : AGENT_EXIT_OK;
	case STEP_EIO:
		return AGENT_EXIT_FAIL;
	case STEP_ENOENT:
		agent_error(
		    "'%s' is not in snapshot %s#%" PRIu64, subpath ? subpath : ".", name, seq);
		r->failed++;
		return AGENT_EXIT_FAIL;
	case STEP_ESYS:
		/* the engine said why (the target cannot be opened or flushed); errno is
		 * long gone by now */
		return AGENT_EXIT_FAIL;
	default:
		r->failed++;
		return snapshot_exit_code(rc);
	}
}

/* Format 1: the manifest in f, entry by entry. The exit status so far (AGENT_EXIT_FAIL
 * unless the server went away mid-way); *reportp 0 when nothing was tried (a bad manifest,
 * a target that cannot be opened: said already), 1 when the summary applies. */
static int
restore_format1(struct restore_run *r, const char *name, uint64_t seq, FILE *f, int *reportp)
{
	struct manifest_header h;
	struct manifest_reader *rd = NULL;
	struct manifest_entry *e = NULL;
	int rc, ex = AGENT_EXIT_FAIL;

	*reportp = 0;
	if ((rc = manifest_reader_new(f, &h, &rd)) != 0 || h.seq != seq ||
	    strcmp(h.name, name) != 0) {
		agent_error("snapshot %s#%" PRIu64 ": not a valid manifest", name, seq);
		goto out;
	}
	if (util_mkdirs(r->to, 0755) != 0 ||
	    (r->rootfd = open(r->to, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		agent_error("cannot open '%s': %s", r->to, strerror(errno));
		goto out;
	}
	*reportp = 1;
	e = xmalloc(sizeof(*e));
	while ((rc = manifest_reader_next(rd, e)) == 1) {
		if ((rc = restore_entry(r, e)) != 0) {
			r->failed++;
			if (snapshot_exit_code(rc) != AGENT_EXIT_FAIL) {
				ex = snapshot_exit_code(rc); /* the server is gone: stop */
				break;
			}
		}
	}
	if (rc < 0 && ex == AGENT_EXIT_FAIL) {
		agent_error("snapshot %s#%" PRIu64 ": manifest line %ld: %s", name, seq,
		    manifest_reader_line(rd),
		    rc == STEP_EINVAL ? "unsafe or invalid entry (refused)"
		                      : "truncated or malformed");
		r->failed++;
	}
	finish_dirs(r);
out:
	free(e);
	manifest_reader_free(rd);
	return ex;
}

/* The summary: one JSON result with --json, a line unless -q. */
static void
restore_report(struct agent *a, const struct restore_run *r, const char *name, uint64_t seq)
{
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		        "command", "restore", "name", name, "seq", (json_int_t)seq, "to", r->to,
		        "files", (json_int_t)r->files, "dirs", (json_int_t)r->dirs_done, "symlinks",
		        (json_int_t)r->symlinks, "bytes", (json_int_t)r->bytes, "failed",
		        (json_int_t)r->failed, "kept", (json_int_t)r->kept, "unchanged",
		        (json_int_t)r->unchanged, "hardlinks", (json_int_t)r->hardlinks));
	if (a->verbose >= 0) {
		char extra[160] = "";
		size_t len;

		if (r->hardlinks > 0)
			snprintf(extra, sizeof(extra), "; %" PRIu64 " %s", r->hardlinks,
			    r->hardlinks == 1 ? "file is a hard link of another"
			                      : "files are hard links of others");
		len = strlen(extra);
		if (r->unchanged > 0 || r->kept > 0)
			snprintf(extra + len, sizeof(extra) - len,
			    "; %" PRIu64 " already there and identical, %" PRIu64
			    " left alone (they differ)",
			    r->unchanged, r->kept);
		printf("restored %s#%" PRIu64 " into %s: %" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64
		       " %s, %" PRIu64 " bytes%s%s\n",
		    name, seq, r->to, r->files, agent_plural(r->files, "file", "files"),
		    r->dirs_done, agent_plural(r->dirs_done, "dir", "dirs"), r->symlinks,
		    agent_plural(r->symlinks, "symlink", "symlinks"), r->bytes, extra,
		    r->failed ? "; some entries FAILED" : "");
	}
}

/* Parses restore's options into r, *namep and *idp; --path is checked and copied into
 * spbuf (MANIFEST_PATH_MAX + 1 bytes, zeroed). -1 to go on, else the exit status. */
static int
restore_options(
    int argc, char **argv, struct restore_run *r, const char **namep, const char **idp, char *spbuf)
{
	static const char usage[] = "restore [--name NAME] [--snapshot ID] [--path SUBPATH] "
	                            "[--overwrite WHEN] [--preserve-special-bits] --to DIR";
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "snapshot", required_argument, NULL, 's' },
		{ "to", required_argument, NULL, 't' },
		{ "path", required_argument, NULL, 'p' },
		{ "preserve-special-bits", no_argument, NULL, 'S' },
		{ "overwrite", required_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "+n:s:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			*namep = optarg;
			break;
		case 's':
			*idp = optarg;
			break;
		case 't':
			r->to = optarg;
			break;
		case 'p':
			r->subpath = optarg;
			break;
		case 'S':
			r->special = 1;
			break;
		case 'O':
			if (strcmp(optarg, "never") == 0)
				r->overwrite = RESTORE_OVERWRITE_NEVER;
			else if (strcmp(optarg, "always") == 0)
				r->overwrite = RESTORE_OVERWRITE_ALWAYS;
			else if (strcmp(optarg, "if-changed") == 0)
				r->overwrite = RESTORE_OVERWRITE_IF_CHANGED;
			else if (strcmp(optarg, "if-newer") == 0)
				r->overwrite = RESTORE_OVERWRITE_IF_NEWER;
			else {
				agent_error("--overwrite takes never, always, if-changed or "
				            "if-newer, not '%s'",
				    optarg);
				return AGENT_EXIT_USAGE;
			}
			break;
		case 'h':
			printf(
			    "usage: stepsync %s\n\n"
			    "Restores snapshot ID (default: the latest) of NAME into DIR: files\n"
			    "(verified before they get their names), empty directories,\n"
			    "symlinks, modes and mtimes. Needs only the server and the\n"
			    "credentials. ID is SEQ or NAME#SEQ as 'stepsync snapshots' shows.\n\n"
			    "  --path SUBPATH   restore only SUBPATH (a file or a directory of\n"
			    "                   the snapshot), at its place under DIR\n"
			    "  --preserve-special-bits  keep setuid, setgid and sticky bits and\n"
			    "                   world-writable directories (dropped by default)\n"
			    "  --overwrite WHEN  a file already in DIR that differs from the\n"
			    "                   snapshot's: never (default: left alone and "
			    "listed),\n"
			    "                   always, if-changed (replaced when it differs) or\n"
			    "                   if-newer (when the snapshot's mtime is newer); "
			    "one\n"
			    "                   identical to the snapshot's is never rewritten\n\n"
			    "exit status: 0 all restored; 1 some entries failed; 2 usage;\n"
			    "  5 some files in DIR differ from the snapshot and were left alone;\n"
			    "  75 server unreachable; 76 TLS failed; 77 login refused;\n"
			    "  78 bad configuration\n",
			    usage);
			return AGENT_EXIT_OK;
		default:
			return agent_usage(usage);
		}
	}
	if (optind != argc || r->to == NULL)
		return agent_usage(usage);
	if (r->subpath != NULL) {
		while (r->subpath[0] == '/')
			r->subpath++;
		r->sublen = strlen(r->subpath);
		while (r->sublen > 0 && r->subpath[r->sublen - 1] == '/')
			r->sublen--;
		if (r->sublen == 0)
			r->subpath = NULL;
		else if (r->sublen > MANIFEST_PATH_MAX ||
		    !manifest_path_safe(memcpy(spbuf, r->subpath, r->sublen))) {
			agent_error("bad --path '%s'", r->subpath);
			return AGENT_EXIT_USAGE;
		}
	}
	return -1;
}

int
cmd_restore(struct agent *a, int argc, char **argv)
{
	struct restore_run r;
	struct snapshot_record rec;
	const char *name = NULL, *id = NULL;
	char spbuf[MANIFEST_PATH_MAX + 1] = { 0 }, idname[MANIFEST_NAME_MAX + 1], errbuf[256];
	uint64_t seq = 0;
	FILE *f = NULL;
	int c, rc, fmt = 1, report = 0, ex = AGENT_EXIT_FAIL;

	memset(&r, 0, sizeof(r));
	r.rootfd = -1;
	if ((c = restore_options(argc, argv, &r, &name, &id, spbuf)) >= 0)
		return c;
	/* "NAME#SEQ" names the snapshot's NAME when --name does not. */
	if (name == NULL && id != NULL && strrchr(id, '#') != NULL && strrchr(id, '#') != id &&
	    (size_t)(strrchr(id, '#') - id) < sizeof(idname)) {
		memcpy(idname, id, (size_t)(strrchr(id, '#') - id));
		idname[strrchr(id, '#') - id] = '\0';
		name = idname;
	}
	if (name == NULL && (name = snapshot_default_name(a)) == NULL)
		return AGENT_EXIT_USAGE;
	if (id != NULL && snapshots_parse_id(name, id, &seq, errbuf, sizeof(errbuf)) != 0) {
		agent_error("%s", errbuf);
		return AGENT_EXIT_USAGE;
	}
	if ((rc = agent_client(a, &r.c)) != 0)
		return agent_setup_exit(a, "restore", rc);
	r.a = a;
	if (seq == 0) {
		if ((rc = snapshot_latest(r.c, name, 0, &seq)) != 0) {
			agent_error(
			    "cannot find the snapshots of '%s': %s", name, client_error(r.c));
			return snapshot_exit_code(rc);
		}
		if (seq == 0) {
			agent_error("no snapshot named '%s' on the server", name);
			return AGENT_EXIT_FAIL;
		}
	}
	if ((rc = snapshot_fetch(r.c, name, seq, &fmt, &f, &rec)) != 0) {
		if (rc == STEP_EPROTO)
			agent_error(
			    "snapshot %s#%" PRIu64 ": not a valid snapshot record", name, seq);
		else if (rc == STEP_ENOENT)
			agent_error("no snapshot %s#%" PRIu64 " on the server", name, seq);
		else
			agent_error("cannot download snapshot %s#%" PRIu64 ": %s", name, seq,
			    rc == STEP_ESYS ? strerror(errno) : client_error(r.c));
		return rc == STEP_ENOENT || rc == STEP_EPROTO ? AGENT_EXIT_FAIL
		                                              : snapshot_exit_code(rc);
	}
	if (fmt == 2) {
		ex = restore_format2(&r, name, seq, &rec, r.subpath != NULL ? spbuf : NULL);
		goto summary;
	}
	if (r.subpath != NULL) {
		agent_error("--path needs a snapshot of format 2 (made by stepsync 0.3 or later)");
		goto out;
	}
	if ((ex = restore_format1(&r, name, seq, f, &report)) == AGENT_EXIT_FAIL && !report)
		goto out;
summary:
	restore_report(a, &r, name, seq);
	if (r.failed > 0) {
		agent_error(
		    "restore %s#%" PRIu64 ": %" PRIu64 " entries failed", name, seq, r.failed);
		if (ex == AGENT_EXIT_OK)
			ex = AGENT_EXIT_FAIL;
		goto out;
	}
	if (fmt == 1)
		ex = r.kept > 0 ? AGENT_EXIT_CONFLICT : AGENT_EXIT_OK;
out:
	if (ex == 0 && r.failed > 0)
		ex = AGENT_EXIT_FAIL;
	if (r.dirs != NULL)
		finish_dirs(&r);
	if (f != NULL)
		fclose(f);
	if (r.rootfd >= 0)
		close(r.rootfd);
	return ex;
}
