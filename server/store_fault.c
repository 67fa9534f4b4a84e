/*
 * store_fault.c — the store's test-only fault hook (STEP_FAULT, store.h) and the
 * STEP_PACK_MAX knob's parsing neighbour: counters that make the N-th write, sync or
 * allocation fail once (writes and syncs: M times in a row with times:M, or every one
 * for MS milliseconds from the first with for:MS).
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "store_priv.h"
#include "util.h"

long store_fault_alloc_at;
static long fault_nalloc;    /* allocations counted so far (atomic: every worker counts) */
static long fault_times = 1; /* times:M: a write, fsync or dirsync fault fires M times in a row */
static long fault_for_ms;    /* for:MS: ...or for MS milliseconds from its first firing */
static uint64_t fault_since; /* util_now_ms() of that first firing, 0 before it */

int
store_fault_alloc_hit(void)
{
	if (__atomic_add_fetch(&fault_nalloc, 1, __ATOMIC_RELAXED) != store_fault_alloc_at)
		return 0;
	log_warnx("test fault hook: allocation %ld fails", store_fault_alloc_at);
	return 1;
}

int
fault_hit(long *counter, long at, const char *what)
{
	uint64_t now, since;

	if (at <= 0 || ++*counter < at)
		return 0;
	if (fault_for_ms > 0) {
		now = util_now_ms();
		since = 0;
		if (!__atomic_compare_exchange_n(
		        &fault_since, &since, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED) &&
		    now - since >= (uint64_t)fault_for_ms)
			return 0;
	} else if (*counter - at >= fault_times) {
		return 0;
	}
	log_warnx("test fault hook: %s %ld fails", what, *counter);
	return 1;
}

/* ---- open / restart ---- */

void
fault_parse(struct store *s)
{
	const char *f = getenv("STEP_FAULT");
	char buf[128], *p, *save = NULL;

	s->fault_errno = ENOSPC;
	if (f == NULL || strlen(f) >= sizeof(buf))
		return;
	memcpy(buf, f, strlen(f) + 1);
	for (p = strtok_r(buf, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
		long long n;

		if (strncmp(p, "write:", 6) == 0 && util_parse_ll(p + 6, 1, 1LL << 40, &n) == 0)
			s->fault_write = (long)n;
		else if (strncmp(p, "fsync:", 6) == 0 &&
		    util_parse_ll(p + 6, 1, 1LL << 40, &n) == 0)
			s->fault_fsync = (long)n;
		else if (strncmp(p, "dirsync:", 8) == 0 &&
		    util_parse_ll(p + 8, 1, 1LL << 40, &n) == 0)
			s->fault_dirsync = (long)n;
		else if (strncmp(p, "alloc:", 6) == 0 &&
		    util_parse_ll(p + 6, 1, 1LL << 40, &n) == 0)
			store_fault_alloc_at = (long)n;
		else if (strncmp(p, "for:", 4) == 0 && util_parse_ll(p + 4, 1, 1LL << 40, &n) == 0)
			fault_for_ms = (long)n;
		else if (strncmp(p, "times:", 6) == 0 &&
		    util_parse_ll(p + 6, 1, 1LL << 40, &n) == 0)
			fault_times = (long)n;
		else if (strcmp(p, "eio") == 0)
			s->fault_errno = EIO;
		else if (strcmp(p, "enotconn") == 0)
			s->fault_errno =
			    ENOTCONN; /* 503: storage unreachable, as with PostgreSQL */
		else if (strcmp(p, "enospc") == 0)
			s->fault_errno = ENOSPC;
	}
	if (s->fault_write || s->fault_fsync || s->fault_dirsync || store_fault_alloc_at)
		log_warnx("test fault hook active: STEP_FAULT=%s", f);
}
