/*
 * store.c — the store's request path: FILE SAVE (plans, resume, replace), GET, DELETE,
 * PUTMANY, DATA and LIST over the parts named in store_priv.h, and opening and closing the
 * store. The metadata goes through the backend in s->mops (store_meta.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "store_priv.h"
#include "util.h"

int
store_key_valid(const char *key, size_t keylen)
{
	return keylen > 0 && keylen <= STORE_MAX_KEY && memchr(key, '\0', keylen) == NULL;
}

int
object_exists(struct store *s, const char *user, const char *key, size_t keylen, int data)
{
	return s->mops->exists(s->meta, user, key, keylen, data);
}

static int
plan_fill(struct store_upload *u, struct store_plan *plan)
{
	size_t n;

	memset(plan, 0, sizeof(*plan));
	plan->size = u->size;
	plan->block_size = u->block_size;
	plan->total_block = u->total;
	n = bitmap_ranges(&u->bm, NULL, 0);
	if (n == 0)
		return STEP_OK;
	if (n > STORE_MAX_RANGES) {
		plan->ranges_cut = 1;
		n = STORE_MAX_RANGES;
	}
	if (step_fault_alloc() || (plan->ranges = calloc(n, sizeof(*plan->ranges))) == NULL)
		return STEP_ENOMEM;
	plan->nranges = n;
	bitmap_ranges(&u->bm, plan->ranges, n);
	return STEP_OK;
}

int
store_file_save(struct store *s, const char *user, const char *key, size_t keylen, uint64_t size,
    struct store_plan *plan, struct store_waiter *w)
{
	return store_file_save_bs(s, user, key, keylen, size, 0, plan, w);
}

int
store_save_may_defer(const struct store *s)
{
	return s->chk != NULL;
}

void
store_kick(struct store *s)
{
	check_kick(s);
}

void
store_set_max_block_size(struct store *s, uint32_t max)
{
	s->max_block = max;
}

void
store_set_max_uploads(struct store *s, int max)
{
	s->max_uploads = max;
}

int
store_file_save_bs(struct store *s, const char *user, const char *key, size_t keylen, uint64_t size,
    uint32_t want_bs, struct store_plan *plan, struct store_waiter *w)
{
	return store_file_save_ex(s, user, key, keylen, size, want_bs, NULL, NULL, plan, w);
}

/*
 * What a SAVE of key does to the upload old already in progress: 1 resume it, 0 start over,
 * STORE_LOCKED refuse. A SAVE that declares the file's MD5 resumes only an upload declared
 * with the same MD5 and size (the same content, whoever sent it); otherwise it starts over
 * when it names the upload (upload_id: the client's own upload, whose file has changed)
 * or the upload has been idle for STORE_TAKEOVER_S, and is refused while someone else's
 * upload is active. A SAVE without one (a client that
 * does not know the extension) keeps the reference's behaviour: the same size resumes,
 * another size starts over; a declared MD5 still keeps a mix from being committed.
 */
static int
save_claim(const struct store_upload *old, uint64_t size, const char *upload_id, const char *md5)
{
	if (md5 == NULL)
		return old->size == size && size > 0 ? 1 : 0;
	if (old->want_md5[0] != '\0' && strcmp(old->want_md5, md5) == 0 && old->size == size &&
	    size > 0)
		return 1;
	if ((upload_id != NULL && strcmp(old->gen, upload_id) == 0) ||
	    util_wall_s() - old->touched >= STORE_TAKEOVER_S)
		return 0;
	return STORE_LOCKED;
}

int
store_file_save_ex(struct store *s, const char *user, const char *key, size_t keylen, uint64_t size,
    uint32_t want_bs, const char *upload_id, const char *md5, struct store_plan *plan,
    struct store_waiter *w)
{
	return store_file_save_rep(s, user, key, keylen, size, want_bs, upload_id, md5, 0, plan, w);
}

/*
 * The key of the upload old already in progress has a complete object too (a replacing
 * upload): a SAVE without "replace" finds the key existing. 1 (refuse: STEP_EEXIST), 0, or
 * STEP_EIO.
 */
