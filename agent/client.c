/*
 * client.c — a STEP client session: connect, log in, learn extensions, one request at a
 * time with reconnect/re-login/backoff, DATA records, FILE info/delete/list, ping.
 * The pipelined transfers are in transfer.c. Never prints; never logs the password or
 * the token.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "client_impl.h"
#include "codec.h"
#include "db.h"
#include "err.h"
#include "log.h"
#include "step.h"
#include "util.h"

#define RX_MAX (STEP_MAX_BIN + STEP_MAX_JSON + STEP_HDR_LEN)

int
client_fail(struct client *c, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return r;
}

const char *
client_status_text(int status)
{
	switch (status) {
	case STEP_ST_MISSING:
		return "malformed request";
	case STEP_ST_BADPASS:
		return "wrong user or password";
	case STEP_ST_EXISTS:
		return "already exists";
	case STEP_ST_TOKEN:
		return "not logged in or token expired";
	case STEP_ST_NOTFOUND:
		return "not found";
	case STEP_ST_INDEX:
		return "block index out of range";
	case STEP_ST_LENGTH:
		return "wrong block length";
	case STEP_ST_DIRECTION:
		return "bad direction";
	case STEP_ST_OPERATION:
		return "operation not allowed or no upload in progress";
	case STEP_ST_TYPE:
		return "type not allowed";
	case STEP_ST_FIELD:
		return "missing or invalid field";
	case STEP_ST_TOOLARGE:
		return "too large";
	case STEP_ST_THROTTLE:
		return "too many requests";
	case STEP_ST_INTERNAL:
		return "server internal error";
	case STEP_ST_UNAVAILABLE:
		return "server unavailable";
	case STEP_ST_NOSPACE:
		return "server out of space";
	default:
		return "refused";
	}
}

int
client_fail_status(struct client *c, int r, const char *what, int status)
{
	return client_fail(c, r, "%s: %s (%d)", what, client_status_text(status), status);
}

int
client_transient(int r)
{
	return r == STEP_ECLOSED || r == STEP_ETIMEDOUT || r == STEP_ECONNECT || r == STEP_ESYS;
}

void
client_backoff(int attempt)
{
	struct timespec ts;
	long ms = 100L << (attempt > 5 ? 5 : attempt);

	if (ms > 2000)
		ms = 2000;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

#define OUTAGE_FIRST_MS 250  /* the first wait of an outage */
#define OUTAGE_MAX_MS   8000 /* ...doubling up to this */

void
client_set_outage(struct client *c, int ms)
{
	c->outage_ms = ms > 0 ? ms : 0;
}

void
client_outage_clear(struct client *c)
{
	c->outage_since = 0;
	c->outage_n = 0;
}

int
client_outage_wait(struct client *c, int r)
{
	uint64_t now = util_now_ms(), ms, end;

	if (r != STEP_ESTATUS || c->outage_ms <= 0 ||
	    (c->status != STEP_ST_UNAVAILABLE && c->status != STEP_ST_THROTTLE) ||
	    util_stop_pending())
		return 0;
	if (c->outage_since == 0)
		c->outage_since = now;
	if (now - c->outage_since >= (uint64_t)c->outage_ms) {
		if (c->outage_n >= 0)
			log_warnx("%s:%d has refused requests for %d s; giving up", c->host,
			    c->port, (int)((now - c->outage_since) / 1000));
		c->outage_n = -1; /* said once */
		return 0;
	}
	ms = (uint64_t)OUTAGE_FIRST_MS << (c->outage_n < 5 ? c->outage_n : 5);
	if (ms > OUTAGE_MAX_MS)
		ms = OUTAGE_MAX_MS;
	if (c->outage_n == 0)
		log_warnx("%s:%d: %s (%d); trying again for up to %d s", c->host, c->port,
		    client_status_text(c->status), c->status, c->outage_ms / 1000);
	else
		log_info("%s (%d); trying again in %.2f s", client_status_text(c->status),
		    c->status, (double)ms / 1000);
	c->outage_n++;
	/* In slices, so that a stop request is seen at once. */
	for (end = now + ms; (now = util_now_ms()) < end && !util_stop_pending();) {
		struct timespec ts = { 0, (long)(end - now < 50 ? end - now : 50) * 1000000L };

		nanosleep(&ts, NULL);
	}
	return !util_stop_pending();
}

