/* main.c — stepd entry point (placeholder until the server lands). */
#include <stdio.h>

int
main(void)
{
	fprintf(stderr, "stepd: not implemented yet\n");
	return 1;
}
