#!/bin/bash
# Faults between two real ferryd: wrong secret, garbage, wrong protocol
# version and a silent client on the replication port; a link cut mid-cycle
# (resume from the checkpoint), a stalled link (deadline, error in status,
# retry), kill -9 of the primary and of the secondary mid-cycle (the
# secondary's last synced snapshot stays intact; the cycle completes after
# a restart), disk full on the secondary (LD_PRELOAD shim; skipped in ASan
# builds).  Every scenario ends with md5(primary@S) == md5(secondary@S).
. "$(dirname "$0")/lib.sh"

M=$((1024 * 1024))
expect 0 "site b starts" -- site_start b
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"

# ---- who does not belong gets nothing ----------------------------------------------
printf 'a-different-secret\n' >"$T/secret2"
chmod 600 "$T/secret2"
expect 0 "site c (other secret)" -- site_start c 0 "$T/secret2"
expect 0 "x on c" -- "$FERRY_BIN" --pool "$T/c" volume create x --size 4M
expect_err 1 "secret" "wrong secret refused (client side)" -- \
	"$FERRY_BIN" --pool "$T/c" pair create x --peer "$B"
check "wrong secret logged on the server" grep -q "authentication failed.*wrong secret" "$T/b/ferryd.log"
expect_err 1 "no volume|not found|no such" "no volume made for a stranger" -- fb volume info x
expect 0 "garbage probe" -- python3 "$HERE/wire_probe.py" "$PORT_b" garbage
check "garbage: closed without an answer" test "$OUT" = closed
check "garbage logged" grep -q "malformed frame header" "$T/b/ferryd.log"
expect 0 "version probe" -- python3 "$HERE/wire_probe.py" "$PORT_b" version
check "version mismatch answered clearly ($OUT)" grep -q "^ERROR 93 protocol version mismatch" <<<"$OUT"
check "version mismatch logged" grep -q "speaks protocol versions 2..2" "$T/b/ferryd.log"
expect 0 "silent client" -- python3 "$HERE/wire_probe.py" "$PORT_b" slow
check "silent client dropped at the deadline ($OUT)" python3 -c "import sys; t=float(sys.argv[1].split()[2]); assert 2.0 <= t < 10" "$OUT"

# ---- link cut mid-cycle: resume from the checkpoint ----------------------------------
expect 0 "proxy" -- proxy_start "$PORT_b"
P="127.0.0.1:$PROXY_PORT"
expect 0 "big" -- fa volume create big --size 256M --object-size 1M
head -c $((128 * M)) /dev/urandom >"$T/data"
expect 0 "fill 128 MiB" -- fa volume write big "$T/data" --offset 0
proxy cut-after 60000000
expect 0 "pair through the proxy" -- fa pair create big --peer "$P" --period 3600 --bandwidth 64M
expect 1 "the cut fails the cycle" -- fa pair sync big --wait
check "status: error" test "$(state_of fa big)" = error
check "status: error message" test "$(fa pair status big --json | json error)" != null
expect 0 "retry completes" -- fa pair sync big --wait
check_synced big
# Checkpoints come at least every 16 MiB applied: of the ~57 MiB that
# crossed before the cut, at least 16 objects of 1 MiB are durable.
at=$(sed -n 's/.*resuming cycle 1 at object \([0-9]*\).*/\1/p' "$T/b/ferryd.log" | tail -n 1)
check "the secondary resumed from its checkpoint (object ${at:-none})" test "${at:-0}" -ge 16
up=$(proxy_up_bytes)
check "resume did not resend the durable part ($up bytes)" test "$up" -lt $(( (128 + 60 - 12) * M ))
check "error cleared" test "$(fa pair status big --json | json error)" = null

# ---- a stalled link: deadline, error, retry -------------------------------------------
rand_write fa big 0 $((8 * M))
proxy stall
t0=$SECONDS
expect 1 "stalled cycle fails" -- fa pair sync big --wait
check "within the deadline, not hung ($((SECONDS - t0)) s)" test $((SECONDS - t0)) -lt 30
check "status says why" grep -qiE "deadline|closed|timed out" <<<"$(fa pair status big --json | json error)"
proxy pass
expect 0 "after the stall" -- fa pair sync big --wait
check_synced big

