#!/bin/sh
# t3170-watch-incremental.sh — after its start-up scan, the watcher syncs from its events
# alone: a change deep in the tree reads only the directories on the path to it (the
# engine's own counters in `status --json`, never timings), a subtree moved out and back
# in, moved within, deleted, and a directory's chmod all reach a restorable snapshot
# without another full run.
. "$TOP/tests/lib.sh"
. "$TOP/tests/watch_lib.sh"

start_stepd --auth open || exit 1
watch_init
for a in 1 2 3 4; do
	for b in 1 2 3; do
		for c in 1 2; do
			mkdir -p "$D/a$a/b$b/c$c"
			for f in 1 2 3; do
				echo "a$a b$b c$c f$f" >"$D/a$a/b$b/c$c/f$f.txt"
			done
		done
		echo "a$a b$b" >"$D/a$a/b$b/top.txt"
	done
done
SW="$SS --state $T_DIR/watch.db"

# st FIELD — an integer field of the watcher's `status --json` ("null" when unset).
st() {
	$SW status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

$SW -v watch --name W --debounce 100 "$D" >"$T_DIR/watch.out" 2>"$T_DIR/watch.err" &
WATCH_PID=$!
track_pid $WATCH_PID
wait_for "grep -q '^watching ' '$T_DIR/watch.out' || ! kill -0 $WATCH_PID" 400
ok "the start-up scan is one full run and its snapshot is restorable" '
	arrives && [ "$(st full_runs)" = 1 ] && [ "$(st last_run_incremental)" = 0 ] &&
	[ "$(st last_dirs_scanned)" = 41 ] && [ "$(st last_files_hashed)" = 84 ]
'

echo "changed deep down" >"$D/a3/b2/c1/f2.txt"
ok "a change deep in the tree reads the 4 directories on its path and hashes 1 file" '
	arrives && [ "$(st full_runs)" = 1 ] && [ "$(st last_run_incremental)" = 1 ] &&
	[ "$(st last_dirs_scanned)" = 4 ] && [ "$(st last_files_hashed)" = 1 ]
'
ok "the watcher logs the counters of each run, and status shows them" '
	grep -q "incremental run: 4 directories read, .* 1 file hashed" "$T_DIR/watch.err" &&
	$SW status | grep -q "^last watcher run: incremental, 4 directories read, [0-9]* reused, 1 file hashed (1 full and 1 incremental runs)"
'

mv "$D/a2" "$T_DIR/outside"
ok "a subtree moved out of the tree is gone from the next snapshot, without a full run" '
	arrives && [ "$(st full_runs)" = 1 ] && [ "$(st last_run_incremental)" = 1 ] &&
	[ ! -e "$T_DIR/restore.$(cat "$T_DIR/seen")/a2" ]
'

echo "changed while outside" >"$T_DIR/outside/b1/c1/f1.txt"
mv "$T_DIR/outside" "$D/back"
ok "moved back in under another name, it is read whole (the root and its 10 directories)" '
	arrives && [ "$(st full_runs)" = 1 ] && [ "$(st last_run_incremental)" = 1 ] &&
	[ "$(st last_dirs_scanned)" = 11 ]
'

mv "$D/back/b3" "$D/a1/b9"
ok "a subtree moved within the tree is in the next snapshot at its new place only" '
	arrives && [ "$(st full_runs)" = 1 ] && [ "$(st last_run_incremental)" = 1 ]
'

rm -r "$D/a4"
ok "a deleted subtree is gone from the next snapshot" '
	arrives && [ "$(st full_runs)" = 1 ] &&
	[ ! -e "$T_DIR/restore.$(cat "$T_DIR/seen")/a4" ]
'

chmod 700 "$D/a1/b1"
ok "a directory chmod alone reaches the snapshot (its parent is read)" '
	wait_for "[ \$(latest) -gt $(cat "$T_DIR/seen") ]" 600 &&
	s=$(latest) && $SR restore --name W --snapshot $s --to "$T_DIR/perm" >/dev/null &&
	[ "$(stat -c %a "$T_DIR/perm/a1/b1")" = 700 ] && [ "$(st last_dirs_scanned)" = 2 ]
'

kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "the watcher stops with exit status 0" '[ $rc -eq 0 ]'

$SW sync --skip-unchanged --name W "$D" >"$T_DIR/sync.out" 2>&1
rc=$?
ok "a full sync afterwards finds exactly the tree of the last incremental snapshot" '
	[ $rc -eq 0 ] && grep -q "unchanged (no new snapshot recorded)" "$T_DIR/sync.out"
'
done_testing
