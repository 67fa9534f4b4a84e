#!/bin/sh
# t3160-watch-stop.sh — SIGTERM while `stepsync watch` is in the middle of a long upload
# (rate-limited) stops the upload instead of waiting for it: the watcher exits 0 with the
# large file's chunks partly on the server, its changes stay queued, and a restarted
# watcher sends only the chunks the server lacks and records a snapshot that restores
# exactly.
. "$TOP/tests/lib.sh"
. "$TOP/tests/fault_lib.sh"

start_stepd --auth open || exit 1
# The watcher goes through a counting pass-through proxy: every UPLOAD is logged.
start_proxy count --count --fault-rate 0 || exit 1
echo w >"$T_DIR/pw"
export STEPSYNC_CONFIG=$T_DIR/none.conf
D=$T_DIR/data
mkdir -p "$D"
# 24 MiB at 1 MiB/s: the upload takes about 24 s unless it is stopped.
head -c 25165824 /dev/urandom >"$D/large.bin"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user w --password-file $T_DIR/pw --timeout 5"
SW="$BIN/stepsync --server 127.0.0.1:$PROXY_PORT --user w --password-file $T_DIR/pw --timeout 5 --state $T_DIR/watch.db"

start_watch() {
	: >"$T_DIR/watch.out"
	$SW "$@" watch --name W --debounce 100 "$D" >"$T_DIR/watch.out" 2>"$T_DIR/watch.err" &
	WATCH_PID=$!
	track_pid $WATCH_PID
}
# progress — percentage of the upload in progress, 0 when there is none.
progress() {
	$SW status --json 2>/dev/null | python3 -c '
import json, sys
u = json.load(sys.stdin)["uploads"]
print(u[0]["percent"] if u else 0)'
}

start_watch --bwlimit 1M
# content UPLOADs (and PUTMANYs) sent so far ("o." keys; the snapshot manifest is "s.NAME.SEQ")
uploads() {
	awk '/^UP "o\./ || /^PKT PUTMANY / { n++ } END { print n + 0 }' "$T_DIR/count.log"
}

ok 'the watcher is a quarter into the large file (a quarter of its chunks went up)' '
	wait_for "[ \$(uploads) -ge 12 ]" 600'
kill -TERM $WATCH_PID
ok 'SIGTERM during the upload: the watcher exits long before the upload could finish' '
	wait_for "! kill -0 $WATCH_PID" 100'
wait $WATCH_PID
rc=$?
ok 'it exits 0' '[ $rc -eq 0 ]'
ok 'the upload is unfinished: no snapshot, changes queued' '
	[ "$($SS --state "$T_DIR/r.db" snapshots --name W 2>/dev/null | grep -c "^[0-9]")" -eq 0 ] &&
	[ "$(uploads)" -lt 40 ] &&
	$SW status >st && grep -q "^pending changes: [1-9]" st || { cat st; false; }'
start_watch
ok 'a restarted watcher resumes and records a snapshot that restores exactly' '
	wait_for "[ \"\$($SS --state $T_DIR/r.db snapshots --name W 2>/dev/null | grep -c \"^[0-9]\")\" -ge 1 ]" 600 &&
	$SS --state "$T_DIR/fresh.db" restore --name W --to "$T_DIR/out" &&
	cmp "$D/large.bin" "$T_DIR/out/large.bin"'
# Each chunk (about 448 KiB) goes up in one UPLOAD: a run that started over would send
# every chunk again; the chunks in flight when the first run stopped (one on each of
# its 32 connections) are all that may be sent twice.
ok 'the resumed upload did not start over (content UPLOADs of both runs)' '
	$SS --json check --name W >"$T_DIR/check.json" &&
	c=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[\"objects\"])" "$T_DIR/check.json") &&
	n=$(uploads) && echo "content UPLOADs: $n for $c chunks" &&
	[ "$n" -ge "$c" ] && [ "$n" -le "$((c + 32))" ]'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok 'SIGTERM when idle exits 0' '[ $rc -eq 0 ]'
done_testing
