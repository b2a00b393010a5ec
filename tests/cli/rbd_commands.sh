#!/bin/bash
# tests/cli/commands.sh (every ferry command, every refusal) against a
# ferryd whose volumes are RBD images of test cluster a.
set -u
here=$(dirname "$0")
. "$here/../rbd_lib.sh"
rbd_require a
trap rbd_cleanup EXIT
ns=ferry-cli-$$
rbd_ns "$FERRY_CEPH_A" "$ns" || exit 1
FERRY_DAEMON_ARGS="--backend rbd --rbd-pool rbd --rbd-namespace $ns --ceph-conf $FERRY_CEPH_A" \
FERRY_DIFF_SCOPE=changed bash "$here/commands.sh"
