#!/bin/bash
# The seed's scenario with a workload generator writing raw blocks over
# iSCSI: qemu-img convert (random data), qemu-img bench (pattern writes,
# then zero-filled writes), qemu-io write -z (WRITE SAME), write -z -u
# (WRITE SAME with UNMAP) and discard (UNMAP), the increment ending in an
# all-zero last object -- the case the seed never converged on.  Each cycle
# must complete within a bounded wait, md5 must match on both sides and
# equal the image the client's writes describe, and the zeroed ranges must
# travel as zero records (zero_bytes > 0, wire bytes far below them).
. "$(dirname "$0")/lib.sh"
for tool in qemu-io qemu-img python3; do
	command -v $tool >/dev/null || skip "$tool missing (scripts/deps.sh)"
done
M=$((1 << 20))
SIZE=$((32 * M))
qio() { timeout 120 qemu-io -f raw -t none "$@" "$URL"; }
bench() { timeout 120 qemu-img bench -f raw -t none -w "$@" "$URL" >/dev/null; }

# model OP...: applies the same writes to $T/expect, the image the client
# means to have written.  OPs: copy FILE OFF | fill BYTE OFF LEN.
model() {
	python3 - "$T/expect" "$@" <<'PY'
import sys
path, ops = sys.argv[1], sys.argv[2:]
with open(path, "r+b") as f:
    while ops:
        if ops[0] == "copy":
            data = open(ops[1], "rb").read()
            f.seek(int(ops[2])); f.write(data); ops = ops[3:]
        else:
            b, off, ln = int(ops[1], 0), int(ops[2]), int(ops[3])
            f.seek(off); f.write(bytes([b]) * ln); ops = ops[4:]
PY
}

expect 0 "sites start" -- e2e_sites || exit 1
expect 0 "create vol (1 MiB objects)" -- fa volume create vol --size $SIZE --object-size 1M
expect 0 "export vol" -- fa export add vol
URL=$(lun_url vol)
truncate -s $SIZE "$T/expect"
# A long period: this test drives each cycle itself (pair sync --wait), so
# that last_cycle is the increment it wrote.
expect 0 "pair create" -- fa pair create vol --peer "127.0.0.1:$PORT_b" --period 3600
expect 0 "initial sync (empty volume)" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync vol --wait

# ---- increment 1: random data everywhere, the last object included ---------------
head -c $SIZE /dev/urandom >"$T/rand"
expect 0 "qemu-img convert: 32 MiB of random data" -- \
	timeout 120 qemu-img convert -n -f raw -O raw -t none "$T/rand" "$URL"
model copy "$T/rand" 0
expect 0 "qemu-img bench: 256 x 4 KiB of 0x5a every 64 KiB from 1 MiB" -- \
	bench -c 256 -s 4k -S 64k -o 1M -d 16 --pattern=0x5a
model $(for i in $(seq 0 255); do echo fill 0x5a $((M + i * 65536)) 4096; done)
t0=$SECONDS
converge vol
check "increment 1 within 60 s" test $((SECONDS - t0)) -le 60
check "secondary image == what the client wrote (1)" cmp -s "$T/secondary.img" "$T/expect"
echo "increment 1: $(cycle_summary vol)"
expect 0 "resume" -- fa pair resume vol
# Whatever cycle the resume starts ends before the client writes again.
expect 0 "sync --wait after resume" -- timeout 60 "$FERRY_BIN" --pool "$T/a" pair sync vol --wait
before=$(fa pair status vol --json | json last_cycle.number)

# ---- increment 2: a little data, many zeros, ending in an all-zero last object ----
zeroed=0
expect 0 "qemu-io: pattern writes, write -z, write -z -u, discard" -- qio \
	-c "write -P 0x33 64k 64k" -c "write -P 0x44 5M 12k" \
	-c "write -z 8M 2M" -c "write -z -u 12M 1M" -c "discard 20M 3M" \
	-c "write -z 30M 1M" -c "discard 31M 1M"
model fill 0x33 $((64 << 10)) $((64 << 10)) fill 0x44 $((5 * M)) $((12 << 10)) \
	fill 0 $((8 * M)) $((2 * M)) fill 0 $((12 * M)) $M fill 0 $((20 * M)) $((3 * M)) \
	fill 0 $((30 * M)) $((2 * M))
zeroed=$((zeroed + 8 * M))
expect 0 "qemu-img bench: 1 MiB of zero-filled writes (plain WRITE of zeros)" -- \
	bench -c 16 -s 64k -S 64k -o 16M -d 4 --pattern=0
model fill 0 $((16 * M)) $M
zeroed=$((zeroed + M))
t0=$SECONDS
converge vol
check "increment 2 (all-zero last object) within 60 s" test $((SECONDS - t0)) -le 60
check "secondary image == what the client wrote (2)" cmp -s "$T/secondary.img" "$T/expect"
s=$(cycle_summary vol); echo "increment 2: $s"
st=$(fa pair status vol --json)
zb=$(json last_cycle.zero_bytes <<<"$st"); wb=$(json last_cycle.wire_bytes <<<"$st")
db=$(json last_cycle.data_bytes <<<"$st")
echo "increment 2: $zeroed B zeroed by the client; $zb zero B, $db data B, $wb wire B in the cycle"
check "zero ranges travelled as zero records (zero_bytes $zb > 0)" test "$zb" -gt 0
check "one cycle carried increment 2" test "$(json last_cycle.number <<<"$st")" = $((before + 1))
check "zero_bytes $zb covers the $zeroed B zeroed" test "$zb" -ge "$zeroed"
check "wire bytes $wb far below the zeroed $zeroed (< 1/16)" test "$wb" -lt $((zeroed / 16))
check "data bytes $db are the 76 KiB written, not the zeros" test "$db" -le $((1 * M))
expect 0 "secondary: snap diff shows the last object as zero" -- fb snap diff "vol@$SNAP" --json
# A local secondary reports what was touched (the last MiB as one zero
# extent); an RBD one what differs from creation (no extent there at all).
scope=touched
case "${FERRY_SITE_ARGS_b:-}" in *"--backend rbd"*) scope=changed ;; esac
check "last MiB is one zero extent on the secondary ($scope)" python3 -c '
import json, sys
d = json.loads(sys.argv[1])
last = [e for e in d["extents"] if e["offset"] + e["length"] > 31 << 20]
if sys.argv[2] == "changed":
    assert last == [], d
else:
    assert any(e["kind"] == "zero" and e["offset"] <= 31 << 20 and e["offset"] + e["length"] >= 32 << 20
               for e in d["extents"]), d' "$OUT" "$scope"
expect 0 "pair verify" -- fa pair verify vol
finish
