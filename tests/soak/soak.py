#!/usr/bin/env python3
"""Fault soak of ferry replication: random workloads, cycles, faults, checks.

usage: soak.py BUILD_DIR [--long]

Two ferryd on loopback (site a primary, site b secondary) with the fault
proxy (tests/repl/faultproxy.py) between them.  Every round writes random
data, zeros and discards on the primary (through `ferry volume write` /
`volume discard`, and through iSCSI with qemu-io when available), starts a
cycle (explicit `pair sync`; the pair's periodic schedule runs too) and
injects one fault at a random moment.

The four cycle faults below are aimed at a random point of a cycle: the
link is throttled to 2/4/8 MB/s, 0.4..2 s worth of random data is written,
`pair sync` starts the cycle; the driver polls the primary's `pair status
--json` (every 20 ms, at most 5 s) until it shows the cycle, then until the
proxy has forwarded a random byte count of the data written for it (0 ..
1.05 x; the primary's done_bytes counts bytes handed to the socket, MiBs
ahead of the wire), and injects the fault right after the last status
read.  The fault counts as in flight when that status read showed the
cycle (report: fault_in_flight; where: outcomes "FAULT:at:wire-..");
12 % of them are deliberately injected right after `pair sync --wait`
returned, i.e. right after a commit (fault_between_cycles); "missed" are
those whose cycle ended before the chosen point.  The cycle faults are
picked 3 times as often as enospc and old-peer.

  kill-primary     SIGKILL of the primary's ferryd, restart
  kill-secondary   SIGKILL of the secondary's ferryd, restart
  cut              the link closed; 25 %: the proxy cuts by itself after
                   N bytes (1000 .. the data written; not throttled), in
                   flight when the cut fired
  stall            the link stops forwarding for 0.2..5 s
  enospc           the secondary's file system (a loop-mounted ext4) fills
                   up, leaving 0..8 MiB free; then space comes back
  old-peer         the secondary restarts with a copy of its pool taken
                   earlier (an older snapshot set)
  role-change      planned switchover a -> b and back (`pair demote` then
                   `pair promote`), SIGKILL of a random site at a random
                   moment of each step, the step repeated until it holds;
                   only when `ferry --help` lists them (counted 0 otherwise).
                   3/4 of the kills are aimed within the command's running
                   time (0 .. 2 x the longest seen lately); the report
                   counts kills before the command returned ("kill during
                   command") and after.  In the long run's rotation (the
                   primary must keep its --peer, the proxy, across the
                   switchovers); the last round of the short run

After every fault and recovery:
  - the secondary's last synced snapshot S is whole: md5(b:S) equals what
    the primary has for S (or what b had before the fault);
  - no flushed write is lost: md5(primary head) equals the model (every
    write that returned is applied to an in-memory image);
  - the snapshots the pair needs still exist (primary: last synced and the
    in-flight target; secondary: last synced);
  - the pair converges: `pair sync --wait` succeeds within a bounded number
    of tries, and then md5(a:S) == md5(b:S) == md5(b head) == model.

Environment: FERRY_SEED (replay), FERRY_SOAK_ROUNDS (rounds),
FERRY_SOAK_MINUTES (time cap of --long), FERRY_SANITIZED=1 (fewer rounds),
FERRY_SOAK_REPORT=FILE (JSON counts), FERRY_SOAK_FAULTS=a,b (only these).  Timing is not replayable (faults
land where the scheduler puts them); the sequence of choices is.
"""
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROXY = os.path.join(HERE, "..", "repl", "faultproxy.py")
MiB = 1 << 20

build = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else \
    os.environ.get("FERRY_BUILD", "")
LONG = "--long" in sys.argv
if not build:
    sys.exit("usage: soak.py BUILD_DIR [--long]")
FERRYD = os.path.join(build, "ferryd")
FERRY = os.path.join(build, "ferry")
SANITIZED = os.environ.get("FERRY_SANITIZED") == "1"
SEED = int(os.environ.get("FERRY_SEED", str(int(time.time()) % 1000000)))
ROUNDS = int(os.environ.get("FERRY_SOAK_ROUNDS",
                            "100000" if LONG else ("7" if SANITIZED else "12")))
MINUTES = float(os.environ.get("FERRY_SOAK_MINUTES", "60" if LONG else "1.2"))
SIZE = 32 * MiB
PERIOD = 3
os.environ["FERRY_REPL_TIMEOUT_MS"] = os.environ.get("FERRY_REPL_TIMEOUT_MS", "3000")

rng = random.Random(SEED)
T0 = time.monotonic()
T = tempfile.mkdtemp(prefix="ferry-soak.")
counts = {}        # fault -> trials
hits = {}          # fault -> trials where a cycle was observably in flight
between = {}       # fault -> trials deliberately timed right after a commit
kill_in_cmd = {}   # role-change: "during"/"after" the demote/promote command
role_times = {}    # verb -> seconds the command took when it returned before the kill
outcomes = {}      # "fault:outcome" -> n
failures = []      # (round, fault, message)
mounted = []       # loop mounts to undo
procs = []
ROUND = 0
FAULT = "setup"


def log(msg):
    print("[%7.1f r%d] %s" % (time.monotonic() - T0, ROUND, msg), flush=True)


