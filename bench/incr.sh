#!/bin/bash
# Incremental cycle after 1% of the volume changed, against rsync.
#   bench/incr.sh BUILD_DIR [RESULTS_FILE]      (BENCH_A=MAIN_BUILD adds A)
# Set-up (untimed): per build, two real ferryd (TLS) with the volume of
# bench/sync.sh (BENCH_INCR_MIB, default 4096 MiB, random data in every
# other 1 MiB extent) loaded over iSCSI and synced; an rsync daemon holds a
# copy of the same image.  Every round: a new set of 1% of the volume's
# 4 KiB blocks (10,485 of 4 GiB), random data at random distinct offsets,
# is written into the image and, over iSCSI (qemu-img convert, only those
# blocks), into each primary; page cache dropped; then timed:
#   ferry: `pair sync v --wait` (snapshot, diff, transfer, commit + fsync
#          on the secondary);
#   rsync: `rsync --inplace -I --no-whole-file --fsync` of the image to the
#          daemon (-I: no skip on size/mtime; the delta algorithm; the
#          receiver fsyncs like ferry's commit does).
# Wire bytes: ferry's last_cycle.wire_bytes; rsync's --stats bytes sent +
# received; both divided by the bytes that changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_setup incr "$1"
OUT=${2:-}
RSYNC_PID=
trap 'ferryd_stop_all; [ -n "$RSYNC_PID" ] && kill "$RSYNC_PID" 2>/dev/null; rm -rf "$T"' EXIT
MIB=${BENCH_INCR_MIB:-4096}
NBLK=$(( (MIB << 20) / 4096 / 100 ))

secret_file "$T/secret"
sparse_image "$T/img" "$MIB"
declare -A IPORT
for v in $BUILDS; do
	IPORT[$v]=$(free_port); pb=$(free_port)
	ferryd_start "$v" "$T/pa$v" --iscsi "127.0.0.1:${IPORT[$v]}" --secret-file "$T/secret"
	ferryd_start "$v" "$T/pb$v" --listen "127.0.0.1:$pb" --secret-file "$T/secret"
	"${BUILD[$v]}/ferry" --pool "$T/pa$v" volume create v --size "${MIB}M" >/dev/null
	"${BUILD[$v]}/ferry" --pool "$T/pa$v" export add v >/dev/null
	iscsi_load "iscsi://127.0.0.1:${IPORT[$v]}/iqn.2026-11.io.ferry:v/0" "$T/img"
	"${BUILD[$v]}/ferry" --pool "$T/pa$v" pair create v --peer "127.0.0.1:$pb" --period 3600 >/dev/null
	pair_wait_synced "$v" "$T/pa$v" v 1
done
RP=$(free_port)
mkdir -p "$T/rs"
cp --sparse=always "$T/img" "$T/rs/img"
cat >"$T/rsyncd.conf" <<CONF
use chroot = no
uid = $(id -un)
gid = $(id -gn)
pid file = $T/rsyncd.pid
[m]
path = $T/rs
read only = no
CONF
rsync --daemon --no-detach --config="$T/rsyncd.conf" --port="$RP" --address=127.0.0.1 &
RSYNC_PID=$!
for _ in $(seq 50); do rsync "rsync://127.0.0.1:$RP/" >/dev/null 2>&1 && break; sleep 0.1; done
echo "# volume $MIB MiB ($((MIB / 2)) MiB data); each round changes $NBLK random 4 KiB blocks"

run_ferry() { # ROUND BUILD
	local r=$1 v=$2 t0 t1 l
	settle
	l=$(load1)
	t0=$(now)
	"${BUILD[$v]}/ferry" --pool "$T/pa$v" pair sync v --wait >/dev/null
	t1=$(now)
	record incr_s "$v" "$r" "$(elapsed "$t0" "$t1")" s "$l"
	record wire_over_changed "$v" "$r" "$(pair_json "$v" "$T/pa$v" v | python3 -c '
import json, sys
c = json.load(sys.stdin)["last_cycle"]
print("%.4f" % (c["wire_bytes"] / float(sys.argv[1])))' "$CHANGED")" x "$l"
}

run_rsync() { # ROUND
	local r=$1 t0 t1 l
	settle
	l=$(load1)
	t0=$(now)
	rsync --inplace -I --no-whole-file --fsync --stats "$T/img" "rsync://127.0.0.1:$RP/m/img" >"$T/rsync.out"
	t1=$(now)
	cmp -s "$T/img" "$T/rs/img" || echo "# warning: the rsync copy differs" >&2
	record incr_s rsync "$r" "$(elapsed "$t0" "$t1")" s "$l"
	record wire_over_changed rsync "$r" "$(python3 -c '
import re, sys
t = open(sys.argv[1]).read().replace(",", "")
s = int(re.search(r"Total bytes sent: (\d+)", t).group(1))
rv = int(re.search(r"Total bytes received: (\d+)", t).group(1))
print("%.4f" % ((s + rv) / float(sys.argv[2])))' "$T/rsync.out" "$CHANGED")" x "$l"
}

reference incr_s rsync lower
variants="rsync $BUILDS"
for r in $(seq "$BENCH_ROUNDS"); do
	scatter_image "$T/delta" "$((MIB << 20))" "$NBLK" "$r" "$T/img"
	CHANGED=$((NBLK * 4096))
	for v in $BUILDS; do
		iscsi_load "iscsi://127.0.0.1:${IPORT[$v]}/iqn.2026-11.io.ferry:v/0" "$T/delta"
	done
	for x in $(order "$r" $variants); do
		case $x in
		rsync) run_rsync "$r" ;;
		*) run_ferry "$r" "$x" ;;
		esac
	done
	if [ "$r" = 1 ]; then
		for v in $BUILDS; do
			[ "$("${BUILD[$v]}/ferry" --pool "$T/pb$v" volume md5 v | cut -d' ' -f1)" = \
			  "$(md5sum <"$T/img" | cut -d' ' -f1)" ] || echo "# warning: $v secondary differs from the image" >&2
		done
	fi
done
summarize "$OUT"
