/*
 * manifest.c — snapshot manifests as JSON lines: encode, validate, stream; server key names.
 * Never trusts a manifest it reads: every path is checked before anyone acts on it.
 * No network I/O, no printing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "err.h"
#include "manifest.h"
#include "util.h"

static const char *const type_names[] = { NULL, "file", "dir", "symlink" };

int
manifest_path_safe(const char *path)
{
	const char *p = path, *slash;
	size_t n;

	if (path == NULL || *path == '\0' || *path == '/')
		return 0;
	if (strlen(path) > MANIFEST_PATH_MAX)
		return 0;
	for (;;) {
		slash = strchr(p, '/');
		n = slash != NULL ? (size_t)(slash - p) : strlen(p);
		if (n == 0)
			return 0; /* "a//b" or a trailing slash */
		if (n == 1 && p[0] == '.')
			return 0;
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return 0;
		if (slash == NULL)
			return 1;
		p = slash + 1;
	}
}

static int
is_hex_lower(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[n] == '\0';
}

int
manifest_is_object_key(const char *key)
{
	return strncmp(key, "o.", 2) == 0 && strlen(key) == 2 + 2 * HASH_SHA256_LEN &&
	    is_hex_lower(key + 2, 2 * HASH_SHA256_LEN);
}

/* Sets field (or field_b64 when s is not valid UTF-8) in obj. */
static int
set_bytes(json_t *obj, const char *field, const char *s)
{
	char name[32];
	size_t n = strlen(s);
	char *b64 = NULL;
	json_t *v;
	int r;

	if ((v = json_string(s)) != NULL)
		return json_object_set_new(obj, field, v) == 0 ? 0 : STEP_ENOMEM;
	/* Not UTF-8: the bytes go base64-encoded. */
	if ((b64 = malloc(4 * ((n + 2) / 3) + 1)) == NULL)
		return STEP_ENOMEM;
	util_b64_encode(s, n, b64);
	snprintf(name, sizeof(name), "%s_b64", field);
	r = json_object_set_new(obj, name, json_string(b64)) == 0 ? 0 : STEP_ENOMEM;
	free(b64);
	return r;
}

/* Reads field or field_b64 into out (NUL-terminated, no NUL inside); 0, STEP_EINVAL. */
static int
get_bytes(const json_t *obj, const char *field, char *out, size_t outlen)
{
	char name[32];
	const char *s;
	size_t n, dn = 0;
	json_t *v;
	uint8_t *tmp = NULL;

	if ((v = json_object_get(obj, field)) != NULL) {
		if (!json_is_string(v))
			return STEP_EINVAL;
		s = json_string_value(v);
		n = json_string_length(v);
		if (n >= outlen || memchr(s, '\0', n) != NULL)
			return STEP_EINVAL;
		memcpy(out, s, n + 1);
		return 0;
	}
	snprintf(name, sizeof(name), "%s_b64", field);
	if ((v = json_object_get(obj, name)) == NULL || !json_is_string(v))
		return STEP_EINVAL;
	s = json_string_value(v);
	n = json_string_length(v);
	if (n > 4 * (outlen / 3) + 4)
		return STEP_EINVAL;
	if ((tmp = malloc(3 * (n / 4) + 3)) == NULL)
		return STEP_ENOMEM;
	if (util_b64_decode(s, n, tmp, &dn) != 0 || dn >= outlen || memchr(tmp, '\0', dn) != NULL) {
		free(tmp);
		return STEP_EINVAL;
	}
	memcpy(out, tmp, dn);
	out[dn] = '\0';
	free(tmp);
	return 0;
}

static int
dump_line(json_t *obj, struct buf *out)
{
	char *s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
	int r;

	if (s == NULL)
		return STEP_ENOMEM;
	if (strlen(s) + 1 > MANIFEST_MAX_LINE) {
		free(s);
		return STEP_ETOOBIG;
	}
	r = buf_append(out, s, strlen(s));
	if (r == 0)
		r = buf_append(out, "\n", 1);
	free(s);
	return r;
}

/* 1 when s goes into JSON as it is: printable ASCII without quote or backslash. */
static int
json_plain(const char *s)
{
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
			return 0;
	return 1;
}

/* The common case (plain names) without building a JSON object: the same bytes
 * dump_line() would write. 1 when done, 0 when jansson must do it, or an error. */
