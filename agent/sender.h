/*
 * sender.h — uploads of content-addressed objects held in memory (the chunks of large
 * files and the tree objects of a sync) on worker threads, while the caller goes on
 * reading and hashing.
 *
 * Each worker has a session of its own (client_new() from the options) and sends one
 * object at a time with client_put_mem() and CLIENT_PUT_EXIST_OK, so an object the server
 * already holds with the same MD5 costs a SAVE and a GET, and one whose upload was
 * interrupted continues from the server's "received" blocks (stepd's resume extension).
 * An object that exists with other bytes under its content key (damaged) is replaced.
 * The bytes queued and in flight are bounded: sender_put() blocks while they exceed the
 * budget, so reading never runs far ahead of the network.
 */
#ifndef STEP_SENDER_H
#define STEP_SENDER_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"

struct sender;

/* One finished upload, handed to the collect callback (strings borrowed for the call). */
struct sender_done {
	const char *key;
	uint64_t size;
	int rc;            /* 0 or STEP_E* */
	const char *error; /* client_error() sentence when rc != 0 */
	const char *md5;   /* verified MD5 when rc == 0 */
	int existed;       /* 1 when the server had it already */
	uint64_t blocks_sent;
	int tag; /* sender_put()'s */
};
typedef int sender_done_fn(void *arg, const struct sender_done *d);

/*
 * nconn workers with sessions from o (copied; the strings it points to must outlive the
 * sender), at most budget bytes queued or in flight. 0 and *outp, STEP_EINVAL, STEP_ENOMEM.
 */
int sender_new(const struct client_opts *o, int nconn, size_t budget, struct sender **outp);

/* Queues data (len bytes, malloc()ed; taken in every case) for upload under key (copied);
 * md5 (copied) is its MD5 when the caller computed it, else NULL; tag is the caller's, handed
 * back with the result.
 * Blocks while the budget is used up. 0, or STEP_ESTOPPED once a worker failed fatally
 * (transport or login: the remaining queue is failed with that code). */
int sender_put(
    struct sender *s, const char *key, uint8_t *data, size_t len, const char *md5, int tag);

/* Hands every finished upload to fn (in the caller's thread) and forgets it; stops at
 * fn's first non-zero return, which it returns. */
int sender_collect(struct sender *s, sender_done_fn *fn, void *arg);

/* Waits until nothing is queued or in flight (then sender_collect() sees everything). */
void sender_wait(struct sender *s);

/* Uploads queued and finished so far. */
void sender_counts(struct sender *s, uint64_t *queued, uint64_t *done);

/* Stops the workers (queued uploads are dropped) and frees s. NULL does nothing. */
void sender_free(struct sender *s);

#endif
