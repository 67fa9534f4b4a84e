/*
 * cmd_get.c — `stepsync get KEY [-o FILE]`: download, verify the MD5, rename into
 * place; never a partial file under the final name.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd.h"
#include "err.h"
#include "progress.h"
#include "util.h"

static const char get_usage[] = "get [-o FILE] [--bwlimit RATE] KEY";

enum { GO_BWLIMIT = 300, GO_WINDOW, GO_HELP };

static const struct option get_opts[] = {
	{ "output", required_argument, NULL, 'o' },
	{ "bwlimit", required_argument, NULL, GO_BWLIMIT },
	{ "window", required_argument, NULL, GO_WINDOW }, /* hidden: requests in flight */
	{ "help", no_argument, NULL, GO_HELP },
	{ NULL, 0, NULL, 0 },
};

int
cmd_get(struct agent *a, int argc, char **argv)
{
	struct client_result res;
	struct client *c;
	struct progress *pg = NULL;
	const char *out = NULL, *key, *slash;
	unsigned long long sz;
	long long n;
	mode_t um;
	int opt, r;

	while ((opt = getopt_long(argc, argv, "ho:", get_opts, NULL)) != -1) {
		switch (opt) {
		case 'o':
			out = optarg;
			break;
		case GO_BWLIMIT:
			if (util_parse_size(optarg, &sz) != 0 || sz == 0) {
				agent_error("get: bad rate '%s'", optarg);
				return AGENT_EXIT_USAGE;
			}
			a->bwlimit = sz;
			break;
		case GO_WINDOW:
			if (util_parse_ll(optarg, 1, 1024, &n) != 0) {
				agent_error("get: bad number '%s'", optarg);
				return AGENT_EXIT_USAGE;
			}
			a->window = (int)n;
			break;
		case 'h':
		case GO_HELP:
			printf("usage: stepsync %s\n\n"
			       "Downloads KEY into FILE, verifying the server's MD5. The data goes "
			       "to a\n"
			       "temporary file next to FILE, renamed into place once verified: a "
			       "failed\n"
			       "download never leaves a partial FILE. Prints FILE and the MD5.\n"
			       "  -o, --output FILE  where to write (default: the key's last path\n"
			       "                     component, in the current directory)\n"
			       "  --bwlimit RATE     cap the transfer rate, bytes per second, e.g. "
			       "500k,\n"
			       "                     10M (default: unlimited)\n"
			       "With --json: one JSON object (key, file, size, md5, or error).\n"
			       "exit status: 0 downloaded; 2 usage; 4 no such KEY (404); 6 MD5\n"
			       "  mismatch; 74 FILE cannot be written; 75 server unreachable or\n"
			       "  connection lost; 76 TLS failed; 77 login refused; 78 no server, "
			       "user\n"
			       "  or password; 1 other failures.\n",
			    get_usage);
			return AGENT_EXIT_OK;
		default:
			return agent_usage(get_usage);
		}
	}
	if (argc - optind != 1)
		return agent_usage(get_usage);
	key = argv[optind];
	if (out == NULL) {
		slash = strrchr(key, '/');
		out = slash ? slash + 1 : key;
		if (out[0] == '\0' || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
			agent_error("get '%s': cannot derive a file name; use -o FILE", key);
			return AGENT_EXIT_USAGE;
		}
	}
	if ((r = agent_client(a, &c)) != 0)
		return agent_setup_exit(a, "get", r);
	if (progress_new(a->progress, &pg) != 0)
		return AGENT_EXIT_FAIL;
	if (a->progress)
		client_set_progress(c, progress_update, pg);
	um = umask(0);
	umask(um);
	r = client_get_file(c, key, out, 0666 & ~(int)um, &res);
	client_set_progress(c, NULL, NULL);
	progress_free(pg);
	if (r != 0) {
		int ex = agent_client_exit(c, r);

		agent_error("get '%s': %s", key, client_error(c));
		agent_json(a,
		    json_pack("{s:s, s:s, s:s, s:i}", "command", "get", "key", key, "error",
		        client_error(c), "exit_status", ex));
		return ex;
	}
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:s, s:I, s:s}", "command", "get", "key", key, "file",
		        out, "size", (json_int_t)res.size, "md5", res.md5));
	else
		printf("%s %s\n", agent_tty_str(stdout, out), res.md5);
	return AGENT_EXIT_OK;
}
