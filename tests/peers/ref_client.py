#!/usr/bin/env python3
"""ref_client — the STEP clients seen in the wild (STEP-PROTOCOL.md §6, §8).

Integration tests run it against our server to prove that deployed clients
keep working.  Each action connects to --host/--port, logs in as --user with
password field md5(--password) (the course rule wants --password == --user,
which is the default), does its job and exits 0 only when the result is
verified; otherwise it prints why on stderr and exits 1 (2 for usage).

Actions:
  upload       (default) SAVE a plan for --file under --key (default: the file
               name), UPLOAD every block, then GET and compare the server's MD5
               with the local one.  The completing UPLOAD's answer must carry
               the same MD5, and exactly one answer may carry it (commit once).
  download     GET the plan of --key, DOWNLOAD every block into --out (written
               to a temporary name, renamed once size and MD5 match).
  data-save    DATA SAVE with --key (optional) and --field NAME=VALUE ...
  data-get     DATA GET --key; prints the response
  data-delete  DATA DELETE --key
  ping         direction EARTH; expects status 333

Modes (--mode) for upload and download:
  simple          the paper's client: one request at a time on one connection
  pipeline        --window (4) threads share one socket, up to --window
                  requests in flight, responses matched in order
  conn-per-block  every block on a new connection with a new LOGIN,
                  --parallel (4) connections at once

Quirks of wild clients, on request:
  --extra-fields  block_size and size on UPLOAD, token: null on LOGIN
  --bye           send BYE (type AUTH) before closing; any answer, or none
                  within a short wait, is fine
  --charcount     frame requests like reference peers: non-ASCII unescaped,
                  json_len counted in characters
"""

import argparse
import collections
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stepwire  # noqa: E402
from stepwire import StepError, WireError  # noqa: E402

BYE_WAIT = 0.3  # seconds to wait for an (optional) answer to BYE


class Failure(Exception):
    """The action did not verify; the message says why."""


class Session:
    """Opens logged-in connections with the options every action shares."""

    def __init__(self, args):
        self.args = args

    def open(self):
        a = self.args
        c = stepwire.Client(a.host, a.port, timeout=a.timeout, charcount=a.charcount)
        c.connect()
        try:
            c.login(a.user, a.password, extra={"token": None} if a.extra_fields else None)
        except BaseException:
            c.close()
            raise
        return c

    def close(self, c):
        """BYE (if asked), then close.  A server may answer BYE, ignore it or
        hang up: all three are fine."""
        try:
            if self.args.bye and c.sock is not None:
                c.send(c.make("AUTH", "BYE"))
                c.settimeout(min(BYE_WAIT, self.args.timeout))
                try:
                    c.recv()
                except (OSError, WireError):
                    pass
        except OSError:
            pass
        finally:
            c.close()


def check(resp, what, status=200):
    if not isinstance(resp, dict):
        raise Failure(f"{what}: response is not a JSON object")
    if resp.get("status") != status:
        raise StepError(what, resp)
    return resp


class Pipeline:
    """Several threads share one connection; responses come back in request
    order, so a FIFO of waiters pairs each response with its request.

    The waiter is queued and the packet sent under one lock, so queue order
    is wire order.  One reader thread receives and wakes the oldest waiter.
    """

    class Waiter:
        def __init__(self):
            self.done = threading.Event()
            self.response = None
            self.error = None

    def __init__(self, client, window, timeout):
        self.client = client
        self.timeout = timeout
        self.slots = threading.BoundedSemaphore(window)
        self.send_lock = threading.Lock()
        self.cv = threading.Condition()
        self.pending = collections.deque()
        self.closed = False
        self.error = None
        self.reader = threading.Thread(target=self._read_loop, daemon=True)
        self.reader.start()

    def call(self, obj, binary=b""):
        if not self.slots.acquire(timeout=self.timeout):
            raise TimeoutError("no free pipeline slot")
        try:
            w = self.Waiter()
            with self.send_lock:
                with self.cv:
                    if self.error:
                        raise self.error
                    self.pending.append(w)
                    self.cv.notify()
                self.client.send(obj, binary)
            # The reader's own socket timeout bounds this wait; the extra
            # margin only covers a reader that died without waking us.
            if not w.done.wait(self.timeout * 2 + 1):
                raise TimeoutError("no response in time")
            if w.error:
                raise w.error
            return w.response
        finally:
            self.slots.release()

    def _read_loop(self):
        while True:
            with self.cv:
                while not self.pending and not self.closed:
                    self.cv.wait()
                if self.closed and not self.pending:
                    return
            try:
                resp = self.client.recv()
            except Exception as e:  # timeout, EOF, bad packet: fail everyone
                with self.cv:
                    self.error = e
                    waiters = list(self.pending)
                    self.pending.clear()
                for w in waiters:
                    w.error = e
                    w.done.set()
                return
            with self.cv:
                w = self.pending.popleft()
            w.response = resp
            w.done.set()

    def close(self):
        with self.cv:
            self.closed = True
            self.cv.notify()
        self.reader.join(self.timeout + 1)


