#!/usr/bin/env python3
"""stepwire — STEP framing shared by the test peers (Python 3 stdlib only).

A STEP packet is  json_len (u32 BE) | bin_len (u32 BE) | JSON text | binary.
Deployed reference peers count json_len in *characters* of a JSON text written
as unescaped UTF-8; everyone else counts bytes of ASCII-escaped JSON.  This
module writes either form on request (pack(charcount=...)) and reads both
(recv_packet(tolerant=True)), as STEP-PROTOCOL.md §1 prescribes.

It also carries a small blocking Client for the peer programs.  Every socket
it creates has a timeout: a test peer must fail, never hang, when the other
side stops answering.

Run as a program: --help prints this, --self-test checks the framing
round trip over a socketpair.
"""

import codecs
import hashlib
import json
import socket
import struct
import sys
import threading

HEADER = struct.Struct("!II")
DEFAULT_TIMEOUT = 10.0
# Limits for what a *peer* is willing to buffer.  The reference trusts the
# header; we only read what actually arrives, but refuse absurd sizes so a
# garbage header cannot make a test peer eat the machine's memory.
MAX_JSON = 64 << 20
MAX_BIN = 256 << 20


class WireError(Exception):
    """The byte stream is not a valid STEP packet sequence."""


class PeerClosed(WireError):
    """The peer closed the connection (mid-packet, or when an answer was due)."""


class BadJSON(WireError):
    """The JSON part did not parse (even after the character-count retry)."""


class TooBig(WireError):
    """A header announced more than we are willing to buffer."""


class StepError(Exception):
    """A response arrived but its status is not the one the caller wanted."""

    def __init__(self, what, response):
        self.response = response if isinstance(response, dict) else {}
        self.status = self.response.get("status")
        msg = self.response.get("status_msg", "")
        super().__init__(f"{what}: status {self.status} {msg!r}")


def md5_hex(data):
    """Lower-case hex MD5 of bytes or of a str (UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.md5(data).hexdigest()


def file_md5(path, bufsize=1 << 20):
    """Lower-case hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(bufsize)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


def encode_json(obj, charcount=False):
    """Return (json_len, json_bytes) for obj.

    charcount=False: ASCII-escaped JSON, json_len = byte count (what our own
    programs must send).  charcount=True: the reference peers' framing, JSON
    with non-ASCII left unescaped, json_len = number of characters.
    """
    if charcount:
        text = json.dumps(obj, ensure_ascii=False)
        # surrogatepass: a lone surrogate that arrived as "\\udXXX" can still
        # be echoed; the reference would crash here, callers decide.
        return len(text), text.encode("utf-8", "surrogatepass")
    data = json.dumps(obj, ensure_ascii=True).encode("ascii")
    return len(data), data


def pack(obj, binary=b"", charcount=False):
    """One complete STEP packet (header, JSON, binary) as bytes."""
    jlen, jbytes = encode_json(obj, charcount)
    binary = bytes(binary or b"")
    return HEADER.pack(jlen, len(binary)) + jbytes + binary


