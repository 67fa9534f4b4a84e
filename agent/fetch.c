/*
 * fetch.c — many objects over one session, pipelined: GETs and DOWNLOADs of several
 * objects in flight at once, answers read as they come (in order, as STEP answers), every
 * object's bytes checked against its SHA-256 id before it counts as done.
 *
 * Nothing here presents unverified bytes as good: data() receives bytes as they arrive,
 * but only done(0) says they were right, and a restart sends them again from offset 0.
 * Against a server that breaks pipelining (non-stepd: an unexpected status, a wrong
 * length or silence while several requests are in flight) the session reconnects and
 * goes on one request at a time, as transfer.c does.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_impl.h"
#include "codec.h"
#include "err.h"
#include "fetch.h"
#include "log.h"
#include "step.h"

#define FETCH_WINDOW_STEPD 256         /* requests in flight to stepd */
#define FETCH_WINDOW_OTHER 4           /* ...to other servers (transfer.c's) */
#define FETCH_TAKEN        (64u << 20) /* known bytes of the objects taken and not ended */
#define FETCH_INFLIGHT     (16u << 20) /* bytes asked for and not yet received */
#define FETCH_ATTEMPTS     8           /* failures in a row without progress before giving up */

/* Internal outcomes of a pass (never returned to callers). */
#define F_PIPEFAIL (-100)
#define F_TOKEN    (-101)

enum { OB_NEEDGET = 1, OB_GET, OB_PLAN };

int fetch_test_trust_ids;
enum { OP_GET = 1, OP_DL };

struct fobj {
	struct fetch_obj o;
	int state;
	int send_bs;          /* DOWNLOADs name block_size (any_block) */
	int ended;            /* done() was called */
	uint64_t taken;       /* its share of taken_bytes */
	uint32_t bs;          /* bytes per block of the plan */
	uint64_t total;       /* blocks */
	uint64_t next_req;    /* blocks asked for: 0..next_req-1 */
	uint64_t next_recv;   /* blocks received: 0..next_recv-1 */
	uint32_t inflight;    /* answers still expected for it */
	struct hash_ctx *sha; /* of the bytes received so far */
	struct hash_ctx *md5; /* when the GET gave an MD5 */
	char md5hex[HASH_MD5_HEX];
	struct fobj *next;
};

struct fent {
	struct fobj *ob;
	uint64_t block;
	uint32_t len; /* DOWNLOAD: the bytes expected */
	int op;
};

struct fetcher {
	struct client *c;
	const struct fetch_ops *ops;
	void *arg;
	struct fetch_stats st;
	struct fobj *head, *tail; /* objects taken and not freed, in order */
	struct fobj *scan;        /* none before it needs a request sent (fill()); NULL: none */
	int rescan;               /* an object may need requests again: scan from head */
	size_t nactive;
	struct fent *fifo; /* answers expected, in order (a ring) */
	size_t fhead, flen, fcap;
	uint64_t inflight_bytes;
	uint64_t taken_bytes; /* a connection takes no more than it fetches soon: the rest is
	                         left to the others */
	int end;              /* next() said FETCH_END */
	int window;           /* requests in flight at most, this pass */
	int stepd;            /* the server is stepd: a non-200 is an answer, not a broken pipe */
	int any_block;        /* the server has the any_block extension */
	int progress;         /* something was received since the last restart */
};

static uint32_t
block_len(const struct fobj *ob, uint64_t i)
{
	if (i + 1 < ob->total)
		return ob->bs;
	return (uint32_t)(ob->o.size - (uint64_t)ob->bs * (ob->total - 1));
}

static void
ob_release_hashes(struct fetcher *f, struct fobj *ob)
{
	f->taken_bytes -= ob->taken;
	ob->taken = 0;
	hash_free(ob->sha);
	hash_free(ob->md5);
	ob->sha = ob->md5 = NULL;
}

