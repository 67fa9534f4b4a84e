/*
 * loop.c — epoll workers, accept, per-connection I/O (plain or TLS), deferred replies from
 * the commit thread, idle timeouts, the connection limit and graceful stop. Never blocks
 * on a socket: a slow reader only stops its own connection from being read (backpressure).
 *
 * TLS connections run the same state machine behind SSL_read/SSL_write. The handshake is
 * driven by the events it asks for and bounded by the idle timeout (which only data
 * resets). Decrypted bytes held by OpenSSL wake no epoll, so they are read as soon as the
 * connection may read again; a write waiting for the peer's records waits on EPOLLIN.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "codec.h"
#include "conn_state.h"
#include "err.h"
#include "handler.h"
#include "log.h"
#include "loop.h"
#include "step.h"
#include "store.h"
#include "tls.h"
#include "util.h"

#define OUT_LIMIT       (1u << 20) /* stop reading a connection with this much unsent */
#define MAX_EVENTS      256
#define READ_CHUNK      (256u << 10) /* bytes per recv */
#define STOP_GRACE_MS   5000
#define READ_BUDGET     (1u << 20) /* bytes read from one connection per event at most */
#define SRC_BUCKETS     1024
#define ACCEPT_PAUSE_MS 250   /* listener off after EMFILE/ENFILE */
#define EMFILE_LOG_MS   60000 /* at most one such log line per minute */

/* Connections of one client address (IPv4 address, IPv6 /64). Under the loop's cmu. */
struct src {
	uint8_t key[17]; /* family tag, then 4 or 8 address bytes */
	int conns;       /* open connections */
	int unauth;      /* ...of which not authenticated yet */
	struct src *next;
};

struct worker;

struct conn {
	int fd;
	struct worker *w;
	struct conn_state cs;
	uint64_t last_ms;   /* last activity, monotonic */
	uint32_t events;    /* registered epoll mask */
	int dead;           /* fd closed; freed when no reply is pending */
	int peer_closed;    /* EOF seen */
	SSL *ssl;           /* TLS connections only; owned */
	uint32_t hs_want;   /* TLS handshake in progress: the event it waits for, else 0 */
	int rd_wants_write; /* the last SSL_read needs EPOLLOUT */
	int wr_wants_read;  /* the last SSL_write needs EPOLLIN */
	int tls_failed;     /* fatal TLS error: no close_notify */
	uint64_t born_ms;   /* accepted, monotonic: the login deadline counts from here */
	struct src *src;    /* its address's counters (referenced while open) */
	int auth_counted;   /* src->unauth no longer counts this connection */
	int in_ready;       /* on the worker's ready list */
	struct conn *rnext; /* ready list link */
	struct conn *prev, *next;
};

struct completion {
	struct conn_slot *slot; /* its owner is the struct conn */
	json_t *reply;
	struct handler_pkt *pkt;
	struct completion *next;
};

struct worker {
	struct loop *l;
	int id;
	int epfd, evfd;
	pthread_t thread;
	struct handler h;
	pthread_mutex_t qmu;
	struct completion *qhead, *qtail;
	struct conn *conns;    /* live connections */
	struct conn *grave;    /* dead connections waiting for their pending reply */
	struct conn *ready;    /* TLS connections with decrypted bytes left over the budget */
	uint64_t paused_until; /* listeners off until then (EMFILE/ENFILE), 0: listening */
};

struct loop {
	struct loop_opts o;
	int lfd;
	int tls_lfd;      /* -1: no TLS listener */
	SSL_CTX *tls_ctx; /* shared by the workers (thread-safe for SSL_new) */
	int nworkers;
	struct worker *workers;
	volatile int stopping;
	int nconns; /* under cmu */
	pthread_mutex_t cmu;
	struct src *src[SRC_BUCKETS]; /* under cmu */
	int spare_fd;                 /* /dev/null, given up to refuse a connection at EMFILE */
	unsigned long emfile_n;       /* EMFILE/ENFILE since the last log line (under cmu) */
	uint64_t emfile_logged;       /* monotonic ms of that line, 0: never */
	sigset_t sigs;
};

static char tag_listen, tag_listen_tls, tag_event;

/* The per-source key of an address: IPv4 (and IPv4-mapped IPv6) by address, IPv6 by /64. */
static void
src_key(const struct sockaddr_storage *ss, uint8_t key[17])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(key, 0, 17);
	if (ss->ss_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		const uint8_t *a =
		    ((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr.s6_addr;

		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			key[0] = 4;
			memcpy(key + 1, a + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, a, 8);
		}
	}
}

