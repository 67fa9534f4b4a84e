/*
 * test_store.c — key-to-filename encoding and the store over a temporary root: hostile
 * keys stay inside, an upload commits through the commit thread, restart keeps the blocks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "err.h"
#include "hash.h"
#include "store.h"

static void
test_key_name(void **state)
{
	static const char *keys[] = { "../x", "/abs", "..", ".", "a/b", "" };
	char big[5000], n1[65], n2[65];
	size_t i, j;

	memset(big, 'k', sizeof(big));
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		store_key_name("u", keys[i], strlen(keys[i]), n1);
		assert_int_equal(strlen(n1), 64);
		for (j = 0; j < 64; j++)
			assert_non_null(strchr("0123456789abcdef", n1[j]));
	}
	store_key_name("u", big, sizeof(big), n1);
	assert_int_equal(strlen(n1), 64);
	/* Namespaces: same key, different users; user/key boundary is unambiguous. */
	store_key_name("alice", "k", 1, n1);
	store_key_name("bob", "k", 1, n2);
	assert_string_not_equal(n1, n2);
	store_key_name("ab", "c", 1, n1);
	store_key_name("a", "bc", 2, n2);
	assert_string_not_equal(n1, n2);
}

static void
test_key_valid(void **state)
{
	char big[STORE_MAX_KEY + 1];

	memset(big, 'x', sizeof(big));
	assert_true(store_key_valid("../x", 4));
	assert_true(store_key_valid(big, 4096));
	assert_true(store_key_valid(big, STORE_MAX_KEY));
	assert_false(store_key_valid(big, STORE_MAX_KEY + 1));
	assert_false(store_key_valid("", 0));
	assert_false(store_key_valid("a\0b", 3));
}

struct wait {
	struct store_waiter w;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done, err;
	char md5[33];
};

