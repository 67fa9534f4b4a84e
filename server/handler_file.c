/*
 * handler_file.c — FILE SAVE / UPLOAD / GET / DOWNLOAD / DELETE and LIST, in the field
 * check order of STEP-PROTOCOL.md §4, over the store. Wrong JSON types are 410, never a
 * crash; replies that need a durable commit are deferred (hpending).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>

#include "codec.h"
#include "err.h"
#include "handler_priv.h"
#include "hash.h"
#include "step.h"
#include "util.h"

/* Adds key and the plan fields to reply. */
static void
put_plan(json_t *reply, const char *key, size_t keylen, uint64_t size, uint32_t bs, uint64_t total)
{
	json_object_set_new(reply, "key", json_stringn(key, keylen));
	json_object_set_new(reply, "size", json_integer((json_int_t)size));
	json_object_set_new(reply, "block_size", json_integer(bs));
	json_object_set_new(reply, "total_block", json_integer((json_int_t)total));
}

/*
 * The answer to a SAVE the store returned e for (not STORE_PENDING): reply (a 200 holding
 * the key, stolen) completed with plan (whose ranges are freed), or an error reply.
 */
static json_t *
save_reply(json_t *reply, int e, struct store_plan *plan)
{
	const char *msg = "Cannot create the upload.";
	json_t *ranges;
	size_t i;
	int st = handler_status(e);

	if (e == 0) {
		json_object_set_new(reply, "size", json_integer((json_int_t)plan->size));
		json_object_set_new(reply, "block_size", json_integer(plan->block_size));
		json_object_set_new(
		    reply, "total_block", json_integer((json_int_t)plan->total_block));
		json_object_set_new(reply, "upload_id", json_string(plan->upload_id));
		if ((ranges = json_array()) != NULL) {
			for (i = 0; i < plan->nranges; i++)
				json_array_append_new(ranges,
				    json_pack("[II]", (json_int_t)plan->ranges[i][0],
				        (json_int_t)plan->ranges[i][1]));
			json_object_set_new(reply, "received", ranges);
		}
		if (plan->ranges_cut)
			json_object_set_new(reply, "received_more", json_true());
		free(plan->ranges);
		return reply;
	}
	json_decref(reply);
	if (e == STORE_RETRY) {
		st = STEP_ST_UNAVAILABLE;
		msg = "The key is being committed on another instance; retry.";
	} else if (e == STORE_LOCKED) {
		st = STEP_ST_LOCKED;
		msg = "An upload of this key by another client is in progress; retry later.";
	} else if (e == STEP_EEXIST) {
		msg = "The key already exists.";
	} else if (e == STEP_ETOOBIG) {
		msg = "The file is too large.";
	} else if (e == STEP_EBUSY) {
		st = STEP_ST_THROTTLE;
		msg = "Too many uploads in progress for this user; finish or delete some first.";
	}
	return handler_reply("FILE", "SAVE", st, msg);
}

/* A SAVE the store answers later (store_save_may_defer). */
struct save_pending {
	struct store_waiter w;
	struct handler *h;
	void *cookie;
	json_t *reply; /* the 200 reply with the key */
	struct store_plan plan;
};

static void
save_done(struct store_waiter *w, int err, const char *md5hex)
{
	struct save_pending *sp = (struct save_pending *)w;

	sp->h->post(sp->h->post_arg, sp->cookie, save_reply(sp->reply, err, &sp->plan), NULL);
	free(sp);
}

/* Reads SAVE's optional fields: 0, or a reply has been sent (410) and -1 is returned. */
static int
save_fields(struct hreq *r, long long *want, char md5low[33], const char **uid)
{
	const char *md5 = NULL;
	size_t i, mlen = 0, ulen = 0;
	int e;

	/* big_blocks extension: the largest block the client takes; anything else is ignored. */
	if (codec_get_int(r->req, "want_block_size", want) != 0 || *want < 0 || *want > UINT32_MAX)
		*want = 0;
	/* save_md5 extension: the whole file's MD5, which the commit must match. */
	if ((e = codec_get_str(r->req, "md5", &md5, &mlen)) != STEP_ENOENT) {
		if (e != 0 || mlen != 32 || strspn(md5, "0123456789abcdefABCDEF") != 32) {
			hreq_fail(r, STEP_ST_FIELD, "Field \"md5\" must be 32 hexadecimal digits.");
			return -1;
		}
		for (i = 0; i < 32; i++)
			md5low[i] = (char)tolower((unsigned char)md5[i]);
		md5low[32] = '\0';
	}
	if ((e = codec_get_str(r->req, "upload_id", uid, &ulen)) != STEP_ENOENT &&
	    (e != 0 || strlen(*uid) != ulen)) {
		hreq_fail(r, STEP_ST_FIELD, "Field \"upload_id\" must be a string.");
		return -1;
	}
	if (e != 0)
		*uid = NULL;
	return 0;
}

