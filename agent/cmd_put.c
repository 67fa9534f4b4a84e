/*
 * cmd_put.c — `stepsync put FILE... [--key KEY] [--replace]`: upload, verify, print
 * each file's key and MD5. Several files may go over several connections.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd.h"
#include "err.h"
#include "progress.h"
#include "util.h"

static const char put_usage[] =
    "put [--key KEY] [--replace] [--bwlimit RATE] [--connections N] FILE...";

static void
put_help(void)
{
	printf("usage: stepsync %s\n\n"
	       "Uploads each FILE (a regular file), verifies the server's MD5 and prints the\n"
	       "key and MD5.\n"
	       "  --key KEY          key to store a single FILE under (default: its file name)\n"
	       "  --replace          replace an existing KEY, which keeps its old content until\n"
	       "                     the new one is verified: on stepd (extension replace) the\n"
	       "                     swap is atomic and a failed upload leaves the old object;\n"
	       "                     on other servers FILE goes to a temporary key KEY.stepsync-\n"
	       "                     new-XXXX first (verified), then KEY is deleted and uploaded\n"
	       "                     again: between the two KEY holds nothing (readers get 404),\n"
	       "                     and a failure there leaves the new content only under the\n"
	       "                     temporary key, which the error names (default: refuse an\n"
	       "                     existing KEY, exit 5)\n"
	       "  --bwlimit RATE     cap the transfer rate, bytes per second, e.g. 500k, 10M\n"
	       "                     (default: unlimited)\n"
	       "  --connections N    upload up to N files at once over N connections\n"
	       "                     (1..64, default 1)\n"
	       "An interrupted upload resumes when --state DB is given (or the server\n"
	       "supports it). To stepd, put declares FILE's MD5 (extension save_md5): the\n"
	       "server commits those bytes or nothing, and while another client uploads other\n"
	       "content to KEY, put stops with exit status 5 instead of mixing the two (an\n"
	       "interrupted upload of your own blocks KEY for 60 s, or until 'stepsync rm KEY').\n"
	       "With --json: one JSON object, or an array of them for several\n"
	       "FILEs, each with file, key, size, md5 or error.\n"
	       "exit status: 0 all uploaded; 2 usage; 5 the key exists (402) or another upload\n"
	       "  of it is in progress (423); 6 MD5 mismatch or FILE changed while read; 74 FILE\n"
	       "  cannot be read or is not a regular file (a FIFO, a directory...); 75 server "
	       "unreachable or connection lost; 76 TLS failed;\n"
	       "  77 login refused; 78 no server, user or password; 1 other failures.\n"
	       "  With several FILEs, every one is tried and the status is the first failure's.\n",
	    put_usage);
}

/*
 * Only regular files are uploaded: opening a FIFO would wait for a writer forever, and a
 * device or a directory has no size to plan blocks with. 0, or AGENT_EXIT_LOCAL with why.
 */
static int
put_check(const char *path, char *why, size_t whylen)
{
	struct stat st;

	if (stat(path, &st) != 0) {
		snprintf(why, whylen, "cannot open: %s", strerror(errno));
		return AGENT_EXIT_LOCAL;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "not a regular file (%s); only regular files are uploaded",
		    S_ISDIR(st.st_mode)        ? "a directory"
		        : S_ISFIFO(st.st_mode) ? "a FIFO"
		        : S_ISSOCK(st.st_mode) ? "a socket"
		        : S_ISCHR(st.st_mode)  ? "a character device"
		        : S_ISBLK(st.st_mode)  ? "a block device"
		                               : "not a file");
		return AGENT_EXIT_LOCAL;
	}
	return 0;
}

/* Reports one file's outcome (the JSON object goes into out); returns its exit status. */
static int
put_report(struct agent *a, json_t *out, const char *path, int ex, const char *error,
    const struct client_result *res)
{
	if (ex != 0) {
		agent_error("put '%s': %s", path, error);
		json_array_append_new(out,
		    json_pack("{s:s, s:s, s:s, s:i}", "command", "put", "file", path, "error",
		        error, "exit_status", ex));
		return ex;
	}
	if (a->json)
		json_array_append_new(out,
		    json_pack("{s:s, s:s, s:s, s:I, s:s, s:b, s:b, s:I, s:I}", "command", "put",
		        "file", path, "key", res->key, "size", (json_int_t)res->size, "md5",
		        res->md5, "resumed", res->resumed, "existed", res->existed, "blocks_sent",
		        (json_int_t)res->blocks_sent, "blocks_total",
		        (json_int_t)res->blocks_total));
	else
		printf("%s %s\n", agent_tty_str(stdout, res->key), res->md5);
	return 0;
}

enum { PO_KEY = 300, PO_REPLACE, PO_BWLIMIT, PO_CONN, PO_WINDOW, PO_BLOCK_MD5, PO_HELP };

