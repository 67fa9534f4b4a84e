/*
 * client.h — a STEP client session: one connection to one server, logged in, with
 * pipelined, verified, resumable file transfers on top.
 *
 * A struct client connects and logs in lazily (on the first request), logs in again when
 * its token is refused (403), reconnects with bounded backoff after transient failures
 * (refused, reset, timeout) and learns the server's extensions from the LOGIN answer.
 * It speaks to a reference server (no extensions, 20480-byte blocks, silence on errors,
 * broken pipelining) as well as to stepd, relying on `status` alone.
 *
 * Every function returns 0 or a negative STEP_E* code; on failure client_error() holds a
 * lower-case sentence saying what went wrong ("server refused key: already exists
 * (402)") and client_status() the last STEP status (0 when no answer came). Nothing here
 * prints except through the optional progress callback; logging is at debug/info level.
 * A struct client is used by one thread at a time; client_put_many() runs several.
 */
#ifndef STEP_CLIENT_H
#define STEP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "hash.h"

struct db;
struct client;
struct bwlimit;

#define CLIENT_KEY_MAX 1024 /* longest key this client sends, bytes */

/* Progress: called from the transfer loop (at most ~10 times a second and at the end).
 * done/total are bytes of the current file; key is the file's key. May be called from
 * several threads at once by client_put_many(). */
typedef void client_progress_fn(void *arg, const char *key, uint64_t done, uint64_t total);

/* Connection and behaviour settings. client_new() copies everything it keeps. */
struct client_opts {
	const char *host;             /* name or address */
	int port;                     /* 0 means STEP_DEFAULT_PORT */
	const char *user;             /* STEP username */
	const char *password_md5;     /* lower-case hex MD5 of the password (what STEP sends) */
	int tls;                      /* 1: TLS (fails with STEP_ETLS until implemented) */
	const char *ca;               /* CA bundle for TLS; NULL: system default */
	int timeout_ms;               /* connect, read and write timeout; 0 means 30000 */
	int window;                   /* UPLOAD/DOWNLOAD requests in flight; 0: automatic */
	int retries;                  /* attempts after a transient failure; 0 means 5, -1 none */
	int outage_ms;                /* a request refused 503 or 429 is tried again for this
	                               * long (client_set_outage()); 0: not */
	struct bwlimit *bw;           /* shared rate limit (borrowed), NULL: unlimited */
	const char *state_path;       /* SQLite state for upload resume; NULL: none */
	int block_md5;                /* 1: send block_md5 to servers advertising it */
	client_progress_fn *progress; /* NULL: none */
	void *progress_arg;
};

/*
 * Creates a session (no I/O yet). Returns 0 and *outp (free with client_free()),
 * STEP_EINVAL for missing host/user/password, STEP_ENOMEM.
 */
int client_new(const struct client_opts *o, struct client **outp);

/* Sends BYE when connected (without waiting for an answer), closes, wipes the password
 * and frees c. client_free(NULL) does nothing. */
void client_free(struct client *c);

/*
 * Connects and logs in now (otherwise the first request does it). Returns 0,
 * STEP_ECONNECT, STEP_ETIMEDOUT, STEP_EAUTH (401: wrong user or password), STEP_ETLS,
 * STEP_ECLOSED, STEP_EPROTO.
 */
int client_connect(struct client *c);

/* Closes the connection (the next request reconnects and logs in). */
void client_disconnect(struct client *c);

/*
 * Rides through a temporary server outage: a request answered 503 (unavailable, e.g. its
 * metadata database restarting) or 429 (too busy) is tried again after 0.25 s, doubling to
 * 8 s, while the session's refusals have lasted less than ms milliseconds (counted from the
 * first refusal since the session's last answered request; 0: not at all, the default).
 * An upload keeps what the server acknowledged and continues from its "received" blocks.
 * A pending stop (util_stop_pending()) ends the waiting at once.
 */
void client_set_outage(struct client *c, int ms);

/* Replaces the progress callback (fn NULL: none). */
void client_set_progress(struct client *c, client_progress_fn *fn, void *arg);

/* Last error sentence (never NULL, "" when none) and last STEP status (0: no answer). */
const char *client_error(const struct client *c);
int client_status(const struct client *c);

/* 1 when the server advertised extension name ("resume", "block_md5", "list",
 * "zero_size", "bye", "putmany", "big_blocks", "objgen", "any_block") at login, else 0. Connects
 * first if needed (0 on failure). */
int client_has_ext(struct client *c, const char *name);

/*
 * objgen extension: the store's id and this user's object generation (it grows whenever
 * one of the user's objects is deleted) as of the LOGIN of the session; fresh: log in
 * again first, to read them now. 0, STEP_EPROTO (the server does not have it), or a
 * transport/login error.
 */
int client_store_gen(struct client *c, int fresh, char *store_id, size_t len, int64_t *genp);

/* The server's "server" string from LOGIN (e.g. "stepd/0.1"), or "" for a reference
 * server. Borrowed from c. */
