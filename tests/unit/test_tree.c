/* test_tree.c — tree objects: canonical bytes, round trips, hostile bytes refused (each
 * field checked with bytes written by hand here, independently of the encoder), and the
 * builder's trees and ids. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "tree.h"

/* --- a hand writer of tree bytes, which can write anything -------------------------- */

struct raw {
	uint8_t b[8192];
	size_t n;
};

static void
raw_bytes(struct raw *w, const void *p, size_t n)
{
	assert_true(w->n + n <= sizeof(w->b));
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

static void
raw_u8(struct raw *w, uint8_t v)
{
	raw_bytes(w, &v, 1);
}

static void
raw_varint(struct raw *w, uint64_t v)
{
	while (v >= 0x80) {
		raw_u8(w, (uint8_t)(v | 0x80));
		v >>= 7;
	}
	raw_u8(w, (uint8_t)v);
}

static void
raw_head(struct raw *w, uint64_t count)
{
	w->n = 0;
	raw_bytes(w, "steptree", 8);
	raw_u8(w, 1);
	raw_varint(w, count);
}

/* type, name, mode 0644, mtime_ns -3 (zig-zag 5), uid 1000, gid 100 */
static void
raw_common(struct raw *w, uint8_t type, const char *name, size_t namelen)
{
	raw_u8(w, type);
	raw_varint(w, namelen);
	raw_bytes(w, name, namelen);
	raw_varint(w, 0644);
	raw_varint(w, 5);
	raw_varint(w, 1000);
	raw_varint(w, 100);
}

static void
raw_file(struct raw *w, const char *name, uint64_t size, size_t n, const uint64_t *sizes)
{
	raw_common(w, TREE_FILE, name, strlen(name));
	raw_varint(w, size);
	raw_varint(w, n);
	for (size_t i = 0; i < n; i++) {
		uint8_t id[HASH_SHA256_LEN];

		memset(id, (int)(0xa0 + i), sizeof(id));
		raw_bytes(w, id, sizeof(id));
		raw_varint(w, sizes[i]);
	}
}

static void
raw_dir(struct raw *w, const char *name)
{
	uint8_t id[HASH_SHA256_LEN];

	raw_common(w, TREE_DIR, name, strlen(name));
	memset(id, 0x33, sizeof(id));
	raw_bytes(w, id, sizeof(id));
}

static void
raw_symlink(struct raw *w, const char *name, const char *target, size_t targetlen)
{
	raw_common(w, TREE_SYMLINK, name, strlen(name));
	raw_varint(w, targetlen);
	raw_bytes(w, target, targetlen);
}

/* Reads all entries: 0 when the whole tree is accepted, else the first error. */
static int
decode_all(const uint8_t *p, size_t n, size_t *countp)
{
	struct tree_reader r;
	struct tree_entry e;
	size_t count = 0;
	int rc;

	if ((rc = tree_reader_init(&r, p, n)) == 0) {
		while ((rc = tree_reader_next(&r, &e)) == 1)
			count++;
	}
	tree_reader_release(&r);
	if (countp != NULL)
		*countp = count;
	return rc;
}

/* --- entries made with the API --------------------------------------------------------- */

static struct tree_chunk chunks3[3];

static void
sample(struct tree_entry e[5])
{
	memset(e, 0, 5 * sizeof(*e));
	for (int i = 0; i < 3; i++) {
		memset(chunks3[i].id, 0x10 + i, HASH_SHA256_LEN);
		chunks3[i].size = (uint64_t)(1u << 20) + (uint64_t)i;
	}
	e[0] = (struct tree_entry){ .type = TREE_FILE,
		.name = "zeta",
		.namelen = 4,
		.mode = 0644,
		.mtime_ns = 1700000000123456789LL,
		.uid = 1000,
		.gid = 1000,
		.size = 3 * (1u << 20) + 3,
		.chunks = chunks3,
		.nchunks = 3 };
	e[1] = (struct tree_entry){ .type = TREE_DIR,
		.name = "alpha",
		.namelen = 5,
		.mode = 0755,
		.mtime_ns = -5,
		.uid = 0,
		.gid = 4294967295u };
	memset(e[1].subtree, 0x77, HASH_SHA256_LEN);
	e[2] = (struct tree_entry){ .type = TREE_SYMLINK,
		.name = "link",
		.namelen = 4,
		.mode = 0777,
		.mtime_ns = 0,
		.target = "../x/y",
		.targetlen = 6 };
	e[3] = (struct tree_entry){ .type = TREE_FILE,
		.name = "empty",
		.namelen = 5,
		.mode = 04755,
		.mtime_ns = INT64_MIN };
	e[4] = (struct tree_entry){ .type = TREE_FILE,
		.name = "alph",
		.namelen = 4,
		.mode = 0600,
		.mtime_ns = INT64_MAX,
		.uid = 4294967295u,
		.size = 5,
		.chunks = chunks3,
		.nchunks = 1 };
	chunks3[0].size = 5;
	e[0].size = 5 + 2 * (1u << 20) + 3;
}

struct decoded {
	struct tree_entry e[16];
	struct tree_chunk c[16][4];
	size_t n;
};

static void
decode_copy(const uint8_t *p, size_t len, struct decoded *d)
{
	struct tree_reader r;
	int rc;

	d->n = 0;
	assert_int_equal(tree_reader_init(&r, p, len), 0);
	while ((rc = tree_reader_next(&r, &d->e[d->n])) == 1) {
		struct tree_entry *e = &d->e[d->n];

		assert_true(e->nchunks <= 4);
		if (e->nchunks > 0)
			memcpy(d->c[d->n], e->chunks, e->nchunks * sizeof(*e->chunks));
		e->chunks = d->c[d->n];
		d->n++;
	}
	assert_int_equal(rc, 0);
	tree_reader_release(&r);
}

static void
test_roundtrip(void **state)
{
	struct tree_entry e[5];
	struct decoded *d = calloc(1, sizeof(*d));
	struct buf a, b;

	(void)state;
	sample(e);
	buf_init(&a, TREE_MAX_BYTES);
	buf_init(&b, TREE_MAX_BYTES);
	assert_int_equal(tree_encode(e, 5, &a), 0);
	/* sorted in place: alph < alpha < empty < link < zeta */
	assert_string_equal(e[0].name, "alph");
	assert_string_equal(e[1].name, "alpha");
	assert_string_equal(e[4].name, "zeta");
	decode_copy(buf_ptr(&a), buf_avail(&a), d);
	assert_int_equal(d->n, 5);
	assert_int_equal(d->e[0].type, TREE_FILE);
	assert_true(d->e[0].mtime_ns == INT64_MAX);
	assert_true(d->e[0].uid == 4294967295u);
	assert_true(d->e[1].mtime_ns == -5);
	assert_memory_equal(d->e[1].subtree, e[1].subtree, HASH_SHA256_LEN);
	assert_true(d->e[2].mtime_ns == INT64_MIN);
	assert_int_equal(d->e[2].nchunks, 0);
	assert_int_equal(d->e[2].mode, 04755);
	assert_memory_equal(d->e[3].target, "../x/y", 6);
	assert_int_equal(d->e[4].nchunks, 3);
	assert_memory_equal(d->e[4].chunks[2].id, chunks3[2].id, HASH_SHA256_LEN);
	assert_true(d->e[4].size == e[4].size);
	assert_int_equal(tree_encode(d->e, d->n, &b), 0);
	assert_int_equal(buf_avail(&a), buf_avail(&b));
	assert_memory_equal(buf_ptr(&a), buf_ptr(&b), buf_avail(&a));

	/* Order independence: any input order, the same bytes. */
	for (int k = 0; k < 5; k++) {
		struct tree_entry t = e[0];

		memmove(e, e + 1, 4 * sizeof(*e));
		e[4] = t;
		if (k % 2)
			t = e[1], e[1] = e[3], e[3] = t;
		buf_reset(&b);
		assert_int_equal(tree_encode(e, 5, &b), 0);
		assert_memory_equal(buf_ptr(&a), buf_ptr(&b), buf_avail(&a));
	}

	/* The empty tree: magic, version, count 0. */
	buf_reset(&b);
	assert_int_equal(tree_encode(NULL, 0, &b), 0);
	assert_int_equal(buf_avail(&b), 10);
	assert_memory_equal(buf_ptr(&b), "steptree\1\0", 10);
	assert_int_equal(decode_all(buf_ptr(&b), buf_avail(&b), NULL), 0);

	buf_release(&a);
	buf_release(&b);
	free(d);
}

/* The format is what tree.h says: bytes written by hand decode, and the encoder writes
 * exactly them. */
static void
test_format(void **state)
{
	static const uint64_t sizes[] = { 7, 3 };
	struct tree_entry e[3];
	struct raw w;
	struct buf b;
	uint8_t id[HASH_SHA256_LEN];
	struct tree_chunk c[2];
	size_t count;

	(void)state;
	raw_head(&w, 3);
	raw_dir(&w, "d");
	raw_file(&w, "f", 10, 2, sizes);
	raw_symlink(&w, "s", "t", 1);
	assert_int_equal(decode_all(w.b, w.n, &count), 0);
	assert_int_equal(count, 3);

	memset(id, 0x33, sizeof(id));
	memset(c[0].id, 0xa0, HASH_SHA256_LEN);
	memset(c[1].id, 0xa1, HASH_SHA256_LEN);
	c[0].size = 7;
	c[1].size = 3;
	memset(e, 0, sizeof(e));
	for (int i = 0; i < 3; i++) {
		e[i].mode = 0644;
		e[i].mtime_ns = -3;
		e[i].uid = 1000;
		e[i].gid = 100;
		e[i].namelen = 1;
	}
	e[0].type = TREE_SYMLINK, e[0].name = "s", e[0].target = "t", e[0].targetlen = 1;
	e[1].type = TREE_FILE, e[1].name = "f", e[1].size = 10, e[1].chunks = c, e[1].nchunks = 2;
	e[2].type = TREE_DIR, e[2].name = "d";
	memcpy(e[2].subtree, id, sizeof(id));
	buf_init(&b, TREE_MAX_BYTES);
	assert_int_equal(tree_encode(e, 3, &b), 0);
	assert_int_equal(buf_avail(&b), w.n);
	assert_memory_equal(buf_ptr(&b), w.b, w.n);
	buf_release(&b);
}

static void
expect_encode_at(struct tree_entry *e, size_t n, int want, int line)
{
	struct buf b;

	buf_init(&b, TREE_MAX_BYTES);
	assert_int_equal(buf_append(&b, "xy", 2), 0);
	if (tree_encode(e, n, &b) != want)
		print_message("# tree_encode: not %d, for line %d\n", want, line), fail();
	if (want != 0)
		assert_int_equal(buf_avail(&b), 2); /* left as it was */
	buf_release(&b);
}
#define expect_encode(e, n, want) expect_encode_at(e, n, want, __LINE__)

static void
test_encode_refuses(void **state)
{
	static const char *bad[] = { "", ".", "..", "a/b", "/", "a\0b" };
	static const size_t badlen[] = { 0, 1, 2, 3, 1, 3 };
	struct tree_entry e[5];
	char longname[TREE_NAME_MAX + 1];
	char longtarget[TREE_TARGET_MAX + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sample(e);
		e[2].name = bad[i];
		e[2].namelen = badlen[i];
		expect_encode(e, 5, STEP_EINVAL);
	}
	memset(longname, 'n', sizeof(longname));
	sample(e);
	e[2].name = longname;
	e[2].namelen = TREE_NAME_MAX;
	expect_encode(e, 5, 0);
	sample(e);
	e[2].name = longname;
	e[2].namelen = TREE_NAME_MAX + 1;
	expect_encode(e, 5, STEP_EINVAL);

	sample(e); /* duplicate names, also of different types */
	e[3].name = "link";
	expect_encode(e, 5, STEP_EINVAL);
	sample(e);
	e[4].size++; /* chunk sizes that do not add up */
	expect_encode(e, 5, STEP_EINVAL);
	sample(e);
	e[3].size = 1; /* no chunks but a size */
	expect_encode(e, 5, STEP_EINVAL);
	sample(e);
	chunks3[1].size = 0; /* a zero-size chunk */
	e[0].size -= (1u << 20) + 1;
	expect_encode(e, 5, STEP_EINVAL);
	sample(e);
	e[1].mode = 010000;
	expect_encode(e, 5, STEP_EINVAL);
	sample(e);
	e[1].type = 4;
	expect_encode(e, 5, STEP_EINVAL);
	sample(e);
	e[2].targetlen = 0;
	expect_encode(e, 5, STEP_EINVAL);
	sample(e);
	e[2].target = "a\0b";
	e[2].targetlen = 3;
	expect_encode(e, 5, STEP_EINVAL);
	memset(longtarget, 't', sizeof(longtarget));
	sample(e);
	e[2].target = longtarget;
	e[2].targetlen = TREE_TARGET_MAX;
	expect_encode(e, 5, 0);
	sample(e); /* tree_encode sorted e */
	e[2].target = longtarget;
	e[2].targetlen = TREE_TARGET_MAX + 1;
	expect_encode(e, 5, STEP_EINVAL);
}

/* Hard links: type 4 carries a link group, decodes as a file with that link; files
 * without one keep type 1's bytes (old trees and ids unchanged); a link on a directory or
 * symlink is refused by the encoder, a type-4 entry with link 0 or cut short by the reader. */
static void
test_links(void **state)
{
	static const uint64_t sizes[] = { 7, 3 };
	struct tree_entry e[2], got;
	struct tree_chunk c[2];
	struct tree_reader r;
	struct raw w, plain;
	struct buf b;

	(void)state;
	raw_head(&w, 2);
	raw_file(&w, "f", 10, 2, sizes);
	w.b[8 + 1 + 1] = TREE_WIRE_LINKED; /* magic, version, count, then the type byte */
	raw_varint(&w, 300);
	raw_file(&w, "g", 10, 2, sizes);
	memset(c[0].id, 0xa0, HASH_SHA256_LEN);
	memset(c[1].id, 0xa1, HASH_SHA256_LEN);
	c[0].size = 7;
	c[1].size = 3;
	memset(e, 0, sizeof(e));
	for (int i = 0; i < 2; i++) {
		e[i].type = TREE_FILE;
		e[i].mode = 0644;
		e[i].mtime_ns = -3;
		e[i].uid = 1000;
		e[i].gid = 100;
		e[i].namelen = 1;
		e[i].size = 10;
		e[i].chunks = c;
		e[i].nchunks = 2;
	}
	e[0].name = "f";
	e[0].link = 300;
	e[1].name = "g";
	buf_init(&b, TREE_MAX_BYTES);
	assert_int_equal(tree_encode(e, 2, &b), 0);
	assert_int_equal(buf_avail(&b), w.n);
	assert_memory_equal(buf_ptr(&b), w.b, w.n);
	assert_int_equal(tree_reader_init(&r, buf_ptr(&b), buf_avail(&b)), 0);
	assert_int_equal(tree_reader_next(&r, &got), 1);
	assert_int_equal(got.type, TREE_FILE);
	assert_int_equal(got.link, 300);
	assert_int_equal(got.nchunks, 2);
	assert_int_equal(tree_reader_next(&r, &got), 1);
	assert_int_equal(got.link, 0);
	assert_int_equal(tree_reader_next(&r, &got), 0);
	tree_reader_release(&r);
	/* without the link: exactly the old type-1 bytes */
	e[0].link = 0;
	raw_head(&plain, 2);
	raw_file(&plain, "f", 10, 2, sizes);
	raw_file(&plain, "g", 10, 2, sizes);
	buf_reset(&b);
	assert_int_equal(tree_encode(e, 2, &b), 0);
	assert_int_equal(buf_avail(&b), plain.n);
	assert_memory_equal(buf_ptr(&b), plain.b, plain.n);
	buf_release(&b);
	/* a link on a directory or a symlink */
	memset(e, 0, sizeof(e));
	e[0].type = TREE_DIR, e[0].name = "d", e[0].namelen = 1, e[0].link = 1;
	expect_encode(e, 1, STEP_EINVAL);
	e[0].type = TREE_SYMLINK, e[0].target = "t", e[0].targetlen = 1;
	expect_encode(e, 1, STEP_EINVAL);
	/* link 0 in a type-4 entry is not canonical; a missing link is truncation */
	raw_head(&w, 1);
	raw_file(&w, "f", 10, 2, sizes);
	w.b[8 + 1 + 1] = TREE_WIRE_LINKED;
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_varint(&w, 0);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	w.n--;
	raw_varint(&w, 1);
	assert_int_equal(decode_all(w.b, w.n, NULL), 0);
}

static void
test_decode_refuses(void **state)
{
	static const uint64_t s73[] = { 7, 3 }, s0[] = { 0, 10 }, s9[] = { 7, 2 };
	char longname[TREE_NAME_MAX + 2];
	struct raw w;

	(void)state;
	/* names */
	raw_head(&w, 1);
	raw_common(&w, TREE_DIR, "a/b", 3);
	raw_bytes(&w, longname, HASH_SHA256_LEN);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 1);
	raw_common(&w, TREE_DIR, "..", 2);
	raw_bytes(&w, longname, HASH_SHA256_LEN);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 1);
	raw_common(&w, TREE_DIR, ".", 1);
	raw_bytes(&w, longname, HASH_SHA256_LEN);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 1);
	raw_common(&w, TREE_DIR, "a\0", 2);
	raw_bytes(&w, longname, HASH_SHA256_LEN);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 1);
	raw_common(&w, TREE_DIR, "", 0);
	raw_bytes(&w, longname, HASH_SHA256_LEN);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	memset(longname, 'n', sizeof(longname));
	longname[TREE_NAME_MAX + 1] = '\0';
	raw_head(&w, 1);
	raw_dir(&w, longname);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	longname[TREE_NAME_MAX] = '\0';
	raw_head(&w, 1);
	raw_dir(&w, longname);
	assert_int_equal(decode_all(w.b, w.n, NULL), 0);

	/* duplicates and order */
	raw_head(&w, 2);
	raw_dir(&w, "a");
	raw_dir(&w, "a");
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 2);
	raw_dir(&w, "b");
	raw_dir(&w, "a");
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 2);
	raw_dir(&w, "ab");
	raw_dir(&w, "a");
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 2);
	raw_dir(&w, "a");
	raw_dir(&w, "ab");
	assert_int_equal(decode_all(w.b, w.n, NULL), 0);

	/* chunks */
	raw_head(&w, 1);
	raw_file(&w, "f", 11, 2, s73);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 1);
	raw_file(&w, "f", 9, 2, s9);
	assert_int_equal(decode_all(w.b, w.n, NULL), 0);
	raw_head(&w, 1);
	raw_file(&w, "f", 10, 2, s0);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 1);
	raw_file(&w, "f", 10, 0, NULL);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	/* a chunk count far beyond the bytes (truncation, found before allocating) */
	raw_head(&w, 1);
	raw_common(&w, TREE_FILE, "f", 1);
	raw_varint(&w, 10);
	raw_varint(&w, TREE_CHUNKS_MAX);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, 1);
	raw_common(&w, TREE_FILE, "f", 1);
	raw_varint(&w, 10);
	raw_varint(&w, TREE_CHUNKS_MAX + 1);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	/* sizes that overflow 64 bits when added */
	raw_head(&w, 1);
	raw_common(&w, TREE_FILE, "f", 1);
	raw_varint(&w, 1);
	raw_varint(&w, 2);
	raw_bytes(&w, longname, HASH_SHA256_LEN);
	raw_varint(&w, UINT64_MAX);
	raw_bytes(&w, longname, HASH_SHA256_LEN);
	raw_varint(&w, 2);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
}

