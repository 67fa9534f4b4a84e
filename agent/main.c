/* main.c — stepsync entry point (placeholder until the server lands). */
#include <stdio.h>

int
main(void)
{
	fprintf(stderr, "stepsync: not implemented yet\n");
	return 1;
}
