#!/bin/sh
# t2540-sync-many-small.sh — many one-block files take the pipelined path (SAVE+UPLOAD
# many deep over long-lived connections): against stepd, and against reference servers
# that break pipelining (glued packets) or never answer the completing UPLOAD; every
# time the restore must be identical, and a rerun after that must send nothing.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

make_small_tree() {
	for d in 0 1 2 3; do
		mkdir -p "$1/d$d"
		for f in 0 1 2 3 4 5 6 7 8 9 10 11; do
			head -c $((100 + d * 997 + f * 131)) /dev/urandom >"$1/d$d/f$f.bin"
		done
	done
	head -c 70000 /dev/urandom >"$1/d0/two-blocks.bin" # not one block: the careful way
	printf same >"$1/d1/copy-a" && printf same >"$1/d2/copy-b"
}
SRC=$T_DIR/tree
make_small_tree "$SRC"

start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"

ok "stepd: 51 files over 4 pipelined connections, restored identical, nothing left half-done" '
	$SS --state "$T_DIR/st.db" --json sync --name small "$SRC" >"$T_DIR/out.json" &&
	grep -q "\"sent_files\":50" "$T_DIR/out.json" &&
	$SS --state "$T_DIR/fresh.db" restore --name small --to "$T_DIR/r1" &&
	same_tree "$SRC" "$T_DIR/r1" &&
	[ "$(sqlite3 "$T_DIR/st.db" "SELECT count(*) FROM uploads" 2>/dev/null || echo 0)" = 0 ]
'

ok "stepd: a fresh state finds every object on the server (its listing), sends none" '
	$SS --state "$T_DIR/fresh2.db" --json sync --name small "$SRC" >"$T_DIR/out2.json" &&
	grep -q "\"sent_files\":0" "$T_DIR/out2.json" &&
	grep -q "\"sent_bytes\":0," "$T_DIR/out2.json"
'

ok "--skip-unchanged: a no-change rerun keeps the latest snapshot, a change or a newer one does not" '
	$SS --state "$T_DIR/st.db" sync --skip-unchanged --name small "$SRC" >"$T_DIR/skip1" &&
	grep -q "^snapshot small#3:" "$T_DIR/skip1" &&
	$SS --state "$T_DIR/st.db" sync --skip-unchanged --name small "$SRC" >"$T_DIR/skip2" &&
	grep -q "^snapshot small#3 unchanged" "$T_DIR/skip2" &&
	[ $($SS snapshots --name small | grep -c "^[0-9]") -eq 3 ] &&
	$SS --state "$T_DIR/st.db" sync --name small "$SRC" >"$T_DIR/skip3" &&
	grep -q "^snapshot small#4:" "$T_DIR/skip3" &&
	echo changed >"$SRC/d3/f0.bin" &&
	$SS --state "$T_DIR/st.db" sync --skip-unchanged --name small "$SRC" >"$T_DIR/skip4" &&
	grep -q "^snapshot small#5:" "$T_DIR/skip4" &&
	$SS --state "$T_DIR/st.db" sync --skip-unchanged --name small "$SRC" >"$T_DIR/skip5" &&
	grep -q "^snapshot small#5 unchanged" "$T_DIR/skip5" &&
	$SS --state "$T_DIR/fresh3.db" sync --name small "$SRC" >/dev/null &&
	$SS --state "$T_DIR/st.db" sync --skip-unchanged --name small "$SRC" >"$T_DIR/skip6" &&
	grep -q "^snapshot small#7:" "$T_DIR/skip6" &&
	$SS --state "$T_DIR/fresh4.db" restore --name small --to "$T_DIR/r7" &&
	same_tree "$SRC" "$T_DIR/r7"
'

# More small files than one batch: the first batches go out while the scan is still
# hashing; larger files (one of several blocks, one just over the scan's limit) follow it.
BIG=$T_DIR/bigtree
python3 - "$BIG" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(4500):
    d = os.path.join(root, "d%02d" % (i % 30))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%04d" % i), "wb") as f:
        f.write(os.urandom(50 + i % 400))
with open(os.path.join(root, "d00", "medium"), "wb") as f:
    f.write(os.urandom(20481))
with open(os.path.join(root, "d01", "large"), "wb") as f:
    f.write(os.urandom(300000))
PY
ok "stepd: 4,502 files, batches sent while the scan runs, restored identical" '
	$SS --state "$T_DIR/big.db" -v --json sync --name big "$BIG" >"$T_DIR/big.json" 2>"$T_DIR/big.err" &&
	grep -q "\"sent_files\":4502" "$T_DIR/big.json" &&
	grep -q "while scanning" "$T_DIR/big.err" &&
	[ "$(sqlite3 "$T_DIR/big.db" "SELECT count(*) FROM uploads" 2>/dev/null || echo 0)" = 0 ] &&
	$SS --state "$T_DIR/big-fresh.db" restore --name big --to "$T_DIR/rbig" &&
	same_tree "$BIG" "$T_DIR/rbig" &&
	$SS --state "$T_DIR/big.db" --json sync --name big "$BIG" >"$T_DIR/big2.json" &&
	grep -q "\"sent_files\":0" "$T_DIR/big2.json"
'

printf 12345678 >"$T_DIR/refpw"
for bug in glue noanswer-commit; do
	start_ref_server --bug $bug || exit 1
	ok "reference server with the $bug bug: sync (13 files) and restore still identical" '
		$BIN/stepsync --server 127.0.0.1:$REF_PORT --user 12345678 --password-file "$T_DIR/refpw" \
			--state "$T_DIR/$bug.db" --timeout 20 sync --name small "$SRC/d0" &&
		$BIN/stepsync --server 127.0.0.1:$REF_PORT --user 12345678 --password-file "$T_DIR/refpw" \
			--state "$T_DIR/$bug-fresh.db" restore --name small --to "$T_DIR/r-$bug" &&
		same_tree "$SRC/d0" "$T_DIR/r-$bug"
	'
	kill $REF_PID 2>/dev/null
	wait $REF_PID 2>/dev/null
	rm -rf "$T_DIR/ref.root"
done

done_testing
