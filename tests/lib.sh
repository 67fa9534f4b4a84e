# tests/lib.sh — small TAP helpers for integration scripts (our own, in git's spirit).
#
#   . "$TOP/tests/lib.sh"
#   start_stepd --auth open            # sets STEPD_PORT, STEPD_PID, STEPD_ROOT
#   ok "title" 'cmd && cmd'
#   expect_fail cmd args...            # non-zero exit, but not a signal or a crash
#   wait_for 'condition' 100           # bounded polling, never a fixed sleep
#   done_testing
#
# Every script gets its own temporary directory ($T_DIR); an EXIT trap kills every
# daemon started through these helpers and removes the directory.
set -u
: "${BIN:?BIN must name the build directory}" "${TOP:?TOP must name the source tree}"
export BIN TOP
PEERS="$TOP/tests/peers"
T_DIR=$(mktemp -d "${TMPDIR:-/tmp}/step-test.XXXXXX")
t_count=0
t_failed=0
t_pids=""

# t_alive PID — PID is still a running child of this script. A daemon stopped and reaped
# earlier (stop_stepd) leaves its number in t_pids, and PIDs wrap within seconds on a busy
# machine: signalling that number could kill another script's process.
t_alive() {
	set -- $(ps -o ppid=,stat= -p "$1" 2>/dev/null)
	[ "${1:-}" = "$$" ] && [ "${2#Z}" = "${2:-}" ]
}

