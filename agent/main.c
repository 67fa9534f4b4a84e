/*
 * main.c — stepsync entry point: parses the global options, merges the config file,
 * and dispatches to one command of the table below. Nothing else lives here.
 *
 * To add a command: write cmd_NAME() in agent/cmd_NAME.c, declare it in agent/cmd.h
 * (or a header of your own) and add one line to commands[].
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "cmd_watch.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "snapshot.h"
#include "step.h"
#include "util.h"

struct command {
	const char *name;
	int (*fn)(struct agent *a, int argc, char **argv);
	const char *help; /* one line for `stepsync --help` */
	/*
	 * The command's own options, so that global options and operands may come anywhere
	 * after the command: long names, a trailing ':' when the option takes a value, then
	 * after '|' the short options that take a value. Keep in step with the command's
	 * getopt table (tests/t0020-cli-options.sh checks `--help` against the man page).
	 */
	const char *opts;
};

static const struct command commands[] = {
	{ "put", cmd_put, "upload files",
	    "key: replace bwlimit: connections: window: block-md5 help" },
	{ "get", cmd_get, "download a file", "output: bwlimit: window: help|o" },
	{ "rm", cmd_rm, "delete files on the server", "help" },
	{ "info", cmd_info, "show a file's size, blocks and MD5", "help" },
	{ "data", cmd_data, "save, show or delete a small JSON record (put/get/rm)", "help" },
	{ "ping", cmd_ping, "check the server and show the round-trip time", "help" },
	{ "watch", cmd_watch, "keep directories backed up as they change (inotify)",
	    "name: debounce: rescan: prometheus: syslog max-watches: help|n" },
	{ "status", cmd_status, "show pending changes, the last runs, snapshot and error",
	    "json help" },
	{ "sync", cmd_sync, "back up directories and record a snapshot",
	    "name: dry-run allow-mass-delete skip-unchanged help|n" },
	{ "restore", cmd_restore, "restore a snapshot into a directory",
	    "name: snapshot: to: path: preserve-special-bits overwrite: help|nst" },
	{ "snapshots", cmd_snapshots, "list snapshot names, or the snapshots of a name",
	    "name: snapshot: json help|ns" },
	{ "prune", cmd_prune, "delete snapshots no keep rule keeps, and unreferenced objects",
	    "keep: keep-last: keep-hourly: keep-daily: keep-weekly: keep-monthly: keep-yearly: "
	    "name: dry-run help|kn" },
	{ "check", cmd_check, "check that the snapshots can be restored",
	    "name: read-data help|n" },
};

