#!/bin/sh
# tests/run-pg.sh — the server suite (t1*) again, every stepd on PostgreSQL metadata
# (make check-pg): one throwaway cluster for the run, one database per stepd root.
# Usage: BIN=... TOP=... sh tests/run-pg.sh [prove args] — skips when PostgreSQL is absent.
: "${BIN:?}" "${TOP:?}"
. "$TOP/tests/lib.sh" # T_DIR, clean-up
. "$TOP/tests/pg_lib.sh"
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
	echo "check-pg: skipped: PostgreSQL server binaries not found"
	exit 0
fi
touch "$T_DIR/.pids"
pg_start || exit 1
STEP_TEST_PG_HOST=$PG_HOST
export STEP_TEST_PG_HOST PATH="$PG_BIN:$PATH"
# t1150 starts its own cluster (it is in make test already).
prove "$@" $(ls "$TOP"/tests/t1*.sh | grep -v t1150 | sort)
