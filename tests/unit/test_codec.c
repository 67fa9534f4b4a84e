/* test_codec.c — framing, limits, tolerant JSON extent and ASCII-only output. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "codec.h"
#include "err.h"

static void
test_header_roundtrip(void **state)
{
	uint8_t h[STEP_HDR_LEN];
	struct step_hdr hdr;

	codec_put_header(h, 0x01020304, 0xA0B0C0D0);
	assert_int_equal(h[0], 1);
	assert_int_equal(h[3], 4);
	assert_int_equal(h[4], 0xA0);
	assert_int_equal(codec_get_header(h, 0xFFFFFFFF, 0xFFFFFFFF, &hdr), 0);
	assert_int_equal(hdr.json_len, 0x01020304);
	assert_int_equal(hdr.bin_len, 0xA0B0C0D0);
}

static void
test_header_limits(void **state)
{
	uint8_t h[STEP_HDR_LEN];
	struct step_hdr hdr;

	codec_put_header(h, 0xFFFFFFFF, 0);
	assert_int_equal(codec_get_header(h, STEP_MAX_JSON, STEP_MAX_BIN, &hdr), STEP_ETOOBIG);
	codec_put_header(h, 10, STEP_MAX_BIN + 1);
	assert_int_equal(codec_get_header(h, STEP_MAX_JSON, STEP_MAX_BIN, &hdr), STEP_ETOOBIG);
	codec_put_header(h, 0, 0);
	assert_int_equal(codec_get_header(h, STEP_MAX_JSON, STEP_MAX_BIN, &hdr), STEP_EPROTO);
}

static void
test_extent_ascii(void **state)
{
	const char *j = "{\"a\":1}";
	size_t n = 0;

	assert_int_equal(codec_json_extent((const uint8_t *)j, 3, 7, 100, &n), STEP_EAGAIN);
	assert_int_equal(n, 7);
	assert_int_equal(codec_json_extent((const uint8_t *)j, 7, 7, 100, &n), 0);
	assert_int_equal(n, 7);
	assert_int_equal(codec_json_extent((const uint8_t *)j, 7, 7, 5, &n), STEP_ETOOBIG);
}

/* A byte-counting sender with non-ASCII text: json_len is the byte length. */
static void
test_extent_utf8_bytes(void **state)
{
	const char *j = "{\"key\":\"r\xc3\xa9sum\xc3\xa9.pdf\"}";
	size_t n = 0;

	assert_int_equal(codec_json_extent((const uint8_t *)j, strlen(j), strlen(j), 100, &n), 0);
	assert_int_equal(n, strlen(j));
}

/* A reference peer counts characters: two é make the text two bytes longer than json_len. */
static void
test_extent_utf8_chars(void **state)
{
	const char *j = "{\"key\":\"r\xc3\xa9sum\xc3\xa9.pdf\"}";
	uint32_t chars = (uint32_t)strlen(j) - 2;
	size_t n = 0;

	assert_int_equal(codec_json_extent((const uint8_t *)j, chars, chars, 100, &n), STEP_EAGAIN);
	assert_true(n > chars && n <= strlen(j));
	assert_int_equal(codec_json_extent((const uint8_t *)j, strlen(j), chars, 100, &n), 0);
	assert_int_equal(n, strlen(j));
}

/* Binary bytes after a character-counted JSON part must not be swallowed. */
static void
test_extent_chars_then_binary(void **state)
{
	const char *j = "{\"k\":\"\xe2\x82\xac\"}\xff\xfe";
	uint32_t chars = 10; /* {"k":"€"} is 10 characters, 12 bytes */
	size_t n = 0;

	assert_int_equal(codec_json_extent((const uint8_t *)j, 14, chars, 100, &n), 0);
	assert_int_equal(n, 12);
}

static void
test_decode(void **state)
{
	json_t *o = NULL;
	char err[128];
	const char *s;
	long long v;

	assert_int_equal(
	    codec_decode_json((const uint8_t *)"[1]", 3, &o, err, sizeof(err)), STEP_EPROTO);
	assert_int_equal(
	    codec_decode_json((const uint8_t *)"{bad", 4, &o, err, sizeof(err)), STEP_EPROTO);
	assert_int_equal(codec_decode_json((const uint8_t *)"{\"a\":\"x\",\"n\":5,\"f\":1.5}", 23,
	                     &o, err, sizeof(err)),
	    0);
	assert_int_equal(codec_get_str(o, "a", &s, NULL), 0);
	assert_string_equal(s, "x");
	assert_int_equal(codec_get_int(o, "n", &v), 0);
	assert_int_equal(v, 5);
	assert_int_equal(codec_get_int(o, "f", &v), STEP_EINVAL);
	assert_int_equal(codec_get_int(o, "a", &v), STEP_EINVAL);
	assert_int_equal(codec_get_str(o, "n", &s, NULL), STEP_EINVAL);
	assert_int_equal(codec_get_str(o, "zz", &s, NULL), STEP_ENOENT);
	json_decref(o);
}

static void
test_encode_ascii(void **state)
{
	json_t *o = json_pack("{s:s, s:i}", "key", "r\xc3\xa9sum\xc3\xa9", "size", 3);
	struct step_hdr hdr;
	struct buf b;
	size_t i;

	buf_init(&b, 1 << 20);
	assert_int_equal(codec_encode(o, 3, &b), 0);
	assert_int_equal(codec_get_header(buf_ptr(&b), STEP_MAX_JSON, STEP_MAX_BIN, &hdr), 0);
	assert_int_equal(hdr.bin_len, 3);
	assert_int_equal(hdr.json_len, buf_avail(&b) - STEP_HDR_LEN);
	for (i = STEP_HDR_LEN; i < buf_avail(&b); i++)
		assert_true(buf_ptr(&b)[i] < 0x80);
	assert_non_null(memmem(buf_ptr(&b), buf_avail(&b), "\\u00E9", 6));
	buf_release(&b);
	json_decref(o);
}

static void
test_encode_limit(void **state)
{
	json_t *o = json_pack("{s:s}", "k", "0123456789012345678901234567890123456789");
	struct buf b;

	buf_init(&b, 20);
	assert_int_equal(codec_encode(o, 0, &b), STEP_ETOOBIG);
	assert_int_equal(buf_avail(&b), 0);
	buf_release(&b);
	json_decref(o);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_roundtrip),
		cmocka_unit_test(test_header_limits),
		cmocka_unit_test(test_extent_ascii),
		cmocka_unit_test(test_extent_utf8_bytes),
		cmocka_unit_test(test_extent_utf8_chars),
		cmocka_unit_test(test_extent_chars_then_binary),
		cmocka_unit_test(test_decode),
		cmocka_unit_test(test_encode_ascii),
		cmocka_unit_test(test_encode_limit),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
