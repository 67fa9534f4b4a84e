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
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "chunker.h"
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
#include "sender.h"
#include "snapshot.h"
#include "server_id.h"
#include "snapshots.h"
#include "tree.h"
#include "util.h"

#define STR_(x)          #x
#define STR(x)           STR_(x)
#define SYNC_BATCH       1024        /* objects handed to client_pool_put() at once */
#define SYNC_HASH_BUF    (256 << 10) /* read size while hashing */
#define SYNC_HASH_TRY    3           /* attempts on a file that changes while it is hashed */
#define SYNC_AUTO_CONN   4           /* connections for many uploads when --connections is 1 */
/* Files up to this size are sent while the scan goes on: one block on every STEP server
 * seen (the reference plans 20480-byte blocks), so they need no resume rows, which could
 * not be written while the scan holds the state's write lock. */
#define SYNC_SCAN_SMALL  20480
#define SYNC_HELD_MAX    (32u << 20) /* bytes of small files' content kept for sending */
/* Small files whose SHA-256s and MD5s are computed together (hash_sha256_many, md5_many),
 * several times faster than one at a time; the rest of their visit waits for the batch
 * (see defer). */
#define SYNC_HASH_BATCH  256
#define SYNC_DQ_MAX      1024 /* entries waiting for the batch, at most */
/* Files of at least this size are cut into content-defined chunks (chunker.h), read once
 * by the scan, each new chunk sent from memory while the scan goes on (sender.h). Smaller
 * ones stay one object (a change re-sends at most 1 MiB), uploaded after the scan with
 * resume rows and progress in `status`. */
#define SYNC_CHUNKED     (1u << 20)
#define SYNC_CBUF        (64u << 20) /* the chunking read buffer */
#define SYNC_SEND_BUDGET (64u << 20) /* chunk and tree bytes queued or in flight */
#define SYNC_CHUNK_BATCH 16          /* chunks hashed side by side (md5_many's lanes) */

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
    "  1 some files could not be sent, no snapshot recorded (summary on stderr);\n"
    "  2 usage; 3 snapshot recorded but incomplete: files that could not be read\n"
    "  were left out, files that kept changing kept their previous version (listed\n"
    "  on stderr);\n"
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
	uint32_t uid, gid;
	struct held *h; /* DQ_HASH: its content */
};

/* A set of 32-byte ids (chunks and trees queued this run), open addressing. */
struct idset {
	uint8_t (*slot)[HASH_SHA256_LEN];
	size_t cap, n;
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

	/* Snapshot format 2: chunks, trees, the sender. */
	struct tree_builder *tb;
	struct sender *snd;  /* NULL in a dry run */
	struct idset queued; /* ids queued to snd this run */
	uint8_t root_id[HASH_SHA256_LEN];
	int has_gen;       /* the server reports object generations (objgen) */
	char store_id[65]; /* ...the store's id and the generation at the start */
	int64_t gen0;
	uint8_t *cbuf;   /* SYNC_CBUF bytes, for chunking */
	char **newlists; /* chunk lists to mark known once every upload is in */
	size_t nnewlists, capnewlists;
	struct buf clist; /* the chunk list being built */
	uint64_t chunked, chunks_new, chunk_bytes_new, trees_new, tree_bytes_new;
	uint64_t chunks_sent, trees_sent, tree_bytes_sent; /* sent (not found there already) */
	uint64_t chunked_files_new;                        /* chunked files with a chunk to send */
	uint64_t busy_kept; /* files that kept changing: their previous version is in */

	uint64_t known, found, hashed, read_errors, visited;
	uint64_t pending, pending_bytes;
	uint64_t pending_small; /* pending files of at most SYNC_SCAN_SMALL bytes */
	uint64_t sent, sent_bytes, existed, upload_failed;
	uint64_t blocks_sent; /* UPLOAD requests, resumed uploads count only what they sent */
	int fatal;            /* a STEP_E* that ends the run (transport, auth), 0 if none */
	char fatal_msg[512];
};

