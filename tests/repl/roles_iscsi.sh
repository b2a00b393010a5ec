#!/bin/bash
# The export read-only switch of the role changes, through a real iSCSI
# initiator (qemu-io over libiscsi): a demoted primary's LUN refuses
# writes at once (a LUN switched at run time, no export rm/add: qemu-io
# sees it write-protected), a promoted secondary's LUN accepts them.
. "$(dirname "$0")/lib.sh"
for tool in qemu-io; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done
IQN=iqn.2026-11.io.ferry
# site_start_iscsi NAME: like site_start, plus --iscsi on a free port (ISCSI_<NAME>)
site_start_iscsi() {
	local name=$1 ip
	ip=$(free_port)
	"$FERRYD" --pool "$T/$name" --log-level debug --listen 127.0.0.1:0 \
		--iscsi "127.0.0.1:$ip" --secret-file "$T/secret" || return 1
	local p
	p=$(sed -n 's/.*replication: accepting peers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
		"$T/$name/ferryd.log" | tail -n 1)
	[ -n "$p" ] || return 1
	printf -v "PORT_$name" '%s' "$p"
	printf -v "ISCSI_$name" '%s' "$ip"
}
qwrite() { # qwrite PORT: one 4 KiB write through iSCSI
	timeout 60 qemu-io -f raw -c "write -P 0x5a 8k 4k" "iscsi://127.0.0.1:$1/$IQN:db/0"
}

expect 0 "site b starts" -- site_start_iscsi b
expect 0 "site a starts" -- site_start_iscsi a
expect 0 "create db" -- fa volume create db --size 16M --object-size 1M
expect 0 "export on a" -- fa export add db
expect 0 "pair create" -- fa pair create db --peer "127.0.0.1:$PORT_b" --period 3600
expect 0 "initial sync" -- fa pair sync db --wait
expect 0 "export on b (secondary: read-only)" -- fb export add db
check "b's export is read-only" grep -q '"read_only":true' <<<"$(fb export list --json)"
check "iSCSI write on the secondary fails" sh -c "! qwrite $ISCSI_b >/dev/null 2>&1"
expect 0 "iSCSI write on the primary" -- qwrite "$ISCSI_a"
check "the write is there" test "$(fa volume md5 db | cut -d' ' -f1)" != "$(fb volume md5 db | cut -d' ' -f1)"
expect 0 "demote a" -- fa pair demote db
check "a's export turned read-only" grep -q '"read_only":true' <<<"$(fa export list --json)"
check "iSCSI write on the demoted primary fails" sh -c "! qwrite $ISCSI_a >/dev/null 2>&1"
expect 0 "promote b" -- fb pair promote db
check "b has a's iSCSI write" test "$(md5_of fa db)" = "$(md5_of fb db)"
check "b's export turned writable" grep -q '"read_only":false' <<<"$(fb export list --json)"
expect 0 "iSCSI write on the promoted secondary" -- qwrite "$ISCSI_b"
finish
