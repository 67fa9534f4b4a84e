/*
 * links.c — the link group of a file with several hard links (links.h). The backup side of
 * hard links; restore_links.c is the other.
 */
#include "links.h"

uint64_t
links_group(const struct stat *st)
{
	uint64_t x;

	if (!S_ISREG(st->st_mode) || st->st_nlink < 2)
		return 0;
	/* splitmix64's finaliser over (dev, ino): distinct inodes give distinct groups but
	 * for a 2^-64 chance (and restore links only names whose chunks agree) */
	x = (uint64_t)st->st_dev * 0x9e3779b97f4a7c15ULL ^ (uint64_t)st->st_ino;
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x != 0 ? x : 1;
}
