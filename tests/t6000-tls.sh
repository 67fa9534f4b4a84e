#!/bin/bash
# t6000 — STEP over TLS: stepd's TLS listener beside the plain one, stepsync --tls with
# certificate and host-name verification, and every way of getting it wrong failing
# clearly and quickly. Certificates are made here, at test time, with the openssl CLI.
. "$TOP/tests/lib.sh"

C=$T_DIR/pki
mkdir -p "$C"
# mkca NAME — a self-signed CA (EC P-256) in $C/NAME.pem, key $C/NAME.key.
mkca() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$C/$1.key" -out "$C/$1.pem" -days 2 -subj "/CN=stepsync test $1" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
# mkcert NAME CA SAN — a server certificate signed by CA for the subjectAltName SAN.
mkcert() {
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$C/$1.key" -out "$C/$1.csr" -subj "/CN=$1" 2>/dev/null &&
		printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$3" >"$C/$1.ext" &&
		openssl x509 -req -in "$C/$1.csr" -CA "$C/$2.pem" -CAkey "$C/$2.key" \
			-CAcreateserial -out "$C/$1.pem" -days 2 -extfile "$C/$1.ext" 2>/dev/null
}

ok "test PKI: a CA, a server certificate for localhost and 127.0.0.1, a stranger CA" '
	mkca ca && mkcert server ca "DNS:localhost,IP:127.0.0.1" &&
	mkca other && mkcert wrongname ca "DNS:wrong.example" &&
	openssl verify -CAfile "$C/ca.pem" "$C/server.pem"
'

# start_tls [ARGS...] — start_stepd with a TLS listener; sets TLS_PORT as well.
start_tls() {
	rm -f "$T_DIR/${STEPD_NAME:-stepd}.tlsport"
	start_stepd --auth open --tls-port 0 --tls-port-file "$T_DIR/${STEPD_NAME:-stepd}.tlsport" \
		"$@" || return 1
	TLS_PORT=$(cat "$T_DIR/${STEPD_NAME:-stepd}.tlsport")
}

echo tls >"$T_DIR/pw"
SS() { "$BIN/stepsync" --user tls --password-file "$T_DIR/pw" --timeout 10 "$@"; }

# ---- stepd refuses bad TLS settings at start ----

ok "stepd: --tls-port without a certificate is a usage error (exit 2)" '
	expect_exit 2 "$BIN/stepd" --root r --tls-port 0 2>err &&
	grep -q "needs --tls-cert" err
'
ok "stepd: a missing certificate file is named, exit 1, nothing listens" '
	expect_exit 1 "$BIN/stepd" --root r --init --bind 127.0.0.1 --port 0 --port-file pf \
		--tls-port 0 --tls-cert nope.pem --tls-key "$C/server.key" 2>err &&
	grep -q "cannot read TLS certificate .nope.pem.: No such file" err && [ ! -e pf ]
'
ok "stepd: a file that is not a certificate is refused with the reason" '
	echo "not a certificate" >bad.pem &&
	expect_exit 1 "$BIN/stepd" --root r --init --bind 127.0.0.1 --port 0 \
		--tls-port 0 --tls-cert bad.pem --tls-key "$C/server.key" 2>err &&
	grep -q "cannot load TLS certificate .bad.pem.: " err
'
ok "stepd: a key that does not match the certificate is refused" '
	expect_exit 1 "$BIN/stepd" --root r --init --bind 127.0.0.1 --port 0 \
		--tls-port 0 --tls-cert "$C/server.pem" --tls-key "$C/other.key" 2>err &&
	grep -q "does not match certificate" err
'

# ---- the good path ----

STEPD_PORT=0
start_tls --tls-cert "$C/server.pem" --tls-key "$C/server.key" --idle-timeout 2
ok "stepd listens on a plain and a TLS port at once" '
	[ "$STEPD_PORT" != 0 ] && [ -n "$TLS_PORT" ] && [ "$TLS_PORT" != "$STEPD_PORT" ] &&
	grep -q "listening on 127.0.0.1:$TLS_PORT (TLS)" "$STEPD_LOG"
'
TS="--server 127.0.0.1:$TLS_PORT --tls --ca $C/ca.pem"
head -c 300000 /dev/urandom >"$T_DIR/small"
head -c $((24 << 20)) /dev/urandom >"$T_DIR/big"

ok "put and get over TLS, verified against --ca (IP address 127.0.0.1)" '
	SS $TS -q put "$T_DIR/small" --key small &&
	SS $TS get small -o small.out && cmp "$T_DIR/small" small.out
'
ok "the host name is checked through SNI and the DNS name (localhost)" '
	SS --server "localhost:$TLS_PORT" --tls --ca "$C/ca.pem" get small -o s2 &&
	cmp "$T_DIR/small" s2
