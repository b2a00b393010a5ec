#!/bin/bash
# Runs one store test program (the model test, the crash test) against the
# RBD backend: its own namespace on test cluster a, removed afterwards.
#   rbd_run.sh PROGRAM HAVE_RBD
set -u
prog=$1
[ "${2:-OFF}" = ON ] || { echo "SKIP: built without librbd"; exit 77; }
. "$(dirname "$0")/../rbd_lib.sh"
rbd_require a
ns=ferry-$(basename "$prog")-$$
trap rbd_cleanup EXIT
rbd_ns "$FERRY_CEPH_A" "$ns" || exit 1
FERRY_STORE_BACKEND=rbd FERRY_CEPH_CONF=$FERRY_CEPH_A FERRY_RBD_POOL=rbd \
	FERRY_RBD_NAMESPACE=$ns "$prog"
