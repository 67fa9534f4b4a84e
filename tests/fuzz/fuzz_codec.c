/* fuzz_codec.c — libFuzzer target: header, tolerant JSON extent, decode, re-encode. */
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct step_hdr hdr;
	json_t *obj = NULL;
	struct buf out;
	size_t n = 0;

	if (size < STEP_HDR_LEN)
		return 0;
	if (codec_get_header(data, 4096, STEP_MAX_BIN, &hdr) != 0)
		return 0;
	data += STEP_HDR_LEN;
	size -= STEP_HDR_LEN;
	if (codec_json_extent(data, size, hdr.json_len, 4 * 4096, &n) != 0)
		return 0;
	if (n > size)
		__builtin_trap();
	if (codec_decode_json(data, n, &obj, NULL, 0) != 0)
		return 0;
	buf_init(&out, 1 << 20);
	if (codec_encode(obj, 0, &out) == 0) {
		size_t i;

		for (i = STEP_HDR_LEN; i < buf_avail(&out); i++)
			if (buf_ptr(&out)[i] >= 0x80)
				__builtin_trap();
	}
	buf_release(&out);
	json_decref(obj);
	return 0;
}
