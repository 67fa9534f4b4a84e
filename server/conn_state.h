/*
 * conn_state.h — one connection's protocol state: bytes in, framing (header -> JSON ->
 * binary), the handler, encoded replies out. No sockets: loop.c moves the bytes, so the
 * state machine is fuzzable. Replies leave in request order: while a deferred reply is
 * pending, no further request of this connection is handled.
 */
#ifndef STEPD_CONN_STATE_H
#define STEPD_CONN_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "buf.h"

struct handler;

struct conn_state {
	struct buf in;    /* received bytes not yet handled */
	struct buf out;   /* encoded replies not yet sent */
	uint32_t max_bin; /* largest binary part accepted (bytes) */
	int pending;      /* a deferred reply is outstanding: parsing is paused */
	int closing;      /* framing lost or BYE: send out, then close */
};

/* Sets up empty buffers with limits derived from max_bin. */
void conn_state_init(struct conn_state *cs, uint32_t max_bin);
void conn_state_release(struct conn_state *cs);

/*
 * Handles every complete request in cs->in while nothing is pending, the connection is not
 * closing and fewer than out_limit reply bytes wait. cookie is passed to the handler for
 * deferred replies. Oversized or zero json_len/bin_len: an error reply, then closing.
 * Unparsable JSON with intact framing: a 400 reply and the connection goes on.
 */
void conn_state_process(struct conn_state *cs, struct handler *h, void *cookie, size_t out_limit);

/* Appends the deferred reply (stolen) and resumes parsing. */
void conn_state_deliver(struct conn_state *cs, json_t *reply);

/* 1 when more bytes may be read into cs->in now (not closing, room left). */
int conn_state_want_read(const struct conn_state *cs, size_t out_limit);

#endif