/* Symlinks, fields out of range, unknown types, varints that are not minimal or too long. */
static void
test_decode_fields(void **state)
{
	struct raw w;

	(void)state;
	/* symlinks */
	raw_head(&w, 1);
	raw_symlink(&w, "s", "", 0);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);
	raw_head(&w, 1);
	raw_symlink(&w, "s", "a\0b", 3);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EINVAL);

	/* fields out of range */
	raw_head(&w, 1);
	raw_u8(&w, TREE_DIR);
	raw_varint(&w, 1);
	raw_u8(&w, 'd');
	raw_varint(&w, 010000); /* mode */
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, 1);
	raw_u8(&w, TREE_DIR);
	raw_varint(&w, 1);
	raw_u8(&w, 'd');
	raw_varint(&w, 0755);
	raw_varint(&w, 0);
	raw_varint(&w, 1ull << 32); /* uid */
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, TREE_ENTRIES_MAX + 1);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);

	/* unknown types */
	raw_head(&w, 1);
	raw_common(&w, 4, "x", 1);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, 1);
	raw_common(&w, 0, "x", 1);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);

	/* varints: not minimal, over 64 bits */
	raw_head(&w, 0);
	w.n--;
	raw_u8(&w, 0x80);
	raw_u8(&w, 0x00); /* 0 in two bytes */
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, 1);
	raw_u8(&w, TREE_DIR);
	raw_u8(&w, 0x81);
	raw_u8(&w, 0x00); /* name length 1 in two bytes */
	raw_u8(&w, 'd');
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, 1);
	raw_u8(&w, TREE_SYMLINK);
	raw_varint(&w, 1);
	raw_u8(&w, 's');
	raw_varint(&w, 0755);
	for (int i = 0; i < 10; i++)
		raw_u8(&w, 0xff); /* mtime: 70 bits */
	raw_u8(&w, 0x01);
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, 1);
	raw_u8(&w, TREE_SYMLINK);
	raw_varint(&w, 1);
	raw_u8(&w, 's');
	raw_varint(&w, 0755);
	for (int i = 0; i < 9; i++)
		raw_u8(&w, 0xff);
	raw_u8(&w, 0x02); /* the 65th bit */
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, 1);
	raw_u8(&w, TREE_SYMLINK);
	raw_varint(&w, 1);
	raw_u8(&w, 's');
	raw_varint(&w, 0755);
	raw_varint(&w, UINT64_MAX); /* the largest mtime that fits */
	raw_varint(&w, 0);
	raw_varint(&w, 0);
	raw_varint(&w, 1);
	raw_u8(&w, 't');
	assert_int_equal(decode_all(w.b, w.n, NULL), 0);
}

