/*
 * bwlimit.c — a token bucket shared by every connection of one run (--bwlimit), so the
 * whole transfer stays under the rate whatever the number of connections.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "client.h"
#include "err.h"
#include "util.h"

struct bwlimit {
	pthread_mutex_t mu;
	double rate;   /* bytes per second */
	double tokens; /* may go negative: debt paid by sleeping */
	double burst;  /* most tokens saved up */
	double last;   /* util_now_s() of the last refill */
};

int
bwlimit_new(uint64_t rate, struct bwlimit **outp)
{
	struct bwlimit *bw;

	if (rate == 0)
		return STEP_EINVAL;
	if ((bw = calloc(1, sizeof(*bw))) == NULL)
		return STEP_ENOMEM;
	pthread_mutex_init(&bw->mu, NULL);
	bw->rate = (double)rate;
	bw->burst = bw->rate / 10 > 65536 ? bw->rate / 10 : 65536;
	bw->tokens = 0;
	bw->last = util_now_s();
	*outp = bw;
	return STEP_OK;
}

void
bwlimit_free(struct bwlimit *bw)
{
	if (bw == NULL)
		return;
	pthread_mutex_destroy(&bw->mu);
	free(bw);
}

void
bwlimit_take(struct bwlimit *bw, size_t n)
{
	struct timespec ts;
	double now, wait = 0;

	if (bw == NULL)
		return;
	pthread_mutex_lock(&bw->mu);
	now = util_now_s();
	bw->tokens += (now - bw->last) * bw->rate;
	if (bw->tokens > bw->burst)
		bw->tokens = bw->burst;
	bw->last = now;
	bw->tokens -= (double)n;
	if (bw->tokens < 0)
		wait = -bw->tokens / bw->rate;
	pthread_mutex_unlock(&bw->mu);
	/* In slices, so that a stop request (SIGTERM) is not kept waiting: with many
	 * connections the last in line may wait many blocks' worth. Once stopping, what is
	 * in flight goes unthrottled and the run ends. */
	while (wait > 0 && !util_stop_pending()) {
		double slice = wait < 0.1 ? wait : 0.1;

		ts.tv_sec = 0;
		ts.tv_nsec = (long)(slice * 1e9);
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		wait -= slice;
	}
}
