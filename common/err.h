/*
 * err.h — the one list of error codes for the whole project.
 * Library functions return 0 (STEP_OK) or one of these negative values.
 */
#ifndef STEP_ERR_H
#define STEP_ERR_H

enum step_err {
	STEP_OK = 0,
	STEP_ENOMEM = -1,     /* allocation failed */
	STEP_EPROTO = -2,     /* malformed packet or JSON */
	STEP_ETOOBIG = -3,    /* a length is over its limit */
	STEP_ESYS = -4,       /* a system call failed; errno tells more */
	STEP_EAGAIN = -5,     /* need more input bytes */
	STEP_EINVAL = -6,     /* bad argument or field value */
	STEP_ENOENT = -7,     /* no such key, user or object */
	STEP_EEXIST = -8,     /* key already exists */
	STEP_ENOSPC = -9,     /* no space left on the store */
	STEP_EIO = -10,       /* I/O error on the store */
	STEP_ETIMEDOUT = -11, /* a peer did not answer in time */
	STEP_ECLOSED = -12,   /* the peer closed the connection */
	STEP_EAUTH = -13,     /* authentication failed */
	STEP_ESTATUS = -14,   /* the server answered with a non-200 status */
	STEP_EBUSY = -15,     /* resource locked by someone else */
	STEP_ECHANGED = -16,  /* a file changed while it was read */
	STEP_EMISMATCH = -17, /* a checksum did not match */
	STEP_ECONNECT = -18,  /* could not connect */
	STEP_ETLS = -19,      /* TLS handshake or verification failed */
	STEP_ESTOPPED = -20,  /* a pending SIGTERM/SIGINT asked long work to stop */
};

/* Returns a static, human-readable string for an STEP_E* code. */
const char *step_strerror(int err);

#endif
