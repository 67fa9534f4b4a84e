/*
 * cmd_watch.c — `stepsync watch`: keeps directories backed up as they change.
 *
 * inotify events (agent/watch.c) become entries in the durable queue (db/queue.c) the
 * moment they are read; once a burst has been quiet for --debounce milliseconds every
 * directory with pending entries is synced by the sync engine, which records a new
 * snapshot, and only then are the entries acknowledged. A crash or a restart therefore
 * loses nothing: on start, every directory is queued for a rescan. When the server is
 * down the loop keeps watching and queueing and retries with exponential backoff.
 * Signals arrive through a signalfd in the poll loop; no work is done in a handler.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cmd.h"
#include "cmd_watch.h"
#include "config.h"
#include "db.h"
#include "err.h"
#include "log.h"
#include "queue.h"
#include "runs.h"
#include "step.h"
#include "util.h"
#include "watch.h"
#include "watch_retention.h"
#include "watch_sync.h"

#define WATCH_USAGE                                                                                \
	"watch [--name NAME] [--debounce MS] [--rescan SECONDS] [--prometheus FILE] "              \
	"[--syslog] [DIR...]"
#define BACKOFF_MIN_MS    500
#define BACKOFF_MAX_MS    60000
#define POLL_UNWATCHED_MS 2000 /* fallback scan period for directories without a watch */
/* The verification rescan's default period. Incremental runs trust inotify; the full
 * rescan is the safety net for what it cannot see (a change through another mount of a
 * network file system, a bug). A no-change full run of a million files costs about ten
 * seconds of CPU and, with a cold cache, minutes of disk: six hours keeps that under
 * 0.1 % of a core. */
#define WATCH_RESCAN_S    21600

/* One watched tree. */
struct wdir {
	char *name;    /* owned; snapshot NAME, or NULL for the sync engine's default */
	char *path;    /* owned; absolute, resolved */
	char *qkey;    /* owned; the queue's dir column: name, else path */
	int removed;   /* its [dir] section went away at a SIGHUP: no longer synced */
	uint64_t held; /* files gone but held back by its last sync: runs are full ones */
	uint64_t rescan_ms, next_rescan_ms; /* its verification rescan */
};

struct watcher {
	struct agent *a;   /* borrowed */
	sqlite3 *sq;       /* borrowed from the agent's db */
	struct db *db;     /* borrowed */
	struct wdir *dirs; /* owned */
	size_t ndirs;
	struct watch *w; /* owned */
	struct watch_debounce deb;
	uint64_t debounce_ms, next_poll_ms;
	uint64_t rescan_ms;   /* --rescan, 0 when not given */
	uint64_t retry_at_ms; /* 0: no retry pending */
	uint64_t backoff_ms;
	int max_watches;
	const char *prometheus; /* borrowed from argv; NULL when off */
	int queue_error;        /* a queue write failed: rescan everything on the next sync */
	int from_config;  /* the trees are the config's [dir] sections (SIGHUP updates them) */
	char *state_path; /* owned copy once a SIGHUP retired the config it pointed into */
	long long errors;
	char sync_error[512]; /* the sync engine's last agent_error() message, "" if none */
	int fatal;            /* exit status that stops the watcher (77, 78...), 0: none */
	char fatal_msg[1100]; /* why, for the last line */
};

static void
wdirs_free(struct wdir *d, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(d[i].name);
		free(d[i].path);
		free(d[i].qkey);
	}
	free(d);
}

/* Adds a tree; path is resolved; name may be NULL. 0, or AGENT_EXIT_FAIL after a message. */
static int
wdir_add(struct watcher *wt, const char *name, const char *path)
{
	char real[PATH_MAX];
	struct wdir *d;
	size_t i;

	if (realpath(path, real) == NULL) {
		agent_error("cannot watch '%s': %s", path, strerror(errno));
		return AGENT_EXIT_FAIL;
	}
	for (i = 0; i < wt->ndirs; i++)
		if (strcmp(wt->dirs[i].path, real) == 0)
			return 0;
	if (name == NULL && wt->a->cfg != NULL) {
		/* A directory from the config keeps its section's name. */
		for (i = 0; i < wt->a->cfg->ndirs; i++) {
			char cr[PATH_MAX];

			if (realpath(wt->a->cfg->dirs[i].path, cr) != NULL && strcmp(cr, real) == 0)
				name = wt->a->cfg->dirs[i].name;
		}
	}
	wt->dirs = xrealloc(wt->dirs, (wt->ndirs + 1) * sizeof(*wt->dirs));
	d = &wt->dirs[wt->ndirs++];
	d->name = name != NULL ? xstrdup(name) : NULL;
	d->path = xstrdup(real);
	d->qkey = xstrdup(name != NULL ? name : real);
	d->removed = 0;
	d->held = 0;
	/* --rescan, else the [dir]'s rescan key, else the default. */
	d->rescan_ms = wt->rescan_ms;
	if (d->rescan_ms == 0 && name != NULL && config_find_dir(wt->a->cfg, name) != NULL)
		d->rescan_ms = (uint64_t)config_find_dir(wt->a->cfg, name)->rescan_s * 1000;
	if (d->rescan_ms == 0)
		d->rescan_ms = (uint64_t)WATCH_RESCAN_S * 1000;
	d->next_rescan_ms = util_now_ms() + d->rescan_ms;
	return 0;
}

