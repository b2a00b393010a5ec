#!/usr/bin/env python3
"""Persistent reservations across a new login, through the real ferryd
(real transport + real SCSI layer): a registration made in one session
belongs to the I_T nexus (initiator name + ISID, and the target), so the
same initiator port logging in again still owns it, while another ISID of
the same initiator is another nexus.  READ FULL STATUS names the
registrant by its iSCSI initiator port ("IQN,i,0xISID", TransportID format
01b).

usage: pr_relogin.py HOST PORT TARGET_IQN
Exits 0 when every check passed, 1 (with a message) otherwise."""
import socket, struct, sys

host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
INI = 'iqn.2026-11.io.ferry.test:pr-relogin'
ISID_A = bytes([0x80, 0x00, 0x00, 0x01, 0xa0, 0x01])
ISID_B = bytes([0x80, 0x00, 0x00, 0x01, 0xa0, 0x02])
KEY = 0x1122334455667788
GOOD, CHECK, CONFLICT = 0x00, 0x02, 0x18


def fail(msg):
    print('pr_relogin: FAIL: ' + msg, file=sys.stderr)
    sys.exit(1)


def pad(b):
    return b + b'\0' * ((4 - len(b) % 4) % 4)


class Session:
    def __init__(self, isid):
        self.isid = isid
        self.s = socket.create_connection((host, port), timeout=10)
        self.cmdsn, self.statsn, self.itt = 1, 0, 1
        text = ('InitiatorName=%s\0SessionType=Normal\0TargetName=%s\0AuthMethod=None\0'
                'HeaderDigest=None\0DataDigest=None\0' % (INI, target)).encode()
        self.login(0x81, text)                  # security -> operational
        self.login(0x87, b'ImmediateData=Yes\0InitialR2T=Yes\0')  # -> full feature
        # the first command of a new nexus reports a unit attention
        for _ in range(4):
            if self.cmd(bytes(6), 0, 0)[0] == GOOD:
                break

    def recv(self):
        bhs = b''
        while len(bhs) < 48:
            chunk = self.s.recv(48 - len(bhs))
            if not chunk:
                fail('connection closed by the target')
            bhs += chunk
        dlen = int.from_bytes(bhs[5:8], 'big')
        want, data = (dlen + 3) & ~3, b''
        while len(data) < want:
            chunk = self.s.recv(want - len(data))
            if not chunk:
                fail('connection closed by the target')
            data += chunk
        return bhs, data[:dlen]

    def login(self, flags, text):
        bhs = bytes([0x43, flags, 0, 0, 0]) + len(text).to_bytes(3, 'big') + self.isid
        bhs += b'\0\0' + struct.pack('>I', self.itt) + b'\0' * 4
        bhs += struct.pack('>II', self.cmdsn, self.statsn) + b'\0' * 16
        self.s.sendall(bhs + pad(text))
        r, _ = self.recv()
        if r[0] & 0x3f != 0x23 or r[36] or r[37]:
            fail('login refused: opcode 0x%x status 0x%02x%02x' % (r[0], r[36], r[37]))
        self.statsn = struct.unpack('>I', r[24:28])[0] + 1

    def cmd(self, cdb, edtl_in, read_len, data_out=b''):
        """Runs one command on LUN 0; returns (status, data-in, sense)."""
        self.itt += 1
        flags = 0x80 | 0x01 | (0x40 if read_len else 0) | (0x20 if data_out else 0)
        edtl = read_len or len(data_out)
        bhs = bytes([0x01, flags, 0, 0, 0]) + len(data_out).to_bytes(3, 'big') + bytes(8)
        bhs += struct.pack('>IIII', self.itt, edtl, self.cmdsn, self.statsn)
        bhs += cdb + bytes(16 - len(cdb))
        self.cmdsn += 1
        self.s.sendall(bhs + pad(data_out))
        data_in = b''
        while True:
            r, d = self.recv()
            op = r[0] & 0x3f
            if op == 0x25:                      # Data-In
                data_in += d
                if r[1] & 0x01:                 # status in this PDU
                    self.statsn = struct.unpack('>I', r[24:28])[0] + 1
                    return r[3], data_in, b''
            elif op == 0x21:                    # SCSI Response
                self.statsn = struct.unpack('>I', r[24:28])[0] + 1
                return r[3], data_in, d[2:] if d else b''
            else:
                fail('unexpected opcode 0x%x' % op)

    def pr_out(self, sa, key, sakey):
        params = struct.pack('>QQ', key, sakey) + bytes(8)
        cdb = bytes([0x5f, sa, 0, 0, 0]) + struct.pack('>I', len(params)) + b'\0'
        return self.cmd(cdb, 0, 0, params)[0]

    def pr_in(self, sa):
        cdb = bytes([0x5e, sa, 0, 0, 0, 0, 0]) + struct.pack('>H', 4096) + b'\0'
        st, d, _ = self.cmd(cdb, 0, 4096)
        if st != GOOD:
            fail('PERSISTENT RESERVE IN 0x%x: status 0x%x' % (sa, st))
        return d

    def keys(self):
        d = self.pr_in(0x00)
        n = struct.unpack('>I', d[4:8])[0]
        return [struct.unpack('>Q', d[8 + i:16 + i])[0] for i in range(0, n, 8)]

    def close(self):
        self.s.close()


port_a = '%s,i,0x%s' % (INI, ISID_A.hex())
a = Session(ISID_A)
if a.keys():
    fail('fresh LUN has registrations: %r' % a.keys())
if a.pr_out(0x00, 0, KEY) != GOOD:                    # REGISTER
    fail('REGISTER refused')
a.close()

# The same initiator port logs in again: it still owns the registration.
a2 = Session(ISID_A)
if a2.keys() != [KEY]:
    fail('registration lost after a new login: %r' % a2.keys())
d = a2.pr_in(0x03)                                    # READ FULL STATUS
if len(d) < 8 + 24 + 4:
    fail('READ FULL STATUS too short (%d bytes)' % len(d))
desc = d[8:]
if struct.unpack('>Q', desc[0:8])[0] != KEY:
    fail('READ FULL STATUS: wrong key')
tid = desc[24:]
if tid[0] != 0x45:                                    # format 01b, protocol iSCSI
    fail('TransportID byte 0 is 0x%02x, want 0x45 (iSCSI, name + ISID)' % tid[0])
name = tid[4:4 + struct.unpack('>H', tid[2:4])[0]].split(b'\0')[0].decode()
if name != port_a:
    fail('TransportID names %r, want %r' % (name, port_a))

# Another ISID of the same initiator is another I_T nexus: not registered.
b = Session(ISID_B)
if b.pr_out(0x00, KEY, 0) != CONFLICT:                # unregister with a key it lacks
    fail('another ISID could act on the registration of %s' % port_a)
b.close()

# The owner unregisters (only possible from the registered nexus).
if a2.pr_out(0x00, KEY, 0) != GOOD:
    fail('the re-logged-in initiator port cannot unregister its key')
if a2.keys():
    fail('still registered after unregistering: %r' % a2.keys())
a2.close()
print('pr_relogin: ok (registration of %s kept across a new login)' % port_a)
