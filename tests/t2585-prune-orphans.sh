#!/bin/sh
# t2585 — prune also deletes orphans: objects and trees that no snapshot references at
# all (here: those of a snapshot whose record was deleted by hand, as a run stopped
# before its snapshot leaves them), once older than --grace (the server's commit times,
# list_mtime); younger ones stay. Keys that are not sync's (a put's "o.notahash", "mydoc")
# and everything a snapshot references stay; the remaining snapshot restores and checks;
# a later sync sends a deleted object again. The reference server (no list_mtime) keeps
# its orphans. A bad --grace is a usage error.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

t_start 'stepd starts (auth open)' --auth open
echo alice >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user alice --password-file $T_DIR/pw"
SRC=$T_DIR/tree

# keys PREFIX — alice's object keys that start with PREFIX, one per line (LIST).
keys() {
	python3 - "$STEPD_PORT" "$1" "$TOP/tests" <<'EOF'
import sys
sys.path.insert(0, sys.argv[3])
import server_wire as w
c, tok = w.session(int(sys.argv[1]), "alice")
after = ""
while True:
    rep, _ = w.expect(c, w.r("FILE", "LIST", token=tok, prefix=sys.argv[2], after=after), 200)
    for k in rep["keys"]:
        print(k)
    if not rep["more"] or not rep["keys"]:
        break
    after = rep["keys"][-1]
EOF
}
has() { $SS info "$1" >/dev/null 2>&1; }
objkey() { echo "o.$(sha256sum "$1" | cut -c1-64)"; }

ok 'snapshot #1 of a tree; #2 adds a 3 MiB file (chunks) and a small one' '
	mkdir -p "$SRC" && echo base >"$SRC/base.txt" &&
	$SS --state st.db sync --name tree "$SRC" >/dev/null &&
	cp -a "$SRC" snap1 && keys o. | sort >keys1.o && keys t. | sort >keys1.t &&
	head -c 3145728 /dev/urandom >"$SRC/big.img" && echo gone-soon >"$SRC/small.txt" &&
	cp "$SRC/big.img" "$SRC/small.txt" . &&
	$SS --state st.db sync --name tree "$SRC" >/dev/null &&
	keys o. | sort >keys2.o && keys t. | sort >keys2.t &&
	[ "$(comm -13 keys1.o keys2.o | wc -l)" -ge 3 ] && has "$(objkey small.txt)"'

ok 'deleting record #2 by hand leaves its new objects and trees referenced by nothing' '
	$SS rm "s.tree.0000000002" >/dev/null && rm -f "$SRC/big.img" "$SRC/small.txt" &&
	echo not sync data >mine && $SS put --key mydoc mine >/dev/null &&
	$SS put --key o.notahash mine >/dev/null &&
	$SS put --key "$(objkey mine)" mine >/dev/null &&
	[ "$($SS --state list.db snapshots --name tree | sed 1d | wc -l)" = 1 ] &&
	echo $(( $(comm -13 keys1.o keys2.o | wc -l) + $(comm -13 keys1.t keys2.t | wc -l) + 1 )) >norphans'

ok 'prune --grace 1h: the orphans are younger than that, nothing is deleted' '
	n=$(cat norphans) &&
	$SS --state st.db prune --name tree --keep-last 5 --grace 1h >out && cat out &&
	grep -q "deleted 0 snapshots and 0 unreferenced objects" out &&
	grep -q "$n unreferenced objects younger than --grace (3600 s) left" out &&
	has "$(objkey small.txt)" && has "$(objkey mine)"'

ok 'prune --grace 0: every orphan goes (chunks, trees, an o. key put by hand); the rest stays' '
	n=$(cat norphans) &&
	$SS --state st.db prune --name tree --keep-last 5 --grace 0 >out && cat out &&
	grep -q "deleted 0 snapshots and $n unreferenced objects; kept 1 snapshot" out &&
	keys o. | sort >keys3.o && keys t. | sort >keys3.t &&
	grep -v "^o\.notahash$" keys3.o | diff keys1.o - && diff keys1.t keys3.t &&
	has mydoc && has o.notahash && ! has "$(objkey small.txt)" && ! has "$(objkey mine)"'