/* The tree holding abs, and abs relative to it ("" for the root itself). */
static struct wdir *
wdir_find(struct watcher *wt, const char *abs, const char **relp)
{
	struct wdir *best = NULL;
	size_t i, blen = 0;

	for (i = 0; i < wt->ndirs; i++) {
		size_t n = strlen(wt->dirs[i].path);

		if (strncmp(abs, wt->dirs[i].path, n) == 0 && (abs[n] == '\0' || abs[n] == '/') &&
		    n >= blen) {
			best = &wt->dirs[i];
			blen = n;
		}
	}
	if (best != NULL)
		*relp = abs[blen] == '/' ? abs + blen + 1 : abs + blen;
	return best;
}

static void
queue_one(struct watcher *wt, const char *abs, int kind)
{
	const char *rel = NULL;
	struct wdir *d = wdir_find(wt, abs, &rel);

	if (d == NULL || d->removed)
		return;
	if (queue_push(wt->sq, d->qkey, rel, kind, util_wall_s()) != 0) {
		log_warnx("cannot queue change of '%s': %s", abs, db_errmsg(wt->db));
		wt->queue_error = 1;
	}
}

/* The watch engine's callback: every event is queued durably, then debounced. */
static void
on_event(void *arg, int ev, const char *path, const char *path2)
{
	struct watcher *wt = arg;

	switch (ev) {
	case WATCH_EV_MOVE:
		queue_one(wt, path, QUEUE_DELETE);
		queue_one(wt, path2, QUEUE_MOVE);
		break;
	case WATCH_EV_DELETE:
		queue_one(wt, path, QUEUE_DELETE);
		break;
	case WATCH_EV_RESCAN:
		queue_one(wt, path, QUEUE_RESCAN);
		break;
	default:
		queue_one(wt, path, QUEUE_CHANGE);
		break;
	}
	watch_debounce_note(&wt->deb, util_now_ms());
}

static void
queue_all(struct watcher *wt)
{
	size_t i;

	for (i = 0; i < wt->ndirs; i++)
		queue_one(wt, wt->dirs[i].path, QUEUE_RESCAN);
}

/* Prints name as a Prometheus label value (backslash, quote and newline escaped). */
static void
prom_label(FILE *f, const char *name)
{
	for (; *name != '\0'; name++) {
		if (*name == '\\' || *name == '"')
			fputc('\\', f);
		if (*name == '\n')
			fputs("\\n", f);
		else
			fputc(*name, f);
	}
}

/* The last run of every NAME (db/runs.h), as labelled gauges. */
static int
prom_run(const struct runs_rec *r, void *arg)
{
	FILE *f = arg;

	if (r->name[0] == '\0')
		return 0;
	fputs("stepsync_last_run_exit_status{name=\"", f);
	prom_label(f, r->name);
	fprintf(f, "\"} %d\n", r->exit_status);
	fputs("stepsync_last_run_timestamp_seconds{name=\"", f);
	prom_label(f, r->name);
	fprintf(f, "\"} %lld\n", (long long)r->time);
	return 0;
}

/* node_exporter textfile: written atomically so the collector never sees half a file. */
/* Deletions held back (status key "held", see sync.h's hold_mass_delete), per name. */
static void
prom_held(struct watcher *wt, FILE *f)
{
	char *text = NULL;
	json_t *all = NULL, *e;
	const char *name;

	fputs("# HELP stepsync_held_deletions Files gone from a directory whose deletion is "
	      "held back (most of the tree vanished); release with stepsync sync "
	      "--allow-mass-delete.\n"
	      "# TYPE stepsync_held_deletions gauge\n",
	    f);
	if (queue_status_get(wt->sq, "held", &text) == 0)
		all = json_loads(text, 0, NULL);
	json_object_foreach(all, name, e)
	{
		fputs("stepsync_held_deletions{name=\"", f);
		prom_label(f, name);
		fprintf(
		    f, "\"} %lld\n", (long long)json_integer_value(json_object_get(e, "files")));
	}
	json_decref(all);
	free(text);
}

