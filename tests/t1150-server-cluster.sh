#!/bin/sh
# t1150 — two stepd on one PostgreSQL database (a throwaway cluster this script starts as
# an unprivileged user, unix socket only) and one shared root: blocks of one upload
# alternate between the instances; B resumes what A received after A is SIGKILLed; the
# same key completed on both at once commits once; DELETE on one races DOWNLOAD and commit
# on the other; abandoned uploads expire with both sweeping, an upload in use never does;
# PostgreSQL stopped and started during a stepsync backup loses nothing; a lock held past
# lock_timeout makes small uploads 503, and the commit connection works again after it.
# Also the bad starts: unreachable database or bad URL (one line, exit 78), a password on
# the command line, a newer schema, a root that is not the shared one.
. "$TOP/tests/lib.sh"
. "$TOP/tests/pg_lib.sh"
pg_need

W="python3 $TOP/tests/cluster_wire.py"
pg_start
ok 'a throwaway PostgreSQL starts' "[ $? -eq 0 ]"
M=$(pg_db cluster)
ROOT=$T_DIR/shared.root

# two [ARGS...] — starts instances a and b on the shared root; PA, PB, PIDA, PIDB.
two() {
	STEPD_NAME=a STEPD_ROOT_DIR=$ROOT start_stepd --auth open --metadata "$M" "$@" &&
		PA=$STEPD_PORT PIDA=$STEPD_PID &&
		STEPD_NAME=b STEPD_ROOT_DIR=$ROOT start_stepd --auth open --metadata "$M" "$@" &&
		PB=$STEPD_PORT PIDB=$STEPD_PID
}

two
ok 'two stepd on one database and one root' '[ -n "${PB:-}" ]'
ok 'blocks alternating between the instances; the object verifies on both' \
	"$W alternate $PA $PB"
ok 'blocks of one upload sent to both instances at once: no bit lost, one commit' \
	"$W concurrent $PA $PB"
ok 'a small key SAVEd on A, its block UPLOADed on B: committed once, same on both' \
	"$W small_cross $PA $PB"
# sql_is SQL WANT — the database's answer to SQL is WANT.
sql_is() { [ "$(pg_psql "$1" cluster)" = "$2" ]; }
ok 'every plan those commits consumed is gone' \
	"sql_is \"SELECT count(*) FROM plans WHERE key IN ('x0', 'x1', 'x2', 'x3', 'resave', 'sizes', 'gone')\" 0"
ok 'no blob without an object (no second object was stored)' \
	"sql_is \"SELECT count(*) FROM blobs WHERE 'blob:' || id NOT IN (SELECT file FROM objects)\" 0"
ok 'half an upload through A' "$W kill_a $PA $PB '$T_DIR/killed.bin'"
kill -KILL "$PIDA"
wait "$PIDA" 2>/dev/null
ok 'A SIGKILLed: B resumes with the blocks A received and commits' \
	"$W resume_b $PA $PB '$T_DIR/killed.bin'"
STEPD_NAME=a STEPD_ROOT_DIR=$ROOT start_stepd --auth open --metadata "$M"
PA=$STEPD_PORT PIDA=$STEPD_PID
ok 'A restarted over the shared root' '[ -n "$PA" ]'
ok 'the same key completed on both at once: one commit, both answered, intact' \
	"$W both_complete $PA $PB"
ok 'the same new small key pipelined to both at once: one commit, answers that agree' \
	"$W small_race $PA $PB"
ok 'DELETE on one instance against DOWNLOAD and commit on the other' \
	"$W delete_race $PA $PB"

# The deployed client's connection-per-block mode (a new connection and LOGIN for every
# request) through HAProxy balancing round-robin over A and B: the UPLOADs of a file land
# on other instances than its SAVE, one-block files included.
if command -v haproxy >/dev/null; then
	PF=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	sed 's/balance leastconn/balance roundrobin/' "$TOP/contrib/haproxy/haproxy.cfg" >"$T_DIR/rr.cfg"
	STEP_FRONT=127.0.0.1:$PF STEPD_A=127.0.0.1:$PA STEPD_B=127.0.0.1:$PB \
		haproxy -db -f "$T_DIR/rr.cfg" >"$T_DIR/haproxy.log" 2>&1 &
	track_pid $!
	front_up() { python3 -c "import socket; socket.create_connection(('127.0.0.1', $PF), 1)"; }
	ok 'HAProxy (round-robin) in front of A and B' 'wait_for front_up 400'
	RC="python3 $PEERS/ref_client.py --host 127.0.0.1 --port $PF --timeout 30 -q --mode conn-per-block"
	for n in 1 700 5000 16384 20000 70000; do
		head -c $n /dev/urandom >"$T_DIR/rr$n.bin"
		ok "reference client, a connection per request via HAProxy: $n bytes up and down" \
			"$RC --file rr$n.bin --key rr$n && $RC download --key rr$n --out rr$n.out &&
			cmp rr$n.bin rr$n.out"
	done
