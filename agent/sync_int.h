/*
 * sync_int.h — what the sync engine's files share (not for the rest of the agent: the
 * engine's interface is sync.h).
 *
 *   sync.c         a run from start to end (sync_run), its errors and exit status
 *   sync_scan.c    the scan: visiting entries, the files table, trees, mass deletion
 *   sync_read.c    reading files: hashing small ones, chunking large ones
 *   sync_send.c    chunks and trees to the sender (sender.h)
 *   sync_upload.c  whole small files to client pools (client_pool.h), resumable
 *   sync_server.c  the server's side: the objects cache, snapshot records
 *   sync_inc.c     incremental runs: what to read, reused trees, entries gone
 *   sync_hold.c    a mass deletion held back (the watcher's choice instead of 65)
 */
#ifndef STEP_SYNC_INT_H
#define STEP_SYNC_INT_H

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sqlite3.h>
#include "chunker.h"
#include "hashpair.h"
#include "client.h"
#include "cmd.h"
#include "config.h"
#include "db.h"
#include "err.h"
#include "files.h"
#include "hash.h"
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
#include "sync.h"

#define STR_(x)          #x
#define STR(x)           STR_(x)
#define SYNC_BATCH       1024        /* objects handed to client_pool_put() at once */
#define SYNC_HASH_BUF    (256 << 10) /* read size while hashing */
#define SYNC_HASH_TRY    3           /* attempts on a file that changes while it is hashed */
#define SYNC_AUTO_CONN   4           /* connections for many uploads when --connections is 1 */
/* Connections of the chunk and tree sender when --connections is smaller. Each carries
 * one object at a time (SAVE, UPLOAD, the commit's answer), so this is how many commits
 * stepd can group and hash side by side: 4 gave it batches of 2, 8 of 5, 16 of 8, for
 * stepd's CPU per GiB of 1.8 s, 1.3 s and 1.2 s; on a loaded machine a 1 GiB first
 * backup took 0.75x the time with 16 as with 8 (three alternating runs). With 32, whose
 * batches fill md5_many's 16 lanes, stepd's CPU went from 1.40-1.48 s to 1.22-1.34 s and
 * the backup's time from 2.12-3.01 s to 2.05-2.31 s (four alternating runs, busy machine). */
#define SYNC_CHUNK_CONN  32
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
/* Chunks hashed together (hash_sha256_many and md5_many: 16 side by side, each lane taking
 * the next chunk when its own is done), on one thread or two (hashpair.h). Chunk sizes
 * vary (192 KiB to 4 MiB): with 16 per call each lane got one and waited for the longest,
 * and SHA-256 ran at 1.7 GB/s; with 64, 3.3 GB/s. */
#define SYNC_CHUNK_BATCH 64
/* How long a session rides through a server outage (503, 429: client_set_outage()) before
 * its requests fail: a file, chunk, tree or the snapshot record waits and continues. */
#define SYNC_OUTAGE_MS   120000

enum { SEND_CHUNK = 1, SEND_TREE = 2, SEND_FILE = 3 };

struct uploader;

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
enum { DQ_HASH, DQ_FILE, DQ_SAME, DQ_DIR, DQ_LINK, DQ_SUB };
struct deferred {
	int kind;
	struct files_row row; /* files: complete but DQ_HASH's okey and md5 */
	char *path;
	char *target; /* DQ_LINK */
	unsigned mode;
	int64_t mtime_ns;
	uint32_t uid, gid;
	uint64_t link;            /* files: links_group() */
	struct held *h;           /* DQ_HASH: its content */
	struct files_dirtree sub; /* DQ_SUB: a directory whose tree the last run built */
};

/* A set of 32-byte ids (chunks and trees queued this run), open addressing. */
struct idset {
	uint8_t (*slot)[HASH_SHA256_LEN];
	size_t cap, n;
};

struct sync_job {
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
	struct hash_ctx *sha; /* sync_hash_once's SHA-256, reused */
	struct held *hheld;   /* a small file's whole content, as the last sync_hash_once read it */
	unsigned nhashed_calls; /* sync_hash_once calls, for how often it looks for a stop */
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
	uint8_t *cbuf;       /* SYNC_CBUF bytes, for chunking */
	struct hashpair *hp; /* hashes chunks on two threads (NULL: on one) */
	char **newlists;     /* chunk lists to mark known once every upload is in */
	size_t nnewlists, capnewlists;
	struct buf clist; /* the chunk list being built */
	uint64_t chunked, chunks_new, chunk_bytes_new, trees_new, tree_bytes_new;
	uint64_t chunks_sent, trees_sent, tree_bytes_sent; /* sent (not found there already) */
	uint64_t chunked_files_new;                        /* chunked files with a chunk to send */
	uint64_t busy_kept; /* files that kept changing: their previous version is in */

	uint64_t known, found, hashed, read_errors, visited;
	uint64_t dirs_scanned; /* directories whose entries the scan read */
	uint64_t dirs_reused;  /* directories whose tree the last run's was */