static size_t
src_bucket(const uint8_t key[17])
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % SRC_BUCKETS;
}

/* Counts a new connection from key, or refuses it (NULL, *why set) when its address is at
 * a limit. NULL with *why NULL: out of memory (refused too). Under cmu. */
static struct src *
src_take(struct loop *l, const uint8_t key[17], const char **why)
{
	struct src **pp = &l->src[src_bucket(key)], *e;

	*why = NULL;
	for (e = *pp; e != NULL; e = e->next)
		if (memcmp(e->key, key, 17) == 0)
			break;
	if (e != NULL && l->o.max_per_source > 0 && e->conns >= l->o.max_per_source) {
		*why = "Too many connections from your address.";
		return NULL;
	}
	if (e != NULL && l->o.max_unauth_per_source > 0 &&
	    e->unauth >= l->o.max_unauth_per_source) {
		*why = "Too many unauthenticated connections from your address.";
		return NULL;
	}
	if (e == NULL) {
		if ((e = calloc(1, sizeof(*e))) == NULL)
			return NULL;
		memcpy(e->key, key, 17);
		e->next = *pp;
		*pp = e;
	}
	e->conns++;
	e->unauth++;
	return e;
}

/* Forgets one connection of e (unauth: it was still counted as unauthenticated). */
static void
src_drop(struct loop *l, struct src *e, int unauth)
{
	struct src **pp;

	e->conns--;
	e->unauth -= unauth;
	if (e->conns > 0)
		return;
	for (pp = &l->src[src_bucket(e->key)]; *pp != NULL; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	free(e);
}

static void
worker_post(void *post_arg, void *cookie, json_t *reply, struct handler_pkt *pkt)
{
	struct worker *w = post_arg;
	struct completion *c = malloc(sizeof(*c));
	uint64_t one = 1;
	int was_empty;

	if (c == NULL) {
		/* Cannot deliver: the connection will time out; better than a crash. */
		log_error("out of memory delivering a reply");
		json_decref(reply);
		free(pkt);
		return;
	}
	c->slot = cookie;
	c->reply = reply;
	c->pkt = pkt;
	c->next = NULL;
	pthread_mutex_lock(&w->qmu);
	was_empty = w->qhead == NULL;
	if (w->qtail != NULL)
		w->qtail->next = c;
	else
		w->qhead = c;
	w->qtail = c;
	pthread_mutex_unlock(&w->qmu);
	/* One wake-up per batch of replies: a non-empty queue has been signalled already, and
	 * the worker reads the eventfd before it takes the queue, so nothing is left behind. */
	if (was_empty && write(w->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("eventfd write");
}

static void
conn_free(struct conn *c)
{
	conn_state_release(&c->cs);
	free(c);
}

static void
list_unlink(struct conn **head, struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		*head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void
list_push(struct conn **head, struct conn *c)
{
	c->prev = NULL;
	c->next = *head;
	if (*head != NULL)
		(*head)->prev = c;
	*head = c;
}

/* Closes the socket; the struct lives on (in the grave) until nothing refers to it. */
static void
conn_close(struct conn *c)
{
	struct loop *l = c->w->l;

	if (c->dead)
		return;
	epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (c->ssl != NULL) {
		if (c->hs_want == 0 && !c->tls_failed)
			SSL_shutdown(c->ssl); /* close_notify, best effort (non-blocking) */
		SSL_free(c->ssl);
		c->ssl = NULL;
		ERR_clear_error();
	}
	close(c->fd);
	c->fd = -1;
	c->dead = 1;
	list_unlink(&c->w->conns, c);
	list_push(&c->w->grave, c);
	if (c->in_ready) {
		struct conn **pp;

		for (pp = &c->w->ready; *pp != NULL; pp = &(*pp)->rnext)
			if (*pp == c) {
				*pp = c->rnext;
				break;
			}
		c->in_ready = 0;
	}
	pthread_mutex_lock(&l->cmu);
	l->nconns--;
	if (c->src != NULL)
		src_drop(l, c->src, !c->auth_counted);
	c->src = NULL;
	pthread_mutex_unlock(&l->cmu);
}

/* Once a connection has authenticated, it no longer counts against its address's limit
 * of unauthenticated connections. */
static void
conn_note_auth(struct conn *c)
{
	if (c->auth_counted || !c->cs.authed)
		return;
	c->auth_counted = 1;
	pthread_mutex_lock(&c->w->l->cmu);
	if (c->src != NULL)
		c->src->unauth--;
	pthread_mutex_unlock(&c->w->l->cmu);
}

/* Frees dead connections that have no deferred reply outstanding. */
static void
bury(struct worker *w)
{
	struct conn *c = w->grave, *next;

	for (; c != NULL; c = next) {
		next = c->next;
		if (!conn_state_pending(&c->cs)) {
			list_unlink(&w->grave, c);
			conn_free(c);
		}
	}
}

/* recv() or SSL_read(): like recv(), with -1/EAGAIN when TLS needs to wait (either way). */
static ssize_t
conn_recv(struct conn *c, void *p, size_t n)
{
	int k, e;

	if (c->ssl == NULL)
		return recv(c->fd, p, n, 0);
	c->rd_wants_write = 0;
	ERR_clear_error();
	if ((k = SSL_read(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n)) > 0)
		return k;
	e = SSL_get_error(c->ssl, k);
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		c->rd_wants_write = e == SSL_ERROR_WANT_WRITE;
		errno = EAGAIN;
		return -1;
	}
	log_debug("TLS read: %s", tls_reason("connection reset"));
	c->tls_failed = 1;
	errno = EPROTO;
	return -1;
}

/* send() or SSL_write(), like send(). */
static ssize_t
conn_send(struct conn *c, const void *p, size_t n)
{
	int k, e;

	if (c->ssl == NULL)
		return send(c->fd, p, n, MSG_NOSIGNAL);
	c->wr_wants_read = 0;
	ERR_clear_error();
	if ((k = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n)) > 0)
		return k;
	e = SSL_get_error(c->ssl, k);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		c->wr_wants_read = e == SSL_ERROR_WANT_READ;
		errno = EAGAIN;
		return -1;
	}
	c->tls_failed = 1;
	errno = EPIPE;
	return -1;
}

/* Moves the handshake on. 0: done or waiting (hs_want says for what); -1: failed, closed. */
static int
conn_handshake(struct conn *c)
{
	int k, e;

	ERR_clear_error();
	if ((k = SSL_do_handshake(c->ssl)) == 1) {
		c->hs_want = 0;
		log_debug("TLS %s %s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
		return 0;
	}
	e = SSL_get_error(c->ssl, k);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		c->hs_want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
		return 0;
	}
	/* A client mistake (plain STEP on the TLS port, an untrusted certificate): info. */
	log_info("TLS handshake failed: %s",
	    e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN
	        ? "the client closed the connection"
	        : tls_reason("protocol error"));
	c->tls_failed = 1;
	conn_close(c);
	return -1;
}

static int
conn_flush(struct conn *c)
{
	/* Before the answer leaves: a client that opens its next connection as soon as it
	 * has its LOGIN answer must find this one counted as authenticated. */
	conn_note_auth(c);
	while (buf_avail(&c->cs.out) > 0) {
		ssize_t n = conn_send(c, buf_ptr(&c->cs.out), buf_avail(&c->cs.out));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		buf_consume(&c->cs.out, (size_t)n);
		c->last_ms = util_now_ms();
	}
	return 0;
}

/* Registers the events the connection wants now, or closes it when it is finished. */
static void
conn_update(struct conn *c)
{
	struct epoll_event ev;
	uint32_t want = 0;

	if (c->dead)
		return;
	conn_note_auth(c);
	if (buf_avail(&c->cs.out) == 0 && !conn_state_pending(&c->cs) &&
	    (c->cs.closing || c->peer_closed || c->w->l->stopping)) {
		/* Everything owed has been sent: BYE, lost framing, EOF or shutdown. */
		conn_close(c);
		return;
	}
	if (!c->w->l->stopping && !c->peer_closed && conn_state_want_read(&c->cs, OUT_LIMIT))
		want |= EPOLLIN;
	if (buf_avail(&c->cs.out) > 0)
		want |= EPOLLOUT;
	if (c->ssl != NULL) {
		/* A write waiting for the peer's records must not spin on EPOLLOUT. */
		if (c->wr_wants_read && buf_avail(&c->cs.out) > 0)
			want = (want & ~(uint32_t)EPOLLOUT) | EPOLLIN;
		if (c->rd_wants_write)
			want |= EPOLLOUT;
		if (c->hs_want != 0)
			want = c->hs_want;
	}
	if (want == c->events)
		return;
	ev.events = want;
	ev.data.ptr = c;
	if (epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->events = want;
}

/* 1 when OpenSSL holds decrypted bytes that the connection may read now: epoll will not
 * report them. */
static int
conn_tls_more(struct conn *c)
{
	return c->ssl != NULL && !c->dead && c->hs_want == 0 && !c->peer_closed &&
	    !c->w->l->stopping && SSL_pending(c->ssl) > 0 &&
	    conn_state_want_read(&c->cs, OUT_LIMIT);
}

/* Reads what the socket (through TLS) has, handling requests as it goes. 0, or -1 when
 * the connection was closed. */
static int
conn_read_some(struct conn *c)
{
	size_t got = 0;

	if (c->ssl != NULL && c->hs_want != 0 && (conn_handshake(c) != 0 || c->hs_want != 0))
		return c->dead ? -1 : 0;
	/* At most READ_BUDGET bytes per event: other connections are served in between (a
	 * plain socket with more to read is reported again, level-triggered; a TLS one with
	 * decrypted bytes left goes on the worker's ready list). */
	while (got < READ_BUDGET) {
		size_t room = conn_state_room(&c->cs);
		ssize_t n;

		if (room > READ_CHUNK)
			room = READ_CHUNK;
		if (!conn_state_want_read(&c->cs, OUT_LIMIT) || buf_reserve(&c->cs.in, room) != 0)
			break;
		n = conn_recv(c, buf_tail(&c->cs.in), room);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_close(c);
			return -1;
		}
		if (n == 0) {
			c->peer_closed = 1;
			break;
		}
		buf_commit(&c->cs.in, (size_t)n);
		got += (size_t)n;
		c->last_ms = util_now_ms();
		/* Handle as we go so one connection cannot pile up unbounded input, and send the
		 * answers as we go: a pipelining client waits for them to keep its window open. */
		conn_state_process(&c->cs, &c->w->h, c, OUT_LIMIT);
		if (c->cs.closing)
			break;
		if (buf_avail(&c->cs.out) > 0 && conn_flush(c) != 0) {
			conn_close(c);
			return -1;
		}
	}
	return 0;
}

static void
conn_process(struct conn *c)
{
	size_t before;
	int full, again, tls_rounds = 0;

	/* Requests already read may be waiting for room in the output: when a flush makes
	 * room, handle them now. No epoll event comes for bytes already read, so a pipelining
	 * client that has sent everything would otherwise wait forever. The same holds for
	 * bytes OpenSSL has decrypted but not handed over yet: read them now. Each round
	 * handles or reads something, so this ends. */
	do {
		before = buf_avail(&c->cs.in);
		full = buf_avail(&c->cs.out) + c->cs.queued >= OUT_LIMIT;
		if (!c->w->l->stopping)
			conn_state_process(&c->cs, &c->w->h, c, OUT_LIMIT);
		if (conn_flush(c) != 0) {
			conn_close(c);
			return;
		}
		again = !c->w->l->stopping && buf_avail(&c->cs.out) == 0 &&
		    c->cs.queued < OUT_LIMIT && buf_avail(&c->cs.in) > 0 &&
		    (buf_avail(&c->cs.in) < before || full);
		if (!again && conn_tls_more(c)) {
			if (tls_rounds++ > 0) {
				/* Over the budget: the worker comes back after other events. */
				if (!c->in_ready) {
					c->in_ready = 1;
					c->rnext = c->w->ready;
					c->w->ready = c;
				}
				break;
			}
			if (conn_read_some(c) != 0)
				return;
			again = 1;
		}
	} while (again);
	conn_update(c);
}

static void
conn_readable(struct conn *c)
{
	if (conn_read_some(c) == 0 && !c->dead)
		conn_process(c);
}

/* Answers msg (NULL: nothing, as on the TLS port, where no STEP can be spoken before the
 * handshake) and closes. */
static void
refuse(int fd, const char *msg)
{
	struct buf b;

	if (msg == NULL) {
		close(fd);
		return;
	}
	buf_init(&b, 4096);
	if (handler_send_error(&b, STEP_ST_UNAVAILABLE, msg) == 0)
		if (send(fd, buf_ptr(&b), buf_avail(&b), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_debug("refusal not sent: %s", strerror(errno));
	buf_release(&b);
	close(fd);
}

static void
listeners_ctl(struct worker *w, int op)
{
	struct loop *l = w->l;
	struct epoll_event ev;

	ev.events = EPOLLIN | EPOLLEXCLUSIVE;
	ev.data.ptr = &tag_listen;
	if (l->lfd >= 0)
		epoll_ctl(w->epfd, op, l->lfd, &ev);
	ev.data.ptr = &tag_listen_tls;
	if (l->tls_lfd >= 0)
		epoll_ctl(w->epfd, op, l->tls_lfd, &ev);
}

/*
 * Out of descriptors: the waiting connection is refused through the spare descriptor
 * (closed, the connection accepted and closed at once, the spare opened again), the
 * worker stops listening for ACCEPT_PAUSE_MS instead of spinning on a listener that stays
 * readable, and one line per EMFILE_LOG_MS says so.
 */
static void
accept_overload(struct worker *w, int lfd, int err)
{
	struct loop *l = w->l;
	uint64_t now = util_now_ms();
	unsigned long n = 0;
	int fd;

	pthread_mutex_lock(&l->cmu);
	if (l->spare_fd >= 0) {
		close(l->spare_fd);
		if ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
			close(fd);
		l->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	l->emfile_n++;
	if (l->emfile_logged == 0 || now - l->emfile_logged >= EMFILE_LOG_MS) {
		n = l->emfile_n;
		l->emfile_n = 0;
		l->emfile_logged = now;
	}
	pthread_mutex_unlock(&l->cmu);
	if (n > 0)
		log_warnx("accept: %s: refusing new connections until descriptors are free "
		          "(%lu time(s); logged at most once a minute)",
		    strerror(err), n);
	if (w->paused_until == 0)
		listeners_ctl(w, EPOLL_CTL_DEL);
	w->paused_until = now + ACCEPT_PAUSE_MS;
}

/* Accepts from the plain (tls 0) or the TLS listener. */
static void
worker_accept(struct worker *w, int tls)
{
	struct loop *l = w->l;

	for (;;) {
		struct epoll_event ev;
		struct sockaddr_storage peer;
		socklen_t peerlen = sizeof(peer);
		struct conn *c;
		int fd, one = 1, full;
		const char *why = NULL;
		struct src *src = NULL;
		uint8_t key[17];

		fd = accept4(tls ? l->tls_lfd : l->lfd, (struct sockaddr *)&peer, &peerlen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE)
				accept_overload(w, tls ? l->tls_lfd : l->lfd, errno);
			return;
		}
		src_key(&peer, key);
		pthread_mutex_lock(&l->cmu);
		full = l->nconns >= l->o.max_connections;
		if (!full && (src = src_take(l, key, &why)) != NULL)
			l->nconns++;
		pthread_mutex_unlock(&l->cmu);
		if (full) {
			log_info("connection refused: limit of %d reached", l->o.max_connections);
			refuse(fd, tls ? NULL : "Too many connections.");
			continue;
		}
		if (src == NULL) {
			/* Rate-limited by its nature: one line per refused connection at debug. */
			log_debug("connection refused: %s", why != NULL ? why : "out of memory");
			refuse(fd, tls ? NULL : why != NULL ? why : "Server out of memory.");
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if ((c = calloc(1, sizeof(*c))) == NULL ||
		    (tls && (c->ssl = SSL_new(l->tls_ctx)) == NULL)) {
			free(c);
			refuse(fd, tls ? NULL : "Server out of memory.");
			pthread_mutex_lock(&l->cmu);
			l->nconns--;
			src_drop(l, src, 1);
			pthread_mutex_unlock(&l->cmu);
			continue;
		}
		c->fd = fd;
		c->w = w;
		c->src = src;
		c->last_ms = c->born_ms = util_now_ms();
		conn_state_init(&c->cs, l->o.max_bin);
		conn_state_set_peer(&c->cs, (struct sockaddr *)&peer);
		if (c->ssl != NULL) {
			/* The default socket BIO; stepd ignores SIGPIPE. */
			SSL_set_fd(c->ssl, fd);
			SSL_set_accept_state(c->ssl);
			c->hs_want = EPOLLIN;
		}
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			SSL_free(c->ssl);
			conn_free(c);
			refuse(fd, tls ? NULL : "Server busy.");
			pthread_mutex_lock(&l->cmu);
			l->nconns--;
			src_drop(l, src, 1);
			pthread_mutex_unlock(&l->cmu);
			continue;
		}
		c->events = EPOLLIN;
		list_push(&w->conns, c);
	}
}

/* Delivers deferred replies posted by the commit thread. */
static void
worker_completions(struct worker *w)
{
	struct completion *q, *next;
	uint64_t v;

	if (read(w->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("eventfd read");
	pthread_mutex_lock(&w->qmu);
	q = w->qhead;
	w->qhead = w->qtail = NULL;
	pthread_mutex_unlock(&w->qmu);
	for (; q != NULL; q = next) {
		struct conn *c = q->slot->owner;

		next = q->next;
		conn_state_deliver(&c->cs, q->slot, q->reply, q->pkt);
		if (!c->dead)
			conn_process(c);
		free(q);
	}
}

static void
worker_timeouts(struct worker *w)
{
	uint64_t now = util_now_ms(), limit = (uint64_t)w->l->o.idle_timeout * 1000;
	uint64_t login = (uint64_t)w->l->o.login_timeout * 1000;
	struct conn *c, *next;

	for (c = w->conns; c != NULL; c = next) {
		next = c->next;
		if (conn_state_pending(&c->cs))
			continue;
		if (now - c->last_ms >= limit) {
			log_debug("closing idle connection");
			conn_close(c);
		} else if (!c->cs.authed && now - c->born_ms >= login) {
			log_debug("closing connection from %s: no login within %d s",
			    c->cs.peer[0] != '\0' ? c->cs.peer : "?", w->l->o.login_timeout);
			conn_close(c);
		}
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct loop *l = w->l;
	struct epoll_event evs[MAX_EVENTS];
	uint64_t next_tick = 0, stop_deadline = 0;
	int tick_ms = l->o.idle_timeout * 1000 / 4;
	int listening = 1;

	if (tick_ms > l->o.login_timeout * 1000 / 4)
		tick_ms = l->o.login_timeout * 1000 / 4;
	if (tick_ms > 1000)
		tick_ms = 1000;
	if (tick_ms < 50)
		tick_ms = 50;
	for (;;) {
		int n, i;

		if (l->stopping) {
			struct conn *c, *next;

			if (listening) {
				if (w->paused_until == 0)
					listeners_ctl(w, EPOLL_CTL_DEL);
				w->paused_until = 0;
				listening = 0;
				stop_deadline = util_now_ms() + STOP_GRACE_MS;
				for (c = w->conns; c != NULL; c = next) {
					next = c->next;
					conn_update(c);
				}
				bury(w);
			}
			if (w->conns == NULL || util_now_ms() >= stop_deadline)
				break;
		}
		if (w->paused_until != 0 && listening && util_now_ms() >= w->paused_until) {
			w->paused_until = 0;
			listeners_ctl(w, EPOLL_CTL_ADD);
		}
		n = epoll_wait(w->epfd, evs, MAX_EVENTS,
		    w->ready != NULL           ? 0
		        : w->paused_until != 0 ? ACCEPT_PAUSE_MS / 2
		                               : tick_ms);
		if (n < 0 && errno != EINTR) {
			log_warn("epoll_wait");
			break;
		}
		for (i = 0; i < n; i++) {
			struct conn *c;

			if (evs[i].data.ptr == &tag_listen || evs[i].data.ptr == &tag_listen_tls) {
				if (!l->stopping)
					worker_accept(w, evs[i].data.ptr == &tag_listen_tls);
				continue;
			}
			if (evs[i].data.ptr == &tag_event) {
				worker_completions(w);
				continue;
			}
			c = evs[i].data.ptr;
			if (c->dead)
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR) ||
			    (c->ssl != NULL && (c->hs_want != 0 || c->rd_wants_write)))
				conn_readable(c);
			else if (evs[i].events & EPOLLOUT)
				conn_process(c);
		}
		if (w->ready != NULL) {
			struct conn *q = w->ready;

			w->ready = NULL;
			while (q != NULL) {
				struct conn *c = q;

				q = c->rnext;
				c->in_ready = 0;
				c->rnext = NULL;
				if (!c->dead)
					conn_process(c);
			}
		}
		/* SAVEs of this round whose answer waits for a lookup (store_check.c): their
		 * UPLOADs, if any, came in the same round. */
		if (w->h.st != NULL)
			store_kick(w->h.st);
		bury(w);
		if (util_now_ms() >= next_tick) {
			worker_timeouts(w);
			bury(w);
			next_tick = util_now_ms() + (uint64_t)tick_ms;
		}
	}
	while (w->conns != NULL)
		conn_close(w->conns);
	bury(w);
	return NULL;
}

/* Listens on the bind address at *port (0: any); *port becomes the real one. */
static int
listen_on(struct loop *l, int *fdp, int *port, char *errbuf, size_t errlen)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	socklen_t slen;
	int fd, one = 1;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, l->o.bind, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)*port);
		slen = sizeof(*s4);
	} else if (inet_pton(AF_INET6, l->o.bind, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)*port);
		slen = sizeof(*s6);
	} else {
		snprintf(errbuf, errlen, "invalid bind address '%s'", l->o.bind);
		return STEP_EINVAL;
	}
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, slen) != 0 || listen(fd, 4096) != 0)
		goto fail;
	if (getsockname(fd, (struct sockaddr *)&ss, &slen) != 0)
		goto fail;
	*port = ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
	*fdp = fd;
	return STEP_OK;
