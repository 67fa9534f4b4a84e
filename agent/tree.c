/*
 * tree.c — tree objects (snapshot format 2): the canonical encoder, a strict reader for
 * hostile bytes, and the builder that turns a scan into trees. No I/O: the builder hands
 * each finished tree to its caller.
 */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "tree.h"

static const uint8_t tree_magic[8] = { 's', 't', 'e', 'p', 't', 'r', 'e', 'e' };

#define VARINT_MAX 10 /* bytes of a 64-bit LEB128 */

/* --- names and entries ----------------------------------------------------------------- */

static int
name_safe(const char *name, size_t len)
{
	if (len == 0 || len > TREE_NAME_MAX)
		return 0;
	if (len == 1 && name[0] == '.')
		return 0;
	if (len == 2 && name[0] == '.' && name[1] == '.')
		return 0;
	return memchr(name, '/', len) == NULL && memchr(name, '\0', len) == NULL;
}

/* Bytewise order, a name before every longer name that starts with it. */
static int
name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/* The checks decoding makes on one entry, for the encoder; 0 or STEP_EINVAL. */
static int
entry_valid(const struct tree_entry *e)
{
	uint64_t sum = 0;

	if (!name_safe(e->name, e->namelen) || e->mode > 07777)
		return STEP_EINVAL;
	switch (e->type) {
	case TREE_FILE:
		if (e->nchunks > TREE_CHUNKS_MAX || (e->nchunks > 0 && e->chunks == NULL))
			return STEP_EINVAL;
		for (size_t i = 0; i < e->nchunks; i++) {
			if (e->chunks[i].size == 0 || e->chunks[i].size > UINT64_MAX - sum)
				return STEP_EINVAL;
			sum += e->chunks[i].size;
		}
		return sum == e->size ? STEP_OK : STEP_EINVAL;
	case TREE_DIR:
		return e->link == 0 ? STEP_OK : STEP_EINVAL;
	case TREE_SYMLINK:
		if (e->link != 0)
			return STEP_EINVAL;
		if (e->targetlen == 0 || e->targetlen > TREE_TARGET_MAX || e->target == NULL ||
		    memchr(e->target, '\0', e->targetlen) != NULL)
			return STEP_EINVAL;
		return STEP_OK;
	default:
		return STEP_EINVAL;
	}
}

/* --- encoding -------------------------------------------------------------------------- */

static size_t
put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static uint64_t
zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (v < 0 ? ~(uint64_t)0 : 0);
}