static char *
dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

int
client_new(const struct client_opts *o, struct client **outp)
{
	struct client *c;

	if (o->host == NULL || o->host[0] == '\0' || o->user == NULL || o->password_md5 == NULL ||
	    strlen(o->password_md5) != HASH_MD5_HEX - 1)
		return STEP_EINVAL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return STEP_ENOMEM;
	c->host = strdup(o->host);
	c->user = strdup(o->user);
	c->ca = dup_or_null(o->ca);
	c->state_path = dup_or_null(o->state_path);
	if (c->host == NULL || c->user == NULL || (o->ca && !c->ca) ||
	    (o->state_path && !c->state_path)) {
		client_free(c);
		return STEP_ENOMEM;
	}
	memcpy(c->password_md5, o->password_md5, HASH_MD5_HEX);
	c->port = o->port > 0 ? o->port : STEP_DEFAULT_PORT;
	c->tls = o->tls;
	c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
	c->window_opt = o->window;
	c->retries = o->retries == 0 ? 5 : (o->retries < 0 ? 0 : o->retries);
	c->outage_ms = o->outage_ms > 0 ? o->outage_ms : 0;
	c->block_md5 = o->block_md5;
	c->bw = o->bw;
	c->progress = o->progress;
	c->progress_arg = o->progress_arg;
	buf_init(&c->rx, RX_MAX);
	buf_init(&c->tx, STEP_MAX_JSON + STEP_HDR_LEN);
	*outp = c;
	return STEP_OK;
}

void
client_disconnect(struct client *c)
{
	conn_free(c->conn);
	c->conn = NULL;
	if (c->token != NULL) {
		OPENSSL_cleanse(c->token, strlen(c->token));
		free(c->token);
		c->token = NULL;
	}
	buf_reset(&c->rx);
}

void
client_free(struct client *c)
{
	json_t *req;

	if (c == NULL)
		return;
	if (c->conn != NULL && c->token != NULL && (req = client_req(c, "AUTH", "BYE")) != NULL) {
		/* Polite close; reference servers never answer BYE, so do not wait. */
		if (client_encode(c, req, 0) == 0) {
			struct iovec v = { buf_ptr(&c->tx), buf_avail(&c->tx) };
			size_t put;

			conn_writev(c->conn, &v, 1, &put);
		}
		json_decref(req);
	}
	client_disconnect(c);
	db_close(c->db);
	buf_release(&c->rx);
	buf_release(&c->tx);
	OPENSSL_cleanse(c->password_md5, sizeof(c->password_md5));
	free(c->host);
	free(c->user);
	free(c->ca);
	free(c->state_path);
	free(c);
}

void
client_set_progress(struct client *c, client_progress_fn *fn, void *arg)
{
	c->progress = fn;
	c->progress_arg = arg;
}

const char *
client_error(const struct client *c)
{
	return c->err;
}

int
client_status(const struct client *c)
{
	return c->status;
}

json_t *
client_req(struct client *c, const char *type, const char *op)
{
	json_t *o =
	    json_pack("{s:s, s:s, s:s}", "type", type, "operation", op, "direction", "REQUEST");

	if (o != NULL && c->token != NULL)
		json_object_set_new(o, "token", json_string(c->token));
	return o;
}

int
client_encode(struct client *c, const json_t *req, uint32_t bin_len)
{
	buf_reset(&c->tx);
	if (codec_encode(req, bin_len, &c->tx) != 0)
		return client_fail(c, STEP_ENOMEM, "cannot encode request");
	return STEP_OK;
}

int
client_rx_fill(struct client *c)
{
	size_t got;
	int r;

	if ((r = buf_reserve(&c->rx, CLIENT_RX_CHUNK)) != 0)
		return client_fail(c, r, "receive buffer full");
	if ((r = conn_read(c->conn, buf_tail(&c->rx), CLIENT_RX_CHUNK, &got)) != 0) {
		if (r == STEP_ECLOSED)
			return client_fail(c, r, "server closed the connection");
		return client_fail(c, r, "cannot read from server: %s", strerror(errno));
	}
	buf_commit(&c->rx, got);
	return STEP_OK;
}

