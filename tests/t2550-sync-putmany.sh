#!/bin/sh
# t2550-sync-putmany.sh — against stepd (which advertises putmany) the small files a sync
# has read go in PUTMANY requests: a tree of many small files (and larger ones, empty
# ones, copies of one content, sizes around the 16 KiB limit) is sent mostly that way
# (counted in stepd's -v log) and restores identical with a fresh state; a fresh state's
# rerun finds every object (402, checked with GET) and sends none; a failed commit and
# failed allocations (whole requests and single entries refused) fall back to SAVE +
# UPLOAD and the restore is still identical.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

SRC=$T_DIR/tree
python3 - "$SRC" <<'PY'
import os, random, sys
root, rnd = sys.argv[1], random.Random(2550)
for i in range(3000):
    d = os.path.join(root, "d%02d" % (i % 40), "s%d" % (i % 3))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%04d.bin" % i), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(1024, 8192)))
same = rnd.randbytes(5000)
for i in range(5):  # one content under five names: one object
    with open(os.path.join(root, "d0%d" % i, "copy.bin"), "wb") as f:
        f.write(same)
for n in (1, 16383, 16384, 16385, 20480, 20481, 70000, 300000):
    with open(os.path.join(root, "d00", "size-%d" % n), "wb") as f:
        f.write(rnd.randbytes(n))
for i in range(3):
    open(os.path.join(root, "d01", "empty%d" % i), "wb").close()
PY
# 3000 + 1 copy + 8 sizes (empty files need no object)
NOBJ=3009
# PUTMANY takes the files of 1..16384 bytes: 3000 + copy + 3 sizes
NPM=3004

start_stepd --auth open -v || exit 1
echo demo >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"

# putmany_objects LOG — the objects of every PUTMANY stepd logged (at -v).
putmany_objects() {
	sed -n 's/.*PUTMANY: \([0-9]*\) objects.*/\1/p' "$1" | awk '{n += $1} END {print n + 0}'
}

ok "sync of $NOBJ objects: the small ones in PUTMANY requests, restored identical" '
	$SS --state "$T_DIR/st.db" -v --json sync --name pm "$SRC" >"$T_DIR/out.json" 2>"$T_DIR/out.err" &&
	grep -q "\"sent_files\":$NOBJ," "$T_DIR/out.json" &&
	n=$(putmany_objects "$STEPD_LOG") && echo "PUTMANY objects: $n" &&
	[ "$n" -eq $NPM ] && [ $(grep -c "PUTMANY: " "$STEPD_LOG") -lt 60 ] &&
	! grep -q "PUTMANY refused" "$T_DIR/out.err" &&
	[ "$(sqlite3 "$T_DIR/st.db" "SELECT count(*) FROM uploads" 2>/dev/null || echo 0)" = 0 ] &&
	$SS --state "$T_DIR/fresh.db" restore --name pm --to "$T_DIR/r1" &&
	same_tree "$SRC" "$T_DIR/r1"
'

ok "a fresh state: the server listing confirms every object, none is sent" '
	n1=$(grep -c "PUTMANY: " "$STEPD_LOG") &&
	$SS --state "$T_DIR/fresh2.db" --json sync --name pm "$SRC" >"$T_DIR/out2.json" &&
	grep -q "\"sent_files\":0," "$T_DIR/out2.json" &&
	grep -q "\"sent_bytes\":0," "$T_DIR/out2.json" &&
	[ "$(grep -c "PUTMANY: " "$STEPD_LOG")" -eq "$n1" ]
'

ok "a changed file and a new one go in a PUTMANY; the restore has them" '
	printf changed >"$SRC/d05/s0/f0005.bin" && printf new >"$SRC/d06/new.txt" &&
	before=$(putmany_objects "$STEPD_LOG") &&
	$SS --state "$T_DIR/st.db" --json sync --name pm "$SRC" >"$T_DIR/out3.json" &&
	grep -q "\"sent_files\":2," "$T_DIR/out3.json" &&
	[ $(($(putmany_objects "$STEPD_LOG") - before)) -eq 2 ] &&
	$SS --state "$T_DIR/fresh3.db" restore --name pm --to "$T_DIR/r3" &&
	same_tree "$SRC" "$T_DIR/r3"
'
t_stop 'SIGTERM exits 0'

# A failed commit sync: the entries of the PUTMANY it held are answered 507 and their
# files go with SAVE + UPLOAD (or, when the directory's tree was in that commit, the
# tree's upload is answered 507 and tried again).
SMALL=$T_DIR/small
mkdir -p "$SMALL" && for i in $(seq 1 40); do head -c $((i * 200)) /dev/urandom >"$SMALL/f$i"; done
STEPD_NAME=fsync
export STEP_FAULT=fsync:1
t_start 'stepd starts with a failing first commit sync' --auth open -v
unset STEP_FAULT
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
ok "fsync fault: the refused entries are sent again, restore identical" '
	$SS --state "$T_DIR/fs.db" -v --json sync --name fs "$SMALL" >"$T_DIR/fs.json" 2>"$T_DIR/fs.err" &&
	grep -q "\"sent_files\":40," "$T_DIR/fs.json" &&
	grep -q "test fault hook: " "$STEPD_LOG" &&
	{ grep -q "PUTMANY: [0-9]* of [0-9]* files not stored" "$T_DIR/fs.err" ||
	  grep -q "(507); trying again" "$T_DIR/fs.err"; } &&
	[ "$(putmany_objects "$STEPD_LOG")" -ge 1 ] &&
	$SS --state "$T_DIR/fs-fresh.db" restore --name fs --to "$T_DIR/rfs" &&
	same_tree "$SMALL" "$T_DIR/rfs"
'
t_stop 'SIGTERM exits 0'

# Allocation failures early in a fresh stepd (login, the PUTMANY request, its entries, the
# commit): whatever fails, the sync succeeds (or a rerun does: a failed LIST or snapshot
# save ends a sync with an error), nothing is presented as stored that is not, and the
# restore is identical. Some of these runs see a PUTMANY refused as a whole.
TINY=$T_DIR/tiny
mkdir -p "$TINY" && for i in $(seq 1 10); do head -c $((i * 300)) /dev/urandom >"$TINY/f$i"; done
ok "alloc faults 1..16: every restore identical, whole-request refusals fall back" '
	refused=0 && for k in $(seq 1 16); do
		rm -rf "$T_DIR/af.root" "$T_DIR"/af.db* "$T_DIR"/af-fresh.db* "$T_DIR/raf" &&
		STEP_FAULT=alloc:$k STEPD_NAME=af start_stepd --auth open &&
		SA="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw" &&
		{ $SA --state "$T_DIR/af.db" -v sync --name af "$TINY" >/dev/null 2>"$T_DIR/af.err" ||
			$SA --state "$T_DIR/af.db" sync --name af "$TINY" >/dev/null; } &&
		{ ! grep -q "PUTMANY refused" "$T_DIR/af.err" || refused=$((refused + 1)); } &&
		$SA --state "$T_DIR/af-fresh.db" restore --name af --to "$T_DIR/raf" &&
		same_tree "$TINY" "$T_DIR/raf" &&
		stop_stepd || { echo "alloc:$k failed"; exit 1; }
	done && echo "whole PUTMANY refused in $refused runs" && [ $refused -ge 1 ]
'

done_testing
