#!/usr/bin/env python3
"""server_wire.py - raw STEP client and the scenarios of the t1xxx stepd tests.

Usage: server_wire.py SCENARIO PORT [ARGS...]   (exit 0 = pass, messages on stderr)
Stdlib only. Every scenario ends by checking that a fresh client is still served.
"""
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"
DEFAULT_BS = 20480  # stepd's default plan: the deployed clients' block size


def md5(b):
    return hashlib.md5(b).hexdigest()


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


class Conn:
    def __init__(self, port, timeout=20):
        self.s = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.s.close()

    def send_raw(self, data):
        self.s.sendall(data)

    def send(self, obj, binary=b"", charcount=False):
        text = json.dumps(obj, ensure_ascii=False)
        jb = text.encode("utf-8")
        jlen = len(text) if charcount else len(jb)
        self.s.sendall(struct.pack(">II", jlen, len(binary)) + jb + binary)

    def _need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(1 << 16)
            if not d:
                raise EOFError("connection closed")
            self.buf += d

    def recv(self):
        self._need(8)
        jl, bl = struct.unpack(">II", self.buf[:8])
        self._need(8 + jl + bl)
        jt = self.buf[8:8 + jl]
        b = self.buf[8 + jl:8 + jl + bl]
        self.buf = self.buf[8 + jl + bl:]
        check(all(c < 0x80 for c in jt), "reply JSON is not pure ASCII")
        return json.loads(jt.decode("ascii")), b

    def req(self, obj, binary=b"", charcount=False):
        self.send(obj, binary, charcount)
        return self.recv()

    def is_closed(self):
        """True when the server closed the connection (EOF) before the timeout."""
        try:
            while True:
                d = self.s.recv(1 << 16)
                if not d:
                    return True
                self.buf += d
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def r(typ, op, **kw):
    d = {"type": typ, "operation": op, "direction": "REQUEST"}
    d.update(kw)
    return d


def login(c, user, password=None):
    rep, _ = c.req(r("AUTH", "LOGIN", username=user,
                     password=password if password is not None else md5(user.encode())))
    check(rep["status"] == 200, "login of %r failed: %r" % (user, rep))
    return rep["token"]


CUR = {"user": "alice"}


def session(port, user=None):
    """A connection logged in as user (default: the scenario's own user)."""
    c = Conn(port)
    return c, login(c, user or CUR["user"])


def expect(c, obj, status, binary=b"", what=None):
    rep, b = c.req(obj, binary)
    check(rep.get("status") == status,
          "%s: wanted %d, got %r" % (what or obj.get("operation"), status, rep))
    return rep, b


def upload(c, tok, key, data, order=None, save=True, extra=None):
    """Uploads data under key; returns the final reply (with md5)."""
    if save:
        rep, _ = expect(c, r("FILE", "SAVE", token=tok, key=key, size=len(data)), 200, what="SAVE")
        bs, total = rep["block_size"], rep["total_block"]
    else:
        rep, _ = expect(c, r("FILE", "GET", token=tok, key=key), 404)
        raise Fail("upload without save needs a plan")
    last = None
    for i in (order if order is not None else range(total)):
        blk = data[i * bs:(i + 1) * bs]
        o = r("FILE", "UPLOAD", token=tok, key=key, block_index=i, block_size=bs)
        if extra:
            o.update(extra)
        last, _ = expect(c, o, 200, blk, what="UPLOAD %d" % i)
    return last, bs, total


def download(c, tok, key):
    rep, _ = expect(c, r("FILE", "GET", token=tok, key=key), 200, what="GET")
    out = b""
    for i in range(rep["total_block"]):
        d, b = expect(c, r("FILE", "DOWNLOAD", token=tok, key=key, block_index=i), 200)
        check(d["size"] == len(b), "DOWNLOAD size field")
        out += b
    check(len(out) == rep["size"] and md5(out) == rep["md5"], "download does not match GET md5")
    return out


def still_serving(port):
    c = Conn(port, timeout=10)
    rep, _ = c.req({"direction": "EARTH"})
    check(rep["status"] == 333, "EARTH after the test")
    c.close()


# ---------------------------------------------------------------- scenarios

