/*
 * handler.h — one STEP request in, one reply out: the validation order of
 * STEP-PROTOCOL.md §3, dispatch to the DATA/FILE/AUTH operations, and the single table
 * mapping internal errors to status codes (handler_status). No sockets: the caller hands
 * in a decoded request and a buffer to append the encoded reply to, so this is testable
 * and fuzzable without a network.
 */
#ifndef STEPD_HANDLER_H
#define STEPD_HANDLER_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "buf.h"

struct store;
struct auth;

/* A reply packet encoded already: header and JSON text, no binary part. Freed with free(). */
struct handler_pkt {
	size_t len;
	uint8_t data[];
};

/*
 * Called (from the commit thread) when a deferred reply is ready: as an object (reply) or
 * as an encoded packet (pkt), the other NULL; both NULL: a bare 500. Steals both (the
 * callee json_decref()s reply, frees pkt). cookie is what was passed to handler_handle.
 */
typedef void handler_post_fn(void *post_arg, void *cookie, json_t *reply, struct handler_pkt *pkt);

struct handler {
	struct store *st; /* borrowed */
	struct auth *au;  /* borrowed */
	handler_post_fn *post;
	void *post_arg;
	int authed; /* set by handler_handle when the request proved its user (token or LOGIN) */
};

enum {
	HANDLER_DONE = 0,    /* a reply packet was appended to out */
	HANDLER_PENDING = 1, /* the reply comes later through post(cookie, ...) */
	HANDLER_CLOSE = 2,   /* a reply was appended; close the connection after sending it */
	/* As HANDLER_PENDING, but an UPLOAD of the request's key need not wait for the reply:
	 * a SAVE answered by its upload's commit or by the check thread (store_check.c). */
	HANDLER_PENDING_SAVE = 3,
};

/*
 * Handles one request (req: decoded JSON object; bin/binlen: the binary part) from the
 * client at peer (numeric address, for the LOGIN throttle; NULL: unknown). Appends a
 * complete reply packet to out, or returns HANDLER_PENDING. Never fails: every error
 * becomes a status code in the reply.
 */
int handler_handle(struct handler *h, const json_t *req, const uint8_t *bin, size_t binlen,
    struct buf *out, void *cookie, const char *peer);

/*
 * The PUTMANY extension: at most HANDLER_PUTMANY_MAX objects per request and
 * HANDLER_PUTMANY_MAX_BIN bytes of content, the only binary part allowed beyond one block.
 */
#define HANDLER_PUTMANY_MAX     1024
#define HANDLER_PUTMANY_MAX_BIN (4u << 20)

/* 1 when req carries a token that auth_verify accepts (the caller may then buffer a large
 * binary part for it). */
int handler_token_ok(struct handler *h, const json_t *req);

/* The any_block extension: FILE GET's want_block_size and FILE DOWNLOAD's block_size accept
 * 1..HANDLER_ANY_BLOCK_MAX bytes. */
#define HANDLER_ANY_BLOCK_MAX (1u << 20)

/* 1 when req (decoded, not yet validated) may carry a binary part larger than one block:
 * a FILE PUTMANY. The framing layer asks before it waits for such a binary part. */
int handler_big_bin_ok(const json_t *req);

/* Maps an internal STEP_E* (or 0) to a STEP status code; the one table of the server. */
int handler_status(int err);

/* A new reply object {type, operation, direction: RESPONSE, status, status_msg}; NULL on
 * allocation failure. */
json_t *handler_reply(const char *type, const char *op, int status, const char *msg);

/*
 * Appends reply (not stolen) with bin_len bytes of binary to follow; on failure (too big,
 * no memory) appends a small 500 reply instead. Returns 0, or STEP_ENOMEM when not even that
 * fit.
 */
int handler_send(struct buf *out, const json_t *reply, uint32_t bin_len);

/* Appends pkt (not stolen) as handler_send() appends a reply: NULL, or no room for it, appends
 * the small 500 reply instead. */
int handler_send_pkt(struct buf *out, const struct handler_pkt *pkt);

/* Appends an ERROR/ERROR reply with status and msg (for framing problems). */
int handler_send_error(struct buf *out, int status, const char *msg);

#endif
