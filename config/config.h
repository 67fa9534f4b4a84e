/*
 * config.h — stepsync.conf: an INI file read with inih, defaults and validation.
 *
 * The file has a [server] section (address, user, password_file, tls, ca), a [state]
 * section (path) and one [dir "NAME"] section per backed-up folder (path, exclude...).
 * Command-line flags override what the file says; that merging is the caller's job.
 * This module never prints and never exits: errors come back as a sentence naming the
 * file and the line.
 */
#ifndef STEP_CONFIG_H
#define STEP_CONFIG_H

#include <stddef.h>

#define CONFIG_MAX_LINE 4096       /* longest accepted line, bytes */
#define CONFIG_MAX_SIZE (1u << 20) /* largest accepted file */

/* One [dir "NAME"] section. */
struct config_dir {
	char *name;     /* NAME from the section header; never empty */
	char *path;     /* absolute path of the folder (a leading ~/ is expanded) */
	char **exclude; /* fnmatch patterns, see config_exclude_match() */
	size_t nexclude;
	char *keep;    /* retention rules "last=N daily=N ..." (agent/retention.h); NULL: none */
	long rescan_s; /* `rescan = SECONDS`: the watcher's verification rescan; 0 unset */
	int line;      /* line of the section header, for messages */
};

struct config {
	char *file;          /* the file this came from; NULL for an empty config */
	char *server;        /* "host", "host:port" or "[v6addr]:port"; NULL when unset */
	char *user;          /* NULL when unset */
	char *password_file; /* absolute or relative to the file's directory; NULL when unset */
	int tls;             /* 1 on, 0 off, -1 not set */
	char *ca;            /* CA bundle for TLS; NULL when unset */
	char *state_path;    /* state database; NULL when unset */
	struct config_dir *dirs;
	size_t ndirs;
};

/*
 * Returns a new empty config (every field unset) in *outp, or STEP_ENOMEM.
 * The caller frees it with config_free().
 */
int config_new(struct config **outp);

/*
 * Reads and validates the file at path. Returns 0 and a new config in *outp (caller
 * frees with config_free()); STEP_ESYS when the file cannot be read (errno is kept);
 * STEP_ETOOBIG for a file over CONFIG_MAX_SIZE; STEP_EINVAL for a syntax or semantic
 * error; STEP_ENOMEM. On error errbuf (when not NULL) holds "FILE:LINE: what is wrong".
 */
int config_load(const char *path, struct config **outp, char *errbuf, size_t errlen);

/*
 * Same as config_load() for text already in memory (len bytes, need not be
 * NUL-terminated). name is used in messages and to resolve relative paths (its
 * directory); it may be NULL ("<config>", relative to the current directory).
 */
int config_parse(const char *text, size_t len, const char *name, struct config **outp, char *errbuf,
    size_t errlen);

/* Frees c and everything it owns; config_free(NULL) does nothing. */
void config_free(struct config *c);

/* Returns the [dir "name"] section, or NULL. The pointer is borrowed from c. */
const struct config_dir *config_find_dir(const struct config *c, const char *name);

/*
 * Default configuration file: $STEPSYNC_CONFIG, else $XDG_CONFIG_HOME/stepsync/stepsync.conf,
 * else ~/.config/stepsync/stepsync.conf, or /etc/stepsync/stepsync.conf for root.
 * Returns 0, or STEP_ETOOBIG when out is too small, STEP_ENOENT when HOME is unknown.
 */
int config_default_path(char *out, size_t outlen);

/*
 * Default state database: $XDG_STATE_HOME/stepsync/state.db, else
 * ~/.local/state/stepsync/state.db, or /var/lib/stepsync/state.db for root.
 * Returns 0, STEP_ETOOBIG or STEP_ENOENT as config_default_path().
 */
int config_default_state_path(char *out, size_t outlen);

/*
 * Splits "host", "host:port" or "[v6addr]:port" into host and port (default_port when
 * absent). Returns 0, or STEP_EINVAL for an empty host, a bad port or an over-long host.
 */
int config_parse_address(const char *addr, int default_port, char *host, size_t hostlen, int *port);

/*
 * Exclude matching for a path relative to the synced folder ("a/b/c.txt", no leading
 * slash). Pattern rules (one pattern per exclude line):
 *   - without '/': matched with fnmatch() against the last path component ("*.tmp");
 *   - with '/' inside: matched against the whole relative path with FNM_PATHNAME,
 *     a leading '/' only anchors ("/build/out*");
 *   - a trailing '/' restricts the pattern to directories ("cache/").
 * A directory that matches is skipped with everything below it (the scanner does not
 * descend). Returns 1 when some pattern matches, else 0.
 */
int config_exclude_match(char *const *patterns, size_t npatterns, const char *relpath, int is_dir);

#endif
