#!/bin/sh
# t2560-sync-chunks.sh — snapshot format 2 against stepd: large files go up as
# content-defined chunks and directories as tree objects, so a change costs the chunks
# around it and one tree per directory on its path; identical chunks are stored once;
# restore (whole or --path), check and prune read the trees; format-1 snapshots still
# restore; the agent's cache of what the server holds is not trusted blindly.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
SRC=$T_DIR/tree
mkdir -p "$SRC/a/b/c" "$SRC/other"
head -c 25165824 /dev/urandom >"$SRC/big.img" # 24 MiB
for i in 1 2 3 4 5; do echo "small $i" >"$SRC/a/b/c/f$i.txt"; echo "o $i" >"$SRC/other/o$i"; done
head -c 100000 /dev/urandom >"$SRC/a/medium.bin"

# sync_json LABEL — a sync of $SRC with the main state, JSON in $T_DIR/LABEL.json.
sync_json() {
	$SS --state "$T_DIR/st.db" --json sync --name t "$SRC" >"$T_DIR/$1.json"
}
field() {
	json_field "$T_DIR/$1.json" "$2"
}

ok "first sync: the large file goes up as chunks, restore with a fresh state is identical" '
	sync_json s1 && [ "$(field s1 chunks_sent)" -ge 3 ] &&
	[ "$(field s1 trees_sent)" -eq 5 ] &&
	$SS --state "$T_DIR/f1.db" restore --name t --to "$T_DIR/r1" && same_tree "$SRC" "$T_DIR/r1"
'

ok "no change: nothing sent, not even a tree" '
	sync_json s2 && [ "$(field s2 sent_bytes)" -eq 0 ] && [ "$(field s2 trees_sent)" -eq 0 ]
'

ok "1 MiB overwritten in the middle: a few chunks, not the file" '
	head -c 1048576 /dev/urandom | dd of="$SRC/big.img" bs=1048576 seek=12 conv=notrunc status=none &&
	sync_json s3 && echo "sent $(field s3 sent_bytes) bytes in $(field s3 chunks_sent) chunks" &&
	[ "$(field s3 chunks_sent)" -le 8 ] && [ "$(field s3 sent_bytes)" -le 5242880 ] &&
	[ "$(field s3 trees_sent)" -eq 1 ]
'

ok "one byte inserted at offset 0: at most two new chunks" '
	{ printf x; cat "$SRC/big.img"; } >"$T_DIR/big.new" && mv "$T_DIR/big.new" "$SRC/big.img" &&
	sync_json s4 && echo "sent $(field s4 chunks_sent) chunks" &&
	[ "$(field s4 chunks_sent)" -ge 1 ] && [ "$(field s4 chunks_sent)" -le 2 ]
'

ok "a copy of the large file sends no chunk (identical chunks are stored once)" '
	cp "$SRC/big.img" "$SRC/other/copy.img" && sync_json s5 &&
	[ "$(field s5 chunks_sent)" -eq 0 ] && [ "$(field s5 sent_bytes)" -eq 0 ]
'

ok "a small change three levels down: the file and one tree per directory on its path" '
	echo changed >>"$SRC/a/b/c/f3.txt" && sync_json s6 &&
	[ "$(field s6 sent_files)" -eq 1 ] && [ "$(field s6 trees_sent)" -eq 4 ] &&
	[ "$(field s6 tree_bytes_sent)" -lt 4096 ]
'

ok "every snapshot restores exactly as it was (fresh state)" '
	cp -a "$SRC" "$T_DIR/now" &&
	$SS --state "$T_DIR/f2.db" restore --name t --snapshot 6 --to "$T_DIR/r6" &&
	same_tree "$T_DIR/now" "$T_DIR/r6" &&
	$SS --state "$T_DIR/f2.db" restore --name t --snapshot 1 --to "$T_DIR/r1b" &&
	same_tree "$T_DIR/r1" "$T_DIR/r1b"
'

ok "restore --path: one directory, one file, an unknown path" '
	$SS restore --name t --path a/b --to "$T_DIR/rp" &&
	[ -f "$T_DIR/rp/a/b/c/f1.txt" ] && [ ! -e "$T_DIR/rp/big.img" ] && [ ! -e "$T_DIR/rp/other" ] &&
	$SS restore --name t --path big.img --to "$T_DIR/rp2" && cmp "$SRC/big.img" "$T_DIR/rp2/big.img" &&
	[ "$(ls "$T_DIR/rp2")" = big.img ] &&
	expect_exit 2 $SS restore --name t --path ../x --to "$T_DIR/rp3"