int
client_rx_parse(
    struct client *c, json_t **respp, const uint8_t **binp, uint32_t *binlen, size_t *pktlen)
{
	struct step_hdr h;
	const uint8_t *p = buf_ptr(&c->rx);
	size_t avail = buf_avail(&c->rx), jn;
	char errbuf[128];
	json_t *resp = NULL;
	int r;

	if (avail < STEP_HDR_LEN)
		return STEP_EAGAIN;
	if ((r = codec_get_header(p, STEP_MAX_JSON, STEP_MAX_BIN, &h)) != 0) {
		/* A TLS record (alert 21 or handshake 22, version 3.x) where STEP was expected. */
		if ((p[0] == 21 || p[0] == 22) && p[1] == 3)
			return client_fail(c, STEP_EPROTO, "the server speaks TLS (use --tls)");
		return client_fail(c, r, "bad packet from server (json_len %u, bin_len %u)",
		    h.json_len, h.bin_len);
	}
	r = codec_json_extent(
	    p + STEP_HDR_LEN, avail - STEP_HDR_LEN, h.json_len, STEP_MAX_JSON * 4, &jn);
	if (r == STEP_EAGAIN)
		return STEP_EAGAIN;
	if (r != 0)
		return client_fail(c, r, "bad packet from server (JSON too long)");
	if (avail < STEP_HDR_LEN + jn + h.bin_len)
		return STEP_EAGAIN;
	if (codec_decode_json(p + STEP_HDR_LEN, jn, &resp, errbuf, sizeof(errbuf)) != 0)
		return client_fail(c, STEP_EPROTO, "bad JSON from server: %s", errbuf);
	*respp = resp;
	*binp = p + STEP_HDR_LEN + jn;
	*binlen = h.bin_len;
	*pktlen = STEP_HDR_LEN + jn + h.bin_len;
	return STEP_OK;
}

void
client_rx_consume(struct client *c, size_t n)
{
	buf_consume(&c->rx, n);
}

int
client_recv(struct client *c, int timeout_ms, json_t **respp, const uint8_t **binp,
    uint32_t *binlen, size_t *pktlen)
{
	uint64_t deadline, now;
	int r, rd;

	if (timeout_ms < 0)
		timeout_ms = c->timeout_ms;
	deadline = util_now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		r = client_rx_parse(c, respp, binp, binlen, pktlen);
		if (r != STEP_EAGAIN)
			return r;
		now = util_now_ms();
		if (now >= deadline)
			return client_fail(c, STEP_ETIMEDOUT, "no answer from server within %d s",
			    (timeout_ms + 999) / 1000);
		r = conn_wait(c->conn, 0, (int)(deadline - now), &rd, NULL);
		if (r == STEP_ETIMEDOUT)
			continue;
		if (r != 0)
			return client_fail(c, r, "poll failed: %s", strerror(errno));
		if ((r = client_rx_fill(c)) != 0)
			return r;
	}
}

int
client_resp_status(const json_t *resp)
{
	long long st;

	if (codec_get_int(resp, "status", &st) != 0 || st < 0 || st > 999)
		return 0;
	return (int)st;
}

int
client_roundtrip(struct client *c, const json_t *req, const void *bin, size_t binlen,
    int timeout_ms, json_t **respp)
{
	struct iovec v[2];
	const uint8_t *rbin;
	uint32_t rbinlen;
	size_t pktlen;
	json_t *resp = NULL;
	int r;

	if ((r = client_encode(c, req, (uint32_t)binlen)) != 0)
		return r;
	v[0].iov_base = buf_ptr(&c->tx);
	v[0].iov_len = buf_avail(&c->tx);
	v[1].iov_base = (void *)(uintptr_t)bin;
	v[1].iov_len = binlen;
	if ((r = conn_writev_full(c->conn, v, bin ? 2 : 1)) != 0) {
		if (r == STEP_ETIMEDOUT)
			return client_fail(c, r, "server does not accept data (timeout)");
		return client_fail(c, r, "cannot send to server: %s",
		    r == STEP_ECLOSED ? "connection closed" : strerror(errno));
	}
	if ((r = client_recv(c, timeout_ms, &resp, &rbin, &rbinlen, &pktlen)) != 0)
		return r;
	client_rx_consume(c, pktlen);
	c->status = client_resp_status(resp);
	*respp = resp;
	if (c->status == STEP_ST_OK)
		client_outage_clear(c);
	return c->status == STEP_ST_OK ? STEP_OK : STEP_ESTATUS;
}