static void
usage_all(FILE *f)
{
	size_t i;

	fprintf(f,
	    "usage: stepsync [OPTIONS] COMMAND [ARGS...]\n"
	    "       stepsync --version | --help\n\ncommands:\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(f,
	    "\noptions (before or after the command):\n"
	    "  --config FILE         config file (default, when it exists: $STEPSYNC_CONFIG,\n"
	    "                        else $XDG_CONFIG_HOME or ~/.config, stepsync/stepsync.conf;\n"
	    "                        root: /etc/stepsync/stepsync.conf)\n"
	    "  --server HOST[:PORT]  the STEP server (default port 1379; or the config's server)\n"
	    "  --user NAME           user name to log in as (or the config's user)\n"
	    "  --password-file FILE  first line is the password (default: $STEPSYNC_PASSWORD,\n"
	    "                        the config's password_file, else a prompt on the terminal)\n"
	    "  --state DB            state database: resume data, sync state, status (default:\n"
	    "                        the config's, else $XDG_STATE_HOME or ~/.local/state,\n"
	    "                        stepsync/state.db;\n"
	    "                        root: /var/lib/stepsync/state.db)\n"
	    "  --tls                 connect with TLS 1.2+, verifying the certificate and name\n"
	    "  --ca FILE             PEM bundle to verify the server with (default: system store)\n"
	    "  --timeout SEC         connect, read and write timeout, 1..86400 (default 30);\n"
	    "                        a failed connection is retried 5 times with backoff\n"
	    "  --bwlimit RATE        cap transfers at RATE bytes per second, e.g. 500k, 10M\n"
	    "                        (default: unlimited)\n"
	    "  --connections N       connections for uploads and restores, 1..64 (default 1:\n"
	    "                        put sends one file at a time; sync uses 4 when 16 or\n"
	    "                        more files wait, and its chunks and trees go over up\n"
	    "                        to 32 connections (N if more), opened as needed;\n"
	    "                        restore 4 unless N is 2 or more)\n"
	    "  --json                print one JSON document on stdout instead of text (any\n"
	    "                        text goes to stderr)\n"
	    "  -v, --verbose         more messages on stderr (twice: debug)\n"
	    "  -q, --quiet           errors only; no progress line\n"
	    "  --version             print the version and exit\n"
	    "  -h, --help            this help; 'stepsync COMMAND --help' for a command's\n"
	    "\nexit status (every command; 'stepsync COMMAND --help' lists its own):\n"
	    "  0 success           1 other failure       2 usage error\n"
	    "  3 incomplete (sync: snapshot recorded without some files)\n"
	    "  4 not found (no such key or snapshot on the server)\n"
	    "  5 conflict (the key exists, or an upload of it is in progress)\n"
	    "  6 verification failed (MD5 mismatch, file changed while read)\n"
	    " 74 local file error (cannot read FILE, not a regular file, cannot write)\n"
	    " 75 temporary failure (server unreachable, timeout, connection lost, busy)\n"
	    " 76 TLS handshake or certificate check failed\n"
	    " 77 login refused (wrong user or password)\n"
	    " 78 configuration error (bad config file, no server, user or password)\n");
}

/* An interrupted download leaves no temporary file; then die of the signal as usual.
 * (Commands that handle signals themselves block them, so this never runs for them.) */
static void
on_fatal_signal(int sig)
{
	client_remove_temps();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void
catch_fatal_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	struct sigaction sa, old;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fatal_signal;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		/* A signal the caller ignores (nohup, background jobs) stays ignored. */
		if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
			continue;
		sigaction(sigs[i], &sa, NULL);
	}
}

enum {
	OPT_CONFIG = 256,
	OPT_SERVER,
	OPT_USER,
	OPT_PASSFILE,
	OPT_STATE,
	OPT_TLS,
	OPT_CA,
	OPT_JSON,
	OPT_TIMEOUT,
	OPT_WINDOW,
	OPT_BWLIMIT,
	OPT_CONNECTIONS,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option global_opts[] = {
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "server", required_argument, NULL, OPT_SERVER },
	{ "user", required_argument, NULL, OPT_USER },
	{ "password-file", required_argument, NULL, OPT_PASSFILE },
	{ "state", required_argument, NULL, OPT_STATE },
	{ "tls", no_argument, NULL, OPT_TLS },
	{ "ca", required_argument, NULL, OPT_CA },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "window", required_argument, NULL, OPT_WINDOW },
	{ "bwlimit", required_argument, NULL, OPT_BWLIMIT },
	{ "connections", required_argument, NULL, OPT_CONNECTIONS },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 },
};

/* Reads the config file (explicit or default) and fills what the command line left
 * unset. Returns 0, or after printing: SYNC_EXIT_CONFIG (78, EX_CONFIG) for a config file
 * that cannot be read or parsed or holds a bad address, AGENT_EXIT_USAGE for a bad
 * --server, AGENT_EXIT_FAIL when out of memory. */
