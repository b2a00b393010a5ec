#!/bin/bash
# Crash safety of the role changes: ferryd _exits at named steps of
# demote, promote and resync (FERRY_TEST_CRASH_AT, a test-only hook), is
# restarted, `pair status` explains the state, and repeating the same
# command finishes the transition with nothing lost.
. "$(dirname "$0")/lib.sh"

expect 0 "site b starts" -- site_start b
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"
M=$((1024 * 1024))
K=4096

expect 0 "create db" -- fa volume create db --size 32M --object-size 1M
rand_write fa db 0 $((1 * M))
expect 0 "pair create" -- fa pair create db --peer "$B" --period 3600
expect 0 "initial sync" -- fa pair sync db --wait

# crash_restart SITE STEP CMD...: SITE's ferryd dies at STEP while CMD runs
# (CMD fails), and comes back on its port without the hook.
crash_restart() {
	local site=$1 step=$2 port
	shift 2
	port=PORT_$site
	site_stop "$site"
	FERRY_TEST_CRASH_AT=$step site_start "$site" "${!port}" || { fail "restart $site"; return 1; }
	expect 1 "$step: the command fails as $site dies" -- "$@"
	check "$step: $site died" wait_for 20 lock_free "$T/$site"
	grep -q "FERRY_TEST_CRASH_AT=$step" "$T/$site/ferryd.log" || fail "$step: not reached"
	expect 0 "$step: $site restarts" -- site_start "$site" "${!port}"
}

# ---- demote, A -> B and back, crashing A (then B) at each step -------------------
for step in demote-intent demote-synced demote-told demote-done; do
	rand_write fa db $((RANDOM % 32 * M)) 8192
	want=$(md5_of fa db)
	crash_restart a "$step" fa pair demote db
	st=$(state_of fa db)
	check "$step: status explains ($st)" test "$st" = demoting -o "$st" = idle
	if [ "$(fa pair status db --json | json role)" = primary ]; then
		expect_err 1 "read-only" "$step: still refusing writes" -- \
			fa volume write db "$T/chunk" --offset 0
	fi
	expect 0 "$step: demote again" -- fa pair demote db
	expect 0 "$step: promote b" -- fb pair promote db
	check "$step: b holds a's last write" test "$(md5_of fb db)" = "$want"
	rand_write fb db $((RANDOM % 32 * M)) 4096
	want=$(md5_of fb db)
	expect 0 "$step: b -> a" -- fb pair sync db --wait
	check "$step: a follows" test "$(md5_of fa db)" = "$want"
	expect 0 "$step: demote b" -- fb pair demote db
	expect 0 "$step: promote a" -- fa pair promote db
	check "$step: roles back, a holds b's data" test "$(md5_of fa db)" = "$want"
done

# ---- demote cut after B heard it, and B promoted before the repeat -------------
rand_write fa db $((7 * M)) 8192
want=$(md5_of fa db)
crash_restart a demote-told fa pair demote db
expect 0 "b promotes while a's demote is unfinished" -- fb pair promote db
check "b holds a's last write" test "$(md5_of fb db)" = "$want"
expect 0 "a's repeated demote finishes" -- fa pair demote db
check "no split brain on a" test "$(state_of fa db)" != split-brain
check "no split brain on b" test "$(state_of fb db)" != split-brain
rand_write fb db $((8 * M)) 4096
want=$(md5_of fb db)
expect 0 "b -> a" -- fb pair sync db --wait
check "a follows b" test "$(md5_of fa db)" = "$want"
expect 0 "demote b" -- fb pair demote db
expect 0 "promote a" -- fa pair promote db

# ---- promote, crashing B at each step ----------------------------------------------
for step in promote-begin promote-rolledback promote-done; do
	rand_write fa db $((RANDOM % 32 * M)) 8192
	want=$(md5_of fa db)
	expect 0 "$step: demote a" -- fa pair demote db
	crash_restart b "$step" fb pair promote db
	st=$(fb pair status db --json | json role)
	check "$step: b's role is $st" test "$st" = secondary -o "$st" = primary
	expect 0 "$step: promote again" -- fb pair promote db
	check "$step: b holds a's last write" test "$(md5_of fb db)" = "$want"
	expect 0 "$step: b -> a" -- fb pair sync db --wait
	expect 0 "$step: demote b" -- fb pair demote db
	expect 0 "$step: promote a" -- fa pair promote db
	expect 0 "$step: a -> b" -- fa pair sync db --wait
	check_synced db
done

# ---- forced failover, then resync crashing either side ------------------------------
rand_write fa db 0 8192
expect 0 "a syncs" -- fa pair sync db --wait
expect 0 "kill -9 a" -- site_kill a
crash_restart b promote-rolledback fb pair promote db --force
expect 0 "promote --force again" -- fb pair promote db --force
rand_write fb db $((3 * M)) 8192
expect 0 "a returns" -- site_start a "$PORT_a"
rand_write fa db $((4 * M)) 8192
a_div=$(md5_of fa db)
fa pair sync db >/dev/null 2>&1
check "split brain seen on a" wait_for 20 sh -c "'$FERRY_BIN' --pool '$T/a' pair status db | grep -q 'state split-brain'"
check "split brain seen on b" test "$(state_of fb db)" = split-brain
expect 0 "demote a" -- fa pair demote db
crash_restart a resync-snap fb pair resync db
check "a still waits for the resync" test "$(state_of fa db)" = split-brain
crash_restart b resync-listed fb pair resync db
check "b still split-brain after its crash" test "$(state_of fb db)" = split-brain
want=$(md5_of fb db)
expect 0 "resync again" -- fb pair resync db
check "a equals b" test "$(md5_of fa db)" = "$want"
n=$(fa snap list db | grep -c 'split-brain-')
check "one split-brain snapshot on a ($n)" test "$n" = 1
sb=$(fa snap list db | grep -o 'split-brain-[0-9]*' | head -n 1)
check "it holds a's divergence" test "$(md5_of fa "db@$sb")" = "$a_div"
rand_write fb db $((5 * M)) 4096
expect 0 "b -> a continues" -- fb pair sync db --wait
check_synced db db 2>/dev/null
check "a follows b" test "$(md5_of fa db)" = "$(md5_of fb db)"
if [ -n "${FERRY_A_NOLISTEN:-}" ]; then
	check "a never listened" test -z "$(grep 'accepting peers' "$T/a/ferryd.log")"
	check "b replicated over connections a offered" grep -q "connection offered by" "$T/b/ferryd.log"
fi

finish
