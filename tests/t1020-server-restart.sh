#!/bin/sh
# t1020 — restart persistence (objects, DATA records, partial uploads with their blocks,
# tokens) and expiry of abandoned uploads.
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

t_start 'stepd starts' --auth open --block-size 20480
ok 'store an object, a record and half an upload' "$W phase1 $STEPD_PORT '$T_DIR/token'"
t_stop 'SIGTERM exits 0'
t_start 'restart on the same root' --auth open --block-size 65536
ok 'all of it survived; the upload resumes with its blocks' \
	"$W phase2 $STEPD_PORT '$T_DIR/token'"
t_stop 'SIGTERM exits 0 again'

STEPD_NAME=ttl
t_start 'stepd with --upload-ttl 1' --auth open --upload-ttl 1 --block-size 65536
ok 'an abandoned upload is dropped and its space reclaimed' "
	python3 -c '
import sys; sys.argv=[\"x\",\"x\",\"$STEPD_PORT\"]
sys.path.insert(0, \"$TOP/tests\")
from server_wire import *
c, tok = session($STEPD_PORT, \"ttl\")
expect(c, r(\"FILE\", \"SAVE\", token=tok, key=\"old\", size=100000), 200)
expect(c, r(\"FILE\", \"UPLOAD\", token=tok, key=\"old\", block_index=1), 200, b\"x\" * (100000 - 65536))
' &&
	[ -n \"\$(ls '$STEPD_ROOT/tmp')\" ] &&
	wait_for '[ -z \"\$(ls $STEPD_ROOT/tmp)\" ]' 200"
t_stop 'SIGTERM exits 0'
done_testing
