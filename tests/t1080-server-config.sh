#!/bin/bash
# t1080 — stepd --config FILE: settings from the file, flags override it, bad files refused.
. "$TOP/tests/lib.sh"

printf '# stepd settings\n[stepd]\nauth = open\nblock-size = 20480\n' >"$T_DIR/stepd.conf"
echo cfg >"$T_DIR/pw"
head -c 50000 /dev/urandom >"$T_DIR/f"
SS() { "$BIN/stepsync" --server "127.0.0.1:$1" --user cfg --password-file "$T_DIR/pw" "${@:2}"; }

ok "settings come from the config file (auth open, 20480-byte plan)" '
	start_stepd --config "$T_DIR/stepd.conf" &&
	SS $STEPD_PORT -q put "$T_DIR/f" --key f &&
	SS $STEPD_PORT info f >info && grep -q "blocks: 3 x 20480 bytes" info
'

ok "a command-line flag overrides the config file" '
	STEPD_NAME=second start_stepd --config "$T_DIR/stepd.conf" --block-size 65536 &&
	SS $STEPD_PORT -q put "$T_DIR/f" --key f &&
	SS $STEPD_PORT info f >info && grep -q "blocks: 1 x 65536 bytes" info
'

ok "max-block-size at the block size turns big_blocks off: a 64 MiB put keeps 64 KiB blocks" '
	printf "auth = open\nmax-block-size = 64K\n" >nobig.conf &&
	STEPD_NAME=third start_stepd --config nobig.conf &&
	head -c $((64 << 20)) /dev/urandom >"$T_DIR/h" &&
	SS $STEPD_PORT -q --json put "$T_DIR/h" --key h >out &&
	python3 -c "import json; d = json.load(open(\"out\")); assert d[\"blocks_total\"] == 1024, d" &&
	rm -f "$T_DIR/h"
'

ok "an unknown setting is refused with file and line, exit 2" '
	printf "auth = open\nbogus = 1\n" >bad.conf &&
	expect_exit 2 "$BIN/stepd" --config bad.conf --root r 2>err &&
	grep -q "bad.conf:2: unknown setting .bogus." err
'

ok "a missing config file is refused, exit 2" '
	expect_exit 2 "$BIN/stepd" --config nope.conf --root r 2>err &&
	grep -q "cannot read config" err
'

done_testing