def run_blocks(args, session, ctl, count, make, handle):
    """Send block requests 0..count-1 in the chosen mode.

    make(i) -> (request object without token, binary); handle(i, (obj, bin))
    checks one response.  ctl is the logged-in control connection (simple and
    pipeline modes use it; conn-per-block opens its own).
    """
    if args.mode == "simple":
        for i in range(count):
            obj, binary = make(i)
            obj["token"] = ctl.token
            handle(i, ctl.request(obj, binary))
        return

    indices = collections.deque(range(count))
    lock = threading.Lock()
    errors = []

    if args.mode == "pipeline":
        pipe = Pipeline(ctl, args.window, args.timeout)
        nthreads = args.window

        def one(i):
            obj, binary = make(i)
            obj["token"] = ctl.token
            handle(i, pipe.call(obj, binary))
    else:  # conn-per-block
        pipe = None
        nthreads = args.parallel

        def one(i):
            c = session.open()
            try:
                obj, binary = make(i)
                obj["token"] = c.token
                handle(i, c.request(obj, binary))
            finally:
                session.close(c)

    def worker():
        while True:
            with lock:
                if errors or not indices:
                    return
                i = indices.popleft()
            try:
                one(i)
            except Exception as e:
                with lock:
                    errors.append(e)
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, nthreads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if pipe is not None:
        pipe.close()
    if errors:
        raise errors[0]


def request_obj(type_, op, **fields):
    obj = {"type": type_, "operation": op, "direction": "REQUEST"}
    obj.update(fields)
    return obj


