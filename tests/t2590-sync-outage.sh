#!/bin/sh
# t2590-sync-outage.sh — a server that answers 503 for a while (its storage or metadata
# unreachable; here stepd's fault hook STEP_FAULT=...,for:MS,enotconn) does not fail a
# sync: blocks, commits, chunks, trees and small files refused 503 are tried again with
# backoff and the upload continues from what the server received; the first run exits 0
# and restores identical. A stop request ends the waiting: no snapshot is recorded.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

echo demo >"$T_DIR/pw"
SRC=$T_DIR/tree
mkdir -p "$SRC/small" "$SRC/mid"
head -c 3145728 /dev/urandom >"$SRC/big.bin" # chunked: chunks and trees via the sender
i=0
while [ $i -lt 40 ]; do
	head -c $((10 + i * 53)) /dev/urandom >"$SRC/small/f$i"
	i=$((i + 1))
done
i=0
while [ $i -lt 4 ]; do
	head -c $((200000 + i * 70001)) /dev/urandom >"$SRC/mid/m$i" # several blocks each
	i=$((i + 1))
done

# run NAME FAULT — a fresh stepd with STEP_FAULT=FAULT and a sync of the tree: SS, rc.
run() {
	STEP_FAULT=$2 STEPD_NAME=$1 start_stepd --auth open || return 1
	SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
	$SS --state "$T_DIR/$1.db" sync --name t "$SRC" >"$T_DIR/$1.out" 2>&1
	rc=$?
}
restored() {
	rm -rf "$T_DIR/r" && $SS --state "$T_DIR/fresh-$1.db" restore --name t --to "$T_DIR/r" &&
		diff -r "$SRC" "$T_DIR/r"
}

# (3 s: longer than the few quick tries that a server fault always had.)
run writes write:3,for:3000,enotconn
ok "every block write for 3 s answered 503: the first run exits 0 (got $rc)" \
	"[ $rc -eq 0 ] || { cat writes.out; false; }"
ok 'the server did refuse them' "grep -q 'fault hook: block write' writes.log"
ok 'the snapshot restores identical' 'restored writes'
t_stop 'stepd stops with exit 0'

run commits fsync:1,for:3000,enotconn
ok "every commit for 3 s answered 503: the first run exits 0 (got $rc)" \
	"[ $rc -eq 0 ] || { cat commits.out; false; }"
ok 'the snapshot restores identical' 'restored commits'
t_stop 'stepd stops with exit 0'

# A server that stays unavailable: a stop request ends the waiting, and no snapshot is
# recorded. `sync` dies of SIGTERM (143) as it always does; `watch` blocks the signal,
# sees it while waiting, and exits 0 long before the 2 minutes of waiting are over.
STEP_FAULT=write:1,times:1000000000,enotconn STEPD_NAME=down start_stepd --auth open
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
$SS --state "$T_DIR/down.db" sync --name t "$SRC" >"$T_DIR/down.out" 2>&1 &
spid=$!
track_pid $spid
ok 'sync waits for the unavailable server, saying so' \
	"wait_for 'grep -q \"unavailable (503); trying again\" down.out || ! kill -0 $spid' 600 && kill -0 $spid"
kill -TERM $spid
wait $spid 2>/dev/null
rc=$?
ok "SIGTERM ends the sync: killed by the signal (got $rc)" "[ $rc -eq 143 ]"
STEPSYNC_CONFIG=$T_DIR/none.conf $SS --state "$T_DIR/watch.db" watch --name w --debounce 100 \
	"$SRC" >"$T_DIR/watch.out" 2>&1 &
wpid=$!
track_pid $wpid
ok 'watch waits for the unavailable server' \
	"wait_for 'grep -q \"trying again\" watch.out || ! kill -0 $wpid' 600 && kill -0 $wpid"
kill -TERM $wpid
ok 'SIGTERM while it waits: the watcher stops at once' "wait_for '! kill -0 $wpid' 100"
wait $wpid
rc=$?
ok "it exits 0 (got $rc)" "[ $rc -eq 0 ] || { cat watch.out; false; }"
ok 'no snapshot was recorded' '! $SS snapshots --name t 2>/dev/null | grep -q "^[0-9]" &&
	! $SS snapshots --name w 2>/dev/null | grep -q "^[0-9]"'
t_stop 'stepd stops with exit 0'
done_testing
