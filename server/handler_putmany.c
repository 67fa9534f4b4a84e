/*
 * handler_putmany.c — the PUTMANY extension (FILE): many complete one-block objects in one
 * request, their contents concatenated in the binary part, committed together by one
 * store_put_many() and answered once, after every stored object is durable, with one
 * status per object in request order. A client that gets anything but 200 for an object
 * sends that one the ordinary way (SAVE + UPLOAD), so nothing here needs to be clever.
 * MD5s are computed here, before the store takes any lock; the store never sees an object
 * whose bytes do not match the MD5 the client announced.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "err.h"
#include "handler_priv.h"
#include "hash.h"
#include "log.h"
#include "md5.h"
#include "step.h"
#include "util.h"

struct putmany;

/* One object of the request: its answer, and the waiter the store calls for it. */
struct pm_entry {
	struct store_waiter w; /* first: done() gets &w */
	struct putmany *pm;
	int status;             /* STEP status of this object, 0 while pending */
	char md5[HASH_MD5_HEX]; /* of the bytes received */
};

/*
 * The request until its reply is sent. left counts the stored objects still pending plus
 * one held by the handler while it runs; whoever brings it to zero sends the reply (the
 * handler directly, or the commit thread through h->post).
 */
struct putmany {
	struct handler *h;
	void *cookie;
	json_t *reply; /* the 200 reply, without results */
	size_t n;
	atomic_size_t left;
	struct pm_entry e[]; /* n of them */
};

static int
item_status(int err)
{
	if (err == STEP_EBUSY)
		return STEP_ST_LOCKED; /* an upload of the key is in progress: SAVE/UPLOAD it */
	return handler_status(err);
}

/* Writes v in decimal at p; returns the end. */
static char *
put_int(char *p, int v)
{
	if (v < 0)
		*p++ = '-';
	return util_put_u64(p, v < 0 ? 0u - (unsigned)v : (unsigned)v);
}

/*
 * The reply packet with its results (pm is freed): pm->reply's text with
 * ,"results":[{"status":S,"md5":"..."},{"status":S},...] spliced in before its closing brace,
 * the very bytes the encoder writes for the whole object, without building an object per
 * result. NULL when it cannot be built: the connection then sends a bare 500 and the client
 * sends every object again the ordinary way.
 */
static struct handler_pkt *
pm_finish(struct putmany *pm)
{
	static const char open[] = ",\"results\":[", st[] = "{\"status\":", md5[] = ",\"md5\":\"";
	/* One result at most: {"status":-2147483648,"md5":"<32>"}, */
	const size_t item_max = sizeof(st) - 1 + 11 + sizeof(md5) - 1 + HASH_MD5_HEX - 1 + 3;
	struct handler_pkt *pkt = NULL;
	struct buf head;
	size_t i, hlen;
	char *p;

	buf_init(&head, STEP_MAX_JSON);
	if (codec_encode(pm->reply, 0, &head) != 0 ||
	    (hlen = buf_avail(&head)) < STEP_HDR_LEN + 2 ||
	    (pkt = malloc(sizeof(*pkt) + hlen + sizeof(open) + pm->n * item_max + 2)) == NULL)
		goto out;
	/* The object's text without its closing brace. */
	memcpy(pkt->data, buf_ptr(&head), hlen - 1);
	p = (char *)pkt->data + hlen - 1;
	memcpy(p, open, sizeof(open) - 1);
	p += sizeof(open) - 1;
	for (i = 0; i < pm->n; i++) {
		const struct pm_entry *e = &pm->e[i];

		if (i > 0)
			*p++ = ',';
		memcpy(p, st, sizeof(st) - 1);
		p = put_int(p + sizeof(st) - 1, e->status);
		if (e->status == STEP_ST_OK) {
			memcpy(p, md5, sizeof(md5) - 1);
			p += sizeof(md5) - 1;
			memcpy(p, e->md5, HASH_MD5_HEX - 1);
			p += HASH_MD5_HEX - 1;
			*p++ = '"';
		}
		*p++ = '}';
	}
	*p++ = ']';
	*p++ = '}';
	pkt->len = (size_t)(p - (char *)pkt->data);
	if (pkt->len - STEP_HDR_LEN > STEP_MAX_JSON) {
		free(pkt); /* as the encoder refuses such a text */
		pkt = NULL;
		goto out;
	}
	codec_put_header(pkt->data, (uint32_t)(pkt->len - STEP_HDR_LEN), 0);
out:
	buf_release(&head);
	json_decref(pm->reply);
	free(pm);
	return pkt;
}

