#!/bin/bash
# Every ferry command against a real ferryd, and every bad input refused
# with the right exit status and nothing changed.
. "$(dirname "$0")/lib.sh"

start_daemon || { echo "ferryd did not start" >&2; exit 1; }
MiB=$((1 << 20))

# ---- volume create / list / info -----------------------------------------
expect 0 "create db" -- ferry volume create db --size 32M
expect 0 "create small (64K objects, 4K blocks)" -- \
	ferry volume create small --size 1M --object-size 64K --block-size 4096
expect 0 "list" -- ferry volume list
check "list shows db and small" grep -q "^db .*32.0 MiB" <<<"$OUT"
check "list shows small" grep -q "^small " <<<"$OUT"
expect 0 "list --json" -- ferry volume list --json
check "list --json" python3 -c '
import json,sys
v = json.loads(sys.argv[1])
assert [x["name"] for x in v] == ["db", "small"], v
s = v[1]
assert s["size"] == 1 << 20 and s["object_size"] == 65536 and s["block_size"] == 4096, s
assert s["objects"] == 16 and s["snapshots"] == 0 and len(s["uuid"]) == 36, s
' "$OUT"
expect 0 "info --json" -- ferry volume info db --json
check "info --json fields" python3 -c '
import json,sys
v = json.loads(sys.argv[1])
assert set(v) == {"name","uuid","size","object_size","block_size","objects","allocated_bytes","snapshots","parent"}, v
assert v["parent"] is None, v
assert v["name"] == "db" and v["size"] == 32 << 20 and v["object_size"] == 4 << 20, v
assert v["block_size"] == 512 and v["objects"] == 8 and v["allocated_bytes"] == 0, v
' "$OUT"
expect 0 "info" -- ferry volume info db
check "info human" grep -q "^size: *33554432" <<<"$OUT"

# ---- write / export / md5 (streams larger than 1 MiB) ---------------------
head -c $((3 * MiB + 123)) /dev/urandom >"$T/data1"
head -c $((2 * MiB + 4096)) /dev/urandom >"$T/data2"
truncate -s 32M "$T/expect"
dd if="$T/data1" of="$T/expect" bs=4096 seek=1 conv=notrunc status=none
dd if="$T/data2" of="$T/expect" bs=1M seek=10 conv=notrunc status=none
expect 0 "write FILE at 4K" -- ferry volume write db --offset 4K "$T/data1"
expect 0 "write stdin at 10M" -- sh -c "cat '$T/data2' | '$FERRY_BIN' --pool '$POOL' volume write db --offset 10M -"
expect 0 "export to FILE" -- ferry volume export db "$T/img"
check "export FILE is byte-exact" cmp "$T/img" "$T/expect"
expect 0 "export to stdout" -- sh -c "'$FERRY_BIN' --pool '$POOL' volume export db | cmp - '$T/expect'"
expect 0 "md5" -- ferry volume md5 db
want=$(md5sum <"$T/expect" | cut -d' ' -f1)
check "md5 matches md5sum of the image" test "$OUT" = "$want  db"
expect 0 "info after writes" -- ferry volume info db --json
check "allocated bytes counted" python3 -c '
import json,sys; v = json.loads(sys.argv[1]); assert v["allocated_bytes"] >= 5 << 20, v' "$OUT"

# ---- snapshots --------------------------------------------------------------
expect 0 "snap create" -- ferry snap create db@s1
expect 0 "md5 of snapshot" -- ferry volume md5 db@s1
check "snapshot md5" test "$OUT" = "$want  db@s1"
expect 0 "discard" -- ferry volume discard db --offset 1M --length 1M
dd if=/dev/zero of="$T/expect" bs=1M seek=1 count=1 conv=notrunc status=none
expect 0 "snap create s2" -- ferry snap create db@s2
expect 0 "export snapshot s1" -- ferry volume export db@s1 "$T/img1"
check "snapshot keeps the old content" test "$(md5sum <"$T/img1" | cut -d' ' -f1)" = "$want"
expect 0 "export head" -- ferry volume export db "$T/img2"
check "head has the discard" cmp "$T/img2" "$T/expect"
expect 0 "snap list" -- ferry snap list db
check "snap list human" grep -q "^s2 " <<<"$OUT"
expect 0 "snap list --json" -- ferry snap list db --json
check "snap list --json" python3 -c '
import json,sys,time
v = json.loads(sys.argv[1])
assert [x["name"] for x in v] == ["s1", "s2"], v
assert v[0]["id"] < v[1]["id"] and abs(v[0]["ctime"] - time.time()) < 600, v
assert set(v[0]) == {"name","id","ctime"}, v
' "$OUT"
expect 0 "info counts snapshots" -- ferry volume info db --json
check "info snapshots == 2" python3 -c 'import json,sys; assert json.loads(sys.argv[1])["snapshots"] == 2' "$OUT"