def sc_status(port):
    """Every status code, in the validation order of STEP-PROTOCOL.md section 3."""
    c = Conn(port)
    rep, _ = c.req({"direction": "EARTH"})
    check(rep["status"] == 333 and rep["operation"] == "3BODY" and rep["type"] == "DANGEROUS",
          "EARTH: %r" % rep)
    for miss in ("operation", "direction", "type"):
        o = r("AUTH", "LOGIN")
        del o[miss]
        rep, _ = expect(c, o, 400, what="missing " + miss)
        check(miss in rep["status_msg"], "400 names the missing field")
        check(rep["operation"] == "ERROR" and rep["type"] == "ERROR", "400 is ERROR/ERROR")
    rep, _ = expect(c, {"type": "AUTH", "direction": "REQUEST"}, 400)
    check("operation" in rep["status_msg"], "operation is checked first")
    expect(c, {"operation": "LOGIN", "type": "AUTH"}, 400)
    expect(c, {"operation": "FOO", "direction": "RESPONSE", "type": "BAR"}, 407)
    expect(c, {"operation": "FOO", "direction": "REQUEST", "type": "BAR"}, 408)
    expect(c, {"operation": "GET", "direction": "REQUEST", "type": "BAR"}, 409)
    expect(c, r("DATA", "LOGIN", username="a", password=md5(b"a")), 409)
    expect(c, r("AUTH", "LOGIN", password=md5(b"a")), 410)
    expect(c, r("AUTH", "LOGIN", username="a"), 410)
    expect(c, r("AUTH", "LOGIN", username="a", password=md5(b"b")), 401)
    rep, _ = expect(c, r("AUTH", "LOGIN", username="a", password=md5(b"a"), token=None), 200)
    check(str(rep.get("server", "")).startswith("stepd/") and "resume" in rep.get("extensions", []),
          "LOGIN advertises extensions: %r" % rep)
    tok = rep["token"]
    expect(c, r("DATA", "GET", key="x"), 403)
    expect(c, r("DATA", "GET", key="x", token=tok + "x"), 403)
    expect(c, r("DATA", "GET", key="x", token="%%%not base64%%%"), 403)
    expect(c, r("DATA", "GET", key="x", token=5), 403)
    expect(c, r("DATA", "SAVE", token=tok, key="d1", v=1), 200)
    expect(c, r("DATA", "SAVE", token=tok, key="d1", v=2), 402)
    expect(c, r("DATA", "GET", token=tok, key="nope"), 404)
    expect(c, r("DATA", "GET", token=tok), 410)
    expect(c, r("FILE", "SAVE", token=tok, key="f"), 410)
    expect(c, r("FILE", "UPLOAD", token=tok, key="f", block_index=0), 408)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="f", size=70000), 200)
    bs, total = rep["block_size"], rep["total_block"]
    check(total == (70000 + bs - 1) // bs, "total_block")
    expect(c, r("FILE", "UPLOAD", token=tok, key="f"), 410, b"x" * bs)
    expect(c, r("FILE", "UPLOAD", token=tok, key="f", block_index=total), 405, b"x")
    expect(c, r("FILE", "UPLOAD", token=tok, key="f", block_index=-1), 410, b"x")
    expect(c, r("FILE", "UPLOAD", token=tok, key="f", block_index=0), 406, b"x")
    expect(c, r("FILE", "GET", token=tok, key="f"), 404)
    expect(c, r("FILE", "DOWNLOAD", token=tok, key="f", block_index=0), 404)
    data = os.urandom(70000)
    last, _, _ = upload(c, tok, "g", data)
    check(last.get("md5") == md5(data), "last UPLOAD carries the md5")
    expect(c, r("FILE", "SAVE", token=tok, key="g", size=5), 402)
    expect(c, r("FILE", "UPLOAD", token=tok, key="g", block_index=0), 402, data[:bs])
    expect(c, r("FILE", "DOWNLOAD", token=tok, key="g"), 410)
    expect(c, r("FILE", "DOWNLOAD", token=tok, key="g", block_index=total), 410)
    check(download(c, tok, "g") == data, "round trip")
    expect(c, r("FILE", "DELETE", token=tok, key="f"), 404)  # in progress: tmp deleted
    expect(c, r("FILE", "UPLOAD", token=tok, key="f", block_index=0), 408, b"x" * bs)
    expect(c, r("FILE", "DELETE", token=tok, key="g"), 200)
    expect(c, r("FILE", "GET", token=tok, key="g"), 404)
    expect(c, r("FILE", "DELETE", token=tok, key="g"), 404)
    expect(c, r("DATA", "DELETE", token=tok, key="d1"), 200)
    expect(c, r("DATA", "DELETE", token=tok, key="d1"), 404)
    expect(c, r("AUTH", "SAVE", token=tok), 408)
    c.close()


def sc_data(port):
    """DATA stores only data fields; GET returns them; no token leaks."""
    c, tok = session(port)
    rep, _ = expect(c, r("DATA", "SAVE", token=tok, key="rec", a=1, b={"x": [1, 2]},
                         s="h\u00e9llo", block_size=5), 200)
    check(rep["key"] == "rec", "SAVE echoes key")
    rep, _ = expect(c, r("DATA", "GET", token=tok, key="rec"), 200)
    check(rep["a"] == 1 and rep["b"] == {"x": [1, 2]} and rep["s"] == "h\u00e9llo",
          "record fields: %r" % rep)
    check(rep["token"] if False else "token" not in rep, "no token in the record")
    check("block_size" not in rep, "reserved fields not stored")
    rep, _ = expect(c, r("DATA", "SAVE", token=tok, z=1), 200)
    check(len(rep["key"]) == 36, "server-chosen UUID key")
    expect(c, r("DATA", "GET", token=tok, key=rep["key"]), 200)


def sc_hostile(port):
    """Oversized lengths, bad JSON, wrong types, hostile keys; server keeps serving."""
    c = Conn(port)
    c.send_raw(struct.pack(">II", 0xFFFFFFF0, 0) + b"{}")
    rep, _ = c.recv()
    check(rep["status"] in (400, 413), "oversized json_len answered: %r" % rep)
    check(c.is_closed(), "connection closed after oversized json_len")
    still_serving(port)
    c = Conn(port)
    c.send_raw(struct.pack(">II", 2, 0xFFFFFFF0) + b"{}")
    rep, _ = c.recv()
    check(rep["status"] in (400, 413), "oversized bin_len answered")
    check(c.is_closed(), "connection closed after oversized bin_len")
    c = Conn(port)
    c.send_raw(struct.pack(">II", 0, 0))
    rep, _ = c.recv()
    check(rep["status"] == 400, "zero json_len answered")
    c = Conn(port)
    bad = b"{not json"
    c.send_raw(struct.pack(">II", len(bad), 0) + bad)
    rep, _ = c.recv()
    check(rep["status"] == 400 and rep["operation"] == "ERROR", "bad JSON -> 400: %r" % rep)
    c.send_raw(struct.pack(">II", 2, 0) + b"[]")
    rep, _ = c.recv()
    check(rep["status"] == 400, "JSON array -> 400")
    tok = login(c, "mallory")  # same connection still works
    for field, val, want in (("size", "10", 410), ("size", 1.5, 410), ("size", -1, 410),
                             ("size", 1 << 62, 413), ("key", 5, 410), ("size", None, 410),
                             ("size", True, 410)):
        o = r("FILE", "SAVE", token=tok, key="k", size=10)
        o[field] = val
        expect(c, o, want, what="SAVE %s=%r" % (field, val))
    expect(c, r("FILE", "SAVE", token=tok, key="k", size=10), 200)
    for idx in ("0", 0.0, 1.5, [0], -5):
        expect(c, r("FILE", "UPLOAD", token=tok, key="k", block_index=idx), 410, b"x" * 10,
               what="UPLOAD block_index=%r" % (idx,))
    expect(c, r("FILE", "UPLOAD", token=tok, key=["k"], block_index=0), 410, b"x" * 10)
    expect(c, r("DATA", "GET", token=tok, key={"a": 1}), 410)
    expect(c, r("DATA", "SAVE", token=tok, key="a\u0000b"), 410)
    expect(c, r("DATA", "SAVE", token=tok, key=""), 410)
    expect(c, r("DATA", "SAVE", token=tok, key="x" * 9000), 410)
    expect(c, {"type": 1, "operation": "GET", "direction": "REQUEST"}, 409)
    expect(c, {"type": "FILE", "operation": None, "direction": "REQUEST"}, 408)
    # Hostile keys are stored safely under the user's namespace and round-trip.
    root = sys.argv[3] if len(sys.argv) > 3 else None
    for key in ("../x", "/abs", "..", ".", "a/../../b", "k" * 4000, "r\u00e9sum\u00e9.pdf",
                "\u4e2d\u6587/\u6587\u4ef6", "x" * 4096):
        data = os.urandom(1000)
        upload(c, tok, key, data)
        check(download(c, tok, key) == data, "round trip of key %r" % key[:20])
        expect(c, r("DATA", "SAVE", token=tok, key=key, v=1), 200)
        rep, _ = expect(c, r("DATA", "GET", token=tok, key=key), 200)
        check(rep["key"] == key, "DATA key echo")
    if root:
        for dp, dn, fn in os.walk(root):
            for n in fn + dn:
                p = os.path.join(dp, n)
                check(os.path.realpath(p).startswith(os.path.realpath(root)), "escaped: " + p)
                check(len(n) < 100, "long file name " + n)
        check(not os.path.exists(os.path.join(os.path.dirname(root), "x")), "../x escaped")
        check(not os.path.exists("/abs"), "/abs written")
    c.close()
    still_serving(port)


def sc_isolation(port):
    """A user's keys are invisible to another user."""
    a, ta = session(port, "iso-alice")
    b, tb = session(port, "iso-bob")
    upload(a, ta, "secret.txt", b"alice's data")
    expect(a, r("DATA", "SAVE", token=ta, key="rec", v=1), 200)
    expect(b, r("FILE", "GET", token=tb, key="secret.txt"), 404)
    expect(b, r("FILE", "DOWNLOAD", token=tb, key="secret.txt", block_index=0), 404)
    expect(b, r("FILE", "DELETE", token=tb, key="secret.txt"), 404)
    expect(b, r("DATA", "GET", token=tb, key="rec"), 404)
    rep, _ = expect(b, r("FILE", "LIST", token=tb), 200)
    check(rep["keys"] == [], "bob lists nothing")
    upload(b, tb, "secret.txt", b"bob's")  # same key, own namespace
    check(download(a, ta, "secret.txt") == b"alice's data", "alice's object intact")


def sc_pipeline(port):
    """Ten requests sent before reading: answered in order."""
    c, tok = session(port)
    data = os.urandom(3 * 20480 + 7)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="pipe", size=len(data)), 200)
    bs, total = rep["block_size"], rep["total_block"]
    reqs = []
    for i in range(total):
        reqs.append((r("FILE", "UPLOAD", token=tok, key="pipe", block_index=i),
                     data[i * bs:(i + 1) * bs]))
    reqs.append((r("FILE", "GET", token=tok, key="pipe"), b""))
    for i in range(10 - len(reqs)):
        reqs.append((r("DATA", "SAVE", token=tok, key="p%d" % i, n=i), b""))
    blob = b""
    for o, b in reqs:
        jb = json.dumps(o).encode()
        blob += struct.pack(">II", len(jb), len(b)) + jb + b
    c.send_raw(blob)
    for n, (o, _) in enumerate(reqs):
        rep, _ = c.recv()
        check(rep["status"] == 200 and rep["operation"] == o["operation"],
              "pipelined reply %d out of order or failed: %r" % (n, rep))
        if o["operation"] == "GET":
            check(rep["md5"] == md5(data), "GET right after the last UPLOAD sees the object")


def sc_ooo(port):
    """Blocks out of order and repeated."""
    c, tok = session(port)
    data = os.urandom(5 * DEFAULT_BS + 100)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="ooo", size=len(data)), 200)
    bs, total = rep["block_size"], rep["total_block"]
    order = [3, 1, 1, 5, 0, 3, 2]
    for i in order:
        rep, _ = expect(c, r("FILE", "UPLOAD", token=tok, key="ooo", block_index=i), 200,
                        data[i * bs:(i + 1) * bs])
        check("md5" not in rep, "no md5 before complete")
    rep, _ = expect(c, r("FILE", "UPLOAD", token=tok, key="ooo", block_index=4), 200,
                    data[4 * bs:5 * bs])
    check(rep.get("md5") == md5(data), "md5 after out-of-order upload")
    check(download(c, tok, "ooo") == data, "content")


def sc_conn_per_block(port):
    """Each block on its own connection, all at once: one commit, every connection answered."""
    data = os.urandom(16 * 20480 + 1)
    c, tok = session(port)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="cpb", size=len(data)), 200)
    bs, total = rep["block_size"], rep["total_block"]
    results = [None] * total
    barrier = threading.Barrier(total)

    def one(i):
        try:
            cc = Conn(port)
            t = login(cc, CUR["user"])
            barrier.wait()
            results[i] = cc.req(r("FILE", "UPLOAD", token=t, key="cpb", block_index=i),
                                data[i * bs:(i + 1) * bs])[0]
            cc.close()
        except Exception as e:  # noqa
            results[i] = {"status": -1, "err": str(e)}

    th = [threading.Thread(target=one, args=(i,)) for i in range(total)]
    for t in th:
        t.start()
    for t in th:
        t.join(60)
    check(all(x is not None and x["status"] == 200 for x in results), "all answered 200: %r"
          % [x for x in results if not x or x["status"] != 200])
    md5s = [x["md5"] for x in results if "md5" in x]
    check(len(md5s) >= 1 and all(m == md5(data) for m in md5s), "md5 in the final answer")
    check(download(c, tok, "cpb") == data, "content")


