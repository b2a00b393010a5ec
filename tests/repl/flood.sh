#!/bin/bash
# Replication port flood without credentials (issue 14, item 1): while
# flooder.py holds or churns 64 and 500 idle connections from one source
# address (127.0.0.2), from eight (127.0.0.2..9; all of 127/8 is local on
# Linux) and from the primary's own address (127.0.0.1, as from behind the
# same NAT), reconnecting at up to 200 connects/s, a pair at period 1 keeps cycling: >= 99% of `pair sync --wait`
# succeed, their median time stays within 3x of the unflooded run (the
# figures are printed; 2x is what the docs record, 3x is what a shared CI
# machine can assert), and the secondary's log stays bounded.  Also: an
# idle connection is dropped after the handshake deadline (HS_TIMEOUT_MS,
# 5 s), and a displaced one is told why in a plaintext ERROR frame.
. "$(dirname "$0")/lib.sh"
FLOODER=$HERE/flooder.py
FLOOD_PID=

flood_stop() {
	[ -n "$FLOOD_PID" ] || return 0
	kill -TERM "$FLOOD_PID" 2>/dev/null
	wait "$FLOOD_PID" 2>/dev/null
	FLOOD_PID=
}
flood_cleanup() { flood_stop; repl_cleanup; }
trap flood_cleanup EXIT

expect 0 "site b starts" -- site_start b
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"
expect 0 "create v" -- fa volume create v --size 16M --object-size 1M
rand_write fa v 0 $((1024 * 1024))
expect 0 "pair create (period 1)" -- fa pair create v --peer "$B" --period 1
expect 0 "initial sync" -- fa pair sync v --wait

# syncs SECONDS NAME: `pair sync --wait` (after a 64 KiB write each) for
# SECONDS; adds to OK_n / FAIL_n and writes the times (ms) to $T/ms.NAME.
OK_n=0
FAIL_n=0
syncs() {
	local end=$((SECONDS + $1)) t0 t1 off=0
	: >"$T/ms.$2"
	while [ $SECONDS -lt $end ]; do
		rand_write fa v $((off * 65536)) 65536
		off=$(((off + 1) % 256))
		t0=$(date +%s%N)
		if fa pair sync v --wait >/dev/null 2>"$T/sync.err"; then
			t1=$(date +%s%N)
			echo $(((t1 - t0) / 1000000)) >>"$T/ms.$2"
			OK_n=$((OK_n + 1))
		else
			FAIL_n=$((FAIL_n + 1))
			echo "sync failed during $2: $(cat "$T/sync.err")" >&2
		fi
	done
}
median() { sort -n "$1" | awk '{a[NR] = $1} END {print NR ? a[int((NR + 1) / 2)] : 0}'; }

syncs 6 idle
base=$(median "$T/ms.idle")
echo "unflooded: $(wc -l <"$T/ms.idle") syncs, median ${base} ms"
OK_n=0
FAIL_n=0

# The handshake deadline, on a site c with the default 30 s per-operation
# deadline: an idle connection goes after 5 s, and so does one that
# trickles a byte a second (never idle for long).
site_c_start() { FERRY_REPL_TIMEOUT_MS=30000 site_start c; }
expect 0 "site c starts (default deadlines)" -- site_c_start
idle_s=$(python3 "$FLOODER" idle "$PORT_c" 127.0.0.40)
echo "an idle connection was closed after $idle_s s"
check "idle connection dropped at the 5 s handshake deadline ($idle_s s)" \
	python3 -c "import sys; assert 4.5 <= float(sys.argv[1]) <= 8" "$idle_s"
slow_s=$(python3 "$FLOODER" slow "$PORT_c" 127.0.0.40)
echo "a connection sending a byte a second was closed after $slow_s s"
check "trickling connection dropped at the 5 s handshake deadline ($slow_s s)" \
	python3 -c "import sys; assert 4.5 <= float(sys.argv[1]) <= 8" "$slow_s"
check "the deadline is logged" grep -q "did not complete the handshake within 5000 ms" "$T/c/ferryd.log"
expect 0 "site c stops" -- site_stop c
# The oldest of a source over its budget (8) is displaced and told why.
got=$(python3 "$FLOODER" displaced "$PORT_b" 127.0.0.41 9 | tr -d '\0')
check "a displaced connection gets ERROR 'too many unauthenticated connections'" \
	grep -q "too many unauthenticated connections" <<<"$got"

log0=$(wc -l <"$T/b/ferryd.log")
t_flood=$SECONDS
SRC8=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9
# phase NAME N SOURCES CHURN: the flood runs while the pair syncs.
phase() {
	python3 "$FLOODER" flood "$PORT_b" "$2" "$3" "$4" "$T/flood.$1" &
	FLOOD_PID=$!
	local ok0=$OK_n fail0=$FAIL_n
	syncs 6 "$1"
	flood_stop
	local st
	st=$(cat "$T/flood.$1" 2>/dev/null)
	echo "flood $1: syncs ok $((OK_n - ok0)) failed $((FAIL_n - fail0)), median" \
		"$(median "$T/ms.$1") ms (unflooded $base ms); flooder: connects, closed by" \
		"ferryd, ERROR frames, errors, held at the end: $st"
	check "flood $1: the flooder connected" test "${st%% *}" -gt 0
}
phase hold64-1src 64 127.0.0.2 0
phase hold500-1src 500 127.0.0.2 0
phase churn500-1src 500 127.0.0.2 100
phase hold64-8src 64 "$SRC8" 0
phase hold500-8src 500 "$SRC8" 0
phase churn500-8src 500 "$SRC8" 100
phase hold500-peersrc 500 127.0.0.1 0
phase churn500-peersrc 500 127.0.0.1 100
flood_s=$((SECONDS - t_flood))

total=$((OK_n + FAIL_n))
echo "flooded: $OK_n of $total syncs succeeded"
check "syncs ran under the flood ($total)" test "$total" -ge 12
check ">= 99% of syncs succeed under the flood ($OK_n of $total)" test $((OK_n * 100)) -ge $((total * 99))
cat "$T"/ms.hold* "$T"/ms.churn* >"$T/ms.flood"
fmed=$(median "$T/ms.flood")
echo "sync time: unflooded median $base ms, flooded median $fmed ms"
check "flooded median sync time ($fmed ms) within 3x of unflooded ($base ms), +100 ms" \
	test "$fmed" -le $((3 * base + 100))

# The secondary's log: the handshake lines of the flood, bounded by the
# rate limit (5 shown + 1 summary per 10 s window).
sed -n "$((log0 + 1)),\$p" "$T/b/ferryd.log" >"$T/flood.log"
n_hs=$(grep -cE "handshake|unauthenticated|refusing|replication port" "$T/flood.log")
echo "secondary log during ${flood_s} s of flood: $n_hs handshake lines ($(wc -l <"$T/flood.log") lines in all, most of them the cycles' debug lines); the summaries:"
grep "replication port, last" "$T/flood.log" | sed 's/^/  /' 
check "flood log lines bounded ($n_hs for $flood_s s)" test "$n_hs" -le $(((flood_s / 10 + 2) * 6))
check "a summary names the displaced connections" \
	grep -q "unauthenticated connections displaced" "$T/b/ferryd.log"

# After the flood: the pair is still in sync (no cycle of its own races
# the check).
expect 0 "period 1 h" -- fa pair set v --period 1h
expect 0 "sync after the flood" -- fa pair sync v --wait
check_synced v
finish
