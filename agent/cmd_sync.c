/*
 * cmd_sync.c — `stepsync sync`: scan a tree, upload new content under content keys,
 * then record a snapshot manifest on the server.
 *
 * Order of a run, and why:
 *   1. lock the state (no two runs overlap);
 *   2. one transaction for the whole scan: quick check against the files table (size,
 *      mtime_ns, inode, ctime_ns), hash only what changed, queue unknown content keys,
 *      write manifest lines to a temporary file — nothing of the tree is held in memory;
 *   3. refuse mass deletion (an unmounted disk looks like one);
 *   4. upload the queued objects and verify each MD5;
 *   5. only when every object of the manifest is on the server: upload the manifest
 *      (a new seq, never replacing one), then its DATA record.
 * So the server always holds a complete, restorable latest snapshot, and a run killed
 * at any point is simply rerun (uploads resume; content already there is not resent).
 * Never follows symlinks, never deletes anything on the server.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "client.h"
#include "cmd.h"
#include "config.h"
#include "db.h"
#include "err.h"
#include "files.h"
#include "hash.h"
#include "lock.h"
#include "log.h"
#include "manifest.h"
#include "md5.h"
#include "scan.h"
#include "snapshot.h"
#include "server_id.h"
#include "snapshots.h"
#include "util.h"

#define STR_(x)         #x
#define STR(x)          STR_(x)
#define SYNC_BATCH      1024        /* objects handed to client_pool_put() at once */
#define SYNC_HASH_BUF   (256 << 10) /* read size while hashing */
#define SYNC_HASH_TRY   3           /* attempts on a file that changes while it is hashed */
#define SYNC_AUTO_CONN  4           /* connections for many uploads when --connections is 1 */
/* Files up to this size are sent while the scan goes on: one block on every STEP server
 * seen (the reference plans 20480-byte blocks), so they need no resume rows, which could
 * not be written while the scan holds the state's write lock. */
#define SYNC_SCAN_SMALL 20480
#define SYNC_HELD_MAX   (32u << 20) /* bytes of small files' content kept for sending */
/* Small files whose SHA-256s and MD5s are computed together (hash_sha256_many, md5_many),
 * several times faster than one at a time; the rest of their visit waits for the batch
 * (see defer). */
#define SYNC_HASH_BATCH 256
#define SYNC_DQ_MAX     1024 /* entries waiting for the batch, at most */

static const char sync_usage[] =
    "sync [--name NAME] [--dry-run] [--allow-mass-delete] [--skip-unchanged] [DIR]\n"
    "\n"
    "Backs up DIR (or, without DIR, every [dir] of the config file, or the one\n"
    "named by --name) and records a snapshot NAME#SEQ on the server. NAME defaults\n"
    "to DIR's base name. Only new or changed content is sent; renamed and copied\n"
    "files are never sent again.\n"
    "\n"
    "  --name NAME          snapshot name (also selects a [dir \"NAME\"] section)\n"
    "  --dry-run            list what would be sent; send and record nothing\n"
    "  --allow-mass-delete  record a snapshot even when most known files vanished\n"
    "  --skip-unchanged     record no new snapshot when the tree is exactly the\n"
    "                       latest snapshot (and that is still the latest on the\n"
    "                       server): the summary says \"unchanged\" and names it\n"
    "\n"
    "exit status: 0 every file of the snapshot is verified on the server;\n"
    "  1 some files failed (summary on stderr); 2 usage;\n"
    "  65 most of the tree vanished, no snapshot (see --allow-mass-delete);\n"
    "  75 temporary: server unreachable, connection lost, or another run holds the lock;\n"
    "  76 TLS failed (certificate not trusted, wrong host name, not a TLS server);\n"
    "  77 the server refused the login; 78 bad or missing configuration";

/* The content of a small pending file, read by the scan and sent from memory (the file is
 * not read again; its MD5 is the scan's). */
struct held {
	int64_t rowid; /* its row in temp.sync_pending */
	size_t len;
	struct held *next;
	uint8_t data[];
};

/*
 * The objects queued this run, so that each content is sent once: a multiset of 32-bit
 * fingerprints of their keys, each with its row in temp.sync_pending, where a match is
 * checked against the row's key. Cheaper than a unique index on the table, whose random
 * keys made every insert a B-tree search. Open addressing, at most half full; a slot is
 * fingerprint << 32 | rowid, 0 when empty (rowids start at 1).
 */
struct pend_set {
	uint64_t *slot;
	size_t cap, n; /* cap: a power of two, or 0 */
};

/*
 * A scan entry whose visit waits (see defer): a small file read but not hashed yet, or
 * anything that comes after one in the manifest.
 */
enum { DQ_HASH, DQ_FILE, DQ_SAME, DQ_DIR, DQ_LINK };
struct deferred {
	int kind;
	struct files_row row; /* files: complete but DQ_HASH's okey and md5 */
	char *path;
	char *target; /* DQ_LINK */
	unsigned mode;
	int64_t mtime_ns;
	struct held *h; /* DQ_HASH: its content */
};

struct sync_run {
	struct agent *a;
	const char *name;
	const char *root;
	char *const *exclude;
	size_t nexclude;
	int dry_run;
	int allow_mass_delete;
	int skip_unchanged;

	struct db *db;
	struct files *files;
	struct db *rdb;           /* a second connection for the sorted walk, NULL if none */
	struct files_cursor *cur; /* the sorted walk over the files table (see visit_file) */
	sqlite3_stmt *pend_ins;
	sqlite3_stmt *pend_key; /* a row's key, for a fingerprint that matches */
	struct pend_set pend;
	struct uploader *up;   /* NULL in a dry run */
	struct client *scan_c; /* the run's session, for uploads during the scan */
	struct manifest_writer *mw;
	int64_t gen;
	uint8_t *hbuf;
	struct hash_ctx *sha;   /* hash_once's SHA-256, reused */
	struct held *hheld;     /* a small file's whole content, as the last hash_once read it */
	unsigned nhashed_calls; /* hash_once calls, for how often it looks for a stop */
	struct held *cache_head, *cache_tail; /* small files' content, in rowid order */
	struct deferred *dq;                  /* SYNC_DQ_MAX entries waiting, in scan order */
	size_t ndq, nhash;                    /* entries, DQ_HASH ones */
	const void *hdata[SYNC_HASH_BATCH];   /* flush_deferred's: the DQ_HASH contents */
	size_t hlen[SYNC_HASH_BATCH];
	size_t cache_bytes; /* content held in the cache and in batches */
	struct manifest_entry ent;

	uint64_t known, found, hashed, read_errors, visited;
	uint64_t pending, pending_bytes;
	uint64_t pending_small; /* pending files of at most SYNC_SCAN_SMALL bytes */
	uint64_t sent, sent_bytes, existed, upload_failed;
	uint64_t blocks_sent; /* UPLOAD requests, resumed uploads count only what they sent */
	int fatal;            /* a STEP_E* that ends the run (transport, auth), 0 if none */
	char fatal_msg[512];
};

static void set_fatal(struct sync_run *s, int r, const char *what, const char *detail);

