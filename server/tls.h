/*
 * tls.h — stepd's TLS context: the certificate chain and private key from PEM files,
 * TLS 1.2 or newer, OpenSSL's default cipher choice. The loop does the per-connection I/O.
 */
#ifndef STEPD_TLS_H
#define STEPD_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/*
 * Loads cert (a PEM chain, leaf first) and key (PEM) and checks that they match.
 * Returns 0 and *outp (free with SSL_CTX_free()), or STEP_EINVAL / STEP_ENOMEM with
 * errbuf naming the file and the reason.
 */
int tls_ctx_new(const char *cert, const char *key, SSL_CTX **outp, char *errbuf, size_t errlen);

/* The reason of this thread's newest OpenSSL error, or fallback (conn_tls_reason(), for
 * code that cannot include conn.h, such as loop.c with its own struct conn). */
const char *tls_reason(const char *fallback);

#endif
