/*
 * conn.c — TCP or TLS (OpenSSL) connections with timeouts behind the conn.h interface.
 * TLS always verifies the server's chain and name; it never falls back to plain TCP.
 * Never prints.
 *
 * Non-blocking TLS rules kept here so callers need not know them: decrypted bytes that
 * OpenSSL holds (SSL_pending) make conn_wait() report "readable" without polling; an
 * SSL_read() that needs to write (or SSL_write() that needs to read) makes conn_wait()
 * poll for that direction and report the other; an SSL_write() that could not finish is
 * retried with the same bytes, which the callers guarantee (a stream offset never moves
 * back and unsent bytes are offered again).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "conn.h"
#include "err.h"
#include "util.h"

#define TLS_REC    16384u      /* plaintext of one full TLS record */
#define TLS_WCHUNK (64u << 10) /* most plaintext per SSL_write; see tls_writev() */

struct conn {
	int fd;
	int timeout_ms;
	SSL_CTX *ctx;       /* TLS only; owned */
	SSL *ssl;           /* TLS only; owned */
	BIO_METHOD *bios;   /* TLS only; owned: socket I/O with MSG_NOSIGNAL */
	int rd_wants_write; /* the last SSL_read needs the socket writable */
	int wr_wants_read;  /* the last SSL_write needs the socket readable */
	uint8_t *wbuf;      /* TLS_WCHUNK bytes: small iovecs gathered for one SSL_write */
};

