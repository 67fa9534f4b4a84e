#!/bin/sh
# t4000-fault-agent-kill.sh — `stepsync sync` of a large tree (a 32 MiB file, a 3 MiB one
# and 300 small files) is killed with SIGKILL at seeded pseudo-random moments, many times
# (FAULT_ITER kills, default 15; 8 under the sanitizer build): most after a random number
# of uploaded blocks, some at a random instant (scan, hashing, manifest). A final run
# completes, and a restore with a fresh state is byte-identical to the source.
#
# The client talks to stepd through tests/peers/faultproxy.py in pass-through mode with
# --count: it logs every STEP packet the client sent, so the bytes sent again after each
# kill are measured on the wire, not estimated. Per kill they must stay within one window
# of blocks (32) plus the batch of progress commits (64 blocks) and the small files in
# flight; the figures are printed.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"
. "$TOP/tests/fault_lib.sh"

KILLS=$(fault_iter 15 8)
SRC=$T_DIR/tree
fault_tree "$SRC" 33554432 300 7919 16384
mkdir -p "$SRC/deep/er"
head -c 3145728 /dev/urandom >"$SRC/deep/medium.bin"
echo leaf >"$SRC/deep/er/leaf.txt"

echo demo >"$T_DIR/pw"
t_start 'stepd starts' --auth open
start_proxy count --count --fault-rate 0 || exit 1
S="$BIN/stepsync --server 127.0.0.1:$PROXY_PORT --user demo --password-file $T_DIR/pw"
ST=$T_DIR/state.db
LOG=$T_DIR/count.log

ups() {
	grep -c '^UP ' "$LOG"
}
pkts() {
	grep -c '^PKT ' "$LOG"
}

# kill_runs — KILLS runs, each killed at a seeded random moment; RUN lines in the proxy
# log separate them (written once the proxy has ended every connection of the run).
kill_runs() {
	k=0
	while [ $k -lt "$KILLS" ]; do
		k=$((k + 1))
		echo "RUN $k" >>"$LOG"
		base=$(ups)
		$S --state "$ST" --bwlimit 24M sync --name big "$SRC" >"$T_DIR/run.$k" 2>&1 &
		pid=$!
		if [ "$(fault_rand 4)" -eq 0 ]; then
			# Anywhere else in the run: at once (starting, scanning) or after 1..11 more
			# packets other than blocks (LOGIN, SAVE, GET, LIST, DATA, PUTMANY: the plan,
			# the checks and the snapshot's recording).
			want=$(($(pkts) + $(fault_rand 12)))
			wait_for "[ \$(pkts) -ge $want ] || ! kill -0 $pid" 600 || return 1
		else
			# After 1..60 more blocks have left the client.
			want=$((base + 1 + $(fault_rand 60)))
			wait_for "[ \$(ups) -ge $want ] || ! kill -0 $pid" 600 || return 1
		fi
		kill -9 $pid 2>/dev/null
		wait $pid
		rc=$?
		echo "kill $k: rc $rc, packets $base..$(ups)"
		[ $rc -eq 137 ] || [ $rc -eq 0 ] || { cat "$T_DIR/run.$k"; return 1; }
		wait_for "proxy_idle count" 400 || return 1
		[ $rc -eq 137 ] && echo "$k" >>"$T_DIR/kills"
	done
	echo "RUN final" >>"$LOG"
	return 0
}

ok "sync killed $KILLS times at random moments" 'kill_runs'
ok 'the run after the kills completes' '
	$S --state "$ST" --json sync --name big "$SRC" >final.json &&
	wait_for "proxy_idle count" 400'
ok 'restore with a fresh state is byte-identical (diff -r and metadata)' '
	$S --state "$T_DIR/fresh.db" restore --name big --to "$T_DIR/out" &&
	diff -r "$SRC" "$T_DIR/out" && same_tree "$SRC" "$T_DIR/out"'
ok 'every committed object on the server verifies' 'verify_objects $STEPD_PORT demo'

# resent LOG — per run: UPLOAD bytes of blocks an earlier run had already sent, plus the
# bytes of packets a kill cut off. Prints "kills total max mean".
resent() {
	python3 - "$LOG" "$T_DIR/kills" <<'PY'
import sys
seen, run, per, cut = {}, None, {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if not f:
        continue
    if f[0] == "RUN":
        run = f[1]
        per.setdefault(run, 0)
        cut.setdefault(run, 0)
    elif f[0] == "UP" and run is not None:
        k, n = (f[1], f[2]), int(f[3])
        if k in seen:
            per[run] += n
        seen[k] = 1
    elif f[0] == "CUT" and run is not None:
        cut[run] += int(f[1])
runs = [r for r in per if r != "final"]
try:
    killed = set(open(sys.argv[2]).read().split())
except OSError:
    killed = set()
order = runs + ["final"]
# Kill k's cost: what run k+1 sent again, plus what the kill cut off in run k.
costs = []
for i, r in enumerate(runs):
    if r in killed:
        costs.append(cut[r] + per[order[i + 1]])
n = len(costs)
print(n, sum(costs), max(costs) if costs else 0, sum(costs) // n if n else 0)
PY
}

# One window of 32 blocks of 64 KiB, the 64 blocks between progress commits, and the
# small files in flight (64 per connection, 4 connections, up to 16 KiB each).
BOUND=$(((32 + 64) * 65536 + 256 * 16384))
ok 'bytes sent again per kill stay within one window plus a progress batch' '
	set -- $(resent) && echo "kills=$1 total=$2 max=$3 mean=$4 bound=$BOUND" &&
	[ "$1" -ge 1 ] && [ "$3" -le $BOUND ]'
set -- $(resent)
lost=$(cd "$SRC" && find . -type f | while read -r f; do cmp -s "$f" "$T_DIR/out/$f" || echo "$f"; done | wc -l)
diag "faults: kills=$1 bytes_resent=$2 bytes_resent_per_kill_max=$3 bytes_resent_per_kill_mean=$4 (bound $BOUND) files_lost=$lost"
ok 'no file lost' "[ $lost -eq 0 ]"
t_stop 'stepd exits 0 on SIGTERM'
done_testing
