#!/bin/sh
# t2500-sync-restore.sh — stepsync sync / snapshots / restore against stepd: an awkward
# tree comes back exactly (content, modes, symlinks, mtimes, empty dirs) with a fresh
# state; edits, a rename and a delete make a second snapshot; both restore; a rename
# sends no content; dry runs send nothing.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
SRC=$T_DIR/sample
make_awkward_tree "$SRC"
cp -a "$SRC" "$T_DIR/snap1"

ok "dry run on a new tree lists every file and sends nothing" '
	$SS --state "$T_DIR/st.db" sync --dry-run --name sample "$SRC" >"$T_DIR/dry.out" &&
	grep -q "would send photos 2024/big.raw (3145728 bytes)" "$T_DIR/dry.out" &&
	grep -q "nothing was sent" "$T_DIR/dry.out" &&
	$SS snapshots --name sample >"$T_DIR/snaps0" && [ $(wc -l <"$T_DIR/snaps0") -eq 1 ]
'

ok "first sync records snapshot 1 and exits 0" '
	$SS --state "$T_DIR/st.db" --json sync --name sample "$SRC" >"$T_DIR/s1.json" &&
	[ "$(json_field "$T_DIR/s1.json" seq)" = 1 ] &&
	[ "$(json_field "$T_DIR/s1.json" files)" = 13 ] &&
	[ "$(json_field "$T_DIR/s1.json" read_errors)" = 0 ]
'

ok "no-change rerun sends nothing and records snapshot 2" '
	$SS --state "$T_DIR/st.db" --json sync --name sample "$SRC" >"$T_DIR/s2.json" &&
	[ "$(json_field "$T_DIR/s2.json" seq)" = 2 ] &&
	[ "$(json_field "$T_DIR/s2.json" sent_bytes)" = 0 ] &&
	[ "$(json_field "$T_DIR/s2.json" blocks_sent)" = 0 ]
'

ok "restore with a fresh state database gives the identical tree" '
	$SS --state "$T_DIR/fresh1.db" restore --name sample --to "$T_DIR/out1" &&
	same_tree "$SRC" "$T_DIR/out1" &&
	diff -r --no-dereference "$SRC" "$T_DIR/out1" &&
	[ "$(readlink "$T_DIR/out1/bin/dangling")" = /nonexistent/dangling ] &&
	[ -d "$T_DIR/out1/docs/empty dir" ] && [ -x "$T_DIR/out1/bin/run.sh" ]
'

# Edits, a rename, a delete.
echo "a second line" >>"$SRC/docs/hello.txt"
mv "$SRC/photos 2024/big.raw" "$SRC/photos 2024/renamed.raw"
rm "$SRC/photos 2024/size-20479.bin"
printf 'new\n' >"$SRC/docs/new.txt"
cp -a "$SRC" "$T_DIR/snap3"

ok "after edit, rename and delete only the changed content is sent" '
	$SS --state "$T_DIR/st.db" --json sync --name sample "$SRC" >"$T_DIR/s3.json" &&
	[ "$(json_field "$T_DIR/s3.json" seq)" = 3 ] &&
	[ "$(json_field "$T_DIR/s3.json" sent_files)" = 2 ] &&
	[ "$(json_field "$T_DIR/s3.json" sent_bytes)" -lt 100 ]
'

ok "a copied and renamed file with a fresh state sends no content (server check)" '
	cp "$SRC/photos 2024/renamed.raw" "$SRC/copy.raw" &&
	$SS --state "$T_DIR/other.db" --json sync --name sample "$SRC" >"$T_DIR/s4.json" &&
	[ "$(json_field "$T_DIR/s4.json" sent_bytes)" = 0 ] &&
	[ "$(json_field "$T_DIR/s4.json" seq)" = 4 ] &&
	rm "$SRC/copy.raw"
'

ok "snapshots lists 1..4 oldest first with file counts" '
	$SS snapshots --name sample >"$T_DIR/snaps" &&
	head -n 1 "$T_DIR/snaps" | grep -q "^ID" &&
	[ "$(sed 1d "$T_DIR/snaps" | awk "{print \$1}" | tr "\n" " ")" = "1 2 3 4 " ] &&
	sed -n 2p "$T_DIR/snaps" | awk "{exit !(\$3 == 13 && \$4 > 3300000)}" ||
	{ cat "$T_DIR/snaps"; false; }
