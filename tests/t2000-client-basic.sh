#!/bin/sh
# t2000-client-basic.sh — stepsync's commands against the reference server replica:
# round trips, exit codes, --help, error messages, password sources, --json.
. "$TOP/tests/lib.sh"
S="$BIN/stepsync"
cd "$T_DIR" || exit 1
start_ref_server -v || exit 1
export STEPSYNC_PASSWORD=alice
ss() { "$S" --server "127.0.0.1:$REF_PORT" --user alice --timeout 5 "$@"; }

head -c 300000 /dev/urandom >a.bin
head -c 20480 /dev/urandom >exact.bin
printf 'x' >one.bin
md5a=$(md5sum <a.bin | cut -d' ' -f1)

ok "--help for stepsync and every command exits 0" '
	"$S" --help | grep -q "usage: stepsync" &&
	for c in put get rm info data ping; do "$S" $c --help | grep -q "usage: stepsync $c" || exit 1; done'
ok "usage errors exit 2" '
	expect_exit 2 "$S" &&
	expect_exit 2 "$S" nosuchcommand &&
	expect_exit 2 "$S" --timeout abc ping &&
	expect_exit 2 ss put &&
	expect_exit 2 ss get &&
	expect_exit 2 ss put --key k a.bin one.bin &&
	expect_exit 2 ss data put k "not json"'
ok "put prints key and MD5" 'ss put a.bin >out && [ "$(cat out)" = "a.bin $md5a" ]'
ok "get round trip is byte-identical" 'ss get a.bin -o a.out >/dev/null && cmp a.bin a.out'
ok "exact-block and one-byte files round trip" '
	ss put exact.bin >/dev/null && ss put one.bin >/dev/null &&
	ss get exact.bin -o exact.out >/dev/null && ss get one.bin -o one.out >/dev/null &&
	cmp exact.bin exact.out && cmp one.bin one.out'
ok "an existing key fails with a clear message and exit 5" '
	expect_exit 5 ss put a.bin 2>err &&
	grep -q "^stepsync: put '\''a.bin'\'': server refused key: already exists (402)$" err'
ok "--replace uploads again" '
	head -c 5000 /dev/urandom >a.bin && ss put --replace a.bin >/dev/null &&
	ss get a.bin -o a2.out >/dev/null && cmp a.bin a2.out'
ok "--key stores under another key" '
	ss put --key "dir-less key" one.bin >out && grep -q "^dir-less key " out &&
	ss info "dir-less key" | grep -q "^size: 1$"'
ok "info shows size, blocks and MD5" '
	ss info exact.bin >out &&
	grep -q "^size: 20480$" out && grep -q "^blocks: 1 x 20480 bytes$" out &&
	grep -q "^md5: $(md5sum <exact.bin | cut -d" " -f1)$" out'
ok "rm deletes; a second rm fails" '
	ss rm exact.bin && expect_exit 4 ss info exact.bin 2>err &&
	grep -q "not found (404)" err && expect_exit 4 ss rm exact.bin'
ok "get of an unknown key fails and creates nothing" '
	expect_exit 4 ss get nosuchkey -o nk.out 2>err && grep -q "nosuchkey" err &&
	[ ! -e nk.out ] && [ -z "$(ls -A . | grep stepsync-)" ]'
ok "data put/get/rm" '
	ss data put rec1 "{\"colour\":\"blue\",\"n\":3}" &&
	ss data get rec1 >out && grep -q "\"colour\": \"blue\"" out && ! grep -q token out &&
	expect_exit 5 ss data put rec1 "{\"a\":1}" &&
	ss data rm rec1 && expect_exit 4 ss data get rec1'
ok "non-ASCII keys and fields survive character-counted answers" '
	ss put --key "résumé.bin" one.bin >/dev/null && ss get "résumé.bin" -o r.out >/dev/null &&
	cmp one.bin r.out && ss info "résumé.bin" | grep -q "^key: résumé.bin$" &&
	ss data put "clé" "{\"naïve\":\"ü\"}" && ss data get "clé" | grep -q "\"naïve\": \"ü\""'