static void
write_prometheus(struct watcher *wt)
{
	long long last = 0, bytes = 0, pending = 0, errors = 0;
	char *text = NULL;
	size_t n = 0;
	FILE *f;

	if (wt->prometheus == NULL)
		return;
	queue_status_get_int(wt->sq, "last_success", &last);
	queue_status_get_int(wt->sq, "bytes_sent", &bytes);
	queue_status_get_int(wt->sq, "errors", &errors);
	queue_count(wt->sq, NULL, &pending);
	if ((f = open_memstream(&text, &n)) == NULL) {
		log_warn("cannot write '%s'", wt->prometheus);
		return;
	}
	fprintf(f,
	    "# HELP stepsync_last_success_timestamp_seconds Time of the last successful sync.\n"
	    "# TYPE stepsync_last_success_timestamp_seconds gauge\n"
	    "stepsync_last_success_timestamp_seconds %lld\n"
	    "# HELP stepsync_bytes_sent_total Bytes of file content uploaded.\n"
	    "# TYPE stepsync_bytes_sent_total counter\n"
	    "stepsync_bytes_sent_total %lld\n"
	    "# HELP stepsync_files_pending Changes queued and not yet in a snapshot.\n"
	    "# TYPE stepsync_files_pending gauge\n"
	    "stepsync_files_pending %lld\n"
	    "# HELP stepsync_errors_total Failed sync attempts.\n"
	    "# TYPE stepsync_errors_total counter\n"
	    "stepsync_errors_total %lld\n"
	    "# HELP stepsync_last_run_exit_status Exit status of the last run of each "
	    "directory (0 ok, 3 incomplete, else failed; cron sync runs too).\n"
	    "# TYPE stepsync_last_run_exit_status gauge\n"
	    "# HELP stepsync_last_run_timestamp_seconds When the last run of each directory "
	    "ended.\n"
	    "# TYPE stepsync_last_run_timestamp_seconds gauge\n",
	    last, bytes, pending, errors);
	if (runs_migrate(wt->db) == 0)
		runs_each(wt->db, prom_run, f);
	prom_held(wt, f);
	if (fclose(f) != 0 || text == NULL) {
		free(text);
		log_warn("cannot write '%s'", wt->prometheus);
		return;
	}
	if (util_write_file_atomic(wt->prometheus, text, n, 0644) != 0)
		log_warn("cannot write '%s'", wt->prometheus);
	free(text);
}

/* agent_error() while watching: to the log (stderr or syslog), and kept as the reason of a
 * failed sync for the warning and `stepsync status`. */
static void
on_agent_error(void *arg, const char *msg)
{
	struct watcher *wt = arg;

	log_error("%s", msg);
	snprintf(wt->sync_error, sizeof(wt->sync_error), "%s", msg);
}

/*
 * The server's throttling hint in a refused login's message: "... retry in N s" (stepd
 * says "too many failed logins; retry in N s"). Seconds, or 0 when there is none.
 */
static long long
retry_hint_s(const char *msg)
{
	const char *p = msg;
	long long n;
	char *end;

	while ((p = strstr(p, "retry in ")) != NULL) {
		p += strlen("retry in ");
		n = strtoll(p, &end, 10);
		if (end != p && n > 0 && strncmp(end, " s", 2) == 0)
			return n > 86400 ? 86400 : n;
	}
	return 0;
}

/* 1 when a sync that exited with ex cannot succeed by trying again: the configuration
 * (78, 2), the credentials (77, unless the server only throttles) or TLS trust (76). */
static int
sync_fatal(int ex, const char *msg)
{
	if (ex == AGENT_EXIT_NOPERM)
		return retry_hint_s(msg) == 0;
	return ex == AGENT_EXIT_CONFIG || ex == AGENT_EXIT_USAGE || ex == AGENT_EXIT_TLS;
}

/* The engine's counters of the last run, and the count of full runs, for `status`. */
static void
note_counters(struct watcher *wt, const struct watch_sync_result *res)
{
	queue_status_set_int(wt->sq, "last_run_incremental", res->incremental);
	queue_status_set_int(wt->sq, "last_dirs_scanned", (long long)res->dirs_scanned);
	queue_status_set_int(wt->sq, "last_dirs_reused", (long long)res->dirs_reused);
	queue_status_set_int(wt->sq, "last_files_hashed", (long long)res->files_hashed);
	queue_status_add(wt->sq, res->incremental ? "incremental_runs" : "full_runs", 1);
	queue_status_add(wt->sq, "dirs_scanned_total", (long long)res->dirs_scanned);
	queue_status_add(wt->sq, "files_hashed_total", (long long)res->files_hashed);
}

