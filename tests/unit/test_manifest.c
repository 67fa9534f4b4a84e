/* test_manifest.c — manifest lines round trip, hostile entries refused, truncation caught,
 * key names safe. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "manifest.h"

static struct manifest_entry *
entry(int type, const char *path)
{
	static struct manifest_entry e;

	memset(&e, 0, sizeof(e));
	e.type = type;
	snprintf(e.path, sizeof(e.path), "%s", path);
	e.mode = 0755;
	e.mtime_ns = 1700000000123456789LL;
	if (type == MANIFEST_FILE) {
		e.size = 20481;
		snprintf(e.key, sizeof(e.key), "o.%064d", 7);
		snprintf(e.md5, sizeof(e.md5), "%s", "0123456789abcdef0123456789abcdef");
	}
	return &e;
}

static void
roundtrip(const struct manifest_entry *in)
{
	struct manifest_entry out;
	struct buf b;

	buf_init(&b, MANIFEST_MAX_LINE);
	assert_int_equal(manifest_entry_encode(in, &b), 0);
	assert_int_equal(buf_ptr(&b)[buf_avail(&b) - 1], '\n');
	for (size_t i = 0; i < buf_avail(&b); i++)
		assert_true(buf_ptr(&b)[i] < 0x80); /* ASCII only */
	assert_int_equal(manifest_entry_decode((char *)buf_ptr(&b), buf_avail(&b) - 1, &out), 0);
	assert_int_equal(out.type, in->type);
	assert_string_equal(out.path, in->path);
	assert_int_equal(out.mode, in->mode);
	assert_true(out.mtime_ns == in->mtime_ns);
	if (in->type == MANIFEST_FILE) {
		assert_true(out.size == in->size);
		assert_string_equal(out.key, in->key);
		assert_string_equal(out.md5, in->md5);
	}
	if (in->type == MANIFEST_SYMLINK)
		assert_string_equal(out.target, in->target);
	buf_release(&b);
}

/* Plain names take a fast path that must write exactly what jansson writes. */
static void
test_plain_bytes(void **state)
{
	struct manifest_entry *e;
	struct buf b;

	(void)state;
	buf_init(&b, MANIFEST_MAX_LINE);
	e = entry(MANIFEST_FILE, "docs/a b.txt");
	assert_int_equal(manifest_entry_encode(e, &b), 0);
	e = entry(MANIFEST_DIR, "docs");
	assert_int_equal(manifest_entry_encode(e, &b), 0);
	e = entry(MANIFEST_SYMLINK, "link");
	snprintf(e->target, sizeof(e->target), "%s", "../x/y");
	assert_int_equal(manifest_entry_encode(e, &b), 0);
	assert_int_equal(buf_append(&b, "", 1), 0);
	assert_string_equal((const char *)buf_ptr(&b),
	    "{\"path\":\"docs/a b.txt\",\"type\":\"file\",\"mode\":493,"
	    "\"mtime_ns\":1700000000123456789,\"size\":20481,\"key\":\"o."
	    "0000000000000000000000000000000000000000000000000000000000000007\","
	    "\"md5\":\"0123456789abcdef0123456789abcdef\"}\n"
	    "{\"path\":\"docs\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1700000000123456789}\n"
	    "{\"path\":\"link\",\"type\":\"symlink\",\"mode\":493,"
	    "\"mtime_ns\":1700000000123456789,\"target\":\"../x/y\"}\n");
	buf_release(&b);
}

static void
test_roundtrip(void **state)
{
	struct manifest_entry *e;

	roundtrip(entry(MANIFEST_FILE, "docs/r\xc3\xa9sum\xc3\xa9 final.txt"));
	roundtrip(entry(MANIFEST_DIR, "empty dir"));
	e = entry(MANIFEST_SYMLINK, "bin/link");
	snprintf(e->target, sizeof(e->target), "%s", "../../outside/\"quoted\"");
	roundtrip(e);
	/* Not UTF-8: stored base64, comes back byte for byte. */
	roundtrip(entry(MANIFEST_FILE, "latin1-\xe9t\xe9.txt"));
	e = entry(MANIFEST_SYMLINK, "l2");
	snprintf(e->target, sizeof(e->target), "%s", "\xff\xfe");
	roundtrip(e);
	/* An empty file has no key. */
	e = entry(MANIFEST_FILE, "empty");
	e->size = 0;
	e->key[0] = '\0';
	snprintf(e->md5, sizeof(e->md5), "%s", MANIFEST_EMPTY_MD5);
	roundtrip(e);
	e->mtime_ns = -5; /* before 1970 */
	roundtrip(e);
}

static void
test_hostile_entries(void **state)
{
	static const char *bad[] = {
		"{\"path\":\"/etc/passwd\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":0}",
		"{\"path\":\"a/../../x\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":0}",
		"{\"path\":\"..\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":0}",
		"{\"path\":\"a//b\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":0}",
		"{\"path\":\"./a\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":0}",
		"{\"path\":\"a/\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":0}",
		"{\"path\":\"\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":0}",
		"{\"path_b64\":\"Li4=\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":0}", /* ".." */
		"{\"path_b64\":\"YQBi\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":0}", /* a\0b */
		"{\"path\":\"a\",\"type\":\"fifo\",\"mode\":493,\"mtime_ns\":0}",
		"{\"path\":\"a\",\"type\":\"dir\",\"mode\":99999,\"mtime_ns\":0}",
		"{\"path\":\"a\",\"type\":\"dir\",\"mode\":\"755\",\"mtime_ns\":0}",
		"{\"path\":\"a\",\"type\":\"symlink\",\"mode\":511,\"mtime_ns\":0}",
		"{\"path\":\"a\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":0,\"size\":5,"
		"\"md5\":\"0123456789abcdef0123456789abcdef\"}", /* content without key */
		"{\"path\":\"a\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":0,\"size\":5,"
		"\"key\":\"../etc/passwd\",\"md5\":\"0123456789abcdef0123456789abcdef\"}",
		"{\"path\":\"a\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":0,\"size\":-1,"
		"\"md5\":\"0123456789abcdef0123456789abcdef\"}",
		"{\"path\":\"a\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":0,\"size\":0,"
		"\"md5\":\"0123456789ABCDEF0123456789abcdef\"}",
		"[1,2]",
		"{\"path\":\"a\",\"path\":\"b\",\"type\":\"dir\",\"mode\":1,\"mtime_ns\":0}",
		"not json",
	};
	struct manifest_entry e;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (manifest_entry_decode(bad[i], strlen(bad[i]), &e) == 0)
			fail_msg("accepted: %s", bad[i]);
	}
	assert_false(manifest_path_safe(NULL));
	assert_true(manifest_path_safe("a/.hidden/..b/c."));
}