/* The frame: magic, version, entry count, trailing bytes, every truncation. */
static void
test_decode_framing(void **state)
{
	struct raw w;
	struct buf b;
	struct tree_entry e[5];

	(void)state;
	/* magic, version, counts, trailing bytes, truncation */
	raw_head(&w, 0);
	assert_int_equal(decode_all(w.b, w.n, NULL), 0);
	w.b[0] = 'S';
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, 0);
	w.b[8] = 2;
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO);
	raw_head(&w, 2);
	raw_dir(&w, "a");
	assert_int_equal(decode_all(w.b, w.n, NULL), STEP_EPROTO); /* one entry short */

	sample(e);
	buf_init(&b, TREE_MAX_BYTES);
	assert_int_equal(tree_encode(e, 5, &b), 0);
	assert_int_equal(decode_all(buf_ptr(&b), buf_avail(&b), NULL), 0);
	for (size_t len = 0; len < buf_avail(&b); len++) {
		uint8_t *copy = malloc(len + 1); /* exactly len readable bytes under ASan */

		memcpy(copy, buf_ptr(&b), len);
		assert_true(decode_all(copy, len, NULL) < 0);
		free(copy);
	}
	assert_int_equal(buf_append(&b, "", 1), 0);
	assert_int_equal(decode_all(buf_ptr(&b), buf_avail(&b), NULL), STEP_EPROTO);
	buf_release(&b);
}

