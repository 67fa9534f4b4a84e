#!/bin/sh
# t2040-client-failures.sh — downloads never leave a partial or unverified file under
# the final name (wrong MD5, a server that dies mid-download, a server killed
# mid-download), and transfers survive an expiring token by logging in again.
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
export STEPSYNC_PASSWORD=carol

# start_bad MODE [ARGS...] — the misbehaving peer; sets BAD_PORT.
start_bad() {
	rm -f bad.port
	python3 "$TOP/tests/client_badserver.py" --port-file bad.port --mode "$@" 2>>bad.log &
	track_pid $!
	BAD_PID=$!
	wait_for "[ -s bad.port ]" 200 || return 1
	BAD_PORT=$(cat bad.port)
}
sb() { "$S" --server "127.0.0.1:$BAD_PORT" --user carol --timeout 3 "$@"; }

start_bad badmd5 || exit 1
ok "a wrong MD5 from the server fails the get and leaves no file" '
	echo old >keep.txt &&
	expect_exit 6 sb get k -o keep.txt 2>err && grep -q "md5" err &&
	[ "$(cat keep.txt)" = old ] && [ -z "$(ls -A | grep stepsync-)" ]'
kill $BAD_PID

start_bad die --after 4 || exit 1
ok "a server that drops every connection mid-download fails cleanly, no partial file" '
	expect_exit 75 sb get k -o die.out 2>err && [ ! -e die.out ] &&
	[ -z "$(ls -A | grep stepsync-)" ]'
kill $BAD_PID

head -c 1000000 /dev/urandom >exp.bin
start_bad expire --after 7 --content exp.bin || exit 1
ok "an expiring token (403 mid-transfer) means a new login, and the put verifies" '
	sb put exp.bin >out && grep -q "^exp.bin $(md5sum <exp.bin | cut -d" " -f1)$" out &&
	[ $(grep -c "<- AUTH LOGIN" bad.log) -gt 2 ]'
ok "an expiring token (403 mid-transfer) during get, verified" '
	sb get exp.bin -o exp.out >/dev/null && cmp exp.bin exp.out'
kill $BAD_PID

start_ref_server || exit 1
head -c 8000000 /dev/urandom >big.bin
ok "killing the server mid-download leaves no partial file" '
	"$S" --server "127.0.0.1:$REF_PORT" --user carol put big.bin >/dev/null || exit 1
	"$S" --server "127.0.0.1:$REF_PORT" --user carol --timeout 2 get --bwlimit 1M big.bin -o big.out 2>err &
	pid=$!
	wait_for "ls -A | grep -q stepsync-" 200 && kill -9 $REF_PID &&
	wait $pid; rc=$?; [ $rc -eq 75 ] && [ ! -e big.out ] && [ -z "$(ls -A | grep stepsync-)" ]'
start_ref_server || exit 1
ok "SIGTERM or SIGHUP during get removes the temporary file" '
	"$S" --server "127.0.0.1:$REF_PORT" --user carol put --key sig big.bin >/dev/null || exit 1
	for sig in TERM HUP; do
		"$S" --server "127.0.0.1:$REF_PORT" --user carol get --bwlimit 500k sig -o sig.out &
		pid=$!
		wait_for "ls -A | grep -q stepsync-" 200 || exit 1
		kill -$sig $pid; wait $pid; rc=$?
		[ $rc -gt 128 ] && [ ! -e sig.out ] && [ -z "$(ls -A | grep stepsync-)" ] || exit 1
	done'
done_testing
