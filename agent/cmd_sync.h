/*
 * cmd_sync.h — what `stepsync sync` shares with `stepsync watch`: the summary of one run.
 */
#ifndef STEP_CMD_SYNC_H
#define STEP_CMD_SYNC_H

struct agent;
struct sync_result;

/* The run's summary on stdout: a line unless -q, one JSON result with --json. */
/* Takes the state's lock that every sync (and prune) takes: 0, or the exit status after
 * a message (75 when another process holds it, 78 when there is no state path). */
int sync_take_lock(struct agent *a, int *fdp);

void cmd_sync_report(struct agent *a, const char *name, const struct sync_result *r);

#endif
