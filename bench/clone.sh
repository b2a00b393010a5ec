#!/bin/bash
# Clone creation time (issue 12; goal <= 10 ms on a 1 TiB volume with
# 10 GiB written) at two amounts of written data, to show it does not
# depend on them; then the same through the CLI (ferry volume clone, one
# process start and a control-socket round trip included).
#   bench/clone.sh BUILD_DIR [RESULTS_FILE]
# BENCH_CLONE_GIB="SMALL BIG" (default "1 10"), BENCH_ROUNDS clones per
# size (default 21).
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
cd "$(dirname "$0")/.."
read -r small big <<<"${BENCH_CLONE_GIB:-1 10}"
rounds=${BENCH_ROUNDS:-21}
T=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/ferry-bench-clone.XXXXXX")
trap 'f=$T/pool/ferryd.lock; [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; rm -rf "$T"' EXIT
echo "# clone: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r)," \
     "$(df -T "$T" | awk 'NR==2{print $2}'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# store API: $build/bench/clone_bench $T $small $big $rounds"
"$build/bench/clone_bench" "$T" "$small" "$big" "$rounds" | tee "$T/api.tsv" | grep -v $'\t'
[ -n "${2:-}" ] && cp "$T/api.tsv" "$2"

# Through the CLI, on a 1 TiB volume with the small amount written.
"$build/ferryd" --pool "$T/pool" --log-level warn
"$build/ferry" --pool "$T/pool" volume create v --size 1T >/dev/null
head -c $((small << 30)) /dev/urandom >"$T/data" 2>/dev/null || true
"$build/ferry" --pool "$T/pool" volume write v "$T/data" --offset 0 >/dev/null
rm -f "$T/data"
"$build/ferry" --pool "$T/pool" snap create v@s >/dev/null
for ((i = 0; i < rounds; i++)); do
	t0=$(date +%s%N)
	out=$("$build/ferry" --pool "$T/pool" volume clone v@s c$i)
	t1=$(date +%s%N)
	echo "$(( (t1 - t0) / 1000 ))$(sed -n 's/.*(\([0-9.]*\) ms).*/ \1/p' <<<"$out")"
	"$build/ferry" --pool "$T/pool" volume rm c$i >/dev/null
done | sort -n | awk -v n="$rounds" -v g="$small" '
	{ wall[NR] = $1 / 1000; d[NR] = $2 }
	END {
		asort(d)
		printf "ferry volume clone (CLI, %d GiB written): wall median %.1f ms (min %.1f, max %.1f); " \
		       "daemon-side median %.2f ms\n", g, wall[int((n + 1) / 2)], wall[1], wall[n], d[int((n + 1) / 2)]
	}'
