#!/usr/bin/env python3
"""ref_server — a replica of the course reference STEP server, for interop tests.

It behaves like the [ref] parts of STEP-PROTOCOL.md, warts included, because
our client must work against the servers that are deployed, not against a
nicer one:

  * thread per connection; reads one packet, answers it, reads the next, so a
    pipelining client works;
  * files live under ROOT/<user>/<key>, the key used as a file name
    unchecked (so "../x" escapes the user's directory, and a key with "/"
    usually cannot be opened -> internal error);
  * uploads go to ROOT/.tmp/<user>/<key> (a sparse file of the planned size)
    with the received block indices in ROOT/.log/<user>/<key>; the last block
    commits (rename) and the answer carries the MD5, recomputed from disk, as
    is every GET's;
  * blocks of 20480 bytes; LOGIN succeeds when password == md5(username);
    tokens are base64("<user>.<YYYYmmddHHMMSS>.login.<md5(... + salt)>");
  * DATA SAVE stores the whole request object (token included);
  * BYE is never answered; a request of a type the operation does not handle
    (e.g. DATA UPLOAD) is silently ignored;
  * unparsable JSON closes the connection silently;
  * an internal error (size 0, a key that cannot be opened, a token that is
    not base64, wrong JSON types...) gets no answer: the handler "crashes" and
    the connection is left hanging (--internal-error close closes it instead);
  * responses are framed like the reference: non-ASCII unescaped, json_len
    counted in characters.  Requests are read strictly by byte count, so a
    character-counted non-ASCII request is dropped like the reference drops it
    (--tolerant-read reads it like STEP-PROTOCOL.md §1 asks of *our* server).

Safety, unlike the reference: it binds 127.0.0.1 only, and a path that would
leave --root altogether is an internal error instead of a write.

--bug NAME (repeatable) reproduces the broken servers of §8:
  glue             reads a block with recv(65536) calls, so a queued next
                   request is glued onto it: answers 406, then stalls
  race             the connection completing a key drops its final answer
                   (and stalls) when another connection uploaded a block of
                   that key within the last RACE_WINDOW seconds
  wrongop          FILE DELETE and failed DOWNLOAD answers say operation GET;
                   SAVE without size -> 402; UPLOAD to a complete key -> 408;
                   UPLOAD block_index past the end -> 410
  silent           never answers BYE, size 0, a key containing "/", or a
                   token that is not strictly valid base64
  noanswer-commit  never answers the UPLOAD that completes a file (the commit
                   still happens and the connection keeps serving)
"""

import argparse
import base64
import binascii
import itertools
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stepwire  # noqa: E402

BLOCK_SIZE = 20480
TOKEN_SALT = "kjh20)*(1"  # the reference's constant salt
RACE_WINDOW = 1.5  # seconds; see the race bug above
OPERATIONS = ("SAVE", "DELETE", "GET", "UPLOAD", "DOWNLOAD", "BYE", "LOGIN")
TYPES = ("FILE", "DATA", "AUTH")
BUGS = ("glue", "race", "wrongop", "silent", "noanswer-commit")
EARTH_MSG = "DO NOT ANSWER! DO NOT ANSWER! DO NOT ANSWER!"


class NoAnswer(Exception):
    """Drop this request's answer; keep serving the connection."""


class Crash(Exception):
    """The reference's handler would raise here: no answer, connection hangs."""


def reply(operation, status, type_, msg, fields=None, binary=b""):
    obj = dict(fields or {})
    # Same field set as the reference's make_response_packet; these override
    # whatever a stored DATA record carries under the same names.
    obj["operation"] = operation
    obj["direction"] = "RESPONSE"
    obj["status"] = status
    obj["status_msg"] = msg
    obj["type"] = type_
    return obj, binary


def is_int(v):
    # Python's reference accepts bools where it does arithmetic; so do we.
    return isinstance(v, int)


