/*
 * config.c — stepsync.conf reader on top of inih; validation and defaults.
 * Never prints, never exits: the first problem becomes "FILE:LINE: sentence" in errbuf.
 * inih is driven through ini_parse_stream() with our own line reader so that every
 * handler call knows its line number.
 */
#include <errno.h>
#include <stdarg.h>
#include <fnmatch.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "config.h"
#include "err.h"
#include "util.h"

/* Parser state shared by the reader and the handler. */
struct cfg_parse {
	const char *text; /* NUL-free input */
	size_t len;
	size_t pos;
	int lineno;       /* line most recently handed to inih */
	int section_line; /* line of the last [section] header */
	const char *name; /* for messages */
	char *basedir;    /* directory of the file, for relative paths; NULL: cwd */
	struct config *cfg;
	int err; /* first error code, 0 if none */
	int errline;
	char msg[512];
};

static char *
cfg_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);

	if (p != NULL)
		memcpy(p, s, n);
	return p;
}

static void cfg_fail(struct cfg_parse *ps, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
cfg_fail(struct cfg_parse *ps, int err, const char *fmt, ...)
{
	va_list ap;

	if (ps->err != 0)
		return;
	ps->err = err;
	ps->errline = ps->lineno;
	va_start(ap, fmt);
	vsnprintf(ps->msg, sizeof(ps->msg), fmt, ap);
	va_end(ap);
}

/* fgets-style reader over the in-memory text; counts lines. */
static char *
cfg_reader(char *str, int num, void *stream)
{
	struct cfg_parse *ps = stream;
	size_t n = 0;

	if (ps->pos >= ps->len || num < 2)
		return NULL;
	while (ps->pos < ps->len && n < (size_t)num - 1) {
		char c = ps->text[ps->pos++];

		str[n++] = c;
		if (c == '\n')
			break;
	}
	str[n] = '\0';
	ps->lineno++;
	for (n = 0; str[n] == ' ' || str[n] == '\t'; n++)
		;
	if (str[n] == '[')
		ps->section_line = ps->lineno;
	return str;
}

/* Strips one pair of surrounding double quotes, in place. */
static void
cfg_unquote(char *s)
{
	size_t n = strlen(s);

	if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
		memmove(s, s + 1, n - 2);
		s[n - 2] = '\0';
	}
}

/*
 * Turns a path value into an owned absolute-or-relative string: "~/x" expands with HOME,
 * a relative path is taken relative to the config file's directory when require_abs is
 * 0; with require_abs, a relative path is an error.
 */
static int
cfg_path(struct cfg_parse *ps, const char *key, const char *v, int require_abs, char **outp)
{
	const char *home = getenv("HOME");
	char *p = NULL;
	size_t n;

	if (*v == '\0') {
		cfg_fail(ps, STEP_EINVAL, "empty value for '%s'", key);
		return STEP_EINVAL;
	}
	if (v[0] == '~' && (v[1] == '/' || v[1] == '\0')) {
		if (home == NULL || *home == '\0') {
			cfg_fail(
			    ps, STEP_EINVAL, "cannot expand '~' in '%s': HOME is not set", key);
			return STEP_EINVAL;
		}
		n = strlen(home) + strlen(v) + 1;
		if ((p = malloc(n)) == NULL)
			return STEP_ENOMEM;
		snprintf(p, n, "%s%s", home, v + 1);
	} else if (v[0] == '/') {
		if ((p = cfg_strdup(v)) == NULL)
			return STEP_ENOMEM;
	} else if (require_abs) {
		cfg_fail(ps, STEP_EINVAL, "'%s' must be an absolute path (got '%s')", key, v);
		return STEP_EINVAL;
	} else if (ps->basedir != NULL) {
		n = strlen(ps->basedir) + strlen(v) + 2;
		if ((p = malloc(n)) == NULL)
			return STEP_ENOMEM;
		snprintf(p, n, "%s/%s", ps->basedir, v);
	} else if ((p = cfg_strdup(v)) == NULL) {
		return STEP_ENOMEM;
	}
	*outp = p;
	return STEP_OK;
}

static int
cfg_bool(const char *v, int *out)
{
	static const char *yes[] = { "1", "yes", "true", "on" };
	static const char *no[] = { "0", "no", "false", "off" };
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return STEP_EINVAL;
}

