/*
 * client_impl.h — what client.c (session, simple requests), transfer.c (pipelined
 * put/get) and client_pool.c (many small files) share. Private to those files.
 */
#ifndef STEP_CLIENT_IMPL_H
#define STEP_CLIENT_IMPL_H

#include <stdint.h>
#include <jansson.h>

#include "buf.h"
#include "client.h"
#include "conn.h"

#define CLIENT_EXT_RESUME     0x01
#define CLIENT_EXT_BLOCK_MD5  0x02
#define CLIENT_EXT_LIST       0x04
#define CLIENT_EXT_ZERO_SIZE  0x08
#define CLIENT_EXT_BYE        0x10
#define CLIENT_EXT_PUTMANY    0x20
#define CLIENT_EXT_BIG_BLOCKS 0x40
#define CLIENT_EXT_OBJGEN     0x80
#define CLIENT_EXT_ANY_BLOCK  0x100
#define CLIENT_EXT_SAVE_MD5   0x200
#define CLIENT_EXT_REPLACE    0x400
#define CLIENT_EXT_LIST_MTIME 0x800

#define CLIENT_RX_CHUNK (256u << 10) /* bytes asked of recv() at a time */

struct client {
	char *host;
	int port;
	char *user;
	char password_md5[HASH_MD5_HEX];
	int tls;
	char *ca;
	int timeout_ms;
	int window_opt;        /* --window, 0: automatic */
	int retries;           /* transient-failure attempts */
	int outage_ms;         /* client_set_outage()'s */
	uint64_t outage_since; /* util_now_ms() of the first refusal of this outage, 0: none */
	int outage_n;          /* waits in this outage */
	int block_md5;         /* send block_md5 to servers that advertise it */
	struct bwlimit *bw;
	char *state_path;
	client_progress_fn *progress;
	void *progress_arg;

	struct conn *conn; /* NULL when disconnected */
	char *token;       /* NULL until logged in; never logged */
	char server[64];   /* LOGIN's "server" field, "" for a reference server */
	unsigned ext;      /* CLIENT_EXT_* from LOGIN */
	int degraded;      /* 1 after a pipelining failure: one request at a time */
	uint32_t plan_bs;  /* block size of the last upload plan, 0 until one was seen */
	char store_id[65]; /* objgen: the store's id from LOGIN, "" when none */
	int64_t obj_gen;   /* objgen: the user's object generation at LOGIN */

	struct buf rx; /* received, unparsed bytes */
	struct buf tx; /* encoded request being built */

	int status;    /* last STEP status, 0 when none */
	char err[512]; /* last error sentence */
	struct db *db; /* state database, opened lazily from state_path */
};

/* Sets the error sentence (printf-style) and returns r. */
int client_fail(struct client *c, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets the error sentence from a non-200 answer: "WHAT: MEANING (STATUS)"; returns r. */
int client_fail_status(struct client *c, int r, const char *what, int status);

/* Short meaning of a STEP status ("already exists", "not found"...). */
const char *client_status_text(int status);

/* 1 for errors worth a reconnect and retry (reset, closed, timeout, refused). */
int client_transient(int r);

/* Connects and logs in unless connected. 0 or an error (sentence set). */
int client_ensure(struct client *c);

/*
 * After a failed request (r, c->status): 1 when it is a refusal worth riding through
 * (503, 429; see client_set_outage()) and the outage has not lasted too long, after
 * waiting the next backoff delay; else 0 at once. client_outage_clear() after an answered
 * request ends the outage.
 */
int client_outage_wait(struct client *c, int r);
void client_outage_clear(struct client *c);

/* Sleeps before retry attempt n (1, 2, ...): bounded exponential backoff. */
void client_backoff(int attempt);

/* A new request object {type, operation, direction REQUEST, token} (caller decrefs). */
json_t *client_req(struct client *c, const char *type, const char *op);

/*
 * Appends req (+ bin_len announced) to the tx buffer after clearing it. 0 or an error.
 * The caller then writes c->tx and the binary part.
 */
int client_encode(struct client *c, const json_t *req, uint32_t bin_len);

/*
 * Parses one complete packet from c->rx without I/O. 0: *respp (new ref), *binp and *binlen
 * point into rx and stay valid until client_rx_consume(c, *pktlen). STEP_EAGAIN when
 * incomplete; STEP_EPROTO / STEP_ETOOBIG for garbage (sentence set).
 */
int client_rx_parse(
    struct client *c, json_t **respp, const uint8_t **binp, uint32_t *binlen, size_t *pktlen);
void client_rx_consume(struct client *c, size_t n);

/* Reads what is available into rx (non-blocking). 0, STEP_ECLOSED, STEP_ESYS. */
int client_rx_fill(struct client *c);

/*
 * Waits for one whole packet (at most timeout_ms, -1: the session's timeout): like
 * client_rx_parse() but blocking. STEP_ETIMEDOUT when nothing complete came.
 */
int client_recv(struct client *c, int timeout_ms, json_t **respp, const uint8_t **binp,
    uint32_t *binlen, size_t *pktlen);

/* FILE GET asking (any_block extension) for a download plan of want_bs-byte blocks (0: the
 * server's). As client_file_info(). */
int client_file_plan(
    struct client *c, const char *key, uint32_t want_bs, struct client_file_info *info);

/* Status of an answer, or 0 when absent or not an integer. */
int client_resp_status(const json_t *resp);

/* Sends one request and waits for its answer on the current connection, no retry.
 * 0 on 200, STEP_ESTATUS otherwise (*respp set), transport errors. */
int client_roundtrip(struct client *c, const json_t *req, const void *bin, size_t binlen,
    int timeout_ms, json_t **respp);

/*
 * put --replace without the replace extension (CLIENT_PUT_ATOMIC): the temporary-key
 * dance, through client_put_file() without the replace flags. Returns what
 * client_put_file() does; on failure the sentence says which key holds a full copy.
 */
int client_put_replace_legacy(
    struct client *c, const char *path, const char *key, int flags, struct client_result *res);

/* The state database (opened on first use); NULL when there is none or it fails (the
 * failure is logged: resume then simply does not happen). */
struct db *client_state(struct client *c);

#endif
