#!/bin/bash
# ferry's main job end to end, in about a minute: site A serves a thin
# volume over iSCSI, a real client writes a file system and files into it,
# and a replication pair ships each cycle's changes to site B, which
# converges to the same bytes.  Usage: scripts/demo.sh BUILD_DIR
#
# The client is the host kernel (qemu-storage-daemon exports the LUN as a
# FUSE file, a buffered loop device, mkfs.ext4, mount, cp) when it can be:
# root, /dev/fuse, loop devices, qemu-storage-daemon.  Otherwise qemu-io
# writes raw data, zeros and discards through iSCSI, and the demo says so.
set -euo pipefail
B=${1:-build}
FERRYD=$B/ferryd
FERRY=$B/ferry
[ -x "$FERRYD" ] && [ -x "$FERRY" ] || { echo "demo: build first (no $FERRYD / $FERRY)" >&2; exit 1; }
for tool in qemu-io python3; do
	command -v $tool >/dev/null || { echo "demo: $tool missing (run scripts/deps.sh)" >&2; exit 1; }
done

T=$(mktemp -d /tmp/ferry-demo.XXXXXX)
A=$T/siteA
SB=$T/siteB
QSD_PID='' LOOP='' MNT='' POLL_PID=''
stop_ferryd() { # stop_ferryd POOL: SIGTERM, wait (bounded) until it is gone
	local pid
	[ -f "$1/ferryd.lock" ] || return 0
	pid=$(cat "$1/ferryd.lock" 2>/dev/null || true)
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
	echo "demo: ferryd $pid did not stop on SIGTERM; killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
	set +e
	[ -n "$POLL_PID" ] && kill "$POLL_PID" 2>/dev/null && wait "$POLL_PID" 2>/dev/null
	[ -n "$MNT" ] && mountpoint -q "$MNT" && { umount "$MNT" || umount -l "$MNT"; }
	[ -n "$LOOP" ] && losetup -d "$LOOP"
	if [ -n "$QSD_PID" ]; then
		kill -TERM "$QSD_PID" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$QSD_PID" 2>/dev/null || break; sleep 0.05; done
	fi
	stop_ferryd "$A"
	stop_ferryd "$SB"
	rm -rf "$T"
}
trap cleanup EXIT
trap "exit 130" INT TERM