def sc_resume(port):
    """SAVE again with the same size keeps blocks and lists them; another size restarts."""
    c, tok = session(port)
    data = os.urandom(10 * 65536)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="res", size=len(data)), 200)
    bs = rep["block_size"]
    check(rep.get("received") == [], "fresh plan lists no blocks")
    total = rep["total_block"]
    got = [0, 1, 2, total - 1]
    for i in got:
        expect(c, r("FILE", "UPLOAD", token=tok, key="res", block_index=i), 200,
               data[i * bs:(i + 1) * bs])
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="res", size=len(data)), 200)
    want = [[0, 2], [total - 1, total - 1]] if total > 4 else None
    if want:
        check(rep["received"] == want, "received ranges %r" % rep["received"])
    for i in range(total):
        if i not in got:
            last, _ = expect(c, r("FILE", "UPLOAD", token=tok, key="res", block_index=i), 200,
                             data[i * bs:(i + 1) * bs])
    check(last.get("md5") == md5(data), "resumed upload completes with right md5")
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="res2", size=bs + 100), 200)
    expect(c, r("FILE", "UPLOAD", token=tok, key="res2", block_index=1), 200, b"a" * 100)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="res2", size=bs + 100), 200)
    check(rep["received"] == [[1, 1]], "same size resumes")
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="res2", size=bs + 101), 200)
    check(rep["received"] == [], "different size starts over")


def sc_block_md5(port):
    c, tok = session(port)
    data = os.urandom(DEFAULT_BS - 480)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="bm", size=len(data)), 200)
    rep, _ = expect(c, r("FILE", "UPLOAD", token=tok, key="bm", block_index=0,
                         block_md5=md5(b"other")), 410, data)
    check("block_md5" in rep["status_msg"], "mismatch message")
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="bm", size=len(data)), 200)
    check(rep["received"] == [], "mismatched block not stored")
    expect(c, r("FILE", "UPLOAD", token=tok, key="bm", block_index=0, block_md5=5), 410, data)
    rep, _ = expect(c, r("FILE", "UPLOAD", token=tok, key="bm", block_index=0,
                         block_md5=md5(data)), 200, data)
    check(rep["md5"] == md5(data), "stored with matching block_md5")


def sc_list(port):
    c, tok = session(port)
    for k in ("snap.3", "snap.1", "snap.2", "other", "snap.10"):
        upload(c, tok, k, k.encode())
    expect(c, r("FILE", "SAVE", token=tok, key="snap.9", size=10), 200)  # in progress
    rep, _ = expect(c, r("FILE", "LIST", token=tok, prefix="snap."), 200)
    check(rep["keys"] == ["snap.1", "snap.10", "snap.2", "snap.3"] and rep["more"] is False,
          "LIST: %r" % rep)
    rep, _ = expect(c, r("FILE", "LIST", token=tok, prefix="snap.", limit=2), 200)
    check(rep["keys"] == ["snap.1", "snap.10"] and rep["more"] is True, "limit")
    rep, _ = expect(c, r("FILE", "LIST", token=tok, prefix="snap.", after="snap.10",
                         limit=2), 200)
    check(rep["keys"] == ["snap.2", "snap.3"] and rep["more"] is False, "after: %r" % rep)
    rep, _ = expect(c, r("FILE", "LIST", token=tok), 200)
    check(len(rep["keys"]) == 5, "no prefix lists all complete objects")
    expect(c, r("FILE", "LIST", token=tok, limit="x"), 410)
    expect(c, r("FILE", "LIST", token=tok, prefix=3), 410)
    expect(c, r("DATA", "SAVE", token=tok, key="cfg.a", v=1), 200)
    expect(c, r("DATA", "SAVE", token=tok, key="cfg.b", v=1), 200)
    expect(c, r("DATA", "SAVE", token=tok, key="zzz", v=1), 200)
    rep, _ = expect(c, r("DATA", "LIST", token=tok, prefix="cfg."), 200)
    check(rep["keys"] == ["cfg.a", "cfg.b"], "DATA LIST %r" % rep)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def sc_list_mtime(port):
    """list_mtime: FILE LIST with "mtimes": true also answers each object's commit time and
    the server's clock; without it the answer is unchanged; DATA LIST ignores it."""
    c = Conn(port)
    rep, _ = c.req(r("AUTH", "LOGIN", username=CUR["user"], password=md5(CUR["user"].encode())))
    check(rep["status"] == 200 and "list_mtime" in rep.get("extensions", []),
          "list_mtime advertised: %r" % rep)
    tok = rep["token"]
    t0 = int(time.time())
    # A one-block object, one of several blocks, one through PUTMANY: each commit path.
    upload(c, tok, "lm.a", b"small")
    upload(c, tok, "lm.b", os.urandom(2 * DEFAULT_BS + 7))
    pm_expect(c, tok, [("lm.c", b"batched")], [200])
    expect(c, r("FILE", "SAVE", token=tok, key="lm.d", size=10), 200)  # in progress
    rep, _ = expect(c, r("FILE", "LIST", token=tok, prefix="lm.", mtimes=True), 200)
    t1 = int(time.time())
    keys, mt, now = rep["keys"], rep.get("mtimes"), rep.get("now")
    check(keys == ["lm.a", "lm.b", "lm.c"] and rep["more"] is False and is_int(rep["obj_gen"]),
          "LIST with mtimes: %r" % rep)
    check(isinstance(mt, list) and len(mt) == len(keys), "one mtime per key: %r" % rep)
    check(is_int(now) and t0 - 1 <= now <= t1 + 1, "now is the server's clock: %r" % rep)
    check(all(is_int(m) and t0 - 1 <= m <= now for m in mt),
          "mtimes within [%d, now]: %r" % (t0 - 1, rep))
    # Paging keeps keys and mtimes aligned.
    p1, _ = expect(c, r("FILE", "LIST", token=tok, prefix="lm.", limit=2, mtimes=True), 200)
    check(p1["keys"] == keys[:2] and p1["mtimes"] == mt[:2] and p1["more"] is True,
          "first page: %r" % p1)
    p2, _ = expect(c, r("FILE", "LIST", token=tok, prefix="lm.", after="lm.b", mtimes=True), 200)
    check(p2["keys"] == keys[2:] and p2["mtimes"] == mt[2:] and is_int(p2["now"]),
          "second page: %r" % p2)
    rep, _ = expect(c, r("FILE", "LIST", token=tok, prefix="none.", mtimes=True), 200)
    check(rep["keys"] == [] and rep["mtimes"] == [] and is_int(rep["now"]), "empty: %r" % rep)
    # Without the flag (absent, false, null as for the other fields) the answer is as before.
    for kw in ({}, {"mtimes": False}, {"mtimes": None}):
        rep, _ = expect(c, r("FILE", "LIST", token=tok, prefix="lm.", **kw), 200)
        check(rep["keys"] == keys and "mtimes" not in rep and "now" not in rep,
              "LIST %r: no mtimes, no now: %r" % (kw, rep))
    expect(c, r("FILE", "LIST", token=tok, mtimes="yes"), 410)
    expect(c, r("FILE", "LIST", token=tok, mtimes=1), 410)
    # DATA: records have no times; the field is ignored.
    expect(c, r("DATA", "SAVE", token=tok, key="lm.cfg", v=1), 200)
    for v in (True, "yes"):
        rep, _ = expect(c, r("DATA", "LIST", token=tok, prefix="lm.", mtimes=v), 200)
        check(rep["keys"] == ["lm.cfg"] and "mtimes" not in rep and "now" not in rep,
              "DATA LIST mtimes=%r: %r" % (v, rep))
    still_serving(port)


def sc_zero(port):
    c, tok = session(port)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="empty", size=0), 200)
    check(rep["total_block"] == 0, "zero plan")
    rep, _ = expect(c, r("FILE", "GET", token=tok, key="empty"), 200)
    check(rep["md5"] == md5(b"") and rep["size"] == 0, "empty object md5")
    expect(c, r("FILE", "DOWNLOAD", token=tok, key="empty", block_index=0), 410)
    expect(c, r("FILE", "SAVE", token=tok, key="empty", size=0), 402)


def sc_bye(port):
    c = Conn(port)
    rep, _ = c.req(r("AUTH", "BYE"))
    check(rep["status"] == 200, "BYE answered")
    check(c.is_closed(), "closed after BYE")


def sc_big_blocks(port):
    """big_blocks: SAVE's want_block_size enlarges the plan (up to 1 MiB), GET keeps the
    default (20480, the deployed clients' block size)."""
    c = Conn(port)
    rep, _ = c.req(r("AUTH", "LOGIN", username=CUR["user"], password=md5(CUR["user"].encode())))
    check("big_blocks" in rep.get("extensions", []), "LOGIN advertises big_blocks: %r" % rep)
    tok = rep["token"]
    data = os.urandom(3 * (1 << 20) + 5)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="bb", size=len(data),
                         want_block_size=1 << 20), 200)
    check(rep["block_size"] == 1 << 20 and rep["total_block"] == 4, "1 MiB plan: %r" % rep)
    for i in (1, 0):
        expect(c, r("FILE", "UPLOAD", token=tok, key="bb", block_index=i), 200,
               data[i << 20:(i + 1) << 20])
    expect(c, r("FILE", "UPLOAD", token=tok, key="bb", block_index=2), 406, data[:65536])
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="bb", size=len(data)), 200)
    check(rep["block_size"] == 1 << 20 and rep["received"] == [[0, 1]],
          "a SAVE without want_block_size resumes the 1 MiB plan: %r" % rep)
    for i in (2, 3):
        last, _ = expect(c, r("FILE", "UPLOAD", token=tok, key="bb", block_index=i), 200,
                         data[i << 20:(i + 1) << 20])
    check(last.get("md5") == md5(data), "md5 of the big-block upload")
    rep, _ = expect(c, r("FILE", "GET", token=tok, key="bb"), 200)
    check(rep["block_size"] == DEFAULT_BS and
          rep["total_block"] == (len(data) + DEFAULT_BS - 1) // DEFAULT_BS,
          "the object's download plan keeps the default block size: %r" % rep)
    check(download(c, tok, "bb") == data, "content")
    for want, bs in ((262144, 262144), (64 << 20, 1 << 20), (1000, DEFAULT_BS),
                     (-5, DEFAULT_BS), ("x", DEFAULT_BS), (None, DEFAULT_BS)):
        key = "bbw%r" % (want,)
        rep, _ = expect(c, r("FILE", "SAVE", token=tok, key=key, size=len(data),
                             want_block_size=want), 200)
        check(rep["block_size"] == bs, "want_block_size %r: plan %r" % (want, rep))
        expect(c, r("FILE", "DELETE", token=tok, key=key), 404)


