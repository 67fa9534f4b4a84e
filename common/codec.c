/*
 * codec.c — STEP framing + JSON via jansson. Pure functions over buffers: no sockets,
 * no globals, nothing allocated before a length has been checked against its limit.
 */
#include <string.h>

#include "codec.h"
#include "err.h"

void
codec_put_header(uint8_t out[STEP_HDR_LEN], uint32_t json_len, uint32_t bin_len)
{
	out[0] = (uint8_t)(json_len >> 24);
	out[1] = (uint8_t)(json_len >> 16);
	out[2] = (uint8_t)(json_len >> 8);
	out[3] = (uint8_t)json_len;
	out[4] = (uint8_t)(bin_len >> 24);
	out[5] = (uint8_t)(bin_len >> 16);
	out[6] = (uint8_t)(bin_len >> 8);
	out[7] = (uint8_t)bin_len;
}

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int
codec_get_header(
    const uint8_t in[STEP_HDR_LEN], uint32_t max_json, uint32_t max_bin, struct step_hdr *h)
{
	h->json_len = be32(in);
	h->bin_len = be32(in + 4);
	if (h->json_len == 0)
		return STEP_EPROTO;
	if (h->json_len > max_json || h->bin_len > max_bin)
		return STEP_ETOOBIG;
	return STEP_OK;
}

/* Length of the UTF-8 sequence introduced by lead byte c (1 for stray bytes). */
static size_t
utf8_seqlen(uint8_t c)
{
	if (c < 0xC0)
		return 1;
	if (c < 0xE0)
		return 2;
	if (c < 0xF0)
		return 3;
	if (c < 0xF8)
		return 4;
	return 1;
}

int
codec_json_extent(
    const uint8_t *p, size_t avail, uint32_t json_len, size_t max_bytes, size_t *nbytes)
{
	size_t i, count;
	int ascii = 1;

	if (json_len > max_bytes)
		return STEP_ETOOBIG;
	if (avail < json_len) {
		*nbytes = json_len;
		return STEP_EAGAIN;
	}
	for (i = 0; i < json_len; i++) {
		if (p[i] & 0x80) {
			ascii = 0;
			break;
		}
	}
	if (!ascii) {
		json_t *probe = json_loadb((const char *)p, json_len, JSON_ALLOW_NUL, NULL);

		if (probe != NULL) {
			ascii = json_is_object(probe);
			json_decref(probe);
		}
	}
	if (ascii) {
		*nbytes = json_len;
		return STEP_OK;
	}
	/* Character-counted sender: walk json_len code points. */
	for (i = 0, count = 0; count < json_len; count++) {
		size_t sl;

		if (i >= avail) {
			/* At least one byte per remaining code point. */
			size_t need = i + (json_len - count);

			if (need > max_bytes)
				return STEP_ETOOBIG;
			*nbytes = need;
			return STEP_EAGAIN;
		}
		sl = utf8_seqlen(p[i]);
		if (i + sl > max_bytes)
			return STEP_ETOOBIG;
		if (i + sl > avail) {
			*nbytes = i + sl + (json_len - count - 1);
			if (*nbytes > max_bytes)
				return STEP_ETOOBIG;
			return STEP_EAGAIN;
		}
		i += sl;
	}
	*nbytes = i;
	return STEP_OK;
}

int
codec_decode_json(const uint8_t *p, size_t n, json_t **out, char *errbuf, size_t errlen)
{
	json_error_t jerr;
	json_t *root;

	root = json_loadb((const char *)p, n, JSON_ALLOW_NUL, &jerr);
	if (root == NULL) {
		if (errbuf != NULL && errlen > 0)
			snprintf(errbuf, errlen, "invalid JSON: %s", jerr.text);
		return STEP_EPROTO;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		if (errbuf != NULL && errlen > 0)
			snprintf(errbuf, errlen, "JSON part is not an object");
		return STEP_EPROTO;
	}
	*out = root;
	return STEP_OK;
}

struct dump_ctx {
	struct buf *out;
	size_t written;
	int err;
};

static int
dump_cb(const char *p, size_t n, void *data)
{
	struct dump_ctx *c = data;
	int r;

	if (c->written + n > STEP_MAX_JSON) {
		c->err = STEP_ETOOBIG;
		return -1;
	}
	if ((r = buf_append(c->out, p, n)) != 0) {
		c->err = r;
		return -1;
	}
	c->written += n;
	return 0;
}

int
codec_encode(const json_t *obj, uint32_t bin_len, struct buf *out)
{
	struct dump_ctx c = { out, 0, 0 };
	uint8_t hdr[STEP_HDR_LEN] = { 0 };
	size_t start = out->len;
	size_t hdr_at;
	int r;

	if ((r = buf_append(out, hdr, sizeof(hdr))) != 0)
		return r;
	hdr_at = out->len - STEP_HDR_LEN;
	if (json_dump_callback(obj, dump_cb, &c, JSON_COMPACT | JSON_ENSURE_ASCII) != 0) {
		/* Roll back whatever was appended; out is unchanged on failure. */
		out->len = start < out->off ? out->off : start;
		return c.err ? c.err : STEP_ENOMEM;
	}
	codec_put_header(out->data + hdr_at, (uint32_t)c.written, bin_len);
	return STEP_OK;
}

int
codec_get_str(const json_t *obj, const char *field, const char **out, size_t *len)
{
	json_t *v = json_object_get(obj, field);

	if (v == NULL || json_is_null(v))
		return STEP_ENOENT;
	if (!json_is_string(v))
		return STEP_EINVAL;
	*out = json_string_value(v);
	if (len != NULL)
		*len = json_string_length(v);
	return STEP_OK;
}

int
codec_get_int(const json_t *obj, const char *field, long long *out)
{
	json_t *v = json_object_get(obj, field);

	if (v == NULL || json_is_null(v))
		return STEP_ENOENT;
	if (!json_is_integer(v))
		return STEP_EINVAL;
	*out = (long long)json_integer_value(v);
	return STEP_OK;
}
