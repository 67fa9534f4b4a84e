#!/usr/bin/env python3
"""probe — checks that a STEP server behaves the way a scenario says.

selftest.sh uses it to prove that ref_server.py (and each --bug mode) does
what STEP-PROTOCOL.md and its own help claim.  "codes" asserts the
reference's behaviour, quirks included (stored tokens, "../" keys, silences),
so a fixed server such as stepd is expected to fail parts of it.  Each
scenario prints "# ..." diagnostics and exits 0 when every check holds, 1
otherwise.

Scenarios:
  codes            validation order and status codes of §3–§5, DATA and FILE
                   flows, the reference's silences (BYE, size 0, "/" in a
                   key, bad base64 token), silent close on bad JSON, the
                   character-count drop, the "../" key escape, garbage input
  glue             (--bug glue) two pipelined UPLOADs: 406, then silence
  wrongop          (--bug wrongop) operation GET on DELETE / failed DOWNLOAD,
                   402 for SAVE without size, 408 UPLOAD to a complete key,
                   410 UPLOAD index past the end
  silent           (--bug silent) no answer to BYE without token, size 0,
                   "/" in a key, a token that is not strict base64
  race             (--bug race) two connections finish one key: the
                   completing one gets no answer; the object is committed
  noanswer-commit  (--bug noanswer-commit) the completing UPLOAD is not
                   answered, the connection keeps serving, GET has the MD5
"""

import argparse
import base64
import hashlib
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stepwire  # noqa: E402

SILENCE = 0.5  # seconds of silence that count as "no answer"