static int64_t
unzigzag(uint64_t u)
{
	return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

static int
append_varint(struct buf *out, uint64_t v)
{
	uint8_t tmp[VARINT_MAX];

	return buf_append(out, tmp, put_varint(tmp, v));
}

static int
encode_entry(const struct tree_entry *e, struct buf *out)
{
	uint8_t head[1 + 6 * VARINT_MAX];
	size_t n = 0;
	int r;

	/* A file with a link group is its own wire type, so that every other entry (and
	 * every tree without hard links) keeps the bytes, and the id, it always had. */
	head[n++] = (uint8_t)(e->type == TREE_FILE && e->link != 0 ? TREE_WIRE_LINKED : e->type);
	n += put_varint(head + n, e->namelen);
	if ((r = buf_append(out, head, n)) != 0 || (r = buf_append(out, e->name, e->namelen)) != 0)
		return r;
	n = put_varint(head, e->mode);
	n += put_varint(head + n, zigzag(e->mtime_ns));
	n += put_varint(head + n, e->uid);
	n += put_varint(head + n, e->gid);
	switch (e->type) {
	case TREE_FILE:
		n += put_varint(head + n, e->size);
		n += put_varint(head + n, e->nchunks);
		if ((r = buf_append(out, head, n)) != 0)
			return r;
		for (size_t i = 0; i < e->nchunks; i++) {
			uint8_t c[HASH_SHA256_LEN + VARINT_MAX];

			memcpy(c, e->chunks[i].id, HASH_SHA256_LEN);
			n = HASH_SHA256_LEN + put_varint(c + HASH_SHA256_LEN, e->chunks[i].size);
			if ((r = buf_append(out, c, n)) != 0)
				return r;
		}
		return e->link != 0 ? append_varint(out, e->link) : STEP_OK;
	case TREE_DIR:
		if ((r = buf_append(out, head, n)) != 0)
			return r;
		return buf_append(out, e->subtree, HASH_SHA256_LEN);
	default: /* TREE_SYMLINK */
		n += put_varint(head + n, e->targetlen);
		if ((r = buf_append(out, head, n)) != 0)
			return r;
		return buf_append(out, e->target, e->targetlen);
	}
}

static int
entry_cmp(const void *a, const void *b)
{
	const struct tree_entry *x = a, *y = b;

	return name_cmp(x->name, x->namelen, y->name, y->namelen);
}

int
tree_encode(struct tree_entry *e, size_t n, struct buf *out)
{
	size_t start = out->len;
	int r;

	if (n > TREE_ENTRIES_MAX)
		return STEP_EINVAL;
	for (size_t i = 0; i < n; i++)
		if ((r = entry_valid(&e[i])) != 0)
			return r;
	if (n > 1)
		qsort(e, n, sizeof(*e), entry_cmp);
	for (size_t i = 1; i < n; i++)
		if (entry_cmp(&e[i - 1], &e[i]) == 0)
			return STEP_EINVAL;
	if ((r = buf_append(out, tree_magic, sizeof(tree_magic))) != 0)
		goto out;
	if ((r = buf_append(out, &(uint8_t){ TREE_VERSION }, 1)) != 0)
		goto out;
	if ((r = append_varint(out, n)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if ((r = encode_entry(&e[i], out)) != 0)
			goto out;
		if (out->len - start > TREE_MAX_BYTES) {
			r = STEP_ETOOBIG;
			goto out;
		}
	}
	r = STEP_OK;
out:
	if (r != 0)
		out->len = start; /* a failed call leaves out as it was */
	return r;
}

/* --- decoding -------------------------------------------------------------------------- */

/* Minimal LEB128: 0 or STEP_EPROTO (truncated, overlong, over 64 bits). */
static int
get_varint(struct tree_reader *r, uint64_t *vp)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t b;

		if (r->p == r->end)
			return STEP_EPROTO;
		b = *r->p++;
		if (shift == 63 && b > 1)
			return STEP_EPROTO; /* more than 64 bits */
		v |= (uint64_t)(b & 0x7f) << shift;
		if ((b & 0x80) == 0) {
			if (b == 0 && shift > 0)
				return STEP_EPROTO; /* not minimal: a trailing zero group */
			*vp = v;
			return STEP_OK;
		}
	}
	return STEP_EPROTO;
}

static int
get_varint_max(struct tree_reader *r, uint64_t max, uint64_t *vp)
{
	int rc;

	if ((rc = get_varint(r, vp)) != 0)
		return rc;
	return *vp <= max ? STEP_OK : STEP_EPROTO;
}

static int
get_bytes(struct tree_reader *r, size_t n, const uint8_t **pp)
{
	if ((size_t)(r->end - r->p) < n)
		return STEP_EPROTO;
	*pp = r->p;
	r->p += n;
	return STEP_OK;
}

int
tree_reader_init(struct tree_reader *r, const uint8_t *data, size_t len)
{
	const uint8_t *p;
	uint64_t count;
	int rc;

	memset(r, 0, sizeof(*r));
	if (len > TREE_MAX_BYTES)
		return STEP_EPROTO;
	r->p = data;
	r->end = data + len;
	if ((rc = get_bytes(r, sizeof(tree_magic) + 1, &p)) != 0)
		return rc;
	if (memcmp(p, tree_magic, sizeof(tree_magic)) != 0 || p[8] != TREE_VERSION)
		return STEP_EPROTO;
	if ((rc = get_varint_max(r, TREE_ENTRIES_MAX, &count)) != 0)
		return rc;
	r->left = count;
	return STEP_OK;
}

