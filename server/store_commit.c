/*
 * store_commit.c — the commit queue and its thread. Commits, DATA writes and deletes are
 * queued as jobs; the thread takes them in batches (group commit: one sync, one directory
 * fsync and one metadata transaction per batch) and answers the waiters.
 *
 * Exactly once: a complete upload moves to UP_COMMITTING under mu by the one block that
 * completed it (store_upload_write), so one COMMIT job exists per upload; a repeated
 * block meanwhile waits for that job's answer. The job hashes what was not hashed in
 * order, syncs, renames the temp file into obj/, syncs the directory, and only then the
 * metadata transaction records the object; a failure anywhere fails the commit and
 * removes what it made.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "md5.h"
#include "store_priv.h"
#include "util.h"

/* ---- commit queue ---- */

struct store_job *
job_new(int kind)
{
	struct store_job *j;

	if (step_fault_alloc())
		return NULL;
	if ((j = calloc(1, sizeof(*j))) != NULL)
		j->kind = kind;
	return j;
}

void
job_free(struct store_job *j)
{
	if (j == NULL || j->embedded)
		return;
	free(j->user);
	free(j->key);
	free(j->json);
	free(j);
}

void
job_queue_push(struct store *s, struct store_job *j)
{
	pthread_mutex_lock(&s->qmu);
	j->next = NULL;
	if (s->qtail != NULL)
		s->qtail->next = j;
	else
		s->qhead = j;
	s->qtail = j;
	pthread_cond_signal(&s->qcond);
	pthread_mutex_unlock(&s->qmu);
}

/* Queues a job that holds a new reference to u. Under mu. On allocation failure the
 * job is skipped: only metadata bookkeeping (ROW/DROP) is ever lost that way. */
int
queue_upload_job(struct store *s, int kind, struct store_upload *u)
{
	struct store_job *j = job_new(kind);

	if (j == NULL)
		return STEP_ENOMEM;
	u->refs++;
	j->u = u;
	job_queue_push(s, j);
	return STEP_OK;
}

/* Opens the temp object of a complete upload once its writers are done. */
static void
commit_open(struct store *s, struct store_job *j)
{
	struct store_upload *u = j->u;

	if (u->inl)
		return; /* nobody writes an inline upload once it is committing */
	pthread_mutex_lock(&s->mu);
	while (u->writers > 0)
		pthread_cond_wait(&s->wcond, &s->mu);
	if (upload_open_files(s, u, 0, 0) != 0)
		j->err = STEP_EIO;
	pthread_mutex_unlock(&s->mu);
}

/* The bytes of j's upload for commit_hash_many, or NULL: an unhashed inline block, or the
 * temp object of an upload nobody hashed yet (mapped: *mapped is set). */
