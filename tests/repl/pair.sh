#!/bin/bash
# Two real ferryd on loopback: pair create, initial sync of a sparse volume,
# status on both sides, the secondary is read-only, cycles of random
# writes / zero writes / discards, every shape of the throttle's end
# (issue item 3.4), verify, rm.  After every cycle: md5(primary@S) ==
# md5(secondary@S) == md5(secondary head) for the last synced S.
. "$(dirname "$0")/lib.sh"

expect 0 "site b starts (listens)" -- site_start b
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"
M=$((1024 * 1024))

# ---- initial sync of a sparse volume ----------------------------------------
expect 0 "create db" -- fa volume create db --size 64M --object-size 1M
rand_write fa db 0 8192
rand_write fa db $((10 * M + 4096)) 100000
rand_write fa db $((64 * M - 4096)) 4096
expect 0 "pair create" -- fa pair create db --peer "$B" --period 3600
check "create says initial sync" grep -q "initial sync" <<<"$OUT"
expect 0 "sync --wait" -- fa pair sync db --wait
check_synced db
expect 0 "status json (primary)" -- fa pair status db --json
for k in name role peer state period_s last_synced rpo_lag_s cycle last_cycle error; do
	check "status has $k" python3 -c "import json,sys; d=json.loads(sys.argv[1]); assert '$k' in d" "$OUT"
done
check "primary role" test "$(json role <<<"$OUT")" = primary
check "idle after sync" test "$(json state <<<"$OUT")" = idle
check "period" test "$(json period_s <<<"$OUT")" = 3600
check "error null" test "$(json error <<<"$OUT")" = null
check "wire bytes follow the data, not the 64 MiB" test "$(json last_cycle.wire_bytes <<<"$OUT")" -lt 300000
expect 0 "status json (secondary)" -- fb pair status db --json
check "secondary role" test "$(json role <<<"$OUT")" = secondary
# The same snapshot and cycle on both sides; the time is the snapshot's on
# both, or later on an idle pair (a heartbeat's SYNCED moves it, the
# primary's a moment after the secondary's): within one heartbeat (10 s).
check "same last synced snapshot" test "$(json last_synced.snapshot <<<"$OUT")" = "$(fa pair status db --json | json last_synced.snapshot)"
check "same last synced cycle" test "$(json last_synced.cycle <<<"$OUT")" = "$(fa pair status db --json | json last_synced.cycle)"
check "same last synced time, give or take a heartbeat" python3 -c "import sys; assert abs(int(sys.argv[1]) - int(sys.argv[2])) <= 10" "$(json last_synced.time <<<"$OUT")" "$(fa pair status db --json | json last_synced.time)"
expect 0 "status text" -- fa pair status db
check "text status" grep -q "last synced: ferry.db" <<<"$OUT"
expect 0 "pair list" -- fa pair list --json
check "list names db" grep -q '"name":"db"' <<<"$OUT"
expect 0 "secondary lists it" -- fb pair list
check "secondary list" grep -q "^db .*secondary" <<<"$OUT"
expect 0 "volume created on the secondary" -- fb volume info db --json
check "same size" test "$(json size <<<"$OUT")" = $((64 * M))
check "same object size" test "$(json object_size <<<"$OUT")" = $M

# ---- the secondary is read-only ------------------------------------------------
head -c 4096 /dev/urandom >"$T/blk"
expect_err 1 "read-only" "secondary refuses writes" -- fb volume write db "$T/blk" --offset 0
expect_err 1 "read-only" "secondary refuses discards" -- fb volume discard db --offset 0 --length 4096
expect_err 1 "run sync on the primary" "sync on the secondary" -- fb pair sync db
s=$(last_synced fa db)
expect_err 1 "in use by replication" "last synced snapshot protected (primary)" -- fa snap rm "db@$s"
expect_err 1 "in use by replication" "last synced snapshot protected (secondary)" -- fb snap rm "db@$s"
expect_err 1 "replication pair" "paired volume cannot be removed" -- fa volume rm db --force

# ---- cycles of random writes, zero writes and discards ----------------------------
for c in 1 2 3 4 5 6; do
	for i in 1 2 3 4; do
		off=$(( (RANDOM * 32768 + RANDOM) % (64 * M / 512) * 512 ))
		len=$(( 512 + (RANDOM * 32768 + RANDOM) % (700 * 1024) ))
		[ $((off + len)) -gt $((64 * M)) ] && len=$((64 * M - off))
		case $((RANDOM % 3)) in
		0) fa volume discard db --offset "$off" --length "$len" >/dev/null ;;
		*) rand_write fa db "$off" "$len" ;;
		esac
	done
	expect 0 "cycle $c" -- fa pair sync db --wait
	check_synced db
