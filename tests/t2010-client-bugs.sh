#!/bin/sh
# t2010-client-bugs.sh — stepsync against the broken deployed servers of
# STEP-PROTOCOL.md §8 (ref_server.py --bug ...): transfers still complete and verify,
# or fail with a clear error; never a hang, never a corrupt or partial file.
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
export STEPSYNC_PASSWORD=alice
head -c 500000 /dev/urandom >f.bin
head -c 300000 /dev/urandom >g.bin

# start_bug NAME... — a fresh reference server with those bugs (its own root and log).
start_bug() {
	rm -rf "$T_DIR/ref.port" "$T_DIR/ref.log" "$T_DIR/ref.root"
	start_ref_server -v --hang-timeout 60 "$@"
}
ss() { "$S" --server "127.0.0.1:$REF_PORT" --user alice --timeout 2 "$@"; }

start_bug --bug glue || exit 1
ok "glue: pipelined put falls back to one request at a time and verifies" '
	ss -v put f.bin >out 2>err && grep -q "^f.bin $(md5sum <f.bin | cut -d" " -f1)$" out &&
	grep -q "pipelining failed" err && grep -q "glued packets" ref.log'
ok "glue: the stored object is intact" 'ss get f.bin -o f.out >/dev/null && cmp f.bin f.out'
ok "glue: --window 1 never trips the bug" '
	ss put --window 1 --key w1 g.bin >/dev/null && ss get w1 -o w1.out >/dev/null &&
	cmp g.bin w1.out'
kill $REF_PID

start_bug --bug wrongop || exit 1
ok "wrongop: put, get, rm and a 402 still work from the status alone" '
	ss put f.bin >/dev/null && ss get f.bin -o f2.out >/dev/null && cmp f.bin f2.out &&
	expect_exit 5 ss put f.bin 2>err && grep -q "(402)" err &&
	ss rm f.bin && expect_exit 4 ss get f.bin -o x.out && [ ! -e x.out ]'
kill $REF_PID

start_bug --bug noanswer-commit || exit 1
ok "noanswer-commit: the missing final answer is replaced by a GET" '
	"$S" --server "127.0.0.1:$REF_PORT" --user alice -v put f.bin >out 2>err &&
	grep -q "^f.bin $(md5sum <f.bin | cut -d" " -f1)$" out &&
	grep -q "the server has it complete" err &&
	ss get f.bin -o f3.out >/dev/null && cmp f.bin f3.out'
kill $REF_PID

start_bug --bug silent || exit 1
: >empty
ok "silent: an empty file is a clear error, not a hang" '
	expect_exit 1 ss put empty 2>err && grep -q "server does not support empty files" err'
ok "silent: a key with / times out with a clear error" '
	expect_exit 75 ss put --key a/b g.bin 2>err && grep -q "no answer from server" err'
ok "silent: normal files still work (BYE is never waited for)" '
	ss put g.bin >/dev/null && ss get g.bin -o g.out >/dev/null && cmp g.bin g.out'
kill $REF_PID

start_bug --bug race || exit 1
ok "race: two clients finishing the same key at once both end verified" '
	ss put --key same f.bin >o1 2>e1 & p1=$!
	ss put --key same f.bin >o2 2>e2 & p2=$!
	wait $p1; r1=$?; wait $p2; r2=$?
	cat e1 e2
	# Each either verified the object or was told it exists; at least one verified.
	{ [ $r1 -eq 0 ] || grep -q "(402)" e1; } && { [ $r2 -eq 0 ] || grep -q "(402)" e2; } &&
	{ [ $r1 -eq 0 ] || [ $r2 -eq 0 ]; } && [ $((r1 + r2)) -le 5 ] &&
	ss get same -o same.out >/dev/null && cmp f.bin same.out'
kill $REF_PID
done_testing
