/* test_watch.c — move pairing, debounce bookkeeping, and the inotify engine on a temp dir. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "err.h"
#include "watch.h"

static void
test_moves_pair(void **state)
{
	struct watch_moves m;
	char *p = NULL;
	int isdir = -1;

	watch_moves_init(&m);
	assert_int_equal(watch_moves_add(&m, 7, "/t/a", 0, 100), 0);
	assert_int_equal(watch_moves_add(&m, 9, "/t/d", 1, 100), 0);
	assert_int_equal(watch_moves_take(&m, 8, &p, &isdir), STEP_ENOENT);
	assert_int_equal(watch_moves_take(&m, 9, &p, &isdir), 0);
	assert_string_equal(p, "/t/d");
	assert_int_equal(isdir, 1);
	free(p);
	assert_int_equal(watch_moves_take(&m, 7, &p, &isdir), 0);
	assert_string_equal(p, "/t/a");
	assert_int_equal(isdir, 0);
	free(p);
	assert_int_equal(watch_moves_take(&m, 7, &p, &isdir), STEP_ENOENT);
	watch_moves_release(&m);
}

/* An IN_MOVED_FROM nobody claims becomes a delete once the pairing window has passed. */
static void
test_moves_expire(void **state)
{
	struct watch_moves m;
	char *p = NULL;
	int isdir = 0;

	watch_moves_init(&m);
	assert_int_equal(watch_moves_add(&m, 1, "/t/old", 0, 1000), 0);
	assert_int_equal(watch_moves_add(&m, 2, "/t/newer", 0, 1150), 0);
	assert_int_equal(watch_moves_pop_expired(&m, 1100, 200, &p, &isdir), 0);
	assert_int_equal(watch_moves_pop_expired(&m, 1200, 200, &p, &isdir), 1);
	assert_string_equal(p, "/t/old");
	free(p);
	assert_int_equal(watch_moves_pop_expired(&m, 1200, 200, &p, &isdir), 0);
	/* age 0 flushes everything (shutdown) */
	assert_int_equal(watch_moves_pop_expired(&m, 1200, 0, &p, &isdir), 1);
	assert_string_equal(p, "/t/newer");
	free(p);
	assert_int_equal(m.n, 0);
	/* left-over entries are freed by release */
	assert_int_equal(watch_moves_add(&m, 3, "/t/x", 0, 1), 0);
	watch_moves_release(&m);
}

static void
test_debounce_settles(void **state)
{
	struct watch_debounce d;

	watch_debounce_init(&d, 1000, 0);
	assert_int_equal(d.max_ms, 10000);
	assert_int_equal(watch_debounce_timeout(&d, 0), -1);
	assert_false(watch_debounce_due(&d, 5000));
	watch_debounce_note(&d, 100);
	assert_int_equal(watch_debounce_timeout(&d, 100), 1000);
	watch_debounce_note(&d, 600); /* the burst goes on: the quiet period restarts */
	assert_false(watch_debounce_due(&d, 1100));
	assert_int_equal(watch_debounce_timeout(&d, 1100), 500);
	assert_true(watch_debounce_due(&d, 1600));
	assert_int_equal(d.nevents, 2);
	watch_debounce_reset(&d);
	assert_false(watch_debounce_due(&d, 99999));
}

/* A file written without pause still gets a batch out by max_ms after its first event. */
static void
test_debounce_cap(void **state)
{
	struct watch_debounce d;
	uint64_t t;

	watch_debounce_init(&d, 1000, 5000);
	for (t = 0; t < 5000; t += 500) {
		watch_debounce_note(&d, t);
		assert_false(watch_debounce_due(&d, t));
	}
	watch_debounce_note(&d, 5000);
	assert_true(watch_debounce_due(&d, 5000));
	/* a cap below the quiet period is raised to it */
	watch_debounce_init(&d, 2000, 1000);
	assert_int_equal(d.max_ms, 2000);
}

/* ---- the engine, on a real directory ---- */

#define MAXEV 64
struct seen {
	int n;
	int ev[MAXEV];
	char path[MAXEV][256];
	char path2[MAXEV][256];
};

static void
record(void *arg, int ev, const char *path, const char *path2)
{
	struct seen *s = arg;

	if (s->n >= MAXEV)
		return;
	s->ev[s->n] = ev;
	snprintf(s->path[s->n], sizeof(s->path[0]), "%s", path);
	snprintf(s->path2[s->n], sizeof(s->path2[0]), "%s", path2 ? path2 : "");
	s->n++;
}

static int
seen_has(const struct seen *s, int ev, const char *path, const char *path2)
{
	int i;

	for (i = 0; i < s->n; i++)
		if (s->ev[i] == ev && strcmp(s->path[i], path) == 0 &&
		    (path2 == NULL || strcmp(s->path2[i], path2) == 0))
			return 1;
	return 0;
}

static void
touch(const char *path)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs("x", f);
	fclose(f);
}