static int
save_exists(struct store *s, const struct store_upload *old, const char *user, const char *key,
    size_t keylen, int replace)
{
	if (replace || !old->replace)
		return 0;
	return object_exists(s, user, key, keylen, 0);
}

#define SAVE_NEW (-1000) /* save_over: start a new upload */

/* A SAVE's arguments (strings borrowed), bs the plan's block size. */
struct save_args {
	const char *user, *key;
	size_t keylen;
	uint64_t size;
	uint32_t bs;
	const char *upload_id, *md5;
	int replace;
};

/*
 * Shared metadata: the new upload's row, written now (not by the commit thread) so that
 * every instance finds it; another instance's upload of the key that got there first
 * makes this SAVE STORE_LOCKED (retry). Its temp file goes when it fails. An inline
 * (one-block) or empty upload gets no row, as with SQLite: it lives in this instance's
 * memory until its commit, so its SAVE and UPLOAD must reach the same instance (a client
 * whose connection moved SAVEs again). Under mu.
 */
static int
save_row(struct store *s, struct store_upload *u)
{
	int r;

	if (!s->mops->shared || u->inl || u->size == 0 ||
	    (r = s->mops->upload_begin(s->meta, u)) == 0)
		return STEP_OK;
	upload_unlink_files(s, u);
	return r == STEP_EEXIST ? STORE_LOCKED : r;
}

/* Makes the one-block upload u inline beyond INLINE_MAX when packs hold inline bytes and
 * the budget allows (INLINE_BIG_MAX): 1, else 0. Under mu (so the check and the add are
 * one step); upload_free gives the bytes back. */
static int
inline_reserve(struct store *s, struct store_upload *u)
{
	if (s->mops->inline_in_meta || u->size > INLINE_BIG_MAX ||
	    atomic_load(&s->inl_bytes) + u->size > INLINE_BUDGET)
		return 0;
	atomic_fetch_add(&s->inl_bytes, u->size);
	u->inl_budget = &s->inl_bytes;
	return 1;
}

/* A resumed plan of old: 0 and plan, or STORE_PENDING (w waits for old's check, it used
 * or freed), or an error. Under mu. */
static int
save_resume(struct store *s, struct store_upload *old, int replace, struct store_plan *plan,
    struct store_check_ctx *cc)
{
	int r;

	old->touched = util_wall_s();
	old->replace |= replace;
	r = plan_fill(old, plan);
	memcpy(plan->upload_id, old->gen, sizeof(plan->upload_id));
	/* Its first SAVE's answer is not known yet: this one's is the same. A plan recorded
	 * for every instance may have been committed or dropped elsewhere meanwhile: looked
	 * up (and recorded) again, as a new plan would be. */
	if (r == 0 && (old->unchecked || old->planned) && cc->it != NULL) {
		r = check_attach(s, cc->it, old, cc->w);
		cc->it = NULL;
	}
	return r;
}

/*
 * A SAVE of a key whose upload old is in progress: the answer (resumed: 0 and plan;
 * STEP_EEXIST, STORE_LOCKED, ...), or SAVE_NEW when old was dropped and a new upload
 * starts. Under mu.
 */
static int
save_over(struct store *s, struct store_upload *old, const struct save_args *a,
    struct store_plan *plan, struct store_check_ctx *cc)
{
	int r;

	if (old->state == UP_COMMITTING && old->remote)
		return STORE_RETRY; /* committed or given back within moments: ask again */
	if (old->state == UP_COMMITTING)
		return a->replace ? STORE_LOCKED : STEP_EEXIST;
	if ((r = save_exists(s, old, old->user, old->key, old->keylen, a->replace)) != 0)
		return r > 0 ? STEP_EEXIST : r;
	if ((r = save_claim(old, a->size, a->upload_id, a->md5)) == STORE_LOCKED)
		return r;
	/* Not known yet whether the key exists (old's SAVE waits for the check): looked up
	 * now, as that SAVE would have, before old is started over or made a replace. An
	 * object there: old has gone, and a replace starts anew. */
	if (old->unchecked && (r == 0 || a->replace)) {
		int found = check_now(s, old);

		if (found != 0)
			return found < 0 ? found : a->replace ? SAVE_NEW : STEP_EEXIST;
	}
	if (r == 1) /* Resume extension: keep the received blocks. */
		return save_resume(s, old, a->replace, plan, cc);
	/* A different size starts over (as the reference does for any SAVE). With shared
	 * metadata only if the row is still open: another instance may be committing it. */
	if (s->mops->shared && old->rid != 0 && (r = s->mops->upload_drop(s->meta, old->rid)) != 1)
		return r == 0 ? (a->replace ? STORE_LOCKED : STEP_EEXIST) : r;
	old->state = UP_DEAD;
	map_remove(s, old);
	if (queue_upload_job(s, JOB_DROP, old) != 0)
		upload_unlink_files(s, old);
	old->refs--; /* the map's reference; the DROP job holds its own */
	return SAVE_NEW;
}

