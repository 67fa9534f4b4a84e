#!/bin/sh
# t5020-restore-overwrite.sh — restore into a folder that has files never destroys local
# work by default: a file that differs from the snapshot's is left alone and listed (exit
# 5), one that is identical is not written again; --overwrite always / if-changed /
# if-newer replace as restic 0.17 does. For format-2 snapshots (the restore engine).
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
SRC=$T_DIR/src
mkdir -p "$SRC/d"
echo "snapshot text" >"$SRC/d/notes.txt"
echo "read-only in the snapshot" >"$SRC/ro.txt"
head -c 3000000 /dev/urandom >"$SRC/big.bin"
$SS --state "$T_DIR/st.db" sync --name t "$SRC" >/dev/null || exit 1
R=$T_DIR/live

ok "a first restore into an empty folder exits 0" '
	$SS restore --name t --to "$R" && same_tree "$SRC" "$R"
'

ok "local edits are left alone and listed, identical files are not rewritten (exit 5)" '
	echo "my newer local edit" >"$R/d/notes.txt" && echo "local" >"$R/ro.txt" &&
	chmod 444 "$R/ro.txt" && ino=$(stat -c %i "$R/big.bin") &&
	expect_exit 5 $SS restore --name t --to "$R" 2>"$T_DIR/e2" &&
	[ "$(cat "$R/d/notes.txt")" = "my newer local edit" ] && [ "$(cat "$R/ro.txt")" = local ] &&
	grep -q "d/notes.txt.*left alone" "$T_DIR/e2" && grep -q "ro.txt.*left alone" "$T_DIR/e2" &&
	[ "$(stat -c %i "$R/big.bin")" = "$ino" ]
'

ok "--overwrite if-newer keeps a local file newer than the snapshot's" '
	touch -d "2099-01-01" "$R/d/notes.txt" &&
	expect_exit 5 $SS restore --name t --overwrite if-newer --to "$R" &&
	[ "$(cat "$R/d/notes.txt")" = "my newer local edit" ]
'

ok "--overwrite always puts the snapshot back, exit 0" '
	$SS restore --name t --overwrite always --to "$R" &&
	cmp "$SRC/d/notes.txt" "$R/d/notes.txt" && cmp "$SRC/ro.txt" "$R/ro.txt" && cmp "$SRC/big.bin" "$R/big.bin"
'

ok "--overwrite if-changed replaces only what differs; a bad WHEN is a usage error" '
	echo changed >"$R/d/notes.txt" && ino=$(stat -c %i "$R/big.bin") &&
	$SS restore --name t --overwrite if-changed --to "$R" && cmp "$SRC/d/notes.txt" "$R/d/notes.txt" &&
	[ "$(stat -c %i "$R/big.bin")" = "$ino" ] &&
	expect_exit 2 $SS restore --name t --overwrite sometimes --to "$R"
'

done_testing