# ---- snap diff: coalescing across objects, zero extents, zero objects -----
K=4096; M=$MiB
expect 0 "create d" -- ferry volume create d --size 16M
head -c 8192 /dev/urandom >"$T/d8k"; head -c 4M /dev/urandom >"$T/d4m"
head -c 4096 /dev/zero >"$T/z4k"
expect 0 "d: write 8K at 0" -- ferry volume write d --offset 0 "$T/d8k"
expect 0 "d: write object 2" -- ferry volume write d --offset 8M "$T/d4m"
expect 0 "d: snap a" -- ferry snap create d@a
expect 0 "d: write across objects 0|1" -- ferry volume write d --offset $((4 * M - K)) "$T/d8k"
expect 0 "d: discard object 2" -- ferry volume discard d --offset 8M --length 4M
expect 0 "d: write zeros in object 3" -- ferry volume write d --offset 12M "$T/z4k"
expect 0 "d: snap b" -- ferry snap create d@b
expect 0 "diff a b --json" -- ferry snap diff d@a d@b --json
# The zeros written where nothing was are a touched block (local backend:
# diffs report what was touched) but no change (rbd: what differs).
check "diff a..b extents" python3 -c '
import json,sys
M = 1 << 20
d = json.loads(sys.argv[1])
ext = [(e["offset"], e["length"], e["kind"]) for e in d["extents"]]
if sys.argv[2] == "changed":
    assert ext == [(4*M - 4096, 8192, "data"), (8*M, 4*M, "zero")], ext
    assert d["data_bytes"] == 8192 and d["zero_bytes"] == 4*M, d
    assert d["zero_objects"] == [2], d
else:
    assert ext == [(4*M - 4096, 8192, "data"), (8*M, 4*M + 4096, "zero")], ext
    assert d["data_bytes"] == 8192 and d["zero_bytes"] == 4*M + 4096, d
    assert d["zero_objects"] == [2, 3], d
assert sys.argv[1].count("\n") == 0
' "$OUT" "${FERRY_DIFF_SCOPE:-touched}"
expect 0 "diff b (from creation) --json" -- ferry snap diff d@a --json
check "diff ..a extents" python3 -c '
import json,sys
M = 1 << 20
d = json.loads(sys.argv[1])
ext = [(e["offset"], e["length"], e["kind"]) for e in d["extents"]]
assert ext == [(0, 8192, "data"), (8*M, 4*M, "data")], ext
assert d["data_bytes"] == 4*M + 8192 and d["zero_bytes"] == 0 and d["zero_objects"] == [], d
' "$OUT"
expect 0 "diff b b is empty" -- ferry snap diff d@b d@b --json
check "empty diff" python3 -c '
import json,sys; d = json.loads(sys.argv[1]); assert d["extents"] == [] and d["data_bytes"] == 0, d' "$OUT"
expect 0 "diff human" -- ferry snap diff d@a d@b
check "diff human table" grep -q "2 extents: 8192 data bytes" <<<"$OUT"
if [ "${FERRY_DIFF_SCOPE:-touched}" = changed ]; then
	check "diff human zero objects" grep -q "zero objects: 2$" <<<"$OUT"
else
	check "diff human zero objects" grep -q "zero objects: 2 3" <<<"$OUT"
fi

