#!/bin/bash
# The iSCSI transport alone (RAM-disk fake SCSI layer) against real
# initiators: discovery, inquiry, data through qemu-io with and without
# header digests, and libiscsi's iSCSI protocol suite (CmdSN, DataSN,
# residuals, task management), which must pass completely.
set -u
FAKE=$1
command -v iscsi-test-cu >/dev/null || { echo "SKIP: no iscsi-test-cu"; exit 77; }
T=$(mktemp -d /tmp/ferry-iscsi.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -TERM $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
IQN=iqn.2026-11.io.ferry
"$FAKE" --port-file "$T/port" --size 64M --target $IQN:a --luns 2 \
	--target $IQN:b --chap alice:secretsecret12 2>"$T/log" &
pid=$!
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
[ -s "$T/port" ] || { echo "fake target did not start" >&2; cat "$T/log" >&2; exit 1; }
P=$(cat "$T/port")
U=iscsi://127.0.0.1:$P

out=$(timeout 30 iscsi-ls $U 2>&1) || fail "iscsi-ls: $out"
grep -q "Target:$IQN:a Portal:127.0.0.1:$P,1" <<<"$out" || fail "discovery misses target a: $out"
grep -q "Target:$IQN:b" <<<"$out" && fail "discovery without CHAP lists the CHAP target b: $out"
# a discovery session that proves target b's credentials sees it too
out=$(timeout 30 iscsi-ls "iscsi://alice%secretsecret12@127.0.0.1:$P" 2>&1) || fail "iscsi-ls with CHAP: $out"
grep -q "Target:$IQN:b Portal:127.0.0.1:$P,1" <<<"$out" || fail "CHAP discovery misses target b: $out"
grep -q "Target:$IQN:a" <<<"$out" || fail "CHAP discovery misses target a: $out"
timeout 30 iscsi-inq $U/$IQN:a/1 | grep -q "Product:FAKE RAMDISK" || fail "iscsi-inq LUN 1"
timeout 30 iscsi-inq "$U/$IQN:a/0?header_digest=crc32c" | grep -q DIRECT_ACCESS || fail "iscsi-inq with header digest"
timeout 30 iscsi-inq "iscsi://alice%secretsecret12@127.0.0.1:$P/$IQN:b/0" | grep -q DIRECT_ACCESS || fail "CHAP login"
timeout 30 iscsi-inq "iscsi://alice%wrongsecret12@127.0.0.1:$P/$IQN:b/0" >/dev/null 2>&1 && fail "wrong CHAP secret accepted"
out=$(timeout 60 qemu-io -f raw -c "write -P 0xab 0 1M" -c "write -P 0xcd 3M 5M" -c "read -P 0xab 0 1M" \
	-c "read -P 0xcd 3M 5M" -c "read -P 0 1M 2M" $U/$IQN:a/0 2>&1) || fail "qemu-io: $out"
[ "$(grep -c '^read ' <<<"$out")" = 3 ] || fail "qemu-io reads: $out"
# libiscsi's transport suite: every test must pass (count per-test lines)
out=$(timeout 300 iscsi-test-cu --dataloss -t "iSCSI.*" $U/$IQN:a/0 2>&1)
# CUnit's summary row: "tests  Total  Ran  Passed  Failed  Inactive"
read -r _ _ ran passed failed _ < <(grep -E "^ +tests +[0-9]" <<<"$out")
[ "${ran:-0}" -ge 10 ] || fail "iscsi-test-cu ran only ${ran:-0} tests: $(tail -5 <<<"$out")"
[ "${failed:-1}" = 0 ] || fail "iscsi-test-cu iSCSI.*: ${failed:-?} failed: $(grep -A4 'FAILED$' <<<"$out" | head -30)"
kill -0 $pid 2>/dev/null || fail "fake target died"
kill -TERM $pid
wait $pid || fail "fake target exited with an error"
pid=
if [ $fails -ne 0 ]; then
	tail -20 "$T/log" >&2
	exit 1
fi
echo "$0: all checks passed ($ran iscsi-test-cu iSCSI tests)"
