/*
 * sender.c — worker threads uploading in-memory objects; see sender.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "client_impl.h"
#include "err.h"
#include "log.h"
#include "sender.h"
#include "util.h"

/* Workers while only small objects (trees) have been queued: more connections than this
 * slowed a watcher's 10,000-file burst by a quarter (stepd's 2 cores answer the small
 * ones; only large objects gain from commits grouped across many connections). */
#define SENDER_NARROW   4
#define SENDER_WIDE_LEN (128u << 10) /* an object this large widens to all nconn workers */

struct sjob {
	struct sjob *next;
	char *key;
	uint8_t *data;
	size_t len;
	char given_md5[HASH_MD5_HEX]; /* "" when not given */
	int tag;
	/* results */
	int rc, existed;
	uint64_t blocks_sent;
	char md5[HASH_MD5_HEX];
	char error[256];
};

struct sender {
	struct client_opts o;
	pthread_mutex_t mu;
	pthread_cond_t work, space, idle;
	struct sjob *qhead, *qtail; /* queued */
	struct sjob *dhead, *dtail; /* finished, not collected */
	size_t bytes, budget;       /* queued or in flight */
	unsigned busy;              /* jobs being sent */
	unsigned waiting, queued_n; /* idle workers; jobs queued, not yet taken */
	int stop, fatal;
	uint64_t queued, done;
	pthread_t *threads;
	int nthreads, maxthreads; /* started on demand, up to maxthreads (a connection each) */
	int capthreads;           /* maxthreads once a large object is queued */
};

static void
job_free(struct sjob *j)
{
	if (j == NULL)
		return;
	free(j->key);
	free(j->data);
	free(j);
}

/* Errors after which the session is gone for every object (the run stops). */
static int
fatal_error(int r)
{
	return r == STEP_ECONNECT || r == STEP_ETIMEDOUT || r == STEP_ECLOSED || r == STEP_EAUTH ||
	    r == STEP_ETLS || r == STEP_EPROTO;
}

static void
send_one(struct client *c, struct sjob *j)
{
	struct client_result res;
	int r, attempt;

	memset(&res, 0, sizeof(res));
	/* A server fault (5xx: a failed commit, a full disk that may clear) is tried again a
	 * few times, as the PUTMANY path does. */
	for (attempt = 0;; attempt++) {
		r = client_put_mem_md5(c, j->data, j->len, j->given_md5[0] ? j->given_md5 : NULL,
		    j->key, CLIENT_PUT_EXIST_OK, &res);
		if (r != STEP_ESTATUS || client_status(c) < 500 || attempt >= 3 ||
		    util_stop_pending())
			break;
		log_info("'%s': %s; trying again", j->key, client_error(c));
		client_backoff(attempt + 1);
	}
	if (r == STEP_EEXIST) {
		/* Our content key holds other bytes (a damaged object): replace it. */
		log_warnx("object '%s' on the server has the wrong content; replacing it", j->key);
		r = client_put_mem(c, j->data, j->len, j->key, CLIENT_PUT_REPLACE, &res);
	}
	j->rc = r;
	if (r != 0) {
		snprintf(j->error, sizeof(j->error), "%s", client_error(c));
		return;
	}
	memcpy(j->md5, res.md5, sizeof(j->md5));
	j->existed = res.existed;
	j->blocks_sent = res.blocks_sent;
}

static void *
worker(void *arg)
{
	struct sender *s = arg;
	struct client *c = NULL;
	struct sjob *j;
	int r;

	if ((r = client_new(&s->o, &c)) != 0)
		c = NULL;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->stop && s->qhead == NULL) {
			s->waiting++;
			pthread_cond_wait(&s->work, &s->mu);
			s->waiting--;
		}
		if (s->stop)
			break;
		j = s->qhead;
		s->queued_n--;
		s->qhead = j->next;
		if (s->qhead == NULL)
			s->qtail = NULL;
		j->next = NULL;
		s->busy++;
		if (s->fatal == 0 && util_stop_pending())
			s->fatal = STEP_ESTOPPED; /* SIGTERM/SIGINT: no new upload starts */
		if (s->fatal != 0 || c == NULL) {
			j->rc = s->fatal != 0 ? s->fatal : STEP_ENOMEM;
			snprintf(j->error, sizeof(j->error), "%s", step_strerror(j->rc));
		} else {
			pthread_mutex_unlock(&s->mu);
			send_one(c, j);
			pthread_mutex_lock(&s->mu);
			if (fatal_error(j->rc) && s->fatal == 0)
				s->fatal = j->rc;
		}
		free(j->data); /* the bytes are no longer needed, only the result */
		j->data = NULL;
		s->bytes -= j->len;
		s->busy--;
		s->done++;
		if (s->dtail != NULL)
			s->dtail->next = j;
		else
			s->dhead = j;
		s->dtail = j;
		pthread_cond_broadcast(&s->space);
		if (s->qhead == NULL && s->busy == 0)
			pthread_cond_broadcast(&s->idle);
	}
	pthread_mutex_unlock(&s->mu);
	client_free(c);
	return NULL;
}

