#!/bin/bash
# Consistency groups on the secondary's side of a new pair (issue 12): a
# primary cannot pair its volume with a secondary volume that is a group
# member there, nor name a group as the secondary volume (--remote-name);
# both are refused with a clear error, the secondary unchanged; an ordinary
# volume still pairs; a group pair's record (members=) is refused at load.
# (Group pairs themselves are not built: pair create
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

# A group pair's record (members=, version 3: src/repl/rec.c) is not run
# by this build: refused at load, logged, never taken for a volume pair.
expect 0 "stop b" -- site_stop b
cat >"$T/b/pairs/g.pair" <<'REC'
version=3
name=g
volume=g
id=0123abcd
state=secondary
remote=g
period=1
members=m1 m2
last_cycle=4
last_snap=ferry.g.000004
REC
expect 0 "b restarts" -- site_start b "$PORT_b"
check "the group record is refused at load" \
	grep -q "g.pair is a group pair's record, which this ferry cannot run yet" "$T/b/ferryd.log"
check "no pair g on b" test -z "$(fb pair list --json | grep '"g"')"
check "db still paired on b" test "$(fb pair status db --json | json role)" = secondary
finish
