#!/bin/bash
# iSCSI benchmark: ferry (ferryd --iscsi) against tgt (Debian tgt 1.0.85,
# rdwr backing store) on the same file system, same client, same run.
#   bench/iscsi.sh BUILD_DIR [RESULTS_MD]
# Workloads (each target gets the same ones, one after the other):
#   1 MiB sequential write and read, depth 8 (qemu-img bench -t none)   MB/s
#   4 KiB scattered write and read, depth 32 (qemu-img bench -t none,
#        step 7919 blocks so the offsets jump around the LUN)         IOPS
#   4 KiB random read, 32 in flight (iscsi-perf -r)                   IOPS
#   the 4 KiB ones again with 4 sessions at once (sum of IOPS)
# plus the client's own ceiling: the same qemu-img bench against the
# null-co driver (no target, no network).
# Every target is written in full before it is read, so thin provisioning
# cannot short-cut reads of never-written blocks.  Ports are free ports on
# 127.0.0.1; tgtd runs with its own control port and is stopped with
# `tgtadm --op delete --mode system` (it ignores SIGTERM).
set -u
B=$(cd "${1:?usage: bench/iscsi.sh BUILD_DIR [RESULTS_MD]}" && pwd)
OUT=${2:-}
SIZE_MB=${BENCH_SIZE_MB:-256}
DUR=${BENCH_SECONDS:-5}
T=$(mktemp -d /tmp/ferry-bench-iscsi.XXXXXX)
TGT_PID= ; TGT_CTL=
cleanup() {
	[ -f "$T/pool/ferryd.lock" ] && kill -TERM "$(cat "$T/pool/ferryd.lock")" 2>/dev/null
	[ -f "$T/poolb/ferryd.lock" ] && kill -TERM "$(cat "$T/poolb/ferryd.lock")" 2>/dev/null
	if [ -n "$TGT_CTL" ]; then
		tgtadm -C "$TGT_CTL" --op delete --mode system >/dev/null 2>&1
		sleep 0.2
		[ -n "$TGT_PID" ] && kill -KILL "$TGT_PID" 2>/dev/null
	fi
	wait 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# ---- ferry -----------------------------------------------------------------
FP=$(free_port)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/secret"
"$B/ferryd" --pool "$T/pool" --iscsi 127.0.0.1:$FP --secret-file "$T/secret" --log-level warn || exit 1
"$B/ferry" --pool "$T/pool" volume create bench --size ${SIZE_MB}M --block-size 512 >/dev/null
"$B/ferry" --pool "$T/pool" export add bench >/dev/null
FERRY_URL=iscsi://127.0.0.1:$FP/iqn.2026-11.io.ferry:bench/0

# ---- tgt -------------------------------------------------------------------
TP=$(free_port); TGT_CTL=$(( (RANDOM % 10000) + 20000 ))   # tgtadm refused -C 34303 as out of range
truncate -s ${SIZE_MB}M "$T/tgt.img"
tgtd -f -C $TGT_CTL --iscsi portal=127.0.0.1:$TP >"$T/tgtd.log" 2>&1 &
TGT_PID=$!
for _ in $(seq 100); do tgtadm -C $TGT_CTL --op show --mode sys >/dev/null 2>&1 && break; sleep 0.05; done
tgtadm -C $TGT_CTL --lld iscsi --op new --mode target --tid 1 -T iqn.2026-11.io.ferry.bench:tgt &&
tgtadm -C $TGT_CTL --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$T/tgt.img" --bstype rdwr &&
tgtadm -C $TGT_CTL --lld iscsi --op bind --mode target --tid 1 -I ALL || { echo "tgt setup failed" >&2; exit 1; }
TGT_URL=iscsi://127.0.0.1:$TP/iqn.2026-11.io.ferry.bench:tgt/1

# qemu-img bench: prints the seconds a run took
qbench() { # URL ARGS...
	local url=$1; shift
	timeout 300 qemu-img bench -f raw -t none "$@" "$url" 2>&1 | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'
}
rate() { python3 -c "import sys; print('%.0f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$@"; }
perf() { # URL: iscsi-perf random 4K reads, 32 in flight, DUR seconds -> IOPS
	timeout $((DUR + 30)) iscsi-perf -r -m 32 -b 8 -t $DUR "$1" 2>&1 | tr '\r' '\n' |
		sed -n 's/^ *iops average \([0-9]*\).*/\1/p' | tail -1
}
N4K=${BENCH_4K_COUNT:-40000}
STEP=$((4096 * 7919))
declare -A R
sessions4() { # URL w|r -> IOPS of 4 sessions at once, each a quarter of the requests
	local u=$1 kind=$2 q=$((N4K / 4)) i t0 t1 pids=""
	t0=$(date +%s.%N)
	for i in 0 1 2 3; do
		if [ $kind = w ]; then
			qbench "$u" -w -s 4K -d 32 -c $q -S $STEP -o $((i * 4096 * 1031)) >/dev/null &
		else
			qbench "$u" -s 4K -d 32 -c $q -S $STEP -o $((i * 4096 * 1031)) >/dev/null &
		fi
		pids="$pids $!"
	done
	wait $pids   # not a bare wait: tgtd is our child too
	t1=$(date +%s.%N)
	python3 -c "print('%.0f' % ($N4K / ($t1 - $t0)))"
}
# Each workload runs on ferry then on tgt right after, so that the other
# load on this shared machine hits both alike.
declare -A URLS=([ferry]=$FERRY_URL [tgt]=$TGT_URL)
for n in ferry tgt; do s=$(qbench "${URLS[$n]}" -w -s 1M -d 8 -c $SIZE_MB); R[$n,seqw]=$(rate $SIZE_MB "$s"); done
for n in ferry tgt; do s=$(qbench "${URLS[$n]}" -s 1M -d 8 -c $SIZE_MB); R[$n,seqr]=$(rate $SIZE_MB "$s"); done
for n in ferry tgt; do s=$(qbench "${URLS[$n]}" -w -s 4K -d 32 -c $N4K -S $STEP); R[$n,rw]=$(rate $N4K "$s"); done
for n in ferry tgt; do s=$(qbench "${URLS[$n]}" -s 4K -d 32 -c $N4K -S $STEP); R[$n,rr]=$(rate $N4K "$s"); done
for n in ferry tgt; do R[$n,perf]=$(perf "${URLS[$n]}"); done
for n in ferry tgt; do R[$n,4w]=$(sessions4 "${URLS[$n]}" w); done
for n in ferry tgt; do R[$n,4r]=$(sessions4 "${URLS[$n]}" r); done
# A replication cycle alongside the clients: a second ferryd (site B), a
# pair with the shortest period (1 s), the 4 KiB write load again.
BP=$(free_port)
"$B/ferryd" --pool "$T/poolb" --listen 127.0.0.1:$BP --secret-file "$T/secret" --log-level warn || exit 1
CYC_BASE= ; CYC_LOAD= ; CYCLES=
if "$B/ferry" --pool "$T/pool" pair create bench --peer 127.0.0.1:$BP --period 1 >/dev/null &&
	timeout 300 "$B/ferry" --pool "$T/pool" pair sync bench --wait >/dev/null; then
	"$B/ferry" --pool "$T/pool" pair pause bench >/dev/null
	s=$(qbench "$FERRY_URL" -w -s 4K -d 32 -c $N4K -S $STEP); CYC_BASE=$(rate $N4K "$s")
	synced() { "$B/ferry" --pool "$T/pool" pair status bench --json 2>/dev/null | python3 -c '
import json,sys
d = json.load(sys.stdin); d = d[0] if isinstance(d, list) else d
print((d.get("last_synced") or {}).get("cycle", 0))'; }
	c0=$(synced)
	"$B/ferry" --pool "$T/pool" pair resume bench >/dev/null
	s=$(qbench "$FERRY_URL" -w -s 4K -d 32 -c $((N4K * 3)) -S $STEP); CYC_LOAD=$(rate $((N4K * 3)) "$s")
	CYCLES=$(( $(synced) - c0 ))
else
	echo "pair setup failed: no cycle measurement" >&2
fi
s=$(timeout 60 qemu-img bench -f raw -s 4K -d 32 -c 200000 null-co:// 2>&1 |
	sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')
CEIL=$(rate 200000 "$s")

ratio() { python3 -c "import sys; a,b=float(sys.argv[1] or 0),float(sys.argv[2] or 0); print('%.2fx' % (a/b) if b else 'n/a')" "$1" "$2"; }
{
echo "| workload (client) | ferry | tgt (rdwr) | ferry / tgt |"
echo "|---|---:|---:|---:|"
echo "| 1 MiB seq write, QD8, MB/s (qemu-img bench) | ${R[ferry,seqw]} | ${R[tgt,seqw]} | $(ratio "${R[ferry,seqw]}" "${R[tgt,seqw]}") |"
echo "| 1 MiB seq read, QD8, MB/s (qemu-img bench) | ${R[ferry,seqr]} | ${R[tgt,seqr]} | $(ratio "${R[ferry,seqr]}" "${R[tgt,seqr]}") |"
echo "| 4 KiB scattered write, QD32, IOPS, 1 session (qemu-img bench) | ${R[ferry,rw]} | ${R[tgt,rw]} | $(ratio "${R[ferry,rw]}" "${R[tgt,rw]}") |"
echo "| 4 KiB scattered read, QD32, IOPS, 1 session (qemu-img bench) | ${R[ferry,rr]} | ${R[tgt,rr]} | $(ratio "${R[ferry,rr]}" "${R[tgt,rr]}") |"
echo "| 4 KiB random read, 32 in flight, IOPS, 1 session (iscsi-perf -r) | ${R[ferry,perf]} | ${R[tgt,perf]} | $(ratio "${R[ferry,perf]}" "${R[tgt,perf]}") |"
echo "| 4 KiB scattered write, QD32 each, IOPS, 4 sessions | ${R[ferry,4w]} | ${R[tgt,4w]} | $(ratio "${R[ferry,4w]}" "${R[tgt,4w]}") |"
echo "| 4 KiB scattered read, QD32 each, IOPS, 4 sessions | ${R[ferry,4r]} | ${R[tgt,4r]} | $(ratio "${R[ferry,4r]}" "${R[tgt,4r]}") |"
echo
if [ -n "$CYC_LOAD" ]; then
	echo "Replication alongside (ferry, 1 session, 4 KiB scattered writes QD32): $CYC_BASE IOPS with the pair paused, $CYC_LOAD IOPS while cycles run every second ($(python3 -c "print('%+.0f%%' % (100.0 * ($CYC_LOAD - $CYC_BASE) / $CYC_BASE))")); $CYCLES cycles committed during that run."
	echo
fi
echo "Client ceiling (qemu-img bench, 4 KiB QD32 reads on the null-co driver: no target, no network): $CEIL IOPS."
echo "Volume/LUN size ${SIZE_MB} MiB, written in full before any read; $(nproc) cores shared by client and targets; $(date -u +%Y-%m-%d)."
} | tee "$T/table.md"
if [ -n "$OUT" ]; then
	cp "$T/table.md" "$OUT"
fi