class Store:
    """On-disk state under root.  One lock for all metadata: the replica is
    about behaviour, not speed, and one lock makes "commit exactly once"
    obvious."""

    def __init__(self, root, block_size):
        self.root = os.path.realpath(root)
        self.block_size = block_size
        self.lock = threading.Lock()
        # (user, key) -> {conn_id: last upload time}, for the race bug.
        self.touched = {}

    def _confine(self, p):
        real = os.path.realpath(p)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise Crash(f"path {p!r} leaves the storage root")
        return p

    def path(self, area, user, key):
        """ROOT/[area/]user/key with key unchecked, like the reference; only a
        path leaving ROOT entirely is refused (as an internal error)."""
        if not isinstance(key, str):
            raise Crash(f"key of type {type(key).__name__}")
        if "\0" in key:
            raise Crash("NUL in key")
        parts = [self.root] + ([area] if area else []) + [user, key]
        return self._confine(os.path.join(*parts))

    def file(self, user, key):
        return self.path(None, user, key)

    def tmp(self, user, key):
        return self.path(".tmp", user, key)

    def log(self, user, key):
        return self.path(".log", user, key)

    def data(self, user, key):
        return self.path(".data", user, key)

    def make_user_dirs(self, user):
        for area in (None, ".tmp", ".log", ".data"):
            parts = [self.root] + ([area] if area else []) + [user]
            os.makedirs(self._confine(os.path.join(*parts)), exist_ok=True)

    def received(self, user, key):
        try:
            with open(self.log(user, key)) as f:
                return {int(x) for x in f.read().split() if x.isdigit()}
        except FileNotFoundError:
            return set()


