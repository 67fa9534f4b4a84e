#!/bin/sh
# t3190 — the watcher applies a [dir]'s `keep =` rules by itself, at most once an hour,
# logging what it deleted: four snapshots made by sync, a watcher with keep = last=2
# prunes to two after its start-up run, then records more without pruning again in the
# same hour; a bad keep line stops it at start (78) and is refused at SIGHUP.
. "$TOP/tests/lib.sh"

start_stepd --auth open || exit 1
echo w >"$T_DIR/pw"
D=$T_DIR/data
mkdir -p "$D"
conf() {
	cat >"$T_DIR/stepsync.conf" <<CONF
[server]
address = 127.0.0.1:$STEPD_PORT
user = w
password_file = $T_DIR/pw

[state]
path = $T_DIR/watch.db

[dir "d"]
path = $D
$1
CONF
}
SS="$BIN/stepsync --config $T_DIR/stepsync.conf --timeout 5"
ids() { $SS --state "$T_DIR/reader.db" snapshots --name d | sed 1d | awk '{print $1}' | tr '\n' ' '; }

conf ""
ok 'four snapshots by sync' '
	for i in 1 2 3 4; do echo "v$i" >"$D/f.txt" && $SS sync >/dev/null || exit 1; done &&
	[ "$(ids)" = "1 2 3 4 " ]'

conf "keep = daly=2"
ok 'a bad keep line stops the watcher at start: exit 78, the rule named' '
	expect_exit 78 $SS watch 2>err && grep -q "unknown rule .daly." err &&
	[ "$(ids)" = "1 2 3 4 " ]'

conf "keep = last=2"
$SS -v watch --debounce 200 >"$T_DIR/watch.out" 2>"$T_DIR/watch.err" &
WATCH_PID=$!
track_pid $WATCH_PID
ok 'after its start-up run the watcher prunes to the newest two and logs it' '
	wait_for "grep -q \"retention of .d.\" watch.err || ! kill -0 $WATCH_PID" 600 &&
	grep "retention of .d." watch.err &&
	grep -q "retention of .d. (last=2): deleted 2 snapshots" watch.err &&
	[ "$(ids)" = "3 4 " ]'

ok 'two more changes make two snapshots; no second retention within the hour' '
	echo v5 >"$D/f.txt" && wait_for "[ \"\$(ids)\" = \"3 4 5 \" ]" 600 &&
	echo v6 >"$D/f.txt" && wait_for "[ \"\$(ids)\" = \"3 4 5 6 \" ]" 600 &&
	[ "$(grep -c "retention of" watch.err)" = 1 ]'

conf "keep = last=0"
kill -HUP $WATCH_PID
ok 'SIGHUP with a bad keep line keeps the old configuration, says why, runs on' '
	wait_for "grep -q \"keeping the old configuration\" watch.err" 400 &&
	grep -q "keep: .last. needs a count" watch.err && kill -0 $WATCH_PID'

kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok 'SIGTERM stops the watcher with exit 0' "[ $rc -eq 0 ]"

done_testing
