#!/bin/sh
# t1000 — stepd speaks STEP: every status code in validation order, DATA, pipelining,
# out-of-order / repeated / connection-per-block uploads, the resume, block_md5, LIST
# (and list_mtime), zero-size and BYE extensions, character-counted json_len, per-user
# namespaces.
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

t_start 'stepd starts (auth open)' --auth open

for s in status data pipeline ooo conn_per_block resume block_md5 list list_mtime zero bye \
	charcount isolation; do
	ok "protocol: $s" "$W $s $STEPD_PORT"
done
ok 'protocol: big_blocks' "$W big_blocks $STEPD_PORT"
ok 'still serving after all of it' "$W bye $STEPD_PORT"
ok 'stepd prints its address on stdout' "grep -q '^listening on 127.0.0.1:$STEPD_PORT\$' '$STEPD_LOG'"
ok 'store files are 0600, directories 0700' "
	! find '$STEPD_ROOT' -type f ! -perm 0600 | grep . &&
	! find '$STEPD_ROOT' -type d ! -perm 0700 | grep ."
t_stop 'SIGTERM exits 0'
done_testing