'
ok "a pipelined 24 MiB upload over TLS verifies (server MD5 = local MD5)" '
	SS $TS put "$T_DIR/big" --key big >out &&
	md5=$(md5sum <"$T_DIR/big" | cut -c1-32) && grep -q "^big $md5" out &&
	SS $TS info big >info && grep -q "$md5" info &&
	SS $TS get big -o big.out && cmp "$T_DIR/big" big.out
'
ok "plain and TLS clients are served at the same time, on one store" '
	SS $TS -q put "$T_DIR/big" --key t1 & p1=$!
	SS --server 127.0.0.1:$STEPD_PORT -q put "$T_DIR/big" --key p1 & p2=$!
	SS $TS -q get big -o big.t & p3=$!
	wait $p1 && wait $p2 && wait $p3 && cmp "$T_DIR/big" big.t &&
	SS --server 127.0.0.1:$STEPD_PORT get t1 -o t1.out && cmp "$T_DIR/big" t1.out &&
	SS $TS get p1 -o p1.out && cmp "$T_DIR/big" p1.out
'
mkdir -p "$T_DIR/tree/sub"
cp "$T_DIR/small" "$T_DIR/tree/a"
head -c 2000000 /dev/urandom >"$T_DIR/tree/sub/b"
echo note >"$T_DIR/tree/sub/c.txt"
ok "sync and restore over TLS" '
	SS $TS --state st.db sync --name tree "$T_DIR/tree" >out && grep -q "^snapshot tree#1:" out &&
	SS $TS restore --name tree --to restored && diff -r "$T_DIR/tree" restored
'
ok "sync of many files over 4 TLS connections at once, then restore" '
	mkdir -p many && for i in $(seq 1 40); do head -c $((i * 3000)) /dev/urandom >many/f$i; done &&
	SS $TS --connections 4 --state st3.db sync --name many many >out &&
	grep -q "^snapshot many#1: 40 files" out &&
	SS $TS restore --name many --to many.r && diff -r many many.r
'
ok "watch over TLS backs up a new file, and stops with exit 0 on SIGTERM" '
	mkdir -p w && echo seed >w/a || exit 1
	"$BIN/stepsync" --user tls --password-file "$T_DIR/pw" $TS --state w.db \
		watch --name WT w >w.out 2>w.err &
	wp=$!
	wait_for "grep -q \"^watching \" w.out || ! kill -0 $wp" 400 && kill -0 $wp &&
	head -c 150000 /dev/urandom >w/new &&
	wait_for "rm -rf wr; SS $TS restore --name WT --to wr >/dev/null 2>&1 && cmp w/new wr/new" 600
	r=$?
	kill -TERM $wp; wait $wp; rc=$?
	echo "wait_for $r, watch exit $rc"; cat w.err; [ $r -eq 0 ] && [ $rc -eq 0 ]
'
ok "the config file keys [server] tls and ca reach every command" '
	printf "[server]\naddress = 127.0.0.1:%s\nuser = tls\npassword_file = %s\ntls = yes\nca = %s\n[state]\npath = cst.db\n" \
		"$TLS_PORT" "$T_DIR/pw" "$C/ca.pem" >c.conf &&
	"$BIN/stepsync" --config c.conf ping >/dev/null &&
	"$BIN/stepsync" --config c.conf -q put "$T_DIR/small" --key viaconf &&
	"$BIN/stepsync" --config c.conf get viaconf -o vc && cmp "$T_DIR/small" vc &&
	"$BIN/stepsync" --config c.conf snapshots --name tree >snaps && grep -q "^1 " snaps &&
	"$BIN/stepsync" --config c.conf restore --name tree --to r2 && diff -r "$T_DIR/tree" r2
'

# ---- verification failures: clear, fatal, not retried ----

ok "a CA that did not sign the server certificate: clear error, exit 76" '
	expect_exit 76 SS --server 127.0.0.1:$TLS_PORT --tls --ca "$C/other.pem" get small -o x 2>err &&
	grep -q "certificate verify failed: unable to get local issuer certificate" err && [ ! -e x ]
'
ok "without --ca the system trust store does not know the test CA" '
	expect_exit 76 SS --server 127.0.0.1:$TLS_PORT --tls ping 2>err &&
	grep -q "certificate verify failed" err
'
ok "sync with an untrusted certificate exits 76 (TLS, not the retryable 75)" '
	expect_exit 76 SS --server 127.0.0.1:$TLS_PORT --tls --ca "$C/other.pem" \
		--state st2.db sync --name tree "$T_DIR/tree" 2>err &&
	grep -q "certificate verify failed" err
'
ok "an unreadable --ca file is named" '
	expect_exit 76 SS $TS --ca "$T_DIR/nope.pem" ping 2>err &&
	grep -q "cannot read CA file .*nope.pem.: No such file" err
