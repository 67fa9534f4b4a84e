#!/bin/sh
# t0010-demo.sh — the README's run command: `make demo` runs contrib/demo.sh with the shell
# it is written for, and the demo (back up, list, restore with a fresh state, compare,
# put/info/get) succeeds end to end with the programs under test.
. "$TOP/tests/lib.sh"

ok 'make demo runs the demo script with bash (it uses bash features)' '
	make -s -n -C "$TOP" demo | grep -q "bash contrib/demo.sh" &&
	head -1 "$TOP/contrib/demo.sh" | grep -q bash'
ok 'the demo backs up, restores and verifies' '
	BIN="$BIN" TOP="$TOP" bash "$TOP/contrib/demo.sh" >demo.out 2>&1 &&
	grep -q "demo finished: backup, restore and verification all succeeded" demo.out ||
	{ tail -20 demo.out; false; }'
done_testing
