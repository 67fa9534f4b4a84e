/*
 * cmd_sync.c — `stepsync sync`: parses the command line, runs the sync engine (sync.h)
 * on each tree and prints its summary.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "cmd_sync.h"
#include "config.h"
#include "err.h"
#include "lock.h"
#include "manifest.h"
#include "progress.h"
#include "snapshot.h"
#include "sync.h"

static const char sync_usage[] =
    "sync [--name NAME] [--dry-run] [--allow-mass-delete] [--skip-unchanged] [DIR]\n"
    "\n"
    "Backs up DIR (or, without DIR, every [dir] of the config file, or the one\n"
    "named by --name) and records a snapshot NAME#SEQ on the server. NAME defaults\n"
    "to DIR's base name. Only new or changed content is sent; renamed and copied\n"
    "files are never sent again.\n"
    "\n"
    "  --name NAME          snapshot name (also selects a [dir \"NAME\"] section)\n"
    "  --dry-run            list what would be sent; send and record nothing\n"
    "  --allow-mass-delete  record a snapshot even when most known files vanished\n"
    "  --skip-unchanged     record no new snapshot when the tree is exactly the\n"
    "                       latest snapshot (and that is still the latest on the\n"
    "                       server): the summary says \"unchanged\" and names it\n"
    "\n"
    "exit status: 0 every file of the snapshot is verified on the server;\n"
    "  1 some files could not be sent, no snapshot recorded (summary on stderr);\n"
    "  2 usage; 3 snapshot recorded but incomplete: files that could not be read\n"
    "  were left out, files that kept changing kept their previous version (listed\n"
    "  on stderr);\n"
    "  65 most of the tree vanished, no snapshot (see --allow-mass-delete);\n"
    "  75 temporary: server unreachable, connection lost, or another run holds the lock;\n"
    "  76 TLS failed (certificate not trusted, wrong host name, not a TLS server);\n"
    "  77 the server refused the login; 78 bad or missing configuration";

/* The run's summary: a line unless -q, one JSON result with --json. */
void
cmd_sync_report(struct agent *a, const char *name, const struct sync_result *r)
{
	if (a->verbose >= 0) {
		char also[64] = "";

		if (r->existed > 0)
			snprintf(
			    also, sizeof(also), ", %" PRIu64 " already on the server", r->existed);
		printf("snapshot %s#%" PRIu64 "%s: %" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64
		       " %s, %" PRIu64 " bytes; sent %" PRIu64 " %s (%" PRIu64 " bytes)%s\n",
		    name, r->seq, r->unchanged ? " unchanged (no new snapshot recorded)" : "",
		    r->files, agent_plural(r->files, "file", "files"), r->dirs,
		    agent_plural(r->dirs, "dir", "dirs"), r->symlinks,
		    agent_plural(r->symlinks, "symlink", "symlinks"), r->bytes, r->sent_files,
		    agent_plural(r->sent_files, "file", "files"), r->sent_bytes, also);
	}
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
		              "s:I, s:I, s:I, s:I, s:I}",
		        "command", "sync", "name", name, "seq", (json_int_t)r->seq, "unchanged",
		        r->unchanged, "files", (json_int_t)r->files, "dirs", (json_int_t)r->dirs,
		        "symlinks", (json_int_t)r->symlinks, "bytes", (json_int_t)r->bytes,
		        "sent_files", (json_int_t)r->sent_files, "sent_bytes",
		        (json_int_t)r->sent_bytes, "read_errors", (json_int_t)r->read_errors,
		        "existed", (json_int_t)r->existed, "blocks_sent",
		        (json_int_t)r->blocks_sent, "chunks_sent", (json_int_t)r->chunks_sent,
		        "trees_sent", (json_int_t)r->trees_sent, "tree_bytes_sent",
		        (json_int_t)r->tree_bytes_sent, "dirs_scanned", (json_int_t)r->dirs_scanned,
		        "files_hashed", (json_int_t)r->files_hashed));
}