static void
rm_rf(const char *dir)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void
test_engine_events(void **state)
{
	char root[] = "/tmp/test_watch.XXXXXX", p[256], q[256];
	struct watch *w = NULL;
	struct seen s;

	memset(&s, 0, sizeof(s));
	assert_non_null(mkdtemp(root));
	snprintf(p, sizeof(p), "%s/sub", root);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(watch_new(0, record, &s, &w), 0);
	assert_int_equal(watch_add_tree(w, root), 0);
	assert_int_equal(watch_count(w), 2);

	/* a new file in a subdirectory */
	snprintf(p, sizeof(p), "%s/sub/a.txt", root);
	touch(p);
	assert_int_equal(watch_process(w, 0), 0);
	assert_true(seen_has(&s, WATCH_EV_CHANGE, p, NULL));

	/* a new nested directory is watched and reported for a rescan */
	snprintf(p, sizeof(p), "%s/new", root);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(watch_process(w, 0), 0);
	assert_true(seen_has(&s, WATCH_EV_RESCAN, p, NULL));
	assert_int_equal(watch_count(w), 3);
	snprintf(p, sizeof(p), "%s/new/in.txt", root);
	touch(p);
	assert_int_equal(watch_process(w, 0), 0);
	assert_true(seen_has(&s, WATCH_EV_CHANGE, p, NULL));

	/* a rename inside the tree is one paired move */
	snprintf(p, sizeof(p), "%s/sub/a.txt", root);
	snprintf(q, sizeof(q), "%s/new/b.txt", root);
	assert_int_equal(rename(p, q), 0);
	assert_int_equal(watch_process(w, 0), 0);
	assert_true(seen_has(&s, WATCH_EV_MOVE, p, q));
	assert_false(seen_has(&s, WATCH_EV_DELETE, p, NULL));

	/* a renamed directory keeps reporting under its new name */
	snprintf(p, sizeof(p), "%s/new", root);
	snprintf(q, sizeof(q), "%s/renamed", root);
	assert_int_equal(rename(p, q), 0);
	assert_int_equal(watch_process(w, 0), 0);
	assert_true(seen_has(&s, WATCH_EV_MOVE, p, q));
	snprintf(p, sizeof(p), "%s/renamed/c.txt", root);
	touch(p);
	assert_int_equal(watch_process(w, 0), 0);
	assert_true(seen_has(&s, WATCH_EV_CHANGE, p, NULL));

	/* a move out of the tree is a delete once the pairing window has passed */
	snprintf(p, sizeof(p), "%s/renamed/c.txt", root);
	snprintf(q, sizeof(q), "%s.out", root);
	assert_int_equal(rename(p, q), 0);
	assert_int_equal(watch_process(w, 1000), 0);
	assert_false(seen_has(&s, WATCH_EV_DELETE, p, NULL));
	assert_true(watch_next_timeout(w, 1000) > 0);
	assert_int_equal(watch_process(w, 5000), 0);
	assert_true(seen_has(&s, WATCH_EV_DELETE, p, NULL));
	assert_int_equal(watch_next_timeout(w, 5000), -1);
	unlink(q);

	/* a deleted file; a deleted directory drops its watch on IN_IGNORED */
	snprintf(p, sizeof(p), "%s/renamed/b.txt", root);
	assert_int_equal(unlink(p), 0);
	snprintf(q, sizeof(q), "%s/renamed/in.txt", root);
	assert_int_equal(unlink(q), 0);
	snprintf(q, sizeof(q), "%s/renamed", root);
	assert_int_equal(rmdir(q), 0);
	assert_int_equal(watch_process(w, 6000), 0);
	assert_true(seen_has(&s, WATCH_EV_DELETE, p, NULL));
	assert_true(seen_has(&s, WATCH_EV_DELETE, q, NULL));
	assert_int_equal(watch_count(w), 2);

	watch_free(w);
	rm_rf(root);
}

/* Hitting the watch limit is not an error: the rest is polled. */
static void
test_engine_limit(void **state)
{
	char root[] = "/tmp/test_watch.XXXXXX", p[256];
	struct watch *w = NULL;
	struct seen s;

	memset(&s, 0, sizeof(s));
	assert_non_null(mkdtemp(root));
	snprintf(p, sizeof(p), "%s/a", root);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/a/deep", root);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(watch_new(1, record, &s, &w), 0);
	assert_int_equal(watch_add_tree(w, root), 0);
	assert_int_equal(watch_count(w), 1);
	assert_int_equal(watch_poll_unwatched(w), 1); /* "a" (with "a/deep" inside) */
	assert_int_equal(s.n, 0);
	snprintf(p, sizeof(p), "%s/a/deep/f.txt", root);
	touch(p);
	assert_int_equal(watch_process(w, 0), 0);
	assert_int_equal(s.n, 0); /* no watch there */
	assert_int_equal(watch_poll_unwatched(w), 1);
	snprintf(p, sizeof(p), "%s/a", root);
	assert_true(seen_has(&s, WATCH_EV_RESCAN, p, NULL));
	s.n = 0;
	assert_int_equal(watch_poll_unwatched(w), 1);
	assert_int_equal(s.n, 0); /* nothing changed since */
	watch_free(w);
	rm_rf(root);
}

static void
test_engine_bad_root(void **state)
{
	struct watch *w = NULL;
	struct seen s;

	assert_int_equal(watch_new(0, record, &s, &w), 0);
	assert_int_equal(watch_add_tree(w, "/nonexistent/step-watch"), STEP_ESYS);
	watch_free(w);
	watch_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_moves_pair),
		cmocka_unit_test(test_moves_expire),
		cmocka_unit_test(test_debounce_settles),
		cmocka_unit_test(test_debounce_cap),
		cmocka_unit_test(test_engine_events),
		cmocka_unit_test(test_engine_limit),
		cmocka_unit_test(test_engine_bad_root),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("watch", tests, NULL, NULL);
}
