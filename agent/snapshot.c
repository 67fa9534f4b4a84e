/*
 * snapshot.c — locating a NAME's snapshots on any STEP server: LIST when the server has
 * it, otherwise probing DATA records (O(log n) round trips for the latest) and manifests
 * (one round trip each, for the whole list).
 * Never deletes anything.
 */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client.h"
#include "cmd.h"
#include "config.h"
#include "err.h"
#include "manifest.h"
#include "snapshot.h"
#include "util.h"

int
snapshot_exit_code(int err)
{
	switch (err) {
	case STEP_ECONNECT:
	case STEP_ETIMEDOUT:
	case STEP_ECLOSED:
	case STEP_EBUSY:
	case STEP_ESTOPPED:
		return SYNC_EXIT_TEMPFAIL;
	case STEP_EAUTH:
		return SYNC_EXIT_NOPERM;
	case STEP_ETLS:
		return SYNC_EXIT_TLS;
	}
	return AGENT_EXIT_FAIL;
}

static int
info_key(const char *name, uint64_t seq, char *out, size_t outlen)
{
	int r = manifest_snapshot_key(name, seq, out, outlen);

	if (r == 0)
		out[0] = 'i';
	return r;
}

/* 1 when DATA i.NAME.seq exists, 0 when not, or an error. */
static int
info_exists(struct client *c, const char *name, uint64_t seq)
{
	char key[MANIFEST_KEY_MAX + 1];
	json_t *rec = NULL;
	int r;

	if ((r = info_key(name, seq, key, sizeof(key))) != 0)
		return r;
	r = client_data_get(c, key, &rec);
	json_decref(rec);
	if (r == 0)
		return 1;
	return r == STEP_ENOENT ? 0 : r;
}

int
snapshot_exists(struct client *c, const char *name, uint64_t seq)
{
	char key[MANIFEST_KEY_MAX + 1];
	struct client_file_info info;
	int r;

	if ((r = manifest_snapshot_key(name, seq, key, sizeof(key))) != 0)
		return r;
	r = client_file_info(c, key, &info);
	if (r == 0)
		return 1;
	return r == STEP_ENOENT ? 0 : r;
}

/* With LIST: the seqs of name's manifests; min and max. */
static int
range_by_list(struct client *c, const char *name, uint64_t *lowp, uint64_t *highp)
{
	char prefix[MANIFEST_KEY_MAX + 1];
	char **keys = NULL;
	size_t n = 0, i;
	uint64_t seq, lo = 0, hi = 0;
	int r;

	if ((r = manifest_snapshot_prefix(name, prefix, sizeof(prefix))) != 0)
		return r;
	if ((r = client_list(c, prefix, &keys, &n)) != 0)
		return r;
	for (i = 0; i < n; i++) {
		if (manifest_snapshot_seq(keys[i], prefix, &seq) != 0)
			continue;
		if (lo == 0 || seq < lo)
			lo = seq;
		if (seq > hi)
			hi = seq;
	}
	client_keys_free(keys, n);
	*lowp = lo;
	*highp = hi;
	return 0;
}

/* Without LIST: the last of the gap-free DATA series 1..N. */
static int
latest_by_probe(struct client *c, const char *name, uint64_t hint, uint64_t *seqp)
{
	uint64_t lo, hi, step, mid;
	int r;

	lo = 0; /* highest seq known present (0: none yet) */
	if (hint > 0 && (r = info_exists(c, name, hint)) != 0) {
		if (r < 0)
			return r;
		lo = hint;
	}
	if (lo == 0) {
		if ((r = info_exists(c, name, 1)) <= 0) {
			*seqp = 0;
			return r;
		}
		lo = 1;
	}
	/* Exponential: find a missing seq above lo. */
	for (step = 1;; step *= 2) {
		if (lo + step > MANIFEST_SEQ_MAX) {
			hi = MANIFEST_SEQ_MAX + 1;
			break;
		}
		if ((r = info_exists(c, name, lo + step)) < 0)
			return r;
		if (r == 0) {
			hi = lo + step;
			break;
		}
		lo += step;
	}
	/* Binary: lo present, hi missing. */
	while (hi - lo > 1) {
		mid = lo + (hi - lo) / 2;
		if ((r = info_exists(c, name, mid)) < 0)
			return r;
		if (r)
			lo = mid;
		else
			hi = mid;
	}
	*seqp = lo;
	return 0;
}

int
snapshot_latest(struct client *c, const char *name, uint64_t hint, uint64_t *seqp)
{
	uint64_t lo = 0, hi = 0, m;
	int r;

	if (client_has_ext(c, "list")) {
		if ((r = range_by_list(c, name, &lo, &hi)) != 0)
			return r;
		*seqp = hi;
		return 0;
	}
	if ((r = latest_by_probe(c, name, hint, &hi)) != 0)
		return r;
	/* A manifest whose DATA record was never written (a run died in between) sits right
	 * above the series; step over such strays so a new seq is really new. */
	while (hi < MANIFEST_SEQ_MAX && (r = snapshot_exists(c, name, hi + 1)) == 1)
		hi++;
	if (r < 0)
		return r;
	m = hi;
	*seqp = m;
	return 0;
}

