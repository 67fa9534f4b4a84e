/*
 * cmd_snapshots.c — `stepsync snapshots`: without --name, every snapshot NAME with its
 * count and newest snapshot; with --name, NAME's snapshots, oldest first, one per line
 * with its ID first. Asks the server (works with an empty state); read-only.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "cmd.h"
#include "config.h"
#include "db.h"
#include "err.h"
#include "manifest.h"
#include "snapshot.h"
#include "util.h"

static const char usage[] = "snapshots [--name NAME] [--snapshot ID]";

/* One snapshot NAME of the listing of names. */
struct snap_name {
	char *name;     /* owned */
	uint64_t count; /* manifests on the server */
	uint64_t newest;
};

int
snapshots_parse_id(const char *name, const char *id, uint64_t *seqp, char *errbuf, size_t errlen)
{
	const char *h = strrchr(id, '#');

	if (h != NULL && name != NULL &&
	    (strlen(name) != (size_t)(h - id) || strncmp(id, name, (size_t)(h - id)) != 0)) {
		snprintf(errbuf, errlen, "snapshot '%s' is not a snapshot of '%s'", id, name);
		return STEP_EINVAL;
	}
	if (snapshot_parse_id(id, seqp) != 0) {
		snprintf(errbuf, errlen, "bad snapshot id '%s' (SEQ or NAME#SEQ)", id);
		return STEP_EINVAL;
	}
	return 0;
}

/* Decodes manifest_name_encode()'s "_xx" escapes of enc (n bytes); 0 or -1. */
static int
name_decode(const char *enc, size_t n, char *out, size_t outlen)
{
	size_t i, o = 0;
	unsigned v;

	for (i = 0; i < n; i++) {
		if (o + 1 >= outlen)
			return -1;
		if (enc[i] != '_') {
			out[o++] = enc[i];
			continue;
		}
		if (i + 2 >= n || sscanf(enc + i + 1, "%2x", &v) != 1 || v == 0)
			return -1;
		out[o++] = (char)v;
		i += 2;
	}
	out[o] = '\0';
	return o > 0 ? 0 : -1;
}

static struct snap_name *
names_find(struct snap_name **np, size_t *nn, const char *name, int add)
{
	size_t i;

	for (i = 0; i < *nn; i++)
		if (strcmp((*np)[i].name, name) == 0)
			return &(*np)[i];
	if (!add)
		return NULL;
	*np = xrealloc(*np, (*nn + 1) * sizeof(**np));
	memset(&(*np)[*nn], 0, sizeof(**np));
	(*np)[*nn].name = xstrdup(name);
	return &(*np)[(*nn)++];
}

/* Names from a server with LIST: every key "s.<enc NAME>.<seq>". */
static int
names_from_list(struct client *c, struct snap_name **np, size_t *nn)
{
	char **keys = NULL, name[MANIFEST_NAME_MAX + 1];
	size_t n = 0, i;
	int r;

	if ((r = client_list(c, "s.", &keys, &n)) != 0)
		return r;
	for (i = 0; i < n; i++) {
		const char *k = keys[i] + 2, *dot = strrchr(k, '.');
		struct snap_name *e;
		long long seq;

		if (dot == NULL || strlen(dot + 1) != 10 ||
		    util_parse_ll(dot + 1, 1, (long long)MANIFEST_SEQ_MAX, &seq) != 0 ||
		    name_decode(k, (size_t)(dot - k), name, sizeof(name)) != 0)
			continue;
		e = names_find(np, nn, name, 1);
		e->count++;
		if ((uint64_t)seq > e->newest)
			e->newest = (uint64_t)seq;
	}
	client_keys_free(keys, n);
	return 0;
}

/* Names the agent knows without LIST: the config's [dir]s and the state database's. */
static void
names_known(struct agent *a, struct snap_name **np, size_t *nn)
{
	char path[4096];
	const char *p = a->state_path;
	sqlite3_stmt *st = NULL;
	struct db *db = NULL;
	size_t i;

	for (i = 0; a->cfg != NULL && i < a->cfg->ndirs; i++)
		names_find(np, nn, a->cfg->dirs[i].name, 1);
	if (p == NULL && config_default_state_path(path, sizeof(path)) == 0)
		p = path;
	/* Read only what exists: listing must not create a state database. */
	if (p == NULL || access(p, F_OK) != 0 || agent_db(a, &db) != 0)
		return;
	if (sqlite3_prepare_v2(db_handle(db), "SELECT DISTINCT name FROM snapshots ORDER BY name",
	        -1, &st, NULL) != SQLITE_OK)
		return;
	while (sqlite3_step(st) == SQLITE_ROW)
		if (sqlite3_column_text(st, 0) != NULL)
			names_find(np, nn, (const char *)sqlite3_column_text(st, 0), 1);
	sqlite3_finalize(st);
}