/* A dry run's summary. */
static void
dry_report(struct agent *a, const char *name, const struct sync_result *r)
{
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "command", "sync",
		        "name", name, "dry_run", 1, "would_send_files", (json_int_t)r->pending,
		        "would_send_bytes", (json_int_t)r->pending_bytes, "would_send_chunks",
		        (json_int_t)r->chunks_new, "would_send_chunk_bytes",
		        (json_int_t)r->chunk_bytes_new, "would_send_trees",
		        (json_int_t)r->trees_new, "gone", (json_int_t)r->gone));
	printf("dry run '%s': %" PRIu64 " files (%" PRIu64 " bytes) would be sent, "
	       "and %" PRIu64 " chunks of large files (%" PRIu64 " bytes) and %" PRIu64
	       " directory trees; %" PRIu64 " known files are gone; nothing was sent\n",
	    name, r->pending, r->pending_bytes, r->chunks_new, r->chunk_bytes_new, r->trees_new,
	    r->gone);
}

/* The progress line on a terminal: entries scanned, bytes sent, rate, ETA. While the
 * scan goes on the count of files is not final: the line stays open. */
static void
on_progress(void *arg, const struct sync_progress *p)
{
	progress_run(arg, p->files_done, p->files_total + (p->scanning ? 1 : 0), p->bytes_done,
	    p->bytes_total);
}

/* One tree, one snapshot: the engine's run, then its summary. */
static int
sync_one(struct agent *a, const char *name, const char *root, char *const *exclude, size_t nexclude,
    int dry_run, int allow_mass_delete, int skip_unchanged)
{
	struct sync_opts o;
	struct sync_result res;
	struct progress *pg = NULL;
	int ex;

	memset(&o, 0, sizeof(o));
	o.a = a;
	o.name = name;
	o.root = root;
	o.exclude = exclude;
	o.nexclude = nexclude;
	o.dry_run = dry_run;
	o.allow_mass_delete = allow_mass_delete;
	o.skip_unchanged = skip_unchanged;
	if (!dry_run && a->progress && progress_new(1, &pg) == 0) {
		o.progress = on_progress;
		o.progress_arg = pg;
	}
	ex = sync_run(&o, NULL, &res);
	progress_free(pg);
	if (dry_run && res.dry_listed)
		dry_report(a, name, &res);
	else if (!dry_run && res.seq != 0 && (ex == AGENT_EXIT_OK || ex == SYNC_EXIT_INCOMPLETE))
		cmd_sync_report(a, name, &res);
	return ex;
}

