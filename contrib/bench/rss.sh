#!/bin/bash
# contrib/bench/rss.sh — agent memory for a large state: a tree of N empty files
# (default 1,000,000, in 1,000 folders) is synced once to a local stepd, then synced
# again with nothing changed; the maximum RSS of each run is printed.
# Called by bench.sh with BIN, TOP and W (a scratch directory) set. Loopback only.
set -u
: "${BIN:?}" "${TOP:?}" "${W:?}"
N=${BENCH_RSS_FILES:-1000000}
D="$W/rss"
mkdir -p "$D"
python3 - "$D/tree" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i % 1000))
    if i < 1000:
        os.makedirs(d, exist_ok=True)
    os.close(os.open(os.path.join(d, "f%07d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
PY
"$BIN/stepd" --bind 127.0.0.1 --port 0 --port-file "$D/port" --root "$D/srv" --auth open -q \
	>"$D/stepd.log" 2>&1 &
spid=$!
n=0
while [ ! -s "$D/port" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n + 1)); done
echo rss >"$D/pw"
run() {
	/usr/bin/time -f "%e %M" -o "$D/time" "$BIN/stepsync" --server "127.0.0.1:$(cat "$D/port")" \
		--user rss --password-file "$D/pw" --state "$D/state.db" -q sync --name rss "$D/tree" \
		>/dev/null 2>"$D/sync.err" || { echo "# sync failed:"; tail -3 "$D/sync.err"; }
	read -r secs kib <"$D/time"
	printf '%-58s %10s %10s %8s\n' "stepsync sync, $N-file state, $1: max RSS MiB" "$secs" \
		"$((kib / 1024))" ""
}
run "first run"
run "no-change rerun"
kill $spid 2>/dev/null
wait $spid 2>/dev/null
rm -rf "$D"