else
	ok 'HAProxy tests # SKIP haproxy is not installed' true
fi
stop_stepd $PIDA
ra=$?
stop_stepd $PIDB
rb=$?
ok 'both instances stop with exit 0' "[ $ra -eq 0 ] && [ $rb -eq 0 ]"

two --upload-ttl 3
ok 'abandoned uploads expire with two instances; one in use never does' \
	"$W expire $PA $PB '$ROOT'"
ok 'a small key SAVEd on A: its plan is recorded for B' "$W plan_expire1 $PA $PB"
ok 'the plan is recorded' "sql_is \"SELECT count(*) FROM plans WHERE key = 'pexp'\" 1"
plan_gone() { sql_is "SELECT count(*) FROM plans WHERE key = 'pexp'" 0; }
ok 'an abandoned plan expires (both instances sweeping)' 'wait_for plan_gone 400'
ok 'its UPLOAD is then refused on B (408)' "$W plan_expire2 $PA $PB"

stop_stepd $PIDA
ra=$?
stop_stepd $PIDB
rb=$?
ok 'both instances stop with exit 0' "[ $ra -eq 0 ] && [ $rb -eq 0 ]"

# PostgreSQL stopped and started in the middle of a backup through instance A.
two
SRC=$T_DIR/tree
mkdir -p "$SRC/small"
head -c 12582912 /dev/urandom >"$SRC/big.bin"
i=0
while [ $i -lt 200 ]; do
	head -c $((10 + i * 37)) /dev/urandom >"$SRC/small/f$i"
	i=$((i + 1))
