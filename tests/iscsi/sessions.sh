#!/bin/bash
# `ferry export sessions [NAME] [--json]` with real initiators: qemu-io
# (its session stays open while it reads commands from a fifo), iscsi-inq
# and iscsi-ls (short sessions that must disappear from the list); the
# warnings of `export rm` naming logged-in initiators (it still proceeds).
. "$(dirname "$0")/../cli/lib.sh"
for tool in iscsi-ls iscsi-inq qemu-io python3; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done
PORT=$(free_port)
"$FERRYD" --pool "$POOL" --log-level debug --iscsi 127.0.0.1:$PORT ||
	{ echo "ferryd --iscsi did not start" >&2; exit 1; }
URL=iscsi://127.0.0.1:$PORT
IQN=iqn.2026-11.io.ferry
QEMU_INI=iqn.2008-11.org.linux-kvm

# hold N URL: qemu-io logged in to URL until `release N` (commands come
# from a fifo; reading 4 KiB first proves the session is up).
declare -A HOLD_PID
hold() {
	rm -f "$T/q$1.in"
	mkfifo "$T/q$1.in"
	timeout 300 qemu-io -f raw "$2" <"$T/q$1.in" >"$T/q$1.out" 2>&1 &
	HOLD_PID[$1]=$!
	eval "exec {fd_$1}>\"$T/q$1.in\""
	local fd="fd_$1"
	echo "read 0 4k" >&"${!fd}"
	wait_for 60 grep -q "read 4096/4096" "$T/q$1.out"
}
release() {
	eval "exec {fd_$1}>&-"
	wait "${HOLD_PID[$1]}"
}
# json_len: number of elements of the JSON array on stdin
json_len() { python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
nsessions() { ferry export sessions "$@" --json | json_len; }

expect 0 "create db" -- ferry volume create db --size 16M
expect 0 "create logs" -- ferry volume create logs --size 16M
expect 0 "create other" -- ferry volume create other --size 16M
expect 0 "export db" -- ferry export add db
expect 0 "export logs as LUN 1 of db's target" -- ferry export add logs --iqn $IQN:db --lun 1
expect 0 "export other" -- ferry export add other

expect 0 "sessions when nobody is logged in" -- ferry export sessions
check "a header and no rows" test "$(wc -l <<<"$OUT")" = 1
check "header names the columns" grep -q "^INITIATOR .*ADDRESS .*TARGET .*LUN .*EXPORT .*LOGIN" <<<"$OUT"
expect 0 "sessions --json, nobody" -- ferry export sessions --json
check "empty JSON array" test "$OUT" = "[]"
expect_err 1 "nosuch is not exported" "sessions of an unknown export refused" -- \
	ferry export sessions nosuch

# ---- a long session (qemu-io) --------------------------------------------------
t0=$(date +%s)
hold 1 "$URL/$IQN:db/0" || fail "qemu-io did not log in: $(cat "$T/q1.out")"
t1=$(date +%s)
expect 0 "sessions --json with qemu-io logged in" -- ferry export sessions --json
check "qemu-io's session on both LUNs of db's target" python3 -c '
import json, sys
v = json.loads(sys.argv[1])
t0, t1 = int(sys.argv[2]), int(sys.argv[3])
assert len(v) == 2, v
for s in v:
    assert s["initiator"] == sys.argv[4], s
    assert s["target"] == sys.argv[5], s
    assert s["address"].startswith("127.0.0.1:"), s
    assert len(s["isid"]) == 12, s
    assert t0 - 1 <= s["login_time"] <= t1 + 1, (s, t0, t1)
assert sorted((s["lun"], s["volume"], s["snapshot"]) for s in v) == [(0, "db", None), (1, "logs", None)], v
assert v[0]["address"] == v[1]["address"], v
' "$OUT" $t0 $t1 $QEMU_INI $IQN:db
expect 0 "sessions db" -- ferry export sessions db
check "text row of db" grep -Eq "^$QEMU_INI +127\.0\.0\.1:[0-9]+ +$IQN:db +0 db +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$" <<<"$OUT"
check "NAME filters to db" test "$(wc -l <<<"$OUT")" = 2
check "other has none" test "$(nsessions other)" = 0

# ---- short sessions come and go; discovery sessions are not exports' -----------
expect 0 "iscsi-inq other" -- timeout 30 iscsi-inq $URL/$IQN:other/0
expect 0 "iscsi-ls" -- timeout 30 iscsi-ls -s $URL
wait_for 30 sh -c "[ \$('$FERRY_BIN' --pool '$POOL' export sessions other --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') = 0 ]" ||
	fail "iscsi-inq's session is still listed after it logged out"
check "after the short sessions: qemu-io's two rows only" test "$(nsessions)" = 2

# two sessions on one export
hold 2 "$URL/$IQN:other/0" || fail "second qemu-io did not log in"
check "other has one" test "$(nsessions other)" = 1
check "three rows in all" test "$(nsessions)" = 3

# ---- export rm warns, and goes on -------------------------------------------------
expect 0 "export rm logs (db's target keeps LUN 0)" -- ferry export rm logs
check "warns that the session loses LUN 1" grep -Eq "^ferry: warning: 1 session logged in to $IQN:db loses LUN 1: $QEMU_INI \(127\.0\.0\.1:[0-9]+\)$" <<<"$ERR"
check "logs is no longer exported" sh -c "! '$FERRY_BIN' --pool '$POOL' export list | grep -q '^logs '"
check "db's session stays, on LUN 0" test "$(nsessions db)" = 1
echo "read 4k 4k" >&"$fd_1"
wait_for 30 sh -c "[ \$(grep -c 'read 4096/4096' '$T/q1.out') -ge 2 ]" || fail "qemu-io on db cannot read after LUN 1 went"
expect 0 "export rm other (its target's last LUN)" -- ferry export rm other
check "warns that the session is closed, naming the initiator" grep -Eq "^ferry: warning: closing 1 session logged in to $IQN:other: $QEMU_INI \(127\.0\.0\.1:[0-9]+\)$" <<<"$ERR"
check "other's session is gone" test "$(nsessions)" = 1
release 2
release 1
wait_for 30 sh -c "[ \$('$FERRY_BIN' --pool '$POOL' export sessions --json) = '[]' ]" ||
	fail "sessions left after every initiator logged out"
expect 0 "export rm db with nobody logged in" -- ferry export rm db
check "no warning without sessions" test -z "$ERR"
finish
