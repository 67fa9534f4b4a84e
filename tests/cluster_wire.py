#!/usr/bin/env python3
"""cluster_wire.py - scenarios of t1150: two stepd instances on one PostgreSQL database and
one shared root, driven over the raw STEP protocol (server_wire.py's client).

Usage: cluster_wire.py SCENARIO PORT_A PORT_B [ARGS...]   (exit 0 = pass, messages on stderr)
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_wire import (DEFAULT_BS, Conn, Fail, check, download, expect, login, md5, r,  # noqa: E402
                         still_serving)

USER = "cluster"


def sess(port):
    c = Conn(port)
    return c, login(c, USER)


def blk(data, bs, i):
    return data[i * bs:(i + 1) * bs]


def verify(port, key, data):
    c, t = sess(port)
    got = download(c, t, key)
    c.close()
    check(got == data, "object %r verifies on port %d" % (key, port))


def sc_alternate(pa, pb):
    """An upload whose blocks alternate between the two instances; SAVE on A, the last
    block on B; the object verifies on both, and each answer carried the right md5."""
    a, ta = sess(pa)
    b, tb = sess(pb)
    data = os.urandom(9 * DEFAULT_BS + 123)
    plan, _ = expect(a, r("FILE", "SAVE", token=ta, key="alt", size=len(data)), 200)
    bs, total = plan["block_size"], plan["total_block"]
    last = None
    for i in range(total):
        c, t = (a, ta) if i % 2 == 0 else (b, tb)
        last, _ = expect(c, r("FILE", "UPLOAD", token=t, key="alt", block_index=i), 200,
                         blk(data, bs, i), what="UPLOAD %d on %s" % (i, "AB"[i % 2]))
    check(last.get("md5") == md5(data), "the completing block carries the md5: %r" % last)
    verify(pa, "alt", data)
    verify(pb, "alt", data)
    # A resume asked on B sees the blocks A received (the metadata's, not B's memory).
    data2 = os.urandom(5 * DEFAULT_BS)
    expect(a, r("FILE", "SAVE", token=ta, key="alt2", size=len(data2)), 200)
    for i in (0, 2):
        expect(a, r("FILE", "UPLOAD", token=ta, key="alt2", block_index=i), 200,
               blk(data2, bs, i))
    p, _ = expect(b, r("FILE", "SAVE", token=tb, key="alt2", size=len(data2)), 200)
    check(p["received"] == [[0, 0], [2, 2]], "B's plan lists A's blocks: %r" % p)
    # A one-block (inline) upload SAVEd on A and re-SAVEd on B (a client that moved): B's
    # plan replaces A's; its block on B commits, A's stale plan then finds the key taken.
    expect(a, r("FILE", "SAVE", token=ta, key="small", size=5), 200)
    expect(b, r("FILE", "SAVE", token=tb, key="small", size=5), 200)
    expect(b, r("FILE", "UPLOAD", token=tb, key="small", block_index=0), 200, b"hello")
    verify(pa, "small", b"hello")
    expect(a, r("FILE", "UPLOAD", token=ta, key="small", block_index=0), 402, b"hello",
           what="A's stale inline plan: the key exists now")
    still_serving(pa)
    still_serving(pb)


def objects_of(port, key):
    """The object of key as GET and a full DOWNLOAD on port see it: (md5, bytes)."""
    c, t = sess(port)
    g, _ = expect(c, r("FILE", "GET", token=t, key=key), 200, what="GET %s" % key)
    got = download(c, t, key)
    c.close()
    return g["md5"], got


def sc_small_cross(pa, pb):
    """One-block uploads whose SAVE and UPLOAD reach different instances (a client with a
    connection per request behind a balancer): SAVE on A, UPLOAD on B (directly) commits
    with the right md5; the object reads the same on both; the same UPLOAD again, on A or
    on B, is refused alike (402) and makes no second object. Also: a re-SAVE on A, then the
    UPLOAD on B; SAVEs on A of one key, the UPLOAD on B gets the last plan's size; an
    DELETE on B of a plan made on A drops it (then 408 on both); an UPLOAD of a key never
    SAVEd is 408 on both; a plan consumed by a commit on B and its object then DELETEd:
    the stale plan's UPLOAD on A is 408 and creates nothing."""
    a, ta = sess(pa)
    b, tb = sess(pb)
    for n, size in enumerate((1, 100, 5000, 16 * 1024)):
        key = "x%d" % n
        data = os.urandom(size)
        p, _ = expect(a, r("FILE", "SAVE", token=ta, key=key, size=size), 200)
        check(p["total_block"] == 1, "one block: %r" % p)
        up, _ = expect(b, r("FILE", "UPLOAD", token=tb, key=key, block_index=0), 200, data,
                       what="UPLOAD of %s on B after its SAVE on A" % key)
        check(up.get("md5") == md5(data), "B's answer carries the md5: %r" % up)
        ma, ga = objects_of(pa, key)
        mb, gb = objects_of(pb, key)
        check(ma == mb == md5(data) and ga == gb == data, "%s identical on A and B" % key)
        for c, t, who in ((a, ta, "A"), (b, tb, "B")):
            expect(c, r("FILE", "UPLOAD", token=t, key=key, block_index=0), 402, data,
                   what="the same UPLOAD again on %s" % who)
        check(objects_of(pa, key) == (ma, ga), "%s unchanged" % key)
    # A re-SAVE on A (the plan looked up and recorded again), the UPLOAD on B.
    expect(a, r("FILE", "SAVE", token=ta, key="resave", size=7), 200)
    expect(a, r("FILE", "SAVE", token=ta, key="resave", size=7), 200)
    up, _ = expect(b, r("FILE", "UPLOAD", token=tb, key="resave", block_index=0), 200,
                   b"resaved")
    check(up.get("md5") == md5(b"resaved"), "re-SAVE: %r" % up)
    # A SAVE of another size starts over: B takes the last plan (6 bytes, not 4).
    expect(a, r("FILE", "SAVE", token=ta, key="sizes", size=4), 200)
    expect(a, r("FILE", "SAVE", token=ta, key="sizes", size=6), 200)
    expect(b, r("FILE", "UPLOAD", token=tb, key="sizes", block_index=0), 406, b"four",
           what="the first plan's length")
    expect(b, r("FILE", "UPLOAD", token=tb, key="sizes", block_index=0), 200, b"sixsix")
    # A DELETE on B drops A's plan as A would (404, its data deleted): then 408 on both.
    expect(a, r("FILE", "SAVE", token=ta, key="dropped", size=3), 200)
    d, _ = expect(b, r("FILE", "DELETE", token=tb, key="dropped"), 404)
    check("deleted" in d["status_msg"], "the upload's data deleted: %r" % d)
    for c, t in ((a, ta), (b, tb)):
        expect(c, r("FILE", "UPLOAD", token=t, key="dropped", block_index=0), 408, b"abc",
               what="UPLOAD of a plan DELETEd on B")
    # Never SAVEd: the protocol's 408 on both.
    for c, t in ((a, ta), (b, tb)):
        expect(c, r("FILE", "UPLOAD", token=t, key="never", block_index=0), 408, b"x")
    # Consumed on B, then DELETEd: A's copy of the plan is stale (408, nothing created).
    expect(a, r("FILE", "SAVE", token=ta, key="gone", size=3), 200)
    expect(b, r("FILE", "UPLOAD", token=tb, key="gone", block_index=0), 200, b"one")
    expect(b, r("FILE", "DELETE", token=tb, key="gone"), 200)
    expect(a, r("FILE", "UPLOAD", token=ta, key="gone", block_index=0), 408, b"two",
           what="a consumed plan's UPLOAD after the object's DELETE")
    expect(b, r("FILE", "GET", token=tb, key="gone"), 404)
    expect(a, r("FILE", "GET", token=ta, key="gone"), 404)
    still_serving(pa)
    still_serving(pb)


