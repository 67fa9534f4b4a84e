/*
 * agent.c — the command context of stepsync: error and JSON output, password sources,
 * and the lazily opened session and state database. Never exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cmd.h"
#include "config.h"
#include "db.h"
#include "err.h"
#include "hash.h"
#include "log.h"
#include "queue.h"
#include "runs.h"
#include "snapshots.h"
#include "step.h"
#include "util.h"

#define PASSWORD_MAX 4096

/* agent_set_error_sink(): like the logger's destination, one per process. */
static agent_error_fn *error_sink;
static void *error_sink_arg;
/* The last agent_error() message, for the runs table ("" when none since the last run). */
static char last_error[2048];

void
agent_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	if (error_sink != NULL)
		error_sink(error_sink_arg, last_error);
	else
		fprintf(stderr, "stepsync: %s\n", agent_tty_str(stderr, last_error));
}

const char *
agent_tty_str(FILE *f, const char *s)
{
	static char bufs[4][4096];
	static unsigned next;
	const unsigned char *p;
	char *out;
	size_t o = 0;

	if (s == NULL || !isatty(fileno(f)))
		return s;
	for (p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			break;
	if (*p == '\0')
		return s;
	out = bufs[next++ % 4];
	for (p = (const unsigned char *)s; *p && o + 5 < sizeof(bufs[0]); p++) {
		if (*p == '\n' || *p == '\t' || *p == '\r') {
			out[o++] = '\\';
			out[o++] = *p == '\n' ? 'n' : (*p == '\t' ? 't' : 'r');
		} else if (*p < 0x20 || *p == 0x7f) {
			o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "\\x%02x", *p);
		} else {
			out[o++] = (char)*p;
		}
	}
	out[o] = '\0';
	return out;
}

void
agent_test_hold(const char *env)
{
	const char *dir = getenv(env);
	char path[4096], b;
	int fd;

	if (dir == NULL || *dir == '\0')
		return;
	snprintf(path, sizeof(path), "%s/ready", dir);
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) >= 0) {
		if (write(fd, "r", 1) < 0)
			log_warn("test hook: %s", path);
		close(fd);
	}
	snprintf(path, sizeof(path), "%s/go", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		while (read(fd, &b, 1) > 0)
			;
		close(fd);
	}
}

const char *
agent_plural(uint64_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

int
agent_exit_code(int err, int status, const char *msg)
{
	switch (err) {
	case STEP_OK:
		return AGENT_EXIT_OK;
	case STEP_ECONNECT:
	case STEP_ETIMEDOUT:
	case STEP_ECLOSED:
	case STEP_EBUSY:
	case STEP_ESTOPPED:
		return AGENT_EXIT_TEMPFAIL;
	case STEP_ETLS:
		return AGENT_EXIT_TLS;
	case STEP_EAUTH:
		return AGENT_EXIT_NOPERM;
	case STEP_ENOENT:
		return AGENT_EXIT_NOTFOUND;
	case STEP_EEXIST:
		return AGENT_EXIT_CONFLICT;
	case STEP_ECHANGED:
	case STEP_EMISMATCH:
		return AGENT_EXIT_VERIFY;
	case STEP_ESYS:
		/* A local file ("cannot open: ...", "cannot write '...'") or the network. */
		return msg == NULL || strncmp(msg, "cannot ", 7) == 0 ? AGENT_EXIT_LOCAL
		                                                      : AGENT_EXIT_TEMPFAIL;
	case STEP_ESTATUS:
		if (status == STEP_ST_NOTFOUND)
			return AGENT_EXIT_NOTFOUND;
		if (status == STEP_ST_EXISTS || status == 423)
			return AGENT_EXIT_CONFLICT;
		if (status == STEP_ST_BADPASS)
			return AGENT_EXIT_NOPERM;
		if (status == STEP_ST_THROTTLE || (status >= 500 && status <= 599))
			return AGENT_EXIT_TEMPFAIL;
		break;
	}
	return AGENT_EXIT_FAIL;
}

int
agent_client_exit(const struct client *c, int err)
{
	return agent_exit_code(err, client_status(c), client_error(c));
}

void
agent_set_error_sink(agent_error_fn *fn, void *arg)
{
	error_sink = fn;
	error_sink_arg = arg;
}

int
agent_usage(const char *usage)
{
	fprintf(stderr, "usage: stepsync %s\n", usage);
	return AGENT_EXIT_USAGE;
}

/* The --json results of this command: the first document, then an array once there are
 * two, printed by agent_json_flush() (or each at once in stream mode). */
static json_t *json_first;
static json_t *json_many;
static int json_streaming;
static FILE *json_out; /* the real stdout once agent_json_claim_stdout() ran */

static void
json_print(json_t *obj)
{
	FILE *f = json_out != NULL ? json_out : stdout;
	char *s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII);

	if (s != NULL) {
		fputs(s, f);
		fputc('\n', f);
		fflush(f);
		free(s);
	}
}

