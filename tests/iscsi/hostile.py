#!/usr/bin/env python3
"""Hostile iSCSI client: connects many times to HOST:PORT and sends random
bytes, truncated PDUs, absurd lengths and a valid login followed by garbage.
Exits 0 when every connection was closed by the target (or left idle
without harming it); exits 1 if the target stops accepting connections."""
import random, socket, struct, sys, time

host, port = sys.argv[1], int(sys.argv[2])
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 40
rng = random.Random(4242)

def login_pdu(text, flags=0x87):
    bhs = bytes([0x43, flags, 0, 0, 0]) + len(text).to_bytes(3, 'big')
    bhs += bytes([0x40, 0, 0, 0x23, 0x3d, 0, 0, 0]) + struct.pack('>I', 1)
    bhs += b'\0\0\0\0' + struct.pack('>II', 1, 0) + b'\0' * 16
    return bhs + text + b'\0' * ((4 - len(text) % 4) % 4)

good_text = (b'InitiatorName=iqn.2026-11.io.ferry:hostile\0SessionType=Normal\0'
             b'TargetName=' + (sys.argv[4].encode() if len(sys.argv) > 4 else b'x') +
             b'\0AuthMethod=None\0')

for i in range(rounds):
    try:
        s = socket.create_connection((host, port), timeout=5)
    except OSError as e:
        print("target stopped accepting connections:", e)
        sys.exit(1)
    kind = i % 5
    try:
        if kind == 0:
            s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096))))
        elif kind == 1:  # truncated PDU, then hang up
            s.sendall(login_pdu(good_text)[:rng.randint(1, 60)])
        elif kind == 2:  # a header announcing 16 MiB of data that never comes
            s.sendall(bytes([0x43, 0x87, 0, 0, 0, 0xff, 0xff, 0xff]) + b'\0' * 40)
        elif kind == 3:  # a valid login, then a SCSI command with a bad AHS
            s.sendall(login_pdu(good_text))
            time.sleep(0.01)
            bad = bytes([0x01, 0x80, 0, 0, 3, 0, 0, 0]) + b'\0' * 40 + b'\xff' * 12
            s.sendall(bad)
        else:  # valid login, then random opcodes
            s.sendall(login_pdu(good_text))
            for _ in range(20):
                s.sendall(bytes([rng.getrandbits(8) & 0x7f]) +
                          bytes(rng.getrandbits(8) for _ in range(47)))
    except OSError:
        pass  # the target closed on us: that is the point
    s.close()
print("hostile: %d connections done" % rounds)
