/*
 * queue.h — the durable queue of pending changes that `stepsync watch` keeps in the
 * agent's SQLite state, and the small key/value status table `stepsync status` reads.
 *
 * A change is queued before anything acts on it and acknowledged only after the sync
 * that covers it recorded a snapshot, so a crash or restart loses none. Entries are
 * coalesced per (dir, path): a burst of writes to one file is one entry whose sequence
 * number moves forward, so an acknowledgement taken before the newest write never
 * drops it. Every function takes a borrowed sqlite3 handle, does not print, and
 * returns 0 or a negative STEP_E* code (STEP_EIO for an SQLite failure, STEP_EBUSY
 * when the database stays locked).
 */
#ifndef STEP_QUEUE_H
#define STEP_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>

/* Kinds of queued change; the numbers are stored in the database. */
enum queue_kind {
	QUEUE_CHANGE = 1, /* created or modified */
	QUEUE_DELETE = 2, /* removed or moved out */
	QUEUE_MOVE = 3,   /* renamed inside the tree (path is the new name) */
	QUEUE_RESCAN = 4, /* everything below path (or the whole dir when path is "") */
};

/* Creates the queue and status tables when they are missing; idempotent. */
int queue_migrate(sqlite3 *db);

/*
 * Records a pending change of path (relative to the synced dir, "" for the dir itself)
 * in dir (the [dir] name). t_s is the wall-clock time of the event. A path already
 * queued takes the new kind and a new sequence number.
 */
int queue_push(sqlite3 *db, const char *dir, const char *path, int kind, int64_t t_s);

/* Number of pending entries in dir, or in every dir when dir is NULL. */
int queue_count(sqlite3 *db, const char *dir, long long *countp);

/*
 * The highest sequence number pending in dir (0 when none) in *seqp: take it before a
 * sync starts and hand it to queue_ack() when the sync succeeded.
 */
int queue_mark(sqlite3 *db, const char *dir, long long *seqp);

/*
 * Calls fn for each of dir's entries whose sequence number is <= seq, in path order
 * (path borrowed for the call). fn returns 0 to go on. 0, fn's error or STEP_EIO.
 */
typedef int queue_entry_fn(void *arg, const char *path, int kind);
int queue_each(sqlite3 *db, const char *dir, long long seq, queue_entry_fn *fn, void *arg);

/* Removes dir's entries whose sequence number is <= seq. */
int queue_ack(sqlite3 *db, const char *dir, long long seq);

/*
 * The distinct dirs that have pending entries: a new array of new strings in *dirsp
 * (free with queue_dirs_free()) and their number in *np.
 */
int queue_dirs(sqlite3 *db, char ***dirsp, size_t *np);
void queue_dirs_free(char **dirs, size_t n);

/*
 * Status table (key -> text), written by the agent and read by `stepsync status`.
 * Keys in use: last_success (unix time), last_snapshot (name), last_snapshot_time,
 * last_error, last_error_time, bytes_sent, errors, watch_pid, watch_dirs.
 */
int queue_status_set(sqlite3 *db, const char *key, const char *value);
int queue_status_set_int(sqlite3 *db, const char *key, long long value);
/* Adds delta to an integer key (a missing key counts as 0). */
int queue_status_add(sqlite3 *db, const char *key, long long delta);
/* 0 and a new string in *valuep (caller frees), or STEP_ENOENT when the key is unset. */
int queue_status_get(sqlite3 *db, const char *key, char **valuep);
/* 0 and the value in *valuep, or STEP_ENOENT; a non-number reads as 0. */
int queue_status_get_int(sqlite3 *db, const char *key, long long *valuep);

#endif
