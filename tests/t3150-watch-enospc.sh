#!/bin/sh
# t3150-watch-enospc.sh — the kernel's real inotify watch limit (ENOSPC), not the
# --max-watches hook of t3000: the watcher runs in its own user namespace whose
# user.max_inotify_watches is 3, so nothing outside the namespace is limited. It must warn
# naming /proc/sys/fs/inotify/max_user_watches, keep running, and back up changes in the
# directories it could not watch (existing and created later) through its periodic scan.
# Skipped where unprivileged user namespaces are not available.
. "$TOP/tests/lib.sh"
. "$TOP/tests/watch_lib.sh"

if ! unshare -U -r sh -c 'echo 3 >/proc/sys/user/max_inotify_watches' 2>/dev/null; then
	echo "1..0 # SKIP no user namespace with its own max_inotify_watches"
	exit 0
fi

start_stepd --auth open || exit 1
watch_init
mkdir -p "$D/a/b/c/d"
echo seed >"$D/seed.txt"

export SS T_DIR D
# unshare and sh exec: $! is the watcher itself.
unshare -U -r sh -c 'echo 3 >/proc/sys/user/max_inotify_watches &&
	exec $SS --state "$T_DIR/watch.db" watch --name W --debounce 100 "$D"' \
	>"$T_DIR/watch.out" 2>"$T_DIR/watch.err" &
WATCH_PID=$!
track_pid $WATCH_PID
ok "the watcher starts with the 3 watches the kernel allows" '
	wait_for "grep -q \"^watching \" watch.out || ! kill -0 $WATCH_PID" 400 &&
	grep -q "^watching 1 directory (3 inotify watches)" watch.out
'
ok "the limit is reported once, naming max_user_watches, and the watcher keeps running" '
	[ $(grep -c "/proc/sys/fs/inotify/max_user_watches" watch.err) -eq 1 ] &&
	grep -q "inotify watch limit reached at .*/a/b/c" watch.err && kill -0 $WATCH_PID
'
ok "its first snapshot holds the whole tree" 'arrives'
ok "a change in an unwatched directory reaches a snapshot through the periodic scan" '
	echo deep >"$D/a/b/c/d/deep.txt" && arrives
'
ok "so does a directory created later inside an unwatched one" '
	mkdir -p "$D/a/b/c/new" && echo n >"$D/a/b/c/new/n.txt" && arrives
'
ok "a directory created in a watched one, with no watch left for it, is scanned" '
	mkdir "$D/a/fresh" && arrives && echo later >"$D/a/fresh/later.txt" && arrives &&
	[ $(grep -c "/proc/sys/fs/inotify/max_user_watches" watch.err) -eq 1 ]
'
ok "watched directories still report changes at once" '
	echo top >"$D/top.txt" && arrives
'
kill -TERM $WATCH_PID
wait $WATCH_PID
rc=$?
ok "SIGTERM exits 0" '[ $rc -eq 0 ]'
done_testing