/* Syncs every tree with pending entries; acknowledges what each successful sync covered. */
static void
sync_pending(struct watcher *wt)
{
	char errbuf[512], why[sizeof(errbuf) + sizeof(wt->sync_error) + 4];
	/* The delay before the next attempt if one of these syncs fails. */
	uint64_t next_backoff = wt->backoff_ms ? wt->backoff_ms * 2 : BACKOFF_MIN_MS;
	int failed = 0;
	size_t i;

	if (next_backoff > BACKOFF_MAX_MS)
		next_backoff = BACKOFF_MAX_MS;
	watch_debounce_reset(&wt->deb);
	if (wt->queue_error) {
		wt->queue_error = 0;
		queue_all(wt);
	}
	for (i = 0; i < wt->ndirs; i++) {
		struct wdir *d = &wt->dirs[i];
		struct watch_sync_result res;
		long long mark = 0, n = 0;

		if (d->removed || queue_count(wt->sq, d->qkey, &n) != 0 || n == 0)
			continue;
		if (queue_mark(wt->sq, d->qkey, &mark) != 0)
			continue;
		errbuf[0] = '\0';
		wt->sync_error[0] = '\0';
		memset(&res, 0, sizeof(res));
		/* While deletions are held back, an incremental run could drop some of them
		 * (those in a directory it reads): every run reads the whole tree. */
		if ((d->held > 0
		            ? watch_sync_dir(wt->a, d->name, d->path, &res, errbuf, sizeof(errbuf))
		            : watch_sync_changes(wt->a, d->name, d->path, d->qkey, mark, &res,
		                  errbuf, sizeof(errbuf))) != 0) {
			if (util_stop_pending()) {
				/* SIGTERM/SIGINT cut the sync short: not an error, and the
				 * changes stay queued for the next start. */
				log_info("sync of '%s' stopped by a signal; %lld %s queued",
				    d->path, n,
				    agent_plural((uint64_t)n, "change stays", "changes stay"));
				break;
			}
			/* The sync engine's own words say why; the exit status adds little. */
			snprintf(why, sizeof(why), "%s%s%s%s", wt->sync_error,
			    wt->sync_error[0] && errbuf[0] ? " (" : "",
			    errbuf[0] ? errbuf : (wt->sync_error[0] ? "" : "sync failed"),
			    wt->sync_error[0] && errbuf[0] ? ")" : "");
			queue_status_set(wt->sq, "last_error", why);
			queue_status_set_int(wt->sq, "last_error_time", util_wall_s());
			queue_status_add(wt->sq, "errors", 1);
			if (sync_fatal(res.exit_status, why)) {
				/* Trying again cannot help, and a wrong password retried forever
				 * gets the address throttled for everyone: stop, and let the
				 * exit status tell systemd. */
				wt->fatal = res.exit_status == AGENT_EXIT_USAGE ? AGENT_EXIT_CONFIG
				                                                : res.exit_status;
				snprintf(wt->fatal_msg, sizeof(wt->fatal_msg), "%s", why);
				break;
			}
			if (res.exit_status == AGENT_EXIT_NOPERM && retry_hint_s(why) > 0 &&
			    (uint64_t)retry_hint_s(why) * 1000 > next_backoff)
				next_backoff = (uint64_t)retry_hint_s(why) * 1000;
			log_warnx("sync of '%s' failed: %s; %lld %s queued, next try in "
			          "%llu ms",
			    d->path, why, n,
			    agent_plural((uint64_t)n, "change stays", "changes stay"),
			    (unsigned long long)next_backoff);
			failed = 1;
			continue;
		}
		queue_ack(wt->sq, d->qkey, mark);
		if (res.held > 0 && d->held == 0)
			log_warnx("'%s': most files are gone (unmounted disk?): %llu deletions are "
			          "held back, everything else is backed up; 'stepsync status' says "
			          "how to release them",
			    d->path, (unsigned long long)res.held);
		d->held = res.held;
		queue_status_set_int(wt->sq, "last_success", util_wall_s());
		queue_status_add(wt->sq, "bytes_sent", (long long)res.bytes_sent);
		if (res.snapshot[0] != '\0') {
			queue_status_set(wt->sq, "last_snapshot", res.snapshot);
			queue_status_set_int(wt->sq, "last_snapshot_time", util_wall_s());
		}
		note_counters(wt, &res);
		log_info("synced '%s' (%lld %s)%s%s; %s run: %llu %s read, %llu reused, %llu "
		         "%s hashed",
		    d->path, n, agent_plural((uint64_t)n, "change", "changes"),
		    res.snapshot[0] ? ": snapshot " : "", res.snapshot,
		    res.incremental ? "incremental" : "full", (unsigned long long)res.dirs_scanned,
		    agent_plural(res.dirs_scanned, "directory", "directories"),
		    (unsigned long long)res.dirs_reused, (unsigned long long)res.files_hashed,
		    agent_plural(res.files_hashed, "file", "files"));
	}
	if (failed) {
		wt->backoff_ms = next_backoff;
		wt->retry_at_ms = util_now_ms() + wt->backoff_ms;
	} else {
		wt->backoff_ms = 0;
		wt->retry_at_ms = 0;
	}
	write_prometheus(wt);
}