static int
read_chunks(struct tree_reader *r, struct tree_entry *e)
{
	uint64_t n, sum = 0;
	const uint8_t *id;
	int rc;

	if ((rc = get_varint(r, &e->size)) != 0 || (rc = get_varint(r, &n)) != 0)
		return rc;
	if (n > TREE_CHUNKS_MAX)
		return STEP_EINVAL;
	/* Each chunk takes at least 33 bytes: a count the data cannot hold is truncation,
	 * found before anything is allocated for it. */
	if (n > (uint64_t)(r->end - r->p) / (HASH_SHA256_LEN + 1))
		return STEP_EPROTO;
	if (n > r->capchunks) {
		struct tree_chunk *nc = realloc(r->chunks, n * sizeof(*nc));

		if (nc == NULL)
			return STEP_ENOMEM;
		r->chunks = nc;
		r->capchunks = n;
	}
	for (uint64_t i = 0; i < n; i++) {
		struct tree_chunk *c = &r->chunks[i];

		if ((rc = get_bytes(r, HASH_SHA256_LEN, &id)) != 0 ||
		    (rc = get_varint(r, &c->size)) != 0)
			return rc;
		memcpy(c->id, id, HASH_SHA256_LEN);
		if (c->size == 0 || c->size > UINT64_MAX - sum)
			return STEP_EINVAL;
		sum += c->size;
	}
	if (sum != e->size)
		return STEP_EINVAL;
	e->chunks = n > 0 ? r->chunks : NULL;
	e->nchunks = n;
	return STEP_OK;
}

int
tree_reader_next(struct tree_reader *r, struct tree_entry *e)
{
	struct tree_entry t;
	const uint8_t *p;
	uint64_t v;
	int rc, wire;

	if (r->left == 0)
		return r->p == r->end ? 0 : STEP_EPROTO;
	memset(&t, 0, sizeof(t));
	if ((rc = get_bytes(r, 1, &p)) != 0)
		return rc;
	wire = *p;
	t.type = wire == TREE_WIRE_LINKED ? TREE_FILE : wire;
	if (t.type != TREE_FILE && t.type != TREE_DIR && t.type != TREE_SYMLINK)
		return STEP_EPROTO;
	if ((rc = get_varint(r, &v)) != 0)
		return rc;
	if (v == 0 || v > TREE_NAME_MAX)
		return STEP_EINVAL;
	if ((rc = get_bytes(r, v, &p)) != 0)
		return rc;
	t.name = (const char *)p;
	t.namelen = v;
	if (!name_safe(t.name, t.namelen))
		return STEP_EINVAL;
	if (r->prev != NULL && name_cmp(r->prev, r->prevlen, t.name, t.namelen) >= 0)
		return STEP_EINVAL;
	if ((rc = get_varint_max(r, 07777, &v)) != 0)
		return rc;
	t.mode = (unsigned)v;
	if ((rc = get_varint(r, &v)) != 0)
		return rc;
	t.mtime_ns = unzigzag(v);
	if ((rc = get_varint_max(r, UINT32_MAX, &v)) != 0)
		return rc;
	t.uid = (uint32_t)v;
	if ((rc = get_varint_max(r, UINT32_MAX, &v)) != 0)
		return rc;
	t.gid = (uint32_t)v;
	switch (t.type) {
	case TREE_FILE:
		if ((rc = read_chunks(r, &t)) != 0)
			return rc;
		/* linked: a link group id, never 0 (that would be the plain type's bytes) */
		if (wire == TREE_WIRE_LINKED && ((rc = get_varint(r, &t.link)) != 0 || t.link == 0))
			return rc != 0 ? rc : STEP_EPROTO;
		break;
	case TREE_DIR:
		if ((rc = get_bytes(r, HASH_SHA256_LEN, &p)) != 0)
			return rc;
		memcpy(t.subtree, p, HASH_SHA256_LEN);
		break;
	default:
		if ((rc = get_varint(r, &v)) != 0)
			return rc;
		if (v == 0 || v > TREE_TARGET_MAX)
			return STEP_EINVAL;
		if ((rc = get_bytes(r, v, &p)) != 0)
			return rc;
		if (memchr(p, '\0', v) != NULL)
			return STEP_EINVAL;
		t.target = (const char *)p;
		t.targetlen = v;
		break;
	}
	r->prev = t.name;
	r->prevlen = t.namelen;
	r->left--;
	*e = t;
	return 1;
}

