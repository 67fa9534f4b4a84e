#!/bin/sh
# t1090 — accounts and privileges: failed logins throttled per client address and per
# (name, address) with growing delays, never a name locked for everyone (the right password
# from another address works at once; a waiting client gets a distinct 429 that does not
# tell whether its password was right), an unknown user answered byte for byte like a wrong
# password, files 0600 and directories 0700 whatever the umask, symlinks planted in the
# root refused (nothing written or read through them), and --setuid (bind, drop to an
# unprivileged user, then open the root; skipped unless run as root).
. "$TOP/tests/lib.sh"

S="python3 $T_DIR/sec.py"
R=$T_DIR/stepd.root
E=$T_DIR/elsewhere # where planted symlinks point: nothing may appear or change here

# skip TITLE REASON — a TAP skip.
skip() {
	t_count=$((t_count + 1))
	echo "ok $t_count - $1 # skip $2"
}

cat >"$T_DIR/sec.py" <<'EOF'
# Raw STEP client whose socket is bound to a chosen loopback source address.
import hashlib, json, os, socket, struct, sys, time

def md5(b):
    return hashlib.md5(b).hexdigest()

class C:
    def __init__(self, port, src="127.0.0.1"):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.settimeout(20)
        self.s.bind((src, 0))
        self.s.connect(("127.0.0.1", port))
        self.buf = b""

    def raw(self, obj, binary=b""):
        jb = json.dumps(obj).encode()
        self.s.sendall(struct.pack(">II", len(jb), len(binary)) + jb + binary)
        while True:
            if len(self.buf) >= 8:
                jl, bl = struct.unpack(">II", self.buf[:8])
                if len(self.buf) >= 8 + jl + bl:
                    pkt, self.buf = self.buf[:8 + jl + bl], self.buf[8 + jl + bl:]
                    return pkt
            d = self.s.recv(1 << 16)
            if not d:
                raise EOFError("connection closed")
            self.buf += d

    def req(self, obj, binary=b""):
        pkt = self.raw(obj, binary)
        jl, bl = struct.unpack(">II", pkt[:8])
        return json.loads(pkt[8:8 + jl]), pkt[8 + jl:]

def r(typ, op, **kw):
    d = {"type": typ, "operation": op, "direction": "REQUEST"}
    d.update(kw)
    return d

def login_req(user, pw):
    return r("AUTH", "LOGIN", username=user, password=md5(pw.encode()))

def login(c, user, pw):
    rep, _ = c.req(login_req(user, pw))
    if rep["status"] != 200:
        sys.exit("login %s: %r" % (user, rep))
    return rep["token"]

cmd, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
a = sys.argv[4:]
if cmd == "login":  # USER PW: prints status and message
    rep, _ = C(port, src).req(login_req(a[0], a[1]))
    print(rep["status"], rep["status_msg"])
elif cmd == "raw":  # USER PW: the reply packet, hex
    print(C(port, src).raw(login_req(a[0], a[1])).hex())
elif cmd == "fails":  # USER PW N: N logins on one connection; prints the 401 count and time
    c, n, t0 = C(port, src), 0, time.time()
    for i in range(int(a[2])):
        rep, _ = c.req(login_req(a[0], a[1]))
        n += rep["status"] == 401
    print(n, "%.3f" % (time.time() - t0))
elif cmd in ("put", "part"):  # USER PW KEY FILE: upload (part: the first block only)
    c = C(port, src)
    tok = login(c, a[0], a[1])
    data = open(a[3], "rb").read()
    rep, _ = c.req(r("FILE", "SAVE", token=tok, key=a[2], size=len(data)))
    if rep["status"] != 200:
        sys.exit("SAVE: %r" % rep)
    bs, total = rep["block_size"], rep["total_block"]
    for i in range(1 if cmd == "part" else total):
        rep, _ = c.req(r("FILE", "UPLOAD", token=tok, key=a[2], block_index=i),
                       data[i * bs:(i + 1) * bs])
        if rep["status"] != 200:
            sys.exit("UPLOAD %d: %r" % (i, rep))
    print(rep.get("md5", "partial"))
elif cmd == "block":  # USER PW KEY FILE INDEX: uploads one block; prints the status
    c = C(port, src)
    tok = login(c, a[0], a[1])
    data, i = open(a[3], "rb").read(), int(a[4])
    rep, _ = c.req(r("FILE", "UPLOAD", token=tok, key=a[2], block_index=i),
                   data[i * 20480:(i + 1) * 20480])
    print(rep["status"])
