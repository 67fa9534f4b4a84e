/*
 * cmd_data.c — `stepsync data put KEY JSON | get KEY | rm KEY`: small JSON records.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "err.h"

static const char data_usage[] = "data put KEY JSON | data get KEY | data rm KEY";

int
cmd_data(struct agent *a, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct client *c;
	json_error_t jerr;
	json_t *obj = NULL;
	const char *verb, *key;
	char *s;
	int r, ex, n;

	while ((r = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (r != 'h')
			return agent_usage(data_usage);
		printf(
		    "usage: stepsync %s\n\n"
		    "put saves a JSON object as the record KEY (an existing KEY fails: there is\n"
		    "no update, rm it first); get prints one; rm deletes one. With --json: one\n"
		    "JSON object (command, action, key, and data for get, or error).\n"
		    "exit status: 0 done; 2 usage (JSON that is not an object too); 4 no such\n"
		    "  KEY (404); 5 KEY exists (402); 75 server unreachable or connection lost;\n"
		    "  76 TLS failed; 77 login refused; 78 no server, user or password; 1 other\n"
		    "  failures.\n",
		    data_usage);
		return AGENT_EXIT_OK;
	}
	n = argc - optind;
	if (n < 2)
		return agent_usage(data_usage);
	verb = argv[optind];
	key = argv[optind + 1];
	if (strcmp(verb, "put") == 0) {
		if (n != 3)
			return agent_usage(data_usage);
		obj = json_loads(argv[optind + 2], JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(obj)) {
			agent_error("data put '%s': not a JSON object: %s", key,
			    obj ? "wrong type" : jerr.text);
			json_decref(obj);
			return AGENT_EXIT_USAGE;
		}
	} else if ((strcmp(verb, "get") != 0 && strcmp(verb, "rm") != 0) || n != 2) {
		return agent_usage(data_usage);
	}
	if ((r = agent_client(a, &c)) != 0) {
		json_decref(obj);
		return agent_setup_exit(a, "data", r);
	}
	if (strcmp(verb, "put") == 0) {
		r = client_data_save(c, key, obj);
		json_decref(obj);
		obj = NULL;
	} else if (strcmp(verb, "get") == 0) {
		r = client_data_get(c, key, &obj);
	} else {
		r = client_data_delete(c, key);
	}
	if (r != 0) {
		ex = agent_client_exit(c, r);
		agent_error("data %s '%s': %s", verb, key, client_error(c));
		agent_json(a,
		    json_pack("{s:s, s:s, s:s, s:s, s:i}", "command", "data", "action", verb, "key",
		        key, "error", client_error(c), "exit_status", ex));
		return ex;
	}
	if (obj != NULL) {
		if (a->json) {
			agent_json(a,
			    json_pack("{s:s, s:s, s:s, s:o}", "command", "data", "action", verb,
			        "key", key, "data", obj));
		} else {
			s = json_dumps(obj, JSON_SORT_KEYS);
			printf("%s\n", s ? s : "{}");
			free(s);
			json_decref(obj);
		}
	} else {
		agent_json(a,
		    json_pack("{s:s, s:s, s:s, s:s}", "command", "data", "action", verb, "key", key,
		        "status", "ok"));
	}
	return AGENT_EXIT_OK;
}