int
agent_json_claim_stdout(void)
{
	int fd;

	fflush(stdout);
	if ((fd = dup(STDOUT_FILENO)) < 0)
		return STEP_ESYS;
	if ((json_out = fdopen(fd, "w")) == NULL) {
		close(fd);
		return STEP_ESYS;
	}
	if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
		fclose(json_out);
		json_out = NULL;
		return STEP_ESYS;
	}
	return STEP_OK;
}

void
agent_json(const struct agent *a, json_t *obj)
{
	if (obj == NULL)
		return;
	if (!a->json) {
		json_decref(obj);
		return;
	}
	if (json_streaming) {
		json_print(obj);
		json_decref(obj);
		return;
	}
	if (json_first == NULL && json_many == NULL) {
		json_first = obj;
		return;
	}
	if (json_many == NULL) {
		if ((json_many = json_array()) == NULL) {
			json_decref(obj);
			return;
		}
		json_array_append_new(json_many, json_first);
		json_first = NULL;
	}
	json_array_append_new(json_many, obj);
}

void
agent_json_stream(int on)
{
	agent_json_flush();
	json_streaming = on;
}

void
agent_json_finish(const struct agent *a, const char *command, int exit_status)
{
	json_t *o;

	if (a->json && !json_streaming && json_first == NULL && json_many == NULL &&
	    exit_status != AGENT_EXIT_USAGE) {
		/* A command without a JSON result of its own still gives one document. */
		o = json_pack("{s:s, s:i}", "command", command, "exit_status", exit_status);
		if (o != NULL && exit_status != 0)
			json_object_set_new(
			    o, "error", json_string(last_error[0] ? last_error : "failed"));
		agent_json(a, o);
	}
	agent_json_flush();
}

void
agent_json_flush(void)
{
	json_t *doc = json_many != NULL ? json_many : json_first;

	if (doc != NULL)
		json_print(doc);
	json_decref(doc);
	json_first = NULL;
	json_many = NULL;
}

int
agent_json_error(const struct agent *a, const char *command, const char *error, int ex)
{
	if (a->json)
		agent_json(a,
		    json_pack(
		        "{s:s, s:s, s:i}", "command", command, "error", error, "exit_status", ex));
	return ex;
}

/* Strips one trailing "\n" or "\r\n" in place. */
static void
chomp(char *s, size_t *len)
{
	if (*len > 0 && s[*len - 1] == '\n')
		s[--*len] = '\0';
	if (*len > 0 && s[*len - 1] == '\r')
		s[--*len] = '\0';
}

static int
password_from_file(const char *path, char *out, size_t outlen, char *errbuf, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int r;

	if ((r = util_read_file(path, PASSWORD_MAX, &text, &len)) != 0) {
		snprintf(errbuf, errlen, "cannot read password file '%s': %s", path,
		    r == STEP_ESYS ? strerror(errno) : step_strerror(r));
		return r;
	}
	chomp(text, &len);
	if (len == 0 || len >= outlen) {
		snprintf(errbuf, errlen, "password file '%s' is %s", path,
		    len == 0 ? "empty" : "too long");
		r = STEP_EINVAL;
	} else {
		memcpy(out, text, len + 1);
	}
	OPENSSL_cleanse(text, len);
	free(text);
	return r;
}

