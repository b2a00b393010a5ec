#!/bin/bash
# tests/cli/clone.sh against a ferryd whose volumes are RBD images of test
# cluster a: clones are rbd_clone3 (clone format 2) children.
set -u
here=$(dirname "$0")
. "$here/../rbd_lib.sh"
rbd_require a
trap rbd_cleanup EXIT
ns=ferry-clone-$$
rbd_ns "$FERRY_CEPH_A" "$ns" || exit 1
FERRY_DAEMON_ARGS="--backend rbd --rbd-pool rbd --rbd-namespace $ns --ceph-conf $FERRY_CEPH_A" \
bash "$here/clone.sh"
