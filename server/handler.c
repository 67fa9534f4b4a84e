/*
 * handler.c — STEP request validation in the reference order (§3), LOGIN, BYE, the status
 * table, reply helpers and deferred replies. Every request gets exactly one reply; nothing
 * here blocks on the network.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "codec.h"
#include "err.h"
#include "handler_priv.h"
#include "hash.h"
#include "log.h"
#include "step.h"

#define EARTH_MSG "DO NOT ANSWER! DO NOT ANSWER! DO NOT ANSWER!"

int
handler_status(int err)
{
	switch (err) {
	case STEP_OK:
		return STEP_ST_OK;
	case STEP_EPROTO:
		return STEP_ST_MISSING;
	case STEP_EAUTH:
		return STEP_ST_BADPASS;
	case STEP_EEXIST:
		return STEP_ST_EXISTS;
	case STEP_ENOENT:
		return STEP_ST_NOTFOUND;
	case STEP_EINVAL:
	case STEP_EMISMATCH:
		return STEP_ST_FIELD;
	case STEP_ETOOBIG:
		return STEP_ST_TOOLARGE;
	case STEP_EBUSY:
	case STEP_ECONNECT: /* the metadata database is unreachable or too slow: retry */
		return STEP_ST_UNAVAILABLE;
	case STEP_ENOSPC:
		return STEP_ST_NOSPACE;
	default: /* STEP_ENOMEM, STEP_EIO, STEP_ESYS, ... */
		return STEP_ST_INTERNAL;
	}
}

static const char *
status_text(int err)
{
	switch (err) {
	case STEP_ENOSPC:
		return "No space left on the server.";
	case STEP_ENOMEM:
		return "Server out of memory.";
	default:
		return "Internal server error.";
	}
}

