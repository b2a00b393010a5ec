#!/bin/bash
# Every --json output of ferry, produced by real commands against real
# ferryd (site a: volumes, snapshots, exports served over iSCSI, a running
# and a paused pair; site b: their secondary; site c: an empty pool),
# validated against its schema in docs/schemas/ by python3-jsonschema
# (tests/metrics/schemas.py holds the table).  Then site b is killed and the
# outputs that now carry errors are validated again.
export FERRY_TEST_TAG=ferry-metrics
. "$(dirname "$0")/../cli/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
# Debian's python3 has python3-jsonschema; another python3 first in PATH
# may not.
PY=
for p in /usr/bin/python3 python3; do
	if command -v $p >/dev/null && $p -c 'import jsonschema' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "SKIP: no python3 with jsonschema (python3-jsonschema)"; exit 77; }
export FERRY_REPL_TIMEOUT_MS=3000
printf 'schema-test-secret-%s\n' "$RANDOM$RANDOM" >"$T/secret"
chmod 600 "$T/secret"
IA=$(free_port) LB=$(free_port) MA=$(free_port)
fa() { "$FERRY_BIN" --pool "$T/a" "$@"; }

"$FERRYD" --pool "$T/b" --log-level debug --listen 127.0.0.1:$LB --secret-file "$T/secret" ||
	{ echo "site b did not start" >&2; exit 1; }
"$FERRYD" --pool "$T/a" --log-level debug --iscsi 127.0.0.1:$IA --secret-file "$T/secret" \
	--metrics 127.0.0.1:$MA || { echo "site a did not start" >&2; exit 1; }
"$FERRYD" --pool "$T/c" || { echo "site c did not start" >&2; exit 1; }

expect 0 "create db" -- fa volume create db --size 16M
expect 0 "create logs (4K blocks)" -- fa volume create logs --size 8M --block-size 4096
head -c 2M /dev/urandom >"$T/d"
expect 0 "write db" -- fa volume write db "$T/d" --offset 0
expect 0 "snap s1" -- fa snap create db@s1
expect 0 "discard" -- fa volume discard db --offset 0 --length 1M
expect 0 "write again" -- fa volume write db "$T/d" --offset 8M
expect 0 "snap s2" -- fa snap create db@s2
expect 0 "export db" -- fa export add db
expect 0 "export db@s1" -- fa export add db@s1
expect 0 "export logs with CHAP" -- fa export add logs --chap user:secret-of-16-chars
expect 0 "create pv" -- fa volume create pv --size 8M
expect 0 "write pv" -- fa volume write pv "$T/d" --offset 0
expect 0 "pair pv" -- fa pair create pv --peer 127.0.0.1:$LB --period 1
expect 0 "pair paused" -- fa volume create paused --size 4M
expect 0 "pair create paused" -- fa pair create paused --peer 127.0.0.1:$LB --period 3600
expect 0 "sync pv" -- fa pair sync pv --wait
expect 0 "sync paused" -- fa pair sync paused --wait
expect 0 "pause" -- fa pair pause paused
expect 0 "volumes of a group" -- fa volume create gv1 --size 4M
expect 0 "volume gv2" -- fa volume create gv2 --size 4M
expect 0 "group grp" -- fa group create grp gv1
expect 0 "group grp2" -- fa group create grp2 gv2
expect 0 "a cut of grp" -- fa snap create grp@c1
check "an iSCSI session" session s 127.0.0.1 $IA iqn.2026-11.io.ferry:db

export FERRY_BIN POOL_A=$T/a POOL_B=$T/b POOL_C=$T/c SCHEMAS=$HERE/../../docs/schemas
expect 0 "phase 1: every output valid" -- $PY "$HERE/schemas.py" 1
[ "$FAILS" = 0 ] || cat "$T/out" "$T/err" >&2

kill_daemon "$T/b"
has_error() { fa pair status pv --json | grep -q '"error":"'; }
check "pv fails with its peer gone" wait_for 60 has_error
expect 0 "phase 2: outputs with errors valid" -- $PY "$HERE/schemas.py" 2
[ "$FAILS" = 0 ] || cat "$T/out" "$T/err" >&2
finish
