#!/bin/bash
# Consistency groups on the secondary's side of a new pair (issue 12): a
# primary cannot pair its volume with a secondary volume that is a group
# member there, nor name a group as the secondary volume (--remote-name);
# both are refused with a clear error, the secondary unchanged; an ordinary
# volume still pairs.  (Group pairs themselves are not built: pair create
# of a group is refused, tests/cli/group.sh.)
export FERRY_TEST_TAG=grp
. "$(dirname "$0")/lib.sh"

expect 0 "site b starts" -- site_start b
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"
for v in m1 m2; do expect 0 "b: create $v" -- fb volume create $v --size 8M; done
expect 0 "b: group create g m1 m2" -- fb group create g m1 m2
for v in m1 g db; do expect 0 "a: create $v" -- fa volume create $v --size 8M; done
before=$(fb volume list)

expect_err 1 "volume 'm1' is in consistency group 'g' on the secondary" \
	"a member on the secondary is refused" -- fa pair create m1 --peer "$B" --force
expect_err 1 "'g' is a consistency group on the secondary, not a volume" \
	"a group's name on the secondary is refused" -- \
	fa pair create db --peer "$B" --remote-name g --force
check "no pair on a" test "$(fa pair list --json)" = "[]"
check "the secondary's volumes unchanged" test "$(fb volume list)" = "$before"
check "group g unchanged" test "$(fb group list --json)" = '[{"name":"g","volumes":["m1","m2"]}]'

expect 0 "an ordinary volume still pairs" -- fa pair create db --peer "$B" --period 3600
expect 0 "initial sync" -- fa pair sync db --wait
check_synced db
finish