static int
file_save(struct hreq *r)
{
	struct store_plan plan, *pl = &plan;
	struct hpending *p = NULL;
	struct save_pending *sp = NULL;
	struct store_waiter *w = NULL;
	const char *key, *uid = NULL;
	char uuid[37], md5low[33] = "";
	size_t keylen;
	long long size, want = 0;
	json_t *reply;
	int e, rep;

	if ((e = codec_get_int(r->req, "size", &size)) != 0)
		return hreq_fail(r, STEP_ST_FIELD,
		    e == STEP_ENOENT ? "Field \"size\" is missing."
		                     : "Field \"size\" must be an integer.");
	if (size < 0)
		return hreq_fail(r, STEP_ST_FIELD, "Field \"size\" must not be negative.");
	if (hreq_key(r, 1, uuid, &key, &keylen) != 0 || save_fields(r, &want, md5low, &uid) != 0)
		return HANDLER_DONE;
	/* replace extension: an existing object of the key is replaced when this commits. */
	rep = json_is_true(json_object_get(r->req, "replace"));
	if ((reply = hreq_ok_alloc(r, "Upload plan created.")) == NULL)
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	if (size == 0 && (p = hpending_alloc(r, json_incref(reply), STEP_ST_NOTFOUND, 1)) == NULL) {
		json_decref(reply);
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	}
	if (p != NULL) {
		put_plan(p->reply, key, keylen, 0, 0, 0);
		w = &p->w;
	}
	json_object_set_new(reply, "key", json_stringn(key, keylen));
	if (size > 0 && store_save_may_defer(r->h->st)) {
		if (step_fault_alloc() || (sp = calloc(1, sizeof(*sp))) == NULL) {
			json_decref(reply);
			return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
		}
		*sp = (struct save_pending){ { save_done, NULL }, r->h, r->cookie, reply, { 0 } };
		w = &sp->w;
		pl = &sp->plan;
	}
	e = store_file_save_rep(r->h->st, r->user, key, keylen, (uint64_t)size, (uint32_t)want, uid,
	    md5low[0] != '\0' ? md5low : NULL, rep, pl, w);
	if (e == STORE_PENDING && p != NULL) {
		json_object_set_new(p->reply, "block_size", json_integer(plan.block_size));
		json_object_set_new(p->reply, "received", json_array());
		json_decref(reply);
		return HANDLER_PENDING; /* p is the store's until done() */
	}
	if (e == STORE_PENDING)
		return HANDLER_PENDING_SAVE; /* sp is the store's until save_done() */
	hpending_free(p);
	if (sp != NULL) {
		plan = sp->plan;
		free(sp);
	}
	return hreq_send(r, save_reply(reply, e, &plan));
}

/* Gets block_index: 0, or a reply has been sent (410) and -1 is returned. */
static int
get_index(struct hreq *r, long long *idx)
{
	int e = codec_get_int(r->req, "block_index", idx);

	if (e == 0)
		return 0;
	hreq_fail(r, STEP_ST_FIELD,
	    e == STEP_ENOENT ? "Field \"block_index\" is missing."
	                     : "Field \"block_index\" must be an integer.");
	return -1;
}