static int
merge_config(struct agent *a, const char *server_arg)
{
	char path[4096], errbuf[512];
	const char *file = a->config_path;
	struct config *cfg = NULL;
	int r;

	if (file == NULL && config_default_path(path, sizeof(path)) == 0 && access(path, F_OK) == 0)
		file = path;
	if (file != NULL) {
		r = config_load(file, &cfg, errbuf, sizeof(errbuf));
		if (r != 0) {
			agent_error("%s", errbuf);
			return SYNC_EXIT_CONFIG;
		}
	} else if (config_new(&cfg) != 0) {
		agent_error("out of memory");
		return AGENT_EXIT_FAIL;
	}
	a->cfg = cfg;
	a->server_cli = server_arg != NULL;
	if (server_arg == NULL && cfg->server != NULL &&
	    config_parse_address(
	        cfg->server, STEP_DEFAULT_PORT, a->host, sizeof(a->host), &a->port) != 0) {
		agent_error(
		    "%s: bad server address '%s'", cfg->file ? cfg->file : "config", cfg->server);
		return SYNC_EXIT_CONFIG;
	}
	if (server_arg != NULL &&
	    config_parse_address(
	        server_arg, STEP_DEFAULT_PORT, a->host, sizeof(a->host), &a->port) != 0) {
		agent_error("bad server address '%s'", server_arg);
		return AGENT_EXIT_USAGE;
	}
	if (a->user == NULL)
		a->user = cfg->user;
	if (a->password_file == NULL)
		a->password_file = NULL; /* the config's is a fallback after the environment */
	if (a->state_path == NULL)
		a->state_path = cfg->state_path;
	if (!a->tls && cfg->tls == 1)
		a->tls = 1;
	if (a->ca == NULL)
		a->ca = cfg->ca;
	return 0;
}

/* Parses a global option's value; returns 0 or AGENT_EXIT_USAGE after printing. */
static int
global_value(struct agent *a, int opt, const char *v)
{
	long long n;
	unsigned long long sz;

	switch (opt) {
	case OPT_TIMEOUT:
		if (util_parse_ll(v, 1, 86400, &n) != 0)
			goto bad;
		a->timeout_s = (int)n;
		return 0;
	case OPT_WINDOW:
		if (util_parse_ll(v, 1, 1024, &n) != 0)
			goto bad;
		a->window = (int)n;
		return 0;
	case OPT_CONNECTIONS:
		if (util_parse_ll(v, 1, 64, &n) != 0)
			goto bad;
		a->connections = (int)n;
		return 0;
	case OPT_BWLIMIT:
		if (util_parse_size(v, &sz) != 0 || sz == 0)
			goto bad;
		a->bwlimit = sz;
		return 0;
	}
bad:
	agent_error("bad value '%s' for option --%s", v, global_opts[opt - OPT_CONFIG].name);
	return AGENT_EXIT_USAGE;
}

/* Applies global option opt (an OPT_* or 'v'/'q') with value v. Returns 0, -1 after
 * printing the help or the version (exit 0), or AGENT_EXIT_USAGE after a message. */
static int
global_apply(struct agent *a, int opt, const char *v, const char **server_argp)
{
	switch (opt) {
	case OPT_CONFIG:
		a->config_path = v;
		return 0;
	case OPT_SERVER:
		*server_argp = v;
		return 0;
	case OPT_USER:
		a->user = v;
		return 0;
	case OPT_PASSFILE:
		a->password_file = v;
		return 0;
	case OPT_STATE:
		a->state_path = v;
		return 0;
	case OPT_TLS:
		a->tls = 1;
		a->tls_cli = 1;
		return 0;
	case OPT_CA:
		a->ca = v;
		return 0;
	case OPT_JSON:
		a->json = 1;
		return 0;
	case 'v':
		a->verbose++;
		return 0;
	case 'q':
		a->verbose--;
		return 0;
	case 'h':
	case OPT_HELP:
		usage_all(stdout);
		return -1;
	case OPT_VERSION:
		printf("stepsync %s\n", STEPSYNC_VERSION);
		return -1;
	case OPT_TIMEOUT:
	case OPT_WINDOW:
	case OPT_BWLIMIT:
	case OPT_CONNECTIONS:
		return global_value(a, opt, v);
	}
	usage_all(stderr);
	return AGENT_EXIT_USAGE;
}

/* 1 when the len bytes at name are a global option's whole name (put's --bwlimit is the
 * global one: counted once when resolving an abbreviation). */