/* --- the builder ----------------------------------------------------------------------- */

struct emitted {
	size_t n;
	uint8_t id[32][HASH_SHA256_LEN];
	int fail_at; /* emit fails on this call (1-based), 0: never */
};

static int
emit(void *arg, const uint8_t id[HASH_SHA256_LEN], const uint8_t *data, size_t len)
{
	struct emitted *em = arg;
	uint8_t check[HASH_SHA256_LEN];

	hash_sha256(data, len, check);
	assert_memory_equal(check, id, HASH_SHA256_LEN);
	assert_int_equal(decode_all(data, len, NULL), 0);
	if (em->fail_at != 0 && (int)em->n + 1 == em->fail_at)
		return STEP_EIO;
	assert_true(em->n < 32);
	memcpy(em->id[em->n++], id, HASH_SHA256_LEN);
	return 0;
}

static int
emitted_has(const struct emitted *em, const uint8_t id[HASH_SHA256_LEN])
{
	for (size_t i = 0; i < em->n; i++)
		if (memcmp(em->id[i], id, HASH_SHA256_LEN) == 0)
			return 1;
	return 0;
}

struct spec {
	const char *path;
	int type;
	int64_t mtime;
	uint8_t content; /* files: the id's byte */
};

static const struct spec tree2[] = {
	{ "b", TREE_DIR, 1, 0 },
	{ "b/c", TREE_DIR, 1, 0 },
	{ "b/c/f1", TREE_FILE, 1, 3 },
	{ "b/c/f2", TREE_FILE, 1, 4 },
	{ "b/e", TREE_DIR, 1, 0 }, /* empty */
	{ "b/g", TREE_SYMLINK, 1, 0 },
	{ "b/h", TREE_FILE, 1, 5 },
	{ "d.txt", TREE_FILE, 1, 7 }, /* before "d/": scan order (scan.h) */
	{ "d", TREE_DIR, 1, 0 },
	{ "d/x", TREE_DIR, 1, 0 },
	{ "d/x/y", TREE_FILE, 1, 6 },
	{ "z", TREE_FILE, 1, 0 }, /* empty file */
	{ NULL, 0, 0, 0 },
};

