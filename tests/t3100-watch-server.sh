#!/bin/sh
# t3100-watch-server.sh — stepsync watch against a real stepd: every settled change
# becomes a snapshot that restores to exactly the watched tree (a new file, a nested
# directory, a rename that sends no content, a delete, a burst of 1,000 files); the
# server stopped and started again on the same port is caught up with; SIGTERM exits 0;
# a change queued while the server was down survives a restart of the watcher.
. "$TOP/tests/lib.sh"
. "$TOP/tests/watch_lib.sh"

start_stepd --auth open || exit 1
PORT=$STEPD_PORT
watch_init
echo seed >"$D/seed.txt"
# The watcher's state ($SR has the test's own, for its snapshots/restore calls).
SW="$SS --state $T_DIR/watch.db"

start_watch() {
	$SW watch --name W "$D" >>"$T_DIR/watch.out" 2>>"$T_DIR/watch.err" &
	WATCH_PID=$!
	track_pid $WATCH_PID
	n0=$1
	wait_for "[ \$(grep -c '^watching ' '$T_DIR/watch.out') -gt $n0 ] || ! kill -0 $WATCH_PID" 400 &&
		kill -0 $WATCH_PID
}

pending() {
	$SW status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending"])'
}

status_field() {
	$SW status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

start_watch 0
ok "watch prints its readiness line" 'grep -q "^watching 1 directory" "$T_DIR/watch.out"'
kill -0 "$WATCH_PID" 2>/dev/null || {
	cat "$T_DIR/watch.err"
	done_testing
	exit 1
}
ok "its first sync records a snapshot of the tree" 'arrives'

ok "a new file is in a restorable snapshot" '
	head -c 300001 /dev/urandom >"$D/big.bin" && echo hello >"$D/new.txt" && arrives
'

ok "status reports the snapshot ID and the bytes sent" '
	s=$(cat "$T_DIR/seen") &&
	wait_for "[ \"\$(status_field last_snapshot)\" = W#$s ]" 200 &&
	[ "$(status_field bytes_sent)" -ge 300001 ] &&
	$SW status | grep -q "^last snapshot: W#$s at "
'

ok "a new nested directory with files is in a restorable snapshot" '
	mkdir -p "$D/a/b/c" && echo 1 >"$D/a/one" && echo 2 >"$D/a/b/two" &&
	echo 3 >"$D/a/b/c/three" && mkdir "$D/a/b/c/empty" && arrives
'

# stored — bytes of the objects stepd holds (object files, and packs of one-block objects).
stored() {
	find "$STEPD_ROOT/obj" "$STEPD_ROOT/pack" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}

ok "a rename is in a restorable snapshot and sends no content" '
	sent=$(status_field bytes_sent) && s0=$(stored) && [ "$s0" -ge 300001 ] &&
	mv "$D/big.bin" "$D/a/b/renamed.bin" && arrives &&
	[ "$(status_field bytes_sent)" = "$sent" ] &&
	s1=$(stored) && echo "stored: $s0 bytes before, $s1 after" && [ $((s1 - s0)) -lt 100000 ] &&
	tail -n 1 "$T_DIR/watch.out" | grep -q "sent 0 files (0 bytes)"
'

ok "a delete is in a restorable snapshot" '
	rm "$D/new.txt" "$D/a/one" && arrives
'

ok "a burst of 1,000 files is restorable in full" '
	mkdir "$D/burst" &&
	i=0 && while [ $i -lt 1000 ]; do echo "file $i" >"$D/burst/f$i.txt"; i=$((i + 1)); done &&
	arrives && [ $(ls "$T_DIR/restore.$(cat "$T_DIR/seen")/burst" | wc -l) -eq 1000 ]
'

stop_stepd
ok "with the server stopped, a change is queued and the failure reported" '
	errs=$(status_field errors) &&
	echo "while down" >"$D/down.txt" &&
	wait_for "[ \$(status_field errors) != \"$errs\" ]" $WATCH_TRIES &&
	[ $(pending) -ge 1 ] && kill -0 $WATCH_PID
'

start_stepd --auth open --port $PORT
ok "stepd restarts on the same port and root" '[ "$STEPD_PORT" = "$PORT" ]'
ok "the watcher catches up once the server is back" '
	arrives && wait_for "[ \$(pending) -eq 0 ]" $WATCH_TRIES
'

kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "SIGTERM stops the watcher with exit status 0" '
	[ $rc -eq 0 ] && $SW status | grep -q "^watch: not running"
'

stop_stepd
start_watch 1
ok "a change made while the server is down is queued" '
	errs=$(status_field errors) &&
	echo "queued" >"$D/queued.txt" &&
	wait_for "[ \$(status_field errors) != \"$errs\" ]" $WATCH_TRIES &&
	[ $(pending) -ge 1 ]
'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "the watcher stops (exit 0) with the change still queued" '
	[ $rc -eq 0 ] && [ $(pending) -ge 1 ]
'
start_stepd --auth open --port $PORT
start_watch 2
ok "after restarting server and watcher the queued change arrives" '
	arrives && wait_for "[ \$(pending) -eq 0 ]" $WATCH_TRIES
'

kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "the restarted watcher also exits 0 on SIGTERM" '[ $rc -eq 0 ]'
done_testing