# ---- bad input: right status, one-line message, nothing changed ----------
before=$(pool_state)
printf 'abcd%.0s' $(seq 1024) >"$T/f4k"
expect_err 1 "no such volume 'nope'" "info unknown volume" -- ferry volume info nope
expect_err 1 "no such volume 'nope'" "write unknown volume" -- ferry volume write nope --offset 0 "$T/f4k"
expect_err 1 "no such volume 'nope'" "discard unknown volume" -- ferry volume discard nope --offset 0 --length 4K
expect_err 1 "no such volume 'nope'" "export unknown volume" -- ferry volume export nope "$T/never"
check "failed export creates no file" test ! -e "$T/never"
expect_err 1 "no such volume 'nope'" "md5 unknown volume" -- ferry volume md5 nope
expect_err 1 "no such volume 'nope'" "rm unknown volume" -- ferry volume rm nope
expect_err 1 "no such volume 'nope'" "snap create unknown volume" -- ferry snap create nope@x
expect_err 1 "no such volume 'nope'" "snap list unknown volume" -- ferry snap list nope
expect_err 1 "no such snapshot 'db@nope'" "export unknown snapshot" -- ferry volume export db@nope "$T/never"
expect_err 1 "no such snapshot 'db@nope'" "md5 unknown snapshot" -- ferry volume md5 db@nope
expect_err 1 "no such snapshot 'db@nope'" "snap rm unknown snapshot" -- ferry snap rm db@nope
expect_err 1 "no such snapshot 'db@nope'" "diff unknown TO" -- ferry snap diff db@nope
expect_err 1 "no such snapshot 'db@nope'" "diff unknown FROM" -- ferry snap diff db@nope db@s1
expect_err 2 "newer" "diff reversed" -- ferry snap diff db@s2 db@s1
expect_err 2 "different volumes" "diff across volumes" -- ferry snap diff db@s1 d@a
expect_err 1 "already exists" "duplicate volume" -- ferry volume create db --size 1M
expect_err 1 "already exists" "duplicate snapshot" -- ferry snap create db@s1
expect_err 2 "bad volume name '.x'" "bad name (dot)" -- ferry volume create .x --size 1M
expect_err 2 "bad volume name" "bad name (slash)" -- ferry volume create a/b --size 1M
expect_err 2 "bad volume name" "bad name (..)" -- ferry volume create .. --size 1M
expect_err 2 "bad volume name" "bad name (65 chars)" -- ferry volume create "$(printf 'a%.0s' $(seq 65))" --size 1M
expect_err 2 "bad snapshot name" "bad snapshot name" -- ferry snap create "db@../x"
expect_err 2 "greater than 0" "size 0" -- ferry volume create z --size 0
expect_err 2 "not a multiple of the block size 512" "size not a block multiple" -- ferry volume create z --size 1000
expect_err 2 "not a multiple of the block size 4096" "size not a 4K multiple" -- ferry volume create z --size 6144 --block-size 4096
expect_err 2 "one of 512\|4096" "bad block size" -- ferry volume create z --size 1M --block-size 1024
expect_err 2 "power of two" "bad object size" -- ferry volume create z --size 1M --object-size 100K
expect_err 2 "maximum" "size too large" -- ferry volume create z --size 17T
expect_err 2 "bad size '10X'" "bad size suffix" -- ferry volume create z --size 10X
expect_err 2 "bad size 'abc'" "bad offset" -- ferry volume write db --offset abc "$T/f4k"
expect_err 1 "past the end" "write past the end (file)" -- ferry volume write db --offset $((32 * M - 10)) "$T/f4k"
expect_err 1 "past the end" "write past the end (pipe)" -- sh -c "cat '$T/f4k' | '$FERRY_BIN' --pool '$POOL' volume write db --offset $((32 * M - 10))"
expect_err 1 "past the end" "write beyond the end" -- ferry volume write db --offset 64M "$T/f4k"
expect_err 1 "past the end" "discard past the end" -- ferry volume discard db --offset 31M --length 2M
expect_err 2 "greater than 0" "discard of nothing" -- ferry volume discard db --offset 0 --length 0
expect_err 2 "snapshots are read-only" "write to a snapshot" -- ferry volume write db@s1 --offset 0 "$T/f4k"
expect_err 2 "snapshots are read-only" "discard a snapshot" -- ferry volume discard db@s1 --offset 0 --length 4K
expect_err 1 "has snapshots .*--force" "rm with snapshots" -- ferry volume rm db
expect_err 2 "missing NAME" "create without a name" -- ferry volume create --size 1M
expect_err 2 "missing --size" "create without a size" -- ferry volume create z
expect_err 2 "missing --offset" "write without an offset" -- ferry volume write db "$T/f4k"
expect_err 2 "missing NAME@SNAP" "snap create without a name" -- ferry snap create
expect_err 2 "expected NAME@SNAP" "snap create without @" -- ferry snap create db
expect_err 2 "needs a value" "flag without value" -- ferry volume create z --size
expect_err 2 "unknown command 'volume frob'" "unknown command" -- ferry volume frob
expect_err 2 "unknown command 'frob'" "unknown group" -- ferry frob
expect_err 2 "unknown option '--frob'" "unknown flag" -- ferry volume list --frob
expect_err 2 "unexpected argument" "extra argument" -- ferry volume info db extra
expect_err 2 "pool DIR is required" "no pool" -- env -u FERRY_POOL "$FERRY_BIN" volume list
expect_err 1 "cannot open" "missing input file" -- ferry volume write db --offset 0 "$T/does-not-exist"
after=$(pool_state)
check "refused commands changed nothing" test "$before" = "$after"

# ---- removal ----------------------------------------------------------------
expect 0 "snap rm" -- ferry snap rm db@s2
expect 0 "snap list after rm" -- ferry snap list db --json
check "s2 gone" python3 -c 'import json,sys; assert [x["name"] for x in json.loads(sys.argv[1])] == ["s1"]' "$OUT"
expect 0 "s1 intact after s2 removed" -- ferry volume md5 db@s1
check "s1 md5" test "$OUT" = "$want  db@s1"
expect 0 "rm small" -- ferry volume rm small
expect 0 "rm --force with snapshots" -- ferry volume rm db --force
expect 0 "list after rm" -- ferry volume list --json
check "only d left" python3 -c 'import json,sys; assert [x["name"] for x in json.loads(sys.argv[1])] == ["d"]' "$OUT"
expect_err 1 "no such volume 'db'" "removed volume is gone" -- ferry volume info db

stop_daemon || fail "ferryd did not stop"
finish
