/*
 * handler_data.c — DATA SAVE / GET / DELETE and LIST. A record is the request's data
 * fields only: the reserved fields of §2 (token included) are never stored, so a GET never
 * hands out someone's token.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "err.h"
#include "handler_priv.h"
#include "step.h"

static const char *const reserved[] = { "type", "operation", "direction", "status", "status_msg",
	"token", "username", "password", "key", "size", "block_size", "total_block", "block_index",
	"md5", NULL };

static int
is_reserved(const char *name)
{
	const char *const *p;

	for (p = reserved; *p != NULL; p++)
		if (strcmp(name, *p) == 0)
			return 1;
	return 0;
}

static int
data_save(struct hreq *r)
{
	struct hpending *p;
	const char *key, *name;
	char uuid[37];
	size_t keylen;
	json_t *rec, *v, *reply;
	char *text;
	int e;

	if (hreq_key(r, 1, uuid, &key, &keylen) != 0)
		return HANDLER_DONE;
	if (step_fault_alloc() || (rec = json_object()) == NULL)
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	json_object_foreach((json_t *)r->req, name, v)
	{
		if (!is_reserved(name))
			json_object_set(rec, name, v);
	}
	text = json_dumps(rec, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(rec);
	if (text == NULL)
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	if ((reply = hreq_ok_alloc(r, "The record is saved.")) == NULL ||
	    (p = hpending_alloc(r, reply, STEP_ST_NOTFOUND, 0)) == NULL) {
		free(text);
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	}
	json_object_set_new(p->reply, "key", json_stringn(key, keylen));
	e = store_data_save(r->h->st, r->user, key, keylen, text, &p->w);
	free(text);
	if (e == STORE_PENDING)
		return HANDLER_PENDING;
	hpending_free(p);
	if (e == STEP_EEXIST)
		return hreq_fail(r, STEP_ST_EXISTS, "The key already exists.");
	return hreq_fail(r, handler_status(e), "Cannot save the record.");
}

static int
data_get(struct hreq *r)
{
	const char *key, *name;
	size_t keylen;
	char *text = NULL;
	json_t *rec = NULL, *reply, *v;
	int e;

	if (hreq_key(r, 0, NULL, &key, &keylen) != 0)
		return HANDLER_DONE;
	e = store_data_get(r->h->st, r->user, key, keylen, &text);
	if (e == STEP_ENOENT)
		return hreq_fail(r, STEP_ST_NOTFOUND, "The key is not found.");
	if (e == 0)
		e = codec_decode_json((const uint8_t *)text, strlen(text), &rec, NULL, 0);
	free(text);
	if (e != 0)
		return hreq_fail(
		    r, handler_status(e == STEP_EPROTO ? STEP_EIO : e), "Cannot read the record.");
	if ((reply = hreq_ok_alloc(r, "OK")) == NULL) {
		json_decref(rec);
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	}
	json_object_foreach(rec, name, v)
	{
		if (!is_reserved(name))
			json_object_set(reply, name, v);
	}
	json_decref(rec);
	json_object_set_new(reply, "key", json_stringn(key, keylen));
	return hreq_send(r, reply);
}

static int
data_delete(struct hreq *r)
{
	struct hpending *p;
	const char *key;
	size_t keylen;
	json_t *reply;
	int e;

	if (hreq_key(r, 0, NULL, &key, &keylen) != 0)
		return HANDLER_DONE;
	if ((reply = hreq_ok_alloc(r, "The record is deleted.")) == NULL ||
	    (p = hpending_alloc(r, reply, STEP_ST_NOTFOUND, 0)) == NULL)
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	json_object_set_new(p->reply, "key", json_stringn(key, keylen));
	e = store_data_delete(r->h->st, r->user, key, keylen, &p->w);
	if (e == STORE_PENDING)
		return HANDLER_PENDING;
	hpending_free(p);
	if (e == STEP_ENOENT)
		return hreq_fail(r, STEP_ST_NOTFOUND, "The key is not found.");
	return hreq_fail(r, handler_status(e), "Cannot delete the record.");
}

int
handler_data(struct hreq *r)
{
	if (strcmp(r->op, "SAVE") == 0)
		return data_save(r);
	if (strcmp(r->op, "GET") == 0)
		return data_get(r);
	if (strcmp(r->op, "DELETE") == 0)
		return data_delete(r);
	if (strcmp(r->op, "LIST") == 0)
		return handler_list(r, 1);
	return hreq_fail(r, STEP_ST_OPERATION, "Operation is not allowed for type DATA.");
}
