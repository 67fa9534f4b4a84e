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

static const char get_usage[] = "get [-o FILE] [--bwlimit RATE] [--window N] KEY";

enum { GO_BWLIMIT = 300, GO_WINDOW, GO_HELP };

static const struct option get_opts[] = {
	{ "output", required_argument, NULL, 'o' },
	{ "bwlimit", required_argument, NULL, GO_BWLIMIT },
	{ "window", required_argument, NULL, GO_WINDOW },
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
			printf("usage: stepsync %s\n\nDownloads KEY into FILE (default: the key's "
			       "last path component),\nverifying the server's MD5. A failed "
			       "download never leaves a partial FILE.\n",
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
	if (agent_client(a, &c) != 0)
		return AGENT_EXIT_FAIL;
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
		agent_error("get '%s': %s", key, client_error(c));
		agent_json(a,
		    json_pack(
		        "{s:s, s:s, s:s}", "command", "get", "key", key, "error", client_error(c)));
		return AGENT_EXIT_FAIL;
	}
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:s, s:I, s:s}", "command", "get", "key", key, "file",
		        out, "size", (json_int_t)res.size, "md5", res.md5));
	else
		printf("%s %s\n", out, res.md5);
	return AGENT_EXIT_OK;
}
