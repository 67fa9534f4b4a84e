/*
 * progress.h — the terminal progress line of put/get (bytes, rate and ETA of one file)
 * and of whole runs such as sync and restore (files, bytes, rate, ETA) on stderr,
 * redrawn at most ten times a second. Silent unless enabled (stderr is a terminal and
 * not --quiet/--json), so cron stays quiet. Thread-safe.
 */
#ifndef STEP_PROGRESS_H
#define STEP_PROGRESS_H

#include <stdint.h>

struct progress;

/* 0 and *outp (free with progress_free()), or STEP_ENOMEM. */
int progress_new(int enabled, struct progress **outp);
/* Ends a pending line and frees; progress_free(NULL) does nothing. */
void progress_free(struct progress *p);
/* A client_progress_fn: arg is the struct progress. */
void progress_update(void *arg, const char *key, uint64_t done, uint64_t total);
/*
 * The line of a whole run: "12/340 files  1.2 MiB / 80.0 MiB  3.1 MiB/s  ETA 0:25", the
 * rate measured from the first call. The line ends (with "done") once both counts reach
 * their totals, or at progress_free(). For sync and restore: create the struct progress
 * with progress_new(a->progress, &p) and call this as files and bytes complete.
 */
void progress_run(struct progress *p, uint64_t files_done, uint64_t files_total,
    uint64_t bytes_done, uint64_t bytes_total);
/* Formats n bytes as "12.3 MiB" into out. */
void progress_fmt_bytes(uint64_t n, char *out, size_t outlen);

#endif
