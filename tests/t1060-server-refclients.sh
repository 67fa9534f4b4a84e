#!/bin/sh
# t1060 — the deployed clients (tests/peers/ref_client.py) work unchanged against stepd:
# simple, pipelined and connection-per-block uploads, extra fields, BYE, character-counted
# json_len with a non-ASCII key, downloads and DATA records.
. "$TOP/tests/lib.sh"

RC="python3 $PEERS/ref_client.py --host 127.0.0.1 --timeout 30 -q"

t_start 'stepd starts like the reference (block size 20480, open auth)' --auth open --block-size 20480
head -c 300000 /dev/urandom >"$T_DIR/big.bin"
head -c 5 /dev/urandom >"$T_DIR/small.bin"
cp "$T_DIR/big.bin" "$T_DIR/résumé.pdf"
for m in simple pipeline conn-per-block; do
	ok "upload --mode $m" "$RC --port $STEPD_PORT --mode $m --file '$T_DIR/big.bin' --key big-$m"
	ok "download --mode $m" "$RC --port $STEPD_PORT --mode $m download --key big-$m \
		--out '$T_DIR/out-$m' && cmp '$T_DIR/big.bin' '$T_DIR/out-$m'"
done
ok 'extra fields and BYE' "$RC --port $STEPD_PORT --extra-fields --bye --file '$T_DIR/small.bin' --key small"
ok 'non-ASCII key with character-counted json_len' \
	"$RC --port $STEPD_PORT --charcount --file '$T_DIR/résumé.pdf'"
ok 'non-ASCII key, pipelined and char-counted' \
	"$RC --port $STEPD_PORT --charcount --mode pipeline --file '$T_DIR/résumé.pdf' --key 'naïve-ключ'"
ok 'DATA save / get / delete' "
	$RC --port $STEPD_PORT data-save --key rec --field a=1 &&
	$RC --port $STEPD_PORT data-get --key rec | grep -q '\"a\"' &&
	$RC --port $STEPD_PORT data-delete --key rec"
ok 'ping' "$RC --port $STEPD_PORT ping"
t_stop 'SIGTERM exits 0'
done_testing
