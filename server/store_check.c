/*
 * store_check.c — the check thread (shared metadata only). A SAVE of a key this instance
 * has no upload of must find out whether the key has an object, and with PostgreSQL that
 * is a round trip; made in the request path it held up a worker (and mu) per SAVE, and
 * the UPLOAD pipelined behind the SAVE waited for it.
 *
 * Instead a SAVE that starts a new inline (one-block) upload creates it at once, marked
 * unchecked, and is answered later (STORE_PENDING, its plan already made); a check item
 * takes its place among the upload's waiters. Then whichever comes first answers it:
 *   - the upload's commit (its UPLOAD arrived meanwhile): the commit inserts the object
 *     only if the key has none, in its own statement, so its outcome is the SAVE's
 *     answer too: committed, the SAVE stands (200); STEP_EEXIST, the SAVE is refused
 *     (402) and so is the UPLOAD. Both take effect at the commit. Any other failure of
 *     the commit is the UPLOAD's: the SAVE stands;
 *   - else this thread: it looks up the keys of every item queued meanwhile in one query
 *     per user (exists_many), and under mu answers each SAVE whose upload is not being
 *     committed: no object, the SAVE stands and the upload is checked; an object (or an
 *     error), the SAVE is refused and the upload, still unchecked, leaves the map.
 * The same lookup records the plans of the SAVEs it lets stand (plan_many), so that an
 * UPLOAD of such a key may reach another instance (a client that opens a connection per
 * request, behind a balancer): that instance finds the plan and commits the upload. Such
 * an upload is then planned: whichever instance commits it consumes the record in the
 * commit's statement, and a commit that finds it gone (consumed elsewhere, replaced by a
 * later SAVE, dropped, expired) inserts nothing. A SAVE answered by the commit records
 * nothing: its UPLOAD came on the same connection.
 * Under mu, an item is in its upload's waiters until one of the two takes it out: the
 * commit thread takes every waiter of an upload it commits, this thread only those of an
 * upload that is not committing; so each SAVE is answered exactly once. A pipelined
 * SAVE + UPLOAD costs no round trip of its own; a SAVE answered here, one per batch.
 * Nothing changes for commits: the commit statement decides, as it did before.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "store_priv.h"

#define CHECK_MAX 256 /* keys per query at most */

struct check_item {
	struct store_waiter cw; /* in u->waiters until the commit or this thread takes it */
	struct store_upload *u; /* referenced */
	struct store_waiter *w; /* the SAVE's */
	atomic_int refs;        /* the queue's, and cw's while the commit may call it */
	int ans;                /* this thread's answer, or 1: none (the commit answers) */
	struct check_item *next;
};

#define KICK_LATE_MS 50 /* staged items nobody handed over are taken after this */

struct save_check {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct check_item *head, *tail;    /* handed to the thread */
	struct check_item *staged, *slast; /* not yet: their round of requests goes on */
	atomic_int nstaged;
	int stop;
	pthread_t thread;
};

static void
item_put(struct check_item *it)
{
	if (atomic_fetch_sub(&it->refs, 1) == 1)
		free(it);
}

/* cw's done(), from the commit thread: the commit's outcome is the SAVE's answer. */
static void
commit_done(struct store_waiter *w, int err, const char *md5hex)
{
	struct check_item *it = (struct check_item *)w;

	it->w->done(it->w, err == STEP_EEXIST ? STEP_EEXIST : STEP_OK, NULL);
	item_put(it);
}

struct check_item *
check_item_new(void)
{
	struct check_item *it;

	if (step_fault_alloc() || (it = calloc(1, sizeof(*it))) == NULL)
		return NULL;
	it->cw.done = commit_done;
	atomic_init(&it->refs, 2);
	return it;
}

void
check_item_free(struct check_item *it)
{
	free(it);
}