# t_started PID — the process's start time (clock ticks since boot), "" when gone.
t_started() {
	sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

t_cleanup() {
	# Daemons an ok body started (in its subshell) outlive it, adopted by init: they are
	# in $T_DIR/.pids with their start time, which tells them from a reused PID.
	[ ! -f "$T_DIR/.pids" ] || while read -r p t; do
		[ -n "$t" ] && ! t_alive "$p" && [ "$(t_started "$p")" = "$t" ] &&
			kill -TERM "$p" 2>/dev/null
	done <"$T_DIR/.pids"
	for p in $t_pids; do
		t_alive "$p" && kill -TERM "$p" 2>/dev/null
	done
	for p in $t_pids; do
		n=0
		while t_alive "$p" && [ $n -lt 100 ]; do
			sleep 0.05 # wait_for-style bounded polling for the daemon to exit
			n=$((n + 1))
		done
		t_alive "$p" && kill -KILL "$p" 2>/dev/null
	done
	# Extra clean-up of helpers (pg_lib.sh: the throwaway PostgreSQL).
	[ -n "${T_CLEANUP_EXTRA:-}" ] && eval "$T_CLEANUP_EXTRA"
	if [ -n "${KEEP_TEST_DIR:-}" ]; then
		echo "# kept $T_DIR"
	else
		rm -rf "$T_DIR"
	fi
}
trap t_cleanup EXIT
trap 'exit 130' INT TERM

# ok TITLE BODY — runs BODY (a shell string) in a subshell whose working directory is
# $T_DIR, so scratch files never land in the source tree; prints TAP.
ok() {
	t_count=$((t_count + 1))
	if (cd "$T_DIR" && eval "$2") >"$T_DIR/out.$t_count" 2>&1; then
		echo "ok $t_count - $1"
	else
		t_failed=$((t_failed + 1))
		echo "not ok $t_count - $1"
		sed 's/^/# /' "$T_DIR/out.$t_count" | tail -n 30
	fi
}

# sqlite_ok TITLE BODY — ok, except under make check-pg (PostgreSQL metadata), where the
# check is about the SQLite backend's own files (sidecars, start-up clean-up) and is
# reported skipped.
sqlite_ok() {
	if [ -n "${STEP_TEST_PG_HOST:-}" ]; then
		t_count=$((t_count + 1))
		echo "ok $t_count - $1 # SKIP SQLite metadata only"
	else
		ok "$@"
	fi
}

# diag MSG — a TAP comment.
diag() {
	echo "# $*"
}

# expect_fail CMD... — succeeds when CMD exits non-zero without being killed by a signal
# (exit codes above 125 are signals, sanitizer aborts or "command not found").
expect_fail() {
	"$@"
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "expect_fail: '$*' succeeded" >&2
		return 1
	fi
	if [ $rc -gt 125 ]; then
		echo "expect_fail: '$*' crashed or was killed (exit $rc)" >&2
		return 1
	fi
	return 0
}

# expect_exit N CMD... — CMD must exit with exactly N.
expect_exit() {
	want=$1
	shift
	"$@"
	rc=$?
	if [ $rc -ne "$want" ]; then
		echo "expect_exit: '$*' exited $rc, wanted $want" >&2
		return 1
	fi
	return 0
}

cmp_files() {
	cmp "$1" "$2"
}

# wait_for CONDITION [TRIES] — polls CONDITION every 50 ms, at most TRIES times (default 200).
wait_for() {
	n=0
	while ! eval "$1" 2>/dev/null; do
		n=$((n + 1))
		if [ $n -ge "${2:-200}" ]; then
			echo "wait_for: timed out waiting for: $1" >&2
			return 1
		fi
		sleep 0.05 # wait_for's polling interval
	done
	return 0
}

# track_pid PID — kill PID when the script exits.
track_pid() {
	t_pids="$t_pids $1"
	echo "$1 $(t_started "$1")" >>"$T_DIR/.pids"
}

# start_stepd [ARGS...] — starts stepd on 127.0.0.1 with a free port under $T_DIR.
# Sets STEPD_PORT, STEPD_PID, STEPD_ROOT, STEPD_LOG. A second call starts another one
# (STEPD_NAME=x gives it its own root and files).
start_stepd() {
	name=${STEPD_NAME:-stepd}
	STEPD_ROOT=${STEPD_ROOT_DIR:-$T_DIR/$name.root}
	STEPD_LOG=$T_DIR/$name.log
	rm -f "$T_DIR/$name.port"
	# make check-pg: every stepd on PostgreSQL metadata, one database per root.
	if [ -n "${STEP_TEST_PG_HOST:-}" ]; then
		db=step_$(printf '%s' "$STEPD_ROOT" | md5sum | cut -c1-16)
		psql -X -q -h "$STEP_TEST_PG_HOST" -U postgres -d postgres -c "CREATE DATABASE $db" \
			>/dev/null 2>&1
		set -- --metadata "host=$STEP_TEST_PG_HOST user=postgres dbname=$db" "$@"
	fi
	"$BIN/stepd" --bind 127.0.0.1 --port 0 --port-file "$T_DIR/$name.port" \
		--root "$STEPD_ROOT" --init "$@" >>"$STEPD_LOG" 2>&1 &
	STEPD_PID=$!
	track_pid $STEPD_PID
	if ! wait_for "[ -s '$T_DIR/$name.port' ] || ! kill -0 $STEPD_PID" 400 ||
		! [ -s "$T_DIR/$name.port" ]; then
		echo "start_stepd: stepd did not start:" >&2
		cat "$STEPD_LOG" >&2
		return 1
	fi
	STEPD_PORT=$(cat "$T_DIR/$name.port")
}

# stop_stepd [PID] — SIGTERM and wait; returns stepd's exit status.
stop_stepd() {
	pid=${1:-$STEPD_PID}
	kill -TERM "$pid" 2>/dev/null || return 1
	wait "$pid"
}

# t_start TITLE [ARGS...] / t_stop TITLE — start_stepd / stop_stepd reported as TAP tests.
# They run in the script's own shell (ok bodies run in subshells), so STEPD_PORT and
# STEPD_PID stay set for the tests that follow.
t_start() {
	t_title=$1
	shift
	STEPD_PORT=0
	start_stepd "$@"
	ok "$t_title" "[ $STEPD_PORT != 0 ]"
}
t_stop() {
	stop_stepd
	t_rc=$?
	ok "$1" "[ $t_rc -eq 0 ]"
}

# start_ref_server [ARGS...] — the Python replica of the reference server.
# Sets REF_PORT and REF_PID.
start_ref_server() {
	rm -f "$T_DIR/ref.port"
	python3 "$PEERS/ref_server.py" --port 0 --port-file "$T_DIR/ref.port" \
		--root "$T_DIR/ref.root" "$@" >>"$T_DIR/ref.log" 2>&1 &
	REF_PID=$!
	track_pid $REF_PID
	wait_for "[ -s '$T_DIR/ref.port' ]" 400 || { cat "$T_DIR/ref.log" >&2; return 1; }
	REF_PORT=$(cat "$T_DIR/ref.port")
}

# done_testing — prints the plan; exits non-zero when a test failed.
done_testing() {
	echo "1..$t_count"
	[ $t_failed -eq 0 ]
}
