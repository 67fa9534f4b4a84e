#!/bin/bash
# contrib/demo.sh — `make demo`: a real round trip on this machine, loopback only.
# Starts stepd with a user database, backs up a sample folder, lists snapshots,
# restores into a new folder and shows that it matches; then a one-shot put/get.
set -euo pipefail
: "${BIN:?}" "${TOP:?}"
W=$(mktemp -d "${TMPDIR:-/tmp}/stepsync-demo.XXXXXX")
SPID=""
cleanup() {
	[ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

echo "== demo workspace: $W"
say "stepd --root $W/srv init   (a new, empty root)"
"$BIN/stepd" --root "$W/srv" init
say "stepd --root $W/srv user add demo   (password from stdin)"
echo "correct horse battery staple" | "$BIN/stepd" --root "$W/srv" user add demo
"$BIN/stepd" --root "$W/srv" user list

say "stepd --bind 127.0.0.1 --port 0 --root $W/srv &"
"$BIN/stepd" --bind 127.0.0.1 --port 0 --port-file "$W/port" --root "$W/srv" >"$W/stepd.log" 2>&1 &
SPID=$!
n=0
until [ -s "$W/port" ]; do
	kill -0 "$SPID" 2>/dev/null || { cat "$W/stepd.log"; exit 1; }
	[ $n -lt 400 ] || { echo "stepd did not start"; exit 1; }
	sleep 0.05
	n=$((n + 1))
done
PORT=$(cat "$W/port")
head -n 1 "$W/stepd.log"
echo "correct horse battery staple" >"$W/password"
chmod 600 "$W/password"
SS=("$BIN/stepsync" --server "127.0.0.1:$PORT" --user demo --password-file "$W/password")

say "stepsync ping"
"${SS[@]}" ping

# A sample folder with the awkward things a real home directory has.
mkdir -p "$W/sample/docs/empty-dir" "$W/sample/photos 2024" "$W/sample/bin"
printf 'Hello, STEP!\n' >"$W/sample/docs/hello.txt"
printf 'caf\xc3\xa9 cr\xc3\xa8me\n' >"$W/sample/docs/r\xc3\xa9sum\xc3\xa9.txt"
head -c 3000000 /dev/urandom >"$W/sample/photos 2024/big.raw"
: >"$W/sample/docs/empty.txt"
printf '#!/bin/sh\necho hi\n' >"$W/sample/bin/run.sh"
chmod +x "$W/sample/bin/run.sh"
ln -s ../docs/hello.txt "$W/sample/bin/hello-link"

say "stepsync sync --name sample $W/sample"
"${SS[@]}" --state "$W/state.db" sync --name sample "$W/sample"

say "echo more >> docs/hello.txt; stepsync sync --name sample (only the change is sent)"
echo "a second line" >>"$W/sample/docs/hello.txt"
"${SS[@]}" --state "$W/state.db" sync --name sample "$W/sample"

say "stepsync snapshots --name sample"
"${SS[@]}" --state "$W/state.db" snapshots --name sample

say "stepsync restore --name sample --to $W/restored   (fresh state: the machine was lost)"
"${SS[@]}" --state "$W/fresh-state.db" restore --name sample --to "$W/restored"

say "diff -r sample restored; compare types, modes, link targets and file mtimes"
diff -r --no-dereference "$W/sample" "$W/restored"
meta() { (cd "$1" && find . -printf '%y %m %l %p\n' , -type f -printf 'mtime %T@ %p\n' | LC_ALL=C sort); }
diff <(meta "$W/sample") <(meta "$W/restored")
echo "identical: every file, empty directory, symlink, mode and mtime came back"

say "stepsync put / info / get (one-shot commands)"
"${SS[@]}" put "$W/sample/photos 2024/big.raw" --key big.raw
"${SS[@]}" info big.raw
"${SS[@]}" get big.raw -o "$W/big.copy"
cmp "$W/sample/photos 2024/big.raw" "$W/big.copy" && echo "get: identical"
echo
echo "== demo finished: backup, restore and verification all succeeded"
