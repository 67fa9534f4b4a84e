/*
 * cmd_rm.c — `stepsync rm KEY...`: delete files on the server.
 */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "err.h"

int
cmd_rm(struct agent *a, int argc, char **argv)
{
	struct client *c;
	int i, failed = 0;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("usage: stepsync rm KEY...\n\nDeletes each KEY on the server (an "
		       "unfinished upload's temporary data too).\n");
		return AGENT_EXIT_OK;
	}
	if (argc < 2 || argv[1][0] == '-')
		return agent_usage("rm KEY...");
	if (agent_client(a, &c) != 0)
		return AGENT_EXIT_FAIL;
	for (i = 1; i < argc; i++) {
		if (client_file_delete(c, argv[i]) != 0) {
			agent_error("rm '%s': %s", argv[i], client_error(c));
			agent_json(a,
			    json_pack("{s:s, s:s, s:s}", "command", "rm", "key", argv[i], "error",
			        client_error(c)));
			failed = 1;
			continue;
		}
		agent_json(
		    a, json_pack("{s:s, s:s, s:b}", "command", "rm", "key", argv[i], "deleted", 1));
	}
	return failed ? AGENT_EXIT_FAIL : AGENT_EXIT_OK;
}
