#!/usr/bin/env bash
# iSCSI/SCSI conformance of an RBD-backed LUN: libiscsi's iscsi-test-cu,
# the whole suite with --dataloss, against a LUN of a ferryd whose volumes
# are RBD images (test cluster a) and, in the same run, against a LUN of a
# ferryd on a local pool; fails when the RBD LUN does not pass a test that
# the local LUN passes.
#
#   tests/iscsi/conformance_rbd.sh BUILD_DIR [--table FILE]
#
# Needs FERRY_CEPH_A (ctest fixture ceph_a).  Exit: 0 ok, 1 regression or
# setup failure, 77 skipped (no iscsi-test-cu or no Ceph here).
set -u -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: conformance_rbd.sh BUILD_DIR [--table FILE]}" && pwd)
table=""
[ "${2:-}" = --table ] && table=$3
size=${FERRY_CONFORMANCE_SIZE:-64M}
command -v iscsi-test-cu >/dev/null 2>&1 ||
	{ echo "conformance_rbd: SKIP: iscsi-test-cu not installed (Debian libiscsi-bin)"; exit 77; }
FERRY_BUILD=$build
. "$here/../rbd_lib.sh"
rbd_require a

tmp=$(mktemp -d /tmp/ferry-ceph-conformance.XXXXXX)
cleanup() {
	local l
	for l in "$tmp"/*/ferryd.lock; do
		[ -f "$l" ] && kill -KILL "$(cat "$l")" 2>/dev/null
	done
	rbd_cleanup
	rm -rf "$tmp"
}
trap cleanup EXIT
ns=ferry-conf-$$
rbd_ns "$FERRY_CEPH_A" "$ns" || exit 1
free_port() {
	python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# start NAME [ferryd options]: a ferryd serving volume conf over iSCSI;
# sets URL_<NAME>.
start() {
	local name=$1 port
	shift
	port=$(free_port)
	"$build/ferryd" --pool "$tmp/$name" --iscsi "127.0.0.1:$port" "$@" || return 1
	"$build/ferry" --pool "$tmp/$name" volume create conf --size "$size" >/dev/null || return 1
	"$build/ferry" --pool "$tmp/$name" export add conf >/dev/null || return 1
	printf -v "URL_$name" '%s' "iscsi://127.0.0.1:$port/iqn.2026-11.io.ferry:conf/0"
}
start local || { echo "conformance_rbd: local ferryd did not start" >&2; exit 1; }
start rbd --backend rbd --rbd-pool rbd --rbd-namespace "$ns" --ceph-conf "$FERRY_CEPH_A" ||
	{ echo "conformance_rbd: RBD ferryd did not start" >&2; tail "$tmp/rbd/ferryd.log" >&2; exit 1; }

run_suite() { # NAME URL
	local t0=$SECONDS n
	timeout 1200 iscsi-test-cu --dataloss -t ALL "$2" >"$tmp/$1.log" 2>&1
	awk -f "$here/conformance_parse.awk" "$tmp/$1.log" | sort >"$tmp/$1.res"
	n=$(wc -l <"$tmp/$1.res")
	echo "conformance_rbd: $1 LUN: $n tests in $((SECONDS - t0)) s"
	if [ "$n" -lt 200 ]; then
		echo "conformance_rbd: $1: only $n test results; log tail:" >&2
		tail -20 "$tmp/$1.log" >&2
		return 1
	fi
}
run_suite rbd "$URL_rbd" || exit 1
run_suite local "$URL_local" || exit 1

join -a1 -a2 -e MISSING -o 0,1.2,2.2 "$tmp/local.res" "$tmp/rbd.res" >"$tmp/cmp"
count() { awk -v c="$2" -v r="$1" '$c == r' "$tmp/cmp" | wc -l; }
printf '\n%-12s %8s %8s %8s %8s\n' "" tests passed failed skipped
for side in local rbd; do
	col=$([ $side = local ] && echo 2 || echo 3)
	printf '%-12s %8d %8d %8d %8d\n' "ferry $side" \
		$(($(count PASS $col) + $(count FAIL $col) + $(count SKIP $col))) \
		"$(count PASS $col)" "$(count FAIL $col)" "$(count SKIP $col)"
done
echo
echo "the RBD LUN does not pass (the local LUN's result in brackets):"
awk '$3 != "PASS" { printf "  %-45s %s [local %s]\n", $1, $3, $2 }' "$tmp/cmp"
if [ -n "$table" ]; then
	{
		echo "| test | ferry, local pool | ferry, RBD pool |"
		echo "| --- | --- | --- |"
		awk '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$tmp/cmp"
	} >"$table"
fi
regress=$(awk '$2 == "PASS" && $3 != "PASS" { print $1 }' "$tmp/cmp")
if grep -Eq "ERROR: [A-Za-z]+Sanitizer|runtime error:" "$tmp"/*/ferryd.log; then
	echo "conformance_rbd: FAIL: sanitizer report in a ferryd log" >&2
	exit 1
fi
if [ -n "$regress" ]; then
	echo "conformance_rbd: FAIL: the RBD LUN does not pass what the local LUN passes:" $regress
	exit 1
fi
echo "conformance_rbd: ok: every test the local LUN passes, the RBD LUN passes"
exit 0