elif cmd == "get":  # USER PW KEY OUT: downloads; prints the first non-200 status or 200
    c = C(port, src)
    tok = login(c, a[0], a[1])
    rep, _ = c.req(r("FILE", "GET", token=tok, key=a[2]))
    if rep["status"] != 200:
        print(rep["status"]); sys.exit(0)
    out = b""
    for i in range(rep["total_block"]):
        rep, b = c.req(r("FILE", "DOWNLOAD", token=tok, key=a[2], block_index=i))
        if rep["status"] != 200:
            print(rep["status"]); sys.exit(0)
        out += b
    open(a[3], "wb").write(out)
    print(200)
EOF

# listing of $E: names, sizes, modification times (to show nothing changed there)
elsewhere() {
	find "$E" -printf '%p %s %T@\n' | sort
}

# ---- modes, umask-independent ------------------------------------------------------------
mkdir -p "$E" "$R" && chmod 0755 "$R"
umask 000
ok 'users alice, bob, carol (stepd user add, umask 000)' '
	for u in alice bob carol; do echo "pw-$u" | $BIN/stepd --root "$R" user add $u || exit 1; done'
t_start 'stepd starts under umask 000 (--login-fail-limit 3, first wait 300 s)' \
	--login-fail-limit 3 --login-fail-window 600 --login-fail-delay 300
umask 077
P=$STEPD_PORT
head -c 100000 /dev/urandom >"$T_DIR/f100k"
ok 'an upload (two blocks) and a half upload' '
	$S put $P 127.0.0.1 alice pw-alice k1 f100k >/dev/null &&
	$S part $P 127.0.0.1 alice pw-alice k2 f100k | grep -q partial'
ok 'the root was 0755: tightened to 0700' '[ "$(stat -c %a "$R")" = 700 ]'
ok 'every directory in the root is 0700, every file 0600 (umask was 000)' '
	find "$R" | sed "s/^/# /" &&
	[ "$(find "$R" -type d | wc -l)" -ge 3 ] && [ "$(find "$R" -type f | wc -l)" -ge 5 ] &&
	[ -z "$(find "$R" -type d ! -perm 0700)" ] && [ -z "$(find "$R" -type f ! -perm 0600)" ] &&
	[ -z "$(find "$R" ! -type d ! -type f)" ]'

# ---- no answer tells whether a user exists ----------------------------------------------
ok 'unknown user and wrong password: byte-identical answers' '
	a=$($S raw $P 127.0.0.11 bob wrong) && b=$($S raw $P 127.0.0.12 nosuchuser wrong) &&
	echo "$a" && [ "$a" = "$b" ] && [ -n "$a" ] &&
	$S login $P 127.0.0.13 nosuchuser x | grep -q "^401 Wrong username or password"'

# ---- throttling: per address and per (name, address), never a name for everyone ----------
ok 'per pair: 3 wrong passwords for alice from 127.0.0.2; the right one from .3 works at once' '
	[ "$($S fails $P 127.0.0.2 alice wrong 3 | cut -d" " -f1)" = 3 ] &&
	$S login $P 127.0.0.3 alice pw-alice | grep -q "^200 "'
ok '127.0.0.2 gets the distinct 429 "too many failed logins; retry in N s"' '
	$S login $P 127.0.0.2 alice pw-alice | tee out8 &&
	grep -q "^429 too many failed logins; retry in [0-9]* s$" out8'
ok 'the 429 says nothing about the password (right and wrong: same bytes but the seconds)' '
	a=$($S raw $P 127.0.0.2 alice pw-alice) && b=$($S raw $P 127.0.0.2 alice wrong) &&
	[ "$(echo "$a" | tr -d 0-9)" = "$(echo "$b" | tr -d 0-9)" ] &&
	! $S raw $P 127.0.0.14 bob wrong | grep -q "$(echo "$a" | cut -c1-40)"'
ok 'the delay is logged once, without the password' '
	[ "$(grep -c "alice. from 127.0.0.2 waits 300 s after failed logins" "$STEPD_LOG")" = 1 ] &&
	! grep -q "pw-alice" "$STEPD_LOG"'
