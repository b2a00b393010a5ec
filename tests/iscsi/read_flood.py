#!/usr/bin/env python3
"""An initiator that never reads: logs in to TARGET on HOST:PORT over CONNS
connections, fills each session's command window with READ(16)s of
32 MiB (EDTL 32 MiB), then never reads its sockets again and holds them
until it is killed or its stdin closes.  Prints "ready" once every command
is sent.  A target that buffers whole READs grows by the full 32 MiB per
command; ferry's is bounded per connection (docs/ISCSI.md "Memory").

usage: read_flood.py HOST PORT TARGET [CONNS] [CMDS_PER_CONN] [BLOCKS_IN_LUN]
"""
import socket, struct, sys

host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
conns = int(sys.argv[4]) if len(sys.argv) > 4 else 4
cmds = int(sys.argv[5]) if len(sys.argv) > 5 else 128
lun_blocks = int(sys.argv[6]) if len(sys.argv) > 6 else 65536 * 4
XFER = 32 << 20
BS = 512


def pad(b):
    return b + b'\0' * ((4 - len(b) % 4) % 4)


def recv_exact(s, n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise OSError("target closed the connection during login")
        b += c
    return b


def login(i):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # small kernel buffers: what piles up must pile up in the target
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(30)
    s.connect((host, port))
    text = (b'InitiatorName=iqn.2026-11.io.ferry.test:flood\0SessionType=Normal\0'
            b'TargetName=' + target + b'\0HeaderDigest=None\0DataDigest=None\0'
            b'MaxRecvDataSegmentLength=262144\0MaxBurstLength=16776192\0'
            b'FirstBurstLength=262144\0ImmediateData=Yes\0InitialR2T=Yes\0')
    isid = bytes([0x80, 0, 0, 0x23, 0x3d, i & 0xff])
    # Login request: T=1, CSG=1 (operational), NSG=3 (full feature)
    bhs = bytes([0x43, 0x87, 0, 0, 0]) + len(text).to_bytes(3, 'big') + isid
    bhs += b'\0\0' + struct.pack('>I', 1) + b'\0\0\0\0' + struct.pack('>II', 1, 0) + b'\0' * 16
    s.sendall(bhs + pad(text))
    h = recv_exact(s, 48)
    dlen = int.from_bytes(h[5:8], 'big')
    recv_exact(s, dlen + (4 - dlen % 4) % 4)
    if h[0] & 0x3f != 0x23 or h[36] != 0:
        raise OSError("login refused: class %d detail %d" % (h[36], h[37]))
    statsn = struct.unpack('>I', h[24:28])[0] + 1
    return s, statsn


def flood(s, statsn, cmdsn):
    out = b''
    for k in range(cmds):
        lba = (k * (XFER // BS)) % max(1, lun_blocks - XFER // BS)
        cdb = bytes([0x88, 0]) + lba.to_bytes(8, 'big') + (XFER // BS).to_bytes(4, 'big') + b'\0\0'
        bhs = bytes([0x01, 0xC1, 0, 0, 0, 0, 0, 0]) + b'\0' * 8
        bhs += struct.pack('>IIII', 0x1000 + k, XFER, cmdsn + k, statsn) + cdb
        out += bhs
    s.sendall(out)


socks = []
for i in range(conns):
    s, statsn = login(i)
    flood(s, statsn, 1)
    socks.append(s)
print("ready", flush=True)
# hold every socket, reading nothing, until told to stop
try:
    sys.stdin.read()
except KeyboardInterrupt:
    pass
for s in socks:
    s.close()