if [ -t 1 ]; then say() { printf "\n\033[1m== %s\033[0m\n" "$*"; }; else say() { printf "\n== %s\n" "$*"; }; fi
show() { # prints a command as one could paste it
	local a out='$'
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9,=:/._@+%-]+$ ]]; then out+=" $a"; else out+=" $(printf '%q' "$a")"; fi
	done
	printf '%s\n' "$out"
}
run() { show "$@"; "$@"; }
fa() { run "$FERRY" --pool "$A" "$@"; }
fb() { run "$FERRY" --pool "$SB" "$@"; }
qa() { "$FERRY" --pool "$A" "$@"; }   # quiet: for values the demo reads
qb() { "$FERRY" --pool "$SB" "$@"; }
jget() { python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."): v = v[k]
print(v)' "$1"; }
t_start=$SECONDS

say "Both sites share a secret (mode 0600): it keys the replication link's TLS"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/secret"
chmod 600 "$T/secret"
echo "secret file $T/secret"

say "Site B: a ferryd accepting replication peers on a free loopback port"
run "$FERRYD" --pool "$SB" --listen 127.0.0.1:0 --secret-file "$T/secret"
PORT_B=$(sed -n 's/.*accepting peers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$SB/ferryd.log" | tail -n 1)
echo "site B listens on 127.0.0.1:$PORT_B"

say "Site A: a ferryd serving iSCSI on a free loopback port"
run "$FERRYD" --pool "$A" --iscsi 127.0.0.1:0 --secret-file "$T/secret"
PORT_I=$(sed -n 's/.*iscsi: target listening on .*(port \([0-9]*\)).*/\1/p' "$A/ferryd.log" | tail -n 1)
echo "site A serves iSCSI on 127.0.0.1:$PORT_I"

say "A 256 MiB thin volume on A, exported as an iSCSI LUN"
fa volume create web --size 256M
fa export add web
URL=iscsi://127.0.0.1:$PORT_I/iqn.2026-11.io.ferry:web/0
echo "the LUN: $URL"

say "Pair web -> site B, a cycle every second (the initial sync ships an empty volume)"
fa pair create web --peer "127.0.0.1:$PORT_B" --period 1
run "$FERRY" --pool "$A" pair sync web --wait

# Every cycle's numbers, as pair status reports them, for the summary.
python3 - "$FERRY" "$A" "$T/cycles.jsonl" <<'PY' &
import json, subprocess, sys, time
ferry, pool, out = sys.argv[1:]
seen = set()
while True:
    try:
        st = json.loads(subprocess.run([ferry, "--pool", pool, "pair", "status", "web", "--json"],
                                       capture_output=True, check=True).stdout)
        c = st["last_cycle"]
        if c and c["number"] not in seen:
            seen.add(c["number"])
            with open(out, "a") as f:
                f.write(json.dumps(c) + "\n")
    except Exception:
        pass
    time.sleep(0.2)
PY
POLL_PID=$!

HOSTFS=yes
why=""
[ "$(id -u)" -eq 0 ] || why="not root"
[ -z "$why" ] && [ ! -c /dev/fuse ] && why="no /dev/fuse"
[ -z "$why" ] && ! command -v qemu-storage-daemon >/dev/null && why="no qemu-storage-daemon"
[ -z "$why" ] && ! losetup -f >/dev/null 2>&1 && why="no free loop device"
[ -z "$why" ] && ! command -v mkfs.ext4 >/dev/null && why="no mkfs.ext4"
[ -n "${FERRY_DEMO_RAW:-}" ] && why="FERRY_DEMO_RAW is set"
[ -n "$why" ] && HOSTFS=no
t_client=$SECONDS
written=0

if [ "$HOSTFS" = yes ]; then
	say "The client: this host's kernel, through qemu-storage-daemon's FUSE export of the LUN"
	: >"$T/lun.img"
	run qemu-storage-daemon \
		--blockdev "driver=iscsi,node-name=lun,transport=tcp,portal=127.0.0.1:$PORT_I,target=iqn.2026-11.io.ferry:web,lun=0,cache.direct=on,discard=unmap" \
		--export "type=fuse,id=fuse0,node-name=lun,mountpoint=$T/lun.img,writable=on" \
		--pidfile "$T/qsd.pid" --daemonize
	QSD_PID=$(cat "$T/qsd.pid")
	say "A buffered loop device on it (not --direct-io: qemu 7.2's FUSE export corrupts concurrent direct I/O)"
	LOOP=$(losetup -f --show "$T/lun.img")
	echo "$ losetup -f --show $T/lun.img -> $LOOP"
	say "mkfs.ext4, mount, copy in a tree of 600 files while cycles run"
	run mkfs.ext4 -q -F -L web "$LOOP"
	MNT=$T/mnt
	mkdir -p "$MNT"
	run mount "$LOOP" "$MNT"
	python3 - "$T/src" <<'PY'
import os, random, sys
r = random.Random(2026)
for i in range(600):
    d = os.path.join(sys.argv[1], "site%02d" % (i % 20), "assets" if i % 3 else "pages")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%04d" % i), "wb") as f:
        f.write(r.randbytes(r.choice([0, 700, 4096, 9000, 40000, 150000])))
PY
	echo "source tree: $(find "$T/src" -type f | wc -l) files, $(du -sb "$T/src" | cut -f1) bytes"
	run cp -a "$T/src" "$MNT/src"
	run sync -f "$MNT"
	say "Delete a third of them and write a 20 MiB file, then remove it (the next cycles carry the frees)"
	echo "\$ rm -rf $MNT/src/site0[0-6]"
	rm -rf "$MNT"/src/site0[0-6]
	run dd if=/dev/urandom of="$MNT/big" bs=1M count=20 status=none conv=fsync
	run rm "$MNT/big"
	run sync -f "$MNT"   # ext4 frees removed files' blocks at the journal commit
	run fstrim -v "$MNT" || echo "(fstrim not available: the freed blocks stay data)"
	run umount "$MNT"
	MNT=
	run losetup -d "$LOOP"
	LOOP=
	run kill -TERM "$QSD_PID"
	for _ in $(seq 100); do kill -0 "$QSD_PID" 2>/dev/null || break; sleep 0.05; done
	QSD_PID=
	rm -rf "$T/src"/site0[0-6]
	written=$(python3 -c 'import sys; print(int(sys.argv[1]) + 20 * 2**20)' "$(du -sb "$T/src" | cut -f1)")
	what="a tree of files, then a 20 MiB file written, removed and trimmed"
else
	say "The client: qemu-io raw writes through iSCSI (no file system: $why)"
	run qemu-io -f raw -t none -c "write -P 0xa5 0 32M" -c "write -P 0x5a 100M 16M" \
		-c "write -z 8M 8M" -c "discard 100M 4M" -c "write -P 0x33 255M 1M" -c "write -z 255M 1M" "$URL"
	written=$((62 << 20))
	what="49 MiB of pattern data, 13 MiB of WRITE SAME zeros and UNMAP, the last MiB zero"
fi
t_client=$((SECONDS - t_client))

say "Wait for a cycle that has everything (pair sync --wait), then show its status"
run "$FERRY" --pool "$A" pair sync web --wait
fa pair status web
say "Freeze the pair for the comparison (no later cycle replaces the snapshot meanwhile)"
fa pair pause web
kill "$POLL_PID" 2>/dev/null || true
wait "$POLL_PID" 2>/dev/null || true
POLL_PID=
qa pair status web --json | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["last_cycle"]))' >>"$T/cycles.jsonl"
SNAP=$(qa pair status web --json | jget last_synced.snapshot)