static void
test_stream(void **state)
{
	struct manifest_writer *w = NULL;
	struct manifest_reader *r = NULL;
	struct manifest_header h, h2;
	struct manifest_entry e;
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	int n = 0, rc;

	assert_int_equal(manifest_writer_new(&w), 0);
	assert_int_equal(manifest_writer_add(w, entry(MANIFEST_DIR, "d")), 0);
	assert_int_equal(manifest_writer_add(w, entry(MANIFEST_FILE, "d/f")), 0);
	assert_int_equal(manifest_writer_add(w, entry(MANIFEST_FILE, "g")), 0);
	memset(&h, 0, sizeof(h));
	snprintf(h.name, sizeof(h.name), "%s", "my docs");
	h.seq = 42;
	h.time = 1700000000;
	f = open_memstream(&text, &len);
	assert_non_null(f);
	assert_int_equal(manifest_writer_finish(w, &h, f), 0);
	fclose(f);
	manifest_writer_free(w);
	assert_int_equal(h.files, 2);
	assert_int_equal(h.dirs, 1);
	assert_int_equal(h.bytes, 2 * 20481);

	f = fmemopen(text, len, "r");
	assert_int_equal(manifest_reader_new(f, &h2, &r), 0);
	assert_string_equal(h2.name, "my docs");
	assert_int_equal(h2.seq, 42);
	assert_int_equal(h2.files, 2);
	while ((rc = manifest_reader_next(r, &e)) == 1)
		n++;
	assert_int_equal(rc, 0);
	assert_int_equal(n, 3);
	manifest_reader_free(r);
	fclose(f);

	/* Truncated anywhere before the trailer's newline: an error, never a short success. */
	for (size_t cut = 0; cut < len; cut++) {
		f = fmemopen(text, cut ? cut : 1, "r");
		r = NULL;
		rc = manifest_reader_new(f, &h2, &r);
		if (cut == 0) {
			/* one byte "{" */
			assert_true(rc < 0);
		}
		if (rc == 0) {
			while ((rc = manifest_reader_next(r, &e)) == 1)
				;
			assert_true(rc < 0);
		}
		manifest_reader_free(r);
		fclose(f);
	}
	/* A trailer with the wrong count. */
	{
		char *bad = strdup(text);
		char *end = strstr(bad, "{\"end\":3}");

		assert_non_null(end);
		end[7] = '4';
		f = fmemopen(bad, len, "r");
		assert_int_equal(manifest_reader_new(f, &h2, &r), 0);
		while ((rc = manifest_reader_next(r, &e)) == 1)
			;
		assert_int_equal(rc, STEP_EPROTO);
		manifest_reader_free(r);
		fclose(f);
		free(bad);
	}
	free(text);
}

static void
test_keys(void **state)
{
	uint8_t sha[HASH_SHA256_LEN];
	char k[200];
	uint64_t seq = 0;

	memset(sha, 0xab, sizeof(sha));
	assert_int_equal(manifest_object_key(sha, k, sizeof(k)), 0);
	assert_int_equal(strlen(k), 66);
	assert_true(manifest_is_object_key(k));
	assert_false(manifest_is_object_key("o.abc"));
	assert_int_equal(manifest_snapshot_key("my docs/x.y_z", 7, k, sizeof(k)), 0);
	assert_string_equal(k, "s.my_20docs_2fx_2ey_5fz.0000000007");
	assert_null(strchr(k + 2, '/'));
	assert_int_equal(manifest_snapshot_prefix("my docs/x.y_z", k, sizeof(k)), 0);
	assert_string_equal(k, "s.my_20docs_2fx_2ey_5fz.");
	assert_int_equal(manifest_snapshot_seq("s.my_20docs_2fx_2ey_5fz.0000000007", k, &seq), 0);
	assert_int_equal(seq, 7);
	assert_int_equal(
	    manifest_snapshot_seq("s.my_20docs_2fx_2ey_5fz.000000007", k, &seq), STEP_EINVAL);
	assert_int_equal(manifest_snapshot_seq("s.other.0000000007", k, &seq), STEP_EINVAL);
	assert_int_equal(manifest_snapshot_key("", 1, k, sizeof(k)), STEP_EINVAL);
	assert_int_equal(manifest_snapshot_key("a", 0, k, sizeof(k)), STEP_EINVAL);
	assert_int_equal(manifest_snapshot_key("a", 1, k, 5), STEP_ETOOBIG);
	assert_int_equal(manifest_snapshot_key("..", 1, k, sizeof(k)), 0);
	assert_string_equal(k, "s._2e_2e.0000000001");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_bytes),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_hostile_entries),
		cmocka_unit_test(test_stream),
		cmocka_unit_test(test_keys),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("manifest", tests, NULL, NULL);
}