done
# Only the last synced snapshot is kept on each side; others' snapshots stay.
nsnaps() { "$1" snap list db --json | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["name"].startswith("ferry.db.")))'; }
check "primary keeps one cycle snapshot" test "$(nsnaps fa)" = 1
check "secondary keeps one cycle snapshot" test "$(nsnaps fb)" = 1
# (replication's own namespace, ferry.*, is refused to users: issue 14)
expect_err 2 "is reserved" "a user snapshot in replication's namespace" -- fa snap create db@ferry.db.mine
expect 0 "a user snapshot" -- fa snap create db@db.mine
expect 0 "another cycle" -- fa pair sync db --wait
check "user snapshot still there" grep -q '"db.mine"' <<<"$(fa snap list db --json)"
check_synced db
expect 0 "verify" -- fa pair verify db
check "verify prints both md5s" test "$(grep -cE '^(primary|secondary) +[0-9a-f]{32}' <<<"$OUT")" = 2
expect 0 "verify json" -- fa pair verify db --json
check "verify match" test "$(json match <<<"$OUT")" = True

# ---- item 3.4: the shapes ----------------------------------------------------------
# last object of the increment all-zero
expect 0 "v1" -- fa volume create v1 --size 8M --object-size 1M
rand_write fa v1 0 $M
rand_write fa v1 $((7 * M)) $M
expect 0 "pair v1" -- fa pair create v1 --peer "$B" --period 3600
expect 0 "v1 sync" -- fa pair sync v1 --wait
rand_write fa v1 4096 4096
fa volume discard v1 --offset $((7 * M)) --length $M >/dev/null
expect 0 "last object all-zero: cycle ends" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync v1 --wait
check_synced v1
check "zeroed MiB sent as a zero record" test "$(fa pair status v1 --json | json last_cycle.wire_bytes)" -lt 65536
# every object all-zero
fa volume discard v1 --offset 0 --length $((8 * M)) >/dev/null
expect 0 "every object all-zero: cycle ends" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync v1 --wait
check_synced v1
check "no data sent" test "$(fa pair status v1 --json | json last_cycle.data_bytes)" = 0
# empty increment
expect 0 "empty increment: cycle ends" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync v1 --wait
check_synced v1
check "empty: no extents" test "$(fa pair status v1 --json | json last_cycle.extents)" = 0
# last object shorter than the object size (3.5 objects)
expect 0 "v2" -- fa volume create v2 --size $((3 * M + 512 * 1024)) --object-size 1M
rand_write fa v2 $((3 * M + 512 * 1024 - 8192)) 8192
expect 0 "pair v2" -- fa pair create v2 --peer "$B" --period 3600
expect 0 "short last object: initial" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync v2 --wait
check_synced v2
fa volume discard v2 --offset $((3 * M)) --length $((512 * 1024)) >/dev/null
expect 0 "short last object zeroed" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync v2 --wait
check_synced v2
# whole-volume discard followed by a few small writes (mkfs)
expect 0 "v3" -- fa volume create v3 --size 32M --object-size 1M
for i in 0 5 10 15 20 25 30; do rand_write fa v3 $((i * M)) 300000; done
expect 0 "pair v3" -- fa pair create v3 --peer "$B" --period 3600
expect 0 "v3 initial" -- fa pair sync v3 --wait
fa volume discard v3 --offset 0 --length $((32 * M)) >/dev/null
rand_write fa v3 0 4096
rand_write fa v3 $((16 * M + 8192)) 4096
rand_write fa v3 $((32 * M - 4096)) 4096
expect 0 "discard + few writes: cycle ends" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync v3 --wait
check_synced v3
check "mkfs-like cycle is small on the wire" test "$(fa pair status v3 --json | json last_cycle.wire_bytes)" -lt 100000
# a huge object count with only the last object changed
expect 0 "v4" -- fa volume create v4 --size 1G --object-size 64K
expect 0 "pair v4" -- fa pair create v4 --peer "$B" --period 3600
expect 0 "v4 initial (empty)" -- fa pair sync v4 --wait
rand_write fa v4 $((1024 * M - 4096)) 4096
expect 0 "only the last of 16384 objects changed" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync v4 --wait
check_synced v4
check "one extent" test "$(fa pair status v4 --json | json last_cycle.extents)" = 1

# ---- existing secondary ---------------------------------------------------------------
expect 0 "a volume on b" -- fb volume create busy --size 4M
rand_write fb busy 0 4096
expect 0 "busy on a" -- fa volume create busy --size 4M
expect_err 1 "not empty" "non-empty secondary refused" -- fa pair create busy --peer "$B"
expect 0 "--force takes it" -- fa pair create busy --peer "$B" --force --period 3600
expect 0 "busy sync" -- fa pair sync busy --wait
check_synced busy

# ---- usage ----------------------------------------------------------------------------
expect_err 2 "at least 1" "period 0 refused" -- fa pair create v9 --peer "$B" --period 0
expect_err 1 "no pair" "status of no pair" -- fa pair status nope
expect_err 2 "" "create needs --peer" -- fa pair create db

# ---- rm ends the pair on both sides; the secondary keeps its volume ----------------
last=$(last_synced fa db)
want=$(md5_of fa "db@$last")
expect 0 "pair rm" -- fa pair rm db
expect_err 1 "no pair" "gone on a" -- fa pair status db
expect_err 1 "no pair" "gone on b" -- fb pair status db
check "b keeps the volume at its last synced content" test "$(md5_of fb db)" = "$want"
expect 0 "b may write it now" -- fb volume write db "$T/blk" --offset 0

finish
