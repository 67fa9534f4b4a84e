/*
 * loop.h — stepd's network side: a listening socket, one epoll worker thread per core
 * (the listener added to each with EPOLLEXCLUSIVE), optionally a TLS listener beside it,
 * non-blocking connections driven through conn_state, idle timeouts, a deadline to
 * authenticate, a connection limit in total and per client address (and a smaller one for
 * connections not authenticated yet, after OpenSSH's PerSourceMaxStartups), a per-event
 * read budget so that one busy connection cannot hold a worker, accept back-off when
 * descriptors run out, and SIGTERM/SIGINT handling.
 */
#ifndef STEPD_LOOP_H
#define STEPD_LOOP_H

#include <stdint.h>

struct store;
struct auth;
struct loop;

struct loop_opts {
	const char *bind;      /* IPv4 or IPv6 literal */
	int port;              /* 0: any free port */
	const char *port_file; /* may be NULL; written atomically once listening */
	int threads;           /* workers; 0: one per online CPU */
	int idle_timeout;      /* seconds; also bounds a TLS handshake */
	int max_connections;
	uint32_t max_bin;          /* largest binary part accepted */
	const char *tls_cert;      /* PEM chain; NULL: no TLS listener */
	const char *tls_key;       /* PEM private key, with tls_cert */
	int tls_port;              /* with tls_cert; 0: any free port */
	const char *tls_port_file; /* may be NULL; written before port_file */
	int no_plain;              /* with tls_cert: no plain listener (TLS only) */
	int login_timeout;         /* seconds a connection has to authenticate; 0: default */
	int max_per_source;        /* connections per client address (IPv6: per /64); 0: off */
	int max_unauth_per_source; /* ...of them not authenticated yet; 0: off */
};

#define LOOP_LOGIN_TIMEOUT         20
#define LOOP_MAX_PER_SOURCE        256
#define LOOP_MAX_UNAUTH_PER_SOURCE 32

/*
 * Loads the TLS certificate and key (when tls_cert is set), binds, listens (plain, and TLS
 * beside it), writes the port files and prints "listening on ADDR:PORT" on stdout (after
 * "listening on ADDR:PORT (TLS)").
 * Blocks SIGTERM/SIGINT in the calling thread (call before starting any other thread).
 * Returns 0 and *out, or STEP_ESYS / STEP_EINVAL (bad certificate or key) with errbuf
 * filled.
 */
int loop_new(const struct loop_opts *o, struct store *st, struct auth *au, struct loop **out,
    char *errbuf, size_t errlen);
/* Sets the store and authenticator of a loop made with NULL ones (stepd --setuid opens the
 * root only after binding and dropping privileges); call before loop_run. */
void loop_set_backend(struct loop *l, struct store *st, struct auth *au);
/* Runs the workers until SIGTERM or SIGINT; then lets in-flight replies finish (bounded)
 * and joins the workers. Returns 0. */
int loop_run(struct loop *l);
/* Frees everything; call after the store (and its commit thread) has been freed. */
void loop_free(struct loop *l);

#endif
