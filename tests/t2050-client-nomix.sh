#!/bin/sh
# t2050-client-nomix.sh — put never lets the server commit a mix, and put --replace
# never leaves a key without a full copy where it can help it (issue 16, items 1-2).
# Reproduces the old failures: two concurrent puts to one key committed blocks of both
# files; an interrupted put, the file rewritten and put again without --state committed
# old blocks plus new ones; --replace deleted the old object before the upload, so a failed
# upload left the key empty. Slow uploads (--bwlimit) are watched through their --state
# database (acked BLOCKS of KEY), never through sleeps.
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
export STEPSYNC_PASSWORD=bob STEPSYNC_CONFIG=$T_DIR/none.conf
start_stepd --auth open || exit 1
ss() { "$S" --server "127.0.0.1:$STEPD_PORT" --user bob --timeout 10 "$@"; }
# skip TITLE REASON — a TAP skip.
skip() {
	t_count=$((t_count + 1))
	echo "ok $t_count - $1 # skip $2"
}
# acked DB KEYPART N — DB's uploads table has a row whose key contains KEYPART with at
# least N blocks acknowledged.
acked() {
	python3 - "$1" "$2" "$3" <<'PY'
import sqlite3, sys
try:
    rows = sqlite3.connect(sys.argv[1], timeout=1).execute("select key, bitmap from uploads").fetchall()
except sqlite3.Error:
    sys.exit(1)
ok = any(sys.argv[2] in k and sum(bin(b).count("1") for b in bm) >= int(sys.argv[3]) for k, bm in rows)
sys.exit(0 if ok else 1)
PY
}
# has_ext PORT NAME — the server on PORT advertises extension NAME at LOGIN.
has_ext() {
	python3 - "$1" "$2" <<'PY'
import sys
sys.path.insert(0, __import__("os").environ["TOP"] + "/tests/peers")
import stepwire
c = stepwire.Client(port=int(sys.argv[1]))
c.connect()
resp, _ = c.request({"type": "AUTH", "operation": "LOGIN", "direction": "REQUEST",
                     "username": "bob", "password": stepwire.md5_hex(b"bob")})
sys.exit(0 if sys.argv[2] in resp.get("extensions", []) else 1)
PY
}
# keys PORT — every FILE key of bob (LIST), one a line.
keys() {
	python3 - "$1" <<'PY'
import sys
sys.path.insert(0, __import__("os").environ["TOP"] + "/tests/peers")
import stepwire
c = stepwire.Client(port=int(sys.argv[1]))
c.connect()
c.login("bob", b"bob")
resp, _ = c.call("FILE", "LIST", token=c.token, limit=10000)
print("\n".join(resp["keys"]))
PY
}
md5() { md5sum <"$1" | cut -d" " -f1; }
head -c 4000000 /dev/urandom >one.bin
head -c 4000000 /dev/urandom >two.bin

ok "two puts of different files to one key at once: one wins whole, the other exits 5" '
	ss put --key race one.bin >o1 2>e1 & p1=$!
	ss put --key race two.bin >o2 2>e2 & p2=$!
	wait $p1; r1=$?; wait $p2; r2=$?
	cat e1 e2; echo "exit $r1 $r2"
	ss get race -o race.out >/dev/null &&
	if [ $r1 -eq 0 ]; then [ $r2 -eq 5 ] && cmp one.bin race.out
	else [ $r1 -eq 5 ] && [ $r2 -eq 0 ] && cmp two.bin race.out; fi'
ok "a put of other content while an upload is in progress: exit 5, the first one commits whole" '
	"$S" --server "127.0.0.1:$STEPD_PORT" --user bob --state a.db put --bwlimit 1M \
		--key busy one.bin >/dev/null 2>ea & pa=$!
	wait_for "acked a.db busy 2" 400 &&
	expect_exit 5 ss put --key busy two.bin 2>eb && cat eb &&
	grep -q "another upload of this key, with other content, is in progress (423)" eb &&
	wait $pa && ss get busy -o busy.out >/dev/null && cmp one.bin busy.out'
ok "the same over several connections: that file exit 5, the others uploaded" '
	mkdir -p m && cp two.bin m/busy2 && echo other >m/other &&
	"$S" --server "127.0.0.1:$STEPD_PORT" --user bob --state a2.db put --bwlimit 1M \
		--key busy2 one.bin >/dev/null 2>ea & pa=$!
	wait_for "acked a2.db busy2 2" 400 &&
	expect_exit 5 ss --json put --connections 2 m/busy2 m/other >oc &&
	python3 -c "