static int
encode_plain(const struct manifest_entry *e, struct buf *out)
{
	char line[MANIFEST_MAX_LINE];
	int n;

	if (!json_plain(e->path) || (e->type == MANIFEST_SYMLINK && !json_plain(e->target)) ||
	    (e->type == MANIFEST_FILE && (!json_plain(e->key) || !json_plain(e->md5))))
		return 0;
	n = snprintf(line, sizeof(line),
	    "{\"path\":\"%s\",\"type\":\"%s\",\"mode\":%u,\"mtime_ns\":%lld", e->path,
	    type_names[e->type], (unsigned)(e->mode & 07777), (long long)e->mtime_ns);
	if (n > 0 && (size_t)n < sizeof(line) && e->type == MANIFEST_FILE)
		n += snprintf(line + n, sizeof(line) - (size_t)n,
		    ",\"size\":%llu%s%s%s,\"md5\":\"%s\"}\n", (unsigned long long)e->size,
		    e->key[0] ? ",\"key\":\"" : "", e->key, e->key[0] ? "\"" : "", e->md5);
	else if (n > 0 && (size_t)n < sizeof(line) && e->type == MANIFEST_SYMLINK)
		n += snprintf(
		    line + n, sizeof(line) - (size_t)n, ",\"target\":\"%s\"}\n", e->target);
	else if (n > 0 && (size_t)n < sizeof(line))
		n += snprintf(line + n, sizeof(line) - (size_t)n, "}\n");
	if (n < 0 || (size_t)n >= sizeof(line))
		return 0; /* too long here: jansson says so properly */
	return buf_append(out, line, (size_t)n) == 0 ? 1 : STEP_ENOMEM;
}

int
manifest_entry_encode(const struct manifest_entry *e, struct buf *out)
{
	json_t *o = NULL;
	int r = STEP_ENOMEM;

	if (e->type < MANIFEST_FILE || e->type > MANIFEST_SYMLINK || !manifest_path_safe(e->path))
		return STEP_EINVAL;
	if ((r = encode_plain(e, out)) != 0)
		return r < 0 ? r : 0;
	r = STEP_ENOMEM;
	if ((o = json_object()) == NULL)
		return STEP_ENOMEM;
	if ((r = set_bytes(o, "path", e->path)) != 0)
		goto out;
	r = STEP_ENOMEM;
	if (json_object_set_new(o, "type", json_string(type_names[e->type])) != 0)
		goto out;
	if (json_object_set_new(o, "mode", json_integer(e->mode & 07777)) != 0)
		goto out;
	if (json_object_set_new(o, "mtime_ns", json_integer(e->mtime_ns)) != 0)
		goto out;
	if (e->type == MANIFEST_FILE) {
		if (json_object_set_new(o, "size", json_integer((json_int_t)e->size)) != 0)
			goto out;
		if (e->key[0] != '\0' && json_object_set_new(o, "key", json_string(e->key)) != 0)
			goto out;
		if (json_object_set_new(o, "md5", json_string(e->md5)) != 0)
			goto out;
	} else if (e->type == MANIFEST_SYMLINK) {
		if ((r = set_bytes(o, "target", e->target)) != 0)
			goto out;
	}
	r = dump_line(o, out);
out:
	json_decref(o);
	return r;
}

static int
get_i64(const json_t *o, const char *field, int64_t min, int64_t max, int64_t *out)
{
	json_t *v = json_object_get(o, field);
	json_int_t x;

	if (v == NULL || !json_is_integer(v))
		return STEP_EINVAL;
	x = json_integer_value(v);
	if (x < min || x > max)
		return STEP_EINVAL;
	*out = x;
	return 0;
}

static int
load_obj(const char *line, size_t len, json_t **outp)
{
	json_t *o;

	if (len > MANIFEST_MAX_LINE)
		return STEP_ETOOBIG;
	o = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	if (o == NULL)
		return STEP_EPROTO;
	if (!json_is_object(o)) {
		json_decref(o);
		return STEP_EPROTO;
	}
	*outp = o;
	return 0;
}