fail:
	snprintf(errbuf, errlen, "cannot listen on %s:%d: %s", l->o.bind, *port, strerror(errno));
	if (fd >= 0)
		close(fd);
	return STEP_ESYS;
}

/* Writes port to file atomically (0644). */
static int
write_port_file(const char *file, int port, char *errbuf, size_t errlen)
{
	char txt[16];
	int n = snprintf(txt, sizeof(txt), "%d\n", port);

	if (util_write_file_atomic(file, txt, (size_t)n, 0644) != 0) {
		snprintf(errbuf, errlen, "cannot write '%s': %s", file, strerror(errno));
		return STEP_ESYS;
	}
	return STEP_OK;
}

int
loop_new(const struct loop_opts *o, struct store *st, struct auth *au, struct loop **out,
    char *errbuf, size_t errlen)
{
	struct loop *l;
	int i, port = o->port, tls_port = o->tls_port, r;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		return STEP_ENOMEM;
	l->o = *o;
	l->lfd = -1;
	l->tls_lfd = -1;
	if (l->o.login_timeout <= 0)
		l->o.login_timeout = LOOP_LOGIN_TIMEOUT;
	/* The spare descriptor: given up to refuse a connection when the others run out. */
	l->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pthread_mutex_init(&l->cmu, NULL);
	sigemptyset(&l->sigs);
	sigaddset(&l->sigs, SIGTERM);
	sigaddset(&l->sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &l->sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (l->o.threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		l->o.threads = n > 0 && n < 256 ? (int)n : 2;
	}
	/* Certificate problems are reported before anything listens. */
	if (o->tls_cert != NULL &&
	    (r = tls_ctx_new(o->tls_cert, o->tls_key, &l->tls_ctx, errbuf, errlen)) != 0)
		goto out;
	if ((o->tls_cert == NULL || !o->no_plain) &&
	    (r = listen_on(l, &l->lfd, &port, errbuf, errlen)) != 0)
		goto out;
	if (o->tls_cert != NULL && (r = listen_on(l, &l->tls_lfd, &tls_port, errbuf, errlen)) != 0)
		goto out;
	l->nworkers = l->o.threads;
	if ((l->workers = calloc((size_t)l->nworkers, sizeof(*l->workers))) == NULL) {
		r = STEP_ENOMEM;
		goto out;
	}
	for (i = 0; i < l->nworkers; i++) {
		struct worker *w = &l->workers[i];
		struct epoll_event ev;

		w->l = l;
		w->id = i;
		w->h.st = st;
		w->h.au = au;
		w->h.post = worker_post;
		w->h.post_arg = w;
		pthread_mutex_init(&w->qmu, NULL);
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->epfd < 0 || w->evfd < 0) {
			snprintf(errbuf, errlen, "epoll/eventfd: %s", strerror(errno));
			r = STEP_ESYS;
			goto out;
		}
		ev.events = EPOLLIN | EPOLLEXCLUSIVE;
		ev.data.ptr = &tag_listen;
		if (l->lfd >= 0 && epoll_ctl(w->epfd, EPOLL_CTL_ADD, l->lfd, &ev) != 0) {
			snprintf(errbuf, errlen, "epoll_ctl: %s", strerror(errno));
			r = STEP_ESYS;
			goto out;
		}
		ev.data.ptr = &tag_listen_tls;
		if (l->tls_lfd >= 0 && epoll_ctl(w->epfd, EPOLL_CTL_ADD, l->tls_lfd, &ev) != 0) {
			snprintf(errbuf, errlen, "epoll_ctl: %s", strerror(errno));
			r = STEP_ESYS;
			goto out;
		}
		ev.events = EPOLLIN;
		ev.data.ptr = &tag_event;
		epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev);
	}
	/* The TLS port file first: whoever waits for the plain one finds both. */
	if (l->tls_lfd >= 0 && o->tls_port_file != NULL &&
	    (r = write_port_file(o->tls_port_file, tls_port, errbuf, errlen)) != 0)
		goto out;
	if (l->lfd >= 0 && o->port_file != NULL &&
	    (r = write_port_file(o->port_file, port, errbuf, errlen)) != 0)
		goto out;
	if (l->tls_lfd >= 0)
		printf("listening on %s:%d (TLS)\n", o->bind, tls_port);
	if (l->lfd >= 0)
		printf("listening on %s:%d\n", o->bind, port);
	fflush(stdout);
	if (l->lfd >= 0)
		log_info("listening on %s:%d%s with %d workers", o->bind, port,
		    l->tls_lfd >= 0 ? " (and TLS on another port)" : "", l->nworkers);
	else
		log_info("TLS only (no plain port) with %d workers", l->nworkers);
	if (l->tls_lfd >= 0)
		log_info("TLS on %s:%d", o->bind, tls_port);
	*out = l;
	l = NULL;
	r = STEP_OK;