/* Hashes the file (SHA-256 for the key, MD5 for the server) and checks it did not change
 * while read: its fstat after the read must match st0 (the scan's lstat, taken before the
 * open; on a retry, try > 0, an fstat after the open instead). Returns 0, STEP_ECHANGED,
 * STEP_ESYS, STEP_ESTOPPED. A file of at most SYNC_SCAN_SMALL bytes is read into a buffer
 * of its own, s->hheld (the caller takes it), and is not hashed here (md5 is "", sha
 * unset): the caller hashes many at once. */
static int
hash_once(struct sync_run *s, int dirfd, const char *name, const struct stat *st0, int try,
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
	/* O_NONBLOCK: a FIFO put in the file's place since the scan must not block the open;
	 * it is no regular file and fails the check below. */
	if ((fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)) < 0)
		return STEP_ESYS;
	if (try == 0)
		a = *st0;
	else if (fstat(fd, &a) != 0)
		goto out;
	if (!S_ISREG(a.st_mode))
		goto out;
	if (a.st_size > SYNC_SCAN_SMALL) {
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
			set_fatal(s, STEP_ESTOPPED, "stopped", NULL);
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
	if (!S_ISREG(b.st_mode) || a.st_ino != b.st_ino || a.st_dev != b.st_dev ||
	    a.st_size != b.st_size || scan_mtime_ns(&a) != scan_mtime_ns(&b) ||
	    scan_ctime_ns(&a) != scan_ctime_ns(&b) || a.st_ino != st0->st_ino) {
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

static int uploader_scan_step(struct sync_run *s, struct client *c, int last);

/* A key's fingerprint (FNV-1a). */
static uint32_t
pend_fp(const char *okey)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; okey[i] != '\0'; i++)
		h = (h ^ (uint8_t)okey[i]) * 16777619u;
	return h;
}

static void
pend_insert(struct pend_set *p, uint64_t v)
{
	size_t i = (size_t)(v >> 32) & (p->cap - 1);

	while (p->slot[i] != 0)
		i = (i + 1) & (p->cap - 1);
	p->slot[i] = v;
	p->n++;
}

/* Records that okey (fingerprint fp) is queued in row rowid. */
static int
pend_add(struct pend_set *p, uint32_t fp, int64_t rowid)
{
	if (rowid <= 0 || rowid > UINT32_MAX)
		return STEP_ETOOBIG; /* 4 billion objects in one run */
	if (2 * (p->n + 1) > p->cap) {
		struct pend_set q = { xcalloc(p->cap ? 2 * p->cap : 1024, sizeof(uint64_t)),
			p->cap ? 2 * p->cap : 1024, 0 };
		size_t i;

		for (i = 0; i < p->cap; i++)
			if (p->slot[i] != 0)
				pend_insert(&q, p->slot[i]);
		free(p->slot);
		*p = q;
	}
	pend_insert(p, (uint64_t)fp << 32 | (uint64_t)rowid);
	return 0;
}

/* 1 when okey is queued already, 0 if not, or a STEP_E*. */
static int
pend_has(struct sync_run *s, const char *okey, uint32_t fp)
{
	struct pend_set *p = &s->pend;
	size_t i;
	int rc, same;

	if (p->cap == 0)
		return 0;
	for (i = fp & (p->cap - 1); p->slot[i] != 0; i = (i + 1) & (p->cap - 1)) {
		if ((uint32_t)(p->slot[i] >> 32) != fp)
			continue;
		sqlite3_bind_int64(s->pend_key, 1, (sqlite3_int64)(p->slot[i] & UINT32_MAX));
		rc = sqlite3_step(s->pend_key);
		same = rc == SQLITE_ROW &&
		    strcmp((const char *)sqlite3_column_text(s->pend_key, 0), okey) == 0;
		sqlite3_reset(s->pend_key);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return db_err(rc);
		if (same)
			return 1;
	}
	return 0;
}

/* Queues an object for upload unless queued already; h (NULL if none) is its content,
 * kept for sending while the budget allows, freed otherwise. */
static int
queue_object(struct sync_run *s, const char *path, uint64_t size, const char *okey, const char *md5,
    struct held *h)
{
	uint32_t fp = pend_fp(okey);
	int rc, r;

	if ((r = pend_has(s, okey, fp)) != 0) {
		free(h);
		return r < 0 ? r : uploader_scan_step(s, s->scan_c, 0);
	}
	sqlite3_bind_text(s->pend_ins, 1, okey, -1, SQLITE_STATIC);
	sqlite3_bind_text(s->pend_ins, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s->pend_ins, 3, (sqlite3_int64)size);
	sqlite3_bind_text(s->pend_ins, 4, md5, -1, SQLITE_STATIC);
	rc = sqlite3_step(s->pend_ins);
	sqlite3_reset(s->pend_ins);
	if (rc != SQLITE_DONE) {
		free(h);
		return db_err(rc);
	}
	if ((r = pend_add(&s->pend, fp, sqlite3_last_insert_rowid(db_handle(s->db)))) != 0) {
		free(h);
		return r;
	}
	s->pending++;
	s->pending_bytes += size;
	s->pending_small += size <= SYNC_SCAN_SMALL;
	if (h != NULL && s->up != NULL && h->len == size &&
	    s->cache_bytes + size <= SYNC_HELD_MAX) {
		h->rowid = sqlite3_last_insert_rowid(db_handle(s->db));
		h->next = NULL;
		if (s->cache_tail != NULL)
			s->cache_tail->next = h;
		else
			s->cache_head = h;
		s->cache_tail = h;
		s->cache_bytes += size;
		h = NULL;
	}
	free(h);
	return uploader_scan_step(s, s->scan_c, 0);
}

/* The rest of a file's visit once its row is complete: records it, queues its content
 * when the server may lack it (h: the content if held, else NULL; taken), and adds it to
 * the manifest. unchanged: the row is the state's, as found. */
static int
finish_file(
    struct sync_run *s, const char *path, struct files_row *row, int unchanged, struct held *h)
{
	struct manifest_entry *e = &s->ent;
	size_t n = strlen(path);
	int r;

	/* Unchanged files write nothing (see mark_seen()). */
	if (!unchanged && (r = files_put(s->files, s->name, path, row, s->gen)) != 0) {
		free(h);
		return r;
	}
	memcpy(e->path, path, n + 1); /* n <= MANIFEST_PATH_MAX: see sync_visit */
	e->type = MANIFEST_FILE;
	e->target[0] = '\0';
	/* An unchanged file's mode is the row's: a chmod would have changed its ctime. */
	e->mode = row->mode & 07777;
	e->mtime_ns = row->mtime_ns;
	e->size = row->size;
	memcpy(e->md5, row->md5, sizeof(e->md5));
	memcpy(e->key, row->okey,
	    sizeof(row->okey) < sizeof(e->key) ? sizeof(row->okey) : sizeof(e->key));
	if (e->key[0] != '\0') {
		/* An unchanged file's lookup said whether its object is known already. */
		r = unchanged ? row->known : files_object_known(s->files, e->key);
		if (r < 0) {
			free(h);
			return r;
		}
		if (r == 0)
			return (r = queue_object(s, path, e->size, e->key, e->md5, h)) != 0
			    ? r
			    : manifest_writer_add(s->mw, e);
	}
	free(h);
	return manifest_writer_add(s->mw, e);
}

