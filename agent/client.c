/*
 * client.c — STEP client session (placeholder: the API of client.h, not implemented yet).
 */
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "err.h"

struct client {
	int unused;
};

int
client_new(const struct client_opts *o, struct client **outp)
{
	struct client *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return STEP_ENOMEM;
	*outp = c;
	return STEP_OK;
}

void
client_free(struct client *c)
{
	free(c);
}

int
client_connect(struct client *c)
{
	return STEP_ECONNECT;
}

void
client_disconnect(struct client *c)
{
}

const char *
client_error(const struct client *c)
{
	return "not implemented yet";
}

int
client_status(const struct client *c)
{
	return 0;
}

int
client_has_ext(struct client *c, const char *name)
{
	return 0;
}

const char *
client_server_name(struct client *c)
{
	return "";
}

int
client_request(struct client *c, const json_t *req, const void *bin, size_t binlen, json_t **respp)
{
	return STEP_ECONNECT;
}

int
client_ping(struct client *c, double *rttp)
{
	return STEP_ECONNECT;
}

int
client_data_save(struct client *c, const char *key, const json_t *fields)
{
	return STEP_ECONNECT;
}

int
client_data_get(struct client *c, const char *key, json_t **outp)
{
	return STEP_ECONNECT;
}

int
client_data_delete(struct client *c, const char *key)
{
	return STEP_ECONNECT;
}

int
client_file_info(struct client *c, const char *key, struct client_file_info *info)
{
	return STEP_ECONNECT;
}

int
client_file_delete(struct client *c, const char *key)
{
	return STEP_ECONNECT;
}

int
client_list(struct client *c, const char *prefix, char ***keysp, size_t *np)
{
	return STEP_ECONNECT;
}

void
client_keys_free(char **keys, size_t n)
{
	size_t i;

	for (i = 0; keys != NULL && i < n; i++)
		free(keys[i]);
	free(keys);
}

int
client_put_file(
    struct client *c, const char *path, const char *key, int flags, struct client_result *res)
{
	return STEP_ECONNECT;
}

int
client_put_mem(struct client *c, const void *p, size_t n, const char *key, int flags,
    struct client_result *res)
{
	return STEP_ECONNECT;
}

int
client_get_file(
    struct client *c, const char *key, const char *path, int mode, struct client_result *res)
{
	return STEP_ECONNECT;
}

int
client_get_mem(struct client *c, const char *key, size_t max, uint8_t **outp, size_t *lenp,
    struct client_result *res)
{
	return STEP_ECONNECT;
}

int
client_put_many(const struct client_opts *o, int nconn, struct client_job *jobs, size_t n)
{
	return STEP_ECONNECT;
}

int
bwlimit_new(uint64_t rate, struct bwlimit **outp)
{
	return STEP_ENOMEM;
}

void
bwlimit_free(struct bwlimit *bw)
{
}

void
bwlimit_take(struct bwlimit *bw, size_t n)
{
}
