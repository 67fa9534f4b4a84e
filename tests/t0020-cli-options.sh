#!/bin/sh
# t0020-cli-options.sh — the command line tells the truth: global options and a
# command's options are accepted anywhere after the command (`sync DIR --dry-run` used to
# be refused with a bare usage line), `--version`, a `--help` that lists every option
# with its default, every long option of every `--help` in stepsync(1), and the cron
# example runs on a fresh account (its flock used to fail without ~/.cache). The XDG
# variables keep a test run as root on the account's files, not /etc and /var/lib.
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
MAN="$TOP/contrib/man/stepsync.1"
cd "$T_DIR" || exit 1
start_stepd --auth open || exit 1
export STEPSYNC_PASSWORD=alice STEPSYNC_CONFIG=$T_DIR/none.conf
SRV="127.0.0.1:$STEPD_PORT"
mkdir tree && echo one >tree/a.txt && echo two >f.bin

ok "sync DIR --dry-run works (options after the operand)" '
	"$S" --server "$SRV" --user alice --state st.db sync tree --dry-run >out &&
	grep -q "^dry run '\''tree'\''" out'
ok "global options after the command and after the operands" '
	"$S" sync tree --name t2 --server "$SRV" --user alice --state st.db -q &&
	"$S" snapshots --name t2 --server="$SRV" --user alice --json >out &&
	python3 -c "import json; d=json.load(open(\"out\")); assert len(d)==1 and d[0][\"id\"]==1, d"'
ok "put FILE --key K --bwlimit 1M, and --timeout after the operand" '
	"$S" put f.bin --key K --bwlimit 1M --server "$SRV" --user alice --timeout 5 >out &&
	grep -q "^K " out'
ok "abbreviated options after the operand keep their value" '
	"$S" put f.bin --ke K2 --bw 1M --serv "$SRV" --us alice >out && grep -q "^K2 " out'
ok "-- ends the options: a key that starts with a dash" '
	"$S" --server "$SRV" --user alice put --key -dash f.bin >/dev/null &&
	"$S" --server "$SRV" --user alice info -- -dash >out && grep -q "^key: -dash$" out &&
	"$S" --server "$SRV" --user alice rm -- -dash'
ok "a value that looks like an option stays the option'\''s value" '
	"$S" --server "$SRV" --user alice put --key --json f.bin >out &&
	grep -q "^--json " out && "$S" --server "$SRV" --user alice rm -- --json'
ok "--version on stepsync, before or after a command" '
	"$S" --version | grep -q "^stepsync [0-9]" &&
	"$S" ping --version | grep -q "^stepsync [0-9]"'
ok "stepsync --help lists every global option with its default" '
	"$S" --help >h &&
	for o in config server user password-file state tls ca timeout bwlimit connections \
		json verbose quiet version help; do
		grep -q -- "--$o" h || { echo "missing --$o"; exit 1; }
	done &&
	grep -q "default 30" h && grep -q "retried 5 times" h && grep -q "1..64 (default 1" h &&
	grep -q "state.db" h && grep -q "options (before or after the command)" h'
ok "every long option of every --help is in stepsync(1)" '
	{ "$S" --help; for c in put get rm info data ping sync restore snapshots prune watch status; do
		"$S" $c --help || exit 1; done; } >all.help &&
	grep -o -- "--[a-z][a-z-]*" all.help | sort -u >opts &&
	[ -s opts ] && missing="" &&
	while read -r o; do
		r=$(printf "%s" "$o" | sed "s/-/\\\\\\\\-/g")
		grep -q -F -- "$(printf "%s" "$o" | sed "s/-/\\\\-/g")" "$MAN" || missing="$missing $o"
	done <opts &&
	{ [ -z "$missing" ] || { echo "not in stepsync.1:$missing"; exit 1; }; }'
ok "every long option and subcommand of stepd --help is in stepd(8)" '
	"$BIN/stepd" --help >stepd.help &&
	grep -o -- "--[a-z][a-z-]*" stepd.help | sort -u >sopts && [ -s sopts ] && missing="" &&
	while read -r o; do
		grep -q -F -- "$(printf "%s" "$o" | sed "s/-/\\\\-/g")" "$TOP/contrib/man/stepd.8" ||
			missing="$missing $o"
	done <sopts &&
	for w in init "user add" "user del" "user passwd" "user list"; do
		grep -q "stepd --root DIR $w" stepd.help || { echo "stepd --help lacks $w"; exit 1; }
		grep -q "$w" "$TOP/contrib/man/stepd.8" || missing="$missing [$w]"
	done &&
	{ [ -z "$missing" ] || { echo "not in stepd.8:$missing"; exit 1; }; }'
ok "every command has --help with a usage line and exit 0" '
	for c in put get rm info data ping sync restore snapshots prune watch status; do
		"$S" $c --help >h && grep -q "^usage: stepsync $c" h || { echo $c; exit 1; }
	done'
ok "the cron example works on a fresh account (no ~/.cache yet)" '
	line=$(grep -v "^#" "$TOP/contrib/cron/stepsync.cron" | grep "stepsync --quiet sync" | head -n 1 |
		sed "s/^[0-9*\/]* *[0-9*]* *[0-9*]* *[0-9*]* *[0-9*]* *//") &&
	[ -n "$line" ] && mkdir -p home/.config/stepsync &&
	printf "[server]\naddress = %s\nuser = alice\n[dir \"cron\"]\npath = %s/tree\n" \
		"$SRV" "$T_DIR" >home/.config/stepsync/stepsync.conf &&
	line=$(printf "%s" "$line" | sed "s#/usr/local/bin/stepsync#$BIN/stepsync#") &&
	fresh="HOME=$T_DIR/home XDG_CONFIG_HOME=$T_DIR/home/.config XDG_STATE_HOME=$T_DIR/home/.local/state" &&
	env -i $fresh PATH="$BIN:/usr/bin:/bin" STEPSYNC_PASSWORD=alice sh -c "$line" &&
	[ -d home/.cache ] &&
	env -i $fresh STEPSYNC_PASSWORD=alice "$S" snapshots --json >out &&
	python3 -c "import json; d=json.load(open(\"out\")); assert [n[\"name\"] for n in d if n[\"name\"]==\"cron\"], d"'
done_testing
