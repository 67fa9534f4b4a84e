#!/bin/sh
# t2570-sync-busy.sh — a file written to throughout a sync (a log) never stops the
# snapshot: it is retried, then left out (first run) or kept at its previous version
# (later runs); the snapshot is recorded and the run exits 3 ("incomplete") naming it.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
SRC=$T_DIR/tree
mkdir -p "$SRC"
echo steady >"$SRC/steady.txt"
# 32 MiB: each of the scan's reads takes long enough for the writer to append many times.
head -c 33554432 /dev/urandom >"$SRC/big.log"

# writer FILE... — appends to each FILE as fast as it can until killed (the workload).
start_writer() {
	(while :; do for f in "$@"; do echo "a line of log" >>"$f"; done; done) &
	WRITER=$!
	track_pid $WRITER
}
stop_writer() {
	kill $WRITER && wait $WRITER 2>/dev/null
	return 0
}
snapshots() {
	$SS snapshots --name t 2>/dev/null | grep -c "^[0-9]"
}

start_writer "$SRC/big.log"
ok "first run while the log grows: snapshot recorded without it, exit 3, named" '
	expect_exit 3 $SS --state "$T_DIR/st.db" sync --name t "$SRC" 2>"$T_DIR/e1" &&
	grep -q "big.log.*kept changing.*left out" "$T_DIR/e1" &&
	grep -q "incomplete" "$T_DIR/e1" && [ "$(snapshots)" -eq 1 ] &&
	$SS --state "$T_DIR/f1.db" restore --name t --to "$T_DIR/r1" &&
	cmp "$SRC/steady.txt" "$T_DIR/r1/steady.txt" && [ ! -e "$T_DIR/r1/big.log" ]
'
stop_writer
cp "$SRC/big.log" "$T_DIR/big.quiet"
ok "once quiet, the log goes in and the run exits 0" '
	$SS --state "$T_DIR/st.db" sync --name t "$SRC" && [ "$(snapshots)" -eq 2 ]
'
start_writer "$SRC/big.log"
ok "busy again: its previous version goes into snapshot 3, exit 3" '
	expect_exit 3 $SS --state "$T_DIR/st.db" sync --name t "$SRC" 2>"$T_DIR/e3" &&
	grep -q "big.log.*previous version" "$T_DIR/e3" && [ "$(snapshots)" -eq 3 ] &&
	$SS --state "$T_DIR/f3.db" restore --name t --snapshot 3 --to "$T_DIR/r3" &&
	cmp "$T_DIR/big.quiet" "$T_DIR/r3/big.log"
'
stop_writer
done_testing