out:
	loop_free(l);
	return r;
}

void
loop_set_backend(struct loop *l, struct store *st, struct auth *au)
{
	int i;

	for (i = 0; i < l->nworkers; i++) {
		l->workers[i].h.st = st;
		l->workers[i].h.au = au;
	}
}

int
loop_run(struct loop *l)
{
	int i, sig = 0, started = 0;
	uint64_t one = 1;

	for (i = 0; i < l->nworkers; i++) {
		if (pthread_create(&l->workers[i].thread, NULL, worker_main, &l->workers[i]) != 0) {
			log_warn("cannot start worker %d", i);
			break;
		}
		{
			char name[16]; /* top -H, ps -L and perf tell the threads apart */

			snprintf(name, sizeof(name), "stepd-w%d", i % 1000);
			pthread_setname_np(l->workers[i].thread, name);
		}
		started++;
	}
	if (started > 0)
		sigwait(&l->sigs, &sig);
	log_info("stopping on signal %d", sig);
	l->stopping = 1;
	for (i = 0; i < started; i++)
		if (write(l->workers[i].evfd, &one, sizeof(one)) < 0)
			log_warn("eventfd write");
	for (i = 0; i < started; i++)
		pthread_join(l->workers[i].thread, NULL);
	return started > 0 ? STEP_OK : STEP_ESYS;
}

