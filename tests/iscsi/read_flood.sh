#!/bin/bash
# READ memory is bounded against initiators that never read (issue 14,
# item 2; docs/ISCSI.md "Memory"): raw clients (read_flood.py) fill their
# command windows with 32 MiB READs and never read their sockets.
#  - 4 connections: ferryd's RSS grows by at most 4 x 8 MiB (+ slack), and
#    by at least half of that (the flood did pin what it may);
#  - 24 connections: the total stays within 128 MiB + 256 KiB each;
#  - meanwhile a real client (qemu-img bench, 4 KiB reads at depth 1) keeps
#    its latency within 2x of the idle latency measured in the same run
#    (alternating idle / flooded rounds, medians; on a loaded machine the
#    comparison is done again with more rounds before it fails).
# Under the sanitizers (FERRY_SANITIZED=1) RSS says nothing (ASan keeps
# freed memory in quarantine): the floods and the latency run, the RSS
# bounds are not checked.
. "$(dirname "$0")/../cli/lib.sh"
rss_check() { # rss_check DESCRIPTION CONDITION...
	if [ -n "${FERRY_SANITIZED:-}" ]; then
		echo "not checked under the sanitizers: $1"
		return 0
	fi
	check "$@"
}
HERE=$(cd "$(dirname "$0")" && pwd)
for tool in qemu-img python3; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done
PORT=$(free_port)
"$FERRYD" --pool "$POOL" --iscsi 127.0.0.1:$PORT ||
	{ echo "ferryd --iscsi did not start" >&2; exit 1; }
URL=iscsi://127.0.0.1:$PORT
IQN=iqn.2026-11.io.ferry
MiB=$((1 << 20))
PID=$(daemon_pid)
expect 0 "create v" -- ferry volume create v --size 256M
head -c $((64 * MiB)) /dev/urandom >"$T/data"
expect 0 "64 MiB of data" -- ferry volume write v --offset 0 "$T/data"
rm -f "$T/data"
expect 0 "export v" -- ferry export add v

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status"; }
N=4000
bench() { # seconds for N 4 KiB reads at depth 1
	timeout 120 qemu-img bench -f raw -s 4k -c $N -d 1 "$URL/$IQN:v/0" 2>&1 |
		sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

FLOOD_PID=
flood_start() { # flood_start CONNS
	rm -f "$T/flood.in" "$T/flood.out"
	mkfifo "$T/flood.in"
	python3 "$HERE/read_flood.py" 127.0.0.1 $PORT $IQN:v "$1" 128 $((256 * MiB / 512)) \
		<"$T/flood.in" >"$T/flood.out" 2>&1 &
	FLOOD_PID=$!
	exec 9>"$T/flood.in"
	wait_for 60 grep -q ready "$T/flood.out" || { fail "flood did not start: $(cat "$T/flood.out")"; return 1; }
	# until ferryd has pinned what it will: RSS steady for a second
	local prev=0 cur deadline=$((SECONDS + 30))
	while [ $SECONDS -lt $deadline ]; do
		cur=$(rss_kib)
		[ $((cur - prev)) -lt 512 ] && [ $((prev - cur)) -lt 512 ] && break
		prev=$cur
		sleep 1
	done
}
flood_stop() {
	exec 9>&-
	wait $FLOOD_PID
	FLOOD_PID=
	# ferryd has closed the flood's sessions
	wait_for 60 sh -c "! '$FERRY_BIN' --pool '$POOL' export sessions | grep -q flood" ||
		fail "the flood's sessions did not end"
}
# the highest RSS seen while the background sampler runs
sampler_start() { ( while :; do rss_kib; sleep 0.1; done ) >"$T/rss" & SAMPLER=$!; }
sampler_stop() { kill $SAMPLER; wait $SAMPLER 2>/dev/null; sort -n "$T/rss" | tail -1; }

bench >/dev/null # warm up: the honest client's own buffers are in the base
base=$(rss_kib)
idle="" flooded="" peak=$base
round() {
	local i f p
	i=$(bench)
	flood_start 4 || return 1
	sampler_start
	f=$(bench)
	p=$(sampler_stop)
	flood_stop
	[ -n "$i" ] && [ -n "$f" ] || { fail "qemu-img bench gave no time (idle '$i', flooded '$f')"; return 1; }
	idle="$idle $i"
	flooded="$flooded $f"
	[ "$p" -gt "$peak" ] && peak=$p
	echo "round: idle ${i}s, flooded ${f}s for $N reads; RSS peak $((p / 1024)) MiB (base $((base / 1024)) MiB)"
}
for r in 1 2 3; do round || break; done
ratio_ok() { python3 -c 'import sys; i, f = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if f <= 2 * i else 1)' "$1" "$2"; }
mi=$(median <<<"$idle")
mf=$(median <<<"$flooded")
if ! ratio_ok "$mi" "$mf"; then
	echo "flooded median ${mf}s > 2 x idle median ${mi}s: measuring again (loaded machine?)"
	for r in 4 5 6 7 8; do round || break; done
	mi=$(median <<<"$idle")
	mf=$(median <<<"$flooded")
fi
echo "4 connections: 4K read latency idle median $(python3 -c "print('%.0f' % ($mi * 1e6 / $N))") us, flooded median $(python3 -c "print('%.0f' % ($mf * 1e6 / $N))") us (x$(python3 -c "print('%.2f' % ($mf / $mi))"))"
check "a real client's 4K read latency under the flood (${mf}s) is within 2x of idle (${mi}s)" ratio_ok "$mi" "$mf"
grow=$(((peak - base) / 1024))
echo "4 connections: RSS growth ${grow} MiB (bound: 4 x 8 MiB + 16 MiB slack)"
rss_check "RSS growth ${grow} MiB <= 4 x 8 + 16 MiB" test $grow -le 48
rss_check "the flood pinned memory (${grow} MiB >= 16 MiB): it did not read" test $grow -ge 16

# ---- more connections than the total allows ---------------------------------------
i=$(bench)
flood_start 24
sampler_start
f=$(bench)
p=$(sampler_stop)
flood_stop
grow=$(((p - base) / 1024))
echo "24 connections: RSS growth ${grow} MiB (bound: 128 MiB + 24 x 256 KiB + 16 MiB slack); 4K latency idle ${i}s, flooded ${f}s for $N reads"
rss_check "RSS growth ${grow} MiB <= 128 + 6 + 16 MiB (24 x 8 MiB would be 192)" test $grow -le 150
rss_check "the total was reached (${grow} MiB >= 100 MiB)" test $grow -ge 100
if ! ratio_ok "$i" "$f"; then # one more pair before concluding
	i=$(bench)
	flood_start 24
	f=$(bench)
	flood_stop
fi
check "with the total pinned, the real client's latency (${f}s) is within 2x of idle (${i}s)" ratio_ok "$i" "$f"
expect 0 "ferryd serves after the floods" -- timeout 60 qemu-img bench -f raw -s 4k -c 100 -d 1 "$URL/$IQN:v/0"
finish
