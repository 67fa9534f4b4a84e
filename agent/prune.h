/*
 * prune.h — deleting the snapshots a keep policy does not keep, and then the objects no
 * remaining snapshot (of any NAME) references. Used by `stepsync prune` and by the
 * watcher's hourly retention. The caller holds the state lock (no sync of this state
 * can be between "object uploaded" and "snapshot recorded" meanwhile).
 */
#ifndef STEP_PRUNE_H
#define STEP_PRUNE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "retention.h"

struct agent;
struct client;
struct db;

/*
 * Objects and trees no snapshot references that were committed at least this long ago
 * (seconds, by the server's clock) are deleted too, where the server lists commit times:
 * a day covers a backup that is still uploading (`prune --grace` changes it).
 */
#define PRUNE_GRACE_DEFAULT (24 * 3600)

struct prune_result {
	size_t kept, would_delete; /* snapshots */
	uint64_t deleted_snapshots, deleted_objects;
	uint64_t young_objects; /* orphans left for being younger than the grace period */
	int orphans_listed;     /* the server's objects were listed for orphans */
	json_t *plan; /* {"kept": [...], "deleted": [...]}; the caller json_decref()s it */
};

/*
 * Applies pol to name's snapshots on c's server (dry_run: only works out the plan).
 * log_removed: one log line per deleted snapshot (the watcher's journal). orphans: when
 * snapshots are deleted, orphans older than PRUNE_GRACE_DEFAULT go too (where the server
 * can list them). 0, or a client or database error (said with agent_error()).
 */
int prune_apply(struct agent *a, struct client *c, struct db *db, const char *name,
    const struct keep_policy *pol, int dry_run, int log_removed, int orphans,
    struct prune_result *res);

#endif
