#!/usr/bin/env python3
"""A fault-injecting TCP proxy for the replication tests.

usage: faultproxy.py TARGET_HOST:PORT PORT_FILE CONTROL_FILE

Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening) and
forwards every connection to TARGET.  Before forwarding each chunk it reads
CONTROL_FILE (one line; missing or empty = pass):

  pass            forward as is
  delay MS        hold every chunk MS milliseconds
  throttle BPS    at most BPS bytes per second per direction
  stall           stop forwarding (connections stay open, data waits)
  cut             close every open connection now, refuse new ones
  cut-after N     forward N more bytes (primary -> secondary) and then cut
                  once; the file is rewritten to "pass" afterwards

It counts forwarded bytes per direction in PORT_FILE.stats ("up down").
"""
import os
import select
import socket
import sys
import threading
import time

target_host, target_port = sys.argv[1].rsplit(":", 1)
port_file, control_file = sys.argv[2], sys.argv[3]
lock = threading.Lock()
stats = {"up": 0, "down": 0, "budget": None}
conns = set()


def mode():
    try:
        with open(control_file) as f:
            words = f.read().split()
    except OSError:
        return ("pass",)
    return tuple(words) if words else ("pass",)


def write_stats():
    tmp = port_file + ".stats.tmp"
    with open(tmp, "w") as f:
        f.write("%d %d\n" % (stats["up"], stats["down"]))
    os.replace(tmp, port_file + ".stats")


def cut_all():
    with lock:
        for s in list(conns):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        conns.clear()


def serve(client):
    try:
        upstream = socket.create_connection((target_host, int(target_port)), timeout=5)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    with lock:
        conns.add(client)
        conns.add(upstream)
    pair = {client: (upstream, "up"), upstream: (client, "down")}
    try:
        while True:
            m = mode()
            if m[0] == "cut":
                break
            if m[0] == "stall":
                time.sleep(0.05)
                continue
            r, _, _ = select.select([client, upstream], [], [], 0.1)
            done = False
            for s in r:
                data = s.recv(65536)
                if not data:
                    done = True
                    break
                dst, d = pair[s]
                m = mode()
                if m[0] == "cut-after" and d == "up":
                    with lock:
                        if stats["budget"] is None:
                            stats["budget"] = int(m[1])
                        if len(data) > stats["budget"]:
                            stats["budget"] = None
                            with open(control_file, "w") as f:
                                f.write("pass\n")
                            done = True
                            break
                        stats["budget"] -= len(data)
                if m[0] == "delay":
                    time.sleep(int(m[1]) / 1000.0)
                if m[0] == "throttle":
                    time.sleep(len(data) / float(m[1]))
                while mode()[0] == "stall":
                    time.sleep(0.05)
                dst.sendall(data)
                with lock:
                    stats[d] += len(data)
                    write_stats()
            if done:
                break
    except (OSError, ValueError):
        # ValueError: a "cut" from the main thread closed a socket while
        # this thread was about to select() on it; the connection is gone
        # either way.
        pass
    finally:
        for s in (client, upstream):
            with lock:
                conns.discard(s)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def watcher():
    # "cut" must also hit connections that are idle in select.
    while True:
        if mode()[0] == "cut":
            cut_all()
        time.sleep(0.05)


def main():
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    with lock:
        write_stats()
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % ls.getsockname()[1])
    os.replace(tmp, port_file)
    threading.Thread(target=watcher, daemon=True).start()
    while True:
        c, _ = ls.accept()
        if mode()[0] == "cut":
            c.close()
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
