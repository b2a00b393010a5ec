#!/bin/bash
# make bench: every benchmark, one after the other (each is also runnable
# alone: bench/NAME.sh BUILD_DIR [RESULTS_FILE]).
#   bench/run.sh [BUILD_DIR]        BENCH_A=OTHER_BUILD compares two builds
# (A/B, interleaved); BENCH_ROUNDS (default 3; iscsi.sh: 5) rounds; see
# docs/PERFORMANCE.md for what each one measures and the figures.
# BENCH_ONLY="sync pacing" runs just those.  Results files (tab-separated
# samples, bench/summarize.py turns them into tables) go to BENCH_OUT
# (default bench-results/ under the build directory).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${BENCH_OUT:-$build/bench-results}
mkdir -p "$out"
echo "# machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
dir=$(mktemp -d /var/tmp/ferry-bench-store.XXXXXX)
trap 'rm -rf "$dir"' EXIT
all="store link sync incr scatter pacing idle iscsi repl metrics rbd clone group"
for b in ${BENCH_ONLY:-$all}; do
	echo
	echo "== $b"
	case $b in
	store) "$build/bench/store_bench" "$dir" ${QUICK:+--quick} ;;
	link)
		for m in "" --plaintext; do
			echo "link_bench 2048 $m: $("$build/bench/link_bench" 2048 $m | tr '\n' ' ')"
		done ;;
	metrics) bench/metrics.sh "$build" ;;
	rbd) bench/rbd.sh "$build" "$out/rbd.md" ;;
	*) "bench/$b.sh" "$build" "$out/$b.tsv" ;;
	esac
done
