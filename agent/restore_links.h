/*
 * restore_links.h — hard links on restore: every file of a link group (tree.h's link) is
 * first restored as a full file of its own, like any other; once the restore's workers are
 * done, each group's other members are replaced by hard links to its first one (linked
 * under a temporary name, then renamed over, so a failure leaves the full copy), and the
 * directories that got a link have their times set again. Members whose chunks differ
 * from the first one's (the file changed between two of its names during the backup) stay
 * copies. Private to restore.c.
 */
#ifndef STEP_RESTORE_LINKS_H
#define STEP_RESTORE_LINKS_H

#include <stdint.h>

#include "hash.h"

struct rlinks;

/* 0 and *outp (free with rlinks_free()), or STEP_ENOMEM. */
int rlinks_new(struct rlinks **outp);
void rlinks_free(struct rlinks *l);

/*
 * Records a file restored at dir/name (dir relative to the target, "" for the target
 * itself) of link group link whose chunk list hashes to digest; dir_mtime_ns is dir's time
 * from the snapshot, to set again after a link (dir_meta 0: leave the dir's time alone).
 * Thread-safe. 0 or STEP_ENOMEM (the file then simply stays a copy).
 */
int rlinks_add(struct rlinks *l, uint64_t link, const uint8_t digest[HASH_SHA256_LEN],
    const char *dir, const char *name, int64_t dir_mtime_ns, int dir_meta);

/* The digest rlinks_add() wants for a file's chunks (ids and sizes in order). */
struct tree_entry;
void rlinks_digest(const struct tree_entry *e, uint8_t digest[HASH_SHA256_LEN]);

/* A problem while linking (the file stays a full copy), as a sentence. */
typedef void rlinks_report_fn(void *arg, const char *msg);

/*
 * Links every group's members to its first member, below the directory targetfd (paths are
 * walked one component at a time, never following a symlink). Returns the number of names
 * made links; *failedp counts the members left as copies after a failure (each reported).
 */
uint64_t rlinks_apply(
    struct rlinks *l, int targetfd, rlinks_report_fn *report, void *arg, uint64_t *failedp);

#endif
