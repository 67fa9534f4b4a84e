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

ok "a config error names the file and line and exits 78 (EX_CONFIG), for any command" '
	printf "[server]\nadress = x\n" >"$T_DIR/bad.conf" &&
	expect_exit 78 $BIN/stepsync --config "$T_DIR/bad.conf" sync 2>"$T_DIR/err" &&
	grep -q "bad.conf:2: unknown key .adress." "$T_DIR/err" &&
	expect_exit 78 $BIN/stepsync --config "$T_DIR/bad.conf" snapshots &&
	expect_exit 78 $BIN/stepsync --config "$T_DIR/no-such.conf" sync &&
	printf "[server]\naddress = 127.0.0.1:notaport\n" >"$T_DIR/badaddr.conf" &&
	expect_exit 78 $BIN/stepsync --config "$T_DIR/badaddr.conf" sync "$T_DIR/pics" &&
	expect_exit 2 $BIN/stepsync --server 127.0.0.1:notaport sync "$T_DIR/pics"
'

ok "retryable (75) and fatal (77, 78) failures of a configured sync are told apart" '
	sed "s/^address = .*/address = 127.0.0.1:1/" "$T_DIR/stepsync.conf" >"$T_DIR/down.conf" &&
	expect_exit 75 $BIN/stepsync --config "$T_DIR/down.conf" sync --name pics &&
	echo wrong >"$T_DIR/badpw" &&
	sed "s/^password_file = .*/password_file = badpw/" "$T_DIR/stepsync.conf" >"$T_DIR/pw.conf" &&
	expect_exit 77 $BIN/stepsync --config "$T_DIR/pw.conf" sync --name pics &&
	grep -v "^user = " "$T_DIR/stepsync.conf" >"$T_DIR/nouser.conf" &&
	expect_exit 78 $BIN/stepsync --config "$T_DIR/nouser.conf" sync --name pics 2>"$T_DIR/nouser.err" &&
	{ grep -q user "$T_DIR/nouser.err" || { cat "$T_DIR/nouser.err"; false; }; }
'

done_testing
