/* err.c — text for the project's error codes. */
#include "err.h"

const char *
step_strerror(int err)
{
	switch (err) {
	case STEP_OK:
		return "success";
	case STEP_ENOMEM:
		return "out of memory";
	case STEP_EPROTO:
		return "protocol error";
	case STEP_ETOOBIG:
		return "too large";
	case STEP_ESYS:
		return "system error";
	case STEP_EAGAIN:
		return "incomplete input";
	case STEP_EINVAL:
		return "invalid argument";
	case STEP_ENOENT:
		return "not found";
	case STEP_EEXIST:
		return "already exists";
	case STEP_ENOSPC:
		return "no space left";
	case STEP_EIO:
		return "I/O error";
	case STEP_ETIMEDOUT:
		return "timed out";
	case STEP_ECLOSED:
		return "connection closed by peer";
	case STEP_EAUTH:
		return "authentication failed";
	case STEP_ESTATUS:
		return "server refused the request";
	case STEP_EBUSY:
		return "busy";
	case STEP_ECHANGED:
		return "file changed while being read";
	case STEP_EMISMATCH:
		return "checksum mismatch";
	case STEP_ECONNECT:
		return "cannot connect";
	case STEP_ETLS:
		return "TLS failure";
	case STEP_ESTOPPED:
		return "stopped by a signal";
	}
	return "unknown error";
}
