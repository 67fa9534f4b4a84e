/*
 * treewalk.c — depth-first walk over a snapshot's trees on the server; see treewalk.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "err.h"
#include "manifest.h"
#include "treewalk.h"

struct walk {
	struct client *c;
	treewalk_fn *fn;
	treewalk_seen_fn *seen;
	void *arg;
	char *errbuf;
	size_t errlen;
	uint8_t (*path_ids)[HASH_SHA256_LEN]; /* ids of the trees on the current path */
	int depth;
	char path[MANIFEST_PATH_MAX + 1];
};

int
treewalk_fetch(struct client *c, const uint8_t id[HASH_SHA256_LEN], uint8_t **datap, size_t *lenp,
    char *errbuf, size_t errlen)
{
	char key[MANIFEST_KEY_MAX + 1];
	uint8_t got[HASH_SHA256_LEN], *data = NULL;
	struct client_result res;
	size_t len = 0;
	int r;

	manifest_tree_key(id, key, sizeof(key));
	if ((r = client_get_mem(c, key, TREE_MAX_BYTES, &data, &len, &res)) != 0) {
		snprintf(errbuf, errlen, "tree %s: %s", key,
		    r == STEP_ENOENT ? "missing on the server" : client_error(c));
		return r;
	}
	hash_sha256(data, len, got);
	if (memcmp(got, id, HASH_SHA256_LEN) != 0) {
		snprintf(errbuf, errlen, "tree %s: its content does not match its id", key);
		free(data);
		return STEP_EMISMATCH;
	}
	*datap = data;
	*lenp = len;
	return 0;
}

static int
walk_tree(struct walk *w, const uint8_t id[HASH_SHA256_LEN], size_t plen)
{
	struct tree_reader rd;
	struct tree_entry e;
	uint8_t *data = NULL, sub[HASH_SHA256_LEN];
	size_t len = 0, n;
	int r, i, k;

	for (i = 0; i < w->depth; i++)
		if (memcmp(w->path_ids[i], id, HASH_SHA256_LEN) == 0) {
			snprintf(w->errbuf, w->errlen, "'%s': a tree that contains itself",
			    plen ? w->path : ".");
			return STEP_EINVAL;
		}
	if (w->depth >= TREEWALK_DEPTH_MAX) {
		snprintf(w->errbuf, w->errlen, "'%s': trees nested too deep", w->path);
		return STEP_EINVAL;
	}
	if ((r = treewalk_fetch(w->c, id, &data, &len, w->errbuf, w->errlen)) != 0)
		return r;
	memcpy(w->path_ids[w->depth++], id, HASH_SHA256_LEN);
	memset(&rd, 0, sizeof(rd));
	if ((r = tree_reader_init(&rd, data, len)) != 0) {
		snprintf(w->errbuf, w->errlen, "'%s': not a valid tree", plen ? w->path : ".");
		goto out;
	}
	while ((r = tree_reader_next(&rd, &e)) == 1) {
		n = plen + (plen > 0) + e.namelen;
		if (n > MANIFEST_PATH_MAX) {
			snprintf(w->errbuf, w->errlen, "'%s': a path too long", w->path);
			r = STEP_EINVAL;
			goto out;
		}
		if (plen > 0 && plen < MANIFEST_PATH_MAX) /* (n <= MANIFEST_PATH_MAX says so) */
			w->path[plen] = '/';
		memcpy(w->path + plen + (plen > 0), e.name, e.namelen);
		w->path[n] = '\0';
		if ((k = w->fn(w->arg, w->path, &e, 0)) < 0) {
			r = k;
			goto out;
		}
		if (e.type == TREE_DIR && k == 0) {
			memcpy(sub, e.subtree, sizeof(sub));
			if (w->seen == NULL || !w->seen(w->arg, sub)) {
				if ((r = walk_tree(w, sub, n)) != 0)
					goto out;
				/* e points into the parent's data, still held; the path was
				 * overwritten below */
				w->path[n] = '\0';
			}
			if ((k = w->fn(w->arg, w->path, &e, 1)) < 0) {
				r = k;
				goto out;
			}
		}
		w->path[plen] = '\0';
	}
	if (r < 0)
		snprintf(w->errbuf, w->errlen, "'%s': %s tree entry", plen ? w->path : ".",
		    r == STEP_EINVAL ? "an unsafe" : "a malformed");
out:
	w->depth--;
	tree_reader_release(&rd);
	free(data);
	return r;
}

int
treewalk(struct client *c, const uint8_t root[HASH_SHA256_LEN], treewalk_fn *fn,
    treewalk_seen_fn *seen, void *arg, char *errbuf, size_t errlen)
{
	struct walk w;
	int r;

	memset(&w, 0, sizeof(w));
	w.c = c;
	w.fn = fn;
	w.seen = seen;
	w.arg = arg;
	w.errbuf = errbuf;
	w.errlen = errlen;
	w.path_ids = calloc(TREEWALK_DEPTH_MAX, HASH_SHA256_LEN);
	if (w.path_ids == NULL)
		return STEP_ENOMEM;
	errbuf[0] = '\0';
	if (seen != NULL && seen(arg, root)) {
		free(w.path_ids);
		return 0;
	}
	r = walk_tree(&w, root, 0);
	free(w.path_ids);
	return r;
}