/* Ends ob with rc (once); it is freed when no answer for it is expected any more. */
static void ob_fail(struct fetcher *f, struct fobj *ob, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
ob_fail(struct fetcher *f, struct fobj *ob, int rc, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (ob->ended)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ob->ended = 1;
	ob_release_hashes(f, ob);
	f->ops->done(f->arg, &ob->o, rc, msg);
}

/* Frees an ended object nothing more is expected for, *pp pointing to it. */
static void
unlink_ob(struct fetcher *f, struct fobj **pp)
{
	struct fobj *ob = *pp;

	*pp = ob->next;
	if (f->scan == ob)
		f->scan = ob->next;
	f->nactive--;
	free(ob);
}

/* Frees the ended objects nothing more is expected for, from the head of the list on: answers
 * come in order, so objects end in order but for a failure, which waits for those before
 * it (a walk of the whole list for each object would cost more than the object). */
static void
reap(struct fetcher *f)
{
	while (f->head != NULL && f->head->ended && f->head->inflight == 0)
		unlink_ob(f, &f->head);
	if (f->head == NULL)
		f->tail = NULL;
}

/* Frees every ended object nothing more is expected for (after a restart). */
static void
reap_all(struct fetcher *f)
{
	struct fobj **pp = &f->head, *ob;

	f->tail = NULL;
	while ((ob = *pp) != NULL) {
		if (ob->ended && ob->inflight == 0) {
			unlink_ob(f, pp);
			continue;
		}
		f->tail = ob;
		pp = &ob->next;
	}
}

/* All bytes are in: the checks, then done(). */
static void
ob_finish(struct fetcher *f, struct fobj *ob)
{
	uint8_t sha[HASH_SHA256_LEN], md5[HASH_MD5_LEN];
	char md5hex[HASH_MD5_HEX];

	hash_final(ob->sha, sha);
	if (!hash_equal(sha, ob->o.id, HASH_SHA256_LEN) && !fetch_test_trust_ids) {
		ob_fail(f, ob, STEP_EMISMATCH, "object %s: its bytes do not hash to its key",
		    ob->o.key);
		return;
	}
	if (ob->md5 != NULL && ob->md5hex[0] != '\0') {
		hash_final(ob->md5, md5);
		hash_to_hex(md5, HASH_MD5_LEN, md5hex);
		if (strcmp(md5hex, ob->md5hex) != 0) {
			ob_fail(f, ob, STEP_EMISMATCH,
			    "object %s: downloaded data has md5 %s, the server says %s", ob->o.key,
			    md5hex, ob->md5hex);
			return;
		}
	}
	ob->ended = 1;
	ob_release_hashes(f, ob);
	f->st.objects++;
	f->st.bytes += ob->o.size;
	f->ops->done(f->arg, &ob->o, 0, "");
}

/* The object's plan is known: blocks of bs bytes. */
static void
ob_plan(struct fetcher *f, struct fobj *ob, uint32_t bs, int send_bs)
{
	ob->state = OB_PLAN;
	ob->bs = bs;
	ob->send_bs = send_bs;
	ob->total = (ob->o.size + bs - 1) / bs;
	ob->next_req = ob->next_recv = 0;
	if (ob->total == 0)
		ob_finish(f, ob);
}

static int
fifo_push(struct fetcher *f, struct fobj *ob, int op, uint64_t block, uint32_t len)
{
	if (f->flen == f->fcap) {
		size_t ncap = f->fcap ? 2 * f->fcap : 64, i;
		struct fent *n = malloc(ncap * sizeof(*n));

		if (n == NULL)
			return STEP_ENOMEM;
		for (i = 0; i < f->flen; i++)
			n[i] = f->fifo[(f->fhead + i) % f->fcap];
		free(f->fifo);
		f->fifo = n;
		f->fcap = ncap;
		f->fhead = 0;
	}
	f->fifo[(f->fhead + f->flen) % f->fcap] = (struct fent){ ob, block, len, op };
	f->flen++;
	ob->inflight++;
	if (op == OP_DL)
		f->inflight_bytes += len;
	return STEP_OK;
}

static struct fent
fifo_pop(struct fetcher *f)
{
	struct fent e = f->fifo[f->fhead];

	f->fhead = (f->fhead + 1) % f->fcap;
	f->flen--;
	e.ob->inflight--;
	if (e.op == OP_DL)
		f->inflight_bytes -= e.len;
	return e;
}

/* Appends one request for ob to the session's send buffer. */
static int
queue_request(struct fetcher *f, struct fobj *ob, int op)
{
	struct client *c = f->c;
	char js[STEP_HDR_LEN + FETCH_KEY_MAX + 600];
	uint64_t i = ob->next_req;
	int n, r;

	if (op == OP_GET)
		n = snprintf(js + STEP_HDR_LEN, sizeof(js) - STEP_HDR_LEN,
		    "{\"type\":\"FILE\",\"operation\":\"GET\",\"direction\":\"REQUEST\","
		    "\"token\":\"%s\",\"key\":\"%s\"%s}",
		    c->token, ob->o.key, f->any_block ? ",\"want_block_size\":1048576" : "");
	else
		n = snprintf(js + STEP_HDR_LEN, sizeof(js) - STEP_HDR_LEN,
		    "{\"type\":\"FILE\",\"operation\":\"DOWNLOAD\",\"direction\":\"REQUEST\","
		    "\"token\":\"%s\",\"key\":\"%s\",\"block_index\":%llu%s}",
		    c->token, ob->o.key, (unsigned long long)i,
		    ob->send_bs ? ",\"block_size\":1048576" : "");
	if (n < 0 || (size_t)n >= sizeof(js) - STEP_HDR_LEN)
		return client_fail(c, STEP_ETOOBIG, "request too long");
	codec_put_header((uint8_t *)js, (uint32_t)n, 0);
	if ((r = buf_append(&c->tx, js, STEP_HDR_LEN + (size_t)n)) != 0)
		return client_fail(c, r, "out of memory");
	if (op == OP_GET) {
		ob->state = OB_GET;
		r = fifo_push(f, ob, OP_GET, 0, 0);
	} else {
		r = fifo_push(f, ob, OP_DL, i, block_len(ob, i));
		ob->next_req++;
	}
	if (r != 0)
		return client_fail(c, r, "out of memory");
	f->st.requests++;
	return STEP_OK;
}

static int
key_plain(const char *k)
{
	size_t n = strnlen(k, FETCH_KEY_MAX);

	if (n == 0 || n == FETCH_KEY_MAX)
		return 0;
	for (; *k != '\0'; k++)
		if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
		        (*k >= '0' && *k <= '9') || *k == '.' || *k == '_' || *k == '-'))
			return 0;
	return 1;
}

