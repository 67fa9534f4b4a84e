/*
 * cmd_snapshots.c — `stepsync snapshots`: list a NAME's snapshots on the server, oldest
 * first, one per line with its ID first. Asks the server (works with an empty state);
 * read-only.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "cmd.h"
#include "err.h"
#include "snapshot.h"

static void
fmt_time(int64_t t, char *out, size_t outlen)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, outlen, "-");
}

int
cmd_snapshots(struct agent *a, int argc, char **argv)
{
	static const char usage[] = "snapshots [--name NAME] [--json]";
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct snapshots_rec rec;
	struct client *c = NULL;
	const char *name = NULL;
	uint64_t lo = 0, hi = 0, seq;
	char when[32];
	int ch, r, json = a->json;

	while ((ch = getopt_long(argc, argv, "+n:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			name = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			printf(
			    "usage: stepsync %s\n\nLists the snapshots of NAME on the server, "
			    "oldest "
			    "first:\nID (use with restore --snapshot), time (UTC), files, bytes.\n"
			    "With --json, one JSON object per snapshot.\n",
			    usage);
			return AGENT_EXIT_OK;
		default:
			return agent_usage(usage);
		}
	}
	if (optind != argc)
		return agent_usage(usage);
	if (name == NULL && (name = snapshot_default_name(a)) == NULL)
		return AGENT_EXIT_USAGE;
	if (agent_client(a, &c) != 0)
		return SYNC_EXIT_CONFIG;
	if ((r = snapshot_range(c, name, 0, &lo, &hi)) != 0) {
		agent_error("cannot list the snapshots of '%s': %s", name, client_error(c));
		return snapshot_exit_code(r);
	}
	if (!json)
		printf("%-10s  %-20s  %10s  %14s\n", "ID", "TIME", "FILES", "BYTES");
	for (seq = lo; seq != 0 && seq <= hi; seq++) {
		r = snapshot_info_get(c, name, seq, &rec);
		if (r == STEP_ENOENT) {
			memset(&rec, 0, sizeof(rec));
			rec.seq = seq;
		} else if (r != 0) {
			agent_error(
			    "cannot read snapshot %s#%" PRIu64 ": %s", name, seq, client_error(c));
			return snapshot_exit_code(r);
		}
		fmt_time(rec.time, when, sizeof(when));
		if (json) {
			struct agent ja = *a;

			ja.json = 1;
			agent_json(&ja,
			    json_pack("{s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I}", "name", name,
			        "id", (json_int_t)seq, "time", when, "unix_time",
			        (json_int_t)rec.time, "files", (json_int_t)rec.files, "dirs",
			        (json_int_t)rec.dirs, "symlinks", (json_int_t)rec.symlinks, "bytes",
			        (json_int_t)rec.bytes));
		} else {
			printf("%-10" PRIu64 "  %-20s  %10" PRIu64 "  %14" PRIu64 "\n", seq, when,
			    rec.files, rec.bytes);
		}
	}
	return AGENT_EXIT_OK;
}
