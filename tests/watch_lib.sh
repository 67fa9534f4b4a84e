# tests/watch_lib.sh — helpers of the watch tests (t31xx) that check every sync of a
# watcher by restoring its newest snapshot. Sourced after tests/lib.sh.
#
#   watch_init          after start_stepd: user w's password file $T_DIR/pw, no config
#                       file, the watched tree $D (created), $SS (stepsync as w at stepd),
#                       $SR ($SS with the test's own state, for its snapshots and restores)
#   latest              the newest snapshot seq of W on the server (0 when none)
#   restored_matches    a snapshot of W newer than the last one checked restores to a tree
#                       identical to $D (content, names, directories); remembers it in
#                       $T_DIR/seen
#   arrives             the change must arrive: waits up to WATCH_TRIES polls for
#                       restored_matches (newer snapshots that do not hold it yet are
#                       skipped); on failure shows the diff and the end of watch.err

# Polls of a sync result: 50 ms each, generous for sanitizer builds.
WATCH_TRIES=${WATCH_TRIES:-600}

watch_init() {
	echo w >"$T_DIR/pw"
	export STEPSYNC_CONFIG=$T_DIR/none.conf
	D=$T_DIR/data
	mkdir -p "$D"
	SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user w --password-file $T_DIR/pw --timeout 5"
	SR="$SS --state $T_DIR/reader.db"
	echo 0 >"$T_DIR/seen"
}

latest() {
	$SR snapshots --name W 2>/dev/null | awk 'NR > 1 { s = $1 } END { print s + 0 }'
}

restored_matches() {
	s=$(latest)
	[ "$s" -gt "$(cat "$T_DIR/seen")" ] || return 1
	R=$T_DIR/restore.$s
	[ -d "$R" ] || $SR restore --name W --snapshot "$s" --to "$R" >/dev/null 2>&1 || return 1
	diff -r "$D" "$R" >/dev/null || return 1
	echo "$s" >"$T_DIR/seen"
}

arrives() {
	wait_for restored_matches $WATCH_TRIES || {
		diff -r "$D" "$T_DIR/restore.$(latest)"
		tail -n 5 "$T_DIR/watch.err"
		false
	}
}
