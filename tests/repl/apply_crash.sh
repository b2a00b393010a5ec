#!/bin/bash
# Crash points of the secondary's apply pipeline (src/repl/recv.c): the
# checkpoint thread makes the applied data durable and then writes the
# checkpoint while the receiver goes on applying.  The secondary _exits
# (FERRY_TEST_CRASH_AT, test-only) right after a checkpoint's flush
# (apply-flushed: the checkpoint not yet written) and right after the
# checkpoint is written (apply-ckpt-saved), and is killed -9 while the
# thread is busy; each time the last synced snapshot is intact, the cycle
# resumes (from the checkpoint on disk) after a restart, and the
# secondary ends with the primary's md5.
export FERRY_TEST_TAG=${FERRY_TEST_TAG:-apply-crash}
. "$(dirname "$0")/lib.sh"

M=$((1024 * 1024))
expect 0 "site b starts" -- site_start b
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"
expect 0 "create big" -- fa volume create big --size 256M --object-size 1M
rand_write fa big 0 $M
expect 0 "pair create (paced: the cycles last seconds)" -- fa pair create big --peer "$B" --period 3600 --bandwidth 40M
expect 0 "initial sync" -- fa pair sync big --wait
check_synced big

# crash_cycle STEP: 96 MiB of new data; b dies at STEP during the cycle.
crash_cycle() {
	local step=$1 prev mprev ok try at
	prev=$(last_synced fb big)
	mprev=$(md5_of fb "big@$prev")
	rand_write fa big $(( (RANDOM % 64) * M )) $((96 * M))
	site_stop b
	FERRY_TEST_CRASH_AT=$step site_start b "$PORT_b" || { fail "$step: restart b"; return 1; }
	expect 1 "$step: the cycle fails as b dies" -- fa pair sync big --wait
	check "$step: b died" wait_for 20 lock_free "$T/b"
	check "$step: b reached the crash point" grep -q "FERRY_TEST_CRASH_AT=$step" "$T/b/ferryd.log"
	expect 0 "$step: b restarts" -- site_start b "$PORT_b"
	check "$step: b's last synced survived" test "$(md5_of fb "big@$prev")" = "$mprev"
	check "$step: b still names it" test "$(last_synced fb big)" = "$prev"
	ok=1
	for try in 1 2 3; do
		if fa pair sync big --wait >/dev/null 2>&1; then ok=0; break; fi
	done
	check "$step: the cycle completes after the restart" test $ok = 0
	check "$step: b resumed from its checkpoint" grep -q "resuming cycle" "$T/b/ferryd.log"
	at=$(sed -n 's/.*resuming cycle [0-9]* at object \([0-9]*\).*/\1/p' "$T/b/ferryd.log" | tail -n 1)
	echo "$step: resumed at object ${at:-none}"
	if [ "$step" = apply-ckpt-saved ]; then
		# the first checkpoint of the thread covers at least one object
		check "$step: the saved checkpoint was used (object ${at:-none})" test "${at:-0}" -ge 1
	fi
	check_synced big
}

crash_cycle apply-flushed
crash_cycle apply-ckpt-saved

# ---- kill -9 while checkpoints are being written ------------------------------------------
prev=$(last_synced fb big)
mprev=$(md5_of fb "big@$prev")
rand_write fa big 0 $((160 * M))
expect 0 "start a cycle" -- fa pair sync big
mid() { [ "$(fb pair status big --json | python3 -c 'import json,sys; c=json.load(sys.stdin)["cycle"]; print(1 if c and c["done_bytes"] > 40*2**20 else 0)')" = 1 ]; }
check "the cycle is under way" wait_for 60 mid
expect 0 "kill -9 secondary" -- site_kill b
expect 0 "secondary restarts" -- site_start b "$PORT_b"
check "b's last synced survived kill -9" test "$(md5_of fb "big@$prev")" = "$mprev"
ok=1
for try in 1 2 3; do
	if fa pair sync big --wait >/dev/null 2>&1; then ok=0; break; fi
done
check "the cycle completes after kill -9" test $ok = 0
check_synced big
expect 0 "verify" -- fa pair verify big
finish
