#!/bin/sh
# t4030-fault-disk-full.sh — stepd's root on a small tmpfs (12 MiB) fills up: uploads that
# do not fit are answered 507, stepsync exits non-zero saying so, nothing partial is
# visible (GET and DOWNLOAD 404, LIST does not show it), other objects stay sound, and when
# space returns (an object removed with `stepsync rm`, or the tmpfs remounted larger) the
# same upload resumes, succeeds and verifies. Skipped where mounting is not permitted.
. "$TOP/tests/lib.sh"
. "$TOP/tests/fault_lib.sh"

cd "$T_DIR" || exit 1
MNT=$T_DIR/full
mkdir -p "$MNT"
if ! mount -t tmpfs -o size=12m,mode=0700 tmpfs "$MNT" 2>mount.err; then
	echo "1..0 # skip cannot mount a tmpfs: $(head -1 mount.err)"
	exit 0
fi
# Unmount after stepd is gone (lib.sh's trap would otherwise remove files under a mount).
full_cleanup() {
	t_alive "${STEPD_PID:-0}" && kill -KILL "$STEPD_PID" && wait "$STEPD_PID" 2>/dev/null
	umount "$MNT" 2>/dev/null || umount -l "$MNT"
}
on_exit full_cleanup

echo demo >pw
STEPD_ROOT_DIR=$MNT/root
t_start 'stepd starts on a 12 MiB tmpfs' --auth open
S="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
W="python3 $TOP/tests/fault_check.py"
head -c 6291456 /dev/urandom >filler.bin
head -c 7340032 /dev/urandom >big.bin
head -c 16777216 /dev/urandom >huge.bin
echo small >small.txt

ok 'a 6 MiB object fits' '$S put --key filler filler.bin >/dev/null && $S put --key small small.txt >/dev/null'
ok 'a 7 MiB upload does not fit: stepsync fails and says the server is out of space' '
	expect_fail $S put --key big big.bin >put.out 2>put.err &&
	cat put.err && grep -qi "space\|507" put.err'
diag "stepsync said: $(head -1 put.err)"
ok 'the server answered 507' '
	python3 -c "
import sys; sys.path.insert(0, \"$TOP/tests\")
from server_wire import *
c, tok = session($STEPD_PORT, \"demo\")
rep, _ = expect(c, r(\"FILE\", \"SAVE\", token=tok, key=\"probe\", size=3000000), 200)
bs = rep[\"block_size\"]; codes = set()
for i in range(rep[\"total_block\"]):
    rep, _ = c.req(r(\"FILE\", \"UPLOAD\", token=tok, key=\"probe\", block_index=i), b\"x\" * min(bs, 3000000 - i * bs))
    codes.add(rep[\"status\"])
check(507 in codes, \"codes %r\" % codes)
check(codes <= {200, 507}, \"only 200 and 507: %r\" % codes)
expect(c, r(\"FILE\", \"DELETE\", token=tok, key=\"probe\"), 404)
"'
ok 'nothing partial is visible (GET, DOWNLOAD, LIST)' '$W invisible $STEPD_PORT demo big'
ok 'the objects that fit still verify' '$W verify $STEPD_PORT demo && $S get small -o small.out && cmp small.txt small.out'
ok 'space freed with stepsync rm: the same upload resumes and verifies' '
	$S rm filler && $S put --key big big.bin >put2.out && cat put2.out &&
	$S get big -o big.out && cmp big.bin big.out'
ok 'a 16 MiB upload does not fit either' '
	expect_fail $S put --key huge huge.bin 2>huge.err && grep -qi "space\|507" huge.err &&
	$W invisible $STEPD_PORT demo huge'
ok 'remounted larger: the upload succeeds and verifies' '
	mount -o remount,size=48m "$MNT" &&
	$S put --key huge huge.bin >/dev/null && $S get huge -o huge.out && cmp huge.bin huge.out'
ok 'every committed object verifies' '$W verify $STEPD_PORT demo'
t_stop 'stepd exits 0 on SIGTERM'
diag "faults: disk_full_uploads=3 (each answered 507) partial_visible=0 files_lost=0"
done_testing
