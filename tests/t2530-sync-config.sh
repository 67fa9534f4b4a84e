#!/bin/sh
# t2530-sync-config.sh — sync driven by stepsync.conf: every [dir] without arguments,
# one with --name, exclude patterns honoured, and a config without [dir] refused (78).
. "$TOP/tests/lib.sh"

start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
mkdir -p "$T_DIR/docs/cache" "$T_DIR/docs/keep" "$T_DIR/pics"
echo keep >"$T_DIR/docs/keep/a.txt"
echo tmp >"$T_DIR/docs/keep/b.tmp"
echo cached >"$T_DIR/docs/cache/c.bin"
echo pic >"$T_DIR/pics/p.jpg"
cat >"$T_DIR/stepsync.conf" <<CONF
# test config
[server]
address = 127.0.0.1:$STEPD_PORT
user = demo
password_file = pw

[state]
path = state.db

[dir "docs"]
path = $T_DIR/docs
exclude = *.tmp
exclude = cache/

[dir "pics"]
path = $T_DIR/pics
CONF
SS="$BIN/stepsync --config $T_DIR/stepsync.conf"

ok "sync without arguments backs up every configured dir" '
	$SS sync >"$T_DIR/out" &&
	grep -q "^snapshot docs#1:" "$T_DIR/out" && grep -q "^snapshot pics#1:" "$T_DIR/out" &&
	[ -f "$T_DIR/state.db" ]
'

ok "excluded files and directories are not in the snapshot" '
	$SS restore --name docs --to "$T_DIR/r" &&
	[ -f "$T_DIR/r/keep/a.txt" ] && [ ! -e "$T_DIR/r/keep/b.tmp" ] && [ ! -e "$T_DIR/r/cache" ]
'

ok "--name syncs just that dir" '
	$SS sync --name pics >"$T_DIR/out2" &&
	grep -q "^snapshot pics#2:" "$T_DIR/out2" && ! grep -q docs "$T_DIR/out2"
'

ok "an unknown --name and a config without [dir] are configuration errors (78)" '
	expect_exit 78 $SS sync --name nosuch &&
	printf "[server]\naddress = 127.0.0.1:1\n" >"$T_DIR/empty.conf" &&
	expect_exit 78 $BIN/stepsync --config "$T_DIR/empty.conf" sync
'

ok "a config error names the file and line" '
	printf "[server]\nadress = x\n" >"$T_DIR/bad.conf" &&
	expect_fail $BIN/stepsync --config "$T_DIR/bad.conf" sync 2>"$T_DIR/err" &&
	grep -q "bad.conf:2: unknown key .adress." "$T_DIR/err"
'

done_testing
