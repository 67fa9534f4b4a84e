/*
 * handler_priv.h — what handler.c shares with handler_file.c and handler_data.c: the
 * per-request context, field getters that turn wrong types into 410, and deferred replies.
 */
#ifndef STEPD_HANDLER_PRIV_H
#define STEPD_HANDLER_PRIV_H

#include "handler.h"
#include "store.h"

struct hreq {
	struct handler *h;
	const json_t *req;
	const char *type, *op; /* as received (validated) */
	const char *user;      /* from the token */
	const uint8_t *bin;
	size_t binlen;
	struct buf *out;
	void *cookie;
	const char *peer; /* client address or NULL; borrowed */
};

/* A reply that waits for the commit thread. */
struct hpending {
	struct store_waiter w;
	struct handler *h;
	void *cookie;
	json_t *reply; /* the 200 reply, completed or replaced by done() */
	int notfound;  /* status for STEP_ENOENT (404 or 408) */
	int want_md5;  /* add "md5" on success */
};

/* Sends status/msg for this request; always returns HANDLER_DONE. */
int hreq_fail(struct hreq *r, int status, const char *msg);
/* Sends reply (stolen); returns HANDLER_DONE. */
int hreq_send(struct hreq *r, json_t *reply);
/* A 200 reply object for this request, or NULL. */
json_t *hreq_ok(struct hreq *r, const char *msg);
/*
 * Gets the request's key: 0 with *key and *len; otherwise a 410 reply has been sent and -1 is
 * returned. When optional and absent, a new UUID is written to uuidbuf.
 */
int hreq_key(struct hreq *r, int optional, char uuidbuf[37], const char **key, size_t *len);
/* A new pending reply around reply (stolen); NULL on allocation failure (reply freed). */
struct hpending *hpending_new(struct hreq *r, json_t *reply, int notfound, int want_md5);
void hpending_free(struct hpending *p);

/*
 * hreq_ok() and hpending_new() behind the alloc:K fault hook of store.h, for the FILE and
 * DATA handlers: the hook fails them as an allocation failure would (reply freed).
 */
static inline json_t *
hreq_ok_alloc(struct hreq *r, const char *msg)
{
	return step_fault_alloc() ? NULL : hreq_ok(r, msg);
}
static inline struct hpending *
hpending_alloc(struct hreq *r, json_t *reply, int notfound, int want_md5)
{
	if (step_fault_alloc()) {
		json_decref(reply);
		return NULL;
	}
	return hpending_new(r, reply, notfound, want_md5);
}

int handler_file(struct hreq *r);
int handler_data(struct hreq *r);
/* LIST extension for FILE (data 0) and DATA (data 1). */
int handler_list(struct hreq *r, int data);
/* PUTMANY extension (FILE): many one-block objects in one request (handler_putmany.c). */
int handler_putmany(struct hreq *r);

#endif
