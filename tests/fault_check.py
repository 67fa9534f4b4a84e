#!/usr/bin/env python3
"""fault_check.py - checkers and drivers of the fault suite (t4xxx).

  fault_check.py verify PORT USER [KEYLIST]
      Every committed FILE object of USER (LIST, paged) is checked: GET's size and MD5
      against the bytes DOWNLOAD delivers. With KEYLIST (a file of "key md5" lines) those
      keys must also be present with that MD5. Prints "objects verified: N".
  fault_check.py invisible PORT USER KEY
      KEY is neither readable (GET 404) nor listed.
  fault_check.py loop STEPD ROOTBASE KIND MAX [STRIDE]
      For N = 1, 1+STRIDE, ... up to MAX: a fresh stepd with STEP_FAULT=KIND:N runs a fixed
      workload (multi-block uploads, an empty object, a resumed upload, a PUTMANY, DATA
      records, downloads, LIST, DELETE). Every request must be answered; a failure must be a clean
      5xx; a failed upload must stay invisible until retried; afterwards every committed
      object verifies and stepd exits 0 on SIGTERM (no sanitizer report, no leak).
      The loop ends early after the first N whose run saw no fault (the workload has fewer
      than N such calls). Prints "faults injected: K" (runs in which the fault fired).

Stdlib only; exit 0 = pass, messages on stderr.
"""
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_wire import Conn, Fail, check, login, md5, r  # noqa: E402


def ask(c, obj, binary=b""):
    """c.req(), asked again (at most 3 times) while the answer is a clean 5xx: a checker's
    own request may meet the one injected fault."""
    for _ in range(3):
        rep, b = c.req(obj, binary)
        if rep.get("status") not in (500, 507):
            break
    return rep, b


def list_keys(c, tok, data=False):
    keys, after = [], ""
    for _ in range(10000):
        rep, _ = ask(c, r("DATA" if data else "FILE", "LIST", token=tok, after=after, limit=1000))
        check(rep["status"] == 200, "LIST: %r" % rep)
        keys += rep["keys"]
        if not rep.get("more") or not rep["keys"]:
            return keys
        after = rep["keys"][-1]
    raise Fail("LIST does not end")


def fetch(c, tok, key):
    """(GET reply, downloaded bytes) of a committed object."""
    rep, _ = ask(c, r("FILE", "GET", token=tok, key=key))
    check(rep["status"] == 200, "GET %r: %r" % (key, rep))
    out = []
    for i in range(rep["total_block"]):
        d, b = ask(c, r("FILE", "DOWNLOAD", token=tok, key=key, block_index=i))
        check(d["status"] == 200 and d["size"] == len(b), "DOWNLOAD %r %d: %r" % (key, i, d))
        out.append(b)
    return rep, b"".join(out)


def verify(port, user, keylist=None):
    c = Conn(port)
    tok = login(c, user)
    keys = list_keys(c, tok)
    for k in keys:
        rep, data = fetch(c, tok, k)
        check(len(data) == rep["size"], "object %r: %d bytes, GET says %d" % (k, len(data), rep["size"]))
        check(md5(data) == rep["md5"], "object %r: content MD5 %s, GET says %s" % (k, md5(data), rep["md5"]))
    if keylist:
        have = set(keys)
        with open(keylist) as f:
            for line in f:
                k, want = line.split()
                check(k in have, "expected object %r missing" % k)
                rep, _ = c.req(r("FILE", "GET", token=tok, key=k))
                check(rep["md5"] == want, "object %r has MD5 %s, wanted %s" % (k, rep["md5"], want))
    c.close()
    print("objects verified: %d" % len(keys))


def invisible(c, tok, key):
    rep, _ = ask(c, r("FILE", "GET", token=tok, key=key))
    check(rep["status"] == 404, "unfinished %r visible to GET: %r" % (key, rep))
    rep, _ = ask(c, r("FILE", "DOWNLOAD", token=tok, key=key, block_index=0))
    check(rep["status"] == 404, "unfinished %r visible to DOWNLOAD: %r" % (key, rep))
    check(key not in list_keys(c, tok), "unfinished %r listed" % key)


# ---------------------------------------------------------------- the fault loop