def sc_concurrent(pa, pb):
    """Two connections send the blocks of one upload at the same time, even ones to A and
    odd ones to B (the per-block records never lose each other's bits): before the last
    two blocks a SAVE on either lists every other block; then it commits once, intact."""
    data = os.urandom(40 * DEFAULT_BS + 7)
    a, ta = sess(pa)
    plan, _ = expect(a, r("FILE", "SAVE", token=ta, key="conc", size=len(data)), 200)
    bs, total = plan["block_size"], plan["total_block"]
    b, tb = sess(pb)

    def send(c, t, idx):
        for i in idx:
            rep, _ = c.req(r("FILE", "UPLOAD", token=t, key="conc", block_index=i),
                           blk(data, bs, i))
            if rep["status"] != 200:
                return rep
        return None
    res = race([lambda: send(a, ta, range(0, total - 2, 2)),
                lambda: send(b, tb, range(1, total - 2, 2))])
    check(res == [None, None], "all blocks 200: %r" % res)
    c, tc = sess(pb)
    p, _ = expect(c, r("FILE", "SAVE", token=tc, key="conc", size=len(data)), 200)
    check(p["received"] == [[0, total - 3]], "every block recorded: %r" % p["received"])
    res = race([lambda: a.req(r("FILE", "UPLOAD", token=ta, key="conc", block_index=total - 2),
                              blk(data, bs, total - 2))[0],
                lambda: b.req(r("FILE", "UPLOAD", token=tb, key="conc", block_index=total - 1),
                              blk(data, bs, total - 1))[0]])
    check(all(isinstance(x, dict) and x["status"] == 200 for x in res), "last: %r" % res)
    check(any(x.get("md5") == md5(data) for x in res), "the md5: %r" % res)
    verify(pa, "conc", data)
    verify(pb, "conc", data)


