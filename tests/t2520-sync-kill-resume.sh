#!/bin/sh
# t2520-sync-kill-resume.sh — a sync killed with SIGKILL in the middle of a large upload
# is simply rerun: the lock died with it, the chunks the server holds already are not sent
# again, and the snapshot restores exactly. Against stepd and the reference replica.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"

SRC=$T_DIR/tree
mkdir -p "$SRC"
head -c 25165824 /dev/urandom >"$SRC/big.bin" # 24 MiB
echo small >"$SRC/small.txt"

# stored DIRS PATTERN — bytes of the complete objects the server holds: files matching
# PATTERN in DIRS (a list) over 200 KiB: the reference server's objects (a file each), or
# stepd's object files and packs (one-block objects are appended to a pack at commit).
stored() {
	# shellcheck disable=SC2086 # DIRS is a list of paths without blanks
	find $1 -name "$2" -size +200k -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

# kill_and_rerun LABEL DIR PATTERN STEPSYNC... — starts a slow sync of the 24 MiB file
# (cut into chunks of 128 KiB to 4 MiB, each an object), kills it once the server holds at
# least 3 MiB of complete objects (stored DIR PATTERN), reruns it, and checks that the
# chunks already there were not sent again and that the snapshot restores exactly.
kill_and_rerun() {
	label=$1
	dir=$2
	pat=$3
	shift 3
	st=$T_DIR/$label.db
	"$@" --state "$st" --bwlimit 3M sync --name big "$SRC" >"$T_DIR/$label.1" 2>&1 &
	pid=$!
	wait_for "[ \$(stored '$dir' '$pat') -ge 3145728 ]" 400 || { kill -9 $pid; return 1; }
	kill -9 $pid
	wait $pid 2>/dev/null
	there=$(stored "$dir" "$pat")
	"$@" --state "$st" --json sync --name big "$SRC" >"$T_DIR/$label.2" || return 1
	sent=$(json_field "$T_DIR/$label.2" sent_bytes)
	echo "already there: $there bytes; sent again: $sent bytes"
	# What the server had complete is not sent again: at most the rest of the file.
	[ "$sent" -gt 0 ] && [ "$sent" -le "$((25165824 - there + 1024))" ] || return 1
	"$@" --state "$T_DIR/$label.fresh.db" restore --name big --to "$T_DIR/$label.out" &&
		same_tree "$SRC" "$T_DIR/$label.out"
}

start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
ok "stepd: killed mid-upload, the rerun sends only the missing chunks" '
	kill_and_rerun stepd "$STEPD_ROOT/obj $STEPD_ROOT/pack" "*" $BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo \
		--password-file $T_DIR/pw
'

start_ref_server || exit 1
printf 12345678 >"$T_DIR/refpw"
ok "reference server: killed mid-upload, the rerun sends only the missing chunks" '
	kill_and_rerun ref "$T_DIR/ref.root/12345678" "o.*" $BIN/stepsync --server 127.0.0.1:$REF_PORT --user 12345678 \
		--password-file $T_DIR/refpw
'

done_testing
