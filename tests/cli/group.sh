#!/bin/bash
# Consistency groups: the registry's commands against a real ferryd, every
# rule refused with a clear error and nothing changed, the cut of `snap
# create GROUP@SNAP`, persistence across a kill -9, a broken registry
# refused (never overwritten), JSON validated against docs/schemas.
export FERRY_TEST_TAG=grp
. "$(dirname "$0")/lib.sh"
SCHEMAS=$(cd "$(dirname "$0")/../../docs/schemas" && pwd)
PY=
for p in /usr/bin/python3 python3; do
	if command -v $p >/dev/null && $p -c 'import jsonschema' 2>/dev/null; then PY=$p; break; fi
done
valid() { # valid SCHEMA JSON
	[ -n "$PY" ] || return 0
	$PY -c '
import json, sys, jsonschema
jsonschema.validate(json.loads(sys.argv[2]), json.load(open(sys.argv[1])))
' "$SCHEMAS/$1" "$2"
}

start_daemon || { echo "ferryd did not start" >&2; exit 1; }
for v in a b c d; do expect 0 "create $v" -- ferry volume create $v --size 16M; done

# ---- create / list / info ---------------------------------------------------
expect 0 "group create g a b" -- ferry group create g a b
expect 0 "group list" -- ferry group list
check "list shows g a,b" grep -Eq '^g +a,b$' <<<"$OUT"
expect 0 "group list --json" -- ferry group list --json
check "list --json" test "$OUT" = '[{"name":"g","volumes":["a","b"]}]'
check "list --json schema" valid group-list.json "$OUT"
expect 0 "group info --json" -- ferry group info g --json
check "info --json: no cut yet" test "$OUT" = '{"name":"g","volumes":["a","b"],"last_cut":null}'
check "info --json schema" valid group-info.json "$OUT"
expect 0 "group info" -- ferry group info g
check "info shows members" grep -q '^volumes: *a b$' <<<"$OUT"

# ---- the rules ----------------------------------------------------------------
before=$(ferry group list --json)
expect_err 1 "is a volume: groups and volumes share one namespace" "group named like a volume" -- \
	ferry group create c d
expect_err 1 "'g' is a consistency group: groups and volumes share" "volume named like a group" -- \
	ferry volume create g --size 1M
expect_err 1 "volume 'a' is already in group 'g'" "a volume in two groups" -- \
	ferry group create h c a
expect_err 1 "no such volume 'nosuch'" "a missing volume" -- ferry group create h nosuch
expect_err 2 "volume 'c' given twice" "a volume twice" -- ferry group create h c c
expect_err 2 "reserved" "a reserved name" -- ferry group create ferry.x c
expect_err 2 "missing VOLUME... for 'group create'" "no volume" -- ferry group create h
expect_err 1 "group 'g' already exists" "a group twice" -- ferry group create g c
expect_err 1 "'g' is a consistency group, not a volume" "a group as a member" -- ferry group add g g
expect_err 1 "no such group 'nog'" "add to no group" -- ferry group add nog c
expect_err 1 "volume 'a' is already in group 'g'" "add a member again" -- ferry group add g a
expect_err 1 "volume 'c' is not in group 'g'" "remove a non-member" -- ferry group remove g c
expect_err 1 "volume 'a' is in consistency group 'g' \(ferry group remove g a first\)" \
	"volume rm of a member" -- ferry volume rm a
expect_err 1 "a grouped volume cannot have a pair of its own" "pair create of a member" -- \
	ferry pair create a --peer 127.0.0.1:9
expect_err 1 "'g' is a consistency group: replicating a group is not implemented yet" \
	"pair create of a group" -- ferry pair create g --peer 127.0.0.1:9
check "nothing changed by the refusals" test "$(ferry group list --json)" = "$before"
check "volume a still there" ferry volume info a

# ---- add / remove -----------------------------------------------------------------
expect 0 "group add g c" -- ferry group add g c
expect 0 "group remove g c" -- ferry group remove g c
expect 0 "group create h c" -- ferry group create h c
expect 0 "group remove h c (empty group)" -- ferry group remove h c
expect 0 "list" -- ferry group list --json
check "h is empty" test "$OUT" = '[{"name":"g","volumes":["a","b"]},{"name":"h","volumes":[]}]'
expect_err 1 "group 'h' has no volumes" "snap of an empty group" -- ferry snap create h@x
expect 0 "group rm h" -- ferry group rm h
expect_err 1 "no such group 'h'" "rm again" -- ferry group rm h

