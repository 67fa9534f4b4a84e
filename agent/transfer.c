/*
 * transfer.c — pipelined, verified file transfers of a client session: put (SAVE, a
 * window of UPLOADs read as they are answered, resume, final MD5 check with GET), get
 * (a window of DOWNLOADs into a temporary file, MD5 check, rename) and put_many (whole
 * files over several connections).
 *
 * Against servers that break pipelining (an unexpected non-200, or a stall while
 * several requests are in flight) a transfer reconnects, logs in again and carries on
 * one request at a time; blocks are idempotent, so whatever was not acknowledged is
 * simply sent again. The file is read once and hashed while it is sent; nothing here
 * ever presents a partial or unverified file as good.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockset.h"
#include "client_impl.h"
#include "codec.h"
#include "db.h"
#include "err.h"
#include "hasher.h"
#include "log.h"
#include "step.h"
#include "uploads.h"
#include "util.h"

/* Internal outcomes of one pass of the pipelined loops (never returned to callers). */
#define XFER_PIPEFAIL (-100) /* pipelining broke: reconnect, one request at a time */
#define XFER_NOUPLOAD (-101) /* 408: the server has no upload in progress */
#define XFER_TOKEN    (-102) /* 403: log in again */
#define XFER_EXISTS   (-103) /* 402: the key is complete already */
#define XFER_STALLEND (-104) /* every block sent, the last answers never came */
#define XFER_LOCKED   (-105) /* 423: the upload was started over by another client */
#define XFER_MD5FAIL  (-106) /* 410: the commit does not match the MD5 declared at SAVE */
#define XFER_OUTAGE   (-107) /* 503/429 while the session rides through outages */

#define XFER_ATTEMPTS     8    /* passes of one transfer before giving up */
#define STATE_BATCH       64   /* acknowledged blocks between state commits (64 KiB ones) */
#define STATE_INTERVAL_MS 1000 /* ...or this long */
#define ZERO_SIZE_WAIT_MS 3000 /* how long an unknown server may think about size 0 */
#define FINAL_PROBE_MS    2000 /* silence before asking whether the last answers were lost */
/* big_blocks: a file of at least BIG_MIN_BLOCKS blocks of the specification's largest size
 * asks stepd for blocks of up to BIG_BLOCK_MAX bytes, keeping BIG_MIN_BLOCKS blocks or more
 * (resume and progress stay fine-grained); every request then carries more bytes. */
#define BIG_BLOCK_MAX     (1u << 20)
#define BIG_MIN_BLOCKS    512

/* Where an upload's bytes come from. */
struct source {
	int fd;             /* -1 for memory */
	const uint8_t *mem; /* when fd < 0 */
	uint64_t size;
};

struct up {
	struct client *c;
	struct source src;
	char key[CLIENT_KEY_MAX + 1];
	char key_json[CLIENT_KEY_MAX * 6 + 3]; /* the key as a quoted ASCII JSON string */
	uint32_t bs, total;
	struct blockset acked;
	struct hash_ctx *md5;
	uint32_t hashed;       /* blocks 0..hashed-1 are in md5 */
	const char *known_md5; /* the source's MD5 given by the caller: md5 stays unused */
	uint8_t *blk;          /* read buffer, bs bytes (file sources) */
	uint32_t *fifo;        /* block indexes awaiting answers, in order */
	size_t fhead, flen, fcap;
	int window;
	char server_md5[HASH_MD5_HEX]; /* from the completing UPLOAD, "" until then */
	uint64_t sent;
	/* save_md5 extension: the whole source's MD5 declared at SAVE (the server commits
	 * nothing else) and the upload's id from the SAVE answer, carried by every UPLOAD so
	 * that blocks never land in an upload someone else started over. "" when unused. */
	char want_md5[HASH_MD5_HEX];
	char upload_id[40];
	char pre_md5[HASH_MD5_HEX]; /* declare_md5()'s result, when it had to read the file */
	int replace;                /* replace extension: SAVE carries "replace": true */
	int no_preread;             /* a file's MD5 is not read ahead to be declared */
	int hold_last;              /* the last block waits for every other one (see put_blocks) */
	/* resume state */
	struct db *db;
	char srv[300];
	uint32_t unsaved;
	uint64_t saved_ms;
};

/* ---- small helpers ---- */

/* Requests in flight. Against stepd the automatic window holds 32 blocks of 64 KiB, fewer
 * of larger blocks (at least 4): the bytes in flight, and sent again after a broken
 * connection, stay about the same. */
static int
window_for(struct client *c, uint32_t bs)
{
	uint32_t w = 32;

	if (c->degraded)
		return 1;
	if (c->window_opt > 0)
		return c->window_opt;
	if (strncmp(c->server, "stepd", 5) != 0)
		return 4;
	if (bs > STEP_SPEC_MAX_BLOCK)
		w = (uint32_t)((uint64_t)w * STEP_SPEC_MAX_BLOCK / bs);
	return w < 4 ? 4 : (int)w;
}

/* Acknowledged blocks between state commits: STATE_BATCH, fewer of blocks over 64 KiB. */
static uint32_t
state_batch(uint32_t bs)
{
	uint64_t n = STATE_BATCH;

	if (bs > STEP_SPEC_MAX_BLOCK)
		n = n * STEP_SPEC_MAX_BLOCK / bs;
	return n < 1 ? 1 : (uint32_t)n;
}

/* The block size to ask stepd for (big_blocks), 0 for the server's own plan. An object
 * sent from memory (a chunk, a tree: it is resent whole if need be, never resumed from
 * local state) goes in as few blocks as the limit allows. */
static uint32_t
want_block_size(const struct client *c, uint64_t size, int mem)
{
	uint32_t bs = STEP_SPEC_MAX_BLOCK;

	if (!(c->ext & CLIENT_EXT_BIG_BLOCKS))
		return 0;
	if (mem) {
		while (bs < BIG_BLOCK_MAX && bs < size)
			bs *= 2;
		return bs;
	}
	while (bs < BIG_BLOCK_MAX && size / (2 * (uint64_t)bs) >= BIG_MIN_BLOCKS)
		bs *= 2;
	/* At least the specification's largest block: stepd's default plan is the deployed
	 * 20480 bytes, for clients that cut blocks at that size whatever the plan says. */
	return size > STEP_REF_BLOCK_SIZE ? bs : 0;
}

static uint32_t
block_len(uint64_t size, uint32_t bs, uint32_t total, uint32_t i)
{
	if (i + 1 < total)
		return bs;
	return (uint32_t)(size - (uint64_t)bs * (total - 1));
}

