/*
 * retention.h — which snapshots a keep policy keeps (restic's `forget --keep-*` meaning).
 *
 * Snapshots are looked at newest first. --keep-last N keeps the newest N. Each of
 * --keep-hourly/daily/weekly/monthly/yearly N keeps the newest snapshot of each of the
 * N newest hours (days, ISO weeks, months, years, in local time) that have one. A
 * snapshot kept by any rule is kept; the newest is kept by any non-empty policy. A
 * snapshot whose time is unknown (0) is always kept. Pure functions: no I/O.
 */
#ifndef STEP_RETENTION_H
#define STEP_RETENTION_H

#include <stddef.h>
#include <stdint.h>

enum { KEEP_LAST, KEEP_HOURLY, KEEP_DAILY, KEEP_WEEKLY, KEEP_MONTHLY, KEEP_YEARLY, KEEP_NRULES };

struct keep_policy {
	unsigned n[KEEP_NRULES]; /* 0: the rule is off */
};

struct retention_snap {
	uint64_t seq;
	int64_t time;     /* wall-clock seconds; 0 when unknown */
	unsigned reasons; /* out: bit r set when rule r keeps it; KEEP_UNKNOWN_TIME */
};
#define KEEP_UNKNOWN_TIME (1u << KEEP_NRULES)

/* The rule's name as in the options: "last", "hourly", ... */
const char *retention_rule_name(int rule);

/* 1 when no rule is on. */
int retention_empty(const struct keep_policy *p);

/*
 * Parses a config value "last=3 daily=7 weekly=4" (spaces or commas between, each rule
 * at most once, counts 1..1000000). 0, or STEP_EINVAL with a sentence in err.
 */
int retention_parse(const char *spec, struct keep_policy *p, char *err, size_t errlen);

/* Writes the policy as retention_parse() reads it ("none" when empty). */
void retention_format(const struct keep_policy *p, char *out, size_t outlen);

/* Sets reasons of every snapshot; s may be in any order (it is sorted newest first). */
void retention_apply(const struct keep_policy *p, struct retention_snap *s, size_t n);

#endif
