#!/bin/bash
# iSCSI target: ferry (ferryd --iscsi) against tgt (Debian tgt, rdwr
# backing store on a sparse file in the same directory), same clients,
# interleaved rounds.
#   bench/iscsi.sh BUILD_DIR [RESULTS_FILE]     (BENCH_A=MAIN_BUILD adds A)
# Both LUNs (BENCH_SIZE_MB, default 1024 MiB, 512-byte blocks) are first
# filled with random data (qemu-img convert of a random image), so that no
# read is of never-written blocks and no write lands on a hole.  Every
# round (BENCH_ISCSI_ROUNDS, default 5), each workload runs on every target
# in the round's order (reversed on even rounds):
#   seq_write_MBps  1 MiB writes, depth 8, 2x the LUN (qemu-img bench -w)
#   seq_read_MBps   1 MiB reads, depth 8, 2x the LUN (qemu-img bench)
#   rand_write_iops 4 KiB writes, depth 32 (qemu-img bench -w, step 7919
#                   blocks: each request lands far from the last)
#   rand_read_iops  4 KiB random reads, 32 in flight (iscsi-perf -r)
#   scat_read_iops  4 KiB reads, depth 32, step 7919 blocks (qemu-img bench)
# Writes carry real bytes: --pattern (a nonzero byte, new each round;
# qemu-img bench has no random-data mode), never zero buffers, which ferry
# would keep as metadata only.  page cache: both targets serve from it
# alike (tgt rdwr and the store are buffered); it is not dropped here.
# Ports are free ports on 127.0.0.1; tgtd is stopped with tgtadm (it
# ignores SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BENCH_ROUNDS=${BENCH_ISCSI_ROUNDS:-5}
BENCH_NO_SETTLE=1 bench_setup iscsi "$1"
OUT=${2:-}
SIZE_MB=${BENCH_SIZE_MB:-1024}
N4K=${BENCH_4K_COUNT:-100000}
DUR=${BENCH_SECONDS:-5}
TGT_PID= ; TGT_CTL=
cleanup() {
	ferryd_stop_all
	if [ -n "$TGT_CTL" ]; then
		tgtadm -C "$TGT_CTL" --op delete --mode system >/dev/null 2>&1 || true
		for _ in $(seq 40); do kill -0 "$TGT_PID" 2>/dev/null || break; sleep 0.05; done
		kill -KILL "$TGT_PID" 2>/dev/null || true
	fi
	rm -rf "$T"
}
trap cleanup EXIT

head -c "$((SIZE_MB << 20))" /dev/urandom >"$T/fill.img"
secret_file "$T/secret"
declare -A URL
for v in $BUILDS; do
	p=$(free_port)
	ferryd_start "$v" "$T/pool$v" --iscsi "127.0.0.1:$p" --secret-file "$T/secret"
	"${BUILD[$v]}/ferry" --pool "$T/pool$v" volume create bench --size "${SIZE_MB}M" --block-size 512 >/dev/null
	"${BUILD[$v]}/ferry" --pool "$T/pool$v" export add bench >/dev/null
	URL[ferry-$v]=iscsi://127.0.0.1:$p/iqn.2026-11.io.ferry:bench/0
done
TP=$(free_port); TGT_CTL=$(( (RANDOM % 10000) + 20000 ))   # tgtadm refuses large -C values
truncate -s "${SIZE_MB}M" "$T/tgt.img"
tgtd -f -C "$TGT_CTL" --iscsi "portal=127.0.0.1:$TP" >"$T/tgtd.log" 2>&1 &
TGT_PID=$!
disown "$TGT_PID"   # no "Killed" notice if it must be killed at the end
for _ in $(seq 100); do tgtadm -C "$TGT_CTL" --op show --mode sys >/dev/null 2>&1 && break; sleep 0.05; done
tgtadm -C "$TGT_CTL" --lld iscsi --op new --mode target --tid 1 -T iqn.2026-11.io.ferry.bench:tgt
tgtadm -C "$TGT_CTL" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$T/tgt.img" --bstype rdwr
tgtadm -C "$TGT_CTL" --lld iscsi --op bind --mode target --tid 1 -I ALL
URL[tgt]=iscsi://127.0.0.1:$TP/iqn.2026-11.io.ferry.bench:tgt/1
targets="tgt"
for v in $BUILDS; do targets="$targets ferry-$v"; done
for t in $targets; do qemu-img convert -n -f raw -O raw "$T/fill.img" "${URL[$t]}"; done
rm -f "$T/fill.img"
echo "# LUN ${SIZE_MB} MiB (512-byte blocks) of random data on each target; 4 KiB runs: $N4K requests (qemu-img bench), $DUR s (iscsi-perf)"

qbench() { # URL ARGS... -> seconds
	timeout 600 qemu-img bench -f raw -t none "$@" 2>&1 |
		sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'
}
div() { python3 -c "import sys; print('%.1f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }
STEP=$((4096 * 7919))
run() { # WORKLOAD TARGET ROUND
	local u=${URL[$2]} l s v pat=$(( (${3} * 37) % 255 + 1 ))
	l=$(load1)
	case $1 in
	seq_write_MBps) s=$(qbench "$u" -w -s 1M -d 8 -c $((2 * SIZE_MB)) --pattern=$pat); v=$(div $((2 * SIZE_MB)) "$s") ;;
	seq_read_MBps) s=$(qbench "$u" -s 1M -d 8 -c $((2 * SIZE_MB))); v=$(div $((2 * SIZE_MB)) "$s") ;;
	rand_write_iops) s=$(qbench "$u" -w -s 4K -d 32 -c "$N4K" -S $STEP --pattern=$pat); v=$(div "$N4K" "$s") ;;
	scat_read_iops) s=$(qbench "$u" -s 4K -d 32 -c "$N4K" -S $STEP); v=$(div "$N4K" "$s") ;;
	rand_read_iops)
		v=$(timeout $((DUR + 60)) iscsi-perf -r -m 32 -b 8 -t "$DUR" "$u" 2>&1 | tr '\r' '\n' |
			sed -n 's/^ *iops average \([0-9]*\).*/\1/p' | tail -1) ;;
	esac
	[ -n "$v" ] || { echo "# $1 on $2 failed" >&2; return 0; }
	record "$1" "$2" "$3" "$v" "$(case $1 in *MBps) echo MB/s ;; *) echo IOPS ;; esac)" "$l"
}

W="seq_write_MBps seq_read_MBps rand_write_iops rand_read_iops scat_read_iops"
for w in $W; do reference "$w" tgt higher; done
for r in $(seq "$BENCH_ROUNDS"); do
	for w in $W; do
		for t in $(order "$r" $targets); do run "$w" "$t" "$r"; done
	done
done
s=$(timeout 60 qemu-img bench -f raw -s 4K -d 32 -c 200000 null-co:// 2>&1 |
	sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')
note "client ceiling (qemu-img bench, 4 KiB reads, depth 32, null-co driver: no target, no network): $(div 200000 "$s") IOPS"
summarize "$OUT"
