/*
 * client_pool.c — many small files over a few long-lived sessions (`stepsync sync`).
 *
 * Each worker thread keeps one connection, logged in once, across every
 * client_pool_put() call, and pipelines SAVE + the single UPLOAD of every file that fits
 * in one block, many files deep; the completing UPLOAD's MD5 is the check (a key that
 * already exists is checked with a GET instead). Nothing is written to the state
 * database for these files: a one-block upload has no partial progress worth resuming.
 * Anything unusual — a file bigger than a block, a plan of more than one block, an
 * unexpected status, a stall, a lost connection — goes to client_put_file(), which knows
 * every server quirk (it degrades to one request at a time when pipelining broke, and
 * keeps resume rows for big files). Never presents an unverified upload as good.
 *
 * To a server that advertises putmany, files whose content the caller holds (the sync's
 * scan read and hashed them) go up to POOL_PM_OBJECTS to a PUTMANY request, a few
 * requests in flight; each file's entry in the answer counts exactly as a completing
 * UPLOAD's answer would (200 and our MD5: done; 402: checked with GET). Any other entry,
 * and every file of a request refused as a whole, is sent again with SAVE + UPLOAD, so
 * correctness never rests on PUTMANY.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_impl.h"
#include "codec.h"
#include "err.h"
#include "log.h"
#include "step.h"
#include "util.h"

#define POOL_MAX_CONN    64
#define POOL_FILES_STEPD 256          /* files in flight per connection to stepd */
#define POOL_FILES_OTHER 2            /* ...to other servers: 4 requests, like transfer.c */
#define POOL_MAX_SMALL   (64u << 10)  /* bigger files use the block-pipelined path */
#define POOL_STALL_MS    2000         /* silence from a non-stepd server: pipelining broke */
#define POOL_TXQ_MAX     (16u << 20)  /* bound on queued request bytes per connection */
#define POOL_PM_OBJECTS  512          /* files per PUTMANY request, at most */
#define POOL_PM_MIN      64           /* ...and at least, while the call has that many left */
#define POOL_PM_BYTES    (2u << 20)   /* content bytes per PUTMANY request */
#define POOL_PM_JSON     (512u << 10) /* JSON text per PUTMANY request (the server takes 1 MiB) */
#define POOL_PM_MAX_OBJ  16384        /* largest file PUTMANY takes (the extension's limit) */
#define POOL_PM_DEPTH    3            /* PUTMANY requests in flight per connection */
#define POOL_SLOTS       (POOL_PM_DEPTH * POOL_PM_OBJECTS + POOL_FILES_STEPD)

enum { OP_SAVE = 1, OP_UPLOAD, OP_GET, OP_PUTMANY };

struct pool_slot {
	struct client_job *j;   /* NULL when free */
	char md5[HASH_MD5_HEX]; /* of the bytes sent */
	uint64_t size;
	int save_st; /* SAVE's status, 0 until answered */
	int odd;     /* the plan was not one block */
	int getting; /* a GET is in flight for this file */
};

struct pool_req {
	uint32_t slot; /* OP_PUTMANY: the request's index in pm[] */
	int op;
};

/* A PUTMANY request: its files' slots, in the order of its objects. */
struct pool_batch {
	uint32_t *slots; /* POOL_PM_OBJECTS of them */
	uint32_t n;
	size_t bytes; /* content */
	size_t jlen;  /* bound on the JSON text of the objects */
};

struct pool_worker {
	struct client_pool *p;
	pthread_t th;
	int started;
	struct client *c;
	uint32_t bs; /* the server's block size, 0 until a plan was seen */
	struct pool_slot *slots;
	uint32_t nslots, inuse;
	struct pool_req *fifo; /* answers expected, in order */
	size_t fhead, flen, fcap;
	struct buf txq;           /* encoded requests not yet written */
	uint8_t *scratch;         /* POOL_MAX_SMALL bytes: the file being queued */
	struct client_job **slow; /* jobs for client_put_file() */
	size_t nslow, slowcap;
	struct client_job **redo; /* jobs PUTMANY did not store: SAVE + UPLOAD them */
	size_t nredo, redocap;
	uint32_t *freel; /* free slots (a stack) */
	uint32_t nfree;
	int broken; /* pipelining failed on this server: one file at a time */
	/* PUTMANY: requests sent and unanswered are pm[pmhead..pmhead+pmsent) (mod
	 * POOL_PM_DEPTH + 1); the one being filled follows them. */
	int pm;             /* this call uses PUTMANY */
	int pm_off;         /* a PUTMANY was refused as a whole: not again on this worker */
	uint32_t pm_target; /* files per request in this call */
	struct pool_batch pm_b[POOL_PM_DEPTH + 1];
	uint32_t pmhead, pmsent;
	char *pmjs; /* POOL_PM_JSON + slack: the JSON text being built */
};