'

ok "snapshots --json is one JSON array, one object per snapshot" '
	$SS snapshots --name sample --json >"$T_DIR/snaps.json" &&
	python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert [o[\"id\"] for o in d]==[1,2,3,4], d" "$T_DIR/snaps.json"
'

ok "restore of snapshot 3 (edited tree) and of snapshot 1 (original)" '
	$SS --state "$T_DIR/fresh2.db" restore --name sample --snapshot 3 --to "$T_DIR/out3" &&
	same_tree "$T_DIR/snap3" "$T_DIR/out3" &&
	$SS --state "$T_DIR/fresh2.db" restore --name sample --snapshot sample#1 --to "$T_DIR/out1b" &&
	same_tree "$T_DIR/snap1" "$T_DIR/out1b"
'

ok "restore of an unknown snapshot fails cleanly" '
	expect_exit 1 $SS restore --name sample --snapshot 99 --to "$T_DIR/none" &&
	expect_exit 1 $SS restore --name nosuch --to "$T_DIR/none"
'

ok "dry run after a change lists just that file" '
	echo changed >"$SRC/docs/new.txt" &&
	$SS --state "$T_DIR/st.db" sync --dry-run --name sample "$SRC" >"$T_DIR/dry2.out" &&
	grep -q "^would send docs/new.txt" "$T_DIR/dry2.out" &&
	[ $(grep -c "^would send" "$T_DIR/dry2.out") -eq 1 ] &&
	$SS snapshots --name sample | tail -n 1 | grep -q "^4 "
'

ok "mass deletion is refused (exit 65) and allowed with --allow-mass-delete" '
	mkdir "$T_DIR/mass" && for i in 1 2 3 4 5 6; do echo $i >"$T_DIR/mass/f$i"; done &&
	$SS --state "$T_DIR/st.db" sync --name mass "$T_DIR/mass" >/dev/null &&
	rm "$T_DIR/mass/f1" "$T_DIR/mass/f2" "$T_DIR/mass/f3" "$T_DIR/mass/f4" &&
	expect_exit 65 $SS --state "$T_DIR/st.db" sync --name mass "$T_DIR/mass" 2>"$T_DIR/mass.err" &&
	grep -q "allow-mass-delete" "$T_DIR/mass.err" &&
	$SS snapshots --name mass | tail -n 1 | grep -q "^1 " &&
	$SS --state "$T_DIR/st.db" sync --allow-mass-delete --name mass "$T_DIR/mass" >/dev/null &&
	$SS snapshots --name mass | tail -n 1 | grep -q "^2 "
'

ok "a second run is refused while the lock is held (exit 75)" '
	python3 -c "
import fcntl, sys, time, os
f = open(sys.argv[1], \"a+\"); fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[2], \"w\").close()
while os.path.exists(sys.argv[2]): time.sleep(0.05)
" "$T_DIR/st.db.lock" "$T_DIR/holding" &
	hp=$!
	wait_for "[ -e \"$T_DIR/holding\" ]" &&
	expect_exit 75 $SS --state "$T_DIR/st.db" sync --name sample "$SRC" 2>"$T_DIR/lock.err";
	rc=$?; rm -f "$T_DIR/holding"; wait $hp;
	[ $rc -eq 0 ] && grep -q "another sync" "$T_DIR/lock.err" &&
	$SS --state "$T_DIR/st.db" sync --name sample "$SRC" >/dev/null
'

ok "exit codes: wrong password 77, unreachable server 75, missing dir 1" '
	echo wrong >"$T_DIR/badpw" &&
	expect_exit 77 $BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo \
		--password-file "$T_DIR/badpw" --state "$T_DIR/st.db" sync --name sample "$SRC" &&
	expect_exit 75 $BIN/stepsync --server 127.0.0.1:1 --user demo --password-file "$T_DIR/pw" \
		--timeout 5 --state "$T_DIR/st.db" sync --name sample "$SRC" &&
	expect_exit 1 $SS --state "$T_DIR/st.db" sync --name sample "$T_DIR/does-not-exist"
'

done_testing
