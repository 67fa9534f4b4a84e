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
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cmd.h"
#include "config.h"
#include "db.h"
#include "err.h"
#include "hash.h"
#include "step.h"
#include "util.h"

#define PASSWORD_MAX 4096

/* agent_set_error_sink(): like the logger's destination, one per process. */
static agent_error_fn *error_sink;
static void *error_sink_arg;

void
agent_error(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (error_sink != NULL)
		error_sink(error_sink_arg, msg);
	else
		fprintf(stderr, "stepsync: %s\n", msg);
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

void
agent_json(const struct agent *a, json_t *obj)
{
	char *s;

	if (obj == NULL)
		return;
	if (a->json && (s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII)) != NULL) {
		fputs(s, stdout);
		fputc('\n', stdout);
		fflush(stdout);
		free(s);
	}
	json_decref(obj);
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