static int
is_global(const char *name, size_t len)
{
	const struct option *o;

	for (o = global_opts; o->name != NULL; o++)
		if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
			return 1;
	return 0;
}

/* How a word of the command line after the command is read. */
enum word_kind { WORD_UNKNOWN, WORD_GLOBAL, WORD_CMD };

/* Looks up the long option name (n bytes) among the global options (help excluded: after
 * the command it is the command's) and the command's list cmd ("a: b c:|x"). An exact
 * match wins, then a unique prefix, as getopt_long() resolves them. *argp: takes a value;
 * *gp: the global option's table entry. */
static enum word_kind
word_lookup(const char *name, size_t n, const char *cmd, int *argp, const struct option **gp)
{
	const struct option *o, *gpre = NULL;
	const char *p = cmd, *end;
	int nmatch = 0, cmd_arg = 0;
	enum word_kind kind = WORD_UNKNOWN;

	for (o = global_opts; o->name != NULL; o++) {
		if (o->val == OPT_HELP || strncmp(o->name, name, n) != 0)
			continue;
		if (strlen(o->name) == n) {
			*gp = o;
			*argp = o->has_arg == required_argument;
			return WORD_GLOBAL;
		}
		gpre = o;
		nmatch++;
	}
	while (*p != '\0' && *p != '|') {
		size_t len;

		end = p + strcspn(p, " |");
		len = (size_t)(end - p);
		if (len > 0 && p[len - 1] == ':')
			len--;
		if (len >= n && strncmp(p, name, n) == 0 && !is_global(p, len)) {
			if (len == n) {
				*argp = p[len] == ':';
				return WORD_CMD;
			}
			cmd_arg = p[len] == ':';
			kind = WORD_CMD;
			nmatch++;
		}
		p = *end == ' ' ? end + 1 : end;
	}
	if (nmatch != 1)
		return WORD_UNKNOWN;
	if (kind == WORD_CMD) {
		*argp = cmd_arg;
		return WORD_CMD;
	}
	*gp = gpre;
	*argp = gpre->has_arg == required_argument;
	return WORD_GLOBAL;
}

/* 1 when short option ch of the command takes a value. */
static int
short_takes_value(const char *cmd, char ch)
{
	const char *bar = strchr(cmd, '|');

	return bar != NULL && ch != '\0' && strchr(bar + 1, ch) != NULL;
}

/*
 * Reads the words after the command (argv[0]) as getopt_long() with permutation would:
 * global options are applied and taken out, the command's options (with their values)
 * are moved before the operands, and "--" ends the options. So `sync DIR --dry-run` and
 * `put FILE --key K --server H` both work whatever the command's own getopt string says.
 * argv is rewritten in place; *argcp is the new count. Returns 0, -1 (help or version
 * printed) or AGENT_EXIT_USAGE after a message.
 */
