#!/bin/bash
# The iSCSI target inside the real ferryd, driven by real initiators
# (libiscsi's iscsi-ls / iscsi-inq, qemu-io / qemu-img over iscsi://):
# export add/rm/list, discovery, data written through iSCSI read back with
# `ferry volume export`, UNMAP / WRITE SAME becoming zero extents, CHAP
# one-way and mutual, read-only snapshot exports, persistence across a
# restart, concurrent sessions, a hostile client that must not disturb
# anyone else, and persistent reservations (a 4 KiB-block LUN, a new login).
. "$(dirname "$0")/../cli/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
for tool in iscsi-ls iscsi-inq qemu-io qemu-img python3; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done

PORT=$(free_port)
start() { "$FERRYD" --pool "$POOL" --log-level debug --iscsi 127.0.0.1:$PORT; }
start || { echo "ferryd --iscsi did not start" >&2; exit 1; }
URL=iscsi://127.0.0.1:$PORT
IQN=iqn.2026-11.io.ferry
MiB=$((1 << 20))
qio() { timeout 120 qemu-io -f raw "$@"; }

# ---- export add / list ------------------------------------------------------
expect 0 "create db" -- ferry volume create db --size 64M
expect 0 "create logs (4K blocks)" -- ferry volume create logs --size 16M --block-size 4096
expect 0 "export add db (defaults)" -- ferry export add db
check "add prints the target" grep -q "^$IQN:db LUN 0" <<<"$OUT"
expect 0 "export add logs as LUN 1 of db's target" -- ferry export add logs --iqn $IQN:db --lun 1
expect_err 1 "already exported" "re-export refused" -- ferry export add db
expect_err 1 "LUN 1 of .* is taken" "LUN taken refused" -- ferry export add db@nosnap --iqn $IQN:db --lun 1
expect_err 1 "no such volume" "unknown volume refused" -- ferry export add nosuch
expect_err 2 "" "bad --lun refused" -- ferry export add logs --lun x
expect 0 "export list --json" -- ferry export list --json
check "list --json" python3 -c '
import json,sys
v = json.loads(sys.argv[1])
assert len(v) == 2, v
d, l = v
assert d == {"volume":"db","snapshot":None,"iqn":"'$IQN':db","lun":0,"read_only":False,
             "chap":False,"mutual_chap":False,"served":True}, d
assert l["volume"] == "logs" and l["iqn"] == "'$IQN':db" and l["lun"] == 1, l
' "$OUT"
expect 0 "export list" -- ferry export list
check "list human" grep -q "^db .*$IQN:db .* 0 no  none" <<<"$OUT"

# ---- discovery and inquiry -------------------------------------------------------
expect 0 "iscsi-ls discovery" -- timeout 30 iscsi-ls -s $URL
check "discovery lists the target" grep -q "Target:$IQN:db Portal:127.0.0.1:$PORT,1" <<<"$OUT"
check "discovery lists two LUNs" test "$(grep -c '^Lun:' <<<"$OUT")" = 2
expect 0 "iscsi-inq LUN 1" -- timeout 30 iscsi-inq $URL/$IQN:db/1
check "inquiry answered" grep -q "Peripheral Device Type:DIRECT_ACCESS" <<<"$OUT"
expect 0 "iscsi-inq VPD 0x83" -- timeout 30 iscsi-inq -e 1 -c 0x83 $URL/$IQN:db/0
id1=$(grep -i "naa\|designator" <<<"$OUT" | head -3)
expect_err 1 "" "unknown target refused" -- sh -c "timeout 30 iscsi-inq $URL/$IQN:nope/0 >/dev/null 2>&1 || { echo refused >&2; exit 1; }"

# ---- data through iSCSI, read back through the CLI -----------------------------
head -c $((3 * MiB)) /dev/urandom >"$T/rand"
truncate -s 64M "$T/expect"
expect 0 "qemu-io patterns" -- qio -c "write -P 0xa5 0 1M" -c "write -P 0x5a 5M 2M" \
	-c "write -P 0x11 63M 1M" -c "read -P 0xa5 0 1M" -c "read -P 0x5a 5M 2M" $URL/$IQN:db/0
printf '\xa5%.0s' $(seq 1 1024) | head -c 1024 >/dev/null
python3 - "$T/expect" <<'PY'
import sys
MiB = 1 << 20
with open(sys.argv[1], "r+b") as f:
    for off, ln, b in ((0, 1, 0xa5), (5, 2, 0x5a), (63, 1, 0x11)):
        f.seek(off * MiB); f.write(bytes([b]) * (ln * MiB))