void
tree_reader_release(struct tree_reader *r)
{
	free(r->chunks);
	r->chunks = NULL;
	r->capchunks = 0;
}

/* --- the builder ----------------------------------------------------------------------- */

/* One open directory: its own entry (for its parent) and the entries read so far. Names,
 * targets and chunk lists of the entries are owned copies. */
struct level {
	char *path; /* relative to the root, "" for the root; owned */
	size_t pathlen;
	struct tree_entry self; /* the directory's metadata; name points into path */
	struct tree_entry *e;
	size_t n, cap;
	char *last; /* the last name added with '/' after a directory, for the order check */
	size_t lastlen;
	struct tree_counts cnt; /* what the level holds so far, subtrees included */
};

struct tree_builder {
	tree_emit_fn *emit;
	void *arg;
	struct level *lv;
	size_t depth, cap; /* open levels; lv[0] is the root */
	struct buf out;
	uint64_t ntrees, nbytes;
	int done;
	tree_close_fn *on_close;
	void *on_close_arg;
	struct tree_counts root_cnt;
};

static void
counts_add(struct tree_counts *to, const struct tree_counts *c)
{
	to->files += c->files;
	to->dirs += c->dirs;
	to->symlinks += c->symlinks;
	to->bytes += c->bytes;
}

static void
entry_free_copy(struct tree_entry *e)
{
	free((char *)e->name);
	free((char *)e->target);
	free((struct tree_chunk *)e->chunks);
}

static void
level_release(struct level *l)
{
	for (size_t i = 0; i < l->n; i++)
		entry_free_copy(&l->e[i]);
	free(l->e);
	free(l->path);
	free(l->last);
	memset(l, 0, sizeof(*l));
}

int
tree_builder_new(tree_emit_fn *emit, void *arg, struct tree_builder **outp)
{
	struct tree_builder *b;

	if ((b = calloc(1, sizeof(*b))) == NULL)
		return STEP_ENOMEM;
	b->emit = emit;
	b->arg = arg;
	buf_init(&b->out, TREE_MAX_BYTES);
	if ((b->lv = calloc(8, sizeof(*b->lv))) == NULL || (b->lv[0].path = strdup("")) == NULL) {
		tree_builder_free(b);
		return STEP_ENOMEM;
	}
	b->cap = 8;
	b->depth = 1;
	*outp = b;
	return STEP_OK;
}

