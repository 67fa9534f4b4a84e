/*
 * client_replace.c — `put --replace` against a server without the replace extension:
 * the new content is uploaded and verified under a temporary key first, the old object
 * is deleted only then, the file uploaded to its key and verified, and the temporary key
 * deleted last. A failure at any point leaves at least one full copy, and the error
 * sentence says which key holds it. What it cannot do: between the delete and the second
 * upload's commit the key holds nothing (a reader gets 404), and if that upload fails or
 * the client dies there, only the temporary key holds the new content.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "client_impl.h"
#include "err.h"
#include "hash.h"
#include "log.h"

#define REPLACE_TAG ".stepsync-new-" /* temporary key: KEY + REPLACE_TAG + 12 hex digits */

/* Deletes key, keeping the session's error sentence and status as they were. */
static void
delete_quietly(struct client *c, const char *key)
{
	char err[sizeof(c->err)];
	int status = c->status;

	memcpy(err, c->err, sizeof(err));
	if (client_file_delete(c, key) != 0)
		log_info("could not delete '%s': %s", key, c->err);
	memcpy(c->err, err, sizeof(err));
	c->status = status;
}

/* Fails with the session's sentence followed by what the keys hold now. */
static int fail_where(struct client *c, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int
fail_where(struct client *c, int r, const char *fmt, ...)
{
	char why[sizeof(c->err)], where[2 * CLIENT_KEY_MAX + 200];
	va_list ap;

	memcpy(why, c->err, sizeof(why));
	va_start(ap, fmt);
	vsnprintf(where, sizeof(where), fmt, ap);
	va_end(ap);
	return client_fail(c, r, "%.300s; %s", why, where);
}

int
client_put_replace_legacy(
    struct client *c, const char *path, const char *key, int flags, struct client_result *res)
{
	struct client_result first;
	struct client_file_info info;
	char tmp[CLIENT_KEY_MAX + 1], hex[13];
	uint8_t rnd[6];
	int r;

	flags &= ~(CLIENT_PUT_REPLACE | CLIENT_PUT_ATOMIC | CLIENT_PUT_EXIST_OK);
	/* Nothing to replace: an ordinary upload (one that finds the key made meanwhile is
	 * refused, 402, and changes nothing). */
	if ((r = client_file_info(c, key, &info)) == STEP_ENOENT)
		return client_put_file(c, path, key, flags, res);
	if (r != 0)
		return r;
	if (strlen(key) + strlen(REPLACE_TAG) + 12 > CLIENT_KEY_MAX)
		return client_fail(c, STEP_EINVAL,
		    "key too long for a safe --replace on this server (at most %d bytes)",
		    CLIENT_KEY_MAX - (int)strlen(REPLACE_TAG) - 12);
	if (hash_random(rnd, sizeof(rnd)) != 0)
		return client_fail(c, STEP_EIO, "no random bytes for a temporary key");
	hash_to_hex(rnd, sizeof(rnd), hex);
	snprintf(tmp, sizeof(tmp), "%s%s%s", key, REPLACE_TAG, hex);
	log_info("replacing '%s' by way of '%s' (the server has no atomic replace)", key, tmp);
	/* 1. The new content under the temporary key, verified. */
	if ((r = client_put_file(c, path, tmp, flags, &first)) != 0) {
		delete_quietly(c, tmp);
		return fail_where(c, r, "'%s' is unchanged", key);
	}
	/* 2. The old object goes (it may be gone already). */
	if ((r = client_file_delete(c, key)) != 0 && r != STEP_ENOENT) {
		r = fail_where(c, r, "'%s' is unchanged (the new content was not stored)", key);
		delete_quietly(c, tmp);
		return r;
	}
	/* 3. The new content under its key, verified. */
	if ((r = client_put_file(c, path, key, flags, res)) != 0)
		return fail_where(c, r,
		    "'%s' now holds nothing: the new content is under key '%s' (stepsync get it, "
		    "or put --replace again)",
		    key, tmp);
	if (strcmp(res->md5, first.md5) != 0)
		log_info("'%s' changed between its two uploads; the key holds the later one", path);
	/* 4. The temporary copy goes. */
	if (client_file_delete(c, tmp) != 0)
		log_warnx("'%s' is replaced, but the temporary key '%s' could not be deleted: %s",
		    key, tmp, c->err);
	c->err[0] = '\0';
	return STEP_OK;
}