json_t *
handler_reply(const char *type, const char *op, int status, const char *msg)
{
	json_t *o = json_object();

	if (o == NULL)
		return NULL;
	if (json_object_set_new(o, "type", json_string(type)) != 0 ||
	    json_object_set_new(o, "operation", json_string(op)) != 0 ||
	    json_object_set_new(o, "direction", json_string("RESPONSE")) != 0 ||
	    json_object_set_new(o, "status", json_integer(status)) != 0 ||
	    json_object_set_new(o, "status_msg", json_string(msg)) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int
handler_send(struct buf *out, const json_t *reply, uint32_t bin_len)
{
	static const char fallback[] =
	    "{\"type\":\"ERROR\",\"operation\":\"ERROR\",\"direction\":\"RESPONSE\","
	    "\"status\":500,\"status_msg\":\"Internal server error.\"}";
	uint8_t hdr[STEP_HDR_LEN];

	if (reply != NULL && codec_encode(reply, bin_len, out) == 0)
		return STEP_OK;
	codec_put_header(hdr, sizeof(fallback) - 1, 0);
	if (buf_append(out, hdr, sizeof(hdr)) != 0)
		return STEP_ENOMEM;
	if (buf_append(out, fallback, sizeof(fallback) - 1) != 0) {
		out->len -= sizeof(hdr);
		return STEP_ENOMEM;
	}
	return STEP_OK;
}

int
handler_send_pkt(struct buf *out, const struct handler_pkt *pkt)
{
	if (pkt != NULL && buf_append(out, pkt->data, pkt->len) == 0)
		return STEP_OK;
	return handler_send(out, NULL, 0);
}

int
handler_send_error(struct buf *out, int status, const char *msg)
{
	json_t *o = handler_reply("ERROR", "ERROR", status, msg);
	int r = handler_send(out, o, 0);

	json_decref(o);
	return r;
}

int
hreq_send(struct hreq *r, json_t *reply)
{
	handler_send(r->out, reply, 0);
	json_decref(reply);
	return HANDLER_DONE;
}

int
hreq_fail(struct hreq *r, int status, const char *msg)
{
	return hreq_send(r, handler_reply(r->type, r->op, status, msg));
}

json_t *
hreq_ok(struct hreq *r, const char *msg)
{
	return handler_reply(r->type, r->op, STEP_ST_OK, msg);
}

static void
make_uuid(char out[37])
{
	uint8_t b[16];
	char hex[33];

	if (hash_random(b, sizeof(b)) != 0)
		memset(b, 0x5a, sizeof(b)); /* cannot happen; keys stay unique per user anyway */
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	hash_to_hex(b, sizeof(b), hex);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

int
hreq_key(struct hreq *r, int optional, char uuidbuf[37], const char **key, size_t *len)
{
	int e = codec_get_str(r->req, "key", key, len);

	if (e == STEP_ENOENT && optional) {
		make_uuid(uuidbuf);
		*key = uuidbuf;
		*len = strlen(uuidbuf);
		return STEP_OK;
	}
	if (e == STEP_ENOENT) {
		hreq_fail(r, STEP_ST_FIELD, "Field \"key\" is missing.");
		return -1;
	}
	if (e != 0) {
		hreq_fail(r, STEP_ST_FIELD, "Field \"key\" must be a string.");
		return -1;
	}
	if (!store_key_valid(*key, *len)) {
		hreq_fail(r, STEP_ST_FIELD,
		    *len == 0                  ? "Field \"key\" is empty."
		        : *len > STORE_MAX_KEY ? "Field \"key\" is too long."
		                               : "Field \"key\" contains a NUL character.");
		return -1;
	}
	return STEP_OK;
}

static void
hpending_done(struct store_waiter *w, int err, const char *md5hex)
{
	struct hpending *p = (struct hpending *)w;
	json_t *reply = p->reply;

	p->reply = NULL;
	if (err == 0) {
		if (p->want_md5 && md5hex != NULL)
			json_object_set_new(reply, "md5", json_string(md5hex));
	} else {
		int status = err == STEP_ENOENT ? p->notfound : handler_status(err);
		const char *msg = err == STEP_EEXIST ? "The key already exists."
		    : err == STEP_ENOENT             ? "The key is not found."
		    : err == STEP_EMISMATCH ? "The uploaded content does not match the md5 "
		                              "declared at SAVE; the upload is discarded."
		                            : status_text(err);

		json_object_set_new(reply, "status", json_integer(status));
		json_object_set_new(reply, "status_msg", json_string(msg));
		json_object_del(reply, "md5");
	}
	p->h->post(p->h->post_arg, p->cookie, reply, NULL);
	free(p);
}

struct hpending *
hpending_new(struct hreq *r, json_t *reply, int notfound, int want_md5)
{
	struct hpending *p;

	if (reply == NULL || (p = calloc(1, sizeof(*p))) == NULL) {
		json_decref(reply);
		return NULL;
	}
	p->w.done = hpending_done;
	p->h = r->h;
	p->cookie = r->cookie;
	p->reply = reply;
	p->notfound = notfound;
	p->want_md5 = want_md5;
	return p;
}

void
hpending_free(struct hpending *p)
{
	if (p == NULL)
		return;
	json_decref(p->reply);
	free(p);
}

/*
 * The 200 answer to a LOGIN of user with token: the token, the server, the extensions and
 * (objgen) the store's id and user's obj_gen. NULL on allocation failure.
 */
static json_t *
login_reply(struct handler *h, const char *user, size_t ulen, const char *token)
{
	json_t *reply = handler_reply("AUTH", "LOGIN", STEP_ST_OK, "Login succeeded.");
	json_t *ext = json_pack("[sssssssss]", "resume", "block_md5", "list", "zero_size", "bye",
	    "putmany", "big_blocks", "objgen", "save_md5");
	char name[AUTH_MAX_USER + 1];
	int64_t gen = 0;

	if (reply == NULL || ext == NULL || ulen > AUTH_MAX_USER) {
		json_decref(reply);
		json_decref(ext);
		return NULL;
	}
	json_array_append_new(ext, json_string("any_block"));
	json_array_append_new(ext, json_string("replace"));
	json_array_append_new(ext, json_string("list_mtime"));
	json_object_set_new(reply, "token", json_string(token));
	json_object_set_new(reply, "server", json_string("stepd/" STEPD_VERSION));
	json_object_set_new(reply, "extensions", ext);
	memcpy(name, user, ulen);
	name[ulen] = '\0';
	if (h->st != NULL && store_obj_gen(h->st, name, &gen) == 0) {
		json_object_set_new(reply, "store_id", json_string(store_id(h->st)));
		json_object_set_new(reply, "obj_gen", json_integer((json_int_t)gen));
	}
	return reply;
}

/* A LOGIN waiting for a password thread. */
struct hlogin {
	struct handler *h;
	void *cookie;
	size_t ulen;
	char user[AUTH_MAX_USER + 1];
};

/* The reply to a LOGIN that did not succeed: 401, 429 (wait_s), 503 or 5xx. */
static json_t *
login_fail_reply(int e, unsigned wait_s)
{
	char msg[96];

	if (e == STEP_EAUTH)
		return handler_reply(
		    "AUTH", "LOGIN", STEP_ST_BADPASS, "Wrong username or password.");
	if (e == STEP_EAGAIN) {
		json_t *o;

		/* Throttled: nothing tells whether the password was right. */
		snprintf(msg, sizeof(msg), "too many failed logins; retry in %u s", wait_s);
		if ((o = handler_reply("AUTH", "LOGIN", STEP_ST_THROTTLE, msg)) != NULL)
			json_object_set_new(o, "retry_after", json_integer(wait_s));
		return o;
	}
	if (e == STEP_EBUSY)
		return handler_reply(
		    "AUTH", "LOGIN", STEP_ST_UNAVAILABLE, "Too many logins at once; try again.");
	return handler_reply("AUTH", "LOGIN", handler_status(e), status_text(e));
}

/* auth_done_fn: the password thread's answer, posted to the connection's worker. */
static void
login_done(void *arg, int err, char *token, unsigned wait_s)
{
	struct hlogin *l = arg;
	json_t *reply =
	    err == 0 ? login_reply(l->h, l->user, l->ulen, token) : login_fail_reply(err, wait_s);

	free(token);
	l->h->post(l->h->post_arg, l->cookie, reply, NULL);
	free(l);
}

static int
handle_login(struct hreq *r)
{
	const char *user, *pass;
	size_t ulen, plen;
	char *token = NULL;
	struct hlogin *l = NULL;
	unsigned wait_s = 0;
	json_t *reply;
	int e;

	if (strcmp(r->type, "AUTH") != 0)
		return hreq_fail(r, STEP_ST_TYPE, "LOGIN must have type AUTH.");
	if ((e = codec_get_str(r->req, "username", &user, &ulen)) != 0)
		return hreq_fail(r, STEP_ST_FIELD,
		    e == STEP_ENOENT ? "Field \"username\" is missing."
		                     : "Field \"username\" must be a string.");
	if ((e = codec_get_str(r->req, "password", &pass, &plen)) != 0)
		return hreq_fail(r, STEP_ST_FIELD,
		    e == STEP_ENOENT ? "Field \"password\" is missing."
		                     : "Field \"password\" must be a string.");
	/* PBKDF2 goes to a password thread; its answer comes back through post(). */
	if (r->h->post != NULL && ulen <= AUTH_MAX_USER && (l = calloc(1, sizeof(*l))) != NULL) {
		l->h = r->h;
		l->cookie = r->cookie;
		l->ulen = ulen;
		memcpy(l->user, user, ulen);
	}
	/* Wrong password and unknown user: one answer. */
	e = auth_login_start(r->h->au, user, ulen, pass, plen, r->peer, &token, &wait_s,
	    l != NULL ? login_done : NULL, l);
	if (e == AUTH_PENDING)
		return HANDLER_PENDING; /* l is login_done's */
	free(l);
	if (e != 0)
		return hreq_send(r, login_fail_reply(e, wait_s));
	reply = login_reply(r->h, user, ulen, token);
	free(token);
	r->h->authed = reply != NULL;
	return hreq_send(r, reply);
}

static int
str_in(const char *s, const char *const *set)
{
	for (; *set != NULL; set++)
		if (strcmp(s, *set) == 0)
			return 1;
	return 0;
}

/* The request's field as a string for echoing, or NULL when absent / not a string. */
static const char *
field_str(const json_t *req, const char *name)
{
	const char *s;
	size_t len;

	if (codec_get_str(req, name, &s, &len) != 0 || strlen(s) != len)
		return NULL;
	return s;
}

int
handler_token_ok(struct handler *h, const json_t *req)
{
	const char *token;
	size_t toklen;
	char *user = NULL;
	int ok;

	if (h->au == NULL || codec_get_str(req, "token", &token, &toklen) != 0)
		return 0;
	ok = auth_verify(h->au, token, toklen, &user) == 0;
	free(user);
	return ok;
}

int
handler_big_bin_ok(const json_t *req)
{
	const char *op = field_str(req, "operation"), *type = field_str(req, "type");

	return op != NULL && type != NULL && strcmp(op, "PUTMANY") == 0 &&
	    strcmp(type, "FILE") == 0;
}

int
handler_handle(struct handler *h, const json_t *req, const uint8_t *bin, size_t binlen,
    struct buf *out, void *cookie, const char *peer)
{
	static const char *const ops[] = { "LOGIN", "SAVE", "GET", "UPLOAD", "DOWNLOAD", "DELETE",
		"BYE", "LIST", "PUTMANY", NULL };
	static const char *const types[] = { "AUTH", "DATA", "FILE", NULL };
	static const char *const fields[] = { "operation", "direction", "type" };
	struct hreq r = { h, req, "ERROR", "ERROR", NULL, bin, binlen, out, cookie, peer };
	const char *op, *dir, *type, *token;
	char *user = NULL;
	size_t toklen, i;
	int ret;

	dir = field_str(req, "direction");
	if (dir != NULL && strcmp(dir, "EARTH") == 0)
		return hreq_send(&r, handler_reply("DANGEROUS", "3BODY", STEP_ST_EARTH, EARTH_MSG));
	for (i = 0; i < 3; i++) {
		if (json_object_get(req, fields[i]) == NULL) {
			char msg[64];

			snprintf(msg, sizeof(msg), "Compulsory field %s is missing.", fields[i]);
			return hreq_fail(&r, STEP_ST_MISSING, msg);
		}
	}
	op = field_str(req, "operation");
	type = field_str(req, "type");
	r.op = op != NULL && str_in(op, ops) ? op : "ERROR";
	r.type = type != NULL && str_in(type, types) ? type : "ERROR";
	if (dir == NULL || strcmp(dir, "REQUEST") != 0)
		return hreq_fail(&r, STEP_ST_DIRECTION, "Direction must be REQUEST.");
	if (op == NULL || !str_in(op, ops))
		return hreq_fail(&r, STEP_ST_OPERATION, "Operation is not allowed.");
	if (type == NULL || !str_in(type, types))
		return hreq_fail(&r, STEP_ST_TYPE, "Type is not allowed.");
	if (strcmp(op, "LOGIN") == 0)
		return handle_login(&r);
	if (strcmp(op, "BYE") == 0) {
		hreq_send(&r, hreq_ok(&r, "Bye."));
		return HANDLER_CLOSE;
	}
	if (codec_get_str(req, "token", &token, &toklen) != 0 ||
	    auth_verify(h->au, token, toklen, &user) != 0) {
		r.type = "AUTH";
		return hreq_fail(&r, STEP_ST_TOKEN, "Token is missing, invalid or expired.");
	}
	r.user = user;
	h->authed = 1;
	if (strcmp(type, "FILE") == 0)
		ret = handler_file(&r);
	else if (strcmp(type, "DATA") == 0)
		ret = handler_data(&r);
	else
		ret = hreq_fail(&r, STEP_ST_OPERATION, "Operation is not allowed for type AUTH.");
	free(user);
	return ret;
}