ok 'bob from the same address is unaffected (the address has 3 of its 12)' '
	$S login $P 127.0.0.2 bob pw-bob | grep -q "^200 "'
ok 'a throttled client hammering (200 LOGINs) is answered at once and blocks nobody' '
	$S fails $P 127.0.0.2 alice wrong 200 >hammer &
	h=$!
	for i in 1 2 3 4 5; do $S login $P 127.0.0.4 bob pw-bob | grep -q "^200 " || exit 1; done
	wait $h && cat hammer && awk "{ exit !(\$2 < 5) }" hammer'
ok 'per address: 12 unknown names from 127.0.0.5 make the address wait, not carol elsewhere' '
	for u in x1 x2 x3 x4 x5 x6 x7 x8 x9 x10 x11 x12; do
		$S login $P 127.0.0.5 $u wrong | grep -q "^401 " || exit 1; done &&
	$S login $P 127.0.0.5 carol pw-carol | grep -q "^429 " &&
	$S login $P 127.0.0.6 carol pw-carol | grep -q "^200 "'
ok 'the address delay is logged; the hammering added few lines' '
	[ "$(grep -c "address 127.0.0.5 waits 300 s" "$STEPD_LOG")" = 1 ] &&
	[ "$(grep -c "after failed logins" "$STEPD_LOG")" -le 6 ]'
t_stop 'SIGTERM exits 0'
t_start 'stepd --login-fail-limit 2 --login-fail-window 2 (waits of 1 s, at most 2 s)' \
	--login-fail-limit 2 --login-fail-window 2
P=$STEPD_PORT
ok 'the waits pass: alice from .2 logs in again after 5 failures' '
	$S fails $P 127.0.0.2 alice wrong 5 >/dev/null &&
	wait_for "$S login $P 127.0.0.2 alice pw-alice | grep -q \"^200 \"" 200'
t_stop 'SIGTERM exits 0'

printf '[stepd]\nlogin-fail-limit = 1\nlogin-fail-window = 600\nlogin-fail-delay = 300\n' \
	>"$T_DIR/sec.conf"
t_start 'stepd --config FILE with login-fail-limit = 1' --config "$T_DIR/sec.conf"
P=$STEPD_PORT
ok 'config: one failure makes that pair wait; the right password elsewhere still works' '
	$S login $P 127.0.0.7 carol wrong | grep -q "^401 " &&
	$S login $P 127.0.0.7 carol pw-carol | grep -q "^429 " &&
	$S login $P 127.0.0.8 carol pw-carol | grep -q "^200 " &&
	$S login $P 127.0.0.7 bob pw-bob | grep -q "^200 "'
t_stop 'SIGTERM exits 0'
t_start 'stepd --login-fail-limit 0 (off)' --login-fail-limit 0
P=$STEPD_PORT
ok 'limit 0: 20 failures, then the right password works' '
	[ "$($S fails $P 127.0.0.9 carol wrong 20 | cut -d" " -f1)" = 20 ] &&
	$S login $P 127.0.0.9 carol pw-carol | grep -q "^200 "'
t_stop 'SIGTERM exits 0'
ok 'bad limits are usage errors (exit 2); --help documents them' '
	expect_exit 2 $BIN/stepd --root "$R" --login-fail-limit -1 2>/dev/null &&
	expect_exit 2 $BIN/stepd --root "$R" --login-fail-window 0 2>/dev/null &&
	$BIN/stepd --help | grep -q -- --login-fail-limit &&
	$BIN/stepd --help | grep -q -- --login-fail-window && $BIN/stepd --help | grep -q -- --setuid'

# ---- symlinks in the root ------------------------------------------------------------------
# plant NAME — moves ROOT/NAME to $E and leaves a symlink to it in its place.
plant() {
	mv "$R/$1" "$E/$1" && ln -s "$E/$1" "$R/$1"
}
# unplant NAME — undoes plant.
unplant() {
	rm "$R/$1" && mv "$E/$1" "$R/$1"
}
# refuses NAME — stepd with ROOT/NAME a symlink exits 1 without listening; $E unchanged.
refuses() {
	plant "$1" &&
		before=$(elsewhere) &&
		expect_exit 1 $BIN/stepd --bind 127.0.0.1 --port 0 --port-file "$T_DIR/pf.$1" \
			--root "$R" 2>"$T_DIR/err.$1" &&
		cat "$T_DIR/err.$1" && [ ! -e "$T_DIR/pf.$1" ] && [ "$(elsewhere)" = "$before" ] &&
		unplant "$1"
}
for n in obj tmp meta.db secret; do
	ok "a symlink as $n: stepd refuses to start, nothing changes where it points" "refuses $n"
