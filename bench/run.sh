#!/bin/bash
# make bench: every benchmark, one after the other.  Results are printed;
# copy them with the command and the machine into docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
dir=${BENCH_DIR:-$(mktemp -d /var/tmp/ferry-bench.XXXXXX)}
trap 'rm -rf "$dir"' EXIT
echo "# machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -r), fs $(df -T "$dir" | awk 'NR==2{print $2}')"
"$build/bench/store_bench" "$dir" ${QUICK:+--quick}
for b in bench/*.sh; do
  [ "$b" = bench/run.sh ] && continue
  echo "== $b"
  "$b" "$build"
done