/* Finishes a deferred directory or symlink: its manifest entry. */
static int
finish_other(struct sync_run *s, const struct deferred *q)
{
	struct manifest_entry *e = &s->ent;

	memcpy(e->path, q->path, strlen(q->path) + 1); /* <= MANIFEST_PATH_MAX: sync_visit */
	e->type = q->kind == DQ_DIR ? MANIFEST_DIR : MANIFEST_SYMLINK;
	e->mode = q->mode;
	e->mtime_ns = q->mtime_ns;
	e->size = 0;
	e->key[0] = e->md5[0] = e->target[0] = '\0';
	if (q->target != NULL)
		memcpy(e->target, q->target, strlen(q->target) + 1);
	return manifest_writer_add(s->mw, e);
}

static void
deferred_free(struct deferred *q)
{
	free(q->h);
	free(q->path);
	free(q->target);
}

/* Computes the keys (SHA-256) and MD5s of the deferred small files, side by side, then
 * finishes every deferred visit in scan order, so the manifest stays in scan order. */
static int
flush_deferred(struct sync_run *s)
{
	const void **data = s->hdata;
	size_t *len = s->hlen, i, k, n = s->ndq;
	uint8_t d[SYNC_HASH_BATCH][HASH_MD5_LEN], sha[SYNC_HASH_BATCH][HASH_SHA256_LEN];
	int r = 0;

	for (i = k = 0; i < n; i++)
		if (s->dq[i].kind == DQ_HASH) {
			data[k] = s->dq[i].h->data;
			len[k++] = s->dq[i].h->len;
		}
	hash_sha256_many(k, data, len, sha);
	md5_many(k, data, len, d);
	s->ndq = s->nhash = 0;
	for (i = k = 0; i < n; i++) {
		struct deferred *q = &s->dq[i];

		if (q->kind == DQ_HASH) {
			manifest_object_key(sha[k], q->row.okey, sizeof(q->row.okey));
			hash_to_hex(d[k++], HASH_MD5_LEN, q->row.md5);
		}
		if (r == 0 && (q->kind == DQ_DIR || q->kind == DQ_LINK)) {
			r = finish_other(s, q);
		} else if (r == 0) {
			r = finish_file(s, q->path, &q->row, q->kind == DQ_SAME, q->h);
			q->h = NULL; /* finish_file took it */
		}
		deferred_free(q);
	}
	return r;
}

/* Drops deferred visits unfinished (the run failed). */
static void
drop_deferred(struct sync_run *s)
{
	size_t i;

	for (i = 0; i < s->ndq; i++)
		deferred_free(&s->dq[i]);
	s->ndq = s->nhash = 0;
}

/* Finishes the visit of scan entry se (row: a file's), or queues it to be finished with
 * the next batch (flush_deferred): a small file whose content hash_once read (s->hheld,
 * DQ_HASH), and every entry after one, so that the manifest keeps the scan's order. */
static int
defer(struct sync_run *s, int kind, const struct scan_entry *se, struct files_row *row)
{
	struct deferred *q;

	if (s->ndq == 0 && kind != DQ_HASH) { /* none waits: at once */
		struct deferred now = { .kind = kind,
			.path = (char *)se->path,
			.target = (char *)(kind == DQ_LINK ? se->target : NULL),
			.mode = se->st->st_mode & 07777,
			.mtime_ns = scan_mtime_ns(se->st) };

		return kind == DQ_DIR || kind == DQ_LINK
		    ? finish_other(s, &now)
		    : finish_file(s, se->path, row, kind == DQ_SAME, NULL);
	}
	q = &s->dq[s->ndq++];
	memset(q, 0, sizeof(*q));
	q->kind = kind;
	if (row != NULL)
		q->row = *row;
	q->path = xstrdup(se->path);
	if (kind == DQ_LINK)
		q->target = xstrdup(se->target);
	q->mode = se->st->st_mode & 07777;
	q->mtime_ns = scan_mtime_ns(se->st);
	if (kind == DQ_HASH) {
		q->h = s->hheld;
		s->hheld = NULL;
		s->nhash++;
	}
	return s->nhash == SYNC_HASH_BATCH || s->ndq == SYNC_DQ_MAX ? flush_deferred(s) : 0;
}

/* A regular file: quick check, hash when needed, queue unknown content. Fills s->ent. */
static int
visit_file(struct sync_run *s, const struct scan_entry *se)
{
	const struct stat *st = se->st;
	struct files_row row;
	struct stat hst;
	uint8_t sha[HASH_SHA256_LEN];
	int r, have, unchanged, i;

	free(s->hheld); /* only a hash_once of this very file may fill it */
	s->hheld = NULL;

	/* The scan comes in path order: one sorted pass over the table, no lookups. */
	r = s->cur != NULL ? files_cursor_find(s->cur, se->path, &row)
	                   : files_lookup(s->files, s->name, se->path, &row);
	if (r != 0 && r != STEP_ENOENT)
		return r;
	have = r == 0;
	if (have)
		s->found++;
	unchanged = have && row.size == (uint64_t)st->st_size &&
	    row.mtime_ns == scan_mtime_ns(st) && row.ino == (uint64_t)st->st_ino &&
	    row.dev == (uint64_t)st->st_dev && row.ctime_ns == scan_ctime_ns(st);
	if (unchanged)
		return defer(s, DQ_SAME, se, &row);
	memset(&row, 0, sizeof(row));
	if (st->st_size == 0) {
		memcpy(row.md5, MANIFEST_EMPTY_MD5, sizeof(row.md5));
		hst = *st;
	} else {
		r = STEP_ECHANGED;
		for (i = 0; i < SYNC_HASH_TRY && r == STEP_ECHANGED; i++)
			r = hash_once(s, se->dirfd, se->name, st, i, sha, row.md5, &hst);
		if (r == STEP_ENOMEM || r == STEP_ESTOPPED)
			return r;
		if (r != 0) {
			if (r == STEP_ECHANGED)
				log_warnx("'%s' keeps changing while read; left out of "
				          "this snapshot",
				    se->path);
			else
				log_warn("cannot read '%s'; left out of this snapshot", se->path);
			s->read_errors++;
			return 0;
		}
		if (s->hheld == NULL) /* else flush_deferred computes the key */
			manifest_object_key(sha, row.okey, sizeof(row.okey));
		s->hashed++;
	}
	row.dev = (uint64_t)hst.st_dev;
	row.ino = (uint64_t)hst.st_ino;
	row.size = (uint64_t)hst.st_size;
	row.mtime_ns = scan_mtime_ns(&hst);
	row.ctime_ns = scan_ctime_ns(&hst);
	row.mode = hst.st_mode;
	return defer(s, s->hheld != NULL ? DQ_HASH : DQ_FILE, se, &row);
}