int
check_attach(struct store *s, struct check_item *it, struct store_upload *u, struct store_waiter *w)
{
	struct save_check *c = s->chk;

	u->unchecked = 1;
	u->refs++;
	it->u = u;
	it->w = w;
	it->cw.next = u->waiters;
	u->waiters = &it->cw;
	/* Staged until check_kick: an UPLOAD behind the SAVE in the same round of requests
	 * makes the commit answer it, with no lookup at all. */
	pthread_mutex_lock(&c->mu);
	if (c->staged != NULL)
		c->slast->next = it;
	else
		c->staged = it;
	c->slast = it;
	atomic_fetch_add(&c->nstaged, 1);
	pthread_mutex_unlock(&c->mu);
	return STORE_PENDING;
}

/* Hands the staged items to the thread. Under c->mu. */
static void
unstage(struct save_check *c)
{
	if (c->staged == NULL)
		return;
	if (c->tail != NULL)
		c->tail->next = c->staged;
	else
		c->head = c->staged;
	c->tail = c->slast;
	c->staged = NULL;
	atomic_store(&c->nstaged, 0);
	pthread_cond_signal(&c->cv);
}

void
check_kick(struct store *s)
{
	struct save_check *c = s->chk;

	if (c == NULL || atomic_load(&c->nstaged) == 0)
		return;
	pthread_mutex_lock(&c->mu);
	unstage(c);
	pthread_mutex_unlock(&c->mu);
}

/* Where it is in its upload's waiters, or NULL when the commit has it. Under mu. */
static struct store_waiter **
item_find(struct check_item *it)
{
	struct store_waiter **pp;

	if (it->u->state == UP_COMMITTING)
		return NULL;
	for (pp = &it->u->waiters; *pp != NULL; pp = &(*pp)->next)
		if (*pp == &it->cw)
			return pp;
	return NULL;
}

/* Takes it out of its upload's waiters: 1, or 0 when the commit has it. Under mu. */
static int
item_take(struct check_item *it)
{
	struct store_waiter **pp = item_find(it);

	if (pp == NULL)
		return 0;
	*pp = it->cw.next;
	return 1;
}

/*
 * What a lookup that found found (1 an object, 0 none, or an error) makes of u's SAVEs:
 * none, u is checked (they stand); else they are refused and u, if no SAVE has confirmed
 * it, goes (no files, no row: inline). Their answer. Under mu.
 */
static int
settle(struct store *s, struct store_upload *u, int found)
{
	if (found == 0) {
		u->unchecked = 0;
		return STEP_OK;
	}
	if (u->unchecked && u->state == UP_OPEN && map_find(s, u->id) == u) {
		map_remove(s, u);
		u->state = UP_DEAD;
		u->refs--; /* the map's; the items hold their own */
	}
	return found > 0 ? STEP_EEXIST : found;
}

/* Answers it with found unless the commit has it; sets it->ans (1: not answered here).
 * Under mu. */
static void
item_settle(struct store *s, struct check_item *it, int found)
{
	it->ans = 1;
	if (!item_take(it))
		return;
	item_put(it); /* cw's reference: the commit cannot call it any more */
	it->ans = settle(s, it->u, found);
}

int
check_now(struct store *s, struct store_upload *u)
{
	struct store_waiter **pp = &u->waiters, *w;
	struct check_item *it;
	int found = object_exists(s, u->user, u->key, u->keylen, 0), ans = settle(s, u, found);

	while ((w = *pp) != NULL) {
		if (w->done != commit_done) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		it = (struct check_item *)w;
		it->w->done(it->w, ans, NULL);
		item_put(it); /* cw's; the check thread finds it gone and drops the queue's */
	}
	return found;
}

/* Answers the items of batch (ans set) and drops them. */
static void
items_finish(struct store *s, struct check_item *batch)
{
	struct check_item *it, *next;

	for (it = batch; it != NULL; it = next) {
		next = it->next;
		if (it->ans != 1)
			it->w->done(it->w, it->ans, NULL);
		upload_unref(s, it->u);
		item_put(it);
	}
}

/*
 * The plan of u was recorded (plan_many) while u stopped being open: its commit had begun
 * (its UPLOAD came meanwhile; a commit that does not consume the record, or one that did
 * before this lookup wrote it again), or u was dropped. The record is deleted after that
 * (a drop job naming its file, queued behind the commit), or it expires. Under mu.
 */
