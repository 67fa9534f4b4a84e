/*
 * store_check.c — the check thread (shared metadata only): a SAVE of a key this instance
 * has no upload of must look up whether the key has an object, and with PostgreSQL that
 * is a round trip. Instead of making it in the request path (a worker blocked, and under
 * mu), a SAVE that starts a new inline upload is queued here and answered later
 * (STORE_PENDING); the thread looks up every queued key in one query per user
 * (exists_many), then finishes each SAVE under mu as the request path would have
 * (save_locked with the answer) and calls its waiter. While one query is out, the SAVEs
 * of other connections queue up: one round trip per batch, not one per SAVE.
 *
 * The answer is what a SAVE made at the moment of the query would have found; an object
 * committed after it (here or on another instance) still makes the upload's commit fail
 * with STEP_EEXIST, as it always could with several instances. Nothing else changes:
 * uploads in progress are still found in the map under mu when the SAVE is finished.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "store_priv.h"

#define CHECK_MAX 256 /* keys per query at most */

struct check_item {
	struct save_args a; /* strings owned (in buf) */
	struct store_plan *plan;
	struct store_waiter *w;
	struct check_item *next;
	char buf[];
};

struct save_check {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct check_item *head, *tail;
	int stop;
	pthread_t thread;
};

/* Copies s (NULL stays NULL) to *p, moving p on. */
static const char *
put_str(char **p, const char *s, size_t len)
{
	char *d = *p;

	if (s == NULL)
		return NULL;
	memcpy(d, s, len);
	d[len] = '\0';
	*p += len + 1;
	return d;
}

int
check_queue(
    struct store *s, const struct save_args *a, struct store_plan *plan, struct store_waiter *w)
{
	struct save_check *c = s->chk;
	size_t ul = strlen(a->user), il = a->upload_id != NULL ? strlen(a->upload_id) : 0,
	       ml = a->md5 != NULL ? strlen(a->md5) : 0;
	struct check_item *it;
	char *p;

	if (step_fault_alloc() ||
	    (it = malloc(sizeof(*it) + ul + 1 + a->keylen + 1 + il + 1 + ml + 1)) == NULL)
		return STEP_ENOMEM;
	it->a = *a;
	p = it->buf;
	it->a.user = put_str(&p, a->user, ul);
	it->a.key = put_str(&p, a->key, a->keylen);
	it->a.upload_id = put_str(&p, a->upload_id, il);
	it->a.md5 = put_str(&p, a->md5, ml);
	it->plan = plan;
	it->w = w;
	it->next = NULL;
	pthread_mutex_lock(&c->mu);
	if (c->tail != NULL)
		c->tail->next = it;
	else
		c->head = it;
	c->tail = it;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	return STORE_PENDING;
}

/* Finishes the SAVE of it given what the lookup found (1 exists, 0 not, or an error). */
static void
check_finish(struct store *s, struct check_item *it, int found)
{
	int r = found < 0 ? found
	    : found > 0   ? STEP_EEXIST
	                  : save_locked(s, &it->a, 1, it->plan, NULL);

	it->w->done(it->w, r, NULL);
	free(it);
}

/*
 * Looks up the keys of the items of batch that belong to the first item's user (at most
 * CHECK_MAX of them) in one query and finishes those SAVEs: the items left.
 */
static struct check_item *
check_user(struct store *s, struct check_item *batch)
{
	const char *keys[CHECK_MAX];
	size_t lens[CHECK_MAX];
	uint8_t got[CHECK_MAX];
	struct check_item *mine[CHECK_MAX], *rest = NULL, **tail = &rest, *it, *next;
	const char *user = batch->a.user;
	size_t n = 0, i;
	int r;

	for (it = batch; it != NULL; it = next) {
		next = it->next;
		it->next = NULL;
		if (n < CHECK_MAX && strcmp(it->a.user, user) == 0) {
			keys[n] = it->a.key;
			lens[n] = it->a.keylen;
			mine[n++] = it;
		} else {
			*tail = it;
			tail = &it->next;
		}
	}
	r = s->mops->exists_many(s->meta, user, keys, lens, n, got);
	for (i = 0; i < n; i++)
		check_finish(s, mine[i], r != 0 ? r : got[i]);
	return rest;
}

static void *
check_main(void *arg)
{
	struct store *s = arg;
	struct save_check *c = s->chk;
	struct check_item *batch;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (c->head == NULL && !c->stop)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->head == NULL)
			break;
		batch = c->head;
		c->head = c->tail = NULL;
		pthread_mutex_unlock(&c->mu);
		while (batch != NULL)
			batch = check_user(s, batch);
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
	c->stop = 1;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thread, NULL);
	s->chk = NULL;
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}
