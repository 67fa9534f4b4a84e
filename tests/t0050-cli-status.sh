#!/bin/sh
# t0050-cli-status.sh — `status` covers cron `sync` runs, not only `watch`: after a cron
# sync it used to say "last snapshot: none, last success: never", and "last error: none"
# after a failed one. Also: `snapshots` without --name lists every name (it listed
# nothing), and an ID of another name is refused (it silently used the right name).
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
start_stepd --auth open || exit 1
export STEPSYNC_PASSWORD=alice STEPSYNC_CONFIG=$T_DIR/none.conf
ST=$T_DIR/st.db
cron() { "$S" --server "127.0.0.1:$STEPD_PORT" --user alice --timeout 5 --state "$ST" -q "$@"; }
mkdir docs pics && echo d >docs/d.txt && echo p >pics/p.txt
# field EXPR — python expression over the status document d.
field() {
	"$S" --state "$ST" status --json >st.json &&
		python3 -c "import json,sys; d=json.load(open(\"st.json\")); assert $1, d"
}

ok "status after a cron sync: last run ok, its snapshot, last success" '
	cron sync docs &&
	"$S" --state "$ST" status >out && cat out &&
	grep -q "^last snapshot: docs#1 at " out && ! grep -q "^last success: never" out &&
	grep -q "^  docs: sync ok at .* (exit 0), latest snapshot docs#1$" out &&
	field "d[\"last_run\"][\"result\"] == \"ok\" and d[\"last_snapshot\"] == \"docs#1\" and d[\"last_success\"] > 0"'
ok "a cron sync that fails: result failed, its exit status and its error" '
	expect_exit 75 "$S" --server 127.0.0.1:1 --user alice --timeout 2 --state "$ST" -q sync docs 2>err &&
	"$S" --state "$ST" status >out && cat out &&
	grep -q "^  docs: sync failed at .* (exit 75), latest snapshot docs#1, last ok " out &&
	grep -q "^    error: sync '\''docs'\'': cannot log in: .*Connection refused" out &&
	grep -q "^last error: sync '\''docs'\''" out &&
	field "d[\"runs\"][0][\"exit_status\"] == 75 and d[\"runs\"][0][\"last_ok\"] > 0 and \"Connection refused\" in d[\"last_error\"]"'
ok "the next good run clears the failure of that name" '
	cron sync docs && field "[r for r in d[\"runs\"] if r[\"name\"] == \"docs\"][0][\"result\"] == \"ok\""'
ok "each name keeps its own last run" '
	cron sync pics && field "sorted(r[\"name\"] for r in d[\"runs\"]) == [\"docs\", \"pics\"] and d[\"last_run\"][\"name\"] == \"pics\""'
ok "a run that fails before any tree (state locked) is shown under -" '
	# flock(1) holds the run lock while the sync it starts tries to take it.
	flock "$ST.lock" "$S" --server "127.0.0.1:$STEPD_PORT" --user alice --state "$ST" -q \
		sync docs 2>err; rc=$?
	cat err; [ $rc -eq 75 ] && grep -q "another sync .*is using" err &&
	"$S" --state "$ST" status >out && grep -q "^  -: sync failed at .* (exit 75)" out &&
	grep -q "^    error: another sync" out'
ok "a dry run records nothing" '
	field "True" && cp st.json before.json &&
	cron sync docs --dry-run >/dev/null &&
	field "[r for r in d[\"runs\"] if r[\"name\"]==\"docs\"] == [r for r in json.load(open(\"before.json\"))[\"runs\"] if r[\"name\"]==\"docs\"]"'
ok "snapshots without --name lists every name with count and newest" '
	"$S" --server "127.0.0.1:$STEPD_PORT" --user alice snapshots >out && cat out &&
	grep -q "^NAME  *SNAPSHOTS  *NEWEST  *TIME" out &&
	grep -q "^docs  *2  *#2  *20" out && grep -q "^pics  *1  *#1  *20" out'
ok "snapshots --snapshot of another name is a usage error, not that snapshot" '
	expect_exit 2 "$S" --server "127.0.0.1:$STEPD_PORT" --user alice snapshots --name docs \
		--snapshot pics#1 2>err && grep -q "snapshot '\''pics#1'\'' is not a snapshot of '\''docs'\''" err &&
	"$S" --server "127.0.0.1:$STEPD_PORT" --user alice snapshots --snapshot docs#2 >out &&
	[ $(wc -l <out) -eq 2 ] && grep -q "^2 " out &&
	expect_exit 4 "$S" --server "127.0.0.1:$STEPD_PORT" --user alice snapshots --snapshot docs#9'
start_ref_server || exit 1
ok "snapshots without --name on a server without LIST: the names the agent knows" '
	"$S" --server "127.0.0.1:$REF_PORT" --user alice --state ref.db -q sync docs &&
	"$S" --server "127.0.0.1:$REF_PORT" --user alice --state ref.db -q sync docs &&
	"$S" --server "127.0.0.1:$REF_PORT" --user alice --state ref.db --json snapshots >out &&
	python3 -c "import json; d=json.load(open(\"out\")); assert [(x[\"name\"], x[\"snapshots\"]) for x in d] == [(\"docs\", 2)], d"'
done_testing