/* Takes one new object from next(): 1 taken, 0 none now, FETCH_END, or an error. */
static int
take(struct fetcher *f)
{
	struct fobj *ob;
	int r;

	if ((ob = calloc(1, sizeof(*ob))) == NULL)
		return client_fail(f->c, STEP_ENOMEM, "out of memory");
	r = f->ops->next(f->arg, f->flen == 0 && f->nactive == 0, &ob->o);
	if (r != 1) {
		free(ob);
		return r == FETCH_END ? FETCH_END : 0;
	}
	if (f->tail != NULL)
		f->tail->next = ob;
	else
		f->head = ob;
	f->tail = ob;
	if (f->scan == NULL)
		f->scan = ob; /* the only one that may need a request */
	f->nactive++;
	if (!key_plain(ob->o.key)) {
		ob_fail(f, ob, STEP_EINVAL, "object key '%.80s' is not plain ASCII", ob->o.key);
		return 1;
	}
	if ((ob->sha = hash_sha256_new()) == NULL) {
		ob_fail(f, ob, STEP_ENOMEM, "out of memory");
		return client_fail(f->c, STEP_ENOMEM, "out of memory");
	}
	if (ob->o.size != FETCH_SIZE_UNKNOWN) {
		ob->taken = ob->o.size;
		f->taken_bytes += ob->taken;
	}
	if (f->any_block && ob->o.size != FETCH_SIZE_UNKNOWN)
		ob_plan(f, ob, FETCH_BLOCK, 1);
	else
		ob->state = OB_NEEDGET;
	return 1;
}

