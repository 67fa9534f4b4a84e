/*
 * conn.c — TCP connections with timeouts behind the conn.h interface (TLS to come:
 * conn_open() refuses it rather than falling back to plain TCP). Never prints.
 */
#include <errno.h>
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

#include "conn.h"
#include "err.h"
#include "util.h"

struct conn {
	int fd;
	int timeout_ms;
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

int
conn_open(const char *host, int port, int tls, const char *ca, int timeout_ms, struct conn **outp,
    char *errbuf, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct conn *c;
	char portstr[16];
	int fd = -1, rc, saved = 0;

	if (tls) {
		snprintf(errbuf, errlen, "TLS not supported yet");
		return STEP_ETLS;
	}
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
	*outp = c;
	return STEP_OK;
}

void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
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

int
conn_read(struct conn *c, void *p, size_t n, size_t *got)
{
	ssize_t k;

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
	struct pollfd pfd;
	int r;

	pfd.fd = c->fd;
	pfd.events = POLLIN | (want_write ? POLLOUT : 0);
	pfd.revents = 0;
	do
		r = poll(&pfd, 1, timeout_ms < 0 ? c->timeout_ms : timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return STEP_ESYS;
	if (r == 0)
		return STEP_ETIMEDOUT;
	if (rd != NULL)
		*rd = (pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
	if (wr != NULL)
		*wr = (pfd.revents & (POLLOUT | POLLERR)) != 0;
	return STEP_OK;
}

/* Waits for POLLOUT only, up to the connection's timeout. */
static int
wait_writable(struct conn *c)
{
	struct pollfd pfd;
	int r;

	pfd.fd = c->fd;
	pfd.events = POLLOUT;
	do
		r = poll(&pfd, 1, c->timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return STEP_ESYS;
	return r == 0 ? STEP_ETIMEDOUT : STEP_OK;
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
