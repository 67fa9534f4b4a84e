/*
 * snapshot.h — finding snapshots on the server, and the sync commands' shared parts
 * (exit codes, entry points).
 *
 * On the server a snapshot NAME#SEQ is two things:
 *   FILE  s.<enc NAME>.<seq, 10 digits>   the manifest (manifest.h)
 *   DATA  i.<enc NAME>.<seq, 10 digits>   its stats {time, files, dirs, symlinks, bytes}
 * The manifest is uploaded (and verified) first, the DATA record after it. DATA records
 * are never deleted, so on a server without LIST they form the gap-free series 1..N in
 * which the latest snapshot is found by exponential then binary search; prune deletes
 * manifests from the low end only, so the manifests still on the server are the range
 * [low..N], whose low end is found by binary search too. With stepd's "list" extension
 * the manifests are simply listed. XXX: DATA records of pruned snapshots stay (about
 * 100 bytes each) because deleting them would open gaps in the series.
 */
#ifndef STEP_SNAPSHOT_H
#define STEP_SNAPSHOT_H

#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "snapshots.h"

struct agent;
struct client;

/* Exit codes of sync/restore/snapshots/prune beyond AGENT_EXIT_* (sysexits.h values),
 * so cron wrappers can tell "try again later" from "a human must look". */
#define SYNC_EXIT_INCOMPLETE 3  /* a snapshot was recorded without some files (restic's 3) */
#define SYNC_EXIT_MASSDEL    65 /* EX_DATAERR: most of the tree vanished, no snapshot */
#define SYNC_EXIT_TEMPFAIL   75 /* EX_TEMPFAIL: server unreachable, connection lost, locked */
#define SYNC_EXIT_TLS        76 /* EX_PROTOCOL: TLS handshake or certificate check failed */
#define SYNC_EXIT_NOPERM     77 /* EX_NOPERM: login refused */
#define SYNC_EXIT_CONFIG     78 /* EX_CONFIG: bad or missing configuration */

/* The exit code for a failed client call: TEMPFAIL for transport trouble, NOPERM for
 * STEP_EAUTH, TLS for STEP_ETLS (not retried: a wrong CA or name stays wrong), else
 * AGENT_EXIT_FAIL. */
int snapshot_exit_code(int err);

/*
 * The latest snapshot seq of name on the server in *seqp (0: none). hint is a seq
 * believed to exist (0: none) and only saves round trips. Returns 0 or a client error.
 */
int snapshot_latest(struct client *c, const char *name, uint64_t hint, uint64_t *seqp);

/*
 * The seqs of name's snapshots on the server, ascending, in *seqsp (caller frees; NULL
 * and *np 0 when none). Retention deletes from anywhere in the series, so there may be
 * gaps. Returns 0 or a client error.
 */
int snapshot_list(struct client *c, const char *name, uint64_t **seqsp, size_t *np);

/* 1 when manifest seq of name is on the server, 0 when not, or a client error. */
int snapshot_exists(struct client *c, const char *name, uint64_t seq);

/* Saves the DATA record of rec (STEP_EEXIST when it is there already). */
int snapshot_info_save(struct client *c, const char *name, const struct snapshots_rec *rec);
/* Deletes it: 0 (also when it was not there) or a client error. */
int snapshot_info_delete(struct client *c, const char *name, uint64_t seq);
/* Reads it: 0, STEP_ENOENT, or a client error. Missing fields read as 0. */
int snapshot_info_get(struct client *c, const char *name, uint64_t seq, struct snapshots_rec *rec);

/* The NAME to use when --name is absent: the config file's only [dir]; else prints
 * an error and returns NULL. Borrowed from a. */
const char *snapshot_default_name(struct agent *a);

/*
 * Downloads manifest seq of name (MD5-verified by the client) into an unlinked
 * temporary file under $TMPDIR and returns it opened for reading (*outp, caller
 * fclose()s). 0, STEP_ENOENT, STEP_ESYS or a client error.
 */
int snapshot_fetch_manifest(struct client *c, const char *name, uint64_t seq, FILE **outp);
/* The same for any manifest key. */
int snapshot_fetch_key(struct client *c, const char *key, FILE **outp);

/*
 * Snapshot format 2: the FILE object s.<NAME>.<seq> is one JSON line naming the root tree
 * (tree.h) instead of a manifest:
 *   {"stepsync_snapshot":2,"name":..,"seq":..,"time":..,"root":"t.<hex>",
 *    "files":..,"dirs":..,"symlinks":..,"bytes":..}
 * A format-1 object starts with a manifest header ({"stepsync_manifest":1,...}).
 */
#define SNAPSHOT_FORMAT 2
struct snapshot_record {
	char name[81]; /* MANIFEST_NAME_MAX + 1 */
	uint64_t seq;
	int64_t time;
	uint8_t root[32]; /* the root tree's id */
	uint64_t files, dirs, symlinks, bytes;
};
/* Appends the record's JSON line to out: 0 or STEP_ENOMEM / STEP_EINVAL. */
int snapshot_record_encode(const struct snapshot_record *rec, struct buf *out);
/* Parses it (hostile bytes): 0, STEP_EPROTO (not a format-2 record), STEP_EINVAL. */
int snapshot_record_decode(const char *data, size_t len, struct snapshot_record *rec);

/*
 * Downloads snapshot seq of name, of either format: *fmtp 1 with the manifest opened in
 * *fp (caller fclose()s), or 2 with *rec filled (*fp NULL). 0, STEP_ENOENT, STEP_EPROTO
 * (neither format, or its name and seq are not the ones asked for), STEP_ESYS, or a
 * client error.
 */
int snapshot_fetch(struct client *c, const char *name, uint64_t seq, int *fmtp, FILE **fp,
    struct snapshot_record *rec);

/* The same for any snapshot key, without checking the record's name and seq. */
int snapshot_fetch_any(
    struct client *c, const char *key, int *fmtp, FILE **fp, struct snapshot_record *rec);

/* Parses a snapshot ID, "SEQ" or "NAME#SEQ": 0 or STEP_EINVAL. */
int snapshot_parse_id(const char *id, uint64_t *seqp);

/* Command entry points (agent/cmd_*.c). */
int cmd_sync(struct agent *a, int argc, char **argv);
int cmd_restore(struct agent *a, int argc, char **argv);
int cmd_snapshots(struct agent *a, int argc, char **argv);
int cmd_prune(struct agent *a, int argc, char **argv);
int cmd_check(struct agent *a, int argc, char **argv);

#endif
