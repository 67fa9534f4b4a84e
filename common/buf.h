/*
 * buf.h — a growable byte buffer that carries its own size limit
 * (after curl's dynbuf and OpenSSH's sshbuf). Data lives in [off, len).
 */
#ifndef STEP_BUF_H
#define STEP_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *data;
	size_t off; /* first unread byte */
	size_t len; /* end of valid data */
	size_t cap; /* allocated bytes */
	size_t max; /* limit on len - off; appends beyond it fail with STEP_ETOOBIG */
};

void buf_init(struct buf *b, size_t max);
/* Frees the storage; the struct may be reused after buf_init. */
void buf_release(struct buf *b);
/* Number of unread bytes. */
size_t buf_avail(const struct buf *b);
/* Pointer to the first unread byte (valid until the next append). */
uint8_t *buf_ptr(const struct buf *b);
/* Makes room for extra more bytes; STEP_ETOOBIG over the limit, STEP_ENOMEM. */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
/* Pointer to writable space of at least n bytes after buf_reserve(); commit with buf_commit. */
uint8_t *buf_tail(struct buf *b);
void buf_commit(struct buf *b, size_t n);
/* Drops n unread bytes from the front. */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);

#endif
