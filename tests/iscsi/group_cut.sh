#!/bin/bash
# The group cut with a real iSCSI client that cannot cheat (group_writer,
# libiscsi): it writes record n to volume a, waits for the
# acknowledgement, then writes record n to volume b, continuously, while
# `ferry snap create g@cN` cuts the group (a, b) CUTS times.  Every cut must
# hold, on each volume, exactly the records 1..m of a ring (the prefix of
# what was written), and b's m is a's or one less (never more).
#   group_cut.sh GROUP_WRITER   (FERRY_BUILD set by CMake)
export FERRY_TEST_TAG=grp
. "$(dirname "$0")/../cli/lib.sh"
WRITER=$1
[ -x "$WRITER" ] || { echo "SKIP: no group_writer (built without libiscsi)"; exit 77; }
CUTS=${FERRY_CUTS:-60}
SLOTS=2048                       # 512-byte records: 1 MiB rings
PORT=$(free_port)
"$FERRYD" --pool "$POOL" --log-level debug --iscsi 127.0.0.1:$PORT ${FERRY_DAEMON_ARGS:-} ||
	{ echo "ferryd --iscsi did not start" >&2; exit 1; }
IQN=iqn.2026-11.io.ferry
for v in a b; do
	expect 0 "create $v" -- ferry volume create $v --size 1M
	expect 0 "export $v" -- ferry export add $v
done
expect 0 "group g a b" -- ferry group create g a b

timeout 300 "$WRITER" 127.0.0.1:$PORT $IQN:a $IQN:b $SLOTS "$T/stop" >"$T/written" 2>"$T/writer.err" &
WPID=$!
# the writer is logged in and writing once both volumes hold record 1
first() { ferry volume export a - | head -c 8 | od -An -tu8 | grep -q '[1-9]'; }
check "the writer writes" wait_for 60 first
for ((c = 0; c < CUTS; c++)); do
	ferry snap create g@c$c >>"$T/cuts" 2>&1 || fail "cut $c: $(tail -n 1 "$T/cuts")"
done
touch "$T/stop"
wait $WPID || fail "writer failed: $(cat "$T/writer.err")"
check "the writer wrote (held, never failed)" test -s "$T/written"

for ((c = 0; c < CUTS; c++)); do
	ferry volume export a@c$c "$T/a$c" || fail "export a@c$c"
	ferry volume export b@c$c "$T/b$c" || fail "export b@c$c"
done
expect 0 "every cut: a prefix on each volume, b's never longer than a's" -- \
	python3 - "$T" "$CUTS" "$SLOTS" <<'PY'
import struct, sys
t, cuts, slots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def last(path):
    d = open(path, "rb").read()
    recs = []
    for i in range(slots):
        blk = d[i * 512:(i + 1) * 512]
        v = struct.unpack("<Q", blk[:8])[0]
        if blk != blk[:8] * 64:
            sys.exit(f"{path}: slot {i} is torn")
        recs.append(v)
    m = max(recs)
    # the ring after records 1..m: slot i holds the largest n <= m with
    # (n - 1) % slots == i, or 0
    for i, v in enumerate(recs):
        want = 0
        if m >= i + 1:
            want = m - ((m - 1 - i) % slots)
        if v != want:
            sys.exit(f"{path}: slot {i} holds {v}, a prefix up to {m} would hold {want}")
    return m
prev, moved, holds = 0, 0, []
for c in range(cuts):
    ma, mb = last(f"{t}/a{c}"), last(f"{t}/b{c}")
    if not (mb <= ma <= mb + 1):
        sys.exit(f"cut c{c}: a holds records up to {ma}, b up to {mb}")
    if ma < prev:
        sys.exit(f"cut c{c} went back: {ma} < {prev}")
    moved += ma != prev
    prev = ma
if moved < cuts // 2:
    sys.exit(f"the writer moved in only {moved} of {cuts} cuts: the test proves little")
print(f"{cuts} cuts, records up to {prev}, moved in {moved}")
PY
echo "$OUT"
grep -o 'held [0-9.]* ms' "$T/cuts" | awk '{print $2}' | sort -n |
	awk '{v[NR]=$1} END {if (NR) printf "hold over %d cuts: median %.3f ms, max %.3f ms\n", NR, v[int((NR+1)/2)], v[NR]}'
finish
