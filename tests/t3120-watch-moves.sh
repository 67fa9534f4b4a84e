#!/bin/sh
# t3120-watch-moves.sh — what `stepsync watch` sends, counted on the wire by a pass-through
# proxy (tests/peers/faultproxy.py --count logs every UPLOAD packet; content objects are
# "o." keys, the snapshot's own manifest is uploaded too): renames of a file and
# of a directory send no content and the renamed directory stays watched; a file moved out
# of the tree is deleted from the next snapshot; a directory moved in is watched and
# scanned; a file still being written reaches a later snapshot complete once it settles;
# the Prometheus textfile after successful syncs; `stepsync status` shows an upload in
# progress with its percentage while a (rate-limited) watcher sends a large file.
. "$TOP/tests/lib.sh"
. "$TOP/tests/fault_lib.sh"
. "$TOP/tests/watch_lib.sh"

start_stepd --auth open || exit 1
start_proxy count --count --fault-rate 0 || exit 1
watch_init
O=$T_DIR/outside
mkdir -p "$D/docs" "$O/incoming/deeper"
echo seed >"$D/seed.txt"
echo in >"$O/incoming/deeper/in.txt"
# The watcher goes through the proxy; the test's own reads ($SR) go to stepd directly.
SW="$BIN/stepsync --server 127.0.0.1:$PROXY_PORT --user w --password-file $T_DIR/pw --timeout 5 --state $T_DIR/watch.db"
PROM=$T_DIR/metrics.prom

start_watch() {
	$SW "$@" watch --name W --debounce 200 --prometheus "$PROM" "$D" \
		>>"$T_DIR/watch.out" 2>>"$T_DIR/watch.err" &
	WATCH_PID=$!
	track_pid $WATCH_PID
	n0=$(grep -c '^watching ' "$T_DIR/watch.out" 2>/dev/null)
	wait_for "[ \$(grep -c '^watching ' '$T_DIR/watch.out') -gt ${n0:-0} ] || ! kill -0 $WATCH_PID" 400
}
# uploads — UPLOAD packets of file content ("o." keys; a snapshot's manifest is "s.NAME.SEQ")
# and PUTMANY packets (content objects only) the watcher sent through the proxy so far.
uploads() {
	awk '/^UP "o\./ || /^PKT PUTMANY / { n++ } END { print n + 0 }' "$T_DIR/count.log"
}
status_json() {
	$SW status --json | python3 -c "import json,sys; o=json.load(sys.stdin); $1"
}

start_watch
ok "the watcher starts through the counting proxy" 'kill -0 $WATCH_PID && arrives'
ok "a new file is sent (the proxy sees its UPLOAD packets)" '
	u=$(uploads) && head -c 300001 /dev/urandom >"$D/docs/big.bin" && arrives &&
	[ $(uploads) -gt $u ]
'
ok "the Prometheus textfile reports the successful syncs" '
	wait_for "grep -q \"^stepsync_files_pending 0\" \"$PROM\"" 200 &&
	awk "/^stepsync_last_success_timestamp_seconds / { t = \$2 } END { exit !(t > 0) }" "$PROM" &&
	awk "/^stepsync_bytes_sent_total / { b = \$2 } END { exit !(b >= 300001) }" "$PROM" &&
	grep -q "^stepsync_errors_total 0" "$PROM"
'
ok "a renamed file reaches the next snapshot and no UPLOAD goes on the wire" '
	u=$(uploads) && mv "$D/docs/big.bin" "$D/docs/moved.bin" && arrives &&
	[ $(uploads) -eq $u ] &&
	wait_for "tail -n 1 \"$T_DIR/watch.out\" | grep -q \"sent 0 files (0 bytes)\"" 200
'
ok "a renamed directory sends nothing and stays watched under its new name" '
	u=$(uploads) && mv "$D/docs" "$D/papers" && arrives && [ $(uploads) -eq $u ] &&
	mkdir "$D/papers/new" && echo fresh >"$D/papers/new/fresh.txt" && arrives
'
ok "a file moved out of the tree is deleted from the next snapshot" '
	mv "$D/seed.txt" "$O/seed.txt" && arrives &&
	[ ! -e "$T_DIR/restore.$(cat "$T_DIR/seen")/seed.txt" ]
'
ok "a directory moved into the tree is watched and scanned" '
	mv "$O/incoming" "$D/incoming" && arrives &&
	[ -f "$T_DIR/restore.$(cat "$T_DIR/seen")/incoming/deeper/in.txt" ] &&
	echo after >"$D/incoming/deeper/after.txt" && arrives
'

# A writer that keeps the file open: the first half, then (when told) the rest.
python3 - "$D/growing.bin" "$T_DIR/go" >"$T_DIR/writer.out" 2>&1 <<'PY' &
import os, sys, time
f = open(sys.argv[1], "wb")
f.write(b"a" * 100000)
f.flush()
for _ in range(1200):  # bounded: at most 60 s
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.05)
f.write(b"b" * 100000)
f.close()
PY
WRITER=$!
ok "a file still being written is snapshotted as it is so far" '
	wait_for "[ \$(stat -c %s \"$D/growing.bin\" 2>/dev/null || echo 0) -eq 100000 ]" 200 &&
	arrives
'
touch "$T_DIR/go"
wait $WRITER
ok "once it settles, the next snapshot holds the complete file" '
	arrives && [ $(stat -c %s "$T_DIR/restore.$(cat "$T_DIR/seen")/growing.bin") -eq 200000 ]
'

kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "SIGTERM exits 0" '[ $rc -eq 0 ]'

start_watch --bwlimit 256K
ok "a restarted watcher that finds nothing new records no new snapshot" '
	kill -0 $WATCH_PID && wait_for "status_json \"sys.exit(o[\\\"pending\\\"] != 0)\"" 400 &&
	wait_for "tail -n 1 \"$T_DIR/watch.out\" | grep -q unchanged" 200 &&
	[ "$(latest)" -eq "$(cat "$T_DIR/seen")" ]
'
ok "a large file written while watch runs arrives; no upload is left in progress" '
	head -c 1000000 /dev/urandom >"$D/large.bin" && arrives && status_json "sys.exit(len(o[\"uploads\"]) != 0)"
'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "the rate-limited watcher also exits 0 on SIGTERM" '[ $rc -eq 0 ]'
done_testing