def sc_kill_a(pa, pb):
    """Phase 1 of 'resume on B after A is SIGKILLed': half an upload through A."""
    a, ta = sess(pa)
    data = bytes(range(256)) * (40 * DEFAULT_BS // 256) + b"tail"
    open(sys.argv[4], "wb").write(data)
    plan, _ = expect(a, r("FILE", "SAVE", token=ta, key="killed", size=len(data)), 200)
    for i in range(plan["total_block"] // 2):
        expect(a, r("FILE", "UPLOAD", token=ta, key="killed", block_index=i), 200,
               blk(data, plan["block_size"], i))


def sc_resume_b(pa, pb):
    """Phase 2: A is dead; B resumes the upload with the blocks A received, finishes it."""
    data = open(sys.argv[4], "rb").read()
    b, tb = sess(pb)
    plan, _ = expect(b, r("FILE", "SAVE", token=tb, key="killed", size=len(data)), 200)
    bs, total = plan["block_size"], plan["total_block"]
    check(plan["received"] == [[0, total // 2 - 1]], "B resumes A's blocks: %r"
          % plan["received"])
    for i in range(total // 2, total):
        last, _ = expect(b, r("FILE", "UPLOAD", token=tb, key="killed", block_index=i), 200,
                         blk(data, bs, i))
    check(last["md5"] == md5(data), "committed on B")
    verify(pb, "killed", data)
    still_serving(pb)


def race(fns):
    """Runs the functions at once; their results (or exceptions) in order."""
    out = [None] * len(fns)
    go = threading.Barrier(len(fns))

    def run(i):
        try:
            go.wait(10)
            out[i] = fns[i]()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            out[i] = e
    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def sc_both_complete(pa, pb):
    """The same key completed on both instances at once (the last block sent to both, and
    two last blocks of different indexes, one to each): one commit, both answers 200 with
    the object's md5, the object intact."""
    for rnd in range(6):
        key = "both%d" % rnd
        data = os.urandom(6 * DEFAULT_BS + rnd)
        a, ta = sess(pa)
        b, tb = sess(pb)
        plan, _ = expect(a, r("FILE", "SAVE", token=ta, key=key, size=len(data)), 200)
        bs, total = plan["block_size"], plan["total_block"]
        lasts = [total - 1, total - 1] if rnd % 2 == 0 else [total - 2, total - 1]
        for i in range(total):
            if i not in lasts:
                expect(a, r("FILE", "UPLOAD", token=ta, key=key, block_index=i), 200,
                       blk(data, bs, i))
        res = race([lambda c=c, t=t, i=i: c.req(r("FILE", "UPLOAD", token=t, key=key,
                                                  block_index=i), blk(data, bs, i))[0]
                    for (c, t), i in zip([(a, ta), (b, tb)], lasts)])
        for x in res:
            check(isinstance(x, dict) and x["status"] == 200, "round %d: both 200: %r"
                  % (rnd, res))
        md5s = [x.get("md5") for x in res if x.get("md5")]
        check(md5s and all(m == md5(data) for m in md5s), "round %d: md5s %r" % (rnd, res))
        verify(pa, key, data)
        verify(pb, key, data)
        a.close()
        b.close()
    still_serving(pa)


def sc_small_race(pa, pb):
    """The same new small (inline) key saved and uploaded, pipelined, on both instances at
    once with different bytes: exactly one UPLOAD commits (200, its md5); the other is
    refused (402), and so is its SAVE unless that was answered before the commit (200);
    every key then holds the winner's bytes on both instances."""
    from server_wire import pack
    keys = ["sr%03d" % i for i in range(60)]
    datas = {p: {k: os.urandom(100 + i) + bytes([p & 0xff]) for i, k in enumerate(keys)}
             for p in (pa, pb)}

    def burst(port):
        c, t = sess(port)
        c.send_raw(b"".join(pack(r("FILE", "SAVE", token=t, key=k, size=len(datas[port][k]))) +
                            pack(r("FILE", "UPLOAD", token=t, key=k, block_index=0),
                                 datas[port][k]) for k in keys))
        out = [(c.recv()[0], c.recv()[0]) for _ in keys]
        c.close()
        return out

    res = race([lambda: burst(pa), lambda: burst(pb)])
    for x in res:
        check(isinstance(x, list), "burst: %r" % x)
    for i, k in enumerate(keys):
        won = []
        for port, out in zip((pa, pb), res):
            sv, up = out[i]
            check(sv["status"] in (200, 402) and up["status"] in (200, 402),
                  "%s on %d: %r %r" % (k, port, sv, up))
            check(sv["status"] == 200 or up["status"] == 402,
                  "%s on %d: a refused SAVE, a committed UPLOAD: %r %r" % (k, port, sv, up))
            if up["status"] == 200:
                check(up.get("md5") == md5(datas[port][k]), "%s md5 on %d" % (k, port))
                won.append(port)
        check(len(won) == 1, "%s: exactly one commit, got %r" % (k, won))
        verify(pa, k, datas[won[0]][k])
        verify(pb, k, datas[won[0]][k])
    still_serving(pa)
    still_serving(pb)


LOCK_KEYS = ["lk%02d" % i for i in range(10)]


def lock_burst(port):
    from server_wire import pack
    c, t = sess(port)
    c.send_raw(b"".join(pack(r("FILE", "SAVE", token=t, key=k, size=3)) +
                        pack(r("FILE", "UPLOAD", token=t, key=k, block_index=0), b"one")
                        for k in LOCK_KEYS))
    out = [(c.recv()[0], c.recv()[0]) for _ in LOCK_KEYS]
    c.close()
    return out


def sc_lock_during(pa, pb):
    """While objects is locked past stepd's lock_timeout: pipelined small uploads are
    answered 503 (retry), none left half-done."""
    out = lock_burst(pa)
    for k, (sv, up) in zip(LOCK_KEYS, out):
        check(sv["status"] in (200, 503) and up["status"] in (200, 503),
              "%s during the lock: %r %r" % (k, sv, up))
    check(any(up["status"] == 503 for _, up in out), "no commit met the lock: %r" % out)


def sc_lock_after(pa, pb):
    """After the lock: the commit connection serves again at once (its statements prepared
    anew); every key of the burst is either committed or free, and commits now."""
    c, t = sess(pa)
    for k in LOCK_KEYS:
        g, _ = c.req(r("FILE", "GET", token=t, key=k))
        if g["status"] == 200:
            check(g["md5"] == md5(b"one"), "%s committed intact: %r" % (k, g))
            continue
        check(g["status"] == 404, "%s after the lock: %r" % (k, g))
        expect(c, r("FILE", "SAVE", token=t, key=k, size=3), 200, what="SAVE " + k)
        up, _ = expect(c, r("FILE", "UPLOAD", token=t, key=k, block_index=0), 200, b"two",
                       what="UPLOAD " + k)
        check(up.get("md5") == md5(b"two"), "%s commits after the lock" % k)
    c.close()
    still_serving(pa)


def sc_delete_race(pa, pb):
    """DELETE on one instance while the other serves a DOWNLOAD (the DELETE wins from its
    commit on: 404, never other bytes) or commits the same key (either the commit comes
    first and the object is then deleted or kept whole, or the DELETE drops the upload and
    the last block is refused): never a half state, and the key is usable afterwards."""
    a, ta = sess(pa)
    b, tb = sess(pb)
    data = os.urandom(8 * DEFAULT_BS)
    expect(a, r("FILE", "SAVE", token=ta, key="d", size=len(data)), 200)
    for i in range(8):
        expect(a, r("FILE", "UPLOAD", token=ta, key="d", block_index=i), 200,
               blk(data, DEFAULT_BS, i))
    g, _ = expect(b, r("FILE", "GET", token=tb, key="d"), 200)
    d0, b0 = expect(b, r("FILE", "DOWNLOAD", token=tb, key="d", block_index=0), 200)
    check(b0 == data[:DEFAULT_BS], "first block before the delete")
    expect(a, r("FILE", "DELETE", token=ta, key="d"), 200)
    expect(b, r("FILE", "DOWNLOAD", token=tb, key="d", block_index=1), 404,
           what="DOWNLOAD after another instance's DELETE")
    expect(b, r("FILE", "GET", token=tb, key="d"), 404)
    outcomes = set()
    for rnd in range(8):
        key = "dc%d" % rnd
        expect(b, r("FILE", "SAVE", token=tb, key=key, size=len(data)), 200)
        for i in range(7):
            expect(b, r("FILE", "UPLOAD", token=tb, key=key, block_index=i), 200,
                   blk(data, DEFAULT_BS, i))
        up, de = race([
            lambda: b.req(r("FILE", "UPLOAD", token=tb, key=key, block_index=7),
                          blk(data, DEFAULT_BS, 7))[0],
            lambda: a.req(r("FILE", "DELETE", token=ta, key=key))[0]])
        check(isinstance(up, dict) and isinstance(de, dict), "answers: %r %r" % (up, de))
        g, _ = a.req(r("FILE", "GET", token=ta, key=key))
        if up["status"] == 200:
            check(up["md5"] == md5(data), "committed whole")
            # The delete came after the commit (object gone) or hit it (object kept).
            check(de["status"] in (200, 404), "delete answer %r" % de)
            if g["status"] == 200:
                verify(pa, key, data)
                outcomes.add("commit, delete refused")
            else:
                check(de["status"] == 200, "gone only by a delete: %r %r" % (de, g))
                outcomes.add("commit, then delete")
        else:
            check(g["status"] == 404 and de["status"] == 404, "delete first: %r %r %r"
                  % (up, de, g))
            outcomes.add("delete dropped the upload")
        # Whatever happened, the key takes a new upload.
        expect(a, r("FILE", "DELETE", token=ta, key=key), 404) if g["status"] != 200 else \
            expect(a, r("FILE", "DELETE", token=ta, key=key), 200)
        expect(a, r("FILE", "SAVE", token=ta, key=key, size=3), 200)
        expect(a, r("FILE", "UPLOAD", token=ta, key=key, block_index=0), 200, b"new")
        verify(pb, key, b"new")
    print("outcomes: %s" % sorted(outcomes), file=sys.stderr)
    still_serving(pa)
    still_serving(pb)


def sc_expire(pa, pb):
    """Abandoned uploads expire with both instances sweeping; an upload whose blocks keep
    coming (alternately to A and B, none idle for the TTL) is never dropped."""
    root = sys.argv[4]
    a, ta = sess(pa)
    b, tb = sess(pb)
    gone = os.urandom(3 * DEFAULT_BS)
    expect(a, r("FILE", "SAVE", token=ta, key="abandoned", size=len(gone)), 200)
    expect(a, r("FILE", "UPLOAD", token=ta, key="abandoned", block_index=0), 200, gone[:DEFAULT_BS])
    expect(b, r("FILE", "SAVE", token=tb, key="abandoned2", size=len(gone)), 200)
    live = os.urandom(400 * 1024)
    plan, _ = expect(a, r("FILE", "SAVE", token=ta, key="live", size=len(live)), 200)
    total = plan["total_block"]
    tmp = os.path.join(root, "tmp")
    i = 0
    deadline = time.time() + 60
    # Paced blocks (one every 0.3 s, far below the TTL) until both abandoned uploads are
    # gone from the shared tmp/ (only "live"'s temp file is left) - bounded by the deadline.
    while True:
        names = [n for n in os.listdir(tmp) if n.endswith(".part")]
        if len(names) == 1:
            break
        check(time.time() < deadline, "abandoned uploads expire: %r" % names)
        if i < total - 1:
            c, t = (a, ta) if i % 2 == 0 else (b, tb)
            expect(c, r("FILE", "UPLOAD", token=t, key="live", block_index=i), 200,
                   blk(live, DEFAULT_BS, i))
            i += 1
        time.sleep(0.3)  # pacing of the live upload, not a synchronisation
    check(i < total - 1 or True, "")
    expect(a, r("FILE", "UPLOAD", token=ta, key="abandoned", block_index=1), 408,
           gone[DEFAULT_BS:2 * DEFAULT_BS], what="a block of an expired upload")
    p, _ = expect(b, r("FILE", "SAVE", token=tb, key="live", size=len(live)), 200)
    check(p["received"] == ([[0, i - 1]] if i > 0 else []), "live upload kept: %r" % p)
    for k in range(i, total):
        expect(b, r("FILE", "UPLOAD", token=tb, key="live", block_index=k), 200,
               blk(live, DEFAULT_BS, k))
    verify(pa, "live", live)
    still_serving(pa)


def sc_plan_expire1(pa, pb):
    """Phase 1 of 'an abandoned plan expires': a one-block SAVE on A, never UPLOADed."""
    a, ta = sess(pa)
    expect(a, r("FILE", "SAVE", token=ta, key="pexp", size=10), 200)


def sc_plan_expire2(pa, pb):
    """Phase 2: the plan's record is gone (swept): its block on B is 408, no object."""
    b, tb = sess(pb)
    expect(b, r("FILE", "UPLOAD", token=tb, key="pexp", block_index=0), 408, b"0123456789")
    expect(b, r("FILE", "GET", token=tb, key="pexp"), 404)
    still_serving(pb)


def sc_alt_again(pa, pb):
    """The object of 'alternate' is there (another instance, started later)."""
    c, t = sess(pa)
    g, _ = expect(c, r("FILE", "GET", token=t, key="alt"), 200)
    check(g["size"] == 9 * DEFAULT_BS + 123, "alt: %r" % g)
    still_serving(pa)


def sc_dead_claim1(pa, pb):
    """Phase 1 of 'a dead instance's claim': three of four blocks through A."""
    a, ta = sess(pa)
    data = bytes(range(256)) * (4 * DEFAULT_BS // 256)
    expect(a, r("FILE", "SAVE", token=ta, key="dead", size=len(data)), 200)
    for i in range(3):
        expect(a, r("FILE", "UPLOAD", token=ta, key="dead", block_index=i), 200,
               blk(data, DEFAULT_BS, i))


def sc_dead_claim2(pa, pb):
    """Phase 2: the row was claimed by an instance that never shows up (set in the database
    by the script); the last block through B is answered once the claim is given back
    (503: retry) or after it (200); retried, it commits; the object verifies."""
    data = bytes(range(256)) * (4 * DEFAULT_BS // 256)
    b, tb = sess(pb)
    deadline = time.time() + 30
    while True:
        rep, _ = b.req(r("FILE", "UPLOAD", token=tb, key="dead", block_index=3),
                       blk(data, DEFAULT_BS, 3))
        if rep["status"] == 200:
            break
        check(rep["status"] == 503 and time.time() < deadline, "last block: %r" % rep)
    check(rep["md5"] == md5(data), "committed after the takeover: %r" % rep)
    verify(pa, "dead", data)
    still_serving(pb)


def sc_token(pa, pb):
    """A user added with stepd --metadata ... user add: a token from a LOGIN on A works on B
    (one HMAC secret and one user table in the shared root)."""
    a = Conn(pa)
    rep, _ = a.req(r("AUTH", "LOGIN", username="carol", password=md5(b"carol's pw")))
    check(rep["status"] == 200, "login on A: %r" % rep)
    b = Conn(pb)
    expect(b, r("DATA", "SAVE", token=rep["token"], key="t", v=1), 200, what="A's token on B")
    rep2, _ = b.req(r("AUTH", "LOGIN", username="carol", password=md5(b"wrong")))
    check(rep2["status"] == 401, "a wrong password on B: %r" % rep2)
    still_serving(pb)


def main():
    name, pa, pb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fn = globals().get("sc_" + name)
    if fn is None:
        print("unknown scenario " + name, file=sys.stderr)
        return 2
    try:
        fn(pa, pb)
    except (Fail, EOFError, OSError, KeyError, ValueError) as e:
        print("FAIL %s: %s: %s" % (name, type(e).__name__, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