def do_upload(args, session):
    path = args.file
    size = os.path.getsize(path)
    key = args.key if args.key is not None else os.path.basename(path)
    local_md5 = stepwire.file_md5(path)

    ctl = session.open()
    try:
        plan, _ = ctl.call("FILE", "SAVE", key=key, size=size, expect=None)
        check(plan, f"SAVE '{key}'")
        key = plan.get("key", key)
        bs, total = plan.get("block_size"), plan.get("total_block")
        if not (isinstance(bs, int) and isinstance(total, int) and bs > 0):
            raise Failure(f"SAVE '{key}': bad plan {plan}")
        if total != -(-size // bs):
            raise Failure(f"SAVE '{key}': total_block {total} != ceil({size}/{bs})")

        fd = os.open(path, os.O_RDONLY)
        finals = []
        lock = threading.Lock()

        def make(i):
            data = os.pread(fd, min(bs, size - i * bs), i * bs)
            fields = {"key": key, "block_index": i}
            if args.extra_fields:
                fields.update(block_size=bs, size=size)
            return request_obj("FILE", "UPLOAD", **fields), data

        def handle(i, got):
            resp = check(got[0], f"UPLOAD '{key}' block {i}")
            if resp.get("block_index") != i:
                raise Failure(f"UPLOAD block {i}: answer is for block {resp.get('block_index')}")
            if "md5" in resp:
                with lock:
                    finals.append(resp["md5"])

        try:
            run_blocks(args, session, ctl, total, make, handle)
        finally:
            os.close(fd)

        # The paper's last step: ask for the object and compare MD5s.  In
        # conn-per-block mode the control connection sat idle; use a new one
        # like such a client does for every request.
        if args.mode == "conn-per-block":
            session.close(ctl)
            ctl = session.open()
        info, _ = ctl.call("FILE", "GET", key=key, expect=None)
        check(info, f"GET '{key}'")
        session.close(ctl)
        ctl = None
    finally:
        if ctl is not None:
            ctl.close()

    if info.get("md5") != local_md5 or info.get("size") != size:
        raise Failure(f"'{key}': server has md5 {info.get('md5')} size {info.get('size')}, "
                      f"local file md5 {local_md5} size {size}")
    if len(finals) != 1:
        raise Failure(f"'{key}': {len(finals)} UPLOAD answers carried an md5, expected exactly 1")
    if finals[0] != local_md5:
        raise Failure(f"'{key}': final UPLOAD answer md5 {finals[0]} != local {local_md5}")
    say(args, f"uploaded '{key}' ({size} bytes, {total} blocks, mode {args.mode}), "
              f"md5 {local_md5} verified")


def do_download(args, session):
    key = args.key
    out = args.out
    tmp = f"{out}.part.{os.getpid()}"
    ctl = session.open()
    try:
        info, _ = ctl.call("FILE", "GET", key=key, expect=None)
        check(info, f"GET '{key}'")
        size, bs, total, md5 = (info.get(k) for k in ("size", "block_size", "total_block", "md5"))
        if not all(isinstance(v, int) for v in (size, bs, total)) or bs <= 0:
            raise Failure(f"GET '{key}': bad plan {info}")
        if total != -(-size // bs):
            raise Failure(f"GET '{key}': total_block {total} != ceil({size}/{bs})")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            def make(i):
                return request_obj("FILE", "DOWNLOAD", key=key, block_index=i), b""

            def handle(i, got):
                resp, data = got
                check(resp, f"DOWNLOAD '{key}' block {i}")
                want = min(bs, size - i * bs)
                if resp.get("block_index") != i or len(data) != want or resp.get("size") != want:
                    raise Failure(f"DOWNLOAD block {i}: got block {resp.get('block_index')} "
                                  f"of {len(data)} bytes (size field {resp.get('size')}), "
                                  f"expected {want}")
                os.pwrite(fd, data, i * bs)

            run_blocks(args, session, ctl, total, make, handle)
        finally:
            os.close(fd)
        session.close(ctl)
        ctl = None
        got_md5 = stepwire.file_md5(tmp)
        if got_md5 != md5 or os.path.getsize(tmp) != size:
            raise Failure(f"'{key}': downloaded md5 {got_md5}, server said {md5}")
        os.replace(tmp, out)
        tmp = None
    finally:
        if ctl is not None:
            ctl.close()
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    say(args, f"downloaded '{key}' to '{out}' ({size} bytes), md5 {md5} verified")


def parse_field(text):
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=VALUE")
    try:
        return name, json.loads(value)  # numbers, true, {...} stay typed
    except ValueError:
        return name, value


def do_data(args, session):
    op = {"data-save": "SAVE", "data-get": "GET", "data-delete": "DELETE"}[args.action]
    fields = dict(args.field or [])
    if args.key is not None:
        fields["key"] = args.key
    c = session.open()
    try:
        resp, _ = c.call("DATA", op, expect=None, **fields)
        session.close(c)
    finally:
        c.close()
    print(json.dumps(resp, sort_keys=True))
    check(resp, f"DATA {op}", args.expect_status or 200)


def do_ping(args, _session):
    with stepwire.Client(args.host, args.port, args.timeout, args.charcount) as c:
        resp, _ = c.request({"direction": "EARTH"})
    print(json.dumps(resp, sort_keys=True))
    check(resp, "EARTH", args.expect_status or 333)


def say(args, msg):
    if not args.quiet:
        print(f"ref_client: {msg}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", nargs="?", default="upload",
                    choices=("upload", "download", "data-save", "data-get", "data-delete", "ping"))
    ap.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, required=True, help="server port")
    ap.add_argument("--user", default="stepuser", help="username (default stepuser)")
    ap.add_argument("--password", help="password, sent as its md5 hex (default: the username, "
                    "which is what the course rule accepts)")
    ap.add_argument("--file", help="file to upload")
    ap.add_argument("--key", help="object key (upload default: the file's name)")
    ap.add_argument("--out", help="where download writes the object")
    ap.add_argument("--mode", choices=("simple", "pipeline", "conn-per-block"), default="simple")
    ap.add_argument("--window", type=int, default=4, help="pipeline: requests in flight (4)")
    ap.add_argument("--parallel", type=int, default=4,
                    help="conn-per-block: connections at once (4)")
    ap.add_argument("--extra-fields", action="store_true",
                    help="block_size and size on UPLOAD, token: null on LOGIN")
    ap.add_argument("--bye", action="store_true", help="send BYE before closing connections")
    ap.add_argument("--charcount", action="store_true",
                    help="frame requests character-counted with non-ASCII unescaped")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds for connect and every send/receive (default 10)")
    ap.add_argument("--field", action="append", type=parse_field, metavar="NAME=VALUE",
                    help="data-save: a data field (VALUE parsed as JSON when it can be)")
    ap.add_argument("--expect-status", type=int,
                    help="data-*/ping: succeed only on this status (default 200, ping 333)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no success message")
    args = ap.parse_args(argv)
    if args.password is None:
        args.password = args.user
    if args.action == "upload" and not args.file:
        ap.error("upload needs --file")
    if args.action == "download" and not (args.key and args.out):
        ap.error("download needs --key and --out")
    if args.action in ("data-get", "data-delete") and args.key is None:
        ap.error(f"{args.action} needs --key")
    if args.window < 1 or args.parallel < 1 or args.timeout <= 0:
        ap.error("--window, --parallel and --timeout must be positive")

    session = Session(args)
    action = {"upload": do_upload, "download": do_download, "ping": do_ping}.get(
        args.action, do_data)
    try:
        action(args, session)
    except (Failure, StepError, WireError, OSError) as e:
        if isinstance(e, TimeoutError):  # an OSError: check it first
            why = f"no answer within {args.timeout:g} s"
        elif isinstance(e, stepwire.PeerClosed):
            why = f"server closed the connection ({e})"
        else:
            why = str(e) or type(e).__name__
        print(f"ref_client: {args.action} failed: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
