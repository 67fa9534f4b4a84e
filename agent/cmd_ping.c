/*
 * cmd_ping.c — `stepsync ping`: log in and send an EARTH echo; print the round trip.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "err.h"

int
cmd_ping(struct agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct client *c;
	double rtt;
	int r, ex;

	while ((r = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (r != 'h')
			return agent_usage("ping");
		printf("usage: stepsync ping\n\n"
		       "Logs in, sends an EARTH echo and prints the round-trip time (with --json:\n"
		       "one JSON object with host, port, server, rtt_ms, or error).\n"
		       "exit status: 0 the server answered; 2 usage; 75 server unreachable or\n"
		       "  connection lost; 76 TLS failed; 77 login refused; 78 no server, user or\n"
		       "  password; 1 other failures.\n");
		return AGENT_EXIT_OK;
	}
	if (argc != optind)
		return agent_usage("ping");
	if ((r = agent_client(a, &c)) != 0)
		return agent_setup_exit(a, "ping", r);
	if ((r = client_ping(c, &rtt)) != 0) {
		ex = agent_client_exit(c, r);
		agent_error("ping %s:%d: %s", a->host, a->port, client_error(c));
		agent_json(a,
		    json_pack("{s:s, s:s, s:i, s:s, s:i}", "command", "ping", "host", a->host,
		        "port", a->port, "error", client_error(c), "exit_status", ex));
		return ex;
	}
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:i, s:s, s:f}", "command", "ping", "host", a->host,
		        "port", a->port, "server", client_server_name(c), "rtt_ms", rtt * 1000));
	else
		printf("echo from %s:%d%s%s%s: time=%.3f ms\n", a->host, a->port,
		    client_server_name(c)[0] ? " (" : "",
		    agent_tty_str(stdout, client_server_name(c)),
		    client_server_name(c)[0] ? ")" : "", rtt * 1000);
	return AGENT_EXIT_OK;
}
