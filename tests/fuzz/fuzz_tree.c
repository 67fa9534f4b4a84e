/* fuzz_tree.c — libFuzzer target: hostile tree bytes give an error or safe entries, never a
 * crash; a tree that decodes re-encodes to exactly its bytes (one encoding per tree). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "tree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tree_entry *e = NULL;
	struct tree_chunk *c = NULL;
	size_t n = 0, nc = 0, cap = 0, capc = 0;
	struct tree_reader r;
	struct tree_entry t;
	struct buf b;
	int rc;

	buf_init(&b, TREE_MAX_BYTES);
	if (tree_reader_init(&r, data, size) != 0)
		goto out;
	while ((rc = tree_reader_next(&r, &t)) == 1) {
		if (t.namelen == 0 || memchr(t.name, '/', t.namelen) != NULL)
			__builtin_trap();
		if (n == cap) {
			struct tree_entry *ne;

			cap = cap ? 2 * cap : 8;
			if ((ne = realloc(e, cap * sizeof(*e))) == NULL)
				__builtin_trap();
			e = ne;
		}
		/* the reader reuses its chunk array: keep a copy (as offsets into c) */
		if (nc + t.nchunks > capc) {
			struct tree_chunk *ncs;

			capc = 2 * (nc + t.nchunks);
			if ((ncs = realloc(c, capc * sizeof(*c))) == NULL)
				__builtin_trap();
			c = ncs;
		}
		if (t.nchunks > 0)
			memcpy(c + nc, t.chunks, t.nchunks * sizeof(*c));
		t.chunks = (const struct tree_chunk *)(uintptr_t)nc;
		nc += t.nchunks;
		e[n++] = t;
	}
	if (rc == 0) {
		for (size_t i = 0; i < n; i++)
			e[i].chunks = e[i].nchunks > 0 ? c + (uintptr_t)e[i].chunks : NULL;
		if (tree_encode(e, n, &b) != 0)
			__builtin_trap();
		if (buf_avail(&b) != size || memcmp(buf_ptr(&b), data, size) != 0)
			__builtin_trap();
	}
out:
	tree_reader_release(&r);
	buf_release(&b);
	free(e);
	free(c);
	return 0;
}
