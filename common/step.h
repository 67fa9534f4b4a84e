/*
 * step.h — protocol constants shared by stepd and stepsync (STEP-PROTOCOL.md).
 */
#ifndef STEP_STEP_H
#define STEP_STEP_H

#define STEP_DEFAULT_PORT   1379
#define STEP_REF_BLOCK_SIZE 20480 /* the reference server's plan */
#define STEPD_VERSION       "0.2" /* stepd --version, and its LOGIN answer's "server" */
#define STEP_SPEC_MAX_BLOCK 65536 /* clients size their buffers by this */

/* Status codes (§5); 5xx are our extensions, every client treats non-200 as failure. */
enum step_status {
	STEP_ST_OK = 200,
	STEP_ST_EARTH = 333,
	STEP_ST_MISSING = 400,
	STEP_ST_BADPASS = 401,
	STEP_ST_EXISTS = 402,
	STEP_ST_TOKEN = 403,
	STEP_ST_NOTFOUND = 404,
	STEP_ST_INDEX = 405,
	STEP_ST_LENGTH = 406,
	STEP_ST_DIRECTION = 407,
	STEP_ST_OPERATION = 408,
	STEP_ST_TYPE = 409,
	STEP_ST_FIELD = 410,
	STEP_ST_TOOLARGE = 413,
	STEP_ST_LOCKED = 423, /* PUTMANY: an upload of the key is in progress */
	STEP_ST_THROTTLE = 429,
	STEP_ST_INTERNAL = 500,
	STEP_ST_UNAVAILABLE = 503,
	STEP_ST_NOSPACE = 507,
};

#endif