class Probe:
    def __init__(self, port, timeout):
        self.port = port
        self.timeout = timeout
        self.failures = 0
        self.lock = threading.Lock()
        # Users get a per-run suffix, so a probe can run twice against one
        # server without tripping over its own earlier keys.
        self.tag = os.urandom(3).hex()

    def user(self, name):
        return f"{name}-{self.tag}"

    # ---- reporting -------------------------------------------------------

    def check(self, cond, what):
        with self.lock:
            if not cond:
                self.failures += 1
                print(f"# FAIL: {what}", flush=True)
        return cond

    def note(self, msg):
        with self.lock:
            print(f"# {msg}", flush=True)

    # ---- connections -----------------------------------------------------

    def conn(self, user=None, charcount=False):
        c = stepwire.Client("127.0.0.1", self.port, self.timeout, charcount).connect()
        if user is not None:
            c.login(self.user(user), self.user(user))
        return c

    def expect(self, c, req, status, binary=b"", op=None, what=None):
        """Send req (token added if c has one and req has none); check status
        (and the echoed operation when op is given); return (resp, binary)."""
        if c.token is not None and "token" not in req and req.get("operation") != "LOGIN":
            req = dict(req, token=c.token)
        what = what or f"{req.get('type')} {req.get('operation')} {req.get('key', '')}"
        try:
            resp, data = c.request(req, binary)
        except (OSError, stepwire.WireError) as e:
            self.check(False, f"{what}: expected {status}, got {e!r}")
            return {}, b""
        self.check(isinstance(resp, dict) and resp.get("status") == status,
                   f"{what}: expected status {status}, got {resp}")
        if op is not None:
            self.check(resp.get("operation") == op,
                       f"{what}: expected operation {op}, got {resp.get('operation')}")
        return resp, data

    def expect_silence(self, c, req, binary=b"", what=None, raw=None):
        """The server must neither answer nor close within SILENCE seconds."""
        if raw is None and c.token is not None and "token" not in req:
            req = dict(req, token=c.token)
        what = what or f"{req.get('type')} {req.get('operation')}"
        old = c.timeout
        try:
            if raw is not None:
                c.send_raw(raw)
            else:
                c.send(req, binary)
            c.settimeout(SILENCE)
            try:
                resp, _ = c.recv()
                self.check(False, f"{what}: expected no answer, got {resp}")
            except TimeoutError:
                pass
            except (OSError, stepwire.WireError) as e:
                self.check(False, f"{what}: expected a hanging connection, got {e!r}")
        finally:
            c.settimeout(old)

    def expect_close(self, c, raw, what):
        """The server must close the connection without answering."""
        c.send_raw(raw)
        try:
            resp = c.recv()
            self.check(False, f"{what}: expected a silent close, got {resp[0]}")
        except stepwire.PeerClosed:
            pass
        except ConnectionResetError:
            pass  # closed with our bytes unread: still a close without answer
        except TimeoutError:
            self.check(False, f"{what}: expected a close, the connection hangs")

    def parallel(self, *fns):
        """Run silence checks side by side: each costs SILENCE seconds."""
        threads = [threading.Thread(target=self._guard, args=(f,)) for f in fns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _guard(self, fn):
        try:
            fn()
        except Exception as e:
            self.check(False, f"{getattr(fn, '__name__', fn)}: {e!r}")


def req(type_, op, **fields):
    r = {"type": type_, "operation": op, "direction": "REQUEST"}
    r.update(fields)
    return r


def plan_and_blocks(p, c, key, nblocks_plus):
    """SAVE a key sized (nblocks_plus) blocks plus one byte; returns
    (block_size, blocks list) with deterministic content."""
    resp, _ = p.expect(c, req("FILE", "SAVE", key=key, size=1), 200)
    bs = resp.get("block_size", 20480)
    size = bs * nblocks_plus + 1
    resp, _ = p.expect(c, req("FILE", "DELETE", key=key), 404, what="DELETE in-progress plan")
    resp, _ = p.expect(c, req("FILE", "SAVE", key=key, size=size), 200)
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    blocks = [data[i:i + bs] for i in range(0, size, bs)]
    return bs, blocks, hashlib.md5(data).hexdigest()


# ---- scenarios -------------------------------------------------------------

def scenario_codes(p):
    c = p.conn()
    r, _ = p.expect(c, {"direction": "EARTH"}, 333, op="3BODY")
    p.check(r.get("type") == "DANGEROUS", f"EARTH type {r.get('type')}")
    p.expect(c, {"direction": "EARTH", "operation": "nonsense"}, 333, what="EARTH first")
    r, _ = p.expect(c, {}, 400, op="ERROR", what="empty object")
    p.check("operation" in r.get("status_msg", ""), f"400 names operation: {r}")
    r, _ = p.expect(c, {"operation": "GET"}, 400, what="no direction")
    p.check("direction" in r.get("status_msg", ""), f"400 names direction: {r}")
    r, _ = p.expect(c, {"operation": "GET", "direction": "REQUEST"}, 400, what="no type")
    p.check("type" in r.get("status_msg", ""), f"400 names type: {r}")
    p.expect(c, {"operation": "X", "direction": "RESPONSE", "type": "X"}, 407, what="direction")
    p.expect(c, req("X", "FROB"), 408, what="operation")
    p.expect(c, req("X", "GET"), 409, what="type")
    p.expect(c, req("DATA", "LOGIN", username="u", password="x"), 409, op="LOGIN")
    p.expect(c, req("AUTH", "LOGIN", password="x"), 410, what="LOGIN no username")
    p.expect(c, req("AUTH", "LOGIN", username="u"), 410, what="LOGIN no password")
    p.expect(c, req("AUTH", "LOGIN", username="u", password=stepwire.md5_hex("v")), 401)
    r, _ = p.expect(c, req("AUTH", "LOGIN", username="u.x", password=stepwire.md5_hex("u.x"),
                           token=None), 200, what="LOGIN with token: null")
    tok = base64.b64decode(r.get("token", "")).decode()
    parts = tok.split(".")
    p.check(len(parts) == 4 and parts[0] == "u_x" and parts[2] == "login"
            and len(parts[1]) == 14 and parts[1].isdigit(), f"token format: {tok!r}")
    p.expect(c, req("FILE", "GET", key="k"), 403, what="no token")
    bad = base64.b64encode(b"u.20240101000000.login.0123").decode()
    p.expect(c, req("FILE", "GET", key="k", token=bad), 403, what="forged token")
    c.close()

    # DATA
    c = p.conn("alice")
    p.expect(c, req("DATA", "SAVE", key="rec", colour="blue", n=3), 200)
    p.expect(c, req("DATA", "SAVE", key="rec", colour="red"), 402)
    r, _ = p.expect(c, req("DATA", "GET", key="rec"), 200)
    p.check(r.get("colour") == "blue" and r.get("n") == 3, f"DATA GET fields: {r}")
    p.check(r.get("token") == c.token, "the reference stores the whole request (token too)")
    p.expect(c, req("DATA", "GET"), 410)
    p.expect(c, req("DATA", "DELETE"), 410)
    p.expect(c, req("DATA", "DELETE", key="rec"), 200)
    p.expect(c, req("DATA", "GET", key="rec"), 404)
    p.expect(c, req("DATA", "DELETE", key="rec"), 404)
    r, _ = p.expect(c, req("DATA", "SAVE", x=1), 200, what="DATA SAVE without key")
    p.check(isinstance(r.get("key"), str) and len(r["key"]) == 36, f"server UUID key: {r}")

    # FILE: plan, every UPLOAD error, out-of-order and repeated blocks
    p.expect(c, req("FILE", "SAVE", key="f"), 410, what="SAVE without size")
    bs, blocks, md5 = plan_and_blocks(p, c, "f", 1)
    p.check(bs == 20480, f"block size {bs}")
    p.expect(c, req("FILE", "UPLOAD", block_index=0), 410, blocks[0], what="UPLOAD no key")
    p.expect(c, req("FILE", "UPLOAD", key="nope", block_index=0), 408, blocks[0])
    p.expect(c, req("FILE", "UPLOAD", key="f"), 410, blocks[0], what="UPLOAD no index")
    p.expect(c, req("FILE", "UPLOAD", key="f", block_index=2), 405, blocks[0])
    p.expect(c, req("FILE", "UPLOAD", key="f", block_index=-1), 410, blocks[0])
    p.expect(c, req("FILE", "UPLOAD", key="f", block_index=0), 406, blocks[0][:-1])
    p.expect(c, req("FILE", "UPLOAD", key="f", block_index=1), 406, blocks[0])
    r, _ = p.expect(c, req("FILE", "GET", key="f"), 404, what="GET in progress")
    p.check("not completely" in r.get("status_msg", ""), f"in-progress message: {r}")
    p.expect(c, req("FILE", "DOWNLOAD", key="f", block_index=0), 404, op="DOWNLOAD")
    r, _ = p.expect(c, req("FILE", "UPLOAD", key="f", block_index=1, block_size=bs,
                           size=bs + 1), 200, blocks[1], what="UPLOAD last block first")
    p.check("md5" not in r and r.get("block_index") == 1 and r.get("key") == "f",
            f"partial answer: {r}")
    p.expect(c, req("FILE", "UPLOAD", key="f", block_index=1), 200, blocks[1], what="repeat")
    r, _ = p.expect(c, req("FILE", "UPLOAD", key="f", block_index=0), 200, blocks[0])
    p.check(r.get("md5") == md5, f"completing answer carries md5 {md5}: {r}")
    p.expect(c, req("FILE", "UPLOAD", key="f", block_index=0), 402, blocks[0], what="complete")
    p.expect(c, req("FILE", "SAVE", key="f", size=5), 402)
    r, _ = p.expect(c, req("FILE", "GET", key="f"), 200)
    p.check(r.get("md5") == md5 and r.get("size") == bs + 1 and r.get("total_block") == 2
            and r.get("block_size") == bs, f"GET plan: {r}")
    p.expect(c, req("FILE", "GET"), 410)
    p.expect(c, req("FILE", "GET", key="nope"), 404)
    p.expect(c, req("FILE", "DOWNLOAD", key="f"), 410, op="DOWNLOAD", what="DOWNLOAD no index")
    p.expect(c, req("FILE", "DOWNLOAD", key="f", block_index=2), 410, what="DOWNLOAD past end")
    p.expect(c, req("FILE", "DOWNLOAD", key="f", block_index=-1), 410, what="DOWNLOAD -1")
    r, data = p.expect(c, req("FILE", "DOWNLOAD", key="f", block_index=1), 200, op="DOWNLOAD")
    p.check(data == blocks[1] and r.get("size") == 1, f"DOWNLOAD last block: {r}")
    r, _ = p.expect(c, req("FILE", "DELETE", key="f"), 200, op="DELETE")
    p.check(r.get("key") == "f", f"DELETE answer: {r}")
    p.expect(c, req("FILE", "GET", key="f"), 404, what="GET deleted")
    p.expect(c, req("FILE", "DELETE", key="f"), 404, what="DELETE deleted")
    p.expect(c, req("FILE", "DELETE"), 410)

    # A repeated SAVE starts the upload over; DELETE of an upload in progress.
    bs, blocks, md5 = plan_and_blocks(p, c, "g", 1)
    p.expect(c, req("FILE", "UPLOAD", key="g", block_index=0), 200, blocks[0])
    p.expect(c, req("FILE", "SAVE", key="g", size=bs + 1), 200, what="SAVE again")
    r, _ = p.expect(c, req("FILE", "UPLOAD", key="g", block_index=1), 200, blocks[1])
    p.check("md5" not in r, "a repeated SAVE forgets the blocks received so far")
    p.expect(c, req("FILE", "DELETE", key="g"), 404, what="DELETE in progress")
    p.expect(c, req("FILE", "UPLOAD", key="g", block_index=0), 408, blocks[0],
             what="UPLOAD after DELETE")

    # Pipelining: several requests in one write, answered in order.
    c.send_raw(b"".join(stepwire.pack(dict(req("DATA", "SAVE", key=f"p{i}"), token=c.token))
                        for i in range(5)))
    keys = [c.recv()[0].get("key") for _ in range(5)]
    p.check(keys == [f"p{i}" for i in range(5)], f"pipelined answers in order: {keys}")

    # The "../" weakness: bob's key lands in carol's namespace (once carol's
    # directories exist, which her first request creates).
    k = p.conn("carol")
    p.expect(k, req("FILE", "GET", key="planted"), 404, what="carol's first request")
    b = p.conn("bob")
    planted = f"../{p.user('carol')}/planted"
    p.expect(b, req("FILE", "SAVE", key=planted, size=3), 200)
    p.expect(b, req("FILE", "UPLOAD", key=planted, block_index=0), 200, b"abc")
    b.close()
    r, _ = p.expect(k, req("FILE", "GET", key="planted"), 200, what="key escapes the user dir")
    p.check(r.get("md5") == hashlib.md5(b"abc").hexdigest(), f"planted object: {r}")
    k.close()

    # Non-ASCII key: the server answers unescaped and character-counted.
    r, _ = p.expect(c, req("DATA", "SAVE", key="résumé", v="ü"), 200)
    c.send(dict(req("DATA", "GET", key="résumé"), token=c.token))
    head = stepwire.recv_exact(c.sock, 8)
    jlen, _ = struct.unpack("!II", head)
    raw = stepwire.recv_exact(c.sock, jlen)
    p.check(not raw.isascii(), "response JSON is unescaped UTF-8")
    # Reading on until the text holds json_len characters must give the record.
    obj = stepwire._read_charcounted(c.sock, raw, jlen)
    p.check(obj.get("key") == "résumé" and obj.get("v") == "ü",
            f"json_len counts characters: {jlen}, {obj}")
    c.close()

    # Silences that leave the connection usable, then the ones that hang it.
    def bye_then_serve():
        s = p.conn("dave")
        p.expect_silence(s, req("AUTH", "BYE"), what="BYE")
        p.expect(s, {"direction": "EARTH"}, 333, what="serving after BYE")
        s.close()

    def unhandled_then_serve():
        s = p.conn("dave")
        p.expect_silence(s, req("DATA", "UPLOAD", key="x"), what="DATA UPLOAD")
        p.expect(s, {"direction": "EARTH"}, 333, what="serving after DATA UPLOAD")
        s.close()

    def size_zero():
        s = p.conn("dave")
        p.expect_silence(s, req("FILE", "SAVE", key="empty", size=0), what="size 0")
        p.expect_silence(s, {"direction": "EARTH"}, what="EARTH after size 0 (hung)")
        s.close()

    def slash_key():
        s = p.conn("dave")
        p.expect_silence(s, req("FILE", "SAVE", key="dir/file", size=3), what="key with '/'")
        s.close()

    def bad_base64():
        s = p.conn()
        p.expect_silence(s, req("FILE", "GET", key="k", token="abc"), what="token not base64")
        s.close()

    def bad_json():
        s = p.conn()
        p.expect_close(s, struct.pack("!II", 5, 0) + b"{oops", "unparsable JSON")
        s.close()

    def charcount_request():
        s = p.conn("erin", charcount=True)
        p.expect_close(s, stepwire.pack(req("DATA", "GET", key="é", token=s.token), b"", True),
                       "character-counted non-ASCII request (reference drops it)")
        s.close()

    def garbage():
        for junk in (os.urandom(4096), struct.pack("!II", 0xFFFFFFFF, 0xFFFFFFFF) + b"{",
                     struct.pack("!II", 2, 0) + b"[]", b"\x00\x00"):
            try:
                with socket.create_connection(("127.0.0.1", p.port), timeout=1) as s:
                    s.sendall(junk)
            except OSError:
                pass
        s = p.conn()
        p.expect(s, {"direction": "EARTH"}, 333, what="serving after garbage")
        s.close()

    p.parallel(bye_then_serve, unhandled_then_serve, size_zero, slash_key, bad_base64,
               bad_json, charcount_request, garbage)


def scenario_glue(p):
    c = p.conn("gina")
    bs, blocks, _ = plan_and_blocks(p, c, "glued", 2)
    two = b"".join(stepwire.pack(req("FILE", "UPLOAD", key="glued", block_index=i,
                                     token=c.token), blocks[i]) for i in range(2))
    c.send_raw(two)
    r, _ = c.recv()
    p.check(r.get("status") == 406, f"first pipelined UPLOAD: expected 406, got {r}")
    p.expect_silence(c, None, raw=b"", what="after the 406 (stalled)")
    c.close()
    # One request at a time still works on the same server.
    c = p.conn("gina")
    p.expect(c, req("FILE", "SAVE", key="solo", size=bs + 1), 200)
    p.expect(c, req("FILE", "UPLOAD", key="solo", block_index=0), 200, blocks[0])
    r, _ = p.expect(c, req("FILE", "UPLOAD", key="solo", block_index=1), 200, blocks[-1][:1])
    p.check("md5" in r, "unpipelined upload completes")
    c.close()


def scenario_wrongop(p):
    c = p.conn("walt")
    p.expect(c, req("FILE", "SAVE", key="w"), 402, what="SAVE without size")
    p.expect(c, req("FILE", "DELETE", key="nope"), 404, op="GET", what="DELETE unknown")
    p.expect(c, req("FILE", "DOWNLOAD", key="nope", block_index=0), 404, op="GET")
    bs, blocks, md5 = plan_and_blocks(p, c, "w", 1)
    p.expect(c, req("FILE", "UPLOAD", key="w", block_index=2), 410, blocks[0], what="past end")
    p.expect(c, req("FILE", "UPLOAD", key="w", block_index=0), 200, blocks[0])
    r, _ = p.expect(c, req("FILE", "UPLOAD", key="w", block_index=1), 200, blocks[1])
    p.check(r.get("md5") == md5, "upload completes")
    p.expect(c, req("FILE", "UPLOAD", key="w", block_index=0), 408, blocks[0],
             what="UPLOAD to a complete key")
    p.expect(c, req("FILE", "DOWNLOAD", key="w", block_index=9), 410, op="GET")
    p.expect(c, req("FILE", "DOWNLOAD", key="w", block_index=0), 200, op="DOWNLOAD")
    p.expect(c, req("FILE", "DELETE", key="w"), 200, op="GET", what="DELETE complete")
    c.close()


def scenario_silent(p):
    def bye():
        s = p.conn()
        p.expect_silence(s, req("AUTH", "BYE"), what="BYE without token")

    def size_zero():
        s = p.conn("sam")
        p.expect_silence(s, req("FILE", "SAVE", key="z", size=0), what="size 0")

    def slash():
        s = p.conn("sam")
        p.expect_silence(s, req("FILE", "GET", key="no/such"), what="GET key with '/'")

    def not_base64():
        s = p.conn()
        # Lenient base64 would skip the junk and answer 403; silent never answers.
        p.expect_silence(s, req("FILE", "GET", key="k", token="!!!!"), what="token '!!!!'")

    p.parallel(bye, size_zero, slash, not_base64)


def scenario_race(p):
    a, b = p.conn("rita"), p.conn("rita")
    bs, blocks, md5 = plan_and_blocks(p, a, "r", 1)
    p.expect(a, req("FILE", "UPLOAD", key="r", block_index=0), 200, blocks[0])
    p.expect_silence(b, req("FILE", "UPLOAD", key="r", block_index=1), blocks[1],
                     what="completing UPLOAD while another connection uploads")
    c = p.conn("rita")
    r, _ = p.expect(c, req("FILE", "GET", key="r"), 200, what="final GET")
    p.check(r.get("md5") == md5, f"object committed: {r}")
    # Alone on a key, the final answer arrives.
    bs, blocks, md5 = plan_and_blocks(p, c, "alone", 1)
    p.expect(c, req("FILE", "UPLOAD", key="alone", block_index=0), 200, blocks[0])
    r, _ = p.expect(c, req("FILE", "UPLOAD", key="alone", block_index=1), 200, blocks[1])
    p.check(r.get("md5") == md5, "single-connection upload is answered")
    for s in (a, b, c):
        s.close()


def scenario_noanswer_commit(p):
    c = p.conn("nora")
    bs, blocks, md5 = plan_and_blocks(p, c, "n", 1)
    p.expect(c, req("FILE", "UPLOAD", key="n", block_index=0), 200, blocks[0])
    p.expect_silence(c, req("FILE", "UPLOAD", key="n", block_index=1), blocks[1],
                     what="completing UPLOAD")
    r, _ = p.expect(c, req("FILE", "GET", key="n"), 200, what="GET on the same connection")
    p.check(r.get("md5") == md5, f"object committed: {r}")
    c.close()


SCENARIOS = {
    "codes": scenario_codes, "glue": scenario_glue, "wrongop": scenario_wrongop,
    "silent": scenario_silent, "race": scenario_race, "noanswer-commit": scenario_noanswer_commit,
}


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--port", type=int, required=True, help="server port on 127.0.0.1")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per answer (default 5)")
    args = ap.parse_args(argv)
    p = Probe(args.port, args.timeout)
    try:
        SCENARIOS[args.scenario](p)
    except (OSError, stepwire.WireError) as e:
        p.check(False, f"{args.scenario}: {e!r}")
    if p.failures:
        print(f"# {args.scenario}: {p.failures} check(s) failed", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
