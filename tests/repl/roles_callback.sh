#!/bin/bash
# The brief's user day, where site A runs ferryd WITHOUT --listen: after a
# role change the new primary B cannot dial A, so A (secondary, no
# listener) connects to B and offers connections that B uses as if it had
# dialled (docs/PROTOCOL.md 11, "Connection direction").  Covers: planned
# switchover A -> B and back, forced failover, split brain, failback by
# resync with only the divergent blocks moving, a restart of A while it
# calls in, and the operator's --peer (here a proxy) surviving all of it.
. "$(dirname "$0")/lib.sh"

site_a_start() { # no --listen: nothing listens on site A
	"$FERRYD" --pool "$T/a" --log-level debug --secret-file "$T/secret"
}

expect 0 "site b starts (listening)" -- site_start b
proxy_start "$PORT_b" || { fail "proxy"; finish; }
B="127.0.0.1:$PROXY_PORT"    # the operator's address of B: a proxy
expect 0 "site a starts without --listen" -- site_a_start
M=$((1024 * 1024))
K=4096

expect 0 "create db" -- fa volume create db --size 64M --object-size 1M
rand_write fa db 0 $((2 * M))
expect 0 "pair create" -- fa pair create db --peer "$B" --period 3600
expect 0 "initial sync" -- fa pair sync db --wait
check_synced db
check "a dials b" test "$(fa pair status db --json | json connection)" = dials-peer

# ---- planned switchover A -> B: B must reach A, which has no listener ------
rand_write fa db $((5 * M + 8192)) 12288
want=$(md5_of fa db)
expect 0 "demote a" -- fa pair demote db
check "a calls its primary now" test "$(fa pair status db --json | json connection)" = calls-primary
expect 0 "promote b" -- fb pair promote db
check "promote says a calls in" grep -q "calls in" <<<"$OUT"
check "b is primary" test "$(fb pair status db --json | json role)" = primary
check "b's peer calls in" test "$(fb pair status db --json | json connection)" = peer-calls-in
check "b holds a's last write" test "$(md5_of fb db)" = "$want"
rand_write fb db $((7 * M)) $K
want=$(md5_of fb db)
expect 0 "b -> a cycle over a's connection" -- timeout 60 "$FERRY_BIN" --pool "$T/b" pair sync db --wait
check "a equals b" test "$(md5_of fa db)" = "$want"
expect 0 "status b" -- fb pair status db --json
check "no full copy" test "$(json last_cycle.wire_bytes <<<"$OUT")" -lt 100000
expect 0 "verify b -> a" -- timeout 60 "$FERRY_BIN" --pool "$T/b" pair verify db

# a restart of A while it calls in: B finds the new connections
expect 0 "kill -9 a" -- site_kill a
expect 0 "a restarts" -- site_a_start
rand_write fb db $((8 * M)) $K
want=$(md5_of fb db)
expect 0 "b -> a after a's restart" -- timeout 60 "$FERRY_BIN" --pool "$T/b" pair sync db --wait
check "a follows b" test "$(md5_of fa db)" = "$want"

# A restarted WITH a listener while it is the secondary: it tells B, which
# dials it from then on; restarted without again: B uses its offers again
expect 0 "stop a" -- site_stop a
expect 0 "a restarts with --listen" -- site_start a
rand_write fb db $((8 * M + K)) $K
want=$(md5_of fb db)
check "b learns a's listener" wait_for 20 grep -q "the secondary listens on 127.0.0.1:$PORT_a" "$T/b/ferryd.log"
expect 0 "b -> a, dialled" -- timeout 60 "$FERRY_BIN" --pool "$T/b" pair sync db --wait
check "a follows b" test "$(md5_of fa db)" = "$want"
check "b dials a now" test "$(fb pair status db --json | json connection)" = dials-peer
expect 0 "stop a again" -- site_stop a
nolisten_from=$(($(wc -l <"$T/a/ferryd.log") + 1))
expect 0 "a restarts without --listen" -- site_a_start
rand_write fb db $((8 * M + 2 * K)) $K
want=$(md5_of fb db)
check "b sees a has no listener any more" \
	wait_for 20 grep -q "the secondary has no listener any more" "$T/b/ferryd.log"
expect 0 "b -> a, over a's offers again" -- timeout 60 "$FERRY_BIN" --pool "$T/b" pair sync db --wait
check "a follows b" test "$(md5_of fa db)" = "$want"
check "b's peer calls in again" test "$(fb pair status db --json | json connection)" = peer-calls-in