static void
min_timeout(long long *t, long long cand)
{
	if (cand >= 0 && (*t < 0 || cand < *t))
		*t = cand;
}

static long long
until(uint64_t at, uint64_t now)
{
	return at <= now ? 0 : (long long)(at - now);
}

/*
 * Takes over new as the agent's configuration: what the command line set stays, the rest
 * (server, user, password file, tls, ca, each directory's excludes) comes from new from
 * the next sync on. Returns 0, or -1 with the old configuration kept.
 */
static int
adopt_config(struct watcher *wt, struct config *new, char *errbuf, size_t errlen)
{
	struct agent *a = wt->a;
	struct config *old = a->cfg;
	char host[sizeof(a->host)];
	int port = STEP_DEFAULT_PORT;

	if (!a->server_cli && new->server != NULL &&
	    config_parse_address(new->server, STEP_DEFAULT_PORT, host, sizeof(host), &port)) {
		snprintf(errbuf, errlen, "bad server '%s'", new->server);
		return -1;
	}
	if (watch_retention_check(new, errbuf, errlen) != 0)
		return -1;
	if (a->state_path != NULL && old != NULL && a->state_path == old->state_path) {
		if (new->state_path == NULL || strcmp(new->state_path, old->state_path) != 0)
			log_warnx("SIGHUP: the state database stays '%s' until a restart",
			    old->state_path);
		free(wt->state_path);
		wt->state_path = xstrdup(old->state_path);
		a->state_path = wt->state_path;
	}
	if (!a->server_cli && new->server != NULL) {
		memcpy(a->host, host, sizeof(host));
		a->port = port;
	}
	if (old != NULL && a->user == old->user)
		a->user = new->user;
	if (old != NULL && a->ca == old->ca)
		a->ca = new->ca;
	if (!a->tls_cli)
		a->tls = new->tls == 1;
	/* A password read from a file is read again (it may have been rotated); one from the
	 * environment or a prompt is kept. */
	if (a->password_file != NULL ||
	    (getenv("STEPSYNC_PASSWORD") == NULL && new->password_file != NULL))
		OPENSSL_cleanse(a->password_md5, sizeof(a->password_md5));
	a->cfg = new;
	config_free(old);
	return 0;
}

/* A [dir] section found at a SIGHUP: kept when already watched, else watched and queued
 * for a full scan (changes made before its watches existed are found that way). */
static void
wdir_adopt(struct watcher *wt, const char *name, const char *path)
{
	char real[PATH_MAX];
	size_t i, n = wt->ndirs;

	if (realpath(path, real) == NULL) {
		log_warnx("SIGHUP: cannot watch '%s': %s", path, strerror(errno));
		return;
	}
	for (i = 0; i < wt->ndirs; i++) {
		if (strcmp(wt->dirs[i].path, real) == 0) {
			wt->dirs[i].removed = 0;
			return;
		}
	}
	if (wdir_add(wt, name, real) != 0 || wt->ndirs == n)
		return;
	if (watch_add_tree(wt->w, real) != 0)
		log_warn("SIGHUP: cannot watch '%s'", real);
	queue_one(wt, real, QUEUE_RESCAN);
	watch_debounce_note(&wt->deb, util_now_ms() - wt->debounce_ms);
	log_info("SIGHUP: now watching '%s'", real);
}

/* SIGHUP: read the config file again; the next sync connects with what it says now. */
static void
reload_config(struct watcher *wt)
{
	struct agent *a = wt->a;
	struct config *c = NULL;
	char errbuf[512];
	const char *file = a->config_path;
	char defpath[PATH_MAX];
	size_t i;

	if (file == NULL && config_default_path(defpath, sizeof(defpath)) == 0 &&
	    access(defpath, F_OK) == 0)
		file = defpath;
	if (file == NULL) {
		log_info("SIGHUP: no configuration file to reload");
		return;
	}
	if (config_load(file, &c, errbuf, sizeof(errbuf)) != 0 ||
	    adopt_config(wt, c, errbuf, sizeof(errbuf)) != 0) {
		log_warnx("SIGHUP: keeping the old configuration: %s", errbuf);
		config_free(c);
		return;
	}
	watch_sync_reset(a);
	if (wt->from_config) {
		/* New [dir] sections are watched and scanned; removed ones are no longer synced. */
		for (i = 0; i < wt->ndirs; i++)
			wt->dirs[i].removed = 1;
		for (i = 0; i < a->cfg->ndirs; i++)
			wdir_adopt(wt, a->cfg->dirs[i].name, a->cfg->dirs[i].path);
	}
	/* Excludes may have changed: the trees of the last runs do not say so, a full run
	 * of every directory does. */
	queue_all(wt);
	watch_debounce_note(&wt->deb, util_now_ms());
	log_info("SIGHUP: configuration reloaded from '%s'", file);
	wt->retry_at_ms = util_now_ms();
	wt->backoff_ms = 0;
}

