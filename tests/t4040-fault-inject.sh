#!/bin/sh
# t4040-fault-inject.sh — injected failures of block writes, commit syncs and allocations
# (STEP_FAULT=write:N, fsync:N, alloc:N: the N-th such call of a fresh stepd fails). For
# N = 1, 2, ... a fixed workload (multi-block uploads, an empty object, a resumed upload,
# a PUTMANY, DATA records, downloads, LIST, DELETE) runs against a fresh stepd: every request must be
# answered, a failure must be a clean 5xx, a failed upload invisible until it is resumed,
# and afterwards every committed object verifies, also after a restart on the same root,
# and stepd exits 0 on SIGTERM (under the sanitizer build: no leak, no report). The loop
# ends at the first N the workload never reaches (at most FAULT_ITER, default 200; every
# FAULT_STRIDE-th N, default 1, 3 under the sanitizer build).
. "$TOP/tests/lib.sh"
. "$TOP/tests/fault_lib.sh"

MAX=${FAULT_ITER:-200}
STRIDE=${FAULT_STRIDE:-$(fault_iter 1 3)}
[ -n "${FAULT_ITER:-}" ] && STRIDE=${FAULT_STRIDE:-1}
mkdir -p "$T_DIR/roots"
total=0
for kind in write fsync alloc; do
	ok "STEP_FAULT=$kind:N for N=1..$MAX (stride $STRIDE): clean failures, no corruption, no crash" "
		python3 '$TOP/tests/fault_check.py' loop '$BIN/stepd' '$T_DIR/roots' $kind $MAX $STRIDE >$kind.out &&
		cat $kind.out"
	n=$(sed -n 's/^faults injected: //p' "$T_DIR/$kind.out" 2>/dev/null)
	diag "$(grep '^#' "$T_DIR/$kind.out" 2>/dev/null | sed 's/^# //')"
	total=$((total + ${n:-0}))
	rm -rf "$T_DIR/roots"/*
done
diag "faults: faults injected: $total files_lost=0"
done_testing