static int
cmp_names(const void *x, const void *y)
{
	return strcmp(((const struct snap_name *)x)->name, ((const struct snap_name *)y)->name);
}

/* `snapshots` without --name. */
static int
list_names(struct agent *a, struct client *c)
{
	struct snap_name *names = NULL;
	size_t nn = 0, i;
	json_t *out = json_array();
	char when[32];
	int r, ex = AGENT_EXIT_OK;

	if (client_has_ext(c, "list")) {
		r = names_from_list(c, &names, &nn);
	} else {
		if ((r = client_connect(c)) == 0) {
			names_known(a, &names, &nn);
			for (i = 0; i < nn && r == 0; i++) {
				uint64_t *seqs = NULL;
				size_t ns = 0;

				if ((r = snapshot_list(c, names[i].name, &seqs, &ns)) == 0) {
					names[i].newest = ns > 0 ? seqs[ns - 1] : 0;
					names[i].count = ns;
				}
				free(seqs);
			}
		}
	}
	if (r != 0) {
		agent_error("cannot list the snapshots: %s", client_error(c));
		ex = agent_json_error(a, "snapshots", client_error(c), agent_client_exit(c, r));
		goto out;
	}
	if (nn > 1)
		qsort(names, nn, sizeof(*names), cmp_names);
	if (!a->json)
		printf("%-24s  %9s  %-10s  %-20s\n", "NAME", "SNAPSHOTS", "NEWEST", "TIME");
	for (i = 0; i < nn; i++) {
		struct snapshots_rec rec;

		memset(&rec, 0, sizeof(rec));
		if (names[i].count == 0)
			continue;
		r = snapshot_info_get(c, names[i].name, names[i].newest, &rec);
		if (r != 0 && r != STEP_ENOENT) {
			agent_error("cannot read snapshot %s#%" PRIu64 ": %s", names[i].name,
			    names[i].newest, client_error(c));
			ex = agent_json_error(
			    a, "snapshots", client_error(c), agent_client_exit(c, r));
			goto out;
		}
		agent_fmt_time(rec.time, when, sizeof(when));
		if (a->json) {
			json_array_append_new(out,
			    json_pack("{s:s, s:I, s:I, s:s, s:I}", "name", names[i].name,
			        "snapshots", (json_int_t)names[i].count, "newest_id",
			        (json_int_t)names[i].newest, "newest_time", when,
			        "newest_unix_time", (json_int_t)rec.time));
		} else {
			char id[32];

			snprintf(id, sizeof(id), "#%" PRIu64, names[i].newest);
			printf("%-24s  %9" PRIu64 "  %-10s  %-20s\n",
			    agent_tty_str(stdout, names[i].name), names[i].count, id, when);
		}
	}
	if (a->json)
		agent_json(a, json_incref(out));
out:
	for (i = 0; i < nn; i++)
		free(names[i].name);
	free(names);
	json_decref(out);
	return ex;
}

