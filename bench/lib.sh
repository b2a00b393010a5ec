# Shared helpers of the benchmark scripts (sourced, not run).
#
# Every benchmark here follows the same rules (docs/PERFORMANCE.md):
#  - real data: random bytes unless zeros are the point of the row;
#  - both sides alike: page cache dropped before every timed run (root), or
#    else both warm; baselines flush (fsync) like ferry commits;
#  - A/B interleaved: the variants run once per round, in the listed order
#    on odd rounds and reversed on even rounds, BENCH_ROUNDS rounds;
#  - every sample is recorded with the 1-minute load average at its start,
#    and bench/summarize.py prints median, min-max and spread per variant
#    and the median of the per-round ratios to the reference.
#
# Builds: $1 of the script is the build under test ("B"); BENCH_A=DIR adds
# a second build ("A", e.g. main's) as its own variants of every ferry row.

BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}

bench_setup() { # NAME BUILD_DIR -> T (temp dir), RES (results file), BUILDS
	BENCH_NAME=$1
	B=$(cd "${2:?usage: bench/$1.sh BUILD_DIR [RESULTS_FILE]}" && pwd)
	T=$(mktemp -d "$BENCH_TMPDIR/ferry-bench-$1.XXXXXX")
	RES=$T/results.tsv
	: >"$RES"
	declare -gA BUILD=([B]=$B)
	BUILDS="B"
	if [ -n "${BENCH_A:-}" ]; then
		BUILD[A]=$(cd "$BENCH_A" && pwd)
		BUILDS="A B"
	fi
	set -E
	trap 'bench_err $LINENO' ERR
	CACHES=warm
	[ -w /proc/sys/vm/drop_caches ] && CACHES=dropped
	local cnote="page cache $CACHES before each timed run"
	[ -n "${BENCH_NO_SETTLE:-}" ] && cnote="page cache not dropped (both sides warm alike)"
	echo "# $1: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r)," \
	     "$(df -T "$T" | awk 'NR==2{print $2}') on $(df "$T" | awk 'NR==2{print $1}')," \
	     "$BENCH_ROUNDS rounds, $cnote"
	for v in $BUILDS; do echo "# build $v: ${BUILD[$v]}"; done
}

# A failing step: show the end of every daemon log before the EXIT trap
# removes the temporary directory.
bench_err() {
	local l
	echo "bench/$BENCH_NAME.sh: failed at line $1" >&2
	for l in "$T"/*/ferryd.log; do
		[ -f "$l" ] || continue
		echo "--- $l (last lines)" >&2
		tail -n 15 "$l" >&2
	done
	trap - ERR
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
now() { date +%s.%N; }
load1() { cut -d' ' -f1 /proc/loadavg; }
elapsed() { python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }

# Before every timed run: the page cache is dropped (as root), so that
# both sides read from the disk; without root both stay warm.
settle() {
	sync
	if [ "$CACHES" = dropped ]; then
		echo 3 >/proc/sys/vm/drop_caches
	fi
}

# record METRIC VARIANT ROUND VALUE UNIT [LOAD]
record() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-$(load1)}" >>"$RES"
}
# reference METRIC VARIANT lower|higher: ratios of METRIC are taken to this
# variant; "lower" = smaller is better (times), "higher" = rates.
reference() { printf '#ref\t%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }
note() { printf '#note\t%s\n' "$*" >>"$RES"; }

# order ROUND V1 V2 ...: the variants of this round, reversed on even rounds.
order() {
	local r=$1; shift
	if [ $((r % 2)) -eq 1 ]; then echo "$@"; else echo "$@" | tr ' ' '\n' | tac | tr '\n' ' '; fi
}

summarize() { # [RESULTS_FILE_COPY]
	python3 "$(dirname "${BASH_SOURCE[0]}")/summarize.py" "$RES"
	[ -n "${1:-}" ] && cp "$RES" "$1"
	return 0
}

# CPU seconds (user + system) a process has used so far.
cpu_s() {
	awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}
sub() { python3 -c "import sys; print('%.3f' % (float(sys.argv[1]) - float(sys.argv[2])))" "$1" "$2"; }

# ---- ferryd --------------------------------------------------------------
secret_file() { # FILE
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1"
	chmod 600 "$1"
}
ferryd_start() { # VARIANT POOL ARGS...: daemonizes, returns once ready
	local v=$1 pool=$2; shift 2
	"${BUILD[$v]}/ferryd" --pool "$pool" --log-level warn "$@"
}
ferryd_pid() { cat "$1/ferryd.lock" 2>/dev/null; }
ferryd_stop() { # POOL...
	local p pid
	for p in "$@"; do
		pid=$(ferryd_pid "$p") || continue
		[ -n "$pid" ] || continue
		kill -TERM "$pid" 2>/dev/null || continue
		for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	return 0
}
ferryd_stop_all() { # every ferryd of the pools under $T
	local l
	for l in "$T"/*/ferryd.lock; do [ -f "$l" ] && ferryd_stop "$(dirname "$l")"; done
	return 0
}
# Waits until the pair is idle with at least cycle N synced; prints nothing.
pair_wait_synced() { # VARIANT POOL NAME N [TIMEOUT_S]
	local v=$1 pool=$2 name=$3 n=$4 tmo=${5:-900} t0
	t0=$(date +%s)
	while :; do
		"${BUILD[$v]}/ferry" --pool "$pool" pair status "$name" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
ok = d["state"] == "idle" and (d.get("last_synced") or {}).get("cycle", 0) >= int(sys.argv[1])
sys.exit(0 if ok else 1)' "$n" && return 0
		[ $(($(date +%s) - t0)) -gt "$tmo" ] && { echo "pair $name: not synced after $tmo s" >&2; return 1; }
		sleep 0.05
	done
}
pair_json() { "${BUILD[$1]}/ferry" --pool "$2" pair status "$3" --json; }

# ---- test data -----------------------------------------------------------
# sparse_image FILE SIZE_MIB: random data in every other 1 MiB extent (the
# even ones), holes in between: half the size is data.
sparse_image() {
	python3 - "$1" "$2" <<'PY'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
for i in range(0, mib, 2):
    os.pwrite(fd, os.urandom(1 << 20), i << 20)
os.ftruncate(fd, mib << 20)
os.fsync(fd)
os.close(fd)
PY
}
# scatter_image FILE SIZE COUNT SEED [BASE_IMAGE]: COUNT random 4 KiB blocks
# of random data at random distinct 4 KiB offsets of a sparse file of SIZE
# bytes; with BASE_IMAGE, the same blocks are also written into it.
scatter_image() {
	python3 - "$@" <<'PY'
import os, random, sys
path, size, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base = sys.argv[5] if len(sys.argv) > 5 else None
rng = random.Random(seed)
blocks = set()
nblk = size // 4096
while len(blocks) < count:
    blocks.add(rng.randrange(nblk))
fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
bfd = os.open(base, os.O_WRONLY) if base else -1
os.ftruncate(fd, size)
for b in sorted(blocks):
    d = os.urandom(4096)
    os.pwrite(fd, d, b * 4096)
    if bfd >= 0:
        os.pwrite(bfd, d, b * 4096)
os.fsync(fd)
os.close(fd)
if bfd >= 0:
    os.fsync(bfd)
    os.close(bfd)
PY
}
# iscsi_load URL IMAGE: writes the data extents of a sparse IMAGE onto the
# LUN at URL (holes are skipped: the target stays thin where the image is).
iscsi_load() {
	qemu-img convert -n --target-is-zero -f raw -O raw -W "$2" "$1"
}