struct client_pool {
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	struct client_opts o;
	int nconn;
	struct pool_worker *w;
	struct client_job *jobs; /* the current call's jobs */
	size_t n, next;
	uint64_t gen; /* bumped per call */
	int running;  /* workers still busy with this call */
	int stop;
	int abort_rc; /* a transport or login failure ends the call: every job left gets it */
	char abort_msg[256];
};

static int
is_fatal_transport(int r)
{
	return r == STEP_ECONNECT || r == STEP_ETIMEDOUT || r == STEP_ECLOSED || r == STEP_EAUTH ||
	    r == STEP_ETLS;
}

static void
job_fail(struct client_job *j, int rc, const char *msg)
{
	j->rc = rc;
	snprintf(j->error, sizeof(j->error), "%s", msg != NULL && *msg ? msg : step_strerror(rc));
}

/* The next job of the current call, or NULL. After an abort, jobs are failed here. */
static struct client_job *
take_job(struct client_pool *p)
{
	struct client_job *j = NULL;

	pthread_mutex_lock(&p->mu);
	while (p->next < p->n) {
		j = &p->jobs[p->next++];
		if (p->abort_rc == 0)
			break;
		job_fail(j, p->abort_rc, p->abort_msg);
		j = NULL;
	}
	pthread_mutex_unlock(&p->mu);
	return j;
}

static void
pool_abort(struct client_pool *p, int rc, const char *msg)
{
	pthread_mutex_lock(&p->mu);
	if (p->abort_rc == 0) {
		p->abort_rc = rc;
		snprintf(p->abort_msg, sizeof(p->abort_msg), "%s", msg);
	}
	pthread_mutex_unlock(&p->mu);
}

static void
job_ok(struct pool_worker *w, struct pool_slot *s, int existed)
{
	struct client_job *j = s->j;

	j->rc = 0;
	j->error[0] = '\0';
	memset(&j->res, 0, sizeof(j->res));
	snprintf(j->res.key, sizeof(j->res.key), "%s", j->key);
	j->res.size = s->size;
	memcpy(j->res.md5, s->md5, HASH_MD5_HEX);
	j->res.blocks_sent = existed ? 0 : 1;
	j->res.blocks_total = 1;
	j->res.existed = existed;
	if (w->c->progress != NULL)
		w->c->progress(w->c->progress_arg, j->key, s->size, s->size);
}

/* Appends j to a growing list of jobs (*v, *n used of *cap). */
static void
jobs_push(struct client_job ***v, size_t *n, size_t *cap, struct client_job *j)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*v = xrealloc(*v, *cap * sizeof(**v));
	}
	(*v)[(*n)++] = j;
}

static void
slow_push(struct pool_worker *w, struct client_job *j)
{
	jobs_push(&w->slow, &w->nslow, &w->slowcap, j);
}

static void
redo_push(struct pool_worker *w, struct client_job *j)
{
	jobs_push(&w->redo, &w->nredo, &w->redocap, j);
}

/* A free slot's index, or -1 when all are in use. */
static int64_t
slot_take(struct pool_worker *w)
{
	if (w->nfree == 0 || w->inuse >= w->nslots)
		return -1;
	w->inuse++;
	return w->freel[--w->nfree];
}

static void
slot_release(struct pool_worker *w, struct pool_slot *s)
{
	s->j = NULL;
	w->inuse--;
	w->freel[w->nfree++] = (uint32_t)(s - w->slots);
}

static struct pool_batch *
pm_open(struct pool_worker *w)
{
	return &w->pm_b[(w->pmhead + w->pmsent) % (POOL_PM_DEPTH + 1)];
}

static void
fifo_push(struct pool_worker *w, uint32_t slot, int op)
{
	if (w->flen == w->fcap) {
		size_t ncap = w->fcap ? w->fcap * 2 : 256, i;
		struct pool_req *nf = xmalloc(ncap * sizeof(*nf));

		for (i = 0; i < w->flen; i++)
			nf[i] = w->fifo[(w->fhead + i) % w->fcap];
		free(w->fifo);
		w->fifo = nf;
		w->fcap = ncap;
		w->fhead = 0;
	}
	w->fifo[(w->fhead + w->flen) % w->fcap] = (struct pool_req){ slot, op };
	w->flen++;
}