/* Sets a string field once; a repeated key is an error (it is almost always a typo). */
static int
cfg_set(struct cfg_parse *ps, const char *sect, const char *key, char **field, char *val)
{
	if (*field != NULL) {
		cfg_fail(ps, STEP_EINVAL, "'%s' given twice in [%s]", key, sect);
		free(val);
		return STEP_EINVAL;
	}
	*field = val;
	return STEP_OK;
}

static int
cfg_server(struct cfg_parse *ps, const char *key, const char *val)
{
	struct config *c = ps->cfg;
	char host[256];
	char *v = NULL;
	int port, r;

	if (strcmp(key, "address") == 0) {
		if (config_parse_address(val, 1379, host, sizeof(host), &port) != 0) {
			cfg_fail(ps, STEP_EINVAL,
			    "bad server address '%s' (expected host or host:port)", val);
			return STEP_EINVAL;
		}
		if ((v = cfg_strdup(val)) == NULL)
			return STEP_ENOMEM;
		return cfg_set(ps, "server", key, &c->server, v);
	}
	if (strcmp(key, "user") == 0) {
		if (*val == '\0') {
			cfg_fail(ps, STEP_EINVAL, "empty user name in [server]");
			return STEP_EINVAL;
		}
		if ((v = cfg_strdup(val)) == NULL)
			return STEP_ENOMEM;
		return cfg_set(ps, "server", key, &c->user, v);
	}
	if (strcmp(key, "password_file") == 0) {
		if ((r = cfg_path(ps, key, val, 0, &v)) != 0)
			return r;
		return cfg_set(ps, "server", key, &c->password_file, v);
	}
	if (strcmp(key, "ca") == 0) {
		if ((r = cfg_path(ps, key, val, 0, &v)) != 0)
			return r;
		return cfg_set(ps, "server", key, &c->ca, v);
	}
	if (strcmp(key, "tls") == 0) {
		if (cfg_bool(val, &c->tls) != 0) {
			cfg_fail(
			    ps, STEP_EINVAL, "bad value '%s' for 'tls' (expected yes or no)", val);
			return STEP_EINVAL;
		}
		return STEP_OK;
	}
	if (strcmp(key, "password") == 0) {
		cfg_fail(ps, STEP_EINVAL,
		    "passwords do not belong in the config file; use password_file");
		return STEP_EINVAL;
	}
	cfg_fail(ps, STEP_EINVAL, "unknown key '%s' in [server]", key);
	return STEP_EINVAL;
}

static int
cfg_state(struct cfg_parse *ps, const char *key, const char *val)
{
	char *v = NULL;
	int r;

	if (strcmp(key, "path") == 0) {
		if ((r = cfg_path(ps, key, val, 0, &v)) != 0)
			return r;
		return cfg_set(ps, "state", key, &ps->cfg->state_path, v);
	}
	cfg_fail(ps, STEP_EINVAL, "unknown key '%s' in [state]", key);
	return STEP_EINVAL;
}

/* Parses `dir "NAME"` (or `dir NAME`); writes a pointer into buf or returns NULL. */
static const char *
cfg_dir_name(const char *section, char *buf, size_t buflen)
{
	const char *s;
	size_t n;

	if (strncmp(section, "dir", 3) != 0 || (section[3] != ' ' && section[3] != '\t'))
		return NULL;
	s = section + 4;
	while (*s == ' ' || *s == '\t')
		s++;
	n = strlen(s);
	if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= buflen || memchr(s, '"', n) != NULL)
		return NULL;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return buf;
}

static struct config_dir *
cfg_get_dir(struct cfg_parse *ps, const char *name)
{
	struct config *c = ps->cfg;
	struct config_dir *d;
	size_t i;

	for (i = 0; i < c->ndirs; i++)
		if (strcmp(c->dirs[i].name, name) == 0)
			return &c->dirs[i];
	d = realloc(c->dirs, (c->ndirs + 1) * sizeof(*d));
	if (d == NULL)
		return NULL;
	c->dirs = d;
	d = &c->dirs[c->ndirs];
	memset(d, 0, sizeof(*d));
	if ((d->name = cfg_strdup(name)) == NULL)
		return NULL;
	d->line = ps->section_line;
	c->ndirs++;
	return d;
}