void
loop_free(struct loop *l)
{
	int i;

	if (l == NULL)
		return;
	for (i = 0; l->workers != NULL && i < l->nworkers; i++) {
		struct worker *w = &l->workers[i];
		struct completion *q, *next;

		/* Replies posted after the worker stopped: their connections are in the grave. */
		for (q = w->qhead; q != NULL; q = next) {
			next = q->next;
			conn_state_deliver(
			    &((struct conn *)q->slot->owner)->cs, q->slot, q->reply, q->pkt);
			free(q);
		}
		while (w->conns != NULL)
			conn_close(w->conns);
		while (w->grave != NULL) {
			struct conn *c = w->grave;

			list_unlink(&w->grave, c);
			conn_free(c);
		}
		if (w->epfd > 0)
			close(w->epfd);
		if (w->evfd > 0)
			close(w->evfd);
		pthread_mutex_destroy(&w->qmu);
	}
	free(l->workers);
	if (l->lfd >= 0)
		close(l->lfd);
	if (l->tls_lfd >= 0)
		close(l->tls_lfd);
	if (l->spare_fd >= 0)
		close(l->spare_fd);
	for (i = 0; i < SRC_BUCKETS; i++)
		while (l->src[i] != NULL) {
			struct src *e = l->src[i];

			l->src[i] = e->next;
			free(e);
		}
	SSL_CTX_free(l->tls_ctx);
	pthread_mutex_destroy(&l->cmu);
	free(l);
}