class Handler:
    """One connection: read a packet, answer it, repeat."""

    def __init__(self, server, sock, conn_id):
        self.srv = server
        self.store = server.store
        self.bugs = server.bugs
        self.sock = sock
        self.conn_id = conn_id

    # ---- connection loop -------------------------------------------------

    def run(self):
        try:
            self._loop()
        except Exception as e:  # never let a peer's garbage kill the server
            self.srv.log(f"conn {self.conn_id}: handler error: {e!r}")
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            self.srv.vlog(f"conn {self.conn_id}: closed")

    def _loop(self):
        while True:
            try:
                got = self.read_request()
            except stepwire.BadJSON:
                self.srv.vlog(f"conn {self.conn_id}: unparsable JSON, closing")
                return  # the reference closes silently
            except stepwire.TooBig as e:
                self.srv.log(f"conn {self.conn_id}: {e}; no answer")
                return self.hang()
            except (stepwire.PeerClosed, OSError):
                return
            if got is None:
                return
            req, binary, glued = got
            try:
                answer = self.dispatch(req, binary)
            except NoAnswer as e:
                self.srv.vlog(f"conn {self.conn_id}: no answer ({e})")
                answer = None
            except Exception as e:  # Crash, or any real bug in a handler
                self.srv.log(f"conn {self.conn_id}: internal error, no answer: {e!r}")
                if self.srv.verbose and not isinstance(e, Crash):
                    traceback.print_exc(file=sys.stderr)
                if self.srv.internal_error == "close":
                    return
                return self.hang()
            if answer is not None:
                try:
                    self.send(answer)
                except Crash as e:
                    self.srv.log(f"conn {self.conn_id}: cannot encode answer: {e}")
                    return self.hang()
                except OSError:
                    return
            if glued:
                # The next request's head went into this block: the stream is
                # lost, and the buggy server waits forever for bytes that are
                # not coming.
                self.srv.vlog(f"conn {self.conn_id}: glued packets, stalling")
                return self.hang()

    def read_request(self):
        """(req, binary, glued) or None at EOF."""
        got = stepwire.recv_json(self.sock, tolerant=self.srv.tolerant)
        if got is None:
            return None
        req, blen = got
        if not blen:
            return req, b"", False
        if "glue" not in self.bugs:
            return req, stepwire.recv_exact(self.sock, blen), False
        # The glue bug: big fixed-size recv() calls until at least blen bytes
        # are in, keeping whatever else came along.  The short pause lets
        # queued requests reach the socket buffer, so tests see the bug
        # every time instead of by luck of scheduling.
        time.sleep(0.02)
        data = bytearray()
        while len(data) < blen:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise stepwire.PeerClosed("EOF in binary part")
            data += chunk
        return req, bytes(data), len(data) > blen

    def send(self, answer):
        obj, binary = answer
        try:
            # The reference's framing: unescaped UTF-8, json_len in characters.
            data = stepwire.pack(obj, binary, charcount=True)
        except (UnicodeError, TypeError, ValueError) as e:
            raise Crash(e) from None
        self.sock.sendall(data)
        self.srv.vlog(f"conn {self.conn_id}: -> {obj.get('operation')} {obj.get('status')}")

    def hang(self):
        """No answer ever again: read and discard until the client gives up."""
        self.sock.settimeout(self.srv.hang_timeout)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass

    # ---- validation (STEP-PROTOCOL.md §3, in the reference's order) -----

    def dispatch(self, req, binary):
        if not isinstance(req, dict):
            raise Crash("JSON part is not an object")
        self.srv.vlog(f"conn {self.conn_id}: <- {req.get('type')} {req.get('operation')}")
        if req.get("direction") == "EARTH":
            return reply("3BODY", 333, "DANGEROUS", EARTH_MSG)
        for field in ("operation", "direction", "type"):
            if field not in req:
                return reply("ERROR", 400, "ERROR", f"Compulsory field {field} is missing.")
        op, type_ = req["operation"], req["type"]
        if req["direction"] != "REQUEST":
            return reply("ERROR", 407, "ERROR", 'Wrong direction. Should be "REQUEST"')
        if op not in OPERATIONS:
            return reply("ERROR", 408, "ERROR", f"Operation {op} is not allowed")
        if type_ not in TYPES:
            return reply("ERROR", 409, "ERROR", f"Type {type_} is not allowed")
        if op == "BYE":
            raise NoAnswer("BYE")  # the reference never answers BYE
        if op == "LOGIN":
            return self.login(req, type_)
        if "token" not in req:
            return reply(op, 403, "AUTH", "No token.")
        user = self.check_token(req["token"])
        if user is None:
            return reply(op, 403, "AUTH", "Token is wrong.")
        if "silent" in self.bugs and isinstance(req.get("key"), str) and "/" in req["key"]:
            raise Crash("silent bug: key with '/'")
        with self.store.lock:
            self.store.make_user_dirs(user)
            if type_ == "DATA":
                return self.data_op(user, op, req)
            if type_ == "FILE":
                return self.file_op(user, op, req, binary)
        raise NoAnswer(f"{type_} {op} is handled by nothing")

    def login(self, req, type_):
        if type_ != "AUTH":
            return reply("LOGIN", 409, "AUTH", "Type of LOGIN has to be AUTH.")
        for field in ("username", "password"):
            if field not in req:
                return reply("LOGIN", 410, "AUTH", f'"{field}" has to be a field for LOGIN')
        username, password = req["username"], req["password"]
        if not isinstance(username, str) or not isinstance(password, str):
            raise Crash("username/password is not a string")
        if stepwire.md5_hex(username) != password.lower():
            return reply("LOGIN", 401, "AUTH", "Password error for login.")
        user_str = f"{username.replace('.', '_')}.{time.strftime('%Y%m%d%H%M%S')}.login"
        sig = stepwire.md5_hex(user_str + TOKEN_SALT)
        token = base64.b64encode(f"{user_str}.{sig}".encode("utf-8")).decode("ascii")
        return reply("LOGIN", 200, "AUTH", "Login successfully", {"token": token})

    def check_token(self, token):
        """The token's user, or None (-> 403).  Undecodable tokens crash the
        reference's handler, hence Crash."""
        if not isinstance(token, str):
            raise Crash("token is not a string")
        try:
            # The reference's b64decode is lenient (skips junk characters);
            # the silent bug is about tokens that are not base64 at all.
            raw = base64.b64decode(token, validate="silent" in self.bugs)
            text = raw.decode("utf-8")
        except (binascii.Error, ValueError) as e:
            raise Crash(f"token is not base64: {e}") from None
        parts = text.split(".")
        if len(parts) != 4:
            return None
        if stepwire.md5_hex(".".join(parts[:3]) + TOKEN_SALT) != parts[3].lower():
            return None
        return parts[0]

    # ---- DATA ------------------------------------------------------------

    def data_op(self, user, op, req):
        st = self.store
        if op == "SAVE":
            key = req["key"] if "key" in req else str(uuid.uuid4())
            path = st.data(user, key)
            if os.path.exists(path):
                return reply("SAVE", 402, "DATA", f'This key "{key}" is existing.')
            try:
                with open(path, "w") as f:
                    json.dump(req, f)  # the whole request, token and all
            except OSError as e:
                raise Crash(e) from None
            return reply("SAVE", 200, "DATA", f'Data is saved with key "{key}"', {"key": key})
        if op in ("GET", "DELETE"):
            if "key" not in req:
                return reply(op, 410, "DATA", f'Field "key" is missing for DATA {op}.')
            key = req["key"]
            path = st.data(user, key)
            if not os.path.exists(path):
                return reply(op, 404, "DATA", f"The key {key} is not existing.")
            try:
                if op == "DELETE":
                    os.remove(path)
                    return reply(op, 200, "DATA", f'The "key" {key} is deleted.', {"key": key})
                with open(path) as f:
                    record = json.load(f)
            except (OSError, ValueError) as e:
                raise Crash(e) from None
            if not isinstance(record, dict):
                raise Crash("stored record is not an object")
            return reply("GET", 200, "DATA", "OK", record)
        raise NoAnswer(f"DATA {op} is handled by nothing")

    # ---- FILE ------------------------------------------------------------

    def file_op(self, user, op, req, binary):
        handler = {
            "SAVE": self.file_save, "UPLOAD": self.file_upload, "GET": self.file_get,
            "DOWNLOAD": self.file_download, "DELETE": self.file_delete,
        }.get(op)
        if handler is None:
            raise NoAnswer(f"FILE {op} is handled by nothing")
        try:
            return handler(user, req, binary)
        except OSError as e:
            raise Crash(e) from None

    def file_save(self, user, req, _binary):
        st = self.store
        key = req["key"] if "key" in req else str(uuid.uuid4())
        if os.path.exists(st.file(user, key)):
            return reply("SAVE", 402, "FILE", f'This "key" {key} is existing.')
        if "size" not in req:
            code = 402 if "wrongop" in self.bugs else 410
            return reply("SAVE", code, "FILE", 'This file "size" has to be included')
        size = req["size"]
        if not is_int(size):
            raise Crash(f"size of type {type(size).__name__}")
        tmp, log = st.tmp(user, key), st.log(user, key)
        # A SAVE for a key in progress starts it over (the reference truncates
        # both files); size <= 0 leaves the empty tmp file behind and crashes,
        # exactly where the reference's seek(size - 1) fails.
        with open(tmp, "wb") as f:
            if size <= 0:
                raise Crash(f"size {size}")
            f.truncate(size)
        open(log, "w").close()
        st.touched.pop((user, key), None)
        total = math.ceil(size / st.block_size)
        return reply("SAVE", 200, "FILE", "This is the upload plan.", {
            "key": key, "size": size, "total_block": total, "block_size": st.block_size})

    def file_upload(self, user, req, binary):
        st = self.store
        if req.get("key") is None:
            return reply("UPLOAD", 410, "FILE", "Missing key.")
        key = req["key"]
        fpath, tmp = st.file(user, key), st.tmp(user, key)
        if os.path.exists(fpath):
            code = 408 if "wrongop" in self.bugs else 402
            return reply("UPLOAD", code, "FILE", "File already complete.")
        if not os.path.exists(tmp):
            return reply("UPLOAD", 408, "FILE", "Upload not started.")
        if "block_index" not in req:
            return reply("UPLOAD", 410, "FILE", "Missing block_index.")
        index = req["block_index"]
        if not is_int(index):
            raise Crash(f"block_index of type {type(index).__name__}")
        size = os.path.getsize(tmp)
        total = math.ceil(size / st.block_size)
        if index >= total:
            code = 410 if "wrongop" in self.bugs else 405
            return reply("UPLOAD", code, "FILE", "Invalid block_index.")
        if index < 0:
            return reply("UPLOAD", 410, "FILE", "Invalid block_index.")
        want = st.block_size if index < total - 1 else size - st.block_size * (total - 1)
        if len(binary) != want:
            return reply("UPLOAD", 406, "FILE",
                         f"The block size is wrong: {len(binary)} bytes, expected {want}.")
        with open(tmp, "r+b") as f:
            f.seek(st.block_size * index)
            f.write(binary)
        received = st.received(user, key)
        if index not in received:
            with open(st.log(user, key), "a") as f:
                f.write(f"{index}\n")
            received.add(index)
        now = time.monotonic()
        touched = st.touched.setdefault((user, key), {})
        others = [c for c, t in touched.items() if c != self.conn_id and now - t < RACE_WINDOW]
        touched[self.conn_id] = now
        fields = {"key": key, "block_index": index}
        if len(received) < total:
            return reply("UPLOAD", 200, "FILE", f"Block {index} saved.", fields)
        # Complete: commit exactly once (we hold the store lock), then MD5 from disk.
        os.replace(tmp, fpath)
        os.remove(st.log(user, key))
        st.touched.pop((user, key), None)
        fields["md5"] = stepwire.file_md5(fpath)
        if "race" in self.bugs and others:
            raise Crash(f"race bug: final answer dropped (connections {others} also uploading)")
        if "noanswer-commit" in self.bugs:
            raise NoAnswer("noanswer-commit bug")
        return reply("UPLOAD", 200, "FILE", "File complete.", fields)

    def _lookup(self, op, user, req):
        """Common GET/DOWNLOAD checks: (path, None) or (None, error reply)."""
        st = self.store
        fail_op = "GET" if (op == "DOWNLOAD" and "wrongop" in self.bugs) else op
        if "key" not in req:
            return None, reply(fail_op, 410, "FILE", f'Field "key" is missing for FILE {op}.')
        key = req["key"]
        fpath = st.file(user, key)
        if not os.path.exists(fpath):
            if os.path.exists(st.tmp(user, key)):
                return None, reply(fail_op, 404, "FILE",
                                   f"The key {key} is not completely uploaded.")
            return None, reply(fail_op, 404, "FILE", f"The key {key} is not existing.")
        return fpath, None

    def file_get(self, user, req, _binary):
        fpath, err = self._lookup("GET", user, req)
        if err:
            return err
        size = os.path.getsize(fpath)
        bs = self.store.block_size
        return reply("GET", 200, "FILE", "OK. This is the download plan.", {
            "key": req["key"], "size": size, "total_block": math.ceil(size / bs),
            "block_size": bs, "md5": stepwire.file_md5(fpath)})

    def file_download(self, user, req, _binary):
        fpath, err = self._lookup("DOWNLOAD", user, req)
        if err:
            return err
        fail_op = "GET" if "wrongop" in self.bugs else "DOWNLOAD"
        if "block_index" not in req:
            return reply(fail_op, 410, "FILE", 'The "block_index" is compulsory.')
        index = req["block_index"]
        if not is_int(index):
            raise Crash(f"block_index of type {type(index).__name__}")
        bs = self.store.block_size
        size = os.path.getsize(fpath)
        if index >= math.ceil(size / bs):
            return reply(fail_op, 410, "FILE", 'The "block_index" exceed the max index.')
        if index < 0:
            return reply(fail_op, 410, "FILE", 'The "block_index" should >= 0.')
        with open(fpath, "rb") as f:
            f.seek(bs * index)
            data = f.read(min(bs, size - bs * index))
        return reply("DOWNLOAD", 200, "FILE", "An available block.", {
            "block_index": index, "key": req["key"], "size": len(data)}, data)

    def file_delete(self, user, req, _binary):
        st = self.store
        op = "GET" if "wrongop" in self.bugs else "DELETE"
        if "key" not in req:
            return reply(op, 410, "FILE", 'Field "key" is missing for FILE delete.')
        key = req["key"]
        fpath, tmp = st.file(user, key), st.tmp(user, key)
        if not os.path.exists(fpath):
            if os.path.exists(tmp):
                for p in (tmp, st.log(user, key)):
                    try:
                        os.remove(p)
                    except FileNotFoundError:
                        pass
                return reply(op, 404, "FILE", f'The "key" {key} is not completely uploaded. '
                             "The tmp files are deleted.")
            return reply(op, 404, "FILE", f'The "key" {key} is not existing.')
        os.remove(fpath)
        return reply(op, 200, "FILE", f'The "key" {key} is deleted.', {"key": key})


