#!/bin/bash
# Idle pairs cost nothing (issue 13): a periodic cycle with nothing to send
# is skipped -- no snapshot, no record rewritten, no sync call on either
# site -- and a heartbeat with SYNCED tells the secondary that its copy is
# still current, so last_synced.time advances and the RPO lag stays about
# a period on the primary and within the heartbeat interval (<= 10 s) on
# the secondary, while the cycle number stays.  A write is sent by
# the next cycle; `pair sync --wait` on an idle pair still runs (and
# commits) a cycle.  Against a secondary that knows no SYNCED (a peer of
# before, FERRY_TEST_NO_SYNCED) the primary runs its cycles in full.
. "$(dirname "$0")/lib.sh"

expect 0 "site b starts" -- site_start b
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"
M=$((1024 * 1024))

expect 0 "create db" -- fa volume create db --size 16M --object-size 1M
rand_write fa db 0 $M
expect 0 "pair create (period 1 s)" -- fa pair create db --peer "$B" --period 1
expect 0 "initial sync" -- fa pair sync db --wait
check_synced db
skipped() { test "$(fa pair status db --json | json counters.cycles_skipped)" -ge "$1"; }
check "idle cycles are skipped" wait_for 30 skipped 3
c0=$(fa pair status db --json | json last_synced.cycle)
t0=$(fb pair status db --json | json last_synced.time)
snaps0=$(fa snap list db; fb snap list db)
rec_times() { stat -c '%n %.9Y %i' "$T"/a/pairs/*.pair "$T"/b/pairs/*.pair; }
recs0=$(rec_times)
check "secondary: last_synced.time advances without a cycle" \
	wait_json b db "d['last_synced']['time'] > $t0" 20
check "primary: RPO lag about a period" wait_json a db "d['rpo_lag_s'] <= 3" 10
check "secondary: RPO lag about a period" wait_json b db "d['rpo_lag_s'] <= 3" 10
check "secondary: last_success set" test "$(fb pair status db --json | json last_success)" != null
check "secondary idle" test "$(state_of fb db)" = idle
check "primary idle" test "$(state_of fa db)" = idle
# What an idle pair touches: nothing durable, on either site.
if command -v strace >/dev/null; then
	for s in a b; do
		pid=$(daemon_pid "$T/$s")
		timeout -s INT 4 strace -c -f -o "$T/strace.$s" \
			-e trace=fsync,fdatasync,msync,sync_file_range,rename,renameat,renameat2 \
			-p "$(ls /proc/"$pid"/task | paste -sd,)" 2>/dev/null &
	done
	wait
	for s in a b; do
		n=$(awk '$NF ~ /^(fsync|fdatasync|msync|sync_file_range|rename)/ {s += $4} END {print s+0}' "$T/strace.$s")
		check "site $s: no sync call and no rename in 4 s of idling ($n)" test "$n" = 0
	done
else
	echo "strace not installed: the syscall check is skipped"
	sleep 3
fi
check "no new snapshot on either site" test "$(fa snap list db; fb snap list db)" = "$snaps0"
check "pair records not rewritten on either site" test "$(rec_times)" = "$recs0"
check "cycle number stays" test "$(fb pair status db --json | json last_synced.cycle)" = "$c0"
check "pair list shows the advancing last sync" grep -q "^db " <<<"$(fb pair list)"

# A write is sent by the next cycle on its own.
rand_write fa db $((5 * M)) 8192
check "a write is replicated by the next cycle" \
	wait_json b db "d['last_synced']['cycle'] > $c0" 20
check_synced db
# `pair sync --wait` on an idle pair: a real cycle, promptly.
check "idle again" wait_for 30 skipped 5
c1=$(fa pair status db --json | json last_synced.cycle)
t=$SECONDS
expect 0 "pair sync --wait on an idle pair" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync db --wait
echo "pair sync --wait on an idle pair: $((SECONDS - t)) s"
check "it committed a cycle" test "$(fa pair status db --json | json last_synced.cycle)" -gt "$c1"
check_synced db
check "metrics-facing counter: skipped cycles counted" skipped 5

# A secondary of before (no SYNCED): the primary keeps running full cycles.
expect 0 "stop b" -- site_stop b
export FERRY_TEST_NO_SYNCED=1
expect 0 "b restarts as a peer without SYNCED" -- site_start b "$PORT_b"
unset FERRY_TEST_NO_SYNCED
c2=$(fa pair status db --json | json last_synced.cycle)
check "cycles commit again against the old peer" \
	wait_json a db "d['last_synced']['cycle'] >= $c2 + 3" 40
check "the refusal is logged once" test "$(grep -c 'did not take SYNCED' "$T/a/ferryd.log")" -le 2
check "the pair stays idle, not error" test "$(state_of fa db)" != error
finish
