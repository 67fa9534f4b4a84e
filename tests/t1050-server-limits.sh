#!/bin/sh
# t1050 — concurrency and limits: idle timeout, --max-connections refusal with 503,
# 1,000 idle connections held while 50 clients upload at once (all verified; per-address
# limits off, every client being 127.0.0.1).
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

t_start 'stepd with --idle-timeout 1' --auth open --idle-timeout 1
ok 'an idle connection is closed by the server' "$W idle $STEPD_PORT"
t_stop 'SIGTERM exits 0'

STEPD_NAME=maxc
t_start 'stepd with --max-connections 3' --auth open --max-connections 3
ok 'the 4th connection gets 503 and is closed; slots are reused' "$W maxconn $STEPD_PORT"
t_stop 'SIGTERM exits 0'

STEPD_NAME=many
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)"
t_start 'stepd for the crowd (no per-address limits)' --auth open --max-per-source 0 \
	--max-unauth-per-source 0 --login-timeout 600
ok '1,000 idle connections + 50 concurrent uploads, all verified' "$W many $STEPD_PORT"
t_stop 'SIGTERM with connections open exits 0'
done_testing
