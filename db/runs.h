/*
 * runs.h — the outcome of the last backup run of each snapshot NAME (table "runs"), so
 * that `stepsync status` tells about cron `sync` runs as well as about `watch`.
 *
 * One row per NAME, replaced by every run: when it ended, which command ran it, the exit
 * status and its meaning, the snapshot the run left as the latest and the error that
 * stopped it. NAME "" stands for a run that failed before it reached any tree (a bad
 * configuration, a lock held by another run). Never prints.
 */
#ifndef STEP_RUNS_H
#define STEP_RUNS_H

#include <stddef.h>
#include <stdint.h>

struct db;

struct runs_rec {
	const char *name;     /* snapshot NAME, "" for the command as a whole */
	const char *command;  /* "sync" or "watch" */
	int64_t time;         /* wall-clock seconds when the run ended */
	int exit_status;      /* the process exit status the run would give */
	const char *result;   /* "ok", "incomplete" or "failed" */
	const char *snapshot; /* "NAME#SEQ" the latest snapshot after the run, or NULL */
	const char *error;    /* the message that stopped the run, or NULL */
	int64_t last_ok;      /* time of the newest run with result "ok", 0: never (read only) */
};

/* Creates or upgrades the table. 0, STEP_EBUSY or STEP_EIO. */
int runs_migrate(struct db *db);

/* The result word of an exit status: 0 "ok", 3 "incomplete", anything else "failed". */
const char *runs_result(int exit_status);

/* Replaces the row of rec->name (rec->last_ok is ignored: it is kept, or set to rec->time
 * when the result is "ok"). 0, STEP_EBUSY or STEP_EIO. Strings are borrowed. */
int runs_put(struct db *db, const struct runs_rec *rec);

/*
 * Calls fn for every row, newest first; the strings are valid during the call only. Stops
 * at and returns fn's first non-zero return; else 0, or STEP_EIO.
 */
typedef int runs_each_fn(const struct runs_rec *rec, void *arg);
int runs_each(struct db *db, runs_each_fn *fn, void *arg);

/* The row of name in *rec (strings NULL) with its strings copied into buf (bufsize
 * bytes, truncated): 0, STEP_ENOENT or STEP_EIO. */
int runs_get(struct db *db, const char *name, struct runs_rec *rec, char *buf, size_t bufsize);

#endif