'
MAIN_PID=$STEPD_PID MAIN_PORT=$STEPD_PORT MAIN_TLS=$TLS_PORT MAIN_LOG=$STEPD_LOG
STEPD_NAME=wrong start_tls --tls-cert "$C/wrongname.pem" --tls-key "$C/wrongname.key"
ok "a certificate for another host name fails: hostname mismatch" '
	expect_exit 76 SS --server "localhost:$TLS_PORT" --tls --ca "$C/ca.pem" ping 2>err &&
	grep -q "certificate verify failed: hostname mismatch" err
'
ok "a certificate without the IP address fails: IP address mismatch" '
	expect_exit 76 SS --server "127.0.0.1:$TLS_PORT" --tls --ca "$C/ca.pem" ping 2>err &&
	grep -q "certificate verify failed: IP address mismatch" err
'
ok "restore against it exits 76 too and writes nothing" '
	expect_exit 76 SS --server "127.0.0.1:$TLS_PORT" --tls --ca "$C/ca.pem" \
		restore --name tree --to r3 2>err && [ ! -e r3/a ]
'
stop_stepd "$STEPD_PID"
rc=$?
ok "the second stepd stops cleanly (exit 0: no leak under ASan)" "[ $rc -eq 0 ]"
STEPD_PID=$MAIN_PID STEPD_PORT=$MAIN_PORT TLS_PORT=$MAIN_TLS STEPD_LOG=$MAIN_LOG

# ---- the wrong protocol on either port ----

ok "a plain STEP client on the TLS port gets no STEP answer and does not hang" '
	timeout 20 python3 "$PEERS/ref_client.py" --port "$TLS_PORT" --user tls \
		--timeout 5 ping >out 2>err
	rc=$?
	cat err && [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -lt 125 ] &&
	! grep -q "333" out && ! grep -q "DO NOT ANSWER" out
'
ok "stepsync without --tls on the TLS port fails, bounded" '
	expect_exit 75 timeout 60 "$BIN/stepsync" --server 127.0.0.1:$TLS_PORT --user tls \
		--password-file "$T_DIR/pw" --timeout 5 get small -o y 2>err && [ ! -e y ] &&
	grep -Eq "server closed the connection|speaks TLS" err
'
ok "stepd logs the failed handshakes and goes on serving" '
	grep -q "TLS handshake failed" "$STEPD_LOG" &&
	SS $TS get small -o again && cmp "$T_DIR/small" again
'
ok "TLS 1.2 is accepted (verified chain), TLS 1.1 is refused by the server" '
	echo | timeout 20 openssl s_client -connect 127.0.0.1:$TLS_PORT -tls1_2 \
		-CAfile "$C/ca.pem" -verify_ip 127.0.0.1 >s12 2>&1 &&
	grep -q "Protocol *: TLSv1.2" s12 && grep -q "Verify return code: 0 (ok)" s12 &&
	n=$(grep -c "unsupported protocol" "$STEPD_LOG"; true) &&
	expect_fail timeout 20 openssl s_client -connect 127.0.0.1:$TLS_PORT -tls1_1 \
		-cipher "DEFAULT@SECLEVEL=0" -CAfile "$C/ca.pem" </dev/null >s11 2>&1 &&
	grep -q "Cipher is (NONE)" s11 &&
	wait_for "[ \$(grep -c \"unsupported protocol\" \"$STEPD_LOG\") -gt $n ]" 100
'
ok "a TLS client on the plain port fails clearly" '
	expect_exit 76 SS --server 127.0.0.1:$STEPD_PORT --tls --ca "$C/ca.pem" ping 2>err &&
	grep -q "TLS handshake with 127.0.0.1 port $STEPD_PORT failed" err
'
ok "a connection that never starts the handshake is closed by the idle timeout (2 s)" '
	timeout 20 python3 -c "
import socket, sys
s = socket.create_connection((\"127.0.0.1\", $TLS_PORT))
s.settimeout(15)
sys.exit(0 if s.recv(100) == b\"\" else 1)
"
'

ok "stepd --config takes the TLS settings" '
	printf "auth = open\ntls-port = 0\ntls-cert = %s\ntls-key = %s\ntls-port-file = %s\n" \
		"$C/server.pem" "$C/server.key" "$T_DIR/conf.tlsport" >stepd.conf &&
	STEPD_NAME=conf start_stepd --config stepd.conf &&
	SS --server "127.0.0.1:$(cat "$T_DIR/conf.tlsport")" --tls --ca "$C/ca.pem" -q \
		put "$T_DIR/small" --key c &&
	kill -TERM $STEPD_PID && wait $STEPD_PID
'

t_stop "stepd stops cleanly on SIGTERM with TLS connections behind it"

done_testing
