/*
 * watch_retention.h — the watcher's own retention: after a snapshot of a [dir] whose
 * config section has `keep = ...`, the rules are applied (prune.h) when they were not
 * applied for that name in the last hour, and what went is logged.
 */
#ifndef STEP_WATCH_RETENTION_H
#define STEP_WATCH_RETENTION_H

#include <stddef.h>
#include <stdint.h>

struct agent;
struct client;
struct config;
struct db;

#define WATCH_RETENTION_EVERY 3600 /* seconds between two applications per name */
/* Orphans (prune.h) are looked for at most this often per name: listing every object of
 * the user is the costly part. */
#define WATCH_ORPHANS_EVERY   86400

/* Checks every [dir]'s keep rules: 0, or STEP_EINVAL with "[dir "N"] keep: ..." in err. */
int watch_retention_check(const struct config *cfg, char *err, size_t errlen);

/*
 * Applies name's keep rules (none: nothing) when they were never applied to name by this
 * process or at least WATCH_RETENTION_EVERY seconds before now. A failure is logged and
 * retried an hour later; it never stops the watcher. Call with the state lock held.
 * Returns the number of deleted snapshots, or a negative error.
 */
int watch_retention_tick(
    struct agent *a, struct client *c, struct db *db, const char *name, int64_t now);

#endif
