/*
 * watch_retention.c — hourly retention inside `stepsync watch` (see watch_retention.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "prune.h"
#include "retention.h"
#include "util.h"
#include "watch_retention.h"

int
watch_retention_check(const struct config *cfg, char *err, size_t errlen)
{
	struct keep_policy pol;
	char why[256];
	size_t i;

	for (i = 0; cfg != NULL && i < cfg->ndirs; i++) {
		if (cfg->dirs[i].keep == NULL)
			continue;
		if (retention_parse(cfg->dirs[i].keep, &pol, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "[dir \"%s\"] %s", cfg->dirs[i].name, why);
			return STEP_EINVAL;
		}
	}
	return 0;
}

/* When each name's rules were last applied, and when orphans were last looked for (the
 * watcher is one thread). */
static struct last_run {
	char *name;
	int64_t time, orphans;
} * last_runs;
static size_t nlast_runs;

static struct last_run *
last_run_of(const char *name)
{
	size_t i;

	for (i = 0; i < nlast_runs; i++)
		if (strcmp(last_runs[i].name, name) == 0)
			return &last_runs[i];
	last_runs = xrealloc(last_runs, (nlast_runs + 1) * sizeof(*last_runs));
	last_runs[nlast_runs].name = xstrdup(name);
	last_runs[nlast_runs].time = last_runs[nlast_runs].orphans = 0;
	return &last_runs[nlast_runs++];
}

int
watch_retention_tick(
    struct agent *a, struct client *c, struct db *db, const char *name, int64_t now)
{
	struct last_run *lr;
	const struct config_dir *d = config_find_dir(a->cfg, name);
	struct prune_result res;
	struct keep_policy pol;
	char why[256], polstr[128];
	int r;

	if (d == NULL || d->keep == NULL)
		return 0;
	lr = last_run_of(name);
	if (lr->time != 0 && now - lr->time < WATCH_RETENTION_EVERY)
		return 0;
	lr->time = now;
	if (retention_parse(d->keep, &pol, why, sizeof(why)) != 0) {
		log_warnx("retention of '%s' skipped: %s", name, why);
		return STEP_EINVAL;
	}
	retention_format(&pol, polstr, sizeof(polstr));
	r = prune_apply(a, c, db, name, &pol, 0, 1, now - lr->orphans >= WATCH_ORPHANS_EVERY, &res);
	json_decref(res.plan);
	if (r == 0 && res.orphans_listed)
		lr->orphans = now;
	if (r != 0) {
		log_warnx("retention of '%s' (%s) failed: %s; next try in an hour", name, polstr,
		    step_strerror(r));
		return r;
	}
	if (res.deleted_snapshots > 0)
		log_info("retention of '%s' (%s): deleted %" PRIu64 " %s and %" PRIu64
		         " unreferenced %s; kept %zu",
		    name, polstr, res.deleted_snapshots,
		    agent_plural(res.deleted_snapshots, "snapshot", "snapshots"),
		    res.deleted_objects, agent_plural(res.deleted_objects, "object", "objects"),
		    res.kept);
	return (int)res.deleted_snapshots;
}
