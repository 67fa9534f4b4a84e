/* mbhash.c — the lane scheduler of md5_many and hash_sha256_many (see mbhash.h). */
#include <string.h>

#include "mbhash.h"

/* A message in a lane: its full blocks still to hash, then its padded tail. */
struct mb_lane {
	const uint8_t *p;  /* the next full block */
	size_t nfull;      /* full blocks left at p */
	size_t msg;        /* which message */
	unsigned ntail;    /* tail blocks (1 or 2) */
	unsigned itail;    /* tail blocks hashed */
	uint8_t tail[128]; /* the last partial block, 0x80, zeros, the length in bits */
};

static void
lane_load(const struct mb_algo *a, struct mb_lane *l, size_t msg, const uint8_t *p, size_t n)
{
	uint64_t bits = (uint64_t)n * 8;
	size_t r = n % 64;
	uint8_t *end;
	int i;

	l->p = p;
	l->nfull = n / 64;
	l->msg = msg;
	l->ntail = r < 56 ? 1 : 2;
	l->itail = 0;
	memcpy(l->tail, p + n - r, r);
	l->tail[r] = 0x80;
	memset(l->tail + r + 1, 0, 64 * l->ntail - r - 1);
	end = l->tail + 64 * l->ntail - 8;
	for (i = 0; i < 8; i++)
		end[a->be ? 7 - i : i] = (uint8_t)(bits >> (8 * i));
}

/* Finishes a lane's message from state st, one block at a time. */
static void
lane_finish(const struct mb_algo *a, struct mb_lane *l, uint32_t *st, uint8_t *out)
{
	a->blocks(st, l->p, l->nfull);
	a->blocks(st, l->tail + 64 * l->itail, l->ntail - l->itail);
	a->digest(st, out);
}

#ifdef MB_VECTOR
/* The lanes' part of mb_hash; returns the first message not started. */
static size_t
run(const struct mb_algo *a, mb_block_fn *block, size_t n, const void *const data[],
    const size_t len[], uint8_t *out)
{
	static const uint8_t zero[64];
	struct mb_lane lane[MB_LANES];
	const uint8_t *bp[MB_LANES];
	int busy[MB_LANES] = { 0 };
	unsigned active = 0, l, w;
	uint32_t s1[8];
	mb_vec st[8];
	size_t next = 0;

	for (l = 0; l < MB_LANES && next < n; l++, next++, active++) {
		lane_load(a, &lane[l], next, data[next], len[next]);
		busy[l] = 1;
	}
	for (w = 0; w < a->nst; w++)
		for (l = 0; l < MB_LANES; l++)
			st[w][l] = a->iv[w];
	while (active > 0 && active >= a->min_active) {
		for (l = 0; l < MB_LANES; l++)
			bp[l] = !busy[l]        ? zero
			    : lane[l].nfull > 0 ? lane[l].p
			                        : lane[l].tail + 64 * lane[l].itail;
		block(st, bp);
		for (l = 0; l < MB_LANES; l++) {
			struct mb_lane *ln = &lane[l];

			if (!busy[l])
				continue;
			if (ln->nfull > 0) {
				ln->p += 64;
				ln->nfull--;
				continue;
			}
			if (++ln->itail < ln->ntail)
				continue;
			for (w = 0; w < a->nst; w++)
				s1[w] = st[w][l];
			a->digest(s1, out + ln->msg * a->outlen);
			if (next < n) {
				lane_load(a, ln, next, data[next], len[next]);
				next++;
				for (w = 0; w < a->nst; w++)
					st[w][l] = a->iv[w];
			} else {
				busy[l] = 0;
				active--;
			}
		}
	}
	for (l = 0; l < MB_LANES; l++) {
		if (!busy[l])
			continue;
		for (w = 0; w < a->nst; w++)
			s1[w] = st[w][l];
		lane_finish(a, &lane[l], s1, out + lane[l].msg * a->outlen);
	}
	return next;
}
#endif

void
mb_hash(const struct mb_algo *a, mb_block_fn *block, size_t n, const void *const data[],
    const size_t len[], uint8_t *out)
{
	struct mb_lane one;
	uint32_t st[8];
	size_t i = 0;

#ifdef MB_VECTOR
	if (block != NULL && n >= a->min_active)
		i = run(a, block, n, data, len, out);
#else
	(void)block;
#endif
	for (; i < n; i++) {
		memcpy(st, a->iv, a->nst * sizeof(st[0]));
		lane_load(a, &one, i, data[i], len[i]);
		lane_finish(a, &one, st, out + i * a->outlen);
	}
}