static void
wait_done(struct store_waiter *sw, int err, const char *md5hex)
{
	struct wait *w = (struct wait *)sw;

	pthread_mutex_lock(&w->mu);
	w->done = 1;
	w->err = err;
	if (md5hex != NULL)
		snprintf(w->md5, sizeof(w->md5), "%s", md5hex);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void
wait_init(struct wait *w)
{
	memset(w, 0, sizeof(*w));
	w->w.done = wait_done;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
}

static void
wait_for_done(struct wait *w)
{
	pthread_mutex_lock(&w->mu);
	while (!w->done)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

static struct store *
open_store(const char *root)
{
	struct store_opts o = { root, 4, 1 << 20, 3600, NULL };
	struct store *s = NULL;
	char err[256];

	assert_int_equal(store_open(&o, &s, err, sizeof(err)), 0);
	return s;
}

static void
test_upload_commit_restart(void **state)
{
	char tmpl[] = "/tmp/test_store.XXXXXX", want[33], cmd[128];
	const char *root = mkdtemp(tmpl);
	const uint8_t data[] = "0123456789"; /* 10 bytes, blocks of 4: 3 blocks */
	struct store_upload *u = NULL;
	struct store_plan plan;
	struct store_obj o;
	struct store *s;
	struct wait w;
	uint8_t back[10];

	assert_non_null(root);
	s = open_store(root);
	assert_int_equal(store_file_save(s, "u", "k", 1, 10, &plan, NULL), 0);
	assert_int_equal(plan.total_block, 3);
	free(plan.ranges);
	assert_int_equal(store_upload_get(s, "u", "k", 1, &u), 0);
	wait_init(&w);
	assert_int_equal(store_upload_write(s, u, 2, data + 8, 2, &w.w), 0);
	assert_int_equal(store_upload_write(s, u, 0, data, 4, &w.w), 0);
	store_upload_put(s, u);
	assert_int_equal(store_object_get(s, "u", "k", 1, &o), STEP_EBUSY);
	store_free(s);

	/* Restart: blocks 0 and 2 are kept. */
	s = open_store(root);
	assert_int_equal(store_file_save(s, "u", "k", 1, 10, &plan, NULL), 0);
	assert_int_equal(plan.nranges, 2);
	assert_int_equal(plan.ranges[0][0], 0);
	assert_int_equal(plan.ranges[1][0], 2);
	free(plan.ranges);
	assert_int_equal(store_upload_get(s, "u", "k", 1, &u), 0);
	assert_int_equal(store_upload_write(s, u, 1, data + 4, 4, &w.w), STORE_PENDING);
	store_upload_put(s, u);
	wait_for_done(&w);
	assert_int_equal(w.err, 0);
	hash_md5_hex(data, 10, want);
	assert_string_equal(w.md5, want);
	assert_int_equal(store_object_get(s, "u", "k", 1, &o), 0);
	assert_int_equal(o.size, 10);
	assert_string_equal(o.md5, want);
	assert_int_equal(store_object_read(s, &o, 0, back, 10), 0);
	assert_memory_equal(back, data, 10);
	assert_int_equal(store_upload_get(s, "u", "k", 1, &u), STEP_EEXIST);
	assert_int_equal(store_object_get(s, "other", "k", 1, &o), STEP_ENOENT);
	store_free(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* A one-block object small enough to live in SQLite: no file anywhere under the root, read
 * back at an offset after a restart, gone (with its bytes) after a delete; a SAVE whose block
 * never came is forgotten by a restart. */
static void
test_inline_object(void **state)
{
	char tmpl[] = "/tmp/test_store.XXXXXX", want[33], cmd[256];
	const char *root = mkdtemp(tmpl);
	struct store_opts opts = { root, 65536, 1 << 20, 3600, NULL };
	uint8_t data[3000], back[3000];
	struct store_upload *u = NULL;
	struct store_plan plan;
	struct store_obj o;
	struct store *s = NULL;
	struct wait w;
	char err[256];
	size_t i;

	assert_non_null(root);
	for (i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	assert_int_equal(store_open(&opts, &s, err, sizeof(err)), 0);
	assert_int_equal(store_file_save(s, "u", "small", 5, sizeof(data), &plan, NULL), 0);
	assert_int_equal(plan.total_block, 1);
	assert_int_equal(store_file_save(s, "u", "never", 5, 10, &plan, NULL), 0);
	assert_int_equal(store_upload_get(s, "u", "small", 5, &u), 0);
	wait_init(&w);
	assert_int_equal(store_upload_write(s, u, 0, data, sizeof(data), &w.w), STORE_PENDING);
	store_upload_put(s, u);
	wait_for_done(&w);
	assert_int_equal(w.err, 0);
	hash_md5_hex(data, sizeof(data), want);
	assert_string_equal(w.md5, want);
	store_free(s);
	/* Nothing but directories in obj/ and tmp/. */
	snprintf(cmd, sizeof(cmd), "test -z \"$(find '%s/obj' '%s/tmp' -type f)\"", root, root);
	assert_int_equal(system(cmd), 0);

	assert_int_equal(store_open(&opts, &s, err, sizeof(err)), 0);
	assert_int_equal(store_upload_get(s, "u", "never", 5, &u), STEP_ENOENT);
	assert_int_equal(store_object_get(s, "u", "small", 5, &o), 0);
	assert_int_equal(o.size, sizeof(data));
	assert_string_equal(o.md5, want);
	assert_int_equal(store_object_read(s, &o, 1000, back, 2000), 0);
	assert_memory_equal(back, data + 1000, 2000);
	wait_init(&w);
	assert_int_equal(store_file_delete(s, "u", "small", 5, &w.w), STORE_PENDING);
	wait_for_done(&w);
	assert_int_equal(w.err, 0);
	assert_int_equal(store_object_get(s, "u", "small", 5, &o), STEP_ENOENT);
	store_free(s);
	snprintf(cmd, sizeof(cmd),
	    "test \"$(sqlite3 '%s/meta.db' 'SELECT count(*) FROM blobs' 2>&1)\" = 0", root);
	assert_int_equal(system(cmd), 0);
	/* Its bytes were in a pack, and the delete punched them out. */
	snprintf(cmd, sizeof(cmd), "test $(du -k '%s/pack' | cut -f1) -lt 12", root);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

#define NPUT 64

/* PUTMANY's store side: 64 objects of 16 KiB in one call land in a pack; a key twice in one
 * call, a key with an upload in progress, an existing key and sizes out of range are each
 * refused on their own; everything reads back after a restart; deleting every object gives
 * the pack's space back to the filesystem. */
static void
test_put_many(void **state)
{
	char tmpl[] = "/tmp/test_store.XXXXXX", cmd[256], err[256];
	const char *root = mkdtemp(tmpl);
	struct store_opts opts = { root, 65536, 1 << 20, 3600, NULL };
	static uint8_t data[NPUT][STORE_INLINE_MAX];
	struct store_put_item it[NPUT + 4];
	static struct wait w[NPUT + 4];
	char keys[NPUT + 4][16];
	uint8_t back[STORE_INLINE_MAX];
	struct store_plan plan;
	struct store_obj o;
	struct store *s = NULL;
	size_t i, j;

	assert_non_null(root);
	for (i = 0; i < NPUT; i++)
		for (j = 0; j < STORE_INLINE_MAX; j++)
			data[i][j] = (uint8_t)(i * 31 + j * 7 + (j >> 8));
	assert_int_equal(store_open(&opts, &s, err, sizeof(err)), 0);
	assert_int_equal(store_file_save(s, "u", "busy", 4, 100, &plan, NULL), 0);
	memset(it, 0, sizeof(it));
	for (i = 0; i < NPUT + 4; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
		it[i].key = keys[i];
		it[i].keylen = strlen(keys[i]);
		it[i].data = data[i % NPUT];
		it[i].len = STORE_INLINE_MAX;
		hash_md5_hex(it[i].data, it[i].len, it[i].md5);
		wait_init(&w[i]);
		it[i].w = &w[i].w;
	}
	it[NPUT].key = "k0"; /* the same key again in the same call */
	it[NPUT].keylen = 2;
	it[NPUT + 1].key = "busy";
	it[NPUT + 1].keylen = 4;
	it[NPUT + 2].len = 0;
	it[NPUT + 3].len = STORE_INLINE_MAX + 1;
	store_put_many(s, "u", it, NPUT + 4);
	for (i = 0; i < NPUT; i++) {
		assert_int_equal(it[i].status, STORE_PENDING);
		wait_for_done(&w[i]);
		assert_int_equal(w[i].err, 0);
		assert_string_equal(w[i].md5, it[i].md5);
	}
	assert_int_equal(it[NPUT].status, STEP_EEXIST);
	assert_int_equal(it[NPUT + 1].status, STEP_EBUSY);
	assert_int_equal(it[NPUT + 2].status, STEP_ETOOBIG);
	assert_int_equal(it[NPUT + 3].status, STEP_ETOOBIG);
	/* Committed: the key exists now. */
	it[0].w = &w[NPUT].w;
	store_put_many(s, "u", it, 1);
	assert_int_equal(it[0].status, STEP_EEXIST);
	store_free(s);

	assert_int_equal(store_open(&opts, &s, err, sizeof(err)), 0);
	for (i = 0; i < NPUT; i++) {
		assert_int_equal(store_object_get(s, "u", keys[i], strlen(keys[i]), &o), 0);
		assert_int_equal(o.size, STORE_INLINE_MAX);
		assert_string_equal(o.md5, it[i].md5);
		assert_int_equal(store_object_read(s, &o, 100, back, STORE_INLINE_MAX - 100), 0);
		assert_memory_equal(back, data[i] + 100, STORE_INLINE_MAX - 100);
	}
	assert_int_not_equal(store_object_read(s, &o, 1, back, STORE_INLINE_MAX), 0);
	snprintf(cmd, sizeof(cmd), "test $(du -k '%s/pack' | cut -f1) -ge 1024", root);
	assert_int_equal(system(cmd), 0);
	for (i = 0; i < NPUT; i++) {
		wait_init(&w[i]);
		assert_int_equal(
		    store_file_delete(s, "u", keys[i], strlen(keys[i]), &w[i].w), STORE_PENDING);
	}
	for (i = 0; i < NPUT; i++) {
		wait_for_done(&w[i]);
		assert_int_equal(w[i].err, 0);
	}
	assert_int_equal(store_object_get(s, "u", "k1", 2, &o), STEP_ENOENT);
	store_free(s);
	snprintf(cmd, sizeof(cmd), "test $(du -k '%s/pack' | cut -f1) -lt 64", root);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* Packs roll over: with STEP_PACK_MAX at 40 KiB, 64 objects of 16 KiB sent in batches of
 * 8 spread over many pack files; every object reads back after a restart (which appends to
 * the newest pack), and an object stored after the restart is readable too. */
static void
test_pack_rollover(void **state)
{
	char tmpl[] = "/tmp/test_store.XXXXXX", cmd[256], err[256], key[16];
	const char *root = mkdtemp(tmpl);
	struct store_opts opts = { root, 65536, 1 << 20, 3600, NULL };
	static uint8_t data[NPUT][STORE_INLINE_MAX];
	uint8_t back[STORE_INLINE_MAX];
	struct store_put_item it[8];
	static struct wait w[8];
	char keys[8][16];
	struct store_obj o;
	struct store *s = NULL;
	size_t i, j, b;

	assert_non_null(root);
	setenv("STEP_PACK_MAX", "40960", 1);
	for (i = 0; i < NPUT; i++)
		for (j = 0; j < STORE_INLINE_MAX; j++)
			data[i][j] = (uint8_t)(i * 13 + j * 3 + (j >> 9));
	assert_int_equal(store_open(&opts, &s, err, sizeof(err)), 0);
	for (b = 0; b < NPUT / 8; b++) {
		memset(it, 0, sizeof(it));
		for (i = 0; i < 8; i++) {
			snprintf(keys[i], sizeof(keys[i]), "r%zu", b * 8 + i);
			it[i].key = keys[i];
			it[i].keylen = strlen(keys[i]);
			it[i].data = data[b * 8 + i];
			it[i].len = STORE_INLINE_MAX - i; /* sizes that leave packs unaligned */
			hash_md5_hex(it[i].data, it[i].len, it[i].md5);
			wait_init(&w[i]);
			it[i].w = &w[i].w;
		}
		store_put_many(s, "u", it, 8);
		for (i = 0; i < 8; i++) {
			assert_int_equal(it[i].status, STORE_PENDING);
			wait_for_done(&w[i]);
			assert_int_equal(w[i].err, 0);
		}
	}
	store_free(s);
	snprintf(cmd, sizeof(cmd), "test $(ls '%s/pack' | wc -l) -ge 8", root);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(store_open(&opts, &s, err, sizeof(err)), 0);
	memset(it, 0, sizeof(it));
	it[0].key = "after";
	it[0].keylen = 5;
	it[0].data = data[0];
	it[0].len = 100;
	hash_md5_hex(data[0], 100, it[0].md5);
	wait_init(&w[0]);
	it[0].w = &w[0].w;
	store_put_many(s, "u", it, 1);
	assert_int_equal(it[0].status, STORE_PENDING);
	wait_for_done(&w[0]);
	assert_int_equal(w[0].err, 0);
	for (i = 0; i < NPUT; i++) {
		size_t len = STORE_INLINE_MAX - i % 8;

		snprintf(key, sizeof(key), "r%zu", i);
		assert_int_equal(store_object_get(s, "u", key, strlen(key), &o), 0);
		assert_int_equal(o.size, len);
		assert_int_equal(store_object_read(s, &o, 0, back, len), 0);
		assert_memory_equal(back, data[i], len);
	}
	assert_int_equal(store_object_get(s, "u", "after", 5, &o), 0);
	assert_int_equal(store_object_read(s, &o, 0, back, 100), 0);
	assert_memory_equal(back, data[0], 100);
	store_free(s);
	unsetenv("STEP_PACK_MAX");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* objgen: a stable store_id, obj_gen moved by removing a complete object only; the cap on
 * uploads in progress per user; save_md5's claim rules (423 for other content, the same
 * content resumes, the own upload_id starts over, a mismatching commit is refused). */
static void
test_objgen_cap_claim(void **state)
{
	char tmpl[] = "/tmp/test_store.XXXXXX", cmd[128], id[33], m1[33], m2[33], uid[17];
	const char *root = mkdtemp(tmpl);
	const uint8_t one[] = "0123456789", two[] = "abcdefghij";
	struct store_upload *u = NULL;
	struct store_plan plan;
	struct store *s;
	struct wait w;
	int64_t gen = -1;

	assert_non_null(root);
	hash_md5_hex(one, 10, m1);
	hash_md5_hex(two, 10, m2);
	s = open_store(root);
	snprintf(id, sizeof(id), "%s", store_id(s));
	assert_int_equal(strlen(id), 32);
	assert_int_equal(store_obj_gen(s, "u", &gen), 0);
	assert_int_equal(gen, 0);
	/* Claims. */
	assert_int_equal(store_file_save_ex(s, "u", "k", 1, 10, 0, NULL, m1, &plan, NULL), 0);
	memcpy(uid, plan.upload_id, sizeof(uid));
	free(plan.ranges);
	assert_int_equal(
	    store_file_save_ex(s, "u", "k", 1, 10, 0, NULL, m2, &plan, NULL), STORE_LOCKED);
	assert_int_equal(store_file_save_ex(s, "u", "k", 1, 10, 0, NULL, m1, &plan, NULL), 0);
	assert_string_equal(plan.upload_id, uid);
	free(plan.ranges);
	assert_int_equal(store_file_save_ex(s, "u", "k", 1, 10, 0, uid, m2, &plan, NULL), 0);
	assert_string_not_equal(plan.upload_id, uid);
	free(plan.ranges);
	/* Declared m2, sent one: refused at the commit, nothing visible. */
	assert_int_equal(store_upload_get(s, "u", "k", 1, &u), 0);
	wait_init(&w);
	assert_int_equal(store_upload_write(s, u, 0, one, 4, &w.w), 0);
	assert_int_equal(store_upload_write(s, u, 1, one + 4, 4, &w.w), 0);
	assert_int_equal(store_upload_write(s, u, 2, one + 8, 2, &w.w), STORE_PENDING);
	store_upload_put(s, u);
	wait_for_done(&w);
	assert_int_equal(w.err, STEP_EMISMATCH);
	assert_int_equal(store_upload_get(s, "u", "k", 1, &u), STEP_ENOENT);
	/* The cap: 2 uploads in progress per user. */
	store_set_max_uploads(s, 2);
	assert_int_equal(store_file_save(s, "u", "a", 1, 10, &plan, NULL), 0);
	free(plan.ranges);
	assert_int_equal(store_file_save(s, "u", "b", 1, 10, &plan, NULL), 0);
	free(plan.ranges);
	assert_int_equal(store_file_save(s, "u", "c", 1, 10, &plan, NULL), STEP_EBUSY);
	assert_int_equal(store_file_save(s, "v", "c", 1, 10, &plan, NULL), 0);
	free(plan.ranges);
	assert_int_equal(store_file_delete(s, "u", "a", 1, NULL), STORE_TMP_DELETED);
	assert_int_equal(store_file_save(s, "u", "c", 1, 10, &plan, NULL), 0);
	free(plan.ranges);
	/* A complete object, then its removal: obj_gen 1; the drop above did not count. */
	assert_int_equal(store_upload_get(s, "u", "b", 1, &u), 0);
	wait_init(&w);
	assert_int_equal(store_upload_write(s, u, 0, two, 4, &w.w), 0);
	assert_int_equal(store_upload_write(s, u, 1, two + 4, 4, &w.w), 0);
	assert_int_equal(store_upload_write(s, u, 2, two + 8, 2, &w.w), STORE_PENDING);
	store_upload_put(s, u);
	wait_for_done(&w);
	assert_int_equal(w.err, 0);
	assert_int_equal(store_obj_gen(s, "u", &gen), 0);
	assert_int_equal(gen, 0);
	wait_init(&w);
	assert_int_equal(store_file_delete(s, "u", "b", 1, &w.w), STORE_PENDING);
	wait_for_done(&w);
	assert_int_equal(w.err, 0);
	assert_int_equal(store_obj_gen(s, "u", &gen), 0);
	assert_int_equal(gen, 1);
	assert_int_equal(store_obj_gen(s, "v", &gen), 0);
	assert_int_equal(gen, 0);
	store_free(s);
	/* Both kept by a restart. */
	s = open_store(root);
	assert_string_equal(store_id(s), id);
	assert_int_equal(store_obj_gen(s, "u", &gen), 0);
	assert_int_equal(gen, 1);
	store_free(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* Uploads all of data (blocks of 4 bytes) to u; the commit's error. */
static int
upload_all(struct store *s, struct store_upload *u, const uint8_t *data, size_t len)
{
	struct wait w;
	size_t off;
	int r = 0;

	wait_init(&w);
	for (off = 0; off < len && r == 0; off += 4)
		r = store_upload_write(
		    s, u, off / 4, data + off, len - off < 4 ? len - off : 4, &w.w);
	store_upload_put(s, u);
	if (r != STORE_PENDING)
		return r;
	wait_for_done(&w);
	return w.err;
}

/* The replace extension: the old object is read until the new one commits; a failed
 * replace leaves it; without the flag the key exists. */
static void
test_replace(void **state)
{
	char tmpl[] = "/tmp/test_store.XXXXXX", cmd[128], m1[33], m2[33], bad[33];
	const char *root = mkdtemp(tmpl);
	const uint8_t one[] = "0123456789", two[] = "abcdefghij";
	struct store_upload *u = NULL;
	struct store_plan plan;
	struct store_obj o;
	struct store *s;
	uint8_t buf[10];
	int64_t gen = -1;

	assert_non_null(root);
	hash_md5_hex(one, 10, m1);
	hash_md5_hex(two, 10, m2);
	hash_md5_hex(two, 9, bad);
	s = open_store(root);
	assert_int_equal(store_file_save(s, "u", "k", 1, 10, &plan, NULL), 0);
	free(plan.ranges);
	assert_int_equal(store_upload_get(s, "u", "k", 1, &u), 0);
	assert_int_equal(upload_all(s, u, one, 10), 0);
	assert_int_equal(store_file_save(s, "u", "k", 1, 10, &plan, NULL), STEP_EEXIST);
	assert_int_equal(store_file_save_rep(s, "u", "k", 1, 10, 0, NULL, NULL, 1, &plan, NULL), 0);
	free(plan.ranges);
	/* Half of it: the old object is what GET and DOWNLOAD read. */
	assert_int_equal(store_upload_get(s, "u", "k", 1, &u), 0);
	assert_int_equal(store_upload_write(s, u, 0, two, 4, NULL), 0);
	store_upload_put(s, u);
	assert_int_equal(store_object_get(s, "u", "k", 1, &o), 0);
	assert_string_equal(o.md5, m1);
	assert_int_equal(store_object_read(s, &o, 0, buf, 10), 0);
	assert_memory_equal(buf, one, 10);
	assert_int_equal(store_file_save(s, "u", "k", 1, 10, &plan, NULL), STEP_EEXIST);
	/* The rest: the key is the new object, obj_gen moved. */
	assert_int_equal(store_upload_get(s, "u", "k", 1, &u), 0);
	assert_int_equal(upload_all(s, u, two, 10), 0);
	assert_int_equal(store_object_get(s, "u", "k", 1, &o), 0);
	assert_string_equal(o.md5, m2);
	assert_int_equal(store_object_read(s, &o, 0, buf, 10), 0);
	assert_memory_equal(buf, two, 10);
	assert_int_equal(store_obj_gen(s, "u", &gen), 0);
	assert_int_equal(gen, 1);
	/* A replace whose commit fails (declared md5 not matching): the object stays. */
	assert_int_equal(store_file_save_rep(s, "u", "k", 1, 10, 0, NULL, bad, 1, &plan, NULL), 0);
	free(plan.ranges);
	assert_int_equal(store_upload_get(s, "u", "k", 1, &u), 0);
	assert_int_equal(upload_all(s, u, one, 10), STEP_EMISMATCH);
	assert_int_equal(store_object_get(s, "u", "k", 1, &o), 0);
	assert_string_equal(o.md5, m2);
	store_free(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* count_parts ROOT — temp objects (".part") under ROOT/tmp. */
static int
count_parts(const char *root)
{
	char cmd[256];
	FILE *f;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "find '%s/tmp' -name '*.part' | wc -l", root);
	assert_non_null(f = popen(cmd, "r"));
	assert_int_equal(fscanf(f, "%d", &n), 1);
	pclose(f);
	return n;
}

#define BIG (8u << 20)

/* One-block objects of up to 8 MiB are inline (no temp file, appended to a pack at their
 * commit) while the open ones hold at most 256 MiB: the 33rd open SAVE of 8 MiB gets a temp
 * file; a committed one gives its share back. Both kinds commit with the right MD5 (the
 * commit thread hashes them) and read back. */
static void
test_big_inline_budget(void **state)
{
	char tmpl[] = "/tmp/test_store.XXXXXX", want[33], key[16], cmd[128];
	const char *root = mkdtemp(tmpl);
	struct store_opts opts = { root, BIG, 1ull << 30, 3600, NULL };
	uint8_t *data = malloc(BIG), back[4096];
	struct store_upload *u = NULL;
	struct store_plan plan;
	struct store_obj o;
	struct store *s = NULL;
	struct wait w;
	char err[256];
	int i;

	assert_non_null(root);
	assert_non_null(data);
	for (i = 0; i < (int)BIG; i++)
		data[i] = (uint8_t)(i * 13 + (i >> 12));
	hash_md5_hex(data, BIG, want);
	assert_int_equal(store_open(&opts, &s, err, sizeof(err)), 0);
	for (i = 0; i < 33; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		assert_int_equal(store_file_save(s, "u", key, 3, BIG, &plan, NULL), 0);
		assert_int_equal(plan.total_block, 1);
		free(plan.ranges);
	}
	assert_int_equal(count_parts(root), 1);
	/* k00 (inline) and k32 (a temp file) commit with the MD5 of their bytes. */
	for (i = 0; i <= 32; i += 32) {
		snprintf(key, sizeof(key), "k%02d", i);
		assert_int_equal(store_upload_get(s, "u", key, 3, &u), 0);
		wait_init(&w);
		assert_int_equal(store_upload_write(s, u, 0, data, BIG, &w.w), STORE_PENDING);
		store_upload_put(s, u);
		wait_for_done(&w);
		assert_int_equal(w.err, 0);
		assert_string_equal(w.md5, want);
		assert_int_equal(store_object_get(s, "u", key, 3, &o), 0);
		assert_int_equal(
		    store_object_read(s, &o, BIG - sizeof(back), back, sizeof(back)), 0);
		assert_memory_equal(back, data + BIG - sizeof(back), sizeof(back));
	}
	store_sync(s); /* the committed uploads are freed */
	assert_int_equal(count_parts(root), 0);
	/* k00's share is back: one more open SAVE of 8 MiB is inline, the next is not. */
	assert_int_equal(store_file_save(s, "u", "k33", 3, BIG, &plan, NULL), 0);
	free(plan.ranges);
	assert_int_equal(count_parts(root), 0);
	assert_int_equal(store_file_save(s, "u", "k34", 3, BIG, &plan, NULL), 0);
	free(plan.ranges);
	assert_int_equal(count_parts(root), 1);
	store_free(s);
	free(data);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_name),
		cmocka_unit_test(test_key_valid),
		cmocka_unit_test(test_upload_commit_restart),
		cmocka_unit_test(test_inline_object),
		cmocka_unit_test(test_put_many),
		cmocka_unit_test(test_pack_rollover),
		cmocka_unit_test(test_objgen_cap_claim),
		cmocka_unit_test(test_replace),
		cmocka_unit_test(test_big_inline_budget),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