static int
sync_visit(void *ctx, const struct scan_entry *se)
{
	struct sync_run *s = ctx;
	size_t n = strlen(se->path);

	if (n > MANIFEST_PATH_MAX)
		return 0; /* the scanner already refuses these */
	if ((++s->visited & 1023) == 0 && util_stop_pending()) {
		set_fatal(s, STEP_ESTOPPED, "stopped", NULL);
		return STEP_ESTOPPED;
	}
	if (S_ISREG(se->st->st_mode))
		return visit_file(s, se);
	if (S_ISDIR(se->st->st_mode))
		return defer(s, DQ_DIR, se, NULL);
	if (S_ISLNK(se->st->st_mode) && strlen(se->target) <= MANIFEST_PATH_MAX)
		return defer(s, DQ_LINK, se, NULL);
	return 0; /* the scanner only hands out directories, symlinks and files */
}

/* Prints what a dry run would send. */
static int
print_pending(struct sync_run *s)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db_handle(s->db),
	    "SELECT path, size FROM temp.sync_pending ORDER BY rowid", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_err(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		printf("would send %s (%" PRId64 " bytes)\n",
		    (const char *)sqlite3_column_text(st, 0), (int64_t)sqlite3_column_int64(st, 1));
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(rc);
}

static void
set_fatal(struct sync_run *s, int r, const char *what, const char *detail)
{
	if (s->fatal != 0)
		return;
	s->fatal = r;
	snprintf(s->fatal_msg, sizeof(s->fatal_msg), "%s: %s", what,
	    detail != NULL && *detail ? detail : step_strerror(r));
}

static int
is_transport(int r)
{
	return r == STEP_ECONNECT || r == STEP_ETIMEDOUT || r == STEP_ECLOSED || r == STEP_EAUTH ||
	    r == STEP_ETLS || r == STEP_EPROTO || r == STEP_ESTOPPED;
}

/* Handles one finished upload job. */
static int
upload_done(
    struct sync_run *s, struct client *c, struct client_job *j, const char *md5, uint64_t size)
{
	int r = j->rc;

	if (r == STEP_EEXIST) {
		/* Our content key holds other bytes (a damaged object): replace it. */
		log_warnx("object '%s' on the server has the wrong content; replacing it", j->key);
		r = client_put_file(c, j->path, j->key, CLIENT_PUT_REPLACE, &j->res);
		if (r != 0)
			snprintf(j->error, sizeof(j->error), "%s", client_error(c));
	}
	if (r == 0 && strcmp(j->res.md5, md5) != 0) {
		/* The file changed between hashing and sending: the object under this content
		 * key is wrong, take it away again. */
		log_warnx(
		    "'%s' changed while it was sent; it will be sent by the next run", j->path);
		(void)client_file_delete(c, j->key);
		s->upload_failed++;
		return 0;
	}
	if (r != 0) {
		if (is_transport(r)) {
			set_fatal(s, r, "cannot upload", j->error);
			return r;
		}
		agent_error(
		    "cannot upload '%s': %s", j->path, *j->error ? j->error : step_strerror(r));
		s->upload_failed++;
		return 0;
	}
	if ((r = files_object_add(s->files, j->key, size, md5)) != 0)
		return r;
	s->blocks_sent += j->res.blocks_sent;
	if (j->res.existed) {
		s->existed++;
	} else {
		s->sent++;
		s->sent_bytes += size;
	}
	return 0;
}

/*
 * The uploads of a run: rows of temp.sync_pending handed to a client pool SYNC_BATCH at a
 * time. While the scan goes on finding more, two batches are in flight, each on a pool of
 * its own (the scan's hashing, the network and the server's work then overlap, and a
 * batch's last answers do not hold up the next one); the rest goes after the scan, one
 * batch at a time.
 */
#define SYNC_INFLIGHT 2

/* One batch of jobs and what they borrow until it is collected. */
struct upbatch {
	struct client_pool *pool; /* made with the slot's first batch */
	size_t n;                 /* jobs in flight, 0 when none */
	struct client_job *jobs;
	char **paths, **keys;
	char (*md5s)[HASH_MD5_HEX];
	uint64_t *sizes;
	struct held *held; /* the content the batch sends */
};

struct uploader {
	sqlite3_stmt *next;       /* after the scan: the next rows after a rowid */
	sqlite3_stmt *next_small; /* during the scan: the next small rows after a rowid */
	int64_t last;             /* rowid of the last row handed out */
	int64_t scan_last;        /* ...of the last one handed out during the scan */
	uint64_t taken;           /* rows handed out */
	int scan_done;
	struct upbatch b[SYNC_INFLIGHT];
	unsigned cur; /* the slot the next batch goes to; the others are older */
};

/* Frees a list of held contents and takes them off the budget. */
static void
held_free(struct sync_run *s, struct held **list)
{
	struct held *h, *next;

	for (h = *list; h != NULL; h = next) {
		next = h->next;
		s->cache_bytes -= h->len;
		free(h);
	}
	*list = NULL;
}

/* Gives job j (row rowid, content MD5 md5) the content the scan kept for it, if any: the
 * held entry moves to batch b. Rows come in rowid order, the cache too; what is skipped
 * over (rows another pass hands out) is dropped. */
static void
held_attach(
    struct sync_run *s, struct upbatch *b, int64_t rowid, struct client_job *j, const char *md5)
{
	struct held *h;

	while ((h = s->cache_head) != NULL && h->rowid <= rowid) {
		s->cache_head = h->next;
		if (s->cache_head == NULL)
			s->cache_tail = NULL;
		if (h->rowid < rowid) {
			s->cache_bytes -= h->len;
			free(h);
			continue;
		}
		h->next = b->held;
		b->held = h;
		j->mem = h->data;
		j->memlen = h->len;
		j->md5 = md5;
		return;
	}
}

/* Frees the paths and keys of batch b's first n jobs and the content it held. */
static void
batch_release(struct sync_run *s, struct upbatch *b, size_t n)
{
	size_t i;

	for (i = 0; b->paths != NULL && i < n; i++) {
		free(b->paths[i]);
		free(b->keys[i]);
		b->paths[i] = b->keys[i] = NULL;
	}
	held_free(s, &b->held);
}

static void
uploader_free(struct sync_run *s, struct uploader *u)
{
	unsigned k;

	if (u == NULL)
		return;
	for (k = 0; k < SYNC_INFLIGHT; k++) {
		struct upbatch *b = &u->b[k];

		client_pool_free(b->pool); /* waits for a batch still in flight */
		batch_release(s, b, SYNC_BATCH);
		free(b->jobs);
		free(b->paths);
		free(b->keys);
		free(b->md5s);
		free(b->sizes);
	}
	sqlite3_finalize(u->next);
	sqlite3_finalize(u->next_small);
	free(u);
}

/* Waits for batch b and records its results (in the caller's transaction). */
static int
batch_collect(struct sync_run *s, struct client *c, struct upbatch *b)
{
	size_t i;
	int r = 0;

	if (b->n == 0)
		return 0;
	(void)client_pool_wait(b->pool);
	for (i = 0; i < b->n && r == 0; i++)
		r = upload_done(s, c, &b->jobs[i], b->md5s[i], b->sizes[i]);
	batch_release(s, b, b->n);
	b->n = 0;
	return r;
}

