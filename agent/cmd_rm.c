/*
 * cmd_rm.c — `stepsync rm KEY...`: delete files on the server.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "err.h"

static const char rm_usage[] = "rm KEY...";

int
cmd_rm(struct agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct client *c;
	json_t *out = NULL;
	int i, r, ex, first = 0, nkeys;

	while ((r = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (r != 'h')
			return agent_usage(rm_usage);
		printf("usage: stepsync %s\n\n"
		       "Deletes each KEY on the server (an unfinished upload's temporary data\n"
		       "too). A KEY that starts with '-' goes after '--'.\n"
		       "With --json: one JSON object (key, deleted, or error), or an array of\n"
		       "them for several KEYs.\n"
		       "exit status: 0 all deleted; 2 usage; 4 no such KEY (404); 75 server\n"
		       "  unreachable or connection lost; 76 TLS failed; 77 login refused; 78 no\n"
		       "  server, user or password; 1 other failures. With several KEYs, every\n"
		       "  one is tried and the status is the first failure's.\n",
		    rm_usage);
		return AGENT_EXIT_OK;
	}
	nkeys = argc - optind;
	if (nkeys < 1)
		return agent_usage(rm_usage);
	if ((r = agent_client(a, &c)) != 0)
		return agent_setup_exit(a, "rm", r);
	out = json_array();
	for (i = optind; i < argc; i++) {
		if ((r = client_file_delete(c, argv[i])) != 0) {
			ex = agent_client_exit(c, r);
			agent_error("rm '%s': %s", argv[i], client_error(c));
			json_array_append_new(out,
			    json_pack("{s:s, s:s, s:s, s:i}", "command", "rm", "key", argv[i],
			        "error", client_error(c), "exit_status", ex));
			first = first ? first : ex;
			continue;
		}
		json_array_append_new(out,
		    json_pack("{s:s, s:s, s:b}", "command", "rm", "key", argv[i], "deleted", 1));
	}
	if (a->json)
		agent_json(a, nkeys == 1 ? json_incref(json_array_get(out, 0)) : json_incref(out));
	json_decref(out);
	return first;
}