static int
cmp_seq(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Appends seq to *v (n elements, *cap allocated). */
static void
push_seq(uint64_t **v, size_t *n, size_t *cap, uint64_t seq)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		*v = xrealloc(*v, *cap * sizeof(**v));
	}
	(*v)[(*n)++] = seq;
}

int
snapshot_list(struct client *c, const char *name, uint64_t **seqsp, size_t *np)
{
	char prefix[MANIFEST_KEY_MAX + 1];
	char **keys = NULL;
	uint64_t *v = NULL, seq, high = 0;
	size_t n = 0, cap = 0, nk = 0, i;
	int r;

	*seqsp = NULL;
	*np = 0;
	if (client_has_ext(c, "list")) {
		if ((r = manifest_snapshot_prefix(name, prefix, sizeof(prefix))) != 0 ||
		    (r = client_list(c, prefix, &keys, &nk)) != 0)
			return r;
		for (i = 0; i < nk; i++)
			if (manifest_snapshot_seq(keys[i], prefix, &seq) == 0)
				push_seq(&v, &n, &cap, seq);
		client_keys_free(keys, nk);
		if (n > 1)
			qsort(v, n, sizeof(*v), cmp_seq);
	} else {
		/* Retention prunes from anywhere, so the manifests of 1..latest are probed one
		 * by one: n round trips, for servers that cannot list. */
		if ((r = snapshot_latest(c, name, 0, &high)) != 0)
			return r;
		for (seq = 1; seq <= high; seq++) {
			if ((r = snapshot_exists(c, name, seq)) < 0) {
				free(v);
				return r;
			}
			if (r == 1)
				push_seq(&v, &n, &cap, seq);
		}
	}
	*seqsp = v;
	*np = n;
	return 0;
}

int
snapshot_info_save(struct client *c, const char *name, const struct snapshots_rec *rec)
{
	char key[MANIFEST_KEY_MAX + 1];
	json_t *o;
	int r;

	if ((r = info_key(name, rec->seq, key, sizeof(key))) != 0)
		return r;
	o = json_pack("{s:I, s:I, s:I, s:I, s:I}", "time", (json_int_t)rec->time, "files",
	    (json_int_t)rec->files, "dirs", (json_int_t)rec->dirs, "symlinks",
	    (json_int_t)rec->symlinks, "bytes", (json_int_t)rec->bytes);
	if (o == NULL)
		return STEP_ENOMEM;
	r = client_data_save(c, key, o);
	json_decref(o);
	return r;
}

int
snapshot_info_delete(struct client *c, const char *name, uint64_t seq)
{
	char key[MANIFEST_KEY_MAX + 1];
	int r;

	if ((r = info_key(name, seq, key, sizeof(key))) != 0)
		return r;
	r = client_data_delete(c, key);
	return r == STEP_ENOENT ? 0 : r;
}

static uint64_t
get_u64(const json_t *o, const char *field)
{
	json_t *v = json_object_get(o, field);

	return v != NULL && json_is_integer(v) && json_integer_value(v) >= 0
	    ? (uint64_t)json_integer_value(v)
	    : 0;
}

int
snapshot_info_get(struct client *c, const char *name, uint64_t seq, struct snapshots_rec *rec)
{
	char key[MANIFEST_KEY_MAX + 1];
	json_t *o = NULL;
	int r;

	if ((r = info_key(name, seq, key, sizeof(key))) != 0)
		return r;
	if ((r = client_data_get(c, key, &o)) != 0)
		return r;
	memset(rec, 0, sizeof(*rec));
	rec->seq = seq;
	rec->time = (int64_t)get_u64(o, "time");
	rec->files = get_u64(o, "files");
	rec->dirs = get_u64(o, "dirs");
	rec->symlinks = get_u64(o, "symlinks");
	rec->bytes = get_u64(o, "bytes");
	json_decref(o);
	return 0;
}

/* NAME when --name is absent: the config's only [dir]. */
const char *
snapshot_default_name(struct agent *a)
{
	if (a->cfg != NULL && a->cfg->ndirs == 1)
		return a->cfg->dirs[0].name;
	agent_error("which snapshot name? give --name NAME");
	return NULL;
}

/* Parses "SEQ" or "NAME#SEQ". */
int
snapshot_parse_id(const char *id, uint64_t *seqp)
{
	const char *h = strrchr(id, '#');
	long long v;

	if (util_parse_ll(h ? h + 1 : id, 1, (long long)MANIFEST_SEQ_MAX, &v) != 0)
		return STEP_EINVAL;
	*seqp = (uint64_t)v;
	return 0;
}