/* The extensions this client knows, by their LOGIN names. */
static const struct {
	const char *name;
	unsigned bit;
} ext_names[] = {
	{ "resume", CLIENT_EXT_RESUME },
	{ "block_md5", CLIENT_EXT_BLOCK_MD5 },
	{ "list", CLIENT_EXT_LIST },
	{ "zero_size", CLIENT_EXT_ZERO_SIZE },
	{ "bye", CLIENT_EXT_BYE },
	{ "putmany", CLIENT_EXT_PUTMANY },
	{ "big_blocks", CLIENT_EXT_BIG_BLOCKS },
	{ "objgen", CLIENT_EXT_OBJGEN },
	{ "any_block", CLIENT_EXT_ANY_BLOCK },
	{ "save_md5", CLIENT_EXT_SAVE_MD5 },
	{ "replace", CLIENT_EXT_REPLACE },
	{ "list_mtime", CLIENT_EXT_LIST_MTIME },
};

/* The bit of extension name, 0 when unknown. */
static unsigned
ext_bit(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(ext_names) / sizeof(ext_names[0]); i++)
		if (strcmp(ext_names[i].name, name) == 0)
			return ext_names[i].bit;
	return 0;
}

/*
 * The extensions to act as if the server had not advertised: $STEPSYNC_IGNORE_EXT, a
 * comma-separated list of names (a test hook, so that the paths for servers without an
 * extension can be tried against stepd; not documented for users).
 */
static unsigned
ext_ignored(void)
{
	const char *env = getenv("STEPSYNC_IGNORE_EXT");
	char name[32];
	unsigned bits = 0;
	size_t n;

	while (env != NULL && *env != '\0') {
		n = strcspn(env, ",");
		if (n < sizeof(name)) {
			memcpy(name, env, n);
			name[n] = '\0';
			bits |= ext_bit(name);
		}
		env += n;
		env += *env == ',';
	}
	return bits;
}

/* Reads LOGIN's "server" and "extensions" fields. */
static void
learn_server(struct client *c, const json_t *resp)
{
	const char *s;
	json_t *ext, *v;
	size_t i;

	long long gen;

	c->server[0] = '\0';
	c->store_id[0] = '\0';
	c->obj_gen = -1;
	c->ext = 0;
	if (codec_get_str(resp, "server", &s, NULL) == 0)
		snprintf(c->server, sizeof(c->server), "%s", s);
	if (codec_get_str(resp, "store_id", &s, NULL) == 0 && strlen(s) < sizeof(c->store_id) &&
	    codec_get_int(resp, "obj_gen", &gen) == 0 && gen >= 0) {
		snprintf(c->store_id, sizeof(c->store_id), "%s", s);
		c->obj_gen = gen;
	}
	ext = json_object_get(resp, "extensions");
	json_array_foreach(ext, i, v)
	{
		if ((s = json_string_value(v)) != NULL)
			c->ext |= ext_bit(s);
	}
	c->ext &= ~ext_ignored();
	if (c->store_id[0] == '\0')
		c->ext &= ~(unsigned)CLIENT_EXT_OBJGEN;
}

