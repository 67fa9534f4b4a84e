/*
 * codec.h — STEP framing and JSON: pure functions over buffers, no I/O, no globals.
 *
 * A packet is: json_len (u32 BE) | bin_len (u32 BE) | JSON text | binary.
 * Reference peers count json_len in characters, not bytes (STEP-PROTOCOL.md §1);
 * codec_json_extent() finds the true byte length of such a text.
 */
#ifndef STEP_CODEC_H
#define STEP_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "buf.h"

#define STEP_HDR_LEN  8
#define STEP_MAX_JSON (1u << 20)  /* 1 MiB of JSON text: far beyond any sane request */
#define STEP_MAX_BIN  (64u << 20) /* hard cap on a binary part; callers pass a tighter one */

struct step_hdr {
	uint32_t json_len; /* as sent: bytes, or characters for reference peers */
	uint32_t bin_len;  /* bytes */
};

/* Writes the 8-byte header. */
void codec_put_header(uint8_t out[STEP_HDR_LEN], uint32_t json_len, uint32_t bin_len);

/*
 * Reads the 8-byte header at in. Returns 0, or STEP_ETOOBIG when json_len > max_json
 * or bin_len > max_bin, or STEP_EPROTO when json_len is 0. *h is written in every case
 * so a caller can report the offending size.
 */
int codec_get_header(
    const uint8_t in[STEP_HDR_LEN], uint32_t max_json, uint32_t max_bin, struct step_hdr *h);

/*
 * Finds how many bytes the JSON text occupies. p points at the first JSON byte and avail
 * bytes are present. json_len is from the header. Returns:
 *   0            *nbytes = byte length of the JSON text;
 *   STEP_EAGAIN  more input needed: *nbytes = the least total byte count to wait for;
 *   STEP_ETOOBIG the text would exceed max_bytes.
 * Rule: json_len bytes that are pure ASCII, or that parse as a JSON object, are the text
 * (a byte-counting sender). Otherwise the sender counted characters: the text ends after
 * json_len UTF-8 code points.
 */
int codec_json_extent(
    const uint8_t *p, size_t avail, uint32_t json_len, size_t max_bytes, size_t *nbytes);

/*
 * Parses n bytes of JSON text into a new object reference (*out, caller json_decref()s).
 * Returns STEP_EPROTO when the text is not one JSON object (errbuf gets the reason).
 * Strings may hold NUL (JSON_ALLOW_NUL): field validators decide.
 */
int codec_decode_json(const uint8_t *p, size_t n, json_t **out, char *errbuf, size_t errlen);

/*
 * Appends header + ASCII-only compact JSON of obj to out; the caller appends bin_len
 * bytes of binary afterwards (or writes them separately). Returns 0, STEP_ENOMEM,
 * STEP_ETOOBIG (out's limit or STEP_MAX_JSON).
 */
int codec_encode(const json_t *obj, uint32_t bin_len, struct buf *out);

/* Field helpers. Return 0 and write *out, STEP_ENOENT if absent, STEP_EINVAL if the type is wrong.
 */
int codec_get_str(const json_t *obj, const char *field, const char **out, size_t *len);
int codec_get_int(const json_t *obj, const char *field, long long *out);

#endif
