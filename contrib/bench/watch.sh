#!/bin/bash
# contrib/bench/watch.sh — `stepsync watch` figures of issue 13 for bench.sh (loopback
# only), for each size in WATCH_SIZES (default "100000"; the issue's goals are for
# 1000000, and the figures at 100000 beside them show the growth): a tree of N files of
# 20..80 bytes in N/100 directories, three levels deep, built here (a million files takes
# minutes), then
#   - a no-change `stepsync sync` of it vs the watcher's start-up (until "watching", and
#     until its start-up run, a no-change sync too, has finished)
#   - the watcher's RSS at the start-up scan (peak) and while idle
#   - one-file change -> snapshot listed (which is when it can be restored), p50 / p99 over
#     WATCH_CHANGES changes (default 20) with the default 1000 ms debounce, each a 100-byte
#     file rewritten in a directory 3 levels down; CPU of watcher + stepd per change; bytes
#     stored by stepd per change, vs the goal (the file + 16 KiB per directory level)
#   - a burst of WATCH_BURST (default 10000) new files in 100 directories at once, until
#     the queue is empty and a snapshot holds them, vs a one-shot `sync` of a burst of the
#     same size (the watcher stopped)
# One restore at the end checks that the last snapshot is the tree. Run by bench.sh with
# BIN, TOP, W (scratch) and SSPW (a password file whose content is the user name; stepd
# runs with --auth open). Nothing is asserted.
set -u
: "${BIN:?}" "${TOP:?}" "${W:?}" "${SSPW:?}"
SIZES=${WATCH_SIZES:-100000}
CHANGES=${WATCH_CHANGES:-20}
BURST=${WATCH_BURST:-10000}
X=$W/watch-bench
PIDS=""
cleanup() {
	exec 3<&- 2>/dev/null
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT

row() { printf '%-58s %10s %10s %8s\n' "$@"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
wait_file() { n=0; while [ ! -s "$1" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n + 1)); done; [ -s "$1" ]; }
percentile() {
	sort -n "$2" | awk -v p="$1" '{ v[NR] = $1 } END { r = int((p * NR + 99) / 100); if (r < 1) r = 1; print v[r] }'
}
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
stored() { du -sb "$X/root" | cut -f1; }
pending() {
	"${SS[@]}" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending"])'
}

# start_watch NAME DIR — the watcher with its stdout on fd 3 (a FIFO); sets WPID.
start_watch() {
	rm -f "$X/out.fifo"
	mkfifo "$X/out.fifo"
	"${SS[@]}" -v watch --name "$1" "$2" >"$X/out.fifo" 2>>"$X/watch.err" &
	WPID=$!
	PIDS="$PIDS $WPID"
	exec 3<"$X/out.fifo"
}
stop_watch() {
	kill "$WPID"
	wait "$WPID"
	exec 3<&-
}

# next_line REGEX — reads the watcher's output until a line matches (each line within
# TIMEOUT seconds, at most 1000 lines); sets LINE.
next_line() {
	local i
	for ((i = 0; i < 1000; i++)); do
		IFS= read -r -t "${TIMEOUT:-120}" LINE <&3 || return 1
		[[ $LINE =~ $1 ]] && return 0
	done
	return 1
}

# build_tree DIR N — N files in N/100 directories, 3 levels deep (d/d/d).
build_tree() {
	python3 - "$1" "$2" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
ndirs = max(1, n // 100)
for i in range(n):
    k = i % ndirs
    d = os.path.join(root, "a%03d" % (k // 1000), "b%03d" % (k // 10 % 100), "c%05d" % k)
    if i < ndirs:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%07d" % i), "w") as f:
        f.write("file %d %s\n" % (i, "x" * (i % 60)))
PY
}

# burst DIR TAG — BURST new files in 100 new directories.
burst() {
	python3 - "$1" "$2" "$BURST" <<'PY'
import os, sys
root, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, "burst-%s" % tag, "d%03d" % (i % 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "w") as f:
        f.write("%s %d\n" % (tag, i))
PY
}

one_size() {
	local nf=$1 T=$X/t$1 i t0 t1 c0 c1 s0 s1 nsync ready run
	rm -rf "$X" && mkdir -p "$X"
	"$BIN/stepd" --bind 127.0.0.1 --port 0 --port-file "$X/port" --root "$X/root" --init --auth open -q \
		>"$X/stepd.log" 2>&1 &
	SPID=$!
	PIDS="$PIDS $SPID"
	wait_file "$X/port" || { echo "# watch: stepd did not start"; return 1; }
	SS=("$BIN/stepsync" --server "127.0.0.1:$(cat "$X/port")" --user "$(head -n 1 "$SSPW")"
		--password-file "$SSPW" --state "$X/state.db")
	t0=$EPOCHREALTIME
	build_tree "$T" "$nf"
	echo "## watch, $nf files in $((nf / 100)) directories (built in $(secs "$t0" "$EPOCHREALTIME") s)"
	"${SS[@]}" -q sync --name W "$T" || { echo "# watch: first sync failed"; return 1; }
	t0=$EPOCHREALTIME
	"${SS[@]}" -q sync --skip-unchanged --name W "$T"
	nsync=$(secs "$t0" "$EPOCHREALTIME")
	row "no-change sync of $nf files" "$nsync" "" ""

	t0=$EPOCHREALTIME
	start_watch W "$T"
	next_line '^watching ' || { echo "# watch: no ready line"; return 1; }
	ready=$(secs "$t0" "$EPOCHREALTIME")
	TIMEOUT=3600 next_line '^snapshot W#' || { echo "# watch: no start-up run"; return 1; }
	run=$(secs "$t0" "$EPOCHREALTIME")
	row "watch start-up until \"watching\" (vs no-change sync)" "$ready" "" "$(ratio "$ready" "$nsync")"
	row "watch start-up until its start-up run is done (vs sync)" "$run" "" "$(ratio "$run" "$nsync")"
	row "watch RSS peak at the start-up scan (MiB; goal 128)" \
		"$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$WPID/status")" "" ""

	: >"$X/lat.s"
	c0=$(($(cpu_ticks "$WPID") + $(cpu_ticks "$SPID")))
	w0=$(cpu_ticks "$WPID")
	s0=$(stored)
	for ((i = 1; i <= CHANGES; i++)); do
		k=$(((i * 7919) % (nf / 100)))
		f="$T/a$(printf %03d $((k / 1000)))/b$(printf %03d $((k / 10 % 100)))/c$(printf %05d $k)/f$(printf %07d $k)"
		t0=$EPOCHREALTIME
		head -c 100 /dev/urandom >"$f"
		next_line '^snapshot W#' || { echo "# watch: change $i never reached a snapshot"; return 1; }
		secs "$t0" "$EPOCHREALTIME" >>"$X/lat.s"
		echo >>"$X/lat.s"
	done
	c1=$(($(cpu_ticks "$WPID") + $(cpu_ticks "$SPID")))
	w1=$(cpu_ticks "$WPID")
	s1=$(stored)
	row "one-file change -> snapshot listed, p50 (goal 1.2 s)" "$(percentile 50 "$X/lat.s")" "" ""
	row "one-file change -> snapshot listed, p99 (goal 1.5 s)" "$(percentile 99 "$X/lat.s")" "" ""
	row "CPU of watcher + stepd per one-file change, ms (goal 20)" \
		"$(awk -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v k="$CHANGES" 'BEGIN { printf "%.1f", c * 1000 / hz / k }')" "" ""
	row "  of which the watcher's, ms" \
		"$(awk -v c=$((w1 - w0)) -v hz="$(getconf CLK_TCK)" -v k="$CHANGES" 'BEGIN { printf "%.1f", c * 1000 / hz / k }')" "" ""
	row "bytes stored per one-file change (goal 100 + 4 x 16384)" \
		"$(((s1 - s0) / CHANGES))" "" ""
	grep 'incremental run' "$X/watch.err" | tail -n 1 | sed 's/^/# last: /'
	sleep 5 # the idle window: the watcher is left alone
	row "watch RSS while idle (MiB; goal 64)" \
		"$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$WPID/status")" "" ""

	t0=$EPOCHREALTIME
	burst "$T" w
	t1=$EPOCHREALTIME
	i=0
	until next_line '^snapshot W#' && [ "$(pending)" = 0 ]; do
		i=$((i + 1))
		[ $i -gt 50 ] && { echo "# watch: the burst never settled"; return 1; }
	done
	bw=$(secs "$t1" "$EPOCHREALTIME")
	stop_watch
	t0=$EPOCHREALTIME
	burst "$T" s
	t1=$EPOCHREALTIME
	"${SS[@]}" -q sync --name W "$T"
	bs=$(secs "$t1" "$EPOCHREALTIME")
	row "burst of $BURST files: watcher, end of writes -> snapshot" "$bw" "" ""
	row "burst of $BURST files: one-shot sync (goal: watcher <= 1.2x)" "$bs" "" "$(ratio "$bw" "$bs")"
	bw=$(awk -v a="$bw" 'BEGIN { printf "%.3f", a - 1 }')
	row "burst of $BURST files: watcher minus its 1 s debounce" "$bw" "" "$(ratio "$bw" "$bs")"
	if "${SS[@]}" -q restore --name W --to "$X/restored" && diff -r "$T" "$X/restored" >/dev/null; then
		echo "# the last snapshot restores to the watched tree"
	else
		echo "# WARNING: the last snapshot does not restore to the watched tree"
	fi
	kill "$SPID"
	wait "$SPID" 2>/dev/null
	rm -rf "$X"
}

export STEPSYNC_CONFIG=$W/none.conf
for n in $SIZES; do
	one_size "$n"
done