const char *client_server_name(struct client *c);

/*
 * Generic request: adds the token, sends req (borrowed) with an optional binary part,
 * reads the answer into *respp (new reference, caller json_decref()s; also set on a
 * non-200 status). Returns 0 on status 200, STEP_ESTATUS on any other status, or a
 * transport error (then *respp is untouched). A 403 triggers one re-login and retry.
 */
int client_request(
    struct client *c, const json_t *req, const void *bin, size_t binlen, json_t **respp);

/* EARTH echo: round-trip time in seconds in *rttp. 0 or a transport error. */
int client_ping(struct client *c, double *rttp);

/* ---- DATA records ---- */

/* Saves fields (a JSON object, borrowed; reserved fields are refused with STEP_EINVAL)
 * under key. STEP_EEXIST when the key exists (402), STEP_ESTATUS for other refusals. */
int client_data_save(struct client *c, const char *key, const json_t *fields);
/* Fetches key's record: *outp is a new object of the data fields only (reserved
 * protocol fields removed). STEP_ENOENT for an unknown key (404). */
int client_data_get(struct client *c, const char *key, json_t **outp);
/* Deletes key's record. STEP_ENOENT for an unknown key. */
int client_data_delete(struct client *c, const char *key);

/* ---- FILE objects ---- */

struct client_file_info {
	uint64_t size;       /* bytes */
	uint32_t block_size; /* bytes, from the server */
	uint32_t total_block;
	char md5[HASH_MD5_HEX]; /* lower-case hex */
};

/* FILE GET. STEP_ENOENT when the key is unknown or not completely uploaded (404). */
int client_file_info(struct client *c, const char *key, struct client_file_info *info);

/* FILE DELETE. STEP_ENOENT when unknown (a 404 for an upload in progress also means its
 * temporary data is gone, so it counts as success: returns 0). */
int client_file_delete(struct client *c, const char *key);

/*
 * LIST (needs the "list" extension, else STEP_EPROTO with a sentence): every key that
 * starts with prefix (NULL or "": all), following "more" pages. *keysp is a new array of
 * *np new strings, free with client_keys_free().
 */
int client_list(struct client *c, const char *prefix, char ***keysp, size_t *np);
/*
 * The same, each key handed to fn as its page arrives (no list in memory). With mtimes
 * (the "list_mtime" extension, else STEP_EPROTO), fn also gets the object's commit time
 * and the server's clock ("now"), both in Unix seconds; else 0 and 0. A non-zero return
 * of fn stops the listing and is returned.
 */
int client_list_each(struct client *c, const char *prefix, int mtimes,
    int (*fn)(void *arg, const char *key, int64_t mtime, int64_t now), void *arg);
void client_keys_free(char **keys, size_t n);

/* Per-transfer flags. */
#define CLIENT_PUT_REPLACE 0x1 /* an existing key is deleted and uploaded again */
#define CLIENT_PUT_EXIST_OK                                                                        \
	0x2 /* an existing key with the same MD5 is success (content-                              \
	       addressed keys); with a different MD5 STEP_EEXIST */
/* With CLIENT_PUT_REPLACE: the old object stays until the new one is verified. stepd's
 * replace extension swaps them atomically at the commit; against other servers the file
 * goes to a temporary key first (verified), then the old key is deleted and the file
 * uploaded to it (verified), then the temporary key deleted: a failure leaves at least one
 * full copy, and the error sentence names the key that holds it. */
#define CLIENT_PUT_ATOMIC   0x8
/* No resume rows in the state database for this transfer (small files sent while another
 * connection holds the state's write lock: a sync's scan). */
#define CLIENT_PUT_NO_STATE 0x4

/* What a transfer did. */
struct client_result {
	char key[CLIENT_KEY_MAX + 1]; /* the key used (the server's choice when none given) */
	uint64_t size;                /* bytes */
	char md5[HASH_MD5_HEX];       /* verified MD5, lower-case hex */
	uint64_t blocks_sent;         /* UPLOAD/DOWNLOAD requests sent, retries included */
	uint64_t blocks_total;
	int resumed; /* 1 when an interrupted upload was continued */
	int existed; /* 1 when CLIENT_PUT_EXIST_OK found it already there */
};

/*
 * Uploads the file at path under key (NULL: the basename of path): SAVE, pipelined
 * UPLOADs, final MD5 check (the last UPLOAD's md5 and a GET). The file is read once and
 * hashed while it is sent. Resumes an interrupted upload from the state database and/or
 * the server's "received" list. Returns 0 and fills *res (may be NULL); STEP_EEXIST when
 * the key exists (and no flag allows it); STEP_ECHANGED when the file changed while it
 * was read (nothing is recorded as good); STEP_EMISMATCH when the server's MD5 differs;
 * STEP_ESYS when the file cannot be read (errno kept); transport errors as above.
 */
