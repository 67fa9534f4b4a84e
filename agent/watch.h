/*
 * watch.h — the inotify engine behind `stepsync watch`: recursive watches, move pairing
 * by cookie, overflow and watch-limit fallbacks, and the debounce bookkeeping that turns
 * a burst of events into one settled batch.
 *
 * The engine only observes: it reports what changed through a callback and never reads
 * file contents, never talks to the server and never touches the state database. The
 * pure parts (struct watch_moves, struct watch_debounce) have no I/O so they can be
 * unit-tested without a kernel.
 */
#ifndef STEP_WATCH_H
#define STEP_WATCH_H

#include <stddef.h>
#include <stdint.h>

/* What a callback is told. Paths are absolute and borrowed for the call only. */
enum watch_ev {
	WATCH_EV_CHANGE = 1, /* a file was created, written, closed or its attributes changed */
	WATCH_EV_DELETE = 2, /* a file or directory is gone (or was moved out of the tree) */
	WATCH_EV_MOVE = 3,   /* path was renamed to path2, both inside watched trees */
	WATCH_EV_RESCAN = 4, /* everything below path must be rescanned (new directory,
	                        queue overflow: then path is each root) */
};

typedef void watch_event_fn(void *arg, int ev, const char *path, const char *path2);

/* ---- move pairing (pure) ---- */

struct watch_move {
	uint32_t cookie;
	char *path; /* owned; absolute path the entry was moved from */
	int isdir;
	uint64_t t_ms; /* when IN_MOVED_FROM was seen */
};

struct watch_moves {
	struct watch_move *v; /* owned array */
	size_t n, cap;
};

/* Embedded by the caller; zeroes m. Release with watch_moves_release(). */
void watch_moves_init(struct watch_moves *m);
void watch_moves_release(struct watch_moves *m);
/* Remembers an IN_MOVED_FROM (copies path). 0 or STEP_ENOMEM. */
int watch_moves_add(
    struct watch_moves *m, uint32_t cookie, const char *path, int isdir, uint64_t now_ms);
/*
 * Takes the IN_MOVED_FROM that matches cookie: 0 and the path in *pathp (caller frees)
 * and *isdirp, or STEP_ENOENT when none waits (the file was moved in from outside).
 */
int watch_moves_take(struct watch_moves *m, uint32_t cookie, char **pathp, int *isdirp);
/*
 * Pops one IN_MOVED_FROM older than age_ms (an unpaired move-out, to be treated as a
 * delete): returns 1 with *pathp (caller frees) and *isdirp, or 0 when none has expired.
 * age_ms 0 pops every entry.
 */
int watch_moves_pop_expired(
    struct watch_moves *m, uint64_t now_ms, uint64_t age_ms, char **pathp, int *isdirp);

/* ---- debounce bookkeeping (pure) ---- */

struct watch_debounce {
	uint64_t quiet_ms; /* a batch settles after this long without events */
	uint64_t max_ms;   /* ...or at the latest this long after its first event */
	uint64_t first_ms; /* first event of the pending batch */
	uint64_t last_ms;  /* latest event of the pending batch */
	uint64_t nevents;  /* events in the pending batch; 0 means nothing pending */
};

/* quiet_ms: the --debounce value; max_ms 0 picks max(10 * quiet_ms, 10 s). */
void watch_debounce_init(struct watch_debounce *d, uint64_t quiet_ms, uint64_t max_ms);
/* Notes one event at now_ms. */
void watch_debounce_note(struct watch_debounce *d, uint64_t now_ms);
/* 1 when a batch is pending and has settled (or hit max_ms), else 0. */
int watch_debounce_due(const struct watch_debounce *d, uint64_t now_ms);
/* Milliseconds until the pending batch is due (0 if due now), or -1 if nothing pends. */
long long watch_debounce_timeout(const struct watch_debounce *d, uint64_t now_ms);
/* Forgets the pending batch (it was handed to the sync engine). */
void watch_debounce_reset(struct watch_debounce *d);

/* ---- the inotify engine ---- */

struct watch;

/*
 * Creates an inotify instance. max_watches > 0 is a test hook: the watch after the
 * max_watches-th fails as if the kernel said ENOSPC. cb is called for every change.
 * Returns 0 and *outp (free with watch_free()), STEP_ESYS (errno kept) or STEP_ENOMEM.
 */
int watch_new(int max_watches, watch_event_fn *cb, void *arg, struct watch **outp);
/* Removes every watch, closes the descriptor, frees w; watch_free(NULL) does nothing. */
void watch_free(struct watch *w);
/* The descriptor to poll for POLLIN. */
int watch_fd(const struct watch *w);
/* Number of directories currently watched. */
size_t watch_count(const struct watch *w);
/* Number of subtrees the watch limit left to watch_poll_unwatched(). */
size_t watch_unwatched_count(const struct watch *w);

/*
 * Watches dir and every directory below it (symbolic links are not followed).
 * Directories that cannot be watched because the watch limit is reached are logged
 * once (naming /proc/sys/fs/inotify/max_user_watches) and remembered for
 * watch_poll_unwatched(); that is not an error. Returns 0, STEP_ESYS when dir itself
 * cannot be opened or watched for another reason, or STEP_ENOMEM.
 */
int watch_add_tree(struct watch *w, const char *dir);

/*
 * Reads and dispatches every queued inotify event, then reports unpaired move-outs
 * older than the pairing window as deletes. Never blocks. Returns 0, or STEP_ESYS when
 * read() fails with something other than EAGAIN.
 */
int watch_process(struct watch *w, uint64_t now_ms);

/* Milliseconds until watch_process() must run again to expire a move, or -1. */
long long watch_next_timeout(const struct watch *w, uint64_t now_ms);

/*
 * Fallback for directories the watch limit left unwatched: stats each such subtree and
 * reports WATCH_EV_RESCAN for those whose names, sizes or mtimes changed since the last
 * call. Returns the number of unwatched directories.
 */
size_t watch_poll_unwatched(struct watch *w);

#endif