class Run:
    """One workload against one stepd; counts the clean failures it saw."""

    def __init__(self, port):
        self.c = Conn(port, timeout=20)  # every request answered well within this
        self.tok = login(self.c, "fault")
        self.failures = 0

    def req(self, obj, binary=b"", ok=(200,)):
        rep, b = self.c.req(obj, binary)
        st = rep.get("status")
        if st in ok:
            return rep, b
        check(st in (500, 507), "%s %s: not a clean failure: %r" % (obj["type"], obj["operation"], rep))
        check(rep.get("direction") == "RESPONSE" and isinstance(rep.get("status_msg"), str),
              "malformed failure reply %r" % rep)
        self.failures += 1
        return None, None

    def put(self, key, data):
        """Uploads data; a failure is checked invisible, then the upload is resumed (a new
        SAVE, then the blocks the server lacks), at most a few times."""
        for attempt in range(6):
            rep, _ = self.req(r("FILE", "SAVE", token=self.tok, key=key, size=len(data)), ok=(200, 402))
            if rep is None:
                invisible(self.c, self.tok, key)
                continue
            if rep["status"] == 402:
                return
            if len(data) == 0:
                check(rep.get("md5") == md5(b""), "empty object: %r" % rep)
                return
            bs, total = rep["block_size"], rep["total_block"]
            have = set()
            for a, b in rep.get("received", []):
                have.update(range(a, b + 1))
            failed = False
            for i in range(total):
                if i in have:
                    continue
                rep, _ = self.req(r("FILE", "UPLOAD", token=self.tok, key=key, block_index=i),
                                  data[i * bs:(i + 1) * bs])
                if rep is None:
                    failed = True
                elif "md5" in rep:
                    check(rep["md5"] == md5(data), "committed %r with MD5 %s" % (key, rep["md5"]))
                    return
            if failed:
                invisible(self.c, self.tok, key)
                continue
            # Every block answered 200 and none carried the MD5: the set is incomplete.
            raise Fail("upload of %r: all blocks acknowledged, never committed" % key)
        raise Fail("upload of %r failed %d times" % (key, attempt + 1))

    def putmany(self, objs):
        """PUTMANY of objs (a dict); a failed request or entry (a clean 5xx) leaves its
        objects invisible, and they are then uploaded the ordinary way (put)."""
        ents = [{"key": k, "size": len(d), "md5": md5(d)} for k, d in objs.items()]
        rep, _ = self.req(r("FILE", "PUTMANY", token=self.tok, objects=ents),
                          b"".join(objs.values()))
        if rep is None:
            res = [{"status": 500}] * len(objs)
        else:
            res = rep.get("results")
            check(isinstance(res, list) and len(res) == len(objs), "PUTMANY results: %r" % rep)
        for (k, d), e in zip(objs.items(), res):
            if e["status"] == 200:
                check(e.get("md5") == md5(d), "PUTMANY stored %r with MD5 %r" % (k, e))
                continue
            check(e["status"] in (500, 507), "PUTMANY %r: not a clean failure: %r" % (k, e))
            if rep is not None:
                self.failures += 1
            invisible(self.c, self.tok, k)
            self.put(k, d)

    def get(self, key, data):
        for _ in range(4):
            rep, _ = self.req(r("FILE", "GET", token=self.tok, key=key))
            if rep is None:
                continue
            check(rep["md5"] == md5(data) and rep["size"] == len(data), "GET %r: %r" % (key, rep))
            out, i = [], 0
            while i < rep["total_block"]:
                d, b = self.req(r("FILE", "DOWNLOAD", token=self.tok, key=key, block_index=i))
                if d is None:
                    continue  # the same block again
                out.append(b)
                i += 1
            check(b"".join(out) == data, "downloaded %r differs" % key)
            return
        raise Fail("GET %r kept failing" % key)

    def data_save(self, key, v):
        for _ in range(4):
            rep, _ = self.req(r("DATA", "SAVE", token=self.tok, key=key, v=v))
            if rep is not None:
                break
            rep, _ = self.req(r("DATA", "GET", token=self.tok, key=key), ok=(404,))
        else:
            raise Fail("DATA SAVE %r kept failing" % key)
        for _ in range(4):
            rep, _ = self.req(r("DATA", "GET", token=self.tok, key=key))
            if rep is not None:
                check(rep.get("v") == v, "DATA %r: %r" % (key, rep))
                return
        raise Fail("DATA GET %r kept failing" % key)

    def delete(self, key):
        for _ in range(4):
            rep, _ = self.req(r("FILE", "DELETE", token=self.tok, key=key), ok=(200,))
            if rep is not None:
                break
        rep, _ = self.req(r("FILE", "GET", token=self.tok, key=key), ok=(404,))


