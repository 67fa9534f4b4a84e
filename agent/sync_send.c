/*
 * sync_send.c — the sync engine's chunks and trees: each new one handed to the sender (sender.h)
 * once, what comes back recorded in the objects table.
 */
#include "sync_int.h"

/* ---- snapshot format 2: chunks, trees and their uploads ---- */

static size_t
idset_pos(const struct idset *set, const uint8_t id[HASH_SHA256_LEN])
{
	uint64_t h;

	memcpy(&h, id, sizeof(h)); /* a SHA-256: its bytes are as good as any hash */
	return (size_t)h & (set->cap - 1);
}

int
sync_idset_has(const struct idset *set, const uint8_t id[HASH_SHA256_LEN])
{
	static const uint8_t zero[HASH_SHA256_LEN];
	size_t i;

	if (set->cap == 0)
		return 0;
	for (i = idset_pos(set, id); memcmp(set->slot[i], zero, HASH_SHA256_LEN) != 0;
	     i = (i + 1) & (set->cap - 1))
		if (memcmp(set->slot[i], id, HASH_SHA256_LEN) == 0)
			return 1;
	return 0;
}

void
sync_idset_add(struct idset *set, const uint8_t id[HASH_SHA256_LEN])
{
	static const uint8_t zero[HASH_SHA256_LEN];
	size_t i;

	if (2 * (set->n + 1) > set->cap) {
		struct idset q = { xcalloc(set->cap ? 2 * set->cap : 1024, HASH_SHA256_LEN),
			set->cap ? 2 * set->cap : 1024, 0 };

		for (i = 0; i < set->cap; i++)
			if (memcmp(set->slot[i], zero, HASH_SHA256_LEN) != 0)
				sync_idset_add(&q, set->slot[i]);
		free(set->slot);
		*set = q;
	}
	for (i = idset_pos(set, id); memcmp(set->slot[i], zero, HASH_SHA256_LEN) != 0;
	     i = (i + 1) & (set->cap - 1))
		;
	memcpy(set->slot[i], id, HASH_SHA256_LEN);
	set->n++;
}

/* 1 when the object key o.<hex> was handed to the sender this run. */
int
sync_queued_key(struct sync_job *s, const char *okey)
{
	uint8_t id[HASH_SHA256_LEN];

	return manifest_is_object_key(okey) && util_hex_decode(okey + 2, id, sizeof(id)) == 0 &&
	    sync_idset_has(&s->queued, id);
}

/* Records one finished chunk or tree upload (in the caller's transaction). */
static int
sent_done(void *arg, const struct sender_done *d)
{
	struct sync_job *s = arg;

	if (d->rc != 0) {
		if (sync_is_transport(d->rc) || d->rc == STEP_ESTOPPED) {
			sync_set_fatal(s, d->rc == STEP_ESTOPPED ? STEP_ECLOSED : d->rc,
			    "cannot upload", d->error);
			return 0;
		}
		agent_error("cannot upload object %s: %s", d->key,
		    *d->error ? d->error : step_strerror(d->rc));
		s->upload_failed++;
		return 0;
	}
	s->blocks_sent += d->blocks_sent;
	if (d->tag == SEND_FILE) {
		if (d->existed) {
			s->existed++;
		} else {
			s->sent++;
			s->sent_bytes += d->size;
		}
	} else if (!d->existed && d->tag == SEND_CHUNK) {
		s->sent_bytes += d->size;
		s->chunks_sent++;
	} else if (!d->existed) {
		s->tree_bytes_sent += d->size;
		s->trees_sent++;
	}
	/* The objects table sums file content (status: bytes sent); a tree counts as 0. */
	return files_object_add(s->files, d->key, d->tag != SEND_TREE ? d->size : 0, d->md5);
}

int
sync_collect_sent(struct sync_job *s)
{
	return s->snd != NULL ? sender_collect(s->snd, sent_done, s) : 0;
}

/* Whether sync_send_object would send id now: 1 (key set to its key), 0, or a database
 * error. */
