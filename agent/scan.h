/*
 * scan.h — walks a folder tree in a stable order and hands each entry to a callback.
 *
 * The walk is depth-first, pre-order (a directory before what it contains), entries of
 * one directory sorted bytewise by name with a '/' after directory names, so the paths
 * come in ascending byte (memcmp) order, as in an index on the path, and two scans of
 * the same tree give the same sequence. Nothing is followed: symlinks are reported as symlinks
 * (with their target), directories are opened with O_NOFOLLOW relative to their parent's
 * descriptor. Only regular files, directories and symlinks are reported; sockets, FIFOs and devices
 * are skipped and counted. Exclude patterns follow config_exclude_match(). Memory is one sorted
 * name list per directory level on the current path, never the whole tree.
 */
#ifndef STEP_SCAN_H
#define STEP_SCAN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define SCAN_PATH_MAX 4095 /* longest relative path reported; longer ones are errors */

struct scan_entry {
	const char *path;      /* relative to the root, '/'-separated (borrowed) */
	const char *name;      /* last component (borrowed, points into path) */
	int dirfd;             /* descriptor of the containing directory (borrowed) */
	const struct stat *st; /* lstat() result (borrowed) */
	const char *target;    /* symlink target, NULL for other types (borrowed) */
};

struct scan_stats {
	uint64_t files, dirs, symlinks, bytes;
	uint64_t skipped; /* special files and excluded entries */
	uint64_t errors;  /* entries or directories that could not be read */
};

/*
 * Callback: returns 0 to go on, a negative STEP_E* to stop the walk (scan_tree then
 * returns that code), or for a directory SCAN_SKIP: go on without walking its contents
 * (an incremental sync reuses what it knows of an unchanged subtree).
 */
#define SCAN_SKIP 1
typedef int scan_fn(void *ctx, const struct scan_entry *e);

/*
 * Walks root (not reported itself). exclude/nexclude are fnmatch patterns (borrowed).
 * Unreadable entries below root are logged, counted in stats->errors and skipped.
 * Returns 0; STEP_ESYS when root itself cannot be opened as a directory (errno kept);
 * STEP_ENOMEM; or the callback's error.
 */
int scan_tree(const char *root, char *const *exclude, size_t nexclude, scan_fn *fn, void *ctx,
    struct scan_stats *stats);

/* Nanosecond timestamps of a stat result. */
int64_t scan_mtime_ns(const struct stat *st);
int64_t scan_ctime_ns(const struct stat *st);

#endif