done
ok 'a symlink as meta.db-shm (to an existing file): refused, the file untouched' '
	touch -d @1000000000 "$E/shm" && before=$(elsewhere) && ln -s "$E/shm" "$R/meta.db-shm" &&
	expect_exit 1 $BIN/stepd --bind 127.0.0.1 --port 0 --root "$R" 2>/dev/null &&
	rm "$R/meta.db-shm" && [ "$(elsewhere)" = "$before" ] && [ ! -s "$E/shm" ]'
ok 'a dangling symlink as obj in a fresh root: refused, nothing created at its target' '
	mkdir fresh && ln -s "$E/new-obj" fresh/obj &&
	expect_exit 1 $BIN/stepd --port 0 --bind 127.0.0.1 --root fresh 2>/dev/null &&
	[ ! -e "$E/new-obj" ] &&
	ln -s "$E/new-wal" fresh/meta.db-wal && rm fresh/obj &&
	expect_exit 1 $BIN/stepd --port 0 --bind 127.0.0.1 --root fresh 2>/dev/null &&
	[ ! -e "$E/new-wal" ]'
ok 'the root itself may be a symlink (resolved once at start)' '
	ln -s "$R" rootlink && $BIN/stepd --root rootlink user list | grep -q alice'

# An object file and an upload's temp file replaced by symlinks to copies outside.
ok 'plant symlinks over the object of k1 and the temp file of k2' '
	o=$(ls "$R/obj") && [ "$(echo "$o" | wc -l)" = 1 ] &&
	t=$(ls "$R/tmp" | grep -v "\.map$") && [ "$(echo "$t" | wc -l)" = 1 ] &&
	cp "$R/obj/$o" "$E/object" && ln -sf "$E/object" "$R/obj/$o" &&
	cp "$R/tmp/$t" "$E/temp" && ln -sf "$E/temp" "$R/tmp/$t" && elsewhere >before.links'
t_start 'stepd restarts over them'
P=$STEPD_PORT
ok 'k1: DOWNLOAD does not read through the symlink' '
	s=$($S get $P 127.0.0.1 alice pw-alice k1 out) && echo "$s" && [ "$s" != 200 ] &&
	[ ! -e out ]'
ok 'k2: the half upload is dropped, the next block is not written through the symlink' '
	s=$($S block $P 127.0.0.1 alice pw-alice k2 f100k 1) && echo "$s" && [ "$s" != 200 ] &&
	grep -q "dropping upload" "$STEPD_LOG"'
ok 'new uploads still work, files 0600' '
	$S put $P 127.0.0.1 alice pw-alice k3 f100k >/dev/null &&
	$S get $P 127.0.0.1 alice pw-alice k3 out3 | grep -q 200 && cmp out3 f100k &&
	[ -z "$(find "$R" -type f ! -perm 0600)" ]'
t_stop 'SIGTERM exits 0'
ok 'nothing outside the root was written' '[ "$(elsewhere)" = "$(cat before.links)" ]'

# ---- --setuid --------------------------------------------------------------------------------
ok '--setuid with an unknown user: a clear error, exit 1' '
	expect_exit 1 $BIN/stepd --root "$R" --port 0 --setuid no-such-user-t1090 2>err &&
	grep -q "no user .no-such-user-t1090." err'
if [ "$(id -u)" != 0 ]; then
	for t in 'root and not-root refused' 'starts as nobody' 'uid, gid, groups, capabilities' \
		'files owned by nobody' 'exits 0' 'root owned by another' 'user add as nobody' \
		'TLS key and low port read and bound before the drop'; do
		skip "--setuid: $t" 'not running as root'
	done
	done_testing
	exit
