/*
 * sync_read.c — the sync engine reads files: small ones hashed (in batches by the scan), large ones
 * cut into content-defined chunks, each checked unchanged while it was read.
 */
#include "sync_int.h"
#include "sparse.h"

/* Opens a file the scan saw (st0, its lstat) for reading, with *ap the stat it is read
 * against: st0 on the first try, an fstat after the open on a retry (try > 0). The
 * descriptor, or -1 (errno set; EINVAL for something that is no regular file). O_NONBLOCK:
 * a FIFO put in the file's place since the scan must not block the open. */
static int
open_scanned(int dirfd, const char *name, const struct stat *st0, int try, struct stat *ap)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -1;
	if (try == 0)
		*ap = *st0;
	else if (fstat(fd, ap) != 0)
		goto fail;
	if (S_ISREG(ap->st_mode))
		return fd;
	errno = EINVAL;
fail:
	close(fd);
	return -1;
}

/* 1 when b (an fstat after reading) shows the file a (before reading; st0: the scan's)
 * unchanged: same inode, size, mtime and ctime. */
static int
unchanged_while_read(const struct stat *a, const struct stat *b, const struct stat *st0)
{
	return S_ISREG(b->st_mode) && a->st_ino == b->st_ino && a->st_dev == b->st_dev &&
	    a->st_size == b->st_size && scan_mtime_ns(a) == scan_mtime_ns(b) &&
	    scan_ctime_ns(a) == scan_ctime_ns(b) && a->st_ino == st0->st_ino;
}

/* Hashes the file (SHA-256 for the key, MD5 for the server) and checks it did not change
 * while read: its fstat after the read must match st0 (the scan's lstat, taken before the
 * open; on a retry, try > 0, an fstat after the open instead). Returns 0, STEP_ECHANGED,
 * STEP_ESYS, STEP_ESTOPPED. A file of at most SYNC_SCAN_SMALL bytes is read into a buffer
 * of its own, s->hheld (the caller takes it), and is not hashed here (md5 is "", sha
 * unset): the caller hashes many at once. */
int
sync_hash_once(struct sync_job *s, int dirfd, const char *name, const struct stat *st0, int try,
    uint8_t sha[HASH_SHA256_LEN], char md5[HASH_MD5_HEX], struct stat *stp)
{
	struct hash_ctx *hs = NULL, *hm = NULL; /* only for files beyond SYNC_SCAN_SMALL */
	struct stat a, b;
	struct held *h = NULL;
	uint8_t d[HASH_MD5_LEN], *p = s->hbuf;
	uint64_t got = 0;
	size_t cap = SYNC_HASH_BUF;
	ssize_t n;
	int fd, r = STEP_ESYS;

	free(s->hheld);
	s->hheld = NULL;
	if ((fd = open_scanned(dirfd, name, st0, try, &a)) < 0)
		return STEP_ESYS;
	if (a.st_size >= SYNC_CHUNKED) { /* not reached: sync_chunk_file() reads those */
		if (s->sha == NULL)
			s->sha = hash_sha256_new();
		if ((hs = s->sha) == NULL || hash_reset(hs) != 0 || (hm = hash_md5_new()) == NULL) {
			r = STEP_ENOMEM;
			goto out;
		}
	} else {
		/* One byte to spare: a file that grew fills it. */
		cap = (size_t)a.st_size + 1;
		h = xmalloc(sizeof(*h) + cap);
		p = h->data;
	}
	for (;;) {
		/* sigpending is a system call: once per 16 small files is often enough. */
		if ((got > 0 || (s->nhashed_calls++ & 15) == 0) && util_stop_pending()) {
			sync_set_fatal(s, STEP_ESTOPPED, "stopped", NULL);
			r = STEP_ESTOPPED;
			goto out;
		}
		/* A small file's reads follow each other in h; a large one's reuse hbuf. */
		if (h != NULL && got == cap)
			break; /* more than it had */
		n = read(fd, h != NULL ? p + got : p, h != NULL ? cap - (size_t)got : cap);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		if (n == 0)
			break;
		if (hm != NULL) {
			hash_update(hs, p, (size_t)n);
			hash_update(hm, p, (size_t)n);
		}
		got += (uint64_t)n;
		if (h != NULL && got == (uint64_t)a.st_size)
			break; /* all of it (a file that grows shows in the fstat below) */
	}
	if (fstat(fd, &b) != 0)
		goto out;
	if (!unchanged_while_read(&a, &b, st0)) {
		r = STEP_ECHANGED;
		goto out;
	}
	if (h != NULL && got != (uint64_t)b.st_size) {
		r = STEP_ECHANGED; /* grew and shrank back: h does not hold it */
		goto out;
	}
	md5[0] = '\0';
	if (hm != NULL) {
		hash_final(hs, sha);
		hash_final(hm, d);
		hash_to_hex(d, HASH_MD5_LEN, md5);
	} else if (got > 0) {
		h->len = (size_t)got;
		s->hheld = h; /* the whole content */
		h = NULL;
	} else {
		hash_md5_hex(p, 0, md5); /* emptied since the scan saw it */
		hash_sha256(p, 0, sha);
	}
	*stp = b;
	r = 0;
out:
	free(h);
	hash_free(hm);
	close(fd);
	return r;
}

/*
 * A batch of a large file's chunks (data[k], len[k]) into the chunk list, each new one
 * sent: their SHA-256s (the ids) first, then the MD5s the uploads need of the new ones
 * only (a mostly unchanged file's chunks need none), on two threads when hp is not NULL.
 * *freshp: how many are to be sent.
 *
 * Two threads only while the file's chunks are found on the server: then nothing else
 * wants the cores. While chunks are sent, stepsync's senders and the server want them,
 * and a 1 GiB first backup took 1.15 times as long with the hashing on two threads.
 */
