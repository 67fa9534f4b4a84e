/*
 * cmd_status.c — `stepsync status`: what the watcher is doing and how the last backup
 * runs (cron `sync` or `watch`) ended, read from the state database (WAL lets it run
 * while `stepsync watch` writes). Never contacts the server.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "cmd_watch.h"
#include "db.h"
#include "err.h"
#include "queue.h"
#include "runs.h"
#include "uploads.h"

#define STATUS_USAGE "status [--json]"

static void
fmt_time(long long t, char *out, size_t outlen)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (t <= 0 || localtime_r(&tt, &tm) == NULL ||
	    strftime(out, outlen, "%Y-%m-%d %H:%M:%S %z", &tm) == 0)
		snprintf(out, outlen, "never");
}

/* Adds key's value to obj as an integer (or null when unset). */
static void
json_int_key(json_t *obj, sqlite3 *sq, const char *key, const char *field)
{
	long long v;

	if (queue_status_get_int(sq, key, &v) == 0)
		json_object_set_new(obj, field, json_integer(v));
	else
		json_object_set_new(obj, field, json_null());
}

static void
json_str_key(json_t *obj, sqlite3 *sq, const char *key, const char *field)
{
	char *v = NULL;

	if (queue_status_get(sq, key, &v) == 0)
		json_object_set_new(obj, field, json_string(v));
	else
		json_object_set_new(obj, field, json_null());
	free(v);
}

/* The deletions held back by watchers (status key "held"): an object by snapshot name of
 * {"files", "since", "release"}; {} when none. */
static json_t *
held_json(sqlite3 *sq)
{
	char *text = NULL;
	json_t *all = NULL;

	if (queue_status_get(sq, "held", &text) == 0)
		all = json_loads(text, 0, NULL);
	free(text);
	if (!json_is_object(all)) {
		json_decref(all);
		all = json_object();
	}
	return all;
}

/* The sync engine's counters of the watcher's last run, when a watcher ran. */
static void
engine_print(sqlite3 *sq)
{
	long long inc = 0, dirs = 0, reused = 0, hashed = 0, full = 0, incs = 0;

	if (queue_status_get_int(sq, "last_run_incremental", &inc) != 0)
		return;
	queue_status_get_int(sq, "last_dirs_scanned", &dirs);
	queue_status_get_int(sq, "last_dirs_reused", &reused);
	queue_status_get_int(sq, "last_files_hashed", &hashed);
	queue_status_get_int(sq, "full_runs", &full);
	queue_status_get_int(sq, "incremental_runs", &incs);
	printf("last watcher run: %s, %lld %s read, %lld reused, %lld %s hashed "
	       "(%lld full and %lld incremental runs)\n",
	    inc ? "incremental" : "full", dirs,
	    agent_plural((uint64_t)dirs, "directory", "directories"), reused, hashed,
	    agent_plural((uint64_t)hashed, "file", "files"), full, incs);
}

/* The held deletions, a line each. */
static void
held_print(sqlite3 *sq)
{
	json_t *all = held_json(sq), *e;
	const char *name;
	char when[64];

	if (json_object_size(all) == 0)
		printf("held deletions: none\n");
	json_object_foreach(all, name, e)
	{
		fmt_time(
		    (long long)json_integer_value(json_object_get(e, "since")), when, sizeof(when));
		printf("held deletions: %s: %lld files gone but kept in its snapshots since %s "
		       "(most of the tree vanished); to record the deletions run: %s\n",
		    agent_tty_str(stdout, name),
		    (long long)json_integer_value(json_object_get(e, "files")), when,
		    agent_tty_str(stdout, json_string_value(json_object_get(e, "release"))));
	}
	json_decref(all);
}

/* Whole per cent of blocks acknowledged (a finished plan of 0 blocks is 100). */
static int
percent(const struct upload_progress *p)
{
	return p->total_block == 0 ? 100 : (int)((uint64_t)p->acked * 100 / p->total_block);
}

static int
upload_json(const struct upload_progress *p, void *arg)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:i, s:I}", "path", p->path, "key", p->key,
	    "size", (json_int_t)p->size, "blocks_total", (json_int_t)p->total_block, "blocks_done",
	    (json_int_t)p->acked, "percent", percent(p), "updated", (json_int_t)p->updated);

	if (o == NULL || json_array_append_new(arg, o) != 0)
		return STEP_ENOMEM;
	return 0;
}

