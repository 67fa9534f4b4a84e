#!/bin/sh
# t2020-client-resume.sh — `put --state DB` resumes an upload interrupted by kill -9:
# against the reference replica from local progress only (no second SAVE, only the
# missing blocks), starting over when the file changed or the server forgot the upload.
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
export STEPSYNC_PASSWORD=alice
start_ref_server -v || exit 1
ss() { "$S" --server "127.0.0.1:$REF_PORT" --user alice --timeout 5 "$@"; }
head -c 2048000 /dev/urandom >f.bin # 100 blocks of 20480

# acked DB — number of acknowledged blocks recorded in DB's uploads table.
acked() {
	python3 -c '
import sqlite3, sys
try:
    r = sqlite3.connect(sys.argv[1]).execute("select bitmap from uploads").fetchone()
except sqlite3.Error:
    r = None
print(sum(bin(b).count("1") for b in r[0]) if r else 0)' "$1"
}
count() { grep -c "<- FILE $1" ref.log; }
# lastconn — the highest connection number the server has logged so far.
lastconn() { sed -n "s/^ref_server: conn \([0-9]*\):.*/\1/p" ref.log | sort -n | tail -1; }
# uploads_after N — UPLOAD requests received on connections numbered above N.
uploads_after() {
	sed -n "s/^ref_server: conn \([0-9]*\): <- FILE UPLOAD.*/\1/p" ref.log |
		awk -v n="$1" '$1 > n { c++ } END { print c + 0 }'
}

# interrupt DB FILE KEY — starts a slow put and kills it with SIGKILL after progress
# of at least 20 blocks was committed to DB, then waits until the server has handled
# what the killed client had queued (else those old blocks could land in a new upload).
interrupt() {
	# stepsync itself, not the ss function: $! of a backgrounded function is a subshell,
	# and killing that would leave the upload running.
	"$S" --server "127.0.0.1:$REF_PORT" --user alice --timeout 5 --state "$1" \
		put --bwlimit 100k --key "$3" "$2" >/dev/null 2>&1 &
	pid=$!
	wait_for "[ \$(acked $1) -ge 20 ]" 400 || { kill -9 $pid; return 1; }
	kill -9 $pid
	wait $pid 2>/dev/null
	ic=$(lastconn)
	wait_for "grep -q '^ref_server: conn $ic: closed' ref.log" 200
}

ok "a put killed with SIGKILL leaves its progress in the state database" '
	interrupt st.db f.bin k1 && n=$(acked st.db) && [ "$n" -ge 20 ] && [ "$n" -lt 100 ]'
n_db=$(acked st.db)
ok "status lists the interrupted upload with its percentage" '
	ss --state st.db status >st &&
	grep -q "^uploads in progress: 1$" st && grep -q "^  f.bin: $n_db% ($n_db of 100 blocks" st &&
	ss --state st.db status --json | python3 -c "
import json, sys
u = json.load(sys.stdin)[\"uploads\"]
assert len(u) == 1 and u[0][\"key\"] == \"k1\" and u[0][\"percent\"] == $n_db, u"'
c1=$(lastconn)
ok "the resumed put sends no SAVE and only the missing blocks" '
	ss --state st.db --json put --key k1 f.bin >out &&
	python3 -c "import json; d=json.load(open(\"out\")); assert d[\"resumed\"] and d[\"md5\"], d" &&
	[ $(count SAVE) -eq 1 ] &&
	sent=$(uploads_after $c1) && echo "sent $sent, recorded $n_db" &&
	python3 -c "import json; assert json.load(open(\"out\"))[\"blocks_sent\"] == $sent" &&
	[ $sent -le $((100 - n_db)) ] && [ $sent -ge $((100 - n_db - 16)) ]'
ok "the resumed object is byte-identical" 'ss get k1 -o k1.out >/dev/null && cmp f.bin k1.out'
ok "the state database forgets a finished upload" '[ $(acked st.db) -eq 0 ]'
ok "status then shows no upload in progress" '
	ss --state st.db status | grep -q "^uploads in progress: 0$"'

ok "a file changed since the interruption is uploaded from scratch" '
	interrupt st2.db f.bin k2 &&
	saves=$(count SAVE) && head -c 2048000 /dev/urandom >f.bin &&
	ss --state st2.db put --key k2 f.bin >out &&
	[ $(count SAVE) -eq $((saves + 1)) ] && grep -q "<- FILE DELETE" ref.log &&
	ss get k2 -o k2.out >/dev/null && cmp f.bin k2.out'

ok "a server that forgot the upload (408) makes the put start over" '
	interrupt st3.db f.bin k3 &&
	rm -rf ref.root/.tmp/alice/k3 ref.root/.log/alice/k3 &&
	saves=$(count SAVE) &&
	ss --state st3.db put --key k3 f.bin >out &&
	[ $(count SAVE) -eq $((saves + 1)) ] &&
	ss get k3 -o k3.out >/dev/null && cmp f.bin k3.out'
done_testing
