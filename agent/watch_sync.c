/*
 * watch_sync.c — `stepsync watch`'s seam to the sync engine (sync.h): one run of
 * sync_run() under the state's lock, as `stepsync sync --skip-unchanged` would do it,
 * its summary printed like sync's, its counters handed back.
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "cmd.h"
#include "cmd_sync.h"
#include "config.h"
#include "err.h"
#include "lock.h"
#include "snapshot.h"
#include "sync.h"
#include "util.h"
#include "watch_sync.h"

/* Takes the lock `stepsync sync` takes: 0, or the exit status after a message. */
static int
take_lock(struct agent *a, int *fdp)
{
	char sp[4096];
	pid_t holder = 0;
	int r;

	if (sync_state_path(a, sp, sizeof(sp)) != 0) {
		agent_error("no state database path (set --state or HOME)");
		return SYNC_EXIT_CONFIG;
	}
	r = lock_acquire(sp, fdp, &holder);
	if (r == STEP_EBUSY) {
		if (holder > 0)
			agent_error("another sync (pid %ld) is using '%s'; try again later",
			    (long)holder, sp);
		else
			agent_error("another sync is using '%s'; try again later", sp);
		return SYNC_EXIT_TEMPFAIL;
	}
	if (r != 0) {
		agent_error("cannot lock '%s.lock': %s", sp, strerror(errno));
		return SYNC_EXIT_CONFIG;
	}
	return 0;
}

int
watch_sync_dir(struct agent *a, const char *name, const char *path, struct watch_sync_result *res,
    char *errbuf, size_t errlen)
{
	const struct config_dir *cd;
	struct sync_opts o;
	struct sync_result sr;
	char base[PATH_MAX];
	int lockfd = -1, rc, recorded;

	memset(res, 0, sizeof(*res));
	if (snprintf(base, sizeof(base), "%s", path) >= (int)sizeof(base)) {
		snprintf(errbuf, errlen, "name or path too long");
		return STEP_EINVAL;
	}
	if (name == NULL)
		name = basename(base); /* the sync engine's default name */
	recorded = a->runs_recorded;
	a->run_command = "watch";
	if ((rc = take_lock(a, &lockfd)) == 0) {
		cd = config_find_dir(a->cfg, name);
		memset(&o, 0, sizeof(o));
		o.a = a;
		o.name = name;
		o.root = path;
		o.exclude = cd != NULL ? cd->exclude : NULL;
		o.nexclude = cd != NULL ? cd->nexclude : 0;
		/* The start-up sync and the periodic rescan mostly find nothing new: they keep
		 * the latest snapshot instead of recording an identical one. */
		o.skip_unchanged = 1;
		rc = sync_run(&o, NULL, &sr);
		if (sr.seq != 0 && (rc == AGENT_EXIT_OK || rc == SYNC_EXIT_INCOMPLETE))
			cmd_sync_report(a, name, &sr);
		lock_release(lockfd);
	}
	fflush(stdout);
	res->exit_status = rc;
	if (rc != AGENT_EXIT_OK && a->runs_recorded == recorded && !util_stop_pending())
		agent_record_run(a, name, rc); /* failed before the tree */
	if (rc != AGENT_EXIT_OK) {
		snprintf(errbuf, errlen, "sync exited with status %d", rc);
		watch_sync_reset(a);
		return STEP_ESTATUS;
	}
	res->bytes_sent = sr.sent_bytes;
	snprintf(res->snapshot, sizeof(res->snapshot), "%s#%" PRIu64, name, sr.seq);
	return STEP_OK;
}

void
watch_sync_reset(struct agent *a)
{
	client_free(a->client);
	a->client = NULL;
}
