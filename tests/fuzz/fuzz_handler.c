/*
 * fuzz_handler.c — libFuzzer target: raw bytes through stepd's connection state machine
 * (framing, tolerant JSON, validation, every handler) over a temporary store root with a
 * fixed all-zero token secret, so seeds can carry valid tokens (see corpus/handler).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "conn_state.h"
#include "err.h"
#include "handler.h"
#include "log.h"
#include "store.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct store *fz_store;
static struct auth *fz_auth;
static char fz_root[] = "/tmp/fuzz_handler.XXXXXX";

/* Deferred replies arrive on the commit thread; they are handed to the conn_state on the
 * fuzzing thread after store_sync(), as the event loop would do. */
struct fz_done {
	void *slot;
	json_t *reply;
	struct handler_pkt *pkt;
};
static struct fz_done fz_done[CONN_MAX_PENDING];
static size_t fz_ndone;
static pthread_mutex_t fz_lock = PTHREAD_MUTEX_INITIALIZER;

static void
fz_post(void *post_arg, void *cookie, json_t *reply, struct handler_pkt *pkt)
{
	pthread_mutex_lock(&fz_lock);
	if (fz_ndone < CONN_MAX_PENDING) {
		fz_done[fz_ndone].slot = cookie;
		fz_done[fz_ndone].reply = reply;
		fz_done[fz_ndone].pkt = pkt;
		fz_ndone++;
	} else {
		json_decref(reply);
		free(pkt);
	}
	pthread_mutex_unlock(&fz_lock);
}

static void
fz_deliver(struct conn_state *cs)
{
	size_t i, n;

	store_sync(fz_store);
	pthread_mutex_lock(&fz_lock);
	n = fz_ndone;
	fz_ndone = 0;
	pthread_mutex_unlock(&fz_lock);
	for (i = 0; i < n; i++)
		conn_state_deliver(cs, fz_done[i].slot, fz_done[i].reply, fz_done[i].pkt);
}

static void
fz_cleanup(void)
{
	char cmd[128];

	store_free(fz_store);
	auth_free(fz_auth);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fz_root);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_handler: cannot remove %s\n", fz_root);
}

static void
fz_init(void)
{
	static const uint8_t secret[AUTH_SECRET_LEN];
	struct store_opts o = { fz_root, 16, 1 << 20, 3600, NULL };
	char path[256], err[256];

	log_init("fuzz", LOG_LVL_ERROR, false);
	if (mkdtemp(fz_root) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/secret", fz_root);
	if (util_write_file_atomic(path, secret, sizeof(secret), 0600) != 0 ||
	    auth_open(fz_root, AUTH_OPEN, 86400, &fz_auth, err, sizeof(err)) != 0 ||
	    store_open(&o, &fz_store, err, sizeof(err)) != 0)
		abort();
	atexit(fz_cleanup);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct handler h = { NULL, NULL, fz_post, NULL, 0 };
	struct conn_state cs;
	size_t off = 0;

	if (fz_store == NULL)
		fz_init();
	h.st = fz_store;
	h.au = fz_auth;
	conn_state_init(&cs, 65536);
	/* Feed in two chunks to exercise partial packets. */
	while (off < size) {
		size_t n = size - off > 4096 ? 4096 : size - off;

		if (buf_append(&cs.in, data + off, n) != 0)
			break;
		off += n;
		conn_state_process(&cs, &h, NULL, 1u << 20);
		while (conn_state_pending(&cs) && !cs.closing) {
			fz_deliver(&cs);
			conn_state_process(&cs, &h, NULL, 1u << 20);
		}
		if (cs.closing)
			break;
		buf_reset(&cs.out);
	}
	fz_deliver(&cs);
	conn_state_release(&cs);
	return 0;
}
