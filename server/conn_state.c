/*
 * conn_state.c — per-connection framing and request dispatch, over buffers only.
 * Never trusts json_len or bin_len before checking them against the limits, and never
 * allocates more than one packet's worth of input.
 */
#include <stdio.h>

#include "codec.h"
#include "conn_state.h"
#include "err.h"
#include "handler.h"
#include "log.h"
#include "step.h"

#define JSON_BYTES_MAX (4 * (size_t)STEP_MAX_JSON) /* a character-counted text in UTF-8 */
#define READ_SLACK     (64 * 1024)
#define OUT_MAX        (256u << 20)

void
conn_state_init(struct conn_state *cs, uint32_t max_bin)
{
	buf_init(&cs->in, STEP_HDR_LEN + JSON_BYTES_MAX + max_bin + READ_SLACK);
	buf_init(&cs->out, OUT_MAX);
	cs->max_bin = max_bin;
	cs->pending = 0;
	cs->closing = 0;
}

void
conn_state_release(struct conn_state *cs)
{
	buf_release(&cs->in);
	buf_release(&cs->out);
}

static void
fail_framing(struct conn_state *cs, int status, const char *msg)
{
	handler_send_error(&cs->out, status, msg);
	buf_reset(&cs->in);
	cs->closing = 1;
}

void
conn_state_process(struct conn_state *cs, struct handler *h, void *cookie, size_t out_limit)
{
	while (!cs->pending && !cs->closing && buf_avail(&cs->out) < out_limit) {
		size_t avail = buf_avail(&cs->in), nj = 0, total;
		const uint8_t *p = buf_ptr(&cs->in);
		struct step_hdr hdr;
		char errbuf[160];
		json_t *req = NULL;
		int r;

		if (avail < STEP_HDR_LEN)
			return;
		r = codec_get_header(p, STEP_MAX_JSON, cs->max_bin, &hdr);
		if (r == STEP_ETOOBIG) {
			snprintf(errbuf, sizeof(errbuf),
			    "Packet too large (json_len %u, bin_len %u; limits %u and %u).",
			    hdr.json_len, hdr.bin_len, STEP_MAX_JSON, cs->max_bin);
			fail_framing(cs, STEP_ST_TOOLARGE, errbuf);
			return;
		}
		if (r != 0) {
			fail_framing(cs, STEP_ST_MISSING, "Empty JSON part.");
			return;
		}
		r = codec_json_extent(
		    p + STEP_HDR_LEN, avail - STEP_HDR_LEN, hdr.json_len, JSON_BYTES_MAX, &nj);
		if (r == STEP_EAGAIN)
			return;
		if (r != 0) {
			fail_framing(cs, STEP_ST_TOOLARGE, "JSON part too large.");
			return;
		}
		total = STEP_HDR_LEN + nj + hdr.bin_len;
		if (avail < total)
			return;
		if (codec_decode_json(p + STEP_HDR_LEN, nj, &req, errbuf, sizeof(errbuf)) != 0) {
			/* Framing is intact: answer and go on with the next packet. */
			handler_send_error(&cs->out, STEP_ST_MISSING, errbuf);
			buf_consume(&cs->in, total);
			continue;
		}
		r = handler_handle(h, req, p + STEP_HDR_LEN + nj, hdr.bin_len, &cs->out, cookie);
		json_decref(req);
		buf_consume(&cs->in, total);
		if (r == HANDLER_PENDING)
			cs->pending = 1;
		else if (r == HANDLER_CLOSE)
			cs->closing = 1;
	}
}

void
conn_state_deliver(struct conn_state *cs, json_t *reply)
{
	handler_send(&cs->out, reply, 0);
	json_decref(reply);
	cs->pending = 0;
}

int
conn_state_want_read(const struct conn_state *cs, size_t out_limit)
{
	return !cs->closing && buf_avail(&cs->out) < out_limit &&
	    cs->in.max - buf_avail(&cs->in) >= READ_SLACK;
}
