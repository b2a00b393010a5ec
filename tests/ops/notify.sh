#!/bin/bash
# systemd's readiness protocol (Type=notify): with NOTIFY_SOCKET set, a
# foreground ferryd sends READY=1 only once its control socket, iSCSI and
# replication listeners accept connections (checked the moment READY=1
# arrives); SIGHUP gives RELOADING=1 then READY=1 and the daemon serves on;
# SIGTERM gives STOPPING=1 and exit 0; a failed start sends no READY=1.
. "$(dirname "$0")/lib.sh"

make_secret "$T/secret"
ISCSI=$(free_port)
LISTEN=$(free_port)
check "notify protocol" python3 - "$FERRYD" "$FERRY_BIN" "$T" "$ISCSI" "$LISTEN" <<'PY'
import os, socket, subprocess, sys, time
ferryd, ferry, T, iscsi, listen = sys.argv[1:6]
pool = T + "/n"
path = T + "/notify.sock"
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(60)
env = dict(os.environ, NOTIFY_SOCKET=path)
ok = True
def bad(msg):
    global ok
    print("notify: " + msg, file=sys.stderr)
    ok = False

def recv():
    return dict(l.split("=", 1) for l in s.recv(4096).decode().split("\n") if "=" in l)

def accepts_tcp(port):
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
        return True
    except OSError:
        return False

def accepts_unix(p):
    try:
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); u.settimeout(5); u.connect(p); u.close()
        return True
    except OSError:
        return False

p = subprocess.Popen([ferryd, "--pool", pool, "--foreground", "--iscsi", "127.0.0.1:" + iscsi,
                      "--listen", "127.0.0.1:" + listen, "--secret-file", T + "/secret"],
                     env=env, stderr=open(T + "/n.err", "w"))
m = recv()
if m.get("READY") != "1":
    bad("first message is not READY=1: %r" % m)
# The moment READY=1 arrives, every listener must accept.
if not accepts_unix(pool + "/ferryd.sock"): bad("control socket not accepting at READY=1")
if not accepts_tcp(iscsi): bad("iSCSI port not accepting at READY=1")
if not accepts_tcp(listen): bad("replication port not accepting at READY=1")
if m.get("MAINPID") != str(p.pid): bad("MAINPID %r, pid %d" % (m.get("MAINPID"), p.pid))
if "serving pool" not in m.get("STATUS", ""): bad("STATUS %r" % m.get("STATUS"))
p.send_signal(1)
m = recv()
if m.get("RELOADING") != "1": bad("SIGHUP: no RELOADING=1: %r" % m)
m = recv()
if m.get("READY") != "1": bad("SIGHUP: no READY=1 after reloading: %r" % m)
if subprocess.run([ferry, "--pool", pool, "volume", "list"], capture_output=True).returncode != 0:
    bad("not serving after SIGHUP")
if p.poll() is not None: bad("exited on SIGHUP")
p.terminate()
m = recv()
if m.get("STOPPING") != "1": bad("SIGTERM: no STOPPING=1: %r" % m)
if p.wait(60) != 0: bad("SIGTERM: exit %d" % p.returncode)

# A start that fails (the iSCSI port is taken) sends nothing and exits 1.
busy = socket.socket(); busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
busy.bind(("127.0.0.1", 0)); busy.listen()
q = subprocess.run([ferryd, "--pool", pool, "--foreground", "--iscsi",
                    "127.0.0.1:%d" % busy.getsockname()[1]], env=env, capture_output=True, timeout=60)
if q.returncode != 1: bad("failed start: exit %d" % q.returncode)
s.settimeout(0.5)
try:
    bad("failed start sent %r" % s.recv(4096))
except socket.timeout:
    pass
sys.exit(0 if ok else 1)
PY

finish