/* Reads block i: *pp points at its bytes (valid until the next call). */
static int
read_block(struct up *u, uint32_t i, const uint8_t **pp, uint32_t *lenp)
{
	uint32_t len = block_len(u->src.size, u->bs, u->total, i);
	off_t off = (off_t)((uint64_t)i * u->bs);
	size_t got = 0;
	ssize_t k;

	if (u->src.fd < 0) {
		*pp = u->src.mem + off;
		*lenp = len;
		return STEP_OK;
	}
	while (got < len) {
		k = pread(u->src.fd, u->blk + got, len - got, off + (off_t)got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return client_fail(u->c, STEP_ESYS, "cannot read: %s", strerror(errno));
		if (k == 0)
			return client_fail(u->c, STEP_ECHANGED, "file shrank while it was read");
		got += (size_t)k;
	}
	*pp = u->blk;
	*lenp = len;
	return STEP_OK;
}

/* Hashes block i if it is the next one in file order. */
static void
hash_in_order(struct up *u, uint32_t i, const uint8_t *p, uint32_t len)
{
	if (i == u->hashed && u->known_md5 == NULL) {
		hash_update(u->md5, p, len);
		u->hashed++;
	}
}

/* Hashes every block not hashed yet (after a pass that did not read them all). */
static int
hash_rest(struct up *u)
{
	const uint8_t *p;
	uint32_t len;
	int r;

	while (u->hashed < u->total) {
		if ((r = read_block(u, u->hashed, &p, &len)) != 0)
			return r;
		hash_update(u->md5, p, len);
		u->hashed++;
	}
	return STEP_OK;
}

static void
state_flush(struct up *u, int force)
{
	uint64_t now;

	if (u->db == NULL || u->unsaved == 0)
		return;
	now = util_now_ms();
	if (!force && u->unsaved < state_batch(u->bs) && now - u->saved_ms < STATE_INTERVAL_MS)
		return;
	if (uploads_save_bitmap(
	        u->db, u->srv, u->c->user, u->key, u->acked.bits, blockset_nbytes(u->total)) != 0)
		log_info("cannot record upload progress: %s", db_errmsg(u->db));
	u->unsaved = 0;
	u->saved_ms = now;
}

static int
fifo_push(struct up *u, uint32_t i)
{
	uint32_t *nf;
	size_t k;

	if (u->flen == u->fcap) {
		size_t ncap = u->fcap ? u->fcap * 2 : 64;

		if ((nf = malloc(ncap * sizeof(*nf))) == NULL)
			return client_fail(u->c, STEP_ENOMEM, "out of memory");
		for (k = 0; k < u->flen; k++)
			nf[k] = u->fifo[(u->fhead + k) % (u->fcap ? u->fcap : 1)];
		free(u->fifo);
		u->fifo = nf;
		u->fcap = ncap;
		u->fhead = 0;
	}
	u->fifo[(u->fhead + u->flen) % u->fcap] = i;
	u->flen++;
	return STEP_OK;
}

static uint32_t
fifo_pop(struct up *u)
{
	uint32_t i = u->fifo[u->fhead];

	u->fhead = (u->fhead + 1) % u->fcap;
	u->flen--;
	return i;
}

/* ---- the pipelined UPLOAD loop ---- */

/* One packet being written: header + JSON in hj, then the block. */
struct outpkt {
	uint8_t hj[STEP_HDR_LEN + sizeof(((struct up *)0)->key_json) + 600];
	size_t hjlen;
	const uint8_t *data;
	size_t dlen;
	size_t off; /* bytes of hj+data already written */
	uint32_t index;
	int busy;
};

/* Picks the next block to send (reading acked blocks only to hash them) and encodes
 * its packet. 0 with pk->busy set, or 0 with nothing left (pk->busy 0), or an error. */
static int
next_packet(struct up *u, uint32_t *cursor, struct outpkt *pk)
{
	const uint8_t *p;
	char bmd5[HASH_MD5_HEX + 32] = "", uid[sizeof(u->upload_id) + 20] = "";
	uint32_t i, len;
	int n, r;

	while (*cursor < u->total) {
		i = (*cursor)++;
		if (u->hold_last && i + 1 == u->total && !blockset_test(&u->acked, i))
			continue; /* sent by a pass of its own, see put_blocks() */
		if (blockset_test(&u->acked, i)) {
			if (i == u->hashed) {
				if ((r = read_block(u, i, &p, &len)) != 0)
					return r;
				hash_in_order(u, i, p, len);
			}
			continue;
		}
		if ((r = read_block(u, i, &p, &len)) != 0)
			return r;
		hash_in_order(u, i, p, len);
		if (u->c->block_md5 && (u->c->ext & CLIENT_EXT_BLOCK_MD5)) {
			char hex[HASH_MD5_HEX];

			hash_md5_hex(p, len, hex);
			snprintf(bmd5, sizeof(bmd5), ",\"block_md5\":\"%s\"", hex);
		}
		if (u->upload_id[0] != '\0')
			snprintf(uid, sizeof(uid), ",\"upload_id\":\"%s\"", u->upload_id);
		n = snprintf((char *)pk->hj + STEP_HDR_LEN, sizeof(pk->hj) - STEP_HDR_LEN,
		    "{\"type\":\"FILE\",\"operation\":\"UPLOAD\",\"direction\":\"REQUEST\","
		    "\"token\":\"%s\",\"key\":%s,\"block_index\":%u,\"block_size\":%u%s%s}",
		    u->c->token, u->key_json, i, u->bs, bmd5, uid);
		if (n < 0 || (size_t)n >= sizeof(pk->hj) - STEP_HDR_LEN)
			return client_fail(u->c, STEP_ETOOBIG, "request too long");
		codec_put_header(pk->hj, (uint32_t)n, len);
		pk->hjlen = STEP_HDR_LEN + (size_t)n;
		pk->data = p;
		pk->dlen = len;
		pk->off = 0;
		pk->index = i;
		pk->busy = 1;
		bwlimit_take(u->c->bw, len);
		return STEP_OK;
	}
	pk->busy = 0;
	return STEP_OK;
}

/* Writes as much of pk as the socket takes; on completion queues its index. */
static int
write_packet(struct up *u, struct outpkt *pk)
{
	struct iovec v[2];
	size_t put;
	int n = 0, r;

	if (pk->off < pk->hjlen) {
		v[n].iov_base = pk->hj + pk->off;
		v[n++].iov_len = pk->hjlen - pk->off;
		v[n].iov_base = (void *)(uintptr_t)pk->data;
		v[n++].iov_len = pk->dlen;
	} else {
		v[n].iov_base = (void *)(uintptr_t)(pk->data + (pk->off - pk->hjlen));
		v[n++].iov_len = pk->dlen - (pk->off - pk->hjlen);
	}
	if ((r = conn_writev(u->c->conn, v, n, &put)) != 0)
		return client_fail(u->c, r, "cannot send to server: %s",
		    r == STEP_ECLOSED ? "connection closed" : strerror(errno));
	pk->off += put;
	if (pk->off < pk->hjlen + pk->dlen)
		return STEP_OK;
	pk->busy = 0;
	u->sent++;
	return fifo_push(u, pk->index);
}

/*
 * The save_md5 refusals of an UPLOAD: XFER_LOCKED (423, the upload this block was meant
 * for has been started over by another client) or XFER_MD5FAIL (the completing block's
 * commit refused: the bytes do not match the declared MD5), else 0.
 */
static int
refusal_kind(const struct up *u, int st, const json_t *resp)
{
	const char *msg = "";

	if (u->want_md5[0] == '\0')
		return 0;
	if (st == STEP_ST_LOCKED)
		return XFER_LOCKED;
	codec_get_str(resp, "status_msg", &msg, NULL);
	if (st == STEP_ST_FIELD && strstr(msg, "does not match the md5") != NULL)
		return XFER_MD5FAIL;
	return 0;
}

/* Handles every complete answer in rx. */
static int
read_answers(struct up *u)
{
	const uint8_t *bin;
	uint32_t binlen, i;
	size_t pktlen;
	json_t *resp;
	const char *md5;
	size_t md5len;
	int st, r;

	for (;;) {
		r = client_rx_parse(u->c, &resp, &bin, &binlen, &pktlen);
		if (r == STEP_EAGAIN)
			return STEP_OK;
		if (r != 0)
			return r;
		client_rx_consume(u->c, pktlen);
		st = client_resp_status(resp);
		u->c->status = st;
		if (u->flen == 0) {
			json_decref(resp);
			return u->window > 1 ? XFER_PIPEFAIL
			                     : client_fail(u->c, STEP_EPROTO,
			                           "server answered a request that was not sent");
		}
		i = fifo_pop(u);
		if (st == STEP_ST_OK) {
			if (codec_get_str(resp, "md5", &md5, &md5len) == 0 &&
			    md5len == HASH_MD5_HEX - 1) {
				memcpy(u->server_md5, md5, HASH_MD5_HEX);
				for (md5len = 0; md5len < HASH_MD5_HEX - 1; md5len++)
					if (u->server_md5[md5len] >= 'A' &&
					    u->server_md5[md5len] <= 'F')
						u->server_md5[md5len] += 'a' - 'A';
			}
			json_decref(resp);
			if (blockset_set(&u->acked, i))
				u->unsaved++;
			client_outage_clear(u->c);
			continue;
		}
		r = refusal_kind(u, st, resp);
		json_decref(resp);
		log_info("UPLOAD of block %u of '%s' answered %d", i, u->key, st);
		if (r != 0)
			return r;
		if (st == STEP_ST_TOKEN)
			return XFER_TOKEN;
		if (st == STEP_ST_EXISTS)
			return XFER_EXISTS;
		if (st == STEP_ST_OPERATION)
			return XFER_NOUPLOAD;
		if ((st == STEP_ST_UNAVAILABLE || st == STEP_ST_THROTTLE) && u->c->outage_ms > 0)
			return XFER_OUTAGE; /* the block was not stored: SAVE again, then resume */
		/* 5xx (only servers with our extensions send them): the server failed, e.g. its
		 * disk is full; the upload is gone there, and one request at a time cannot help. */
		if (st >= 500)
			return client_fail_status(
			    u->c, STEP_ESTATUS, "server failed to store block", st);
		if (u->window > 1)
			return XFER_PIPEFAIL; /* maybe glued blocks: retry one at a time */
		return client_fail_status(u->c, STEP_ESTATUS, "server refused block", st);
	}
}

/* 1 when a second session sees key complete (GET answers 200), else 0. */
static int
probe_complete(struct up *u)
{
	struct client_file_info info;
	struct client_opts o;
	struct client *p = NULL;
	int done = 0;

	memset(&o, 0, sizeof(o));
	o.host = u->c->host;
	o.port = u->c->port;
	o.user = u->c->user;
	o.password_md5 = u->c->password_md5;
	o.tls = u->c->tls;
	o.ca = u->c->ca;
	o.timeout_ms = u->c->timeout_ms;
	o.retries = -1;
	if (client_new(&o, &p) == 0 && client_file_info(p, u->key, &info) == 0)
		done = 1;
	log_info("no answer to the last blocks of '%s' yet; the server %s", u->key,
	    done ? "has it complete" : "does not have it complete yet");
	client_free(p);
	return done;
}

/* One pass over the unacknowledged blocks on the current connection. */
static int
upload_pass(struct up *u)
{
	struct outpkt *pk;
	uint32_t cursor = 0;
	uint64_t last_progress = 0, now, active, idle, wait;
	int r, want_write, n, final_wait, probed = 0, rd = 0, wr = 0;

	if ((pk = calloc(1, sizeof(*pk))) == NULL)
		return client_fail(u->c, STEP_ENOMEM, "out of memory");
	u->window = window_for(u->c, u->bs);
	u->flen = 0;
	u->fhead = 0;
	r = next_packet(u, &cursor, pk);
	active = util_now_ms();
	while (r == 0 && (pk->busy || u->flen > 0)) {
		if (util_stop_pending()) {
			/* stepsync watch was asked to stop: acknowledged blocks are recorded
			 * below, so the next run resumes here. */
			r = client_fail(u->c, STEP_ESTOPPED, "stopped by a signal");
			break;
		}
		want_write = pk->busy && u->flen < (size_t)u->window;
		final_wait = !pk->busy && u->flen > 0;
		now = util_now_ms();
		idle = now - active;
		wait = (uint64_t)u->c->timeout_ms;
		if (final_wait && !probed && wait > FINAL_PROBE_MS)
			wait = FINAL_PROBE_MS;
		/* conn_wait, not poll: TLS may hold decrypted answers the socket does not show. */
		n = conn_wait(
		    u->c->conn, want_write, idle >= wait ? 0 : (int)(wait - idle), &rd, &wr);
		if (n != 0 && n != STEP_ETIMEDOUT) {
			r = client_fail(u->c, STEP_ESYS, "poll: %s", strerror(errno));
			break;
		}
		if (n == STEP_ETIMEDOUT && final_wait && !probed &&
		    util_now_ms() - active < (uint64_t)u->c->timeout_ms) {
			/* Only the last answers are missing: servers exist that never send them
			 * (STEP-PROTOCOL.md §8). Ask on a second connection rather than wait out
			 * the whole timeout; keep waiting if the object is not complete yet. */
			probed = 1;
			if (probe_complete(u)) {
				r = XFER_STALLEND;
				break;
			}
			continue;
		}
		if (n == STEP_ETIMEDOUT) {
			if (!pk->busy && u->flen > 0) {
				r = XFER_STALLEND;
			} else if (u->window > 1 && u->flen > 0) {
				log_info("server stalled with %zu requests in flight", u->flen);
				r = XFER_PIPEFAIL;
			} else {
				r = client_fail(u->c, STEP_ETIMEDOUT,
				    "no answer from server within %d s",
				    (u->c->timeout_ms + 999) / 1000);
			}
			break;
		}
		active = util_now_ms();
		if (rd) {
			if ((r = client_rx_fill(u->c)) != 0)
				break;
			if ((r = read_answers(u)) != 0)
				break;
			state_flush(u, 0);
		}
		if (want_write && wr) {
			if ((r = write_packet(u, pk)) != 0)
				break;
			if (!pk->busy && (r = next_packet(u, &cursor, pk)) != 0)
				break;
		}
		now = util_now_ms();
		if (u->c->progress != NULL && now - last_progress >= 100) {
			last_progress = now;
			u->c->progress(u->c->progress_arg, u->key,
			    (uint64_t)u->acked.count * u->bs > u->src.size
			        ? u->src.size
			        : (uint64_t)u->acked.count * u->bs,
			    u->src.size);
		}
	}
	state_flush(u, 1);
	free(pk);
	return r;
}

/* ---- SAVE and the put driver ---- */

/*
 * save_md5: the source's MD5, computed before SAVE so that it can be declared (a file is
 * read once more for it, unless no_preread; the stamps check in client_put_file() catches
 * a change between this read and the upload, and so does the server's MD5 check of the
 * commit).
 */
static int
declare_md5(struct up *u)
{
	uint8_t dig[HASH_MD5_LEN], *buf = NULL;
	struct hash_ctx *h = NULL;
	uint64_t off = 0;
	ssize_t k;
	int r = STEP_OK;

	if (!(u->c->ext & CLIENT_EXT_SAVE_MD5) || u->want_md5[0] != '\0' ||
	    (u->known_md5 == NULL && u->no_preread))
		return STEP_OK;
	if (u->known_md5 == NULL) {
		if ((h = hash_md5_new()) == NULL ||
		    (u->src.fd >= 0 && (buf = malloc(1u << 18)) == NULL))
			return client_fail(u->c, STEP_ENOMEM, "out of memory");
		if (u->src.fd < 0)
			hash_update(h, u->src.mem, u->src.size);
		while (u->src.fd >= 0 && off < u->src.size) {
			k = pread(u->src.fd, buf, 1u << 18, (off_t)off);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				r = k < 0 ? client_fail(
				                u->c, STEP_ESYS, "cannot read: %s", strerror(errno))
				          : client_fail(u->c, STEP_ECHANGED,
				                "file shrank while it was read");
				goto out;
			}
			hash_update(h, buf, (size_t)k);
			off += (uint64_t)k;
		}
		hash_final(h, dig);
		hash_to_hex(dig, HASH_MD5_LEN, u->pre_md5);
		u->known_md5 = u->pre_md5; /* the streaming hash is not needed any more */
	}
	snprintf(u->want_md5, sizeof(u->want_md5), "%s", u->known_md5);
out:
	free(buf);
	hash_free(h);
	return r;
}