int
manifest_entry_decode(const char *line, size_t len, struct manifest_entry *e)
{
	json_t *o = NULL, *v;
	const char *s;
	int64_t x;
	int r;

	if ((r = load_obj(line, len, &o)) != 0)
		return r;
	e->type = 0;
	e->mode = 0;
	e->mtime_ns = 0;
	e->size = 0;
	e->path[0] = e->target[0] = e->key[0] = e->md5[0] = '\0';
	r = STEP_EINVAL;
	v = json_object_get(o, "type");
	if (v == NULL || !json_is_string(v))
		goto out;
	s = json_string_value(v);
	if (strcmp(s, "file") == 0)
		e->type = MANIFEST_FILE;
	else if (strcmp(s, "dir") == 0)
		e->type = MANIFEST_DIR;
	else if (strcmp(s, "symlink") == 0)
		e->type = MANIFEST_SYMLINK;
	else
		goto out;
	if (get_bytes(o, "path", e->path, sizeof(e->path)) != 0 || !manifest_path_safe(e->path))
		goto out;
	if (get_i64(o, "mode", 0, 07777, &x) != 0)
		goto out;
	e->mode = (unsigned)x;
	if (get_i64(o, "mtime_ns", INT64_MIN, INT64_MAX, &e->mtime_ns) != 0)
		goto out;
	if (e->type == MANIFEST_FILE) {
		if (get_i64(o, "size", 0, INT64_MAX, &x) != 0)
			goto out;
		e->size = (uint64_t)x;
		v = json_object_get(o, "md5");
		if (v == NULL || !json_is_string(v) || json_string_length(v) != 32 ||
		    !is_hex_lower(json_string_value(v), 32))
			goto out;
		memcpy(e->md5, json_string_value(v), HASH_MD5_HEX);
		v = json_object_get(o, "key");
		if (v != NULL) {
			if (!json_is_string(v) || !manifest_is_object_key(json_string_value(v)))
				goto out;
			memcpy(e->key, json_string_value(v), json_string_length(v) + 1);
		} else if (e->size != 0) {
			goto out; /* content without a key */
		}
	} else if (e->type == MANIFEST_SYMLINK) {
		if (get_bytes(o, "target", e->target, sizeof(e->target)) != 0 ||
		    e->target[0] == '\0')
			goto out;
	}
	r = 0;
out:
	json_decref(o);
	return r;
}

int
manifest_header_encode(const struct manifest_header *h, struct buf *out)
{
	json_t *o;
	int r;

	if (h->name[0] == '\0' || h->seq < 1 || h->seq > MANIFEST_SEQ_MAX)
		return STEP_EINVAL;
	o = json_pack("{s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "stepsync_manifest",
	    MANIFEST_VERSION, "name", h->name, "seq", (json_int_t)h->seq, "time",
	    (json_int_t)h->time, "files", (json_int_t)h->files, "dirs", (json_int_t)h->dirs,
	    "symlinks", (json_int_t)h->symlinks, "bytes", (json_int_t)h->bytes);
	if (o == NULL)
		return STEP_EINVAL; /* a NAME that is not UTF-8 */
	r = dump_line(o, out);
	json_decref(o);
	return r;
}

int
manifest_header_decode(const char *line, size_t len, struct manifest_header *h)
{
	json_t *o = NULL, *v;
	int64_t x;
	int r;

	if ((r = load_obj(line, len, &o)) != 0)
		return r;
	memset(h, 0, sizeof(*h));
	r = STEP_EINVAL;
	if (get_i64(o, "stepsync_manifest", 1, MANIFEST_VERSION, &x) != 0)
		goto out;
	v = json_object_get(o, "name");
	if (v == NULL || !json_is_string(v) || json_string_length(v) == 0 ||
	    json_string_length(v) > MANIFEST_NAME_MAX ||
	    memchr(json_string_value(v), '\0', json_string_length(v)) != NULL)
		goto out;
	memcpy(h->name, json_string_value(v), json_string_length(v) + 1);
	if (get_i64(o, "seq", 1, (int64_t)MANIFEST_SEQ_MAX, &x) != 0)
		goto out;
	h->seq = (uint64_t)x;
	if (get_i64(o, "time", INT64_MIN, INT64_MAX, &h->time) != 0)
		goto out;
	if (get_i64(o, "files", 0, INT64_MAX, &x) != 0)
		goto out;
	h->files = (uint64_t)x;
	if (get_i64(o, "dirs", 0, INT64_MAX, &x) != 0)
		goto out;
	h->dirs = (uint64_t)x;
	if (get_i64(o, "symlinks", 0, INT64_MAX, &x) != 0)
		goto out;
	h->symlinks = (uint64_t)x;
	if (get_i64(o, "bytes", 0, INT64_MAX, &x) != 0)
		goto out;
	h->bytes = (uint64_t)x;
	r = 0;
out:
	json_decref(o);
	return r;
}

/* ---- writer ---------------------------------------------------------------------- */

struct manifest_writer {
	FILE *body; /* entries so far, one per line */
	struct buf line;
	struct manifest_header counts;
	uint64_t entries;
	struct hash_ctx *md5;      /* over the entry lines, for manifest_writer_digest() */
	char digest[HASH_MD5_HEX]; /* "" until computed */
};