static int
cfg_dir(struct cfg_parse *ps, const char *name, const char *key, const char *val)
{
	struct config_dir *d;
	char **ex;
	char *v = NULL;
	int r;

	if ((d = cfg_get_dir(ps, name)) == NULL)
		return STEP_ENOMEM;
	if (strcmp(key, "path") == 0) {
		if (d->path != NULL) {
			cfg_fail(ps, STEP_EINVAL, "'path' given twice for [dir \"%s\"]", name);
			return STEP_EINVAL;
		}
		if ((r = cfg_path(ps, key, val, 1, &v)) != 0)
			return r;
		d->path = v;
		return STEP_OK;
	}
	if (strcmp(key, "exclude") == 0) {
		if (*val == '\0') {
			cfg_fail(ps, STEP_EINVAL, "empty exclude pattern in [dir \"%s\"]", name);
			return STEP_EINVAL;
		}
		if ((v = cfg_strdup(val)) == NULL)
			return STEP_ENOMEM;
		ex = realloc(d->exclude, (d->nexclude + 1) * sizeof(*ex));
		if (ex == NULL) {
			free(v);
			return STEP_ENOMEM;
		}
		d->exclude = ex;
		d->exclude[d->nexclude++] = v;
		return STEP_OK;
	}
	if (strcmp(key, "rescan") == 0) {
		char *end;

		errno = 0;
		d->rescan_s = strtol(val, &end, 10);
		if (errno != 0 || end == val || *end != '\0' || d->rescan_s < 60 ||
		    d->rescan_s > 30L * 86400) {
			cfg_fail(ps, STEP_EINVAL,
			    "bad rescan '%s' in [dir \"%s\"]: seconds, 60..2592000", val, name);
			return STEP_EINVAL;
		}
		return STEP_OK;
	}
	if (strcmp(key, "keep") == 0) {
		/* Checked by its users (agent/retention.h), which live above this library. */
		if (d->keep != NULL || *val == '\0') {
			cfg_fail(
			    ps, STEP_EINVAL, "'keep' given twice or empty for [dir \"%s\"]", name);
			return STEP_EINVAL;
		}
		if ((d->keep = cfg_strdup(val)) == NULL)
			return STEP_ENOMEM;
		return STEP_OK;
	}
	cfg_fail(ps, STEP_EINVAL, "unknown key '%s' in [dir \"%s\"]", key, name);
	return STEP_EINVAL;
}

static int
cfg_handler(void *user, const char *section, const char *name, const char *value)
{
	struct cfg_parse *ps = user;
	char dname[256];
	char *val = NULL;
	const char *dn;
	int r;

	if (ps->err != 0)
		return 0;
	if ((val = cfg_strdup(value)) == NULL) {
		ps->err = STEP_ENOMEM;
		return 0;
	}
	cfg_unquote(val);
	if (strcmp(section, "server") == 0)
		r = cfg_server(ps, name, val);
	else if (strcmp(section, "state") == 0)
		r = cfg_state(ps, name, val);
	else if ((dn = cfg_dir_name(section, dname, sizeof(dname))) != NULL)
		r = cfg_dir(ps, dn, name, val);
	else if (*section == '\0') {
		cfg_fail(ps, STEP_EINVAL, "'%s' outside any section", name);
		r = STEP_EINVAL;
	} else {
		cfg_fail(ps, STEP_EINVAL,
		    "unknown section [%s] (expected [server], [state] or [dir \"NAME\"])", section);
		r = STEP_EINVAL;
	}
	free(val);
	if (r != 0 && ps->err == 0) {
		ps->err = r;
		ps->errline = ps->lineno;
		snprintf(ps->msg, sizeof(ps->msg), "%s", step_strerror(r));
	}
	return r == 0;
}

/* Rejects NUL bytes and over-long lines before inih sees them (inih would split them). */
static int
cfg_precheck(struct cfg_parse *ps)
{
	size_t i, start = 0;
	int line = 1;

	for (i = 0; i < ps->len; i++) {
		if (ps->text[i] == '\0') {
			ps->lineno = line;
			cfg_fail(ps, STEP_EINVAL, "NUL byte in the file (not a text file?)");
			return STEP_EINVAL;
		}
		if (ps->text[i] == '\n') {
			if (i - start > CONFIG_MAX_LINE)
				break;
			start = i + 1;
			line++;
		}
	}
	if (i - start > CONFIG_MAX_LINE) {
		ps->lineno = line;
		cfg_fail(ps, STEP_EINVAL, "line longer than 4096 bytes");
		return STEP_EINVAL;
	}
	return STEP_OK;
}

