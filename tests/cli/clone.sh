#!/bin/bash
# ferry volume clone / flatten through the CLI, on any backend (the RBD run
# is rbd_clone.sh): the clone reads as its snapshot, writes to it leave the
# source alone, the snapshot and the source cannot go while the clone
# depends on them (errors naming the clone), a clone of a clone, flatten
# (with --json parent null after it), then everything can be removed.
export FERRY_TEST_TAG=${FERRY_TEST_TAG:-clone}
. "$(dirname "$0")/lib.sh"

expect 0 "daemon starts" -- start_daemon || exit 1
M=$((1024 * 1024))
expect 0 "create src" -- ferry volume create src --size 16M --object-size 1M
head -c $((6 * M)) /dev/urandom >"$T/a"
head -c $((2 * M)) /dev/urandom >"$T/b"
head -c $((1 * M + 1234)) /dev/urandom >"$T/c"
expect 0 "write src" -- ferry volume write src "$T/a" --offset $((1 * M))
expect 0 "snap src@s1" -- ferry snap create src@s1
md5s1=$(ferry volume md5 src@s1 | cut -d' ' -f1)
expect 0 "src keeps changing" -- ferry volume write src "$T/b" --offset 0
md5src=$(ferry volume md5 src | cut -d' ' -f1)

# ---- refusals ---------------------------------------------------------------------------
expect_err 2 "" "clone without @SNAP" -- ferry volume clone src c1
expect_err 1 "no such volume 'nope'" "clone of a missing volume" -- ferry volume clone nope@s1 c1
expect_err 1 "no such snapshot 'src@nope'" "clone of a missing snapshot" -- ferry volume clone src@nope c1
expect_err 1 "already exists" "clone onto an existing volume" -- ferry volume clone src@s1 src
check "nothing created by the refusals" test "$(ferry volume list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1

# ---- clone ------------------------------------------------------------------------------------
expect 0 "volume clone src@s1 c1" -- ferry volume clone src@s1 c1
check "says what it did" grep -q "volume c1: clone of src@s1" <<<"$OUT"
expect 0 "info --json" -- ferry volume info c1 --json
check "parent, size, geometry" python3 -c '
import json, sys; v = json.loads(sys.argv[1])
assert v["parent"] == "src@s1" and v["size"] == 16 << 20 and v["object_size"] == 1 << 20, v
assert v["snapshots"] == 0, v' "$OUT"
expect 0 "info (text)" -- ferry volume info c1
check "text shows the parent" grep -q "^parent: *src@s1" <<<"$OUT"
expect 0 "list --json" -- ferry volume list --json
check "list: c1's parent, src's null" python3 -c '
import json, sys; v = {x["name"]: x for x in json.loads(sys.argv[1])}
assert v["c1"]["parent"] == "src@s1" and v["src"]["parent"] is None, v' "$OUT"
check "the clone reads as the snapshot" test "$(ferry volume md5 c1 | cut -d' ' -f1)" = "$md5s1"

# ---- writes to the clone never reach the source ------------------------------------------------
expect 0 "write c1 (unaligned)" -- ferry volume write c1 "$T/c" --offset $((3 * M + 517))
expect 0 "discard on c1" -- ferry volume discard c1 --offset $((6 * M)) --length $((512 * 1024))
check "src@s1 unchanged" test "$(ferry volume md5 src@s1 | cut -d' ' -f1)" = "$md5s1"
check "src unchanged" test "$(ferry volume md5 src | cut -d' ' -f1)" = "$md5src"
ferry volume export src@s1 "$T/expect" >/dev/null
dd if="$T/c" of="$T/expect" bs=1 seek=$((3 * M + 517)) conv=notrunc status=none
dd if=/dev/zero of="$T/expect" bs=1024 seek=$((6 * 1024)) count=512 conv=notrunc status=none
check "the clone = snapshot + its own writes" test "$(ferry volume md5 c1 | cut -d' ' -f1)" = "$(md5sum <"$T/expect" | cut -d' ' -f1)"

# ---- what keeps the parent's snapshot -------------------------------------------------------
expect_err 1 "snapshot 'src@s1' has clones: c1" "snap rm of a cloned snapshot" -- ferry snap rm src@s1
expect_err 1 "volume 'src' has clones: c1" "volume rm of a clone's source" -- ferry volume rm src --force
check "src@s1 still there" sh -c "'$FERRY_BIN' --pool '$POOL' snap list src | grep -qw s1"

# ---- a clone of a clone -------------------------------------------------------------------------
expect 0 "snap c1@t" -- ferry snap create c1@t
expect 0 "clone c1@t c2" -- ferry volume clone c1@t c2
check "c2 reads as c1@t" test "$(ferry volume md5 c2 | cut -d' ' -f1)" = "$(ferry volume md5 c1@t | cut -d' ' -f1)"
expect_err 1 "has clones: c2" "snap rm c1@t" -- ferry snap rm c1@t

# ---- flatten ---------------------------------------------------------------------------------
md5c1=$(ferry volume md5 c1 | cut -d' ' -f1)
md5c2=$(ferry volume md5 c2 | cut -d' ' -f1)
expect 0 "flatten c1" -- ferry volume flatten c1
check "flatten says so" grep -q "volume c1: independent of src@s1" <<<"$OUT"
check "c1: parent null" python3 -c 'import json,sys; assert json.loads(sys.argv[1])["parent"] is None' "$(ferry volume info c1 --json)"
check "c1 content unchanged" test "$(ferry volume md5 c1 | cut -d' ' -f1)" = "$md5c1"
check "c2 (a clone of c1) unchanged" test "$(ferry volume md5 c2 | cut -d' ' -f1)" = "$md5c2"
expect 0 "flatten c1 again" -- ferry volume flatten c1
check "nothing to do" grep -q "not a clone" <<<"$OUT"
expect 0 "flatten c2" -- ferry volume flatten c2
check "c2 content unchanged" test "$(ferry volume md5 c2 | cut -d' ' -f1)" = "$md5c2"
expect 0 "snap rm c1@t now" -- ferry snap rm c1@t
# (on RBD a snapshot of c1 taken before its flatten, like c1@t, still
# read through src@s1: it goes first there; docs/CEPH.md)
expect 0 "snap rm src@s1 now" -- ferry snap rm src@s1
expect 0 "volume rm src" -- ferry volume rm src --force
check "c1 unchanged after its source went" test "$(ferry volume md5 c1 | cut -d' ' -f1)" = "$md5c1"
expect 0 "volume rm c1" -- ferry volume rm c1
expect 0 "volume rm c2" -- ferry volume rm c2
finish
