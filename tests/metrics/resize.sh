#!/bin/bash
# ferry volume resize through the real ferryd: an initiator logged in over
# iSCSI gets CAPACITY DATA HAS CHANGED (2A/09) and then READ CAPACITY shows
# the new size (our own session, plus libiscsi's iscsi-readcapacity16 on a
# fresh login); every refusal (shrink without --shrink, of an exported, a
# paired or a snapshotted volume, of a secondary) changes nothing and says
# why, bad sizes are usage errors (2); a shrink keeps what it keeps and a
# grow after it reads zeros; a pair's secondary follows its primary at the
# next cycle, and an initiator of the secondary's read-only export is told.
# FERRY_SITE_ARGS_a/_b: extra ferryd options of each site (tests/repl/rbd_run.sh
# runs this with both sites' volumes on RBD: test rbd_metrics_resize).
export FERRY_TEST_TAG=ferry-metrics
. "$(dirname "$0")/../cli/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
for tool in iscsi-readcapacity16 python3; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done
export FERRY_REPL_TIMEOUT_MS=3000
printf 'resize-test-secret-%s\n' "$RANDOM$RANDOM" >"$T/secret"
chmod 600 "$T/secret"
. "$HERE/lib.sh"

IA=$(free_port) IB=$(free_port) LB=$(free_port)
fa() { "$FERRY_BIN" --pool "$T/a" "$@"; }
fb() { "$FERRY_BIN" --pool "$T/b" "$@"; }
IQN=iqn.2026-11.io.ferry
M=$((1 << 20))
size_of() { "$1" volume info "$2" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])'; }

"$FERRYD" --pool "$T/b" ${FERRY_SITE_ARGS_b:-} --log-level debug --listen 127.0.0.1:$LB --secret-file "$T/secret" \
	--iscsi 127.0.0.1:$IB || { echo "site b did not start" >&2; exit 1; }
"$FERRYD" --pool "$T/a" ${FERRY_SITE_ARGS_a:-} --log-level debug --iscsi 127.0.0.1:$IA --secret-file "$T/secret" ||
	{ echo "site a did not start" >&2; exit 1; }

# ---- an exported volume grows; its initiator is told ---------------------------------
expect 0 "create db" -- fa volume create db --size 64M
head -c 2M /dev/urandom >"$T/d1"
expect 0 "write db" -- fa volume write db "$T/d1" --offset 0
expect 0 "export db" -- fa export add db
check "session to db" session a 127.0.0.1 $IA $IQN:db
check "capacity before: 64M" test "$(ask a rc16)" = "status 0x00 blocks $((64 * M / 512)) bs 512"
md5_before=$(fa volume md5 db | cut -d' ' -f1)
expect 0 "resize db to 96M" -- fa volume resize db --size 96M
check "resize says so" grep -q "^volume db: 64.0 MiB -> 96.0 MiB (100663296 bytes)$" <<<"$OUT"
check "volume info: 96M" test "$(size_of fa db)" = $((96 * M))
ans=$(ask a tur)
check "unit attention CAPACITY DATA HAS CHANGED ($ans)" test "$ans" = "status 0x02 sense 6/2a/09"
check "only once" test "$(ask a tur)" = "status 0x00"
check "READ CAPACITY(16) in the session: 96M" test "$(ask a rc16)" = "status 0x00 blocks $((96 * M / 512)) bs 512"
check "the last new block reads" test "$(ask a "read $((96 * M / 512 - 1))")" = "status 0x00 bytes 512"
expect 0 "iscsi-readcapacity16 (new login)" -- timeout 30 iscsi-readcapacity16 iscsi://127.0.0.1:$IA/$IQN:db/0
check "libiscsi sees 96M" grep -q "^Total size:$((96 * M))$" <<<"$OUT"
head -c $((96 * M)) /dev/zero >"$T/img"
dd if="$T/d1" of="$T/img" conv=notrunc status=none
check "content kept, zeros after" test "$(fa volume md5 db | cut -d' ' -f1)" = "$(md5sum <"$T/img" | cut -d' ' -f1)"
expect 0 "same size again: nothing to do" -- fa volume resize db --size 96M
check "says already" grep -q "already" <<<"$OUT"

