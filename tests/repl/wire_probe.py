#!/usr/bin/env python3
"""Talks to a ferryd replication port as a misbehaving peer.

usage: wire_probe.py PORT garbage|version|slow
  garbage  send an HTTP request; print what comes back ("closed" if nothing)
  version  send a well-formed HELLO offering only protocol version 2;
           print the ERROR message the server answers with
  slow     connect and send nothing; print how long until the server
           closes the connection
"""
import socket
import struct
import sys
import time


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def frame(ftype, payload):
    hdr = struct.pack("<IBBHI", 0x31595246, ftype, 0, 0, len(payload))
    return hdr + struct.pack("<I", crc32c(hdr + payload)) + payload


def read_frame(s):
    buf = b""
    while len(buf) < 16:
        d = s.recv(16 - len(buf))
        if not d:
            return None
        buf += d
    magic, ftype, _, _, plen, _ = struct.unpack("<IBBHII", buf)
    payload = b""
    while len(payload) < plen:
        d = s.recv(plen - len(payload))
        if not d:
            return None
        payload += d
    return ftype, payload


def main():
    port, what = int(sys.argv[1]), sys.argv[2]
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    if what == "garbage":
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        try:
            d = s.recv(100)
        except OSError:
            d = b""
        print("closed" if not d else "answered %r" % d[:40])
    elif what == "version":
        site = b"probe"
        hello = struct.pack("<HH", 2, 2) + b"\x01" * 32 + struct.pack("<H", len(site)) + site
        s.sendall(frame(1, hello))
        f = read_frame(s)
        if not f:
            print("closed")
        elif f[0] == 5:
            code, = struct.unpack("<I", f[1][:4])
            n, = struct.unpack("<H", f[1][4:6])
            print("ERROR %d %s" % (code, f[1][6:6 + n].decode()))
        else:
            print("type %d" % f[0])
    elif what == "slow":
        t0 = time.time()
        try:
            d = s.recv(100)
        except OSError:
            d = b""
        print("closed after %.1f s" % (time.time() - t0))


main()