PY
expect 0 "qemu-img convert random data in (4 sessions' worth of writes)" -- \
	timeout 120 qemu-img convert -n -f raw -O raw -t none "$T/rand" $URL/$IQN:db/0
dd if="$T/rand" of="$T/expect" conv=notrunc status=none
expect 0 "volume export" -- ferry volume export db "$T/img"
check "the CLI reads what the initiator wrote" cmp "$T/img" "$T/expect"
expect 0 "qemu-img compare over iSCSI" -- timeout 120 qemu-img compare -f raw -F raw "$T/expect" $URL/$IQN:db/0

# ---- UNMAP and WRITE SAME become zero extents ----------------------------------------
expect 0 "snap base" -- ferry snap create db@base
expect 0 "qemu-io discard + write -z" -- qio -c "discard 0 1M" -c "write -z 5M 1M" \
	-c "write -z -u 6M 1M" -c "read -P 0 0 1M" -c "read -P 0 5M 2M" $URL/$IQN:db/0
expect 0 "snap zeroed" -- ferry snap create db@zeroed
expect 0 "snap diff --json" -- ferry snap diff db@base db@zeroed --json
check "discard and write -z are zero extents, not data" python3 -c '
import json,sys
d = json.loads(sys.argv[1])
MiB = 1 << 20
z = [(e["offset"], e["length"]) for e in d["extents"] if e["kind"] == "zero"]
assert d["data_bytes"] == 0, d
covered = sum(l for o, l in z)
assert covered == 3 * MiB, d
assert (0, MiB) in z and (5 * MiB, 2 * MiB) in z, z
' "$OUT"
python3 - "$T/expect" <<'PY'
import sys
MiB = 1 << 20
with open(sys.argv[1], "r+b") as f:
    f.seek(0); f.write(bytes(MiB)); f.seek(5 * MiB); f.write(bytes(2 * MiB))
PY
expect 0 "volume export after zeroing" -- ferry volume export db "$T/img"
check "zeroed ranges read back as zeros" cmp "$T/img" "$T/expect"

# ---- snapshots are read-only exports ----------------------------------------
expect 0 "export a snapshot" -- ferry export add db@base
check "snapshot target name" grep -q "^$IQN:db.base LUN 0" <<<"$OUT"
expect 0 "read the snapshot through iSCSI" -- timeout 120 qemu-img convert -f raw -O raw $URL/$IQN:db.base/0 "$T/snapimg"
expect 0 "volume export db@base" -- ferry volume export db@base "$T/snapexp"
check "the snapshot export serves the snapshot" cmp "$T/snapimg" "$T/snapexp"
check "writing a snapshot export fails" sh -c "! timeout 60 qemu-io -f raw -c 'write -P 1 0 4k' $URL/$IQN:db.base/0 2>&1 | grep -q '^wrote'"
expect_err 1 "exported over iSCSI" "exported snapshot cannot be removed" -- ferry snap rm db@base
expect 0 "create ro" -- ferry volume create ro --size 4M
expect 0 "export add --read-only" -- ferry export add ro --read-only
check "writing a --read-only export fails" sh -c "! timeout 60 qemu-io -f raw -c 'write -P 1 0 4k' $URL/$IQN:ro/0 2>&1 | grep -q '^wrote'"
expect 0 "read-only export still reads" -- qio -r -c "read -P 0 0 4M" $URL/$IQN:ro/0

# ---- CHAP ------------------------------------------------------------------
expect 0 "create sec" -- ferry volume create sec --size 8M
expect 0 "export with CHAP" -- ferry export add sec --chap alice:alice-secret-01
expect 0 "CHAP login with the right secret" -- timeout 30 iscsi-inq "iscsi://alice%alice-secret-01@127.0.0.1:$PORT/$IQN:sec/0"
check "CHAP login with a wrong secret fails" sh -c "! timeout 30 iscsi-inq 'iscsi://alice%wrong-secret-99@127.0.0.1:$PORT/$IQN:sec/0' >/dev/null 2>&1"
check "login without credentials fails" sh -c "! timeout 30 iscsi-inq '$URL/$IQN:sec/0' >/dev/null 2>&1"
expect_err 2 "at least 12" "short CHAP secret refused" -- ferry export add logs --iqn $IQN:x --chap a:short
expect_err 2 "needs --chap" "mutual without chap refused" -- ferry export add logs --iqn $IQN:x --mutual-chap a:bbbbbbbbbbbbbbb
expect 0 "create mut" -- ferry volume create mut --size 8M
expect 0 "export with mutual CHAP" -- ferry export add mut --chap bob:bob-secret-0001 --mutual-chap tgt:target-secret-02
expect 0 "mutual CHAP login" -- env LIBISCSI_CHAP_TARGET_USERNAME=tgt LIBISCSI_CHAP_TARGET_PASSWORD=target-secret-02 \
	timeout 30 iscsi-inq "iscsi://bob%bob-secret-0001@127.0.0.1:$PORT/$IQN:mut/0?target_user=tgt&target_password=target-secret-02"