def sc_charcount(port):
    """A reference-style client counts json_len in characters."""
    c = Conn(port)
    o = r("AUTH", "LOGIN", username="z\u00fcrich", password=md5("z\u00fcrich".encode()))
    rep, _ = c.req(o, charcount=True)
    check(rep["status"] == 200, "char-counted LOGIN")
    tok = rep["token"]
    key = "r\u00e9sum\u00e9 \u4e2d.pdf"
    rep, _ = c.req(r("FILE", "SAVE", token=tok, key=key, size=5), charcount=True)
    check(rep["status"] == 200 and rep["key"] == key, "char-counted SAVE: %r" % rep)
    rep, _ = c.req(r("FILE", "UPLOAD", token=tok, key=key, block_index=0), b"hello",
                   charcount=True)
    check(rep["status"] == 200 and rep["md5"] == md5(b"hello"), "char-counted UPLOAD")


def sc_phase1(port):
    """Before a restart: an object, a record, a partial upload."""
    c, tok = session(port)
    upload(c, tok, "keep", b"K" * 50000)
    expect(c, r("DATA", "SAVE", token=tok, key="rec", v=42), 200)
    data = bytes(range(256)) * 400
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="part", size=len(data)), 200)
    bs = rep["block_size"]
    for i in (0, 2):
        expect(c, r("FILE", "UPLOAD", token=tok, key="part", block_index=i), 200,
               data[i * bs:(i + 1) * bs])
    open(sys.argv[3], "w").write(tok)


def sc_phase2(port):
    """After the restart: all of it is still there; the old token still works."""
    tok = open(sys.argv[3]).read()
    c = Conn(port)
    check(download(c, tok, "keep") == b"K" * 50000, "object kept")
    rep, _ = expect(c, r("DATA", "GET", token=tok, key="rec"), 200)
    check(rep["v"] == 42, "record kept")
    data = bytes(range(256)) * 400
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="part", size=len(data)), 200)
    bs, total = rep["block_size"], rep["total_block"]
    check(rep["received"] == [[0, 0], [2, 2]], "partial upload kept: %r" % rep["received"])
    for i in range(total):
        if i not in (0, 2):
            last, _ = expect(c, r("FILE", "UPLOAD", token=tok, key="part", block_index=i), 200,
                             data[i * bs:(i + 1) * bs])
    check(last["md5"] == md5(data), "resumed after restart")
    check(download(c, tok, "part") == data, "content after restart")


def sc_fault(port):
    """STEP_FAULT=write:3: the third block write fails with 507; all else goes on."""
    c, tok = session(port)
    data = os.urandom(5 * 1000)
    rep, _ = expect(c, r("FILE", "SAVE", token=tok, key="f", size=len(data)), 200)
    bs = rep["block_size"]
    check(bs == 1000, "test runs with --block-size 1000")
    codes = []
    for i in range(5):
        rep, _ = c.req(r("FILE", "UPLOAD", token=tok, key="f", block_index=i), data[i * bs:(i + 1) * bs])
        codes.append(rep["status"])
    check(codes == [200, 200, 507, 200, 200], "codes %r" % codes)
    expect(c, r("FILE", "GET", token=tok, key="f"), 404)  # nothing half-written visible
    rep, _ = expect(c, r("FILE", "UPLOAD", token=tok, key="f", block_index=2), 200, data[2000:3000])
    check(rep["md5"] == md5(data), "retried block completes the object")
    still_serving(port)


def sc_token(port):
    """Prints a fresh token (for the expiry test)."""
    c, tok = session(port)
    print(tok)


def sc_token_status(port):
    """Prints the status a GET with the token in argv[3] gets."""
    c = Conn(port)
    rep, _ = c.req(r("DATA", "GET", token=sys.argv[3], key="x"))
    print(rep["status"])


def sc_login(port):
    """argv[3]=user argv[4]=plain password; prints the LOGIN status and message."""
    c = Conn(port)
    rep, _ = c.req(r("AUTH", "LOGIN", username=sys.argv[3], password=md5(sys.argv[4].encode())))
    print(rep["status"], rep["status_msg"])


def sc_idle(port):
    c = Conn(port, timeout=30)
    check(c.is_closed(), "idle connection closed by the server")
    still_serving(port)


def sc_maxconn(port):
    """With --max-connections 3: the 4th gets 503 and is closed; freed slots are reused."""
    cs = [Conn(port) for _ in range(3)]
    for c in cs:
        rep, _ = c.req({"direction": "EARTH"})
        check(rep["status"] == 333, "within the limit")
    x = Conn(port)
    rep, _ = x.recv()
    check(rep["status"] == 503, "refused with 503: %r" % rep)
    check(x.is_closed(), "refused connection closed")
    cs.pop().close()
    for _ in range(100):
        try:
            y = Conn(port)
            rep, _ = y.req({"direction": "EARTH"})
            if rep["status"] == 333:
                return
        except (EOFError, OSError):
            pass
        import time
        time.sleep(0.05)  # bounded polling for the server to notice the close
    raise Fail("slot not reused after a close")


def sc_many(port):
    """1,000 idle connections held open while 50 clients upload at once; all verified."""
    idle = []
    for _ in range(1000):
        idle.append(socket.create_connection((HOST, port), timeout=30))
    errors = []

    def one(n):
        try:
            c, tok = session(port, "user%d" % (n % 5))
            data = os.urandom(50000 + n * 1000)
            last, _, _ = upload(c, tok, "obj%d" % n, data)
            check(last["md5"] == md5(data), "md5 %d" % n)
            check(download(c, tok, "obj%d" % n) == data, "content %d" % n)
            c.close()
        except Exception as e:  # noqa
            errors.append("%d: %s" % (n, e))

    th = [threading.Thread(target=one, args=(n,)) for n in range(50)]
    for t in th:
        t.start()
    for t in th:
        t.join(120)
    check(not errors, "uploads failed: %r" % errors[:5])
    # The idle ones are still connected and served.
    for s in idle[:10]:
        jb = b'{"direction":"EARTH"}'
        s.sendall(struct.pack(">II", len(jb), 0) + jb)
        hdr = b""
        while len(hdr) < 8:
            d = s.recv(8 - len(hdr))
            check(d, "idle connection was dropped")
            hdr += d
    for s in idle:
        s.close()


def pack(o, b=b""):
    jb = json.dumps(o).encode()
    return struct.pack(">II", len(jb), len(b)) + jb + b


def burst(c, tok, n, prefix):
    """Pipelines SAVE + UPLOAD of n small objects, then a GET of each, without reading;
    returns the objects and the replies in order."""
    objs = [("%s%04d" % (prefix, i), os.urandom(1 + (i * 997) % 8000)) for i in range(n)]
    blob = [pack(r("FILE", "SAVE", token=tok, key=k, size=len(d))) +
            pack(r("FILE", "UPLOAD", token=tok, key=k, block_index=0), d) for k, d in objs]
    blob += [pack(r("FILE", "GET", token=tok, key=k)) for k, _ in objs]
    t = threading.Thread(target=c.send_raw, args=(b"".join(blob),))
    t.start()
    reps = [c.recv()[0] for _ in range(3 * n)]
    t.join()
    return objs, reps