/* The SAVE request for u (new reference), or NULL when out of memory. */
static json_t *
save_request(struct up *u)
{
	json_t *req;
	uint32_t want;

	if ((req = client_req(u->c, "FILE", "SAVE")) == NULL)
		return NULL;
	json_object_set_new(req, "size", json_integer((json_int_t)u->src.size));
	if (u->key[0] != '\0')
		json_object_set_new(req, "key", json_string(u->key));
	if ((want = want_block_size(u->c, u->src.size, u->src.fd < 0)) > 0)
		json_object_set_new(req, "want_block_size", json_integer(want));
	if (u->want_md5[0] != '\0')
		json_object_set_new(req, "md5", json_string(u->want_md5));
	if (u->want_md5[0] != '\0' && u->upload_id[0] != '\0')
		json_object_set_new(req, "upload_id", json_string(u->upload_id));
	if (u->replace)
		json_object_set_new(req, "replace", json_true());
	return req;
}

/*
 * Takes the blocks the server says it holds ("received"). With a declared MD5 they
 * belong to an upload of the same content (stepd resumes nothing else, and refuses a
 * commit that does not match). Without one they may be anyone's blocks of another file:
 * only those this client itself sent (local resume state, in had) are kept; the number of
 * the others is returned (sending them again would not help: stepd keeps the first copy
 * of a block, so do_save() abandons that upload and starts a new one).
 */
static uint32_t
take_received(struct up *u, const json_t *received, const struct blockset *had)
{
	struct blockset got;
	uint32_t i, dropped = 0;

	if (received == NULL || blockset_init(&got, u->total) != 0)
		return 0;
	if (blockset_add_ranges(&got, received) != 0)
		log_info("ignoring a malformed received list for '%s'", u->key);
	for (i = 0; got.count > 0 && i < u->total; i++) {
		if (!blockset_test(&got, i))
			continue;
		if (u->want_md5[0] != '\0' || (had != NULL && blockset_test(had, i)))
			blockset_set(&u->acked, i);
		else
			dropped++;
	}
	blockset_release(&got);
	if (u->acked.count > 0)
		log_info(
		    "server already has %u of %u blocks of '%s'", u->acked.count, u->total, u->key);
	return dropped;
}

/* Applies a SAVE answer: the plan, the upload id and the "received" ranges (*droppedp:
 * how many of those are not known to be ours, see take_received()). */
