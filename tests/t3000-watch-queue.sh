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

# queued PATH [KIND] — PATH (relative to the watched dir) has a queue row (of KIND).
queued() {
	python3 - "$ST" "$1" "${2:-0}" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
k = int(sys.argv[3])
n = db.execute("SELECT count(*) FROM watch_queue WHERE path = ? AND (? = 0 OR kind = ?)",
               (sys.argv[2], k, k)).fetchone()[0]
sys.exit(0 if n else 1)
PY
}

clear_queue() {
	python3 - "$ST" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.execute("DELETE FROM watch_queue"); db.commit()
PY
}

pending() {
	$SS status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending"])'
}

ok "watch of a missing directory fails with a message" '
	expect_exit 1 $SS watch "$T_DIR/missing" 2>err &&
	grep -q "cannot watch" err
'
ok "watch --help describes every option with its default" '
	$SS watch --help >h && for o in --name --debounce --rescan --prometheus --syslog; do
		grep -q -- "^  $o " h || { echo "missing $o"; exit 1; }; done &&
	grep -q "default 1000" h && grep -q "else 21600, six hours" h &&
	grep -q "max_user_watches" h && grep -q "exit status" h &&
	! grep -q -- "--max-watches" h
'
ok "status --help describes --json" '
	$SS status --help >h && grep -q -- "^  --json " h && grep -q "readable while watch runs" h
'
ok "watch rejects a bad --debounce" '
	expect_exit 2 $SS watch --debounce soon "$D" 2>/dev/null
'
start_watch --prometheus "$T_DIR/metrics.prom" "$D"
ok "watch prints its readiness line once the watches are in place" '
	grep -q "^watching 1 directory (2 inotify watches)" "$T_DIR/watch.out"
'
ok "status shows the running watcher" '
	$SS status >st && grep -q "watch: running (pid $WATCH_PID)" st
'
ok "changes are queued durably while the server is unreachable" '
	echo a >"$D/new.txt" && mkdir -p "$D/deep/er" && echo b >"$D/deep/er/f.txt" &&
	mv "$D/sub/seed.txt" "$D/moved.txt" && rm "$D/new.txt" &&
	wait_for "[ \$(pending) -ge 5 ]" 200
'
ok "the unreachable server is retried with a doubling delay" '
	wait_for "grep -q \"next try in 2000 ms\" \"$T_DIR/watch.err\"" 800 &&
	grep -o "next try in [0-9]* ms" "$T_DIR/watch.err" | head -n 3 >tries &&
	printf "next try in %s ms\n" 500 1000 2000 | cmp - tries
'
ok "the failed sync is reported as the last error, with the sync engine's reason" '
	wait_for "$SS status | grep -q \"^last error: .*at \"" 200 &&
	$SS status | grep -q "^last error: sync '"'"'data'"'"': .* (sync exited with status [0-9]*) (at "
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
ok "a change queued by the restarted watcher is in the database at once" '
	echo k >"$D/killed.txt" && wait_for "queued killed.txt" 200
'
kill -KILL $WATCH_PID
{ wait $WATCH_PID; } 2>/dev/null # the shell would report "Killed"
ok "SIGKILL of the watcher loses no queued change" '
	queued killed.txt && queued deep/er/g.txt && [ $(pending) -ge $((n + 1)) ]
'
start_watch "$D"
ok "the watcher restarted after SIGKILL keeps them" '
	queued killed.txt && queued deep/er/g.txt && $SS status | grep -q "watch: running"
'
kill -TERM $WATCH_PID
wait $WATCH_PID
start_watch --rescan 1 "$D"
ok "--rescan: the periodic full rescan queues every directory again" '
	clear_queue && wait_for "queued \"\" 4" 100
'
kill -TERM $WATCH_PID
wait $WATCH_PID
start_watch --max-watches 2 "$D"
ok "running out of watches warns, names max_user_watches and keeps running" '
	grep -q "/proc/sys/fs/inotify/max_user_watches" "$T_DIR/watch.err" &&
	grep -q "(2 inotify watches)" "$T_DIR/watch.out" && kill -0 $WATCH_PID
'
ok "changes in an unwatched directory are found by the fallback scan" '
	clear_queue &&
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
