/* buf.c — growable byte buffer with a hard limit; never allocates past b->max. */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"

void
buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void
buf_release(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

size_t
buf_avail(const struct buf *b)
{
	return b->len - b->off;
}

uint8_t *
buf_ptr(const struct buf *b)
{
	return b->data + b->off;
}

int
buf_reserve(struct buf *b, size_t extra)
{
	size_t used = b->len - b->off;
	size_t want, ncap;
	uint8_t *p;

	if (extra > b->max || used > b->max - extra)
		return STEP_ETOOBIG;
	if (b->cap - b->len >= extra)
		return STEP_OK;
	/* Compact first: consumed bytes at the front are dead space. */
	if (b->off > 0) {
		memmove(b->data, b->data + b->off, used);
		b->len = used;
		b->off = 0;
		if (b->cap - b->len >= extra)
			return STEP_OK;
	}
	want = used + extra;
	ncap = b->cap ? b->cap : 256;
	while (ncap < want)
		ncap = ncap > SIZE_MAX / 2 ? want : ncap * 2;
	if (ncap > b->max && want <= b->max)
		ncap = b->max;
	if ((p = realloc(b->data, ncap)) == NULL)
		return STEP_ENOMEM;
	b->data = p;
	b->cap = ncap;
	return STEP_OK;
}

int
buf_append(struct buf *b, const void *p, size_t n)
{
	int r;

	if (n == 0)
		return STEP_OK;
	if ((r = buf_reserve(b, n)) != 0)
		return r;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return STEP_OK;
}

uint8_t *
buf_tail(struct buf *b)
{
	return b->data + b->len;
}

void
buf_commit(struct buf *b, size_t n)
{
	b->len += n;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len - b->off) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
}

void
buf_reset(struct buf *b)
{
	b->off = b->len = 0;
}