static int
build(const struct spec *s, size_t nspec, const struct spec *patch, struct emitted *em,
    uint8_t root[HASH_SHA256_LEN])
{
	struct tree_builder *b = NULL;
	struct tree_chunk c;
	int r;

	em->n = 0;
	assert_int_equal(tree_builder_new(emit, em, &b), 0);
	for (size_t i = 0; i < nspec && s[i].path != NULL; i++) {
		struct spec t = s[i];
		struct tree_entry e;

		if (patch != NULL && strcmp(patch->path, t.path) == 0)
			t = *patch;
		memset(&e, 0, sizeof(e));
		e.type = t.type;
		e.name = "ignored/"; /* the builder takes the name from the path */
		e.namelen = 8;
		e.mode = t.type == TREE_DIR ? 0755 : 0644;
		e.mtime_ns = t.mtime;
		if (t.type == TREE_FILE && t.content != 0) {
			memset(c.id, t.content, sizeof(c.id));
			c.size = 100 + t.content;
			e.chunks = &c;
			e.nchunks = 1;
			e.size = c.size;
		}
		if (t.type == TREE_SYMLINK)
			e.target = "f1", e.targetlen = 2;
		if ((r = tree_builder_add(b, t.path, &e)) != 0) {
			tree_builder_free(b);
			return r;
		}
	}
	r = tree_builder_finish(b, root);
	if (r == 0) {
		uint64_t nt, nb;

		tree_builder_stats(b, &nt, &nb);
		assert_int_equal(nt, em->n);
		assert_true(nb > 10 * nt - 1);
	}
	tree_builder_free(b);
	return r;
}