/*
 * A new key: 0 when it has no object, STEP_EEXIST, or an error; or 1 when its lookup
 * is left to the check thread (shared metadata, a new inline upload, cc->it set: the
 * round trip is made for many SAVEs at once, outside mu, or not at all, store_check.c).
 * Under mu.
 */
static int
save_new_key(struct store *s, const struct save_args *a, const struct store_check_ctx *cc)
{
	int r = 0;

	if (!a->replace && cc->it == NULL)
		r = object_exists(s, a->user, a->key, a->keylen, 0);
	if (r != 0)
		return r > 0 ? STEP_EEXIST : r;
	if (s->max_uploads > 0 && ucount_get(s, a->user) >= s->max_uploads)
		return STEP_EBUSY;
	return !a->replace && cc->it != NULL;
}

/* A new upload for a's plan, its files made; *r set on failure (NULL). Under mu. */
static struct store_upload *
save_upload(struct store *s, const struct save_args *a, int *r)
{
	struct store_upload *u = upload_new(a->user, a->key, a->keylen, a->size, a->bs);
	uint8_t id[8];

	*r = STEP_ENOMEM;
	if (u == NULL)
		return NULL;
	/* An inline upload has neither files nor an uploads row: its one block is held in
	 * memory from its UPLOAD to its commit, and a restart simply forgets the plan (the
	 * client sends the block again). */
	u->inl = a->size > 0 && u->total == 1 && (a->size <= INLINE_MAX || inline_reserve(s, u));
	if (a->md5 != NULL)
		snprintf(u->want_md5, sizeof(u->want_md5), "%s", a->md5);
	u->replace = a->replace;
	if (hash_random(id, 8) != 0) {
		*r = STEP_EIO;
		upload_free(u);
		return NULL;
	}
	hash_to_hex(id, 8, u->gen);
	if (!u->inl) {
		/* The temp file is created now and opened again when a block arrives: an
		 * upload in progress holds no descriptor. */
		if ((*r = upload_open_files(s, u, 1, 0)) != 0) {
			upload_unlink_files(s, u);
			upload_free(u);
			return NULL;
		}
		close(u->fd);
		u->fd = -1;
	}
	if ((*r = save_row(s, u)) != 0) {
		upload_free(u);
		return NULL;
	}
	return u;
}

/* The part of a SAVE under mu (see store_file_save_rep). */
static int
save_locked(struct store *s, const struct save_args *a, struct store_plan *plan,
    struct store_waiter *w, struct store_check_ctx *cc)
{
	struct store_upload *u = NULL, *old;
	struct store_job *cj = NULL;
	uint8_t id[HASH_SHA256_LEN];
	int r, check = 0;