/* One connect + LOGIN attempt. */
static int
connect_login(struct client *c)
{
	char errbuf[256];
	json_t *req = NULL, *resp = NULL;
	const char *tok;
	int r;

	client_disconnect(c);
	r = conn_open(
	    c->host, c->port, c->tls, c->ca, c->timeout_ms, &c->conn, errbuf, sizeof(errbuf));
	if (r != 0)
		return client_fail(c, r, "%s", errbuf);
	req = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "AUTH", "operation", "LOGIN",
	    "direction", "REQUEST", "username", c->user, "password", c->password_md5);
	if (req == NULL) {
		r = client_fail(c, STEP_ENOMEM, "out of memory");
		goto out;
	}
	r = client_roundtrip(c, req, NULL, 0, -1, &resp);
	if (r == STEP_ESTATUS) {
		const char *msg = NULL;

		r = c->status == STEP_ST_BADPASS ? STEP_EAUTH : STEP_ESTATUS;
		/* The server's own words matter here: "too many failed logins; retry in N s"
		 * is not a wrong password (watch waits N s on it). */
		if (c->status != STEP_ST_BADPASS &&
		    codec_get_str(resp, "status_msg", &msg, NULL) == 0 && *msg != '\0')
			client_fail(c, r, "login refused: %s (%d): %.200s",
			    client_status_text(c->status), c->status, msg);
		else
			client_fail_status(c, r, "login refused", c->status);
		goto out;
	}
	if (r != 0) {
		char why[sizeof(c->err)];

		memcpy(why, c->err, sizeof(why));
		client_fail(c, r, "login failed: %s", why);
		goto out;
	}
	if (codec_get_str(resp, "token", &tok, NULL) != 0 || (c->token = strdup(tok)) == NULL) {
		r = client_fail(c, STEP_EPROTO, "login answer without a token");
		goto out;
	}
	learn_server(c, resp);
	log_debug("logged in to %s:%d as '%s' (server '%s', extensions 0x%x)", c->host, c->port,
	    c->user, c->server, c->ext);
	r = STEP_OK;
out:
	json_decref(req);
	json_decref(resp);
	if (r != 0) {
		conn_free(c->conn);
		c->conn = NULL;
	}
	return r;
}

int
client_ensure(struct client *c)
{
	int attempt, r;

	if (c->conn != NULL && c->token != NULL)
		return STEP_OK;
	for (attempt = 0;; attempt++) {
		r = connect_login(c);
		/* (Not 429: that is the login throttle, whose "retry in N s" is the caller's.) */
		if (c->status == STEP_ST_UNAVAILABLE && client_outage_wait(c, r)) {
			attempt--; /* an outage: bounded by its own clock */
			continue;
		}
		if (r == 0 || r == STEP_EAUTH || r == STEP_ETLS || r == STEP_ENOMEM ||
		    r == STEP_ESTATUS || attempt >= c->retries)
			return r;
		/* A server that does not answer LOGIN will not answer it next time either. */
		if (r == STEP_ETIMEDOUT && attempt >= 1)
			return r;
		log_info("%s; retrying", c->err);
		client_backoff(attempt + 1);
	}
}

int
client_connect(struct client *c)
{
	return client_ensure(c);
}

int
client_has_ext(struct client *c, const char *name)
{
	if (client_ensure(c) != 0)
		return 0;
	return (c->ext & ext_bit(name)) != 0;
}

int
client_store_gen(struct client *c, int fresh, char *store_id, size_t len, int64_t *genp)
{
	int r;

	if (fresh)
		client_disconnect(c);
	if ((r = client_ensure(c)) != 0)
		return r;
	if (!(c->ext & CLIENT_EXT_OBJGEN))
		return client_fail(c, STEP_EPROTO, "the server does not report object generations");
	snprintf(store_id, len, "%s", c->store_id);
	*genp = c->obj_gen;
	return 0;
}

const char *
client_server_name(struct client *c)
{
	client_ensure(c);
	return c->server;
}

/* client_request() with a timeout (ms, -1 default). */
static int
request_timeout(struct client *c, const json_t *req0, const void *bin, size_t binlen,
    int timeout_ms, json_t **respp)
{
	json_t *req = NULL, *resp = NULL;
	int attempt, relogged = 0, timeouts = 0, r;

	for (attempt = 0;; attempt++) {
		if ((r = client_ensure(c)) != 0)
			return r;
		json_decref(req);
		if ((req = json_deep_copy(req0)) == NULL)
			return client_fail(c, STEP_ENOMEM, "out of memory");
		json_object_set_new(req, "token", json_string(c->token));
		r = client_roundtrip(c, req, bin, binlen, timeout_ms, &resp);
		if (r == STEP_ESTATUS && c->status == STEP_ST_TOKEN && !relogged) {
			/* Token expired or refused: log in again once. */
			relogged = 1;
			json_decref(resp);
			resp = NULL;
			client_disconnect(c);
			attempt--;
			continue;
		}
		if (r == STEP_ESTATUS && client_outage_wait(c, r)) {
			json_decref(resp);
			resp = NULL;
			attempt--; /* an outage: bounded by its own clock */
			continue;
		}
		if (r == 0 || r == STEP_ESTATUS) {
			*respp = resp;
			break;
		}
		client_disconnect(c);
		if (r == STEP_ETIMEDOUT && ++timeouts >= 2)
			break; /* silence twice: the server will not answer this request */
		if (!client_transient(r) || attempt >= c->retries)
			break;
		log_info("%s; retrying", c->err);
		client_backoff(attempt + 1);
	}
	json_decref(req);
	return r;
}