/* The id of the directory named name in tree data. */
static void
subtree_of(const uint8_t *data, size_t len, const char *name, uint8_t out[HASH_SHA256_LEN])
{
	struct tree_reader r;
	struct tree_entry e;

	assert_int_equal(tree_reader_init(&r, data, len), 0);
	while (tree_reader_next(&r, &e) == 1)
		if (e.type == TREE_DIR && e.namelen == strlen(name) &&
		    memcmp(e.name, name, e.namelen) == 0)
			memcpy(out, e.subtree, HASH_SHA256_LEN);
	tree_reader_release(&r);
}

static void
test_builder(void **state)
{
	struct emitted *em = calloc(1, sizeof(*em)), *em2 = calloc(1, sizeof(*em2));
	uint8_t root[HASH_SHA256_LEN], root2[HASH_SHA256_LEN];
	struct spec p;
	size_t n2 = sizeof(tree2) / sizeof(tree2[0]) - 1;

	(void)state;
	/* root, b, b/c, b/e, d, d/x: six trees, the root last */
	assert_int_equal(build(tree2, n2, NULL, em, root), 0);
	assert_int_equal(em->n, 6);
	assert_memory_equal(em->id[5], root, HASH_SHA256_LEN);
	assert_int_equal(build(tree2, n2, NULL, em2, root2), 0);
	assert_memory_equal(root, root2, HASH_SHA256_LEN);

	/* a changed file: the trees on its path change, the others keep their ids */
	p = (struct spec){ "d/x/y", TREE_FILE, 1, 9 };
	assert_int_equal(build(tree2, n2, &p, em2, root2), 0);
	assert_memory_not_equal(root, root2, HASH_SHA256_LEN);
	{
		size_t same = 0;

		for (size_t i = 0; i < em2->n; i++)
			same += emitted_has(em, em2->id[i]);
		assert_int_equal(same, 3); /* b, b/c, b/e */
	}
	/* metadata: a directory's mtime is in its parent's tree, not in its own: b and the
	 * root change, b/c keeps its id */
	p = (struct spec){ "b/c", TREE_DIR, 2, 0 };
	assert_int_equal(build(tree2, n2, &p, em2, root2), 0);
	assert_memory_not_equal(root, root2, HASH_SHA256_LEN);
	{
		size_t same = 0;

		for (size_t i = 0; i < em2->n; i++)
			same += emitted_has(em, em2->id[i]);
		assert_int_equal(same, 4);
	}
	/* a symlink's mtime: b and the root */
	p = (struct spec){ "b/g", TREE_SYMLINK, 7, 0 };
	assert_int_equal(build(tree2, n2, &p, em2, root2), 0);
	{
		size_t same = 0;

		for (size_t i = 0; i < em2->n; i++)
			same += emitted_has(em, em2->id[i]);
		assert_int_equal(same, 4);
	}

	/* refused: out of order, a parent not open (never, or no longer), unsafe paths */
	{
		static const struct spec bad1[] = { { "b", TREE_FILE, 1, 1 },
			{ "a", TREE_FILE, 1, 1 } };
		static const struct spec bad2[] = { { "x/y", TREE_FILE, 1, 1 } };
		static const struct spec bad3[] = { { "a", TREE_DIR, 1, 0 },
			{ "b", TREE_FILE, 1, 1 }, { "a/x", TREE_FILE, 1, 1 } };
		static const struct spec bad4[] = { { "a", TREE_FILE, 1, 1 },
			{ "a/x", TREE_FILE, 1, 1 } };
		static const struct spec bad5[] = { { "a", TREE_DIR, 1, 0 },
			{ "a/..", TREE_FILE, 1, 1 } };
		static const struct spec bad6[] = { { "/a", TREE_FILE, 1, 1 } };
		static const struct spec bad7[] = { { "a", TREE_DIR, 1, 0 },
			{ "a//b", TREE_FILE, 1, 1 } };
		static const struct spec bad8[] = { { "a", TREE_FILE, 1, 1 },
			{ "a", TREE_FILE, 1, 1 } };
		static const struct spec bad9[] = { { "a", TREE_FILE, 1, 1 },
			{ "a", TREE_DIR, 1, 1 } };
		static const struct spec bad10[] = { { "a/", TREE_FILE, 1, 1 } };
		static const struct spec bad11[] = { { "", TREE_FILE, 1, 1 } };
		static const struct spec *bads[] = { bad1, bad2, bad3, bad4, bad5, bad6, bad7, bad8,
			bad9, bad10, bad11 };
		static const size_t nbads[] = { 2, 1, 3, 2, 2, 1, 2, 2, 2, 1, 1 };

		for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++)
			assert_int_equal(build(bads[i], nbads[i], NULL, em2, root2), STEP_EINVAL);
	}

	/* emit's error ends the build with that error */
	em2->fail_at = 2;
	assert_int_equal(build(tree2, n2, NULL, em2, root2), STEP_EIO);
	em2->fail_at = 6;
	assert_int_equal(build(tree2, n2, NULL, em2, root2), STEP_EIO);
	free(em);
	free(em2);
}