	key_id(a->user, a->key, a->keylen, id);
	pthread_mutex_lock(&s->mu);
	if ((old = map_find(s, id)) != NULL) {
		if ((r = save_over(s, old, a, plan, cc)) != SAVE_NEW)
			goto out;
		/* Started over: a new inline plan is looked up and recorded as for a new key
		 * (shared metadata: cc->it set), so that its UPLOAD may reach any instance. */
		check = !a->replace && cc->it != NULL;
	} else if ((check = save_new_key(s, a, cc)) < 0) {
		r = check;
		goto out;
	}
	/* An empty upload commits at once: its commit job is allocated before anything
	 * changes, so an allocation failure cannot leave it committing with nobody to
	 * finish it. */
	if (a->size == 0 && (cj = job_new(JOB_COMMIT)) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	if ((u = save_upload(s, a, &r)) == NULL)
		goto out;
	map_insert(s, u); /* the caller's reference becomes the map's */
	if (!u->inl && !s->mops->shared)
		queue_upload_job(s, JOB_ROW, u);
	if (a->size == 0) {
		u->state = UP_COMMITTING;
		w->next = NULL;
		u->waiters = w;
		u->refs++;
		cj->u = u;
		job_queue_push(s, cj);
		cj = NULL;
		memset(plan, 0, sizeof(*plan));
		plan->block_size = u->block_size;
		r = STORE_PENDING;
		goto out;
	}
	r = plan_fill(u, plan);
	memcpy(plan->upload_id, u->gen, sizeof(plan->upload_id));
	if (r == 0 && check) {
		r = check_attach(s, cc->it, u, w);
		cc->it = NULL;
	}
out:
	pthread_mutex_unlock(&s->mu);
	job_free(cj);
	return r;
}

int
store_file_save_rep(struct store *s, const char *user, const char *key, size_t keylen,
    uint64_t size, uint32_t want_bs, const char *upload_id, const char *md5, int replace,
    struct store_plan *plan, struct store_waiter *w)
{
	struct save_args a = { user, key, keylen, size, s->o.block_size, upload_id, md5, replace };
	struct store_check_ctx cc = { NULL, w };
	uint32_t max = s->max_block ? s->max_block : STORE_BIG_BLOCK_MAX;
	int r;

	if (want_bs > a.bs && max > a.bs)
		a.bs = want_bs < max ? want_bs : max;
	if (size > s->o.max_object_size || (size + a.bs - 1) / a.bs > MAX_TOTAL_BLOCK)
		return STEP_ETOOBIG;
	/* An inline or empty plan is this instance's alone: nothing to look up elsewhere. */
	if (!(size <= INLINE_MAX && size <= a.bs)) {
		if ((r = upload_sync(s, user, key, keylen, 1)) != 0)
			return r;
	} else if (s->chk != NULL && w != NULL && size > 0 && !replace &&
	    (cc.it = check_item_new()) == NULL) {
		return STEP_ENOMEM;
	}
	r = save_locked(s, &a, plan, w, &cc);
	check_item_free(cc.it); /* not used */
	return r;
}

int
store_upload_get(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_upload **up)
{
	uint8_t id[HASH_SHA256_LEN];
	struct store_upload *u;
	int r;

	key_id(user, key, keylen, id);
	/* Shared metadata: an entry this instance has open is used as it is (a block for an
	 * upload gone elsewhere is refused by the metadata); any other is looked up. */
	pthread_mutex_lock(&s->mu);
	u = map_find(s, id);
	if (u != NULL && (u->inl || (u->state == UP_OPEN && !u->remote))) {
		u->refs++;
		*up = u;
		pthread_mutex_unlock(&s->mu);
		return STEP_OK;
	}
	pthread_mutex_unlock(&s->mu);
	if ((r = upload_sync(s, user, key, keylen, 0)) != 0)
		return r;
	pthread_mutex_lock(&s->mu);
	if ((u = map_find(s, id)) != NULL) {
		u->refs++;
		*up = u;
		pthread_mutex_unlock(&s->mu);
		return STEP_OK;
	}
	pthread_mutex_unlock(&s->mu);
	/* Shared metadata: a one-block upload planned by another instance (its SAVE went
	 * there); the same lookup tells whether the key has an object. */
	if (s->mops->plan_find != NULL)
		return upload_from_plan(s, user, key, keylen, up);
	r = object_exists(s, user, key, keylen, 0);
	return r > 0 ? STEP_EEXIST : r == 0 ? STEP_ENOENT : r;
}

/* ---- GET / DOWNLOAD / DELETE ---- */

/* ---- PUTMANY ---- */

/*
 * A committing inline upload for one PUTMANY item with its commit job, in one allocation,
 * or NULL (ENOMEM). kc: a SHA-256 context for the key id, or NULL.
 */
static struct put_obj *
put_obj_new(struct store *s, const char *user, size_t ulen, const struct store_put_item *it,
    struct hash_ctx *kc)
{
	struct put_obj *po;
	struct store_upload *u;

