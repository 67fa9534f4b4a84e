#!/bin/sh
# t0070-cli-tty.sh — keys and file names with control characters are printed escaped
# on a terminal (a name could otherwise move the cursor or rewrite the screen), and
# as they are when the output is a pipe or a file (scripts get the real bytes).
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
command -v script >/dev/null 2>&1 || { echo "1..0 # SKIP script(1) not installed"; exit 0; }
start_stepd --auth open || exit 1
export STEPSYNC_PASSWORD=alice STEPSYNC_CONFIG=$T_DIR/none.conf
SS="$S --server 127.0.0.1:$STEPD_PORT --user alice --timeout 5"
esc=$(printf "a\033[2Jb")
printf x >"$esc"
export esc SS

ok "put on a terminal shows the escape character as \\x1b" '
	script -qec "$SS put \"\$esc\"" /dev/null >tty.out &&
	grep -q "a\\\\x1b\[2Jb " tty.out &&
	! tr -d "\r" <tty.out | sed "s/$(printf "\033")\[K//g" | grep -q "$(printf "\033")"'
ok "info and errors on a terminal are escaped too" '
	script -qec "$SS info \"\$esc\"" /dev/null >tty.out &&
	grep -q "^key: a\\\\x1b\[2Jb" tty.out &&
	script -qec "$SS info \"\$esc\$esc\"" /dev/null >tty.out;
	grep -q "info '\''a\\\\x1b\[2Jba\\\\x1b\[2Jb'\'': no such file" tty.out'
ok "a pipe gets the real bytes" '
	$SS info "$esc" >out && grep -q -F "key: $esc" out'
done_testing