int
sync_send_wanted(
    struct sync_job *s, const uint8_t id[HASH_SHA256_LEN], int tag, char key[MANIFEST_KEY_MAX + 1])
{
	int r;

	if (sync_idset_has(&s->queued, id))
		return 0;
	if (tag == SEND_TREE)
		manifest_tree_key(id, key, MANIFEST_KEY_MAX + 1);
	else
		manifest_object_key(id, key, MANIFEST_KEY_MAX + 1);
	if ((r = files_object_known(s->files, key)) != 0)
		return r < 0 ? r : 0;
	if ((r = sync_pend_has(s, key, sync_pend_fp(key))) != 0)
		return r < 0 ? r : 0;
	return 1;
}

/*
 * Sends the object id (len bytes at data; copied) unless the server is known to hold it or
 * this run queued it already. *newp is 1 when it was queued now. In a dry run nothing is
 * sent, only counted.
 */
int
sync_send_object(struct sync_job *s, const uint8_t id[HASH_SHA256_LEN], const uint8_t *data,
    size_t len, const char *md5, int tag, int *newp)
{
	char key[MANIFEST_KEY_MAX + 1];
	uint8_t *copy;
	int r;

	*newp = 0;
	if ((r = sync_send_wanted(s, id, tag, key)) <= 0)
		return r;
	sync_idset_add(&s->queued, id);
	*newp = 1;
	if (s->snd == NULL)
		return 0;
	copy = xmalloc(len ? len : 1);
	memcpy(copy, data, len);
	if ((r = sender_put(s->snd, key, copy, len, md5, tag)) != 0) {
		(void)sync_collect_sent(s); /* says why */
		if (s->fatal == 0)
			sync_set_fatal(s, r, "cannot upload", NULL);
		return r;
	}
	return sync_collect_sent(s);
}

/* A finished tree from the builder: sent unless known. */
int
sync_tree_emit(void *arg, const uint8_t id[HASH_SHA256_LEN], const uint8_t *data, size_t len)
{
	struct sync_job *s = arg;
	int r, isnew;

	if ((r = sync_send_object(s, id, data, len, NULL, SEND_TREE, &isnew)) != 0)
		return r;
	if (isnew) {
		s->trees_new++;
		s->tree_bytes_new += len;
	}
	return 0;
}

/* The sender of chunks and trees: --connections sessions, at least SYNC_CHUNK_CONN. */
int
sync_sender_start(struct sync_job *s)
{
	struct client_opts o;
	char errbuf[256];
	int r, nconn = s->a->connections > SYNC_CHUNK_CONN ? s->a->connections : SYNC_CHUNK_CONN;

	if ((r = agent_client_opts(s->a, &o, errbuf, sizeof(errbuf))) != 0) {
		sync_set_fatal(s, r, "cannot connect", errbuf);
		return r;
	}
	o.outage_ms = SYNC_OUTAGE_MS;
	if ((r = sender_new(&o, nconn, SYNC_SEND_BUDGET, &s->snd)) != 0)
		sync_set_fatal(s, r, "cannot connect", step_strerror(r));
	return r;
}

/* After the scan: waits for the chunks and trees in flight, records them, and, when every
 * upload of the run succeeded, marks the chunk lists read this run as known. */
int
sync_sender_finish(struct sync_job *s)
{
	size_t i;
	int r;

	if (s->snd == NULL)
		return 0;
	sender_wait(s->snd);
	if ((r = db_begin(s->db)) != 0)
		return r;
	r = sync_collect_sent(s);
	for (i = 0; r == 0 && s->fatal == 0 && s->upload_failed == 0 && i < s->nnewlists; i++)
		r = files_object_add(s->files, s->newlists[i], 0, "");
	if (r != 0) {
		db_rollback(s->db);
		return r;
	}
	if ((r = db_commit(s->db)) != 0)
		return r;
	return s->fatal != 0 ? s->fatal : 0;
}
