#!/bin/sh
# t5040-restore-progress.sh — restore draws a progress line on a terminal (files, bytes,
# rate, ETA; it ends with "done" before the summary) and is silent when stderr is not a
# terminal, or with -q / --json (issue 16: restore showed nothing during a long restore).
. "$TOP/tests/lib.sh"
command -v script >/dev/null 2>&1 || { echo "1..0 # SKIP script(1) not installed"; exit 0; }
start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
export SS
SRC=$T_DIR/src
mkdir -p "$SRC/d"
head -c 3000000 /dev/urandom >"$SRC/big.bin"
for i in 1 2 3 4 5 6 7 8; do echo "small $i" >"$SRC/d/s$i"; done
$SS --state "$T_DIR/st.db" sync --name t "$SRC" >/dev/null || exit 1

ok "on a terminal: a progress line of files and bytes that ends with done, then the summary" '
	script -qec "$SS restore --name t --to out1" /dev/null >tty.out &&
	tr "\r" "\n" <tty.out >lines && cat lines &&
	grep -q "^9/9 files  2\.[0-9] MiB / 2\.[0-9] MiB  .*/s  done" lines &&
	grep -q "^restored t#1 into out1: 9 files" lines &&
	[ "$(grep -n "done" lines | head -n 1 | cut -d: -f1)" -lt "$(grep -n "^restored" lines | cut -d: -f1)" ]'
ok "a --path restore counts what it finds (no totals from the snapshot)" '
	script -qec "$SS restore --name t --path d --to out2" /dev/null >tty.out &&
	tr "\r" "\n" <tty.out | grep -q "^8/8 files  .* done"'
ok "not a terminal: no progress at all on stderr" '
	$SS restore --name t --to out3 >out 2>err && [ ! -s err ] && grep -q "^restored" out'
ok "-q and --json on a terminal: no progress line" '
	script -qec "$SS -q restore --name t --to out4" /dev/null >tty.out &&
	! grep -q "files " tty.out &&
	script -qec "$SS --json restore --name t --to out5" /dev/null >tty.out &&
	! grep -q "/s " tty.out'
done_testing