def fail(msg):
    failures.append((ROUND, FAULT, msg))
    log("FAIL (%s): %s" % (FAULT, msg))


def bump(d, k, n=1):
    d[k] = d.get(k, 0) + n


def run(cmd, timeout=60, inp=None):
    try:
        p = subprocess.run(cmd, input=inp, capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return 124, "", "timed out after %s s: %s" % (timeout, " ".join(cmd))


def wait_for(seconds, cond, step=0.05):
    deadline = time.monotonic() + seconds
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Site:
    def __init__(self, name, pool, iscsi=False, listen=True):
        self.name, self.pool, self.port = name, pool, 0
        self.iscsi_port = free_port() if iscsi else 0
        self.listen = listen

    def cli(self, *args, timeout=60):
        return run([FERRY, "--pool", self.pool] + list(args), timeout=timeout)

    def ok(self, *args, timeout=60):
        rc, out, err = self.cli(*args, timeout=timeout)
        if rc != 0:
            raise RuntimeError("%s: ferry %s: rc %d: %s" % (self.name, " ".join(args), rc, err.strip()))
        return out

    def start(self):
        cmd = [FERRYD, "--pool", self.pool, "--log-level", "info",
               "--secret-file", os.path.join(T, "secret")]
        if self.listen:
            cmd += ["--listen", "127.0.0.1:%d" % self.port]
        if self.iscsi_port:
            cmd += ["--iscsi", "127.0.0.1:%d" % self.iscsi_port]
        for attempt in range(50):
            rc, _, err = run(cmd, timeout=60)
            if rc == 0:
                break
            # the port of a killed daemon may take a moment to be free
            time.sleep(0.2)
        else:
            raise RuntimeError("%s: ferryd does not start: %s" % (self.name, err.strip()))
        if not self.port and self.listen:
            with open(os.path.join(self.pool, "ferryd.log")) as f:
                for line in f:
                    if "accepting peers on 127.0.0.1:" in line:
                        self.port = int(line.rsplit(":", 1)[1])

    def pid(self):
        try:
            with open(os.path.join(self.pool, "ferryd.lock")) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def lock_free(self):
        try:
            fd = os.open(os.path.join(self.pool, "ferryd.lock"), os.O_RDWR)
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def signal(self, sig):
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not wait_for(30, self.lock_free):
            raise RuntimeError("%s: ferryd (pid %d) did not exit" % (self.name, pid))

    def kill(self):
        self.signal(signal.SIGKILL)

    def stop(self):
        self.signal(signal.SIGTERM)

    def status(self):
        rc, out, err = self.cli("pair", "status", "v", "--json", timeout=30)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    def last_synced(self):
        st = self.status()
        ls = st and st.get("last_synced")
        return ls.get("snapshot") if ls else None

    def md5(self, what):
        rc, out, err = self.cli("volume", "md5", what, timeout=60)
        return out.split()[0] if rc == 0 and out.strip() else None

    def snaps(self):
        rc, out, err = self.cli("snap", "list", "v", "--json", timeout=30)
        if rc != 0:
            return None
        return {s["name"] for s in json.loads(out)}


# ---- the model: what the primary's head must hold ------------------------------------
model = bytearray(SIZE)


def model_md5():
    return hashlib.md5(model).hexdigest()


def rand_extent(align, maxlen):
    length = max(align, (rng.randrange(1, maxlen) // align) * align)
    off = rng.randrange(0, (SIZE - length) // align + 1) * align
    return off, length


def op_write(a, zero, length=0):
    """length 0: a random extent of up to 2 MiB."""
    if length:
        off = rng.randrange(0, (SIZE - length) // 4096 + 1) * 4096
    else:
        off, length = rand_extent(rng.choice((512, 4096)), 2 * MiB)
    data = bytes(length) if zero else rng.randbytes(length)
    path = os.path.join(T, "chunk")
    with open(path, "wb") as f:
        f.write(data)
    rc, out, err = a.cli("volume", "write", "v", path, "--offset", str(off))
    if rc != 0:
        fail("volume write %d+%d: %s" % (off, length, err.strip()))
        return
    model[off:off + length] = data
    bump(outcomes, "ops:write-zero" if zero else "ops:write")


def op_discard(a):
    align = rng.choice((512, 4096))
    off, length = rand_extent(align, 4 * MiB)
    rc, out, err = a.cli("volume", "discard", "v", "--offset", str(off), "--length", str(length))
    if rc != 0:
        fail("volume discard %d+%d: %s" % (off, length, err.strip()))
        return
    model[off:off + length] = bytes(length)
    bump(outcomes, "ops:discard")


HAVE_QEMU_IO = shutil.which("qemu-io") is not None
IQN = "iqn.2026-11.io.ferry:v"


def op_iscsi(a):
    """qemu-io through ferryd's iSCSI target: pattern writes, zero writes
    and discards, then a flush; applied to the model only when qemu-io
    reports every command done."""
    cmds, edits = [], []
    for _ in range(rng.randrange(1, 4)):
        off, length = rand_extent(4096, MiB)
        k = rng.randrange(4)
        if k == 0:
            cmds += ["-c", "write -z %d %d" % (off, length)]
            edits.append((off, bytes(length)))
        elif k == 1:
            cmds += ["-c", "discard %d %d" % (off, length)]
            # ferry's UNMAP deallocates, and deallocated blocks read zero
            edits.append((off, bytes(length)))
        else:
            pat = rng.randrange(1, 256)
            cmds += ["-c", "write -P 0x%02x %d %d" % (pat, off, length)]
            edits.append((off, bytes([pat]) * length))
    cmds += ["-c", "flush"]
    url = "iscsi://127.0.0.1:%d/%s/0" % (a.iscsi_port, IQN)
    rc, out, err = run(["qemu-io", "-f", "raw", "-d", "unmap"] + cmds + [url], timeout=60)
    done = sum(1 for l in out.splitlines() if l.startswith(("wrote ", "discard ")))
    if rc != 0 or done != len(edits) or "error" in (out + err).lower():
        fail("qemu-io: rc %d: %s %s" % (rc, out.strip()[-300:], err.strip()[-300:]))
        return
    for off, data in edits:
        model[off:off + len(data)] = data
    bump(outcomes, "ops:iscsi")


def workload(a, n):
    for _ in range(n):
        k = rng.randrange(10)
        if k < 5:
            op_write(a, False)
        elif k < 7:
            op_write(a, True)
        elif k < 9 or not ISCSI:
            op_discard(a)
        else:
            op_iscsi(a)


# ---- proxy -------------------------------------------------------------------------------
class Proxy:
    def __init__(self, target_port):
        self.ctl = os.path.join(T, "proxy.ctl")
        self.portf = os.path.join(T, "proxy.port")
        self.set("pass")
        self.p = subprocess.Popen([sys.executable, PROXY, "127.0.0.1:%d" % target_port,
                                   self.portf, self.ctl])
        procs.append(self.p)
        if not wait_for(10, lambda: os.path.exists(self.portf) and os.path.getsize(self.portf) > 0):
            raise RuntimeError("proxy did not start")
        with open(self.portf) as f:
            self.port = int(f.read().strip())

    def up(self):
        """Bytes forwarded primary -> secondary so far."""
        try:
            with open(self.portf + ".stats") as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def set(self, mode):
        tmp = self.ctl + ".tmp"
        with open(tmp, "w") as f:
            f.write(mode + "\n")
        os.replace(tmp, self.ctl)


# ---- checks ------------------------------------------------------------------------------
def needed_missing(site, st):
    """Snapshots the pair needs on site (per its status st) that its snap
    list does not have; None when the list cannot be read."""
    need = set()
    if st.get("last_synced"):
        need.add(st["last_synced"]["snapshot"])
    cyc = st.get("cycle")
    if cyc and st.get("role", "primary") == "primary":
        # status names the cycle by number; its target is the pair's
        # snapshot of that number (src/repl/engine.c snap_name())
        target = cyc.get("target") or (cyc.get("number") and "ferry.v.%06d" % cyc["number"])
        if target:
            need.add(target)
    rc, out, err = site.cli("snap", "list", "v", "--json", timeout=30)
    if rc != 0:
        fail("%s: snap list: %s" % (site.name, err.strip()))
        return None
    have = {x["name"] for x in json.loads(out)}
    return need - have, have


def check_needed_snapshots(a, b):
    """No snapshot a cycle needs was removed.  A commit between reading the
    status and the list changes both legitimately: then read again."""
    for site in (a, b):
        for attempt in range(5):
            st = site.status()
            if st is None:
                fail("%s: pair status unavailable" % site.name)
                break
            r = needed_missing(site, st)
            if r is None:
                break
            missing, have = r
            if not missing:
                break
            if site.status() == st:
                fail("%s lost snapshots the pair needs: %s (has %s)"
                     % (site.name, sorted(missing), sorted(have)))
                break


def check_no_write_lost(a):
    m = a.md5("v")
    if m != model_md5():
        fail("primary head md5 %s != model %s: a flushed write was lost" % (m, model_md5()))
        return False
    return True


def check_secondary_whole(a, b, prev, mprev):
    """The secondary's last synced snapshot is whole: the same as before the
    fault or the same as the primary's snapshot of that name.  A cycle that
    commits while we look replaces it legitimately: then look again."""
    for attempt in range(5):
        cur = b.last_synced()
        if cur is None:
            fail("secondary has no last synced snapshot")
            return
        mb = b.md5("v@" + cur)
        want = mprev if cur == prev else a.md5("v@" + cur)
        if mb is not None and mb == want:
            return
        if b.last_synced() == cur and a.last_synced() in (cur, prev):
            break
    fail("secondary's last synced %s: md5 %s, expected %s (prev %s)" % (cur, mb, want, prev))


def converge(a, b, proxy, tries=8, budget=120):
    """Bounded: sync --wait until it succeeds, once more, then everything
    agrees with the model."""
    proxy.set("pass")
    deadline = time.monotonic() + budget
    ok, err = 0, ""
    t0 = time.monotonic()
    for i in range(tries):
        rc, out, err = a.cli("pair", "sync", "v", "--wait", timeout=60)
        if rc == 0:
            ok += 1
            if ok == 2:
                break
        if time.monotonic() > deadline:
            break
    bump(outcomes, "converge:tries", i + 1)
    if ok < 2:
        fail("pair did not converge in %d tries / %d s: %s" % (tries, budget, err.strip()))
        return False
    for attempt in range(5):
        sa, sb = a.last_synced(), b.last_synced()
        if sa == sb and sa:
            ma, mb = a.md5("v@" + sa), b.md5("v@" + sb)
            if ma is not None and mb is not None:
                break
        time.sleep(0.2)   # a periodic cycle committed meanwhile
    else:
        fail("last synced differs after convergence: a %s, b %s" % (sa, sb))
        return False
    mh, mm, mah = b.md5("v"), model_md5(), a.md5("v")
    if not (ma == mb == mh == mm == mah):
        fail("after convergence on %s: a@S %s b@S %s b head %s model %s a head %s"
             % (sa, ma, mb, mh, mm, mah))
        return False
    bump(outcomes, "converge:seconds", int(time.monotonic() - t0))
    return True


# ---- faults ------------------------------------------------------------------------------
RATES = (2000000, 4000000, 8000000)
# The faults that must land mid-cycle >= 100 times each in an hour are
# picked 3 times as often as enospc and old-peer (a few dozen are enough)
WEIGHT = {"kill-primary": 3, "kill-secondary": 3, "cut": 3, "stall": 3}
BETWEEN = 0.12     # share of cycle faults deliberately timed right after a commit


CYCLE_FAULTS = ("kill-primary", "kill-secondary", "cut", "stall")


def status_cycle(site):
    """The primary's in-flight cycle per `pair status` (None between cycles
    or when the daemon does not answer)."""
    st = site.status()
    return st.get("cycle") if st else None


def grow_increment(a, rate):
    """Random (incompressible) data for the next cycle, sized for 0.4..2 s
    at the link's throttle, so that a cycle is long enough to be hit at a
    random point, yet rounds stay short."""
    length = int(rate * rng.uniform(0.4, 2.0)) // 4096 * 4096
    length = min(max(length, MiB), 8 * MiB)
    op_write(a, False, length)
    return length


def at_bucket(cyc):
    """Where in its cycle a fault landed: by the bytes the proxy forwarded
    since the cycle showed up, of the data written for it, and by the
    progress the primary showed (which counts bytes handed to the socket,
    so it runs ahead of the wire by the socket buffers)."""
    fwd, length = cyc["_wire"]
    done, total = cyc.get("done_bytes", 0), cyc.get("total_bytes", 0)
    q = fwd * 4 // length
    wire = "wire-%d-%d%%" % (q * 25, q * 25 + 25) if q < 4 else "wire-past-data"
    if done == 0:
        return wire + ",status-start"
    if done >= total:
        return wire + ",status-all-sent"
    return wire + ",status-mid"


def aim_at_cycle(a, proxy):
    """Starts a cycle on a throttled link and returns at a random point of
    it: once the primary's status shows the cycle in flight (bounded wait,
    5 s), at a random fraction of its progress (done_bytes of total_bytes).
    Returns the cycle object of the last status read right before the
    caller injects its fault, None when no cycle was in flight then.  A
    share of the calls returns right after a commit instead (counted as
    between-cycles by the caller: the returned value is then "between")."""
    rate = rng.choice(RATES)
    proxy.set("throttle %d" % rate)
    length = grow_increment(a, rate)
    if rng.random() < BETWEEN:
        rc, out, err = a.cli("pair", "sync", "v", "--wait", timeout=60)
        if rc != 0:
            log("note: pair sync --wait: %s" % err.strip())
        return "between"
    rc, out, err = a.cli("pair", "sync", "v")
    if rc != 0:
        log("note: pair sync: %s" % err.strip())
    wait_for(5, lambda: bool(status_cycle(a)), step=0.02)
    cyc = status_cycle(a)
    if not cyc:
        bump(outcomes, "%s:no-cycle-seen" % FAULT)
        return None
    up0 = proxy.up()
    if rng.random() < 0.5:
        workload(a, rng.randrange(1, 3))   # writes while the cycle runs
    # The point: a random byte count of the data written for the cycle, as
    # forwarded by the proxy (the primary's done_bytes counts what entered
    # the socket: MiBs ahead of the wire).  A few wait past the data: the
    # end of the stream and the commit.
    target = rng.random() * 1.05 * length
    number = cyc.get("number")
    # bounded by the data's time at the throttle, twice, + 3 s
    deadline = time.monotonic() + 2.0 * length / rate + 3.0
    while True:
        cur = status_cycle(a)
        fwd = proxy.up() - up0
        if not cur:
            # it ended (committed or failed) before the point was reached:
            # the fault lands between cycles, reported as such
            return None
        cur["_wire"] = (fwd, length)
        if cur.get("number") != number or time.monotonic() >= deadline or fwd >= target:
            return cur
        time.sleep(0.02)


def count_aim(cyc):
    """Counts one cycle fault by where aim_at_cycle() put it."""
    if cyc == "between":
        bump(between, FAULT)
    elif cyc:
        bump(hits, FAULT)
        bump(outcomes, "%s:at:%s" % (FAULT, at_bucket(cyc)))
    else:
        bump(outcomes, "%s:missed-cycle" % FAULT)


def fault_kill(a, b, proxy, victim):
    prev = b.last_synced()
    mprev = b.md5("v@" + prev) if prev else None
    cyc = aim_at_cycle(a, proxy)
    site = a if victim == "a" else b
    site.kill()
    count_aim(cyc)
    proxy.set("cut")       # nothing commits while we look
    site.start()
    check_no_write_lost(a)
    check_secondary_whole(a, b, prev, mprev)
    check_needed_snapshots(a, b)


def proxy_mode(proxy):
    try:
        with open(proxy.ctl) as f:
            return f.read().split()[:1] or ["pass"]
    except OSError:
        return ["pass"]


def fault_cut_after(a, proxy):
    """The proxy cuts the link by itself after N bytes of the cycle's data
    (not throttled: the proxy cannot do both).  In flight when the cut
    fired, i.e. the proxy closed a cycle's connection mid-stream: every
    connection of the pair during a round is a cycle's."""
    length = grow_increment(a, rng.choice(RATES))
    bump(outcomes, "cut:cut-after")
    proxy.set("cut-after %d" % rng.randrange(1000, length))
    a.cli("pair", "sync", "v")
    seen = [False]

    def fired():
        if status_cycle(a):
            seen[0] = True
        return proxy_mode(proxy)[0] == "pass"
    if wait_for(5, fired, step=0.02):
        bump(hits, FAULT)
        bump(outcomes, "cut:cut-after-fired%s" % ("" if seen[0] else "-cycle-not-polled"))
    else:
        bump(outcomes, "cut:cut-after-not-fired")


def fault_link(a, b, proxy, kind):
    prev = b.last_synced()
    mprev = b.md5("v@" + prev) if prev else None
    if kind == "cut" and rng.random() < 0.25:
        fault_cut_after(a, proxy)
    else:
        cyc = aim_at_cycle(a, proxy)
        if kind == "cut":
            proxy.set("cut")
            count_aim(cyc)
            time.sleep(rng.uniform(0.05, 0.5))
        else:
            proxy.set("stall")
            count_aim(cyc)
            d = rng.uniform(0.2, 5.0)
            bump(outcomes, "stall:past-deadline" if d > 3.0 else "stall:within-deadline")
            time.sleep(d)
    proxy.set("pass")
    check_secondary_whole(a, b, prev, mprev)
    check_needed_snapshots(a, b)


def fault_enospc(a, b, proxy, mnt):
    prev = b.last_synced()
    mprev = b.md5("v@" + prev) if prev else None
    workload(a, rng.randrange(2, 6))
    filler = os.path.join(mnt, "filler")
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    leave = rng.randrange(0, 8 * MiB)
    size = max(0, free - leave)
    run(["fallocate", "-l", str(size), filler], timeout=30)
    proxy.set("pass")
    rc, out, err = a.cli("pair", "sync", "v", "--wait", timeout=60)
    if rc == 0:
        bump(outcomes, "enospc:cycle-fit")
    else:
        e = (a.status() or {}).get("error") or ""
        if "space" in e.lower():
            bump(outcomes, "enospc:refused-no-space")
        else:
            bump(outcomes, "enospc:failed-other")
            log("enospc: cycle failed with: %s / %s" % (err.strip(), e))
    if b.status() is None:
        fail("secondary does not answer while its disk is full")
    # While full, the secondary's volume must stay readable even when a
    # snapshot delete's fold is waiting for space (RELIABILITY.md finding 2,
    # fixed): its last synced snapshot must be readable (its content is
    # checked against the model once space is back).
    s = b.last_synced()
    rc, out, err = b.cli("volume", "md5", "v@%s" % s, timeout=60)
    if rc != 0:
        fail("secondary: volume md5 while full: %s" % err.strip())
    else:
        bump(outcomes, "enospc:secondary-readable-while-full")
    os.unlink(filler)
    check_secondary_whole(a, b, prev, mprev)
    check_needed_snapshots(a, b)


saves = []   # (dir, last synced, md5 of it)


def save_secondary(b):
    b.stop()
    d = os.path.join(T, "save%d" % ROUND)
    run(["cp", "-a", "--sparse=always", b.pool, d], timeout=120)
    b.start()
    s = b.last_synced()
    saves.append((d, s, b.md5("v@" + s) if s else None))
    if len(saves) > 3:
        shutil.rmtree(saves.pop(0)[0], ignore_errors=True)


def swap_pool(b, src):
    """Stops b, replaces its pool's contents by a copy of src, restarts."""
    b.stop()
    for e in os.listdir(b.pool):
        p = os.path.join(b.pool, e)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    rc, out, err = run(["cp", "-a", "--sparse=always", src + "/.", b.pool], timeout=120)
    if rc != 0:
        raise RuntimeError("restoring %s: %s" % (src, err))
    b.start()


def fault_old_peer(a, b, proxy):
    """The secondary comes back with a copy of its pool taken earlier.  It
    must either resume correctly (the copy is as new as the primary's base)
    or refuse with a clear error, never apply a cycle onto the wrong base."""
    d, s_old, m_old = saves[rng.randrange(len(saves))]
    cur = os.path.join(T, "current")
    shutil.rmtree(cur, ignore_errors=True)
    workload(a, rng.randrange(1, 3))
    proxy.set("cut")       # nothing commits until the old copy is in place
    b.stop()
    run(["cp", "-a", "--sparse=always", b.pool, cur], timeout=120)
    a_synced = a.last_synced()
    swap_pool(b, d)
    kind = "same-as-current" if s_old == a_synced else "older"
    proxy.set("pass")
    rc, out, err = a.cli("pair", "sync", "v", "--wait", timeout=60)
    if rc == 0:
        # accepted: then it must be right
        s = b.last_synced()
        if b.md5("v@" + s) != a.md5("v@" + s) or b.md5("v") != b.md5("v@" + s):
            fail("secondary restored from an older copy (%s) accepted a cycle with wrong data" % s_old)
        bump(outcomes, "old-peer:%s:resumed" % kind)
        if kind == "older":
            log("note: an older secondary (%s, primary at %s) was accepted" % (s_old, a_synced))
    else:
        proxy.set("cut")
        st = a.status() or {}
        e = st.get("error") or err.strip()
        bump(outcomes, "old-peer:%s:refused" % kind)
        outcomes.setdefault("old-peer:messages", set()).add(e[:160])
        if not e:
            fail("old peer refused without an error message")
        # the secondary never silently changed its old snapshot
        s_now = b.last_synced()
        if s_now != s_old:
            fail("refused, but the secondary's last synced moved from %s to %s" % (s_old, s_now))
        elif b.md5("v@" + s_old) != m_old:
            fail("secondary's restored snapshot %s changed without a commit" % s_old)
        check_needed_snapshots(a, b)
        # put the current pool back: the pair must carry on
        swap_pool(b, cur)
    proxy.set("pass")


def role_of(site):
    st = site.status()
    return st.get("role") if st else None


def role_step(cmd_site, verb, done, sites, what):
    """Runs `pair VERB v` on cmd_site while SIGKILL hits one of the sites at
    a random moment (restarted at once), then repeats the command until
    done() holds (the transition must be repeatable after a crash)."""
    victim = rng.choice(sites)
    last = ""
    p = subprocess.Popen([FERRY, "--pool", cmd_site.pool, "pair", verb, "v"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    # Most kills are aimed within the command's running time (up to 2 x
    # the longest seen lately: promote takes milliseconds, demote ~0.1 s),
    # the rest anywhere in 0..0.6 s, mostly after it returned.
    seen = role_times.get(verb, [])[-20:]
    span = 2.0 * max(seen) if seen else 0.3
    delay = rng.uniform(0, span if rng.random() < 0.75 else 0.6)
    # poll (not sleep) to know when the command returned, if before the kill
    returned = [None]

    def ended():
        if returned[0] is None and p.poll() is not None:
            returned[0] = time.monotonic() - t0
        return False
    while True:   # bounded: delay <= 0.6 s; steps finer than the commands
        ended()
        left = t0 + delay - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(0.001, left))
    running = p.poll() is None
    victim.kill()
    bump(outcomes, "role-change:kill-%s-during-%s" % (victim.name, verb))
    if running:
        bump(kill_in_cmd, "during-command")
        bump(outcomes, "role-change:%s:kill-during-command" % verb)
    else:
        bump(kill_in_cmd, "after-command")
        bump(outcomes, "role-change:%s:kill-after-command" % verb)
        role_times.setdefault(verb, []).append(returned[0] if returned[0] is not None
                                               else delay)
    victim.start()
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        fail("%s: `pair %s` hung after a kill" % (what, verb))
    for attempt in range(10):
        if done():
            return True
        rc, out, err = cmd_site.cli("pair", verb, "v", timeout=60)
        if rc != 0:
            last = err.strip()
            time.sleep(0.3)
    if done():
        return True
    fail("%s: `pair %s` did not complete after a kill of %s: %s"
         % (what, verb, victim.name, last))
    return False


def switchover(old, new, what):
    """Planned switchover old -> new with a kill in each step; afterwards
    new's head holds every write old acknowledged."""
    if not role_step(old, "demote", lambda: role_of(old) == "secondary", [old, new],
                     what):
        return False
    s = old.last_synced()
    if new.md5("v@" + s) != model_md5():
        fail("%s: after demote, %s@%s differs from the model: writes lost" % (what, new.name, s))
    if not role_step(new, "promote", lambda: role_of(new) == "primary", [old, new], what):
        return False
    if new.md5("v") != model_md5():
        fail("%s: promoted %s's head differs from the model: writes lost" % (what, new.name))
        return False
    return True


def fault_role(a, b, proxy):
    proxy.set("pass")
    peer_before = (a.status() or {}).get("peer")
    if not switchover(a, b, "a->b"):
        raise RuntimeError("switchover a->b failed")
    # the new primary takes writes and replicates them back
    for _ in range(rng.randrange(1, 4)):
        op_write(b, rng.random() < 0.3)
    ok = any(b.cli("pair", "sync", "v", "--wait", timeout=60)[0] == 0 for _ in range(5))
    s = b.last_synced()
    if not ok or a.md5("v@" + s) != model_md5() or a.md5("v@" + s) != b.md5("v@" + s):
        fail("b->a cycle after the switchover: synced %s, a %s b %s model %s"
             % (ok, a.md5("v@%s" % s), b.md5("v@%s" % s), model_md5()))
    if not switchover(b, a, "b->a"):
        raise RuntimeError("switchover b->a failed")
    peer_after = (a.status() or {}).get("peer")
    if peer_after != peer_before:
        bump(outcomes, "role-change:peer-changed")
        if LINK_FAULTS_FOLLOW:
            # the operator's --peer is kept across role changes (since
            # 6ff470a); otherwise later link faults would miss the link
            fail("a's peer was %s, after the switchovers %s" % (peer_before, peer_after))
            raise RuntimeError("the link no longer goes through the proxy")
        log("note: a's peer was %s, after the switchovers %s" % (peer_before, peer_after))


def role_change_available():
    rc, out, err = run([FERRY, "--help"], timeout=30)
    return "pair demote" in out and "pair promote" in out


# ---- setup, main loop, teardown ----------------------------------------------------------
def setup_loop_fs(path, size_mib):
    """A small ext4 on a loop device for the secondary's pool; None when
    not possible (not root, no loop devices)."""
    if os.geteuid() != 0:
        return None, "not root"
    img = os.path.join(T, "bfs.img")
    os.makedirs(path)
    with open(img, "wb") as f:
        f.truncate(size_mib * MiB)
    for cmd in (["mkfs.ext4", "-q", "-F", "-m", "0", img], ["mount", "-o", "loop", img, path]):
        rc, out, err = run(cmd, timeout=60)
        if rc != 0:
            return None, "%s: %s" % (cmd[0], err.strip())
    mounted.append(path)
    return path, None


def teardown():
    for s in SITES:
        try:
            pid = s.pid()
            if pid:
                os.kill(pid, signal.SIGKILL)
                wait_for(20, s.lock_free)
        except OSError:
            pass
    for p in procs:
        p.kill()
        p.wait()
    for m in mounted:
        run(["umount", m], timeout=60)   # also detaches the loop device
    shutil.rmtree(T, ignore_errors=True)


def sanitizer_reports():
    bad = []
    for s in SITES:
        try:
            with open(os.path.join(s.pool, "ferryd.log"), errors="replace") as f:
                txt = f.read()
        except OSError:
            continue
        if ("ERROR:" in txt and "Sanitizer" in txt) or "runtime error:" in txt:
            bad.append(s.name)
    return bad


SITES = []
ISCSI = False
LINK_FAULTS_FOLLOW = False   # link faults run after role changes in the same run


def main():
    global ROUND, FAULT, ISCSI, LINK_FAULTS_FOLLOW
    print("soak: seed %d (FERRY_SEED=%d replays the choices), %s, up to %d rounds / %.1f min"
          % (SEED, SEED, "long" if LONG else "short", ROUNDS, MINUTES), flush=True)
    with open(os.path.join(T, "secret"), "w") as f:
        f.write("soak-secret-%d\n" % rng.randrange(1 << 60))
    os.chmod(os.path.join(T, "secret"), 0o600)
    mnt, why = setup_loop_fs(os.path.join(T, "bfs"), 128)
    if mnt is None:
        print("soak: enospc fault skipped: no loop-mounted file system (%s)" % why, flush=True)
        bpool = os.path.join(T, "b")
    else:
        bpool = os.path.join(mnt, "pool")
    ISCSI = HAVE_QEMU_IO and "--iscsi" in run([FERRYD, "--help"])[1]
    if not ISCSI:
        print("soak: iSCSI workload skipped (no qemu-io or no ferryd --iscsi)", flush=True)
    # FERRY_SOAK_A_NOLISTEN=1: site a has no --listen, so after a role
    # change b reaches it over the connections a offers (call-back).
    a = Site("a", os.path.join(T, "a"), iscsi=ISCSI,
             listen=not os.environ.get("FERRY_SOAK_A_NOLISTEN"))
    b = Site("b", bpool)
    SITES.extend([a, b])
    b.start()
    a.start()
    proxy = Proxy(b.port)
    a.ok("volume", "create", "v", "--size", str(SIZE), "--object-size", "1M")
    if ISCSI:
        a.ok("export", "add", "v", "--iqn", IQN)
    workload(a, 4)
    a.ok("pair", "create", "v", "--peer", "127.0.0.1:%d" % proxy.port, "--period", str(PERIOD),
         "--max-inflight", str(rng.randrange(1, 9)), "--compress", rng.choice(("zstd", "none")))
    if not converge(a, b, proxy):
        raise RuntimeError("initial sync failed")
    roles = role_change_available()
    if not roles:
        print("soak: role-change fault: 0 trials (`pair demote/promote` not in `ferry --help`)",
              flush=True)
    faults = ["kill-primary", "kill-secondary", "cut", "stall", "old-peer"]
    if mnt:
        faults.append("enospc")
    # Role changes are in the long run's rotation: the primary keeps the
    # operator's --peer (the proxy) across a switchover and back, checked
    # after each (fault_role).  The short run has one, as its last round.
    only = os.environ.get("FERRY_SOAK_FAULTS")
    if only:
        faults = [f for f in faults + ["role-change"] if f in only.split(",")]
        if "role-change" in faults and not roles:
            faults.remove("role-change")
    elif LONG and roles:
        faults.append("role-change")
    last_role = roles and not LONG and not only
    LINK_FAULTS_FOLLOW = "role-change" in faults and any(
        f in faults for f in ("kill-primary", "kill-secondary", "cut", "stall"))
    for f in faults:
        counts[f] = 0
    counts.setdefault("role-change", 0)
    order = faults[:]
    rng.shuffle(order)
    deadline = T0 + MINUTES * 60
    for ROUND in range(1, ROUNDS + 1):
        if time.monotonic() > deadline:
            log("time cap reached")
            ROUND -= 1
            break
        nfail = len(failures)
        FAULT = "workload"
        workload(a, rng.randrange(1, 7))
        if ROUND % 7 == 1 or not saves:
            FAULT = "save"
            save_secondary(b)
        # every fault once first (so that a short run covers them all), then
        # the least exercised one half of the time, else any
        if last_role and ROUND == ROUNDS:
            FAULT = "role-change"
        elif ROUND <= len(faults):
            FAULT = order[ROUND - 1]
        elif rng.random() < 0.5:
            FAULT = min(faults, key=lambda f: (counts[f] / WEIGHT.get(f, 1), faults.index(f)))
        else:
            FAULT = rng.choices(faults, [WEIGHT.get(f, 1) for f in faults])[0]
        bump(counts, FAULT)
        try:
            if FAULT == "kill-primary":
                fault_kill(a, b, proxy, "a")
            elif FAULT == "kill-secondary":
                fault_kill(a, b, proxy, "b")
            elif FAULT in ("cut", "stall"):
                fault_link(a, b, proxy, FAULT)
            elif FAULT == "enospc":
                fault_enospc(a, b, proxy, mnt)
            elif FAULT == "old-peer":
                fault_old_peer(a, b, proxy)
            elif FAULT == "role-change":
                fault_role(a, b, proxy)
            converge(a, b, proxy)
            check_no_write_lost(a)
            check_needed_snapshots(a, b)
        except RuntimeError as e:
            fail("round aborted: %s" % e)
            break
        log("%s %s" % (FAULT, "ok" if len(failures) == nfail else "FAILED"))
        if len(failures) - nfail and os.environ.get("FERRY_SOAK_STOP_ON_FAIL", "1") == "1" and not LONG:
            break
    FAULT = "final"
    rc, out, err = a.cli("pair", "verify", "v", timeout=120)
    if rc != 0:
        fail("pair verify: %s %s" % (out.strip(), err.strip()))
    st = a.status() or {}
    cycles = (st.get("last_synced") or {}).get("cycle")
    for s in sanitizer_reports():
        fail("sanitizer report in %s's ferryd.log" % s)
    per_fault = {}
    for f in counts:
        e = {"trials": counts[f],
             "failures": sum(1 for x in failures if x[1] == f)}
        if f in CYCLE_FAULTS:
            e["in_flight"] = hits.get(f, 0)
            e["between_cycles"] = between.get(f, 0)
            e["missed"] = counts[f] - e["in_flight"] - e["between_cycles"]
        if f == "cut":
            e["cut_after"] = outcomes.get("cut:cut-after", 0)
        if f == "role-change":
            e["kill_during_command"] = kill_in_cmd.get("during-command", 0)
            e["kill_after_command"] = kill_in_cmd.get("after-command", 0)
        per_fault[f] = e
    report = {
        "seed": SEED, "rounds": ROUND, "minutes": round((time.monotonic() - T0) / 60, 1),
        "faults": counts, "fault_in_flight": hits, "fault_between_cycles": between,
        "per_fault": per_fault, "last_cycle": cycles,
        "role_command_seconds": {v: sorted(t)[len(t) // 2] for v, t in role_times.items()},
        "outcomes": {k: (sorted(v) if isinstance(v, set) else v) for k, v in outcomes.items()},
        "role_change_available": roles, "iscsi": ISCSI, "enospc": bool(mnt),
        "failures": [{"round": r, "fault": f, "message": m} for r, f, m in failures],
    }
    print("soak: report\n" + json.dumps(report, indent=1, sort_keys=True), flush=True)
    print("soak: %-15s %7s %9s %8s %7s %8s  %s" % ("fault", "trials", "in-flight", "between",
                                                 "missed", "failures", "other"))
    for f in sorted(per_fault):
        e = per_fault[f]
        other = ""
        if "cut_after" in e:
            other = "cut-after %d" % e["cut_after"]
        if "kill_during_command" in e:
            other = "kill during command %d, after %d" % (e["kill_during_command"],
                                                          e["kill_after_command"])
        print("soak: %-15s %7d %9s %8s %7s %8d  %s"
              % (f, e["trials"], e.get("in_flight", "-"), e.get("between_cycles", "-"),
                 e.get("missed", "-"), e["failures"], other), flush=True)
    if os.environ.get("FERRY_SOAK_REPORT"):
        with open(os.environ["FERRY_SOAK_REPORT"], "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
    if failures:
        print("soak: %d failures (seed %d)" % (len(failures), SEED), flush=True)
        for s in SITES:
            print("--- %s ferryd.log (tail)" % s.name)
            try:
                with open(os.path.join(s.pool, "ferryd.log"), errors="replace") as f:
                    print("".join(f.readlines()[-30:]))
            except OSError:
                pass
        return 1
    print("soak: all checks passed (seed %d, %d rounds)" % (SEED, ROUND), flush=True)
    return 0


class Stopped(Exception):
    pass


def on_signal(sig, frame):
    raise Stopped("signal %d" % sig)


if __name__ == "__main__":
    rc = 1
    # also when started in the background, where SIGINT is ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        rc = main()
    except Exception as e:   # report and clean up whatever broke
        import traceback
        traceback.print_exc()
        print("soak: aborted at round %d (seed %d): %s" % (ROUND, SEED, e), flush=True)
        rc = 1
    finally:
        teardown()
    sys.exit(rc)