fi
DU=nobody
DG=$(id -gn $DU)
D=$T_DIR/drop
mkdir -p "$D" && chmod 0711 "$T_DIR" "$D" # nobody may pass through, not list
ok '--setuid root is refused; --setuid when not root is refused' '
	expect_exit 1 $BIN/stepd --root "$D/x" --port 0 --setuid root 2>err &&
	grep -q "is root" err &&
	expect_exit 1 setpriv --reuid=$DU --regid=$DG --clear-groups \
		$BIN/stepd --root "$D/x" --port 0 --setuid $DU 2>err &&
	grep -q "needs stepd to be started as root" err && [ ! -e "$D/x" ]'
install -d -o $DU -g "$DG" -m 0700 "$D/home"
STEPD_ROOT_DIR=$D/home/root
STEPD_NAME=drop
t_start 'stepd --setuid nobody (root created by nobody under a directory of nobody)' \
	--auth open --setuid $DU
P=$STEPD_PORT
ok 'its real, effective and saved uid and gid are nobody, no other group, no capability' '
	grep -E "^(Uid|Gid|Groups|CapEff|CapPrm)" /proc/$STEPD_PID/status | sed "s/^/# /" &&
	u=$(id -u $DU) && g=$(id -g $DU) &&
	grep -Eq "^Uid:[[:space:]]+$u[[:space:]]+$u[[:space:]]+$u[[:space:]]+$u$" /proc/$STEPD_PID/status &&
	grep -Eq "^Gid:[[:space:]]+$g[[:space:]]+$g[[:space:]]+$g[[:space:]]+$g$" /proc/$STEPD_PID/status &&
	grep -Eq "^Groups:[[:space:]]*$g[[:space:]]*$" /proc/$STEPD_PID/status &&
	grep -Eq "^CapEff:[[:space:]]+0+$" /proc/$STEPD_PID/status &&
	grep -q "running as user .$DU." "$STEPD_LOG"'
ok 'serves, and every file in the root belongs to nobody (0600/0700)' '
	$S put $P 127.0.0.1 someone "someone" k1 f100k >/dev/null &&
	$S get $P 127.0.0.1 someone "someone" k1 out | grep -q 200 && cmp out f100k &&
	[ -z "$(find "$D/home/root" ! -user $DU)" ] &&
	[ -z "$(find "$D/home/root" -type f ! -perm 0600)" ] &&
	[ -z "$(find "$D/home/root" -type d ! -perm 0700)" ]'
t_stop 'SIGTERM exits 0 (as nobody)'
unset STEPD_ROOT_DIR STEPD_NAME
ok '--setuid nobody over a root owned by root: refused, named' '
	expect_exit 1 $BIN/stepd --bind 127.0.0.1 --port 0 --root "$R" --setuid $DU 2>err &&
	cat err && grep -q "belongs to uid 0" err'
ok '--setuid also for user add: the database is created by nobody (setuid = in --config)' '
	echo pw | $BIN/stepd --root "$D/home/root2" --init --setuid $DU user add dave 2>err &&
	[ -z "$(find "$D/home/root2" ! -user $DU)" ] &&
	printf "setuid = $DU\n" >su.conf &&
	$BIN/stepd --config su.conf --root "$D/home/root2" user list | grep -q dave &&
	[ -z "$(find "$D/home/root2" ! -user $DU)" ]'
# A TLS key only root can read, and a port below 1024: both before the drop.
LOW=$(python3 -c '
import socket
for p in range(990, 900, -1):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()')
ok 'TLS key (root-only, 0600) and a port below 1024 are used before dropping to nobody' '
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout key.pem -out cert.pem -days 2 -subj "/CN=127.0.0.1" \
		-addext "subjectAltName=IP:127.0.0.1" 2>/dev/null && chmod 0600 key.pem &&
	$BIN/stepd --bind 127.0.0.1 --port $LOW --tls-port 0 --tls-port-file tpf \
		--tls-cert cert.pem --tls-key key.pem --root "$D/home/root" --init --auth open \
		--setuid $DU >low.log 2>&1 &
	pid=$!
	wait_for "[ -s tpf ] && grep -q \"running as user\" low.log || ! kill -0 $pid" 400 &&
	[ -s tpf ] && cat low.log &&
	echo | timeout 10 openssl s_client -connect 127.0.0.1:$(cat tpf) -CAfile cert.pem \
		-verify_return_error </dev/null >sc.out 2>&1 && grep -q "Verify return code: 0" sc.out &&
	$S login $LOW 127.0.0.1 u u | grep -q "^200 " &&
	kill -TERM $pid && wait $pid'
done_testing
