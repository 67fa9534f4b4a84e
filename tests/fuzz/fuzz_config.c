/* fuzz_config.c — libFuzzer target: stepsync.conf parsing and validation must never crash. */
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *c = NULL;
	char err[256];
	size_t i;

	if (config_parse((const char *)data, size, "fuzz.conf", &c, err, sizeof(err)) != 0)
		return 0;
	for (i = 0; i < c->ndirs; i++) {
		if (config_find_dir(c, c->dirs[i].name) == NULL)
			__builtin_trap();
		(void)config_exclude_match(c->dirs[i].exclude, c->dirs[i].nexclude, "a/b.tmp", 0);
	}
	config_free(c);
	return 0;
}