ok 'snapshot #1 restores from a fresh state and check finds nothing missing' '
	$SS --state fresh.db restore --name tree --to out1 && same_tree snap1 out1 &&
	$SS --state fresh2.db check --name tree'

ok 'the next sync sends the deleted file and chunks again (the state forgot them)' '
	cp big.img small.txt "$SRC/" && $SS --state st.db sync --name tree "$SRC" >/dev/null &&
	has "$(objkey small.txt)" && rm -rf out2 &&
	$SS --state fresh3.db restore --name tree --to out2 && cmp out2/big.img big.img &&
	$SS --state fresh4.db check --name tree --read-data'

# A backup (another host: its own state) under way while prune --grace 0 runs: prune
# deletes the chunks it has sent so far, so it must not record a snapshot (objgen).
head -c 16777216 /dev/urandom >"$T_DIR/other.img"
mkdir -p "$T_DIR/other" && cp "$T_DIR/other.img" "$T_DIR/other/"
keys o. | sort >"$T_DIR/keys4.o"
new_chunks() { keys o. | sort | comm -13 "$T_DIR/keys4.o" - | grep -q .; }
$SS --state "$T_DIR/other.db" --bwlimit 1M sync --name other "$T_DIR/other" \
	>"$T_DIR/other.out" 2>&1 &
opid=$!
track_pid $opid
ok 'a second backup is under way (a chunk of it committed)' \
	"wait_for 'new_chunks || ! kill -0 $opid' 400 && kill -0 $opid"
ok 'prune --grace 0 meanwhile deletes what that backup has sent so far' '
	keys o. | sort | comm -13 keys4.o - >sent &&
	$SS --state st.db prune --name tree --keep-last 5 --grace 0 >out && cat out &&
	keys o. | sort | comm -12 sent - >still && [ -s sent ] && [ ! -s still ]'
wait $opid
orc=$?
ok "that backup records no snapshot: exit 75 (got $orc), and says why" \
	'[ $orc -eq 75 ] && grep -q "objects were deleted on the server" other.out &&
	[ "$($SS --state list2.db snapshots --name other 2>/dev/null | sed 1d | wc -l)" = 0 ]'
ok 'its next run sends everything again; the snapshot restores and checks' '
	$SS --state other.db sync --name other other >/dev/null &&
	$SS --state fresh5.db restore --name other --to out5 && cmp out5/other.img other.img &&
	$SS --state fresh6.db check --name other --read-data'

# The narrowest case: a backup held (test hook, two FIFOs) after its uploads and just
# before it records its snapshot, while prune --grace 0 reads the snapshots and deletes
# that backup's chunks; then the backup records. It must take the snapshot back.
mkdir -p "$T_DIR/hold" && mkfifo "$T_DIR/hold/ready" "$T_DIR/hold/go"
head -c 2097152 /dev/urandom >"$T_DIR/other/late.img" && cp "$T_DIR/other/late.img" "$T_DIR/"
STEPSYNC_TEST_HOLD_RECORD=$T_DIR/hold $SS --state "$T_DIR/other.db" sync --name other \
	"$T_DIR/other" >"$T_DIR/held.out" 2>&1 &
hpid=$!
track_pid $hpid
ok 'a backup is held just before recording its snapshot' 'cat hold/ready >/dev/null'
ok 'prune --grace 0 deletes its chunks meanwhile (it sees no snapshot of them)' '
	$SS --state st.db prune --name tree --keep-last 5 --grace 0 >out && cat out &&
	! has "$(objkey late.img)" && grep -q "and [1-9][0-9]* unreferenced objects" out'
echo go >"$T_DIR/hold/go"
wait $hpid
hrc=$?
ok "released, it records, finds the generation moved, takes its snapshot back: exit 75 (got $hrc)" \
	'[ $hrc -eq 75 ] && cat held.out && grep -q "objects were deleted on the server" held.out &&
	[ "$($SS --state list3.db snapshots --name other | sed 1d | wc -l)" = 1 ] &&
	! $SS data get "i.other.0000000002" >/dev/null 2>&1 &&
	$SS --state fresh7.db check --name other'
