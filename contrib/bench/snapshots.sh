#!/bin/bash
# contrib/bench/snapshots.sh — the figures of snapshot format 2 (content-defined chunks,
# tree objects, restore), each against restic and rsync measured in the same run on this
# machine. Called by bench.sh (BENCH_PARTS=snap) with W, BIN, TOP set; prints rows, asserts
# nothing.
#
#   BENCH_SNAP_MIB   size of the large file (default 1024)
#   BENCH_SMALL_N    small files for the restore test (default 20000)
#   BENCH_RESTORE_ROUNDS  rounds of that test (default 3), each tool once a round in an
#                    order that changes from round to round; the ratios are per round, the
#                    summary prints their median
#   BENCH_TREE_N     files of the large tree for the one-change test (default 200000)
set -u
: "${W:?}" "${BIN:?}" "${TOP:?}"
MIB=${BENCH_SNAP_MIB:-1024}
SMALL_N=${BENCH_SMALL_N:-20000}
TREE_N=${BENCH_TREE_N:-200000}
ROUNDS=${BENCH_RESTORE_ROUNDS:-3}
D=$W/snap
mkdir -p "$D"
PIDS=""
trap 'for p in $PIDS; do kill $p 2>/dev/null; done' EXIT

. "$TOP/contrib/bench/lib.sh"
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
# timeit VAR CMD... — runs CMD (output discarded), sets VAR to its seconds
timeit() {
	v=$1
	shift
	t0=$(now)
	"$@" >/dev/null 2>"$D/last.err" || { echo "# FAILED: $*"; tail -3 "$D/last.err"; }
	t1=$(now)
	eval "$v=$(secs "$t0" "$t1")"
}
jf() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])[sys.argv[2]])' "$1" "$2"; }

start_stepd() {
	name=$1
	rm -rf "$D/$name.root" "$D/$name.port"
	"$BIN/stepd" --bind 127.0.0.1 --port 0 --port-file "$D/$name.port" --root "$D/$name.root" --init \
		--auth open -q >"$D/$name.log" 2>&1 &
	PIDS="$PIDS $!"
	n=0
	while [ ! -s "$D/$name.port" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n + 1)); done
	PORT=$(cat "$D/$name.port")
}
SS() { "$BIN/stepsync" --server "127.0.0.1:$PORT" --user bench --password-file "$W/pw" -q "$@"; }
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$D/restic-cache
HAVE_RESTIC=0
command -v restic >/dev/null && HAVE_RESTIC=1
[ $HAVE_RESTIC = 1 ] || echo "# restic is not installed (apt-get install restic): its rows are left out"

start_stepd snap
rsyncd_start "$D"
RPORT=$RSYNC_PORT

echo "## one ${MIB} MiB file: first backup, changes, restore (stepsync -> stepd with chunks and trees)"
mkdir -p "$D/big"
head -c $((MIB << 20)) /dev/urandom >"$D/big/disk.img"
level "$D/big/disk.img"
timeit t_ss SS --state "$D/st.db" --json sync --name big "$D/big"
row "stepsync sync, first backup" "$t_ss" "$(rate "$MIB" "$t_ss")" "1.00"
level "$D/big/disk.img"
timeit t_rs rsync -a --whole-file --fsync "$D/big/" "rsync://127.0.0.1:$RPORT/bench/big/"
row "rsync -a --whole-file --fsync -> rsyncd (speedup of ours)" "$t_rs" "$(rate "$MIB" "$t_rs")" "$(ratio "$t_rs" "$t_ss")"
if [ $HAVE_RESTIC = 1 ]; then
	restic init -q --repo "$D/restic" >/dev/null 2>&1
	level "$D/big/disk.img"
	timeit t_rb restic -q --repo "$D/restic" backup "$D/big"
	row "restic backup, local repository (speedup of ours)" "$t_rb" "$(rate "$MIB" "$t_rb")" "$(ratio "$t_rb" "$t_ss")"
fi

