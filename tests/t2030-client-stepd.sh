#!/bin/sh
# t2030-client-stepd.sh — stepsync against stepd: extensions (server name, empty
# files, resume from the received list), several files over several connections,
# --bwlimit, and a big pipelined round trip.
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
export STEPSYNC_PASSWORD=bob
start_stepd --auth open || exit 1
ss() { "$S" --server "127.0.0.1:$STEPD_PORT" --user bob --timeout 10 "$@"; }

ok "ping names the server" 'ss ping | grep -q "stepd/"'
ok "a 20 MB pipelined round trip is byte-identical" '
	head -c 20000000 /dev/urandom >big.bin && ss put big.bin >out &&
	grep -q "^big.bin $(md5sum <big.bin | cut -d" " -f1)$" out &&
	ss get big.bin -o big.out >/dev/null && cmp big.bin big.out'
ok "a 64 MiB file goes up in 128 KiB blocks (big_blocks); its plan is the default 20480" '
	head -c $((64 << 20)) /dev/urandom >huge.bin && echo x >>huge.bin &&
	ss --json put huge.bin >out &&
	python3 -c "import json; d = json.load(open(\"out\")); assert d[\"blocks_total\"] == 513, d" &&
	ss info huge.bin | grep -q "^blocks: 3277 x 20480 bytes$" &&
	ss get huge.bin -o huge.out >/dev/null && cmp huge.bin huge.out'
ok "an interrupted big-block put resumes in its own block size" '
	"$S" --server "127.0.0.1:$STEPD_PORT" --user bob --state hs.db put --bwlimit 8M \
		--key huge2 huge.bin >/dev/null 2>&1 & pid=$!
	wait_for "python3 -c \"import sqlite3,sys; r=sqlite3.connect(\\\"hs.db\\\").execute(\\\"select bitmap from uploads\\\").fetchone(); sys.exit(0 if r and sum(bin(b).count(\\\"1\\\") for b in r[0]) >= 8 else 1)\"" 400 &&
	kill -9 $pid; wait $pid 2>/dev/null
	ss --state hs.db --json put --key huge2 huge.bin >out &&
	python3 -c "
import json; d = json.load(open(\"out\"))
assert d[\"resumed\"] and d[\"blocks_total\"] == 513 and d[\"blocks_sent\"] < 513, d" &&
	ss get huge2 -o huge.out >/dev/null && cmp huge.bin huge.out && rm -f huge.out'
ok "pipelined downloads never stall on stepd (no fallback to one request at a time)" '
	for i in 1 2 3; do
		rm -f big.out && ss -v get --window 64 big.bin -o big.out >/dev/null 2>err &&
		cmp big.bin big.out && ! grep -q "pipelining failed" err || exit 1
	done'
ok "an empty file round trips" '
	: >empty && ss put empty >/dev/null && ss get empty -o empty.out >/dev/null &&
	[ -f empty.out ] && [ ! -s empty.out ]'
ok "--connections spreads several files and all verify" '
	for i in 1 2 3 4 5; do head -c $((i * 70001)) /dev/urandom >m$i.bin; done &&
	ss --json put --connections 3 m1.bin m2.bin m3.bin m4.bin m5.bin >out &&
	python3 -c "import json; d=json.load(open(\"out\")); assert len(d)==5 and all(\"md5\" in o for o in d), d" &&
	for i in 1 2 3 4 5; do ss get m$i.bin -o m$i.out >/dev/null && cmp m$i.bin m$i.out || exit 1; done'
ok "--connections reports each failure and exits with the first one''s status" '
	head -c 1000 /dev/urandom >n1.bin &&
	expect_exit 5 ss put --connections 2 n1.bin m1.bin nosuch.bin >out 2>err &&
	grep -q "^n1.bin " out && grep -q "put '\''m1.bin'\''.*(402)" err &&
	grep -q "put '\''nosuch.bin'\'': cannot open" err'
ok "--bwlimit completes and verifies" '
	head -c 300000 /dev/urandom >bw.bin && ss put --bwlimit 1M bw.bin >/dev/null &&
	ss get --bwlimit 1M bw.bin -o bw.out >/dev/null && cmp bw.bin bw.out'
ok "an interrupted put resumes from the received list of stepd (no local state)" '
	head -c 4000000 /dev/urandom >r.bin
	"$S" --server "127.0.0.1:$STEPD_PORT" --user bob --state st.db put --bwlimit 400k r.bin \
		>/dev/null 2>&1 & pid=$!
	wait_for "python3 -c \"import sqlite3,sys; r=sqlite3.connect(\\\"st.db\\\").execute(\\\"select bitmap from uploads\\\").fetchone(); sys.exit(0 if r and sum(bin(b).count(\\\"1\\\") for b in r[0]) >= 10 else 1)\"" 400 &&
	kill -9 $pid; wait $pid 2>/dev/null
	ss --json put r.bin >out &&
	python3 -c "
import json; d = json.load(open(\"out\"))
assert d[\"resumed\"] and d[\"blocks_sent\"] < d[\"blocks_total\"], d" &&
	ss get r.bin -o r.out >/dev/null && cmp r.bin r.out'
ok "--block-md5 uploads verify too" '
	ss put --block-md5 --key bm m3.bin >/dev/null && ss get bm -o bm.out >/dev/null &&
	cmp m3.bin bm.out'
ok "a non-ASCII key round trips" '
	ss put --key "résumé.bin" m1.bin >/dev/null && ss get "résumé.bin" -o u.out >/dev/null &&
	cmp m1.bin u.out'
done_testing
