/*
 * loop.h — stepd's network side: a listening socket, one epoll worker thread per core
 * (the listener added to each with EPOLLEXCLUSIVE), non-blocking connections driven
 * through conn_state, idle timeouts, a connection limit, and SIGTERM/SIGINT handling.
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
	int idle_timeout;      /* seconds */
	int max_connections;
	uint32_t max_bin; /* largest binary part accepted */
};

/*
 * Binds, listens, writes the port file and prints "listening on ADDR:PORT" on stdout.
 * Blocks SIGTERM/SIGINT in the calling thread (call before starting any other thread).
 * Returns 0 and *out, or STEP_ESYS with errbuf filled.
 */
int loop_new(const struct loop_opts *o, struct store *st, struct auth *au, struct loop **out,
    char *errbuf, size_t errlen);
/* Runs the workers until SIGTERM or SIGINT; then lets in-flight replies finish (bounded)
 * and joins the workers. Returns 0. */
int loop_run(struct loop *l);
/* Frees everything; call after the store (and its commit thread) has been freed. */
void loop_free(struct loop *l);

#endif
