/*
 * cmd_data.c — `stepsync data put KEY JSON | get KEY | rm KEY`: small JSON records.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "err.h"

static const char data_usage[] = "data put KEY JSON | data get KEY | data rm KEY";

int
cmd_data(struct agent *a, int argc, char **argv)
{
	struct client *c;
	json_error_t jerr;
	json_t *obj = NULL;
	char *s;
	int r;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("usage: stepsync %s\n\nSaves a JSON object as a record (an existing KEY "
		       "fails), prints one,\nor deletes one.\n",
		    data_usage);
		return AGENT_EXIT_OK;
	}
	if (argc < 3)
		return agent_usage(data_usage);
	if (strcmp(argv[1], "put") == 0) {
		if (argc != 4)
			return agent_usage(data_usage);
		obj = json_loads(argv[3], JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(obj)) {
			agent_error("data put '%s': not a JSON object: %s", argv[2],
			    obj ? "wrong type" : jerr.text);
			json_decref(obj);
			return AGENT_EXIT_USAGE;
		}
	} else if ((strcmp(argv[1], "get") != 0 && strcmp(argv[1], "rm") != 0) || argc != 3) {
		return agent_usage(data_usage);
	}
	if (agent_client(a, &c) != 0) {
		json_decref(obj);
		return AGENT_EXIT_FAIL;
	}
	if (strcmp(argv[1], "put") == 0) {
		r = client_data_save(c, argv[2], obj);
		json_decref(obj);
		obj = NULL;
	} else if (strcmp(argv[1], "get") == 0) {
		r = client_data_get(c, argv[2], &obj);
	} else {
		r = client_data_delete(c, argv[2]);
	}
	if (r != 0) {
		agent_error("data %s '%s': %s", argv[1], argv[2], client_error(c));
		agent_json(a,
		    json_pack("{s:s, s:s, s:s}", "command", "data", "key", argv[2], "error",
		        client_error(c)));
		return AGENT_EXIT_FAIL;
	}
	if (obj != NULL) {
		if (a->json) {
			agent_json(a,
			    json_pack(
			        "{s:s, s:s, s:o}", "command", "data", "key", argv[2], "data", obj));
		} else {
			s = json_dumps(obj, JSON_SORT_KEYS);
			printf("%s\n", s ? s : "{}");
			free(s);
			json_decref(obj);
		}
	} else {
		agent_json(a,
		    json_pack("{s:s, s:s, s:s, s:s}", "command", "data", "action", argv[1], "key",
		        argv[2], "status", "ok"));
	}
	return AGENT_EXIT_OK;
}