/* Every file in flight goes to the slow path; the connection is dropped. broken: the
 * server cannot pipeline, so the rest of this worker's files go one at a time. */
static void
fail_inflight(struct pool_worker *w, int broken, const char *why)
{
	uint32_t i;

	log_info("%s; %u files in flight go the careful way", why, w->inuse + (uint32_t)w->nredo);
	for (i = 0; i < w->nslots; i++)
		if (w->slots[i].j != NULL) {
			slow_push(w, w->slots[i].j);
			slot_release(w, &w->slots[i]);
		}
	while (w->nredo > 0)
		slow_push(w, w->redo[--w->nredo]);
	for (i = 0; i <= POOL_PM_DEPTH; i++) {
		w->pm_b[i].n = 0;
		w->pm_b[i].bytes = w->pm_b[i].jlen = 0;
	}
	w->pmhead = w->pmsent = 0;
	w->flen = w->fhead = 0;
	buf_reset(&w->txq);
	client_disconnect(w->c);
	if (broken) {
		w->broken = 1;
		w->c->degraded = 1;
	}
}

/* 1 for keys that go into JSON as they are (printable ASCII, no quote or backslash);
 * other keys are rare and take the slow path. */
static int
key_plain(const char *key)
{
	const unsigned char *k;

	for (k = (const unsigned char *)key; *k; k++)
		if (*k < 0x20 || *k > 0x7e || *k == '"' || *k == '\\')
			return 0;
	return k != (const unsigned char *)key && k - (const unsigned char *)key <= CLIENT_KEY_MAX;
}

/* Appends one request (JSON text js of length n, binary part of blen bytes announced). */
static int
txq_put(struct pool_worker *w, const char *js, int n, uint32_t blen)
{
	uint8_t hdr[STEP_HDR_LEN];

	if (n < 0 || (size_t)n >= STEP_MAX_JSON)
		return STEP_ETOOBIG;
	codec_put_header(hdr, (uint32_t)n, blen);
	if (buf_append(&w->txq, hdr, sizeof(hdr)) != 0 || buf_append(&w->txq, js, (size_t)n) != 0)
		return STEP_ENOMEM;
	return 0;
}

static int
queue_get(struct pool_worker *w, uint32_t si)
{
	struct pool_slot *s = &w->slots[si];
	char js[CLIENT_KEY_MAX + 512];
	int n;

	n = snprintf(js, sizeof(js),
	    "{\"type\":\"FILE\",\"operation\":\"GET\",\"direction\":\"REQUEST\","
	    "\"token\":\"%s\",\"key\":\"%s\"}",
	    w->c->token, s->j->key);
	if (txq_put(w, js, n, 0) != 0)
		return STEP_ENOMEM;
	s->getting = 1;
	fifo_push(w, si, OP_GET);
	return 0;
}

/* Reads j's file into w->scratch. Its size in *sizep, or 0 when it is not a pipelined
 * file (empty, bigger than a block, unreadable, not regular: the slow path decides). */