def sc_pipecommit(port):
    """Many pipelined SAVE+UPLOAD, then GETs on the same connection without waiting: all
    answered in order, every GET sees its committed object; DELETE and DATA too."""
    c, tok = session(port)
    n = 300
    objs, reps = burst(c, tok, n, "pc")
    for i, (k, d) in enumerate(objs):
        sv, up, gt = reps[2 * i], reps[2 * i + 1], reps[2 * n + i]
        check(sv["status"] == 200 and sv["operation"] == "SAVE" and sv["key"] == k,
              "SAVE %s: %r" % (k, sv))
        check(up["status"] == 200 and up["operation"] == "UPLOAD" and up["key"] == k and
              up.get("md5") == md5(d), "UPLOAD %s: %r" % (k, up))
        check(gt["status"] == 200 and gt["operation"] == "GET" and gt["key"] == k and
              gt["md5"] == md5(d) and gt["size"] == len(d), "GET %s: %r" % (k, gt))
    # DELETE right behind the completing UPLOAD, then GET, DOWNLOAD, SAVE again, LIST.
    blob = b""
    seq = []
    for i in range(20):
        k, d = "pd%02d" % i, os.urandom(100 + i)
        blob += pack(r("FILE", "SAVE", token=tok, key=k, size=len(d)))
        blob += pack(r("FILE", "UPLOAD", token=tok, key=k, block_index=0), d)
        blob += pack(r("FILE", "DOWNLOAD", token=tok, key=k, block_index=0))
        blob += pack(r("FILE", "DELETE", token=tok, key=k))
        blob += pack(r("FILE", "GET", token=tok, key=k))
        blob += pack(r("DATA", "SAVE", token=tok, key=k, v=i))
        blob += pack(r("DATA", "GET", token=tok, key=k))
        blob += pack(r("DATA", "DELETE", token=tok, key=k))
        blob += pack(r("DATA", "GET", token=tok, key=k))
        seq += [("SAVE", 200, None), ("UPLOAD", 200, d), ("DOWNLOAD", 200, d),
                ("DELETE", 200, None), ("GET", 404, None), ("SAVE", 200, None),
                ("GET", 200, i), ("DELETE", 200, None), ("GET", 404, None)]
    blob += pack(r("FILE", "LIST", token=tok, prefix="pd"))
    seq.append(("LIST", 200, None))
    c.send_raw(blob)
    for n, (op, st, extra) in enumerate(seq):
        rep, b = c.recv()
        check(rep["status"] == st and rep["operation"] == op,
              "reply %d: wanted %s %d, got %r" % (n, op, st, rep))
        if op == "UPLOAD":
            check(rep.get("md5") == md5(extra), "md5 of %d" % n)
        if op == "DOWNLOAD":
            check(b == extra, "DOWNLOAD behind the commit returns the data")
        if op == "GET" and st == 200:
            check(rep.get("v") == extra, "DATA GET behind the SAVE")
        if op == "LIST":
            check(rep["keys"] == [], "LIST behind the DELETEs: %r" % rep["keys"])
    still_serving(port)


def sc_savecheck(port):
    """A SAVE's answer when its UPLOAD is pipelined behind it (with PostgreSQL metadata the
    commit decides both, store_check.c) and when it is not: an existing key is refused
    (402, and its UPLOAD 402, the object untouched), a new one committed; a DELETE on
    another connection racing a SAVE of an existing key has an outcome the answers agree
    with."""
    c, tok = session(port)
    old = [("sc%02d" % i, os.urandom(200 + 37 * i)) for i in range(20)]
    for k, d in old:
        up, _, _ = upload(c, tok, k, d)
        check(up.get("md5") == md5(d), "setup upload of %s" % k)
    new = [("sn%02d" % i, os.urandom(300 + 41 * i)) for i in range(20)]
    mixed = [x for pair in zip(old, new) for x in pair]
    blob = b"".join(pack(r("FILE", "SAVE", token=tok, key=k, size=len(d) + 1)) +
                    pack(r("FILE", "UPLOAD", token=tok, key=k, block_index=0), d + b"!")
                    for k, d in mixed)
    c.send_raw(blob)
    for k, d in mixed:
        sv, _ = c.recv()
        up, _ = c.recv()
        st = 402 if k.startswith("sc") else 200
        check(sv["operation"] == "SAVE" and sv["status"] == st,
              "pipelined SAVE %s: wanted %d, got %r" % (k, st, sv))
        check(up["operation"] == "UPLOAD" and up["status"] == st,
              "pipelined UPLOAD %s: wanted %d, got %r" % (k, st, up))
        if st == 200:
            check(sv["key"] == k and up["key"] == k, "keys of %s: %r %r" % (k, sv, up))
            check(up.get("md5") == md5(d + b"!"), "md5 of %s: %r" % (k, up))
            check(sv["total_block"] == 1 and sv["size"] == len(d) + 1 and sv["upload_id"],
                  "plan of %s: %r" % (k, sv))
    for k, d in mixed:
        g, _ = expect(c, r("FILE", "GET", token=tok, key=k), 200, what="GET " + k)
        want = d if k.startswith("sc") else d + b"!"
        check(g["md5"] == md5(want), "%s holds what was committed first" % k)
    # One request at a time: the SAVE is answered before its UPLOAD is sent.
    expect(c, r("FILE", "SAVE", token=tok, key="sc00", size=5), 402, what="lone SAVE, old key")
    expect(c, r("FILE", "UPLOAD", token=tok, key="sc00", block_index=0), 402, b"12345",
           what="UPLOAD after a refused SAVE")
    up, _, _ = upload(c, tok, "lone", b"lone!")
    check(up.get("md5") == md5(b"lone!"), "lone SAVE then UPLOAD commits")
    # DELETE of an existing key on another connection, racing a SAVE of it.
    d2, tok2 = session(port)
    for i in range(10):
        k = "sc%02d" % (i + 1)
        c.send(r("FILE", "SAVE", token=tok, key=k, size=3))
        d2.send(r("FILE", "DELETE", token=tok2, key=k))
        sv, _ = c.recv()
        dl, _ = d2.recv()
        check(dl["status"] == 200, "DELETE %s: %r" % (k, dl))
        check(sv["status"] in (200, 402), "SAVE %s racing a DELETE: %r" % (k, sv))
        up, _ = c.req(r("FILE", "UPLOAD", token=tok, key=k, block_index=0), b"abc")
        if sv["status"] == 200:  # after the DELETE
            check(up["status"] == 200 and up.get("md5") == md5(b"abc"),
                  "UPLOAD %s after a SAVE that stood: %r" % (k, up))
            expect(c, r("FILE", "GET", token=tok, key=k), 200, what="GET " + k)
        else:  # before it: the DELETE removed the object, and the SAVE made no upload
            check(up["status"] == 408, "UPLOAD %s after a refused SAVE: %r" % (k, up))
            expect(c, r("FILE", "GET", token=tok, key=k), 404, what="GET " + k)
    # Two SAVEs of an existing key at once, the second of another size: both refused.
    c.send(r("FILE", "SAVE", token=tok, key="sc12", size=3))
    d2.send(r("FILE", "SAVE", token=tok2, key="sc12", size=4))
    for conn, what in ((c, "first"), (d2, "second")):
        sv, _ = conn.recv()
        check(sv["status"] == 402, "%s SAVE of an existing key: %r" % (what, sv))
    # A SAVE with replace at once with one without: the first refused, the replace stands.
    c.send(r("FILE", "SAVE", token=tok, key="sc13", size=3))
    d2.send(r("FILE", "SAVE", token=tok2, key="sc13", size=3, replace=True))
    sv, _ = c.recv()
    check(sv["status"] == 402, "SAVE without replace of an existing key: %r" % sv)
    sv, _ = d2.recv()
    check(sv["status"] == 200, "SAVE with replace: %r" % sv)
    up, _ = d2.req(r("FILE", "UPLOAD", token=tok2, key="sc13", block_index=0), b"xyz")
    check(up["status"] == 200 and up.get("md5") == md5(b"xyz"), "replaced: %r" % up)
    still_serving(port)


def sc_pipefault(port):
    """STEP_FAULT=fsync:1: the commits of the failed batch are all answered 507 and none
    is visible; the others are 200 and complete; the connection goes on."""
    c, tok = session(port)
    n = 100
    objs, reps = burst(c, tok, n, "pf")
    failed = 0
    for i, (k, d) in enumerate(objs):
        up, gt = reps[2 * i + 1], reps[2 * n + i]
        check(up["status"] in (200, 507), "UPLOAD %s: %r" % (k, up))
        if up["status"] == 507:
            failed += 1
            check("md5" not in up, "no md5 on a failed commit")
            check(gt["status"] == 404, "failed commit not visible: %r" % gt)
        else:
            check(up.get("md5") == md5(d) and gt["status"] == 200 and gt["md5"] == md5(d),
                  "committed %s: %r %r" % (k, up, gt))
    check(failed >= 1, "the failing sync was answered 507")
    last, _, _ = upload(c, tok, "after", b"after the fault")
    check(last["md5"] == md5(b"after the fault"), "uploads work after the fault")
    still_serving(port)


def putmany(tok, objs, binary=None, typ="FILE", **kw):
    """A PUTMANY request for objs [(key, data)] (or entries given as dicts), and its
    binary part (the data concatenated unless given)."""
    ents, blob = [], b""
    for o in objs:
        if not isinstance(o, tuple):  # an entry given as it is sent
            ents.append(o)
            continue
        k, d = o
        ents.append({"key": k, "size": len(d), "md5": md5(d)})
        blob += d
    req = r(typ, "PUTMANY", token=tok, objects=ents)
    req.update(kw)
    return req, blob if binary is None else binary


def pm_expect(c, tok, objs, statuses, binary=None, what="PUTMANY"):
    """Sends a PUTMANY; the reply must be 200 with exactly these entry statuses (and the
    md5 of the bytes on every 200). Returns the results."""
    req, blob = putmany(tok, objs, binary)
    rep, _ = expect(c, req, 200, blob, what=what)
    res = rep.get("results")
    check(isinstance(res, list) and [e.get("status") for e in res] == statuses,
          "%s: wanted %r, got %r" % (what, statuses, res))
    for o, e in zip(objs, res):
        if e["status"] == 200:
            check(isinstance(o, tuple) and e.get("md5") == md5(o[1]),
                  "%s: md5 of %r: %r" % (what, o[0], e))
        else:
            check("md5" not in e, "%s: no md5 on a failed entry %r" % (what, e))
    return res


