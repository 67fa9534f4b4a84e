#!/usr/bin/env python3
"""client_badserver — a tiny STEP server for stepsync's failure tests (t2040).

It serves one fixed in-memory file under every key it is asked for (DOWNLOAD, GET) and
accepts uploads into memory, and misbehaves in one chosen way:

  badmd5   GET reports a wrong md5 for the file (the data itself is right)
  die      after --after DOWNLOAD answers in all, closes each connection at its next DOWNLOAD
  expire   answers 403 to every --after-th request carrying a token (an expiring token)
  ok       behaves

127.0.0.1 only. Writes the bound port to --port-file; logs requests to stderr.
"""
import argparse
import base64
import hashlib
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
import stepwire  # noqa: E402

BS = 20480


class State:
    def __init__(self, args):
        self.args = args
        self.data = os.urandom(args.size) if args.content is None else open(args.content, "rb").read()
        self.uploads = {}  # key -> (size, {index: bytes})
        self.objects = {}  # key -> bytes
        self.lock = threading.Lock()
        self.tokened = 0
        self.logins = 0
        self.downloads = 0  # over all connections


def answer(req, status, **fields):
    out = {"type": req.get("type"), "operation": req.get("operation"), "direction": "RESPONSE",
           "status": status, "status_msg": "x"}
    out.update(fields)
    return out


def handle(st, sock, cid):
    a = st.args
    while True:
        got = stepwire.recv_packet(sock)
        if got is None:
            return
        req, binary = got
        op = req.get("operation")
        print(f"client_badserver: conn {cid}: <- {req.get('type')} {op}", file=sys.stderr, flush=True)
        if req.get("direction") == "EARTH":
            sock.sendall(stepwire.pack({"operation": "3BODY", "type": "DANGEROUS", "direction": "RESPONSE",
                                        "status": 333, "status_msg": "DO NOT ANSWER!"}))
            continue
        if op == "LOGIN":
            with st.lock:
                st.logins += 1
            tok = base64.b64encode(f"{req.get('username')}.{st.logins}".encode()).decode()
            sock.sendall(stepwire.pack(answer(req, 200, token=tok)))
            continue
        if op == "BYE":
            continue
        if a.mode == "expire":
            with st.lock:
                st.tokened += 1
                n = st.tokened
            if n % a.after == 0:
                sock.sendall(stepwire.pack(answer(req, 403)))
                continue
        key = req.get("key")
        obj = st.objects.get(key, st.data)
        if op == "GET":
            md5 = hashlib.md5(obj).hexdigest()
            if a.mode == "badmd5":
                md5 = "0" * 32
            sock.sendall(stepwire.pack(answer(req, 200, key=key, size=len(obj), block_size=BS,
                                              total_block=(len(obj) + BS - 1) // BS, md5=md5)))
        elif op == "DOWNLOAD":
            with st.lock:
                st.downloads += 1
                n = st.downloads
            if a.mode == "die" and n > a.after:
                return
            i = req.get("block_index")
            blk = obj[i * BS:(i + 1) * BS]
            sock.sendall(stepwire.pack(answer(req, 200, key=key, block_index=i, size=len(blk)), blk))
        elif op == "SAVE":
            size = req.get("size")
            with st.lock:
                st.uploads[key] = (size, {})
            sock.sendall(stepwire.pack(answer(req, 200, key=key, size=size, block_size=BS,
                                              total_block=(size + BS - 1) // BS)))
        elif op == "UPLOAD":
            i = req.get("block_index")
            with st.lock:
                size, blocks = st.uploads[key]
                blocks[i] = binary
                total = (size + BS - 1) // BS
                extra = {}
                if len(blocks) == total:
                    st.objects[key] = b"".join(blocks[j] for j in range(total))
                    extra["md5"] = hashlib.md5(st.objects[key]).hexdigest()
            sock.sendall(stepwire.pack(answer(req, 200, key=key, block_index=i, **extra)))
        else:
            sock.sendall(stepwire.pack(answer(req, 408)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--mode", choices=("ok", "badmd5", "die", "expire"), default="ok")
    ap.add_argument("--after", type=int, default=5)
    ap.add_argument("--size", type=int, default=300000)
    ap.add_argument("--content", help="serve this file's bytes instead of random ones")
    args = ap.parse_args()
    st = State(args)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.rename(tmp, args.port_file)
    cid = 0
    while True:
        s, _ = ls.accept()
        cid += 1
        threading.Thread(target=lambda s=s, c=cid: guarded(st, s, c), daemon=True).start()


def guarded(st, s, c):
    try:
        handle(st, s, c)
    except (OSError, stepwire.WireError):
        pass
    finally:
        s.close()


if __name__ == "__main__":
    main()