static const void *
hash_many_data(struct store_job *j, int *mapped)
{
	struct store_upload *u = j->u;
	struct stat sb;
	void *p;

	*mapped = 0;
	if (j->kind != JOB_COMMIT || j->err != 0 || u->size == 0 || u->size > HASH_AT_COMMIT_MAX)
		return NULL;
	if (u->inl)
		return u->mem_md5[0] == '\0' ? u->mem : NULL;
	/* A file shorter than the mapping would fault: the slow path reports it. */
	if (u->next_hashed != 0 || fstat(u->fd, &sb) != 0 || (uint64_t)sb.st_size < u->size)
		return NULL;
	p = mmap(NULL, (size_t)u->size, PROT_READ, MAP_SHARED | MAP_POPULATE, u->fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	*mapped = 1;
	return p;
}

/*
 * The MD5s of the batch's uploads that nobody hashed yet (a big inline block, or a chunk
 * sent as one block to a temp file: neither is hashed under mu, see store_upload_write),
 * side by side in md5_many's lanes: on a first backup of large files this is most of
 * stepd's CPU, several times cheaper so. A temp object is read through a mapping (it is
 * still in the page cache). Larger uploads (a put of a big file: hashed as it streams)
 * and those it cannot map are left to commit_finish.
 */
static void
commit_hash_many(struct store_job *batch)
{
	const void *data[64];
	size_t len[64], n = 0, i;
	struct store_job *js[64], *j = batch;
	uint8_t out[64][MD5_DIGEST_LEN];
	int mapped[64];

	for (;;) {
		for (; j != NULL && n < 64; j = j->next) {
			if ((data[n] = hash_many_data(j, &mapped[n])) == NULL)
				continue;
			js[n] = j;
			len[n++] = (size_t)j->u->size;
		}
		if (n == 0)
			return;
		md5_many(n, data, len, out);
		for (i = 0; i < n; i++) {
			struct store_upload *u = js[i]->u;

			hash_to_hex(out[i], MD5_DIGEST_LEN, js[i]->md5);
			if (mapped[i]) {
				u->next_hashed = u->total;
				munmap((void *)data[i], len[i]);
			} else {
				memcpy(u->mem_md5, js[i]->md5, sizeof(u->mem_md5));
			}
		}
		n = 0;
	}
}

/* Finishes the MD5 of a complete upload (reading back what was not hashed in order, unless
 * commit_hash_many did it all) and checks it against the declared one. */
static void
commit_finish(struct store_job *j)
{
	struct store_upload *u = j->u;
	uint8_t md[HASH_MD5_LEN];

	if (j->err != 0)
		return;
	if (u->inl) {
		if (u->mem_md5[0] == '\0')
			hash_md5_hex(u->mem, (size_t)u->size, u->mem_md5);
		memcpy(j->md5, u->mem_md5, sizeof(j->md5));
	} else if (j->md5[0] == '\0') {
		/* State is COMMITTING: nobody else touches md5/next_hashed now. */
		if (upload_catch_up(u, u->fd, UINT64_MAX) != 0 || u->next_hashed != u->total) {
			j->err = STEP_EIO;
			return;
		}
		hash_final(u->md5, md);
		hash_to_hex(md, sizeof(md), j->md5);
	}
	/* The MD5 declared at SAVE: a mix of two uploads (or a changed file) is never
	 * committed. The upload is discarded; the client starts over. */
	if (u->want_md5[0] != '\0' && strcmp(u->want_md5, j->md5) != 0) {
		if (!u->inl)
			log_info("commit of '%s': MD5 %s, not the declared %s: discarded", u->stem,
			    j->md5, u->want_md5);
		j->err = STEP_EMISMATCH;
	}
}

/* Makes the batch's object files and pack bytes durable. 0, or -1 with errno. */
static int
commit_sync(struct store *s, struct store_job *batch)
{
	struct store_job *j, *one = NULL;
	int nfile = 0;

	if (fault_hit(&s->nfsync, s->fault_fsync, "commit sync")) {
		errno = s->fault_errno;
		return -1;
	}
	for (j = batch; j != NULL; j = j->next)
		if (j->kind == JOB_COMMIT && j->err == 0 && !j->u->inl) {
			one = j;
			nfile++;
		}
	if (s->pack_dirty) {
		s->pack_dirty = 0;
		if (nfile == 0)
			return fdatasync(pack_fd(s, s->pack_no, 0));
		nfile += 2; /* the pack as well: one sync for all */
	}
	if (nfile == 0)
		return 0;
	if (nfile == 1)
		return fdatasync(one->u->fd);
	/* Many files: one filesystem-wide sync instead of one fsync each. */
	return syncfs(s->tmpfd);
}

int
await_queue(struct store *s, struct store_upload *u, struct store_waiter *w)
{
	struct store_job *j = job_new(JOB_AWAIT);

	if (j == NULL)
		return STEP_ENOMEM;
	u->refs++;
	j->u = u;
	j->w = w;
	j->since = util_now_ms();
	pthread_mutex_lock(&s->qmu);
	j->next = s->awaiting;
	s->awaiting = j;
	pthread_cond_signal(&s->qcond);
	pthread_mutex_unlock(&s->qmu);
	return STORE_PENDING;
}

/* Queues the commit of u (claimed by this instance) again. 0 or STEP_ENOMEM. */
static int
recommit(struct store *s, struct store_upload *u)
{
	struct store_job *cj = job_new(JOB_COMMIT);

	if (cj == NULL)
		return STEP_ENOMEM;
	pthread_mutex_lock(&s->mu);
	if (!u->inl) {
		hash_reset(u->md5);
		u->next_hashed = 0;
	}
	u->state = UP_COMMITTING;
	u->refs++;
	cj->u = u;
	pthread_mutex_unlock(&s->mu);
	job_queue_push(s, cj);
	return STEP_OK;
}

/* A commit of u failed because the metadata went away: did its transaction commit? Asked
 * again (resolve_run) until the metadata answers. Commit thread. */
static void
resolve_later(struct store *s, struct store_upload *u)
{
	struct store_job *j = job_new(JOB_RESOLVE);

	if (j == NULL)
		return; /* the row's claim is given back when it gets old (expire) */
	pthread_mutex_lock(&s->mu);
	u->refs++;
	pthread_mutex_unlock(&s->mu);
	j->u = u;
	j->next = s->resolving;
	s->resolving = j;
}

/*
 * One round over the commits whose outcome is unknown: committed after all (nothing to
 * do), not committed (the row is still this instance's claim: the file goes back to tmp/
 * and the commit is queued again, hashing the file afresh), or gone meanwhile (the file
 * goes). Waiters of the upload's blocks wait for it (await) or ask again.
 */
static void
resolve_run(struct store *s)
{
	struct store_job **pp = &s->resolving, *j;

	while ((j = *pp) != NULL) {
		struct store_upload *u = j->u;
		char from[128], to[128];
		int r = s->mops->resolve(s->meta, u);

		upload_fname(u, "", from, sizeof(from));
		upload_fname(u, ".part", to, sizeof(to));
		if (r == 0 && !u->inl)
			renameat(s->objfd, from, s->tmpfd, to); /* ENOENT: never renamed */
		if (r == 0 && recommit(s, u) != 0) {
			pp = &j->next;
			continue;
		}
		if (r == STEP_ENOENT && !u->inl)
			unlinkat(s->objfd, from, 0);
		if (r < 0 && r != STEP_ENOENT) {
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		j->u = NULL;
		job_free(j);
		upload_unref(s, u);
	}
}

void
waits_drain(struct store *s)
{
	struct store_job *j;

	while ((j = s->awaiting) != NULL) {
		s->awaiting = j->next;
		j->w->done(j->w, STEP_EBUSY, NULL);
		upload_unref(s, j->u);
		j->u = NULL;
		job_free(j);
	}
	while ((j = s->resolving) != NULL) {
		s->resolving = j->next;
		upload_unref(s, j->u);
		j->u = NULL;
		job_free(j);
	}
}

/* Answers the waiters whose upload another instance commits, once that is decided. */
static void
await_run(struct store *s)
{
	struct store_job *list, *j, *keep = NULL, **tail = &keep;
	char md5[33] = "";
	int r;

	pthread_mutex_lock(&s->qmu);
	list = s->awaiting;
	s->awaiting = NULL;
	pthread_mutex_unlock(&s->qmu);
	while ((j = list) != NULL) {
		list = j->next;
		r = s->mops->await(s->meta, j->u, md5);
		if (r == STORE_PENDING && util_now_ms() - j->since > STORE_TAKEOVER_S * 1000)
			r = STEP_EBUSY; /* the client asks again */
		if (r == STORE_PENDING || r == STEP_ECONNECT) {
			j->next = NULL;
			*tail = j;
			tail = &j->next;
			continue;
		}
		j->w->done(j->w, r, r == 0 ? md5 : NULL);
		upload_unref(s, j->u);
		j->u = NULL;
		job_free(j);
	}
	if (keep != NULL) {
		pthread_mutex_lock(&s->qmu);
		*tail = s->awaiting;
		s->awaiting = keep;
		pthread_mutex_unlock(&s->qmu);
	}
}

/*
 * The filesystem half of a batch's commits: finish each MD5, append the inline objects to
 * the pack, make the bytes durable, rename the temp files into obj/ and sync obj/. A job
 * that fails any step gets its err; the metadata then records only the others.
 */
static void
batch_files(struct store *s, struct store_job *batch)
{
	struct store_job *j;
	int ncommit = 0, nrenamed = 0;

	for (j = batch; j != NULL; j = j->next)
		if (j->kind == JOB_COMMIT)
			commit_open(s, j);
	commit_hash_many(batch);
	for (j = batch; j != NULL; j = j->next) {
		if (j->kind != JOB_COMMIT)
			continue;
		commit_finish(j);
		if (j->err == 0)
			ncommit++;
	}
	if (ncommit > 0)
		if (!s->mops->inline_in_meta)
			pack_write_batch(s, batch);
	if (ncommit > 0 && commit_sync(s, batch) != 0) {
		int e = err_from_errno(errno);

		log_warn("commit: sync failed");
		for (j = batch; j != NULL; j = j->next)
			if (j->kind == JOB_COMMIT && j->err == 0)
				j->err = e;
	} else if (s->pack_wrote[1] > 0) {
		/* Drop-behind, as for uploads: the batch's pack pages are clean now. Giving them
		 * back lets the next batch reuse warm pages instead of claiming fresh ones (on a
		 * VM, first touching a page costs several times the copy into it), and a backup
		 * does not push hotter data out of the cache. */
		posix_fadvise(pack_fd(s, s->pack_no, 0), (off_t)s->pack_wrote[0],
		    (off_t)s->pack_wrote[1], POSIX_FADV_DONTNEED);
	}
	s->pack_wrote[1] = 0;
	for (j = batch; j != NULL; j = j->next) {
		char from[128], to[128];

		if (j->kind != JOB_COMMIT || j->err != 0 || j->u->inl)
			continue;
		upload_fname(j->u, ".part", from, sizeof(from));
		upload_fname(j->u, "", to, sizeof(to));
		if (renameat(s->tmpfd, from, s->objfd, to) != 0) {
			log_warn("commit: rename '%s'", from);
			j->err = err_from_errno(errno);
			continue;
		}
		nrenamed++;
		/* Drop-behind, as for uploads: the object's pages are clean now, and warm pages
		 * for the next objects are cheaper than fresh ones. */
		posix_fadvise(j->u->fd, 0, 0, POSIX_FADV_DONTNEED);
	}
	if (nrenamed > 0 &&
	    (fault_hit(&s->ndirsync, s->fault_dirsync, "directory fsync")
	            ? (errno = s->fault_errno, 1)
	            : fsync(s->objfd) != 0)) {
		/* The new names may not survive a crash: the commits fail (their files are
		 * removed below, as renamed but not recorded). */
		int e = err_from_errno(errno);

		log_warn("commit: directory fsync");
		for (j = batch; j != NULL; j = j->next)
			if (j->kind == JOB_COMMIT && j->err == 0 && !j->u->inl)
				j->err = e;
	}
}

void
batch_run(struct store *s, struct store_job *batch)
{
	struct store_job *j, *next, *dead = NULL;

	batch_files(s, batch);
	s->mops->apply(s->meta, s, batch);

	/* Finished uploads leave the map under one lock for the whole batch (the lock every
	 * request takes); their waiters move to the job. */
	pthread_mutex_lock(&s->mu);
	for (j = batch; j != NULL; j = j->next) {
		if (j->kind != JOB_COMMIT)
			continue;
		if (map_find(s, j->u->id) == j->u) {
			map_remove(s, j->u);
			j->u->refs--;
		}
		j->u->state = UP_DEAD;
		j->w = j->u->waiters;
		j->u->waiters = NULL;
	}
	pthread_mutex_unlock(&s->mu);

	/* Answer first, clean up after: temp files of finished uploads are orphans on restart. */
	for (j = batch; j != NULL; j = j->next) {
		struct store_waiter *w, *wn;
		char name[128];

		switch (j->kind) {
		case JOB_COMMIT:
			if (j->err == STEP_ECONNECT && s->mops->shared && j->u->rid > 0)
				resolve_later(s, j->u);
			else if (j->err != 0 && !j->u->inl) {
				upload_fname(j->u, "", name, sizeof(name));
				unlinkat(s->objfd, name, 0); /* renamed but not recorded */
			}
			if (j->err == 0 && j->old_file[0] != '\0')
				obj_reclaim(s, j->old_file, j->old_size);
			for (w = j->w; w != NULL; w = wn) {
				wn = w->next;
				w->done(w, j->err, j->err == 0 ? j->md5 : NULL);
			}
			break;
		case JOB_DROP:
			break;
		case JOB_OBJ_DELETE:
			if (j->err == 0)
				obj_reclaim(s, j->file, j->size);
			/* fall through */
		default:
			if (j->w != NULL)
				j->w->done(j->w, j->err, NULL);
		}
	}
	for (j = batch; j != NULL; j = j->next)
		if (j->kind == JOB_COMMIT || j->kind == JOB_DROP)
			upload_unlink_files(s, j->u);
	/* An embedded job (put_obj) is its upload's memory: once the job's reference is
	 * dropped and the upload is still referenced elsewhere, it is not touched again. */
	pthread_mutex_lock(&s->mu);
	for (j = batch; j != NULL; j = next) {
		next = j->next;
		if (j->u != NULL && --j->u->refs > 0) {
			j->u = NULL; /* still referenced elsewhere */
			if (j->embedded)
				continue;
		}
		j->next = dead;
		dead = j;
	}
	pthread_mutex_unlock(&s->mu);
	for (j = dead; j != NULL; j = next) {
		struct store_upload *u = j->u; /* the last reference, or NULL */

		next = j->next;
		job_free(j); /* nothing for an embedded job: it goes with u */
		upload_free(u);
	}
}

/* The temp files of an upload named file ("<stem>.<gen>") that expired, or (reopen) the
 * file of one whose committing instance died, back from obj/ (expire's gone). */
static void
unlink_tmp(struct store *s, const char *file, int reopen)
{
	char name[128];

	if (strlen(file) != 81)
		return;
	if (reopen) {
		snprintf(name, sizeof(name), "%s.part", file);
		if (renameat(s->objfd, file, s->tmpfd, name) == 0)
			log_info(
			    "upload of '%.64s': its committing instance died; open again", file);
		return;
	}
	log_info("upload of '%.64s' expired", file);
	snprintf(name, sizeof(name), "%s.part", file);
	unlinkat(s->tmpfd, name, 0);
	snprintf(name, sizeof(name), "%s.map", file);
	unlinkat(s->tmpfd, name, 0);
}

/* Drops uploads that saw no block for upload_ttl seconds. */
static void
sweep_expired(struct store *s)
{
	int64_t now = util_wall_s();
	size_t b;

	pthread_mutex_lock(&s->mu);
	for (b = 0; b < MAP_BUCKETS; b++) {
		struct store_upload **pp = &s->map[b];

		while (*pp != NULL) {
			struct store_upload *u = *pp;

			if (u->state != UP_OPEN || u->writers > 0 ||
			    now - u->touched < s->o.upload_ttl) {
				pp = &u->hnext;
				continue;
			}
			*pp = u->hnext;
			u->hnext = NULL;
			ucount_add(s, u->user, -1);
			u->state = UP_DEAD;
			/* Shared metadata: only this instance's copy goes; the row expires by its
			 * own clock (expire below), which every instance's blocks move. */
			if (s->mops->shared) {
				if (--u->refs == 0)
					upload_free(u);
				continue;
			}
			log_info("upload of '%s' expired", u->stem);
			if (queue_upload_job(s, JOB_DROP, u) != 0)
				upload_unlink_files(s, u);
			if (--u->refs == 0)
				upload_free(u);
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (s->mops->shared)
		s->mops->expire(s->meta, s, s->o.upload_ttl, unlink_tmp);
}

void *
commit_main(void *arg)
{
	struct store *s = arg;
	int64_t interval_ms = s->o.upload_ttl * 1000 / 2;
	uint64_t next_sweep;

	if (interval_ms < 200)
		interval_ms = 200;
	if (interval_ms > 60000)
		interval_ms = 60000;
	next_sweep = util_now_ms() + (uint64_t)interval_ms;
	for (;;) {
		struct store_job *batch, *j;
		int n = 1, waited;

		pthread_mutex_lock(&s->qmu);
		waited = 0;
		while (s->qhead == NULL && !s->stop && util_now_ms() < next_sweep &&
		    !(waited && (s->awaiting != NULL || s->resolving != NULL))) {
			struct timespec ts;
			uint64_t wait_ms = next_sweep - util_now_ms();

			/* Waiting on another instance or on the metadata: look again soon. */
			if ((s->awaiting != NULL || s->resolving != NULL) && wait_ms > 100)
				wait_ms = 100;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += (time_t)(wait_ms / 1000);
			ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&s->qcond, &s->qmu, &ts);
			waited = 1;
		}
		if (s->qhead == NULL && s->stop) {
			pthread_mutex_unlock(&s->qmu);
			break;
		}
		batch = s->qhead;
		for (j = batch; j != NULL && j->next != NULL && n < BATCH_MAX; j = j->next)
			n++;
		if (j != NULL) {
			s->qhead = j->next;
			j->next = NULL;
			if (s->qhead == NULL)
				s->qtail = NULL;
		}
		pthread_mutex_unlock(&s->qmu);
		if (batch != NULL)
			batch_run(s, batch);
		if (s->resolving != NULL)
			resolve_run(s);
		if (s->awaiting != NULL)
			await_run(s);
		pthread_mutex_lock(&s->qmu);
		n = s->qhead != NULL;
		pthread_mutex_unlock(&s->qmu);
		s->mops->idle(s->meta, n);
		if (util_now_ms() >= next_sweep) {
			sweep_expired(s);
			next_sweep = util_now_ms() + (uint64_t)interval_ms;
		}
	}
	return NULL;
}

struct sync_wait {
	struct store_waiter w;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
};

static void
sync_done(struct store_waiter *w, int err, const char *md5hex)
{
	struct sync_wait *sw = (struct sync_wait *)w;

	pthread_mutex_lock(&sw->mu);
	sw->done = 1;
	pthread_cond_signal(&sw->cv);
	pthread_mutex_unlock(&sw->mu);
}

void
store_sync(struct store *s)
{
	struct sync_wait sw = { { sync_done, NULL }, PTHREAD_MUTEX_INITIALIZER,
		PTHREAD_COND_INITIALIZER, 0 };
	struct store_job *j = job_new(JOB_NOP);

	if (j == NULL)
		return;
	j->w = &sw.w;
	job_queue_push(s, j);
	pthread_mutex_lock(&sw.mu);
	while (!sw.done)
		pthread_cond_wait(&sw.cv, &sw.mu);
	pthread_mutex_unlock(&sw.mu);
	pthread_mutex_destroy(&sw.mu);
	pthread_cond_destroy(&sw.cv);
}