/* Queues requests up to the window: blocks of the objects in progress first (oldest
 * first, so objects finish in order), then new objects. */
static int
fill(struct fetcher *f)
{
	struct fobj *ob;
	int r;

	while (
	    f->flen < (size_t)f->window && (f->flen == 0 || f->inflight_bytes < FETCH_INFLIGHT)) {
		if (f->rescan) {
			f->scan = f->head;
			f->rescan = 0;
		}
		for (ob = f->scan; ob != NULL; ob = ob->next)
			if (!ob->ended &&
			    (ob->state == OB_NEEDGET ||
			        (ob->state == OB_PLAN && ob->next_req < ob->total)))
				break;
		f->scan = ob;
		if (ob != NULL) {
			if ((r = queue_request(f, ob, ob->state == OB_NEEDGET ? OP_GET : OP_DL)) !=
			    0)
				return r;
			continue;
		}
		if (f->end || f->nactive >= 2 * (size_t)f->window ||
		    (f->nactive > 0 && f->taken_bytes >= FETCH_TAKEN))
			break;
		if ((r = take(f)) < 0)
			return r;
		if (r == FETCH_END)
			f->end = 1;
		if (r != 1)
			break;
		reap(f); /* an object refused at once */
	}
	return STEP_OK;
}

/* A GET answer for ob. */
static int
on_get(struct fetcher *f, struct fobj *ob, const json_t *resp, int st)
{
	long long size, bs, total;
	const char *md5;
	size_t md5len;

	if (ob->ended)
		return STEP_OK;
	if (st == STEP_ST_NOTFOUND) {
		ob_fail(f, ob, STEP_ENOENT, "object %s is not on the server", ob->o.key);
		return STEP_OK;
	}
	if (st != STEP_ST_OK) {
		if (!f->stepd && f->window > 1)
			return F_PIPEFAIL;
		ob_fail(f, ob, STEP_ESTATUS, "the server refused object %s: %s (%d)", ob->o.key,
		    client_status_text(st), st);
		return STEP_OK;
	}
	if (codec_get_int(resp, "size", &size) != 0 || size < 0 ||
	    codec_get_int(resp, "block_size", &bs) != 0 || bs < 1 || bs > STEP_MAX_BIN ||
	    codec_get_int(resp, "total_block", &total) != 0 || total != (size + bs - 1) / bs ||
	    codec_get_str(resp, "md5", &md5, &md5len) != 0 || md5len != HASH_MD5_HEX - 1) {
		ob_fail(f, ob, STEP_EPROTO, "object %s: the server sent an inconsistent plan",
		    ob->o.key);
		return STEP_OK;
	}
	if (ob->o.size != FETCH_SIZE_UNKNOWN && (uint64_t)size != ob->o.size) {
		ob_fail(f, ob, STEP_EMISMATCH, "object %s has %lld bytes on the server, not %llu",
		    ob->o.key, size, (unsigned long long)ob->o.size);
		return STEP_OK;
	}
	if (ob->o.size == FETCH_SIZE_UNKNOWN && (uint64_t)size > ob->o.max_size) {
		ob_fail(
		    f, ob, STEP_ETOOBIG, "object %s is too large (%lld bytes)", ob->o.key, size);
		return STEP_OK;
	}
	ob->o.size = (uint64_t)size;
	memcpy(ob->md5hex, md5, HASH_MD5_HEX);
	if (ob->md5 == NULL && (ob->md5 = hash_md5_new()) == NULL)
		return client_fail(f->c, STEP_ENOMEM, "out of memory");
	/* any_block: DOWNLOADs name the block size the plan used (a server that ignored
	 * want_block_size gave its own, and is asked in that) */
	ob_plan(f, ob, (uint32_t)bs, f->any_block && bs == FETCH_BLOCK);
	f->rescan = 1; /* its blocks are to be asked for */
	return STEP_OK;
}