ok "ping shows a round trip" 'ss ping | grep -q "time="'
ok "--json prints one JSON document per command" '
	ss --json put one.bin --key j1 >out &&
	python3 -c "import json,sys; d=json.load(open(\"out\")); assert d[\"key\"]==\"j1\" and d[\"size\"]==1, d" &&
	ss --json info j1 | python3 -c "import json,sys; assert json.load(sys.stdin)[\"total_block\"]==1"'
ok "wrong password is refused with 401" '
	STEPSYNC_PASSWORD=wrong expect_exit 77 ss ping 2>err && grep -q "(401)" err'
ok "password from --password-file wins over the environment" '
	printf "alice\n" >pw && STEPSYNC_PASSWORD=wrong ss --password-file pw ping >/dev/null'
ok "an unreadable password file is a clear error" '
	expect_exit 78 ss --password-file nosuchfile ping 2>err && grep -q "password file" err'
ok "no password and no terminal is a clear error" '
	env -u STEPSYNC_PASSWORD setsid -w "$S" --server "127.0.0.1:$REF_PORT" --user alice ping \
		</dev/null 2>err; [ $? -eq 78 ] && grep -q "no password" err'
ok "password from the config file" '
	printf "[server]\naddress = 127.0.0.1:%s\nuser = alice\npassword_file = %s/pw\n" \
		"$REF_PORT" "$T_DIR" >c.conf &&
	env -u STEPSYNC_PASSWORD "$S" --config c.conf ping >/dev/null'
ok "the password never appears in the process arguments" '
	head -c 400000 /dev/urandom >slow.bin
	STEPSYNC_PASSWORD=alice "$S" --server "127.0.0.1:$REF_PORT" --user alice put --bwlimit 200k slow.bin >/dev/null &
	pid=$! &&
	wait_for "[ -r /proc/$pid/cmdline ] && grep -q slow.bin /proc/$pid/cmdline" 100 &&
	! tr "\0" " " </proc/$pid/cmdline | grep -q alice.*alice &&
	! tr "\0" " " </proc/$pid/cmdline | grep -q 6384e2b2184bcbf58eccf10ca7a6563c &&
	wait $pid'
ok "a file that changes while it is read is reported and not kept on the server" '
	head -c 1000000 /dev/urandom >ch.bin
	n0=$(grep -c "<- FILE UPLOAD" ref.log)
	{ ss put --bwlimit 300k ch.bin >out 2>err; echo $? >rc; } &
	wait_for "[ \$(grep -c \"<- FILE UPLOAD\" ref.log) -gt $((n0 + 2)) ]" 200 &&
	echo more >>ch.bin &&
	wait_for "[ -s rc ]" 400 && [ "$(cat rc)" = 6 ] &&
	grep -q "put '\''ch.bin'\'': file changed while it was read" err &&
	expect_exit 4 ss info ch.bin'
ok "no progress output when stderr is not a terminal (cron stays quiet)" '
	head -c 200000 /dev/urandom >q.bin && ss put q.bin >out 2>err && [ ! -s err ] &&
	ss get q.bin -o q.out >out 2>err && [ ! -s err ]'
if command -v script >/dev/null 2>&1; then
	ok "a terminal gets a progress line with bytes, rate and ETA" '
		head -c 600000 /dev/urandom >tty.bin &&
		script -qec "$S --server 127.0.0.1:$REF_PORT --user alice put --bwlimit 400k tty.bin" \
			/dev/null >tty.out &&
		grep -q "KiB / 585.9 KiB" tty.out && grep -q "ETA" tty.out && grep -q "/s" tty.out'
fi
ok "--tls to a plain server fails clearly (bounded) rather than falling back to plain text" '
	# The reference server never answers the ClientHello: a timeout (75), as on a slow
	# network; stepd answers it, which is a TLS failure (76, t0030).
	expect_exit 75 ss --tls --timeout 2 ping 2>err && grep -q "TLS handshake with" err'
ok "a refused connection fails after bounded retries" '
	expect_exit 75 "$S" --server 127.0.0.1:1 --user alice --timeout 2 ping 2>err &&
	grep -q "cannot connect" err'
done_testing