class Server:
    def __init__(self, args):
        self.store = Store(args.root, args.block_size)
        self.bugs = frozenset(args.bug or ())
        self.tolerant = args.tolerant_read
        self.internal_error = args.internal_error
        self.hang_timeout = args.hang_timeout
        self.verbose = args.verbose
        self._ids = itertools.count(1)
        self._log_lock = threading.Lock()

    def log(self, msg):
        with self._log_lock:
            print(f"ref_server: {msg}", file=sys.stderr, flush=True)

    def vlog(self, msg):
        if self.verbose:
            self.log(msg)

    def serve(self, lsock):
        while True:
            try:
                sock, _addr = lsock.accept()
            except OSError as e:
                self.log(f"accept: {e}")
                time.sleep(0.05)  # e.g. EMFILE: do not spin
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            h = Handler(self, sock, next(self._ids))
            threading.Thread(target=h.run, daemon=True).start()


def write_port_file(path, port):
    # Write then rename, so a polling reader never sees a partial number.
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


class _Terminate(BaseException):
    pass


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=1379,
                    help="TCP port on 127.0.0.1 (0 = pick a free one; default 1379)")
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--root", required=True, help="storage directory (created if missing)")
    ap.add_argument("--bug", action="append", choices=BUGS, metavar="NAME",
                    help=f"reproduce a broken server, repeatable: {', '.join(BUGS)}")
    ap.add_argument("--block-size", type=int, default=BLOCK_SIZE,
                    help=f"bytes per block in plans (default {BLOCK_SIZE}, the reference's)")
    ap.add_argument("--tolerant-read", action="store_true",
                    help="read character-counted non-ASCII requests (the reference drops them)")
    ap.add_argument("--internal-error", choices=("hang", "close"), default="hang",
                    help="after an internal error: keep the connection open and never "
                         "answer (default), or close it")
    ap.add_argument("--hang-timeout", type=float, default=600.0,
                    help="seconds a hanging connection is kept before closing (default 600)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)
    if args.block_size <= 0:
        ap.error("--block-size must be positive")

    os.makedirs(args.root, exist_ok=True)
    server = Server(args)

    def on_signal(signum, _frame):
        raise _Terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))  # never any other address
    lsock.listen(64)
    port = lsock.getsockname()[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve(lsock)
    except _Terminate:
        pass
    finally:
        lsock.close()
    # Handler threads are daemons: they go with the process.
    return 0


if __name__ == "__main__":
    sys.exit(main())