# ---- refusals: nothing changes -------------------------------------------------------------
expect_err 1 "add --shrink" "shrink without --shrink refused" -- fa volume resize db --size 32M
expect_err 1 "exported over iSCSI" "shrink of an exported volume refused" -- fa volume resize db --size 32M --shrink
check "still 96M" test "$(size_of fa db)" = $((96 * M))
check "still the same content" test "$(fa volume md5 db | cut -d' ' -f1)" = "$(md5sum <"$T/img" | cut -d' ' -f1)"
expect_err 2 "greater than 0" "size 0 is a usage error" -- fa volume resize db --size 0
expect_err 2 "multiple of the block size" "unaligned size is a usage error" -- fa volume resize db --size 1000
expect_err 2 "larger than the maximum" "over 16 TiB is a usage error" -- fa volume resize db --size 17T
expect_err 2 "bad size" "garbage size is a usage error" -- fa volume resize db --size 12Q
expect_err 2 "missing --size" "no --size is a usage error" -- fa volume resize db
expect_err 1 "no such volume" "unknown volume" -- fa volume resize nosuch --size 1G
check "unchanged after the refusals" test "$(size_of fa db)" = $((96 * M))

# ---- shrink (not exported, no snapshots), then grow: zeros past the cut -------------------
expect 0 "create logs" -- fa volume create logs --size 16M
head -c 16M /dev/urandom >"$T/d2"
expect 0 "fill logs" -- fa volume write logs "$T/d2" --offset 0
expect 0 "snapshot logs" -- fa snap create logs@s1
expect_err 1 "has snapshots" "shrink with snapshots refused" -- fa volume resize logs --size 8M --shrink
expect 0 "drop the snapshot" -- fa snap rm logs@s1
expect 0 "shrink logs to 5M+512" -- fa volume resize logs --size $((5 * M + 512)) --shrink
check "5M+512 now" test "$(size_of fa logs)" = $((5 * M + 512))
head -c $((5 * M + 512)) "$T/d2" >"$T/cut"
check "what is kept is intact" test "$(fa volume md5 logs | cut -d' ' -f1)" = "$(md5sum <"$T/cut" | cut -d' ' -f1)"
expect 0 "grow logs back to 16M" -- fa volume resize logs --size 16M
truncate -s 16M "$T/cut"
check "zeros past the cut (the rest of its 4 KiB block too)" \
	test "$(fa volume md5 logs | cut -d' ' -f1)" = "$(md5sum <"$T/cut" | cut -d' ' -f1)"
expect 0 "restart site a" -- stop_daemon "$T/a"
"$FERRYD" --pool "$T/a" ${FERRY_SITE_ARGS_a:-} --log-level debug --iscsi 127.0.0.1:$IA --secret-file "$T/secret" ||
	fail "site a did not restart"
check "sizes kept over a restart" test "$(size_of fa logs)" = $((16 * M)) -a "$(size_of fa db)" = $((96 * M))
check "content kept over a restart" \
	test "$(fa volume md5 logs | cut -d' ' -f1)" = "$(md5sum <"$T/cut" | cut -d' ' -f1)"

# ---- a snapshot taken before a grow reads as the volume's size: zeros past its end --------
expect 0 "create sn" -- fa volume create sn --size 8M
head -c 8M /dev/urandom >"$T/d5"
expect 0 "fill sn" -- fa volume write sn "$T/d5" --offset 0
expect 0 "snapshot sn@s1" -- fa snap create sn@s1
expect 0 "grow sn (with a snapshot) to 12M" -- fa volume resize sn --size 12M
head -c 1M /dev/urandom >"$T/d6"
expect 0 "write past the old end" -- fa volume write sn "$T/d6" --offset $((10 * M))
cp "$T/d5" "$T/s1img"
truncate -s 12M "$T/s1img"
check "sn@s1: its data, then zeros to 12M" \
	test "$(fa volume md5 sn@s1 | cut -d' ' -f1)" = "$(md5sum <"$T/s1img" | cut -d' ' -f1)"
