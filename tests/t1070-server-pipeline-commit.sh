#!/bin/sh
# t1070 — group commit across a pipelining connection: requests go on being handled while
# earlier commits are pending, replies stay in request order, and a request naming a key
# whose commit is pending (GET, DOWNLOAD, DELETE, DATA) sees the committed result. A failed
# batch sync answers every waiter 507 and leaves nothing half-visible. A SAVE's answer
# agrees with its commit when its UPLOAD is pipelined behind it (PostgreSQL: store_check.c).
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

t_start 'stepd starts' --auth open
ok 'pipelined SAVE+UPLOAD burst, then GETs of the same keys: all 200, in order, right md5' \
	"$W pipecommit $STEPD_PORT"
ok 'SAVE answers agree with the commit: pipelined or not, existing or new keys, racing a DELETE' \
	"$W savecheck $STEPD_PORT"
ok 'no temp files left behind' "[ -z \"\$(ls '$STEPD_ROOT/tmp')\" ]"
t_stop 'SIGTERM exits 0'

STEPD_NAME=fault
export STEP_FAULT=fsync:1
t_start 'stepd starts with a failing commit sync' --auth open
ok 'failed batch: every waiter 507, nothing visible, the rest committed' \
	"$W pipefault $STEPD_PORT"
t_stop 'SIGTERM exits 0'
done_testing
