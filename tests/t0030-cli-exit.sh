#!/bin/sh
# t0030-cli-exit.sh — the one-shot commands exit with distinct, documented statuses
# (stepsync --help, stepsync(1)): 2 usage, 4 not found, 5 conflict, 6 verification,
# 74 local file, 75 unreachable, 76 TLS, 77 login refused, 78 configuration. Before,
# put/get/ping/info/rm/data returned 1 for all of them; and `put FIFO` hung.
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
# Six wrong passwords in a row are this script's business, not an attack: no throttle.
start_stepd --auth open --login-fail-limit 1000 || exit 1
export STEPSYNC_PASSWORD=alice STEPSYNC_CONFIG=$T_DIR/none.conf
ss() { "$S" --server "127.0.0.1:$STEPD_PORT" --user alice --timeout 5 "$@"; }
echo hello >f.txt
mkfifo fifo
mkdir adir

ok "put of a FIFO fails at once with a clear message and 74 (it used to hang)" '
	timeout 20 "$S" --server "127.0.0.1:$STEPD_PORT" --user alice put fifo 2>err
	rc=$?; cat err; [ $rc -eq 74 ] &&
	grep -q "^stepsync: put '\''fifo'\'': not a regular file (a FIFO)" err'
ok "put of a directory or a missing file is 74 too" '
	expect_exit 74 ss put adir 2>err && grep -q "not a regular file (a directory)" err &&
	expect_exit 74 ss put nosuch.txt 2>err && grep -q "cannot open: No such file" err'
ok "put of a FIFO among regular files sends the others" '
	expect_exit 74 ss put f.txt fifo >out 2>err && grep -q "^f.txt " out &&
	ss info f.txt >/dev/null'
ok "put of an existing key: 5 (conflict)" '
	expect_exit 5 ss put f.txt 2>err && grep -q "(402)" err'
ok "get, info, rm and data of an unknown key: 4 (not found)" '
	expect_exit 4 ss get nosuch -o x.out && [ ! -e x.out ] &&
	expect_exit 4 ss info nosuch && expect_exit 4 ss rm nosuch &&
	expect_exit 4 ss data get nosuch && expect_exit 4 ss data rm nosuch'
ok "data put of an existing record: 5" '
	ss data put r "{\"a\":1}" && expect_exit 5 ss data put r "{\"a\":2}"'
ok "get into a directory that does not exist: 74 (local file)" '
	expect_exit 74 ss get f.txt -o no/such/dir/f.txt 2>err && grep -q "cannot" err'
ok "unreachable server: 75 for every command" '
	for c in "ping" "info f.txt" "get f.txt" "rm f.txt" "put f.txt" "data get r"; do
		expect_exit 75 "$S" --server 127.0.0.1:1 --user alice --timeout 2 $c 2>/dev/null ||
			exit 1
	done'
ok "TLS to a plain stepd port: 76" '
	expect_exit 76 ss --tls ping 2>err && grep -q "TLS handshake" err'
ok "wrong password: 77 for every command" '
	for c in "ping" "info f.txt" "get f.txt" "rm f.txt" "put f.txt" "data get r"; do
		STEPSYNC_PASSWORD=wrong expect_exit 77 ss $c 2>/dev/null || exit 1
	done'
ok "no server, no user, no password, bad config file: 78" '
	expect_exit 78 "$S" --user alice ping 2>err && grep -q "no server given" err &&
	expect_exit 78 "$S" --server "127.0.0.1:$STEPD_PORT" ping 2>err &&
	grep -q "no user given" err &&
	env -u STEPSYNC_PASSWORD setsid -w "$S" --server "127.0.0.1:$STEPD_PORT" --user alice \
		ping </dev/null 2>err; [ $? -eq 78 ] &&
	printf "[server\n" >bad.conf && expect_exit 78 "$S" --config bad.conf ping'
ok "usage errors: 2" '
	expect_exit 2 ss put && expect_exit 2 ss get && expect_exit 2 ss info &&
	expect_exit 2 ss rm && expect_exit 2 ss ping extra && expect_exit 2 ss data frob k &&
	expect_exit 2 ss put --nosuchoption f.txt && expect_exit 2 ss --timeout 0 ping &&
	expect_exit 2 ss put f.txt --timeout'
ok "several keys: every one is tried, the status is the first failure'\''s" '
	ss put --key k1 f.txt >/dev/null &&
	expect_exit 4 ss rm nosuch k1 && expect_exit 4 ss info k1'
ok "--help documents the exit statuses" '
	"$S" --help >h && grep -q "^ 74 local file error" h && grep -q "^  4 not found" h &&
	for c in put get rm info data ping; do
		"$S" $c --help | grep -q "^exit status:" || { echo "$c"; exit 1; }
	done'

# A server that throttles failed logins (its defaults): the refusal is told from a wrong
# password, with the server's words, and is temporary (75), not 77.
STEPD_NAME=thr start_stepd --auth open || exit 1
ok "a throttled login: exit 75 and the server's 'retry in N s', not a wrong password" '
	i=0 && while [ $i -lt 12 ]; do
		STEPSYNC_PASSWORD=wrong ss ping >/dev/null 2>"$T_DIR/thr.err"
		[ $? -eq 75 ] && break
		i=$((i + 1))
	done &&
	grep -q "retry in [0-9]* s" "$T_DIR/thr.err" &&
	STEPSYNC_PASSWORD=wrong expect_exit 75 ss ping
'
done_testing
