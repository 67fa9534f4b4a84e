/* test_restore.c — the format-2 restore engine against a real stepd on 127.0.0.1: trees and
 * chunks built by hand and uploaded with client_put_mem(), then restored and compared;
 * hostile cases (bytes that do not hash to their id, a tree naming an ancestor, a symlink
 * planted in the target, a missing or wrong chunk, setuid bits) and many small files.
 * STEPD=path picks the server binary (default: stepd next to this test's directory);
 * STEPD_ARGS adds options (e.g. "--block-size 20480"); REF_SERVER=tests/peers/ref_server.py
 * runs against the reference server's replica instead. NO_FLUSH=1 (no syncfs) and NCONN=n
 * are for timing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "client.h"
#include "err.h"
#include "fetch.h"
#include "hash.h"
#include "manifest.h"
#include "restore.h"
#include "tree.h"

static char stepd_path[PATH_MAX];
static char tmpdir[PATH_MAX];
static pid_t stepd_pid = -1;
static int stepd_port;
static struct client_opts copts;
static char pass_md5[HASH_MD5_HEX];
static struct client *cl;
static char errors[16384]; /* every error sentence of the last restore */
static int nerrors;

/* ---- a server ---- */

static void
wait_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int
start_stepd(const char *extra)
{
	char root[PATH_MAX + 16], portf[PATH_MAX + 16], buf[32];
	char *argv[32], *copy = NULL, *save = NULL;
	int argc = 0;
	FILE *f;

	snprintf(root, sizeof(root), "%s/root", tmpdir);
	snprintf(portf, sizeof(portf), "%s/port", tmpdir);
	unlink(portf);
	if (getenv("REF_SERVER") != NULL) {
		argv[argc++] = "python3";
		argv[argc++] = getenv("REF_SERVER");
	} else {
		argv[argc++] = stepd_path;
		argv[argc++] = "--bind";
		argv[argc++] = "127.0.0.1";
		argv[argc++] = "--auth";
		argv[argc++] = "open";
		argv[argc++] = "--threads";
		argv[argc++] = "2";
		argv[argc++] = "--init"; /* a missing root is an error without it */
	}
	argv[argc++] = "--port";
	argv[argc++] = "0";
	argv[argc++] = "--port-file";
	argv[argc++] = portf;
	argv[argc++] = "--root";
	argv[argc++] = root;
	if (extra != NULL && (copy = strdup(extra)) != NULL)
		for (char *t = strtok_r(copy, " ", &save); t != NULL && argc < 30;
		     t = strtok_r(NULL, " ", &save))
			argv[argc++] = t;
	argv[argc] = NULL;
	if ((stepd_pid = fork()) == 0) {
		int null = open("/dev/null", O_WRONLY);

		prctl(PR_SET_PDEATHSIG, SIGTERM); /* a killed test leaves no server behind */
		dup2(null, 1);
		dup2(null, 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	free(copy);
	/* bounded polling for the port file, as tests/lib.sh's wait_for */
	for (int i = 0; i < 1000; i++) {
		if ((f = fopen(portf, "r")) != NULL) {
			int ok = fgets(buf, sizeof(buf), f) != NULL;

			fclose(f);
			if (ok && (stepd_port = (int)strtol(buf, NULL, 10)) > 0)
				return 0;
		}
		if (waitpid(stepd_pid, NULL, WNOHANG) == stepd_pid)
			return -1;
		wait_ms(10);
	}
	return -1;
}

static void
rm_rf(const char *path)
{
	char cmd[3 * PATH_MAX];

	snprintf(cmd, sizeof(cmd), "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", path, path);
	if (system(cmd) != 0)
		fprintf(stderr, "# cannot remove %s\n", path);
}

static int
setup(void **state)
{
	char self[PATH_MAX], *env;
	ssize_t n;

	(void)state;
	if ((env = getenv("STEPD")) != NULL) {
		snprintf(stepd_path, sizeof(stepd_path), "%s", env);
	} else {
		if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0)
			return -1;
		self[n] = '\0';
		snprintf(stepd_path, sizeof(stepd_path), "%s/../stepd", dirname(self));
	}
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_restore.XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	if (start_stepd(getenv("STEPD_ARGS")) != 0) {
		fprintf(stderr, "# cannot start %s\n", stepd_path);
		return -1;
	}
	hash_md5_hex("alice", 5, pass_md5);
	memset(&copts, 0, sizeof(copts));
	copts.host = "127.0.0.1";
	copts.port = stepd_port;
	copts.user = "alice";
	copts.password_md5 = pass_md5;
	copts.timeout_ms = 10000;
	return client_new(&copts, &cl);
}

static int
teardown(void **state)
{
	(void)state;
	client_free(cl);
	if (stepd_pid > 0) {
		kill(stepd_pid, SIGTERM);
		waitpid(stepd_pid, NULL, 0);
	}
	rm_rf(tmpdir);
	return 0;
}

/* ---- objects ---- */

static void
put_as(const void *p, size_t n, const uint8_t id[HASH_SHA256_LEN])
{
	char key[FETCH_KEY_MAX];
	int r;

	manifest_object_key(id, key, sizeof(key));
	r = client_put_mem(cl, p, n, key, CLIENT_PUT_EXIST_OK, NULL);
	if (r != 0)
		fprintf(stderr, "# put %s: %s\n", key, client_error(cl));
	assert_int_equal(r, 0);
}

static void
put(const void *p, size_t n, uint8_t id[HASH_SHA256_LEN])
{
	hash_sha256(p, n, id);
	put_as(p, n, id);
}

/* Trees live under "t." keys. */
static void
put_as_tree(const void *p, size_t n, const uint8_t id[HASH_SHA256_LEN])
{
	char key[FETCH_KEY_MAX];

	manifest_tree_key(id, key, sizeof(key));
	assert_int_equal(client_put_mem(cl, p, n, key, CLIENT_PUT_EXIST_OK, NULL), 0);
}

static void
put_tree_bytes(const void *p, size_t n, uint8_t id[HASH_SHA256_LEN])
{
	hash_sha256(p, n, id);
	put_as_tree(p, n, id);
}

/* Encodes entries as a tree, uploads it, gives its id. */
static void
put_tree(struct tree_entry *e, size_t n, uint8_t id[HASH_SHA256_LEN])
{
	struct buf b;

	buf_init(&b, TREE_MAX_BYTES);
	assert_int_equal(tree_encode(e, n, &b), 0);
	put_tree_bytes(buf_ptr(&b), buf_avail(&b), id);
	buf_release(&b);
}

static struct tree_entry
ent(int type, const char *name, unsigned mode, int64_t mtime)
{
	struct tree_entry e;

	memset(&e, 0, sizeof(e));
	e.type = type;
	e.name = name;
	e.namelen = strlen(name);
	e.mode = mode;
	e.mtime_ns = mtime;
	e.uid = 1000;
	e.gid = 1000;
	return e;
}

static uint8_t *
bytes(size_t n, uint32_t seed)
{
	uint8_t *p = malloc(n ? n : 1);

	assert_non_null(p);
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
	return p;
}

/* ---- restoring ---- */

static void
on_error(void *arg, const char *msg)
{
	size_t len = strlen(errors);

	(void)arg;
	nerrors++;
	snprintf(errors + len, sizeof(errors) - len, "%s\n", msg);
}

static int overwrite; /* enum restore_overwrite of the next restore() */
static int owner;     /* restore_opts.owner of the next restore() */

static int
restore(const uint8_t root[HASH_SHA256_LEN], const char *to, const char *sub, int preserve,
    int nconn, struct restore_stats *st)
{
	struct restore_opts o;
	struct restore_stats s;

	memset(&o, 0, sizeof(o));
	o.client = &copts;
	o.nconn = nconn;
	o.target = to;
	o.preserve_special_bits = preserve;
	o.overwrite = overwrite;
	o.owner = owner;
	o.error = on_error;
	o.no_flush = getenv("NO_FLUSH") != NULL;
	if (getenv("NCONN") != NULL)
		o.nconn = (int)strtol(getenv("NCONN"), NULL, 10);
	errors[0] = '\0';
	nerrors = 0;
	return restore_tree(&o, root, sub, st != NULL ? st : &s);
}

static void
target(const char *name, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", tmpdir, name);
}

static void
assert_file(
    const char *dir, const char *rel, const uint8_t *want, size_t n, unsigned mode, int64_t mtime)
{
	char path[PATH_MAX * 2];
	struct stat st;
	uint8_t *got;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal((unsigned)(st.st_mode & 07777), mode);
	assert_int_equal((long long)st.st_size, (long long)n);
	assert_true((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == mtime);
	got = malloc(n + 1);
	assert_true((fd = open(path, O_RDONLY)) >= 0);
	assert_int_equal(read(fd, got, n + 1), (ssize_t)n);
	close(fd);
	if (n > 0 && want != NULL)
		assert_memory_equal(got, want, n);
	free(got);
}

/* No temporary file anywhere below dir. */
static int
no_temps(const char *dir)
{
	char cmd[2 * PATH_MAX];

	snprintf(cmd, sizeof(cmd), "test -z \"$(find '%s' -name '.stepsync-restore.*')\"", dir);
	return system(cmd) == 0;
}

static int
exists(const char *dir, const char *rel)
{
	char path[PATH_MAX * 2];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	return lstat(path, &st) == 0;
}

/* ---- a sample snapshot ---- */

#define T0 1700000000123456789LL

struct sample {
	uint8_t root[HASH_SHA256_LEN];
	uint8_t *big, *small, *top;
	size_t nbig, nsmall, ntop;
};

static struct sample S;

/*
 * /top          50000 bytes, one chunk (several blocks of a 20480-byte plan)
 * /suid         04755, one chunk
 * /pub/         01777 (sticky, world-writable)
 * /d/big        three chunks: 100000 + 70000 + 5 bytes, the last one shared with /d/small5
 * /d/small5     5 bytes (the same chunk as big's last)
 * /d/empty      0 bytes, mode 0600
 * /d/link ->    "small5"
 * /d/deep/x     the bytes of top again (one object for both)
 */
static void
make_sample(void)
{
	struct tree_entry deep[1], d[5], r[4];
	struct tree_chunk cb[3], cs, ct, cu;
	uint8_t deep_id[HASH_SHA256_LEN], d_id[HASH_SHA256_LEN], pub_id[HASH_SHA256_LEN];
	uint8_t *suid = bytes(777, 9);

	S.nbig = 170005;
	S.big = bytes(S.nbig, 1);
	S.nsmall = 5;
	S.small = S.big + 170000;
	S.ntop = 50000;
	S.top = bytes(S.ntop, 2);
	put(S.big, 100000, cb[0].id);
	cb[0].size = 100000;
	put(S.big + 100000, 70000, cb[1].id);
	cb[1].size = 70000;
	put(S.big + 170000, 5, cb[2].id);
	cb[2].size = 5;
	cs = cb[2];
	put(S.top, S.ntop, ct.id);
	ct.size = S.ntop;
	put(suid, 777, cu.id);
	cu.size = 777;
	free(suid);

	deep[0] = ent(TREE_FILE, "x", 0640, T0 + 1);
	deep[0].chunks = &ct, deep[0].nchunks = 1, deep[0].size = S.ntop;
	put_tree(deep, 1, deep_id);
	d[0] = ent(TREE_FILE, "big", 0644, T0 + 2);
	d[0].chunks = cb, d[0].nchunks = 3, d[0].size = S.nbig;
	d[1] = ent(TREE_FILE, "small5", 0600, -1000000000LL); /* before 1970 */
	d[1].chunks = &cs, d[1].nchunks = 1, d[1].size = 5;
	d[2] = ent(TREE_FILE, "empty", 0600, T0 + 3);
	d[3] = ent(TREE_SYMLINK, "link", 0777, T0 + 4);
	d[3].target = "small5", d[3].targetlen = 6;
	d[4] = ent(TREE_DIR, "deep", 0750, T0 + 5);
	memcpy(d[4].subtree, deep_id, HASH_SHA256_LEN);
	put_tree(d, 5, d_id);
	put_tree(NULL, 0, pub_id);
	r[0] = ent(TREE_FILE, "top", 0644, T0 + 6);
	r[0].chunks = &ct, r[0].nchunks = 1, r[0].size = S.ntop;
	r[1] = ent(TREE_FILE, "suid", 04755, T0 + 7);
	r[1].chunks = &cu, r[1].nchunks = 1, r[1].size = 777;
	r[2] = ent(TREE_DIR, "pub", 01777, T0 + 8);
	memcpy(r[2].subtree, pub_id, HASH_SHA256_LEN);
	r[3] = ent(TREE_DIR, "d", 0755, T0 + 9);
	memcpy(r[3].subtree, d_id, HASH_SHA256_LEN);
	put_tree(r, 4, S.root);
}

static void
check_sample(const char *to, int preserve)
{
	char path[PATH_MAX * 2], link[64];
	struct stat st;
	ssize_t n;

	assert_file(to, "top", S.top, S.ntop, 0644, T0 + 6);
	assert_file(to, "suid", NULL, 777, preserve ? 04755 : 0755, T0 + 7);
	assert_file(to, "d/big", S.big, S.nbig, 0644, T0 + 2);
	assert_file(to, "d/small5", S.small, 5, 0600, -1000000000LL);
	assert_file(to, "d/empty", NULL, 0, 0600, T0 + 3);
	assert_file(to, "d/deep/x", S.top, S.ntop, 0640, T0 + 1);
	snprintf(path, sizeof(path), "%s/d/link", to);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_true((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == T0 + 4);
	n = readlink(path, link, sizeof(link));
	assert_int_equal(n, 6);
	assert_memory_equal(link, "small5", 6);
	snprintf(path, sizeof(path), "%s/pub", to);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, preserve ? 01777 : 0775);
	assert_true((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == T0 + 8);
	snprintf(path, sizeof(path), "%s/d/deep", to);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0750);
	/* a directory's time is set after everything in it was written */
	assert_true((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == T0 + 5);
	snprintf(path, sizeof(path), "%s/d", to);
	assert_int_equal(stat(path, &st), 0);
	assert_true((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == T0 + 9);
	assert_true(no_temps(to));
}

static void
test_sample(void **state)
{
	char to[PATH_MAX + 16];
	struct restore_stats st;

	(void)state;
	make_sample();
	target("t1", to, sizeof(to));
	assert_int_equal(restore(S.root, to, NULL, 0, 3, &st), 0);
	assert_int_equal(nerrors, 0);
	check_sample(to, 0);
	assert_int_equal(st.files, 6);
	assert_int_equal(st.symlinks, 1);
	assert_int_equal(st.dirs, 3);
	assert_int_equal(st.trees, 4);
	assert_int_equal(st.failed, 0);
	assert_int_equal(st.bytes, S.ntop * 2 + 777 + S.nbig + 5);

	/* again into the same place: files replaced, directories merged */
	assert_int_equal(restore(S.root, to, NULL, 0, 1, &st), 0);
	check_sample(to, 0);

	/* special bits kept when asked */
	target("t2", to, sizeof(to));
	assert_int_equal(restore(S.root, to, NULL, 1, 2, NULL), 0);
	check_sample(to, 1);
}

/*
 * Hard links, sparse files and owners: /a/one, /b/two and /b/three of link group 7 come
 * back as one inode, /b/diff (group 7 too, but other chunks: the file changed between its
 * names during the backup) stays a copy, /b/solo (group 9, alone) a plain file; /b keeps
 * its time although links were made in it; /sparse (a hole of 600000 bytes inside, 400000
 * at its end) is restored with holes; as root, every owner (uid 1234, gid 5678) is set.
 */
static void
test_links_sparse_owner(void **state)
{
	struct tree_entry a[1], b[4], r[3];
	struct tree_chunk cx, cy, cs[2];
	uint8_t a_id[HASH_SHA256_LEN], b_id[HASH_SHA256_LEN], root[HASH_SHA256_LEN];
	uint8_t *x = bytes(30000, 5), *y = bytes(30000, 6), *sp = calloc(1, 1150000);
	char to[PATH_MAX + 16], path[PATH_MAX * 2];
	struct stat one, two, three, diff, sst, bst;
	struct restore_stats st;
	int rc;

	(void)state;
	assert_non_null(sp);
	memcpy(sp, x, 30000);
	memcpy(sp + 630000 + 20000, y, 30000); /* data, 620000 zeros, data, 400000 zeros */
	put(x, 30000, cx.id);
	cx.size = 30000;
	put(y, 30000, cy.id);
	cy.size = 30000;
	put(sp, 750000, cs[0].id);
	cs[0].size = 750000;
	put(sp + 750000, 400000, cs[1].id);
	cs[1].size = 400000;
	a[0] = ent(TREE_FILE, "one", 0644, T0 + 1);
	a[0].chunks = &cx, a[0].nchunks = 1, a[0].size = 30000, a[0].link = 7;
	put_tree(a, 1, a_id);
	b[0] = ent(TREE_FILE, "two", 0644, T0 + 1);
	b[0].chunks = &cx, b[0].nchunks = 1, b[0].size = 30000, b[0].link = 7;
	b[1] = ent(TREE_FILE, "three", 0644, T0 + 1);
	b[1].chunks = &cx, b[1].nchunks = 1, b[1].size = 30000, b[1].link = 7;
	b[2] = ent(TREE_FILE, "diff", 0644, T0 + 2);
	b[2].chunks = &cy, b[2].nchunks = 1, b[2].size = 30000, b[2].link = 7;
	b[3] = ent(TREE_FILE, "solo", 0644, T0 + 3);
	b[3].chunks = &cy, b[3].nchunks = 1, b[3].size = 30000, b[3].link = 9;
	put_tree(b, 4, b_id);
	r[0] = ent(TREE_DIR, "a", 0755, T0 + 4);
	memcpy(r[0].subtree, a_id, HASH_SHA256_LEN);
	r[1] = ent(TREE_DIR, "b", 0755, T0 + 5);
	memcpy(r[1].subtree, b_id, HASH_SHA256_LEN);
	r[2] = ent(TREE_FILE, "sparse", 0600, T0 + 6);
	r[2].chunks = cs, r[2].nchunks = 2, r[2].size = 1150000;
	for (int i = 0; i < 3; i++)
		r[i].uid = 1234, r[i].gid = 5678;
	put_tree(r, 3, root);

	owner = geteuid() == 0;
	target("links", to, sizeof(to));
	rc = restore(root, to, NULL, 0, 3, &st);
	if (rc != 0)
		fprintf(stderr, "# restore: %d: %s\n", rc, errors);
	assert_int_equal(rc, 0);
	owner = 0;
	assert_int_equal(nerrors, 0);
	assert_int_equal(st.hardlinks, 2);
	assert_file(to, "a/one", x, 30000, 0644, T0 + 1);
	assert_file(to, "b/two", x, 30000, 0644, T0 + 1);
	assert_file(to, "b/diff", y, 30000, 0644, T0 + 2);
	assert_file(to, "b/solo", y, 30000, 0644, T0 + 3);
	assert_file(to, "sparse", sp, 1150000, 0600, T0 + 6);
	snprintf(path, sizeof(path), "%s/a/one", to);
	assert_int_equal(stat(path, &one), 0);
	snprintf(path, sizeof(path), "%s/b/two", to);
	assert_int_equal(stat(path, &two), 0);
	snprintf(path, sizeof(path), "%s/b/three", to);
	assert_int_equal(stat(path, &three), 0);
	snprintf(path, sizeof(path), "%s/b/diff", to);
	assert_int_equal(stat(path, &diff), 0);
	assert_true(one.st_ino == two.st_ino && one.st_ino == three.st_ino);
	assert_int_equal(one.st_nlink, 3);
	assert_true(diff.st_ino != one.st_ino && diff.st_nlink == 1);
	snprintf(path, sizeof(path), "%s/b", to);
	assert_int_equal(stat(path, &bst), 0);
	assert_true((int64_t)bst.st_mtim.tv_sec * 1000000000 + bst.st_mtim.tv_nsec == T0 + 5);
	snprintf(path, sizeof(path), "%s/sparse", to);
	assert_int_equal(stat(path, &sst), 0);
	/* 60000 bytes of data; the 1 MB of zeros are holes (a few blocks around the data) */
	if ((long long)sst.st_blocks * 512 >= 200000)
		print_message("# sparse: %lld bytes allocated\n", (long long)sst.st_blocks * 512),
		    fail();
	if (geteuid() == 0) {
		assert_int_equal(sst.st_uid, 1234);
		assert_int_equal(sst.st_gid, 5678);
		assert_int_equal(bst.st_uid, 1234);
		assert_int_equal(one.st_gid, 1000);
	}
	assert_true(no_temps(to));
	free(x);
	free(y);
	free(sp);
}

static void
test_subpath(void **state)
{
	char to[PATH_MAX + 16];
	struct restore_stats st;

	(void)state;
	target("sub1", to, sizeof(to));
	assert_int_equal(restore(S.root, to, "d/deep/x", 0, 2, &st), 0);
	assert_file(to, "d/deep/x", S.top, S.ntop, 0640, T0 + 1);
	assert_false(exists(to, "top"));
	assert_false(exists(to, "d/big"));
	assert_int_equal(st.files, 1);

	target("sub2", to, sizeof(to));
	assert_int_equal(restore(S.root, to, "/d/", 0, 2, &st), 0);
	assert_file(to, "d/big", S.big, S.nbig, 0644, T0 + 2);
	assert_file(to, "d/deep/x", S.top, S.ntop, 0640, T0 + 1);
	assert_false(exists(to, "top"));

	target("sub3", to, sizeof(to));
	assert_int_equal(restore(S.root, to, "d/nothing", 0, 2, &st), STEP_ENOENT);
	assert_non_null(strstr(errors, "not in the snapshot"));
	assert_int_equal(restore(S.root, to, "top/x", 0, 2, &st), STEP_ENOENT);
	assert_int_equal(restore(S.root, to, "d/../top", 0, 2, &st), STEP_EINVAL);
}

/* A directory of the target replaced by a symlink to elsewhere: nothing is written through
 * it, the rest is restored. */
static void
test_symlink_in_target(void **state)
{
	char to[PATH_MAX + 16], outside[PATH_MAX + 16], link[PATH_MAX * 2];
	struct restore_stats st;

	(void)state;
	target("sym", to, sizeof(to));
	target("outside", outside, sizeof(outside));
	assert_int_equal(mkdir(to, 0755), 0);
	assert_int_equal(mkdir(outside, 0755), 0);
	snprintf(link, sizeof(link), "%s/d", to);
	assert_int_equal(symlink(outside, link), 0);
	assert_int_equal(restore(S.root, to, NULL, 0, 2, &st), STEP_EIO);
	assert_non_null(strstr(errors, "refusing 'd'"));
	assert_false(exists(outside, "big"));
	assert_false(exists(outside, "deep"));
	assert_file(to, "top", S.top, S.ntop, 0644, T0 + 6);
	assert_true(st.failed >= 1);
	assert_true(no_temps(to));
	assert_true(no_temps(outside));
	/* a symlink planted where a file goes is replaced, not followed */
	rm_rf(to);
	assert_int_equal(mkdir(to, 0755), 0);
	snprintf(link, sizeof(link), "%s/top", to);
	{
		char victim[PATH_MAX * 2];
		struct stat vst;
		int fd;

		snprintf(victim, sizeof(victim), "%s/victim", outside);
		assert_true((fd = open(victim, O_WRONLY | O_CREAT, 0644)) >= 0);
		close(fd);
		assert_int_equal(symlink(victim, link), 0);
		/* by default what is there is left alone (and listed), never written through */
		assert_int_equal(restore(S.root, to, NULL, 0, 2, &st), 0);
		assert_int_equal(st.kept, 1);
		assert_non_null(strstr(errors, "left alone"));
		assert_int_equal(stat(victim, &vst), 0);
		assert_int_equal(vst.st_size, 0);
		/* --overwrite always replaces the symlink itself */
		overwrite = RESTORE_OVERWRITE_ALWAYS;
		assert_int_equal(restore(S.root, to, NULL, 0, 2, &st), 0);
		overwrite = RESTORE_OVERWRITE_NEVER;
		assert_file(to, "top", S.top, S.ntop, 0644, T0 + 6);
		assert_int_equal(stat(victim, &vst), 0);
		assert_int_equal(vst.st_size, 0);
	}
}

/* Bytes that do not hash to their id: a tree, a chunk; and a chunk that is missing. */
static void
test_wrong_bytes(void **state)
{
	char to[PATH_MAX + 16];
	struct tree_entry r[2];
	struct tree_chunk c[2];
	uint8_t bad_tree[HASH_SHA256_LEN], root[HASH_SHA256_LEN], *good = bytes(3000, 5);
	struct buf b;
	struct restore_stats st;

	(void)state;
	/* a root tree stored under an id its bytes do not have */
	buf_init(&b, TREE_MAX_BYTES);
	assert_int_equal(tree_encode(NULL, 0, &b), 0);
	memset(bad_tree, 0xee, sizeof(bad_tree));
	put_as_tree(buf_ptr(&b), buf_avail(&b), bad_tree);
	buf_release(&b);
	target("bad1", to, sizeof(to));
	assert_int_equal(restore(bad_tree, to, NULL, 0, 2, &st), STEP_EIO);
	assert_non_null(strstr(errors, "do not hash"));
	assert_int_equal(st.trees, 0);

	/* a chunk with wrong bytes, a chunk not on the server */
	memset(c[0].id, 0xdd, HASH_SHA256_LEN);
	c[0].size = 3000;
	put_as(good, 3000, c[0].id);
	memset(c[1].id, 0xcc, HASH_SHA256_LEN);
	c[1].size = 10;
	r[0] = ent(TREE_FILE, "wrong", 0644, T0);
	r[0].chunks = &c[0], r[0].nchunks = 1, r[0].size = 3000;
	r[1] = ent(TREE_FILE, "missing", 0644, T0);
	r[1].chunks = &c[1], r[1].nchunks = 1, r[1].size = 10;
	put_tree(r, 2, root);
	target("bad2", to, sizeof(to));
	assert_int_equal(restore(root, to, NULL, 0, 2, &st), STEP_EIO);
	assert_int_equal(st.failed, 2);
	assert_non_null(strstr(errors, "cannot restore 'wrong'"));
	assert_non_null(strstr(errors, "cannot restore 'missing'"));
	assert_non_null(strstr(errors, "not on the server"));
	assert_false(exists(to, "wrong"));
	assert_false(exists(to, "missing"));
	assert_true(no_temps(to));
	free(good);
}

/* A tree that names its ancestor: real hashes cannot make one, so the id check is
 * switched off to serve it (fetch_test_trust_ids); the walk refuses it anyway. */
static void
test_ancestor(void **state)
{
	char to[PATH_MAX + 16];
	struct tree_entry r[2], a[1];
	uint8_t root[HASH_SHA256_LEN], aid[HASH_SHA256_LEN];
	struct tree_chunk c;
	struct buf b;
	struct restore_stats st;
	uint8_t one = 'x';

	(void)state;
	put(&one, 1, c.id);
	c.size = 1;
	memset(root, 0x11, sizeof(root));
	memset(aid, 0x22, sizeof(aid));
	/* root (stored as 0x11...) = { f, a -> 0x22... }, 0x22... = { up -> 0x11... } */
	r[0] = ent(TREE_FILE, "f", 0644, T0);
	r[0].chunks = &c, r[0].nchunks = 1, r[0].size = 1;
	r[1] = ent(TREE_DIR, "a", 0755, T0);
	memcpy(r[1].subtree, aid, HASH_SHA256_LEN);
	buf_init(&b, TREE_MAX_BYTES);
	assert_int_equal(tree_encode(r, 2, &b), 0);
	put_as_tree(buf_ptr(&b), buf_avail(&b), root);
	buf_reset(&b);
	a[0] = ent(TREE_DIR, "up", 0755, T0);
	memcpy(a[0].subtree, root, HASH_SHA256_LEN);
	assert_int_equal(tree_encode(a, 1, &b), 0);
	put_as_tree(buf_ptr(&b), buf_avail(&b), aid);
	buf_release(&b);
	target("anc", to, sizeof(to));
	fetch_test_trust_ids = 1;
	assert_int_equal(restore(root, to, NULL, 0, 2, &st), STEP_EIO);
	fetch_test_trust_ids = 0;
	assert_non_null(strstr(errors, "refusing 'a/up': its tree names one of its ancestors"));
	assert_true(exists(to, "f"));
	assert_true(exists(to, "a"));
	assert_false(exists(to, "a/up"));
	assert_int_equal(st.trees, 2);
	/* with the check on, the same bytes are refused at once */
	target("anc2", to, sizeof(to));
	assert_int_equal(restore(root, to, NULL, 0, 2, &st), STEP_EIO);
	assert_non_null(strstr(errors, "do not hash"));
}

/* Many small files in a few directories, over several connections: every one restored. */
static void
test_many_small(void **state)
{
	enum { NDIR = 8, NPER = 250 };
	static struct tree_entry e[NPER], r[NDIR];
	static struct tree_chunk c[NDIR][NPER];
	static char names[NDIR][NPER][16], dnames[NDIR][16];
	static char keys[NDIR * NPER][FETCH_KEY_MAX], md5s[NDIR * NPER][HASH_MD5_HEX];
	static struct client_job jobs[NDIR * NPER];
	struct client_pool *pool = NULL;
	uint8_t root[HASH_SHA256_LEN];
	char to[PATH_MAX + 16], rel[64];
	uint8_t *data = bytes(8192 + NDIR * NPER, 77);
	struct restore_stats st;
	struct timespec t0, t1;

	(void)state;
	for (int d = 0; d < NDIR; d++) {
		for (int i = 0; i < NPER; i++) {
			size_t n = 1024 + (size_t)((d * NPER + i) * 37 % 7168);

			int k = d * NPER + i;

			snprintf(names[d][i], sizeof(names[d][i]), "f%04d", i);
			hash_sha256(data + k, n, c[d][i].id);
			c[d][i].size = n;
			/* uploaded many to a request (PUTMANY) by a pool where stepd has it */
			manifest_object_key(c[d][i].id, keys[k], sizeof(keys[k]));
			hash_md5_hex(data + k, n, md5s[k]);
			memset(&jobs[k], 0, sizeof(jobs[k]));
			jobs[k].path = keys[k];
			jobs[k].mem = data + k;
			jobs[k].memlen = n;
			jobs[k].md5 = md5s[k];
			jobs[k].key = keys[k];
			jobs[k].flags = CLIENT_PUT_EXIST_OK | CLIENT_PUT_NO_STATE;
			e[i] = ent(TREE_FILE, names[d][i], 0644, T0 + i);
			e[i].chunks = &c[d][i], e[i].nchunks = 1, e[i].size = n;
		}
		snprintf(dnames[d], sizeof(dnames[d]), "d%d", d);
		r[d] = ent(TREE_DIR, dnames[d], 0755, T0);
		put_tree(e, NPER, r[d].subtree);
	}
	put_tree(r, NDIR, root);
	if (client_has_ext(cl, "putmany")) {
		assert_int_equal(client_pool_new(&copts, 2, &pool), 0);
		assert_int_equal(client_pool_put(pool, jobs, NDIR * NPER), 0);
		client_pool_free(pool);
	} else {
		for (int k = 0; k < NDIR * NPER; k++)
			put_as(jobs[k].mem, jobs[k].memlen, c[k / NPER][k % NPER].id);
	}
	target("many", to, sizeof(to));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(restore(root, to, NULL, 0, 4, &st), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	print_message("# %d files restored in %.3f s, %llu requests\n", NDIR * NPER,
	    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
	    (unsigned long long)st.requests);
	assert_int_equal(st.files, NDIR * NPER);
	/* every object is one request to an any_block server (trees: GET and DOWNLOAD), a GET
	 * and a DOWNLOAD to others */
	if (client_has_ext(cl, "any_block"))
		assert_int_equal(st.requests, NDIR * NPER + 2 * (NDIR + 1));
	else if (getenv("STEPD_ARGS") == NULL && getenv("REF_SERVER") == NULL)
		assert_int_equal(st.requests, 2 * (NDIR * NPER + NDIR + 1));
	for (int d = 0; d < NDIR; d += 3)
		for (int i = 0; i < NPER; i += 17) {
			snprintf(rel, sizeof(rel), "d%d/f%04d", d, i);
			assert_file(to, rel, data + d * NPER + i, c[d][i].size, 0644, T0 + i);
		}
	assert_true(no_temps(to));
	free(data);
}

/* A file of chunks over a megabyte: several blocks per chunk on every path. */
static void
test_big_chunks(void **state)
{
	size_t sizes[3] = { (5u << 20) / 2, (1u << 20) + 1, 4096 }, total = 0, off = 0;
	struct tree_chunk c[3];
	struct tree_entry r[1];
	uint8_t root[HASH_SHA256_LEN], *data;
	char to[PATH_MAX + 16];
	struct restore_stats st;

	(void)state;
	for (int i = 0; i < 3; i++)
		total += sizes[i];
	data = bytes(total, 31);
	for (int i = 0; i < 3; i++) {
		put(data + off, sizes[i], c[i].id);
		c[i].size = sizes[i];
		off += sizes[i];
	}
	r[0] = ent(TREE_FILE, "big", 0644, T0);
	r[0].chunks = c, r[0].nchunks = 3, r[0].size = total;
	put_tree(r, 1, root);
	target("bigc", to, sizeof(to));
	assert_int_equal(restore(root, to, NULL, 0, 3, &st), 0);
	assert_file(to, "big", data, total, 0644, T0);
	assert_int_equal(st.bytes, total);
	free(data);
}

/* Trees with the right hash but wrong content: garbage, and an entry named "..". */
static void
test_bad_trees(void **state)
{
	static const char garbage[] = "steptree\1\5this is not a tree";
	struct tree_entry r[2];
	struct tree_chunk c;
	uint8_t root[HASH_SHA256_LEN], one = 'y';
	char to[PATH_MAX + 16], *at;
	struct restore_stats st;
	struct buf b;

	(void)state;
	put_tree_bytes(garbage, sizeof(garbage) - 1, root);
	target("garbage", to, sizeof(to));
	assert_int_equal(restore(root, to, NULL, 0, 2, &st), STEP_EIO);
	assert_non_null(strstr(errors, "is malformed"));

	/* "ok" restored, then "xx" patched into ".." (its bytes hashed as they are) */
	put(&one, 1, c.id);
	c.size = 1;
	r[0] = ent(TREE_FILE, "ok", 0644, T0);
	r[0].chunks = &c, r[0].nchunks = 1, r[0].size = 1;
	r[1] = ent(TREE_FILE, "xx", 0644, T0);
	r[1].chunks = &c, r[1].nchunks = 1, r[1].size = 1;
	buf_init(&b, TREE_MAX_BYTES);
	assert_int_equal(tree_encode(r, 2, &b), 0);
	assert_non_null(at = memmem(buf_ptr(&b), buf_avail(&b), "xx", 2));
	memcpy(at, "..", 2);
	put_tree_bytes(buf_ptr(&b), buf_avail(&b), root);
	buf_release(&b);
	target("dotdot", to, sizeof(to));
	assert_int_equal(restore(root, to, NULL, 0, 2, &st), STEP_EIO);
	assert_non_null(strstr(errors, "is unsafe"));
	assert_true(exists(to, "ok"));
	assert_int_equal(st.files, 1);
	assert_true(no_temps(to));
}

/* Both ways a file gets its name: unnamed (O_TMPFILE) and linked, and, as where O_TMPFILE
 * cannot be used (restore_test_no_tmpfile), a temporary name renamed. Either way the sample
 * comes back whole, and a file that differs is replaced under --overwrite always (linkat
 * finds the name taken: a temporary name, renamed over it). */
static void
test_tmpfile_or_named(void **state)
{
	char to[PATH_MAX + 16], path[PATH_MAX * 2];
	struct restore_stats st;
	int fd;

	(void)state;
	for (int named = 0; named < 2; named++) {
		restore_test_no_tmpfile = named;
		target(named ? "named" : "tmpfile", to, sizeof(to));
		assert_int_equal(restore(S.root, to, NULL, 0, 2, &st), 0);
		assert_int_equal(nerrors, 0);
		check_sample(to, 0);
		snprintf(path, sizeof(path), "%s/d/big", to);
		assert_true((fd = open(path, O_WRONLY | O_TRUNC)) >= 0);
		assert_int_equal(write(fd, "x", 1), 1);
		close(fd);
		overwrite = RESTORE_OVERWRITE_ALWAYS;
		assert_int_equal(restore(S.root, to, NULL, 0, 2, &st), 0);
		overwrite = RESTORE_OVERWRITE_NEVER;
		assert_int_equal(nerrors, 0);
		assert_int_equal(st.files, 1);
		assert_int_equal(st.unchanged, 6);
		check_sample(to, 0);
	}
	restore_test_no_tmpfile = 0;
}

/*
 * Modes and owners that a new file may have from the start (restore leaves out the chmod or
 * chown then): under umask 022, 0644 and 0755 files, 0666 (the umask would take a bit), 0444
 * (no write bit) and 04755 (dropped to 0755, or kept when asked) all come back exact; as
 * root, files of our own uid and gid in a set-group-ID target of another group get our gid
 * all the same (the directory's gid is what a new file has: chown'ed back), another owner
 * its own.
 */
static void
test_modes_owners(void **state)
{
	static const unsigned modes[] = { 0644, 0755, 0666, 0444, 04755 };
	static const char *names[] = { "a644", "b755", "c666", "d444", "e4755" };
	struct tree_entry r[6];
	struct tree_chunk c;
	uint8_t root[HASH_SHA256_LEN], *x = bytes(3000, 11);
	char to[PATH_MAX + 16], path[PATH_MAX * 2];
	struct stat st;
	mode_t old = umask(022);
	int asroot = geteuid() == 0;

	(void)state;
	put(x, 3000, c.id);
	c.size = 3000;
	for (int i = 0; i < 5; i++) {
		r[i] = ent(TREE_FILE, names[i], modes[i], T0 + i);
		r[i].chunks = &c, r[i].nchunks = 1, r[i].size = 3000;
		r[i].uid = (uint32_t)geteuid(), r[i].gid = (uint32_t)getegid();
	}
	r[5] = ent(TREE_FILE, "f-other", 0640, T0 + 5);
	r[5].chunks = &c, r[5].nchunks = 1, r[5].size = 3000;
	r[5].uid = 1234, r[5].gid = 5678;
	put_tree(r, 6, root);
	for (int preserve = 0; preserve < 2; preserve++) {
		target(preserve ? "modes-p" : "modes", to, sizeof(to));
		assert_int_equal(mkdir(to, 0755), 0);
		if (asroot)
			assert_int_equal(chown(to, 0, 4321), 0);
		assert_int_equal(chmod(to, 02755), 0);
		owner = asroot;
		assert_int_equal(restore(root, to, NULL, preserve, 2, NULL), 0);
		owner = 0;
		assert_int_equal(nerrors, 0);
		for (int i = 0; i < 5; i++) {
			unsigned want = preserve || i < 4 ? modes[i] : 0755;

			assert_file(to, names[i], x, 3000, want, T0 + i);
			snprintf(path, sizeof(path), "%s/%s", to, names[i]);
			assert_int_equal(stat(path, &st), 0);
			if (asroot)
				assert_int_equal(st.st_gid, getegid());
		}
		assert_file(to, "f-other", x, 3000, 0640, T0 + 5);
		snprintf(path, sizeof(path), "%s/f-other", to);
		assert_int_equal(stat(path, &st), 0);
		if (asroot) {
			assert_int_equal(st.st_uid, 1234);
			assert_int_equal(st.st_gid, 5678);
		}
	}
	umask(old);
	free(x);
}

/* A pending SIGINT (blocked, as a caller that wants a clean stop does) stops the restore
 * between objects: STEP_ESTOPPED, no temporary files. */
static void
test_stopped(void **state)
{
	char to[PATH_MAX + 16];
	struct restore_stats st;
	sigset_t set;
	int sig;

	(void)state;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	kill(getpid(), SIGINT); /* blocked in every thread since main() */
	target("stopped", to, sizeof(to));
	assert_int_equal(restore(S.root, to, NULL, 0, 2, &st), STEP_ESTOPPED);
	assert_non_null(strstr(errors, "interrupted"));
	/* taken before system() (no_temps), which would discard it */
	assert_int_equal(sigwait(&set, &sig), 0);
	assert_true(no_temps(to));
}

/* The server goes away: the restore ends with the session's error and leaves no
 * temporary files. */
static void
test_server_gone(void **state)
{
	char to[PATH_MAX + 16];
	struct restore_stats st;

	(void)state;
	kill(stepd_pid, SIGTERM);
	waitpid(stepd_pid, NULL, 0);
	stepd_pid = -1;
	copts.retries = -1;
	target("gone", to, sizeof(to));
	assert_int_equal(restore(S.root, to, NULL, 0, 2, &st), STEP_ECONNECT);
	assert_non_null(strstr(errors, "restore stopped"));
	assert_true(no_temps(to));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sample),
		cmocka_unit_test(test_subpath),
		cmocka_unit_test(test_tmpfile_or_named),
		cmocka_unit_test(test_modes_owners),
		cmocka_unit_test(test_links_sparse_owner),
		cmocka_unit_test(test_symlink_in_target),
		cmocka_unit_test(test_wrong_bytes),
		cmocka_unit_test(test_ancestor),
		cmocka_unit_test(test_many_small),
		cmocka_unit_test(test_big_chunks),
		cmocka_unit_test(test_bad_trees),
		cmocka_unit_test(test_stopped),
		cmocka_unit_test(test_server_gone),
	};

	sigset_t set;

	/* SIGINT blocked before any thread exists, so every thread inherits it: test_stopped
	 * leaves one pending, as a caller that wants a clean stop does */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("restore", tests, setup, teardown);
}