cp "$T/s1img" "$T/headimg"
dd if="$T/d6" of="$T/headimg" bs=1M seek=10 conv=notrunc status=none
check "sn: the old data, zeros, the new write" \
	test "$(fa volume md5 sn | cut -d' ' -f1)" = "$(md5sum <"$T/headimg" | cut -d' ' -f1)"
expect 0 "snapshot sn@s2" -- fa snap create sn@s2
expect 0 "diff sn@s1..sn@s2 --json" -- fa snap diff sn@s1 sn@s2 --json
check "the diff across the grow: only the write past the old end" python3 -c '
import json,sys
M = 1 << 20
d = json.loads(sys.argv[1])
ext = [(e["offset"], e["length"], e["kind"]) for e in d["extents"]]
assert ext == [(10*M, M, "data")], ext
' "$OUT"
check "sn@s1 unchanged by the later snapshot" \
	test "$(fa volume md5 sn@s1 | cut -d' ' -f1)" = "$(md5sum <"$T/s1img" | cut -d' ' -f1)"

# ---- a pair: the secondary follows at the next cycle -------------------------------------------
expect 0 "create pv" -- fa volume create pv --size 8M
head -c 8M /dev/urandom >"$T/d3"
expect 0 "fill pv" -- fa volume write pv "$T/d3" --offset 0
expect 0 "pair create pv (period 1)" -- fa pair create pv --peer 127.0.0.1:$LB --period 1
expect 0 "initial sync" -- fa pair sync pv --wait
expect 0 "export the secondary on site b (read-only)" -- fb export add pv
check "session to the secondary" session b 127.0.0.1 $IB $IQN:pv
check "secondary capacity: 8M" test "$(ask b rc16)" = "status 0x00 blocks $((8 * M / 512)) bs 512"
expect_err 1 "secondary" "resize of the secondary refused" -- fb volume resize pv --size 16M
expect_err 1 "in a replication pair" "shrink of a paired primary refused" -- fa volume resize pv --size 4M --shrink
expect 0 "grow the primary to 24M" -- fa volume resize pv --size 24M
check "resize mentions the secondary" grep -q "the secondary follows with the next cycle" <<<"$OUT"
head -c 1M /dev/urandom >"$T/d4"
expect 0 "write past the old end" -- fa volume write pv "$T/d4" --offset $((20 * M))
expect 0 "sync after the grow" -- fa pair sync pv --wait
check "the secondary is 24M" test "$(size_of fb pv)" = $((24 * M))
expect 0 "pause (cycles would replace the snapshot compared below)" -- fa pair pause pv
expect 0 "pair verify after the grow" -- fa pair verify pv
s=$(fa pair status pv --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_synced"]["snapshot"])')
ma=$(fa volume md5 "pv@$s" | cut -d' ' -f1)
check "same md5 on both sides ($ma)" test -n "$ma" -a "$ma" = "$(fb volume md5 "pv@$s" | cut -d' ' -f1)"
truncate -s 24M "$T/d3"
dd if="$T/d4" of="$T/d3" bs=1M seek=20 conv=notrunc status=none
check "the secondary holds the grown image" test "$(fb volume md5 pv | cut -d' ' -f1)" = "$(md5sum <"$T/d3" | cut -d' ' -f1)"
ans=$(ask b tur)
check "the secondary's initiator is told ($ans)" test "$ans" = "status 0x02 sense 6/2a/09"
check "and sees 24M" test "$(ask b rc16)" = "status 0x00 blocks $((24 * M / 512)) bs 512"
check "site b logged the grow" grep -q "volume grown to $((24 * M)) bytes" "$T/b/ferryd.log"
finish
