/*
 * cmd_check.c — `stepsync check`: is every snapshot of a NAME restorable from the server?
 *
 * For each snapshot on the server: format 2, every tree is downloaded and must hash to its
 * id (treewalk.c) and every chunk must exist with the size its tree gives; format 1, every
 * object of the manifest must exist with the manifest's size and MD5. With --read-data
 * every chunk and object is downloaded too and must hash to its key. Each object is checked
 * once however many snapshots share it. Damage is listed on stderr; nothing is changed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "cmd.h"
#include "config.h"
#include "err.h"
#include "manifest.h"
#include "snapshot.h"
#include "treewalk.h"
#include "util.h"

struct check_run {
	struct agent *a;
	struct client *c;
	int read_data;
	char **listed; /* sorted o.* keys when the server can LIST, else NULL */
	size_t nlisted;
	char **done; /* keys checked already: a hash set of capdone slots */
	size_t ndone, capdone;
	uint64_t snapshots, trees, objects, bytes_read, problems;
	const char *snap; /* "NAME#SEQ" being checked, for messages */
};

static int
key_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static uint64_t
key_hash(const char *key)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

	for (; *key != '\0'; key++)
		h = (h ^ (uint8_t)*key) * 0x100000001b3ull;
	return h;
}

/* The slot of key in the open-addressed table done (capdone a power of two): where it is,
 * or the empty slot where it goes. */
static char **
key_slot(char **done, size_t capdone, const char *key)
{
	size_t i = (size_t)key_hash(key) & (capdone - 1);

	while (done[i] != NULL && strcmp(done[i], key) != 0)
		i = (i + 1) & (capdone - 1);
	return &done[i];
}

/* 1 when key was checked already; else remembers it and returns 0. A hash set: a check
 * of a million objects looks each one up in constant time. */
static int
seen_key(struct check_run *k, const char *key)
{
	char **slot;

	if (2 * (k->ndone + 1) > k->capdone) {
		size_t cap = k->capdone ? 2 * k->capdone : 1024, i;
		char **grown = xcalloc(cap, sizeof(*grown));

		for (i = 0; i < k->capdone; i++)
			if (k->done[i] != NULL)
				*key_slot(grown, cap, k->done[i]) = k->done[i];
		free(k->done);
		k->done = grown;
		k->capdone = cap;
	}
	slot = key_slot(k->done, k->capdone, key);
	if (*slot != NULL)
		return 1;
	*slot = xstrdup(key);
	k->ndone++;
	return 0;
}

/* Lists one damage: of object key, or ("" key) of the snapshot itself. */
static void
problem(struct check_run *k, const char *key, const char *what)
{
	k->problems++;
	if (*key)
		agent_error("check %s: object %s %s", k->snap, key, what);
	else
		agent_error("check %s: %s", k->snap, what);
}

/*
 * One object: exists with size (and md5, when not NULL); with --read-data its bytes hash
 * to its key (SHA-256 of the content, "o." keys). Returns 0 (problems counted) or a client
 * error that ends the check.
 */
static int
check_object(struct check_run *k, const char *key, uint64_t size, const char *md5)
{
	struct client_file_info info;
	struct client_result res;
	uint8_t *data = NULL, want[HASH_SHA256_LEN], got[HASH_SHA256_LEN];
	size_t len = 0;
	int r;

	if (seen_key(k, key))
		return 0;
	k->objects++;
	if (k->listed != NULL && !k->read_data && md5 == NULL) {
		if (bsearch(&key, k->listed, k->nlisted, sizeof(char *), key_cmp) == NULL)
			problem(k, key, "is missing on the server");
		return 0;
	}
	if (!k->read_data) {
		r = client_file_info(k->c, key, &info);
		if (r == STEP_ENOENT) {
			problem(k, key, "is missing on the server");
			return 0;
		}
		if (r != 0)
			return r;
		if (info.size != size || (md5 != NULL && strcmp(info.md5, md5) != 0))
			problem(k, key, "has another size or MD5 than the snapshot says");
		return 0;
	}
	r = client_get_mem(k->c, key, (size_t)size, &data, &len, &res);
	if (r == STEP_ENOENT || r == STEP_ETOOBIG || r == STEP_EMISMATCH) {
		problem(k, key,
		    r == STEP_ENOENT ? "is missing on the server"
		                     : "does not match what the snapshot says");
		return 0;
	}
	if (r != 0)
		return r;
	k->bytes_read += len;
	hash_sha256(data, len, got);
	free(data);
	if (len != size || util_hex_decode(key + 2, want, sizeof(want)) != 0 ||
	    memcmp(want, got, sizeof(got)) != 0)
		problem(k, key, "does not hash to its key (damaged)");
	return 0;
}

static int
check_entry(void *arg, const char *path, const struct tree_entry *e, int leave)
{
	struct check_run *k = arg;
	char key[MANIFEST_KEY_MAX + 1];
	size_t i;
	int r;

	if (e->type == TREE_DIR && !leave)
		k->trees++;
	for (i = 0; e->type == TREE_FILE && i < e->nchunks; i++) {
		manifest_object_key(e->chunks[i].id, key, sizeof(key));
		if ((r = check_object(k, key, e->chunks[i].size, NULL)) != 0)
			return r;
	}
	return 0;
}

/* Skips trees checked already (through another snapshot). */
static int
check_seen(void *arg, const uint8_t id[HASH_SHA256_LEN])
{
	struct check_run *k = arg;
	char key[MANIFEST_KEY_MAX + 1];

	manifest_tree_key(id, key, sizeof(key));
	return seen_key(k, key);
}

