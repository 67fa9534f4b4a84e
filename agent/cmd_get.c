/* cmd_get.c — stepsync get (placeholder). */
#include "cmd.h"

int
cmd_get(struct agent *a, int argc, char **argv)
{
	agent_error("get: not implemented yet");
	return AGENT_EXIT_FAIL;
}