# ---- the cut ------------------------------------------------------------------------
head -c 1M /dev/urandom >"$T/d1"
head -c 1M /dev/urandom >"$T/d2"
expect 0 "write a" -- ferry volume write a "$T/d1" --offset 0
expect 0 "write b" -- ferry volume write b "$T/d2" --offset 4M
expect 0 "snap create g@s1" -- ferry snap create g@s1
check "says one cut and the hold" grep -Eq '^g@s1: 2 volumes at one cut; writes held [0-9.]+ ms$' <<<"$OUT"
check "a@s1 = a" test "$(ferry volume md5 a@s1)" = "$(ferry volume md5 a | sed 's/ a$/ a@s1/')"
check "b@s1 = b" test "$(ferry volume md5 b@s1 | cut -d' ' -f1)" = "$(ferry volume md5 b | cut -d' ' -f1)"
has_snap() { ferry snap list "$1" --json | grep -q "\"name\":\"$2\""; }
lacks_snap() { ! has_snap "$@"; }
check "c has no s1" lacks_snap c s1
expect 0 "write a again" -- ferry volume write a "$T/d2" --offset 0
check "a@s1 kept" test "$(ferry volume export a@s1 - | head -c 1M | md5sum)" = "$(md5sum <"$T/d1" | sed 's/-$/-/')"
expect 0 "info --json after the cut" -- ferry group info g --json
check "last_cut.snapshot s1, cut_ms a number" python3 -c '
import json,sys
v = json.loads(sys.argv[1])["last_cut"]
assert v["snapshot"] == "s1" and isinstance(v["cut_ms"], (int, float)) and v["cut_ms"] >= 0, v
assert v["time"] > 1700000000, v
' "$OUT"
check "info --json schema (cut)" valid group-info.json "$OUT"
expect_err 1 "snapshot 's1' already exists on a volume of group 'g'" "the cut twice" -- \
	ferry snap create g@s1
expect 0 "b@s2 alone" -- ferry snap create b@s2
expect_err 1 "already exists" "a cut whose name one member has" -- ferry snap create g@s2
check "all or none: a has no s2" lacks_snap a s2
expect_err 2 "reserved" "a reserved snapshot name" -- ferry snap create g@ferry.g.000001

# ---- persistence: kill -9, restart ---------------------------------------------------
kill_daemon
start_daemon || { echo "ferryd did not restart" >&2; exit 1; }
expect 0 "list after kill -9" -- ferry group list --json
check "g survived" test "$OUT" = '[{"name":"g","volumes":["a","b"]}]'
check "no temp file left" test -z "$(find "$POOL" -maxdepth 1 -name 'groups.conf?*')"

# ---- a broken registry is refused, never overwritten -------------------------------------
stop_daemon
printf 'g a b\nh a\n' >"$POOL/groups.conf"
cp "$POOL/groups.conf" "$T/broken"
start_daemon || { echo "ferryd did not start" >&2; exit 1; }
expect_err 1 "breaks the group rules" "a volume in two groups on disk" -- ferry group list
expect_err 1 "breaks the group rules" "create refused too" -- ferry group create k c
check "file untouched" cmp -s "$POOL/groups.conf" "$T/broken"
stop_daemon
printf 'g a b\n' >"$POOL/groups.conf"
start_daemon || { echo "ferryd did not start" >&2; exit 1; }

# ---- rm: the volumes and their snapshots stay -------------------------------------------
expect 0 "group rm g" -- ferry group rm g
check "a@s1 stays" has_snap a s1
expect 0 "volume rm a (no longer grouped)" -- ferry volume rm a --force
expect 0 "empty list" -- ferry group list --json
check "empty" test "$OUT" = '[]'
expect 0 "--help lists group" -- "$FERRY_BIN" --help
check "help has group create" grep -q 'group create NAME VOLUME...' <<<"$OUT"
finish
