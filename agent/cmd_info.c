/*
 * cmd_info.c — `stepsync info KEY`: size, blocks and MD5 of a file on the server.
 */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "err.h"

int
cmd_info(struct agent *a, int argc, char **argv)
{
	struct client_file_info info;
	struct client *c;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("usage: stepsync info KEY\n\nShows the size, block plan and MD5 of KEY.\n");
		return AGENT_EXIT_OK;
	}
	if (argc != 2 || argv[1][0] == '-')
		return agent_usage("info KEY");
	if (agent_client(a, &c) != 0)
		return AGENT_EXIT_FAIL;
	if (client_file_info(c, argv[1], &info) != 0) {
		agent_error("info '%s': %s", argv[1], client_error(c));
		agent_json(a,
		    json_pack("{s:s, s:s, s:s}", "command", "info", "key", argv[1], "error",
		        client_error(c)));
		return AGENT_EXIT_FAIL;
	}
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "command", "info", "key", argv[1],
		        "size", (json_int_t)info.size, "block_size", (json_int_t)info.block_size,
		        "total_block", (json_int_t)info.total_block, "md5", info.md5));
	else
		printf("key: %s\nsize: %llu\nblocks: %u x %u bytes\nmd5: %s\n", argv[1],
		    (unsigned long long)info.size, info.total_block, info.block_size, info.md5);
	return AGENT_EXIT_OK;
}
