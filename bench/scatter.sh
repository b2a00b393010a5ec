#!/bin/bash
# Scattered 4 KiB writes on a 1 TiB thin volume, both sites.
#   bench/scatter.sh BUILD_DIR [RESULTS_FILE]    (BENCH_A=MAIN_BUILD adds A)
# BENCH_SCATTER_SIZE (default 1T) and BENCH_SCATTER_COUNT (default 25600,
# i.e. 100 MiB) set the volume and the writes.  Every round, each after
# the page cache was dropped:
#   raw:     bench/scatter_bench raw: a sparse file of that size, COUNT
#            writes of random data at distinct random 4 KiB offsets,
#            fdatasync every 64 writes and at the end (first_s), then the
#            same blocks again (rewrite_s): the reference of both sites;
#   store:   bench/scatter_bench store: the same on a thin volume of the
#            store right after a snapshot (the primary's write path: every
#            write is the first to its block in the new layer), vol_flush
#            every 64 writes;
#   ferry:   two real ferryd (TLS), the thin volume synced once while
#            empty; the same kind of writes land on the primary over iSCSI
#            (qemu-img convert of a sparse image holding just those
#            blocks; untimed); then `pair sync v --wait` (the secondary
#            applies and commits the blocks): wall time, and the CPU
#            seconds of each ferryd.
# With BENCH_STRACE=1 one more, untimed cycle runs with strace -c -f on
# the secondary (system calls by count: fsync, fallocate, rename, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_setup scatter "$1"
OUT=${2:-}
trap 'ferryd_stop_all; rm -rf "$T"' EXIT
SIZE=${BENCH_SCATTER_SIZE:-1T}
COUNT=${BENCH_SCATTER_COUNT:-25600}
BYTES=$(numfmt --from=iec "$SIZE")

secret_file "$T/secret"
declare -A IPORT
for v in $BUILDS; do
	IPORT[$v]=$(free_port); pb=$(free_port)
	ferryd_start "$v" "$T/pa$v" --iscsi "127.0.0.1:${IPORT[$v]}" --secret-file "$T/secret"
	ferryd_start "$v" "$T/pb$v" --listen "127.0.0.1:$pb" --secret-file "$T/secret"
	"${BUILD[$v]}/ferry" --pool "$T/pa$v" volume create v --size "$SIZE" >/dev/null
	"${BUILD[$v]}/ferry" --pool "$T/pa$v" export add v >/dev/null
	"${BUILD[$v]}/ferry" --pool "$T/pa$v" pair create v --peer "127.0.0.1:$pb" --period 3600 >/dev/null
	pair_wait_synced "$v" "$T/pa$v" v 1
done
echo "# $SIZE thin volume, $COUNT random 4 KiB writes at distinct random offsets per round"

run_local() { # ROUND MODE
	rm -rf "$T/local"; mkdir -p "$T/local"
	settle
	local l=$(load1)
	"$B/bench/scatter_bench" "$2" "$T/local" "$BYTES" "$COUNT" "$1" 64 >"$T/sb.out"
	record first_write_s "$2" "$1" "$(awk '$1=="first_s"{print $2}' "$T/sb.out")" s "$l"
	record rewrite_s "$2" "$1" "$(awk '$1=="rewrite_s"{print $2}' "$T/sb.out")" s "$l"
	rm -rf "$T/local"
}

run_ferry() { # ROUND BUILD
	local r=$1 v=$2 t0 t1 l ca cb pa_pid pb_pid
	pa_pid=$(ferryd_pid "$T/pa$v"); pb_pid=$(ferryd_pid "$T/pb$v")
	settle
	l=$(load1)
	ca=$(cpu_s "$pa_pid"); cb=$(cpu_s "$pb_pid"); t0=$(now)
	"${BUILD[$v]}/ferry" --pool "$T/pa$v" pair sync v --wait >/dev/null
	t1=$(now)
	record cycle_s "ferry-$v" "$r" "$(elapsed "$t0" "$t1")" s "$l"
	record cpu_primary_s "ferry-$v" "$r" "$(sub "$(cpu_s "$pa_pid")" "$ca")" s "$l"
	record cpu_secondary_s "ferry-$v" "$r" "$(sub "$(cpu_s "$pb_pid")" "$cb")" s "$l"
}

load_writes() { # SEED: the same kind of writes onto every primary
	local v # the callers' loops use v too
	scatter_image "$T/delta" "$BYTES" "$COUNT" "$1"
	for v in $BUILDS; do
		iscsi_load "iscsi://127.0.0.1:${IPORT[$v]}/iqn.2026-11.io.ferry:v/0" "$T/delta"
	done
	rm -f "$T/delta"
}

reference first_write_s raw lower
reference rewrite_s raw lower
reference cycle_s raw lower
variants="raw store"
for v in $BUILDS; do variants="$variants ferry-$v"; done
for r in $(seq "$BENCH_ROUNDS"); do
	load_writes "$((100 + r))"
	for x in $(order "$r" $variants); do
		case $x in
		raw|store) run_local "$r" "$x" ;;
		ferry-*) run_ferry "$r" "${x#ferry-}" ;;
		esac
	done
	# the secondary's reference is the raw file's first writes
	record cycle_s raw "$r" "$(awk -F'\t' -v r="$r" '$1=="first_write_s" && $2=="raw" && $3==r {print $4}' "$RES")" s
done
if [ "${BENCH_STRACE:-0}" = 1 ]; then
	for v in $BUILDS; do
		load_writes 999
		pid=$(ferryd_pid "$T/pb$v")
		strace -c -f -o "$T/strace.$v" -p "$(ls /proc/"$pid"/task | paste -sd,)" &
		sp=$!
		sleep 1
		"${BUILD[$v]}/ferry" --pool "$T/pa$v" pair sync v --wait >/dev/null
		kill -INT "$sp"; wait "$sp" || true
		echo "# strace -c -f of the secondary ferryd ($v) during one cycle of $COUNT scattered blocks:"
		grep -E 'calls|fsync|fdatasync|fallocate|rename|msync|sync_file_range|pwrite|openat|total' \
			"$T/strace.$v" | sed 's/^/#   /'
	done
fi
summarize "$OUT"