static const struct option put_opts[] = {
	{ "key", required_argument, NULL, PO_KEY },
	{ "replace", no_argument, NULL, PO_REPLACE },
	{ "bwlimit", required_argument, NULL, PO_BWLIMIT },
	{ "connections", required_argument, NULL, PO_CONN },
	{ "window", required_argument, NULL, PO_WINDOW }, /* hidden: requests in flight */
	{ "block-md5", no_argument, NULL, PO_BLOCK_MD5 }, /* hidden: costs a second MD5 pass */
	{ "help", no_argument, NULL, PO_HELP },
	{ NULL, 0, NULL, 0 },
};

static int
put_parse(struct agent *a, int argc, char **argv, const char **keyp, int *flagsp)
{
	unsigned long long sz;
	long long n;
	int opt;

	while ((opt = getopt_long(argc, argv, "h", put_opts, NULL)) != -1) {
		switch (opt) {
		case PO_KEY:
			*keyp = optarg;
			break;
		case PO_REPLACE:
			*flagsp |= CLIENT_PUT_REPLACE | CLIENT_PUT_ATOMIC;
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
			return -1;
		default:
			return agent_usage(put_usage);
		}
	}
	if (argc - optind < 1)
		return agent_usage(put_usage);
	if (*keyp != NULL && argc - optind > 1) {
		agent_error("put: --key needs exactly one FILE");
		return AGENT_EXIT_USAGE;
	}
	if (*keyp != NULL && (*keyp)[0] == '\0') {
		agent_error("put: empty key");
		return AGENT_EXIT_USAGE;
	}
	return 0;
}

int
cmd_put(struct agent *a, int argc, char **argv)
{
	struct client_opts o;
	struct client_job *jobs = NULL;
	struct client *c;
	struct progress *pg = NULL;
	json_t *out = NULL;
	const char *key = NULL;
	char errbuf[512], (*why)[256] = NULL;
	int flags = 0, first = 0, r, i, nfiles, njobs = 0, *ex = NULL, *job_of = NULL;

	if ((r = put_parse(a, argc, argv, &key, &flags)) != 0)
		return r < 0 ? AGENT_EXIT_OK : r;
	nfiles = argc - optind;
	why = xcalloc((size_t)nfiles, sizeof(*why));
	ex = xcalloc((size_t)nfiles, sizeof(*ex));
	job_of = xcalloc((size_t)nfiles, sizeof(*job_of));
	out = json_array();
	for (i = 0; i < nfiles; i++)
		ex[i] = put_check(argv[optind + i], why[i], sizeof(why[i]));
	if ((r = agent_client(a, &c)) != 0) {
		first = agent_setup_exit(a, "put", r);
		goto out;
	}
	if (progress_new(a->progress, &pg) != 0) {
		agent_error("out of memory");
		first = AGENT_EXIT_FAIL;
		goto out;
	}
	if (a->connections <= 1 || nfiles == 1) {
		if (a->progress) {
			/* The session exists already: hand it the progress line now. */
			client_set_progress(c, progress_update, pg);
		}
		for (i = 0; i < nfiles; i++) {
			struct client_result res;

			memset(&res, 0, sizeof(res));
			if (ex[i] == 0 &&
			    (r = client_put_file(c, argv[optind + i], key, flags, &res)) != 0) {
				ex[i] = agent_client_exit(c, r);
				snprintf(why[i], sizeof(why[i]), "%s", client_error(c));
			}
			r = put_report(a, out, argv[optind + i], ex[i], why[i], &res);
			first = first ? first : r;
		}
		goto out;
	}
	if (agent_client_opts(a, &o, errbuf, sizeof(errbuf)) != 0) {
		agent_error("put: %s", errbuf);
		first = AGENT_EXIT_CONFIG;
		goto out;
	}
	if (a->progress) {
		o.progress = progress_update;
		o.progress_arg = pg;
	}
	jobs = xcalloc((size_t)nfiles, sizeof(*jobs));
	for (i = 0; i < nfiles; i++) {
		if (ex[i] != 0)
			continue;
		job_of[i] = njobs;
		jobs[njobs].path = argv[optind + i];
		jobs[njobs].key = key;
		jobs[njobs].flags = flags;
		njobs++;
	}
	if (njobs > 0)
		client_put_many(&o, a->connections, jobs, (size_t)njobs);
	for (i = 0; i < nfiles; i++) {
		struct client_job *j = &jobs[job_of[i]];

		if (ex[i] == 0 && j->rc != 0) {
			ex[i] = agent_exit_code(j->rc, j->status, j->error);
			snprintf(why[i], sizeof(why[i]), "%s", j->error);
		}
		r = put_report(a, out, argv[optind + i], ex[i], why[i], &j->res);
		first = first ? first : r;
	}
out:
	if (a->client != NULL)
		client_set_progress(a->client, NULL, NULL);
	progress_free(pg);
	free(jobs);
	free(why);
	free(ex);
	free(job_of);
	if (a->json && json_array_size(out) > 0)
		agent_json(a, nfiles == 1 ? json_incref(json_array_get(out, 0)) : json_incref(out));
	json_decref(out);
	return first;
}
