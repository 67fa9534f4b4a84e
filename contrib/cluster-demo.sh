#!/bin/bash
# contrib/cluster-demo.sh — several stepd on this machine, loopback only: a throwaway
# PostgreSQL cluster (initdb + pg_ctl as an unprivileged user, in a temporary directory),
# two stepd sharing it and one root directory, HAProxy in front (contrib/haproxy/haproxy.cfg).
# Backs a folder up through HAProxy, SIGKILLs the stepd serving it in the middle of a large
# upload, shows the upload finishing through the other one, restores through HAProxy and
# diffs. Usage: BIN=build TOP=. bash contrib/cluster-demo.sh  (make's B=... applies)
set -euo pipefail
: "${BIN:?}" "${TOP:?}"
W=$(mktemp -d "${TMPDIR:-/tmp}/stepsync-cluster.XXXXXX")
PIDS=""
T_CLEANUP_EXTRA=""
. "$TOP/tests/pg_lib.sh"
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	pg_cleanup 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { n=0; until eval "$1"; do [ $n -lt "${2:-400}" ] || return 1; sleep 0.05; n=$((n + 1)); done; }
[ -x "${PG_BIN:-}/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)"; exit 1; }
command -v haproxy >/dev/null || { echo "haproxy not found (apt-get install haproxy)"; exit 1; }

echo "== cluster demo workspace: $W"
say "initdb + pg_ctl start as $PG_USER (unix socket only, in a temporary directory)"
pg_start
M=$(pg_db stepd)
echo "metadata: $M"

ROOT=$W/shared-root # in production: the same CephFS/NFS path on every host
PA=$(freeport) PB=$(freeport) PF=$(freeport)
start() { # NAME PORT
	"$BIN/stepd" --bind 127.0.0.1 --port "$2" --port-file "$W/$1.port" --root "$ROOT" --init \
		--auth open --metadata "$M" >>"$W/$1.log" 2>&1 &
	PIDS="$PIDS $!"
	eval "PID_$1=$!"
	wait_for "[ -s '$W/$1.port' ]" || { cat "$W/$1.log"; exit 1; }
	rm -f "$W/$1.port"
}
say "stepd --root $ROOT --metadata '$M' --port $PA   (instance a)"
start a "$PA"
say "stepd --root $ROOT --metadata '$M' --port $PB   (instance b)"
start b "$PB"
say "haproxy -f contrib/haproxy/haproxy.cfg   (127.0.0.1:$PF -> a, b; STEP health checks)"
STEP_FRONT=127.0.0.1:$PF STEPD_A=127.0.0.1:$PA STEPD_B=127.0.0.1:$PB \
	haproxy -db -f "$TOP/contrib/haproxy/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
PIDS="$PIDS $!"
wait_for "python3 -c 'import socket;socket.create_connection((\"127.0.0.1\",$PF),1)' 2>/dev/null"

mkdir -p "$W/src/docs"
head -c $((160 << 20)) /dev/urandom >"$W/src/large.bin"
for i in $(seq 1 50); do head -c $((i * 997)) /dev/urandom >"$W/src/docs/f$i.txt"; done
echo demo >"$W/pw"
S=("$BIN/stepsync" --server "127.0.0.1:$PF" --user demo --password-file "$W/pw" --timeout 5)

say "stepsync sync --name demo $W/src/docs   (through HAProxy)"
"${S[@]}" --state "$W/state.db" sync --name demo "$W/src/docs"

say "stepsync -v put $W/src/large.bin --key large   (through HAProxy, 20 MB/s, so that the kill lands mid-upload)"
"${S[@]}" -v --state "$W/state.db" --bwlimit 20M put "$W/src/large.bin" --key large >"$W/put1.out" 2>&1 &
PUT=$!
tmp_bytes() { du -sb "$ROOT/tmp" 2>/dev/null | cut -f1; }
wait_for "[ \$(tmp_bytes) -gt $((50 << 20)) ] || ! kill -0 $PUT 2>/dev/null" 1200
# The instance with the client's connection (HAProxy -> stepd) is the one to kill.
victim=a
ss -Htn state established "( sport = :$PB )" | grep -q . && victim=b
vpid=$(eval echo "\$PID_$victim")
say "kill -9 stepd $victim (PID $vpid) with $(($(tmp_bytes) >> 20)) MiB of large.bin received"
kill -9 "$vpid"
rc=0
wait "$PUT" || rc=$?
grep -v "^stepsync: debug" "$W/put1.out" | tail -n 8
echo "(put exit status $rc: 0 = rode through the kill on the other instance, 75 = connection lost)"
if [ "$rc" -ne 0 ]; then
	say "stepsync -v put $W/src/large.bin --key large   (again: HAProxy sends it to the surviving instance, which resumes)"
	"${S[@]}" -v --state "$W/state.db" put "$W/src/large.bin" --key large 2>&1 | grep -v "^stepsync: debug" | tail -n 8
fi
other=a
[ "$victim" = a ] && other=b
say "stepsync info large   (through HAProxy: instance $other is the one left)"
"${S[@]}" info large
say "stepsync get large   (through HAProxy) and cmp"
"${S[@]}" get -o "$W/large.out" large && cmp "$W/src/large.bin" "$W/large.out" && echo "large.bin: identical"
say "stepsync restore --name demo --to $W/restored   (through HAProxy)"
"${S[@]}" --state "$W/fresh.db" restore --name demo --to "$W/restored"
say "diff -r $W/src/docs $W/restored"
diff -r "$W/src/docs" "$W/restored" && echo "identical: $(find "$W/src/docs" -type f | wc -l) files"