static int
arrange_args(struct agent *a, const char *cmd, int *argcp, char **argv, const char **server_argp)
{
	int argc = *argcp, nopt = 0, nrest = 0, i, takes, r, dashdash = 0;
	char **opts = xcalloc((size_t)argc + 1, sizeof(*opts));
	char **rest = xcalloc((size_t)argc + 1, sizeof(*rest));
	const struct option *g = NULL;

	for (i = 1; i < argc; i++) {
		char *w = argv[i];

		if (strcmp(w, "--") == 0) {
			dashdash = 1;
			for (i++; i < argc; i++)
				rest[nrest++] = argv[i];
			break;
		}
		if (w[0] != '-' || w[1] == '\0') {
			rest[nrest++] = w;
			continue;
		}
		if (w[1] == '-') {
			const char *eq = strchr(w + 2, '=');
			size_t n = eq ? (size_t)(eq - (w + 2)) : strlen(w + 2);

			takes = 0;
			if (word_lookup(w + 2, n, cmd, &takes, &g) == WORD_GLOBAL) {
				const char *v = eq ? eq + 1 : NULL;

				if (takes && v == NULL) {
					if (i + 1 >= argc) {
						agent_error("option '--%s' needs a value", g->name);
						r = AGENT_EXIT_USAGE;
						goto out;
					}
					v = argv[++i];
				} else if (!takes && v != NULL) {
					agent_error("option '--%s' takes no value", g->name);
					r = AGENT_EXIT_USAGE;
					goto out;
				}
				if ((r = global_apply(a, g->val, v, server_argp)) != 0)
					goto out;
				continue;
			}
			opts[nopt++] = w;
			if (takes && eq == NULL && i + 1 < argc)
				opts[nopt++] = argv[++i];
			continue;
		}
		if (strspn(w + 1, "vq") == strlen(w + 1)) {
			/* -v, -q, -vv...: the global verbosity flags. */
			for (takes = 1; w[takes] != '\0'; takes++)
				global_apply(a, w[takes], NULL, server_argp);
			continue;
		}
		opts[nopt++] = w;
		if (w[2] == '\0' && short_takes_value(cmd, w[1]) && i + 1 < argc)
			opts[nopt++] = argv[++i];
	}
	argc = 1;
	for (i = 0; i < nopt; i++)
		argv[argc++] = opts[i];
	if (dashdash)
		argv[argc++] = "--";
	for (i = 0; i < nrest; i++)
		argv[argc++] = rest[i];
	argv[argc] = NULL;
	*argcp = argc;
	r = 0;
out:
	free(opts);
	free(rest);
	return r;
}

/* 1 when the command was asked for its help (its options come first, "--" ends them). */
static int
asked_help(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "-h") == 0 || strncmp(argv[i], "--h", 3) == 0)
			return 1;
	return 0;
}

int
main(int argc, char **argv)
{
	struct agent a;
	const char *server_arg = NULL;
	size_t i;
	int c, r;

	memset(&a, 0, sizeof(a));
	a.port = STEP_DEFAULT_PORT;
	a.timeout_s = 30;
	a.connections = 1;
	log_init("stepsync", LOG_LVL_WARN, false);

	while ((c = getopt_long(argc, argv, "+vqh", global_opts, NULL)) != -1) {
		if (c == '?' || c == ':') {
			usage_all(stderr);
			return AGENT_EXIT_USAGE;
		}
		if ((r = global_apply(&a, c, optarg, &server_arg)) != 0)
			return r < 0 ? AGENT_EXIT_OK : r;
	}
	if (optind >= argc) {
		usage_all(stderr);
		return AGENT_EXIT_USAGE;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, argv[optind]) == 0)
			break;
	if (i == sizeof(commands) / sizeof(commands[0])) {
		agent_error("'%s' is not a stepsync command; see 'stepsync --help'", argv[optind]);
		return AGENT_EXIT_USAGE;
	}
	argc -= optind;
	argv += optind;
	if ((r = arrange_args(&a, commands[i].opts, &argc, argv, &server_arg)) != 0)
		return r < 0 ? AGENT_EXIT_OK : r;
	if (a.verbose > 0)
		log_set_level(a.verbose > 1 ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	else if (a.verbose < 0)
		log_set_level(LOG_LVL_ERROR);
	a.progress = a.verbose >= 0 && !a.json && isatty(STDERR_FILENO);

	if (a.json && agent_json_claim_stdout() != 0) {
		agent_error("cannot set up the JSON output: %s", strerror(errno));
		return AGENT_EXIT_FAIL;
	}
	if ((r = merge_config(&a, server_arg)) != 0)
		goto out;
	catch_fatal_signals();
	optind = 0; /* commands run getopt_long() again from scratch */
	r = commands[i].fn(&a, argc, argv);
	if (asked_help(argc, argv))
		agent_json_flush();
	else
		agent_json_finish(&a, commands[i].name, r); /* the command's one JSON document */
	if (strcmp(commands[i].name, "sync") == 0)
		agent_run_finish(&a, argc, argv, r);
out:
	agent_release(&a);
	return r;
}
