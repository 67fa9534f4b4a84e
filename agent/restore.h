/*
 * restore.h — restores a format-2 snapshot (a root tree id) into a directory: trees walked
 * from the root, every object fetched over several pipelined connections (fetch.h) and
 * checked against its id, everything created relative to open directory descriptors.
 *
 * What a hostile or corrupted server cannot do: make restore write outside the target,
 * follow a symlink already in the target (directories are opened with O_NOFOLLOW and
 * everything else is created by name relative to a held descriptor; a file is written
 * without a name (O_TMPFILE) and linked into place when complete, or, where the file system
 * cannot, with O_EXCL under a temporary name, then renamed), loop on a tree that names one of its
 * ancestors (refused, and the depth is bounded), or put wrong bytes under a file's name (each
 * chunk's SHA-256 is checked before the file is renamed into place). setuid, setgid and sticky bits
 * and world-writable directories are dropped unless preserve_special_bits.
 *
 * Owners (uid/gid, numerically) are restored with o->owner (as root). Aligned 4 KiB runs
 * of zeros are never written, so a sparse file comes back sparse (holes, the size set at
 * the end). The files of one hard-link group (tree.h link) come back as hard links of one
 * inode (restore_links.h), within what the restore covers.
 *
 * Durability comes from one syncfs() of the target's filesystem at the end, not from an
 * fsync per file. Never prints: every problem is a sentence handed to opts->error.
 */
#ifndef STEP_RESTORE_H
#define STEP_RESTORE_H

#include <stdint.h>

#include "client.h"
#include "hash.h"

#define RESTORE_DEPTH_MAX 1024 /* directory levels below the root */
#define RESTORE_CONN_MAX  64

/* Called for every failure, with a git-style sentence ("cannot restore 'a/b': object
 * o.… is not on the server"); serialised (never two at once), from any thread. */
typedef void restore_error_fn(void *arg, const char *msg);

/* What to do with a file or symlink that is already in the target (restic 0.17's words):
 * NEVER (the default) leaves one that differs from the snapshot alone and reports it;
 * ALWAYS replaces it; IF_CHANGED replaces it when it differs; IF_NEWER when the snapshot's
 * mtime is newer than its own. One identical to the snapshot's is never written again. */
enum restore_overwrite {
	RESTORE_OVERWRITE_NEVER = 0,
	RESTORE_OVERWRITE_ALWAYS,
	RESTORE_OVERWRITE_IF_CHANGED,
	RESTORE_OVERWRITE_IF_NEWER,
};

/*
 * Progress: files and bytes done (restored, failed, or found already there) and found so far
 * in the trees walked (the totals grow as the walk goes on). Called from any thread, at
 * most about ten times a second, never two at once, and once more at the end (final 1).
 */
typedef void restore_progress_fn(void *arg, uint64_t files_done, uint64_t files_seen,
    uint64_t bytes_done, uint64_t bytes_seen, int final);

struct restore_opts {
	const struct client_opts *client; /* each connection's settings (borrowed) */
	int nconn;                        /* connections, one thread each; 0: 4 */
	const char *target;               /* directory to restore into; created when missing */
	int preserve_special_bits;        /* keep setuid/setgid/sticky, world-writable dirs */
	int owner;     /* also restore uid/gid (fchown; needs privilege), else leave ours */
	int no_flush;  /* skip the final syncfs() (tests, benchmarks) */
	int overwrite; /* enum restore_overwrite */
	restore_error_fn *error; /* NULL: errors are only counted */
	void *error_arg;
	restore_progress_fn *progress; /* NULL: none */
	void *progress_arg;
};

struct restore_stats {
	uint64_t files, dirs, symlinks; /* entries restored (dirs: below the target) */
	uint64_t bytes;                 /* file content written */
	uint64_t trees;                 /* tree objects fetched */
	uint64_t failed;                /* entries not restored (each reported) */
	uint64_t kept;      /* files already in the target, different, left alone (reported) */
	uint64_t unchanged; /* files already in the target, identical: not written */
	uint64_t requests;  /* GET and DOWNLOAD requests sent */
	uint64_t hardlinks; /* files made hard links of another restored file (tree.h link) */
};

/*
 * Restores the tree root (its id) into o->target; with subpath ('/'-separated, relative,
 * e.g. "home/ann/notes"), only that entry of the snapshot (a file, symlink or whole
 * directory), at the same path below the target, with the directories on its way.
 * Files and symlinks already in the target follow o->overwrite; directories are merged.
 * Returns 0 when everything was restored; STEP_EIO when some entries were not (each
 * reported through o->error, counted in st->failed); STEP_ENOENT when subpath is not in
 * the snapshot; STEP_EINVAL (bad options or subpath); STEP_ESYS when the target cannot be
 * opened or flushed; or, when no connection could go on, the session's error
 * (STEP_ECONNECT, STEP_ETIMEDOUT, STEP_EAUTH, STEP_ETLS, STEP_EPROTO...; reported too), or
 * STEP_ESTOPPED after SIGINT/SIGTERM (util_stop_pending()). Temporary files are removed
 * on every path. st (may be NULL) is filled in every case.
 */
int restore_tree(const struct restore_opts *o, const uint8_t root[HASH_SHA256_LEN],
    const char *subpath, struct restore_stats *st);

/* Tests only: 1 makes every file under a temporary name and renames it, as on a file
 * system without O_TMPFILE. Never set outside tests. */
extern int restore_test_no_tmpfile;

#endif
