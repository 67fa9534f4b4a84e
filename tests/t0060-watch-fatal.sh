#!/bin/sh
# t0060-watch-fatal.sh — `watch` stops on what retrying cannot heal, with one clear line
# and the exit status systemd shows: 78 for a bad or incomplete configuration, 77 for a
# refused login (it used to retry forever, and a stale password got the address
# throttled for everyone). A server that is down is still retried (t3000).
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
start_stepd --auth open || exit 1
export STEPSYNC_CONFIG=$T_DIR/none.conf
mkdir d && echo x >d/x.txt

# watch_exit WANT ARGS... — watch exits by itself (bounded) with status WANT.
watch_exit() {
	want=$1
	shift
	"$S" "$@" >w.out 2>w.err &
	p=$!
	track_pid $p
	wait_for "! kill -0 $p" 600
	wait $p
	rc=$?
	cat w.err
	[ $rc -eq "$want" ]
}

ok "wrong password: exit 77 with one line saying why" '
	STEPSYNC_PASSWORD=wrong watch_exit 77 --server "127.0.0.1:$STEPD_PORT" --user alice \
		--state st.db watch --debounce 50 d &&
	grep -q "^watching 1 directory" w.out &&
	[ $(grep -c "watch: stopping (exit 77): .*login refused" w.err) -eq 1 ]'
ok "status shows the refused login as the watch run'\''s error" '
	"$S" --state st.db status >out && cat out &&
	grep -q "^  d: watch failed at .* (exit 77)" out && grep -q "^    error: .*(401)" out &&
	grep -q "^watch: not running" out'
ok "a config without a server: exit 78" '
	printf "[dir \"d\"]\npath = %s/d\n" "$T_DIR" >noserver.conf &&
	STEPSYNC_PASSWORD=alice watch_exit 78 --config noserver.conf --state st2.db watch --debounce 50 &&
	grep -q "watch: stopping (exit 78): no server given" w.err'
ok "a config that cannot be parsed: exit 78 before watching" '
	printf "[dir \"d\"\npath = %s/d\n" "$T_DIR" >bad.conf &&
	STEPSYNC_PASSWORD=alice watch_exit 78 --config bad.conf --state st3.db watch &&
	grep -q "bad.conf:1: syntax error" w.err && ! grep -q "^watching" w.out'
ok "the right password still backs up and keeps watching; the metrics have the run" '
	"$S" --server "127.0.0.1:$STEPD_PORT" --user alice --password-file /dev/stdin \
		--state st4.db watch --debounce 50 --prometheus m.prom d >w4.out 2>w4.err <<PW &
alice
PW
	p=$!
	track_pid $p
	wait_for "grep -q \"^  d: watch ok\" st4.txt 2>/dev/null || { \"$S\" --state st4.db status >st4.txt; false; }" 400
	r=$?
	kill -0 $p; alive=$?
	kill -TERM $p; wait $p; rc=$?
	[ $r -eq 0 ] && [ $alive -eq 0 ] && [ $rc -eq 0 ] &&
	grep -q "^stepsync_last_run_exit_status{name=\"d\"} 0$" m.prom'
done_testing