def pm_ping(c):
    rep, _ = c.req({"direction": "EARTH"})
    check(rep.get("status") == 333, "connection still answers after the error")


def sc_putmany(port):
    """PUTMANY: batches of one-block objects; per-entry statuses; whole-request errors;
    the connection goes on after each; only PUTMANY may carry more than one block."""
    c = Conn(port)
    rep, _ = c.req(r("AUTH", "LOGIN", username=CUR["user"], password=md5(CUR["user"].encode())))
    check(rep["status"] == 200 and "putmany" in rep.get("extensions", []),
          "LOGIN advertises putmany: %r" % rep)
    tok = rep["token"]
    # A good batch: every object stored, visible to GET and DOWNLOAD with its md5.
    good = [("pm/%03d" % i, os.urandom(1 + (i * 7919) % 16384)) for i in range(60)]
    good.append(("pm/max", os.urandom(16384)))
    pm_expect(c, tok, good, [200] * len(good), what="good batch")
    for k, d in good:
        rep, _ = expect(c, r("FILE", "GET", token=tok, key=k), 200, what="GET " + k)
        check(rep["size"] == len(d) and rep["md5"] == md5(d), "GET %s: %r" % (k, rep))
        check(download(c, tok, k) == d, "DOWNLOAD of %s gives the bytes" % k)
    # Duplicates: within one batch (the second is 402), against a stored object (402),
    # against an object uploaded the ordinary way (402); the stored content is the first.
    a, b = os.urandom(3000), os.urandom(3001)
    upload(c, tok, "pm/ordinary", b"ordinary")
    pm_expect(c, tok, [("pm/dup", a), ("pm/dup", b), ("pm/000", b), ("pm/ordinary", a),
                       ("pm/after-dup", b)], [200, 402, 402, 402, 200], what="duplicates")
    check(download(c, tok, "pm/dup") == a and download(c, tok, "pm/000") == good[0][1] and
          download(c, tok, "pm/ordinary") == b"ordinary", "duplicates changed nothing")
    # Per-entry refusals; the bytes of a refused entry are skipped, the next is right.
    big, x, y = os.urandom(16385), os.urandom(500), os.urandom(600)
    ents = [{"key": "pm/zero", "size": 0, "md5": md5(b"")},
            {"key": "pm/big", "size": len(big), "md5": md5(big)},
            ("pm/x", x),
            {"key": "pm/badmd5", "size": len(y), "md5": md5(x)},
            {"key": "pm/upper", "size": len(y), "md5": md5(y).upper()},
            {"key": "pm/short", "size": len(y), "md5": md5(y)[:31]},
            {"key": 5, "size": len(y), "md5": md5(y)},
            {"key": "", "size": len(y), "md5": md5(y)},
            {"key": "a\u0000b", "size": len(y), "md5": md5(y)},
            {"size": len(y), "md5": md5(y)},
            {"key": "pm/nomd5", "size": len(y)},
            ("pm/y", y)]
    blob = big + x + y * 8 + y
    pm_expect(c, tok, ents, [413, 413, 200, 406, 410, 410, 410, 410, 410, 410, 410, 200],
              binary=blob, what="per-entry refusals")
    check(download(c, tok, "pm/x") == x and download(c, tok, "pm/y") == y,
          "entries around refused ones stored right")
    for k in ("pm/zero", "pm/big", "pm/badmd5", "pm/upper", "pm/short", "pm/nomd5"):
        expect(c, r("FILE", "GET", token=tok, key=k), 404, what="refused %s not stored" % k)
    # An upload in progress: 423; it can still be finished the ordinary way.
    part = os.urandom(2000)
    expect(c, r("FILE", "SAVE", token=tok, key="pm/inprogress", size=len(part)), 200)
    pm_expect(c, tok, [("pm/inprogress", part), ("pm/beside", part)], [423, 200],
              what="upload in progress")
    last, _ = expect(c, r("FILE", "UPLOAD", token=tok, key="pm/inprogress", block_index=0),
                     200, part)
    check(last.get("md5") == md5(part), "the upload in progress completes as before")
    # Whole-request errors: no results, nothing stored, the connection goes on.
    z = os.urandom(100)
    cases = [
        ("sizes under the binary part", putmany(tok, [("pm/w1", z)], z + b"!"), 406),
        ("sizes over the binary part", putmany(tok, [("pm/w1", z)], z[:-1]), 406),
        ("no binary part", putmany(tok, [("pm/w1", z)], b""), 406),
        ("huge size", putmany(tok, [{"key": "pm/w1", "size": 1 << 62, "md5": md5(z)}], z), 406),
        ("missing objects", (r("FILE", "PUTMANY", token=tok), z), 410),
        ("objects not an array", (r("FILE", "PUTMANY", token=tok, objects={"a": 1}), z), 410),
        ("empty objects", putmany(tok, [], b""), 410),
        ("1025 objects", putmany(tok, [("pm/n%d" % i, b"n") for i in range(1025)]), 410),
        ("size not an integer",
         putmany(tok, [("pm/w1", z), {"key": "pm/w2", "size": "100", "md5": md5(z)}], z + z),
         410),
        ("negative size",
         putmany(tok, [("pm/w1", z), {"key": "pm/w2", "size": -100, "md5": md5(z)}], z + z),
         410),
        ("entry not an object", putmany(tok, [("pm/w1", z), 7], z), 410),
    ]
    for what, (req, blob), st in cases:
        rep, _ = expect(c, req, st, blob, what=what)
        check("results" not in rep, "%s: no results" % what)
        pm_ping(c)
    for k in ["pm/w1", "pm/w2"] + ["pm/n%d" % i for i in (0, 1024)]:
        expect(c, r("FILE", "GET", token=tok, key=k), 404, what="%s not stored" % k)
    # 1024 objects is allowed; so is 4 MiB of content (more than one block).
    many = [("pm/m%04d" % i, os.urandom(1 + i % 50)) for i in range(1024)]
    pm_expect(c, tok, many, [200] * 1024, what="1024 objects")
    full = [("pm/f%03d" % i, os.urandom(16384)) for i in range(256)]
    pm_expect(c, tok, full, [200] * 256, what="4 MiB")
    check(download(c, tok, "pm/f255") == full[255][1], "the last of 4 MiB")
    # Other types, and no token.
    expect(c, putmany(tok, [("pm/d", z)], typ="DATA")[0], 408, z, what="DATA PUTMANY")
    expect(c, putmany(tok, [("pm/d", z)], typ="AUTH")[0], 408, z, what="AUTH PUTMANY")
    expect(c, putmany("nope", [("pm/d", z)])[0], 403, z, what="PUTMANY bad token")
    expect(c, r("FILE", "GET", token=tok, key="pm/d"), 404)
    # Pipelined: two PUTMANYs, then GET and DOWNLOAD of their keys without waiting; the
    # replies come in order and the GETs see the committed objects.
    p1 = [("pm/p1-%02d" % i, os.urandom(200 + i)) for i in range(30)]
    p2 = [("pm/p2-%02d" % i, os.urandom(300 + i)) for i in range(30)] + [p1[0]]
    blob = pack(*putmany(tok, p1)) + pack(*putmany(tok, p2))
    blob += pack(r("FILE", "GET", token=tok, key="pm/p2-29"))
    blob += pack(r("FILE", "DOWNLOAD", token=tok, key="pm/p1-00", block_index=0))
    c.send_raw(blob)
    rep1, _ = c.recv()
    rep2, _ = c.recv()
    gt, _ = c.recv()
    dl, b = c.recv()
    check(rep1["status"] == 200 and [e["status"] for e in rep1["results"]] == [200] * 30,
          "first pipelined PUTMANY: %r" % rep1)
    check(rep2["status"] == 200 and [e["status"] for e in rep2["results"]] == [200] * 30 + [402],
          "second pipelined PUTMANY: %r" % rep2)
    check(gt["status"] == 200 and gt["md5"] == md5(p2[29][1]), "GET behind PUTMANY: %r" % gt)
    check(dl["status"] == 200 and b == p1[0][1], "DOWNLOAD behind PUTMANY")
    # Only PUTMANY may carry more than the largest block (1 MiB, big_blocks' default
    # --max-block-size): a header announcing more for an UPLOAD is answered 413 as soon as
    # its JSON is in (no binary sent) and the connection is closed, as before; so is a
    # PUTMANY over 4 MiB.
    for what, req, blen in (
            ("UPLOAD of 2 MiB", r("FILE", "UPLOAD", token=tok, key="pm/b", block_index=0),
             2 << 20),
            ("bad JSON with 2 MiB", None, 2 << 20),
            ("PUTMANY over 4 MiB", putmany(tok, [("pm/o", b"o")])[0], (4 << 20) + 1)):
        jb = json.dumps(req).encode() if req is not None else b"{nope"
        c.send_raw(struct.pack(">II", len(jb), blen) + jb)
        rep, _ = c.recv()
        check(rep["status"] == 413, "%s: %r" % (what, rep))
        check(c.is_closed(), "connection closed after: " + what)
        c, tok = session(port)
    expect(c, r("FILE", "GET", token=tok, key="pm/o"), 404)
    still_serving(port)


