#!/bin/bash
# Rails on role changes (issue 9): `promote --force` refused while the
# primary answers as primary (exit 1, naming `pair demote`); `resync`
# refused unless the pair is in split brain; fencing: a primary superseded
# by a forced promote refuses iSCSI writes (reads go on) until demoted,
# says so in its status, and --split-brain keep-writing turns it off.
. "$(dirname "$0")/lib.sh"
command -v qemu-io >/dev/null || { echo "SKIP: qemu-io missing"; exit 77; }
QPID=
rails_cleanup() {
	exec 3>&- 2>/dev/null
	[ -n "$QPID" ] && kill "$QPID" 2>/dev/null
	repl_cleanup
}
trap rails_cleanup EXIT

expect 0 "site b starts" -- iscsi_site_start b
expect 0 "site a starts" -- iscsi_site_start a
B="127.0.0.1:$PORT_b"
M=$((1024 * 1024))
for v in db kw; do
	expect 0 "create $v" -- fa volume create "$v" --size 16M --object-size 1M
	rand_write fa "$v" 0 $M
	expect 0 "export $v" -- fa export add "$v"
done
expect 0 "pair db (default: fence)" -- fa pair create db --peer "$B" --period 1h
expect 0 "pair kw --split-brain keep-writing" -- \
	fa pair create kw --peer "$B" --period 1h --split-brain keep-writing
check "default policy fence" test "$(fa pair status db --json | json split_brain_policy)" = fence
for v in db kw; do expect 0 "sync $v" -- fa pair sync "$v" --wait; done

# ---- promote --force while the primary answers -------------------------------------------
expect_err 1 "answers as primary.*pair demote" "promote --force refused while a answers" -- \
	fb pair promote db --force
check "b still secondary" test "$(fb pair status db --json | json role)" = secondary
check "epoch unchanged" test "$(fb pair status db --json | json epoch)" = 0

# ---- resync without a split brain ---------------------------------------------------------
expect_err 1 "not in split brain" "resync refused on a healthy pair" -- fa pair resync db
expect_err 1 "run resync on the new primary" "resync refused on the secondary" -- fb pair resync db
check "no split-brain snapshot on a" sh -c "! '$FERRY_BIN' --pool '$T/a' snap list db | grep -q split-brain"
check "no split-brain snapshot on b" sh -c "! '$FERRY_BIN' --pool '$T/b' snap list db | grep -q split-brain"
check "a still idle" test "$(state_of fa db)" = idle

# ---- a is lost: forced failover, then a returns -------------------------------------------
expect 0 "kill -9 a" -- site_kill a
expect 0 "promote --force db" -- fb pair promote db --force
expect 0 "promote --force kw" -- fb pair promote kw --force
expect 0 "export db on b" -- fb export add db
expect 0 "b's LUN takes writes (newer epoch: not fenced)" -- qemu_io "$ISCSI_b" db "write -P 0x11 0 4k"
expect 0 "a returns" -- iscsi_site_start a "$PORT_a" "$ISCSI_a"
check "a finds the split brain" wait_state a db split-brain 20
check "a is fenced" wait_json a db "d['fenced'] is True" 10
expect 0 "status" -- fa pair status db --json
reason=$(json fence_reason <<<"$OUT")
check "fence_reason says why ($reason)" grep -q "newer epoch (1, this site 0)" <<<"$reason"
check "text status says FENCED" grep -q "FENCED: the LUNs of db refuse writes" <<<"$(fa pair status db)"
check "fencing logged" grep -q "pair db: FENCED" "$T/a/ferryd.log"
before=$(md5_of fa db)
expect 1 "iSCSI write on the fenced primary refused" -- qemu_io "$ISCSI_a" db "write -P 0x22 0 4k"
echo "qemu-io on the fenced LUN: $(grep -i -m1 "fail\|error\|protect" <<<"$OUT$ERR")"
expect 0 "iSCSI read on the fenced primary goes on" -- \
	timeout 60 qemu-io -r -f raw -c "read 0 4k" "iscsi://127.0.0.1:$ISCSI_a/$IQN:db/0"