/* Collects every batch in flight, oldest first. */
static int
uploader_collect(struct sync_run *s, struct client *c)
{
	struct uploader *u = s->up;
	unsigned k;
	int r = 0, r1;

	for (k = 0; k < SYNC_INFLIGHT; k++)
		if ((r1 = batch_collect(s, c, &u->b[(u->cur + k) % SYNC_INFLIGHT])) != 0 && r == 0)
			r = r1;
	return r;
}

/* Waits for every batch in flight without recording anything. */
static void
uploader_wait(struct uploader *u)
{
	unsigned k;

	for (k = 0; k < SYNC_INFLIGHT; k++)
		if (u->b[k].n > 0)
			(void)client_pool_wait(u->b[k].pool);
}

/* Hands the next rows (at most SYNC_BATCH) to the current slot's pool without waiting
 * (the slot must be free); *startedp is the number handed out (0: nothing pending). */
static int
uploader_start(struct sync_run *s, size_t *startedp)
{
	struct uploader *u = s->up;
	struct upbatch *b = &u->b[u->cur];
	struct client_opts o;
	sqlite3_stmt *st;
	char errbuf[256];
	size_t n, rootlen = strlen(s->root);
	int r, rc, nconn;

	*startedp = 0;
	if (util_stop_pending()) {
		set_fatal(s, STEP_ESTOPPED, "stopped", NULL);
		return STEP_ESTOPPED;
	}
	assert(b->n == 0);
	if (b->pool == NULL) {
		if ((r = agent_client_opts(s->a, &o, errbuf, sizeof(errbuf))) != 0) {
			set_fatal(s, r, "cannot connect", errbuf);
			return r;
		}
		nconn = s->a->connections;
		if (nconn <= 1 && s->pending >= 16)
			nconn = SYNC_AUTO_CONN;
		if ((uint64_t)nconn > s->pending)
			nconn = (int)s->pending;
		if ((r = client_pool_new(&o, nconn, &b->pool)) != 0) {
			set_fatal(s, r, "cannot connect", step_strerror(r));
			return r;
		}
	}
	if (!u->scan_done) {
		st = u->next_small;
		sqlite3_bind_int64(st, 1, u->last);
	} else {
		/* Rows after the scan's last, and the larger ones the scan left behind. */
		st = u->next;
		sqlite3_bind_int64(st, 1, u->last);
		sqlite3_bind_int64(st, 3, u->scan_last);
	}
	sqlite3_bind_int(st, 2, SYNC_BATCH);
	for (n = 0; n < SYNC_BATCH && (rc = sqlite3_step(st)) == SQLITE_ROW; n++) {
		const char *path = (const char *)sqlite3_column_text(st, 2);
		const char *md5 = (const char *)sqlite3_column_text(st, 4);
		size_t plen = strlen(path), mlen = strlen(md5);

		u->last = sqlite3_column_int64(st, 0);
		b->keys[n] = xstrdup((const char *)sqlite3_column_text(st, 1));
		b->paths[n] = xmalloc(rootlen + 2 + plen);
		memcpy(b->paths[n], s->root, rootlen);
		b->paths[n][rootlen] = '/';
		memcpy(b->paths[n] + rootlen + 1, path, plen + 1);
		b->sizes[n] = (uint64_t)sqlite3_column_int64(st, 3);
		mlen = mlen < HASH_MD5_HEX - 1 ? mlen : HASH_MD5_HEX - 1;
		memcpy(b->md5s[n], md5, mlen);
		b->md5s[n][mlen] = '\0';
		memset(&b->jobs[n], 0, sizeof(b->jobs[n]));
		b->jobs[n].path = b->paths[n];
		b->jobs[n].key = b->keys[n];
		held_attach(s, b, u->last, &b->jobs[n], b->md5s[n]);
		b->jobs[n].flags = CLIENT_PUT_EXIST_OK | (u->scan_done ? 0 : CLIENT_PUT_NO_STATE);
	}
	sqlite3_reset(st);
	if (!u->scan_done)
		u->scan_last = u->last;
	if (n > 0 && !u->scan_done)
		log_info("sending %zu files while scanning", n);
	if (n > 0) {
		client_pool_start(b->pool, b->jobs, n);
		u->cur = (u->cur + 1) % SYNC_INFLIGHT;
	}
	b->n = n;
	u->taken += n;
	*startedp = n;
	return 0;
}

static int
uploader_new(struct sync_run *s)
{
	struct uploader *u = xcalloc(1, sizeof(*u));
	unsigned k;
	int rc;

	rc = sqlite3_prepare_v2(db_handle(s->db),
	    "SELECT rowid, okey, path, size, md5 FROM temp.sync_pending WHERE rowid > ?1"
	    " AND (rowid > ?3 OR size > " STR(SYNC_SCAN_SMALL) ") ORDER BY rowid LIMIT ?2",
	    -1, &u->next, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db_handle(s->db),
		    "SELECT rowid, okey, path, size, md5 FROM temp.sync_pending WHERE rowid > ?1"
		    " AND size <= " STR(SYNC_SCAN_SMALL) " ORDER BY rowid LIMIT ?2",
		    -1, &u->next_small, NULL);
	if (rc != SQLITE_OK) {
		uploader_free(s, u);
		return db_err(rc);
	}
	for (k = 0; k < SYNC_INFLIGHT; k++) {
		struct upbatch *b = &u->b[k];

		b->jobs = xcalloc(SYNC_BATCH, sizeof(*b->jobs));
		b->paths = xcalloc(SYNC_BATCH, sizeof(*b->paths));
		b->keys = xcalloc(SYNC_BATCH, sizeof(*b->keys));
		b->md5s = xcalloc(SYNC_BATCH, sizeof(*b->md5s));
		b->sizes = xcalloc(SYNC_BATCH, sizeof(*b->sizes));
	}
	s->up = u;
	return 0;
}

/* During the scan: once a whole batch is waiting (last: once the scan is over, whatever
 * is), start it, after collecting the oldest batch in flight if every slot is busy. */
static int
uploader_scan_step(struct sync_run *s, struct client *c, int last)
{
	size_t started;
	int r;

	if (s->up == NULL || s->pending_small - s->up->taken < (last ? 1 : SYNC_BATCH))
		return 0;
	/* A run that sent nothing yet has not seen the server: its files go after the scan,
	 * once the session is known to be up (a watcher against a server that is down would
	 * otherwise wait out the pool's reconnect attempts as well as the session's). */
	if (last && s->up->b[0].pool == NULL && s->up->b[1].pool == NULL)
		return 0;
	if ((r = batch_collect(s, c, &s->up->b[s->up->cur])) != 0)
		return r;
	return uploader_start(s, &started);
}

/* After the scan: everything not handed out yet. The results of a batch are recorded in a
 * transaction of their own, never held while the batch runs: the pool's connections write
 * resume rows of large files into the same state database. */
static int
upload_pending(struct sync_run *s, struct client *c)
{
	size_t started;
	int r;

	s->up->scan_done = 1;
	s->up->last = 0;
	do {
		uploader_wait(s->up);
		if ((r = db_begin(s->db)) != 0)
			return r;
		r = uploader_collect(s, c);
		if (db_commit(s->db) != 0 && r == 0)
			r = STEP_EIO;
		if (r == 0)
			r = uploader_start(s, &started);
		if (r != 0)
			return r;
	} while (started > 0);
	return 0;
}

