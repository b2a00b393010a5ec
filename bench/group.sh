#!/bin/bash
# Consistency group cut: how long the cut holds writes, and what cuts cost.
#   bench/group.sh BUILD_DIR [RESULTS_FILE]
# bench/group_bench (in process, on the store every client write goes
# through) with 4 volumes of BENCH_GROUP_MIB (default 256) MiB under a 4K
# random-write load of real (random) data, one writer thread per volume,
# paced to BENCH_GROUP_RATE (default 8000) writes/s in all, about what an
# iSCSI client gets on this machine (0: as fast as the writers can, at
# page-cache speed; expect long holds then, the flushes have much to do):
#  1. BENCH_GROUP_CUTS (default 1000) cuts 20 ms apart: the write hold's
#     median, p90, p99 and max;
#  2. BENCH_ROUNDS (default 5) interleaved rounds of BENCH_GROUP_S (default
#     10) seconds without cuts and with a cut every second: 4K write IOPS,
#     median and range of each mode, and the loss.
# The machine's load is printed before and after: on a shared machine it
# moves the figures more than anything measured here.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-}
dir=$(mktemp -d /var/tmp/ferry-bench-grp.XXXXXX)
trap 'rm -rf "$dir"' EXIT
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
cmd=("$build/bench/group_bench" "$dir" --cuts "${BENCH_GROUP_CUTS:-1000}"
     --rounds "${BENCH_ROUNDS:-5}" --round-secs "${BENCH_GROUP_S:-10}"
     --size "${BENCH_GROUP_MIB:-256}")
[ "${BENCH_GROUP_RATE:-8000}" != 0 ] && cmd+=(--rate "${BENCH_GROUP_RATE:-8000}")
echo "# ${cmd[*]}"
"${cmd[@]}" | tee ${out:+"$out"}
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