# change KIND — applies one change to disk.img
change() {
	case $1 in
	overwrite) head -c 1048576 /dev/urandom |
		dd of="$D/big/disk.img" bs=1048576 seek=$((MIB / 2)) conv=notrunc status=none ;;
	append) head -c 1048576 /dev/urandom >>"$D/big/disk.img" ;;
	insert) { printf x; cat "$D/big/disk.img"; } >"$D/big.new" && mv "$D/big.new" "$D/big/disk.img" ;;
	esac
}
for kind in overwrite append insert; do
	change $kind
	t0=$(now)
	SS --state "$D/st.db" --json sync --name big "$D/big" >"$D/$kind.json" || echo "# FAILED: sync"
	t1=$(now)
	t_s=$(secs "$t0" "$t1")
	sent=$(jf "$D/$kind.json" sent_bytes)
	trees=$(jf "$D/$kind.json" tree_bytes_sent)
	chunks=$(jf "$D/$kind.json" chunks_sent)
	case $kind in
	overwrite) what="1 MiB overwritten in the middle" ;;
	append) what="1 MiB appended" ;;
	insert) what="1 byte inserted at offset 0" ;;
	esac
	row "$what: stepsync (MiB of chunks sent)" "$t_s" "$(mib "$sent")" "$chunks ch"
	echo "#   chunks: $chunks ($sent bytes) + trees: $trees bytes; goal <= 3 MiB + trees (insert: <= 2 chunks)"
	if [ $HAVE_RESTIC = 1 ]; then
		before=$(du -sb "$D/restic" | cut -f1)
		timeit t_r restic -q --repo "$D/restic" backup "$D/big"
		grown=$(($(du -sb "$D/restic" | cut -f1) - before))
		row "  restic backup, same change (MiB repo growth; speedup)" "$t_r" "$(mib "$grown")" "$(ratio "$t_r" "$t_s")"
	fi
done

rm -rf "$D/out.big"
level
timeit t_sr SS --state "$D/fresh.db" restore --name big --to "$D/out.big"
cmp -s "$D/big/disk.img" "$D/out.big/disk.img" || echo "# WARNING: restore differs"
row "stepsync restore (empty state) of the large file" "$t_sr" "$(rate "$MIB" "$t_sr")" "1.00"
if [ $HAVE_RESTIC = 1 ]; then
	rm -rf "$D/out.restic"
	level
	timeit t_rr restic -q --repo "$D/restic" restore latest --target "$D/out.restic"
	row "restic restore of the same (speedup of ours)" "$t_rr" "$(rate "$MIB" "$t_rr")" "$(ratio "$t_rr" "$t_sr")"
fi
rm -rf "$D/big" "$D/out.big" "$D/out.restic" "$D/restic" "$D/rsync.dst/big" "$D/big.new"

echo "## restore ${SMALL_N} files of 1-8 KiB in 200 folders from an empty state"
python3 - "$D/small" "$SMALL_N" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 200))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.dat" % i), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(1024, 8192)))
PY
smib=$(du -sm "$D/small" | cut -f1)
SS --state "$D/st.db" sync --name small "$D/small" >/dev/null || echo "# FAILED: sync small"
rsync -a "$D/small/" "rsync://127.0.0.1:$RPORT/bench/small/"
if [ $HAVE_RESTIC = 1 ]; then
	restic init -q --repo "$D/restic2" >/dev/null 2>&1
	restic -q --repo "$D/restic2" backup "$D/small" >/dev/null
