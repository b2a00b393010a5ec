#!/bin/bash
# Idle pairs: what 50 pairs with nothing to do cost, on both sites.
#   bench/idle.sh BUILD_DIR [RESULTS_FILE]      (BENCH_A=MAIN_BUILD adds A)
# Per build, two real ferryd (TLS) with BENCH_IDLE_PAIRS (default 50)
# volumes of 64 MiB (1 MiB of random data each) paired at --period
# BENCH_IDLE_PERIOD (default 5 s) and synced once.  The builds' daemons
# idle side by side, so every round measures all of them over the same
# window of BENCH_IDLE_S (default 60) seconds: CPU of each ferryd (% of one
# core, from /proc/PID/stat), bytes it wrote to storage (/proc/PID/io
# write_bytes, per second) and its threads.  Then, in a second window of
# the same length, strace -c -f counts the sync calls (fsync, fdatasync,
# msync, sync_file_range) and renames of each ferryd (strace slows the
# daemons down, which is why the CPU window runs without it).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_setup idle "$1"
OUT=${2:-}
SPIDS=
trap 'for p in $SPIDS; do kill -INT "$p" 2>/dev/null; done; ferryd_stop_all; rm -rf "$T"' EXIT
N=${BENCH_IDLE_PAIRS:-50}
PERIOD=${BENCH_IDLE_PERIOD:-5}
W=${BENCH_IDLE_S:-60}

secret_file "$T/secret"
head -c $((1 << 20)) /dev/urandom >"$T/data"
for v in $BUILDS; do
	pb=$(free_port)
	ferryd_start "$v" "$T/pa$v" --secret-file "$T/secret"
	ferryd_start "$v" "$T/pb$v" --listen "127.0.0.1:$pb" --secret-file "$T/secret"
	for i in $(seq "$N"); do
		"${BUILD[$v]}/ferry" --pool "$T/pa$v" volume create "v$i" --size 64M >/dev/null
		"${BUILD[$v]}/ferry" --pool "$T/pa$v" volume write "v$i" --offset $((i << 20)) "$T/data" >/dev/null
		"${BUILD[$v]}/ferry" --pool "$T/pa$v" pair create "v$i" --peer "127.0.0.1:$pb" \
			--period "$PERIOD" >/dev/null
	done
	for i in $(seq "$N"); do pair_wait_synced "$v" "$T/pa$v" "v$i" 1; done
done
echo "# $N pairs per build, period $PERIOD s, windows of $W s"
sleep "$PERIOD"   # past the first scheduled cycles

declare -A C0 IO0
wbytes() { awk '/^write_bytes/{print $2}' "/proc/$1/io"; }
for r in $(seq "$BENCH_ROUNDS"); do
	l=$(load1)
	for v in $BUILDS; do for s in a b; do
		pid=$(ferryd_pid "$T/p$s$v"); C0[$s$v]=$(cpu_s "$pid"); IO0[$s$v]=$(wbytes "$pid")
	done; done
	t0=$(now); sleep "$W"; t1=$(now)
	dt=$(elapsed "$t0" "$t1")
	for v in $BUILDS; do for s in a b; do
		pid=$(ferryd_pid "$T/p$s$v")
		site=primary; [ $s = b ] && site=secondary
		record "cpu_pct_$site" "$v" "$r" "$(python3 -c "print('%.2f' % (100 * ($(cpu_s "$pid") - ${C0[$s$v]}) / $dt))")" "% core" "$l"
		record "write_Bps_$site" "$v" "$r" "$(python3 -c "print('%.0f' % (($(wbytes "$pid") - ${IO0[$s$v]}) / $dt))")" B/s "$l"
		record "threads_$site" "$v" "$r" "$(awk '/^Threads/{print $2}' "/proc/$pid/status")" threads "$l"
	done; done
	# the sync calls, counted by strace in a second window
	SPIDS=
	for v in $BUILDS; do for s in a b; do
		pid=$(ferryd_pid "$T/p$s$v")
		strace -c -f -o "$T/strace.$s$v" -e trace=fsync,fdatasync,msync,sync_file_range,rename,renameat,renameat2 \
			-p "$(ls /proc/"$pid"/task | paste -sd,)" 2>/dev/null &
		SPIDS="$SPIDS $!"
	done; done
	t0=$(now); sleep "$W"
	for p in $SPIDS; do kill -INT "$p" 2>/dev/null || true; done
	for p in $SPIDS; do wait "$p" 2>/dev/null || true; done
	t1=$(now); SPIDS=
	dt=$(elapsed "$t0" "$t1")
	for v in $BUILDS; do for s in a b; do
		site=primary; [ $s = b ] && site=secondary
		for c in fsync fdatasync msync rename; do
			n=$(awk -v c="$c" '$NF==c || ($NF ~ "^"c && c=="rename") {s += $4} END {print s+0}' "$T/strace.$s$v")
			# strace -c puts the error count before the name only when
			# there are errors; calls is the 4th column either way
			record "${c}_per_s_$site" "$v" "$r" "$(python3 -c "print('%.2f' % ($n / $dt))")" /s "$l"
		done
	done; done
done
summarize "$OUT"
