/* test_retention.c — keep policies mean what restic's forget --keep-* means: newest first,
 * one snapshot per calendar bucket, any rule keeps, unknown times are kept; and the
 * `keep =` config syntax is parsed strictly. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "err.h"
#include "retention.h"

/* Seconds of a UTC time (the tests run with TZ=UTC). */
static int64_t
at(int y, int mon, int d, int h, int min)
{
	struct tm tm = { 0 };

	tm.tm_year = y - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = min;
	return (int64_t)timegm(&tm);
}

/* The seqs kept, ascending, as "1 2 3". */
static void
kept(struct retention_snap *s, size_t n, char *out, size_t outlen)
{
	size_t len = 0;

	out[0] = '\0';
	for (uint64_t seq = 1; seq <= 64; seq++)
		for (size_t i = 0; i < n; i++)
			if (s[i].seq == seq && s[i].reasons != 0)
				len += (size_t)snprintf(out + len, outlen - len, "%s%llu",
				    len ? " " : "", (unsigned long long)seq);
}

/* Eight snapshots over two months; given in scrambled order. */
static void
timeline(struct retention_snap *s)
{
	static const int t[8][5] = { { 2026, 1, 5, 10, 0 }, { 2026, 1, 20, 10, 0 },
		{ 2026, 2, 3, 9, 0 }, { 2026, 2, 3, 15, 0 }, { 2026, 2, 4, 8, 0 },
		{ 2026, 2, 4, 8, 30 }, { 2026, 2, 4, 9, 10 }, { 2026, 2, 4, 9, 20 } };
	static const int order[8] = { 3, 7, 0, 5, 1, 6, 2, 4 };

	for (int i = 0; i < 8; i++) {
		int k = order[i];

		s[i].seq = (uint64_t)k + 1;
		s[i].time = at(t[k][0], t[k][1], t[k][2], t[k][3], t[k][4]);
	}
}

static void
test_rules(void **state)
{
	struct retention_snap s[8];
	struct keep_policy p;
	char out[128];

	(void)state;
	setenv("TZ", "UTC", 1);
	tzset();
	timeline(s);
	memset(&p, 0, sizeof(p));
	p.n[KEEP_LAST] = 3;
	retention_apply(&p, s, 8);
	kept(s, 8, out, sizeof(out));
	assert_string_equal(out, "6 7 8");

	memset(&p, 0, sizeof(p));
	p.n[KEEP_HOURLY] = 3; /* hours 09 and 08 of Feb 4, 15 of Feb 3 */
	timeline(s);
	retention_apply(&p, s, 8);
	kept(s, 8, out, sizeof(out));
	assert_string_equal(out, "4 6 8");

	memset(&p, 0, sizeof(p));
	p.n[KEEP_DAILY] = 10; /* more days asked for than there are: one per day */
	retention_apply(&p, s, 8);
	kept(s, 8, out, sizeof(out));
	assert_string_equal(out, "1 2 4 8");

	memset(&p, 0, sizeof(p));
	p.n[KEEP_WEEKLY] = 2; /* ISO weeks 2026-W06 (Feb 2..8) and W04 (Jan 19..25) */
	retention_apply(&p, s, 8);
	kept(s, 8, out, sizeof(out));
	assert_string_equal(out, "2 8");

	memset(&p, 0, sizeof(p));
	p.n[KEEP_MONTHLY] = 1;
	p.n[KEEP_YEARLY] = 1;
	retention_apply(&p, s, 8);
	kept(s, 8, out, sizeof(out));
	assert_string_equal(out, "8");

	/* Rules add up: last 2, hourly 3, daily 2, monthly 2. */
	memset(&p, 0, sizeof(p));
	p.n[KEEP_LAST] = 2;
	p.n[KEEP_HOURLY] = 3;
	p.n[KEEP_DAILY] = 2;
	p.n[KEEP_MONTHLY] = 2;
	retention_apply(&p, s, 8);
	kept(s, 8, out, sizeof(out));
	assert_string_equal(out, "2 4 6 7 8");
	for (int i = 0; i < 8; i++)
		if (s[i].seq == 8)
			assert_int_equal(s[i].reasons,
			    (1u << KEEP_LAST) | (1u << KEEP_HOURLY) | (1u << KEEP_DAILY) |
			        (1u << KEEP_MONTHLY));
}

static void
test_unknown_time(void **state)
{
	struct retention_snap s[3] = { { 1, 0, 0 }, { 2, 1000000, 0 }, { 3, 2000000, 0 } };
	struct keep_policy p;
	char out[64];

	(void)state;
	memset(&p, 0, sizeof(p));
	p.n[KEEP_LAST] = 1;
	retention_apply(&p, s, 3);
	kept(s, 3, out, sizeof(out));
	assert_string_equal(out, "1 3");
	for (int i = 0; i < 3; i++)
		if (s[i].seq == 1)
			assert_int_equal(s[i].reasons, KEEP_UNKNOWN_TIME);
}

static void
test_parse(void **state)
{
	struct keep_policy p;
	char err[256], txt[128];

	(void)state;
	assert_int_equal(retention_parse("last=3, daily=7 weekly=4", &p, err, sizeof(err)), 0);
	assert_int_equal(p.n[KEEP_LAST], 3);
	assert_int_equal(p.n[KEEP_DAILY], 7);
	assert_int_equal(p.n[KEEP_WEEKLY], 4);
	assert_int_equal(p.n[KEEP_HOURLY], 0);
	retention_format(&p, txt, sizeof(txt));
	assert_string_equal(txt, "last=3 daily=7 weekly=4");

	assert_int_equal(retention_parse("daly=3", &p, err, sizeof(err)), STEP_EINVAL);
	assert_non_null(strstr(err, "unknown rule 'daly'"));
	assert_int_equal(retention_parse("daily=0", &p, err, sizeof(err)), STEP_EINVAL);
	assert_int_equal(retention_parse("daily=3 daily=4", &p, err, sizeof(err)), STEP_EINVAL);
	assert_non_null(strstr(err, "twice"));
	assert_int_equal(retention_parse("daily", &p, err, sizeof(err)), STEP_EINVAL);
	assert_int_equal(retention_parse(" , ", &p, err, sizeof(err)), STEP_EINVAL);
	assert_int_equal(retention_parse("hourly=9999999", &p, err, sizeof(err)), STEP_EINVAL);
	memset(&p, 0, sizeof(p));
	retention_format(&p, txt, sizeof(txt));
	assert_string_equal(txt, "none");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rules),
		cmocka_unit_test(test_unknown_time),
		cmocka_unit_test(test_parse),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("retention", tests, NULL, NULL);
}