def sc_objgen(port):
    """objgen: store_id and obj_gen on LOGIN and LIST; only removing a complete object moves
    obj_gen (not DATA records, not uploads in progress, not uploads)."""
    c = Conn(port)
    rep, _ = c.req(r("AUTH", "LOGIN", username=CUR["user"], password=md5(CUR["user"].encode())))
    check(rep["status"] == 200 and "objgen" in rep["extensions"], "objgen advertised: %r" % rep)
    sid, tok = rep["store_id"], rep["token"]
    check(len(sid) == 32 and all(ch in "0123456789abcdef" for ch in sid), "store_id: %r" % sid)
    check(rep["obj_gen"] == 0, "obj_gen of a new user is 0: %r" % rep)
    if len(sys.argv) > 3:
        open(sys.argv[3], "w").write(sid + "\n")

    def gen():
        rep, _ = expect(c, r("FILE", "LIST", token=tok), 200, what="LIST")
        d, _ = expect(c, r("DATA", "LIST", token=tok), 200, what="DATA LIST")
        check(d["obj_gen"] == rep["obj_gen"], "DATA LIST carries the same obj_gen")
        return rep["obj_gen"]

    upload(c, tok, "a", os.urandom(70000))
    upload(c, tok, "b", b"small")
    check(gen() == 0, "uploads do not move obj_gen")
    expect(c, r("DATA", "SAVE", token=tok, key="d", v=1), 200)
    expect(c, r("DATA", "DELETE", token=tok, key="d"), 200)
    expect(c, r("FILE", "SAVE", token=tok, key="p", size=100000), 200)
    expect(c, r("FILE", "DELETE", token=tok, key="p"), 404, what="DELETE in progress")
    expect(c, r("FILE", "DELETE", token=tok, key="nosuch"), 404, what="DELETE unknown")
    check(gen() == 0, "DATA deletes, dropped uploads, unknown keys do not move obj_gen")
    expect(c, r("FILE", "DELETE", token=tok, key="a"), 200)
    check(gen() == 1, "a FILE DELETE moves obj_gen to 1")
    expect(c, r("FILE", "DELETE", token=tok, key="b"), 200)
    check(gen() == 2, "a second FILE DELETE moves obj_gen to 2 (packed object)")
    c2 = Conn(port)
    rep, _ = c2.req(r("AUTH", "LOGIN", username="other-" + CUR["user"],
                      password=md5(("other-" + CUR["user"]).encode())))
    check(rep["obj_gen"] == 0 and rep["store_id"] == sid, "per user; one store_id: %r" % rep)
    rep, _ = c2.req(r("AUTH", "LOGIN", username=CUR["user"], password=md5(CUR["user"].encode())))
    check(rep["obj_gen"] == 2, "LOGIN reports the user's obj_gen: %r" % rep)
    still_serving(port)


def sc_objgen_again(port):
    """After a restart: the same store_id (argv[3] holds it) and the obj_gen kept (2)."""
    c = Conn(port)
    rep, _ = c.req(r("AUTH", "LOGIN", username="u-objgen", password=md5(b"u-objgen")))
    check(rep["store_id"] == open(sys.argv[3]).read().strip(), "store_id survives a restart")
    check(rep["obj_gen"] == 2, "obj_gen survives a restart: %r" % rep)


def sc_any_block(port):
    """any_block: GET want_block_size and DOWNLOAD block_size re-cut an object's blocks."""
    c, tok = session(port)
    rep, _ = c.req(r("AUTH", "LOGIN", username=CUR["user"], password=md5(CUR["user"].encode())))
    check("any_block" in rep["extensions"], "any_block advertised")
    data = os.urandom(300001)
    upload(c, tok, "big", data)
    small = b"0123456789" * 100
    upload(c, tok, "small", small)
    g0, _ = expect(c, r("FILE", "GET", token=tok, key="big"), 200)
    for bs in (1, 4096, 20480, 65536, 100000, 300000, 300001, 1 << 20):
        g, _ = expect(c, r("FILE", "GET", token=tok, key="big", want_block_size=bs), 200)
        check(g["block_size"] == bs and g["total_block"] == (len(data) + bs - 1) // bs and
              g["size"] == len(data) and g["md5"] == g0["md5"], "GET want %d: %r" % (bs, g))
        if bs == 1:
            continue
        out = b""
        for i in range(g["total_block"]):
            d, b = expect(c, r("FILE", "DOWNLOAD", token=tok, key="big", block_index=i,
                               block_size=bs), 200)
            check(d["size"] == len(b) == min(bs, len(data) - i * bs), "block %d of %d" % (i, bs))
            out += b
        check(out == data, "download in blocks of %d" % bs)
        expect(c, r("FILE", "DOWNLOAD", token=tok, key="big", block_index=g["total_block"],
                    block_size=bs), 410, what="index past the end (%d)" % bs)
    d, b = expect(c, r("FILE", "DOWNLOAD", token=tok, key="big", block_index=300000,
                       block_size=1), 200)
    check(b == data[300000:300001], "block size 1")
    d, b = expect(c, r("FILE", "DOWNLOAD", token=tok, key="small", block_index=0,
                       block_size=1 << 20), 200)
    check(b == small, "a packed object in one big block")
    d, b = expect(c, r("FILE", "DOWNLOAD", token=tok, key="small", block_index=7,
                       block_size=100), 200)
    check(b == small[700:800], "a packed object in blocks of 100")
    # Absent, or out of range / not an integer: today's plan exactly.
    for bad in (0, -5, (1 << 20) + 1, "4096", None):
        o = r("FILE", "GET", token=tok, key="big")
        if bad is not None:
            o["want_block_size"] = bad
        g, _ = expect(c, o, 200)
        check(g == g0, "GET with want_block_size %r is the plain plan" % (bad,))
        o = r("FILE", "DOWNLOAD", token=tok, key="big", block_index=1)
        if bad is not None:
            o["block_size"] = bad
        d, b = expect(c, o, 200)
        bs0 = g0["block_size"]
        check(b == data[bs0:2 * bs0], "DOWNLOAD with block_size %r: the object's blocks" % (bad,))
    still_serving(port)


def sc_save_md5(port):
    """save_md5: a SAVE declaring the file's md5 never resumes or joins someone else's upload
    of other content (423), a commit must match the declared md5 (else 410 and nothing is
    committed), an UPLOAD naming an old upload_id is refused (423); clients that send
    neither keep the reference behaviour."""
    a, ta = session(port)
    b, tb = session(port)
    rep, _ = a.req(r("AUTH", "LOGIN", username=CUR["user"], password=md5(CUR["user"].encode())))
    check("save_md5" in rep["extensions"], "save_md5 advertised")
    one, two = os.urandom(3 * DEFAULT_BS + 7), os.urandom(3 * DEFAULT_BS + 7)
    bs = DEFAULT_BS

    def blk(data, i):
        return data[i * bs:(i + 1) * bs]
    # A starts "k" declaring one's md5 and sends block 0.
    pa, _ = expect(a, r("FILE", "SAVE", token=ta, key="k", size=len(one), md5=md5(one)), 200)
    uid = pa["upload_id"]
    check(len(uid) == 16, "upload_id: %r" % pa)
    expect(a, r("FILE", "UPLOAD", token=ta, key="k", block_index=0, upload_id=uid), 200,
           blk(one, 0))
    # B, with other content (same size), is refused while A's upload is active.
    rep, _ = expect(b, r("FILE", "SAVE", token=tb, key="k", size=len(two), md5=md5(two)), 423,
                    what="SAVE of other content during another's upload")
    # B with the same content joins: the same upload, block 0 already there.
    pb, _ = expect(b, r("FILE", "SAVE", token=tb, key="k", size=len(one), md5=md5(one)), 200)
    check(pb["upload_id"] == uid and pb["received"] == [[0, 0]], "same content resumes: %r" % pb)
    # A's file changed: A names its upload, so it starts over (a new upload_id).
    pa2, _ = expect(a, r("FILE", "SAVE", token=ta, key="k", size=len(two), md5=md5(two),
                         upload_id=uid), 200)
    check(pa2["upload_id"] != uid and pa2["received"] == [], "own upload started over: %r" % pa2)
    # B's blocks for the old upload are refused, not mixed in.
    expect(b, r("FILE", "UPLOAD", token=tb, key="k", block_index=1, upload_id=uid), 423,
           blk(one, 1), what="UPLOAD for a replaced upload")
    # A legacy client (no md5, no upload_id) resumes as the reference would, and sends a
    # block of other content: the declared md5 keeps the mix from being committed.
    c, tc = session(port)
    rep, _ = expect(c, r("FILE", "SAVE", token=tc, key="k", size=len(two)), 200)
    expect(c, r("FILE", "UPLOAD", token=tc, key="k", block_index=1), 200, blk(one, 1))
    for i in (0, 2):
        expect(a, r("FILE", "UPLOAD", token=ta, key="k", block_index=i, upload_id=pa2["upload_id"]),
               200, blk(two, i))
    rep, _ = expect(a, r("FILE", "UPLOAD", token=ta, key="k", block_index=3,
                         upload_id=pa2["upload_id"]), 410, blk(two, 3), what="mixed commit")
    check("does not match the md5" in rep["status_msg"], "mismatch message: %r" % rep)
    expect(a, r("FILE", "GET", token=ta, key="k"), 404, what="nothing committed")
    # Clean: the declared md5 matches, the object is committed.
    pa3, _ = expect(a, r("FILE", "SAVE", token=ta, key="k", size=len(two), md5=md5(two).upper()),
                    200)
    for i in range(4):
        last, _ = expect(a, r("FILE", "UPLOAD", token=ta, key="k", block_index=i), 200,
                         blk(two, i))
    check(last["md5"] == md5(two), "committed with the declared md5")
    check(download(a, ta, "k") == two, "content")
    # Bad fields: 410.
    expect(a, r("FILE", "SAVE", token=ta, key="x", size=5, md5="nothex"), 410)
    expect(a, r("FILE", "SAVE", token=ta, key="x", size=5, md5=5), 410)
    expect(a, r("FILE", "SAVE", token=ta, key="x", size=5, upload_id=5), 410)
    # A one-block (inline) object is checked too.
    expect(a, r("FILE", "SAVE", token=ta, key="s", size=3, md5=md5(b"abc")), 200)
    expect(a, r("FILE", "UPLOAD", token=ta, key="s", block_index=0), 410, b"abd")
    # Two legacy uploaders of one key: the reference behaviour (the documented limit).
    expect(b, r("FILE", "SAVE", token=tb, key="legacy", size=len(one)), 200)
    expect(c, r("FILE", "SAVE", token=tc, key="legacy", size=len(one)), 200)
    still_serving(port)


