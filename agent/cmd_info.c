/*
 * cmd_info.c — `stepsync info KEY`: size, blocks and MD5 of a file on the server.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "err.h"

int
cmd_info(struct agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct client_file_info info;
	struct client *c;
	const char *key;
	int r, ex;

	while ((r = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (r != 'h')
			return agent_usage("info KEY");
		printf("usage: stepsync info KEY\n\n"
		       "Shows the size, block plan and MD5 of KEY (with --json: one JSON object\n"
		       "with key, size, block_size, total_block, md5, or error).\n"
		       "exit status: 0 shown; 2 usage; 4 no such KEY (404); 75 server unreachable\n"
		       "  or connection lost; 76 TLS failed; 77 login refused; 78 no server, user\n"
		       "  or password; 1 other failures.\n");
		return AGENT_EXIT_OK;
	}
	if (argc - optind != 1)
		return agent_usage("info KEY");
	key = argv[optind];
	if ((r = agent_client(a, &c)) != 0)
		return agent_setup_exit(a, "info", r);
	if ((r = client_file_info(c, key, &info)) != 0) {
		ex = agent_client_exit(c, r);
		agent_error("info '%s': %s", key, client_error(c));
		agent_json(a,
		    json_pack("{s:s, s:s, s:s, s:i}", "command", "info", "key", key, "error",
		        client_error(c), "exit_status", ex));
		return ex;
	}
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "command", "info", "key", key,
		        "size", (json_int_t)info.size, "block_size", (json_int_t)info.block_size,
		        "total_block", (json_int_t)info.total_block, "md5", info.md5));
	else
		printf("key: %s\nsize: %llu\nblocks: %u x %u bytes\nmd5: %s\n",
		    agent_tty_str(stdout, key), (unsigned long long)info.size, info.total_block,
		    info.block_size, info.md5);
	return AGENT_EXIT_OK;
}
