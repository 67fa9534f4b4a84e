#!/bin/sh
# t3000-watch-queue.sh — stepsync watch without a reachable server: readiness line,
# durable queue, status while running, SIGTERM exits 0 with the queue kept, the watch
# limit fallback, and clear errors for bad arguments.
. "$TOP/tests/lib.sh"

D=$T_DIR/data
ST=$T_DIR/state.db
mkdir -p "$D/sub"
echo seed >"$D/sub/seed.txt"
# Port 1 on loopback refuses connections: every sync fails, so changes stay queued.
SS="$BIN/stepsync --server 127.0.0.1:1 --user alice --state $ST"
export STEPSYNC_PASSWORD=alice STEPSYNC_CONFIG=$T_DIR/none.conf

start_watch() {
	: >"$T_DIR/watch.out"
	$SS watch --debounce 100 "$@" >"$T_DIR/watch.out" 2>"$T_DIR/watch.err" &
	WATCH_PID=$!
	track_pid $WATCH_PID
	wait_for "grep -q '^watching ' '$T_DIR/watch.out' || ! kill -0 $WATCH_PID" 200 &&
		grep -q '^watching ' "$T_DIR/watch.out"
}

pending() {
	$SS status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending"])'
}

ok "watch of a missing directory fails with a message" '
	expect_exit 1 $SS watch "$T_DIR/missing" 2>err &&
	grep -q "cannot watch" err
'
ok "watch rejects a bad --debounce" '
	expect_exit 2 $SS watch --debounce soon "$D" 2>/dev/null
'
start_watch --prometheus "$T_DIR/metrics.prom" "$D"
ok "watch prints its readiness line once the watches are in place" '
	grep -q "^watching 1 directories (2 inotify watches)" "$T_DIR/watch.out"
'
ok "status shows the running watcher" '
	$SS status >st && grep -q "watch: running (pid $WATCH_PID)" st
'
ok "changes are queued durably while the server is unreachable" '
	echo a >"$D/new.txt" && mkdir -p "$D/deep/er" && echo b >"$D/deep/er/f.txt" &&
	mv "$D/sub/seed.txt" "$D/moved.txt" && rm "$D/new.txt" &&
	wait_for "[ \$(pending) -ge 5 ]" 200
'
ok "the failed sync is reported as the last error" '
	wait_for "$SS status | grep -q \"^last error: .*at \"" 200
'
ok "the prometheus textfile reports pending changes and errors" '
	wait_for "grep -q \"^stepsync_errors_total [1-9]\" \"$T_DIR/metrics.prom\"" 200 &&
	grep -q "^stepsync_files_pending [1-9]" "$T_DIR/metrics.prom" &&
	grep -q "^stepsync_last_success_timestamp_seconds 0" "$T_DIR/metrics.prom"
'
ok "a new directory is watched: a file created in it later is queued" '
	before=$(pending) && echo c >"$D/deep/er/g.txt" &&
	wait_for "[ \$(pending) -gt $before ]" 200
'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "SIGTERM stops the watcher with exit status 0" '[ $rc -eq 0 ]'
ok "the queue survives the stop" '
	[ $(pending) -ge 6 ] && $SS status | grep -q "watch: not running"
'
n=$(pending)
start_watch "$D"
ok "a restarted watcher keeps the queued changes" '[ $(pending) -ge $n ]'
kill -TERM $WATCH_PID
wait $WATCH_PID
start_watch --max-watches 2 "$D"
ok "running out of watches warns, names max_user_watches and keeps running" '
	grep -q "/proc/sys/fs/inotify/max_user_watches" "$T_DIR/watch.err" &&
	grep -q "(2 inotify watches)" "$T_DIR/watch.out" && kill -0 $WATCH_PID
'
ok "changes in an unwatched directory are found by the fallback scan" '
	python3 - "$ST" <<PY &&
import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.execute("DELETE FROM watch_queue"); db.commit()
PY
	echo late >"$D/deep/er/late.txt" &&
	wait_for "[ \$(pending) -ge 1 ]" 200
'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "the watcher with the fallback scan also stops with exit status 0" '[ $rc -eq 0 ]'
ok "status --json is one valid JSON object" '
	$SS status --json | python3 -c "import json,sys; o=json.load(sys.stdin); assert o[\"watch_pid\"] is None and o[\"errors\"] >= 1"
'
done_testing
