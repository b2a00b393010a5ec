#!/bin/bash
# Scale-out on one RBD pool: two ferryd (gateways A and B) share a pool and
# namespace of test cluster a; each serves its own volumes and refuses the
# other's with a message naming the holder; after kill -9 of A, `volume
# takeover` on B fences A's client and serves A's volume (data intact,
# writable, exportable over iSCSI); a restarted A no longer gets it.  A
# planned move (release, takeover).  Then a frozen (SIGSTOP) gateway whose
# session lapsed is taken over, and once it runs again it can never write:
# it was blocklisted.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../rbd_lib.sh"
rbd_require a
ns=ferry-gw-$$
rbd_ns "$FERRY_CEPH_A" "$ns" || { fail "namespace"; finish; }
trap 'cleanup; rbd_cleanup' EXIT
FERRY_DAEMON_ARGS="--backend rbd --rbd-pool rbd --rbd-namespace $ns --ceph-conf $FERRY_CEPH_A"
PA=$T/a PB=$T/b
PORT=$(free_port)
fa() { "$FERRY_BIN" --pool "$PA" "$@"; }
fb() { "$FERRY_BIN" --pool "$PB" "$@"; }
start_daemon "$PA" || { fail "ferryd A did not start"; finish; }
"$FERRYD" --pool "$PB" --log-level debug $FERRY_DAEMON_ARGS --iscsi 127.0.0.1:$PORT ||
	{ fail "ferryd B did not start"; finish; }

# ---- each gateway serves its own volumes --------------------------------------
expect 0 "A creates va" -- fa volume create va --size 64M
expect 0 "B creates vb" -- fb volume create vb --size 32M
head -c 5M /dev/urandom >"$T/da"
expect 0 "A writes va" -- fa volume write va --offset 1M "$T/da"
expect 0 "A snapshots va" -- fa snap create va@s1
want=$(fa volume md5 va | cut -d' ' -f1)
expect 0 "A lists" -- fa volume list --json
check "A lists va only" python3 -c 'import json,sys; assert [v["name"] for v in json.loads(sys.argv[1])] == ["va"]' "$OUT"
expect 0 "B lists" -- fb volume list --json
check "B lists vb only" python3 -c 'import json,sys; assert [v["name"] for v in json.loads(sys.argv[1])] == ["vb"]' "$OUT"

# ---- the other's volume is refused, naming the holder ------------------------------
held="held by another gateway: ferryd on host $(hostname) \\(state directory $PA, pid $(daemon_pid "$PA"),.*alive"
expect_err 1 "$held.*ferry volume takeover va" "B: info of A's volume" -- fb volume info va
expect_err 1 "$held" "B: write to A's volume" -- fb volume write va --offset 0 "$T/da"
expect_err 1 "$held" "B: md5 of A's volume" -- fb volume md5 va
expect_err 1 "$held" "B: rm of A's volume" -- fb volume rm va --force
expect_err 1 "$held" "B: export of A's volume" -- fb export add va
expect_err 1 "already exists" "B: create over A's volume" -- fb volume create va --size 1M
expect_err 1 "held by a live ferryd on host .*stop that ferryd" "B: takeover of a live holder" -- \
	fb volume takeover va --wait 1
"$FERRYD" --pool "$T/local" || fail "local ferryd did not start"
expect_err 1 "needs a shared pool" "takeover on a local pool" -- \
	"$FERRY_BIN" --pool "$T/local" volume takeover va
expect 0 "A still serves va" -- fa volume md5 va
check "va unchanged" test "$OUT" = "$want  va"

# ---- A dies: B takes va over ------------------------------------------------------
kill_daemon "$PA" || fail "kill A"
expect 0 "B: takeover after kill -9 of A" -- fb volume takeover va --wait 60
check "takeover says A's client was blocklisted" grep -q "taken over from ferryd on host .*blocklisted" <<<"$OUT"
expect 0 "B: md5 of va" -- fb volume md5 va
check "va content intact on B" test "$OUT" = "$want  va"
expect 0 "B: snapshot kept" -- fb volume md5 va@s1
check "va@s1 intact" test "$OUT" = "$want  va@s1"
expect 0 "B: writes va" -- fb volume write va --offset 0 "$T/da"
expect 0 "B: exports va over iSCSI" -- fb export add va
if command -v iscsi-inq >/dev/null; then
	expect 0 "va answers over iSCSI on B" -- timeout 30 iscsi-inq iscsi://127.0.0.1:$PORT/iqn.2026-11.io.ferry:va/0
fi
expect 0 "B lists both" -- fb volume list --json
check "B lists va and vb" python3 -c 'import json,sys; assert [v["name"] for v in json.loads(sys.argv[1])] == ["va", "vb"]' "$OUT"
expect 0 "A restarts" -- start_daemon "$PA"
expect 0 "A lists" -- fa volume list --json
check "A no longer serves va" python3 -c 'import json,sys; assert json.loads(sys.argv[1]) == []' "$OUT"
expect_err 1 "held by another gateway: ferryd on host .*state directory $PB" "A: va is B's now" -- \
	fa volume info va

# ---- a planned move: release on one gateway, takeover on the other ----------------------
expect 0 "B creates vd" -- fb volume create vd --size 16M
expect 0 "B writes vd" -- fb volume write vd --offset 0 "$T/da"
wantd=$(fb volume md5 vd | cut -d' ' -f1)
expect 0 "B exports vd" -- fb export add vd
expect_err 1 "exported over iSCSI" "release refused while exported" -- fb volume release vd
expect 0 "B unexports vd" -- fb export rm vd
expect 0 "B releases vd" -- fb volume release vd
expect_err 1 "released by its gateway: .ferry volume takeover vd" "B: vd released" -- fb volume md5 vd
expect 0 "A lists after the release" -- fa volume list --json
check "a released volume is nobody's" python3 -c 'import json,sys; assert "vd" not in [v["name"] for v in json.loads(sys.argv[1])]' "$OUT"
expect 0 "A takes vd" -- fa volume takeover vd --wait 5
check "takeover of a released volume says so" grep -q "released" <<<"$OUT"
expect 0 "A: md5 of vd" -- fa volume md5 vd
check "vd moved intact" test "$OUT" = "$wantd  vd"
expect_err 1 "held by another gateway: ferryd on host .*state directory $PA" "B: vd is A's now" -- \
	fb volume info vd

# ---- a frozen gateway is fenced for good ----------------------------------------------
expect 0 "A creates vc" -- fa volume create vc --size 16M
expect 0 "A writes vc" -- fa volume write vc --offset 0 "$T/da"
wantc=$(fa volume md5 vc | cut -d' ' -f1)
apid=$(daemon_pid "$PA")
kill -STOP "$apid"
expect 0 "B: takeover of a frozen A (its session lapses)" -- fb volume takeover vc --wait 60
kill -CONT "$apid"
head -c 1M /dev/urandom >"$T/d1"
expect_err 1 "fenced|blocklisted|Cannot send after transport endpoint shutdown|held by" \
	"A, thawed, cannot write vc" -- fa volume write vc --offset 0 "$T/d1"
expect 0 "B: md5 of vc" -- fb volume md5 vc
check "vc unchanged by the fenced gateway" test "$OUT" = "$wantc  vc"
check "A's log says it was fenced" grep -q "blocklisted (fenced)" "$PA/ferryd.log"

stop_daemon "$PB" || fail "B did not stop"
kill_daemon "$PA" 2>/dev/null
finish
