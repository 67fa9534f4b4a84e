/*
 * tls.c — builds stepd's server-side TLS context. Never touches sockets: loop.c drives
 * the handshake and the record I/O non-blocking inside its epoll workers.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "conn.h"
#include "err.h"
#include "tls.h"

#define TLS_CIPHERS_12                                                                             \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

const char *
tls_reason(const char *fallback)
{
	return conn_tls_reason(fallback);
}

int
tls_ctx_new(const char *cert, const char *key, SSL_CTX **outp, char *errbuf, size_t errlen)
{
	SSL_CTX *ctx = NULL;
	int r = STEP_EINVAL;

	if (access(cert, R_OK) != 0) {
		snprintf(
		    errbuf, errlen, "cannot read TLS certificate '%s': %s", cert, strerror(errno));
		return STEP_EINVAL;
	}
	if (access(key, R_OK) != 0) {
		snprintf(errbuf, errlen, "cannot read TLS key '%s': %s", key, strerror(errno));
		return STEP_EINVAL;
	}
	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(errbuf, errlen, "TLS: %s", conn_tls_reason("cannot create a context"));
		return STEP_ENOMEM;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* TLS 1.2: forward-secret ECDHE key exchange with AEAD ciphers only (Mozilla's
	 * "intermediate" list without the finite-field DHE suites): no static RSA, no CBC.
	 * TLS 1.3's suites are all of that kind already. */
	if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1) {
		snprintf(errbuf, errlen, "TLS: %s", conn_tls_reason("cannot set the cipher list"));
		goto out;
	}
	SSL_CTX_set_options(ctx,
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	        SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
	/* Partial writes and a moving buffer: the loop hands SSL_write the front of its reply
	 * buffer, which moves as replies are appended and consumed. Idle connections give
	 * their record buffers back. */
	SSL_CTX_set_mode(ctx,
	    SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	        SSL_MODE_RELEASE_BUFFERS);
	/* Clients do not resume sessions: no tickets, no cache. */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(errbuf, errlen, "cannot load TLS certificate '%s': %s", cert,
		    conn_tls_reason("not a PEM certificate"));
		goto out;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 &&
	    ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
		snprintf(errbuf, errlen, "cannot load TLS key '%s': %s", key,
		    conn_tls_reason("not a PEM private key"));
		goto out;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(errbuf, errlen, "TLS key '%s' does not match certificate '%s'", key, cert);
		goto out;
	}
	*outp = ctx;
	ctx = NULL;
	r = STEP_OK;
out:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return r;
}
