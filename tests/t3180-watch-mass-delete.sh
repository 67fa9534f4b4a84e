#!/bin/sh
# t3180-watch-mass-delete.sh — most of a watched tree vanishes (an unmounted disk looks
# like that): `sync` would refuse the snapshot (65), the watcher holds the deletions back
# instead and keeps backing up everything else; `status` (text and --json) and the
# Prometheus file say what is held and the command that releases it; that command records
# the deletions and the hold is gone.
. "$TOP/tests/lib.sh"
. "$TOP/tests/watch_lib.sh"

start_stepd --auth open || exit 1
watch_init
mkdir -p "$D/disk/a" "$D/disk/b" "$D/home"
for i in 1 2 3 4 5 6; do
	echo "a $i" >"$D/disk/a/f$i"
	echo "b $i" >"$D/disk/b/f$i"
done
echo "stays" >"$D/home/notes.txt"
SW="$SS --state $T_DIR/watch.db"

st_json() {
	$SW status --json | python3 -c 'import json,sys; h=json.load(sys.stdin)["held"]; print(h["W"][sys.argv[1]] if "W" in h else "none")' "$1"
}

$SW -v watch --name W --debounce 100 --prometheus "$T_DIR/prom" "$D" \
	>"$T_DIR/watch.out" 2>"$T_DIR/watch.err" &
WATCH_PID=$!
track_pid $WATCH_PID
wait_for "grep -q '^watching ' '$T_DIR/watch.out' || ! kill -0 $WATCH_PID" 400
ok "the first snapshot is restorable" 'arrives'
first=$(cat "$T_DIR/seen")

mv "$D/disk" "$T_DIR/unmounted"
echo "written after" >"$D/home/new.txt"
ok "with 12 of 13 files gone the watcher records a snapshot that keeps them and has the new file" '
	wait_for "[ \$(latest) -gt $first ]" $WATCH_TRIES &&
	s=$(latest) && $SR restore --name W --snapshot $s --to "$T_DIR/held" >/dev/null &&
	[ -f "$T_DIR/held/disk/a/f6" ] && [ -f "$T_DIR/held/disk/b/f1" ] &&
	[ "$(cat "$T_DIR/held/home/new.txt")" = "written after" ] &&
	[ $(find "$T_DIR/held" -type f | wc -l) -eq 14 ]
'
ok "the watcher keeps running and warns once" '
	kill -0 $WATCH_PID && [ $(grep -c "deletions are held back" "$T_DIR/watch.err") -eq 1 ]
'
ok "status says what is held and how to release it" '
	$SW status >"$T_DIR/status.txt" &&
	grep -q "^held deletions: W: 12 files gone but kept" "$T_DIR/status.txt" &&
	grep -q "run: stepsync sync --allow-mass-delete --name .W. .$D." "$T_DIR/status.txt"
'
ok "status --json has the held files and the release command" '
	[ "$(st_json files)" = 12 ] && st_json release | grep -q -- "--allow-mass-delete"
'
ok "the Prometheus file has the held count" '
	wait_for "grep -q \"^stepsync_held_deletions{name=\\\"W\\\"} 12\$\" \"$T_DIR/prom\"" 200
'

echo "more" >"$D/home/more.txt"
ok "later changes are backed up while the deletions stay held" '
	wait_for "[ \$(latest) -gt $(latest) ]" $WATCH_TRIES &&
	s=$(latest) && $SR restore --name W --snapshot $s --to "$T_DIR/held2" >/dev/null &&
	[ -f "$T_DIR/held2/home/more.txt" ] && [ -f "$T_DIR/held2/disk/a/f1" ] &&
	[ "$(st_json files)" = 12 ]
'

# sync_once OUT ARGS... — one sync of W; a run that found the watcher's sync holding the
# state lock (75) is tried again (bounded), as a user would. Its status in $T_DIR/OUT.rc.
sync_once() {
	o=$1
	shift
	$SW sync "$@" --name W "$D" >"$T_DIR/$o" 2>&1
	echo $? >"$T_DIR/$o.rc"
	[ "$(cat "$T_DIR/$o.rc")" != 75 ]
}
wait_for "sync_once refused.out" 200
rc=$(cat "$T_DIR/refused.out.rc")
ok "a plain sync still refuses the mass deletion (65)" '[ $rc -eq 65 ]'

wait_for "sync_once release.out --allow-mass-delete" 200
rc=$(cat "$T_DIR/release.out.rc")
ok "the release command records the deletions" '
	[ $rc -eq 0 ] && s=$(latest) &&
	$SR restore --name W --snapshot $s --to "$T_DIR/released" >/dev/null &&
	diff -r "$D" "$T_DIR/released"
'
ok "...and the hold is gone from status" '
	[ "$(st_json files)" = none ] && $SW status | grep -q "^held deletions: none"
'
echo "after release" >"$D/home/after.txt"
ok "the watcher goes on without holding anything" '
	arrives && [ "$(st_json files)" = none ] &&
	wait_for "! grep -q \"^stepsync_held_deletions{\" \"$T_DIR/prom\"" 200
'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "the watcher stops with exit status 0" '[ $rc -eq 0 ]'
done_testing
