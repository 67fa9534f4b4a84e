/*
 * cmd_watch.h — entry points of `stepsync watch` and `stepsync status` (see cmd.h for
 * the command conventions: argv[0] is the command name, the result is AGENT_EXIT_*).
 */
#ifndef STEP_CMD_WATCH_H
#define STEP_CMD_WATCH_H

struct agent;

/* Watches directories and syncs each settled batch of changes; runs until SIGTERM. */
int cmd_watch(struct agent *a, int argc, char **argv);

/* Prints the queue length, last snapshot, last success and last error from the state. */
int cmd_status(struct agent *a, int argc, char **argv);

#endif
