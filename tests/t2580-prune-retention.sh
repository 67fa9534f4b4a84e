#!/bin/sh
# t2580 — retention: prune --keep-last/--keep-hourly/--keep-daily/--keep-monthly keeps
# exactly what restic's rules keep (snapshot times set by the test: each snapshot's DATA
# record, which prune reads its time from, is rewritten with `stepsync data`), --dry-run
# changes nothing, objects only the deleted snapshots used go, the kept ones restore and
# check; the same against the reference server (no LIST: snapshots found by probing,
# with gaps); `keep =` in the config; bad rules are refused.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"
export TZ=UTC

t_start 'stepd starts (auth open)' --auth open
echo alice >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user alice --password-file $T_DIR/pw"
SRC=$T_DIR/tree

# eight_snapshots SS STATE — snapshots 1..8 of $SRC; file only-N.txt exists only in
# snapshot N, so its object is referenced by that snapshot alone; copies in snapN/.
eight_snapshots() {
	mkdir -p "$SRC" && echo base >"$SRC/base.txt" || return 1
	for i in 1 2 3 4 5 6 7 8; do
		rm -f "$SRC"/only-*.txt && echo "only in snapshot $i $2" >"$SRC/only-$i.txt" &&
			rm -rf "$T_DIR/snap$i" && cp -a "$SRC" "$T_DIR/snap$i" &&
			$1 --state "$2" sync --name tree "$SRC" >/dev/null || return 1
	done
}

# set_times SS — the timeline of test_retention.c: two snapshots in January, then
# Feb 3 09:00 and 15:00, Feb 4 08:00, 08:30, 09:10, 09:20.
set_times() {
	i=0
	for t in 2026-01-05T10:00 2026-01-20T10:00 2026-02-03T09:00 2026-02-03T15:00 \
		2026-02-04T08:00 2026-02-04T08:30 2026-02-04T09:10 2026-02-04T09:20; do
		i=$((i + 1))
		k=$(printf 'i.tree.%010d' $i)
		s=$(date -u -d "$t" +%s) &&
			$1 data rm "$k" >/dev/null && $1 data put "$k" "{\"time\":$s}" >/dev/null ||
			return 1
	done
}

# ids SS — the snapshot IDs the server lists, on one line.
ids() { $1 --state "$T_DIR/list.db" snapshots --name tree | sed 1d | awk '{print $1}' | tr '\n' ' '; }

# has_object FILE — 0 when the server holds FILE's content object (o.<sha256>).
has_object() { $SS info "o.$(sha256sum "$1" | cut -c1-64)" >/dev/null 2>&1; }

ok 'eight snapshots, their times set' 'eight_snapshots "$SS" st.db && set_times "$SS" && [ "$(ids "$SS")" = "1 2 3 4 5 6 7 8 " ]'

