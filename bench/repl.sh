#!/bin/bash
# Replication, the two figures that are not races against a reference
# (the timed comparisons are bench/sync.sh, incr.sh, scatter.sh, pacing.sh
# and idle.sh):
#  1. a cycle after 1 GiB of data was discarded: wire bytes (zero records,
#     not zero bytes);
#  2. a 1 s period under a steady 10 MB/s random 4 KiB write load: cycles,
#     the longest one, the largest RPO lag.
# Both run in-process (bench/repl_bench: two stores, two engines, real TCP
# over loopback, TLS) on a volume of BENCH_REPL_SIZE (default 4G) whose
# first half is random data; BENCH_REPL_LOAD_S (default 15) sets part 2.
#   bench/repl.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_setup repl "$1"
trap 'rm -rf "$T"' EXIT
SIZE=${BENCH_REPL_SIZE:-4G}
LOAD_S=${BENCH_REPL_LOAD_S:-15}
P=$(free_port)
val() { awk -v k="$1" '$1==k{print $2}' "$T/out"; }
"$B/bench/repl_bench" init "$T/p" "$P" "$SIZE" "$T/img" >"$T/out"
rm -f "$T/img"
"$B/bench/repl_bench" discard "$T/p" "$P" >>"$T/out"
echo "cycle after discarding $(numfmt --to=iec-i --suffix=B "$(val discard_discarded_bytes)"):" \
     "$(val discard_wire_bytes) bytes on the wire (goal < 1 MiB), $(val discard_cycle_seconds) s"
"$B/bench/repl_bench" load "$T/p" "$P" "$LOAD_S" >>"$T/out"
echo "10 MB/s random 4 KiB writes, period 1 s, $LOAD_S s: $(val load_cycles) cycles," \
     "longest $(val load_max_cycle_seconds) s, max RPO lag $(val load_max_rpo_lag_s) s"
