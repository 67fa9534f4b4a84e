/*
 * conn_state.h — one connection's protocol state: bytes in, framing (header -> JSON ->
 * binary), the handler, encoded replies out. No sockets: loop.c moves the bytes, so the
 * state machine is fuzzable. Replies leave in request order, but requests go on being
 * handled while earlier replies are deferred (waiting for a group commit): each deferred
 * reply has a slot in an ordered queue, and replies produced behind it wait in that slot's
 * buffer. A request naming the key of a pending slot (or a LIST while anything is pending)
 * waits until the slot is answered, so it sees the committed result; but an UPLOAD does
 * not wait for a SAVE the handler answered HANDLER_PENDING_SAVE. At most
 * CONN_MAX_PENDING slots are outstanding per connection.
 */
#ifndef STEPD_CONN_STATE_H
#define STEPD_CONN_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "buf.h"

struct handler;
struct handler_pkt;
struct sockaddr;

#define CONN_MAX_PENDING 1024

/*
 * A deferred reply's place in the reply order. It is the cookie handed to the handler;
 * owner is the cookie given to conn_state_process (the loop's connection). Owned by the
 * conn_state; freed once its reply has moved to out (or by conn_state_release).
 */
struct conn_slot {
	void *owner;
	json_t *reply;           /* the delivered reply; NULL while pending */
	struct handler_pkt *pkt; /* ...or the delivered reply packet */
	int ready;               /* delivered */
	char *key;               /* the request's key (NULL: none), for ordering */
	size_t keylen;
	int upload_ok;    /* an UPLOAD of key need not wait (HANDLER_PENDING_SAVE) */
	struct buf after; /* replies of later requests, sent after this one */
	struct conn_slot *next;
};

struct conn_state {
	struct buf in;                   /* received bytes not yet handled */
	struct buf out;                  /* encoded replies ready to be sent */
	uint32_t max_bin;                /* largest binary part accepted (bytes), but a
	                                    PUTMANY's (HANDLER_PUTMANY_MAX_BIN) */
	json_t *head_req;                /* the packet at the head of in, already parsed
	                                    (a PUTMANY waiting for its binary part) */
	size_t head_nj;                  /* byte length of that packet's JSON text once
	                                    known, else 0 (not found again per read) */
	int npending;                    /* slots whose reply is not delivered yet */
	size_t queued;                   /* bytes held in the slots' after buffers */
	struct conn_slot *qhead, *qtail; /* reply order queue */
	struct conn_slot *spare;         /* one preallocated slot */
	int blocked;                     /* the next request waits for a pending slot */
	int closing;                     /* framing lost or BYE: send out, then close */
	int authed;                      /* a valid token or a LOGIN succeeded here */
	uint64_t discard;                /* bytes of a refused binary part still to drop */
	int head_nobin;                  /* the head packet's binary part is to be dropped */
	int ext_chars;                   /* the head packet's JSON is character-counted: */
	size_t ext_i, ext_count;         /* bytes and code points walked so far */
	char peer[48];                   /* client's numeric address; "" when unknown */
};

/*
 * Before a connection is authenticated (a LOGIN answered 200 or a request with a valid
 * token), a packet's JSON text may be at most CONN_UNAUTH_JSON bytes and a binary part is
 * never buffered: the token is checked as soon as the JSON is in, and without a valid one
 * the request is answered as if it had no binary part, whose bytes are then dropped as
 * they arrive. So an unauthenticated connection holds at most about CONN_UNAUTH_IN bytes.
 */
#define CONN_UNAUTH_JSON (64u << 10)
#define CONN_UNAUTH_IN   (8 + CONN_UNAUTH_JSON + (64u << 10))

/* Sets up empty buffers with limits derived from max_bin. */
void conn_state_init(struct conn_state *cs, uint32_t max_bin);
void conn_state_release(struct conn_state *cs);
/* Records the client's address (from accept) as text for the handler; NULL: unknown. */
void conn_state_set_peer(struct conn_state *cs, const struct sockaddr *sa);

/*
 * Handles every complete request in cs->in while the connection is not closing, fewer
 * than out_limit reply bytes wait (sendable or queued) and fewer than CONN_MAX_PENDING
 * replies are deferred. cookie becomes the owner of the slots of deferred replies. Oversized or
 * zero json_len/bin_len: an error reply, then closing (a binary part over max_bin is
 * refused once the JSON part is in, unless the request is a FILE PUTMANY). Unparsable
 * JSON with intact framing: a 400 reply and the connection goes on.
 */
void conn_state_process(struct conn_state *cs, struct handler *h, void *cookie, size_t out_limit);

/* Stores the deferred reply of slot (reply or pkt as handler_post_fn has them, stolen),
 * moves every reply now in order to out and resumes parsing. */
void conn_state_deliver(
    struct conn_state *cs, struct conn_slot *slot, json_t *reply, struct handler_pkt *pkt);

/* 1 while a deferred reply is outstanding or queued. */
int conn_state_pending(const struct conn_state *cs);

/* 1 when more bytes may be read into cs->in now (not closing, room left). */
int conn_state_want_read(const struct conn_state *cs, size_t out_limit);
/* How many bytes cs->in may take now (less before authentication: CONN_UNAUTH_IN). */
size_t conn_state_room(const struct conn_state *cs);

#endif
