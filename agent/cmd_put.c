/* cmd_put.c — stepsync put (placeholder). */
#include "cmd.h"

int
cmd_put(struct agent *a, int argc, char **argv)
{
	agent_error("put: not implemented yet");
	return AGENT_EXIT_FAIL;
}