static void
plan_orphan(struct store *s, struct store_upload *u)
{
	struct store_job *j = job_new(JOB_DROP);

	if (j == NULL)
		return;
	u->refs++;
	j->u = u;
	upload_fname(u, "", j->file, sizeof(j->file));
	job_queue_push(s, j);
}

/*
 * Looks up the keys of the items of *batch that belong to the first one's user (at most
 * CHECK_MAX) in one query and settles them; they move to *done, the others stay.
 */
static void
check_user(struct store *s, struct check_item **batch, struct check_item **done)
{
	const char *keys[CHECK_MAX];
	size_t lens[CHECK_MAX];
	uint8_t got[CHECK_MAX];
	struct check_item *mine[CHECK_MAX], *rest = NULL, **tail = &rest, *it, *next;
	struct store_upload *ups[CHECK_MAX];
	const char *user = (*batch)->u->user;
	size_t n = 0, i;
	int r;

	for (it = *batch; it != NULL; it = next) {
		next = it->next;
		it->next = NULL;
		if (n < CHECK_MAX && strcmp(it->u->user, user) == 0) {
			keys[n] = it->u->key;
			lens[n] = it->u->keylen;
			ups[n] = it->u;
			mine[n++] = it;
		} else {
			*tail = it;
			tail = &it->next;
		}
	}
	*batch = rest;
	r = s->mops->plan_many != NULL ? s->mops->plan_many(s->meta, user, ups, n, got)
	                               : s->mops->exists_many(s->meta, user, keys, lens, n, got);
	pthread_mutex_lock(&s->mu);
	for (i = 0; i < n; i++) {
		item_settle(s, mine[i], r != 0 ? r : got[i]);
		/* Its plan is recorded for every instance: its commit consumes the record. One
		 * committing already may have consumed it before this statement wrote it again:
		 * deleted after that commit as well. */
		if (r == 0 && !got[i] && s->mops->plan_many != NULL) {
			if (ups[i]->state == UP_OPEN)
				ups[i]->planned = 1;
			else
				plan_orphan(s, ups[i]);
		}
		mine[i]->next = *done;
		*done = mine[i];
	}
	pthread_mutex_unlock(&s->mu);
}

/* Settles a batch: those whose upload is being committed without a query, then the rest. */
static void
check_batch(struct store *s, struct check_item *batch)
{
	struct check_item *ask = NULL, *done = NULL, *it, *next;

	pthread_mutex_lock(&s->mu);
	for (it = batch; it != NULL; it = next) {
		next = it->next;
		it->ans = 1;
		if (item_find(it) == NULL) {
			it->next = done; /* the commit answers it */
			done = it;
		} else {
			it->next = ask;
			ask = it;
		}
	}
	pthread_mutex_unlock(&s->mu);
	while (ask != NULL)
		check_user(s, &ask, &done);
	items_finish(s, done);
}

static void *
check_main(void *arg)
{
	struct store *s = arg;
	struct save_check *c = s->chk;
	struct check_item *batch;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (c->head == NULL && !c->stop) {
			/* A safety net: items nobody hands over are taken after a while. */
			if (c->staged != NULL) {
				struct timespec ts;

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += KICK_LATE_MS * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
					unstage(c);
			} else {
				pthread_cond_wait(&c->cv, &c->mu);
			}
		}
		if (c->head == NULL)
			break;
		batch = c->head;
		c->head = c->tail = NULL;
		pthread_mutex_unlock(&c->mu);
		check_batch(s, batch);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

int
check_start(struct store *s)
{
	struct save_check *c;

	if (!s->mops->shared || s->mops->exists_many == NULL)
		return STEP_OK;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return STEP_ENOMEM;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	s->chk = c;
	if (pthread_create(&c->thread, NULL, check_main, s) != 0) {
		s->chk = NULL;
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cv);
		free(c);
		return STEP_ESYS;
	}
	pthread_setname_np(c->thread, "stepd-check");
	return STEP_OK;
}

void
check_stop(struct store *s)
{
	struct save_check *c = s->chk;

	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	unstage(c);
	c->stop = 1;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thread, NULL);
	s->chk = NULL;
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}
