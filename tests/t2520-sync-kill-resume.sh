#!/bin/sh
# t2520-sync-kill-resume.sh — a sync killed with SIGKILL in the middle of a large upload
# is simply rerun: the lock died with it, only the blocks the server lacks are sent
# again, and the snapshot restores exactly. Against stepd and the reference replica.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

SRC=$T_DIR/tree
mkdir -p "$SRC"
head -c 25165824 /dev/urandom >"$SRC/big.bin" # 24 MiB
echo small >"$SRC/small.txt"

# blocks_done DB — how many blocks the client's resume state records as received.
blocks_done() {
	python3 - "$1" <<'PY' 2>/dev/null
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=5)
n = 0
for (bm,) in db.execute("SELECT bitmap FROM uploads"):
    n += sum(bin(b).count("1") for b in bm)
print(n)
PY
}

# kill_and_rerun LABEL TOTAL_BLOCKS STEPSYNC... — starts a slow sync, kills it after a quarter of the blocks,
# reruns it, and checks what the rerun sent.
kill_and_rerun() {
	label=$1
	total=$2
	shift 2
	st=$T_DIR/$label.db
	"$@" --state "$st" --bwlimit 3M sync --name big "$SRC" >"$T_DIR/$label.1" 2>&1 &
	pid=$!
	wait_for "[ \"\$(blocks_done $st)\" -ge 60 ]" 400 || { kill -9 $pid; return 1; }
	kill -9 $pid
	wait $pid 2>/dev/null
	"$@" --state "$st" --json sync --name big "$SRC" >"$T_DIR/$label.2" || return 1
	sent=$(json_field "$T_DIR/$label.2" blocks_sent)
	echo "blocks sent again: $sent"
	# 24 MiB is 384 blocks of 64 KiB or 1229 of 20 KiB; at least 60 were already there.
	[ "$sent" -gt 0 ] && [ "$sent" -lt "$((total - 50))" ] || return 1
	"$@" --state "$T_DIR/$label.fresh.db" restore --name big --to "$T_DIR/$label.out" &&
		same_tree "$SRC" "$T_DIR/$label.out"
}

start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
ok "stepd: killed mid-upload, the rerun sends only the missing blocks" '
	kill_and_rerun stepd 384 $BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo \
		--password-file $T_DIR/pw
'

start_ref_server || exit 1
printf 12345678 >"$T_DIR/refpw"
ok "reference server: killed mid-upload, the rerun resumes without a new SAVE" '
	kill_and_rerun ref 1229 $BIN/stepsync --server 127.0.0.1:$REF_PORT --user 12345678 \
		--password-file $T_DIR/refpw
'

done_testing