static int
save_plan(struct up *u, const json_t *resp, uint32_t want, uint32_t *droppedp)
{
	struct blockset had = { NULL, 0, 0 };
	long long bs, total;
	const char *k;
	int r = STEP_OK;

	if (codec_get_int(resp, "block_size", &bs) != 0 || bs < 1 || bs > STEP_MAX_BIN ||
	    codec_get_int(resp, "total_block", &total) != 0 ||
	    (uint64_t)total != (u->src.size + (uint64_t)bs - 1) / (uint64_t)bs)
		return client_fail(u->c, STEP_EPROTO, "server sent an inconsistent upload plan");
	if (u->key[0] == '\0' && codec_get_str(resp, "key", &k, NULL) == 0)
		snprintf(u->key, sizeof(u->key), "%s", k);
	if (codec_get_str(resp, "upload_id", &k, NULL) == 0 && strlen(k) < sizeof(u->upload_id) &&
	    strspn(k, "0123456789abcdefABCDEF") == strlen(k))
		snprintf(u->upload_id, sizeof(u->upload_id), "%s", k);
	else
		u->upload_id[0] = '\0';
	if (want == 0)
		u->c->plan_bs = (uint32_t)bs; /* the server's own plan (client_pool relies on it) */
	if (u->blk == NULL || u->bs != (uint32_t)bs || u->total != (uint32_t)total) {
		blockset_release(&u->acked);
		free(u->blk);
		u->blk = NULL;
		u->bs = (uint32_t)bs;
		u->total = (uint32_t)total;
		if (blockset_init(&u->acked, u->total) != 0 ||
		    (u->src.fd >= 0 && (u->blk = malloc(u->bs)) == NULL))
			return client_fail(u->c, STEP_ENOMEM, "out of memory");
		u->hashed = 0;
		hash_reset(u->md5);
		*droppedp = take_received(u, json_object_get(resp, "received"), NULL);
		return STEP_OK;
	}
	/* The same plan: what this client had sent may be kept (see take_received()). */
	had = u->acked;
	if (blockset_init(&u->acked, u->total) != 0) {
		u->acked = had;
		return client_fail(u->c, STEP_ENOMEM, "out of memory");
	}
	*droppedp = take_received(u, json_object_get(resp, "received"), &had);
	blockset_release(&had);
	return r;
}

/* One SAVE round trip; fills the plan and adds "received" ranges (see save_plan()). */
static int
save_once(struct up *u, int *existsp, uint32_t *droppedp)
{
	json_t *req = NULL, *resp = NULL;
	uint32_t want;
	int r, timeout = -1;

	if ((req = save_request(u)) == NULL)
		return client_fail(u->c, STEP_ENOMEM, "out of memory");
	want = want_block_size(u->c, u->src.size, u->src.fd < 0);
	if (u->src.size == 0 && !(u->c->ext & CLIENT_EXT_ZERO_SIZE))
		timeout =
		    ZERO_SIZE_WAIT_MS < u->c->timeout_ms ? ZERO_SIZE_WAIT_MS : u->c->timeout_ms;
	r = client_ensure(u->c);
	if (r == 0) {
		json_object_set_new(req, "token", json_string(u->c->token));
		r = client_roundtrip(u->c, req, NULL, 0, timeout, &resp);
	}
	if (r == STEP_ETIMEDOUT && u->src.size == 0) {
		client_disconnect(u->c);
		r = client_fail(u->c, STEP_ESTATUS, "server does not support empty files");
	} else if (r == STEP_ESTATUS && u->c->status == STEP_ST_EXISTS) {
		*existsp = 1;
		r = client_fail_status(u->c, STEP_EEXIST, "server refused key", u->c->status);
	} else if (r == STEP_ESTATUS && u->c->status == STEP_ST_TOKEN) {
		r = XFER_TOKEN;
	} else if (r == STEP_ESTATUS && u->c->status == STEP_ST_LOCKED) {
		/* (During a replace, rm would delete the old object too: no such hint.) */
		r = client_fail(u->c, STEP_ESTATUS,
		    "another upload of this key, with other content, is in progress (423); try "
		    "again later%s",
		    u->replace ? " (an abandoned one is given up 60 s after its last block)"
		               : ", or abandon it with 'stepsync rm' if it was yours");
	} else if (r == STEP_ESTATUS) {
		r = client_fail_status(u->c, r, "server refused upload", u->c->status);
	} else if (r == 0) {
		r = save_plan(u, resp, want, droppedp);
	}
	json_decref(req);
	json_decref(resp);
	return r;
}

/*
 * Sends SAVE (declaring the MD5 when the server takes it). An upload in progress whose
 * blocks cannot be known to be this file's (no save_md5, not sent by us) is abandoned
 * (DELETE) and SAVE asked again, once: a server keeps the first copy of a block, so
 * sending ours again would still commit a mix.
 */
static int
do_save(struct up *u, int *existsp)
{
	uint32_t dropped = 0;
	int r;

	*existsp = 0;
	if ((r = declare_md5(u)) != 0)
		return r;
	if ((r = save_once(u, existsp, &dropped)) != 0 || dropped == 0 || u->replace)
		return r;
	log_info("the server holds %u blocks of '%s' that may be another file's; starting over",
	    dropped, u->key);
	if ((r = client_file_delete(u->c, u->key)) != 0 && r != STEP_ENOENT)
		return r;
	blockset_clear(&u->acked);
	return save_once(u, existsp, &dropped);
}