static int
read_small(struct pool_worker *w, const struct client_job *j, size_t *sizep)
{
	struct stat st;
	size_t got = 0;
	ssize_t k;
	int fd, ok = 0;

	if ((fd = open(j->path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > w->bs || (uint64_t)st.st_size > POOL_MAX_SMALL)
		goto out;
	while (got < (size_t)st.st_size) {
		k = pread(fd, w->scratch + got, (size_t)st.st_size - got, (off_t)got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			goto out;
		got += (size_t)k;
	}
	*sizep = got;
	ok = 1;
out:
	close(fd);
	return ok;
}

/* Queues SAVE + UPLOAD for j in a free slot. 1: queued; 0: not a pipelined file (the
 * caller sends it the slow way); <0: out of memory. */
static int
queue_file(struct pool_worker *w, struct client_job *j)
{
	char js[CLIENT_KEY_MAX + 512];
	const uint8_t *data;
	struct pool_slot *s;
	uint32_t si;
	int64_t got;
	size_t size;
	int n, r;

	if (j->key == NULL || !key_plain(j->key) || (j->flags & CLIENT_PUT_REPLACE) || w->bs == 0)
		return 0;
	if (j->mem != NULL && j->md5 != NULL && j->memlen > 0 && j->memlen <= w->bs &&
	    j->memlen <= POOL_MAX_SMALL) {
		data = j->mem; /* read (and hashed) by the caller already */
		size = j->memlen;
	} else if (read_small(w, j, &size)) {
		data = w->scratch;
	} else {
		return 0;
	}
	if ((got = slot_take(w)) < 0)
		return 0;
	si = (uint32_t)got;
	s = &w->slots[si];
	n = snprintf(js, sizeof(js),
	    "{\"type\":\"FILE\",\"operation\":\"SAVE\",\"direction\":\"REQUEST\","
	    "\"token\":\"%s\",\"key\":\"%s\",\"size\":%zu}",
	    w->c->token, j->key, size);
	if ((r = txq_put(w, js, n, 0)) == 0) {
		n = snprintf(js, sizeof(js),
		    "{\"type\":\"FILE\",\"operation\":\"UPLOAD\",\"direction\":\"REQUEST\","
		    "\"token\":\"%s\",\"key\":\"%s\",\"block_index\":0,\"block_size\":%u}",
		    w->c->token, j->key, w->bs);
		r = txq_put(w, js, n, (uint32_t)size);
	}
	if (r == 0 && buf_append(&w->txq, data, size) != 0)
		r = STEP_ENOMEM;
	if (r != 0) {
		slot_release(w, s);
		return r;
	}
	if (data == j->mem)
		snprintf(s->md5, sizeof(s->md5), "%s", j->md5);
	else
		hash_md5_hex(data, size, s->md5);
	bwlimit_take(w->c->bw, size);
	s->j = j;
	s->size = size;
	s->save_st = 0;
	s->odd = 0;
	s->getting = 0;
	fifo_push(w, si, OP_SAVE);
	fifo_push(w, si, OP_UPLOAD);
	return 1;
}

/* Sends the PUTMANY being filled: its objects' JSON, then their contents. 0 or
 * STEP_ENOMEM. */
static int
pm_flush(struct pool_worker *w)
{
	struct pool_batch *b = pm_open(w);
	size_t len, cap = POOL_PM_JSON + CLIENT_KEY_MAX + 512;
	uint32_t i;
	int n, r;

	if (b->n == 0)
		return 0;
	n = snprintf(w->pmjs, cap,
	    "{\"type\":\"FILE\",\"operation\":\"PUTMANY\",\"direction\":\"REQUEST\","
	    "\"token\":\"%s\",\"objects\":[",
	    w->c->token);
	if (n < 0 || (size_t)n >= cap)
		return STEP_ENOMEM;
	len = (size_t)n;
	for (i = 0; i < b->n; i++) {
		const struct pool_slot *s = &w->slots[b->slots[i]];

		n = snprintf(w->pmjs + len, cap - len,
		    "%s{\"key\":\"%s\",\"size\":%llu,\"md5\":\"%s\"}", i > 0 ? "," : "", s->j->key,
		    (unsigned long long)s->size, s->md5);
		if (n < 0 || (size_t)n >= cap - len - 2)
			return STEP_ENOMEM; /* cannot happen: jlen bounds the text */
		len += (size_t)n;
	}
	memcpy(w->pmjs + len, "]}", 2);
	len += 2;
	if ((r = txq_put(w, w->pmjs, (int)len, (uint32_t)b->bytes)) != 0)
		return r;
	for (i = 0; i < b->n; i++) {
		const struct pool_slot *s = &w->slots[b->slots[i]];

		if (buf_append(&w->txq, s->j->mem, s->size) != 0)
			return STEP_ENOMEM;
	}
	fifo_push(w, (uint32_t)(b - w->pm_b), OP_PUTMANY);
	w->pmsent++;
	pm_open(w)->n = 0;
	pm_open(w)->bytes = pm_open(w)->jlen = 0;
	return 0;
}

/* Adds j to the PUTMANY being filled, sending it once full. 1: added; 0: not a PUTMANY
 * file (or no slot free); <0: out of memory. */
static int
pm_add(struct pool_worker *w, struct client_job *j)
{
	struct pool_batch *b = pm_open(w);
	struct pool_slot *s;
	int64_t si;

	if (j->key == NULL || !key_plain(j->key) || (j->flags & CLIENT_PUT_REPLACE) ||
	    j->mem == NULL || j->md5 == NULL || j->memlen == 0 || j->memlen > POOL_PM_MAX_OBJ)
		return 0;
	if ((si = slot_take(w)) < 0)
		return 0;
	s = &w->slots[si];
	s->j = j;
	s->size = j->memlen;
	snprintf(s->md5, sizeof(s->md5), "%s", j->md5);
	s->save_st = 0;
	s->odd = 0;
	s->getting = 0;
	b->slots[b->n++] = (uint32_t)si;
	b->bytes += j->memlen;
	b->jlen += strlen(j->key) + 80;
	bwlimit_take(w->c->bw, j->memlen);
	/* Full when the next file might not fit: never over a limit. */
	if (b->n >= w->pm_target || b->bytes > POOL_PM_BYTES - POOL_PM_MAX_OBJ ||
	    b->jlen > POOL_PM_JSON - (CLIENT_KEY_MAX + 80))
		return pm_flush(w) == 0 ? 1 : STEP_ENOMEM;
	return 1;
}

/* Lower-cases a hex MD5 in place; 1 when resp's md5 equals want. */
static int
md5_equal(const json_t *resp, const char *want)
{
	char got[HASH_MD5_HEX];
	const char *m;
	size_t len, i;

	if (codec_get_str(resp, "md5", &m, &len) != 0 || len != HASH_MD5_HEX - 1)
		return 0;
	for (i = 0; i < len; i++)
		got[i] = (m[i] >= 'A' && m[i] <= 'F') ? (char)(m[i] + ('a' - 'A')) : m[i];
	got[len] = '\0';
	return want[0] != '\0' && strcmp(got, want) == 0;
}

/* An existing key (402) for slot si, as on SAVE: checked with a GET when the job allows
 * it, else the job fails. 0, or 1 when the pipeline was given up. */
static int
on_exists(struct pool_worker *w, uint32_t si)
{
	struct pool_slot *s = &w->slots[si];

	if (s->j->flags & CLIENT_PUT_EXIST_OK) {
		if (queue_get(w, si) == 0)
			return 0;
		fail_inflight(w, 0, "out of memory");
		return 1;
	}
	job_fail(s->j, STEP_EEXIST, "server refused key: already exists (402)");
	slot_release(w, s);
	return 0;
}

/* The answer to the oldest PUTMANY in flight. 0, or 1 when the pipeline was given up. */
static int
on_putmany(struct pool_worker *w, const json_t *resp)
{
	struct pool_batch *b = &w->pm_b[w->pmhead];
	const json_t *res = json_object_get(resp, "results");
	int st = client_resp_status(resp), whole;
	uint32_t i, nredo = 0;

	w->pmhead = (w->pmhead + 1) % (POOL_PM_DEPTH + 1);
	w->pmsent--;
	whole = st != STEP_ST_OK || !json_is_array(res) || json_array_size(res) != b->n;
	if (whole && (st == STEP_ST_UNAVAILABLE || st == STEP_ST_THROTTLE)) {
		/* The server is down or busy for a while, not unable: PUTMANY stays on. */
		log_info("PUTMANY refused (%d): %u files go with SAVE and UPLOAD", st, b->n);
	} else if (whole) {
		log_info("PUTMANY refused (%d): %u files go with SAVE and UPLOAD, and the rest too",
		    st, b->n);
		w->pm_off = 1;
		w->pm = 0;
	}
	for (i = 0; i < b->n; i++) {
		struct pool_slot *s = &w->slots[b->slots[i]];
		const json_t *e = whole ? NULL : json_array_get(res, i);
		int est = e != NULL ? client_resp_status(e) : 0;

		if (est == STEP_ST_OK && md5_equal(e, s->md5)) {
			job_ok(w, s, 0);
			slot_release(w, s);
		} else if (est == STEP_ST_EXISTS) {
			if (on_exists(w, b->slots[i]) != 0)
				return 1;
		} else {
			redo_push(w, s->j);
			slot_release(w, s);
			nredo++;
		}
	}
	if (nredo > 0 && !whole)
		log_info("PUTMANY: %u of %u files not stored, sending them with SAVE and UPLOAD",
		    nredo, b->n);
	b->n = 0;
	b->bytes = b->jlen = 0;
	return 0;
}

/* One answer. 0, or 1 when the pipeline was given up (fail_inflight ran). */
static int
on_answer(struct pool_worker *w, const json_t *resp)
{
	struct pool_req q;
	struct pool_slot *s;
	long long total, size;
	int st = client_resp_status(resp);

	if (w->flen == 0) {
		fail_inflight(w, 1, "server answered a request that was not sent");
		return 1;
	}
	q = w->fifo[w->fhead];
	w->fhead = (w->fhead + 1) % w->fcap;
	w->flen--;
	if (st == STEP_ST_TOKEN) {
		fail_inflight(w, 0, "token refused");
		return 1;
	}
	if (q.op == OP_PUTMANY)
		return on_putmany(w, resp);
	s = &w->slots[q.slot];
	switch (q.op) {
	case OP_SAVE:
		s->save_st = st;
		if (st == STEP_ST_OK &&
		    (codec_get_int(resp, "total_block", &total) != 0 || total != 1))
			s->odd = 1;
		return 0;
	case OP_UPLOAD:
		if (s->save_st == STEP_ST_OK && !s->odd && st == STEP_ST_OK &&
		    md5_equal(resp, s->md5)) {
			job_ok(w, s, 0);
			slot_release(w, s);
			return 0;
		}
		if (s->save_st == STEP_ST_EXISTS)
			return on_exists(w, q.slot);
		if (s->save_st == STEP_ST_OK && !s->odd && st == STEP_ST_LENGTH) {
			/* A one-block plan and the right length refused: the server read our
			 * next request into this block (STEP-PROTOCOL.md §8). */
			fail_inflight(w, 1, "server cannot pipeline (406 on a whole block)");
			return 1;
		}
		slow_push(w, s->j);
		slot_release(w, s);
		return 0;
	case OP_GET:
		if (st == STEP_ST_OK && codec_get_int(resp, "size", &size) == 0 &&
		    (uint64_t)size == s->size && md5_equal(resp, s->md5)) {
			job_ok(w, s, 1);
		} else if (st == STEP_ST_OK) {
			job_fail(s->j, STEP_EEXIST,
			    "server refused key: already exists with different content (402)");
		} else {
			slow_push(w, s->j);
		}
		slot_release(w, s);
		return 0;
	}
	return 0;
}

/*
 * Queues requests while there is room: the jobs PUTMANY did not store first (SAVE +
 * UPLOAD), then new jobs of the call (*more becomes 0 when none is left). A PUTMANY
 * being filled is sent when the loop stops, so nothing waits for a request never sent.
 * 0, or -1 when the pipeline was given up (fail_inflight ran).
 */
static int
feed(struct pool_worker *w, int *more)
{
	struct client_job *j;
	int r, redo, inpm;

	while ((*more || w->nredo > 0) && w->inuse < w->nslots &&
	    buf_avail(&w->txq) < POOL_TXQ_MAX && w->pmsent < POOL_PM_DEPTH) {
		redo = w->nredo > 0;
		if (redo) {
			j = w->redo[--w->nredo];
		} else if ((j = take_job(w->p)) == NULL) {
			*more = 0;
			break;
		}
		r = !redo && w->pm ? pm_add(w, j) : 0;
		inpm = r != 0; /* in a slot already, even when sending failed */
		if (r == 0)
			r = queue_file(w, j);
		if (r == 0)
			slow_push(w, j);
		if (r < 0) {
			if (!inpm)
				slow_push(w, j);
			fail_inflight(w, 0, "out of memory");
			return -1;
		}
	}
	if (pm_flush(w) != 0) {
		fail_inflight(w, 0, "out of memory");
		return -1;
	}
	return 0;
}

/* Files per PUTMANY for this call: the call's jobs spread over every connection, two
 * requests each, within POOL_PM_MIN..POOL_PM_OBJECTS. */
static uint32_t
pm_target(struct client_pool *p)
{
	size_t n, per;

	pthread_mutex_lock(&p->mu);
	n = p->n - p->next;
	pthread_mutex_unlock(&p->mu);
	per = (n + 2 * (size_t)p->nconn - 1) / (2 * (size_t)p->nconn);
	return per < POOL_PM_MIN    ? POOL_PM_MIN
	    : per > POOL_PM_OBJECTS ? POOL_PM_OBJECTS
	                            : (uint32_t)per;
}

/* Pipelines small files until the call's jobs are taken and every answer is in. */
static void
pipe_run(struct pool_worker *w)
{
	struct client *c = w->c;
	uint64_t active, now, stall;
	int r, n, more = 1, stepd, rd = 0, wr = 0;
	uint32_t i;
	size_t put;
	const uint8_t *bin;
	uint32_t binlen;
	size_t pktlen;
	json_t *resp;

	if ((r = client_ensure(c)) != 0) {
		/* client_ensure() retried already: nothing more will get through. */
		pool_abort(w->p, r, client_error(c));
		return;
	}
	stepd = strncmp(c->server, "stepd", 5) == 0;
	w->pm = !w->pm_off && (c->ext & CLIENT_EXT_PUTMANY) != 0;
	w->pm_target = pm_target(w->p);
	w->nslots = w->pm ? POOL_SLOTS : stepd ? POOL_FILES_STEPD : POOL_FILES_OTHER;
	assert(w->inuse == 0);
	for (w->nfree = 0, i = w->nslots; i > 0; i--)
		w->freel[w->nfree++] = i - 1;
	stall = stepd ? (uint64_t)c->timeout_ms : POOL_STALL_MS;
	active = util_now_ms();
	for (;;) {
		if (feed(w, &more) != 0)
			return;
		if (w->flen == 0 && buf_avail(&w->txq) == 0)
			return;
		now = util_now_ms();
		/* conn_wait, not poll: TLS may hold decrypted answers the socket does not show. */
		n = conn_wait(c->conn, buf_avail(&w->txq) > 0,
		    now - active >= stall ? 0 : (int)(stall - (now - active)), &rd, &wr);
		if (n != 0) {
			fail_inflight(
			    w, !stepd, n == STEP_ETIMEDOUT ? "server stalled" : "poll failed");
			return;
		}
		active = util_now_ms();
		if (wr) {
			struct iovec v = { buf_ptr(&w->txq), buf_avail(&w->txq) };

			if (conn_writev(c->conn, &v, 1, &put) != 0) {
				fail_inflight(w, 0, "connection lost");
				return;
			}
			buf_consume(&w->txq, put);
		}
		if (rd) {
			if (client_rx_fill(c) != 0) {
				fail_inflight(w, 0, client_error(c));
				return;
			}
			for (;;) {
				r = client_rx_parse(c, &resp, &bin, &binlen, &pktlen);
				if (r == STEP_EAGAIN)
					break;
				if (r != 0) {
					fail_inflight(w, 1, client_error(c));
					return;
				}
				client_rx_consume(c, pktlen);
				r = on_answer(w, resp);
				json_decref(resp);
				if (r != 0)
					return;
			}
		}
	}
}

/* One file the careful way (learning the block size from its plan). */
static void
put_slow(struct pool_worker *w, struct client_job *j)
{
	int rc;

	rc = client_put_file(w->c, j->path, j->key, j->flags, &j->res);
	j->rc = rc;
	j->status = rc != 0 ? client_status(w->c) : 0;
	if (rc != 0) {
		snprintf(j->error, sizeof(j->error), "%s", client_error(w->c));
		if (is_fatal_transport(rc))
			pool_abort(w->p, rc, j->error);
	} else {
		j->error[0] = '\0';
	}
	if (w->bs == 0 && w->c->plan_bs > 0)
		w->bs = w->c->plan_bs;
}

/* 1 when this worker's server takes PUTMANY (logging in first if needed). */
static int
pm_usable(struct pool_worker *w)
{
	return !w->pm_off && client_ensure(w->c) == 0 && (w->c->ext & CLIENT_EXT_PUTMANY) != 0;
}

/* 1 when the current call's jobs are all taken. */
static int
all_taken(struct client_pool *p)
{
	int r;

	pthread_mutex_lock(&p->mu);
	r = p->next >= p->n;
	pthread_mutex_unlock(&p->mu);
	return r;
}

/* The abort code of the current call (0: none); copies its sentence into msg. */
static int
aborted(struct client_pool *p, char *msg, size_t msglen)
{
	int r;

	pthread_mutex_lock(&p->mu);
	r = p->abort_rc;
	snprintf(msg, msglen, "%s", p->abort_msg);
	pthread_mutex_unlock(&p->mu);
	return r;
}

static void
run_call(struct pool_worker *w)
{
	struct client_job *j;
	char msg[256];
	size_t i;
	int rc;

	for (;;) {
		/* Until a plan told us the block size, one file the careful way (PUTMANY
		 * needs none: the first SAVE + UPLOAD learns it). */
		while (w->bs == 0 && !w->broken && !pm_usable(w) && (j = take_job(w->p)) != NULL)
			put_slow(w, j);
		if (!w->broken)
			pipe_run(w);
		else
			while ((j = take_job(w->p)) != NULL)
				slow_push(w, j);
		for (i = 0; i < w->nslow; i++) {
			if ((rc = aborted(w->p, msg, sizeof(msg))) != 0)
				job_fail(w->slow[i], rc, msg);
			else
				put_slow(w, w->slow[i]);
		}
		w->nslow = 0;
		if (all_taken(w->p))
			break;
	}
}

static void *
worker_main(void *arg)
{
	struct pool_worker *w = arg;
	struct client_pool *p = w->p;
	uint64_t seen = 0;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->stop) {
			pthread_mutex_unlock(&p->mu);
			break;
		}
		seen = p->gen;
		pthread_mutex_unlock(&p->mu);
		run_call(w);
		pthread_mutex_lock(&p->mu);
		if (--p->running == 0)
			pthread_cond_signal(&p->done);
		pthread_mutex_unlock(&p->mu);
	}
	return NULL;
}

/* Frees what a worker holds but its session. */
static void
worker_release(struct pool_worker *w)
{
	int k;

	free(w->slots);
	free(w->freel);
	for (k = 0; k <= POOL_PM_DEPTH; k++)
		free(w->pm_b[k].slots);
	free(w->pmjs);
	free(w->scratch);
	free(w->fifo);
	free(w->slow);
	free(w->redo);
	buf_release(&w->txq);
}

int
client_pool_new(const struct client_opts *o, int nconn, struct client_pool **outp)
{
	struct client_pool *p = xcalloc(1, sizeof(*p));
	int i, k, r;

	if (nconn < 1)
		nconn = 1;
	if (nconn > POOL_MAX_CONN)
		nconn = POOL_MAX_CONN;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	p->o = *o;
	p->w = xcalloc((size_t)nconn, sizeof(*p->w));
	for (i = 0; i < nconn; i++) {
		struct pool_worker *w = &p->w[i];

		w->p = p;
		if ((r = client_new(o, &w->c)) != 0)
			break;
		w->slots = xcalloc(POOL_SLOTS, sizeof(*w->slots));
		w->freel = xcalloc(POOL_SLOTS, sizeof(*w->freel));
		for (k = 0; k <= POOL_PM_DEPTH; k++)
			w->pm_b[k].slots = xcalloc(POOL_PM_OBJECTS, sizeof(*w->pm_b[k].slots));
		w->pmjs = xmalloc(POOL_PM_JSON + CLIENT_KEY_MAX + 512);
		w->scratch = xmalloc(POOL_MAX_SMALL);
		buf_init(
		    &w->txq, POOL_TXQ_MAX + POOL_MAX_SMALL + 2 * (STEP_MAX_JSON + STEP_HDR_LEN));
		if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
			client_free(w->c);
			worker_release(w);
			memset(w, 0, sizeof(*w));
			r = STEP_ENOMEM;
			break;
		}
		w->started = 1;
		p->nconn++;
	}
	if (p->nconn == 0) {
		client_pool_free(p);
		return r;
	}
	*outp = p;
	return STEP_OK;
}

