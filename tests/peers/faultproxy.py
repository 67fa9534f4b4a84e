#!/usr/bin/env python3
"""faultproxy.py - a userspace TCP fault injector between a STEP client and stepd.

Listens on 127.0.0.1 (port 0: the chosen port is written to --port-file) and forwards
every connection to --to HOST:PORT. Each accepted connection gets one fault, drawn from
a seeded schedule (random.Random(seed * 1000003 + connection number)), so a run is
reproducible:

  pass     forward untouched
  latency  every forwarded chunk waits --latency-ms (both directions)
  throttle at most --rate bytes/s in each direction
  rst      after a random number of bytes (up to --rst-max, both directions), close both
           sides with SO_LINGER 0: the peers see a connection reset
  stall    after a random number of bytes, forward nothing more (silently, connection
           kept open) until one side gives up, or --stall-s passes; then close
  split    forward in tiny segments (1..7 bytes, TCP_NODELAY), so every STEP header and
           JSON text arrives cut into pieces

--faults names the faults to draw from (comma separated, default all but pass);
--fault-rate is the share of connections that get one (the rest pass); after
--max-faults faulty connections everything passes, so a client that retries always
gets through. --log FILE gets one line per connection ("conn N fault X") and, with
--count, one line per forwarded client->server STEP packet ("UP key index binlen" for
UPLOAD packets, "PKT op binlen" for the others) plus "CUT n" for the bytes of a packet
that a closing connection left incomplete. The STEP parsing reads headers only; it
never changes what is forwarded.

Stdlib only. Ends on SIGTERM/SIGINT.
"""
import argparse
import json
import random
import signal
import socket
import struct
import sys
import threading
import time

FAULTS = ("latency", "throttle", "rst", "stall", "split")


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1) if path else None
        self.mu = threading.Lock()

    def write(self, line):
        if self.f:
            with self.mu:
                self.f.write(line + "\n")


class Counter:
    """Parses the client->server byte stream into STEP packets (headers and JSON only)."""

    def __init__(self, log):
        self.log = log
        self.buf = b""
        self.skip = 0  # binary bytes of the current packet still to come
        self.pending = None  # the line for the packet whose binary part is arriving
        self.partial = 0

    def feed(self, data):
        while data:
            if self.skip:
                n = min(self.skip, len(data))
                self.skip -= n
                self.partial += n
                data = data[n:]
                if self.skip == 0:
                    self.log.write(self.pending)
                    self.pending, self.partial = None, 0
                continue
            self.buf += data
            data = b""
            while len(self.buf) >= 8:
                jl, bl = struct.unpack(">II", self.buf[:8])
                if len(self.buf) < 8 + jl:
                    break
                try:
                    o = json.loads(self.buf[8:8 + jl].decode("utf-8", "replace"))
                except ValueError:
                    o = {}
                if not isinstance(o, dict):
                    o = {}
                if o.get("operation") == "UPLOAD":
                    line = "UP %s %s %d" % (json.dumps(o.get("key")).replace(" ", "\\u0020"),
                                            o.get("block_index"), bl)
                else:
                    line = "PKT %s %d" % (o.get("operation"), bl)
                rest = self.buf[8 + jl:]
                self.buf = b""
                self.partial = 8 + jl
                if len(rest) >= bl:
                    self.log.write(line)
                    self.partial = 0
                    self.buf = rest[bl:]
                else:
                    self.skip = bl - len(rest)
                    self.partial += len(rest)
                    self.pending = line
                    break

    def close(self):
        n = self.partial + len(self.buf)
        if n:
            self.log.write("CUT %d" % n)