done
echo demo >"$T_DIR/pw"
S="$BIN/stepsync --server 127.0.0.1:$PA --user demo --password-file $T_DIR/pw --timeout 5"
obj_bytes() { du -sb "$ROOT/tmp" "$ROOT/obj" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
base=$(obj_bytes)
$S --state "$T_DIR/st.db" --bwlimit 8M sync --name pgdown "$SRC" >"$T_DIR/sync.out" 2>&1 &
spid=$!
ok 'the backup is under way' "wait_for '[ \$(obj_bytes) -gt \$((base + 2000000)) ] || ! kill -0 $spid' 600"
ok 'PostgreSQL stops (fast) during the backup' 'pg_stop'
ok 'a request meanwhile is answered 503 (retryable)' "python3 -c '
import sys; sys.path.insert(0, \"$TOP/tests\")
from server_wire import *
c = Conn($PA)
rep, _ = c.req(r(\"AUTH\", \"LOGIN\", username=\"x\", password=md5(b\"x\")))
t = rep[\"token\"]
rep, _ = c.req(r(\"FILE\", \"GET\", token=t, key=\"nope\"))
sys.exit(0 if rep[\"status\"] == 503 else print(rep) or 1)'"
ok 'PostgreSQL starts again' 'pg_restart'
wait "$spid"
rc=$?
# stepsync rides through the outage (503s tried again with backoff, uploads resumed from
# what the server received): the first run completes.
ok "the backup rode through the outage: exit 0 (got $rc)" "[ $rc -eq 0 ] || { cat sync.out; false; }"
ok 'it waited for the database (said so on stderr)' "grep -q 'unavailable (503); trying again' sync.out"
ok 'restore through instance B is identical' '
	$BIN/stepsync --server 127.0.0.1:$PB --user demo --password-file $T_DIR/pw \
		--state "$T_DIR/fresh.db" restore --name pgdown --to "$T_DIR/out" &&
	diff -r "$SRC" "$T_DIR/out"'
stop_stepd $PIDA
ra=$?
stop_stepd $PIDB
rb=$?
ok 'both instances stop with exit 0' "[ $ra -eq 0 ] && [ $rb -eq 0 ]"

# A claim of an instance that died between its claim and its commit (faked in the database:
# an id no instance records) is given back by the others' sweep (STEP_PG_DEAD_S=1, a test
# hook; sweeps every 2 s with --upload-ttl 4).
STEP_PG_DEAD_S=1 two --upload-ttl 4
ok 'three of four blocks through A' "$W dead_claim1 $PA $PB"
ok 'the upload row claimed by a vanished instance' \
	"pg_psql \"UPDATE uploads SET state = 1, claimed = now(), claimed_by = 'gone'
		WHERE key = 'dead'\" cluster"
ok 'its claim is given back; the last block through B commits it' "$W dead_claim2 $PA $PB"
stop_stepd $PIDA
ra=$?
stop_stepd $PIDB
rb=$?
ok 'both instances stop with exit 0' "[ $ra -eq 0 ] && [ $rb -eq 0 ]"

ok 'stepd --metadata ... user add works against the cluster' '
	echo "carol'"'"'s pw" | $BIN/stepd --root "$ROOT" --metadata "$M" user add carol'
STEPD_NAME=a STEPD_ROOT_DIR=$ROOT start_stepd --metadata "$M"
PA=$STEPD_PORT PIDA=$STEPD_PID
STEPD_NAME=b STEPD_ROOT_DIR=$ROOT start_stepd --metadata "$M"
PB=$STEPD_PORT PIDB=$STEPD_PID
ok 'a token from a LOGIN on A verifies on B (auth users)' "$W token $PA $PB"
stop_stepd $PIDA
ra=$?
stop_stepd $PIDB
rb=$?
ok 'both instances stop with exit 0' "[ $ra -eq 0 ] && [ $rb -eq 0 ]"

# A lock on objects held past stepd's lock_timeout (2 s here) while small uploads come
# in: they are answered 503, and once it is gone the commit connection works at once. Its
# first statement to prepare gives up while the lock is held and the next one gets through
# once it is released: the half-prepared connection is prepared again, not left failing.
STEPD_NAME=l STEPD_ROOT_DIR=$ROOT start_stepd --auth open \
	--metadata "$M options='-c lock_timeout=2000'"
PL=$STEPD_PORT
pg_psql "BEGIN; LOCK TABLE objects IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT" \
	cluster >/dev/null &
LOCKER=$!
lock_held() {
	[ "$(pg_psql "SELECT count(*) FROM pg_locks WHERE relation = 'objects'::regclass AND
		mode = 'AccessExclusiveLock' AND granted" cluster)" = 1 ]
}
wait_for lock_held 200
ok 'small uploads while objects is locked past lock_timeout: 503, nothing half-done' \
	"$W lock_during $PL $PL"
wait "$LOCKER"
ok 'after the lock: every key committed or free, and commits at once' "$W lock_after $PL $PL"
t_stop 'SIGTERM exits 0'

echo "$M" >"$T_DIR/conn"
STEPD_NAME=f STEPD_ROOT_DIR=$ROOT start_stepd --auth open --metadata "@$T_DIR/conn"
ok 'the connection string from a file (--metadata @FILE): serves the cluster'"'"'s objects' \
	"python3 $TOP/tests/cluster_wire.py alt_again $STEPD_PORT $STEPD_PORT"
t_stop 'SIGTERM exits 0'

# Bad starts: one line on stderr, exit 78; nothing served.
ok 'unreachable database: one line naming it, exit 78' '
	expect_exit 78 $BIN/stepd --port 0 --root r1 --init --metadata "host=127.0.0.1 port=1 dbname=x user=x" 2>e1 &&
	[ $(wc -l <e1) -eq 1 ] && grep -q "127.0.0.1" e1 && cat e1'
ok 'a missing database: exit 78 saying so' '
	expect_exit 78 $BIN/stepd --port 0 --root r1 --init --metadata "host=$PG_HOST user=postgres dbname=nosuch" 2>e2 &&
	[ $(wc -l <e2) -eq 1 ] && grep -q nosuch e2 && cat e2'
ok 'a bad URL: exit 78' '
	expect_exit 78 $BIN/stepd --port 0 --root r1 --init --metadata "postgresql://[" 2>e3 && cat e3'
ok 'a password on the command line is refused (exit 78), never printed' '
	expect_exit 78 $BIN/stepd --port 0 --root r1 \
		--metadata "postgresql://u:s3cr3t@127.0.0.1:1/x" 2>e4 && ! grep -q s3cr3t e4 && cat e4'
ok 'a root that is not the shared one is refused' '
	expect_exit 78 $BIN/stepd --port 0 --root other.root --init --metadata "$M" 2>e5 &&
	grep -q "not the shared root" e5 && cat e5'
ok 'a newer schema is refused, naming its version' '
	pg_psql "INSERT INTO step_schema VALUES(99)" cluster &&
	expect_exit 78 $BIN/stepd --port 0 --root "$ROOT" --metadata "$M" 2>e6 &&
	grep -q "version 99" e6 && cat e6 &&
	pg_psql "DELETE FROM step_schema WHERE version = 99" cluster'
done_testing
