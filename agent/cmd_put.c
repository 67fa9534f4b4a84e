/*
 * cmd_put.c — `stepsync put FILE... [--key KEY] [--replace]`: upload, verify, print
 * each file's key and MD5. Several files may go over several connections.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "err.h"
#include "progress.h"
#include "util.h"

static const char put_usage[] =
    "put [--key KEY] [--replace] [--bwlimit RATE] [--connections N] [--window N] FILE...";

static void
put_help(void)
{
	printf("usage: stepsync %s\n\n"
	       "Uploads each FILE, verifies the server's MD5 and prints the key and MD5.\n"
	       "  --key KEY          key to store a single FILE under (default: its file name)\n"
	       "  --replace          delete an existing key first and upload again\n"
	       "  --bwlimit RATE     cap the transfer rate, bytes per second (e.g. 10M)\n"
	       "  --connections N    upload up to N files at once over N connections\n"
	       "An interrupted upload resumes when --state DB is given (or the server "
	       "supports it).\n",
	    put_usage);
}

/* Reports one file's outcome; returns 0 or 1. */
static int
put_report(
    struct agent *a, const char *path, int rc, const char *error, const struct client_result *res)
{
	if (rc != 0) {
		agent_error("put '%s': %s", path, error);
		agent_json(a,
		    json_pack("{s:s, s:s, s:s}", "command", "put", "file", path, "error", error));
		return 1;
	}
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:s, s:I, s:s, s:b, s:b, s:I, s:I}", "command", "put",
		        "file", path, "key", res->key, "size", (json_int_t)res->size, "md5",
		        res->md5, "resumed", res->resumed, "existed", res->existed, "blocks_sent",
		        (json_int_t)res->blocks_sent, "blocks_total",
		        (json_int_t)res->blocks_total));
	else
		printf("%s %s\n", res->key, res->md5);
	return 0;
}

enum { PO_KEY = 300, PO_REPLACE, PO_BWLIMIT, PO_CONN, PO_WINDOW, PO_BLOCK_MD5, PO_HELP };

static const struct option put_opts[] = {
	{ "key", required_argument, NULL, PO_KEY },
	{ "replace", no_argument, NULL, PO_REPLACE },
	{ "bwlimit", required_argument, NULL, PO_BWLIMIT },
	{ "connections", required_argument, NULL, PO_CONN },
	{ "window", required_argument, NULL, PO_WINDOW },
	{ "block-md5", no_argument, NULL, PO_BLOCK_MD5 }, /* hidden: costs a second MD5 pass */
	{ "help", no_argument, NULL, PO_HELP },
	{ NULL, 0, NULL, 0 },
};

int
cmd_put(struct agent *a, int argc, char **argv)
{
	struct client_opts o;
	struct client_job *jobs = NULL;
	struct client *c;
	struct progress *pg = NULL;
	const char *key = NULL;
	char errbuf[512];
	unsigned long long sz;
	long long n;
	int flags = 0, opt, failed = 0, r, i, nfiles;

	while ((opt = getopt_long(argc, argv, "h", put_opts, NULL)) != -1) {
		switch (opt) {
		case PO_KEY:
			key = optarg;
			break;
		case PO_REPLACE:
			flags |= CLIENT_PUT_REPLACE;
			break;
		case PO_BWLIMIT:
			if (util_parse_size(optarg, &sz) != 0 || sz == 0) {
				agent_error("put: bad rate '%s'", optarg);
				return AGENT_EXIT_USAGE;
			}
			a->bwlimit = sz;
			break;
		case PO_CONN:
		case PO_WINDOW:
			if (util_parse_ll(optarg, 1, opt == PO_CONN ? 64 : 1024, &n) != 0) {
				agent_error("put: bad number '%s'", optarg);
				return AGENT_EXIT_USAGE;
			}
			if (opt == PO_CONN)
				a->connections = (int)n;
			else
				a->window = (int)n;
			break;
		case PO_BLOCK_MD5:
			a->block_md5 = 1;
			break;
		case 'h':
		case PO_HELP:
			put_help();
			return AGENT_EXIT_OK;
		default:
			return agent_usage(put_usage);
		}
	}
	nfiles = argc - optind;
	if (nfiles < 1)
		return agent_usage(put_usage);
	if (key != NULL && nfiles > 1) {
		agent_error("put: --key needs exactly one FILE");
		return AGENT_EXIT_USAGE;
	}
	if (key != NULL && key[0] == '\0') {
		agent_error("put: empty key");
		return AGENT_EXIT_USAGE;
	}
	if (agent_client(a, &c) != 0)
		return AGENT_EXIT_FAIL;
	if (progress_new(a->progress, &pg) != 0) {
		agent_error("out of memory");
		return AGENT_EXIT_FAIL;
	}
	if (a->connections <= 1 || nfiles == 1) {
		if (a->progress) {
			/* The session exists already: hand it the progress line now. */
			client_set_progress(c, progress_update, pg);
		}
		for (i = optind; i < argc; i++) {
			struct client_result res;

			r = client_put_file(c, argv[i], key, flags, &res);
			failed |= put_report(a, argv[i], r, client_error(c), &res);
		}
		goto out;
	}
	if (agent_client_opts(a, &o, errbuf, sizeof(errbuf)) != 0) {
		agent_error("put: %s", errbuf);
		failed = 1;
		goto out;
	}
	if (a->progress) {
		o.progress = progress_update;
		o.progress_arg = pg;
	}
	jobs = xcalloc((size_t)nfiles, sizeof(*jobs));
	for (i = 0; i < nfiles; i++) {
		jobs[i].path = argv[optind + i];
		jobs[i].key = key;
		jobs[i].flags = flags;
	}
	client_put_many(&o, a->connections, jobs, (size_t)nfiles);
	for (i = 0; i < nfiles; i++)
		failed |= put_report(a, jobs[i].path, jobs[i].rc, jobs[i].error, &jobs[i].res);
out:
	client_set_progress(c, NULL, NULL);
	progress_free(pg);
	free(jobs);
	return failed ? AGENT_EXIT_FAIL : AGENT_EXIT_OK;
}
