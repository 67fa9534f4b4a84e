#!/bin/sh
# t1040 — user database (add/del/list, PBKDF2 verifier), 401 that does not reveal whether a
# user exists, token expiry (--token-ttl), forged tokens.
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"
R=$T_DIR/stepd.root

ok 'a missing root is refused, naming init; nothing is created (exit 1)' "
	expect_exit 1 $BIN/stepd --bind 127.0.0.1 --port 0 --root '$R' 2>err &&
	grep -q \"does not exist; create it with 'stepd --root $R init'\" err && [ ! -e '$R' ] &&
	echo pw | expect_exit 1 $BIN/stepd --root '$R' user add alice 2>/dev/null && [ ! -e '$R' ]"
ok 'stepd init creates it, mode 0700' "$BIN/stepd --root '$R' init >/dev/null && [ \$(stat -c %a '$R') = 700 ]"
ok 'user add reads the password from stdin' "echo 'pw one' | $BIN/stepd --root '$R' user add alice"
ok 'second user' "echo 'pw two' | $BIN/stepd --root '$R' user add bob"
ok 'adding an existing user fails' "echo x | expect_exit 1 $BIN/stepd --root '$R' user add alice"
ok 'user list' "[ \"\$($BIN/stepd --root '$R' user list | tr '\n' ' ')\" = 'alice bob ' ]"
ok 'no clear password in the database' "! grep -q 'pw one' '$R/meta.db'"
t_start 'stepd starts (auth users)' --token-ttl 5
ok 'right password: 200' "$W login $STEPD_PORT alice 'pw one' | grep -q '^200 '"
ok 'repeated logins (cached verification) keep working' "
	for i in 1 2 3; do $W login $STEPD_PORT alice 'pw one' | grep -q '^200 ' || exit 1; done"
ok 'wrong password and unknown user: same 401' "
	a=\$($W login $STEPD_PORT alice wrong) && b=\$($W login $STEPD_PORT nobody x) &&
	[ \"\${a%% *}\" = 401 ] && [ \"\$a\" = \"\$b\" ]"
ok 'the course rule does not work in users mode' "$W login $STEPD_PORT alice alice | grep -q '^401 '"
ok 'user del' "$BIN/stepd --root '$R' user del bob && ! $BIN/stepd --root '$R' user list | grep -q bob"
ok 'deleting a missing user fails' "expect_exit 1 $BIN/stepd --root '$R' user del bob"
ok 'a deleted user cannot log in' "$W login $STEPD_PORT bob 'pw two' | grep -q '^401 '"
ok 'a token expires (--token-ttl 5; whole seconds, so 4 to 5 s): 403' "
	tok=\$(python3 -c '
import sys; sys.path.insert(0, \"$TOP/tests\")
from server_wire import *
c = Conn($STEPD_PORT)
rep, _ = c.req(r(\"AUTH\", \"LOGIN\", username=\"alice\", password=md5(b\"pw one\")))
print(rep[\"token\"])') &&
	s=\$($W token_status $STEPD_PORT \$tok) && echo \"first: \$s\" && [ \"\$s\" = 404 ] &&
	wait_for '[ \"\$($W token_status $STEPD_PORT \$tok)\" = 403 ]' 200"
t_stop 'SIGTERM exits 0'
ok 'bad usage exits 2' "expect_exit 2 $BIN/stepd --root '$R' user frob"
ok 'missing --root exits 2' "expect_exit 2 $BIN/stepd --port 0"
ok '--help' "$BIN/stepd --help | grep -q -- --max-connections"
done_testing
