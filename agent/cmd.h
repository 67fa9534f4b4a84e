/*
 * cmd.h — the stepsync command context and the command entry points.
 *
 * main.c parses the global options into a struct agent and dispatches to one cmd_*()
 * through its command table. A command gets argv with argv[0] = the command name and
 * returns the process exit status: 0 success, 1 failure, 2 usage error (use the
 * AGENT_EXIT_* names). Commands print errors git-style through agent_error()
 * ("stepsync: put 'x.bin': server refused key: already exists (402)") and, with --json,
 * one JSON object per command or file on stdout through agent_json().
 *
 * The connection and the state database are opened lazily, on first use, by
 * agent_client() and agent_db(); main.c closes them after the command returns.
 */
#ifndef STEP_CMD_H
#define STEP_CMD_H

#include <stdint.h>
#include <jansson.h>

#include "client.h"
#include "hash.h"

struct config;
struct db;

#define AGENT_EXIT_OK    0
#define AGENT_EXIT_FAIL  1
#define AGENT_EXIT_USAGE 2

/* Global options, after merging the command line over the config file. */
struct agent {
	const char *config_path;   /* --config, or NULL (the default file, if it exists) */
	struct config *cfg;        /* owned; an empty config when no file was read */
	char host[256];            /* from --server / config; "" when unset */
	int port;                  /* STEP_DEFAULT_PORT unless given */
	const char *user;          /* --user / config; NULL when unset */
	const char *password_file; /* --password-file / config; NULL when unset */
	const char *state_path;    /* --state / config; NULL: no state database */
	int tls;                   /* --tls / config */
	const char *ca;            /* --ca / config */
	int verbose;               /* -v count minus -q count (0 normal, <0 quiet) */
	int json;                  /* --json: machine-readable results on stdout */
	int timeout_s;             /* --timeout, default 30 */
	int window;                /* --window (hidden), 0: automatic */
	uint64_t bwlimit;          /* --bwlimit bytes/s, 0: unlimited */
	int connections;           /* --connections, default 1 */
	int progress;              /* 1 when stderr is a terminal and not quiet */
	int block_md5;             /* put --block-md5 (hidden): per-block MD5 to stepd */
	int server_cli;            /* the server address came from --server */
	int tls_cli;               /* TLS was asked for by --tls */

	/* Lazily created; use the accessors below. */
	struct client *client;           /* owned */
	struct db *db;                   /* owned */
	struct bwlimit *bw;              /* owned, NULL when unlimited */
	char password_md5[HASH_MD5_HEX]; /* "" until agent_password() ran; wiped at exit */
};

/* Prints "stepsync: MESSAGE\n" on stderr (git style: lower case, no full stop). */
void agent_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * While set, agent_error() hands each message (without the "stepsync: " prefix, borrowed
 * for the call) to fn instead of printing it: `stepsync watch` sends the sync engine's
 * errors to its log (syslog with --syslog) and keeps the last one for `stepsync status`.
 * fn NULL restores stderr. Main thread only, like agent_error().
 */
typedef void agent_error_fn(void *arg, const char *msg);
void agent_set_error_sink(agent_error_fn *fn, void *arg);

/* Prints "usage: stepsync USAGE" plus a hint on stderr and returns AGENT_EXIT_USAGE. */
int agent_usage(const char *usage);

/* With --json, prints obj as one compact line on stdout. Steals the reference. */
void agent_json(const struct agent *a, json_t *obj);

/*
 * Resolves the password (in this order: --password-file, $STEPSYNC_PASSWORD, the config
 * file's password_file, a no-echo prompt on the terminal) into a->password_md5.
 * Returns 0, or STEP_EINVAL with errbuf saying why (no terminal to prompt on, empty
 * password file...), STEP_ESYS when a file cannot be read.
 */
int agent_password(struct agent *a, char *errbuf, size_t errlen);

/*
 * The fill-in of client options from a (host, user, password, tls, timeout, window,
 * bwlimit, state, progress). Strings are borrowed from a. Needs agent_password() first
 * (agent_client() does that). 0 or STEP_EINVAL with errbuf ("no server given...").
 */
int agent_client_opts(struct agent *a, struct client_opts *o, char *errbuf, size_t errlen);

/*
 * The session for this run: created on first use (password resolved, client options
 * filled), not yet connected (the first request connects). 0 and *outp (borrowed from
 * a), or an error already printed with agent_error() (return AGENT_EXIT_FAIL then).
 */
int agent_client(struct agent *a, struct client **outp);

/*
 * The state database: --state, else the config's, else the default path
 * (config_default_state_path()). Opened on first use. 0 and *outp (borrowed), or an
 * error already printed.
 */
int agent_db(struct agent *a, struct db **outp);

/* Frees everything a owns (client, db, config, password). */
void agent_release(struct agent *a);

/* Commands: argv[0] is the command name. Return AGENT_EXIT_*. */
int cmd_put(struct agent *a, int argc, char **argv);
int cmd_get(struct agent *a, int argc, char **argv);
int cmd_rm(struct agent *a, int argc, char **argv);
int cmd_info(struct agent *a, int argc, char **argv);
int cmd_data(struct agent *a, int argc, char **argv);
int cmd_ping(struct agent *a, int argc, char **argv);

#endif
