#!/bin/bash
# Role changes with two real ferryd on loopback (issue 5, section 1):
# planned switchover and back (md5 equal, nothing lost, no full copy);
# promote without --force refused before demote; forced failover and the
# split brain both sides show when the old primary returns; failback by
# resync moving only the divergent blocks, the old primary's divergence
# kept in split-brain-<time>.
. "$(dirname "$0")/lib.sh"

expect 0 "site b starts" -- site_start b
expect 0 "site a starts" -- site_start a
A="127.0.0.1:$PORT_a"
B="127.0.0.1:$PORT_b"
M=$((1024 * 1024))
K=4096

expect 0 "create db" -- fa volume create db --size 64M --object-size 1M
rand_write fa db 0 $((2 * M))
expect 0 "pair create" -- fa pair create db --peer "$B" --period 3600
expect 0 "initial sync" -- fa pair sync db --wait
check_synced db

# ---- promote without --force is refused while the primary has not demoted --
expect_err 1 "has not demoted" "promote refused before demote" -- fb pair promote db
check "b still secondary" test "$(fb pair status db --json | json role)" = secondary
expect_err 1 "run resync on the new primary" "resync refused on a secondary" -- fb pair resync db

# ---- planned switchover A -> B ---------------------------------------------
rand_write fa db $((5 * M + 8192)) 12288       # A's last write, never cycled
want=$(md5_of fa db)
expect 0 "demote a" -- fa pair demote db
check "demote says so" grep -q "demoted" <<<"$OUT"
head -c $K /dev/urandom >"$T/blk"
expect_err 1 "read-only" "demoted a refuses writes" -- fa volume write db "$T/blk" --offset 0
check "a is secondary" test "$(fa pair status db --json | json role)" = secondary
check "b knows a demoted" test "$(fb pair status db --json | json peer_demoted)" = True
expect 0 "promote b" -- fb pair promote db
check "b is primary" test "$(fb pair status db --json | json role)" = primary
check "b cycles with a's period" test "$(fb pair status db --json | json period_s)" = 3600
check "b holds a's last write" test "$(md5_of fb db)" = "$want"
expect 0 "b writable" -- fb volume write db "$T/blk" --offset $((7 * M))
want=$(md5_of fb db)
expect 0 "b -> a cycle" -- fb pair sync db --wait
expect 0 "status b" -- fb pair status db --json
echo "first B -> A cycle after switchover: $(json last_cycle.wire_bytes <<<"$OUT") bytes on the wire"
check "b -> a cycle carried one block, no full copy" \
	test "$(json last_cycle.wire_bytes <<<"$OUT")" -lt 100000
check "a equals b" test "$(md5_of fa db)" = "$want"
check "epoch bumped" test "$(json epoch <<<"$OUT")" = 1
expect 0 "verify b -> a" -- fb pair verify db

# ---- and back B -> A ----------------------------------------------------------
rand_write fb db $((9 * M)) 8192
want=$(md5_of fb db)
expect 0 "demote b" -- fb pair demote db
expect 0 "promote a" -- fa pair promote db
check "a holds b's last write" test "$(md5_of fa db)" = "$want"
rand_write fa db $((11 * M)) 4096
want=$(md5_of fa db)
expect 0 "a -> b cycle" -- fa pair sync db --wait
check "b equals a" test "$(md5_of fb db)" = "$want"
check_synced db
expect 0 "repeat promote is harmless" -- fa pair promote db
expect 0 "repeat demote on the secondary is harmless" -- fb pair demote db

# ---- forced failover: A is lost -----------------------------------------------
rand_write fa db $((20 * M)) 8192
expect 0 "a syncs" -- fa pair sync db --wait
common=$(last_synced fa db)
expect 0 "kill -9 a" -- site_kill a
expect 0 "promote --force b" -- fb pair promote db --force
check "b at the common snapshot" test "$(md5_of fb db)" = "$(md5_of fb "db@$common")"
check "forced promote names the common snapshot" \
	test "$(fb pair status db --json | json common_snapshot)" = "$common"