static int
password_prompt(const char *user, char *out, size_t outlen, char *errbuf, size_t errlen)
{
	struct termios old, quiet;
	FILE *tty;
	size_t len;
	int r = STEP_OK;

	if ((tty = fopen("/dev/tty", "r+")) == NULL || tcgetattr(fileno(tty), &old) != 0) {
		snprintf(errbuf, errlen,
		    "no password: use --password-file, $STEPSYNC_PASSWORD or the config "
		    "file (no terminal to ask on)");
		if (tty != NULL)
			fclose(tty);
		return STEP_EINVAL;
	}
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	fprintf(tty, "password for %s: ", user ? user : "?");
	fflush(tty);
	tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
	if (fgets(out, (int)outlen, tty) == NULL) {
		snprintf(errbuf, errlen, "no password given");
		r = STEP_EINVAL;
	}
	tcsetattr(fileno(tty), TCSAFLUSH, &old);
	fputc('\n', tty);
	fclose(tty);
	if (r != 0)
		return r;
	len = strlen(out);
	chomp(out, &len);
	if (len == 0) {
		snprintf(errbuf, errlen, "empty password");
		return STEP_EINVAL;
	}
	return STEP_OK;
}

int
agent_password(struct agent *a, char *errbuf, size_t errlen)
{
	char pw[PASSWORD_MAX];
	const char *env;
	int r;

	if (a->password_md5[0] != '\0')
		return STEP_OK;
	if (a->password_file != NULL) {
		r = password_from_file(a->password_file, pw, sizeof(pw), errbuf, errlen);
	} else if ((env = getenv("STEPSYNC_PASSWORD")) != NULL && env[0] != '\0') {
		if (strlen(env) >= sizeof(pw)) {
			snprintf(errbuf, errlen, "$STEPSYNC_PASSWORD is too long");
			return STEP_EINVAL;
		}
		memcpy(pw, env, strlen(env) + 1);
		r = STEP_OK;
	} else if (a->cfg != NULL && a->cfg->password_file != NULL) {
		r = password_from_file(a->cfg->password_file, pw, sizeof(pw), errbuf, errlen);
	} else {
		r = password_prompt(a->user, pw, sizeof(pw), errbuf, errlen);
	}
	if (r == STEP_OK)
		hash_md5_hex(pw, strlen(pw), a->password_md5);
	OPENSSL_cleanse(pw, sizeof(pw));
	return r;
}

int
agent_client_opts(struct agent *a, struct client_opts *o, char *errbuf, size_t errlen)
{
	memset(o, 0, sizeof(*o));
	if (a->host[0] == '\0') {
		snprintf(
		    errbuf, errlen, "no server given (use --server HOST[:PORT] or the config)");
		return STEP_EINVAL;
	}
	if (a->user == NULL || a->user[0] == '\0') {
		snprintf(errbuf, errlen, "no user given (use --user NAME or the config)");
		return STEP_EINVAL;
	}
	if (a->password_md5[0] == '\0') {
		snprintf(errbuf, errlen, "no password");
		return STEP_EINVAL;
	}
	o->host = a->host;
	o->port = a->port;
	o->user = a->user;
	o->password_md5 = a->password_md5;
	o->tls = a->tls;
	o->ca = a->ca;
	o->timeout_ms = a->timeout_s * 1000;
	o->window = a->window;
	o->state_path = a->state_path;
	o->block_md5 = a->block_md5;
	if (a->bwlimit > 0 && a->bw == NULL && bwlimit_new(a->bwlimit, &a->bw) != 0) {
		snprintf(errbuf, errlen, "out of memory");
		return STEP_ENOMEM;
	}
	o->bw = a->bw;
	return STEP_OK;
}

int
agent_client(struct agent *a, struct client **outp)
{
	struct client_opts o;
	char errbuf[512];
	int r;

	if (a->client != NULL) {
		*outp = a->client;
		return STEP_OK;
	}
	if (a->host[0] == '\0' || a->user == NULL) {
		agent_client_opts(a, &o, errbuf, sizeof(errbuf));
		agent_error("%s", errbuf);
		return STEP_EINVAL;
	}
	if ((r = agent_password(a, errbuf, sizeof(errbuf))) != 0 ||
	    (r = agent_client_opts(a, &o, errbuf, sizeof(errbuf))) != 0) {
		agent_error("%s", errbuf);
		return r;
	}
	if ((r = client_new(&o, &a->client)) != 0) {
		agent_error("cannot create session: %s", step_strerror(r));
		return r;
	}
	*outp = a->client;
	return STEP_OK;
}

int
agent_setup_exit(const struct agent *a, const char *command, int err)
{
	return agent_json_error(a, command, last_error[0] ? last_error : step_strerror(err),
	    err == STEP_ENOMEM ? AGENT_EXIT_FAIL : AGENT_EXIT_CONFIG);
}

