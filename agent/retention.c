/*
 * retention.c — keep policies: parsing and the bucket walk (see retention.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "retention.h"
#include "util.h"

static const char *const rule_names[KEEP_NRULES] = { "last", "hourly", "daily", "weekly", "monthly",
	"yearly" };

const char *
retention_rule_name(int rule)
{
	return rule >= 0 && rule < KEEP_NRULES ? rule_names[rule] : "?";
}

int
retention_empty(const struct keep_policy *p)
{
	int i;

	for (i = 0; i < KEEP_NRULES; i++)
		if (p->n[i] > 0)
			return 0;
	return 1;
}

/* Parses one "rule=N" token of len bytes. */
static int
parse_token(const char *tok, size_t len, struct keep_policy *p, char *err, size_t errlen)
{
	char buf[64], *eq;
	long long v;
	int i;

	if (len >= sizeof(buf) ||
	    (memcpy(buf, tok, len), buf[len] = '\0', (eq = strchr(buf, '=')) == NULL)) {
		snprintf(
		    err, errlen, "keep: '%.*s' is not RULE=N", (int)(len > 40 ? 40 : len), tok);
		return STEP_EINVAL;
	}
	*eq = '\0';
	for (i = 0; i < KEEP_NRULES && strcmp(buf, rule_names[i]) != 0; i++)
		;
	if (i == KEEP_NRULES) {
		snprintf(err, errlen,
		    "keep: unknown rule '%s' (last, hourly, daily, weekly, monthly, yearly)", buf);
		return STEP_EINVAL;
	}
	if (p->n[i] != 0) {
		snprintf(err, errlen, "keep: '%s' given twice", buf);
		return STEP_EINVAL;
	}
	if (util_parse_ll(eq + 1, 1, 1000000, &v) != 0) {
		snprintf(err, errlen, "keep: '%s' needs a count from 1 to 1000000", buf);
		return STEP_EINVAL;
	}
	p->n[i] = (unsigned)v;
	return 0;
}

int
retention_parse(const char *spec, struct keep_policy *p, char *err, size_t errlen)
{
	const char *s = spec;
	size_t len;
	int r;

	memset(p, 0, sizeof(*p));
	for (;;) {
		s += strspn(s, " \t,");
		if (*s == '\0')
			break;
		len = strcspn(s, " \t,");
		if ((r = parse_token(s, len, p, err, errlen)) != 0)
			return r;
		s += len;
	}
	if (retention_empty(p)) {
		snprintf(err, errlen, "keep: no rule given (for example 'last=10 daily=7')");
		return STEP_EINVAL;
	}
	return 0;
}

void
retention_format(const struct keep_policy *p, char *out, size_t outlen)
{
	size_t len = 0;
	int i;

	out[0] = '\0';
	for (i = 0; i < KEEP_NRULES; i++)
		if (p->n[i] > 0 && len < outlen)
			len += (size_t)snprintf(out + len, outlen - len, "%s%s=%u", len ? " " : "",
			    rule_names[i], p->n[i]);
	if (len == 0)
		snprintf(out, outlen, "none");
}

/* The bucket of t for a calendar rule: a number that changes exactly when the hour (day,
 * ISO week, month, year) of t in local time does. */
static long long
bucket(int rule, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	char wk[16];

	if (localtime_r(&tt, &tm) == NULL)
		return t;
	switch (rule) {
	case KEEP_HOURLY:
		return (((long long)tm.tm_year * 400 + tm.tm_yday) * 24) + tm.tm_hour;
	case KEEP_DAILY:
		return (long long)tm.tm_year * 400 + tm.tm_yday;
	case KEEP_WEEKLY:
		strftime(wk, sizeof(wk), "%G%V", &tm); /* ISO 8601 year and week */
		return atoll(wk);
	case KEEP_MONTHLY:
		return (long long)tm.tm_year * 12 + tm.tm_mon;
	case KEEP_YEARLY:
		return tm.tm_year;
	}
	return t;
}

static int
newest_first(const void *a, const void *b)
{
	const struct retention_snap *x = a, *y = b;

	if (x->time != y->time)
		return x->time > y->time ? -1 : 1;
	return x->seq > y->seq ? -1 : x->seq < y->seq;
}

void
retention_apply(const struct keep_policy *p, struct retention_snap *s, size_t n)
{
	long long last[KEEP_NRULES];
	unsigned left[KEEP_NRULES];
	int have[KEEP_NRULES] = { 0 };
	size_t i;
	int r;

	if (n > 1)
		qsort(s, n, sizeof(*s), newest_first);
	for (r = 0; r < KEEP_NRULES; r++)
		left[r] = p->n[r];
	for (i = 0; i < n; i++) {
		s[i].reasons = 0;
		if (s[i].time <= 0) {
			s[i].reasons = KEEP_UNKNOWN_TIME;
			continue;
		}
		for (r = 0; r < KEEP_NRULES; r++) {
			long long b = r == KEEP_LAST ? (long long)i : bucket(r, s[i].time);

			if (left[r] == 0 || (have[r] && b == last[r]))
				continue;
			s[i].reasons |= 1u << r;
			last[r] = b;
			have[r] = 1;
			left[r]--;
		}
	}
}