void
client_pool_start(struct client_pool *p, struct client_job *jobs, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++) {
		jobs[k].rc = 0;
		jobs[k].error[0] = '\0';
	}
	pthread_mutex_lock(&p->mu);
	assert(p->jobs == NULL); /* one call at a time */
	p->jobs = jobs;
	p->n = n;
	p->next = 0;
	p->running = p->nconn;
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
}

int
client_pool_wait(struct client_pool *p)
{
	struct client_job *jobs;
	size_t k, n;

	pthread_mutex_lock(&p->mu);
	while (p->running > 0)
		pthread_cond_wait(&p->done, &p->mu);
	jobs = p->jobs;
	n = p->n;
	p->jobs = NULL;
	p->n = p->next = 0;
	pthread_mutex_unlock(&p->mu);
	for (k = 0; k < n; k++)
		if (jobs[k].rc != 0)
			return jobs[k].rc;
	return STEP_OK;
}

int
client_pool_put(struct client_pool *p, struct client_job *jobs, size_t n)
{
	client_pool_start(p, jobs, n);
	return client_pool_wait(p);
}

void
client_pool_free(struct client_pool *p)
{
	int i;

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (i = 0; p->w != NULL && i < p->nconn; i++) {
		struct pool_worker *w = &p->w[i];

		if (w->started)
			pthread_join(w->th, NULL);
		client_free(w->c);
		worker_release(w);
	}
	free(p->w);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->go);
	pthread_cond_destroy(&p->done);
	free(p);
}
