/*
 * conn_state.c — per-connection framing and request dispatch, over buffers only.
 * Never trusts json_len or bin_len before checking them against the limits, and never
 * allocates more than one packet's worth of input.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "conn_state.h"
#include "err.h"
#include "handler.h"
#include "log.h"
#include "step.h"

#define JSON_BYTES_MAX (4 * (size_t)STEP_MAX_JSON) /* a character-counted text in UTF-8 */
#define READ_SLACK     (64 * 1024)
#define OUT_MAX        (256u << 20)

static struct conn_slot *
slot_new(void)
{
	struct conn_slot *sl = calloc(1, sizeof(*sl));

	if (sl != NULL)
		buf_init(&sl->after, OUT_MAX);
	return sl;
}

static void
slot_free(struct conn_slot *sl)
{
	if (sl == NULL)
		return;
	json_decref(sl->reply);
	free(sl->pkt);
	free(sl->key);
	buf_release(&sl->after);
	free(sl);
}

void
conn_state_init(struct conn_state *cs, uint32_t max_bin)
{
	memset(cs, 0, sizeof(*cs));
	buf_init(&cs->in,
	    STEP_HDR_LEN + JSON_BYTES_MAX +
	        (max_bin > HANDLER_PUTMANY_MAX_BIN ? max_bin : HANDLER_PUTMANY_MAX_BIN) +
	        READ_SLACK);
	buf_init(&cs->out, OUT_MAX);
	cs->max_bin = max_bin;
}

void
conn_state_set_peer(struct conn_state *cs, const struct sockaddr *sa)
{
	const void *a = NULL;

	cs->peer[0] = '\0';
	if (sa != NULL && sa->sa_family == AF_INET)
		a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	else if (sa != NULL && sa->sa_family == AF_INET6)
		a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	if (a == NULL || inet_ntop(sa->sa_family, a, cs->peer, sizeof(cs->peer)) == NULL)
		cs->peer[0] = '\0';
}

void
conn_state_release(struct conn_state *cs)
{
	struct conn_slot *sl, *next;

	for (sl = cs->qhead; sl != NULL; sl = next) {
		next = sl->next;
		slot_free(sl);
	}
	cs->qhead = cs->qtail = NULL;
	slot_free(cs->spare);
	cs->spare = NULL;
	json_decref(cs->head_req);
	cs->head_req = NULL;
	buf_release(&cs->in);
	buf_release(&cs->out);
}

/* Forgets the head packet's scan state (the packet was consumed or framing was lost). */
static void
head_reset(struct conn_state *cs)
{
	cs->head_nj = 0;
	cs->ext_chars = 0;
	cs->ext_i = cs->ext_count = 0;
	cs->head_nobin = 0;
}

static size_t
seqlen(uint8_t c)
{
	return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 1;
}

/*
 * codec_json_extent() without re-reading: nothing is parsed before json_len bytes are in;
 * then the probe runs once, and a character-counted text is walked from where the
 * previous read stopped. So a peer trickling its JSON costs work in proportion to the
 * bytes it sends, not to the square of them. Same results as codec_json_extent().
 */
static int
json_extent(struct conn_state *cs, const uint8_t *p, size_t avail, uint32_t json_len,
    size_t max_bytes, size_t *nj)
{
	int r;

	if (json_len > max_bytes)
		return STEP_ETOOBIG;
	if (!cs->ext_chars) {
		if (avail < json_len)
			return STEP_EAGAIN;
		r = codec_json_extent(p, avail, json_len, max_bytes, nj);
		if (r != STEP_EAGAIN)
			return r;
		cs->ext_chars = 1;
		cs->ext_i = cs->ext_count = 0;
	}
	while (cs->ext_count < json_len) {
		size_t sl;

		if (cs->ext_i >= avail)
			return cs->ext_i + (json_len - cs->ext_count) > max_bytes ? STEP_ETOOBIG
			                                                          : STEP_EAGAIN;
		sl = seqlen(p[cs->ext_i]);
		if (cs->ext_i + sl > max_bytes ||
		    cs->ext_i + sl + (json_len - cs->ext_count - 1) > max_bytes)
			return STEP_ETOOBIG;
		if (cs->ext_i + sl > avail)
			return STEP_EAGAIN;
		cs->ext_i += sl;
		cs->ext_count++;
	}
	*nj = cs->ext_i;
	return STEP_OK;
}

static void
fail_framing(struct conn_state *cs, int status, const char *msg)
{
	handler_send_error(cs->qtail != NULL ? &cs->qtail->after : &cs->out, status, msg);
	buf_reset(&cs->in);
	json_decref(cs->head_req);
	cs->head_req = NULL;
	head_reset(cs);
	cs->discard = 0;
	cs->closing = 1;
}

/* The largest binary part the header may announce: one block, or a PUTMANY's content. */
static uint32_t
bin_limit(const struct conn_state *cs)
{
	return cs->max_bin > HANDLER_PUTMANY_MAX_BIN ? cs->max_bin : HANDLER_PUTMANY_MAX_BIN;
}

