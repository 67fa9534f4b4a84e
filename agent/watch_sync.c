/*
 * watch_sync.c — `stepsync watch`'s seam to the sync engine. Until the sync engine
 * exports a library call for one run, this calls the `sync` command function in-process
 * (never a shell). The reference is weak so the watcher builds and its tests run even
 * in a tree where the sync command is not linked in.
 *
 * What a run did is read back from the state database the sync engine keeps, not from
 * its printed summary: the snapshot is the newest seq recorded for the name (table
 * "snapshots"), and the bytes sent are the growth of the total size of content objects
 * recorded as on the server (table "objects"; content another agent had already sent
 * counts too, content pruned meanwhile is not subtracted below 0).
 */
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "cmd.h"
#include "db.h"
#include "err.h"
#include "snapshots.h"
#include "util.h"
#include "watch_sync.h"

int cmd_sync(struct agent *a, int argc, char **argv) __attribute__((weak));

/* Total size of the objects known to be on the server; 0 when the table is missing. */
static uint64_t
objects_bytes(struct agent *a)
{
	sqlite3_stmt *st = NULL;
	uint64_t n = 0;

	if (a->db == NULL)
		return 0;
	if (sqlite3_prepare_v2(
	        db_handle(a->db), "SELECT total(size) FROM objects", -1, &st, NULL) != SQLITE_OK)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_double(st, 0) > 0)
		n = (uint64_t)sqlite3_column_double(st, 0);
	sqlite3_finalize(st);
	return n;
}

/* res->snapshot = "NAME#SEQ" of the newest snapshot the state records for the tree. */
static void
latest_snapshot(struct agent *a, const char *name, const char *path, struct watch_sync_result *res)
{
	char base[PATH_MAX];
	uint64_t seq = 0;

	if (name == NULL) {
		/* The sync engine's default name: the directory's base name. */
		snprintf(base, sizeof(base), "%s", path);
		name = basename(base);
	}
	if (a->db == NULL || snapshots_latest(a->db, name, &seq) != 0 || seq == 0) {
		snprintf(res->snapshot, sizeof(res->snapshot), "%s", name);
		return;
	}
	snprintf(res->snapshot, sizeof(res->snapshot), "%s#%" PRIu64, name, seq);
}

int
watch_sync_dir(struct agent *a, const char *name, const char *path, struct watch_sync_result *res,
    char *errbuf, size_t errlen)
{
	char arg0[] = "sync", opt[] = "--name", skip[] = "--skip-unchanged";
	char namebuf[256], pathbuf[4096];
	char *argv[6];
	uint64_t before, after;
	int argc = 0, rc, recorded;

	memset(res, 0, sizeof(*res));
	if (cmd_sync == NULL) {
		snprintf(errbuf, errlen, "this stepsync has no sync engine");
		return STEP_EINVAL;
	}
	if ((name != NULL &&
	        snprintf(namebuf, sizeof(namebuf), "%s", name) >= (int)sizeof(namebuf)) ||
	    snprintf(pathbuf, sizeof(pathbuf), "%s", path) >= (int)sizeof(pathbuf)) {
		snprintf(errbuf, errlen, "name or path too long");
		return STEP_EINVAL;
	}
	argv[argc++] = arg0;
	/* The start-up sync and the periodic rescan mostly find nothing new: they keep the
	 * latest snapshot instead of recording an identical one (a whole manifest each time). */
	argv[argc++] = skip;
	if (name != NULL) {
		argv[argc++] = opt;
		argv[argc++] = namebuf;
	}
	argv[argc++] = pathbuf;
	argv[argc] = NULL;
	before = objects_bytes(a);
	optind = 0; /* the command parses its own options with getopt */
	recorded = a->runs_recorded;
	a->run_command = "watch";
	rc = cmd_sync(a, argc, argv);
	fflush(stdout);
	res->exit_status = rc;
	if (rc != AGENT_EXIT_OK && a->runs_recorded == recorded && !util_stop_pending())
		agent_record_run(a, name != NULL ? name : "", rc); /* failed before the tree */
	if (rc != AGENT_EXIT_OK) {
		snprintf(errbuf, errlen, "sync exited with status %d", rc);
		watch_sync_reset(a);
		return STEP_ESTATUS;
	}
	after = objects_bytes(a);
	res->bytes_sent = after > before ? after - before : 0;
	latest_snapshot(a, name, path, res);
	return STEP_OK;
}

void
watch_sync_reset(struct agent *a)
{
	client_free(a->client);
	a->client = NULL;
}