/* Drops one count; 1 when it was the last (the caller then finishes pm). */
static int
pm_release(struct putmany *pm)
{
	return atomic_fetch_sub_explicit(&pm->left, 1, memory_order_acq_rel) == 1;
}

static void
pm_done(struct store_waiter *w, int err, const char *md5hex)
{
	struct pm_entry *e = (struct pm_entry *)w;
	struct putmany *pm = e->pm;
	struct handler *h = pm->h;
	void *cookie = pm->cookie;

	e->status = item_status(err);
	if (err == 0 && md5hex != NULL)
		memcpy(e->md5, md5hex, HASH_MD5_HEX - 1);
	if (pm_release(pm))
		h->post(h->post_arg, cookie, NULL, pm_finish(pm)); /* pm_finish frees pm */
}

static int
md5_valid(const char *s, size_t len)
{
	size_t i;

	if (len != HASH_MD5_HEX - 1)
		return 0;
	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/*
 * Checks the whole request: objects is an array of 1..HANDLER_PUTMANY_MAX entries whose
 * sizes are integers >= 0 adding up to the binary part. 0, or a reply was sent (-1).
 */
static int
check_request(struct hreq *r, const json_t **objsp, size_t *np)
{
	const json_t *objs = json_object_get(r->req, "objects");
	size_t n, i;
	uint64_t sum = 0;

	if (r->binlen > HANDLER_PUTMANY_MAX_BIN) {
		hreq_fail(r, STEP_ST_TOOLARGE, "The binary part is over 4 MiB.");
		return -1;
	}
	if (!json_is_array(objs)) {
		hreq_fail(r, STEP_ST_FIELD, "Field \"objects\" must be an array.");
		return -1;
	}
	n = json_array_size(objs);
	if (n == 0 || n > HANDLER_PUTMANY_MAX) {
		hreq_fail(r, STEP_ST_FIELD, "Field \"objects\" must have 1..1024 entries.");
		return -1;
	}
	for (i = 0; i < n; i++) {
		long long size;

		if (codec_get_int(json_array_get(objs, i), "size", &size) != 0 || size < 0) {
			hreq_fail(r, STEP_ST_FIELD, "Every object needs an integer \"size\" >= 0.");
			return -1;
		}
		/* Saturates: a size beyond the binary part is a mismatch anyway. */
		sum += (uint64_t)size > r->binlen ? (uint64_t)r->binlen + 1 : (uint64_t)size;
		if (sum > r->binlen)
			break;
	}
	if (sum != r->binlen) {
		hreq_fail(r, STEP_ST_LENGTH, "The sizes do not add up to the binary part.");
		return -1;
	}
	*objsp = objs;
	*np = n;
	return 0;
}

/* Checks one entry of its announced size whose bytes have the MD5 d. Returns 0
 * (storable: *key, *keylen set, e->md5 filled) or the entry's STEP status. */
static int
check_entry(const json_t *o, size_t size, const uint8_t d[HASH_MD5_LEN], struct pm_entry *e,
    const char **key, size_t *keylen)
{
	const char *md5;
	size_t mlen;

	if (codec_get_str(o, "key", key, keylen) != 0 || !store_key_valid(*key, *keylen))
		return STEP_ST_FIELD;
	if (size < 1 || size > STORE_INLINE_MAX)
		return STEP_ST_TOOLARGE;
	if (codec_get_str(o, "md5", &md5, &mlen) != 0 || !md5_valid(md5, mlen))
		return STEP_ST_FIELD;
	hash_to_hex(d, HASH_MD5_LEN, e->md5);
	if (memcmp(e->md5, md5, HASH_MD5_HEX - 1) != 0)
		return STEP_ST_LENGTH;
	return 0;
}

/* The MD5s of a request's objects, computed side by side (md5_many). */
struct pm_hash {
	const void *data[HANDLER_PUTMANY_MAX];
	size_t len[HANDLER_PUTMANY_MAX];
	uint8_t d[HANDLER_PUTMANY_MAX][HASH_MD5_LEN]; /* object i's */
};

/* Fills hs->d for every object (check_entry refuses those of a size not storable, with
 * the MD5 unused). */
static void
hash_entries(struct hreq *r, const json_t *objs, size_t n, struct pm_hash *hs)
{
	size_t i, off = 0;
	long long size;

	for (i = 0; i < n; i++, off += (size_t)size) {
		codec_get_int(json_array_get(objs, i), "size", &size); /* checked */
		hs->data[i] = r->bin + off;
		hs->len[i] = (size_t)size;
	}
	md5_many(n, hs->data, hs->len, hs->d);
}

int
handler_putmany(struct hreq *r)
{
	struct pm_hash *hs = NULL;
	struct store_put_item *items = NULL;
	struct putmany *pm = NULL;
	struct handler_pkt *pkt;
	const json_t *objs;
	size_t n, i, k = 0, off = 0, npending = 0;

	if (check_request(r, &objs, &n) != 0)
		return HANDLER_DONE;
	if (step_fault_alloc() || (pm = calloc(1, sizeof(*pm) + n * sizeof(pm->e[0]))) == NULL ||
	    (pm->reply = hreq_ok_alloc(r, "OK")) == NULL || step_fault_alloc() ||
	    (items = calloc(n, sizeof(*items))) == NULL || (hs = malloc(sizeof(*hs))) == NULL) {
		if (pm != NULL)
			json_decref(pm->reply);
		free(pm);
		free(items);
		return hreq_fail(r, STEP_ST_INTERNAL, "Server out of memory.");
	}
	pm->h = r->h;
	pm->cookie = r->cookie;
	pm->n = n;
	hash_entries(r, objs, n, hs);
	for (i = 0; i < n; i++) {
		const json_t *o = json_array_get(objs, i);
		struct pm_entry *e = &pm->e[i];
		struct store_put_item *it = &items[k];
		long long size;

		codec_get_int(o, "size", &size); /* checked by check_request */
		e->pm = pm;
		e->w.done = pm_done;
		e->status = check_entry(o, (size_t)size, hs->d[i], e, &it->key, &it->keylen);
		if (e->status == 0) {
			it->data = r->bin + off;
			it->len = (size_t)size;
			memcpy(it->md5, e->md5, sizeof(it->md5));
			it->w = &e->w;
			k++;
		}
		off += (size_t)size;
	}
	atomic_init(&pm->left, k + 1);
	store_put_many(r->h->st, r->user, items, k);
	for (i = 0; i < k; i++) {
		struct pm_entry *e = (struct pm_entry *)items[i].w;

		if (items[i].status == STORE_PENDING) {
			npending++;
			continue;
		}
		e->status = item_status(items[i].status);
		pm_release(pm); /* never the last: the handler's count is still held */
	}
	log_debug("PUTMANY: %zu objects, %zu to commit", n, npending);
	free(items);
	free(hs);
	if (!pm_release(pm))
		return HANDLER_PENDING; /* the commit thread sends the reply */
	pkt = pm_finish(pm);
	handler_send_pkt(r->out, pkt); /* NULL: a bare 500 */
	free(pkt);
	return HANDLER_DONE;
}