static int
cfg_validate(struct cfg_parse *ps)
{
	struct config *c = ps->cfg;
	size_t i;

	for (i = 0; i < c->ndirs; i++) {
		if (c->dirs[i].path == NULL) {
			ps->lineno = c->dirs[i].line;
			cfg_fail(ps, STEP_EINVAL, "[dir \"%s\"] has no 'path'", c->dirs[i].name);
			return STEP_EINVAL;
		}
	}
	return STEP_OK;
}

int
config_new(struct config **outp)
{
	struct config *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return STEP_ENOMEM;
	c->tls = -1;
	*outp = c;
	return STEP_OK;
}

int
config_parse(const char *text, size_t len, const char *name, struct config **outp, char *errbuf,
    size_t errlen)
{
	struct cfg_parse ps;
	const char *slash;
	int r;

	memset(&ps, 0, sizeof(ps));
	ps.text = text;
	ps.len = len;
	ps.name = name != NULL ? name : "<config>";
	if (name != NULL && (slash = strrchr(name, '/')) != NULL) {
		size_t n = (size_t)(slash - name);

		if ((ps.basedir = malloc(n + 2)) == NULL)
			return STEP_ENOMEM;
		if (n == 0)
			n = 1; /* "/file" → "/" */
		memcpy(ps.basedir, name, n);
		ps.basedir[n] = '\0';
	}
	if ((r = config_new(&ps.cfg)) != 0)
		goto out;
	if ((r = cfg_precheck(&ps)) != 0)
		goto out;
	/*
	 * inih's defaults cut lines at 200 bytes; a heap line buffer of our own limit is a
	 * runtime setting of the library (process-wide, harmless: we are its only user).
	 */
	ini_use_stack = false;
	ini_allow_realloc = true;
	ini_initial_alloc = 512;
	ini_max_line = CONFIG_MAX_LINE + 3;
	r = ini_parse_stream(cfg_reader, &ps, cfg_handler, &ps);
	if (r == -2) {
		r = STEP_ENOMEM;
		goto out;
	}
	if (r > 0 && (ps.err == 0 || r < ps.errline)) {
		ps.err = 0;
		ps.lineno = r;
		cfg_fail(&ps, STEP_EINVAL,
		    "syntax error (expected [section], key = value or a # comment)");
	}
	if (ps.err == 0)
		cfg_validate(&ps);
	r = ps.err;
	if (r != 0)
		goto out;
	if (name != NULL && (ps.cfg->file = cfg_strdup(name)) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	*outp = ps.cfg;
	ps.cfg = NULL;
	r = STEP_OK;
out:
	if (r != 0 && errbuf != NULL && errlen > 0) {
		if (r == STEP_ENOMEM)
			snprintf(errbuf, errlen, "%s: out of memory", ps.name);
		else
			snprintf(errbuf, errlen, "%s:%d: %s", ps.name, ps.errline, ps.msg);
	}
	config_free(ps.cfg);
	free(ps.basedir);
	return r;
}

int
config_load(const char *path, struct config **outp, char *errbuf, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int r, e;

	r = util_read_file(path, CONFIG_MAX_SIZE, &text, &len);
	if (r == STEP_ETOOBIG) {
		if (errbuf != NULL && errlen > 0)
			snprintf(errbuf, errlen, "%s: file too large (over %u bytes)", path,
			    CONFIG_MAX_SIZE);
		return r;
	}
	if (r != 0) {
		e = errno;
		if (errbuf != NULL && errlen > 0)
			snprintf(errbuf, errlen, "cannot read '%s': %s", path, strerror(e));
		errno = e;
		return STEP_ESYS;
	}
	r = config_parse(text, len, path, outp, errbuf, errlen);
	free(text);
	return r;
}

void
config_free(struct config *c)
{
	size_t i, j;

	if (c == NULL)
		return;
	for (i = 0; i < c->ndirs; i++) {
		for (j = 0; j < c->dirs[i].nexclude; j++)
			free(c->dirs[i].exclude[j]);
		free(c->dirs[i].exclude);
		free(c->dirs[i].keep);
		free(c->dirs[i].name);
		free(c->dirs[i].path);
	}
	free(c->dirs);
	free(c->file);
	free(c->server);
	free(c->user);
	free(c->password_file);
	free(c->ca);
	free(c->state_path);
	free(c);
}

const struct config_dir *
config_find_dir(const struct config *c, const char *name)
{
	size_t i;

	if (c == NULL || name == NULL)
		return NULL;
	for (i = 0; i < c->ndirs; i++)
		if (strcmp(c->dirs[i].name, name) == 0)
			return &c->dirs[i];
	return NULL;
}

static int
cfg_home_path(const char *env, const char *home_rel, const char *root_path, const char *tail,
    char *out, size_t outlen)
{
	const char *v = getenv(env);
	int n;

	if (v != NULL && v[0] == '/')
		n = snprintf(out, outlen, "%s/stepsync/%s", v, tail);
	else if (geteuid() == 0)
		n = snprintf(out, outlen, "%s", root_path);
	else if ((v = getenv("HOME")) != NULL && v[0] == '/')
		n = snprintf(out, outlen, "%s/%s/stepsync/%s", v, home_rel, tail);
	else
		return STEP_ENOENT;
	if (n < 0 || (size_t)n >= outlen)
		return STEP_ETOOBIG;
	return STEP_OK;
}

int
config_default_path(char *out, size_t outlen)
{
	const char *v = getenv("STEPSYNC_CONFIG");

	if (v != NULL && *v != '\0') {
		if (strlen(v) >= outlen)
			return STEP_ETOOBIG;
		snprintf(out, outlen, "%s", v);
		return STEP_OK;
	}
	return cfg_home_path("XDG_CONFIG_HOME", ".config", "/etc/stepsync/stepsync.conf",
	    "stepsync.conf", out, outlen);
}

int
config_default_state_path(char *out, size_t outlen)
{
	return cfg_home_path("XDG_STATE_HOME", ".local/state", "/var/lib/stepsync/state.db",
	    "state.db", out, outlen);
}

int
config_parse_address(const char *addr, int default_port, char *host, size_t hostlen, int *port)
{
	const char *h, *colon, *end;
	long long p = default_port;
	size_t n;

	if (addr == NULL || *addr == '\0')
		return STEP_EINVAL;
	if (addr[0] == '[') {
		h = addr + 1;
		if ((end = strchr(h, ']')) == NULL)
			return STEP_EINVAL;
		if (end[1] == ':') {
			if (util_parse_ll(end + 2, 1, 65535, &p) != 0)
				return STEP_EINVAL;
		} else if (end[1] != '\0') {
			return STEP_EINVAL;
		}
	} else {
		h = addr;
		colon = strchr(addr, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			end = addr + strlen(addr); /* a bare IPv6 address, no port */
		} else if (colon != NULL) {
			end = colon;
			if (util_parse_ll(colon + 1, 1, 65535, &p) != 0)
				return STEP_EINVAL;
		} else {
			end = addr + strlen(addr);
		}
	}
	n = (size_t)(end - h);
	if (n == 0 || n >= hostlen)
		return STEP_EINVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	*port = (int)p;
	return STEP_OK;
}

int
config_exclude_match(char *const *patterns, size_t npatterns, const char *relpath, int is_dir)
{
	const char *base = strrchr(relpath, '/');
	char pat[CONFIG_MAX_LINE + 1];
	size_t i, n;

	base = base != NULL ? base + 1 : relpath;
	for (i = 0; i < npatterns; i++) {
		const char *p = patterns[i];
		int anchored;

		n = strlen(p);
		if (n == 0 || n > CONFIG_MAX_LINE)
			continue;
		memcpy(pat, p, n + 1);
		if (pat[n - 1] == '/') {
			if (!is_dir)
				continue;
			pat[--n] = '\0';
			if (n == 0)
				continue;
		}
		anchored = strchr(pat, '/') != NULL;
		if (!anchored) {
			if (fnmatch(pat, base, 0) == 0)
				return 1;
			continue;
		}
		p = pat;
		while (*p == '/')
			p++;
		if (fnmatch(p, relpath, FNM_PATHNAME) == 0)
			return 1;
	}
	return 0;
}
