#!/usr/bin/env python3
"""Floods a TCP port with idle connections, as an attacker without
credentials would (tests/repl/flood.sh).

  flooder.py flood PORT N SOURCES CHURN STATS
      keeps trying to hold N idle connections to 127.0.0.1:PORT, bound to
      the source addresses SOURCES (comma-separated, used in turn); one the
      server closes is opened again, at most RATE (200, or $FLOODER_RATE) connects per second
      in all; with CHURN > 0 it also closes and reopens its oldest
      connection CHURN times per second.  Runs until SIGTERM, then writes
      "connects closed_by_server refused_frames errors held" to STATS.
  flooder.py idle PORT SOURCE
      one idle connection: prints the seconds until the server closed it.
  flooder.py slow PORT SOURCE
      one connection that sends the first bytes of a TLS ClientHello, one
      byte a second (each within the per-operation deadline): prints the
      seconds until the server closed it.
  flooder.py displaced PORT SOURCE K
      one idle connection, then K more from the same source: prints what
      the server sent on the first one before closing it.
"""
import os
import selectors
import signal
import socket
import sys
import time

RATE = float(os.environ.get("FLOODER_RATE", "200"))  # connects/s


def connect(src, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, 0))
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    return s


def flood(port, n, sources, churn, stats):
    sel = selectors.DefaultSelector()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    conns = {}  # socket -> opened at
    st = dict(connects=0, closed=0, frames=0, errors=0)
    k = 0
    tokens = float(n)  # the first N at once
    last = time.monotonic()
    next_churn = last
    while not stop:
        now = time.monotonic()
        tokens = min(float(n), tokens + (now - last) * RATE)
        last = now
        if churn > 0 and now >= next_churn and conns:
            oldest = min(conns, key=conns.get)
            sel.unregister(oldest)
            del conns[oldest]
            oldest.close()
            next_churn = now + 1.0 / churn
        while len(conns) < n and tokens >= 1:
            tokens -= 1
            try:
                s = connect(sources[k % len(sources)], port)
            except OSError:
                st["errors"] += 1
                break
            k += 1
            st["connects"] += 1
            conns[s] = now
            sel.register(s, selectors.EVENT_READ)
        for key, _ in sel.select(timeout=0.005):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                if b"unauthenticated" in data:
                    st["frames"] += 1
                continue  # the rest of it comes with the close
            sel.unregister(s)
            del conns[s]
            s.close()
            st["closed"] += 1
    with open(stats, "w") as f:
        f.write("%d %d %d %d %d\n" % (st["connects"], st["closed"], st["frames"],
                                      st["errors"], len(conns)))


def idle(port, src):
    s = connect(src, port)
    s.setblocking(True)
    t0 = time.monotonic()
    s.settimeout(60)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    print("%.2f" % (time.monotonic() - t0))


def slow(port, src):
    s = connect(src, port)
    s.setblocking(True)
    t0 = time.monotonic()
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)
    s.settimeout(1.0)
    for b in hello:
        try:
            s.send(bytes([b]))
            if not s.recv(4096):
                break
        except socket.timeout:
            continue
        except OSError:
            break
    print("%.2f" % (time.monotonic() - t0))


def displaced(port, src, k):
    first = connect(src, port)
    first.setblocking(True)
    time.sleep(0.3)  # admitted first: the oldest of its source
    others = []
    for _ in range(k):
        others.append(connect(src, port))
        time.sleep(0.02)
    first.settimeout(10)
    got = b""
    try:
        while True:
            d = first.recv(4096)
            if not d:
                break
            got += d
    except OSError:
        pass
    sys.stdout.write(got.decode("latin-1"))
    for s in others:
        s.close()


def main():
    a = sys.argv[1:]
    if a[0] == "flood":
        flood(int(a[1]), int(a[2]), a[3].split(","), float(a[4]), a[5])
    elif a[0] == "idle":
        idle(int(a[1]), a[2])
    elif a[0] == "slow":
        slow(int(a[1]), a[2])
    elif a[0] == "displaced":
        displaced(int(a[1]), a[2], int(a[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
