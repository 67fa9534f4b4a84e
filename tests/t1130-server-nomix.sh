#!/bin/sh
# t1130 — issue 16 on the server: an upload is never committed as a mix of two files
# (save_md5: a SAVE declaring the file's md5 gets 423 while someone else's upload of other
# content is active, a commit must match the declared md5, UPLOADs naming a replaced
# upload are refused; the declared md5 survives a restart), and stepd's start-up: a second
# stepd on a root is refused with the PID of the first, permissions are never widened, user
# names are restricted to a documented set.
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

t_start 'stepd starts (auth open)' --auth open
ok 'save_md5: 423, md5-checked commits, stale upload_id refused, legacy unchanged' \
	"$W save_md5 $STEPD_PORT"
ok 'a declared upload in progress (block 0 of 3)' '
	python3 -c "
import sys; sys.path.insert(0, \"$TOP/tests\")
from server_wire import *
c, tok = session($STEPD_PORT, \"persist\")
d = bytes(range(256)) * 200
expect(c, r(\"FILE\", \"SAVE\", token=tok, key=\"p\", size=len(d), md5=md5(d)), 200)
expect(c, r(\"FILE\", \"UPLOAD\", token=tok, key=\"p\", block_index=0), 200, d[:20480])
"'
ok 'a second stepd on the same root is refused, naming the first one'"'"'s PID' '
	expect_exit 1 $BIN/stepd --bind 127.0.0.1 --port 0 --root "$STEPD_ROOT" --auth open \
		2>second.err && cat second.err &&
	grep -q "another stepd (PID $STEPD_PID) is serving" second.err'
t_stop 'SIGTERM exits 0'
t_start 'restart' --auth open
ok 'after the restart the declared md5 still guards the upload (other content: 423)' '
	python3 -c "
import sys; sys.path.insert(0, \"$TOP/tests\")
from server_wire import *
c, tok = session($STEPD_PORT, \"persist\")
d = bytes(range(256)) * 200
e = bytes(reversed(d))
expect(c, r(\"FILE\", \"SAVE\", token=tok, key=\"p\", size=len(e), md5=md5(e)), 423)
rep, _ = expect(c, r(\"FILE\", \"SAVE\", token=tok, key=\"p\", size=len(d), md5=md5(d)), 200)
check(rep[\"received\"] == [[0, 0]], \"resumed: %r\" % rep)
"'
t_stop 'SIGTERM exits 0'

ok 'a 0555 root is tightened to 0500, never made writable (as root stepd may still use it)' '
	mkdir ro && chmod 0555 ro &&
	{ $BIN/stepd --bind 127.0.0.1 --port 0 --port-file ro.port --root ro 2>ro.err & } &&
	pid=$! && wait_for "[ -s ro.port ] || ! kill -0 $pid 2>/dev/null" 400 &&
	{ ! kill -0 $pid 2>/dev/null || kill -TERM $pid; } && wait $pid; cat ro.err;
	[ "$(stat -c %a ro)" = 500 ]'
ok 'a 0750 root loses group permissions only (0700)' '
	mkdir g && chmod 0750 g && echo pw | $BIN/stepd --root g user add ok_1 &&
	[ "$(stat -c %a g)" = 700 ]'
ok 'user names: letters, digits and . _ @ + - only' '
	for n in " " "a b" "a/b" ".." ".x" "-x" "x;y" "$(printf "a\tb")"; do
		echo pw | expect_exit 1 $BIN/stepd --root g user add "$n" 2>err || exit 1
		grep -q "invalid user name" err || exit 1
	done &&
	echo pw | $BIN/stepd --root g user add "Ann.Lee_2+x@example.org-1" &&
	$BIN/stepd --root g user list | grep -qx "Ann.Lee_2+x@example.org-1"'
done_testing
