# tests/fault_lib.sh — helpers of the fault suite (t4xxx). Sourced after tests/lib.sh.
#
#   fault_rand N              a seeded pseudo-random number 0..N-1 (FAULT_SEED, default 1)
#   fault_iter DEFAULT SAN    FAULT_ITER, else DEFAULT (plain build) or SAN (sanitizer build)
#   fault_tree DIR BIG N STEP MAX
#                             a tree to sync: DIR/big.bin of BIG random bytes and N small
#                             files DIR/small/fI of 1 + (I * STEP) % MAX random bytes
#   start_proxy NAME ARGS...  tests/peers/faultproxy.py --to 127.0.0.1:$STEPD_PORT ARGS;
#                             sets PROXY_PORT, PROXY_PID; its log is $T_DIR/NAME.log
#   proxy_idle NAME           every connection the proxy accepted has ended (for wait_for)
#   verify_objects PORT USER  every committed object of USER verifies (GET MD5 = content)
#   on_exit CMD               run CMD (a shell string) from the EXIT trap, before lib.sh's
FAULT_SEED=${FAULT_SEED:-1}
fault_state=$FAULT_SEED

fault_rand() {
	# A 31-bit linear congruential generator: reproducible in any POSIX shell.
	fault_state=$(((fault_state * 1103515245 + 12345) % 2147483648))
	echo $(((fault_state / 65536) % $1))
}

# The sanitizer build is several times slower: scale loops down there.
fault_san() {
	case "$BIN" in *san*) return 0 ;; esac
	nm "$BIN/stepd" 2>/dev/null | grep -q __asan_init
}

fault_iter() {
	if [ -n "${FAULT_ITER:-}" ]; then
		echo "$FAULT_ITER"
	elif fault_san; then
		echo "$2"
	else
		echo "$1"
	fi
}

fault_tree() {
	mkdir -p "$1/small"
	head -c "$2" /dev/urandom >"$1/big.bin"
	i=0
	while [ $i -lt "$3" ]; do
		head -c $((1 + (i * $4) % $5)) /dev/urandom >"$1/small/f$i"
		i=$((i + 1))
	done
}

start_proxy() {
	pname=$1
	shift
	rm -f "$T_DIR/$pname.port"
	python3 "$PEERS/faultproxy.py" --to "127.0.0.1:$STEPD_PORT" --port-file "$T_DIR/$pname.port" \
		--seed "$FAULT_SEED" --log "$T_DIR/$pname.log" "$@" 2>>"$T_DIR/$pname.err" &
	PROXY_PID=$!
	track_pid $PROXY_PID
	wait_for "[ -s '$T_DIR/$pname.port' ]" 400 || { cat "$T_DIR/$pname.err" >&2; return 1; }
	PROXY_PORT=$(cat "$T_DIR/$pname.port")
}

proxy_idle() {
	[ "$(grep -c '^conn [0-9]* fault' "$T_DIR/$1.log")" -eq "$(grep -c '^end ' "$T_DIR/$1.log")" ]
}

verify_objects() {
	python3 "$TOP/tests/fault_check.py" verify "$@"
}

fault_exit_cmds=""
on_exit() {
	fault_exit_cmds="$1; $fault_exit_cmds"
}
fault_cleanup() {
	eval "$fault_exit_cmds"
	t_cleanup
}
trap fault_cleanup EXIT
