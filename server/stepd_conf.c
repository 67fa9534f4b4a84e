/*
 * stepd_conf.c — turns stepd.conf into long options placed before the command line's.
 * Parsing is inih's; this file only maps keys to options and reports bad ones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "err.h"
#include "stepd_conf.h"

static char **conf_argv;  /* the rewritten vector */
static char **conf_owned; /* strings we allocated */
static size_t conf_nowned;

struct conf_ctx {
	const char *const *allowed;
	char **args; /* "--key", "value" pairs */
	size_t nargs;
	int bad_line; /* 1 when the handler refused a key */
	char bad_key[64];
};

static int
conf_handler(void *user, const char *section, const char *name, const char *value)
{
	struct conf_ctx *c = user;
	const char *const *a;
	size_t n;
	char *opt;

	if (section[0] != '\0' && strcmp(section, "stepd") != 0) {
		snprintf(c->bad_key, sizeof(c->bad_key), "[%s]", section);
		c->bad_line = 1;
		return 0;
	}
	for (a = c->allowed; *a != NULL; a++)
		if (strcmp(*a, name) == 0)
			break;
	if (*a == NULL) {
		snprintf(c->bad_key, sizeof(c->bad_key), "%s", name);
		c->bad_line = 1;
		return 0;
	}
	n = strlen(name) + 3;
	if ((opt = malloc(n)) == NULL)
		return 0;
	snprintf(opt, n, "--%s", name);
	c->args[c->nargs++] = opt;
	if ((c->args[c->nargs++] = strdup(value)) == NULL)
		return 0;
	return 1;
}

/* Counts lines to size the argument array: at most one option per line. */
static size_t
conf_max_args(const char *path)
{
	FILE *f = fopen(path, "r");
	size_t lines = 1;
	int ch;

	if (f == NULL)
		return 0;
	while ((ch = fgetc(f)) != EOF)
		if (ch == '\n')
			lines++;
	fclose(f);
	return 2 * lines;
}

int
stepd_conf_expand(
    int *argcp, char ***argvp, const char *const *allowed, char *errbuf, size_t errlen)
{
	struct conf_ctx c = { allowed, NULL, 0, 0, "" };
	char **argv = *argvp, **nv;
	const char *path = NULL;
	int argc = *argcp, i, at = -1, used = 0, r, k;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			path = argv[i + 1];
			at = i;
			used = 2;
			break;
		}
		if (strncmp(argv[i], "--config=", 9) == 0) {
			path = argv[i] + 9;
			at = i;
			used = 1;
			break;
		}
	}
	if (path == NULL)
		return STEP_OK;
	if ((c.args = calloc(conf_max_args(path) + 1, sizeof(char *))) == NULL)
		return STEP_ENOMEM;
	r = ini_parse(path, conf_handler, &c);
	conf_owned = c.args;
	conf_nowned = c.nargs;
	if (r < 0) {
		snprintf(errbuf, errlen, "cannot read config '%s'", path);
		return STEP_ESYS;
	}
	if (r > 0) {
		if (c.bad_line)
			snprintf(errbuf, errlen, "%s:%d: unknown setting '%s'", path, r, c.bad_key);
		else
			snprintf(errbuf, errlen, "%s:%d: syntax error", path, r);
		return STEP_EINVAL;
	}
	if ((nv = calloc((size_t)argc + c.nargs + 1, sizeof(char *))) == NULL)
		return STEP_ENOMEM;
	k = 0;
	nv[k++] = argv[0];
	for (i = 0; i < (int)c.nargs; i++)
		nv[k++] = c.args[i];
	for (i = 1; i < argc; i++)
		if (i < at || i >= at + used)
			nv[k++] = argv[i];
	nv[k] = NULL;
	conf_argv = nv;
	*argcp = k;
	*argvp = nv;
	return STEP_OK;
}

void
stepd_conf_free(void)
{
	size_t i;

	for (i = 0; i < conf_nowned; i++)
		free(conf_owned[i]);
	free(conf_owned);
	free(conf_argv);
	conf_owned = conf_argv = NULL;
	conf_nowned = 0;
}