/* Valid NAME: printable, at most MANIFEST_NAME_MAX bytes. */
static int
name_ok(const char *name)
{
	char enc[4 * MANIFEST_NAME_MAX];
	const unsigned char *p;

	for (p = (const unsigned char *)name; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return manifest_name_encode(name, enc, sizeof(enc)) == 0;
}

/* Every [dir] of the config file (only NAME's when name is not NULL), one snapshot each:
 * the first failure's exit status, going on after one tree's failure but not after the
 * server's. */
static int
sync_config_dirs(struct agent *a, const char *name, int dry, int mass, int skip)
{
	const struct config_dir *cd;
	size_t i;
	int r, ex = AGENT_EXIT_OK;

	for (i = 0; i < a->cfg->ndirs; i++) {
		cd = &a->cfg->dirs[i];
		if (name != NULL && strcmp(name, cd->name) != 0)
			continue;
		if (!name_ok(cd->name)) {
			agent_error("%s: bad snapshot name '%s'", a->cfg->file, cd->name);
			ex = ex ? ex : SYNC_EXIT_CONFIG;
			continue;
		}
		r = sync_one(a, cd->name, cd->path, cd->exclude, cd->nexclude, dry, mass, skip);
		if (r != 0 && (ex == 0 || ex == AGENT_EXIT_FAIL))
			ex = r;
		if (r == SYNC_EXIT_TEMPFAIL || r == SYNC_EXIT_NOPERM || r == SYNC_EXIT_TLS)
			break; /* the next directory would meet the same server */
	}
	return ex;
}

int
sync_take_lock(struct agent *a, int *fdp)
{
	char sp[4096];
	pid_t holder = 0;
	int r;

	if (sync_state_path(a, sp, sizeof(sp)) != 0) {
		agent_error("no state database path (set --state or HOME)");
		return SYNC_EXIT_CONFIG;
	}
	r = lock_acquire(sp, fdp, &holder);
	if (r == STEP_EBUSY) {
		if (holder > 0)
			agent_error("another sync (pid %ld) is using '%s'; try again later",
			    (long)holder, sp);
		else
			agent_error("another sync is using '%s'; try again later", sp);
		return SYNC_EXIT_TEMPFAIL;
	}
	if (r != 0) {
		agent_error("cannot lock '%s.lock': %s", sp, strerror(errno));
		return SYNC_EXIT_CONFIG;
	}
	return 0;
}

int
cmd_sync(struct agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "dry-run", no_argument, NULL, 'd' },
		{ "allow-mass-delete", no_argument, NULL, 'm' },
		{ "skip-unchanged", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *name = NULL;
	const struct config_dir *cd;
	char root[PATH_MAX], base[PATH_MAX];
	int c, dry = 0, mass = 0, skip = 0, lockfd = -1, ex = AGENT_EXIT_OK, r;

	while ((c = getopt_long(argc, argv, "+n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			name = optarg;
			break;
		case 'd':
			dry = 1;
			break;
		case 'm':
			mass = 1;
			break;
		case 's':
			skip = 1;
			break;
		case 'h':
			printf("usage: stepsync %s\n", sync_usage);
			return AGENT_EXIT_OK;
		default:
			return agent_usage("sync [--name NAME] [--dry-run] [--allow-mass-delete] "
			                   "[--skip-unchanged] [DIR]");
		}
	}
	if (argc - optind > 1)
		return agent_usage("sync [--name NAME] [--dry-run] [--allow-mass-delete] "
		                   "[--skip-unchanged] [DIR]");
	if (name != NULL && !name_ok(name)) {
		agent_error(
		    "bad snapshot name '%s' (1 to %d printable bytes)", name, MANIFEST_NAME_MAX);
		return AGENT_EXIT_USAGE;
	}
	if (argc - optind == 0 && (a->cfg == NULL || a->cfg->ndirs == 0)) {
		agent_error("no directory given and no [dir] in the config file");
		return SYNC_EXIT_CONFIG;
	}
	if (argc - optind == 0 && name != NULL && config_find_dir(a->cfg, name) == NULL) {
		agent_error("no [dir \"%s\"] in the config file", name);
		return SYNC_EXIT_CONFIG;
	}
	if (!dry && (r = sync_take_lock(a, &lockfd)) != 0)
		return r;
	if (argc - optind == 1) {
		if (realpath(argv[optind], root) == NULL) {
			agent_error("cannot open '%s': %s", argv[optind], strerror(errno));
			ex = AGENT_EXIT_FAIL;
			goto out;
		}
		if (name == NULL) {
			snprintf(base, sizeof(base), "%s", root);
			name = basename(base);
			if (!name_ok(name)) {
				agent_error(
				    "cannot use '%s' as a snapshot name; give --name", name);
				ex = AGENT_EXIT_USAGE;
				goto out;
			}
		}
		cd = config_find_dir(a->cfg, name);
		ex = sync_one(
		    a, name, root, cd ? cd->exclude : NULL, cd ? cd->nexclude : 0, dry, mass, skip);
		goto out;
	}
	ex = sync_config_dirs(a, name, dry, mass, skip);
out:
	lock_release(lockfd);
	return ex;
}
