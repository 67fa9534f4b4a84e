/*
 * fetch.h — a pipelined downloader of many content-addressed objects over one client
 * session: a window of requests in flight across objects and blocks, so a small object
 * costs no round trip of its own.
 *
 * Objects come from the caller one at a time (next), their bytes go back in order
 * (data), and each ends once (done): with 0 only when all its bytes were delivered and
 * their SHA-256 equals the object's id (and, when a GET gave one, their MD5 the server's).
 * Against any server: GET (size, block size, MD5), then DOWNLOADs; to a server with the
 * any_block extension, an object of known size skips the GET: DOWNLOAD {key, block_index,
 * block_size: FETCH_BLOCK} directly. After a broken connection (or a pipelining failure
 * of a non-stepd server, which then gets one request at a time) the objects in progress
 * start over from their first byte: data() sees offset 0 again.
 */
#ifndef STEP_FETCH_H
#define STEP_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "hash.h"

#define FETCH_SIZE_UNKNOWN UINT64_MAX
#define FETCH_BLOCK        (1u << 20) /* block size asked of an any_block server */
#define FETCH_KEY_MAX      80

struct fetch_obj {
	char key[FETCH_KEY_MAX];     /* plain ASCII ([A-Za-z0-9._-]), e.g. "o." + hex id */
	uint8_t id[HASH_SHA256_LEN]; /* the SHA-256 its bytes must have */
	uint64_t size;               /* bytes, or FETCH_SIZE_UNKNOWN (then a GET asks) */
	uint64_t max_size;           /* when the size is unknown: larger objects are refused */
	void *arg;                   /* the caller's */
};

/* next() results besides 1 (an object in *o) */
#define FETCH_NONE 0 /* nothing now; ask again later */
#define FETCH_END  2 /* nothing more, ever */

struct fetch_ops {
	/*
	 * The next object to fetch: 1 and *o, FETCH_NONE or FETCH_END. may_block is 1 when
	 * this fetcher has nothing in flight: next() may then wait for work to appear (and
	 * should, rather than return FETCH_NONE).
	 */
	int (*next)(void *arg, int may_block, struct fetch_obj *o);
	/* Bytes [off, off + n) of o, in order (off 0 again after a restart). 0, or a
	 * negative STEP_E* that fails o (done() follows with that code). */
	int (*data)(void *arg, const struct fetch_obj *o, uint64_t off, const uint8_t *p, size_t n);
	/* o ended: rc 0 (all bytes delivered and verified) or a negative STEP_E* with a
	 * sentence (STEP_ENOENT: not on the server; STEP_EMISMATCH: wrong bytes; data()'s
	 * code). Called exactly once per object next() gave. */
	void (*done)(void *arg, const struct fetch_obj *o, int rc, const char *msg);
};

struct fetch_stats {
	uint64_t objects;  /* objects done with rc 0 */
	uint64_t bytes;    /* their bytes */
	uint64_t requests; /* GET and DOWNLOAD requests sent, repeats included */
	uint64_t restarts; /* reconnections */
};

/*
 * Fetches objects from ops->next() over c until it says FETCH_END and nothing is in
 * flight. Returns 0; or, when the session cannot go on (the server unreachable after
 * retries, login refused, out of memory), that code with client_error(c) set, after
 * done() was called for every object in progress. st (may be NULL) is added to.
 */
int fetch_run(struct client *c, const struct fetch_ops *ops, void *arg, struct fetch_stats *st);

/* Tests only: 1 skips the SHA-256 check of every object, so a test
 * can serve a tree that names one of its ancestors (which real hashes make impossible) and
 * see that the restore refuses it all the same. Never set outside tests. */
extern int fetch_test_trust_ids;

#endif
