/*
 * treewalk.h — walks the trees of a format-2 snapshot on the server, depth first.
 *
 * Every tree is downloaded (MD5-verified by the client), its bytes must hash to the id
 * that named it (so the server cannot swap one tree for another), and it is decoded
 * with the hostile checks of tree.h. A tree that names one of its ancestors, or a depth
 * over TREEWALK_DEPTH_MAX, stops the walk: a hostile server cannot make it loop.
 */
#ifndef STEP_TREEWALK_H
#define STEP_TREEWALK_H

#include <stddef.h>
#include <stdint.h>

#include "hash.h"
#include "tree.h"

struct client;

#define TREEWALK_DEPTH_MAX 512

/*
 * Called for every entry, in tree order, with its path relative to the root
 * ('/'-separated, NUL-terminated, borrowed). For a directory it is called twice: with
 * leave 0 before its contents, and with leave 1 after them. Returns 0 to go on, 1 (for a
 * directory, leave 0) to skip its contents, or a negative STEP_E* to stop the walk.
 */
typedef int treewalk_fn(void *arg, const char *path, const struct tree_entry *e, int leave);

/* Optional: 1 when the tree id was walked already and need not be again (prune's mark),
 * else 0 (and remember it). */
typedef int treewalk_seen_fn(void *arg, const uint8_t id[HASH_SHA256_LEN]);

/*
 * Walks the tree root. 0, or the callback's error, or STEP_ENOENT (a tree is missing),
 * STEP_EMISMATCH (a tree does not hash to its id), STEP_EPROTO / STEP_EINVAL (malformed or
 * unsafe tree, a loop, too deep), a client error; errbuf says which tree and why.
 */
int treewalk(struct client *c, const uint8_t root[HASH_SHA256_LEN], treewalk_fn *fn,
    treewalk_seen_fn *seen, void *arg, char *errbuf, size_t errlen);

/* Downloads tree id into a new buffer (*datap, caller frees) after checking its hash.
 * Errors as treewalk(). */
int treewalk_fetch(struct client *c, const uint8_t id[HASH_SHA256_LEN], uint8_t **datap,
    size_t *lenp, char *errbuf, size_t errlen);

#endif