'

ok "setuid and world-writable bits are dropped unless --preserve-special-bits" '
	mkdir -p "$SRC/sp/open" && echo x >"$SRC/sp/suid" && chmod 4755 "$SRC/sp/suid" &&
	chmod 1777 "$SRC/sp/open" && sync_json s7 &&
	$SS restore --name t --path sp --to "$T_DIR/rs" &&
	[ "$(stat -c %a "$T_DIR/rs/sp/suid")" = 755 ] && [ "$(stat -c %a "$T_DIR/rs/sp/open")" = 775 ] &&
	$SS restore --name t --path sp --preserve-special-bits --to "$T_DIR/rs2" &&
	[ "$(stat -c %a "$T_DIR/rs2/sp/suid")" = 4755 ] && [ "$(stat -c %a "$T_DIR/rs2/sp/open")" = 1777 ] &&
	rm -rf "$SRC/sp"
'

ok "check finds no damage; --read-data re-hashes everything" '
	$SS check --name t >"$T_DIR/check.out" && grep -q "no damage found" "$T_DIR/check.out" &&
	$SS check --name t --read-data >"$T_DIR/check2.out" && grep -q "no damage found" "$T_DIR/check2.out"
'

# An object deleted by another client behind the agent's back.
victim=o.$(sha256sum "$SRC/a/b/c/f1.txt" | cut -c1-64)
ok "an object deleted by another client: check says so, the next sync sends it again" '
	$SS rm "$victim" && expect_exit 1 $SS check --name t 2>"$T_DIR/check3.err" &&
	grep -q "$victim" "$T_DIR/check3.err" &&
	sync_json s8 && [ "$(field s8 sent_files)" -eq 1 ] &&
	$SS check --name t && $SS --state "$T_DIR/f3.db" restore --name t --to "$T_DIR/r8" &&
	same_tree "$SRC" "$T_DIR/r8"
'

ok "prune --keep 1: older chunks go, the latest snapshot still checks and restores" '
	n0=$(du -sk "$STEPD_ROOT/obj" "$STEPD_ROOT/pack" | awk "{s += \$1} END {print s}") &&
	$SS --state "$T_DIR/st.db" prune --name t --keep 1 >"$T_DIR/prune.out" && cat "$T_DIR/prune.out" &&
	n1=$(du -sk "$STEPD_ROOT/obj" "$STEPD_ROOT/pack" | awk "{s += \$1} END {print s}") &&
	echo "store: $n0 KiB before, $n1 KiB after" && [ "$n1" -lt "$n0" ] &&
	$SS check --name t --read-data &&
	$SS --state "$T_DIR/f4.db" restore --name t --to "$T_DIR/r9" && same_tree "$SRC" "$T_DIR/r9"
'

# A format-1 snapshot (a JSON-lines manifest), as the previous release wrote them.
ok "a format-1 snapshot still restores and checks" '
	mkdir -p "$T_DIR/old" && printf "old content\n" >"$T_DIR/old/f.txt" &&
	sha=$(sha256sum "$T_DIR/old/f.txt" | cut -c1-64) && md5=$(md5sum "$T_DIR/old/f.txt" | cut -c1-32) &&
	$SS put --key "o.$sha" "$T_DIR/old/f.txt" >/dev/null &&
	{ echo "{\"stepsync_manifest\":1,\"name\":\"old\",\"seq\":1,\"time\":1600000000,\"files\":1,\"dirs\":1,\"symlinks\":0,\"bytes\":12}";
	  echo "{\"path\":\"d\",\"type\":\"dir\",\"mode\":493,\"mtime_ns\":1600000000000000000}";
	  echo "{\"path\":\"d/f.txt\",\"type\":\"file\",\"mode\":420,\"mtime_ns\":1600000000000000000,\"size\":12,\"key\":\"o.$sha\",\"md5\":\"$md5\"}";
	  echo "{\"end\":2}"; } >"$T_DIR/old.manifest" &&
	$SS put --key s.old.0000000001 "$T_DIR/old.manifest" >/dev/null &&
	$SS restore --name old --to "$T_DIR/rold" && cmp "$T_DIR/old/f.txt" "$T_DIR/rold/d/f.txt" &&
	$SS check --name old
'

done_testing
