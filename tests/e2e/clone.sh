#!/bin/bash
# Test failover on a clone (issue 12): on a secondary whose pair runs at
# period 1 with --keep 5 while the primary keeps writing, clone a recovery
# point, export the clone over iSCSI, and mkfs.ext4/mount/write/umount it
# through the host kernel (qemu-storage-daemon FUSE + buffered loop) while
# cycles go on committing.  Then: the replica still follows the primary
# (md5 after sync --wait), the cloned point's md5 never changed, retention
# keeps the point while the clone exists (snap rm refused, naming the
# clone) and drops it once the clone is removed; a second clone, flattened
# (with progress), keeps its content and frees its point too.
export FERRY_TEST_TAG=${FERRY_TEST_TAG:-clone}
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" -eq 0 ] || skip "needs root (loop devices, mount)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
for tool in qemu-storage-daemon losetup mkfs.ext4 e2fsck python3; do
	command -v $tool >/dev/null || skip "$tool missing (scripts/deps.sh)"
done
[ -e /dev/loop-control ] && losetup -f >/dev/null 2>&1 || skip "no free loop device"

WRITER=
clone_cleanup() {
	[ -n "$WRITER" ] && kill "$WRITER" 2>/dev/null && wait "$WRITER" 2>/dev/null
	e2e_cleanup
}
trap clone_cleanup EXIT

M=$((1024 * 1024))
expect 0 "site b (secondary) starts with iSCSI" -- iscsi_site_start b || exit 1
expect 0 "site a starts" -- site_start a || exit 1
expect 0 "create vol" -- fa volume create vol --size 64M --object-size 1M
head -c $((16 * M)) /dev/urandom >"$T/base"
expect 0 "16 MiB of base data" -- fa volume write vol "$T/base" --offset 0
expect 0 "pair create --period 1 --keep 5" -- fa pair create vol --peer "127.0.0.1:$PORT_b" --period 1 --keep 5
expect 0 "initial sync" -- timeout 120 "$FERRY_BIN" --pool "$T/a" pair sync vol --wait

# The primary keeps writing: 256 KiB of fresh random data every ~0.2 s
# somewhere in the first 48 MiB.
( while [ ! -e "$T/stop" ]; do
	head -c 262144 /dev/urandom >"$T/w.bin"
	"$FERRY_BIN" --pool "$T/a" volume write vol "$T/w.bin" --offset $(((RANDOM % 192) * 262144)) >/dev/null 2>&1
	sleep 0.2
done ) &
WRITER=$!