def workload(port, seed):
    rnd = random.Random(seed)
    w = Run(port)
    objs = {"m5": rnd.randbytes(5000), "m3": rnd.randbytes(2500), "one": rnd.randbytes(700),
            "empty": b"", "m8": rnd.randbytes(7999)}
    # A partial upload first (blocks 0 and 2 of "m8"), resumed by put() below.
    rep, _ = w.req(r("FILE", "SAVE", token=w.tok, key="m8", size=len(objs["m8"])))
    if rep is not None:
        for i in (0, 2):
            w.req(r("FILE", "UPLOAD", token=w.tok, key="m8", block_index=i), objs["m8"][i * 1000:(i + 1) * 1000])
        invisible(w.c, w.tok, "m8")
    for k, d in objs.items():
        w.put(k, d)
    # Small objects in one PUTMANY (one of more than a block of 1000 bytes).
    batch = {"pm0": rnd.randbytes(300), "pm1": rnd.randbytes(1500), "pm2": rnd.randbytes(999)}
    w.putmany(batch)
    objs.update(batch)
    for i in range(3):
        w.data_save("rec%d" % i, i)
    for k, d in objs.items():
        if d:
            w.get(k, d)
    w.delete("one")
    del objs["one"]
    for _ in range(4):
        rep, _ = w.req(r("FILE", "LIST", token=w.tok))
        if rep is not None:
            check(sorted(rep["keys"]) == sorted(objs), "LIST after the workload: %r" % rep["keys"])
            break
    # The connection is still served, and every committed object verifies.
    rep, _ = w.c.req({"direction": "EARTH"})
    check(rep["status"] == 333, "EARTH")
    w.c.close()
    c = Conn(port)
    tok = login(c, "fault")
    for k, d in objs.items():
        rep, data = fetch(c, tok, k)
        check(data == d and rep["md5"] == md5(d), "object %r after the workload" % k)
    c.close()
    return w.failures


def start_stepd(stepd, root, fault, log):
    pf = root + ".port"
    if os.path.exists(pf):
        os.unlink(pf)
    env = dict(os.environ, STEP_FAULT=fault)
    p = subprocess.Popen([stepd, "--bind", "127.0.0.1", "--port", "0", "--port-file", pf,
                          "--root", root, "--init", "--auth", "open", "--block-size", "1000",
                          "--threads", "2"], env=env, stdout=log, stderr=log)
    for _ in range(400):
        if os.path.exists(pf) and os.path.getsize(pf) > 0:
            return p, int(open(pf).read())
        if p.poll() is not None:
            raise Fail("stepd did not start (exit %r)" % p.returncode)
        time.sleep(0.02)  # bounded polling for the port file
    p.kill()
    raise Fail("stepd did not write its port")


def loop(stepd, rootbase, kind, maxn, stride=1):
    fired = seen = 0
    last = 0
    for n in range(1, maxn + 1, stride):
        root = "%s/%s-%d" % (rootbase, kind, n)
        logname = root + ".log"
        with open(logname, "wb") as log:
            p, port = start_stepd(stepd, root, "%s:%d" % (kind, n), log)
            try:
                failures = workload(port, n)
            except BaseException:
                p.kill()
                p.wait()
                sys.stderr.write("while %s:%d; stepd log:\n%s" % (kind, n, open(logname).read()[-3000:]))
                raise
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                raise Fail("%s:%d: stepd did not exit on SIGTERM" % (kind, n))
        text = open(logname, errors="replace").read()
        check(rc == 0, "%s:%d: stepd exited %d: %s" % (kind, n, rc, text[-3000:]))
        check("Sanitizer" not in text, "%s:%d: sanitizer report: %s" % (kind, n, text[-3000:]))
        # Restarted on the same root: the committed objects are all still there and sound.
        with open(logname, "ab") as log:
            p, port = start_stepd(stepd, root, "", log)
            try:
                verify_quiet(port, "fault")
            finally:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
        last = n
        if "test fault hook: " not in text:
            break  # N is past the workload's last such call
        fired += 1
        seen += failures
    print("# %s: N=1..%d, faults injected: %d, answered 5xx: %d" % (kind, last, fired, seen))
    print("faults injected: %d" % fired)


def verify_quiet(port, user):
    c = Conn(port)
    tok = login(c, user)
    for k in list_keys(c, tok):
        rep, data = fetch(c, tok, k)
        check(md5(data) == rep["md5"] and len(data) == rep["size"], "after restart: %r corrupt" % k)
    c.close()


def main():
    cmd = sys.argv[1]
    try:
        if cmd == "verify":
            verify(int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
        elif cmd == "invisible":
            c = Conn(int(sys.argv[2]))
            tok = login(c, sys.argv[3])
            invisible(c, tok, sys.argv[4])
        elif cmd == "loop":
            loop(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                 int(sys.argv[6]) if len(sys.argv) > 6 else 1)
        else:
            print("unknown command " + cmd, file=sys.stderr)
            return 2
    except (Fail, EOFError, OSError, KeyError, ValueError) as e:
        print("FAIL %s: %s: %s" % (cmd, type(e).__name__, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