int
manifest_writer_new(struct manifest_writer **outp)
{
	struct manifest_writer *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return STEP_ENOMEM;
	if ((w->md5 = hash_md5_new()) == NULL) {
		free(w);
		return STEP_ENOMEM;
	}
	if ((w->body = tmpfile()) == NULL) {
		hash_free(w->md5);
		free(w);
		return STEP_ESYS;
	}
	buf_init(&w->line, MANIFEST_MAX_LINE);
	*outp = w;
	return 0;
}

int
manifest_writer_add(struct manifest_writer *w, const struct manifest_entry *e)
{
	int r;

	buf_reset(&w->line);
	if ((r = manifest_entry_encode(e, &w->line)) != 0)
		return r;
	if (fwrite(buf_ptr(&w->line), 1, buf_avail(&w->line), w->body) != buf_avail(&w->line))
		return STEP_ESYS;
	if (w->digest[0] != '\0')
		return STEP_EINVAL; /* no entries after the digest was taken */
	hash_update(w->md5, buf_ptr(&w->line), buf_avail(&w->line));
	w->entries++;
	if (e->type == MANIFEST_FILE) {
		w->counts.files++;
		w->counts.bytes += e->size;
	} else if (e->type == MANIFEST_DIR) {
		w->counts.dirs++;
	} else {
		w->counts.symlinks++;
	}
	return 0;
}

const char *
manifest_writer_digest(struct manifest_writer *w)
{
	uint8_t d[HASH_MD5_LEN];

	if (w->digest[0] == '\0') {
		hash_final(w->md5, d);
		hash_to_hex(d, HASH_MD5_LEN, w->digest);
	}
	return w->digest;
}

void
manifest_writer_counts(const struct manifest_writer *w, struct manifest_header *h)
{
	h->files = w->counts.files;
	h->dirs = w->counts.dirs;
	h->symlinks = w->counts.symlinks;
	h->bytes = w->counts.bytes;
}

int
manifest_writer_finish(struct manifest_writer *w, struct manifest_header *h, FILE *out)
{
	char chunk[65536];
	size_t n;
	int r;

	manifest_writer_counts(w, h);
	buf_reset(&w->line);
	if ((r = manifest_header_encode(h, &w->line)) != 0)
		return r;
	if (fwrite(buf_ptr(&w->line), 1, buf_avail(&w->line), out) != buf_avail(&w->line))
		return STEP_ESYS;
	if (fflush(w->body) != 0 || fseek(w->body, 0, SEEK_SET) != 0)
		return STEP_ESYS;
	while ((n = fread(chunk, 1, sizeof(chunk), w->body)) > 0)
		if (fwrite(chunk, 1, n, out) != n)
			return STEP_ESYS;
	if (ferror(w->body))
		return STEP_ESYS;
	if (fprintf(out, "{\"end\":%" PRIu64 "}\n", w->entries) < 0)
		return STEP_ESYS;
	return fflush(out) == 0 ? 0 : STEP_ESYS;
}

void
manifest_writer_free(struct manifest_writer *w)
{
	if (w == NULL)
		return;
	if (w->body != NULL)
		fclose(w->body);
	hash_free(w->md5);
	buf_release(&w->line);
	free(w);
}

/* ---- reader ---------------------------------------------------------------------- */

struct manifest_reader {
	FILE *f; /* borrowed */
	char *line;
	size_t cap;
	long lineno;
	uint64_t entries;
	int done;
};

/* Reads one line without its newline; 1, 0 at EOF, STEP_ETOOBIG, STEP_ESYS. */
static int
read_line(struct manifest_reader *r, size_t *lenp)
{
	ssize_t n;

	errno = 0;
	n = getline(&r->line, &r->cap, r->f);
	if (n < 0)
		return errno == 0 || feof(r->f) ? 0 : STEP_ESYS;
	r->lineno++;
	if ((size_t)n > MANIFEST_MAX_LINE)
		return STEP_ETOOBIG;
	if (n > 0 && r->line[n - 1] == '\n')
		n--;
	else
		return STEP_EPROTO; /* the last line lost its newline: truncated */
	*lenp = (size_t)n;
	return 1;
}

int
manifest_reader_new(FILE *f, struct manifest_header *h, struct manifest_reader **outp)
{
	struct manifest_reader *r = calloc(1, sizeof(*r));
	size_t len = 0;
	int rc;

	if (r == NULL)
		return STEP_ENOMEM;
	r->f = f;
	rc = read_line(r, &len);
	if (rc == 1)
		rc = manifest_header_decode(r->line, len, h);
	else if (rc == 0)
		rc = STEP_EPROTO; /* empty file */
	if (rc != 0) {
		manifest_reader_free(r);
		return rc == STEP_ETOOBIG ? STEP_EPROTO : rc;
	}
	*outp = r;
	return 0;
}

