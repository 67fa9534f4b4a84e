#!/bin/sh
# t1030 — disk errors: STEP_FAULT=write:3 fails the third block write with ENOSPC; the
# client gets 507, nothing half-written becomes visible, and the server keeps serving.
# STEP_FAULT=fsync:1 fails the first commit sync: the commit is answered 507, not visible.
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

export STEP_FAULT=write:3
t_start 'stepd starts with the fault hook' --auth open --block-size 1000
ok 'third write answered 507, retry succeeds' "$W fault $STEPD_PORT"
t_stop 'SIGTERM exits 0'

STEPD_NAME=sync
export STEP_FAULT=fsync:1
t_start 'stepd starts with a failing commit sync' --auth open
ok 'failed commit answered 507 and not visible; next upload works' "
	python3 -c '
import sys; sys.path.insert(0, \"$TOP/tests\")
from server_wire import *
c, tok = session($STEPD_PORT, \"sync\")
expect(c, r(\"FILE\", \"SAVE\", token=tok, key=\"a\", size=10), 200)
expect(c, r(\"FILE\", \"UPLOAD\", token=tok, key=\"a\", block_index=0), 507, b\"0123456789\")
expect(c, r(\"FILE\", \"GET\", token=tok, key=\"a\"), 404)
last, _, _ = upload(c, tok, \"a\", b\"0123456789\")
check(last[\"md5\"] == md5(b\"0123456789\"), \"md5\")
'"
t_stop 'SIGTERM exits 0'
done_testing