static void
too_large(struct conn_state *cs, const struct step_hdr *hdr)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "Packet too large (json_len %u, bin_len %u; limits %u and %u).",
	    hdr->json_len, hdr->bin_len, STEP_MAX_JSON, cs->max_bin);
	fail_framing(cs, STEP_ST_TOOLARGE, msg);
}

/* 1 when req must wait for a pending reply: it names a pending slot's key, lists keys, or is
 * a LOGIN while a reply is pending. */
static int
must_wait(const struct conn_state *cs, const json_t *req)
{
	const struct conn_slot *sl;
	const char *key, *op = "";
	size_t keylen, oplen;
	int upload;

	if (cs->npending == 0)
		return 0;
	/* One LOGIN in flight per connection: a pipelined burst of them cannot fill the
	 * password threads' queue before the first failures are counted. */
	if (codec_get_str(req, "operation", &op, &oplen) == 0 && strcmp(op, "LOGIN") == 0)
		return 1;
	upload = strcmp(op, "UPLOAD") == 0;
	if (codec_get_str(req, "key", &key, &keylen) == 0) {
		for (sl = cs->qhead; sl != NULL; sl = sl->next)
			if (!sl->ready && !(upload && sl->upload_ok) &&
			    (sl->keylen == SIZE_MAX ||
			        (sl->key != NULL && sl->keylen == keylen &&
			            memcmp(sl->key, key, keylen) == 0)))
				return 1;
		return 0;
	}
	return codec_get_str(req, "operation", &op, &oplen) == 0 && strcmp(op, "LIST") == 0;
}

/* Makes slot the newest pending reply; remembers req's key (none: a server-chosen key that
 * no later request can name yet; keylen SIZE_MAX when it could not be copied, or for a
 * PUTMANY, which names many keys: every keyed request waits for the slot) and whether an
 * UPLOAD of it need not wait (upload_ok). */
static void
slot_link(struct conn_state *cs, struct conn_slot *sl, const json_t *req, int upload_ok)
{
	sl->upload_ok = upload_ok;
	const char *key, *op;
	size_t keylen, oplen;

	if (codec_get_str(req, "operation", &op, &oplen) == 0 && strcmp(op, "PUTMANY") == 0) {
		sl->keylen = SIZE_MAX;
	} else if (codec_get_str(req, "key", &key, &keylen) == 0) {
		if ((sl->key = malloc(keylen + 1)) != NULL) {
			memcpy(sl->key, key, keylen);
			sl->key[keylen] = '\0';
			sl->keylen = keylen;
		} else {
			sl->keylen = SIZE_MAX;
		}
	}
	sl->next = NULL;
	if (cs->qtail != NULL)
		cs->qtail->next = sl;
	else
		cs->qhead = sl;
	cs->qtail = sl;
	cs->npending++;
}

/*
 * The head of the packet at p (avail bytes in): its header in *hdr (bin_len 0 when its
 * binary part is to be dropped, the length sent in *wire_bin), its JSON's extent in *njp,
 * a token before authentication and a binary part over one block looked at. 0 to go on,
 * -1 to wait for more bytes or stop (a framing error was answered).
 */
static int
head_frame(struct conn_state *cs, struct handler *h, const uint8_t *p, size_t avail,
    struct step_hdr *hdr, size_t *njp, uint32_t *wire_bin)
{
	char errbuf[160];
	json_t *req = NULL;
	int r;

	if (avail < STEP_HDR_LEN)
		return -1;
	r = codec_get_header(p, STEP_MAX_JSON, bin_limit(cs), hdr);
	if (r == STEP_ETOOBIG) {
		too_large(cs, hdr);
		return -1;
	}
	if (r != 0) {
		fail_framing(cs, STEP_ST_MISSING, "Empty JSON part.");
		return -1;
	}
	*wire_bin = hdr->bin_len;
	/* The extent of a packet's JSON depends on its bytes only: found once, while the
	 * rest of a large binary part comes in over many reads. */
	if ((*njp = cs->head_nj) == 0) {
		r = json_extent(cs, p + STEP_HDR_LEN, avail - STEP_HDR_LEN, hdr->json_len,
		    cs->authed ? JSON_BYTES_MAX : CONN_UNAUTH_JSON, njp);
		if (r == STEP_EAGAIN)
			return -1;
		if (r != 0) {
			fail_framing(cs, STEP_ST_TOOLARGE,
			    cs->authed ? "JSON part too large."
			               : "JSON part too large before login.");
			return -1;
		}
		cs->head_nj = *njp;
	}
	if (!cs->authed && !cs->head_nobin && cs->head_req == NULL && hdr->bin_len > 0) {
		/* Before authentication no binary part is buffered: the token decides. */
		if (codec_decode_json(p + STEP_HDR_LEN, *njp, &req, errbuf, sizeof(errbuf)) == 0) {
			cs->authed = handler_token_ok(h, req);
			cs->head_req = req;
			req = NULL;
		}
		/* Without one, answered as if it had no binary part; the bytes are
		 * dropped as they come (cs->discard, once the packet is consumed). */
		cs->head_nobin = !cs->authed;
	}
	if (cs->head_nobin)
		hdr->bin_len = 0;
	if (hdr->bin_len > cs->max_bin) {
		/* Over one block: only a PUTMANY may be that big, so look at the JSON
		 * before waiting for the binary part (and keep it parsed). */
		if (cs->head_req == NULL &&
		    codec_decode_json(p + STEP_HDR_LEN, *njp, &req, errbuf, sizeof(errbuf)) == 0) {
			cs->head_req = req;
			req = NULL;
		}
		if (cs->head_req == NULL || !handler_big_bin_ok(cs->head_req)) {
			too_large(cs, hdr);
			return -1;
		}
	}
	return 0;
}