def recv_exact(sock, n, started=True):
    """Read exactly n bytes.

    Raises PeerClosed on EOF.  With started=False an EOF before the first byte
    returns None instead (a clean close between packets).
    """
    parts = []
    got = 0
    while got < n:
        # Bounded chunks: never ask the kernel for a huge n at once, and never
        # read past n (that would steal the next packet's bytes).
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if got == 0 and not started:
                return None
            raise PeerClosed(f"connection closed after {got} of {n} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _parse(raw):
    obj = json.loads(raw.decode("utf-8"))
    return obj


def _read_charcounted(sock, raw, jlen):
    """Continue reading a JSON part whose sender counted characters.

    raw holds the jlen bytes already read.  Each missing character is at least
    one byte, so asking for (jlen - chars_so_far) more bytes can never read
    past the end of the JSON part; repeat until the text holds exactly jlen
    code points and no UTF-8 sequence is left half-read.
    """
    dec = codecs.getincrementaldecoder("utf-8")()
    buf = bytearray(raw)
    try:
        chars = len(dec.decode(raw))
        while True:
            pending = len(dec.getstate()[0])
            if chars == jlen and not pending:
                break
            if chars >= jlen:
                raise BadJSON("JSON part does not hold json_len characters")
            if len(buf) > 4 * jlen:
                raise BadJSON("JSON part longer than 4 bytes per character")
            more = recv_exact(sock, jlen - chars)
            buf += more
            chars += len(dec.decode(more))
        return _parse(bytes(buf))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadJSON(f"unparsable JSON after character-count retry: {e}") from None


def recv_json(sock, tolerant=True, max_json=MAX_JSON, max_bin=MAX_BIN):
    """Read a packet's header and JSON part; leave the binary part unread.

    Returns (obj, bin_len), or None on a clean EOF before a header.
    tolerant=True applies the §1 rule: if the json_len bytes do not parse and
    contain non-ASCII, the sender counted characters, so keep reading.
    tolerant=False behaves like the reference server: parse exactly json_len
    bytes or fail (BadJSON).
    """
    head = recv_exact(sock, HEADER.size, started=False)
    if head is None:
        return None
    jlen, blen = HEADER.unpack(head)
    if jlen > max_json or blen > max_bin:
        raise TooBig(f"json_len {jlen} / bin_len {blen} over the peer's limits")
    raw = recv_exact(sock, jlen)
    try:
        return _parse(raw), blen
    except (UnicodeDecodeError, ValueError):
        if not tolerant or raw.isascii():
            raise BadJSON(f"unparsable JSON part ({jlen} bytes)") from None
    return _read_charcounted(sock, raw, jlen), blen


def recv_packet(sock, tolerant=True, max_json=MAX_JSON, max_bin=MAX_BIN):
    """Read one whole packet: (obj, binary), or None on a clean EOF."""
    got = recv_json(sock, tolerant, max_json, max_bin)
    if got is None:
        return None
    obj, blen = got
    binary = recv_exact(sock, blen) if blen else b""
    return obj, binary


class Client:
    """A blocking STEP connection for test peers.

    All operations use the timeout given at construction (socket.timeout,
    i.e. TimeoutError, propagates).  request() is send() then recv(); the
    split halves exist for pipelining.  Not thread-safe by itself except that
    send() serialises whole packets, so several threads may send while one
    thread receives.
    """

    def __init__(self, host="127.0.0.1", port=1379, timeout=DEFAULT_TIMEOUT, charcount=False):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.charcount = charcount
        self.sock = None
        self.token = None
        self._send_lock = threading.Lock()

    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.settimeout(self.timeout)
        # Many small request packets: do not let Nagle delay them.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self):
        if self.sock is None:
            self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def settimeout(self, timeout):
        self.timeout = timeout
        if self.sock is not None:
            self.sock.settimeout(timeout)

    def send_raw(self, data):
        with self._send_lock:
            self.sock.sendall(data)

    def send(self, obj, binary=b""):
        self.send_raw(pack(obj, binary, self.charcount))

    def recv(self):
        """Next response as (obj, binary); PeerClosed if the server hung up."""
        got = recv_packet(self.sock, tolerant=True)
        if got is None:
            raise PeerClosed("connection closed by server")
        return got

    def request(self, obj, binary=b""):
        self.send(obj, binary)
        return self.recv()

    def make(self, type_, operation, **fields):
        """A request object carrying our token (if logged in) and fields."""
        obj = {"type": type_, "operation": operation, "direction": "REQUEST"}
        if self.token is not None:
            obj["token"] = self.token
        obj.update(fields)
        return obj

    def call(self, type_, operation, binary=b"", expect=200, **fields):
        """Send one request, return (obj, binary); StepError unless status == expect
        (expect=None accepts any status)."""
        resp, data = self.request(self.make(type_, operation, **fields), binary)
        if not isinstance(resp, dict):
            raise WireError(f"{operation}: response is not a JSON object")
        if expect is not None and resp.get("status") != expect:
            raise StepError(f"{type_} {operation}", resp)
        return resp, data

    def login(self, username, password, extra=None):
        """LOGIN with password = md5 hex of the password; stores and returns the token."""
        obj = {"type": "AUTH", "operation": "LOGIN", "direction": "REQUEST",
               "username": username, "password": md5_hex(password)}
        if extra:
            obj.update(extra)
        resp, _ = self.request(obj)
        if not isinstance(resp, dict) or resp.get("status") != 200:
            raise StepError("AUTH LOGIN", resp)
        token = resp.get("token")
        if not isinstance(token, str):
            raise WireError("LOGIN answer carries no token")
        self.token = token
        return token


def self_test():
    """Round-trip both framings through a socketpair, back to back, so that a
    reader that over- or under-reads breaks the packet after it."""
    samples = [
        {"key": "plain"},
        {"key": "résumé.pdf", "n": 1},
        {"key": "日本語のファイル名", "emoji": "\U0001f600" * 5},
        {"key": "é" * 1000 + "\U0001f600"},
        {"key": ""},
    ]
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    try:
        for charcount in (False, True):
            for obj in samples:
                payload = bytes(range(256)) * 3
                a.sendall(pack(obj, payload, charcount) + pack({"next": 1}, b"z", charcount))
                got = recv_packet(b)
                assert got == (obj, payload), (charcount, obj, got)
                assert recv_packet(b) == ({"next": 1}, b"z")
        # A strict reader drops a character-counted non-ASCII packet.
        a.sendall(pack({"key": "é"}, b"", True))
        try:
            recv_packet(b, tolerant=False)
            raise AssertionError("strict read accepted a character-counted packet")
        except BadJSON:
            pass
    finally:
        a.close()
        b.close()
    print("stepwire: self-test passed")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        self_test()
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] not in ("-h", "--help"):
        print("usage: stepwire.py [--help | --self-test]  (a library; import it)", file=sys.stderr)
        sys.exit(2)
    print(__doc__.strip())
