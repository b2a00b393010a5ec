#!/usr/bin/env python3
"""Samples the bytes a TCP connection delivers, every INTERVAL seconds.

usage: rate_sampler.py PORT INTERVAL MAX_SECONDS OUT_FILE
Watches the established TCP connections to 127.0.0.1:PORT (ss -tin:
bytes_acked, the payload bytes the receiver acknowledged) and writes one
"t bytes" line per sample (t from the first sample, bytes summed over the
connections, a closed connection keeping its last count).  Stops after
MAX_SECONDS, or 3 s after the count last moved, or on SIGTERM.  Then
prints: mean rate, CV and number of samples over the steady part (the
windows strictly between the first and the last window that moved).
"""
import re
import signal
import statistics
import subprocess
import sys
import time

port, interval, max_s, out = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
last = {}
samples = []


def read():
    r = subprocess.run(["ss", "-tinH", "state", "established", "( dport = :%d )" % port],
                       capture_output=True, text=True).stdout
    key = None
    for line in r.splitlines():
        if not line.startswith((" ", "\t")):
            f = line.split()
            key = f[2] if len(f) >= 4 else line   # local address:port
            continue
        m = re.search(r"bytes_acked:(\d+)", line)
        if m and key:
            last[key] = int(m.group(1))
    return sum(last.values())


t0 = time.monotonic()
next_t = t0
moved_at = t0
prev = 0
while not stop:
    before = time.monotonic()
    b = read()
    now = time.monotonic()
    # ss read the counters somewhere in between: on a loaded machine the
    # call itself can take milliseconds
    samples.append(((before + now) / 2 - t0, b))
    if b != prev:
        moved_at = now
        prev = b
    if now - t0 > max_s or (b and now - moved_at > 3.0):
        break
    next_t += interval
    d = next_t - time.monotonic()
    if d > 0:
        time.sleep(d)
with open(out, "w") as f:
    for t, b in samples:
        f.write("%.3f %d\n" % (t, b))
rates = []
moving = [i for i in range(1, len(samples)) if samples[i][1] != samples[i - 1][1]]
if len(moving) >= 3:
    first, lastw = moving[0], moving[-1]
    for i in range(first + 1, lastw):
        dt = samples[i][0] - samples[i - 1][0]
        rates.append((samples[i][1] - samples[i - 1][1]) / dt)
if len(rates) >= 2:
    mean = statistics.mean(rates)
    print("mean %.0f cv %.4f n %d min %.0f max %.0f" % (mean, statistics.pstdev(rates) / mean,
                                                         len(rates), min(rates), max(rates)))
else:
    print("mean 0 cv 0 n %d min 0 max 0" % len(rates))
