/*
 * cmd.h — the stepsync command context and the command entry points.
 *
 * main.c parses the global options into a struct agent and dispatches to one cmd_*()
 * through its command table. A command gets argv with argv[0] = the command name (main.c
 * has taken the global options out and put the command's options before its operands)
 * and returns the process exit status, one of the AGENT_EXIT_* values below. Commands
 * print errors git-style through agent_error() ("stepsync: put 'x.bin': server refused
 * key: already exists (402)") and, with --json, exactly one JSON document on stdout
 * through agent_json() (an array when the command reports on several things).
 *
 * The connection and the state database are opened lazily, on first use, by
 * agent_client() and agent_db(); main.c closes them after the command returns.
 */
#ifndef STEP_CMD_H
#define STEP_CMD_H

#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

#include "client.h"
#include "hash.h"

struct config;
struct db;

#define STEPSYNC_VERSION "0.1"

/*
 * Exit statuses, the same for every command (documented in `stepsync --help` and
 * stepsync(1)). 75..78 are sysexits.h values, equal to SYNC_EXIT_* in snapshot.h, so a
 * cron wrapper or systemd can tell "try again later" from "a human must look".
 */
#define AGENT_EXIT_OK         0
#define AGENT_EXIT_FAIL       1  /* any other failure (a refusal not listed below...) */
#define AGENT_EXIT_USAGE      2  /* bad command line */
#define AGENT_EXIT_INCOMPLETE 3  /* sync: snapshot recorded without some files (restic) */
#define AGENT_EXIT_NOTFOUND   4  /* no such key or snapshot on the server (404) */
#define AGENT_EXIT_CONFLICT   5  /* the key exists (402) or is being uploaded (423) */
#define AGENT_EXIT_VERIFY     6  /* MD5 mismatch, or the file changed while it was read */
#define AGENT_EXIT_LOCAL      74 /* EX_IOERR: a local file cannot be read or written */
#define AGENT_EXIT_TEMPFAIL   75 /* EX_TEMPFAIL: unreachable, timeout, connection lost, 5xx */
#define AGENT_EXIT_TLS        76 /* EX_PROTOCOL: TLS handshake or certificate check */
#define AGENT_EXIT_NOPERM     77 /* EX_NOPERM: login refused */
#define AGENT_EXIT_CONFIG     78 /* EX_CONFIG: bad config; no server, user or password */

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
	const char *run_command;   /* what agent_record_run() calls the run: NULL "sync" */
	int runs_recorded;         /* agent_record_run() calls so far */

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

/*
 * s as it may be printed on f: when f is a terminal, control characters become \n, \t,
 * \r or \xNN, so a key or file name cannot move the cursor or rewrite the screen. Returns
 * s itself when f is not a terminal or s has nothing to escape, else one of four static
 * buffers used in turn (so up to four may appear in one printf). Main thread only.
 */
const char *agent_tty_str(FILE *f, const char *s);

/*
 * A test hook, not for users: with $env naming a directory that holds two FIFOs, writes
 * a byte to "ready", then waits until the writer of "go" closes it, so a test can put
 * another process exactly here (sync: before recording its snapshot; prune: before its
 * first deletion). Does nothing when $env is unset.
 */
void agent_test_hold(const char *env);

/* one when n is 1, else many: "1 file", "2 files". */
const char *agent_plural(uint64_t n, const char *one, const char *many);
/* t as "2026-12-07T05:01:09Z" (UTC), or "-" when t <= 0. */
void agent_fmt_time(int64_t t, char *out, size_t outlen);

/*
 * The exit status for a failed call: err a STEP_E* code, status the last STEP status (0:
 * none), msg the error sentence (tells a local file from the network for STEP_ESYS).
 * See AGENT_EXIT_*; agent_client_exit() takes them from a session.
 */
int agent_exit_code(int err, int status, const char *msg);
int agent_client_exit(const struct client *c, int err);

/*
 * Records the outcome of one backup run of name ("" or NULL: the command failed before
 * any tree) in the state database's runs table (db/runs.h) and the status keys `stepsync
 * status` shows (last success, last error, last snapshot): the error is the last
 * agent_error() message. Does nothing when no state database exists yet. Never fails
 * (a database error is logged).
 */
void agent_record_run(struct agent *a, const char *name, int exit_status);

/* After `stepsync sync` returned exit_status: records a failed run that no tree recorded
 * (bad config, lock held...); a dry run or a usage error records nothing. */
void agent_run_finish(struct agent *a, int argc, char **argv, int exit_status);

/*
 * The names snapshot ID may name for NAME: "SEQ" or "NAME#SEQ" (the part before the last
 * '#' must be name). 0 and *seqp; STEP_EINVAL with errbuf saying why ("snapshot 'x#3' is
 * not a snapshot of 'tree'"). restore and snapshots use it.
 */
int snapshots_parse_id(
    const char *name, const char *id, uint64_t *seqp, char *errbuf, size_t errlen);

/* Prints "usage: stepsync USAGE" plus a hint on stderr and returns AGENT_EXIT_USAGE. */
int agent_usage(const char *usage);

/*
 * With --json, adds obj to the command's result and steals the reference (without
 * --json, only frees it). main.c prints the result once the command returned, through
 * agent_json_flush(): one compact line on stdout, obj itself when it was the only one,
 * else an array of all of them in order, so a command that reports on several things
 * (sync of several [dir]s) still prints one JSON document. A command that always lists
 * passes its own array, so that one item or none is still an array.
 * agent_json_stream(1) prints each obj at once instead (watch: one line per sync).
 */
void agent_json(const struct agent *a, json_t *obj);
void agent_json_flush(void);
/* agent_json_flush() after command ran: a command that gave no result prints
 * {"command", "exit_status"[, "error"]} instead (not after a usage error). */
void agent_json_finish(const struct agent *a, const char *command, int exit_status);
void agent_json_stream(int on);

/*
 * With --json, stdout carries the JSON document and nothing else: main.c calls this
 * before the command, and from then on whatever a command prints with printf() (a
 * summary line, a help text) goes to stderr, the JSON to the real stdout. 0 or
 * STEP_ESYS.
 */
int agent_json_claim_stdout(void);

/* With --json, prints {"command", "error", "exit_status"} for a command that failed as a
 * whole (the error was printed on stderr too). Returns ex. */
int agent_json_error(const struct agent *a, const char *command, const char *error, int ex);

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
 * a), or an error already printed with agent_error(): STEP_ENOMEM, or STEP_EINVAL / STEP_ESYS
 * for a missing server, user or password. agent_setup_exit() then gives the exit status
 * (78, or 1 for STEP_ENOMEM), after the --json error document of command.
 */
int agent_client(struct agent *a, struct client **outp);
int agent_setup_exit(const struct agent *a, const char *command, int err);

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
