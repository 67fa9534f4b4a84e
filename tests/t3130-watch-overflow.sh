#!/bin/sh
# t3130-watch-overflow.sh — IN_Q_OVERFLOW: with the kernel's per-instance event queue
# made tiny (fs.inotify.max_queued_events, read when the watcher creates its inotify
# instance, restored at once), a watcher stopped with SIGSTOP misses the events of 200
# new files and a new directory. The overflow must trigger a rescan that puts all of them
# in a snapshot, and the directory created during the overflow must be watched afterwards.
# The rescan is exactly one full run (the engine's count in `status --json`); the changes
# after it are synced incrementally again. Needs root to write the sysctl; skipped
# otherwise.
. "$TOP/tests/lib.sh"
. "$TOP/tests/watch_lib.sh"

Q=/proc/sys/fs/inotify/max_queued_events
if ! old_q=$(cat "$Q" 2>/dev/null) || ! { echo "$old_q" >"$Q"; } 2>/dev/null; then
	echo "1..0 # SKIP $Q is not writable (needs root)"
	exit 0
fi
trap 'echo "$old_q" >"$Q"; t_cleanup' EXIT

start_stepd --auth open || exit 1
watch_init
mkdir -p "$D/sub"
echo seed >"$D/sub/seed.txt"
SW="$SS --state $T_DIR/watch.db"

# st FIELD — an integer field of the watcher's `status --json`.
st() {
	$SW status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

echo 16 >"$Q"
$SW -v watch --name W --debounce 100 "$D" >"$T_DIR/watch.out" 2>"$T_DIR/watch.err" &
WATCH_PID=$!
track_pid $WATCH_PID
wait_for "grep -q '^watching ' '$T_DIR/watch.out' || ! kill -0 $WATCH_PID" 400
echo "$old_q" >"$Q"
ok "the watcher starts with a 16-event inotify queue (the sysctl is restored)" '
	grep -q "^watching 1 directory (2 inotify watches)" "$T_DIR/watch.out" &&
	[ "$(cat $Q)" = "$old_q" ]
'
ok "its first snapshot is restorable" 'arrives'

kill -STOP $WATCH_PID
i=0
while [ $i -lt 200 ]; do
	echo "file $i" >"$D/sub/f$i.txt"
	i=$((i + 1))
done
mkdir "$D/late"
echo early >"$D/late/early.txt"
kill -CONT $WATCH_PID
ok "the overflow is noticed and logged" '
	wait_for "grep -q \"inotify queue overflowed; rescanning everything\" \"$T_DIR/watch.err\"" 400
'
ok "the rescan puts every file whose event was lost in a snapshot" '
	arrives && [ $(ls "$T_DIR/restore.$(cat "$T_DIR/seen")/sub" | wc -l) -eq 201 ]
'
ok "the overflow made exactly one full run more than the start-up scan" '
	[ "$(st full_runs)" = 2 ]
'
ok "a directory created during the overflow is watched afterwards" '
	echo later >"$D/late/later.txt" && arrives
'
ok "...and synced by an incremental run: still exactly one full rescan for the overflow" '
	[ "$(st full_runs)" = 2 ] && [ "$(st last_run_incremental)" = 1 ] &&
	[ "$(st last_dirs_scanned)" = 2 ]
'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "SIGTERM after the overflow exits 0" '[ $rc -eq 0 ]'
done_testing