	if (step_fault_alloc() ||
	    (po = malloc(sizeof(*po) + ulen + 1 + it->keylen + 1 + it->len)) == NULL)
		return NULL;
	memset(po, 0, sizeof(*po));
	u = &po->u;
	u->fd = u->mapfd = -1;
	u->size = it->len;
	u->block_size = s->o.block_size;
	u->total = 1;
	u->inl = 1;
	u->onebuf = 1;
	u->user = po->buf;
	memcpy(u->user, user, ulen + 1);
	u->key = u->user + ulen + 1;
	memcpy(u->key, it->key, it->keylen);
	u->key[it->keylen] = '\0';
	u->keylen = it->keylen;
	u->mem = (uint8_t *)u->key + it->keylen + 1;
	memcpy(u->mem, it->data, it->len);
	memcpy(u->mem_md5, it->md5, sizeof(u->mem_md5));
	if (kc != NULL)
		key_id_with(kc, user, it->key, it->keylen, u->id);
	else
		key_id(user, it->key, it->keylen, u->id);
	hash_to_hex(u->id, sizeof(u->id), u->stem);
	u->next_hashed = 1;
	u->touched = util_wall_s();
	u->state = UP_COMMITTING;
	u->refs = 1;
	po->j.kind = JOB_COMMIT;
	po->j.embedded = 1;
	return po;
}

/* Items checked under one hold of mu and one read transaction: bounds how long other
 * requests wait for mu. */
#define PUT_CHUNK 64

/*
 * With shared metadata, which of the chunk's keys exist, in one query and before mu is
 * taken (a key committed meanwhile is refused by the commit itself: 402 all the same):
 * ex[i] 1, 0 or an error; -1 everywhere when the backend has no such query (then each is
 * looked up under mu, in one read transaction).
 */
static void
put_exists(struct store *s, const char *user, const struct store_put_item *chunk, size_t m,
    struct put_obj *const *po, int *ex)
{
	const char *keys[PUT_CHUNK];
	size_t lens[PUT_CHUNK], i, k = 0;
	uint8_t got[PUT_CHUNK];
	int r;

