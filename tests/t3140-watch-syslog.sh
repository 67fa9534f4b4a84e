#!/bin/sh
# t3140-watch-syslog.sh — `stepsync watch --syslog` logs through syslog(3), not stderr.
# The watcher runs in a private mount namespace whose /dev is a tmpfs holding the host's
# null/zero/random/urandom and, as /dev/log, a datagram socket this test listens on; the
# host's /dev is never touched. Needs root (unshare -m); skipped otherwise.
. "$TOP/tests/lib.sh"

if ! unshare -m --propagation private true 2>/dev/null; then
	echo "1..0 # SKIP unshare -m is not permitted (needs root)"
	exit 0
fi

LOG=$T_DIR/syslog.txt
python3 - "$T_DIR/log.sock" "$LOG" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536).rstrip(b"\n") + b"\n")
PY
track_pid $!
wait_for "[ -S '$T_DIR/log.sock' ]" 200 || exit 1

D=$T_DIR/data
mkdir -p "$D" "$T_DIR/hostdev"
echo seed >"$D/seed.txt"
export STEPSYNC_PASSWORD=w STEPSYNC_CONFIG=$T_DIR/none.conf T_DIR D BIN
# Port 1 refuses connections: every sync fails and logs a warning.
unshare -m --propagation private sh -c '
	mount --bind /dev "$T_DIR/hostdev" && mount -t tmpfs tmpfs /dev &&
	for n in null zero random urandom; do
		touch /dev/$n && mount --bind "$T_DIR/hostdev/$n" /dev/$n || exit 1
	done &&
	touch /dev/log && mount --bind "$T_DIR/log.sock" /dev/log &&
	exec "$BIN/stepsync" --server 127.0.0.1:1 --user w --state "$T_DIR/state.db" \
		watch --syslog --debounce 100 "$D"' >"$T_DIR/watch.out" 2>"$T_DIR/watch.err" &
WATCH_PID=$!
track_pid $WATCH_PID
ok "the watcher with --syslog starts (readiness line on stdout)" '
	wait_for "grep -q \"^watching 1 directory\" watch.out || ! kill -0 $WATCH_PID" 400 &&
	kill -0 $WATCH_PID
'
ok "its warnings go to syslog, tagged stepsync[PID], at warning priority" '
	wait_for "grep -q \"stepsync\\[$WATCH_PID\\]: .*sync of .* failed\" \"$LOG\"" 200 &&
	grep "sync of .* failed" "$LOG" | head -n 1 | grep -q "^<28>"
'
ok "the sync engine error reaches syslog too, as the reason of the warning" '
	grep -q "stepsync\[$WATCH_PID\]: .*cannot connect to 127.0.0.1 port 1" "$LOG" &&
	grep -q "sync of .* failed: .*cannot connect to 127.0.0.1 port 1.*(sync exited with status 75)" "$LOG"
'
ok "nothing goes to stderr" '[ ! -s watch.err ]'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "SIGTERM exits 0" '[ $rc -eq 0 ]'
done_testing
