#!/bin/sh
# t3110-watch-reload.sh — SIGHUP makes `stepsync watch` re-read its configuration: the
# next sync goes to the new server address, new exclude patterns apply, a new [dir]
# section is watched and backed up; a broken file keeps the old configuration running.
. "$TOP/tests/lib.sh"

start_stepd --auth open || exit 1
PORT_A=$STEPD_PORT
STEPD_NAME=b start_stepd --auth open || exit 1
PORT_B=$STEPD_PORT
echo w >"$T_DIR/pw"
mkdir -p "$T_DIR/one" "$T_DIR/two"
echo first >"$T_DIR/one/first.txt"

# conf PORT EXTRA — writes the watcher's config: [dir "one"] always, EXTRA appended.
conf() {
	cat >"$T_DIR/stepsync.conf" <<CONF
[server]
address = 127.0.0.1:$1
user = w
password_file = $T_DIR/pw

[state]
path = $T_DIR/watch.db

[dir "one"]
path = $T_DIR/one
exclude = *.tmp
$2
CONF
}
conf "$PORT_A" ""
# The test's own reads of a server: a separate state, never the watcher's.
on() {
	p=$1
	shift
	"$BIN/stepsync" --server "127.0.0.1:$p" --user w --password-file "$T_DIR/pw" \
		--state "$T_DIR/reader.$p.db" --timeout 5 "$@"
}
latest() { on "$1" snapshots --name "$2" 2>/dev/null | awk 'NR > 1 { s = $1 } END { print s + 0 }'; }
# restored PORT NAME DIR — the newest snapshot of NAME on PORT restores into DIR (fresh).
restored() {
	rm -rf "$3" && s=$(latest "$1" "$2") && [ "$s" -gt 0 ] &&
		on "$1" restore --name "$2" --snapshot "$s" --to "$3" >/dev/null 2>&1
}

"$BIN/stepsync" -v --config "$T_DIR/stepsync.conf" watch --debounce 200 \
	>"$T_DIR/watch.out" 2>"$T_DIR/watch.err" &
WATCH_PID=$!
track_pid $WATCH_PID
ok "the watcher starts from the configuration file" '
	wait_for "grep -q \"^watching 1 directory\" watch.out || ! kill -0 $WATCH_PID" 400 &&
	kill -0 $WATCH_PID'
ok "its first snapshot goes to the configured server" '
	wait_for "restored $PORT_A one r.a && [ -f r.a/first.txt ]" 600'

conf "$PORT_B" "exclude = *.log

[dir \"two\"]
path = $T_DIR/two"
kill -HUP $WATCH_PID
ok "SIGHUP reloads the file" '
	wait_for "grep -q \"configuration reloaded\" watch.err" 400 && kill -0 $WATCH_PID'
ok "a [dir] section added to the file is watched and backed up" '
	echo new >"$T_DIR/two/new.txt" &&
	wait_for "restored $PORT_B two r.two && cmp two/new.txt r.two/new.txt" 600'
# The state's objects were sent to the first server: the second must get them too.
ok "changes now go to the new server (all content), with the new exclude applied" '
	echo second >"$T_DIR/one/second.txt" && echo noise >"$T_DIR/one/x.log" &&
	wait_for "restored $PORT_B one r.b && [ -f r.b/second.txt ]" 600 &&
	cmp one/first.txt r.b/first.txt && [ ! -e r.b/x.log ] && [ ! -e r.b/.tmp ]'
ok "the old server received nothing after the reload" '
	restored $PORT_A one r.a2 && [ ! -e r.a2/second.txt ] && [ ! -e r.a2/x.log ]'

echo "[server" >"$T_DIR/stepsync.conf"
kill -HUP $WATCH_PID
ok "a broken file is reported and the old configuration stays in force" '
	wait_for "grep -q \"keeping the old configuration\" watch.err" 400 &&
	kill -0 $WATCH_PID && echo third >"$T_DIR/one/third.txt" &&
	wait_for "restored $PORT_B one r.c && [ -f r.c/third.txt ]" 600 && [ ! -e r.c/x.log ]'

kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "SIGTERM still stops the watcher with exit status 0" '[ $rc -eq 0 ]'
done_testing