check "mutual CHAP with a wrong target secret fails" sh -c "! timeout 30 iscsi-inq 'iscsi://bob%bob-secret-0001@127.0.0.1:$PORT/$IQN:mut/0?target_user=tgt&target_password=not-the-secret' >/dev/null 2>&1"
check "exports.conf is private" test "$(stat -c %a "$POOL/exports.conf")" = 600

# ---- concurrent sessions, with a hostile client alongside ---------------------------
expect 0 "create par" -- ferry volume create par --size 32M
expect 0 "export par" -- ferry export add par
pids=""
for i in 0 1 2 3; do
	qio -c "write -P $((0x30 + i)) $((i * 8))M 8M" -c "read -P $((0x30 + i)) $((i * 8))M 8M" \
		$URL/$IQN:par/0 >"$T/par$i.out" 2>&1 &
	pids="$pids $!"
done
python3 "$HERE/hostile.py" 127.0.0.1 $PORT 60 $IQN:par >"$T/hostile.out" 2>&1
hostile_rc=$?
for p in $pids; do wait $p || fail "concurrent qemu-io $p failed: $(cat "$T"/par*.out | tail -3)"; done
check "hostile client ran against a live target" test $hostile_rc = 0
check "4 sessions wrote and verified" test "$(cat "$T"/par*.out | grep -c '^read ')" = 4
python3 -c '
import sys
MiB = 1 << 20
with open(sys.argv[1], "wb") as f:
    for i in range(4): f.write(bytes([0x30 + i]) * (8 * MiB))
' "$T/parexp"
expect 0 "export par" -- ferry volume export par "$T/parimg"
check "concurrent sessions' data intact" cmp "$T/parimg" "$T/parexp"
expect 0 "daemon still serves after hostile input" -- timeout 30 iscsi-inq $URL/$IQN:db/0

# ---- reservations on a 4 KiB-block LUN, and across a new login ----------------------
# A WRITE shorter than one block must still meet the reservation checks
# (libiscsi's ProutReserve.Access* write 512 bytes); a registration belongs
# to the initiator port (name + ISID), so it survives logging in again.
expect 0 "create pr (4K blocks)" -- ferry volume create pr --size 16M --block-size 4096
expect 0 "export pr" -- ferry export add pr
if command -v iscsi-test-cu >/dev/null; then
	expect 0 "iscsi-test-cu ProutReserve on a 4K-block LUN" -- \
		timeout 120 iscsi-test-cu --dataloss -t 'SCSI.ProutReserve*' $URL/$IQN:pr/0
	check "all 13 ProutReserve tests pass" grep -Eq "tests +13 +13 +13 +0" <<<"$OUT"
fi
expect 0 "PR registration kept across a new login" -- \
	timeout 60 python3 "$HERE/pr_relogin.py" 127.0.0.1 $PORT $IQN:pr

# ---- exported volumes cannot be removed; export rm; persistence ---------------------
expect_err 1 "exported over iSCSI" "exported volume cannot be removed" -- ferry volume rm par
expect 0 "export rm par" -- ferry export rm par
expect_err 1 "not exported" "export rm twice refused" -- ferry export rm par
check "unexported target is gone" sh -c "! timeout 30 iscsi-inq $URL/$IQN:par/0 >/dev/null 2>&1"
expect 0 "volume rm par after export rm" -- ferry volume rm par
expect 0 "export list before restart" -- ferry export list --json
before=$OUT
stop_daemon || fail "ferryd did not stop"
start || fail "ferryd did not restart"
expect 0 "export list after restart" -- ferry export list --json
check "exports restored at start" test "$OUT" = "$before"
expect 0 "restored export serves data" -- qio -r -c "read -P 0x11 63M 1M" $URL/$IQN:db/0
expect 0 "restored CHAP export" -- timeout 30 iscsi-inq "iscsi://alice%alice-secret-01@127.0.0.1:$PORT/$IQN:sec/0"
expect 0 "iscsi-inq VPD 0x83 after restart" -- timeout 30 iscsi-inq -e 1 -c 0x83 $URL/$IQN:db/0
id2=$(grep -i "naa\|designator" <<<"$OUT" | head -3)
check "device identifier is stable across restarts" test "$id1" = "$id2"
check "no crash in the log" sh -c "! grep -qi 'sanitizer\|segv' '$POOL/ferryd.log'"
finish
