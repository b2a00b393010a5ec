#!/bin/bash
# A consistency group test (tests/cli/group.sh, tests/iscsi/group_cut.sh)
# against a ferryd whose volumes are RBD images of test cluster a: the
# registry lives in the gateway's state directory, the cut is the same
# write gate over RBD snapshots.
#   rbd_group.sh SCRIPT [ARGS...]
set -u
here=$(dirname "$0")
. "$here/../rbd_lib.sh"
rbd_require a
trap rbd_cleanup EXIT
ns=ferry-grp-$$
rbd_ns "$FERRY_CEPH_A" "$ns" || exit 1
FERRY_DAEMON_ARGS="--backend rbd --rbd-pool rbd --rbd-namespace $ns --ceph-conf $FERRY_CEPH_A" \
	FERRY_CUTS=${FERRY_CUTS:-30} bash "$@"