/* Keeps every emitted tree. */
struct kept {
	size_t n;
	uint8_t id[8][HASH_SHA256_LEN];
	uint8_t *data[8];
	size_t len[8];
};

static int
keep(void *arg, const uint8_t id[HASH_SHA256_LEN], const uint8_t *data, size_t len)
{
	struct kept *k = arg;

	assert_true(k->n < 8);
	memcpy(k->id[k->n], id, HASH_SHA256_LEN);
	k->data[k->n] = malloc(len);
	memcpy(k->data[k->n], data, len);
	k->len[k->n++] = len;
	return 0;
}

/* What the on-close hook saw: each directory's path, id and counts. */
struct closed {
	size_t n;
	char path[8][16];
	uint8_t id[8][HASH_SHA256_LEN];
	struct tree_counts c[8];
};

static void
on_closed(
    void *arg, const char *path, const uint8_t id[HASH_SHA256_LEN], const struct tree_counts *c)
{
	struct closed *cl = arg;

	assert_true(cl->n < 8);
	snprintf(cl->path[cl->n], sizeof(cl->path[0]), "%s", path);
	memcpy(cl->id[cl->n], id, HASH_SHA256_LEN);
	cl->c[cl->n++] = *c;
}

/* An incremental build: the directory "b" added as the finished subtree the first build
 * closed (its id and counts) gives the same root id and counts, and emits no tree of b. */
