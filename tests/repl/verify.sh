#!/bin/bash
# pair verify on a live pair (issue 9): 10 verifies in a row of a 1 GiB
# volume at period 1 s while a real iSCSI client (qemu-io) writes all the
# time; cycles commit during the verifies and the snapshot under
# verification stays on both sites (no "No such file" any more); the
# --json object has exactly the promised keys; --snapshot; exit 0 match,
# 1 mismatch, 3 could not verify; progress with rate and ETA on a tty; no
# held snapshot is left behind.
. "$(dirname "$0")/lib.sh"
command -v qemu-io >/dev/null || { echo "SKIP: qemu-io missing"; exit 77; }
WRITER=
verify_cleanup() {
	[ -n "$WRITER" ] && kill "$WRITER" 2>/dev/null
	repl_cleanup
}
trap verify_cleanup EXIT

expect 0 "site b starts" -- site_start b
expect 0 "site a starts (iSCSI)" -- iscsi_site_start a
B="127.0.0.1:$PORT_b"
M=$((1024 * 1024))
expect 0 "create db 1G" -- fa volume create db --size 1G
# 384 MiB to hash on each side per verify (128 under the sanitizers, which
# make hashing several times slower).
DATA_M=384
[ "${FERRY_SANITIZED:-}" = 1 ] && DATA_M=128
head -c $((DATA_M * M)) /dev/urandom >"$T/data"
expect 0 "$DATA_M MiB of data" -- fa volume write db "$T/data" --offset 0
rm -f "$T/data"
expect 0 "export db" -- fa export add db
expect 0 "pair create" -- fa pair create db --peer "$B" --period 1h
expect 0 "initial sync" -- fa pair sync db --wait
expect 0 "period 1 s" -- fa pair set db --period 1

# A client that never stops writing, 256 KiB at a time, anywhere in 1 GiB.
(
	i=0
	while :; do
		off=$(( (RANDOM * 32768 + RANDOM) % 4096 * 256 * 1024 ))
		qemu_io "$ISCSI_a" db "write -P $((i % 250 + 1)) $off 256k" >/dev/null 2>&1
		i=$((i + 1))
	done
) &
WRITER=$!
check "cycles run under the writes" wait_json a db "d['last_synced']['cycle'] >= 4" 30

keys_ok() {
	python3 -c '
import json, sys
d = json.loads(sys.argv[1])
want = {"snapshot", "primary_md5", "secondary_md5", "objects_compared",
        "mismatching_objects", "match", "seconds"}
assert set(d) == want, set(d) ^ want
assert d["match"] is True and d["mismatching_objects"] == 0
assert d["primary_md5"] == d["secondary_md5"] and len(d["primary_md5"]) == 32
assert d["objects_compared"] >= 32 and d["seconds"] > 0
' "$1"
}
passed=0 overlapped=0
for i in 1 2 3 4 5 6 7 8 9 10; do
	c0=$(fa pair status db --json | json last_synced.cycle)
	if expect 0 "verify $i under writes at period 1" -- fa pair verify db --json; then
		keys_ok "$OUT" && passed=$((passed + 1)) || fail "verify $i json: $OUT"
	fi
	c1=$(fa pair status db --json | json last_synced.cycle)
	[ "$c1" -gt "$c0" ] && overlapped=$((overlapped + 1))
	echo "verify $i: $(json snapshot <<<"$OUT") in $(json seconds <<<"$OUT") s; cycles $c0 -> $c1"
done
check "10 verifies in a row matched ($passed)" test "$passed" = 10
check "cycles committed while verifying ($overlapped of 10)" test "$overlapped" -ge 8
check "no verify failed on a vanished snapshot" sh -c "! grep -q 'No such file' '$T/a/ferryd.log'"

# Progress on a terminal: bytes, rate, ETA.
if command -v script >/dev/null; then
	script -qec "'$FERRY_BIN' --pool '$T/a' pair verify db" "$T/tty.out" >/dev/null 2>&1
	check "tty progress shows bytes and rate" grep -aq "verify: .*/s" "$T/tty.out"
	check "tty progress shows an ETA" grep -aq "ETA" "$T/tty.out"
	check "and the result" grep -aq "^match" "$T/tty.out"
fi
kill "$WRITER" 2>/dev/null
wait "$WRITER" 2>/dev/null
WRITER=

# The held snapshots went: after the last verify only what the cycles need.
expect 0 "pause" -- fa pair pause db
nsnaps() { "$1" snap list db --json | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["name"].startswith("ferry.db.")))'; }
check "primary keeps at most the synced + in-flight snapshot ($(nsnaps fa))" test "$(nsnaps fa)" -le 2
check "secondary keeps one snapshot ($(nsnaps fb))" wait_for 10 sh -c "[ \$('$FERRY_BIN' --pool '$T/b' snap list db --json | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s[\"name\"].startswith(\"ferry.db.\")))') = 1 ]"

# --snapshot, and the exit statuses
# the snapshot the secondary holds: a cycle that the pause cut short after
# the secondary committed it is newer than the primary's last synced one
last=$(fb snap list db --json | python3 -c 'import json,sys; print([s["name"] for s in json.load(sys.stdin) if s["name"].startswith("ferry.db.")][-1])')
expect 0 "verify --snapshot the last synced" -- fa pair verify db --snapshot "$last"
check "it names it" grep -q "db@$last" <<<"$OUT"
expect_err 3 "could not verify.*no snapshot" "verify --snapshot of a snapshot that does not exist: 3" -- \
	fa pair verify db --snapshot ferry.db.999999
expect_err 3 "could not verify" "verify on the secondary: 3" -- fb pair verify db
# a mismatch: one block of the secondary's data files changed behind its back
for f in "$T"/b/volumes/db/layers/*/d0; do
	head -c 4096 /dev/urandom | dd of="$f" bs=4096 seek=0 conv=notrunc status=none
done
expect 1 "a mismatch exits 1" -- fa pair verify db --json
check "it says so" python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["match"] is False and d["mismatching_objects"] >= 1' "$OUT"
expect 1 "text says MISMATCH" -- fa pair verify db
check "MISMATCH line" grep -q "^MISMATCH" <<<"$OUT"
check "names the object" grep -q "mismatch: object 0" <<<"$OUT"
expect 0 "kill -9 b" -- site_kill b
expect_err 3 "could not verify" "peer down: 3" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair verify db

finish
