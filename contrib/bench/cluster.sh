#!/bin/bash
# contrib/bench/cluster.sh — the "cluster" part of make bench: small objects per second
# (smallfiles.py: SAVE+UPLOAD of 1-8 KiB objects over 4 connections) and a BIG_MIB put
# through (a) one stepd with SQLite metadata, (b) one stepd with PostgreSQL metadata,
# (c) two stepd with PostgreSQL behind HAProxy (contrib/haproxy/haproxy.cfg), same run,
# same machine; prints the ratios b/a and c/b. PostgreSQL is a throwaway cluster with
# fsync on (as SQLite syncs), on a unix socket. Called by bench.sh with W, BIG_MIB, SMALL_N.
set -u
: "${BIN:?}" "${TOP:?}" "${W:?}"
BIG_MIB=${BIG_MIB:-512}
SMALL_N=${SMALL_N:-20000}
. "$TOP/contrib/bench/lib.sh"
T_CLEANUP_EXTRA=""
. "$TOP/tests/pg_lib.sh"
CPIDS=""
cleanup_cluster() {
	for p in $CPIDS; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	pg_cleanup 2>/dev/null
}
trap cleanup_cluster EXIT
if [ ! -x "${PG_BIN:-}/initdb" ] || ! command -v haproxy >/dev/null; then
	echo "## cluster: skipped (PostgreSQL server binaries or haproxy not installed)"
	exit 0
fi
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() {
	n=0
	until python3 -c "import socket;socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null; do
		[ $n -lt 400 ] || return 1
		sleep 0.05 # polling for the listener, bounded
		n=$((n + 1))
	done
}
# cstart NAME PORT ROOT ARGS... — a stepd (auth open) on PORT.
cstart() {
	name=$1 port=$2 root=$3
	shift 3
	"$BIN/stepd" --bind 127.0.0.1 --port "$port" --root "$root" --init --auth open -q "$@" \
		>"$W/c.$name.log" 2>&1 &
	CPIDS="$CPIDS $!"
	wait_port "$port" || { echo "cluster bench: stepd $name did not start"; cat "$W/c.$name.log"; exit 1; }
}
cstop() { for p in $CPIDS; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; CPIDS=""; }
echo bench >"$W/c.pw"
[ -s "$W/big" ] || head -c $((BIG_MIB << 20)) /dev/urandom >"$W/big"
# Written back and read once before the first measurement, so that (a) does not pay for
# the file's own writeback.
sync
cat "$W/big" >/dev/null

# measure LABEL PORT — sets SMALL_<LABEL> (objects/s) and BIG_<LABEL> (MiB/s).
measure() {
	out=$(python3 "$TOP/contrib/bench/smallfiles.py" --port "$2" -n "$SMALL_N" -c 4 2>&1)
	o=$(echo "$out" | sed -n 's/.*: \([0-9]*\) objects\/s$/\1/p')
	[ -n "$o" ] || { echo "# $1 small objects: FAILED: $out"; o=0; }
	row "($1) small objects/s" "" "$o" ""
	eval "SMALL_$1=$o"
	t0=$(now)
	"$BIN/stepsync" --server "127.0.0.1:$2" --user bench --password-file "$W/c.pw" -q \
		--state "$W/c.$1.state" put "$W/big" --key "big.$1" >/dev/null || echo "# $1 put: FAILED"
	t1=$(now)
	r=$(rate "$BIG_MIB" "$(secs "$t0" "$t1")")
	row "($1) put ${BIG_MIB} MiB" "$(secs "$t0" "$t1")" "$r" ""
	eval "BIG_$1=$r"
}

echo "## cluster: (a) stepd+SQLite, (b) stepd+PostgreSQL, (c) 2 x stepd+PostgreSQL behind HAProxy"
PG_FSYNC=on pg_start >/dev/null || { echo "cluster bench: PostgreSQL did not start"; exit 1; }
P=$(freeport)
cstart a "$P" "$W/c.a.root"
measure a "$P"
cstop
rm -rf "$W/c.a.root"
M=$(pg_db bench_b)
cstart b "$P" "$W/c.b.root" --metadata "$M" ${BENCH_PG_ARGS:-}
measure b "$P"
cstop
rm -rf "$W/c.b.root"
M=$(pg_db bench_c)
PA=$(freeport) PB=$(freeport) PF=$(freeport)
cstart c1 "$PA" "$W/c.c.root" --metadata "$M" ${BENCH_PG_ARGS:-}
cstart c2 "$PB" "$W/c.c.root" --metadata "$M" ${BENCH_PG_ARGS:-}
STEP_FRONT=127.0.0.1:$PF STEPD_A=127.0.0.1:$PA STEPD_B=127.0.0.1:$PB \
	haproxy -db -f "$TOP/contrib/haproxy/haproxy.cfg" >"$W/c.haproxy.log" 2>&1 &
CPIDS="$CPIDS $!"
wait_port "$PF" || { echo "cluster bench: haproxy did not start"; exit 1; }
measure c "$PF"
cstop
rm -rf "$W/c.c.root"
row "ratio small objects/s (b)/(a) (goal >= 0.7)" "" "" "$(ratio "$SMALL_b" "$SMALL_a")"
row "ratio put MiB/s (b)/(a) (goal >= 0.95)" "" "" "$(ratio "$BIG_b" "$BIG_a")"
row "ratio small objects/s (c)/(b) (HAProxy + 2 instances)" "" "" "$(ratio "$SMALL_c" "$SMALL_b")"
row "ratio put MiB/s (c)/(b) (HAProxy + 2 instances)" "" "" "$(ratio "$BIG_c" "$BIG_b")"
