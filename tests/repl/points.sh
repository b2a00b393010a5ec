#!/bin/bash
# Recovery points (issue 12): `pair create --keep 3` keeps the last 3
# synced cycles on the secondary, each with the md5 the primary had at
# that cycle; the primary keeps only its last synced one; space is what
# changed between the points (retention folds what it drops); `pair set
# --keep 1` shrinks at the next cycle; `pair promote --force --at` the
# oldest point gives exactly its md5 and leaves the later points listed;
# bad input is refused (usage errors exit 2).
export FERRY_TEST_TAG=${FERRY_TEST_TAG:-groups-points}
. "$(dirname "$0")/lib.sh"

expect 0 "site b starts" -- site_start b
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"
M=$((1024 * 1024))
expect 0 "create db" -- fa volume create db --size 64M --object-size 1M
head -c $((8 * M)) /dev/urandom >"$T/base"
expect 0 "8 MiB of base data at 8M" -- fa volume write db "$T/base" --offset $((8 * M))

# ---- bad input ------------------------------------------------------------------------
expect_err 2 "1..10000" "--keep 0 refused" -- fa pair create db --peer "$B" --keep 0
expect_err 2 "1..10000" "--keep 10001 refused" -- fa pair create db --peer "$B" --keep 10001
expect_err 2 "" "--keep-for 5x refused" -- fa pair create db --peer "$B" --keep-for 5x
check "nothing created by the refusals" sh -c "! '$FERRY_BIN' --pool '$T/a' pair status db >/dev/null 2>&1"

expect 0 "pair create --keep 3 --keep-for 0" -- fa pair create db --peer "$B" --period 1h --keep 3 --keep-for 0
check "status says keep 3" json_holds a db "d['keep'] == 3 and d['keep_for'] == 0"
expect 0 "initial sync" -- fa pair sync db --wait
check "the secondary learnt keep 3" wait_json b db "d['keep'] == 3" 15
expect_err 2 "1..10000" "pair set --keep 0 refused" -- fa pair set db --keep 0
expect_err 1 "run pair set on the primary" "pair set --keep on the secondary" -- fb pair set db --keep 2
expect_err 1 "no pair" "points of no pair" -- fb pair points nope

# ---- five cycles with distinct data ------------------------------------------------------
# Each cycle rewrites the same 1 MiB: the points differ there only, and
# the versions that no point holds any more must be freed.
declare -A MD5 SNAP
run_cycles() { # run_cycles N [OFFSET]
	local i cyc snap
	for ((i = 1; i <= $1; i++)); do
		rand_write fa db "${2:-0}" $M
		expect 0 "cycle with new data" -- fa pair sync db --wait
		cyc=$(fa pair status db --json | json last_synced.cycle)
		snap=$(fa pair status db --json | json last_synced.snapshot)
		MD5[$cyc]=$(md5_of fa "db@$snap")
		SNAP[$cyc]=$snap
	done
}
run_cycles 5

# points_ok SITE COUNT: `pair points --json` has COUNT points, increasing
# cycles, the fields, and each point's md5 is the primary's at its cycle.
points_ok() {
	local out
	out=$("$1" pair points db --json) || return 1
	python3 - "$2" "$out" <<'EOF' || return 1
import json, sys
n = int(sys.argv[1]); pts = json.loads(sys.argv[2])
assert isinstance(pts, list) and len(pts) == n, pts
for p in pts:
    for k in ("snapshot", "cycle", "time", "bytes"):
        assert k in p, (k, p)
    assert isinstance(p["cycle"], int) and isinstance(p["time"], int) and isinstance(p["bytes"], int)
cy = [p["cycle"] for p in pts]
assert cy == sorted(cy) and len(set(cy)) == n, cy
EOF
	local cyc snap
	while read -r cyc snap; do
		[ "$(md5_of "$1" "db@$snap")" = "${MD5[$cyc]}" ] || { echo "md5 of $snap differs"; return 1; }
	done < <(python3 -c 'import json,sys; [print(p["cycle"], p["snapshot"]) for p in json.load(sys.stdin)]' <<<"$out")
}

check "the secondary lists 3 points, oldest first, each with the primary's md5 at its cycle" points_ok fb 3
check "the primary keeps only its last synced one" points_ok fa 1
expect 0 "points --json on b" -- fb pair points db --json
PTS=$OUT
last=$(fa pair status db --json | json last_synced.cycle)
check "the newest point is the last synced cycle" python3 -c "import json; assert json.loads('''$PTS''')[-1]['cycle'] == $last"
check "the secondary holds no other cycle snapshot" test "$(fb snap list db --json | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["name"].startswith("ferry.db.")))')" = 3
check "each later point's bytes = the 1 MiB changed since the one before" \
	python3 -c "import json; p = json.loads('''$PTS'''); assert [x['bytes'] for x in p[1:]] == [$M, $M], p"
expect 0 "points (text)" -- fb pair points db
check "text lists the snapshots and marks the last synced" grep -q "${SNAP[$last]}.*(last synced)" <<<"$OUT"
# Space: the base data plus the 3 versions of the rewritten MiB that the
# points hold (the head is the last point): not 5 versions, not 3 copies.
alloc=$(fb volume info db --json | json allocated_bytes)
echo "secondary allocated: $alloc bytes (ideal $((11 * M)))"
check "space is the changes between points ($alloc <= 11 MiB + 1 MiB)" test "$alloc" -le $((12 * M))

