#!/usr/bin/env python3
"""One iSCSI session kept open while a test does other things: logs in to
TARGET (LUN 0) and runs one command per line read on stdin, printing one
line per command on stdout:

  tur      TEST UNIT READY          -> "status 0x00" or "status 0x02 sense 6/2a/09"
  rc16     READ CAPACITY (16)       -> "status 0x00 blocks N bs B" (or the sense)
  read LBA READ (10), one block     -> "status 0x00 bytes N" (or the sense)
  quit     logs out and exits

The power-on unit attention of the new nexus is cleared at login, so the
first answer shows only what happened since.

usage: iscsi_session.py HOST PORT TARGET_IQN"""
import socket, struct, sys

host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
INI = 'iqn.2026-11.io.ferry.test:session'
ISID = bytes([0x80, 0x00, 0x00, 0x02, 0xb0, 0x01])


def die(msg):
    print('iscsi_session: ' + msg, file=sys.stderr)
    sys.exit(1)


def pad(b):
    return b + b'\0' * ((4 - len(b) % 4) % 4)


class Session:
    def __init__(self):
        self.s = socket.create_connection((host, port), timeout=30)
        self.cmdsn, self.statsn, self.itt = 1, 0, 1
        text = ('InitiatorName=%s\0SessionType=Normal\0TargetName=%s\0AuthMethod=None\0'
                'HeaderDigest=None\0DataDigest=None\0' % (INI, target)).encode()
        self.login(0x81, text)
        self.login(0x87, b'ImmediateData=Yes\0InitialR2T=Yes\0MaxRecvDataSegmentLength=262144\0')
        for _ in range(4):
            if self.cmd(bytes(6), 0)[0] == 0:
                break

    def recv(self):
        bhs = b''
        while len(bhs) < 48:
            chunk = self.s.recv(48 - len(bhs))
            if not chunk:
                die('connection closed by the target')
            bhs += chunk
        dlen = int.from_bytes(bhs[5:8], 'big')
        want, data = (dlen + 3) & ~3, b''
        while len(data) < want:
            chunk = self.s.recv(want - len(data))
            if not chunk:
                die('connection closed by the target')
            data += chunk
        return bhs, data[:dlen]

    def login(self, flags, text):
        bhs = bytes([0x43, flags, 0, 0, 0]) + len(text).to_bytes(3, 'big') + ISID
        bhs += b'\0\0' + struct.pack('>I', self.itt) + b'\0' * 4
        bhs += struct.pack('>II', self.cmdsn, self.statsn) + b'\0' * 16
        self.s.sendall(bhs + pad(text))
        r, _ = self.recv()
        if r[0] & 0x3f != 0x23 or r[36] or r[37]:
            die('login refused: status 0x%02x%02x' % (r[36], r[37]))
        self.statsn = struct.unpack('>I', r[24:28])[0] + 1

    def cmd(self, cdb, read_len):
        """One command on LUN 0: (status, data-in, sense)."""
        self.itt += 1
        flags = 0x80 | 0x01 | (0x40 if read_len else 0)
        bhs = bytes([0x01, flags, 0, 0, 0, 0, 0, 0]) + bytes(8)
        bhs += struct.pack('>IIII', self.itt, read_len, self.cmdsn, self.statsn)
        bhs += cdb + bytes(16 - len(cdb))
        self.cmdsn += 1
        self.s.sendall(bhs)
        data = b''
        while True:
            r, d = self.recv()
            op = r[0] & 0x3f
            if op == 0x25:                      # Data-In
                data += d
                if r[1] & 0x01:
                    self.statsn = struct.unpack('>I', r[24:28])[0] + 1
                    return r[3], data, b''
            elif op == 0x21:                    # SCSI Response
                self.statsn = struct.unpack('>I', r[24:28])[0] + 1
                return r[3], data, d[2:] if d else b''
            elif op == 0x20:                    # NOP-In: answer pings
                if struct.unpack('>I', r[20:24])[0] != 0xffffffff:
                    nop = bytes([0x40 | 0x40, 0x80]) + bytes(14)
                    nop += struct.pack('>II', 0xffffffff, struct.unpack('>I', r[20:24])[0])
                    nop += struct.pack('>II', self.cmdsn, self.statsn) + bytes(16)
                    self.s.sendall(nop)
            else:
                die('unexpected opcode 0x%x' % op)

    def logout(self):
        self.itt += 1
        bhs = bytes([0x46, 0x80]) + bytes(14) + struct.pack('>I', self.itt) + bytes(4)
        bhs += struct.pack('>II', self.cmdsn, self.statsn) + bytes(16)
        self.s.sendall(bhs)
        self.recv()
        self.s.close()


def show(st, sense):
    if st == 0:
        return 'status 0x00'
    if len(sense) >= 14:
        return 'status 0x%02x sense %x/%02x/%02x' % (st, sense[2] & 0xf, sense[12], sense[13])
    return 'status 0x%02x' % st


s = Session()
print('ready', flush=True)
for line in sys.stdin:
    w = line.split()
    if not w:
        continue
    if w[0] == 'quit':
        s.logout()
        print('bye', flush=True)
        break
    if w[0] == 'tur':
        st, _, sense = s.cmd(bytes(6), 0)
        print(show(st, sense), flush=True)
    elif w[0] == 'rc16':
        st, d, sense = s.cmd(bytes([0x9e, 0x10]) + bytes(8) + struct.pack('>I', 32) + bytes(2), 32)
        if st == 0:
            print('status 0x00 blocks %d bs %d' % (struct.unpack('>Q', d[0:8])[0] + 1,
                                                   struct.unpack('>I', d[8:12])[0]), flush=True)
        else:
            print(show(st, sense), flush=True)
    elif w[0] == 'read':
        cdb = bytes([0x28, 0]) + struct.pack('>I', int(w[1])) + bytes([0, 0, 1, 0])
        st, d, sense = s.cmd(cdb, 512)
        print(show(st, sense) + (' bytes %d' % len(d) if st == 0 else ''), flush=True)
    else:
        print('unknown command', flush=True)