/* Connects one address with a timeout; returns the fd or -1 with errno set. */
static int
connect_one(const struct addrinfo *ai, int timeout_ms)
{
	struct pollfd pfd;
	socklen_t len = sizeof(int);
	int fd, err = 0, one = 1, r;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
	if (fd < 0)
		return -1;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		if (errno != EINPROGRESS)
			goto fail;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		do
			r = poll(&pfd, 1, timeout_ms);
		while (r < 0 && errno == EINTR);
		if (r == 0) {
			errno = ETIMEDOUT;
			goto fail;
		}
		if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
			goto fail;
		if (err != 0) {
			errno = err;
			goto fail;
		}
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

const char *
conn_tls_reason(const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *s = e != 0 ? ERR_reason_error_string(e) : NULL;

	return s != NULL ? s : fallback;
}

/* Client context: TLS 1.2 or newer, the peer's chain verified against ca (a PEM bundle)
 * or, when ca is NULL, the system trust store. */
static int
tls_ctx_new(const char *ca, SSL_CTX **outp, char *errbuf, size_t errlen)
{
	SSL_CTX *ctx;

	if (ca != NULL && access(ca, R_OK) != 0) {
		snprintf(errbuf, errlen, "cannot read CA file '%s': %s", ca, strerror(errno));
		return STEP_ETLS;
	}
	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		snprintf(errbuf, errlen, "TLS: %s", conn_tls_reason("cannot create a context"));
		return STEP_ENOMEM;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (ca != NULL ? SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1
	               : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		if (ca != NULL)
			snprintf(errbuf, errlen, "cannot load CA file '%s': %s", ca,
			    conn_tls_reason("no certificate found"));
		else
			snprintf(errbuf, errlen, "cannot load the system trust store: %s",
			    conn_tls_reason("unknown error"));
		SSL_CTX_free(ctx);
		return STEP_ETLS;
	}
	*outp = ctx;
	return STEP_OK;
}

/* Polls fd for events up to timeout_ms: 0 and *revents, STEP_ETIMEDOUT, STEP_ESYS. */
static int
poll_one(int fd, short events, int timeout_ms, short *revents)
{
	struct pollfd pfd;
	int r;

	pfd.fd = fd;
	pfd.events = events;
	pfd.revents = 0;
	do
		r = poll(&pfd, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return STEP_ESYS;
	if (r == 0)
		return STEP_ETIMEDOUT;
	if (revents != NULL)
		*revents = pfd.revents;
	return STEP_OK;
}

/* OpenSSL's socket BIO write()s, which raises SIGPIPE when the server has gone; the agent
 * must get EPIPE instead, like the plain path's MSG_NOSIGNAL. So: a minimal socket BIO. */
static int
bio_write(BIO *b, const char *p, int n)
{
	struct conn *c = BIO_get_data(b);
	ssize_t k;

	BIO_clear_retry_flags(b);
	do
		k = send(c->fd, p, (size_t)n, MSG_NOSIGNAL);
	while (k < 0 && errno == EINTR);
	if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_write(b);
	return (int)k;
}

static int
bio_read(BIO *b, char *p, int n)
{
	struct conn *c = BIO_get_data(b);
	ssize_t k;

	BIO_clear_retry_flags(b);
	do
		k = recv(c->fd, p, (size_t)n, 0);
	while (k < 0 && errno == EINTR);
	if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_read(b);
	return (int)k;
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

/* Makes the BIO over c's socket; 0 or STEP_ENOMEM. */
static int
bio_attach(struct conn *c)
{
	BIO *b;

	if ((c->bios = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "step socket")) == NULL ||
	    BIO_meth_set_write(c->bios, bio_write) != 1 ||
	    BIO_meth_set_read(c->bios, bio_read) != 1 ||
	    BIO_meth_set_ctrl(c->bios, bio_ctrl) != 1 || (b = BIO_new(c->bios)) == NULL)
		return STEP_ENOMEM;
	BIO_set_data(b, c);
	BIO_set_init(b, 1);
	SSL_set_bio(c->ssl, b, b);
	return STEP_OK;
}

/* Explains a failed handshake: verification first, then OpenSSL's reason. */
static int
tls_handshake_error(struct conn *c, int e, const char *host, int port, char *errbuf, size_t errlen)
{
	long v = SSL_get_verify_result(c->ssl);

	if (v != X509_V_OK) {
		snprintf(errbuf, errlen, "certificate verify failed: %s (server %s port %d)",
		    X509_verify_cert_error_string(v), host, port);
		return STEP_ETLS;
	}
	if (ERR_peek_last_error() == 0 && (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN)) {
		/* No TLS error: the peer hung up (a restart or a full server): worth a retry. */
		snprintf(errbuf, errlen,
		    "TLS handshake with %s port %d failed: the server closed the connection", host,
		    port);
		return STEP_ECONNECT;
	}
	snprintf(errbuf, errlen, "TLS handshake with %s port %d failed: %s (is it a TLS port?)",
	    host, port, conn_tls_reason("protocol error"));
	return STEP_ETLS;
}

/* TLS on the connected socket: SNI and name check for host names, address check for IP
 * literals, then the handshake within the connection's timeout. */
static int
tls_start(struct conn *c, const char *host, int port, const char *ca, char *errbuf, size_t errlen)
{
	X509_VERIFY_PARAM *vp;
	unsigned char addr[sizeof(struct in6_addr)];
	uint64_t deadline, now;
	short rev;
	int r, e;

	if ((r = tls_ctx_new(ca, &c->ctx, errbuf, errlen)) != 0)
		return r;
	if ((c->wbuf = malloc(TLS_REC)) == NULL || (c->ssl = SSL_new(c->ctx)) == NULL ||
	    bio_attach(c) != 0) {
		snprintf(errbuf, errlen, "out of memory");
		return STEP_ENOMEM;
	}
	vp = SSL_get0_param(c->ssl);
	if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) {
		r = X509_VERIFY_PARAM_set1_ip_asc(vp, host);
	} else {
		X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		r = SSL_set1_host(c->ssl, host) == 1 && SSL_set_tlsext_host_name(c->ssl, host) == 1;
	}
	if (r != 1) {
		snprintf(errbuf, errlen, "TLS: cannot check the name '%s'", host);
		return STEP_ETLS;
	}
	SSL_set_connect_state(c->ssl);
	deadline = util_now_ms() + (uint64_t)c->timeout_ms;
	for (;;) {
		ERR_clear_error();
		if ((r = SSL_do_handshake(c->ssl)) == 1)
			return STEP_OK;
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_SYSCALL && errno == EINTR)
			continue;
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
			return tls_handshake_error(c, e, host, port, errbuf, errlen);
		now = util_now_ms();
		r = now >= deadline ? STEP_ETIMEDOUT
		                    : poll_one(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
		                          (int)(deadline - now), &rev);
		if (r == STEP_ETIMEDOUT) {
			snprintf(
			    errbuf, errlen, "TLS handshake with %s port %d timed out", host, port);
			return r;
		}
		if (r != 0) {
			snprintf(errbuf, errlen, "poll: %s", strerror(errno));
			return r;
		}
	}
}