# json_is SITE VOL PYEXPR: `volume info VOL --json` (as d) satisfies PYEXPR.
json_is() {
	"$1" volume info "$2" --json | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($3) else 1)"
}
cycle_b() { fb pair status vol --json | json last_synced.cycle; }
npoints() { fb pair points vol --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
npoints_is() { [ "$(npoints)" = "$1" ]; }
check "5 points on the secondary" wait_for 60 sh -c "[ \"\$('$FERRY_BIN' --pool '$T/b' pair points vol --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')\" -ge 5 ]"
# The newest point: with --keep 5 at period 1 it has ~4 s before
# retention takes it (a loaded machine may take longer than that between
# listing and cloning: then the next newest is taken); once cloned it stays.
P= P2=
clone_newest() { # clone_newest NAME [NOT]: clone the newest point (not NOT) to NAME; sets NEWEST
	NEWEST=$(fb pair status vol --json | json last_synced.snapshot) || return 1
	[ -n "$NEWEST" ] && [ "$NEWEST" != null ] && [ "$NEWEST" != "${2:-}" ] || return 1
	"$FERRY_BIN" --pool "$T/b" volume clone "vol@$NEWEST" "$1" >"$T/clone.out" 2>&1
}
check "volume clone of the newest point tc (on the secondary)" wait_for 60 clone_newest tc
P=$NEWEST
check "the message names the source" grep -q "clone of vol@$P" "$T/clone.out"
check "a second clone tf, of a later point" wait_for 60 clone_newest tf "$P"
P2=$NEWEST
MD5P=$(md5_of fb "vol@$P")
MD5P2=$(md5_of fb "vol@$P2")
echo "cloned the points $P (md5 $MD5P) and $P2 (md5 $MD5P2) at cycle $(cycle_b)"

# ---- clone, refusals ---------------------------------------------------------------------
expect_err 1 "no such snapshot" "clone of a missing snapshot" -- fb volume clone vol@nosuch x
expect_err 2 "" "clone without @SNAP" -- fb volume clone vol x
expect_err 1 "already exists" "clone onto an existing volume" -- fb volume clone "vol@$P" tc
check "info --json: parent vol@$P" json_is fb tc "d['parent'] == 'vol@$P'"
check "info --json: vol has no parent" json_is fb vol "d['parent'] is None"
check "volume list shows the parent" sh -c "'$FERRY_BIN' --pool '$T/b' volume list | grep -q '^tc .*vol@$P'"
check "the clone reads as the point" test "$(md5_of fb tc)" = "$MD5P"
expect_err 1 "has clones: tc" "snap rm of the cloned point names the clone" -- fb snap rm "vol@$P"
expect_err 1 "is a clone of vol@$P" "pair create on a clone" -- fb pair create tc --peer "127.0.0.1:$PORT_a"
# volume rm of a clone's source (one outside the pair, which refuses first)
expect 0 "volume x" -- fb volume create x --size 1M
expect 0 "x@s" -- fb snap create x@s
expect 0 "clone x@s xc" -- fb volume clone x@s xc
expect_err 1 "has clones: xc" "volume rm of a clone's source names the clone" -- fb volume rm x --force
expect 0 "volume rm xc" -- fb volume rm xc
expect 0 "then volume rm x" -- fb volume rm x --force

# ---- the clone through the host kernel while cycles keep committing ---------------------
c0=$(cycle_b)
expect 0 "export the clone" -- fb export add tc
url="iscsi://127.0.0.1:$ISCSI_b/$IQN_PREFIX:tc/0"
expect 0 "qemu-storage-daemon FUSE export of the clone's LUN" -- qsd_start "$url" "$T/lun.img" || exit 1
loop_attach "$T/lun.img" || { fail "losetup"; finish; }
check "loop device is buffered" test "$(cat /sys/block/${LOOP#/dev/}/loop/dio)" = 0
expect 0 "mkfs.ext4 on the clone" -- mkfs.ext4 -q -F -L clone "$LOOP"
mount_at "$LOOP" "$T/mnt" || { fail "mount"; finish; }
tree_gen "$T/src" 150 7
expect 0 "cp -a a tree onto the clone" -- cp -a "$T/src" "$T/mnt/src"
expect 0 "8 MiB file" -- dd if=/dev/urandom of="$T/mnt/big" bs=1M count=8 conv=fsync status=none
# The work above may take less than a cycle: keep the clone mounted until
# at least one cycle has committed on the secondary meanwhile.
cycle_past() { [ "$(cycle_b)" -gt "$1" ]; }
check "a cycle commits while the clone is mounted" wait_for 60 cycle_past "$c0"
expect 0 "umount" -- umount_at "$T/mnt"
expect 0 "losetup -d" -- loop_detach "$LOOP"
expect 0 "qemu-storage-daemon stops" -- qsd_stop
c1=$(cycle_b)
echo "cycles committed on the secondary while the clone was in use: $c0 -> $c1"
check "cycles kept committing meanwhile ($c0 -> $c1)" test "$c1" -gt "$c0"
expect 0 "export rm the clone" -- fb export rm tc
expect 0 "export the clone's image" -- fb volume export tc "$T/clone.img"
loop_attach "$T/clone.img" ro || fail "loop of the clone image"
expect 0 "e2fsck -fn of the clone" -- e2fsck -fn "$LOOP"
mount_at "$LOOP" "$T/chk" ro,noload && {
	expect 0 "the tree is on the clone" -- diff -r "$T/src" "$T/chk/src"
	umount_at "$T/chk"
}
loop_detach "$LOOP"
check "the cloned point's md5 did not change" test "$(md5_of fb "vol@$P")" = "$MD5P"

# ---- --keep 5: the cloned point stays past its turn --------------------------------------
check "more than 5 cycles after the clone" wait_for 60 sh -c "[ \$('$FERRY_BIN' --pool '$T/b' pair status vol --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"last_synced\"][\"cycle\"])') -ge $((c0 + 7)) ]"
expect 0 "points" -- fb pair points vol --json
check "the cloned point is still a point, marked clones: 1" python3 -c "
import json, sys
p = [x for x in json.loads(sys.argv[1]) if x['snapshot'] == '$P']
assert p and p[0]['clones'] == 1, sys.argv[1]" "$OUT"
# A commit lands its new point before retention drops the oldest: for a
# moment there are 8, so wait for retention to catch up.
check "5 kept points plus the 2 cloned ones" wait_for 30 npoints_is 7
expect 0 "points (text)" -- fb pair points vol
check "text marks the clones" grep -q "$P.*clones: 1" <<<"$OUT"

# ---- a second clone, flattened ------------------------------------------------------------
expect 0 "a write to tf" -- fb volume write tf "$T/base" --offset $((48 * M)) --length $((16 * M))
# (the point goes with the next commit after the flatten: read it before)
expect 0 "export the point" -- fb volume export "vol@$P2" "$T/p2.img"
expect 0 "flatten tf" -- fb volume flatten tf
check "flatten reports independence" grep -q "independent of vol@$P2" <<<"$OUT"
check "tf has no parent" json_is fb tf "d['parent'] is None"
expect 0 "flatten again: nothing to do" -- fb volume flatten tf
check "says so" grep -q "not a clone" <<<"$OUT"
expect 0 "export tf" -- fb volume export tf "$T/tf.img"
check "tf = the point below 48 MiB" cmp -n $((48 * M)) "$T/tf.img" "$T/p2.img"
check "tf = its own write above" cmp -i $((48 * M)):0 "$T/tf.img" "$T/base"

# ---- the replica still follows the primary ------------------------------------------------
touch "$T/stop"
wait "$WRITER"
WRITER=
converge vol
check "the cloned point's md5 still unchanged" test "$(md5_of fb "vol@$P")" = "$MD5P"

# ---- removing the clone frees the point ---------------------------------------------------
expect 0 "volume rm tc" -- fb volume rm tc
expect 0 "resume" -- fa pair resume vol
expect 0 "a cycle" -- rand_write fa vol 0 $M
expect 0 "sync --wait" -- timeout 120 "$FERRY_BIN" --pool "$T/a" pair sync vol --wait
check "retention is back to 5 points" wait_for 30 npoints_is 5
expect 0 "points" -- fb pair points vol --json
check "both cloned points are gone" python3 -c "
import json, sys; p = json.loads(sys.argv[1]); n = [x['snapshot'] for x in p]
assert '$P' not in n and '$P2' not in n, n" "$OUT"
check "tf still reads what it did" test "$(md5_of fb tf)" = "$(md5sum <"$T/tf.img" | cut -d' ' -f1)"
echo "point md5s: $P $MD5P, $P2 $MD5P2"
finish
