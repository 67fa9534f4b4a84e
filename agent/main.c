/*
 * main.c — stepsync entry point: parses the global options, merges the config file,
 * and dispatches to one command of the table below. Nothing else lives here.
 *
 * To add a command: write cmd_NAME() in agent/cmd_NAME.c, declare it in agent/cmd.h
 * (or a header of your own) and add one line to commands[].
 */
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
};

static const struct command commands[] = {
	{ "put", cmd_put, "upload files" },
	{ "get", cmd_get, "download a file" },
	{ "rm", cmd_rm, "delete a file on the server" },
	{ "info", cmd_info, "show a file's size, blocks and MD5" },
	{ "data", cmd_data, "save, show or delete a small JSON record (put/get/rm)" },
	{ "ping", cmd_ping, "check the server and show the round-trip time" },
	{ "watch", cmd_watch, "keep directories backed up as they change (inotify)" },
	{ "status", cmd_status, "show pending changes, the last snapshot and the last error" },
	{ "sync", cmd_sync, "back up directories and record a snapshot" },
	{ "restore", cmd_restore, "restore a snapshot into a directory" },
	{ "snapshots", cmd_snapshots, "list the snapshots of a name" },
	{ "prune", cmd_prune, "delete old snapshots and unreferenced objects" },
	{ "check", cmd_check, "check that the snapshots can be restored" },
};

static void
usage_all(FILE *f)
{
	size_t i;

	fprintf(f,
	    "usage: stepsync [--config FILE] [--server HOST[:PORT]] [--user NAME]\n"
	    "                [--password-file FILE] [--state DB] [--tls] [--ca FILE]\n"
	    "                [--timeout SEC] [--bwlimit RATE] [--connections N]\n"
	    "                [-v|-q] [--json] COMMAND [ARGS...]\n\ncommands:\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(f,
	    "\nRun 'stepsync COMMAND --help' for a command's options.\n"
	    "The password comes from --password-file, $STEPSYNC_PASSWORD, the config file's\n"
	    "password_file, or a prompt on the terminal.\n"
	    "--tls connects with TLS 1.2+ and verifies the server's certificate and host name\n"
	    "against the system trust store or the PEM bundle given by --ca.\n");
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
		switch (c) {
		case OPT_CONFIG:
			a.config_path = optarg;
			break;
		case OPT_SERVER:
			server_arg = optarg;
			break;
		case OPT_USER:
			a.user = optarg;
			break;
		case OPT_PASSFILE:
			a.password_file = optarg;
			break;
		case OPT_STATE:
			a.state_path = optarg;
			break;
		case OPT_TLS:
			a.tls = 1;
			a.tls_cli = 1;
			break;
		case OPT_CA:
			a.ca = optarg;
			break;
		case OPT_JSON:
			a.json = 1;
			break;
		case 'v':
			a.verbose++;
			break;
		case 'q':
			a.verbose--;
			break;
		case 'h':
		case OPT_HELP:
			usage_all(stdout);
			return AGENT_EXIT_OK;
		case OPT_TIMEOUT:
		case OPT_WINDOW:
		case OPT_BWLIMIT:
		case OPT_CONNECTIONS:
			if (global_value(&a, c, optarg) != 0)
				return AGENT_EXIT_USAGE;
			break;
		default:
			usage_all(stderr);
			return AGENT_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage_all(stderr);
		return AGENT_EXIT_USAGE;
	}
	if (a.verbose > 0)
		log_set_level(a.verbose > 1 ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	else if (a.verbose < 0)
		log_set_level(LOG_LVL_ERROR);
	a.progress = a.verbose >= 0 && !a.json && isatty(STDERR_FILENO);

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, argv[optind]) == 0)
			break;
	if (i == sizeof(commands) / sizeof(commands[0])) {
		agent_error("'%s' is not a stepsync command; see 'stepsync --help'", argv[optind]);
		return AGENT_EXIT_USAGE;
	}
	if ((r = merge_config(&a, server_arg)) != 0)
		goto out;
	catch_fatal_signals();
	argc -= optind;
	argv += optind;
	optind = 0; /* commands run getopt_long() again from scratch */
	r = commands[i].fn(&a, argc, argv);
out:
	agent_release(&a);
	return r;
}
