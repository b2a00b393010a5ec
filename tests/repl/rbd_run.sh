#!/bin/bash
# Runs a two-site test (tests/repl/*.sh, tests/e2e/*.sh) with its sites'
# volumes on RBD: each of A and B is "local", or "a"/"b" for a namespace of
# its own on test cluster a or b.
#   rbd_run.sh SCRIPT SITE_A SITE_B      (SCRIPT relative to tests/)
set -u
here=$(cd "$(dirname "$0")" && pwd)
script=$1 sa=$2 sb=$3
. "$here/../rbd_lib.sh"
need=()
for c in "$sa" "$sb"; do [ "$c" = local ] || need+=("$c"); done
rbd_require "${need[@]}"
trap rbd_cleanup EXIT
site_args() { # SITE CLUSTER
	[ "$2" = local ] && return 0
	local conf ns=ferry-repl-$1-$$
	[ "$2" = a ] && conf=$FERRY_CEPH_A || conf=$FERRY_CEPH_B
	rbd_ns "$conf" "$ns" || return 1
	echo "--backend rbd --rbd-pool rbd --rbd-namespace $ns --ceph-conf $conf"
}
args_a=$(site_args a "$sa") || exit 1
args_b=$(site_args b "$sb") || exit 1
# the namespaces made in the subshells above
[ "$sa" = local ] || RBD_NSS+=("$([ "$sa" = a ] && echo "$FERRY_CEPH_A" || echo "$FERRY_CEPH_B")|ferry-repl-a-$$")
[ "$sb" = local ] || RBD_NSS+=("$([ "$sb" = a ] && echo "$FERRY_CEPH_A" || echo "$FERRY_CEPH_B")|ferry-repl-b-$$")
echo "sites: a=$sa ${args_a:+($args_a)} b=$sb ${args_b:+($args_b)}"
FERRY_SITE_ARGS_a=$args_a FERRY_SITE_ARGS_b=$args_b bash "$here/../$script"