static int
file_upload(struct hreq *r)
{
	struct store_upload *u = NULL;
	struct hpending *p;
	const char *key, *bmd5, *uid;
	uint64_t size, total, want;
	uint32_t bs;
	size_t keylen, mlen;
	long long idx;
	json_t *reply;
	int e, ret;

	if (hreq_key(r, 0, NULL, &key, &keylen) != 0)
		return HANDLER_DONE;
	e = store_upload_get(r->h->st, r->user, key, keylen, &u);
	if (e == STEP_EEXIST)
		return hreq_fail(r, STEP_ST_EXISTS, "The file is already completely uploaded.");
	if (e == STEP_ENOENT)
		return hreq_fail(r, STEP_ST_OPERATION, "No upload in progress for this key.");
	if (e != 0)
		return hreq_fail(r, handler_status(e), "Cannot look the upload up.");
	store_upload_plan(u, &size, &bs, &total);
	/* save_md5 extension: blocks meant for an upload that has since been started over (by
	 * another session) never land in the new one. */
	if ((e = codec_get_str(r->req, "upload_id", &uid, &mlen)) != STEP_ENOENT &&
	    (e != 0 || strlen(uid) != mlen || !store_upload_is(u, uid))) {
		ret = hreq_fail(r, STEP_ST_LOCKED,
		    "The upload_id is not the upload in progress (started over by another "
		    "client).");
		goto out;
	}
	if (get_index(r, &idx) != 0) {
		ret = HANDLER_DONE;
		goto out;
	}
	if (idx >= 0 && (uint64_t)idx >= total) {
		ret = hreq_fail(r, STEP_ST_INDEX, "The block_index is beyond the last block.");
		goto out;
	}
	if (idx < 0) {
		ret = hreq_fail(r, STEP_ST_FIELD, "The block_index must not be negative.");
		goto out;
	}
	want = (uint64_t)idx + 1 < total ? bs : size - (uint64_t)bs * (total - 1);
	if (r->binlen != want) {
		ret = hreq_fail(r, STEP_ST_LENGTH, "The block has the wrong length.");
		goto out;
	}
	e = codec_get_str(r->req, "block_md5", &bmd5, &mlen);
	if (e == STEP_EINVAL) {
		ret = hreq_fail(r, STEP_ST_FIELD, "Field \"block_md5\" must be a string.");
		goto out;
	}
	if (e == 0) {
		char got[HASH_MD5_HEX];

		hash_md5_hex(r->bin, r->binlen, got);
		if (mlen != 32 || strncasecmp(got, bmd5, 32) != 0) {
			ret = hreq_fail(r, STEP_ST_FIELD, "block_md5 mismatch");
			goto out;
		}
	}
	if ((reply = hreq_ok_alloc(r, "The block is uploaded.")) == NULL ||
	    (p = hpending_alloc(r, reply, STEP_ST_OPERATION, 1)) == NULL) {
		ret = hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
		goto out;
	}
	json_object_set_new(p->reply, "key", json_stringn(key, keylen));
	json_object_set_new(p->reply, "block_index", json_integer(idx));
	e = store_upload_write(r->h->st, u, (uint64_t)idx, r->bin, r->binlen, &p->w);
	if (e == STORE_PENDING) {
		ret = HANDLER_PENDING;
		goto out;
	}
	if (e == 0) {
		ret = hreq_send(r, json_incref(p->reply));
	} else if (e == STEP_ENOENT) {
		ret = hreq_fail(r, STEP_ST_OPERATION, "No upload in progress for this key.");
	} else {
		ret = hreq_fail(r, handler_status(e),
		    e == STEP_ENOSPC ? "No space left on the server." : "Cannot store the block.");
	}
	hpending_free(p);
out:
	store_upload_put(r->h->st, u);
	return ret;
}

/* Looks the object up for GET and DOWNLOAD: 0, or a 404/5xx reply was sent (-1). */
static int
lookup(struct hreq *r, const char *key, size_t keylen, struct store_obj *o)
{
	int e = store_object_get(r->h->st, r->user, key, keylen, o);

	if (e == 0)
		return 0;
	if (e == STEP_EBUSY)
		hreq_fail(r, STEP_ST_NOTFOUND, "The file is not completely uploaded.");
	else if (e == STORE_RETRY)
		hreq_fail(r, STEP_ST_UNAVAILABLE,
		    "The file is being committed on another instance; retry.");
	else if (e == STEP_ENOENT)
		hreq_fail(r, STEP_ST_NOTFOUND, "The key is not found.");
	else
		hreq_fail(r, handler_status(e), "Cannot read the object.");
	return -1;
}