/* Writes the manifest with seq into fd's file (truncating it first). */
static int
write_manifest(struct sync_run *s, FILE *f, struct manifest_header *h)
{
	if (fflush(f) != 0 || ftruncate(fileno(f), 0) != 0 || fseek(f, 0, SEEK_SET) != 0)
		return STEP_ESYS;
	return manifest_writer_finish(s->mw, h, f);
}

/*
 * With --skip-unchanged, a run whose tree is exactly the latest snapshot's (same
 * manifest entries, by digest) records no new one: that snapshot, still on the server
 * and still the latest there, is the backup of this tree. 1 and *h (that snapshot) when so, 0 when
 * a snapshot must be recorded, or an error.
 */
static int
snapshot_unchanged(struct sync_run *s, struct client *c, struct manifest_header *h)
{
	struct snapshots_rec rec;
	uint64_t local = 0, latest = 0;
	int r;

	if (!s->skip_unchanged || s->upload_failed > 0 || s->read_errors > 0)
		return 0;
	if ((r = snapshots_latest(s->db, s->name, &local)) != 0)
		return r;
	if (local == 0 || snapshots_get(s->db, s->name, local, &rec) != 0 ||
	    strcmp(rec.digest, manifest_writer_digest(s->mw)) != 0)
		return 0;
	if ((r = snapshot_latest(c, s->name, local, &latest)) != 0) {
		set_fatal(s, r, "cannot find the latest snapshot", client_error(c));
		return r;
	}
	if (latest != local)
		return 0; /* pruned away, or another machine recorded one since */
	if ((r = snapshot_exists(c, s->name, local)) != 1) {
		if (r < 0)
			set_fatal(s, r, "cannot find the latest snapshot", client_error(c));
		return r;
	}
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", s->name);
	h->seq = local;
	h->time = rec.time;
	manifest_writer_counts(s->mw, h);
	return 1;
}

/* Step 5: manifest under a new seq, then its DATA record, then the local record. */
static int
record_snapshot(struct sync_run *s, struct client *c, struct manifest_header *h)
{
	char tmp[4200], key[MANIFEST_KEY_MAX + 1];
	const char *tdir = getenv("TMPDIR");
	struct snapshots_rec rec;
	struct client_result res;
	uint64_t local = 0, latest = 0;
	FILE *f = NULL;
	int fd, r, attempt;

	if ((r = snapshots_latest(s->db, s->name, &local)) != 0)
		return r;
	if ((r = snapshot_latest(c, s->name, local, &latest)) != 0) {
		set_fatal(s, r, "cannot find the latest snapshot", client_error(c));
		return r;
	}
	snprintf(tmp, sizeof(tmp), "%s/stepsync-manifest.XXXXXX",
	    tdir != NULL && *tdir == '/' ? tdir : "/tmp");
	if ((fd = mkstemp(tmp)) < 0 || (f = fdopen(fd, "w+")) == NULL) {
		agent_error("cannot create a temporary file in '%s': %s",
		    tdir != NULL ? tdir : "/tmp", strerror(errno));
		if (fd >= 0) {
			close(fd);
			unlink(tmp);
		}
		return STEP_ESYS;
	}
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", s->name);
	h->time = util_wall_s();
	h->seq = (latest > local ? latest : local) + 1;
	for (attempt = 0; attempt < 5; attempt++, h->seq++) {
		if ((r = write_manifest(s, f, h)) != 0) {
			agent_error("cannot write the manifest: %s", strerror(errno));
			goto out;
		}
		if ((r = manifest_snapshot_key(s->name, h->seq, key, sizeof(key))) != 0)
			goto out;
		r = client_put_file(c, tmp, key, 0, &res);
		if (r != STEP_EEXIST)
			break;
		/* Someone else recorded this seq meanwhile: take the next one. */
		log_info("snapshot key '%s' already exists; trying the next seq", key);
	}
	if (r != 0) {
		set_fatal(s, r, "cannot upload the snapshot manifest", client_error(c));
		goto out;
	}
	memset(&rec, 0, sizeof(rec));
	snprintf(rec.digest, sizeof(rec.digest), "%s", manifest_writer_digest(s->mw));
	rec.seq = h->seq;
	rec.time = h->time;
	rec.files = h->files;
	rec.dirs = h->dirs;
	rec.symlinks = h->symlinks;
	rec.bytes = h->bytes;
	r = snapshot_info_save(c, s->name, &rec);
	if (r != 0 && r != STEP_EEXIST) {
		set_fatal(s, r, "cannot save the snapshot record", client_error(c));
		goto out;
	}
	r = snapshots_put(s->db, s->name, &rec);
out:
	fclose(f);
	unlink(tmp);
	return r;
}

static int
exit_for(struct sync_run *s, int r)
{
	if (s->fatal != 0) {
		agent_error("sync '%s': %s", s->name, s->fatal_msg);
		return snapshot_exit_code(s->fatal);
	}
	if (r != 0) {
		agent_error("sync '%s': %s", s->name, step_strerror(r));
		return AGENT_EXIT_FAIL;
	}
	return AGENT_EXIT_OK;
}

/* Rows of files that vanished must go, and the scan writes nothing for unchanged files
 * (so a no-change run writes nothing at all). Only when fewer known files were found
 * than the table holds are this scan's files marked with the run's gen — read back from
 * the manifest being built — and the others dropped. */
static int
mark_seen(struct sync_run *s)
{
	struct manifest_header h;
	struct manifest_reader *rd = NULL;
	struct manifest_entry *e = xmalloc(sizeof(*e));
	FILE *f = NULL;
	int r;

	memset(&h, 0, sizeof(h));
	snprintf(h.name, sizeof(h.name), "%s", s->name);
	h.seq = 1;
	h.time = util_wall_s();
	if ((f = tmpfile()) == NULL) {
		r = STEP_ESYS;
		goto out;
	}
	if ((r = manifest_writer_finish(s->mw, &h, f)) != 0 || fseek(f, 0, SEEK_SET) != 0 ||
	    (r = manifest_reader_new(f, &h, &rd)) != 0) {
		r = r != 0 ? r : STEP_ESYS;
		goto out;
	}
	while ((r = manifest_reader_next(rd, e)) == 1)
		if (e->type == MANIFEST_FILE &&
		    (r = files_touch(s->files, s->name, e->path, s->gen)) != 0)
			goto out;
	if (r == 0)
		r = files_drop_unseen(s->files, s->name, s->gen);
out:
	manifest_reader_free(rd);
	if (f != NULL)
		fclose(f);
	free(e);
	return r;
}

static int state_path(struct agent *a, char *out, size_t outlen);
static void cursor_close(struct sync_run *s);

/* Opens the sorted walk on a connection of its own, whose read transaction keeps seeing
 * the table as it was while this run's transaction writes. Without it (cannot open),
 * visit_file() looks every file up instead. */
