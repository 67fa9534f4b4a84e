#!/bin/sh
# t1010 — hostile input: oversized json_len/bin_len (answer, then close), bad JSON (400,
# connection goes on), wrong JSON types, keys like ../x, /abs, .., NUL, 4096 characters,
# non-ASCII; nothing escapes the root and the server keeps serving.
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

t_start 'stepd starts' --auth open
ok 'hostile requests answered, keys stored safely' "$W hostile $STEPD_PORT '$STEPD_ROOT'"
ok 'nothing was written outside the root' "[ ! -e '$T_DIR/x' ] && [ ! -e '$T_DIR/b' ]"
ok 'file names in the store are short hex' "
	! ls '$STEPD_ROOT/obj' | grep -v -E '^[0-9a-f]{64}\\.[0-9a-f]{16}\$' | grep ."
ok 'garbage bytes get an answer or a close, never a crash' "
	head -c 100000 /dev/urandom | python3 -c '
import socket,sys
s=socket.create_connection((\"127.0.0.1\",$STEPD_PORT)); s.settimeout(10)
try:
    s.sendall(sys.stdin.buffer.read()); s.recv(100)
except OSError: pass' && $W bye $STEPD_PORT"
ok 'stepd still alive' "kill -0 $STEPD_PID"
t_stop 'SIGTERM exits 0'
done_testing