# ---- kill -9 of the primary mid-cycle --------------------------------------------------
prev=$(last_synced fb big)
mprev=$(md5_of fb "big@$prev")
head -c $((96 * M)) /dev/urandom >"$T/data"
expect 0 "new 96 MiB" -- fa volume write big "$T/data" --offset $((64 * M))
proxy throttle 25000000
expect 0 "start a cycle" -- fa pair sync big
mid() { [ "$(fb pair status big --json | python3 -c 'import json,sys; c=json.load(sys.stdin)["cycle"]; print(1 if c and c["done_bytes"] > 10*2**20 else 0)')" = 1 ]; }
check "the cycle is under way" wait_for 30 mid
expect 0 "kill -9 primary" -- site_kill a
check "secondary's last synced untouched" test "$(md5_of fb "big@$prev")" = "$mprev"
check "secondary still names it" test "$(last_synced fb big)" = "$prev"
proxy pass
expect 0 "primary restarts" -- site_start a
expect 0 "cycle completes after the restart" -- fa pair sync big --wait
check_synced big

# ---- kill -9 of the secondary mid-cycle -------------------------------------------------
prev=$(last_synced fb big)
mprev=$(md5_of fb "big@$prev")
head -c $((96 * M)) /dev/urandom >"$T/data"
expect 0 "another 96 MiB" -- fa volume write big "$T/data" --offset 0
proxy throttle 25000000
expect 0 "start a cycle" -- fa pair sync big
check "the cycle is under way" wait_for 30 mid
expect 0 "kill -9 secondary" -- site_kill b
expect 0 "secondary restarts on its port" -- site_start b "$PORT_b"
check "secondary's last synced survived the crash" test "$(md5_of fb "big@$prev")" = "$mprev"
proxy pass
ok=1
for try in 1 2 3; do
	if fa pair sync big --wait >/dev/null 2>&1; then ok=0; break; fi
done
check "cycle completes after the secondary's restart" test $ok = 0
check_synced big
expect 0 "verify" -- fa pair verify big

# ---- disk full on the secondary ----------------------------------------------------------
# An LD_PRELOAD shim makes writes under the secondary's volumes fail with
# ENOSPC while $T/full exists.
if nm "$FERRYD" 2>/dev/null | grep -q __asan_init; then
	echo "faults.sh: disk-full scenario skipped (ASan build: its interceptors shadow the shim)"
elif [ -n "${FERRY_SITE_ARGS_b:-}" ]; then
	echo "faults.sh: disk-full scenario skipped (the secondary's volumes are not local files)"
else
	expect 0 "secondary stops" -- site_stop b
	export FERRY_TEST_ENOSPC_FLAG=$T/full FERRY_TEST_ENOSPC_DIR=$T/b/volumes
	export LD_PRELOAD=$FERRY_BUILD/tests/enospc_shim.so
	expect 0 "secondary restarts with the disk-full shim" -- site_start b "$PORT_b"
	unset LD_PRELOAD FERRY_TEST_ENOSPC_FLAG FERRY_TEST_ENOSPC_DIR
	prev=$(last_synced fb big)
	mprev=$(md5_of fb "big@$prev")
	head -c $((32 * M)) /dev/urandom >"$T/data"
	expect 0 "32 MiB more" -- fa volume write big "$T/data" --offset $((200 * M))
	touch "$T/full"
	expect 1 "disk full fails the cycle" -- fa pair sync big --wait
	err=$(fa pair status big --json | json error)
	check "primary's status names the cause ($err)" grep -q "No space left" <<<"$err"
	check "secondary's last synced intact while full" test "$(md5_of fb "big@$prev")" = "$mprev"
	check "secondary still names it" test "$(last_synced fb big)" = "$prev"
	rm -f "$T/full"
	ok=1
	for try in 1 2 3; do
		if fa pair sync big --wait >/dev/null 2>&1; then ok=0; break; fi
	done
	check "cycle completes once there is space" test $ok = 0
	check_synced big
fi

finish
