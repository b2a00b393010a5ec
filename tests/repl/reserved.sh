#!/bin/bash
# Names replication owns (issue 14, item 3) refused for the volumes and
# snapshots users create, on both sites, while replication goes on making
# its own; and `pair demote` warning of logged-in iSCSI initiators, naming
# them, and still demoting (issue 9).
. "$(dirname "$0")/lib.sh"
for tool in qemu-io; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done
IQN=iqn.2026-11.io.ferry
ISCSI_a=$(free_port)
"$FERRYD" --pool "$T/a" --log-level debug --listen 127.0.0.1:0 --iscsi "127.0.0.1:$ISCSI_a" \
	--secret-file "$T/secret" || { echo "site a did not start" >&2; exit 1; }
expect 0 "site b starts" -- site_start b

expect 0 "create db" -- fa volume create db --size 8M --object-size 1M
rand_write fa db 0 65536
expect 0 "pair create" -- fa pair create db --peer "127.0.0.1:$PORT_b" --period 3600
expect 0 "initial sync" -- fa pair sync db --wait
check_synced db

RES="is reserved: replication owns the names starting with 'ferry.' and 'split-brain-'"
for site in fa fb; do
	expect_err 2 "snapshot name 'ferry.db.000009' $RES" "$site: a ferry.* snapshot is refused" -- \
		$site snap create db@ferry.db.000009
	expect_err 2 "snapshot name 'split-brain-1700000000' $RES" "$site: a split-brain-* snapshot is refused" -- \
		$site snap create db@split-brain-1700000000
	expect_err 2 "volume name 'ferry.x' $RES" "$site: a ferry.* volume is refused" -- \
		$site volume create ferry.x --size 1M
	expect_err 2 "volume name 'split-brain-x' $RES" "$site: a split-brain-* volume is refused" -- \
		$site volume create split-brain-x --size 1M
	check "$site: nothing was created" sh -c "! $site volume list | grep -q 'ferry\.x\|split-brain-x'"
done
expect_err 2 "volume name 'ferry.remote' $RES" "pair create --remote-name in the namespace is refused" -- \
	fa pair create db --peer "127.0.0.1:$PORT_b" --remote-name ferry.remote --force
expect 0 "a name that only looks alike is a user's" -- fa snap create db@ferry-user.1
expect 0 "and another" -- fa snap create db@Ferry.x

# Replication still names its snapshots there, on both sites.
rand_write fa db 4096 4096
expect 0 "a cycle" -- fa pair sync db --wait
check_synced db
last=$(last_synced fa db)
check "the cycle's snapshot is replication's ($last)" sh -c "case '$last' in ferry.db.*) true;; *) false;; esac"
check "primary holds it" sh -c "fa() { '$FERRY_BIN' --pool '$T/a' \"\$@\"; }; fa snap list db | grep -q '$last'"
check "secondary holds it" sh -c "'$FERRY_BIN' --pool '$T/b' snap list db | grep -q '$last'"
check "the user's snapshots survive the cycle" sh -c "'$FERRY_BIN' --pool '$T/a' snap list db | grep -q 'ferry-user.1' && '$FERRY_BIN' --pool '$T/a' snap list db | grep -q 'Ferry.x'"

# ---- pair demote names the initiators logged in -------------------------------
expect 0 "export db on a" -- fa export add db
mkfifo "$T/q.in"
timeout 300 qemu-io -f raw "iscsi://127.0.0.1:$ISCSI_a/$IQN:db/0" <"$T/q.in" >"$T/q.out" 2>&1 &
qpid=$!
exec 8>"$T/q.in"
echo "read 0 4k" >&8
wait_for 60 grep -q "read 4096/4096" "$T/q.out" || fail "qemu-io did not log in: $(cat "$T/q.out")"
expect 0 "demote a while qemu-io is logged in" -- fa pair demote db
check "demote warns naming the initiator" grep -Eq "^ferry: warning: 1 initiator session is logged in to db \($IQN:db LUN 0\): iqn\.2008-11\.org\.linux-kvm \(127\.0\.0\.1:[0-9]+\); demoting makes the volume read-only, their writes will fail$" <<<"$ERR"
check "and still demotes" test "$(fa pair status db --json | json role)" = secondary
echo "write -P 0x11 0 4k" >&8
wait_for 60 grep -Eqi "write failed|error" "$T/q.out" || fail "qemu-io's write on the demoted LUN did not fail: $(cat "$T/q.out")"
exec 8>&-
wait $qpid
expect 0 "promote b" -- fb pair promote db
expect 0 "demote b (nobody logged in there)" -- fb pair demote db
check "no warning without sessions" test -z "$ERR"
expect 0 "promote a" -- fa pair promote db
finish