static int
chunk_batch(struct sync_job *s, size_t nb, const void *const data[], const size_t len[],
    struct hashpair *hp, size_t *freshp)
{
	uint8_t ids[SYNC_CHUNK_BATCH][HASH_SHA256_LEN], md5s[SYNC_CHUNK_BATCH][HASH_MD5_LEN];
	uint8_t rec[FILES_CHUNK_REC];
	const void *ndata[SYNC_CHUNK_BATCH];
	size_t nlen[SYNC_CHUNK_BATCH], nn = 0, k;
	int inew[SYNC_CHUNK_BATCH]; /* chunk k's index in md5s, or -1: not to be sent */
	char key[MANIFEST_KEY_MAX + 1], md5[HASH_MD5_HEX];
	int r, isnew, i;

	hashpair_run(hp, nb, data, len, ids, NULL);
	for (k = 0; k < nb; k++) {
		inew[k] = -1;
		if (s->snd == NULL)
			continue; /* a dry run: sync_send_object only counts */
		if ((r = sync_send_wanted(s, ids[k], SEND_CHUNK, key)) < 0)
			return r;
		if (r > 0) {
			inew[k] = (int)nn;
			ndata[nn] = data[k];
			nlen[nn++] = len[k];
		}
	}
	hashpair_run(hp, nn, ndata, nlen, NULL, md5s);
	*freshp = nn;
	for (k = 0; k < nb; k++) {
		memcpy(rec, ids[k], HASH_SHA256_LEN);
		for (i = 0; i < 8; i++)
			rec[HASH_SHA256_LEN + i] = (uint8_t)((uint64_t)len[k] >> (8 * i));
		if (buf_append(&s->clist, rec, sizeof(rec)) != 0)
			return STEP_ENOMEM;
		if (s->snd != NULL && inew[k] < 0)
			continue; /* on the server, or queued: nothing to send */
		if (inew[k] >= 0)
			hash_to_hex(md5s[inew[k]], HASH_MD5_LEN, md5);
		r = sync_send_object(
		    s, ids[k], data[k], len[k], inew[k] >= 0 ? md5 : NULL, SEND_CHUNK, &isnew);
		if (r != 0)
			return r;
		if (isnew) {
			s->chunks_new++;
			s->chunk_bytes_new += len[k];
		}
	}
	return 0;
}

/*
 * Reads a large file once, cutting it into chunks: each chunk's id is the SHA-256 of its
 * bytes, each new one is sent from memory while the file is read on. The chunk list goes
 * into the state under "c.<SHA-256 of the list>", which becomes the row's okey. The file
 * must not change while read (as sync_hash_once). 0, STEP_ECHANGED, STEP_ESYS, STEP_ESTOPPED,
 * or an upload/database error.
 */
int
sync_chunk_file(struct sync_job *s, int dirfd, const char *name, const struct stat *st0, int try,
    struct files_row *row, struct stat *stp)
{
	struct stat a, b;
	const void *data[SYNC_CHUNK_BATCH];
	size_t len[SYNC_CHUNK_BATCH], fill = 0, off = 0, pos, k, nb;
	uint8_t id[HASH_SHA256_LEN];
	uint64_t total = 0;
	ssize_t n;
	int fd, eof = 0, r = STEP_ESYS, pair = 0;
	size_t fresh;

	if ((fd = open_scanned(dirfd, name, st0, try, &a)) < 0)
		return STEP_ESYS;
	if (s->cbuf == NULL)
		s->cbuf = xmalloc(SYNC_CBUF);
	if (s->hp == NULL)
		(void)hashpair_new(&s->hp); /* else hashed on this thread alone */
	s->clist.len = 0;
	for (;;) {
		if (util_stop_pending()) {
			sync_set_fatal(s, STEP_ESTOPPED, "stopped", NULL);
			r = STEP_ESTOPPED;
			goto out;
		}
		if (!eof && fill - off < CHUNK_MAX) {
			memmove(s->cbuf, s->cbuf + off, fill - off);
			fill -= off;
			off = 0;
			while (!eof && fill < SYNC_CBUF) {
				n = sparse_read(
				    fd, s->cbuf + fill, SYNC_CBUF - fill); /* holes unread */
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0)
					goto out;
				if (n == 0)
					eof = 1;
				fill += (size_t)n;
			}
		}
		if (off == fill)
			break;
		/* The chunks found in what is read (each with CHUNK_MAX bytes after its start,
		 * or the file's end). */
		for (nb = 0, pos = off;
		     nb < SYNC_CHUNK_BATCH && pos < fill && (eof || fill - pos >= CHUNK_MAX);
		     nb++) {
			data[nb] = s->cbuf + pos;
			len[nb] = chunk_next(s->cbuf + pos, fill - pos);
			pos += len[nb];
		}
		if ((r = chunk_batch(s, nb, data, len, pair ? s->hp : NULL, &fresh)) != 0)
			goto out;
		pair = fresh == 0;
		for (k = 0; k < nb; k++)
			total += len[k];
		off = pos;
	}
	r = STEP_ESYS;
	if (fstat(fd, &b) != 0)
		goto out;
	if (!unchanged_while_read(&a, &b, st0) || total != (uint64_t)b.st_size) {
		r = STEP_ECHANGED;
		goto out;
	}
	hash_sha256(buf_ptr(&s->clist), s->clist.len, id);
	manifest_object_key(id, row->okey, sizeof(row->okey));
	row->okey[0] = 'c';
	row->md5[0] = '\0';
	if ((r = files_chunks_put(s->files, row->okey, buf_ptr(&s->clist), s->clist.len)) != 0)
		goto out;
	s->chunked++;
	*stp = b;
	r = 0;
out:
	close(fd);
	return r;
}
