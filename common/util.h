/*
 * util.h — small helpers: checked number parsing, allocation that aborts (agent only),
 * time, file helpers.
 */
#ifndef STEP_UTIL_H
#define STEP_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Parses a whole decimal string into [min, max]; 0 or STEP_EINVAL. */
int util_parse_ll(const char *s, long long min, long long max, long long *out);
/* Parses sizes like "64k", "20480", "4M", "1G" (binary units); 0 or STEP_EINVAL. */
int util_parse_size(const char *s, unsigned long long *out);

/* Allocation wrappers that log and abort on failure: for the agent, never the server. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* Monotonic and wall clocks. */
uint64_t util_now_ms(void);
double util_now_s(void);
int64_t util_wall_s(void);
/* 1 when SIGTERM or SIGINT is pending: a program that blocks them (stepsync watch reads
 * them from a signalfd) asks long work to stop between steps this way. */
int util_stop_pending(void);

/* Writes all of p to fd (retrying on EINTR / short writes); 0 or STEP_ESYS. */
int util_write_all(int fd, const void *p, size_t n);
/* Reads all of fd (up to max bytes) into a new NUL-terminated buffer; 0, STEP_ESYS, STEP_ETOOBIG.
 */
int util_read_file(const char *path, size_t max, char **outp, size_t *lenp);
/* Writes a file atomically: temp file in the same directory, fsync, rename; 0 or STEP_ESYS. */
int util_write_file_atomic(const char *path, const void *p, size_t n, int mode);
/* mkdir -p with the given mode; 0 or STEP_ESYS. */
int util_mkdirs(const char *path, int mode);

/* Standard base64 (with padding); out must hold 4*((n+2)/3)+1 bytes. */
/* Writes v in decimal at p (at most 20 characters, no NUL); returns the end. */
char *util_put_u64(char *p, uint64_t v);
void util_b64_encode(const void *p, size_t n, char *out);
/* Decodes standard base64; 0 and *outlen, or STEP_EINVAL. out must hold 3*(len/4)+3 bytes. */
int util_b64_decode(const char *s, size_t len, uint8_t *out, size_t *outlen);
/* Decodes 2n lower-case hex digits at s into n bytes: 0, or STEP_EINVAL. */
int util_hex_decode(const char *s, uint8_t *out, size_t n);

#endif