static void
key_to_json(struct up *u)
{
	json_t *s = json_string(u->key);
	char *d = s ? json_dumps(s, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;

	snprintf(u->key_json, sizeof(u->key_json), "%s", d ? d : "\"\"");
	free(d);
	json_decref(s);
}

/* Compares the server's MD5 (GET) with ours. */
static int
verify_final(struct up *u, const char *local_md5, struct client_file_info *info)
{
	int r, attempt;

	for (attempt = 0;; attempt++) {
		r = client_file_info(u->c, u->key, info);
		/* Not complete (404) although every block was acknowledged: another client's
		 * upload of the same key may be finishing it; look again after a pause. */
		if (r == 0 || (!client_transient(r) && r != STEP_ENOENT) || attempt >= 2)
			break;
		client_disconnect(u->c);
		client_backoff(attempt + 1);
	}
	if (r != 0)
		return r;
	if (info->size != u->src.size || strcmp(info->md5, local_md5) != 0)
		return client_fail(u->c, STEP_EMISMATCH,
		    "server has a different file (md5 %s, size %llu; ours %s, %llu)", info->md5,
		    (unsigned long long)info->size, local_md5, (unsigned long long)u->src.size);
	if (u->server_md5[0] != '\0' && strcmp(u->server_md5, local_md5) != 0)
		return client_fail(u->c, STEP_EMISMATCH, "upload answered md5 %s, ours is %s",
		    u->server_md5, local_md5);
	return STEP_OK;
}

/* Stat fields that must not change while a file is read. */
struct fstamp {
	uint64_t size, ino;
	int64_t mtime_ns, ctime_ns;
};

static void
stamp_of(const struct stat *st, struct fstamp *f)
{
	f->size = (uint64_t)st->st_size;
	f->ino = (uint64_t)st->st_ino;
	f->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	f->ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

/* Loads local resume progress when the record matches the file; drops a stale one. */
static int
resume_local(struct up *u, const char *path, const struct fstamp *fs)
{
	struct upload_rec *rec = NULL;
	int ok = 0;

	if (u->db == NULL || uploads_load(u->db, u->srv, u->c->user, u->key, &rec) != 0)
		return 0;
	if (rec->size == fs->size && rec->mtime_ns == fs->mtime_ns && rec->ino == fs->ino &&
	    rec->block_size >= 1 && rec->block_size <= STEP_MAX_BIN &&
	    (uint64_t)rec->total_block == (fs->size + rec->block_size - 1) / rec->block_size &&
	    rec->nbitmap == blockset_nbytes(rec->total_block)) {
		u->bs = rec->block_size;
		u->total = rec->total_block;
		if (blockset_init(&u->acked, u->total) == 0 &&
		    blockset_load(&u->acked, rec->bitmap, rec->nbitmap) == 0 &&
		    (u->blk = malloc(u->bs)) != NULL)
			ok = 1;
	} else {
		log_info("'%s' changed since its interrupted upload; starting over", path);
		/* (With the replace extension the key may hold the old object: leave it.) */
		if (!u->replace && client_file_delete(u->c, u->key) != 0)
			log_info("could not delete the stale upload of '%s': %s", u->key,
			    client_error(u->c));
		uploads_delete(u->db, u->srv, u->c->user, u->key);
	}
	uploads_rec_free(rec);
	return ok;
}

static void
record_start(struct up *u, const char *path, const struct fstamp *fs)
{
	struct upload_rec rec;

	if (u->db == NULL)
		return;
	memset(&rec, 0, sizeof(rec));
	rec.server = u->srv;
	rec.user = u->c->user;
	rec.key = u->key;
	rec.path = (char *)(uintptr_t)path;
	rec.size = fs->size;
	rec.mtime_ns = fs->mtime_ns;
	rec.ctime_ns = fs->ctime_ns;
	rec.ino = fs->ino;
	rec.block_size = u->bs;
	rec.total_block = u->total;
	rec.bitmap = u->acked.bits;
	rec.nbitmap = blockset_nbytes(u->total);
	if (uploads_save(u->db, &rec) != 0)
		log_info("cannot record upload progress: %s", db_errmsg(u->db));
	u->saved_ms = util_now_ms();
}

/* 1 when the file behind u (stamped fs when opened) is not the same any more. */
static int
source_changed(const struct up *u, const struct fstamp *fs)
{
	struct stat st;
	struct fstamp now;

	if (u->src.fd < 0 || fs == NULL)
		return 0;
	if (fstat(u->src.fd, &st) != 0)
		return 1;
	stamp_of(&st, &now);
	return memcmp(&now, fs, sizeof(now)) != 0;
}

/* What one put_run() has gone through. */
struct put_state {
	int flags; /* CLIENT_PUT_* */
	const char *path;
	const struct fstamp *fs;
	int need_save, did_save, replaced, exists, resumed, was_resuming;
	int token_retries, lost, md5_fails;
	uint32_t token_progress;
	int last_err; /* the last transient error retried, for when the attempts run out */
};

/* Outcomes of the steps of put_blocks() besides 0 and errors. */
#define PUT_NEXT  1 /* go round again (the attempt counts) */
#define PUT_RETRY 2 /* go round again (the attempt does not count) */
#define PUT_DONE  3 /* nothing more to send (every block acknowledged, or the key existed) */

/* The SAVE step: 0 (the plan is in u), PUT_* or an error. */
static int
put_save(struct up *u, struct put_state *ps, struct client_result *res, int attempt)
{
	int r = do_save(u, &ps->exists);

	if (r == XFER_TOKEN) {
		client_disconnect(u->c);
		return PUT_NEXT;
	}
	if (ps->exists && (ps->flags & CLIENT_PUT_REPLACE) && !ps->replaced && !u->replace) {
		/* A server without the replace extension: delete, then upload. */
		ps->replaced = 1;
		return (r = client_file_delete(u->c, u->key)) != 0 ? r : PUT_RETRY;
	}
	if (ps->exists && ((ps->flags & CLIENT_PUT_EXIST_OK) || ps->was_resuming)) {
		/* Resuming: the interrupted run may have completed it. */
		res->existed = 1;
		return PUT_DONE;
	}
	if (client_outage_wait(u->c, r))
		return PUT_RETRY; /* an outage: bounded by its own clock */
	if (r == STEP_ESTATUS &&
	    (u->c->status == STEP_ST_THROTTLE || u->c->status == STEP_ST_UNAVAILABLE)) {
		/* Too many uploads in progress (or the server is busy): those finish by
		 * themselves; ask again after a pause. */
		ps->last_err = r;
		client_backoff(attempt + 1);
		return PUT_NEXT;
	}
	if (r != 0) {
		if (client_transient(r) && u->src.size > 0) {
			ps->last_err = r;
			client_disconnect(u->c);
			client_backoff(attempt + 1);
			return PUT_NEXT;
		}
		return r;
	}
	ps->need_save = 0;
	ps->did_save = 1;
	u->hold_last = ps->fs != NULL; /* again, for an upload started over */
	if (u->acked.count > 0)
		ps->resumed = 1;
	if (ps->path != NULL)
		record_start(u, ps->path, ps->fs);
	return 0;
}

/* After a failed pass whose outcome r is one of save_md5's refusals: PUT_NEXT or an error. */
static int
put_refused(struct up *u, struct put_state *ps, int r)
{
	if (r == XFER_LOCKED)
		return client_fail(u->c, STEP_ESTATUS,
		    "another client started the upload of this key over with other content "
		    "(423); nothing of this file was committed");
	if (source_changed(u, ps->fs))
		return client_fail(u->c, STEP_ECHANGED, "file changed while it was read");
	if (++ps->md5_fails > 1)
		return client_fail(u->c, STEP_EMISMATCH,
		    "server refused the commit twice: the blocks it holds do not match the "
		    "file's md5 %s",
		    u->want_md5);
	/* Someone else's blocks were in the upload we resumed: send everything again. */
	log_info("the server's copy of '%s' did not match its md5; sending it all again", u->key);
	blockset_clear(&u->acked);
	u->server_md5[0] = '\0';
	ps->need_save = 1;
	ps->resumed = 0;
	return PUT_NEXT;
}

/* After a failed pass (r: what upload_pass() returned): PUT_* or an error. */
static int
put_pass_failed(struct up *u, struct put_state *ps, int r, int attempt)
{
	struct client_file_info probe;

	client_disconnect(u->c);
	switch (r) {
	case XFER_STALLEND:
		/* The last answers never came: the server may have committed anyway. */
		log_info("no answer to the last blocks of '%s'; asking the server", u->key);
		if ((r = client_file_info(u->c, u->key, &probe)) == 0)
			return PUT_DONE;
		if (r != STEP_ENOENT && !client_transient(r))
			return r;
		u->c->degraded = 1;
		return PUT_NEXT;
	case XFER_PIPEFAIL:
		if (!u->c->degraded)
			log_info("pipelining failed on %s:%d; one request at a time", u->c->host,
			    u->c->port);
		u->c->degraded = 1;
		return PUT_NEXT;
	case XFER_TOKEN:
		/* Expired token: log in again. Only repeated refusals without any progress in
		 * between are fatal. */
		if (u->acked.count != ps->token_progress)
			ps->token_retries = 0;
		ps->token_progress = u->acked.count;
		if (++ps->token_retries > 3)
			return client_fail(u->c, STEP_EAUTH, "token refused repeatedly");
		return PUT_RETRY;
	case XFER_NOUPLOAD:
		/* After our own SAVE this is a server that restarted and forgot an upload it
		 * had not yet made durable (or a one-block upload it keeps in memory): start
		 * over, but not forever against a server that always says 408. */
		if (ps->did_save && ++ps->lost > 2)
			return client_fail_status(
			    u->c, STEP_ESTATUS, "server lost the upload", STEP_ST_OPERATION);
		log_info("server has no upload of '%s' in progress; starting over", u->key);
		blockset_clear(&u->acked);
		ps->need_save = 1;
		ps->resumed = 0;
		return PUT_NEXT;
	case XFER_LOCKED:
	case XFER_MD5FAIL:
		return put_refused(u, ps, r);
	case XFER_OUTAGE:
		/* Blocks (or the commit) refused while the server cannot reach its metadata:
		 * nothing of them was recorded. After the wait, SAVE again: its "received" list
		 * says where to continue (a commit that did happen answers 402). */
		if (!client_outage_wait(u->c, STEP_ESTATUS))
			return client_fail_status(
			    u->c, STEP_ESTATUS, "server failed to store block", u->c->status);
		ps->need_save = 1;
		return PUT_RETRY;
	}
	if (!client_transient(r))
		return r;
	ps->last_err = r;
	log_info("%s; retrying", u->c->err);
	client_backoff(attempt + 1);
	return PUT_NEXT;
}

/* SAVE and passes until every block is acknowledged: 0 or an error. */
static int
put_blocks(struct up *u, struct put_state *ps, struct client_result *res)
{
	int attempt, r = 0, k;

	for (attempt = 0; attempt < XFER_ATTEMPTS; attempt++) {
		if ((r = client_ensure(u->c)) != 0) {
			if (client_transient(r) && attempt + 1 < XFER_ATTEMPTS) {
				ps->last_err = r;
				client_backoff(attempt + 1);
				continue;
			}
			return r;
		}
		if (ps->need_save) {
			k = put_save(u, ps, res, attempt);
			if (k == PUT_DONE)
				return STEP_OK;
			if (k == PUT_RETRY)
				attempt--;
			if (k != 0 && k != PUT_NEXT && k != PUT_RETRY)
				return k;
			if (k != 0)
				continue;
		}
		if (u->acked.count == u->total)
			return STEP_OK;
		r = upload_pass(u);
		if (r == 0 && u->hold_last && u->acked.count + 1 == u->total) {
			/* Every block but the last is in. The last one commits the upload: it
			 * goes only if the file is still the one that was read, so that a file
			 * changed during the upload is never committed (with the replace
			 * extension, the old object then stays). */
			if (source_changed(u, ps->fs))
				return client_fail(
				    u->c, STEP_ECHANGED, "file changed while it was read");
			u->hold_last = 0;
			attempt--;
			continue;
		}
		if (r == 0 || r == XFER_EXISTS)
			return STEP_OK;
		k = put_pass_failed(u, ps, r, attempt);
		if (k == PUT_DONE)
			return STEP_OK;
		if (k == PUT_RETRY)
			attempt--;
		else if (k != PUT_NEXT)
			return k;
	}
	if (ps->last_err != 0)
		return ps->last_err; /* its sentence is still the session's */
	return client_fail(u->c, STEP_EIO, "upload did not complete");
}

/*
 * The put driver: SAVE (or local resume), passes until every block is acknowledged,
 * then the final check. path/fs are NULL for memory sources.
 */
static int
put_run(
    struct up *u, const char *path, const struct fstamp *fs, int flags, struct client_result *res)
{
	struct put_state ps;
	struct client_file_info info;
	char local_md5[HASH_MD5_HEX];
	uint8_t dig[HASH_MD5_LEN];
	int r;

	memset(&ps, 0, sizeof(ps));
	ps.flags = flags;
	ps.path = path;
	ps.fs = fs;
	ps.need_save = 1;
	u->replace = (flags & CLIENT_PUT_REPLACE) && (u->c->ext & CLIENT_EXT_REPLACE);
	u->hold_last = fs != NULL;
	if (path != NULL && u->db != NULL && u->key[0] != '\0' && resume_local(u, path, fs)) {
		ps.was_resuming = 1;
		if (!(u->c->ext & CLIENT_EXT_RESUME)) {
			ps.need_save = 0; /* a reference server would throw its blocks away */
			ps.resumed = 1;
			log_info("resuming '%s': %u of %u blocks already sent", u->key,
			    u->acked.count, u->total);
		} /* else stepd keeps the blocks and tells us which: SAVE */
	}
again:
	if ((r = put_blocks(u, &ps, res)) != 0)
		return r;
	if (res->existed && u->total == 0 && u->blk == NULL) {
		/* Key existed before any plan: hash the whole source to compare. */
		struct client_file_info pre;

		if ((r = client_file_info(u->c, u->key, &pre)) != 0)
			return r;
		u->bs = pre.block_size;
		u->total = pre.total_block;
		if (u->src.fd >= 0 && (u->blk = malloc(u->bs)) == NULL)
			return client_fail(u->c, STEP_ENOMEM, "out of memory");
	}
	if (u->known_md5 != NULL) {
		snprintf(local_md5, sizeof(local_md5), "%s", u->known_md5);
	} else {
		if ((r = hash_rest(u)) != 0)
			return r;
		hash_final(u->md5, dig);
		hash_to_hex(dig, HASH_MD5_LEN, local_md5);
	}
	if ((r = verify_final(u, local_md5, &info)) != 0) {
		if (r == STEP_ENOENT && !res->existed && ++ps.lost <= 2) {
			/* Every block was acknowledged, yet the object is not there: the server
			 * threw blocks away (a reference server restarts an upload when another
			 * client SAVEs the same key). Send it all again. */
			log_info("the server does not hold all of '%s'; sending it again", u->key);
			blockset_clear(&u->acked);
			hash_reset(u->md5);
			u->hashed = 0;
			u->server_md5[0] = '\0';
			ps.need_save = 1;
			ps.resumed = 0;
			goto again;
		}
		if (res->existed)
			return client_fail(u->c, STEP_EEXIST,
			    "server refused key: already exists with different content (402)");
		return r;
	}
	snprintf(res->key, sizeof(res->key), "%s", u->key);
	res->size = u->src.size;
	memcpy(res->md5, local_md5, HASH_MD5_HEX);
	res->blocks_sent = u->sent;
	res->blocks_total = u->total;
	res->resumed = ps.resumed;
	u->c->err[0] = '\0';
	return STEP_OK;
}

static void
up_release(struct up *u)
{
	blockset_release(&u->acked);
	hash_free(u->md5);
	free(u->blk);
	free(u->fifo);
}

static int
up_init(struct up *u, struct client *c, const char *key)
{
	memset(u, 0, sizeof(*u));
	u->c = c;
	u->src.fd = -1;
	if (key != NULL && strlen(key) > CLIENT_KEY_MAX)
		return client_fail(c, STEP_EINVAL, "key longer than %d bytes", CLIENT_KEY_MAX);
	if (key != NULL)
		snprintf(u->key, sizeof(u->key), "%s", key);
	if ((u->md5 = hash_md5_new()) == NULL)
		return client_fail(c, STEP_ENOMEM, "out of memory");
	snprintf(u->srv, sizeof(u->srv), "%s:%d", c->host, c->port);
	return STEP_OK;
}

int
client_put_file(
    struct client *c, const char *path, const char *key, int flags, struct client_result *res)
{
	struct client_result dummy;
	struct up u;
	struct stat st0, st1, st2;
	struct fstamp f0, f1, f2;
	char *tmp = NULL;
	int fd = -1, r;

	if (res == NULL)
		res = &dummy;
	memset(res, 0, sizeof(*res));
	c->err[0] = '\0';
	c->status = 0;
	if (key == NULL) {
		if ((tmp = strdup(path)) == NULL)
			return client_fail(c, STEP_ENOMEM, "out of memory");
		key = basename(tmp);
	}
	if ((flags & CLIENT_PUT_REPLACE) && (flags & CLIENT_PUT_ATOMIC)) {
		/* Without the replace extension: the temporary-key dance (client_replace.c). */
		if ((r = client_ensure(c)) != 0 || !(c->ext & CLIENT_EXT_REPLACE)) {
			if (r == 0)
				r = client_put_replace_legacy(c, path, key, flags, res);
			free(tmp);
			return r;
		}
	}
	if ((r = up_init(&u, c, key)) != 0)
		goto out;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0 ||
	    fstat(fd, &st0) != 0) {
		r = client_fail(c, STEP_ESYS, "cannot open: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st0.st_mode)) {
		r = client_fail(c, STEP_EINVAL, "not a regular file");
		goto out;
	}
	stamp_of(&st0, &f0);
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	u.src.fd = fd;
	u.src.size = f0.size;
	/* A content-addressed object (sync's, EXIST_OK) is checked against its key by its
	 * caller, which deletes a torn one: its file is read once, as the design wants. */
	u.no_preread = (flags & CLIENT_PUT_EXIST_OK) != 0;
	key_to_json(&u);
	if (!(flags & CLIENT_PUT_NO_STATE) && c->state_path != NULL &&
	    (u.db = client_state(c)) != NULL && uploads_migrate(u.db) != 0)
		u.db = NULL;
	if ((r = client_ensure(c)) != 0)
		goto out;
	r = put_run(&u, path, &f0, flags, res);
	if (r == STEP_OK || r == STEP_EMISMATCH || r == STEP_ECHANGED) {
		/* The file must not have changed while it was read. */
		if (fstat(fd, &st1) != 0 || stat(path, &st2) != 0) {
			r = client_fail(c, STEP_ECHANGED, "file vanished while it was read");
		} else {
			stamp_of(&st1, &f1);
			stamp_of(&st2, &f2);
			if (memcmp(&f0, &f1, sizeof(f0)) != 0 || memcmp(&f0, &f2, sizeof(f0)) != 0)
				r = client_fail(c, STEP_ECHANGED, "file changed while it was read");
		}
		if (r == STEP_ECHANGED && !res->existed &&
		    (u.server_md5[0] != '\0' || !(c->ext & CLIENT_EXT_SAVE_MD5))) {
			/* What the server holds is a torn copy: never leave it as good. (With
			 * save_md5 nothing was committed unless our own UPLOAD said so: the key
			 * may hold someone else's object, or the old one being replaced.) */
			if (client_file_delete(c, u.key) != 0)
				log_info("could not delete the torn upload of '%s'", u.key);
		}
	}
	if (u.db != NULL &&
	    (r == STEP_OK || r == STEP_ECHANGED || r == STEP_EEXIST || r == STEP_EMISMATCH))
		uploads_delete(u.db, u.srv, c->user, u.key);
out:
	if (fd >= 0)
		close(fd);
	up_release(&u);
	free(tmp);
	if (r == STEP_OK && c->progress != NULL)
		c->progress(c->progress_arg, res->key, res->size, res->size);
	return r;
}

int
client_put_mem(struct client *c, const void *p, size_t n, const char *key, int flags,
    struct client_result *res)
{
	return client_put_mem_md5(c, p, n, NULL, key, flags, res);
}

int
client_put_mem_md5(struct client *c, const void *p, size_t n, const char *md5, const char *key,
    int flags, struct client_result *res)
{
	struct client_result dummy;
	struct up u;
	int r;

	if (res == NULL)
		res = &dummy;
	memset(res, 0, sizeof(*res));
	c->err[0] = '\0';
	if ((r = up_init(&u, c, key)) == 0) {
		u.src.mem = p;
		u.src.size = n;
		u.known_md5 = md5;
		key_to_json(&u);
		r = put_run(&u, NULL, NULL, flags, res);
	}
	up_release(&u);
	return r;
}

/* ---- downloads ---- */

struct down {
	struct client *c;
	const char *key;
	char key_json[CLIENT_KEY_MAX * 6 + 3];
	struct client_file_info info;
	int fd;             /* sink file, or -1 */
	uint8_t *mem;       /* sink memory when fd < 0 */
	struct hasher *md5; /* hashes what is written, on its own thread */
	uint32_t next_recv; /* blocks 0..next_recv-1 are written */
	uint64_t flushed;   /* bytes [0, flushed) handed to writeback early */
	uint64_t requests;
	int any_block; /* the plan's block size was asked for: DOWNLOADs name it */
};

/* The download plan: 1 MiB blocks from a server with any_block (ensured by the GET's
 * connection), else the server's own. */
static int
download_plan(struct down *d)
{
	int r;

	if ((r = client_ensure(d->c)) != 0)
		return r;
	d->any_block = (d->c->ext & CLIENT_EXT_ANY_BLOCK) != 0;
	return client_file_plan(d->c, d->key, d->any_block ? BIG_BLOCK_MAX : 0, &d->info);
}

/* Written bytes between early writebacks of a download: the final fsync then finds
 * little left to write instead of the whole file. */
#define WRITEBACK_BYTES (8u << 20)

/* Blocks 0..next_recv-1 are written: starts writeback of the part not started yet when
 * it is large enough (SYNC_FILE_RANGE_WRITE only queues the I/O). */
static void
sink_writeback(struct down *d)
{
	uint64_t done = (uint64_t)d->next_recv * d->info.block_size;

	if (d->fd < 0)
		return;
	if (done > d->info.size)
		done = d->info.size;
	if (done - d->flushed < WRITEBACK_BYTES && done < d->info.size)
		return;
	if (done > d->flushed &&
	    sync_file_range(
	        d->fd, (off_t)d->flushed, (off_t)(done - d->flushed), SYNC_FILE_RANGE_WRITE) != 0)
		log_debug("sync_file_range: %s", strerror(errno));
	d->flushed = done;
}

static int
sink_write(struct down *d, uint32_t i, const uint8_t *p, uint32_t len)
{
	off_t off = (off_t)((uint64_t)i * d->info.block_size);
	size_t done = 0;
	ssize_t k;

	if (d->fd < 0) {
		memcpy(d->mem + off, p, len);
		return STEP_OK;
	}
	while (done < len) {
		k = pwrite(d->fd, p + done, len - done, off + (off_t)done);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return client_fail(d->c, STEP_ESYS, "cannot write: %s", strerror(errno));
		done += (size_t)k;
	}
	return STEP_OK;
}

/* One pass: pipelined DOWNLOADs from next_recv on, answers in order. */
static int
download_pass(struct down *d)
{
	struct client *c = d->c;
	const uint8_t *bin;
	uint32_t binlen, want, next_req = d->next_recv, total = d->info.total_block;
	size_t pktlen, put;
	json_t *resp;
	char js[STEP_HDR_LEN + sizeof(d->key_json) + 600];
	uint64_t last_progress = 0, now;
	int window = window_for(c, d->any_block ? d->info.block_size : 0), st, n, r = 0, rd = 0,
	    wr = 0;
	char bsf[32] = "";

	if (d->any_block)
		snprintf(bsf, sizeof(bsf), ",\"block_size\":%u", d->info.block_size);

	buf_reset(&c->tx);
	while (d->next_recv < total) {
		/* Queue requests up to the window. */
		while (next_req < total && next_req - d->next_recv < (uint32_t)window) {
			n = snprintf(js + STEP_HDR_LEN, sizeof(js) - STEP_HDR_LEN,
			    "{\"type\":\"FILE\",\"operation\":\"DOWNLOAD\",\"direction\":"
			    "\"REQUEST\",\"token\":\"%s\",\"key\":%s,\"block_index\":%u%s}",
			    c->token, d->key_json, next_req, bsf);
			if (n < 0 || (size_t)n >= sizeof(js) - STEP_HDR_LEN)
				return client_fail(c, STEP_ETOOBIG, "request too long");
			codec_put_header((uint8_t *)js, (uint32_t)n, 0);
			if ((r = buf_append(&c->tx, js, STEP_HDR_LEN + (size_t)n)) != 0)
				return client_fail(c, r, "out of memory");
			next_req++;
			d->requests++;
		}
		n = conn_wait(c->conn, buf_avail(&c->tx) > 0, c->timeout_ms, &rd, &wr);
		if (n != 0 && n != STEP_ETIMEDOUT)
			return client_fail(c, STEP_ESYS, "poll: %s", strerror(errno));
		if (n == STEP_ETIMEDOUT) {
			if (window > 1)
				return XFER_PIPEFAIL;
			return client_fail(c, STEP_ETIMEDOUT, "no answer from server within %d s",
			    (c->timeout_ms + 999) / 1000);
		}
		if (wr) {
			struct iovec v = { buf_ptr(&c->tx), buf_avail(&c->tx) };

			if ((r = conn_writev(c->conn, &v, 1, &put)) != 0)
				return client_fail(c, r, "cannot send to server: %s",
				    r == STEP_ECLOSED ? "connection closed" : strerror(errno));
			buf_consume(&c->tx, put);
		}
		if (!rd)
			continue;
		if ((r = client_rx_fill(c)) != 0)
			return r;
		while ((r = client_rx_parse(c, &resp, &bin, &binlen, &pktlen)) == 0) {
			st = client_resp_status(resp);
			json_decref(resp);
			c->status = st;
			want = block_len(d->info.size, d->info.block_size, total, d->next_recv);
			if (st == STEP_ST_TOKEN) {
				client_rx_consume(c, pktlen);
				return XFER_TOKEN;
			}
			if (st != STEP_ST_OK || binlen != want) {
				client_rx_consume(c, pktlen);
				if (window > 1)
					return XFER_PIPEFAIL;
				if (st != STEP_ST_OK)
					return client_fail_status(c,
					    st == STEP_ST_NOTFOUND ? STEP_ENOENT : STEP_ESTATUS,
					    "download refused", st);
				return client_fail(c, STEP_EPROTO,
				    "block %u has %u bytes, expected %u", d->next_recv, binlen,
				    want);
			}
			if (d->next_recv >= next_req) {
				client_rx_consume(c, pktlen);
				return XFER_PIPEFAIL; /* an answer nobody asked for */
			}
			bwlimit_take(c->bw, binlen);
			r = sink_write(d, d->next_recv, bin, binlen);
			client_rx_consume(c, pktlen);
			if (r != 0)
				return r;
			d->next_recv++;
			hasher_advance(d->md5, (uint64_t)d->next_recv * d->info.block_size);
			sink_writeback(d);
		}
		if (r != STEP_EAGAIN)
			return r;
		now = util_now_ms();
		if (c->progress != NULL && now - last_progress >= 100) {
			last_progress = now;
			c->progress(c->progress_arg, d->key,
			    (uint64_t)d->next_recv * d->info.block_size > d->info.size
			        ? d->info.size
			        : (uint64_t)d->next_recv * d->info.block_size,
			    d->info.size);
		}
	}
	return STEP_OK;
}

/* Runs passes until every block is in, then compares MD5s. */
static int
download_run(struct down *d, struct client_result *res)
{
	struct client *c = d->c;
	char md5[HASH_MD5_HEX];
	int attempt, r = 0, token_retries = 0;
	uint32_t token_progress = 0;
	json_t *s;
	char *js;

	s = json_string(d->key);
	js = s ? json_dumps(s, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
	snprintf(d->key_json, sizeof(d->key_json), "%s", js ? js : "\"\"");
	free(js);
	json_decref(s);
	for (attempt = 0; attempt < XFER_ATTEMPTS && d->next_recv < d->info.total_block;
	     attempt++) {
		if ((r = client_ensure(c)) != 0) {
			if (client_transient(r) && attempt + 1 < XFER_ATTEMPTS) {
				client_backoff(attempt + 1);
				continue;
			}
			return r;
		}
		r = download_pass(d);
		if (r == 0)
			break;
		client_disconnect(c);
		if (r == XFER_PIPEFAIL) {
			if (!c->degraded)
				log_info("pipelining failed on %s:%d; one request at a time",
				    c->host, c->port);
			c->degraded = 1;
			continue;
		}
		if (r == XFER_TOKEN) {
			if (d->next_recv != token_progress)
				token_retries = 0;
			token_progress = d->next_recv;
			if (++token_retries > 3)
				return client_fail(c, STEP_EAUTH, "token refused repeatedly");
			attempt--;
			continue;
		}
		if (!client_transient(r))
			return r;
		log_info("%s; retrying", c->err);
		client_backoff(attempt + 1);
	}
	if (d->next_recv < d->info.total_block)
		return r != 0 ? r : client_fail(c, STEP_EIO, "download did not complete");
	hasher_advance(d->md5, d->info.size);
	r = hasher_finish(d->md5, md5);
	d->md5 = NULL;
	if (r != 0)
		return client_fail(c, r, "cannot read back what was written: %s", strerror(errno));
	if (strcmp(md5, d->info.md5) != 0)
		return client_fail(c, STEP_EMISMATCH,
		    "downloaded data has md5 %s, the server says %s", md5, d->info.md5);
	snprintf(res->key, sizeof(res->key), "%s", d->key);
	res->size = d->info.size;
	memcpy(res->md5, md5, HASH_MD5_HEX);
	res->blocks_sent = d->requests;
	res->blocks_total = d->info.total_block;
	return STEP_OK;
}

/*
 * Temporary files of downloads in progress, so a signal handler can remove them
 * (client_remove_temps()). Fixed storage: the handler must not allocate or lock.
 */
#define TEMP_SLOTS 64
static char temp_path[TEMP_SLOTS][PATH_MAX];
static volatile sig_atomic_t temp_used[TEMP_SLOTS];
static pthread_mutex_t temp_mu = PTHREAD_MUTEX_INITIALIZER;

/* Remembers path; returns its slot, or -1 when it cannot be remembered. */
static int
temp_register(const char *path)
{
	int i, slot = -1;

	if (strlen(path) >= PATH_MAX)
		return -1;
	pthread_mutex_lock(&temp_mu);
	for (i = 0; i < TEMP_SLOTS && slot < 0; i++) {
		if (!temp_used[i]) {
			memcpy(temp_path[i], path, strlen(path) + 1);
			temp_used[i] = 1;
			slot = i;
		}
	}
	pthread_mutex_unlock(&temp_mu);
	return slot;
}

static void
temp_unregister(int slot)
{
	if (slot < 0)
		return;
	pthread_mutex_lock(&temp_mu);
	temp_used[slot] = 0;
	pthread_mutex_unlock(&temp_mu);
}

void
client_remove_temps(void)
{
	int i;

	for (i = 0; i < TEMP_SLOTS; i++)
		if (temp_used[i])
			unlink(temp_path[i]);
}

int
client_get_file(
    struct client *c, const char *key, const char *path, int mode, struct client_result *res)
{
	struct client_result dummy;
	struct down d;
	char *tmpl = NULL, *dcopy = NULL, *bcopy = NULL;
	size_t tlen;
	int r, fd = -1, slot = -1;

	if (res == NULL)
		res = &dummy;
	memset(res, 0, sizeof(*res));
	memset(&d, 0, sizeof(d));
	c->err[0] = '\0';
	d.c = c;
	d.key = key;
	d.fd = -1;
	if (strlen(key) > CLIENT_KEY_MAX)
		return client_fail(c, STEP_EINVAL, "key longer than %d bytes", CLIENT_KEY_MAX);
	if ((r = download_plan(&d)) != 0)
		return r;
	dcopy = strdup(path);
	bcopy = strdup(path);
	tlen = strlen(path) + 32;
	tmpl = malloc(tlen);
	if (!dcopy || !bcopy || !tmpl) {
		r = client_fail(c, STEP_ENOMEM, "out of memory");
		goto out;
	}
	snprintf(tmpl, tlen, "%s/.%s.stepsync-XXXXXX", dirname(dcopy), basename(bcopy));
	if ((fd = mkstemp(tmpl)) < 0) {
		r = client_fail(
		    c, STEP_ESYS, "cannot create a file next to '%s': %s", path, strerror(errno));
		goto out;
	}
	d.fd = fd;
	slot = temp_register(tmpl);
	if ((r = hasher_start(fd, NULL, d.info.size, &d.md5)) != 0) {
		r = client_fail(c, r, "cannot start hashing: %s", step_strerror(r));
		goto out;
	}
	if ((r = download_run(&d, res)) != 0)
		goto out;
	if (fchmod(fd, (mode_t)(mode & 07777)) != 0 || fsync(fd) != 0) {
		r = client_fail(c, STEP_ESYS, "cannot write '%s': %s", tmpl, strerror(errno));
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		r = client_fail(c, STEP_ESYS, "cannot write '%s': %s", tmpl, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmpl, path) != 0) {
		r = client_fail(c, STEP_ESYS, "cannot rename to '%s': %s", path, strerror(errno));
		goto out;
	}
	free(tmpl);
	tmpl = NULL;
	if (c->progress != NULL)
		c->progress(c->progress_arg, key, res->size, res->size);
out:
	if (fd >= 0)
		close(fd);
	if (tmpl != NULL && d.fd >= 0)
		unlink(tmpl);
	temp_unregister(slot);
	free(tmpl);
	free(dcopy);
	free(bcopy);
	hasher_free(d.md5);
	return r;
}

int
client_get_mem(struct client *c, const char *key, size_t max, uint8_t **outp, size_t *lenp,
    struct client_result *res)
{
	struct client_result dummy;
	struct down d;
	int r;

	if (res == NULL)
		res = &dummy;
	memset(res, 0, sizeof(*res));
	memset(&d, 0, sizeof(d));
	c->err[0] = '\0';
	d.c = c;
	d.key = key;
	d.fd = -1;
	if (strlen(key) > CLIENT_KEY_MAX)
		return client_fail(c, STEP_EINVAL, "key longer than %d bytes", CLIENT_KEY_MAX);
	if ((r = download_plan(&d)) != 0)
		return r;
	if (d.info.size > max)
		return client_fail(c, STEP_ETOOBIG, "file is larger than %zu bytes", max);
	if ((d.mem = malloc((size_t)d.info.size + 1)) == NULL ||
	    hasher_start(-1, d.mem, d.info.size, &d.md5) != 0) {
		r = client_fail(c, STEP_ENOMEM, "out of memory");
		goto out;
	}
	if ((r = download_run(&d, res)) != 0)
		goto out;
	d.mem[d.info.size] = 0;
	*outp = d.mem;
	*lenp = (size_t)d.info.size;
	d.mem = NULL;
out:
	hasher_free(d.md5);
	free(d.mem);
	return r;
}

/* ---- several files over several connections ---- */

struct many {
	pthread_mutex_t mu;
	const struct client_opts *o;
	struct client_job *jobs;
	size_t n, next;
	int first_err;
};

static void *
many_worker(void *arg)
{
	struct many *m = arg;
	struct client *c = NULL;
	struct client_job *j;
	int r;

	if ((r = client_new(m->o, &c)) != 0)
		c = NULL;
	for (;;) {
		pthread_mutex_lock(&m->mu);
		j = m->next < m->n ? &m->jobs[m->next++] : NULL;
		pthread_mutex_unlock(&m->mu);
		if (j == NULL)
			break;
		if (c == NULL) {
			j->rc = r;
			snprintf(j->error, sizeof(j->error), "%s", step_strerror(r));
		} else {
			j->rc = client_put_file(c, j->path, j->key, j->flags, &j->res);
			j->status = j->rc != 0 ? client_status(c) : 0;
			if (j->rc != 0)
				snprintf(j->error, sizeof(j->error), "%s", client_error(c));
		}
	}
	client_free(c);
	return NULL;
}

int
client_put_many(const struct client_opts *o, int nconn, struct client_job *jobs, size_t n)
{
	struct many m;
	pthread_t th[64];
	int i, started = 0;
	size_t k;

	memset(&m, 0, sizeof(m));
	pthread_mutex_init(&m.mu, NULL);
	m.o = o;
	m.jobs = jobs;
	m.n = n;
	if (nconn < 1)
		nconn = 1;
	if (nconn > 64)
		nconn = 64;
	if ((size_t)nconn > n)
		nconn = n > 0 ? (int)n : 1;
	for (i = 0; i < nconn; i++)
		if (pthread_create(&th[i], NULL, many_worker, &m) == 0)
			started++;
	if (started == 0)
		many_worker(&m);
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&m.mu);
	for (k = 0; k < n; k++)
		if (jobs[k].rc != 0)
			return jobs[k].rc;
	return STEP_OK;
}