int
client_request(struct client *c, const json_t *req, const void *bin, size_t binlen, json_t **respp)
{
	return request_timeout(c, req, bin, binlen, -1, respp);
}

int
client_ping(struct client *c, double *rttp)
{
	json_t *req = NULL, *resp = NULL;
	double t0;
	int r;

	if ((r = client_ensure(c)) != 0)
		return r;
	req = json_pack(
	    "{s:s, s:s, s:s}", "type", "AUTH", "operation", "LOGIN", "direction", "EARTH");
	if (req == NULL)
		return client_fail(c, STEP_ENOMEM, "out of memory");
	t0 = util_now_s();
	r = client_roundtrip(c, req, NULL, 0, -1, &resp);
	if (r == STEP_ESTATUS && c->status == STEP_ST_EARTH)
		r = STEP_OK;
	else if (r == STEP_ESTATUS)
		r = client_fail_status(c, r, "echo refused", c->status);
	else if (r == STEP_OK)
		r = client_fail(c, STEP_EPROTO, "echo answered 200 instead of 333");
	if (r == STEP_OK)
		*rttp = util_now_s() - t0;
	json_decref(req);
	json_decref(resp);
	return r;
}

/* Fields STEP itself uses; everything else in a DATA record is data. */
static int
reserved_field(const char *k)
{
	static const char *const names[] = { "type", "operation", "direction", "status",
		"status_msg", "token", "username", "password", "key" };
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(k, names[i]) == 0)
			return 1;
	return 0;
}

int
client_data_save(struct client *c, const char *key, const json_t *fields)
{
	json_t *req = NULL, *resp = NULL, *v;
	const char *k;
	int r;

	if (!json_is_object(fields))
		return client_fail(c, STEP_EINVAL, "data must be a JSON object");
	json_object_foreach((json_t *)(uintptr_t)fields, k, v)
	{
		if (reserved_field(k))
			return client_fail(c, STEP_EINVAL, "field '%s' is reserved by STEP", k);
	}
	if ((req = client_req(c, "DATA", "SAVE")) == NULL)
		return client_fail(c, STEP_ENOMEM, "out of memory");
	json_object_update(req, (json_t *)(uintptr_t)fields);
	json_object_set_new(req, "key", json_string(key));
	r = client_request(c, req, NULL, 0, &resp);
	if (r == STEP_ESTATUS)
		r = client_fail_status(c, c->status == STEP_ST_EXISTS ? STEP_EEXIST : STEP_ESTATUS,
		    "server refused key", c->status);
	json_decref(req);
	json_decref(resp);
	return r;
}

int
client_data_get(struct client *c, const char *key, json_t **outp)
{
	json_t *req = NULL, *resp = NULL, *out = NULL, *v;
	const char *k;
	int r;

	if ((req = client_req(c, "DATA", "GET")) == NULL)
		return client_fail(c, STEP_ENOMEM, "out of memory");
	json_object_set_new(req, "key", json_string(key));
	r = client_request(c, req, NULL, 0, &resp);
	if (r == STEP_ESTATUS) {
		r = client_fail_status(c,
		    c->status == STEP_ST_NOTFOUND ? STEP_ENOENT : STEP_ESTATUS, "no such record",
		    c->status);
		goto out;
	}
	if (r != 0)
		goto out;
	if ((out = json_object()) == NULL) {
		r = client_fail(c, STEP_ENOMEM, "out of memory");
		goto out;
	}
	json_object_foreach(resp, k, v)
	{
		if (!reserved_field(k))
			json_object_set(out, k, v);
	}
	*outp = out;
	out = NULL;
out:
	json_decref(out);
	json_decref(req);
	json_decref(resp);
	return r;
}