/* Adds a copy of e (named name/namelen) to level l. */
static int
level_add(struct level *l, const struct tree_entry *e, const char *name, size_t namelen)
{
	struct tree_entry c = *e;

	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 16;
		struct tree_entry *ne;

		if (ncap > TREE_ENTRIES_MAX)
			ncap = TREE_ENTRIES_MAX;
		if (l->n >= ncap)
			return STEP_EINVAL;
		if ((ne = realloc(l->e, ncap * sizeof(*ne))) == NULL)
			return STEP_ENOMEM;
		l->e = ne;
		l->cap = ncap;
	}
	c.name = NULL;
	c.target = NULL;
	c.chunks = NULL;
	if ((c.name = malloc(namelen ? namelen : 1)) == NULL)
		goto nomem;
	memcpy((char *)c.name, name, namelen);
	c.namelen = namelen;
	if (e->type == TREE_SYMLINK && e->targetlen > 0) {
		if ((c.target = malloc(e->targetlen)) == NULL)
			goto nomem;
		memcpy((char *)c.target, e->target, e->targetlen);
	}
	if (e->type == TREE_FILE && e->nchunks > 0) {
		if ((c.chunks = malloc(e->nchunks * sizeof(*e->chunks))) == NULL)
			goto nomem;
		memcpy((struct tree_chunk *)c.chunks, e->chunks, e->nchunks * sizeof(*e->chunks));
	} else if (e->type != TREE_FILE) {
		c.nchunks = 0;
	}
	l->e[l->n++] = c;
	return STEP_OK;
nomem:
	entry_free_copy(&c);
	return STEP_ENOMEM;
}

/* Encodes the top level, emits it, and adds it to its parent (none for the root). */
static int
level_close(struct tree_builder *b)
{
	struct level *l = &b->lv[b->depth - 1];
	uint8_t id[HASH_SHA256_LEN];
	int r;

	buf_reset(&b->out);
	if ((r = tree_encode(l->e, l->n, &b->out)) != 0)
		return r;
	hash_sha256(buf_ptr(&b->out), buf_avail(&b->out), id);
	if ((r = b->emit(b->arg, id, buf_ptr(&b->out), buf_avail(&b->out))) != 0)
		return r;
	b->ntrees++;
	b->nbytes += buf_avail(&b->out);
	memcpy(l->self.subtree, id, HASH_SHA256_LEN);
	if (b->on_close != NULL)
		b->on_close(b->on_close_arg, l->path, id, &l->cnt);
	if (b->depth == 1) {
		b->root_cnt = l->cnt;
		return STEP_OK;
	}
	counts_add(&b->lv[b->depth - 2].cnt, &l->cnt);
	if ((r = level_add(&b->lv[b->depth - 2], &l->self, l->self.name, l->self.namelen)) != 0)
		return r;
	level_release(l);
	b->depth--;
	return STEP_OK;
}

/* Opens a level for directory path (its entry e) below the top one. */
static int
level_open(struct tree_builder *b, const char *path, size_t pathlen, const struct tree_entry *e,
    size_t namelen)
{
	struct level *l;

	if (b->depth == b->cap) {
		struct level *nl = realloc(b->lv, 2 * b->cap * sizeof(*nl));

		if (nl == NULL)
			return STEP_ENOMEM;
		memset(nl + b->cap, 0, b->cap * sizeof(*nl));
		b->lv = nl;
		b->cap *= 2;
	}
	l = &b->lv[b->depth];
	memset(l, 0, sizeof(*l));
	if ((l->path = malloc(pathlen + 1)) == NULL)
		return STEP_ENOMEM;
	memcpy(l->path, path, pathlen);
	l->path[pathlen] = '\0';
	l->pathlen = pathlen;
	l->self = *e;
	l->self.type = TREE_DIR;
	l->self.name = l->path + pathlen - namelen;
	l->self.namelen = namelen;
	l->self.target = NULL;
	l->self.targetlen = 0;
	l->self.chunks = NULL;
	l->self.nchunks = 0;
	l->self.size = 0;
	b->depth++;
	return STEP_OK;
}

/* Scan order within a directory: names compared bytewise with a '/' after directory names
 * (scan.h). Records name as the level's last; 0 or STEP_EINVAL when not after the last. */
static int
level_order(struct level *l, const char *name, size_t namelen, int isdir)
{
	size_t keylen = namelen + (isdir != 0);
	char *key;

	if ((key = malloc(keylen)) == NULL)
		return STEP_ENOMEM;
	memcpy(key, name, namelen);
	if (isdir)
		key[namelen] = '/';
	if (l->last != NULL && name_cmp(l->last, l->lastlen, key, keylen) >= 0) {
		free(key);
		return STEP_EINVAL;
	}
	free(l->last);
	l->last = key;
	l->lastlen = keylen;
	return STEP_OK;
}