int
conn_open(const char *host, int port, int tls, const char *ca, int timeout_ms, struct conn **outp,
    char *errbuf, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct conn *c;
	char portstr[16];
	int fd = -1, rc, saved = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof(portstr), "%d", port);
	if ((rc = getaddrinfo(host, portstr, &hints, &res)) != 0) {
		snprintf(errbuf, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
		return STEP_ECONNECT;
	}
	for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
		if ((fd = connect_one(ai, timeout_ms)) < 0)
			saved = errno;
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(errbuf, errlen, "cannot connect to %s port %d: %s", host, port,
		    strerror(saved));
		return saved == ETIMEDOUT ? STEP_ETIMEDOUT : STEP_ECONNECT;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return STEP_ENOMEM;
	}
	c->fd = fd;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
	if (tls && (rc = tls_start(c, host, port, ca, errbuf, errlen)) != 0) {
		conn_free(c);
		return rc;
	}
	*outp = c;
	return STEP_OK;
}

void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->ssl != NULL && SSL_is_init_finished(c->ssl))
		SSL_shutdown(c->ssl); /* close_notify, best effort: the socket is non-blocking */
	SSL_free(c->ssl);
	SSL_CTX_free(c->ctx);
	BIO_meth_free(c->bios);
	free(c->wbuf);
	close(c->fd);
	free(c);
}

int
conn_fd(const struct conn *c)
{
	return c->fd;
}

void
conn_set_timeout(struct conn *c, int timeout_ms)
{
	if (timeout_ms > 0)
		c->timeout_ms = timeout_ms;
}

int
conn_timeout(const struct conn *c)
{
	return c->timeout_ms;
}

/* Maps a failed SSL_read/SSL_write that is not a WANT_*: STEP_ECLOSED, or STEP_ESYS with
 * errno (EPROTO for a TLS protocol error such as a bad record or an alert). */
static int
tls_fail(int e)
{
	if (e == SSL_ERROR_ZERO_RETURN)
		return STEP_ECLOSED;
	if (e == SSL_ERROR_SYSCALL) {
		if (errno == 0 || errno == EPIPE || errno == ECONNRESET)
			return STEP_ECLOSED;
		return STEP_ESYS;
	}
	errno = EPROTO;
	return STEP_ESYS;
}

/* Reads decrypted bytes until n are in or OpenSSL needs the socket. */
static int
tls_read(struct conn *c, uint8_t *p, size_t n, size_t *got)
{
	size_t total = 0;
	int k, e;

	c->rd_wants_write = 0;
	while (total < n) {
		ERR_clear_error();
		k = SSL_read(c->ssl, p + total, n - total > INT_MAX ? INT_MAX : (int)(n - total));
		if (k > 0) {
			total += (size_t)k;
			continue;
		}
		e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_WRITE)
			c->rd_wants_write = 1;
		else if (e == SSL_ERROR_SYSCALL && errno == EINTR)
			continue;
		else if (e != SSL_ERROR_WANT_READ && total == 0)
			return tls_fail(e);
		break; /* an error after some data shows again on the next call */
	}
	*got = total;
	return STEP_OK;
}

/* Copies up to max bytes of iov from (i, off) into dst; returns the count. */
static size_t
gather(const struct iovec *iov, int iovcnt, int i, size_t off, uint8_t *dst, size_t max)
{
	size_t n = 0, k;

	for (; i < iovcnt && n < max; i++, off = 0) {
		k = iov[i].iov_len - off;
		if (k > max - n)
			k = max - n;
		memcpy(dst + n, (const uint8_t *)iov[i].iov_base + off, k);
		n += k;
	}
	return n;
}

/*
 * Encrypts and sends as much of iov as the socket takes. A short iovec followed by more
 * (a packet header before its block) is gathered with the next bytes into one full
 * record; long ones go to SSL_write directly, at most TLS_WCHUNK at a time. A write that
 * must wait is offered the same bytes again by the caller, so the lengths OpenSSL sees on
 * retry never shrink (partial writes and moving buffers are enabled).
 */
