#!/bin/bash
# contrib/bench/watch-latency.sh — `stepsync watch` figures for bench.sh (loopback only):
#   1. latency from a change (one new file) to its restorable snapshot, p50 and p99 over
#      WATCH_BENCH_N changes (default 100) with the default debounce of 1000 ms. The end
#      of a measurement is the watcher printing "snapshot NAME#SEQ: F files ...", which
#      the sync engine prints only after the manifest and its DATA record are on the
#      server — the moment `stepsync snapshots` lists it — and F tells that the snapshot
#      holds the new file. One restore at the end checks that the last snapshot is whole.
#   2. the agent's CPU time and RSS while idly watching WATCH_IDLE_N files (default
#      100000, in 1,000 directories) after the initial sync, over WATCH_IDLE_S seconds
#      (default 10), from /proc/PID/stat and /proc/PID/status.
#   3. latency from a change to its snapshot in that large tree, p50 and max over
#      WATCH_BIG_N changes (default 10): each settled batch is a sync of the whole tree.
# Run by bench.sh with BIN, TOP, W (a scratch directory) and SSPW (a password file whose
# content is the user name; stepd runs with --auth open). Nothing is asserted.
set -u
: "${BIN:?}" "${TOP:?}" "${W:?}" "${SSPW:?}"
N=${WATCH_BENCH_N:-100}
IDLE_N=${WATCH_IDLE_N:-100000}
IDLE_S=${WATCH_IDLE_S:-10}
BIG_N=${WATCH_BIG_N:-10}
X=$W/watch-bench
rm -rf "$X"
mkdir -p "$X"
PIDS=""
cleanup() {
	exec 3<&- 2>/dev/null
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT

row() { printf '%-58s %10s %10s %8s\n' "$@"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
wait_file() { n=0; while [ ! -s "$1" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n + 1)); done; [ -s "$1" ]; }

"$BIN/stepd" --bind 127.0.0.1 --port 0 --port-file "$X/port" --root "$X/root" --init --auth open -q \
	>"$X/stepd.log" 2>&1 &
PIDS="$PIDS $!"
wait_file "$X/port" || { echo "# watch-latency: stepd did not start"; cat "$X/stepd.log"; exit 1; }
USER_NAME=$(head -n 1 "$SSPW")
SS=("$BIN/stepsync" --server "127.0.0.1:$(cat "$X/port")" --user "$USER_NAME" --password-file "$SSPW"
	--state "$X/state.db")
export STEPSYNC_CONFIG=$X/none.conf

# start_watch NAME DIR — the watcher with its stdout on fd 3 (a FIFO); sets WPID.
start_watch() {
	rm -f "$X/out.fifo"
	mkfifo "$X/out.fifo"
	"${SS[@]}" watch --name "$1" "$2" >"$X/out.fifo" 2>>"$X/watch.err" &
	WPID=$!
	PIDS="$PIDS $WPID"
	exec 3<"$X/out.fifo"
}

# next_snapshot MINFILES — reads the watcher's output until a snapshot with at least
# MINFILES files is reported (at most 100 lines, each within TIMEOUT seconds); sets SNAP.
next_snapshot() {
	local line f i
	for ((i = 0; i < 100; i++)); do
		IFS= read -r -t "${TIMEOUT:-60}" line <&3 || return 1
		if [[ $line =~ ^snapshot\ ([^:]+):\ ([0-9]+)\ files ]]; then
			SNAP=${BASH_REMATCH[1]}
			f=${BASH_REMATCH[2]}
			[ "$f" -ge "$1" ] && return 0
		fi
	done
	return 1
}

# percentile P FILE — the P-th percentile (nearest rank) of the numbers in FILE.
percentile() {
	sort -n "$2" | awk -v p="$1" '{ v[NR] = $1 } END { r = int((p * NR + 99) / 100); if (r < 1) r = 1; print v[r] }'
}

# cpu_ticks PID — utime + stime of PID in clock ticks.
cpu_ticks() {
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# --- 1. latency ---
mkdir -p "$X/lat"
echo seed >"$X/lat/seed.txt"
start_watch lat "$X/lat"
next_snapshot 1 || { echo "# watch-latency: no initial snapshot"; tail -n 5 "$X/watch.err"; exit 1; }
: >"$X/lat.s"
ok=1
for ((i = 1; i <= N; i++)); do
	t0=$EPOCHREALTIME
	echo "change $i" >"$X/lat/c$i.txt"
	if ! next_snapshot $((i + 1)); then
		echo "# watch-latency: change $i never reached a snapshot"
		ok=0
		break
	fi
	t1=$EPOCHREALTIME
	secs "$t0" "$t1" >>"$X/lat.s"
	echo >>"$X/lat.s"
done
if [ $ok = 1 ]; then
	row "watch: change -> snapshot listed, p50 (debounce 1000 ms)" "$(percentile 50 "$X/lat.s")" "" ""
	row "watch: change -> snapshot listed, p99 ($N changes)" "$(percentile 99 "$X/lat.s")" "" ""
	if "${SS[@]}" -q restore --snapshot "$SNAP" --name lat --to "$X/lat.restored" &&
		diff -r "$X/lat" "$X/lat.restored" >/dev/null; then
		echo "# last snapshot $SNAP restores to the watched tree"
	else
		echo "# WARNING: last snapshot $SNAP does not restore to the watched tree"
	fi
fi
kill "$WPID"
wait "$WPID"
exec 3<&-

# --- 2. idle cost ---
python3 - "$X/idle" "$IDLE_N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i % 1000))
    if i < 1000:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "w") as f:
        f.write("file %d\n" % i)
PY
t0=$EPOCHREALTIME
start_watch idle "$X/idle"
if ! TIMEOUT=1800 next_snapshot "$IDLE_N"; then
	echo "# watch-latency: the initial sync of $IDLE_N files did not finish"
	tail -n 5 "$X/watch.err"
	exit 1
fi
t1=$EPOCHREALTIME
row "watch: initial sync of $IDLE_N files in 1000 dirs" "$(secs "$t0" "$t1")" "" ""
hz=$(getconf CLK_TCK)
c0=$(cpu_ticks "$WPID")
t0=$EPOCHREALTIME
sleep "$IDLE_S" # the measurement window: the watcher is left alone
c1=$(cpu_ticks "$WPID")
t1=$EPOCHREALTIME
wall=$(secs "$t0" "$t1")
cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN { printf "%.3f", (b - a) / hz }')
row "watch idle on $IDLE_N files: CPU seconds over ${wall} s" "$cpu" "" \
	"$(awk -v c="$cpu" -v w="$wall" 'BEGIN { printf "%.4f", c / w }')"
rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$WPID/status")
hwm=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$WPID/status")
row "watch idle on $IDLE_N files: VmRSS $rss MiB (peak $hwm MiB)" "" "" ""

# --- 3. latency in the large tree: every batch is a sync of the whole tree ---
: >"$X/big.s"
for ((i = 1; i <= BIG_N; i++)); do
	t0=$EPOCHREALTIME
	echo "change $i" >"$X/idle/d0000/c$i.txt"
	if ! TIMEOUT=600 next_snapshot $((IDLE_N + i)); then
		echo "# watch-latency: change $i in the large tree never reached a snapshot"
		break
	fi
	secs "$t0" "$EPOCHREALTIME" >>"$X/big.s"
	echo >>"$X/big.s"
done
if [ -s "$X/big.s" ]; then
	row "watch: change -> snapshot in the $IDLE_N-file tree, p50" "$(percentile 50 "$X/big.s")" "" ""
	row "watch: change -> snapshot in the $IDLE_N-file tree, max ($BIG_N)" "$(percentile 100 "$X/big.s")" "" ""
fi
rss=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$WPID/status")
row "watch on $IDLE_N files after these syncs: peak RSS $rss MiB" "" "" ""
kill "$WPID"
wait "$WPID"
rm -rf "$X"