def obj_files(root):
    """Names of the committed object files under ROOT/obj."""
    return sorted(os.listdir(os.path.join(root, "obj")))


def sc_replace(port):
    """replace: without the flag a SAVE of an existing key is 402; with it the old object stays
    downloadable (byte for byte, on another connection) until the new upload commits, the
    commit swaps the key and reclaims the old file; a failed or abandoned replace leaves the
    old object; 0-byte and one-block replaces; a DELETE during a replace removes the key."""
    root = sys.argv[3]
    a, ta = session(port)
    b, tb = session(port)
    rep, _ = a.req(r("AUTH", "LOGIN", username=CUR["user"], password=md5(CUR["user"].encode())))
    check("replace" in rep["extensions"], "replace advertised: %r" % rep)
    old, new = os.urandom(4 * DEFAULT_BS + 11), os.urandom(3 * DEFAULT_BS + 5)
    upload(a, ta, "k", old)
    before = obj_files(root)
    expect(a, r("FILE", "SAVE", token=ta, key="k", size=len(new)), 402, what="SAVE, no flag")
    expect(a, r("FILE", "SAVE", token=ta, key="k", size=len(new), replace=False), 402)
    plan, _ = expect(a, r("FILE", "SAVE", token=ta, key="k", size=len(new), replace=True), 200)
    bs, total = plan["block_size"], plan["total_block"]
    for i in range(total - 1):
        expect(a, r("FILE", "UPLOAD", token=ta, key="k", block_index=i), 200,
               new[i * bs:(i + 1) * bs])
    # Meanwhile the old object is what GET and DOWNLOAD see, on another connection.
    g, _ = expect(b, r("FILE", "GET", token=tb, key="k"), 200)
    check(g["md5"] == md5(old) and g["size"] == len(old), "old object visible: %r" % g)
    check(download(b, tb, "k") == old, "old bytes during the replace")
    expect(b, r("FILE", "SAVE", token=tb, key="k", size=len(new)), 402,
           what="SAVE without the flag during a replace")
    expect(b, r("DATA", "GET", token=tb, key="k"), 404)
    last, _ = expect(a, r("FILE", "UPLOAD", token=ta, key="k", block_index=total - 1), 200,
                     new[(total - 1) * bs:])
    check(last["md5"] == md5(new), "replace commit md5")
    check(download(b, tb, "k") == new, "new bytes after the commit")
    after = obj_files(root)
    check(len(after) == len(before) and after != before, "old file reclaimed: %r %r"
          % (before, after))
    # A replace whose commit fails (declared md5 does not match): the object stays.
    expect(a, r("FILE", "SAVE", token=ta, key="k", size=len(old), md5=md5(b"other"),
                replace=True), 200)
    blocks = (len(old) + bs - 1) // bs
    for i in range(blocks):
        rep, _ = a.req(r("FILE", "UPLOAD", token=ta, key="k", block_index=i),
                       old[i * bs:(i + 1) * bs])
    check(rep["status"] == 410, "mismatched replace refused: %r" % rep)
    check(download(b, tb, "k") == new, "failed replace leaves the object")
    check(obj_files(root) == after, "no file left behind by the failed replace")
    # An abandoned replace (the client goes away mid-upload) leaves the object too.
    expect(a, r("FILE", "SAVE", token=ta, key="k", size=len(old), replace=True), 200)
    expect(a, r("FILE", "UPLOAD", token=ta, key="k", block_index=0), 200, old[:bs])
    a.close()
    check(download(b, tb, "k") == new, "abandoned replace leaves the object")
    a, ta = session(port)
    # Resuming it and finishing it replaces (the resume keeps block 0).
    p2, _ = expect(a, r("FILE", "SAVE", token=ta, key="k", size=len(old), replace=True), 200)
    check(p2["received"] == [[0, 0]], "replace resumed: %r" % p2)
    for i in range(1, blocks):
        expect(a, r("FILE", "UPLOAD", token=ta, key="k", block_index=i), 200,
               old[i * bs:(i + 1) * bs])
    check(download(b, tb, "k") == old, "resumed replace committed")
    # 0-byte replace, then a one-block (inline) replace of it, then a big one over that.
    rep, _ = expect(a, r("FILE", "SAVE", token=ta, key="k", size=0, replace=True), 200)
    g, _ = expect(b, r("FILE", "GET", token=tb, key="k"), 200)
    check(g["size"] == 0 and g["md5"] == md5(b""), "0-byte replace: %r" % g)
    upload(a, ta, "s", b"small one")
    expect(a, r("FILE", "SAVE", token=ta, key="s", size=9, replace=True), 200)
    expect(a, r("FILE", "UPLOAD", token=ta, key="s", block_index=0), 200, b"small two")
    check(download(b, tb, "s") == b"small two", "inline replace")
    expect(a, r("FILE", "SAVE", token=ta, key="s", size=len(new), replace=True), 200)
    for i in range(total):
        expect(a, r("FILE", "UPLOAD", token=ta, key="s", block_index=i), 200,
               new[i * bs:(i + 1) * bs])
    check(download(b, tb, "s") == new, "a file replaces an inline object")
    # A replace of a key that does not exist is an ordinary upload.
    expect(a, r("FILE", "SAVE", token=ta, key="fresh", size=3, replace=True), 200)
    expect(a, r("FILE", "UPLOAD", token=ta, key="fresh", block_index=0), 200, b"abc")
    check(download(b, tb, "fresh") == b"abc", "replace of a new key")
    # DELETE during a replace: the upload and the object are gone.
    expect(a, r("FILE", "SAVE", token=ta, key="s", size=len(old), replace=True), 200)
    expect(a, r("FILE", "UPLOAD", token=ta, key="s", block_index=0), 200, old[:bs])
    expect(b, r("FILE", "DELETE", token=tb, key="s"), 200, what="DELETE during a replace")
    expect(b, r("FILE", "GET", token=tb, key="s"), 404)
    expect(a, r("FILE", "UPLOAD", token=ta, key="s", block_index=1), 408, old[bs:2 * bs])
    still_serving(port)


def sc_replace_phase1(port):
    """A replace left in progress across a restart (phase 2 checks it)."""
    CUR["user"] = "u-replace-restart"
    a, ta = session(port)
    upload(a, ta, "r", b"x" * (2 * DEFAULT_BS))
    expect(a, r("FILE", "SAVE", token=ta, key="r", size=2 * DEFAULT_BS, replace=True), 200)
    expect(a, r("FILE", "UPLOAD", token=ta, key="r", block_index=0), 200, b"y" * DEFAULT_BS)


def sc_replace_phase2(port):
    CUR["user"] = "u-replace-restart"
    a, ta = session(port)
    check(download(a, ta, "r") == b"x" * (2 * DEFAULT_BS), "old object after the restart")
    expect(a, r("FILE", "SAVE", token=ta, key="r", size=1), 402, what="still no flag, 402")
    p, _ = expect(a, r("FILE", "SAVE", token=ta, key="r", size=2 * DEFAULT_BS, replace=True), 200)
    check(p["received"] == [[0, 0]], "the replace resumes after a restart: %r" % p)
    expect(a, r("FILE", "UPLOAD", token=ta, key="r", block_index=1), 200, b"y" * DEFAULT_BS)
    check(download(a, ta, "r") == b"y" * (2 * DEFAULT_BS), "replaced after the restart")
    still_serving(port)


def main():
    name, port = sys.argv[1], int(sys.argv[2])
    fn = globals().get("sc_" + name)
    CUR["user"] = "u-" + name
    if fn is None:
        print("unknown scenario " + name, file=sys.stderr)
        return 2
    try:
        fn(port)
    except (Fail, EOFError, OSError, KeyError, ValueError) as e:
        print("FAIL %s: %s: %s" % (name, type(e).__name__, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
