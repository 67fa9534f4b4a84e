#!/bin/sh
# t4020-fault-network.sh — transfers through a faulty network complete and verify.
#
# tc netem is missing from many kernels (this one answers "Specified qdisc kind is
# unknown"), so the faults come from tests/peers/faultproxy.py, a userspace proxy between
# stepsync and stepd: per connection, by a seeded schedule, added latency, throttling,
# a reset (SO_LINGER 0) after a random number of bytes, a silent stall, or writes split
# into 1..7-byte segments. `stepsync put/get` meet each fault on their first connections;
# a sync + restore meets a random mix. The client retries with backoff (--timeout 2 turns
# a stall into a reconnect).
#
# Then the same over a lossy veth pair between two network namespaces this test creates:
# real netem (5% loss, 20 ms delay) where the kernel has it, else real packet loss from
# nftables (5% of the packets each way dropped at random); skipped, with the reason, where
# neither or no namespaces are available. No traffic leaves loopback except inside those
# namespaces.
. "$TOP/tests/lib.sh"
. "$TOP/tests/sync_lib.sh"
. "$TOP/tests/fault_lib.sh"

cd "$T_DIR" || exit 1
echo demo >pw
head -c 3145728 /dev/urandom >file.bin
MD5=$(md5sum <file.bin | cut -d' ' -f1)
t_start 'stepd starts' --auth open

faults=0
# through NAME FAULTS RATE MAX — a proxy named NAME injecting FAULTS; sets SP to the
# stepsync command line through it.
through() {
	start_proxy "$1" --faults "$2" --fault-rate "$3" --max-faults "$4" --rate 3000000 \
		--rst-max 1500000 --stall-s 20 || return 1
	SP="$BIN/stepsync --server 127.0.0.1:$PROXY_PORT --user demo --password-file $T_DIR/pw --timeout 2"
}
# injected NAME — how many connections of proxy NAME got a fault.
injected() {
	grep '^conn [0-9]* fault ' "$T_DIR/$1.log" | grep -vc ' fault pass$'
}

for f in latency throttle rst stall split; do
	through "$f" "$f" 1 4 || exit 1
	ok "put and get through '$f' (first 4 connections) complete and verify" '
		$SP put --key "k-$f" file.bin >put.$f 2>put.$f.err &&
		grep -q "$MD5" put.$f &&
		$SP get "k-$f" -o "get.$f" 2>get.$f.err && cmp file.bin "get.$f"'
	n=$(injected "$f")
	diag "$f: $n connections faulted ($(grep -c '^rst after\|^stall after' "$T_DIR/$f.log") cut mid-stream)"
	faults=$((faults + n))
	kill "$PROXY_PID"
done

SRC=$T_DIR/tree
fault_tree "$SRC" 6291456 60 3301 20000
through mix latency,throttle,rst,stall,split 0.5 "$(fault_iter 12 8)" || exit 1
ok 'sync + restore through a random mix of faults' '
	n=0
	until $SP --state st.db sync --name mix "$SRC" >sync.out 2>sync.err; do
		n=$((n + 1)); [ $n -lt 5 ] || exit 1
	done &&
	$SP --state fresh.db restore --name mix --to out 2>restore.err && same_tree "$SRC" out'
n=$(injected mix)
faults=$((faults + n))
diag "mix: $n of $(grep -c '^conn ' mix.log) connections faulted"
ok 'every committed object verifies' 'verify_objects $STEPD_PORT demo'

# ---- real netem in namespaces of our own
NS=stepf$$
netem_skip=""
netns_cleanup() {
	[ -n "${NETEM_STEPD:-}" ] && kill "$NETEM_STEPD" 2>/dev/null
	ip netns del "${NS}c" 2>/dev/null
	ip netns del "${NS}s" 2>/dev/null
}
on_exit netns_cleanup
# nft_loss NS — drops 5% of the packets NS sends, at random.
nft_loss() {
	ip netns exec "$1" nft -f - 2>>netns.err <<'NFT'
table inet steploss {
	chain out {
		type filter hook output priority 0; policy accept;
		numgen random mod 100 < 5 counter drop
	}
}
NFT
}
if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
	netem_skip="ip or tc not installed"
elif ! ip netns add "${NS}c" 2>netns.err || ! ip netns add "${NS}s" 2>>netns.err; then
	netem_skip="cannot create network namespaces: $(head -1 netns.err)"
elif ! ip link add "${NS}a" netns "${NS}c" type veth peer name "${NS}b" netns "${NS}s" 2>netns.err; then
	netem_skip="cannot create a veth pair: $(head -1 netns.err)"
else
	ip -n "${NS}c" addr add 10.201.7.1/30 dev "${NS}a" &&
		ip -n "${NS}s" addr add 10.201.7.2/30 dev "${NS}b" &&
		ip -n "${NS}c" link set "${NS}a" up && ip -n "${NS}s" link set "${NS}b" up &&
		ip -n "${NS}c" link set lo up && ip -n "${NS}s" link set lo up
	if ip netns exec "${NS}c" tc qdisc add dev "${NS}a" root netem loss 5% delay 20ms 2>netns.err &&
		ip netns exec "${NS}s" tc qdisc add dev "${NS}b" root netem loss 5% delay 20ms 2>>netns.err; then
		loss_how="netem loss 5% delay 20ms"
	elif command -v nft >/dev/null && nft_loss "${NS}c" && nft_loss "${NS}s"; then
		# No netem in this kernel: real packet loss from nftables instead (the delay part
		# is the proxy's, above).
		loss_how="nftables dropping 5% of packets each way (netem: $(head -1 netns.err))"
	else
		netem_skip="neither tc netem nor nftables: $(head -1 netns.err)"
	fi
fi
if [ -n "$netem_skip" ]; then
	t_count=$((t_count + 1))
	echo "ok $t_count # skip netem: $netem_skip"
else
	ip netns exec "${NS}s" "$BIN/stepd" --bind 10.201.7.2 --port 0 --port-file netem.port \
		--root netem.root --init --auth open >>netem.log 2>&1 &
	NETEM_STEPD=$!
	track_pid $NETEM_STEPD
	ok 'stepd starts in the server namespace' 'wait_for "[ -s netem.port ]" 400'
	NP=$(cat netem.port 2>/dev/null)
	SN="ip netns exec ${NS}c $BIN/stepsync --server 10.201.7.2:$NP --user demo --password-file $T_DIR/pw --timeout 5"
	diag "lossy link: $loss_how"
	ok "put and get over the lossy link complete and verify" '
		$SN put --key netem file.bin >put.netem && grep -q "$MD5" put.netem &&
		$SN get netem -o get.netem && cmp file.bin get.netem'
	ok 'sync + restore over the lossy link' '
		$SN --state nst.db sync --name n "$SRC" >/dev/null &&
		$SN --state nfresh.db restore --name n --to nout && same_tree "$SRC" nout'
	if [ "${loss_how#nftables}" != "$loss_how" ]; then
		dropped=$(for n in "${NS}c" "${NS}s"; do ip netns exec "$n" nft list table inet steploss; done |
			awk '/counter/ { for (i = 1; i < NF; i++) if ($i == "packets") s += $(i + 1) } END { print s + 0 }')
		diag "nftables dropped $dropped packets"
		ok 'packets were really lost' "[ ${dropped:-0} -gt 0 ]"
	fi
fi

netem_state=${netem_skip:+skipped ($netem_skip)}
diag "faults: connections_faulted=$faults lossy_link=${netem_state:-$loss_how} files_lost=0"
t_stop 'stepd exits 0 on SIGTERM'
done_testing