# ---- set --keep 1 shrinks at the next cycle ---------------------------------------------------
expect 0 "pair set --keep 1" -- fa pair set db --keep 1
check "set prints old -> new" grep -q "keep.*3 -> 1" <<<"$OUT"
check "the secondary learns keep 1" wait_json b db "d['keep'] == 1" 15
run_cycles 1
check "the secondary keeps 1 point after the next cycle" points_ok fb 1
alloc=$(fb volume info db --json | json allocated_bytes)
check "the dropped versions are freed ($alloc <= 9 MiB + 1 MiB)" test "$alloc" -le $((10 * M))

# ---- --keep-for: also the points of the last DUR ------------------------------------------------
expect 0 "pair set --keep-for 1h" -- fa pair set db --keep-for 1h
check "the secondary learns keep_for 3600" wait_json b db "d['keep_for'] == 3600" 15
check "text status tells" grep -q "recovery points: keep 1 and those of the last 3600 s" <<<"$(fb pair status db)"
run_cycles 2
check "keep 1, but the 3 points of the last hour stay" points_ok fb 3
expect 0 "pair set --keep-for 0" -- fa pair set db --keep-for 0
check "the secondary learns keep_for 0" wait_json b db "d['keep_for'] == 0" 15
run_cycles 1
check "back to 1 point" points_ok fb 1

# ---- promote --force --at the oldest point -------------------------------------------------------
expect 0 "pair set --keep 3" -- fa pair set db --keep 3
run_cycles 3
check "3 points again" points_ok fb 3
oldest_point() {
	oldest=$(fb pair points db --json | python3 -c 'import json,sys; p=json.load(sys.stdin)[0]; print(p["cycle"], p["snapshot"])')
	ocyc=${oldest%% *}
	osnap=${oldest#* }
}
oldest_point
expect 0 "site a is lost" -- site_kill a
expect_err 2 "" "--at with a bad name" -- fb pair promote db --force --at 'a/b'
expect_err 1 "no recovery point 'nosuch'" "--at an unknown snapshot" -- fb pair promote db --force --at nosuch
expect_err 1 "no recovery point" "--at a snapshot that is no point" -- fb pair promote db --force --at ferry.db.999999
check "still secondary after the refusals" json_holds b db "d['role'] == 'secondary'"

# A crash after the copy back, before the record: b stays secondary, and
# a cycle arriving then rolls the head back before applying anything.
expect 0 "stop b" -- site_stop b
FERRY_TEST_CRASH_AT=promote-restored site_start b "$PORT_b" || fail "restart b with a crash point"
expect 1 "promote --at dies after the copy back" -- fb pair promote db --force --at "$osnap"
check "b died" wait_for 20 lock_free "$T/b"
check "at the crash point" grep -q "FERRY_TEST_CRASH_AT=promote-restored" "$T/b/ferryd.log"
expect 0 "b restarts" -- site_start b "$PORT_b"
check "b is still secondary" json_holds b db "d['role'] == 'secondary'"
check "its points are untouched" points_ok fb 3
expect 0 "site a returns" -- site_start a "$PORT_a"
# elsewhere than the MiB the promote copied back: only a rollback of the
# head before the cycle makes this point right
run_cycles 1 $((40 * M))
check "the next cycle's point has the primary's md5 (the head was rolled back first)" points_ok fb 3
check "b's head is the last point" test "$(md5_of fb db)" = "${MD5[$(fa pair status db --json | json last_synced.cycle)]}"
expect 0 "site a is lost again" -- site_kill a
oldest_point
expect 0 "points before the failover" -- fb pair points db --json
BEFORE=$(python3 -c 'import json,sys; print(" ".join(p["snapshot"] for p in json.load(sys.stdin)))' <<<"$OUT")
expect 0 "promote --force --at the oldest point ($osnap)" -- fb pair promote db --force --at "$osnap"
check "the message names the point" grep -q "$osnap" <<<"$OUT"
check "b is primary" json_holds b db "d['role'] == 'primary'"
check "b's volume has the oldest point's md5" test "$(md5_of fb db)" = "${MD5[$ocyc]}"
expect 0 "points after the failover" -- fb pair points db --json
AFTER=$(python3 -c 'import json,sys; print(" ".join(p["snapshot"] for p in json.load(sys.stdin)))' <<<"$OUT")
check "the later points are still listed ($AFTER)" test "$AFTER" = "$BEFORE"
check "each still has its md5" points_ok fb 3
expect_err 1 "primary here already" "--at on a primary" -- fb pair promote db --at "$osnap"
expect 0 "b writable: write on the promoted volume" -- rand_write fb db $((32 * M)) $M
check "the points are untouched by writes" points_ok fb 3
mid=$(python3 -c 'import sys; print(sys.argv[1].split()[1])' "$AFTER")
expect 0 "the operator removes a later point" -- fb snap rm "db@$mid"
check "2 points left" test "$(fb pair points db --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 2

finish
