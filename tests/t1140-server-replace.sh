#!/bin/sh
# t1140 — the replace extension: a FILE SAVE with "replace": true of an existing key keeps
# the old object readable until the new upload commits, then swaps the key in one
# transaction and reclaims the old bytes; a failed, abandoned or deleted replace leaves
# things consistent; a replace in progress survives a restart; without the flag: 402.
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

t_start 'stepd starts' --auth open
ok 'replace: old object served until the commit, then swapped; failures leave it' \
	"$W replace $STEPD_PORT '$STEPD_ROOT'"
ok 'a replace in progress at a stop' "$W replace_phase1 $STEPD_PORT"
t_stop 'SIGTERM exits 0'
t_start 'stepd restarts over the same root' --auth open
ok 'the old object is still served, the replace resumes and commits' \
	"$W replace_phase2 $STEPD_PORT"
t_stop 'SIGTERM exits 0'
done_testing