static int
setup_signals(int *fdp)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		return STEP_ESYS;
	if ((fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
		return STEP_ESYS;
	signal(SIGPIPE, SIG_IGN);
	*fdp = fd;
	return STEP_OK;
}

/* Drains the signalfd: 1 when asked to stop, else 0. */
static int
handle_signals(struct watcher *wt, int sfd)
{
	struct signalfd_siginfo si;
	int stop = 0;

	while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGHUP)
			reload_config(wt);
		else
			stop = 1;
	}
	return stop;
}

/*
 * Milliseconds until the queued changes are synced (0: now), or -1 when nothing waits.
 * A batch waits until it has settled and, after a failed sync, until the backoff delay
 * has passed: new changes do not cut the delay short, so a server that is down is tried
 * once per delay however busy the tree is.
 */
static long long
sync_timeout(const struct watcher *wt, uint64_t now)
{
	long long t = watch_debounce_timeout(&wt->deb, now), r;

	if (wt->retry_at_ms == 0)
		return t;
	r = until(wt->retry_at_ms, now);
	return t > r ? t : r;
}

/* Queues the verification rescan (a full run) of every directory whose period is up. */
static void
periodic_rescan(struct watcher *wt, uint64_t now)
{
	size_t i;

	for (i = 0; i < wt->ndirs; i++) {
		struct wdir *d = &wt->dirs[i];

		if (now < d->next_rescan_ms || d->removed)
			continue;
		log_info("periodic rescan of '%s'", d->path);
		queue_one(wt, d->path, QUEUE_RESCAN);
		watch_debounce_note(&wt->deb, now);
		d->next_rescan_ms = now + d->rescan_ms;
	}
}

static int
watch_loop(struct watcher *wt, int sfd)
{
	for (;;) {
		struct pollfd pfd[2];
		uint64_t now = util_now_ms();
		long long t = -1;

		min_timeout(&t, sync_timeout(wt, now));
		min_timeout(&t, watch_next_timeout(wt->w, now));
		for (size_t i = 0; i < wt->ndirs; i++)
			min_timeout(&t, until(wt->dirs[i].next_rescan_ms, now));
		/* Idle with every directory watched, nothing wakes the loop but the rescan. */
		if (watch_unwatched_count(wt->w) > 0)
			min_timeout(&t, until(wt->next_poll_ms, now));
		pfd[0].fd = watch_fd(wt->w);
		pfd[0].events = POLLIN;
		pfd[1].fd = sfd;
		pfd[1].events = POLLIN;
		if (poll(pfd, 2, t > INT_MAX ? INT_MAX : (int)t) < 0 && errno != EINTR) {
			log_warn("poll");
			return AGENT_EXIT_FAIL;
		}
		if (handle_signals(wt, sfd))
			return AGENT_EXIT_OK;
		now = util_now_ms();
		/* One transaction per read batch keeps a burst of 1,000 files cheap. */
		db_begin(wt->db);
		if (watch_process(wt->w, now) != 0)
			log_warn("reading inotify events");
		if (now >= wt->next_poll_ms && watch_unwatched_count(wt->w) > 0) {
			watch_poll_unwatched(wt->w);
			wt->next_poll_ms = now + POLL_UNWATCHED_MS;
		}
		periodic_rescan(wt, now);
		if (db_commit(wt->db) != 0) {
			log_warnx("cannot commit queued changes: %s", db_errmsg(wt->db));
			db_rollback(wt->db);
			wt->queue_error = 1;
		}
		if (sync_timeout(wt, now) == 0)
			sync_pending(wt);
		if (wt->fatal != 0)
			return wt->fatal;
	}
}