# B writes 3 blocks while A is away; A (returning) wrote 2 others before
# it went down... which we simulate by writing on A once it is back.
rand_write fb db $((30 * M)) $((3 * K))
expect 0 "a returns" -- site_start a "$PORT_a"
rand_write fa db $((40 * M)) $((2 * K))    # A accepted writes: divergence
rand_write fa db $((30 * M + K)) $K        # and one block B wrote too
# no cycle asked: the restarted primary probes its peer at start
wait_for 20 sh -c "[ \"\$('$FERRY_BIN' --pool '$T/a' pair status db --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = split-brain ]"
check "a shows split-brain" test "$(state_of fa db)" = split-brain
check "b shows split-brain" test "$(state_of fb db)" = split-brain
check "a names the common snapshot" test "$(fa pair status db --json | json common_snapshot)" = "$common"
check "b names the common snapshot" test "$(fb pair status db --json | json common_snapshot)" = "$common"
expect_err 1 "split brain" "sync refused during the split brain (no hang)" -- timeout 20 "$FERRY_BIN" --pool "$T/a" pair sync db --wait
expect_err 1 "split brain" "on b too" -- timeout 20 "$FERRY_BIN" --pool "$T/b" pair sync db --wait
a_div=$(md5_of fa db)
expect 0 "a still writable (nothing destroyed)" -- fa volume write db "$T/blk" --offset $((41 * M))
a_div=$(md5_of fa db)
expect_err 1 "demote" "resync refused before a demotes" -- fb pair resync db

# ---- failback: demote A, resync B -> A --------------------------------------
expect 0 "demote a (split brain)" -- fa pair demote db
check "demote mentions resync" grep -q "resync" <<<"$OUT"
want=$(md5_of fb db)
expect 0 "resync b" -- fb pair resync db
expect 0 "status b" -- fb pair status db --json
check "b out of split brain" test "$(json state <<<"$OUT")" != split-brain
check "b split_brain cleared" test "$(json split_brain <<<"$OUT")" = False
wire=$(json last_cycle.wire_bytes <<<"$OUT")
echo "resync: $wire bytes on the wire, $(json last_cycle.data_bytes <<<"$OUT") data bytes, $(json last_cycle.extents <<<"$OUT") extents (divergence: 7 blocks of 4 KiB; volume 64 MiB)"
# divergent: 3 blocks of B + 3 blocks of A (one shared) + A's 1 block at 41M
check "resync moved only the divergent blocks ($wire bytes)" test "$wire" -lt 200000
check "a's divergence travelled too (as zero records: b never wrote there)" \
	test "$(json last_cycle.zero_bytes <<<"$OUT")" -ge $((3 * K))
check "a equals b after resync" test "$(md5_of fa db)" = "$want"
check_synced db db 2>/dev/null || true
sb=$(fa snap list db | grep -o 'split-brain-[0-9]*' | head -n 1)
check "a kept its divergence in split-brain-<time>" test -n "$sb"
[ -n "$sb" ] && check "split-brain snapshot holds a's divergent data" \
	test "$(md5_of fa "db@$sb")" = "$a_div"
check "a not split-brain" test "$(state_of fa db)" = idle
rand_write fb db $((50 * M)) 4096
want=$(md5_of fb db)
expect 0 "b -> a continues" -- fb pair sync db --wait
check "a follows b" test "$(md5_of fa db)" = "$want"
# a planned switchover brings the roles back
expect 0 "demote b" -- fb pair demote db
expect 0 "promote a" -- fa pair promote db
check "a primary again" test "$(fa pair status db --json | json role)" = primary
check "a holds b's data" test "$(md5_of fa db)" = "$want"
expect 0 "a -> b" -- fa pair sync db --wait
check_synced db

finish