int
sender_new(const struct client_opts *o, int nconn, size_t budget, struct sender **outp)
{
	struct sender *s;

	if (nconn < 1 || budget == 0)
		return STEP_EINVAL;
	s = xcalloc(1, sizeof(*s));
	s->o = *o;
	s->o.progress = NULL; /* progress is the caller's business, per file */
	s->budget = budget;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->space, NULL);
	pthread_cond_init(&s->idle, NULL);
	s->threads = xcalloc((size_t)nconn, sizeof(*s->threads));
	s->capthreads = nconn;
	s->maxthreads = nconn < SENDER_NARROW ? nconn : SENDER_NARROW;
	if (pthread_create(&s->threads[0], NULL, worker, s) == 0)
		s->nthreads = 1;
	if (s->nthreads == 0) {
		sender_free(s);
		return STEP_ENOMEM;
	}
	*outp = s;
	return 0;
}

int
sender_put(struct sender *s, const char *key, uint8_t *data, size_t len, const char *md5, int tag)
{
	struct sjob *j = xcalloc(1, sizeof(*j));
	int r = 0;

	j->tag = tag;
	if (md5 != NULL)
		snprintf(j->given_md5, sizeof(j->given_md5), "%s", md5);
	j->key = xstrdup(key);
	j->data = data;
	j->len = len;
	pthread_mutex_lock(&s->mu);
	/* One object larger than the budget still goes, alone. A stop request (SIGTERM,
	 * SIGINT) is looked for while waiting. */
	while (s->fatal == 0 && s->bytes > 0 && s->bytes + len > s->budget) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (pthread_cond_timedwait(&s->space, &s->mu, &ts) == ETIMEDOUT &&
		    util_stop_pending())
			s->fatal = STEP_ESTOPPED;
	}
	if (s->fatal != 0) {
		r = STEP_ESTOPPED;
	} else {
		s->bytes += len;
		s->queued++;
		if (s->qtail != NULL)
			s->qtail->next = j;
		else
			s->qhead = j;
		s->qtail = j;
		j = NULL;
		/* Another worker (and connection) only when every one is busy, and beyond
		 * SENDER_NARROW only once large objects (chunks) go: a run that sends a few
		 * trees opens a few connections, a large backup all of them. */
		if (len >= SENDER_WIDE_LEN)
			s->maxthreads = s->capthreads;
		if (++s->queued_n > s->waiting && s->nthreads < s->maxthreads &&
		    pthread_create(&s->threads[s->nthreads], NULL, worker, s) == 0)
			s->nthreads++;
		pthread_cond_signal(&s->work);
	}
	pthread_mutex_unlock(&s->mu);
	job_free(j);
	return r;
}

int
sender_collect(struct sender *s, sender_done_fn *fn, void *arg)
{
	struct sender_done d;
	struct sjob *list, *j;
	int r = 0;

	pthread_mutex_lock(&s->mu);
	list = s->dhead;
	s->dhead = s->dtail = NULL;
	pthread_mutex_unlock(&s->mu);
	while ((j = list) != NULL) {
		list = j->next;
		if (r == 0) {
			d.key = j->key;
			d.size = j->len;
			d.rc = j->rc;
			d.error = j->error;
			d.md5 = j->md5;
			d.existed = j->existed;
			d.blocks_sent = j->blocks_sent;
			d.tag = j->tag;
			r = fn(arg, &d);
		}
		job_free(j);
	}
	return r;
}

void
sender_wait(struct sender *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->qhead != NULL || s->busy > 0)
		pthread_cond_wait(&s->idle, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

void
sender_counts(struct sender *s, uint64_t *queued, uint64_t *done)
{
	pthread_mutex_lock(&s->mu);
	*queued = s->queued;
	*done = s->done;
	pthread_mutex_unlock(&s->mu);
}

void
sender_free(struct sender *s)
{
	struct sjob *j;
	int i;

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = 1;
	pthread_cond_broadcast(&s->work);
	pthread_mutex_unlock(&s->mu);
	for (i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL);
	while ((j = s->qhead) != NULL) {
		s->qhead = j->next;
		job_free(j);
	}
	while ((j = s->dhead) != NULL) {
		s->dhead = j->next;
		job_free(j);
	}
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->work);
	pthread_cond_destroy(&s->space);
	pthread_cond_destroy(&s->idle);
	free(s->threads);
	free(s);
}