static void
watch_help(void)
{
	printf("usage: stepsync %s\n\n"
	       "Backs up each DIR (or, without DIR, every [dir] of the config file, or the\n"
	       "one named by --name) whenever it changes: recursive inotify watches, every\n"
	       "change queued in the state database first, then one sync per settled batch,\n"
	       "which records a new snapshot NAME#SEQ (none when the tree is exactly the\n"
	       "latest snapshot). A rename uploads nothing; a file moved out of the tree\n"
	       "counts as deleted. On start, queued changes and a full scan of every\n"
	       "directory are synced. Prints \"watching N directories\" once every watch\n"
	       "is in place.\n"
	       "\n"
	       "  --name NAME        snapshot name of a single DIR (default: its base name),\n"
	       "                     or the [dir \"NAME\"] section to watch\n"
	       "  --debounce MS      sync a batch once no event came for MS milliseconds\n"
	       "                     (default 1000; 0..3600000); a batch that keeps getting\n"
	       "                     events is synced after max(10 * MS, 10 s) anyway\n"
	       "  --rescan SECONDS   full rescan of every directory this often, the safety\n"
	       "                     net for anything inotify missed (default: the [dir]'s\n"
	       "                     rescan key, else 21600, six hours); between rescans\n"
	       "                     only the directories inotify names are read\n"
	       "  --prometheus FILE  after every sync write node_exporter textfile metrics\n"
	       "                     (last success time, bytes sent, files pending, errors,\n"
	       "                     each directory's last run exit status and time)\n"
	       "                     to FILE, atomically (default: none)\n"
	       "  --syslog           log to syslog instead of standard error\n"
	       "\n"
	       "Server unreachable, server errors (5xx), a sync that failed otherwise:\n"
	       "changes stay queued and the sync is retried after 0.5 s, doubling up to\n"
	       "60 s; a login refused with the server's \"retry in N s\" (throttling) waits\n"
	       "N s. What retrying cannot heal stops the watcher with one line on stderr\n"
	       "and the sync's exit status, so systemd shows the failure: a bad or\n"
	       "incomplete configuration (78), a login refused (77: wrong password or\n"
	       "unknown user), a TLS certificate that does not verify (76).\n"
	       "inotify queue overflow: every directory is rescanned.\n"
	       "Out of inotify watches: a warning naming\n"
	       "/proc/sys/fs/inotify/max_user_watches, and the directories left unwatched\n"
	       "are checked every 2 s. SIGTERM or SIGINT: stop, exit 0, changes stay queued\n"
	       "(a sync in progress stops between blocks; the next start resumes it).\n"
	       "SIGHUP: re-read the config file. 'stepsync status' shows the queue.\n"
	       "With --json the ready line is one JSON object: {\"watching\": N,\n"
	       "\"inotify_watches\": M}, and each sync's result a JSON line of its own.\n"
	       "exit status: 0 stopped by a signal; 1 cannot watch or open the state;\n"
	       "  2 usage; 76 TLS failed; 77 login refused; 78 bad configuration\n",
	    WATCH_USAGE);
}

static int
parse_opts(struct watcher *wt, int argc, char **argv, const char **namep, int *syslogp)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "debounce", required_argument, NULL, 'd' },
		{ "rescan", required_argument, NULL, 'r' },
		{ "prometheus", required_argument, NULL, 'p' },
		{ "syslog", no_argument, NULL, 's' },
		{ "max-watches", required_argument, NULL, 'M' }, /* hidden test hook */
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long long v;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			*namep = optarg;
			break;
		case 'd':
			if (util_parse_ll(optarg, 0, 3600000, &v) != 0) {
				agent_error(
				    "bad --debounce '%s': milliseconds, 0..3600000", optarg);
				return AGENT_EXIT_USAGE;
			}
			wt->debounce_ms = (uint64_t)v;
			break;
		case 'r':
			if (util_parse_ll(optarg, 1, 30LL * 86400, &v) != 0) {
				agent_error("bad --rescan '%s': seconds, 1..2592000", optarg);
				return AGENT_EXIT_USAGE;
			}
			wt->rescan_ms = (uint64_t)v * 1000;
			break;
		case 'p':
			wt->prometheus = optarg;
			break;
		case 's':
			*syslogp = 1;
			break;
		case 'M':
			if (util_parse_ll(optarg, 1, INT_MAX, &v) != 0) {
				agent_error("bad --max-watches '%s'", optarg);
				return AGENT_EXIT_USAGE;
			}
			wt->max_watches = (int)v;
			break;
		case 'h':
			watch_help();
			return -1;
		default:
			return agent_usage(WATCH_USAGE);
		}
	}
	return 0;
}