import json; d = {o[\"file\"]: o for o in json.load(open(\"oc\"))}
assert d[\"m/busy2\"][\"exit_status\"] == 5 and \"423\" in d[\"m/busy2\"][\"error\"], d
assert d[\"m/other\"][\"key\"] == \"other\", d" &&
	wait $pa && ss get busy2 -o busy2.out >/dev/null && cmp one.bin busy2.out'
ok "a put of the same content joins the upload in progress; both exit 0" '
	"$S" --server "127.0.0.1:$STEPD_PORT" --user bob --state j.db put --bwlimit 1M \
		--key join one.bin >/dev/null 2>ea & pa=$!
	wait_for "acked j.db join 2" 400 &&
	ss --json put --key join one.bin >oj &&
	python3 -c "import json; d=json.load(open(\"oj\")); assert d[\"md5\"]==\"$(md5 one.bin)\", d" &&
	wait $pa && ss get join -o join.out >/dev/null && cmp one.bin join.out'
ok "interrupted put, file rewritten, put again without --state: no mix (exit 5 until rm)" '
	cp one.bin r.bin &&
	"$S" --server "127.0.0.1:$STEPD_PORT" --user bob --state r.db put --bwlimit 1M \
		--key rw r.bin >/dev/null 2>&1 & pr=$!
	wait_for "acked r.db rw 2" 400 && kill -9 $pr; wait $pr 2>/dev/null
	cp two.bin r.bin &&
	expect_exit 5 ss put --key rw r.bin 2>e && grep -q "stepsync rm" e &&
	expect_exit 4 ss get rw -o rw.out 2>/dev/null &&
	ss rm rw && ss put --key rw r.bin >/dev/null &&
	ss get rw -o rw.out >/dev/null && cmp two.bin rw.out'
ok "interrupted put, put again unchanged without --state: resumes from the server" '
	"$S" --server "127.0.0.1:$STEPD_PORT" --user bob --state s.db put --bwlimit 1M \
		--key same one.bin >/dev/null 2>&1 & ps_=$!
	wait_for "acked s.db same 8" 400 && kill -9 $ps_; wait $ps_ 2>/dev/null
	ss --json put --key same one.bin >os &&
	python3 -c "import json; d=json.load(open(\"os\")); assert d[\"resumed\"] and d[\"blocks_sent\"] < d[\"blocks_total\"], d" &&
	ss get same -o same.out >/dev/null && cmp one.bin same.out'
ok "without save_md5, blocks on the server that we did not send are not trusted" '
	cp one.bin l.bin &&
	STEPSYNC_IGNORE_EXT=save_md5 "$S" --server "127.0.0.1:$STEPD_PORT" --user bob \
		--state l.db put --bwlimit 1M --key legacy l.bin >/dev/null 2>&1 & pl=$!
	wait_for "acked l.db legacy 2" 400 && kill -9 $pl; wait $pl 2>/dev/null
	cp two.bin l.bin &&
	STEPSYNC_IGNORE_EXT=save_md5 ss -v put --key legacy l.bin >/dev/null 2>e && cat e &&
	grep -q "blocks of .legacy. that may be another file.s; starting over" e &&
	ss get legacy -o legacy.out >/dev/null && cmp two.bin legacy.out'

# put --replace: the legacy path (a temporary key) against stepd with the extension
# ignored and against the reference server; the atomic path when stepd offers "replace".
# The slow uploads are watched until the key being uploaded (TMP: the temporary key's
# suffix on the legacy path) has blocks in; they take 8 s or more, plenty for a poll.
replace_tests() { # WHO SS-FUNCTION LIST-KEYS-COMMAND KEY-PREFIX TMP
	who=$1 sf=$2 lk=$3 k=$4 tmp=$5
	ok "$who: put --replace of an existing key replaces it, no temporary key left" "
		$sf put --key ${k}rk one.bin >/dev/null && $sf put --replace --key ${k}rk two.bin >/dev/null &&
		$sf get ${k}rk -o rk.out >/dev/null && cmp two.bin rk.out &&
		$lk >k && grep -q '^${k}rk\$' k && ! grep -q '^${k}rk.stepsync-new' k"
	ok "$who: put --replace of a key that does not exist is an ordinary upload" "
		$sf put --replace --key ${k}new one.bin >/dev/null &&
		$sf get ${k}new -o new.out >/dev/null && cmp one.bin new.out &&
		$lk >k && ! grep -q '^${k}new.stepsync-new' k"
	ok "$who: --replace of a file that changes during the upload: exit 6, old content stays" "
		$sf put --key ${k}rc one.bin >/dev/null && cp two.bin c.bin &&
		$sf --state c-$sf.db put --replace --bwlimit 500k --key ${k}rc c.bin >/dev/null 2>e & pc=\$!
		wait_for 'acked c-$sf.db ${k}rc$tmp 2' 400 &&
		printf XXXX | dd of=c.bin bs=1 seek=100 conv=notrunc 2>/dev/null &&
		wait \$pc; rc=\$?; cat e; [ \$rc -eq 6 ] && grep -q 'changed' e &&
		$sf get ${k}rc -o rc.out >/dev/null && cmp one.bin rc.out"
	ok "$who: --replace killed during the upload: the old content stays downloadable" "
		$sf put --key ${k}rkill one.bin >/dev/null &&
		$sf --state k-$sf.db put --replace --bwlimit 500k --key ${k}rkill two.bin >/dev/null 2>&1 & pk=\$!
		wait_for 'acked k-$sf.db ${k}rkill$tmp 2' 400 && kill -9 \$pk; wait \$pk 2>/dev/null
		$sf get ${k}rkill -o rkill.out >/dev/null && cmp one.bin rkill.out"
}
lss() { STEPSYNC_IGNORE_EXT=replace ss "$@"; }
replace_tests "stepd, legacy path" lss "keys $STEPD_PORT" l .stepsync-new
start_ref_server || exit 1
rs() { "$S" --server "127.0.0.1:$REF_PORT" --user bob --timeout 10 "$@"; }
replace_tests "reference server" rs "ls $T_DIR/ref.root/bob" r .stepsync-new
if has_ext "$STEPD_PORT" replace; then
	replace_tests "stepd, replace extension" ss "keys $STEPD_PORT" x ""
	ok "stepd, replace extension: the old object stays visible during the upload" '
		ss put --key vis one.bin >/dev/null &&
		ss --state v.db put --replace --bwlimit 1M --key vis two.bin >/dev/null 2>&1 & pv=$!
		wait_for "acked v.db vis 2" 400 && ss get vis -o vis.out >/dev/null &&
		cmp one.bin vis.out && wait $pv && ss get vis -o vis.out >/dev/null && cmp two.bin vis.out'
else
	for t in "replaces it" "a new key" "changes during the upload" "killed during the upload" \
		"old object visible"; do
		skip "stepd, replace extension: $t" "this stepd does not advertise replace (server branch)"
	done
fi
done_testing
