/*
 * sync.h — the sync engine: one run backs up one tree and records one snapshot.
 *
 * `stepsync sync` and `stepsync watch` both call sync_run() (watch with the changes its
 * inotify events name, so only those directories are read); the commands only parse
 * arguments and print (the engine prints only its error sentences through agent_error()
 * and, in a dry run, the "would send" lines). Order of a run, and why:
 *   1. (the caller) lock the state, so no two runs overlap;
 *   2. one transaction for the whole scan: quick check against the files table (size,
 *      mtime_ns, inode, ctime_ns), hash only what changed, queue unknown content, build
 *      the directory trees bottom-up;
 *   3. refuse mass deletion (an unmounted disk looks like one);
 *   4. upload the queued objects and verify each MD5;
 *   5. only when every object of the snapshot is on the server: upload the snapshot
 *      record (a new seq, never replacing one), then its DATA record.
 * So the server always holds a complete, restorable latest snapshot, and a run killed at
 * any point is simply rerun (uploads resume; content already there is not resent). Never
 * follows symlinks, never deletes anything on the server.
 */
#ifndef STEP_SYNC_H
#define STEP_SYNC_H

#include <stddef.h>
#include <stdint.h>

struct agent;

/* Counters of a run so far; handed to the progress hook and kept in the result. */
struct sync_progress {
	uint64_t files_done, files_total; /* entries visited / found so far by the scan */
	uint64_t bytes_done, bytes_total; /* bytes sent / to send */
	int scanning;                     /* the scan goes on: files_total still grows */
};

/* Called from the main thread as the run goes on (often: keep it cheap). */
typedef void sync_progress_fn(void *arg, const struct sync_progress *p);

struct sync_opts {
	struct agent *a;      /* the session, state database and options (borrowed) */
	const char *name;     /* snapshot name */
	const char *root;     /* the tree, an absolute resolved path */
	char *const *exclude; /* fnmatch patterns (config_exclude_match()) */
	size_t nexclude;
	int dry_run;                /* list what would be sent; send and record nothing */
	int allow_mass_delete;      /* record a snapshot even when most known files vanished */
	int skip_unchanged;         /* no new snapshot when the tree is the latest snapshot */
	int hold_mass_delete;       /* instead of refusing a mass deletion, hold it back: the files
	                               gone stay in the snapshot (res->held), the rest is backed
	                               up; a run with allow_mass_delete releases them */
	sync_progress_fn *progress; /* NULL: none */
	void *progress_arg;
};

/*
 * What changed since the last run, as far as the caller knows (the watcher). NULL: the
 * engine scans the whole tree.
 */
struct sync_changes {
	int full;          /* the caller knows nothing: scan the whole tree */
	char *const *dirs; /* directories whose entries changed (relative, "" the root) */
	size_t ndirs;
	char *const *trees; /* subtrees to read whole (created or moved in; "" all) */
	size_t ntrees;
};

struct sync_result {
	int exit_status; /* AGENT_EXIT_*, SYNC_EXIT_* as `stepsync sync` exits */
	uint64_t seq;    /* the snapshot recorded (or kept, when unchanged); 0: none */
	int unchanged;   /* skip_unchanged found the tree equal to snapshot seq */
	uint64_t files, dirs, symlinks, bytes; /* the snapshot's */
	uint64_t sent_files, sent_bytes, existed, blocks_sent;
	uint64_t chunks_sent, trees_sent, tree_bytes_sent;
	uint64_t read_errors, busy_kept;
	/* dry run */
	uint64_t pending, pending_bytes, chunks_new, chunk_bytes_new, trees_new, gone;
	int dry_listed; /* the dry run listed what it would send (its summary is due) */
	/* the engine's own counters */
	uint64_t dirs_scanned; /* directories whose entries were read */
	uint64_t files_hashed; /* files read and hashed (or chunked) */
	uint64_t visited;      /* entries the scan handed over */
	uint64_t dirs_reused;  /* directories whose last tree was reused, not read */
	int incremental;       /* only the directories named by the changes were read */
	uint64_t held;         /* files gone from the tree kept in the snapshot (held back) */
};

/*
 * Runs one sync of opts->root as snapshot opts->name. Returns the exit status (also in
 * res->exit_status): 0 every file of the snapshot is verified on the server, 1 failure,
 * 3 incomplete, 65 mass deletion refused, 75..78 (see `stepsync sync --help`). The run
 * is recorded for `stepsync status` (db/runs.h) unless a dry run.
 */
int sync_run(const struct sync_opts *o, const struct sync_changes *ch, struct sync_result *res);

/* The state database path, as agent_db() will choose it (for the lock next to it). */
int sync_state_path(struct agent *a, char *out, size_t outlen);

#endif