int
agent_db(struct agent *a, struct db **outp)
{
	char path[4096], errbuf[512];
	const char *p = a->state_path;
	int r;

	if (a->db != NULL) {
		*outp = a->db;
		return STEP_OK;
	}
	if (p == NULL) {
		if (config_default_state_path(path, sizeof(path)) != 0) {
			agent_error("no state database (use --state DB)");
			return STEP_EINVAL;
		}
		p = path;
	}
	if ((r = db_open(p, &a->db, errbuf, sizeof(errbuf))) != 0) {
		agent_error("%s", errbuf[0] ? errbuf : step_strerror(r));
		return r;
	}
	*outp = a->db;
	return STEP_OK;
}

/* The state database, if it is already open or exists (a run that failed before it
 * opened one must not create it). 0 and *outp, or -1. */
static int
run_db(struct agent *a, struct db **outp)
{
	char path[4096];
	const char *p = a->state_path;

	if (a->db == NULL) {
		if (p == NULL && config_default_state_path(path, sizeof(path)) == 0)
			p = path;
		if (p == NULL || access(p, F_OK) != 0)
			return -1;
	}
	return agent_db(a, outp) == 0 ? 0 : -1;
}

void
agent_record_run(struct agent *a, const char *name, int exit_status)
{
	struct runs_rec rec;
	struct snapshots_rec snap;
	struct db *db = NULL;
	sqlite3 *sq;
	char shot[600];
	uint64_t seq = 0;
	long long prev = 0;

	a->runs_recorded++;
	if (run_db(a, &db) != 0)
		goto out;
	sq = db_handle(db);
	if (runs_migrate(db) != 0 || queue_migrate(sq) != 0)
		goto out;
	memset(&rec, 0, sizeof(rec));
	rec.name = name != NULL ? name : "";
	rec.command = a->run_command != NULL ? a->run_command : "sync";
	rec.time = util_wall_s();
	rec.exit_status = exit_status;
	rec.error = exit_status != 0 ? (last_error[0] ? last_error : "failed") : NULL;
	memset(&snap, 0, sizeof(snap));
	if (rec.name[0] != '\0' && snapshots_migrate(db) == 0 &&
	    snapshots_latest(db, rec.name, &seq) == 0 && seq > 0 &&
	    snapshots_get(db, rec.name, seq, &snap) == 0) {
		snprintf(shot, sizeof(shot), "%s#%llu", rec.name, (unsigned long long)seq);
		rec.snapshot = shot;
	}
	if (runs_put(db, &rec) != 0) {
		log_warnx("cannot record the run in the state database: %s", db_errmsg(db));
		goto out;
	}
	/* The keys `status` has always shown, now for cron runs as well as for watch. */
	if (exit_status == 0)
		queue_status_set_int(sq, "last_success", rec.time);
	else if (exit_status != 3) {
		queue_status_set(sq, "last_error", rec.error);
		queue_status_set_int(sq, "last_error_time", rec.time);
	}
	if (rec.snapshot != NULL &&
	    (queue_status_get_int(sq, "last_snapshot_time", &prev) != 0 || snap.time >= prev)) {
		queue_status_set(sq, "last_snapshot", rec.snapshot);
		queue_status_set_int(sq, "last_snapshot_time", snap.time);
	}
out:
	last_error[0] = '\0';
}

void
agent_run_finish(struct agent *a, int argc, char **argv, int exit_status)
{
	int i;

	if (a->runs_recorded > 0 || exit_status == AGENT_EXIT_OK || exit_status == AGENT_EXIT_USAGE)
		return;
	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strncmp(argv[i], "--d", 3) == 0 || strcmp(argv[i], "-h") == 0)
			return; /* a dry run changes nothing, not even the status */
	agent_record_run(a, "", exit_status);
}

void
agent_release(struct agent *a)
{
	client_free(a->client);
	a->client = NULL;
	db_close(a->db);
	a->db = NULL;
	bwlimit_free(a->bw);
	a->bw = NULL;
	config_free(a->cfg);
	a->cfg = NULL;
	OPENSSL_cleanse(a->password_md5, sizeof(a->password_md5));
}

void
agent_fmt_time(int64_t t, char *out, size_t outlen)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, outlen, "-");
}