static int
check_snapshot(struct check_run *k, const char *name, uint64_t seq)
{
	struct snapshot_record rec;
	struct manifest_header h;
	struct manifest_reader *rd = NULL;
	struct manifest_entry *e = NULL;
	char id[200], errbuf[512];
	FILE *f = NULL;
	int fmt = 1, r;

	snprintf(id, sizeof(id), "%s#%" PRIu64, name, seq);
	k->snap = id;
	k->snapshots++;
	if ((r = snapshot_fetch(k->c, name, seq, &fmt, &f, &rec)) != 0) {
		if (snapshot_exit_code(r) != AGENT_EXIT_FAIL)
			return r;
		problem(k, "",
		    r == STEP_ENOENT ? "the snapshot is gone" : "the snapshot record is damaged");
		return 0;
	}
	if (fmt == 2) {
		k->trees++; /* the root */
		r = treewalk(k->c, rec.root, check_entry, check_seen, k, errbuf, sizeof(errbuf));
		if (r != 0 && snapshot_exit_code(r) != AGENT_EXIT_FAIL)
			return r;
		if (r != 0)
			problem(k, "", errbuf);
		return 0;
	}
	e = xmalloc(sizeof(*e));
	if (manifest_reader_new(f, &h, &rd) != 0) {
		problem(k, "", "the manifest is damaged");
		goto out;
	}
	while ((r = manifest_reader_next(rd, e)) == 1)
		if (e->type == MANIFEST_FILE && e->key[0] != '\0' &&
		    (r = check_object(k, e->key, e->size, e->md5)) != 0)
			goto out;
	if (r < 0)
		problem(k, "", "the manifest is damaged");
	r = 0;
out:
	free(e);
	manifest_reader_free(rd);
	fclose(f);
	return r;
}

static int
check_name(struct check_run *k, const char *name)
{
	uint64_t *seqs = NULL;
	size_t n = 0, i;
	int r;

	if ((r = snapshot_list(k->c, name, &seqs, &n)) != 0)
		return r;
	if (n == 0)
		agent_error("check: no snapshot named '%s' on the server", name);
	for (i = 0; i < n && r == 0; i++)
		r = check_snapshot(k, name, seqs[i]);
	free(seqs);
	if (r != 0)
		return r;
	return n == 0 ? STEP_ENOENT : 0;
}

int
cmd_check(struct agent *a, int argc, char **argv)
{
	static const char usage[] = "check [--name NAME] [--read-data]";
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "read-data", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct check_run k;
	const char *name = NULL;
	size_t i;
	int ch, r, ex;

	memset(&k, 0, sizeof(k));
	while ((ch = getopt_long(argc, argv, "+n:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			name = optarg;
			break;
		case 'r':
			k.read_data = 1;
			break;
		case 'h':
			printf(
			    "usage: stepsync %s\n\n"
			    "Checks that every snapshot of NAME (default: the config file's only\n"
			    "[dir]) can be restored: every tree and chunk (format 2) or object\n"
			    "(format 1) is on the server with the right size. Changes nothing.\n\n"
			    "  --name NAME   the snapshots to check\n"
			    "  --read-data   also download everything and check that it hashes\n"
			    "                to its key (reads the whole repository)\n\n"
			    "exit status: 0 no damage; 1 damage found (listed on stderr) or no\n"
			    "  such snapshot; 2 usage; 75 server unreachable; 76 TLS failed;\n"
			    "  77 login refused; 78 bad configuration\n",
			    usage);
			return AGENT_EXIT_OK;
		default:
			return agent_usage(usage);
		}
	}
	if (optind != argc)
		return agent_usage(usage);
	if (name == NULL && (name = snapshot_default_name(a)) == NULL)
		return AGENT_EXIT_USAGE;
	if (agent_client(a, &k.c) != 0)
		return SYNC_EXIT_CONFIG;
	k.a = a;
	if (!k.read_data && client_has_ext(k.c, "list")) {
		if ((r = client_list(k.c, "o.", &k.listed, &k.nlisted)) != 0) {
			agent_error(
			    "check: cannot list the server's objects: %s", client_error(k.c));
			return snapshot_exit_code(r);
		}
		qsort(k.listed, k.nlisted, sizeof(char *), key_cmp);
	}
	r = check_name(&k, name);
	if (r != 0 && r != STEP_ENOENT)
		agent_error("check '%s': %s", name, client_error(k.c));
	ex = r == 0            ? (k.problems ? AGENT_EXIT_FAIL : AGENT_EXIT_OK)
	    : r == STEP_ENOENT ? AGENT_EXIT_FAIL
	                       : snapshot_exit_code(r);
	if (a->json)
		agent_json(a,
		    json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I}", "command", "check",
		        "name", name, "ok", ex == AGENT_EXIT_OK, "snapshots",
		        (json_int_t)k.snapshots, "trees", (json_int_t)k.trees, "objects",
		        (json_int_t)k.objects, "bytes_read", (json_int_t)k.bytes_read, "problems",
		        (json_int_t)k.problems));
	else if (a->verbose >= 0)
		printf("check '%s': %" PRIu64 " snapshot%s, %" PRIu64 " tree%s, %" PRIu64
		       " object%s%s: %s\n",
		    name, k.snapshots, k.snapshots == 1 ? "" : "s", k.trees,
		    k.trees == 1 ? "" : "s", k.objects, k.objects == 1 ? "" : "s",
		    k.read_data ? " (data read)" : "",
		    k.problems   ? "DAMAGED"
		        : r == 0 ? "no damage found"
		                 : "not checked");
	for (i = 0; i < k.capdone; i++)
		free(k.done[i]);
	free(k.done);
	client_keys_free(k.listed, k.nlisted);
	return ex;
}
