/*
 * watch_sync.h — the one place where `stepsync watch` calls the sync engine: one sync
 * of one directory, which records a new snapshot on the server. Keeping this seam
 * small means the watcher never knows how scanning, uploading or snapshots work.
 */
#ifndef STEP_WATCH_SYNC_H
#define STEP_WATCH_SYNC_H

#include <stddef.h>
#include <stdint.h>

struct agent;

struct watch_sync_result {
	uint64_t bytes_sent; /* file content uploaded by this sync; 0 when unknown */
	char snapshot[128];  /* the snapshot recorded ("NAME#SEQ"), "" when unknown */
	int exit_status;     /* the sync's exit status (AGENT_EXIT_*), also on failure */
	int incremental;     /* only the changed directories were read */
	uint64_t dirs_scanned, dirs_reused, files_hashed; /* the engine's counters */
	uint64_t held; /* files gone but held back in the snapshot (mass deletion) */
};

/*
 * Syncs the tree at path (absolute) as snapshot name (NULL: the sync engine's default
 * for that path); a tree identical to the latest snapshot records no new one (sync
 * --skip-unchanged), res->snapshot then names the latest. Returns 0 and fills *res, or a negative
 * STEP_E* code with errbuf saying why and res->exit_status the sync's exit status (the sync
 * engine may also have printed its own message). The run is recorded for `stepsync status`
 * (db/runs.h) as a "watch" run.
 */
int watch_sync_dir(struct agent *a, const char *name, const char *path,
    struct watch_sync_result *res, char *errbuf, size_t errlen);

/*
 * The same run, told what changed: the queue's entries of qkey up to sequence number mark
 * (db/queue.h) become the directories to read and the subtrees to read whole; an entry
 * that says "rescan everything" (start, queue overflow, the periodic rescan) makes it a
 * full run, as watch_sync_dir().
 */
int watch_sync_changes(struct agent *a, const char *name, const char *path, const char *qkey,
    long long mark, struct watch_sync_result *res, char *errbuf, size_t errlen);

/*
 * Drops the agent's server session so the next sync connects afresh (after a failure,
 * or after SIGHUP changed the server address).
 */
void watch_sync_reset(struct agent *a);

#endif