	for (i = 0; i < m; i++)
		ex[i] = -1;
	if (s->mops->exists_many == NULL)
		return;
	for (i = 0; i < m; i++)
		if (po[i] != NULL) {
			keys[k] = chunk[i].key;
			lens[k++] = chunk[i].keylen;
		}
	r = k > 0 ? s->mops->exists_many(s->meta, user, keys, lens, k, got) : 0;
	for (i = 0, k = 0; i < m; i++)
		if (po[i] != NULL) {
			ex[i] = r != 0 ? r : got[k];
			k++;
		}
}

void
store_put_many(struct store *s, const char *user, struct store_put_item *items, size_t n)
{
	struct store_job *head = NULL, **tail = &head, *last = NULL;
	struct put_obj *po[PUT_CHUNK];
	struct hash_ctx *kc = hash_sha256_new(); /* NULL: key_id() allocates its own */
	size_t i, c, m, total = 0, ulen = strlen(user);
	int low, ex[PUT_CHUNK];

	for (i = 0; i < n; i++)
		total += items[i].len;
	low = space_low(s->tmpfd, total);
	for (c = 0; c < n; c += m) {
		struct store_put_item *chunk = &items[c];

		m = n - c < PUT_CHUNK ? n - c : PUT_CHUNK;
		/* Allocated before the lock: nothing changes when an allocation fails. */
		for (i = 0; i < m; i++) {
			struct store_put_item *it = &chunk[i];

			po[i] = NULL;
			if (it->len == 0 || it->len > INLINE_MAX)
				it->status = STEP_ETOOBIG;
			else if (low)
				it->status = STEP_ENOSPC;
			else if ((po[i] = put_obj_new(s, user, ulen, it, kc)) == NULL)
				it->status = STEP_ENOMEM;
		}
		put_exists(s, user, chunk, m, po, ex);
		pthread_mutex_lock(&s->mu);
		s->mops->read_begin(s->meta);
		for (i = 0; i < m; i++) {
			struct store_put_item *it = &chunk[i];
			struct store_upload *u, *old;
			int r;

			if (po[i] == NULL)
				continue;
			u = &po[i]->u;
			if ((old = map_find(s, u->id)) != NULL)
				r = old->state == UP_COMMITTING ? STEP_EEXIST : STEP_EBUSY;
			else if ((r = ex[i] != -1
			                 ? ex[i]
			                 : object_exists(s, user, it->key, it->keylen, 0)) > 0)
				r = STEP_EEXIST;
			else if (r == 0 && fault_hit(&s->nwrite, s->fault_write, "block write"))
				r = err_from_errno(s->fault_errno);
			if (r == 0) {
				it->w->next = NULL;
				u->waiters = it->w;
				map_insert(s, u); /* the map's reference */
				u->refs++;        /* the job's */
				po[i]->j.u = u;
				*tail = &po[i]->j;
				tail = &po[i]->j.next;
				last = &po[i]->j;
				po[i] = NULL;
				r = STORE_PENDING;
			}
			it->status = r;
		}
		s->mops->read_end(s->meta);
		pthread_mutex_unlock(&s->mu);
		for (i = 0; i < m; i++)
			upload_free(po[i] != NULL ? &po[i]->u : NULL);
	}
	hash_free(kc);
	if (head == NULL)
		return;
	/* One hand-over for the whole request: the commit thread takes it as one batch. */
	pthread_mutex_lock(&s->qmu);
	if (s->qtail != NULL)
		s->qtail->next = head;
	else
		s->qhead = head;
	s->qtail = last;
	pthread_cond_signal(&s->qcond);
	pthread_mutex_unlock(&s->qmu);
}

int
store_object_get(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_obj *o)
{
	uint8_t id[HASH_SHA256_LEN];
	struct store_upload *u;
	int r, busy;

	if (s->mops->shared) {
		/* The row first: an upload in progress elsewhere is looked for only without one. */
		if ((r = s->mops->object_get(s->meta, user, key, keylen, o)) != STEP_ENOENT)
			return r;
		if ((r = upload_sync(s, user, key, keylen, 0)) != 0)
			return r;
	}
	key_id(user, key, keylen, id);
	pthread_mutex_lock(&s->mu);
	/* An upload replacing the key's object leaves the old one readable until it commits;
	 * one committing on another instance is decided within moments (retry). */
	busy = (u = map_find(s, id)) == NULL ? 0 : u->replace ? 1 : u->remote ? 3 : 2;
	pthread_mutex_unlock(&s->mu);
	if (busy >= 2)
		return busy == 3 ? STORE_RETRY : STEP_EBUSY;
	r = s->mops->object_get(s->meta, user, key, keylen, o);
	return r == STEP_ENOENT && busy ? STEP_EBUSY : r;
}

static int
keyed_job(struct store *s, int kind, const char *user, const char *key, size_t keylen,
    const char *json, struct store_waiter *w)
{
	struct store_job *j = job_new(kind);

	if (j == NULL)
		return STEP_ENOMEM;
	j->user = strdup(user);
	j->key = malloc(keylen + 1);
	j->json = json != NULL ? strdup(json) : NULL;
	if (j->user == NULL || j->key == NULL || (json != NULL && j->json == NULL)) {
		job_free(j);
		return STEP_ENOMEM;
	}
	memcpy(j->key, key, keylen);
	j->key[keylen] = '\0';
	j->keylen = keylen;
	j->w = w;
	job_queue_push(s, j);
	return STORE_PENDING;
}

int
store_file_delete(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_waiter *w)
{
	uint8_t id[HASH_SHA256_LEN];
	struct store_upload *u;
	int r;

	key_id(user, key, keylen, id);
	/* A SAVE of the key whose answer is not known yet (store_check.c) is answered first,
	 * as if it had been made before this DELETE. */
	pthread_mutex_lock(&s->mu);
	if ((u = map_find(s, id)) != NULL && u->unchecked && u->state == UP_OPEN)
		check_now(s, u);
	pthread_mutex_unlock(&s->mu);
	if ((r = upload_sync(s, user, key, keylen, 0)) != 0)
		return r;
	pthread_mutex_lock(&s->mu);
	if ((u = map_find(s, id)) != NULL) {
		int rep = u->replace;

		/* Shared metadata: the row goes only while it is open (not claimed by a commit
		 * on another instance), in one conditional statement. */
		if (u->state == UP_COMMITTING ||
		    (s->mops->shared && u->rid != 0 &&
		        (r = s->mops->upload_drop(s->meta, u->rid)) != 1)) {
			pthread_mutex_unlock(&s->mu);
			return u->state == UP_COMMITTING || r == 0 ? STEP_EBUSY : r;
		}
		u->state = UP_DEAD;
		map_remove(s, u);
		if (queue_upload_job(s, JOB_DROP, u) != 0)
			upload_unlink_files(s, u);
		u->refs--; /* the map's; the job holds its own (or the last one is ours below) */
		if (u->refs == 0)
			upload_free(u);
		/* A replacing upload is dropped and the object it would have replaced is
		 * deleted as well: the key is gone either way. */
		r = rep ? object_exists(s, user, key, keylen, 0) : 0;
		pthread_mutex_unlock(&s->mu);
		if (r <= 0)
			return r == 0 ? STORE_TMP_DELETED : r;
		return keyed_job(s, JOB_OBJ_DELETE, user, key, keylen, NULL, w);
	}
	r = object_exists(s, user, key, keylen, 0);
	pthread_mutex_unlock(&s->mu);
	/* A one-block upload another instance planned: dropped as that instance would. */
	if (r == 0 && s->mops->plan_drop != NULL &&
	    (r = s->mops->plan_drop(s->meta, user, key, keylen)) > 0)
		return STORE_TMP_DELETED;
	if (r <= 0)
		return r == 0 ? STEP_ENOENT : r;
	return keyed_job(s, JOB_OBJ_DELETE, user, key, keylen, NULL, w);
}

/* ---- DATA ---- */

int
store_data_get(struct store *s, const char *user, const char *key, size_t keylen, char **json)
{
	return s->mops->data_get(s->meta, user, key, keylen, json);
}

int
store_data_save(struct store *s, const char *user, const char *key, size_t keylen, const char *json,
    struct store_waiter *w)
{
	int r = object_exists(s, user, key, keylen, 1);