/* Downloads manifest seq of name into an unlinked temporary file, opened for reading. */
int
snapshot_fetch_key(struct client *c, const char *key, FILE **outp)
{
	const char *tdir = getenv("TMPDIR");
	char tmp[4200];
	struct client_result res;
	FILE *f;
	int fd, r;

	snprintf(tmp, sizeof(tmp), "%s/stepsync-manifest.XXXXXX",
	    tdir != NULL && *tdir == '/' ? tdir : "/tmp");
	if ((fd = mkstemp(tmp)) < 0)
		return STEP_ESYS;
	close(fd);
	r = client_get_file(c, key, tmp, 0600, &res);
	if (r != 0) {
		unlink(tmp);
		return r;
	}
	f = fopen(tmp, "r");
	unlink(tmp);
	if (f == NULL)
		return STEP_ESYS;
	*outp = f;
	return 0;
}

int
snapshot_fetch_manifest(struct client *c, const char *name, uint64_t seq, FILE **outp)
{
	char key[MANIFEST_KEY_MAX + 1];
	int r;

	if ((r = manifest_snapshot_key(name, seq, key, sizeof(key))) != 0)
		return r;
	return snapshot_fetch_key(c, key, outp);
}

int
snapshot_record_encode(const struct snapshot_record *rec, struct buf *out)
{
	char root[MANIFEST_KEY_MAX + 1];
	json_t *o;
	char *d;
	int r = STEP_ENOMEM;

	if (manifest_tree_key(rec->root, root, sizeof(root)) != 0)
		return STEP_EINVAL;
	o = json_pack("{s:i, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:I}", "stepsync_snapshot",
	    SNAPSHOT_FORMAT, "name", rec->name, "seq", (json_int_t)rec->seq, "time",
	    (json_int_t)rec->time, "root", root, "files", (json_int_t)rec->files, "dirs",
	    (json_int_t)rec->dirs, "symlinks", (json_int_t)rec->symlinks, "bytes",
	    (json_int_t)rec->bytes);
	if (o == NULL)
		return STEP_ENOMEM;
	d = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
	if (d != NULL && buf_append(out, d, strlen(d)) == 0 && buf_append(out, "\n", 1) == 0)
		r = 0;
	free(d);
	json_decref(o);
	return r;
}

int
snapshot_record_decode(const char *data, size_t len, struct snapshot_record *rec)
{
	json_t *o, *v;
	const char *name, *root;
	int r = STEP_EINVAL;

	o = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DISABLE_EOF_CHECK, NULL);
	if (o == NULL || !json_is_object(o))
		goto out;
	v = json_object_get(o, "stepsync_snapshot");
	if (v == NULL) {
		r = STEP_EPROTO;
		goto out;
	}
	memset(rec, 0, sizeof(*rec));
	if (!json_is_integer(v) || json_integer_value(v) != SNAPSHOT_FORMAT)
		goto out;
	name = json_string_value(json_object_get(o, "name"));
	root = json_string_value(json_object_get(o, "root"));
	if (name == NULL || strlen(name) >= sizeof(rec->name) || root == NULL ||
	    !manifest_is_tree_key(root) ||
	    util_hex_decode(root + 2, rec->root, sizeof(rec->root)) != 0)
		goto out;
	snprintf(rec->name, sizeof(rec->name), "%s", name);
	rec->seq = get_u64(o, "seq");
	rec->time = (int64_t)get_u64(o, "time");
	rec->files = get_u64(o, "files");
	rec->dirs = get_u64(o, "dirs");
	rec->symlinks = get_u64(o, "symlinks");
	rec->bytes = get_u64(o, "bytes");
	r = rec->seq >= 1 && rec->seq <= MANIFEST_SEQ_MAX ? 0 : STEP_EINVAL;
out:
	json_decref(o);
	return r;
}

int
snapshot_fetch_any(
    struct client *c, const char *key, int *fmtp, FILE **fp, struct snapshot_record *rec)
{
	char line[1024];
	size_t n;
	FILE *f = NULL;
	int r;

	*fp = NULL;
	if ((r = snapshot_fetch_key(c, key, &f)) != 0)
		return r;
	n = fread(line, 1, sizeof(line) - 1, f);
	line[n] = '\0';
	if (strncmp(line, "{\"stepsync_snapshot\"", 20) == 0) {
		fclose(f);
		if (snapshot_record_decode(line, n, rec) != 0)
			return STEP_EPROTO;
		*fmtp = 2;
		return 0;
	}
	if (fseek(f, 0, SEEK_SET) != 0) {
		fclose(f);
		return STEP_ESYS;
	}
	*fmtp = 1;
	*fp = f;
	return 0;
}

int
snapshot_fetch(struct client *c, const char *name, uint64_t seq, int *fmtp, FILE **fp,
    struct snapshot_record *rec)
{
	char key[MANIFEST_KEY_MAX + 1];
	int r;

	if ((r = manifest_snapshot_key(name, seq, key, sizeof(key))) != 0)
		return r;
	if ((r = snapshot_fetch_any(c, key, fmtp, fp, rec)) != 0)
		return r;
	if (*fmtp == 2 && (rec->seq != seq || strcmp(rec->name, name) != 0))
		return STEP_EPROTO;
	return 0;
}
