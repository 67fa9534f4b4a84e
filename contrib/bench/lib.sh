# contrib/bench/lib.sh — what the bench scripts share: clocks, rates, rows, an rsync daemon.
# Sourced (bash); the caller sets PIDS (daemons to kill at exit).

now() { echo "$EPOCHREALTIME"; }
# secs START END
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# rate MIB SECONDS
rate() { awk -v m="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", m / s; else print "inf" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() { printf '%-58s %10s %10s %8s\n' "$@"; }

# rsyncd_start DIR — an rsync daemon on 127.0.0.1 serving module "bench" = DIR/rsync.dst;
# sets RSYNC_PORT.
rsyncd_start() {
	mkdir -p "$1/rsync.dst"
	cat >"$1/rsyncd.conf" <<CONF
pid file = $1/rsyncd.pid
use chroot = false
uid = $(id -u)
gid = $(id -g)
[bench]
path = $1/rsync.dst
read only = false
CONF
	RSYNC_PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
	rsync --daemon --no-detach --address=127.0.0.1 --port="$RSYNC_PORT" --config="$1/rsyncd.conf" &
	PIDS="$PIDS $!"
	n=0
	until rsync "rsync://127.0.0.1:$RSYNC_PORT/" >/dev/null 2>&1 || [ $n -gt 200 ]; do
		sleep 0.05 # polling for the daemon to listen, bounded
		n=$((n + 1))
	done
}

# level FILE... — puts every measured tool in the same state before it starts: dirty data
# written back, the page cache emptied (as root; on this kind of VM, whoever runs after a
# tool that left its output cached, or after one that dropped it, gets pages at a very
# different cost: 1 GiB written took rsync 2.5 s after one and 1.1 s after the other),
# then FILE... (the source) read back into the cache.
level() {
	sync
	if [ -w /proc/sys/vm/drop_caches ]; then
		echo 1 >/proc/sys/vm/drop_caches
	elif [ -z "${LEVEL_WARNED:-}" ]; then
		echo "# not root: page caches are not dropped between tools (figures less comparable)"
		LEVEL_WARNED=1
	fi
	[ $# -eq 0 ] || cat "$@" >/dev/null
}