	if (r != 0)
		return r > 0 ? STEP_EEXIST : r;
	return keyed_job(s, JOB_DATA_SAVE, user, key, keylen, json, w);
}

int
store_data_delete(
    struct store *s, const char *user, const char *key, size_t keylen, struct store_waiter *w)
{
	int r = object_exists(s, user, key, keylen, 1);

	if (r <= 0)
		return r == 0 ? STEP_ENOENT : r;
	return keyed_job(s, JOB_DATA_DELETE, user, key, keylen, NULL, w);
}

int
store_list(struct store *s, const char *user, int data, const char *prefix, size_t plen,
    const char *after, size_t alen, long long limit,
    int (*fn)(void *arg, const char *key, size_t keylen, int64_t mtime), void *arg, int *more)
{
	return s->mops->list(s->meta, user, data, prefix, plen, after, alen, limit, fn, arg, more);
}

const char *
store_id(const struct store *s)
{
	return s->id;
}

int
store_obj_gen(struct store *s, const char *user, int64_t *gen)
{
	return s->mops->obj_gen(s->meta, user, gen);
}

int
store_open(const struct store_opts *o, struct store **out, char *errbuf, size_t errlen)
{
	struct store *s;
	int r;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return STEP_ENOMEM;
	s->o = *o;
	s->objfd = s->tmpfd = s->packdir = -1;
	s->max_uploads = STORE_MAX_UPLOADS;
	pthread_mutex_init(&s->pmu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->qmu, NULL);
	pthread_cond_init(&s->wcond, NULL);
	pthread_cond_init(&s->qcond, NULL);
	fault_parse(s);
	s->pack_max = PACK_MAX;
	if (getenv("STEP_PACK_MAX") != NULL) {
		long long v;

		if (util_parse_ll(getenv("STEP_PACK_MAX"), 1, PACK_MAX, &v) == 0)
			s->pack_max = (uint64_t)v;
		log_warnx("test hook active: STEP_PACK_MAX=%llu", (unsigned long long)s->pack_max);
	}
	if ((s->root = strdup(o->root)) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	s->o.root = s->root;
	if ((r = open_dir(o->root, "obj", &s->objfd)) != 0 ||
	    (r = open_dir(o->root, "tmp", &s->tmpfd)) != 0 ||
	    (r = open_dir(o->root, "pack", &s->packdir)) != 0) {
		snprintf(errbuf, errlen, "cannot create directories in '%s': %s", o->root,
		    strerror(errno));
		goto out;
	}
	s->mops =
	    o->metadata != NULL && o->metadata[0] != '\0' ? &store_meta_pg : &store_meta_sqlite;
	if ((r = s->mops->open(s, &s->meta, errbuf, errlen)) != 0)
		goto out;
	if ((r = s->mops->store_id(s->meta, s->id)) != 0) {
		snprintf(errbuf, errlen, "cannot read or create the store id (%s metadata)",
		    s->mops->name);
		goto out;
	}
	/* Shared metadata: uploads are found when asked for, and files in tmp/ or obj/ that
	 * this instance does not know may be another instance's work in progress. */
	if (!s->mops->shared && s->mops->uploads(s->meta, s, load_upload) != 0)
		log_warnx("cannot read every upload in progress (%s metadata)", s->mops->name);
	if (!s->mops->shared)
		remove_orphans(s);
	if (pack_open_last(s) != 0) {
		snprintf(errbuf, errlen, "cannot open a pack in '%s/pack': %s", o->root,
		    strerror(errno));
		r = STEP_ESYS;
		goto out;
	}
	if (!s->mops->shared)
		reclaim_orphans(s);
	if (pthread_create(&s->thread, NULL, commit_main, s) != 0) {
		snprintf(errbuf, errlen, "cannot start the commit thread");
		r = STEP_ESYS;
		goto out;
	}
	s->thread_started = 1;
	pthread_setname_np(s->thread, "stepd-commit");
	if ((r = check_start(s)) != 0) {
		snprintf(errbuf, errlen, "cannot start the check thread");
		goto out;
	}
	*out = s;
	s = NULL;
	r = STEP_OK;
out:
	store_free(s);
	return r;
}

void
store_free(struct store *s)
{
	size_t b;

	if (s == NULL)
		return;
	check_stop(s); /* its SAVEs may queue jobs: before the commit thread stops */
	if (s->thread_started) {
		pthread_mutex_lock(&s->qmu);
		s->stop = 1;
		pthread_cond_signal(&s->qcond);
		pthread_mutex_unlock(&s->qmu);
		pthread_join(s->thread, NULL);
		waits_drain(s);
	} else {
		/* Jobs queued while loading: run them here. */
		while (s->qhead != NULL) {
			struct store_job *batch = s->qhead;

			s->qhead = s->qtail = NULL;
			if (s->meta != NULL)
				batch_run(s, batch);
			else
				while (batch != NULL) {
					struct store_job *n = batch->next;
					struct store_upload *u = batch->u;

					job_free(batch); /* before u: an embedded job is u's */
					if (u != NULL)
						upload_unref(s, u);
					batch = n;
				}
		}
	}
	for (b = 0; b < MAP_BUCKETS; b++) {
		while (s->map[b] != NULL) {
			struct store_upload *u = s->map[b];

			s->map[b] = u->hnext;
			upload_free(u);
		}
	}
	for (b = 0; b < UCOUNT_BUCKETS; b++)
		while (s->ucount[b] != NULL) {
			struct ucount *c = s->ucount[b];

			s->ucount[b] = c->next;
			free(c->user);
			free(c);
		}
	if (s->meta != NULL)
		s->mops->close(s->meta);
	if (s->objfd >= 0)
		close(s->objfd);
	if (s->tmpfd >= 0)
		close(s->tmpfd);
	if (s->packdir >= 0)
		close(s->packdir);
	for (b = 0; b < s->npackfd; b++)
		if (s->packfd[b] >= 0)
			close(s->packfd[b]);
	free(s->packfd);
	pthread_mutex_destroy(&s->pmu);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->qmu);
	pthread_cond_destroy(&s->wcond);
	pthread_cond_destroy(&s->qcond);
	free(s->root);
	free(s);
}
