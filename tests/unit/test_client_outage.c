/* test_client_outage.c — client_outage_wait(), the policy by which a session rides through a
 * server outage: only 503 and 429 refusals, only when enabled, bounded by the outage's
 * length (not by a count), ended by an answered request or a pending stop. */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "client_impl.h"
#include "err.h"
#include "step.h"
#include "util.h"

static struct client *
session(int outage_ms)
{
	struct client_opts o;
	struct client *c = NULL;

	memset(&o, 0, sizeof(o));
	o.host = "127.0.0.1";
	o.port = 9; /* never connected */
	o.user = "u";
	o.password_md5 = "0123456789abcdef0123456789abcdef";
	o.outage_ms = outage_ms;
	assert_int_equal(client_new(&o, &c), 0);
	return c;
}

static void
only_retryable_refusals(void **state)
{
	struct client *c = session(60000);

	(void)state;
	c->status = STEP_ST_INTERNAL;
	assert_int_equal(client_outage_wait(c, STEP_ESTATUS), 0); /* 500: not an outage */
	c->status = STEP_ST_NOSPACE;
	assert_int_equal(client_outage_wait(c, STEP_ESTATUS), 0);
	c->status = STEP_ST_UNAVAILABLE;
	assert_int_equal(client_outage_wait(c, STEP_ECLOSED), 0); /* not a refusal */
	assert_int_equal(c->outage_since, 0);
	assert_int_equal(client_outage_wait(c, STEP_ESTATUS), 1); /* 503 */
	c->status = STEP_ST_THROTTLE;
	assert_int_equal(client_outage_wait(c, STEP_ESTATUS), 1); /* 429 */
	assert_int_equal(c->outage_n, 2);
	client_free(c);
}

static void
off_by_default(void **state)
{
	struct client *c = session(0);

	(void)state;
	c->status = STEP_ST_UNAVAILABLE;
	assert_int_equal(client_outage_wait(c, STEP_ESTATUS), 0);
	client_set_outage(c, 1000);
	assert_int_equal(c->outage_ms, 1000);
	client_set_outage(c, -5);
	assert_int_equal(c->outage_ms, 0);
	client_free(c);
}

/* The outage is bounded by its length: once it began longer ago than the budget, no more
 * waiting, and later refusals give up at once until an answered request clears it. */
static void
bounded_then_cleared(void **state)
{
	struct client *c = session(1000);

	(void)state;
	c->status = STEP_ST_UNAVAILABLE;
	c->outage_since = util_now_ms() - 5000; /* began 5 s ago */
	c->outage_n = 3;
	assert_int_equal(client_outage_wait(c, STEP_ESTATUS), 0);
	assert_int_equal(client_outage_wait(c, STEP_ESTATUS), 0);
	client_outage_clear(c);
	assert_int_equal(c->outage_since, 0);
	assert_int_equal(c->outage_n, 0);
	assert_int_equal(client_outage_wait(c, STEP_ESTATUS), 1); /* a new outage */
	client_free(c);
}

/* A pending SIGTERM ends the waiting at once. */
static void
stop_pending(void **state)
{
	struct client *c = session(60000);
	sigset_t set;

	(void)state;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	assert_int_equal(sigprocmask(SIG_BLOCK, &set, NULL), 0);
	raise(SIGTERM);
	c->status = STEP_ST_UNAVAILABLE;
	assert_int_equal(client_outage_wait(c, STEP_ESTATUS), 0);
	client_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(only_retryable_refusals),
		cmocka_unit_test(off_by_default),
		cmocka_unit_test(bounded_then_cleared),
		cmocka_unit_test(stop_pending),
	};

	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("client_outage", tests, NULL, NULL);
}
