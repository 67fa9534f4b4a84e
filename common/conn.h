/*
 * conn.h — one connection interface over plain TCP or an OpenSSL TLS session, with
 * timeouts, so nothing above it cares which transport carries the bytes.
 *
 * The socket is non-blocking. conn_read()/conn_writev() move what they can without
 * waiting (for pipelined loops that wait for reading and writing at once);
 * conn_writev_full() waits up to the connection's timeout. Wait with conn_wait(), never
 * with poll() on conn_fd(): TLS may hold decrypted bytes the socket does not show, or
 * need the other direction to go on. After conn_writev() took fewer bytes than offered,
 * offer the rest again (the same bytes, from where it stopped) before anything else.
 * Never prints.
 */
#ifndef STEP_CONN_H
#define STEP_CONN_H

#include <stddef.h>
#include <sys/uio.h>

struct conn; /* opaque */

/*
 * Connects to host:port (every address getaddrinfo() returns, in order) within
 * timeout_ms. tls asks for TLS 1.2 or newer: the server's chain is verified against the
 * PEM bundle ca (NULL: the system trust store) and its name against host (DNS name, with
 * SNI; or IP address for a literal), the handshake within the same timeout. Returns 0 and
 * *outp (free with conn_free()); STEP_ECONNECT (errbuf says why: "connection refused",
 * "unknown host", server hung up during the handshake...), STEP_ETIMEDOUT, STEP_ETLS
 * ("certificate verify failed: hostname mismatch", not a TLS server, unreadable CA file),
 * STEP_ENOMEM.
 */
int conn_open(const char *host, int port, int tls, const char *ca, int timeout_ms,
    struct conn **outp, char *errbuf, size_t errlen);

/* Closes (TLS: sends close_notify, best effort) and frees; conn_free(NULL) does nothing. */
void conn_free(struct conn *c);

/* The descriptor (wait with conn_wait(), see above). */
int conn_fd(const struct conn *c);

/* Timeout of the *_full and wait functions, milliseconds (> 0). */
void conn_set_timeout(struct conn *c, int timeout_ms);
int conn_timeout(const struct conn *c);

/*
 * Non-blocking read of up to n bytes: 0 and *got (0 when nothing is available),
 * STEP_ECLOSED at end of stream, STEP_ESYS (errno kept).
 */
int conn_read(struct conn *c, void *p, size_t n, size_t *got);

/* Non-blocking gathered write: 0 and *put (possibly 0), STEP_ECLOSED (peer reset or
 * closed), STEP_ESYS. */
int conn_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *put);

/* Writes every byte of iov, waiting up to the timeout between progress. 0,
 * STEP_ETIMEDOUT, STEP_ECLOSED, STEP_ESYS. iov is not modified. */
int conn_writev_full(struct conn *c, const struct iovec *iov, int iovcnt);

/*
 * Waits until the connection is readable (want_write 0) or readable or writable
 * (want_write 1), at most timeout_ms (-1: the connection's timeout). 0 and *rd, *wr
 * (either may be NULL), STEP_ETIMEDOUT, STEP_ESYS.
 */
int conn_wait(struct conn *c, int want_write, int timeout_ms, int *rd, int *wr);

/* The reason of this thread's newest OpenSSL error ("certificate verify failed"...), or
 * fallback when there is none. Static strings. */
const char *conn_tls_reason(const char *fallback);

#endif