/*
 * The any_block extension: the integer field name when it is 1..HANDLER_ANY_BLOCK_MAX,
 * else def (absent or anything else: today's behaviour, as a client that does not know the
 * extension expects).
 */
static uint32_t
opt_block_size(struct hreq *r, const char *name, uint32_t def)
{
	long long v;

	if (codec_get_int(r->req, name, &v) != 0 || v < 1 || v > HANDLER_ANY_BLOCK_MAX)
		return def;
	return (uint32_t)v;
}

static int
file_get(struct hreq *r)
{
	struct store_obj o;
	uint32_t bs;
	const char *key;
	size_t keylen;
	json_t *reply;

	if (hreq_key(r, 0, NULL, &key, &keylen) != 0 || lookup(r, key, keylen, &o) != 0)
		return HANDLER_DONE;
	if ((reply = hreq_ok_alloc(r, "OK")) == NULL)
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	/* any_block extension: the plan in blocks of the size the client wants. */
	bs = opt_block_size(r, "want_block_size", o.block_size);
	put_plan(reply, key, keylen, o.size, bs, (o.size + bs - 1) / bs);
	json_object_set_new(reply, "md5", json_string(o.md5));
	return hreq_send(r, reply);
}

static int
file_download(struct hreq *r)
{
	struct store_obj o;
	uint32_t bs;
	const char *key;
	size_t keylen, mark;
	uint64_t total, len;
	long long idx;
	json_t *reply;
	int e;

	if (hreq_key(r, 0, NULL, &key, &keylen) != 0 || lookup(r, key, keylen, &o) != 0 ||
	    get_index(r, &idx) != 0)
		return HANDLER_DONE;
	/* any_block extension: block_index counts blocks of the size the client names. */
	bs = opt_block_size(r, "block_size", o.block_size);
	total = (o.size + bs - 1) / bs;
	if (idx < 0 || (uint64_t)idx >= total)
		return hreq_fail(r, STEP_ST_FIELD, "The block_index is out of range.");
	len = (uint64_t)idx + 1 < total ? bs : o.size - (uint64_t)bs * (total - 1);
	if ((reply = hreq_ok_alloc(r, "OK")) == NULL)
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	json_object_set_new(reply, "key", json_stringn(key, keylen));
	json_object_set_new(reply, "block_index", json_integer(idx));
	json_object_set_new(reply, "size", json_integer((json_int_t)len));
	mark = r->out->len;
	e = codec_encode(reply, (uint32_t)len, r->out);
	json_decref(reply);
	if (e == 0)
		e = step_fault_alloc() ? STEP_ENOMEM : buf_reserve(r->out, (size_t)len);
	if (e == 0)
		e = store_object_read(
		    r->h->st, &o, (uint64_t)idx * bs, buf_tail(r->out), (size_t)len);
	if (e == 0) {
		buf_commit(r->out, (size_t)len);
		return HANDLER_DONE;
	}
	/* Roll the half-made packet back; answer the error instead. */
	r->out->len = mark < r->out->off ? r->out->off : mark;
	if (e == STEP_ENOENT)
		return hreq_fail(r, STEP_ST_NOTFOUND, "The key is not found.");
	return hreq_fail(r, handler_status(e), "Cannot read the object.");
}

static int
file_delete(struct hreq *r)
{
	struct hpending *p;
	const char *key;
	size_t keylen;
	json_t *reply;
	int e;

	if (hreq_key(r, 0, NULL, &key, &keylen) != 0)
		return HANDLER_DONE;
	if ((reply = hreq_ok_alloc(r, "The file is deleted.")) == NULL ||
	    (p = hpending_alloc(r, reply, STEP_ST_NOTFOUND, 0)) == NULL)
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	json_object_set_new(p->reply, "key", json_stringn(key, keylen));
	e = store_file_delete(r->h->st, r->user, key, keylen, &p->w);
	if (e == STORE_PENDING)
		return HANDLER_PENDING;
	hpending_free(p);
	if (e == STORE_TMP_DELETED)
		return hreq_fail(r, STEP_ST_NOTFOUND,
		    "The file is not completely uploaded. The tmp files are deleted.");
	if (e == STEP_EBUSY)
		return hreq_fail(r, STEP_ST_NOTFOUND, "The file is being committed; try again.");
	if (e == STEP_ENOENT)
		return hreq_fail(r, STEP_ST_NOTFOUND, "The key is not found.");
	return hreq_fail(r, handler_status(e), "Cannot delete the file.");
}