ok 'the next run records a snapshot that restores and checks' '
	$SS --state other.db sync --name other other >/dev/null &&
	$SS --state fresh8.db restore --name other --to out8 && cmp out8/late.img late.img &&
	$SS --state fresh9.db check --name other --read-data'

# The other side: a prune held (test hook) after it moved the generation and read the
# snapshots, just before its first deletion, while a whole backup runs, reuses an orphan
# (its state lists what the server holds) and records. That backup saw no deletion, so
# it keeps its snapshot; prune, after deleting the orphan, must find that snapshot.
mkdir -p "$T_DIR/hold2" "$T_DIR/late" "$T_DIR/late2" && mkfifo "$T_DIR/hold2/ready" "$T_DIR/hold2/go"
echo "content that becomes an orphan" >"$T_DIR/late/x" && cp "$T_DIR/late/x" "$T_DIR/late2/x"
ok 'an orphan: a file of a snapshot whose record is deleted by hand' '
	$SS --state late.db sync --name late late >/dev/null && $SS rm s.late.0000000001 >/dev/null &&
	has "$(objkey late/x)"'
STEPSYNC_TEST_HOLD_PRUNE=$T_DIR/hold2 $SS --state st.db prune --name tree --keep-last 5 \
	--grace 0 >"$T_DIR/p.out" 2>"$T_DIR/p.err" &
ppid=$!
track_pid $ppid
ok 'prune is held just before its first deletion' 'cat hold2/ready >/dev/null'
ok 'meanwhile a backup reusing the orphan records its snapshot (exit 0)' '
	$SS --state late2.db sync --name late2 late2 >/dev/null &&
	[ "$($SS --state list4.db snapshots --name late2 | sed 1d | wc -l)" = 1 ]'
echo go >"$T_DIR/hold2/go"
wait $ppid
prc=$?
ok "released, prune deletes the orphan and then that snapshot, and says so (exit $prc)" \
	'[ $prc -eq 0 ] && cat p.out p.err && ! has "$(objkey late/x)" &&
	grep -q "s.late2.0000000001. was recorded while this prune deleted objects it uses" p.err &&
	[ "$($SS --state list5.db snapshots --name late2 | sed 1d | wc -l)" = 0 ] &&
	! $SS data get i.late2.0000000001 >/dev/null 2>&1'
ok 'no snapshot of any name points at a missing object; late2 backs up and restores again' '
	$SS --state fresh10.db check --name tree && $SS --state fresh11.db check --name other &&
	$SS --state late2.db sync --name late2 late2 >/dev/null &&
	$SS --state fresh12.db restore --name late2 --to out12 && cmp out12/x late2/x &&
	$SS --state fresh13.db check --name late2 --read-data'

ok 'a bad --grace is a usage error (exit 2); nothing deleted' '
	expect_exit 2 $SS --state st.db prune --name tree --keep-last 1 --grace 5x 2>err &&
	grep -q "grace needs a time" err &&
	expect_exit 2 $SS --state st.db prune --name tree --keep-last 1 --grace "" 2>err &&
	[ "$($SS --state list.db snapshots --name tree | sed 1d | wc -l)" = 2 ]'

# ---- the reference server: no commit times, so orphans are left ----
start_ref_server || exit 1
printf '%s' 12345678 >"$T_DIR/rpw"
RS="$BIN/stepsync --server 127.0.0.1:$REF_PORT --user 12345678 --password-file $T_DIR/rpw"
ok 'reference server: prune --grace 0 keeps an orphan it cannot know is one' '
	mkdir -p rtree && echo r1 >rtree/a && $RS --state rst.db sync --name r rtree >/dev/null &&
	echo r2 >rtree/b && $RS --state rst.db sync --name r rtree >/dev/null &&
	$RS rm s.r.0000000002 >/dev/null &&
	$RS --state rst.db prune --name r --keep-last 5 --grace 0 >out && cat out &&
	grep -q "deleted 0 snapshots" out &&
	[ -e "$T_DIR/ref.root/12345678/$(objkey rtree/b)" ]'

t_stop 'stepd exits 0 on SIGTERM'
done_testing
