#!/bin/bash
# contrib/bench/rss.sh — agent memory for a large state: a tree of N files (default
# 1,000,000, in 1,000 folders) is synced once to a local stepd, then synced again with
# nothing changed; seconds and maximum RSS of each run are printed, then the state
# database's size and `status` / `snapshots` against that state.
# Called by bench.sh with BIN, TOP and W (a scratch directory) set. Loopback only.
#
#   BENCH_RSS_FILES  number of files (default 1000000)
#   BENCH_RSS_BYTES  bytes per file (default 0: empty files need no object). Files of 1
#                    or more bytes are hashed and need an object; from 8 bytes on each
#                    file's content is distinct (its index), so N objects are uploaded
#                    and recorded; below that, few distinct objects (dedup)
#   BENCH_RSS_KEEP   1: leave the tree, server and state in $W/rss (default: removed)
set -u
: "${BIN:?}" "${TOP:?}" "${W:?}"
N=${BENCH_RSS_FILES:-1000000}
BYTES=${BENCH_RSS_BYTES:-0}
D="$W/rss"
mkdir -p "$D"
python3 - "$D/tree" "$N" "$BYTES" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i % 1000))
    if i < 1000:
        os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, "f%07d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
    if size > 0:
        # the index in decimal, padded or cut to size bytes: distinct per file from 8 bytes
        os.write(fd, (b"%d\n" % i).rjust(size, b"x")[-size:])
    os.close(fd)
PY
"$BIN/stepd" --bind 127.0.0.1 --port 0 --port-file "$D/port" --root "$D/srv" --init --auth open -q \
	>"$D/stepd.log" 2>&1 &
spid=$!
n=0
while [ ! -s "$D/port" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n + 1)); done
echo rss >"$D/pw"
# timed LABEL ARGS... — runs stepsync ARGS under GNU time, prints seconds and max RSS
timed() {
	label=$1
	shift
	/usr/bin/time -f "%e %M" -o "$D/time" "$BIN/stepsync" --server "127.0.0.1:$(cat "$D/port")" \
		--user rss --password-file "$D/pw" --state "$D/state.db" "$@" \
		>"$D/out" 2>"$D/err" || { echo "# stepsync $* failed:"; tail -3 "$D/err"; }
	read -r secs kib <"$D/time"
	printf '%-58s %10s %10s %8s\n' "$label (s, max RSS MiB)" "$secs" "$((kib / 1024))" ""
}
what="$N empty files"
[ "$BYTES" -gt 0 ] && what="$N files of $BYTES B"
timed "sync, $what, first run" -q sync --name rss "$D/tree"
timed "sync, $what, no-change rerun" -q sync --name rss "$D/tree"
timed "status, state of $what" status
timed "snapshots, state of $what" snapshots --name rss
db_kib=$(du -ck "$D"/state.db* 2>/dev/null | tail -1 | cut -f1)
printf '%-58s %10s %10s %8s\n' "state database, $what (MiB on disk)" "" "$((db_kib / 1024))" ""
kill $spid 2>/dev/null
wait $spid 2>/dev/null
[ "${BENCH_RSS_KEEP:-0}" = 1 ] || rm -rf "$D"