/* A DOWNLOAD answer for block e->block of e->ob. */
static int
on_block(struct fetcher *f, const struct fent *e, int st, const uint8_t *bin, uint32_t binlen)
{
	struct fobj *ob = e->ob;
	int r;

	if (st == STEP_ST_OK && binlen == e->len) {
		f->progress = 1;
		if (ob->ended)
			return STEP_OK;
		if (e->block != ob->next_recv)
			return F_PIPEFAIL; /* cannot happen with in-order answers */
		bwlimit_take(f->c->bw, binlen);
		if (hash_update(ob->sha, bin, binlen) != 0 ||
		    (ob->md5 != NULL && hash_update(ob->md5, bin, binlen) != 0)) {
			ob_fail(f, ob, STEP_ENOMEM, "out of memory");
			return STEP_OK;
		}
		r = f->ops->data(f->arg, &ob->o, e->block * ob->bs, bin, binlen);
		if (r != 0) {
			ob_fail(f, ob, r, "%s", "");
			return STEP_OK;
		}
		if (++ob->next_recv == ob->total)
			ob_finish(f, ob);
		return STEP_OK;
	}
	if (!f->stepd && f->window > 1 && st != STEP_ST_NOTFOUND)
		return F_PIPEFAIL;
	if (st == STEP_ST_NOTFOUND)
		ob_fail(f, ob, STEP_ENOENT, "object %s is not on the server", ob->o.key);
	else if (st != STEP_ST_OK)
		ob_fail(f, ob, STEP_ESTATUS, "the server refused block %llu of object %s: %s (%d)",
		    (unsigned long long)e->block, ob->o.key, client_status_text(st), st);
	else
		ob_fail(f, ob, STEP_EPROTO, "block %llu of object %s has %u bytes, expected %u",
		    (unsigned long long)e->block, ob->o.key, binlen, e->len);
	return STEP_OK;
}

/* Handles every complete answer in the receive buffer. */
static int
read_answers(struct fetcher *f)
{
	struct client *c = f->c;
	const uint8_t *bin;
	uint32_t binlen;
	size_t pktlen;
	json_t *resp;
	struct fent e;
	int st, r;

	while ((r = client_rx_parse(c, &resp, &bin, &binlen, &pktlen)) == 0) {
		st = client_resp_status(resp);
		c->status = st;
		if (f->flen == 0 || st == STEP_ST_TOKEN) {
			json_decref(resp);
			client_rx_consume(c, pktlen);
			return f->flen == 0 ? F_PIPEFAIL : F_TOKEN; /* an answer nobody asked for */
		}
		e = fifo_pop(f);
		if (e.op == OP_GET)
			r = on_get(f, e.ob, resp, st);
		else
			r = on_block(f, &e, st, bin, binlen);
		json_decref(resp);
		client_rx_consume(c, pktlen);
		if (e.ob->ended && e.ob->inflight == 0)
			reap(f);
		if (r != 0)
			return r;
	}
	return r == STEP_EAGAIN ? STEP_OK : r;
}