static void set_fatal(struct sync_run *s, int r, const char *what, const char *detail);
static int is_transport(int r);

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
	if ((fd = open_scanned(dirfd, name, st0, try, &a)) < 0)
		return STEP_ESYS;
	if (a.st_size >= SYNC_CHUNKED) { /* not reached: chunk_file() reads those */
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

/* ---- snapshot format 2: chunks, trees and their uploads ---- */

static size_t
idset_pos(const struct idset *set, const uint8_t id[HASH_SHA256_LEN])
{
	uint64_t h;

	memcpy(&h, id, sizeof(h)); /* a SHA-256: its bytes are as good as any hash */
	return (size_t)h & (set->cap - 1);
}

static int
idset_has(const struct idset *set, const uint8_t id[HASH_SHA256_LEN])
{
	static const uint8_t zero[HASH_SHA256_LEN];
	size_t i;

	if (set->cap == 0)
		return 0;
	for (i = idset_pos(set, id); memcmp(set->slot[i], zero, HASH_SHA256_LEN) != 0;
	     i = (i + 1) & (set->cap - 1))
		if (memcmp(set->slot[i], id, HASH_SHA256_LEN) == 0)
			return 1;
	return 0;
}

static void
idset_add(struct idset *set, const uint8_t id[HASH_SHA256_LEN])
{
	static const uint8_t zero[HASH_SHA256_LEN];
	size_t i;

	if (2 * (set->n + 1) > set->cap) {
		struct idset q = { xcalloc(set->cap ? 2 * set->cap : 1024, HASH_SHA256_LEN),
			set->cap ? 2 * set->cap : 1024, 0 };

		for (i = 0; i < set->cap; i++)
			if (memcmp(set->slot[i], zero, HASH_SHA256_LEN) != 0)
				idset_add(&q, set->slot[i]);
		free(set->slot);
		*set = q;
	}
	for (i = idset_pos(set, id); memcmp(set->slot[i], zero, HASH_SHA256_LEN) != 0;
	     i = (i + 1) & (set->cap - 1))
		;
	memcpy(set->slot[i], id, HASH_SHA256_LEN);
	set->n++;
}

enum { SEND_CHUNK = 1, SEND_TREE = 2, SEND_FILE = 3 };

/* 1 when the object key o.<hex> was handed to the sender this run. */
static int
queued_key(struct sync_run *s, const char *okey)
{
	uint8_t id[HASH_SHA256_LEN];

	return manifest_is_object_key(okey) && util_hex_decode(okey + 2, id, sizeof(id)) == 0 &&
	    idset_has(&s->queued, id);
}

/* Records one finished chunk or tree upload (in the caller's transaction). */
static int
sent_done(void *arg, const struct sender_done *d)
{
	struct sync_run *s = arg;

	if (d->rc != 0) {
		if (is_transport(d->rc) || d->rc == STEP_ESTOPPED) {
			set_fatal(s, d->rc == STEP_ESTOPPED ? STEP_ECLOSED : d->rc, "cannot upload",
			    d->error);
			return 0;
		}
		agent_error("cannot upload object %s: %s", d->key,
		    *d->error ? d->error : step_strerror(d->rc));
		s->upload_failed++;
		return 0;
	}
	s->blocks_sent += d->blocks_sent;
	if (d->tag == SEND_FILE) {
		if (d->existed) {
			s->existed++;
		} else {
			s->sent++;
			s->sent_bytes += d->size;
		}
	} else if (!d->existed && d->tag == SEND_CHUNK) {
		s->sent_bytes += d->size;
		s->chunks_sent++;
	} else if (!d->existed) {
		s->tree_bytes_sent += d->size;
		s->trees_sent++;
	}
	/* The objects table sums file content (status: bytes sent); a tree counts as 0. */
	return files_object_add(s->files, d->key, d->tag != SEND_TREE ? d->size : 0, d->md5);
}

static int
collect_sent(struct sync_run *s)
{
	return s->snd != NULL ? sender_collect(s->snd, sent_done, s) : 0;
}

/*
 * Sends the object id (len bytes at data; copied) unless the server is known to hold it or
 * this run queued it already. *newp is 1 when it was queued now. In a dry run nothing is
 * sent, only counted.
 */
static int
send_object(struct sync_run *s, const uint8_t id[HASH_SHA256_LEN], const uint8_t *data, size_t len,
    const char *md5, int tag, int *newp)
{
	char key[MANIFEST_KEY_MAX + 1];
	uint8_t *copy;
	int r;

	*newp = 0;
	if (idset_has(&s->queued, id))
		return 0;
	if (tag == SEND_TREE)
		manifest_tree_key(id, key, sizeof(key));
	else
		manifest_object_key(id, key, sizeof(key));
	if ((r = files_object_known(s->files, key)) != 0)
		return r < 0 ? r : 0;
	if ((r = pend_has(s, key, pend_fp(key))) != 0)
		return r < 0 ? r : 0;
	idset_add(&s->queued, id);
	*newp = 1;
	if (s->snd == NULL)
		return 0;
	copy = xmalloc(len ? len : 1);
	memcpy(copy, data, len);
	if ((r = sender_put(s->snd, key, copy, len, md5, tag)) != 0) {
		(void)collect_sent(s); /* says why */
		if (s->fatal == 0)
			set_fatal(s, r, "cannot upload", NULL);
		return r;
	}
	return collect_sent(s);
}

/* A finished tree from the builder: sent unless known. */
static int
tree_emit(void *arg, const uint8_t id[HASH_SHA256_LEN], const uint8_t *data, size_t len)
{
	struct sync_run *s = arg;
	int r, isnew;

	if ((r = send_object(s, id, data, len, NULL, SEND_TREE, &isnew)) != 0)
		return r;
	if (isnew) {
		s->trees_new++;
		s->tree_bytes_new += len;
	}
	return 0;
}

/*
 * Reads a large file once, cutting it into chunks: each chunk's id is the SHA-256 of its
 * bytes, each new one is sent from memory while the file is read on. The chunk list goes
 * into the state under "c.<SHA-256 of the list>", which becomes the row's okey. The file
 * must not change while read (as hash_once). 0, STEP_ECHANGED, STEP_ESYS, STEP_ESTOPPED,
 * or an upload/database error.
 */
static int
chunk_file(struct sync_run *s, int dirfd, const char *name, const struct stat *st0, int try,
    struct files_row *row, struct stat *stp)
{
	struct stat a, b;
	const void *data[SYNC_CHUNK_BATCH];
	size_t len[SYNC_CHUNK_BATCH], fill = 0, off = 0, pos, k, nb;
	uint8_t ids[SYNC_CHUNK_BATCH][HASH_SHA256_LEN], md5s[SYNC_CHUNK_BATCH][HASH_MD5_LEN];
	uint8_t rec[FILES_CHUNK_REC];
	char md5[HASH_MD5_HEX];
	uint64_t total = 0;
	ssize_t n;
	int fd, eof = 0, r = STEP_ESYS, isnew, i;

	if ((fd = open_scanned(dirfd, name, st0, try, &a)) < 0)
		return STEP_ESYS;
	if (s->cbuf == NULL)
		s->cbuf = xmalloc(SYNC_CBUF);
	s->clist.len = 0;
	for (;;) {
		if (util_stop_pending()) {
			set_fatal(s, STEP_ESTOPPED, "stopped", NULL);
			r = STEP_ESTOPPED;
			goto out;
		}
		if (!eof && fill - off < CHUNK_MAX) {
			memmove(s->cbuf, s->cbuf + off, fill - off);
			fill -= off;
			off = 0;
			while (!eof && fill < SYNC_CBUF) {
				n = read(fd, s->cbuf + fill, SYNC_CBUF - fill);
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
		 * or the file's end), hashed side by side: SHA-256 for the ids, MD5 for the
		 * uploads. */
		for (nb = 0, pos = off;
		     nb < SYNC_CHUNK_BATCH && pos < fill && (eof || fill - pos >= CHUNK_MAX);
		     nb++) {
			data[nb] = s->cbuf + pos;
			len[nb] = chunk_next(s->cbuf + pos, fill - pos);
			pos += len[nb];
		}
		hash_sha256_many(nb, data, len, ids);
		if (s->snd != NULL)
			md5_many(nb, data, len, md5s);
		for (k = 0; k < nb; k++) {
			memcpy(rec, ids[k], HASH_SHA256_LEN);
			for (i = 0; i < 8; i++)
				rec[HASH_SHA256_LEN + i] = (uint8_t)((uint64_t)len[k] >> (8 * i));
			if (buf_append(&s->clist, rec, sizeof(rec)) != 0) {
				r = STEP_ENOMEM;
				goto out;
			}
			if (s->snd != NULL)
				hash_to_hex(md5s[k], HASH_MD5_LEN, md5);
			r = send_object(
			    s, ids[k], data[k], len[k], s->snd ? md5 : NULL, SEND_CHUNK, &isnew);
			if (r != 0)
				goto out;
			if (isnew) {
				s->chunks_new++;
				s->chunk_bytes_new += len[k];
			}
			total += len[k];
		}
		off = pos;
	}
	r = STEP_ESYS;
	if (fstat(fd, &b) != 0)
		goto out;
	if (!unchanged_while_read(&a, &b, st0) || total != (uint64_t)b.st_size) {
		r = STEP_ECHANGED;
		goto out;
	}
	hash_sha256(buf_ptr(&s->clist), s->clist.len, ids[0]);
	manifest_object_key(ids[0], row->okey, sizeof(row->okey));
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

/* Adds a file's entry to the trees: its chunks are the list of a chunked file, one
 * chunk (the whole content) otherwise, none when empty. */
static int
tree_add_file(
    struct sync_run *s, const char *path, const struct files_row *row, uint32_t uid, uint32_t gid)
{
	struct tree_entry te;
	struct tree_chunk one, *chunks = NULL;
	void *data = NULL;
	size_t len = 0, i, k;
	int r;

	memset(&te, 0, sizeof(te));
	te.type = TREE_FILE;
	te.mode = row->mode & 07777;
	te.mtime_ns = row->mtime_ns;
	te.uid = uid;
	te.gid = gid;
	te.size = row->size;
	if (row->okey[0] == 'c') {
		if ((r = files_chunks_get(s->files, row->okey, &data, &len)) != 0)
			return r;
		te.nchunks = len / FILES_CHUNK_REC;
		chunks = xcalloc(te.nchunks ? te.nchunks : 1, sizeof(*chunks));
		for (i = 0; i < te.nchunks; i++) {
			const uint8_t *p = (const uint8_t *)data + i * FILES_CHUNK_REC;

			memcpy(chunks[i].id, p, HASH_SHA256_LEN);
			for (k = 0; k < 8; k++)
				chunks[i].size |= (uint64_t)p[HASH_SHA256_LEN + k] << (8 * k);
		}
		te.chunks = chunks;
	} else if (row->okey[0] != '\0') {
		if (util_hex_decode(row->okey + 2, one.id, HASH_SHA256_LEN) != 0)
			return STEP_EINVAL;
		one.size = row->size;
		te.chunks = &one;
		te.nchunks = 1;
	}
	r = tree_builder_add(s->tb, path, &te);
	free(chunks);
	free(data);
	return r;
}

/* Remembers a chunk list whose chunks this run sends: known once they are all in. */
static void
newlist_add(struct sync_run *s, const char *okey)
{
	if (s->nnewlists == s->capnewlists) {
		s->capnewlists = s->capnewlists ? 2 * s->capnewlists : 16;
		s->newlists = xrealloc(s->newlists, s->capnewlists * sizeof(*s->newlists));
	}
	s->newlists[s->nnewlists++] = xstrdup(okey);
}

/* The rest of a file's visit once its row is complete: records it, queues its content
 * when the server may lack it (h: the content if held, else NULL; taken), and adds it to
 * the manifest. unchanged: the row is the state's, as found. */
static int
finish_file(struct sync_run *s, const char *path, struct files_row *row, int unchanged,
    struct held *h, uint32_t uid, uint32_t gid)
{
	struct manifest_entry *e = &s->ent;
	size_t n = strlen(path);
	int r;

	/* Unchanged files write nothing (see mark_seen()). */
	if (!unchanged && (r = files_put(s->files, s->name, path, row, s->gen)) != 0) {
		free(h);
		return r;
	}
	if ((r = tree_add_file(s, path, row, uid, gid)) != 0) {
		free(h);
		return r;
	}
	if (row->okey[0] == 'c') {
		/* A chunked file: its chunks went to the sender as it was read. In the
		 * manifest (digest, mark_seen) it stands under its list's id. */
		free(h);
		if (!unchanged)
			newlist_add(s, row->okey);
		memcpy(e->path, path, n + 1);
		e->type = MANIFEST_FILE;
		e->target[0] = '\0';
		e->mode = row->mode & 07777;
		e->mtime_ns = row->mtime_ns;
		e->size = row->size;
		memcpy(e->key, row->okey, strlen(row->okey) + 1);
		e->key[0] = 'o';
		memset(e->md5, '0', HASH_MD5_HEX - 1);
		e->md5[HASH_MD5_HEX - 1] = '\0';
		return manifest_writer_add(s->mw, e);
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
		/* An unchanged file's lookup said whether its object is known already; a
		 * file read whole by the scan went to the sender already. */
		r = unchanged ? row->known : files_object_known(s->files, e->key);
		if (r == 0 && !unchanged && queued_key(s, e->key))
			r = 1;
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

/* Finishes a deferred directory or symlink: its manifest and tree entries. */
static int
finish_other(struct sync_run *s, const struct deferred *q)
{
	struct manifest_entry *e = &s->ent;
	struct tree_entry te;
	int r;

	memset(&te, 0, sizeof(te));
	te.type = q->kind == DQ_DIR ? TREE_DIR : TREE_SYMLINK;
	te.mode = q->mode;
	te.mtime_ns = q->mtime_ns;
	te.uid = q->uid;
	te.gid = q->gid;
	if (q->target != NULL) {
		te.target = q->target;
		te.targetlen = strlen(q->target);
	}
	if ((r = tree_builder_add(s->tb, q->path, &te)) != 0)
		return r;

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
			r = finish_file(
			    s, q->path, &q->row, q->kind == DQ_SAME, q->h, q->uid, q->gid);
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
			.mtime_ns = scan_mtime_ns(se->st),
			.uid = (uint32_t)se->st->st_uid,
			.gid = (uint32_t)se->st->st_gid };

		return kind == DQ_DIR || kind == DQ_LINK
		    ? finish_other(s, &now)
		    : finish_file(s, se->path, row, kind == DQ_SAME, NULL, now.uid, now.gid);
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
	q->uid = (uint32_t)se->st->st_uid;
	q->gid = (uint32_t)se->st->st_gid;
	if (kind == DQ_HASH) {
		q->h = s->hheld;
		s->hheld = NULL;
		s->nhash++;
	}
	return s->nhash == SYNC_HASH_BATCH || s->ndq == SYNC_DQ_MAX ? flush_deferred(s) : 0;
}

/*
 * A file that could not be read (r: STEP_ESYS), or kept changing while read however often
 * it was tried (STEP_ECHANGED): a busy file never stops the snapshot. Its previous version
 * (old: its state row, whose content the server holds; NULL when none) goes into the
 * snapshot instead, or, without one, the file is left out; either way the run ends with
 * the "incomplete snapshot" status and says which.
 */
static int
not_read(struct sync_run *s, const struct scan_entry *se, int r, struct files_row *old)
{
	if (r == STEP_ECHANGED && old != NULL) {
		agent_error("'%s' kept changing while it was read; its previous version "
		            "goes into this snapshot",
		    se->path);
		s->busy_kept++;
		return defer(s, DQ_SAME, se, old);
	}
	if (r == STEP_ECHANGED)
		agent_error(
		    "'%s' kept changing while it was read; left out of this snapshot", se->path);
	else
		agent_error(
		    "cannot read '%s': %s; left out of this snapshot", se->path, strerror(errno));
	s->read_errors++;
	return 0;
}

/* A regular file: quick check, hash when needed, queue unknown content. Fills s->ent. */
static int
visit_file(struct sync_run *s, const struct scan_entry *se)
{
	const struct stat *st = se->st;
	struct files_row row, old;
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
	/* A chunked file whose chunks are not all known on the server is read again. */
	if (unchanged && (row.okey[0] != 'c' || row.known))
		return defer(s, DQ_SAME, se, &row);
	old = row;
	have = have && row.known;
	memset(&row, 0, sizeof(row));
	if (st->st_size >= SYNC_CHUNKED) {
		uint64_t new0 = s->chunks_new;

		r = STEP_ECHANGED;
		for (i = 0; i < SYNC_HASH_TRY && r == STEP_ECHANGED; i++)
			r = chunk_file(s, se->dirfd, se->name, st, i, &row, &hst);
		if (r != 0 && r != STEP_ECHANGED && r != STEP_ESYS)
			return r;
		if (r != 0)
			return not_read(s, se, r, have ? &old : NULL);
		s->hashed++;
		s->chunked_files_new += s->chunks_new > new0;
		if (s->dry_run && s->chunks_new > new0)
			printf(
			    "would send %s (%" PRIu64 " bytes)\n", se->path, (uint64_t)hst.st_size);
	} else if (st->st_size == 0) {
		memcpy(row.md5, MANIFEST_EMPTY_MD5, sizeof(row.md5));
		hst = *st;
	} else {
		r = STEP_ECHANGED;
		for (i = 0; i < SYNC_HASH_TRY && r == STEP_ECHANGED; i++)
			r = hash_once(s, se->dirfd, se->name, st, i, sha, row.md5, &hst);
		if (r == STEP_ENOMEM || r == STEP_ESTOPPED)
			return r;
		if (r != 0)
			return not_read(s, se, r, have ? &old : NULL);
		if (s->hheld != NULL && s->hheld->len > SYNC_SCAN_SMALL) {
			/* Larger than a batch's file: hashed now and sent from what was read, so
			 * it is never read again (and cannot change between hash and upload). */
			struct held *h = s->hheld;
			int isnew;

			s->hheld = NULL;
			hash_sha256(h->data, h->len, sha);
			hash_md5_hex(h->data, h->len, row.md5);
			r = send_object(s, sha, h->data, h->len, row.md5, SEND_FILE, &isnew);
			free(h);
			if (r != 0)
				return r;
			if (isnew && s->dry_run)
				printf("would send %s (%" PRIu64 " bytes)\n", se->path,
				    (uint64_t)hst.st_size);
			if (isnew) {
				s->pending++;
				s->pending_bytes += (uint64_t)hst.st_size;
			}
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

/* Step 5: the snapshot record (format 2: it names the root tree) under a new seq, then
 * its DATA record, then the local record. */
static int
record_snapshot(struct sync_run *s, struct client *c, struct manifest_header *h)
{
	char key[MANIFEST_KEY_MAX + 1];
	struct snapshot_record sr;
	struct snapshots_rec rec;
	struct client_result res;
	struct buf out;
	uint64_t local = 0, latest = 0;
	int r, attempt;

	buf_init(&out, 1u << 20);
	if ((r = snapshots_latest(s->db, s->name, &local)) != 0)
		return r;
	if ((r = snapshot_latest(c, s->name, local, &latest)) != 0) {
		set_fatal(s, r, "cannot find the latest snapshot", client_error(c));
		return r;
	}
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", s->name);
	h->time = util_wall_s();
	h->seq = (latest > local ? latest : local) + 1;
	manifest_writer_counts(s->mw, h);
	memset(&sr, 0, sizeof(sr));
	snprintf(sr.name, sizeof(sr.name), "%s", s->name);
	memcpy(sr.root, s->root_id, sizeof(sr.root));
	sr.time = h->time;
	sr.files = h->files;
	sr.dirs = h->dirs;
	sr.symlinks = h->symlinks;
	sr.bytes = h->bytes;
	for (attempt = 0; attempt < 5; attempt++, h->seq++) {
		sr.seq = h->seq;
		out.len = 0;
		if ((r = snapshot_record_encode(&sr, &out)) != 0 ||
		    (r = manifest_snapshot_key(s->name, h->seq, key, sizeof(key))) != 0)
			goto out;
		r = client_put_mem(c, buf_ptr(&out), out.len, key, 0, &res);
		if (r != STEP_EEXIST)
			break;
		/* Someone else recorded this seq meanwhile: take the next one. */
		log_info("snapshot key '%s' already exists; trying the next seq", key);
	}
	if (r != 0) {
		set_fatal(s, r, "cannot upload the snapshot record", client_error(c));
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
	buf_release(&out);
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

/* The sender of chunks and trees: --connections sessions, SYNC_AUTO_CONN when 1. */
static int
sender_start(struct sync_run *s)
{
	struct client_opts o;
	char errbuf[256];
	int r, nconn = s->a->connections > 1 ? s->a->connections : SYNC_AUTO_CONN;

	if ((r = agent_client_opts(s->a, &o, errbuf, sizeof(errbuf))) != 0) {
		set_fatal(s, r, "cannot connect", errbuf);
		return r;
	}
	if ((r = sender_new(&o, nconn, SYNC_SEND_BUDGET, &s->snd)) != 0)
		set_fatal(s, r, "cannot connect", step_strerror(r));
	return r;
}

/* After the scan: waits for the chunks and trees in flight, records them, and, when every
 * upload of the run succeeded, marks the chunk lists read this run as known. */
static int
sender_finish(struct sync_run *s)
{
	size_t i;
	int r;

	if (s->snd == NULL)
		return 0;
	sender_wait(s->snd);
	if ((r = db_begin(s->db)) != 0)
		return r;
	r = collect_sent(s);
	for (i = 0; r == 0 && s->fatal == 0 && s->upload_failed == 0 && i < s->nnewlists; i++)
		r = files_object_add(s->files, s->newlists[i], 0, "");
	if (r != 0) {
		db_rollback(s->db);
		return r;
	}
	if ((r = db_commit(s->db)) != 0)
		return r;
	return s->fatal != 0 ? s->fatal : 0;
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
	if (!s->dry_run && s->snd == NULL && (r = sender_start(s)) != 0)
		goto fail;
	if ((r = tree_builder_new(tree_emit, s, &s->tb)) != 0)
		goto fail;
	if ((r = files_count(s->files, s->name, &s->known)) != 0 ||
	    (r = files_next_gen(s->files, s->name, &s->gen)) != 0)
		goto fail;
	cursor_open(s);
	r = scan_tree(s->root, s->exclude, s->nexclude, sync_visit, s, &stats);
	if (r == 0)
		r = flush_deferred(s);
	if (r == 0)
		r = tree_builder_finish(s->tb, s->root_id);
	if (r == 0)
		r = collect_sent(s);
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
		if (s->a->json)
			agent_json(s->a,
			    json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "command",
			        "sync", "name", s->name, "dry_run", 1, "would_send_files",
			        (json_int_t)s->pending, "would_send_bytes",
			        (json_int_t)s->pending_bytes, "would_send_chunks",
			        (json_int_t)s->chunks_new, "would_send_chunk_bytes",
			        (json_int_t)s->chunk_bytes_new, "would_send_trees",
			        (json_int_t)s->trees_new, "gone", (json_int_t)gone));
		printf("dry run '%s': %" PRIu64 " files (%" PRIu64 " bytes) would be sent, "
		       "and %" PRIu64 " chunks of large files (%" PRIu64 " bytes) and %" PRIu64
		       " directory trees; %" PRIu64 " known files are gone; nothing was sent\n",
		    s->name, s->pending, s->pending_bytes, s->chunks_new, s->chunk_bytes_new,
		    s->trees_new, gone);
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

/* Replaces the objects cache with what the server lists (o.* keys); chunk lists are
 * forgotten too, so their files are read again and any missing chunk sent. */
static int
reconcile_by_list(struct sync_run *s, struct client *c)
{
	char **keys = NULL, **tkeys = NULL;
	sqlite3_stmt *ins = NULL;
	size_t n = 0, nt = 0, i;
	int r, rc;

	if ((r = client_list(c, "o.", &keys, &n)) != 0 ||
	    (r = client_list(c, "t.", &tkeys, &nt)) != 0) {
		set_fatal(s, r, "cannot list the objects on the server", client_error(c));
		client_keys_free(keys, n);
		return r;
	}
	keys = xrealloc(keys, (n + nt + 1) * sizeof(*keys));
	memcpy(keys + n, tkeys, nt * sizeof(*keys));
	n += nt;
	free(tkeys);
	if ((r = db_begin(s->db)) != 0)
		goto out;
	r = db_exec(s->db,
	    "CREATE TEMP TABLE IF NOT EXISTS srv_keys(k TEXT PRIMARY KEY);"
	    "DELETE FROM temp.srv_keys;");
	if (r == 0 &&
	    (rc = sqlite3_prepare_v2(db_handle(s->db),
	         "INSERT OR IGNORE INTO temp.srv_keys VALUES(?)", -1, &ins, NULL)) != SQLITE_OK)
		r = db_err(rc);
	for (i = 0; r == 0 && i < n; i++) {
		sqlite3_bind_text(ins, 1, keys[i], -1, SQLITE_STATIC);
		rc = sqlite3_step(ins);
		sqlite3_reset(ins);
		if (rc != SQLITE_DONE)
			r = db_err(rc);
	}
	if (r == 0)
		r = db_exec(s->db,
		    "DELETE FROM objects WHERE substr(okey, 1, 2) NOT IN ('o.', 't.') OR okey NOT "
		    "IN (SELECT k FROM temp.srv_keys);"
		    "INSERT OR IGNORE INTO objects(okey, size, md5, t) SELECT k, 0, '',"
		    " strftime('%s', 'now') FROM temp.srv_keys;"
		    "DELETE FROM temp.srv_keys;");
	if (r == 0 && s->has_gen)
		r = server_id_store_set(s->db, s->store_id, s->gen0);
	sqlite3_finalize(ins);
	ins = NULL;
	if (r == 0)
		r = db_commit(s->db);
	else
		db_rollback(s->db);
out:
	client_keys_free(keys, n);
	return r;
}

/*
 * The objects cache is a hint (a store can be replaced, another client can delete): it is
 * trusted only while the server says nothing was deleted since it was last confirmed
 * (stepd's objgen: same store id, same generation). Otherwise it is replaced by the
 * server's listing (LIST), or, on a server that can do neither, forgotten: every object
 * is then confirmed by its upload (SAVE answers 402 for what is there; its MD5 is
 * compared). 0 or an error (set_fatal'd).
 */
static int
verify_cache(struct sync_run *s, struct client *c)
{
	char old[65];
	int64_t oldgen;
	int r;

	if ((r = client_connect(c)) != 0) {
		set_fatal(s, r, "cannot log in", client_error(c));
		return r;
	}
	if (client_has_ext(c, "objgen") &&
	    client_store_gen(c, 0, s->store_id, sizeof(s->store_id), &s->gen0) == 0) {
		s->has_gen = 1;
		if ((r = server_id_store_get(s->db, old, sizeof(old), &oldgen)) != 0)
			return r;
		if (strcmp(old, s->store_id) == 0 && oldgen == s->gen0)
			return 0;
		log_info("objects may have been deleted on the server since the last run "
		         "(store %s, generation %lld, was %s %lld): checking",
		    s->store_id, (long long)s->gen0, old[0] ? old : "none", (long long)oldgen);
		return reconcile_by_list(s, c);
	}
	if (client_has_ext(c, "list"))
		return reconcile_by_list(s, c);
	log_info("the server cannot say what it holds cheaply: every object is confirmed by its "
	         "upload");
	return db_exec(s->db, "DELETE FROM objects");
}

/* Before a snapshot is recorded: nothing may have been deleted meanwhile. */
static int
check_generation(struct sync_run *s, struct client *c)
{
	char sid[65];
	int64_t gen;
	int r;

	if (!s->has_gen)
		return 0;
	if ((r = client_store_gen(c, 1, sid, sizeof(sid), &gen)) != 0) {
		set_fatal(s, r, "cannot log in", client_error(c));
		return r;
	}
	if (strcmp(sid, s->store_id) == 0 && gen == s->gen0)
		return 0;
	set_fatal(s, STEP_EBUSY, "no snapshot recorded",
	    "objects were deleted on the server while this run went on (a prune?); the next "
	    "run checks every object again");
	return STEP_EBUSY;
}

/* The run's summary: a line unless -q, one JSON result with --json. */
static void
sync_report(struct sync_run *s, const struct manifest_header *h, int unchanged)
{
	if (s->a->verbose >= 0) {
		uint64_t nsent = s->sent + s->chunked_files_new;
		char also[64] = "";

		if (s->existed > 0)
			snprintf(
			    also, sizeof(also), ", %" PRIu64 " already on the server", s->existed);
		printf("snapshot %s#%" PRIu64 "%s: %" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64
		       " %s, %" PRIu64 " bytes; sent %" PRIu64 " %s (%" PRIu64 " bytes)%s\n",
		    s->name, h->seq, unchanged ? " unchanged (no new snapshot recorded)" : "",
		    h->files, agent_plural(h->files, "file", "files"), h->dirs,
		    agent_plural(h->dirs, "dir", "dirs"), h->symlinks,
		    agent_plural(h->symlinks, "symlink", "symlinks"), h->bytes, nsent,
		    agent_plural(nsent, "file", "files"), s->sent_bytes, also);
	}
	if (s->a->json)
		agent_json(s->a,
		    json_pack("{s:s, s:s, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
		              "s:I, s:I, s:I}",
		        "command", "sync", "name", s->name, "seq", (json_int_t)h->seq, "unchanged",
		        unchanged, "files", (json_int_t)h->files, "dirs", (json_int_t)h->dirs,
		        "symlinks", (json_int_t)h->symlinks, "bytes", (json_int_t)h->bytes,
		        "sent_files", (json_int_t)(s->sent + s->chunked_files_new), "sent_bytes",
		        (json_int_t)s->sent_bytes, "read_errors", (json_int_t)s->read_errors,
		        "existed", (json_int_t)s->existed, "blocks_sent",
		        (json_int_t)s->blocks_sent, "chunks_sent", (json_int_t)s->chunks_sent,
		        "trees_sent", (json_int_t)s->trees_sent, "tree_bytes_sent",
		        (json_int_t)s->tree_bytes_sent));
}

/* A new run of tree root (strings borrowed) with its buffers. */
static struct sync_run *
sync_run_new(
    struct agent *a, const char *name, const char *root, char *const *exclude, size_t nexclude)
{
	struct sync_run *s = xcalloc(1, sizeof(*s));

	s->a = a;
	s->name = name;
	s->root = root;
	s->exclude = exclude;
	s->nexclude = nexclude;
	/* Chunks (up to CHUNK_MAX) are allocated and freed all the time: glibc would map and
	 * unmap each one (and fault its pages in again); keep them on the heap instead. */
	mallopt(M_MMAP_THRESHOLD, (int)CHUNK_MAX + 4096);
	mallopt(M_TRIM_THRESHOLD, (int)SYNC_SEND_BUDGET * 2);
	s->hbuf = xmalloc(SYNC_HASH_BUF);
	buf_init(&s->clist, (size_t)TREE_CHUNKS_MAX * FILES_CHUNK_REC);
	s->dq = xcalloc(SYNC_DQ_MAX, sizeof(*s->dq));
	return s;
}

/* Frees everything a run holds (waiting for uploads still in flight first). */
static void
sync_run_free(struct sync_run *s)
{
	uploader_free(s, s->up); /* waits for batches still in flight */
	sender_free(s->snd);
	tree_builder_free(s->tb);
	free(s->queued.slot);
	free(s->cbuf);
	buf_release(&s->clist);
	while (s->nnewlists > 0)
		free(s->newlists[--s->nnewlists]);
	free(s->newlists);
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
}

/* One tree, one snapshot. */
static int
sync_one(struct agent *a, const char *name, const char *root, char *const *exclude, size_t nexclude,
    int dry_run, int allow_mass_delete, int skip_unchanged)
{
	struct sync_run *s = sync_run_new(a, name, root, exclude, nexclude);
	struct manifest_header h;
	struct client *c = NULL;
	double t0;
	int r, unchanged, ex = AGENT_EXIT_FAIL;

	s->dry_run = dry_run;
	s->allow_mass_delete = allow_mass_delete;
	s->skip_unchanged = skip_unchanged;
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
	if (!dry_run && (r = verify_cache(s, c)) != 0) {
		ex = exit_for(s, r);
		goto done;
	}
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
	if ((r = sender_finish(s)) != 0) {
		ex = exit_for(s, r);
		goto done;
	}
	log_info("%" PRIu64 " large files chunked; sent %" PRIu64 " new chunks (%" PRIu64
	         " bytes) and %" PRIu64 " new trees (%" PRIu64 " bytes)",
	    s->chunked, s->chunks_new, s->chunk_bytes_new, s->trees_new, s->tree_bytes_new);
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
	if (!unchanged && (r = check_generation(s, c)) != 0) {
		ex = exit_for(s, r);
		goto done;
	}
	if (!unchanged && (r = record_snapshot(s, c, &h)) != 0) {
		ex = exit_for(s, r);
		goto done;
	}
	log_info("%s snapshot #%" PRIu64 " in %.3f s", unchanged ? "kept" : "recorded", h.seq,
	    util_now_s() - t0);
	sync_report(s, &h, unchanged);
	if (s->read_errors > 0 || s->busy_kept > 0) {
		agent_error("sync '%s': snapshot #%" PRIu64 " is incomplete: %" PRIu64 " %s not "
		            "read (left out), %" PRIu64 " busy %s kept at %s previous version "
		            "(listed above)",
		    name, h.seq, s->read_errors, s->read_errors == 1 ? "entry was" : "entries were",
		    s->busy_kept, s->busy_kept == 1 ? "file" : "files",
		    s->busy_kept == 1 ? "its" : "their");
		ex = SYNC_EXIT_INCOMPLETE;
		goto done;
	}
	ex = AGENT_EXIT_OK;
done:
	sync_run_free(s);
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

/* Every [dir] of the config file (only NAME's when name is not NULL), one snapshot each:
 * the first failure's exit status, going on after one tree's failure but not after the
 * server's. */
static int
sync_config_dirs(struct agent *a, const char *name, int dry, int mass, int skip)
{
	const struct config_dir *cd;
	size_t i;
	int r, ex = AGENT_EXIT_OK;

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
	return ex;
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
	ex = sync_config_dirs(a, name, dry, mass, skip);
out:
	lock_release(lockfd);
	return ex;
}