int
client_data_delete(struct client *c, const char *key)
{
	json_t *req = NULL, *resp = NULL;
	int r;

	if ((req = client_req(c, "DATA", "DELETE")) == NULL)
		return client_fail(c, STEP_ENOMEM, "out of memory");
	json_object_set_new(req, "key", json_string(key));
	r = client_request(c, req, NULL, 0, &resp);
	if (r == STEP_ESTATUS)
		r = client_fail_status(c,
		    c->status == STEP_ST_NOTFOUND ? STEP_ENOENT : STEP_ESTATUS, "no such record",
		    c->status);
	json_decref(req);
	json_decref(resp);
	return r;
}

int
client_file_info(struct client *c, const char *key, struct client_file_info *info)
{
	return client_file_plan(c, key, 0, info);
}

int
client_file_plan(struct client *c, const char *key, uint32_t want_bs, struct client_file_info *info)
{
	json_t *req = NULL, *resp = NULL;
	long long size, bs, total;
	const char *md5;
	size_t md5len;
	int r;

	if ((req = client_req(c, "FILE", "GET")) == NULL)
		return client_fail(c, STEP_ENOMEM, "out of memory");
	json_object_set_new(req, "key", json_string(key));
	if (want_bs > 0)
		json_object_set_new(req, "want_block_size", json_integer(want_bs));
	r = client_request(c, req, NULL, 0, &resp);
	if (r == STEP_ESTATUS) {
		r = client_fail_status(c,
		    c->status == STEP_ST_NOTFOUND ? STEP_ENOENT : STEP_ESTATUS, "no such file",
		    c->status);
		goto out;
	}
	if (r != 0)
		goto out;
	if (codec_get_int(resp, "size", &size) != 0 || size < 0 ||
	    codec_get_int(resp, "block_size", &bs) != 0 || bs < 1 || bs > STEP_MAX_BIN ||
	    codec_get_int(resp, "total_block", &total) != 0 || total != (size + bs - 1) / bs ||
	    codec_get_str(resp, "md5", &md5, &md5len) != 0 || md5len != HASH_MD5_HEX - 1) {
		r = client_fail(c, STEP_EPROTO, "server sent an inconsistent file plan");
		goto out;
	}
	info->size = (uint64_t)size;
	info->block_size = (uint32_t)bs;
	info->total_block = (uint32_t)total;
	for (md5len = 0; md5len < HASH_MD5_HEX - 1; md5len++) {
		char ch = md5[md5len];

		info->md5[md5len] = (char)(ch >= 'A' && ch <= 'F' ? ch - 'A' + 'a' : ch);
	}
	info->md5[HASH_MD5_HEX - 1] = '\0';
out:
	json_decref(req);
	json_decref(resp);
	return r;
}

int
client_file_delete(struct client *c, const char *key)
{
	json_t *req = NULL, *resp = NULL;
	const char *msg = "";
	int r;

	if ((req = client_req(c, "FILE", "DELETE")) == NULL)
		return client_fail(c, STEP_ENOMEM, "out of memory");
	json_object_set_new(req, "key", json_string(key));
	r = client_request(c, req, NULL, 0, &resp);
	if (r == STEP_ESTATUS && c->status == STEP_ST_NOTFOUND) {
		/* "not completely uploaded. The tmp files are deleted." counts as done. */
		codec_get_str(resp, "status_msg", &msg, NULL);
		if (strstr(msg, "tmp") != NULL || strstr(msg, "not complete") != NULL)
			r = STEP_OK;
		else
			r = client_fail_status(c, STEP_ENOENT, "no such file", c->status);
	} else if (r == STEP_ESTATUS) {
		r = client_fail_status(c, STEP_ESTATUS, "delete refused", c->status);
	}
	json_decref(req);
	json_decref(resp);
	return r;
}

/* One LIST page after *afterp (NULL: from the start) into fn; *afterp becomes its last key
 * and *morep says whether more pages follow. */
