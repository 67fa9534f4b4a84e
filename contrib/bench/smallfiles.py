#!/usr/bin/env python3
"""smallfiles.py - small-object throughput of a STEP server (stdlib only, loopback).

Logs in (course rule, e.g. stepd --auth open) on C connections and pipelines FILE SAVE +
one FILE UPLOAD for N objects of 1-8 KiB, split over the connections (one sender and one
reader thread each, at most --window requests in flight per connection). Checks every
reply (200, in order, md5 of the completing UPLOAD) and prints objects/s.

  smallfiles.py --port PORT [-n 20000] [-c 4] [--window 256] [--user bench] [--prefix K]
"""
import argparse
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time


def packet(obj, binary=b""):
    jb = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">II", len(jb), len(binary)) + jb + binary


class Reader:
    def __init__(self, s):
        self.s = s
        self.buf = bytearray()

    def recv(self):
        while True:
            if len(self.buf) >= 8:
                jl, bl = struct.unpack(">II", self.buf[:8])
                if len(self.buf) >= 8 + jl + bl:
                    rep = json.loads(bytes(self.buf[8:8 + jl]))
                    del self.buf[:8 + jl + bl]
                    return rep
            d = self.s.recv(1 << 18)
            if not d:
                raise EOFError("server closed the connection")
            self.buf += d


def login(s, rd, user):
    s.sendall(packet({"type": "AUTH", "operation": "LOGIN", "direction": "REQUEST",
                      "username": user, "password": hashlib.md5(user.encode()).hexdigest()}))
    rep = rd.recv()
    if rep.get("status") != 200:
        raise RuntimeError("login failed: %r" % rep)
    return rep["token"]


def run_conn(port, user, objs, window, errors):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=120)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rd = Reader(s)
        tok = login(s, rd, user)
        sem = threading.Semaphore(window)
        expect = []  # (op, key, md5) in request order

        def sender():
            try:
                batch = []
                for key, data in objs:
                    for op, obj, b in (
                            ("SAVE", {"size": len(data)}, b""),
                            ("UPLOAD", {"block_index": 0}, data)):
                        sem.acquire()
                        o = {"type": "FILE", "operation": op, "direction": "REQUEST",
                             "token": tok, "key": key}
                        o.update(obj)
                        batch.append(packet(o, b))
                        if len(batch) >= 32:
                            s.sendall(b"".join(batch))
                            batch = []
                if batch:
                    s.sendall(b"".join(batch))
            except OSError as e:
                errors.append("send: %s" % e)

        for key, data in objs:
            expect.append(("SAVE", key, None))
            expect.append(("UPLOAD", key, hashlib.md5(data).hexdigest()))
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        for op, key, md5 in expect:
            rep = rd.recv()
            sem.release()
            if rep.get("status") != 200 or rep.get("operation") != op or rep.get("key") != key:
                errors.append("%s %s: %r" % (op, key, rep))
                break
            if md5 is not None and rep.get("md5") != md5:
                errors.append("%s %s: md5 %r != %r" % (op, key, rep.get("md5"), md5))
                break
        s.close()
        t.join(5)
    except (OSError, EOFError, RuntimeError, ValueError) as e:
        errors.append(str(e))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, default=20000, help="objects")
    ap.add_argument("-c", type=int, default=4, help="connections")
    ap.add_argument("--window", type=int, default=256, help="requests in flight per conn")
    ap.add_argument("--user", default="bench")
    ap.add_argument("--prefix", default="small-%d-" % os.getpid())
    a = ap.parse_args()
    rnd = os.urandom(8192 + 64)
    objs = []
    for i in range(a.n):
        size = 1024 + (i * 7919) % (7 * 1024 + 1)
        off = i % 64
        objs.append(("%s%06d" % (a.prefix, i), rnd[off:off + size - 8] + struct.pack(">Q", i)))
    per = [objs[i::a.c] for i in range(a.c)]
    errors = []
    th = [threading.Thread(target=run_conn, args=(a.port, a.user, p, a.window, errors))
          for p in per]
    t0 = time.monotonic()
    for t in th:
        t.start()
    for t in th:
        t.join()
    dt = time.monotonic() - t0
    if errors:
        print("smallfiles: FAILED: %s" % "; ".join(errors[:5]), file=sys.stderr)
        return 1
    print("smallfiles: %d objects (1-8 KiB) over %d connections in %.3f s: %.0f objects/s"
          % (a.n, a.c, dt, a.n / dt if dt > 0 else 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
