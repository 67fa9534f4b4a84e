/*
 * cmd_ping.c — `stepsync ping`: log in and send an EARTH echo; print the round trip.
 */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "err.h"

int
cmd_ping(struct agent *a, int argc, char **argv)
{
	struct client *c;
	double rtt;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("usage: stepsync ping\n\nLogs in, sends an EARTH echo and prints the "
		       "round-trip time.\n");
		return AGENT_EXIT_OK;
	}
	if (argc != 1)
		return agent_usage("ping");
	if (agent_client(a, &c) != 0)
		return AGENT_EXIT_FAIL;
	if (client_ping(c, &rtt) != 0) {
		agent_error("ping %s:%d: %s", a->host, a->port, client_error(c));
		agent_json(a, json_pack("{s:s, s:s}", "command", "ping", "error", client_error(c)));
		return AGENT_EXIT_FAIL;
	}
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:i, s:s, s:f}", "command", "ping", "host", a->host,
		        "port", a->port, "server", client_server_name(c), "rtt_ms", rtt * 1000));
	else
		printf("echo from %s:%d%s%s%s: time=%.3f ms\n", a->host, a->port,
		    client_server_name(c)[0] ? " (" : "", client_server_name(c),
		    client_server_name(c)[0] ? ")" : "", rtt * 1000);
	return AGENT_EXIT_OK;
}
