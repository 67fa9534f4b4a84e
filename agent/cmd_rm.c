/* cmd_rm.c — stepsync rm (placeholder). */
#include "cmd.h"

int
cmd_rm(struct agent *a, int argc, char **argv)
{
	agent_error("rm: not implemented yet");
	return AGENT_EXIT_FAIL;
}