fi
# Fair to each side: a sync before every run, so that nobody pays for flushing what the
# setup (or the run before) left dirty (ours ends with a syncfs of the whole file system,
# which would write the source tree, the server's and rsyncd's copies too); every run writes
# into a directory of its own and nothing is deleted until the end (on ext4 without a journal
# the inodes of a tree deleted less than a minute before are skipped over one by one by the
# next allocations in the same groups: a cost for whoever comes next, not for the tool); the
# order of the tools changes from round to round.
R_RS="" R_RR="" R_RSS=""
for r in $(seq 1 "$ROUNDS"); do
	case $((r % 4)) in
	1) order="ss rs rr rss" ;;
	2) order="rs rr rss ss" ;;
	3) order="rr rss ss rs" ;;
	0) order="rss ss rs rr" ;;
	esac
	[ "$ROUNDS" -gt 1 ] && echo "# round $r: $order"
	for x in $order; do
		sync
		case $x in
		ss) timeit t_sr SS --state "$D/fresh.$r.db" restore --name small --to "$D/out.small.$r" ;;
		rs) timeit t_rp rsync -a "rsync://127.0.0.1:$RPORT/bench/small/" "$D/out.rsync.$r/" ;;
		rss) timeit t_rs sh -c "rsync -a rsync://127.0.0.1:$RPORT/bench/small/ $D/out.rsyncs.$r/ &&
			sync -f $D/out.rsyncs.$r" ;;
		rr) [ $HAVE_RESTIC = 1 ] &&
			timeit t_rr restic -q --repo "$D/restic2" restore latest --target "$D/out.restic2.$r" ;;
		esac
	done
	row "stepsync restore (syncfs at the end)" "$t_sr" "$(rate "$smib" "$t_sr")" "1.00"
	row "rsync -a pulling the tree from rsyncd (speedup of ours)" "$t_rp" "$(rate "$smib" "$t_rp")" "$(ratio "$t_rp" "$t_sr")"
	R_RS="$R_RS $(ratio "$t_rp" "$t_sr")"
	row "  the same, then sync -f (as durable as ours; speedup)" "$t_rs" "$(rate "$smib" "$t_rs")" "$(ratio "$t_rs" "$t_sr")"
	R_RSS="$R_RSS $(ratio "$t_rs" "$t_sr")"
	if [ $HAVE_RESTIC = 1 ]; then
		row "restic restore (speedup of ours)" "$t_rr" "$(rate "$smib" "$t_rr")" "$(ratio "$t_rr" "$t_sr")"
		R_RR="$R_RR $(ratio "$t_rr" "$t_sr")"
	fi
	diff -r "$D/small" "$D/out.small.$r" >/dev/null || echo "# WARNING: restore differs"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "# speedup of stepsync restore, median of $ROUNDS round(s) [each round]: over rsync -a $(median $R_RS) [$R_RS ] (goal >= 1),"
echo "#   over rsync -a + sync -f $(median $R_RSS) [$R_RSS ]${R_RR:+, over restic restore $(median $R_RR) [$R_RR ] (goal >= 1.5)}"
rm -rf "$D/small" "$D"/out.small.* "$D"/out.rsync.* "$D"/out.rsyncs.* "$D/restic2" "$D"/out.restic2.* "$D"/fresh.*.db "$D/rsync.dst/small"

echo "## ${TREE_N} files in $((TREE_N / 100)) folders, one 100-byte file changed"
python3 - "$D/tree" "$TREE_N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "g%02d" % (i % 20), "d%04d" % (i % (n // 100)))
    if i < n // 100:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(b"%099d\n" % i)
PY
SS --state "$D/st3.db" sync --name tree "$D/tree" >/dev/null || echo "# FAILED: sync tree"
printf '%099d\n' 42 | tr 0 x >"$D/tree/g01/d0001/f002001"
t0=$(now)
SS --state "$D/st3.db" --json sync --name tree "$D/tree" >"$D/tree.json" || echo "# FAILED: sync"
t1=$(now)
sent=$(jf "$D/tree.json" sent_bytes)
trees=$(jf "$D/tree.json" tree_bytes_sent)
row "stepsync sync after one change: bytes of file + trees" "$(secs "$t0" "$t1")" "$((sent + trees))" ""
echo "#   file: $sent bytes, trees: $trees bytes ($(jf "$D/tree.json" trees_sent) trees); goal <= file + 64 KiB"
rm -rf "$D/tree"