static int
upload_text(const struct upload_progress *p, void *arg)
{
	char when[64];

	(void)arg;
	fmt_time(p->updated, when, sizeof(when));
	printf("  %s: %d%% (%u of %u blocks, %llu bytes; last progress %s)\n", p->path, percent(p),
	    p->acked, p->total_block, (unsigned long long)p->size, when);
	return 0;
}

static int
count_run(const struct runs_rec *r, void *arg)
{
	(void)r;
	++*(long long *)arg;
	return 0;
}

static int
count_upload(const struct upload_progress *p, void *arg)
{
	(void)p;
	++*(long long *)arg;
	return 0;
}

static int
run_json(const struct runs_rec *r, void *arg)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:i, s:s?, s:s?, s:I}", "name", r->name,
	    "command", r->command, "time", (json_int_t)r->time, "result", r->result, "exit_status",
	    r->exit_status, "snapshot", r->snapshot, "error", r->error, "last_ok",
	    (json_int_t)r->last_ok);

	if (o == NULL || json_array_append_new(arg, o) != 0)
		return STEP_ENOMEM;
	return 0;
}

static int
run_text(const struct runs_rec *r, void *arg)
{
	char when[64], ok[64];

	(void)arg;
	fmt_time(r->time, when, sizeof(when));
	fmt_time(r->last_ok, ok, sizeof(ok));
	printf("  %s: %s %s at %s (exit %d)", r->name[0] ? agent_tty_str(stdout, r->name) : "-",
	    r->command, r->result, when, r->exit_status);
	if (r->snapshot != NULL)
		printf(", latest snapshot %s", agent_tty_str(stdout, r->snapshot));
	if (r->exit_status != 0)
		printf(", last ok %s", ok);
	putchar('\n');
	if (r->error != NULL && r->exit_status != 0)
		printf("    error: %s\n", agent_tty_str(stdout, r->error));
	return 0;
}

static int
watch_running(sqlite3 *sq, long long *pidp)
{
	long long pid = 0;

	if (queue_status_get_int(sq, "watch_pid", &pid) != 0 || pid <= 0)
		return 0;
	*pidp = pid;
	return kill((pid_t)pid, 0) == 0;
}

static int
print_json(const struct agent *a, struct db *db, long long pending)
{
	sqlite3 *sq = db_handle(db);
	json_t *o = json_object(), *uploads = json_array(), *runs = json_array();
	long long pid = 0;

	if (o == NULL || uploads == NULL || runs == NULL ||
	    uploads_each(db, upload_json, uploads) != 0 || runs_each(db, run_json, runs) != 0) {
		json_decref(o);
		json_decref(uploads);
		json_decref(runs);
		agent_error("cannot read the state database: %s", db_errmsg(db));
		return AGENT_EXIT_FAIL;
	}
	json_object_set_new(o, "pending", json_integer(pending));
	json_object_set_new(
	    o, "watch_pid", watch_running(sq, &pid) ? json_integer(pid) : json_null());
	json_str_key(o, sq, "last_snapshot", "last_snapshot");
	json_int_key(o, sq, "last_snapshot_time", "last_snapshot_time");
	json_int_key(o, sq, "last_success", "last_success");
	json_str_key(o, sq, "last_error", "last_error");
	json_int_key(o, sq, "last_error_time", "last_error_time");
	json_int_key(o, sq, "bytes_sent", "bytes_sent");
	json_int_key(o, sq, "errors", "errors");
	json_int_key(o, sq, "full_runs", "full_runs");
	json_int_key(o, sq, "incremental_runs", "incremental_runs");
	json_int_key(o, sq, "last_run_incremental", "last_run_incremental");
	json_int_key(o, sq, "last_dirs_scanned", "last_dirs_scanned");
	json_int_key(o, sq, "last_dirs_reused", "last_dirs_reused");
	json_int_key(o, sq, "last_files_hashed", "last_files_hashed");
	json_int_key(o, sq, "dirs_scanned_total", "dirs_scanned_total");
	json_int_key(o, sq, "files_hashed_total", "files_hashed_total");
	json_object_set_new(o, "held", held_json(sq));
	json_object_set_new(o, "uploads", uploads);
	json_object_set_new(o, "last_run", json_incref(json_array_get(runs, 0)));
	if (json_object_get(o, "last_run") == NULL)
		json_object_set_new(o, "last_run", json_null());
	json_object_set_new(o, "runs", runs);
	{
		struct agent ja = *a;

		ja.json = 1;
		agent_json(&ja, o);
	}
	return AGENT_EXIT_OK;
}