int client_put_file(
    struct client *c, const char *path, const char *key, int flags, struct client_result *res);

/* Uploads n bytes from memory (e.g. a snapshot manifest) under key, same checks and flags
 * as client_put_file() (no resume). */
int client_put_mem(struct client *c, const void *p, size_t n, const char *key, int flags,
    struct client_result *res);
/* The same with the bytes' MD5 (lower-case hex) computed by the caller already (NULL:
 * computed here while sending): the server's answer is checked against it. */
int client_put_mem_md5(struct client *c, const void *p, size_t n, const char *md5, const char *key,
    int flags, struct client_result *res);

/*
 * Downloads key into path: pipelined DOWNLOADs written to a temporary file in path's
 * directory, MD5 checked against the server's, then fsync and rename; never a partial
 * file under the final name. mode is the new file's permission bits (e.g. 0644).
 * Returns 0 and *res; STEP_ENOENT (unknown key), STEP_EMISMATCH, STEP_ESYS (local
 * file), transport errors.
 */
int client_get_file(
    struct client *c, const char *key, const char *path, int mode, struct client_result *res);

/* Removes the temporary files of downloads in progress. Async-signal-safe: for a
 * SIGINT/SIGTERM handler, so an interrupted get leaves nothing behind. */
void client_remove_temps(void);

/* Downloads key into a new buffer (*outp, caller frees; NUL-terminated for convenience,
 * not counted in *lenp) when its size is at most max bytes, else STEP_ETOOBIG. Verified
 * like client_get_file(). */
int client_get_mem(struct client *c, const char *key, size_t max, uint8_t **outp, size_t *lenp,
    struct client_result *res);

/* ---- several files over several connections ---- */

struct client_job {
	const char *path;         /* local file (borrowed) */
	const uint8_t *mem;       /* NULL, or path's content already read (borrowed) ... */
	size_t memlen;            /* ...memlen bytes of it... */
	const char *md5;          /* ...with this MD5 (hex): small files are sent from it */
	const char *key;          /* NULL: basename of path */
	int flags;                /* CLIENT_PUT_* */
	int rc;                   /* out: 0 or STEP_E* */
	int status;               /* out: client_status() when rc != 0 (0: no answer) */
	char error[256];          /* out: client_error() sentence when rc != 0 */
	struct client_result res; /* out when rc == 0 */
};

/*
 * Uploads every job, spreading whole files over nconn connections (threads), each with
 * its own session from o. A file is never split across connections. Returns 0 when all
 * jobs succeeded, else the first failing job's code (every job's rc is filled).
 */
int client_put_many(const struct client_opts *o, int nconn, struct client_job *jobs, size_t n);

/*
 * A pool of nconn worker threads, each with its own long-lived session from o (copied;
 * the strings it points to must outlive the pool): a connection logs in once and is
 * reused by every client_pool_put(). Returns 0 and *outp (free with client_pool_free()),
 * STEP_EINVAL (bad options), STEP_ENOMEM.
 */
struct client_pool;
int client_pool_new(const struct client_opts *o, int nconn, struct client_pool **outp);

/*
 * Uploads every job like client_put_many() (rc, error and res filled for each), but files
 * that fit in one block are pipelined many deep per connection (SAVE + UPLOAD, the
 * completing UPLOAD's MD5 checked; an existing key is checked with GET) and leave no
 * resume rows; to a server with the putmany extension, jobs whose content is given (mem,
 * md5; at most 16 KiB) go hundreds to a PUTMANY request instead, with the same checks;
 * any of them not answered 200 (or 402 and found with the same MD5) is sent again with
 * SAVE + UPLOAD; other files, and everything after a pipelining failure, go through
 * client_put_file(). A transport or login failure fails every job left with that code.
 * Returns 0 when all succeeded, else the first failing job's code. One call at a time.
 */
int client_pool_put(struct client_pool *p, struct client_job *jobs, size_t n);
/*
 * client_pool_put() in two halves: start hands jobs to the workers and returns at once (the
 * jobs must stay valid and untouched until wait returns); wait blocks until they are done
 * and returns what client_pool_put() would. wait without a start returns 0.
 */
void client_pool_start(struct client_pool *p, struct client_job *jobs, size_t n);
int client_pool_wait(struct client_pool *p);

/* Stops the workers (sending BYE) and frees p. client_pool_free(NULL) does nothing. */
void client_pool_free(struct client_pool *p);

/* ---- shared rate limit (token bucket) ---- */

/* New limit of rate bytes per second (thread-safe, shared by every client that borrows
 * it). 0 and *outp, or STEP_ENOMEM / STEP_EINVAL (rate 0). */
int bwlimit_new(uint64_t rate, struct bwlimit **outp);
void bwlimit_free(struct bwlimit *bw);
/* Blocks until n more bytes may be sent, or a stop is requested (util_stop_pending).
 * bw NULL: returns at once. */
void bwlimit_take(struct bwlimit *bw, size_t n);

#endif