int
manifest_reader_next(struct manifest_reader *r, struct manifest_entry *e)
{
	json_t *o, *end;
	size_t len = 0;
	int rc;

	if (r->done)
		return 0;
	rc = read_line(r, &len);
	if (rc == 0 || rc == STEP_ETOOBIG)
		return STEP_EPROTO;
	if (rc < 0)
		return rc;
	if (len > 6 && memcmp(r->line, "{\"end\"", 6) == 0) {
		o = json_loadb(r->line, len, 0, NULL);
		end = o != NULL ? json_object_get(o, "end") : NULL;
		rc = end != NULL && json_is_integer(end) &&
		        json_integer_value(end) == (json_int_t)r->entries
		    ? 0
		    : STEP_EPROTO;
		json_decref(o);
		if (rc == 0 && (rc = read_line(r, &len)) == 0)
			r->done = 1;
		else if (rc >= 0)
			rc = STEP_EPROTO; /* something after the trailer */
		return rc;
	}
	if ((rc = manifest_entry_decode(r->line, len, e)) != 0)
		return rc;
	r->entries++;
	return 1;
}

long
manifest_reader_line(const struct manifest_reader *r)
{
	return r->lineno;
}

void
manifest_reader_free(struct manifest_reader *r)
{
	if (r == NULL)
		return;
	free(r->line);
	free(r);
}

/* ---- keys ------------------------------------------------------------------------ */

int
manifest_object_key(const uint8_t sha256[HASH_SHA256_LEN], char *out, size_t outlen)
{
	if (outlen < 3 + 2 * HASH_SHA256_LEN)
		return STEP_ETOOBIG;
	out[0] = 'o';
	out[1] = '.';
	hash_to_hex(sha256, HASH_SHA256_LEN, out + 2);
	return 0;
}

int
manifest_tree_key(const uint8_t sha256[HASH_SHA256_LEN], char *out, size_t outlen)
{
	int r = manifest_object_key(sha256, out, outlen);

	if (r == 0)
		out[0] = 't';
	return r;
}

int
manifest_is_tree_key(const char *key)
{
	return strncmp(key, "t.", 2) == 0 && strlen(key) == 2 + 2 * HASH_SHA256_LEN &&
	    is_hex_lower(key + 2, 2 * HASH_SHA256_LEN);
}

int
manifest_name_encode(const char *name, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0, n = strlen(name);

	if (n == 0 || n > MANIFEST_NAME_MAX)
		return STEP_EINVAL;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-';

		if (o + (plain ? 1 : 3) >= outlen)
			return STEP_ETOOBIG;
		if (plain) {
			out[o++] = (char)c;
		} else {
			out[o++] = '_';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return 0;
}

int
manifest_snapshot_prefix(const char *name, char *out, size_t outlen)
{
	char enc[3 * MANIFEST_NAME_MAX + 1];
	int r, n;

	if ((r = manifest_name_encode(name, enc, sizeof(enc))) != 0)
		return r;
	n = snprintf(out, outlen, "s.%s.", enc);
	return n < 0 || (size_t)n >= outlen ? STEP_ETOOBIG : 0;
}

int
manifest_snapshot_key(const char *name, uint64_t seq, char *out, size_t outlen)
{
	char pre[3 * MANIFEST_NAME_MAX + 8];
	int r, n;

	if (seq < 1 || seq > MANIFEST_SEQ_MAX)
		return STEP_EINVAL;
	if ((r = manifest_snapshot_prefix(name, pre, sizeof(pre))) != 0)
		return r;
	n = snprintf(out, outlen, "%s%010" PRIu64, pre, seq);
	return n < 0 || (size_t)n >= outlen ? STEP_ETOOBIG : 0;
}

int
manifest_snapshot_seq(const char *key, const char *prefix, uint64_t *seqp)
{
	size_t n = strlen(prefix), i;
	uint64_t v = 0;

	if (strncmp(key, prefix, n) != 0 || strlen(key + n) != 10)
		return STEP_EINVAL;
	for (i = n; key[i] != '\0'; i++) {
		if (key[i] < '0' || key[i] > '9')
			return STEP_EINVAL;
		v = v * 10 + (uint64_t)(key[i] - '0');
	}
	if (v < 1)
		return STEP_EINVAL;
	*seqp = v;
	return 0;
}