/* tree_builder_add(), or with sub (its counts) tree_builder_add_subtree(). */
static int
builder_add(struct tree_builder *b, const char *path, const struct tree_entry *e,
    const struct tree_counts *sub)
{
	size_t len, namelen, parentlen;
	const char *slash, *name;
	struct level *l;
	struct tree_entry t;
	int r;

	if (b->done || path == NULL)
		return STEP_EINVAL;
	len = strlen(path);
	slash = memrchr(path, '/', len);
	name = slash ? slash + 1 : path;
	namelen = len - (size_t)(name - path);
	parentlen = slash ? (size_t)(slash - path) : 0;
	if (!name_safe(name, namelen) || (slash != NULL && parentlen == 0))
		return STEP_EINVAL;
	t = *e;
	t.name = name;
	t.namelen = namelen;
	if (sub != NULL && t.type != TREE_DIR)
		return STEP_EINVAL;
	if (t.type == TREE_DIR)
		t.nchunks = 0, t.chunks = NULL, t.size = 0;
	if ((r = entry_valid(&t)) != 0)
		return r;
	/* Close the levels this entry is outside of; its parent must then be on top. */
	while (b->depth > 1) {
		l = &b->lv[b->depth - 1];
		if (l->pathlen == parentlen && memcmp(l->path, path, parentlen) == 0)
			break;
		if ((r = level_close(b)) != 0)
			return r;
	}
	l = &b->lv[b->depth - 1];
	if (l->pathlen != parentlen || memcmp(l->path, path, parentlen) != 0)
		return STEP_EINVAL; /* a parent never opened, or already closed */
	if ((r = level_order(l, name, namelen, t.type == TREE_DIR)) != 0)
		return r;
	if (t.type == TREE_DIR)
		l->cnt.dirs++;
	else if (t.type == TREE_SYMLINK)
		l->cnt.symlinks++;
	else
		l->cnt.files++, l->cnt.bytes += t.size;
	if (sub != NULL) {
		counts_add(&l->cnt, sub);
		return level_add(l, &t, name, namelen);
	}
	if (t.type == TREE_DIR)
		return level_open(b, path, len, &t, namelen);
	return level_add(l, &t, name, namelen);
}

int
tree_builder_add(struct tree_builder *b, const char *path, const struct tree_entry *e)
{
	return builder_add(b, path, e, NULL);
}

int
tree_builder_add_subtree(struct tree_builder *b, const char *path, const struct tree_entry *e,
    const struct tree_counts *c)
{
	return builder_add(b, path, e, c);
}

void
tree_builder_on_close(struct tree_builder *b, tree_close_fn *fn, void *arg)
{
	b->on_close = fn;
	b->on_close_arg = arg;
}

void
tree_builder_counts(const struct tree_builder *b, struct tree_counts *c)
{
	*c = b->root_cnt;
}

int
tree_builder_finish(struct tree_builder *b, uint8_t root[HASH_SHA256_LEN])
{
	int r;

	if (b->done)
		return STEP_EINVAL;
	while (b->depth > 1)
		if ((r = level_close(b)) != 0)
			return r;
	if ((r = level_close(b)) != 0) /* the root's */
		return r;
	b->done = 1;
	memcpy(root, b->lv[0].self.subtree, HASH_SHA256_LEN);
	return STEP_OK;
}

void
tree_builder_stats(const struct tree_builder *b, uint64_t *ntrees, uint64_t *nbytes)
{
	*ntrees = b->ntrees;
	*nbytes = b->nbytes;
}

void
tree_builder_free(struct tree_builder *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->depth && b->lv != NULL; i++)
		level_release(&b->lv[i]);
	free(b->lv);
	buf_release(&b->out);
	free(b);
}