static void
cursor_open(struct sync_run *s)
{
	char path[4096];

	if (state_path(s->a, path, sizeof(path)) != 0 || db_open(path, &s->rdb, NULL, 0) != 0 ||
	    files_cursor_open(s->rdb, s->name, &s->cur) != 0) {
		log_info("state database: no sorted walk; looking files up one by one");
		cursor_close(s);
	}
}

static void
cursor_close(struct sync_run *s)
{
	files_cursor_free(s->cur);
	s->cur = NULL;
	db_close(s->rdb);
	s->rdb = NULL;
}

/* Steps 2 and 3: the scan in one transaction. Returns 0, an error, or 1 for "stop here,
 * *exitp says how" (dry run, mass deletion). */
static int
scan_phase(struct sync_run *s, int *exitp)
{
	struct scan_stats stats;
	uint64_t gone;
	int r, e;

	if ((r = db_begin(s->db)) != 0)
		return r;
	if ((r = db_exec(s->db,
	         "CREATE TEMP TABLE IF NOT EXISTS sync_pending(okey TEXT NOT NULL,"
	         " path TEXT NOT NULL, size INTEGER NOT NULL, md5 TEXT NOT NULL);"
	         "DELETE FROM temp.sync_pending;")) != 0)
		goto fail;
	/* Each key at most once: see struct pend_set. */
	if ((r = db_err(sqlite3_prepare_v2(db_handle(s->db),
	         "INSERT INTO temp.sync_pending(okey, path, size, md5) VALUES(?,?,?,?)", -1,
	         &s->pend_ins, NULL))) != 0 ||
	    (r = db_err(sqlite3_prepare_v2(db_handle(s->db),
	         "SELECT okey FROM temp.sync_pending WHERE rowid = ?", -1, &s->pend_key, NULL))) !=
	        0)
		goto fail;
	if (!s->dry_run && s->up == NULL && (r = uploader_new(s)) != 0)
		goto fail;
	if ((r = files_count(s->files, s->name, &s->known)) != 0 ||
	    (r = files_next_gen(s->files, s->name, &s->gen)) != 0)
		goto fail;
	cursor_open(s);
	r = scan_tree(s->root, s->exclude, s->nexclude, sync_visit, s, &stats);
	if (r == 0)
		r = flush_deferred(s);
	if (r == 0) /* the last small files go while the run commits the scan */
		r = uploader_scan_step(s, s->scan_c, 1);
	drop_deferred(s);
	cursor_close(s);
	if (r == STEP_ESYS) {
		e = errno;
		db_rollback(s->db);
		agent_error("cannot open '%s': %s", s->root, strerror(e));
		*exitp = AGENT_EXIT_FAIL;
		return 1;
	}
	if (r != 0)
		goto fail;
	s->read_errors += stats.errors;
	gone = s->known - s->found;
	if (s->known > 0 && gone * 2 > s->known && !s->allow_mass_delete) {
		db_rollback(s->db);
		agent_error("sync '%s': %" PRIu64 " of %" PRIu64 " known files are gone from '%s' "
		            "(unmounted disk?); no snapshot recorded. Rerun with "
		            "--allow-mass-delete if this is intended",
		    s->name, gone, s->known, s->root);
		*exitp = SYNC_EXIT_MASSDEL;
		return 1;
	}
	if (s->dry_run) {
		r = print_pending(s);
		db_rollback(s->db);
		printf("dry run '%s': %" PRIu64 " files (%" PRIu64 " bytes) would be sent, "
		       "%" PRIu64 " known files are gone; nothing was sent\n",
		    s->name, s->pending, s->pending_bytes, gone);
		*exitp = r == 0 ? AGENT_EXIT_OK : AGENT_EXIT_FAIL;
		return 1;
	}
	if (s->found < s->known && (r = mark_seen(s)) != 0)
		goto fail;
	return db_commit(s->db);
fail:
	db_rollback(s->db);
	return r;
}

/* Ties the state to this server and user; another one makes every object unknown. */
static int
bind_server(const struct agent *a, struct db *db)
{
	char id[sizeof(a->host) + 300];
	int changed = 0, r;

	snprintf(id, sizeof(id), "%.255s@%s:%d", a->user != NULL ? a->user : "", a->host, a->port);
	r = server_id_bind(db, id, &changed);
	if (r == 0 && changed)
		log_info("the state was used with another server or user: every object is "
		         "checked again on %s",
		    id);
	return r;
}

/* One tree, one snapshot. */
static int
sync_one(struct agent *a, const char *name, const char *root, char *const *exclude, size_t nexclude,
    int dry_run, int allow_mass_delete, int skip_unchanged)
{
	struct sync_run *s = xcalloc(1, sizeof(*s));
	struct manifest_header h;
	struct client *c = NULL;
	double t0;
	int r, unchanged, ex = AGENT_EXIT_FAIL;

	s->a = a;
	s->name = name;
	s->root = root;
	s->exclude = exclude;
	s->nexclude = nexclude;
	s->dry_run = dry_run;
	s->allow_mass_delete = allow_mass_delete;
	s->skip_unchanged = skip_unchanged;
	s->hbuf = xmalloc(SYNC_HASH_BUF);
	s->dq = xcalloc(SYNC_DQ_MAX, sizeof(*s->dq));
	if (agent_db(a, &s->db) != 0) {
		ex = SYNC_EXIT_CONFIG;
		goto done;
	}
	if ((r = files_migrate(s->db)) != 0 || (r = snapshots_migrate(s->db)) != 0 ||
	    (r = bind_server(a, s->db)) != 0 || (r = files_new(s->db, &s->files)) != 0 ||
	    (r = manifest_writer_new(&s->mw)) != 0) {
		agent_error("state database: %s", step_strerror(r));
		goto done;
	}
	if (agent_client(a, &c) != 0) {
		ex = SYNC_EXIT_CONFIG;
		goto done;
	}
	s->scan_c = c;
	t0 = util_now_s();
	if ((r = scan_phase(s, &ex)) != 0) {
		if (r < 0)
			ex = exit_for(s, r);
		goto done;
	}
	log_info("scanned '%s' in %.3f s: %" PRIu64 " files hashed, %" PRIu64 " to send", root,
	    util_now_s() - t0, s->hashed, s->pending);
	t0 = util_now_s();
	if ((r = client_connect(c)) != 0) {
		set_fatal(s, r, "cannot log in", client_error(c));
		ex = exit_for(s, r);
		goto done;
	}
	if (s->pending > 0 && (r = upload_pending(s, c)) != 0) {
		ex = exit_for(s, r);
		goto done;
	}
	log_info("sent %" PRIu64 " files in %.3f s (login included)", s->sent, util_now_s() - t0);
	t0 = util_now_s();
	if (s->upload_failed > 0) {
		agent_error("sync '%s': %" PRIu64 " of %" PRIu64 " files could not be sent; "
		            "no snapshot recorded (the previous one stays the latest)",
		    name, s->upload_failed, s->pending);
		goto done;
	}
	if ((unchanged = snapshot_unchanged(s, c, &h)) < 0) {
		ex = exit_for(s, unchanged);
		goto done;
	}
	if (!unchanged && (r = record_snapshot(s, c, &h)) != 0) {
		ex = exit_for(s, r);
		goto done;
	}
	log_info("%s snapshot #%" PRIu64 " in %.3f s", unchanged ? "kept" : "recorded", h.seq,
	    util_now_s() - t0);
	if (a->verbose >= 0)
		printf("snapshot %s#%" PRIu64 "%s: %" PRIu64 " files, %" PRIu64 " dirs, %" PRIu64
		       " symlinks, %" PRIu64 " bytes; sent %" PRIu64 " files (%" PRIu64
		       " bytes), %" PRIu64 " already on the server\n",
		    name, h.seq, unchanged ? " unchanged (no new snapshot recorded)" : "", h.files,
		    h.dirs, h.symlinks, h.bytes, s->sent, s->sent_bytes, s->existed);
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		        "command", "sync", "name", name, "seq", (json_int_t)h.seq, "unchanged",
		        unchanged, "files", (json_int_t)h.files, "dirs", (json_int_t)h.dirs,
		        "symlinks", (json_int_t)h.symlinks, "bytes", (json_int_t)h.bytes,
		        "sent_files", (json_int_t)s->sent, "sent_bytes", (json_int_t)s->sent_bytes,
		        "read_errors", (json_int_t)s->read_errors, "existed",
		        (json_int_t)s->existed, "blocks_sent", (json_int_t)s->blocks_sent));
	if (s->read_errors > 0) {
		agent_error("sync '%s': %" PRIu64 " entries could not be read and are not in "
		            "snapshot #%" PRIu64,
		    name, s->read_errors, h.seq);
		goto done;
	}
	ex = AGENT_EXIT_OK;