void
conn_state_process(struct conn_state *cs, struct handler *h, void *cookie, size_t out_limit)
{
	while (!cs->blocked && !cs->closing && cs->npending < CONN_MAX_PENDING &&
	    buf_avail(&cs->out) + cs->queued < out_limit) {
		size_t avail = buf_avail(&cs->in), nj = 0, total, before;
		uint32_t wire_bin; /* the binary part's length as sent */
		const uint8_t *p = buf_ptr(&cs->in);
		struct buf *target = cs->qtail != NULL ? &cs->qtail->after : &cs->out;
		struct conn_slot *sl;
		struct step_hdr hdr;
		char errbuf[160];
		json_t *req = NULL;
		int r;

		if (cs->discard > 0) {
			/* The binary part of a request refused before authentication. */
			size_t n = avail < cs->discard ? avail : (size_t)cs->discard;

			buf_consume(&cs->in, n);
			cs->discard -= n;
			if (cs->discard > 0)
				return;
			continue;
		}
		if (head_frame(cs, h, p, avail, &hdr, &nj, &wire_bin) != 0)
			return;
		total = STEP_HDR_LEN + nj + hdr.bin_len;
		if (avail < total)
			return;
		before = buf_avail(target);
		if (cs->head_req != NULL) {
			req = cs->head_req;
			cs->head_req = NULL;
		} else if (codec_decode_json(p + STEP_HDR_LEN, nj, &req, errbuf, sizeof(errbuf)) !=
		    0) {
			/* Framing is intact: answer and go on with the next packet. */
			handler_send_error(target, STEP_ST_MISSING, errbuf);
			goto next;
		}
		if (must_wait(cs, req)) {
			cs->head_req = req; /* still the packet at the head of in */
			cs->blocked = 1;
			return;
		}
		if (cs->spare == NULL && (cs->spare = slot_new()) == NULL) {
			handler_send_error(target, STEP_ST_INTERNAL, "Server out of memory.");
			json_decref(req);
			goto next;
		}
		sl = cs->spare;
		sl->owner = cookie;
		h->authed = 0;
		r = handler_handle(h, req, p + STEP_HDR_LEN + nj, hdr.bin_len, target, sl,
		    cs->peer[0] != '\0' ? cs->peer : NULL);
		if (h->authed)
			cs->authed = 1;
		if (r == HANDLER_PENDING || r == HANDLER_PENDING_SAVE) {
			cs->spare = NULL;
			slot_link(cs, sl, req, r == HANDLER_PENDING_SAVE);
		} else if (r == HANDLER_CLOSE) {
			cs->closing = 1;
		}
		json_decref(req);
	next:
		if (target != &cs->out)
			cs->queued += buf_avail(target) - before;
		buf_consume(&cs->in, total);
		if (cs->head_nobin)
			cs->discard = wire_bin;
		head_reset(cs);
	}
}

void
conn_state_deliver(
    struct conn_state *cs, struct conn_slot *slot, json_t *reply, struct handler_pkt *pkt)
{
	slot->reply = reply;
	slot->pkt = pkt;
	slot->ready = 1;
	if (reply != NULL && json_integer_value(json_object_get(reply, "status")) == STEP_ST_OK &&
	    json_object_get(reply, "token") != NULL)
		cs->authed = 1; /* a LOGIN answered by the password thread */
	cs->npending--;
	cs->blocked = 0;
	while (cs->qhead != NULL && cs->qhead->ready) {
		struct conn_slot *sl = cs->qhead;
		size_t n = buf_avail(&sl->after);

		if (sl->pkt != NULL)
			handler_send_pkt(&cs->out, sl->pkt);
		else
			handler_send(&cs->out, sl->reply, 0);
		if (n > 0) {
			if (buf_append(&cs->out, buf_ptr(&sl->after), n) != 0)
				log_error("reply queue overflow: %zu bytes of replies lost", n);
			cs->queued -= n;
		}
		cs->qhead = sl->next;
		if (cs->qhead == NULL)
			cs->qtail = NULL;
		slot_free(sl);
	}
}

int
conn_state_pending(const struct conn_state *cs)
{
	return cs->npending > 0;
}

size_t
conn_state_room(const struct conn_state *cs)
{
	size_t max = cs->authed ? cs->in.max : CONN_UNAUTH_IN, used = buf_avail(&cs->in);

	return used < max ? max - used : 0;
}

int
conn_state_want_read(const struct conn_state *cs, size_t out_limit)
{
	return !cs->closing && buf_avail(&cs->out) + cs->queued < out_limit &&
	    conn_state_room(cs) >= READ_SLACK;
}