static void
print_text(struct db *db, long long pending)
{
	sqlite3 *sq = db_handle(db);
	char when[64], *s = NULL;
	long long v = 0, pid = 0, nuploads = 0;

	printf("pending changes: %lld\n", pending);
	uploads_each(db, count_upload, &nuploads);
	printf("uploads in progress: %lld\n", nuploads);
	uploads_each(db, upload_text, NULL);
	if (watch_running(sq, &pid))
		printf("watch: running (pid %lld)\n", pid);
	else
		printf("watch: not running\n");
	if (queue_status_get(sq, "last_snapshot", &s) == 0) {
		queue_status_get_int(sq, "last_snapshot_time", &v);
		fmt_time(v, when, sizeof(when));
		printf("last snapshot: %s at %s\n", agent_tty_str(stdout, s), when);
		free(s);
		s = NULL;
	} else {
		printf("last snapshot: none\n");
	}
	v = 0;
	queue_status_get_int(sq, "last_success", &v);
	fmt_time(v, when, sizeof(when));
	printf("last success: %s\n", when);
	v = 0;
	queue_status_get_int(sq, "bytes_sent", &v);
	printf("bytes sent: %lld\n", v);
	held_print(sq);
	engine_print(sq);
	if (queue_status_get(sq, "last_error", &s) == 0) {
		v = 0;
		queue_status_get_int(sq, "last_error_time", &v);
		fmt_time(v, when, sizeof(when));
		printf("last error: %s (at %s)\n", agent_tty_str(stdout, s), when);
		free(s);
	} else {
		printf("last error: none\n");
	}
	nuploads = 0;
	runs_each(db, count_run, &nuploads);
	if (nuploads == 0) {
		printf("last runs: none\n");
	} else {
		printf("last runs (newest first):\n");
		runs_each(db, run_text, NULL);
	}
}

int
cmd_status(struct agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct db *db = NULL;
	sqlite3 *sq;
	long long pending = 0;
	int c, json = a->json;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = 1;
			break;
		case 'h':
			printf(
			    "usage: stepsync %s\n\n"
			    "Shows what 'stepsync watch' is doing and how the last backup runs\n"
			    "ended, read from the state database (--state, or the config file's;\n"
			    "readable while watch runs, never contacts the server): queued "
			    "changes,\n"
			    "uploads in progress with the percentage of blocks the server\n"
			    "acknowledged, whether a watcher runs, the last snapshot and its "
			    "time,\n"
			    "the last successful run, the bytes sent by watch, the last error, "
			    "and\n"
			    "for each NAME the last run of 'sync' (cron) or 'watch': when, result\n"
			    "(ok, incomplete or failed), exit status, latest snapshot, error.\n"
			    "  --json   the same as one JSON object (pending, watch_pid,\n"
			    "           last_snapshot, last_snapshot_time, last_success, "
			    "last_error,\n"
			    "           last_error_time, bytes_sent, errors, uploads, last_run,\n"
			    "           runs: [{name, command, time, result, exit_status,\n"
			    "           snapshot, error, last_ok}])\n"
			    "exit status: 0 shown; 1 the state database cannot be read; 2 usage\n",
			    STATUS_USAGE);
			return AGENT_EXIT_OK;
		default:
			return agent_usage(STATUS_USAGE);
		}
	}
	if (optind != argc)
		return agent_usage(STATUS_USAGE);
	if (agent_db(a, &db) != 0)
		return AGENT_EXIT_FAIL;
	sq = db_handle(db);
	if (queue_migrate(sq) != 0 || uploads_migrate(db) != 0 || runs_migrate(db) != 0 ||
	    queue_count(sq, NULL, &pending) != 0) {
		agent_error("cannot read the state database: %s", db_errmsg(db));
		return AGENT_EXIT_FAIL;
	}
	if (json)
		return print_json(a, db, pending);
	print_text(db, pending);
	return AGENT_EXIT_OK;
}