	/* Incremental runs (sync_inc.c): only the directories the caller names, and their
	 * ancestors, are read; every other directory's tree is the last run's. */
	int inc;
	struct idset vset; /* directories to read (ids: SHA-256 of the path) */
	struct idset tset; /* subtrees to read whole */
	struct idset seen; /* every path the scan reported */
	char **readdirs;   /* the directories read (not below a subtree read whole) */
	size_t nreaddirs, capreaddirs;
	char **deep; /* the caller's subtrees */
	size_t ndeep;
	uint64_t vanished;         /* files gone from those */
	struct files_dirtree nsub; /* the subtree defer() takes for DQ_SUB */
	int tree_err;              /* sync_tree_closed()'s first error */
	char digest[33];           /* root_digest()'s */

	/* Holding back a mass deletion (sync_hold.c). */
	int hold_mass_delete; /* the caller's wish: hold instead of refusing */
	int holding;          /* this scan puts the files gone into the snapshot */
	uint64_t held;        /* files gone but kept in the snapshot */
	char *lastpath;       /* the last entry handed to the trees */
	int last_isdir;
	struct tree_counts counts; /* what the snapshot holds */
	int dry_listed;            /* a dry run listed what it would send */
	sync_progress_fn *progress;
	void *progress_arg;
	uint64_t pending, pending_bytes;
	uint64_t pending_small; /* pending files of at most SYNC_SCAN_SMALL bytes */
	uint64_t sent, sent_bytes, existed, upload_failed;
	uint64_t blocks_sent; /* UPLOAD requests, resumed uploads count only what they sent */
	int fatal;            /* a STEP_E* that ends the run (transport, auth), 0 if none */
	char fatal_msg[512];
};

/* sync.c */
void sync_progress_note(struct sync_job *s, int scanning);
void sync_set_fatal(struct sync_job *s, int r, const char *what, const char *detail);
int sync_is_transport(int r);
int sync_exit_for(struct sync_job *s, int r);

/* sync_inc.c */
int sync_inc_prepare(struct sync_job *s, const struct sync_changes *ch);
void sync_inc_release(struct sync_job *s);
void sync_inc_seen(struct sync_job *s, const char *path);
int sync_inc_reuse(struct sync_job *s, const char *path);
int sync_inc_vanish(struct sync_job *s);
void sync_tree_closed(
    void *arg, const char *path, const uint8_t id[HASH_SHA256_LEN], const struct tree_counts *c);

/* sync_hold.c */
#define SYNC_HOLD_AGAIN (-1000) /* scan_phase's *exitp: run again, holding */
int sync_hold_catch_up(struct sync_job *s, const char *upto, int isdir);
void sync_hold_note(struct agent *a, const char *name, const char *root, uint64_t held);

/* sync_scan.c */
int sync_defer(struct sync_job *s, int kind, const struct scan_entry *se, struct files_row *row);
int sync_scan_phase(struct sync_job *s, int *exitp);

/* sync_read.c */
int sync_hash_once(struct sync_job *s, int dirfd, const char *name, const struct stat *st0, int try,
    uint8_t sha[HASH_SHA256_LEN], char md5[HASH_MD5_HEX], struct stat *stp);
int sync_chunk_file(struct sync_job *s, int dirfd, const char *name, const struct stat *st0,
    int try, struct files_row *row, struct stat *stp);

/* sync_send.c */
int sync_idset_has(const struct idset *set, const uint8_t id[HASH_SHA256_LEN]);
void sync_idset_add(struct idset *set, const uint8_t id[HASH_SHA256_LEN]);
int sync_queued_key(struct sync_job *s, const char *okey);
int sync_collect_sent(struct sync_job *s);
int sync_send_object(struct sync_job *s, const uint8_t id[HASH_SHA256_LEN], const uint8_t *data,
    size_t len, const char *md5, int tag, int *newp);
/* Whether sync_send_object would send id now: 1 (key set to its key), 0, or an error. */
int sync_send_wanted(
    struct sync_job *s, const uint8_t id[HASH_SHA256_LEN], int tag, char key[MANIFEST_KEY_MAX + 1]);
int sync_tree_emit(void *arg, const uint8_t id[HASH_SHA256_LEN], const uint8_t *data, size_t len);
int sync_sender_start(struct sync_job *s);
int sync_sender_finish(struct sync_job *s);

/* sync_upload.c */
uint32_t sync_pend_fp(const char *okey);
int sync_pend_has(struct sync_job *s, const char *okey, uint32_t fp);
int sync_queue_object(struct sync_job *s, const char *path, uint64_t size, const char *okey,
    const char *md5, struct held *h);
void sync_held_free(struct sync_job *s, struct held **list);
int sync_uploader_new(struct sync_job *s);
void sync_uploader_free(struct sync_job *s, struct uploader *u);
int sync_uploader_scan_step(struct sync_job *s, struct client *c, int last);
int sync_upload_pending(struct sync_job *s, struct client *c);

/* sync_server.c */
int sync_bind_server(const struct agent *a, struct db *db);
int sync_verify_cache(struct sync_job *s, struct client *c);
int sync_check_generation(struct sync_job *s, struct client *c, struct manifest_header *h);
int sync_snapshot_unchanged(struct sync_job *s, struct client *c, struct manifest_header *h);
int sync_record_snapshot(struct sync_job *s, struct client *c, struct manifest_header *h);

#endif