/* Picks the trees: the DIR arguments, else --name's [dir], else every [dir]. */
static int
pick_dirs(struct watcher *wt, int argc, char **argv, const char *name)
{
	const struct config *cfg = wt->a->cfg;
	size_t i;
	int r;

	if (argc - optind > 1 && name != NULL) {
		agent_error("--name applies to one directory; name several in the config file");
		return AGENT_EXIT_USAGE;
	}
	for (; optind < argc; optind++)
		if ((r = wdir_add(wt, name, argv[optind])) != 0)
			return r;
	if (wt->ndirs > 0)
		return 0;
	if (name != NULL) {
		const struct config_dir *cd = cfg != NULL ? config_find_dir(cfg, name) : NULL;

		if (cd == NULL) {
			agent_error("no directory named '%s' in the config file", name);
			return AGENT_EXIT_FAIL;
		}
		return wdir_add(wt, cd->name, cd->path);
	}
	for (i = 0; cfg != NULL && i < cfg->ndirs; i++)
		if ((r = wdir_add(wt, cfg->dirs[i].name, cfg->dirs[i].path)) != 0)
			return r;
	if (wt->ndirs == 0)
		return agent_usage(WATCH_USAGE);
	return 0;
}

/* A [dir]'s keep rules are applied by the watcher itself: a bad one stops it at start. */
static int
check_keep_rules(const struct config *cfg)
{
	char err[512];

	if (watch_retention_check(cfg, err, sizeof(err)) == 0)
		return 0;
	agent_error("%s", err);
	return AGENT_EXIT_CONFIG;
}

int
cmd_watch(struct agent *a, int argc, char **argv)
{
	struct watcher wt;
	const char *name = NULL;
	int use_syslog = 0, sfd = -1, r;
	size_t i;

	memset(&wt, 0, sizeof(wt));
	wt.a = a;
	wt.debounce_ms = 1000;
	if ((r = parse_opts(&wt, argc, argv, &name, &use_syslog)) != 0) {
		r = r < 0 ? AGENT_EXIT_OK : r;
		goto out;
	}
	if (use_syslog)
		log_init("stepsync", log_get_level(), true);
	wt.from_config = optind == argc && name == NULL;
	if ((r = pick_dirs(&wt, argc, argv, name)) != 0)
		goto out;
	if ((r = check_keep_rules(a->cfg)) != 0)
		goto out;
	r = AGENT_EXIT_FAIL;
	if (agent_db(a, &wt.db) != 0)
		goto out;
	wt.sq = db_handle(wt.db);
	if (queue_migrate(wt.sq) != 0) {
		agent_error("cannot set up the change queue: %s", db_errmsg(wt.db));
		goto out;
	}
	if (setup_signals(&sfd) != 0) {
		agent_error("cannot set up signals: %s", strerror(errno));
		goto out;
	}
	watch_debounce_init(&wt.deb, wt.debounce_ms, 0);
	if (watch_new(wt.max_watches, on_event, &wt, &wt.w) != 0) {
		agent_error("cannot start inotify: %s", strerror(errno));
		goto out;
	}
	for (i = 0; i < wt.ndirs; i++) {
		if (watch_add_tree(wt.w, wt.dirs[i].path) != 0) {
			agent_error("cannot watch '%s': %s", wt.dirs[i].path, strerror(errno));
			goto out;
		}
	}
	/* Whatever changed while no watcher ran is found by a first full sync. */
	queue_all(&wt);
	watch_debounce_note(&wt.deb, util_now_ms() - wt.debounce_ms);
	queue_status_set_int(wt.sq, "watch_pid", (long long)getpid());
	/* With --json, each sync's result is a line of its own (JSON Lines). */
	agent_json_stream(1);
	if (a->json)
		agent_json(a,
		    json_pack("{s:I, s:I}", "watching", (json_int_t)wt.ndirs, "inotify_watches",
		        (json_int_t)watch_count(wt.w)));
	else
		printf("watching %zu %s (%zu inotify %s)\n", wt.ndirs,
		    agent_plural(wt.ndirs, "directory", "directories"), watch_count(wt.w),
		    agent_plural(watch_count(wt.w), "watch", "watches"));
	fflush(stdout);
	wt.next_poll_ms = util_now_ms() + POLL_UNWATCHED_MS;
	/* From here on the sync engine's messages go to the log (start-up errors above are
	 * printed plainly). */
	agent_set_error_sink(on_agent_error, &wt);
	r = watch_loop(&wt, sfd);
	agent_set_error_sink(NULL, NULL);
	if (wt.fatal != 0)
		agent_error("watch: stopping (exit %d): %s", wt.fatal, wt.fatal_msg);
	else
		log_info("stopping; %s", "pending changes stay queued");
	queue_status_set(wt.sq, "watch_pid", NULL);
	write_prometheus(&wt);
	sqlite3_wal_checkpoint_v2(wt.sq, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
out:
	agent_set_error_sink(NULL, NULL);
	watch_free(wt.w);
	wdirs_free(wt.dirs, wt.ndirs);
	if (wt.state_path != NULL && a->state_path == wt.state_path)
		a->state_path = NULL;
	free(wt.state_path);
	if (sfd >= 0)
		close(sfd);
	return r;
}
