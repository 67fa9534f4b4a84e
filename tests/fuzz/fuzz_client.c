/* fuzz_client.c — libFuzzer target: what stepsync parses from a server. A byte stream
 * is cut into packets by the client's receive parser (tolerant JSON extent, limits),
 * and each answer's status, md5 and "received" ranges are read as a transfer would. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "blockset.h"
#include "client_impl.h"
#include "codec.h"
#include "err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char pw[] = "00000000000000000000000000000000";
	struct client_opts o;
	struct client *c = NULL;
	struct blockset bs;
	const uint8_t *bin;
	uint32_t binlen;
	size_t pktlen;
	long long total;
	const char *md5;
	json_t *resp;

	memset(&o, 0, sizeof(o));
	o.host = "127.0.0.1";
	o.user = "fuzz";
	o.password_md5 = pw;
	if (client_new(&o, &c) != 0)
		return 0;
	if (buf_append(&c->rx, data, size) != 0)
		goto out;
	while (client_rx_parse(c, &resp, &bin, &binlen, &pktlen) == 0) {
		if (pktlen > buf_avail(&c->rx) || binlen > pktlen)
			__builtin_trap();
		(void)client_resp_status(resp);
		(void)codec_get_str(resp, "md5", &md5, NULL);
		if (codec_get_int(resp, "total_block", &total) == 0 && total >= 0 &&
		    total <= (1 << 20) && blockset_init(&bs, (uint32_t)total) == 0) {
			if (blockset_add_ranges(&bs, json_object_get(resp, "received")) == 0 &&
			    bs.count > bs.total)
				__builtin_trap();
			(void)blockset_next_missing(&bs, 0);
			blockset_release(&bs);
		}
		json_decref(resp);
		client_rx_consume(c, pktlen);
	}
out:
	client_free(c);
	return 0;
}
