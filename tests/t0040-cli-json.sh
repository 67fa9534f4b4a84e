#!/bin/sh
# t0040-cli-json.sh — `--json` prints exactly one valid JSON document on stdout per
# command (arrays where there are many, [] when none), never mixed with human text,
# for success and failure alike. Before, `snapshots --json` printed one object per line
# (invalid JSON with two snapshots, nothing with none) and `put` of several files too;
# `sync --json` mixed its human line into stdout; restore, prune and dry runs printed
# no JSON at all (now at least {command, exit_status[, error]} until they have their own).
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
start_stepd --auth open || exit 1
export STEPSYNC_PASSWORD=alice STEPSYNC_CONFIG=$T_DIR/none.conf
ss() { "$S" --server "127.0.0.1:$STEPD_PORT" --user alice --timeout 5 --state st.db --json "$@"; }
echo one >a.txt && echo two >b.txt && mkdir tree && echo t >tree/t.txt

# doc FILE [PYTHON-ASSERTION] — FILE is one JSON document (json.tool), and d satisfies it.
doc() {
	python3 -m json.tool "$1" >/dev/null &&
		python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert ${2:-True}, d" "$1"
}

ok "put of one file: one object" '
	ss put a.txt >o && doc o "d[\"key\"] == \"a.txt\" and d[\"size\"] == 4"'
ok "put of several files, one failing: one array, exit 5" '
	expect_exit 5 ss put a.txt b.txt >o 2>e && doc o "len(d) == 2 and \"error\" in d[0] and d[1][\"key\"] == \"b.txt\"" &&
	grep -q "(402)" e'
ok "put with --connections: one array" '
	echo c >c.txt && echo d >d.txt && ss put --connections 2 c.txt d.txt >o &&
	doc o "sorted(x[\"key\"] for x in d) == [\"c.txt\", \"d.txt\"]"'
ok "get: one object" 'ss get a.txt -o a.out >o && doc o "d[\"file\"] == \"a.out\""'
ok "get of an unknown key: one object with the error, exit 4" '
	expect_exit 4 ss get nosuch >o 2>/dev/null && doc o "d[\"exit_status\"] == 4 and \"404\" in d[\"error\"]"'
ok "info: one object" 'ss info a.txt >o && doc o "d[\"total_block\"] == 1"'
ok "rm of one key: one object; of several: one array" '
	ss rm c.txt >o && doc o "d[\"deleted\"]" &&
	expect_exit 4 ss rm d.txt nosuch >o 2>/dev/null && doc o "len(d) == 2 and d[1][\"exit_status\"] == 4"'
ok "ping: one object" 'ss ping >o && doc o "d[\"rtt_ms\"] >= 0"'
ok "data put, get, rm: one object each" '
	ss data put r "{\"x\":1}" >o && doc o "d[\"status\"] == \"ok\"" &&
	ss data get r >o && doc o "d[\"data\"] == {\"x\": 1}" &&
	ss data rm r >o && doc o "d[\"action\"] == \"rm\""'
ok "snapshots with none: []" '
	ss snapshots >o && doc o "d == []" && ss snapshots --name nosuch >o && doc o "d == []"'
ok "sync twice, then snapshots of the name: one array of two" '
	"$S" --server "127.0.0.1:$STEPD_PORT" --user alice --state st.db -q sync tree &&
	echo more >>tree/t.txt &&
	"$S" --server "127.0.0.1:$STEPD_PORT" --user alice --state st.db -q sync tree &&
	ss snapshots --name tree >o && doc o "[x[\"id\"] for x in d] == [1, 2]"'
ok "sync of two [dir]s: one array, one object per directory" '
	mkdir -p two && echo 2 >two/2.txt &&
	printf "[server]\naddress = 127.0.0.1:%s\nuser = alice\n[dir \"tree\"]\npath = %s/tree\n[dir \"two\"]\npath = %s/two\n" \
		"$STEPD_PORT" "$T_DIR" "$T_DIR" >two.conf &&
	"$S" --config two.conf --state st2.db -q --json sync >o &&
	doc o "[x[\"name\"] for x in d] == [\"tree\", \"two\"]"'
ok "sync, restore, prune and dry runs: one document on stdout, their text on stderr" '
	"$S" --server "127.0.0.1:$STEPD_PORT" --user alice --state st.db --json sync tree >o 2>e &&
	doc o "d[\"command\"] == \"sync\" and d[\"name\"] == \"tree\"" &&
	"$S" --server "127.0.0.1:$STEPD_PORT" --user alice --state st.db --json sync tree --dry-run >o 2>e &&
	doc o "d[\"command\"] == \"sync\"" &&
	"$S" --server "127.0.0.1:$STEPD_PORT" --user alice --json restore --name tree --to r1 >o 2>e &&
	doc o "d[\"command\"] == \"restore\" and d.get(\"exit_status\", 0) == 0" && [ -f r1/t.txt ] &&
	expect_exit 1 "$S" --server "127.0.0.1:$STEPD_PORT" --user alice --json restore --name nosuch --to r2 >o 2>e &&
	doc o "d[\"exit_status\"] == 1 and \"nosuch\" in d[\"error\"]" &&
	"$S" --server "127.0.0.1:$STEPD_PORT" --user alice --state st.db --json prune --name tree --keep 10 >o 2>e &&
	doc o "d[\"command\"] == \"prune\""'
ok "snapshots without --name: one array of names" '
	ss snapshots >o && doc o "d[0][\"name\"] == \"tree\" and d[0][\"snapshots\"] == 4 and d[0][\"newest_id\"] == 4"'
ok "status: one object, with the runs" '
	ss status >o && doc o "d[\"last_run\"][\"name\"] == \"tree\" and d[\"runs\"][0][\"result\"] == \"ok\""'
ok "no server given, server unreachable: one object with the error" '
	expect_exit 78 "$S" --user alice --json ping >o 2>/dev/null &&
	doc o "d[\"exit_status\"] == 78 and \"no server\" in d[\"error\"]" &&
	expect_exit 75 "$S" --server 127.0.0.1:1 --user alice --timeout 2 --json snapshots >o 2>/dev/null &&
	doc o "d[\"command\"] == \"snapshots\" and d[\"exit_status\"] == 75"'
ok "a usage error prints nothing on stdout" '
	expect_exit 2 ss put >o 2>/dev/null && [ ! -s o ]'
ok "watch --json: the ready line is a JSON object" '
	"$S" --server 127.0.0.1:1 --user alice --state w.db --json watch tree >w.out 2>w.err & p=$!
	track_pid $p
	wait_for "[ -s w.out ] || ! kill -0 $p" 200; kill -TERM $p; wait $p
	head -n 1 w.out >w1 && doc w1 "d[\"watching\"] == 1"'
done_testing
