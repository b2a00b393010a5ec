# Shared by the RBD tests (sourced after the module's own lib.sh or alone).
# The test clusters come from the ctest fixtures ceph_a / ceph_b
# (scripts/ceph-cluster.sh): FERRY_CEPH_A / FERRY_CEPH_B name their
# ceph.conf.  Each test works in its own RBD namespace of pool rbd, so
# tests can share one cluster and run at once.
#   rbd_require [a|b]...    exit 77 when Ceph or the RBD backend is not
#                           available here; fail when the cluster is down
#   rbd_ns CONF NS          create namespace NS (removed, with its images,
#                           by rbd_cleanup)
#   rbd_cleanup             remove every namespace rbd_ns made
RBD_NSS=()

rbd_require() {
	local c conf
	# The longest RBD runs repeat, under ASan+UBSan, code that the shorter
	# ones already cover there (ctest marks them FERRY_RBD_HEAVY).
	if [ -n "${FERRY_SANITIZED:-}" ] && [ -n "${FERRY_RBD_HEAVY:-}" ]; then
		echo "SKIP: long RBD run, not repeated in the sanitizer build"; exit 77
	fi
	command -v ceph >/dev/null 2>&1 && command -v rbd >/dev/null 2>&1 ||
		{ echo "SKIP: Ceph is not installed (scripts/deps.sh installs it)"; exit 77; }
	if [ -n "${FERRY_BUILD:-}" ] && [ -x "$FERRY_BUILD/ferryd" ] &&
	   "$FERRY_BUILD/ferryd" --backend rbd --help 2>&1 | grep -q 'built without'; then
		echo "SKIP: ferryd was built without librbd"; exit 77
	fi
	for c in "$@"; do
		case $c in a) conf=${FERRY_CEPH_A:-} ;; b) conf=${FERRY_CEPH_B:-} ;; esac
		if [ -z "$conf" ]; then echo "SKIP: no test cluster $c (run under ctest)"; exit 77; fi
		if ! timeout 20 ceph --conf "$conf" --connect-timeout 10 health >/dev/null 2>&1; then
			echo "FAIL: test cluster $c ($conf) does not answer" >&2
			exit 1
		fi
	done
}

rbd_ns() { # CONF NS
	timeout 60 rbd --conf "$1" namespace create "rbd/$2" || return 1
	RBD_NSS+=("$1|$2")
}

rbd_purge_ns() { # CONF NS
	local img
	for img in $(timeout 60 rbd --conf "$1" -p rbd --namespace "$2" ls 2>/dev/null); do
		timeout 120 rbd --conf "$1" -p rbd --namespace "$2" snap purge "$img" >/dev/null 2>&1
		timeout 120 rbd --conf "$1" -p rbd --namespace "$2" rm "$img" >/dev/null 2>&1
	done
	timeout 60 rbd --conf "$1" namespace remove "rbd/$2" >/dev/null 2>&1
}

rbd_cleanup() {
	local e
	# FERRY_TEST_KEEP=1: keep the namespaces (and images) for a post-mortem
	[ -n "${FERRY_TEST_KEEP:-}" ] && { echo "kept RBD namespaces: ${RBD_NSS[*]}" >&2; return; }
	for e in "${RBD_NSS[@]}"; do
		rbd_purge_ns "${e%%|*}" "${e#*|}"
	done
	RBD_NSS=()
}
