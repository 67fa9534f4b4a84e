/*
 * snapshots.h — the local record of snapshots this agent recorded or saw, per NAME.
 * A cache of what the server holds (the server is the truth: restore and listing work
 * with an empty state); used to pick the next sequence number without probing and to
 * show stats quickly. Every function returns 0 or a negative STEP_E*.
 */
#ifndef STEP_SNAPSHOTS_H
#define STEP_SNAPSHOTS_H

#include <stdint.h>

struct db;

struct snapshots_rec {
	uint64_t seq;
	int64_t time; /* wall-clock seconds */
	uint64_t files, dirs, symlinks, bytes;
	char digest[33]; /* MD5 hex of the manifest's entry lines, "" when unknown */
};

/* Creates or upgrades the table (module "snapshots"). */
int snapshots_migrate(struct db *db);
/* Records (or replaces) name's snapshot rec->seq. */
int snapshots_put(struct db *db, const char *name, const struct snapshots_rec *rec);
/* Forgets name's snapshot seq (pruned). */
int snapshots_delete(struct db *db, const char *name, uint64_t seq);
/* Highest recorded seq of name in *seqp (0 when none). */
int snapshots_latest(struct db *db, const char *name, uint64_t *seqp);
/* The record of (name, seq): 0, or STEP_ENOENT. */
int snapshots_get(struct db *db, const char *name, uint64_t seq, struct snapshots_rec *rec);

#endif