static int
list_page(struct client *c, const char *prefix, int mtimes, char **afterp, int *morep,
    int (*fn)(void *arg, const char *key, int64_t mtime, int64_t now), void *arg)
{
	json_t *req, *resp = NULL, *keys, *times = NULL, *v;
	const char *last;
	int64_t now = 0;
	size_t i;
	int r;

	if ((req = client_req(c, "FILE", "LIST")) == NULL)
		return client_fail(c, STEP_ENOMEM, "out of memory");
	json_object_set_new(req, "prefix", json_string(prefix ? prefix : ""));
	json_object_set_new(req, "limit", json_integer(1000));
	if (*afterp != NULL)
		json_object_set_new(req, "after", json_string(*afterp));
	if (mtimes)
		json_object_set_new(req, "mtimes", json_true());
	if ((r = client_request(c, req, NULL, 0, &resp)) != 0) {
		if (r == STEP_ESTATUS)
			client_fail_status(c, r, "listing refused", c->status);
		goto out;
	}
	keys = json_object_get(resp, "keys");
	if (mtimes) {
		times = json_object_get(resp, "mtimes");
		now = json_integer_value(json_object_get(resp, "now"));
	}
	if (!json_is_array(keys) ||
	    (mtimes && (json_array_size(times) != json_array_size(keys) || now <= 0))) {
		r = client_fail(c, STEP_EPROTO, "listing answer without keys (or their times)");
		goto out;
	}
	last = NULL;
	json_array_foreach(keys, i, v)
	{
		if (!json_is_string(v))
			continue;
		if ((r = fn(arg, json_string_value(v),
		         mtimes ? json_integer_value(json_array_get(times, i)) : 0, now)) != 0)
			goto out;
		last = json_string_value(v);
	}
	*morep = json_is_true(json_object_get(resp, "more")) && last != NULL;
	if (*morep) {
		free(*afterp);
		if ((*afterp = strdup(last)) == NULL) {
			r = client_fail(c, STEP_ENOMEM, "out of memory");
			goto out;
		}
	}
	r = STEP_OK;
out:
	json_decref(req);
	json_decref(resp);
	return r;
}

int
client_list_each(struct client *c, const char *prefix, int mtimes,
    int (*fn)(void *arg, const char *key, int64_t mtime, int64_t now), void *arg)
{
	char *after = NULL;
	int r, more = 1;

	if ((r = client_ensure(c)) != 0)
		return r;
	if (!(c->ext & CLIENT_EXT_LIST))
		return client_fail(c, STEP_EPROTO, "server does not support listing keys");
	if (mtimes && !(c->ext & CLIENT_EXT_LIST_MTIME))
		return client_fail(c, STEP_EPROTO, "server does not list the times of objects");
	while (more && r == 0)
		r = list_page(c, prefix, mtimes, &after, &more, fn, arg);
	free(after);
	return r;
}

struct key_vec {
	char **v;
	size_t n, cap;
};

static int
key_vec_add(void *arg, const char *key, int64_t mtime, int64_t now)
{
	struct key_vec *kv = arg;
	char **tmp;

	(void)mtime;
	(void)now;
	if (kv->n == kv->cap) {
		kv->cap = kv->cap ? 2 * kv->cap : 64;
		if ((tmp = realloc(kv->v, kv->cap * sizeof(*tmp))) == NULL)
			return STEP_ENOMEM;
		kv->v = tmp;
	}
	if ((kv->v[kv->n] = strdup(key)) == NULL)
		return STEP_ENOMEM;
	kv->n++;
	return 0;
}

int
client_list(struct client *c, const char *prefix, char ***keysp, size_t *np)
{
	struct key_vec kv = { NULL, 0, 0 };
	int r;

	if ((r = client_list_each(c, prefix, 0, key_vec_add, &kv)) != 0) {
		if (r == STEP_ENOMEM)
			client_fail(c, r, "out of memory");
		client_keys_free(kv.v, kv.n);
		return r;
	}
	*keysp = kv.v != NULL ? kv.v : xcalloc(1, sizeof(*kv.v)); /* never NULL, as before */
	*np = kv.n;
	return STEP_OK;
}

void
client_keys_free(char **keys, size_t n)
{
	size_t i;

	for (i = 0; keys != NULL && i < n; i++)
		free(keys[i]);
	free(keys);
}

struct db *
client_state(struct client *c)
{
	char errbuf[256];

	if (c->db != NULL || c->state_path == NULL)
		return c->db;
	if (db_open(c->state_path, &c->db, errbuf, sizeof(errbuf)) != 0) {
		log_warnx("state database: %s; continuing without resume", errbuf);
		free(c->state_path);
		c->state_path = NULL;
		c->db = NULL;
	}
	return c->db;
}