# ---- and back B -> A: A dials B again, at the operator's address ------------
rand_write fb db $((9 * M)) 8192
want=$(md5_of fb db)
expect 0 "demote b" -- timeout 60 "$FERRY_BIN" --pool "$T/b" pair demote db
expect 0 "promote a" -- fa pair promote db
check "a holds b's last write" test "$(md5_of fa db)" = "$want"
check "a's peer is still the operator's --peer (the proxy)" \
	test "$(fa pair status db --json | json peer)" = "$B"
up0=$(proxy_up_bytes 2>/dev/null || echo 0)
rand_write fa db $((11 * M)) $K
want=$(md5_of fa db)
expect 0 "a -> b cycle" -- fa pair sync db --wait
check "b equals a" test "$(md5_of fb db)" = "$want"
check "the cycle went through the proxy" test "$(proxy_up_bytes 2>/dev/null || echo 0)" -gt "$up0"
check_synced db

# ---- forced failover: A is lost, B takes over ---------------------------------
rand_write fa db $((20 * M)) 8192
expect 0 "a syncs" -- fa pair sync db --wait
common=$(last_synced fa db)
expect 0 "kill -9 a" -- site_kill a
expect 0 "promote --force b" -- fb pair promote db --force
rand_write fb db $((30 * M)) $((3 * K))
expect 0 "a returns (still without --listen)" -- site_a_start
rand_write fa db $((40 * M)) $((2 * K))
wait_for 20 sh -c "[ \"\$('$FERRY_BIN' --pool '$T/a' pair status db --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = split-brain ]"
check "a shows split-brain" test "$(state_of fa db)" = split-brain
check "b shows split-brain" test "$(state_of fb db)" = split-brain
check "b names the common snapshot" test "$(fb pair status db --json | json common_snapshot)" = "$common"
a_div=$(md5_of fa db)

# ---- failback: demote A, resync on B (B cannot dial A: A calls in) ----------
expect 0 "demote a (split brain)" -- fa pair demote db
want=$(md5_of fb db)
expect 0 "resync b" -- timeout 120 "$FERRY_BIN" --pool "$T/b" pair resync db
expect 0 "status b" -- fb pair status db --json
wire=$(json last_cycle.wire_bytes <<<"$OUT")
echo "resync over a's connection: $wire bytes on the wire (divergence: 5 blocks of 4 KiB; volume 64 MiB)"
check "resync moved only the divergent blocks ($wire bytes)" test "$wire" -lt 200000
check "a equals b after resync" test "$(md5_of fa db)" = "$want"
sb=$(fa snap list db | grep -o 'split-brain-[0-9]*' | head -n 1)
check "a kept its divergence in split-brain-<time>" test -n "$sb"
[ -n "$sb" ] && check "split-brain snapshot holds a's divergent data" \
	test "$(md5_of fa "db@$sb")" = "$a_div"
check "a not split-brain" test "$(state_of fa db)" = idle
rand_write fb db $((50 * M)) $K
want=$(md5_of fb db)
expect 0 "b -> a continues" -- timeout 60 "$FERRY_BIN" --pool "$T/b" pair sync db --wait
check "a follows b" test "$(md5_of fa db)" = "$want"
expect 0 "demote b" -- timeout 60 "$FERRY_BIN" --pool "$T/b" pair demote db
expect 0 "promote a" -- fa pair promote db
expect 0 "a -> b" -- fa pair sync db --wait
check_synced db
check "nothing listened on site a since" \
	test -z "$(tail -n +"$nolisten_from" "$T/a/ferryd.log" | grep 'accepting peers')"

# ---- heartbeat: a primary cut off from its peer sees it between cycles, and
# sees a promote that happened meanwhile within seconds, not at its next
# period (3600 s here)
peer_error_of() { fa pair status db --json | json peer_error; }
proxy cut
check "a's status shows the failed peer check within 25 s" \
	wait_for 25 sh -c "[ \"\$('$FERRY_BIN' --pool '$T/a' pair status db --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"peer_error\"])')\" != None ]"
echo "a's peer_error while cut off: $(peer_error_of)"
expect 0 "promote --force b while a is cut off" -- fb pair promote db --force
rand_write fa db $((60 * M)) $K   # a does not know yet
proxy pass
check "a finds the split brain by itself within 25 s" \
	wait_for 25 sh -c "[ \"\$('$FERRY_BIN' --pool '$T/a' pair status db --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = split-brain ]"
check "b shows it too" test "$(state_of fb db)" = split-brain

finish