static void
test_builder_subtree(void **state)
{
	static const char *paths[] = { "a.txt", "b", "b/c", "b/c/f", "b/l", "z" };
	static const int types[] = { TREE_FILE, TREE_DIR, TREE_DIR, TREE_FILE, TREE_SYMLINK,
		TREE_FILE };
	struct tree_builder *b = NULL;
	struct kept k = { 0 };
	struct closed cl = { 0 };
	struct tree_counts all, all2, bc;
	uint8_t root[HASH_SHA256_LEN], root2[HASH_SHA256_LEN], bid[HASH_SHA256_LEN];
	struct tree_entry e;
	struct tree_chunk ch = { { 7 }, 42 };
	size_t j;

	(void)state;
	for (int pass = 0; pass < 2; pass++) {
		assert_int_equal(tree_builder_new(keep, &k, &b), 0);
		tree_builder_on_close(b, on_closed, &cl);
		for (j = 0; j < 6; j++) {
			memset(&e, 0, sizeof(e));
			e.type = types[j];
			e.mode = 0750;
			e.mtime_ns = 5;
			if (e.type == TREE_FILE)
				e.chunks = &ch, e.nchunks = 1, e.size = 42;
			if (e.type == TREE_SYMLINK)
				e.target = "c/f", e.targetlen = 3;
			if (pass == 1 && j == 1) {
				memcpy(e.subtree, bid, HASH_SHA256_LEN);
				assert_int_equal(tree_builder_add_subtree(b, paths[j], &e, &bc), 0);
				j = 4; /* its contents are not added again */
				continue;
			}
			assert_int_equal(tree_builder_add(b, paths[j], &e), 0);
		}
		assert_int_equal(tree_builder_finish(b, pass ? root2 : root), 0);
		tree_builder_counts(b, pass ? &all2 : &all);
		tree_builder_free(b);
		if (pass == 0) {
			/* closed: b/c, b, then the root */
			assert_int_equal(cl.n, 3);
			assert_string_equal(cl.path[1], "b");
			assert_string_equal(cl.path[2], "");
			assert_memory_equal(cl.id[2], root, HASH_SHA256_LEN);
			memcpy(bid, cl.id[1], HASH_SHA256_LEN);
			bc = cl.c[1];
			assert_int_equal(bc.files, 1);
			assert_int_equal(bc.dirs, 1);
			assert_int_equal(bc.symlinks, 1);
			assert_int_equal(bc.bytes, 42);
			cl.n = 0;
			while (k.n > 0)
				free(k.data[--k.n]);
		}
	}
	assert_memory_equal(root, root2, HASH_SHA256_LEN);
	assert_int_equal(cl.n, 1); /* only the root closed: b was not built again */
	assert_int_equal(k.n, 1);
	assert_int_equal(all.files, 3);
	assert_int_equal(all.dirs, 2);
	assert_int_equal(all.symlinks, 1);
	assert_int_equal(all.bytes, 126);
	assert_memory_equal(&all, &all2, sizeof(all));
	while (k.n > 0)
		free(k.data[--k.n]);
	/* a subtree must be a directory */
	assert_int_equal(tree_builder_new(keep, &k, &b), 0);
	e.type = TREE_FILE;
	assert_int_equal(tree_builder_add_subtree(b, "x", &e, &bc), STEP_EINVAL);
	tree_builder_free(b);
}

/* Scan order puts "a.txt" before the directory "a" (its key is "a/"), the tree puts "a"
 * first; a directory's id, as its parent names it, is that of the tree emitted for it. */
static void
test_builder_links(void **state)
{
	static const char *paths[] = { "a.txt", "a", "a/f", "a0" };
	static const int types[] = { TREE_FILE, TREE_DIR, TREE_SYMLINK, TREE_FILE };
	static const char *names[] = { "a", "a.txt", "a0" };
	struct tree_builder *b = NULL;
	struct kept k = { 0 };
	uint8_t root[HASH_SHA256_LEN], sub[HASH_SHA256_LEN];
	struct tree_reader r;
	struct tree_entry e;
	size_t i = 0;

	(void)state;
	assert_int_equal(tree_builder_new(keep, &k, &b), 0);
	for (size_t j = 0; j < 4; j++) {
		memset(&e, 0, sizeof(e));
		e.type = types[j];
		e.mode = 0750;
		e.mtime_ns = (int64_t)j;
		if (e.type == TREE_SYMLINK)
			e.target = "../a.txt", e.targetlen = 8;
		assert_int_equal(tree_builder_add(b, paths[j], &e), 0);
	}
	assert_int_equal(tree_builder_finish(b, root), 0);
	assert_int_equal(tree_builder_finish(b, root), STEP_EINVAL);
	assert_int_equal(tree_builder_add(b, "zz", &e), STEP_EINVAL);
	tree_builder_free(b);
	assert_int_equal(k.n, 2);
	assert_memory_equal(k.id[1], root, HASH_SHA256_LEN);
	assert_int_equal(tree_reader_init(&r, k.data[1], k.len[1]), 0);
	while (tree_reader_next(&r, &e) == 1) {
		assert_true(i < 3);
		assert_int_equal(e.namelen, strlen(names[i]));
		assert_memory_equal(e.name, names[i], e.namelen);
		if (i == 0) {
			assert_int_equal(e.type, TREE_DIR);
			assert_int_equal(e.mode, 0750);
			assert_true(e.mtime_ns == 1);
		}
		i++;
	}
	tree_reader_release(&r);
	assert_int_equal(i, 3);
	subtree_of(k.data[1], k.len[1], "a", sub);
	assert_memory_equal(sub, k.id[0], HASH_SHA256_LEN);
	for (i = 0; i < k.n; i++)
		free(k.data[i]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_encode_refuses),
		cmocka_unit_test(test_decode_refuses),
		cmocka_unit_test(test_decode_fields),
		cmocka_unit_test(test_decode_framing),
		cmocka_unit_test(test_links),
		cmocka_unit_test(test_builder),
		cmocka_unit_test(test_builder_links),
		cmocka_unit_test(test_builder_subtree),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("tree", tests, NULL, NULL);
}
