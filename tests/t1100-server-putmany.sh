#!/bin/sh
# t1100 — the PUTMANY extension on the wire: a batch of one-block objects is stored and
# answered with one status per object (402 for duplicates, 406 for an MD5 that does not
# match the bytes, 410 for bad fields, 413 for sizes outside 1..16384, 423 for a key being
# uploaded); whole-request errors (406, 410, 413) store nothing; the connection goes on;
# only PUTMANY may carry more than one block of binary.
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

t_start 'stepd starts' --auth open -v
ok 'PUTMANY: statuses, whole-request errors, pipelining, limits' "$W putmany $STEPD_PORT"
ok 'stepd logged each PUTMANY at -v' "grep -q 'PUTMANY: 61 objects, 61 to commit' '$STEPD_LOG'"
ok 'no temp files left behind' "[ -z \"\$(ls '$STEPD_ROOT/tmp')\" ]"
t_stop 'SIGTERM exits 0'
done_testing