static int
pass(struct fetcher *f)
{
	struct client *c = f->c;
	int n, r, rd = 0, wr = 0;
	struct fobj *ob;
	size_t put;

	f->stepd = strncmp(c->server, "stepd", 5) == 0;
	f->any_block = (c->ext & CLIENT_EXT_ANY_BLOCK) != 0;
	f->window = c->degraded ? 1
	    : c->window_opt > 0 ? c->window_opt
	    : f->stepd          ? FETCH_WINDOW_STEPD
	                        : FETCH_WINDOW_OTHER;
	/* a plan made for an any_block server does not hold for another */
	for (ob = f->head; ob != NULL; ob = ob->next)
		if (!ob->ended && ob->send_bs && !f->any_block)
			ob->state = OB_NEEDGET, ob->send_bs = 0;
	f->rescan = 1;
	buf_reset(&c->tx);
	for (;;) {
		if ((r = fill(f)) != 0)
			return r;
		if (f->end && f->nactive == 0)
			return STEP_OK;
		if (f->flen == 0 && buf_avail(&c->tx) == 0)
			continue; /* next() had nothing; it blocks when asked to */
		n = conn_wait(c->conn, buf_avail(&c->tx) > 0, c->timeout_ms, &rd, &wr);
		if (n == STEP_ETIMEDOUT) {
			if (!f->stepd && f->window > 1)
				return F_PIPEFAIL;
			return client_fail(c, STEP_ETIMEDOUT, "no answer from server within %d s",
			    (c->timeout_ms + 999) / 1000);
		}
		if (n != 0)
			return client_fail(c, STEP_ESYS, "poll: %s", strerror(errno));
		if (wr && buf_avail(&c->tx) > 0) {
			struct iovec v = { buf_ptr(&c->tx), buf_avail(&c->tx) };

			if ((r = conn_writev(c->conn, &v, 1, &put)) != 0)
				return client_fail(c, r, "cannot send to server: %s",
				    r == STEP_ECLOSED ? "connection closed" : strerror(errno));
			buf_consume(&c->tx, put);
		}
		if (!rd)
			continue;
		if ((r = client_rx_fill(c)) != 0)
			return client_fail(c, r, "connection to server lost: %s",
			    r == STEP_ECLOSED ? "closed" : strerror(errno));
		if ((r = read_answers(f)) != 0)
			return r;
	}
}

/* After a broken connection: nothing is in flight, every object starts over. */
static void
restart(struct fetcher *f)
{
	struct fobj *ob;

	while (f->flen > 0)
		fifo_pop(f);
	f->inflight_bytes = 0;
	for (ob = f->head; ob != NULL; ob = ob->next) {
		if (ob->ended)
			continue;
		ob->next_req = ob->next_recv = 0;
		if (hash_reset(ob->sha) != 0 || (ob->md5 != NULL && hash_reset(ob->md5) != 0)) {
			ob_fail(f, ob, STEP_ENOMEM, "out of memory");
			continue;
		}
		if (ob->state == OB_GET)
			ob->state = OB_NEEDGET;
	}
	reap_all(f);
	f->rescan = 1;
	f->st.restarts++;
}

int
fetch_run(struct client *c, const struct fetch_ops *ops, void *arg, struct fetch_stats *st)
{
	struct fetcher f;
	struct fobj *ob;
	int r, attempt = 0;

	memset(&f, 0, sizeof(f));
	f.c = c;
	f.ops = ops;
	f.arg = arg;
	for (;;) {
		if ((r = client_ensure(c)) != 0) {
			if (client_transient(r) && ++attempt < FETCH_ATTEMPTS) {
				client_backoff(attempt);
				continue;
			}
			break;
		}
		f.progress = 0;
		if ((r = pass(&f)) == 0)
			break;
		client_disconnect(c);
		restart(&f);
		if (f.progress)
			attempt = 0;
		if (r == F_PIPEFAIL) {
			if (!c->degraded)
				log_info("pipelining failed on %s:%d; one request at a time",
				    c->host, c->port);
			c->degraded = 1;
		} else if (r == F_TOKEN) {
			log_debug("token refused; logging in again");
		} else if (!client_transient(r)) {
			break;
		} else {
			log_info("%s; retrying", c->err);
		}
		if (++attempt >= FETCH_ATTEMPTS) {
			if (r == F_PIPEFAIL || r == F_TOKEN)
				r = client_fail(
				    c, STEP_EPROTO, "the server keeps failing requests");
			break;
		}
		client_backoff(attempt);
	}
	for (ob = f.head; ob != NULL && r != 0; ob = ob->next)
		if (!ob->ended)
			ob_fail(&f, ob, r, "%s", client_error(c));
	while (f.head != NULL) {
		ob = f.head;
		f.head = ob->next;
		free(ob);
	}
	free(f.fifo);
	if (st != NULL) {
		st->objects += f.st.objects;
		st->bytes += f.st.bytes;
		st->requests += f.st.requests;
		st->restarts += f.st.restarts;
	}
	return r;
}