static int
tls_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *put)
{
	const uint8_t *p;
	size_t done = 0, off = 0, len;
	int i = 0, k, e;

	c->wr_wants_read = 0;
	for (;;) {
		while (i < iovcnt && off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			i++;
		}
		if (i >= iovcnt)
			break;
		p = (const uint8_t *)iov[i].iov_base + off;
		len = iov[i].iov_len - off;
		if (len < TLS_REC && i + 1 < iovcnt) {
			len = gather(iov, iovcnt, i, off, c->wbuf, TLS_REC);
			p = c->wbuf;
		} else if (len > TLS_WCHUNK) {
			len = TLS_WCHUNK;
		}
		ERR_clear_error();
		k = SSL_write(c->ssl, p, (int)len);
		if (k > 0) {
			done += (size_t)k;
			off += (size_t)k;
			continue;
		}
		e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_READ)
			c->wr_wants_read = 1;
		else if (e == SSL_ERROR_SYSCALL && errno == EINTR)
			continue;
		else if (e != SSL_ERROR_WANT_WRITE && done == 0)
			return tls_fail(e);
		break;
	}
	*put = done;
	return STEP_OK;
}

int
conn_read(struct conn *c, void *p, size_t n, size_t *got)
{
	ssize_t k;

	if (c->ssl != NULL)
		return tls_read(c, p, n, got);
	for (;;) {
		k = recv(c->fd, p, n, 0);
		if (k > 0) {
			*got = (size_t)k;
			return STEP_OK;
		}
		if (k == 0)
			return STEP_ECLOSED;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			*got = 0;
			return STEP_OK;
		}
		if (errno == ECONNRESET)
			return STEP_ECLOSED;
		return STEP_ESYS;
	}
}

int
conn_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *put)
{
	struct msghdr mh;
	ssize_t k;

	if (c->ssl != NULL)
		return tls_writev(c, iov, iovcnt, put);
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = (struct iovec *)(uintptr_t)iov;
	mh.msg_iovlen = (size_t)iovcnt;
	for (;;) {
		k = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (k >= 0) {
			*put = (size_t)k;
			return STEP_OK;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			*put = 0;
			return STEP_OK;
		}
		if (errno == EPIPE || errno == ECONNRESET)
			return STEP_ECLOSED;
		return STEP_ESYS;
	}
}

int
conn_wait(struct conn *c, int want_write, int timeout_ms, int *rd, int *wr)
{
	short ev = POLLIN, rev = 0;
	int r, pending = c->ssl != NULL && SSL_pending(c->ssl) > 0;

	/* TLS: a write that waits for the peer's records needs POLLIN, not POLLOUT (which
	 * would wake us at once, forever); a read that must send first needs POLLOUT. */
	if ((want_write && !c->wr_wants_read) || c->rd_wants_write)
		ev |= POLLOUT;
	/* Decrypted bytes already held by OpenSSL: readable now, whatever the socket says. */
	r = poll_one(c->fd, ev, pending ? 0 : (timeout_ms < 0 ? c->timeout_ms : timeout_ms), &rev);
	if (r == STEP_ETIMEDOUT && pending) {
		r = STEP_OK;
		rev = 0;
	}
	if (r != 0)
		return r;
	if (rd != NULL)
		*rd = pending || (rev & (POLLIN | POLLHUP | POLLERR)) != 0 ||
		    (c->rd_wants_write && (rev & POLLOUT) != 0);
	if (wr != NULL)
		*wr = want_write &&
		    ((rev & POLLERR) != 0 ||
		        (c->wr_wants_read ? (rev & (POLLIN | POLLHUP)) != 0
		                          : (rev & POLLOUT) != 0));
	return STEP_OK;
}

/* Waits until a stalled write can go on, up to the connection's timeout. */
static int
wait_writable(struct conn *c)
{
	return poll_one(c->fd, c->wr_wants_read ? POLLIN : POLLOUT, c->timeout_ms, NULL);
}

int
conn_writev_full(struct conn *c, const struct iovec *iov, int iovcnt)
{
	struct iovec v[8];
	size_t put;
	int i, n = 0, r;

	if (iovcnt > 8)
		return STEP_EINVAL;
	for (i = 0; i < iovcnt; i++)
		if (iov[i].iov_len > 0)
			v[n++] = iov[i];
	i = 0;
	while (i < n) {
		if ((r = conn_writev(c, v + i, n - i, &put)) != 0)
			return r;
		if (put == 0) {
			if ((r = wait_writable(c)) != 0)
				return r;
			continue;
		}
		while (i < n && put >= v[i].iov_len) {
			put -= v[i].iov_len;
			i++;
		}
		if (i < n) {
			v[i].iov_base = (uint8_t *)v[i].iov_base + put;
			v[i].iov_len -= put;
		}
	}
	return STEP_OK;
}