say "pair verify: both sites hash every object of $SNAP and compare"
fa pair verify web

say "md5 of $SNAP on both sites"
MD5A=$(qa volume md5 "web@$SNAP" | cut -d' ' -f1)
MD5B=$(qb volume md5 "web@$SNAP" | cut -d' ' -f1)
echo "site A: $MD5A"
echo "site B: $MD5B"
[ "$MD5A" = "$MD5B" ] || { echo "demo: md5 differ" >&2; exit 1; }

if [ "$HOSTFS" = yes ]; then
	say "Site B's copy, loop-mounted read-only: a clean ext4 with the same files"
	fb volume export "web@$SNAP" "$T/siteB.img"
	LOOP=$(losetup -f --show -r "$T/siteB.img")
	run e2fsck -fn "$LOOP"
	MNT=$T/mnt
	run mount -o ro,noload "$LOOP" "$MNT"
	run diff -r "$T/src" "$MNT/src"
	echo "diff -r: identical ($(find "$MNT/src" -type f | wc -l) files)"
	run umount "$MNT"
	MNT=
	run losetup -d "$LOOP"
	LOOP=
fi

say "Summary"
python3 - "$T/cycles.jsonl" "$written" "$t_client" "$((SECONDS - t_start))" "$SNAP" "$MD5A" "$MD5B" "$what" <<'PY'
import json, sys
path, written, t_client, t_all, snap, ma, mb, what = sys.argv[1:]
cycles = {}
for line in open(path):
    c = json.loads(line)
    cycles[c["number"]] = c
def mib(n): return "%.2f MiB" % (n / 2**20)
print("client wrote about %s in %s s (%s)" % (mib(int(written)), t_client, what))
print("%6s %8s %12s %12s %12s %8s" % ("cycle", "extents", "data", "zero", "wire", "seconds"))
tot = [0, 0, 0]
for n in sorted(cycles):
    c = cycles[n]
    if c["extents"] == 0 and c["data_bytes"] == 0:
        continue
    print("%6d %8d %12s %12s %12s %8.3f" % (n, c["extents"], mib(c["data_bytes"]), mib(c["zero_bytes"]),
                                           mib(c["wire_bytes"]), c["seconds"]))
    tot = [tot[0] + c["data_bytes"], tot[1] + c["zero_bytes"], tot[2] + c["wire_bytes"]]
empty = sum(1 for c in cycles.values() if c["extents"] == 0 and c["data_bytes"] == 0)
print("%6s %8s %12s %12s %12s" % ("total", "", mib(tot[0]), mib(tot[1]), mib(tot[2])))
print("(%d cycles seen, %d of them empty and not listed; cycles are numbered by the pair)"
      % (len(cycles), empty))
print("last synced %s: md5 site A %s, site B %s: %s" % (snap, ma, mb, "equal" if ma == mb else "DIFFERENT"))
print("demo took %s s" % t_all)
PY

say "Stop both ferryd (SIGTERM: volumes flushed and closed) and remove everything"