POLICY='--keep-last 2 --keep-hourly 3 --keep-daily 2 --keep-monthly 2'
ok '--dry-run lists what would go and why the rest stays; nothing changes' '
	$SS --state st.db prune --name tree $POLICY --dry-run >dry &&
	cat dry &&
	[ "$(grep -c "^would delete tree#" dry)" = 3 ] &&
	grep -q "^would delete tree#1 " dry && grep -q "^would delete tree#3 " dry &&
	grep -q "^would delete tree#5 " dry &&
	grep -q "^keep   tree#8 .*last,hourly,daily,monthly" dry &&
	grep -q "^keep   tree#2 .*monthly" dry &&
	grep -q "dry run: would delete 3 snapshots, keep 5" dry &&
	[ "$(ids "$SS")" = "1 2 3 4 5 6 7 8 " ] && has_object snap1/only-1.txt'

ok '--dry-run --json: one document with kept and deleted' '
	$SS --state st.db --json prune --name tree $POLICY --dry-run >dj &&
	python3 -c "
import json, sys
d = json.load(open(\"dj\"))
assert d[\"command\"] == \"prune\" and d[\"dry_run\"] is True, d
assert [s[\"id\"] for s in d[\"deleted\"]] == [1, 3, 5], d
assert [s[\"id\"] for s in d[\"kept\"]] == [2, 4, 6, 7, 8], d
assert d[\"deleted_snapshots\"] == 0, d
"'

ok 'prune keeps exactly #2 #4 #6 #7 #8; the objects only #1 #3 #5 used (3 files, 3 root trees) are gone' '
	$SS --state st.db prune --name tree $POLICY >real && cat real &&
	grep -q "deleted 3 snapshots and 6 unreferenced objects; kept 5 snapshots" real &&
	[ "$(ids "$SS")" = "2 4 6 7 8 " ] &&
	! has_object snap1/only-1.txt && ! has_object snap3/only-3.txt &&
	! has_object snap5/only-5.txt && has_object snap2/only-2.txt &&
	has_object snap8/only-8.txt && has_object snap8/base.txt'

ok 'every kept snapshot restores (fresh state) and check finds nothing missing' '
	for i in 2 4 6 7 8; do
		rm -rf out && $SS --state "fresh$i.db" restore --name tree --snapshot $i --to out &&
			same_tree "snap$i" out || exit 1
	done &&
	$SS --state fresh-check.db check --name tree'

ok 'the next sync still appends (#9) and a second prune with the same rules keeps #9' '
	echo nine >"$SRC/nine.txt" && $SS --state st.db sync --name tree "$SRC" >/dev/null &&
	$SS --state st.db prune --name tree --keep-last 1 --dry-run | grep -q "^keep   tree#9 " &&
	[ "$(ids "$SS")" = "2 4 6 7 8 9 " ]'

ok 'keep = in the [dir] section is used when no rule is given; a bad one exits 78' '
	printf "[dir \"tree\"]\npath = %s\nkeep = last=2 monthly=1\n" "$SRC" >good.conf &&
	$SS --config good.conf --state st.db prune >cfg.out && cat cfg.out &&
	grep -q "(last=2 monthly=1): deleted 4 snapshots" cfg.out &&
	[ "$(ids "$SS")" = "8 9 " ] &&
	printf "[dir \"tree\"]\npath = %s\nkeep = daly=3\n" "$SRC" >bad.conf &&
	expect_exit 78 $SS --config bad.conf --state st.db prune 2>err && cat err &&
	grep -q "unknown rule .daly." err && [ "$(ids "$SS")" = "8 9 " ]'

ok 'no rule at all, or a zero count: usage errors (exit 2), nothing deleted' '
	expect_exit 2 $SS --state st.db prune --name tree 2>err && grep -q "no keep rule" err &&
	expect_exit 2 $SS --state st.db prune --name tree --keep-daily 0 2>err &&
	grep -q "keep-daily needs a number" err && [ "$(ids "$SS")" = "8 9 " ]'

# ---- the reference server: no LIST, gaps found by probing ----
start_ref_server || exit 1
printf '%s' 12345678 >"$T_DIR/rpw"
RS="$BIN/stepsync --server 127.0.0.1:$REF_PORT --user 12345678 --password-file $T_DIR/rpw"
SRC=$T_DIR/rtree
ok 'reference server: eight snapshots with the same times' '
	eight_snapshots "$RS" rst.db && set_times "$RS" && [ "$(ids "$RS")" = "1 2 3 4 5 6 7 8 " ]'
ok 'reference server: the same rules keep the same snapshots, listed with their gaps' '
	$RS --state rst.db prune --name tree $POLICY >rreal && cat rreal &&
	[ "$(ids "$RS")" = "2 4 6 7 8 " ] &&
	[ ! -e "$T_DIR/ref.root/12345678/s.tree.0000000003" ] &&
	rm -rf out && $RS --state rfresh.db restore --name tree --snapshot 2 --to out &&
	same_tree snap2 out && rm -rf out &&
	$RS --state rfresh2.db restore --name tree --to out && same_tree snap8 out'

t_stop 'stepd exits 0 on SIGTERM'
done_testing
