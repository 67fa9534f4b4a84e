/* cmd_data.c — stepsync data (placeholder). */
#include "cmd.h"

int
cmd_data(struct agent *a, int argc, char **argv)
{
	agent_error("data: not implemented yet");
	return AGENT_EXIT_FAIL;
}
