#!/bin/sh
# t3160-watch-stop.sh — SIGTERM while `stepsync watch` is in the middle of a long upload
# (rate-limited) stops the upload between blocks instead of waiting for it: the watcher
# exits 0 with the upload unfinished on the server, its changes stay queued, and a
# restarted watcher resumes the upload (it sends only what the server lacks) and records
# a snapshot that restores exactly.
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

ok 'the watcher is a quarter into the large file' '
	wait_for "[ \"\$(progress)\" -ge 25 ]" 600'
kill -TERM $WATCH_PID
ok 'SIGTERM during the upload: the watcher exits long before the upload could finish' '
	wait_for "! kill -0 $WATCH_PID" 100'
wait $WATCH_PID
rc=$?
ok 'it exits 0' '[ $rc -eq 0 ]'
ok 'the upload is unfinished: no snapshot, a partial upload recorded, changes queued' '
	[ "$($SS --state "$T_DIR/r.db" snapshots --name W 2>/dev/null | grep -c "^[0-9]")" -eq 0 ] &&
	p=$(progress) && [ "$p" -gt 0 ] && [ "$p" -lt 100 ] &&
	$SW status >st && grep -q "^pending changes: [1-9]" st || { cat st; false; }'
start_watch
ok 'a restarted watcher resumes and records a snapshot that restores exactly' '
	wait_for "[ \"\$($SS --state $T_DIR/r.db snapshots --name W 2>/dev/null | grep -c \"^[0-9]\")\" -ge 1 ]" 600 &&
	$SS --state "$T_DIR/fresh.db" restore --name W --to "$T_DIR/out" &&
	cmp "$D/large.bin" "$T_DIR/out/large.bin"'
# 384 blocks of 64 KiB; a quarter had been acknowledged, so a run that started over
# would send well over 384 + one window.
ok 'the resumed upload did not start over (UPLOADs sent by both runs)' '
	n=$(uploads) && echo "content UPLOADs: $n" && [ "$n" -ge 384 ] && [ "$n" -le 448 ]'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok 'SIGTERM when idle exits 0' '[ $rc -eq 0 ]'
done_testing
