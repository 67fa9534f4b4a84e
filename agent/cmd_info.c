/* cmd_info.c — stepsync info (placeholder). */
#include "cmd.h"

int
cmd_info(struct agent *a, int argc, char **argv)
{
	agent_error("info: not implemented yet");
	return AGENT_EXIT_FAIL;
}