def linger0(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class Link:
    """One proxied connection: two pump threads and the fault they share."""

    def __init__(self, args, log, cl, up, fault, rnd):
        self.a, self.log, self.cl, self.up, self.fault = args, log, cl, up, fault
        self.dead = threading.Event()
        self.mu = threading.Lock()
        self.total = 0  # bytes forwarded, both directions
        self.limit = None
        if fault == "rst":
            self.limit = rnd.randint(1, args.rst_max)
        elif fault == "stall":
            self.limit = rnd.randint(0, args.rst_max)
        self.stall_until = None
        self.counter = Counter(log) if args.count else None
        self.rnd = random.Random(rnd.random())
        self.n = 0

    def kill(self, reset):
        with self.mu:
            if self.dead.is_set():
                return
            self.dead.set()
        for s in (self.cl, self.up):
            if reset:
                linger0(s)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        if self.counter:
            self.counter.close()

    def send(self, dst, data, upstream):
        f = self.fault
        if f == "latency":
            time.sleep(self.a.latency_ms / 1000.0)
        if f == "throttle":
            time.sleep(len(data) / float(self.a.rate))
        with self.mu:
            cut = self.limit is not None and self.total + len(data) >= self.limit
            keep = max(0, self.limit - self.total) if cut else len(data)
            self.total += keep
        if cut:
            if keep:
                dst.sendall(data[:keep])
                if upstream and self.counter:
                    self.counter.feed(data[:keep])
            if f == "rst":
                self.log.write("rst after %d bytes" % self.total)
                self.kill(True)
                return False
            self.log.write("stall after %d bytes" % self.total)
            self.dead.wait(self.a.stall_s)
            self.kill(False)
            return False
        if f == "split":
            i = 0
            while i < len(data):
                n = self.rnd.randint(1, 7)
                dst.sendall(data[i:i + n])
                i += n
        else:
            dst.sendall(data)
        if upstream and self.counter:
            self.counter.feed(data)
        return True

    def pump(self, src, dst, upstream):
        try:
            while not self.dead.is_set():
                data = src.recv(1 << 16)
                if not data:
                    break
                if self.fault == "stall" and self.limit is not None and \
                        self.total >= self.limit:
                    continue  # stalled: swallow everything
                if not self.send(dst, data, upstream):
                    return
            # EOF: pass the half-close on, like a real peer would.
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            # The other direction may still be running; the last one closes.
            with self.mu:
                self.eofs = getattr(self, "eofs", 0) + 1
                last = self.eofs == 2
            if last:
                self.kill(False)
        except OSError:
            self.kill(True)

    def run(self):
        for s in (self.cl, self.up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = threading.Thread(target=self.pump, args=(self.up, self.cl, False), daemon=True)
        t.start()
        self.pump(self.cl, self.up, True)
        t.join()
        if not self.dead.is_set():
            self.kill(False)
        self.log.write("end %d" % self.n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--to", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--fault-rate", type=float, default=0.5)
    ap.add_argument("--max-faults", type=int, default=1 << 30)
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--rate", type=int, default=2 << 20)
    ap.add_argument("--rst-max", type=int, default=1 << 20)
    ap.add_argument("--stall-s", type=float, default=30)
    ap.add_argument("--log")
    ap.add_argument("--count", action="store_true")
    a = ap.parse_args()
    host, port = a.to.rsplit(":", 1)
    faults = [f for f in a.faults.split(",") if f]
    for f in faults:
        if f not in FAULTS + ("pass",):
            ap.error("unknown fault " + f)
    log = Log(a.log)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    with open(a.port_file + ".tmp", "w") as f:
        f.write("%d\n" % ls.getsockname()[1])
    import os
    os.rename(a.port_file + ".tmp", a.port_file)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    n = nfault = 0
    while True:
        try:
            cl, _ = ls.accept()
        except KeyboardInterrupt:
            return 0
        n += 1
        rnd = random.Random(a.seed * 1000003 + n)
        fault = "pass"
        if nfault < a.max_faults and faults and rnd.random() < a.fault_rate:
            fault = rnd.choice(faults)
        if fault != "pass":
            nfault += 1
        log.write("conn %d fault %s" % (n, fault))
        try:
            up = socket.create_connection((host, int(port)), timeout=10)
            up.settimeout(None)
        except OSError as e:
            log.write("conn %d upstream: %s" % (n, e))
            linger0(cl)
            cl.close()
            continue
        link = Link(a, log, cl, up, fault, rnd)
        link.n = n
        threading.Thread(target=link.run, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
