/*
 * watch_sync.c — `stepsync watch`'s seam to the sync engine. Until the sync engine
 * exports a library call for one run, this calls the `sync` command function in-process
 * (never a shell). The reference is weak so the watcher builds and its tests run even
 * in a tree where the sync command is not linked in.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "cmd.h"
#include "err.h"
#include "watch_sync.h"

int cmd_sync(struct agent *a, int argc, char **argv) __attribute__((weak));

int
watch_sync_dir(struct agent *a, const char *name, const char *path, struct watch_sync_result *res,
    char *errbuf, size_t errlen)
{
	char arg0[] = "sync", opt[] = "--name";
	char namebuf[256], pathbuf[4096];
	char *argv[5];
	int argc = 0, rc;

	memset(res, 0, sizeof(*res));
	if (cmd_sync == NULL) {
		snprintf(errbuf, errlen, "this stepsync has no sync engine");
		return STEP_EINVAL;
	}
	if ((name != NULL &&
	        snprintf(namebuf, sizeof(namebuf), "%s", name) >= (int)sizeof(namebuf)) ||
	    snprintf(pathbuf, sizeof(pathbuf), "%s", path) >= (int)sizeof(pathbuf)) {
		snprintf(errbuf, errlen, "name or path too long");
		return STEP_EINVAL;
	}
	argv[argc++] = arg0;
	if (name != NULL) {
		argv[argc++] = opt;
		argv[argc++] = namebuf;
	}
	argv[argc++] = pathbuf;
	argv[argc] = NULL;
	optind = 0; /* the command parses its own options with getopt */
	rc = cmd_sync(a, argc, argv);
	fflush(stdout);
	if (rc != AGENT_EXIT_OK) {
		snprintf(errbuf, errlen, "sync exited with status %d", rc);
		watch_sync_reset(a);
		return STEP_ESTATUS;
	}
	if (name != NULL)
		snprintf(res->snapshot, sizeof(res->snapshot), "%s", name);
	return STEP_OK;
}

void
watch_sync_reset(struct agent *a)
{
	client_free(a->client);
	a->client = NULL;
}