/* A LIST answer's arrays: the keys and (list_mtime) their commit times, or NULL. */
struct list_out {
	json_t *keys, *mtimes;
};

static int
list_add(void *arg, const char *key, size_t keylen, int64_t mtime)
{
	struct list_out *o = arg;

	if (json_array_append_new(o->keys, json_stringn(key, keylen)) != 0 ||
	    (o->mtimes != NULL &&
	        json_array_append_new(o->mtimes, json_integer((json_int_t)mtime)) != 0))
		return STEP_ENOMEM;
	return 0;
}

int
handler_list(struct hreq *r, int data)
{
	const char *prefix = "", *after = "";
	size_t plen = 0, alen = 0;
	long long limit = 1000;
	struct list_out o = { NULL, NULL };
	json_t *mt, *reply;
	int64_t gen = 0;
	int e, more = 0;

	if (codec_get_str(r->req, "prefix", &prefix, &plen) == STEP_EINVAL ||
	    codec_get_str(r->req, "after", &after, &alen) == STEP_EINVAL)
		return hreq_fail(
		    r, STEP_ST_FIELD, "Fields \"prefix\" and \"after\" must be strings.");
	e = codec_get_int(r->req, "limit", &limit);
	if (e == STEP_EINVAL || limit < 1 || limit > 10000)
		return hreq_fail(r, STEP_ST_FIELD, "Field \"limit\" must be an integer 1..10000.");
	/* list_mtime: FILE only (records have no times); null is absent, as for the others. */
	mt = data ? NULL : json_object_get(r->req, "mtimes");
	if (mt != NULL && !json_is_null(mt) && !json_is_boolean(mt))
		return hreq_fail(r, STEP_ST_FIELD, "Field \"mtimes\" must be a boolean.");
	if ((o.keys = json_array()) == NULL ||
	    (json_is_true(mt) && (o.mtimes = json_array()) == NULL)) {
		json_decref(o.keys);
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	}
	/* objgen: read before the listing, so a removal after it shows as a newer gen. */
	if ((e = store_obj_gen(r->h->st, r->user, &gen)) == 0)
		e = store_list(
		    r->h->st, r->user, data, prefix, plen, after, alen, limit, list_add, &o, &more);
	if (e != 0 || (reply = hreq_ok_alloc(r, "OK")) == NULL) {
		json_decref(o.keys);
		json_decref(o.mtimes);
		return e != 0 ? hreq_fail(r, handler_status(e), "Cannot list keys.")
		              : hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	}
	json_object_set_new(reply, "keys", o.keys);
	json_object_set_new(reply, "more", json_boolean(more));
	json_object_set_new(reply, "obj_gen", json_integer((json_int_t)gen));
	/* list_mtime: the server's clock after the listing, so no listed mtime is later. */
	if (o.mtimes != NULL) {
		json_object_set_new(reply, "mtimes", o.mtimes);
		json_object_set_new(reply, "now", json_integer((json_int_t)util_wall_s()));
	}
	return hreq_send(r, reply);
}

int
handler_file(struct hreq *r)
{
	if (strcmp(r->op, "SAVE") == 0)
		return file_save(r);
	if (strcmp(r->op, "UPLOAD") == 0)
		return file_upload(r);
	if (strcmp(r->op, "GET") == 0)
		return file_get(r);
	if (strcmp(r->op, "DOWNLOAD") == 0)
		return file_download(r);
	if (strcmp(r->op, "DELETE") == 0)
		return file_delete(r);
	if (strcmp(r->op, "LIST") == 0)
		return handler_list(r, 0);
	if (strcmp(r->op, "PUTMANY") == 0)
		return handler_putmany(r);
	return hreq_fail(r, STEP_ST_OPERATION, "Operation is not allowed for type FILE.");
}