done:
	uploader_free(s, s->up); /* waits for batches still in flight */
	held_free(s, &s->cache_head);
	s->cache_tail = NULL;
	sqlite3_finalize(s->pend_ins);
	sqlite3_finalize(s->pend_key);
	free(s->pend.slot);
	files_free(s->files);
	manifest_writer_free(s->mw);
	free(s->hbuf);
	free(s->dq);
	free(s->hheld);
	hash_free(s->sha);
	free(s);
	if (!dry_run)
		agent_record_run(a, name, ex); /* for `stepsync status` (db/runs.h) */
	return ex;
}

/* The state database path, as agent_db() will choose it (for the lock next to it). */
static int
state_path(struct agent *a, char *out, size_t outlen)
{
	if (a->state_path != NULL) {
		if (strlen(a->state_path) >= outlen)
			return STEP_ETOOBIG;
		snprintf(out, outlen, "%s", a->state_path);
		return 0;
	}
	return config_default_state_path(out, outlen);
}

/* Valid NAME: printable, at most MANIFEST_NAME_MAX bytes. */
static int
name_ok(const char *name)
{
	char enc[4 * MANIFEST_NAME_MAX];
	const unsigned char *p;

	for (p = (const unsigned char *)name; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return manifest_name_encode(name, enc, sizeof(enc)) == 0;
}

int
cmd_sync(struct agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "dry-run", no_argument, NULL, 'd' },
		{ "allow-mass-delete", no_argument, NULL, 'm' },
		{ "skip-unchanged", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *name = NULL;
	const struct config_dir *cd;
	char root[PATH_MAX], sp[4096], base[PATH_MAX];
	int c, dry = 0, mass = 0, skip = 0, lockfd = -1, ex = AGENT_EXIT_OK, r;
	pid_t holder = 0;
	size_t i;

	while ((c = getopt_long(argc, argv, "+n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			name = optarg;
			break;
		case 'd':
			dry = 1;
			break;
		case 'm':
			mass = 1;
			break;
		case 's':
			skip = 1;
			break;
		case 'h':
			printf("usage: stepsync %s\n", sync_usage);
			return AGENT_EXIT_OK;
		default:
			return agent_usage("sync [--name NAME] [--dry-run] [--allow-mass-delete] "
			                   "[--skip-unchanged] [DIR]");
		}
	}
	if (argc - optind > 1)
		return agent_usage("sync [--name NAME] [--dry-run] [--allow-mass-delete] "
		                   "[--skip-unchanged] [DIR]");
	if (name != NULL && !name_ok(name)) {
		agent_error(
		    "bad snapshot name '%s' (1 to %d printable bytes)", name, MANIFEST_NAME_MAX);
		return AGENT_EXIT_USAGE;
	}
	if (argc - optind == 0 && (a->cfg == NULL || a->cfg->ndirs == 0)) {
		agent_error("no directory given and no [dir] in the config file");
		return SYNC_EXIT_CONFIG;
	}
	if (argc - optind == 0 && name != NULL && config_find_dir(a->cfg, name) == NULL) {
		agent_error("no [dir \"%s\"] in the config file", name);
		return SYNC_EXIT_CONFIG;
	}
	if ((r = state_path(a, sp, sizeof(sp))) != 0) {
		agent_error("no state database path (set --state or HOME)");
		return SYNC_EXIT_CONFIG;
	}
	if (!dry) {
		r = lock_acquire(sp, &lockfd, &holder);
		if (r == STEP_EBUSY) {
			if (holder > 0)
				agent_error("another sync (pid %ld) is using '%s'; try again later",
				    (long)holder, sp);
			else
				agent_error("another sync is using '%s'; try again later", sp);
			return SYNC_EXIT_TEMPFAIL;
		}
		if (r != 0) {
			agent_error("cannot lock '%s.lock': %s", sp, strerror(errno));
			return SYNC_EXIT_CONFIG;
		}
	}
	if (argc - optind == 1) {
		if (realpath(argv[optind], root) == NULL) {
			agent_error("cannot open '%s': %s", argv[optind], strerror(errno));
			ex = AGENT_EXIT_FAIL;
			goto out;
		}
		if (name == NULL) {
			snprintf(base, sizeof(base), "%s", root);
			name = basename(base);
			if (!name_ok(name)) {
				agent_error(
				    "cannot use '%s' as a snapshot name; give --name", name);
				ex = AGENT_EXIT_USAGE;
				goto out;
			}
		}
		cd = config_find_dir(a->cfg, name);
		ex = sync_one(
		    a, name, root, cd ? cd->exclude : NULL, cd ? cd->nexclude : 0, dry, mass, skip);
		goto out;
	}
	for (i = 0; i < a->cfg->ndirs; i++) {
		cd = &a->cfg->dirs[i];
		if (name != NULL && strcmp(name, cd->name) != 0)
			continue;
		if (!name_ok(cd->name)) {
			agent_error("%s: bad snapshot name '%s'", a->cfg->file, cd->name);
			ex = ex ? ex : SYNC_EXIT_CONFIG;
			continue;
		}
		r = sync_one(a, cd->name, cd->path, cd->exclude, cd->nexclude, dry, mass, skip);
		if (r != 0 && (ex == 0 || ex == AGENT_EXIT_FAIL))
			ex = r;
		if (r == SYNC_EXIT_TEMPFAIL || r == SYNC_EXIT_NOPERM || r == SYNC_EXIT_TLS)
			break; /* the next directory would meet the same server */
	}
out:
	lock_release(lockfd);
	return ex;
}
