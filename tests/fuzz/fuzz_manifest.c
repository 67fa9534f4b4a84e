/* fuzz_manifest.c — libFuzzer target: a hostile snapshot manifest must give an error or
 * only safe entries, never a crash; accepted entries re-encode and decode identically. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct manifest_entry e, e2;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct manifest_reader *r = NULL;
	struct manifest_header h;
	struct buf b;
	FILE *f;
	int rc;

	if (size == 0)
		return 0;
	if ((f = fmemopen((void *)data, size, "r")) == NULL)
		return 0;
	buf_init(&b, MANIFEST_MAX_LINE);
	if (manifest_reader_new(f, &h, &r) == 0) {
		while ((rc = manifest_reader_next(r, &e)) == 1) {
			if (!manifest_path_safe(e.path))
				__builtin_trap();
			buf_reset(&b);
			if (manifest_entry_encode(&e, &b) != 0)
				__builtin_trap();
			if (manifest_entry_decode((char *)buf_ptr(&b), buf_avail(&b), &e2) != 0)
				__builtin_trap();
			if (strcmp(e.path, e2.path) != 0 || e.type != e2.type)
				__builtin_trap();
		}
		manifest_reader_free(r);
	}
	fclose(f);
	buf_release(&b);
	return 0;
}
