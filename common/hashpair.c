/* hashpair.c — a batch hashed by the caller and one helper thread (see hashpair.h). */
#include <pthread.h>
#include <stdlib.h>

#include "hashpair.h"
#include "md5.h"
#include "err.h"

/* One share of a batch: what hash_both does. */
struct share {
	size_t n;
	const void *const *data;
	const size_t *len;
	uint8_t (*ids)[HASH_SHA256_LEN];
	uint8_t (*md5s)[HASH_MD5_LEN];
};

struct hashpair {
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct share job; /* the helper's share */
	int posted;       /* a share waits for the helper, or is being hashed */
	int stop;
};

static void
hash_both(const struct share *s)
{
	if (s->ids != NULL)
		hash_sha256_many(s->n, s->data, s->len, s->ids);
	if (s->md5s != NULL)
		md5_many(s->n, s->data, s->len, s->md5s);
}

static void *
helper(void *arg)
{
	struct hashpair *p = arg;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->posted && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stop)
			break;
		pthread_mutex_unlock(&p->mu);
		hash_both(&p->job);
		pthread_mutex_lock(&p->mu);
		p->posted = 0;
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int
hashpair_new(struct hashpair **out)
{
	struct hashpair *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (p == NULL)
		return STEP_ENOMEM;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (pthread_create(&p->tid, NULL, helper, p) != 0) {
		pthread_cond_destroy(&p->cv);
		pthread_mutex_destroy(&p->mu);
		free(p);
		return STEP_ESYS;
	}
	*out = p;
	return 0;
}

void
hashpair_free(struct hashpair *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->tid, NULL);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

void
hashpair_run(struct hashpair *p, size_t n, const void *const data[], const size_t len[],
    uint8_t (*ids)[HASH_SHA256_LEN], uint8_t (*md5s)[HASH_MD5_LEN])
{
	struct share mine = { n, data, len, ids, md5s };
	size_t half = n / 2;

	if (p == NULL || n < HASHPAIR_SPLIT) {
		hash_both(&mine);
		return;
	}
	mine.n = half;
	pthread_mutex_lock(&p->mu);
	p->job = (struct share){ n - half, data + half, len + half, ids ? ids + half : NULL,
		md5s ? md5s + half : NULL };
	p->posted = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	hash_both(&mine);
	pthread_mutex_lock(&p->mu);
	while (p->posted)
		pthread_cond_wait(&p->cv, &p->mu);
	pthread_mutex_unlock(&p->mu);
}
