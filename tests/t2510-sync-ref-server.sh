#!/bin/sh
# t2510-sync-ref-server.sh — sync, snapshots, restore and prune against the Python
# replica of the course reference server: no LIST, no resume extension, keys are file
# names on its disk. Snapshots are found by probing; prune deletes from the low end.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

start_ref_server || exit 1
printf '%s' 12345678 >"$T_DIR/pw" # the course rule: password = user name
SS="$BIN/stepsync --server 127.0.0.1:$REF_PORT --user 12345678 --password-file $T_DIR/pw"
SRC=$T_DIR/tree
make_awkward_tree "$SRC"
cp -a "$SRC" "$T_DIR/snap1"

ok "sync to the reference server, restore with a fresh state: identical" '
	$SS --state "$T_DIR/st.db" sync --name tree "$SRC" &&
	$SS --state "$T_DIR/fresh.db" restore --name tree --to "$T_DIR/out1" &&
	same_tree "$SRC" "$T_DIR/out1"
'

ok "every key on the reference server is a plain safe file name" '
	ls -A "$T_DIR/ref.root/12345678" >"$T_DIR/keys" &&
	[ $(grep -c "^o\.[0-9a-f]\{64\}$" "$T_DIR/keys") -ge 12 ] &&
	grep -q "^s\.tree\.0000000001$" "$T_DIR/keys" &&
	! grep -v "^[ost]\.[0-9a-z_.-]*$" "$T_DIR/keys"
'

ok "five more snapshots; the latest is found by probing" '
	for i in 2 3 4 5 6; do echo "edit $i" >"$SRC/docs/hello.txt" &&
		$SS --state "$T_DIR/st.db" sync --name tree "$SRC" >/dev/null || exit 1; done &&
	cp -a "$SRC" "$T_DIR/snap6" &&
	$SS --state "$T_DIR/fresh2.db" snapshots --name tree >"$T_DIR/snaps" &&
	[ "$(sed 1d "$T_DIR/snaps" | awk "{print \$1}" | tr "\n" " ")" = "1 2 3 4 5 6 " ] &&
	$SS --state "$T_DIR/fresh3.db" restore --name tree --to "$T_DIR/out6" &&
	same_tree "$T_DIR/snap6" "$T_DIR/out6"
'

ok "a lost state picks the next seq from the server (no overwrite)" '
	echo lost >"$SRC/docs/lost.txt" &&
	$SS --state "$T_DIR/lost.db" sync --name tree "$SRC" | grep -q "^snapshot tree#7:"
'

ok "prune --keep 2 deletes snapshots 1..5 and the objects only they used" '
	objs_before=$(ls "$T_DIR/ref.root/12345678" | grep -c "^o\.") &&
	$SS --state "$T_DIR/st.db" prune --keep 2 --name tree >"$T_DIR/prune.out" &&
	grep -q "deleted 5 snapshots" "$T_DIR/prune.out" &&
	objs_after=$(ls "$T_DIR/ref.root/12345678" | grep -c "^o\.") &&
	[ "$objs_after" -lt "$objs_before" ] &&
	$SS snapshots --name tree >"$T_DIR/snaps2" &&
	[ "$(sed 1d "$T_DIR/snaps2" | awk "{print \$1}" | tr "\n" " ")" = "6 7 " ] &&
	$SS --state "$T_DIR/fresh4.db" restore --name tree --snapshot 6 --to "$T_DIR/out6b" &&
	same_tree "$T_DIR/snap6" "$T_DIR/out6b" &&
	$SS --state "$T_DIR/fresh4.db" restore --name tree --to "$T_DIR/out7" &&
	same_tree "$SRC" "$T_DIR/out7"
'

ok "after prune, sync still appends (seq 8) and re-sends pruned content if needed" '
	cp "$T_DIR/snap1/docs/hello.txt" "$SRC/docs/hello.txt" &&
	$SS --state "$T_DIR/st.db" sync --name tree "$SRC" | grep -q "^snapshot tree#8:" &&
	$SS --state "$T_DIR/fresh5.db" restore --name tree --to "$T_DIR/out8" &&
	same_tree "$SRC" "$T_DIR/out8"
'

ok "restore of a pruned snapshot fails cleanly" '
	expect_exit 1 $SS restore --name tree --snapshot 2 --to "$T_DIR/gone"
'

done_testing
