#!/bin/bash
# tests/peers/selftest.sh — TAP self-test of the STEP test peers.
#
# Starts ref_server.py instances (plain, tolerant-read, and one per --bug
# mode) on 127.0.0.1 with --port 0, runs every ref_client.py mode and the
# probe.py scenarios against them, and checks that each bug mode does what it
# claims.  Everything it starts is killed by the EXIT trap.  No fixed sleeps:
# readiness is polled with a bound.
#
#   bash tests/peers/selftest.sh        (KEEP=1 keeps the temp dir)
set -u
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
	sed -n '2,9s/^# \{0,1\}//p' "$0"
	exit 0
fi

HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
T=$(mktemp -d "${TMPDIR:-/tmp}/peers-selftest.XXXXXX")
pids=""
n=0
failed=0

cleanup() {
	for p in $pids; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in $pids; do
		wait_for "! kill -0 $p" 100 || kill -KILL "$p" 2>/dev/null
	done
	if [ -n "${KEEP:-}" ]; then
		echo "# kept $T"
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ok TITLE BODY — run BODY in a subshell, print a TAP line, show output on failure.
ok() {
	n=$((n + 1))
	if (eval "$2") >"$T/out.$n" 2>&1; then
		echo "ok $n - $1"
	else
		failed=$((failed + 1))
		echo "not ok $n - $1"
		sed 's/^/# /' "$T/out.$n" | tail -n 25
	fi
}

# expect_fail CMD... — CMD must fail, but not by a signal or a crash.
expect_fail() {
	"$@"
	rc=$?
	if [ $rc -eq 0 ] || [ $rc -gt 125 ]; then
		echo "expect_fail: '$*' exited $rc" >&2
		return 1
	fi
	return 0
}

# wait_for CONDITION [TRIES] — poll every 50 ms, at most TRIES times.
wait_for() {
	i=0
	while ! eval "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -ge "${2:-200}" ] && return 1
		sleep 0.05 # wait_for's polling interval
	done
	return 0
}

declare -A PORT PID

# start NAME [ref_server args...] — start a server in the background.
start() {
	name=$1
	shift
	"$PY" "$HERE/ref_server.py" --port 0 --port-file "$T/$name.port" \
		--root "$T/$name.root" --hang-timeout 30 "$@" >"$T/$name.out" 2>"$T/$name.err" &
	PID[$name]=$!
	pids="$pids $!"
}

client() {
	"$PY" "$HERE/ref_client.py" --timeout 5 "$@"
}
probe() {
	"$PY" "$HERE/probe.py" "$@"
}

SERVERS="plain tolerant glue wrongop silent race noanswer"
start plain
start tolerant --tolerant-read
start glue --bug glue
start wrongop --bug wrongop
start silent --bug silent
start race --bug race
start noanswer --bug noanswer-commit

# Test data: a 1-byte file, a file just over 1 MiB (not a multiple of the
# block size), an empty file, and the big one again under a non-ASCII name.
printf 'x' >"$T/one"
head -c 1048700 /dev/urandom >"$T/big"
: >"$T/empty"
cp "$T/big" "$T/résumé.pdf"

ok "servers start and publish their ports" '
	for s in $SERVERS; do
		wait_for "[ -s \"$T/$s.port\" ] || ! kill -0 ${PID[$s]}" 200 || exit 1
		[ -s "$T/$s.port" ] || { echo "$s did not start:"; cat "$T/$s.err"; exit 1; }
		grep -q "^listening on 127.0.0.1:$(cat "$T/$s.port")$" "$T/$s.out" || exit 1
	done'
for s in $SERVERS; do
	PORT[$s]=$(cat "$T/$s.port" 2>/dev/null || echo 0)
done
P=${PORT[plain]}

ok "stepwire framing round trip (--self-test)" '"$PY" "$HERE/stepwire.py" --self-test'

ok "every peer has --help" '
	for f in stepwire ref_server ref_client probe; do
		"$PY" "$HERE/$f.py" --help >/dev/null || exit 1
	done'

ok "ping (EARTH) gets 333" 'client ping --port $P'

ok "simple upload of a 1-byte file" 'client --port $P --file "$T/one" --mode simple'

ok "simple upload of 1 MiB+ with --extra-fields --bye" \
	'client --port $P --file "$T/big" --key big-simple --mode simple --extra-fields --bye'

ok "pipeline upload of 1 MiB+ (4 in flight)" \
	'client --port $P --file "$T/big" --key big-pipe --mode pipeline'

ok "conn-per-block upload of 1 MiB+ (4 connections)" \
	'client --port $P --file "$T/big" --key big-cpb --mode conn-per-block'

ok "pipeline download of 1 MiB+ matches" '
	client download --port $P --key big-cpb --out "$T/big.dl" --mode pipeline &&
	cmp "$T/big" "$T/big.dl"'

ok "conn-per-block download of the 1-byte file matches" '
	client download --port $P --key one --out "$T/one.dl" --mode conn-per-block --bye &&
	cmp "$T/one" "$T/one.dl"'

ok "uploading an existing key fails (402)" \
	'expect_fail client --port $P --file "$T/one" --key one'

ok "empty file: the reference never answers size 0, client times out" \
	'expect_fail client --port $P --file "$T/empty" --timeout 0.5'

ok "non-ASCII key, escaped requests, character-counted answers" '
	client --port $P --file "$T/résumé.pdf" &&
	client download --port $P --key "résumé.pdf" --out "$T/r.dl" &&
	cmp "$T/big" "$T/r.dl"'

ok "non-ASCII key with --charcount: the strict reference drops it" \
	'expect_fail client --port $P --file "$T/résumé.pdf" --key "é2.pdf" --charcount'

ok "non-ASCII key with --charcount against --tolerant-read" '
	client --port ${PORT[tolerant]} --file "$T/résumé.pdf" --charcount --mode pipeline &&
	client download --port ${PORT[tolerant]} --key "résumé.pdf" --out "$T/r2.dl" --charcount &&
	cmp "$T/big" "$T/r2.dl"'

ok "DATA save, get, delete" '
	client data-save --port $P --key rec --field colour=blue --field n=3 &&
	client data-get --port $P --key rec | grep -q "\"colour\": \"blue\"" &&
	client data-delete --port $P --key rec &&
	client data-get --port $P --key rec --expect-status 404'

ok "status codes, validation order and reference quirks (probe codes)" 'probe codes --port $P'

ok "glue: pipelined UPLOADs get 406 then silence (probe glue)" \
	'probe glue --port ${PORT[glue]}'

ok "glue: simple client works, pipelining client fails" '
	client --port ${PORT[glue]} --file "$T/big" --key g1 --mode simple &&
	expect_fail client --port ${PORT[glue]} --file "$T/big" --key g2 --mode pipeline --timeout 1'

ok "wrongop: operation GET, 402/408/410 codes (probe wrongop)" \
	'probe wrongop --port ${PORT[wrongop]}'

ok "wrongop: simple client still works" \
	'client --port ${PORT[wrongop]} --file "$T/big" --mode simple'

ok "silent: no answer to BYE, size 0, '/' key, bad base64 (probe silent)" \
	'probe silent --port ${PORT[silent]}'

ok "race: completing connection gets no answer (probe race)" 'probe race --port ${PORT[race]}'

ok "race: conn-per-block client loses a final answer" \
	'expect_fail client --port ${PORT[race]} --file "$T/big" --mode conn-per-block --timeout 1'

ok "noanswer-commit: final UPLOAD unanswered, GET has md5 (probe)" \
	'probe noanswer-commit --port ${PORT[noanswer]}'

ok "noanswer-commit: simple client times out on the last block" \
	'expect_fail client --port ${PORT[noanswer]} --file "$T/one" --timeout 0.5'

# SIGTERM must end a server cleanly (exit 0) even with hanging connections.
# Not through ok(): wait needs the server to be this shell's child.
n=$((n + 1))
pid=${PID[plain]}
kill -TERM "$pid" 2>/dev/null
if wait_for "! kill -0 $pid" 100 && wait "$pid"; then
	echo "ok $n - SIGTERM stops the server with exit 0"
else
	failed=$((failed + 1))
	echo "not ok $n - SIGTERM stops the server with exit 0"
fi

echo "1..$n"
[ $failed -eq 0 ]