/* `snapshots --name NAME`, or only snapshot only_seq (0: all) of it. */
static int
list_one(struct agent *a, struct client *c, const char *name, uint64_t only_seq)
{
	struct snapshots_rec rec;
	uint64_t *seqs = NULL, seq;
	size_t ns = 0, i;
	json_t *out = json_array();
	char when[32];
	int r, ex = AGENT_EXIT_OK;

	if (only_seq != 0) {
		if ((r = snapshot_exists(c, name, only_seq)) == 0) {
			agent_error("no snapshot %s#%" PRIu64 " on the server", name, only_seq);
			ex = agent_json_error(
			    a, "snapshots", "no such snapshot", AGENT_EXIT_NOTFOUND);
			goto out;
		}
		if (r < 0) {
			agent_error("cannot read snapshot %s#%" PRIu64 ": %s", name, only_seq,
			    client_error(c));
			ex = agent_json_error(
			    a, "snapshots", client_error(c), agent_client_exit(c, r));
			goto out;
		}
		seqs = xmalloc(sizeof(*seqs));
		seqs[0] = only_seq;
		ns = 1;
	} else if ((r = snapshot_list(c, name, &seqs, &ns)) != 0) {
		agent_error("cannot list the snapshots of '%s': %s", name, client_error(c));
		ex = agent_json_error(a, "snapshots", client_error(c), agent_client_exit(c, r));
		goto out;
	}
	if (!a->json)
		printf("%-10s  %-20s  %10s  %14s\n", "ID", "TIME", "FILES", "BYTES");
	for (i = 0; i < ns; i++) {
		seq = seqs[i];
		r = snapshot_info_get(c, name, seq, &rec);
		if (r == STEP_ENOENT) {
			memset(&rec, 0, sizeof(rec));
			rec.seq = seq;
		} else if (r != 0) {
			agent_error(
			    "cannot read snapshot %s#%" PRIu64 ": %s", name, seq, client_error(c));
			ex = agent_json_error(
			    a, "snapshots", client_error(c), agent_client_exit(c, r));
			goto out;
		}
		agent_fmt_time(rec.time, when, sizeof(when));
		if (a->json)
			json_array_append_new(out,
			    json_pack("{s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I}", "name", name,
			        "id", (json_int_t)seq, "time", when, "unix_time",
			        (json_int_t)rec.time, "files", (json_int_t)rec.files, "dirs",
			        (json_int_t)rec.dirs, "symlinks", (json_int_t)rec.symlinks, "bytes",
			        (json_int_t)rec.bytes));
		else
			printf("%-10" PRIu64 "  %-20s  %10" PRIu64 "  %14" PRIu64 "\n", seq, when,
			    rec.files, rec.bytes);
	}
	if (a->json)
		agent_json(a, json_incref(out));
out:
	free(seqs);
	json_decref(out);
	return ex;
}

int
cmd_snapshots(struct agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "snapshot", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct client *c = NULL;
	const char *name = NULL, *id = NULL, *h;
	char errbuf[512], idname[MANIFEST_NAME_MAX + 1];
	uint64_t seq = 0;
	int ch, r;

	while ((ch = getopt_long(argc, argv, "n:s:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			name = optarg;
			break;
		case 's':
			id = optarg;
			break;
		case 'j':
			a->json = 1;
			break;
		case 'h':
			printf(
			    "usage: stepsync %s\n\n"
			    "Without --name: every snapshot NAME on the server with its number\n"
			    "of snapshots and its newest one (ID and time, UTC). Servers with the\n"
			    "'list' extension (stepd) are asked for all of them; on others the\n"
			    "names are the config file's [dir]s and those the state database\n"
			    "knows.\n"
			    "With --name NAME: NAME's snapshots, oldest first: ID (use with\n"
			    "restore --snapshot), time (UTC), files, bytes.\n"
			    "  -n, --name NAME      list the snapshots of NAME\n"
			    "  -s, --snapshot ID    show only snapshot ID (SEQ or NAME#SEQ; NAME#\n"
			    "                       must be --name's, and gives it when --name\n"
			    "                       is absent)\n"
			    "With --json: one JSON array (of {name, snapshots, newest_id,\n"
			    "newest_time, newest_unix_time} or of {name, id, time, unix_time,\n"
			    "files, dirs, symlinks, bytes}), [] when there is none.\n"
			    "exit status: 0 listed (an empty list too); 2 usage (an ID of another\n"
			    "  NAME too); 4 no such snapshot ID; 75 server unreachable; 76 TLS\n"
			    "  failed; 77 login refused; 78 no server, user or password; 1 other\n"
			    "  failures.\n",
			    usage);
			return AGENT_EXIT_OK;
		default:
			return agent_usage(usage);
		}
	}
	if (optind != argc)
		return agent_usage(usage);
	if (id != NULL && name == NULL && (h = strrchr(id, '#')) != NULL) {
		if ((size_t)(h - id) >= sizeof(idname) || h == id) {
			agent_error("bad snapshot id '%s' (SEQ or NAME#SEQ)", id);
			return AGENT_EXIT_USAGE;
		}
		memcpy(idname, id, (size_t)(h - id));
		idname[h - id] = '\0';
		name = idname;
	}
	if (id != NULL && name == NULL && (name = snapshot_default_name(a)) == NULL)
		return AGENT_EXIT_USAGE;
	if (id != NULL && snapshots_parse_id(name, id, &seq, errbuf, sizeof(errbuf)) != 0) {
		agent_error("%s", errbuf);
		return AGENT_EXIT_USAGE;
	}
	if ((r = agent_client(a, &c)) != 0)
		return agent_setup_exit(a, "snapshots", r);
	if (name == NULL)
		return list_names(a, c);
	return list_one(a, c, name, seq);
}
