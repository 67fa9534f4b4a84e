/* cmd_ping.c — stepsync ping (placeholder). */
#include "cmd.h"

int
cmd_ping(struct agent *a, int argc, char **argv)
{
	agent_error("ping: not implemented yet");
	return AGENT_EXIT_FAIL;
}