check "the volume did not change" test "$(md5_of fa db)" = "$before"
check "a's export says read-only" python3 -c 'import json,sys; assert [e["read_only"] for e in json.loads(sys.argv[1]) if e["volume"] == "db"] == [True]' "$(fa export list --json)"
check "b is split-brain too, not fenced" wait_json b db "d['state'] == 'split-brain' and d['fenced'] is False" 20
# keep-writing: the same split brain, the LUN stays writable
check "kw split brain on a" wait_state a kw split-brain 20
check "kw not fenced" json_holds a kw "d['fenced'] is False and d['split_brain_policy'] == 'keep-writing'"
expect 0 "iSCSI write on the keep-writing primary" -- qemu_io "$ISCSI_a" kw "write -P 0x33 0 4k"

# ---- demote ends the fence; resync --------------------------------------------------------
expect 0 "demote a" -- fa pair demote db
check "a not fenced any more" json_holds a db "d['fenced'] is False and d['role'] == 'secondary'"
expect 0 "resync from b" -- fb pair resync db
check "a idle" wait_state a db idle 20
check "b idle" wait_state b db idle 20
check "a equals b" test "$(md5_of fa db)" = "$(md5_of fb db)"
expect 0 "demote a kw" -- fa pair demote kw
expect 0 "resync kw" -- fb pair resync kw
sb=$(fa snap list kw | grep -o 'split-brain-[0-9]*' | head -n 1)
check "kw: a's write during the split brain kept in $sb" test -n "$sb"

# ---- fenced under a client's feet: one iSCSI session across the fence ---------------------
# Site c has no listener (b cannot dial it) and reaches b through a proxy;
# the proxy is cut, b is promoted by force, the proxy comes back and c's
# next heartbeat finds the newer epoch while a client is logged in.
expect 0 "proxy to b" -- proxy_start "$PORT_b"
IC=$(free_port)
"$FERRYD" --pool "$T/c" --log-level debug --iscsi "127.0.0.1:$IC" --secret-file "$T/secret" ||
	fail "site c starts"
fc() { "$FERRY_BIN" --pool "$T/c" "$@"; }
expect 0 "x on c" -- fc volume create x --size 8M
rand_write fc x 0 $M
expect 0 "export x" -- fc export add x
expect 0 "pair x c -> b via the proxy (peer timeout 6s)" -- \
	fc pair create x --peer "127.0.0.1:$PROXY_PORT" --period 1h --peer-timeout 6s
expect 0 "sync x" -- fc pair sync x --wait
mkfifo "$T/qin"
qemu-io -f raw "iscsi://127.0.0.1:$IC/$IQN:x/0" <"$T/qin" >"$T/qout" 2>&1 &
QPID=$!
exec 3>"$T/qin"
echo "write -P 0x44 0 4k" >&3
check "the client writes" wait_for 20 grep -q "wrote 4096/4096" "$T/qout"
proxy cut
expect 0 "promote --force x on b (c cannot be reached)" -- fb pair promote x --force
proxy pass
check "c finds the newer epoch" wait_json c x "d['state'] == 'split-brain' and d['fenced'] is True" 30
echo "write -P 0x55 8k 4k" >&3
check "the same session's next write is refused" wait_for 20 grep -q "write failed" "$T/qout"
echo "qemu-io after the fence: $(grep -m1 "write failed" "$T/qout")"
echo "read -P 0x44 0 4k" >&3
check "its reads go on" wait_for 20 grep -q "read 4096/4096" "$T/qout"
check "no write landed after the fence" test "$(grep -c "wrote 4096/4096" "$T/qout")" = 1
echo quit >&3
exec 3>&-
wait "$QPID" 2>/dev/null
QPID=
expect 0 "demote c" -- fc pair demote x
check "c not fenced once demoted" json_holds c x "d['fenced'] is False"

finish
